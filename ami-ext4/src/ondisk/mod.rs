//! ext4 on-disk structures, one per module, each with its encoder (and,
//! where the reader needs it, its decoder). Field names follow the kernel's
//! "ext4 Data Structures and Algorithms" documentation
//! (Documentation/filesystems/ext4/ in the Linux tree), which is the spec
//! every module refers to.

pub(crate) mod dirent;
pub(crate) mod dx_hash;
pub(crate) mod extent;
pub(crate) mod group_desc;
pub(crate) mod inode;
pub(crate) mod journal;
pub(crate) mod superblock;
pub(crate) mod xattr;

/// Little-endian field helpers shared by the encoders and decoders.
pub(crate) mod le {
    /// Writes a u16 at `off`.
    pub(crate) fn put16(b: &mut [u8], off: usize, v: u16) {
        b[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }
    /// Writes a u32 at `off`.
    pub(crate) fn put32(b: &mut [u8], off: usize, v: u32) {
        b[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }
    /// Writes a u64 at `off`.
    pub(crate) fn put64(b: &mut [u8], off: usize, v: u64) {
        b[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }
    /// Reads a u16 at `off`.
    pub(crate) fn get16(b: &[u8], off: usize) -> u16 {
        u16::from_le_bytes([b[off], b[off + 1]])
    }
    /// Reads a u32 at `off`.
    pub(crate) fn get32(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
    }
}
