//! Unpacking `.deb` data archives into a [`Tree`], with dpkg's semantics.
//!
//! Two steps, so that the expensive one runs in parallel and the one that
//! decides what the tree looks like runs in a fixed order:
//!
//! 1. [`Unpacker::prepare`] (thread-safe; [`Unpacker::prepare_all`] runs
//!    it on a bounded number of threads) checks the `.deb`'s SHA-256,
//!    reads its control archive into memory, and decompresses its
//!    `data.tar.*` **once** into the cache directory, as
//!    `<cache>/tar/<sha256>.tar` (written to a temporary file and renamed
//!    into place, its own SHA-256 recorded in `<sha256>.tar.sha256`; a later
//!    run that finds both, and the digest matching, skips the
//!    decompression). It then lists the tar (headers only).
//! 2. [`Unpacker::unpack_into`] (sequential, deterministic) adds the
//!    entries to the tree. A regular file's contents are *not* copied: the
//!    tree refers to its bytes inside the cached tar
//!    ([`FileData::from_host`]`(tar, offset, size)`), so the tree holds only
//!    metadata and the ext4 writer reads the bytes straight from the tar.
//!    The cache must therefore outlive the tree.
//!
//! # What dpkg does, and what is done here
//!
//! Read from dpkg 1.21's `src/main/archives.c` and `lib/dpkg/tarfn.c`:
//!
//! * **Paths** are normalised ([`normalize_path`]); `..`, NUL, newlines and
//!   over-long names are refused. Parent components are resolved through
//!   the tree, following symbolic links as the kernel does (relative and
//!   absolute targets, at most 40 hops; a `..` that would leave the root is
//!   an error rather than being clamped). With the
//!   [`merged_usr_skeleton`] in place, `./bin/ls` therefore lands in
//!   `usr/bin/ls`. A missing parent directory is an error, as for dpkg.
//! * **Symbolic links** are created after every other entry of the
//!   package, as dpkg's extractor defers them; they also come last in the
//!   package's file list. Their targets are stored, never followed when
//!   writing.
//! * **Existing directories** are left alone: a directory entry whose path
//!   is already a directory, or a symbolic link that resolves to one, keeps
//!   what is there (owner and mode of the first package win; merged-`/usr`
//!   links survive). A symbolic link entry whose path is a directory, or a
//!   link resolving to the same directory, is likewise skipped. Such
//!   entries are still listed for the package (directories are shared).
//! * **Other existing entries** are replaced, after the overwrite check:
//!   if another package owns the path (compared *after* resolving parent
//!   links, so `/bin/x` and `/usr/bin/x` collide), that is an
//!   [`UnpackError::Conflict`] unless the new package `Replaces` it (the
//!   path moves to the new package and leaves the old one's list; an old
//!   conffile becomes obsolete), or the old package `Replaces` the new one
//!   (the existing entry is kept and the path is not listed for the new
//!   package). Instances of one `Multi-Arch: same` package share paths.
//!   Paths nobody owns are replaced silently. A directory is never
//!   replaced by a non-directory ([`UnpackError::ReplaceDirectory`]).
//! * **Owners** are the numeric ids of the tar headers. dpkg first looks
//!   the user and group *names* up in the running system's databases
//!   (`tar_entry_update_from_system`), which inside a Debian chroot gives
//!   the same numbers for the static ids Debian archives use (root,
//!   `shadow`, `tty`, ...); packages never ship files owned by dynamic
//!   ids. The names are kept in [`TarEntry`] for whoever wants to check.
//! * **Modes** keep setuid, setgid and sticky bits; symbolic links get
//!   `0777` (Linux ignores their mode). **Times**: the tar's mtime for
//!   atime, mtime and ctime (dpkg sets atime to the time of installation;
//!   using mtime keeps builds reproducible). Device numbers, fifos and
//!   hard links (to an entry already in the tree, from this package or an
//!   earlier one) are kept; as with dpkg, a hard link entry's owner, mode
//!   and time are applied to the inode it shares (GNU tar writes the same
//!   values as for the first name).
//! * **Conffiles** stay at their real path (dpkg's `--unpack` leaves them as
//!   `<path>.dpkg-new` until `--configure`); each is recorded with the MD5
//!   of its contents.
//! * Not modelled: diversions and stat overrides during unpacking, upgrades
//!   (unpacking a package name twice is an error) and dpkg's removal of
//!   packages whose every file was taken over ("disappearing" packages).
//!
//! If [`Unpacker::unpack_into`] fails, every change it made to the tree is
//! undone (names it added are removed again, names it replaced are put
//! back) and the [`Ownership`] is unchanged; nodes it created stay in the
//! tree's arena, unreachable.
//!
//! # Example
//!
//! ```no_run
//! use ami_core::{Metadata, Timestamp, Tree};
//! use ami_deb::unpack::{merged_usr_skeleton, Ownership, Unpacker};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let unpacker = Unpacker::new("cache");
//! let debs = [("coreutils.deb", "61e4...sha256 from the Packages index")];
//! let prepared = unpacker.prepare_all(&debs, 2)?;
//! let mut tree = Tree::new(Metadata::new(0o755));
//! merged_usr_skeleton(&mut tree, Timestamp::from_secs(0))?;
//! let mut ownership = Ownership::new("amd64");
//! for deb in &prepared {
//!     unpacker.unpack_into(&mut tree, deb, &mut ownership)?;
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ami_core::{FileData, Metadata, Node, NodeId, NodeKind, Timestamp, Tree, TreeError};
use md5::Md5;
use sha2::{Digest, Sha256};

use crate::control::{Paragraph, ParagraphBuf};
use crate::deb::{
    list_path, normalize_path, read_tar_index, Compression, ControlArchive, ControlMember,
    DebError, DebFile, TarEntry, TarEntryKind, TarError,
};
use crate::index::MultiArch;
use crate::relation::Relations;
use crate::version::Version;

/// How many symbolic links one path resolution may follow (Linux's
/// `MAXSYMLINKS`).
pub const MAX_SYMLINK_HOPS: usize = 40;

/// Why a path could not be resolved in the tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// A component does not exist.
    #[error("{at:?} does not exist")]
    Missing {
        /// The path that was looked up, relative to the root.
        at: String,
    },
    /// A component is neither a directory nor a link to one.
    #[error("{at:?} is not a directory")]
    NotADirectory {
        /// The path that was looked up, relative to the root.
        at: String,
    },
    /// Following a symbolic link goes above the root.
    #[error("symbolic link {link:?} leads above the root")]
    Escape {
        /// The symbolic link being followed, relative to the root.
        link: String,
    },
    /// More than [`MAX_SYMLINK_HOPS`] links.
    #[error("too many levels of symbolic links at {link:?}")]
    Loop {
        /// The last symbolic link followed.
        link: String,
    },
}

/// Errors of [`Unpacker`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnpackError {
    /// The `.deb` itself is malformed.
    #[error(transparent)]
    Deb(#[from] DebError),
    /// Reading the `.deb` failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The expected digest is not 64 hexadecimal digits.
    #[error("{sha256:?} is not a SHA-256 digest")]
    BadDigest {
        /// The digest given.
        sha256: String,
    },
    /// The `.deb`'s SHA-256 is not the expected one.
    #[error("{}: SHA-256 is {actual}, expected {expected}", path.display())]
    DigestMismatch {
        /// The package file.
        path: PathBuf,
        /// The digest the caller expected.
        expected: String,
        /// The file's digest.
        actual: String,
    },
    /// Writing to the cache directory failed.
    #[error("cache {}: {source}", path.display())]
    Cache {
        /// The cache path involved.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The cached data archive could not be listed.
    #[error("{}: data archive (cached as {}): {source}", deb.display(), tar.display())]
    DataTar {
        /// The package file.
        deb: PathBuf,
        /// The cached tar.
        tar: PathBuf,
        /// What is wrong.
        #[source]
        source: TarError,
    },
    /// The `control` file cannot be parsed, or lacks a required field.
    #[error("{}: control file: {source}", path.display())]
    Control {
        /// The package file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: crate::Error,
    },
    /// A control member is malformed (`control` not UTF-8, a bad
    /// `conffiles` line, a conffile that is not shipped, ...).
    #[error("{}: {member}: {reason}", path.display())]
    ControlMember {
        /// The package file.
        path: PathBuf,
        /// The member (`control`, `conffiles`).
        member: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// An entry's path cannot be resolved in the tree.
    #[error("package {package}: {path:?}: {reason}")]
    Resolve {
        /// The package.
        package: String,
        /// The entry, as shipped.
        path: String,
        /// Why.
        reason: ResolveError,
    },
    /// A path is already owned by another package that is not replaced.
    #[error("package {package}: trying to overwrite {path:?} ({canonical:?} in the tree), which is also in package {other} {other_version}")]
    Conflict {
        /// The package being unpacked.
        package: String,
        /// The entry, as shipped.
        path: String,
        /// Where it lands in the tree.
        canonical: String,
        /// The package that owns it.
        other: String,
        /// That package's version.
        other_version: String,
    },
    /// A non-directory entry whose path is a directory in the tree.
    #[error("package {package}: trying to overwrite directory {path:?} with a non-directory")]
    ReplaceDirectory {
        /// The package.
        package: String,
        /// The entry, as shipped.
        path: String,
    },
    /// A hard link whose target is missing or a directory.
    #[error("package {package}: hard link {path:?} to {target:?}: {reason}")]
    HardLink {
        /// The package.
        package: String,
        /// The link, as shipped.
        path: String,
        /// Its target, as shipped.
        target: String,
        /// What is wrong.
        reason: String,
    },
    /// A conffile is not a regular file once unpacked.
    #[error("package {package}: conffile {path:?}: {reason}")]
    Conffile {
        /// The package.
        package: String,
        /// The conffile.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A package of this name and architecture was already unpacked.
    #[error("package {package}:{architecture} is already unpacked")]
    AlreadyUnpacked {
        /// The package.
        package: String,
        /// Its architecture.
        architecture: String,
    },
    /// The tree refused an edit.
    #[error("package {package}: {path:?}: {source}")]
    Tree {
        /// The package.
        package: String,
        /// The entry, as shipped.
        path: String,
        /// The tree's error.
        #[source]
        source: TreeError,
    },
}

type Result<T, E = UnpackError> = std::result::Result<T, E>;

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One line of a package's `conffiles` control file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConffileDecl {
    /// The path as written (starting with `/`), as dpkg records it.
    pub path: String,
    /// The normalised path ([`normalize_path`]).
    pub normalized: Box<[u8]>,
    /// The `remove-on-upgrade` flag: the file is not shipped and is to be
    /// removed from an older installation.
    pub remove_on_upgrade: bool,
}

/// Parses a `conffiles` control member the way dpkg 1.21 does: one path
/// per line, optionally preceded by the flag `remove-on-upgrade`; trailing
/// spaces are ignored, as are blank lines; the last line needs its newline.
///
/// # Errors
/// A message for a path that is not absolute, an unknown flag, a missing
/// final newline or an invalid path.
pub fn parse_conffiles(text: &[u8]) -> std::result::Result<Vec<ConffileDecl>, String> {
    let mut out = Vec::new();
    if text.is_empty() {
        return Ok(out);
    }
    if text.last() != Some(&b'\n') {
        return Err("missing final newline".into());
    }
    for raw in text[..text.len() - 1].split(|&b| b == b'\n') {
        let line = std::str::from_utf8(raw)
            .map_err(|_| format!("line {:?} is not UTF-8", lossy(raw)))?
            .trim_end();
        if line.is_empty() {
            continue;
        }
        let (path, remove_on_upgrade) = if line.starts_with('/') {
            (line, false)
        } else {
            match line.split_once(' ') {
                Some(("remove-on-upgrade", p)) if p.starts_with('/') => (p, true),
                Some((_, p)) if !p.is_empty() && !p.starts_with('/') => {
                    return Err(format!("conffile name {p:?} is not an absolute pathname"))
                }
                Some(("remove-on-upgrade", _)) => {
                    return Err("conffile name missing after flag \"remove-on-upgrade\"".into())
                }
                Some((flag, p)) => return Err(format!("unknown flag {flag:?} for conffile {p:?}")),
                None => {
                    return Err(format!(
                        "conffile name {line:?} is not an absolute pathname"
                    ))
                }
            }
        };
        let normalized =
            normalize_path(path.as_bytes()).map_err(|e| format!("conffile {path:?}: {e}"))?;
        if normalized.is_empty() {
            return Err(format!("conffile {path:?} names the root"));
        }
        out.push(ConffileDecl {
            path: path.to_owned(),
            normalized,
            remove_on_upgrade,
        });
    }
    Ok(out)
}

/// A `.deb` ready to be unpacked: verified, its control archive in memory
/// and its data archive decompressed into the cache and listed.
#[derive(Debug, Clone)]
pub struct PreparedDeb {
    deb_path: PathBuf,
    sha256: String,
    tar_path: Arc<Path>,
    tar_size: u64,
    cache_hit: bool,
    data_compression: Compression,
    control: ControlArchive,
    paragraph: ParagraphBuf,
    name: String,
    version: Version,
    architecture: String,
    multi_arch: MultiArch,
    replaces: Relations,
    conffiles: Vec<ConffileDecl>,
    entries: Vec<TarEntry>,
}

impl PreparedDeb {
    /// The package file.
    pub fn deb_path(&self) -> &Path {
        &self.deb_path
    }

    /// The package file's SHA-256 (lower-case hex).
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The decompressed data archive in the cache; files of the unpacked
    /// tree refer to it.
    pub fn tar_path(&self) -> &Path {
        &self.tar_path
    }

    /// Size of the decompressed data archive.
    pub fn tar_size(&self) -> u64 {
        self.tar_size
    }

    /// Whether the decompressed data archive was already in the cache (so
    /// nothing was decompressed).
    pub fn cache_hit(&self) -> bool {
        self.cache_hit
    }

    /// Compression of the `.deb`'s data member.
    pub fn data_compression(&self) -> Compression {
        self.data_compression
    }

    /// The control archive.
    pub fn control_archive(&self) -> &ControlArchive {
        &self.control
    }

    /// The parsed `control` file.
    pub fn control(&self) -> &ParagraphBuf {
        &self.paragraph
    }

    /// The `Package` field.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `Version` field.
    pub fn version(&self) -> &Version {
        &self.version
    }

    /// The `Architecture` field.
    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    /// The `Multi-Arch` field.
    pub fn multi_arch(&self) -> MultiArch {
        self.multi_arch
    }

    /// The `Replaces` field.
    pub fn replaces(&self) -> &Relations {
        &self.replaces
    }

    /// The `conffiles` control member, parsed.
    pub fn conffiles(&self) -> &[ConffileDecl] {
        &self.conffiles
    }

    /// The data archive's entries, in archive order.
    pub fn entries(&self) -> &[TarEntry] {
        &self.entries
    }
}

/// One line of a package's file list (dpkg's `info/<package>.list`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// The path as the package ships it and dpkg records it: `/` + the
    /// normalised path (`/.` for the root), e.g. `/bin/ls`.
    pub shipped: Box<[u8]>,
    /// Where it is in the tree once parent links are followed, relative to
    /// the root without a leading slash (as [`Tree::walk`] spells paths),
    /// e.g. `usr/bin/ls`. Empty for the root.
    pub canonical: Box<[u8]>,
}

/// A conffile of an unpacked package, as the dpkg status records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conffile {
    /// The path as the package names it (`/etc/foo`).
    pub path: String,
    /// Where it is in the tree (see [`ListEntry::canonical`]).
    pub canonical: Box<[u8]>,
    /// MD5 of the contents (lower-case hex), or `newconffile` for a
    /// `remove-on-upgrade` entry, which is not shipped.
    pub md5: String,
    /// Whether a later package took the file over.
    pub obsolete: bool,
    /// The `remove-on-upgrade` flag.
    pub remove_on_upgrade: bool,
}

/// A package unpacked into a tree: what the dpkg database records about
/// it.
#[derive(Debug, Clone)]
pub struct UnpackedPackage {
    name: String,
    version: Version,
    architecture: String,
    multi_arch: MultiArch,
    sha256: String,
    paragraph: ParagraphBuf,
    control: ControlArchive,
    replaces: Relations,
    files: Vec<ListEntry>,
    conffiles: Vec<Conffile>,
}

impl UnpackedPackage {
    /// The package name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The version.
    pub fn version(&self) -> &Version {
        &self.version
    }

    /// The architecture (`amd64`, `all`, ...).
    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    /// The `Multi-Arch` field.
    pub fn multi_arch(&self) -> MultiArch {
        self.multi_arch
    }

    /// The `.deb`'s SHA-256.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The `control` file's fields, in their original order.
    pub fn control(&self) -> &ParagraphBuf {
        &self.paragraph
    }

    /// The whole control archive (maintainer scripts, `triggers`,
    /// `md5sums`, `shlibs`, `templates`, ...).
    pub fn control_archive(&self) -> &ControlArchive {
        &self.control
    }

    /// The `Replaces` field.
    pub fn replaces(&self) -> &Relations {
        &self.replaces
    }

    /// The package's files, in the order dpkg lists them.
    pub fn files(&self) -> &[ListEntry] {
        &self.files
    }

    /// The conffiles, in the order of the `conffiles` member.
    pub fn conffiles(&self) -> &[Conffile] {
        &self.conffiles
    }

    /// The name dpkg's `info/` files use: `name`, or `name:arch` for a
    /// `Multi-Arch: same` package.
    pub fn info_name(&self) -> String {
        if self.multi_arch == MultiArch::Same {
            format!("{}:{}", self.name, self.architecture)
        } else {
            self.name.clone()
        }
    }

    /// The contents of dpkg's `info/<package>.list`.
    pub fn list_file(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for e in &self.files {
            out.extend_from_slice(&e.shipped);
            out.push(b'\n');
        }
        out
    }

    /// The maintainer scripts the package has (`preinst`, `postinst`,
    /// `prerm`, `postrm`, `config`), in that order.
    pub fn maintainer_scripts(&self) -> impl Iterator<Item = &ControlMember> + '_ {
        ["preinst", "postinst", "prerm", "postrm", "config"]
            .into_iter()
            .filter_map(|n| self.control.get(n))
    }
}

/// Which package owns which path, and every package unpacked so far.
///
/// Paths are keyed by where they are in the tree (after following parent
/// links), so the aliases of merged `/usr` cannot hide a conflict.
#[derive(Debug, Clone)]
pub struct Ownership {
    native_arch: String,
    packages: Vec<UnpackedPackage>,
    owners: HashMap<Box<[u8]>, Vec<usize>>,
    index: HashMap<(String, String), usize>,
}

impl Ownership {
    /// An empty record for a system whose native architecture is
    /// `native_arch` (used to match `Replaces` without an architecture
    /// qualifier, as dpkg does).
    pub fn new(native_arch: impl Into<String>) -> Self {
        Ownership {
            native_arch: native_arch.into(),
            packages: Vec::new(),
            owners: HashMap::new(),
            index: HashMap::new(),
        }
    }

    /// The native architecture.
    pub fn native_arch(&self) -> &str {
        &self.native_arch
    }

    /// The packages, in the order they were unpacked.
    pub fn packages(&self) -> &[UnpackedPackage] {
        &self.packages
    }

    /// Consumes the record, returning the packages.
    pub fn into_packages(self) -> Vec<UnpackedPackage> {
        self.packages
    }

    /// The package `name` (for several `Multi-Arch: same` instances, the
    /// first unpacked).
    pub fn get(&self, name: &str) -> Option<&UnpackedPackage> {
        self.packages.iter().find(|p| p.name == name)
    }

    /// The packages that list the tree path `path` (leading slash
    /// optional; `usr/bin/ls`, not `/bin/ls`).
    pub fn owners_of(&self, path: &[u8]) -> impl Iterator<Item = &UnpackedPackage> + '_ {
        let key = trim_slashes(path);
        self.owners
            .get(key)
            .into_iter()
            .flatten()
            .map(|&i| &self.packages[i])
    }

    /// Number of packages.
    pub fn len(&self) -> usize {
        self.packages.len()
    }

    /// Whether no package was unpacked.
    pub fn is_empty(&self) -> bool {
        self.packages.is_empty()
    }

    fn arch_matches(&self, qualifier: Option<&str>, other: &UnpackedPackage) -> bool {
        let native = |a: &str| -> String {
            if a == "all" {
                self.native_arch.clone()
            } else {
                a.to_owned()
            }
        };
        match qualifier {
            None if other.multi_arch == MultiArch::Foreign => true,
            Some("any") => true,
            q => native(q.unwrap_or(&self.native_arch)) == native(&other.architecture),
        }
    }

    /// Whether `replaces` (of a package being unpacked) replaces `other`,
    /// as dpkg's `does_replace`.
    fn does_replace(&self, replaces: &Relations, other: &UnpackedPackage) -> bool {
        replaces.iter().any(|group| {
            let r = group.first();
            r.name == other.name
                && r.matches_version(&other.version)
                && self.arch_matches(r.arch.as_deref(), other)
        })
    }
}

fn trim_slashes(p: &[u8]) -> &[u8] {
    let start = p.iter().position(|&b| b != b'/').unwrap_or(p.len());
    let end = p.iter().rposition(|&b| b != b'/').map_or(start, |e| e + 1);
    &p[start..end.max(start)]
}

/// Creates the merged-`/usr` layout dpkg expects on Debian 12: the
/// directories `usr/bin`, `usr/sbin`, `usr/lib` and `usr/lib64` (mode
/// 0755, root) and the relative links `bin -> usr/bin`, `sbin -> usr/sbin`,
/// `lib -> usr/lib`, `lib64 -> usr/lib64`, all with time `mtime`.
/// Existing directories and identical links are kept.
///
/// # Errors
/// A path exists with another type or link target.
pub fn merged_usr_skeleton(tree: &mut Tree, mtime: Timestamp) -> Result<(), TreeError> {
    let dir_meta = Metadata::new(0o755).times(mtime);
    for (link, dir) in [
        (&b"bin"[..], &b"usr/bin"[..]),
        (b"sbin", b"usr/sbin"),
        (b"lib", b"usr/lib"),
        (b"lib64", b"usr/lib64"),
    ] {
        tree.create_dir_all(dir, dir_meta.clone())?;
        let root = tree.root();
        match tree.lookup(link) {
            None => {
                tree.add(
                    root,
                    link,
                    Node::symlink(dir.to_vec(), Metadata::new(0o777).times(mtime)),
                )?;
            }
            Some(id) if matches!(&tree.node(id).kind, NodeKind::Symlink(t) if &**t == dir) => {}
            Some(_) => return Err(TreeError::Exists { name: lossy(link) }),
        }
    }
    Ok(())
}

/// Where the SHA-256 of a cached tar is recorded: next to it, with
/// `.sha256` appended.
fn digest_path(tar_path: &Path) -> PathBuf {
    let mut p = tar_path.as_os_str().to_owned();
    p.push(".sha256");
    PathBuf::from(p)
}

/// Whether the cached tar is complete: its SHA-256 is the recorded one.
fn cache_is_valid(tar_path: &Path, digest_path: &Path) -> bool {
    let Ok(recorded) = fs::read_to_string(digest_path) else {
        return false;
    };
    sha256_file(tar_path).is_ok_and(|actual| actual == recorded.trim_end())
}

/// A writer that hashes what goes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Prepares and unpacks `.deb` files; see the [module documentation](self).
#[derive(Debug, Clone)]
pub struct Unpacker {
    cache: PathBuf,
    max_tar_size: u64,
}

impl Unpacker {
    /// The default limit on a decompressed data archive: 16 GiB.
    pub const DEFAULT_MAX_TAR_SIZE: u64 = 16 << 30;

    /// An unpacker whose decompressed archives go under `cache` (created
    /// when needed).
    pub fn new(cache: impl Into<PathBuf>) -> Self {
        Unpacker {
            cache: cache.into(),
            max_tar_size: Self::DEFAULT_MAX_TAR_SIZE,
        }
    }

    /// Sets the limit on a decompressed data archive (a larger one is a
    /// [`DebError::TooLarge`] error).
    #[must_use]
    pub fn max_tar_size(mut self, bytes: u64) -> Self {
        self.max_tar_size = bytes;
        self
    }

    /// The cache directory.
    pub fn cache_dir(&self) -> &Path {
        &self.cache
    }

    /// Where the decompressed data archive of the `.deb` with digest
    /// `sha256` is kept: `<cache>/tar/<sha256>.tar`.
    pub fn cached_tar_path(&self, sha256: &str) -> PathBuf {
        self.cache.join("tar").join(format!("{sha256}.tar"))
    }

    /// Verifies `deb_path` against `sha256`, reads its control archive,
    /// makes sure its decompressed data archive is in the cache and lists
    /// it. Safe to call from several threads at once, even for the same
    /// package.
    ///
    /// # Security
    /// The whole file is hashed before anything else is read, so nothing
    /// unverified is parsed. Decompression stops at
    /// [`max_tar_size`](Self::max_tar_size). A cached tar is named by the
    /// package's digest, and used only if its own SHA-256 matches the one
    /// recorded next to it (`<sha256>.tar.sha256`) when it was written;
    /// otherwise (a crash left it incomplete, it was damaged or edited) it
    /// is decompressed again. Nothing is synced to disk: the check
    /// replaces an `fsync`, which would double the time of a cold run.
    ///
    /// # Errors
    /// [`UnpackError`]: a digest mismatch, a malformed package or control
    /// file, or a cache directory that cannot be written.
    pub fn prepare(&self, deb_path: &Path, sha256: &str) -> Result<PreparedDeb> {
        if !is_sha256(sha256) {
            return Err(UnpackError::BadDigest {
                sha256: sha256.to_owned(),
            });
        }
        let sha256 = sha256.to_ascii_lowercase();
        let actual = sha256_file(deb_path).map_err(|source| UnpackError::Io {
            path: deb_path.to_path_buf(),
            source,
        })?;
        if actual != sha256 {
            return Err(UnpackError::DigestMismatch {
                path: deb_path.to_path_buf(),
                expected: sha256,
                actual,
            });
        }
        let deb = DebFile::open(deb_path)?;
        let control = deb.read_control()?;
        let parsed = parse_control(deb_path, &control)?;

        let tar_path = self.cached_tar_path(&sha256);
        let digest_path = digest_path(&tar_path);
        let cache_hit = cache_is_valid(&tar_path, &digest_path);
        if !cache_hit {
            self.decompress(&deb, &tar_path, &digest_path)?;
        }
        let tar = File::open(&tar_path).map_err(|source| UnpackError::Cache {
            path: tar_path.clone(),
            source,
        })?;
        let tar_size = tar
            .metadata()
            .map_err(|source| UnpackError::Cache {
                path: tar_path.clone(),
                source,
            })?
            .len();
        let entries = read_tar_index(&tar).map_err(|source| UnpackError::DataTar {
            deb: deb_path.to_path_buf(),
            tar: tar_path.clone(),
            source,
        })?;
        for c in &parsed.conffiles {
            let shipped = entries.iter().any(|e| {
                e.path == c.normalized
                    && matches!(
                        e.kind,
                        TarEntryKind::File { .. } | TarEntryKind::HardLink(_)
                    )
            });
            if !shipped && !c.remove_on_upgrade {
                return Err(UnpackError::ControlMember {
                    path: deb_path.to_path_buf(),
                    member: "conffiles",
                    reason: format!("conffile {:?} is not a file of the package", c.path),
                });
            }
        }
        Ok(PreparedDeb {
            deb_path: deb_path.to_path_buf(),
            sha256,
            tar_path: tar_path.into(),
            tar_size,
            cache_hit,
            data_compression: deb.data_member().compression,
            control,
            paragraph: parsed.paragraph,
            name: parsed.name,
            version: parsed.version,
            architecture: parsed.architecture,
            multi_arch: parsed.multi_arch,
            replaces: parsed.replaces,
            conffiles: parsed.conffiles,
            entries,
        })
    }

    fn decompress(&self, deb: &DebFile, tar_path: &Path, digest_path: &Path) -> Result<()> {
        let dir = tar_path.parent().unwrap_or(Path::new("."));
        let cache_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| UnpackError::Cache { path, source }
        };
        fs::create_dir_all(dir).map_err(cache_err(dir))?;
        let temp = || {
            tempfile::Builder::new()
                .prefix(".partial-")
                .tempfile_in(dir)
                .map_err(cache_err(dir))
        };
        let mut out = HashingWriter {
            inner: BufWriter::with_capacity(1 << 20, temp()?),
            hasher: Sha256::new(),
        };
        deb.copy_data_tar(&mut out, self.max_tar_size)?;
        let digest = hex(&out.hasher.finalize());
        let tmp = out.inner.into_inner().map_err(|e| UnpackError::Cache {
            path: tar_path.to_path_buf(),
            source: e.into_error(),
        })?;
        tmp.persist(tar_path).map_err(|e| UnpackError::Cache {
            path: tar_path.to_path_buf(),
            source: e.error,
        })?;
        // Recorded only once the tar is complete and in place.
        let mut record = temp()?;
        record
            .write_all(format!("{digest}\n").as_bytes())
            .map_err(cache_err(record.path()))?;
        record
            .persist(digest_path)
            .map_err(|e| UnpackError::Cache {
                path: digest_path.to_path_buf(),
                source: e.error,
            })?;
        Ok(())
    }

    /// Prepares every `(path, sha256)` of `debs` using at most `threads`
    /// threads (0: as many as the machine has). The largest files start
    /// first so that one big package does not finish last. Results are in
    /// the order of `debs`; every package is attempted, and the error
    /// returned is that of the first failing package in that order.
    ///
    /// # Errors
    /// As [`prepare`](Self::prepare).
    pub fn prepare_all<P, S>(&self, debs: &[(P, S)], threads: usize) -> Result<Vec<PreparedDeb>>
    where
        P: AsRef<Path> + Sync,
        S: AsRef<str> + Sync,
    {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        }
        .min(debs.len())
        .max(1);
        let mut order: Vec<(u64, usize)> = debs
            .iter()
            .enumerate()
            .map(|(i, (p, _))| (fs::metadata(p.as_ref()).map_or(0, |m| m.len()), i))
            .collect();
        order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Option<Result<PreparedDeb>>>> =
            Mutex::new((0..debs.len()).map(|_| None).collect());
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(_, i)) = order.get(k) else { break };
                    let (p, sha) = &debs[i];
                    let r = self.prepare(p.as_ref(), sha.as_ref());
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                });
            }
        });
        let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
        results
            .into_iter()
            .map(|r| r.expect("every package is prepared"))
            .collect()
    }

    /// Adds the package `deb` to `tree` and records it in `ownership`;
    /// returns the record. See the [module documentation](self) for the
    /// semantics. Deterministic: the same trees and packages in the same
    /// order give the same result.
    ///
    /// # Security
    /// Nothing is written to the host. Every path is normalised and
    /// resolved inside the tree; a symbolic link leading above the root is
    /// an error. Symbolic link targets are stored as data.
    ///
    /// # Errors
    /// [`UnpackError`]; on error the tree and `ownership` are left as they
    /// were (see the [module documentation](self)).
    pub fn unpack_into<'o>(
        &self,
        tree: &mut Tree,
        deb: &PreparedDeb,
        ownership: &'o mut Ownership,
    ) -> Result<&'o UnpackedPackage> {
        let key = (deb.name.clone(), deb.architecture.clone());
        if ownership.index.contains_key(&key) {
            return Err(UnpackError::AlreadyUnpacked {
                package: deb.name.clone(),
                architecture: deb.architecture.clone(),
            });
        }
        let mut op = Operation {
            tree,
            own: ownership,
            deb,
            journal: Vec::new(),
            files: Vec::new(),
            claims: Vec::new(),
            claimed: HashSet::new(),
            takeovers: Vec::new(),
        };
        let outcome = op.run();
        let Operation {
            tree,
            journal,
            files,
            claims,
            takeovers,
            ..
        } = op;
        let conffiles = match outcome {
            Ok(c) => c,
            Err(e) => {
                rollback(tree, journal);
                return Err(e);
            }
        };
        let idx = ownership.packages.len();
        for (old, canon) in takeovers {
            let pkg = &mut ownership.packages[old];
            pkg.files.retain(|f| f.canonical != canon);
            for c in &mut pkg.conffiles {
                if c.canonical == canon {
                    c.obsolete = true;
                }
            }
            if let Some(v) = ownership.owners.get_mut(&canon) {
                v.retain(|&o| o != old);
            }
        }
        for canon in claims {
            let v = ownership.owners.entry(canon).or_default();
            if !v.contains(&idx) {
                v.push(idx);
            }
        }
        ownership.packages.push(UnpackedPackage {
            name: deb.name.clone(),
            version: deb.version.clone(),
            architecture: deb.architecture.clone(),
            multi_arch: deb.multi_arch,
            sha256: deb.sha256.clone(),
            paragraph: deb.paragraph.clone(),
            control: deb.control.clone(),
            replaces: deb.replaces.clone(),
            files,
            conffiles,
        });
        ownership.index.insert(key, idx);
        Ok(&ownership.packages[idx])
    }
}

struct ParsedControl {
    paragraph: ParagraphBuf,
    name: String,
    version: Version,
    architecture: String,
    multi_arch: MultiArch,
    replaces: Relations,
    conffiles: Vec<ConffileDecl>,
}

fn parse_control(path: &Path, control: &ControlArchive) -> Result<ParsedControl> {
    let bad = |member: &'static str, reason: String| UnpackError::ControlMember {
        path: path.to_path_buf(),
        member,
        reason,
    };
    let cerr = |source| UnpackError::Control {
        path: path.to_path_buf(),
        source,
    };
    let text = std::str::from_utf8(&control.control().data)
        .map_err(|e| bad("control", format!("not UTF-8: {e}")))?;
    let paragraph = Paragraph::parse(text).map_err(cerr)?;
    let field = |name: &'static str| {
        paragraph
            .get(name)
            .filter(|v| !v.is_empty())
            .ok_or(crate::Error::MissingField { field: name })
            .map_err(cerr)
    };
    let name = field("Package")?;
    // dpkg's `pkg_name_is_illegal`.
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-+._".contains(&b))
    {
        return Err(bad("control", format!("invalid package name {name:?}")));
    }
    let version = Version::parse_lenient(field("Version")?).map_err(cerr)?;
    let architecture = field("Architecture")?;
    if architecture.contains(char::is_whitespace) {
        return Err(bad(
            "control",
            format!("invalid architecture {architecture:?}"),
        ));
    }
    let multi_arch = match paragraph
        .get("Multi-Arch")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("no") => MultiArch::No,
        Some("same") => MultiArch::Same,
        Some("foreign") => MultiArch::Foreign,
        Some("allowed") => MultiArch::Allowed,
        Some(other) => {
            return Err(bad(
                "control",
                format!("invalid Multi-Arch value {other:?}"),
            ));
        }
    };
    let replaces = match paragraph.get("Replaces") {
        Some(v) => Relations::parse("Replaces", v).map_err(cerr)?,
        None => Relations::new(),
    };
    if let Some(g) = replaces.iter().find(|g| g.len() > 1) {
        return Err(bad(
            "control",
            format!("alternatives ('|') are not allowed in Replaces: {g}"),
        ));
    }
    let conffiles = match control.get("conffiles") {
        Some(m) => parse_conffiles(&m.data).map_err(|r| bad("conffiles", r))?,
        None => Vec::new(),
    };
    Ok(ParsedControl {
        name: name.to_owned(),
        version,
        architecture: architecture.to_owned(),
        multi_arch,
        replaces,
        conffiles,
        paragraph: ParagraphBuf::from(&paragraph),
    })
}

/// One tree edit, to undo on failure.
enum Undo {
    Added {
        parent: NodeId,
        name: Box<[u8]>,
    },
    Removed {
        parent: NodeId,
        name: Box<[u8]>,
        node: NodeId,
    },
    Meta {
        node: NodeId,
        meta: Metadata,
    },
}

fn rollback(tree: &mut Tree, journal: Vec<Undo>) {
    for u in journal.into_iter().rev() {
        // Undoing in reverse order restores a state the tree accepted, so
        // these cannot fail.
        let _ = match u {
            Undo::Added { parent, name } => tree.remove(parent, &name).map(|_| ()),
            Undo::Removed { parent, name, node } => tree.link(parent, &name, node),
            Undo::Meta { node, meta } => {
                tree.node_mut(node).meta = meta;
                Ok(())
            }
        };
    }
}

/// A directory reached while resolving a path: `(node, name)` from the
/// root down.
type Stack = Vec<(NodeId, Box<[u8]>)>;

fn stack_path(stack: &Stack, last: Option<&[u8]>) -> Vec<u8> {
    let mut p = Vec::new();
    for n in stack.iter().map(|(_, n)| &**n).chain(last) {
        if !p.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(n);
    }
    p
}

fn top(tree: &Tree, stack: &Stack) -> NodeId {
    stack.last().map_or(tree.root(), |e| e.0)
}

/// Resolves `path` (relative to the directory `start`, or to the root if
/// absolute) to a directory, following symbolic links in every component.
fn walk(tree: &Tree, start: &Stack, path: &[u8]) -> Result<Stack, ResolveError> {
    let mut stack = if path.first() == Some(&b'/') {
        Vec::new()
    } else {
        start.clone()
    };
    let mut pending: Vec<Box<[u8]>> = path.split(|&b| b == b'/').rev().map(Box::from).collect();
    let mut hops = 0;
    let mut last_link = String::new();
    while let Some(c) = pending.pop() {
        match &*c {
            b"" | b"." => continue,
            b".." => {
                if stack.pop().is_none() {
                    return Err(ResolveError::Escape { link: last_link });
                }
                continue;
            }
            _ => {}
        }
        let at = || lossy(&stack_path(&stack, Some(&c)));
        let NodeKind::Dir(d) = &tree.node(top(tree, &stack)).kind else {
            unreachable!("only directories are pushed")
        };
        let child = d
            .get(&c)
            .ok_or_else(|| ResolveError::Missing { at: at() })?;
        match &tree.node(child).kind {
            NodeKind::Dir(_) => stack.push((child, c)),
            NodeKind::Symlink(target) => {
                hops += 1;
                last_link = at();
                if hops > MAX_SYMLINK_HOPS {
                    return Err(ResolveError::Loop { link: last_link });
                }
                if target.first() == Some(&b'/') {
                    stack.clear();
                }
                pending.extend(target.split(|&b| b == b'/').rev().map(Box::from));
            }
            _ => return Err(ResolveError::NotADirectory { at: at() }),
        }
    }
    Ok(stack)
}

/// What to do with an existing non-directory entry.
enum Decision {
    Replace,
    Keep,
}

struct Operation<'a> {
    tree: &'a mut Tree,
    own: &'a Ownership,
    deb: &'a PreparedDeb,
    journal: Vec<Undo>,
    files: Vec<ListEntry>,
    claims: Vec<Box<[u8]>>,
    claimed: HashSet<Box<[u8]>>,
    takeovers: Vec<(usize, Box<[u8]>)>,
}

impl Operation<'_> {
    fn package(&self) -> String {
        self.deb.name.clone()
    }

    fn run(&mut self) -> Result<Vec<Conffile>> {
        let deb = self.deb;
        let (links, others): (Vec<&TarEntry>, Vec<&TarEntry>) = deb
            .entries
            .iter()
            .partition(|e| matches!(e.kind, TarEntryKind::Symlink(_)));
        for e in others.into_iter().chain(links) {
            self.apply(e)?;
        }
        let mut out = Vec::with_capacity(deb.conffiles.len());
        for c in &deb.conffiles {
            out.push(self.conffile(c)?);
        }
        Ok(out)
    }

    fn resolve_err(&self, e: &TarEntry, reason: ResolveError) -> UnpackError {
        UnpackError::Resolve {
            package: self.package(),
            path: lossy(&e.list_path()),
            reason,
        }
    }

    fn tree_err(&self, path: &[u8], source: TreeError) -> UnpackError {
        UnpackError::Tree {
            package: self.package(),
            path: lossy(&list_path(path)),
            source,
        }
    }

    fn add(&mut self, parent: NodeId, name: &[u8], node: Node, shipped: &[u8]) -> Result<NodeId> {
        let id = self
            .tree
            .add(parent, name, node)
            .map_err(|e| self.tree_err(shipped, e))?;
        self.journal.push(Undo::Added {
            parent,
            name: name.into(),
        });
        Ok(id)
    }

    fn remove(&mut self, parent: NodeId, name: &[u8], shipped: &[u8]) -> Result<()> {
        let node = self
            .tree
            .remove(parent, name)
            .map_err(|e| self.tree_err(shipped, e))?;
        self.journal.push(Undo::Removed {
            parent,
            name: name.into(),
            node,
        });
        Ok(())
    }

    fn list(&mut self, e: &TarEntry, canonical: Vec<u8>) {
        let canonical: Box<[u8]> = canonical.into();
        if self.claimed.insert(canonical.clone()) {
            self.claims.push(canonical.clone());
        }
        self.files.push(ListEntry {
            shipped: e.list_path().into(),
            canonical,
        });
    }

    /// The overwrite check for an existing path (dpkg's `tarobject`).
    fn settle(&mut self, e: &TarEntry, canonical: &[u8]) -> Result<Decision> {
        let Some(owners) = self.own.owners.get(canonical) else {
            return Ok(Decision::Replace);
        };
        let mut keep = false;
        for &o in owners {
            let other = &self.own.packages[o];
            if other.name == self.deb.name
                && other.multi_arch == MultiArch::Same
                && self.deb.multi_arch == MultiArch::Same
            {
                continue;
            }
            if self.own.does_replace(&self.deb.replaces, other) {
                self.takeovers.push((o, canonical.into()));
                continue;
            }
            let reverse = other.replaces.iter().any(|g| {
                let r = g.first();
                r.name == self.deb.name
                    && r.matches_version(&self.deb.version)
                    && match r.arch.as_deref() {
                        None | Some("any") => true,
                        Some(a) => {
                            a == self.deb.architecture
                                || (self.deb.architecture == "all" && a == self.own.native_arch)
                        }
                    }
            });
            if reverse {
                keep = true;
                continue;
            }
            return Err(UnpackError::Conflict {
                package: self.package(),
                path: lossy(&e.list_path()),
                canonical: lossy(&list_path(canonical)),
                other: other.name.clone(),
                other_version: other.version.to_string(),
            });
        }
        Ok(if keep {
            Decision::Keep
        } else {
            Decision::Replace
        })
    }

    fn meta(&self, e: &TarEntry) -> Metadata {
        let t = Timestamp::from_secs(e.mtime);
        Metadata::new(e.mode).owner(e.uid, e.gid).times(t)
    }

    fn apply(&mut self, e: &TarEntry) -> Result<()> {
        if e.path.is_empty() {
            // The root directory: always there, never changed.
            self.list(e, Vec::new());
            return Ok(());
        }
        let (parent_path, name): (&[u8], &[u8]) = match e.path.iter().rposition(|&b| b == b'/') {
            Some(i) => (&e.path[..i], &e.path[i + 1..]),
            None => (&[], &e.path),
        };
        let stack =
            walk(self.tree, &Vec::new(), parent_path).map_err(|r| self.resolve_err(e, r))?;
        let parent = top(self.tree, &stack);
        let canonical = stack_path(&stack, Some(name));
        let existing = match &self.tree.node(parent).kind {
            NodeKind::Dir(d) => d.get(name),
            _ => unreachable!("walk returns directories"),
        };
        if let Some(id) = existing {
            let keep_existing_dir = match (&self.tree.node(id).kind, &e.kind) {
                (NodeKind::Dir(_), TarEntryKind::Dir | TarEntryKind::Symlink(_)) => true,
                (NodeKind::Dir(_), _) => {
                    return Err(UnpackError::ReplaceDirectory {
                        package: self.package(),
                        path: lossy(&e.list_path()),
                    })
                }
                (NodeKind::Symlink(_), TarEntryKind::Dir) => walk(self.tree, &stack, name).is_ok(),
                (NodeKind::Symlink(old), TarEntryKind::Symlink(new)) => {
                    match (walk(self.tree, &stack, old), walk(self.tree, &stack, new)) {
                        (Ok(a), Ok(b)) => top(self.tree, &a) == top(self.tree, &b),
                        _ => false,
                    }
                }
                _ => false,
            };
            if keep_existing_dir {
                self.list(e, canonical);
                return Ok(());
            }
            let decision = if self.claimed.contains(&*canonical) {
                // Shipped twice by this package: the later entry wins.
                Decision::Replace
            } else {
                self.settle(e, &canonical)?
            };
            match decision {
                Decision::Keep => return Ok(()),
                Decision::Replace => self.remove(parent, name, &e.path)?,
            }
        }
        let meta = self.meta(e);
        match &e.kind {
            TarEntryKind::File { offset, size } => {
                let data = FileData::from_host(self.deb.tar_path.clone(), *offset, *size);
                self.add(parent, name, Node::file(data, meta), &e.path)?;
            }
            TarEntryKind::Dir => {
                self.add(parent, name, Node::dir(meta), &e.path)?;
            }
            TarEntryKind::Symlink(target) => {
                let mut meta = meta;
                meta.mode = 0o777;
                self.add(parent, name, Node::symlink(target.clone(), meta), &e.path)?;
            }
            TarEntryKind::CharDevice(d) => {
                let node = Node {
                    kind: NodeKind::CharDevice(*d),
                    meta,
                };
                self.add(parent, name, node, &e.path)?;
            }
            TarEntryKind::BlockDevice(d) => {
                let node = Node {
                    kind: NodeKind::BlockDevice(*d),
                    meta,
                };
                self.add(parent, name, node, &e.path)?;
            }
            TarEntryKind::Fifo => {
                let node = Node {
                    kind: NodeKind::Fifo,
                    meta,
                };
                self.add(parent, name, node, &e.path)?;
            }
            TarEntryKind::HardLink(target) => {
                let hard_err = |reason: String| UnpackError::HardLink {
                    package: self.deb.name.clone(),
                    path: lossy(&e.list_path()),
                    target: lossy(&list_path(target)),
                    reason,
                };
                let id = self
                    .lookup_no_follow(target)
                    .map_err(|r| hard_err(r.to_string()))?;
                if matches!(self.tree.node(id).kind, NodeKind::Dir(_)) {
                    return Err(hard_err("the target is a directory".into()));
                }
                self.tree
                    .link(parent, name, id)
                    .map_err(|err| self.tree_err(&e.path, err))?;
                self.journal.push(Undo::Added {
                    parent,
                    name: name.into(),
                });
                // dpkg applies the link entry's owner, mode and time to the
                // (shared) inode, as for any other entry.
                let node = self.tree.node_mut(id);
                let new = Metadata {
                    xattrs: node.meta.xattrs.clone(),
                    ..meta
                };
                let old = std::mem::replace(&mut node.meta, new);
                self.journal.push(Undo::Meta {
                    node: id,
                    meta: old,
                });
            }
        }
        self.list(e, canonical);
        Ok(())
    }

    /// Finds the node at the normalised path `path`: parents resolved
    /// through links, the last component not followed.
    fn lookup_no_follow(&self, path: &[u8]) -> Result<NodeId, ResolveError> {
        let (parent_path, name): (&[u8], &[u8]) = match path.iter().rposition(|&b| b == b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (&[], path),
        };
        let stack = walk(self.tree, &Vec::new(), parent_path)?;
        let NodeKind::Dir(d) = &self.tree.node(top(self.tree, &stack)).kind else {
            unreachable!("walk returns directories")
        };
        d.get(name).ok_or_else(|| ResolveError::Missing {
            at: lossy(&stack_path(&stack, Some(name))),
        })
    }

    fn conffile(&self, c: &ConffileDecl) -> Result<Conffile> {
        let bad = |reason: String| UnpackError::Conffile {
            package: self.deb.name.clone(),
            path: c.path.clone(),
            reason,
        };
        let (parent_path, name): (&[u8], &[u8]) =
            match c.normalized.iter().rposition(|&b| b == b'/') {
                Some(i) => (&c.normalized[..i], &c.normalized[i + 1..]),
                None => (&[], &c.normalized),
            };
        if c.remove_on_upgrade {
            // Not shipped, so its directory need not exist either.
            let canonical: Box<[u8]> = match walk(self.tree, &Vec::new(), parent_path) {
                Ok(stack) => stack_path(&stack, Some(name)).into(),
                Err(_) => c.normalized.clone(),
            };
            return Ok(Conffile {
                path: c.path.clone(),
                canonical,
                md5: "newconffile".into(),
                obsolete: false,
                remove_on_upgrade: true,
            });
        }
        let stack = walk(self.tree, &Vec::new(), parent_path).map_err(|r| bad(r.to_string()))?;
        let canonical: Box<[u8]> = stack_path(&stack, Some(name)).into();
        let id = self
            .lookup_no_follow(&c.normalized)
            .map_err(|r| bad(r.to_string()))?;
        let NodeKind::File(data) = &self.tree.node(id).kind else {
            return Err(bad("not a regular file in the tree".into()));
        };
        let md5 = md5_of(data).map_err(|err| bad(format!("reading its contents: {err}")))?;
        Ok(Conffile {
            path: c.path.clone(),
            canonical,
            md5,
            obsolete: false,
            remove_on_upgrade: false,
        })
    }
}

/// MD5 of a file's contents (lower-case hex).
///
/// # Errors
/// Reading a host-backed file fails.
pub fn md5_of(data: &FileData) -> io::Result<String> {
    let mut reader = data.open()?;
    let mut h = Md5::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut pos = 0u64;
    while pos < data.len() {
        let n = (data.len() - pos).min(buf.len() as u64) as usize;
        reader.read_exact_at(pos, &mut buf[..n])?;
        h.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(hex(&h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conffiles_parse_like_dpkg() {
        let c = parse_conffiles(b"/etc/a\n\n  \nremove-on-upgrade /etc/b\n/etc/c  \n").unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].path, "/etc/a");
        assert!(c[1].remove_on_upgrade);
        assert_eq!(&*c[2].normalized, b"etc/c");
        assert!(parse_conffiles(b"/etc/a").unwrap_err().contains("newline"));
        assert!(parse_conffiles(b"etc/a\n")
            .unwrap_err()
            .contains("absolute"));
        assert!(parse_conffiles(b"frob /etc/a\n")
            .unwrap_err()
            .contains("unknown flag"));
        assert!(parse_conffiles(b"/etc/../x\n").is_err());
        assert!(parse_conffiles(b"").unwrap().is_empty());
    }

    fn dir(tree: &mut Tree, path: &[u8]) -> NodeId {
        tree.create_dir_all(path, Metadata::new(0o755)).unwrap()
    }

    #[test]
    fn walk_follows_links_and_refuses_escapes() {
        let mut t = Tree::new(Metadata::new(0o755));
        merged_usr_skeleton(&mut t, Timestamp::from_secs(1)).unwrap();
        let gnu = dir(&mut t, b"usr/lib/x86_64-linux-gnu");
        let root = t.root();
        t.add(
            root,
            b"abs",
            Node::symlink(b"/usr/lib".to_vec(), Metadata::new(0o777)),
        )
        .unwrap();
        t.add(
            root,
            b"up",
            Node::symlink(b"../../..".to_vec(), Metadata::new(0o777)),
        )
        .unwrap();
        t.add(
            root,
            b"loop",
            Node::symlink(b"loop".to_vec(), Metadata::new(0o777)),
        )
        .unwrap();
        let s = walk(&t, &Vec::new(), b"lib/x86_64-linux-gnu").unwrap();
        assert_eq!(top(&t, &s), gnu);
        assert_eq!(stack_path(&s, None), b"usr/lib/x86_64-linux-gnu");
        let s = walk(&t, &Vec::new(), b"abs/x86_64-linux-gnu").unwrap();
        assert_eq!(top(&t, &s), gnu);
        let s = walk(&t, &Vec::new(), b"bin/../lib").unwrap();
        assert_eq!(stack_path(&s, Some(b"x")), b"usr/lib/x");
        assert_eq!(
            walk(&t, &Vec::new(), b"up/etc"),
            Err(ResolveError::Escape { link: "up".into() })
        );
        assert!(matches!(
            walk(&t, &Vec::new(), b"loop/x"),
            Err(ResolveError::Loop { .. })
        ));
        assert_eq!(
            walk(&t, &Vec::new(), b"usr/nope/x"),
            Err(ResolveError::Missing {
                at: "usr/nope".into()
            })
        );
        // The skeleton is idempotent.
        merged_usr_skeleton(&mut t, Timestamp::from_secs(1)).unwrap();
        assert_eq!(trim_slashes(b"/usr/bin/"), b"usr/bin");
        assert_eq!(trim_slashes(b"/"), b"");
    }

    #[test]
    fn md5_of_contents() {
        let d = FileData::from_bytes(b"abc".to_vec());
        assert_eq!(md5_of(&d).unwrap(), "900150983cd24fb0d6963f7d28e17f72");
    }
}
