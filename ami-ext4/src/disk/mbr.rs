//! The 512-byte master boot record: a classic MBR with up to four primary
//! partition records (IBM PC format, as described in UEFI 2.x §5.2.1
//! "Legacy Master Boot Record", tables 5-1 and 5-2), and the protective MBR
//! of a GPT disk (UEFI 2.x §5.2.3, tables 5-4 and 5-5).
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0x000 | 440 | boot code (zeros: GRUB is not installed here) |
//! | 0x1B8 | 4 | unique MBR disk signature (little-endian) |
//! | 0x1BC | 2 | unknown (zero) |
//! | 0x1BE | 4 × 16 | partition records |
//! | 0x1FE | 2 | signature `55 AA` |
//!
//! A partition record is: boot indicator (0x80 = bootable), starting CHS
//! (3 bytes), OS type, ending CHS, starting LBA (u32), size in LBAs (u32).
//! CHS values use the 255-head, 63-sector geometry and saturate at
//! `FE FF FF` (cylinder 1023) like `sfdisk`.

use super::{Error, Result};

/// Size of the MBR in bytes.
pub const SIZE: usize = 512;
/// OS type of a Linux partition.
pub const LINUX_TYPE: u8 = 0x83;
/// OS type of a GPT protective partition.
pub const GPT_PROTECTIVE_TYPE: u8 = 0xEE;

const HEADS: u64 = 255;
const SECTORS: u64 = 63;

/// Encodes `lba` as a 3-byte CHS address (head, sector | cylinder high
/// bits, cylinder low byte), or `FE FF FF` when the cylinder exceeds 1023.
pub fn lba_to_chs(lba: u64) -> [u8; 3] {
    let cyl = lba / (HEADS * SECTORS);
    if cyl > 1023 {
        return [0xFE, 0xFF, 0xFF];
    }
    let head = (lba / SECTORS) % HEADS;
    let sector = lba % SECTORS + 1;
    // All three fit: head < 255, sector <= 63, cyl <= 1023.
    [
        head as u8,
        (sector as u8) | (((cyl >> 2) & 0xC0) as u8),
        (cyl & 0xFF) as u8,
    ]
}

/// One 16-byte partition record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartitionRecord {
    /// 0x00 boot indicator: 0x80 bootable, 0x00 not.
    pub boot_indicator: u8,
    /// 0x01 starting CHS.
    pub start_chs: [u8; 3],
    /// 0x04 OS type; 0 is an unused record.
    pub os_type: u8,
    /// 0x05 ending CHS.
    pub end_chs: [u8; 3],
    /// 0x08 starting LBA.
    pub start_lba: u32,
    /// 0x0C size in LBAs.
    pub size_lba: u32,
}

impl PartitionRecord {
    /// Size of a record in bytes.
    pub const SIZE: usize = 16;

    /// A record for sectors `start_lba .. start_lba + size_lba`, with CHS
    /// values computed from them. LBAs beyond 32 bits are clamped (callers
    /// check the disk size first, see [`super::plan()`]).
    pub fn new(bootable: bool, os_type: u8, start_lba: u64, size_lba: u64) -> Self {
        let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        PartitionRecord {
            boot_indicator: if bootable { 0x80 } else { 0 },
            start_chs: lba_to_chs(start_lba),
            os_type,
            end_chs: lba_to_chs((start_lba + size_lba).saturating_sub(1)),
            start_lba: clamp(start_lba),
            size_lba: clamp(size_lba),
        }
    }

    /// Encodes the record.
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        out[0] = self.boot_indicator;
        out[1..4].copy_from_slice(&self.start_chs);
        out[4] = self.os_type;
        out[5..8].copy_from_slice(&self.end_chs);
        out[8..12].copy_from_slice(&self.start_lba.to_le_bytes());
        out[12..16].copy_from_slice(&self.size_lba.to_le_bytes());
        out
    }

    /// Decodes a record from its 16 bytes.
    pub fn decode(b: &[u8; Self::SIZE]) -> Self {
        PartitionRecord {
            boot_indicator: b[0],
            start_chs: [b[1], b[2], b[3]],
            os_type: b[4],
            end_chs: [b[5], b[6], b[7]],
            start_lba: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            size_lba: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
        }
    }
}

/// A master boot record without boot code.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mbr {
    /// 0x1B8 unique MBR disk signature (zero in a protective MBR).
    pub disk_signature: u32,
    /// 0x1BE the four partition records.
    pub partitions: [PartitionRecord; 4],
}

impl Mbr {
    /// The protective MBR of a GPT disk of `disk_sectors` sectors: one
    /// record of type 0xEE from LBA 1 to the end of the disk (size clamped
    /// to `0xFFFFFFFF`), starting CHS `00 02 00`, not bootable.
    pub fn protective(disk_sectors: u64) -> Self {
        let mut rec = PartitionRecord::new(
            false,
            GPT_PROTECTIVE_TYPE,
            1,
            disk_sectors.saturating_sub(1),
        );
        rec.start_chs = [0x00, 0x02, 0x00];
        Mbr {
            disk_signature: 0,
            partitions: [
                rec,
                Default::default(),
                Default::default(),
                Default::default(),
            ],
        }
    }

    /// Encodes the 512-byte sector.
    pub fn encode(&self) -> [u8; SIZE] {
        let mut out = [0u8; SIZE];
        out[0x1B8..0x1BC].copy_from_slice(&self.disk_signature.to_le_bytes());
        for (i, p) in self.partitions.iter().enumerate() {
            let at = 0x1BE + i * PartitionRecord::SIZE;
            out[at..at + PartitionRecord::SIZE].copy_from_slice(&p.encode());
        }
        out[0x1FE] = 0x55;
        out[0x1FF] = 0xAA;
        out
    }

    /// Decodes a sector (boot code is ignored).
    ///
    /// # Errors
    /// [`Error::Corrupt`] if the `55 AA` signature is missing.
    pub fn decode(b: &[u8; SIZE]) -> Result<Self> {
        if b[0x1FE..] != [0x55, 0xAA] {
            return Err(Error::Corrupt {
                what: "MBR",
                reason: "no 55 AA signature".into(),
            });
        }
        let mut partitions = [PartitionRecord::default(); 4];
        for (i, p) in partitions.iter_mut().enumerate() {
            let at = 0x1BE + i * PartitionRecord::SIZE;
            let mut rec = [0u8; PartitionRecord::SIZE];
            rec.copy_from_slice(&b[at..at + PartitionRecord::SIZE]);
            *p = PartitionRecord::decode(&rec);
        }
        Ok(Mbr {
            disk_signature: u32::from_le_bytes([b[0x1B8], b[0x1B9], b[0x1BA], b[0x1BB]]),
            partitions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chs_matches_sfdisk_conventions() {
        assert_eq!(lba_to_chs(1), [0x00, 0x02, 0x00]);
        // 2048 = cylinder 0, head 32, sector 33 (as sfdisk prints it).
        assert_eq!(lba_to_chs(2048), [32, 33, 0]);
        // Cylinder 1023 is the last encodable one.
        assert_eq!(lba_to_chs(1024 * 255 * 63), [0xFE, 0xFF, 0xFF]);
        let last = 1024 * 255 * 63 - 1;
        assert_eq!(lba_to_chs(last), [254, 63 | 0xC0, 0xFF]);
    }

    #[test]
    fn round_trip_and_golden_bytes() {
        let m = Mbr {
            disk_signature: 0x1234_5678,
            partitions: [
                PartitionRecord::new(true, LINUX_TYPE, 2048, 4096),
                Default::default(),
                Default::default(),
                Default::default(),
            ],
        };
        let b = m.encode();
        assert_eq!(&b[0x1B8..0x1BC], &[0x78, 0x56, 0x34, 0x12]);
        assert_eq!(
            &b[0x1BE..0x1CE],
            &[0x80, 32, 33, 0, 0x83, 0x61, 0x21, 0x00, 0, 8, 0, 0, 0, 0x10, 0, 0]
        );
        assert_eq!(&b[0x1FE..], &[0x55, 0xAA]);
        assert_eq!(Mbr::decode(&b).unwrap(), m);
        let mut bad = b;
        bad[0x1FF] = 0;
        assert!(Mbr::decode(&bad).is_err());
    }

    #[test]
    fn protective_mbr_clamps_the_size() {
        let p = Mbr::protective(1 << 40).partitions[0];
        assert_eq!((p.os_type, p.start_lba, p.size_lba), (0xEE, 1, u32::MAX));
        assert_eq!((p.start_chs, p.end_chs), ([0, 2, 0], [0xFE, 0xFF, 0xFF]));
    }
}
