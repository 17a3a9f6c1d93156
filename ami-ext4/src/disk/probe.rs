//! Recognising a disk image's layout: where the root filesystem is, whether
//! there is an EFI system partition, and whether the first sector has BIOS
//! boot code. Used before registering an image (the boot mode follows
//! from it) and by checks.

use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;

use super::gpt::{self, Entry, Header, ENTRY_SIZE};
use super::mbr::{self, Mbr};
use super::{
    Error, Result, ESP_TYPE, LINUX_DATA_TYPE, ROOT_ARM64_TYPE, ROOT_X86_64_TYPE, SECTOR_SIZE,
};

/// The ext4 magic number and its byte offset in the filesystem.
const EXT4_MAGIC: [u8; 2] = [0x53, 0xEF];
const EXT4_MAGIC_OFFSET: u64 = 1024 + 0x38;

/// What [`probe`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The partitioning: `Plain` (the filesystem is the whole disk), `Mbr`
    /// or `Gpt`.
    pub kind: ProbedLayout,
    /// Byte range of the root filesystem (the whole disk for `Plain`; the
    /// first Linux partition holding ext4 otherwise), `None` if none was
    /// found.
    pub root: Option<Range<u64>>,
    /// Byte range of the EFI system partition (GPT only).
    pub esp: Option<Range<u64>>,
    /// Whether the first 440 bytes of the disk hold boot code (anything
    /// but zeros), i.e. a BIOS boot loader's first stage.
    pub bios_boot_code: bool,
}

/// The partitioning [`probe`] recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbedLayout {
    /// No partition table: an ext4 filesystem starts at byte 0.
    Plain,
    /// An MBR partition table.
    Mbr,
    /// A GUID partition table.
    Gpt,
    /// Neither a filesystem nor a partition table this module knows.
    Unknown,
}

fn read_at<R: Read + Seek>(r: &mut R, offset: u64, buf: &mut [u8]) -> std::io::Result<bool> {
    r.seek(SeekFrom::Start(offset))?;
    match r.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

fn has_ext4<R: Read + Seek>(r: &mut R, start: u64) -> std::io::Result<bool> {
    let mut magic = [0u8; 2];
    Ok(read_at(r, start + EXT4_MAGIC_OFFSET, &mut magic)? && magic == EXT4_MAGIC)
}

/// Looks at a disk image and says how it is laid out.
///
/// # Errors
/// [`Error::Io`] on read errors; [`Error::Corrupt`] for a GPT header that
/// fails its checks.
pub fn probe<R: Read + Seek>(disk: &mut R) -> Result<Probe> {
    let mut sector0 = [0u8; mbr::SIZE];
    if !read_at(disk, 0, &mut sector0)? {
        return Ok(Probe {
            kind: ProbedLayout::Unknown,
            root: None,
            esp: None,
            bios_boot_code: false,
        });
    }
    let disk_len = disk.seek(SeekFrom::End(0))?;
    // A bare filesystem first: ext4 leaves its first 1024 bytes alone, so
    // an old MBR could linger there; the superblock decides.
    if has_ext4(disk, 0)? {
        return Ok(Probe {
            kind: ProbedLayout::Plain,
            root: Some(0..disk_len),
            esp: None,
            bios_boot_code: false,
        });
    }
    let Ok(table) = Mbr::decode(&sector0) else {
        return Ok(Probe {
            kind: ProbedLayout::Unknown,
            root: None,
            esp: None,
            bios_boot_code: false,
        });
    };
    let bios_boot_code = sector0[..440].iter().any(|&b| b != 0);
    let protective = table
        .partitions
        .iter()
        .any(|p| p.os_type == mbr::GPT_PROTECTIVE_TYPE);
    if protective {
        let mut hdr = [0u8; SECTOR_SIZE as usize];
        if read_at(disk, SECTOR_SIZE, &mut hdr)? && hdr[..8] == gpt::SIGNATURE {
            let header = Header::decode(&hdr)?;
            if header.entry_size as usize != ENTRY_SIZE {
                return Err(Error::Corrupt {
                    what: "GPT header",
                    reason: format!("entry size {} is not {ENTRY_SIZE}", header.entry_size),
                });
            }
            let mut entries = vec![0u8; header.entry_count as usize * ENTRY_SIZE];
            if !read_at(disk, header.entry_lba * SECTOR_SIZE, &mut entries)? {
                return Err(Error::Corrupt {
                    what: "GPT",
                    reason: "the partition entries lie beyond the end of the disk".into(),
                });
            }
            let mut root = None;
            let mut esp = None;
            for raw in entries.chunks_exact(ENTRY_SIZE) {
                let entry = Entry::decode(raw.try_into().expect("chunk of ENTRY_SIZE"));
                let range = entry.first_lba * SECTOR_SIZE..(entry.last_lba + 1) * SECTOR_SIZE;
                if entry.type_guid == ESP_TYPE && esp.is_none() {
                    esp = Some(range);
                } else if [ROOT_X86_64_TYPE, ROOT_ARM64_TYPE, LINUX_DATA_TYPE]
                    .contains(&entry.type_guid)
                    && root.is_none()
                    && has_ext4(disk, range.start)?
                {
                    root = Some(range);
                }
            }
            return Ok(Probe {
                kind: ProbedLayout::Gpt,
                root,
                esp,
                bios_boot_code,
            });
        }
    }
    let mut root = None;
    for p in &table.partitions {
        if p.os_type == mbr::LINUX_TYPE && p.size_lba > 0 {
            let start = u64::from(p.start_lba) * SECTOR_SIZE;
            if has_ext4(disk, start)? {
                root = Some(start..start + u64::from(p.size_lba) * SECTOR_SIZE);
                break;
            }
        }
    }
    Ok(Probe {
        kind: ProbedLayout::Mbr,
        root,
        esp: None,
        bios_boot_code,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use ami_core::progress::NoProgress;
    use ami_core::{Metadata, Tree};

    use super::*;
    use crate::disk::esp::{write_esp, EspOptions};
    use crate::disk::{plan, write_partition_table, DiskIds, Layout, Window, MIB, MIN_ESP_SIZE};
    use crate::{format, FormatOptions, Size};

    fn disk(layout: Layout) -> (Vec<u8>, crate::disk::DiskPlan) {
        let tree = Tree::new(Metadata::new(0o755));
        let plan = plan(layout, 4 * MIB, None).unwrap();
        let mut disk = Cursor::new(vec![0u8; plan.disk_size as usize]);
        write_partition_table(&mut disk, &plan, &DiskIds::derive(b"probe")).unwrap();
        if let Some(esp) = plan.esp.clone() {
            write_esp(&mut Window::new(&mut disk, esp), &[], &EspOptions::new(1)).unwrap();
        }
        let len = plan.root.end - plan.root.start;
        let options = FormatOptions::new().size(Size::Bytes(len));
        format(
            &mut Window::new(&mut disk, plan.root.clone()),
            &tree,
            &options,
            &NoProgress,
        )
        .unwrap();
        (disk.into_inner(), plan)
    }

    #[test]
    fn recognises_each_layout() {
        let (plain, plan_plain) = disk(Layout::Plain);
        let p = probe(&mut Cursor::new(&plain)).unwrap();
        assert_eq!(p.kind, ProbedLayout::Plain);
        assert_eq!(p.root, Some(0..plan_plain.disk_size));
        assert_eq!(p.esp, None);

        let (mbr_disk, plan_mbr) = disk(Layout::Mbr);
        let p = probe(&mut Cursor::new(&mbr_disk)).unwrap();
        assert_eq!(p.kind, ProbedLayout::Mbr);
        assert_eq!(p.root, Some(plan_mbr.root.clone()));
        assert!(!p.bios_boot_code);

        let (mut gpt_disk, plan_gpt) = disk(Layout::Gpt {
            esp_size: MIN_ESP_SIZE,
        });
        let p = probe(&mut Cursor::new(&gpt_disk)).unwrap();
        assert_eq!(p.kind, ProbedLayout::Gpt);
        assert_eq!(p.root, Some(plan_gpt.root.clone()));
        assert_eq!(p.esp, plan_gpt.esp.clone());
        assert!(!p.bios_boot_code);

        // Boot code in the first sector is seen.
        gpt_disk[0] = 0xEB;
        assert!(probe(&mut Cursor::new(&gpt_disk)).unwrap().bios_boot_code);
    }

    #[test]
    fn unknown_and_short_inputs() {
        let p = probe(&mut Cursor::new(vec![0u8; 100])).unwrap();
        assert_eq!(p.kind, ProbedLayout::Unknown);
        let p = probe(&mut Cursor::new(vec![0u8; 8192])).unwrap();
        assert_eq!(p.kind, ProbedLayout::Unknown);
        assert_eq!(p.root, None);
    }
}
