//! `ami boot-test` and its hidden `ami imds-relay` helper.
//!
//! Always: the relay (a real process between pipes and a TCP server), the
//! command line, and the errors that stop a boot test before QEMU starts
//! (no image, no menu.lst, a kernel missing from the image). The IMDS
//! server, the menu.lst parser and the QEMU command line have unit tests in
//! `src/imds.rs` and `src/boottest.rs`.
//!
//! With `AMI_E2E=1` (needs `qemu-system-x86_64`, `ovmf` and
//! `openssh-client`): images that cannot boot fail fast with a clear
//! reason and leave no QEMU behind. [`assert_boot_test_passes`] is the
//! helper for tests that boot real images; with `AMI_BOOT_TEST_IMAGE=PATH`
//! it is run on that image.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ami_core::progress::NoProgress;
use ami_core::{Metadata, Tree};
use ami_ext4::disk::esp::{write_esp, EspOptions};
use ami_ext4::disk::{plan, write_partition_table, DiskIds, Layout, Window, MIB, MIN_ESP_SIZE};
use ami_ext4::{format, FormatOptions, Size};
use common::{ami, assert_failure, assert_success};
use fixtures::e2e_enabled as e2e;
use serde_json::Value;

/// The checks every boot reports, in order.
pub const CHECKS: [&str; 8] = [
    "boot",
    "ssh_login",
    "sudo",
    "password_auth_refused",
    "host_keys",
    "system_running",
    "dpkg_audit",
    "imdsv2_token",
];

/// Runs `ami boot-test IMAGE --json EXTRA...` and asserts that it passed:
/// exit status 0, `passed` true, and for each of the `boots` boots every
/// check of [`CHECKS`] present and passed, the key fetched from the fake
/// IMDS with a session token, and QEMU gone afterwards. Returns the report.
#[allow(dead_code)] // also for the build tests' E2E boots
pub fn assert_boot_test_passes(image: &Path, extra: &[&str]) -> Value {
    let work = tempfile::tempdir().unwrap();
    assert_boot_test_passes_in(image, extra, work.path())
}

/// [`assert_boot_test_passes`] with the work directory (serial logs, IMDS
/// log) kept in `work`.
pub fn assert_boot_test_passes_in(image: &Path, extra: &[&str], work: &Path) -> Value {
    let started = Instant::now();
    let out = ami()
        .arg("boot-test")
        .arg(image)
        .arg("--json")
        .arg("--work")
        .arg(work)
        .args(extra)
        .output()
        .expect("running ami boot-test");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ami boot-test {} failed ({}):\n{stderr}",
        image.display(),
        out.status
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("a JSON report on stdout");
    assert_eq!(report["passed"], true, "{report:#}");
    let boots = report["boots"].as_array().expect("boots").len();
    assert!(boots >= 1);
    let checks = report["checks"].as_array().expect("checks");
    for boot in 1..=boots as u64 {
        for name in CHECKS {
            let row = checks
                .iter()
                .find(|c| c["boot"] == boot && c["name"] == name)
                .unwrap_or_else(|| panic!("no {name} check for boot {boot}: {report:#}"));
            assert_eq!(row["passed"], true, "{name}, boot {boot}: {row}");
        }
    }
    assert!(checks.iter().all(|c| c["passed"] == true));
    let key_with_token = report["imds_requests"]
        .as_array()
        .expect("imds_requests")
        .iter()
        .any(|r| {
            r["path"] == "/latest/meta-data/public-keys/0/openssh-key"
                && r["token"] == "valid"
                && r["status"] == 200
        });
    assert!(key_with_token, "{report:#}");
    assert!(
        qemu_processes_mentioning(work).is_empty(),
        "QEMU still running"
    );
    eprintln!(
        "boot test of {} passed in {:.0} s",
        image.display(),
        started.elapsed().as_secs_f64()
    );
    report
}

/// PIDs of processes whose command line mentions `dir` (QEMU's does: its
/// serial log is there).
fn qemu_processes_mentioning(dir: &Path) -> Vec<u32> {
    let needle = dir.as_os_str().as_encoded_bytes();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline.windows(needle.len()).any(|w| w == needle) {
            found.push(pid);
        }
    }
    found
}

/// An ext4 image of `files` (path, contents) written by `ami mkfs`.
fn ext4_of(dir: &Path, files: &[(&str, &[u8])]) -> std::path::PathBuf {
    let src = dir.join("src");
    for (path, data) in files {
        let p = src.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    std::fs::create_dir_all(&src).unwrap();
    let image = dir.join("root.ext4");
    assert_success(&common::mkfs([src.as_os_str(), image.as_os_str()]));
    image
}

#[test]
fn relay_copies_both_ways_and_writes_nothing_else() {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap().to_string();
    let mut relay = ami()
        .args(["imds-relay", &addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut conn, _) = server.accept().unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut stdin = relay.stdin.take().unwrap();
    stdin
        .write_all(b"PUT /latest/api/token HTTP/1.1\r\n\r\n")
        .unwrap();
    drop(stdin); // the guest closes its side: the server sees EOF
    let mut got = Vec::new();
    conn.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"PUT /latest/api/token HTTP/1.1\r\n\r\n");
    conn.write_all(b"HTTP/1.1 200 OK\r\n\r\ntoken").unwrap();
    drop(conn);
    let out = relay.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, b"HTTP/1.1 200 OK\r\n\r\ntoken");
    assert!(out.stderr.is_empty(), "stderr is the guest's socket too");
}

#[test]
fn relay_to_a_closed_port_exits_silently() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = ami()
        .args(["imds-relay", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
}

#[test]
fn command_line() {
    let help = ami().args(["boot-test", "--help"]).output().unwrap();
    assert_success(&help);
    let text = String::from_utf8_lossy(&help.stdout);
    for opt in [
        "--disk",
        "--imds",
        "--boots",
        "--timeout",
        "--work",
        "--secure-boot",
        "--json",
        "--qemu",
        "--ovmf-dir",
    ] {
        assert!(text.contains(opt), "{opt} in\n{text}");
    }
    let top = ami().arg("--help").output().unwrap();
    let top = String::from_utf8_lossy(&top.stdout);
    assert!(top.contains("boot-test"));
    assert!(!top.contains("imds-relay"), "the relay is hidden");
    for bad in [
        &["--disk", "scsi"][..],
        &["--imds", "disabled"],
        &["--boots", "0"],
        &["--timeout", "0"],
    ] {
        let out = ami()
            .args(["boot-test", "disk.img"])
            .args(bad)
            .output()
            .unwrap();
        assert_failure(&out, 2);
    }
}

#[test]
fn errors_before_booting_are_clear_and_fast() {
    let dir = tempfile::tempdir().unwrap();
    let run = |image: &Path, extra: &[&str]| {
        let started = Instant::now();
        let out = ami()
            .arg("boot-test")
            .arg(image)
            .args(extra)
            .output()
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(30));
        assert!(out.stdout.is_empty());
        assert_failure(&out, 1)
    };
    let err = run(&dir.path().join("nothing.img"), &[]);
    assert!(err.contains("no such image file"), "{err}");

    let junk = dir.path().join("junk.img");
    std::fs::write(&junk, vec![0x55u8; 1 << 20]).unwrap();

    let err = run(&junk, &[]);
    assert!(err.contains("neither an ext4 filesystem"), "{err}");

    let one = tempfile::tempdir().unwrap();
    let no_menu = ext4_of(one.path(), &[("/etc/hostname", b"x\n")]);
    let err = run(&no_menu, &[]);
    assert!(err.contains("/boot/grub/menu.lst"), "{err}");

    let two = tempfile::tempdir().unwrap();
    let missing = ext4_of(
        two.path(),
        &[(
            "/boot/grub/menu.lst",
            b"default 0\ntitle broken\nroot (hd0)\nkernel /boot/vmlinuz-missing root=LABEL=rootfs ro\n",
        )],
    );
    let err = run(&missing, &[]);
    assert!(
        err.contains(
            "menu.lst entry 0 (\"broken\"): kernel /boot/vmlinuz-missing: not found in the image"
        ),
        "{err}"
    );
    let err = run(&missing, &["--secure-boot"]);
    assert!(err.contains("--secure-boot needs a GPT image"), "{err}");

    let three = tempfile::tempdir().unwrap();
    let wrong_root = ext4_of(
        three.path(),
        &[
            (
                "/boot/grub/menu.lst",
                b"default 0\ntitle mbr\nroot (hd0,0)\nkernel /vmlinuz ro\n",
            ),
            ("/vmlinuz", b"kernel"),
        ],
    );
    let err = run(&wrong_root, &[]);
    assert!(err.contains("PV-GRUB needs (hd0)"), "{err}");

    let four = tempfile::tempdir().unwrap();
    let bootable_looking = ext4_of(
        four.path(),
        &[
            (
                "/boot/grub/menu.lst",
                b"default 0\ntitle t\nroot (hd0)\nkernel /vmlinuz ro\n",
            ),
            ("/vmlinuz", b"kernel"),
        ],
    );
    let err = run(
        &bootable_looking,
        &["--qemu", "/nonexistent/qemu-system-x86_64"],
    );
    assert!(
        err.contains("/nonexistent/qemu-system-x86_64 not found: install qemu-system-x86"),
        "{err}"
    );
}

/// A GPT disk whose ESP is empty: the firmware finds nothing to boot.
fn gpt_with_empty_esp(path: &Path) {
    let tree = Tree::new(Metadata::new(0o755));
    let plan = plan(
        Layout::Gpt {
            esp_size: MIN_ESP_SIZE,
        },
        8 * MIB,
        None,
    )
    .unwrap();
    let mut disk = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap();
    disk.set_len(plan.disk_size).unwrap();
    write_partition_table(&mut disk, &plan, &DiskIds::derive(b"boot-test")).unwrap();
    let esp = plan.esp.clone().unwrap();
    write_esp(&mut Window::new(&mut disk, esp), &[], &EspOptions::new(1)).unwrap();
    let len = plan.root.end - plan.root.start;
    format(
        &mut Window::new(&mut disk, plan.root.clone()),
        &tree,
        &FormatOptions::new().size(Size::Bytes(len)),
        &NoProgress,
    )
    .unwrap();
}

#[test]
fn images_that_cannot_boot_fail_fast_and_leave_no_qemu() {
    if !e2e("boot unbootable images in QEMU") {
        return;
    }
    // PV-GRUB path: QEMU starts and refuses the "kernel".
    let dir = tempfile::tempdir().unwrap();
    let image = ext4_of(
        dir.path(),
        &[
            (
                "/boot/grub/menu.lst",
                b"default 0\ntitle garbage\nroot (hd0)\nkernel /boot/vmlinuz-garbage root=LABEL=rootfs ro console=hvc0\n",
            ),
            ("/boot/vmlinuz-garbage", b"this is not a kernel\n"),
        ],
    );
    let work = dir.path().join("work");
    let started = Instant::now();
    let out = ami()
        .arg("boot-test")
        .arg(&image)
        .args(["--json", "--work"])
        .arg(&work)
        .output()
        .unwrap();
    let stderr = assert_failure(&out, 1);
    assert!(started.elapsed() < Duration::from_secs(60), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["passed"], false);
    assert_eq!(
        report["boot"]["cmdline"],
        "root=LABEL=rootfs ro console=hvc0 console=ttyS0"
    );
    let boot = &report["checks"][0];
    assert_eq!(boot["name"], "boot");
    assert_eq!(boot["passed"], false);
    assert!(
        boot["detail"].as_str().unwrap().contains("QEMU exited"),
        "{boot}"
    );
    assert!(stderr.contains("Get System Log"), "{stderr}");
    assert!(qemu_processes_mentioning(&work).is_empty());
    assert!(work.join("serial-1.log").exists());
    assert!(work.join("report.json").exists());

    // UEFI path: the firmware finds nothing and waits forever; the
    // timeout ends it and QEMU is killed.
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    gpt_with_empty_esp(&image);
    let work = dir.path().join("work");
    let started = Instant::now();
    let out = ami()
        .arg("boot-test")
        .arg(&image)
        .args(["--json", "--timeout", "15", "--work"])
        .arg(&work)
        .output()
        .unwrap();
    let stderr = assert_failure(&out, 1);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(60), "{took:?} {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["boot"]["kind"], "uefi");
    let boot = &report["checks"][0];
    assert!(
        boot["detail"]
            .as_str()
            .unwrap()
            .contains("no SSH banner within"),
        "{boot}"
    );
    assert!(report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .skip(1)
        .all(|c| c["passed"] == false));
    assert!(qemu_processes_mentioning(&work).is_empty());
    let serial = std::fs::read_to_string(work.join("serial-1.log")).unwrap_or_default();
    assert!(!serial.is_empty(), "the firmware wrote to the serial log");
    // The image was not modified (snapshot=on).
    let mut again = Vec::new();
    std::fs::File::open(&image)
        .unwrap()
        .read_to_end(&mut again)
        .unwrap();
    let fresh = dir.path().join("fresh.img");
    gpt_with_empty_esp(&fresh);
    assert!(again == std::fs::read(&fresh).unwrap(), "image unchanged");
}

#[test]
fn boot_test_of_a_given_image() {
    if !e2e("boot-test an image (and set AMI_BOOT_TEST_IMAGE=PATH)") {
        return;
    }
    let Some(image) = std::env::var_os("AMI_BOOT_TEST_IMAGE") else {
        eprintln!("skipped: set AMI_BOOT_TEST_IMAGE=PATH to boot-test that image");
        return;
    };
    let extra: Vec<String> = std::env::var("AMI_BOOT_TEST_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    assert_boot_test_passes(Path::new(&image), &extra);
}

/// The main job's images really boot: the default recipe built in the
/// `uefi` layout (GPT, ESP with shim and GRUB, UEFI firmware, NVMe) and in
/// the tutorial's `pvgrub` layout (bare ext4, menu.lst read like PV-GRUB),
/// each boot-tested: SSH login as admin with the key from the fake IMDS
/// (IMDSv2 required), sudo, no password logins, fresh host keys,
/// `systemctl is-system-running` = running, `dpkg --audit` empty. The uefi
/// image boots twice, so its host keys must differ between boots.
#[test]
fn default_recipe_boots_in_both_layouts() {
    if !e2e("build the default recipe in both layouts and boot-test each") {
        return;
    }
    // One package cache for the builds of this test binary.
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ami-e2e-cache");
    let work = tempfile::tempdir().unwrap();
    for (layout, extra) in [("uefi", &["--boots", "2"][..]), ("pvgrub", &[][..])] {
        let out = work.path().join(layout);
        let o = ami()
            .arg("build")
            .args(["--layout", layout, "--out"])
            .arg(&out)
            .arg("--cache")
            .arg(&cache)
            .args(["--source-date-epoch", "1700000000"])
            .output()
            .expect("running ami build");
        assert_success(&o);
        let image = out.join("disk.img");
        if layout == "uefi" {
            // A volume larger than the image, as on EC2 with a bigger root
            // volume: the first boot grows the root partition and ext4.
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&image)
                .unwrap();
            f.set_len(f.metadata().unwrap().len() + (512 << 20))
                .unwrap();
        }
        let logs = work.path().join(format!("{layout}-boot"));
        std::fs::create_dir_all(&logs).unwrap();
        let report = assert_boot_test_passes_in(&image, extra, &logs);
        let boots = report["boots"].as_array().unwrap().len();
        assert_eq!(boots, if layout == "uefi" { 2 } else { 1 }, "{layout}");
        let serial = String::from_utf8_lossy(&std::fs::read(logs.join("serial-1.log")).unwrap())
            .into_owned();
        if layout == "uefi" {
            assert!(
                serial.contains("growroot: grew /dev/nvme0n1p2"),
                "the root was not grown:\n{serial}"
            );
        } else {
            assert!(
                serial.contains("growroot:"),
                "growroot did not run:\n{serial}"
            );
        }
    }
}
