//! Fetching files from mirrors: `file://` always, `http://` and `https://`
//! with the `http` feature; retries with exponential backoff, timeouts,
//! and size-and-SHA-256 checked downloads into the [`Cache`].
//!
//! * [`Fetcher::get`] reads a small file of unknown size (a `Release`)
//!   into memory, up to a limit.
//! * [`Fetcher::fetch`] downloads a file whose size and SHA-256 are known
//!   (an index listed in a verified `Release`, a `.deb` listed in a verified
//!   `Packages`) into the cache, or takes it from there after checking it
//!   again; [`Fetcher::fetch_all`] does many at once on a bounded number of
//!   threads.
//!
//! Connection errors, timeouts, HTTP 5xx/408/429 and bodies shorter than
//! announced or expected are retried (`retries` times, waiting `backoff`,
//! then twice as long each time, up to `max_backoff`). A 404, any other
//! 4xx, more bytes than expected or a SHA-256 mismatch are not: they are
//! reported at once.
//!
//! ```
//! use ami_deb::cache::{Cache, Expected};
//! use ami_deb::fetch::{FetchOptions, Fetcher};
//! use ami_core::progress::NoProgress;
//!
//! let dir = tempfile::tempdir()?;
//! std::fs::write(dir.path().join("hello"), b"hello\n")?;
//! let url = format!("file://{}/hello", dir.path().display());
//! let fetcher = Fetcher::new(FetchOptions::default());
//! assert_eq!(fetcher.get(&url, 1024)?, b"hello\n");
//!
//! let cache = Cache::new(dir.path().join("cache"));
//! let expected = Expected::new(6, "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03")?;
//! let path = fetcher.fetch(&url, &expected, &cache, &NoProgress)?;
//! assert_eq!(std::fs::read(path)?, b"hello\n");
//!
//! let wrong = Expected::new(6, &"0".repeat(64))?;
//! let error = fetcher.fetch(&url, &wrong, &cache, &NoProgress).unwrap_err();
//! assert!(error.to_string().contains("SHA256 mismatch"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use ami_core::progress::{Progress, Stage};

use crate::cache::{Cache, CacheError, Expected};

/// An error fetching a file. Each variant names the URL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The file does not exist (HTTP 404 or 410, or no such local file).
    #[error("{url}: not found")]
    NotFound {
        /// The URL.
        url: String,
    },
    /// The server answered with an HTTP error status other than 404/410.
    #[error("{url}: HTTP status {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The connection failed, timed out or broke.
    #[error("{url}: {reason}")]
    Transport {
        /// The URL.
        url: String,
        /// What happened.
        reason: String,
    },
    /// The body was shorter than announced or expected.
    #[error("{url}: truncated: received {received} of {expected} bytes")]
    Truncated {
        /// The URL.
        url: String,
        /// Bytes expected.
        expected: u64,
        /// Bytes received.
        received: u64,
    },
    /// The body is larger than expected or allowed.
    #[error("{url}: larger than the expected {limit} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The size that was exceeded.
        limit: u64,
    },
    /// The content does not have the expected SHA-256.
    #[error("{url}: SHA256 mismatch: expected {expected}, got {actual} (the file is corrupt or was tampered with)")]
    HashMismatch {
        /// The URL.
        url: String,
        /// The expected hash.
        expected: String,
        /// The hash of what was received.
        actual: String,
    },
    /// The URL's scheme is not supported (or needs the `http` feature).
    #[error("{url}: unsupported URL scheme{}", if *needs_http_feature { " (ami-deb was built without its `http` feature)" } else { "" })]
    UnsupportedScheme {
        /// The URL.
        url: String,
        /// Whether building with the `http` feature would help.
        needs_http_feature: bool,
    },
    /// A local (`file://`) file could not be read.
    #[error("{url}: {source}")]
    Local {
        /// The URL.
        url: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Writing to the cache failed.
    #[error("{url}: {source}")]
    Cache {
        /// The URL being fetched.
        url: String,
        /// The cache error.
        #[source]
        source: CacheError,
    },
    /// Retries did not help.
    #[error("giving up after {attempts} attempts: {last}")]
    GaveUp {
        /// How many attempts were made.
        attempts: u32,
        /// The last attempt's error.
        #[source]
        last: Box<FetchError>,
    },
}

impl FetchError {
    /// Whether another attempt might succeed (connection problems,
    /// timeouts, 5xx/408/429, truncated bodies).
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Transport { .. } | FetchError::Truncated { .. } => true,
            FetchError::Status { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            _ => false,
        }
    }

    /// Whether the file does not exist (after retries too).
    pub fn is_not_found(&self) -> bool {
        match self {
            FetchError::NotFound { .. } => true,
            FetchError::GaveUp { last, .. } => last.is_not_found(),
            _ => false,
        }
    }
}

/// Result type of this module.
pub type Result<T, E = FetchError> = std::result::Result<T, E>;

/// How to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FetchOptions {
    /// Timeout for connecting and for each read (the connection is
    /// considered dead when no byte arrives for this long).
    pub timeout: Duration,
    /// Timeout for a whole request, body included (`None`: no limit).
    pub request_timeout: Option<Duration>,
    /// How many times to retry a transient failure.
    pub retries: u32,
    /// The wait before the first retry; doubled for each further one.
    pub backoff: Duration,
    /// The longest wait between retries.
    pub max_backoff: Duration,
    /// How many downloads [`Fetcher::fetch_all`] runs at once.
    pub parallel: usize,
    /// The `User-Agent` header.
    pub user_agent: String,
}

impl Default for FetchOptions {
    /// 30 s timeout, 10 min per request, 4 retries from 500 ms up to 8 s,
    /// 4 parallel downloads.
    fn default() -> Self {
        FetchOptions {
            timeout: Duration::from_secs(30),
            request_timeout: Some(Duration::from_secs(600)),
            retries: 4,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            parallel: 4,
            user_agent: concat!("ami/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

impl FetchOptions {
    /// Sets [`FetchOptions::timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets [`FetchOptions::request_timeout`].
    pub fn request_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets [`FetchOptions::retries`].
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Sets [`FetchOptions::backoff`] and [`FetchOptions::max_backoff`].
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff = first;
        self.max_backoff = max;
        self
    }

    /// Sets [`FetchOptions::parallel`] (at least 1).
    pub fn parallel(mut self, n: usize) -> Self {
        self.parallel = n.max(1);
        self
    }
}

/// Fetches files; see the [module documentation](self). Cheap to share
/// between threads (`&Fetcher` is `Sync`).
#[derive(Debug)]
pub struct Fetcher {
    options: FetchOptions,
    #[cfg(feature = "http")]
    agent: ureq::Agent,
}

impl Fetcher {
    /// A fetcher with `options`.
    pub fn new(options: FetchOptions) -> Fetcher {
        #[cfg(feature = "http")]
        let agent = {
            let config = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .user_agent(options.user_agent.as_str())
                .timeout_resolve(Some(options.timeout))
                .timeout_connect(Some(options.timeout))
                .timeout_per_read(Some(options.timeout))
                .timeout_per_write(Some(options.timeout))
                .timeout_per_call(options.request_timeout)
                .build();
            ureq::Agent::new_with_config(config)
        };
        Fetcher {
            options,
            #[cfg(feature = "http")]
            agent,
        }
    }

    /// The options.
    pub fn options(&self) -> &FetchOptions {
        &self.options
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retries
    /// are used up.
    fn with_retries<T>(&self, mut attempt: impl FnMut() -> Result<T>) -> Result<T> {
        let mut wait = self.options.backoff;
        let mut attempts = 0;
        loop {
            attempts += 1;
            match attempt() {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() && attempts <= self.options.retries => {
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(self.options.max_backoff);
                }
                Err(e) if attempts > 1 => {
                    return Err(FetchError::GaveUp {
                        attempts,
                        last: Box::new(e),
                    })
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One attempt: streams the body of `url` into `sink`, refusing more
    /// than `limit` bytes. `expected` is the size the body must have, if
    /// known (a shorter body is [`FetchError::Truncated`]).
    fn fetch_once(
        &self,
        url: &str,
        sink: &mut dyn Write,
        expected: Option<u64>,
        limit: u64,
    ) -> Result<u64> {
        let (scheme, _) = url.split_once(':').unwrap_or(("", ""));
        let received = match scheme {
            "file" => fetch_file(url, sink, limit)?,
            "http" | "https" => self.fetch_http(url, sink, expected, limit)?,
            _ => {
                return Err(FetchError::UnsupportedScheme {
                    url: url.to_owned(),
                    needs_http_feature: false,
                })
            }
        };
        if let Some(expected) = expected {
            if received < expected {
                return Err(FetchError::Truncated {
                    url: url.to_owned(),
                    expected,
                    received,
                });
            }
        }
        Ok(received)
    }

    #[cfg(not(feature = "http"))]
    fn fetch_http(
        &self,
        url: &str,
        _sink: &mut dyn Write,
        _expected: Option<u64>,
        _limit: u64,
    ) -> Result<u64> {
        Err(FetchError::UnsupportedScheme {
            url: url.to_owned(),
            needs_http_feature: true,
        })
    }

    #[cfg(feature = "http")]
    fn fetch_http(
        &self,
        url: &str,
        sink: &mut dyn Write,
        expected: Option<u64>,
        limit: u64,
    ) -> Result<u64> {
        let response = self
            .agent
            .get(url)
            .call()
            .map_err(|e| FetchError::Transport {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
        let status = response.status().as_u16();
        match status {
            200 => {}
            404 | 410 => {
                return Err(FetchError::NotFound {
                    url: url.to_owned(),
                })
            }
            _ => {
                return Err(FetchError::Status {
                    url: url.to_owned(),
                    status,
                })
            }
        }
        let announced = response.body().content_length();
        if let Some(announced) = announced {
            if announced > limit {
                return Err(FetchError::TooLarge {
                    url: url.to_owned(),
                    limit,
                });
            }
        }
        let mut reader = response.into_body().into_reader();
        let received = copy(url, &mut reader, sink, limit)?;
        match announced {
            Some(announced) if expected.is_none() && received < announced => {
                Err(FetchError::Truncated {
                    url: url.to_owned(),
                    expected: announced,
                    received,
                })
            }
            _ => Ok(received),
        }
    }

    /// Fetches a file of unknown size into memory (at most `limit` bytes),
    /// with retries.
    pub fn get(&self, url: &str, limit: u64) -> Result<Vec<u8>> {
        self.with_retries(|| {
            let mut data = Vec::new();
            self.fetch_once(url, &mut data, None, limit)?;
            Ok(data)
        })
    }

    /// Fetches a file whose size and SHA-256 are known into `cache`, with
    /// retries; returns its path in the cache. A cache entry is checked
    /// again (size and SHA-256) before it is used, and replaced if it is
    /// bad. `progress` gets [`Stage::Download`] advances, in bytes (a
    /// retried attempt reports its bytes again).
    ///
    /// # Security
    /// The file is written to a temporary name and only renamed into the
    /// cache after its size and SHA-256 matched; a mismatch is an error and
    /// leaves nothing behind.
    pub fn fetch(
        &self,
        url: &str,
        expected: &Expected,
        cache: &Cache,
        progress: &dyn Progress,
    ) -> Result<PathBuf> {
        let cache_error = |source| FetchError::Cache {
            url: url.to_owned(),
            source,
        };
        if let Some(path) = cache.get(expected).map_err(cache_error)? {
            progress.advance(Stage::Download, expected.size());
            return Ok(path);
        }
        self.with_retries(|| {
            let mut entry = cache.begin(expected).map_err(cache_error)?;
            let mut sink = ProgressWriter {
                inner: &mut entry,
                progress,
            };
            self.fetch_once(url, &mut sink, Some(expected.size()), expected.size())?;
            entry.commit().map_err(|e| match e {
                CacheError::SizeMismatch { expected, actual } => FetchError::Truncated {
                    url: url.to_owned(),
                    expected,
                    received: actual,
                },
                CacheError::HashMismatch { expected, actual } => FetchError::HashMismatch {
                    url: url.to_owned(),
                    expected,
                    actual,
                },
                other => cache_error(other),
            })
        })
    }

    /// [`Fetcher::fetch`] for many `(url, expected)` files, on at most
    /// [`FetchOptions::parallel`] threads, reporting [`Stage::Download`]
    /// (total: the sum of the sizes). Returns the paths in the order of
    /// `items`, or the first error (in that order); after a failure no new
    /// download is started.
    pub fn fetch_all(
        &self,
        items: &[(String, Expected)],
        cache: &Cache,
        progress: &dyn Progress,
    ) -> Result<Vec<PathBuf>> {
        let total: u64 = items.iter().map(|(_, e)| e.size()).sum();
        progress.begin(Stage::Download, Some(total));
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let results: Mutex<Vec<Option<Result<PathBuf>>>> =
            Mutex::new((0..items.len()).map(|_| None).collect());
        let workers = self.options.parallel.clamp(1, items.len().max(1));
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    while !failed.load(Ordering::SeqCst) {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some((url, expected)) = items.get(i) else {
                            break;
                        };
                        let result = self.fetch(url, expected, cache, progress);
                        if result.is_err() {
                            failed.store(true, Ordering::SeqCst);
                        }
                        results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(result);
                    }
                });
            }
        });
        progress.end(Stage::Download);
        let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
        let mut paths = Vec::with_capacity(items.len());
        for result in results {
            match result {
                Some(Ok(path)) => paths.push(path),
                Some(Err(e)) => return Err(e),
                // Not attempted: some other item failed; its error comes.
                None => {}
            }
        }
        Ok(paths)
    }
}

/// Copies `reader` into `sink`, refusing more than `limit` bytes; a read
/// error is a transport error, a write error a cache error.
fn copy(url: &str, reader: &mut dyn Read, sink: &mut dyn Write, limit: u64) -> Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(FetchError::Transport {
                    url: url.to_owned(),
                    reason: format!("reading the body after {total} bytes: {e}"),
                })
            }
        };
        if total + n as u64 > limit {
            return Err(FetchError::TooLarge {
                url: url.to_owned(),
                limit,
            });
        }
        sink.write_all(&buf[..n])
            .map_err(|source| FetchError::Cache {
                url: url.to_owned(),
                source: CacheError::Io {
                    path: PathBuf::from("(download)"),
                    source,
                },
            })?;
        total += n as u64;
    }
}

/// The local path of a `file:` URL (`file:///p`, `file://localhost/p`,
/// `file:/p`), percent-decoded.
pub fn file_url_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("file:")?;
    let path = if let Some(after) = rest.strip_prefix("//") {
        let slash = after.find('/')?;
        let host = &after[..slash];
        if !host.is_empty() && host != "localhost" {
            return None;
        }
        &after[slash..]
    } else {
        rest
    };
    if !path.starts_with('/') {
        return None;
    }
    Some(PathBuf::from(percent_decode(path)))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn fetch_file(url: &str, sink: &mut dyn Write, limit: u64) -> Result<u64> {
    let path = file_url_path(url).ok_or_else(|| FetchError::UnsupportedScheme {
        url: url.to_owned(),
        needs_http_feature: false,
    })?;
    let mut file = std::fs::File::open(&path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            FetchError::NotFound {
                url: url.to_owned(),
            }
        } else {
            FetchError::Local {
                url: url.to_owned(),
                source,
            }
        }
    })?;
    copy(url, &mut file, sink, limit).map_err(|e| match e {
        FetchError::Transport { reason, .. } => FetchError::Local {
            url: url.to_owned(),
            source: io::Error::other(reason),
        },
        other => other,
    })
}

/// Reports bytes written as download progress.
struct ProgressWriter<'a, W: Write> {
    inner: &'a mut W,
    progress: &'a dyn Progress,
}

impl<W: Write> Write for ProgressWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.progress.advance(Stage::Download, n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
