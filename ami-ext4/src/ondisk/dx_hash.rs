//! The directory-index ("htree") name hash.
//!
//! An indexed directory (`dir_index` feature, inode flag `INDEX_FL`) sorts
//! its entries into leaf blocks by a 32-bit hash of the name; the index
//! blocks map hash ranges to leaves. The hash function is chosen per
//! directory by `dx_root.info.hash_version` and per filesystem by
//! `s_def_hash_version`, and keyed with the filesystem's `s_hash_seed`.
//! See "ext4 Data Structures and Algorithms" (kernel documentation,
//! section "Hash Tree Directories"), the behaviour of `ext4fs_dirhash` in
//! the kernel's `fs/ext4/hash.c` (e2fsprogs `ext2fs_dirhash` is the same
//! function), and the project's ext4 notes §4.7.
//!
//! The algorithms, as [`dx_hash`] implements them:
//!
//! * **Initial buffer.** Four 32-bit words: the seed, or, if all four seed
//!   words are zero, the MD4 initial values 0x67452301, 0xefcdab89,
//!   0x98badcfe, 0x10325476.
//! * **Packing the name** (`str2hashbuf`). The name is consumed in chunks
//!   of 32 bytes (half-MD4) or 16 bytes (TEA). Each chunk becomes 8 (or 4)
//!   words. A padding word is made of the *remaining* length `len`
//!   (counted from the chunk start): `pad = len | len << 8 | len << 16 |
//!   len << 24` (with wrap-around of `len` into the higher bytes). Each word
//!   starts as `pad` and absorbs four bytes with `val = byte + (val << 8)`,
//!   so the first byte ends up in the most significant position. In the
//!   "signed" hash versions a byte ≥ 0x80 is sign-extended to 32 bits
//!   before the addition (the behaviour of `char` on x86); the "unsigned"
//!   versions use the byte value. A partial last word is stored as is and
//!   the remaining words are `pad`.
//! * **Half-MD4** runs the three MD4 rounds with 8 steps each over the 8
//!   words of every chunk and adds the result to the buffer; the hash is
//!   `buf[1]`, the minor hash `buf[2]`.
//! * **TEA** runs 16 rounds of the Tiny Encryption Algorithm on
//!   `(buf[0], buf[1])` keyed with the 4 words of every chunk, and adds the
//!   result to the buffer; the hash is `buf[0]`, the minor hash `buf[1]`.
//! * **Legacy** (`dx_hack_hash`) is a byte-wise recurrence of two words
//!   without seed; the minor hash is 0.
//! * **Final step.** The lowest bit of the hash is cleared (it marks hash
//!   collisions in index entries), and 0xFFFF_FFFE, the end-of-directory
//!   marker of 32-bit readdir cookies, becomes 0xFFFF_FFFC.
//!
//! Whether the signed or unsigned variant is in force on a filesystem is
//! recorded in the superblock's `s_flags` (`EXT2_FLAGS_SIGNED_HASH` /
//! `EXT2_FLAGS_UNSIGNED_HASH`); the kernel then maps the stored hash
//! versions 0–2 to 0–2 or 3–5.

/// A directory hash algorithm, with its on-disk code (`dx_root` and
/// `s_def_hash_version`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HashVersion {
    /// `dx_hack_hash` over sign-extended bytes (code 0).
    Legacy,
    /// Half-MD4 over sign-extended bytes (code 1).
    HalfMd4,
    /// TEA over sign-extended bytes (code 2).
    Tea,
    /// `dx_hack_hash` over unsigned bytes (code 3).
    LegacyUnsigned,
    /// Half-MD4 over unsigned bytes (code 4).
    HalfMd4Unsigned,
    /// TEA over unsigned bytes (code 5).
    TeaUnsigned,
}

impl HashVersion {
    /// The on-disk code of this algorithm.
    pub(crate) fn code(self) -> u8 {
        match self {
            HashVersion::Legacy => 0,
            HashVersion::HalfMd4 => 1,
            HashVersion::Tea => 2,
            HashVersion::LegacyUnsigned => 3,
            HashVersion::HalfMd4Unsigned => 4,
            HashVersion::TeaUnsigned => 5,
        }
    }

    /// The algorithm with on-disk code `c`, if there is one. (Code 6, the
    /// SipHash used by encrypted casefolded directories, is not supported.)
    pub(crate) fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            0 => HashVersion::Legacy,
            1 => HashVersion::HalfMd4,
            2 => HashVersion::Tea,
            3 => HashVersion::LegacyUnsigned,
            4 => HashVersion::HalfMd4Unsigned,
            5 => HashVersion::TeaUnsigned,
            _ => return None,
        })
    }

    /// Whether name bytes ≥ 0x80 are sign-extended.
    fn signed(self) -> bool {
        matches!(
            self,
            HashVersion::Legacy | HashVersion::HalfMd4 | HashVersion::Tea
        )
    }
}

/// The buffer used when the seed is all zero (MD4's initial values).
const DEFAULT_BUF: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// The readdir end-of-directory cookie of 32-bit hashes, shifted.
const EOF_HASH: u32 = 0x7fff_ffff << 1;

/// Returns (major hash with the low bit cleared, minor hash), exactly as
/// the Linux kernel's `ext4fs_dirhash` computes them for `name` with the
/// given algorithm and `s_hash_seed` (as host-order words; an all-zero
/// seed selects the default buffer). The legacy algorithms ignore the seed
/// and return a minor hash of 0.
pub(crate) fn dx_hash(name: &[u8], version: HashVersion, seed: &[u32; 4]) -> (u32, u32) {
    let mut buf = if seed.iter().all(|&w| w == 0) {
        DEFAULT_BUF
    } else {
        *seed
    };
    let signed = version.signed();
    let (hash, minor) = match version {
        HashVersion::Legacy | HashVersion::LegacyUnsigned => (dx_hack_hash(name, signed), 0),
        HashVersion::HalfMd4 | HashVersion::HalfMd4Unsigned => {
            let mut words = [0u32; 8];
            for start in (0..name.len()).step_by(32) {
                str2hashbuf(&name[start..], signed, &mut words);
                half_md4_transform(&mut buf, &words);
            }
            (buf[1], buf[2])
        }
        HashVersion::Tea | HashVersion::TeaUnsigned => {
            let mut words = [0u32; 4];
            for start in (0..name.len()).step_by(16) {
                str2hashbuf(&name[start..], signed, &mut words);
                tea_transform(&mut buf, &words);
            }
            (buf[0], buf[1])
        }
    };
    (finish(hash), minor)
}

/// Clears the collision bit and moves the hash off the end-of-directory
/// cookie.
fn finish(hash: u32) -> u32 {
    let hash = hash & !1;
    if hash == EOF_HASH {
        (0x7fff_ffff - 1) << 1
    } else {
        hash
    }
}

/// A name byte as the hash functions see it: sign-extended or not.
fn byte_value(b: u8, signed: bool) -> u32 {
    if signed {
        // Two's-complement reinterpretation, then sign extension.
        i32::from(b as i8) as u32
    } else {
        u32::from(b)
    }
}

/// Packs the start of `rest` (the name from the current chunk on) into
/// `out`, consuming at most `4 * out.len()` bytes (kernel `str2hashbuf`).
fn str2hashbuf(rest: &[u8], signed: bool, out: &mut [u32]) {
    // The kernel's `len` is an int; names are at most 255 bytes, so the
    // truncation to 32 bits never matters.
    let len = rest.len() as u32;
    let mut pad = len | (len << 8);
    pad |= pad << 16;
    let take = rest.len().min(out.len() * 4);
    let mut val = pad;
    let mut n = 0;
    for (i, &b) in rest[..take].iter().enumerate() {
        val = byte_value(b, signed).wrapping_add(val << 8);
        if i % 4 == 3 {
            out[n] = val;
            n += 1;
            val = pad;
        }
    }
    if n < out.len() {
        out[n] = val;
        n += 1;
    }
    out[n..].fill(pad);
}

/// The legacy `dx_hack_hash` (result shifted left by one, as stored).
fn dx_hack_hash(name: &[u8], signed: bool) -> u32 {
    let (mut hash0, mut hash1) = (0x12a3_fe2d_u32, 0x37ab_e8f9_u32);
    for &b in name {
        let mut hash = hash1.wrapping_add(hash0 ^ byte_value(b, signed).wrapping_mul(7_152_373));
        if hash & 0x8000_0000 != 0 {
            hash = hash.wrapping_sub(0x7fff_ffff);
        }
        hash1 = hash0;
        hash0 = hash;
    }
    hash0 << 1
}

/// One half-MD4 compression of `input` into `buf`.
fn half_md4_transform(buf: &mut [u32; 4], input: &[u32; 8]) {
    const K2: u32 = 0x5a82_7999;
    const K3: u32 = 0x6ed9_eba1;
    fn f(x: u32, y: u32, z: u32) -> u32 {
        z ^ (x & (y ^ z))
    }
    fn g(x: u32, y: u32, z: u32) -> u32 {
        (x & y).wrapping_add((x ^ y) & z)
    }
    fn h(x: u32, y: u32, z: u32) -> u32 {
        x ^ y ^ z
    }
    // Each step updates one of a, b, c, d (rotating through d, c, b, a
    // positions) as `a = rol(a + f(b, c, d) + x, s)`.
    type Round = fn(u32, u32, u32) -> u32;
    let [mut a, mut b, mut c, mut d] = *buf;
    let rounds: [(Round, u32, [usize; 8], [u32; 4]); 3] = [
        (f, 0, [0, 1, 2, 3, 4, 5, 6, 7], [3, 7, 11, 19]),
        (g, K2, [1, 3, 5, 7, 0, 2, 4, 6], [3, 5, 9, 13]),
        (h, K3, [3, 7, 2, 6, 1, 5, 0, 4], [3, 9, 11, 15]),
    ];
    for (fun, k, order, shifts) in rounds {
        for (step, &idx) in order.iter().enumerate() {
            let x = input[idx].wrapping_add(k);
            let s = shifts[step % 4];
            match step % 4 {
                0 => a = a.wrapping_add(fun(b, c, d)).wrapping_add(x).rotate_left(s),
                1 => d = d.wrapping_add(fun(a, b, c)).wrapping_add(x).rotate_left(s),
                2 => c = c.wrapping_add(fun(d, a, b)).wrapping_add(x).rotate_left(s),
                _ => b = b.wrapping_add(fun(c, d, a)).wrapping_add(x).rotate_left(s),
            }
        }
    }
    buf[0] = buf[0].wrapping_add(a);
    buf[1] = buf[1].wrapping_add(b);
    buf[2] = buf[2].wrapping_add(c);
    buf[3] = buf[3].wrapping_add(d);
}

/// One TEA encryption of `(buf[0], buf[1])` with key `input`, added to
/// the buffer.
fn tea_transform(buf: &mut [u32; 4], input: &[u32; 4]) {
    const DELTA: u32 = 0x9e37_79b9;
    let (mut b0, mut b1) = (buf[0], buf[1]);
    let [a, b, c, d] = *input;
    let mut sum = 0u32;
    for _ in 0..16 {
        sum = sum.wrapping_add(DELTA);
        b0 = b0.wrapping_add(
            ((b1 << 4).wrapping_add(a)) ^ b1.wrapping_add(sum) ^ ((b1 >> 5).wrapping_add(b)),
        );
        b1 = b1.wrapping_add(
            ((b0 << 4).wrapping_add(c)) ^ b0.wrapping_add(sum) ^ ((b0 >> 5).wrapping_add(d)),
        );
    }
    buf[0] = buf[0].wrapping_add(b0);
    buf[1] = buf[1].wrapping_add(b1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::Command;

    const ALL: [HashVersion; 6] = [
        HashVersion::Legacy,
        HashVersion::HalfMd4,
        HashVersion::Tea,
        HashVersion::LegacyUnsigned,
        HashVersion::HalfMd4Unsigned,
        HashVersion::TeaUnsigned,
    ];

    #[test]
    fn codes_round_trip() {
        for (i, v) in ALL.into_iter().enumerate() {
            assert_eq!(usize::from(v.code()), i);
            assert_eq!(HashVersion::from_code(v.code()), Some(v));
        }
        assert_eq!(HashVersion::from_code(6), None);
    }

    /// Values printed by e2fsprogs 1.47.0 `debugfs -R "dx_hash -h N NAME"`.
    #[test]
    fn golden_values_from_debugfs() {
        let zero = [0; 4];
        assert_eq!(
            dx_hash(b"hello", HashVersion::HalfMd4, &zero),
            (0x1746_da32, 0x4200_13b5)
        );
        assert_eq!(
            dx_hash(b"hello", HashVersion::HalfMd4Unsigned, &zero),
            (0x1746_da32, 0x4200_13b5)
        );
        assert_eq!(
            dx_hash(b"h\xe9llo", HashVersion::HalfMd4, &zero),
            (0x8d1e_dade, 0x4449_2c83)
        );
        assert_eq!(
            dx_hash(b"h\xe9llo", HashVersion::HalfMd4Unsigned, &zero),
            (0x3c66_c074, 0x0746_5d2b)
        );
        assert_eq!(
            dx_hash(b"-abc", HashVersion::Legacy, &zero),
            (0x19ab_a2a2, 0)
        );
        assert_eq!(
            dx_hash(b"a#b", HashVersion::Tea, &zero),
            (0xc7ba_d2f0, 0xb813_b291)
        );
    }

    #[test]
    fn str2hashbuf_packs_big_endian_with_length_padding() {
        let mut out = [0u32; 4];
        str2hashbuf(b"abcde", false, &mut out);
        let pad = 0x0505_0505;
        assert_eq!(out, [0x6162_6364, (pad << 8) | 0x65, pad, pad]);
        str2hashbuf(b"\xff", true, &mut out);
        // Sign-extended 0xff is -1: 0x0101_0100 + 0xffff_ffff.
        assert_eq!(out[0], 0x0101_00ff);
        str2hashbuf(b"\xff", false, &mut out);
        assert_eq!(out[0], 0x0101_01ff);
    }

    /// Turns a seed into the UUID notation debugfs parses (the UUID's 16
    /// bytes are the four words in little-endian order).
    fn seed_uuid(seed: &[u32; 4]) -> String {
        let b: Vec<u8> = seed.iter().flat_map(|w| w.to_le_bytes()).collect();
        let hex = |r: std::ops::Range<usize>| -> String {
            b[r].iter().map(|x| format!("{x:02x}")).collect()
        };
        format!(
            "{}-{}-{}-{}-{}",
            hex(0..4),
            hex(4..6),
            hex(6..8),
            hex(8..10),
            hex(10..16)
        )
    }

    /// Names debugfs can take as one argument: no whitespace, quotes,
    /// backslashes, NUL or '/', and not starting with '-' (handled by
    /// "--" anyway).
    fn test_names() -> Vec<Vec<u8>> {
        let mut names: Vec<Vec<u8>> = Vec::new();
        // Lengths 1..=70 cross the 16- and 32-byte chunk boundaries.
        for len in 1..=70usize {
            names.push(
                (0..len)
                    .map(|i| b'a' + ((i * 7 + len) % 26) as u8)
                    .collect(),
            );
        }
        // Bytes >= 0x80 in every position of a word.
        for len in 1..=40usize {
            names.push(
                (0..len)
                    .map(|i| 0x80 + ((i * 37 + len * 11) % 0x80) as u8)
                    .collect(),
            );
        }
        // Mixed names from a small LCG, long ones up to 255 bytes.
        let mut state = 0x2545_f491_u32;
        let mut next = || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            state >> 8
        };
        for i in 0..90 {
            let len = if i < 20 {
                200 + (next() as usize % 56)
            } else {
                1 + next() as usize % 120
            };
            let name: Vec<u8> = (0..len)
                .map(|_| loop {
                    let b = (next() & 0xff) as u8;
                    if b > b' ' && !matches!(b, b'"' | b'\\' | b'/' | 0x7f) {
                        break b;
                    }
                })
                .collect();
            names.push(name);
        }
        names.push(vec![b'x'; 255]);
        names.push(vec![0xff; 255]);
        names.push(b"lost+found".to_vec());
        names.push(b"..hidden".to_vec());
        names
    }

    /// Compares `dx_hash` with e2fsprogs' debugfs over many names, all
    /// algorithms, a zero and a non-zero seed.
    #[test]
    fn matches_debugfs() {
        let names = test_names();
        assert!(names.len() >= 200);
        let seeds = [
            [0u32; 4],
            [0x1234_5678, 0x9abc_def0, 0x0fed_cba9, 0x8765_4321],
        ];
        let mut cases = Vec::new();
        let mut script = Vec::new();
        for seed in &seeds {
            for v in ALL {
                for name in &names {
                    script.extend_from_slice(
                        format!("dx_hash -h {} -s {} -- ", v.code(), seed_uuid(seed)).as_bytes(),
                    );
                    script.extend_from_slice(name);
                    script.push(b'\n');
                    cases.push((name, v, seed));
                }
            }
        }
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&script).unwrap();
        file.flush().unwrap();
        let out = Command::new("debugfs")
            .arg("-f")
            .arg(file.path())
            .output()
            .expect("cannot run debugfs (install e2fsprogs)");
        assert!(out.status.success(), "debugfs failed: {out:?}");
        let results: Vec<(u32, u32)> = out
            .stdout
            .split(|&b| b == b'\n')
            .filter(|l| l.starts_with(b"Hash of "))
            .map(|l| {
                let l = String::from_utf8_lossy(l);
                let tail = &l[l.rfind(" is 0x").expect("hash line") + 6..];
                let (h, m) = tail.split_once(" (minor 0x").expect("minor hash");
                (
                    u32::from_str_radix(h, 16).unwrap(),
                    u32::from_str_radix(m.trim_end_matches(')'), 16).unwrap(),
                )
            })
            .collect();
        assert_eq!(results.len(), cases.len(), "one result per command");
        let mut mismatches = 0;
        for ((name, v, seed), expected) in cases.iter().zip(&results) {
            let got = dx_hash(name, *v, seed);
            if got != *expected {
                mismatches += 1;
                eprintln!("{v:?} seed {seed:x?} {name:x?}: got {got:x?}, debugfs {expected:x?}");
            }
        }
        assert_eq!(mismatches, 0);
    }

    #[test]
    fn finish_clears_bit_0_and_avoids_the_eof_cookie() {
        assert_eq!(finish(0x1234_5679), 0x1234_5678);
        assert_eq!(finish(0xffff_ffff), 0xffff_fffc);
        assert_eq!(finish(0xffff_fffe), 0xffff_fffc);
        assert_eq!(finish(0xffff_fffd), 0xffff_fffc);
        assert_eq!(finish(0x7fff_ffff), 0x7fff_fffe);
    }
}
