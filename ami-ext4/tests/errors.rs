//! What the writer refuses, and how: every error names the option or the
//! tree path at fault. Also the boundaries just inside the limits, which
//! must work.

mod common;

use std::io::{self, Seek, SeekFrom, Write};

use ami_core::progress::NoProgress;
use ami_core::{DeviceNumber, FileData, Metadata, Node, NodeKind, Timestamp, Tree};
use ami_ext4::{format, required_size, Error, FormatOptions, Inodes, Profile, Size};
use common::*;

fn root() -> Tree {
    Tree::new(Metadata::new(0o755))
}

fn file(bytes: &[u8]) -> Node {
    Node::file(FileData::from_bytes(bytes.to_vec()), Metadata::new(0o644))
}

fn fails(tree: &Tree, opts: &FormatOptions) -> Error {
    let mut cur = io::Cursor::new(Vec::new());
    format(&mut cur, tree, opts, &NoProgress).expect_err("format should fail")
}

#[test]
fn name_longer_than_255_bytes() {
    let mut t = root();
    let d = t.create_dir_all(b"/a/b", Metadata::new(0o755)).unwrap();
    let long = vec![b'n'; 256];
    t.add(d, &long, file(b"x")).unwrap();
    match fails(&t, &FormatOptions::new()) {
        Error::NameTooLong { path, len } => {
            assert_eq!(len, 256);
            assert!(path.contains("a/b/nnnn"), "path {path:?}");
        }
        e => panic!("wrong error {e:?}"),
    }
    // 255 bytes (also of arbitrary bytes) is fine.
    let mut t = root();
    let name: Vec<u8> = (0..255u32)
        .map(|i| (i % 254 + 1) as u8)
        .map(|b| if b == b'/' { b'_' } else { b })
        .collect();
    t.add(t.root(), &name, file(b"x")).unwrap();
    let (_d, img, r) = format_to_file(&t, &FormatOptions::new());
    e2fsck_clean_report(&img, &r);
    assert_matches_tree(&img, &t);
}

/// A file with `n` names: the first in the root, the others spread over
/// directories of 20,000 names.
fn many_names(n: u32) -> Tree {
    let mut t = root();
    let f = t.add(t.root(), b"f", file(b"linked\n")).unwrap();
    let mut dir = t.root();
    for i in 1..n {
        if i % 20_000 == 1 {
            dir = t
                .add(
                    t.root(),
                    format!("d{}", i / 20_000).as_bytes(),
                    Node::dir(Metadata::new(0o755)),
                )
                .unwrap();
        }
        t.link(dir, format!("l{i}").as_bytes(), f).unwrap();
    }
    t
}

#[test]
fn more_than_65000_names() {
    let t = many_names(65_001);
    match fails(&t, &FormatOptions::new()) {
        Error::TooManyLinks { path, links } => {
            assert_eq!(links, 65_001);
            assert!(
                path.starts_with("/d") || path.starts_with("d") || path.contains("/l"),
                "path {path:?}"
            );
        }
        e => panic!("wrong error {e:?}"),
    }
}

#[test]
fn exactly_65000_names() {
    let t = many_names(65_000);
    let (_d, img, r) = format_to_file(&t, &FormatOptions::new());
    e2fsck_clean_report(&img, &r);
    let s = parse_stat(&debugfs_each(&img, &["stat /f".to_string()])[0]);
    assert_eq!(s.links, 65_000);
    let s2 = parse_stat(&debugfs_each(&img, &["stat /d3/l64999".to_string()])[0]);
    assert_eq!(s2.ino, s.ino);
}

#[test]
fn too_small_reports_a_size_that_fits() {
    let t = fixtures::random_tree(7, 150);
    for (profile, bs) in [(Profile::Default, 4096), (Profile::PvGrub, 1024)] {
        let mut t = t.clone();
        fit_block_size(&mut t, bs);
        let opts = FormatOptions::new().profile(profile).block_size(bs);
        let requested = 64 * 1024;
        let needed = match fails(&t, &opts.clone().size(Size::Bytes(requested))) {
            Error::TooSmall {
                requested: r,
                needed,
            } => {
                assert_eq!(r, requested);
                needed
            }
            e => panic!("wrong error {e:?}"),
        };
        assert!(needed > requested);
        assert_eq!(needed % u64::from(bs), 0, "needed is whole blocks");
        // `needed` is enough...
        let (_d, img, r) = format_to_file(&t, &opts.clone().size(Size::Bytes(needed)));
        assert_eq!(r.size_bytes(), needed);
        e2fsck_clean_report(&img, &r);
        assert_matches_tree(&img, &t);
        // ... and agrees with required_size.
        assert_eq!(required_size(&t, &opts).unwrap(), needed);
        // It should be the smallest size that works (a little slack for
        // group boundaries).
        let bs64 = u64::from(bs);
        let min = smallest_working_blocks(&t, &opts, bs64, needed / bs64) * bs64;
        assert!(
            needed <= min + min / 50 + 32 * bs64,
            "{profile:?}/{bs}: needed {needed} bytes, but {min} bytes work"
        );
        // Smaller sizes are errors, naming the same `needed`.
        for small in [min - bs64, min / 2] {
            match fails(&t, &opts.clone().size(Size::Bytes(small))) {
                Error::TooSmall {
                    needed: n2,
                    requested,
                } => {
                    assert_eq!((n2, requested), (needed, small));
                }
                e => panic!("wrong error {e:?}"),
            }
        }
    }
}

#[test]
fn invalid_options() {
    let t = root();
    let cases: Vec<(FormatOptions, &str)> = vec![
        (FormatOptions::new().block_size(3000), "block_size"),
        (FormatOptions::new().block_size(8192), "block_size"),
        (FormatOptions::new().block_size(512), "block_size"),
        (FormatOptions::new().label([b'L'; 17]), "label"),
        (FormatOptions::new().inode_size(128), "inode_size"),
        (FormatOptions::new().inode_size(384), "inode_size"),
        (
            FormatOptions::new().block_size(1024).inode_size(2048),
            "inode_size",
        ),
        (
            FormatOptions::new().reserved_percent(51),
            "reserved_percent",
        ),
        (FormatOptions::new().inodes(Inodes::Count(0)), "inodes"),
        (FormatOptions::new().inodes(Inodes::Ratio(100)), "inodes"),
    ];
    for (opts, field) in cases {
        match fails(&t, &opts) {
            Error::InvalidOptions { field: f, reason } => {
                assert_eq!(f, field, "{opts:?}");
                assert!(!reason.is_empty());
            }
            e => panic!("{opts:?}: wrong error {e:?}"),
        }
    }
    // The limits themselves are fine: a 16-byte label, 1 KiB inodes.
    let opts = FormatOptions::new().label([b'L'; 16]).inode_size(1024);
    let (_d, img, r) = format_to_file(&t, &opts);
    e2fsck_clean_report(&img, &r);
    let sb = dumpe2fs(&img, true);
    assert_eq!(
        dumpe2fs_field(&sb, "Filesystem volume name"),
        Some("LLLLLLLLLLLLLLLL")
    );
    assert_eq!(dumpe2fs_field(&sb, "Inode size"), Some("1024"));
}

#[test]
fn missing_host_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = root();
    let d = t
        .create_dir_all(b"/usr/share", Metadata::new(0o755))
        .unwrap();
    let gone = dir.path().join("gone");
    t.add(
        d,
        b"data",
        Node::file(
            FileData::from_host(gone.as_path(), 0, 10),
            Metadata::new(0o644),
        ),
    )
    .unwrap();
    match fails(&t, &FormatOptions::new()) {
        Error::Source { path, source } => {
            assert!(path.contains("usr/share/data"), "path {path:?}");
            assert_eq!(source.kind(), io::ErrorKind::NotFound);
        }
        e => panic!("wrong error {e:?}"),
    }
    // A host file shorter than recorded is an error too, not zeros.
    let short = dir.path().join("short");
    std::fs::write(&short, b"12345").unwrap();
    let mut t = root();
    t.add(
        t.root(),
        b"s",
        Node::file(
            FileData::from_host(short.as_path(), 0, 10),
            Metadata::new(0o644),
        ),
    )
    .unwrap();
    match fails(&t, &FormatOptions::new()) {
        Error::Source { path, source } => {
            assert!(path.ends_with('s'), "path {path:?}");
            assert_eq!(source.kind(), io::ErrorKind::UnexpectedEof);
        }
        e => panic!("wrong error {e:?}"),
    }
    // A host file read from an offset works.
    let mut t = root();
    t.add(
        t.root(),
        b"s",
        Node::file(
            FileData::from_host(short.as_path(), 2, 3),
            Metadata::new(0o644),
        ),
    )
    .unwrap();
    let (_d, img, _) = format_to_file(&t, &FormatOptions::new());
    assert_eq!(load_ext4_view(&img).read("/s").unwrap(), b"345");
}

fn timed(secs: i64, nanos: u32) -> Tree {
    let mut t = root();
    let mut m = Metadata::new(0o644).times(Timestamp { secs, nanos });
    m.crtime = Some(Timestamp { secs, nanos });
    let d = t.create_dir_all(b"/x/y", Metadata::new(0o755)).unwrap();
    t.add(d, b"t", Node::file(FileData::from_bytes(vec![1]), m))
        .unwrap();
    t
}

/// Last second the writer accepts: 2^33 + 2^31 - 1 (2310-04-04T16:10:39Z).
/// ext4's encoding reaches 2446, but e2fsck 1.47 takes times with epoch
/// bits 3 and the top bit of the low word set (2310-04-04T16:10:40Z to
/// 2378-04-22) for pre-1970 dates an old kernel mis-encoded, and rewrites
/// them (also when preening at boot); so nothing past 2310 is written.
const LAST: i64 = (1 << 33) + (1 << 31) - 1;

#[test]
fn times_outside_ext4() {
    for secs in [
        -(1i64 << 31) - 1,
        LAST + 1,
        11_000_000_000,
        12_884_901_887,
        (1i64 << 34) - (1 << 31),
        i64::MIN,
        i64::MAX,
    ] {
        match fails(&timed(secs, 0), &FormatOptions::new()) {
            Error::TimeOutOfRange { path, secs: s } => {
                assert_eq!(s, secs);
                assert!(path.contains("x/y/t"), "path {path:?}");
            }
            e => panic!("{secs}: wrong error {e:?}"),
        }
    }
    // Only one of the four times out of range is enough.
    let mut t = timed(0, 0);
    let id = t.lookup(b"x/y/t").unwrap();
    t.node_mut(id).meta.crtime = Some(Timestamp::from_secs(1 << 40));
    assert!(matches!(
        fails(&t, &FormatOptions::new()),
        Error::TimeOutOfRange { .. }
    ));
    // The first and last second work, with nanoseconds, and so do the
    // epoch boundaries; e2fsck has nothing to say about any of them.
    for secs in [
        -(1i64 << 31),
        LAST,
        -1,
        0,
        (1 << 31) - 1,
        1 << 31,
        (1 << 32) - 1,
        1 << 32,
        (1 << 33) - 1,
        1 << 33,
    ] {
        let t = timed(secs, 999_999_999);
        let (_d, img, r) = format_to_file(&t, &FormatOptions::new());
        e2fsck_clean_report(&img, &r);
        let s = parse_stat(&debugfs_each(&img, &["stat /x/y/t".to_string()])[0]);
        let want = Timestamp {
            secs,
            nanos: 999_999_999,
        };
        assert_eq!(
            (s.atime, s.mtime, s.ctime, s.crtime),
            (want, want, want, want),
            "{secs}"
        );
    }
}

#[test]
fn bad_xattrs() {
    let cases: Vec<(&[u8], Vec<u8>)> = vec![
        (b"foo.bar", b"v".to_vec()),
        (b"bar", b"v".to_vec()),
        (b"user.", b"v".to_vec()),
        // A POSIX ACL that is not in the VFS format cannot be converted.
        (b"system.posix_acl_access", vec![1, 2, 3, 4, 5]),
        (b"system.posix_acl_access", {
            let mut v = 2u32.to_le_bytes().to_vec();
            v.extend_from_slice(&[1, 0, 7, 0, 0xff, 0xff, 0xff]); // 7-byte entry
            v
        }),
        // Larger than a block.
        (b"user.huge", vec![7; 5000]),
    ];
    for (name, value) in cases {
        let mut t = root();
        let d = t.create_dir_all(b"/etc", Metadata::new(0o755)).unwrap();
        t.add(
            d,
            b"f",
            Node::file(
                FileData::from_bytes(b"x".to_vec()),
                Metadata::new(0o644).xattr(name, &value),
            ),
        )
        .unwrap();
        let what = String::from_utf8_lossy(name).into_owned();
        match fails(&t, &FormatOptions::new()) {
            Error::Xattr {
                path,
                name: n,
                reason,
            } => {
                assert!(path.contains("etc/f"), "{what}: path {path:?}");
                assert!(!reason.is_empty());
                if value.len() < 5000 {
                    assert_eq!(n, what);
                }
            }
            e => panic!("{what}: wrong error {e:?}"),
        }
    }
    // Every namespace ext4 knows is fine.
    let mut m = Metadata::new(0o644);
    for name in [
        &b"user.a"[..],
        b"trusted.b",
        b"security.selinux",
        b"system.data2",
    ] {
        m = m.xattr(name, b"value");
    }
    let mut t = root();
    t.add(
        t.root(),
        b"f",
        Node::file(FileData::from_bytes(b"x".to_vec()), m),
    )
    .unwrap();
    let (_d, img, r) = format_to_file(&t, &FormatOptions::new());
    e2fsck_clean_report(&img, &r);
    assert_matches_tree(&img, &t);
}

#[test]
fn device_numbers_ext4_cannot_hold() {
    for (major, minor) in [(4096, 0), (0, 1 << 20)] {
        let mut t = root();
        t.add(
            t.root(),
            b"dev",
            Node {
                kind: NodeKind::CharDevice(DeviceNumber { major, minor }),
                meta: Metadata::new(0o600),
            },
        )
        .unwrap();
        match fails(&t, &FormatOptions::new()) {
            Error::TooLarge { what } => assert!(what.contains("dev"), "{what}"),
            e => panic!("{major}:{minor}: wrong error {e:?}"),
        }
    }
}

/// Storage that fails after `limit` bytes.
struct Failing {
    inner: io::Cursor<Vec<u8>>,
    limit: u64,
}

impl Write for Failing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.inner.position() + buf.len() as u64 > self.limit {
            return Err(io::Error::other("disk full"));
        }
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Failing {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

#[test]
fn storage_errors_are_reported() {
    let t = fixtures::edge_tree(&fixtures::EdgeScale::tiny());
    for limit in [0, 4096, 100_000] {
        let mut s = Failing {
            inner: io::Cursor::new(Vec::new()),
            limit,
        };
        match format(&mut s, &t, &FormatOptions::new(), &NoProgress) {
            Err(Error::Io(e)) => assert_eq!(e.to_string(), "disk full"),
            r => panic!("limit {limit}: {r:?}"),
        }
    }
}
