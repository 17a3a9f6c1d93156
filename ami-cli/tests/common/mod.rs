//! Helpers for the end-to-end tests of the `ami` binary: running it, and
//! checking images with the e2fsprogs tools (`e2fsck`, `dumpe2fs`,
//! `debugfs`), which CI installs.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A command running the `ami` binary under test, with `SOURCE_DATE_EPOCH`
/// removed from its environment so that tests control it.
pub fn ami() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ami"));
    cmd.env_remove("SOURCE_DATE_EPOCH");
    cmd
}

/// Runs `ami mkfs ARGS...` and returns its output (whatever the status).
pub fn mkfs<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    ami().arg("mkfs").args(args).output().expect("running ami")
}

/// Asserts that `out` succeeded, showing its stderr if not.
pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "ami failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts that `out` failed with exit status `code` and returns its stderr.
pub fn assert_failure(out: &Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit status {code}, got {}; stderr:\n{stderr}",
        out.status
    );
    stderr
}

/// The path of an e2fsprogs (or other system) tool: found on `PATH` or in
/// the sbin directories, which an unprivileged user's `PATH` may lack.
/// Panics with an explanation if it is not installed.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "{name} not found: these tests need e2fsprogs (`apt-get install e2fsprogs`; \
         `bash .ci/run` installs everything the tests need)"
    );
}

/// Runs a tool with `TZ=UTC` (so printed dates do not depend on the host)
/// and returns its output.
pub fn run_tool(name: &str, args: &[&std::ffi::OsStr]) -> Output {
    Command::new(tool(name))
        .args(args)
        .env("TZ", "UTC")
        .env("LC_ALL", "C")
        .output()
        .unwrap_or_else(|e| panic!("running {name}: {e}"))
}

/// The oracle gate: `e2fsck -fn IMAGE` must exit 0 and print nothing but
/// its version banner, the five "Pass N: ..." headers and the summary line
/// ("LABEL: N/M files (...), N/M blocks"). Anything else (a fix it would
/// make, a warning) fails the test, with the full output.
pub fn assert_fsck_clean(image: &Path) {
    let out = run_tool("e2fsck", &["-fn".as_ref(), image.as_os_str()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = || format!("e2fsck -fn {}:\n{stdout}{stderr}", image.display());
    assert_eq!(out.status.code(), Some(0), "{}", report());
    let mut passes = Vec::new();
    let mut summaries = 0;
    for line in stdout.lines().chain(stderr.lines()) {
        if line.starts_with("e2fsck ") && line.ends_with(')') {
            continue; // "e2fsck 1.47.0 (5-Feb-2023)"
        }
        if let Some(rest) = line.strip_prefix("Pass ") {
            passes.push(rest.chars().next().unwrap_or(' '));
            continue;
        }
        if is_summary_line(line) {
            summaries += 1;
            continue;
        }
        panic!("unexpected line {line:?} in {}", report());
    }
    assert_eq!(passes, ['1', '2', '3', '4', '5'], "{}", report());
    assert_eq!(summaries, 1, "{}", report());
}

/// "NAME: 11/2048 files (0.0% non-contiguous), 1234/8192 blocks"
fn is_summary_line(line: &str) -> bool {
    let Some((_, rest)) = line.rsplit_once(": ") else {
        return false;
    };
    let mut parts = rest.split(' ');
    let ratio = |s: Option<&str>| {
        s.and_then(|s| s.split_once('/')).is_some_and(|(a, b)| {
            a.bytes().all(|c| c.is_ascii_digit()) && b.bytes().all(|c| c.is_ascii_digit())
        })
    };
    ratio(parts.next())
        && parts.next() == Some("files")
        && rest.contains("non-contiguous),")
        && rest.ends_with(" blocks")
}

/// The superblock fields `dumpe2fs -h` prints, by name ("Block size",
/// "Filesystem UUID", ...), with surrounding spaces trimmed.
pub fn dumpe2fs(image: &Path) -> BTreeMap<String, String> {
    let out = run_tool("dumpe2fs", &["-h".as_ref(), image.as_os_str()]);
    assert!(
        out.status.success(),
        "dumpe2fs -h {} failed:\n{}",
        image.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// A field of `dumpe2fs -h`, panicking with the list of fields if absent.
pub fn field<'a>(fields: &'a BTreeMap<String, String>, name: &str) -> &'a str {
    fields
        .get(name)
        .unwrap_or_else(|| panic!("no {name:?} in dumpe2fs output: {fields:#?}"))
}

/// The output of `debugfs -R "stat PATH" IMAGE`.
pub fn debugfs_stat(image: &Path, path: &str) -> String {
    let request = format!("stat {path}");
    let out = run_tool(
        "debugfs",
        &["-R".as_ref(), request.as_ref(), image.as_os_str()],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains("Inode:"),
        "debugfs -R {request:?} {} failed:\n{stdout}{}",
        image.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Owner and group of `path` in the image, from `debugfs stat`.
pub fn owner(image: &Path, path: &str) -> (u32, u32) {
    let stat = debugfs_stat(image, path);
    let number_after = |key: &str| -> u32 {
        let at = stat
            .find(key)
            .unwrap_or_else(|| panic!("no {key:?} in debugfs stat:\n{stat}"));
        stat[at + key.len()..]
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("bad {key:?} in debugfs stat:\n{stat}"))
    };
    (number_after("User:"), number_after("Group:"))
}

/// The names in `dir`, sorted.
pub fn list_dir(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Whether the tests run as root (some cases need it, others behave
/// differently under it).
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // A new file belongs to the effective user.
    let file = tempfile::NamedTempFile::new().expect("creating a temporary file");
    file.as_file().metadata().expect("stat").uid() == 0
}

/// The name e2fsprogs tools take for the root filesystem of a disk image:
/// the path itself for a bare filesystem, `PATH?offset=BYTES` for one in a
/// partition (found with the project's probe).
pub fn root_fs_spec(disk: &Path) -> PathBuf {
    let mut file = std::fs::File::open(disk).unwrap();
    let found = ami_ext4::disk::probe::probe(&mut file).unwrap();
    let root = found.root.expect("a root filesystem in the image");
    if root.start == 0 {
        disk.to_path_buf()
    } else {
        PathBuf::from(format!("{}?offset={}", disk.display(), root.start))
    }
}
