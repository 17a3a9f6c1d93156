//! Quick end-to-end check: a small tree, both profiles, through e2fsck.

use ami_core::progress::NoProgress;
use ami_core::{FileData, Metadata, Node, Tree};
use ami_ext4::{format, FormatOptions, Profile, Size};
use std::process::Command;

fn small_tree() -> Tree {
    let mut t = Tree::new(Metadata::new(0o755));
    let etc = t.create_dir_all(b"/etc", Metadata::new(0o755)).unwrap();
    t.add(
        etc,
        b"hostname",
        Node::file(
            FileData::from_bytes(b"ami\n".to_vec()),
            Metadata::new(0o644),
        ),
    )
    .unwrap();
    let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
    t.add(
        etc,
        b"big",
        Node::file(FileData::from_bytes(big), Metadata::new(0o600)),
    )
    .unwrap();
    t.add(
        etc,
        b"link",
        Node::symlink(b"hostname".to_vec(), Metadata::new(0o777)),
    )
    .unwrap();
    t
}

fn fsck(path: &std::path::Path) {
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(path)
        .output()
        .expect("e2fsck runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "e2fsck failed:\n{text}");
}

#[test]
fn small_tree_passes_e2fsck() {
    for profile in [Profile::Default, Profile::PvGrub] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let mut f = std::fs::File::create(&path).unwrap();
        let opts = FormatOptions::new()
            .profile(profile)
            .size(Size::Bytes(64 << 20));
        let r = format(&mut f, &small_tree(), &opts, &NoProgress).unwrap();
        f.set_len(r.size_bytes()).unwrap();
        drop(f);
        fsck(&path);
        if let Ok(d) = std::env::var("KEEP_IMG") {
            std::fs::copy(&path, format!("{d}-{profile:?}.img")).unwrap();
        }
    }
}
