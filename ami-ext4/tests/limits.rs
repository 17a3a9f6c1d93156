//! The writer near ext4's structural limits: files past 4 GiB, deep extent
//! trees, huge htree directories, many block groups with backups, fitted
//! sizes and inode counts.

mod common;

use std::collections::BTreeSet;
use std::ops::Range;
use std::os::unix::fs::FileExt;

use ami_core::{FileData, Metadata, Node, Tree};
use ami_ext4::{FormatOptions, Inodes, Profile, Size};
use common::*;

const GIB: u64 = 1 << 30;

fn root() -> Tree {
    Tree::new(Metadata::new(0o755))
}

/// Reads `len` bytes at `pos` of image file `path` through ext4-view.
fn view_read(img: &std::path::Path, path: &str, pos: u64, len: usize) -> Vec<u8> {
    let fs = load_ext4_view(img);
    let mut f = fs.open(path).unwrap();
    f.seek_to(pos).unwrap();
    let mut out = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let n = f.read_bytes(&mut out[got..]).unwrap();
        assert!(n > 0, "{path}: short read at {}", pos + got as u64);
        got += n;
    }
    out
}

/// Logical blocks mapped by the extents in `debugfs stat` output.
fn mapped_blocks(s: &Stat) -> (BTreeSet<u64>, usize) {
    let (items, tree_blocks) = parse_extents(s.extents.as_deref().expect("extents"));
    assert!(items.iter().all(|e| !e.uninit));
    (
        items
            .iter()
            .flat_map(|e| e.logical..e.logical + e.len)
            .collect(),
        tree_blocks,
    )
}

#[test]
fn file_larger_than_4_gib() {
    let len = 5 * GIB;
    let ranges: Vec<Range<u64>> = vec![0..4096, 4 * GIB - 10..4 * GIB + 4096, len - 100..len];
    // The contents come from a sparse host file with a pattern in the
    // data ranges (nothing of 5 GiB is ever held in memory).
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let f = std::fs::File::create(&src).unwrap();
    f.set_len(len).unwrap();
    for (i, r) in ranges.iter().enumerate() {
        f.write_all_at(
            &fixtures::pattern(i as u64 + 1, (r.end - r.start) as usize),
            r.start,
        )
        .unwrap();
    }
    drop(f);
    let mut t = root();
    let data = FileData::from_host(src.as_path(), 0, len).with_data_ranges(ranges.clone());
    t.add(t.root(), b"big", Node::file(data, Metadata::new(0o644)))
        .unwrap();

    for profile in [Profile::Default, Profile::PvGrub] {
        let (_d, img, r) = format_to_file(
            &t,
            &FormatOptions::new().profile(profile).assume_zeroed(true),
        );
        e2fsck_clean_report(&img, &r);
        assert!(
            r.size_bytes() < 64 << 20,
            "a 5 GiB sparse file made a {}-byte fs",
            r.size_bytes()
        );
        let s = parse_stat(&debugfs_each(&img, &["stat /big".to_string()])[0]);
        assert_eq!(s.size, len);
        let (mapped, tree_blocks) = mapped_blocks(&s);
        let want: BTreeSet<u64> = [0, (4 * GIB - 10) / 4096, 4 * GIB / 4096, len / 4096 - 1].into();
        assert_eq!(mapped, want);
        assert_eq!(s.blockcount, (mapped.len() + tree_blocks) as u64 * 8);
        let fs = load_ext4_view(&img);
        assert_eq!(fs.metadata("/big").unwrap().len(), len);
        for (i, r) in ranges.iter().enumerate() {
            let n = (r.end - r.start) as usize;
            assert_eq!(
                view_read(&img, "/big", r.start, n),
                fixtures::pattern(i as u64 + 1, n),
                "range {r:?}"
            );
        }
        // Holes read as zeros, right up to the data.
        assert_eq!(view_read(&img, "/big", 4 * GIB - 4096, 4086), vec![0; 4086]);
        assert_eq!(view_read(&img, "/big", 3 * GIB, 8192), vec![0; 8192]);
        // large_file is set (i_size_high is used).
        assert!(dumpe2fs_field(&dumpe2fs(&img, true), "Filesystem features")
            .unwrap()
            .contains("large_file"));
    }
}

/// A file with `extents` one-block extents: data in every other block.
fn striped_file(extents: u64, bs: u64) -> FileData {
    let len = (2 * extents - 1) * bs;
    let bytes = fixtures::pattern(42, len as usize);
    let ranges = (0..extents).map(|i| 2 * i * bs..(2 * i + 1) * bs);
    // The holes hold zeros in memory, like a sparse file read back.
    let mut b = bytes;
    for i in 0..extents - 1 {
        let h = ((2 * i + 1) * bs) as usize;
        b[h..h + bs as usize].fill(0);
    }
    FileData::from_bytes(b).with_data_ranges(ranges)
}

/// Depth of the extent tree of `path` (from `debugfs ex`).
fn extent_depth(img: &std::path::Path, path: &str) -> u32 {
    let out = debugfs(img, &[format!("ex {path}")]);
    // Rows start with "level/max_depth".
    let depths: BTreeSet<u32> = out
        .lines()
        .filter_map(|l| {
            let t = l.trim_start();
            let (a, b) = t.split_once('/')?;
            a.trim().parse::<u32>().ok()?;
            b.split_whitespace().next()?.parse().ok()
        })
        .collect();
    assert_eq!(depths.len(), 1, "ex output:\n{out}");
    depths.into_iter().next().unwrap()
}

#[test]
fn deep_extent_trees() {
    // (block size, extents, expected depth): 4 extents fit the inode; a
    // leaf block holds (bs - 12) / 12 extents, and the inode 4 pointers.
    let cases: &[(u32, u64, u32)] = &[
        (4096, 4, 0),
        (4096, 5, 1),
        (4096, 1360, 1),
        (4096, 1361, 2),
        (1024, 336, 1),
        (1024, 337, 2),
        (1024, 3000, 2),
    ];
    for &(bs, n, depth) in cases {
        for profile in [Profile::Default, Profile::PvGrub] {
            let mut t = root();
            let data = striped_file(n, u64::from(bs));
            t.add(t.root(), b"striped", Node::file(data, Metadata::new(0o644)))
                .unwrap();
            let (_d, img, r) =
                format_to_file(&t, &FormatOptions::new().profile(profile).block_size(bs));
            // Clean means no "extent tree could be shorter/narrower" either.
            e2fsck_clean_report(&img, &r);
            assert_eq!(
                extent_depth(&img, "/striped"),
                depth,
                "{bs}/{n}/{profile:?}"
            );
            let s = parse_stat(&debugfs_each(&img, &["stat /striped".to_string()])[0]);
            let (mapped, tree_blocks) = mapped_blocks(&s);
            assert_eq!(mapped, (0..n).map(|i| 2 * i).collect::<BTreeSet<u64>>());
            // Minimal shape: the index blocks a packed tree needs.
            let per_leaf = (u64::from(bs) - 12) / 12;
            let leaves = if depth == 0 { 0 } else { n.div_ceil(per_leaf) };
            let index = if depth == 2 {
                leaves.div_ceil(per_leaf)
            } else {
                0
            };
            assert_eq!(
                tree_blocks as u64,
                leaves + index,
                "{bs}/{n}: extent-tree blocks"
            );
            assert_eq!(s.blockcount, (n + leaves + index) * u64::from(bs) / 512);
            assert_matches_tree(&img, &t);
        }
    }
}

#[test]
fn directory_with_100000_entries() {
    let n = 100_000;
    let name = |i: usize| format!("entry-{i:06}-{}", "x".repeat(i % 37));
    let mut t = root();
    let d = t
        .add(t.root(), b"huge", Node::dir(Metadata::new(0o755)))
        .unwrap();
    for i in 0..n {
        t.add(
            d,
            name(i).as_bytes(),
            Node::file(FileData::from_bytes(Vec::new()), Metadata::new(0o644)),
        )
        .unwrap();
    }
    for (profile, bs) in [(Profile::Default, 4096), (Profile::PvGrub, 1024)] {
        let start = std::time::Instant::now();
        let (_d, img, r) = format_to_file(
            &t,
            &FormatOptions::new()
                .profile(profile)
                .block_size(bs)
                .assume_zeroed(true),
        );
        println!("{profile:?}/{bs}: formatted in {:?}", start.elapsed());
        e2fsck_clean_report(&img, &r);
        // An htree of two levels (100,000 names of ~25 bytes need more leaf
        // blocks than one index block can point to).
        let dump = htree_dump(&img, "/huge");
        assert!(
            dump.contains("Indirect levels: 1"),
            "{profile:?}/{bs}: not a 2-level htree"
        );
        let inos = check_htree_dump(&dump);
        assert_eq!(inos.len(), n);
        assert_eq!(inos.iter().collect::<BTreeSet<_>>().len(), n);
        // debugfs and ext4-view look names up through the index.
        let sample = [0, 1, 4_242, 50_000, 77_777, n - 1];
        let cmds: Vec<String> = sample
            .iter()
            .map(|&i| format!("stat /huge/{}", name(i)))
            .collect();
        for (raw, i) in debugfs_each(&img, &cmds).iter().zip(sample) {
            let s = parse_stat(raw);
            assert_eq!((s.kind.as_str(), s.size), ("regular", 0), "{}", name(i));
        }
        let fs = load_ext4_view(&img);
        for i in (0..n).step_by(997) {
            assert!(
                fs.metadata(format!("/huge/{}", name(i)).as_str()).is_ok(),
                "ext4-view: {}",
                name(i)
            );
        }
        assert!(!fs.exists("/huge/entry-000000-x").unwrap());
        assert_eq!(fs.read_dir("/huge").unwrap().count(), n + 2);
        if e2e() {
            assert_matches_tree(&img, &t);
        }
    }
}

#[test]
fn many_groups_with_backups() {
    // 300 MiB of 1 KiB blocks: 8192 blocks per group, 38 groups, 3 flex
    // groups, backups in groups 1, 3, 5, 7, 9, 25 and 27.
    let mut t = fixtures::edge_tree(&fixtures::EdgeScale::tiny());
    for p in [fixtures::paths::SYMLINK_4000, fixtures::paths::BIG_XATTR] {
        let (dir, name) = p.split_at(p.iter().rposition(|&b| b == b'/').unwrap());
        let d = t.lookup(dir).unwrap();
        t.remove(d, &name[1..]).unwrap();
    }
    // Data that crosses several groups.
    let big = fixtures::pattern(9, 20 << 20);
    t.add(
        t.root(),
        b"big",
        Node::file(FileData::from_bytes(big), Metadata::new(0o644)),
    )
    .unwrap();
    for profile in [Profile::Default, Profile::PvGrub] {
        let opts = FormatOptions::new()
            .profile(profile)
            .block_size(1024)
            .size(Size::Bytes(300 << 20));
        let (_d, img, r) = format_to_file(&t, &opts);
        assert_eq!(r.blocks_count, 300 << 10);
        e2fsck_clean_report(&img, &r);
        assert_matches_tree(&img, &t);

        let dump = dumpe2fs(&img, false);
        let groups = dump
            .lines()
            .filter(|l| l.starts_with("Group ") && l.contains(": (Blocks "))
            .count();
        assert_eq!(groups, 38);
        assert_eq!(dumpe2fs_field(&dump, "Flex block group size"), Some("16"));
        let supers: Vec<u64> = dump
            .lines()
            .filter_map(|l| l.trim().split_once("superblock at "))
            .map(|(_, r)| r.split(',').next().unwrap().parse().unwrap())
            .collect();
        let want: Vec<u64> = [0u64, 1, 3, 5, 7, 9, 25, 27]
            .iter()
            .map(|g| g * 8192 + 1)
            .collect();
        assert_eq!(supers, want, "superblock copies");
        // A journal of mke2fs's size for 307,200 blocks.
        let sb = dumpe2fs(&img, true);
        assert_eq!(dumpe2fs_field(&sb, "Total journal blocks"), Some("8192"));
        assert_eq!(dumpe2fs_field(&sb, "Journal start"), Some("0"));
        assert!(dumpe2fs_field(&sb, "Reserved GDT blocks").is_some_and(|v| v != "0"));

        // Every backup superblock is a valid way into the filesystem.
        let primary = std::fs::read(&img).unwrap();
        for &b in &want[1..] {
            let (rc, out) = e2fsck(&img, &["-b", &b.to_string(), "-B", "1024"]);
            check_fsck_output(rc, &out).unwrap_or_else(|e| {
                panic!("{profile:?}: e2fsck with the backup at {b}: {e}\n{out}")
            });
            // Same superblock but for the group number and checksum.
            let at = (b * 1024) as usize;
            let (p, c) = (&primary[1024..2048], &primary[at..at + 1024]);
            for (i, (x, y)) in p.iter().zip(c).enumerate() {
                if !(0x5A..0x5C).contains(&i) && !(0x3FC..0x400).contains(&i) {
                    assert_eq!(x, y, "{profile:?}: backup at {b} differs at byte {i:#x}");
                }
            }
            assert_eq!(
                u16::from_le_bytes([c[0x5A], c[0x5B]]) as u64,
                (b - 1) / 8192
            );
        }
    }
}

#[test]
fn fit_sizes_are_tight() {
    let trees = [
        (
            "edge tiny",
            fixtures::edge_tree(&fixtures::EdgeScale::tiny()),
        ),
        ("bulk 20 MB", fixtures::bulk_tree(200, 100_000, 50)),
    ];
    for (what, tree) in &trees {
        for bs in [4096u32, 1024] {
            let mut tree = tree.clone();
            fit_block_size(&mut tree, bs);
            let opts = FormatOptions::new().block_size(bs);
            let bs64 = u64::from(bs);
            let fit = |h| {
                format_to_file(
                    &tree,
                    &opts.clone().size(Size::Fit {
                        headroom_percent: h,
                    }),
                )
            };
            let (_a, img0, r0) = fit(0);
            e2fsck_clean_report(&img0, &r0);
            let min = smallest_working_blocks(&tree, &opts, bs64, r0.blocks_count);
            assert!(
                r0.blocks_count <= min + min / 50 + 32,
                "{what}/{bs}: Fit {{ 0 }} is {} blocks, but {min} blocks work",
                r0.blocks_count
            );
            assert_eq!(
                ami_ext4::required_size(&tree, &opts).unwrap(),
                r0.size_bytes()
            );
            let (_b, img50, r50) = fit(50);
            e2fsck_clean_report(&img50, &r50);
            // 50 % of the minimum size more, i.e. about half the used space
            // free.
            let free = r50.blocks_count - r50.used_blocks;
            assert!(
                free * 100 >= r50.used_blocks * 40 && free * 100 <= r50.used_blocks * 65,
                "{what}/{bs}: Fit {{ 50 }}: {free} free blocks for {} used",
                r50.used_blocks
            );
            assert!(r50.blocks_count >= min * 3 / 2 - 64 && r50.blocks_count <= min * 8 / 5 + 64);
        }
    }
}

#[test]
fn inode_counts() {
    let mut tree = fixtures::random_tree(11, 200);
    fit_block_size(&mut tree, 1024);
    // Reserved inodes 1-11 (root and lost+found among them), then one per
    // other node.
    let used = tree.walk().map(|(_, id)| id).collect::<BTreeSet<_>>().len() as u64 + 10;
    let check = |opts: FormatOptions, lo: u64, hi: u64| {
        let (_d, img, r) = format_to_file(&tree, &opts);
        e2fsck_clean_report(&img, &r);
        assert!(
            (lo..=hi).contains(&r.inodes_count),
            "{:?}: {} inodes, wanted {lo}..={hi}",
            opts,
            r.inodes_count
        );
        assert_eq!(r.used_inodes, used);
        let sb = dumpe2fs(&img, true);
        assert_eq!(
            dumpe2fs_field(&sb, "Inode count"),
            Some(r.inodes_count.to_string().as_str())
        );
        r
    };
    // At least the count, rounded up to whole inode-table blocks per group.
    let r = check(
        FormatOptions::new().inodes(Inodes::Count(5000)),
        5000,
        5000 + 16 * 64,
    );
    assert_eq!(r.inodes_count % 16, 0);
    // One inode per 8 KiB of a 64 MiB filesystem.
    check(
        FormatOptions::new()
            .size(Size::Bytes(64 << 20))
            .inodes(Inodes::Ratio(8192)),
        8192,
        8192 + 16 * 8,
    );
    // One inode per 64 KiB (1 KiB blocks).
    check(
        FormatOptions::new()
            .block_size(1024)
            .size(Size::Bytes(64 << 20))
            .inodes(Inodes::Ratio(65536)),
        1024,
        1024 + 4 * 8 * 8,
    );
    // Fewer than the tree needs: raised to what it needs.
    let r = check(
        FormatOptions::new().inodes(Inodes::Count(10)),
        used,
        used + 16 * 64,
    );
    assert!(r.inodes_count >= used);
    // Default with a fixed size: one per 16 KiB.
    check(
        FormatOptions::new().size(Size::Bytes(128 << 20)),
        8192,
        8192 + 16 * 8,
    );
    // Bigger inodes hold the same tree.
    let (_d, img, r) = format_to_file(&tree, &FormatOptions::new().inode_size(512));
    e2fsck_clean_report(&img, &r);
    assert_eq!(
        dumpe2fs_field(&dumpe2fs(&img, true), "Inode size"),
        Some("512")
    );
    assert_matches_tree(&img, &tree);
}

/// Sizes that are not whole groups, down to a last group smaller than its
/// own backup superblock and descriptor copies.
#[test]
fn odd_sizes_and_tiny_last_groups() {
    let mut tree = fixtures::edge_tree(&fixtures::EdgeScale::tiny());
    fit_block_size(&mut tree, 1024);
    for p in [fixtures::paths::SYMLINK_4000, fixtures::paths::BIG_XATTR] {
        let (dir, name) = p.split_at(p.iter().rposition(|&b| b == b'/').unwrap());
        let d = tree.lookup(dir).unwrap();
        tree.remove(d, &name[1..]).unwrap();
    }
    // (block size, blocks per group, first data block)
    for (bs, bpg, first) in [(1024u64, 8192u64, 1u64), (4096, 32768, 0)] {
        for profile in [Profile::Default, Profile::PvGrub] {
            // Group 3 is a backup group; group 2 is not.
            for (groups, extra) in [
                (3, 1),
                (3, 7),
                (3, 100),
                (3, 300),
                (3, 2000),
                (2, 1),
                (2, 77),
            ] {
                let blocks = groups * bpg + first + extra;
                let bytes = blocks * bs + 123; // not a whole block either
                let opts = FormatOptions::new()
                    .profile(profile)
                    .block_size(bs as u32)
                    .size(Size::Bytes(bytes));
                let (_d, img, r) = format_to_file(&tree, &opts);
                let what = format!("{profile:?}/{bs}: {blocks} blocks");
                assert!(
                    r.blocks_count <= blocks,
                    "{what}: {} blocks",
                    r.blocks_count
                );
                assert!(
                    r.blocks_count >= groups * bpg + first,
                    "{what}: {} blocks",
                    r.blocks_count
                );
                e2fsck_clean_report(&img, &r);
                assert_eq!(std::fs::metadata(&img).unwrap().len(), r.size_bytes());
                let sb = dumpe2fs(&img, true);
                assert_eq!(
                    dumpe2fs_field(&sb, "Block count"),
                    Some(r.blocks_count.to_string().as_str())
                );
            }
        }
    }
    // One image checked completely.
    let opts = FormatOptions::new()
        .block_size(1024)
        .size(Size::Bytes((3 * 8192 + 1 + 300) * 1024));
    let (_d, img, r) = format_to_file(&tree, &opts);
    e2fsck_clean_report(&img, &r);
    assert_matches_tree(&img, &tree);
}

/// Label, UUID, hash seed, reserved blocks and the filesystem's own
/// timestamp end up where dumpe2fs and e2fsck look.
#[test]
fn superblock_fields() {
    let tree = fixtures::edge_tree(&fixtures::EdgeScale::small());
    let t = ami_core::Timestamp::from_secs(1_700_000_000);
    for (profile, pct) in [
        (Profile::Default, 0u8),
        (Profile::PvGrub, 10),
        (Profile::Default, 50),
    ] {
        let opts = FormatOptions::new()
            .profile(profile)
            .label("ami-root")
            .uuid([0xA5; 16])
            .hash_seed([0x3C; 16])
            .reserved_percent(pct)
            .timestamp(t)
            .size(Size::Bytes(64 << 20));
        let (_d, img, r) = format_to_file(&tree, &opts);
        // The htree of the 2,000-entry directory uses that seed: e2fsck
        // recomputes every hash from the superblock's seed.
        e2fsck_clean_report(&img, &r);
        let sb = dumpe2fs(&img, true);
        assert_eq!(
            dumpe2fs_field(&sb, "Filesystem volume name"),
            Some("ami-root")
        );
        assert_eq!(
            dumpe2fs_field(&sb, "Filesystem UUID"),
            Some("a5a5a5a5-a5a5-a5a5-a5a5-a5a5a5a5a5a5")
        );
        assert_eq!(
            dumpe2fs_field(&sb, "Directory Hash Seed"),
            Some("3c3c3c3c-3c3c-3c3c-3c3c-3c3c3c3c3c3c")
        );
        assert_eq!(
            dumpe2fs_field(&sb, "Reserved block count"),
            Some((r.blocks_count * u64::from(pct) / 100).to_string().as_str())
        );
        assert_eq!(
            dumpe2fs_field(&sb, "Filesystem created"),
            Some("Tue Nov 14 22:13:20 2023")
        );
        assert_eq!(
            dumpe2fs_field(&sb, "Last write time"),
            Some("Tue Nov 14 22:13:20 2023")
        );
        assert_eq!(dumpe2fs_field(&sb, "Filesystem state"), Some("clean"));
        assert_eq!(
            dumpe2fs_field(&sb, "Default directory hash"),
            Some("half_md4")
        );
        let lpf = parse_stat(&debugfs_each(&img, &["stat <11>".to_string()])[0]);
        assert_eq!(lpf.mtime, t);
        assert_eq!(lpf.crtime, t);
        let fs = load_ext4_view(&img);
        assert_eq!(fs.label().to_str().unwrap(), "ami-root");
        assert_eq!(fs.uuid().as_bytes(), &[0xA5; 16]);
        drop(fs);
        assert_matches_tree(&img, &tree);
    }
}
