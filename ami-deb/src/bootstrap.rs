//! The whole bootstrap in one call: from a repository and a [`Request`] to
//! a populated [`Tree`] with its dpkg database.
//!
//! [`Bootstrap::run`] strings the other modules together:
//!
//! 1. **update**: [`Repository::update`] fetches and verifies every
//!    source's Release and `Packages` index;
//! 2. **resolve**: [`resolve()`](crate::resolve()) chooses the package
//!    set;
//! 3. **download**: [`Repository::download`] fetches the `.deb`s in
//!    parallel into the content-addressed cache, each checked against the
//!    size and SHA-256 of its `Packages` record (packages already in the
//!    cache are checked and reused);
//! 4. **prepare**: [`Unpacker::prepare_all`] verifies each `.deb` again and
//!    decompresses its data archive into the tar cache, on as many threads
//!    as the machine has cores (or [`BootstrapOptions::threads`]);
//! 5. **unpack**: with merged `/usr` ([`Request::merged_usr`], the
//!    default), [`merged_usr_skeleton`] first; then
//!    [`Unpacker::unpack_into`] for every package in [`unpack_order`];
//! 6. **database**: [`write_database`] with every package
//!    `install ok unpacked`, unless [`BootstrapOptions::configured`] says
//!    which packages count as configured (`install ok installed`).
//!
//! The result, [`BootstrapReport`], lists the packages (name, version,
//! architecture, size, SHA-256, suite), how many bytes were downloaded and
//! how many came from the cache, the time of each stage, and the unpacked
//! packages themselves ([`BootstrapReport::ownership`]) with their
//! maintainer scripts, triggers and conffiles, which the configuration step
//! needs.
//!
//! # Unpack order
//!
//! Packages are unpacked in dependency order, as apt hands them to dpkg: a
//! package comes after every package of the set that satisfies one of its
//! `Pre-Depends` or `Depends`; packages that depend on each other (a
//! cycle, such as `libc6` and `libgcc-s1`) come together, by name; among
//! packages whose dependencies are all unpacked, the first by name goes
//! first. The order is a pure function of the package set.
//!
//! What the order can change in the tree is limited, because
//! [`Unpacker::unpack_into`] decides overwrites by `Replaces` in both
//! directions (a package that replaces an earlier one takes the path; an
//! earlier package that replaces a later one keeps it), and two packages
//! shipping the same file without `Replaces` is an error in either order.
//! What remains is what dpkg itself leaves to the order: a directory
//! shipped by several packages keeps the owner and mode of the first one
//! unpacked (dpkg leaves an existing directory alone), and the order of the
//! packages in [`Ownership::packages`]. In Debian 12's bootstrap sets no
//! directory is shipped by two packages with different owners or modes
//! (checked for the 177 packages of the default variant plus ssh, sudo and
//! the cloud kernel), so there the order does not change the tree;
//! dependency order is kept because it is how apt feeds dpkg, which keeps
//! the first-come choice meaningful for other package sets.
//!
//! # Example
//!
//! ```
//! use ami_core::{progress::NoProgress, Metadata, Tree};
//! use ami_deb::bootstrap::Bootstrap;
//! use ami_deb::cache::Cache;
//! use ami_deb::repo::{Repository, RepositoryOptions, Trust};
//! use ami_deb::sources::Source;
//! use ami_deb::unpack::Unpacker;
//! use ami_deb::{Request, Variant};
//! use fixtures::deb::DebBuilder;
//! use fixtures::repo::{TestKey, TestRepo};
//!
//! let key = TestKey::generate(7);
//! let repo = TestRepo::builder()
//!     .suite("stable")
//!     .deb("main", &DebBuilder::new("hello", "1.0-1", "amd64").file("/usr/bin/hello", b"hi\n", 0o755))
//!     .signed_by(&key)
//!     .build()?;
//! let cache = tempfile::tempdir()?;
//! let source = Source::new(&format!("file://{}", repo.path().display()), "stable", ["main"]);
//! let trust = Trust::Keyring(ami_deb::keyring::Keyring::load(repo.keyring().unwrap())?);
//! let options = RepositoryOptions::new("amd64", Cache::new(cache.path()), trust);
//! let bootstrap = Bootstrap::new(
//!     Repository::new(vec![source], options)?,
//!     Request::new(Variant::Custom).package("hello"),
//! );
//!
//! let mut tree = Tree::new(Metadata::new(0o755));
//! let report = bootstrap.run(&mut tree, &Unpacker::new(cache.path()), &NoProgress)?;
//! assert_eq!(report.packages[0].name, "hello");
//! assert!(tree.lookup(b"usr/bin/hello").is_some());
//! assert!(tree.lookup(b"var/lib/dpkg/status").is_some());
//! assert_eq!(report.ownership.packages()[0].name(), "hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ami_core::progress::Progress;
use ami_core::{Timestamp, Tree, TreeError};

use crate::dpkgdb::{write_database, DbError, DbOptions, DbPackage, Status};
use crate::index::{Package, PackageIndex};
use crate::repo::{RepoError, Repository};
use crate::resolve::{resolve, Request};
use crate::unpack::{merged_usr_skeleton, Ownership, UnpackError, Unpacker};
use crate::version::Version;

/// Errors of [`Bootstrap::run`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootstrapError {
    /// Reading the repository or downloading a package failed.
    #[error(transparent)]
    Repository(#[from] RepoError),
    /// The request cannot be resolved.
    #[error(transparent)]
    Resolve(#[from] crate::Error),
    /// A package cannot be prepared or unpacked.
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    /// The merged-`/usr` links cannot be made (the tree already has
    /// something else at `bin`, `lib`, ...).
    #[error("creating the merged-/usr layout: {0}")]
    Skeleton(TreeError),
    /// The dpkg database cannot be written.
    #[error(transparent)]
    Database(#[from] DbError),
    /// [`Configured::Only`] names a package that is not in the set.
    #[error("package {0} is to be marked configured, but it is not in the package set")]
    NotInSet(String),
}

/// Result type of this module.
pub type Result<T, E = BootstrapError> = std::result::Result<T, E>;

/// Which packages the dpkg database records as configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Configured {
    /// None: every package is `install ok unpacked` (its maintainer
    /// scripts have not run).
    #[default]
    None,
    /// Every package is `install ok installed`.
    All,
    /// These packages are `install ok installed`, the others
    /// `install ok unpacked`.
    Only(BTreeSet<String>),
}

impl Configured {
    /// The status of the package `name`.
    pub fn status(&self, name: &str) -> Status {
        let installed = match self {
            Configured::None => false,
            Configured::All => true,
            Configured::Only(names) => names.contains(name),
        };
        if installed {
            Status::INSTALLED
        } else {
            Status::UNPACKED
        }
    }
}

/// How [`Bootstrap::run`] works, besides the repository and the request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BootstrapOptions {
    /// Threads that decompress packages (0: one per core).
    pub threads: usize,
    /// Time of what is not from a package: the merged-`/usr` links and
    /// the dpkg database. `None`: the newest `Date` of the Release files
    /// read, so that the same mirror state gives the same tree.
    pub mtime: Option<Timestamp>,
    /// Which packages the database records as configured.
    pub configured: Configured,
    /// Whether to write the dpkg database at all (a caller that runs the
    /// configuration step may write it itself, with
    /// [`BootstrapReport::ownership`]).
    pub write_database: bool,
}

impl Default for BootstrapOptions {
    fn default() -> Self {
        BootstrapOptions {
            threads: 0,
            mtime: None,
            configured: Configured::None,
            write_database: true,
        }
    }
}

/// A repository plus a request; see the [module documentation](self).
#[derive(Debug)]
pub struct Bootstrap {
    repository: Repository,
    request: Request,
    options: BootstrapOptions,
}

/// One package of a [`BootstrapReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageReport {
    /// Package name.
    pub name: String,
    /// Version.
    pub version: Version,
    /// Architecture (`amd64`, `all`).
    pub arch: String,
    /// Size of the `.deb` in bytes.
    pub size: u64,
    /// SHA-256 of the `.deb` (lower-case hex).
    pub sha256: String,
    /// `Installed-Size` in KiB, if the record has it.
    pub installed_size: Option<u64>,
    /// The suite the record came from.
    pub suite: String,
    /// Why the resolver selected it ("requested", "Priority: important",
    /// "openssh-server depends on libwrap0 (>= 7.6-4~)", ...).
    pub reason: String,
    /// Where the `.deb` is in the cache.
    pub path: PathBuf,
    /// Whether the `.deb` was already in the cache (it was checked again,
    /// not downloaded).
    pub cached: bool,
    /// Whether its decompressed data archive was already in the tar cache.
    pub tar_cached: bool,
    /// Size of the decompressed data archive.
    pub tar_size: u64,
}

/// How long each stage of [`Bootstrap::run`] took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// Fetching and verifying Release and `Packages` files.
    pub update: Duration,
    /// Resolving the package set (and computing the unpack order).
    pub resolve: Duration,
    /// Downloading the `.deb`s or checking the cached ones.
    pub download: Duration,
    /// Verifying and decompressing the packages.
    pub prepare: Duration,
    /// Unpacking into the tree (merged-`/usr` links included).
    pub unpack: Duration,
    /// Writing the dpkg database.
    pub database: Duration,
    /// The whole run.
    pub total: Duration,
}

/// A short description of a Release that was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseSummary {
    /// Where the Release was read from.
    pub url: String,
    /// Fingerprint of the key that signed it; `None` when signatures were
    /// not checked ([`Trust::Insecure`](crate::repo::Trust::Insecure)).
    pub signed_by: Option<String>,
}

/// What [`Bootstrap::run`] did.
#[derive(Debug, Clone)]
pub struct BootstrapReport {
    /// The architecture.
    pub arch: String,
    /// The Release files read, in source order.
    pub releases: Vec<ReleaseSummary>,
    /// How many package records the indices had.
    pub index_records: usize,
    /// The package set, sorted by name.
    pub packages: Vec<PackageReport>,
    /// The unpacked packages in the order they were unpacked, with what
    /// they own, their control files, maintainer scripts, triggers and
    /// conffiles.
    pub ownership: Ownership,
    /// Time of the merged-`/usr` links and the dpkg database.
    pub mtime: Timestamp,
    /// Whether the dpkg database was written.
    pub database_written: bool,
    /// Bytes of `.deb`s that were downloaded.
    pub downloaded_bytes: u64,
    /// Bytes of `.deb`s found in the cache.
    pub cached_bytes: u64,
    /// Bytes of data archives decompressed in this run.
    pub decompressed_bytes: u64,
    /// Entries in the tree after the run.
    pub tree_nodes: usize,
    /// How long each stage took.
    pub timings: Timings,
}

impl BootstrapReport {
    /// Number of packages.
    pub fn package_count(&self) -> usize {
        self.packages.len()
    }

    /// Number of packages downloaded (not found in the cache).
    pub fn downloaded_count(&self) -> usize {
        self.packages.iter().filter(|p| !p.cached).count()
    }

    /// Total size of the `.deb`s.
    pub fn download_size(&self) -> u64 {
        self.packages.iter().map(|p| p.size).sum()
    }

    /// Number of packages with at least one maintainer script (`preinst`,
    /// `postinst`, ...).
    pub fn with_scripts_count(&self) -> usize {
        self.ownership
            .packages()
            .iter()
            .filter(|p| p.maintainer_scripts().next().is_some())
            .count()
    }

    /// The report of the package `name`.
    pub fn package(&self, name: &str) -> Option<&PackageReport> {
        self.packages.iter().find(|p| p.name == name)
    }
}

fn timestamp_of(t: SystemTime) -> Timestamp {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timestamp::from_secs(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        Err(e) => Timestamp::from_secs(-i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX)),
    }
}

impl Bootstrap {
    /// A bootstrap of `request` from `repository`, with the default
    /// [`BootstrapOptions`]. Nothing is fetched until [`run`](Self::run).
    pub fn new(repository: Repository, request: Request) -> Bootstrap {
        Bootstrap {
            repository,
            request,
            options: BootstrapOptions::default(),
        }
    }

    /// Replaces the options.
    pub fn with_options(mut self, options: BootstrapOptions) -> Bootstrap {
        self.options = options;
        self
    }

    /// Sets [`BootstrapOptions::threads`].
    pub fn threads(mut self, threads: usize) -> Bootstrap {
        self.options.threads = threads;
        self
    }

    /// Sets [`BootstrapOptions::mtime`].
    pub fn mtime(mut self, mtime: Timestamp) -> Bootstrap {
        self.options.mtime = Some(mtime);
        self
    }

    /// Sets [`BootstrapOptions::configured`].
    pub fn configured(mut self, configured: Configured) -> Bootstrap {
        self.options.configured = configured;
        self
    }

    /// Sets [`BootstrapOptions::write_database`].
    pub fn write_database(mut self, on: bool) -> Bootstrap {
        self.options.write_database = on;
        self
    }

    /// The repository.
    pub fn repository(&self) -> &Repository {
        &self.repository
    }

    /// The request.
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// The options.
    pub fn options(&self) -> &BootstrapOptions {
        &self.options
    }

    /// Runs every stage (see the [module documentation](self)) and adds
    /// the packages to `tree`, whose decompressed data archives go to
    /// `unpacker`'s cache (the tree refers to them: keep that cache until
    /// the tree is written). `progress` gets the update and download
    /// stages.
    ///
    /// # Errors
    /// [`BootstrapError`]: the first stage that fails. Nothing is written
    /// outside the two caches; the tree may hold the packages unpacked
    /// before a failing one.
    pub fn run(
        &self,
        tree: &mut Tree,
        unpacker: &Unpacker,
        progress: &dyn Progress,
    ) -> Result<BootstrapReport> {
        let started = Instant::now();
        let mut timings = Timings::default();
        let arch = self.repository.options().arch.clone();

        let mut clock = Instant::now();
        let mut lap = |slot: &mut Duration| {
            let now = Instant::now();
            *slot = now - clock;
            clock = now;
        };

        let index = self.repository.update(progress)?;
        lap(&mut timings.update);
        let releases: Vec<ReleaseSummary> = index
            .releases()
            .iter()
            .map(|r| ReleaseSummary {
                url: r.url().to_owned(),
                signed_by: r.signers().first().map(|s| s.key.clone()),
            })
            .collect();
        let mtime = self.options.mtime.unwrap_or_else(|| {
            index
                .releases()
                .iter()
                .filter_map(|r| r.date())
                .max()
                .map_or(Timestamp::default(), timestamp_of)
        });
        let index_records = index.packages().len();

        let resolution = resolve(index.packages(), &self.request)?;
        let chosen: Vec<Package> = resolution.packages().cloned().collect();
        let reasons: Vec<String> = chosen
            .iter()
            .map(|p| {
                resolution
                    .reason(p.name())
                    .map(ToString::to_string)
                    .unwrap_or_default()
            })
            .collect();
        drop(resolution);
        let order = unpack_order(index.packages(), &chosen);
        if let Configured::Only(names) = &self.options.configured {
            if let Some(missing) = names
                .iter()
                .find(|n| !chosen.iter().any(|p| p.name() == *n))
            {
                return Err(BootstrapError::NotInSet(missing.clone()));
            }
        }
        lap(&mut timings.resolve);

        let cache = self.repository.cache();
        let mut cached = Vec::with_capacity(chosen.len());
        for p in &chosen {
            let (_, expected) = self.repository.package_url(&index, p)?;
            cached.push(cache.path(&expected).is_file());
        }
        let files = self.repository.download(&index, &chosen, progress)?;
        lap(&mut timings.download);

        let mut packages: Vec<PackageReport> = files
            .iter()
            .zip(cached)
            .zip(reasons)
            .map(|(((p, path), cached), reason)| PackageReport {
                name: p.name().to_owned(),
                version: p.version().clone(),
                arch: p.architecture().to_owned(),
                size: p.size().unwrap_or(0),
                sha256: p.sha256().unwrap_or_default().to_owned(),
                installed_size: p.installed_size(),
                suite: index
                    .origin(p.source().index())
                    .map(|o| o.suite.clone())
                    .unwrap_or_default(),
                reason,
                path: path.clone(),
                cached,
                tar_cached: false,
                tar_size: 0,
            })
            .collect();
        // The indices take tens of megabytes: free them before unpacking.
        drop(files);
        drop(chosen);
        drop(index);

        let debs: Vec<(PathBuf, String)> = packages
            .iter()
            .map(|p| (p.path.clone(), p.sha256.clone()))
            .collect();
        let prepared = unpacker.prepare_all(&debs, self.options.threads)?;
        for (report, deb) in packages.iter_mut().zip(&prepared) {
            report.tar_cached = deb.cache_hit();
            report.tar_size = deb.tar_size();
        }
        lap(&mut timings.prepare);

        if self.request.merged_usr {
            merged_usr_skeleton(tree, mtime).map_err(BootstrapError::Skeleton)?;
        }
        let mut ownership = Ownership::new(arch.clone());
        for &i in &order {
            unpacker.unpack_into(tree, &prepared[i], &mut ownership)?;
        }
        drop(prepared);
        lap(&mut timings.unpack);

        if self.options.write_database {
            let db: Vec<DbPackage<'_>> = ownership
                .packages()
                .iter()
                .map(|p| DbPackage::new(p, self.options.configured.status(p.name())))
                .collect();
            write_database(tree, &db, &DbOptions::new(arch.clone(), mtime))?;
        }
        lap(&mut timings.database);
        timings.total = started.elapsed();

        let downloaded_bytes = packages.iter().filter(|p| !p.cached).map(|p| p.size).sum();
        let cached_bytes = packages.iter().filter(|p| p.cached).map(|p| p.size).sum();
        let decompressed_bytes = packages
            .iter()
            .filter(|p| !p.tar_cached)
            .map(|p| p.tar_size)
            .sum();
        Ok(BootstrapReport {
            arch,
            releases,
            index_records,
            packages,
            ownership,
            mtime,
            database_written: self.options.write_database,
            downloaded_bytes,
            cached_bytes,
            decompressed_bytes,
            tree_nodes: tree.node_count(),
            timings,
        })
    }
}

/// The order in which to unpack `packages` (records of `index`), as
/// positions in `packages`; see [Unpack order](self#unpack-order).
///
/// A package depends on every other member of `packages` that satisfies
/// one of the alternatives of its `Pre-Depends` and `Depends` groups
/// ([`PackageIndex::satisfies`]). Strongly connected groups (cycles) are
/// kept together, sorted by name; groups are emitted dependencies first,
/// and among those ready, the one with the smallest name first.
pub fn unpack_order(index: &PackageIndex, packages: &[Package]) -> Vec<usize> {
    let n = packages.len();
    // Every name a package can be reached by: its own and what it provides.
    let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, p) in packages.iter().enumerate() {
        by_name.entry(p.name()).or_default().push(i);
        for group in p.provides().iter() {
            by_name
                .entry(group.first().name.as_str())
                .or_default()
                .push(i);
        }
    }
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, p) in packages.iter().enumerate() {
        let mut out = BTreeSet::new();
        for group in p.pre_depends().iter().chain(p.depends().iter()) {
            for relation in group.iter() {
                for &j in by_name.get(relation.name.as_str()).into_iter().flatten() {
                    if j != i && index.satisfies(&packages[j], relation) {
                        out.insert(j);
                    }
                }
            }
        }
        deps[i] = out.into_iter().collect();
    }
    let components = strongly_connected(&deps);

    // Kahn's algorithm over the components, ready ones by smallest name.
    let comp_count = components.iter().max().map_or(0, |m| m + 1);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); comp_count];
    for (i, &c) in components.iter().enumerate() {
        members[c].push(i);
    }
    for m in &mut members {
        m.sort_by(|&a, &b| packages[a].name().cmp(packages[b].name()).then(a.cmp(&b)));
    }
    let mut waiting = vec![0usize; comp_count];
    let mut dependents: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); comp_count];
    for (i, ds) in deps.iter().enumerate() {
        let c = components[i];
        for &j in ds {
            let d = components[j];
            if d != c && dependents[d].insert(c) {
                waiting[c] += 1;
            }
        }
    }
    let key = |c: usize| (packages[members[c][0]].name(), members[c][0]);
    let mut ready: BTreeSet<(&str, usize, usize)> = (0..comp_count)
        .filter(|&c| waiting[c] == 0)
        .map(|c| {
            let (name, first) = key(c);
            (name, first, c)
        })
        .collect();
    let mut order = Vec::with_capacity(n);
    while let Some((_, _, c)) = ready.pop_first() {
        order.extend_from_slice(&members[c]);
        for &d in &dependents[c] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                let (name, first) = key(d);
                ready.insert((name, first, d));
            }
        }
    }
    debug_assert_eq!(order.len(), n, "the condensation is acyclic");
    order
}

/// The strongly connected component of each node of the graph `edges`
/// (Tarjan's algorithm, iterative); components are numbered from 0.
fn strongly_connected(edges: &[Vec<usize>]) -> Vec<usize> {
    const NONE: usize = usize::MAX;
    let n = edges.len();
    let mut number = vec![NONE; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut component = vec![NONE; n];
    let mut components = 0;
    let mut counter = 0;
    for start in 0..n {
        if number[start] != NONE {
            continue;
        }
        number[start] = counter;
        low[start] = counter;
        counter += 1;
        stack.push(start);
        on_stack[start] = true;
        let mut calls = vec![(start, 0usize)];
        while let Some(&mut (v, ref mut next)) = calls.last_mut() {
            if let Some(&w) = edges[v].get(*next) {
                *next += 1;
                if number[w] == NONE {
                    number[w] = counter;
                    low[w] = counter;
                    counter += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    calls.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(number[w]);
                }
                continue;
            }
            calls.pop();
            if let Some(&(parent, _)) = calls.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == number[v] {
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    component[w] = components;
                    if w == v {
                        break;
                    }
                }
                components += 1;
            }
        }
    }
    component
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order_of(text: &str) -> Vec<String> {
        let index = PackageIndex::from_text("amd64", text.to_owned()).unwrap();
        let packages: Vec<Package> = index.packages().to_vec();
        unpack_order(&index, &packages)
            .into_iter()
            .map(|i| packages[i].name().to_owned())
            .collect()
    }

    fn record(name: &str, extra: &str) -> String {
        format!("Package: {name}\nVersion: 1.0\nArchitecture: amd64\n{extra}\n")
    }

    #[test]
    fn dependencies_come_first_then_names() {
        let text = [
            record("a-app", "Depends: zlib1g, libc6"),
            record("zlib1g", "Pre-Depends: libc6"),
            record("libc6", ""),
            record("base-files", ""),
        ]
        .join("\n");
        assert_eq!(order_of(&text), ["base-files", "libc6", "zlib1g", "a-app"]);
    }

    #[test]
    fn cycles_stay_together_in_name_order() {
        let text = [
            record("libgcc-s1", "Depends: libc6"),
            record("libc6", "Depends: libgcc-s1"),
            record("app", "Depends: libc6"),
            record("aaa", "Depends: app"),
            record("zzz", ""),
        ]
        .join("\n");
        assert_eq!(order_of(&text), ["libc6", "libgcc-s1", "app", "aaa", "zzz"]);
    }

    #[test]
    fn virtual_and_alternative_dependencies_count() {
        let text = [
            record("app", "Depends: awk, missing | sh-impl (>= 2)"),
            record("mawk", "Provides: awk"),
            record("dash", "Provides: sh-impl (= 2.0)"),
            // An unversioned Provides does not satisfy a versioned relation.
            record("bash", "Provides: sh-impl"),
        ]
        .join("\n");
        let order = order_of(&text);
        let pos = |n: &str| order.iter().position(|x| x == n).unwrap();
        assert!(pos("mawk") < pos("app"), "{order:?}");
        assert!(pos("dash") < pos("app"), "{order:?}");
        // Nothing orders bash: it comes first by name.
        assert_eq!(order, ["bash", "dash", "mawk", "app"]);
    }

    #[test]
    fn tarjan_finds_components() {
        // 0 -> 1 -> 2 -> 0 (a cycle), 3 -> 0, 4 alone, 5 <-> 5.
        let edges = vec![vec![1], vec![2], vec![0], vec![0], vec![], vec![5]];
        let c = strongly_connected(&edges);
        assert_eq!(c[0], c[1]);
        assert_eq!(c[1], c[2]);
        assert_ne!(c[3], c[0]);
        assert_ne!(c[4], c[0]);
        assert_ne!(c[4], c[3]);
        let distinct: BTreeSet<usize> = c.iter().copied().collect();
        assert_eq!(distinct.len(), 4);
    }

    mod run {
        use std::collections::BTreeSet;

        use ami_core::progress::NoProgress;
        use ami_core::{Metadata, NodeKind, Tree};
        use fixtures::deb::DebBuilder;
        use fixtures::repo::{TestKey, TestRepo};

        use crate::bootstrap::{Bootstrap, BootstrapError, Configured};
        use crate::cache::Cache;
        use crate::keyring::Keyring;
        use crate::repo::{Repository, RepositoryOptions, Trust};
        use crate::sources::Source;
        use crate::unpack::Unpacker;
        use crate::{Request, Variant};

        const DATE: u64 = 1_700_000_000;

        fn repo() -> TestRepo {
            TestRepo::builder()
                .date(DATE)
                .suite("stable")
                .deb(
                    "main",
                    &DebBuilder::new("base-files", "12.4", "amd64")
                        .field("Essential", "yes")
                        .field("Priority", "required")
                        .dir("/var/local", 0o2775)
                        .owned(0, 50, "root", "staff")
                        .file("/etc/debian_version", b"12.4\n", 0o644),
                )
                .deb(
                    "main",
                    &DebBuilder::new("libc6", "2.36-9", "amd64").file(
                        "/lib/x86_64-linux-gnu/libc.so.6",
                        b"old",
                        0o644,
                    ),
                )
                .deb(
                    "main",
                    &DebBuilder::new("app", "1.0-1", "amd64")
                        .depends("libc6 (>= 2.36)")
                        .file("/bin/app", b"app 1\n", 0o755)
                        .conffile("/etc/app.conf", b"x=1\n")
                        .postinst("#!/bin/sh\necho configured\n"),
                )
                .deb(
                    "main",
                    &DebBuilder::new("app-extra", "1.0-1", "all")
                        .depends("app")
                        .replaces("app")
                        .file("/usr/bin/app", b"app from app-extra\n", 0o755),
                )
                .suite("stable-security")
                .deb(
                    "main",
                    &DebBuilder::new("libc6", "2.36-9+deb12u1", "amd64").file(
                        "/lib/x86_64-linux-gnu/libc.so.6",
                        b"new",
                        0o644,
                    ),
                )
                .signed_by(&TestKey::generate(5))
                .build()
                .unwrap()
        }

        fn bootstrap(repo: &TestRepo, cache: &std::path::Path, request: Request) -> Bootstrap {
            let url = repo.file_url();
            let sources = vec![
                Source::new(&url, "stable", ["main"]),
                Source::new(&url, "stable-security", ["main"]),
            ];
            let keyring = Keyring::load(repo.keyring().unwrap()).unwrap();
            let options =
                RepositoryOptions::new("amd64", Cache::new(cache), Trust::Keyring(keyring));
            Bootstrap::new(Repository::new(sources, options).unwrap(), request)
        }

        fn contents(tree: &Tree, path: &str) -> Vec<u8> {
            let id = tree
                .lookup(path.as_bytes())
                .unwrap_or_else(|| panic!("{path}"));
            let NodeKind::File(data) = &tree.node(id).kind else {
                panic!("{path} is not a file")
            };
            let mut buf = vec![0; data.len() as usize];
            data.open().unwrap().read_exact_at(0, &mut buf).unwrap();
            buf
        }

        fn statuses(tree: &Tree) -> Vec<(String, String)> {
            let status = String::from_utf8(contents(tree, "var/lib/dpkg/status")).unwrap();
            status
                .split("\n\n")
                .filter(|s| !s.trim().is_empty())
                .map(|stanza| {
                    let field = |name: &str| {
                        stanza
                            .lines()
                            .find_map(|l| l.strip_prefix(name))
                            .unwrap()
                            .to_owned()
                    };
                    (field("Package: "), field("Status: "))
                })
                .collect()
        }

        #[test]
        fn unpacks_in_dependency_order_and_caches() {
            let repo = repo();
            let cache = tempfile::tempdir().unwrap();
            let request = Request::new(Variant::Essential).package("app-extra");
            let run = bootstrap(&repo, cache.path(), request.clone());
            let mut tree = Tree::new(Metadata::new(0o755));
            let report = run
                .run(&mut tree, &Unpacker::new(cache.path()), &NoProgress)
                .unwrap();

            let names: Vec<&str> = report.packages.iter().map(|p| p.name.as_str()).collect();
            assert_eq!(names, ["app", "app-extra", "base-files", "libc6"]);
            let libc6 = report.package("libc6").unwrap();
            assert_eq!(libc6.version.as_str(), "2.36-9+deb12u1");
            assert_eq!(libc6.suite, "stable-security");
            assert_eq!(report.package("app-extra").unwrap().reason, "requested");
            for p in &report.packages {
                let deb = repo
                    .debs()
                    .iter()
                    .find(|d| d.name == p.name && d.version == p.version.as_str())
                    .unwrap();
                assert_eq!((p.size, p.sha256.as_str()), (deb.size, deb.sha256.as_str()));
                assert_eq!(std::fs::read(&p.path).unwrap().len() as u64, p.size);
            }
            let order: Vec<&str> = report
                .ownership
                .packages()
                .iter()
                .map(|p| p.name())
                .collect();
            assert_eq!(order, ["base-files", "libc6", "app", "app-extra"]);

            // Merged /usr, Replaces, directory owners, the newer libc6.
            let bin = tree.lookup(b"bin").unwrap();
            assert!(matches!(&tree.node(bin).kind, NodeKind::Symlink(t) if &**t == b"usr/bin"));
            assert_eq!(contents(&tree, "usr/bin/app"), b"app from app-extra\n");
            assert_eq!(
                contents(&tree, "usr/lib/x86_64-linux-gnu/libc.so.6"),
                b"new"
            );
            let local = &tree.node(tree.lookup(b"var/local").unwrap()).meta;
            assert_eq!((local.mode, local.gid), (0o2775, 50));
            assert_eq!(contents(&tree, "etc/app.conf"), b"x=1\n");

            // The database: everything unpacked, dated by the Release.
            assert_eq!(report.mtime.secs, DATE as i64);
            let status_node = tree.lookup(b"var/lib/dpkg/status").unwrap();
            assert_eq!(tree.node(status_node).meta.mtime.secs, DATE as i64);
            let st = statuses(&tree);
            assert_eq!(st.len(), 4);
            assert!(st.iter().all(|(_, s)| s == "install ok unpacked"), "{st:?}");
            let scripts: Vec<&str> = report
                .ownership
                .get("app")
                .unwrap()
                .maintainer_scripts()
                .map(|m| m.name.as_str())
                .collect();
            assert_eq!(scripts, ["postinst"]);
            assert_eq!(report.with_scripts_count(), 1);
            assert!(tree.lookup(b"var/lib/dpkg/info/app.postinst").is_some());

            // Everything was fetched and decompressed once.
            assert_eq!(report.downloaded_count(), 4);
            assert_eq!(report.cached_bytes, 0);
            assert_eq!(report.downloaded_bytes, report.download_size());
            assert!(report.decompressed_bytes > 0);
            assert!(report.packages.iter().all(|p| !p.tar_cached));

            // A second run takes everything from the caches and builds the
            // same tree, with app configured.
            let run = bootstrap(&repo, cache.path(), request)
                .configured(Configured::Only(BTreeSet::from(["app".to_owned()])));
            let mut again = Tree::new(Metadata::new(0o755));
            let second = run
                .run(&mut again, &Unpacker::new(cache.path()), &NoProgress)
                .unwrap();
            assert_eq!(second.downloaded_count(), 0);
            assert_eq!(second.downloaded_bytes, 0);
            assert_eq!(second.cached_bytes, report.download_size());
            assert_eq!(second.decompressed_bytes, 0);
            assert!(second.packages.iter().all(|p| p.cached && p.tar_cached));
            assert_eq!(second.tree_nodes, report.tree_nodes);
            let st = statuses(&again);
            for (name, status) in &st {
                let want = if name == "app" {
                    "install ok installed"
                } else {
                    "install ok unpacked"
                };
                assert_eq!(status, want, "{name}");
            }
        }

        #[test]
        fn errors_come_before_the_tree_is_touched() {
            let repo = repo();
            let cache = tempfile::tempdir().unwrap();
            let unpacker = Unpacker::new(cache.path());
            let mut tree = Tree::new(Metadata::new(0o755));

            let run = bootstrap(
                &repo,
                cache.path(),
                Request::new(Variant::Custom).package("app"),
            )
            .configured(Configured::Only(BTreeSet::from(["sudo".to_owned()])));
            let err = run.run(&mut tree, &unpacker, &NoProgress).unwrap_err();
            assert!(
                matches!(&err, BootstrapError::NotInSet(n) if n == "sudo"),
                "{err}"
            );
            assert_eq!(
                err.to_string(),
                "package sudo is to be marked configured, but it is not in the package set"
            );

            let run = bootstrap(
                &repo,
                cache.path(),
                Request::new(Variant::Custom).package("app (>= 2)"),
            );
            let err = run.run(&mut tree, &unpacker, &NoProgress).unwrap_err();
            assert!(matches!(err, BootstrapError::Resolve(_)), "{err}");
            assert_eq!(tree.node_count(), 1, "the tree was touched");
            assert!(!cache.path().join("tar").exists());

            // An untrusted Release: nothing is resolved or downloaded.
            let url = repo.file_url();
            let other =
                Keyring::from_bytes(&TestKey::generate(6).public_keyring(), "other").unwrap();
            let options =
                RepositoryOptions::new("amd64", Cache::new(cache.path()), Trust::Keyring(other));
            let run = Bootstrap::new(
                Repository::new(vec![Source::new(&url, "stable", ["main"])], options).unwrap(),
                Request::new(Variant::Custom).package("app"),
            );
            let err = run.run(&mut tree, &unpacker, &NoProgress).unwrap_err();
            assert!(matches!(err, BootstrapError::Repository(_)), "{err}");
            assert_eq!(tree.node_count(), 1);
        }
    }

    #[test]
    fn configured_statuses() {
        assert_eq!(Configured::None.status("a"), Status::UNPACKED);
        assert_eq!(Configured::All.status("a"), Status::INSTALLED);
        let only = Configured::Only(["a".to_owned()].into());
        assert_eq!(only.status("a"), Status::INSTALLED);
        assert_eq!(only.status("b"), Status::UNPACKED);
    }
}
