//! The native initramfs checked by independent tools and by booting it.
//!
//! * Always: GNU `cpio -itv` lists the archive (after `gzip -dc`) with the
//!   modes, owners and device numbers we wrote, and `gzip -t` passes.
//! * `AMI_E2E=1`: real packages fetched with `apt-get download` (the
//!   kernel packages `linux-image-cloud-amd64` and `linux-image-amd64`
//!   depend on, and `busybox-static`), their modules indexed by the native
//!   depmod, the initramfs built from them and booted in QEMU (TCG) with
//!   the kernel and a root filesystem written by `ami_ext4` whose
//!   `/sbin/init` prints `AMI-ROOT-OK` and powers off: NVMe and virtio-blk
//!   disks, `LABEL=`, `UUID=` and `PARTUUID=` roots, both kernels, and the
//!   rescue shell when the root cannot be found. The `PARTUUID` lookup of
//!   `/init` is also run on the host with the real busybox against GPT and
//!   MBR disk images written by `ami_ext4::disk`.

use ami_core::configure::cpio::{read_newc, EntryKind};
use ami_core::configure::depmod::depmod;
use ami_core::configure::initramfs::{self, Initramfs, InitramfsOptions, INIT_SCRIPT};
use ami_core::configure::{write_file, write_symlink};
use ami_core::progress::NoProgress;
use ami_core::scan::{scan_dir, ScanOptions};
use ami_core::{Metadata, Timestamp, Tree};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

const E: Timestamp = Timestamp { secs: 0, nanos: 0 };

fn e2e() -> bool {
    if std::env::var_os("AMI_E2E").is_some_and(|v| v == "1") {
        return true;
    }
    eprintln!(
        "skipped: set AMI_E2E=1 to fetch real kernels and busybox-static with apt-get download and boot the initramfs in QEMU"
    );
    false
}

/// A small fake module set (ext4 modular with its dependencies).
fn fake_tree(ver: &str) -> Tree {
    let mut t = Tree::new(Metadata::new(0o755));
    write_symlink(&mut t, "/lib", "usr/lib", E).unwrap();
    let dir = format!("/usr/lib/modules/{ver}");
    let m = Metadata::new(0o644);
    let dep = "kernel/lib/crc16.ko:\nkernel/fs/mbcache.ko:\nkernel/fs/jbd2/jbd2.ko:\n\
               kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko kernel/lib/crc16.ko\n";
    for line in dep.lines() {
        let path = line.split(':').next().unwrap();
        write_file(&mut t, &format!("{dir}/{path}"), path, m.clone(), E).unwrap();
    }
    write_file(&mut t, &format!("{dir}/modules.dep"), dep, m.clone(), E).unwrap();
    write_file(
        &mut t,
        &format!("{dir}/modules.builtin"),
        "kernel/drivers/nvme/host/nvme.ko\n",
        m,
        E,
    )
    .unwrap();
    t
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (install it)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn gnu_cpio_lists_the_archive() {
    let ver = "6.1.0-1-fake";
    let built = initramfs::build(
        &fake_tree(ver),
        ver,
        b"busybox bytes",
        &InitramfsOptions::new().mtime(1_700_000_000),
    )
    .unwrap();
    assert_eq!(built.modules, ["crc16", "mbcache", "jbd2", "ext4"]);
    assert_eq!(built.builtin, ["nvme"]);
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("initrd.img");
    std::fs::write(&gz, &built.data).unwrap();
    run(Command::new("gzip").arg("-t").arg(&gz));
    let raw = run(Command::new("gzip").arg("-dc").arg(&gz)).stdout;
    let mut child = Command::new("cpio")
        .args(["-itv", "--quiet"])
        .env("TZ", "UTC")
        .env("LC_ALL", "C")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("GNU cpio (apt package cpio)");
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &raw));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Vec<&str>> = listing
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines.len(), built.entries, "{listing}");
    let find = |name: &str| {
        lines
            .iter()
            .find(|l| l.contains(&name))
            .unwrap_or_else(|| panic!("{name} not listed:\n{listing}"))
    };
    // mode, links, owner, group, then size or "major, minor".
    assert_eq!(
        &find("dev/console")[..6],
        ["crw-------", "1", "root", "root", "5,", "1"]
    );
    assert_eq!(
        &find("dev/null")[..6],
        ["crw-rw-rw-", "1", "root", "root", "1,", "3"]
    );
    let init = find("init");
    assert_eq!(init[0], "-rwxr-xr-x");
    assert_eq!(init[4], INIT_SCRIPT.len().to_string());
    assert_eq!(find("bin/busybox")[4], "13");
    let sh = find("bin/sh");
    assert!(
        sh[0].starts_with('l') && sh.ends_with(&["->", "busybox"]),
        "{sh:?}"
    );
    for d in ["dev", "proc", "sys", "root"] {
        assert_eq!(find(d)[0], "drwxr-xr-x");
    }
    let ko = find(&format!("lib/modules/{ver}/kernel/fs/ext4/ext4.ko"));
    assert_eq!(ko[0], "-rw-r--r--");
    // GNU cpio prints the date of each entry: our mtime, 2023-11-14 UTC.
    assert!(
        listing.lines().all(|l| l.contains("Nov 14  2023")),
        "{listing}"
    );
}

// ---------------------------------------------------------------- E2E

/// Downloads and caches under the target directory (kept between runs).
fn work_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("initramfs-e2e");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The real package a metapackage depends on (`apt-cache depends`).
fn real_package(meta: &str) -> String {
    let out = run(Command::new("apt-cache").args(["depends", meta]));
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Depends: "))
        .filter(|p| p.starts_with("linux-image-"))
        .unwrap_or_else(|| panic!("no linux-image dependency of {meta}:\n{text}"))
        .to_owned()
}

/// `apt-get download PKG` into `dir` and `dpkg-deb -x` into `dir/PKG`.
fn fetch(pkg: &str) -> PathBuf {
    let dir = work_dir();
    let root = dir.join(pkg);
    if root.join(".done").exists() {
        return root;
    }
    let dl = dir.join("debs");
    std::fs::create_dir_all(&dl).unwrap();
    run(Command::new("apt-get")
        .args(["download", pkg])
        .current_dir(&dl));
    let deb = std::fs::read_dir(&dl)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{pkg}_"))
        })
        .unwrap();
    let _ = std::fs::remove_dir_all(&root);
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    std::fs::write(root.join(".done"), b"").unwrap();
    root
}

fn busybox() -> &'static [u8] {
    static BB: OnceLock<Vec<u8>> = OnceLock::new();
    BB.get_or_init(|| std::fs::read(fetch("busybox-static").join("bin/busybox")).unwrap())
}

struct Kernel {
    version: String,
    vmlinuz: PathBuf,
    initrd: PathBuf,
    built: Initramfs,
}

/// Fetches the kernel `meta` depends on, indexes its modules with the
/// native depmod, builds and writes its initramfs.
fn kernel(meta: &str, scsi: bool) -> Kernel {
    let pkg = real_package(meta);
    let root = fetch(&pkg);
    let version = std::fs::read_dir(root.join("lib/modules"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name()
        .into_string()
        .unwrap();
    let t0 = Instant::now();
    let mut tree = scan_dir(&root, &ScanOptions::new().root_owner(true), &NoProgress).unwrap();
    let report = depmod(&mut tree, &version, E).unwrap();
    // Put the native depmod's indexes next to the modules on the host, so
    // kmod's modprobe can state the load order independently.
    let host_dir = root.join("lib/modules").join(&version);
    for name in &report.files {
        let data =
            ami_core::configure::read_required(&tree, &format!("/lib/modules/{version}/{name}"))
                .unwrap();
        std::fs::write(host_dir.join(name), data).unwrap();
    }
    let options = InitramfsOptions::new().mtime(1_700_000_000).scsi(scsi);
    let built = initramfs::build(&tree, &version, busybox(), &options).unwrap();
    // Same input, same bytes.
    assert_eq!(
        built.data,
        initramfs::build(&tree, &version, busybox(), &options)
            .unwrap()
            .data
    );
    eprintln!(
        "{pkg}: initramfs {} bytes, {} entries, built in {:.1} s (scan + depmod + build)\n  load order: {}\n  built in: {}\n  absent: {}",
        built.data.len(),
        built.entries,
        t0.elapsed().as_secs_f64(),
        built.modules.join(" "),
        built.builtin.join(" "),
        built.absent.join(" "),
    );
    assert_eq!(
        built.modules,
        modprobe_order(&root, &version, scsi),
        "{pkg}"
    );
    let suffix = if scsi { "-scsi" } else { "" };
    let initrd = work_dir().join(format!("initrd.img-{version}{suffix}"));
    std::fs::write(&initrd, &built.data).unwrap();
    // The archive really contains each module of the order.
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&built.data[..])
        .read_to_end(&mut raw)
        .unwrap();
    let entries = read_newc(&raw).unwrap();
    for m in &built.modules {
        assert!(
            entries.iter().any(|e| e.kind == EntryKind::File
                && e.name.starts_with(&format!("lib/modules/{version}/"))
                && e.name.rsplit('/').next().unwrap().replace('-', "_") == format!("{m}.ko")),
            "{m} missing"
        );
    }
    Kernel {
        vmlinuz: root.join(format!("boot/vmlinuz-{version}")),
        version,
        initrd,
        built,
    }
}

/// The load order `modprobe --show-depends` gives for the default modules
/// (first occurrences, built-in ones left out), as module names.
fn modprobe_order(root: &Path, version: &str, scsi: bool) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    let scsi = if scsi { initramfs::SCSI_MODULES } else { &[] };
    for m in initramfs::DEFAULT_MODULES.iter().chain(scsi) {
        let out = Command::new("modprobe")
            .arg("-d")
            .arg(root)
            .args(["-S", version, "--show-depends", m])
            .output()
            .expect("modprobe (apt package kmod)");
        if !out.status.success() {
            // Not a module of this kernel: must be built in.
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("not found"), "modprobe {m}: {err}");
            continue;
        }
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let Some(path) = line.strip_prefix("insmod ") else {
                assert!(line.starts_with("builtin "), "{line}");
                continue;
            };
            let file = path.trim().rsplit('/').next().unwrap();
            let name = file.split('.').next().unwrap().replace('-', "_");
            if !order.contains(&name) {
                order.push(name);
            }
        }
    }
    order
}

fn cloud() -> &'static Kernel {
    static K: OnceLock<Kernel> = OnceLock::new();
    K.get_or_init(|| kernel("linux-image-cloud-amd64", false))
}

fn cloud_scsi() -> &'static Kernel {
    static K: OnceLock<Kernel> = OnceLock::new();
    K.get_or_init(|| kernel("linux-image-cloud-amd64", true))
}

fn generic() -> &'static Kernel {
    static K: OnceLock<Kernel> = OnceLock::new();
    K.get_or_init(|| kernel("linux-image-amd64", false))
}

const ROOT_UUID: [u8; 16] = *b"\x6a\x51\x0e\x1c\x2b\x3d\x4f\x50\x81\x92\xa3\xb4\xc5\xd6\xe7\xf8";
const ROOT_UUID_TEXT: &str = "6a510e1c-2b3d-4f50-8192-a3b4c5d6e7f8";

/// The root filesystem's tree: busybox, `/sbin/init` a symlink to a script
/// that reports how the root is mounted and powers off.
fn root_tree() -> Tree {
    let mut t = Tree::new(Metadata::new(0o755));
    write_file(
        &mut t,
        "/bin/busybox",
        busybox().to_vec(),
        Metadata::new(0o755),
        E,
    )
    .unwrap();
    write_symlink(&mut t, "/bin/sh", "busybox", E).unwrap();
    let script = "#!/bin/sh\n\
        echo \"AMI-ROOT-MOUNT $(/bin/busybox grep ' / ' /proc/mounts)\"\n\
        echo \"AMI-ROOT-ARGS $*\"\n\
        echo AMI-ROOT-OK\n\
        /bin/busybox poweroff -f\n";
    write_file(
        &mut t,
        "/usr/lib/ami-test/init",
        script,
        Metadata::new(0o755),
        E,
    )
    .unwrap();
    write_symlink(&mut t, "/sbin/init", "/usr/lib/ami-test/init", E).unwrap();
    for d in ["/dev", "/proc", "/sys"] {
        ami_core::configure::write_dir(&mut t, d, Metadata::new(0o755), E).unwrap();
    }
    t
}

const FS_SIZE: u64 = 32 << 20;

fn ext4_options() -> ami_ext4::FormatOptions {
    ami_ext4::FormatOptions::new()
        .label("rootfs")
        .uuid(ROOT_UUID)
        .size(ami_ext4::Size::Bytes(FS_SIZE))
}

/// The bare root filesystem image.
fn root_image() -> &'static Path {
    static IMG: OnceLock<PathBuf> = OnceLock::new();
    IMG.get_or_init(|| {
        let path = work_dir().join("root.ext4");
        let mut f = std::fs::File::create(&path).unwrap();
        ami_ext4::format(&mut f, &root_tree(), &ext4_options(), &NoProgress).unwrap();
        // The writer may leave the end as a hole: give the file its size.
        f.set_len(FS_SIZE).unwrap();
        path
    })
}

/// A partitioned disk with the root filesystem; returns its path and the
/// root's PARTUUID as `ami_ext4::disk` states it.
fn disk_image(layout: ami_ext4::disk::Layout, name: &str) -> (PathBuf, String) {
    use ami_ext4::disk::{plan, write_partition_table, DiskIds, Layout, Window};
    let plan = plan(layout, FS_SIZE, None).unwrap();
    let ids = DiskIds::derive(b"initramfs test");
    let path = work_dir().join(name);
    let mut f = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    f.set_len(plan.disk_size).unwrap();
    write_partition_table(&mut f, &plan, &ids).unwrap();
    ami_ext4::format(
        &mut Window::new(&mut f, plan.root.clone()),
        &root_tree(),
        &ext4_options(),
        &NoProgress,
    )
    .unwrap();
    let partuuid = match layout {
        Layout::Gpt { .. } => ids.root_guid.to_string(),
        _ => format!("{:08x}-01", ids.mbr_signature),
    };
    (path, partuuid)
}

/// One QEMU boot at a time (2 shared cores).
static QEMU: Mutex<()> = Mutex::new(());

/// Boots and returns the serial log and the seconds it took. Stops when
/// QEMU exits or, if `stop_at` is given, when the log contains it.
fn boot(
    k: &Kernel,
    disk: &Path,
    devices: &[&str],
    append: &str,
    stop_at: Option<&str>,
) -> (String, f64) {
    let _guard = QEMU.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serial.log");
    let t0 = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-machine", "q35,accel=tcg", "-cpu", "max", "-m", "512"])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .arg("-kernel")
        .arg(&k.vmlinuz)
        .arg("-initrd")
        .arg(&k.initrd)
        .arg("-append")
        .arg(append)
        .arg("-drive")
        .arg(format!(
            "if=none,id=d,file={},format=raw,snapshot=on",
            disk.display()
        ))
        .args(devices.iter().flat_map(|d| ["-device", d]))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-system-x86_64 (apt package qemu-system-x86)");
    let deadline = Duration::from_secs(300);
    // The guest's tty writes "\r\n" line ends.
    let read_log =
        || String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).replace('\r', "");
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            assert!(status.success(), "qemu failed: {status}: {err}");
            break;
        }
        if stop_at.is_some_and(|s| read_log().contains(s)) {
            std::thread::sleep(Duration::from_millis(500));
            child.kill().unwrap();
            child.wait().unwrap();
            break;
        }
        if t0.elapsed() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!(
                "boot timed out after {deadline:?}; serial log:\n{}",
                read_log()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let secs = t0.elapsed().as_secs_f64();
    eprintln!("boot {} {devices:?} [{append}]: {secs:.1} s", k.version);
    (read_log(), secs)
}

/// The serial log shows every module loaded, in order, the root found on
/// `dev`, mounted read-only, and the root's init ran with its argument.
fn assert_booted(k: &Kernel, log: &str, root: &str, dev: &str, mode: &str) {
    let mut pos = 0;
    for m in &k.built.modules {
        let line = format!("ami-initramfs: loading {m}\n");
        match log[pos..].find(&line) {
            Some(i) => pos += i + line.len(),
            None => panic!("`{line}` missing or out of order; serial log:\n{log}"),
        }
    }
    assert!(
        log.contains(&format!("ami-initramfs: root {root} is {dev}")),
        "serial log:\n{log}"
    );
    assert!(log.contains("AMI-ROOT-OK"), "serial log:\n{log}");
    let mount = log
        .lines()
        .find(|l| l.starts_with("AMI-ROOT-MOUNT"))
        .unwrap();
    assert!(
        mount.contains(&format!("{dev} / ext4 {mode},")),
        "{mount}\nserial log:\n{log}"
    );
    assert!(log.contains("AMI-ROOT-ARGS single"), "serial log:\n{log}");
    assert!(!log.contains("ERROR"), "serial log:\n{log}");
}

const CONSOLE: &str = "console=ttyS0 panic=-1";

#[test]
fn e2e_cloud_kernel_nvme_label() {
    if !e2e() {
        return;
    }
    let k = cloud();
    let append = format!("root=LABEL=rootfs ro {CONSOLE} single");
    let (log, _) = boot(
        k,
        root_image(),
        &["nvme,drive=d,serial=vol0"],
        &append,
        None,
    );
    assert_booted(k, &log, "LABEL=rootfs", "/dev/nvme0n1", "ro");
}

#[test]
fn e2e_cloud_kernel_virtio_uuid() {
    if !e2e() {
        return;
    }
    let k = cloud();
    let append = format!("root=UUID={ROOT_UUID_TEXT} {CONSOLE} single");
    let (log, _) = boot(k, root_image(), &["virtio-blk-pci,drive=d"], &append, None);
    assert_booted(k, &log, &format!("UUID={ROOT_UUID_TEXT}"), "/dev/vda", "ro");
    assert!(log.contains("ami-initramfs: loading virtio_blk"));
}

#[test]
fn e2e_cloud_kernel_gpt_partuuid() {
    if !e2e() {
        return;
    }
    let k = cloud();
    let (disk, partuuid) = disk_image(
        ami_ext4::disk::Layout::Gpt {
            esp_size: ami_ext4::disk::MIN_ESP_SIZE,
        },
        "gpt.img",
    );
    let append = format!("root=PARTUUID={partuuid} {CONSOLE} single");
    let (log, _) = boot(k, &disk, &["nvme,drive=d,serial=vol0"], &append, None);
    assert_booted(
        k,
        &log,
        &format!("PARTUUID={partuuid}"),
        "/dev/nvme0n1p2",
        "ro",
    );
}

#[test]
fn e2e_generic_kernel_nvme() {
    if !e2e() {
        return;
    }
    let k = generic();
    for m in ["ext4", "jbd2", "nvme", "nvme_core"] {
        assert!(k.built.modules.iter().any(|x| x == m), "{m} not modular?");
    }
    let append = format!("root=LABEL=rootfs ro {CONSOLE} single");
    let (log, _) = boot(
        k,
        root_image(),
        &["nvme,drive=d,serial=vol0"],
        &append,
        None,
    );
    assert_booted(k, &log, "LABEL=rootfs", "/dev/nvme0n1", "ro");
}

#[test]
fn e2e_generic_kernel_virtio() {
    if !e2e() {
        return;
    }
    let k = generic();
    let append = format!("root=LABEL=rootfs {CONSOLE} single");
    let (log, _) = boot(k, root_image(), &["virtio-blk-pci,drive=d"], &append, None);
    assert_booted(k, &log, "LABEL=rootfs", "/dev/vda", "ro");
    assert!(log.contains("ami-initramfs: xen_blkfront: no such device here (fine)"));
}

#[test]
fn e2e_rescue_shell_when_root_is_missing() {
    if !e2e() {
        return;
    }
    let k = cloud();
    let append = format!("root=LABEL=nonexistent rootdelay=2 {CONSOLE}");
    let prompt = "(initramfs) # ";
    let (log, secs) = boot(
        k,
        root_image(),
        &["nvme,drive=d,serial=vol0"],
        &append,
        Some(prompt),
    );
    assert!(
        log.contains("ami-initramfs: ERROR: root LABEL=nonexistent not found after 2 s"),
        "serial log:\n{log}"
    );
    assert!(log.contains("nvme0n1"), "block devices listed:\n{log}");
    assert!(log.contains("starting a rescue shell"));
    assert!(log.contains(prompt), "serial log:\n{log}");
    assert!(!log.contains("Kernel panic"));
    eprintln!("rescue prompt after {secs:.1} s");
}

/// `/init`'s `partuuid` function, run by the real busybox on the host
/// against disk images whose identities `ami_ext4::disk` chose.
#[test]
fn e2e_partuuid_lookup_matches_disk_writer() {
    if !e2e() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bb = dir.path().join("busybox");
    std::fs::write(&bb, busybox()).unwrap();
    std::fs::set_permissions(&bb, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    for a in ["sh", "dd", "od", "tr", "sed", "printf", "cat", "echo"] {
        std::os::unix::fs::symlink("busybox", dir.path().join(a)).unwrap();
    }
    // Every applet the initramfs links exists in the real busybox.
    let list = run(Command::new(&bb).arg("--list")).stdout;
    let list = String::from_utf8(list).unwrap();
    for a in initramfs::APPLETS {
        assert!(list.lines().any(|l| l == *a), "busybox has no {a}");
    }
    let script = dir.path().join("init");
    std::fs::write(&script, INIT_SCRIPT).unwrap();
    use ami_ext4::disk::{Layout, MIN_ESP_SIZE};
    for (layout, name, partno) in [
        (
            Layout::Gpt {
                esp_size: MIN_ESP_SIZE,
            },
            "gpt-host.img",
            2,
        ),
        (Layout::Mbr, "mbr-host.img", 1),
    ] {
        let (img, want) = disk_image(layout, name);
        let out = run(Command::new(&bb)
            .args([
                "sh",
                "-c",
                ". \"$0\"; PATH=\"$1\"; partuuid \"$2\" \"$3\" 512",
            ])
            .arg(&script)
            .arg(dir.path())
            .arg(&img)
            .arg(partno.to_string())
            .env("PATH", dir.path()));
        assert_eq!(
            String::from_utf8(out.stdout).unwrap().trim(),
            want.to_lowercase(),
            "{name}"
        );
        std::fs::remove_file(img).unwrap();
    }
}

#[test]
fn e2e_cloud_kernel_virtio_scsi_dev_path_rw() {
    if !e2e() {
        return;
    }
    let k = cloud_scsi();
    for m in ["virtio_scsi", "sd_mod"] {
        assert!(k.built.modules.iter().any(|x| x == m), "{m} not included");
    }
    let append = format!("root=/dev/sda rw {CONSOLE} single");
    let (log, _) = boot(
        k,
        root_image(),
        &["virtio-scsi-pci,id=scsi0", "scsi-hd,drive=d,bus=scsi0.0"],
        &append,
        None,
    );
    assert_booted(k, &log, "/dev/sda", "/dev/sda", "rw");
}

#[test]
fn e2e_rescue_shell_when_init_is_missing() {
    if !e2e() {
        return;
    }
    let k = cloud();
    let append = format!("root=LABEL=rootfs init=/sbin/nothing {CONSOLE}");
    let prompt = "(initramfs) # ";
    let (log, _) = boot(
        k,
        root_image(),
        &["nvme,drive=d,serial=vol0"],
        &append,
        Some(prompt),
    );
    assert!(log.contains("ami-initramfs: root LABEL=rootfs is /dev/nvme0n1"));
    assert!(
        log.contains(
            "ami-initramfs: ERROR: /sbin/nothing is not on the root filesystem /dev/nvme0n1"
        ),
        "serial log:\n{log}"
    );
    assert!(log.contains(prompt), "serial log:\n{log}");
}
