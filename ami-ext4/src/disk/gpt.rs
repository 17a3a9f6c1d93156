//! The GUID Partition Table, UEFI 2.x §5.3: the GPT header (§5.3.2,
//! table 5-5) and the partition entry array (§5.3.3, table 5-6).
//!
//! Header (92 bytes, rest of its sector zero):
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0x00 | 8 | Signature `"EFI PART"` |
//! | 0x08 | 4 | Revision `0x00010000` |
//! | 0x0C | 4 | HeaderSize (92) |
//! | 0x10 | 4 | HeaderCRC32 (over HeaderSize bytes, this field zero) |
//! | 0x14 | 4 | Reserved (zero) |
//! | 0x18 | 8 | MyLBA |
//! | 0x20 | 8 | AlternateLBA |
//! | 0x28 | 8 | FirstUsableLBA |
//! | 0x30 | 8 | LastUsableLBA |
//! | 0x38 | 16 | DiskGUID |
//! | 0x48 | 8 | PartitionEntryLBA |
//! | 0x50 | 4 | NumberOfPartitionEntries (128) |
//! | 0x54 | 4 | SizeOfPartitionEntry (128) |
//! | 0x58 | 4 | PartitionEntryArrayCRC32 |
//!
//! Entry (128 bytes): PartitionTypeGUID (0x00), UniquePartitionGUID (0x10),
//! StartingLBA (0x20), EndingLBA inclusive (0x28), Attributes (0x30),
//! PartitionName, 36 UTF-16LE code units (0x38).
//!
//! The primary header is at LBA 1 with its entries at LBA 2-33; the backup
//! entries fill the 32 sectors before the last one, which holds the backup
//! header. With 512-byte sectors the first usable LBA is 34.

use super::{Error, Guid, Result, SECTOR_SIZE};

/// The header signature.
pub const SIGNATURE: [u8; 8] = *b"EFI PART";
/// Revision 1.0.
pub const REVISION: u32 = 0x0001_0000;
/// Size of the header in bytes.
pub const HEADER_SIZE: u32 = 92;
/// Number of entries in the array.
pub const ENTRY_COUNT: u32 = 128;
/// Size of one entry in bytes.
pub const ENTRY_SIZE: usize = 128;
/// Sectors of the entry array (128 × 128 bytes / 512).
pub const ENTRY_SECTORS: u64 = ENTRY_COUNT as u64 * ENTRY_SIZE as u64 / SECTOR_SIZE;
/// Sectors of one copy of the table: header plus entries.
pub const TABLE_SECTORS: u64 = 1 + ENTRY_SECTORS;
/// First usable LBA: after the protective MBR, header and entries.
pub const FIRST_USABLE_LBA: u64 = 2 + ENTRY_SECTORS;
/// Maximum length of a partition name in UTF-16 code units.
pub const NAME_UNITS: usize = 36;

/// A partition entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entry {
    /// 0x00 PartitionTypeGUID; all zeros is an unused entry.
    pub type_guid: Guid,
    /// 0x10 UniquePartitionGUID.
    pub unique_guid: Guid,
    /// 0x20 StartingLBA.
    pub first_lba: u64,
    /// 0x28 EndingLBA (inclusive).
    pub last_lba: u64,
    /// 0x30 Attributes.
    pub attributes: u64,
    /// 0x38 PartitionName (at most 36 UTF-16 code units; longer names are cut).
    pub name: String,
}

impl Entry {
    /// Encodes the entry.
    pub fn encode(&self) -> [u8; ENTRY_SIZE] {
        let mut out = [0u8; ENTRY_SIZE];
        out[0x00..0x10].copy_from_slice(&self.type_guid.0);
        out[0x10..0x20].copy_from_slice(&self.unique_guid.0);
        out[0x20..0x28].copy_from_slice(&self.first_lba.to_le_bytes());
        out[0x28..0x30].copy_from_slice(&self.last_lba.to_le_bytes());
        out[0x30..0x38].copy_from_slice(&self.attributes.to_le_bytes());
        for (i, unit) in self.name.encode_utf16().take(NAME_UNITS).enumerate() {
            out[0x38 + 2 * i..0x3A + 2 * i].copy_from_slice(&unit.to_le_bytes());
        }
        out
    }

    /// Decodes an entry; the name stops at the first NUL.
    pub fn decode(b: &[u8; ENTRY_SIZE]) -> Self {
        let units: Vec<u16> = b[0x38..]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        Entry {
            type_guid: Guid(b[0x00..0x10].try_into().unwrap_or_default()),
            unique_guid: Guid(b[0x10..0x20].try_into().unwrap_or_default()),
            first_lba: le64(&b[0x20..]),
            last_lba: le64(&b[0x28..]),
            attributes: le64(&b[0x30..]),
            name: String::from_utf16_lossy(&units),
        }
    }
}

fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// A GPT header (one of the two copies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// 0x18 MyLBA.
    pub my_lba: u64,
    /// 0x20 AlternateLBA.
    pub alternate_lba: u64,
    /// 0x28 FirstUsableLBA.
    pub first_usable_lba: u64,
    /// 0x30 LastUsableLBA.
    pub last_usable_lba: u64,
    /// 0x38 DiskGUID.
    pub disk_guid: Guid,
    /// 0x48 PartitionEntryLBA.
    pub entry_lba: u64,
    /// 0x50 NumberOfPartitionEntries.
    pub entry_count: u32,
    /// 0x54 SizeOfPartitionEntry.
    pub entry_size: u32,
    /// 0x58 PartitionEntryArrayCRC32.
    pub entries_crc32: u32,
}

impl Header {
    /// Encodes the header as a full sector, computing HeaderCRC32.
    pub fn encode(&self) -> [u8; SECTOR_SIZE as usize] {
        let mut out = [0u8; SECTOR_SIZE as usize];
        out[0x00..0x08].copy_from_slice(&SIGNATURE);
        out[0x08..0x0C].copy_from_slice(&REVISION.to_le_bytes());
        out[0x0C..0x10].copy_from_slice(&HEADER_SIZE.to_le_bytes());
        out[0x18..0x20].copy_from_slice(&self.my_lba.to_le_bytes());
        out[0x20..0x28].copy_from_slice(&self.alternate_lba.to_le_bytes());
        out[0x28..0x30].copy_from_slice(&self.first_usable_lba.to_le_bytes());
        out[0x30..0x38].copy_from_slice(&self.last_usable_lba.to_le_bytes());
        out[0x38..0x48].copy_from_slice(&self.disk_guid.0);
        out[0x48..0x50].copy_from_slice(&self.entry_lba.to_le_bytes());
        out[0x50..0x54].copy_from_slice(&self.entry_count.to_le_bytes());
        out[0x54..0x58].copy_from_slice(&self.entry_size.to_le_bytes());
        out[0x58..0x5C].copy_from_slice(&self.entries_crc32.to_le_bytes());
        let crc = crc32fast::hash(&out[..HEADER_SIZE as usize]);
        out[0x10..0x14].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes a header sector and checks its signature, revision, size
    /// and HeaderCRC32.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the first check that failed.
    pub fn decode(b: &[u8; SECTOR_SIZE as usize]) -> Result<Self> {
        let corrupt = |reason: String| Error::Corrupt {
            what: "GPT header",
            reason,
        };
        if b[..8] != SIGNATURE {
            return Err(corrupt("no \"EFI PART\" signature".into()));
        }
        if le32(&b[0x08..]) != REVISION || le32(&b[0x0C..]) != HEADER_SIZE {
            return Err(corrupt("unexpected revision or header size".into()));
        }
        let mut copy = *b;
        copy[0x10..0x14].fill(0);
        let crc = crc32fast::hash(&copy[..HEADER_SIZE as usize]);
        if crc != le32(&b[0x10..]) {
            return Err(corrupt(format!(
                "HeaderCRC32 is {:#010x}, computed {crc:#010x}",
                le32(&b[0x10..])
            )));
        }
        let mut guid = [0u8; 16];
        guid.copy_from_slice(&b[0x38..0x48]);
        Ok(Header {
            my_lba: le64(&b[0x18..]),
            alternate_lba: le64(&b[0x20..]),
            first_usable_lba: le64(&b[0x28..]),
            last_usable_lba: le64(&b[0x30..]),
            disk_guid: Guid(guid),
            entry_lba: le64(&b[0x48..]),
            entry_count: le32(&b[0x50..]),
            entry_size: le32(&b[0x54..]),
            entries_crc32: le32(&b[0x58..]),
        })
    }
}

/// A whole GPT (both copies) for a disk of `disk_sectors` sectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// The disk GUID.
    pub disk_guid: Guid,
    /// Size of the disk in sectors.
    pub disk_sectors: u64,
    /// The entry array, [`ENTRY_COUNT`] entries (unused ones all zero).
    pub entries: Vec<Entry>,
}

impl Table {
    /// A table holding `entries` in its first slots.
    ///
    /// # Panics
    /// If there are more than [`ENTRY_COUNT`] entries.
    pub fn new(disk_guid: Guid, disk_sectors: u64, entries: &[Entry]) -> Self {
        assert!(
            entries.len() <= ENTRY_COUNT as usize,
            "too many GPT entries"
        );
        let mut all = entries.to_vec();
        all.resize(ENTRY_COUNT as usize, Entry::default());
        Table {
            disk_guid,
            disk_sectors,
            entries: all,
        }
    }

    /// The encoded entry array.
    pub fn entry_array(&self) -> Vec<u8> {
        self.entries.iter().flat_map(|e| e.encode()).collect()
    }

    /// The primary (`backup == false`) or backup header.
    pub fn header(&self, backup: bool) -> Header {
        let last = self.disk_sectors - 1;
        let (my_lba, alternate_lba, entry_lba) = if backup {
            (last, 1, last - ENTRY_SECTORS)
        } else {
            (1, last, 2)
        };
        Header {
            my_lba,
            alternate_lba,
            first_usable_lba: FIRST_USABLE_LBA,
            last_usable_lba: last - TABLE_SECTORS,
            disk_guid: self.disk_guid,
            entry_lba,
            entry_count: ENTRY_COUNT,
            entry_size: ENTRY_SIZE as u32,
            entries_crc32: crc32fast::hash(&self.entry_array()),
        }
    }

    /// The sectors to write: `(lba, bytes)` for the primary header, the
    /// primary entries, the backup entries and the backup header.
    pub fn encode(&self) -> Vec<(u64, Vec<u8>)> {
        let array = self.entry_array();
        let primary = self.header(false);
        let backup = self.header(true);
        vec![
            (primary.my_lba, primary.encode().to_vec()),
            (primary.entry_lba, array.clone()),
            (backup.entry_lba, array),
            (backup.my_lba, backup.encode().to_vec()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_round_trip() {
        let e = Entry {
            type_guid: crate::disk::ESP_TYPE,
            unique_guid: Guid::derive(b"s", "x"),
            first_lba: 2048,
            last_lba: 4095,
            attributes: 1,
            name: "EFI System".into(),
        };
        let b = e.encode();
        // The ESP type's on-disk bytes (mixed-endian).
        assert_eq!(&b[..4], &[0x28, 0x73, 0x2A, 0xC1]);
        assert_eq!(&b[0x38..0x3C], &[b'E', 0, b'F', 0]);
        assert_eq!(Entry::decode(&b), e);
    }

    #[test]
    fn header_round_trip_and_crc() {
        let t = Table::new(Guid::derive(b"s", "d"), 1 << 20, &[]);
        let h = t.header(true);
        assert_eq!(h.last_usable_lba, (1 << 20) - 34);
        assert_eq!(h.entry_lba, (1 << 20) - 33);
        let mut b = h.encode();
        assert_eq!(Header::decode(&b).unwrap(), h);
        b[0x20] ^= 1;
        assert!(Header::decode(&b).is_err());
    }
}
