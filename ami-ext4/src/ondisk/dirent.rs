//! Directory blocks (kernel docs, ext4 "Directory Entries" and "Hash Tree
//! Directories").
//!
//! * **Linear blocks** hold `ext4_dir_entry_2` records: le32 inode, le16
//!   rec_len, u8 name_len, u8 file_type, then the name, each record padded
//!   to 4 bytes. No record crosses a block; the last one's rec_len reaches
//!   the end of the usable space. With `metadata_csum` every leaf block ends
//!   with a 12-byte tail record (inode 0, rec_len 12, name_len 0, type
//!   0xDE) holding crc32c(inode seed, block minus tail).
//! * **Hash-indexed (htree) directories**: logical block 0 is the `dx_root`
//!   (fake `.` and `..` records, `dx_root_info`, then a count/limit header
//!   and (hash, block) index entries); with two levels, interior `dx_node`
//!   blocks (a fake empty record, then count/limit and entries) sit between
//!   root and leaves. Leaves are linear blocks whose entries fall in their
//!   index entry's hash range; a leaf whose first hash equals the previous
//!   leaf's last hash gets the low "collision" bit in its index hash. With
//!   `metadata_csum` each index block has an 8-byte `dx_tail` after `limit`
//!   entries: crc32c(inode seed, block up to the last used entry, the tail's
//!   reserved word, four zero bytes).
//!
//! Directories are built once from their complete entry list: a single
//! block stays linear; anything bigger becomes an htree (as the kernel
//! would make it), up to two index levels (`large_dir` is never used).

use super::le::{put16, put32};
use crate::checksum::crc32c;

/// `file_type` codes of directory entries.
pub(crate) mod ftype {
    pub(crate) const REG: u8 = 1;
    pub(crate) const DIR: u8 = 2;
    pub(crate) const CHR: u8 = 3;
    pub(crate) const BLK: u8 = 4;
    pub(crate) const FIFO: u8 = 5;
    pub(crate) const SOCK: u8 = 6;
    pub(crate) const LNK: u8 = 7;
}

/// One entry to write.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry<'a> {
    pub name: &'a [u8],
    pub ino: u32,
    pub ftype: u8,
}

/// What a directory needs besides its entries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DirCtx {
    pub block_size: u32,
    /// Inode checksum seed when `metadata_csum` is on.
    pub csum: Option<u32>,
    pub self_ino: u32,
    pub parent_ino: u32,
    /// `dx_root_info.hash_version` (the superblock's default).
    pub hash_version: u8,
    /// Pad a linear directory to at least this many blocks (lost+found).
    pub min_blocks: usize,
}

/// The directory needs more than two htree levels.
#[derive(Debug)]
pub(crate) struct TooManyEntries;

fn rec_len(name_len: usize) -> usize {
    (8 + name_len + 3) & !3
}

/// Packs entries into linear blocks. Returns the blocks and, for each
/// block, the index range of `entries` it holds.
struct Packer {
    bs: usize,
    usable: usize,
    csum: Option<u32>,
    out: Vec<u8>,
    block_start: usize,
    last_rec: Option<usize>, // offset in `out` of the last record in the current block
    pos: usize,              // offset in the current block
}

impl Packer {
    fn new(bs: usize, csum: Option<u32>, out: Vec<u8>) -> Self {
        let usable = if csum.is_some() { bs - 12 } else { bs };
        let mut p = Packer {
            bs,
            usable,
            csum,
            block_start: out.len(),
            out,
            last_rec: None,
            pos: 0,
        };
        p.out.resize(p.block_start + bs, 0);
        p
    }

    fn fits(&self, name_len: usize) -> bool {
        self.pos + rec_len(name_len) <= self.usable
    }

    fn push(&mut self, ino: u32, name: &[u8], ftype: u8) {
        let rl = rec_len(name.len());
        let off = self.block_start + self.pos;
        let b = &mut self.out[off..off + rl];
        put32(b, 0, ino);
        put16(b, 4, rl as u16);
        b[6] = name.len() as u8;
        b[7] = ftype;
        b[8..8 + name.len()].copy_from_slice(name);
        self.last_rec = Some(off);
        self.pos += rl;
    }

    /// Closes the current block: stretches the last record, adds the tail.
    fn finish_block(&mut self) {
        match self.last_rec {
            Some(off) => {
                let stretched = self.block_start + self.usable - off;
                put16(&mut self.out, off + 4, stretched as u16);
            }
            None => {
                // An empty block: one unused record spanning it.
                let s = self.block_start;
                put32(&mut self.out, s, 0);
                put16(&mut self.out, s + 4, self.usable as u16);
            }
        }
        if let Some(seed) = self.csum {
            let s = self.block_start;
            let t = s + self.usable;
            put16(&mut self.out, t + 4, 12);
            self.out[t + 7] = 0xDE;
            let c = crc32c(seed, &self.out[s..t]);
            put32(&mut self.out, t + 8, c);
        }
    }

    fn new_block(&mut self) {
        self.finish_block();
        self.block_start = self.out.len();
        self.out.resize(self.block_start + self.bs, 0);
        self.last_rec = None;
        self.pos = 0;
    }

    fn into_blocks(mut self) -> Vec<u8> {
        self.finish_block();
        self.out
    }
}

/// Encodes a directory. Returns the blocks (a multiple of the block size)
/// and whether it is hash-indexed (`EXT4_INDEX_FL`).
pub(crate) fn encode(
    entries: &[Entry<'_>],
    ctx: &DirCtx,
    hash: &dyn Fn(&[u8]) -> (u32, u32),
) -> Result<(Vec<u8>, bool), TooManyEntries> {
    let bs = ctx.block_size as usize;
    // Try linear first; it is the answer when it fits one block.
    let mut p = Packer::new(bs, ctx.csum, Vec::with_capacity(bs));
    p.push(ctx.self_ino, b".", ftype::DIR);
    p.push(ctx.parent_ino, b"..", ftype::DIR);
    let mut one_block = true;
    for e in entries {
        if !p.fits(e.name.len()) {
            one_block = false;
            break;
        }
        p.push(e.ino, e.name, e.ftype);
    }
    if one_block {
        let mut out = p.into_blocks();
        while out.len() < ctx.min_blocks * bs {
            let mut q = Packer::new(bs, ctx.csum, out);
            q.pos = 0;
            out = q.into_blocks();
        }
        return Ok((out, false));
    }
    encode_htree(entries, ctx, hash).map(|b| (b, true))
}

fn encode_htree(
    entries: &[Entry<'_>],
    ctx: &DirCtx,
    hash: &dyn Fn(&[u8]) -> (u32, u32),
) -> Result<Vec<u8>, TooManyEntries> {
    let bs = ctx.block_size as usize;
    let mut sorted: Vec<(u32, u32, usize)> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let (h, m) = hash(e.name);
            (h, m, i)
        })
        .collect();
    sorted
        .sort_unstable_by(|a, b| (a.0, a.1, entries[a.2].name).cmp(&(b.0, b.1, entries[b.2].name)));

    // Pack leaves into a separate buffer, remembering each leaf's index hash.
    let mut leaf_hashes: Vec<u32> = Vec::new();
    let mut leaves = Packer::new(bs, ctx.csum, Vec::new());
    let mut prev_hash: Option<u32> = None;
    leaf_hashes.push(0);
    for &(h, _, i) in &sorted {
        let e = &entries[i];
        if !leaves.fits(e.name.len()) {
            leaves.new_block();
            leaf_hashes.push(if prev_hash == Some(h) { h | 1 } else { h });
        }
        leaves.push(e.ino, e.name, e.ftype);
        prev_hash = Some(h);
    }
    let leaf_bytes = leaves.into_blocks();
    let n_leaves = leaf_bytes.len() / bs;

    let tail = if ctx.csum.is_some() { 8 } else { 0 };
    let root_limit = (bs - 32 - tail) / 8;
    let node_limit = (bs - 8 - tail) / 8;

    let mut out = vec![0u8; bs];
    // The dx_root's fake "." and ".." records.
    put32(&mut out, 0, ctx.self_ino);
    put16(&mut out, 4, 12);
    out[6] = 1;
    out[7] = ftype::DIR;
    out[8] = b'.';
    put32(&mut out, 12, ctx.parent_ino);
    put16(&mut out, 16, (bs - 12) as u16);
    out[18] = 2;
    out[19] = ftype::DIR;
    out[20] = b'.';
    out[21] = b'.';
    out[28] = ctx.hash_version;
    out[29] = 8; // info_length

    if n_leaves <= root_limit {
        let idx: Vec<(u32, u32)> = (0..n_leaves)
            .map(|i| (leaf_hashes[i], 1 + i as u32))
            .collect();
        write_index(&mut out, 0x20, root_limit, &idx, ctx.csum);
        out.extend_from_slice(&leaf_bytes);
        return Ok(out);
    }
    let n_nodes = n_leaves.div_ceil(node_limit);
    if n_nodes > root_limit {
        return Err(TooManyEntries);
    }
    out[30] = 1; // indirect_levels
    let first_leaf = 1 + n_nodes;
    let mut root_idx = Vec::with_capacity(n_nodes);
    let mut nodes = vec![0u8; n_nodes * bs];
    for (j, node) in nodes.chunks_mut(bs).enumerate() {
        let lo = j * node_limit;
        let hi = (lo + node_limit).min(n_leaves);
        root_idx.push((leaf_hashes[lo], 1 + j as u32));
        put32(node, 0, 0);
        put16(node, 4, bs as u16);
        let idx: Vec<(u32, u32)> = (lo..hi)
            .map(|i| (leaf_hashes[i], (first_leaf + i) as u32))
            .collect();
        write_index(node, 8, node_limit, &idx, ctx.csum);
    }
    write_index(&mut out, 0x20, root_limit, &root_idx, ctx.csum);
    out.extend_from_slice(&nodes);
    out.extend_from_slice(&leaf_bytes);
    Ok(out)
}

/// Writes count/limit and the index entries at `count_off` of an index
/// block, plus the dx_tail checksum.
fn write_index(
    b: &mut [u8],
    count_off: usize,
    limit: usize,
    idx: &[(u32, u32)],
    csum: Option<u32>,
) {
    put16(b, count_off, limit as u16);
    put16(b, count_off + 2, idx.len() as u16);
    for (i, &(h, blk)) in idx.iter().enumerate() {
        let off = count_off + 8 * i;
        if i > 0 {
            put32(b, off, h);
        }
        put32(b, off + 4, blk);
    }
    if let Some(seed) = csum {
        let tail = count_off + 8 * limit;
        put32(b, tail, 0);
        let c = crc32c(seed, &b[..count_off + 8 * idx.len()]);
        let c = crc32c(c, &[0; 8]);
        put32(b, tail + 4, c);
    }
}

// ---- Reading (used by `crate::reader`) ----

/// `file_type` of the checksum tail record.
const TAIL_FTYPE: u8 = 0xDE;

/// Decodes an on-disk `rec_len` for block size `bs`: with 64 KiB blocks
/// the value 65536 does not fit 16 bits and is stored as 0 or 65535, and
/// the low two bits carry bits 16-17 (kernel `ext4_rec_len_from_disk`).
pub(crate) fn rec_len_from_disk(v: u16, bs: usize) -> usize {
    let v = usize::from(v);
    if bs < 65536 {
        v
    } else if v == 0 || v == 0xFFFF {
        bs
    } else {
        (v & 0xFFFC) | ((v & 3) << 16)
    }
}

/// One record of a directory block as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    /// The inode (0: an unused record).
    pub ino: u32,
    pub name: &'a [u8],
    /// The `file_type` byte (0 without the `filetype` feature).
    pub ftype: u8,
}

/// Iterator over the records of (part of) a directory block, from
/// [`records`]. Each record is checked: `rec_len` at least 12, a multiple
/// of 4 and inside the slice, the name inside the record, a non-empty name
/// for a used record. The first bad record ends the iteration with an error.
pub(crate) struct Records<'a> {
    b: &'a [u8],
    bs: usize,
    filetype: bool,
    off: usize,
}

/// The records of `b` (a directory block of size `bs`, or its first part
/// without the checksum tail). `filetype`: the `filetype` feature is on (the
/// byte after `name_len` is the type; otherwise `name_len` is 16 bits).
pub(crate) fn records(b: &[u8], bs: usize, filetype: bool) -> Records<'_> {
    Records {
        b,
        bs,
        filetype,
        off: 0,
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        let off = self.off;
        if off >= self.b.len() {
            return None;
        }
        // Whatever happens, do not come back to this record.
        self.off = self.b.len();
        let Some(h) = self.b.get(off..off + 8) else {
            return Some(Err("directory record header crosses the block end"));
        };
        let ino = super::le::get32(h, 0);
        let rec_len = rec_len_from_disk(super::le::get16(h, 4), self.bs);
        let (name_len, ftype) = if self.filetype {
            (usize::from(h[6]), h[7])
        } else {
            (usize::from(super::le::get16(h, 6)), 0)
        };
        if rec_len < 12 || !rec_len.is_multiple_of(4) {
            return Some(Err(
                "directory record length below 12 or not a multiple of 4",
            ));
        }
        if rec_len > self.b.len() - off {
            return Some(Err("directory record crosses the block end"));
        }
        if name_len > 255 || 8 + name_len > rec_len {
            return Some(Err("directory entry name longer than its record"));
        }
        if ino != 0 && name_len == 0 {
            return Some(Err("directory entry with an empty name"));
        }
        self.off = off + rec_len;
        Some(Ok(Record {
            ino,
            name: &self.b[off + 8..off + 8 + name_len],
            ftype,
        }))
    }
}

/// Whether the block ends with a checksum tail record (inode 0, rec_len 12,
/// name_len 0, type 0xDE).
pub(crate) fn has_tail(block: &[u8]) -> bool {
    let Some(t) = block.len().checked_sub(12).map(|s| &block[s..]) else {
        return false;
    };
    super::le::get32(t, 0) == 0 && super::le::get16(t, 4) == 12 && t[6] == 0 && t[7] == TAIL_FTYPE
}

/// Whether the tail's checksum is right for the inode seed `seed` (call
/// only when [`has_tail`]).
pub(crate) fn tail_ok(block: &[u8], seed: u32) -> bool {
    let end = block.len() - 12;
    super::le::get32(block, end + 8) == crc32c(seed, &block[..end])
}

/// Whether the block is an htree interior node: one unused record spanning
/// the whole block, as `encode` writes it.
pub(crate) fn is_dx_node(block: &[u8], bs: usize) -> bool {
    block.len() >= 8
        && super::le::get32(block, 0) == 0
        && rec_len_from_disk(super::le::get16(block, 4), bs) == block.len()
        && block[6] == 0
}

/// Offset of the count/limit header in a `dx_root` (after the fake `.`
/// and `..` records and the 8-byte `dx_root_info`).
pub(crate) const DX_ROOT_COUNT_OFFSET: usize = 0x20;
/// Offset of the count/limit header in an interior `dx_node`.
pub(crate) const DX_NODE_COUNT_OFFSET: usize = 8;

/// The `dx_root_info` of an htree root block: (hash version code,
/// indirect levels); `None` unless `info_length` is 8.
pub(crate) fn dx_root_info(block: &[u8]) -> Option<(u8, u8)> {
    let info = block.get(0x18..0x20)?;
    (info[5] == 8).then_some((info[4], info[6]))
}

/// In the index block `block` whose count/limit header is at `count_off`,
/// the child block (a logical block of the directory) of the last entry
/// whose hash is at most `hash` (the first entry stands for hash 0), as
/// the kernel's `dx_probe` picks it. `None` when the header is impossible
/// (no entries, more than `limit`, or past the block).
pub(crate) fn dx_pick(block: &[u8], count_off: usize, hash: u32) -> Option<u32> {
    let limit = usize::from(super::le::get16(block.get(count_off..count_off + 4)?, 0));
    let count = usize::from(super::le::get16(block, count_off + 2));
    if count == 0 || count > limit || count_off + 8 * limit > block.len() {
        return None;
    }
    let child = |i: usize| super::le::get32(block, count_off + 8 * i + 4) & 0x0FFF_FFFF;
    let mut chosen = child(0);
    for i in 1..count {
        if super::le::get32(block, count_off + 8 * i) > hash {
            break;
        }
        chosen = child(i);
    }
    Some(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ondisk::le::get16;

    fn ctx(csum: Option<u32>) -> DirCtx {
        DirCtx {
            block_size: 1024,
            csum,
            self_ino: 12,
            parent_ino: 2,
            hash_version: 1,
            min_blocks: 1,
        }
    }

    #[test]
    fn small_dir_is_one_linear_block() {
        let names: Vec<Vec<u8>> = (0..10).map(|i| format!("f{i}").into_bytes()).collect();
        let es: Vec<Entry> = names
            .iter()
            .map(|n| Entry {
                name: n,
                ino: 20,
                ftype: ftype::REG,
            })
            .collect();
        let (b, indexed) = encode(&es, &ctx(Some(1)), &|_| (0, 0)).unwrap();
        assert!(!indexed);
        assert_eq!(b.len(), 1024);
        // Walk the records: they tile the usable space exactly.
        let mut off = 0;
        let mut n = 0;
        while off < 1024 - 12 {
            off += usize::from(get16(&b, off + 4));
            n += 1;
        }
        assert_eq!(off, 1024 - 12);
        assert_eq!(n, 12);
        assert_eq!(b[1024 - 12 + 7], 0xDE);
    }

    #[test]
    fn big_dir_becomes_htree_with_two_levels() {
        let names: Vec<Vec<u8>> = (0..20000)
            .map(|i| format!("a-rather-long-file-name-{i:08}").into_bytes())
            .collect();
        let es: Vec<Entry> = names
            .iter()
            .map(|n| Entry {
                name: n,
                ino: 20,
                ftype: ftype::REG,
            })
            .collect();
        let h = |n: &[u8]| (crc32c(0, n) & !1, 0);
        let (b, indexed) = encode(&es, &ctx(None), &h).unwrap();
        assert!(indexed);
        assert_eq!(
            b[30], 1,
            "two index levels for 20000 entries in 1 KiB blocks"
        );
        assert_eq!(b.len() % 1024, 0);
    }
}
