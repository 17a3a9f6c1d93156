//! The repository client against real repositories built by the fixtures
//! (signed with keys generated here), served by the loopback test server
//! or read through `file://`: the happy path, and every way trust or
//! integrity can fail, each ending in a clear error and no package file.
//!
//! The end-to-end test (`AMI_E2E=1`) reads the host's apt configuration
//! and verifies its real mirror.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ami_core::progress::NoProgress;
use ami_deb::cache::Cache;
use ami_deb::fetch::FetchOptions;
use ami_deb::keyring::Keyring;
use ami_deb::repo::{RepoError, Repository, RepositoryIndex, RepositoryOptions, Trust};
use ami_deb::sources::{load_etc_apt, Source};
use ami_deb::{resolve, Package, Request, Variant};
use fixtures::deb::DebBuilder;
use fixtures::http::{Fault, TestServer};
use fixtures::repo::{TestKey, TestRepo};
use tempfile::TempDir;

fn libc6(version: &str) -> DebBuilder {
    DebBuilder::new("libc6", version, "amd64")
        .field("Priority", "optional")
        .field("Multi-Arch", "same")
        .file(
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            version.as_bytes(),
            0o755,
        )
}

fn hello() -> DebBuilder {
    DebBuilder::new("hello", "2.10-3", "amd64")
        .depends("libc6 (>= 2.34)")
        .file("/usr/bin/hello", b"#!/bin/sh\necho hello\n", 0o755)
}

fn docs() -> DebBuilder {
    DebBuilder::new("hello-doc", "2.10-3", "all").file(
        "/usr/share/doc/hello/README",
        b"read me\n",
        0o644,
    )
}

/// A signed repository with suite `stable` (hello, libc6 2.36-9,
/// hello-doc) and, when `updates`, `stable-updates` (libc6 2.36-9+deb12u4).
fn signed_repo(key: &TestKey, updates: bool, by_hash: bool) -> TestRepo {
    let mut builder = TestRepo::builder()
        .suite("stable")
        .deb("main", &hello())
        .deb("main", &libc6("2.36-9"))
        .deb("main", &docs());
    if updates {
        builder = builder
            .suite("stable-updates")
            .deb("main", &libc6("2.36-9+deb12u4"));
    }
    builder.signed_by(key).by_hash(by_hash).build().unwrap()
}

fn fast_fetch() -> FetchOptions {
    FetchOptions::default()
        .retries(2)
        .backoff(Duration::from_millis(10), Duration::from_millis(40))
        .timeout(Duration::from_secs(5))
}

struct Client {
    cache_dir: TempDir,
}

impl Client {
    fn new() -> Client {
        Client {
            cache_dir: tempfile::tempdir().unwrap(),
        }
    }

    fn cache(&self) -> Cache {
        Cache::new(self.cache_dir.path())
    }

    fn repository(&self, sources: Vec<Source>, trust: Trust) -> Repository {
        let options = RepositoryOptions::new("amd64", self.cache(), trust).fetch(fast_fetch());
        Repository::new(sources, options).unwrap()
    }

    /// Entries in the cache (temporary files excluded).
    fn cached(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(self.cache_dir.path().join("sha256")) {
            Ok(entries) => entries
                .map(|e| e.unwrap().path())
                .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

fn keyring(repo: &TestRepo) -> Trust {
    Trust::Keyring(Keyring::load(repo.keyring().unwrap()).unwrap())
}

fn sources(uri: &str, suites: &[&str]) -> Vec<Source> {
    suites
        .iter()
        .map(|s| Source::new(uri, s, ["main"]))
        .collect()
}

fn resolved(index: &RepositoryIndex, packages: &[&str]) -> Vec<Package> {
    let request = Request::new(Variant::Custom).packages(packages.iter().copied());
    resolve(index.packages(), &request)
        .unwrap()
        .packages()
        .cloned()
        .collect()
}

fn sha256_hex(path: &Path) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(std::fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn happy_path_over_http_with_by_hash_and_two_suites() {
    let key = TestKey::generate(20);
    let repo = signed_repo(&key, true, true);
    let server = TestServer::serve(repo.path()).unwrap();
    let client = Client::new();
    let repository = client.repository(
        sources(&server.url(), &["stable", "stable-updates"]),
        keyring(&repo),
    );

    let index = repository.update(&NoProgress).unwrap();
    assert_eq!(index.releases().len(), 2);
    assert!(index
        .releases()
        .iter()
        .all(|r| r.signers()[0].key == key.signing_fingerprint()));
    assert_eq!(index.packages().len(), 4);
    // Indices came by hash, compressed with xz.
    let log = server.log();
    assert!(
        log.iter()
            .any(|h| h.path.contains("/main/binary-amd64/by-hash/SHA256/") && h.status == 200),
        "{log:?}"
    );
    assert!(
        !log.iter()
            .any(|h| h.path.ends_with("/Packages") || h.path.ends_with("Packages.gz")),
        "{log:?}"
    );

    let packages = resolved(&index, &["hello", "hello-doc"]);
    let names: Vec<String> = packages.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        names,
        ["hello 2.10-3", "hello-doc 2.10-3", "libc6 2.36-9+deb12u4"]
    );
    let libc = &packages[2];
    assert_eq!(
        index.origin(libc.source().index()).unwrap().suite,
        "stable-updates"
    );

    let files = repository.download(&index, &packages, &NoProgress).unwrap();
    assert_eq!(files.len(), 3);
    for (package, path) in &files {
        let pool = repo
            .debs()
            .iter()
            .find(|d| d.name == package.name() && d.version == package.version().as_str());
        let pool = pool.unwrap();
        assert_eq!(sha256_hex(path), pool.sha256);
        assert_eq!(
            std::fs::read(path).unwrap(),
            std::fs::read(repo.path().join(&pool.filename)).unwrap()
        );
    }
    // Again: everything comes from the cache, no request for a .deb.
    let before = server.log().len();
    let again = repository.download(&index, &packages, &NoProgress).unwrap();
    assert_eq!(
        again.iter().map(|(_, p)| p).collect::<Vec<_>>(),
        files.iter().map(|(_, p)| p).collect::<Vec<_>>()
    );
    assert_eq!(server.log().len(), before);
}

#[test]
fn file_mirror_and_armored_keyring() {
    let key = TestKey::generate(21);
    let repo = signed_repo(&key, false, false);
    let client = Client::new();
    let trust = Trust::Keyring(Keyring::load(&repo.keyring_asc().unwrap()).unwrap());
    let repository = client.repository(sources(&repo.file_url(), &["stable"]), trust);
    let index = repository.update(&NoProgress).unwrap();
    let packages = resolved(&index, &["hello"]);
    let files = repository.download(&index, &packages, &NoProgress).unwrap();
    assert_eq!(files.len(), 2);
    assert!(files
        .iter()
        .all(|(_, p)| p.starts_with(client.cache_dir.path())));
}

/// Asserts the error's message contains each of `parts`, and that the
/// cache holds no bad entry: every file is named by its own SHA-256, and
/// no temporary file is left.
fn assert_fails(
    client: &Client,
    result: Result<impl std::fmt::Debug, RepoError>,
    parts: &[&str],
) -> String {
    let message = result.expect_err("must fail").to_string();
    for part in parts {
        assert!(
            message.contains(part),
            "{message:?} does not contain {part:?}"
        );
    }
    if let Ok(entries) = std::fs::read_dir(client.cache_dir.path().join("sha256")) {
        for entry in entries {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            assert_eq!(
                name,
                sha256_hex(&path),
                "bad or temporary cache entry {}",
                path.display()
            );
        }
    }
    message
}

#[test]
fn a_tampered_inrelease_is_refused() {
    let key = TestKey::generate(22);
    let repo = signed_repo(&key, false, false);
    let inrelease = repo.dists("stable", "InRelease");
    let text = std::fs::read_to_string(&inrelease).unwrap();
    std::fs::write(
        &inrelease,
        text.replace("Components: main", "Components: mainx"),
    )
    .unwrap();
    let server = TestServer::serve(repo.path()).unwrap();
    let client = Client::new();
    let repository = client.repository(sources(&server.url(), &["stable"]), keyring(&repo));
    assert_fails(
        &client,
        repository.update(&NoProgress),
        &[
            &format!("{}/dists/stable/InRelease: no good signature", server.url()),
            "BAD signature",
        ],
    );
}

#[test]
fn a_release_signed_by_another_key_is_refused() {
    let repo = signed_repo(&TestKey::generate(23), false, false);
    let other = TestKey::generate(24);
    let client = Client::new();
    let trust = Trust::Keyring(Keyring::from_bytes(&other.public_keyring(), "other").unwrap());
    let repository = client.repository(sources(&repo.file_url(), &["stable"]), trust);
    assert_fails(
        &client,
        repository.update(&NoProgress),
        &["not in the keyring", "InRelease"],
    );
}

#[test]
fn unsigned_repositories_need_insecure_and_still_check_hashes() {
    let repo = TestRepo::builder()
        .suite("stable")
        .deb("main", &hello())
        .deb("main", &libc6("2.36-9"))
        .build()
        .unwrap();
    assert!(!repo.dists("stable", "InRelease").exists());
    let server = TestServer::serve(repo.path()).unwrap();
    let client = Client::new();
    let repository = client.repository(
        sources(&server.url(), &["stable"]),
        Trust::Keyring(Keyring::new()),
    );
    assert_fails(
        &client,
        repository.update(&NoProgress),
        &[&format!(
            "{}/dists/stable/Release is not signed",
            server.url()
        )],
    );
    // The fallback asked for InRelease, then Release and Release.gpg.
    assert_eq!(server.hits("/dists/stable/InRelease"), 1);
    assert_eq!(server.hits("/dists/stable/Release.gpg"), 1);

    let insecure = client.repository(sources(&server.url(), &["stable"]), Trust::Insecure);
    let index = insecure.update(&NoProgress).unwrap();
    assert!(index.releases()[0].is_insecure());
    let packages = resolved(&index, &["hello"]);
    // Hashes are still checked in insecure mode.
    let deb = repo.deb("hello").unwrap();
    server.fault(&format!("/{}", deb.filename), Fault::Corrupt, 1);
    assert_fails(
        &client,
        insecure.download(&index, &packages, &NoProgress),
        &["SHA256 mismatch", &deb.filename],
    );
}

#[test]
fn a_packages_index_that_does_not_match_the_release_is_refused() {
    let key = TestKey::generate(25);
    let repo = signed_repo(&key, false, false);
    let xz = repo.dists("stable", "main/binary-amd64/Packages.xz");
    let mut data = std::fs::read(&xz).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 1;
    std::fs::write(&xz, data).unwrap();
    let client = Client::new();
    let repository = client.repository(sources(&repo.file_url(), &["stable"]), keyring(&repo));
    let message = assert_fails(
        &client,
        repository.update(&NoProgress),
        &["dists/stable/main/binary-amd64/Packages.xz: SHA256 mismatch: expected "],
    );
    assert!(message.starts_with("file://"), "{message}");
    // Nothing of the bad index was cached either.
    assert!(client.cached().is_empty());
}

#[test]
fn a_decompressed_index_must_match_the_uncompressed_entry() {
    // Rewrite Packages.xz with other content and re-sign a Release that
    // lists the new .xz hash but the old uncompressed hash.
    let key = TestKey::generate(26);
    let repo = signed_repo(&key, false, false);
    let dir = repo.dists("stable", "main/binary-amd64");
    let text = std::fs::read_to_string(dir.join("Packages")).unwrap();
    let evil = text.replace("Version: 2.10-3", "Version: 9.99-9");
    let xz = fixtures::deb::Compression::Xz.compress(evil.as_bytes());
    let old_xz = std::fs::read(dir.join("Packages.xz")).unwrap();
    std::fs::write(dir.join("Packages.xz"), &xz).unwrap();
    let hex = |d: &[u8]| -> String {
        use sha2::Digest;
        sha2::Sha256::digest(d)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let release = std::fs::read_to_string(repo.dists("stable", "Release")).unwrap();
    let line = release
        .lines()
        .find(|l| l.contains(&hex(&old_xz)))
        .unwrap()
        .to_owned();
    let new_line = format!(
        " {} {:>8} main/binary-amd64/Packages.xz",
        hex(&xz),
        xz.len()
    );
    let release = release.replace(&line, &new_line);
    std::fs::write(repo.dists("stable", "InRelease"), key.clearsign(&release)).unwrap();
    let client = Client::new();
    let repository = client.repository(sources(&repo.file_url(), &["stable"]), keyring(&repo));
    assert_fails(
        &client,
        repository.update(&NoProgress),
        &["the decompressed index does not match main/binary-amd64/Packages in the Release"],
    );
}

#[test]
fn a_corrupted_deb_is_refused() {
    let key = TestKey::generate(27);
    let repo = signed_repo(&key, false, false);
    let deb = repo.deb("libc6").unwrap().clone();
    let path = repo.path().join(&deb.filename);
    let mut data = std::fs::read(&path).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    std::fs::write(&path, data).unwrap();
    let server = TestServer::serve(repo.path()).unwrap();
    let client = Client::new();
    let repository = client.repository(sources(&server.url(), &["stable"]), keyring(&repo));
    let index = repository.update(&NoProgress).unwrap();
    let packages = resolved(&index, &["hello"]);
    assert_fails(
        &client,
        repository.download(&index, &packages, &NoProgress),
        &[&format!(
            "{}/{}: SHA256 mismatch: expected {}",
            server.url(),
            deb.filename,
            deb.sha256
        )],
    );
    // A hash mismatch is not retried.
    assert_eq!(server.hits(&format!("/{}", deb.filename)), 1);
}

#[test]
fn truncated_downloads_are_retried_then_reported() {
    let key = TestKey::generate(28);
    let repo = signed_repo(&key, false, false);
    let server = TestServer::serve(repo.path()).unwrap();
    let client = Client::new();
    let repository = client.repository(sources(&server.url(), &["stable"]), keyring(&repo));
    let index = repository.update(&NoProgress).unwrap();
    let packages = resolved(&index, &["hello"]);
    let hello_path = format!("/{}", repo.deb("hello").unwrap().filename);

    // Once: the retry succeeds.
    server.fault(&hello_path, Fault::Truncate(100), 1);
    let files = repository.download(&index, &packages, &NoProgress).unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(server.hits(&hello_path), 2);

    // Always: reported after the retries (1 + 2 attempts).
    let client = Client::new();
    let repository = client.repository(sources(&server.url(), &["stable"]), keyring(&repo));
    server.fault(&hello_path, Fault::Truncate(100), 100);
    let hits = server.hits(&hello_path);
    assert_fails(
        &client,
        repository.download(&index, &packages, &NoProgress),
        &["giving up after 3 attempts", &hello_path],
    );
    assert_eq!(server.hits(&hello_path) - hits, 3);
}

#[test]
fn server_errors_are_retried_with_backoff() {
    let key = TestKey::generate(29);
    let repo = signed_repo(&key, false, false);
    let server = TestServer::serve(repo.path()).unwrap();
    let client = Client::new();
    let repository = client.repository(sources(&server.url(), &["stable"]), keyring(&repo));
    server.fault("/dists/stable/InRelease", Fault::Status(500), 2);
    server.fault(
        "/dists/stable/main/binary-amd64/Packages.xz",
        Fault::Status(503),
        1,
    );
    let index = repository.update(&NoProgress).unwrap();
    assert_eq!(server.hits("/dists/stable/InRelease"), 3);
    assert_eq!(
        server.hits("/dists/stable/main/binary-amd64/Packages.xz"),
        2
    );
    assert_eq!(index.packages().len(), 3);

    // A 500 that does not go away is an error, not a fallback to Release.
    server.fault("/dists/stable/InRelease", Fault::Status(500), 100);
    assert_fails(
        &client,
        repository.update(&NoProgress),
        &[
            "giving up after 3 attempts",
            "/dists/stable/InRelease: HTTP status 500",
        ],
    );
    assert_eq!(server.hits("/dists/stable/Release"), 0);
}

#[test]
fn timeouts_are_retried() {
    let key = TestKey::generate(30);
    let repo = signed_repo(&key, false, false);
    let server = TestServer::serve(repo.path()).unwrap();
    let client = Client::new();
    let options = RepositoryOptions::new("amd64", client.cache(), keyring(&repo))
        .fetch(fast_fetch().timeout(Duration::from_millis(300)));
    let repository = Repository::new(sources(&server.url(), &["stable"]), options).unwrap();
    server.fault(
        "/dists/stable/InRelease",
        Fault::Delay(Duration::from_secs(2)),
        1,
    );
    let start = std::time::Instant::now();
    repository.update(&NoProgress).unwrap();
    // The slow answer was not waited for: the retry got the file.
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    // The server logs the slow request when it finally answers.
    while server.hits("/dists/stable/InRelease") < 2 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(server.hits("/dists/stable/InRelease"), 2);
}

#[test]
fn without_inrelease_release_and_release_gpg_are_used() {
    let key = TestKey::generate(31);
    let repo = TestRepo::builder()
        .suite("stable")
        .deb("main", &hello())
        .deb("main", &libc6("2.36-9"))
        .signed_by(&key)
        .inrelease(false)
        .build()
        .unwrap();
    let server = TestServer::serve(repo.path()).unwrap();
    let client = Client::new();
    let repository = client.repository(sources(&server.url(), &["stable"]), keyring(&repo));
    let index = repository.update(&NoProgress).unwrap();
    assert_eq!(
        index.releases()[0].url(),
        format!("{}/dists/stable/Release", server.url())
    );
    assert_eq!(
        index.releases()[0].signers()[0].key,
        key.signing_fingerprint()
    );

    // A Release.gpg that does not match is a hard error.
    std::fs::write(
        repo.dists("stable", "Release.gpg"),
        TestKey::generate(32).detached_sign(b"x"),
    )
    .unwrap();
    assert_fails(
        &client,
        repository.update(&NoProgress),
        &["/dists/stable/Release: no good signature"],
    );
}

#[test]
fn a_corrupted_cache_entry_is_detected_and_fetched_again() {
    let key = TestKey::generate(33);
    let repo = signed_repo(&key, false, false);
    let server = TestServer::serve(repo.path()).unwrap();
    let client = Client::new();
    let repository = client.repository(sources(&server.url(), &["stable"]), keyring(&repo));
    let index = repository.update(&NoProgress).unwrap();
    let packages = resolved(&index, &["hello"]);
    let files = repository.download(&index, &packages, &NoProgress).unwrap();
    let (_, hello_file) = files.iter().find(|(p, _)| p.name() == "hello").unwrap();
    let deb = repo.deb("hello").unwrap();
    let hits = server.hits(&format!("/{}", deb.filename));
    // Same size, different bytes.
    let mut data = std::fs::read(hello_file).unwrap();
    data[10] ^= 0x20;
    std::fs::write(hello_file, &data).unwrap();
    let again = repository.download(&index, &packages, &NoProgress).unwrap();
    assert_eq!(server.hits(&format!("/{}", deb.filename)), hits + 1);
    let (_, path) = again.iter().find(|(p, _)| p.name() == "hello").unwrap();
    assert_eq!(sha256_hex(path), deb.sha256);
    // Indices too: a bad cached Packages.xz is fetched again.
    for entry in client.cached() {
        std::fs::write(&entry, b"garbage").unwrap();
    }
    let xz_hits = server.hits("/dists/stable/main/binary-amd64/Packages.xz");
    repository.update(&NoProgress).unwrap();
    assert_eq!(
        server.hits("/dists/stable/main/binary-amd64/Packages.xz"),
        xz_hits + 1
    );
}

#[test]
fn dates_suites_and_architectures_are_checked() {
    let key = TestKey::generate(34);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expired = TestRepo::builder()
        .suite("stable")
        .deb("main", &hello())
        .signed_by(&key)
        .valid_until(now - 10)
        .build()
        .unwrap();
    let client = Client::new();
    let repository =
        client.repository(sources(&expired.file_url(), &["stable"]), keyring(&expired));
    assert_fails(
        &client,
        repository.update(&NoProgress),
        &["/dists/stable/InRelease: expired: Valid-Until"],
    );

    // A suite directory serving another suite's Release.
    let repo = signed_repo(&key, false, false);
    let copy = repo.path().join("dists/oldstable");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::copy(repo.dists("stable", "InRelease"), copy.join("InRelease")).unwrap();
    let repository = client.repository(sources(&repo.file_url(), &["oldstable"]), keyring(&repo));
    assert_fails(
        &client,
        repository.update(&NoProgress),
        &["asked for suite oldstable, but the file is for Suite Some(\"stable\")"],
    );

    // An architecture the suite does not have.
    let options =
        RepositoryOptions::new("arm64", client.cache(), keyring(&repo)).fetch(fast_fetch());
    let repository = Repository::new(sources(&repo.file_url(), &["stable"]), options).unwrap();
    assert_fails(
        &client,
        repository.update(&NoProgress),
        &["no architecture arm64 in this suite (it has: amd64)"],
    );

    // A component the suite does not have.
    let repository = client.repository(
        vec![Source::new(&repo.file_url(), "stable", ["contrib"])],
        keyring(&repo),
    );
    assert_fails(
        &client,
        repository.update(&NoProgress),
        &["lists no Packages index for contrib/binary-amd64"],
    );

    // A suite that does not exist.
    let repository = client.repository(sources(&repo.file_url(), &["nosuch"]), keyring(&repo));
    assert_fails(
        &client,
        repository.update(&NoProgress),
        &["/dists/nosuch/: no InRelease or Release file"],
    );
}

#[test]
fn arm64_and_sources_from_apt_configuration_files() {
    let key = TestKey::generate(35);
    let repo = TestRepo::builder()
        .suite("stable")
        .arches(&["amd64", "arm64"])
        .deb("main", &hello())
        .deb(
            "main",
            &DebBuilder::new("hello", "2.10-3", "arm64").file("/usr/bin/hello", b"arm\n", 0o755),
        )
        .deb("main", &docs())
        .suite("stable-updates")
        .arches(&["amd64", "arm64"])
        .deb("main", &docs())
        .signed_by(&key)
        .build()
        .unwrap();
    let server = TestServer::serve(repo.path()).unwrap();
    let etc = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(etc.path().join("sources.list.d")).unwrap();
    let keyring = repo.keyring().unwrap().display().to_string();
    // One-line: stable with options; deb822: stable-updates, plus a
    // disabled paragraph and a file apt would ignore.
    std::fs::write(
        etc.path().join("sources.list"),
        format!(
            "# the main suite\ndeb [arch=amd64,arm64 signed-by={keyring}] {} stable main\ndeb-src {} stable main\n",
            server.url(),
            server.url()
        ),
    )
    .unwrap();
    std::fs::write(
        etc.path().join("sources.list.d/updates.sources"),
        format!(
            "Types: deb\nURIs: {}\n# comment\nSuites: stable-updates\nComponents: main\nSigned-By: {keyring}\n\n\
             Enabled: no\nTypes: deb\nURIs: http://127.0.0.1:9/\nSuites: broken\nComponents: main\n",
            server.url()
        ),
    )
    .unwrap();
    std::fs::write(
        etc.path().join("sources.list.d/old.list.disabled"),
        "deb http://127.0.0.1:9/ x main\n",
    )
    .unwrap();
    let sources = load_etc_apt(etc.path()).unwrap();
    assert_eq!(sources.len(), 2);
    assert_eq!(sources[0].architectures, ["amd64", "arm64"]);

    let client = Client::new();
    // Only the Signed-By of each source is trusted: the default is empty.
    let options = RepositoryOptions::new(
        "arm64",
        client.cache(),
        Trust::SignedBy {
            default: Keyring::new(),
        },
    )
    .fetch(fast_fetch());
    let repository = Repository::new(sources.clone(), options).unwrap();
    let index = repository.update(&NoProgress).unwrap();
    let packages = resolved(&index, &["hello"]);
    assert_eq!(packages[0].architecture(), "arm64");
    let files = repository.download(&index, &packages, &NoProgress).unwrap();
    let arm = repo.debs().iter().find(|d| d.arch == "arm64").unwrap();
    assert_eq!(sha256_hex(&files[0].1), arm.sha256);

    // Without Signed-By, the (empty) default keyring is used: refused.
    let mut unsigned_by = sources;
    for s in &mut unsigned_by {
        s.signed_by = None;
    }
    let options = RepositoryOptions::new(
        "arm64",
        client.cache(),
        Trust::SignedBy {
            default: Keyring::new(),
        },
    )
    .fetch(fast_fetch());
    let repository = Repository::new(unsigned_by, options).unwrap();
    assert_fails(
        &client,
        repository.update(&NoProgress),
        &["the keyring is empty"],
    );
}

/// The host's real mirror, from its apt configuration (never named in
/// this repository): every configured suite's InRelease verified with the
/// host keyrings, the Packages indices fetched and verified, and three
/// small packages downloaded and checked into a temporary cache.
#[test]
fn e2e_host_mirror() {
    if std::env::var_os("AMI_E2E").is_none() {
        println!("skipped: set AMI_E2E=1 to verify the host's configured mirror");
        return;
    }
    let etc_apt = Path::new("/etc/apt");
    let sources = load_etc_apt(etc_apt).expect("reading the host's apt sources");
    assert!(!sources.is_empty(), "the host has no apt source");
    let arch = std::env::consts::ARCH;
    let arch = match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("unsupported host architecture {other}"),
    };
    let mut default = Keyring::new();
    for file in ami_deb::sources::default_keyring_files(etc_apt).unwrap() {
        default.extend(Keyring::load(&file).unwrap());
    }
    let cache = tempfile::tempdir().unwrap();
    let options =
        RepositoryOptions::new(arch, Cache::new(cache.path()), Trust::SignedBy { default });
    let repository = Repository::new(sources, options).unwrap();
    for source in repository.sources() {
        let release = repository.release(source).unwrap_or_else(|e| panic!("{e}"));
        assert!(!release.signers().is_empty());
        println!(
            "{} {}: signed by {}",
            source.uri,
            source.suite,
            release.signers()[0]
        );
    }
    let index = repository
        .update(&NoProgress)
        .unwrap_or_else(|e| panic!("{e}"));
    println!("{} package records", index.packages().len());
    let mut small: Vec<Package> = [
        "base-files",
        "debian-archive-keyring",
        "netbase",
        "tzdata",
        "hostname",
    ]
    .iter()
    .filter_map(|n| index.packages().candidate(n).cloned())
    .collect();
    small.sort_by_key(|p| p.size().unwrap_or(u64::MAX));
    small.truncate(3);
    assert_eq!(
        small.len(),
        3,
        "fewer than three of the usual small packages are available"
    );
    let files = repository
        .download(&index, &small, &NoProgress)
        .unwrap_or_else(|e| panic!("{e}"));
    for (package, path) in files {
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            package.size().unwrap()
        );
        assert_eq!(sha256_hex(&path), package.sha256().unwrap());
        println!("{package}: {}", path.display());
    }
}

/// apt itself, in an isolated configuration (as root), updates from the
/// test repository over the loopback server, verifying the signature with
/// the generated keyring, then downloads a package with its dependency:
/// an independent check of what the fixtures serve.
#[test]
fn apt_get_accepts_the_test_repository() {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the effective user.
    if std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1)
        != 0
    {
        println!("skipped: apt-get needs root for its isolated update");
        return;
    }
    let key = TestKey::generate(36);
    let repo = signed_repo(&key, true, true);
    let server = TestServer::serve(repo.path()).unwrap();
    let apt = tempfile::tempdir().unwrap();
    let root = apt.path();
    for dir in [
        "etc/apt.conf.d",
        "etc/sources.list.d",
        "etc/preferences.d",
        "etc/trusted.gpg.d",
        "state/lists/partial",
        "cache/archives/partial",
        "log",
    ] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::write(root.join("state/status"), "").unwrap();
    std::fs::write(
        root.join("etc/sources.list"),
        format!(
            "deb [signed-by={}] {} stable main\ndeb [signed-by={}] {} stable-updates main\n",
            repo.keyring().unwrap().display(),
            server.url(),
            repo.keyring().unwrap().display(),
            server.url()
        ),
    )
    .unwrap();
    let r = root.display();
    let config = format!(
        "Dir::Etc \"{r}/etc\";\nDir::Etc::main \"apt.conf\";\nDir::Etc::parts \"apt.conf.d\";\nDir::Etc::sourcelist \"sources.list\";\n\
         Dir::Etc::sourceparts \"sources.list.d\";\nDir::Etc::preferencesparts \"preferences.d\";\nDir::Etc::trustedparts \"trusted.gpg.d\";\n\
         Dir::State \"{r}/state\";\nDir::State::status \"{r}/state/status\";\nDir::Cache \"{r}/cache\";\nDir::Log \"{r}/log\";\n\
         APT::Architecture \"amd64\";\nAPT::Architectures \"amd64\";\nAcquire::Languages \"none\";\nAPT::Sandbox::User \"root\";\n\
         Debug::NoLocking \"true\";\nAcquire::Retries \"0\";\n"
    );
    std::fs::write(root.join("apt.conf"), config).unwrap();
    let run = |args: &[&str]| {
        let output = std::process::Command::new("apt-get")
            .args(args)
            .env("APT_CONFIG", root.join("apt.conf"))
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .unwrap_or_else(|e| panic!("cannot run apt-get: {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "apt-get {args:?} failed:\n{text}");
        text
    };
    let update = run(&["update"]);
    assert!(
        !update.contains("W:") && !update.contains("E:"),
        "apt-get update warned:\n{update}"
    );
    // apt fetched the indices by hash.
    assert!(
        server
            .log()
            .iter()
            .any(|h| h.path.contains("/by-hash/SHA256/") && h.status == 200),
        "{:?}",
        server.log()
    );
    run(&["-y", "--download-only", "install", "hello"]);
    let archives: Vec<String> = std::fs::read_dir(root.join("cache/archives"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".deb"))
        .collect();
    let mut archives = archives;
    archives.sort();
    // apt picks the newer libc6 from stable-updates, as ami does.
    assert_eq!(
        archives,
        ["hello_2.10-3_amd64.deb", "libc6_2.36-9+deb12u4_amd64.deb"]
    );
    for name in &archives {
        let deb = repo
            .debs()
            .iter()
            .find(|d| d.filename.ends_with(name.as_str()))
            .unwrap();
        assert_eq!(
            sha256_hex(&root.join("cache/archives").join(name)),
            deb.sha256
        );
    }
}
