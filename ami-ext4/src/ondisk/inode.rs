//! Inodes (kernel docs, ext4 "Index Nodes"): a 128-byte base plus
//! `i_extra_isize` (32) bytes of extended fields, in an inode of
//! `s_inode_size` bytes whose tail holds in-inode extended attributes.
//!
//! Times: the low 32 bits of the seconds go in `i_[acm]time`/`i_crtime`, and
//! each `*_extra` field holds `(nanoseconds << 2) | epoch`, where the 2 epoch
//! bits extend the sign-extended low word: seconds = (i32)lo + epoch * 2^32.
//! That covers 1901-12-13 to 2446-05-10.
//!
//! Checksum (`metadata_csum`): crc32c(fs seed, le32 inode number, le32
//! i_generation, the whole inode with `l_i_checksum_lo` (0x7C) and
//! `i_checksum_hi` (0x82) zeroed); the low half goes in 0x7C, the high half
//! in 0x82.

use super::le::{get16, get32, put16, put32};
use crate::checksum::crc32c;

/// Size of the base inode plus the extra fields this writer uses.
pub(crate) const EXTRA_ISIZE: u16 = 32;
/// Offset of the in-inode xattr area (after the extra fields).
pub(crate) const XATTR_OFFSET: usize = 128 + EXTRA_ISIZE as usize;

/// `EXT4_INDEX_FL`: the directory is hash-indexed.
pub(crate) const FL_INDEX: u32 = 0x1000;
/// `EXT4_EXTENTS_FL`: `i_block` holds an extent tree.
pub(crate) const FL_EXTENTS: u32 = 0x80000;

/// Smallest and largest seconds an inode can store.
pub(crate) const MIN_TIME: i64 = -(1 << 31);
/// See [`MIN_TIME`]. The encoding reaches 2446, but e2fsck (1.47) takes
/// epoch 3 with the low word's top bit set (2310-04-04 onwards) for the old
/// kernel's pre-1970 bug and would rewrite such times, so they stop before.
pub(crate) const MAX_TIME: i64 = (1 << 33) + (1 << 31) - 1;

/// Encodes seconds and nanoseconds as (low word, extra word). The caller
/// checks the range first ([`MIN_TIME`]..=[`MAX_TIME`]).
pub(crate) fn encode_time(secs: i64, nanos: u32) -> (u32, u32) {
    let lo = secs as u32;
    let epoch = ((secs - i64::from(lo as i32)) >> 32) as u32 & 3;
    (lo, (nanos.min(999_999_999) << 2) | epoch)
}

/// Decodes (low word, extra word) back to seconds and nanoseconds.
pub(crate) fn decode_time(lo: u32, extra: u32) -> (i64, u32) {
    (
        i64::from(lo as i32) + (i64::from(extra & 3) << 32),
        extra >> 2,
    )
}

/// An inode's fields as this writer sets them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Inode {
    pub mode: u16,          // 0x00
    pub uid: u32,           // 0x02 lo, 0x78 hi
    pub size: u64,          // 0x04 lo, 0x6C hi
    pub atime: (i64, u32),  // 0x08, extra 0x8C
    pub ctime: (i64, u32),  // 0x0C, extra 0x84
    pub mtime: (i64, u32),  // 0x10, extra 0x88
    pub crtime: (i64, u32), // 0x90, extra 0x94
    pub gid: u32,           // 0x18 lo, 0x7A hi
    pub links_count: u16,   // 0x1A
    pub blocks_512: u64,    // 0x1C lo, 0x74 hi (48 bits of 512-byte units)
    pub flags: u32,         // 0x20
    pub block: [u8; 60],    // 0x28 i_block
    pub file_acl: u64,      // 0x68 lo, 0x76 hi
}

impl Default for Inode {
    fn default() -> Self {
        Inode {
            mode: 0,
            uid: 0,
            size: 0,
            atime: (0, 0),
            ctime: (0, 0),
            mtime: (0, 0),
            crtime: (0, 0),
            gid: 0,
            links_count: 0,
            blocks_512: 0,
            flags: 0,
            block: [0; 60],
            file_acl: 0,
        }
    }
}

impl Inode {
    /// Encodes into `out` (the whole on-disk inode, `s_inode_size` bytes).
    /// The in-inode xattr area past [`XATTR_OFFSET`] is left untouched so
    /// the caller can fill it first; call [`set_checksum`] last.
    pub(crate) fn encode(&self, out: &mut [u8]) {
        out[..XATTR_OFFSET].fill(0);
        put16(out, 0x00, self.mode);
        put16(out, 0x02, self.uid as u16);
        put32(out, 0x04, self.size as u32);
        let (a, ax) = encode_time(self.atime.0, self.atime.1);
        let (c, cx) = encode_time(self.ctime.0, self.ctime.1);
        let (m, mx) = encode_time(self.mtime.0, self.mtime.1);
        let (cr, crx) = encode_time(self.crtime.0, self.crtime.1);
        put32(out, 0x08, a);
        put32(out, 0x0C, c);
        put32(out, 0x10, m);
        put16(out, 0x18, self.gid as u16);
        put16(out, 0x1A, self.links_count);
        put32(out, 0x1C, self.blocks_512 as u32);
        put32(out, 0x20, self.flags);
        out[0x28..0x64].copy_from_slice(&self.block);
        put32(out, 0x68, self.file_acl as u32);
        put32(out, 0x6C, (self.size >> 32) as u32);
        put16(out, 0x74, (self.blocks_512 >> 32) as u16);
        put16(out, 0x76, (self.file_acl >> 32) as u16);
        put16(out, 0x78, (self.uid >> 16) as u16);
        put16(out, 0x7A, (self.gid >> 16) as u16);
        put16(out, 0x80, EXTRA_ISIZE);
        put32(out, 0x84, cx);
        put32(out, 0x88, mx);
        put32(out, 0x8C, ax);
        put32(out, 0x90, cr);
        put32(out, 0x94, crx);
    }

    /// Decodes an on-disk inode.
    pub(crate) fn decode(b: &[u8]) -> Self {
        let extra = if b.len() > 128 { get16(b, 0x80) } else { 0 };
        let has = |off: usize| b.len() > 128 && usize::from(extra) + 128 >= off + 4;
        let t = |lo_off: usize, x_off: usize| {
            let x = if has(x_off) { get32(b, x_off) } else { 0 };
            decode_time(get32(b, lo_off), x)
        };
        let mut block = [0u8; 60];
        block.copy_from_slice(&b[0x28..0x64]);
        Inode {
            mode: get16(b, 0x00),
            uid: u32::from(get16(b, 0x02)) | (u32::from(get16(b, 0x78)) << 16),
            size: u64::from(get32(b, 0x04)) | (u64::from(get32(b, 0x6C)) << 32),
            atime: t(0x08, 0x8C),
            ctime: t(0x0C, 0x84),
            mtime: t(0x10, 0x88),
            crtime: if has(0x94) {
                decode_time(get32(b, 0x90), get32(b, 0x94))
            } else {
                (0, 0)
            },
            gid: u32::from(get16(b, 0x18)) | (u32::from(get16(b, 0x7A)) << 16),
            links_count: get16(b, 0x1A),
            blocks_512: u64::from(get32(b, 0x1C)) | (u64::from(get16(b, 0x74)) << 32),
            flags: get32(b, 0x20),
            block,
            file_acl: u64::from(get32(b, 0x68)) | (u64::from(get16(b, 0x76)) << 32),
        }
    }
}

/// The per-inode checksum seed: crc32c(fs seed, le32 ino, le32 generation).
pub(crate) fn inode_seed(fs_seed: u32, ino: u32, generation: u32) -> u32 {
    crc32c(
        crc32c(fs_seed, &ino.to_le_bytes()),
        &generation.to_le_bytes(),
    )
}

/// Computes and stores the inode checksum (`metadata_csum`) over the whole
/// encoded inode `raw`.
pub(crate) fn set_checksum(raw: &mut [u8], inode_seed: u32) {
    put16(raw, 0x7C, 0);
    put16(raw, 0x82, 0);
    let c = crc32c(inode_seed, raw);
    put16(raw, 0x7C, c as u16);
    put16(raw, 0x82, (c >> 16) as u16);
}

// ---- Reading (used by `crate::reader`) ----

/// `EXT4_ENCRYPT_FL`: contents and names are encrypted.
pub(crate) const FL_ENCRYPT: u32 = 0x800;
/// `EXT4_HUGE_FILE_FL`: `i_blocks` counts filesystem blocks, not sectors.
pub(crate) const FL_HUGE_FILE: u32 = 0x40000;
/// `EXT4_INLINE_DATA_FL`: the data live in `i_block` and `system.data`.
pub(crate) const FL_INLINE_DATA: u32 = 0x1000_0000;
/// `EXT4_CASEFOLD_FL`: names are looked up case-insensitively.
pub(crate) const FL_CASEFOLD: u32 = 0x4000_0000;

/// `i_generation` of an encoded inode.
pub(crate) fn generation(raw: &[u8]) -> u32 {
    get32(raw, 0x64)
}

/// `i_extra_isize` of an encoded inode (0 for a 128-byte inode).
pub(crate) fn extra_isize(raw: &[u8]) -> u16 {
    if raw.len() > 128 {
        get16(raw, 0x80)
    } else {
        0
    }
}

/// Whether the stored checksum of the encoded inode `raw` (the whole
/// `s_inode_size` bytes, with a validated `i_extra_isize`) is right, as the
/// kernel's `ext4_inode_csum_verify` decides: 32 bits when `i_checksum_hi`
/// fits the extra fields, else the low 16 bits. An inode of all zeros
/// passes (never-used inodes of a zeroed table).
pub(crate) fn checksum_ok(raw: &[u8], inode_seed: u32) -> bool {
    let has_hi = raw.len() > 128 && extra_isize(raw) >= 4;
    let stored = u32::from(get16(raw, 0x7C))
        | if has_hi {
            u32::from(get16(raw, 0x82)) << 16
        } else {
            0
        };
    let c = crc32c(inode_seed, &raw[..0x7C]);
    let c = crc32c(c, &[0, 0]);
    let c = if has_hi {
        let c = crc32c(c, &raw[0x7E..0x82]);
        let c = crc32c(c, &[0, 0]);
        crc32c(c, &raw[0x84..])
    } else {
        crc32c(c, &raw[0x7E..])
    };
    let c = if has_hi { c } else { c & 0xFFFF };
    c == stored || raw.iter().all(|&b| b == 0)
}

/// The device number (major, minor) of a device inode's `i_block`: the old
/// 8:8 encoding in word 0 when it is non-zero, else the new encoding in
/// word 1 (minor bits 0-7, major 12 bits, minor bits 8-19).
pub(crate) fn decode_device(block: &[u8; 60]) -> (u32, u32) {
    let old = get32(block, 0);
    if old != 0 {
        ((old >> 8) & 0xFF, old & 0xFF)
    } else {
        let new = get32(block, 4);
        (
            (new & 0xF_FF00) >> 8,
            (new & 0xFF) | ((new >> 12) & 0xF_FF00),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_across_epochs() {
        for secs in [
            MIN_TIME,
            -315_619_200,
            -1,
            0,
            1,
            (1 << 31) - 1,
            1 << 31,
            4_102_444_800,
            MAX_TIME,
        ] {
            let (lo, x) = encode_time(secs, 123_456_789);
            assert_eq!(decode_time(lo, x), (secs, 123_456_789), "secs {secs}");
        }
        // 2100-01-01 needs epoch 1.
        assert_eq!(encode_time(4_102_444_800, 0).1 & 3, 1);
    }

    #[test]
    fn encode_decode_round_trip() {
        let i = Inode {
            mode: 0o104755,
            uid: 100_000,
            gid: 200_000,
            size: (5 << 32) + 7,
            atime: (-315_619_200, 5),
            ctime: (4_102_444_800, 999_999_999),
            mtime: (1, 2),
            crtime: (3, 4),
            links_count: 3,
            blocks_512: (1 << 40) + 8,
            flags: FL_EXTENTS,
            block: [9; 60],
            file_acl: (1 << 33) + 1,
        };
        let mut raw = [0u8; 256];
        i.encode(&mut raw);
        set_checksum(&mut raw, 42);
        assert_eq!(Inode::decode(&raw), i);
    }
}
