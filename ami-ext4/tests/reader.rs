//! The reader (`ami_ext4::Ext4Reader`) against three things:
//!
//! * the writer: trees from `fixtures` are formatted, and everything the
//!   tree holds (contents, link targets, metadata with nanosecond times,
//!   device numbers, xattrs with ACLs back in the VFS format, directory
//!   listings, hard links) must read back exactly;
//! * an independent writer: images that `mke2fs -d` made of a host
//!   directory (ext4 with and without checksums, 1 KiB blocks, 128-byte
//!   inodes, and ext2 with indirect block maps up to the triple indirect
//!   block) must read back as the host directory is;
//! * corruption: targeted damage gives the right error, and a deterministic
//!   mini-fuzz (random byte damage to valid images) must never panic or
//!   hang.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Cursor, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ami_core::progress::NoProgress;
use ami_core::{FileData, Metadata, Node, NodeId, NodeKind, Timestamp, Tree};
use ami_ext4::checksum::crc32c;
use ami_ext4::{
    format, Ext4Reader, FormatOptions, InodeInfo, InodeKind, Profile, ReadError, Report,
};
use fixtures::{edge_tree, paths, random_tree, EdgeScale};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Formats `tree` into memory. The buffer is pre-filled with 0xD1 so that
/// anything the reader takes from a block the writer never wrote shows.
fn build(tree: &Tree, opts: &FormatOptions) -> (Vec<u8>, Report) {
    let mut probe = Cursor::new(Vec::new());
    let report = format(&mut probe, tree, opts, &NoProgress).expect("format");
    let mut image = Cursor::new(vec![0xD1u8; report.size_bytes() as usize]);
    let again = format(&mut image, tree, opts, &NoProgress).expect("format");
    assert_eq!(again, report, "the writer is deterministic");
    (image.into_inner(), report)
}

/// A `Write` that checks every byte written against `read(pos, buf)`.
struct Expect<F> {
    read: F,
    pos: u64,
    buf: Vec<u8>,
    what: String,
}

impl<F: FnMut(u64, &mut [u8]) -> io::Result<()>> Write for Expect<F> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.resize(data.len(), 0);
        (self.read)(self.pos, &mut self.buf)?;
        if self.buf != data {
            let i = self.buf.iter().zip(data).position(|(a, b)| a != b).unwrap();
            panic!(
                "{}: byte {} is {:#x}, expected {:#x}",
                self.what,
                self.pos + i as u64,
                data[i],
                self.buf[i]
            );
        }
        self.pos += data.len() as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Streams file `ino` and compares it with `read`; returns the size read.
fn compare_contents<R: Read + io::Seek>(
    fs: &mut Ext4Reader<R>,
    ino: u32,
    what: &str,
    read: impl FnMut(u64, &mut [u8]) -> io::Result<()>,
) -> u64 {
    let mut w = Expect {
        read,
        pos: 0,
        buf: Vec::new(),
        what: what.to_owned(),
    };
    let n = fs
        .read_file_to(ino, &mut w)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(n, w.pos, "{what}: size and bytes written");
    n
}

fn lossy(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

fn file_type_of(kind: &NodeKind) -> u8 {
    match kind {
        NodeKind::File(_) => 1,
        NodeKind::Dir(_) => 2,
        NodeKind::CharDevice(_) => 3,
        NodeKind::BlockDevice(_) => 4,
        NodeKind::Fifo => 5,
        NodeKind::Socket => 6,
        NodeKind::Symlink(_) => 7,
    }
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// The feature names `dumpe2fs -h` prints for the image at `path`, in its
/// order.
fn dumpe2fs_features(path: &Path) -> Vec<String> {
    let out = Command::new("dumpe2fs")
        .arg("-h")
        .arg(path)
        .output()
        .expect("cannot run dumpe2fs (install e2fsprogs)");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("Filesystem features:"))
        .unwrap_or_else(|| panic!("dumpe2fs lists no features: {out:?}"));
    line.split_whitespace().map(str::to_owned).collect()
}

// ---------------------------------------------------------------------------
// (a) The writer's trees read back exactly
// ---------------------------------------------------------------------------

/// Checks that the image holds exactly `tree`.
fn check_tree(tree: &Tree, image: Vec<u8>, report: &Report, label: &str) {
    let mut fs = Ext4Reader::new(Cursor::new(image)).expect("open");
    let info = fs.superblock_info();
    assert_eq!(info.block_size, report.block_size);
    assert_eq!(info.blocks_count, report.blocks_count);
    assert_eq!(u64::from(info.inodes_count), report.inodes_count);
    assert_eq!(info.uuid, report.uuid);
    assert_eq!(
        info.free_blocks_count,
        report.blocks_count - report.used_blocks
    );
    assert_eq!(
        u64::from(info.free_inodes_count),
        report.inodes_count - report.used_inodes
    );
    assert_eq!(info.label, label.as_bytes());
    assert!(info.clean && !info.needs_recovery);
    assert_eq!(info.first_ino, 11);

    let lpf_in_tree = tree.lookup(b"lost+found").is_some();
    let mut ino_of: HashMap<NodeId, u32> = HashMap::new();
    let mut node_of: HashMap<u32, NodeId> = HashMap::new();
    // Inode numbers the parent's listing gave, by path.
    let mut listed: HashMap<Vec<u8>, u32> = HashMap::new();
    for (n, (path, id)) in tree.walk().enumerate() {
        let what = format!("/{}", lossy(&path));
        // Look-ups scan directories linearly: check every entry of small
        // directories but only a sample of big ones, whose entries the
        // listing numbered.
        let ino = match listed.get(&path) {
            Some(&l) if n % 37 != 0 => l,
            l => {
                let ino = fs
                    .lookup(&path)
                    .unwrap_or_else(|e| panic!("lookup {what}: {e}"));
                if let Some(&l) = l {
                    assert_eq!(ino, l, "{what}: listing and lookup agree");
                }
                ino
            }
        };
        // Hard links share one inode; different nodes never do.
        assert_eq!(*ino_of.entry(id).or_insert(ino), ino, "{what}");
        assert_eq!(*node_of.entry(ino).or_insert(id), id, "{what}");

        let node = tree.node(id);
        let m = &node.meta;
        let info: InodeInfo = fs
            .metadata(ino)
            .unwrap_or_else(|e| panic!("metadata {what}: {e}"));
        assert_eq!(info.ino, ino);
        assert_eq!(info.mode, node.st_mode(), "{what}: mode");
        assert_eq!((info.uid, info.gid), (m.uid, m.gid), "{what}: owner");
        assert_eq!(info.atime, m.atime, "{what}: atime");
        assert_eq!(info.mtime, m.mtime, "{what}: mtime");
        assert_eq!(info.ctime, m.ctime, "{what}: ctime");
        assert_eq!(
            info.crtime,
            Some(m.crtime.unwrap_or(m.mtime)),
            "{what}: crtime"
        );
        let xattrs: Vec<(Vec<u8>, Vec<u8>)> = m
            .xattrs
            .iter()
            .map(|(n, v)| (n.to_vec(), v.to_vec()))
            .collect();
        assert_eq!(fs.xattrs(ino).unwrap(), xattrs, "{what}: xattrs");
        assert_eq!(
            info.rdev.is_some(),
            matches!(
                node.kind,
                NodeKind::CharDevice(_) | NodeKind::BlockDevice(_)
            )
        );

        match &node.kind {
            NodeKind::Dir(d) => {
                assert_eq!(info.kind, InodeKind::Dir, "{what}");
                let is_root = id == tree.root();
                let subdirs = d
                    .entries()
                    .filter(|&(_, c)| matches!(tree.node(c).kind, NodeKind::Dir(_)))
                    .count()
                    + usize::from(is_root && !lpf_in_tree);
                let links = if subdirs + 2 > 65000 { 1 } else { subdirs + 2 };
                assert_eq!(usize::from(info.links), links, "{what}: links");
                let mut got = fs.read_dir(ino).unwrap();
                got.sort();
                let mut want: Vec<(Vec<u8>, u8)> = d
                    .entries()
                    .map(|(n, c)| (n.to_vec(), file_type_of(&tree.node(c).kind)))
                    .collect();
                if is_root && !lpf_in_tree {
                    want.push((b"lost+found".to_vec(), 2));
                    want.sort();
                }
                let got_names: Vec<(Vec<u8>, u8)> =
                    got.iter().map(|(n, _, t)| (n.clone(), *t)).collect();
                assert_eq!(got_names, want, "{what}: listing");
                for (name, child, _) in got {
                    listed.insert(join(&path, &name), child);
                }
                assert!(matches!(fs.read_file(ino), Err(ReadError::NotAFile { .. })));
                assert!(matches!(
                    fs.read_link(ino),
                    Err(ReadError::NotASymlink { .. })
                ));
            }
            NodeKind::File(data) => {
                assert_eq!(info.kind, InodeKind::File, "{what}");
                assert_eq!(u32::from(info.links), tree.link_count(id), "{what}: links");
                assert_eq!(info.size, data.len(), "{what}: size");
                let mut src = data.open().unwrap();
                compare_contents(&mut fs, ino, &what, |pos, buf| src.read_exact_at(pos, buf));
                if data.len() <= 1 << 20 {
                    let whole = fs.read_file(ino).unwrap();
                    assert_eq!(whole.len() as u64, data.len(), "{what}");
                }
                // Holes stay holes: only the data ranges (and block 0) are
                // mapped.
                let bs = u64::from(report.block_size);
                let data_blocks: u64 = data
                    .data_ranges()
                    .iter()
                    .map(|r| r.end.div_ceil(bs) - r.start / bs)
                    .sum();
                let extents = fs.file_extents(ino).unwrap();
                let mapped: u64 = extents.iter().map(|e| e.len).sum();
                assert!(
                    mapped <= data_blocks + 1 && mapped >= data_blocks.min(1),
                    "{what}: {mapped} blocks mapped for {data_blocks} blocks of data"
                );
                assert!(extents.iter().all(|e| e.initialized));
                assert!(matches!(
                    fs.read_dir(ino),
                    Err(ReadError::NotADirectory { .. })
                ));
            }
            NodeKind::Symlink(target) => {
                assert_eq!(info.kind, InodeKind::Symlink, "{what}");
                assert_eq!(u32::from(info.links), tree.link_count(id), "{what}: links");
                assert_eq!(info.size, target.len() as u64, "{what}");
                assert_eq!(fs.read_link(ino).unwrap(), &target[..], "{what}: target");
                assert!(matches!(fs.read_file(ino), Err(ReadError::NotAFile { .. })));
            }
            NodeKind::CharDevice(dev) | NodeKind::BlockDevice(dev) => {
                let kind = if matches!(node.kind, NodeKind::CharDevice(_)) {
                    InodeKind::CharDevice
                } else {
                    InodeKind::BlockDevice
                };
                assert_eq!(info.kind, kind, "{what}");
                assert_eq!(info.rdev, Some(*dev), "{what}: device number");
                assert_eq!(u32::from(info.links), tree.link_count(id), "{what}: links");
            }
            NodeKind::Fifo => assert_eq!(info.kind, InodeKind::Fifo, "{what}"),
            NodeKind::Socket => assert_eq!(info.kind, InodeKind::Socket, "{what}"),
        }
    }
    if !lpf_in_tree {
        let lpf = fs.lookup(b"/lost+found").unwrap();
        assert_eq!(lpf, 11);
        let m = fs.metadata(lpf).unwrap();
        assert_eq!((m.kind, m.mode, m.links), (InodeKind::Dir, 0o40700, 2));
        assert!(fs.read_dir(lpf).unwrap().is_empty());
    }
    // The journal inode is a plain extent-mapped file.
    let journal = fs.superblock_info().journal_inum;
    if info.features.iter().any(|f| f == "has_journal") {
        assert_eq!(journal, 8);
        let m = fs.metadata(8).unwrap();
        assert_eq!((m.kind, m.mode), (InodeKind::File, 0o100600));
        let mut head = Vec::new();
        let mut limited = Limited {
            out: &mut head,
            left: 4,
        };
        assert!(
            fs.read_file_to(8, &mut limited).is_err(),
            "stops at the writer's error"
        );
        assert_eq!(head, [0xC0, 0x3B, 0x39, 0x98], "jbd2 magic, big-endian");
    } else {
        assert_eq!(journal, 0);
    }
    // Unused and out-of-range inodes.
    for ino in [0, 1, 3, info.inodes_count, info.inodes_count + 1] {
        assert!(
            matches!(fs.metadata(ino), Err(ReadError::InvalidInode { .. })),
            "inode {ino}"
        );
    }
    assert!(matches!(
        fs.lookup(b"/no/such/path"),
        Err(ReadError::NotFound { path }) if path == "/no"
    ));
}

/// A writer that accepts `left` bytes, then fails.
struct Limited<'a> {
    out: &'a mut Vec<u8>,
    left: usize,
}

impl Write for Limited<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::other("limit reached"));
        }
        let n = data.len().min(self.left);
        self.out.extend_from_slice(&data[..n]);
        self.left -= n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Option sets to format with, and their block sizes.
fn option_sets(label: &str) -> Vec<(FormatOptions, u32)> {
    let base = FormatOptions::new()
        .label(label)
        .timestamp(Timestamp::from_secs(1_700_000_000));
    [
        (base.clone(), 4096),
        (base.clone().profile(Profile::PvGrub), 4096),
        (base.clone().journal(false), 1024),
        (base.clone().inode_size(512).profile(Profile::PvGrub), 2048),
    ]
    .map(|(o, bs)| (o.block_size(bs), bs))
    .into()
}

/// `tree` made storable with blocks smaller than 4 KiB: symlink targets
/// must fit one block, and the xattrs of a node one block.
fn for_small_blocks(mut tree: Tree) -> Tree {
    let ids: Vec<(Vec<u8>, NodeId)> = tree.walk().collect();
    for (path, id) in ids {
        tree.node_mut(id).meta.xattrs.clear();
        if matches!(&tree.node(id).kind, NodeKind::Symlink(t) if t.len() >= 1024) {
            let (dir, name) =
                path.split_at(path.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1));
            let parent = tree.lookup(dir).unwrap();
            tree.remove(parent, name).unwrap();
        }
    }
    tree
}

#[test]
fn edge_tree_reads_back_exactly() {
    let tree = edge_tree(&EdgeScale::small());
    let small = for_small_blocks(tree.clone());
    for (opts, bs) in option_sets("edge") {
        let tree = if bs == 4096 { &tree } else { &small };
        let (image, report) = build(tree, &opts);
        check_tree(tree, image, &report, "edge");
    }
}

#[test]
fn edge_tree_details() {
    let tree = edge_tree(&EdgeScale::small());
    let opts = FormatOptions::new();
    let (image, _) = build(&tree, &opts);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("img");
    fs::write(&path, &image).unwrap();
    let mut fs = Ext4Reader::new(Cursor::new(image)).unwrap();
    let info = fs.superblock_info();
    assert_eq!(info.profile, Some(Profile::Default));
    assert_eq!(info.features, dumpe2fs_features(&path));
    assert!(info.features.iter().any(|f| f == "metadata_csum"));
    // Fast and slow symlinks.
    for (path, len, fast) in [
        (paths::SYMLINK_59, 59, true),
        (paths::SYMLINK_60, 60, false),
        (paths::SYMLINK_4000, 4000, false),
    ] {
        let ino = fs.lookup(path).unwrap();
        assert_eq!(fs.read_link(ino).unwrap(), fixtures::symlink_target(len));
        assert_eq!(fs.file_extents(ino).unwrap().is_empty(), fast, "{len}");
    }
    // The big directory is hash-indexed, and read_dir still lists it all.
    let big = fs.lookup(paths::BIG_DIR).unwrap();
    let m = fs.metadata(big).unwrap();
    assert_ne!(m.flags & 0x1000, 0, "INDEX_FL");
    assert_eq!(
        fs.read_dir(big).unwrap().len(),
        EdgeScale::small().dir_entries
    );
    let last = fixtures::big_dir_entry(EdgeScale::small().dir_entries - 1);
    assert!(fs.lookup(&join(paths::BIG_DIR, &last)).is_ok());
    // ACLs come back in the VFS format.
    let acl = fs.lookup(paths::ACL_DIR).unwrap();
    let x: BTreeMap<Vec<u8>, Vec<u8>> = fs.xattrs(acl).unwrap().into_iter().collect();
    assert_eq!(x[&b"system.posix_acl_access"[..]], fixtures::acl_access());
    assert_eq!(x[&b"system.posix_acl_default"[..]], fixtures::acl_default());
    // Times past 2038 and before 1970, with nanoseconds.
    let t = fs.lookup(paths::TIME_2100).unwrap();
    assert_eq!(fs.metadata(t).unwrap().crtime, Some(fixtures::times::Y2100));
    let t = fs.lookup(paths::TIME_1960).unwrap();
    assert_eq!(fs.metadata(t).unwrap().mtime, fixtures::times::Y1960);
    // The sparse file is mostly holes; read_file refuses it below its size.
    let sparse = fs.lookup(paths::SPARSE).unwrap();
    fs.set_max_read_size(1 << 20);
    assert!(matches!(
        fs.read_file(sparse),
        Err(ReadError::TooLarge { size, limit: 1_048_576 }) if size == EdgeScale::small().sparse_len
    ));
    assert!(matches!(
        fs.read_path(paths::SPARSE),
        Err(ReadError::TooLarge { .. })
    ));
    fs.set_max_read_size(u64::MAX);
    assert_eq!(
        fs.read_path(paths::ONE_BLOCK).unwrap(),
        fixtures::pattern(1, 4096)
    );
    assert!(matches!(
        fs.read_path(b"/files"),
        Err(ReadError::NotAFile { path }) if path == "/files"
    ));
    assert!(matches!(
        fs.lookup(&join(paths::DENSE, b"x")),
        Err(ReadError::NotADirectory { path }) if path == format!("/{}", lossy(paths::DENSE))
    ));
    // Paths: leading slash optional, `.` ignored, `..` followed.
    let a = fs.lookup(b"links/a/one").unwrap();
    assert_eq!(fs.lookup(b"/links/./b/../a/one").unwrap(), a);
    assert_eq!(fs.lookup(b"/").unwrap(), 2);
    assert_eq!(fs.lookup(b"").unwrap(), 2);
}

#[test]
fn random_trees_read_back_exactly() {
    for seed in 0..6u64 {
        let (opts, bs) = &option_sets("random")[seed as usize % 4];
        let tree = random_tree(seed, 150);
        let tree = if *bs == 4096 {
            tree
        } else {
            for_small_blocks(tree)
        };
        let (image, report) = build(&tree, opts);
        check_tree(&tree, image, &report, "random");
    }
}

/// A file with `n` one-block data ranges separated by holes: `n` extents,
/// so extent trees of depth 1 or 2; and a directory big enough for a
/// two-level htree with 1 KiB blocks.
fn deep_tree(n: u64, dir_entries: usize) -> Tree {
    let mut t = Tree::new(Metadata::new(0o755));
    let len = n * 8192;
    let mut bytes = vec![0u8; len as usize];
    let mut ranges = Vec::new();
    for i in 0..n {
        let s = (i * 8192) as usize;
        bytes[s..s + 1024].copy_from_slice(&fixtures::pattern(i, 1024));
        ranges.push(i * 8192..i * 8192 + 1024);
    }
    let data = FileData::from_bytes(bytes).with_data_ranges(ranges);
    t.add(
        t.root(),
        b"fragmented",
        Node::file(data, Metadata::new(0o644)),
    )
    .unwrap();
    let d = t
        .add(t.root(), b"huge-dir", Node::dir(Metadata::new(0o755)))
        .unwrap();
    for i in 0..dir_entries {
        let name = format!("entry-with-a-longish-name-{i:06}");
        t.add(
            d,
            name.as_bytes(),
            Node::file(FileData::zeros(0), Metadata::new(0o600)),
        )
        .unwrap();
    }
    t
}

#[test]
fn deep_extent_trees_and_two_level_htrees() {
    let tree = deep_tree(400, 6000);
    for opts in [
        FormatOptions::new().block_size(1024).journal(false),
        FormatOptions::new()
            .block_size(4096)
            .profile(Profile::PvGrub),
    ] {
        let (image, report) = build(&tree, &opts);
        let mut fs = Ext4Reader::new(Cursor::new(image.clone())).unwrap();
        let f = fs.lookup(b"/fragmented").unwrap();
        let extents = fs.file_extents(f).unwrap();
        assert_eq!(extents.len(), 400);
        assert!(extents.iter().enumerate().all(|(i, e)| e.logical
            == i as u64 * 8192 / u64::from(report.block_size)
            && e.len == 1));
        let d = fs.lookup(b"/huge-dir").unwrap();
        assert_eq!(fs.read_dir(d).unwrap().len(), 6000);
        // From the raw bytes: the tree depth in i_block and the dx_root's
        // indirect_levels.
        let bs = report.block_size as usize;
        let depth = le16(&image, inode_offset(&image, f) + 0x28 + 6);
        let root = fs.file_extents(d).unwrap()[0].physical as usize * bs;
        let levels = image[root + 0x1E];
        assert_eq!((depth, levels), if bs == 1024 { (2, 1) } else { (1, 0) });
        check_tree(&tree, image, &report, "");
    }
}

/// Storage that counts the reads made through it.
struct Counting<R> {
    inner: R,
    reads: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reads.set(self.reads.get() + 1);
        self.inner.read(buf)
    }
}

impl<R: io::Seek> io::Seek for Counting<R> {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

fn counting<R>(inner: R) -> (Counting<R>, Rc<Cell<u64>>) {
    let reads = Rc::new(Cell::new(0));
    (
        Counting {
            inner,
            reads: reads.clone(),
        },
        reads,
    )
}

/// Looks up every entry of the hash-indexed directory `dir` and checks
/// that each look-up finds the listed inode reading only a few blocks
/// (through the index, not by scanning).
fn check_htree_lookups<R: Read + io::Seek>(fs: &mut Ext4Reader<R>, reads: &Cell<u64>, dir: &[u8]) {
    let d = fs.lookup(dir).unwrap();
    assert_ne!(fs.metadata(d).unwrap().flags & 0x1000, 0, "INDEX_FL");
    let listing = fs.read_dir(d).unwrap();
    let blocks = fs
        .file_extents(d)
        .unwrap()
        .iter()
        .map(|e| e.len)
        .sum::<u64>();
    assert!(blocks > 20, "{blocks} directory blocks");
    for (name, ino, _) in &listing {
        let before = reads.get();
        let path = join(dir, name);
        assert_eq!(fs.lookup(&path).unwrap(), *ino, "{}", lossy(&path));
        let cost = reads.get() - before;
        assert!(cost < 12, "{}: {cost} reads", lossy(&path));
    }
    assert!(matches!(
        fs.lookup(&join(dir, b"no such entry")),
        Err(ReadError::NotFound { .. })
    ));
}

#[test]
fn htree_lookups_use_the_index() {
    let tree = deep_tree(8, 6000);
    for opts in [
        FormatOptions::new().block_size(1024).journal(false),
        FormatOptions::new().profile(Profile::PvGrub),
    ] {
        let (image, report) = build(&tree, &opts);
        let (storage, reads) = counting(Cursor::new(image.clone()));
        let mut fs = Ext4Reader::new(storage).unwrap();
        check_htree_lookups(&mut fs, &reads, b"/huge-dir");

        // An unknown hash version in the dx_root: look-ups fall back to
        // scanning every block, and still find every entry.
        let d = fs.lookup(b"/huge-dir").unwrap();
        let root = fs.file_extents(d).unwrap()[0].physical as usize * report.block_size as usize;
        let listing = fs.read_dir(d).unwrap();
        let mut bad = image;
        assert_eq!(bad[root + 0x1C], 1, "half_md4");
        bad[root + 0x1C] = 9;
        let (storage, reads) = counting(Cursor::new(bad));
        let mut fs = Ext4Reader::new(storage).unwrap();
        for (name, ino, _) in listing.iter().step_by(599) {
            assert_eq!(fs.lookup(&join(b"/huge-dir", name)).unwrap(), *ino);
        }
        let (name, ino, _) = listing.last().unwrap();
        let before = reads.get();
        assert_eq!(fs.lookup(&join(b"/huge-dir", name)).unwrap(), *ino);
        assert!(
            reads.get() - before > 20,
            "the last entry needs a full scan"
        );
    }
}

// ---------------------------------------------------------------------------
// (b) Images made by mke2fs -d
// ---------------------------------------------------------------------------

fn run(cmd: &str, args: &[&std::ffi::OsStr]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd} (install e2fsprogs): {e}"));
    assert!(out.status.success(), "{cmd} {args:?}: {out:?}");
}

fn xattrs_on_host(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut list = vec![0u8; 65536];
    let n = match rustix::fs::llistxattr(path, &mut list[..]) {
        Ok(n) => n,
        Err(e) if e == rustix::io::Errno::NOTSUP => return Vec::new(),
        Err(e) => panic!("listxattr {}: {e}", path.display()),
    };
    let mut out = Vec::new();
    for name in list[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let mut value = vec![0u8; 65536];
        let len = rustix::fs::lgetxattr(path, name, &mut value[..]).unwrap();
        value.truncate(len);
        out.push((name.to_vec(), value));
    }
    out.sort();
    out
}

struct HostCheck {
    /// Whether nanoseconds and post-2038 times survive (never with mke2fs).
    secs_only: bool,
}

/// Checks that the image holds the host directory `root` (as `mke2fs -d`
/// copies it).
fn check_host_dir<R: Read + io::Seek>(fs: &mut Ext4Reader<R>, root: &Path, check: &HostCheck) {
    use std::os::unix::ffi::OsStrExt;
    let mut by_host_ino: HashMap<(u64, u64), u32> = HashMap::new();
    let mut stack = vec![(root.to_path_buf(), Vec::<u8>::new())];
    let mut files = 0;
    while let Some((host, path)) = stack.pop() {
        let what = format!("/{}", lossy(&path));
        let st = fs::symlink_metadata(&host).unwrap();
        let ino = fs
            .lookup(&path)
            .unwrap_or_else(|e| panic!("lookup {what}: {e}"));
        let m = fs.metadata(ino).unwrap();
        assert_eq!(u32::from(m.mode), st.mode(), "{what}: mode");
        assert_eq!((m.uid, m.gid), (st.uid(), st.gid()), "{what}: owner");
        // mke2fs -d leaves the root's own times alone.
        if let (Ok(mtime), false) = (i32::try_from(st.mtime()), path.is_empty()) {
            assert_eq!(m.mtime.secs, i64::from(mtime), "{what}: mtime");
            if !check.secs_only {
                assert_eq!(i64::from(m.mtime.nanos), st.mtime_nsec(), "{what}");
            }
        }
        assert_eq!(
            fs.xattrs(ino).unwrap(),
            xattrs_on_host(&host),
            "{what}: xattrs"
        );
        let ft = st.file_type();
        if ft.is_dir() {
            let mut want: Vec<Vec<u8>> = fs::read_dir(&host)
                .unwrap()
                .map(|e| e.unwrap().file_name().as_bytes().to_vec())
                .collect();
            if path.is_empty() {
                want.push(b"lost+found".to_vec());
            } else {
                assert_eq!(u64::from(m.links), st.nlink(), "{what}: links");
            }
            want.sort();
            let got: Vec<Vec<u8>> = {
                let mut v: Vec<_> = fs.read_dir(ino).unwrap().into_iter().map(|e| e.0).collect();
                v.sort();
                v
            };
            assert_eq!(got, want, "{what}: listing");
            for name in want {
                if path.is_empty() && name == b"lost+found" {
                    continue;
                }
                let child = host.join(std::ffi::OsStr::from_bytes(&name));
                stack.push((child, join(&path, &name)));
            }
            continue;
        }
        assert_eq!(u64::from(m.links), st.nlink(), "{what}: links");
        if st.nlink() > 1 {
            let first = *by_host_ino.entry((st.dev(), st.ino())).or_insert(ino);
            assert_eq!(first, ino, "{what}: hard links share the inode");
        }
        if ft.is_file() {
            assert_eq!(m.size, st.len(), "{what}: size");
            let f = fs::File::open(&host).unwrap();
            use std::os::unix::fs::FileExt;
            compare_contents(fs, ino, &what, |pos, buf| f.read_exact_at(buf, pos));
            files += 1;
        } else if ft.is_symlink() {
            let target = fs::read_link(&host).unwrap();
            assert_eq!(
                fs.read_link(ino).unwrap(),
                target.as_os_str().as_bytes(),
                "{what}"
            );
        } else if ft.is_char_device() || ft.is_block_device() {
            let dev = m.rdev.expect("device number");
            let rdev = st.rdev();
            assert_eq!(
                (dev.major, dev.minor),
                (rustix::fs::major(rdev), rustix::fs::minor(rdev)),
                "{what}"
            );
        } else if ft.is_fifo() {
            assert_eq!(m.kind, InodeKind::Fifo);
        } else if ft.is_socket() {
            assert_eq!(m.kind, InodeKind::Socket);
        }
    }
    assert!(files > 5, "the walk saw the files");
}

/// A small directory for 1 KiB-block images: a 50-block directory, a
/// file reaching the double indirect block, a sparse file reaching the
/// triple indirect one (ext2 with 1 KiB blocks), hard links, symlinks, a
/// fifo, xattrs and an ACL.
fn small_host_dir(root: &Path) {
    let p = |n: &str| root.join(n);
    fs::create_dir_all(p("etc/many")).unwrap();
    fs::write(p("etc/hostname"), b"ami\n").unwrap();
    fs::write(p("etc/empty"), b"").unwrap();
    let big: Vec<u8> = fixtures::pattern(42, 1 << 20);
    fs::write(p("etc/big"), &big).unwrap();
    fs::hard_link(p("etc/hostname"), p("etc/many/also-hostname")).unwrap();
    for i in 0..1200 {
        let name = format!("etc/many/a-file-with-a-longer-name-{i:04}");
        fs::write(p(&name), format!("{i}\n")).unwrap();
    }
    // Data at the start and past 64 MiB + 268 KiB: the triple indirect
    // block with 1 KiB blocks.
    let f = fs::File::create(p("sparse")).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&fixtures::pattern(1, 5000), 0).unwrap();
    f.write_all_at(&fixtures::pattern(2, 3000), 80 << 20)
        .unwrap();
    drop(f);
    std::os::unix::fs::symlink("hostname", p("etc/short-link")).unwrap();
    std::os::unix::fs::symlink("x".repeat(300), p("etc/long-link")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    for (name, value) in [("user.small", &b"1"[..]), ("user.bigger", &[7u8; 700][..])] {
        rustix::fs::setxattr(
            p("etc/hostname"),
            name,
            value,
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
    }
    // u::rw-, u:1000:r--, g::r--, m::r--, o::---
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (1u16, 6u16, u32::MAX),
        (2, 4, 1000),
        (4, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 0, u32::MAX),
    ] {
        acl.extend_from_slice(&tag.to_le_bytes());
        acl.extend_from_slice(&perm.to_le_bytes());
        acl.extend_from_slice(&id.to_le_bytes());
    }
    // Not every host filesystem takes ACLs; the comparison reads back
    // whatever the host has.
    let _ = rustix::fs::setxattr(
        p("etc/big"),
        "system.posix_acl_access",
        &acl,
        rustix::fs::XattrFlags::empty(),
    );
}

fn mke2fs_image(dir: &Path, src: &Path, args: &[&str], size: &str) -> std::path::PathBuf {
    let img = dir.join(format!("img-{}", args.join("_").replace(['^', ','], "")));
    let mut all: Vec<&std::ffi::OsStr> = vec!["-q".as_ref(), "-F".as_ref()];
    all.extend(args.iter().map(std::ffi::OsStr::new));
    all.extend([
        "-d".as_ref(),
        src.as_os_str(),
        img.as_os_str(),
        size.as_ref(),
    ]);
    run("mke2fs", &all);
    img
}

#[test]
fn reads_mke2fs_images_of_a_small_directory() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    small_host_dir(&src);
    for args in [
        &["-t", "ext4", "-b", "4096"][..],
        &["-t", "ext4", "-b", "1024"],
        &["-t", "ext4", "-b", "1024", "-I", "128"],
        &["-t", "ext4", "-O", "^metadata_csum,^64bit,uninit_bg"],
        &["-t", "ext2", "-b", "1024"],
        &["-t", "ext3", "-b", "2048"],
    ] {
        let img = mke2fs_image(dir.path(), &src, args, "24M");
        let mut fs = Ext4Reader::new(fs::File::open(&img).unwrap())
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let info = fs.superblock_info();
        assert_eq!(info.features, dumpe2fs_features(&img), "{args:?}");
        let ext2 = args.contains(&"ext2");
        let ext4 = args.contains(&"ext4");
        assert_eq!(
            info.features.iter().any(|f| f == "extent"),
            ext4,
            "{args:?}"
        );
        assert_eq!(
            info.features.iter().any(|f| f == "has_journal"),
            !ext2,
            "{args:?}"
        );
        check_host_dir(&mut fs, &src, &HostCheck { secs_only: true });
        // With 1 KiB blocks and no extents the sparse file goes through the
        // triple indirect block.
        if ext2 {
            let ino = fs.lookup(b"/sparse").unwrap();
            let extents = fs.file_extents(ino).unwrap();
            let last = extents.last().unwrap();
            assert!(last.logical >= 12 + 256 + 256 * 256, "{extents:?}");
            assert_eq!(fs.read_file(ino).unwrap().len(), (80 << 20) + 3000);
        }
        if args.contains(&"uninit_bg") {
            assert_eq!(info.profile, Some(Profile::PvGrub));
        }
        let names: Vec<Vec<u8>> = {
            let etc = fs.lookup(b"/etc/many").unwrap();
            fs.read_dir(etc).unwrap().into_iter().map(|e| e.0).collect()
        };
        assert_eq!(names.len(), 1201);
        drop(fs);

        // e2fsck -D turns the multi-block directories into htrees: an
        // independent htree writer (e2fsprogs' rehash.c).
        if args.contains(&"1024") {
            let out = Command::new("e2fsck")
                .args(["-fyD".as_ref(), img.as_os_str()])
                .output()
                .expect("cannot run e2fsck (install e2fsprogs)");
            assert!(matches!(out.status.code(), Some(0 | 1)), "{out:?}");
            let (storage, reads) = counting(fs::File::open(&img).unwrap());
            let mut fs = Ext4Reader::new(storage).unwrap();
            check_htree_lookups(&mut fs, &reads, b"/etc/many");
            check_host_dir(&mut fs, &src, &HostCheck { secs_only: true });
        }
    }
}

#[test]
fn reads_a_mke2fs_image_of_the_edge_directory() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("edge");
    fs::create_dir(&src).unwrap();
    let report = fixtures::write_edge_dir(&src, &EdgeScale::tiny()).unwrap();
    for line in &report.skipped {
        eprintln!("write_edge_dir skipped {line}");
    }
    let img = mke2fs_image(dir.path(), &src, &["-t", "ext4", "-b", "4096"], "64M");
    let mut fs = Ext4Reader::new(fs::File::open(&img).unwrap()).unwrap();
    check_host_dir(&mut fs, &src, &HostCheck { secs_only: true });
}

// ---------------------------------------------------------------------------
// (c) Corruption
// ---------------------------------------------------------------------------

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Byte offset of inode `ino` (from the group descriptor table).
fn inode_offset(img: &[u8], ino: u32) -> usize {
    let sb = &img[1024..2048];
    let bs = 1024usize << le32(sb, 24);
    let desc_size = if le32(sb, 0x60) & 0x80 != 0 {
        usize::from(le16(sb, 0xFE))
    } else {
        32
    };
    let ipg = le32(sb, 40);
    let group = ((ino - 1) / ipg) as usize;
    let gdt = if bs == 1024 { 2048 } else { bs };
    let desc = &img[gdt + group * desc_size..];
    let mut table = u64::from(le32(desc, 8));
    if desc_size >= 64 {
        table |= u64::from(le32(desc, 0x28)) << 32;
    }
    table as usize * bs + ((ino - 1) % ipg) as usize * usize::from(le16(sb, 88))
}

fn fix_superblock_checksum(img: &mut [u8]) {
    let c = crc32c(!0, &img[1024..1024 + 0x3FC]);
    img[1024 + 0x3FC..1024 + 0x400].copy_from_slice(&c.to_le_bytes());
}

fn small_tree() -> Tree {
    let mut t = deep_tree(100, 40);
    let etc = t.create_dir_all(b"/etc", Metadata::new(0o755)).unwrap();
    t.add(
        etc,
        b"hostname",
        Node::file(
            FileData::from_bytes(b"ami\n".to_vec()),
            Metadata::new(0o644)
                .xattr(b"user.k", b"v")
                .xattr(b"user.big", &[3; 900]),
        ),
    )
    .unwrap();
    t.add(
        etc,
        b"link",
        Node::symlink(vec![b'l'; 100], Metadata::new(0o777)),
    )
    .unwrap();
    t.add(
        etc,
        b"fast",
        Node::symlink(b"hostname".to_vec(), Metadata::new(0o777)),
    )
    .unwrap();
    t
}

#[test]
fn targeted_corruption_gives_the_right_errors() {
    let tree = small_tree();
    let opts = FormatOptions::new().block_size(1024).journal(false);
    let (img, _) = build(&tree, &opts);
    let open = |img: &[u8]| Ext4Reader::new(Cursor::new(img.to_vec()));

    // Too short, wrong magic.
    assert!(matches!(open(&img[..2000]), Err(ReadError::NotExt4)));
    let mut bad = img.clone();
    bad[1024 + 0x38] = 0;
    assert!(matches!(open(&bad), Err(ReadError::NotExt4)));
    // Superblock checksum.
    let mut bad = img.clone();
    bad[1024 + 0x78] ^= 1; // label
    assert!(matches!(open(&bad), Err(ReadError::Corrupt { .. })));
    fix_superblock_checksum(&mut bad);
    assert!(open(&bad).is_ok());
    // Impossible geometry: 64 KiB * 2^1 blocks, inode count not groups x ipg,
    // an unknown incompatible feature.
    for (off, v) in [(0x18usize, 7u8), (0x00, 0x55), (0x62, 0x80)] {
        let mut bad = img.clone();
        bad[1024 + off] = bad[1024 + off].wrapping_add(v);
        fix_superblock_checksum(&mut bad);
        assert!(
            matches!(
                open(&bad),
                Err(ReadError::Corrupt { .. } | ReadError::Unsupported { .. })
            ),
            "superblock byte {off:#x}"
        );
    }

    // An inode checksum: caught with verification, ignored without.
    let mut fs = open(&img).unwrap();
    let host = fs.lookup(b"/etc/hostname").unwrap();
    let frag = fs.lookup(b"/fragmented").unwrap();
    let etc = fs.lookup(b"/etc").unwrap();
    let mut bad = img.clone();
    let off = inode_offset(&bad, host);
    bad[off + 0x10] ^= 0x40; // mtime
    let mut fs = open(&bad).unwrap();
    assert!(
        matches!(fs.metadata(host), Err(ReadError::Corrupt { what }) if what.contains("checksum"))
    );
    fs.set_verify_checksums(false);
    assert!(fs.metadata(host).is_ok());
    assert_eq!(fs.read_file(host).unwrap(), b"ami\n");

    // Two index entries naming the same extent tree node.
    let mut bad = img.clone();
    let root = inode_offset(&bad, frag) + 0x28;
    assert_eq!(le16(&bad, root + 6), 1, "depth-1 tree for 100 extents");
    assert_eq!(le16(&bad, root + 2), 2, "in two leaves");
    let first_child = le32(&bad, root + 12 + 4);
    bad[root + 24 + 4..root + 24 + 8].copy_from_slice(&first_child.to_le_bytes());
    let mut fs = open(&bad).unwrap();
    fs.set_verify_checksums(false);
    assert!(matches!(fs.read_file(frag), Err(ReadError::Corrupt { .. })));
    // A root deeper than the kernel allows.
    let mut bad = img.clone();
    bad[root + 6] = 6;
    let mut fs = open(&bad).unwrap();
    fs.set_verify_checksums(false);
    assert!(matches!(
        fs.file_extents(frag),
        Err(ReadError::Corrupt { .. })
    ));

    // A directory record with rec_len 0, and one naming a missing inode.
    let mut fs = open(&img).unwrap();
    let block = fs.file_extents(etc).unwrap()[0].physical as usize * 1024;
    for (off, value) in [(4usize, 0u32), (24, 0xFFFF_FF00)] {
        let mut bad = img.clone();
        if off == 4 {
            bad[block + 4..block + 6].copy_from_slice(&0u16.to_le_bytes());
        } else {
            bad[block + off..block + off + 4].copy_from_slice(&value.to_le_bytes());
        }
        let mut fs = open(&bad).unwrap();
        assert!(
            matches!(fs.read_dir(etc), Err(ReadError::Corrupt { .. })),
            "with checksums"
        );
        fs.set_verify_checksums(false);
        assert!(
            matches!(fs.read_dir(etc), Err(ReadError::Corrupt { .. })),
            "without checksums"
        );
        assert!(matches!(
            fs.lookup(b"/etc/hostname"),
            Err(ReadError::Corrupt { .. })
        ));
    }
}

/// A small deterministic PRNG (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Damages `img` in a few places: in the metadata at its start (superblock,
/// descriptors, bitmaps, inode tables), where the writer wrote something
/// (directories, extent blocks, xattr blocks, data), or anywhere.
fn mutate(rng: &mut Rng, img: &mut [u8], report: &Report) {
    let bs = u64::from(report.block_size);
    let written: Vec<_> = report
        .written
        .runs
        .iter()
        .filter(|r| r.start < r.end)
        .collect();
    for _ in 0..1 + rng.below(6) {
        let at = match rng.below(10) {
            0..=3 => rng.below((64 * bs).min(img.len() as u64)),
            4..=7 if !written.is_empty() => {
                let r = written[rng.below(written.len() as u64) as usize];
                (r.start + rng.below(r.end - r.start)) * bs + rng.below(bs)
            }
            _ => rng.below(img.len() as u64),
        } as usize;
        let at = at.min(img.len() - 4) & !1;
        let interesting = [
            0u32,
            1,
            2,
            11,
            12,
            0x7F,
            0x80,
            0xFF,
            0xFFFF,
            0x1_0000,
            0x7FFF_FFFF,
            u32::MAX,
        ];
        match rng.below(5) {
            0 => img[at] ^= 1 << rng.below(8),
            1 => img[at] = rng.next() as u8,
            2 => img[at..at + 2]
                .copy_from_slice(&(interesting[rng.below(12) as usize] as u16).to_le_bytes()),
            3 => {
                img[at..at + 4].copy_from_slice(&interesting[rng.below(12) as usize].to_le_bytes())
            }
            _ => img[at..at + 4].copy_from_slice(&(rng.next() as u32).to_le_bytes()),
        }
    }
    if rng.below(4) == 0 {
        // Hit the superblock itself, keeping its checksum right half the time.
        let at = 1024 + rng.below(0x180) as usize;
        img[at] = rng.next() as u8;
    }
    if rng.below(2) == 0 {
        fix_superblock_checksum(img);
    }
}

/// How far [`exercise`] got.
#[derive(Debug, Default)]
struct Reached {
    opened: u64,
    calls_ok: u64,
    calls_err: u64,
    /// Calls that found the image corrupt.
    corrupt: u64,
}

/// Calls every reader function on the image; only panics and hangs matter
/// (the counts show that damaged images still get read).
fn exercise(img: &[u8], verify: bool, reached: &mut Reached) {
    let Ok(mut fs) = Ext4Reader::new(Cursor::new(img)) else {
        return;
    };
    reached.opened += 1;
    let mut count = |ok: Result<(), &ReadError>| match ok {
        Ok(()) => reached.calls_ok += 1,
        Err(e) => {
            reached.calls_err += 1;
            if matches!(e, ReadError::Corrupt { .. }) {
                reached.corrupt += 1;
            }
        }
    };
    fs.set_verify_checksums(verify);
    fs.set_max_read_size(1 << 20);
    let info = fs.superblock_info();
    for path in [
        &b"/etc/hostname"[..],
        b"/etc/link",
        b"/fragmented",
        b"/huge-dir/x",
        b"/../..",
    ] {
        count(fs.read_path(path).as_ref().map(drop));
    }
    let mut inos: Vec<u32> = (1..=info.inodes_count.min(48)).collect();
    let mut dirs = vec![2u32];
    let mut seen = std::collections::HashSet::new();
    while let Some(d) = dirs.pop() {
        if !seen.insert(d) || seen.len() > 64 {
            continue;
        }
        let listing = fs.read_dir(d);
        count(listing.as_ref().map(drop));
        if let Ok(entries) = listing {
            for (_, ino, ftype) in entries.into_iter().take(64) {
                inos.push(ino);
                if ftype == 2 {
                    dirs.push(ino);
                }
            }
        }
    }
    inos.sort_unstable();
    inos.dedup();
    for ino in inos.into_iter().take(200) {
        count(fs.metadata(ino).as_ref().map(drop));
        count(fs.read_file(ino).as_ref().map(drop));
        count(fs.read_link(ino).as_ref().map(drop));
        count(fs.xattrs(ino).as_ref().map(drop));
        count(fs.file_extents(ino).as_ref().map(drop));
        let mut sink = Vec::new();
        let limited = &mut Limited {
            out: &mut sink,
            left: 2 << 20,
        };
        count(fs.read_file_to(ino, limited).as_ref().map(drop));
    }
    let _ = fs.into_inner();
}

#[test]
fn mini_fuzz_never_panics_or_hangs() {
    let iterations: u64 = std::env::var("AMI_READER_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let tree = small_tree();
    let bases: Vec<(Vec<u8>, Report)> = [
        FormatOptions::new().block_size(1024).journal(false),
        FormatOptions::new()
            .block_size(1024)
            .journal(false)
            .profile(Profile::PvGrub),
        FormatOptions::new().block_size(4096).journal(false),
    ]
    .iter()
    .map(|o| build(&tree, o))
    .collect();
    // The bases themselves are fine.
    for (img, _) in &bases {
        let mut reached = Reached::default();
        exercise(img, true, &mut reached);
        assert!(
            reached.calls_ok > 200 && reached.corrupt == 0,
            "{reached:?}"
        );
        let mut fs = Ext4Reader::new(Cursor::new(&img[..])).unwrap();
        assert_eq!(fs.read_path(b"/etc/hostname").unwrap(), b"ami\n");
    }
    let mut failures = Vec::new();
    let mut slowest = (Duration::ZERO, 0);
    let mut reached = Reached::default();
    for seed in 0..iterations {
        let (base, report) = &bases[(seed % 3) as usize];
        let mut rng = Rng(seed);
        let mut img = base.clone();
        mutate(&mut rng, &mut img, report);
        let verify = seed % 4 == 0;
        let start = Instant::now();
        if catch_unwind(AssertUnwindSafe(|| exercise(&img, verify, &mut reached))).is_err() {
            failures.push(seed);
        }
        let took = start.elapsed();
        if took > slowest.0 {
            slowest = (took, seed);
        }
    }
    assert!(
        failures.is_empty(),
        "the reader panicked for seeds {failures:?} (rerun one with AMI_READER_FUZZ_ITERS)"
    );
    // Most damaged images still open and mostly read: the damage reaches
    // the parsers instead of stopping at the superblock.
    assert!(reached.opened > iterations * 6 / 10, "{reached:?}");
    assert!(reached.calls_ok > reached.calls_err, "{reached:?}");
    eprintln!("mini-fuzz: {iterations} images, {reached:?}, slowest {slowest:?}");
    assert!(
        slowest.0 < Duration::from_secs(20),
        "seed {} took {:?}",
        slowest.1,
        slowest.0
    );
}
