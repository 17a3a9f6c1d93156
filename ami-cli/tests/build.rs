//! End-to-end tests of `ami build` against a signed test repository with a
//! small synthetic package set (including a fake kernel) served on the
//! loopback interface: the image is e2fsck-clean, holds the project's files
//! with the right owners and modes, is byte-identical across two builds,
//! and `--lock` reproduces it; a package with a maintainer script nobody
//! reviewed makes the build fail, naming it. With `AMI_E2E=1`, one real
//! build of the embedded default recipe from the host's mirror, whose
//! maintainer scripts are all emulated (every package configured).

mod common;

use std::fs::File;
use std::path::Path;
use std::process::{Command, Output};

use ami_ext4::disk::probe::probe;
use ami_ext4::disk::Window;
use ami_ext4::reader::Ext4Reader;
use common::*;
use fixtures::deb::DebBuilder;
use fixtures::http::TestServer;
use fixtures::repo::{TestKey, TestRepo};

const GROUPS: &[(&str, u32)] = &[
    ("root", 0),
    ("adm", 4),
    ("tty", 5),
    ("disk", 6),
    ("lp", 7),
    ("kmem", 15),
    ("dialout", 20),
    ("cdrom", 24),
    ("floppy", 25),
    ("tape", 26),
    ("sudo", 27),
    ("audio", 29),
    ("video", 44),
    ("shadow", 42),
    ("staff", 50),
    ("nogroup", 65534),
];

fn trivial(name: &str) -> DebBuilder {
    DebBuilder::new(name, "1.0-1", "amd64").file(
        &format!("/usr/share/doc/{name}/README"),
        name.as_bytes(),
        0o644,
    )
}

fn repo(key: &TestKey) -> TestRepo {
    let group: String = GROUPS
        .iter()
        .map(|(n, g)| format!("{n}:*:{g}:\n"))
        .collect();
    TestRepo::builder()
        .suite("stable")
        .deb(
            "main",
            &DebBuilder::new("base-files", "12.4", "amd64")
                .field("Essential", "yes")
                .field("Priority", "required")
                .file("/etc/debian_version", b"12.4\n", 0o644)
                .file("/etc/skel/.bashrc", b"# ~/.bashrc\n", 0o644)
                .file("/etc/skel/.profile", b"# ~/.profile\n", 0o644),
        )
        .deb(
            "main",
            &DebBuilder::new("base-passwd", "3.6.1", "amd64")
                .field("Essential", "yes")
                .field("Priority", "required")
                .file(
                    "/usr/share/base-passwd/passwd.master",
                    b"root:*:0:0:root:/root:/bin/bash\nnobody:*:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
                    0o644,
                )
                .file("/usr/share/base-passwd/group.master", group.as_bytes(), 0o644),
        )
        .deb(
            "main",
            &DebBuilder::new("sudo", "1.9.13p3-1", "amd64")
                .file("/usr/bin/sudo", b"#!/bin/sh\n", 0o4755)
                .conffile("/etc/sudoers", b"@includedir /etc/sudoers.d\n"),
        )
        // A library whose trigger file only activates ldconfig: accounted
        // for without review.
        .deb(
            "main",
            &trivial("libfoo1")
                .field("Priority", "important")
                .triggers("activate-noawait ldconfig\n"),
        )
        // Not requested by RECIPE: only the recipe of the unreviewed test
        // adds it.
        .deb(
            "main",
            &trivial("custom-tool").postinst(CUSTOM_POSTINST),
        )
        .deb(
            "main",
            &DebBuilder::new("openssh-server", "1:9.2p1-2", "amd64")
                .file("/usr/sbin/sshd", b"sshd", 0o755)
                // A package that ships a host key: the build must drop it.
                .file("/etc/ssh/ssh_host_rsa_key", b"SECRET", 0o600)
                .file("/etc/ssh/ssh_host_rsa_key.pub", b"ssh-rsa AAAA", 0o644),
        )
        .deb("main", &trivial("wget"))
        .deb("main", &trivial("ifupdown"))
        .deb("main", &trivial("isc-dhcp-client"))
        .deb("main", &trivial("makedev"))
        .deb(
            "main",
            &DebBuilder::new("linux-image-6.1.0-test-cloud-amd64", "6.1.0-1", "amd64")
                .file("/boot/vmlinuz-6.1.0-test-cloud-amd64", &[0x4d; 4096], 0o644)
                .file("/boot/config-6.1.0-test-cloud-amd64", b"CONFIG_EXT4_FS=y\n", 0o644)
                .file(
                    "/lib/modules/6.1.0-test-cloud-amd64/kernel/drivers/net/ena.ko",
                    b"\x7fELF module",
                    0o644,
                )
                // Module metadata as a kernel package ships it (no
                // modules.order: depmod is not run on this fake module);
                // the initramfs reads it.
                .file(
                    "/lib/modules/6.1.0-test-cloud-amd64/modules.dep",
                    b"kernel/drivers/net/ena.ko:\n",
                    0o644,
                )
                .file(
                    "/lib/modules/6.1.0-test-cloud-amd64/modules.builtin",
                    b"kernel/fs/ext4/ext4.ko\nkernel/drivers/nvme/host/nvme.ko\n",
                    0o644,
                ),
        )
        // The boot packages: read for their files, never installed.
        .deb(
            "main",
            &DebBuilder::new("busybox-static", "1:1.35.0-4", "amd64").file(
                "/bin/busybox",
                b"\x7fELF static busybox",
                0o755,
            ),
        )
        .deb(
            "main",
            &DebBuilder::new("shim-signed", "1.40", "amd64").file(
                "/usr/lib/shim/shimx64.efi.signed",
                b"MZ shim",
                0o644,
            ),
        )
        .deb(
            "main",
            &DebBuilder::new("grub-efi-amd64-signed", "1+2.06", "amd64").file(
                "/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
                b"MZ grub",
                0o644,
            ),
        )
        .deb(
            "main",
            &DebBuilder::new("linux-image-cloud-amd64", "6.1.0-1", "amd64")
                .depends("linux-image-6.1.0-test-cloud-amd64"),
        )
        .signed_by(key)
        .build()
        .unwrap()
}

/// The postinst of `custom-tool`, which nobody has reviewed.
const CUSTOM_POSTINST: &str = "#!/bin/sh\nset -e\nuseradd --system custom\n";

const RECIPE: &str = r#"
source_date_epoch = 1700000000

[debian]
suite = "stable"

[system]
hostname = "testbox"

[disk]
layout = "pvgrub"
size = "fit+30%"
ephemeral = true

[[files]]
path = "/etc/motd"
content = "built by ami\n"
mode = "0600"
owner = "admin"
group = "adm"
"#;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn build(
    recipe: &Path,
    url: &str,
    keyring: &Path,
    cache: &Path,
    out: &Path,
    extra: &[&str],
) -> Output {
    ami()
        .arg("build")
        .arg(recipe)
        .args([
            "--mirror",
            url,
            "--keyring",
            s(keyring),
            "--cache",
            s(cache),
            "--out",
            s(out),
        ])
        .args(extra)
        .output()
        .expect("running ami")
}

struct Image(Ext4Reader<Window<File>>);

impl Image {
    /// The root filesystem of a disk image, whatever its layout.
    fn open(path: &Path) -> Image {
        let mut file = File::open(path).unwrap();
        let found = probe(&mut file).unwrap();
        let root = found.root.expect("a root filesystem in the image");
        Image(Ext4Reader::new(Window::new(file, root)).unwrap())
    }
    fn text(&mut self, path: &str) -> String {
        String::from_utf8(self.0.read_path(path.as_bytes()).unwrap()).unwrap()
    }
    /// (permission bits, uid, gid)
    fn owner_mode(&mut self, path: &str) -> (u16, u32, u32) {
        let ino = self
            .0
            .lookup(path.as_bytes())
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let m = self.0.metadata(ino).unwrap();
        (m.mode & 0o7777, m.uid, m.gid)
    }
    fn exists(&mut self, path: &str) -> bool {
        self.0.lookup(path.as_bytes()).is_ok()
    }
    /// The target of the symlink `path`.
    fn link(&mut self, path: &str) -> String {
        let ino = self
            .0
            .lookup(path.as_bytes())
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let target = self
            .0
            .read_link(ino)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        String::from_utf8(target).unwrap()
    }
}

#[test]
fn builds_a_reproducible_configured_image() {
    let key = TestKey::generate(61);
    let repo = repo(&key);
    let server = TestServer::serve(repo.path()).unwrap();
    let keyring = repo.keyring().unwrap();
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let recipe = work.path().join("recipe.toml");
    std::fs::write(&recipe, RECIPE).unwrap();
    let out1 = work.path().join("out1");

    let out = build(&recipe, &server.url(), keyring, &cache, &out1, &["--json"]);
    assert_success(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for stage in ["resolve", "unpack", "configure", "write", "done"] {
        assert!(stderr.contains(stage), "no {stage} stage in:\n{stderr}");
    }
    assert!(stderr.contains("packages configured: 11 of 11"), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out1.join("build.json")).unwrap()).unwrap();
    assert_eq!(json["image_sha256"], on_disk["image_sha256"]);
    assert_eq!(json["layout"], "pvgrub");
    assert_eq!(json["partition_table"], "none");
    assert_eq!(json["kernel_version"], "6.1.0-test-cloud-amd64");
    assert_eq!(json["source_date_epoch"], 1_700_000_000);
    assert_eq!(json["packages_configured"], 11);
    assert_eq!(json["packages_unpacked"], 0);
    assert_eq!(json["unreviewed"], serde_json::json!([]));
    assert_eq!(json["first_boot"], serde_json::json!([]));
    assert_eq!(
        json["emulated"],
        serde_json::json!({ "libfoo1": ["triggers"] })
    );
    assert_eq!(json["removed_host_keys"], 2);
    let pkgs = json["packages"].as_array().unwrap();
    let sudo = pkgs.iter().find(|p| p["name"] == "sudo").unwrap();
    assert_eq!(sudo["version"], "1.9.13p3-1");
    assert_eq!(
        sudo["sha256"].as_str().unwrap(),
        repo.deb("sudo").unwrap().sha256
    );
    assert_eq!(json["block_map_sha256"].as_str().unwrap().len(), 64);

    let image = out1.join("disk.img");
    assert_eq!(
        std::fs::metadata(&image).unwrap().len(),
        json["image_bytes"].as_u64().unwrap()
    );
    assert_fsck_clean(&root_fs_spec(&image));

    let mut img = Image::open(&image);
    assert_eq!(img.text("/etc/hostname"), "testbox\n");
    assert!(img.text("/etc/hosts").contains("127.0.1.1\ttestbox\n"));
    let fstab = img.text("/etc/fstab");
    assert!(fstab.contains("LABEL=rootfs\t/\text4\tdefaults,discard,errors=remount-ro\t0\t1"));
    assert!(fstab.contains("/dev/xvdb\t/mnt\tauto\tdefaults,nofail\t0\t2"));
    assert!(img
        .text("/etc/network/interfaces")
        .contains("auto eth0\niface eth0 inet dhcp\n"));
    assert!(img
        .text("/etc/passwd")
        .contains("admin:x:1000:1000::/home/admin:/bin/bash\n"));
    assert!(img.text("/etc/group").contains("sudo:x:27:admin\n"));
    assert_eq!(img.owner_mode("/etc/shadow"), (0o640, 0, 42));
    assert_eq!(img.owner_mode("/home/admin"), (0o700, 1000, 1000));
    assert_eq!(img.owner_mode("/home/admin/.bashrc"), (0o644, 1000, 1000));
    assert_eq!(img.owner_mode("/etc/sudoers.d/admin"), (0o440, 0, 0));
    assert_eq!(
        img.text("/etc/sudoers.d/admin"),
        "admin ALL=(ALL) NOPASSWD:ALL\n"
    );
    assert_eq!(img.owner_mode("/usr/bin/sudo"), (0o4755, 0, 0));
    assert!(img
        .text("/etc/ssh/sshd_config.d/ami.conf")
        .contains("PasswordAuthentication no\n"));
    assert!(!img.exists("/etc/ssh/ssh_host_rsa_key"));
    assert!(!img.exists("/etc/ssh/ssh_host_rsa_key.pub"));
    assert_eq!(img.owner_mode("/etc/prep-instance"), (0o755, 0, 0));
    assert!(img.exists("/etc/systemd/system/multi-user.target.wants/prep-instance.service"));
    assert_eq!(img.owner_mode("/dev/console"), (0o600, 0, 5));
    assert_eq!(img.owner_mode("/dev/null"), (0o666, 0, 0));
    assert_eq!(img.text("/etc/machine-id"), "");
    assert_eq!(img.owner_mode("/etc/motd"), (0o600, 1000, 4));
    let menu = img.text("/boot/grub/menu.lst");
    assert!(menu.contains(
        "kernel /boot/vmlinuz-6.1.0-test-cloud-amd64 root=LABEL=rootfs ro console=ttyS0 console=hvc0 net.ifnames=0\n"
    ), "{menu}");
    assert!(img.exists("/usr/lib/modules/6.1.0-test-cloud-amd64/kernel/drivers/net/ena.ko"));
    // Every package is configured in the dpkg database.
    let status = img.text("/var/lib/dpkg/status");
    assert_eq!(
        status.matches("\nStatus: install ok installed\n").count(),
        11,
        "{status}"
    );
    assert!(!status.contains("unpacked"), "{status}");
    assert!(img.exists("/var/lib/dpkg/info/libfoo1.triggers"));
    let info = img.0.superblock_info();
    drop(img);
    let _ = info;

    // Same recipe, same epoch: byte-identical.
    let out2 = work.path().join("out2");
    assert_success(&build(&recipe, &server.url(), keyring, &cache, &out2, &[]));
    assert!(
        std::fs::read(out1.join("disk.img")).unwrap()
            == std::fs::read(out2.join("disk.img")).unwrap(),
        "two builds differ"
    );
    assert_eq!(
        std::fs::read(out1.join("ami.lock")).unwrap(),
        std::fs::read(out2.join("ami.lock")).unwrap()
    );

    // From the lock: the same image.
    let out3 = work.path().join("out3");
    let lock = out1.join("ami.lock");
    assert_success(&build(
        &recipe,
        &server.url(),
        keyring,
        &cache,
        &out3,
        &["--lock", s(&lock)],
    ));
    assert!(
        std::fs::read(out1.join("disk.img")).unwrap()
            == std::fs::read(out3.join("disk.img")).unwrap(),
        "the lock rebuild differs"
    );

    // A lock whose hash does not match the repository fails.
    let text = std::fs::read_to_string(&lock).unwrap();
    let sha = &repo.deb("sudo").unwrap().sha256;
    let bad = work.path().join("bad.lock");
    std::fs::write(&bad, text.replace(sha.as_str(), &"0".repeat(64))).unwrap();
    let out = build(
        &recipe,
        &server.url(),
        keyring,
        &cache,
        &work.path().join("out4"),
        &["--lock", s(&bad)],
    );
    let err = assert_failure(&out, 1);
    assert!(err.contains("differs from the lock"), "{err}");
    assert!(!work.path().join("out4/disk.img").exists());
}

#[test]
fn unreviewed_script_fails_the_build_unless_left_to_first_boot() {
    let key = TestKey::generate(62);
    let repo = repo(&key);
    let server = TestServer::serve(repo.path()).unwrap();
    let work = tempfile::tempdir().unwrap();
    let recipe = work.path().join("recipe.toml");
    std::fs::write(
        &recipe,
        format!("{RECIPE}\n[packages]\nextra = [\"custom-tool\"]\n"),
    )
    .unwrap();
    let out_dir = work.path().join("out");
    let out = build(
        &recipe,
        &server.url(),
        repo.keyring().unwrap(),
        &work.path().join("cache"),
        &out_dir,
        &[],
    );
    let err = assert_failure(&out, 1);
    let sha = {
        use sha2::Digest;
        let d = sha2::Sha256::digest(CUSTOM_POSTINST.as_bytes());
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    assert!(
        err.contains(&format!("custom-tool postinst sha256 {sha}")),
        "{err}"
    );
    assert!(err.contains("not been reviewed"), "{err}");
    assert!(err.contains("--allow-unreviewed-first-boot"), "{err}");
    // Only the unreviewed script is listed.
    assert!(!err.contains("libfoo1"), "{err}");
    assert!(!out_dir.join("disk.img").exists());
    assert!(!out_dir.join("build.json").exists());

    // By opt-in, the package is left unpacked and configured at first boot.
    let out = build(
        &recipe,
        &server.url(),
        repo.keyring().unwrap(),
        &work.path().join("cache"),
        &out_dir,
        &["--allow-unreviewed-first-boot", "--json"],
    );
    assert_success(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("warning: custom-tool postinst (sha256 {sha})")),
        "{stderr}"
    );
    assert!(stderr.contains("packages configured: 11 of 12"), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["packages_configured"], 11);
    assert_eq!(json["packages_unpacked"], 1);
    assert_eq!(
        json["unreviewed"],
        serde_json::json!([{ "package": "custom-tool", "script": "postinst", "sha256": sha }])
    );
    assert_eq!(
        json["first_boot_packages"],
        serde_json::json!(["custom-tool"])
    );
    assert_eq!(
        json["emulated"],
        serde_json::json!({ "libfoo1": ["triggers"] })
    );
    let image = out_dir.join("disk.img");
    assert_fsck_clean(&root_fs_spec(&image));
    let mut img = Image::open(&image);
    let status = img.text("/var/lib/dpkg/status");
    for stanza in status.split("\n\n").filter(|s| !s.trim().is_empty()) {
        let expected = if stanza.starts_with("Package: custom-tool\n") {
            "Status: install ok unpacked"
        } else {
            "Status: install ok installed"
        };
        assert!(stanza.lines().any(|l| l == expected), "{stanza}");
    }
    assert_eq!(img.text("/etc/ami/first-boot/packages"), "custom-tool\n");
    assert_eq!(
        img.text("/var/lib/dpkg/info/custom-tool.postinst"),
        CUSTOM_POSTINST
    );
    assert_eq!(img.owner_mode("/etc/ami/first-boot/run"), (0o755, 0, 0));
    let unit = img.text("/etc/systemd/system/ami-first-boot.service");
    assert!(
        unit.contains("ExecStart=/etc/ami/first-boot/run\n"),
        "{unit}"
    );
    assert_eq!(
        img.link("/etc/systemd/system/multi-user.target.wants/ami-first-boot.service"),
        "/etc/systemd/system/ami-first-boot.service"
    );
    let run = img.text("/etc/ami/first-boot/run");
    assert!(run.contains("dpkg --configure $pkgs\n"), "{run}");
    let script = work.path().join("first-boot-run");
    std::fs::write(&script, &run).unwrap();
    let syntax = Command::new("sh").arg("-n").arg(&script).output().unwrap();
    assert!(syntax.status.success(), "{syntax:?}");
}

#[test]
fn recipe_errors_are_reported_with_lines() {
    let work = tempfile::tempdir().unwrap();
    let recipe = work.path().join("r.toml");
    std::fs::write(&recipe, "[system]\nhostnme = \"x\"\n").unwrap();
    let out = ami()
        .arg("build")
        .arg(&recipe)
        .args(["--out", s(&work.path().join("o"))])
        .output()
        .unwrap();
    let err = assert_failure(&out, 1);
    assert!(err.contains("line 2"), "{err}");
    assert!(err.contains("hostnme"), "{err}");
}

/// A real build of the embedded default recipe from the host's apt
/// sources (network), with `AMI_E2E=1`.
#[test]
fn e2e_default_recipe() {
    if std::env::var_os("AMI_E2E").is_none_or(|v| v != "1") {
        eprintln!("skipped: set AMI_E2E=1 to build the default recipe from the host's mirror");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let cache = std::env::var("AMI_E2E_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| work.path().join("cache"));
    let o = ami()
        .arg("build")
        .args([
            "--out",
            s(&out),
            "--cache",
            s(&cache),
            "--source-date-epoch",
            "1700000000",
        ])
        .output()
        .unwrap();
    assert_success(&o);
    let image = out.join("disk.img");
    assert_fsck_clean(&root_fs_spec(&image));
    let mut img = Image::open(&image);
    assert_eq!(img.owner_mode("/usr/bin/sudo").0, 0o4755);
    assert!(img
        .text("/etc/ssh/sshd_config.d/ami.conf")
        .contains("PasswordAuthentication no"));
    for name in ["rsa", "ecdsa", "ed25519"] {
        assert!(!img.exists(&format!("/etc/ssh/ssh_host_{name}_key")));
    }
    assert_eq!(img.owner_mode("/dev/console"), (0o600, 0, 5));
    assert!(img.exists("/etc/systemd/system/multi-user.target.wants/prep-instance.service"));
    assert_eq!(img.text("/etc/machine-id"), "");
    let group = img.text("/etc/group");
    let sudo = group.lines().find(|l| l.starts_with("sudo:")).unwrap();
    assert!(
        sudo.split(':')
            .nth(3)
            .unwrap()
            .split(',')
            .any(|m| m == "admin"),
        "{sudo}"
    );

    // Every maintainer script is emulated: every package configured.
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("build.json")).unwrap()).unwrap();
    let count = json["packages"].as_array().unwrap().len();
    assert!(count > 100, "{count} packages");
    assert_eq!(json["packages_configured"], count);
    assert_eq!(json["unreviewed"], serde_json::json!([]));
    let emulated = json["emulated"].as_object().unwrap();
    assert!(emulated["openssh-server"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("postinst")));
    let first_boot: Vec<&str> = json["first_boot"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["command"].as_str().unwrap())
        .collect();
    assert!(first_boot.contains(&"ldconfig"), "{first_boot:?}");
    let status = img.text("/var/lib/dpkg/status");
    let stanzas: Vec<&str> = status
        .split("\n\n")
        .filter(|s| !s.trim().is_empty())
        .collect();
    assert_eq!(stanzas.len(), count);
    for st in &stanzas {
        assert!(
            st.lines().any(|l| l == "Status: install ok installed"),
            "not configured:\n{st}"
        );
    }
    assert!(img
        .text("/etc/ssh/sshd_config")
        .contains("Include /etc/ssh/sshd_config.d/*.conf"));
    assert!(img.text("/etc/pam.d/common-auth").contains("pam_unix.so"));
    assert_eq!(
        img.link("/etc/systemd/system/multi-user.target.wants/ssh.service"),
        "/lib/systemd/system/ssh.service"
    );
    let passwd = img.text("/etc/passwd");
    for user in ["sshd:", "admin:"] {
        assert!(passwd.lines().any(|l| l.starts_with(user)), "{passwd}");
    }
    assert_eq!(img.link("/etc/alternatives/awk"), "/usr/bin/mawk");
    assert!(!img.exists("/etc/ssh/ssh_host_ed25519_key"));
    // dpkg's trigger interests: installing a library later runs ldconfig.
    assert_eq!(img.text("/var/lib/dpkg/triggers/ldconfig"), "libc-bin\n");
    assert!(img
        .text("/var/lib/dpkg/triggers/File")
        .contains("/usr/share/debianutils/shells.d debianutils/noawait\n"));
    // apt works in the instance: the build's own sources, signed.
    let sources = img.text("/etc/apt/sources.list.d/debian.sources");
    assert!(sources.contains("Suites: bookworm"), "{sources}");
    assert!(sources.contains("Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"));
    // The default layout: GPT with the ESP; the native initramfs and the
    // kernel links in place.
    assert_eq!(json["partition_table"], "gpt");
    let kernel = json["kernel_version"].as_str().unwrap().to_owned();
    assert_eq!(img.link("/vmlinuz"), format!("boot/vmlinuz-{kernel}"));
    assert_eq!(img.link("/initrd.img"), format!("boot/initrd.img-{kernel}"));
    assert!(img.exists(&format!("/boot/initrd.img-{kernel}")));
    let sgdisk = run_tool("sgdisk", &["-v".as_ref(), image.as_os_str()]);
    assert!(String::from_utf8_lossy(&sgdisk.stdout).contains("No problems found"));
    // The kernel's module indexes, built natively (libkmod reads only the
    // .bin files): ena must be found by its PCI alias.
    let depmod = json["depmod"].as_str().unwrap();
    let kver = depmod.split(':').next().unwrap();
    assert!(!kver.is_empty(), "no kernel was depmod-ed: {depmod:?}");
    for f in [
        "modules.dep",
        "modules.dep.bin",
        "modules.alias.bin",
        "modules.symbols.bin",
    ] {
        assert!(img.exists(&format!("/usr/lib/modules/{kver}/{f}")), "{f}");
    }
    assert!(img
        .text(&format!("/usr/lib/modules/{kver}/modules.alias"))
        .lines()
        .any(|l| l.starts_with("alias pci:v00001D0Fd0000EC20") && l.ends_with(" ena")));

    // apt finds no broken dependency in the image's dpkg database.
    let status_file = work.path().join("status");
    std::fs::write(&status_file, &status).unwrap();
    let check = fixtures::apt::apt_check(&status_file, &work.path().join("apt"));
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(check.status.success(), "apt-get check failed:\n{output}");
    assert!(!output.contains("unmet dependencies"), "{output}");
}

/// The bytes of `range` of a file.
fn read_range(path: &Path, range: std::ops::Range<u64>) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path).unwrap();
    f.seek(SeekFrom::Start(range.start)).unwrap();
    let mut buf = vec![0u8; (range.end - range.start) as usize];
    f.read_exact(&mut buf).unwrap();
    buf
}

#[test]
fn uefi_and_mbr_layouts_are_valid_and_reproducible() {
    let key = TestKey::generate(62);
    let repo = repo(&key);
    let server = TestServer::serve(repo.path()).unwrap();
    let keyring = repo.keyring().unwrap();
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let recipe = work.path().join("recipe.toml");
    std::fs::write(
        &recipe,
        RECIPE.replace("size = \"fit+30%\"", "size = \"160MiB\""),
    )
    .unwrap();

    // UEFI: GPT, ESP with shim, GRUB and grub.cfg, root partition last.
    let (out1, out2) = (work.path().join("u1"), work.path().join("u2"));
    for out in [&out1, &out2] {
        let o = build(
            &recipe,
            &server.url(),
            keyring,
            &cache,
            out,
            &["--layout", "uefi"],
        );
        assert_success(&o);
    }
    let image = out1.join("disk.img");
    assert!(
        std::fs::read(&image).unwrap() == std::fs::read(out2.join("disk.img")).unwrap(),
        "two uefi builds differ"
    );
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 160 << 20);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out1.join("build.json")).unwrap()).unwrap();
    assert_eq!(json["partition_table"], "gpt");
    assert_eq!(json["esp_offset"], 1 << 20);
    let esp = json["esp_offset"].as_u64().unwrap()
        ..json["esp_offset"].as_u64().unwrap() + json["esp_bytes"].as_u64().unwrap();
    let root_offset = json["root_offset"].as_u64().unwrap();
    assert_eq!(root_offset, esp.end);
    let boot: Vec<&str> = json["boot_packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().split(' ').next().unwrap())
        .collect();
    assert_eq!(
        boot,
        ["busybox-static", "shim-signed", "grub-efi-amd64-signed"]
    );

    let sgdisk = run_tool("sgdisk", &["-v".as_ref(), image.as_os_str()]);
    let text = String::from_utf8_lossy(&sgdisk.stdout);
    assert!(text.contains("No problems found"), "{text}");
    let esp_file = work.path().join("esp.img");
    std::fs::write(&esp_file, read_range(&image, esp.clone())).unwrap();
    let fsck = run_tool("fsck.vfat", &["-n".as_ref(), esp_file.as_os_str()]);
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let esp_bytes = std::fs::read(&esp_file).unwrap();
    let has = |needle: &[u8]| esp_bytes.windows(needle.len()).any(|w| w == needle);
    assert!(has(b"MZ shim") && has(b"MZ grub"));
    assert!(has(b"search --no-floppy --label rootfs --set=root"));
    assert!(has(
        b"linux /boot/vmlinuz-6.1.0-test-cloud-amd64 root=LABEL=rootfs ro"
    ));
    assert!(has(b"initrd /boot/initrd.img-6.1.0-test-cloud-amd64"));
    assert_fsck_clean(&root_fs_spec(&image));
    let mut img = Image::open(&image);
    // The native initramfs is in /boot; PV-GRUB's menu.lst is not (UEFI).
    assert_eq!(
        img.owner_mode("/boot/initrd.img-6.1.0-test-cloud-amd64"),
        (0o644, 0, 0)
    );
    assert!(!img.exists("/boot/grub/menu.lst"));
    // The root grows to fill a larger volume at boot.
    assert_eq!(img.owner_mode("/usr/lib/ami/growroot"), (0o755, 0, 0));
    assert_eq!(
        img.link("/etc/systemd/system/multi-user.target.wants/ami-growroot.service"),
        "/etc/systemd/system/ami-growroot.service"
    );
    // The allocated ranges cover the tables, the ESP and the root's blocks.
    let allocated: Vec<(u64, u64)> = json["allocated"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_u64().unwrap(), r[1].as_u64().unwrap()))
        .collect();
    assert_eq!(allocated[0].0, 0);
    assert!(allocated
        .iter()
        .any(|&(s, e)| s <= esp.start && e >= esp.end));
    assert!(
        allocated.last().unwrap().1 == 160 << 20,
        "the backup GPT is at the end"
    );

    // pvgrub-mbr: one bootable Linux partition at 1 MiB, menu.lst with (hd0,0).
    let out3 = work.path().join("m1");
    let o = build(
        &recipe,
        &server.url(),
        keyring,
        &cache,
        &out3,
        &["--layout", "pvgrub-mbr"],
    );
    assert_success(&o);
    let image = out3.join("disk.img");
    let sfdisk = run_tool("sfdisk", &["-d".as_ref(), image.as_os_str()]);
    let dump = String::from_utf8_lossy(&sfdisk.stdout);
    assert!(dump.contains("label: dos"), "{dump}");
    assert!(
        dump.lines().any(|l| l.contains("start=        2048")
            && l.contains("type=83")
            && l.contains("bootable")),
        "{dump}"
    );
    assert_fsck_clean(&root_fs_spec(&image));
    let mut img = Image::open(&image);
    let menu = img.text("/boot/grub/menu.lst");
    assert!(menu.contains("root (hd0,0)"), "{menu}");
    assert!(
        menu.contains("initrd /boot/initrd.img-6.1.0-test-cloud-amd64"),
        "{menu}"
    );
}
