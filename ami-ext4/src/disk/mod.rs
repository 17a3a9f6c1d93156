//! Disk layouts around the root filesystem: the bare filesystem
//! ([`Layout::Plain`], PV-GRUB `hd0`), one bootable MBR partition
//! ([`Layout::Mbr`], PV-GRUB `hd00`), or a GPT disk with an EFI system
//! partition and the root partition ([`Layout::Gpt`], UEFI).
//!
//! The flow is: [`plan()`] computes where everything goes,
//! [`write_partition_table`] writes the MBR or GPT, [`esp::write_esp`]
//! formats the ESP (FAT32) through a [`Window`] on its byte range, and
//! [`crate::format()`] writes the root filesystem through a [`Window`] on
//! [`DiskPlan::root`]. Nothing is random: disk and partition GUIDs and the
//! MBR disk signature come from [`DiskIds::derive`], so the same seed gives
//! the same bytes.
//!
//! The GPT and MBR structures are written by hand ([`gpt`], [`mbr`]): they
//! are small, and partitioning crates draw random GUIDs by default.
//! Sectors are 512 bytes (what EC2's EBS and NVMe volumes report) and every
//! partition starts on a 1 MiB boundary. The root partition comes last, so a
//! growpart-like step can extend it to the end of a larger volume.
//!
//! # Example
//!
//! A whole UEFI disk in memory:
//!
//! ```
//! use std::io::Cursor;
//! use ami_core::{progress::NoProgress, FileData, Metadata, Node, Tree};
//! use ami_ext4::disk::esp::{write_esp, EspFile, EspOptions};
//! use ami_ext4::disk::{plan, write_partition_table, DiskIds, Layout, Window, MIB, MIN_ESP_SIZE};
//! use ami_ext4::{format, FormatOptions, Size};
//!
//! let mut tree = Tree::new(Metadata::new(0o755));
//! let etc = tree.create_dir_all(b"/etc", Metadata::new(0o755))?;
//! tree.add(etc, b"hostname", Node::file(FileData::from_bytes(b"ami\n".to_vec()), Metadata::new(0o644)))?;
//!
//! let plan = plan(Layout::Gpt { esp_size: MIN_ESP_SIZE }, 8 * MIB, None)?;
//! assert_eq!(plan.disk_size, (1 + 34 + 8 + 1) * MIB);
//! let mut disk = Cursor::new(vec![0u8; plan.disk_size as usize]);
//! write_partition_table(&mut disk, &plan, &DiskIds::derive(b"build seed"))?;
//!
//! let mut esp = Window::new(&mut disk, plan.esp.clone().unwrap());
//! let files = [EspFile::new("EFI/BOOT/grub.cfg", b"set timeout=0\n".to_vec())];
//! write_esp(&mut esp, &files, &EspOptions::new(0x1234_5678).timestamp(1_700_000_000))?;
//!
//! let root_len = plan.root.end - plan.root.start;
//! let options = FormatOptions::new().label("rootfs").size(Size::Bytes(root_len));
//! format(&mut Window::new(&mut disk, plan.root.clone()), &tree, &options, &NoProgress)?;
//!
//! assert_eq!(&disk.get_ref()[512..520], b"EFI PART");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod esp;
pub mod gpt;
pub mod mbr;
pub mod probe;

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::BlockMap;

/// One mebibyte, the alignment of every partition.
pub const MIB: u64 = 1 << 20;
/// Logical sector size in bytes (EBS and NVMe volumes on EC2 use 512).
pub const SECTOR_SIZE: u64 = 512;
/// The default size of the EFI system partition: 100 MiB, comfortably above
/// the FAT32 minimum ([`MIN_ESP_SIZE`]) and enough for shim, GRUB and their
/// configuration.
pub const DEFAULT_ESP_SIZE: u64 = 100 * MIB;
/// The smallest ESP accepted. The UEFI specification wants FAT32 on fixed
/// disks, and FAT32 needs at least 65,525 clusters: with 512-byte clusters
/// that is 32 MiB of data plus the FATs, hence 34 MiB (there is no FAT16
/// fallback).
pub const MIN_ESP_SIZE: u64 = 34 * MIB;

/// Errors of the disk-layout writer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The root filesystem does not fit in the requested disk.
    #[error("the root filesystem ({root_fs_size} bytes) does not fit in a {disk_size}-byte disk with this layout, which needs at least {needed} bytes")]
    RootTooLarge {
        /// Size of the root filesystem in bytes.
        root_fs_size: u64,
        /// The disk size asked for.
        disk_size: u64,
        /// The smallest disk that holds the layout.
        needed: u64,
    },
    /// A size is zero or not a multiple of the required alignment.
    #[error("{what} is {value} bytes, it must be a non-zero multiple of {align} bytes")]
    Misaligned {
        /// What the size is of.
        what: &'static str,
        /// The size given.
        value: u64,
        /// The required alignment.
        align: u64,
    },
    /// The ESP is smaller than FAT32 allows.
    #[error("the EFI system partition is {size} bytes, FAT32 needs at least {min} bytes")]
    EspTooSmall {
        /// The ESP size given.
        size: u64,
        /// [`MIN_ESP_SIZE`].
        min: u64,
    },
    /// The disk is larger than the layout can address (MBR: 2 TiB).
    #[error("the disk is {disk_size} bytes, the {layout} layout addresses at most {max} bytes")]
    DiskTooLarge {
        /// The disk size.
        disk_size: u64,
        /// The layout's name.
        layout: &'static str,
        /// Its limit in bytes.
        max: u64,
    },
    /// An invalid FAT volume label.
    #[error("invalid FAT volume label {label:?}: {reason}")]
    InvalidLabel {
        /// The label given.
        label: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An invalid path for a file on the ESP.
    #[error("invalid ESP path {path:?}: {reason}")]
    InvalidPath {
        /// The path given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The FAT library failed (typically: the files do not fit in the ESP).
    #[error("writing {what} on the ESP")]
    Fat {
        /// What was being written.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A structure read back for a check is not what it should be.
    #[error("invalid {what}: {reason}")]
    Corrupt {
        /// The structure.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading or writing the storage failed.
    #[error("writing the disk image")]
    Io(#[from] io::Error),
}

/// `Result` with the disk module's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// A GUID as stored on disk: the first three fields little-endian, the rest
/// as bytes (UEFI 2.x Appendix A). Displayed in the usual upper-case
/// `8-4-4-4-12` form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// Builds a GUID from its textual fields, e.g. `C12A7328-F81F-11D2-BA4B-00A0C93EC93B`
    /// is `from_fields(0xC12A7328, 0xF81F, 0x11D2, [0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B])`.
    pub const fn from_fields(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Self {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4],
            d4[5], d4[6], d4[7],
        ])
    }

    /// A version-4-shaped GUID derived from `seed` and `purpose`: the first
    /// 16 bytes of SHA-256(`"ami-disk\0"` ‖ `purpose` ‖ `"\0"` ‖ `seed`), with
    /// the RFC 4122 version and variant bits set.
    pub fn derive(seed: &[u8], purpose: &str) -> Self {
        let digest = derive_bytes(seed, purpose);
        let mut b = [0u8; 16];
        b.copy_from_slice(&digest[..16]);
        b[7] = (b[7] & 0x0F) | 0x40; // high byte of the little-endian third field
        b[8] = (b[8] & 0x3F) | 0x80;
        Guid(b)
    }
}

fn derive_bytes(seed: &[u8], purpose: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"ami-disk\0");
    h.update(purpose.as_bytes());
    h.update(b"\0");
    h.update(seed);
    h.finalize().into()
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-",
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_le_bytes([b[4], b[5]]),
            u16::from_le_bytes([b[6], b[7]]),
            b[8],
            b[9]
        )?;
        b[10..].iter().try_for_each(|x| write!(f, "{x:02X}"))
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

/// The error of parsing a [`Guid`] from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid GUID {0:?}: expected the 8-4-4-4-12 hexadecimal form")]
pub struct ParseGuidError(String);

impl FromStr for Guid {
    type Err = ParseGuidError;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let err = || ParseGuidError(s.to_owned());
        let parts: Vec<&str> = s.split('-').collect();
        let lens = [8, 4, 4, 4, 12];
        if parts.len() != 5
            || parts
                .iter()
                .zip(lens)
                .any(|(p, l)| p.len() != l || !p.bytes().all(|c| c.is_ascii_hexdigit()))
        {
            return Err(err());
        }
        let d1 = u32::from_str_radix(parts[0], 16).map_err(|_| err())?;
        let d2 = u16::from_str_radix(parts[1], 16).map_err(|_| err())?;
        let d3 = u16::from_str_radix(parts[2], 16).map_err(|_| err())?;
        let tail = format!("{}{}", parts[3], parts[4]);
        let mut d4 = [0u8; 8];
        for (i, byte) in d4.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&tail[2 * i..2 * i + 2], 16).map_err(|_| err())?;
        }
        Ok(Guid::from_fields(d1, d2, d3, d4))
    }
}

/// Partition type of the EFI system partition,
/// `C12A7328-F81F-11D2-BA4B-00A0C93EC93B` (UEFI 2.x §5.3.3, table 5-7;
/// `sgdisk` code EF00).
pub const ESP_TYPE: Guid = Guid::from_fields(
    0xC12A_7328,
    0xF81F,
    0x11D2,
    [0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B],
);

/// Partition type of an x86-64 root filesystem,
/// `4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709`, from the UAPI Group's
/// Discoverable Partitions Specification (`sgdisk` code 8304, "Linux x86-64
/// root (/)").
///
/// Chosen over the generic "Linux filesystem data" type because it says
/// what the partition is: `systemd-gpt-auto-generator` can find and mount
/// it without `root=`, while GRUB, the kernel and growpart ignore the type
/// so nothing is lost. An arm64 image would use [`ROOT_ARM64_TYPE`].
pub const ROOT_X86_64_TYPE: Guid = Guid::from_fields(
    0x4F68_BCE3,
    0xE8CD,
    0x4DB1,
    [0x96, 0xE7, 0xFB, 0xCA, 0xF9, 0x84, 0xB7, 0x09],
);

/// Partition type of an arm64 root filesystem,
/// `B921B045-1DF0-41C3-AF44-4C6F280D3FAE` (Discoverable Partitions
/// Specification, `sgdisk` code 8305), for a future `BOOTAA64.EFI` layout.
pub const ROOT_ARM64_TYPE: Guid = Guid::from_fields(
    0xB921_B045,
    0x1DF0,
    0x41C3,
    [0xAF, 0x44, 0x4C, 0x6F, 0x28, 0x0D, 0x3F, 0xAE],
);

/// Partition type "Linux filesystem data",
/// `0FC63DAF-8483-4772-8E79-3D69D8477DE4` (`sgdisk` code 8300), not used by
/// default; see [`ROOT_X86_64_TYPE`].
pub const LINUX_DATA_TYPE: Guid = Guid::from_fields(
    0x0FC6_3DAF,
    0x8483,
    0x4772,
    [0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4],
);

/// Name of the ESP in the GPT.
pub const ESP_NAME: &str = "EFI System";
/// Name of the root partition in the GPT.
pub const ROOT_NAME: &str = "rootfs";

/// How the disk is laid out around the root filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The filesystem is the whole disk (PV-GRUB `hd0`); no partition table.
    Plain,
    /// One bootable Linux (0x83) MBR partition starting at 1 MiB (PV-GRUB `hd00`).
    Mbr,
    /// GPT (UEFI): the EFI system partition at 1 MiB, then the root partition.
    Gpt {
        /// Size of the ESP in bytes: a multiple of 1 MiB, at least
        /// [`MIN_ESP_SIZE`]; [`DEFAULT_ESP_SIZE`] is a good choice.
        esp_size: u64,
    },
}

impl Layout {
    /// The name used by recipes and `ami build --layout`: `pvgrub`,
    /// `pvgrub-mbr` or `uefi`.
    pub fn name(&self) -> &'static str {
        match self {
            Layout::Plain => "pvgrub",
            Layout::Mbr => "pvgrub-mbr",
            Layout::Gpt { .. } => "uefi",
        }
    }
}

/// The error of parsing a [`Layout`] name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown disk layout {0:?}: expected pvgrub, pvgrub-mbr or uefi")]
pub struct ParseLayoutError(String);

impl FromStr for Layout {
    type Err = ParseLayoutError;

    /// Parses a [`Layout::name`]; `uefi` gets a [`DEFAULT_ESP_SIZE`] ESP.
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "pvgrub" => Ok(Layout::Plain),
            "pvgrub-mbr" => Ok(Layout::Mbr),
            "uefi" => Ok(Layout::Gpt {
                esp_size: DEFAULT_ESP_SIZE,
            }),
            _ => Err(ParseLayoutError(s.to_owned())),
        }
    }
}

/// Where everything goes on the disk, from [`plan()`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskPlan {
    /// The layout planned.
    pub layout: Layout,
    /// Size of the whole disk in bytes. The storage must be this long (for a
    /// file, `set_len` it: unwritten parts stay sparse).
    pub disk_size: u64,
    /// Byte range of the root partition (the whole disk for
    /// [`Layout::Plain`]). It is at least the requested filesystem size and
    /// extends to the end of the usable space when a larger disk was asked
    /// for: format the root filesystem with this length (or less) through a
    /// [`Window`] on it.
    pub root: Range<u64>,
    /// Byte range of the EFI system partition ([`Layout::Gpt`] only).
    pub esp: Option<Range<u64>>,
    /// GPT partition type of the root partition ([`ROOT_X86_64_TYPE`]).
    pub root_type: Guid,
}

impl DiskPlan {
    /// Byte ranges that [`write_partition_table`] writes, sorted: the MBR,
    /// and for GPT the primary header and entries and their backup at the
    /// end of the disk. Together with the ESP and the root filesystem's
    /// [`BlockMap`] (see [`disk_byte_ranges`]) this is everything a sparse
    /// upload must send.
    pub fn table_ranges(&self) -> Vec<Range<u64>> {
        match self.layout {
            Layout::Plain => Vec::new(),
            Layout::Mbr => vec![0..SECTOR_SIZE],
            Layout::Gpt { .. } => {
                let end = self.disk_size;
                vec![
                    0..gpt::FIRST_USABLE_LBA * SECTOR_SIZE,
                    end - gpt::TABLE_SECTORS * SECTOR_SIZE..end,
                ]
            }
        }
    }
}

fn round_up(value: u64, align: u64) -> Option<u64> {
    value.checked_next_multiple_of(align)
}

fn check_aligned(what: &'static str, value: u64, align: u64) -> Result<()> {
    if value == 0 || !value.is_multiple_of(align) {
        return Err(Error::Misaligned { what, value, align });
    }
    Ok(())
}

/// Plans a disk for a root filesystem of `root_fs_size` bytes.
///
/// Without `disk_size`, the disk is as small as the layout allows: the
/// filesystem itself for [`Layout::Plain`]; otherwise 1 MiB-aligned
/// partitions (plus 1 MiB at the end for the backup GPT). With `disk_size`
/// (e.g. the EBS volume size) the root partition extends to the end of the
/// disk.
///
/// # Errors
/// [`Error::Misaligned`] for a zero size, a filesystem size that is not a
/// whole number of sectors, or an ESP or disk size that is not a whole number
/// of MiB ([`Layout::Plain`] disks need only whole sectors);
/// [`Error::EspTooSmall`]; [`Error::RootTooLarge`] when the filesystem does
/// not fit; [`Error::DiskTooLarge`] for an MBR disk over 2 TiB.
pub fn plan(layout: Layout, root_fs_size: u64, disk_size: Option<u64>) -> Result<DiskPlan> {
    check_aligned("the root filesystem size", root_fs_size, SECTOR_SIZE)?;
    let overflow = || Error::DiskTooLarge {
        disk_size: u64::MAX,
        layout: "any",
        max: u64::MAX,
    };
    let (root_start, esp, tail, disk_align) = match layout {
        Layout::Plain => (0, None, 0, SECTOR_SIZE),
        Layout::Mbr => (MIB, None, 0, MIB),
        Layout::Gpt { esp_size } => {
            check_aligned("the ESP size", esp_size, MIB)?;
            if esp_size < MIN_ESP_SIZE {
                return Err(Error::EspTooSmall {
                    size: esp_size,
                    min: MIN_ESP_SIZE,
                });
            }
            let esp_end = MIB.checked_add(esp_size).ok_or_else(overflow)?;
            (esp_end, Some(MIB..esp_end), MIB, MIB)
        }
    };
    let root_len = round_up(root_fs_size, disk_align).ok_or_else(overflow)?;
    let needed = root_start
        .checked_add(root_len)
        .and_then(|v| v.checked_add(tail))
        .ok_or_else(overflow)?;
    let disk_size = match disk_size {
        None => needed,
        Some(size) => {
            check_aligned("the disk size", size, disk_align)?;
            if size < needed {
                return Err(Error::RootTooLarge {
                    root_fs_size,
                    disk_size: size,
                    needed,
                });
            }
            size
        }
    };
    if layout == Layout::Mbr {
        let max = u64::from(u32::MAX) * SECTOR_SIZE;
        if disk_size > max {
            return Err(Error::DiskTooLarge {
                disk_size,
                layout: "MBR",
                max,
            });
        }
    }
    Ok(DiskPlan {
        layout,
        disk_size,
        root: root_start..disk_size - tail,
        esp,
        root_type: ROOT_X86_64_TYPE,
    })
}

/// The identities written into the partition table, derived from a seed so
/// that two builds of the same recipe give the same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskIds {
    /// The GPT disk GUID.
    pub disk_guid: Guid,
    /// The unique GUID of the ESP.
    pub esp_guid: Guid,
    /// The unique GUID of the root partition.
    pub root_guid: Guid,
    /// The MBR disk signature (offset 440) of [`Layout::Mbr`] disks.
    pub mbr_signature: u32,
}

impl DiskIds {
    /// Derives all identities from `seed` (e.g. the build's seed) with
    /// SHA-256 and a distinct purpose string for each; see [`Guid::derive`].
    pub fn derive(seed: &[u8]) -> Self {
        let sig = derive_bytes(seed, "mbr-signature");
        DiskIds {
            disk_guid: Guid::derive(seed, "gpt-disk"),
            esp_guid: Guid::derive(seed, "gpt-esp"),
            root_guid: Guid::derive(seed, "gpt-root"),
            mbr_signature: u32::from_le_bytes([sig[0], sig[1], sig[2], sig[3]]),
        }
    }
}

/// Writes the partition table of `plan`: nothing for [`Layout::Plain`]; the
/// MBR with one bootable Linux partition for [`Layout::Mbr`]; for
/// [`Layout::Gpt`] the protective MBR, the primary GPT header (LBA 1) and
/// entries (LBA 2-33), and the backup entries and header in the last 33
/// sectors, with their CRC32s. Only those sectors are written, so the
/// partitions' contents can be written before or after.
///
/// # Errors
/// [`Error::Io`] if the storage fails.
pub fn write_partition_table<S: Write + Seek>(
    storage: &mut S,
    plan: &DiskPlan,
    ids: &DiskIds,
) -> Result<()> {
    let sectors = plan.disk_size / SECTOR_SIZE;
    match plan.layout {
        Layout::Plain => Ok(()),
        Layout::Mbr => {
            let part = mbr::PartitionRecord::new(
                true,
                mbr::LINUX_TYPE,
                plan.root.start / SECTOR_SIZE,
                (plan.root.end - plan.root.start) / SECTOR_SIZE,
            );
            let sector = mbr::Mbr {
                disk_signature: ids.mbr_signature,
                partitions: [
                    part,
                    Default::default(),
                    Default::default(),
                    Default::default(),
                ],
            };
            write_at(storage, 0, &sector.encode())
        }
        Layout::Gpt { .. } => {
            let esp = plan.esp.clone().unwrap_or(0..0);
            let entries = [
                gpt::Entry {
                    type_guid: ESP_TYPE,
                    unique_guid: ids.esp_guid,
                    first_lba: esp.start / SECTOR_SIZE,
                    last_lba: esp.end / SECTOR_SIZE - 1,
                    attributes: 0,
                    name: ESP_NAME.to_owned(),
                },
                gpt::Entry {
                    type_guid: plan.root_type,
                    unique_guid: ids.root_guid,
                    first_lba: plan.root.start / SECTOR_SIZE,
                    last_lba: plan.root.end / SECTOR_SIZE - 1,
                    attributes: 0,
                    name: ROOT_NAME.to_owned(),
                },
            ];
            let table = gpt::Table::new(ids.disk_guid, sectors, &entries);
            write_at(storage, 0, &mbr::Mbr::protective(sectors).encode())?;
            for (lba, bytes) in table.encode() {
                write_at(storage, lba * SECTOR_SIZE, &bytes)?;
            }
            Ok(())
        }
    }
}

fn write_at<S: Write + Seek>(storage: &mut S, offset: u64, bytes: &[u8]) -> Result<()> {
    storage.seek(SeekFrom::Start(offset))?;
    storage.write_all(bytes)?;
    Ok(())
}

/// Byte ranges on the disk of the blocks of a filesystem `map` whose
/// filesystem starts at byte `partition_offset` (e.g. [`DiskPlan::root`]'s
/// start and the [`crate::Report`]'s `written` map).
pub fn disk_byte_ranges(map: &BlockMap, partition_offset: u64) -> Vec<Range<u64>> {
    let bs = u64::from(map.block_size);
    map.runs
        .iter()
        .map(|r| partition_offset + r.start * bs..partition_offset + r.end * bs)
        .collect()
}

/// A `Read + Write + Seek` view of the byte range `range` of another
/// storage: position 0 of the window is `range.start` of the storage, its
/// end (for `SeekFrom::End`) is `range.end`. Reads stop at the end; writes
/// past the end fail. Used to write a filesystem into a partition.
#[derive(Debug)]
pub struct Window<S> {
    inner: S,
    start: u64,
    len: u64,
    pos: u64,
}

impl<S> Window<S> {
    /// A window on `range` of `inner` (which can be a `&mut` borrow).
    pub fn new(inner: S, range: Range<u64>) -> Self {
        Window {
            inner,
            start: range.start,
            len: range.end.saturating_sub(range.start),
            pos: 0,
        }
    }

    /// Length of the window in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Gives the underlying storage back.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Seek> Window<S> {
    /// How many bytes of a `want`-byte transfer fit before the end, after
    /// moving the inner storage to the window's position.
    fn prepare(&mut self, want: usize) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(want);
        if n > 0 {
            self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        }
        Ok(n)
    }
}

impl<S: Read + Seek> Read for Window<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.prepare(buf.len())?;
        if n == 0 {
            return Ok(0);
        }
        let got = self.inner.read(&mut buf[..n])?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl<S: Write + Seek> Write for Window<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.prepare(buf.len())?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("write past the end of a {}-byte window", self.len),
            ));
        }
        let put = self.inner.write(&buf[..n])?;
        self.pos += put as u64;
        Ok(put)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<S> Seek for Window<S> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(n) if self.start.checked_add(n).is_some() => {
                self.pos = n;
                Ok(n)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the window or past 2^64",
            )),
        }
    }
}
