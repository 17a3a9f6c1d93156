//! Bundling: image → tar → SHA-1 → gzip → AES-128-CBC → 10 MiB parts →
//! signed manifest, in one streaming pass.
//!
//! Threads: a reader builds the tar stream and hashes it, workers compress
//! blocks in parallel ([`ParallelGzip`]), and the calling thread encrypts,
//! splits, hashes the parts and hands them to the [`PartSink`]. Memory
//! stays bounded (a few MiB per core) whatever the image size; nothing is
//! written but the parts and the manifest.

use std::fmt;
use std::fs::File;
use std::io::{Read, Seek};
use std::path::Path;
use std::str::FromStr;

use ami_core::progress::Progress;
use openssl::sha::Sha1;
use openssl::symm::{Cipher, Crypter, Mode};
use rand::{CryptoRng, RngCore};

use crate::crypto::{Certificate, Ec2Cert, PrivateKey, SymmetricKey};
use crate::error::{Error, Result};
use crate::gzip::ParallelGzip;
use crate::manifest::{
    BundlerInfo, ImageSection, MachineConfiguration, Manifest, ManifestPart, Mapping,
    MANIFEST_VERSION,
};
use crate::parts::{manifest_name, part_name, DirSink, PartSink, PART_SIZE};
use crate::tar::{ImageInfo, TarStream};
use crate::{hex, PROGRESS_STAGE};

/// The largest image a bundle may hold: 10 GiB (exactly 10 GiB is
/// allowed).
pub const MAX_IMAGE_SIZE: u64 = 10 << 30;

/// The longest bundle name, in bytes, so that `NAME.manifest.xml` and
/// `NAME.part.NNNN` fit in a 255-byte file name.
pub const MAX_NAME_LEN: usize = 242;

/// The image architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// 32-bit x86.
    I386,
    /// 64-bit x86.
    X86_64,
}

impl Arch {
    /// The name in the manifest: `i386` or `x86_64`.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::I386 => "i386",
            Arch::X86_64 => "x86_64",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Arch {
    type Err = Error;

    fn from_str(s: &str) -> Result<Arch> {
        match s {
            "i386" => Ok(Arch::I386),
            "x86_64" => Ok(Arch::X86_64),
            _ => Err(Error::InvalidArch(s.to_owned())),
        }
    }
}

/// A 12-digit AWS account id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccountId(String);

impl AccountId {
    /// The 12 digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for AccountId {
    type Err = Error;

    /// 12 digits; hyphens are removed first (`1234-5678-9012`, as the AWS
    /// console shows account ids).
    fn from_str(s: &str) -> Result<AccountId> {
        let digits: String = s.chars().filter(|&c| c != '-').collect();
        if digits.len() == 12 && digits.bytes().all(|b| b.is_ascii_digit()) {
            Ok(AccountId(digits))
        } else {
            Err(Error::InvalidAccount(s.to_owned()))
        }
    }
}

/// Checks a value that goes into the manifest: non-empty, only
/// `[A-Za-z0-9._-]` (and `/` if `slash`).
fn check_value(what: &'static str, value: &str, slash: bool) -> Result<()> {
    let bad = |reason| Error::InvalidValue {
        what,
        value: value.to_owned(),
        reason,
    };
    if value.is_empty() {
        return Err(bad("it is empty"));
    }
    if value.len() > 255 {
        return Err(bad("it is longer than 255 bytes"));
    }
    let ok =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') || (slash && c == '/');
    if !value.chars().all(ok) {
        return Err(bad(if slash {
            "only letters, digits, '.', '_', '-' and '/' are allowed"
        } else {
            "only letters, digits, '.', '_' and '-' are allowed"
        }));
    }
    Ok(())
}

/// Parses block device mappings written as `VIRTUAL=DEVICE,...`, e.g.
/// `ami=sda1,root=/dev/sda1,ephemeral0=sdb,swap=sda3` (the
/// `--block-device-mapping` syntax of Amazon's tools).
///
/// # Errors
///
/// [`Error::InvalidValue`] for an entry without `=`, an empty or invalid
/// name, or a virtual name given twice.
pub fn parse_block_device_mapping(text: &str) -> Result<Vec<Mapping>> {
    let mut out: Vec<Mapping> = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (virtual_name, device) = entry.split_once('=').ok_or_else(|| Error::InvalidValue {
            what: "block device mapping",
            value: entry.to_owned(),
            reason: "expected VIRTUAL=DEVICE, e.g. root=/dev/sda1",
        })?;
        let (virtual_name, device) = (virtual_name.trim(), device.trim());
        check_value("virtual device name", virtual_name, false)?;
        check_value("device name", device, true)?;
        if out.iter().any(|m| m.virtual_name == virtual_name) {
            return Err(Error::InvalidValue {
                what: "block device mapping",
                value: text.to_owned(),
                reason: "a virtual name is mapped twice",
            });
        }
        out.push(Mapping {
            virtual_name: virtual_name.to_owned(),
            device: device.to_owned(),
        });
    }
    Ok(out)
}

/// Checks a bundle name: the tar member name, the part and manifest file
/// stem and `<image><name>`.
fn check_name(name: &str) -> Result<()> {
    let bad = |reason| Error::InvalidName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.contains('/') {
        return Err(bad("it contains '/'"));
    }
    if name == "." || name == ".." {
        return Err(bad("it is not a file name"));
    }
    if name.chars().any(char::is_control) {
        return Err(bad("it contains a control character"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(bad("it is longer than 242 bytes"));
    }
    Ok(())
}

/// Everything a bundle needs besides the image. Build it with
/// [`BundleOptions::new`] and the setters, then check it with
/// [`Bundler::new`].
#[derive(Debug, Clone)]
pub struct BundleOptions {
    name: String,
    account: AccountId,
    arch: Arch,
    user_cert: Certificate,
    user_key: PrivateKey,
    ec2_cert: Option<Certificate>,
    kernel_id: Option<String>,
    ramdisk_id: Option<String>,
    block_device_mapping: Vec<Mapping>,
    product_codes: Vec<String>,
    gzip: ParallelGzip,
    bundler: BundlerInfo,
    part_size: u64,
}

impl BundleOptions {
    /// Options for a bundle named `name` (the tar member, the part and
    /// manifest file stem; Amazon's tool defaults it to the image's file
    /// name) for `account`, signed with `user_key` and wrapped for
    /// `user_cert` (its key pair).
    ///
    /// Defaults: the EC2 certificate of the commercial regions, no kernel,
    /// ramdisk, block device mapping or product codes, gzip level 9 on all
    /// cores, 10 MiB parts, bundler `ami`.
    pub fn new(
        name: impl Into<String>,
        account: AccountId,
        arch: Arch,
        user_cert: Certificate,
        user_key: PrivateKey,
    ) -> BundleOptions {
        BundleOptions {
            name: name.into(),
            account,
            arch,
            user_cert,
            user_key,
            ec2_cert: None,
            kernel_id: None,
            ramdisk_id: None,
            block_device_mapping: Vec::new(),
            product_codes: Vec::new(),
            gzip: ParallelGzip::new(),
            bundler: BundlerInfo::default(),
            part_size: PART_SIZE,
        }
    }

    /// The certificate EC2's copy of the key is wrapped for: the region's
    /// ([`Ec2Cert::for_region`]) or one given as PEM.
    #[must_use]
    pub fn ec2_cert(mut self, cert: Certificate) -> BundleOptions {
        self.ec2_cert = Some(cert);
        self
    }

    /// The kernel id (`aki-...`) written to the manifest.
    #[must_use]
    pub fn kernel_id(mut self, id: Option<String>) -> BundleOptions {
        self.kernel_id = id;
        self
    }

    /// The ramdisk id (`ari-...`) written to the manifest.
    #[must_use]
    pub fn ramdisk_id(mut self, id: Option<String>) -> BundleOptions {
        self.ramdisk_id = id;
        self
    }

    /// Block device mappings (see [`parse_block_device_mapping`]).
    #[must_use]
    pub fn block_device_mapping(mut self, mappings: Vec<Mapping>) -> BundleOptions {
        self.block_device_mapping = mappings;
        self
    }

    /// Product codes, one `<product_code>` element each.
    #[must_use]
    pub fn product_codes(mut self, codes: Vec<String>) -> BundleOptions {
        self.product_codes = codes;
        self
    }

    /// The compressor: level (default 9, as Amazon's `gzip -9`), threads,
    /// block size.
    #[must_use]
    pub fn gzip(mut self, gzip: ParallelGzip) -> BundleOptions {
        self.gzip = gzip;
        self
    }

    /// The tool named in `<bundler>` (default: this crate).
    #[must_use]
    pub fn bundler(mut self, bundler: BundlerInfo) -> BundleOptions {
        self.bundler = bundler;
        self
    }

    /// Part size in bytes (default and recommended: 10 MiB, what Amazon's
    /// tools write; consumers take any size, notes §7). At least 4096.
    #[must_use]
    pub fn part_size(mut self, bytes: u64) -> BundleOptions {
        self.part_size = bytes.max(4096);
        self
    }

    /// The bundle name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A finished bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The manifest, signed.
    pub manifest: Manifest,
    /// The manifest file's contents.
    pub manifest_xml: String,
    /// The manifest's file name (`NAME.manifest.xml`).
    pub manifest_name: String,
    /// The size of each part, in order (file names and digests are in
    /// `manifest.image.parts`).
    pub part_sizes: Vec<u64>,
    /// Length of the tar stream.
    pub tar_bytes: u64,
    /// Length of the gzip stream.
    pub gzip_bytes: u64,
}

/// Makes bundles with checked [`BundleOptions`].
#[derive(Debug, Clone)]
pub struct Bundler {
    options: BundleOptions,
    ec2_cert: Certificate,
}

impl Bundler {
    /// Checks the options.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`], [`Error::InvalidValue`] (kernel, ramdisk,
    /// product codes, block devices), [`Error::KeyMismatch`] if the
    /// private key does not belong to the user certificate.
    pub fn new(options: BundleOptions) -> Result<Bundler> {
        check_name(&options.name)?;
        if let Some(id) = &options.kernel_id {
            check_value("kernel id", id, false)?;
        }
        if let Some(id) = &options.ramdisk_id {
            check_value("ramdisk id", id, false)?;
        }
        for code in &options.product_codes {
            check_value("product code", code, false)?;
        }
        for m in &options.block_device_mapping {
            check_value("virtual device name", &m.virtual_name, false)?;
            check_value("device name", &m.device, true)?;
        }
        if !options.user_key.matches(&options.user_cert) {
            return Err(Error::KeyMismatch);
        }
        let ec2_cert = match &options.ec2_cert {
            Some(cert) => cert.clone(),
            None => Ec2Cert::Standard.certificate()?,
        };
        Ok(Bundler { options, ec2_cert })
    }

    /// The options.
    pub fn options(&self) -> &BundleOptions {
        &self.options
    }

    /// Bundles `image`, described by `info`, into `sink`.
    ///
    /// `image` is read from its start (dense) or at the data ranges of
    /// `info` (sparse); the key and IV, and the random padding of their
    /// RSA wrapping, come from `rng`, so a seeded generator gives the same
    /// bundle every time. Progress: [`PROGRESS_STAGE`](crate::PROGRESS_STAGE),
    /// in image bytes.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyImage`], [`Error::ImageTooLarge`] and
    /// [`Error::InvalidSparseMap`] before anything is written; the sink's
    /// errors (e.g. [`Error::Leftovers`] from [`PartSink::start`]);
    /// [`Error::ReadImage`] and [`Error::ImageChanged`] while reading. The
    /// sink is committed only on success.
    pub fn bundle<R, G>(
        &self,
        image: R,
        info: &ImageInfo,
        sink: &mut dyn PartSink,
        rng: &mut G,
        progress: &dyn Progress,
    ) -> Result<Bundle>
    where
        R: Read + Seek + Send,
        G: RngCore + CryptoRng + ?Sized,
    {
        let o = &self.options;
        if info.size == 0 {
            return Err(Error::EmptyImage);
        }
        if info.size > MAX_IMAGE_SIZE {
            return Err(Error::ImageTooLarge { size: info.size });
        }
        info.validate()?;
        let tar = TarStream::new(image, info, &o.name)?;
        let tar_len = tar.len();

        let key = SymmetricKey::generate(rng);
        let ec2_key = self.ec2_cert.public_key();
        let user_key = o.user_cert.public_key();
        let wrap = |public: &crate::PublicKey, text: &str, rng: &mut G| -> Result<String> {
            Ok(hex::encode(&public.encrypt_pkcs1(text.as_bytes(), rng)?))
        };
        let ec2_encrypted_key = wrap(ec2_key, &key.key_hex, rng)?;
        let user_encrypted_key = wrap(user_key, &key.key_hex, rng)?;
        let ec2_encrypted_iv = wrap(ec2_key, &key.iv_hex, rng)?;
        let user_encrypted_iv = wrap(user_key, &key.iv_hex, rng)?;

        sink.start(&o.name)?;
        progress.begin(PROGRESS_STAGE, Some(info.size));
        let mut tar_sha1 = Sha1::new();
        let mut reported = 0u64;
        let mut encryptor = Encryptor::new(&key, Splitter::new(sink, o.part_size))?;
        let stats = o.gzip.run(
            tar,
            |tar: &TarStream<R>, block: &[u8]| {
                tar_sha1.update(block);
                let now = tar.image_position();
                progress.advance(PROGRESS_STAGE, now - reported);
                reported = now;
            },
            &mut |bytes| encryptor.write(bytes),
        );
        let stats = stats.map_err(|e| match e {
            Error::ReadImage(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                Error::ImageChanged {
                    expected: info.size,
                }
            }
            other => other,
        })?;
        let splitter = encryptor.finish()?;
        let (sink, parts) = splitter.finish()?;
        debug_assert_eq!(stats.input_bytes, tar_len);

        let count = parts.len();
        let names: Vec<String> = (0..count).map(|i| part_name(&o.name, i, count)).collect();
        let mut manifest = Manifest {
            version: MANIFEST_VERSION.to_owned(),
            bundler: o.bundler.clone(),
            machine_configuration: MachineConfiguration {
                architecture: Some(o.arch.as_str().to_owned()),
                block_device_mapping: o.block_device_mapping.clone(),
                kernel_id: o.kernel_id.clone(),
                ramdisk_id: o.ramdisk_id.clone(),
                product_codes: o.product_codes.clone(),
            },
            image: ImageSection {
                name: o.name.clone(),
                user: o.account.as_str().to_owned(),
                image_type: "machine".to_owned(),
                kernel_name: None,
                ancestry: Vec::new(),
                digest: hex::encode(&tar_sha1.finish()),
                size: info.size,
                bundled_size: parts.iter().map(|p| p.size).sum(),
                ec2_encrypted_key,
                user_encrypted_key,
                ec2_encrypted_iv,
                user_encrypted_iv,
                parts: parts
                    .iter()
                    .zip(&names)
                    .enumerate()
                    .map(|(index, (part, filename))| ManifestPart {
                        index: index as u64,
                        filename: filename.clone(),
                        digest: part.digest.clone(),
                    })
                    .collect(),
            },
            signature: String::new(),
        };
        manifest.signature = hex::encode(&o.user_key.sign_sha1(manifest.signed_text().as_bytes())?);
        let manifest_xml = manifest.to_xml();
        let manifest_file = manifest_name(&o.name);
        sink.commit(&names, &manifest_file, manifest_xml.as_bytes())?;
        progress.end(PROGRESS_STAGE);
        Ok(Bundle {
            manifest,
            manifest_xml,
            manifest_name: manifest_file,
            part_sizes: parts.iter().map(|p| p.size).collect(),
            tar_bytes: tar_len,
            gzip_bytes: stats.output_bytes,
        })
    }

    /// Bundles the image file at `path` into the directory `destination`
    /// ([`DirSink`]): dense or sparse as GNU `tar -S` would store it
    /// ([`ImageInfo::from_file`]).
    ///
    /// # Errors
    ///
    /// As [`Bundler::bundle`]; [`Error::ReadImage`] if the image cannot be
    /// opened or is not a regular file.
    pub fn bundle_file<G>(
        &self,
        path: &Path,
        destination: &Path,
        rng: &mut G,
        progress: &dyn Progress,
    ) -> Result<Bundle>
    where
        G: RngCore + CryptoRng + ?Sized,
    {
        let file = File::open(path).map_err(Error::ReadImage)?;
        if !file.metadata().map_err(Error::ReadImage)?.is_file() {
            return Err(Error::ReadImage(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the image is not a regular file",
            )));
        }
        let info = ImageInfo::from_file(&file).map_err(Error::ReadImage)?;
        let mut sink = DirSink::new(destination);
        self.bundle(&file, &info, &mut sink, rng, progress)
    }
}

/// AES-128-CBC with PKCS#7 padding over the gzip stream, feeding the
/// splitter (exactly `openssl enc -aes-128-cbc -K .. -iv ..`, no salt
/// header).
struct Encryptor<'a> {
    crypter: Crypter,
    buf: Vec<u8>,
    splitter: Splitter<'a>,
}

impl<'a> Encryptor<'a> {
    fn new(key: &SymmetricKey, splitter: Splitter<'a>) -> Result<Encryptor<'a>> {
        let crypter = Crypter::new(
            Cipher::aes_128_cbc(),
            Mode::Encrypt,
            &key.key(),
            Some(&key.iv()),
        )
        .map_err(|source| Error::Crypto {
            what: "setting up AES-128-CBC",
            source,
        })?;
        Ok(Encryptor {
            crypter,
            buf: Vec::new(),
            splitter,
        })
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        for chunk in data.chunks(1 << 20) {
            self.buf.resize(chunk.len() + 32, 0);
            let n = self
                .crypter
                .update(chunk, &mut self.buf)
                .map_err(|source| Error::Crypto {
                    what: "AES encryption",
                    source,
                })?;
            self.splitter.write(&self.buf[..n])?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Splitter<'a>> {
        let mut last = [0u8; 32];
        let n = self
            .crypter
            .finalize(&mut last)
            .map_err(|source| Error::Crypto {
                what: "AES encryption",
                source,
            })?;
        self.splitter.write(&last[..n])?;
        Ok(self.splitter)
    }
}

/// A finished part: its SHA-1 (hex) and size.
struct PartRecord {
    digest: String,
    size: u64,
}

/// Cuts the ciphertext into parts and hashes each.
struct Splitter<'a> {
    sink: &'a mut dyn PartSink,
    part_size: u64,
    /// Bytes in the open part, if one is open.
    open: Option<u64>,
    sha1: Sha1,
    /// The finished parts.
    parts: Vec<PartRecord>,
}

impl<'a> Splitter<'a> {
    fn new(sink: &'a mut dyn PartSink, part_size: u64) -> Splitter<'a> {
        Splitter {
            sink,
            part_size,
            open: None,
            sha1: Sha1::new(),
            parts: Vec::new(),
        }
    }

    fn write(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let filled = match self.open {
                Some(n) => n,
                None => {
                    self.sink.begin_part(self.parts.len())?;
                    self.sha1 = Sha1::new();
                    0
                }
            };
            let room = usize::try_from(self.part_size - filled).unwrap_or(usize::MAX);
            let n = room.min(data.len());
            self.sha1.update(&data[..n]);
            self.sink.write(&data[..n])?;
            let filled = filled + n as u64;
            data = &data[n..];
            if filled == self.part_size {
                self.close(filled)?;
            } else {
                self.open = Some(filled);
            }
        }
        Ok(())
    }

    /// Ends the open part, which holds `size` bytes.
    fn close(&mut self, size: u64) -> Result<()> {
        self.sink.end_part()?;
        let sha1 = std::mem::replace(&mut self.sha1, Sha1::new());
        self.parts.push(PartRecord {
            digest: hex::encode(&sha1.finish()),
            size,
        });
        self.open = None;
        Ok(())
    }

    fn finish(mut self) -> Result<(&'a mut dyn PartSink, Vec<PartRecord>)> {
        if let Some(filled) = self.open {
            self.close(filled)?;
        }
        Ok((self.sink, self.parts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids() {
        assert_eq!(
            "123456789012".parse::<AccountId>().unwrap().as_str(),
            "123456789012"
        );
        assert_eq!(
            "1234-5678-9012".parse::<AccountId>().unwrap().as_str(),
            "123456789012"
        );
        for bad in [
            "12345678901",
            "1234567890123",
            "12345678901a",
            "",
            "x123456789012",
        ] {
            assert!(
                matches!(bad.parse::<AccountId>(), Err(Error::InvalidAccount(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn architectures() {
        assert_eq!("x86_64".parse::<Arch>().unwrap(), Arch::X86_64);
        assert_eq!("i386".parse::<Arch>().unwrap().to_string(), "i386");
        assert!(matches!(
            "arm64".parse::<Arch>(),
            Err(Error::InvalidArch(_))
        ));
    }

    #[test]
    fn block_device_mappings() {
        let m = parse_block_device_mapping("ami=sda1, root=/dev/sda1,ephemeral0=sdb").unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].virtual_name, "root");
        assert_eq!(m[1].device, "/dev/sda1");
        assert!(parse_block_device_mapping("").unwrap().is_empty());
        for bad in [
            "ami",
            "=sda1",
            "ami=",
            "ami=sda1,ami=sda2",
            "a b=sda1",
            "ami=sd<a>",
        ] {
            assert!(
                matches!(
                    parse_block_device_mapping(bad),
                    Err(Error::InvalidValue { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn names() {
        for good in ["image.img", "a b", "x&y'z", &"n".repeat(MAX_NAME_LEN)] {
            check_name(good).unwrap();
        }
        for bad in ["", "a/b", ".", "..", "a\nb", &"n".repeat(MAX_NAME_LEN + 1)] {
            assert!(
                matches!(check_name(bad), Err(Error::InvalidName { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn splitter_cuts_exact_parts() {
        let mut sink = crate::MemorySink::new();
        sink.start("x").unwrap();
        let mut s = Splitter::new(&mut sink, 10);
        s.write(&[1; 7]).unwrap();
        s.write(&[2; 7]).unwrap();
        s.write(&[3; 6]).unwrap();
        s.write(&[4; 1]).unwrap();
        let (_, parts) = s.finish().unwrap();
        assert_eq!(
            parts.iter().map(|p| p.size).collect::<Vec<_>>(),
            [10, 10, 1]
        );
        assert_eq!(sink.parts.len(), 3);
        assert_eq!(sink.parts[1].1, [2, 2, 2, 2, 3, 3, 3, 3, 3, 3]);
        assert_eq!(parts[2].digest, hex::encode(&openssl::sha::sha1(&[4])));
    }
}
