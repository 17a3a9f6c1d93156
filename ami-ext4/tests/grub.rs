//! GRUB 2's own ext2/3/4 driver (`grub-fstest`, package grub-common) must
//! read every file under /boot, in both profiles: that is what boots the
//! image. Skipped, with a message, where grub-fstest is not installed.

use std::path::Path;
use std::process::Command;

use ami_core::progress::NoProgress;
use ami_core::{FileData, Metadata, Node, Tree};
use ami_ext4::{format, FormatOptions, Profile, Size};

fn have_grub_fstest() -> bool {
    Command::new("grub-fstest").arg("--help").output().is_ok()
}

/// Contents that exercise GRUB's extent reader: empty, tiny, leading zeros
/// (GRUB 2.06 fails on a leading hole), several extents, a large file.
fn boot_files() -> Vec<(&'static str, Vec<u8>)> {
    let pattern = |n: usize, seed: u8| -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    };
    let mut zeros_then_data = vec![0u8; 70_000];
    zeros_then_data.extend(pattern(5000, 3));
    vec![
        ("boot/empty", Vec::new()),
        ("boot/grub/grub.cfg", b"set default=0\nmenuentry ami { linux /boot/vmlinuz root=LABEL=rootfs }\n".to_vec()),
        ("boot/grub/menu.lst", b"default 0\ntimeout 1\ntitle ami\nroot (hd0)\nkernel /boot/vmlinuz root=LABEL=rootfs ro\n".to_vec()),
        ("boot/zeros-then-data", zeros_then_data),
        ("boot/all-zeros", vec![0u8; 65536]),
        ("boot/vmlinuz", pattern(9 << 20, 7)),
        ("boot/initrd.img", pattern(3 << 20, 11)),
    ]
}

fn check(profile: Profile, block_size: u32) {
    let files = boot_files();
    let mut tree = Tree::new(Metadata::new(0o755));
    for (path, data) in &files {
        let (dir, name) = path.rsplit_once('/').unwrap();
        let d = tree
            .create_dir_all(dir.as_bytes(), Metadata::new(0o755))
            .unwrap();
        tree.add(
            d,
            name.as_bytes(),
            Node::file(FileData::from_bytes(data.clone()), Metadata::new(0o644)),
        )
        .unwrap();
    }
    // A sparse file whose data starts late: block 0 must still be allocated.
    let boot = tree.lookup(b"boot").unwrap();
    let sparse = FileData::zeros(1 << 20).with_data_ranges([(512 << 10)..(516 << 10)]);
    tree.add(boot, b"sparse", Node::file(sparse, Metadata::new(0o644)))
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    let mut f = std::fs::File::create(&img).unwrap();
    let opts = FormatOptions::new()
        .profile(profile)
        .block_size(block_size)
        .size(Size::Bytes(64 << 20))
        .assume_zeroed(true);
    let report = format(&mut f, &tree, &opts, &NoProgress).unwrap();
    f.set_len(report.size_bytes()).unwrap();
    drop(f);

    let mut all = files.clone();
    all.push(("boot/sparse", vec![0u8; 1 << 20]));
    for (path, data) in &all {
        let local = dir.path().join(path.replace('/', "_"));
        std::fs::write(&local, data).unwrap();
        let out = Command::new("grub-fstest")
            .arg(&img)
            .arg("cmp")
            .arg(format!("/{path}"))
            .arg(&local)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{profile:?}/{block_size}: grub-fstest cannot read /{path}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = Command::new("grub-fstest")
        .arg(&img)
        .arg("ls")
        .arg("/boot/grub")
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("menu.lst") && listing.contains("grub.cfg"),
        "ls /boot/grub: {listing}"
    );
    let _ = Path::new(&img);
}

#[test]
fn grub_reads_boot_files_in_both_profiles() {
    if !have_grub_fstest() {
        eprintln!("skipped: grub-fstest not installed (apt-get install grub-common)");
        return;
    }
    for profile in [Profile::Default, Profile::PvGrub] {
        for bs in [1024, 4096] {
            check(profile, bs);
        }
    }
}
