//! The error type of the crate.

use std::io;
use std::path::PathBuf;

/// What went wrong while bundling or unbundling.
///
/// Input errors (bad options, an unusable image, a key that does not match
/// its certificate, ...) are reported before any output is written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The AWS account id is not 12 digits (hyphens are allowed between
    /// them, as in `1234-5678-9012`).
    #[error("invalid AWS account id {0:?}: expected 12 digits, e.g. 123456789012")]
    InvalidAccount(String),

    /// The bundle name (prefix) cannot be used.
    #[error("invalid bundle name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// An architecture other than `i386` or `x86_64`.
    #[error("invalid architecture {0:?}: expected i386 or x86_64")]
    InvalidArch(String),

    /// A value written into the manifest (kernel or ramdisk id, product
    /// code, block device mapping) has characters outside `[A-Za-z0-9._-]`
    /// (`/` is also allowed in device names), or is empty.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidValue {
        /// Which value (e.g. "kernel id").
        what: &'static str,
        /// The value given.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// The image is empty; EC2 bundles hold 1 byte to 10 GiB.
    #[error("the image is empty (0 bytes); a bundle holds 1 byte to 10 GiB")]
    EmptyImage,

    /// The image is larger than the format's limit of 10 GiB.
    #[error(
        "the image is {size} bytes, more than the 10 GiB (10737418240 bytes) EC2 bundles allow"
    )]
    ImageTooLarge {
        /// The image size in bytes.
        size: u64,
    },

    /// The data ranges of a sparse image are not sorted, overlap, are empty
    /// or lie beyond the end of the image.
    #[error("invalid sparse map of the image: {0}")]
    InvalidSparseMap(&'static str),

    /// The gzip compression level is not 1 to 9.
    #[error("invalid compression level {0}: expected 1 to 9")]
    InvalidLevel(u32),

    /// A certificate could not be read.
    #[error("cannot read the {what} certificate")]
    Certificate {
        /// Which certificate ("user", "EC2", ...).
        what: String,
        /// The error from OpenSSL.
        #[source]
        source: openssl::error::ErrorStack,
    },

    /// A private key could not be read.
    #[error("cannot read the private key (expected an RSA key in PEM form)")]
    PrivateKey(#[source] openssl::error::ErrorStack),

    /// A key that is not RSA (EC2 bundles only use RSA).
    #[error("the {0} is not an RSA key; EC2 bundles need RSA")]
    NotRsa(String),

    /// The private key does not belong to the user certificate.
    #[error("the private key does not match the certificate (different public keys)")]
    KeyMismatch,

    /// No EC2 certificate is known for a region.
    #[error(
        "no EC2 certificate is known for region {0:?}; give the region's certificate \
         explicitly (the known ones are for the commercial regions, us-gov-west-1 and cn-north-1)"
    )]
    UnknownRegion(String),

    /// The destination holds files of another bundle with the same name.
    #[error(
        "{} already holds files of a bundle named {name:?} ({}); remove them or choose \
         another destination or name",
        dir.display(),
        files.join(", ")
    )]
    Leftovers {
        /// The destination directory.
        dir: PathBuf,
        /// The bundle name.
        name: String,
        /// The conflicting file names (at most a few).
        files: Vec<String>,
    },

    /// Reading the image failed.
    #[error("cannot read the image")]
    ReadImage(#[source] io::Error),

    /// The image ended before its announced size (it changed while it was
    /// being read).
    #[error("the image is shorter than {expected} bytes (did it change while it was read?)")]
    ImageChanged {
        /// The size the image had when bundling started.
        expected: u64,
    },

    /// Writing the output failed.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },

    /// A part sink or source that is not a directory failed.
    #[error("{0}")]
    Sink(#[source] Box<dyn std::error::Error + Send + Sync>),

    /// An OpenSSL operation failed unexpectedly.
    #[error("{what} failed")]
    Crypto {
        /// The operation.
        what: &'static str,
        /// The error from OpenSSL.
        #[source]
        source: openssl::error::ErrorStack,
    },

    /// The compressor failed (should not happen).
    #[error("compression failed: {0}")]
    Compress(String),

    /// A worker thread panicked.
    #[error("a {0} thread stopped unexpectedly")]
    Thread(&'static str),

    /// The manifest is not well-formed XML.
    #[error("the manifest is not well-formed XML")]
    ManifestSyntax(#[source] roxmltree::Error),

    /// The manifest lacks an element or has an invalid value.
    #[error("invalid manifest: {0}")]
    ManifestInvalid(String),

    /// The manifest signature does not verify with the given public key.
    #[error(
        "the manifest signature does not verify with the given key: the manifest was \
         changed, or signed with another key"
    )]
    BadSignature,

    /// The private key cannot decrypt the bundle's key and IV.
    #[error(
        "the private key cannot decrypt the bundle's key and IV: this bundle was made for \
         another certificate"
    )]
    WrongKey,

    /// A part named in the manifest cannot be read.
    #[error("cannot read part {filename}")]
    ReadPart {
        /// The part's file name.
        filename: String,
        /// The cause.
        #[source]
        source: io::Error,
    },

    /// A part's SHA-1 digest differs from the manifest's.
    #[error("part {filename} is corrupt: its SHA-1 is {actual}, the manifest says {expected}")]
    PartDigest {
        /// The part's file name.
        filename: String,
        /// The digest in the manifest.
        expected: String,
        /// The digest of the part as read.
        actual: String,
    },

    /// The parts do not add up to the manifest's `bundled_size`.
    #[error("the parts hold {actual} bytes, the manifest's bundled_size is {expected}")]
    BundledSize {
        /// `bundled_size` in the manifest.
        expected: u64,
        /// The bytes read from the parts.
        actual: u64,
    },

    /// The decrypted data is not valid (bad padding: truncated or
    /// corrupt parts).
    #[error("the encrypted data is corrupt or truncated (AES-128-CBC padding check failed)")]
    Decrypt,

    /// The decrypted data is not a valid gzip stream.
    #[error("the decrypted data is not a valid gzip stream")]
    Gzip(#[source] io::Error),

    /// The tar stream inside the bundle is not one regular (or GNU sparse)
    /// file, or is malformed.
    #[error("the bundle's tar stream is invalid: {0}")]
    Tar(String),

    /// The SHA-1 of the tar stream differs from the manifest's digest.
    #[error("the image digest does not match: the tar stream's SHA-1 is {actual}, the manifest says {expected}")]
    ImageDigest {
        /// `<image><digest>` in the manifest.
        expected: String,
        /// The digest of the unpacked tar stream.
        actual: String,
    },

    /// The unpacked image has another size than the manifest's `size`.
    #[error("the unpacked image has {actual} bytes, the manifest says {expected}")]
    ImageSize {
        /// `<image><size>` in the manifest.
        expected: u64,
        /// The size of the image in the tar stream.
        actual: u64,
    },

    /// An invalid argument to key generation.
    #[error("invalid key parameters: {0}")]
    KeyParameters(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps this error in an `io::Error`, to pass it through `Read`
    /// adapters; [`Error::from_io`] gets it back.
    pub(crate) fn into_io(self) -> io::Error {
        io::Error::other(self)
    }

    /// Recovers an error wrapped by [`Error::into_io`], or wraps a plain
    /// I/O error with `wrap`.
    pub(crate) fn from_io(err: io::Error, wrap: impl FnOnce(io::Error) -> Error) -> Error {
        match err.downcast::<Error>() {
            Ok(inner) => inner,
            Err(err) => wrap(err),
        }
    }
}
