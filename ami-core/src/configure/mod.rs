//! Native configuration: what the maintainer scripts and triggers of a
//! Debian package set would do on a fresh install, reproduced directly on a
//! [`Tree`] without running anything.
//!
//! Each module handles one family of effects:
//!
//! * [`accounts`]: `/etc/passwd`, `/etc/group`, `/etc/shadow`,
//!   `/etc/gshadow` from base-passwd's master files, the system users and
//!   groups the packages create, and `sysusers.d`;
//! * [`pam`]: `pam-auth-update`'s merge of `/usr/share/pam-configs` into the
//!   `/etc/pam.d/common-*` files;
//! * [`system`]: the small file effects (templates copied to `/etc`, empty
//!   state files, base-files' skeleton, stat overrides, `ping`'s file
//!   capability, `/etc/shells`, `sshd_config` with its ucf state);
//! * [`units`]: unit enablement from `[Install]` sections with
//!   `deb-systemd-helper`'s state;
//! * [`alternatives`]: `update-alternatives --install` and dash's
//!   diversions;
//! * [`effects`]: the policy tying it together: the table of reviewed
//!   scripts (pinned by SHA-256), [`effects::account_for`] reporting every
//!   script nobody reviewed, and [`effects::apply`] running all of the
//!   above for a package set;
//! * [`initramfs`]: the initramfs (a gzip-compressed cpio archive with a
//!   static busybox, the storage modules in dependency order and an
//!   `/init` script), written with [`cpio`]'s newc writer.
//!
//! The helpers here ([`read_file`], [`write_file`], [`resolve`]) work on
//! paths inside the tree and follow symlinks in intermediate components the
//! way the kernel would inside the image (so `/bin/x` finds `/usr/bin/x` on a
//! merged-/usr tree).

use crate::{FileData, Metadata, Node, NodeId, NodeKind, Timestamp, Tree, TreeError};
use std::io;

pub mod accounts;
pub mod alternatives;
pub mod cpio;
pub mod depmod;
pub mod effects;
pub mod initramfs;
pub mod pam;
pub mod project;
pub mod system;
pub mod units;

/// Errors of the native configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigureError {
    /// A tree operation failed.
    #[error("tree: {0}")]
    Tree(#[from] TreeError),
    /// Reading a file's contents failed.
    #[error("reading {path}: {source}")]
    Io {
        /// The path inside the tree.
        path: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A file the configuration needs is not in the tree.
    #[error("{path} is missing from the tree")]
    Missing {
        /// The path inside the tree.
        path: String,
    },
    /// A file in the tree could not be parsed.
    #[error("{path}:{line}: {message}")]
    Parse {
        /// The path inside the tree.
        path: String,
        /// 1-based line number (0 when not tied to a line).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// An account operation was refused (name taken, no free id, ...).
    #[error("accounts: {0}")]
    Accounts(String),
}

/// Maximum number of symlinks followed while resolving one path.
const MAX_SYMLINKS: usize = 40;

/// Resolves `path` (absolute, inside the tree) to a node, following
/// symlinks in every component except the last one. Returns `None` when a
/// component does not exist, is not a directory, or the symlinks loop.
pub fn resolve(tree: &Tree, path: &[u8]) -> Option<NodeId> {
    resolve_inner(tree, path, false)
}

/// Like [`resolve`], but also follows a symlink in the last component.
pub fn resolve_follow(tree: &Tree, path: &[u8]) -> Option<NodeId> {
    resolve_inner(tree, path, true)
}

fn resolve_inner(tree: &Tree, path: &[u8], follow_last: bool) -> Option<NodeId> {
    // Stack of components still to walk, reversed (next on top).
    let mut todo: Vec<Vec<u8>> = components(path).rev().map(<[u8]>::to_vec).collect();
    let mut stack: Vec<NodeId> = vec![tree.root()];
    let mut followed = 0;
    while let Some(comp) = todo.pop() {
        if comp == b".." {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        let cur = *stack.last()?;
        let NodeKind::Dir(d) = &tree.node(cur).kind else {
            return None;
        };
        let next = d.get(&comp)?;
        if let NodeKind::Symlink(target) = &tree.node(next).kind {
            if !todo.is_empty() || follow_last {
                followed += 1;
                if followed > MAX_SYMLINKS {
                    return None;
                }
                if target.first() == Some(&b'/') {
                    stack.truncate(1);
                }
                todo.extend(components(target).rev().map(<[u8]>::to_vec));
                continue;
            }
        }
        stack.push(next);
    }
    stack.last().copied()
}

/// The canonical absolute path of `path` (every symlink followed), like
/// `realpath`. Returns `None` when a component does not exist.
pub fn realpath(tree: &Tree, path: &[u8]) -> Option<Vec<u8>> {
    let mut todo: Vec<Vec<u8>> = components(path).rev().map(<[u8]>::to_vec).collect();
    let mut stack: Vec<(NodeId, Vec<u8>)> = vec![(tree.root(), Vec::new())];
    let mut followed = 0;
    while let Some(comp) = todo.pop() {
        if comp == b".." {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        let cur = stack.last()?.0;
        let NodeKind::Dir(d) = &tree.node(cur).kind else {
            return None;
        };
        let next = d.get(&comp)?;
        if let NodeKind::Symlink(target) = &tree.node(next).kind {
            followed += 1;
            if followed > MAX_SYMLINKS {
                return None;
            }
            if target.first() == Some(&b'/') {
                stack.truncate(1);
            }
            todo.extend(components(target).rev().map(<[u8]>::to_vec));
            continue;
        }
        stack.push((next, comp));
    }
    if stack.len() == 1 {
        return Some(b"/".to_vec());
    }
    let mut out = Vec::new();
    for (_, name) in &stack[1..] {
        out.push(b'/');
        out.extend_from_slice(name);
    }
    Some(out)
}

fn components(path: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
}

/// Splits an absolute path into its parent directory and last name.
fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    let trimmed = path.strip_suffix(b"/").unwrap_or(path);
    match trimmed.iter().rposition(|&b| b == b'/') {
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => (b"", trimmed),
    }
}

/// Reads the whole contents of the regular file at `path` (symlinks
/// followed). Returns `Ok(None)` when there is no such file.
///
/// # Errors
/// The path names something other than a regular file, or reading its
/// contents from the host fails.
pub fn read_file(tree: &Tree, path: &str) -> Result<Option<Vec<u8>>, ConfigureError> {
    let Some(id) = resolve_follow(tree, path.as_bytes()) else {
        return Ok(None);
    };
    let NodeKind::File(data) = &tree.node(id).kind else {
        return Err(ConfigureError::Parse {
            path: path.to_owned(),
            line: 0,
            message: "not a regular file".into(),
        });
    };
    let io_err = |source| ConfigureError::Io {
        path: path.to_owned(),
        source,
    };
    let len = usize::try_from(data.len()).map_err(|_| {
        io_err(io::Error::new(
            io::ErrorKind::InvalidData,
            "file too large to read into memory",
        ))
    })?;
    let mut buf = vec![0; len];
    data.open()
        .and_then(|mut r| r.read_exact_at(0, &mut buf))
        .map_err(io_err)?;
    Ok(Some(buf))
}

/// Reads a file that must exist.
///
/// # Errors
/// As [`read_file`], plus [`ConfigureError::Missing`].
pub fn read_required(tree: &Tree, path: &str) -> Result<Vec<u8>, ConfigureError> {
    read_file(tree, path)?.ok_or_else(|| ConfigureError::Missing {
        path: path.to_owned(),
    })
}

/// Parent directories created by the helpers: 0755 root:root.
fn dir_meta(epoch: Timestamp) -> Metadata {
    Metadata::new(0o755).times(epoch)
}

/// Resolves (creating missing directories 0755 root:root) the directory
/// `dir`, following symlinks.
fn ensure_dir(tree: &mut Tree, dir: &[u8], epoch: Timestamp) -> Result<NodeId, ConfigureError> {
    if let Some(id) = resolve_follow(tree, dir) {
        if matches!(tree.node(id).kind, NodeKind::Dir(_)) {
            return Ok(id);
        }
    }
    // Walk the longest existing (resolved) prefix, then create the rest.
    let mut cur = tree.root();
    let mut prefix = Vec::new();
    for comp in components(dir) {
        prefix.push(b'/');
        prefix.extend_from_slice(comp);
        cur = match resolve_follow(tree, &prefix) {
            Some(id) => id,
            None => tree.add(cur, comp, Node::dir(dir_meta(epoch)))?,
        };
    }
    match tree.node(cur).kind {
        NodeKind::Dir(_) => Ok(cur),
        _ => Err(TreeError::NotADirectory {
            name: String::from_utf8_lossy(dir).into_owned(),
        }
        .into()),
    }
}

/// Puts `node` at `path`, replacing whatever was there (the parent's
/// symlinks are followed, missing parents are created 0755 root:root).
///
/// # Errors
/// A parent component is not a directory.
pub fn put_node(
    tree: &mut Tree,
    path: &str,
    node: Node,
    epoch: Timestamp,
) -> Result<NodeId, ConfigureError> {
    let (parent, name) = split_parent(path.as_bytes());
    let dir = ensure_dir(tree, parent, epoch)?;
    if let NodeKind::Dir(d) = &tree.node(dir).kind {
        if d.get(name).is_some() {
            tree.remove(dir, name)?;
        }
    }
    Ok(tree.add(dir, name, node)?)
}

/// Writes a regular file at `path` with `contents` and `meta` (whose times
/// are set to `epoch`), replacing an existing entry.
///
/// # Errors
/// As [`put_node`].
pub fn write_file(
    tree: &mut Tree,
    path: &str,
    contents: impl Into<Vec<u8>>,
    meta: Metadata,
    epoch: Timestamp,
) -> Result<NodeId, ConfigureError> {
    let node = Node::file(FileData::from_bytes(contents.into()), meta.times(epoch));
    put_node(tree, path, node, epoch)
}

/// Creates a symlink at `path` pointing to `target`, replacing an existing
/// entry.
///
/// # Errors
/// As [`put_node`].
pub fn write_symlink(
    tree: &mut Tree,
    path: &str,
    target: &str,
    epoch: Timestamp,
) -> Result<NodeId, ConfigureError> {
    let node = Node::symlink(target.as_bytes(), Metadata::new(0o777).times(epoch));
    put_node(tree, path, node, epoch)
}

/// Makes sure a directory exists at `path` and sets its metadata (times set
/// to `epoch`).
///
/// # Errors
/// A component of `path` is not a directory.
pub fn write_dir(
    tree: &mut Tree,
    path: &str,
    meta: Metadata,
    epoch: Timestamp,
) -> Result<NodeId, ConfigureError> {
    let id = ensure_dir(tree, path.as_bytes(), epoch)?;
    tree.node_mut(id).meta = meta.times(epoch);
    Ok(id)
}

/// Whether a path exists in the tree (symlinks in intermediate components
/// followed, not in the last one).
pub fn exists(tree: &Tree, path: &str) -> bool {
    resolve(tree, path.as_bytes()).is_some()
}

/// The names in the directory at `path` (symlinks followed), sorted;
/// empty when there is no such directory.
pub fn list_dir(tree: &Tree, path: &str) -> Vec<Vec<u8>> {
    match resolve_follow(tree, path.as_bytes()).map(|id| &tree.node(id).kind) {
        Some(NodeKind::Dir(d)) => d.entries().map(|(n, _)| n.to_vec()).collect(),
        _ => Vec::new(),
    }
}

/// Days since the Unix epoch of a `SOURCE_DATE_EPOCH` (seconds), as shadow's
/// "last change" field counts them.
pub fn epoch_day(epoch_secs: i64) -> i64 {
    epoch_secs.div_euclid(86_400)
}

/// Lowercase hex MD5 of `data`, as `md5sum` prints it; used for the
/// hashes dpkg and ucf record.
pub fn md5_hex(data: &[u8]) -> String {
    use md5::{Digest, Md5};
    hex(&Md5::digest(data))
}

/// Lowercase hex SHA-256 of `data`; the hash maintainer scripts are pinned
/// by.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(2 * bytes.len()), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_match_known_vectors() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(
            md5_hex(b"The quick brown fox jumps over the lazy dog"),
            "9e107d9d372bb6826bd81d3542a419d6"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let long = vec![b'a'; 1000];
        assert_eq!(
            sha256_hex(&long),
            "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3"
        );
        assert_eq!(md5_hex(&long), "cabe45dcc9ae5b66ba86600cca6b8ba8");
    }

    #[test]
    fn resolve_follows_usrmerge_links() {
        let mut t = Tree::new(Metadata::new(0o755));
        let e = Timestamp::default();
        write_file(
            &mut t,
            "/usr/bin/x",
            b"hi".to_vec(),
            Metadata::new(0o755),
            e,
        )
        .unwrap();
        write_symlink(&mut t, "/bin", "usr/bin", e).unwrap();
        write_symlink(&mut t, "/usr/bin/y", "../bin/x", e).unwrap();
        assert_eq!(read_file(&t, "/bin/x").unwrap().unwrap(), b"hi");
        assert_eq!(read_file(&t, "/bin/y").unwrap().unwrap(), b"hi");
        assert!(read_file(&t, "/bin/z").unwrap().is_none());
        // Writing through a symlinked parent lands in the real directory.
        write_file(&mut t, "/bin/z", b"z".to_vec(), Metadata::new(0o644), e).unwrap();
        assert!(t.lookup(b"/usr/bin/z").is_some());
        // Replacing keeps one entry.
        write_file(&mut t, "/bin/z", b"zz".to_vec(), Metadata::new(0o644), e).unwrap();
        assert_eq!(read_file(&t, "/usr/bin/z").unwrap().unwrap(), b"zz");
        assert_eq!(epoch_day(86_400 * 3 + 5), 3);
        assert_eq!(realpath(&t, b"/bin/y").unwrap(), b"/usr/bin/x");
        assert_eq!(realpath(&t, b"/bin").unwrap(), b"/usr/bin");
        assert_eq!(realpath(&t, b"/").unwrap(), b"/");
        assert!(realpath(&t, b"/nope").is_none());
    }
}
