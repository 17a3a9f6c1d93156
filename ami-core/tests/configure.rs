//! Tests of the native configuration on synthetic trees, on the host's own
//! PAM configuration (compared with what the real pam-auth-update wrote)
//! and, with `AMI_E2E=1`, on trees unpacked from the real Debian packages.

use ami_core::configure::accounts::{Accounts, NormalUser};
use ami_core::configure::effects::{self, PackageScripts};
use ami_core::configure::system::SystemOptions;
use ami_core::configure::{pam, read_file, write_file};
use ami_core::progress::NoProgress;
use ami_core::scan::{scan_dir, ScanOptions};
use ami_core::{Metadata, NodeKind, Timestamp, Tree};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

const EPOCH: i64 = 1_700_000_000;
const DAY: i64 = EPOCH / 86_400;

fn ts() -> Timestamp {
    Timestamp {
        secs: EPOCH,
        nanos: 0,
    }
}

fn tree_with(files: &[(&str, &str)]) -> Tree {
    let mut t = Tree::new(Metadata::new(0o755));
    for (p, c) in files {
        write_file(&mut t, p, c.as_bytes().to_vec(), Metadata::new(0o644), ts()).unwrap();
    }
    t
}

fn text(t: &Tree, p: &str) -> String {
    String::from_utf8(
        read_file(t, p)
            .unwrap()
            .unwrap_or_else(|| panic!("{p} missing")),
    )
    .unwrap()
}

const PASSWD_MASTER: &str = "root:*:0:0:root:/root:/bin/bash\n\
daemon:*:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
nobody:*:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
const GROUP_MASTER: &str =
    "root:*:0:\ndaemon:*:1:\nsudo:*:27:\nshadow:*:42:\nusers:*:100:\nnogroup:*:65534:\n";
const SYSUSERS: &str = "# comment\n\
g systemd-journal - -\n\
u systemd-network - \"systemd Network Management\"\n\
u fixed 500:users \"Fixed\" /var/lib/fixed /bin/sh\n\
m fixed sudo\n";

fn base_tree() -> Tree {
    tree_with(&[
        ("/usr/share/base-passwd/passwd.master", PASSWD_MASTER),
        ("/usr/share/base-passwd/group.master", GROUP_MASTER),
        ("/usr/lib/sysusers.d/systemd.conf", SYSUSERS),
    ])
}

#[test]
fn accounts_from_master_files_packages_and_sysusers() {
    let mut t = base_tree();
    let mut acc = Accounts::load(&t, DAY).unwrap();
    acc.apply_package_accounts(&[
        "passwd",
        "cron-daemon-common",
        "udev",
        "openssh-client",
        "ifupdown",
        "openssh-server",
    ])
    .unwrap();
    acc.apply_sysusers(&t).unwrap();
    let uid = acc.add_user("admin", &NormalUser::default()).unwrap();
    acc.add_user_to_group("admin", "sudo").unwrap();
    acc.add_user_to_group("admin", "sudo").unwrap();
    assert_eq!(uid, 1000);
    // The reference build's numbers.
    for (g, id) in [
        ("crontab", 101),
        ("input", 102),
        ("sgx", 103),
        ("kvm", 104),
        ("render", 105),
        ("_ssh", 106),
        ("netdev", 107),
        ("systemd-journal", 999),
        ("systemd-network", 998),
    ] {
        assert_eq!(acc.gid(g), Some(id), "{g}");
    }
    assert_eq!(acc.uid("sshd"), Some(100));
    assert_eq!(acc.user("sshd").unwrap().gid, 65534);
    assert_eq!(acc.uid("systemd-network"), Some(998));
    assert_eq!(acc.uid("fixed"), Some(500));
    assert_eq!(acc.user("fixed").unwrap().gid, 100);
    assert!(acc.add_user("admin", &NormalUser::default()).is_err());
    assert!(acc.add_group("x", 42).is_err());

    acc.write(&mut t, ts()).unwrap();
    let passwd = text(&t, "/etc/passwd");
    assert!(passwd.starts_with("root:x:0:0:root:/root:/bin/bash\n"));
    assert!(passwd.contains("\nsshd:x:100:65534::/run/sshd:/usr/sbin/nologin\n"));
    assert!(passwd
        .contains("\nsystemd-network:x:998:998:systemd Network Management:/:/usr/sbin/nologin\n"));
    assert!(passwd.contains("\nadmin:x:1000:1000::/home/admin:/bin/bash\n"));
    let shadow = text(&t, "/etc/shadow");
    assert!(shadow.starts_with(&format!("root:*:{DAY}:0:99999:7:::\n")));
    assert!(shadow.contains(&format!("\nsshd:!:{DAY}::::::\n")));
    assert!(shadow.contains(&format!("\nsystemd-network:!*:{DAY}::::::\n")));
    let group = text(&t, "/etc/group");
    assert!(group.contains("\nsudo:x:27:fixed,admin\n"));
    let gshadow = text(&t, "/etc/gshadow");
    assert!(gshadow.starts_with("root:*::\n"));
    assert!(gshadow.contains("\ncrontab:!::\n"));
    let id = t.lookup(b"/etc/shadow").unwrap();
    assert_eq!((t.node(id).meta.mode, t.node(id).meta.gid), (0o640, 42));

    // Round trip: loading the written files gives the same database.
    let again = Accounts::load(&t, DAY).unwrap();
    assert_eq!(again, acc);
    check_with_shadow_tools(&t);
}

/// Runs `pwck -r` and `grpck -r` (read-only) on the written files.
fn check_with_shadow_tools(t: &Tree) {
    let dir = tempfile::tempdir().unwrap();
    for f in ["passwd", "shadow", "group", "gshadow"] {
        std::fs::write(dir.path().join(f), text(t, &format!("/etc/{f}"))).unwrap();
    }
    let p = |f: &str| dir.path().join(f);
    let run = |tool: &str, a: &Path, b: &Path| {
        let out = Command::new(tool)
            .arg("-r")
            .arg(a)
            .arg(b)
            .output()
            .unwrap_or_else(|e| panic!("{tool} is needed for this test (package passwd): {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Home directories do not exist on the host; every other complaint
        // is a format error.
        // grpck checks members against the host's users, not the file
        // given: a member unknown to the host is fine if our passwd has it.
        let passwd = text(t, "/etc/passwd");
        for line in stdout.lines().chain(stderr.lines()) {
            let member = line.rsplit_once("no user ").map(|(_, u)| u).or_else(|| {
                line.strip_prefix("delete member '")
                    .and_then(|r| r.split_once('\''))
                    .map(|(u, _)| u)
            });
            let known_member =
                member.is_some_and(|u| passwd.lines().any(|l| l.starts_with(&format!("{u}:"))));
            assert!(
                known_member
                    || line.contains("directory")
                    || line.contains("no changes")
                    || line.trim().is_empty(),
                "{tool}: {line}"
            );
        }
    };
    run("pwck", &p("passwd"), &p("shadow"));
    run("grpck", &p("group"), &p("gshadow"));
}

#[test]
fn accounts_need_master_files() {
    let t = Tree::new(Metadata::new(0o755));
    assert!(Accounts::load(&t, DAY).is_err());
    let bad = tree_with(&[
        ("/usr/share/base-passwd/passwd.master", "root:*:0\n"),
        ("/usr/share/base-passwd/group.master", GROUP_MASTER),
    ]);
    assert!(Accounts::load(&bad, DAY).is_err());
}

/// The host's /etc/pam.d/common-* were written by the real pam-auth-update
/// from the host's /usr/share/pam-configs: the port must give the same
/// bytes, for the files and for /var/lib/pam.
#[test]
fn pam_merge_matches_host_pam_auth_update() {
    let host = Path::new("/");
    let configs = host.join("usr/share/pam-configs");
    let Ok(entries) = std::fs::read_dir(&configs) else {
        eprintln!("skipped: no /usr/share/pam-configs on this host");
        return;
    };
    let mut t = Tree::new(Metadata::new(0o755));
    for e in entries {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        let data = std::fs::read(e.path()).unwrap();
        write_file(
            &mut t,
            &format!("/usr/share/pam-configs/{name}"),
            data,
            Metadata::new(0o644),
            ts(),
        )
        .unwrap();
    }
    let mut expected = BTreeMap::new();
    for ty in pam::TYPES {
        let tpl = std::fs::read(host.join(format!("usr/share/pam/common-{ty}"))).unwrap();
        write_file(
            &mut t,
            &format!("/usr/share/pam/common-{ty}"),
            tpl,
            Metadata::new(0o644),
            ts(),
        )
        .unwrap();
        let Ok(common) = std::fs::read_to_string(host.join(format!("etc/pam.d/common-{ty}")))
        else {
            eprintln!("skipped: host has no /etc/pam.d/common-{ty}");
            return;
        };
        expected.insert(format!("/etc/pam.d/common-{ty}"), common);
        let state =
            std::fs::read_to_string(host.join(format!("var/lib/pam/{ty}"))).unwrap_or_default();
        expected.insert(format!("/var/lib/pam/{ty}"), state);
    }
    // The host's files reflect the defaults only if every profile was seen
    // and the enabled set is the default one.
    let seen = std::fs::read_to_string("/var/lib/pam/seen").unwrap_or_default();
    pam::configure(&mut t, ts()).unwrap();
    if text(&t, "/var/lib/pam/seen") != seen {
        eprintln!("skipped: host profiles changed since pam-auth-update last ran");
        return;
    }
    for (path, want) in &expected {
        if path.starts_with("/var/lib/pam") && !want.is_empty() {
            assert_eq!(&text(&t, path), want, "{path}");
        }
    }
    for (path, want) in &expected {
        if path.starts_with("/etc/pam.d") {
            if !want.contains("# end of pam-auth-update config") {
                eprintln!("skipped {path}: locally modified on the host");
                continue;
            }
            assert_eq!(&text(&t, path), want, "{path}");
        }
    }
}

#[test]
fn pam_without_profiles_uses_permit() {
    let tpl = "# head\n# here are the per-package modules (the \"Primary\" block)\nX\n# here's the fallback if no module succeeds\nauth requisite pam_deny.so\n# and here are more per-package modules (the \"Additional\" block)\nY\n# end of pam-auth-update config\n";
    let mut files: Vec<(String, String)> = pam::TYPES
        .iter()
        .map(|ty| (format!("/usr/share/pam/common-{ty}"), tpl.to_owned()))
        .collect();
    files.push((
        "/usr/share/pam-configs/a".into(),
        "Name: A\nDefault: yes\nPriority: 5\nAuth-Type: Primary\nAuth:\n\t[success=end default=ignore]\tpam_a.so x\nAuth-Initial:\n\t[success=end default=ignore]\tpam_a.so\n".into(),
    ));
    files.push((
        "/usr/share/pam-configs/b".into(),
        "Name: B\nDefault: yes\nPriority: 9\nAuth-Type: Primary\nAuth:\n\t[success=end default=ignore]\tpam_b.so\n\t[success=end default=ignore]\tpam_b2.so\nSession-Type: Additional\nSession:\n\toptional\tpam_b.so\n".into(),
    ));
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let mut t = tree_with(&refs);
    pam::configure(&mut t, ts()).unwrap();
    let auth = text(&t, "/etc/pam.d/common-auth");
    assert!(auth.contains("\nauth\t[success=3 default=ignore]\tpam_b.so \nauth\t[success=2 default=ignore]\tpam_b2.so \nauth\t[success=1 default=ignore]\tpam_a.so x\n# here's"), "{auth}");
    assert!(!auth.contains("\nX\n") && !auth.contains("\nY\n"));
    let account = text(&t, "/etc/pam.d/common-account");
    assert!(
        account.contains("block)\naccount\t[default=1]\t\t\tpam_permit.so\n# here's"),
        "{account}"
    );
    let sni = text(&t, "/etc/pam.d/common-session-noninteractive");
    assert!(
        sni.contains("block)\nsession\toptional\tpam_b.so \n# end"),
        "{sni}"
    );
    assert_eq!(text(&t, "/var/lib/pam/seen"), "b\na\n");
    assert_eq!(
        text(&t, "/var/lib/pam/auth"),
        "Module: b\n[success=end default=ignore]\tpam_b.so\n[success=end default=ignore]\tpam_b2.so\nModule: a\n[success=end default=ignore]\tpam_a.so x\n"
    );
}

/// Packages the real-package test needs when it downloads them itself.
const E2E_PACKAGES: &[&str] = &[
    "base-passwd",
    "base-files",
    "debianutils",
    "bash",
    "dash",
    "libc-bin",
    "readline-common",
    "openssh-server",
    "openssh-client",
    "libwrap0",
    "kmod",
    "initramfs-tools-core",
    "libpam-modules",
    "libpam-runtime",
    "login",
    "passwd",
    "tzdata",
    "netbase",
    "sudo",
    "cron",
    "cron-daemon-common",
    "iputils-ping",
    "systemd",
    "udev",
    "ifupdown",
    "apt",
    "dpkg",
    "e2fsprogs",
    "logrotate",
    "util-linux",
    "mawk",
    "nano",
    "vim-tiny",
    "less",
    "tar",
    "cpio",
    "ucf",
    "nftables",
    "init-system-helpers",
];

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?} (needs dpkg-deb/apt-get): {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The .debs of the real-package test: `AMI_DEBS_DIR` (every .deb in it),
/// or, with `AMI_E2E=1`, [`E2E_PACKAGES`] fetched with `apt-get download`.
fn real_debs(scratch: &Path) -> Option<Vec<std::path::PathBuf>> {
    let dir = if let Ok(d) = std::env::var("AMI_DEBS_DIR") {
        std::path::PathBuf::from(d)
    } else if std::env::var("AMI_E2E").is_ok_and(|v| v == "1") {
        let d = scratch.join("debs");
        std::fs::create_dir_all(&d).unwrap();
        run(Command::new("apt-get")
            .arg("download")
            .args(E2E_PACKAGES)
            .current_dir(&d));
        d
    } else {
        return None;
    };
    let mut debs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    debs.sort();
    Some(debs)
}

/// Unpacks the debs into a merged-/usr directory and reads their control
/// members.
fn unpack(debs: &[std::path::PathBuf], root: &Path, scratch: &Path) -> Vec<PackageScripts> {
    let mut pkgs = Vec::new();
    for (i, deb) in debs.iter().enumerate() {
        run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(root));
        let ctl = scratch.join(format!("ctl{i}"));
        run(Command::new("dpkg-deb").arg("-e").arg(deb).arg(&ctl));
        let field = |f: &str| {
            String::from_utf8(run(Command::new("dpkg-deb").arg("-f").arg(deb).arg(f)))
                .unwrap()
                .trim()
                .to_owned()
        };
        let mut scripts = BTreeMap::new();
        for e in std::fs::read_dir(&ctl).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            scripts.insert(name, std::fs::read(e.path()).unwrap());
        }
        pkgs.push(PackageScripts {
            name: field("Package"),
            version: field("Version"),
            arch: field("Architecture"),
            scripts,
        });
    }
    for d in ["bin", "sbin", "lib", "lib64"] {
        let top = root.join(d);
        if top.is_dir() && !top.is_symlink() {
            std::fs::create_dir_all(root.join("usr").join(d)).unwrap();
            run(Command::new("cp")
                .arg("-a")
                .arg(format!("{}/.", top.display()))
                .arg(root.join("usr").join(d)));
            std::fs::remove_dir_all(&top).unwrap();
        }
        if root.join("usr").join(d).is_dir() {
            std::os::unix::fs::symlink(format!("usr/{d}"), &top).unwrap();
        }
    }
    pkgs
}

fn link_target(t: &Tree, p: &str) -> String {
    let id = t
        .lookup(p.as_bytes())
        .unwrap_or_else(|| panic!("{p} missing"));
    match &t.node(id).kind {
        NodeKind::Symlink(target) => String::from_utf8_lossy(target).into_owned(),
        other => panic!("{p} is not a symlink: {other:?}"),
    }
}

#[test]
fn real_packages_configure_like_their_scripts() {
    let scratch = tempfile::tempdir().unwrap();
    let Some(debs) = real_debs(scratch.path()) else {
        eprintln!("skipped: set AMI_DEBS_DIR=<dir of .debs> or AMI_E2E=1");
        return;
    };
    let root = scratch.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let pkgs = unpack(&debs, &root, scratch.path());
    let opts = ScanOptions::new().root_owner(true).xattrs(false);
    let mut t = scan_dir(&root, &opts, &NoProgress).unwrap();
    let applied = effects::apply(&mut t, &pkgs, &SystemOptions::default(), EPOCH).unwrap();
    let acc = &applied.accounting;
    assert!(
        acc.unreviewed.is_empty(),
        "unreviewed: {:?}",
        acc.unreviewed
    );
    let names: Vec<&str> = pkgs.iter().map(|p| p.name.as_str()).collect();
    let has = |p: &str| names.contains(&p);

    // Accounts, with the reference build's ids.
    let a = &applied.accounts;
    assert_eq!(a.uid("sshd"), Some(100));
    for (g, id) in [
        ("crontab", 101),
        ("_ssh", 106),
        ("netdev", 107),
        ("systemd-journal", 999),
    ] {
        assert_eq!(a.gid(g), Some(id), "{g}");
    }
    assert_eq!(a.uid("systemd-network"), Some(998));
    check_with_shadow_tools(&t);

    // sshd_config is the template, registered with ucf.
    let tpl = text(&t, "/usr/share/openssh/sshd_config");
    assert_eq!(text(&t, "/etc/ssh/sshd_config"), tpl);
    assert_eq!(
        text(&t, "/var/lib/ucf/registry"),
        "openssh-server \t /etc/ssh/sshd_config\n"
    );
    assert!(text(&t, "/var/lib/ucf/hashfile").ends_with("  /etc/ssh/sshd_config\n"));

    // PAM: unix only (plus mkhomedir, not enabled by default).
    let auth = text(&t, "/etc/pam.d/common-auth");
    assert!(
        auth.contains("\nauth\t[success=1 default=ignore]\tpam_unix.so nullok\n# here's the fallback if no module succeeds\nauth\trequisite\t\t\tpam_deny.so\n"),
        "{auth}"
    );
    assert_eq!(text(&t, "/var/lib/pam/seen"), "unix\nmkhomedir\n");
    assert!(text(&t, "/etc/nsswitch.conf").contains("passwd:"));

    // Units.
    let lib = "/lib/systemd/system";
    for (link, target) in [
        ("multi-user.target.wants/ssh.service", "ssh.service"),
        ("sshd.service", "ssh.service"),
        (
            "multi-user.target.wants/networking.service",
            "networking.service",
        ),
        (
            "network-online.target.wants/networking.service",
            "networking.service",
        ),
        ("getty.target.wants/getty@tty1.service", "getty@.service"),
        (
            "multi-user.target.wants/remote-fs.target",
            "remote-fs.target",
        ),
        (
            "sysinit.target.wants/systemd-pstore.service",
            "systemd-pstore.service",
        ),
        ("multi-user.target.wants/cron.service", "cron.service"),
        (
            "multi-user.target.wants/e2scrub_reap.service",
            "e2scrub_reap.service",
        ),
        ("timers.target.wants/apt-daily.timer", "apt-daily.timer"),
        (
            "timers.target.wants/apt-daily-upgrade.timer",
            "apt-daily-upgrade.timer",
        ),
        (
            "timers.target.wants/dpkg-db-backup.timer",
            "dpkg-db-backup.timer",
        ),
        ("timers.target.wants/e2scrub_all.timer", "e2scrub_all.timer"),
        ("timers.target.wants/fstrim.timer", "fstrim.timer"),
        ("timers.target.wants/logrotate.timer", "logrotate.timer"),
    ] {
        assert_eq!(
            link_target(&t, &format!("/etc/systemd/system/{link}")),
            format!("{lib}/{target}")
        );
    }
    let state = "/var/lib/systemd/deb-systemd-helper-enabled";
    assert_eq!(
        text(&t, &format!("{state}/ssh.service.dsh-also")),
        "/etc/systemd/system/sshd.service\n/etc/systemd/system/multi-user.target.wants/ssh.service\n"
    );
    assert!(
        read_file(&t, &format!("{state}/multi-user.target.wants/ssh.service"))
            .unwrap()
            .is_some()
    );
    // Not enabled on install: state only.
    assert!(read_file(&t, &format!("{state}/nftables.service.dsh-also"))
        .unwrap()
        .is_some());
    assert!(t
        .lookup(b"/etc/systemd/system/sysinit.target.wants/nftables.service")
        .is_none());
    assert!(t
        .lookup(b"/etc/systemd/system/sockets.target.wants/ssh.socket")
        .is_none());

    // Alternatives and diversions.
    for (name, best) in [
        ("awk", "/usr/bin/mawk"),
        ("which", "/usr/bin/which.debianutils"),
        ("pager", "/usr/bin/less"),
        ("editor", "/bin/nano"),
        ("vi", "/usr/bin/vim.tiny"),
        ("rmt", "/usr/sbin/rmt-tar"),
        ("mt", "/bin/mt-gnu"),
    ] {
        assert_eq!(
            link_target(&t, &format!("/etc/alternatives/{name}")),
            best,
            "{name}"
        );
    }
    assert_eq!(link_target(&t, "/usr/bin/awk"), "/etc/alternatives/awk");
    assert_eq!(
        text(&t, "/var/lib/dpkg/alternatives/awk"),
        "auto\n/usr/bin/awk\nawk.1.gz\n/usr/share/man/man1/awk.1.gz\nnawk\n/usr/bin/nawk\nnawk.1.gz\n/usr/share/man/man1/nawk.1.gz\n\n/usr/bin/mawk\n5\n/usr/share/man/man1/mawk.1.gz\n/usr/bin/mawk\n/usr/share/man/man1/mawk.1.gz\n\n"
    );
    assert!(text(&t, "/var/lib/dpkg/diversions").contains("/bin/sh\n/bin/sh.distrib\ndash\n"));

    // System files.
    assert_eq!(
        text(&t, "/etc/shells"),
        "# /etc/shells: valid login shells\n/bin/sh\n/usr/bin/sh\n/bin/bash\n/usr/bin/bash\n/bin/rbash\n/usr/bin/rbash\n/bin/dash\n/usr/bin/dash\n"
    );
    let meta = |p: &str| {
        t.node(ami_core::configure::resolve_follow(&t, p.as_bytes()).unwrap())
            .meta
            .clone()
    };
    let crontab = meta("/usr/bin/crontab");
    assert_eq!((crontab.mode, crontab.gid), (0o2755, 101));
    assert_eq!(
        text(&t, "/var/lib/dpkg/statoverride"),
        "root crontab 2755 /usr/bin/crontab\n"
    );
    assert_eq!(meta("/usr/bin/ssh-agent").gid, 106);
    assert_eq!(meta("/etc/sudoers").mode, 0o440);
    assert_eq!(
        meta("/bin/ping")
            .xattrs
            .get(b"security.capability".as_slice())
            .map(|v| v.to_vec()),
        Some(ami_core::configure::system::CAP_NET_RAW_EP.to_vec())
    );
    let journal = meta("/var/log/journal");
    assert_eq!((journal.mode, journal.gid), (0o2755, 999));
    assert_eq!(meta("/var/mail").mode, 0o2775);
    assert_eq!(link_target(&t, "/var/run"), "/run");
    assert_eq!(
        link_target(&t, "/etc/localtime"),
        "/usr/share/zoneinfo/Etc/UTC"
    );
    assert_eq!(
        text(&t, "/etc/profile"),
        text(&t, "/usr/share/base-files/profile")
    );
    assert!(has("makedev") || acc.first_boot.iter().any(|(p, _)| p == "openssh-server"));

    // The real tools, run on the unpacked directory, must leave the same
    // links and state files.
    run_real_tools(&root, &pkgs);
    let prefixes = [
        "etc/systemd/system/",
        "var/lib/systemd/deb-systemd-helper-enabled/",
        "etc/alternatives/",
        "var/lib/dpkg/alternatives/",
    ];
    let ours = snapshot_tree(&t, &prefixes);
    let theirs = snapshot_disk(&root, &prefixes);
    let only_ours: Vec<_> = ours
        .iter()
        .filter(|(k, v)| theirs.get(*k) != Some(v))
        .collect();
    let only_theirs: Vec<_> = theirs
        .iter()
        .filter(|(k, v)| ours.get(*k) != Some(v))
        .collect();
    assert!(
        only_ours.is_empty() && only_theirs.is_empty(),
        "differences from the real tools:\nours: {only_ours:#?}\ntheirs: {only_theirs:#?}"
    );
    assert!(theirs.len() > 40, "{theirs:#?}");
    for f in ["etc/shells", "var/lib/shells.state"] {
        assert_eq!(
            text(&t, &format!("/{f}")),
            std::fs::read_to_string(root.join(f)).unwrap(),
            "{f}"
        );
    }
}

/// Runs `deb-systemd-helper` (the tree's own copy), `systemctl --root` and
/// `update-alternatives --root` for what the postinsts ask.
fn run_real_tools(root: &Path, pkgs: &[PackageScripts]) {
    use ami_core::configure::{alternatives, units};
    // debianutils: copy the template, then update-shells.
    std::fs::create_dir_all(root.join("var/lib")).unwrap();
    std::fs::copy(
        root.join("usr/share/debianutils/shells"),
        root.join("etc/shells"),
    )
    .unwrap();
    run(Command::new("sh")
        .arg(root.join("usr/sbin/update-shells"))
        .arg("--root")
        .arg(root));
    let helper = root.join("usr/bin/deb-systemd-helper");
    for p in pkgs {
        let Some(body) = p.scripts.get("postinst") else {
            continue;
        };
        let u = units::scan_postinst(body);
        for unit in &u.systemctl_enable {
            run(Command::new("systemctl")
                .arg(format!("--root={}", root.display()))
                .arg("enable")
                .arg(unit));
        }
        for (verb, list) in [("enable", &u.enable), ("update-state", &u.update_state)] {
            for unit in list {
                run(Command::new("perl")
                    .arg(&helper)
                    .arg(verb)
                    .arg(unit)
                    .env("DPKG_ROOT", root)
                    .env("DPKG_MAINTSCRIPT_PACKAGE", &p.name));
            }
        }
        for inst in alternatives::scan_script(body).installs {
            let mut cmd = Command::new("update-alternatives");
            cmd.arg("--quiet")
                .arg("--root")
                .arg(root)
                .arg("--install")
                .args([
                    &inst.link,
                    &inst.name,
                    &inst.path,
                    &inst.priority.to_string(),
                ]);
            for sl in &inst.slaves {
                cmd.arg("--slave").args([&sl.link, &sl.name, &sl.path]);
            }
            run(&mut cmd);
        }
    }
}

fn describe_tree(t: &Tree, id: ami_core::NodeId) -> String {
    match &t.node(id).kind {
        NodeKind::Symlink(target) => format!("-> {}", String::from_utf8_lossy(target)),
        NodeKind::Dir(_) => "dir".into(),
        NodeKind::File(_) => "file".into(),
        _ => "other".into(),
    }
}

fn snapshot_tree(t: &Tree, prefixes: &[&str]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (path, id) in t.walk() {
        let path = String::from_utf8_lossy(&path)
            .trim_start_matches('/')
            .to_owned();
        if prefixes.iter().any(|p| path.starts_with(p)) {
            let mut v = describe_tree(t, id);
            if v == "file" {
                v = format!("file {}", text(t, &format!("/{path}")));
            }
            out.insert(path, v);
        }
    }
    out
}

fn snapshot_disk(root: &Path, prefixes: &[&str]) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let v = if md.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else if md.is_dir() {
                walk(root, &p, out);
                "dir".into()
            } else {
                format!(
                    "file {}",
                    String::from_utf8_lossy(&std::fs::read(&p).unwrap())
                )
            };
            out.insert(rel, v);
        }
    }
    let mut out = BTreeMap::new();
    for p in prefixes {
        walk(root, &root.join(p), &mut out);
    }
    out
}
