//! Shared helpers of the ext4 writer's end-to-end tests: formatting into
//! files and pre-filled buffers, the `e2fsck` gate, `debugfs` batches and
//! their parsers, and [`assert_matches_tree`], which checks an image against
//! its tree with two independent readers (`debugfs` from e2fsprogs and the
//! pure-Rust `ext4-view`).
//!
//! Every test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ami_core::progress::NoProgress;
use ami_core::{FileData, NodeId, NodeKind, Timestamp, Tree};
use ami_ext4::{format, FormatOptions, Report};
use tempfile::TempDir;

// ---------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------

/// Formats `tree` into a fresh (empty) file `img` of a new temporary
/// directory, truncated to the filesystem size afterwards.
///
/// # Panics
/// If formatting fails.
pub fn format_to_file(tree: &Tree, opts: &FormatOptions) -> (TempDir, PathBuf, Report) {
    try_format_to_file(tree, opts).unwrap_or_else(|e| panic!("format failed: {e} ({e:?})"))
}

/// [`format_to_file`] that returns the writer's error instead of panicking.
pub fn try_format_to_file(
    tree: &Tree,
    opts: &FormatOptions,
) -> Result<(TempDir, PathBuf, Report), ami_ext4::Error> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("img");
    let mut f = std::fs::File::create(&path).expect("create image file");
    let report = format(&mut f, tree, opts, &NoProgress)?;
    let len = f.metadata().expect("image metadata").len();
    assert!(
        len <= report.size_bytes(),
        "the writer wrote {len} bytes, past the end of the {}-byte filesystem",
        report.size_bytes()
    );
    f.set_len(report.size_bytes()).expect("set image length");
    drop(f);
    Ok((dir, path, report))
}

/// The fill byte of [`format_to_prefilled`]: anything the writer relies on
/// being zero shows up as garbage.
pub const PREFILL: u8 = 0xD1;

/// Formats `tree` into a `Cursor<Vec<u8>>` holding `len` bytes of
/// [`PREFILL`], with `assume_zeroed(false)` forced on. Checks that the
/// writer did not grow the buffer past `len` when `len` covers the
/// filesystem, and returns the buffer cut to the filesystem size.
pub fn format_to_prefilled(tree: &Tree, opts: &FormatOptions, len: u64) -> (Vec<u8>, Report) {
    let opts = opts.clone().assume_zeroed(false);
    let mut cur = Cursor::new(vec![PREFILL; len as usize]);
    let report =
        format(&mut cur, tree, &opts, &NoProgress).unwrap_or_else(|e| panic!("format failed: {e}"));
    let mut bytes = cur.into_inner();
    let size = report.size_bytes();
    if len >= size {
        assert_eq!(
            bytes.len() as u64,
            len,
            "the writer wrote past the end of the filesystem"
        );
    }
    bytes.truncate(size as usize);
    (bytes, report)
}

/// Writes `bytes` to a file `img` in a new temporary directory.
pub fn bytes_to_file(bytes: &[u8]) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("img");
    std::fs::write(&path, bytes).expect("write image");
    (dir, path)
}

/// Bytes the image file really occupies on disk (holes excluded).
pub fn allocated_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).expect("image metadata").blocks() * 512
}

// ---------------------------------------------------------------------------
// External tools
// ---------------------------------------------------------------------------

/// A command for an e2fsprogs tool, found on `PATH` or in the usual sbin
/// directories (which are not on a normal user's `PATH` on Debian).
pub fn tool(name: &str) -> Command {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin"].iter().map(PathBuf::from));
    let found = dirs.iter().map(|d| d.join(name)).find(|p| p.is_file());
    let Some(exe) = found else {
        panic!(
            "`{name}` not found: these tests need e2fsprogs (e2fsck, debugfs, dumpe2fs) installed"
        );
    };
    let mut cmd = Command::new(exe);
    cmd.env("LC_ALL", "C")
        .env("TZ", "UTC")
        .env("DEBUGFS_PAGER", "__none__");
    cmd
}

fn run(mut cmd: Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The numbers of e2fsck's summary line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsckSummary {
    /// Inodes in use.
    pub used_inodes: u64,
    /// Inodes in total.
    pub inodes: u64,
    /// Blocks in use.
    pub used_blocks: u64,
    /// Blocks in total.
    pub blocks: u64,
}

/// Runs `e2fsck -fn` plus `extra` arguments; returns the exit code and the
/// combined output.
pub fn e2fsck(path: &Path, extra: &[&str]) -> (i32, String) {
    let mut cmd = tool("e2fsck");
    cmd.arg("-fn").args(extra).arg(path);
    let out = run(cmd);
    (out.status.code().unwrap_or(-1), text(&out))
}

/// Checks the output of a clean `e2fsck -fn`: the version line, the five
/// pass headers and the summary line, nothing else. Returns the summary.
pub fn check_fsck_output(rc: i32, out: &str) -> Result<FsckSummary, String> {
    const PASSES: [&str; 5] = [
        "Pass 1: Checking inodes, blocks, and sizes",
        "Pass 2: Checking directory structure",
        "Pass 3: Checking directory connectivity",
        "Pass 4: Checking reference counts",
        "Pass 5: Checking group summary information",
    ];
    if rc != 0 {
        return Err(format!("e2fsck exited with {rc}"));
    }
    let mut passes = Vec::new();
    let mut summary = None;
    for line in out.lines() {
        if PASSES.contains(&line) {
            passes.push(line);
        } else if line.starts_with("e2fsck ") && line.contains('(') {
            // Version line.
        } else if let Some(s) = parse_fsck_summary(line) {
            if summary.replace(s).is_some() {
                return Err("two summary lines".into());
            }
        } else {
            return Err(format!("unexpected line {line:?}"));
        }
    }
    if passes != PASSES {
        return Err(format!("pass headers {passes:?}"));
    }
    summary.ok_or_else(|| "no summary line".into())
}

fn parse_fsck_summary(line: &str) -> Option<FsckSummary> {
    // "<name>: 15/4096 files (0.0% non-contiguous), 1324/16384 blocks"
    let (_, rest) = line.rsplit_once(": ")?;
    let (files, rest) = rest.split_once(" files (")?;
    let (_, blocks) = rest.split_once("% non-contiguous), ")?;
    let blocks = blocks.strip_suffix(" blocks")?;
    let pair = |s: &str| -> Option<(u64, u64)> {
        let (a, b) = s.split_once('/')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    };
    let (used_inodes, inodes) = pair(files)?;
    let (used_blocks, blocks) = pair(blocks)?;
    Some(FsckSummary {
        used_inodes,
        inodes,
        used_blocks,
        blocks,
    })
}

/// `e2fsck -fn` must exit 0 and print nothing but its version line, the
/// five "Pass N" headers and the summary line. Prints the whole output on
/// failure. Returns the summary.
pub fn e2fsck_clean(path: &Path) -> FsckSummary {
    let (rc, out) = e2fsck(path, &[]);
    check_fsck_output(rc, &out)
        .unwrap_or_else(|e| panic!("e2fsck -fn {} is not clean: {e}\n{out}", path.display()))
}

/// [`e2fsck_clean`] plus a check that the summary agrees with the
/// writer's [`Report`].
pub fn e2fsck_clean_report(path: &Path, report: &Report) -> FsckSummary {
    let s = e2fsck_clean(path);
    assert_eq!(
        s,
        FsckSummary {
            used_inodes: report.used_inodes,
            inodes: report.inodes_count,
            used_blocks: report.used_blocks,
            blocks: report.blocks_count,
        },
        "e2fsck's summary disagrees with the writer's report"
    );
    // The report's block maps: `allocated` is what the bitmaps mark (as
    // many blocks as e2fsck counts in use), `written` lies inside it.
    let bs = report.block_size;
    assert_eq!(
        (report.allocated.block_size, report.written.block_size),
        (bs, bs)
    );
    let total: u64 = report.allocated.runs.iter().map(|r| r.end - r.start).sum();
    // (With 1 KiB blocks this includes block 0, the boot block, which lies
    // before group 0 but is counted as used.)
    assert_eq!(total, report.used_blocks, "allocated runs vs used blocks");
    for w in &report.written.runs {
        assert!(
            report
                .allocated
                .runs
                .iter()
                .any(|a| a.start <= w.start && w.end <= a.end),
            "written run {w:?} outside the allocated blocks"
        );
    }
    for runs in [&report.allocated.runs, &report.written.runs] {
        assert!(
            runs.windows(2).all(|p| p[0].end < p[1].start) && runs.iter().all(|r| r.start < r.end),
            "block runs not sorted and disjoint: {runs:?}"
        );
        assert!(runs.last().is_none_or(|r| r.end <= report.blocks_count));
    }
    s
}

/// Runs `debugfs -f` with `cmds` (one per line) and returns its stdout.
/// Fails if debugfs prints anything on stderr besides its version line.
pub fn debugfs(path: &Path, cmds: &[String]) -> String {
    String::from_utf8_lossy(&debugfs_raw(path, cmds, &[])).into_owned()
}

/// [`debugfs`] that tolerates stderr lines containing one of `allowed`.
pub fn debugfs_allowing(path: &Path, cmds: &[String], allowed: &[&str]) -> String {
    String::from_utf8_lossy(&debugfs_raw(path, cmds, allowed)).into_owned()
}

/// `debugfs htree_dump` of directory `dir` (a path or `<ino>`). On
/// filesystems without `metadata_csum`, debugfs 1.47 complains on stderr
/// that an htree block "does not have space for checksum" (it does the
/// same on mke2fs + `e2fsck -D` images); that line is tolerated there.
pub fn htree_dump(path: &Path, dir: &str) -> String {
    let allowed: &[&str] = if has_metadata_csum(path) {
        &[]
    } else {
        &["Directory block does not have space for checksum while calculating checksum for"]
    };
    debugfs_allowing(path, &[format!("htree_dump {dir}")], allowed)
}

/// Whether the image has the `metadata_csum` feature.
pub fn has_metadata_csum(img: &Path) -> bool {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(img).expect("open image");
    let mut w = [0u8; 4];
    f.read_exact_at(&mut w, 1024 + 0x64)
        .expect("read s_feature_ro_compat");
    u32::from_le_bytes(w) & 0x400 != 0
}

fn debugfs_raw(path: &Path, cmds: &[String], allowed: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("cmds");
    let mut script = String::new();
    for c in cmds {
        assert!(!c.contains('\n'), "debugfs command with a newline: {c:?}");
        script.push_str(c);
        script.push('\n');
    }
    std::fs::write(&file, script).expect("write debugfs script");
    let mut cmd = tool("debugfs");
    cmd.arg("-f").arg(&file).arg(path);
    let out = run(cmd);
    let err = String::from_utf8_lossy(&out.stderr);
    let bad: Vec<&str> = err
        .lines()
        .filter(|l| !(l.starts_with("debugfs ") && l.contains('(')))
        .filter(|l| !l.is_empty() && !allowed.iter().any(|a| l.contains(a)))
        .collect();
    assert!(
        out.status.success() && bad.is_empty(),
        "debugfs failed ({}) on {}: {}",
        out.status,
        path.display(),
        bad.join("\n")
    );
    out.stdout
}

/// Runs `cmds` in one debugfs process and returns the raw output of each.
pub fn debugfs_each(path: &Path, cmds: &[String]) -> Vec<Vec<u8>> {
    let out = debugfs_raw(path, cmds, &[]);
    let mut pos = 0;
    let mut starts = Vec::with_capacity(cmds.len());
    for c in cmds {
        let marker = format!("debugfs: {c}\n");
        let at = find(&out[pos..], marker.as_bytes())
            .unwrap_or_else(|| panic!("debugfs output lacks the echo of {c:?}"))
            + pos;
        starts.push((at, at + marker.len()));
        pos = at + marker.len();
    }
    (0..cmds.len())
        .map(|i| {
            let end = starts.get(i + 1).map_or(out.len(), |s| s.0);
            out[starts[i].1..end].to_vec()
        })
        .collect()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Runs `dumpe2fs` (with `-h` for the superblock only) and returns stdout.
pub fn dumpe2fs(path: &Path, header_only: bool) -> String {
    let mut cmd = tool("dumpe2fs");
    if header_only {
        cmd.arg("-h");
    }
    cmd.arg(path);
    let out = run(cmd);
    assert!(out.status.success(), "dumpe2fs failed: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A field of `dumpe2fs -h` output ("Block count:" → "16384").
pub fn dumpe2fs_field<'a>(out: &'a str, name: &str) -> Option<&'a str> {
    out.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|r| r.strip_prefix(':'))
            .map(str::trim)
    })
}

// ---------------------------------------------------------------------------
// debugfs parsers
// ---------------------------------------------------------------------------

/// What `debugfs stat` says about an inode.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stat {
    /// Inode number.
    pub ino: u32,
    /// "regular", "directory", "symlink", "block special", "character
    /// special", "FIFO" or "socket".
    pub kind: String,
    /// Permission bits (including setuid, setgid and sticky).
    pub mode: u16,
    /// `i_flags`.
    pub flags: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// `i_size`.
    pub size: u64,
    /// Block of the xattr block (0 if none).
    pub file_acl: u64,
    /// `i_links_count`.
    pub links: u32,
    /// `i_blocks` in 512-byte units.
    pub blockcount: u64,
    /// Change time.
    pub ctime: Timestamp,
    /// Access time.
    pub atime: Timestamp,
    /// Modification time.
    pub mtime: Timestamp,
    /// Creation time.
    pub crtime: Timestamp,
    /// `i_extra_isize`.
    pub extra_isize: Option<u32>,
    /// Extended attributes: name and value length, in debugfs's order.
    pub xattrs: Vec<(String, usize)>,
    /// Target of a fast (in-inode) symlink.
    pub fast_link: Option<Vec<u8>>,
    /// Device numbers and whether they use the new encoding.
    pub device: Option<(u32, u32, bool)>,
    /// The text after "EXTENTS:" (extent dump), if any.
    pub extents: Option<String>,
}

/// Decodes an ext4 time as debugfs prints it: low 32 bits of the seconds
/// and the `_extra` word (nanoseconds << 2 | epoch bits).
pub fn decode_time(lo: u32, extra: u32) -> Timestamp {
    Timestamp {
        secs: i64::from(lo as i32) + (i64::from(extra & 3) << 32),
        nanos: extra >> 2,
    }
}

fn parse_time(line: &str) -> Timestamp {
    // "0x6553f100:00000004 -- Tue Nov 14 22:13:20 2023"
    let hex = line
        .trim()
        .strip_prefix("0x")
        .unwrap_or_else(|| panic!("time {line:?}"));
    let (lo, rest) = hex.split_once(':').expect("time with extra");
    let extra = &rest[..8];
    decode_time(
        u32::from_str_radix(lo, 16).expect("time seconds"),
        u32::from_str_radix(extra, 16).expect("time extra"),
    )
}

/// Value of `key` in a line of "Key: value   Key2: value2" pairs.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(key)?;
    line[at + key.len()..].split_whitespace().next()
}

/// Parses the output of `debugfs stat`.
pub fn parse_stat(raw: &[u8]) -> Stat {
    // A fast symlink's target is printed raw and may hold any byte, so it
    // is cut out before the rest is read as text.
    let (head, fast) = match find(raw, b"Fast link dest: \"") {
        Some(at) => (&raw[..at], Some(&raw[at + 17..])),
        None => (raw, None),
    };
    let text = String::from_utf8_lossy(head);
    let mut s = Stat::default();
    let mut lines = text.lines().peekable();
    let num = |v: Option<&str>, what: &str| -> i64 {
        v.and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("debugfs stat: no {what} in\n{text}"))
    };
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("Inode: ") && t.contains("Type: ") {
            s.ino = num(field(t, "Inode:"), "inode") as u32;
            let ty = &t[t.find("Type: ").expect("type") + 6..];
            s.kind = ty[..ty.find("    Mode:").expect("mode")].to_string();
            s.mode = u16::from_str_radix(field(t, "Mode:").expect("mode"), 8).expect("mode");
            let fl = field(t, "Flags:").expect("flags");
            s.flags = u32::from_str_radix(fl.trim_start_matches("0x"), 16).expect("flags");
        } else if t.starts_with("User:") {
            s.uid = num(field(t, "User:"), "uid") as u32;
            s.gid = num(field(t, "Group:"), "gid") as u32;
            s.size = num(field(t, "Size:"), "size") as u64;
        } else if t.starts_with("File ACL:") {
            s.file_acl = num(field(t, "File ACL:"), "file acl") as u64;
        } else if t.starts_with("Links:") {
            s.links = num(field(t, "Links:"), "links") as u32;
            s.blockcount = num(field(t, "Blockcount:"), "blockcount") as u64;
        } else if let Some(v) = t.strip_prefix("ctime:") {
            s.ctime = parse_time(v);
        } else if let Some(v) = t.strip_prefix("atime:") {
            s.atime = parse_time(v);
        } else if let Some(v) = t.strip_prefix("mtime:") {
            s.mtime = parse_time(v);
        } else if let Some(v) = t.strip_prefix("crtime:") {
            s.crtime = parse_time(v);
        } else if let Some(v) = t.strip_prefix("Size of extra inode fields:") {
            s.extra_isize = v.trim().parse().ok();
        } else if t == "Extended attributes:" {
            while let Some(l) = lines.peek() {
                let Some(entry) = l.strip_prefix("  ") else {
                    break;
                };
                let open = entry.find(" (").expect("xattr length");
                let close = entry[open..].find(')').expect("xattr length") + open;
                let len = entry[open + 2..close].parse().expect("xattr length");
                s.xattrs.push((entry[..open].to_string(), len));
                lines.next();
            }
        } else if t.contains("Device major/minor number:") {
            let v = field(t, "number:").expect("device");
            let (ma, mi) = v.split_once(':').expect("major:minor");
            s.device = Some((
                ma.parse().expect("major"),
                mi.parse().expect("minor"),
                t.starts_with("(New-style)"),
            ));
        } else if t == "EXTENTS:" {
            let rest: Vec<&str> = lines.by_ref().collect();
            s.extents = Some(rest.join("\n"));
        }
    }
    if let Some(f) = fast {
        let n = s.size as usize;
        assert!(
            f.len() > n && f[n] == b'"',
            "fast link dest of {n} bytes not followed by a quote"
        );
        s.fast_link = Some(f[..n].to_vec());
    }
    assert!(s.ino != 0, "not a debugfs stat output:\n{text}");
    s
}

/// One entry of `debugfs ls -p`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LsEntry {
    /// Inode number.
    pub ino: u32,
    /// Full `i_mode` (type and permissions).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Raw name bytes.
    pub name: Vec<u8>,
    /// Size; `None` for directories.
    pub size: Option<u64>,
}

/// Parses `debugfs ls -p` output: records `/ino/mode/uid/gid/name/size/`.
/// Names are printed raw, but never contain `/`, so splitting on `/` is
/// exact even for names with newlines.
pub fn parse_ls_p(raw: &[u8]) -> Vec<LsEntry> {
    let toks: Vec<&[u8]> = raw.split(|&b| b == b'/').collect();
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert!(
        toks[0].iter().all(u8::is_ascii_whitespace),
        "ls -p output starts with {:?}",
        s(toks[0])
    );
    let mut out = Vec::new();
    let mut i = 1;
    while i + 6 < toks.len() {
        let num = |b: &[u8]| -> i64 {
            s(b).parse()
                .unwrap_or_else(|_| panic!("ls -p field {:?} in {:?}", s(b), s(raw)))
        };
        let e = LsEntry {
            ino: num(toks[i]) as u32,
            mode: u32::from_str_radix(&s(toks[i + 1]), 8).expect("ls -p mode"),
            uid: num(toks[i + 2]) as u32,
            gid: num(toks[i + 3]) as u32,
            name: toks[i + 4].to_vec(),
            size: (!toks[i + 5].is_empty()).then(|| num(toks[i + 5]) as u64),
        };
        assert!(
            toks[i + 6].iter().all(u8::is_ascii_whitespace),
            "ls -p record not followed by a newline: {:?}",
            s(toks[i + 6])
        );
        out.push(e);
        i += 7;
    }
    assert_eq!(i, toks.len(), "trailing ls -p output in {:?}", s(raw));
    out
}

// ---------------------------------------------------------------------------
// Expectations from the tree
// ---------------------------------------------------------------------------

/// Logical blocks a file of `len` bytes with data in `ranges` must map:
/// every block touching data, plus block 0 (GRUB 2.06 cannot read a file
/// whose first block is a hole). Zero bytes inside the ranges are data.
pub fn expected_file_blocks(ranges: &[std::ops::Range<u64>], len: u64, bs: u64) -> BTreeSet<u64> {
    let mut set = BTreeSet::new();
    if len > 0 {
        set.insert(0);
    }
    for r in ranges {
        set.extend(r.start / bs..r.end.div_ceil(bs));
    }
    set
}

/// Number of reachable names of every node.
pub fn name_counts(tree: &Tree) -> HashMap<NodeId, u32> {
    let mut m = HashMap::new();
    for (_, id) in tree.walk() {
        *m.entry(id).or_insert(0) += 1;
    }
    m
}

/// Whether the writer adds its own `lost+found` (the tree has no directory
/// of that name at the root).
pub fn synthesized_lost_found(tree: &Tree) -> bool {
    !matches!(
        tree.lookup(b"lost+found").map(|id| &tree.node(id).kind),
        Some(NodeKind::Dir(_))
    )
}

/// The link count ext4 must store for `id`.
pub fn expected_links(tree: &Tree, id: NodeId, names: &HashMap<NodeId, u32>) -> u32 {
    match &tree.node(id).kind {
        NodeKind::Dir(d) => {
            let mut subdirs = d
                .entries()
                .filter(|(_, c)| matches!(tree.node(*c).kind, NodeKind::Dir(_)))
                .count() as u32;
            if id == tree.root() && synthesized_lost_found(tree) {
                subdirs += 1;
            }
            let n = 2 + subdirs;
            // dir_nlink: past 65,000 the count is stored as 1.
            if n > 65_000 {
                1
            } else {
                n
            }
        }
        _ => names[&id],
    }
}

/// debugfs's name of a node kind.
pub fn debugfs_kind(kind: &NodeKind) -> &'static str {
    match kind {
        NodeKind::File(_) => "regular",
        NodeKind::Dir(_) => "directory",
        NodeKind::Symlink(_) => "symlink",
        NodeKind::CharDevice(_) => "character special",
        NodeKind::BlockDevice(_) => "block special",
        NodeKind::Fifo => "FIFO",
        NodeKind::Socket => "socket",
    }
}

fn ext4_view_kind(kind: &NodeKind) -> ext4_view::FileType {
    use ext4_view::FileType as F;
    match kind {
        NodeKind::File(_) => F::Regular,
        NodeKind::Dir(_) => F::Directory,
        NodeKind::Symlink(_) => F::Symlink,
        NodeKind::CharDevice(_) => F::CharacterDevice,
        NodeKind::BlockDevice(_) => F::BlockDevice,
        NodeKind::Fifo => F::Fifo,
        NodeKind::Socket => F::Socket,
    }
}

/// Shows a path for messages.
pub fn show(path: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(path).escape_debug())
}

// ---------------------------------------------------------------------------
// POSIX ACLs
// ---------------------------------------------------------------------------

/// An ACL entry: tag, permissions, and the id for `ACL_USER`/`ACL_GROUP`.
pub type AclEntry = (u16, u16, Option<u32>);

const ACL_USER: u16 = 0x02;
const ACL_GROUP: u16 = 0x08;

fn has_id(tag: u16) -> bool {
    tag == ACL_USER || tag == ACL_GROUP
}

/// Decodes the Linux VFS ACL xattr format (version 2, 8-byte entries).
pub fn decode_vfs_acl(v: &[u8]) -> Vec<AclEntry> {
    assert_eq!(&v[..4], &2u32.to_le_bytes(), "VFS ACL version");
    assert_eq!((v.len() - 4) % 8, 0, "VFS ACL length {}", v.len());
    v[4..]
        .chunks(8)
        .map(|e| {
            let tag = u16::from_le_bytes([e[0], e[1]]);
            let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            (
                tag,
                u16::from_le_bytes([e[2], e[3]]),
                has_id(tag).then_some(id),
            )
        })
        .collect()
}

/// Encodes ACL entries in ext4's on-disk format: version-1 header, 4-byte
/// entries for the tags without an id and 8-byte entries for `ACL_USER` and
/// `ACL_GROUP` (written here from the kernel's `ext4_acl_entry` layout, to
/// check the writer's conversion independently).
pub fn ext4_disk_acl(entries: &[AclEntry]) -> Vec<u8> {
    let mut v = 1u32.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        if let Some(id) = id {
            v.extend_from_slice(&id.to_le_bytes());
        }
    }
    v
}

fn is_acl(name: &[u8]) -> bool {
    name == b"system.posix_acl_access" || name == b"system.posix_acl_default"
}

// ---------------------------------------------------------------------------
// The comparison
// ---------------------------------------------------------------------------

/// Reads file `path` through ext4-view and compares it with `data`, chunk by
/// chunk (so big files need no big buffers).
fn compare_content_ext4_view(fs: &ext4_view::Ext4, path: &[u8], data: &FileData) {
    let vpath = ext4_path(path);
    let mut f = fs
        .open(vpath.as_path())
        .unwrap_or_else(|e| panic!("ext4-view cannot open {}: {e}", show(path)));
    let mut src = data.open().expect("tree file contents");
    let mut got = vec![0u8; 1 << 20];
    let mut want = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    while pos < data.len() {
        let k = ((data.len() - pos) as usize).min(got.len());
        let mut filled = 0;
        while filled < k {
            let n = f
                .read_bytes(&mut got[filled..k])
                .unwrap_or_else(|e| panic!("ext4-view read of {} at {pos}: {e}", show(path)));
            assert!(
                n > 0,
                "ext4-view: {} ends early at {}",
                show(path),
                pos + filled as u64
            );
            filled += n;
        }
        src.read_exact_at(pos, &mut want[..k])
            .expect("tree file contents");
        if got[..k] != want[..k] {
            let i = got[..k]
                .iter()
                .zip(&want[..k])
                .position(|(a, b)| a != b)
                .unwrap();
            panic!(
                "{}: contents differ at byte {} (image {:#04x}, tree {:#04x})",
                show(path),
                pos + i as u64,
                got[i],
                want[i]
            );
        }
        pos += k as u64;
    }
    let mut extra = [0u8; 16];
    assert_eq!(
        f.read_bytes(&mut extra).expect("read past end"),
        0,
        "{}: ext4-view reads more than {} bytes",
        show(path),
        data.len()
    );
}

/// Compares a host file with the tree's contents (for `rdump` copies).
pub fn compare_host_file(host: &Path, data: &FileData, what: &str) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(host).unwrap_or_else(|e| panic!("{what}: {e}"));
    let len = f.metadata().expect("metadata").len();
    assert_eq!(len, data.len(), "{what}: length");
    let mut src = data.open().expect("tree file contents");
    let mut got = vec![0u8; 1 << 20];
    let mut want = vec![0u8; 1 << 20];
    let mut pos = 0;
    while pos < len {
        let k = ((len - pos) as usize).min(got.len());
        f.read_exact_at(&mut got[..k], pos).expect("read host copy");
        src.read_exact_at(pos, &mut want[..k])
            .expect("tree contents");
        assert!(
            got[..k] == want[..k],
            "{what}: contents differ in bytes {pos}..{}",
            pos + k as u64
        );
        pos += k as u64;
    }
}

fn ext4_path(path: &[u8]) -> ext4_view::PathBuf {
    let mut p = b"/".to_vec();
    p.extend_from_slice(path);
    ext4_view::PathBuf::try_from(p).expect("valid ext4-view path")
}

/// Maps every reachable tree path to its inode number by listing each
/// directory with `debugfs ls -p` (one debugfs run per directory depth),
/// checking on the way that `.` and `..` are right and that every
/// directory holds exactly the tree's names. Returns `(path, node, ino)`.
pub fn map_inodes(img: &Path, tree: &Tree) -> Vec<(Vec<u8>, NodeId, u32)> {
    let root = tree.root();
    let mut out = vec![(Vec::new(), root, 2u32)];
    // (path, node, ino, parent ino) of the directories to list next.
    let mut level: Vec<(Vec<u8>, NodeId, u32, u32)> = vec![(Vec::new(), root, 2, 2)];
    let lpf = synthesized_lost_found(tree);
    while !level.is_empty() {
        let cmds: Vec<String> = level.iter().map(|d| format!("ls -p <{}>", d.2)).collect();
        let outs = debugfs_each(img, &cmds);
        let mut next = Vec::new();
        for ((path, node, ino, parent), raw) in level.iter().zip(outs) {
            let NodeKind::Dir(dir) = &tree.node(*node).kind else {
                unreachable!()
            };
            let entries: Vec<LsEntry> = parse_ls_p(&raw)
                .into_iter()
                .filter(|e| e.ino != 0)
                .collect();
            assert!(
                entries.len() >= 2 && entries[0].name == b"." && entries[1].name == b"..",
                "{}: directory does not start with . and ..",
                show(path)
            );
            assert_eq!(entries[0].ino, *ino, "{}: '.'", show(path));
            assert_eq!(entries[1].ino, *parent, "{}: '..'", show(path));
            let mut seen = BTreeSet::new();
            for e in &entries[2..] {
                assert!(
                    seen.insert(e.name.clone()),
                    "{}: duplicate entry {:?}",
                    show(path),
                    String::from_utf8_lossy(&e.name)
                );
                if *ino == 2 && lpf && e.name == b"lost+found" {
                    assert_eq!(e.ino, 11, "lost+found is inode 11");
                    assert_eq!(e.mode, 0o40700, "lost+found mode");
                    continue;
                }
                let mut p = path.clone();
                if !p.is_empty() {
                    p.push(b'/');
                }
                p.extend_from_slice(&e.name);
                let Some(child) = dir.get(&e.name) else {
                    panic!("{}: entry not in the tree", show(&p));
                };
                let n = tree.node(child);
                assert_eq!(e.mode, u32::from(n.st_mode()), "{}: ls -p mode", show(&p));
                assert_eq!(
                    (e.uid, e.gid),
                    (n.meta.uid, n.meta.gid),
                    "{}: ls -p owner",
                    show(&p)
                );
                if let NodeKind::Dir(_) = n.kind {
                    assert_eq!(e.size, None, "{}: ls -p shows a directory", show(&p));
                    next.push((p.clone(), child, e.ino, *ino));
                }
                out.push((p, child, e.ino));
            }
            let want: BTreeSet<&[u8]> = dir.entries().map(|(n, _)| n).collect();
            let got: BTreeSet<&[u8]> = seen
                .iter()
                .map(|n| &n[..])
                .filter(|n| !(*ino == 2 && lpf && *n == b"lost+found"))
                .collect();
            assert_eq!(got, want, "{}: names differ", show(path));
            if *ino == 2 && lpf {
                assert!(
                    seen.contains(&b"lost+found"[..]),
                    "no lost+found in the root"
                );
            }
        }
        level = next;
    }
    // Hard links: one inode per node, one node per inode.
    let mut ino_of: HashMap<NodeId, u32> = HashMap::new();
    let mut node_of: HashMap<u32, NodeId> = HashMap::new();
    for (p, id, ino) in &out {
        assert_eq!(
            *ino_of.entry(*id).or_insert(*ino),
            *ino,
            "{}: names of one file have different inodes",
            show(p)
        );
        assert_eq!(
            *node_of.entry(*ino).or_insert(*id),
            *id,
            "{}: inode {ino} shared by different files",
            show(p)
        );
        assert!(*ino == 2 || *ino >= 11, "{}: reserved inode {ino}", show(p));
    }
    out
}

/// How thoroughly [`check_image`] compares.
#[derive(Debug, Clone, Copy)]
pub struct Checks {
    /// Read every regular file through ext4-view and compare the bytes.
    pub contents: bool,
    /// Check every xattr's value with `debugfs ea_get` (and `-r` for the
    /// on-disk form of ACLs).
    pub xattr_values: bool,
}

impl Default for Checks {
    fn default() -> Self {
        Checks {
            contents: true,
            xattr_values: true,
        }
    }
}

/// Checks that image `img` holds exactly `tree`; see [`check_image`].
pub fn assert_matches_tree(img: &Path, tree: &Tree) -> HashMap<u32, Stat> {
    check_image(img, tree, Checks::default())
}

/// Walks `tree` and checks every entry with both debugfs and ext4-view:
/// type, permission bits, owner, size, link count, all four times with
/// nanoseconds, device numbers, xattrs (names and values), symlink
/// targets, contents and the exact name set of every directory. Returns
/// debugfs's stat of every inode.
pub fn check_image(img: &Path, tree: &Tree, checks: Checks) -> HashMap<u32, Stat> {
    let names = name_counts(tree);
    let mapped = map_inodes(img, tree);
    let bs = block_size_of(img);

    // --- debugfs stat of every inode.
    let mut inos: Vec<(u32, NodeId, Vec<u8>)> = Vec::new();
    let mut done = BTreeSet::new();
    for (p, id, ino) in &mapped {
        if done.insert(*ino) {
            inos.push((*ino, *id, p.clone()));
        }
    }
    let cmds: Vec<String> = inos.iter().map(|(i, _, _)| format!("stat <{i}>")).collect();
    let outs = debugfs_each(img, &cmds);
    let mut stats = HashMap::new();
    let mut dump_cmds = Vec::new();
    let mut dump_expect: Vec<(String, Vec<u8>, bool)> = Vec::new();
    let vdir = tempfile::tempdir().expect("temporary directory");
    for ((ino, id, path), raw) in inos.iter().zip(outs) {
        let s = parse_stat(&raw);
        let node = tree.node(*id);
        let m = &node.meta;
        let at = show(path);
        assert_eq!(s.ino, *ino, "{at}: stat of the wrong inode");
        assert_eq!(s.kind, debugfs_kind(&node.kind), "{at}: type");
        assert_eq!(s.mode, m.mode & 0o7777, "{at}: permission bits");
        assert_eq!((s.uid, s.gid), (m.uid, m.gid), "{at}: owner");
        assert_eq!(s.extra_isize, Some(32), "{at}: i_extra_isize");
        assert_eq!(s.atime, m.atime, "{at}: atime");
        assert_eq!(s.mtime, m.mtime, "{at}: mtime");
        assert_eq!(s.ctime, m.ctime, "{at}: ctime");
        assert_eq!(s.crtime, m.crtime.unwrap_or(m.mtime), "{at}: crtime");
        assert_eq!(
            s.links,
            expected_links(tree, *id, &names),
            "{at}: link count"
        );
        const EXTENTS_FL: u32 = 0x80000;
        match &node.kind {
            NodeKind::File(d) => {
                assert_eq!(s.size, d.len(), "{at}: size");
                assert!(s.flags & EXTENTS_FL != 0, "{at}: no extents flag");
                // Exactly the blocks holding data are mapped (plus block
                // 0), and i_blocks counts them with the tree and xattr
                // blocks.
                let (items, tree_blocks) = parse_extents(s.extents.as_deref().unwrap_or(""));
                assert!(
                    items.iter().all(|e| !e.uninit),
                    "{at}: uninitialized extent"
                );
                let mapped: BTreeSet<u64> = items
                    .iter()
                    .flat_map(|e| e.logical..e.logical + e.len)
                    .collect();
                let n: u64 = items.iter().map(|e| e.len).sum();
                assert_eq!(n, mapped.len() as u64, "{at}: overlapping extents");
                assert!(
                    mapped == expected_file_blocks(&d.data_ranges(), d.len(), bs),
                    "{at}: mapped blocks differ from the data ranges {:?}",
                    d.data_ranges()
                );
                let xattr_block = u64::from(s.file_acl != 0);
                assert_eq!(
                    s.blockcount,
                    (n + tree_blocks as u64 + xattr_block) * (bs / 512),
                    "{at}: i_blocks"
                );
            }
            NodeKind::Dir(_) => {
                assert!(
                    s.size > 0 && s.size.is_multiple_of(bs),
                    "{at}: dir size {}",
                    s.size
                );
                assert!(s.flags & EXTENTS_FL != 0, "{at}: no extents flag");
                let (items, tree_blocks) = parse_extents(s.extents.as_deref().unwrap_or(""));
                let mapped: BTreeSet<u64> = items
                    .iter()
                    .flat_map(|e| e.logical..e.logical + e.len)
                    .collect();
                let nblocks = s.size / bs;
                assert!(
                    mapped == (0..nblocks).collect::<BTreeSet<u64>>(),
                    "{at}: directory blocks are not 0..{nblocks}"
                );
                let xattr_block = u64::from(s.file_acl != 0);
                assert_eq!(
                    s.blockcount,
                    (nblocks + tree_blocks as u64 + xattr_block) * (bs / 512),
                    "{at}: i_blocks"
                );
            }
            NodeKind::Symlink(t) => {
                assert_eq!(s.size, t.len() as u64, "{at}: symlink size");
                if t.len() < 60 {
                    assert_eq!(
                        s.fast_link.as_deref(),
                        Some(&t[..]),
                        "{at}: fast symlink target"
                    );
                    assert_eq!(
                        s.flags & EXTENTS_FL,
                        0,
                        "{at}: fast symlink with extents flag"
                    );
                    assert_eq!(s.blockcount, 0, "{at}: fast symlink with blocks");
                } else {
                    let f = vdir.path().join(format!("v{}", dump_cmds.len()));
                    dump_cmds.push(format!("dump <{ino}> {}", f.display()));
                    dump_expect.push((format!("{at} symlink target"), t.to_vec(), false));
                    assert_eq!(s.fast_link, None, "{at}: slow symlink stored in the inode");
                    assert!(
                        s.flags & EXTENTS_FL != 0,
                        "{at}: slow symlink without extents flag"
                    );
                    assert!(s.blockcount > 0, "{at}: slow symlink without a block");
                }
            }
            NodeKind::CharDevice(dev) | NodeKind::BlockDevice(dev) => {
                let old = dev.major < 256 && dev.minor < 256 && (dev.major, dev.minor) != (0, 0);
                assert_eq!(
                    s.device,
                    Some((dev.major, dev.minor, !old)),
                    "{at}: device number"
                );
                assert_eq!(s.flags & EXTENTS_FL, 0, "{at}: device with extents flag");
            }
            NodeKind::Fifo | NodeKind::Socket => {
                assert_eq!(s.size, 0, "{at}: size");
                assert_eq!(
                    s.flags & EXTENTS_FL,
                    0,
                    "{at}: special file with extents flag"
                );
            }
        }
        // Xattr names and lengths (values are in the VFS form for ACLs,
        // which debugfs shows in its own form, so only names for those).
        let mut got: Vec<(String, usize)> = s.xattrs.clone();
        got.sort();
        let mut want: Vec<(String, usize)> = m
            .xattrs
            .iter()
            .map(|(k, v)| {
                let len = if is_acl(k) {
                    ext4_disk_acl(&decode_vfs_acl(v)).len()
                } else {
                    v.len()
                };
                (String::from_utf8_lossy(k).into_owned(), len)
            })
            .collect();
        want.sort();
        // debugfs reports ACLs with their on-disk length in stat.
        assert_eq!(got, want, "{at}: xattr names and sizes");
        if m.xattrs.is_empty() {
            assert_eq!(s.file_acl, 0, "{at}: xattr block without xattrs");
        }
        if checks.xattr_values {
            for (k, v) in &m.xattrs {
                let name = String::from_utf8_lossy(k).into_owned();
                assert!(
                    name.bytes().all(|b| b.is_ascii_graphic()),
                    "test limitation: xattr name {name:?} not shell-safe"
                );
                let f = vdir.path().join(format!("v{}", dump_cmds.len()));
                dump_cmds.push(format!("ea_get -f {} <{ino}> {name}", f.display()));
                dump_expect.push((format!("{at} {name}"), v.to_vec(), false));
                if is_acl(k) {
                    let f = vdir.path().join(format!("v{}", dump_cmds.len()));
                    dump_cmds.push(format!("ea_get -r -f {} <{ino}> {name}", f.display()));
                    dump_expect.push((
                        format!("{at} {name} (on disk)"),
                        ext4_disk_acl(&decode_vfs_acl(v)),
                        true,
                    ));
                }
            }
        }
        stats.insert(*ino, s);
    }
    if !dump_cmds.is_empty() {
        debugfs_each(img, &dump_cmds);
        for (i, (what, want, raw)) in dump_expect.iter().enumerate() {
            let got = std::fs::read(vdir.path().join(format!("v{i}")))
                .unwrap_or_else(|e| panic!("{what}: ea_get wrote nothing: {e}"));
            let acl = what.contains("system.posix_acl_");
            if acl && !raw {
                // libext2fs converts back to the VFS form, with id 0 for the
                // tags that have none: compare the ACLs, not the bytes.
                assert_eq!(decode_vfs_acl(&got), decode_vfs_acl(want), "{what}: ACL");
            } else {
                assert!(
                    got == *want,
                    "{what}: value differs: {got:02x?} != {want:02x?}"
                );
            }
        }
    }

    // --- ext4-view.
    let fs = load_ext4_view(img);
    let lpf = synthesized_lost_found(tree);
    // Directories ext4-view cannot read (see `ext4_view_reads_times`); all
    // below them is out of its reach too.
    let mut unreadable_dirs: BTreeSet<Vec<u8>> = BTreeSet::new();
    for (path, id) in tree.walk() {
        let node = tree.node(id);
        let m = &node.meta;
        let at = show(&path);
        let vpath = ext4_path(&path);
        let parent = match path.iter().rposition(|&b| b == b'/') {
            Some(i) => path[..i].to_vec(),
            None => Vec::new(),
        };
        let parent_readable = path.is_empty() || !unreadable_dirs.contains(&parent);
        if !parent_readable || !ext4_view_reads_times(m) {
            if let NodeKind::Dir(_) = node.kind {
                unreadable_dirs.insert(path.clone());
            }
            if parent_readable {
                // ext4-view 1.0.0 must refuse exactly because of the time.
                let e = fs
                    .symlink_metadata(vpath.as_path())
                    .expect_err("ext4-view read a time it cannot represent");
                assert!(
                    e.to_string().contains("invalid timestamp"),
                    "ext4-view {at}: unexpected error {e}"
                );
            }
            continue;
        }
        let md = fs
            .symlink_metadata(vpath.as_path())
            .unwrap_or_else(|e| panic!("ext4-view: {at}: {e}"));
        assert_eq!(
            md.file_type(),
            ext4_view_kind(&node.kind),
            "ext4-view {at}: type"
        );
        assert_eq!(md.mode(), m.mode & 0o7777, "ext4-view {at}: mode");
        assert_eq!(
            (md.uid(), md.gid()),
            (m.uid, m.gid),
            "ext4-view {at}: owner"
        );
        let ts = |t: ext4_view::Timestamp| Timestamp {
            secs: t.seconds(),
            nanos: t.nanoseconds(),
        };
        assert_eq!(ts(md.accessed()), m.atime, "ext4-view {at}: atime");
        assert_eq!(ts(md.modified()), m.mtime, "ext4-view {at}: mtime");
        assert_eq!(
            md.created().map(ts),
            Some(m.crtime.unwrap_or(m.mtime)),
            "ext4-view {at}: crtime"
        );
        match &node.kind {
            NodeKind::File(d) => {
                assert_eq!(md.len(), d.len(), "ext4-view {at}: size");
                if checks.contents {
                    compare_content_ext4_view(&fs, &path, d);
                }
            }
            NodeKind::Symlink(t) if t.split(|&b| b == b'/').any(|c| c.len() > 255) => {
                // ext4-view 1.0.0 turns targets into its PathBuf, which
                // refuses components over 255 bytes ("invalid symlink
                // path"); debugfs checked the target above.
                let e = fs.read_link(vpath.as_path()).expect_err("long component");
                assert!(
                    e.to_string().contains("invalid symlink path"),
                    "ext4-view {at}: {e}"
                );
            }
            NodeKind::Symlink(t) => {
                let got = fs
                    .read_link(vpath.as_path())
                    .unwrap_or_else(|e| panic!("ext4-view: read_link {at}: {e}"));
                assert_eq!(got.as_ref(), &t[..], "ext4-view {at}: symlink target");
            }
            NodeKind::Dir(d) => {
                let mut got = BTreeMap::new();
                for e in fs
                    .read_dir(vpath.as_path())
                    .unwrap_or_else(|e| panic!("ext4-view: read_dir {at}: {e}"))
                {
                    let e = e.unwrap_or_else(|e| panic!("ext4-view: read_dir {at}: {e}"));
                    let name = e.file_name().as_ref().to_vec();
                    let ft = e.file_type().expect("file type");
                    assert!(
                        got.insert(name.clone(), ft).is_none(),
                        "ext4-view {at}: duplicate {:?}",
                        String::from_utf8_lossy(&name)
                    );
                }
                assert_eq!(
                    got.remove(&b"."[..]),
                    Some(ext4_view::FileType::Directory),
                    "ext4-view {at}: ."
                );
                assert_eq!(
                    got.remove(&b".."[..]),
                    Some(ext4_view::FileType::Directory),
                    "ext4-view {at}: .."
                );
                if id == tree.root() && lpf {
                    assert_eq!(
                        got.remove(&b"lost+found"[..]),
                        Some(ext4_view::FileType::Directory),
                        "ext4-view: lost+found"
                    );
                }
                let want: BTreeMap<Vec<u8>, ext4_view::FileType> = d
                    .entries()
                    .map(|(n, c)| (n.to_vec(), ext4_view_kind(&tree.node(c).kind)))
                    .collect();
                if got != want {
                    let extra: Vec<_> = got
                        .keys()
                        .filter(|k| !want.contains_key(*k))
                        .map(|k| String::from_utf8_lossy(k))
                        .collect();
                    let missing: Vec<_> = want
                        .keys()
                        .filter(|k| !got.contains_key(*k))
                        .map(|k| String::from_utf8_lossy(k))
                        .collect();
                    panic!("ext4-view {at}: directory differs (types or names); extra {extra:?}, missing {missing:?}");
                }
            }
            _ => assert_eq!(md.len(), 0, "ext4-view {at}: size"),
        }
    }
    stats
}

/// Whether ext4-view 1.0.0 can decode the times of `m`. It converts the
/// low 32 bits of each time with `i32::try_from(u32)`, which fails when the
/// top bit is set, so every time before 1970 and from 2038-01-19 to 2106
/// makes it report the whole inode as corrupt ("invalid timestamp"), even
/// though the encoding is right (debugfs and the kernel read it). Such
/// inodes, and everything below such directories, are checked with debugfs
/// only.
pub fn ext4_view_reads_times(m: &ami_core::Metadata) -> bool {
    let ok = |t: Timestamp| (t.secs as u32) < 0x8000_0000;
    ok(m.atime) && ok(m.mtime) && ok(m.ctime) && ok(m.crtime.unwrap_or(m.mtime))
}

/// A copy of `tree` with every time moved into the range ext4-view can
/// read (seconds modulo 2^31, nanoseconds kept), for a second image that
/// ext4-view can check completely.
pub fn ext4_view_friendly(tree: &Tree) -> Tree {
    let mut t = tree.clone();
    let fix = |x: &mut Timestamp| x.secs = x.secs.rem_euclid(1 << 31);
    let ids: BTreeSet<NodeId> = t.walk().map(|(_, id)| id).collect();
    for id in ids {
        let m = &mut t.node_mut(id).meta;
        fix(&mut m.atime);
        fix(&mut m.mtime);
        fix(&mut m.ctime);
        if let Some(c) = m.crtime.as_mut() {
            fix(c);
        }
    }
    t
}

/// Positioned reads of an image file for ext4-view.
struct ImageReader(std::fs::File);

impl ext4_view::Ext4Read for ImageReader {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        use std::os::unix::fs::FileExt;
        self.0.read_exact_at(dst, start_byte)?;
        Ok(())
    }
}

/// Opens an image with ext4-view (which checks the superblock, the group
/// descriptors and their checksums, and the journal).
pub fn load_ext4_view(img: &Path) -> ext4_view::Ext4 {
    let f = std::fs::File::open(img).expect("open image");
    ext4_view::Ext4::load(Box::new(ImageReader(f)))
        .unwrap_or_else(|e| panic!("ext4-view cannot load {}: {e}", img.display()))
}

/// The block size of an image, from its superblock.
pub fn block_size_of(img: &Path) -> u64 {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(img).expect("open image");
    let mut sb = [0u8; 4];
    f.read_exact_at(&mut sb, 1024 + 24)
        .expect("read s_log_block_size");
    1024 << u32::from_le_bytes(sb)
}

/// Dumps the image with `debugfs rdump / DIR` and compares every regular
/// file of the tree with its copy, byte for byte, and every symlink's
/// target.
pub fn assert_rdump_matches(img: &Path, tree: &Tree) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let out = dir.path().join("root");
    std::fs::create_dir(&out).expect("rdump target");
    let mut cmd = tool("debugfs");
    cmd.arg("-R")
        .arg(format!("rdump / {}", out.display()))
        .arg(img);
    let res = run(cmd);
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        res.status.success() && err.lines().all(|l| l.starts_with("debugfs ")),
        "debugfs rdump failed: {}",
        text(&res)
    );
    use std::os::unix::ffi::OsStringExt;
    let mut files = 0;
    for (path, id) in tree.walk() {
        let host = out.join(OsString::from_vec(path.clone()));
        match &tree.node(id).kind {
            NodeKind::File(d) => {
                compare_host_file(&host, d, &format!("rdump {}", show(&path)));
                files += 1;
            }
            NodeKind::Symlink(t) => {
                use std::os::unix::ffi::OsStrExt;
                let got = std::fs::read_link(&host)
                    .unwrap_or_else(|e| panic!("rdump {}: {e}", show(&path)));
                assert_eq!(
                    got.as_os_str().as_bytes(),
                    &t[..],
                    "rdump {}: symlink",
                    show(&path)
                );
            }
            NodeKind::Dir(_) => assert!(host.is_dir(), "rdump {}: not a directory", show(&path)),
            _ => {}
        }
    }
    let want = tree
        .walk()
        .filter(|(_, id)| matches!(tree.node(*id).kind, NodeKind::File(_)))
        .count();
    assert_eq!(files, want, "rdump: files compared");
}

// ---------------------------------------------------------------------------
// Adapting random trees
// ---------------------------------------------------------------------------

/// Random trees are made for 4 KiB blocks: symlink targets up to 4000
/// bytes and xattrs up to a 4 KiB block. For smaller blocks, shorten the
/// targets and drop xattr sets that would not fit one block (generously
/// counted: 16-byte entry, name and value each padded, block header).
pub fn fit_block_size(tree: &mut Tree, bs: u32) {
    if bs >= 4096 {
        return;
    }
    let ids: Vec<_> = tree.walk().map(|(_, id)| id).collect();
    for id in ids {
        let node = tree.node_mut(id);
        if let NodeKind::Symlink(t) = &mut node.kind {
            if t.len() >= bs as usize {
                *t = t[..bs as usize - 1].into();
            }
        }
        let need: usize = node
            .meta
            .xattrs
            .iter()
            .map(|(k, v)| 16 + k.len() + 3 + v.len() + 3)
            .sum::<usize>()
            + 40;
        if need > bs as usize {
            node.meta.xattrs.clear();
        }
    }
}

/// The smallest `Size::Bytes` (in blocks) with which `tree` formats, found
/// by bisection up to `hi` blocks (formatting into memory).
pub fn smallest_working_blocks(tree: &Tree, opts: &FormatOptions, bs: u64, hi: u64) -> u64 {
    let works = |blocks: u64| {
        let mut c = Cursor::new(Vec::new());
        format(
            &mut c,
            tree,
            &opts.clone().size(ami_ext4::Size::Bytes(blocks * bs)),
            &NoProgress,
        )
        .is_ok()
    };
    assert!(works(hi), "{hi} blocks do not work");
    let (mut lo, mut hi) = (1, hi);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if works(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

/// Whether the long end-to-end variants are asked for (`AMI_E2E=1`).
pub fn e2e() -> bool {
    std::env::var("AMI_E2E").is_ok_and(|v| v == "1")
}

// ---------------------------------------------------------------------------
// Extent and htree dumps
// ---------------------------------------------------------------------------

/// A leaf extent as `debugfs stat` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtentItem {
    /// First logical block.
    pub logical: u64,
    /// Number of blocks.
    pub len: u64,
    /// First physical block.
    pub physical: u64,
    /// Marked uninitialized (`[u]`).
    pub uninit: bool,
}

/// Parses the extent list of `debugfs stat` ("(0):225, (8-15):226-233,
/// (ETB0):99"): the leaf extents and the number of extent-tree blocks.
pub fn parse_extents(text: &str) -> (Vec<ExtentItem>, usize) {
    let mut items = Vec::new();
    let mut tree_blocks = 0;
    let joined: String = text.lines().collect::<Vec<_>>().join(", ");
    for item in joined.split(", ").map(str::trim).filter(|s| !s.is_empty()) {
        let (l, p) = item
            .strip_prefix('(')
            .and_then(|r| r.split_once("):"))
            .unwrap_or_else(|| panic!("extent item {item:?}"));
        if l.starts_with("ETB") {
            tree_blocks += 1;
            continue;
        }
        let (l, uninit) = match l.strip_suffix("[u]") {
            Some(l) => (l, true),
            None => (l, false),
        };
        let range = |s: &str| -> (u64, u64) {
            match s.split_once('-') {
                Some((a, b)) => (a.parse().expect("extent"), b.parse().expect("extent")),
                None => {
                    let a = s.parse().expect("extent");
                    (a, a)
                }
            }
        };
        let (l0, l1) = range(l);
        let (p0, p1) = range(p);
        assert_eq!(l1 - l0, p1 - p0, "extent item {item:?}");
        items.push(ExtentItem {
            logical: l0,
            len: l1 - l0 + 1,
            physical: p0,
            uninit,
        });
    }
    (items, tree_blocks)
}

/// Checks `debugfs htree_dump` output of an indexed directory against the
/// hashes debugfs computes itself: no checksum mismatch, no corrupt block,
/// and every leaf entry's hash within the range its index entry gives
/// (from its own hash up to the next leaf's). Returns the inode numbers of
/// the entries in the leaves.
pub fn check_htree_dump(out: &str) -> Vec<u32> {
    assert!(out.contains("Root node dump:"), "not an htree:\n{out}");
    assert!(!out.contains("EXPECTED"), "htree checksum mismatch:\n{out}");
    assert!(!out.contains("Corrupted"), "corrupt htree block:\n{out}");
    // Leaves in traversal (hash) order: (lower bound, continuation, hashes).
    // An index node's entry #0 carries no hash (debugfs prints 0): its
    // range starts where the parent's entry pointing to the node starts,
    // hence the stack of node bases.
    let mut leaves: Vec<(u32, bool, Vec<u32>)> = Vec::new();
    let mut bases: Vec<u32> = Vec::new();
    let mut pending: Option<(usize, u32)> = None;
    let mut inos = Vec::new();
    let mut in_leaf = false;
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("Entry #") {
            let (idx, r) = rest.split_once(": Hash 0x").expect("index entry");
            let h = u32::from_str_radix(&r[..8], 16).expect("hash");
            pending = Some((idx.parse().expect("entry index"), h));
            in_leaf = false;
        } else if line.starts_with("Number of entries (count)") {
            let base = match pending.take() {
                Some((0, _)) => *bases.last().expect("nested entry #0"),
                Some((_, h)) => h,
                None => 0,
            };
            bases.push(base);
            in_leaf = false;
        } else if line.starts_with("----") {
            bases.pop();
            in_leaf = false;
        } else if line.starts_with("Reading directory block") {
            let h = match pending.take().expect("leaf without an index entry") {
                (0, _) => *bases.last().expect("leaf outside an index node"),
                (_, h) => h,
            };
            leaves.push((h & !1, h & 1 == 1, Vec::new()));
            in_leaf = true;
        } else if line.starts_with("Number of entries") {
            in_leaf = false;
        } else if in_leaf {
            for chunk in line.split("   ").map(str::trim).filter(|c| !c.is_empty()) {
                if chunk.starts_with("leaf block checksum") {
                    continue;
                }
                let mut it = chunk.split_whitespace();
                let ino: u32 = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("leaf entry {chunk:?}"));
                let hash = it
                    .next()
                    .and_then(|s| s.strip_prefix("0x"))
                    .map(|s| u32::from_str_radix(&s[..8], 16).expect("entry hash"))
                    .unwrap_or_else(|| panic!("leaf entry {chunk:?}"));
                if ino != 0 {
                    inos.push(ino);
                    leaves.last_mut().expect("leaf").2.push(hash);
                }
            }
        }
    }
    assert!(
        leaves.windows(2).all(|w| w[0].0 <= w[1].0),
        "htree leaves not in hash order"
    );
    for (i, (lo, _, hashes)) in leaves.iter().enumerate() {
        let next = leaves.get(i + 1);
        for &h in hashes {
            let h = h & !1;
            assert!(
                h >= *lo,
                "leaf {i}: hash {h:#010x} below its range start {lo:#010x}"
            );
            if let Some((hi, cont, _)) = next {
                assert!(
                    h < *hi || (*cont && h == *hi),
                    "leaf {i}: hash {h:#010x} not below the next range {hi:#010x}"
                );
            }
        }
    }
    inos
}
