//! End-to-end tests of `ami keys`, `ami bundle` and `ami unbundle`: round
//! trips, the JSON reports, region certificates, and clear errors on bad
//! input that leave nothing behind. (The byte-level format is tested with
//! the real tools in ami-bundle's own tests.)

mod common;

use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{ami, assert_failure, assert_success};

/// A key pair made with `ami keys` in `dir/keys`.
struct Keys {
    key: PathBuf,
    cert: PathBuf,
}

fn keys(dir: &Path) -> Keys {
    let out = ami()
        .args(["keys", "--days", "30", "--out"])
        .arg(dir.join("keys"))
        .output()
        .unwrap();
    assert_success(&out);
    Keys {
        key: dir.join("keys/private-key.pem"),
        cert: dir.join("keys/certificate.pem"),
    }
}

/// Runs `ami bundle` with the test keys, --user 1234-5678-9012 and --arch
/// x86_64 unless `extra` gives them.
fn bundle(image: &Path, keys: &Keys, dest: &Path, extra: &[&str]) -> Output {
    let mut cmd = ami();
    cmd.arg("bundle")
        .arg(image)
        .arg("--cert")
        .arg(&keys.cert)
        .arg("--privatekey")
        .arg(&keys.key)
        .arg("--destination")
        .arg(dest);
    if !extra.contains(&"--user") {
        cmd.args(["--user", "1234-5678-9012"]);
    }
    if !extra.contains(&"--arch") {
        cmd.args(["--arch", "x86_64"]);
    }
    cmd.args(extra).output().unwrap()
}

fn unbundle(manifest: &Path, key: &Path, dest: &Path, extra: &[&str]) -> Output {
    ami()
        .arg("unbundle")
        .arg("--manifest")
        .arg(manifest)
        .arg("--privatekey")
        .arg(key)
        .arg("--destination")
        .arg(dest)
        .args(extra)
        .output()
        .unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).expect("a JSON report on stdout")
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A sparse image of `size` bytes with some data.
fn sparse_image(path: &Path, size: u64) {
    let mut f = File::create(path).unwrap();
    f.set_len(size).unwrap();
    for (i, offset) in [0u64, size / 3, size - 4096].into_iter().enumerate() {
        f.seek(SeekFrom::Start(offset)).unwrap();
        let data: Vec<u8> = (0..4096u32).map(|j| (j * 7 + i as u32) as u8).collect();
        f.write_all(&data).unwrap();
    }
}

#[test]
fn keys_bundle_unbundle_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys(dir.path());
    assert_eq!(
        fs::metadata(&keys.key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let key_pem = fs::read_to_string(&keys.key).unwrap();
    assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let cert_pem = fs::read_to_string(&keys.cert).unwrap();
    assert!(cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));

    let image = dir.path().join("disk.img");
    sparse_image(&image, 40 << 20);
    let dest = dir.path().join("bundle");
    fs::create_dir(&dest).unwrap();
    let out = bundle(
        &image,
        &keys,
        &dest,
        &["--json", "--kernel", "aki-12345678"],
    );
    assert_success(&out);
    let report = json(&out);
    assert_eq!(report["name"], "disk.img");
    assert_eq!(report["image_bytes"], 40 << 20);
    assert_eq!(report["parts"], 1);
    assert_eq!(names(&dest), ["disk.img.manifest.xml", "disk.img.part.0"]);
    let manifest = fs::read_to_string(dest.join("disk.img.manifest.xml")).unwrap();
    assert!(manifest.contains("<user>123456789012</user>"));
    assert!(manifest.contains("<kernel_id>aki-12345678</kernel_id>"));
    assert!(report["digest"]
        .as_str()
        .is_some_and(|d| manifest.contains(d)));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bundled"), "{stderr}");

    let restored = dir.path().join("restored");
    fs::create_dir(&restored).unwrap();
    let out = unbundle(
        &dest.join("disk.img.manifest.xml"),
        &keys.key,
        &restored,
        &["--json"],
    );
    assert_success(&out);
    let report = json(&out);
    assert_eq!(report["signature"], "verified");
    assert_eq!(names(&restored), ["disk.img"]);
    assert!(fs::read(restored.join("disk.img")).unwrap() == fs::read(&image).unwrap());
    assert!(fs::metadata(restored.join("disk.img")).unwrap().blocks() * 512 < 4 << 20);

    // The certificate verifies the signature too.
    let again = dir.path().join("again");
    fs::create_dir(&again).unwrap();
    let cert = keys.cert.to_str().unwrap();
    let out = unbundle(
        &dest.join("disk.img.manifest.xml"),
        &keys.key,
        &again,
        &["--cert", cert],
    );
    assert_success(&out);
}

#[test]
fn prefix_and_region_go_into_the_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys(dir.path());
    let image = dir.path().join("disk.img");
    fs::write(&image, b"one small image").unwrap();
    let dest = dir.path().join("bundle");
    fs::create_dir(&dest).unwrap();
    let out = bundle(
        &image,
        &keys,
        &dest,
        &[
            "--prefix",
            "cn.img",
            "--region",
            "cn-north-1",
            "--block-device-mapping",
            "root=/dev/sda1,ami=sda1",
            "--productcodes",
            "ABC,DEF",
        ],
    );
    assert_success(&out);
    assert_eq!(names(&dest), ["cn.img.manifest.xml", "cn.img.part.0"]);
    let manifest = fs::read_to_string(dest.join("cn.img.manifest.xml")).unwrap();
    assert!(manifest.contains("<name>cn.img</name>"));
    assert!(manifest.contains(
        "<block_device_mapping><mapping><virtual>ami</virtual><device>sda1</device></mapping>\
         <mapping><virtual>root</virtual><device>/dev/sda1</device></mapping></block_device_mapping>"
    ));
    assert!(manifest.contains(
        "<product_codes><product_code>ABC</product_code><product_code>DEF</product_code>"
    ));
    // The China certificate has a 2048-bit key: 256 bytes, 512 hex digits.
    let ec2_key = manifest
        .split("<ec2_encrypted_key algorithm='AES-128-CBC'>")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .unwrap();
    assert_eq!(ec2_key.len(), 512);
    // The tar member carries the prefix as its name.
    let restored = dir.path().join("restored");
    fs::create_dir(&restored).unwrap();
    assert_success(&unbundle(
        &dest.join("cn.img.manifest.xml"),
        &keys.key,
        &restored,
        &[],
    ));
    assert_eq!(
        fs::read(restored.join("cn.img")).unwrap(),
        b"one small image"
    );
}

/// Runs a failing `ami bundle`; returns stderr, and checks that the
/// destination stayed as it was.
fn bundle_fails(image: &Path, keys: &Keys, extra: &[&str], code: i32) -> String {
    let dest = tempfile::tempdir().unwrap();
    fs::write(dest.path().join("unrelated.part.0"), b"x").unwrap();
    let out = bundle(image, keys, dest.path(), extra);
    let stderr = assert_failure(&out, code);
    assert_eq!(names(dest.path()), ["unrelated.part.0"], "{stderr}");
    stderr
}

#[test]
fn bad_bundle_input_gives_clear_errors_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys(dir.path());
    let image = dir.path().join("disk.img");
    fs::write(&image, vec![1u8; 100_000]).unwrap();

    let e = bundle_fails(&image, &keys, &["--user", "12345"], 2);
    assert!(e.contains("12 digits"), "{e}");
    let e = bundle_fails(&image, &keys, &["--arch", "arm64"], 2);
    assert!(e.contains("i386 or x86_64"), "{e}");
    let e = bundle_fails(&image, &keys, &["--prefix", "a/b"], 1);
    assert!(e.contains("contains '/'"), "{e}");
    let e = bundle_fails(&image, &keys, &["--region", "us-gov-east-1"], 1);
    assert!(
        e.contains("no EC2 certificate") && e.contains("--ec2cert"),
        "{e}"
    );
    let e = bundle_fails(&image, &keys, &["--kernel", "aki 1"], 1);
    assert!(e.contains("kernel id"), "{e}");
    let e = bundle_fails(&image, &keys, &["--block-device-mapping", "root"], 2);
    assert!(e.contains("VIRTUAL=DEVICE"), "{e}");

    // Missing or mismatched key and certificate.
    let other = keys_in(&dir.path().join("other"));
    let mismatched = Keys {
        key: other.key.clone(),
        cert: keys.cert.clone(),
    };
    let e = bundle_fails(&image, &mismatched, &[], 1);
    assert!(e.contains("does not belong to the certificate"), "{e}");
    let missing = Keys {
        key: keys.key.clone(),
        cert: dir.path().join("nope.pem"),
    };
    let e = bundle_fails(&image, &missing, &[], 1);
    assert!(e.contains("nope.pem"), "{e}");
    let not_a_key = Keys {
        key: keys.cert.clone(),
        cert: keys.cert.clone(),
    };
    let e = bundle_fails(&image, &not_a_key, &[], 1);
    assert!(e.contains("private key"), "{e}");

    // Empty and too large images.
    let empty = dir.path().join("empty.img");
    File::create(&empty).unwrap();
    let e = bundle_fails(&empty, &keys, &[], 1);
    assert!(e.contains("empty"), "{e}");
    let huge = dir.path().join("huge.img");
    File::create(&huge)
        .unwrap()
        .set_len((10 << 30) + 1)
        .unwrap();
    let e = bundle_fails(&huge, &keys, &[], 1);
    assert!(e.contains("10 GiB"), "{e}");
    let e = bundle_fails(&dir.path().join("missing.img"), &keys, &[], 1);
    assert!(e.contains("missing.img"), "{e}");
}

/// `ami keys` into `dir` (another key pair).
fn keys_in(dir: &Path) -> Keys {
    fs::create_dir_all(dir).unwrap();
    keys(dir)
}

#[test]
fn leftovers_of_another_bundle_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys(dir.path());
    let image = dir.path().join("disk.img");
    fs::write(&image, b"image").unwrap();
    let dest = dir.path().join("bundle");
    fs::create_dir(&dest).unwrap();
    assert_success(&bundle(&image, &keys, &dest, &[]));
    let before = names(&dest);
    let out = bundle(&image, &keys, &dest, &[]);
    let e = assert_failure(&out, 1);
    assert!(
        e.contains("already holds files of a bundle named \"disk.img\""),
        "{e}"
    );
    assert_eq!(names(&dest), before);
    // A stale part alone is enough.
    fs::remove_file(dest.join("disk.img.manifest.xml")).unwrap();
    let e = assert_failure(&bundle(&image, &keys, &dest, &[]), 1);
    assert!(e.contains("disk.img.part.0"), "{e}");
}

#[test]
fn unbundle_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys(dir.path());
    let other = keys_in(&dir.path().join("other"));
    let image = dir.path().join("disk.img");
    fs::write(&image, vec![7u8; 50_000]).unwrap();
    let dest = dir.path().join("bundle");
    fs::create_dir(&dest).unwrap();
    assert_success(&bundle(&image, &keys, &dest, &[]));
    let manifest = dest.join("disk.img.manifest.xml");
    let restored = dir.path().join("restored");
    fs::create_dir(&restored).unwrap();

    // Another key: the signature check fails first, with a hint.
    let e = assert_failure(&unbundle(&manifest, &other.key, &restored, &[]), 1);
    assert!(e.contains("--cert"), "{e}");
    // Without the signature check: the key cannot unwrap.
    let e = assert_failure(
        &unbundle(&manifest, &other.key, &restored, &["--no-signature-check"]),
        1,
    );
    assert!(e.contains("made for another certificate"), "{e}");
    // A tampered manifest.
    let text = fs::read_to_string(&manifest).unwrap();
    fs::write(&manifest, text.replace("x86_64", "i386")).unwrap();
    let e = assert_failure(&unbundle(&manifest, &keys.key, &restored, &[]), 1);
    assert!(e.contains("signature"), "{e}");
    fs::write(&manifest, &text).unwrap();
    // A corrupt part.
    let part = dest.join("disk.img.part.0");
    let mut bytes = fs::read(&part).unwrap();
    bytes[10] ^= 0x40;
    fs::write(&part, &bytes).unwrap();
    let e = assert_failure(&unbundle(&manifest, &keys.key, &restored, &[]), 1);
    assert!(e.contains("disk.img.part.0 is corrupt"), "{e}");
    assert!(names(&restored).is_empty());
}

#[test]
fn keys_never_replace_files() {
    let dir = tempfile::tempdir().unwrap();
    keys(dir.path());
    let before = fs::read(dir.path().join("keys/private-key.pem")).unwrap();
    let out = ami()
        .args(["keys", "--out"])
        .arg(dir.path().join("keys"))
        .output()
        .unwrap();
    let e = assert_failure(&out, 1);
    assert!(e.contains("already exists"), "{e}");
    assert_eq!(
        fs::read(dir.path().join("keys/private-key.pem")).unwrap(),
        before
    );
    let out = ami()
        .args(["keys", "--bits", "1024", "--out"])
        .arg(dir.path().join("k2"))
        .output()
        .unwrap();
    let e = assert_failure(&out, 2);
    assert!(e.contains("2048, 3072 or 4096"), "{e}");
}
