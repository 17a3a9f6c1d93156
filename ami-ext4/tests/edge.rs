//! The edge tree (one of every awkward thing) through the writer, for both
//! profiles and every block size: `e2fsck -fn` must be silent, and debugfs
//! and ext4-view must read back exactly the tree. Then the specifics:
//! sparse allocation, htree directories, `dir_nlink`, fast and slow
//! symlinks, times outside 1970-2038, 32-bit ids, capabilities, ACLs and
//! device numbers.
//!
//! `EdgeScale::small()` always runs; `EdgeScale::full()` (20,000 entries in
//! one directory, 65,010 subdirectories, a 1 GiB sparse file) only with
//! `AMI_E2E=1`.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use ami_core::{NodeKind, Tree};
use ami_ext4::{FormatOptions, Profile};
use common::*;
use fixtures::{paths, EdgeScale};

const EXTENTS_FL: u32 = 0x8_0000;
const INDEX_FL: u32 = 0x1000;

/// The edge tree for block size `bs`. Below 4 KiB two entries cannot exist
/// in ext4 at all (a symlink target must fit one block, and an xattr value
/// must fit the inode or one block, `ea_inode` being banned), so they are
/// removed; `rejects_what_small_blocks_cannot_hold` checks the errors.
fn edge_for(scale: &EdgeScale, bs: u32) -> Tree {
    let mut t = fixtures::edge_tree(scale);
    if bs < 4096 {
        for p in [paths::SYMLINK_4000, paths::BIG_XATTR] {
            let (dir, name) = p.split_at(p.iter().rposition(|&b| b == b'/').unwrap());
            let d = t.lookup(dir).unwrap();
            t.remove(d, &name[1..]).unwrap();
        }
    }
    t
}

fn opts(profile: Profile, bs: u32) -> FormatOptions {
    FormatOptions::new()
        .profile(profile)
        .block_size(bs)
        .assume_zeroed(true)
}

/// `debugfs stat` of fixed paths (all plain ASCII).
fn stat_paths(img: &Path, list: &[&[u8]]) -> Vec<Stat> {
    let cmds: Vec<String> = list
        .iter()
        .map(|p| format!("stat \"/{}\"", std::str::from_utf8(p).unwrap()))
        .collect();
    debugfs_each(img, &cmds)
        .iter()
        .map(|raw| parse_stat(raw))
        .collect()
}

fn check_edge(scale: &EdgeScale, profile: Profile, bs: u32, rdump: bool) {
    let start = std::time::Instant::now();
    let lap = |what: &str| println!("{profile:?}/{bs}: {what} after {:?}", start.elapsed());
    let tree = edge_for(scale, bs);
    let (_dir, img, report) = format_to_file(&tree, &opts(profile, bs));
    lap("format");
    assert_eq!(report.block_size, bs);
    e2fsck_clean_report(&img, &report);
    lap("e2fsck");
    let stats = assert_matches_tree(&img, &tree);
    lap("comparison");
    if rdump {
        assert_rdump_matches(&img, &tree);
        lap("rdump");
    }
    let bs64 = u64::from(bs);
    let sectors = bs64 / 512;

    // Features: exactly the profile's set.
    let sb = dumpe2fs(&img, true);
    let mut features: Vec<&str> = dumpe2fs_field(&sb, "Filesystem features")
        .expect("features")
        .split_whitespace()
        .collect();
    features.sort_unstable();
    let mut want = vec![
        "ext_attr",
        "dir_index",
        "filetype",
        "extent",
        "flex_bg",
        "sparse_super",
        "large_file",
        "huge_file",
        "dir_nlink",
        "extra_isize",
    ];
    // Like mke2fs: no journal below 2048 blocks, no resize inode when
    // 1024-fold growth needs no extra descriptor blocks.
    if report.blocks_count >= 2048 {
        want.push("has_journal");
    }
    let rsv: u64 = dumpe2fs_field(&sb, "Reserved GDT blocks").map_or(0, |v| v.parse().unwrap());
    if rsv > 0 {
        want.push("resize_inode");
    }
    match profile {
        Profile::Default => want.extend(["64bit", "metadata_csum"]),
        Profile::PvGrub => want.push("uninit_bg"),
    }
    want.sort_unstable();
    assert_eq!(features, want, "feature set of {profile:?}");
    assert_eq!(
        dumpe2fs_field(&sb, "Block size"),
        Some(bs.to_string().as_str())
    );

    let s = stat_paths(
        &img,
        &[
            paths::SPARSE,
            paths::SYMLINK_59,
            paths::SYMLINK_60,
            paths::SYMLINK_100,
            paths::TIME_1960,
            paths::TIME_2100,
            paths::BIG_IDS,
            paths::CAPABILITY,
            paths::ACL_DIR,
            paths::BLOCK_BIG,
            paths::CHAR_MAX,
            paths::CHAR_BIG_MAJOR,
            paths::CHAR_NULL,
            paths::BLOCK_SMALL,
            paths::HARDLINK_1,
            paths::HARDLINK_2,
            paths::HARDLINK_3,
            paths::BIG_DIR,
            paths::MANY_SUBDIRS,
            b"lost+found",
            paths::SETUID,
            paths::SETGID,
            paths::STICKY_DIR,
            paths::MANY_XATTRS,
        ],
    );
    let [sparse, s59, s60, s100, t1960, t2100, ids, cap, acl, blk_big, chr_max, chr_big_major, chr_null, blk_small, h1, h2, h3, big_dir, many, lpf, suid, sgid, sticky, many_x] =
        &s[..]
    else {
        unreachable!()
    };

    // The sparse file maps only its data blocks (and block 0).
    let ranges = fixtures::sparse_ranges(scale.sparse_len);
    let want_blocks = expected_file_blocks(&ranges, scale.sparse_len, bs64);
    let (extents, tree_blocks) = parse_extents(sparse.extents.as_deref().expect("extents"));
    let mapped: BTreeSet<u64> = extents
        .iter()
        .flat_map(|e| e.logical..e.logical + e.len)
        .collect();
    assert_eq!(mapped, want_blocks, "sparse file: mapped logical blocks");
    assert!(extents.iter().all(|e| !e.uninit), "uninitialized extents");
    assert_eq!(
        sparse.blockcount,
        (want_blocks.len() as u64 + tree_blocks as u64) * sectors,
        "sparse file: i_blocks"
    );
    assert_eq!(sparse.size, scale.sparse_len);
    // ... and the image file stays small: only what was written is
    // allocated on the host.
    let written: u64 = report
        .written
        .runs
        .iter()
        .map(|r| (r.end - r.start) * bs64)
        .sum();
    let on_disk = allocated_bytes(&img);
    assert!(
        on_disk <= written + report.written.runs.len() as u64 * 8192 + (1 << 20),
        "image occupies {on_disk} bytes on disk, but only {written} were written"
    );
    assert!(
        written <= report.used_blocks * bs64,
        "{written} bytes written, more than the {} blocks in use",
        report.used_blocks
    );

    // Symlinks: up to 59 bytes in the inode, from 60 in a block.
    assert_eq!(
        s59.flags & EXTENTS_FL,
        0,
        "59-byte symlink has the extents flag"
    );
    assert_eq!(s59.blockcount, 0);
    assert_eq!(
        s59.fast_link.as_deref(),
        Some(&fixtures::symlink_target(59)[..])
    );
    for (s, len) in [(s60, 60), (s100, 100)] {
        assert_ne!(
            s.flags & EXTENTS_FL,
            0,
            "{len}-byte symlink without extents"
        );
        assert_eq!(s.fast_link, None, "{len}-byte symlink stored in the inode");
        assert_eq!(s.blockcount, sectors, "{len}-byte symlink: one block");
        assert_eq!(s.size, len);
    }

    // Times outside 32-bit seconds, with nanoseconds, in all four fields:
    // the raw words, computed by hand from the kernel's encoding
    // (low 32 bits of the seconds; extra = nanoseconds << 2 | epoch).
    let stat_text = |p: &[u8]| {
        debugfs(
            &img,
            &[format!("stat /{}", std::str::from_utf8(p).unwrap())],
        )
    };
    let text_1960 = stat_text(paths::TIME_1960);
    let text_2100 = stat_text(paths::TIME_2100);
    for field in ["ctime", "atime", "mtime", "crtime"] {
        assert!(
            text_1960.contains(&format!("{field}: 0xed300880:1d6f3454")),
            "1960 {field}:\n{text_1960}"
        );
        assert!(
            text_2100.contains(&format!("{field}: 0xf4865700:ee6b27fd")),
            "2100 {field}:\n{text_2100}"
        );
    }
    for t in [t1960.atime, t1960.mtime, t1960.ctime, t1960.crtime] {
        assert_eq!(t, fixtures::times::Y1960);
    }
    for t in [t2100.atime, t2100.mtime, t2100.ctime, t2100.crtime] {
        assert_eq!(t, fixtures::times::Y2100);
    }

    // 32-bit ids.
    assert_eq!((ids.uid, ids.gid), (100_000, 200_000));

    // Capability bytes verbatim, kept in the inode.
    assert_eq!(cap.xattrs, vec![("security.capability".to_string(), 20)]);
    assert_eq!(
        cap.file_acl, 0,
        "a 20-byte capability must fit in the inode"
    );
    let dir = tempfile::tempdir().unwrap();
    let capf = dir.path().join("cap");
    debugfs(
        &img,
        &[format!(
            "ea_get -f {} /{} security.capability",
            capf.display(),
            std::str::from_utf8(paths::CAPABILITY).unwrap()
        )],
    );
    assert_eq!(std::fs::read(&capf).unwrap(), fixtures::CAPABILITY_V2);

    // ACLs: stored in ext4's own format (what `ea_get -r` returns), and
    // read back by libext2fs as the same ACL.
    let mut acl_names: Vec<&str> = acl.xattrs.iter().map(|(n, _)| n.as_str()).collect();
    acl_names.sort_unstable();
    assert_eq!(
        acl_names,
        ["system.posix_acl_access", "system.posix_acl_default"]
    );
    for (name, vfs) in [
        ("system.posix_acl_access", fixtures::acl_access()),
        ("system.posix_acl_default", fixtures::acl_default()),
    ] {
        let raw = dir.path().join("raw");
        let conv = dir.path().join("conv");
        let p = std::str::from_utf8(paths::ACL_DIR).unwrap();
        debugfs(
            &img,
            &[
                format!("ea_get -r -f {} /{p} {name}", raw.display()),
                format!("ea_get -f {} /{p} {name}", conv.display()),
            ],
        );
        let entries = decode_vfs_acl(&vfs);
        assert_eq!(
            std::fs::read(&raw).unwrap(),
            ext4_disk_acl(&entries),
            "{name} on disk"
        );
        assert_eq!(
            decode_vfs_acl(&std::fs::read(&conv).unwrap()),
            entries,
            "{name}"
        );
    }
    assert_eq!(acl.mode, 0o775);

    // Device numbers, old and new encodings.
    assert_eq!(blk_big.device, Some((259, 70_000, true)));
    assert_eq!(chr_max.device, Some((4095, 1_048_575, true)));
    assert_eq!(chr_big_major.device, Some((300, 5, true)));
    assert_eq!(chr_null.device, Some((1, 3, false)));
    assert_eq!(blk_small.device, Some((8, 0, false)));
    assert_eq!(blk_big.kind, "block special");
    assert_eq!(chr_max.kind, "character special");

    // Three names, one inode.
    assert_eq!((h1.ino, h1.links), (h2.ino, 3));
    assert_eq!((h1.ino, h1.links), (h3.ino, 3));

    // Permission bits.
    assert_eq!(suid.mode, 0o4755);
    assert_eq!(sgid.mode, 0o2755);
    assert_eq!(sticky.mode, 0o1777);
    assert_eq!(many_x.xattrs.len(), 8);

    // The big directory is an htree that debugfs can walk, with every entry
    // in the leaf its hash belongs to.
    assert_ne!(big_dir.flags & INDEX_FL, 0, "big directory not indexed");
    assert!(big_dir.size > bs64, "big directory in one block");
    let dump = htree_dump(
        &img,
        &format!("/{}", std::str::from_utf8(paths::BIG_DIR).unwrap()),
    );
    let inos = check_htree_dump(&dump);
    assert_eq!(inos.len(), scale.dir_entries, "entries in the htree leaves");
    assert_eq!(
        inos.iter().collect::<BTreeSet<_>>().len(),
        scale.dir_entries,
        "distinct inodes in the htree leaves"
    );
    // Single-block directories stay linear.
    for (ino, st) in &stats {
        if st.kind == "directory" && st.size == bs64 {
            assert_eq!(st.flags & INDEX_FL, 0, "one-block directory {ino} indexed");
        }
    }

    // dir_nlink: past 65,000 links the count is 1.
    let want_links = if scale.subdirs + 2 > 65_000 {
        1
    } else {
        scale.subdirs as u32 + 2
    };
    assert_eq!(
        many.links, want_links,
        "links of the directory with {} subdirs",
        scale.subdirs
    );
    if scale.subdirs + 2 > 65_000 {
        assert_ne!(many.flags & INDEX_FL, 0, "huge directory not indexed");
        let dump = htree_dump(
            &img,
            &format!("/{}", std::str::from_utf8(paths::MANY_SUBDIRS).unwrap()),
        );
        assert_eq!(check_htree_dump(&dump).len(), scale.subdirs);
    }

    // lost+found like mke2fs: 16 KiB (at least 2 blocks), 0700, empty.
    assert_eq!(lpf.ino, 11);
    assert_eq!(lpf.kind, "directory");
    assert_eq!(lpf.mode, 0o700);
    assert_eq!(lpf.links, 2);
    assert_eq!(lpf.size, (16384 / bs64).max(2) * bs64);
    let ls = parse_ls_p(&debugfs_each(&img, &["ls -p <11>".to_string()])[0]);
    let names: Vec<&[u8]> = ls
        .iter()
        .filter(|e| e.ino != 0)
        .map(|e| &e.name[..])
        .collect();
    assert_eq!(names, [&b"."[..], b".."]);

    // The 3000-byte xattr lives in an xattr block counted in i_blocks.
    if bs == 4096 {
        let big = &stat_paths(&img, &[paths::BIG_XATTR])[0];
        assert_ne!(big.file_acl, 0, "3000-byte xattr not in a block");
        let data = match &tree.node(tree.lookup(paths::BIG_XATTR).unwrap()).kind {
            NodeKind::File(d) => d.len().div_ceil(bs64),
            _ => unreachable!(),
        };
        assert_eq!(big.blockcount, (data + 1) * sectors);
    }
}

#[test]
fn edge_small_default_4k() {
    check_edge(&EdgeScale::small(), Profile::Default, 4096, true);
}

#[test]
fn edge_small_default_2k() {
    check_edge(&EdgeScale::small(), Profile::Default, 2048, false);
}

#[test]
fn edge_small_default_1k() {
    check_edge(&EdgeScale::small(), Profile::Default, 1024, false);
}

#[test]
fn edge_small_pvgrub_4k() {
    check_edge(&EdgeScale::small(), Profile::PvGrub, 4096, true);
}

#[test]
fn edge_small_pvgrub_2k() {
    check_edge(&EdgeScale::small(), Profile::PvGrub, 2048, false);
}

#[test]
fn edge_small_pvgrub_1k() {
    check_edge(&EdgeScale::small(), Profile::PvGrub, 1024, false);
}

#[test]
fn edge_full() {
    if !e2e() {
        println!("skipped: set AMI_E2E=1");
        return;
    }
    for profile in [Profile::Default, Profile::PvGrub] {
        for bs in [4096, 2048, 1024] {
            check_edge(
                &EdgeScale::full(),
                profile,
                bs,
                bs == 4096 && profile == Profile::Default,
            );
        }
    }
}

/// What cannot exist below 4 KiB blocks is refused with an error naming
/// the entry, not written broken.
#[test]
fn rejects_what_small_blocks_cannot_hold() {
    let full = fixtures::edge_tree(&EdgeScale::tiny());
    for bs in [1024, 2048] {
        // Only the 4000-byte symlink.
        let mut t = full.clone();
        let d = t.lookup(b"xattrs").unwrap();
        t.remove(d, b"big").unwrap();
        let e = try_format_to_file(&t, &opts(Profile::Default, bs))
            .map(|_| ())
            .expect_err("a 4000-byte symlink in a 1-block symlink");
        assert!(
            matches!(&e, ami_ext4::Error::TooLarge { what } if what.contains("symlinks/len4000")),
            "bs {bs}: {e:?}"
        );
        // Only the 3000-byte xattr.
        let mut t = full.clone();
        let d = t.lookup(b"symlinks").unwrap();
        t.remove(d, b"len4000").unwrap();
        let e = try_format_to_file(&t, &opts(Profile::PvGrub, bs))
            .map(|_| ())
            .expect_err("a 3000-byte xattr in a smaller block");
        assert!(
            matches!(&e, ami_ext4::Error::Xattr { path, .. } if path.contains("xattrs/big")),
            "bs {bs}: {e:?}"
        );
    }
}

/// `lost+found` given by the tree, a non-directory named `lost+found`, and
/// nodes that are no longer reachable (a removed subtree holding one name
/// of a hard-linked file).
#[test]
fn lost_found_and_unreachable_nodes() {
    use ami_core::{FileData, Metadata, Node};
    let file = |b: &[u8]| Node::file(FileData::from_bytes(b.to_vec()), Metadata::new(0o644));

    // The tree's own lost+found (with its mode, owner and contents).
    let mut t = Tree::new(Metadata::new(0o755));
    let lpf = t
        .add(
            t.root(),
            b"lost+found",
            Node::dir(Metadata::new(0o750).owner(5, 6)),
        )
        .unwrap();
    t.add(lpf, b"#1234", file(b"orphan")).unwrap();
    for profile in [Profile::Default, Profile::PvGrub] {
        let (_d, img, r) = format_to_file(&t, &opts(profile, 4096));
        e2fsck_clean_report(&img, &r);
        assert_matches_tree(&img, &t);
        let s = parse_stat(&debugfs_each(&img, &["stat /lost+found".to_string()])[0]);
        assert_eq!((s.ino, s.mode, s.uid), (11, 0o750, 5));
    }

    // A regular file or a symlink named lost+found: never two entries of
    // one name; either refused or a clean image holding exactly the tree.
    for node in [
        file(b"not a dir"),
        Node::symlink(b"elsewhere".to_vec(), Metadata::new(0o777)),
    ] {
        let mut t = Tree::new(Metadata::new(0o755));
        t.add(t.root(), b"lost+found", node).unwrap();
        t.add(t.root(), b"other", file(b"x")).unwrap();
        match try_format_to_file(&t, &opts(Profile::Default, 4096)) {
            Err(e) => assert!(e.to_string().contains("lost+found"), "{e}"),
            Ok((_d, img, r)) => {
                let ls = parse_ls_p(&debugfs_each(&img, &["ls -p <2>".to_string()])[0]);
                let names: Vec<&[u8]> = ls
                    .iter()
                    .filter(|e| e.ino != 0)
                    .map(|e| &e.name[..])
                    .collect();
                let unique: BTreeSet<&[u8]> = names.iter().copied().collect();
                assert_eq!(
                    names.len(),
                    unique.len(),
                    "duplicate names in the root: {:?}",
                    ls
                );
                e2fsck_clean_report(&img, &r);
                assert_matches_tree(&img, &t);
            }
        }
    }

    // Unreachable nodes are not written, and do not count as names.
    let mut t = Tree::new(Metadata::new(0o755));
    let a = t.create_dir_all(b"/a", Metadata::new(0o755)).unwrap();
    let gone = t
        .create_dir_all(b"/gone/deeper", Metadata::new(0o755))
        .unwrap();
    let f = t.add(a, b"f", file(b"kept")).unwrap();
    t.link(gone, b"f2", f).unwrap();
    t.add(gone, b"lost", file(b"unreachable")).unwrap();
    t.remove(t.root(), b"gone").unwrap();
    assert_eq!(t.link_count(f), 2);
    let (_d, img, r) = format_to_file(&t, &opts(Profile::Default, 4096));
    e2fsck_clean_report(&img, &r);
    assert_matches_tree(&img, &t);
    // root, lost+found, a, f: 11 reserved inodes + a + f.
    assert_eq!(r.used_inodes, 13);
    let s = parse_stat(&debugfs_each(&img, &["stat /a/f".to_string()])[0]);
    assert_eq!(s.links, 1);
}

/// The edge tree written over storage full of garbage (0xD1) with
/// `assume_zeroed(false)`: nothing may depend on zeros the writer did not
/// write.
#[test]
fn edge_small_over_garbage() {
    for (profile, bs) in [(Profile::Default, 1024), (Profile::PvGrub, 4096)] {
        let tree = edge_for(&EdgeScale::small(), bs);
        let (_d, _img, clean) = format_to_file(&tree, &opts(profile, bs));
        let (bytes, report) = format_to_prefilled(&tree, &opts(profile, bs), clean.size_bytes());
        assert_eq!(report.blocks_count, clean.blocks_count);
        let (_d2, img) = bytes_to_file(&bytes);
        e2fsck_clean_report(&img, &report);
        assert_matches_tree(&img, &tree);
    }
}
