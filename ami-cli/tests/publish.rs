//! End-to-end tests of `ami upload-bundle`, `ami register` and `ami
//! deregister` against moto's server on loopback (`AMI_E2E=1`), with a
//! fault-injecting proxy in between, and boto3 as the independent client
//! that reads back what ami wrote.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{ami, assert_failure, assert_success};
use fixtures::faultproxy::{Fault, FaultProxy, Outcome, Rule};
use fixtures::moto::{self, MotoServer};

/// `ami ARGS...` with fake credentials for the endpoint.
fn ami_aws(endpoint: &str, args: &[&str]) -> Output {
    ami()
        .args(args)
        .args(["--endpoint-url", endpoint, "--region", moto::REGION])
        .env("AWS_ACCESS_KEY_ID", moto::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", moto::SECRET_KEY)
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("running ami")
}

/// Runs the boto3 checker and parses its JSON.
fn check(endpoint: &str, args: &[&str]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/aws_check.py");
    let out = Command::new(std::env::var("AMI_PYTHON").unwrap_or_else(|_| "python3".into()))
        .arg(script)
        .arg(endpoint)
        .args(args)
        .output()
        .expect("running python3");
    assert!(
        out.status.success(),
        "aws_check.py {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from aws_check.py")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A bundle of a 21 MiB image (three parts) made with `ami keys` and `ami
/// bundle`; returns the manifest path.
fn make_bundle(dir: &Path) -> PathBuf {
    let keys = dir.join("keys");
    assert_success(
        &ami()
            .args(["keys", "--out"])
            .arg(&keys)
            .output()
            .expect("ami keys"),
    );
    let image = dir.join("disk.img");
    // Incompressible (xorshift64), so the bundle has three 10 MiB parts.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let data: Vec<u8> = (0..21u32 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    std::fs::write(&image, data).unwrap();
    let out_dir = dir.join("bundle");
    std::fs::create_dir(&out_dir).unwrap();
    assert_success(
        &ami()
            .arg("bundle")
            .arg(&image)
            .arg("--cert")
            .arg(keys.join("certificate.pem"))
            .arg("--privatekey")
            .arg(keys.join("private-key.pem"))
            .args(["--user", "123456789012", "--arch", "x86_64", "--level", "1"])
            .arg("--destination")
            .arg(&out_dir)
            .output()
            .expect("ami bundle"),
    );
    out_dir.join("disk.img.manifest.xml")
}

/// SHA-1 through the system's sha1sum (an independent implementation).
fn sha1_hex(data: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("sha1sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha1sum");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// The local bundle files: name → SHA-1.
fn local_files(manifest: &Path) -> BTreeMap<String, String> {
    let dir = manifest.parent().unwrap();
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            (name, sha1_hex(&std::fs::read(e.path()).unwrap()))
        })
        .collect()
}

/// The form fields of the logged EC2 request with this action.
fn ec2_form(proxy: &FaultProxy, action: &str) -> BTreeMap<String, String> {
    let entry = proxy
        .log()
        .into_iter()
        .rev()
        .find(|l| l.action.as_deref() == Some(action))
        .unwrap_or_else(|| panic!("no {action} request in the proxy log"));
    let body = String::from_utf8(entry.body).unwrap();
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 3 <= b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn upload_register_deregister_instance_store_bundle() {
    if !fixtures::e2e_enabled("upload, register and deregister a bundle on moto") {
        return;
    }
    let moto = MotoServer::start().expect("starting moto");
    let proxy = FaultProxy::start(moto.addr()).expect("starting the proxy");
    let endpoint = proxy.endpoint();
    let dir = tempfile::tempdir().unwrap();
    let manifest = make_bundle(dir.path());
    let local = local_files(&manifest);
    assert_eq!(local.len(), 4, "3 parts and the manifest: {local:?}");

    // Throttle one part twice and fail another once with a 500: the SDK's
    // retries must carry the upload through.
    proxy.add_rule(
        Rule::new("disk.img.part.1", Fault::s3_error(503, "SlowDown"))
            .method("PUT")
            .times(2),
    );
    proxy.add_rule(
        Rule::new("disk.img.part.2", Fault::s3_error(500, "InternalError"))
            .method("PUT")
            .times(1),
    );
    let out = ami_aws(
        &endpoint,
        &[
            "upload-bundle",
            "--bucket",
            "ami-test-bucket/images/debian",
            "--manifest",
            manifest.to_str().unwrap(),
        ],
    );
    assert_success(&out);
    let location = stdout(&out);
    assert_eq!(
        location,
        "ami-test-bucket/images/debian/disk.img.manifest.xml"
    );

    // Every object is in S3 with the same bytes.
    let objects = check(
        &moto.endpoint(),
        &["objects", "ami-test-bucket", "images/debian/"],
    );
    let remote: BTreeMap<String, String> = objects
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.strip_prefix("images/debian/").unwrap().to_owned(),
                v["sha1"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(remote, local);

    // The wire: each PUT carried Content-MD5 and the aws-exec-read ACL
    // (moto accepts the header but records only the owner grant), the
    // faulted parts were retried, and the manifest went last.
    let puts: Vec<_> = proxy
        .log()
        .into_iter()
        .filter(|l| l.method == "PUT" && l.target.contains("/images/debian/"))
        .collect();
    let injected = puts
        .iter()
        .filter(|l| matches!(l.outcome, Outcome::Injected(_)))
        .count();
    assert_eq!(injected, 3, "{puts:#?}");
    let forwarded: Vec<_> = puts
        .iter()
        .filter(|l| matches!(l.outcome, Outcome::Forwarded(200)))
        .collect();
    assert_eq!(forwarded.len(), 4, "{puts:#?}");
    assert!(
        forwarded
            .last()
            .unwrap()
            .target
            .contains("/disk.img.manifest.xml"),
        "the manifest must be uploaded last: {forwarded:#?}"
    );

    // Register it (paravirtual, as the tutorial's instance-store AMI).
    let out = ami_aws(
        &endpoint,
        &[
            "register",
            "--name",
            "debian-bookworm-instance-store",
            "--manifest-location",
            &location,
            "--arch",
            "x86_64",
            "--kernel-id",
            "aki-919dcaf8",
        ],
    );
    assert_success(&out);
    let ami_id = stdout(&out);
    assert!(
        ami_id.starts_with("ami-") && !ami_id.contains(char::is_whitespace),
        "only the id on stdout: {ami_id:?}"
    );
    let form = ec2_form(&proxy, "RegisterImage");
    assert_eq!(form["ImageLocation"], location);
    assert_eq!(form["Architecture"], "x86_64");
    assert_eq!(form["VirtualizationType"], "paravirtual");
    assert_eq!(form["KernelId"], "aki-919dcaf8");
    assert_eq!(form["RootDeviceName"], "/dev/sda1");
    assert_eq!(form["ImdsSupport"], "v2.0");
    assert!(!form.contains_key("EnaSupport"), "{form:?}");
    assert!(!form.contains_key("BootMode"), "{form:?}");
    let images = check(&moto.endpoint(), &["image", &ami_id]);
    assert_eq!(
        images["images"][0]["name"],
        "debian-bookworm-instance-store"
    );

    // Deregister with the bundle: the AMI and every object are gone.
    let out = ami_aws(
        &endpoint,
        &[
            "deregister",
            &ami_id,
            "--delete-bundle",
            "--manifest-location",
            &location,
            "--json",
        ],
    );
    assert_success(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["deleted_objects"].as_array().unwrap().len(), 4);
    assert_eq!(
        check(&moto.endpoint(), &["image", &ami_id])["images"],
        serde_json::json!([])
    );
    let objects = check(&moto.endpoint(), &["objects", "ami-test-bucket", "images/"]);
    assert_eq!(objects, serde_json::json!({}));
}

#[test]
fn bucket_without_acls_is_refused_before_any_upload() {
    if !fixtures::e2e_enabled("check the bucket ACL setting on moto") {
        return;
    }
    let moto = MotoServer::start().expect("starting moto");
    let dir = tempfile::tempdir().unwrap();
    let manifest = make_bundle(dir.path());
    check(
        &moto.endpoint(),
        &["make-bucket", "enforced-bucket", "BucketOwnerEnforced"],
    );
    let out = ami_aws(
        &moto.endpoint(),
        &[
            "upload-bundle",
            "--bucket",
            "enforced-bucket",
            "--manifest",
            manifest.to_str().unwrap(),
        ],
    );
    let err = assert_failure(&out, 1);
    assert!(
        err.contains("ACLs disabled") && err.contains("BucketOwnerPreferred"),
        "{err}"
    );
    let objects = check(&moto.endpoint(), &["objects", "enforced-bucket", ""]);
    assert_eq!(objects, serde_json::json!({}));

    // A damaged part is caught before anything is sent.
    let part = manifest.parent().unwrap().join("disk.img.part.1");
    let mut data = std::fs::read(&part).unwrap();
    data[100] ^= 1;
    std::fs::write(&part, data).unwrap();
    let out = ami_aws(
        &moto.endpoint(),
        &[
            "upload-bundle",
            "--bucket",
            "fresh-bucket",
            "--manifest",
            manifest.to_str().unwrap(),
        ],
    );
    let err = assert_failure(&out, 1);
    assert!(err.contains("disk.img.part.1 has SHA-1"), "{err}");
}

#[test]
fn register_refuses_contradictions_without_calling_aws() {
    // No server: these must fail before any request.
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("root.img");
    let tree_dir = dir.path().join("tree");
    std::fs::create_dir_all(tree_dir.join("boot/grub")).unwrap();
    std::fs::write(tree_dir.join("boot/grub/menu.lst"), "default 0\n").unwrap();
    assert_success(&common::mkfs([
        tree_dir.to_str().unwrap(),
        image.to_str().unwrap(),
    ]));
    let endpoint = "http://127.0.0.1:9";
    let register = |extra: &[&str]| {
        let mut args = vec![
            "register",
            "--name",
            "test-image",
            "--snapshot-id",
            "snap-0123456789abcdef0",
            "--image",
            image.to_str().unwrap(),
            "--max-attempts",
            "1",
        ];
        args.extend_from_slice(extra);
        ami_aws(endpoint, &args)
    };
    // A bare filesystem has no boot loader: HVM is refused.
    let err = assert_failure(&register(&[]), 1);
    assert!(err.contains("no boot loader"), "{err}");
    // UEFI without an ESP.
    let err = assert_failure(&register(&["--boot-mode", "uefi"]), 1);
    assert!(
        err.contains("no boot loader") || err.contains("EFI system partition"),
        "{err}"
    );
    // Paravirtual needs a kernel id.
    let err = assert_failure(&register(&["--virtualization-type", "paravirtual"]), 1);
    assert!(err.contains("--kernel-id"), "{err}");
    // Paravirtual with a kernel id passes the checks and then fails on the
    // unreachable endpoint, naming the operation.
    let err = assert_failure(&register(&["--kernel-id", "aki-919dcaf8"]), 1);
    assert!(err.contains("RegisterImage failed"), "{err}");
}

/// Reads a snapshot back with the boto3 EBS client into `out` (`size`
/// bytes); returns its JSON report (block indices, checksum).
fn read_snapshot(endpoint: &str, snapshot: &str, out: &Path, size: u64) -> serde_json::Value {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../ami-bundle/tests/ebs_read_snapshot.py");
    let res = Command::new(std::env::var("AMI_PYTHON").unwrap_or_else(|_| "python3".into()))
        .arg(script)
        .args(["--endpoint", endpoint, "--snapshot", snapshot, "--out"])
        .arg(out)
        .args(["--size", &size.to_string()])
        .output()
        .expect("running python3");
    assert!(
        res.status.success(),
        "ebs_read_snapshot.py failed:\n{}",
        String::from_utf8_lossy(&res.stderr)
    );
    serde_json::from_slice(&res.stdout).expect("JSON from ebs_read_snapshot.py")
}

/// A host directory with a PV-GRUB menu, a kernel module index listing
/// ena, a 3 MiB file of noise and an empty file.
fn pv_tree(dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("boot/grub")).unwrap();
    std::fs::write(
        tree.join("boot/grub/menu.lst"),
        "default 0\ntimeout 1\ntitle Debian\nroot (hd0)\nkernel /vmlinuz root=LABEL=rootfs ro\n",
    )
    .unwrap();
    let modules = tree.join("usr/lib/modules/6.1.0-test");
    std::fs::create_dir_all(&modules).unwrap();
    std::fs::write(
        modules.join("modules.dep"),
        "kernel/drivers/net/ethernet/amazon/ena/ena.ko:\n",
    )
    .unwrap();
    let mut x = 0x1234_5678_9ABC_DEF1u64;
    let noise: Vec<u8> = (0..3u32 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(tree.join("noise"), noise).unwrap();
    std::fs::write(tree.join("empty"), b"").unwrap();
    tree
}

#[test]
fn snapshot_with_block_map_then_publish_and_clean_up() {
    if !fixtures::e2e_enabled("snapshot and publish images on moto") {
        return;
    }
    let moto = MotoServer::start().expect("starting moto");
    let proxy = FaultProxy::start(moto.addr()).expect("starting the proxy");
    let endpoint = proxy.endpoint();
    let dir = tempfile::tempdir().unwrap();
    let tree = pv_tree(dir.path());
    let image = dir.path().join("root.img");
    let out = common::mkfs([
        tree.to_str().unwrap(),
        image.to_str().unwrap(),
        "--size",
        "64M",
        "--json",
    ]);
    assert_success(&out);
    let map_path = dir.path().join("root.json");
    std::fs::write(&map_path, &out.stdout).unwrap();
    let map: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let size = std::fs::metadata(&image).unwrap().len();
    assert_eq!(size, 64 << 20);

    // The 512 KiB blocks the writer's map touches, computed here.
    let mut expected: Vec<u64> = map["allocated"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            let (s, e) = (r[0].as_u64().unwrap(), r[1].as_u64().unwrap());
            s / 524_288..e.div_ceil(524_288)
        })
        .collect();
    expected.sort_unstable();
    expected.dedup();
    assert!(!expected.is_empty() && (expected.len() as u64) < size / 524_288);

    // Throttle two blocks once each: retried within the budget.
    proxy.add_rule(
        Rule::new("/blocks/", Fault::throttling())
            .method("PUT")
            .times(2),
    );
    let out = ami_aws(
        &endpoint,
        &[
            "snapshot",
            image.to_str().unwrap(),
            "--block-map",
            map_path.to_str().unwrap(),
            "--description",
            "ami test",
            "--tag",
            "Name=ami-test",
            "--json",
        ],
    );
    assert_success(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], "completed");
    assert_eq!(report["volume_size_gib"], 1);
    assert_eq!(
        report["blocks_sent"].as_u64().unwrap(),
        expected.len() as u64
    );
    let snapshot = report["snapshot_id"].as_str().unwrap().to_owned();
    let puts = proxy.forwarded(Some("PUT"), "/blocks/");
    assert_eq!(
        puts,
        expected.len(),
        "one PutSnapshotBlock per allocated block"
    );

    // Another client reads it back: the same blocks, the same bytes.
    let copy = dir.path().join("copy.img");
    let back = read_snapshot(&moto.endpoint(), &snapshot, &copy, size);
    let indices: Vec<u64> = back["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap())
        .collect();
    assert_eq!(indices, expected);
    assert!(
        std::fs::read(&copy).unwrap() == std::fs::read(&image).unwrap(),
        "the snapshot differs from the image"
    );
    assert_eq!(back["aggregate_checksum"], report["checksum"]);

    // Without a map: every non-zero block, and it says so.
    let out = ami_aws(&endpoint, &["snapshot", image.to_str().unwrap(), "--json"]);
    assert_success(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("skipping all-zero blocks"), "{stderr}");
    let nonzero: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(nonzero["blocks_sent"].as_u64().unwrap() <= expected.len() as u64);
    assert!(nonzero["zero_blocks_skipped"].as_u64().unwrap() > 0);

    // Publish (snapshot + register) as paravirtual: every field on the wire.
    let out = ami_aws(
        &endpoint,
        &[
            "publish",
            image.to_str().unwrap(),
            "--block-map",
            map_path.to_str().unwrap(),
            "--name",
            "debian-pv-ebs",
            "--kernel-id",
            "aki-919dcaf8",
            "--root-volume-size",
            "2",
            "--ephemeral",
            "/dev/sdb=ephemeral0",
        ],
    );
    assert_success(&out);
    let ami_id = stdout(&out);
    assert!(ami_id.starts_with("ami-"), "{ami_id:?}");
    let form = ec2_form(&proxy, "RegisterImage");
    assert_eq!(form["Architecture"], "x86_64");
    assert_eq!(form["VirtualizationType"], "paravirtual");
    assert_eq!(form["KernelId"], "aki-919dcaf8");
    assert_eq!(form["RootDeviceName"], "/dev/sda1");
    assert_eq!(form["BlockDeviceMapping.1.DeviceName"], "/dev/sda1");
    assert!(form["BlockDeviceMapping.1.Ebs.SnapshotId"].starts_with("snap-"));
    assert_eq!(form["BlockDeviceMapping.1.Ebs.VolumeType"], "gp3");
    assert_eq!(form["BlockDeviceMapping.1.Ebs.VolumeSize"], "2");
    assert_eq!(form["BlockDeviceMapping.1.Ebs.DeleteOnTermination"], "true");
    assert_eq!(form["BlockDeviceMapping.2.DeviceName"], "/dev/sdb");
    assert_eq!(form["BlockDeviceMapping.2.VirtualName"], "ephemeral0");
    assert_eq!(form["ImdsSupport"], "v2.0");
    assert!(!form.contains_key("EnaSupport") && !form.contains_key("BootMode"));

    // Deregister with its snapshots: the AMI and the snapshots EC2 lists
    // in its block device mappings are gone. (moto's RegisterImage keeps
    // only the name and description and maps a snapshot of its own, so
    // that is the one deleted here; the mapping sent is checked above on
    // the wire.)
    let described = check(&moto.endpoint(), &["image", &ami_id]);
    let mapped: Vec<String> = described["images"][0]["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    assert!(!mapped.is_empty());
    let out = ami_aws(
        &endpoint,
        &["deregister", &ami_id, "--delete-snapshots", "--json"],
    );
    assert_success(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["deleted_snapshots"], serde_json::json!(mapped));
    let mut query = vec!["snapshots", snapshot.as_str()];
    query.extend(mapped.iter().map(String::as_str));
    let left = check(&moto.endpoint(), &query);
    assert_eq!(left["snapshots"], serde_json::json!([snapshot]));
    assert_eq!(
        check(&moto.endpoint(), &["image", &ami_id])["images"],
        serde_json::json!([])
    );
}

/// A GPT disk (ESP + root with the ena module index) made with the
/// library, for HVM registration. Returns its block map in the form
/// `ami build` writes (`image`, `image_bytes`, `allocated`).
fn uefi_disk(path: &Path, ena: bool) -> serde_json::Value {
    use ami_core::progress::NoProgress;
    use ami_core::{FileData, Metadata, Node, Tree};
    use ami_ext4::disk::esp::{write_esp, EspFile, EspOptions};
    use ami_ext4::disk::{plan, write_partition_table, DiskIds, Layout, Window, MIB, MIN_ESP_SIZE};
    use ami_ext4::{format, FormatOptions, Size};

    let mut tree = Tree::new(Metadata::new(0o755));
    let dir = tree
        .create_dir_all(b"/usr/lib/modules/6.1.0-test", Metadata::new(0o755))
        .unwrap();
    tree.add(
        dir,
        b"modules.dep",
        Node::file(
            FileData::from_bytes(if ena {
                b"kernel/drivers/net/ethernet/amazon/ena/ena.ko:\n".to_vec()
            } else {
                b"kernel/drivers/net/virtio_net.ko:\n".to_vec()
            }),
            Metadata::new(0o644),
        ),
    )
    .unwrap();
    let plan = plan(
        Layout::Gpt {
            esp_size: MIN_ESP_SIZE,
        },
        16 * MIB,
        None,
    )
    .unwrap();
    let mut disk = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .unwrap();
    disk.set_len(plan.disk_size).unwrap();
    write_partition_table(&mut disk, &plan, &DiskIds::derive(b"test")).unwrap();
    let mut esp = Window::new(&mut disk, plan.esp.clone().unwrap());
    let files = [EspFile::new(
        "EFI/BOOT/BOOTX64.EFI",
        b"MZ not really".to_vec(),
    )];
    write_esp(&mut esp, &files, &EspOptions::new(7).assume_zeroed(true)).unwrap();
    let len = plan.root.end - plan.root.start;
    let options = FormatOptions::new().label("rootfs").size(Size::Bytes(len));
    let report = format(
        &mut Window::new(&mut disk, plan.root.clone()),
        &tree,
        &options,
        &NoProgress,
    )
    .unwrap();
    let mut allocated = plan.table_ranges();
    allocated.push(plan.esp.clone().unwrap());
    allocated.extend(ami_ext4::disk::disk_byte_ranges(
        &report.allocated,
        plan.root.start,
    ));
    serde_json::json!({
        "image": path.file_name().unwrap().to_str().unwrap(),
        "image_bytes": plan.disk_size,
        "allocated": allocated.iter().map(|r| [r.start, r.end]).collect::<Vec<_>>(),
    })
}

#[test]
fn publish_uefi_image_as_hvm_with_derived_boot_mode() {
    if !fixtures::e2e_enabled("publish an HVM image on moto") {
        return;
    }
    let moto = MotoServer::start().expect("starting moto");
    let proxy = FaultProxy::start(moto.addr()).expect("starting the proxy");
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    let map = uefi_disk(&image, true);
    // build.json beside the image: its allocated blocks are sent (the GPT
    // ends mid host block: still recognised as the map's).
    std::fs::write(dir.path().join("build.json"), map.to_string()).unwrap();

    // --no-ena-support is fine, a PV kernel id is a contradiction.
    let out = ami_aws(
        &proxy.endpoint(),
        &[
            "publish",
            image.to_str().unwrap(),
            "--name",
            "x-hvm",
            "--kernel-id",
            "aki-1",
        ],
    );
    let err = assert_failure(&out, 1);
    assert!(err.contains("PV-GRUB reads /boot/grub/menu.lst"), "{err}");
    assert_eq!(
        proxy.log().len(),
        0,
        "nothing may be sent before the checks pass"
    );

    let out = ami_aws(
        &proxy.endpoint(),
        &[
            "publish",
            image.to_str().unwrap(),
            "--name",
            "debian-uefi (test)",
            "--tpm-support",
            "--json",
        ],
    );
    assert_success(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("block map") && !stderr.contains("skipping"),
        "{stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["boot_mode"], "uefi");
    let expected: std::collections::BTreeSet<u64> = map["allocated"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r[0].as_u64().unwrap() / 524_288..r[1].as_u64().unwrap().div_ceil(524_288))
        .collect();
    assert_eq!(
        report["blocks_sent"].as_u64().unwrap(),
        expected.len() as u64
    );
    let form = ec2_form(&proxy, "RegisterImage");
    assert_eq!(form["Name"], "debian-uefi (test)");
    assert_eq!(form["VirtualizationType"], "hvm");
    assert_eq!(form["BootMode"], "uefi");
    assert_eq!(form["EnaSupport"], "true");
    assert_eq!(form["SriovNetSupport"], "simple");
    assert_eq!(form["ImdsSupport"], "v2.0");
    assert_eq!(form["TpmSupport"], "v2.0");
    assert_eq!(form["RootDeviceName"], "/dev/xvda");
    assert_eq!(form["BlockDeviceMapping.1.DeviceName"], "/dev/xvda");
    assert_eq!(form["Architecture"], "x86_64");
    assert_eq!(report["image_id"].as_str().unwrap(), {
        let images = check(
            &moto.endpoint(),
            &["image", report["image_id"].as_str().unwrap()],
        );
        images["images"][0]["id"].as_str().unwrap().to_owned()
    });

    // Legacy BIOS asked for an image without BIOS boot code: refused.
    let out = ami_aws(
        &proxy.endpoint(),
        &[
            "publish",
            image.to_str().unwrap(),
            "--name",
            "x-bios",
            "--boot-mode",
            "legacy-bios",
        ],
    );
    let err = assert_failure(&out, 1);
    assert!(err.contains("needs BIOS boot code"), "{err}");

    // ENA support on an image without the ena driver: refused, unless
    // --no-ena-support.
    let no_ena = dir.path().join("no-ena.img");
    uefi_disk(&no_ena, false);
    let out = ami_aws(
        &proxy.endpoint(),
        &["publish", no_ena.to_str().unwrap(), "--name", "x-noena"],
    );
    let err = assert_failure(&out, 1);
    assert!(err.contains("no ena driver"), "{err}");
}

#[test]
fn keys_upload_registers_the_certificate_with_iam() {
    if !fixtures::e2e_enabled("upload a signing certificate to moto's IAM") {
        return;
    }
    let moto = MotoServer::start().expect("starting moto");
    check(&moto.endpoint(), &["make-user", "bundler"]);
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let out = ami_aws(
        &moto.endpoint(),
        &[
            "keys",
            "--out",
            keys.to_str().unwrap(),
            "--upload",
            "--iam-user",
            "bundler",
        ],
    );
    assert_success(&out);
    let id = stdout(&out);
    let certs = check(&moto.endpoint(), &["signing-certs", "bundler"]);
    assert_eq!(certs["certificates"][0]["id"], id.as_str());
    assert_eq!(certs["certificates"][0]["status"], "Active");
    let local = std::fs::read_to_string(keys.join("certificate.pem")).unwrap();
    assert_eq!(
        certs["certificates"][0]["body"].as_str().unwrap().trim(),
        local.trim()
    );

    // An unknown user: the files stay, the error says how to retry.
    let keys2 = dir.path().join("keys2");
    let out = ami_aws(
        &moto.endpoint(),
        &[
            "keys",
            "--out",
            keys2.to_str().unwrap(),
            "--upload",
            "--iam-user",
            "nobody",
        ],
    );
    let err = assert_failure(&out, 1);
    assert!(err.contains("UploadSigningCertificate failed"), "{err}");
    assert!(err.contains("upload-signing-certificate"), "{err}");
    assert!(keys2.join("certificate.pem").is_file() && keys2.join("private-key.pem").is_file());
}
