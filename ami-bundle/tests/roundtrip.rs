//! Bundle → unbundle round trips around the part boundaries, dense and
//! sparse, and the errors on bad input (nothing is left behind).

mod common;

use std::fs::{self, File};
use std::io::Cursor;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use ami_bundle::{
    unbundle, unbundle_to_dir, Bundler, DirSink, Error, ImageInfo, MemorySink, PartSink,
    SignatureCheck, PART_SIZE,
};
use ami_core::progress::{NoProgress, Progress, Stage};
use common::*;

fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Bundles `image` in memory and unbundles it again; returns the image,
/// the part sizes and what unbundle reported.
fn round_trip_memory(image: &[u8], seed: u64) -> (Vec<u8>, Vec<u64>) {
    let mut sink = MemorySink::new();
    let bundle = bundler("mem.img")
        .bundle(
            Cursor::new(image),
            &ImageInfo::dense(image.len() as u64),
            &mut sink,
            &mut rng(seed),
            &NoProgress,
        )
        .unwrap();
    let mut out = Cursor::new(Vec::new());
    let unbundled = unbundle(
        &bundle.manifest_xml,
        &user_key(),
        &SignatureCheck::PrivateKey,
        &mut sink,
        &mut out,
        &NoProgress,
    )
    .unwrap();
    assert_eq!(unbundled.name, "mem.img");
    assert_eq!(unbundled.size, image.len() as u64);
    (out.into_inner(), bundle.part_sizes)
}

#[test]
fn one_byte() {
    let (out, parts) = round_trip_memory(&[0x42], 1);
    assert_eq!(out, [0x42]);
    assert_eq!(parts.len(), 1);
}

#[test]
fn exactly_ten_mib_and_one_more_byte() {
    // Incompressible, so that the ciphertext crosses the 10 MiB part
    // boundary.
    for len in [10 << 20, (10 << 20) + 1] {
        let image = noise(len, len as u64);
        let (out, parts) = round_trip_memory(&image, 2);
        assert!(
            out == image,
            "{len}-byte image differs after the round trip"
        );
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], PART_SIZE);
    }
    // Compressible: one part.
    let image: Vec<u8> = (0..10u32 << 20).map(|i| (i / 4096) as u8).collect();
    let (out, parts) = round_trip_memory(&image, 3);
    assert!(out == image);
    assert_eq!(parts.len(), 1);
}

#[test]
fn sparse_few_hundred_mib_through_directories() {
    let src = tempfile::tempdir().unwrap();
    let bundle_dir = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let image = src.path().join("big.img");
    let size = 300 << 20;
    let data: Vec<(u64, Vec<u8>)> = [0u64, 4096, 77 << 20, 150 << 20, (299 << 20) + 12_345]
        .iter()
        .enumerate()
        .map(|(i, &off)| (off, noise(300_000, i as u64)))
        .chain([(size - 1, vec![1])])
        .collect();
    sparse_file(&image, size, &data);
    set_mtime(&image, 1_234_567_890);
    let bundle = bundler("big.img")
        .bundle_file(&image, bundle_dir.path(), &mut rng(4), &NoProgress)
        .unwrap();
    assert_eq!(bundle.manifest.image.size, size);
    assert!(bundle.tar_bytes < 3 << 20, "holes were stored");
    let (path, unbundled) = unbundle_to_dir(
        &bundle_dir.path().join("big.img.manifest.xml"),
        &user_key(),
        &SignatureCheck::Key(user_cert().public_key().clone()),
        bundle_dir.path(),
        out_dir.path(),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(path, out_dir.path().join("big.img"));
    assert!(unbundled.sparse);
    assert_eq!(list(out_dir.path()), ["big.img"]);
    assert_same_file(&path, &image);
    let meta = fs::metadata(&path).unwrap();
    assert!(
        meta.blocks() * 512 < 8 << 20,
        "the unbundled image is not sparse"
    );
    assert_eq!(meta.mtime(), 1_234_567_890);
}

#[test]
fn dense_file_with_zero_runs_unbundles_sparse() {
    let src = tempfile::tempdir().unwrap();
    let bundle_dir = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let image = src.path().join("zeros.img");
    let mut bytes = vec![0u8; 8 << 20];
    bytes[..1000].copy_from_slice(&noise(1000, 5));
    bytes[(8 << 20) - 5000..].copy_from_slice(&noise(5000, 6));
    fs::write(&image, &bytes).unwrap();
    bundler("zeros.img")
        .bundle_file(&image, bundle_dir.path(), &mut rng(5), &NoProgress)
        .unwrap();
    let (path, unbundled) = unbundle_to_dir(
        &bundle_dir.path().join("zeros.img.manifest.xml"),
        &user_key(),
        &SignatureCheck::PrivateKey,
        bundle_dir.path(),
        out_dir.path(),
        &NoProgress,
    )
    .unwrap();
    assert!(!unbundled.sparse);
    assert_eq!(fs::read(&path).unwrap(), bytes);
    assert!(fs::metadata(&path).unwrap().blocks() * 512 < 1 << 20);
}

/// A progress recorder.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<(Stage, &'static str, u64)>>);

impl Progress for Recorder {
    fn begin(&self, stage: Stage, total: Option<u64>) {
        self.0
            .lock()
            .unwrap()
            .push((stage, "begin", total.unwrap_or(0)));
    }
    fn advance(&self, stage: Stage, amount: u64) {
        self.0.lock().unwrap().push((stage, "advance", amount));
    }
    fn end(&self, stage: Stage) {
        self.0.lock().unwrap().push((stage, "end", 0));
    }
}

#[test]
fn progress_counts_image_bytes() {
    let image = noise(3 << 20, 7);
    let progress = Recorder::default();
    let mut sink = MemorySink::new();
    bundler("p.img")
        .bundle(
            Cursor::new(&image),
            &ImageInfo::dense(image.len() as u64),
            &mut sink,
            &mut rng(7),
            &progress,
        )
        .unwrap();
    let events = progress.0.into_inner().unwrap();
    assert_eq!(
        events.first(),
        Some(&(ami_bundle::PROGRESS_STAGE, "begin", 3 << 20))
    );
    assert_eq!(events.last(), Some(&(ami_bundle::PROGRESS_STAGE, "end", 0)));
    let advanced: u64 = events
        .iter()
        .filter(|e| e.1 == "advance")
        .map(|e| e.2)
        .sum();
    assert_eq!(advanced, 3 << 20);
}

#[test]
fn bad_input_is_refused_before_anything_is_written() {
    let src = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let bundle_err = |path: &Path| {
        bundler("x.img")
            .bundle_file(path, dest.path(), &mut rng(1), &NoProgress)
            .unwrap_err()
    };
    // Empty.
    let empty = src.path().join("empty.img");
    File::create(&empty).unwrap();
    assert!(matches!(bundle_err(&empty), Error::EmptyImage));
    // Over 10 GiB.
    let huge = src.path().join("huge.img");
    File::create(&huge)
        .unwrap()
        .set_len(ami_bundle::MAX_IMAGE_SIZE + 1)
        .unwrap();
    assert!(matches!(bundle_err(&huge), Error::ImageTooLarge { size } if size == (10 << 30) + 1));
    // Missing.
    assert!(matches!(
        bundle_err(&src.path().join("nope")),
        Error::ReadImage(_)
    ));
    // A directory.
    assert!(matches!(bundle_err(src.path()), Error::ReadImage(_)));
    assert!(list(dest.path()).is_empty());

    // Options.
    let mismatched = ami_bundle::BundleOptions::new(
        "x.img",
        account(),
        ami_bundle::Arch::I386,
        user_cert(),
        other_key(),
    );
    assert!(matches!(Bundler::new(mismatched), Err(Error::KeyMismatch)));
    for name in ["a/b", "", ".."] {
        assert!(matches!(
            Bundler::new(options(name)),
            Err(Error::InvalidName { .. })
        ));
    }
    assert!(matches!(
        Bundler::new(options("x").kernel_id(Some("aki 1".to_owned()))),
        Err(Error::InvalidValue { .. })
    ));
    assert!(matches!(
        Bundler::new(options("x").product_codes(vec!["A,B".to_owned()])),
        Err(Error::InvalidValue { .. })
    ));
}

#[test]
fn an_image_that_shrinks_leaves_nothing_behind() {
    let dest = tempfile::tempdir().unwrap();
    let mut sink = DirSink::new(dest.path());
    let image = noise(100_000, 9);
    let err = bundler("short.img")
        .bundle(
            Cursor::new(&image),
            &ImageInfo::dense(200_000),
            &mut sink,
            &mut rng(9),
            &NoProgress,
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::ImageChanged { expected: 200_000 }),
        "{err}"
    );
    drop(sink);
    assert!(list(dest.path()).is_empty());
}

#[test]
fn a_failing_sink_stops_the_bundle() {
    struct Failing(MemorySink);
    impl PartSink for Failing {
        fn start(&mut self, name: &str) -> ami_bundle::Result<()> {
            self.0.start(name)
        }
        fn begin_part(&mut self, index: usize) -> ami_bundle::Result<()> {
            if index == 1 {
                return Err(Error::Sink("disk full".into()));
            }
            self.0.begin_part(index)
        }
        fn write(&mut self, data: &[u8]) -> ami_bundle::Result<()> {
            self.0.write(data)
        }
        fn end_part(&mut self) -> ami_bundle::Result<()> {
            self.0.end_part()
        }
        fn commit(&mut self, _: &[String], _: &str, _: &[u8]) -> ami_bundle::Result<()> {
            panic!("committed after an error");
        }
    }
    let image = noise(30_000, 10);
    let err = Bundler::new(options("f.img").part_size(4096))
        .unwrap()
        .bundle(
            Cursor::new(&image),
            &ImageInfo::dense(image.len() as u64),
            &mut Failing(MemorySink::new()),
            &mut rng(10),
            &NoProgress,
        )
        .unwrap_err();
    assert_eq!(err.to_string(), "disk full");
}

/// A bundle in a directory, for the unbundle error tests.
fn bundle_in_dir(image: &[u8]) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = DirSink::new(dir.path());
    let bundle = Bundler::new(options("e.img").part_size(16_384))
        .unwrap()
        .bundle(
            Cursor::new(image),
            &ImageInfo::dense(image.len() as u64),
            &mut sink,
            &mut rng(11),
            &NoProgress,
        )
        .unwrap();
    (dir, bundle.manifest_xml)
}

fn unbundle_err(
    dir: &Path,
    manifest: &str,
    key: &ami_bundle::PrivateKey,
    check: &SignatureCheck,
) -> Error {
    let manifest_path = dir.join("e.img.manifest.xml");
    fs::write(&manifest_path, manifest).unwrap();
    let out = tempfile::tempdir().unwrap();
    let err =
        unbundle_to_dir(&manifest_path, key, check, dir, out.path(), &NoProgress).unwrap_err();
    assert!(
        list(out.path()).is_empty(),
        "unbundle left files behind after: {err}"
    );
    err
}

#[test]
fn unbundle_refuses_bad_bundles_and_leaves_nothing() {
    let image = noise(60_000, 12);
    let (dir, manifest) = bundle_in_dir(&image);
    let key = user_key();
    let check = SignatureCheck::PrivateKey;

    // Another user's key.
    let err = unbundle_err(dir.path(), &manifest, &other_key(), &SignatureCheck::Skip);
    assert!(matches!(err, Error::WrongKey), "{err}");
    let err = unbundle_err(
        dir.path(),
        &manifest,
        &other_key(),
        &SignatureCheck::PrivateKey,
    );
    assert!(matches!(err, Error::BadSignature), "{err}");

    // A manifest changed after signing.
    let tampered = manifest.replace("<architecture>x86_64<", "<architecture>i386<");
    assert!(matches!(
        unbundle_err(dir.path(), &tampered, &key, &check),
        Error::BadSignature
    ));
    // ... which unbundles when the signature is not checked.
    let out = tempfile::tempdir().unwrap();
    let manifest_path = dir.path().join("e.img.manifest.xml");
    fs::write(&manifest_path, &tampered).unwrap();
    unbundle_to_dir(
        &manifest_path,
        &key,
        &SignatureCheck::Skip,
        dir.path(),
        out.path(),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(fs::read(out.path().join("e.img")).unwrap(), image);

    // A corrupt part: named, nothing written.
    let part = dir.path().join("e.img.part.1");
    let original = fs::read(&part).unwrap();
    let mut corrupt = original.clone();
    corrupt[100] ^= 1;
    fs::write(&part, &corrupt).unwrap();
    let err = unbundle_err(dir.path(), &manifest, &key, &check);
    assert!(
        matches!(&err, Error::PartDigest { filename, .. } if filename == "e.img.part.1"),
        "{err}"
    );
    // A missing part.
    fs::remove_file(&part).unwrap();
    let err = unbundle_err(dir.path(), &manifest, &key, &check);
    assert!(
        matches!(&err, Error::ReadPart { filename, .. } if filename == "e.img.part.1"),
        "{err}"
    );
    fs::write(&part, &original).unwrap();
    // A truncated last part (digest fixed up): the padding check fails.
    let last = dir.path().join("e.img.part.3");
    let full = fs::read(&last).unwrap();
    fs::write(&last, &full[..full.len() - 16]).unwrap();
    let fixed = manifest.replace(&sha1sum_hex(&full), &sha1sum_hex(&full[..full.len() - 16]));
    let err = unbundle_err(dir.path(), &fixed, &key, &SignatureCheck::Skip);
    assert!(
        matches!(
            err,
            Error::Decrypt | Error::Gzip(_) | Error::BundledSize { .. }
        ),
        "{err}"
    );
    fs::write(&last, &full).unwrap();
    // A wrong image digest.
    let digest = common::element(&manifest, "digest").to_owned();
    let wrong = manifest.replacen(&digest, &"0".repeat(40), 1);
    let err = unbundle_err(dir.path(), &wrong, &key, &SignatureCheck::Skip);
    assert!(matches!(err, Error::ImageDigest { .. }), "{err}");
    // A wrong size.
    let wrong = manifest.replace("<size>60000</size>", "<size>60001</size>");
    let err = unbundle_err(dir.path(), &wrong, &key, &SignatureCheck::Skip);
    assert!(matches!(err, Error::ImageSize { .. }), "{err}");
    // A part path outside the directory.
    let wrong = manifest.replace("<filename>e.img.part.0<", "<filename>../e.img.part.0<");
    let err = unbundle_err(dir.path(), &wrong, &key, &SignatureCheck::Skip);
    assert!(matches!(err, Error::ReadPart { .. }), "{err}");
    // And the untouched bundle still unbundles.
    let out = tempfile::tempdir().unwrap();
    fs::write(&manifest_path, &manifest).unwrap();
    unbundle_to_dir(
        &manifest_path,
        &key,
        &check,
        dir.path(),
        out.path(),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(fs::read(out.path().join("e.img")).unwrap(), image);
}

fn sha1sum_hex(data: &[u8]) -> String {
    openssl::sha::sha1(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn leftovers_of_another_bundle_are_an_error() {
    let src = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let image = src.path().join("l.img");
    fs::write(&image, noise(1000, 13)).unwrap();
    fs::write(dest.path().join("l.img.part.07"), b"old").unwrap();
    let err = bundler("l.img")
        .bundle_file(&image, dest.path(), &mut rng(13), &NoProgress)
        .unwrap_err();
    assert!(
        matches!(&err, Error::Leftovers { files, .. } if files == &["l.img.part.07"]),
        "{err}"
    );
    assert_eq!(list(dest.path()), ["l.img.part.07"]);
    assert!(err.to_string().contains("l.img.part.07"));
}
