//! End-to-end tests of `ami resolve` against signed test repositories
//! served on the loopback interface (or read through `file://`).

mod common;

use std::path::Path;
use std::process::Output;

use common::*;
use fixtures::deb::DebBuilder;
use fixtures::http::{Fault, TestServer};
use fixtures::repo::{TestKey, TestRepo};

fn repo(key: Option<&TestKey>) -> TestRepo {
    let mut builder = TestRepo::builder()
        .suite("stable")
        .deb(
            "main",
            &DebBuilder::new("base-files", "12.4", "amd64")
                .field("Essential", "yes")
                .field("Priority", "required")
                .file("/etc/debian_version", b"12.4\n", 0o644),
        )
        .deb(
            "main",
            &DebBuilder::new("hello", "2.10-3", "amd64")
                .depends("libc6 (>= 2.34)")
                .field("Priority", "optional")
                .file("/usr/bin/hello", b"#!/bin/sh\n", 0o755),
        )
        .deb(
            "main",
            &DebBuilder::new("libc6", "2.36-9", "amd64")
                .field("Priority", "optional")
                .file("/usr/lib/libc.so.6", b"old", 0o644),
        )
        .deb(
            "main",
            &DebBuilder::new("hello-doc", "2.10-3", "all").file(
                "/usr/share/doc/hello/README",
                b"doc",
                0o644,
            ),
        )
        .suite("stable-updates")
        .deb(
            "main",
            &DebBuilder::new("libc6", "2.36-9+deb12u4", "amd64")
                .field("Priority", "optional")
                .file("/usr/lib/libc.so.6", b"new", 0o644),
        );
    if let Some(key) = key {
        builder = builder.signed_by(key).by_hash(true);
    }
    builder.build().unwrap()
}

fn resolve_cmd(args: &[&str]) -> Output {
    ami()
        .arg("resolve")
        .args(args)
        .output()
        .expect("running ami")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The expected output line of a package of `repo`.
fn line(repo: &TestRepo, name: &str, version: &str) -> String {
    let deb = repo
        .debs()
        .iter()
        .find(|d| d.name == name && d.version == version)
        .unwrap();
    format!(
        "{} {} {} {} {}",
        deb.name, deb.version, deb.arch, deb.size, deb.sha256
    )
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn resolves_over_http_from_two_suites() {
    let key = TestKey::generate(40);
    let repo = repo(Some(&key));
    let server = TestServer::serve(repo.path()).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let url = server.url();
    let out = resolve_cmd(&[
        "--mirror",
        &url,
        "--suite",
        "stable",
        "--suite",
        "stable-updates",
        "--keyring",
        path_str(repo.keyring().unwrap()),
        "--cache",
        path_str(cache.path()),
        "--variant",
        "minbase",
        "hello",
    ]);
    assert_success(&out);
    assert_eq!(
        stdout(&out),
        format!(
            "{}\n{}\n{}\n",
            line(&repo, "base-files", "12.4"),
            line(&repo, "hello", "2.10-3"),
            line(&repo, "libc6", "2.36-9+deb12u4")
        )
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("resolved 3 packages for amd64"), "{stderr}");
    assert!(
        stderr.contains(&format!("signed by {}", key.signing_fingerprint())),
        "{stderr}"
    );
}

#[test]
fn json_and_download() {
    let key = TestKey::generate(41);
    let repo = repo(Some(&key));
    let cache = tempfile::tempdir().unwrap();
    let out = resolve_cmd(&[
        "--mirror",
        &repo.file_url(),
        "--suite",
        "stable",
        "--keyring",
        path_str(&repo.keyring_asc().unwrap()),
        "--cache",
        path_str(cache.path()),
        "--variant",
        "custom",
        "--download",
        "--json",
        "hello",
        "hello-doc",
    ]);
    assert_success(&out);
    let value: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(value["arch"], "amd64");
    assert_eq!(value["count"], 3);
    let packages = value["packages"].as_array().unwrap();
    let names: Vec<&str> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hello", "hello-doc", "libc6"]);
    let total: u64 = packages.iter().map(|p| p["size"].as_u64().unwrap()).sum();
    assert_eq!(value["download_size"].as_u64().unwrap(), total);
    for p in packages {
        let deb = repo.debs().iter().find(|d| d.name == p["name"]).unwrap();
        assert_eq!(p["version"], deb.version.as_str());
        assert_eq!(p["arch"], deb.arch.as_str());
        assert_eq!(p["sha256"], deb.sha256.as_str());
        assert_eq!(p["filename"], deb.filename.as_str());
        assert_eq!(p["suite"], "stable");
        let path = Path::new(p["path"].as_str().unwrap());
        assert!(path.starts_with(cache.path()));
        assert_eq!(
            std::fs::read(path).unwrap(),
            std::fs::read(repo.path().join(&deb.filename)).unwrap()
        );
    }
}

#[test]
fn sources_come_from_the_apt_configuration() {
    let key = TestKey::generate(42);
    let repo = repo(Some(&key));
    let server = TestServer::serve(repo.path()).unwrap();
    let apt = tempfile::tempdir().unwrap();
    std::fs::create_dir(apt.path().join("sources.list.d")).unwrap();
    std::fs::write(
        apt.path().join("sources.list.d/test.sources"),
        format!(
            "Types: deb\nURIs: {}\nSuites: stable stable-updates\nComponents: main\nSigned-By: {}\n",
            server.url(),
            repo.keyring().unwrap().display()
        ),
    )
    .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let args = [
        "--apt-dir",
        path_str(apt.path()),
        "--cache",
        path_str(cache.path()),
        "--variant",
        "custom",
    ];
    let out = resolve_cmd(&[&args[..], &["hello"]].concat());
    assert_success(&out);
    assert!(
        stdout(&out).contains(&line(&repo, "libc6", "2.36-9+deb12u4")),
        "{}",
        stdout(&out)
    );

    // --suite picks among the configured suites.
    let out = resolve_cmd(&[&args[..], &["--suite", "stable", "hello"]].concat());
    assert_success(&out);
    assert!(
        stdout(&out).contains(&line(&repo, "libc6", "2.36-9")),
        "{}",
        stdout(&out)
    );

    // Server errors are retried.
    server.fault("/dists/stable/InRelease", Fault::Status(503), 1);
    let out = resolve_cmd(&[&args[..], &["hello"]].concat());
    assert_success(&out);
    assert_eq!(server.hits("/dists/stable/InRelease"), 4);
}

#[test]
fn failures_print_an_error_and_nothing_on_stdout() {
    let key = TestKey::generate(43);
    let signed = repo(Some(&key));
    let unsigned = repo(None);
    let stranger = TestKey::generate(44);
    let stranger_ring = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(stranger_ring.path(), stranger.public_keyring()).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let base = |url: &str| -> Vec<String> {
        [
            "--mirror",
            url,
            "--suite",
            "stable",
            "--cache",
            path_str(cache.path()),
            "--variant",
            "custom",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = |extra: &[&str], url: &str| {
        let mut args = base(url);
        args.extend(extra.iter().map(|s| s.to_string()));
        ami().arg("resolve").args(&args).output().unwrap()
    };

    // Signed by a key outside the keyring.
    let out = run(
        &["--keyring", path_str(stranger_ring.path()), "hello"],
        &signed.file_url(),
    );
    let err = assert_failure(&out, 1);
    assert!(
        err.contains("/dists/stable/InRelease: no good signature"),
        "{err}"
    );
    assert!(err.contains("which is not in the keyring"), "{err}");
    assert!(out.stdout.is_empty());

    // Unsigned, without --insecure.
    let out = run(
        &["--keyring", path_str(stranger_ring.path()), "hello"],
        &unsigned.file_url(),
    );
    let err = assert_failure(&out, 1);
    assert!(err.contains("/dists/stable/Release is not signed"), "{err}");
    assert!(out.stdout.is_empty());

    // With --insecure: works, loudly; hashes still checked.
    let out = run(&["--insecure", "hello"], &unsigned.file_url());
    assert_success(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("warning: --insecure"), "{err}");
    assert!(err.contains("NOT VERIFIED"), "{err}");
    let deb = unsigned.deb("hello").unwrap();
    std::fs::write(
        unsigned.path().join(&deb.filename),
        vec![0u8; deb.size as usize],
    )
    .unwrap();
    let out = run(&["--insecure", "--download", "hello"], &unsigned.file_url());
    let err = assert_failure(&out, 1);
    assert!(
        err.contains(&format!("{}: SHA256 mismatch", deb.filename)),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    // A package that does not exist.
    let out = run(
        &["--keyring", path_str(signed.keyring().unwrap()), "nosuch"],
        &signed.file_url(),
    );
    let err = assert_failure(&out, 1);
    assert!(err.contains("no package named \"nosuch\""), "{err}");
    assert!(out.stdout.is_empty());

    // --insecure and --keyring contradict each other.
    let out = run(
        &["--insecure", "--keyring", "x.gpg", "hello"],
        &signed.file_url(),
    );
    assert_failure(&out, 2);

    // No sources at all.
    let empty = tempfile::tempdir().unwrap();
    let out = resolve_cmd(&[
        "--apt-dir",
        path_str(empty.path()),
        "--cache",
        path_str(cache.path()),
    ]);
    let err = assert_failure(&out, 1);
    assert!(err.contains("no apt source is configured"), "{err}");
}
