//! Writes a complete ext4 filesystem image from an in-memory
//! [`ami_core::Tree`], without root, loop devices or `mkfs`.
//!
//! (Being written.)
#![deny(missing_docs)]

pub mod checksum;
mod error;
mod layout;
mod ondisk;
mod options;
mod writer;

use std::io::{Seek, Write};
use std::ops::Range;

use ami_core::progress::Progress;
use ami_core::Tree;

pub use error::{Error, Result};
pub use options::{FormatOptions, Inodes, Profile, Size};

/// Runs of filesystem blocks, sorted and disjoint.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlockMap {
    /// Block size in bytes.
    pub block_size: u32,
    /// Half-open block ranges.
    pub runs: Vec<Range<u64>>,
}

/// What [`format`] wrote.
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
