//! Plan, then write.
//!
//! 1. **Number** every reachable node (depth first, names in byte order):
//!    root is inode 2, `lost+found` inode 11, the rest 12 onwards; every
//!    name of a hard-linked node gets the same inode.
//! 2. **Plan** the allocation for a [`Geometry`]: the journal, the resize
//!    inode's indirect block, then each inode in number order gets its
//!    directory blocks or file data (contiguous, from a bump allocator over
//!    the groups' free runs), its extent-tree blocks and its xattr block.
//!    Directory sizes come from encoding each directory once here (and once
//!    more when writing: nothing of it is kept in memory).
//! 3. **Write** in allocation order, so file data streams out sequentially,
//!    then the inode tables, bitmaps, descriptors and superblocks.
//!
//! Memory grows with the number of inodes (a few dozen bytes each plus
//! extent lists), never with file sizes: contents are copied from their
//! source straight into the image through one reusable buffer.

use std::io::{self, Seek, SeekFrom, Write};
use std::ops::Range;

use ami_core::progress::{Progress, Stage};
use ami_core::{NodeId, NodeKind, Timestamp, Tree};

use crate::error::{Error, Result};
use crate::layout::{journal_blocks, Geometry};
use crate::ondisk::dirent::{self, ftype, DirCtx, Entry};
use crate::ondisk::dx_hash::{dx_hash, HashVersion};
use crate::ondisk::extent::{self, Extent};
use crate::ondisk::group_desc::{GdtCsum, GroupDesc, BG_INODE_UNINIT, BG_INODE_ZEROED};
use crate::ondisk::inode::{self, Inode, FL_EXTENTS, FL_INDEX, MAX_TIME, MIN_TIME};
use crate::ondisk::superblock::*;
use crate::ondisk::{journal, xattr};
use crate::options::{FormatOptions, Inodes, Size};
use crate::{BlockMap, Report};

const ROOT_INO: u32 = 2;
const RESIZE_INO: u32 = 7;
const JOURNAL_INO: u32 = 8;
const LPF_INO: u32 = 11;
const FIRST_INO: u32 = 12;
const MAX_LINKS: u32 = 65000;

fn lossy(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

/// What an inode number stands for.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// A node of the tree; `parent` is the inode of its directory (for
    /// directories, used for `..`).
    Node { node: NodeId, parent: u32 },
    /// The synthetic `lost+found`.
    LostFound,
}

/// Step 1: inode numbers.
struct Numbering {
    /// Index `ino - 1`; reserved inodes 1..=10 are `None`.
    slots: Vec<Option<Slot>>,
    /// Inode of each tree node (0: unreachable).
    ino_of: Vec<u32>,
    /// Number of names of each inode (index `ino - 1`).
    names: Vec<u32>,
    /// Number of subdirectories of each directory inode.
    subdirs: Vec<u32>,
    /// A path for each inode, for error messages (only kept for files with
    /// several names, lazily recomputed otherwise).
    lpf_in_tree: bool,
}

fn number(tree: &Tree) -> Result<Numbering> {
    let mut ino_of = vec![0u32; tree.node_count()];
    let mut slots: Vec<Option<Slot>> = vec![None; (LPF_INO) as usize];
    let mut names: Vec<u32> = vec![0; LPF_INO as usize];
    let mut subdirs: Vec<u32> = vec![0; LPF_INO as usize];
    let root = tree.root();
    ino_of[root.index()] = ROOT_INO;
    slots[ROOT_INO as usize - 1] = Some(Slot::Node {
        node: root,
        parent: ROOT_INO,
    });
    names[ROOT_INO as usize - 1] = 1;
    let lpf_in_tree = match tree.lookup(b"lost+found").map(|id| &tree.node(id).kind) {
        None => false,
        Some(NodeKind::Dir(_)) => true,
        Some(_) => {
            return Err(Error::Unsupported {
                path: "/lost+found".into(),
                what: "must be a directory (ext4 reserves inode 11 for it)".into(),
            })
        }
    };
    if !lpf_in_tree {
        slots[LPF_INO as usize - 1] = Some(Slot::LostFound);
        names[LPF_INO as usize - 1] = 1;
        subdirs[ROOT_INO as usize - 1] += 1;
    }
    // Depth-first over directories; a stack of (dir node, dir ino, path).
    let mut stack: Vec<(NodeId, u32, Vec<u8>)> = vec![(root, ROOT_INO, Vec::new())];
    while let Some((dir, dir_ino, path)) = stack.pop() {
        let NodeKind::Dir(d) = &tree.node(dir).kind else {
            continue;
        };
        let mut child_dirs = Vec::new();
        for (name, child) in d.entries() {
            if name.len() > 255 {
                let mut p = path.clone();
                p.push(b'/');
                p.extend_from_slice(name);
                return Err(Error::NameTooLong {
                    path: lossy(&p),
                    len: name.len(),
                });
            }
            let is_dir = matches!(tree.node(child).kind, NodeKind::Dir(_));
            let mut ino = ino_of[child.index()];
            if ino == 0 {
                ino = if dir_ino == ROOT_INO && name == b"lost+found" && is_dir {
                    LPF_INO
                } else {
                    let n = u32::try_from(slots.len() + 1).map_err(|_| Error::TooLarge {
                        what: "more than 2^32 inodes".into(),
                    })?;
                    slots.push(None);
                    names.push(0);
                    subdirs.push(0);
                    n
                };
                ino_of[child.index()] = ino;
                slots[ino as usize - 1] = Some(Slot::Node {
                    node: child,
                    parent: dir_ino,
                });
                if is_dir {
                    let mut p = path.clone();
                    if !p.is_empty() {
                        p.push(b'/');
                    }
                    p.extend_from_slice(name);
                    child_dirs.push((child, ino, p));
                }
            } else if is_dir {
                // A directory reachable twice would be a loop.
                let mut p = path.clone();
                p.push(b'/');
                p.extend_from_slice(name);
                return Err(Error::Unsupported {
                    path: lossy(&p),
                    what: "a directory with two names".into(),
                });
            }
            names[ino as usize - 1] += 1;
            if is_dir {
                subdirs[dir_ino as usize - 1] += 1;
            }
            if !is_dir && names[ino as usize - 1] > MAX_LINKS {
                let mut p = path.clone();
                p.push(b'/');
                p.extend_from_slice(name);
                return Err(Error::TooManyLinks {
                    path: lossy(&p),
                    links: names[ino as usize - 1],
                });
            }
        }
        // Push in reverse so the first child directory is numbered... its
        // contents are visited first (depth first, name order).
        stack.extend(child_dirs.into_iter().rev());
    }
    Ok(Numbering {
        slots,
        ino_of,
        names,
        subdirs,
        lpf_in_tree,
    })
}

/// The bump allocator over the groups' free runs.
struct Alloc<'g> {
    geo: &'g Geometry,
    group: u32,
    next: u64,
}

#[derive(Debug)]
struct OutOfSpace;

impl<'g> Alloc<'g> {
    fn new(geo: &'g Geometry) -> Self {
        Alloc {
            geo,
            group: 0,
            next: geo.free_start(0),
        }
    }

    fn group_end(&self) -> u64 {
        self.geo.group_start(self.group) + self.geo.group_len(self.group)
    }

    /// Takes `n` blocks as physical runs (split only at metadata).
    fn take(
        &mut self,
        mut n: u64,
        out: &mut Vec<Range<u64>>,
    ) -> std::result::Result<(), OutOfSpace> {
        while n > 0 {
            if self.next >= self.group_end() {
                if self.group + 1 >= self.geo.groups {
                    return Err(OutOfSpace);
                }
                self.group += 1;
                self.next = self.geo.free_start(self.group);
                continue;
            }
            let k = n.min(self.group_end() - self.next);
            match out.last_mut() {
                Some(last) if last.end == self.next => last.end += k,
                _ => out.push(self.next..self.next + k),
            }
            self.next += k;
            n -= k;
        }
        Ok(())
    }

    fn take_one(&mut self) -> std::result::Result<u64, OutOfSpace> {
        let mut v = Vec::with_capacity(1);
        self.take(1, &mut v)?;
        Ok(v[0].start)
    }

    /// End of the used prefix of group `g`.
    fn used_end(&self, g: u32) -> u64 {
        use std::cmp::Ordering::*;
        match g.cmp(&self.group) {
            Less => self.geo.group_start(g) + self.geo.group_len(g),
            Equal => self.next,
            Greater => self.geo.free_start(g),
        }
    }
}

/// The planned blocks of one inode.
#[derive(Debug, Default, Clone)]
struct Planned {
    extents: Vec<Extent>,
    tree_blocks: Vec<u64>,
    xattr_block: u64,
    /// Directory: number of blocks and whether it is indexed.
    dir_blocks: u32,
    indexed: bool,
}

impl Planned {
    fn data_blocks(&self) -> u64 {
        self.extents.iter().map(|e| u64::from(e.len)).sum()
    }
}

/// Everything decided before the first byte is written.
struct Plan {
    geo: Geometry,
    inodes: Vec<Planned>, // index ino - 1
    journal: Vec<Extent>,
    journal_len: u64,
    resize_dind: u64,
    alloc_group: u32,
    alloc_next: u64,
    used_blocks: u64,
}

/// Constant inputs shared by the planner and the writer.
struct Ctx<'a> {
    tree: &'a Tree,
    opts: &'a FormatOptions,
    num: Numbering,
    uuid: [u8; 16],
    csum_seed: Option<u32>,
    hash_seed: [u32; 4],
    /// In-inode xattr space.
    xattr_space: usize,
    resize_inode: bool,
}

impl Ctx<'_> {
    fn bs(&self) -> u32 {
        self.opts.block_size
    }

    fn node_of(&self, ino: u32) -> Option<NodeId> {
        match self.num.slots[ino as usize - 1] {
            Some(Slot::Node { node, .. }) => Some(node),
            _ => None,
        }
    }

    fn ino_seed(&self, ino: u32) -> Option<u32> {
        self.csum_seed.map(|s| inode::inode_seed(s, ino, 0))
    }

    fn path_of(&self, ino: u32) -> String {
        // Slow (a walk); only used for error messages.
        let Some(node) = self.node_of(ino) else {
            return "lost+found".into();
        };
        self.tree
            .walk()
            .find(|(_, id)| *id == node)
            .map(|(p, _)| format!("/{}", lossy(&p)))
            .unwrap_or_default()
    }

    fn ftype(kind: &NodeKind) -> u8 {
        match kind {
            NodeKind::File(_) => ftype::REG,
            NodeKind::Dir(_) => ftype::DIR,
            NodeKind::Symlink(_) => ftype::LNK,
            NodeKind::CharDevice(_) => ftype::CHR,
            NodeKind::BlockDevice(_) => ftype::BLK,
            NodeKind::Fifo => ftype::FIFO,
            NodeKind::Socket => ftype::SOCK,
        }
    }

    /// Encodes directory `ino` (its blocks and whether it is indexed).
    fn encode_dir(&self, ino: u32) -> Result<(Vec<u8>, bool)> {
        let (entries_src, parent) = match self.num.slots[ino as usize - 1] {
            Some(Slot::Node { node, parent }) => match &self.tree.node(node).kind {
                NodeKind::Dir(d) => (Some(d), parent),
                _ => unreachable!("not a directory"),
            },
            _ => (None, ROOT_INO),
        };
        let mut entries: Vec<Entry<'_>> =
            Vec::with_capacity(entries_src.map_or(0, |d| d.len()) + 1);
        if let Some(d) = entries_src {
            for (name, child) in d.entries() {
                entries.push(Entry {
                    name,
                    ino: self.num.ino_of[child.index()],
                    ftype: Self::ftype(&self.tree.node(child).kind),
                });
            }
        }
        if ino == ROOT_INO && !self.num.lpf_in_tree {
            let at = entries.partition_point(|e| e.name < &b"lost+found"[..]);
            entries.insert(
                at,
                Entry {
                    name: b"lost+found",
                    ino: LPF_INO,
                    ftype: ftype::DIR,
                },
            );
        }
        let bs = self.bs();
        let ctx = DirCtx {
            block_size: bs,
            csum: self.ino_seed(ino),
            self_ino: ino,
            parent_ino: parent,
            hash_version: HashVersion::HalfMd4.code(),
            min_blocks: if ino == LPF_INO {
                (16384 / bs as usize).max(2)
            } else {
                1
            },
        };
        let seed = self.hash_seed;
        dirent::encode(&entries, &ctx, &|n| dx_hash(n, HashVersion::HalfMd4, &seed)).map_err(|_| {
            Error::TooLarge {
                what: format!(
                    "directory {} has too many entries for two htree levels",
                    self.path_of(ino)
                ),
            }
        })
    }

    /// Prepared xattrs of `ino` and how many go into the inode.
    fn xattrs(&self, ino: u32) -> Result<(Vec<xattr::XattrEntry>, usize)> {
        let Some(node) = self.node_of(ino) else {
            return Ok((Vec::new(), 0));
        };
        let x = &self.tree.node(node).meta.xattrs;
        if x.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let err = |name: &[u8], e: xattr::XattrError| Error::Xattr {
            path: self.path_of(ino),
            name: lossy(name),
            reason: e.to_string(),
        };
        let entries = xattr::prepare(x).map_err(|(name, e)| err(&name, e))?;
        let k = xattr::split(&entries, self.xattr_space, self.bs() as usize)
            .map_err(|e| err(b"", e))?;
        Ok((entries, k))
    }
}

/// Which file blocks of `len` bytes with data in `ranges` are allocated:
/// the blocks touching data, plus block 0 (GRUB cannot read a file whose
/// first block is a hole).
fn file_block_runs(ranges: &[Range<u64>], len: u64, bs: u64) -> Vec<Range<u64>> {
    let mut runs: Vec<Range<u64>> = Vec::with_capacity(ranges.len() + 1);
    if len > 0 {
        runs.push(0..1);
    }
    for r in ranges {
        let b = r.start / bs..r.end.div_ceil(bs);
        match runs.last_mut() {
            Some(last) if b.start <= last.end => last.end = last.end.max(b.end),
            _ => runs.push(b),
        }
    }
    runs
}

fn plan(ctx: &Ctx<'_>, geo: Geometry) -> std::result::Result<Plan, PlanError> {
    let bs = u64::from(geo.block_size);
    let mut alloc = Alloc::new(&geo);
    let n_inodes = ctx.num.slots.len();
    if n_inodes as u64 > geo.inodes_count() {
        return Err(PlanError::Space);
    }
    // The journal, contiguous where possible.
    let journal_len = if ctx.opts.journal {
        journal_blocks(geo.blocks_count)
    } else {
        0
    };
    let mut runs = Vec::new();
    alloc
        .take(journal_len, &mut runs)
        .map_err(|_| PlanError::Space)?;
    let journal = runs_to_extents(0, &runs);
    let resize_dind = if geo.reserved_gdt_blocks > 0 {
        alloc.take_one().map_err(|_| PlanError::Space)?
    } else {
        0
    };

    let mut inodes = vec![Planned::default(); n_inodes];
    let order = std::iter::once(ROOT_INO)
        .chain(std::iter::once(LPF_INO))
        .chain(FIRST_INO..=n_inodes as u32);
    for ino in order {
        let mut p = Planned::default();
        let node = match ctx.num.slots[ino as usize - 1] {
            Some(Slot::Node { node, .. }) => Some(ctx.tree.node(node)),
            Some(Slot::LostFound) => None,
            None => continue,
        };
        let mut runs = Vec::new();
        let mut logical_runs: Vec<Range<u64>> = Vec::new();
        match node.map(|n| &n.kind) {
            None | Some(NodeKind::Dir(_)) => {
                let (blocks, indexed) = ctx.encode_dir(ino).map_err(PlanError::Fatal)?;
                let n = blocks.len() as u64 / bs;
                p.dir_blocks = n as u32;
                p.indexed = indexed;
                logical_runs.push(0..n);
            }
            Some(NodeKind::File(data)) => {
                let n_blocks = data.len().div_ceil(bs);
                if n_blocks > u64::from(u32::MAX) {
                    return Err(PlanError::Fatal(Error::TooLarge {
                        what: format!(
                            "{} is larger than ext4's 2^32 blocks per file",
                            ctx.path_of(ino)
                        ),
                    }));
                }
                logical_runs = file_block_runs(&data.data_ranges(), data.len(), bs);
            }
            Some(NodeKind::Symlink(t)) => {
                if t.is_empty() || t.len() >= bs as usize {
                    return Err(PlanError::Fatal(Error::TooLarge {
                        what: format!(
                            "symlink {} target of {} bytes (1 to {} allowed)",
                            ctx.path_of(ino),
                            t.len(),
                            bs - 1
                        ),
                    }));
                }
                if t.len() >= 60 {
                    logical_runs.push(0..1);
                }
            }
            _ => {}
        }
        for lr in &logical_runs {
            runs.clear();
            alloc
                .take(lr.end - lr.start, &mut runs)
                .map_err(|_| PlanError::Space)?;
            p.extents.extend(runs_to_extents(lr.start as u32, &runs));
        }
        let tb = extent::tree_blocks_needed(p.extents.len(), geo.block_size);
        for _ in 0..tb {
            p.tree_blocks
                .push(alloc.take_one().map_err(|_| PlanError::Space)?);
        }
        let (x, k) = ctx.xattrs(ino).map_err(PlanError::Fatal)?;
        if k < x.len() {
            p.xattr_block = alloc.take_one().map_err(|_| PlanError::Space)?;
        }
        inodes[ino as usize - 1] = p;
    }
    let used_blocks = (0..geo.groups)
        .map(|g| alloc.used_end(g) - geo.group_start(g))
        .sum();
    Ok(Plan {
        alloc_group: alloc.group,
        alloc_next: alloc.next,
        geo,
        inodes,
        journal,
        journal_len,
        resize_dind,
        used_blocks,
    })
}

/// Turns physical runs holding consecutive logical blocks from `logical`
/// into extents of at most 32768 blocks.
fn runs_to_extents(mut logical: u32, runs: &[Range<u64>]) -> Vec<Extent> {
    let mut out = Vec::new();
    for r in runs {
        let mut start = r.start;
        while start < r.end {
            let len = (r.end - start).min(u64::from(extent::MAX_LEN)) as u32;
            out.push(Extent {
                logical,
                len,
                start,
            });
            logical += len;
            start += u64::from(len);
        }
    }
    out
}

enum PlanError {
    /// Not enough room in this geometry.
    Space,
    /// Something no size fixes.
    Fatal(Error),
}

fn validate(opts: &FormatOptions) -> Result<()> {
    let bad = |field, reason: &str| {
        Err(Error::InvalidOptions {
            field,
            reason: reason.into(),
        })
    };
    if ![1024, 2048, 4096].contains(&opts.block_size) {
        return bad("block_size", "must be 1024, 2048 or 4096");
    }
    if !(opts.inode_size.is_power_of_two()
        && opts.inode_size >= 256
        && u32::from(opts.inode_size) <= opts.block_size)
    {
        return bad(
            "inode_size",
            "must be a power of two from 256 to the block size",
        );
    }
    if opts.label.len() > 16 {
        return bad("label", "at most 16 bytes");
    }
    if opts.reserved_percent > 50 {
        return bad("reserved_percent", "at most 50");
    }
    match opts.inodes {
        Some(Inodes::Ratio(r)) if !(1024..=1 << 26).contains(&r) => {
            return bad("inodes", "ratio must be 1024 to 64 MiB")
        }
        Some(Inodes::Count(0)) => return bad("inodes", "count must be positive"),
        _ => {}
    }
    if let Size::Fit { headroom_percent } = opts.size {
        if headroom_percent > 10_000 {
            return bad("size", "headroom at most 10000 %");
        }
    }
    Ok(())
}

fn derive(tag: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"ami-ext4:");
    h.update(tag);
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let d = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

fn make_ctx<'a>(tree: &'a Tree, opts: &'a FormatOptions) -> Result<Ctx<'a>> {
    validate(opts)?;
    let num = number(tree)?;
    let mut uuid = opts.uuid;
    if uuid == [0; 16] {
        uuid = derive(b"uuid", &[&opts.label]);
        uuid[6] = (uuid[6] & 0x0F) | 0x40;
        uuid[8] = (uuid[8] & 0x3F) | 0x80;
    }
    let seed_bytes = opts
        .hash_seed
        .unwrap_or_else(|| derive(b"hash_seed", &[&uuid]));
    let mut hash_seed = [0u32; 4];
    for (i, w) in hash_seed.iter_mut().enumerate() {
        *w = u32::from_le_bytes(seed_bytes[4 * i..4 * i + 4].try_into().expect("4 bytes"));
    }
    Ok(Ctx {
        tree,
        opts,
        num,
        uuid,
        csum_seed: opts
            .profile
            .metadata_csum()
            .then(|| crate::checksum::csum_seed(&uuid)),
        hash_seed,
        xattr_space: usize::from(opts.inode_size) - inode::XATTR_OFFSET,
        resize_inode: true,
    })
}

/// Finds the geometry: the requested size, or the smallest that fits (plus
/// headroom).
fn choose(ctx: &Ctx<'_>, size: Size) -> Result<Plan> {
    let opts = ctx.opts;
    let bs = u64::from(opts.block_size);
    let used_inodes = ctx.num.slots.len() as u64;
    let inodes_for = |blocks: u64| -> u64 {
        match opts.inodes {
            Some(Inodes::Count(n)) => n.max(used_inodes),
            Some(Inodes::Ratio(r)) => (blocks * bs / r).max(used_inodes),
            None => (blocks * bs / 16384).max(used_inodes + used_inodes / 5 + 16),
        }
    };
    let geo_for = |blocks: u64| {
        Geometry::new(
            opts.profile,
            opts.block_size,
            blocks,
            inodes_for(blocks),
            u32::from(opts.inode_size),
            ctx.resize_inode,
        )
    };
    let try_plan = |blocks: u64| -> std::result::Result<Plan, PlanError> {
        match geo_for(blocks) {
            Some(g) => plan(ctx, g),
            None => Err(PlanError::Space),
        }
    };
    match size {
        Size::Bytes(bytes) => {
            let blocks = bytes / bs;
            match try_plan(blocks) {
                Ok(p) => Ok(p),
                Err(PlanError::Fatal(e)) => Err(e),
                Err(PlanError::Space) => {
                    let needed = choose(
                        ctx,
                        Size::Fit {
                            headroom_percent: 0,
                        },
                    )?
                    .geo
                    .blocks_count
                        * bs;
                    Err(Error::TooSmall {
                        requested: bytes,
                        needed: needed.max(bytes + bs),
                    })
                }
            }
        }
        Size::Fit { headroom_percent } => {
            // Grow until a plan fits (jumping by an estimate of the
            // shortfall), then bisect down to within 0.4 %: sizes are not
            // perfectly monotonic (journal size steps, dropped trailing
            // groups), so the bisection is bounded rather than exact.
            let mut lo: u64 = 0; // a size known not to fit
            let mut blocks: u64 = 64;
            let min = loop {
                match try_plan(blocks) {
                    Ok(p) => break p,
                    Err(PlanError::Fatal(e)) => return Err(e),
                    Err(PlanError::Space) => {
                        lo = blocks;
                        let next = match geo_for(blocks) {
                            Some(g) => blocks
                                .max(plan_probe(ctx, &g))
                                .max(blocks + blocks / 32 + 16),
                            None => blocks * 2,
                        };
                        if next > (1u64 << 48) {
                            return Err(Error::TooLarge {
                                what: "the tree needs more than 2^48 blocks".into(),
                            });
                        }
                        blocks = next;
                    }
                }
            };
            // Only sizes are kept while bisecting, so that a single plan is
            // in memory at a time; the chosen size is planned again at the
            // end (planning is deterministic).
            let mut hi = min.geo.blocks_count;
            let mut used = min.used_blocks;
            let mut have = Some(min);
            for _ in 0..12 {
                if hi <= lo + (hi / 256).max(1) {
                    break;
                }
                have = None;
                let mid = lo + (hi - lo) / 2;
                match try_plan(mid) {
                    Ok(p) => {
                        hi = p.geo.blocks_count.min(mid);
                        used = p.used_blocks;
                    }
                    Err(PlanError::Space) => lo = mid,
                    Err(PlanError::Fatal(e)) => return Err(e),
                }
            }
            if headroom_percent == 0 {
                return match have {
                    Some(p) => Ok(p),
                    None => try_plan(hi).map_err(|e| match e {
                        PlanError::Fatal(e) => e,
                        PlanError::Space => Error::TooLarge {
                            what: "planning is not deterministic (a bug)".into(),
                        },
                    }),
                };
            }
            drop(have);
            let free_wanted = used * u64::from(headroom_percent) / 100;
            let mut blocks = hi + free_wanted;
            loop {
                match try_plan(blocks) {
                    Ok(p) => return Ok(p),
                    Err(PlanError::Fatal(e)) => return Err(e),
                    Err(PlanError::Space) => blocks += blocks / 16 + 16,
                }
            }
        }
    }
}

/// A lower bound on the blocks a tree needs, from what the tree holds and
/// the metadata overhead of geometry `g` (used to jump close to the answer
/// when fitting).
fn plan_probe(ctx: &Ctx<'_>, g: &Geometry) -> u64 {
    let bs = u64::from(g.block_size);
    let mut content: u64 = 0;
    for slot in ctx.num.slots.iter().flatten() {
        if let Slot::Node { node, .. } = slot {
            match &ctx.tree.node(*node).kind {
                NodeKind::File(d) => {
                    content += file_block_runs(&d.data_ranges(), d.len(), bs)
                        .iter()
                        .map(|r| r.end - r.start)
                        .sum::<u64>()
                }
                NodeKind::Dir(d) => content += (d.len() as u64 * 24).div_ceil(bs).max(1),
                NodeKind::Symlink(t) if t.len() >= 60 => content += 1,
                _ => {}
            }
        }
    }
    let overhead = g.blocks_count - g.free_blocks();
    let journal = if ctx.opts.journal {
        journal_blocks(content + overhead)
    } else {
        0
    };
    content + overhead + journal + content / 64
}

/// Buffered positional writer that remembers what it wrote.
struct Out<'s, S: Write + Seek> {
    inner: io::BufWriter<&'s mut S>,
    pos: u64,
    bs: u64,
    written: Vec<Range<u64>>,
}

impl<'s, S: Write + Seek> Out<'s, S> {
    fn new(s: &'s mut S, bs: u64) -> io::Result<Self> {
        let pos = s.stream_position()?;
        Ok(Out {
            inner: io::BufWriter::with_capacity(1 << 20, s),
            pos,
            bs,
            written: Vec::new(),
        })
    }

    fn write_at(&mut self, byte: u64, data: &[u8]) -> io::Result<()> {
        if byte != self.pos {
            self.inner.seek(SeekFrom::Start(byte))?;
        }
        self.inner.write_all(data)?;
        self.pos = byte + data.len() as u64;
        let r = byte / self.bs..self.pos.div_ceil(self.bs);
        match self.written.last_mut() {
            Some(last) if last.end >= r.start && last.start <= r.start => {
                last.end = last.end.max(r.end)
            }
            _ => self.written.push(r),
        }
        Ok(())
    }

    fn zero_at(&mut self, byte: u64, len: u64, zero: &[u8]) -> io::Result<()> {
        if byte != self.pos {
            self.inner.seek(SeekFrom::Start(byte))?;
        }
        let mut left = len;
        while left > 0 {
            let k = left.min(zero.len() as u64) as usize;
            self.inner.write_all(&zero[..k])?;
            left -= k as u64;
        }
        self.pos = byte + len;
        Ok(())
    }
}

fn check_time(ctx: &Ctx<'_>, ino: u32, t: Timestamp) -> Result<(i64, u32)> {
    if t.secs < MIN_TIME || t.secs > MAX_TIME {
        return Err(Error::TimeOutOfRange {
            path: ctx.path_of(ino),
            secs: t.secs,
        });
    }
    Ok((t.secs, t.nanos))
}

/// Writes `tree` according to `options`. See [`crate::format`].
pub(crate) fn format<S: Write + Seek>(
    storage: &mut S,
    tree: &Tree,
    opts: &FormatOptions,
    progress: &dyn Progress,
) -> Result<Report> {
    let ctx = make_ctx(tree, opts)?;
    progress.begin(Stage::Plan, Some(ctx.num.slots.len() as u64));
    let plan = choose(&ctx, opts.size)?;
    progress.end(Stage::Plan);
    write(storage, &ctx, &plan, progress)
}

/// The smallest size in bytes. See [`crate::required_size`].
pub(crate) fn required_size(tree: &Tree, opts: &FormatOptions) -> Result<u64> {
    let ctx = make_ctx(tree, opts)?;
    let plan = choose(
        &ctx,
        Size::Fit {
            headroom_percent: 0,
        },
    )?;
    Ok(plan.geo.blocks_count * u64::from(opts.block_size))
}

fn write<S: Write + Seek>(
    storage: &mut S,
    ctx: &Ctx<'_>,
    plan: &Plan,
    progress: &dyn Progress,
) -> Result<Report> {
    let geo = &plan.geo;
    let bs = u64::from(geo.block_size);
    let bsz = geo.block_size as usize;
    let zeroed = ctx.opts.assume_zeroed;
    let mut out = Out::new(storage, bs)?;
    let zero = vec![0u8; 1 << 20];
    let mut buf = vec![0u8; 1 << 20];
    let n_inodes = ctx.num.slots.len();

    // File contents and directory/extent/xattr blocks, in allocation order.
    let total_bytes: u64 = plan.inodes.iter().map(|p| p.data_blocks() * bs).sum();
    progress.begin(Stage::WriteData, Some(total_bytes));
    if plan.journal_len > 0 {
        journal::encode(
            &mut buf[..bsz],
            geo.block_size,
            plan.journal_len as u32,
            &ctx.uuid,
        );
        let start = plan.journal[0].start * bs;
        out.write_at(start, &buf[..bsz])?;
        if !zeroed {
            out.zero_at(start + bs, (plan.journal_len - 1) * bs, &zero)?;
            for e in &plan.journal[1..] {
                out.zero_at(e.start * bs, u64::from(e.len) * bs, &zero)?;
            }
        }
    }
    if plan.resize_dind != 0 {
        write_resize_blocks(&mut out, geo, plan.resize_dind, &zero, zeroed)?;
    }
    let order = std::iter::once(ROOT_INO)
        .chain(std::iter::once(LPF_INO))
        .chain(FIRST_INO..=n_inodes as u32);
    for ino in order {
        let p = &plan.inodes[ino as usize - 1];
        let node = ctx.node_of(ino).map(|id| ctx.tree.node(id));
        match node.map(|n| &n.kind) {
            None | Some(NodeKind::Dir(_)) => {
                let (blocks, _) = ctx.encode_dir(ino)?;
                debug_assert_eq!(blocks.len() as u64, u64::from(p.dir_blocks) * bs);
                for e in &p.extents {
                    let off = (e.logical as usize) * bsz;
                    out.write_at(e.start * bs, &blocks[off..off + e.len as usize * bsz])?;
                }
            }
            Some(NodeKind::File(data)) => {
                let path = || ctx.path_of(ino);
                let mut reader = data.open().map_err(|e| Error::Source {
                    path: path(),
                    source: e,
                })?;
                for e in &p.extents {
                    let from = u64::from(e.logical) * bs;
                    let to = (from + u64::from(e.len) * bs).min(data.len());
                    let mut pos = from;
                    let mut dst = e.start * bs;
                    while pos < to {
                        let k = (to - pos).min(buf.len() as u64) as usize;
                        reader
                            .read_exact_at(pos, &mut buf[..k])
                            .map_err(|e| Error::Source {
                                path: path(),
                                source: e,
                            })?;
                        out.write_at(dst, &buf[..k])?;
                        pos += k as u64;
                        dst += k as u64;
                    }
                    // Zero the tail of the last block.
                    let pad = (bs - (to - from) % bs) % bs;
                    if pad > 0 {
                        out.zero_at(dst, pad, &zero)?;
                    }
                    progress.advance(Stage::WriteData, u64::from(e.len) * bs);
                }
            }
            Some(NodeKind::Symlink(t)) if t.len() >= 60 => {
                buf[..bsz].fill(0);
                buf[..t.len()].copy_from_slice(t);
                out.write_at(p.extents[0].start * bs, &buf[..bsz])?;
            }
            _ => {}
        }
        if !p.tree_blocks.is_empty() {
            let built = extent::build(
                &p.extents,
                &p.tree_blocks,
                geo.block_size,
                ctx.ino_seed(ino),
            );
            for (blk, bytes) in &built.blocks {
                out.write_at(blk * bs, bytes)?;
            }
        }
        if p.xattr_block != 0 {
            let (x, k) = ctx.xattrs(ino)?;
            buf[..bsz].fill(0);
            xattr::encode_block(&x[k..], &mut buf[..bsz], p.xattr_block, ctx.csum_seed);
            out.write_at(p.xattr_block * bs, &buf[..bsz])?;
        }
    }
    progress.end(Stage::WriteData);

    progress.begin(Stage::WriteMetadata, None);
    // Inode tables.
    let ipg = u64::from(geo.inodes_per_group);
    let isz = geo.inode_size as usize;
    let mut used_dirs = vec![0u32; geo.groups as usize];
    let mut table = vec![0u8; (geo.itable_blocks * bs) as usize];
    for g in 0..geo.groups {
        let first = u64::from(g) * ipg + 1;
        let used = (n_inodes as u64).saturating_sub(first - 1).min(ipg);
        if used == 0 {
            if !zeroed {
                out.zero_at(geo.inode_table(g) * bs, geo.itable_blocks * bs, &zero)?;
            }
            continue;
        }
        let bytes = (used as usize * isz).div_ceil(bsz) * bsz;
        table[..bytes].fill(0);
        for i in 0..used {
            let ino = (first + i) as u32;
            let raw = &mut table[i as usize * isz..(i as usize + 1) * isz];
            if encode_inode(ctx, plan, ino, raw)? {
                used_dirs[g as usize] += 1;
            }
        }
        out.write_at(geo.inode_table(g) * bs, &table[..bytes])?;
        if !zeroed && (bytes as u64) < geo.itable_blocks * bs {
            out.zero_at(
                geo.inode_table(g) * bs + bytes as u64,
                geo.itable_blocks * bs - bytes as u64,
                &zero,
            )?;
        }
    }

    // Bitmaps and descriptors.
    let alloc = Alloc {
        geo,
        group: plan.alloc_group,
        next: plan.alloc_next,
    };
    let csum = match ctx.csum_seed {
        Some(s) => GdtCsum::Crc32c(s),
        None => GdtCsum::Crc16(ctx.uuid),
    };
    let mut gdt = vec![0u8; (geo.gdt_blocks * bs) as usize];
    let mut free_blocks_total = 0u64;
    let mut allocated = Vec::new();
    // With 1 KiB blocks, block 0 (the boot block) precedes group 0; e2fsck
    // counts it as used, and so does the map.
    push_run(&mut allocated, 0..geo.first_data_block);
    for g in 0..geo.groups {
        let start = geo.group_start(g);
        let used_len = alloc.used_end(g) - start;
        let glen = geo.group_len(g);
        free_blocks_total += glen - used_len;
        push_run(&mut allocated, start..start + used_len);
        // Block bitmap: the used prefix, plus the bits past the end of the
        // filesystem in the last group.
        buf[..bsz].fill(0);
        set_bits(&mut buf[..bsz], 0, used_len as usize);
        set_bits(
            &mut buf[..bsz],
            glen as usize,
            geo.blocks_per_group as usize,
        );
        let bb_csum = ctx.csum_seed.map_or(0, |s| {
            crate::checksum::crc32c(s, &buf[..(geo.blocks_per_group / 8) as usize])
        });
        out.write_at(geo.block_bitmap(g) * bs, &buf[..bsz])?;
        // Inode bitmap: used prefix, padding past inodes_per_group set.
        let first = u64::from(g) * ipg;
        let used = (n_inodes as u64).saturating_sub(first).min(ipg);
        buf[..bsz].fill(0);
        set_bits(&mut buf[..bsz], 0, used as usize);
        buf[(ipg / 8) as usize..bsz].fill(0xFF);
        let ib_csum = ctx.csum_seed.map_or(0, |s| {
            crate::checksum::crc32c(s, &buf[..(ipg / 8) as usize])
        });
        out.write_at(geo.inode_bitmap(g) * bs, &buf[..bsz])?;
        let mut flags = BG_INODE_ZEROED;
        if used == 0 {
            flags |= BG_INODE_UNINIT;
        }
        let d = GroupDesc {
            block_bitmap: geo.block_bitmap(g),
            inode_bitmap: geo.inode_bitmap(g),
            inode_table: geo.inode_table(g),
            free_blocks_count: (glen - used_len) as u32,
            free_inodes_count: (ipg - used) as u32,
            used_dirs_count: used_dirs[g as usize],
            flags,
            block_bitmap_csum: bb_csum,
            inode_bitmap_csum: ib_csum,
            itable_unused: (ipg - used) as u32,
        };
        let ds = geo.desc_size as usize;
        d.encode(&mut gdt[g as usize * ds..(g as usize + 1) * ds], g, csum);
    }

    // Superblock and backups.
    let mut features_compat = COMPAT_EXT_ATTR | COMPAT_DIR_INDEX;
    if plan.journal_len > 0 {
        features_compat |= COMPAT_HAS_JOURNAL;
    }
    if geo.reserved_gdt_blocks > 0 {
        features_compat |= COMPAT_RESIZE_INODE;
    }
    let mut incompat = INCOMPAT_FILETYPE | INCOMPAT_EXTENTS | INCOMPAT_FLEX_BG;
    let mut ro = RO_COMPAT_SPARSE_SUPER
        | RO_COMPAT_LARGE_FILE
        | RO_COMPAT_HUGE_FILE
        | RO_COMPAT_DIR_NLINK
        | RO_COMPAT_EXTRA_ISIZE;
    if ctx.opts.profile.is_64bit() {
        incompat |= INCOMPAT_64BIT;
    }
    if ctx.csum_seed.is_some() {
        ro |= RO_COMPAT_METADATA_CSUM;
    } else {
        ro |= RO_COMPAT_GDT_CSUM;
    }
    let mut volume_name = [0u8; 16];
    volume_name[..ctx.opts.label.len()].copy_from_slice(&ctx.opts.label);
    let mut hash_seed = [0u8; 16];
    for (i, w) in ctx.hash_seed.iter().enumerate() {
        hash_seed[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    let mut jnl_blocks = [0u32; 17];
    if plan.journal_len > 0 {
        let j = journal_inode(ctx, plan);
        for (i, w) in jnl_blocks.iter_mut().take(15).enumerate() {
            *w = u32::from_le_bytes(j.block[4 * i..4 * i + 4].try_into().expect("4 bytes"));
        }
        jnl_blocks[15] = (j.size >> 32) as u32;
        jnl_blocks[16] = j.size as u32;
    }
    let used_inodes = n_inodes as u64;
    let mut sb = Superblock {
        inodes_count: geo.inodes_count() as u32,
        blocks_count: geo.blocks_count,
        r_blocks_count: geo.blocks_count * u64::from(ctx.opts.reserved_percent) / 100,
        free_blocks_count: free_blocks_total,
        free_inodes_count: (geo.inodes_count() - used_inodes) as u32,
        first_data_block: geo.first_data_block as u32,
        log_block_size: geo.block_size.trailing_zeros() - 10,
        blocks_per_group: geo.blocks_per_group as u32,
        inodes_per_group: geo.inodes_per_group,
        time: ctx.opts.timestamp.secs,
        inode_size: geo.inode_size as u16,
        block_group_nr: 0,
        feature_compat: features_compat,
        feature_incompat: incompat,
        feature_ro_compat: ro,
        uuid: ctx.uuid,
        volume_name,
        reserved_gdt_blocks: geo.reserved_gdt_blocks as u16,
        journal_inum: if plan.journal_len > 0 { JOURNAL_INO } else { 0 },
        hash_seed,
        def_hash_version: HashVersion::HalfMd4.code(),
        jnl_backup_type: if plan.journal_len > 0 { 1 } else { 0 },
        desc_size: if ctx.opts.profile.is_64bit() { 64 } else { 0 },
        default_mount_opts: 0x0C, // user_xattr, acl
        jnl_blocks,
        min_extra_isize: inode::EXTRA_ISIZE,
        flags: 0x1, // signed directory hash
        log_groups_per_flex: geo.log_groups_per_flex,
        checksum_type: u8::from(ctx.csum_seed.is_some()),
    };
    let mut sbuf = [0u8; 1024];
    for g in (0..geo.groups).filter(|&g| Geometry::has_super(g)) {
        sb.block_group_nr = g as u16;
        sb.encode(&mut sbuf);
        let start = geo.group_start(g);
        let sb_byte = if g == 0 { 1024 } else { start * bs };
        if g == 0 && !zeroed {
            // The boot block (bytes 0..1024) holds nothing, whatever the block size.
            out.zero_at(0, 1024, &zero)?;
        }
        out.write_at(sb_byte, &sbuf)?;
        if bs > 2048 || (bs == 2048 && g != 0) {
            // The rest of the superblock's block.
            let end = (sb_byte / bs + 1) * bs;
            if !zeroed {
                out.zero_at(sb_byte + 1024, end - sb_byte - 1024, &zero)?;
            }
        }
        out.write_at((start + 1) * bs, &gdt)?;
        if g != 0 && !zeroed {
            out.zero_at(
                (start + 1 + geo.gdt_blocks) * bs,
                geo.reserved_gdt_blocks * bs,
                &zero,
            )?;
        }
    }
    out.inner.flush()?;
    progress.end(Stage::WriteMetadata);

    let mut written = std::mem::take(&mut out.written);
    written.sort_by_key(|r| r.start);
    let written = merge(written);
    let used_blocks = geo.blocks_count - free_blocks_total;
    Ok(Report {
        block_size: geo.block_size,
        blocks_count: geo.blocks_count,
        used_blocks,
        inodes_count: geo.inodes_count(),
        used_inodes,
        uuid: ctx.uuid,
        allocated: BlockMap {
            block_size: geo.block_size,
            runs: allocated,
        },
        written: BlockMap {
            block_size: geo.block_size,
            runs: written,
        },
    })
}

fn push_run(v: &mut Vec<Range<u64>>, r: Range<u64>) {
    if r.is_empty() {
        return;
    }
    match v.last_mut() {
        Some(last) if last.end == r.start => last.end = r.end,
        _ => v.push(r),
    }
}

fn merge(v: Vec<Range<u64>>) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// Sets bits `from..to` of a bitmap.
fn set_bits(b: &mut [u8], from: usize, to: usize) {
    let to = to.min(b.len() * 8);
    let mut i = from;
    while i < to && !i.is_multiple_of(8) {
        b[i / 8] |= 1 << (i % 8);
        i += 1;
    }
    let full_end = to / 8;
    if i / 8 < full_end {
        b[i / 8..full_end].fill(0xFF);
        i = full_end * 8;
    }
    while i < to {
        b[i / 8] |= 1 << (i % 8);
        i += 1;
    }
}

/// The resize inode's blocks: the double-indirect block listing the primary
/// reserved GDT blocks, and each primary reserved GDT block listing its
/// backups (e2fsprogs `res_gdt.c` layout, which e2fsck checks exactly).
fn write_resize_blocks<S: Write + Seek>(
    out: &mut Out<'_, S>,
    geo: &Geometry,
    dind: u64,
    _zero: &[u8],
    _zeroed: bool,
) -> io::Result<()> {
    let bs = u64::from(geo.block_size);
    let apb = bs / 4;
    let mut dbuf = vec![0u8; bs as usize];
    let backups: Vec<u32> = (1..geo.groups)
        .filter(|&g| Geometry::has_super(g))
        .collect();
    for rsv in 0..geo.reserved_gdt_blocks {
        let gdt_blk = geo.first_data_block + 1 + geo.gdt_blocks + rsv;
        let slot = ((geo.gdt_blocks + rsv) % apb) as usize;
        dbuf[4 * slot..4 * slot + 4].copy_from_slice(&(gdt_blk as u32).to_le_bytes());
        let mut ind = vec![0u8; bs as usize];
        for (i, &g) in backups.iter().enumerate().take(apb as usize) {
            let expect = gdt_blk + u64::from(g) * geo.blocks_per_group;
            ind[4 * i..4 * i + 4].copy_from_slice(&(expect as u32).to_le_bytes());
        }
        out.write_at(gdt_blk * bs, &ind)?;
    }
    out.write_at(dind * bs, &dbuf)
}

fn journal_inode(ctx: &Ctx<'_>, plan: &Plan) -> Inode {
    let bs = u64::from(plan.geo.block_size);
    let t = (ctx.opts.timestamp.secs, ctx.opts.timestamp.nanos);
    let built = extent::build(&plan.journal, &[], plan.geo.block_size, None);
    Inode {
        mode: 0o100600,
        size: plan.journal_len * bs,
        atime: t,
        ctime: t,
        mtime: t,
        crtime: t,
        links_count: 1,
        blocks_512: plan.journal_len * bs / 512,
        flags: FL_EXTENTS,
        block: built.root,
        ..Inode::default()
    }
}

/// Encodes inode `ino` into `raw`; returns whether it is a directory.
fn encode_inode(ctx: &Ctx<'_>, plan: &Plan, ino: u32, raw: &mut [u8]) -> Result<bool> {
    let geo = &plan.geo;
    let bs = u64::from(geo.block_size);
    let fs_t = (ctx.opts.timestamp.secs, ctx.opts.timestamp.nanos);
    let sectors = bs / 512;
    let mut is_dir = false;
    let mut xattrs: Option<(Vec<xattr::XattrEntry>, usize)> = None;
    let inode = match ino {
        RESIZE_INO if plan.resize_dind != 0 => {
            let apb = bs / 4;
            let backups = (1..geo.groups).filter(|&g| Geometry::has_super(g)).count() as u64;
            let mut block = [0u8; 60];
            block[13 * 4..14 * 4].copy_from_slice(&(plan.resize_dind as u32).to_le_bytes());
            Inode {
                mode: 0o100600,
                size: (apb * apb + apb + 12) * bs,
                atime: fs_t,
                ctime: fs_t,
                mtime: fs_t,
                crtime: fs_t,
                links_count: 1,
                blocks_512: (1 + geo.reserved_gdt_blocks * (1 + backups)) * sectors,
                block,
                ..Inode::default()
            }
        }
        JOURNAL_INO if plan.journal_len > 0 => journal_inode(ctx, plan),
        _ => match ctx.num.slots[ino as usize - 1] {
            None => {
                raw.fill(0);
                return Ok(false);
            }
            Some(Slot::LostFound) => {
                is_dir = true;
                let p = &plan.inodes[ino as usize - 1];
                let built = extent::build(
                    &p.extents,
                    &p.tree_blocks,
                    geo.block_size,
                    ctx.ino_seed(ino),
                );
                Inode {
                    mode: 0o040700,
                    size: u64::from(p.dir_blocks) * bs,
                    atime: fs_t,
                    ctime: fs_t,
                    mtime: fs_t,
                    crtime: fs_t,
                    links_count: 2,
                    blocks_512: (p.data_blocks() + p.tree_blocks.len() as u64) * sectors,
                    flags: FL_EXTENTS,
                    block: built.root,
                    ..Inode::default()
                }
            }
            Some(Slot::Node { node, .. }) => {
                let n = ctx.tree.node(node);
                let p = &plan.inodes[ino as usize - 1];
                let m = &n.meta;
                let (size, flags, block, links) = match &n.kind {
                    NodeKind::Dir(_) => {
                        is_dir = true;
                        let links = 2 + ctx.num.subdirs[ino as usize - 1];
                        let built = extent::build(
                            &p.extents,
                            &p.tree_blocks,
                            geo.block_size,
                            ctx.ino_seed(ino),
                        );
                        let fl = FL_EXTENTS | if p.indexed { FL_INDEX } else { 0 };
                        (
                            u64::from(p.dir_blocks) * bs,
                            fl,
                            built.root,
                            if links > MAX_LINKS { 1 } else { links },
                        )
                    }
                    NodeKind::File(d) => {
                        let built = extent::build(
                            &p.extents,
                            &p.tree_blocks,
                            geo.block_size,
                            ctx.ino_seed(ino),
                        );
                        (
                            d.len(),
                            FL_EXTENTS,
                            built.root,
                            ctx.num.names[ino as usize - 1],
                        )
                    }
                    NodeKind::Symlink(t) if t.len() < 60 => {
                        let mut block = [0u8; 60];
                        block[..t.len()].copy_from_slice(t);
                        (t.len() as u64, 0, block, ctx.num.names[ino as usize - 1])
                    }
                    NodeKind::Symlink(t) => {
                        let built = extent::build(
                            &p.extents,
                            &p.tree_blocks,
                            geo.block_size,
                            ctx.ino_seed(ino),
                        );
                        (
                            t.len() as u64,
                            FL_EXTENTS,
                            built.root,
                            ctx.num.names[ino as usize - 1],
                        )
                    }
                    NodeKind::CharDevice(dev) | NodeKind::BlockDevice(dev) => {
                        if dev.major > 0xFFF || dev.minor > 0xF_FFFF {
                            return Err(Error::TooLarge {
                                what: format!(
                                    "device number {}:{} of {}",
                                    dev.major,
                                    dev.minor,
                                    ctx.path_of(ino)
                                ),
                            });
                        }
                        let mut block = [0u8; 60];
                        if dev.major < 256 && dev.minor < 256 {
                            block[..4]
                                .copy_from_slice(&((dev.major << 8) | dev.minor).to_le_bytes());
                        } else {
                            let new =
                                (dev.minor & 0xFF) | (dev.major << 8) | ((dev.minor & !0xFF) << 12);
                            block[4..8].copy_from_slice(&new.to_le_bytes());
                        }
                        (0, 0, block, ctx.num.names[ino as usize - 1])
                    }
                    NodeKind::Fifo | NodeKind::Socket => {
                        (0, 0, [0u8; 60], ctx.num.names[ino as usize - 1])
                    }
                };
                let blocks =
                    p.data_blocks() + p.tree_blocks.len() as u64 + u64::from(p.xattr_block != 0);
                if !m.xattrs.is_empty() {
                    xattrs = Some(ctx.xattrs(ino)?);
                }
                Inode {
                    mode: n.st_mode(),
                    uid: m.uid,
                    gid: m.gid,
                    size,
                    atime: check_time(ctx, ino, m.atime)?,
                    ctime: check_time(ctx, ino, m.ctime)?,
                    mtime: check_time(ctx, ino, m.mtime)?,
                    crtime: check_time(ctx, ino, m.crtime.unwrap_or(m.mtime))?,
                    links_count: links as u16,
                    blocks_512: blocks * sectors,
                    flags,
                    block,
                    file_acl: p.xattr_block,
                }
            }
        },
    };
    inode.encode(raw);
    let area = &mut raw[inode::XATTR_OFFSET..];
    area.fill(0);
    if let Some((x, k)) = &xattrs {
        xattr::encode_in_inode(&x[..*k], area);
    }
    if let Some(seed) = ctx.ino_seed(ino) {
        inode::set_checksum(raw, seed);
    }
    Ok(is_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits() {
        let mut b = [0u8; 4];
        set_bits(&mut b, 3, 21);
        assert_eq!(b, [0xF8, 0xFF, 0x1F, 0]);
    }

    #[test]
    fn first_block_is_always_allocated() {
        let late = [8192..9000u64];
        assert_eq!(file_block_runs(&late, 9000, 4096), vec![0..1, 2..3]);
        assert_eq!(
            file_block_runs(&[0..4096, 4096..5000], 5000, 4096),
            vec![0..2]
        );
        assert_eq!(file_block_runs(&[], 0, 4096), Vec::<Range<u64>>::new());
    }
}
