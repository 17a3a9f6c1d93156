//! A native initramfs: a gzip-compressed cpio "newc" archive generated
//! directly from the tree, without running `mkinitramfs`.
//!
//! The archive holds a static busybox (the lead takes it from the
//! `busybox-static` package, `/bin/busybox`) with symlinks for the applets
//! in [`APPLETS`], the storage modules the kernel needs to reach its root
//! filesystem, `/dev/console` (5:1) and `/dev/null` (1:3), the mount points
//! `/proc`, `/sys`, `/dev`, `/root`, the settings file [`CONFIG_PATH`], and
//! `/init` ([`INIT_SCRIPT`]), a busybox `sh` script that:
//!
//! 1. mounts `proc`, `sysfs` and `devtmpfs`;
//! 2. reads `root=` (`LABEL=`, `UUID=`, `PARTUUID=` of a GPT or MBR
//!    partition, or `/dev/NAME`), `rootfstype=` (default `ext4`),
//!    `rootflags=`, `ro`/`rw` (default read-only), `init=` (default
//!    `/sbin/init`), `rootdelay=` (seconds to wait for the root device,
//!    replacing the built-in timeout) and `rootwait` (wait forever) from
//!    `/proc/cmdline`;
//! 3. loads the modules with `insmod`, in order, printing
//!    `ami-initramfs: loading NAME` for each (a module that is already
//!    loaded is fine, one without its hardware, such as `xen-blkfront`
//!    outside Xen, is reported as such, any other failure is printed as a
//!    warning; the boot goes on);
//! 4. waits for the root device (`findfs` for labels and UUIDs), prints
//!    `ami-initramfs: root LABEL=rootfs is /dev/nvme0n1p2`, mounts it on
//!    `/root`, checks that the init program exists there (a dangling
//!    symlink such as `/sbin/init -> /lib/systemd/systemd` counts), moves
//!    `/dev`, `/proc` and `/sys` into it and runs
//!    `switch_root /root INIT ARGS...` (the arguments the kernel gave
//!    `/init` are passed on);
//! 5. on any failure prints `ami-initramfs: ERROR: WHAT FAILED` and starts
//!    a rescue shell on the console (prompt `(initramfs) # `), again after
//!    each exit.
//!
//! # Modules
//!
//! [`build`] reads `modules.dep`, `modules.builtin`, `modules.softdep`,
//! `modules.alias` and `modules.builtin.modinfo` under
//! `/lib/modules/VERSION` (or `/usr/lib/modules/VERSION`; symlinks such as
//! a merged-/usr `/lib -> usr/lib` are followed). `modules.dep` is written
//! by depmod, natively by [`super::depmod::depmod`]; the kernel package
//! does not ship it. The wanted modules are [`DEFAULT_MODULES`] (plus
//! [`SCSI_MODULES`] with [`InitramfsOptions::scsi`], plus
//! [`InitramfsOptions::module`]). Each is:
//!
//! * skipped when built into the kernel (`modules.builtin`), e.g. `ext4`
//!   and `nvme` in `linux-image-cloud-amd64`;
//! * skipped when this kernel has no such module (only default names; an
//!   extra name that is unknown is an error);
//! * otherwise included with its dependencies: the `softdep` `pre:`
//!   modules first (an alias such as `crypto-crc32c` is resolved through
//!   `modules.alias` to every modular provider, e.g. `crc32c_intel` and
//!   `crc32c_generic`; a built-in provider needs nothing), then the
//!   `modules.dep` dependencies, last listed first (depmod lists them in
//!   reverse load order), each one recursively the same way, then the
//!   module, then its `post:` softdeps.
//!
//! The load order is recorded in [`Initramfs::modules`] and in
//! [`CONFIG_PATH`]. Compressed modules (`.ko.xz`, `.ko.zst`, `.ko.gz`) are
//! refused with [`InitramfsError::Compressed`] (bookworm ships plain `.ko`).
//!
//! # Determinism
//!
//! Entries are written sorted by path (parents first), inode numbers are
//! given in that order from 1, every entry is owned by root and carries the
//! [`InitramfsOptions::mtime`]; the gzip header has no name, mtime 0 and
//! OS byte 3 (Unix); compression is at level 9. The same tree, busybox and
//! options always give the same bytes.
//!
//! # Example
//!
//! ```
//! use ami_core::configure::{cpio, initramfs, write_file, write_symlink};
//! use ami_core::configure::initramfs::InitramfsOptions;
//! use ami_core::{Metadata, Timestamp, Tree};
//! use std::io::Read;
//!
//! let e = Timestamp::default();
//! let mut tree = Tree::new(Metadata::new(0o755));
//! // A merged-/usr tree with a fake module set: ext4 is built in, virtio_blk
//! // needs virtio, which needs virtio_ring.
//! write_symlink(&mut tree, "/lib", "usr/lib", e)?;
//! let dir = "/usr/lib/modules/6.1.0-test";
//! let m = Metadata::new(0o644);
//! write_file(&mut tree, &format!("{dir}/modules.builtin"), "kernel/fs/ext4/ext4.ko\n", m.clone(), e)?;
//! write_file(
//!     &mut tree,
//!     &format!("{dir}/modules.dep"),
//!     "kernel/drivers/virtio/virtio_ring.ko:\n\
//!      kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko\n\
//!      kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n",
//!     m.clone(),
//!     e,
//! )?;
//! for name in ["virtio/virtio", "virtio/virtio_ring", "block/virtio_blk"] {
//!     write_file(&mut tree, &format!("{dir}/kernel/drivers/{name}.ko"), b"\x7fELF".to_vec(), m.clone(), e)?;
//! }
//!
//! let options = InitramfsOptions::new().mtime(1_700_000_000);
//! let built = initramfs::build(&tree, "6.1.0-test", b"fake busybox", &options)?;
//! assert_eq!(built.modules, ["virtio_ring", "virtio", "virtio_blk"]);
//! assert!(built.builtin.contains(&"ext4".to_owned()));
//!
//! // The data is a gzip-compressed newc archive.
//! let mut archive = Vec::new();
//! flate2::read::GzDecoder::new(&built.data[..]).read_to_end(&mut archive)?;
//! let entries = cpio::read_newc(&archive)?;
//! assert_eq!(entries.len(), built.entries);
//! let init = entries.iter().find(|e| e.name == "init").unwrap();
//! assert_eq!(init.perm, 0o755);
//! assert!(init.data.starts_with(b"#!/bin/sh\n"));
//! assert!(entries.iter().any(|e| e.name == "lib/modules/6.1.0-test/kernel/drivers/block/virtio_blk.ko"));
//! assert!(entries.iter().all(|e| e.mtime == 1_700_000_000 && e.uid == 0 && e.gid == 0));
//!
//! initramfs::install(&mut tree, "6.1.0-test", &built, Timestamp { secs: 1_700_000_000, nanos: 0 })?;
//! assert!(ami_core::configure::exists(&tree, "/boot/initrd.img-6.1.0-test"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use super::cpio::{CpioError, NewcWriter};
use super::{read_file, resolve_follow, write_file, ConfigureError};
use crate::{Metadata, NodeKind, Timestamp, Tree};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

/// The modules wanted by default (module names, `-` written `_`): the root
/// filesystem and the block devices of EC2 (NVMe on Nitro, `xen-blkfront`
/// on Xen) and of QEMU/KVM (virtio-blk behind virtio-pci).
pub const DEFAULT_MODULES: &[&str] = &["ext4", "nvme", "xen_blkfront", "virtio_blk", "virtio_pci"];

/// The modules added by [`InitramfsOptions::scsi`]: disks behind a
/// virtio-scsi controller.
pub const SCSI_MODULES: &[&str] = &["virtio_scsi", "sd_mod"];

/// Busybox applets given a `/bin` symlink in the initramfs: those `/init`
/// uses and a few more for the rescue shell.
pub const APPLETS: &[&str] = &[
    "[",
    "basename",
    "blockdev",
    "cat",
    "cttyhack",
    "dd",
    "dirname",
    "dmesg",
    "echo",
    "findfs",
    "grep",
    "head",
    "hexdump",
    "insmod",
    "ls",
    "lsmod",
    "mkdir",
    "mknod",
    "mount",
    "od",
    "poweroff",
    "printf",
    "ps",
    "readlink",
    "reboot",
    "rmmod",
    "sed",
    "setsid",
    "sh",
    "sleep",
    "stat",
    "switch_root",
    "test",
    "tr",
    "umount",
    "uname",
    "vi",
];

/// Where the settings of `/init` are in the archive (a shell fragment
/// setting `KVER`, `ROOT_WAIT` and `MODULES`, one `name=path` per line in
/// load order, paths relative to `/lib/modules/KVER`).
pub const CONFIG_PATH: &str = "etc/ami-initramfs.conf";

/// The `/init` script (busybox `sh`). See the [module docs](self).
pub const INIT_SCRIPT: &str = r#"#!/bin/sh
# /init of the initramfs written by ami: load the storage modules, find the
# root filesystem, mount it and switch to it. Settings are in
# /etc/ami-initramfs.conf. Run as another process than PID 1, it only
# defines its functions (for tests).
PATH=/bin
export PATH
KVER=
ROOT_WAIT=30
MODULES=

msg() {
	echo "ami-initramfs: $*"
}

rescue() {
	msg "ERROR: $*"
	msg "starting a rescue shell ('reboot -f' or 'poweroff -f' to leave)"
	PS1='(initramfs) # '
	export PS1
	while :; do
		setsid cttyhack sh -i
		msg "rescue shell exited; starting another one"
		sleep 1
	done
}

# hexbytes FILE OFFSET COUNT: COUNT bytes of FILE at OFFSET as hex digits.
hexbytes() {
	dd if="$1" bs=1 skip="$2" count="$3" 2>/dev/null | od -An -tx1 | tr -d ' \n'
}

# le HEX: the value of little-endian bytes given as hex digits.
le() {
	h=$1
	r=
	while [ -n "$h" ]; do
		r=${h%"${h#??}"}$r
		h=${h#??}
	done
	echo $((0x${r:-0}))
}

# partuuid DISK PARTNO SECTOR: the PARTUUID of partition PARTNO of DISK
# (a device or image file) with SECTOR-byte logical blocks: the unique
# GUID of a GPT entry, or DISKID-NN of an MBR partition.
partuuid() {
	if [ "$(dd if="$1" bs=1 skip="$3" count=8 2>/dev/null)" = "EFI PART" ]; then
		lba=$(le "$(hexbytes "$1" $(($3 + 72)) 8)")
		esz=$(le "$(hexbytes "$1" $(($3 + 84)) 4)")
		g=$(hexbytes "$1" $((lba * $3 + ($2 - 1) * esz + 16)) 16)
		[ ${#g} -eq 32 ] || return 1
		a=$(echo "$g" | sed 's/^\(..\)\(..\)\(..\)\(..\)\(..\)\(..\)\(..\)\(..\).*/\4\3\2\1-\6\5-\8\7/')
		b=$(echo "$g" | sed 's/^.\{16\}\(....\)\(.*\)/\1-\2/')
		echo "$a-$b"
	elif [ "$(hexbytes "$1" 510 2)" = 55aa ]; then
		printf '%08x-%02x\n' "$(le "$(hexbytes "$1" 440 4)")" "$2"
	else
		return 1
	fi
}

# find_partuuid UUID: the partition device whose PARTUUID is UUID.
find_partuuid() {
	want=$(echo "$1" | tr A-F a-f)
	for p in /sys/class/block/*; do
		[ -f "$p/partition" ] || continue
		disk=$(basename "$(dirname "$(readlink -f "$p")")")
		sector=$(cat "/sys/class/block/$disk/queue/logical_block_size" 2>/dev/null) || sector=512
		if [ "$(partuuid "/dev/$disk" "$(cat "$p/partition")" "$sector")" = "$want" ]; then
			echo "/dev/${p##*/}"
			return 0
		fi
	done
	return 1
}

# find_root SPEC: the device of root=SPEC, if it is there yet.
find_root() {
	case "$1" in
	LABEL=* | UUID=*) findfs "$1" 2>/dev/null ;;
	PARTUUID=*) find_partuuid "${1#PARTUUID=}" ;;
	/dev/*) [ -b "$1" ] && echo "$1" ;;
	*) return 1 ;;
	esac
}

main() {
	mount -t proc -o nodev,noexec,nosuid proc /proc || rescue "mounting /proc failed"
	mount -t sysfs -o nodev,noexec,nosuid sysfs /sys || rescue "mounting /sys failed"
	mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev || rescue "mounting devtmpfs on /dev failed"
	[ -r /etc/ami-initramfs.conf ] && . /etc/ami-initramfs.conf

	root=
	rootfstype=ext4
	rootflags=
	rootmode=ro
	init=/sbin/init
	rootdelay=
	rootwait=
	set -f
	for arg in $(cat /proc/cmdline); do
		case "$arg" in
		root=*) root=${arg#root=} ;;
		rootfstype=*) rootfstype=${arg#rootfstype=} ;;
		rootflags=*) rootflags=${arg#rootflags=} ;;
		ro) rootmode=ro ;;
		rw) rootmode=rw ;;
		init=*) init=${arg#init=} ;;
		rootdelay=*) rootdelay=${arg#rootdelay=} ;;
		rootwait) rootwait=1 ;;
		esac
	done
	set +f
	case "$rootdelay" in
	*[!0-9]*) msg "ignoring rootdelay=$rootdelay (not a number of seconds)"; rootdelay= ;;
	esac
	msg "kernel $(uname -r), modules for $KVER"
	[ "$(uname -r)" = "$KVER" ] || msg "warning: this initramfs was made for kernel $KVER"

	for m in $MODULES; do
		name=${m%%=*}
		msg "loading $name"
		if ! out=$(insmod "/lib/modules/$KVER/${m#*=}" 2>&1); then
			case "$out" in
			*"File exists"*) ;;
			*"No such device"*) msg "$name: no such device here (fine)" ;;
			*) msg "warning: $name not loaded: $out" ;;
			esac
		fi
	done

	[ -n "$root" ] || rescue "no root= on the kernel command line"
	limit=$ROOT_WAIT
	[ -n "$rootdelay" ] && limit=$rootdelay
	[ -n "$rootwait" ] && limit=
	msg "waiting for root $root${limit:+ (up to $limit s)}"
	ticks=0
	while :; do
		dev=$(find_root "$root") && [ -n "$dev" ] && break
		if [ -n "$limit" ] && [ "$ticks" -ge $((limit * 5)) ]; then
			rescue "root $root not found after $limit s (block devices: $(ls /sys/class/block | tr '\n' ' '))"
		fi
		ticks=$((ticks + 1))
		[ $((ticks % 25)) -eq 0 ] && msg "still waiting for root $root ($((ticks / 5)) s)"
		sleep 0.2
	done
	msg "root $root is $dev"

	opts=$rootmode${rootflags:+,$rootflags}
	mount -t "$rootfstype" -o "$opts" "$dev" /root ||
		rescue "mounting $dev ($root) on /root as $rootfstype with options $opts failed"
	msg "mounted $dev on /root ($rootfstype, $opts)"
	if ! [ -e "/root$init" ] && ! [ -L "/root$init" ]; then
		rescue "$init is not on the root filesystem $dev (choose another with init=)"
	fi
	for d in dev proc sys; do
		if [ -d "/root/$d" ]; then
			mount --move "/$d" "/root/$d" || rescue "moving /$d into the root filesystem failed"
		else
			msg "warning: no /$d on the root filesystem"
			umount -l "/$d"
		fi
	done
	msg "switching to $init"
	exec switch_root /root "$init" "$@"
}

[ $$ -eq 1 ] && main "$@"
"#;

/// Errors of [`build`] and [`install`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InitramfsError {
    /// Reading from or writing to the tree failed.
    #[error(transparent)]
    Configure(#[from] ConfigureError),
    /// Neither `/lib/modules/VERSION` nor `/usr/lib/modules/VERSION` is a
    /// directory in the tree.
    #[error("no module directory for kernel {version} (/lib/modules/{version}) in the tree")]
    NoModuleDir {
        /// The kernel version.
        version: String,
    },
    /// A module index is missing (`modules.dep` is written by depmod).
    #[error("{path} is missing: run depmod for this kernel first")]
    MissingIndex {
        /// The path inside the tree.
        path: String,
    },
    /// A module file named by `modules.dep` is not in the tree.
    #[error("{path} is listed in modules.dep but missing from the tree")]
    MissingModule {
        /// The path inside the tree.
        path: String,
    },
    /// A needed module is compressed, which is not supported.
    #[error("{path}: compressed modules (.ko.xz, .ko.zst, .ko.gz) are not supported")]
    Compressed {
        /// The path inside the tree.
        path: String,
    },
    /// A module asked for with [`InitramfsOptions::module`] is neither a
    /// module of this kernel nor built in.
    #[error("module {name} is not built into kernel {version} and not among its modules")]
    UnknownModule {
        /// The name asked for.
        name: String,
        /// The kernel version.
        version: String,
    },
    /// The busybox binary given is empty.
    #[error("the busybox binary is empty")]
    EmptyBusybox,
    /// The mtime does not fit the newc format (0 to 2^32-1 seconds).
    #[error("mtime {0} is outside the range of the newc format")]
    Mtime(i64),
    /// A kernel version or module path has characters `/init` cannot take
    /// (anything but letters, digits and `._+-/`).
    #[error("unsupported name {0:?}")]
    Unsupported(String),
    /// Writing the archive failed.
    #[error("cpio: {0}")]
    Cpio(#[from] CpioError),
    /// Compressing failed.
    #[error("gzip: {0}")]
    Gzip(#[from] std::io::Error),
}

/// Options of [`build`] (a builder; [`InitramfsOptions::new`] has the
/// defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitramfsOptions {
    mtime: i64,
    modules: Vec<String>,
    root_wait_secs: u32,
    scsi: bool,
}

impl Default for InitramfsOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl InitramfsOptions {
    /// The defaults: mtime 0, [`DEFAULT_MODULES`] only, root wait 30 s.
    pub fn new() -> Self {
        InitramfsOptions {
            mtime: 0,
            modules: Vec::new(),
            root_wait_secs: 30,
            scsi: false,
        }
    }

    /// The modification time of every entry (`SOURCE_DATE_EPOCH`,
    /// seconds; 0 to 2^32-1).
    #[must_use]
    pub fn mtime(mut self, secs: i64) -> Self {
        self.mtime = secs;
        self
    }

    /// Adds a module (by name, `-` or `_`, or alias) to the defaults. It
    /// must be a module of the kernel or built in.
    #[must_use]
    pub fn module(mut self, name: impl Into<String>) -> Self {
        self.modules.push(name.into());
        self
    }

    /// Adds [`SCSI_MODULES`] (skipped when absent, like the defaults).
    #[must_use]
    pub fn scsi(mut self, yes: bool) -> Self {
        self.scsi = yes;
        self
    }

    /// How long `/init` waits for the root device when the command line
    /// has neither `rootdelay=` nor `rootwait` (default 30 s).
    #[must_use]
    pub fn root_wait_secs(mut self, secs: u32) -> Self {
        self.root_wait_secs = secs;
        self
    }
}

/// A built initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Initramfs {
    /// The gzip-compressed newc archive.
    pub data: Vec<u8>,
    /// The modules included, in load order.
    pub modules: Vec<String>,
    /// Wanted modules skipped because the kernel has them built in.
    pub builtin: Vec<String>,
    /// Wanted default modules skipped because this kernel has no such
    /// module.
    pub absent: Vec<String>,
    /// Number of archive entries (the trailer not counted).
    pub entries: usize,
}

/// The module metadata of one kernel.
struct ModuleIndex {
    /// The module directory in the tree.
    dir: String,
    /// Module name → (path relative to `dir`, dependency paths as listed).
    deps: BTreeMap<String, (String, Vec<String>)>,
    /// Built-in module names.
    builtin: BTreeSet<String>,
    /// Aliases of built-in modules.
    builtin_aliases: BTreeSet<String>,
    /// `alias` lines: (alias, module name), in file order.
    aliases: Vec<(String, String)>,
    /// Module name → (pre, post) softdeps.
    softdeps: BTreeMap<String, (Vec<String>, Vec<String>)>,
}

/// How a wanted name resolves.
enum Resolved {
    Modular(Vec<String>),
    Builtin,
    Absent,
}

/// The module name of a module path: basename up to the first dot, `-`
/// written `_`.
fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = base.split('.').next().unwrap_or(base);
    stem.replace('-', "_")
}

fn text(tree: &Tree, path: &str) -> Result<Option<String>, InitramfsError> {
    Ok(read_file(tree, path)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

impl ModuleIndex {
    fn load(tree: &Tree, version: &str) -> Result<Self, InitramfsError> {
        let dir = [
            format!("/lib/modules/{version}"),
            format!("/usr/lib/modules/{version}"),
        ]
        .into_iter()
        .find(|d| {
            matches!(
                resolve_follow(tree, d.as_bytes()).map(|id| &tree.node(id).kind),
                Some(NodeKind::Dir(_))
            )
        })
        .ok_or_else(|| InitramfsError::NoModuleDir {
            version: version.to_owned(),
        })?;
        let dep_path = format!("{dir}/modules.dep");
        let dep_text =
            text(tree, &dep_path)?.ok_or(InitramfsError::MissingIndex { path: dep_path })?;
        let mut deps = BTreeMap::new();
        for line in dep_text.lines() {
            let Some((module, list)) = line.split_once(':') else {
                continue;
            };
            let list = list.split_whitespace().map(str::to_owned).collect();
            deps.insert(module_name(module), (module.trim().to_owned(), list));
        }
        let builtin_path = format!("{dir}/modules.builtin");
        let builtin = text(tree, &builtin_path)?
            .ok_or(InitramfsError::MissingIndex { path: builtin_path })?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(module_name)
            .collect();
        let mut builtin_aliases = BTreeSet::new();
        if let Some(modinfo) = read_file(tree, &format!("{dir}/modules.builtin.modinfo"))? {
            for rec in modinfo.split(|&b| b == 0) {
                let rec = String::from_utf8_lossy(rec);
                if let Some((_, alias)) = rec.split_once(".alias=") {
                    builtin_aliases.insert(alias.to_owned());
                }
            }
        }
        let mut aliases = Vec::new();
        for line in text(tree, &format!("{dir}/modules.alias"))?
            .unwrap_or_default()
            .lines()
        {
            let mut w = line.split_whitespace();
            if let (Some("alias"), Some(alias), Some(module)) = (w.next(), w.next(), w.next()) {
                aliases.push((alias.to_owned(), module.replace('-', "_")));
            }
        }
        let mut softdeps: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
        for line in text(tree, &format!("{dir}/modules.softdep"))?
            .unwrap_or_default()
            .lines()
        {
            let mut w = line.split_whitespace();
            if w.next() != Some("softdep") {
                continue;
            }
            let Some(module) = w.next() else { continue };
            let entry = softdeps.entry(module.replace('-', "_")).or_default();
            let mut post = false;
            for word in w {
                match word {
                    "pre:" => post = false,
                    "post:" => post = true,
                    name if post => entry.1.push(name.to_owned()),
                    name => entry.0.push(name.to_owned()),
                }
            }
        }
        Ok(ModuleIndex {
            dir,
            deps,
            builtin,
            builtin_aliases,
            aliases,
            softdeps,
        })
    }

    /// Resolves a name or alias to modular modules, built in, or absent.
    fn resolve(&self, name: &str) -> Resolved {
        let normal = name.replace('-', "_");
        if self.deps.contains_key(&normal) {
            return Resolved::Modular(vec![normal]);
        }
        if self.builtin.contains(&normal) {
            return Resolved::Builtin;
        }
        let mut found: Vec<String> = Vec::new();
        for (alias, module) in &self.aliases {
            if alias == name && self.deps.contains_key(module) && !found.contains(module) {
                found.push(module.clone());
            }
        }
        if !found.is_empty() {
            Resolved::Modular(found)
        } else if self.builtin_aliases.contains(name) {
            Resolved::Builtin
        } else {
            Resolved::Absent
        }
    }

    /// Appends `name` (a modular module) and what it needs to `order`.
    fn visit(&self, name: &str, order: &mut Vec<String>, seen: &mut BTreeSet<String>) {
        if !seen.insert(name.to_owned()) {
            return;
        }
        let (pre, post) = self.softdeps.get(name).cloned().unwrap_or_default();
        for soft in &pre {
            if let Resolved::Modular(found) = self.resolve(soft) {
                for m in found {
                    self.visit(&m, order, seen);
                }
            }
        }
        if let Some((_, list)) = self.deps.get(name) {
            for dep in list.iter().rev() {
                let dep = module_name(dep);
                if self.deps.contains_key(&dep) {
                    self.visit(&dep, order, seen);
                }
            }
        }
        order.push(name.to_owned());
        for soft in &post {
            if let Resolved::Modular(found) = self.resolve(soft) {
                for m in found {
                    self.visit(&m, order, seen);
                }
            }
        }
    }
}

/// Whether `/init` can take `s` inside single quotes and as a path.
fn safe_name(s: &str) -> bool {
    !s.is_empty()
        && !s.split('/').any(|c| c.is_empty() || c == "." || c == "..")
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-/".contains(&b))
}

/// One archive entry before writing.
enum Item {
    Dir,
    File(u32, Vec<u8>),
    Symlink(String),
    CharDevice(u32, u32, u32),
}

/// Builds the initramfs for `kernel_version` from the modules in `tree`,
/// with `busybox` (the bytes of a static busybox) as its userspace.
///
/// # Errors
/// See [`InitramfsError`]: no module directory or `modules.dep` for this
/// kernel, a listed module missing or compressed, an unknown extra module,
/// an empty busybox, an mtime out of range.
pub fn build(
    tree: &Tree,
    kernel_version: &str,
    busybox: &[u8],
    options: &InitramfsOptions,
) -> Result<Initramfs, InitramfsError> {
    if busybox.is_empty() {
        return Err(InitramfsError::EmptyBusybox);
    }
    let mtime = u32::try_from(options.mtime).map_err(|_| InitramfsError::Mtime(options.mtime))?;
    if !safe_name(kernel_version) || kernel_version.contains('/') {
        return Err(InitramfsError::Unsupported(kernel_version.to_owned()));
    }
    let index = ModuleIndex::load(tree, kernel_version)?;

    let mut wanted: Vec<(String, bool)> = DEFAULT_MODULES
        .iter()
        .map(|m| ((*m).to_owned(), false))
        .collect();
    if options.scsi {
        wanted.extend(SCSI_MODULES.iter().map(|m| ((*m).to_owned(), false)));
    }
    wanted.extend(options.modules.iter().map(|m| (m.clone(), true)));
    let (mut order, mut seen) = (Vec::new(), BTreeSet::new());
    let (mut builtin, mut absent) = (Vec::new(), Vec::new());
    for (name, required) in &wanted {
        match index.resolve(name) {
            Resolved::Modular(found) => {
                for m in found {
                    index.visit(&m, &mut order, &mut seen);
                }
            }
            Resolved::Builtin => builtin.push(name.clone()),
            Resolved::Absent if *required => {
                return Err(InitramfsError::UnknownModule {
                    name: name.clone(),
                    version: kernel_version.to_owned(),
                })
            }
            Resolved::Absent => absent.push(name.clone()),
        }
    }

    let mut items: BTreeMap<String, Item> = BTreeMap::new();
    let add_dirs = |items: &mut BTreeMap<String, Item>, path: &str| {
        let mut prefix = String::new();
        for comp in path.split('/') {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(comp);
            items.entry(prefix.clone()).or_insert(Item::Dir);
        }
    };
    for d in ["dev", "proc", "sys", "root", "etc", "bin"] {
        add_dirs(&mut items, d);
    }
    items.insert("dev/console".into(), Item::CharDevice(0o600, 5, 1));
    items.insert("dev/null".into(), Item::CharDevice(0o666, 1, 3));
    items.insert("bin/busybox".into(), Item::File(0o755, busybox.to_vec()));
    for applet in APPLETS {
        items.insert(format!("bin/{applet}"), Item::Symlink("busybox".into()));
    }
    items.insert(
        "init".into(),
        Item::File(0o755, INIT_SCRIPT.as_bytes().to_vec()),
    );

    let mut config = format!(
        "# Written by ami: settings of /init.\nKVER='{kernel_version}'\nROOT_WAIT={}\nMODULES='\n",
        options.root_wait_secs
    );
    let module_root = format!("lib/modules/{kernel_version}");
    add_dirs(&mut items, &module_root);
    for name in &order {
        let rel = &index.deps[name].0;
        let path = format!("{}/{rel}", index.dir);
        if !rel.ends_with(".ko") {
            return Err(
                if [".ko.xz", ".ko.zst", ".ko.gz"]
                    .iter()
                    .any(|s| rel.ends_with(s))
                {
                    InitramfsError::Compressed { path }
                } else {
                    InitramfsError::Unsupported(rel.clone())
                },
            );
        }
        if !safe_name(rel) {
            return Err(InitramfsError::Unsupported(rel.clone()));
        }
        let bytes = read_file(tree, &path)?.ok_or(InitramfsError::MissingModule { path })?;
        let dest = format!("{module_root}/{rel}");
        if let Some((parent, _)) = dest.rsplit_once('/') {
            add_dirs(&mut items, parent);
        }
        items.insert(dest, Item::File(0o644, bytes));
        config.push_str(&format!("{name}={rel}\n"));
    }
    config.push_str("'\n");
    items.insert(CONFIG_PATH.into(), Item::File(0o644, config.into_bytes()));

    let mut writer = NewcWriter::new(mtime);
    for (path, item) in &items {
        match item {
            Item::Dir => writer.dir(path, 0o755)?,
            Item::File(perm, data) => writer.file(path, *perm, data)?,
            Item::Symlink(target) => writer.symlink(path, target)?,
            Item::CharDevice(perm, major, minor) => {
                writer.char_device(path, *perm, *major, *minor)?
            }
        }
    }
    let entries = writer.len();
    let archive = writer.finish();
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(3)
        .write(Vec::new(), flate2::Compression::best());
    gz.write_all(&archive)?;
    let data = gz.finish()?;
    Ok(Initramfs {
        data,
        modules: order,
        builtin,
        absent,
        entries,
    })
}

/// Writes `initramfs` as `/boot/initrd.img-VERSION` (0644 root:root,
/// times `epoch`), where Debian's boot loaders and `ami`'s kernel
/// extraction look for it.
///
/// # Errors
/// A tree error (e.g. `/boot` is not a directory).
pub fn install(
    tree: &mut Tree,
    kernel_version: &str,
    initramfs: &Initramfs,
    epoch: Timestamp,
) -> Result<(), InitramfsError> {
    write_file(
        tree,
        &format!("/boot/initrd.img-{kernel_version}"),
        initramfs.data.clone(),
        Metadata::new(0o644),
        epoch,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::cpio::{read_newc, Entry, EntryKind};
    use super::super::write_symlink;
    use super::*;
    use std::io::Read;

    const VER: &str = "6.1.0-9-test";

    /// A merged-/usr tree with a module set shaped like bookworm's generic
    /// kernel (ext4 modular) or its cloud kernel (ext4, nvme built in).
    fn tree(ext4_builtin: bool) -> Tree {
        let e = Timestamp::default();
        let mut t = Tree::new(Metadata::new(0o755));
        write_symlink(&mut t, "/lib", "usr/lib", e).unwrap();
        let dir = format!("/usr/lib/modules/{VER}");
        let m = Metadata::new(0o644);
        let mut dep = String::new();
        let mut builtin = String::new();
        let mut files = vec![
            ("kernel/drivers/virtio/virtio_ring.ko", ""),
            ("kernel/drivers/virtio/virtio.ko", "kernel/drivers/virtio/virtio_ring.ko"),
            ("kernel/drivers/virtio/virtio_pci_modern_dev.ko", ""),
            ("kernel/drivers/virtio/virtio_pci_legacy_dev.ko", ""),
            (
                "kernel/drivers/virtio/virtio_pci.ko",
                "kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko",
            ),
            (
                "kernel/drivers/block/virtio_blk.ko",
                "kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko",
            ),
            ("kernel/arch/x86/crypto/crc32c-intel.ko", ""),
            ("kernel/crypto/crc32c_generic.ko", ""),
            ("kernel/drivers/scsi/unrelated.ko", ""),
        ];
        let fs = [
            ("kernel/lib/crc16.ko", ""),
            ("kernel/fs/mbcache.ko", ""),
            ("kernel/fs/jbd2/jbd2.ko", ""),
            (
                "kernel/fs/ext4/ext4.ko",
                "kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko kernel/lib/crc16.ko",
            ),
            ("kernel/drivers/nvme/host/nvme-core.ko", ""),
            (
                "kernel/drivers/nvme/host/nvme.ko",
                "kernel/drivers/nvme/host/nvme-core.ko",
            ),
        ];
        if ext4_builtin {
            for (p, _) in fs {
                builtin.push_str(p);
                builtin.push('\n');
            }
        } else {
            files.extend(fs);
        }
        for (path, deps) in &files {
            dep.push_str(&format!("{path}: {deps}\n").replace(": \n", ":\n"));
            write_file(
                &mut t,
                &format!("{dir}/{path}"),
                format!("ELF {path}"),
                m.clone(),
                e,
            )
            .unwrap();
        }
        write_file(&mut t, &format!("{dir}/modules.dep"), dep, m.clone(), e).unwrap();
        write_file(
            &mut t,
            &format!("{dir}/modules.builtin"),
            builtin,
            m.clone(),
            e,
        )
        .unwrap();
        write_file(
            &mut t,
            &format!("{dir}/modules.softdep"),
            "# Soft dependencies extracted from modules themselves.\nsoftdep ext4 pre: crypto-crc32c\nsoftdep jbd2 pre: crypto-crc32c\n",
            m.clone(),
            e,
        )
        .unwrap();
        write_file(
            &mut t,
            &format!("{dir}/modules.alias"),
            "# Aliases extracted from modules themselves.\nalias crypto-crc32c crc32c_intel\nalias crypto-crc32c crc32c_generic\nalias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n",
            m,
            e,
        )
        .unwrap();
        t
    }

    fn unpack(data: &[u8]) -> Vec<Entry> {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(data)
            .read_to_end(&mut raw)
            .unwrap();
        read_newc(&raw).unwrap()
    }

    #[test]
    fn modular_ext4_loads_dependencies_first() {
        let t = tree(false);
        let b = build(&t, VER, b"BB", &InitramfsOptions::new()).unwrap();
        assert_eq!(
            b.modules,
            [
                "crc32c_intel",
                "crc32c_generic",
                "crc16",
                "mbcache",
                "jbd2",
                "ext4",
                "nvme_core",
                "nvme",
                "virtio_ring",
                "virtio",
                "virtio_blk",
                "virtio_pci_modern_dev",
                "virtio_pci_legacy_dev",
                "virtio_pci",
            ]
        );
        assert_eq!(b.absent, ["xen_blkfront"]);
        assert!(b.builtin.is_empty());
        let entries = unpack(&b.data);
        let conf = entries.iter().find(|e| e.name == CONFIG_PATH).unwrap();
        let conf = String::from_utf8(conf.data.clone()).unwrap();
        assert!(
            conf.contains(&format!("KVER='{VER}'\nROOT_WAIT=30\n")),
            "{conf}"
        );
        assert!(conf.contains("\ncrc16=kernel/lib/crc16.ko\nmbcache=kernel/fs/mbcache.ko\njbd2=kernel/fs/jbd2/jbd2.ko\next4=kernel/fs/ext4/ext4.ko\n"), "{conf}");
        assert!(conf.contains("\nnvme_core=kernel/drivers/nvme/host/nvme-core.ko\n"));
        let ko = entries
            .iter()
            .find(|e| e.name == format!("lib/modules/{VER}/kernel/fs/ext4/ext4.ko"))
            .unwrap();
        assert_eq!((ko.kind.clone(), ko.perm), (EntryKind::File, 0o644));
        assert_eq!(ko.data, b"ELF kernel/fs/ext4/ext4.ko");
        assert!(!entries.iter().any(|e| e.name.ends_with("unrelated.ko")));
    }

    #[test]
    fn builtin_modules_are_skipped_and_archive_is_complete() {
        let t = tree(true);
        let options = InitramfsOptions::new()
            .mtime(1_234_567_890)
            .root_wait_secs(7);
        let b = build(&t, VER, b"\x7fELF busybox", &options).unwrap();
        assert_eq!(
            b.modules,
            [
                "virtio_ring",
                "virtio",
                "virtio_blk",
                "virtio_pci_modern_dev",
                "virtio_pci_legacy_dev",
                "virtio_pci"
            ]
        );
        assert_eq!(b.builtin, ["ext4", "nvme"]);
        let entries = unpack(&b.data);
        assert_eq!(entries.len(), b.entries);
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.ino as usize, i + 1);
            assert_eq!((e.uid, e.gid, e.mtime), (0, 0, 1_234_567_890), "{}", e.name);
            if let Some((parent, _)) = e.name.rsplit_once('/') {
                assert!(names[..i].contains(&parent), "{} before its parent", e.name);
            }
        }
        let get = |n: &str| entries.iter().find(|e| e.name == n).unwrap();
        assert_eq!(
            get("dev/console").kind,
            EntryKind::CharDevice { major: 5, minor: 1 }
        );
        assert_eq!(get("dev/console").perm, 0o600);
        assert_eq!(
            get("dev/null").kind,
            EntryKind::CharDevice { major: 1, minor: 3 }
        );
        for d in ["dev", "proc", "sys", "root", "bin", "etc"] {
            assert_eq!((get(d).kind.clone(), get(d).perm), (EntryKind::Dir, 0o755));
        }
        assert_eq!(get("init").perm, 0o755);
        assert_eq!(get("init").data, INIT_SCRIPT.as_bytes());
        assert_eq!(get("bin/busybox").data, b"\x7fELF busybox");
        assert_eq!(get("bin/busybox").perm, 0o755);
        for a in [
            "sh",
            "mount",
            "switch_root",
            "findfs",
            "insmod",
            "sleep",
            "poweroff",
        ] {
            assert_eq!(
                get(&format!("bin/{a}")).kind,
                EntryKind::Symlink("busybox".into())
            );
        }
        assert!(String::from_utf8_lossy(&get(CONFIG_PATH).data).contains("ROOT_WAIT=7\n"));
        assert!(!names
            .iter()
            .any(|n| n.contains("ext4") || n.contains("crc32c")));
        // gzip header: no name flag, mtime 0, OS 3.
        assert_eq!(&b.data[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 3]);
    }

    #[test]
    fn output_is_deterministic_and_options_matter() {
        let t = tree(false);
        let o = InitramfsOptions::new().mtime(5);
        let a = build(&t, VER, b"BB", &o).unwrap();
        assert_eq!(a, build(&t, VER, b"BB", &o).unwrap());
        assert_eq!(a.data, build(&tree(false), VER, b"BB", &o).unwrap().data);
        assert_ne!(
            a.data,
            build(&t, VER, b"BB", &o.clone().mtime(6)).unwrap().data
        );
        assert_ne!(a.data, build(&t, VER, b"BC", &o).unwrap().data);
    }

    #[test]
    fn extra_modules_and_aliases() {
        let t = tree(true);
        let b = build(
            &t,
            VER,
            b"BB",
            &InitramfsOptions::new().module("crypto-crc32c"),
        )
        .unwrap();
        assert!(b
            .modules
            .ends_with(&["crc32c_intel".into(), "crc32c_generic".into()]));
        let b = build(&t, VER, b"BB", &InitramfsOptions::new().module("nvme-core")).unwrap();
        assert_eq!(b.builtin, ["ext4", "nvme", "nvme-core"]);
        let err = build(&t, VER, b"BB", &InitramfsOptions::new().module("nope")).unwrap_err();
        assert!(matches!(err, InitramfsError::UnknownModule { ref name, .. } if name == "nope"));
        let b = build(&t, VER, b"BB", &InitramfsOptions::new().scsi(true)).unwrap();
        assert_eq!(b.absent, ["xen_blkfront", "virtio_scsi", "sd_mod"]);
    }

    #[test]
    fn errors() {
        let t = tree(false);
        let o = InitramfsOptions::new();
        assert!(matches!(
            build(&t, VER, b"", &o),
            Err(InitramfsError::EmptyBusybox)
        ));
        assert!(matches!(
            build(&t, "6.1.0-other", b"BB", &o),
            Err(InitramfsError::NoModuleDir { .. })
        ));
        assert!(matches!(
            build(&t, VER, b"BB", &o.clone().mtime(-1)),
            Err(InitramfsError::Mtime(-1))
        ));
        assert!(matches!(
            build(&t, "a'b", b"BB", &o),
            Err(InitramfsError::Unsupported(_))
        ));
        // No modules.dep: depmod was not run.
        let mut t2 = t.clone();
        let dir = resolve_follow(&t2, format!("/lib/modules/{VER}").as_bytes()).unwrap();
        t2.remove(dir, b"modules.dep").unwrap();
        let err = build(&t2, VER, b"BB", &o).unwrap_err();
        assert!(err.to_string().contains("run depmod"), "{err}");
        // A listed module whose file is missing.
        let mut t3 = t.clone();
        let fsdir =
            resolve_follow(&t3, format!("/lib/modules/{VER}/kernel/fs").as_bytes()).unwrap();
        t3.remove(fsdir, b"mbcache.ko").unwrap();
        assert!(matches!(
            build(&t3, VER, b"BB", &o),
            Err(InitramfsError::MissingModule { ref path }) if path.ends_with("kernel/fs/mbcache.ko")
        ));
        // Compressed modules are refused with a clear error.
        let mut t4 = Tree::new(Metadata::new(0o755));
        let e = Timestamp::default();
        let m = Metadata::new(0o644);
        let d = format!("/lib/modules/{VER}");
        write_file(&mut t4, &format!("{d}/modules.builtin"), "", m.clone(), e).unwrap();
        write_file(
            &mut t4,
            &format!("{d}/modules.dep"),
            "kernel/fs/ext4/ext4.ko.zst:\n",
            m.clone(),
            e,
        )
        .unwrap();
        write_file(
            &mut t4,
            &format!("{d}/kernel/fs/ext4/ext4.ko.zst"),
            "x",
            m,
            e,
        )
        .unwrap();
        let err = build(&t4, VER, b"BB", &o).unwrap_err();
        assert!(matches!(err, InitramfsError::Compressed { .. }), "{err}");
        assert!(err.to_string().contains("not supported"));
    }

    #[test]
    fn install_writes_boot_initrd() {
        let mut t = tree(true);
        let b = build(&t, VER, b"BB", &InitramfsOptions::new()).unwrap();
        let when = Timestamp { secs: 99, nanos: 0 };
        install(&mut t, VER, &b, when).unwrap();
        let path = format!("/boot/initrd.img-{VER}");
        assert_eq!(read_file(&t, &path).unwrap().unwrap(), b.data);
        let node = t.node(resolve_follow(&t, path.as_bytes()).unwrap());
        assert_eq!(
            (node.meta.mode, node.meta.uid, node.meta.gid),
            (0o644, 0, 0)
        );
        assert_eq!(node.meta.mtime, when);
    }
}
