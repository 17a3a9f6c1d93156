//! The dpkg database writer, checked against the real dpkg: the same
//! packages are installed by `dpkg --root` into one directory and unpacked
//! by ami into a tree written to another, and the two must agree byte for
//! byte; then dpkg's queries must work on ami's tree.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ami_core::{Metadata, NodeKind, Timestamp, Tree};
use ami_deb::dpkgdb::{
    status_file, write_database, DbOptions, DbPackage, Diversion, StatOverride, Status,
};
use ami_deb::unpack::{merged_usr_skeleton, Ownership, Unpacker};
use fixtures::deb::{Compression, DebBuilder};
use sha2::{Digest, Sha256};

const T: i64 = 1_672_531_200;
const SKELETON: [(&str, &str); 4] = [
    ("bin", "usr/bin"),
    ("sbin", "usr/sbin"),
    ("lib", "usr/lib"),
    ("lib64", "usr/lib64"),
];

fn packages() -> Vec<DebBuilder> {
    vec![
        DebBuilder::new("libfoo1", "0:1.2-3", "amd64")
            .multi_arch("same")
            .field("Priority", "optional")
            .field("Section", "libs")
            .field("Source", "foo")
            .file(
                "/lib/x86_64-linux-gnu/libfoo.so.1.2",
                b"\x7fELF libfoo",
                0o644,
            )
            .symlink("/lib/x86_64-linux-gnu/libfoo.so.1", "libfoo.so.1.2")
            .file("/usr/share/doc/libfoo1/copyright", b"copyright\n", 0o644)
            .control_member("shlibs", b"libfoo 1 libfoo1 (>= 1.2)\n")
            .control_member("triggers", b"activate-noawait ldconfig\n")
            .compression(Compression::Gzip),
        DebBuilder::new("base-thing", "2:3.4-5+deb12u1", "amd64")
            .field("Essential", "yes")
            .field("Priority", "required")
            .field("Section", "admin")
            .multi_arch("foreign")
            .field("Homepage", "https://example.invalid/base")
            .field("Built-Using", "foo (= 1.2-3)")
            .pre_depends("libfoo1 (>= 0:1.0)")
            .depends("dash|sh ,  coreutils(>=9)")
            .field("Breaks", "old-base (<< 3)")
            .file("/bin/base-tool", b"#!/bin/sh\necho base\n", 0o755)
            .symlink("/usr/bin/bt", "base-tool")
            .file(
                "/usr/share/doc/base-thing/copyright",
                b"base copyright\n",
                0o644,
            )
            .conffile("/etc/base.conf", b"base=1\n")
            // Trigger interests: recorded in triggers/File and
            // triggers/<name> (no package here activates them).
            .control_member(
                "triggers",
                b"# comment\ninterest-noawait /usr/share/base-thing/hooks\ninterest-await base-thing-reload\ninterest /usr/lib/base-thing\n",
            )
            .postinst("#!/bin/sh\nset -e\nexit 0\n")
            .prerm("#!/bin/sh\nset -e\nexit 0\n"),
        DebBuilder::new("nomd5", "1", "all")
            .file("/usr/share/nomd5/a", b"a\n", 0o644)
            .file("/usr/share/nomd5/b", b"bb\n", 0o644)
            .conffile("/etc/nomd5.conf", b"conf\n")
            .control_member(
                "conffiles",
                b"/etc/nomd5.conf\nremove-on-upgrade /etc/gone/old.conf\n",
            )
            .without_md5sums()
            .control_member("triggers", b"interest-noawait base-thing-reload\n")
            .compression(Compression::Zstd),
        DebBuilder::new("old", "1.0", "amd64")
            .file("/usr/bin/shared", b"old version\n", 0o755)
            .file("/usr/bin/old-only", b"old only\n", 0o755),
        DebBuilder::new("new", "2.0", "amd64")
            .replaces("old (<< 2)")
            .file("/usr/bin/shared", b"new version\n", 0o755)
            .compression(Compression::None),
        DebBuilder::new("devs", "1", "amd64")
            .file("/usr/bin/sudo-ish", b"setuid\n", 0o4755)
            .file("/usr/bin/chage-ish", b"setgid\n", 0o2755)
            .owned(0, 42, "root", "shadow")
            .hardlink("/usr/bin/chage-link", "/usr/bin/chage-ish")
            .device("/dev/zero-ish", false, 1, 5, 0o666)
            .device("/dev/sda-ish", true, 8, 0, 0o660)
            .owned(0, 6, "root", "disk")
            .fifo("/run/fifo-ish", 0o600)
            .dir("/var/tmp-ish", 0o1777),
    ]
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?} (dpkg must be installed for this test): {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).unwrap()
}

fn dpkg(root: &Path) -> Command {
    let mut c = Command::new("dpkg");
    c.arg(format!("--root={}", root.display()));
    c
}

/// Installs `debs` with the real dpkg into `root`, which gets the
/// merged-/usr links first.
fn install_with_dpkg(root: &Path, debs: &[PathBuf]) {
    for (link, dir) in SKELETON {
        fs::create_dir_all(root.join(dir)).unwrap();
        std::os::unix::fs::symlink(dir, root.join(link)).unwrap();
        // The same time as ami's skeleton.
        run(Command::new("touch")
            .args(["-h", "-d", &format!("@{T}")])
            .arg(root.join(link)));
    }
    fs::create_dir_all(root.join("var/lib/dpkg/info")).unwrap();
    fs::create_dir_all(root.join("var/lib/dpkg/updates")).unwrap();
    fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    run(dpkg(root)
        .arg("--force-script-chrootless")
        .arg("--force-depends")
        .arg("--install")
        .args(debs));
}

/// Unpacks `debs` with ami and writes the tree with the dpkg database to
/// `root`.
fn install_with_ami(root: &Path, cache: &Path, debs: &[(PathBuf, String)], status: Status) -> Tree {
    let unpacker = Unpacker::new(cache);
    let prepared = unpacker.prepare_all(debs, 2).unwrap();
    let mut tree = Tree::new(Metadata::new(0o755).times(Timestamp::from_secs(T)));
    merged_usr_skeleton(&mut tree, Timestamp::from_secs(T)).unwrap();
    let mut own = Ownership::new("amd64");
    for p in &prepared {
        unpacker.unpack_into(&mut tree, p, &mut own).unwrap();
    }
    let db: Vec<DbPackage<'_>> = own
        .packages()
        .iter()
        .map(|p| DbPackage::new(p, status))
        .collect();
    write_database(
        &mut tree,
        &db,
        &DbOptions::new("amd64", Timestamp::from_secs(T)),
    )
    .unwrap();
    let report = fixtures::write_tree(&tree, root).unwrap();
    assert!(
        report.skipped.is_empty(),
        "writing the tree needs root (device nodes, owners): {:?}",
        report.skipped
    );
    tree
}

/// Everything about a host tree dpkg decides, by path (the dpkg
/// database and directory times excluded: dpkg sets a directory's time,
/// then creates files in it).
fn describe(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let path = root.join(&rel);
        for entry in fs::read_dir(&path).unwrap() {
            let entry = entry.unwrap();
            let rel = rel.join(entry.file_name());
            let key = rel.to_string_lossy().into_owned();
            if key == "var/lib/dpkg" {
                continue;
            }
            let m = fs::symlink_metadata(entry.path()).unwrap();
            let ft = m.file_type();
            let what = if ft.is_dir() {
                stack.push(rel.clone());
                "dir".to_string()
            } else if ft.is_symlink() {
                format!(
                    "link {:?} mtime {}",
                    fs::read_link(entry.path()).unwrap(),
                    m.mtime()
                )
            } else if ft.is_file() {
                format!(
                    "file {} links {} mtime {}",
                    sha256(&fs::read(entry.path()).unwrap()),
                    m.nlink(),
                    m.mtime()
                )
            } else if ft.is_char_device() || ft.is_block_device() {
                format!("dev {:x} mtime {}", m.rdev(), m.mtime())
            } else {
                format!("other mtime {}", m.mtime())
            };
            let mode = if ft.is_symlink() { 0 } else { m.mode() };
            out.insert(
                key,
                format!("{what} mode {mode:o} owner {}:{}", m.uid(), m.gid()),
            );
        }
    }
    out
}

fn write_debs(dir: &Path) -> Vec<(PathBuf, String)> {
    packages()
        .iter()
        .map(|b| {
            let bytes = b.build();
            let path = dir.join(format!("{}.deb", b.name()));
            fs::write(&path, &bytes).unwrap();
            (path, sha256(&bytes))
        })
        .collect()
}

#[test]
fn database_and_tree_match_what_dpkg_does() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("debs")).unwrap();
    let debs = write_debs(&tmp.path().join("debs"));
    let real = tmp.path().join("real");
    let ours = tmp.path().join("ours");
    install_with_dpkg(&real, &debs.iter().map(|d| d.0.clone()).collect::<Vec<_>>());
    install_with_ami(&ours, &tmp.path().join("cache"), &debs, Status::INSTALLED);

    // The installed files.
    let (a, b) = (describe(&real), describe(&ours));
    for (k, v) in &a {
        assert_eq!(Some(v), b.get(k), "{k}");
    }
    assert_eq!(
        a.len(),
        b.len(),
        "{:?}",
        b.keys().filter(|k| !a.contains_key(*k)).collect::<Vec<_>>()
    );

    // The status file, byte for byte.
    let status_real = fs::read_to_string(real.join("var/lib/dpkg/status")).unwrap();
    let status_ours = fs::read_to_string(ours.join("var/lib/dpkg/status")).unwrap();
    assert_eq!(status_ours, status_real);
    assert!(
        status_ours.contains(" /etc/gone/old.conf newconffile remove-on-upgrade\n"),
        "{status_ours}"
    );

    // Every info file: same names, contents and modes.
    let info = |root: &Path| -> BTreeMap<String, (Vec<u8>, u32)> {
        fs::read_dir(root.join("var/lib/dpkg/info"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let m = e.metadata().unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    (fs::read(e.path()).unwrap(), m.mode()),
                )
            })
            .collect()
    };
    let (ia, ib) = (info(&real), info(&ours));
    assert_eq!(ia.keys().collect::<Vec<_>>(), ib.keys().collect::<Vec<_>>());
    for (name, (data, mode)) in &ia {
        assert_eq!(
            String::from_utf8_lossy(&ib[name].0),
            String::from_utf8_lossy(data),
            "info/{name}"
        );
        assert_eq!(ib[name].1, *mode, "mode of info/{name}");
    }
    // The generated md5sums of a package without one, and the list of a
    // package that lost a file to a Replaces.
    assert!(ib.contains_key("nomd5.md5sums"));
    let old_list = String::from_utf8(ib["old.list"].0.clone()).unwrap();
    assert!(!old_list.contains("/usr/bin/shared\n") && old_list.contains("/usr/bin/old-only\n"));
    assert!(ib.contains_key("libfoo1:amd64.list"));

    // The trigger interests, byte for byte.
    for name in ["triggers/File", "triggers/base-thing-reload"] {
        assert_eq!(
            fs::read_to_string(ours.join("var/lib/dpkg").join(name)).unwrap(),
            fs::read_to_string(real.join("var/lib/dpkg").join(name)).unwrap(),
            "{name}"
        );
    }
    assert!(fs::read_to_string(ours.join("var/lib/dpkg/triggers/File"))
        .unwrap()
        .contains("/usr/share/base-thing/hooks base-thing/noawait\n"));
    for name in [
        "lock",
        "lock-frontend",
        "triggers/Lock",
        "triggers/Unincorp",
    ] {
        let (ma, mb) = (
            fs::metadata(real.join("var/lib/dpkg").join(name)).unwrap(),
            fs::metadata(ours.join("var/lib/dpkg").join(name)).unwrap(),
        );
        assert_eq!((mb.mode(), mb.len()), (ma.mode(), ma.len()), "{name}");
    }
}

#[test]
fn dpkg_queries_work_on_the_tree() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("debs")).unwrap();
    let debs = write_debs(&tmp.path().join("debs"));
    let root = tmp.path().join("root");
    let tree = install_with_ami(&root, &tmp.path().join("cache"), &debs, Status::INSTALLED);

    // `dpkg --audit` finds nothing to complain about.
    let audit = stdout(dpkg(&root).arg("--audit"));
    assert_eq!(audit, "");
    // `dpkg --verify` finds every file with the recorded MD5.
    let verify = stdout(dpkg(&root).arg("--verify"));
    assert_eq!(verify, "");

    let listed = stdout(dpkg(&root).arg("-l"));
    for name in ["base-thing", "libfoo1:amd64", "nomd5", "old", "new", "devs"] {
        assert!(
            listed
                .lines()
                .any(|l| l.starts_with("ii  ") && l.split_whitespace().nth(1) == Some(name)),
            "{name} not installed in\n{listed}"
        );
    }
    let query = stdout(
        Command::new("dpkg-query")
            .arg(format!("--root={}", root.display()))
            .arg("-W")
            .arg("-f=${Package} ${Version} ${Status}\n"),
    );
    assert!(
        query.contains("base-thing 2:3.4-5+deb12u1 install ok installed\n"),
        "{query}"
    );
    assert!(
        query.contains("libfoo1 1.2-3 install ok installed\n"),
        "{query}"
    );

    // `dpkg -L` prints the list as shipped: the merged-/usr alias, not
    // where the file landed.
    let files = stdout(dpkg(&root).args(["-L", "base-thing"]));
    assert!(files.lines().any(|l| l == "/bin/base-tool"), "{files}");
    assert!(files.starts_with("/.\n"));
    assert!(tree.lookup(b"usr/bin/base-tool").is_some());
    let owner = stdout(dpkg(&root).args(["-S", "/bin/base-tool"]));
    assert_eq!(owner, "base-thing: /bin/base-tool\n");
    let owner = stdout(dpkg(&root).args(["-S", "/usr/bin/shared"]));
    assert_eq!(owner, "new: /usr/bin/shared\n");
    let status = stdout(dpkg(&root).args(["-s", "base-thing"]));
    let md5 = format!("{:x}", md5::Md5::digest(b"base=1\n"));
    assert!(
        status.contains(&format!("Conffiles:\n /etc/base.conf {md5}\n")),
        "{status}"
    );
    assert!(
        status.contains("Depends: dash | sh, coreutils (>= 9)\n"),
        "{status}"
    );
    assert!(
        status.contains("Pre-Depends: libfoo1 (>= 1.0)\n"),
        "{status}"
    );

    // A changed file is noticed by --verify.
    fs::write(root.join("usr/share/nomd5/a"), b"changed\n").unwrap();
    let verify = stdout(dpkg(&root).arg("--verify"));
    assert_eq!(verify, "??5??????   /usr/share/nomd5/a\n");
}

#[test]
fn unpacked_status_and_options() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("debs")).unwrap();
    let debs = write_debs(&tmp.path().join("debs"));
    let unpacker = Unpacker::new(tmp.path().join("cache"));
    let prepared = unpacker.prepare_all(&debs, 1).unwrap();
    let mut tree = Tree::new(Metadata::new(0o755));
    merged_usr_skeleton(&mut tree, Timestamp::from_secs(T)).unwrap();
    let mut own = Ownership::new("amd64");
    for p in &prepared {
        unpacker.unpack_into(&mut tree, p, &mut own).unwrap();
    }
    let base = own.get("base-thing").unwrap();
    let unpacked = [DbPackage::new(base, Status::UNPACKED)];
    let status = status_file(&unpacked).unwrap();
    assert_eq!(
        status,
        "Package: base-thing\n\
         Essential: yes\n\
         Status: install ok unpacked\n\
         Priority: required\n\
         Section: admin\n\
         Installed-Size: 4\n\
         Maintainer: Ami Tests <tests@example.invalid>\n\
         Architecture: amd64\n\
         Multi-Arch: foreign\n\
         Version: 2:3.4-5+deb12u1\n\
         Depends: dash | sh, coreutils (>= 9)\n\
         Pre-Depends: libfoo1 (>= 1.0)\n\
         Breaks: old-base (<< 3)\n\
         Conffiles:\n /etc/base.conf newconffile\n\
         Description: test package base-thing\n Built by the ami test fixtures.\n .\n Not for real use.\n\
         Homepage: https://example.invalid/base\n\
         Built-Using: foo (= 1.2-3)\n\n"
    );
    // Trigger fields must agree with the state.
    let mut p = DbPackage::new(base, Status::INSTALLED);
    p.triggers_pending.push("ldconfig".into());
    assert!(status_file(&[p]).is_err());
    let mut p = DbPackage::new(base, "install ok triggers-pending".parse().unwrap());
    assert!(status_file(&[p.clone()]).is_err());
    p.triggers_pending.push("ldconfig".into());
    assert!(status_file(&[p])
        .unwrap()
        .contains("Triggers-Pending: ldconfig\n"));
    // A package given twice.
    let twice = [
        DbPackage::new(base, Status::INSTALLED),
        DbPackage::new(base, Status::INSTALLED),
    ];
    assert!(status_file(&twice).is_err());

    let mut opts = DbOptions::new("amd64", Timestamp::from_secs(T));
    opts.foreign_archs.push("i386".into());
    opts.diversions.push(Diversion {
        from: "/bin/sh".into(),
        to: "/bin/sh.distrib".into(),
        package: Some("dash".into()),
    });
    opts.statoverrides.push(StatOverride {
        user: "root".into(),
        group: "crontab".into(),
        mode: 0o2755,
        path: "/usr/bin/crontab".into(),
    });
    let db: Vec<DbPackage<'_>> = own
        .packages()
        .iter()
        .map(|p| DbPackage::new(p, Status::INSTALLED))
        .collect();
    write_database(&mut tree, &db, &opts).unwrap();
    let read = |p: &str| {
        let id = tree
            .lookup(format!("var/lib/dpkg/{p}").as_bytes())
            .unwrap_or_else(|| panic!("{p}"));
        let node = tree.node(id);
        let NodeKind::File(d) = &node.kind else {
            panic!("{p}")
        };
        let mut buf = vec![0u8; d.len() as usize];
        d.open().unwrap().read_exact_at(0, &mut buf).unwrap();
        (String::from_utf8(buf).unwrap(), node.meta.mode)
    };
    assert_eq!(read("arch"), ("amd64\ni386\n".into(), 0o644));
    assert_eq!(read("diversions").0, "/bin/sh\n/bin/sh.distrib\ndash\n");
    assert_eq!(
        read("statoverride").0,
        "root crontab 2755 /usr/bin/crontab\n"
    );
    assert_eq!(read("info/format").0, "1\n");
    assert_eq!(read("available").0, "");
    assert_eq!(
        read("triggers/File").0,
        "/usr/share/base-thing/hooks base-thing/noawait\n/usr/lib/base-thing base-thing\n"
    );
    assert_eq!(
        read("triggers/base-thing-reload").0,
        "base-thing\nnomd5/noawait\n"
    );
    assert_eq!(read("lock").1, 0o640);
    assert_eq!(read("triggers/Lock").1, 0o600);
    assert_eq!(read("info/base-thing.postinst").1, 0o755);
    assert_eq!(
        read("info/libfoo1:amd64.triggers").0,
        "activate-noawait ldconfig\n"
    );
    assert_eq!(
        read("info/libfoo1:amd64.shlibs").0,
        "libfoo 1 libfoo1 (>= 1.2)\n"
    );
    for dir in ["updates", "alternatives", "info", "triggers"] {
        let id = tree
            .lookup(format!("var/lib/dpkg/{dir}").as_bytes())
            .unwrap();
        assert!(matches!(tree.node(id).kind, NodeKind::Dir(_)), "{dir}");
    }
    // Writing again replaces the files rather than failing.
    write_database(&mut tree, &db, &opts).unwrap();
}

/// Real packages without a `preinst` (so dpkg runs nothing) unpacked by
/// `dpkg --unpack` and by ami must give the same database and tree.
/// `AMI_E2E=1` only: needs `apt-get download`.
#[test]
fn e2e_real_packages_unpack_like_dpkg() {
    if std::env::var_os("AMI_E2E").is_none_or(|v| v != "1") {
        eprintln!("skipped: set AMI_E2E=1 to fetch real packages with apt-get download");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dl = tmp.path().join("debs");
    fs::create_dir(&dl).unwrap();
    run(Command::new("apt-get")
        .args(["download", "base-files", "coreutils", "dash"])
        .current_dir(&dl));
    let mut debs: Vec<(PathBuf, String)> = fs::read_dir(&dl)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let sha = sha256(&fs::read(&p).unwrap());
            (p, sha)
        })
        .collect();
    debs.sort();
    let real = tmp.path().join("real");
    for (link, dir) in SKELETON {
        fs::create_dir_all(real.join(dir)).unwrap();
        std::os::unix::fs::symlink(dir, real.join(link)).unwrap();
        run(Command::new("touch")
            .args(["-h", "-d", &format!("@{T}")])
            .arg(real.join(link)));
    }
    fs::create_dir_all(real.join("var/lib/dpkg/info")).unwrap();
    fs::create_dir_all(real.join("var/lib/dpkg/updates")).unwrap();
    fs::write(real.join("var/lib/dpkg/status"), "").unwrap();
    run(dpkg(&real)
        .arg("--force-depends")
        .arg("--unpack")
        .args(debs.iter().map(|d| &d.0)));
    let ours = tmp.path().join("ours");
    install_with_ami(&ours, &tmp.path().join("cache"), &debs, Status::UNPACKED);

    assert_eq!(
        fs::read_to_string(ours.join("var/lib/dpkg/status")).unwrap(),
        fs::read_to_string(real.join("var/lib/dpkg/status")).unwrap()
    );
    for e in fs::read_dir(real.join("var/lib/dpkg/info")).unwrap() {
        let e = e.unwrap();
        let theirs = fs::read(e.path()).unwrap();
        let mine = fs::read(ours.join("var/lib/dpkg/info").join(e.file_name()))
            .unwrap_or_else(|err| panic!("{:?}: {err}", e.file_name()));
        assert!(theirs == mine, "info/{:?} differs", e.file_name());
    }
    // dpkg --unpack leaves conffiles as `.dpkg-new`; ami puts them in place.
    let a: BTreeMap<String, String> = describe(&real)
        .into_iter()
        .map(|(k, v)| (k.trim_end_matches(".dpkg-new").to_string(), v))
        .collect();
    let b = describe(&ours);
    assert_eq!(a, b);
}
