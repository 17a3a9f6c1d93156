//! Extent trees (kernel docs, ext4 "Extent Tree"): a 12-byte header (magic
//! 0xF30A, entries, max, depth, generation) followed by 12-byte leaf
//! extents (`ee_block`, `ee_len` ≤ 32768, `ee_start_hi`, `ee_start_lo`) or
//! index entries (`ei_block`, `ei_leaf_lo`, `ei_leaf_hi`). The root lives in
//! the inode's 60-byte `i_block` (at most 4 entries); deeper nodes fill whole
//! blocks with `(block_size - 12) / 12` slots and, with `metadata_csum`, a
//! 4-byte crc32c tail (inode seed over header and all slots) after them.
//!
//! Trees are built bottom-up with packed nodes, which gives the minimal
//! depth `e2fsck` expects.

use super::le::{get16, get32, put16, put32};
use crate::checksum::crc32c;

/// Extent header magic.
pub(crate) const MAGIC: u16 = 0xF30A;
/// Longest initialised extent, in blocks.
pub(crate) const MAX_LEN: u32 = 32768;

/// One leaf extent: `len` blocks of file block `logical` on at `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Extent {
    pub logical: u32,
    pub len: u32,
    pub start: u64,
}

/// Slots in a tree block of this size.
pub(crate) fn per_block(block_size: u32) -> usize {
    (block_size as usize - 12) / 12
}

/// How many tree blocks a file with `n` extents needs.
pub(crate) fn tree_blocks_needed(n: usize, block_size: u32) -> usize {
    let per = per_block(block_size);
    let mut total = 0;
    let mut nodes = n;
    while nodes > 4 {
        nodes = nodes.div_ceil(per);
        total += nodes;
    }
    total
}

fn header(b: &mut [u8], entries: usize, max: usize, depth: u16) {
    put16(b, 0, MAGIC);
    put16(b, 2, entries as u16);
    put16(b, 4, max as u16);
    put16(b, 6, depth);
    put32(b, 8, 0);
}

fn leaf(b: &mut [u8], e: &Extent) {
    put32(b, 0, e.logical);
    put16(b, 4, e.len as u16);
    put16(b, 6, (e.start >> 32) as u16);
    put32(b, 8, e.start as u32);
}

fn index(b: &mut [u8], logical: u32, child: u64) {
    put32(b, 0, logical);
    put32(b, 4, child as u32);
    put16(b, 8, (child >> 32) as u16);
    put16(b, 10, 0);
}

/// A built tree: the inode's `i_block` and the contents of each tree block.
pub(crate) struct Built {
    pub root: [u8; 60],
    pub blocks: Vec<(u64, Vec<u8>)>,
}

/// Builds the tree for `extents` (sorted by logical block), placing nodes in
/// `tree_blocks` (exactly [`tree_blocks_needed`] of them, leaves first).
/// `csum_seed` is the inode's checksum seed with `metadata_csum`.
pub(crate) fn build(
    extents: &[Extent],
    tree_blocks: &[u64],
    block_size: u32,
    csum_seed: Option<u32>,
) -> Built {
    let per = per_block(block_size);
    let mut blocks = Vec::with_capacity(tree_blocks.len());
    let mut next = tree_blocks.iter().copied();
    // Entries of the current level as (first logical block, encoder input).
    let mut level: Vec<(u32, u64)> = Vec::new(); // for index levels: (logical, child block)
    let mut depth = 0u16;
    if extents.len() > 4 {
        for chunk in extents.chunks(per) {
            let blk = next.next().expect("tree block count");
            let mut b = vec![0u8; block_size as usize];
            header(&mut b, chunk.len(), per, 0);
            for (i, e) in chunk.iter().enumerate() {
                leaf(&mut b[12 + 12 * i..], e);
            }
            tail(&mut b, per, csum_seed);
            level.push((chunk[0].logical, blk));
            blocks.push((blk, b));
        }
        depth = 1;
        while level.len() > 4 {
            let mut up = Vec::new();
            for chunk in level.chunks(per) {
                let blk = next.next().expect("tree block count");
                let mut b = vec![0u8; block_size as usize];
                header(&mut b, chunk.len(), per, depth);
                for (i, (l, c)) in chunk.iter().enumerate() {
                    index(&mut b[12 + 12 * i..], *l, *c);
                }
                tail(&mut b, per, csum_seed);
                up.push((chunk[0].0, blk));
                blocks.push((blk, b));
            }
            level = up;
            depth += 1;
        }
    }
    let mut root = [0u8; 60];
    if depth == 0 {
        header(&mut root, extents.len(), 4, 0);
        for (i, e) in extents.iter().enumerate() {
            leaf(&mut root[12 + 12 * i..], e);
        }
    } else {
        header(&mut root, level.len(), 4, depth);
        for (i, (l, c)) in level.iter().enumerate() {
            index(&mut root[12 + 12 * i..], *l, *c);
        }
    }
    Built { root, blocks }
}

fn tail(b: &mut [u8], per: usize, csum_seed: Option<u32>) {
    if let Some(seed) = csum_seed {
        let end = 12 + 12 * per;
        let c = crc32c(seed, &b[..end]);
        put32(b, end, c);
    }
}

/// A decoded node: depth and entries. Leaf entries are extents; index
/// entries are returned as extents with `len == 0` and `start` = child.
pub(crate) fn decode_node(b: &[u8]) -> Option<(u16, Vec<Extent>)> {
    if b.len() < 12 || get16(b, 0) != MAGIC {
        return None;
    }
    let entries = usize::from(get16(b, 2));
    let depth = get16(b, 6);
    if 12 + entries * 12 > b.len() {
        return None;
    }
    let mut out = Vec::with_capacity(entries);
    for i in 0..entries {
        let e = &b[12 + 12 * i..];
        out.push(if depth == 0 {
            Extent {
                logical: get32(e, 0),
                len: u32::from(get16(e, 4)),
                start: (u64::from(get16(e, 6)) << 32) | u64::from(get32(e, 8)),
            }
        } else {
            Extent {
                logical: get32(e, 0),
                len: 0,
                start: u64::from(get32(e, 4)) | (u64::from(get16(e, 8)) << 32),
            }
        });
    }
    Some((depth, out))
}

// ---- Reading (used by `crate::reader`) ----

/// Deepest extent tree the kernel accepts (`EXT4_MAX_EXTENT_DEPTH`).
pub(crate) const MAX_DEPTH: u16 = 5;

/// An extent node header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub entries: u16,
    pub max: u16,
    pub depth: u16,
}

/// Decodes the header of the node `b`; `None` without the magic.
pub(crate) fn decode_header(b: &[u8]) -> Option<Header> {
    if b.len() < 12 || get16(b, 0) != MAGIC {
        return None;
    }
    Some(Header {
        entries: get16(b, 2),
        max: get16(b, 4),
        depth: get16(b, 6),
    })
}

/// Whether the checksum tail of the tree block `b` (after `max` slots) is
/// right for the inode seed `seed`. False when the tail does not fit.
pub(crate) fn tail_ok(b: &[u8], max: u16, seed: u32) -> bool {
    let end = 12 + 12 * usize::from(max);
    match b.get(end..end + 4) {
        Some(t) => get32(t, 0) == crc32c(seed, &b[..end]),
        None => false,
    }
}

/// Splits an on-disk `ee_len` into the length in blocks and whether the
/// extent is initialised (lengths above [`MAX_LEN`] mark unwritten
/// extents, which read as zeros).
pub(crate) fn split_len(raw: u32) -> (u32, bool) {
    if raw > MAX_LEN {
        (raw - MAX_LEN, false)
    } else {
        (raw, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_depth() {
        assert_eq!(tree_blocks_needed(4, 4096), 0);
        assert_eq!(tree_blocks_needed(5, 4096), 1);
        assert_eq!(tree_blocks_needed(340 * 4, 4096), 4);
        assert_eq!(tree_blocks_needed(340 * 4 + 1, 4096), 6);
    }

    #[test]
    fn build_two_levels_and_decode() {
        let exts: Vec<Extent> = (0..2000u32)
            .map(|i| Extent {
                logical: i * 2,
                len: 1,
                start: 1000 + u64::from(i) * 3,
            })
            .collect();
        let n = tree_blocks_needed(exts.len(), 4096);
        let tb: Vec<u64> = (0..n as u64).map(|i| 50 + i).collect();
        let built = build(&exts, &tb, 4096, Some(7));
        assert_eq!(built.blocks.len(), n);
        let (depth, root) = decode_node(&built.root).unwrap();
        assert_eq!(depth, 2);
        // Walk the tree back.
        let mut got = Vec::new();
        for ie in root {
            let node = &built.blocks.iter().find(|(b, _)| *b == ie.start).unwrap().1;
            let (d, entries) = decode_node(node).unwrap();
            assert_eq!(d, 1);
            for le in entries {
                let leaf = &built.blocks.iter().find(|(b, _)| *b == le.start).unwrap().1;
                got.extend(decode_node(leaf).unwrap().1);
            }
        }
        assert_eq!(got, exts);
    }
}
