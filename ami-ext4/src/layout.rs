//! Block-group geometry: where every group's superblock backup, group
//! descriptor table, reserved GDT blocks, bitmaps and inode table go.
//!
//! The layout follows mke2fs for ext4 with `flex_bg`: groups are
//! `8 * block_size` blocks; `sparse_super` puts a superblock and GDT copy
//! (plus the reserved GDT blocks of the resize inode) at the start of groups
//! 0, 1 and powers of 3, 5 and 7; the first group of each flex group (16
//! groups) holds, right after its own backup area, the block bitmaps, then
//! the inode bitmaps, then the inode tables of all groups in the flex group.
//!
//! Because everything a group holds sits at its start, the free space of
//! every group is one run `[free_start, end)`. The allocator fills these
//! runs in order, so the used blocks of each group are always a prefix of
//! it, which makes bitmaps trivial to produce.

use crate::options::Profile;

/// The layout of one filesystem.
#[derive(Debug, Clone)]
pub(crate) struct Geometry {
    pub block_size: u32,
    pub blocks_count: u64,
    pub first_data_block: u64,
    pub blocks_per_group: u64,
    pub groups: u32,
    pub inodes_per_group: u32,
    pub inode_size: u32,
    pub desc_size: u32,
    pub gdt_blocks: u64,
    pub reserved_gdt_blocks: u64,
    pub log_groups_per_flex: u8,
    pub itable_blocks: u64,
}

impl Geometry {
    /// Plans the layout of a filesystem of `blocks_count` blocks with at
    /// least `inodes` inodes. Returns `None` when it cannot work (too small
    /// for its own metadata, or too many inodes per group).
    pub(crate) fn new(
        profile: Profile,
        block_size: u32,
        mut blocks_count: u64,
        inodes: u64,
        inode_size: u32,
        resize_inode: bool,
    ) -> Option<Geometry> {
        let bs = u64::from(block_size);
        let first_data_block = u64::from(block_size == 1024);
        let bpg = 8 * bs;
        let desc_size: u32 = if profile.is_64bit() { 64 } else { 32 };
        let max_blocks = if profile.is_64bit() {
            1u64 << 48
        } else {
            (1u64 << 32) - 1
        };
        if blocks_count > max_blocks {
            return None;
        }
        loop {
            if blocks_count <= first_data_block + 16 {
                return None;
            }
            let groups = (blocks_count - first_data_block).div_ceil(bpg);
            let groups32 = u32::try_from(groups).ok()?;
            let inodes_per_block = bs / u64::from(inode_size);
            // Inodes per group: enough for `inodes`, whole table blocks,
            // a multiple of 8, at most one bitmap block's worth.
            let mut ipg = inodes.div_ceil(groups).max(16);
            ipg = ipg.div_ceil(inodes_per_block) * inodes_per_block;
            ipg = ipg.div_ceil(8) * 8;
            if ipg > bpg.min(65536) {
                return None;
            }
            if groups * ipg > u64::from(u32::MAX) {
                return None;
            }
            let itable_blocks = ipg * u64::from(inode_size) / bs;
            let gdt_blocks = (groups * u64::from(desc_size)).div_ceil(bs);
            let reserved_gdt_blocks = if resize_inode && blocks_count < (1u64 << 32) {
                reserved_gdt(
                    blocks_count,
                    first_data_block,
                    bpg,
                    bs / u64::from(desc_size),
                    gdt_blocks,
                    bs,
                )
            } else {
                0
            };
            // flex_bg: shrink the flex size until a flex group's metadata fits
            // in its first group.
            let backup = 1 + gdt_blocks + reserved_gdt_blocks;
            let mut log_flex = 4u8;
            while log_flex > 0 && backup + (1u64 << log_flex) * (2 + itable_blocks) > bpg {
                log_flex -= 1;
            }
            let mut g = Geometry {
                block_size,
                blocks_count,
                first_data_block,
                blocks_per_group: bpg,
                groups: groups32,
                inodes_per_group: u32::try_from(ipg).ok()?,
                inode_size,
                desc_size,
                gdt_blocks,
                reserved_gdt_blocks,
                log_groups_per_flex: log_flex,
                itable_blocks,
            };
            if backup + (1u64 << log_flex) * (2 + itable_blocks) > bpg {
                return None;
            }
            // The last group must hold its own metadata plus a little room;
            // otherwise drop it, as mke2fs does.
            let last = groups32 - 1;
            let need = g.free_start(last) - g.group_start(last);
            if g.group_len(last) < need + 16 {
                if groups32 == 1 {
                    return None;
                }
                blocks_count = g.group_start(last);
                continue;
            }
            g.blocks_count = blocks_count;
            return Some(g);
        }
    }

    pub(crate) fn flex(&self) -> u32 {
        1 << self.log_groups_per_flex
    }

    /// First block of group `g`.
    pub(crate) fn group_start(&self, g: u32) -> u64 {
        self.first_data_block + u64::from(g) * self.blocks_per_group
    }

    /// Number of blocks in group `g` (the last one may be short).
    pub(crate) fn group_len(&self, g: u32) -> u64 {
        (self.blocks_count - self.group_start(g)).min(self.blocks_per_group)
    }

    /// Whether group `g` holds a superblock backup (`sparse_super`).
    pub(crate) fn has_super(g: u32) -> bool {
        fn power_of(mut n: u32, b: u32) -> bool {
            while n.is_multiple_of(b) {
                n /= b;
            }
            n == 1
        }
        g <= 1 || power_of(g, 3) || power_of(g, 5) || power_of(g, 7)
    }

    /// Blocks at the start of group `g` used by the superblock, GDT and
    /// reserved GDT copies.
    pub(crate) fn backup_len(&self, g: u32) -> u64 {
        if Self::has_super(g) {
            1 + self.gdt_blocks + self.reserved_gdt_blocks
        } else {
            0
        }
    }

    /// Where the flex-group metadata of the flex group starting at `g0`
    /// begins.
    fn flex_meta_start(&self, g0: u32) -> u64 {
        self.group_start(g0) + self.backup_len(g0)
    }

    fn flex_members(&self, g0: u32) -> u64 {
        u64::from(self.flex().min(self.groups - g0))
    }

    /// Block bitmap location of group `g`.
    pub(crate) fn block_bitmap(&self, g: u32) -> u64 {
        let g0 = g - g % self.flex();
        self.flex_meta_start(g0) + u64::from(g - g0)
    }

    /// Inode bitmap location of group `g`.
    pub(crate) fn inode_bitmap(&self, g: u32) -> u64 {
        let g0 = g - g % self.flex();
        self.flex_meta_start(g0) + self.flex_members(g0) + u64::from(g - g0)
    }

    /// Inode table location of group `g`.
    pub(crate) fn inode_table(&self, g: u32) -> u64 {
        let g0 = g - g % self.flex();
        self.flex_meta_start(g0)
            + 2 * self.flex_members(g0)
            + u64::from(g - g0) * self.itable_blocks
    }

    /// First block of group `g` not used by static metadata.
    pub(crate) fn free_start(&self, g: u32) -> u64 {
        if g.is_multiple_of(self.flex()) {
            self.flex_meta_start(g) + self.flex_members(g) * (2 + self.itable_blocks)
        } else {
            self.group_start(g) + self.backup_len(g)
        }
    }

    /// Total inodes.
    pub(crate) fn inodes_count(&self) -> u64 {
        u64::from(self.groups) * u64::from(self.inodes_per_group)
    }

    /// Blocks free for data in the whole filesystem.
    pub(crate) fn free_blocks(&self) -> u64 {
        (0..self.groups)
            .map(|g| self.group_start(g) + self.group_len(g) - self.free_start(g))
            .sum()
    }
}

/// mke2fs's `calc_reserved_gdt_blocks`: room to grow to 1024 times the size
/// (or 2^32 blocks), at most one indirect block's worth.
fn reserved_gdt(
    blocks: u64,
    first_data_block: u64,
    bpg: u64,
    gdpb: u64,
    gdt_blocks: u64,
    bs: u64,
) -> u64 {
    let mut max_blocks: u64 = 0xFFFF_FFFF;
    if blocks < max_blocks / 1024 {
        max_blocks = blocks * 1024;
    }
    let rsv_groups = (max_blocks - first_data_block).div_ceil(bpg);
    let rsv = rsv_groups.div_ceil(gdpb).saturating_sub(gdt_blocks);
    rsv.min(bs / 4)
}

/// mke2fs's default journal size (in blocks) for a filesystem of `blocks`
/// blocks; 0 when it is too small for one.
pub(crate) fn journal_blocks(blocks: u64) -> u64 {
    match blocks {
        0..2048 => 0,
        2048..32768 => 1024,
        32768..262_144 => 4096,
        262_144..524_288 => 8192,
        524_288..4_194_304 => 16384,
        4_194_304..8_388_608 => 32768,
        8_388_608..16_777_216 => 65536,
        16_777_216..33_554_432 => 131_072,
        _ => 262_144,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_gib_matches_mke2fs() {
        // mke2fs on 1 GiB: 8 groups, 127 reserved GDT blocks, bitmaps at
        // 129.. and 137.., inode tables from 145 (8192 inodes per group).
        let g = Geometry::new(Profile::Default, 4096, 262_144, 65536, 256, true).unwrap();
        assert_eq!(g.groups, 8);
        assert_eq!(g.reserved_gdt_blocks, 127);
        assert_eq!(g.block_bitmap(0), 129);
        assert_eq!(g.inode_bitmap(0), 137);
        assert_eq!(g.inode_table(0), 145);
        assert_eq!(g.inode_table(1), 145 + 512);
        assert_eq!(g.inodes_per_group, 8192);
    }

    #[test]
    fn sparse_super_groups() {
        let backups: Vec<u32> = (0..50).filter(|&g| Geometry::has_super(g)).collect();
        assert_eq!(backups, vec![0, 1, 3, 5, 7, 9, 25, 27, 49]);
    }

    #[test]
    fn tiny_trailing_group_is_dropped() {
        let g = Geometry::new(Profile::Default, 4096, 32768 + 10, 1000, 256, true).unwrap();
        assert_eq!(g.groups, 1);
        assert_eq!(g.blocks_count, 32768);
    }

    #[test]
    fn one_k_blocks_start_at_one() {
        let g = Geometry::new(Profile::PvGrub, 1024, 20000, 2000, 256, true).unwrap();
        assert_eq!(g.first_data_block, 1);
        assert_eq!(g.group_start(1), 8193);
        assert!(g.free_blocks() > 15000);
    }
}
