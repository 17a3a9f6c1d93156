//! A persistent, content-addressed download cache.
//!
//! Entries are named by their SHA-256: `<root>/sha256/<hex>`. An entry is
//! written to a temporary file in the same directory, checked (size and
//! SHA-256), flushed to disk (`fsync`) and only then renamed to its name,
//! so an interrupted run never leaves a bad entry under a real name. Every
//! hit is checked again before use ([`Cache::get`]); a bad entry (disk
//! corruption, a stray edit) is removed and reported as a miss.
//!
//! The default location is `$XDG_CACHE_HOME/ami`, or `~/.cache/ami`
//! ([`Cache::default_dir`]).
//!
//! ```
//! use std::io::Write;
//! use ami_deb::cache::{Cache, Expected};
//!
//! let dir = tempfile::tempdir()?;
//! let cache = Cache::new(dir.path());
//! let expected = Expected::new(6, "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03")?;
//! assert_eq!(cache.get(&expected)?, None);
//! let mut entry = cache.begin(&expected)?;
//! entry.write_all(b"hello\n")?;
//! let path = entry.commit()?;
//! assert_eq!(cache.get(&expected)?, Some(path.clone()));
//!
//! // A corrupted entry is detected, removed, and reported as a miss.
//! std::fs::write(&path, b"jello\n")?;
//! assert_eq!(cache.get(&expected)?, None);
//! assert!(!path.exists());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// An error of the cache, or of a file that does not match what was
/// expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// A cache file or directory could not be read or written.
    #[error("cache {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A SHA-256 given to [`Expected::new`] is not 64 hex digits.
    #[error("{value:?} is not a SHA-256 in hex")]
    InvalidHash {
        /// The value.
        value: String,
    },
    /// The data written to an entry does not have the expected size.
    #[error("size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The expected size.
        expected: u64,
        /// The size written (when larger: the size at which writing was
        /// refused).
        actual: u64,
    },
    /// The data written to an entry does not have the expected SHA-256.
    #[error("SHA256 mismatch: expected {expected}, got {actual}")]
    HashMismatch {
        /// The expected hash.
        expected: String,
        /// The hash of the data.
        actual: String,
    },
}

/// Result type of this module.
pub type Result<T, E = CacheError> = std::result::Result<T, E>;

/// The size and SHA-256 a file must have.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Expected {
    size: u64,
    sha256: String,
}

impl Expected {
    /// `size` bytes with SHA-256 `sha256` (hex, any case).
    pub fn new(size: u64, sha256: &str) -> Result<Expected> {
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CacheError::InvalidHash {
                value: sha256.to_owned(),
            });
        }
        Ok(Expected {
            size,
            sha256: sha256.to_ascii_lowercase(),
        })
    }

    /// The size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The SHA-256, lower-case hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
}

/// Lower-case hex of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks that `data` has the expected size and SHA-256.
pub fn check_bytes(data: &[u8], expected: &Expected) -> Result<()> {
    if data.len() as u64 != expected.size {
        return Err(CacheError::SizeMismatch {
            expected: expected.size,
            actual: data.len() as u64,
        });
    }
    let actual = hex(&Sha256::digest(data));
    if actual != expected.sha256 {
        return Err(CacheError::HashMismatch {
            expected: expected.sha256.clone(),
            actual,
        });
    }
    Ok(())
}

/// The cache; see the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// A cache in `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    /// `$XDG_CACHE_HOME/ami` if the variable is set to an absolute path,
    /// else `$HOME/.cache/ami`, else `None`.
    pub fn default_dir() -> Option<PathBuf> {
        Cache::default_dir_from(
            std::env::var_os("XDG_CACHE_HOME").as_deref(),
            std::env::var_os("HOME").as_deref(),
        )
    }

    /// [`Cache::default_dir`] with the two variables given.
    pub fn default_dir_from(
        xdg_cache_home: Option<&OsStr>,
        home: Option<&OsStr>,
    ) -> Option<PathBuf> {
        if let Some(xdg) = xdg_cache_home.map(Path::new).filter(|p| p.is_absolute()) {
            return Some(xdg.join("ami"));
        }
        home.map(Path::new)
            .filter(|p| p.is_absolute())
            .map(|h| h.join(".cache").join("ami"))
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self) -> PathBuf {
        self.root.join("sha256")
    }

    /// Where the entry for `expected` lives (whether or not it exists).
    pub fn path(&self, expected: &Expected) -> PathBuf {
        self.dir().join(&expected.sha256)
    }

    /// The entry for `expected`, after checking its size and SHA-256
    /// again. A missing entry is `None`; so is a bad one, which is removed.
    pub fn get(&self, expected: &Expected) -> Result<Option<PathBuf>> {
        let path = self.path(expected);
        let io_error = |source| CacheError::Io {
            path: path.clone(),
            source,
        };
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(e)),
        };
        let good = file.metadata().map_err(io_error)?.len() == expected.size && {
            let mut hasher = Sha256::new();
            let copied = io::copy(
                &mut file.take(expected.size + 1),
                &mut HashWriter(&mut hasher),
            )
            .map_err(io_error)?;
            copied == expected.size && hex(&hasher.finalize()) == expected.sha256
        };
        if good {
            return Ok(Some(path));
        }
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(e)),
        }
    }

    /// Starts writing the entry for `expected`: write the data to the
    /// returned [`CacheEntry`], then [`CacheEntry::commit`] it.
    pub fn begin(&self, expected: &Expected) -> Result<CacheEntry> {
        let dir = self.dir();
        std::fs::create_dir_all(&dir).map_err(|source| CacheError::Io {
            path: dir.clone(),
            source,
        })?;
        let file = tempfile::Builder::new()
            .prefix(".partial-")
            .tempfile_in(&dir)
            .map_err(|source| CacheError::Io {
                path: dir.clone(),
                source,
            })?;
        Ok(CacheEntry {
            path: self.path(expected),
            dir,
            expected: expected.clone(),
            file,
            hasher: Sha256::new(),
            written: 0,
        })
    }

    /// Stores `data` (checked against `expected`) and returns the entry's
    /// path.
    pub fn insert(&self, expected: &Expected, data: &[u8]) -> Result<PathBuf> {
        check_bytes(data, expected)?;
        let mut entry = self.begin(expected)?;
        entry.write_all(data).map_err(|source| CacheError::Io {
            path: entry.file.path().to_owned(),
            source,
        })?;
        entry.commit()
    }
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A cache entry being written (a temporary file); see [`Cache::begin`].
/// Dropping it without [`CacheEntry::commit`] removes the temporary file.
#[derive(Debug)]
pub struct CacheEntry {
    path: PathBuf,
    dir: PathBuf,
    expected: Expected,
    file: tempfile::NamedTempFile,
    hasher: Sha256,
    written: u64,
}

impl CacheEntry {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Checks the size and SHA-256 of what was written, flushes it to disk
    /// and renames it to its name; returns that path.
    pub fn commit(mut self) -> Result<PathBuf> {
        if self.written != self.expected.size {
            return Err(CacheError::SizeMismatch {
                expected: self.expected.size,
                actual: self.written,
            });
        }
        let actual = hex(&self.hasher.clone().finalize());
        if actual != self.expected.sha256 {
            return Err(CacheError::HashMismatch {
                expected: self.expected.sha256.clone(),
                actual,
            });
        }
        let tmp = self.file.path().to_owned();
        let io_error = |path: &Path, source| CacheError::Io {
            path: path.to_owned(),
            source,
        };
        self.file.flush().map_err(|e| io_error(&tmp, e))?;
        self.file
            .as_file()
            .sync_all()
            .map_err(|e| io_error(&tmp, e))?;
        self.file
            .persist(&self.path)
            .map_err(|e| io_error(&self.path, e.error))?;
        // Make the rename itself durable.
        if let Ok(dir) = File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(self.path)
    }
}

impl Write for CacheEntry {
    /// Writes to the temporary file; refuses to go past the expected size
    /// (an [`io::ErrorKind::InvalidData`] error).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written + buf.len() as u64 > self.expected.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("more than the expected {} bytes", self.expected.size),
            ));
        }
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";

    #[test]
    fn default_dir_follows_xdg() {
        let some = |s: &'static str| Some(OsStr::new(s));
        assert_eq!(
            Cache::default_dir_from(some("/x/cache"), some("/home/u")),
            Some(PathBuf::from("/x/cache/ami"))
        );
        assert_eq!(
            Cache::default_dir_from(some("relative"), some("/home/u")),
            Some(PathBuf::from("/home/u/.cache/ami"))
        );
        assert_eq!(Cache::default_dir_from(None, None), None);
    }

    #[test]
    fn bad_data_is_never_committed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let expected = Expected::new(6, HELLO).unwrap();

        let mut short = cache.begin(&expected).unwrap();
        short.write_all(b"hell").unwrap();
        let err = short.commit().unwrap_err();
        assert!(
            matches!(
                err,
                CacheError::SizeMismatch {
                    expected: 6,
                    actual: 4
                }
            ),
            "{err}"
        );

        let mut wrong = cache.begin(&expected).unwrap();
        wrong.write_all(b"jello\n").unwrap();
        assert!(matches!(
            wrong.commit().unwrap_err(),
            CacheError::HashMismatch { .. }
        ));

        let mut long = cache.begin(&expected).unwrap();
        assert_eq!(
            long.write_all(b"hello\n!").unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        drop(long);

        // Nothing under the real name, and no temporary file left over.
        assert_eq!(cache.get(&expected).unwrap(), None);
        assert_eq!(
            std::fs::read_dir(dir.path().join("sha256"))
                .unwrap()
                .count(),
            0
        );

        let path = cache.insert(&expected, b"hello\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hello\n");
        // A truncated entry is a miss and is removed.
        std::fs::write(&path, b"hel").unwrap();
        assert_eq!(cache.get(&expected).unwrap(), None);
        assert!(!path.exists());
    }

    #[test]
    fn invalid_hashes_are_rejected() {
        assert!(Expected::new(1, "abc").is_err());
        assert!(Expected::new(1, &"g".repeat(64)).is_err());
        assert_eq!(
            Expected::new(1, &"A".repeat(64)).unwrap().sha256(),
            "a".repeat(64)
        );
    }
}
