//! The in-memory filesystem tree.
//!
//! A [`Tree`] is an arena of inodes ([`Node`]) addressed by [`NodeId`].
//! Directories map names (arbitrary bytes other than `/` and NUL) to node
//! ids, so a node reachable under several names is a hard link, exactly as on
//! a real filesystem. Names are kept sorted (a `BTreeMap`), which makes every
//! walk deterministic.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// Index of a node (an inode) in a [`Tree`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(u32);

impl NodeId {
    /// The position of this node in the tree's arena (0 is the root).
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A point in time with nanoseconds, as kept by filesystems.
///
/// `secs` counts from the Unix epoch and may be negative (dates before 1970).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    /// Whole seconds since 1970-01-01T00:00:00Z.
    pub secs: i64,
    /// Nanoseconds, `0..1_000_000_000`.
    pub nanos: u32,
}

impl Timestamp {
    /// A timestamp of whole seconds.
    pub const fn from_secs(secs: i64) -> Self {
        Timestamp { secs, nanos: 0 }
    }

    /// The earlier of `self` and `limit` (used to clamp times to a
    /// `SOURCE_DATE_EPOCH`).
    pub fn clamp_to(self, limit: Timestamp) -> Self {
        self.min(limit)
    }
}

/// A device number, split the Linux way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DeviceNumber {
    /// Major number (12 bits on disk in the old encoding, 32 in `dev_t`).
    pub major: u32,
    /// Minor number (20 bits in the new ext4 encoding).
    pub minor: u32,
}

/// Ownership, permissions, times and extended attributes of a node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metadata {
    /// Permission bits including setuid (0o4000), setgid (0o2000) and sticky
    /// (0o1000). The file type is not part of it: it comes from [`NodeKind`].
    pub mode: u16,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Last access.
    pub atime: Timestamp,
    /// Last modification of the contents.
    pub mtime: Timestamp,
    /// Last change of the inode.
    pub ctime: Timestamp,
    /// Creation time; `None` lets the writer use `mtime`.
    pub crtime: Option<Timestamp>,
    /// Extended attributes by full name (`security.capability`,
    /// `user.foo`, `system.posix_acl_access`, ...). POSIX ACL values are in
    /// the Linux VFS format (as `getxattr(2)` returns them).
    pub xattrs: BTreeMap<Box<[u8]>, Box<[u8]>>,
}

impl Metadata {
    /// Metadata owned by root with the given permission bits, all times zero
    /// and no xattrs.
    pub fn new(mode: u16) -> Self {
        Metadata {
            mode: mode & 0o7777,
            ..Metadata::default()
        }
    }

    /// Sets owner and group.
    #[must_use]
    pub fn owner(mut self, uid: u32, gid: u32) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }

    /// Sets atime, mtime and ctime to `t` (and crtime to `None`).
    #[must_use]
    pub fn times(mut self, t: Timestamp) -> Self {
        self.atime = t;
        self.mtime = t;
        self.ctime = t;
        self.crtime = None;
        self
    }

    /// Adds an extended attribute.
    #[must_use]
    pub fn xattr(mut self, name: &[u8], value: &[u8]) -> Self {
        self.xattrs.insert(name.into(), value.into());
        self
    }
}

/// Where the bytes of a regular file come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Bytes held in memory (shared, never copied when the tree is cloned).
    Bytes(Arc<[u8]>),
    /// A file on the host; file offset `o` reads host offset `offset + o`.
    Host {
        /// Path of the host file.
        path: Arc<Path>,
        /// Offset of the first byte in the host file.
        offset: u64,
    },
    /// Only zeros (a file that is one big hole).
    Zeros,
}

/// The contents of a regular file: a [`Source`], a length, and optionally
/// the ranges that hold data (everything else is a hole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileData {
    source: Source,
    len: u64,
    data: Option<Arc<[Range<u64>]>>,
}

impl FileData {
    /// Contents held in memory.
    pub fn from_bytes(bytes: impl Into<Arc<[u8]>>) -> Self {
        let bytes = bytes.into();
        FileData {
            len: bytes.len() as u64,
            source: Source::Bytes(bytes),
            data: None,
        }
    }

    /// `len` bytes of the host file at `path` from `offset` on. The file is
    /// opened only when the contents are read.
    pub fn from_host(path: impl Into<Arc<Path>>, offset: u64, len: u64) -> Self {
        FileData {
            source: Source::Host {
                path: path.into(),
                offset,
            },
            len,
            data: None,
        }
    }

    /// A file of `len` zero bytes stored as one hole.
    pub fn zeros(len: u64) -> Self {
        FileData {
            source: Source::Zeros,
            len,
            data: Some(Arc::from(Vec::new())),
        }
    }

    /// Marks the file sparse: only `ranges` hold data, the rest are holes.
    ///
    /// Ranges are sorted, merged and clipped to the file length.
    #[must_use]
    pub fn with_data_ranges(mut self, ranges: impl IntoIterator<Item = Range<u64>>) -> Self {
        let mut v: Vec<Range<u64>> = ranges
            .into_iter()
            .map(|r| r.start.min(self.len)..r.end.min(self.len))
            .filter(|r| r.start < r.end)
            .collect();
        v.sort_by_key(|r| r.start);
        let mut merged: Vec<Range<u64>> = Vec::with_capacity(v.len());
        for r in v {
            match merged.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => merged.push(r),
            }
        }
        self.data = Some(merged.into());
        self
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the bytes come from.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// The byte ranges that hold data, sorted and disjoint. A dense file is
    /// one range covering the whole length.
    pub fn data_ranges(&self) -> Vec<Range<u64>> {
        match &self.data {
            Some(r) => r.to_vec(),
            None if self.len > 0 => std::iter::once(0..self.len).collect(),
            None => Vec::new(),
        }
    }

    /// Whether the file has holes.
    pub fn is_sparse(&self) -> bool {
        match &self.data {
            None => false,
            Some(r) => !(r.len() == 1 && r[0] == (0..self.len)),
        }
    }

    /// Opens the contents for positioned reads.
    ///
    /// # Errors
    /// Opening a [`Source::Host`] file can fail.
    pub fn open(&self) -> io::Result<ContentReader<'_>> {
        Ok(match &self.source {
            Source::Bytes(b) => ContentReader::Bytes(b),
            Source::Host { path, offset } => ContentReader::Host {
                file: open_noatime(path)?,
                offset: *offset,
            },
            Source::Zeros => ContentReader::Zeros,
        })
    }
}

/// Opens a host file for reading without updating its access time (so that
/// building twice from the same source gives the same result), falling back
/// to a plain open where `O_NOATIME` is not permitted.
fn open_noatime(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let noatime = rustix::fs::OFlags::NOATIME.bits() as i32;
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(noatime)
        .open(path)
    {
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error()) => {
            File::open(path)
        }
        r => r,
    }
}

/// Positioned reads of a file's contents, from [`FileData::open`].
#[derive(Debug)]
pub enum ContentReader<'a> {
    /// In-memory bytes.
    Bytes(&'a [u8]),
    /// An open host file and the offset of the contents in it.
    Host {
        /// The open file.
        file: File,
        /// Offset of byte 0 of the contents.
        offset: u64,
    },
    /// Zeros.
    Zeros,
}

impl ContentReader<'_> {
    /// Fills `buf` with the bytes at `pos`. Fails with `UnexpectedEof` if the
    /// source is shorter than expected (a host file that shrank).
    ///
    /// # Errors
    /// I/O errors of the host file, or a short source.
    pub fn read_exact_at(&mut self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        match self {
            ContentReader::Bytes(b) => {
                let start = usize::try_from(pos).map_err(|_| short())?;
                let end = start.checked_add(buf.len()).ok_or_else(short)?;
                buf.copy_from_slice(b.get(start..end).ok_or_else(short)?);
                Ok(())
            }
            ContentReader::Host { file, offset } => {
                let at = offset.checked_add(pos).ok_or_else(short)?;
                file.read_exact_at(buf, at)
            }
            ContentReader::Zeros => {
                buf.fill(0);
                Ok(())
            }
        }
    }
}

fn short() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "file contents shorter than recorded",
    )
}

/// The entries of a directory, sorted by name bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dir {
    entries: BTreeMap<Box<[u8]>, NodeId>,
}

impl Dir {
    /// The entries, sorted by name.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = (&[u8], NodeId)> + '_ {
        self.entries.iter().map(|(k, v)| (&**k, *v))
    }

    /// Looks a name up.
    pub fn get(&self, name: &[u8]) -> Option<NodeId> {
        self.entries.get(name).copied()
    }

    /// Number of entries (without `.` and `..`).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the directory has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The type of a node and its type-specific payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    /// A regular file.
    File(FileData),
    /// A directory.
    Dir(Dir),
    /// A symbolic link and its target (stored, never followed).
    Symlink(Box<[u8]>),
    /// A character device.
    CharDevice(DeviceNumber),
    /// A block device.
    BlockDevice(DeviceNumber),
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
}

impl NodeKind {
    /// The `S_IFMT` bits of this kind.
    pub fn format_bits(&self) -> u16 {
        match self {
            NodeKind::File(_) => 0o100000,
            NodeKind::Dir(_) => 0o040000,
            NodeKind::Symlink(_) => 0o120000,
            NodeKind::CharDevice(_) => 0o020000,
            NodeKind::BlockDevice(_) => 0o060000,
            NodeKind::Fifo => 0o010000,
            NodeKind::Socket => 0o140000,
        }
    }
}

/// One inode: its kind and its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Type and payload.
    pub kind: NodeKind,
    /// Owner, mode, times, xattrs.
    pub meta: Metadata,
}

impl Node {
    /// A regular file.
    pub fn file(data: FileData, meta: Metadata) -> Self {
        Node {
            kind: NodeKind::File(data),
            meta,
        }
    }

    /// An empty directory.
    pub fn dir(meta: Metadata) -> Self {
        Node {
            kind: NodeKind::Dir(Dir::default()),
            meta,
        }
    }

    /// A symbolic link to `target`.
    pub fn symlink(target: impl Into<Box<[u8]>>, meta: Metadata) -> Self {
        Node {
            kind: NodeKind::Symlink(target.into()),
            meta,
        }
    }

    /// The full `st_mode`: format bits plus permission bits.
    pub fn st_mode(&self) -> u16 {
        self.kind.format_bits() | (self.meta.mode & 0o7777)
    }
}

/// Errors from editing a [`Tree`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TreeError {
    /// The name is empty, `.`, `..`, or contains `/` or NUL.
    #[error("invalid file name {name:?}")]
    InvalidName {
        /// The name, lossily decoded.
        name: String,
    },
    /// The parent already has an entry of that name.
    #[error("{name:?} already exists in its directory")]
    Exists {
        /// The name, lossily decoded.
        name: String,
    },
    /// The parent (or a path component) is not a directory.
    #[error("{name:?} is not a directory")]
    NotADirectory {
        /// The offending component, lossily decoded.
        name: String,
    },
    /// Directories cannot be hard linked.
    #[error("cannot hard link a directory as {name:?}")]
    LinkToDirectory {
        /// The new name, lossily decoded.
        name: String,
    },
    /// The arena is full (more than 2^32 - 1 nodes).
    #[error("too many nodes in the tree")]
    TooManyNodes,
    /// No entry of that name.
    #[error("{name:?} not found")]
    NotFound {
        /// The name, lossily decoded.
        name: String,
    },
}

fn lossy(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

/// An in-memory filesystem tree: an arena of inodes addressed by [`NodeId`];
/// directories map names to ids, so a node with several names is a hard
/// link. Names are kept sorted, which makes every walk deterministic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    nodes: Vec<Node>,
    links: Vec<u32>,
}

impl Tree {
    /// A tree holding only a root directory with `root_meta`.
    pub fn new(root_meta: Metadata) -> Self {
        Tree {
            nodes: vec![Node::dir(root_meta)],
            links: vec![1],
        }
    }

    /// The root directory.
    pub fn root(&self) -> NodeId {
        NodeId(0)
    }

    /// The node `id`.
    ///
    /// # Panics
    /// If `id` does not come from this tree.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    /// The node `id`, mutably.
    ///
    /// # Panics
    /// If `id` does not come from this tree.
    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id.index()]
    }

    /// Number of nodes ever added (inodes, including unlinked ones).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Number of names that refer to `id` (1 for the root).
    pub fn link_count(&self, id: NodeId) -> u32 {
        self.links[id.index()]
    }

    fn check_name(name: &[u8]) -> Result<(), TreeError> {
        if name.is_empty()
            || name == b"."
            || name == b".."
            || name.contains(&b'/')
            || name.contains(&0)
        {
            return Err(TreeError::InvalidName { name: lossy(name) });
        }
        Ok(())
    }

    fn dir_mut(&mut self, parent: NodeId, name: &[u8]) -> Result<&mut Dir, TreeError> {
        match &mut self.nodes[parent.index()].kind {
            NodeKind::Dir(d) => Ok(d),
            _ => Err(TreeError::NotADirectory { name: lossy(name) }),
        }
    }

    /// Adds `node` as `name` in directory `parent`.
    ///
    /// # Errors
    /// Invalid name, existing entry, or a parent that is not a directory.
    pub fn add(&mut self, parent: NodeId, name: &[u8], node: Node) -> Result<NodeId, TreeError> {
        Self::check_name(name)?;
        let id = NodeId(u32::try_from(self.nodes.len()).map_err(|_| TreeError::TooManyNodes)?);
        let dir = self.dir_mut(parent, name)?;
        if dir.entries.contains_key(name) {
            return Err(TreeError::Exists { name: lossy(name) });
        }
        dir.entries.insert(name.into(), id);
        self.nodes.push(node);
        self.links.push(1);
        Ok(id)
    }

    /// Adds `name` in `parent` as another name of the existing node `target`
    /// (a hard link).
    ///
    /// # Errors
    /// As [`add`](Self::add), and `target` must not be a directory.
    pub fn link(&mut self, parent: NodeId, name: &[u8], target: NodeId) -> Result<(), TreeError> {
        Self::check_name(name)?;
        if matches!(self.nodes[target.index()].kind, NodeKind::Dir(_)) {
            return Err(TreeError::LinkToDirectory { name: lossy(name) });
        }
        let dir = self.dir_mut(parent, name)?;
        if dir.entries.contains_key(name) {
            return Err(TreeError::Exists { name: lossy(name) });
        }
        dir.entries.insert(name.into(), target);
        self.links[target.index()] += 1;
        Ok(())
    }

    /// Removes the entry `name` from `parent` and returns the node it named.
    /// The node stays in the arena (other names may still refer to it); a
    /// removed directory's subtree becomes unreachable.
    ///
    /// # Errors
    /// No such entry, or a parent that is not a directory.
    pub fn remove(&mut self, parent: NodeId, name: &[u8]) -> Result<NodeId, TreeError> {
        let dir = self.dir_mut(parent, name)?;
        let id = dir
            .entries
            .remove(name)
            .ok_or_else(|| TreeError::NotFound { name: lossy(name) })?;
        self.links[id.index()] -= 1;
        Ok(id)
    }

    /// Finds an absolute or relative (to the root) path, without following
    /// symlinks. Empty components and `.` are ignored.
    pub fn lookup(&self, path: &[u8]) -> Option<NodeId> {
        let mut cur = self.root();
        for comp in path.split(|&b| b == b'/') {
            if comp.is_empty() || comp == b"." {
                continue;
            }
            match &self.nodes[cur.index()].kind {
                NodeKind::Dir(d) => cur = d.get(comp)?,
                _ => return None,
            }
        }
        Some(cur)
    }

    /// Makes sure every directory on `path` exists, creating missing ones
    /// with `meta`, and returns the last one.
    ///
    /// # Errors
    /// A component exists and is not a directory, or is an invalid name.
    pub fn create_dir_all(&mut self, path: &[u8], meta: Metadata) -> Result<NodeId, TreeError> {
        let mut cur = self.root();
        for comp in path.split(|&b| b == b'/') {
            if comp.is_empty() || comp == b"." {
                continue;
            }
            let existing = match &self.nodes[cur.index()].kind {
                NodeKind::Dir(d) => d.get(comp),
                _ => return Err(TreeError::NotADirectory { name: lossy(comp) }),
            };
            cur = match existing {
                Some(id) => id,
                None => self.add(cur, comp, Node::dir(meta.clone()))?,
            };
        }
        match self.nodes[cur.index()].kind {
            NodeKind::Dir(_) => Ok(cur),
            _ => Err(TreeError::NotADirectory { name: lossy(path) }),
        }
    }

    /// Clamps the atime, mtime, ctime and crtime of every node (reachable or
    /// not) to at most `limit`, as `SOURCE_DATE_EPOCH` asks of reproducible
    /// builds: times later than `limit` become `limit`, earlier ones are
    /// kept. A `None` crtime stays `None`.
    pub fn clamp_times(&mut self, limit: Timestamp) {
        for node in &mut self.nodes {
            let m = &mut node.meta;
            m.atime = m.atime.clamp_to(limit);
            m.mtime = m.mtime.clamp_to(limit);
            m.ctime = m.ctime.clamp_to(limit);
            m.crtime = m.crtime.map(|t| t.clamp_to(limit));
        }
    }

    /// Walks every name reachable from the root, depth first, entries in
    /// name order; each directory comes before its contents. The root itself
    /// is yielded first with an empty path.
    pub fn walk(&self) -> Walk<'_> {
        Walk {
            tree: self,
            stack: vec![(Vec::new(), self.root(), None)],
        }
    }
}

type DirIter<'a> = std::collections::btree_map::Iter<'a, Box<[u8]>, NodeId>;

/// Iterator returned by [`Tree::walk`]: `(path, id)` pairs where `path` is
/// the slash-separated path from the root (no leading slash).
pub struct Walk<'a> {
    tree: &'a Tree,
    stack: Vec<(Vec<u8>, NodeId, Option<DirIter<'a>>)>,
}

impl Iterator for Walk<'_> {
    type Item = (Vec<u8>, NodeId);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let top = self.stack.last_mut()?;
            match &mut top.2 {
                None => {
                    // First visit of this node: yield it, then iterate its entries.
                    let (path, id) = (top.0.clone(), top.1);
                    match &self.tree.nodes[id.index()].kind {
                        NodeKind::Dir(d) => top.2 = Some(d.entries.iter()),
                        _ => {
                            self.stack.pop();
                        }
                    }
                    return Some((path, id));
                }
                Some(it) => match it.next() {
                    Some((name, &child)) => {
                        let mut p = top.0.clone();
                        if !p.is_empty() {
                            p.push(b'/');
                        }
                        p.extend_from_slice(name);
                        self.stack.push((p, child, None));
                    }
                    None => {
                        self.stack.pop();
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_link_remove_and_walk() {
        let mut t = Tree::new(Metadata::new(0o755));
        let usr = t.create_dir_all(b"/usr/bin", Metadata::new(0o755)).unwrap();
        let f = t
            .add(
                usr,
                b"ls",
                Node::file(FileData::from_bytes(vec![1, 2, 3]), Metadata::new(0o755)),
            )
            .unwrap();
        t.link(usr, b"dir", f).unwrap();
        assert_eq!(t.link_count(f), 2);
        assert_eq!(
            t.add(usr, b"ls", Node::dir(Metadata::new(0))),
            Err(TreeError::Exists { name: "ls".into() })
        );
        assert!(matches!(
            t.add(usr, b"a/b", Node::dir(Metadata::new(0))),
            Err(TreeError::InvalidName { .. })
        ));
        assert!(matches!(
            t.link(t.root(), b"x", usr),
            Err(TreeError::LinkToDirectory { .. })
        ));
        let paths: Vec<Vec<u8>> = t.walk().map(|(p, _)| p).collect();
        assert_eq!(
            paths,
            vec![
                b"".to_vec(),
                b"usr".to_vec(),
                b"usr/bin".to_vec(),
                b"usr/bin/dir".to_vec(),
                b"usr/bin/ls".to_vec()
            ]
        );
        assert_eq!(t.remove(usr, b"dir").unwrap(), f);
        assert_eq!(t.link_count(f), 1);
        assert_eq!(t.lookup(b"usr/bin/dir"), None);
        assert_eq!(t.lookup(b"/usr/bin/ls"), Some(f));
        assert!(t
            .create_dir_all(b"/usr/bin/ls/x", Metadata::new(0))
            .is_err());
    }

    #[test]
    fn clamp_times_limits_every_time_of_every_node() {
        let ts = |secs, nanos| Timestamp { secs, nanos };
        let (limit, late, early) = (ts(1_700_000_000, 500), ts(1_700_000_000, 501), ts(-5, 7));
        let mut t = Tree::new(Metadata::new(0o755).times(late));
        let mut meta = Metadata::new(0o644).times(early);
        meta.mtime = Timestamp::from_secs(4_102_444_800);
        meta.crtime = Some(Timestamp::from_secs(4_102_444_801));
        let f = t
            .add(t.root(), b"f", Node::file(FileData::zeros(1), meta))
            .unwrap();
        t.clamp_times(limit);
        let root = &t.node(t.root()).meta;
        let times = |m: &Metadata| (m.atime, m.mtime, m.ctime, m.crtime);
        assert_eq!(times(root), (limit, limit, limit, None));
        assert_eq!(times(&t.node(f).meta), (early, limit, early, Some(limit)));
    }

    #[test]
    fn data_ranges_are_merged_and_clipped() {
        let d = FileData::zeros(100).with_data_ranges([50..60, 0..10, 5..20, 90..200]);
        assert_eq!(d.data_ranges(), vec![0..20, 50..60, 90..100]);
        assert!(d.is_sparse());
        assert!(!FileData::from_bytes(vec![1]).is_sparse());
        assert_eq!(FileData::zeros(10).data_ranges(), Vec::<Range<u64>>::new());
    }

    #[test]
    fn content_reader_reads_ranges() {
        let d = FileData::from_bytes(b"hello world".to_vec());
        let mut r = d.open().unwrap();
        let mut buf = [0u8; 5];
        r.read_exact_at(6, &mut buf).unwrap();
        assert_eq!(&buf, b"world");
        assert!(r.read_exact_at(8, &mut buf).is_err());
    }
}
