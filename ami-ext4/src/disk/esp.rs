//! The EFI system partition: a FAT32 filesystem (UEFI 2.x §13.3 "File
//! System Format"; FAT32 as in Microsoft's "FAT: General Overview of
//! On-Disk Format") written with the `fatfs` crate.
//!
//! Determinism: the volume id and label are inputs, every timestamp is the
//! build's (through a fixed `fatfs` time provider), files are written in
//! sorted path order, and unless the storage is known to be zeroed the
//! whole partition is zeroed first, so the same inputs give the same bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::{Mutex, OnceLock, PoisonError};

use fatfs::{
    Date, DateTime, FatType, FileSystem, FormatVolumeOptions, FsOptions, Time, TimeProvider,
};

use super::{Error, Result, MIN_ESP_SIZE};

/// A file to put on the ESP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspFile {
    /// `/`-separated path from the root, e.g. `EFI/BOOT/BOOTX64.EFI`.
    /// Missing directories are created.
    pub path: String,
    /// The file's contents.
    pub data: Vec<u8>,
}

impl EspFile {
    /// A file at `path` holding `data`.
    pub fn new(path: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        EspFile {
            path: path.into(),
            data: data.into(),
        }
    }
}

/// Options of [`write_esp`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspOptions {
    volume_id: u32,
    label: String,
    timestamp: i64,
    assume_zeroed: bool,
}

impl EspOptions {
    /// Options with the given volume id (the FAT "serial number"; derive it
    /// from the build seed), label `ESP`, timestamp 1980-01-01 00:00:00 and
    /// `assume_zeroed(false)`.
    pub fn new(volume_id: u32) -> Self {
        EspOptions {
            volume_id,
            label: "ESP".into(),
            timestamp: 315_532_800,
            assume_zeroed: false,
        }
    }

    /// The volume label: at most 11 ASCII characters, upper-cased, without
    /// any of `"*+,./:;<=>?[\]|`. Checked by [`write_esp`].
    #[must_use]
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// The time of every entry, in seconds since the Unix epoch (e.g.
    /// `SOURCE_DATE_EPOCH`), written as UTC. FAT stores 1980-01-01 to
    /// 2107-12-31 in 2-second steps: times outside are clamped, odd seconds
    /// rounded down.
    #[must_use]
    pub fn timestamp(mut self, secs: i64) -> Self {
        self.timestamp = secs;
        self
    }

    /// Whether the storage is known to read as zeros (a new sparse file).
    /// When false (the default), [`write_esp`] first zeroes the whole
    /// storage so stale bytes cannot leak into the image.
    #[must_use]
    pub fn assume_zeroed(mut self, yes: bool) -> Self {
        self.assume_zeroed = yes;
        self
    }
}

/// Formats `storage` (its whole length, e.g. a [`super::Window`] on the
/// ESP) as FAT32 and writes `files` into it.
///
/// # Errors
/// [`Error::EspTooSmall`] below [`MIN_ESP_SIZE`]; [`Error::InvalidLabel`];
/// [`Error::InvalidPath`] for an empty, `.`/`..`, non-ASCII or
/// FAT-forbidden path component, or a path given twice or used both as a
/// file and a directory; [`Error::Fat`] if `fatfs` fails (e.g. the files do
/// not fit); [`Error::Io`].
pub fn write_esp<S: Read + Write + Seek>(
    storage: &mut S,
    files: &[EspFile],
    options: &EspOptions,
) -> Result<()> {
    let size = storage.seek(SeekFrom::End(0))?;
    if size < MIN_ESP_SIZE {
        return Err(Error::EspTooSmall {
            size,
            min: MIN_ESP_SIZE,
        });
    }
    let label = encode_label(&options.label)?;
    let sorted = check_paths(files)?;
    storage.seek(SeekFrom::Start(0))?;
    if !options.assume_zeroed {
        let zeros = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            storage.write_all(&zeros[..n])?;
            left -= n as u64;
        }
        storage.seek(SeekFrom::Start(0))?;
    }
    let fat = |what: &str| {
        let what = what.to_owned();
        move |source| Error::Fat { what, source }
    };
    fatfs::format_volume(
        &mut *storage,
        FormatVolumeOptions::new()
            .fat_type(FatType::Fat32)
            .volume_id(options.volume_id)
            .volume_label(label),
    )
    .map_err(fat("the FAT32 structures"))?;
    storage.seek(SeekFrom::Start(0))?;
    let fs = FileSystem::new(
        &mut *storage,
        FsOptions::new()
            .update_accessed_date(false)
            .time_provider(fixed_time(options.timestamp)),
    )
    .map_err(fat("the FAT32 structures"))?;
    {
        let root = fs.root_dir();
        let mut made = BTreeSet::new();
        for (path, data) in &sorted {
            let parts: Vec<&str> = path.split('/').collect();
            for depth in 1..parts.len() {
                let dir = parts[..depth].join("/");
                if made.insert(dir.clone()) {
                    root.create_dir(&dir).map_err(fat(&dir))?;
                }
            }
            let mut file = root.create_file(path).map_err(fat(path))?;
            file.write_all(data).map_err(fat(path))?;
            file.flush().map_err(fat(path))?;
        }
    }
    fs.unmount().map_err(fat("the FAT32 structures"))?;
    let geo = Geometry::read(storage)?;
    fix_dot_entries(storage, &geo)?;
    write_free_count(storage, &geo)?;
    Ok(())
}

/// Size of a FAT directory entry.
const DIR_ENTRY: usize = 32;
/// Attribute byte of a long-file-name entry.
const ATTR_LFN: u8 = 0x0F;
/// Attribute bit of a directory.
const ATTR_DIR: u8 = 0x10;

/// The FAT32 geometry needed to walk directories.
struct Geometry {
    bytes_per_sector: u64,
    total_sectors: u64,
    fs_info_sector: u64,
    cluster_size: u64,
    fat_offset: u64,
    data_offset: u64,
    root_cluster: u32,
}

impl Geometry {
    fn read<S: Read + Seek>(storage: &mut S) -> Result<Self> {
        let mut b = [0u8; 512];
        storage.seek(SeekFrom::Start(0))?;
        storage.read_exact(&mut b)?;
        let le16 = |o: usize| u64::from(u16::from_le_bytes([b[o], b[o + 1]]));
        let le32 = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let bytes_per_sector = le16(0x0B);
        let reserved = le16(0x0E);
        let fats = u64::from(b[0x10]);
        let fat_sectors = u64::from(le32(0x24));
        Ok(Geometry {
            bytes_per_sector,
            total_sectors: u64::from(le32(0x20)),
            fs_info_sector: le16(0x30),
            cluster_size: bytes_per_sector * u64::from(b[0x0D]),
            fat_offset: reserved * bytes_per_sector,
            data_offset: (reserved + fats * fat_sectors) * bytes_per_sector,
            root_cluster: le32(0x2C),
        })
    }

    fn cluster_offset(&self, cluster: u32) -> u64 {
        self.data_offset + u64::from(cluster.saturating_sub(2)) * self.cluster_size
    }

    /// The clusters of the chain starting at `first`.
    fn chain<S: Read + Seek>(&self, storage: &mut S, first: u32) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        let mut cluster = first;
        while (2..0x0FFF_FFF8).contains(&cluster) {
            if out.len() > (1 << 22) {
                return Err(Error::Corrupt {
                    what: "FAT",
                    reason: "cluster chain loops".into(),
                });
            }
            out.push(cluster);
            let mut e = [0u8; 4];
            storage.seek(SeekFrom::Start(self.fat_offset + 4 * u64::from(cluster)))?;
            storage.read_exact(&mut e)?;
            cluster = u32::from_le_bytes(e) & 0x0FFF_FFFF;
        }
        Ok(out)
    }
}

/// Fills the FSInfo sector's free-cluster count and next-free hint, which
/// `fatfs` leaves "unknown" (`fsck.fat` then reports the summary as
/// uninitialized), by counting the free entries of the first FAT.
fn write_free_count<S: Read + Write + Seek>(storage: &mut S, geo: &Geometry) -> Result<()> {
    let data_sectors = geo
        .total_sectors
        .saturating_sub(geo.data_offset / geo.bytes_per_sector);
    let clusters = data_sectors / (geo.cluster_size / geo.bytes_per_sector);
    let mut fat = vec![0u8; usize::try_from(4 * (clusters + 2)).unwrap_or(0)];
    storage.seek(SeekFrom::Start(geo.fat_offset))?;
    storage.read_exact(&mut fat)?;
    let free: Vec<u32> = fat
        .chunks_exact(4)
        .enumerate()
        .skip(2)
        .filter(|(_, e)| u32::from_le_bytes([e[0], e[1], e[2], e[3]]) & 0x0FFF_FFFF == 0)
        .map(|(i, _)| u32::try_from(i).unwrap_or(u32::MAX))
        .collect();
    let count = u32::try_from(free.len()).unwrap_or(u32::MAX);
    let next = free.first().copied().unwrap_or(u32::MAX);
    let mut fields = [0u8; 8];
    fields[..4].copy_from_slice(&count.to_le_bytes());
    fields[4..].copy_from_slice(&next.to_le_bytes());
    storage.seek(SeekFrom::Start(
        geo.fs_info_sector * geo.bytes_per_sector + 488,
    ))?;
    storage.write_all(&fields)?;
    Ok(())
}

/// `fatfs` 0.3 writes a long-file-name entry before the `.` and `..`
/// entries of every new directory, and points `..` at cluster 2 rather than
/// 0 for children of the FAT32 root. `fsck.fat` rejects both. This walks
/// the directories from the root and rewrites the first four slots of each
/// subdirectory from `[LFN, ., LFN, ..]` to `[., .., deleted, deleted]`,
/// with `..` = 0 under the root.
fn fix_dot_entries<S: Read + Write + Seek>(storage: &mut S, geo: &Geometry) -> Result<()> {
    // (first cluster, is the root, is a child of the root)
    let mut todo = vec![(geo.root_cluster, true, false)];
    while let Some((dir, is_root, parent_is_root)) = todo.pop() {
        let mut first_cluster = !is_root;
        'clusters: for cluster in geo.chain(storage, dir)? {
            let at = geo.cluster_offset(cluster);
            let mut bytes = vec![0u8; usize::try_from(geo.cluster_size).unwrap_or(512)];
            storage.seek(SeekFrom::Start(at))?;
            storage.read_exact(&mut bytes)?;
            if first_cluster {
                first_cluster = false;
                if fix_slots(&mut bytes, parent_is_root) {
                    storage.seek(SeekFrom::Start(at))?;
                    storage.write_all(&bytes[..4 * DIR_ENTRY])?;
                }
            }
            for e in bytes.chunks_exact(DIR_ENTRY) {
                match e[0] {
                    0 => break 'clusters,
                    0xE5 | b'.' => continue,
                    _ => {}
                }
                if e[11] != ATTR_LFN && e[11] & ATTR_DIR != 0 {
                    let hi = u32::from(u16::from_le_bytes([e[0x14], e[0x15]]));
                    let lo = u32::from(u16::from_le_bytes([e[0x1A], e[0x1B]]));
                    todo.push((hi << 16 | lo, false, is_root));
                }
            }
        }
    }
    Ok(())
}

/// Rewrites `[LFN, ., LFN, ..]` at the start of `bytes` to
/// `[., .., deleted, deleted]`; returns whether it changed anything.
fn fix_slots(bytes: &mut [u8], parent_is_root: bool) -> bool {
    let slot = |i: usize| i * DIR_ENTRY..(i + 1) * DIR_ENTRY;
    let is_lfn = |b: &[u8], i: usize| b[i * DIR_ENTRY + 11] == ATTR_LFN;
    let name = |b: &[u8], i: usize| b[i * DIR_ENTRY..i * DIR_ENTRY + 11].to_vec();
    if bytes.len() < 4 * DIR_ENTRY
        || !is_lfn(bytes, 0)
        || name(bytes, 1) != b".          "
        || !is_lfn(bytes, 2)
        || name(bytes, 3) != b"..         "
    {
        return false;
    }
    let dot = bytes[slot(1)].to_vec();
    let mut dotdot = bytes[slot(3)].to_vec();
    if parent_is_root {
        dotdot[0x14..0x16].fill(0);
        dotdot[0x1A..0x1C].fill(0);
    }
    bytes[slot(0)].copy_from_slice(&dot);
    bytes[slot(1)].copy_from_slice(&dotdot);
    for i in 2..4 {
        bytes[slot(i)].fill(0);
        bytes[i * DIR_ENTRY] = 0xE5;
    }
    true
}

const FORBIDDEN: &[u8] = b"\"*/:<>?\\|";

fn check_paths(files: &[EspFile]) -> Result<BTreeMap<String, &[u8]>> {
    let mut out = BTreeMap::new();
    let mut dirs = BTreeSet::new();
    for f in files {
        let bad = |reason| Error::InvalidPath {
            path: f.path.clone(),
            reason,
        };
        let path = f.path.trim_start_matches('/');
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts {
            if part.is_empty() || *part == "." || *part == ".." {
                return Err(bad("empty, \".\" or \"..\" component"));
            }
            if part.len() > 255 {
                return Err(bad("component longer than 255 characters"));
            }
            if !part
                .bytes()
                .all(|c| (0x20..0x7F).contains(&c) && !FORBIDDEN.contains(&c))
            {
                return Err(bad("only printable ASCII without \"*/:<>?\\| is allowed"));
            }
        }
        for depth in 1..parts.len() {
            dirs.insert(parts[..depth].join("/").to_ascii_uppercase());
        }
        // FAT names are case-insensitive: compare upper-cased.
        let key = path.to_owned();
        if out.keys().any(|k: &String| k.eq_ignore_ascii_case(&key)) {
            return Err(bad("given twice"));
        }
        out.insert(key, f.data.as_slice());
    }
    if let Some(k) = out.keys().find(|k| dirs.contains(&k.to_ascii_uppercase())) {
        return Err(Error::InvalidPath {
            path: k.clone(),
            reason: "used both as a file and as a directory",
        });
    }
    Ok(out)
}

fn encode_label(label: &str) -> Result<[u8; 11]> {
    let bad = |reason| Error::InvalidLabel {
        label: label.to_owned(),
        reason,
    };
    if label.is_empty() || label.len() > 11 {
        return Err(bad("must be 1 to 11 characters"));
    }
    if !label
        .bytes()
        .all(|c| (0x20..0x7F).contains(&c) && !b"\"*+,./:;<=>?[\\]|".contains(&c))
    {
        return Err(bad(
            "only printable ASCII without \"*+,./:;<=>?[\\]| is allowed",
        ));
    }
    let mut out = [b' '; 11];
    out[..label.len()].copy_from_slice(label.to_ascii_uppercase().as_bytes());
    Ok(out)
}

/// A `fatfs` time provider that always returns the same time.
#[derive(Debug)]
struct FixedTime(DateTime);

impl TimeProvider for FixedTime {
    fn get_current_date(&self) -> Date {
        self.0.date
    }

    fn get_current_date_time(&self) -> DateTime {
        self.0
    }
}

/// `fatfs` 0.3 wants a `&'static` time provider: keep one per distinct
/// timestamp (a build uses one, so this leaks a few bytes at most).
fn fixed_time(secs: i64) -> &'static FixedTime {
    static CACHE: OnceLock<Mutex<BTreeMap<i64, &'static FixedTime>>> = OnceLock::new();
    let dt = fat_date_time(secs);
    let mut map = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let key = i64::from(dt.date.year) << 32
        | i64::from(dt.date.month) << 24
        | i64::from(dt.date.day) << 16
        | i64::from(dt.time.hour) << 12
        | i64::from(dt.time.min) << 6
        | i64::from(dt.time.sec);
    map.entry(key)
        .or_insert_with(|| Box::leak(Box::new(FixedTime(dt))))
}

/// Converts seconds since the epoch (UTC) to a FAT date and time, clamped
/// to 1980-01-01 00:00:00 ..= 2107-12-31 23:59:58, even seconds.
fn fat_date_time(secs: i64) -> DateTime {
    const MIN: i64 = 315_532_800; // 1980-01-01
    const MAX: i64 = 4_354_819_198; // 2107-12-31 23:59:58
    let secs = secs.clamp(MIN, MAX);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    // Every value is in range after the clamp.
    let d = |v: i64| u16::try_from(v).unwrap_or(0);
    DateTime {
        date: Date {
            year: d(year),
            month: d(month),
            day: d(day),
        },
        time: Time {
            hour: d(rem / 3600),
            min: d(rem / 60 % 60),
            sec: d(rem % 60 / 2 * 2),
            millis: 0,
        },
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day), by
/// counting 400-year eras from 0000-03-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1st
    let mp = (5 * doy + 2) / 153; // month from March = 0
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        let dt = fat_date_time(1_700_000_001); // 2023-11-14 22:13:21 UTC
        assert_eq!((dt.date.year, dt.date.month, dt.date.day), (2023, 11, 14));
        assert_eq!((dt.time.hour, dt.time.min, dt.time.sec), (22, 13, 20));
        let dt = fat_date_time(951_782_400); // 2000-02-29
        assert_eq!((dt.date.year, dt.date.month, dt.date.day), (2000, 2, 29));
        let dt = fat_date_time(0);
        assert_eq!((dt.date.year, dt.date.month, dt.date.day), (1980, 1, 1));
        let dt = fat_date_time(i64::MAX);
        assert_eq!((dt.date.year, dt.date.month, dt.date.day), (2107, 12, 31));
        assert_eq!((dt.time.hour, dt.time.min, dt.time.sec), (23, 59, 58));
    }

    #[test]
    fn labels() {
        assert_eq!(&encode_label("esp").unwrap(), b"ESP        ");
        assert!(encode_label("").is_err());
        assert!(encode_label("TWELVE_CHARS").is_err());
        assert!(encode_label("A.B").is_err());
    }

    #[test]
    fn paths() {
        let f = |p: &str| EspFile::new(p, b"x".to_vec());
        assert!(check_paths(&[f("EFI/BOOT/BOOTX64.EFI"), f("EFI/debian/grub.cfg")]).is_ok());
        assert!(check_paths(&[f("EFI//x")]).is_err());
        assert!(check_paths(&[f("EFI/../x")]).is_err());
        assert!(check_paths(&[f("EFI/a:b")]).is_err());
        assert!(check_paths(&[f("a/b"), f("A/B")]).is_err());
        assert!(check_paths(&[f("a/b"), f("a")]).is_err());
    }
}
