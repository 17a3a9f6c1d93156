//! A read-only ext2/ext3/ext4 reader that is safe on untrusted images.
//!
//! [`Ext4Reader`] opens a filesystem in any `Read + Seek` storage and reads
//! its superblock, inodes, directories (linear and hash-indexed), file
//! contents (extent trees of any depth and the old indirect block maps,
//! holes and unwritten extents read as zeros), symlinks (fast and slow),
//! device numbers and extended attributes (in the inode and in a block,
//! POSIX ACLs converted back to the Linux VFS format). It exists for
//! `ami inspect`, for tests that check what the writer produced, and for
//! the boot test's look-ups; it follows the same on-disk modules as the
//! writer (`crate::ondisk`), i.e. the kernel's "ext4 Data Structures and
//! Algorithms" documentation.
//!
//! # Robustness
//!
//! Every byte of the image is treated as hostile. The reader never panics,
//! never loops without bound and never allocates more than the image
//! justifies:
//!
//! * all arithmetic on on-disk values is checked, every offset and length
//!   is bounds-checked before use, and every block number must lie inside
//!   the filesystem;
//! * the superblock is validated (magic, block size 1 KiB - 64 KiB, group
//!   geometry, inode count = groups x inodes per group, inode and
//!   descriptor sizes) and, with `metadata_csum`, its checksum verified;
//! * extent trees are limited to the kernel's depth of 5, each child node
//!   must have exactly its parent's depth minus one, keys must be sorted and
//!   inside the parent's range, entries may not exceed `eh_max`, and no tree
//!   block may be visited twice; extents of one file may not overlap each
//!   other on disk (unless `shared_blocks` is set) nor add up to more
//!   blocks than the filesystem has. Indirect block maps get the same
//!   treatment. So the work done for one file is bounded by the size of the
//!   image, not by the values in it;
//! * directory records are checked (`rec_len` at least 12, a multiple of 4
//!   and inside the block, the name inside the record, inode numbers in
//!   range);
//! * with `metadata_csum`, the checksums of group descriptors, inodes,
//!   extent tree blocks, directory leaf blocks and xattr blocks are verified
//!   (see [`Ext4Reader::set_verify_checksums`]); with `uninit_bg` the CRC-16
//!   of group descriptors is. A mismatch is [`ReadError::Corrupt`].
//!
//! Storage shorter than the filesystem reads as zeros past its end: an
//! image that [`format()`](crate::format()) wrote into a fresh `Vec` is not
//! padded to its full size, because its free space was never written.
//!
//! # Not supported
//!
//! Inline data (`inline_data` files and directories), encrypted inodes and
//! xattr values in their own inodes (`ea_inode`) give
//! [`ReadError::Unsupported`]; `compression`, `journal_dev`, `dirdata` and
//! unknown incompatible features are refused when opening. The journal is
//! not replayed (a filesystem with `needs_recovery` reads as it is on
//! disk). The checksums of htree index blocks are not verified (those of
//! leaf blocks are).

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Seek, SeekFrom, Write};

use ami_core::{DeviceNumber, Timestamp};

use crate::checksum::csum_seed;
use crate::ondisk::dirent;
use crate::ondisk::dx_hash::{dx_hash, HashVersion};
use crate::ondisk::extent::{self, Extent};
use crate::ondisk::group_desc::{self, GdtCsum, GroupDesc, BG_INODE_UNINIT};
use crate::ondisk::inode::{self, Inode};
use crate::ondisk::superblock::{self as sb, Superblock};
use crate::ondisk::xattr;
use crate::options::Profile;

/// The root directory's inode number.
pub const ROOT_INO: u32 = 2;

/// Default of [`Ext4Reader::set_max_read_size`]: 256 MiB.
pub const DEFAULT_MAX_READ_SIZE: u64 = 256 << 20;

/// Longest symlink target read (the kernel allows one block, at most 64 KiB).
const MAX_LINK_LEN: u64 = 65536;

/// Group descriptors kept in memory at most.
const GD_CACHE_MAX: usize = 4096;

/// Bytes copied per storage read when streaming file data.
const CHUNK: usize = 1 << 20;

/// Everything that can go wrong while reading an image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// Reading the storage failed.
    #[error("reading the image")]
    Io(#[from] io::Error),
    /// No ext2/3/4 superblock: the storage is too short or the magic number
    /// is wrong.
    #[error("not an ext2/ext3/ext4 filesystem")]
    NotExt4,
    /// The filesystem or one of its inodes uses a feature this reader cannot
    /// read.
    #[error("unsupported ext4 feature: {feature}")]
    Unsupported {
        /// The feature (e2fsprogs' name where there is one).
        feature: String,
    },
    /// The image contradicts the format or a checksum does not match.
    #[error("corrupt filesystem: {what}")]
    Corrupt {
        /// What is wrong, and where.
        what: String,
    },
    /// A path does not exist.
    #[error("{path:?}: no such file or directory")]
    NotFound {
        /// The path up to and including the missing component, lossily
        /// decoded.
        path: String,
    },
    /// A directory was expected.
    #[error("{path:?} is not a directory")]
    NotADirectory {
        /// The path (lossily decoded) or `inode N`.
        path: String,
    },
    /// A regular file was expected.
    #[error("{path:?} is not a regular file")]
    NotAFile {
        /// The path (lossily decoded) or `inode N`.
        path: String,
    },
    /// A symbolic link was expected.
    #[error("{path:?} is not a symbolic link")]
    NotASymlink {
        /// The path (lossily decoded) or `inode N`.
        path: String,
    },
    /// The inode number is 0, beyond the inode count, or names an inode
    /// that is not in use.
    #[error("inode {ino} does not exist or is not in use")]
    InvalidInode {
        /// The inode number.
        ino: u32,
    },
    /// A file is larger than [`Ext4Reader::set_max_read_size`] allows to
    /// read into memory (use [`Ext4Reader::read_file_to`] instead).
    #[error("file of {size} bytes is larger than the {limit}-byte read limit")]
    TooLarge {
        /// The file size in bytes.
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },
}

/// `Result` with [`ReadError`].
pub type ReadResult<T> = std::result::Result<T, ReadError>;

fn corrupt(what: impl Into<String>) -> ReadError {
    ReadError::Corrupt { what: what.into() }
}

fn lossy(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

/// What the superblock says about the filesystem, from
/// [`Ext4Reader::superblock_info`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FsInfo {
    /// Block size in bytes.
    pub block_size: u32,
    /// Filesystem size in blocks.
    pub blocks_count: u64,
    /// Free blocks, as the superblock counts them.
    pub free_blocks_count: u64,
    /// Blocks reserved for root.
    pub reserved_blocks_count: u64,
    /// Number of inodes.
    pub inodes_count: u32,
    /// Free inodes, as the superblock counts them.
    pub free_inodes_count: u32,
    /// First block of group 0 (1 with 1 KiB blocks, else 0).
    pub first_data_block: u64,
    /// Blocks per group.
    pub blocks_per_group: u64,
    /// Inodes per group.
    pub inodes_per_group: u32,
    /// Number of block groups.
    pub groups: u32,
    /// Inode size in bytes.
    pub inode_size: u16,
    /// First inode not reserved by the filesystem (11 with mke2fs).
    pub first_ino: u32,
    /// The filesystem UUID.
    pub uuid: [u8; 16],
    /// The volume label (at most 16 bytes, without the trailing NULs).
    pub label: Vec<u8>,
    /// Where it was last mounted, as recorded (without the trailing NULs).
    pub last_mounted: Vec<u8>,
    /// The seed of the directory-index hash.
    pub hash_seed: [u8; 16],
    /// The default directory hash (0 legacy, 1 half_md4, 2 tea, +3 for the
    /// unsigned variants).
    pub default_hash_version: u8,
    /// Names of the feature flags that are set, as e2fsprogs spells them
    /// (`has_journal`, `extent`, `64bit`, `metadata_csum`, ...), compat
    /// first, then incompat, then ro_compat, in bit order (the order of
    /// `dumpe2fs`). Unknown bits are named `FEATURE_C7`-style.
    pub features: Vec<String>,
    /// The raw `s_feature_compat`.
    pub feature_compat: u32,
    /// The raw `s_feature_incompat`.
    pub feature_incompat: u32,
    /// The raw `s_feature_ro_compat`.
    pub feature_ro_compat: u32,
    /// Which of the writer's [`Profile`]s the features look like:
    /// [`Profile::Default`] with `64bit` and `metadata_csum`,
    /// [`Profile::PvGrub`] with neither but with `uninit_bg`, `None`
    /// otherwise. It is a guess: images by other tools match too.
    pub profile: Option<Profile>,
    /// The journal inode (0: no internal journal).
    pub journal_inum: u32,
    /// Whether the filesystem was cleanly unmounted and has no recorded
    /// errors (`s_state` is exactly "valid").
    pub clean: bool,
    /// Whether the journal needs recovery (`needs_recovery`); this reader
    /// does not replay it.
    pub needs_recovery: bool,
    /// When the filesystem was created (`s_mkfs_time`).
    pub mkfs_time: i64,
    /// When it was last written (`s_wtime`).
    pub write_time: i64,
    /// When it was last mounted (`s_mtime`; 0 if never).
    pub mount_time: i64,
}

/// The type of an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InodeKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
}

impl InodeKind {
    /// The kind of the `S_IFMT` bits of `mode`; `None` for an invalid type.
    pub fn from_mode(mode: u16) -> Option<Self> {
        Some(match mode & 0o170000 {
            0o100000 => InodeKind::File,
            0o040000 => InodeKind::Dir,
            0o120000 => InodeKind::Symlink,
            0o020000 => InodeKind::CharDevice,
            0o060000 => InodeKind::BlockDevice,
            0o010000 => InodeKind::Fifo,
            0o140000 => InodeKind::Socket,
            _ => return None,
        })
    }

    /// The directory-entry `file_type` code of this kind (1 regular file,
    /// 2 directory, 3 character device, 4 block device, 5 fifo, 6 socket,
    /// 7 symlink).
    pub fn file_type(self) -> u8 {
        match self {
            InodeKind::File => 1,
            InodeKind::Dir => 2,
            InodeKind::CharDevice => 3,
            InodeKind::BlockDevice => 4,
            InodeKind::Fifo => 5,
            InodeKind::Socket => 6,
            InodeKind::Symlink => 7,
        }
    }
}

/// The metadata of an inode, from [`Ext4Reader::metadata`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InodeInfo {
    /// The inode number.
    pub ino: u32,
    /// The type.
    pub kind: InodeKind,
    /// The full `st_mode`: type bits and permission bits (including setuid,
    /// setgid and sticky).
    pub mode: u16,
    /// Owner user id (32 bits).
    pub uid: u32,
    /// Owner group id (32 bits).
    pub gid: u32,
    /// Size in bytes (for a symlink, the target length).
    pub size: u64,
    /// Number of hard links (for a directory: 2 plus subdirectories, or 1
    /// when that exceeds 65,000 with `dir_nlink`).
    pub links: u16,
    /// Last access.
    pub atime: Timestamp,
    /// Last modification of the contents.
    pub mtime: Timestamp,
    /// Last change of the inode.
    pub ctime: Timestamp,
    /// Creation time; `None` when the inode is too small to hold it.
    /// Nanoseconds above 999,999,999 (corrupt) are clamped, in all times.
    pub crtime: Option<Timestamp>,
    /// Device number of a character or block device.
    pub rdev: Option<DeviceNumber>,
    /// The inode flags (`i_flags`: 0x80000 extents, 0x1000 hash-indexed
    /// directory, ...).
    pub flags: u32,
    /// Space used, in 512-byte units (data, tree and xattr blocks).
    pub blocks_512: u64,
    /// `i_generation`.
    pub generation: u32,
    /// The xattr block (0: none).
    pub xattr_block: u64,
}

/// A run of a file's blocks, from [`Ext4Reader::file_extents`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileExtent {
    /// First file block (in units of the block size).
    pub logical: u64,
    /// First filesystem block.
    pub physical: u64,
    /// Number of blocks.
    pub len: u64,
    /// False for an unwritten (preallocated) extent, which reads as zeros.
    pub initialized: bool,
}

/// Validated geometry and feature switches.
#[derive(Debug, Clone)]
struct Geo {
    bs: u64,
    blocks_count: u64,
    first_data_block: u64,
    bpg: u64,
    ipg: u32,
    inodes_count: u32,
    inode_size: usize,
    desc_size: usize,
    meta_bg: bool,
    first_meta_bg: u32,
    sparse_super: bool,
    filetype: bool,
    is64: bool,
    huge_file: bool,
    shared_blocks: bool,
    dir_index: bool,
    largedir: bool,
    /// `s_flags` asks for the unsigned directory hash variants.
    hash_unsigned: bool,
    hash_seed: [u32; 4],
    /// Whether group descriptors carry checksums (`uninit_bg` or
    /// `metadata_csum`), which makes the `*_UNINIT` flags meaningful.
    gd_csum: Option<GdtCsum>,
    /// The metadata_csum seed.
    seed: Option<u32>,
}

impl Geo {
    /// Whether group `g` holds a superblock backup (and so its GDT copy).
    fn has_super(&self, g: u64) -> bool {
        if !self.sparse_super || g <= 1 {
            return true;
        }
        [3u64, 5, 7].iter().any(|&p| {
            let mut n = p;
            while n < g {
                n *= p;
            }
            n == g
        })
    }

    /// Inode-table blocks per group.
    fn itable_blocks(&self) -> u64 {
        (u64::from(self.ipg) * self.inode_size as u64).div_ceil(self.bs)
    }
}

/// An inode as loaded.
struct Loaded {
    ino: u32,
    raw: Vec<u8>,
    inode: Inode,
    kind: InodeKind,
    extra_isize: usize,
    generation: u32,
}

/// A read-only view of an ext2/ext3/ext4 filesystem (see the
/// [module docs](self)).
///
/// # Example
///
/// ```
/// use std::io::Cursor;
///
/// use ami_core::progress::NoProgress;
/// use ami_core::{FileData, Metadata, Node, Tree};
/// use ami_ext4::{format, Ext4Reader, FormatOptions, InodeKind};
///
/// let mut tree = Tree::new(Metadata::new(0o755));
/// let etc = tree.create_dir_all(b"/etc", Metadata::new(0o755))?;
/// let hostname = Node::file(FileData::from_bytes(b"ami\n".to_vec()), Metadata::new(0o644));
/// tree.add(etc, b"hostname", hostname)?;
/// tree.add(etc, b"name", Node::symlink(b"hostname".to_vec(), Metadata::new(0o777)))?;
///
/// let mut image = Cursor::new(Vec::new());
/// format(&mut image, &tree, &FormatOptions::new().label("root"), &NoProgress)?;
///
/// let mut fs = Ext4Reader::new(image)?;
/// assert_eq!(fs.superblock_info().label, b"root");
/// assert_eq!(fs.read_path(b"/etc/hostname")?, b"ami\n");
/// let link = fs.lookup(b"/etc/name")?;
/// assert_eq!(fs.read_link(link)?, b"hostname");
/// assert_eq!(fs.metadata(link)?.kind, InodeKind::Symlink);
/// let etc = fs.lookup(b"/etc")?;
/// let names: Vec<Vec<u8>> = fs.read_dir(etc)?.into_iter().map(|(n, _, _)| n).collect();
/// assert_eq!(names, [b"hostname".to_vec(), b"name".to_vec()]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Ext4Reader<R: Read + Seek> {
    storage: R,
    /// Storage length in bytes; reads past it give zeros.
    len: u64,
    geo: Geo,
    info: FsInfo,
    verify: bool,
    max_read: u64,
    gd_cache: HashMap<u32, GroupDesc>,
}

impl<R: Read + Seek> std::fmt::Debug for Ext4Reader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ext4Reader")
            .field("info", &self.info)
            .field("verify", &self.verify)
            .field("max_read", &self.max_read)
            .finish_non_exhaustive()
    }
}

impl<R: Read + Seek> Ext4Reader<R> {
    /// Opens the filesystem at offset 0 of `storage`: reads and validates
    /// the superblock (magic, revision, block size 1 KiB - 64 KiB, group
    /// geometry, inode and descriptor sizes, incompatible features) and,
    /// with `metadata_csum`, checks its checksum.
    ///
    /// # Errors
    /// [`ReadError::NotExt4`] without the magic number,
    /// [`ReadError::Unsupported`] for an incompatible feature this reader
    /// cannot handle, [`ReadError::Corrupt`] for impossible values or a bad
    /// checksum, [`ReadError::Io`] if the storage fails.
    pub fn new(mut storage: R) -> ReadResult<Self> {
        let len = storage.seek(SeekFrom::End(0))?;
        if len < 2048 {
            return Err(ReadError::NotExt4);
        }
        let mut raw = [0u8; sb::SIZE];
        storage.seek(SeekFrom::Start(1024))?;
        storage.read_exact(&mut raw)?;
        let s = Superblock::decode(&raw).ok_or(ReadError::NotExt4)?;
        let x = sb::decode_read_fields(&raw);
        let (geo, info) = validate(&s, &x, &raw)?;
        Ok(Ext4Reader {
            storage,
            len,
            geo,
            info,
            verify: true,
            max_read: DEFAULT_MAX_READ_SIZE,
            gd_cache: HashMap::new(),
        })
    }

    /// Whether to verify the checksums of group descriptors, inodes, extent
    /// blocks, directory blocks and xattr blocks (default: true). The
    /// superblock checksum is always verified by [`new`](Self::new).
    pub fn set_verify_checksums(&mut self, yes: bool) {
        self.verify = yes;
        self.gd_cache.clear();
    }

    /// The largest file [`read_file`](Self::read_file) and
    /// [`read_path`](Self::read_path) read into memory (default
    /// [`DEFAULT_MAX_READ_SIZE`]); larger files give
    /// [`ReadError::TooLarge`].
    pub fn set_max_read_size(&mut self, bytes: u64) {
        self.max_read = bytes;
    }

    /// What the superblock says (sizes, counts, UUID, label, features, ...).
    pub fn superblock_info(&self) -> FsInfo {
        self.info.clone()
    }

    /// Gives the storage back.
    pub fn into_inner(self) -> R {
        self.storage
    }

    /// The inode number of `path`, an absolute path (the leading `/` is
    /// optional; empty components and `.` are ignored, `..` follows the
    /// directory's `..` entry). Symlinks are not followed: a symlink in
    /// the middle of the path gives [`ReadError::NotADirectory`].
    /// Hash-indexed directories are searched through their index (reading
    /// a few blocks); when the index is unusable, or the leaf it selects
    /// lacks the name, every block is scanned, so a name that
    /// [`read_dir`](Self::read_dir) lists is always found.
    ///
    /// # Errors
    /// [`ReadError::NotFound`], [`ReadError::NotADirectory`], or an error
    /// reading a directory on the way.
    pub fn lookup(&mut self, path: &[u8]) -> ReadResult<u32> {
        let mut cur = ROOT_INO;
        let mut walked: Vec<u8> = Vec::new();
        for comp in path.split(|&b| b == b'/') {
            if comp.is_empty() || comp == b"." {
                continue;
            }
            let dir = self.load(cur)?;
            if dir.kind != InodeKind::Dir {
                return Err(ReadError::NotADirectory {
                    path: if walked.is_empty() {
                        "/".into()
                    } else {
                        lossy(&walked)
                    },
                });
            }
            let found = self.lookup_in(&dir, comp)?;
            walked.push(b'/');
            walked.extend_from_slice(comp);
            cur = found.ok_or_else(|| ReadError::NotFound {
                path: lossy(&walked),
            })?;
        }
        Ok(cur)
    }

    /// The metadata of inode `ino`.
    ///
    /// # Errors
    /// [`ReadError::InvalidInode`] for a number out of range or an unused
    /// inode, [`ReadError::Corrupt`] for a bad checksum or impossible
    /// fields.
    pub fn metadata(&mut self, ino: u32) -> ReadResult<InodeInfo> {
        let l = self.load(ino)?;
        let i = &l.inode;
        let ts = |(secs, nanos): (i64, u32)| Timestamp {
            secs,
            nanos: nanos.min(999_999_999),
        };
        // crtime and crtime_extra end at 0x98 = 128 + 24.
        let crtime = (l.extra_isize >= 24).then(|| ts(i.crtime));
        let rdev = matches!(l.kind, InodeKind::CharDevice | InodeKind::BlockDevice).then(|| {
            let (major, minor) = inode::decode_device(&i.block);
            DeviceNumber { major, minor }
        });
        let blocks_512 = if self.geo.huge_file && i.flags & inode::FL_HUGE_FILE != 0 {
            i.blocks_512.saturating_mul(self.geo.bs / 512)
        } else {
            i.blocks_512
        };
        Ok(InodeInfo {
            ino,
            kind: l.kind,
            mode: i.mode,
            uid: i.uid,
            gid: i.gid,
            size: i.size,
            links: i.links_count,
            atime: ts(i.atime),
            mtime: ts(i.mtime),
            ctime: ts(i.ctime),
            crtime,
            rdev,
            flags: i.flags,
            blocks_512,
            generation: l.generation,
            xattr_block: self.xattr_block(&l),
        })
    }

    /// The entries of directory `ino` as (name, inode, file type), in
    /// on-disk order, without `.` and `..`. The file type is the entry's
    /// `file_type` byte (see [`InodeKind::file_type`]; 0 without the
    /// `filetype` feature). Linear and hash-indexed directories are read
    /// the same way: every block, skipping index blocks, unused records and
    /// checksum tails.
    ///
    /// # Errors
    /// [`ReadError::NotADirectory`], or a corrupt directory.
    pub fn read_dir(&mut self, ino: u32) -> ReadResult<Vec<(Vec<u8>, u32, u8)>> {
        let l = self.load(ino)?;
        if l.kind != InodeKind::Dir {
            return Err(ReadError::NotADirectory {
                path: format!("inode {ino}"),
            });
        }
        let mut out = Vec::new();
        self.scan_dir(&l, |name, ino, ftype| {
            if name != b"." && name != b".." {
                out.push((name.to_vec(), ino, ftype));
            }
            true
        })?;
        Ok(out)
    }

    /// The contents of regular file `ino`, read into memory.
    ///
    /// # Errors
    /// [`ReadError::NotAFile`], [`ReadError::TooLarge`] for a file larger
    /// than [`set_max_read_size`](Self::set_max_read_size), or a corrupt
    /// block map.
    pub fn read_file(&mut self, ino: u32) -> ReadResult<Vec<u8>> {
        self.read_file_inner(ino, || format!("inode {ino}"))
    }

    /// Streams the contents of regular file `ino` into `w` and returns the
    /// number of bytes written (the file size). Holes are written as zeros.
    /// There is no size limit: a sparse file of a terabyte writes a
    /// terabyte.
    ///
    /// # Errors
    /// [`ReadError::NotAFile`], a corrupt block map, or
    /// [`ReadError::Io`] from the storage or from `w`.
    pub fn read_file_to<W: Write + ?Sized>(&mut self, ino: u32, w: &mut W) -> ReadResult<u64> {
        let l = self.load(ino)?;
        if l.kind != InodeKind::File {
            return Err(ReadError::NotAFile {
                path: format!("inode {ino}"),
            });
        }
        let size = l.inode.size;
        self.copy_data(&l, size, w)?;
        Ok(size)
    }

    /// The block runs of file, directory or symlink `ino`, sorted by file
    /// block, holes left out (empty for fast symlinks, devices, fifos and
    /// sockets). Extents past the end of the file are included.
    ///
    /// # Errors
    /// A corrupt block map, or an unsupported inode (inline data,
    /// encryption).
    pub fn file_extents(&mut self, ino: u32) -> ReadResult<Vec<FileExtent>> {
        let l = self.load(ino)?;
        match l.kind {
            InodeKind::File | InodeKind::Dir => self.map(&l),
            InodeKind::Symlink if !self.is_fast_symlink(&l) => self.map(&l),
            _ => Ok(Vec::new()),
        }
    }

    /// The target of symlink `ino` (fast symlinks stored in the inode and
    /// slow ones stored in a block alike).
    ///
    /// # Errors
    /// [`ReadError::NotASymlink`], or a corrupt inode.
    pub fn read_link(&mut self, ino: u32) -> ReadResult<Vec<u8>> {
        let l = self.load(ino)?;
        if l.kind != InodeKind::Symlink {
            return Err(ReadError::NotASymlink {
                path: format!("inode {ino}"),
            });
        }
        let size = l.inode.size;
        if size > MAX_LINK_LEN {
            return Err(corrupt(format!(
                "inode {ino}: symlink target of {size} bytes"
            )));
        }
        if self.is_fast_symlink(&l) {
            let n = usize::try_from(size)
                .ok()
                .filter(|&n| n < l.inode.block.len())
                .ok_or_else(|| {
                    corrupt(format!(
                        "inode {ino}: fast symlink of {size} bytes (at most 59 fit)"
                    ))
                })?;
            return Ok(l.inode.block[..n].to_vec());
        }
        let mut out = Vec::with_capacity(size as usize);
        self.copy_data(&l, size, &mut out)?;
        Ok(out)
    }

    /// The extended attributes of inode `ino`, in-inode and in its xattr
    /// block, as (full name, value) sorted by name. POSIX ACLs
    /// (`system.posix_acl_access`, `system.posix_acl_default`) are converted
    /// from ext4's on-disk format back to the Linux VFS format that
    /// `getxattr(2)` returns. Attributes in namespaces the kernel does not
    /// know are left out, as `listxattr(2)` does.
    ///
    /// # Errors
    /// A corrupt xattr area or block (including a bad ACL or block
    /// checksum), or [`ReadError::Unsupported`] for values in their own
    /// inodes (`ea_inode`).
    pub fn xattrs(&mut self, ino: u32) -> ReadResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let l = self.load(ino)?;
        let map_err = |where_: &str, e: xattr::DecodeError| match e {
            xattr::DecodeError::Corrupt(what) => corrupt(format!("inode {ino}: {where_}: {what}")),
            xattr::DecodeError::ValueInInode => ReadError::Unsupported {
                feature: "ea_inode".into(),
            },
        };
        let mut out = Vec::new();
        let start = 128 + l.extra_isize;
        if let Some(area) = l.raw.get(start..) {
            xattr::decode_in_inode(area, &mut out).map_err(|e| map_err("in-inode xattrs", e))?;
        }
        let blk = self.xattr_block(&l);
        if blk != 0 {
            self.check_range(blk, 1, || format!("inode {ino}: xattr block"))?;
            let mut block = vec![0u8; self.geo.bs as usize];
            self.read_block(blk, &mut block)?;
            if let Some(seed) = self.csum_seed() {
                if !xattr::block_checksum_ok(&block, blk, seed) {
                    return Err(corrupt(format!(
                        "inode {ino}: checksum of xattr block {blk}"
                    )));
                }
            }
            xattr::decode_block(&block, &mut out).map_err(|e| map_err("xattr block", e))?;
        }
        out.sort();
        Ok(out)
    }

    /// The contents of the regular file at `path` (see
    /// [`lookup`](Self::lookup) and [`read_file`](Self::read_file)).
    ///
    /// # Errors
    /// As [`lookup`](Self::lookup) and [`read_file`](Self::read_file).
    pub fn read_path(&mut self, path: &[u8]) -> ReadResult<Vec<u8>> {
        let ino = self.lookup(path)?;
        self.read_file_inner(ino, || lossy(path))
    }

    // ---- Internals ----

    fn read_file_inner(&mut self, ino: u32, name: impl Fn() -> String) -> ReadResult<Vec<u8>> {
        let l = self.load(ino)?;
        if l.kind != InodeKind::File {
            return Err(ReadError::NotAFile { path: name() });
        }
        let size = l.inode.size;
        if size > self.max_read {
            return Err(ReadError::TooLarge {
                size,
                limit: self.max_read,
            });
        }
        // At most the limit; start smaller, the data may be mostly holes.
        let mut out = Vec::with_capacity(size.min(16 << 20) as usize);
        self.copy_data(&l, size, &mut out)?;
        Ok(out)
    }

    /// The metadata_csum seed when checksums are verified.
    fn csum_seed(&self) -> Option<u32> {
        self.geo.seed.filter(|_| self.verify)
    }

    /// The inode's checksum seed when checksums are verified.
    fn inode_seed(&self, l: &Loaded) -> Option<u32> {
        self.csum_seed()
            .map(|s| inode::inode_seed(s, l.ino, l.generation))
    }

    /// The xattr block of an inode (the high half only with `64bit`).
    fn xattr_block(&self, l: &Loaded) -> u64 {
        if self.geo.is64 {
            l.inode.file_acl
        } else {
            l.inode.file_acl & 0xFFFF_FFFF
        }
    }

    /// Whether a symlink keeps its target in `i_block` (the kernel's rule:
    /// no blocks besides an xattr block).
    fn is_fast_symlink(&self, l: &Loaded) -> bool {
        if l.inode.flags & inode::FL_INLINE_DATA != 0 {
            return false;
        }
        let ea = if self.xattr_block(l) != 0 {
            self.geo.bs / 512
        } else {
            0
        };
        l.inode.blocks_512 == ea
    }

    /// Reads `buf.len()` bytes at byte `off` of the storage; bytes past its
    /// end read as zeros.
    fn read_at(&mut self, off: u64, buf: &mut [u8]) -> ReadResult<()> {
        let avail = self.len.saturating_sub(off);
        let n = buf.len().min(usize::try_from(avail).unwrap_or(usize::MAX));
        if n > 0 {
            self.storage.seek(SeekFrom::Start(off))?;
            self.storage.read_exact(&mut buf[..n])?;
        }
        buf[n..].fill(0);
        Ok(())
    }

    /// Reads block `blk` (checked to be in range by the caller) into `buf`
    /// (one block or several consecutive ones).
    fn read_block(&mut self, blk: u64, buf: &mut [u8]) -> ReadResult<()> {
        let off = blk
            .checked_mul(self.geo.bs)
            .ok_or_else(|| corrupt(format!("block {blk} out of range")))?;
        self.read_at(off, buf)
    }

    /// Checks that blocks `blk..blk + len` lie inside the filesystem (and
    /// are not block 0, which a file can never own).
    fn check_range(&self, blk: u64, len: u64, what: impl Fn() -> String) -> ReadResult<()> {
        let end = blk.checked_add(len);
        if blk == 0
            || blk < self.geo.first_data_block
            || end.is_none_or(|e| e > self.geo.blocks_count)
        {
            return Err(corrupt(format!(
                "{}: blocks {blk}+{len} outside the filesystem ({} blocks)",
                what(),
                self.geo.blocks_count
            )));
        }
        Ok(())
    }

    /// The descriptor of group `g`, read (and checksum-verified) on first
    /// use.
    fn group_desc(&mut self, g: u32) -> ReadResult<GroupDesc> {
        if let Some(d) = self.gd_cache.get(&g) {
            return Ok(d.clone());
        }
        let geo = &self.geo;
        let per_block = geo.bs / geo.desc_size as u64;
        let idx = u64::from(g) / per_block;
        let blk = if geo.meta_bg && idx >= u64::from(geo.first_meta_bg) {
            let first = idx * per_block;
            let mut has_super = u64::from(geo.has_super(first));
            if geo.bs == 1024 && idx == 0 && geo.first_data_block == 0 {
                has_super += 1;
            }
            first
                .checked_mul(geo.bpg)
                .and_then(|b| b.checked_add(geo.first_data_block + has_super))
        } else {
            // The block after the superblock's: 2 with 1 KiB blocks, else 1.
            (1024 / geo.bs + 1).checked_add(idx)
        };
        let blk = blk
            .filter(|&b| b < geo.blocks_count)
            .ok_or_else(|| corrupt(format!("descriptor block of group {g} out of range")))?;
        // blk < blocks_count, and blocks_count * bs fits 64 bits.
        let off = blk * geo.bs + (u64::from(g) % per_block) * geo.desc_size as u64;
        let mut raw = vec![0u8; geo.desc_size];
        self.read_at(off, &mut raw)?;
        if self.verify {
            if let Some(kind) = self.geo.gd_csum {
                if group_desc::checksum(&raw, g, kind) != group_desc::stored_checksum(&raw) {
                    return Err(corrupt(format!("checksum of group descriptor {g}")));
                }
            }
        }
        let d = GroupDesc::decode(&raw);
        let itable = self.geo.itable_blocks();
        self.check_range(d.inode_table, itable, || {
            format!("inode table of group {g}")
        })?;
        if self.gd_cache.len() >= GD_CACHE_MAX {
            self.gd_cache.clear();
        }
        self.gd_cache.insert(g, d.clone());
        Ok(d)
    }

    /// Loads inode `ino`: range, group flags, `i_extra_isize`, checksum and
    /// type are checked.
    fn load(&mut self, ino: u32) -> ReadResult<Loaded> {
        if ino == 0 || ino > self.geo.inodes_count {
            return Err(ReadError::InvalidInode { ino });
        }
        let ipg = self.geo.ipg;
        let g = (ino - 1) / ipg;
        let idx = (ino - 1) % ipg;
        let d = self.group_desc(g)?;
        if self.geo.gd_csum.is_some()
            && (d.flags & BG_INODE_UNINIT != 0 || idx >= ipg.saturating_sub(d.itable_unused))
        {
            return Err(ReadError::InvalidInode { ino });
        }
        let isz = self.geo.inode_size;
        // The inode table lies inside the filesystem (checked with the
        // descriptor), whose byte size fits 64 bits.
        let off = d.inode_table * self.geo.bs + u64::from(idx) * isz as u64;
        let mut raw = vec![0u8; isz];
        self.read_at(off, &mut raw)?;
        let extra_isize = usize::from(inode::extra_isize(&raw));
        if 128 + extra_isize > isz || extra_isize % 4 != 0 {
            return Err(corrupt(format!(
                "inode {ino}: i_extra_isize {extra_isize} does not fit a {isz}-byte inode"
            )));
        }
        let generation = inode::generation(&raw);
        if let Some(seed) = self.csum_seed() {
            if !inode::checksum_ok(&raw, inode::inode_seed(seed, ino, generation)) {
                return Err(corrupt(format!("inode {ino}: checksum")));
            }
        }
        let inode = Inode::decode(&raw);
        if inode.mode & 0o170000 == 0 {
            return Err(ReadError::InvalidInode { ino });
        }
        let kind = InodeKind::from_mode(inode.mode)
            .ok_or_else(|| corrupt(format!("inode {ino}: mode {:o}", inode.mode)))?;
        Ok(Loaded {
            ino,
            raw,
            inode,
            kind,
            extra_isize,
            generation,
        })
    }

    /// The block runs of an inode with a block map, checked: in range, no
    /// two overlapping on disk, no more blocks than the filesystem has.
    fn map(&mut self, l: &Loaded) -> ReadResult<Vec<FileExtent>> {
        let ino = l.ino;
        let flags = l.inode.flags;
        if flags & inode::FL_INLINE_DATA != 0 {
            return Err(ReadError::Unsupported {
                feature: "inline_data".into(),
            });
        }
        if flags & inode::FL_ENCRYPT != 0 {
            return Err(ReadError::Unsupported {
                feature: "encrypt".into(),
            });
        }
        let mut out = Vec::new();
        let mut visited = HashSet::new();
        if flags & inode::FL_EXTENTS != 0 {
            let root = l.inode.block;
            let seed = self.inode_seed(l);
            self.walk_extents(ino, &root, None, 0, 1 << 32, seed, &mut visited, &mut out)?;
        } else {
            let nblocks = l.inode.size.div_ceil(self.geo.bs);
            self.walk_indirect(ino, &l.inode.block, nblocks, &mut visited, &mut out)?;
        }
        // Extents are sorted by file block by construction; on disk they
        // must not overlap, and together they cannot exceed the filesystem.
        let mut total: u64 = 0;
        for e in &out {
            total = total.saturating_add(e.len);
        }
        if total > self.geo.blocks_count {
            return Err(corrupt(format!(
                "inode {ino}: maps {total} blocks, more than the filesystem has"
            )));
        }
        if !self.geo.shared_blocks {
            let mut phys: Vec<(u64, u64)> = out.iter().map(|e| (e.physical, e.len)).collect();
            phys.sort_unstable();
            if phys.windows(2).any(|w| w[0].0 + w[0].1 > w[1].0) {
                return Err(corrupt(format!("inode {ino}: extents overlap on disk")));
            }
        }
        Ok(out)
    }

    /// Walks an extent (sub)tree whose node is `node` and whose keys must
    /// lie in `lo..hi`, appending leaf extents to `out`.
    #[allow(clippy::too_many_arguments)]
    fn walk_extents(
        &mut self,
        ino: u32,
        node: &[u8],
        expect_depth: Option<u16>,
        lo: u64,
        hi: u64,
        seed: Option<u32>,
        visited: &mut HashSet<u64>,
        out: &mut Vec<FileExtent>,
    ) -> ReadResult<()> {
        let bad = |what: &str| corrupt(format!("inode {ino}: extent tree: {what}"));
        let is_root = expect_depth.is_none();
        let h = extent::decode_header(node).ok_or_else(|| bad("bad node magic"))?;
        let limit = (node.len() - 12) / 12;
        if usize::from(h.max) > limit || h.entries > h.max {
            return Err(bad("more entries than the node holds"));
        }
        if h.depth > extent::MAX_DEPTH || expect_depth.is_some_and(|d| d != h.depth) {
            return Err(bad("wrong depth"));
        }
        if !is_root {
            if let Some(seed) = seed {
                if !extent::tail_ok(node, h.max, seed) {
                    return Err(bad("block checksum"));
                }
            }
        }
        if h.depth > 0 && h.entries == 0 {
            return Err(bad("empty index node"));
        }
        let (_, entries) = extent::decode_node(node).ok_or_else(|| bad("bad node"))?;
        if h.depth == 0 {
            let mut next = lo;
            for Extent {
                logical,
                len,
                start,
            } in entries
            {
                let (len, initialized) = extent::split_len(len);
                let logical = u64::from(logical);
                let end = logical + u64::from(len);
                if len == 0 || logical < next || end > hi {
                    return Err(bad("extents empty, unsorted or outside their index range"));
                }
                self.check_range(start, u64::from(len), || format!("inode {ino}: extent"))?;
                next = end;
                let e = FileExtent {
                    logical,
                    physical: start,
                    len: u64::from(len),
                    initialized,
                };
                match out.last_mut() {
                    Some(p)
                        if p.initialized == initialized
                            && p.logical + p.len == logical
                            && p.physical + p.len == start =>
                    {
                        p.len += e.len;
                    }
                    _ => out.push(e),
                }
            }
            return Ok(());
        }
        let bs = self.geo.bs as usize;
        let mut child = vec![0u8; bs];
        for (i, e) in entries.iter().enumerate() {
            let key = u64::from(e.logical);
            let next = entries.get(i + 1).map_or(hi, |n| u64::from(n.logical));
            if key < lo || key >= next || next > hi {
                return Err(bad("index keys unsorted or outside their range"));
            }
            self.check_range(e.start, 1, || format!("inode {ino}: extent tree node"))?;
            if !visited.insert(e.start) {
                return Err(bad("a node is referenced twice"));
            }
            self.read_block(e.start, &mut child)?;
            self.walk_extents(
                ino,
                &child,
                Some(h.depth - 1),
                key,
                next,
                seed,
                visited,
                out,
            )?;
        }
        Ok(())
    }

    /// Walks an indirect block map (`i_block`: 12 direct pointers, then
    /// single, double and triple indirect), up to `nblocks` file blocks.
    fn walk_indirect(
        &mut self,
        ino: u32,
        iblock: &[u8; 60],
        nblocks: u64,
        visited: &mut HashSet<u64>,
        out: &mut Vec<FileExtent>,
    ) -> ReadResult<()> {
        let word = |i: usize| {
            u64::from(u32::from_le_bytes([
                iblock[4 * i],
                iblock[4 * i + 1],
                iblock[4 * i + 2],
                iblock[4 * i + 3],
            ]))
        };
        for i in 0..12u64 {
            if i >= nblocks {
                return Ok(());
            }
            self.push_block(ino, i, word(i as usize), out)?;
        }
        let apb = self.geo.bs / 4;
        let mut base = 12u64;
        for level in 1..=3u32 {
            if base >= nblocks {
                break;
            }
            let ptr = word(11 + level as usize);
            if ptr != 0 {
                self.walk_ind_block(ino, ptr, level, base, nblocks, visited, out)?;
            }
            base = base.saturating_add(apb.saturating_pow(level));
        }
        Ok(())
    }

    /// Walks indirect block `blk` of `level` (1: it lists data blocks)
    /// covering file blocks from `base`.
    #[allow(clippy::too_many_arguments)]
    fn walk_ind_block(
        &mut self,
        ino: u32,
        blk: u64,
        level: u32,
        base: u64,
        nblocks: u64,
        visited: &mut HashSet<u64>,
        out: &mut Vec<FileExtent>,
    ) -> ReadResult<()> {
        self.check_range(blk, 1, || format!("inode {ino}: indirect block"))?;
        if !visited.insert(blk) {
            return Err(corrupt(format!(
                "inode {ino}: indirect block {blk} referenced twice"
            )));
        }
        let mut buf = vec![0u8; self.geo.bs as usize];
        self.read_block(blk, &mut buf)?;
        let span = (self.geo.bs / 4).saturating_pow(level - 1);
        for (j, w) in buf.chunks_exact(4).enumerate() {
            let lb = base.saturating_add((j as u64).saturating_mul(span));
            if lb >= nblocks {
                break;
            }
            let ptr = u64::from(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
            if ptr == 0 {
                continue;
            }
            if level == 1 {
                self.push_block(ino, lb, ptr, out)?;
            } else {
                self.walk_ind_block(ino, ptr, level - 1, lb, nblocks, visited, out)?;
            }
        }
        Ok(())
    }

    /// Appends data block `ptr` at file block `lb` (0: a hole), merging
    /// with the previous run when contiguous.
    fn push_block(
        &mut self,
        ino: u32,
        lb: u64,
        ptr: u64,
        out: &mut Vec<FileExtent>,
    ) -> ReadResult<()> {
        if ptr == 0 {
            return Ok(());
        }
        self.check_range(ptr, 1, || format!("inode {ino}: data block"))?;
        match out.last_mut() {
            Some(p) if p.logical + p.len == lb && p.physical + p.len == ptr => p.len += 1,
            _ => out.push(FileExtent {
                logical: lb,
                physical: ptr,
                len: 1,
                initialized: true,
            }),
        }
        Ok(())
    }

    /// Writes the first `size` bytes of the inode's data to `w`: mapped
    /// blocks from the storage, holes and unwritten extents as zeros.
    fn copy_data<W: Write + ?Sized>(&mut self, l: &Loaded, size: u64, w: &mut W) -> ReadResult<()> {
        let runs = self.map(l)?;
        let bs = self.geo.bs;
        let mut pos = 0u64;
        let mut buf = vec![0u8; CHUNK.min(usize::try_from(size).unwrap_or(CHUNK)).max(1)];
        // Runs are sorted, disjoint and inside the filesystem (`map`), whose
        // byte size fits 64 bits, so none of this overflows.
        for r in runs {
            let start = r.logical * bs;
            if start >= size {
                break;
            }
            let gap = start
                .checked_sub(pos)
                .ok_or_else(|| corrupt(format!("inode {}: overlapping extents", l.ino)))?;
            write_zeros(w, gap)?;
            let len = (r.len * bs).min(size - start);
            if r.initialized {
                let mut done = 0u64;
                while done < len {
                    let n = (len - done).min(buf.len() as u64) as usize;
                    let off = r.physical * bs + done;
                    self.read_at(off, &mut buf[..n])?;
                    w.write_all(&buf[..n])?;
                    done += n as u64;
                }
            } else {
                write_zeros(w, len)?;
            }
            pos = start + len;
        }
        write_zeros(w, size - pos)?;
        Ok(())
    }

    /// Finds `name` in directory `l`: through the htree index when there
    /// is a usable one (the leaf its hash selects), else, or when the leaf
    /// does not have it, by scanning every block.
    fn lookup_in(&mut self, l: &Loaded, name: &[u8]) -> ReadResult<Option<u32>> {
        let runs = self.map(l)?;
        let found = Cell::new(None);
        let mut want = |n: &[u8], ino: u32, _: u8| {
            if n == name {
                found.set(Some(ino));
                false
            } else {
                true
            }
        };
        if let Some(leaf) = self.dx_leaf(l, &runs, name)? {
            let mut block = vec![0u8; self.geo.bs as usize];
            if self.dir_block(l, &runs, leaf, &mut block)? {
                self.scan_block(l, leaf, &block, &mut want)?;
                if found.get().is_some() {
                    return Ok(found.get());
                }
            }
        }
        self.scan_runs(l, &runs, &mut want)?;
        Ok(found.get())
    }

    /// The logical leaf block the htree index of directory `l` selects for
    /// `name` (kernel `dx_probe`). `None` when there is no usable index:
    /// not indexed, `dir_index` off, casefolded or encrypted names, an
    /// unknown hash or an impossible index block.
    fn dx_leaf(&mut self, l: &Loaded, runs: &[FileExtent], name: &[u8]) -> ReadResult<Option<u64>> {
        let flags = l.inode.flags;
        if !self.geo.dir_index
            || flags & inode::FL_INDEX == 0
            || flags & (inode::FL_ENCRYPT | inode::FL_CASEFOLD) != 0
        {
            return Ok(None);
        }
        let mut block = vec![0u8; self.geo.bs as usize];
        if !self.dir_block(l, runs, 0, &mut block)? {
            return Ok(None);
        }
        let Some((code, levels)) = dirent::dx_root_info(&block) else {
            return Ok(None);
        };
        if levels > if self.geo.largedir { 2 } else { 1 } {
            return Ok(None);
        }
        let code = if code <= 2 && self.geo.hash_unsigned {
            code + 3
        } else {
            code
        };
        let Some(version) = HashVersion::from_code(code) else {
            return Ok(None);
        };
        let (hash, _) = dx_hash(name, version, &self.geo.hash_seed);
        let mut count_off = dirent::DX_ROOT_COUNT_OFFSET;
        for level in 0..=levels {
            let Some(child) = dirent::dx_pick(&block, count_off, hash) else {
                return Ok(None);
            };
            let child = u64::from(child);
            if level == levels {
                return Ok(Some(child));
            }
            if !self.dir_block(l, runs, child, &mut block)? {
                return Ok(None);
            }
            count_off = dirent::DX_NODE_COUNT_OFFSET;
        }
        Ok(None)
    }

    /// Reads logical block `lblk` of directory `l` (mapped by `runs`) into
    /// `buf`; false if it is past the end, a hole or unwritten.
    fn dir_block(
        &mut self,
        l: &Loaded,
        runs: &[FileExtent],
        lblk: u64,
        buf: &mut [u8],
    ) -> ReadResult<bool> {
        if lblk >= l.inode.size.div_ceil(self.geo.bs) {
            return Ok(false);
        }
        let i = runs.partition_point(|r| r.logical + r.len <= lblk);
        match runs.get(i) {
            Some(r) if r.logical <= lblk && r.initialized => {
                self.read_block(r.physical + (lblk - r.logical), buf)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Calls `f(name, ino, file_type)` for every used record of the
    /// directory (`.` and `..` included) until it returns false.
    fn scan_dir(
        &mut self,
        l: &Loaded,
        mut f: impl FnMut(&[u8], u32, u8) -> bool,
    ) -> ReadResult<()> {
        let runs = self.map(l)?;
        self.scan_runs(l, &runs, &mut f)
    }

    /// [`scan_dir`](Self::scan_dir) over the directory's block runs.
    fn scan_runs(
        &mut self,
        l: &Loaded,
        runs: &[FileExtent],
        f: &mut impl FnMut(&[u8], u32, u8) -> bool,
    ) -> ReadResult<()> {
        let nblocks = l.inode.size.div_ceil(self.geo.bs);
        let mut block = vec![0u8; self.geo.bs as usize];
        for r in runs {
            for k in 0..r.len {
                let lblk = r.logical + k;
                if lblk >= nblocks {
                    return Ok(());
                }
                if !r.initialized {
                    return Err(corrupt(format!(
                        "directory inode {}: unwritten block {lblk}",
                        l.ino
                    )));
                }
                self.read_block(r.physical + k, &mut block)?;
                if !self.scan_block(l, lblk, &block, f)? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Calls `f` for every used record of directory block `lblk` (read into
    /// `block`), after checking its checksum tail; returns false when `f`
    /// asked to stop.
    fn scan_block(
        &self,
        l: &Loaded,
        lblk: u64,
        block: &[u8],
        f: &mut impl FnMut(&[u8], u32, u8) -> bool,
    ) -> ReadResult<bool> {
        let ino = l.ino;
        let bs = block.len();
        let indexed = l.inode.flags & inode::FL_INDEX != 0;
        let end = match self.inode_seed(l) {
            Some(seed) if dirent::has_tail(block) => {
                if !dirent::tail_ok(block, seed) {
                    return Err(corrupt(format!(
                        "directory inode {ino}: checksum of block {lblk}"
                    )));
                }
                bs - 12
            }
            Some(_) if !(indexed && (lblk == 0 || dirent::is_dx_node(block, bs))) => {
                return Err(corrupt(format!(
                    "directory inode {ino}: block {lblk} has no checksum tail"
                )));
            }
            _ => bs,
        };
        for rec in dirent::records(&block[..end], bs, self.geo.filetype) {
            let rec = rec
                .map_err(|what| corrupt(format!("directory inode {ino}, block {lblk}: {what}")))?;
            if rec.ino == 0 {
                continue;
            }
            if rec.ino > self.geo.inodes_count {
                return Err(corrupt(format!(
                    "directory inode {ino}, block {lblk}: entry names inode {}",
                    rec.ino
                )));
            }
            if !f(rec.name, rec.ino, rec.ftype) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Writes `n` zero bytes.
fn write_zeros<W: Write + ?Sized>(w: &mut W, mut n: u64) -> io::Result<()> {
    static ZEROS: [u8; 65536] = [0; 65536];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        w.write_all(&ZEROS[..k])?;
        n -= k as u64;
    }
    Ok(())
}

/// Validates the superblock and derives the geometry and the public info.
fn validate(s: &Superblock, x: &sb::ReadFields, raw: &[u8]) -> ReadResult<(Geo, FsInfo)> {
    if x.rev_level > 1 {
        return Err(ReadError::Unsupported {
            feature: format!("superblock revision {}", x.rev_level),
        });
    }
    let incompat = s.feature_incompat;
    let ro = s.feature_ro_compat;
    let readable = sb::INCOMPAT_FILETYPE
        | sb::INCOMPAT_RECOVER
        | sb::INCOMPAT_META_BG
        | sb::INCOMPAT_EXTENTS
        | sb::INCOMPAT_64BIT
        | sb::INCOMPAT_MMP
        | sb::INCOMPAT_FLEX_BG
        | sb::INCOMPAT_EA_INODE
        | sb::INCOMPAT_CSUM_SEED
        | sb::INCOMPAT_LARGEDIR
        | sb::INCOMPAT_INLINE_DATA
        | sb::INCOMPAT_ENCRYPT
        | sb::INCOMPAT_CASEFOLD;
    let unknown = incompat & !readable;
    if unknown != 0 {
        let bit = 1 << unknown.trailing_zeros();
        return Err(ReadError::Unsupported {
            feature: sb::feature_name(sb::FeatureWord::Incompat, bit),
        });
    }
    let metadata_csum = ro & sb::RO_COMPAT_METADATA_CSUM != 0;
    if metadata_csum {
        if s.checksum_type != 1 {
            return Err(corrupt(format!(
                "superblock checksum type {} (only crc32c exists)",
                s.checksum_type
            )));
        }
        if !sb::checksum_ok(raw) {
            return Err(corrupt("superblock checksum"));
        }
    }
    if s.log_block_size > 6 {
        return Err(corrupt(format!(
            "block size 2^{} KiB (at most 64 KiB)",
            s.log_block_size
        )));
    }
    let bs = 1024u64 << s.log_block_size;
    let bad = |what: String| Err(corrupt(what));
    let is64 = incompat & sb::INCOMPAT_64BIT != 0;
    let desc_size = if is64 { usize::from(s.desc_size) } else { 32 };
    if is64 && (!(64..=1024).contains(&desc_size) || !desc_size.is_power_of_two()) {
        return bad(format!("group descriptor size {desc_size}"));
    }
    let inode_size = if x.rev_level == 0 {
        128
    } else {
        usize::from(s.inode_size)
    };
    if inode_size < 128 || !inode_size.is_power_of_two() || inode_size as u64 > bs {
        return bad(format!("inode size {inode_size}"));
    }
    if s.blocks_count.checked_mul(bs).is_none() {
        return bad(format!("{} blocks of {bs} bytes", s.blocks_count));
    }
    let first_data_block = u64::from(s.first_data_block);
    if s.blocks_count <= first_data_block {
        return bad(format!(
            "{} blocks, first data block {first_data_block}",
            s.blocks_count
        ));
    }
    let bigalloc = ro & 0x200 != 0;
    let bpg = u64::from(s.blocks_per_group);
    let max_bpg = if bigalloc { bs * 8 * 65536 } else { bs * 8 };
    if bpg < 8 || bpg > max_bpg {
        return bad(format!("{bpg} blocks per group"));
    }
    let ipg = s.inodes_per_group;
    if ipg == 0 || u64::from(ipg) > bs * 8 {
        return bad(format!("{ipg} inodes per group"));
    }
    let groups = (s.blocks_count - first_data_block).div_ceil(bpg);
    if groups.checked_mul(u64::from(ipg)) != Some(u64::from(s.inodes_count)) {
        return bad(format!(
            "{} inodes, but {groups} groups of {ipg}",
            s.inodes_count
        ));
    }
    // inodes_count fits 32 bits and ipg >= 1, so groups does too.
    let groups = groups as u32;
    if s.inodes_count < ROOT_INO {
        return bad("no root inode".into());
    }
    let seed = metadata_csum.then(|| {
        if incompat & sb::INCOMPAT_CSUM_SEED != 0 {
            x.checksum_seed
        } else {
            csum_seed(&s.uuid)
        }
    });
    let gd_csum = if metadata_csum {
        seed.map(GdtCsum::Crc32c)
    } else if ro & sb::RO_COMPAT_GDT_CSUM != 0 {
        Some(GdtCsum::Crc16(s.uuid))
    } else {
        None
    };
    let geo = Geo {
        bs,
        blocks_count: s.blocks_count,
        first_data_block,
        bpg,
        ipg,
        inodes_count: s.inodes_count,
        inode_size,
        desc_size,
        meta_bg: incompat & sb::INCOMPAT_META_BG != 0,
        first_meta_bg: x.first_meta_bg,
        sparse_super: ro & sb::RO_COMPAT_SPARSE_SUPER != 0,
        filetype: incompat & sb::INCOMPAT_FILETYPE != 0,
        is64,
        huge_file: ro & sb::RO_COMPAT_HUGE_FILE != 0,
        shared_blocks: ro & sb::RO_COMPAT_SHARED_BLOCKS != 0,
        dir_index: s.feature_compat & sb::COMPAT_DIR_INDEX != 0,
        largedir: incompat & sb::INCOMPAT_LARGEDIR != 0,
        hash_unsigned: s.flags & 0x2 != 0,
        hash_seed: [0, 4, 8, 12].map(|i| {
            u32::from_le_bytes([
                s.hash_seed[i],
                s.hash_seed[i + 1],
                s.hash_seed[i + 2],
                s.hash_seed[i + 3],
            ])
        }),
        gd_csum,
        seed,
    };
    let trim = |b: &[u8]| {
        let n = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        b[..n].to_vec()
    };
    let profile = if is64 && metadata_csum {
        Some(Profile::Default)
    } else if !is64 && !metadata_csum && ro & sb::RO_COMPAT_GDT_CSUM != 0 {
        Some(Profile::PvGrub)
    } else {
        None
    };
    let info = FsInfo {
        block_size: bs as u32,
        blocks_count: s.blocks_count,
        free_blocks_count: s.free_blocks_count,
        reserved_blocks_count: s.r_blocks_count,
        inodes_count: s.inodes_count,
        free_inodes_count: s.free_inodes_count,
        first_data_block,
        blocks_per_group: bpg,
        inodes_per_group: ipg,
        groups,
        inode_size: inode_size as u16,
        first_ino: x.first_ino,
        uuid: s.uuid,
        label: trim(&s.volume_name),
        last_mounted: trim(&x.last_mounted),
        hash_seed: s.hash_seed,
        default_hash_version: s.def_hash_version,
        features: sb::feature_names(s.feature_compat, incompat, ro),
        feature_compat: s.feature_compat,
        feature_incompat: incompat,
        feature_ro_compat: ro,
        profile,
        journal_inum: if s.feature_compat & sb::COMPAT_HAS_JOURNAL != 0 {
            s.journal_inum
        } else {
            0
        },
        clean: x.state == 1,
        needs_recovery: incompat & sb::INCOMPAT_RECOVER != 0,
        mkfs_time: x.mkfs_time,
        write_time: s.time,
        mount_time: x.mount_time,
    };
    Ok((geo, info))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn xattrs_round_trip_through_the_writers_encoding() {
        // user::rw-, user:1000:rwx, group::r--, group:50:r-x, mask::rwx,
        // other::r-- in the VFS format, ids of *_OBJ/MASK/OTHER undefined.
        let mut acl = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (1u16, 6u16, u32::MAX),
            (2, 7, 1000),
            (4, 4, u32::MAX),
            (8, 5, 50),
            (0x10, 7, u32::MAX),
            (0x20, 4, u32::MAX),
        ] {
            acl.extend_from_slice(&tag.to_le_bytes());
            acl.extend_from_slice(&perm.to_le_bytes());
            acl.extend_from_slice(&id.to_le_bytes());
        }
        let map: BTreeMap<Box<[u8]>, Box<[u8]>> = [
            (&b"system.posix_acl_access"[..], acl.clone()),
            (b"user.a", b"1".to_vec()),
            (b"user.empty", Vec::new()),
            (b"security.capability", vec![1; 20]),
            (b"trusted.t", b"xyz".to_vec()),
            (b"system.nfs4_acl", vec![9; 40]),
        ]
        .into_iter()
        .map(|(n, v)| (Box::from(n), v.into_boxed_slice()))
        .collect();
        let entries = xattr::prepare(&map).unwrap();
        let expected: Vec<(Vec<u8>, Vec<u8>)> =
            map.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
        for k in 0..=entries.len() {
            let mut area = vec![0u8; 96];
            let mut block = vec![0u8; 1024];
            let (inode_part, block_part) = entries.split_at(k);
            if xattr::inode_bytes_needed(inode_part) > area.len() {
                continue;
            }
            xattr::encode_in_inode(inode_part, &mut area);
            xattr::encode_block(block_part, &mut block, 77, Some(5));
            assert!(xattr::block_checksum_ok(&block, 77, 5));
            assert!(!xattr::block_checksum_ok(&block, 78, 5));
            let mut got = Vec::new();
            xattr::decode_in_inode(&area, &mut got).unwrap();
            xattr::decode_block(&block, &mut got).unwrap();
            got.sort();
            assert_eq!(got, expected, "{k} entries in the inode");
        }
        // A value running past the area is corrupt, not a panic.
        let mut block = vec![0u8; 1024];
        xattr::encode_block(&entries, &mut block, 1, None);
        block[32 + 8] = 0xFF; // e_value_size of the first entry
        let mut got = Vec::new();
        assert!(matches!(
            xattr::decode_block(&block, &mut got),
            Err(xattr::DecodeError::Corrupt(_))
        ));
    }

    #[test]
    fn directory_records_are_validated() {
        let entries = [dirent::Entry {
            name: b"file",
            ino: 12,
            ftype: 1,
        }];
        let ctx = dirent::DirCtx {
            block_size: 1024,
            csum: Some(3),
            self_ino: 2,
            parent_ino: 2,
            hash_version: 1,
            min_blocks: 1,
        };
        let (block, indexed) = dirent::encode(&entries, &ctx, &|_| (0, 0)).unwrap();
        assert!(!indexed);
        assert!(dirent::has_tail(&block) && dirent::tail_ok(&block, 3));
        let recs: Vec<_> = dirent::records(&block[..1012], 1024, true)
            .map(|r| r.unwrap())
            .map(|r| (r.name.to_vec(), r.ino, r.ftype))
            .collect();
        assert_eq!(
            recs,
            [
                (b".".to_vec(), 2, 2),
                (b"..".to_vec(), 2, 2),
                (b"file".to_vec(), 12, 1)
            ]
        );
        // rec_len 0, 13 and past the end, and a name longer than its record.
        for (off, v) in [(4, 0u8), (4, 13), (5, 0x10), (6, 200)] {
            let mut b = block.clone();
            b[off] = v;
            let res: Result<Vec<_>, _> = dirent::records(&b[..1012], 1024, true).collect();
            assert!(res.is_err(), "byte {off} = {v}");
        }
        // 64 KiB blocks store rec_len 65536 as 0 or 65535.
        assert_eq!(dirent::rec_len_from_disk(0, 65536), 65536);
        assert_eq!(dirent::rec_len_from_disk(0xFFFF, 65536), 65536);
        assert_eq!(dirent::rec_len_from_disk(12, 65536), 12);
        assert_eq!(dirent::rec_len_from_disk(0, 4096), 0);
    }

    #[test]
    fn device_numbers_decode_both_encodings() {
        let mut b = [0u8; 60];
        b[..4].copy_from_slice(&((8u32 << 8) | 3).to_le_bytes());
        assert_eq!(inode::decode_device(&b), (8, 3));
        let (major, minor) = (4095u32, 1_048_575u32);
        let new = (minor & 0xFF) | (major << 8) | ((minor & !0xFF) << 12);
        let mut b = [0u8; 60];
        b[4..8].copy_from_slice(&new.to_le_bytes());
        assert_eq!(inode::decode_device(&b), (major, minor));
    }

    #[test]
    fn inode_checksum_matches_the_writer() {
        let mut raw = vec![0u8; 256];
        Inode {
            mode: 0o100644,
            links_count: 1,
            ..Inode::default()
        }
        .encode(&mut raw);
        inode::set_checksum(&mut raw, 99);
        assert!(inode::checksum_ok(&raw, 99));
        assert!(!inode::checksum_ok(&raw, 98));
        raw[0x10] ^= 1;
        assert!(!inode::checksum_ok(&raw, 99));
        assert!(inode::checksum_ok(&[0; 256], 99));
    }

    #[test]
    fn group_descriptor_checksum_matches_the_writer() {
        let d = GroupDesc {
            block_bitmap: 5,
            inode_table: 9,
            free_inodes_count: 3,
            ..GroupDesc::default()
        };
        for (size, csum) in [(64, GdtCsum::Crc32c(7)), (32, GdtCsum::Crc16([3; 16]))] {
            let mut b = vec![0u8; size];
            d.encode(&mut b, 4, csum);
            assert_eq!(
                group_desc::checksum(&b, 4, csum),
                group_desc::stored_checksum(&b)
            );
            assert_ne!(
                group_desc::checksum(&b, 5, csum),
                group_desc::stored_checksum(&b)
            );
        }
    }

    #[test]
    fn feature_names_follow_e2fsprogs() {
        assert_eq!(
            sb::feature_names(0x3C, 0x2C2, 0x46B),
            [
                "has_journal",
                "ext_attr",
                "resize_inode",
                "dir_index",
                "filetype",
                "extent",
                "64bit",
                "flex_bg",
                "sparse_super",
                "large_file",
                "huge_file",
                "dir_nlink",
                "extra_isize",
                "metadata_csum"
            ]
        );
        assert_eq!(
            sb::feature_names(1 << 20, 0, 1 << 31),
            ["FEATURE_C20", "FEATURE_R31"]
        );
    }
}
