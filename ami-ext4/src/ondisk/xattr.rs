//! Extended attributes, in the inode body and in an xattr block.
//!
//! Format ("ext4 Data Structures and Algorithms", kernel documentation,
//! section "Extended Attributes"; the kernel's `fs/ext4/xattr.c`; the
//! project's ext4 notes §4.8). All integers are little-endian.
//!
//! * **Names** are stored as a one-byte namespace index plus the rest of
//!   the name: `user.` 1, `system.posix_acl_access` 2 and
//!   `system.posix_acl_default` 3 (whole names, empty suffix), `trusted.`
//!   4, `security.` 6, other `system.` names 7, `system.richacl` 8. Other
//!   prefixes cannot be stored. The suffix is at most 255 bytes.
//! * **An entry** is 16 bytes — `e_name_len` u8, `e_name_index` u8,
//!   `e_value_offs` u16, `e_value_inum` u32 (0: the value is in the same
//!   area), `e_value_size` u32, `e_hash` u32 — followed by the name,
//!   padded with zeros to a multiple of 4. A list of entries ends with four
//!   zero bytes. Values are padded to a multiple of 4 and packed from the
//!   end of the area downwards; an empty value has offset 0.
//! * **In the inode** (the bytes after `128 + i_extra_isize`): the magic
//!   0xEA02_0000, then the entries; `e_value_offs` counts from the first
//!   entry (just after the magic).
//! * **In a block** (`i_file_acl`): a 32-byte header — `h_magic`
//!   0xEA02_0000, `h_refcount`, `h_blocks` (1), `h_hash`, `h_checksum`,
//!   12 reserved bytes — then the entries from offset 32, sorted by (name
//!   index, name length, name); `e_value_offs` counts from the block start.
//! * **Entry hash** (kernel `ext4_xattr_hash_entry`): for each name byte
//!   `h = (h << 5) ^ (h >> 27) ^ c`, then for each 32-bit word of the
//!   zero-padded value `h = (h << 16) ^ (h >> 16) ^ w`. This module uses
//!   the *signed-char* variant (name bytes sign-extended, as `char` is on
//!   x86), which is what kernels before 6.2 and e2fsck before 1.46.6 on x86
//!   compute. Newer kernels write the unsigned variant and accept both, as
//!   does e2fsck ≥ 1.46.6; for ASCII names the two are identical.
//! * **Block hash** (kernel `ext4_xattr_rehash`): over the entries' hashes,
//!   `h = (h << 16) ^ (h >> 16) ^ e_hash`; 0 if an entry hash is 0.
//! * **Block checksum** (metadata_csum): crc32c from the filesystem seed
//!   over the le64 block number and then the whole block with `h_checksum`
//!   zeroed.
//! * **POSIX ACLs** (`system.posix_acl_*`) arrive in the Linux VFS format
//!   (le32 version 2, then 8-byte entries `{tag u16, perm u16, id u32}`) and
//!   are stored in ext4's own format: le32 version 1, then 4-byte entries
//!   `{tag, perm}` for USER_OBJ, GROUP_OBJ, MASK and OTHER and 8-byte
//!   entries `{tag, perm, id}` for USER and GROUP. Copying the VFS bytes
//!   verbatim would corrupt the ACL.

use std::collections::BTreeMap;

use crate::checksum::crc32c;

/// The magic number of both the in-inode area and an xattr block.
const MAGIC: u32 = 0xEA02_0000;
/// Size of an xattr block header.
const BLOCK_HEADER: usize = 32;
/// Size of an entry header (before the name).
const ENTRY_HEADER: usize = 16;
/// Offset of `h_checksum` in the block header.
const CHECKSUM_OFFSET: usize = 16;
/// Longest name suffix.
const MAX_NAME: usize = 255;

/// The namespace index of `system.posix_acl_access`.
const INDEX_ACL_ACCESS: u8 = 2;
/// The namespace index of `system.posix_acl_default`.
const INDEX_ACL_DEFAULT: u8 = 3;

/// Names stored as a whole with an empty suffix.
const WHOLE_NAMES: [(&[u8], u8); 3] = [
    (b"system.posix_acl_access", INDEX_ACL_ACCESS),
    (b"system.posix_acl_default", INDEX_ACL_DEFAULT),
    (b"system.richacl", 8),
];

/// Namespace prefixes followed by a non-empty suffix.
const PREFIXES: [(&[u8], u8); 4] = [
    (b"user.", 1),
    (b"trusted.", 4),
    (b"security.", 6),
    (b"system.", 7),
];

/// One extended attribute as ext4 stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct XattrEntry {
    /// The namespace index (`e_name_index`).
    pub index: u8,
    /// The name after the namespace prefix (at most 255 bytes).
    pub name: Vec<u8>,
    /// The value in its on-disk form (ACLs already converted).
    pub value: Vec<u8>,
}

/// Why an extended attribute cannot be stored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum XattrError {
    /// The name is in a namespace ext4 has no index for.
    #[error("ext4 cannot store attributes of this namespace")]
    UnknownPrefix,
    /// Nothing follows the namespace prefix.
    #[error("the name is empty after its namespace prefix")]
    EmptyName,
    /// `system.data` holds inline file data, which this writer never uses.
    #[error("the name is reserved for ext4's inline data")]
    Reserved,
    /// The name after the prefix is longer than 255 bytes.
    #[error("the name is longer than 255 bytes after its namespace prefix")]
    NameTooLong,
    /// The attributes of one inode do not fit the inode and one block.
    #[error("the attributes need {needed} bytes in the xattr block, which has {available}")]
    TooLarge {
        /// Bytes the attributes that do not fit the inode need in the block.
        needed: usize,
        /// The block size.
        available: usize,
    },
    /// A POSIX ACL value is malformed.
    #[error("malformed POSIX ACL: {0}")]
    BadAcl(&'static str),
}

/// `n` rounded up to a multiple of 4.
fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

/// Bytes an entry takes in the entry table.
fn entry_len(e: &XattrEntry) -> usize {
    ENTRY_HEADER + pad4(e.name.len())
}

/// Bytes an entry takes in the entry table and the value area.
fn entry_total(e: &XattrEntry) -> usize {
    entry_len(e) + pad4(e.value.len())
}

/// Splits a full attribute name into its namespace index and suffix.
fn split_name(full: &[u8]) -> Result<(u8, &[u8]), XattrError> {
    if let Some(&(_, index)) = WHOLE_NAMES.iter().find(|(n, _)| *n == full) {
        return Ok((index, &[]));
    }
    let &(prefix, index) = PREFIXES
        .iter()
        .find(|(p, _)| full.starts_with(p))
        .ok_or(XattrError::UnknownPrefix)?;
    let suffix = &full[prefix.len()..];
    if suffix.is_empty() {
        return Err(XattrError::EmptyName);
    }
    if full == b"system.data" {
        return Err(XattrError::Reserved);
    }
    if suffix.len() > MAX_NAME {
        return Err(XattrError::NameTooLong);
    }
    Ok((index, suffix))
}

/// POSIX ACL tags.
const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_GROUP: u16 = 0x08;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;

/// Converts a POSIX ACL from the Linux VFS xattr format (version 2) to
/// ext4's on-disk format (version 1), checking it as the kernel's
/// `posix_acl_from_xattr` and `posix_acl_valid` do: one USER_OBJ, the USER
/// entries, one GROUP_OBJ, the GROUP entries, a MASK (required if there is
/// a USER or GROUP entry), one OTHER, in this order; permissions within
/// rwx; no USER or GROUP entry with the invalid id 0xFFFF_FFFF.
fn acl_to_disk(vfs: &[u8]) -> Result<Vec<u8>, XattrError> {
    /// Where in the mandatory order the next entry may be.
    #[derive(PartialEq)]
    enum State {
        UserObj,
        User,
        Group,
        Other,
        Done,
    }
    let (header, entries) = vfs
        .split_first_chunk::<4>()
        .ok_or(XattrError::BadAcl("shorter than its 4-byte header"))?;
    if u32::from_le_bytes(*header) != 2 {
        return Err(XattrError::BadAcl("not version 2 of the VFS ACL format"));
    }
    if entries.len() % 8 != 0 {
        return Err(XattrError::BadAcl("size is not a whole number of entries"));
    }
    let mut out = Vec::with_capacity(4 + entries.len());
    out.extend_from_slice(&1u32.to_le_bytes());
    let mut state = State::UserObj;
    let mut needs_mask = false;
    for e in entries.chunks_exact(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let perm = u16::from_le_bytes([e[2], e[3]]);
        let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        if perm & !7 != 0 {
            return Err(XattrError::BadAcl("permission bits other than rwx"));
        }
        let out_of_order = XattrError::BadAcl("entries missing, repeated or out of order");
        state = match (tag, state) {
            (ACL_USER_OBJ, State::UserObj) => State::User,
            (ACL_USER, State::User) => {
                needs_mask = true;
                State::User
            }
            (ACL_GROUP_OBJ, State::User) => State::Group,
            (ACL_GROUP, State::Group) => {
                needs_mask = true;
                State::Group
            }
            (ACL_MASK, State::Group) => State::Other,
            (ACL_OTHER, State::Other) => State::Done,
            (ACL_OTHER, State::Group) if !needs_mask => State::Done,
            (ACL_USER_OBJ | ACL_USER | ACL_GROUP_OBJ | ACL_GROUP | ACL_MASK | ACL_OTHER, _) => {
                return Err(out_of_order)
            }
            _ => return Err(XattrError::BadAcl("unknown entry tag")),
        };
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        if matches!(tag, ACL_USER | ACL_GROUP) {
            if id == u32::MAX {
                return Err(XattrError::BadAcl("user or group entry with id -1"));
            }
            out.extend_from_slice(&id.to_le_bytes());
        }
    }
    if state != State::Done {
        return Err(XattrError::BadAcl(
            "missing the owner, group or other entry, or the mask",
        ));
    }
    Ok(out)
}

/// Splits full names into (index, suffix), converts POSIX ACLs from the
/// Linux VFS format to ext4's on-disk format, and sorts in the kernel's
/// order (index, then name length, then name bytes).
///
/// # Errors
/// The full name of the first attribute that cannot be stored, with the
/// reason: an unknown namespace, an empty, reserved or too long name, or a
/// malformed ACL.
pub(crate) fn prepare(
    xattrs: &BTreeMap<Box<[u8]>, Box<[u8]>>,
) -> Result<Vec<XattrEntry>, (Vec<u8>, XattrError)> {
    let mut entries = xattrs
        .iter()
        .map(|(full, value)| {
            let with_name = |e| (full.to_vec(), e);
            let (index, suffix) = split_name(full).map_err(with_name)?;
            let value = if matches!(index, INDEX_ACL_ACCESS | INDEX_ACL_DEFAULT) {
                acl_to_disk(value).map_err(with_name)?
            } else {
                value.to_vec()
            };
            Ok(XattrEntry {
                index,
                name: suffix.to_vec(),
                value,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    entries.sort_by(|a, b| (a.index, a.name.len(), &a.name).cmp(&(b.index, b.name.len(), &b.name)));
    Ok(entries)
}

/// Bytes the entries need in the inode's in-body area: the magic, the
/// entry table with its terminator, and the padded values. 0 for no
/// entries (the area then stays all zero).
#[cfg(test)]
pub(crate) fn inode_bytes_needed(entries: &[XattrEntry]) -> usize {
    if entries.is_empty() {
        0
    } else {
        4 + entries.iter().map(entry_total).sum::<usize>() + 4
    }
}

/// Bytes the entries need in an xattr block: the header, the entry table
/// with its terminator, and the padded values. 0 for no entries (no block
/// is needed).
pub(crate) fn block_bytes_needed(entries: &[XattrEntry]) -> usize {
    if entries.is_empty() {
        0
    } else {
        BLOCK_HEADER + entries.iter().map(entry_total).sum::<usize>() + 4
    }
}

/// Decides placement: entries (in the given order) go into the inode's
/// in-body area of `in_inode_space` bytes while they fit, and the first one
/// that does not fit and all after it go into one block of `block_size`
/// bytes. Returns the number of entries placed in the inode.
///
/// # Errors
/// [`XattrError::TooLarge`] if the rest does not fit one block.
pub(crate) fn split(
    entries: &[XattrEntry],
    in_inode_space: usize,
    block_size: usize,
) -> Result<usize, XattrError> {
    let mut used = 8; // magic and terminator
    let mut in_inode = 0;
    for e in entries {
        if used + entry_total(e) > in_inode_space {
            break;
        }
        used += entry_total(e);
        in_inode += 1;
    }
    let needed = block_bytes_needed(&entries[in_inode..]);
    if needed > block_size {
        return Err(XattrError::TooLarge {
            needed,
            available: block_size,
        });
    }
    Ok(in_inode)
}

/// The kernel's entry hash, signed-char variant (see the module docs).
fn entry_hash(name: &[u8], value: &[u8]) -> u32 {
    let mut hash = 0u32;
    for &c in name {
        // Sign-extend the byte as x86's `char` does.
        hash = (hash << 5) ^ (hash >> 27) ^ (i32::from(c as i8) as u32);
    }
    for word in value.chunks(4) {
        let mut w = [0u8; 4];
        w[..word.len()].copy_from_slice(word);
        hash = (hash << 16) ^ (hash >> 16) ^ u32::from_le_bytes(w);
    }
    hash
}

/// Writes the entry table at `table_start` of `area` and the values packed
/// down from its end; `e_value_offs` is relative to `offs_base`. Returns
/// the entries' hashes.
///
/// # Panics
/// If the entries do not fit (including the terminator) or an offset does
/// not fit 16 bits.
fn encode_entries(
    entries: &[XattrEntry],
    area: &mut [u8],
    table_start: usize,
    offs_base: usize,
) -> Vec<u32> {
    let table_end = table_start + entries.iter().map(entry_len).sum::<usize>();
    let values: usize = entries.iter().map(|e| pad4(e.value.len())).sum();
    assert!(
        table_end + 4 + values <= area.len(),
        "xattrs need {} bytes, the area has {}",
        table_end + 4 + values,
        area.len()
    );
    let mut pos = table_start;
    let mut value_end = area.len();
    let mut hashes = Vec::with_capacity(entries.len());
    for e in entries {
        let name_len = u8::try_from(e.name.len()).expect("name suffix longer than 255 bytes");
        let offs = if e.value.is_empty() {
            0
        } else {
            value_end -= pad4(e.value.len());
            area[value_end..value_end + e.value.len()].copy_from_slice(&e.value);
            u16::try_from(value_end - offs_base).expect("xattr value offset beyond 64 KiB")
        };
        let value_size = u32::try_from(e.value.len()).expect("xattr value larger than 4 GiB");
        let hash = entry_hash(&e.name, &e.value);
        area[pos] = name_len;
        area[pos + 1] = e.index;
        area[pos + 2..pos + 4].copy_from_slice(&offs.to_le_bytes());
        // e_value_inum (pos + 4 .. pos + 8) stays 0.
        area[pos + 8..pos + 12].copy_from_slice(&value_size.to_le_bytes());
        area[pos + 12..pos + 16].copy_from_slice(&hash.to_le_bytes());
        area[pos + ENTRY_HEADER..pos + ENTRY_HEADER + e.name.len()].copy_from_slice(&e.name);
        pos += entry_len(e);
        hashes.push(hash);
    }
    // The terminator and the name padding are the zeros `area` was
    // cleared to.
    hashes
}

/// Encodes the in-inode area. `out` is the inode from offset
/// `128 + i_extra_isize` to its end (96 bytes in a 256-byte inode with
/// `i_extra_isize` 32); it is cleared first. Writes the magic, the entries
/// in the given order with their hashes (`e_value_offs` relative to the
/// first entry), the terminator, and the values packed from the end. With
/// no entries `out` stays all zero.
///
/// # Panics
/// If the entries need more than `out.len()` bytes
/// ([`inode_bytes_needed`]).
pub(crate) fn encode_in_inode(entries: &[XattrEntry], out: &mut [u8]) {
    out.fill(0);
    if entries.is_empty() {
        return;
    }
    assert!(out.len() >= 8, "in-inode xattr area of {} bytes", out.len());
    out[..4].copy_from_slice(&MAGIC.to_le_bytes());
    encode_entries(entries, out, 4, 4);
}

/// Encodes a whole xattr block (`block` is cleared first): the header
/// (magic, refcount 1, blocks 1, the kernel's block hash, checksum), the
/// entries in the given order from offset 32 with their hashes, the
/// terminator, and the values packed from the end of the block
/// (`e_value_offs` relative to the block start). With `csum_seed` (the
/// filesystem's metadata_csum seed) `h_checksum` is
/// crc32c(seed, le64 `block_nr`, block with `h_checksum` zero); with
/// `None` it stays 0. Entries must already be in the kernel's order (as
/// [`prepare`] returns them).
///
/// # Panics
/// If the entries need more than `block.len()` bytes
/// ([`block_bytes_needed`]).
pub(crate) fn encode_block(
    entries: &[XattrEntry],
    block: &mut [u8],
    block_nr: u64,
    csum_seed: Option<u32>,
) {
    block.fill(0);
    let hashes = encode_entries(entries, block, BLOCK_HEADER, 0);
    let block_hash = if hashes.contains(&0) {
        0
    } else {
        hashes.iter().fold(0u32, |h, &e| (h << 16) ^ (h >> 16) ^ e)
    };
    block[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    block[4..8].copy_from_slice(&1u32.to_le_bytes());
    block[8..12].copy_from_slice(&1u32.to_le_bytes());
    block[12..16].copy_from_slice(&block_hash.to_le_bytes());
    if let Some(seed) = csum_seed {
        let csum = crc32c(crc32c(seed, &block_nr.to_le_bytes()), block);
        block[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 4].copy_from_slice(&csum.to_le_bytes());
    }
}

// ---- Reading (used by `crate::reader`) ----

/// Why an xattr area cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// The bytes break the format.
    Corrupt(&'static str),
    /// A value lives in its own inode (`ea_inode`), which is not read.
    ValueInInode,
}

/// The full name of an attribute from its namespace index and stored
/// suffix; `None` for an index the kernel has no handler for (the kernel
/// leaves such attributes out of `listxattr` too).
fn full_name(index: u8, suffix: &[u8]) -> Option<Vec<u8>> {
    let prefix: &[u8] = match WHOLE_NAMES.iter().find(|&&(_, i)| i == index) {
        Some(&(whole, _)) => whole,
        None => PREFIXES.iter().find(|&&(_, i)| i == index)?.0,
    };
    let mut name = Vec::with_capacity(prefix.len() + suffix.len());
    name.extend_from_slice(prefix);
    name.extend_from_slice(suffix);
    Some(name)
}

/// Converts a POSIX ACL from ext4's on-disk format (version 1, short
/// entries for USER_OBJ, GROUP_OBJ, MASK and OTHER) back to the Linux VFS
/// format (version 2, 8-byte entries, id 0xFFFF_FFFF where there is none),
/// as the kernel's `ext4_acl_from_disk` followed by `posix_acl_to_xattr`
/// does. The order of entries is kept as stored (not validated).
fn acl_from_disk(disk: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let bad = DecodeError::Corrupt;
    let (header, mut rest) = disk
        .split_first_chunk::<4>()
        .ok_or(bad("ACL shorter than its header"))?;
    if u32::from_le_bytes(*header) != 1 {
        return Err(bad("ACL is not version 1 of ext4's format"));
    }
    let mut out = Vec::with_capacity(4 + 2 * rest.len());
    out.extend_from_slice(&2u32.to_le_bytes());
    while !rest.is_empty() {
        let (short, after) = rest
            .split_first_chunk::<4>()
            .ok_or(bad("ACL entry cut short"))?;
        let tag = u16::from_le_bytes([short[0], short[1]]);
        let id = match tag {
            ACL_USER | ACL_GROUP => {
                let (id, after) = after
                    .split_first_chunk::<4>()
                    .ok_or(bad("ACL entry cut short"))?;
                rest = after;
                u32::from_le_bytes(*id)
            }
            ACL_USER_OBJ | ACL_GROUP_OBJ | ACL_MASK | ACL_OTHER => {
                rest = after;
                u32::MAX
            }
            _ => return Err(bad("ACL entry with an unknown tag")),
        };
        out.extend_from_slice(short);
        out.extend_from_slice(&id.to_le_bytes());
    }
    Ok(out)
}

/// Decodes the entry table of `area` starting at `table_start`, whose
/// `e_value_offs` count from `offs_base`, appending (full name, value) to
/// `out` with ACLs converted to the VFS format. Every entry and value must
/// lie inside `area`.
fn decode_entries(
    area: &[u8],
    table_start: usize,
    offs_base: usize,
    out: &mut Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<(), DecodeError> {
    let bad = DecodeError::Corrupt;
    let mut pos = table_start;
    loop {
        let word = area
            .get(pos..pos + 4)
            .ok_or(bad("xattr entry table runs past its area"))?;
        if word == [0; 4] {
            return Ok(());
        }
        let h = area
            .get(pos..pos + ENTRY_HEADER)
            .ok_or(bad("xattr entry runs past its area"))?;
        let name_len = usize::from(h[0]);
        let index = h[1];
        let offs = usize::from(u16::from_le_bytes([h[2], h[3]]));
        let inum = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        let size = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize;
        let name = area
            .get(pos + ENTRY_HEADER..pos + ENTRY_HEADER + name_len)
            .ok_or(bad("xattr name runs past its area"))?;
        if inum != 0 {
            return Err(DecodeError::ValueInInode);
        }
        let value = if size == 0 {
            &[][..]
        } else {
            let start = offs_base + offs;
            start
                .checked_add(size)
                .and_then(|end| area.get(start..end))
                .ok_or(bad("xattr value runs past its area"))?
        };
        if let Some(full) = full_name(index, name) {
            let value = if matches!(index, INDEX_ACL_ACCESS | INDEX_ACL_DEFAULT) {
                acl_from_disk(value)?
            } else {
                value.to_vec()
            };
            out.push((full, value));
        }
        pos += ENTRY_HEADER + pad4(name_len);
    }
}

/// Decodes the in-inode area (the inode bytes from `128 + i_extra_isize` to
/// its end), appending (full name, value) pairs to `out`. An area without
/// the magic holds no attributes.
pub(crate) fn decode_in_inode(
    area: &[u8],
    out: &mut Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<(), DecodeError> {
    match area.first_chunk::<4>() {
        Some(m) if u32::from_le_bytes(*m) == MAGIC => decode_entries(area, 4, 4, out),
        _ => Ok(()),
    }
}

/// Decodes an xattr block, appending (full name, value) pairs to `out`. The
/// header must have the magic and `h_blocks` 1.
pub(crate) fn decode_block(
    block: &[u8],
    out: &mut Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<(), DecodeError> {
    let h = block
        .get(..BLOCK_HEADER)
        .ok_or(DecodeError::Corrupt("xattr block shorter than its header"))?;
    if u32::from_le_bytes([h[0], h[1], h[2], h[3]]) != MAGIC {
        return Err(DecodeError::Corrupt("xattr block without its magic"));
    }
    if u32::from_le_bytes([h[8], h[9], h[10], h[11]]) != 1 {
        return Err(DecodeError::Corrupt(
            "xattr block with h_blocks other than 1",
        ));
    }
    decode_entries(block, BLOCK_HEADER, 0, out)
}

/// Whether the xattr block's `h_checksum` is right for block number
/// `block_nr` and the filesystem seed `seed`.
pub(crate) fn block_checksum_ok(block: &[u8], block_nr: u64, seed: u32) -> bool {
    if block.len() < BLOCK_HEADER {
        return false;
    }
    let c = crc32c(seed, &block_nr.to_le_bytes());
    let c = crc32c(c, &block[..CHECKSUM_OFFSET]);
    let c = crc32c(c, &[0; 4]);
    let c = crc32c(c, &block[CHECKSUM_OFFSET + 4..]);
    let stored = &block[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 4];
    u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]) == c
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::process::{Command, Output};

    fn entry(index: u8, name: &[u8], value: &[u8]) -> XattrEntry {
        XattrEntry {
            index,
            name: name.to_vec(),
            value: value.to_vec(),
        }
    }

    /// A VFS-format ACL from (tag, perm, id) triples.
    fn vfs_acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut v = 2u32.to_le_bytes().to_vec();
        for &(tag, perm, id) in entries {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        v
    }

    const UNDEF: u32 = u32::MAX;

    /// user::rw-, user:1000:rwx, group::r--, group:50:r-x, mask::rwx,
    /// other::r--
    fn full_acl() -> Vec<u8> {
        vfs_acl(&[
            (ACL_USER_OBJ, 6, UNDEF),
            (ACL_USER, 7, 1000),
            (ACL_GROUP_OBJ, 4, UNDEF),
            (ACL_GROUP, 5, 50),
            (ACL_MASK, 7, UNDEF),
            (ACL_OTHER, 4, UNDEF),
        ])
    }

    #[test]
    fn names_map_to_their_namespace_index() {
        let cases: [(&[u8], u8, &[u8]); 9] = [
            (b"user.mime_type", 1, b"mime_type"),
            (b"system.posix_acl_access", 2, b""),
            (b"system.posix_acl_default", 3, b""),
            (b"trusted.overlay.opaque", 4, b"overlay.opaque"),
            (b"security.capability", 6, b"capability"),
            (b"security.selinux", 6, b"selinux"),
            (b"system.nfs4_acl", 7, b"nfs4_acl"),
            (b"system.posix_acl_accessX", 7, b"posix_acl_accessX"),
            (b"system.richacl", 8, b""),
        ];
        for (full, index, suffix) in cases {
            assert_eq!(split_name(full), Ok((index, suffix)), "{full:?}");
        }
        assert_eq!(split_name(b"user"), Err(XattrError::UnknownPrefix));
        assert_eq!(split_name(b"lustre.lov"), Err(XattrError::UnknownPrefix));
        assert_eq!(
            split_name(b"gnu.translator"),
            Err(XattrError::UnknownPrefix)
        );
        assert_eq!(split_name(b"User.x"), Err(XattrError::UnknownPrefix));
        assert_eq!(split_name(b"user."), Err(XattrError::EmptyName));
        assert_eq!(split_name(b"system.data"), Err(XattrError::Reserved));
        let mut long = b"trusted.".to_vec();
        long.extend_from_slice(&[b'n'; 255]);
        assert_eq!(split_name(&long).map(|(i, s)| (i, s.len())), Ok((4, 255)));
        long.push(b'n');
        assert_eq!(split_name(&long), Err(XattrError::NameTooLong));
    }

    /// The bytes libext2fs 1.47.0 (`debugfs ea_set`) stores for
    /// [`full_acl`].
    #[test]
    fn acl_conversion_golden_bytes() {
        let expected: [u8; 36] = [
            0x01, 0, 0, 0, // version 1
            0x01, 0, 0x06, 0, // user::rw-
            0x02, 0, 0x07, 0, 0xe8, 0x03, 0, 0, // user:1000:rwx
            0x04, 0, 0x04, 0, // group::r--
            0x08, 0, 0x05, 0, 0x32, 0, 0, 0, // group:50:r-x
            0x10, 0, 0x07, 0, // mask::rwx
            0x20, 0, 0x04, 0, // other::r--
        ];
        assert_eq!(acl_to_disk(&full_acl()).unwrap(), expected);
        // The minimal ACL of mode 0751: three short entries.
        let minimal = vfs_acl(&[
            (ACL_USER_OBJ, 7, 0),
            (ACL_GROUP_OBJ, 5, 0),
            (ACL_OTHER, 1, 0),
        ]);
        assert_eq!(
            acl_to_disk(&minimal).unwrap(),
            [1, 0, 0, 0, 1, 0, 7, 0, 4, 0, 5, 0, 0x20, 0, 1, 0]
        );
    }

    #[test]
    fn malformed_acls_are_rejected() {
        let bad = |v: &[u8]| match acl_to_disk(v) {
            Err(XattrError::BadAcl(_)) => {}
            other => panic!("{v:x?} gave {other:?}"),
        };
        bad(b"");
        bad(&[2, 0, 0]);
        bad(&2u32.to_le_bytes()); // no entries
        let mut v1 = full_acl();
        v1[0] = 1;
        bad(&v1);
        let mut truncated = full_acl();
        truncated.pop();
        bad(&truncated);
        // USER without a mask.
        bad(&vfs_acl(&[
            (ACL_USER_OBJ, 6, 0),
            (ACL_USER, 6, 7),
            (ACL_GROUP_OBJ, 4, 0),
            (ACL_OTHER, 4, 0),
        ]));
        // GROUP_OBJ before USER_OBJ.
        bad(&vfs_acl(&[
            (ACL_GROUP_OBJ, 4, 0),
            (ACL_USER_OBJ, 6, 0),
            (ACL_OTHER, 4, 0),
        ]));
        // Missing OTHER.
        bad(&vfs_acl(&[(ACL_USER_OBJ, 6, 0), (ACL_GROUP_OBJ, 4, 0)]));
        // Two OTHER entries.
        bad(&vfs_acl(&[
            (ACL_USER_OBJ, 6, 0),
            (ACL_GROUP_OBJ, 4, 0),
            (ACL_OTHER, 4, 0),
            (ACL_OTHER, 4, 0),
        ]));
        // Unknown tag, permission 8, the invalid id.
        bad(&vfs_acl(&[
            (ACL_USER_OBJ, 6, 0),
            (0x40, 4, 0),
            (ACL_OTHER, 4, 0),
        ]));
        bad(&vfs_acl(&[
            (ACL_USER_OBJ, 8, 0),
            (ACL_GROUP_OBJ, 4, 0),
            (ACL_OTHER, 4, 0),
        ]));
        bad(&vfs_acl(&[
            (ACL_USER_OBJ, 6, 0),
            (ACL_USER, 6, UNDEF),
            (ACL_GROUP_OBJ, 4, 0),
            (ACL_MASK, 6, 0),
            (ACL_OTHER, 4, 0),
        ]));
    }

    fn map(items: &[(&[u8], &[u8])]) -> BTreeMap<Box<[u8]>, Box<[u8]>> {
        items
            .iter()
            .map(|&(n, v)| (Box::from(n), Box::from(v)))
            .collect()
    }

    #[test]
    fn prepare_sorts_by_index_then_length_then_name() {
        let acl = full_acl();
        let m = map(&[
            (b"user.bb", b"1"),
            (b"user.a", b"2"),
            (b"user.ab", b"3"),
            (b"user.c", b"4"),
            (b"trusted.z", b"5"),
            (b"security.capability", b"6"),
            (b"system.posix_acl_access", &acl),
            (b"system.foo", b""),
        ]);
        let got = prepare(&m).unwrap();
        let order: Vec<(u8, &[u8])> = got.iter().map(|e| (e.index, &e.name[..])).collect();
        let expected: [(u8, &[u8]); 8] = [
            (1, b"a"),
            (1, b"c"),
            (1, b"ab"),
            (1, b"bb"),
            (2, b""),
            (4, b"z"),
            (6, b"capability"),
            (7, b"foo"),
        ];
        assert_eq!(order, expected);
        assert_eq!(got[4].value, acl_to_disk(&acl).unwrap());
        assert_eq!(got[0].value, b"2");
    }

    #[test]
    fn prepare_names_the_offending_attribute() {
        let m = map(&[(b"user.ok", b"1"), (b"xfsroot.x", b"2")]);
        assert_eq!(
            prepare(&m),
            Err((b"xfsroot.x".to_vec(), XattrError::UnknownPrefix))
        );
        let m = map(&[(b"system.posix_acl_default", b"\x02\0\0\0")]);
        assert!(matches!(
            prepare(&m),
            Err((name, XattrError::BadAcl(_))) if name == b"system.posix_acl_default"
        ));
    }

    #[test]
    fn sizes_count_headers_names_values_and_terminators() {
        let es = [entry(1, b"a", b"1"), entry(6, b"selinux", &[b'x'; 26])];
        // 16 + 4 + 4, then 16 + 8 + 28.
        assert_eq!(inode_bytes_needed(&es), 4 + 24 + 52 + 4);
        assert_eq!(block_bytes_needed(&es), 32 + 24 + 52 + 4);
        assert_eq!(inode_bytes_needed(&[]), 0);
        assert_eq!(block_bytes_needed(&[]), 0);
        assert_eq!(inode_bytes_needed(&[entry(1, b"empty", b"")]), 4 + 24 + 4);
    }

    #[test]
    fn split_is_greedy_in_order() {
        // Each takes 16 + 4 + 20 = 40 bytes; 8 + 2 * 40 = 88 <= 96.
        let e40 = |n: &[u8]| entry(1, n, &[7; 20]);
        let es = [e40(b"a"), e40(b"b"), e40(b"c"), entry(1, b"d", b"")];
        assert_eq!(split(&es, 96, 4096), Ok(2));
        // Exactly full: 8 + 2 * 40 = 88.
        assert_eq!(split(&es, 88, 4096), Ok(2));
        assert_eq!(split(&es, 87, 4096), Ok(1));
        // A small entry after one that does not fit still goes to the
        // block: placement is a prefix.
        assert_eq!(
            split(
                &[e40(b"a"), e40(b"b"), e40(b"c"), entry(1, b"d", b"")],
                120,
                4096
            ),
            Ok(2)
        );
        assert_eq!(split(&es, 0, 4096), Ok(0));
        assert_eq!(split(&es[..2], 96, 4096), Ok(2));
        assert_eq!(split(&[], 96, 4096), Ok(0));
    }

    #[test]
    fn split_reports_what_does_not_fit_a_block() {
        let big = entry(1, b"big", &[0; 4000]);
        let es = [entry(1, b"a", b"x"), big.clone(), entry(1, b"b", &[0; 100])];
        // 32 + (20 + 4000) + (20 + 100) + 4 = 4176.
        assert_eq!(
            split(&es, 96, 4096),
            Err(XattrError::TooLarge {
                needed: 4176,
                available: 4096
            })
        );
        assert_eq!(split(&es[..2], 96, 4096), Ok(1));
        // 32 + 4020 + 4 = 4056 fits exactly into 4056 bytes, not 4055.
        assert_eq!(split(&es[1..2], 0, 4056), Ok(0));
        assert!(split(&es[1..2], 0, 4055).is_err());
    }

    /// Golden hashes: the first two were written by libext2fs 1.47.0 into
    /// an xattr block (`user.empty` with an empty value and
    /// `security.selinux` = "system_u:object_r:etc_t:s0"); the last is the
    /// signed variant for a name byte >= 0x80, which e2fsck accepts (see
    /// `e2fsck_accepts_our_encoding`).
    #[test]
    fn entry_hash_golden_values() {
        assert_eq!(entry_hash(b"empty", b""), 0x0667_4ef9);
        assert_eq!(
            entry_hash(b"selinux", b"system_u:object_r:etc_t:s0"),
            0x0dd3_00e2
        );
        // Signed: 0xe9 enters as 0xffff_ffe9; unsigned would give 0xe9.
        assert_eq!(entry_hash(b"\xe9", b""), 0xffff_ffe9);
        assert_eq!(entry_hash(b"a\xe9", b""), (0x61 << 5) ^ 0xffff_ffe9);
        // Values are hashed as little-endian words, padded with zeros.
        assert_eq!(entry_hash(b"", b"\x01\x02\x03"), 0x0003_0201);
    }

    /// Decodes an entry table: (entry, e_value_offs, e_hash) in order.
    fn decode(area: &[u8], table_start: usize, offs_base: usize) -> Vec<(XattrEntry, u16, u32)> {
        let mut out = Vec::new();
        let mut pos = table_start;
        while area[pos..pos + 4] != [0; 4] {
            let name_len = usize::from(area[pos]);
            let offs = u16::from_le_bytes([area[pos + 2], area[pos + 3]]);
            let inum = u32::from_le_bytes(area[pos + 4..pos + 8].try_into().unwrap());
            assert_eq!(inum, 0);
            let size = u32::from_le_bytes(area[pos + 8..pos + 12].try_into().unwrap()) as usize;
            let hash = u32::from_le_bytes(area[pos + 12..pos + 16].try_into().unwrap());
            let name = area[pos + 16..pos + 16 + name_len].to_vec();
            let v = usize::from(offs) + offs_base;
            let value = if size == 0 {
                Vec::new()
            } else {
                area[v..v + size].to_vec()
            };
            out.push((
                XattrEntry {
                    index: area[pos + 1],
                    name,
                    value,
                },
                offs,
                hash,
            ));
            pos += 16 + pad4(name_len);
        }
        out
    }

    #[test]
    fn encode_in_inode_layout() {
        let es = [
            entry(1, b"a", b"1"),
            entry(1, b"bb", b"hello"),
            entry(1, b"e", b""),
        ];
        let mut area = [0xAAu8; 96];
        encode_in_inode(&es, &mut area);
        assert_eq!(area[..4], MAGIC.to_le_bytes());
        // The first value sits at the very end, relative to offset 4.
        assert_eq!(area[92..96], *b"1\0\0\0");
        assert_eq!(area[84..92], *b"hello\0\0\0");
        let decoded = decode(&area, 4, 4);
        assert_eq!(decoded.iter().map(|d| d.0.clone()).collect::<Vec<_>>(), es);
        assert_eq!(decoded.iter().map(|d| d.1).collect::<Vec<_>>(), [88, 80, 0]);
        assert_eq!(decoded[2].2, entry_hash(b"e", b""));
        // Terminator after the third entry (4 + 20 + 20 + 20), zeros up to
        // the values.
        assert!(area[64..84].iter().all(|&b| b == 0));
        let mut area = [0xAAu8; 96];
        encode_in_inode(&[], &mut area);
        assert_eq!(area, [0; 96]);
    }

    #[test]
    fn encode_block_layout_hash_and_checksum() {
        let es = [
            entry(1, b"empty", b""),
            entry(6, b"selinux", b"system_u:object_r:etc_t:s0"),
        ];
        let mut block = vec![0xAAu8; 1024];
        encode_block(&es, &mut block, 1619, None);
        assert_eq!(block[..12], [0, 0, 2, 0xea, 1, 0, 0, 0, 1, 0, 0, 0]);
        let h: u32 = (0x0667_4ef9 << 16) ^ (0x0667_4ef9 >> 16) ^ 0x0dd3_00e2;
        assert_eq!(block[12..16], h.to_le_bytes());
        assert_eq!(block[16..32], [0; 16]);
        let decoded = decode(&block, 32, 0);
        assert_eq!(decoded.iter().map(|d| d.0.clone()).collect::<Vec<_>>(), es);
        assert_eq!(decoded[0].1, 0);
        assert_eq!(decoded[1].1, 1024 - 28);
        assert_eq!(decoded[1].2, 0x0dd3_00e2);
        // With a seed, the checksum covers the block number and the block.
        let mut with_csum = vec![0u8; 1024];
        encode_block(&es, &mut with_csum, 1619, Some(0x1234_5678));
        let csum = u32::from_le_bytes(with_csum[16..20].try_into().unwrap());
        assert_eq!(
            csum,
            crc32c(crc32c(0x1234_5678, &1619u64.to_le_bytes()), &block)
        );
        with_csum[16..20].fill(0);
        assert_eq!(with_csum, block);
        let mut other_nr = vec![0u8; 1024];
        encode_block(&es, &mut other_nr, 1620, Some(0x1234_5678));
        assert_ne!(other_nr[16..20], csum.to_le_bytes());
        // An entry hash of 0 makes the block hash 0 (kernel rule); the
        // empty name with an empty value hashes to 0.
        encode_block(&[entry(7, b"", b"")], &mut block, 1, None);
        assert_eq!(block[12..16], [0; 4]);
    }

    // ---- Comparison with e2fsprogs ----

    fn run(cmd: &str, args: &[&dyn AsRef<OsStr>]) -> Output {
        Command::new(cmd)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cmd} (install e2fsprogs): {e}"))
    }

    fn le16(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([b[at], b[at + 1]])
    }

    fn le32(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    /// Byte offset of inode `ino` in the image (flex_bg-agnostic: reads the
    /// inode table location from the group descriptor).
    fn inode_offset(img: &[u8], ino: u32) -> usize {
        let sb = &img[1024..2048];
        let bs = 1024usize << le32(sb, 24);
        let inode_size = usize::from(le16(sb, 88));
        let ipg = le32(sb, 40);
        let desc_size = if le32(sb, 0x60) & 0x80 != 0 {
            usize::from(le16(sb, 0xFE))
        } else {
            32
        };
        let group = ((ino - 1) / ipg) as usize;
        let gdt = if bs == 1024 { 2048 } else { bs };
        let desc = &img[gdt + group * desc_size..];
        let mut table = u64::from(le32(desc, 8));
        if desc_size >= 64 {
            table |= u64::from(le32(desc, 0x28)) << 32;
        }
        table as usize * bs + ((ino - 1) % ipg) as usize * inode_size
    }

    /// Normalizes what libext2fs and this module may legitimately write
    /// differently: in-inode hashes (libext2fs writes 0 there), the value
    /// offset of empty values (libext2fs points them at the area's end,
    /// the kernel writes 0), and the block hash (libext2fs writes 0).
    fn normalize(area: &mut [u8], table_start: usize, in_inode: bool) {
        let mut pos = table_start;
        while area[pos..pos + 4] != [0; 4] {
            if le32(area, pos + 8) == 0 {
                area[pos + 2..pos + 4].fill(0);
            }
            if in_inode || !area[pos + 16..pos + 16 + usize::from(area[pos])].is_ascii() {
                area[pos + 12..pos + 16].fill(0);
            }
            pos += 16 + pad4(usize::from(area[pos]));
        }
        if !in_inode {
            area[12..20].fill(0); // h_hash, h_checksum
        }
    }

    /// Sets xattrs with debugfs (libext2fs), checks that this module
    /// encodes the entries libext2fs placed into the inode and the block
    /// the same way, then overwrites both with this module's encoding (in
    /// the kernel's order) and checks that e2fsck accepts the image and
    /// debugfs reads the same attributes back.
    fn compare_with_libext2fs(metadata_csum: bool) {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let img_path = p("fs.img");
        let features = if metadata_csum {
            "metadata_csum"
        } else {
            "^metadata_csum"
        };
        let out = run(
            "mke2fs",
            &[
                &"-q", &"-F", &"-t", &"ext4", &"-I", &"256", &"-b", &"4096", &"-O", &features,
                &img_path, &"8M",
            ],
        );
        assert!(out.status.success(), "mke2fs: {out:?}");

        let default_acl = vfs_acl(&[
            (ACL_USER_OBJ, 7, UNDEF),
            (ACL_GROUP_OBJ, 5, UNDEF),
            (ACL_OTHER, 0, UNDEF),
        ]);
        let big: Vec<u8> = (0..1500u32).map(|i| (i * 7 % 251) as u8).collect();
        let cap = [
            0, 0, 0, 2, 0, 0x30, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let attrs: Vec<(&[u8], Vec<u8>)> = vec![
            (b"system.posix_acl_access", full_acl()),
            (b"security.capability", cap.to_vec()),
            (b"user.a", b"1".to_vec()),
            (b"user.big", big),
            (b"user.empty", Vec::new()),
            (b"trusted.t", b"xyz".to_vec()),
            (b"system.posix_acl_default", default_acl),
            (b"user.caf\xc3\xa9", b"non-ASCII name".to_vec()),
            (
                b"security.selinux",
                b"system_u:object_r:etc_t:s0\0".to_vec(),
            ),
        ];
        std::fs::write(p("data"), b"hello\n").unwrap();
        let mut script = format!("write {} f\n", p("data").display()).into_bytes();
        for (i, (name, value)) in attrs.iter().enumerate() {
            let vpath = p(&format!("v{i}"));
            std::fs::write(&vpath, value).unwrap();
            script.extend_from_slice(format!("ea_set -f {} f ", vpath.display()).as_bytes());
            script.extend_from_slice(name);
            script.push(b'\n');
        }
        std::fs::write(p("script"), &script).unwrap();
        let out = run("debugfs", &[&"-w", &"-f", &p("script"), &img_path]);
        assert!(out.status.success(), "debugfs: {out:?}");
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("ea_set:"),
            "debugfs: {out:?}"
        );

        let mut img = std::fs::read(&img_path).unwrap();
        let sb = img[1024..2048].to_vec();
        let bs = 1024usize << le32(&sb, 24);
        let inode_size = usize::from(le16(&sb, 88));
        let ino_off = inode_offset(&img, 12);
        let inode = img[ino_off..ino_off + inode_size].to_vec();
        let area_start = ino_off + 128 + usize::from(le16(&inode, 128));
        let area_end = ino_off + inode_size;
        let acl_block = u64::from(le32(&inode, 0x68)) | (u64::from(le16(&inode, 0x76)) << 32);
        assert_ne!(acl_block, 0, "libext2fs used no xattr block");
        let blk_off = acl_block as usize * bs;

        let lib_inode = decode(&img[area_start..area_end], 4, 4);
        let lib_block = decode(&img[blk_off..blk_off + bs], 32, 0);
        assert!(
            !lib_inode.is_empty() && lib_block.len() >= 2,
            "{lib_inode:?}"
        );

        // The same attributes, ACLs converted the same way.
        let full: BTreeMap<Box<[u8]>, Box<[u8]>> = attrs
            .iter()
            .map(|(n, v)| (Box::from(*n), v.clone().into_boxed_slice()))
            .collect();
        let prepared = prepare(&full).unwrap();
        let mut lib_all: Vec<XattrEntry> = lib_inode
            .iter()
            .chain(&lib_block)
            .map(|d| d.0.clone())
            .collect();
        lib_all.sort_by(|a, b| {
            (a.index, a.name.len(), &a.name).cmp(&(b.index, b.name.len(), &b.name))
        });
        assert_eq!(lib_all, prepared);

        // Byte-for-byte in libext2fs's order, up to `normalize`.
        let lib_inode_entries: Vec<_> = lib_inode.iter().map(|d| d.0.clone()).collect();
        let lib_block_entries: Vec<_> = lib_block.iter().map(|d| d.0.clone()).collect();
        let mut ours = vec![0u8; area_end - area_start];
        encode_in_inode(&lib_inode_entries, &mut ours);
        let mut theirs = img[area_start..area_end].to_vec();
        normalize(&mut ours, 4, true);
        normalize(&mut theirs, 4, true);
        assert_eq!(ours, theirs);
        let seed =
            metadata_csum.then(|| crate::checksum::csum_seed(&sb[0x68..0x78].try_into().unwrap()));
        let mut ours = vec![0u8; bs];
        encode_block(&lib_block_entries, &mut ours, acl_block, seed);
        let mut theirs = img[blk_off..blk_off + bs].to_vec();
        if let Some(seed) = seed {
            // libext2fs's own block checks out with the same formula.
            let mut zeroed = theirs.clone();
            zeroed[16..20].fill(0);
            let expected = crc32c(crc32c(seed, &acl_block.to_le_bytes()), &zeroed);
            assert_eq!(le32(&theirs, 16), expected);
        }
        normalize(&mut ours, 32, false);
        normalize(&mut theirs, 32, false);
        assert_eq!(ours, theirs);

        // Overwrite with our encoding, in our order. With metadata_csum the
        // inode checksum would no longer match, so only the block is
        // replaced there.
        let sorted = |mut v: Vec<XattrEntry>| {
            v.sort_by(|a, b| {
                (a.index, a.name.len(), &a.name).cmp(&(b.index, b.name.len(), &b.name))
            });
            v
        };
        let n_inode = lib_inode_entries.len();
        assert_eq!(
            split(&prepared, area_end - area_start, bs).map(|n| n > 0),
            Ok(true)
        );
        if !metadata_csum {
            encode_in_inode(&sorted(lib_inode_entries), &mut img[area_start..area_end]);
        }
        encode_block(
            &sorted(lib_block_entries),
            &mut img[blk_off..blk_off + bs],
            acl_block,
            seed,
        );
        std::fs::write(&img_path, &img).unwrap();
        let out = run("e2fsck", &[&"-fn", &img_path]);
        assert!(
            out.status.success(),
            "e2fsck rejects our xattrs ({n_inode} in the inode): {out:?}"
        );

        // debugfs reads back what was set.
        for (i, (name, value)) in attrs.iter().enumerate() {
            let got_path = p(&format!("got{i}"));
            let mut cmd = format!("ea_get -f {} f ", got_path.display()).into_bytes();
            cmd.extend_from_slice(name);
            cmd.push(b'\n');
            std::fs::write(p("get"), &cmd).unwrap();
            let out = run("debugfs", &[&"-f", &p("get"), &img_path]);
            assert!(out.status.success(), "debugfs: {out:?}");
            let got = std::fs::read(&got_path).unwrap_or_else(|e| panic!("{name:?}: {e} {out:?}"));
            if name.starts_with(b"system.posix_acl") {
                // libext2fs turns the undefined ids of *_OBJ entries to 0.
                assert_eq!(acl_to_disk(&got), acl_to_disk(value), "{name:?}");
            } else {
                assert_eq!(&got, value, "{name:?}");
            }
        }
    }

    #[test]
    fn e2fsck_accepts_our_encoding() {
        compare_with_libext2fs(false);
    }

    #[test]
    fn e2fsck_accepts_our_encoding_with_metadata_csum() {
        compare_with_libext2fs(true);
    }

    #[test]
    fn run_reports_a_missing_tool_clearly() {
        let r = std::panic::catch_unwind(|| run("no-such-e2fs-tool", &[]));
        let msg = r.unwrap_err();
        let msg = msg.downcast_ref::<String>().unwrap();
        assert!(msg.contains("install e2fsprogs"), "{msg}");
    }
}
