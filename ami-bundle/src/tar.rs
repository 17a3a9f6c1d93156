//! The tar stage: the GNU tar stream of one image file, and its reader.
//!
//! Amazon's tool runs GNU tar 1.x as `tar -c -h -S --owner 0 --group 0 -C
//! DIR NAME` (notes §3), so a bundle's tar stream is in GNU tar's default
//! `gnu` format and holds exactly one member:
//!
//! * an optional `././@LongLink` header (typeflag `L`) when the name is
//!   longer than 100 bytes, followed by the name and a NUL;
//! * the member header: typeflag `0` for a dense file, or `S` (old GNU
//!   sparse) when the file has holes. Numbers are octal, NUL-terminated,
//!   and switch to GNU base-256 when they do not fit (sizes of 8 GiB and
//!   more). Owner and group are 0 and named `root`; mode and mtime are the
//!   image file's. A sparse header lists up to 4 `(offset, length)` data
//!   regions, `isextended`, and the real size; further regions go into
//!   extension blocks of 21 each. The map always ends with
//!   `(real size, 0)`, and the header's size field counts only the stored
//!   data bytes;
//! * the file data (for a sparse member: only its data regions, back to
//!   back), zero-padded to a 512-byte boundary;
//! * two zero blocks, and zero padding up to a multiple of 10240 bytes
//!   (tar's default record of 20 blocks).
//!
//! [`TarStream`] produces exactly the bytes GNU tar 1.34 writes for the
//! same file (the tests compare them), so a bundle's image digest matches
//! the one Amazon's tool would compute. [`ImageInfo::from_file`] decides
//! dense or sparse as `tar -S` does.
//!
//! The reader ([`extract`]) accepts what GNU tar, Python's `tarfile` and
//! Go's `archive/tar` write for one file: ustar, GNU (`L` long names, `S`
//! sparse) and pax (`x` headers with `path`, `size` and `mtime`) members.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::MetadataExt;

use crate::error::{Error, Result};

/// Tar block size.
pub const BLOCK: u64 = 512;
/// GNU tar's default record size (20 blocks); the stream is padded to it.
pub const RECORD: u64 = 10240;
/// Sparse map entries in the member header.
const HEADER_SPARSE: usize = 4;
/// Sparse map entries in one extension block.
const EXT_SPARSE: usize = 21;

/// What the tar header says about the image, and which parts of it hold
/// data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// Size in bytes.
    pub size: u64,
    /// Permission bits (`mode & 0o7777`), e.g. `0o644`.
    pub mode: u32,
    /// Modification time, seconds since 1970.
    pub mtime: i64,
    /// `None`: a dense member (every byte is stored). `Some(ranges)`: a GNU
    /// sparse member storing only these byte ranges (sorted, disjoint,
    /// non-empty, within `size`); everything else reads as zeros. An empty
    /// list is a file that is all hole.
    pub data: Option<Vec<Range<u64>>>,
}

impl ImageInfo {
    /// A dense image of `size` bytes, mode 0644, mtime 0.
    pub fn dense(size: u64) -> ImageInfo {
        ImageInfo {
            size,
            mode: 0o644,
            mtime: 0,
            data: None,
        }
    }

    /// A sparse image of `size` bytes whose data lies in `data` (mode
    /// 0644, mtime 0).
    pub fn sparse(size: u64, data: Vec<Range<u64>>) -> ImageInfo {
        ImageInfo {
            size,
            mode: 0o644,
            mtime: 0,
            data: Some(data),
        }
    }

    /// The size, mode and mtime of an open file, and its data ranges when
    /// it has holes, decided as GNU `tar -S` does: a file is sparse when it
    /// occupies fewer 512-byte blocks than its size needs; its data ranges
    /// are then found with `SEEK_DATA`/`SEEK_HOLE` (a file with no blocks
    /// at all is one hole). Where the filesystem cannot report holes, the
    /// file is treated as dense.
    ///
    /// The file's position is left unspecified; [`TarStream`] seeks.
    ///
    /// # Errors
    ///
    /// I/O errors from `fstat` and `lseek`.
    pub fn from_file(file: &File) -> io::Result<ImageInfo> {
        let meta = file.metadata()?;
        let size = meta.len();
        let mut info = ImageInfo {
            size,
            mode: meta.mode() & 0o7777,
            mtime: meta.mtime(),
            data: None,
        };
        if meta.blocks() >= size.div_ceil(BLOCK) {
            return Ok(info);
        }
        if meta.blocks() == 0 {
            info.data = Some(Vec::new());
            return Ok(info);
        }
        info.data = data_ranges(file, size)?;
        Ok(info)
    }

    /// Bytes of image data the tar stream stores.
    pub fn stored_bytes(&self) -> u64 {
        match &self.data {
            None => self.size,
            Some(ranges) => ranges.iter().map(|r| r.end - r.start).sum(),
        }
    }

    /// Checks the sparse map.
    pub(crate) fn validate(&self) -> Result<()> {
        let Some(ranges) = &self.data else {
            return Ok(());
        };
        let mut end = 0;
        for r in ranges {
            if r.start >= r.end {
                return Err(Error::InvalidSparseMap("a data range is empty"));
            }
            if r.start < end {
                return Err(Error::InvalidSparseMap(
                    "data ranges are not sorted or overlap",
                ));
            }
            if r.end > self.size {
                return Err(Error::InvalidSparseMap(
                    "a data range ends after the end of the image",
                ));
            }
            end = r.end;
        }
        Ok(())
    }
}

/// The data ranges of `file` from `SEEK_DATA`/`SEEK_HOLE`; `None` where
/// the filesystem does not support them.
fn data_ranges(file: &File, size: u64) -> io::Result<Option<Vec<Range<u64>>>> {
    use rustix::fs::SeekFrom as RSeek;
    use rustix::io::Errno;
    let mut ranges = Vec::new();
    let mut pos = 0;
    while pos < size {
        let start = match rustix::fs::seek(file, RSeek::Data(pos)) {
            Ok(start) => start,
            Err(Errno::NXIO) => break,
            Err(Errno::INVAL | Errno::NOTSUP) if pos == 0 => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if start >= size {
            break;
        }
        let end = rustix::fs::seek(file, RSeek::Hole(start))?.min(size);
        if end <= start {
            break;
        }
        ranges.push(start..end);
        pos = end;
    }
    Ok(Some(ranges))
}

/// Writes `value` into a numeric header field as GNU tar does: octal with
/// `len - 1` digits and a NUL when it fits, else base-256 (first byte
/// `0x80`, or `0xff` for negative values, then big-endian two's
/// complement).
fn put_number(field: &mut [u8], value: i64) {
    let digits = field.len() - 1;
    let fits = u32::try_from(digits * 3)
        .ok()
        .and_then(|bits| 1u64.checked_shl(bits))
        .is_some_and(|limit| value >= 0 && value.unsigned_abs() < limit);
    if fits {
        let text = format!("{value:0digits$o}");
        field[..digits].copy_from_slice(text.as_bytes());
        field[digits] = 0;
    } else {
        let bytes = i128::from(value).to_be_bytes();
        let n = field.len();
        field.copy_from_slice(&bytes[bytes.len() - n..]);
        field[0] = if value < 0 { 0xff } else { 0x80 };
    }
}

/// The common part of the headers GNU tar writes: owner 0/0 named root,
/// GNU magic.
fn base_header(name: &[u8], mode: u32, mtime: i64, size: u64, typeflag: u8) -> [u8; 512] {
    let mut h = [0u8; 512];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    put_number(&mut h[100..108], i64::from(mode));
    put_number(&mut h[108..116], 0);
    put_number(&mut h[116..124], 0);
    put_number(&mut h[124..136], i64::try_from(size).unwrap_or(i64::MAX));
    put_number(&mut h[136..148], mtime);
    h[156] = typeflag;
    h[257..265].copy_from_slice(b"ustar  \0");
    h[265..269].copy_from_slice(b"root");
    h[297..301].copy_from_slice(b"root");
    h
}

/// Fills in the checksum: the sum of all bytes with the checksum field
/// counted as spaces, as 6 octal digits, NUL, space.
fn set_checksum(h: &mut [u8; 512]) {
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let text = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(text.as_bytes());
}

fn put_sparse_entry(slot: &mut [u8], offset: u64, length: u64) {
    put_number(&mut slot[..12], i64::try_from(offset).unwrap_or(i64::MAX));
    put_number(&mut slot[12..24], i64::try_from(length).unwrap_or(i64::MAX));
}

/// The header blocks of the member `name` (long-name header, member
/// header, sparse extension blocks).
pub(crate) fn header_blocks(name: &str, info: &ImageInfo) -> Vec<u8> {
    let mut out = Vec::new();
    let name = name.as_bytes();
    if name.len() > 100 {
        let mut long = base_header(b"././@LongLink", 0o644, 0, name.len() as u64 + 1, b'L');
        set_checksum(&mut long);
        out.extend_from_slice(&long);
        let mut data = name.to_vec();
        data.push(0);
        data.resize(data.len().next_multiple_of(512), 0);
        out.extend_from_slice(&data);
    }
    match &info.data {
        None => {
            let mut h = base_header(name, info.mode, info.mtime, info.size, b'0');
            set_checksum(&mut h);
            out.extend_from_slice(&h);
        }
        Some(ranges) => {
            let mut map: Vec<(u64, u64)> =
                ranges.iter().map(|r| (r.start, r.end - r.start)).collect();
            map.push((info.size, 0));
            let mut h = base_header(name, info.mode, info.mtime, info.stored_bytes(), b'S');
            for (i, &(off, len)) in map.iter().take(HEADER_SPARSE).enumerate() {
                put_sparse_entry(&mut h[386 + i * 24..410 + i * 24], off, len);
            }
            h[482] = u8::from(map.len() > HEADER_SPARSE);
            put_number(
                &mut h[483..495],
                i64::try_from(info.size).unwrap_or(i64::MAX),
            );
            set_checksum(&mut h);
            out.extend_from_slice(&h);
            let rest = map.get(HEADER_SPARSE..).unwrap_or(&[]);
            let blocks = rest.chunks(EXT_SPARSE).count();
            for (b, chunk) in rest.chunks(EXT_SPARSE).enumerate() {
                let mut ext = [0u8; 512];
                for (i, &(off, len)) in chunk.iter().enumerate() {
                    put_sparse_entry(&mut ext[i * 24..i * 24 + 24], off, len);
                }
                ext[504] = u8::from(b + 1 < blocks);
                out.extend_from_slice(&ext);
            }
        }
    }
    out
}

/// The length of the whole tar stream of `info` under `name`.
pub(crate) fn stream_len(name: &str, info: &ImageInfo) -> u64 {
    let headers = header_blocks(name, info).len() as u64;
    let data = info.stored_bytes().next_multiple_of(BLOCK);
    (headers + data + 2 * BLOCK).next_multiple_of(RECORD)
}

/// Where the stream is.
#[derive(Debug)]
enum Phase {
    Headers,
    /// Copying data range `index` of the image, at `pos` in the image.
    Data {
        index: usize,
        pos: u64,
    },
    Trailer,
}

/// The GNU tar stream of one image file, as a reader (see the module
/// docs for the format).
///
/// Reads the image's data ranges in order (seeking for sparse images).
/// If the image turns out shorter than [`ImageInfo::size`], reading fails
/// with [`io::ErrorKind::UnexpectedEof`].
#[derive(Debug)]
pub struct TarStream<R> {
    image: R,
    ranges: Vec<Range<u64>>,
    headers: Vec<u8>,
    phase: Phase,
    /// Bytes emitted so far.
    emitted: u64,
    /// Total length of the stream.
    len: u64,
    /// Position in the image up to which it has been covered (data read or
    /// hole skipped), for progress reports.
    covered: u64,
    size: u64,
}

impl<R: Read + Seek> TarStream<R> {
    /// The tar stream of `image` (described by `info`) as member `name`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSparseMap`] if `info.data` is not sorted, disjoint
    /// and within the image.
    pub fn new(image: R, info: &ImageInfo, name: &str) -> Result<TarStream<R>> {
        info.validate()?;
        let ranges = match &info.data {
            None if info.size == 0 => Vec::new(),
            None => vec![0..info.size],
            Some(r) => r.clone(),
        };
        Ok(TarStream {
            image,
            ranges,
            headers: header_blocks(name, info),
            phase: Phase::Headers,
            emitted: 0,
            len: stream_len(name, info),
            covered: 0,
            size: info.size,
        })
    }

    /// The total length of the stream in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Always false: a tar stream has at least its header and end blocks.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// How far into the image the stream has got, in image bytes (holes
    /// count as covered once passed).
    pub fn image_position(&self) -> u64 {
        self.covered
    }

    fn fill(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.phase {
                Phase::Headers => {
                    let start = self.emitted as usize;
                    if start < self.headers.len() {
                        let n = buf.len().min(self.headers.len() - start);
                        buf[..n].copy_from_slice(&self.headers[start..start + n]);
                        return Ok(n);
                    }
                    self.phase = match self.ranges.first() {
                        Some(r) => {
                            self.image.seek(SeekFrom::Start(r.start))?;
                            self.covered = r.start;
                            Phase::Data {
                                index: 0,
                                pos: r.start,
                            }
                        }
                        None => {
                            self.covered = self.size;
                            Phase::Trailer
                        }
                    };
                }
                Phase::Data { index, pos } => {
                    let range = self.ranges[index].clone();
                    if pos < range.end {
                        let want = buf
                            .len()
                            .min(usize::try_from(range.end - pos).unwrap_or(usize::MAX));
                        let n = self.image.read(&mut buf[..want])?;
                        if n == 0 {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "the image is shorter than its announced size",
                            ));
                        }
                        self.phase = Phase::Data {
                            index,
                            pos: pos + n as u64,
                        };
                        self.covered = pos + n as u64;
                        return Ok(n);
                    }
                    self.phase = match self.ranges.get(index + 1) {
                        Some(next) => {
                            self.image.seek(SeekFrom::Start(next.start))?;
                            self.covered = next.start;
                            Phase::Data {
                                index: index + 1,
                                pos: next.start,
                            }
                        }
                        None => {
                            self.covered = self.size;
                            Phase::Trailer
                        }
                    };
                }
                Phase::Trailer => {
                    let left = self.len - self.emitted;
                    let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    buf[..n].fill(0);
                    return Ok(n);
                }
            }
        }
    }
}

impl<R: Read + Seek> Read for TarStream<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.emitted >= self.len {
            return Ok(0);
        }
        let n = self.fill(buf)?;
        self.emitted += n as u64;
        Ok(n)
    }
}

/// Where [`extract`] writes the image: a file or memory. Writes go through
/// `Write` at positions set with `Seek`; skipped ranges must read as
/// zeros, and `set_len` gives the final length.
pub trait ImageWriter: Write + Seek {
    /// Sets the length of the output (extending with zeros).
    ///
    /// # Errors
    ///
    /// I/O errors.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
}

impl ImageWriter for File {
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
}

impl ImageWriter for io::Cursor<Vec<u8>> {
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(io::Error::other)?;
        self.get_mut().resize(len, 0);
        Ok(())
    }
}

/// The file found in a tar stream by [`extract`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// Member name (a plain file name, checked).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits from the header.
    pub mode: u32,
    /// Modification time from the header.
    pub mtime: i64,
    /// Whether the member was GNU sparse.
    pub sparse: bool,
}

fn tar_error(msg: impl Into<String>) -> Error {
    Error::Tar(msg.into())
}

/// Reads a numeric field: octal (leading spaces and NULs skipped, ending at
/// a NUL or space) or GNU base-256.
fn parse_number(field: &[u8]) -> Result<i64> {
    if field.first().is_some_and(|&b| b & 0x80 != 0) {
        let negative = field[0] & 0x40 != 0;
        let mut value: i128 = if negative { -1 } else { 0 };
        for (i, &b) in field.iter().enumerate() {
            let b = if i == 0 {
                b & 0x7f | if negative { 0x80 } else { 0 }
            } else {
                b
            };
            value = (value << 8) | i128::from(b);
            if value > i128::from(i64::MAX) || value < i128::from(i64::MIN) {
                return Err(tar_error("a base-256 number is too large"));
            }
        }
        return Ok(i64::try_from(value).unwrap_or(0));
    }
    let text: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ' || b == 0)
        .take_while(|&b| b != 0 && b != b' ')
        .collect();
    if text.is_empty() {
        return Ok(0);
    }
    let text = std::str::from_utf8(&text).map_err(|_| tar_error("a number is not octal"))?;
    i64::from_str_radix(text, 8).map_err(|_| tar_error(format!("{text:?} is not an octal number")))
}

fn parse_u64(field: &[u8], what: &str) -> Result<u64> {
    u64::try_from(parse_number(field)?).map_err(|_| tar_error(format!("negative {what}")))
}

fn checksum_ok(h: &[u8; 512]) -> Result<bool> {
    let stored = parse_number(&h[148..156])?;
    let unsigned: i64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                i64::from(b)
            }
        })
        .sum();
    // Some old tars summed signed bytes.
    let signed: i64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                i64::from(b as i8)
            }
        })
        .sum();
    Ok(stored == unsigned || stored == signed)
}

/// Reads exactly one block; `Ok(false)` at a clean end of stream.
fn read_block(r: &mut dyn Read, block: &mut [u8; 512]) -> Result<bool> {
    let mut got = 0;
    while got < 512 {
        match r.read(&mut block[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(tar_error("the stream ends inside a block")),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::from_io(e, Error::Gzip)),
        }
    }
    Ok(true)
}

fn read_exact(r: &mut dyn Read, buf: &mut [u8]) -> Result<()> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            tar_error("the stream ends inside a member")
        } else {
            Error::from_io(e, Error::Gzip)
        }
    })
}

/// Reads `len` bytes of member data (padded to a block) into memory; used
/// for long names and pax headers, which are small.
fn read_small(r: &mut dyn Read, len: u64) -> Result<Vec<u8>> {
    if len > 1 << 20 {
        return Err(tar_error("a long-name or pax header is larger than 1 MiB"));
    }
    let mut data = vec![0u8; usize::try_from(len.next_multiple_of(BLOCK)).unwrap_or(0)];
    read_exact(r, &mut data)?;
    data.truncate(usize::try_from(len).unwrap_or(0));
    Ok(data)
}

/// The `path`, `size` and `mtime` records of a pax extended header.
#[derive(Default)]
struct Pax {
    path: Option<String>,
    size: Option<u64>,
    mtime: Option<i64>,
}

fn parse_pax(data: &[u8]) -> Result<Pax> {
    let mut pax = Pax::default();
    let mut rest = data;
    while !rest.is_empty() {
        let space = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| tar_error("malformed pax record"))?;
        let len: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|&l| l > space + 1 && l <= rest.len())
            .ok_or_else(|| tar_error("malformed pax record length"))?;
        let record = &rest[space + 1..len - 1];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| tar_error("malformed pax record"))?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        let text = String::from_utf8_lossy(value).into_owned();
        match key {
            b"path" => pax.path = Some(text),
            b"size" => {
                pax.size = Some(text.parse().map_err(|_| tar_error("bad pax size"))?);
            }
            b"mtime" => {
                let secs = text.split('.').next().unwrap_or("0");
                pax.mtime = Some(secs.parse().map_err(|_| tar_error("bad pax mtime"))?);
            }
            k if k.starts_with(b"GNU.sparse.") => {
                return Err(tar_error("pax (GNU 1.0) sparse members are not supported"))
            }
            _ => {}
        }
        rest = &rest[len..];
    }
    Ok(pax)
}

/// Zero-block aware writer: writes `data` at `pos`, leaving aligned 4 KiB
/// blocks of zeros as holes (the output's unwritten ranges read as zeros).
fn write_data(out: &mut dyn ImageWriter, pos: u64, data: &[u8], at: &mut u64) -> io::Result<()> {
    const CHUNK: usize = 4096;
    let mut offset = 0;
    while offset < data.len() {
        let abs = pos + offset as u64;
        // Up to the next 4 KiB boundary of the image.
        let end = (offset + CHUNK - (abs % CHUNK as u64) as usize).min(data.len());
        let chunk = &data[offset..end];
        let whole_block = chunk.len() == CHUNK;
        if !(whole_block && chunk.iter().all(|&b| b == 0)) {
            if *at != abs {
                out.seek(SeekFrom::Start(abs))?;
            }
            out.write_all(chunk)?;
            *at = abs + chunk.len() as u64;
        }
        offset = end;
    }
    Ok(())
}

/// Reads a tar stream holding exactly one regular file and writes that
/// file's contents to `out` (zeros as holes). Reads `input` to its end (so
/// that a hashing reader underneath sees every byte).
///
/// `progress` is called with the number of image bytes done after each
/// chunk.
///
/// # Errors
///
/// [`Error::Tar`] for a malformed stream, a member that is not a regular
/// file, a name that is not a plain file name, or more than one member;
/// errors of `input` ([`Error`]s wrapped in the `io::Error` come through
/// as themselves, others as [`Error::Gzip`]); errors writing `out` as
/// [`Error::Sink`].
pub fn extract(
    input: &mut dyn Read,
    out: &mut dyn ImageWriter,
    progress: &mut dyn FnMut(u64),
) -> Result<Extracted> {
    let mut block = [0u8; 512];
    let mut long_name: Option<String> = None;
    let mut pax = Pax::default();
    let out_err = |e: io::Error| Error::Sink(Box::new(e));
    let extracted = loop {
        if !read_block(input, &mut block)? {
            return Err(tar_error("the stream holds no file"));
        }
        if block.iter().all(|&b| b == 0) {
            return Err(tar_error("the stream holds no file"));
        }
        if !checksum_ok(&block)? {
            return Err(tar_error("a header checksum is wrong"));
        }
        let typeflag = block[156];
        let size = parse_u64(&block[124..136], "size")?;
        match typeflag {
            b'L' => {
                let mut name = read_small(input, size)?;
                while name.last() == Some(&0) {
                    name.pop();
                }
                long_name =
                    Some(String::from_utf8(name).map_err(|_| tar_error("a name is not UTF-8"))?);
            }
            b'x' => pax = parse_pax(&read_small(input, size)?)?,
            b'g' => {
                read_small(input, size)?;
            }
            b'0' | 0 | b'7' | b'S' => {
                let header_name = {
                    let raw = &block[..100];
                    let end = raw.iter().position(|&b| b == 0).unwrap_or(100);
                    let mut name = raw[..end].to_vec();
                    // ustar prefix field (not used by GNU format).
                    if &block[257..263] == b"ustar\0" && block[345] != 0 {
                        let p = &block[345..500];
                        let pend = p.iter().position(|&b| b == 0).unwrap_or(p.len());
                        let mut full = p[..pend].to_vec();
                        full.push(b'/');
                        full.extend_from_slice(&name);
                        name = full;
                    }
                    String::from_utf8(name).map_err(|_| tar_error("a name is not UTF-8"))?
                };
                let name = pax.path.take().or(long_name.take()).unwrap_or(header_name);
                check_name(&name)?;
                let mode = u32::try_from(parse_number(&block[100..108])? & 0o7777).unwrap_or(0o644);
                let mtime = pax.mtime.unwrap_or(parse_number(&block[136..148])?);
                let stored = pax.size.unwrap_or(size);
                let mut at = 0u64;
                let (real_size, sparse) = if typeflag == b'S' {
                    let map = read_sparse_map(input, &block)?;
                    let real = parse_u64(&block[483..495], "real size")?;
                    let total: u64 = map.iter().map(|&(_, l)| l).sum();
                    if total != stored {
                        return Err(tar_error("the sparse map does not match the member size"));
                    }
                    copy_sparse(input, out, &map, real, stored, &mut at, progress)?;
                    (real, true)
                } else {
                    copy_regions(input, out, &[(0, stored)], stored, &mut at, progress)?;
                    (stored, false)
                };
                out.set_len(real_size).map_err(out_err)?;
                break Extracted {
                    name,
                    size: real_size,
                    mode,
                    mtime,
                    sparse,
                };
            }
            b'5' => return Err(tar_error("the stream holds a directory, not an image file")),
            b'1' | b'2' => return Err(tar_error("the stream holds a link, not an image file")),
            other => {
                return Err(tar_error(format!(
                    "unsupported member type {:?}",
                    char::from(other)
                )))
            }
        }
    };
    // Only end-of-archive zeros may follow.
    loop {
        if !read_block(input, &mut block)? {
            break;
        }
        if block.iter().any(|&b| b != 0) {
            return Err(tar_error("the stream holds more than one member"));
        }
    }
    // Whatever follows the record padding is still hashed by the caller.
    let mut sink = [0u8; 8192];
    loop {
        match input.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::from_io(e, Error::Gzip)),
        }
    }
    Ok(extracted)
}

/// A name must be one plain path component.
fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(tar_error(format!(
            "the member name {name:?} is not a plain file name"
        )));
    }
    Ok(())
}

/// The old GNU sparse map of header `h` and its extension blocks, without
/// empty entries.
fn read_sparse_map(input: &mut dyn Read, h: &[u8; 512]) -> Result<Vec<(u64, u64)>> {
    let mut map = Vec::new();
    let mut push = |slot: &[u8]| -> Result<()> {
        if slot.iter().all(|&b| b == 0) {
            return Ok(());
        }
        let off = parse_u64(&slot[..12], "sparse offset")?;
        let len = parse_u64(&slot[12..24], "sparse length")?;
        if len > 0 {
            map.push((off, len));
        }
        Ok(())
    };
    for i in 0..HEADER_SPARSE {
        push(&h[386 + i * 24..410 + i * 24])?;
    }
    let mut extended = h[482] != 0;
    let mut ext = [0u8; 512];
    let mut blocks = 0;
    while extended {
        blocks += 1;
        if blocks > 100_000 {
            return Err(tar_error("the sparse map is too long"));
        }
        read_exact(input, &mut ext)?;
        for i in 0..EXT_SPARSE {
            push(&ext[i * 24..i * 24 + 24])?;
        }
        extended = ext[504] != 0;
    }
    Ok(map)
}

fn copy_sparse(
    input: &mut dyn Read,
    out: &mut dyn ImageWriter,
    map: &[(u64, u64)],
    real: u64,
    stored: u64,
    at: &mut u64,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let mut end = 0;
    for &(off, len) in map {
        if off < end || off.checked_add(len).is_none_or(|e| e > real) {
            return Err(tar_error(
                "the sparse map is not sorted or lies outside the file",
            ));
        }
        end = off + len;
    }
    copy_regions(input, out, map, stored, at, progress)
}

/// Copies the member data (`stored` bytes, then padding) into `out`,
/// region by region.
fn copy_regions(
    input: &mut dyn Read,
    out: &mut dyn ImageWriter,
    map: &[(u64, u64)],
    stored: u64,
    at: &mut u64,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let out_err = |e: io::Error| Error::Sink(Box::new(e));
    for &(off, len) in map {
        let mut done = 0;
        while done < len {
            let n = usize::try_from((len - done).min(buf.len() as u64)).unwrap_or(buf.len());
            read_exact(input, &mut buf[..n])?;
            write_data(out, off + done, &buf[..n], at).map_err(out_err)?;
            done += n as u64;
            progress(n as u64);
        }
    }
    let pad = usize::try_from(stored.next_multiple_of(BLOCK) - stored).unwrap_or(0);
    read_exact(input, &mut buf[..pad])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// Largest value an 11-digit octal field holds, plus one (8 GiB).
    const OCTAL_11_LIMIT: u64 = 1 << 33;

    #[test]
    fn numbers_switch_to_base256_at_8_gib() {
        let mut f = [0u8; 12];
        put_number(&mut f, 0o120000000);
        assert_eq!(&f, b"00120000000\0");
        put_number(&mut f, (OCTAL_11_LIMIT - 1) as i64);
        assert_eq!(&f, b"77777777777\0");
        put_number(&mut f, OCTAL_11_LIMIT as i64);
        assert_eq!(f, [0x80, 0, 0, 0, 0, 0, 0, 0x02, 0, 0, 0, 0]);
        assert_eq!(parse_number(&f).unwrap(), OCTAL_11_LIMIT as i64);
        put_number(&mut f, -1);
        assert_eq!(f, [0xff; 12]);
        assert_eq!(parse_number(&f).unwrap(), -1);
        let mut mode = [0u8; 8];
        put_number(&mut mode, 0o644);
        assert_eq!(&mode, b"0000644\0");
        assert_eq!(parse_number(b"   644 \0").unwrap(), 0o644);
    }

    #[test]
    fn dense_header_matches_the_reference_layout() {
        let info = ImageInfo {
            size: 20 << 20,
            mode: 0o644,
            mtime: 1_704_067_200,
            data: None,
        };
        let h = header_blocks("sample.img", &info);
        assert_eq!(h.len(), 512);
        assert_eq!(&h[..11], b"sample.img\0");
        assert_eq!(&h[100..108], b"0000644\0");
        assert_eq!(&h[108..116], b"0000000\0");
        assert_eq!(&h[116..124], b"0000000\0");
        assert_eq!(&h[124..136], b"00120000000\0");
        assert_eq!(&h[136..148], b"14544400200\0");
        assert_eq!(h[156], b'0');
        assert_eq!(&h[257..265], b"ustar  \0");
        assert_eq!(&h[265..270], b"root\0");
        assert_eq!(&h[297..302], b"root\0");
        assert_eq!(h[155], b' ');
        assert_eq!(h[154], 0);
        // 512 + 20 MiB + 9728 (notes §3).
        assert_eq!(stream_len("sample.img", &info), 20_981_760);
    }

    #[test]
    fn stream_round_trips_through_the_reader() {
        let mut image = vec![0u8; 70_000];
        for (i, b) in image.iter_mut().enumerate().skip(5000).take(9000) {
            *b = (i % 251) as u8 + 1;
        }
        image[69_999] = 9;
        let cases = [
            ImageInfo::dense(image.len() as u64),
            ImageInfo::sparse(image.len() as u64, vec![4096..16384, 65536..70_000]),
        ];
        for info in cases {
            for name in ["short.img", &"n".repeat(150)] {
                let mut tar = Vec::new();
                let mut stream = TarStream::new(Cursor::new(&image), &info, name).unwrap();
                let len = stream.len();
                stream.read_to_end(&mut tar).unwrap();
                assert_eq!(tar.len() as u64, len);
                assert_eq!(tar.len() % RECORD as usize, 0);
                assert_eq!(stream.image_position(), image.len() as u64);
                let mut out = Cursor::new(Vec::new());
                let got = extract(&mut Cursor::new(&tar), &mut out, &mut |_| {}).unwrap();
                assert_eq!(got.name, name);
                assert_eq!(got.size, image.len() as u64);
                assert_eq!(got.sparse, info.data.is_some());
                assert_eq!(out.into_inner(), image);
            }
        }
    }

    #[test]
    fn sparse_maps_spill_into_extension_blocks() {
        let ranges: Vec<Range<u64>> = (0..30).map(|i| i * 8192..i * 8192 + 512).collect();
        let info = ImageInfo::sparse(30 * 8192, ranges);
        let h = header_blocks("many", &info);
        // 31 entries: 4 in the header, 21 + 6 in two extension blocks.
        assert_eq!(h.len(), 3 * 512);
        assert_eq!(h[482], 1);
        assert_eq!(h[512 + 504], 1);
        assert_eq!(h[1024 + 504], 0);
        // The closing (size, 0) entry is the 6th of the second block.
        assert_eq!(&h[1024 + 5 * 24..1024 + 5 * 24 + 12], b"00000740000\0");
        assert_eq!(&h[1024 + 5 * 24 + 12..1024 + 6 * 24], b"00000000000\0");
        assert!(h[1024 + 6 * 24..1024 + 504].iter().all(|&b| b == 0));
    }

    #[test]
    fn short_images_are_reported() {
        let info = ImageInfo::dense(1000);
        let mut stream = TarStream::new(Cursor::new(vec![1u8; 999]), &info, "x").unwrap();
        let err = stream.read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn invalid_sparse_maps_are_rejected() {
        for ranges in [vec![10..10], vec![0..10, 5..20], vec![0..101]] {
            let info = ImageInfo::sparse(100, ranges);
            assert!(matches!(
                TarStream::new(Cursor::new(vec![0u8; 100]), &info, "x"),
                Err(Error::InvalidSparseMap(_))
            ));
        }
    }

    #[test]
    fn reader_rejects_bad_streams() {
        let info = ImageInfo::dense(10);
        let tar = |name: &str| {
            let mut t = Vec::new();
            TarStream::new(Cursor::new(vec![7u8; 10]), &info, name)
                .unwrap()
                .read_to_end(&mut t)
                .unwrap();
            t
        };
        let extract_err = |t: &[u8]| {
            extract(
                &mut Cursor::new(t),
                &mut Cursor::new(Vec::new()),
                &mut |_| {},
            )
            .unwrap_err()
        };
        // Path traversal.
        assert!(matches!(extract_err(&tar("..")), Error::Tar(_)));
        // A corrupt checksum.
        let mut bad = tar("a");
        bad[0] = b'b';
        assert!(matches!(extract_err(&bad), Error::Tar(m) if m.contains("checksum")));
        // Two members.
        let mut two = tar("a");
        two.truncate(1024);
        two.extend_from_slice(&tar("b"));
        assert!(matches!(extract_err(&two), Error::Tar(m) if m.contains("more than one")));
        // Truncated.
        let t = tar("a");
        assert!(matches!(extract_err(&t[..700]), Error::Tar(_)));
        // Nothing.
        assert!(matches!(extract_err(&[0u8; 1024]), Error::Tar(_)));
    }

    /// A pax record: its length counts itself.
    fn pax_record(key: &str, value: &str) -> String {
        let body = format!(" {key}={value}\n");
        let mut len = body.len() + 1;
        while format!("{len}{body}").len() != len {
            len += 1;
        }
        format!("{len}{body}")
    }

    #[test]
    fn reader_takes_pax_and_posix_ustar_members() {
        let data = b"posix tar data";
        let mut tar = Vec::new();
        let records = pax_record("path", "from-pax.img") + &pax_record("mtime", "1700000000.5");
        let mut x = base_header(b"PaxHeaders/x", 0o644, 0, records.len() as u64, b'x');
        x[257..265].copy_from_slice(b"ustar\x0000");
        set_checksum(&mut x);
        tar.extend_from_slice(&x);
        let mut body = records.into_bytes();
        body.resize(512, 0);
        tar.extend_from_slice(&body);
        let mut h = base_header(b"x.img", 0o600, 5, data.len() as u64, b'0');
        h[257..265].copy_from_slice(b"ustar\x0000");
        set_checksum(&mut h);
        tar.extend_from_slice(&h);
        let mut body = data.to_vec();
        body.resize(512, 0);
        tar.extend_from_slice(&body);
        tar.resize(tar.len() + 1024, 0);
        let mut out = Cursor::new(Vec::new());
        let got = extract(&mut Cursor::new(&tar), &mut out, &mut |_| {}).unwrap();
        assert_eq!(got.name, "from-pax.img");
        assert_eq!(got.mtime, 1_700_000_000);
        assert_eq!(got.mode, 0o600);
        assert_eq!(out.into_inner(), data);
    }

    #[test]
    fn holes_are_left_unwritten() {
        struct Recorder {
            inner: Cursor<Vec<u8>>,
            writes: Vec<(u64, usize)>,
        }
        impl Write for Recorder {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.writes.push((self.inner.position(), buf.len()));
                self.inner.write(buf)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        impl Seek for Recorder {
            fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
                self.inner.seek(pos)
            }
        }
        impl ImageWriter for Recorder {
            fn set_len(&mut self, len: u64) -> io::Result<()> {
                self.inner.set_len(len)
            }
        }
        let mut data = vec![0u8; 16384];
        data[5000] = 1;
        let mut rec = Recorder {
            inner: Cursor::new(Vec::new()),
            writes: Vec::new(),
        };
        let mut at = 0;
        write_data(&mut rec, 0, &data, &mut at).unwrap();
        assert_eq!(rec.writes, vec![(4096, 4096)]);
    }
}
