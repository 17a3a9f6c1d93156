//! Properties over pseudo-random trees (`fixtures::random_tree`): every
//! tree becomes an image that `e2fsck -fn` passes silently and that reads
//! back as the tree; images are deterministic, depend on the UUID, and do
//! not depend on what the storage held before.
//!
//! By default 24 trees of at most 300 nodes; `AMI_E2E=1` (CI) runs 48 trees
//! of up to 800 nodes, and `AMI_SOAK=1` 200 trees of up to 2,000 nodes.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};

use ami_core::{FileData, NodeKind, Timestamp, Tree};
use ami_ext4::{FormatOptions, Profile};
use common::*;

fn cases() -> (u64, usize) {
    if std::env::var("AMI_SOAK").is_ok_and(|v| v == "1") {
        // The long soak (about 17 minutes on 2 cores), by hand only.
        (200, 2000)
    } else if e2e() {
        (48, 800)
    } else {
        (24, 300)
    }
}

/// Profile and block size of case `seed`: both profiles, mostly 4 KiB
/// blocks, every fourth case with 1 or 2 KiB.
fn config(seed: u64) -> (Profile, u32) {
    let profile = if seed.is_multiple_of(2) {
        Profile::Default
    } else {
        Profile::PvGrub
    };
    let bs = match seed % 8 {
        3 => 1024,
        7 => 2048,
        _ => 4096,
    };
    (profile, bs)
}

fn case_tree(seed: u64, max_nodes: usize) -> (Tree, FormatOptions) {
    let (profile, bs) = config(seed);
    let mut tree = fixtures::random_tree(seed, max_nodes);
    fit_block_size(&mut tree, bs);
    let opts = FormatOptions::new()
        .profile(profile)
        .block_size(bs)
        .assume_zeroed(seed.is_multiple_of(3));
    (tree, opts)
}

fn run_case(seed: u64, max_nodes: usize) {
    let (tree, opts) = case_tree(seed, max_nodes);
    let (_d, img, report) = format_to_file(&tree, &opts);
    e2fsck_clean_report(&img, &report);
    // debugfs checks everything; ext4-view the inodes whose times it can
    // decode (see `ext4_view_reads_times`).
    assert_matches_tree(&img, &tree);
    if seed.is_multiple_of(4) {
        assert_rdump_matches(&img, &tree);
    }
    // The same tree with ext4-view-friendly times, so that ext4-view reads
    // every inode and every file's contents as well.
    let friendly = ext4_view_friendly(&tree);
    let (_d2, img2, report2) = format_to_file(&friendly, &opts);
    e2fsck_clean_report(&img2, &report2);
    assert_matches_tree(&img2, &friendly);
}

#[test]
fn random_trees_round_trip() {
    let (n, max_nodes) = cases();
    for seed in 0..n {
        let r = catch_unwind(AssertUnwindSafe(|| run_case(seed, max_nodes)));
        if let Err(e) = r {
            let (profile, bs) = config(seed);
            eprintln!(
                "failing case: fixtures::random_tree({seed}, {max_nodes}), {profile:?}, {bs}-byte blocks"
            );
            std::panic::resume_unwind(e);
        }
    }
}

#[test]
fn same_input_same_bytes() {
    for seed in [101, 102] {
        let (tree, opts) = case_tree(seed, 200);
        let opts = opts.timestamp(Timestamp::from_secs(1_700_000_000));
        let (_a, img_a, ra) = format_to_file(&tree, &opts);
        let (_b, img_b, rb) = format_to_file(&tree.clone(), &opts.clone());
        assert_eq!(ra, rb, "reports differ");
        let (a, b) = (
            std::fs::read(&img_a).unwrap(),
            std::fs::read(&img_b).unwrap(),
        );
        assert!(a == b, "seed {seed}: two runs gave different images");
        // And into memory, the bytes are the same as into a file.
        let mut cur = std::io::Cursor::new(Vec::new());
        ami_ext4::format(&mut cur, &tree, &opts, &ami_core::progress::NoProgress).unwrap();
        let mut m = cur.into_inner();
        m.resize(a.len(), 0);
        assert!(m == a, "seed {seed}: Cursor and file images differ");
    }
}

#[test]
fn uuid_changes_the_bytes() {
    for profile in [Profile::Default, Profile::PvGrub] {
        let (tree, opts) = case_tree(103, 200);
        let opts = opts.profile(profile);
        let u1 = [0x11; 16];
        let u2 = [0x22; 16];
        let (_a, img_a, ra) = format_to_file(&tree, &opts.clone().uuid(u1));
        let (_b, img_b, rb) = format_to_file(&tree, &opts.clone().uuid(u2));
        assert_eq!((ra.uuid, rb.uuid), (u1, u2));
        let (a, b) = (
            std::fs::read(&img_a).unwrap(),
            std::fs::read(&img_b).unwrap(),
        );
        for (img, want) in [
            (&img_a, "11111111-1111-1111-1111-111111111111"),
            (&img_b, "22222222-2222-2222-2222-222222222222"),
        ] {
            e2fsck_clean(img);
            assert_eq!(
                dumpe2fs_field(&dumpe2fs(img, true), "Filesystem UUID"),
                Some(want)
            );
        }
        let bs = ra.block_size as usize;
        let differing = a
            .chunks(bs)
            .zip(b.chunks(bs))
            .filter(|(x, y)| x != y)
            .count();
        // The superblock (block 0) and the descriptors (their checksums are
        // seeded from the UUID) always differ; with metadata_csum so do
        // every inode table block in use, bitmap checksums, directory
        // blocks and extent blocks.
        assert_ne!(a[..2 * bs], b[..2 * bs]);
        if profile == Profile::Default {
            assert!(
                differing > 10,
                "{profile:?}: only {differing} blocks differ"
            );
        }
    }
    // The default (all-zero) UUID is replaced by a fixed one, derived from
    // the label, never random.
    let (tree, opts) = case_tree(103, 100);
    let (_c, _, rc) = format_to_file(&tree, &opts.clone().label("one"));
    let (_d, _, rd) = format_to_file(&tree, &opts.clone().label("one"));
    let (_e, _, re) = format_to_file(&tree, &opts.clone().label("two"));
    assert_ne!(rc.uuid, [0; 16]);
    assert_eq!(rc.uuid, rd.uuid);
    assert_ne!(rc.uuid, re.uuid);
}

/// Formatting over storage full of garbage (and `assume_zeroed(false)`)
/// gives the same filesystem as formatting into a new file: every block
/// the filesystem uses is byte-identical, and the image is valid.
#[test]
fn garbage_in_storage_does_not_matter() {
    for seed in [104, 105, 106, 107] {
        let (tree, opts) = case_tree(seed, 250);
        let opts = opts.assume_zeroed(true);
        let (_d, img, report) = format_to_file(&tree, &opts);
        let clean = std::fs::read(&img).unwrap();
        let (dirty, r2) = format_to_prefilled(&tree, &opts, report.size_bytes());
        assert_eq!(r2.blocks_count, report.blocks_count);
        assert_eq!(r2.allocated, report.allocated);
        let bs = u64::from(report.block_size);
        for run in &report.allocated.runs {
            for b in run.clone() {
                let r = (b * bs) as usize..((b + 1) * bs) as usize;
                if clean[r.clone()] != dirty[r.clone()] {
                    let i = clean[r.clone()]
                        .iter()
                        .zip(&dirty[r.clone()])
                        .position(|(x, y)| x != y)
                        .unwrap();
                    panic!(
                        "seed {seed}: block {b} (in use) differs at byte {i}: {:#04x} in a new file, {:#04x} over 0x{PREFILL:02x}",
                        clean[r.start + i], dirty[r.start + i]
                    );
                }
            }
        }
        // The 1024 bytes before the superblock are zeroed as mke2fs does
        // (whatever signature the storage held there must not survive),
        // whatever the block size.
        assert!(
            dirty[..1024].iter().all(|&b| b == 0),
            "seed {seed}: {}-byte blocks: stale bytes before the superblock",
            report.block_size
        );
        // Everything the writer says it wrote is in use.
        for w in &r2.written.runs {
            assert!(
                report
                    .allocated
                    .runs
                    .iter()
                    .any(|a| a.start <= w.start && w.end <= a.end),
                "seed {seed}: written run {w:?} outside the allocated blocks"
            );
        }
        let (_d2, dirty_img) = bytes_to_file(&dirty);
        e2fsck_clean_report(&dirty_img, &r2);
        assert_matches_tree(&dirty_img, &tree);
    }
}

/// The comparison itself must be able to fail: an image checked against a
/// slightly different tree is rejected, whatever the difference.
#[test]
fn comparison_detects_differences() {
    let tree = fixtures::edge_tree(&fixtures::EdgeScale::tiny());
    let (_d, img, _) = format_to_file(&tree, &FormatOptions::new());
    check_image(&img, &tree, Checks::default());
    type Mutation = Box<dyn Fn(&mut Tree)>;
    let edit = |path: &'static [u8], f: fn(&mut ami_core::Node)| -> Mutation {
        Box::new(move |t: &mut Tree| {
            let id = t.lookup(path).unwrap();
            f(t.node_mut(id));
        })
    };
    let mutations: Vec<(&str, Mutation)> = vec![
        ("mode", edit(b"files/dense", |n| n.meta.mode ^= 0o001)),
        ("setuid", edit(b"perms/setuid", |n| n.meta.mode &= !0o4000)),
        ("uid", edit(b"owners/big-ids", |n| n.meta.uid += 1)),
        ("gid", edit(b"owners/big-ids", |n| n.meta.gid += 65_536)),
        ("mtime ns", edit(b"times/2100", |n| n.meta.mtime.nanos -= 1)),
        ("atime", edit(b"files/empty", |n| n.meta.atime.secs += 1)),
        ("ctime", edit(b"files/empty", |n| n.meta.ctime.nanos += 1)),
        (
            "crtime",
            edit(b"times/1960", |n| {
                n.meta.crtime = Some(fixtures::times::BASE)
            }),
        ),
        (
            "contents",
            edit(b"files/dense", |n| {
                let NodeKind::File(d) = &n.kind else {
                    unreachable!()
                };
                let mut v = vec![0u8; d.len() as usize];
                d.open().unwrap().read_exact_at(0, &mut v).unwrap();
                v[20_000] ^= 1;
                n.kind = NodeKind::File(FileData::from_bytes(v));
            }),
        ),
        (
            "symlink",
            edit(b"symlinks/len60", |n| {
                let NodeKind::Symlink(t) = &mut n.kind else {
                    unreachable!()
                };
                t[30] ^= 1;
            }),
        ),
        (
            "fast symlink",
            edit(b"symlinks/len59", |n| {
                let NodeKind::Symlink(t) = &mut n.kind else {
                    unreachable!()
                };
                t[58] ^= 1;
            }),
        ),
        (
            "device",
            edit(b"special/nvme-big", |n| {
                n.kind = NodeKind::BlockDevice(ami_core::DeviceNumber {
                    major: 259,
                    minor: 70_001,
                })
            }),
        ),
        ("type", edit(b"special/fifo", |n| n.kind = NodeKind::Socket)),
        (
            "xattr value",
            edit(b"xattrs/capability", |n| {
                let v = n.meta.xattrs.values_mut().next().unwrap();
                v[5] ^= 0x01;
            }),
        ),
        (
            "acl",
            edit(b"xattrs/acl-dir", |n| {
                let v = n
                    .meta
                    .xattrs
                    .get_mut(&b"system.posix_acl_access"[..])
                    .unwrap();
                v[6] ^= 0x02; // permissions of the ACL_USER_OBJ entry
            }),
        ),
        (
            "xattr added",
            edit(b"files/dense", |n| {
                n.meta.xattrs.insert(b"user.x"[..].into(), b"y"[..].into());
            }),
        ),
        (
            "extra name",
            Box::new(|t: &mut Tree| {
                let d = t.lookup(b"files").unwrap();
                t.add(
                    d,
                    b"new",
                    ami_core::Node::file(FileData::from_bytes(vec![]), Default::default()),
                )
                .unwrap();
            }),
        ),
        (
            "missing name",
            Box::new(|t: &mut Tree| {
                let d = t.lookup(b"big-dir").unwrap();
                t.remove(d, &fixtures::big_dir_entry(7)).unwrap();
            }),
        ),
        (
            "hard link split",
            Box::new(|t: &mut Tree| {
                let d = t.lookup(b"links/b").unwrap();
                t.remove(d, b"three").unwrap();
                t.add(
                    d,
                    b"three",
                    ami_core::Node::file(
                        FileData::from_bytes(b"three names\n".to_vec()),
                        ami_core::Metadata::new(0o644).times(fixtures::times::BASE),
                    ),
                )
                .unwrap();
            }),
        ),
    ];
    for (what, m) in mutations {
        let mut t = tree.clone();
        m(&mut t);
        assert!(t != tree, "{what}: mutation changed nothing");
        let r = catch_unwind(AssertUnwindSafe(|| {
            check_image(&img, &t, Checks::default())
        }));
        assert!(r.is_err(), "{what}: the comparison missed the difference");
    }
}
