//! Unbundling: checks a bundle and gives back the image.
//!
//! In one streaming pass: the parts are read in index order, each hashed
//! and compared with its manifest digest; the concatenation is decrypted
//! with the key and IV the private key unwraps, gunzipped, hashed and
//! untarred. Every check (signature, part digests, padding, gzip CRC,
//! `bundled_size`, the tar stream's SHA-1, `size`) is done before
//! [`unbundle`] returns success, so [`unbundle_to_dir`] renames the image
//! into place only when all of them passed. (Amazon's `ec2-unbundle` checks
//! only the image digest, and after extracting.)

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use ami_core::progress::Progress;
use flate2::read::MultiGzDecoder;
use openssl::sha::Sha1;
use openssl::symm::{Cipher, Crypter, Mode};

use crate::crypto::{PrivateKey, PublicKey, SymmetricKey};
use crate::error::{Error, Result};
use crate::manifest::{verify_signature, Manifest, ManifestPart};
use crate::parts::{DirSource, PartSource};
use crate::tar::{extract, ImageWriter};
use crate::{hex, PROGRESS_STAGE};

/// The largest manifest [`unbundle_to_dir`] reads (they are a few KiB).
const MAX_MANIFEST: u64 = 16 << 20;

/// How [`unbundle`] checks the manifest signature.
#[derive(Debug, Clone)]
pub enum SignatureCheck {
    /// With the public half of the private key used to unbundle: right
    /// when the same key pair made the bundle (the usual case; the manifest
    /// carries no certificate).
    PrivateKey,
    /// With this public key, e.g. from the certificate of whoever made the
    /// bundle.
    Key(PublicKey),
    /// Not at all (neither EC2 nor Amazon's `ec2-unbundle` checks it).
    Skip,
}

/// What [`unbundle`] found.
#[derive(Debug, Clone)]
pub struct Unbundled {
    /// The manifest.
    pub manifest: Manifest,
    /// The file name in the tar stream (normally the manifest's image
    /// name).
    pub name: String,
    /// Image size in bytes.
    pub size: u64,
    /// Permission bits stored in the tar stream.
    pub mode: u32,
    /// Modification time stored in the tar stream.
    pub mtime: i64,
    /// Whether the tar stream stored the image as a GNU sparse file.
    pub sparse: bool,
}

/// Reads the parts in order, checking each one's digest at its end.
struct PartsReader<'a> {
    source: &'a mut dyn PartSource,
    parts: &'a [ManifestPart],
    /// Index of the part being read (or next to open).
    next: usize,
    current: Option<Box<dyn Read>>,
    sha1: Sha1,
    total: u64,
    progress: &'a dyn Progress,
}

impl PartsReader<'_> {
    fn read_inner(&mut self, buf: &mut [u8]) -> Result<usize> {
        loop {
            let Some(part) = self.parts.get(self.next) else {
                return Ok(0);
            };
            let current = match &mut self.current {
                Some(c) => c,
                None => {
                    self.sha1 = Sha1::new();
                    self.current.insert(self.source.open(&part.filename)?)
                }
            };
            let n = loop {
                match current.read(buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(source) => {
                        return Err(Error::ReadPart {
                            filename: part.filename.clone(),
                            source,
                        })
                    }
                }
            };
            if n > 0 {
                self.sha1.update(&buf[..n]);
                self.total += n as u64;
                self.progress.advance(PROGRESS_STAGE, n as u64);
                return Ok(n);
            }
            self.current = None;
            self.next += 1;
            let actual = hex::encode(&std::mem::replace(&mut self.sha1, Sha1::new()).finish());
            if actual != part.digest {
                return Err(Error::PartDigest {
                    filename: part.filename.clone(),
                    expected: part.digest.clone(),
                    actual,
                });
            }
        }
    }

    /// Reads (and checks) whatever is left; the first part error found.
    fn verify_rest(&mut self) -> Result<()> {
        let mut buf = vec![0u8; 1 << 20];
        while self.read_inner(&mut buf)? > 0 {}
        Ok(())
    }
}

impl Read for PartsReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_inner(buf).map_err(Error::into_io)
    }
}

/// AES-128-CBC decryption with the padding check at the end.
struct DecryptReader<R> {
    inner: R,
    crypter: Crypter,
    input: Vec<u8>,
    output: Vec<u8>,
    pos: usize,
    done: bool,
}

impl<R: Read> DecryptReader<R> {
    fn new(inner: R, key: &SymmetricKey) -> Result<DecryptReader<R>> {
        let crypter = Crypter::new(
            Cipher::aes_128_cbc(),
            Mode::Decrypt,
            &key.key(),
            Some(&key.iv()),
        )
        .map_err(|source| Error::Crypto {
            what: "setting up AES-128-CBC",
            source,
        })?;
        Ok(DecryptReader {
            inner,
            crypter,
            input: vec![0u8; 256 * 1024],
            output: Vec::new(),
            pos: 0,
            done: false,
        })
    }
}

impl<R: Read> Read for DecryptReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos < self.output.len() {
                let n = buf.len().min(self.output.len() - self.pos);
                buf[..n].copy_from_slice(&self.output[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            if self.done {
                return Ok(0);
            }
            let n = self.inner.read(&mut self.input)?;
            self.output.resize(n + 32, 0);
            self.pos = 0;
            let produced = if n == 0 {
                self.done = true;
                self.crypter
                    .finalize(&mut self.output)
                    .map_err(|_| Error::Decrypt.into_io())?
            } else {
                self.crypter
                    .update(&self.input[..n], &mut self.output)
                    .map_err(|_| Error::Decrypt.into_io())?
            };
            self.output.truncate(produced);
        }
    }
}

/// Hashes what passes through.
struct HashReader<R> {
    inner: R,
    sha1: Sha1,
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha1.update(&buf[..n]);
        Ok(n)
    }
}

/// The key and IV of a bundle, unwrapped with the user's private key.
fn unwrap_key(manifest: &Manifest, key: &PrivateKey) -> Result<SymmetricKey> {
    let unwrap = |hex_text: &str| {
        hex::decode(hex_text)
            .and_then(|data| key.decrypt_pkcs1(&data))
            .ok_or(Error::WrongKey)
    };
    let k = unwrap(&manifest.image.user_encrypted_key)?;
    let iv = unwrap(&manifest.image.user_encrypted_iv)?;
    SymmetricKey::from_hex(&k, &iv).ok_or(Error::WrongKey)
}

/// Unbundles: checks the signature (as `check` says), unwraps the key with
/// `key`, reads the parts from `parts` and writes the image to `out`
/// (holes where the image has zeros). Progress:
/// [`PROGRESS_STAGE`](crate::PROGRESS_STAGE), in bundle bytes.
///
/// On error, `out` may hold part of the image: discard it.
///
/// # Errors
///
/// [`Error::ManifestSyntax`], [`Error::ManifestInvalid`],
/// [`Error::BadSignature`] and [`Error::WrongKey`] before any part is read;
/// then [`Error::ReadPart`], [`Error::PartDigest`], [`Error::Decrypt`],
/// [`Error::Gzip`], [`Error::Tar`], [`Error::BundledSize`],
/// [`Error::ImageDigest`], [`Error::ImageSize`]; errors writing `out` as
/// [`Error::Sink`].
pub fn unbundle(
    manifest_xml: &str,
    key: &PrivateKey,
    check: &SignatureCheck,
    parts: &mut dyn PartSource,
    out: &mut dyn ImageWriter,
    progress: &dyn Progress,
) -> Result<Unbundled> {
    let manifest = Manifest::parse(manifest_xml)?;
    match check {
        SignatureCheck::PrivateKey => verify_signature(manifest_xml, &key.public_key())?,
        SignatureCheck::Key(public) => verify_signature(manifest_xml, public)?,
        SignatureCheck::Skip => {}
    }
    let symmetric = unwrap_key(&manifest, key)?;
    progress.begin(PROGRESS_STAGE, Some(manifest.image.bundled_size));
    let mut reader = PartsReader {
        source: parts,
        parts: &manifest.image.parts,
        next: 0,
        current: None,
        sha1: Sha1::new(),
        total: 0,
        progress,
    };
    let mut hashing = HashReader {
        inner: MultiGzDecoder::new(DecryptReader::new(&mut reader, &symmetric)?),
        sha1: Sha1::new(),
    };
    let result = extract(&mut hashing, out, &mut |_| {});
    let HashReader { inner, sha1 } = hashing;
    let tar_sha1 = hex::encode(&sha1.finish());
    // Ends the borrow of `reader`.
    drop(inner);
    let extracted = match result {
        Ok(extracted) => extracted,
        Err(e @ (Error::PartDigest { .. } | Error::ReadPart { .. })) => return Err(e),
        Err(e) => {
            // A corrupt or missing part makes the later stages fail
            // first; name the part if that is the cause.
            reader.verify_rest()?;
            return Err(e);
        }
    };
    if reader.total != manifest.image.bundled_size {
        return Err(Error::BundledSize {
            expected: manifest.image.bundled_size,
            actual: reader.total,
        });
    }
    if tar_sha1 != manifest.image.digest {
        return Err(Error::ImageDigest {
            expected: manifest.image.digest.clone(),
            actual: tar_sha1,
        });
    }
    if extracted.size != manifest.image.size {
        return Err(Error::ImageSize {
            expected: manifest.image.size,
            actual: extracted.size,
        });
    }
    progress.end(PROGRESS_STAGE);
    Ok(Unbundled {
        manifest,
        name: extracted.name,
        size: extracted.size,
        mode: extracted.mode,
        mtime: extracted.mtime,
        sparse: extracted.sparse,
    })
}

/// Unbundles the manifest file `manifest_path` with the parts in
/// `source_dir` into `dest_dir`: the image is written to a temporary file
/// there and renamed to `dest_dir/NAME` (NAME from the tar stream,
/// replacing an existing file of that name) only after every check passed;
/// it gets the mode and mtime stored in the bundle. Returns the image path.
///
/// # Errors
///
/// As [`unbundle`]; [`Error::ManifestInvalid`] if the manifest file cannot
/// be read; [`Error::Write`] for the destination.
pub fn unbundle_to_dir(
    manifest_path: &Path,
    key: &PrivateKey,
    check: &SignatureCheck,
    source_dir: &Path,
    dest_dir: &Path,
    progress: &dyn Progress,
) -> Result<(PathBuf, Unbundled)> {
    let mut text = String::new();
    File::open(manifest_path)
        .and_then(|f| f.take(MAX_MANIFEST).read_to_string(&mut text))
        .map_err(|e| {
            Error::ManifestInvalid(format!("cannot read {}: {e}", manifest_path.display()))
        })?;
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Write { path, source }
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".ami-unbundle-")
        .tempfile_in(dest_dir)
        .map_err(write_err(dest_dir))?;
    let mut source = DirSource::new(source_dir);
    let unbundled = unbundle(&text, key, check, &mut source, tmp.as_file_mut(), progress)?;
    let target = dest_dir.join(&unbundled.name);
    let file = tmp.as_file();
    let mtime = u64::try_from(unbundled.mtime)
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
        .unwrap_or(UNIX_EPOCH);
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(unbundled.mode & 0o777))
            .and_then(|()| file.set_modified(mtime))
            .and_then(|()| file.sync_all())
            .map_err(write_err(tmp.path()))?;
    }
    tmp.persist(&target)
        .map_err(|e| e.error)
        .map_err(write_err(&target))?;
    File::open(dest_dir)
        .and_then(|d| d.sync_all())
        .map_err(write_err(dest_dir))?;
    Ok((target, unbundled))
}
