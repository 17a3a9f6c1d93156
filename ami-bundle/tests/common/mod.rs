//! Helpers shared by the integration tests: test keys, bundlers, images
//! with holes, and the external tools used as oracles (GNU tar, gzip,
//! openssl, sha1sum), which must be installed.

#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use ami_bundle::{AccountId, Arch, BundleOptions, Bundler, Certificate, PrivateKey};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// A file of `tests/data`.
pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

pub fn user_key() -> PrivateKey {
    PrivateKey::from_pem(&fs::read(data("user-key.pem")).unwrap()).unwrap()
}

pub fn user_cert() -> Certificate {
    Certificate::from_pem(&fs::read(data("user-cert.pem")).unwrap()).unwrap()
}

pub fn other_key() -> PrivateKey {
    PrivateKey::from_pem(&fs::read(data("other-key.pem")).unwrap()).unwrap()
}

pub fn other_cert() -> Certificate {
    Certificate::from_pem(&fs::read(data("other-cert.pem")).unwrap()).unwrap()
}

pub fn account() -> AccountId {
    "123456789012".parse().unwrap()
}

/// Options for bundle `name` with the user test key.
pub fn options(name: &str) -> BundleOptions {
    BundleOptions::new(name, account(), Arch::X86_64, user_cert(), user_key())
}

pub fn bundler(name: &str) -> Bundler {
    Bundler::new(options(name)).unwrap()
}

pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// Pseudo-random, poorly compressible bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Creates a file of `size` bytes at `path` with `data` written at the
/// given offsets and holes elsewhere.
pub fn sparse_file(path: &Path, size: u64, data: &[(u64, Vec<u8>)]) {
    let mut f = File::create(path).unwrap();
    f.set_len(size).unwrap();
    for (offset, bytes) in data {
        f.seek(SeekFrom::Start(*offset)).unwrap();
        f.write_all(bytes).unwrap();
    }
    f.sync_all().unwrap();
}

/// Sets a file's mtime.
pub fn set_mtime(path: &Path, secs: u64) {
    let f = File::options().write(true).open(path).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .unwrap();
}

/// The path of a system tool; panics with an explanation if missing.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/bin", "/bin"].map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "{name} not found: the format tests use GNU tar, gzip, coreutils and the openssl \
         command as oracles (`apt-get install tar gzip coreutils openssl`)"
    );
}

/// Runs a tool, asserting success; returns its output.
pub fn run(name: &str, args: &[&std::ffi::OsStr], stdin: Option<&Path>) -> Output {
    let mut cmd = Command::new(tool(name));
    cmd.args(args).env("LC_ALL", "C");
    if let Some(path) = stdin {
        cmd.stdin(File::open(path).unwrap());
    } else {
        cmd.stdin(Stdio::null());
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {name}: {e}"));
    assert!(
        out.status.success(),
        "{name} {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `sha1sum FILE`, the hex digest.
pub fn sha1sum(path: &Path) -> String {
    let out = run("sha1sum", &[path.as_os_str()], None);
    String::from_utf8(out.stdout).unwrap()[..40].to_owned()
}

/// Bytes of two files are equal (without loading big files at once).
pub fn assert_same_file(a: &Path, b: &Path) {
    use std::io::Read;
    let (mut fa, mut fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    assert_eq!(
        fa.metadata().unwrap().len(),
        fb.metadata().unwrap().len(),
        "{} and {} differ in size",
        a.display(),
        b.display()
    );
    let mut ba = vec![0u8; 1 << 20];
    let mut bb = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            break;
        }
        fb.read_exact(&mut bb[..n]).unwrap();
        assert!(
            ba[..n] == bb[..n],
            "{} and {} differ in the MiB at {offset}",
            a.display(),
            b.display()
        );
        offset += n as u64;
    }
}

/// Hex text to bytes.
pub fn unhex(text: &str) -> Vec<u8> {
    assert!(text.len() & 1 == 0, "odd hex length");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The signed bytes of a manifest, cut out with plain string search (an
/// implementation independent of the crate's).
pub fn signed_bytes(manifest: &str) -> String {
    let cut = |open: &str, close: &str| {
        let start = manifest.find(open).expect("open tag");
        let end = manifest.find(close).expect("close tag") + close.len();
        manifest[start..end].to_owned()
    };
    cut("<machine_configuration>", "</machine_configuration>") + &cut("<image>", "</image>")
}

/// The text of the first element `name` in a manifest.
pub fn element<'a>(manifest: &'a str, name: &str) -> &'a str {
    let open = manifest.find(&format!("<{name}")).expect("element");
    let start = manifest[open..].find('>').unwrap() + open + 1;
    let end = manifest[start..].find(&format!("</{name}>")).unwrap() + start;
    &manifest[start..end]
}
