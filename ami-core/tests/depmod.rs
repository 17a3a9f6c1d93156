//! Tests of the native depmod.
//!
//! The always-on test checks the outputs for a module directory with only
//! `modules.builtin` and `modules.builtin.modinfo` against golden bytes
//! written by kmod 30's `depmod -b` (this exercises the index trie
//! writer: prefix splits, child ranges, several values under one key).
//!
//! The end-to-end test (`AMI_E2E=1`) unpacks a real Debian kernel package,
//! runs the real `depmod -b DIR VERSION` on one copy and ours on a tree
//! scanned from a pristine copy, and compares every output byte for byte.
//! It takes the package from `AMI_KERNEL_DEB` (a path to a
//! `linux-image-*.deb`) or downloads `linux-image-cloud-amd64`'s kernel with
//! `apt-get download`; the depmod binary from `AMI_DEPMOD`, else `depmod`
//! in `PATH`, `/sbin` or `/usr/sbin`.

use ami_core::configure::depmod::{depmod, DepmodError, Index, OUTPUT_FILES};
use ami_core::configure::{read_file, write_file, write_symlink};
use ami_core::progress::NoProgress;
use ami_core::scan::{scan_dir, ScanOptions};
use ami_core::{Metadata, Timestamp, Tree};
use std::path::{Path, PathBuf};
use std::process::Command;

const EPOCH: Timestamp = Timestamp::from_secs(1_700_000_000);
const VERSION: &str = "6.1.0-0-test";

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// `(file, hex contents)` as kmod 30's depmod wrote them for the inputs of
/// [`builtin_only_matches_real_depmod`].
const GOLDEN: [(&str, &str); 10] = [
    (
        "modules.alias",
        "2320416c6961736573206578747261637465642066726f6d206d6f64756c6573207468656d73656c7665732e0a",
    ),
    ("modules.alias.bin", "b007f457000200010000000c"),
    (
        "modules.builtin.alias.bin",
        "b007f457000200012000006872635f313600000000010000000063726331360078743300000000020000000065787432000000000065787434000000000100000000657874320000000001000000006578743400735f6578740032344000003a00000000400000476366c000000c00000000c0000020a0000054",
    ),
    (
        "modules.builtin.bin",
        "b007f457000200012000003d726331360000000001000000000000000001000000000000000001000000000078740032344000001a00000000400000236365c000000c00000000a000002c",
    ),
    ("modules.dep", ""),
    ("modules.dep.bin", "b007f457000200010000000c"),
    ("modules.devname", ""),
    (
        "modules.softdep",
        "2320536f667420646570656e64656e63696573206578747261637465642066726f6d206d6f64756c6573207468656d73656c7665732e0a",
    ),
    (
        "modules.symbols",
        "2320416c696173657320666f722073796d626f6c732c20757365642062792073796d626f6c5f7265717565737428292e0a",
    ),
    ("modules.symbols.bin", "b007f457000200010000000c"),
];

#[test]
fn builtin_only_matches_real_depmod() {
    // Merged /usr: the files are reached through the /lib symlink.
    let mut tree = Tree::new(Metadata::new(0o755));
    write_symlink(&mut tree, "/lib", "usr/lib", EPOCH).unwrap();
    let dir = format!("/usr/lib/modules/{VERSION}");
    write_file(
        &mut tree,
        &format!("{dir}/modules.builtin"),
        "kernel/fs/ext4/ext4.ko\nkernel/lib/crc16.ko\nkernel/fs/ext2.ko\n",
        Metadata::new(0o644),
        EPOCH,
    )
    .unwrap();
    write_file(
        &mut tree,
        &format!("{dir}/modules.builtin.modinfo"),
        &b"ext4.alias=fs-ext4\0ext4.alias=ext3\0ext4.license=GPL\0crc16.alias=crc-16\0\
           ext2.alias=fs-ext2\0ext2.alias=ext3\0"[..],
        Metadata::new(0o644),
        EPOCH,
    )
    .unwrap();
    let report = depmod(&mut tree, VERSION, EPOCH).unwrap();
    assert_eq!(report.modules, 0);
    assert_eq!(report.files, OUTPUT_FILES);
    for (name, hex) in GOLDEN {
        let got = read_file(&tree, &format!("{dir}/{name}")).unwrap().unwrap();
        assert_eq!(got, unhex(hex), "{name} differs from depmod's");
    }
}

#[test]
fn index_values_by_priority_then_latest_first() {
    // Same trie as modules.builtin.bin above, built directly.
    let mut idx = Index::new();
    for key in ["ext4", "crc16", "ext2"] {
        idx.insert(key.as_bytes(), b"", 0).unwrap();
    }
    assert_eq!(idx.write(), unhex(GOLDEN[3].1));

    // Values: priority order, a later value before an earlier one of the
    // same priority.
    let mut idx = Index::new();
    idx.insert(b"k", b"b", 5).unwrap();
    idx.insert(b"k", b"a", 1).unwrap();
    idx.insert(b"k", b"c", 5).unwrap();
    // The key's first character is an edge of the root (empty prefix); the
    // leaf (empty prefix, values) is written first, then the root.
    let mut want = unhex("b007f45700020001");
    want.extend_from_slice(&0x2000_0022_u32.to_be_bytes()); // root: childs at 34
    want.extend_from_slice(&3u32.to_be_bytes()); // leaf at 12: 3 values
    for (p, v) in [(1u32, "a"), (5, "c"), (5, "b")] {
        want.extend_from_slice(&p.to_be_bytes());
        want.extend_from_slice(v.as_bytes());
        want.push(0);
    }
    want.extend_from_slice(b"kk"); // root: first and last child character
    want.extend_from_slice(&0x4000_000C_u32.to_be_bytes());
    assert_eq!(idx.write(), want);
    assert!(matches!(
        idx.insert("é".as_bytes(), b"", 0),
        Err(DepmodError::Unsupported(_))
    ));
}

#[test]
fn missing_module_dir_is_an_error() {
    let mut tree = Tree::new(Metadata::new(0o755));
    assert!(matches!(
        depmod(&mut tree, VERSION, EPOCH),
        Err(DepmodError::NoModuleDir { .. })
    ));
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn find_depmod() -> PathBuf {
    if let Some(p) = std::env::var_os("AMI_DEPMOD") {
        return p.into();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/sbin".into(), "/usr/sbin".into()])
        .map(|d| d.join("depmod"))
        .find(|p| p.exists())
        .expect("depmod not found: install kmod or set AMI_DEPMOD to a depmod binary")
}

fn kernel_deb(tmp: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os("AMI_KERNEL_DEB") {
        return p.into();
    }
    let out = Command::new("apt-cache")
        .args(["depends", "linux-image-cloud-amd64"])
        .output()
        .expect("apt-cache not found: set AMI_KERNEL_DEB to a linux-image .deb");
    let text = String::from_utf8_lossy(&out.stdout);
    let pkg = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-cloud-amd64"))
        .expect("no versioned kernel in apt-cache depends linux-image-cloud-amd64")
        .to_owned();
    run(Command::new("apt-get")
        .args(["download", &pkg])
        .current_dir(tmp));
    std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("apt-get download wrote no .deb")
}

#[test]
fn real_kernel_matches_depmod_byte_for_byte() {
    if std::env::var_os("AMI_E2E").is_none_or(|v| v != "1") {
        eprintln!("skipped: set AMI_E2E=1 to compare with the real depmod on a kernel package");
        return;
    }
    let depmod_bin = find_depmod();
    let tmp = tempfile::tempdir().unwrap();
    let deb = kernel_deb(tmp.path());
    let pristine = tmp.path().join("pristine");
    let oracle = tmp.path().join("oracle");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&pristine));
    run(Command::new("cp").arg("-a").arg(&pristine).arg(&oracle));
    let moddir = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| pristine.join(d))
        .find(|d| d.is_dir())
        .expect("the package has no lib/modules");
    let version = std::fs::read_dir(&moddir)
        .unwrap()
        .next()
        .expect("no kernel version directory")
        .unwrap()
        .file_name()
        .into_string()
        .unwrap();
    run(Command::new(&depmod_bin)
        .arg("-b")
        .arg(&oracle)
        .arg(&version));

    let opts = ScanOptions::new().root_owner(true).xattrs(false);
    let mut tree = scan_dir(&pristine, &opts, &NoProgress).unwrap();
    let report = depmod(&mut tree, &version, EPOCH).unwrap();
    assert!(report.modules > 100, "{report:?}");
    assert!(report.aliases > 100, "{report:?}");

    let pristine_dir = moddir.join(&version);
    let alias = read_file(&tree, &format!("/lib/modules/{version}/modules.alias"))
        .unwrap()
        .unwrap();
    let alias = String::from_utf8(alias).unwrap();
    assert!(alias.contains(" ena\n") && alias.contains(" virtio_net\n"));
    let oracle_dir = oracle.join(pristine_dir.strip_prefix(&pristine).unwrap());
    let mut written: Vec<String> = std::fs::read_dir(&oracle_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("modules.") && !pristine_dir.join(n).exists())
        .collect();
    written.sort();
    let mut ours = report.files.clone();
    ours.sort();
    assert_eq!(ours, written, "depmod wrote a different set of files");
    for name in OUTPUT_FILES {
        let want = std::fs::read(oracle_dir.join(name)).unwrap();
        let got = read_file(&tree, &format!("/lib/modules/{version}/{name}"))
            .unwrap()
            .unwrap();
        assert!(
            got == want,
            "{name} differs from depmod's ({} vs {} bytes)",
            got.len(),
            want.len()
        );
    }
}
