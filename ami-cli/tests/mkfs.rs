//! End-to-end tests of `ami mkfs`: the built binary on real directories,
//! with e2fsprogs as the oracle.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use fixtures::{write_edge_dir, EdgeScale};
use tempfile::TempDir;

/// 2023-11-14T22:13:20Z.
const EPOCH: i64 = 1_700_000_000;
const EPOCH_TEXT: &str = "Tue Nov 14 22:13:20 2023";

/// A temporary directory with `src/` (to fill) and `out/` (empty).
struct Work {
    dir: TempDir,
}

impl Work {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("src")).unwrap();
        fs::create_dir(dir.path().join("out")).unwrap();
        Work { dir }
    }

    fn src(&self) -> PathBuf {
        self.dir.path().join("src")
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    fn img(&self, name: &str) -> PathBuf {
        self.out().join(name)
    }

    /// `src/` with the edge-case tree of the fixtures crate.
    fn with_edge_tree(self) -> Self {
        write_edge_dir(&self.src(), &EdgeScale::small()).expect("writing the edge tree");
        self
    }

    /// `src/` with a few plain files and directories.
    fn with_small_tree(self) -> Self {
        let src = self.src();
        fs::create_dir_all(src.join("etc/default")).unwrap();
        fs::write(src.join("etc/hostname"), b"ami\n").unwrap();
        fs::write(src.join("etc/default/grub"), b"GRUB_TIMEOUT=0\n").unwrap();
        fs::write(src.join("big"), vec![0x5a; 300_000]).unwrap();
        std::os::unix::fs::symlink("etc/hostname", src.join("link")).unwrap();
        self
    }
}

fn json_report(stdout: &[u8]) -> serde_json::Value {
    let text = std::str::from_utf8(stdout).expect("stdout is UTF-8");
    assert_eq!(
        text.lines().count(),
        1,
        "stdout must hold one JSON line: {text:?}"
    );
    serde_json::from_str(text).unwrap_or_else(|e| panic!("bad JSON {text:?}: {e}"))
}

#[test]
fn edge_tree_gives_a_clean_image_with_label_and_uuid() {
    let work = Work::new().with_edge_tree();
    let img = work.img("edge.img");
    let uuid = "5a1e0f3c-7d2b-4e61-9a8c-0123456789ab";
    let out = mkfs([
        "--json".as_ref(),
        "--label".as_ref(),
        "edge-root".as_ref(),
        "--uuid".as_ref(),
        uuid.as_ref(),
        work.src().as_os_str(),
        img.as_os_str(),
    ]);
    assert_success(&out);
    assert_fsck_clean(&img);

    let sb = dumpe2fs(&img);
    assert_eq!(field(&sb, "Filesystem volume name"), "edge-root");
    assert_eq!(field(&sb, "Filesystem UUID"), uuid);
    let features = field(&sb, "Filesystem features");
    // (Too small for a journal: like mke2fs, none below 2048 blocks.)
    for feature in ["extent", "64bit", "metadata_csum", "flex_bg", "dir_index"] {
        assert!(features.split(' ').any(|f| f == feature), "{features}");
    }

    let len = fs::metadata(&img).unwrap().len();
    let report = json_report(&out.stdout);
    assert_eq!(report["image"], img.to_str().unwrap());
    assert_eq!(report["size_bytes"], len);
    assert_eq!(report["image_bytes"], len);
    assert_eq!(report["block_size"], 4096);
    assert_eq!(report["blocks"], len / 4096);
    assert_eq!(
        report["blocks"].as_u64().unwrap().to_string(),
        field(&sb, "Block count")
    );
    assert_eq!(
        report["inodes"].as_u64().unwrap().to_string(),
        field(&sb, "Inode count")
    );
    let free_inodes: u64 = field(&sb, "Free inodes").parse().unwrap();
    assert_eq!(
        report["used_inodes"].as_u64().unwrap(),
        report["inodes"].as_u64().unwrap() - free_inodes
    );
    assert_eq!(report["uuid"], uuid);
    assert_eq!(report["label"], "edge-root");
    assert_eq!(report["profile"], "default");
    assert!(report["used_blocks"].as_u64().unwrap() < report["blocks"].as_u64().unwrap());

    // The human summary goes to stderr.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("wrote ") && stderr.contains(uuid),
        "{stderr}"
    );
}

#[test]
fn image_is_sparse_and_fitted_with_headroom() {
    let work = Work::new().with_small_tree();
    let tight = work.img("tight.img");
    let roomy = work.img("roomy.img");
    let tight_out = mkfs([
        "--json".as_ref(),
        "--headroom".as_ref(),
        "0".as_ref(),
        work.src().as_os_str(),
        tight.as_os_str(),
    ]);
    assert_success(&tight_out);
    let roomy_out = mkfs([
        "--json".as_ref(),
        "--headroom".as_ref(),
        "100".as_ref(),
        work.src().as_os_str(),
        roomy.as_os_str(),
    ]);
    assert_success(&roomy_out);
    assert_fsck_clean(&tight);
    assert_fsck_clean(&roomy);
    let (tight, roomy) = (
        json_report(&tight_out.stdout),
        json_report(&roomy_out.stdout),
    );
    let get = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap();
    // The headroom is free space in percent of what the content uses.
    let roomy_free = get(&roomy, "blocks") - get(&roomy, "used_blocks");
    let tight_free = get(&tight, "blocks") - get(&tight, "used_blocks");
    assert!(
        roomy_free >= get(&tight, "used_blocks") * 9 / 10,
        "100% headroom: {roomy:?}; 0%: {tight:?}"
    );
    assert!(roomy_free > tight_free, "{roomy:?} {tight:?}");
    let roomy = work.img("roomy.img");
    // The zero-filled journal and unused tables stay holes.
    let meta = fs::metadata(&roomy).unwrap();
    assert!(
        meta.blocks() * 512 < meta.len(),
        "{} bytes allocated for a {}-byte image",
        meta.blocks() * 512,
        meta.len()
    );
    // New images get the usual file permissions, not the temporary file's 0600.
    assert_ne!(meta.permissions().mode() & 0o044, 0);
}

#[test]
fn explicit_size_block_size_and_inodes() {
    let work = Work::new().with_small_tree();
    let img = work.img("sized.img");
    let out = mkfs([
        "--size".as_ref(),
        "48MiB".as_ref(),
        "--block-size".as_ref(),
        "1024".as_ref(),
        "--inodes".as_ref(),
        "5000".as_ref(),
        work.src().as_os_str(),
        img.as_os_str(),
    ]);
    assert_success(&out);
    assert_fsck_clean(&img);
    assert_eq!(fs::metadata(&img).unwrap().len(), 48 << 20);
    let sb = dumpe2fs(&img);
    assert_eq!(field(&sb, "Block size"), "1024");
    let features = field(&sb, "Filesystem features");
    assert!(features.contains("has_journal"), "{features}");
    let blocks: u64 = field(&sb, "Block count").parse().unwrap();
    assert!(
        blocks <= 48 << 10 && blocks > 47 << 10,
        "{blocks} blocks of 1 KiB"
    );
    let inodes: u64 = field(&sb, "Inode count").parse().unwrap();
    assert!(inodes >= 5000, "{inodes} inodes");
    let stat = debugfs_stat(&img, "/big");
    assert!(stat.contains("Size: 300000"), "{stat}");
}

#[test]
fn root_owner_gives_root_ownership() {
    let work = Work::new().with_small_tree();
    // Give a file an owner other than root; as an unprivileged user every
    // file already belongs to someone else than root.
    let file = work.src().join("etc/hostname");
    let expected = if is_root() {
        std::os::unix::fs::chown(&file, Some(4321), Some(4322)).unwrap();
        std::os::unix::fs::chown(work.src(), Some(4321), Some(4322)).unwrap();
        (4321, 4322)
    } else {
        let m = fs::metadata(&file).unwrap();
        (m.uid(), m.gid())
    };
    assert_ne!(expected, (0, 0));

    let kept = work.img("kept.img");
    let root = work.img("root.img");
    assert_success(&mkfs([work.src().as_os_str(), kept.as_os_str()]));
    assert_success(&mkfs([
        "--root-owner".as_ref(),
        work.src().as_os_str(),
        root.as_os_str(),
    ]));
    assert_fsck_clean(&root);
    assert_eq!(owner(&kept, "/etc/hostname"), expected);
    assert_eq!(owner(&kept, "/"), expected);
    for path in ["/", "/etc", "/etc/hostname", "/etc/default/grub", "/link"] {
        assert_eq!(owner(&root, path), (0, 0), "{path}");
    }
}

#[test]
fn source_date_epoch_gives_identical_images() {
    let work = Work::new().with_edge_tree();
    let touched = work.src().join("touched");
    fs::write(&touched, b"x").unwrap();
    let first = work.img("first.img");
    let second = work.img("second.img");
    // Reading a file or listing a directory whose atime is older than its
    // mtime or than a day would update the atime (relatime), and the edge
    // tree has such times: ami reads its sources with O_NOATIME, so the
    // first build must not change the source for the second.
    assert_success(&mkfs([
        "--label".as_ref(),
        "repro".as_ref(),
        "--source-date-epoch".as_ref(),
        EPOCH.to_string().as_ref(),
        work.src().as_os_str(),
        first.as_os_str(),
    ]));
    // Change the host times of a file between the builds (its new mtime
    // and ctime lie after the epoch and differ from the first build's) and
    // take the epoch from the environment this time.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    fs::File::options()
        .write(true)
        .open(&touched)
        .unwrap()
        .set_modified(std::time::SystemTime::now())
        .unwrap();
    let out = ami()
        .env("SOURCE_DATE_EPOCH", EPOCH.to_string())
        .args(["mkfs", "--label", "repro"])
        .arg(work.src())
        .arg(&second)
        .output()
        .unwrap();
    assert_success(&out);
    assert_fsck_clean(&first);

    let a = fs::read(&first).unwrap();
    let b = fs::read(&second).unwrap();
    assert_eq!(a.len(), b.len());
    if let Some(at) = a.iter().zip(&b).position(|(x, y)| x != y) {
        panic!("the images differ first at byte {at}");
    }

    let sb = dumpe2fs(&first);
    assert_eq!(field(&sb, "Filesystem created"), EPOCH_TEXT);
    assert_eq!(field(&sb, "Last write time"), EPOCH_TEXT);
    let uuid = field(&sb, "Filesystem UUID");
    // Derived, not random: a version-8 UUID.
    assert_eq!(uuid.as_bytes()[14], b'8', "{uuid}");
    // File times newer than the epoch are clamped to it.
    let stat = debugfs_stat(&first, "/touched");
    let hex = format!("{EPOCH:#x}");
    for time in ["ctime", "mtime", "atime"] {
        assert!(
            stat.contains(&format!("{time}: {hex}:00000000")),
            "{time} not clamped to {hex}:\n{stat}"
        );
    }

    // A different epoch gives a different UUID; no epoch gives a random one.
    let other = work.img("other.img");
    assert_success(&mkfs([
        "--label".as_ref(),
        "repro".as_ref(),
        "--source-date-epoch".as_ref(),
        (EPOCH + 1).to_string().as_ref(),
        work.src().as_os_str(),
        other.as_os_str(),
    ]));
    assert_ne!(field(&dumpe2fs(&other), "Filesystem UUID"), uuid);
    let random = work.img("random.img");
    assert_success(&mkfs([work.src().as_os_str(), random.as_os_str()]));
    let random_uuid = field(&dumpe2fs(&random), "Filesystem UUID").to_owned();
    assert_eq!(random_uuid.as_bytes()[14], b'4', "{random_uuid}");
}

#[test]
fn too_small_size_fails_and_leaves_nothing_behind() {
    let work = Work::new().with_small_tree();
    // No previous image: none is created.
    let img = work.img("small.img");
    let out = mkfs([
        "--size".as_ref(),
        "64K".as_ref(),
        work.src().as_os_str(),
        img.as_os_str(),
    ]);
    let stderr = assert_failure(&out, 1);
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("needed"), "{stderr}");
    assert!(out.stdout.is_empty());
    assert_eq!(list_dir(&work.out()), Vec::<String>::new());

    // A previous image stays as it was.
    fs::write(&img, b"previous image").unwrap();
    let out = mkfs([
        "--json".as_ref(),
        "--size".as_ref(),
        "64K".as_ref(),
        work.src().as_os_str(),
        img.as_os_str(),
    ]);
    assert_failure(&out, 1);
    assert!(out.stdout.is_empty());
    assert_eq!(fs::read(&img).unwrap(), b"previous image");
    assert_eq!(list_dir(&work.out()), ["small.img"]);

    // ... and is replaced when a build succeeds.
    assert_success(&mkfs([work.src().as_os_str(), img.as_os_str()]));
    assert_fsck_clean(&img);
    assert_eq!(list_dir(&work.out()), ["small.img"]);
}

#[test]
fn pvgrub_profile_has_no_64bit_and_no_metadata_csum() {
    let work = Work::new().with_edge_tree();
    let img = work.img("pv.img");
    let out = mkfs([
        "--json".as_ref(),
        "--profile".as_ref(),
        "pvgrub".as_ref(),
        work.src().as_os_str(),
        img.as_os_str(),
    ]);
    assert_success(&out);
    assert_fsck_clean(&img);
    let sb = dumpe2fs(&img);
    let features: Vec<&str> = field(&sb, "Filesystem features").split(' ').collect();
    assert!(!features.contains(&"64bit"), "{features:?}");
    assert!(!features.contains(&"metadata_csum"), "{features:?}");
    assert!(features.contains(&"uninit_bg"), "{features:?}");
    assert!(features.contains(&"extent"), "{features:?}");
    assert_eq!(json_report(&out.stdout)["profile"], "pvgrub");
}

#[test]
fn source_dir_errors_are_clear() {
    let work = Work::new().with_small_tree();
    let img = work.img("x.img");

    let missing = work.dir.path().join("no-such-dir");
    let out = mkfs([missing.as_os_str(), img.as_os_str()]);
    let stderr = assert_failure(&out, 1);
    assert!(stderr.starts_with("error: SOURCE_DIR "), "{stderr}");
    assert!(stderr.contains("no-such-dir"), "{stderr}");

    let file = work.src().join("etc/hostname");
    let out = mkfs([file.as_os_str(), img.as_os_str()]);
    let stderr = assert_failure(&out, 1);
    assert!(stderr.contains("is not a directory"), "{stderr}");

    let out = mkfs([
        "--label".as_ref(),
        "a-label-longer-than-16".as_ref(),
        work.src().as_os_str(),
        img.as_os_str(),
    ]);
    let stderr = assert_failure(&out, 1);
    assert!(stderr.contains("at most 16"), "{stderr}");

    let out = mkfs([work.src().as_os_str(), work.out().as_os_str()]);
    let stderr = assert_failure(&out, 1);
    assert!(stderr.contains("is a directory"), "{stderr}");

    assert_eq!(list_dir(&work.out()), Vec::<String>::new());
}

#[test]
fn usage_errors_exit_with_status_2() {
    let work = Work::new().with_small_tree();
    let img = work.img("x.img");
    let src = work.src();
    let cases: [&[&std::ffi::OsStr]; 6] = [
        &[],
        &[src.as_os_str()],
        &[
            "--size".as_ref(),
            "12X".as_ref(),
            src.as_os_str(),
            img.as_os_str(),
        ],
        &[
            "--size".as_ref(),
            "1G".as_ref(),
            "--headroom".as_ref(),
            "5".as_ref(),
            src.as_os_str(),
            img.as_os_str(),
        ],
        &[
            "--uuid".as_ref(),
            "nope".as_ref(),
            src.as_os_str(),
            img.as_os_str(),
        ],
        &[
            "--block-size".as_ref(),
            "512".as_ref(),
            src.as_os_str(),
            img.as_os_str(),
        ],
    ];
    for args in cases {
        let out = mkfs(args);
        let stderr = assert_failure(&out, 2);
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    }
    assert_eq!(list_dir(&work.out()), Vec::<String>::new());
}

#[test]
fn bad_source_date_epoch_in_the_environment_is_an_error() {
    let work = Work::new().with_small_tree();
    let img = work.img("x.img");
    let out = ami()
        .env("SOURCE_DATE_EPOCH", "yesterday")
        .arg("mkfs")
        .arg(work.src())
        .arg(&img)
        .output()
        .unwrap();
    let stderr = assert_failure(&out, 1);
    assert!(stderr.contains("SOURCE_DATE_EPOCH"), "{stderr}");
    assert!(!img.exists());
}

/// Copies the binary under test where any user can run it.
fn public_copy_of_ami(dir: &Path) -> PathBuf {
    let copy = dir.join("ami");
    fs::copy(env!("CARGO_BIN_EXE_ami"), &copy).unwrap();
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
    copy
}

#[test]
fn unreadable_source_files_are_named() {
    if !is_root() {
        eprintln!("skipped: needs root to create files an unprivileged user cannot read");
        return;
    }
    let setpriv = Command::new("setpriv").arg("--version").output();
    if !setpriv.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: setpriv (util-linux) is not installed");
        return;
    }
    let work = Work::new().with_small_tree();
    let nobody = |cmd: &mut Command| {
        let ami = public_copy_of_ami(work.dir.path());
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(ami)
            .arg("mkfs")
            .env_remove("SOURCE_DATE_EPOCH");
    };
    fs::set_permissions(work.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(work.out(), fs::Permissions::from_mode(0o777)).unwrap();
    let img = work.img("x.img");

    // A file without read permission: found by the writer.
    let secret = work.src().join("etc/secret-file");
    fs::write(&secret, b"secret").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o000)).unwrap();
    let mut cmd = Command::new("setpriv");
    nobody(&mut cmd);
    let out = cmd.arg(work.src()).arg(&img).output().unwrap();
    let stderr = assert_failure(&out, 1);
    assert!(stderr.contains("etc/secret-file"), "{stderr}");
    assert!(stderr.contains(secret.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("ermission denied"), "{stderr}");
    assert_eq!(list_dir(&work.out()), Vec::<String>::new());
    fs::remove_file(&secret).unwrap();

    // A directory without read permission: found by the scan.
    let closed = work.src().join("closed-dir");
    fs::create_dir(&closed).unwrap();
    fs::write(closed.join("inside"), b"x").unwrap();
    fs::set_permissions(&closed, fs::Permissions::from_mode(0o000)).unwrap();
    let mut cmd = Command::new("setpriv");
    nobody(&mut cmd);
    let out = cmd.arg(work.src()).arg(&img).output().unwrap();
    let stderr = assert_failure(&out, 1);
    assert!(stderr.contains("closed-dir"), "{stderr}");
    assert!(stderr.contains("scanning"), "{stderr}");
    assert_eq!(list_dir(&work.out()), Vec::<String>::new());
}

#[test]
fn more_than_65000_hard_links_are_refused() {
    // Most filesystems cap links at 65000 themselves; tmpfs does not.
    let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
        eprintln!("skipped: no tmpfs at /dev/shm to hold 65001 links");
        return;
    };
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f0"), b"x").unwrap();
    for i in 1..=65_000 {
        if let Err(e) = fs::hard_link(src.join("f0"), src.join(format!("f{i}"))) {
            eprintln!("skipped: cannot make 65001 links here: {e}");
            return;
        }
    }
    let img = dir.path().join("links.img");
    let out = mkfs([src.as_os_str(), img.as_os_str()]);
    let stderr = assert_failure(&out, 1);
    assert!(stderr.contains("65000"), "{stderr}");
    assert!(stderr.contains("hard links"), "{stderr}");
    assert!(!img.exists());
}
