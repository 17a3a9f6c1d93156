//! The ext4 superblock (kernel docs, ext4 "Super Block" section): 1024
//! bytes at byte offset 1024 of the filesystem, with copies at the start of
//! every backup group (`sparse_super`: groups 0, 1 and powers of 3, 5, 7),
//! where `s_block_group_nr` names the group and the checksum is recomputed.
//!
//! Only the fields this writer sets are modelled; every other byte is zero.
//! With `metadata_csum`, `s_checksum` (offset 0x3FC) is the raw crc32c
//! (see [`crate::checksum`]) of the first 1020 bytes seeded with !0.

use super::le::{get16, get32, put16, put32, put64};
use crate::checksum::crc32c;

pub(crate) const SIZE: usize = 1024;
pub(crate) const MAGIC: u16 = 0xEF53;

pub(crate) const COMPAT_HAS_JOURNAL: u32 = 0x4;
pub(crate) const COMPAT_EXT_ATTR: u32 = 0x8;
pub(crate) const COMPAT_RESIZE_INODE: u32 = 0x10;
pub(crate) const COMPAT_DIR_INDEX: u32 = 0x20;

pub(crate) const INCOMPAT_FILETYPE: u32 = 0x2;
pub(crate) const INCOMPAT_EXTENTS: u32 = 0x40;
pub(crate) const INCOMPAT_64BIT: u32 = 0x80;
pub(crate) const INCOMPAT_FLEX_BG: u32 = 0x200;

pub(crate) const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
pub(crate) const RO_COMPAT_LARGE_FILE: u32 = 0x2;
pub(crate) const RO_COMPAT_HUGE_FILE: u32 = 0x8;
pub(crate) const RO_COMPAT_GDT_CSUM: u32 = 0x10;
pub(crate) const RO_COMPAT_DIR_NLINK: u32 = 0x20;
pub(crate) const RO_COMPAT_EXTRA_ISIZE: u32 = 0x40;
pub(crate) const RO_COMPAT_METADATA_CSUM: u32 = 0x400;

/// The superblock fields this crate writes (and the reader reads).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Superblock {
    pub inodes_count: u32,        // 0x00
    pub blocks_count: u64,        // 0x04 lo, 0x150 hi
    pub r_blocks_count: u64,      // 0x08 lo, 0x154 hi
    pub free_blocks_count: u64,   // 0x0C lo, 0x158 hi
    pub free_inodes_count: u32,   // 0x10
    pub first_data_block: u32,    // 0x14
    pub log_block_size: u32,      // 0x18 (block size = 1024 << n), also 0x1C cluster
    pub blocks_per_group: u32,    // 0x20, also 0x24 clusters per group
    pub inodes_per_group: u32,    // 0x28
    pub time: i64,                // 0x30 s_wtime, 0x108 s_mkfs_time, 0x40 s_lastcheck (+ _hi bytes)
    pub inode_size: u16,          // 0x58
    pub block_group_nr: u16,      // 0x5A
    pub feature_compat: u32,      // 0x5C
    pub feature_incompat: u32,    // 0x60
    pub feature_ro_compat: u32,   // 0x64
    pub uuid: [u8; 16],           // 0x68
    pub volume_name: [u8; 16],    // 0x78
    pub reserved_gdt_blocks: u16, // 0xCE
    pub journal_inum: u32,        // 0xE0
    pub hash_seed: [u8; 16],      // 0xEC (four le32 words; stored as bytes)
    pub def_hash_version: u8,     // 0xFC
    pub jnl_backup_type: u8,      // 0xFD
    pub desc_size: u16,           // 0xFE
    pub default_mount_opts: u32,  // 0x100
    pub jnl_blocks: [u32; 17],    // 0x10C
    pub min_extra_isize: u16,     // 0x15C, also 0x15E want_extra_isize
    pub flags: u32,               // 0x160
    pub log_groups_per_flex: u8,  // 0x174
    pub checksum_type: u8,        // 0x175
}

impl Superblock {
    /// Encodes into exactly [`SIZE`] bytes, computing the checksum when
    /// `metadata_csum` is on.
    pub(crate) fn encode(&self, out: &mut [u8]) {
        let b = &mut out[..SIZE];
        b.fill(0);
        put32(b, 0x00, self.inodes_count);
        put32(b, 0x04, self.blocks_count as u32);
        put32(b, 0x08, self.r_blocks_count as u32);
        put32(b, 0x0C, self.free_blocks_count as u32);
        put32(b, 0x10, self.free_inodes_count);
        put32(b, 0x14, self.first_data_block);
        put32(b, 0x18, self.log_block_size);
        put32(b, 0x1C, self.log_block_size);
        put32(b, 0x20, self.blocks_per_group);
        put32(b, 0x24, self.blocks_per_group);
        put32(b, 0x28, self.inodes_per_group);
        // 0x2C s_mtime (last mount) stays 0.
        let (t_lo, t_hi) = split_time(self.time);
        put32(b, 0x30, t_lo); // s_wtime
        put16(b, 0x34, 0); // s_mnt_count
        put16(b, 0x36, 0xFFFF); // s_max_mnt_count = -1
        put16(b, 0x38, MAGIC);
        put16(b, 0x3A, 1); // s_state: cleanly unmounted
        put16(b, 0x3C, 1); // s_errors: continue
        put32(b, 0x40, t_lo); // s_lastcheck
        put32(b, 0x4C, 1); // s_rev_level: dynamic
        put32(b, 0x54, 11); // s_first_ino
        put16(b, 0x58, self.inode_size);
        put16(b, 0x5A, self.block_group_nr);
        put32(b, 0x5C, self.feature_compat);
        put32(b, 0x60, self.feature_incompat);
        put32(b, 0x64, self.feature_ro_compat);
        b[0x68..0x78].copy_from_slice(&self.uuid);
        b[0x78..0x88].copy_from_slice(&self.volume_name);
        put16(b, 0xCE, self.reserved_gdt_blocks);
        put32(b, 0xE0, self.journal_inum);
        b[0xEC..0xFC].copy_from_slice(&self.hash_seed);
        b[0xFC] = self.def_hash_version;
        b[0xFD] = self.jnl_backup_type;
        put16(b, 0xFE, self.desc_size);
        put32(b, 0x100, self.default_mount_opts);
        put32(b, 0x108, t_lo); // s_mkfs_time
        for (i, w) in self.jnl_blocks.iter().enumerate() {
            put32(b, 0x10C + 4 * i, *w);
        }
        put32(b, 0x150, (self.blocks_count >> 32) as u32);
        put32(b, 0x154, (self.r_blocks_count >> 32) as u32);
        put32(b, 0x158, (self.free_blocks_count >> 32) as u32);
        put16(b, 0x15C, self.min_extra_isize);
        put16(b, 0x15E, self.min_extra_isize);
        put32(b, 0x160, self.flags);
        b[0x174] = self.log_groups_per_flex;
        b[0x175] = self.checksum_type;
        put64(b, 0x178, 0); // s_kbytes_written
        b[0x274] = t_hi; // s_wtime_hi
        b[0x276] = t_hi; // s_mkfs_time_hi
        b[0x277] = t_hi; // s_lastcheck_hi
        if self.feature_ro_compat & RO_COMPAT_METADATA_CSUM != 0 {
            let c = crc32c(!0, &b[..0x3FC]);
            put32(b, 0x3FC, c);
        }
    }

    /// Decodes the fields above from the 1024 superblock bytes. Returns
    /// `None` when the magic is wrong.
    pub(crate) fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < SIZE || get16(b, 0x38) != MAGIC {
            return None;
        }
        let hi = |off| u64::from(get32(b, off)) << 32;
        let is64 = get32(b, 0x60) & INCOMPAT_64BIT != 0;
        let wide =
            |lo: usize, hi_off: usize| u64::from(get32(b, lo)) | if is64 { hi(hi_off) } else { 0 };
        let mut jnl_blocks = [0u32; 17];
        for (i, w) in jnl_blocks.iter_mut().enumerate() {
            *w = get32(b, 0x10C + 4 * i);
        }
        let mut uuid = [0; 16];
        uuid.copy_from_slice(&b[0x68..0x78]);
        let mut volume_name = [0; 16];
        volume_name.copy_from_slice(&b[0x78..0x88]);
        let mut hash_seed = [0; 16];
        hash_seed.copy_from_slice(&b[0xEC..0xFC]);
        Some(Superblock {
            inodes_count: get32(b, 0x00),
            blocks_count: wide(0x04, 0x150),
            r_blocks_count: wide(0x08, 0x154),
            free_blocks_count: wide(0x0C, 0x158),
            free_inodes_count: get32(b, 0x10),
            first_data_block: get32(b, 0x14),
            log_block_size: get32(b, 0x18),
            blocks_per_group: get32(b, 0x20),
            inodes_per_group: get32(b, 0x28),
            time: i64::from(get32(b, 0x30)) | (i64::from(b[0x274]) << 32),
            inode_size: get16(b, 0x58),
            block_group_nr: get16(b, 0x5A),
            feature_compat: get32(b, 0x5C),
            feature_incompat: get32(b, 0x60),
            feature_ro_compat: get32(b, 0x64),
            uuid,
            volume_name,
            reserved_gdt_blocks: get16(b, 0xCE),
            journal_inum: get32(b, 0xE0),
            hash_seed,
            def_hash_version: b[0xFC],
            jnl_backup_type: b[0xFD],
            desc_size: get16(b, 0xFE),
            default_mount_opts: get32(b, 0x100),
            jnl_blocks,
            min_extra_isize: get16(b, 0x15C),
            flags: get32(b, 0x160),
            log_groups_per_flex: b[0x174],
            checksum_type: b[0x175],
        })
    }
}

/// Splits a superblock time into its low 32 bits and the `_hi` byte.
fn split_time(t: i64) -> (u32, u8) {
    let t = t.max(0);
    (t as u32, ((t >> 32) & 0xFF) as u8)
}

// ---- Reading (used by `crate::reader`) ----

/// `s_feature_incompat`: compression (never implemented by Linux).
pub(crate) const INCOMPAT_COMPRESSION: u32 = 0x1;
/// `s_feature_incompat`: the journal needs recovery.
pub(crate) const INCOMPAT_RECOVER: u32 = 0x4;
/// `s_feature_incompat`: this is an external journal device.
pub(crate) const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
/// `s_feature_incompat`: group descriptors live in meta block groups.
pub(crate) const INCOMPAT_META_BG: u32 = 0x10;
/// `s_feature_incompat`: multiple-mount protection.
pub(crate) const INCOMPAT_MMP: u32 = 0x100;
/// `s_feature_incompat`: xattr values in their own inodes.
pub(crate) const INCOMPAT_EA_INODE: u32 = 0x400;
/// `s_feature_incompat`: data in directory entries (Lustre).
pub(crate) const INCOMPAT_DIRDATA: u32 = 0x1000;
/// `s_feature_incompat`: the checksum seed is `s_checksum_seed`.
pub(crate) const INCOMPAT_CSUM_SEED: u32 = 0x2000;
/// `s_feature_incompat`: three-level htrees and directories over 2 GiB.
pub(crate) const INCOMPAT_LARGEDIR: u32 = 0x4000;
/// `s_feature_incompat`: small files and directories inside the inode.
pub(crate) const INCOMPAT_INLINE_DATA: u32 = 0x8000;
/// `s_feature_incompat`: encrypted files and names.
pub(crate) const INCOMPAT_ENCRYPT: u32 = 0x10000;
/// `s_feature_incompat`: case-insensitive directories.
pub(crate) const INCOMPAT_CASEFOLD: u32 = 0x20000;
/// `s_feature_ro_compat`: blocks may be shared between files.
pub(crate) const RO_COMPAT_SHARED_BLOCKS: u32 = 0x4000;

/// Which of the three feature words a flag belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FeatureWord {
    /// `s_feature_compat`.
    Compat,
    /// `s_feature_incompat`.
    Incompat,
    /// `s_feature_ro_compat`.
    RoCompat,
}

/// Feature names as e2fsprogs (`lib/e2p/feature.c`) spells them.
const FEATURE_NAMES: [(FeatureWord, u32, &str); 44] = {
    use FeatureWord::{Compat as C, Incompat as I, RoCompat as R};
    [
        (C, 0x1, "dir_prealloc"),
        (C, 0x2, "imagic_inodes"),
        (C, COMPAT_HAS_JOURNAL, "has_journal"),
        (C, COMPAT_EXT_ATTR, "ext_attr"),
        (C, COMPAT_RESIZE_INODE, "resize_inode"),
        (C, COMPAT_DIR_INDEX, "dir_index"),
        (C, 0x40, "lazy_bg"),
        (C, 0x80, "snapshot_bitmap"),
        (C, 0x200, "sparse_super2"),
        (C, 0x400, "fast_commit"),
        (C, 0x800, "stable_inodes"),
        (C, 0x1000, "orphan_file"),
        (I, INCOMPAT_COMPRESSION, "compression"),
        (I, INCOMPAT_FILETYPE, "filetype"),
        (I, INCOMPAT_RECOVER, "needs_recovery"),
        (I, INCOMPAT_JOURNAL_DEV, "journal_dev"),
        (I, INCOMPAT_META_BG, "meta_bg"),
        (I, INCOMPAT_EXTENTS, "extent"),
        (I, INCOMPAT_64BIT, "64bit"),
        (I, INCOMPAT_MMP, "mmp"),
        (I, INCOMPAT_FLEX_BG, "flex_bg"),
        (I, INCOMPAT_EA_INODE, "ea_inode"),
        (I, INCOMPAT_DIRDATA, "dirdata"),
        (I, INCOMPAT_CSUM_SEED, "metadata_csum_seed"),
        (I, INCOMPAT_LARGEDIR, "large_dir"),
        (I, INCOMPAT_INLINE_DATA, "inline_data"),
        (I, INCOMPAT_ENCRYPT, "encrypt"),
        (I, INCOMPAT_CASEFOLD, "casefold"),
        (R, RO_COMPAT_SPARSE_SUPER, "sparse_super"),
        (R, RO_COMPAT_LARGE_FILE, "large_file"),
        (R, RO_COMPAT_HUGE_FILE, "huge_file"),
        (R, RO_COMPAT_GDT_CSUM, "uninit_bg"),
        (R, RO_COMPAT_DIR_NLINK, "dir_nlink"),
        (R, RO_COMPAT_EXTRA_ISIZE, "extra_isize"),
        (R, 0x80, "snapshot"),
        (R, 0x100, "quota"),
        (R, 0x200, "bigalloc"),
        (R, RO_COMPAT_METADATA_CSUM, "metadata_csum"),
        (R, 0x800, "replica"),
        (R, 0x1000, "read-only"),
        (R, 0x2000, "project"),
        (R, RO_COMPAT_SHARED_BLOCKS, "shared_blocks"),
        (R, 0x8000, "verity"),
        (R, 0x10000, "orphan_present"),
    ]
};

/// The name of one feature bit: e2fsprogs' name, or `FEATURE_C7`-style
/// (word letter and bit number) for a bit it has no name for.
pub(crate) fn feature_name(word: FeatureWord, bit: u32) -> String {
    FEATURE_NAMES
        .iter()
        .find(|&&(w, b, _)| w == word && b == bit)
        .map(|&(_, _, n)| n.to_owned())
        .unwrap_or_else(|| {
            let letter = match word {
                FeatureWord::Compat => 'C',
                FeatureWord::Incompat => 'I',
                FeatureWord::RoCompat => 'R',
            };
            format!("FEATURE_{letter}{}", bit.trailing_zeros())
        })
}

/// The names of all set feature bits, compat first, then incompat, then
/// ro_compat, each by bit number (the order `dumpe2fs` lists them in).
pub(crate) fn feature_names(compat: u32, incompat: u32, ro_compat: u32) -> Vec<String> {
    let words = [
        (FeatureWord::Compat, compat),
        (FeatureWord::Incompat, incompat),
        (FeatureWord::RoCompat, ro_compat),
    ];
    let mut out = Vec::new();
    for (word, v) in words {
        for bit in 0..32 {
            if v & (1 << bit) != 0 {
                out.push(feature_name(word, 1 << bit));
            }
        }
    }
    out
}

/// Superblock fields a reader of any image needs but [`Superblock`] does not
/// model (the writer sets them to constants).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReadFields {
    pub rev_level: u32,         // 0x4C
    pub state: u16,             // 0x3A
    pub first_ino: u32,         // 0x54 (rev 1 only; 11 in rev 0)
    pub log_cluster_size: u32,  // 0x1C
    pub mount_time: i64,        // 0x2C, hi byte 0x275
    pub mkfs_time: i64,         // 0x108, hi byte 0x276
    pub first_meta_bg: u32,     // 0x104
    pub checksum_seed: u32,     // 0x270
    pub checksum: u32,          // 0x3FC
    pub last_mounted: [u8; 64], // 0x88
}

/// Decodes [`ReadFields`] from the 1024 superblock bytes (`b.len()` must be
/// at least [`SIZE`]).
pub(crate) fn decode_read_fields(b: &[u8]) -> ReadFields {
    let time = |lo: usize, hi: usize| i64::from(get32(b, lo)) | (i64::from(b[hi]) << 32);
    let rev_level = get32(b, 0x4C);
    let mut last_mounted = [0; 64];
    last_mounted.copy_from_slice(&b[0x88..0xC8]);
    ReadFields {
        rev_level,
        state: get16(b, 0x3A),
        first_ino: if rev_level == 0 { 11 } else { get32(b, 0x54) },
        log_cluster_size: get32(b, 0x1C),
        mount_time: time(0x2C, 0x275),
        mkfs_time: time(0x108, 0x276),
        first_meta_bg: get32(b, 0x104),
        checksum_seed: get32(b, 0x270),
        checksum: get32(b, 0x3FC),
        last_mounted,
    }
}

/// Whether `s_checksum` matches the raw crc32c of the first 1020 bytes
/// (`b.len()` must be at least [`SIZE`]).
pub(crate) fn checksum_ok(b: &[u8]) -> bool {
    get32(b, 0x3FC) == crc32c(!0, &b[..0x3FC])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip_and_checksum() {
        let sb = Superblock {
            inodes_count: 8192,
            blocks_count: (1 << 33) + 5,
            r_blocks_count: 100,
            free_blocks_count: 77,
            free_inodes_count: 8000,
            log_block_size: 2,
            blocks_per_group: 32768,
            inodes_per_group: 8192,
            time: 1_700_000_000,
            inode_size: 256,
            feature_incompat: INCOMPAT_64BIT | INCOMPAT_EXTENTS,
            feature_ro_compat: RO_COMPAT_METADATA_CSUM,
            uuid: [7; 16],
            jnl_blocks: [3; 17],
            ..Superblock::default()
        };
        let mut buf = [0u8; SIZE];
        sb.encode(&mut buf);
        assert_eq!(Superblock::decode(&buf), Some(sb));
        assert_eq!(get32(&buf, 0x3FC), crc32c(!0, &buf[..0x3FC]));
        buf[0x38] = 0;
        assert_eq!(Superblock::decode(&buf), None);
    }
}
