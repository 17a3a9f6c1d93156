//! Reading a host directory into a [`Tree`].
//!
//! [`scan_dir`] walks a directory of the host and records every entry's
//! metadata in a [`Tree`]: type, permission bits (including setuid, setgid
//! and sticky), owner, times with nanoseconds, creation time where the
//! filesystem reports one, extended attributes, symlink targets, device
//! numbers and hard links. It is what `ami` uses to turn an unpacked root
//! filesystem (or any directory) into an image.
//!
//! File contents are **not** read: a regular file becomes a
//! [`FileData::from_host`] reference to its path, which the image writer
//! opens later. Only sparse files are opened during the scan, to find the
//! ranges that hold data (`SEEK_DATA`/`SEEK_HOLE`), and only when their
//! allocated size is smaller than their length.
//!
//! # What is recorded, exactly
//!
//! * Symlinks are never followed, not even for the last component of an
//!   entry. The root's metadata comes from `path` itself, which must be a
//!   directory (not a symlink to one).
//! * Names are raw bytes: names that are not UTF-8 work.
//! * Extended attributes are copied verbatim, in the host's VFS format (POSIX
//!   ACLs stay in the `getxattr(2)` format, which the tree model expects).
//!   Filesystems without xattr support simply yield none.
//! * Non-directories with more than one name are tracked by device and inode
//!   number; later names become [`Tree::link`]s of the first.
//! * Device numbers are the major and minor as the kernel reports them.
//! * `crtime` is the `statx` birth time when the filesystem reports one, and
//!   `None` otherwise.
//!
//! The scan expects the directory not to change while it runs. Entries
//! that vanish make it fail; a directory replaced between being listed and
//! being opened is detected ([`ScanError::Changed`]).
//!
//! # Cost
//!
//! Per entry the scan makes one `statx` (relative to an open directory) and,
//! unless [`ScanOptions::xattrs`] is off, one `llistxattr` (plus one
//! `lgetxattr` per attribute). Directories are read with `getdents` into a
//! reused buffer; the only allocations are those the tree keeps (the name,
//! the host path of regular files, symlink targets, xattrs). Only one
//! directory is open at a time, so the depth of the tree is not limited by
//! the number of open files.
//!
//! # Example
//!
//! ```
//! use ami_core::progress::NoProgress;
//! use ami_core::scan::{scan_dir, ScanOptions};
//! use ami_core::NodeKind;
//!
//! let dir = tempfile::tempdir()?;
//! std::fs::create_dir(dir.path().join("etc"))?;
//! std::fs::write(dir.path().join("etc/hostname"), b"ami\n")?;
//! std::os::unix::fs::symlink("hostname", dir.path().join("etc/name"))?;
//!
//! let tree = scan_dir(dir.path(), &ScanOptions::new().root_owner(true), &NoProgress)?;
//! let hostname = tree.lookup(b"etc/hostname").unwrap();
//! match &tree.node(hostname).kind {
//!     NodeKind::File(data) => assert_eq!(data.len(), 4),
//!     other => panic!("unexpected {other:?}"),
//! }
//! assert_eq!(tree.node(hostname).meta.uid, 0);
//! let link = tree.lookup(b"etc/name").unwrap();
//! assert_eq!(tree.node(link).kind, NodeKind::Symlink(b"hostname"[..].into()));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CStr, OsStr};
use std::io;
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fd::OwnedFd;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir, SeekFrom, StatxFlags};
use rustix::io::Errno;

use crate::progress::{Progress, Stage};
use crate::{DeviceNumber, FileData, Metadata, Node, NodeId, NodeKind, Timestamp, Tree, TreeError};

/// How [`scan_dir`] reads a directory. Build it with [`ScanOptions::new`]
/// and the setters; the defaults keep everything as found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanOptions {
    root_owner: bool,
    one_file_system: bool,
    xattrs: bool,
}

impl ScanOptions {
    /// The defaults: owners as on the host, cross into other filesystems,
    /// read extended attributes.
    pub fn new() -> Self {
        ScanOptions {
            root_owner: false,
            one_file_system: false,
            xattrs: true,
        }
    }

    /// Record every entry as owned by `0:0` instead of its host owner.
    ///
    /// Useful when the directory was unpacked by an unprivileged user but
    /// describes a system whose files belong to root. Default: `false`.
    #[must_use]
    pub fn root_owner(mut self, yes: bool) -> Self {
        self.root_owner = yes;
        self
    }

    /// Do not descend into directories that live on another filesystem than
    /// the root (mount points). The mount point itself is kept, empty, with
    /// the metadata `stat` reports for it (that of the mounted
    /// filesystem's root). Default: `false`.
    #[must_use]
    pub fn one_file_system(mut self, yes: bool) -> Self {
        self.one_file_system = yes;
        self
    }

    /// Read extended attributes (`user.*`, `security.*`, POSIX ACLs, ...).
    /// Turning this off saves one `llistxattr` per entry. Default: `true`.
    #[must_use]
    pub fn xattrs(mut self, yes: bool) -> Self {
        self.xattrs = yes;
        self
    }
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions::new()
    }
}

/// Errors from [`scan_dir`]. Each names the host path it concerns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    /// A system call on `path` failed (stat, read a directory, list or read
    /// xattrs, read a symlink, look for holes).
    #[error("cannot read {}", path.display())]
    Io {
        /// The host path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The entry has a file type the tree cannot hold.
    #[error("{} has an unsupported file type (mode {mode:#o})", path.display())]
    UnsupportedType {
        /// The host path.
        path: PathBuf,
        /// Its full `st_mode`.
        mode: u32,
    },
    /// Adding the entry to the tree failed.
    #[error("cannot add {} to the tree", path.display())]
    Tree {
        /// The host path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: TreeError,
    },
    /// The path given to [`scan_dir`] is not a directory (symlinks to
    /// directories are not followed).
    #[error("{} is not a directory", path.display())]
    NotADirectory {
        /// The host path.
        path: PathBuf,
    },
    /// A directory was replaced by another file between being listed and
    /// being opened.
    #[error("{} changed during the scan", path.display())]
    Changed {
        /// The host path.
        path: PathBuf,
    },
}

/// Reads the directory `path` of the host, recursively, into a new [`Tree`]
/// whose root carries `path`'s own metadata. See the [module docs](self) for
/// what is recorded.
///
/// Progress is reported as [`Stage::Scan`], counting names (entries).
///
/// # Errors
/// [`ScanError::NotADirectory`] if `path` is not a directory, and otherwise
/// the first failure, naming its path: an unreadable entry
/// ([`ScanError::Io`]), an entry that vanished or changed during the scan,
/// or a file type the tree cannot hold.
pub fn scan_dir(
    path: &Path,
    options: &ScanOptions,
    progress: &dyn Progress,
) -> Result<Tree, ScanError> {
    progress.begin(Stage::Scan, None);
    let tree = Scanner::new(options, progress).run(path)?;
    progress.end(Stage::Scan);
    Ok(tree)
}

/// Largest xattr name list and value Linux returns (`XATTR_LIST_MAX`,
/// `XATTR_SIZE_MAX`).
const XATTR_MAX: usize = 64 * 1024;
/// Size of the `getdents` buffer; far more than one 255-byte name needs.
const DIRENT_BUF: usize = 32 * 1024;
/// Progress is reported in batches of this many entries.
const PROGRESS_BATCH: u64 = 1024;

/// Extended attributes as [`Metadata::xattrs`] holds them.
type Xattrs = BTreeMap<Box<[u8]>, Box<[u8]>>;

/// What we need from `statx`/`lstat`.
#[derive(Debug, Clone, Copy)]
struct EntryStat {
    mode: u32,
    nlink: u64,
    uid: u32,
    gid: u32,
    /// Device of the filesystem holding the entry (`makedev` encoding).
    dev: u64,
    ino: u64,
    rdev: DeviceNumber,
    size: u64,
    blocks: u64,
    atime: Timestamp,
    mtime: Timestamp,
    ctime: Timestamp,
    btime: Option<Timestamp>,
}

/// A directory waiting to be read: its host path (no trailing NUL), its
/// node, and the identity it had when listed.
struct Pending {
    path: Vec<u8>,
    id: NodeId,
    dev: u64,
    ino: u64,
}

struct Scanner<'a> {
    options: &'a ScanOptions,
    progress: &'a dyn Progress,
    /// `(dev, ino)` of non-directories with several names → their node.
    links: HashMap<(u64, u64), NodeId>,
    root_dev: u64,
    /// Whether `statx` works; falls back to `lstat` (no birth time) once it
    /// reports `ENOSYS`.
    use_statx: bool,
    dirents: Vec<u8>,
    xattr_list: Vec<u8>,
    xattr_value: Vec<u8>,
    /// The path of the current entry followed by a NUL.
    cpath: Vec<u8>,
    unreported: u64,
}

fn io_err(path: &[u8], err: impl Into<io::Error>) -> ScanError {
    ScanError::Io {
        path: host_path(path),
        source: err.into(),
    }
}

fn host_path(bytes: &[u8]) -> PathBuf {
    let bytes = bytes.strip_suffix(b"\0").unwrap_or(bytes);
    PathBuf::from(OsStr::from_bytes(bytes))
}

fn timestamp(secs: i64, nanos: u32) -> Timestamp {
    Timestamp { secs, nanos }
}

fn file_type(mode: u32) -> FileType {
    FileType::from_raw_mode(mode)
}

impl<'a> Scanner<'a> {
    fn new(options: &'a ScanOptions, progress: &'a dyn Progress) -> Self {
        Scanner {
            options,
            progress,
            links: HashMap::new(),
            root_dev: 0,
            use_statx: true,
            dirents: Vec::with_capacity(DIRENT_BUF),
            xattr_list: Vec::new(),
            xattr_value: Vec::new(),
            cpath: Vec::new(),
            unreported: 0,
        }
    }

    fn run(mut self, root: &Path) -> Result<Tree, ScanError> {
        let mut root_bytes = root.as_os_str().as_bytes().to_vec();
        // Keep "/" but drop other trailing slashes, so that paths come out
        // as "dir/name".
        while root_bytes.len() > 1 && root_bytes.ends_with(b"/") {
            root_bytes.pop();
        }
        self.cpath.clear();
        self.cpath.extend_from_slice(&root_bytes);
        self.cpath.push(0);
        let st = {
            let cpath = cstr(&self.cpath).map_err(|e| io_err(&root_bytes, e))?;
            stat(&mut self.use_statx, rustix::fs::CWD, cpath).map_err(|e| io_err(&root_bytes, e))?
        };
        if file_type(st.mode) != FileType::Directory {
            return Err(ScanError::NotADirectory {
                path: host_path(&root_bytes),
            });
        }
        self.root_dev = st.dev;
        let meta = self.metadata(&st)?;
        let mut tree = Tree::new(meta);
        self.count(1);

        let mut stack = vec![Pending {
            path: root_bytes,
            id: tree.root(),
            dev: st.dev,
            ino: st.ino,
        }];
        while let Some(dir) = stack.pop() {
            self.read_dir(&mut tree, &dir, &mut stack)?;
        }
        if self.unreported > 0 {
            self.progress.advance(Stage::Scan, self.unreported);
        }
        Ok(tree)
    }

    fn count(&mut self, n: u64) {
        self.unreported += n;
        if self.unreported >= PROGRESS_BATCH {
            self.progress.advance(Stage::Scan, self.unreported);
            self.unreported = 0;
        }
    }

    /// Reads one directory: adds all its entries to the tree and queues its
    /// subdirectories.
    fn read_dir(
        &mut self,
        tree: &mut Tree,
        dir: &Pending,
        stack: &mut Vec<Pending>,
    ) -> Result<(), ScanError> {
        self.cpath.clear();
        self.cpath.extend_from_slice(&dir.path);
        self.cpath.push(0);
        let fd = {
            let cpath = cstr(&self.cpath).map_err(|e| io_err(&dir.path, e))?;
            open_noatime(
                rustix::fs::CWD,
                cpath,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            )
            .map_err(|e| io_err(&dir.path, e))?
        };
        let now = rustix::fs::fstat(&fd).map_err(|e| io_err(&dir.path, e))?;
        // The field types of `struct stat` differ between architectures.
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
        let (dev, ino) = (now.st_dev as u64, now.st_ino as u64);
        if dev != dir.dev || ino != dir.ino {
            return Err(ScanError::Changed {
                path: host_path(&dir.path),
            });
        }

        // `dir.path` + '/' (unless it already ends in one, as "/" does).
        let mut base = dir.path.clone();
        if !base.ends_with(b"/") {
            base.push(b'/');
        }
        let mut dirents = std::mem::take(&mut self.dirents);
        let result = self.read_entries(tree, dir.id, &fd, &base, &mut dirents, stack);
        self.dirents = dirents;
        result
    }

    fn read_entries(
        &mut self,
        tree: &mut Tree,
        parent: NodeId,
        fd: &OwnedFd,
        base: &[u8],
        dirents: &mut Vec<u8>,
        stack: &mut Vec<Pending>,
    ) -> Result<(), ScanError> {
        dirents.clear();
        let mut iter = RawDir::new(fd, dirents.spare_capacity_mut());
        while let Some(entry) = iter.next() {
            let entry = entry.map_err(|e| io_err(base, e))?;
            let name = entry.file_name();
            let name_bytes = name.to_bytes();
            if name_bytes == b"." || name_bytes == b".." {
                continue;
            }
            self.cpath.clear();
            self.cpath.extend_from_slice(base);
            self.cpath.extend_from_slice(name_bytes);
            self.cpath.push(0);
            self.add_entry(tree, parent, fd, name, stack)?;
            self.count(1);
        }
        Ok(())
    }

    /// Adds the entry `name` of the open directory `dir_fd` (whose full path
    /// is in `self.cpath`) to `parent`.
    fn add_entry(
        &mut self,
        tree: &mut Tree,
        parent: NodeId,
        dir_fd: &OwnedFd,
        name: &CStr,
        stack: &mut Vec<Pending>,
    ) -> Result<(), ScanError> {
        let st = stat(&mut self.use_statx, dir_fd, name).map_err(|e| io_err(&self.cpath, e))?;
        let ftype = file_type(st.mode);
        let name_bytes = name.to_bytes();

        if ftype != FileType::Directory && st.nlink > 1 {
            if let Some(&first) = self.links.get(&(st.dev, st.ino)) {
                return tree
                    .link(parent, name_bytes, first)
                    .map_err(|source| ScanError::Tree {
                        path: host_path(&self.cpath),
                        source,
                    });
            }
        }

        let meta = self.metadata(&st)?;
        let kind = match ftype {
            FileType::RegularFile => {
                let bytes = &self.cpath[..self.cpath.len() - 1];
                let path: Arc<Path> = Arc::from(Path::new(OsStr::from_bytes(bytes)));
                let mut data = FileData::from_host(path, 0, st.size);
                if st.blocks.saturating_mul(512) < st.size {
                    let ranges =
                        data_ranges(dir_fd, name, st.size).map_err(|e| io_err(&self.cpath, e))?;
                    if let Some(ranges) = ranges {
                        data = data.with_data_ranges(ranges);
                    }
                }
                NodeKind::File(data)
            }
            FileType::Directory => NodeKind::Dir(Default::default()),
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(dir_fd, name, Vec::new())
                    .map_err(|e| io_err(&self.cpath, e))?;
                NodeKind::Symlink(target.into_bytes().into_boxed_slice())
            }
            FileType::CharacterDevice => NodeKind::CharDevice(st.rdev),
            FileType::BlockDevice => NodeKind::BlockDevice(st.rdev),
            FileType::Fifo => NodeKind::Fifo,
            FileType::Socket => NodeKind::Socket,
            FileType::Unknown => {
                return Err(ScanError::UnsupportedType {
                    path: host_path(&self.cpath),
                    mode: st.mode,
                })
            }
        };
        let is_dir = matches!(kind, NodeKind::Dir(_));
        let id = tree
            .add(parent, name_bytes, Node { kind, meta })
            .map_err(|source| ScanError::Tree {
                path: host_path(&self.cpath),
                source,
            })?;
        if is_dir {
            if !self.options.one_file_system || st.dev == self.root_dev {
                stack.push(Pending {
                    path: self.cpath[..self.cpath.len() - 1].to_vec(),
                    id,
                    dev: st.dev,
                    ino: st.ino,
                });
            }
        } else if st.nlink > 1 {
            self.links.insert((st.dev, st.ino), id);
        }
        Ok(())
    }

    /// The metadata of the entry whose path is in `self.cpath`.
    fn metadata(&mut self, st: &EntryStat) -> Result<Metadata, ScanError> {
        let (uid, gid) = if self.options.root_owner {
            (0, 0)
        } else {
            (st.uid, st.gid)
        };
        let xattrs = if self.options.xattrs {
            self.read_xattrs().map_err(|e| io_err(&self.cpath, e))?
        } else {
            BTreeMap::new()
        };
        Ok(Metadata {
            mode: (st.mode & 0o7777) as u16,
            uid,
            gid,
            atime: st.atime,
            mtime: st.mtime,
            ctime: st.ctime,
            crtime: st.btime,
            xattrs,
        })
    }

    /// All xattrs of the entry whose path is in `self.cpath`.
    fn read_xattrs(&mut self) -> io::Result<Xattrs> {
        let mut xattrs = BTreeMap::new();
        let path = cstr(&self.cpath)?;
        if self.xattr_list.is_empty() {
            self.xattr_list.resize(XATTR_MAX, 0);
        }
        let len = loop {
            match rustix::fs::llistxattr(path, &mut self.xattr_list[..]) {
                Ok(len) => break len,
                Err(Errno::NOTSUP) => return Ok(xattrs),
                // Linux caps the list at XATTR_MAX, but be ready for more.
                Err(Errno::RANGE) => {
                    let need = rustix::fs::llistxattr_query(path)?;
                    self.xattr_list
                        .resize(need.max(self.xattr_list.len() * 2), 0);
                }
                Err(e) => return Err(e.into()),
            }
        };
        if len == 0 {
            return Ok(xattrs);
        }
        if self.xattr_value.is_empty() {
            self.xattr_value.resize(XATTR_MAX, 0);
        }
        let mut start = 0;
        while start < len {
            let cname = CStr::from_bytes_until_nul(&self.xattr_list[start..len]).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidData, "unterminated xattr name list")
            })?;
            start += cname.to_bytes().len() + 1;
            if cname.is_empty() {
                continue;
            }
            let vlen = loop {
                match rustix::fs::lgetxattr(path, cname, &mut self.xattr_value[..]) {
                    Ok(vlen) => break Some(vlen),
                    // Removed since it was listed.
                    Err(Errno::NODATA) => break None,
                    Err(Errno::RANGE) => {
                        let need = rustix::fs::lgetxattr_query(path, cname)?;
                        self.xattr_value
                            .resize(need.max(self.xattr_value.len() * 2), 0);
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            if let Some(vlen) = vlen {
                xattrs.insert(cname.to_bytes().into(), self.xattr_value[..vlen].into());
            }
        }
        Ok(xattrs)
    }
}

/// `statx` (or `lstat` where `statx` is missing) of `name` relative to
/// `dir`, without following a symlink. Clears `use_statx` when the
/// kernel has no `statx`.
fn stat<Fd: rustix::fd::AsFd>(use_statx: &mut bool, dir: Fd, name: &CStr) -> io::Result<EntryStat> {
    if *use_statx {
        let flags = AtFlags::SYMLINK_NOFOLLOW | AtFlags::NO_AUTOMOUNT;
        match rustix::fs::statx(
            &dir,
            name,
            flags,
            StatxFlags::BASIC_STATS | StatxFlags::BTIME,
        ) {
            Ok(x) => {
                let btime = (x.stx_mask & StatxFlags::BTIME.bits() != 0)
                    .then(|| timestamp(x.stx_btime.tv_sec, x.stx_btime.tv_nsec));
                return Ok(EntryStat {
                    mode: u32::from(x.stx_mode),
                    nlink: u64::from(x.stx_nlink),
                    uid: x.stx_uid,
                    gid: x.stx_gid,
                    dev: rustix::fs::makedev(x.stx_dev_major, x.stx_dev_minor),
                    ino: x.stx_ino,
                    rdev: DeviceNumber {
                        major: x.stx_rdev_major,
                        minor: x.stx_rdev_minor,
                    },
                    size: x.stx_size,
                    blocks: x.stx_blocks,
                    atime: timestamp(x.stx_atime.tv_sec, x.stx_atime.tv_nsec),
                    mtime: timestamp(x.stx_mtime.tv_sec, x.stx_mtime.tv_nsec),
                    ctime: timestamp(x.stx_ctime.tv_sec, x.stx_ctime.tv_nsec),
                    btime,
                });
            }
            Err(Errno::NOSYS) => *use_statx = false,
            Err(e) => return Err(e.into()),
        }
    }
    let s = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    // The field types of `struct stat` differ between architectures.
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    let st = EntryStat {
        mode: s.st_mode as u32,
        nlink: s.st_nlink as u64,
        uid: s.st_uid as u32,
        gid: s.st_gid as u32,
        dev: s.st_dev as u64,
        ino: s.st_ino as u64,
        rdev: DeviceNumber {
            major: rustix::fs::major(s.st_rdev as u64),
            minor: rustix::fs::minor(s.st_rdev as u64),
        },
        size: s.st_size as u64,
        blocks: s.st_blocks as u64,
        atime: timestamp(s.st_atime as i64, s.st_atime_nsec as u32),
        mtime: timestamp(s.st_mtime as i64, s.st_mtime_nsec as u32),
        ctime: timestamp(s.st_ctime as i64, s.st_ctime_nsec as u32),
        btime: None,
    };
    Ok(st)
}

/// `bytes` (which ends with its only NUL) as a C string.
fn cstr(bytes: &[u8]) -> io::Result<&CStr> {
    CStr::from_bytes_with_nul(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Opens `name` relative to `dir` with `O_NOATIME`, so that reading the
/// source does not change its access times (which would make a second
/// build differ from the first); where that is refused (`EPERM`: the caller
/// neither owns the file nor has CAP_FOWNER), opens it normally.
fn open_noatime<Fd: rustix::fd::AsFd>(
    dir: Fd,
    name: &CStr,
    flags: OFlags,
) -> rustix::io::Result<OwnedFd> {
    match rustix::fs::openat(&dir, name, flags | OFlags::NOATIME, Mode::empty()) {
        Err(Errno::PERM) => rustix::fs::openat(&dir, name, flags, Mode::empty()),
        r => r,
    }
}

/// The data ranges of the file `name` in `dir`, found with `SEEK_DATA` and
/// `SEEK_HOLE`. `None` if the filesystem cannot tell (then the file is
/// treated as dense).
fn data_ranges(dir: &OwnedFd, name: &CStr, size: u64) -> io::Result<Option<Vec<Range<u64>>>> {
    let fd = open_noatime(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
    )?;
    let mut ranges = Vec::new();
    let mut pos = 0;
    while pos < size {
        let start = match rustix::fs::seek(&fd, SeekFrom::Data(pos)) {
            Ok(start) => start,
            // No data after `pos`.
            Err(Errno::NXIO) => break,
            Err(Errno::INVAL | Errno::NOTSUP) if ranges.is_empty() && pos == 0 => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if start >= size {
            break;
        }
        let end = rustix::fs::seek(&fd, SeekFrom::Hole(start))?.min(size);
        if end <= start {
            break;
        }
        ranges.push(start..end);
        pos = end;
    }
    Ok(Some(ranges))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;
    use rustix::fs::{Timespec, Timestamps, CWD};
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::sync::atomic::{AtomicU64, Ordering};

    const T1960: Timestamp = Timestamp {
        secs: -315_619_200,
        nanos: 123_456_789,
    };
    const T2100: Timestamp = Timestamp {
        secs: 4_102_444_800,
        nanos: 987_654_321,
    };

    fn set_times(path: &Path, atime: Timestamp, mtime: Timestamp) {
        let ts = |t: Timestamp| Timespec {
            tv_sec: t.secs,
            tv_nsec: t.nanos.into(),
        };
        let times = Timestamps {
            last_access: ts(atime),
            last_modification: ts(mtime),
        };
        rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).unwrap();
    }

    fn scan(path: &Path, options: &ScanOptions) -> Tree {
        scan_dir(path, options, &NoProgress).unwrap()
    }

    fn node<'t>(tree: &'t Tree, path: &[u8]) -> &'t Node {
        let id = tree
            .lookup(path)
            .unwrap_or_else(|| panic!("{} missing", String::from_utf8_lossy(path)));
        tree.node(id)
    }

    /// Runs a privileged operation; `false` (after printing why) when it is
    /// not permitted, so the caller can skip what depends on it.
    fn privileged(what: &str, result: io::Result<()>) -> bool {
        match result {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                eprintln!("skipping {what}: needs root ({e})");
                false
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }

    #[test]
    fn scans_every_type_with_its_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("plain"), b"hello").unwrap();
        fs::set_permissions(d.join("plain"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::write(d.join("setgid"), b"").unwrap();
        fs::set_permissions(d.join("setgid"), fs::Permissions::from_mode(0o2711)).unwrap();
        fs::create_dir(d.join("sticky")).unwrap();
        fs::set_permissions(d.join("sticky"), fs::Permissions::from_mode(0o1777)).unwrap();
        fs::create_dir(d.join("sub")).unwrap();
        fs::hard_link(d.join("plain"), d.join("sub/plain2")).unwrap();
        fs::hard_link(d.join("plain"), d.join("sub/plain3")).unwrap();
        std::os::unix::fs::symlink(OsStr::from_bytes(b"\xff/target"), d.join("link")).unwrap();
        rustix::fs::mknodat(
            CWD,
            d.join("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o640),
            0,
        )
        .unwrap();
        drop(std::os::unix::net::UnixListener::bind(d.join("socket")).unwrap());
        fs::write(d.join(OsStr::from_bytes(b"caf\xe9")), b"latin-1").unwrap();
        let big = vec![0x5a; 3000];
        rustix::fs::lsetxattr(
            d.join("plain"),
            "user.small",
            b"1",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        rustix::fs::lsetxattr(
            d.join("plain"),
            "user.big",
            &big,
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        let devices = privileged(
            "device nodes",
            rustix::fs::mknodat(
                CWD,
                d.join("null"),
                FileType::CharacterDevice,
                Mode::from_raw_mode(0o666),
                rustix::fs::makedev(1, 3),
            )
            .map_err(Into::into),
        );
        if devices {
            rustix::fs::mknodat(
                CWD,
                d.join("disk"),
                FileType::BlockDevice,
                Mode::from_raw_mode(0o660),
                rustix::fs::makedev(259, 70000),
            )
            .unwrap();
            // mknod applies the umask.
            fs::set_permissions(d.join("disk"), fs::Permissions::from_mode(0o660)).unwrap();
        }
        fs::write(d.join("owned"), b"").unwrap();
        let chown = privileged(
            "chown",
            std::os::unix::fs::lchown(d.join("owned"), Some(100_000), Some(200_000)),
        );
        fs::write(d.join("old"), b"").unwrap();
        set_times(&d.join("old"), T2100, T1960);
        set_times(&d.join("link"), T1960, T2100);
        set_times(&d.join("sub"), T1960, T2100);

        let tree = scan(d, &ScanOptions::new());

        let root = &tree.node(tree.root()).meta;
        let host_root = fs::metadata(d).unwrap();
        assert_eq!(root.mode, (host_root.mode() & 0o7777) as u16);
        assert_eq!(root.mtime.secs, host_root.mtime());
        assert_eq!(root.mtime.nanos as i64, host_root.mtime_nsec());

        let plain = tree.lookup(b"plain").unwrap();
        assert_eq!(tree.lookup(b"sub/plain2"), Some(plain));
        assert_eq!(tree.lookup(b"sub/plain3"), Some(plain));
        assert_eq!(tree.link_count(plain), 3);
        let p = tree.node(plain);
        assert_eq!(p.meta.mode, 0o4755);
        assert_eq!(
            p.meta.xattrs.get(&b"user.small"[..]).map(|v| &**v),
            Some(&b"1"[..])
        );
        assert_eq!(
            p.meta.xattrs.get(&b"user.big"[..]).map(|v| &**v),
            Some(&big[..])
        );
        let host = fs::metadata(d.join("plain")).unwrap();
        assert_eq!((p.meta.uid, p.meta.gid), (host.uid(), host.gid()));
        match &p.kind {
            NodeKind::File(data) => {
                assert_eq!(data.len(), 5);
                assert!(!data.is_sparse());
                let mut buf = [0; 5];
                data.open().unwrap().read_exact_at(0, &mut buf).unwrap();
                assert_eq!(&buf, b"hello");
            }
            other => panic!("plain is {other:?}"),
        }
        assert_eq!(node(&tree, b"setgid").meta.mode, 0o2711);
        let sticky = node(&tree, b"sticky");
        assert_eq!(sticky.meta.mode, 0o1777);
        assert!(matches!(&sticky.kind, NodeKind::Dir(d) if d.is_empty()));
        assert_eq!(
            node(&tree, b"link").kind,
            NodeKind::Symlink(b"\xff/target"[..].into())
        );
        let link = &node(&tree, b"link").meta;
        assert_eq!((link.atime, link.mtime), (T1960, T2100));
        let sub = &node(&tree, b"sub").meta;
        assert_eq!((sub.atime, sub.mtime), (T1960, T2100));
        let old = &node(&tree, b"old").meta;
        assert_eq!((old.atime, old.mtime), (T2100, T1960));
        let fifo = node(&tree, b"fifo");
        assert_eq!((&fifo.kind, fifo.meta.mode), (&NodeKind::Fifo, 0o640));
        assert_eq!(node(&tree, b"socket").kind, NodeKind::Socket);
        assert!(matches!(node(&tree, b"caf\xe9").kind, NodeKind::File(ref f) if f.len() == 7));
        if devices {
            let dev = |major, minor| DeviceNumber { major, minor };
            assert_eq!(node(&tree, b"null").kind, NodeKind::CharDevice(dev(1, 3)));
            assert_eq!(
                node(&tree, b"disk").kind,
                NodeKind::BlockDevice(dev(259, 70000))
            );
            assert_eq!(node(&tree, b"disk").meta.mode, 0o660);
        }
        if chown {
            let owned = &node(&tree, b"owned").meta;
            assert_eq!((owned.uid, owned.gid), (100_000, 200_000));
        }
        // Birth times, where the filesystem keeps them.
        let x = rustix::fs::statx(CWD, d, AtFlags::empty(), StatxFlags::BTIME).unwrap();
        if x.stx_mask & StatxFlags::BTIME.bits() != 0 {
            assert_eq!(
                root.crtime,
                Some(timestamp(x.stx_btime.tv_sec, x.stx_btime.tv_nsec))
            );
        } else {
            assert_eq!(root.crtime, None);
        }
        // Every name was visited: the root, 10 or 12 entries of the root
        // (with the device nodes) and the 2 in `sub`.
        let expected = if devices { 15 } else { 13 };
        assert_eq!(tree.walk().count(), expected);
    }

    #[test]
    fn root_owner_maps_every_owner_to_root() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        fs::write(&f, b"x").unwrap();
        let chown = privileged(
            "chown",
            std::os::unix::fs::lchown(&f, Some(1234), Some(5678)),
        );
        let host = fs::metadata(&f).unwrap();
        if chown {
            assert_eq!((host.uid(), host.gid()), (1234, 5678));
        }
        let as_is = scan(dir.path(), &ScanOptions::new());
        let m = &node(&as_is, b"f").meta;
        assert_eq!((m.uid, m.gid), (host.uid(), host.gid()));
        let rooted = scan(dir.path(), &ScanOptions::new().root_owner(true));
        for (_, id) in rooted.walk() {
            let m = &rooted.node(id).meta;
            assert_eq!((m.uid, m.gid), (0, 0));
        }
    }

    #[test]
    fn sparse_files_get_their_data_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mib = 1 << 20;
        let f = fs::File::create(d.join("sparse")).unwrap();
        f.set_len(8 * mib).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &[7; 4096], 2 * mib).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &[9; 100], 8 * mib - 100).unwrap();
        drop(f);
        fs::File::create(d.join("hole"))
            .unwrap()
            .set_len(mib)
            .unwrap();
        fs::write(d.join("dense"), vec![1; 3 * 4096 + 5]).unwrap();

        let tree = scan(d, &ScanOptions::new());
        let data = |name: &[u8]| match &node(&tree, name).kind {
            NodeKind::File(data) => data.clone(),
            other => panic!("{other:?}"),
        };
        let sparse = data(b"sparse");
        assert_eq!(sparse.len(), 8 * mib);
        assert!(sparse.is_sparse());
        let ranges = sparse.data_ranges();
        let covered = |r: Range<u64>| ranges.iter().any(|d| d.start <= r.start && r.end <= d.end);
        assert!(covered(2 * mib..2 * mib + 4096), "{ranges:?}");
        assert!(covered(8 * mib - 100..8 * mib), "{ranges:?}");
        let total: u64 = ranges.iter().map(|r| r.end - r.start).sum();
        assert!(total < mib, "{ranges:?}");
        let hole = data(b"hole");
        assert_eq!((hole.len(), hole.data_ranges()), (mib, vec![]));
        let dense = data(b"dense");
        assert!(!dense.is_sparse());
        assert_eq!(dense.data_ranges(), vec![0..3 * 4096 + 5]);
    }

    #[test]
    fn xattrs_can_be_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        fs::write(&f, b"x").unwrap();
        rustix::fs::lsetxattr(&f, "user.k", b"v", rustix::fs::XattrFlags::empty()).unwrap();
        let with = scan(dir.path(), &ScanOptions::new());
        assert_eq!(node(&with, b"f").meta.xattrs.len(), 1);
        let without = scan(dir.path(), &ScanOptions::new().xattrs(false));
        assert!(node(&without, b"f").meta.xattrs.is_empty());
    }

    #[test]
    fn the_root_must_be_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("file"), b"").unwrap();
        fs::create_dir(d.join("real")).unwrap();
        std::os::unix::fs::symlink("real", d.join("link")).unwrap();
        for name in ["file", "link"] {
            match scan_dir(&d.join(name), &ScanOptions::new(), &NoProgress) {
                Err(ScanError::NotADirectory { path }) => assert_eq!(path, d.join(name)),
                other => panic!("{name}: {other:?}"),
            }
        }
        match scan_dir(&d.join("missing"), &ScanOptions::new(), &NoProgress) {
            Err(ScanError::Io { path, source }) => {
                assert_eq!(path, d.join("missing"));
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
        // A trailing slash is accepted and does not end up in host paths.
        let mut with_slash = d.join("real").into_os_string();
        with_slash.push("/");
        fs::write(d.join("real/x"), b"").unwrap();
        let tree = scan(Path::new(&with_slash), &ScanOptions::new());
        match &node(&tree, b"x").kind {
            NodeKind::File(data) => assert_eq!(
                data.source(),
                &crate::Source::Host {
                    path: Arc::from(d.join("real/x")),
                    offset: 0
                }
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_name_the_path() {
        // A path longer than PATH_MAX cannot be opened by name.
        let dir = tempfile::tempdir().unwrap();
        let name = "d".repeat(250);
        let mut fd = rustix::fs::open(dir.path(), OFlags::DIRECTORY, Mode::empty()).unwrap();
        for _ in 0..20 {
            rustix::fs::mkdirat(&fd, name.as_str(), Mode::from_raw_mode(0o755)).unwrap();
            fd = rustix::fs::openat(&fd, name.as_str(), OFlags::DIRECTORY, Mode::empty()).unwrap();
        }
        match scan_dir(dir.path(), &ScanOptions::new(), &NoProgress) {
            Err(ScanError::Io { path, .. }) => {
                assert!(path.starts_with(dir.path()), "{path:?}");
                assert!(path.as_os_str().len() > 4096, "{path:?}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[derive(Default)]
    struct Counter {
        begun: AtomicU64,
        ended: AtomicU64,
        entries: AtomicU64,
    }

    impl Progress for Counter {
        fn begin(&self, stage: Stage, _total: Option<u64>) {
            assert_eq!(stage, Stage::Scan);
            self.begun.fetch_add(1, Ordering::Relaxed);
        }
        fn advance(&self, stage: Stage, amount: u64) {
            assert_eq!(stage, Stage::Scan);
            self.entries.fetch_add(amount, Ordering::Relaxed);
        }
        fn end(&self, _stage: Stage) {
            self.ended.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn progress_counts_every_name() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..3000 {
            let sub = dir.path().join(format!("d{}", i % 7));
            fs::create_dir_all(&sub).unwrap();
            fs::write(sub.join(format!("f{i}")), b"").unwrap();
        }
        fs::hard_link(dir.path().join("d0/f0"), dir.path().join("d1/again")).unwrap();
        let counter = Counter::default();
        let tree = scan_dir(dir.path(), &ScanOptions::new(), &counter).unwrap();
        assert_eq!(counter.begun.load(Ordering::Relaxed), 1);
        assert_eq!(counter.ended.load(Ordering::Relaxed), 1);
        assert_eq!(counter.entries.load(Ordering::Relaxed), 1 + 7 + 3000 + 1);
        assert_eq!(tree.walk().count(), 1 + 7 + 3000 + 1);
    }

    #[test]
    fn one_file_system_keeps_mount_points_empty() {
        // /dev usually has filesystems mounted below it (pts, shm, mqueue).
        let dev = Path::new("/dev");
        let Ok(top) = fs::symlink_metadata(dev) else {
            eprintln!("skipping: no /dev");
            return;
        };
        let mount_points: Vec<Vec<u8>> = fs::read_dir(dev)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_type().is_ok_and(|t| t.is_dir())
                    && e.metadata().is_ok_and(|m| m.dev() != top.dev())
            })
            .map(|e| e.file_name().as_bytes().to_vec())
            .collect();
        if mount_points.is_empty() {
            eprintln!("skipping: nothing is mounted below /dev");
            return;
        }
        let tree = scan(dev, &ScanOptions::new().one_file_system(true));
        for name in &mount_points {
            match &node(&tree, name).kind {
                NodeKind::Dir(d) => assert!(d.is_empty(), "{}", String::from_utf8_lossy(name)),
                other => panic!("{other:?}"),
            }
        }
    }
}
