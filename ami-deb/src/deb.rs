//! The `.deb` binary package format, read the way `dpkg-deb` reads it.
//!
//! A `.deb` is an `ar` archive (`!<arch>\n` magic, 60-byte member headers,
//! members padded to an even length) whose members are, in this order:
//!
//! 1. `debian-binary`: the format version, `2.<minor>\n` (always `2.0\n`);
//! 2. `control.tar[.gz|.xz|.zst]`: the control archive (`control`,
//!    `md5sums`, `conffiles`, maintainer scripts, `triggers`, `shlibs`, ...);
//! 3. `data.tar[.gz|.xz|.zst]`: the files to install.
//!
//! Members whose name starts with `_` may sit between them and are skipped,
//! as dpkg does; anything after the data member is ignored. Any other
//! member, a missing or duplicated one, a truncated one or an unknown
//! compression is an error naming the package file ([`DebError`]).
//! `bzip2` and `lzma` data members, which dpkg still reads but Debian has not
//! used for a decade, are reported as [`DebError::UnsupportedCompression`].
//!
//! [`DebFile::open`] reads only the ar headers. The control archive is small
//! and read into memory ([`DebFile::read_control`]); the data archive is
//! streamed through its decompressor ([`DebFile::copy_data_tar`]).
//!
//! # Tar archives
//!
//! [`read_tar_index`] lists a tar archive the way dpkg's own extractor
//! (`lib/dpkg/tarfn.c`) reads it: v7, ustar (with the `prefix` field) and
//! GNU headers, octal or base-256 numbers, GNU long names and long link
//! names (`L`/`K` entries). Like dpkg it refuses PAX headers (`x`/`g`), GNU
//! sparse files (`S`) and every other entry type, so every regular file's
//! bytes lie contiguously in the archive, at a 512-byte aligned offset, and
//! can be referenced in place ([`TarEntryKind::File`]). A header with a bad
//! checksum, a field that is not a number, an entry that runs past the end
//! of the archive or a path that fails [`normalize_path`] is an error.
//!
//! # Security
//!
//! Nothing here writes to the host filesystem except into the writer given
//! to [`DebFile::copy_data_tar`]. Decompression is bounded by a caller-given
//! limit (and the control archive by [`MAX_CONTROL_SIZE`]). Paths are
//! normalised and checked ([`normalize_path`]): `..` components, names
//! longer than 255 bytes, paths longer than 4095 bytes, newlines and NUL
//! bytes are rejected. What is *not* checked here: that the archive's
//! digest matches an index (the caller does that), and where a path ends
//! up once symbolic links in an existing tree are followed (see
//! [`crate::unpack`]).

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ami_core::DeviceNumber;

/// Upper bound on the decompressed size of a control archive (64 MiB; the
/// largest in Debian are a few hundred KiB).
pub const MAX_CONTROL_SIZE: u64 = 64 << 20;

/// The longest file name component accepted (as Linux and ext4).
pub const MAX_NAME_LEN: usize = 255;

/// The longest path accepted, in bytes (`PATH_MAX` less its NUL).
pub const MAX_PATH_LEN: usize = 4095;

/// The longest GNU long name (`././@LongLink` entry) accepted.
const MAX_LONG_NAME: u64 = 64 << 10;

const AR_MAGIC: &[u8; 8] = b"!<arch>\n";
const AR_HEADER_LEN: u64 = 60;
const BLOCK: u64 = 512;

/// Compression of a `.deb` member, from the member name's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// No compression (`data.tar`).
    None,
    /// gzip (`.gz`).
    Gzip,
    /// xz (`.xz`).
    Xz,
    /// Zstandard (`.zst`).
    Zstd,
}

impl Compression {
    /// Every supported compression.
    pub const ALL: [Compression; 4] = [
        Compression::None,
        Compression::Gzip,
        Compression::Xz,
        Compression::Zstd,
    ];

    /// The member name extension, with its dot (`""` for [`Compression::None`]).
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
            Compression::Xz => ".xz",
            Compression::Zstd => ".zst",
        }
    }

    /// The compression of the extension `ext` (with its dot, or empty).
    pub fn from_extension(ext: &str) -> Option<Compression> {
        Compression::ALL.into_iter().find(|c| c.extension() == ext)
    }

    /// A reader that decompresses `input`. Concatenated gzip members, xz
    /// streams and zstd frames are all read, as the command line tools do.
    ///
    /// # Errors
    /// Setting up the zstd decoder can fail (out of memory).
    pub fn decoder<'a, R: Read + Send + 'a>(
        self,
        input: R,
    ) -> io::Result<Box<dyn Read + Send + 'a>> {
        Ok(match self {
            Compression::None => Box::new(input),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
            Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(input)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(input)?),
        })
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
        })
    }
}

/// Why a path from an archive was refused by [`normalize_path`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// Nothing is left once `./` and slashes are removed (only a directory
    /// may name the root).
    #[error("empty path")]
    Empty,
    /// A `..` component.
    #[error("path has a '..' component")]
    ParentComponent,
    /// A newline (dpkg refuses them too: its database is line-based).
    #[error("path contains a newline")]
    Newline,
    /// A NUL byte inside the name.
    #[error("path contains a NUL byte")]
    Nul,
    /// A component longer than [`MAX_NAME_LEN`].
    #[error("path component of {len} bytes (at most {MAX_NAME_LEN})")]
    NameTooLong {
        /// Length of the component.
        len: usize,
    },
    /// A path longer than [`MAX_PATH_LEN`].
    #[error("path of {len} bytes (at most {MAX_PATH_LEN})")]
    TooLong {
        /// Length of the path.
        len: usize,
    },
}

/// Normalises a path from an archive: leading `/` and `./` are removed (as
/// dpkg does), then empty and `.` components are dropped and the rest are
/// joined with single slashes. The root itself (`./`, `.` or `/`) becomes
/// the empty path.
///
/// # Errors
/// `..` components, newlines, NUL bytes, components longer than 255 bytes
/// and paths longer than 4095 bytes ([`PathError`]).
///
/// ```
/// use ami_deb::deb::{normalize_path, PathError};
///
/// assert_eq!(&*normalize_path(b"./usr/bin/")?, b"usr/bin");
/// assert_eq!(&*normalize_path(b"/etc//./passwd")?, b"etc/passwd");
/// assert_eq!(&*normalize_path(b"./")?, b"");
/// assert_eq!(normalize_path(b"./usr/../etc"), Err(PathError::ParentComponent));
/// # Ok::<(), PathError>(())
/// ```
pub fn normalize_path(raw: &[u8]) -> Result<Box<[u8]>, PathError> {
    if raw.contains(&0) {
        return Err(PathError::Nul);
    }
    if raw.contains(&b'\n') {
        return Err(PathError::Newline);
    }
    if raw.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong { len: raw.len() });
    }
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => continue,
            b".." => return Err(PathError::ParentComponent),
            _ if comp.len() > MAX_NAME_LEN => {
                return Err(PathError::NameTooLong { len: comp.len() })
            }
            _ => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(comp);
            }
        }
    }
    Ok(out.into_boxed_slice())
}

/// Why a tar archive could not be listed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TarError {
    /// The archive ends inside a header or inside an entry's data.
    #[error(
        "truncated: the entry at byte {offset} runs past the end of the archive ({len} bytes)"
    )]
    Truncated {
        /// Offset of the header of the entry.
        offset: u64,
        /// Length of the archive.
        len: u64,
    },
    /// A header's checksum does not match its bytes.
    #[error("bad header checksum at byte {offset}")]
    Checksum {
        /// Offset of the header.
        offset: u64,
    },
    /// A numeric header field is not a number (or out of range).
    #[error("invalid {field} field in the header at byte {offset}")]
    BadField {
        /// Offset of the header.
        offset: u64,
        /// The field (`size`, `mode`, `uid`, ...).
        field: &'static str,
    },
    /// An entry type dpkg does not extract either (PAX headers, GNU sparse
    /// files, sockets, ...).
    #[error("entry {name:?} at byte {offset}: unsupported tar entry type {typeflag:?} ({what})")]
    Unsupported {
        /// Offset of the header.
        offset: u64,
        /// The entry's name, lossily decoded.
        name: String,
        /// The type flag.
        typeflag: char,
        /// What the type is.
        what: &'static str,
    },
    /// An entry's path (or hard link target) was refused.
    #[error("entry {name:?} at byte {offset}: {reason}")]
    BadPath {
        /// Offset of the header.
        offset: u64,
        /// The name as stored, lossily decoded.
        name: String,
        /// Why it was refused.
        reason: PathError,
    },
    /// A symbolic link or hard link without a target.
    #[error("entry {name:?} at byte {offset}: empty link target")]
    EmptyLinkTarget {
        /// Offset of the header.
        offset: u64,
        /// The entry's name, lossily decoded.
        name: String,
    },
    /// A GNU long name or long link longer than 64 KiB.
    #[error("GNU long name of {size} bytes at byte {offset}")]
    LongNameTooLong {
        /// Offset of the header.
        offset: u64,
        /// Its declared size.
        size: u64,
    },
    /// A GNU long name or long link not followed by an entry.
    #[error("GNU long name at byte {offset} is not followed by an entry")]
    DanglingLongName {
        /// Offset of the long name's header.
        offset: u64,
    },
    /// Reading the archive failed.
    #[error("reading the archive: {0}")]
    Io(#[from] io::Error),
}

/// What a tar entry is, with its type-specific data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TarEntryKind {
    /// A regular file whose `size` bytes start at byte `offset` of the
    /// (uncompressed) tar archive.
    File {
        /// Offset of the first data byte in the archive (a multiple of 512).
        offset: u64,
        /// Length of the file.
        size: u64,
    },
    /// A directory.
    Dir,
    /// A symbolic link; the target is stored as is (never normalised).
    Symlink(Box<[u8]>),
    /// A hard link to an earlier entry; the target path is normalised.
    HardLink(Box<[u8]>),
    /// A character device.
    CharDevice(DeviceNumber),
    /// A block device.
    BlockDevice(DeviceNumber),
    /// A named pipe.
    Fifo,
}

/// One entry of a tar archive, as listed by [`read_tar_index`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    /// The normalised path ([`normalize_path`]); empty for the root (`./`).
    pub path: Box<[u8]>,
    /// Type and payload.
    pub kind: TarEntryKind,
    /// Permission bits, including setuid, setgid and sticky (`0o7777`).
    pub mode: u16,
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// Owner name (often `root`); see [`crate::unpack`] for why it is not
    /// used.
    pub uname: Box<[u8]>,
    /// Group name.
    pub gname: Box<[u8]>,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
}

impl TarEntry {
    /// The path as dpkg's `.list` files write it: `/` followed by the
    /// normalised path, or `/.` for the root.
    pub fn list_path(&self) -> Vec<u8> {
        list_path(&self.path)
    }
}

/// The dpkg database spelling of a normalised path: `/` + path, `/.` for
/// the root.
pub fn list_path(path: &[u8]) -> Vec<u8> {
    if path.is_empty() {
        b"/.".to_vec()
    } else {
        let mut v = Vec::with_capacity(path.len() + 1);
        v.push(b'/');
        v.extend_from_slice(path);
        v
    }
}

/// Random access to the bytes of a tar archive.
trait TarSource {
    fn len(&self) -> u64;
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
}

impl TarSource for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| eof())?;
        let end = start.checked_add(buf.len()).ok_or_else(eof)?;
        buf.copy_from_slice(self.get(start..end).ok_or_else(eof)?);
        Ok(())
    }
}

struct SizedFile<'a> {
    file: &'a File,
    len: u64,
}

impl TarSource for SizedFile<'_> {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
}

fn eof() -> io::Error {
    io::ErrorKind::UnexpectedEof.into()
}

/// Lists the tar archive in `file` (headers only: data is skipped, not
/// read). See the [module documentation](self) for what is accepted.
///
/// # Errors
/// [`TarError`].
pub fn read_tar_index(file: &File) -> Result<Vec<TarEntry>, TarError> {
    let len = file.metadata()?.len();
    parse_tar(&SizedFile { file, len })
}

/// Lists a tar archive held in memory, as [`read_tar_index`].
///
/// # Errors
/// [`TarError`].
pub fn read_tar_index_from_bytes(bytes: &[u8]) -> Result<Vec<TarEntry>, TarError> {
    parse_tar(bytes)
}

fn cstr(field: &[u8]) -> &[u8] {
    match field.iter().position(|&b| b == 0) {
        Some(n) => &field[..n],
        None => field,
    }
}

/// Parses a numeric header field: octal ASCII (leading spaces, ended by a
/// space or NUL) or GNU base-256 (first byte's high bit set; `0xff` first
/// byte for negative numbers).
fn parse_number(field: &[u8]) -> Option<i128> {
    let first = *field.first()?;
    if first & 0x80 != 0 {
        let negative = first & 0x40 != 0;
        let mut v: i128 = i128::from(first & 0x7f);
        if negative {
            v = i128::from(first) - 256;
        }
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(i128::from(b))?;
        }
        return Some(v);
    }
    let mut v: i128 = 0;
    let mut seen_digit = false;
    let mut ended = false;
    for &b in field {
        match b {
            b' ' if !seen_digit => continue,
            b'0'..=b'7' if !ended => {
                v = v.checked_mul(8)?.checked_add(i128::from(b - b'0'))?;
                seen_digit = true;
            }
            b' ' | 0 => ended = true,
            _ => return None,
        }
    }
    Some(v)
}

fn header_checksum_ok(h: &[u8; 512]) -> Option<bool> {
    let stored = parse_number(&h[148..156])?;
    let mut unsigned: i128 = 0;
    let mut signed: i128 = 0;
    for (i, &b) in h.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += i128::from(b);
        signed += i128::from(b as i8);
    }
    Some(stored == unsigned || stored == signed)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn round_up(n: u64) -> Option<u64> {
    n.checked_add(BLOCK - 1).map(|v| v / BLOCK * BLOCK)
}

/// Reads the data of a GNU long name entry: the name ends at the first NUL;
/// anything but NULs after it is refused.
fn read_long_name(
    src: &(impl TarSource + ?Sized),
    offset: u64,
    size: u64,
) -> Result<Vec<u8>, TarError> {
    if size > MAX_LONG_NAME {
        return Err(TarError::LongNameTooLong { offset, size });
    }
    let mut buf = vec![0u8; size as usize];
    src.read_at(offset + BLOCK, &mut buf)?;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    if buf[end..].iter().any(|&b| b != 0) {
        return Err(TarError::BadPath {
            offset,
            name: lossy(&buf),
            reason: PathError::Nul,
        });
    }
    buf.truncate(end);
    Ok(buf)
}

fn parse_tar(src: &(impl TarSource + ?Sized)) -> Result<Vec<TarEntry>, TarError> {
    let len = src.len();
    let mut entries = Vec::new();
    let mut pos: u64 = 0;
    let mut long_name: Option<(u64, Vec<u8>)> = None;
    let mut long_link: Option<(u64, Vec<u8>)> = None;
    loop {
        if pos == len {
            // dpkg accepts an archive that ends on a block boundary
            // without the end-of-archive blocks.
            break;
        }
        if pos + BLOCK > len {
            return Err(TarError::Truncated { offset: pos, len });
        }
        let mut h = [0u8; 512];
        src.read_at(pos, &mut h)?;
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let offset = pos;
        if !header_checksum_ok(&h).ok_or(TarError::BadField {
            offset,
            field: "checksum",
        })? {
            return Err(TarError::Checksum { offset });
        }
        let number = |range: std::ops::Range<usize>, field: &'static str| {
            parse_number(&h[range]).ok_or(TarError::BadField { offset, field })
        };
        let size = u64::try_from(number(124..136, "size")?).map_err(|_| TarError::BadField {
            offset,
            field: "size",
        })?;
        let data_start = pos + BLOCK;
        let data_end = data_start
            .checked_add(size)
            .filter(|&e| e <= len)
            .ok_or(TarError::Truncated { offset, len })?;
        let next = round_up(data_end).ok_or(TarError::Truncated { offset, len })?;
        // A missing final padding is tolerated, as by GNU tar.
        pos = next.min(len);
        let typeflag = h[156];
        let ustar = &h[257..263] == b"ustar\0";
        let mut name: Vec<u8> = cstr(&h[0..100]).to_vec();
        if ustar && h[345] != 0 {
            let mut full = cstr(&h[345..500]).to_vec();
            full.push(b'/');
            full.extend_from_slice(&name);
            name = full;
        }
        match typeflag {
            b'L' => {
                long_name = Some((offset, read_long_name(src, offset, size)?));
                continue;
            }
            b'K' => {
                long_link = Some((offset, read_long_name(src, offset, size)?));
                continue;
            }
            _ => {}
        }
        if let Some((_, n)) = long_name.take() {
            name = n;
        }
        let link: Vec<u8> = match long_link.take() {
            Some((_, l)) => l,
            None => cstr(&h[157..257]).to_vec(),
        };
        let unsupported = |what: &'static str| TarError::Unsupported {
            offset,
            name: lossy(&name),
            typeflag: char::from(typeflag),
            what,
        };
        let ends_with_slash = name.last() == Some(&b'/');
        let kind_code = match typeflag {
            b'0' | 0 if ends_with_slash => b'5',
            b'0' | 0 => b'0',
            b'1'..=b'6' => typeflag,
            b'x' | b'g' => return Err(unsupported("PAX extended header")),
            b'S' => return Err(unsupported("GNU sparse file")),
            b'D' => return Err(unsupported("GNU dump directory")),
            b'M' | b'V' => return Err(unsupported("GNU multi-volume")),
            b'7' => return Err(unsupported("contiguous file")),
            b'A' | b'E' | b'X' => return Err(unsupported("Solaris extension")),
            _ => return Err(unsupported("unknown type")),
        };
        let path = normalize_path(&name).map_err(|reason| TarError::BadPath {
            offset,
            name: lossy(&name),
            reason,
        })?;
        let device = |offset| -> Result<DeviceNumber, TarError> {
            let major =
                u32::try_from(number(329..337, "devmajor")?).map_err(|_| TarError::BadField {
                    offset,
                    field: "devmajor",
                })?;
            let minor =
                u32::try_from(number(337..345, "devminor")?).map_err(|_| TarError::BadField {
                    offset,
                    field: "devminor",
                })?;
            Ok(DeviceNumber { major, minor })
        };
        let kind = match kind_code {
            b'0' => TarEntryKind::File {
                offset: data_start,
                size,
            },
            b'5' => TarEntryKind::Dir,
            b'1' | b'2' => {
                if link.is_empty() {
                    return Err(TarError::EmptyLinkTarget {
                        offset,
                        name: lossy(&name),
                    });
                }
                if kind_code == b'2' {
                    TarEntryKind::Symlink(link.into_boxed_slice())
                } else {
                    let target = normalize_path(&link).map_err(|reason| TarError::BadPath {
                        offset,
                        name: lossy(&link),
                        reason,
                    })?;
                    if target.is_empty() {
                        return Err(TarError::BadPath {
                            offset,
                            name: lossy(&link),
                            reason: PathError::Empty,
                        });
                    }
                    TarEntryKind::HardLink(target)
                }
            }
            b'3' => TarEntryKind::CharDevice(device(offset)?),
            b'4' => TarEntryKind::BlockDevice(device(offset)?),
            _ => TarEntryKind::Fifo,
        };
        if path.is_empty() && kind != TarEntryKind::Dir {
            return Err(TarError::BadPath {
                offset,
                name: lossy(&name),
                reason: PathError::Empty,
            });
        }
        let mode =
            u16::try_from(number(100..108, "mode")? & 0o7777).map_err(|_| TarError::BadField {
                offset,
                field: "mode",
            })?;
        let uid = u32::try_from(number(108..116, "uid")?).map_err(|_| TarError::BadField {
            offset,
            field: "uid",
        })?;
        let gid = u32::try_from(number(116..124, "gid")?).map_err(|_| TarError::BadField {
            offset,
            field: "gid",
        })?;
        let mtime = i64::try_from(number(136..148, "mtime")?).map_err(|_| TarError::BadField {
            offset,
            field: "mtime",
        })?;
        let (uname, gname) = if ustar || &h[257..265] == b"ustar  \0" {
            (cstr(&h[265..297]), cstr(&h[297..329]))
        } else {
            (&[][..], &[][..])
        };
        entries.push(TarEntry {
            path,
            kind,
            mode,
            uid,
            gid,
            uname: uname.into(),
            gname: gname.into(),
            mtime,
        });
    }
    if let Some((offset, _)) = long_name.or(long_link) {
        return Err(TarError::DanglingLongName { offset });
    }
    Ok(entries)
}

/// Where a member lies in a `.deb` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member name (`control.tar.xz`, `data.tar.zst`, ...).
    pub name: String,
    /// Offset of its first byte in the `.deb`.
    pub offset: u64,
    /// Its (compressed) size.
    pub size: u64,
    /// Its compression.
    pub compression: Compression,
}

/// Errors reading a `.deb`. Every variant names the package file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DebError {
    /// Opening or reading the file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The package file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The file does not start with the `ar` magic `!<arch>\n`.
    #[error("{}: not a Debian binary package (no ar archive magic)", path.display())]
    NotAnArchive {
        /// The package file.
        path: PathBuf,
    },
    /// An `ar` member header is malformed.
    #[error("{}: corrupt ar member header at byte {offset}: {reason}", path.display())]
    BadArHeader {
        /// The package file.
        path: PathBuf,
        /// Offset of the header.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// The first member is not `debian-binary`, or its contents are not
    /// `2.<minor>\n`.
    #[error("{}: not a Debian format 2.x package: {found}", path.display())]
    BadDebianBinary {
        /// The package file.
        path: PathBuf,
        /// What was found instead, for the message.
        found: String,
    },
    /// A member extends past the end of the file.
    #[error("{}: member {member:?} is truncated: {size} bytes at byte {offset}, but the file has {file_len}", path.display())]
    TruncatedMember {
        /// The package file.
        path: PathBuf,
        /// The member name.
        member: String,
        /// Offset of its data.
        offset: u64,
        /// Its declared size.
        size: u64,
        /// The length of the file.
        file_len: u64,
    },
    /// A required member is missing.
    #[error("{}: no {member} member", path.display())]
    MissingMember {
        /// The package file.
        path: PathBuf,
        /// `control.tar` or `data.tar`.
        member: &'static str,
    },
    /// A member that dpkg would refuse here (unknown, or a second control
    /// member).
    #[error("{}: unexpected member {member:?}: {reason}", path.display())]
    UnexpectedMember {
        /// The package file.
        path: PathBuf,
        /// The member name.
        member: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The member's compression is not supported.
    #[error("{}: member {member:?} uses an unsupported compression", path.display())]
    UnsupportedCompression {
        /// The package file.
        path: PathBuf,
        /// The member name.
        member: String,
    },
    /// Decompressing a member failed (corrupt data).
    #[error("{}: cannot decompress {member}: {source}", path.display())]
    Decompress {
        /// The package file.
        path: PathBuf,
        /// The member name.
        member: String,
        /// The decoder's error.
        #[source]
        source: io::Error,
    },
    /// A member decompresses to more than the allowed size.
    #[error("{}: {member} decompresses to more than {limit} bytes", path.display())]
    TooLarge {
        /// The package file.
        path: PathBuf,
        /// The member name.
        member: String,
        /// The limit.
        limit: u64,
    },
    /// Writing the decompressed data to the caller's writer failed.
    #[error("{}: writing the decompressed {member}: {source}", path.display())]
    Output {
        /// The package file.
        path: PathBuf,
        /// The member name.
        member: String,
        /// The writer's error.
        #[source]
        source: io::Error,
    },
    /// A member's tar archive is malformed.
    #[error("{}: {member}: {source}", path.display())]
    Tar {
        /// The package file.
        path: PathBuf,
        /// The member name.
        member: String,
        /// What is wrong.
        #[source]
        source: TarError,
    },
    /// The control archive holds something dpkg would refuse (a
    /// subdirectory, a symbolic link, no `control` file, an over-long
    /// name).
    #[error("{}: control archive: {reason}", path.display())]
    ControlArchive {
        /// The package file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// A `.deb` file whose `ar` structure has been checked.
#[derive(Debug, Clone)]
pub struct DebFile {
    path: PathBuf,
    len: u64,
    control: Member,
    data: Member,
}

fn ar_name(raw: &[u8]) -> String {
    let mut end = raw.len();
    while end > 0 && raw[end - 1] == b' ' {
        end -= 1;
    }
    if end > 0 && raw[end - 1] == b'/' {
        end -= 1;
    }
    lossy(&raw[..end])
}

fn ar_size(raw: &[u8]) -> Option<u64> {
    let s = raw.iter().skip_while(|&&b| b == b' ');
    let mut v: u64 = 0;
    let mut digits = 0;
    let mut ended = false;
    for &b in s {
        match b {
            b'0'..=b'9' if !ended => {
                v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
                digits += 1;
            }
            b' ' => ended = true,
            _ => return None,
        }
    }
    (digits > 0).then_some(v)
}

impl DebFile {
    /// Opens `path` and checks its `ar` structure and member order (see the
    /// [module documentation](self)). Only the headers and `debian-binary`
    /// are read.
    ///
    /// # Errors
    /// [`DebError`], naming `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<DebFile, DebError> {
        let path = path.as_ref().to_path_buf();
        let io_err = |source| DebError::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        let mut magic = [0u8; 8];
        if len < 8 {
            return Err(DebError::NotAnArchive { path });
        }
        file.read_exact_at(&mut magic, 0).map_err(io_err)?;
        if &magic != AR_MAGIC {
            return Err(DebError::NotAnArchive { path });
        }
        let mut pos: u64 = 8;
        let mut seen_version = false;
        let mut control: Option<Member> = None;
        let data = loop {
            if pos >= len {
                let member = if control.is_none() {
                    "control.tar"
                } else {
                    "data.tar"
                };
                if !seen_version {
                    return Err(DebError::BadDebianBinary {
                        path,
                        found: "no members".into(),
                    });
                }
                return Err(DebError::MissingMember { path, member });
            }
            if pos + AR_HEADER_LEN > len {
                return Err(DebError::BadArHeader {
                    path,
                    offset: pos,
                    reason: "truncated header",
                });
            }
            let mut h = [0u8; 60];
            file.read_exact_at(&mut h, pos).map_err(io_err)?;
            if &h[58..60] != b"`\n" {
                return Err(DebError::BadArHeader {
                    path,
                    offset: pos,
                    reason: "bad header magic",
                });
            }
            let name = ar_name(&h[0..16]);
            let size = ar_size(&h[48..58]).ok_or_else(|| DebError::BadArHeader {
                path: path.clone(),
                offset: pos,
                reason: "invalid size field",
            })?;
            let offset = pos + AR_HEADER_LEN;
            if offset.checked_add(size).is_none_or(|end| end > len) {
                return Err(DebError::TruncatedMember {
                    path,
                    member: name,
                    offset,
                    size,
                    file_len: len,
                });
            }
            pos = offset + size + (size & 1);
            if !seen_version {
                if name != "debian-binary" {
                    return Err(DebError::BadDebianBinary {
                        path,
                        found: format!("first member is {name:?}"),
                    });
                }
                let mut buf = vec![0u8; size.min(64) as usize];
                file.read_exact_at(&mut buf, offset).map_err(io_err)?;
                let ok = size <= 64 && {
                    let text = &buf[..];
                    text.strip_prefix(b"2.")
                        .and_then(|rest| rest.strip_suffix(b"\n"))
                        .is_some_and(|minor| {
                            !minor.is_empty() && minor.iter().all(u8::is_ascii_digit)
                        })
                };
                if !ok {
                    return Err(DebError::BadDebianBinary {
                        path,
                        found: format!("debian-binary is {:?}", lossy(&buf)),
                    });
                }
                seen_version = true;
                continue;
            }
            if name.starts_with('_') {
                continue;
            }
            if let Some(ext) = name.strip_prefix("control.tar") {
                if control.is_some() {
                    return Err(DebError::UnexpectedMember {
                        path,
                        member: name,
                        reason: "second control member",
                    });
                }
                let compression = Compression::from_extension(ext).ok_or_else(|| {
                    DebError::UnsupportedCompression {
                        path: path.clone(),
                        member: name.clone(),
                    }
                })?;
                control = Some(Member {
                    name,
                    offset,
                    size,
                    compression,
                });
                continue;
            }
            if control.is_none() {
                return Err(DebError::UnexpectedMember {
                    path,
                    member: name,
                    reason: "before the control member",
                });
            }
            if let Some(ext) = name.strip_prefix("data.tar") {
                let compression = Compression::from_extension(ext).ok_or_else(|| {
                    DebError::UnsupportedCompression {
                        path: path.clone(),
                        member: name.clone(),
                    }
                })?;
                break Member {
                    name,
                    offset,
                    size,
                    compression,
                };
            }
            return Err(DebError::UnexpectedMember {
                path,
                member: name,
                reason: "before the data member",
            });
        };
        let control = control.ok_or_else(|| DebError::MissingMember {
            path: path.clone(),
            member: "control.tar",
        })?;
        Ok(DebFile {
            path,
            len,
            control,
            data,
        })
    }

    /// The package file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The length of the package file.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the package file is empty (never true for an opened one).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The control archive member.
    pub fn control_member(&self) -> &Member {
        &self.control
    }

    /// The data archive member.
    pub fn data_member(&self) -> &Member {
        &self.data
    }

    fn member_decoder(&self, member: &Member) -> Result<Box<dyn Read + Send>, DebError> {
        let io_err = |source| DebError::Io {
            path: self.path.clone(),
            source,
        };
        let mut file = File::open(&self.path).map_err(io_err)?;
        file.seek(SeekFrom::Start(member.offset)).map_err(io_err)?;
        let raw = io::BufReader::with_capacity(256 << 10, file.take(member.size));
        member
            .compression
            .decoder(raw)
            .map_err(|source| DebError::Decompress {
                path: self.path.clone(),
                member: member.name.clone(),
                source,
            })
    }

    /// Decompresses `member` into `out`, failing past `limit` bytes.
    /// Returns the decompressed size.
    fn copy_member(
        &self,
        member: &Member,
        out: &mut dyn Write,
        limit: u64,
    ) -> Result<u64, DebError> {
        let mut input = self.member_decoder(member)?;
        let mut buf = vec![0u8; 256 << 10];
        let mut total: u64 = 0;
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(DebError::Decompress {
                        path: self.path.clone(),
                        member: member.name.clone(),
                        source,
                    })
                }
            };
            total += n as u64;
            if total > limit {
                return Err(DebError::TooLarge {
                    path: self.path.clone(),
                    member: member.name.clone(),
                    limit,
                });
            }
            out.write_all(&buf[..n])
                .map_err(|source| DebError::Output {
                    path: self.path.clone(),
                    member: member.name.clone(),
                    source,
                })?;
        }
        Ok(total)
    }

    /// Decompresses the data archive (`data.tar`) into `out` and returns its
    /// size. The whole member is decoded, so the decompressor's own
    /// integrity checks (xz and gzip CRCs, zstd checksums when present) run.
    ///
    /// # Errors
    /// [`DebError::Decompress`] for corrupt data, [`DebError::TooLarge`]
    /// past `limit` bytes, [`DebError::Output`] when `out` fails.
    pub fn copy_data_tar(&self, out: &mut dyn Write, limit: u64) -> Result<u64, DebError> {
        self.copy_member(&self.data, out, limit)
    }

    /// Reads the control archive into memory and checks it (see
    /// [`ControlArchive`]).
    ///
    /// # Errors
    /// [`DebError`]: decompression, tar and control archive problems.
    pub fn read_control(&self) -> Result<ControlArchive, DebError> {
        let mut bytes = Vec::new();
        self.copy_member(&self.control, &mut bytes, MAX_CONTROL_SIZE)?;
        let entries = read_tar_index_from_bytes(&bytes).map_err(|source| DebError::Tar {
            path: self.path.clone(),
            member: self.control.name.clone(),
            source,
        })?;
        ControlArchive::from_entries(&self.path, &bytes, entries)
    }
}

/// One file of a control archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlMember {
    /// The file name (`postinst`, `md5sums`, ...).
    pub name: String,
    /// Permission bits as stored (`0o755` for scripts, `0o644` otherwise
    /// when built by `dpkg-deb`).
    pub mode: u16,
    /// Modification time as stored.
    pub mtime: i64,
    /// The contents.
    pub data: Arc<[u8]>,
}

/// The control archive of a package: every file of `control.tar`, by name.
///
/// Like dpkg, only regular files at the top level are accepted (plus the
/// `./` directory itself); a subdirectory, a link or a device is refused,
/// and so is a name longer than 100 bytes. `control` must be present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlArchive {
    members: BTreeMap<String, ControlMember>,
}

/// dpkg's limit on control file names (`MAXCONTROLFILENAME`).
const MAX_CONTROL_NAME: usize = 100;

impl ControlArchive {
    fn from_entries(path: &Path, bytes: &[u8], entries: Vec<TarEntry>) -> Result<Self, DebError> {
        let bad = |reason: String| DebError::ControlArchive {
            path: path.to_path_buf(),
            reason,
        };
        let mut members = BTreeMap::new();
        for e in entries {
            let name = lossy(&e.path);
            match e.kind {
                TarEntryKind::Dir if e.path.is_empty() => continue,
                TarEntryKind::Dir => return Err(bad(format!("contains directory {name:?}"))),
                TarEntryKind::File { offset, size } => {
                    if e.path.contains(&b'/') {
                        return Err(bad(format!("contains {name:?} in a subdirectory")));
                    }
                    let name = String::from_utf8(e.path.to_vec())
                        .map_err(|_| bad(format!("file name {name:?} is not UTF-8")))?;
                    if name.len() > MAX_CONTROL_NAME {
                        return Err(bad(format!("file name {name:?} is too long")));
                    }
                    // Offsets come from parsing `bytes`, so they are in range.
                    let data: Arc<[u8]> = bytes[offset as usize..(offset + size) as usize].into();
                    members.insert(
                        name.clone(),
                        ControlMember {
                            name,
                            mode: e.mode,
                            mtime: e.mtime,
                            data,
                        },
                    );
                }
                _ => return Err(bad(format!("{name:?} is not a regular file"))),
            }
        }
        if !members.contains_key("control") {
            return Err(bad("no control file".into()));
        }
        Ok(ControlArchive { members })
    }

    /// The member `name`, if present.
    pub fn get(&self, name: &str) -> Option<&ControlMember> {
        self.members.get(name)
    }

    /// The `control` file.
    pub fn control(&self) -> &ControlMember {
        &self.members["control"]
    }

    /// Every member, sorted by name.
    pub fn members(&self) -> impl ExactSizeIterator<Item = &ControlMember> + '_ {
        self.members.values()
    }

    /// The members dpkg installs into its `info/` directory: every one but
    /// `control`, and none whose name contains a dot (dpkg skips those).
    pub fn info_members(&self) -> impl Iterator<Item = &ControlMember> + '_ {
        self.members
            .values()
            .filter(|m| m.name != "control" && !m.name.contains('.'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &[u8], typeflag: u8, size: u64, link: &[u8]) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name);
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[136..148].copy_from_slice(b"14000000000\0");
        h[156] = typeflag;
        h[157..157 + link.len()].copy_from_slice(link);
        h[257..265].copy_from_slice(b"ustar  \0");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number(b"0000644\0"), Some(0o644));
        assert_eq!(parse_number(b"  644 \0\0"), Some(0o644));
        assert_eq!(parse_number(b"\0\0\0\0"), Some(0));
        assert_eq!(parse_number(b"0008"), None);
        assert_eq!(parse_number(b"12 3"), None);
        assert_eq!(parse_number(&[0x80, 0, 0, 1, 0]), Some(256));
        assert_eq!(parse_number(&[0xff, 0xff, 0xff, 0xfe]), Some(-2));
        assert_eq!(ar_size(b"1234      "), Some(1234));
        assert_eq!(ar_size(b"  12      "), Some(12));
        assert_eq!(ar_size(b"12x       "), None);
        assert_eq!(ar_size(b"          "), None);
        assert_eq!(ar_name(b"debian-binary/  "), "debian-binary");
    }

    #[test]
    fn tar_entries_offsets_and_long_names() {
        let long: Vec<u8> = [b"./".as_slice(), &[b'a'; 150], b"/file"].concat();
        let mut tar = Vec::new();
        tar.extend_from_slice(&header(b"./", b'5', 0, b""));
        tar.extend_from_slice(&header(b"./hello", b'0', 5, b""));
        tar.extend_from_slice(b"hello");
        tar.resize(tar.len() + 507, 0);
        tar.extend_from_slice(&header(b"././@LongLink", b'L', long.len() as u64 + 1, b""));
        let mut data = long.clone();
        data.push(0);
        data.resize(512, 0);
        tar.extend_from_slice(&data);
        tar.extend_from_slice(&header(b"./aaaa", b'0', 0, b""));
        tar.extend_from_slice(&header(b"./link", b'1', 0, b"./hello"));
        tar.extend_from_slice(&header(b"./old-dir/", b'0', 0, b""));
        tar.extend_from_slice(&[0u8; 1024]);
        let e = read_tar_index_from_bytes(&tar).unwrap();
        assert_eq!(e.len(), 5);
        assert_eq!(&*e[0].path, b"");
        assert_eq!(e[0].list_path(), b"/.");
        assert_eq!(
            e[1].kind,
            TarEntryKind::File {
                offset: 1024,
                size: 5
            }
        );
        assert_eq!(&tar[1024..1029], b"hello");
        assert_eq!(e[1].mtime, 0o14000000000);
        assert_eq!(&*e[1].uname, b"");
        assert_eq!(e[2].path.len(), 155);
        assert_eq!(e[3].kind, TarEntryKind::HardLink(b"hello".to_vec().into()));
        assert_eq!(e[4].kind, TarEntryKind::Dir);
        assert_eq!(&*e[4].path, b"old-dir");
    }

    #[test]
    fn tar_rejections() {
        let one = |h: [u8; 512]| {
            let mut t = h.to_vec();
            t.extend_from_slice(&[0u8; 1024]);
            read_tar_index_from_bytes(&t)
        };
        assert!(matches!(
            one(header(b"./x", b'x', 0, b"")),
            Err(TarError::Unsupported { typeflag: 'x', .. })
        ));
        assert!(matches!(
            one(header(b"./x", b'S', 0, b"")),
            Err(TarError::Unsupported { typeflag: 'S', .. })
        ));
        assert!(matches!(
            one(header(b"./a/../../etc", b'0', 0, b"")),
            Err(TarError::BadPath {
                reason: PathError::ParentComponent,
                ..
            })
        ));
        assert!(matches!(
            one(header(b"./l", b'1', 0, b"../x")),
            Err(TarError::BadPath { .. })
        ));
        assert!(matches!(
            one(header(b"./", b'0', 0, b"")),
            Ok(ref v) if v[0].kind == TarEntryKind::Dir
        ));
        assert!(matches!(
            one(header(b"/", b'2', 0, b"x")),
            Err(TarError::BadPath {
                reason: PathError::Empty,
                ..
            })
        ));
        let mut h = header(b"./x", b'0', 0, b"");
        h[0] = b'y';
        assert!(matches!(one(h), Err(TarError::Checksum { offset: 0 })));
        // Data running past the end.
        let t = header(b"./x", b'0', 10, b"").to_vec();
        assert!(matches!(
            read_tar_index_from_bytes(&t),
            Err(TarError::Truncated { offset: 0, .. })
        ));
        // A partial header.
        assert!(matches!(
            read_tar_index_from_bytes(&[1u8; 100]),
            Err(TarError::Truncated { .. })
        ));
    }

    #[test]
    fn damaged_archives_never_panic() {
        let deb = fixtures::deb::DebBuilder::new("fuzz", "1", "amd64")
            .file("/usr/bin/x", b"contents", 0o755)
            .file(&format!("/usr/share/{}", "l".repeat(150)), b"long", 0o644)
            .symlink("/usr/bin/y", "x")
            .hardlink("/usr/bin/z", "/usr/bin/x")
            .compression(fixtures::deb::Compression::None)
            .build();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fuzz.deb");
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..400 {
            let mut bytes = deb.clone();
            for _ in 0..(1 + round % 8) {
                let i = (next() % bytes.len() as u64) as usize;
                bytes[i] = next() as u8;
            }
            if round % 5 == 0 {
                let cut = (next() % bytes.len() as u64) as usize;
                bytes.truncate(cut);
            }
            std::fs::write(&path, &bytes).unwrap();
            if let Ok(f) = DebFile::open(&path) {
                let _ = f.read_control();
                let _ = f.copy_data_tar(&mut io::sink(), 1 << 20);
            }
            let _ = read_tar_index_from_bytes(&bytes);
            if bytes.len() > 1000 {
                let _ = read_tar_index_from_bytes(&bytes[bytes.len() / 3..]);
            }
        }
    }
}
