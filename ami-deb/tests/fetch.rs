//! The fetcher on its own: bounded parallelism, which failures are
//! retried and how, limits, progress, `file:` URLs.

use std::time::Duration;

use ami_deb::fetch::{file_url_path, FetchError, FetchOptions, Fetcher};

fn options() -> FetchOptions {
    FetchOptions::default()
        .retries(2)
        .backoff(Duration::from_millis(100), Duration::from_millis(150))
        .timeout(Duration::from_secs(5))
}

#[test]
fn file_urls() {
    assert_eq!(
        file_url_path("file:///srv/repo").unwrap().to_str(),
        Some("/srv/repo")
    );
    assert_eq!(
        file_url_path("file://localhost/srv/a%20b")
            .unwrap()
            .to_str(),
        Some("/srv/a b")
    );
    assert_eq!(
        file_url_path("file:/srv/repo").unwrap().to_str(),
        Some("/srv/repo")
    );
    assert_eq!(file_url_path("file://otherhost/srv"), None);
    assert_eq!(file_url_path("http://x/"), None);

    let dir = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(options());
    let missing = format!("file://{}/missing", dir.path().display());
    let err = fetcher.get(&missing, 10).unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert_eq!(err.to_string(), format!("{missing}: not found"));
    std::fs::write(dir.path().join("big"), vec![7u8; 100]).unwrap();
    let err = fetcher
        .get(&format!("file://{}/big", dir.path().display()), 99)
        .unwrap_err();
    assert!(
        matches!(err, FetchError::TooLarge { limit: 99, .. }),
        "{err}"
    );
    let err = fetcher.get("ftp://127.0.0.1/x", 10).unwrap_err();
    assert!(matches!(err, FetchError::UnsupportedScheme { .. }), "{err}");
}

#[cfg(not(feature = "http"))]
#[test]
fn http_needs_the_feature() {
    let err = Fetcher::new(options())
        .get("http://127.0.0.1:9/x", 10)
        .unwrap_err();
    assert!(
        err.to_string().contains("built without its `http` feature"),
        "{err}"
    );
}

#[cfg(feature = "http")]
mod http {
    use std::sync::Mutex;
    use std::time::Instant;

    use ami_core::progress::{NoProgress, Progress, Stage};
    use ami_deb::cache::{Cache, Expected};
    use fixtures::http::{Fault, TestServer};
    use sha2::{Digest, Sha256};

    use super::*;

    fn expected(data: &[u8]) -> Expected {
        let hex: String = Sha256::digest(data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Expected::new(data.len() as u64, &hex).unwrap()
    }

    #[derive(Default)]
    struct Recorder {
        events: Mutex<Vec<String>>,
        bytes: Mutex<u64>,
    }

    impl Progress for Recorder {
        fn begin(&self, stage: Stage, total: Option<u64>) {
            self.events
                .lock()
                .unwrap()
                .push(format!("begin {} {total:?}", stage.name()));
        }
        fn advance(&self, stage: Stage, amount: u64) {
            assert_eq!(stage, Stage::Download);
            *self.bytes.lock().unwrap() += amount;
        }
        fn end(&self, stage: Stage) {
            self.events
                .lock()
                .unwrap()
                .push(format!("end {}", stage.name()));
        }
    }

    struct Site {
        dir: tempfile::TempDir,
        server: TestServer,
    }

    fn site(files: &[(&str, Vec<u8>)]) -> Site {
        let dir = tempfile::tempdir().unwrap();
        for (name, data) in files {
            std::fs::write(dir.path().join(name), data).unwrap();
        }
        let server = TestServer::serve(dir.path()).unwrap();
        Site { dir, server }
    }

    #[test]
    fn downloads_run_in_parallel_but_bounded() {
        let files: Vec<(String, Vec<u8>)> = (0..8)
            .map(|i| (format!("f{i}"), fixtures::pattern(i, 5000)))
            .collect();
        let named: Vec<(&str, Vec<u8>)> =
            files.iter().map(|(n, d)| (n.as_str(), d.clone())).collect();
        let site = site(&named);
        for (name, _) in &files {
            site.server.fault(
                &format!("/{name}"),
                Fault::Delay(Duration::from_millis(300)),
                1,
            );
        }
        let items: Vec<(String, Expected)> = files
            .iter()
            .map(|(n, d)| (format!("{}/{n}", site.server.url()), expected(d)))
            .collect();
        let cache_dir = tempfile::tempdir().unwrap();
        let fetcher = Fetcher::new(options().parallel(4));
        let recorder = Recorder::default();
        let start = Instant::now();
        let paths = fetcher
            .fetch_all(&items, &Cache::new(cache_dir.path()), &recorder)
            .unwrap();
        let elapsed = start.elapsed();
        // 8 files of 300 ms, 4 at a time: two rounds.
        assert!(
            elapsed >= Duration::from_millis(600),
            "{elapsed:?}: more than 4 at once"
        );
        assert!(
            elapsed < Duration::from_millis(2000),
            "{elapsed:?}: not parallel"
        );
        for (path, (_, data)) in paths.iter().zip(&files) {
            assert_eq!(&std::fs::read(path).unwrap(), data);
        }
        assert_eq!(*recorder.bytes.lock().unwrap(), 8 * 5000);
        assert_eq!(
            *recorder.events.lock().unwrap(),
            ["begin download Some(40000)", "end download"]
        );
        drop(site.dir);
    }

    #[test]
    fn retries_back_off_exponentially() {
        let site = site(&[("f", b"data".to_vec())]);
        site.server.fault("/f", Fault::Status(502), 2);
        let fetcher = Fetcher::new(options());
        let start = Instant::now();
        assert_eq!(
            fetcher
                .get(&format!("{}/f", site.server.url()), 100)
                .unwrap(),
            b"data"
        );
        // Waited 100 ms, then 150 ms (doubled, capped).
        assert!(
            start.elapsed() >= Duration::from_millis(250),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(site.server.hits("/f"), 3);
    }

    #[test]
    fn permanent_failures_are_not_retried() {
        let site = site(&[("f", b"data".to_vec())]);
        let fetcher = Fetcher::new(options());
        let url = format!("{}/missing", site.server.url());
        let err = fetcher.get(&url, 100).unwrap_err();
        assert_eq!(err.to_string(), format!("{url}: not found"));
        assert_eq!(site.server.hits("/missing"), 1);

        site.server.fault("/f", Fault::Status(403), 5);
        let err = fetcher
            .get(&format!("{}/f", site.server.url()), 100)
            .unwrap_err();
        assert!(
            matches!(err, FetchError::Status { status: 403, .. }),
            "{err}"
        );
        assert_eq!(site.server.hits("/f"), 1);

        // More bytes than allowed: refused at once, from Content-Length.
        site.server.clear_faults();
        let err = fetcher
            .get(&format!("{}/f", site.server.url()), 3)
            .unwrap_err();
        assert!(
            matches!(err, FetchError::TooLarge { limit: 3, .. }),
            "{err}"
        );
    }

    #[test]
    fn after_a_failure_no_new_download_starts() {
        let site = site(&[
            ("a", b"a".to_vec()),
            ("b", b"b".to_vec()),
            ("c", b"c".to_vec()),
        ]);
        let items = vec![
            (format!("{}/a", site.server.url()), expected(b"a")),
            (format!("{}/missing", site.server.url()), expected(b"m")),
            (format!("{}/c", site.server.url()), expected(b"c")),
        ];
        let cache_dir = tempfile::tempdir().unwrap();
        let fetcher = Fetcher::new(options().parallel(1));
        let err = fetcher
            .fetch_all(&items, &Cache::new(cache_dir.path()), &NoProgress)
            .unwrap_err();
        assert!(err.is_not_found(), "{err}");
        assert_eq!(site.server.hits("/a"), 1);
        assert_eq!(site.server.hits("/c"), 0);
    }

    #[test]
    fn a_stalled_connection_times_out_and_is_retried() {
        let site = site(&[("f", b"data".to_vec())]);
        site.server
            .fault("/f", Fault::Delay(Duration::from_secs(3)), 5);
        let fetcher = Fetcher::new(options().timeout(Duration::from_millis(200)).retries(1));
        let start = Instant::now();
        let err = fetcher
            .get(&format!("{}/f", site.server.url()), 100)
            .unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert!(
            err.is_transient() || matches!(err, FetchError::GaveUp { attempts: 2, .. }),
            "{err}"
        );
        assert!(
            err.to_string().starts_with("giving up after 2 attempts"),
            "{err}"
        );
    }
}
