//! The cpio "newc" format (`070701`, the format the Linux kernel unpacks
//! as an initramfs): a deterministic writer and a small reader.
//!
//! Every entry is a 110-byte ASCII header of thirteen 8-digit hexadecimal
//! fields (magic `070701`, inode, mode, uid, gid, nlink, mtime, file size,
//! device major/minor, rdev major/minor, name size including its NUL,
//! checksum 0), the NUL-terminated name padded to a multiple of 4 bytes
//! (counting the header), then the data padded to a multiple of 4. The
//! archive ends with an entry named `TRAILER!!!`.
//!
//! [`NewcWriter`] writes entries in the order given, numbers inodes from 1
//! in that order, and takes every other field from the caller, so the same
//! calls always give the same bytes. [`read_newc`] parses an archive back
//! (used by the tests and handy to inspect an initramfs).
//!
//! # Example
//!
//! ```
//! use ami_core::configure::cpio::{read_newc, EntryKind, NewcWriter};
//!
//! let mut w = NewcWriter::new(1_700_000_000);
//! w.dir("dev", 0o755)?;
//! w.char_device("dev/console", 0o600, 5, 1)?;
//! w.file("init", 0o755, b"#!/bin/sh\n")?;
//! w.symlink("sh", "busybox")?;
//! let archive = w.finish();
//! let entries = read_newc(&archive)?;
//! assert_eq!(entries.len(), 4);
//! assert_eq!(entries[1].name, "dev/console");
//! assert_eq!(entries[1].kind, EntryKind::CharDevice { major: 5, minor: 1 });
//! assert_eq!(entries[2].data, b"#!/bin/sh\n");
//! assert_eq!(entries[3].kind, EntryKind::Symlink("busybox".into()));
//! assert!(entries.iter().all(|e| e.mtime == 1_700_000_000 && e.uid == 0));
//! # Ok::<(), ami_core::configure::cpio::CpioError>(())
//! ```

/// The magic number of the newc format (no checksum).
pub const MAGIC: &[u8; 6] = b"070701";
/// The name of the entry ending an archive.
pub const TRAILER: &str = "TRAILER!!!";
/// Size of an entry header in bytes.
pub const HEADER_LEN: usize = 110;

/// Errors of the newc writer and reader.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CpioError {
    /// A name is empty, absolute, contains a NUL or a `.`/`..` component,
    /// or is the trailer's name.
    #[error("invalid entry name {0:?}")]
    InvalidName(String),
    /// A file is larger than the format's 32-bit size field.
    #[error("{name}: {len} bytes do not fit a newc entry")]
    TooLarge {
        /// The entry name.
        name: String,
        /// Its size.
        len: usize,
    },
    /// The archive being read is malformed.
    #[error("malformed newc archive at byte {offset}: {message}")]
    Malformed {
        /// Offset of the problem.
        offset: usize,
        /// What is wrong.
        message: String,
    },
}

/// The type of an entry and its payload, as [`read_newc`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file (its bytes are in [`Entry::data`]).
    File,
    /// A directory.
    Dir,
    /// A symbolic link and its target.
    Symlink(String),
    /// A character device.
    CharDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A block device.
    BlockDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// Any other type (FIFO, socket); the value is the `S_IFMT` bits.
    Other(u32),
}

/// One archive entry, as [`read_newc`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name (path without a leading slash).
    pub name: String,
    /// The inode number field.
    pub ino: u32,
    /// The permission bits (`mode & 0o7777`).
    pub perm: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Link count field.
    pub nlink: u32,
    /// Modification time (seconds since the epoch).
    pub mtime: u32,
    /// The type and payload.
    pub kind: EntryKind,
    /// The data: file contents (the target for a symlink).
    pub data: Vec<u8>,
}

/// Writes a newc archive into memory. Entries are written in call order,
/// all owned by root (uid/gid 0) with the same mtime; directories must be
/// added before what they contain (the kernel does not create parents).
#[derive(Debug)]
pub struct NewcWriter {
    out: Vec<u8>,
    next_ino: u32,
    mtime: u32,
    count: usize,
}

const S_IFREG: u32 = 0o100000;
const S_IFDIR: u32 = 0o040000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;
const S_IFBLK: u32 = 0o060000;
const S_IFMT: u32 = 0o170000;

impl NewcWriter {
    /// An empty archive whose entries all get `mtime` (seconds).
    pub fn new(mtime: u32) -> Self {
        NewcWriter {
            out: Vec::new(),
            next_ino: 1,
            mtime,
            count: 0,
        }
    }

    /// Number of entries written so far (the trailer not counted).
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no entry was written yet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds a directory with permission bits `perm`.
    ///
    /// # Errors
    /// [`CpioError::InvalidName`].
    pub fn dir(&mut self, name: &str, perm: u32) -> Result<(), CpioError> {
        self.entry(name, S_IFDIR | (perm & 0o7777), 2, (0, 0), b"")
    }

    /// Adds a regular file.
    ///
    /// # Errors
    /// [`CpioError::InvalidName`], [`CpioError::TooLarge`].
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> Result<(), CpioError> {
        self.entry(name, S_IFREG | (perm & 0o7777), 1, (0, 0), data)
    }

    /// Adds a symbolic link (mode 0777) to `target`.
    ///
    /// # Errors
    /// [`CpioError::InvalidName`].
    pub fn symlink(&mut self, name: &str, target: &str) -> Result<(), CpioError> {
        self.entry(name, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes())
    }

    /// Adds a character device node.
    ///
    /// # Errors
    /// [`CpioError::InvalidName`].
    pub fn char_device(
        &mut self,
        name: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), CpioError> {
        self.entry(name, S_IFCHR | (perm & 0o7777), 1, (major, minor), b"")
    }

    /// Adds a block device node.
    ///
    /// # Errors
    /// [`CpioError::InvalidName`].
    pub fn block_device(
        &mut self,
        name: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), CpioError> {
        self.entry(name, S_IFBLK | (perm & 0o7777), 1, (major, minor), b"")
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> Result<(), CpioError> {
        if name.is_empty()
            || name.starts_with('/')
            || name.contains('\0')
            || name == TRAILER
            || name
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(CpioError::InvalidName(name.to_owned()));
        }
        let size = u32::try_from(data.len()).map_err(|_| CpioError::TooLarge {
            name: name.to_owned(),
            len: data.len(),
        })?;
        let ino = self.next_ino;
        self.next_ino += 1;
        self.count += 1;
        self.raw(ino, mode, nlink, size, rdev, name, data);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn raw(
        &mut self,
        ino: u32,
        mode: u32,
        nlink: u32,
        size: u32,
        rdev: (u32, u32),
        name: &str,
        data: &[u8],
    ) {
        let namesize = u32::try_from(name.len() + 1).unwrap_or(u32::MAX);
        let fields = [
            ino, mode, 0, 0, nlink, self.mtime, size, 0, 0, rdev.0, rdev.1, namesize, 0,
        ];
        self.out.extend_from_slice(MAGIC);
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        pad4(&mut self.out);
        self.out.extend_from_slice(data);
        pad4(&mut self.out);
    }

    /// Writes the trailer and returns the archive bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.raw(0, 0, 1, 0, (0, 0), TRAILER, b"");
        self.out
    }
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// Parses a newc archive (uncompressed), up to its trailer. Returns the
/// entries in archive order, the trailer excluded.
///
/// # Errors
/// [`CpioError::Malformed`]: bad magic, non-hex field, truncated data, a
/// non-UTF-8 name, or no trailer.
pub fn read_newc(archive: &[u8]) -> Result<Vec<Entry>, CpioError> {
    let mut pos = 0;
    let mut entries = Vec::new();
    let bad = |offset: usize, message: &str| CpioError::Malformed {
        offset,
        message: message.to_owned(),
    };
    loop {
        let header = archive
            .get(pos..pos + HEADER_LEN)
            .ok_or_else(|| bad(pos, "truncated header (no trailer)"))?;
        if &header[..6] != MAGIC {
            return Err(bad(pos, "bad magic"));
        }
        let mut f = [0u32; 13];
        for (i, v) in f.iter_mut().enumerate() {
            let s = std::str::from_utf8(&header[6 + 8 * i..14 + 8 * i])
                .map_err(|_| bad(pos, "non-ASCII field"))?;
            *v = u32::from_str_radix(s, 16).map_err(|_| bad(pos, "non-hex field"))?;
        }
        let [ino, mode, uid, gid, nlink, mtime, size, _, _, rmaj, rmin, namesize, _] = f;
        let name_start = pos + HEADER_LEN;
        let name_end = name_start + namesize as usize;
        let name_bytes = archive
            .get(name_start..name_end)
            .ok_or_else(|| bad(pos, "truncated name"))?;
        let Some((&0, name)) = name_bytes.split_last() else {
            return Err(bad(pos, "name not NUL-terminated"));
        };
        let name = std::str::from_utf8(name)
            .map_err(|_| bad(pos, "non-UTF-8 name"))?
            .to_owned();
        let data_start = name_end.next_multiple_of(4);
        let data_end = data_start + size as usize;
        let data = archive
            .get(data_start..data_end)
            .ok_or_else(|| bad(pos, "truncated data"))?
            .to_vec();
        pos = data_end.next_multiple_of(4);
        if name == TRAILER {
            return Ok(entries);
        }
        let kind = match mode & S_IFMT {
            S_IFREG => EntryKind::File,
            S_IFDIR => EntryKind::Dir,
            S_IFLNK => EntryKind::Symlink(String::from_utf8_lossy(&data).into_owned()),
            S_IFCHR => EntryKind::CharDevice {
                major: rmaj,
                minor: rmin,
            },
            S_IFBLK => EntryKind::BlockDevice {
                major: rmaj,
                minor: rmin,
            },
            other => EntryKind::Other(other),
        };
        entries.push(Entry {
            name,
            ino,
            perm: mode & 0o7777,
            uid,
            gid,
            nlink,
            mtime,
            kind,
            data,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_is_newc() {
        let mut w = NewcWriter::new(0x1234_5678);
        w.file("a", 0o644, b"xyz").unwrap();
        let out = w.finish();
        // Header of the first entry, field by field.
        let h = std::str::from_utf8(&out[..HEADER_LEN]).unwrap();
        assert_eq!(
            h,
            concat!(
                "070701", "00000001", "000081a4", "00000000", "00000000", "00000001", "12345678",
                "00000003", "00000000", "00000000", "00000000", "00000000", "00000002", "00000000"
            )
        );
        // Name "a\0" padded to 112, data "xyz" padded to 116.
        assert_eq!(&out[110..112], b"a\0");
        assert_eq!(&out[112..116], b"xyz\0");
        // The trailer follows, and the whole archive is 4-byte aligned.
        assert_eq!(&out[116..122], MAGIC);
        assert_eq!(&out[116 + 110..116 + 121], b"TRAILER!!!\0");
        assert_eq!(out.len() % 4, 0);
    }

    #[test]
    fn round_trip_and_names_refused() {
        let mut w = NewcWriter::new(7);
        for bad in ["", "/abs", "a//b", "a/./b", "../x", "TRAILER!!!", "a\0b"] {
            assert!(matches!(
                w.file(bad, 0o644, b""),
                Err(CpioError::InvalidName(_))
            ));
        }
        w.dir("d", 0o700).unwrap();
        w.block_device("d/b", 0o660, 259, 3).unwrap();
        w.file("d/f12", 0o4755, &[1, 2, 3, 4, 5]).unwrap();
        assert_eq!(w.len(), 3);
        let out = w.finish();
        let e = read_newc(&out).unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!((e[0].ino, e[1].ino, e[2].ino), (1, 2, 3));
        assert_eq!(
            (e[0].kind.clone(), e[0].perm, e[0].nlink),
            (EntryKind::Dir, 0o700, 2)
        );
        assert_eq!(
            e[1].kind,
            EntryKind::BlockDevice {
                major: 259,
                minor: 3
            }
        );
        assert_eq!(
            (e[2].perm, e[2].data.as_slice()),
            (0o4755, &[1u8, 2, 3, 4, 5][..])
        );
        assert!(read_newc(&out[..out.len() - 8]).is_err());
        assert!(read_newc(b"070702").is_err());
    }
}
