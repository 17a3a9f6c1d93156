//! End-to-end tests of `ami bootstrap` against a signed test repository
//! served on the loopback interface: the package set, the in-memory tree
//! written as an ext4 image (checked with e2fsprogs), the reports, and the
//! failures that must leave no image behind.

mod common;

use std::path::Path;
use std::process::Output;

use common::*;
use fixtures::deb::DebBuilder;
use fixtures::http::TestServer;
use fixtures::repo::{TestKey, TestRepo};

fn repo(key: &TestKey) -> TestRepo {
    TestRepo::builder()
        .suite("stable")
        .deb(
            "main",
            &DebBuilder::new("base-files", "12.4", "amd64")
                .field("Essential", "yes")
                .field("Priority", "required")
                .dir("/var/local", 0o2775)
                .owned(0, 50, "root", "staff")
                .file("/etc/debian_version", b"12.4\n", 0o644),
        )
        .deb(
            "main",
            &DebBuilder::new("libc6", "2.36-9", "amd64").file(
                "/lib/x86_64-linux-gnu/libc.so.6",
                b"old",
                0o644,
            ),
        )
        .deb(
            "main",
            &DebBuilder::new("sudo", "1.9.13p3-1", "amd64")
                .depends("libc6 (>= 2.36)")
                .file("/usr/bin/sudo", b"#!/bin/sh\n", 0o4755)
                .conffile("/etc/sudoers", b"root ALL=(ALL:ALL) ALL\n")
                .postinst("#!/bin/sh\nexit 0\n"),
        )
        .deb(
            "main",
            &DebBuilder::new("broken", "1.0", "amd64").depends("libc6 (>= 3)"),
        )
        .suite("stable-security")
        .deb(
            "main",
            &DebBuilder::new("libc6", "2.36-9+deb12u1", "amd64").file(
                "/lib/x86_64-linux-gnu/libc.so.6",
                b"new",
                0o644,
            ),
        )
        .signed_by(key)
        .by_hash(true)
        .build()
        .unwrap()
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn bootstrap(url: &str, keyring: &Path, cache: &Path, extra: &[&str]) -> Output {
    ami()
        .arg("bootstrap")
        .args([
            "--mirror",
            url,
            "--suite",
            "stable",
            "--suite",
            "stable-security",
            "--keyring",
            path_str(keyring),
            "--cache",
            path_str(cache),
            "--variant",
            "essential",
        ])
        .args(extra)
        .output()
        .expect("running ami")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn debugfs_cat(image: &Path, path: &str) -> String {
    let request = format!("cat {path}");
    let out = run_tool(
        "debugfs",
        &["-R".as_ref(), request.as_ref(), image.as_os_str()],
    );
    assert!(out.status.success(), "debugfs -R {request:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn bootstraps_into_an_ext4_image() {
    let key = TestKey::generate(60);
    let repo = repo(&key);
    let server = TestServer::serve(repo.path()).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("rootfs.img");
    let keyring = repo.keyring().unwrap();

    let out = bootstrap(
        &server.url(),
        keyring,
        cache.path(),
        &["--image", path_str(&image), "--json", "sudo"],
    );
    assert_success(&out);
    let value: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(value["arch"], "amd64");
    assert_eq!(value["packages_count"], 3);
    assert_eq!(value["with_scripts"], 1);
    assert_eq!(value["cached_bytes"], 0);
    assert_eq!(value["downloaded_bytes"], value["download_size"]);
    assert_eq!(value["image"], path_str(&image));
    assert_eq!(
        value["image_bytes"].as_u64().unwrap(),
        std::fs::metadata(&image).unwrap().len()
    );
    let packages = value["packages"].as_array().unwrap();
    // In unpack order: base-files and libc6 have no dependencies (by
    // name), sudo needs libc6.
    let names: Vec<&str> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["base-files", "libc6", "sudo"]);
    for p in packages {
        let deb = repo
            .debs()
            .iter()
            .find(|d| d.name == p["name"] && d.version == p["version"])
            .unwrap_or_else(|| panic!("{p} is not in the repository"));
        assert_eq!(p["sha256"], deb.sha256.as_str());
        assert_eq!(p["size"], deb.size);
        assert_eq!(p["from"], "download");
    }
    assert_eq!(packages[1]["version"], "2.36-9+deb12u1");
    assert_eq!(packages[1]["suite"], "stable-security");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bootstrapped 3 packages for amd64"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("signed by {}", key.signing_fingerprint())),
        "{stderr}"
    );

    assert_fsck_clean(&image);
    let sudo = debugfs_stat(&image, "/usr/bin/sudo");
    assert!(sudo.contains("Mode:  04755"), "{sudo}");
    assert_eq!(owner(&image, "/var/local"), (0, 50));
    assert!(debugfs_stat(&image, "/var/local").contains("Mode:  02775"));
    let bin = debugfs_stat(&image, "/bin");
    assert!(bin.contains("Fast link dest: \"usr/bin\""), "{bin}");
    assert_eq!(
        debugfs_cat(&image, "/lib/x86_64-linux-gnu/libc.so.6"),
        "new"
    );
    let status = debugfs_cat(&image, "/var/lib/dpkg/status");
    assert_eq!(status.matches("Status: install ok unpacked\n").count(), 3);
    assert!(status.contains("Package: sudo\n"), "{status}");
    assert!(!debugfs_cat(&image, "/var/lib/dpkg/info/sudo.postinst").is_empty());

    // Again, from the cache: the same list, nothing downloaded; no image.
    let out = bootstrap(&server.url(), keyring, cache.path(), &["--list", "sudo"]);
    assert_success(&out);
    let expected: Vec<String> = packages
        .iter()
        .map(|p| {
            format!(
                "{} {} {} {} {}",
                p["name"].as_str().unwrap(),
                p["version"].as_str().unwrap(),
                p["arch"].as_str().unwrap(),
                p["size"],
                p["sha256"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(stdout(&out), expected.join("\n") + "\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(" 0 B downloaded"), "{stderr}");
    assert!(stderr.contains(" 0 B decompressed"), "{stderr}");
}

#[test]
fn failures_leave_no_image() {
    let key = TestKey::generate(61);
    let repo = repo(&key);
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("rootfs.img");
    let image_args = ["--image", path_str(&image)];
    let url = repo.file_url();

    // A dependency that cannot be satisfied.
    let out = bootstrap(
        &url,
        repo.keyring().unwrap(),
        cache.path(),
        &[&image_args[..], &["broken"]].concat(),
    );
    let stderr = assert_failure(&out, 1);
    assert!(
        stderr.contains("broken depends on libc6 (>= 3)"),
        "{stderr}"
    );
    assert!(stdout(&out).is_empty());

    // A Release signed by a key that is not trusted.
    let other = TestKey::generate(62);
    let other_keyring = dir.path().join("other.gpg");
    std::fs::write(&other_keyring, other.public_keyring()).unwrap();
    let out = bootstrap(
        &url,
        &other_keyring,
        cache.path(),
        &[&image_args[..], &["sudo"]].concat(),
    );
    let stderr = assert_failure(&out, 1);
    assert!(stderr.contains("InRelease"), "{stderr}");

    // Checked before any work.
    let out = bootstrap(
        &url,
        repo.keyring().unwrap(),
        cache.path(),
        &[
            &image_args[..],
            &["--label", "a-label-longer-than-16", "sudo"],
        ]
        .concat(),
    );
    let stderr = assert_failure(&out, 1);
    assert!(stderr.contains("ext4 allows at most 16"), "{stderr}");
    let out = bootstrap(
        &url,
        repo.keyring().unwrap(),
        cache.path(),
        &["--image", path_str(dir.path()), "sudo"],
    );
    let stderr = assert_failure(&out, 1);
    assert!(stderr.contains("is a directory"), "{stderr}");

    assert_eq!(list_dir(dir.path()), ["other.gpg"]);
    // Nothing was downloaded or decompressed.
    assert!(!cache.path().join("tar").exists());
}
