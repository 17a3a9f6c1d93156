//! The repository client: from [`Source`]s to a verified [`PackageIndex`],
//! and from chosen [`Package`]s to checked `.deb` files in the cache.
//!
//! [`Repository::update`] does, for each source (one URI and suite):
//!
//! 1. fetch `dists/<suite>/InRelease`; if there is none, `Release` and
//!    `Release.gpg`;
//! 2. verify it ([`crate::release`]) with the keyring [`Trust`] gives for
//!    the source (its `Signed-By`, a keyring for every source, or
//!    explicitly nothing: [`Trust::Insecure`]), and check that it is the
//!    requested suite and has the architecture;
//! 3. for each component, fetch `Packages.xz` (else `.zst`, `.gz`, or
//!    uncompressed), from `by-hash/SHA256/<hash>` when the Release says
//!    `Acquire-By-Hash: yes` (falling back to the plain name), into the
//!    cache with its size and SHA-256 checked against the Release, then
//!    decompress it (at most the uncompressed size the Release lists, whose
//!    hash is checked too when listed) and add it to the index.
//!
//! [`Repository::download`] then fetches `.deb`s, each checked against the
//! size and SHA-256 of its `Packages` record, in parallel, into the cache.
//!
//! Every failure is an error naming the URL and what did not match.
//!
//! ```
//! use ami_deb::repo::{Repository, RepositoryOptions, Trust};
//! use ami_deb::sources::Source;
//! use ami_deb::cache::Cache;
//!
//! let dir = tempfile::tempdir()?;
//! let source = Source::new(&format!("file://{}", dir.path().display()), "stable", ["main"]);
//! let options = RepositoryOptions::new("amd64", Cache::new(dir.path().join("cache")), Trust::Insecure);
//! let repository = Repository::new(vec![source], options)?;
//! // An empty directory has no dists/stable/InRelease nor Release.
//! let error = repository.update(&ami_core::progress::NoProgress).unwrap_err();
//! assert!(error.to_string().contains("no InRelease or Release"), "{error}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::borrow::Cow;
use std::io::Read;
use std::path::PathBuf;
use std::time::SystemTime;

use ami_core::progress::{NoProgress, Progress, Stage};
use sha2::{Digest, Sha256};

use crate::cache::{hex, Cache, Expected};
use crate::fetch::{FetchError, FetchOptions, Fetcher};
use crate::index::{Package, PackageIndex};
use crate::keyring::{Keyring, KeyringError};
use crate::release::{
    IndexCompression, IndexEntry, ReleaseError, UnverifiedRelease, VerifiedRelease, VerifyPolicy,
};
use crate::sources::Source;

/// The largest `InRelease`/`Release` accepted (Debian's are ~150 KB).
const MAX_RELEASE_SIZE: u64 = 64 << 20;
/// The largest detached signature accepted.
const MAX_SIGNATURE_SIZE: u64 = 1 << 20;
/// The largest decompressed index when the Release does not say.
const MAX_INDEX_SIZE: u64 = u32::MAX as u64;

/// An error of the repository client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepoError {
    /// No source to read (or none for the architecture).
    #[error("no package source{0}")]
    NoSources(String),
    /// A keyring named by a source (or given) cannot be loaded.
    #[error("keyring for {source_name}: {error}")]
    Keyring {
        /// The source (`URI SUITE ...` and where it was defined).
        source_name: String,
        /// The keyring error.
        #[source]
        error: KeyringError,
    },
    /// A download failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// A `Release` file is invalid or not trusted.
    #[error(transparent)]
    Release(#[from] ReleaseError),
    /// The suite has neither `InRelease` nor `Release`.
    #[error("{url}: no InRelease or Release file (is the suite name right?)")]
    NoRelease {
        /// The suite's directory.
        url: String,
    },
    /// The Release is for another suite than the one asked for (a mirror
    /// serving the wrong file, or a replayed one).
    #[error("{url}: asked for suite {requested}, but the file is for Suite {suite:?} / Codename {codename:?}")]
    WrongSuite {
        /// The Release URL.
        url: String,
        /// The suite of the source.
        requested: String,
        /// Its `Suite` field.
        suite: Option<String>,
        /// Its `Codename` field.
        codename: Option<String>,
    },
    /// The suite does not have the architecture.
    #[error("{url}: no architecture {arch} in this suite (it has: {available})")]
    MissingArchitecture {
        /// The Release URL.
        url: String,
        /// The architecture asked for.
        arch: String,
        /// The `Architectures` field.
        available: String,
    },
    /// The Release lists no `Packages` index for a component.
    #[error("{url}: lists no Packages index for {component}/binary-{arch}")]
    MissingIndex {
        /// The Release URL.
        url: String,
        /// The component.
        component: String,
        /// The architecture.
        arch: String,
    },
    /// An index cannot be decompressed, or is larger than allowed.
    #[error("{url}: cannot decompress: {reason}")]
    Decompress {
        /// The index URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The decompressed index does not match the Release's entry for the
    /// uncompressed file.
    #[error("{url}: the decompressed index does not match {path} in the Release: {reason}")]
    IndexMismatch {
        /// The index URL.
        url: String,
        /// The uncompressed path the Release lists.
        path: String,
        /// What differs.
        reason: String,
    },
    /// An index could not be parsed.
    #[error("{url}: {error}")]
    Index {
        /// The index URL.
        url: String,
        /// The parse error.
        #[source]
        error: crate::Error,
    },
    /// A package record cannot be downloaded safely.
    #[error("package {package}: {reason}")]
    Package {
        /// `name version`.
        package: String,
        /// What is wrong (no SHA256, unsafe Filename, ...).
        reason: String,
    },
}

/// Result type of this module.
pub type Result<T, E = RepoError> = std::result::Result<T, E>;

/// How `Release` files are authenticated.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Each source with the keys of its `Signed-By` (files, inline key,
    /// or fingerprints picked from `default`), else with `default` (apt's
    /// behaviour).
    SignedBy {
        /// The keyring for sources without `Signed-By`.
        default: Keyring,
    },
    /// Every source with this keyring, whatever its `Signed-By`.
    Keyring(Keyring),
    /// **Insecure**: no signature is checked at all (for unsigned test
    /// repositories). Dates and every hash are still checked.
    Insecure,
}

/// What a [`Repository`] needs besides its sources.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RepositoryOptions {
    /// The Debian architecture (`amd64`, `arm64`).
    pub arch: String,
    /// Where indices and packages are cached.
    pub cache: Cache,
    /// How Releases are authenticated.
    pub trust: Trust,
    /// Timeouts, retries, parallelism.
    pub fetch: FetchOptions,
    /// The time to check dates and key expiry against (`None`: the clock
    /// at the time of [`Repository::update`]).
    pub now: Option<SystemTime>,
    /// Whether to enforce `Valid-Until`.
    pub check_valid_until: bool,
    /// Whether to refuse a `Date` in the future.
    pub check_date: bool,
}

impl RepositoryOptions {
    /// Options for `arch` with default fetching and all date checks.
    pub fn new(arch: &str, cache: Cache, trust: Trust) -> RepositoryOptions {
        RepositoryOptions {
            arch: arch.to_owned(),
            cache,
            trust,
            fetch: FetchOptions::default(),
            now: None,
            check_valid_until: true,
            check_date: true,
        }
    }

    /// Sets [`RepositoryOptions::fetch`].
    pub fn fetch(mut self, fetch: FetchOptions) -> Self {
        self.fetch = fetch;
        self
    }

    /// Sets [`RepositoryOptions::now`].
    pub fn now(mut self, now: SystemTime) -> Self {
        self.now = Some(now);
        self
    }
}

/// Where one source of a [`RepositoryIndex`] came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexOrigin {
    /// Position of the [`Source`] in [`Repository::sources`].
    pub source: usize,
    /// The repository root URI (packages' `Filename`s are relative to it).
    pub uri: String,
    /// The suite.
    pub suite: String,
    /// The component.
    pub component: String,
    /// The URL the `Packages` index was read from.
    pub url: String,
}

/// The verified indices of a [`Repository`]: the merged [`PackageIndex`]
/// and, for each of its sources, where it came from.
#[derive(Debug, Clone)]
pub struct RepositoryIndex {
    packages: PackageIndex,
    origins: Vec<IndexOrigin>,
    releases: Vec<VerifiedRelease>,
}

impl RepositoryIndex {
    /// The package records of every source and component.
    pub fn packages(&self) -> &PackageIndex {
        &self.packages
    }

    /// Where the index's source number `i` (a
    /// [`crate::index::SourceId::index`]) came from.
    pub fn origin(&self, i: usize) -> Option<&IndexOrigin> {
        self.origins.get(i)
    }

    /// All origins, in index source order.
    pub fn origins(&self) -> &[IndexOrigin] {
        &self.origins
    }

    /// The verified Release of each suite, in source order.
    pub fn releases(&self) -> &[VerifiedRelease] {
        &self.releases
    }

    /// The package index, by value.
    pub fn into_packages(self) -> PackageIndex {
        self.packages
    }
}

/// A set of sources for one architecture; see the
/// [module documentation](self).
#[derive(Debug)]
pub struct Repository {
    sources: Vec<Source>,
    options: RepositoryOptions,
    fetcher: Fetcher,
}

/// Percent-encodes what may not appear raw in a URL path.
fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~+:@!$&'()*,;=".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decompresses `data` (at most `limit` bytes of output).
fn decompress(
    data: &[u8],
    compression: IndexCompression,
    limit: u64,
    url: &str,
) -> Result<Vec<u8>> {
    let error = |reason: String| RepoError::Decompress {
        url: url.to_owned(),
        reason,
    };
    let mut out = Vec::new();
    let reader: Box<dyn Read + '_> = match compression {
        IndexCompression::None => return Ok(data.to_vec()),
        IndexCompression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(data)),
        IndexCompression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(data)),
        IndexCompression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(data).map_err(|e| error(e.to_string()))?)
        }
    };
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| error(e.to_string()))?;
    if out.len() as u64 > limit {
        return Err(error(format!("more than {limit} bytes of output")));
    }
    Ok(out)
}

impl Repository {
    /// A repository of `sources` (those not for `options.arch` are
    /// skipped). No network access happens here.
    pub fn new(sources: Vec<Source>, options: RepositoryOptions) -> Result<Repository> {
        let sources: Vec<Source> = sources
            .into_iter()
            .filter(|s| s.has_arch(&options.arch))
            .collect();
        if sources.is_empty() {
            return Err(RepoError::NoSources(format!(
                " for architecture {}",
                options.arch
            )));
        }
        let fetcher = Fetcher::new(options.fetch.clone());
        Ok(Repository {
            sources,
            options,
            fetcher,
        })
    }

    /// The sources (those for the architecture).
    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    /// The options.
    pub fn options(&self) -> &RepositoryOptions {
        &self.options
    }

    /// The cache.
    pub fn cache(&self) -> &Cache {
        &self.options.cache
    }

    /// The fetcher (shared by every download of this repository).
    pub fn fetcher(&self) -> &Fetcher {
        &self.fetcher
    }

    fn policy(&self) -> VerifyPolicy {
        let mut policy = VerifyPolicy::at(self.options.now.unwrap_or_else(SystemTime::now));
        policy.check_valid_until = self.options.check_valid_until;
        policy.check_date = self.options.check_date;
        policy
    }

    /// The keyring to verify `source` with (`None`: insecure).
    fn keyring_for(&self, source: &Source) -> Result<Option<Cow<'_, Keyring>>> {
        let keyring_error = |error| RepoError::Keyring {
            source_name: format!("{source} ({})", source.origin),
            error,
        };
        match &self.options.trust {
            Trust::Insecure => Ok(None),
            Trust::Keyring(k) => Ok(Some(Cow::Borrowed(k))),
            Trust::SignedBy { default } => {
                let Some(signed_by) = &source.signed_by else {
                    return Ok(Some(Cow::Borrowed(default)));
                };
                let mut keyring = if signed_by.keyrings.is_empty() && signed_by.inline.is_none() {
                    default.clone()
                } else {
                    let mut k = Keyring::load_all(&signed_by.keyrings).map_err(keyring_error)?;
                    if let Some(inline) = &signed_by.inline {
                        k.extend(
                            Keyring::from_bytes(inline.as_bytes(), "inline Signed-By key")
                                .map_err(keyring_error)?,
                        );
                    }
                    k
                };
                if !signed_by.fingerprints.is_empty() {
                    keyring.retain_fingerprints(&signed_by.fingerprints);
                }
                Ok(Some(Cow::Owned(keyring)))
            }
        }
    }

    /// Fetches and verifies the Release of one source (see the
    /// [module documentation](self), steps 1 and 2).
    pub fn release(&self, source: &Source) -> Result<VerifiedRelease> {
        self.release_with(source, &self.policy())
    }

    fn release_with(&self, source: &Source, policy: &VerifyPolicy) -> Result<VerifiedRelease> {
        let dists = source.dists_url();
        let inrelease_url = format!("{dists}InRelease");
        let unverified = match self.fetcher.get(&inrelease_url, MAX_RELEASE_SIZE) {
            Ok(bytes) => UnverifiedRelease::parse(&bytes, inrelease_url)?,
            Err(e) if e.is_not_found() => {
                let release_url = format!("{dists}Release");
                let bytes = match self.fetcher.get(&release_url, MAX_RELEASE_SIZE) {
                    Ok(bytes) => bytes,
                    Err(e) if e.is_not_found() => return Err(RepoError::NoRelease { url: dists }),
                    Err(e) => return Err(e.into()),
                };
                let release = UnverifiedRelease::parse(&bytes, release_url)?;
                let sig_url = format!("{dists}Release.gpg");
                match self.fetcher.get(&sig_url, MAX_SIGNATURE_SIZE) {
                    Ok(sig) => release.with_detached_signature(&sig, &sig_url)?,
                    Err(e) if e.is_not_found() => release,
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        };
        let release = match self.keyring_for(source)? {
            None => unverified.insecure_skip_signature_with(policy)?,
            Some(keyring) => unverified.verify_with(&keyring, policy)?,
        };
        let suite = release.suite();
        let codename = release.codename();
        if (suite.is_some() || codename.is_some())
            && suite != Some(source.suite.as_str())
            && codename != Some(source.suite.as_str())
        {
            return Err(RepoError::WrongSuite {
                url: release.url().to_owned(),
                requested: source.suite.clone(),
                suite: suite.map(str::to_owned),
                codename: codename.map(str::to_owned),
            });
        }
        let arches = release.architectures();
        if !arches.is_empty() && !arches.contains(&self.options.arch.as_str()) {
            return Err(RepoError::MissingArchitecture {
                url: release.url().to_owned(),
                arch: self.options.arch.clone(),
                available: arches.join(" "),
            });
        }
        Ok(release)
    }

    /// Fetches the `Packages` index `{component}/binary-{arch}` listed in a
    /// verified `release`; returns its text and URL.
    fn packages_text(
        &self,
        source: &Source,
        release: &VerifiedRelease,
        component: &str,
        arch: &str,
    ) -> Result<(String, String)> {
        let files = release
            .packages(component, arch)
            .ok_or_else(|| RepoError::MissingIndex {
                url: release.url().to_owned(),
                component: component.to_owned(),
                arch: arch.to_owned(),
            })?;
        let dists = source.dists_url();
        let mut last_missing = None;
        for (entry, compression) in &files.variants {
            let expected =
                Expected::new(entry.size, &entry.sha256).map_err(|e| RepoError::Index {
                    url: release.url().to_owned(),
                    error: crate::Error::Syntax {
                        line: 0,
                        reason: e.to_string(),
                    },
                })?;
            let plain = format!("{dists}{}", encode_path(&entry.path));
            let mut urls = Vec::new();
            if release.acquire_by_hash() {
                let dir = entry.path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                urls.push(format!(
                    "{dists}{}/by-hash/SHA256/{}",
                    encode_path(dir),
                    entry.sha256
                ));
            }
            urls.push(plain);
            for url in urls {
                match self
                    .fetcher
                    .fetch(&url, &expected, self.cache(), &NoProgress)
                {
                    Ok(path) => {
                        let data = std::fs::read(&path).map_err(|source| FetchError::Local {
                            url: format!("file://{}", path.display()),
                            source,
                        })?;
                        // The cache checked the file; check what was read.
                        crate::cache::check_bytes(&data, &expected).map_err(|e| {
                            FetchError::Cache {
                                url: url.clone(),
                                source: e,
                            }
                        })?;
                        let text = self.decode_index(
                            &data,
                            *compression,
                            files.uncompressed.as_ref(),
                            &url,
                        )?;
                        return Ok((text, url));
                    }
                    Err(e) if e.is_not_found() => last_missing = Some(e),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Err(last_missing
            .map(RepoError::from)
            .unwrap_or_else(|| RepoError::MissingIndex {
                url: release.url().to_owned(),
                component: component.to_owned(),
                arch: arch.to_owned(),
            }))
    }

    fn decode_index(
        &self,
        data: &[u8],
        compression: IndexCompression,
        uncompressed: Option<&IndexEntry>,
        url: &str,
    ) -> Result<String> {
        let limit = uncompressed.map(|e| e.size).unwrap_or(MAX_INDEX_SIZE);
        let plain = decompress(data, compression, limit, url)?;
        if let Some(entry) = uncompressed {
            let mismatch = |reason: String| RepoError::IndexMismatch {
                url: url.to_owned(),
                path: entry.path.clone(),
                reason,
            };
            if plain.len() as u64 != entry.size {
                return Err(mismatch(format!(
                    "size {} instead of {}",
                    plain.len(),
                    entry.size
                )));
            }
            let actual = hex(&Sha256::digest(&plain));
            if actual != entry.sha256 {
                return Err(mismatch(format!(
                    "SHA256 {actual} instead of {}",
                    entry.sha256
                )));
            }
        }
        String::from_utf8(plain).map_err(|e| RepoError::Decompress {
            url: url.to_owned(),
            reason: format!("the index is not UTF-8 text ({e})"),
        })
    }

    /// Fetches, verifies and parses the indices of every source and
    /// component (see the [module documentation](self)). `progress` gets
    /// [`Stage::Update`] (amount: files).
    pub fn update(&self, progress: &dyn Progress) -> Result<RepositoryIndex> {
        let policy = self.policy();
        let arch = self.options.arch.as_str();
        let total: usize = self.sources.iter().map(|s| 1 + s.components.len()).sum();
        progress.begin(Stage::Update, Some(total as u64));
        let mut packages = PackageIndex::new(arch);
        let mut origins = Vec::new();
        let mut releases = Vec::new();
        for (i, source) in self.sources.iter().enumerate() {
            let release = self.release_with(source, &policy)?;
            progress.advance(Stage::Update, 1);
            for component in &source.components {
                let mut arches = vec![arch];
                // apt reads binary-all only when the suite lists `all` as an
                // architecture and does not fold it into each architecture.
                if release.architectures().contains(&"all")
                    && !release.all_in_arch_indices()
                    && release.packages(component, "all").is_some()
                {
                    arches.push("all");
                }
                for a in arches {
                    let (text, url) = self.packages_text(source, &release, component, a)?;
                    let label = format!("{}/{component}", source.suite);
                    let id =
                        packages
                            .add_source(label, text)
                            .map_err(|error| RepoError::Index {
                                url: url.clone(),
                                error,
                            })?;
                    // NotAutomatic suites (backports) as apt pins them.
                    packages.set_priority(
                        id,
                        crate::index::release_priority(
                            release.field("NotAutomatic"),
                            release.field("ButAutomaticUpgrades"),
                        ),
                    );
                    origins.push(IndexOrigin {
                        source: i,
                        uri: source.uri.clone(),
                        suite: source.suite.clone(),
                        component: component.clone(),
                        url,
                    });
                }
                progress.advance(Stage::Update, 1);
            }
            releases.push(release);
        }
        progress.end(Stage::Update);
        Ok(RepositoryIndex {
            packages,
            origins,
            releases,
        })
    }

    /// The URL and expected size and SHA-256 of a package's `.deb`.
    ///
    /// # Security
    /// The `Filename` must be a relative path without `..`; a record
    /// without `Size` or `SHA256` is refused (it could not be verified).
    pub fn package_url(
        &self,
        index: &RepositoryIndex,
        package: &Package,
    ) -> Result<(String, Expected)> {
        let problem = |reason: &str| RepoError::Package {
            package: package.to_string(),
            reason: reason.to_owned(),
        };
        let origin = index
            .origin(package.source().index())
            .ok_or_else(|| problem("not from this repository's index"))?;
        let filename = package
            .filename()
            .ok_or_else(|| problem("no Filename field"))?;
        if filename.starts_with('/') || filename.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(problem(&format!("unsafe Filename {filename:?}")));
        }
        let size = package
            .size()
            .ok_or_else(|| problem("no Size field: cannot verify the download"))?;
        let sha256 = package
            .sha256()
            .ok_or_else(|| problem("no SHA256 field: cannot verify the download"))?;
        let expected = Expected::new(size, sha256).map_err(|e| problem(&e.to_string()))?;
        Ok((
            format!("{}/{}", origin.uri, encode_path(filename)),
            expected,
        ))
    }

    /// Downloads the `.deb`s of `packages` (records of `index`) into the
    /// cache, in parallel, each checked against its record's size and
    /// SHA-256 (cache hits are checked again). Returns each package with
    /// its file, in the given order. `progress` gets [`Stage::Download`]
    /// (amount: bytes).
    pub fn download(
        &self,
        index: &RepositoryIndex,
        packages: &[Package],
        progress: &dyn Progress,
    ) -> Result<Vec<(Package, PathBuf)>> {
        let items = packages
            .iter()
            .map(|p| self.package_url(index, p))
            .collect::<Result<Vec<_>>>()?;
        let paths = self.fetcher.fetch_all(&items, self.cache(), progress)?;
        Ok(packages.iter().cloned().zip(paths).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_encoded() {
        assert_eq!(
            encode_path("pool/main/g/gcc-12/libgcc-s1_12.2.0-14+deb12u1_amd64.deb"),
            "pool/main/g/gcc-12/libgcc-s1_12.2.0-14+deb12u1_amd64.deb"
        );
        assert_eq!(encode_path("a b%c#d?e"), "a%20b%25c%23d%3Fe");
    }

    #[test]
    fn decompression_is_bounded() {
        let text = b"Package: a\n".repeat(1000);
        let xz = {
            use std::io::Write;
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
            e.write_all(&text).unwrap();
            e.finish().unwrap()
        };
        assert_eq!(
            decompress(&xz, IndexCompression::Xz, 11_000, "u").unwrap(),
            text
        );
        let err = decompress(&xz, IndexCompression::Xz, 10_999, "u").unwrap_err();
        assert_eq!(
            err.to_string(),
            "u: cannot decompress: more than 10999 bytes of output"
        );
        let err = decompress(b"not xz", IndexCompression::Xz, 100, "u").unwrap_err();
        assert!(
            err.to_string().starts_with("u: cannot decompress: "),
            "{err}"
        );
    }
}
