//! `ami boot-test`: boots a disk image in QEMU the way EC2 would and checks
//! the running system over SSH.
//!
//! A GPT image boots through UEFI (OVMF from the `ovmf` package, optionally
//! with Secure Boot); an unpartitioned or MBR image boots the way PV-GRUB
//! boots it: `/boot/grub/menu.lst` is read from the image with the
//! project's own ext4 reader, and the default entry's kernel and initrd are
//! handed to QEMU directly. The disk sits on an NVMe controller (as on
//! Nitro instances) or virtio-blk, the image file is never written
//! (`snapshot=on`), and a fake instance metadata service
//! ([`crate::imds`]) answers at 169.254.169.254, reachable only from the
//! guest, with a freshly generated SSH key. Once sshd answers on the
//! forwarded loopback port, the checks run as `admin`; each is a row of a
//! table on stderr (and of the `--json` report on stdout). QEMU runs in its
//! own process group and is always stopped: `sudo poweroff` first, then
//! signals.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{Read, Seek};
use std::net::{TcpListener, TcpStream};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use ami_ext4::disk::probe::{probe, ProbedLayout};
use ami_ext4::disk::Window;
use ami_ext4::{Ext4Reader, InodeKind, ReadError};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::imds::{self, ImdsServer, Metadata, TokenPolicy, TokenUse};
use crate::publish::print_stdout;

/// The guest's NIC address, as the metadata service reports it.
const GUEST_MAC: &str = "52:54:00:12:34:56";
/// An EBS-like NVMe serial number.
const NVME_SERIAL: &str = "vol0123456789abcdef0";
/// Lines of the serial log shown when something fails.
const LOG_TAIL_LINES: usize = 40;
/// Seconds `systemctl is-system-running --wait` may take.
const SYSTEM_RUNNING_WAIT: u64 = 300;

/// The disk controller the image is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DiskBus {
    /// An NVMe controller, as on Nitro instances.
    Nvme,
    /// virtio-blk.
    Virtio,
}

impl DiskBus {
    fn name(self) -> &'static str {
        match self {
            DiskBus::Nvme => "nvme",
            DiskBus::Virtio => "virtio",
        }
    }
}

/// Arguments of `ami boot-test`.
#[derive(Debug, clap::Args)]
pub struct BootTestArgs {
    /// The disk image: GPT with an EFI system partition (booted with UEFI),
    /// or an ext4 filesystem / MBR disk with /boot/grub/menu.lst (booted
    /// like PV-GRUB).
    image: PathBuf,

    /// The disk controller.
    #[arg(long, value_enum, default_value_t = DiskBus::Nvme)]
    disk: DiskBus,

    /// Whether the metadata service insists on IMDSv2 session tokens.
    #[arg(long, value_enum, default_value_t = TokenPolicy::Required)]
    imds: TokenPolicy,

    /// Boot this many times (from the same unmodified image); with 2 or
    /// more, the SSH host keys of each boot must differ from the first's.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=10))]
    boots: u32,

    /// Seconds from starting QEMU to a working SSH login, per boot.
    #[arg(long, value_name = "SECONDS", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    timeout: u64,

    /// Keep the serial logs, QEMU's output, the IMDS log and the report
    /// here (default: a temporary directory, kept and printed on failure).
    #[arg(long, value_name = "DIR")]
    work: Option<PathBuf>,

    /// UEFI Secure Boot with Microsoft's keys enrolled (GPT images only).
    #[arg(long)]
    secure_boot: bool,

    /// Print a JSON report on stdout.
    #[arg(long)]
    json: bool,

    /// The QEMU binary.
    #[arg(long, value_name = "PATH", default_value = "qemu-system-x86_64")]
    qemu: PathBuf,

    /// Where the OVMF firmware files are.
    #[arg(long, value_name = "DIR", default_value = "/usr/share/OVMF")]
    ovmf_dir: PathBuf,
}

// ---------------------------------------------------------------------
// PV-GRUB's menu.lst

/// A GRUB legacy device: `(hdN)` or `(hdN,P)` (partitions count from 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrubDevice {
    /// A whole disk, `(hdN)`.
    Disk(u32),
    /// A partition, `(hdN,P)`.
    Partition(u32, u32),
}

impl GrubDevice {
    /// Parses `(hd0)` or `(hd0,0)`.
    pub fn parse(s: &str) -> Option<Self> {
        let inner = s.strip_prefix("(hd")?.strip_suffix(')')?;
        match inner.split_once(',') {
            None => Some(GrubDevice::Disk(inner.parse().ok()?)),
            Some((d, p)) => Some(GrubDevice::Partition(d.parse().ok()?, p.parse().ok()?)),
        }
    }
}

impl std::fmt::Display for GrubDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GrubDevice::Disk(d) => write!(f, "(hd{d})"),
            GrubDevice::Partition(d, p) => write!(f, "(hd{d},{p})"),
        }
    }
}

/// One `title` entry of a menu.lst.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MenuEntry {
    /// The title.
    pub title: String,
    /// The entry's `root` device, if it sets one.
    pub root: Option<GrubDevice>,
    /// The kernel's path (any `(hdN,P)` prefix moved to `kernel_device`).
    pub kernel: Option<String>,
    /// A device given in front of the kernel's path.
    pub kernel_device: Option<GrubDevice>,
    /// The kernel command line.
    pub cmdline: String,
    /// The initrd's path.
    pub initrd: Option<String>,
}

/// A parsed GRUB legacy menu.lst, as PV-GRUB reads it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Menu {
    /// The `default` line's number (`None` without one, or for `saved`).
    pub default: Option<usize>,
    /// A `root` line before the first entry.
    pub root: Option<GrubDevice>,
    /// The entries in order.
    pub entries: Vec<MenuEntry>,
}

/// Splits `path` into an optional `(hdN[,P])` prefix and the path.
fn split_device(path: &str) -> Result<(Option<GrubDevice>, String)> {
    if path.starts_with('(') {
        let end = path
            .find(')')
            .with_context(|| format!("unterminated device in {path:?}"))?;
        let dev = GrubDevice::parse(&path[..=end])
            .with_context(|| format!("unknown device {:?}", &path[..=end]))?;
        Ok((Some(dev), path[end + 1..].to_string()))
    } else {
        Ok((None, path.to_string()))
    }
}

/// Parses a GRUB legacy menu.lst: `default`, `root`, `title`, `kernel`,
/// `initrd` (a command and its arguments are separated by blanks or `=`);
/// other commands (`timeout`, `hiddenmenu`, `fallback`, ...) and `#`
/// comments are ignored.
///
/// # Errors
/// For a `root`, `kernel` or `initrd` line that cannot be parsed, or a
/// `kernel`/`initrd`/`root` line after no `title` but the first (`root`
/// alone is allowed there).
pub fn parse_menu_lst(text: &str) -> Result<Menu> {
    let mut menu = Menu::default();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let cut = line
            .find(|c: char| c.is_whitespace() || c == '=')
            .unwrap_or(line.len());
        let (command, rest) = line.split_at(cut);
        let rest = rest
            .trim_start_matches(|c: char| c.is_whitespace() || c == '=')
            .trim_end();
        let at = || format!("menu.lst line {}: {line:?}", n + 1);
        match command {
            "default" => {
                menu.default = rest.parse().ok();
            }
            "title" => menu.entries.push(MenuEntry {
                title: rest.to_string(),
                ..MenuEntry::default()
            }),
            "root" => {
                let dev = GrubDevice::parse(rest)
                    .with_context(|| format!("{}: not a device like (hd0) or (hd0,0)", at()))?;
                match menu.entries.last_mut() {
                    Some(entry) => entry.root = Some(dev),
                    None => menu.root = Some(dev),
                }
            }
            "kernel" | "initrd" => {
                let entry = menu
                    .entries
                    .last_mut()
                    .with_context(|| format!("{}: outside any title entry", at()))?;
                let mut words = rest.split_whitespace().skip_while(|w| w.starts_with("--"));
                let path = words
                    .next()
                    .with_context(|| format!("{}: no file name", at()))?;
                let (device, path) = split_device(path).with_context(at)?;
                if command == "kernel" {
                    entry.kernel = Some(path);
                    entry.kernel_device = device;
                    entry.cmdline = words.collect::<Vec<_>>().join(" ");
                } else {
                    entry.initrd = Some(path);
                }
            }
            _ => {}
        }
    }
    Ok(menu)
}

impl Menu {
    /// The entry PV-GRUB boots: the `default` one, or the first when the
    /// number is missing or out of range (as GRUB legacy does).
    ///
    /// # Errors
    /// Without entries.
    pub fn default_entry(&self) -> Result<(usize, &MenuEntry)> {
        if self.entries.is_empty() {
            bail!("menu.lst has no title entries");
        }
        let index = self
            .default
            .filter(|&d| d < self.entries.len())
            .unwrap_or(0);
        Ok((index, &self.entries[index]))
    }
}

/// The kernel command line QEMU is given: the entry's, plus
/// `console=ttyS0` unless it already names ttyS0 (the Xen console `hvc0`
/// does not exist under QEMU).
pub fn qemu_cmdline(cmdline: &str) -> String {
    let has_ttys0 = cmdline
        .split_whitespace()
        .any(|w| w == "console=ttyS0" || w.starts_with("console=ttyS0,"));
    if has_ttys0 {
        cmdline.to_string()
    } else if cmdline.is_empty() {
        "console=ttyS0".to_string()
    } else {
        format!("{cmdline} console=ttyS0")
    }
}

/// The inode of the regular file `path` names in the image, following
/// symlinks anywhere in the path (absolute targets from the image's
/// root), and the resolved path.
fn resolve_file<R: Read + Seek>(fs: &mut Ext4Reader<R>, path: &str) -> Result<(u32, String)> {
    let mut pending: VecDeque<String> = path.split('/').map(str::to_string).collect();
    let mut done: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(part) = pending.pop_front() {
        match part.as_str() {
            "" | "." => continue,
            ".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        let candidate = if done.is_empty() {
            format!("/{part}")
        } else {
            format!("/{}/{part}", done.join("/"))
        };
        let ino = match fs.lookup(candidate.as_bytes()) {
            Ok(ino) => ino,
            Err(ReadError::NotFound { .. }) if candidate == path => {
                bail!("not found in the image")
            }
            Err(ReadError::NotFound { .. }) => bail!("{candidate} not found in the image"),
            Err(e) => return Err(e).with_context(|| format!("looking up {candidate}")),
        };
        let meta = fs.metadata(ino)?;
        if meta.kind == InodeKind::Symlink {
            hops += 1;
            if hops > 40 {
                bail!("too many levels of symbolic links");
            }
            let target = String::from_utf8_lossy(&fs.read_link(ino)?).into_owned();
            if target.starts_with('/') {
                done.clear();
            }
            for p in target.split('/').rev() {
                pending.push_front(p.to_string());
            }
        } else {
            done.push(part);
        }
    }
    let resolved = format!("/{}", done.join("/"));
    let ino = fs.lookup(resolved.as_bytes())?;
    if fs.metadata(ino)?.kind != InodeKind::File {
        bail!("{resolved} is not a regular file");
    }
    Ok((ino, resolved))
}

// ---------------------------------------------------------------------
// What to boot

/// How the image is booted.
#[derive(Debug, Clone)]
enum Firmware {
    /// PV-GRUB emulation: QEMU loads the kernel and initrd itself.
    Direct {
        kernel: PathBuf,
        initrd: Option<PathBuf>,
        cmdline: String,
        /// For the report: entry number, title, paths in the image.
        entry: usize,
        title: String,
        kernel_in_image: String,
        initrd_in_image: Option<String>,
    },
    /// UEFI from pflash.
    Uefi {
        code: PathBuf,
        vars_template: PathBuf,
        secure_boot: bool,
    },
}

/// Looks at the image and decides how to boot it; for PV-GRUB layouts the
/// kernel and initrd are copied into `work`.
fn plan_firmware(args: &BootTestArgs, work: &Path) -> Result<(Firmware, ProbedLayout)> {
    let image = &args.image;
    let mut file = File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let found = probe(&mut file).with_context(|| format!("reading {}", image.display()))?;
    match found.kind {
        ProbedLayout::Unknown => bail!(
            "{}: neither an ext4 filesystem nor a partitioned disk with one",
            image.display()
        ),
        ProbedLayout::Gpt => {
            if found.esp.is_none() {
                bail!(
                    "{}: a GPT disk without an EFI system partition cannot boot with UEFI",
                    image.display()
                );
            }
            let (code, vars) = if args.secure_boot {
                ("OVMF_CODE_4M.secboot.fd", "OVMF_VARS_4M.ms.fd")
            } else {
                ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd")
            };
            let code = args.ovmf_dir.join(code);
            let vars_template = args.ovmf_dir.join(vars);
            for f in [&code, &vars_template] {
                if !f.is_file() {
                    bail!(
                        "{} not found: install the ovmf package or pass --ovmf-dir",
                        f.display()
                    );
                }
            }
            Ok((
                Firmware::Uefi {
                    code,
                    vars_template,
                    secure_boot: args.secure_boot,
                },
                found.kind,
            ))
        }
        ProbedLayout::Plain | ProbedLayout::Mbr => {
            if args.secure_boot {
                bail!(
                    "--secure-boot needs a GPT image with an EFI system partition; {} boots with PV-GRUB",
                    image.display()
                );
            }
            let root = found
                .root
                .clone()
                .with_context(|| format!("{}: no ext4 root partition found", image.display()))?;
            let mut fs = Ext4Reader::new(Window::new(&mut file, root))
                .with_context(|| format!("reading the root filesystem of {}", image.display()))?;
            let menu_lst = fs
                .read_path(b"/boot/grub/menu.lst")
                .with_context(|| format!("{}: reading /boot/grub/menu.lst", image.display()))?;
            let menu = parse_menu_lst(&String::from_utf8_lossy(&menu_lst))?;
            let (index, entry) = menu.default_entry()?;
            let what = format!("menu.lst entry {index} ({:?})", entry.title);
            let device = entry.kernel_device.or(entry.root).or(menu.root);
            let expected = if found.kind == ProbedLayout::Plain {
                GrubDevice::Disk(0)
            } else {
                GrubDevice::Partition(0, 0)
            };
            if let Some(dev) = device {
                if dev != expected {
                    bail!(
                        "{what}: root {dev}, but the image is {} so PV-GRUB needs {expected}",
                        if found.kind == ProbedLayout::Plain {
                            "an unpartitioned filesystem"
                        } else {
                            "an MBR disk with the root in partition 1"
                        }
                    );
                }
            }
            let kernel_in_image = entry
                .kernel
                .clone()
                .with_context(|| format!("{what}: no kernel line"))?;
            let kernel = work.join("vmlinuz");
            extract(&mut fs, &kernel_in_image, &kernel)
                .with_context(|| format!("{what}: kernel {kernel_in_image}"))?;
            let initrd = match &entry.initrd {
                Some(p) => {
                    let dest = work.join("initrd.img");
                    extract(&mut fs, p, &dest).with_context(|| format!("{what}: initrd {p}"))?;
                    Some(dest)
                }
                None => None,
            };
            Ok((
                Firmware::Direct {
                    kernel,
                    initrd,
                    cmdline: qemu_cmdline(&entry.cmdline),
                    entry: index,
                    title: entry.title.clone(),
                    kernel_in_image,
                    initrd_in_image: entry.initrd.clone(),
                },
                found.kind,
            ))
        }
    }
}

fn extract<R: Read + Seek>(fs: &mut Ext4Reader<R>, path: &str, dest: &Path) -> Result<()> {
    let (ino, _) = resolve_file(fs, path)?;
    let mut out = File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    let n = fs.read_file_to(ino, &mut out)?;
    if n == 0 {
        bail!("{path} is empty");
    }
    Ok(())
}

// ---------------------------------------------------------------------
// QEMU

/// The accelerator QEMU uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accel {
    /// Hardware virtualisation (kvm_intel or kvm_amd loaded).
    Kvm,
    /// Software emulation.
    Tcg,
}

impl Accel {
    fn detect() -> Self {
        let hw = ["/sys/module/kvm_intel", "/sys/module/kvm_amd"]
            .iter()
            .any(|p| Path::new(p).exists());
        if hw && Path::new("/dev/kvm").exists() {
            Accel::Kvm
        } else {
            Accel::Tcg
        }
    }

    fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// A path as a QEMU option value: commas doubled.
fn qemu_escape(value: &OsStr) -> OsString {
    let mut out = Vec::with_capacity(value.len());
    for &b in value.as_bytes() {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    OsString::from_vec(out)
}

fn opt(prefix: &str, path: &Path, suffix: &str) -> OsString {
    let mut s = OsString::from(prefix);
    s.push(qemu_escape(path.as_os_str()));
    s.push(suffix);
    s
}

/// Everything one QEMU run needs.
struct QemuRun<'a> {
    image: &'a Path,
    serial_log: &'a Path,
    disk: DiskBus,
    accel: Accel,
    firmware: &'a Firmware,
    /// The writable copy of the UEFI variables.
    vars: Option<&'a Path>,
    ssh_port: u16,
    /// The command QEMU runs per guest connection to 169.254.169.254:80.
    imds_cmd: &'a str,
}

/// QEMU's arguments (without the binary).
fn qemu_args(run: &QemuRun<'_>) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |s: &str| a.push(s.into());
    let secure = matches!(
        run.firmware,
        Firmware::Uefi {
            secure_boot: true,
            ..
        }
    );
    let mut machine = format!("q35,accel={}", run.accel.name());
    if secure {
        machine.push_str(",smm=on");
    }
    push("-machine");
    push(&machine);
    push("-cpu");
    push(match run.accel {
        Accel::Kvm => "host",
        Accel::Tcg => "max,-svm,-vmx",
    });
    for s in [
        "-smp",
        "2",
        "-m",
        "1024",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ] {
        push(s);
    }
    if secure {
        push("-global");
        push("driver=cfi.pflash01,property=secure,value=on");
    }
    a.push("-chardev".into());
    a.push(opt("file,id=ser0,path=", run.serial_log, ""));
    for s in ["-serial", "chardev:ser0", "-netdev"] {
        a.push(s.into());
    }
    a.push(
        format!(
            "user,id=net0,net=169.254.0.0/16,host=169.254.0.2,dns=169.254.0.3,dhcpstart=169.254.0.15,restrict=on,hostfwd=tcp:127.0.0.1:{}-:22,guestfwd=tcp:169.254.169.254:80-cmd:{}",
            run.ssh_port,
            run.imds_cmd.replace(',', ",,")
        )
        .into(),
    );
    a.push("-device".into());
    a.push(format!("virtio-net-pci,netdev=net0,mac={GUEST_MAC},romfile=").into());
    a.push("-drive".into());
    a.push(opt(
        "if=none,id=root,file=",
        run.image,
        ",format=raw,snapshot=on,cache=unsafe",
    ));
    a.push("-device".into());
    a.push(
        match run.disk {
            DiskBus::Nvme => format!("nvme,drive=root,serial={NVME_SERIAL}"),
            DiskBus::Virtio => "virtio-blk-pci,drive=root".to_string(),
        }
        .into(),
    );
    match run.firmware {
        Firmware::Direct {
            kernel,
            initrd,
            cmdline,
            ..
        } => {
            a.push("-kernel".into());
            a.push(kernel.clone().into_os_string());
            if let Some(initrd) = initrd {
                a.push("-initrd".into());
                a.push(initrd.clone().into_os_string());
            }
            a.push("-append".into());
            a.push(cmdline.into());
        }
        Firmware::Uefi { code, .. } => {
            a.push("-drive".into());
            a.push(opt(
                "if=pflash,format=raw,unit=0,readonly=on,file=",
                code,
                "",
            ));
            if let Some(vars) = run.vars {
                a.push("-drive".into());
                a.push(opt("if=pflash,format=raw,unit=1,file=", vars, ""));
            }
        }
    }
    a
}

/// Whether `s` survives QEMU's `cmd:` word splitting unchanged (older
/// libslirp splits on spaces, newer parses shell quoting).
fn plain_word(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+,:@%=".contains(&b))
}

/// A running QEMU in its own process group.
struct Qemu {
    child: Option<Child>,
    /// The watchdog's end of a pipe: when it closes (this process exits,
    /// even by a signal), the process group is terminated.
    lifeline: Option<std::process::ChildStdin>,
    pid: u32,
    started: Instant,
}

/// Runs `"$@"` (QEMU under `timeout`) and a watchdog that terminates the
/// whole process group once stdin reaches end of file, i.e. once
/// `ami boot-test` is gone, Ctrl-C or kill included. Exits with QEMU's
/// status.
const WATCHDOG: &str = r#"exec 3<&0 </dev/null
"$@" &
q=$!
{ read -r _ <&3; kill -TERM 0; } &
w=$!
wait "$q"
s=$?
kill "$w" 2>/dev/null
exit "$s""#;

impl Qemu {
    fn start(binary: &Path, args: &[OsString], log: &Path, lifetime: Duration) -> Result<Self> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        // `timeout` bounds QEMU's life whatever happens (`--foreground`
        // keeps it in the process group); the watchdog ends it as soon as
        // this process is gone.
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(WATCHDOG)
            .arg("ami-boot-test-qemu")
            .arg("timeout")
            .arg("--foreground")
            .arg("-s")
            .arg("KILL")
            .arg(lifetime.as_secs().to_string())
            .arg(binary)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Qemu {
            pid: child.id(),
            lifeline: child.stdin.take(),
            child: Some(child),
            started: Instant::now(),
        })
    }

    /// `Some(status)` once QEMU has exited.
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn signal_group(&self, signal: &str) {
        // The shell's builtin kill: no dependency on procps.
        let _ = Command::new("sh")
            .args(["-c", r#"kill -s "$1" -- "-$2""#, "sh", signal])
            .arg(self.pid.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Ends the process group: SIGTERM, then SIGKILL after 5 s.
    fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if child.try_wait().ok().flatten().is_none() {
            self.signal_group("TERM");
            let end = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        // Leftovers of the group (relay processes) go too.
        self.signal_group("KILL");
        self.lifeline = None;
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------
// Host commands with a time limit

struct Ran {
    /// The exit code; `None` when killed (time limit) or by a signal.
    code: Option<i32>,
    stdout: String,
    stderr: String,
    timed_out: bool,
}

fn run_limited(mut cmd: Command, limit: Duration) -> Result<Ran> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {program}"))?;
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let end = Instant::now() + limit;
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() >= end {
            timed_out = true;
            let _ = child.kill();
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = String::from_utf8_lossy(&out_t.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_t.join().unwrap_or_default()).into_owned();
    Ok(Ran {
        code: if timed_out { None } else { status.code() },
        stdout,
        stderr,
        timed_out,
    })
}

/// Options every ssh invocation gets.
fn ssh_base(key: &Path, port: u16) -> Command {
    let mut c = Command::new("ssh");
    c.arg("-F")
        .arg("/dev/null")
        .arg("-i")
        .arg(key)
        .arg("-p")
        .arg(port.to_string());
    for o in [
        "BatchMode=yes",
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "GlobalKnownHostsFile=/dev/null",
        "ConnectTimeout=20",
        "IdentitiesOnly=yes",
        "IdentityAgent=none",
        "ServerAliveInterval=10",
        "ServerAliveCountMax=3",
        "LogLevel=ERROR",
    ] {
        c.arg("-o").arg(o);
    }
    c
}

fn ssh(key: &Path, port: u16, remote: &str, limit: Duration) -> Result<Ran> {
    let mut c = ssh_base(key, port);
    c.arg("admin@127.0.0.1").arg(remote);
    run_limited(c, limit)
}

/// One line for a table cell.
fn one_line(s: &str) -> String {
    let joined = s
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    if joined.chars().count() > 300 {
        let cut: String = joined.chars().take(300).collect();
        format!("{cut}...")
    } else {
        joined
    }
}

fn ran_detail(r: &Ran) -> String {
    if r.timed_out {
        return "timed out".into();
    }
    let mut d = match r.code {
        Some(c) => format!("exit {c}"),
        None => "killed by a signal".into(),
    };
    let text = one_line(&format!("{}\n{}", r.stdout, r.stderr));
    if !text.is_empty() {
        d.push_str(": ");
        d.push_str(&text);
    }
    d
}

/// The methods in ssh's `Permission denied (a,b).`.
fn offered_methods(stderr: &str) -> Option<Vec<String>> {
    let at = stderr.find("Permission denied (")?;
    let rest = &stderr[at + "Permission denied (".len()..];
    let end = rest.find(')')?;
    Some(
        rest[..end]
            .split(',')
            .map(|m| m.trim().to_string())
            .collect(),
    )
}

// ---------------------------------------------------------------------
// The run

/// One row of the result table.
#[derive(Debug, Clone)]
struct CheckRow {
    name: &'static str,
    boot: u32,
    passed: bool,
    detail: String,
    /// Seconds from QEMU's start to the end of the check.
    at: f64,
}

/// The checks after `boot`, in table order.
const CHECKS: [&str; 7] = [
    "ssh_login",
    "sudo",
    "password_auth_refused",
    "host_keys",
    "system_running",
    "dpkg_audit",
    "imdsv2_token",
];

/// What one boot found.
#[derive(Debug, Default)]
struct BootOutcome {
    banner_seconds: Option<f64>,
    login_seconds: Option<f64>,
    host_keys: Vec<String>,
    poweroff: &'static str,
    qemu_exit: Option<String>,
    seconds: f64,
}

/// Waits for an `SSH-` banner on the forwarded port; watches for QEMU
/// exiting and for a kernel panic on the serial console meanwhile.
fn wait_for_banner(
    qemu: &mut Qemu,
    port: u16,
    serial_log: &Path,
    deadline: Instant,
) -> std::result::Result<(), String> {
    loop {
        if let Some(status) = qemu.exited() {
            return Err(format!("QEMU exited ({status}) before sshd answered"));
        }
        if let Some(line) = panic_line(serial_log) {
            return Err(format!("the guest kernel panicked: {line}"));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no SSH banner within {} s",
                qemu.started.elapsed().as_secs()
            ));
        }
        if banner(port) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Whether a new connection to the port gets an `SSH-` banner (slirp
/// accepts before the guest listens, so connecting proves nothing).
fn banner(port: u16) -> bool {
    let Ok(mut conn) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))
    else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match conn.read(&mut buf[got..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got += n,
        }
    }
    &buf == b"SSH-"
}

fn panic_line(serial_log: &Path) -> Option<String> {
    let text = fs::read(serial_log).ok()?;
    let text = String::from_utf8_lossy(&text);
    text.lines()
        .find(|l| l.contains("Kernel panic - not syncing"))
        .map(|l| l.trim().to_string())
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind(("127.0.0.1", 0)).context("finding a free loopback port")?;
    Ok(l.local_addr()?.port())
}

/// Everything shared by the boots of one run.
struct Session<'a> {
    args: &'a BootTestArgs,
    work: &'a Path,
    firmware: &'a Firmware,
    accel: Accel,
    key: &'a Path,
    imds: &'a ImdsServer,
    imds_cmd: &'a str,
}

fn boot_once(
    s: &Session<'_>,
    boot: u32,
    first_keys: Option<&[String]>,
    rows: &mut Vec<CheckRow>,
) -> Result<BootOutcome> {
    let mut outcome = BootOutcome {
        poweroff: "not attempted",
        ..BootOutcome::default()
    };
    let serial_log = s.work.join(format!("serial-{boot}.log"));
    let qemu_log = s.work.join(format!("qemu-{boot}.log"));
    let vars = match s.firmware {
        Firmware::Uefi { vars_template, .. } => {
            let dest = s.work.join(format!("OVMF_VARS-{boot}.fd"));
            fs::copy(vars_template, &dest).with_context(|| {
                format!("copying {} to {}", vars_template.display(), dest.display())
            })?;
            Some(dest)
        }
        Firmware::Direct { .. } => None,
    };
    let port = free_port()?;
    let run = QemuRun {
        image: &s.args.image,
        serial_log: &serial_log,
        disk: s.args.disk,
        accel: s.accel,
        firmware: s.firmware,
        vars: vars.as_deref(),
        ssh_port: port,
        imds_cmd: s.imds_cmd,
    };
    let args = qemu_args(&run);
    let mut cmdline = s.args.qemu.display().to_string();
    for a in &args {
        cmdline.push(' ');
        cmdline.push_str(&a.to_string_lossy());
    }
    fs::write(s.work.join(format!("qemu-{boot}.cmdline")), &cmdline)?;
    let first_request = s.imds.log().len();
    let timeout = Duration::from_secs(s.args.timeout);
    // Generous upper bound for the whole boot including the checks.
    let lifetime = timeout + Duration::from_secs(SYSTEM_RUNNING_WAIT + 900);
    let mut qemu = Qemu::start(&s.args.qemu, &args, &qemu_log, lifetime)?;
    eprintln!(
        "boot {boot}/{}: QEMU started (ssh port {port}), serial log {}",
        s.args.boots,
        serial_log.display()
    );
    let deadline = qemu.started + timeout;
    let elapsed = |q: &Qemu| q.started.elapsed().as_secs_f64();
    let started = qemu.started;
    let push = |rows: &mut Vec<CheckRow>, name: &'static str, passed: bool, detail: String| {
        rows.push(CheckRow {
            name,
            boot,
            passed,
            detail,
            at: started.elapsed().as_secs_f64(),
        });
    };

    // boot: sshd answers.
    if let Err(why) = wait_for_banner(&mut qemu, port, &serial_log, deadline) {
        let mut detail = why;
        if qemu.exited().is_some() {
            let out = one_line(&log_tail(&qemu_log, 5));
            if !out.is_empty() {
                detail.push_str(": ");
                detail.push_str(&out);
            }
            outcome.qemu_exit = Some(detail.clone());
        }
        push(rows, "boot", false, detail);
        for name in CHECKS {
            if name == "imdsv2_token" {
                let (ok, d) = imds_check(s.imds, first_request);
                push(rows, name, ok, d);
            } else {
                push(rows, name, false, "not run: the guest did not boot".into());
            }
        }
        qemu.kill();
        outcome.seconds = elapsed(&qemu);
        return Ok(outcome);
    }
    let t_banner = elapsed(&qemu);
    outcome.banner_seconds = Some(t_banner);
    push(
        rows,
        "boot",
        true,
        format!("sshd answered after {t_banner:.1} s"),
    );
    eprintln!("boot {boot}: sshd answered after {t_banner:.1} s");

    // ssh_login, retried while the guest finishes setting up.
    let mut last = String::new();
    let logged_in = loop {
        if qemu.exited().is_some() {
            last = format!("QEMU exited; last attempt: {last}");
            break false;
        }
        let r = ssh(s.key, port, "true", Duration::from_secs(60))?;
        if r.code == Some(0) {
            break true;
        }
        last = ran_detail(&r);
        if Instant::now() >= deadline {
            break false;
        }
        std::thread::sleep(Duration::from_secs(3));
    };
    if !logged_in {
        push(
            rows,
            "ssh_login",
            false,
            format!("no login within {} s: {last}", s.args.timeout),
        );
        for name in &CHECKS[1..] {
            if *name == "imdsv2_token" {
                let (ok, d) = imds_check(s.imds, first_request);
                push(rows, name, ok, d);
            } else {
                push(rows, name, false, "not run: no SSH login".into());
            }
        }
        qemu.kill();
        outcome.seconds = elapsed(&qemu);
        return Ok(outcome);
    }
    let t_login = elapsed(&qemu);
    outcome.login_seconds = Some(t_login);
    push(
        rows,
        "ssh_login",
        true,
        format!("admin logged in with the IMDS key after {t_login:.1} s"),
    );
    eprintln!("boot {boot}: logged in as admin after {t_login:.1} s");

    let minute = Duration::from_secs(60);

    // sudo
    let r = ssh(s.key, port, "sudo -n true", minute)?;
    push(
        rows,
        "sudo",
        r.code == Some(0),
        if r.code == Some(0) {
            "sudo -n true: ok".into()
        } else {
            ran_detail(&r)
        },
    );

    // password_auth_refused
    let mut c = ssh_base(s.key, port);
    c.args([
        "-o",
        "PreferredAuthentications=password,keyboard-interactive",
        "-o",
        "PubkeyAuthentication=no",
        "-o",
        "NumberOfPasswordPrompts=0",
        "admin@127.0.0.1",
        "true",
    ]);
    let r = run_limited(c, minute)?;
    let methods = offered_methods(&r.stderr);
    let (ok, detail) = match (&r.code, &methods) {
        (Some(0), _) => (false, "a login without a key succeeded".to_string()),
        (_, Some(m)) if m == &["publickey"] => (
            true,
            "refused; the server offers only publickey".to_string(),
        ),
        (_, Some(m)) => (
            false,
            format!("refused, but the server offers {}", m.join(",")),
        ),
        (_, None) => (false, format!("no methods list: {}", ran_detail(&r))),
    };
    push(rows, "password_auth_refused", ok, detail);

    // host_keys
    let (ok, detail, keys) = host_keys_check(s, port, boot, first_keys)?;
    outcome.host_keys = keys;
    push(rows, "host_keys", ok, detail);

    // system_running
    let r = ssh(
        s.key,
        port,
        &format!("sudo -n timeout {SYSTEM_RUNNING_WAIT} systemctl is-system-running --wait"),
        Duration::from_secs(SYSTEM_RUNNING_WAIT + 60),
    )?;
    let state = r.stdout.trim().to_string();
    if state == "running" {
        push(rows, "system_running", true, "running".into());
    } else {
        let failed = ssh(
            s.key,
            port,
            "sudo -n systemctl --failed --no-legend --plain",
            minute,
        )?;
        let state = if state.is_empty() {
            ran_detail(&r)
        } else {
            state
        };
        push(
            rows,
            "system_running",
            false,
            format!(
                "{state}; failed units: {}",
                one_line(&failed.stdout).if_empty("none listed")
            ),
        );
    }

    // dpkg_audit
    let r = ssh(
        s.key,
        port,
        "sudo -n dpkg --audit",
        Duration::from_secs(120),
    )?;
    // dpkg reports on stdout; stderr may carry sudo's own warnings, which
    // are shown but are not dpkg's findings.
    let quiet = r.code == Some(0) && r.stdout.trim().is_empty();
    let detail = if quiet {
        let noise = one_line(&r.stderr);
        if noise.is_empty() {
            "dpkg --audit: nothing to report".to_string()
        } else {
            format!("dpkg --audit: nothing to report (stderr: {noise})")
        }
    } else {
        ran_detail(&r)
    };
    push(rows, "dpkg_audit", quiet, detail);

    // imdsv2_token
    let (ok, d) = imds_check(s.imds, first_request);
    push(rows, "imdsv2_token", ok, d);

    // Power off: politely, then by force.
    let _ = ssh(
        s.key,
        port,
        "sudo -n systemctl poweroff",
        Duration::from_secs(20),
    );
    outcome.poweroff = match qemu.wait_exit(Duration::from_secs(30)) {
        Some(_) => "clean",
        None => "killed",
    };
    qemu.kill();
    outcome.seconds = elapsed(&qemu);
    Ok(outcome)
}

trait IfEmpty {
    fn if_empty(self, other: &str) -> String;
}

impl IfEmpty for String {
    fn if_empty(self, other: &str) -> String {
        if self.is_empty() {
            other.to_string()
        } else {
            self
        }
    }
}

fn host_keys_check(
    s: &Session<'_>,
    port: u16,
    boot: u32,
    first_keys: Option<&[String]>,
) -> Result<(bool, String, Vec<String>)> {
    let minute = Duration::from_secs(60);
    let r = ssh(s.key, port, "ls -1 /etc/ssh", minute)?;
    let files: Vec<String> = r
        .stdout
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("ssh_host_") && l.ends_with("_key"))
        .map(str::to_string)
        .collect();
    let mut scan = Command::new("ssh-keyscan");
    scan.args(["-T", "30", "-p", &port.to_string(), "127.0.0.1"]);
    let scanned = run_limited(scan, minute)?;
    let scan_file = s.work.join(format!("host-keys-{boot}"));
    fs::write(&scan_file, &scanned.stdout)?;
    let mut fp = Command::new("ssh-keygen");
    fp.arg("-l").arg("-f").arg(&scan_file);
    let fps = run_limited(fp, minute)?;
    // "256 SHA256:... [127.0.0.1]:PORT (ED25519)" -> "ED25519 SHA256:..."
    let mut keys: Vec<String> = fps
        .stdout
        .lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let fp = words.get(1)?;
            let kind = words.last()?.trim_matches(['(', ')']);
            Some(format!("{kind} {fp}"))
        })
        .collect();
    keys.sort();
    keys.dedup();
    if files.is_empty() {
        return Ok((
            false,
            format!("no ssh_host_*_key in /etc/ssh ({})", ran_detail(&r)),
            keys,
        ));
    }
    if keys.is_empty() {
        return Ok((
            false,
            format!(
                "{} host keys, but ssh-keyscan got none: {}",
                files.len(),
                ran_detail(&scanned)
            ),
            keys,
        ));
    }
    let listing = format!("{} ({})", files.join(", "), keys.join(", "));
    match first_keys {
        None => Ok((true, listing, keys)),
        Some(first) => {
            let shared: Vec<&String> = keys.iter().filter(|k| first.contains(k)).collect();
            if shared.is_empty() {
                Ok((true, format!("{listing}; all differ from boot 1"), keys))
            } else {
                let shared: Vec<&str> = shared.iter().map(|k| k.as_str()).collect();
                Ok((
                    false,
                    format!(
                        "same host keys as boot 1 (baked into the image?): {}",
                        shared.join(", ")
                    ),
                    keys,
                ))
            }
        }
    }
}

/// `imdsv2_token`: the key was fetched with a valid session token during
/// this boot.
fn imds_check(imds: &ImdsServer, first_request: usize) -> (bool, String) {
    let log = imds.log();
    let this_boot = &log[first_request.min(log.len())..];
    let key_gets: Vec<_> = this_boot
        .iter()
        .filter(|r| r.path == imds::OPENSSH_KEY_PATH && r.method == "GET")
        .collect();
    let tokens = this_boot
        .iter()
        .filter(|r| r.method == "PUT" && r.status == 200)
        .count();
    if key_gets
        .iter()
        .any(|r| r.token == TokenUse::Valid && r.status == 200)
    {
        (
            true,
            format!(
                "key fetched with a session token ({tokens} token(s) issued, {} requests)",
                this_boot.len()
            ),
        )
    } else if key_gets.is_empty() {
        (
            false,
            format!(
                "the key was never requested ({} IMDS requests this boot)",
                this_boot.len()
            ),
        )
    } else {
        let seen: Vec<String> = key_gets
            .iter()
            .map(|r| format!("token {} -> {}", r.token.name(), r.status))
            .collect();
        (false, format!("key GETs: {}", seen.join(", ")))
    }
}

fn exe_for_qemu(work: &Path) -> Result<String> {
    let exe = std::env::current_exe().context("finding the ami binary")?;
    if let Some(s) = exe.to_str().filter(|s| plain_word(s)) {
        return Ok(s.to_string());
    }
    // A path QEMU would split: use a symlink with a plain name.
    let link = work.join("ami-relay");
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(&exe, &link)
        .with_context(|| format!("linking {}", link.display()))?;
    match link.to_str().filter(|s| plain_word(s)) {
        Some(s) => Ok(s.to_string()),
        None => bail!(
            "neither {} nor the work directory {} is a path QEMU can run (spaces or quotes); pass --work with a plain path",
            exe.display(),
            work.display()
        ),
    }
}

/// Whether `program` is an executable file, or found on `PATH` when it has
/// no `/`.
fn find_program(program: &Path) -> bool {
    if program.components().count() > 1 {
        return program.is_file();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| dir.join(program).is_file())
}

/// Runs `ami boot-test`.
pub fn run(args: &BootTestArgs) -> Result<()> {
    if !args.image.is_file() {
        bail!("{}: no such image file", args.image.display());
    }
    let (work, temp) = match &args.work {
        Some(dir) => {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            (dir.clone(), None)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("ami-boot-test-")
                .tempdir()
                .context("creating a work directory")?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let result = run_in(args, &work);
    match (temp, &result) {
        // A failed boot: keep the logs.
        (Some(t), Ok(false)) => {
            let kept = t.keep();
            eprintln!("work directory kept: {}", kept.display());
        }
        // Passed, or stopped before booting (nothing worth keeping).
        (Some(t), _) => drop(t),
        (None, _) => eprintln!("work directory: {}", work.display()),
    }
    match result {
        Ok(true) => Ok(()),
        Ok(false) => bail!("boot test of {} failed", args.image.display()),
        Err(e) => Err(e),
    }
}

/// The run proper; `Ok(false)` when a check failed.
fn run_in(args: &BootTestArgs, work: &Path) -> Result<bool> {
    let started = Instant::now();
    let (firmware, layout) = plan_firmware(args, work)?;
    if !find_program(&args.qemu) {
        bail!(
            "{} not found: install qemu-system-x86 or pass --qemu",
            args.qemu.display()
        );
    }
    for tool in ["ssh", "ssh-keygen", "ssh-keyscan"] {
        if !find_program(Path::new(tool)) {
            bail!("{tool} not found: install openssh-client");
        }
    }
    let accel = Accel::detect();
    match &firmware {
        Firmware::Direct {
            entry,
            title,
            kernel_in_image,
            cmdline,
            ..
        } => eprintln!(
            "boot-test {}: PV-GRUB emulation, menu.lst entry {entry} ({title:?}): {kernel_in_image} {cmdline}",
            args.image.display()
        ),
        Firmware::Uefi { secure_boot, .. } => eprintln!(
            "boot-test {}: UEFI{} (OVMF from {})",
            args.image.display(),
            if *secure_boot { " Secure Boot" } else { "" },
            args.ovmf_dir.display()
        ),
    }
    eprintln!(
        "disk {}, accel {}, IMDS tokens {}, {} boot(s), timeout {} s",
        args.disk.name(),
        accel.name(),
        args.imds.name(),
        args.boots,
        args.timeout
    );

    // A fresh key in a private directory.
    let keydir = tempfile::Builder::new()
        .prefix("ami-boot-test-key-")
        .tempdir()
        .context("creating a directory for the SSH key")?;
    let key = keydir.path().join("id_ed25519");
    let mut kg = Command::new("ssh-keygen");
    kg.args(["-q", "-t", "ed25519", "-N", "", "-C", "ami-boot-test", "-f"])
        .arg(&key);
    let r = run_limited(kg, Duration::from_secs(60))
        .context("generating an SSH key (is openssh-client installed?)")?;
    if r.code != Some(0) {
        bail!("ssh-keygen failed: {}", ran_detail(&r));
    }
    let public = fs::read_to_string(key.with_extension("pub"))
        .context("reading the generated public key")?;

    let imds = ImdsServer::start(Metadata::new(&public), args.imds)
        .context("starting the metadata service")?;
    let imds_cmd = format!("{} imds-relay {}", exe_for_qemu(work)?, imds.addr());
    let session = Session {
        args,
        work,
        firmware: &firmware,
        accel,
        key: &key,
        imds: &imds,
        imds_cmd: &imds_cmd,
    };

    let mut rows = Vec::new();
    let mut boots = Vec::new();
    let mut first_keys: Option<Vec<String>> = None;
    let mut last_serial = work.join("serial-1.log");
    for boot in 1..=args.boots {
        last_serial = work.join(format!("serial-{boot}.log"));
        let outcome = boot_once(&session, boot, first_keys.as_deref(), &mut rows)?;
        let booted = outcome.login_seconds.is_some();
        if boot == 1 {
            first_keys = Some(outcome.host_keys.clone());
        }
        boots.push((boot, outcome));
        if !booted {
            break;
        }
    }
    let imds_log = imds.log();
    imds.stop();
    let mut log_lines = String::new();
    for r in &imds_log {
        log_lines.push_str(&r.to_json());
        log_lines.push('\n');
    }
    fs::write(work.join("imds.log"), log_lines)?;

    let passed = rows.iter().all(|r| r.passed);
    print_table(&rows);
    if !passed {
        eprintln!(
            "\nGet System Log (last {LOG_TAIL_LINES} lines of {}):",
            last_serial.display()
        );
        let tail = log_tail(&last_serial, LOG_TAIL_LINES);
        eprintln!("{}", if tail.is_empty() { "(empty)" } else { &tail });
    }
    let failed = rows.iter().filter(|r| !r.passed).count();
    eprintln!(
        "{}: {} of {} checks passed in {:.1} s",
        if passed { "PASS" } else { "FAIL" },
        rows.len() - failed,
        rows.len(),
        started.elapsed().as_secs_f64()
    );

    let report = report_json(
        args, work, &firmware, layout, accel, passed, &rows, &boots, &imds_log,
    );
    let text = serde_json::to_string(&report)?;
    fs::write(work.join("report.json"), format!("{text}\n"))?;
    if args.json {
        print_stdout(&text)?;
    }
    Ok(passed)
}

fn print_table(rows: &[CheckRow]) {
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(5).max(5);
    eprintln!("\n{:width$}  BOOT  RESULT  AT (s)  DETAIL", "CHECK");
    for r in rows {
        eprintln!(
            "{:width$}  {:<4}  {:<6}  {:>6.1}  {}",
            r.name,
            r.boot,
            if r.passed { "pass" } else { "FAIL" },
            r.at,
            r.detail
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn report_json(
    args: &BootTestArgs,
    work: &Path,
    firmware: &Firmware,
    layout: ProbedLayout,
    accel: Accel,
    passed: bool,
    rows: &[CheckRow],
    boots: &[(u32, BootOutcome)],
    imds_log: &[imds::RequestRecord],
) -> Value {
    let boot_mode = match firmware {
        Firmware::Direct {
            entry,
            title,
            kernel_in_image,
            initrd_in_image,
            cmdline,
            ..
        } => json!({
            "kind": "pvgrub",
            "menu_entry": entry,
            "title": title,
            "kernel": kernel_in_image,
            "initrd": initrd_in_image,
            "cmdline": cmdline,
        }),
        Firmware::Uefi { secure_boot, .. } => json!({
            "kind": "uefi",
            "secure_boot": secure_boot,
        }),
    };
    let layout = match layout {
        ProbedLayout::Plain => "plain",
        ProbedLayout::Mbr => "mbr",
        ProbedLayout::Gpt => "gpt",
        ProbedLayout::Unknown => "unknown",
    };
    json!({
        "image": args.image.display().to_string(),
        "passed": passed,
        "partitioning": layout,
        "boot": boot_mode,
        "disk": args.disk.name(),
        "accel": accel.name(),
        "imds": args.imds.name(),
        "work": work.display().to_string(),
        "checks": rows.iter().map(|r| json!({
            "name": r.name,
            "boot": r.boot,
            "passed": r.passed,
            "detail": r.detail,
            "at_seconds": r.at,
        })).collect::<Vec<_>>(),
        "boots": boots.iter().map(|(n, o)| json!({
            "boot": n,
            "serial_log": work.join(format!("serial-{n}.log")).display().to_string(),
            "banner_seconds": o.banner_seconds,
            "login_seconds": o.login_seconds,
            "seconds": o.seconds,
            "host_keys": o.host_keys,
            "poweroff": o.poweroff,
            "qemu_exit": o.qemu_exit,
        })).collect::<Vec<_>>(),
        "imds_requests": imds_log.iter().map(|r| json!({
            "at": r.at.as_secs_f64(),
            "method": r.method,
            "path": r.path,
            "token": r.token.name(),
            "status": r.status,
        })).collect::<Vec<_>>(),
    })
}

/// `ami imds-relay ADDR` (hidden): what QEMU runs per guest connection to
/// the metadata address.
#[derive(Debug, clap::Args)]
pub struct ImdsRelayArgs {
    /// The metadata server's loopback address (HOST:PORT).
    addr: String,
}

/// Runs `ami imds-relay`.
pub fn run_relay(args: &ImdsRelayArgs) -> Result<()> {
    imds::relay(&args.addr);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ami_core::progress::NoProgress;
    use ami_core::{FileData, Metadata as FsMeta, Node, Tree};

    const MENU: &str = "\
# PV-GRUB menu
default 1
timeout 0
hiddenmenu

title Debian GNU/Linux, rescue
root (hd0)
kernel /boot/vmlinuz-old root=LABEL=rootfs ro single
initrd /boot/initrd.img-old

title Debian GNU/Linux
root (hd0)
kernel /boot/vmlinuz-6.1.0-50-cloud-amd64 root=LABEL=rootfs ro console=hvc0 net.ifnames=0
initrd /boot/initrd.img-6.1.0-50-cloud-amd64
";

    #[test]
    fn parses_the_default_entry() {
        let menu = parse_menu_lst(MENU).unwrap();
        assert_eq!(menu.entries.len(), 2);
        let (i, e) = menu.default_entry().unwrap();
        assert_eq!(i, 1);
        assert_eq!(e.title, "Debian GNU/Linux");
        assert_eq!(e.root, Some(GrubDevice::Disk(0)));
        assert_eq!(
            e.kernel.as_deref(),
            Some("/boot/vmlinuz-6.1.0-50-cloud-amd64")
        );
        assert_eq!(e.cmdline, "root=LABEL=rootfs ro console=hvc0 net.ifnames=0");
        assert_eq!(
            e.initrd.as_deref(),
            Some("/boot/initrd.img-6.1.0-50-cloud-amd64")
        );
        assert_eq!(menu.entries[0].cmdline, "root=LABEL=rootfs ro single");
    }

    #[test]
    fn menu_syntax_variants() {
        // `=` separators, a device in front of the path, a global root,
        // an out-of-range default falling back to entry 0.
        let menu = parse_menu_lst(
            "default=7\nroot=(hd0,0)\ntitle A\nkernel=(hd0,0)/vmlinuz ro\ntitle B\nkernel /b\n",
        )
        .unwrap();
        assert_eq!(menu.root, Some(GrubDevice::Partition(0, 0)));
        let (i, e) = menu.default_entry().unwrap();
        assert_eq!(i, 0);
        assert_eq!(e.kernel.as_deref(), Some("/vmlinuz"));
        assert_eq!(e.kernel_device, Some(GrubDevice::Partition(0, 0)));
        assert_eq!(e.cmdline, "ro");
        assert_eq!(e.initrd, None);
        // `default saved` and no default mean entry 0.
        let menu =
            parse_menu_lst("default saved\ntitle A\nkernel /a\ntitle B\nkernel /b\n").unwrap();
        assert_eq!(menu.default_entry().unwrap().0, 0);
        // Errors.
        assert!(parse_menu_lst("default 0\ntimeout 5\n")
            .unwrap()
            .default_entry()
            .is_err());
        assert!(parse_menu_lst("kernel /vmlinuz\n").is_err());
        assert!(parse_menu_lst("title A\nroot (sd0)\n").is_err());
        assert!(parse_menu_lst("title A\nkernel\n").is_err());
        assert_eq!(
            GrubDevice::parse("(hd1,2)"),
            Some(GrubDevice::Partition(1, 2))
        );
        assert_eq!(GrubDevice::Partition(0, 0).to_string(), "(hd0,0)");
        assert_eq!(GrubDevice::parse("(hd0"), None);
    }

    #[test]
    fn console_is_added_once() {
        assert_eq!(
            qemu_cmdline("root=LABEL=rootfs ro console=hvc0"),
            "root=LABEL=rootfs ro console=hvc0 console=ttyS0"
        );
        assert_eq!(
            qemu_cmdline("ro console=ttyS0,115200"),
            "ro console=ttyS0,115200"
        );
        assert_eq!(qemu_cmdline(""), "console=ttyS0");
        assert_eq!(
            qemu_cmdline("console=ttyS01"),
            "console=ttyS01 console=ttyS0"
        );
    }

    #[test]
    fn reads_ssh_method_lists() {
        assert_eq!(
            offered_methods("admin@127.0.0.1: Permission denied (publickey).\r\n"),
            Some(vec!["publickey".to_string()])
        );
        assert_eq!(
            offered_methods("x: Permission denied (publickey,password,keyboard-interactive)."),
            Some(vec![
                "publickey".to_string(),
                "password".to_string(),
                "keyboard-interactive".to_string()
            ])
        );
        assert_eq!(offered_methods("Connection refused"), None);
    }

    fn direct_firmware() -> Firmware {
        Firmware::Direct {
            kernel: "/w,x/vmlinuz".into(),
            initrd: Some("/w,x/initrd.img".into()),
            cmdline: "root=LABEL=rootfs ro console=ttyS0".into(),
            entry: 0,
            title: "t".into(),
            kernel_in_image: "/boot/vmlinuz".into(),
            initrd_in_image: None,
        }
    }

    fn strings(args: &[OsString]) -> Vec<String> {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn after<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn qemu_command_line_direct_boot() {
        let fw = direct_firmware();
        let run = QemuRun {
            image: Path::new("/img,dir/root.ext4"),
            serial_log: Path::new("/w/serial-1.log"),
            disk: DiskBus::Nvme,
            accel: Accel::Tcg,
            firmware: &fw,
            vars: None,
            ssh_port: 2222,
            imds_cmd: "/bin/ami imds-relay 127.0.0.1:1234",
        };
        let a = strings(&qemu_args(&run));
        assert_eq!(after(&a, "-machine"), ["q35,accel=tcg"]);
        assert_eq!(after(&a, "-cpu"), ["max,-svm,-vmx"]);
        assert_eq!(
            after(&a, "-drive"),
            ["if=none,id=root,file=/img,,dir/root.ext4,format=raw,snapshot=on,cache=unsafe"]
        );
        assert_eq!(
            after(&a, "-device"),
            [
                "virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56,romfile=",
                "nvme,drive=root,serial=vol0123456789abcdef0"
            ]
        );
        let netdev = after(&a, "-netdev")[0];
        assert!(netdev.contains(",restrict=on,"));
        assert!(netdev.contains("net=169.254.0.0/16"));
        assert!(netdev.contains("hostfwd=tcp:127.0.0.1:2222-:22"));
        assert!(netdev
            .ends_with("guestfwd=tcp:169.254.169.254:80-cmd:/bin/ami imds-relay 127.0.0.1:1234"));
        // -kernel/-initrd are plain file arguments: no comma doubling.
        assert_eq!(after(&a, "-kernel"), ["/w,x/vmlinuz"]);
        assert_eq!(after(&a, "-initrd"), ["/w,x/initrd.img"]);
        assert_eq!(after(&a, "-append"), ["root=LABEL=rootfs ro console=ttyS0"]);
        assert!(a.contains(&"-nodefaults".to_string()));
        assert!(!a.iter().any(|x| x.contains("pflash")));
    }

    #[test]
    fn qemu_command_line_uefi() {
        let fw = Firmware::Uefi {
            code: "/ovmf/OVMF_CODE_4M.secboot.fd".into(),
            vars_template: "/ovmf/OVMF_VARS_4M.ms.fd".into(),
            secure_boot: true,
        };
        let run = QemuRun {
            image: Path::new("/i/disk.img"),
            serial_log: Path::new("/w/s.log"),
            disk: DiskBus::Virtio,
            accel: Accel::Kvm,
            firmware: &fw,
            vars: Some(Path::new("/w/VARS.fd")),
            ssh_port: 1,
            imds_cmd: "/a,b imds-relay x",
        };
        let a = strings(&qemu_args(&run));
        assert_eq!(after(&a, "-machine"), ["q35,accel=kvm,smm=on"]);
        assert_eq!(after(&a, "-cpu"), ["host"]);
        assert_eq!(
            after(&a, "-global"),
            ["driver=cfi.pflash01,property=secure,value=on"]
        );
        let drives = after(&a, "-drive");
        assert_eq!(
            &drives[1..],
            [
                "if=pflash,format=raw,unit=0,readonly=on,file=/ovmf/OVMF_CODE_4M.secboot.fd",
                "if=pflash,format=raw,unit=1,file=/w/VARS.fd"
            ]
        );
        assert_eq!(after(&a, "-device")[1], "virtio-blk-pci,drive=root");
        assert!(after(&a, "-netdev")[0].ends_with("-cmd:/a,,b imds-relay x"));
        assert!(after(&a, "-kernel").is_empty());
    }

    #[test]
    fn plain_words() {
        assert!(plain_word("/opt/ami-1.0/bin/ami"));
        assert!(!plain_word("/tmp/a b/ami"));
        assert!(!plain_word("/tmp/it's/ami"));
        assert!(!plain_word(""));
    }

    /// An ext4 image (the project's writer) holding `files`
    /// (path, contents) and `links` (path, target).
    fn image(files: &[(&str, &[u8])], links: &[(&str, &str)]) -> Vec<u8> {
        let mut tree = Tree::new(FsMeta::new(0o755));
        let split = |path: &str| {
            let (dir, name) = path.rsplit_once('/').unwrap();
            (dir.to_string(), name.to_string())
        };
        for (path, data) in files {
            let (dir, name) = split(path);
            let d = tree
                .create_dir_all(dir.as_bytes(), FsMeta::new(0o755))
                .unwrap();
            let node = Node::file(FileData::from_bytes(data.to_vec()), FsMeta::new(0o644));
            tree.add(d, name.as_bytes(), node).unwrap();
        }
        for (path, target) in links {
            let (dir, name) = split(path);
            let d = tree
                .create_dir_all(dir.as_bytes(), FsMeta::new(0o755))
                .unwrap();
            let node = Node::symlink(target.as_bytes().to_vec(), FsMeta::new(0o777));
            tree.add(d, name.as_bytes(), node).unwrap();
        }
        let mut out = std::io::Cursor::new(Vec::new());
        ami_ext4::format(
            &mut out,
            &tree,
            &ami_ext4::FormatOptions::new(),
            &NoProgress,
        )
        .unwrap();
        out.into_inner()
    }

    #[test]
    fn resolves_symlinks_like_the_kernel_would() {
        let img = image(
            &[("/boot/vmlinuz-6.1", b"kernel")],
            &[
                ("/vmlinuz", "boot/vmlinuz-6.1"),
                ("/boot/latest", "/boot/vmlinuz-6.1"),
                ("/kdir", "/boot"),
                ("/loop", "/loop"),
            ],
        );
        let mut fs = Ext4Reader::new(std::io::Cursor::new(img)).unwrap();
        for p in [
            "/vmlinuz",
            "/boot/latest",
            "/kdir/vmlinuz-6.1",
            "/kdir/../vmlinuz",
        ] {
            let (ino, resolved) = resolve_file(&mut fs, p).unwrap();
            assert_eq!(resolved, "/boot/vmlinuz-6.1", "{p}");
            assert_eq!(fs.read_file(ino).unwrap(), b"kernel");
        }
        assert!(resolve_file(&mut fs, "/boot/missing").is_err());
        assert!(resolve_file(&mut fs, "/loop").is_err());
        assert!(
            resolve_file(&mut fs, "/kdir").is_err(),
            "a directory is not a kernel"
        );
    }
}
