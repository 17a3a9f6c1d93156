//! Writes a complete ext4 filesystem image from an in-memory
//! [`ami_core::Tree`], without root, loop devices or `mkfs`.
//!
//! The API follows the `fatfs` crate: [`FormatOptions`] is a builder with
//! documented defaults, [`format()`] writes to any `Write + Seek` storage (a
//! file, a `Cursor<Vec<u8>>`, a window of a disk image) starting at its
//! offset 0, and returns a [`Report`] with the geometry and a [`BlockMap`]
//! of the blocks in use, for sparse uploads later.
//!
//! # Example
//!
//! ```
//! use std::io::Cursor;
//! use ami_core::{progress::NoProgress, FileData, Metadata, Node, Tree};
//! use ami_ext4::{format, FormatOptions, Size};
//!
//! let mut tree = Tree::new(Metadata::new(0o755));
//! let etc = tree.create_dir_all(b"/etc", Metadata::new(0o755))?;
//! tree.add(etc, b"hostname", Node::file(FileData::from_bytes(b"ami\n".to_vec()), Metadata::new(0o644)))?;
//!
//! let options = FormatOptions::new().label("rootfs").size(Size::Bytes(16 << 20));
//! let mut image = Cursor::new(Vec::new());
//! let report = format(&mut image, &tree, &options, &NoProgress)?;
//! assert_eq!(report.size_bytes(), 16 << 20);
//! assert_eq!(&image.get_ref()[0x438..0x43A], &[0x53, 0xEF]); // the ext4 magic
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What it writes
//!
//! Two feature profiles ([`Profile`]): Debian 12's `mke2fs -t ext4`
//! defaults for HVM/UEFI roots, and a PV-GRUB-safe one (no `64bit`,
//! `uninit_bg` CRC-16 instead of `metadata_csum`). Features GRUB cannot
//! read (`metadata_csum_seed`, `large_dir`, `inline_data`, `casefold`, ...)
//! are never used. Every image has an empty jbd2 journal, the resize inode
//! (room for 1024x online growth), `lost+found`, extents (trees of any
//! depth), linear or hash-indexed directories, in-inode and block xattrs
//! (POSIX ACLs converted to ext4's format), nanosecond times with the
//! post-2038 epoch bits, and all checksums. Sparse files keep their holes,
//! except that block 0 of a non-empty file is always allocated (GRUB 2.06
//! cannot read a file that starts with a hole).
//!
//! # Why it is written by hand
//!
//! No crate writes ext4 with journal, resize inode and checksums from a
//! tree; `mke2fs -d` needs the files on disk, loses nanoseconds and
//! post-2038 dates, and builds directories in quadratic time. This writer
//! plans every inode, directory and extent first, then writes each block
//! once, streaming file contents from their source; memory grows with the
//! number of entries, not with their size. The same tree and options give
//! byte-identical images: UUID, hash seed and times come from the options.
#![deny(missing_docs)]

pub mod checksum;
pub mod disk;
mod error;
mod layout;
mod ondisk;
mod options;
pub mod reader;
mod writer;

use std::io::{Seek, Write};
use std::ops::Range;

use ami_core::progress::Progress;
use ami_core::Tree;

pub use error::{Error, Result};
pub use options::{FormatOptions, Inodes, Profile, Size};
pub use reader::{Ext4Reader, FileExtent, FsInfo, InodeInfo, InodeKind, ReadError, ReadResult};

/// Runs of filesystem blocks, sorted and disjoint.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlockMap {
    /// Block size in bytes.
    pub block_size: u32,
    /// Half-open block ranges.
    pub runs: Vec<Range<u64>>,
}

/// What [`format()`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Block size in bytes.
    pub block_size: u32,
    /// Filesystem size in blocks.
    pub blocks_count: u64,
    /// Blocks in use (metadata, directories, file data, journal).
    pub used_blocks: u64,
    /// Total number of inodes.
    pub inodes_count: u64,
    /// Inodes in use (including the reserved ones, 1-11).
    pub used_inodes: u64,
    /// The filesystem UUID.
    pub uuid: [u8; 16],
    /// Every block the filesystem marks as in use.
    pub allocated: BlockMap,
    /// The blocks that hold something other than zeros the writer knows of
    /// (allocated minus the zero-filled journal and unused table space).
    pub written: BlockMap,
}

impl Report {
    /// Filesystem size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.blocks_count * u64::from(self.block_size)
    }
}

/// Writes `tree` as an ext4 filesystem at offset 0 of `storage`.
///
/// # Errors
/// See [`Error`].
pub fn format<S: Write + Seek>(
    storage: &mut S,
    tree: &Tree,
    options: &FormatOptions,
    progress: &dyn Progress,
) -> Result<Report> {
    writer::format(storage, tree, options, progress)
}

/// The smallest filesystem size in bytes that holds `tree` with `options`
/// (ignoring any [`Size`] set in them).
///
/// # Errors
/// Invalid options or a tree ext4 cannot hold.
pub fn required_size(tree: &Tree, options: &FormatOptions) -> Result<u64> {
    writer::required_size(tree, options)
}
