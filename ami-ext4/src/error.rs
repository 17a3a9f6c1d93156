//! The crate's error type.

use std::io;

/// Everything that can go wrong while writing an image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An option is out of range or contradicts another.
    #[error("invalid option {field}: {reason}")]
    InvalidOptions {
        /// The option's name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The requested size cannot hold the tree.
    #[error("image too small: {requested} bytes requested, at least {needed} bytes needed")]
    TooSmall {
        /// The size asked for, in bytes.
        requested: u64,
        /// The smallest size that holds the tree, in bytes.
        needed: u64,
    },
    /// The tree needs more than ext4 can address.
    #[error("too large for ext4: {what}")]
    TooLarge {
        /// What overflowed.
        what: String,
    },
    /// A name is longer than ext4's 255 bytes.
    #[error("{path:?}: name is {len} bytes long, ext4 allows at most 255")]
    NameTooLong {
        /// Path of the entry, lossily decoded.
        path: String,
        /// Length of the name in bytes.
        len: usize,
    },
    /// A file has more names than ext4's 65,000.
    #[error("{path:?}: {links} hard links, ext4 allows at most 65000")]
    TooManyLinks {
        /// One path of the file, lossily decoded.
        path: String,
        /// Its number of names.
        links: u32,
    },
    /// A time outside what ext4 can store cleanly (1901-12-13 to 2310-04-04).
    #[error("{path:?}: timestamp {secs} is outside the range ext4 can store")]
    TimeOutOfRange {
        /// Path of the entry, lossily decoded.
        path: String,
        /// The seconds since the epoch.
        secs: i64,
    },
    /// An extended attribute cannot be stored.
    #[error("{path:?}: extended attribute {name:?}: {reason}")]
    Xattr {
        /// Path of the entry, lossily decoded.
        path: String,
        /// Name of the attribute, lossily decoded.
        name: String,
        /// Why it cannot be stored.
        reason: String,
    },
    /// The tree holds something ext4 cannot represent.
    #[error("{path:?}: {what}")]
    Unsupported {
        /// Path of the entry, lossily decoded.
        path: String,
        /// What cannot be represented.
        what: String,
    },
    /// Reading a file's contents failed.
    #[error("cannot read {path:?}")]
    Source {
        /// Path of the entry in the tree, lossily decoded.
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Writing to the storage failed.
    #[error("writing the image")]
    Io(#[from] io::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
