//! The jbd2 journal superblock (kernel docs, ext4 "Journal (jbd2)",
//! "Super Block"): block 0 of the journal inode, **big-endian**. A fresh,
//! clean journal has `s_start = 0` (nothing to replay), `s_sequence = 1`,
//! `s_first = 1`, one user, no feature bits; every other journal block is
//! zero.

/// jbd2 magic number.
pub(crate) const MAGIC: u32 = 0xC03B_3998;
/// Block type of a v2 superblock.
const SUPERBLOCK_V2: u32 = 4;

/// Encodes a clean v2 journal superblock into `out` (one block).
pub(crate) fn encode(out: &mut [u8], block_size: u32, journal_blocks: u32, uuid: &[u8; 16]) {
    out.fill(0);
    let mut put = |off: usize, v: u32| out[off..off + 4].copy_from_slice(&v.to_be_bytes());
    put(0x0, MAGIC);
    put(0x4, SUPERBLOCK_V2);
    put(0xC, block_size); // s_blocksize
    put(0x10, journal_blocks); // s_maxlen
    put(0x14, 1); // s_first
    put(0x18, 1); // s_sequence
    put(0x1C, 0); // s_start: clean
    put(0x40, 1); // s_nr_users
    out[0x30..0x40].copy_from_slice(uuid);
}

#[cfg(test)]
mod tests {
    #[test]
    fn big_endian_fields() {
        let mut b = vec![0u8; 1024];
        super::encode(&mut b, 4096, 1024, &[1; 16]);
        assert_eq!(&b[..4], &[0xC0, 0x3B, 0x39, 0x98]);
        assert_eq!(&b[0xC..0x10], &4096u32.to_be_bytes());
        assert_eq!(&b[0x10..0x14], &1024u32.to_be_bytes());
        assert_eq!(&b[0x30..0x40], &[1; 16]);
    }
}
