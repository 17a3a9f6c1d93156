//! Block group descriptors (kernel docs, ext4 "Block Group Descriptors"):
//! 32 bytes each without the `64bit` feature, 64 bytes with it, packed into
//! the group descriptor table right after the superblock's block.
//!
//! `bg_checksum` (offset 0x1E) is, with `metadata_csum`, the low 16 bits of
//! crc32c(fs seed, le32 group number, descriptor with the checksum zeroed);
//! with `gdt_csum`/`uninit_bg` it is the CRC-16 of UUID, le32 group and the
//! descriptor bytes around the checksum field (see [`crate::checksum`]).

use super::le::{get16, get32, put16, put32};
use crate::checksum::{crc16, crc32c};

/// Inode table and bitmap are not initialised (no inode in use).
pub(crate) const BG_INODE_UNINIT: u16 = 0x1;
/// The inode table is zeroed (no lazy init needed at mount).
pub(crate) const BG_INODE_ZEROED: u16 = 0x4;

/// How group descriptor checksums are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GdtCsum {
    /// `metadata_csum`: crc32c seeded with the filesystem seed.
    Crc32c(u32),
    /// `uninit_bg`: CRC-16 over the UUID first.
    Crc16([u8; 16]),
}

/// One group descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct GroupDesc {
    pub block_bitmap: u64,      // 0x00 lo, 0x20 hi
    pub inode_bitmap: u64,      // 0x04 lo, 0x24 hi
    pub inode_table: u64,       // 0x08 lo, 0x28 hi
    pub free_blocks_count: u32, // 0x0C lo, 0x2C hi
    pub free_inodes_count: u32, // 0x0E lo, 0x2E hi
    pub used_dirs_count: u32,   // 0x10 lo, 0x30 hi
    pub flags: u16,             // 0x12
    pub block_bitmap_csum: u32, // 0x18 lo, 0x38 hi
    pub inode_bitmap_csum: u32, // 0x1A lo, 0x3A hi
    pub itable_unused: u32,     // 0x1C lo, 0x32 hi
}

impl GroupDesc {
    /// Encodes into `out` (`desc_size` bytes: 32 or 64) and sets the
    /// checksum for group `group`.
    pub(crate) fn encode(&self, out: &mut [u8], group: u32, csum: GdtCsum) {
        let size = out.len();
        out.fill(0);
        put32(out, 0x00, self.block_bitmap as u32);
        put32(out, 0x04, self.inode_bitmap as u32);
        put32(out, 0x08, self.inode_table as u32);
        put16(out, 0x0C, self.free_blocks_count as u16);
        put16(out, 0x0E, self.free_inodes_count as u16);
        put16(out, 0x10, self.used_dirs_count as u16);
        put16(out, 0x12, self.flags);
        put16(out, 0x18, self.block_bitmap_csum as u16);
        put16(out, 0x1A, self.inode_bitmap_csum as u16);
        put16(out, 0x1C, self.itable_unused as u16);
        if size >= 64 {
            put32(out, 0x20, (self.block_bitmap >> 32) as u32);
            put32(out, 0x24, (self.inode_bitmap >> 32) as u32);
            put32(out, 0x28, (self.inode_table >> 32) as u32);
            put16(out, 0x2C, (self.free_blocks_count >> 16) as u16);
            put16(out, 0x2E, (self.free_inodes_count >> 16) as u16);
            put16(out, 0x30, (self.used_dirs_count >> 16) as u16);
            put16(out, 0x32, (self.itable_unused >> 16) as u16);
            put16(out, 0x38, (self.block_bitmap_csum >> 16) as u16);
            put16(out, 0x3A, (self.inode_bitmap_csum >> 16) as u16);
        }
        let le_group = group.to_le_bytes();
        let c = match csum {
            GdtCsum::Crc32c(seed) => {
                let c = crc32c(seed, &le_group);
                (crc32c(c, out) & 0xFFFF) as u16
            }
            GdtCsum::Crc16(uuid) => {
                let c = crc16(0xFFFF, &uuid);
                let c = crc16(c, &le_group);
                let c = crc16(c, &out[..0x1E]);
                crc16(c, &out[0x20..])
            }
        };
        put16(out, 0x1E, c);
    }

    /// Decodes a descriptor of `bytes.len()` (32 or 64) bytes.
    pub(crate) fn decode(b: &[u8]) -> Self {
        let wide = b.len() >= 64;
        let w32 = |lo: usize, hi: usize| {
            u64::from(get32(b, lo))
                | if wide {
                    u64::from(get32(b, hi)) << 32
                } else {
                    0
                }
        };
        let w16 = |lo: usize, hi: usize| {
            u32::from(get16(b, lo))
                | if wide {
                    u32::from(get16(b, hi)) << 16
                } else {
                    0
                }
        };
        GroupDesc {
            block_bitmap: w32(0x00, 0x20),
            inode_bitmap: w32(0x04, 0x24),
            inode_table: w32(0x08, 0x28),
            free_blocks_count: w16(0x0C, 0x2C),
            free_inodes_count: w16(0x0E, 0x2E),
            used_dirs_count: w16(0x10, 0x30),
            flags: get16(b, 0x12),
            block_bitmap_csum: w16(0x18, 0x38),
            inode_bitmap_csum: w16(0x1A, 0x3A),
            itable_unused: w16(0x1C, 0x32),
        }
    }
}

// ---- Reading (used by `crate::reader`) ----

/// The checksum [`GroupDesc::encode`] would store for the encoded
/// descriptor `b` (`desc_size` bytes) of group `group`; the bytes of the
/// checksum field itself are ignored.
pub(crate) fn checksum(b: &[u8], group: u32, csum: GdtCsum) -> u16 {
    let le_group = group.to_le_bytes();
    let (before, rest) = b.split_at(0x1E.min(b.len()));
    let after = rest.get(2..).unwrap_or(&[]);
    match csum {
        GdtCsum::Crc32c(seed) => {
            let c = crc32c(seed, &le_group);
            let c = crc32c(c, before);
            let c = crc32c(c, &[0, 0]);
            (crc32c(c, after) & 0xFFFF) as u16
        }
        GdtCsum::Crc16(uuid) => {
            let c = crc16(0xFFFF, &uuid);
            let c = crc16(c, &le_group);
            let c = crc16(c, before);
            crc16(c, after)
        }
    }
}

/// The checksum stored in the encoded descriptor `b` (`bg_checksum`).
pub(crate) fn stored_checksum(b: &[u8]) -> u16 {
    get16(b, 0x1E)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_both_sizes() {
        let d = GroupDesc {
            block_bitmap: 0x1_0000_0010,
            inode_bitmap: 20,
            inode_table: 30,
            free_blocks_count: 70000,
            free_inodes_count: 12,
            used_dirs_count: 3,
            flags: BG_INODE_ZEROED,
            block_bitmap_csum: 0xDEAD_BEEF,
            inode_bitmap_csum: 0x1234_5678,
            itable_unused: 9,
        };
        let mut b = [0u8; 64];
        d.encode(&mut b, 5, GdtCsum::Crc32c(1));
        assert_eq!(GroupDesc::decode(&b), d);
        let mut s = [0u8; 32];
        let small = GroupDesc {
            block_bitmap: 16,
            free_blocks_count: 700,
            block_bitmap_csum: 0,
            inode_bitmap_csum: 0,
            ..d.clone()
        };
        small.encode(&mut s, 5, GdtCsum::Crc16([0; 16]));
        assert_eq!(GroupDesc::decode(&s), small);
    }
}
