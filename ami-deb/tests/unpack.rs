//! `.deb` reading and unpacking into a tree: packages made with
//! `fixtures::deb::DebBuilder`, checked against the real `dpkg-deb` where
//! it helps, and (with `AMI_E2E=1`) real Debian packages fetched with
//! `apt-get download`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use ami_core::{DeviceNumber, Metadata, NodeKind, Timestamp, Tree};
use ami_deb::deb::{Compression as DebCompression, DebError, DebFile, TarEntryKind, TarError};
use ami_deb::unpack::{
    merged_usr_skeleton, Ownership, PreparedDeb, ResolveError, UnpackError, Unpacker,
};
use fixtures::deb::{ar_archive, Compression, DebBuilder};
use sha2::{Digest, Sha256};

const T: i64 = 1_672_531_200;

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes the package into `dir` and returns its path and digest.
fn write_deb(dir: &Path, b: &DebBuilder) -> (PathBuf, String) {
    let bytes = b.build();
    let path = dir.join(format!("{}.deb", b.name()));
    fs::write(&path, &bytes).unwrap();
    (path, sha256(&bytes))
}

struct Env {
    dir: tempfile::TempDir,
    unpacker: Unpacker,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let unpacker = Unpacker::new(dir.path().join("cache"));
        fs::create_dir(dir.path().join("debs")).unwrap();
        Env { dir, unpacker }
    }

    fn prepare(&self, b: &DebBuilder) -> Result<PreparedDeb, UnpackError> {
        let (path, sha) = write_deb(&self.dir.path().join("debs"), b);
        self.unpacker.prepare(&path, &sha)
    }

    fn deb_path(&self, name: &str) -> PathBuf {
        self.dir.path().join("debs").join(format!("{name}.deb"))
    }
}

fn skeleton() -> Tree {
    let mut tree = Tree::new(Metadata::new(0o755).times(Timestamp::from_secs(T)));
    merged_usr_skeleton(&mut tree, Timestamp::from_secs(T)).unwrap();
    tree
}

fn contents(tree: &Tree, path: &str) -> Vec<u8> {
    let id = tree
        .lookup(path.as_bytes())
        .unwrap_or_else(|| panic!("{path} missing"));
    let NodeKind::File(data) = &tree.node(id).kind else {
        panic!("{path} is not a file")
    };
    let mut buf = vec![0u8; data.len() as usize];
    data.open().unwrap().read_exact_at(0, &mut buf).unwrap();
    buf
}

/// A description of everything reachable in a tree, to compare trees.
fn snapshot(tree: &Tree) -> Vec<(Vec<u8>, String)> {
    tree.walk()
        .map(|(p, id)| (p, format!("{:?} {}", tree.node(id), tree.link_count(id))))
        .collect()
}

fn rich_package(c: Compression) -> DebBuilder {
    DebBuilder::new("rich", "1:2.0-1", "amd64")
        .depends("libc6 (>= 2.34)")
        .dir("/var/mail", 0o2775)
        .owned(0, 8, "root", "mail")
        .file("/usr/bin/rich", b"#!/bin/sh\necho rich\n", 0o755)
        .file("/usr/bin/chage", b"chage binary", 0o2755)
        .owned(0, 42, "root", "shadow")
        .file("/usr/bin/sudo", b"sudo binary", 0o4755)
        .dir("/tmp", 0o1777)
        .hardlink("/usr/bin/rich-again", "/usr/bin/rich")
        .symlink("/usr/bin/rich-link", "rich")
        .device("/dev/null", false, 1, 3, 0o666)
        .device("/dev/sda", true, 8, 0, 0o660)
        .owned(0, 6, "root", "disk")
        .device("/dev/big", false, 4095, 1_048_575, 0o600)
        .fifo("/run/initctl", 0o600)
        .file(
            &format!("/usr/share/rich/{}", "n".repeat(200)),
            b"long name",
            0o644,
        )
        .file("/usr/share/rich/empty", b"", 0o644)
        .file("/usr/share/rich/big", &fixtures::pattern(3, 300_000), 0o644)
        .conffile("/etc/rich.conf", b"setting=1\n")
        .postinst("#!/bin/sh\nset -e\n")
        .compression(c)
}

#[test]
fn builder_output_is_read_by_dpkg_deb() {
    let dir = tempfile::tempdir().unwrap();
    for c in Compression::ALL {
        let b = rich_package(c);
        let (path, _) = write_deb(dir.path(), &b);
        let out = Command::new("dpkg-deb")
            .arg("--info")
            .arg(&path)
            .output()
            .expect("dpkg-deb must be installed to run this test");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let info = String::from_utf8(out.stdout).unwrap();
        assert!(info.contains(" Package: rich\n"), "{info}");
        assert!(info.contains(" Version: 1:2.0-1\n"), "{info}");
        assert!(info.contains("postinst"), "{info}");

        let out = Command::new("dpkg-deb")
            .arg("--contents")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Columns are aligned with a varying number of spaces.
        let listing: String = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") + "\n")
            .collect();
        for needle in [
            "-rwxr-sr-x root/shadow 12 2023-01-01 00:00 ./usr/bin/chage\n",
            "-rwsr-xr-x root/root 11 2023-01-01 00:00 ./usr/bin/sudo\n",
            "drwxrwsr-x root/mail 0 2023-01-01 00:00 ./var/mail/\n",
            "drwxrwxrwt root/root 0 2023-01-01 00:00 ./tmp/\n",
            "crw-rw-rw- root/root 1,3 2023-01-01 00:00 ./dev/null\n",
            "brw-rw---- root/disk 8,0 2023-01-01 00:00 ./dev/sda\n",
            "crw------- root/root 4095,1048575 2023-01-01 00:00 ./dev/big\n",
            "prw------- root/root 0 2023-01-01 00:00 ./run/initctl\n",
            "lrwxrwxrwx root/root 0 2023-01-01 00:00 ./usr/bin/rich-link -> rich\n",
            "./usr/bin/rich-again link to ./usr/bin/rich\n",
        ] {
            assert!(listing.contains(needle), "{needle:?} not in\n{listing}");
        }
        // Symbolic links come last, as dpkg-deb orders them.
        assert!(listing.trim_end().ends_with("./usr/bin/rich-link -> rich"));

        let x = dir.path().join(format!("x{}", c.extension()));
        let out = Command::new("dpkg-deb")
            .arg("-x")
            .arg(&path)
            .arg(&x)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            fs::read(x.join("usr/share/rich/big")).unwrap(),
            fixtures::pattern(3, 300_000)
        );
        let long = x.join(format!("usr/share/rich/{}", "n".repeat(200)));
        assert_eq!(fs::read(long).unwrap(), b"long name");
        // The md5sums member checks out against the extracted files.
        let out = Command::new("dpkg-deb")
            .arg("-e")
            .arg(&path)
            .arg(x.join("DEBIAN"))
            .output()
            .unwrap();
        assert!(out.status.success());
        let md5sums = fs::read_to_string(x.join("DEBIAN/md5sums")).unwrap();
        assert!(
            !md5sums.contains("etc/rich.conf"),
            "conffiles are not in md5sums"
        );
        let out = Command::new("md5sum")
            .arg("-c")
            .arg("--quiet")
            .arg(x.join("DEBIAN/md5sums"))
            .current_dir(&x)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn unpack_every_compression() {
    for c in Compression::ALL {
        let env = Env::new();
        let deb = env.prepare(&rich_package(c)).unwrap();
        assert_eq!(deb.name(), "rich");
        assert_eq!(deb.version().as_str(), "1:2.0-1");
        assert_eq!(deb.architecture(), "amd64");
        assert!(!deb.cache_hit());
        let expect = DebCompression::from_extension(c.extension()).unwrap();
        assert_eq!(deb.data_compression(), expect);
        assert!(deb
            .tar_path()
            .starts_with(env.unpacker.cache_dir().join("tar")));
        assert_eq!(fs::metadata(deb.tar_path()).unwrap().len(), deb.tar_size());
        assert_eq!(deb.tar_size() % 10240, 0);

        let mut tree = skeleton();
        let mut own = Ownership::new("amd64");
        let pkg = env.unpacker.unpack_into(&mut tree, &deb, &mut own).unwrap();
        assert_eq!(pkg.info_name(), "rich");

        // Contents, read back through the tree, are the shipped bytes.
        assert_eq!(contents(&tree, "usr/bin/rich"), b"#!/bin/sh\necho rich\n");
        assert_eq!(
            contents(&tree, "usr/share/rich/big"),
            fixtures::pattern(3, 300_000)
        );
        assert_eq!(contents(&tree, "usr/share/rich/empty"), b"");
        let long = format!("usr/share/rich/{}", "n".repeat(200));
        assert_eq!(contents(&tree, &long), b"long name");
        // ... and referenced in place in the cached tar, not copied.
        let id = tree.lookup(b"usr/share/rich/big").unwrap();
        let NodeKind::File(data) = &tree.node(id).kind else {
            panic!()
        };
        match data.source() {
            ami_core::Source::Host { path, offset } => {
                assert_eq!(&**path, deb.tar_path());
                assert_eq!(offset % 512, 0);
            }
            other => panic!("contents held as {other:?}"),
        }

        // Owners, modes, times.
        let meta = |p: &str| tree.node(tree.lookup(p.as_bytes()).unwrap()).meta.clone();
        let chage = meta("usr/bin/chage");
        assert_eq!((chage.uid, chage.gid, chage.mode), (0, 42, 0o2755));
        assert_eq!(chage.mtime, Timestamp::from_secs(T));
        assert_eq!(chage.atime, chage.mtime);
        assert_eq!(chage.ctime, chage.mtime);
        assert_eq!(meta("usr/bin/sudo").mode, 0o4755);
        assert_eq!(meta("tmp").mode, 0o1777);
        assert_eq!((meta("var/mail").mode, meta("var/mail").gid), (0o2775, 8));
        assert_eq!(meta("usr/bin/rich-link").mode, 0o777);

        // Devices, fifo, symlink, hard link.
        let kind = |p: &str| tree.node(tree.lookup(p.as_bytes()).unwrap()).kind.clone();
        assert_eq!(
            kind("dev/null"),
            NodeKind::CharDevice(DeviceNumber { major: 1, minor: 3 })
        );
        assert_eq!(
            kind("dev/sda"),
            NodeKind::BlockDevice(DeviceNumber { major: 8, minor: 0 })
        );
        assert_eq!(meta("dev/sda").gid, 6);
        assert_eq!(
            kind("dev/big"),
            NodeKind::CharDevice(DeviceNumber {
                major: 4095,
                minor: 1_048_575
            })
        );
        assert_eq!(kind("run/initctl"), NodeKind::Fifo);
        assert_eq!(
            kind("usr/bin/rich-link"),
            NodeKind::Symlink(b"rich".to_vec().into())
        );
        let a = tree.lookup(b"usr/bin/rich").unwrap();
        assert_eq!(tree.lookup(b"usr/bin/rich-again"), Some(a));
        assert_eq!(tree.link_count(a), 2);

        // The file list: as shipped, `/.` first, symbolic links last.
        let list = String::from_utf8(pkg.list_file()).unwrap();
        assert!(list.starts_with("/.\n/dev\n/dev/big\n"), "{list}");
        assert!(list.ends_with("/usr/bin/rich-link\n"), "{list}");
        assert!(list.contains("\n/usr/bin/rich-again\n"));
        assert_eq!(list.lines().count(), deb.entries().len());

        // Conffiles with the MD5 of their contents.
        assert_eq!(pkg.conffiles().len(), 1);
        assert_eq!(pkg.conffiles()[0].path, "/etc/rich.conf");
        assert_eq!(
            pkg.conffiles()[0].md5,
            format!("{:x}", md5::Md5::digest(b"setting=1\n"))
        );
        assert_eq!(contents(&tree, "etc/rich.conf"), b"setting=1\n");
        let scripts: Vec<&str> = pkg.maintainer_scripts().map(|m| m.name.as_str()).collect();
        assert_eq!(scripts, ["postinst"]);
        assert_eq!(pkg.control_archive().get("postinst").unwrap().mode, 0o755);
        assert!(pkg.control_archive().get("md5sums").is_some());
        assert_eq!(pkg.control().get("Depends"), Some("libc6 (>= 2.34)"));
        assert_eq!(own.owners_of(b"/usr/bin/rich").count(), 1);
        assert_eq!(own.owners_of(b"usr").count(), 1);
    }
}

#[test]
fn merged_usr_redirects_and_lists_as_shipped() {
    let env = Env::new();
    let deb = env
        .prepare(
            &DebBuilder::new("zlib1g", "1:1.2.13", "amd64")
                .multi_arch("same")
                .file("/bin/foo", b"foo", 0o755)
                .file("/lib/x86_64-linux-gnu/libz.so.1.2.13", b"\x7fELF", 0o644)
                .symlink("/lib/x86_64-linux-gnu/libz.so.1", "libz.so.1.2.13")
                .symlink("/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/ld.so"),
        )
        .unwrap();
    let mut tree = skeleton();
    let mut own = Ownership::new("amd64");
    let pkg = env.unpacker.unpack_into(&mut tree, &deb, &mut own).unwrap();
    assert_eq!(pkg.info_name(), "zlib1g:amd64");
    // The merged-/usr links are kept...
    assert_eq!(
        tree.node(tree.lookup(b"bin").unwrap()).kind,
        NodeKind::Symlink(b"usr/bin".to_vec().into())
    );
    assert_eq!(
        tree.node(tree.lookup(b"lib").unwrap()).kind,
        NodeKind::Symlink(b"usr/lib".to_vec().into())
    );
    // ... and the files land under /usr.
    assert_eq!(contents(&tree, "usr/bin/foo"), b"foo");
    assert_eq!(
        contents(&tree, "usr/lib/x86_64-linux-gnu/libz.so.1.2.13"),
        b"\x7fELF"
    );
    assert!(tree.lookup(b"usr/lib/x86_64-linux-gnu/libz.so.1").is_some());
    assert!(tree.lookup(b"usr/lib64/ld-linux-x86-64.so.2").is_some());
    let shipped: Vec<String> = pkg
        .files()
        .iter()
        .map(|f| String::from_utf8_lossy(&f.shipped).into_owned())
        .collect();
    assert!(shipped.contains(&"/bin/foo".to_string()));
    assert!(shipped.contains(&"/bin".to_string()));
    let foo = pkg
        .files()
        .iter()
        .find(|f| &*f.shipped == b"/bin/foo")
        .unwrap();
    assert_eq!(&*foo.canonical, b"usr/bin/foo");
    assert_eq!(
        own.owners_of(b"usr/bin/foo").next().unwrap().name(),
        "zlib1g"
    );
    assert_eq!(own.owners_of(b"bin/foo").count(), 0);
}

#[test]
fn directory_symlinks_are_followed_and_kept() {
    let env = Env::new();
    let a = env
        .prepare(
            &DebBuilder::new("a", "1", "all")
                .dir("/opt/real", 0o700)
                .symlink("/opt/link", "real")
                .symlink("/opt/abs", "/opt/real"),
        )
        .unwrap();
    let b = env
        .prepare(
            &DebBuilder::new("b", "1", "all")
                .dir("/opt/link", 0o755)
                .file("/opt/link/file", b"via link", 0o644)
                .file("/opt/abs/other", b"via absolute link", 0o644)
                // A symbolic link to the same directory as the existing
                // one is kept too.
                .symlink("/opt/link", "./real"),
        )
        .unwrap();
    let mut tree = skeleton();
    let mut own = Ownership::new("amd64");
    env.unpacker.unpack_into(&mut tree, &a, &mut own).unwrap();
    let pkg_b = env.unpacker.unpack_into(&mut tree, &b, &mut own).unwrap();
    assert_eq!(contents(&tree, "opt/real/file"), b"via link");
    assert_eq!(contents(&tree, "opt/real/other"), b"via absolute link");
    assert_eq!(
        tree.node(tree.lookup(b"opt/link").unwrap()).kind,
        NodeKind::Symlink(b"real".to_vec().into())
    );
    // The first package's directory metadata wins.
    assert_eq!(
        tree.node(tree.lookup(b"opt/real").unwrap()).meta.mode,
        0o700
    );
    assert!(pkg_b
        .files()
        .iter()
        .any(|f| &*f.shipped == b"/opt/link/file"));
}

#[test]
fn hostile_paths_are_refused_and_the_tree_is_unchanged() {
    let env = Env::new();
    let mut tree = skeleton();
    let mut own = Ownership::new("amd64");
    let evil = env
        .prepare(
            &DebBuilder::new("evil", "1", "all")
                .symlink("/escape", "../../..")
                .symlink("/up", "/..")
                .symlink("/loop", "loop"),
        )
        .unwrap();
    env.unpacker
        .unpack_into(&mut tree, &evil, &mut own)
        .unwrap();
    let before = snapshot(&tree);

    // `..` in the archive itself: refused while listing.
    let err = env
        .prepare(&DebBuilder::new("dotdot", "1", "all").raw(b"../evil", b"x", None))
        .unwrap_err();
    assert!(
        matches!(
            &err,
            UnpackError::DataTar {
                source: TarError::BadPath { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("'..'"), "{err}");
    let err = env
        .prepare(&DebBuilder::new("dotdot2", "1", "all").raw(b"./usr/../../etc/x", b"x", None))
        .unwrap_err();
    assert!(matches!(&err, UnpackError::DataTar { .. }), "{err}");
    let err = env
        .prepare(&DebBuilder::new("hl", "1", "all").raw_hardlink(b"./x", b"../../etc/shadow"))
        .unwrap_err();
    assert!(matches!(&err, UnpackError::DataTar { .. }), "{err}");

    // Absolute names are taken relative to the root, as dpkg does.
    let abs = env
        .prepare(&DebBuilder::new("abs", "1", "all").raw(b"/etc/abs", b"abs", None))
        .unwrap();
    assert_eq!(&*abs.entries()[1].path, b"etc/abs");

    // `..` through a symbolic link: refused, and everything the package
    // added before is undone.
    for (name, path) in [
        ("via-escape", &b"./escape/etc/passwd"[..]),
        ("via-up", b"./up/etc/passwd"),
        ("via-loop", b"./loop/x"),
        ("via-missing", b"./nowhere/x"),
        ("via-file", b"./usr/share/early/file/x"),
    ] {
        let deb = env
            .prepare(
                &DebBuilder::new(name, "1", "all")
                    .file("/usr/share/early/file", b"added first", 0o644)
                    .raw(path, b"x", None),
            )
            .unwrap();
        let err = env
            .unpacker
            .unpack_into(&mut tree, &deb, &mut own)
            .unwrap_err();
        let UnpackError::Resolve {
            package, reason, ..
        } = &err
        else {
            panic!("{name}: {err}")
        };
        assert_eq!(package, name);
        match name {
            "via-escape" => assert_eq!(
                reason,
                &ResolveError::Escape {
                    link: "escape".into()
                }
            ),
            "via-up" => assert!(matches!(reason, ResolveError::Escape { .. })),
            "via-loop" => assert!(matches!(reason, ResolveError::Loop { .. })),
            "via-missing" => assert!(matches!(reason, ResolveError::Missing { .. })),
            _ => assert!(matches!(reason, ResolveError::NotADirectory { .. })),
        }
        assert!(err.to_string().contains(name), "{err}");
        assert_eq!(snapshot(&tree), before, "{name} left changes behind");
        assert_eq!(own.len(), 1);
        assert_eq!(own.owners_of(b"usr/share/early/file").count(), 0);
    }

    // A hard link to something that does not exist.
    let deb = env
        .prepare(&DebBuilder::new("dangling", "1", "all").raw_hardlink(b"./x", b"./no/such"))
        .unwrap();
    let err = env
        .unpacker
        .unpack_into(&mut tree, &deb, &mut own)
        .unwrap_err();
    assert!(matches!(err, UnpackError::HardLink { .. }), "{err}");
    assert_eq!(snapshot(&tree), before);
}

#[test]
fn file_conflicts_and_replaces() {
    let env = Env::new();
    let mut tree = skeleton();
    let mut own = Ownership::new("amd64");
    let a = env
        .prepare(
            &DebBuilder::new("old-tool", "1.0", "amd64")
                .file("/usr/bin/tool", b"old", 0o755)
                .file("/bin/aliased", b"old alias", 0o755)
                .conffile("/etc/tool.conf", b"old conf\n"),
        )
        .unwrap();
    env.unpacker.unpack_into(&mut tree, &a, &mut own).unwrap();
    let before = snapshot(&tree);

    // Same path, no Replaces.
    let b = env
        .prepare(&DebBuilder::new("new-tool", "2.0", "amd64").file("/usr/bin/tool", b"new", 0o755))
        .unwrap();
    let err = env
        .unpacker
        .unpack_into(&mut tree, &b, &mut own)
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, UnpackError::Conflict { .. }), "{msg}");
    assert!(
        msg.contains("new-tool") && msg.contains("old-tool 1.0"),
        "{msg}"
    );
    assert_eq!(snapshot(&tree), before);

    // The same file through the merged-/usr alias.
    let b = env
        .prepare(&DebBuilder::new("alias", "1", "amd64").file("/usr/bin/aliased", b"x", 0o755))
        .unwrap();
    let err = env
        .unpacker
        .unpack_into(&mut tree, &b, &mut own)
        .unwrap_err();
    assert!(
        matches!(&err, UnpackError::Conflict { path, canonical, .. }
            if path == "/usr/bin/aliased" && canonical == "/usr/bin/aliased"),
        "{err}"
    );

    // A versioned Replaces that does not match the installed version.
    let b = env
        .prepare(
            &DebBuilder::new("new-tool", "2.0", "amd64")
                .replaces("old-tool (<< 1.0)")
                .file("/usr/bin/tool", b"new", 0o755),
        )
        .unwrap();
    assert!(matches!(
        env.unpacker.unpack_into(&mut tree, &b, &mut own),
        Err(UnpackError::Conflict { .. })
    ));

    // With Replaces, the path moves to the new package.
    let b = env
        .prepare(
            &DebBuilder::new("new-tool", "2.0", "amd64")
                .replaces("old-tool (<< 2.0)")
                .file("/usr/bin/tool", b"new", 0o755)
                .file("/usr/bin/aliased", b"new alias", 0o755)
                .conffile("/etc/tool.conf", b"new conf\n"),
        )
        .unwrap();
    env.unpacker.unpack_into(&mut tree, &b, &mut own).unwrap();
    assert_eq!(contents(&tree, "usr/bin/tool"), b"new");
    assert_eq!(contents(&tree, "usr/bin/aliased"), b"new alias");
    let old = own.get("old-tool").unwrap();
    assert!(!old.files().iter().any(|f| &*f.shipped == b"/usr/bin/tool"));
    assert!(!old.files().iter().any(|f| &*f.shipped == b"/bin/aliased"));
    assert!(
        old.files().iter().any(|f| &*f.shipped == b"/usr/bin"),
        "directories stay shared"
    );
    assert!(old.conffiles()[0].obsolete);
    let owners: Vec<&str> = own.owners_of(b"usr/bin/tool").map(|p| p.name()).collect();
    assert_eq!(owners, ["new-tool"]);
    let owners: Vec<&str> = own.owners_of(b"usr/bin").map(|p| p.name()).collect();
    assert_eq!(owners, ["old-tool", "new-tool"]);

    // An installed package that Replaces the new one keeps its file, and
    // the path is not listed for the new package.
    let c = env
        .prepare(
            &DebBuilder::new("older", "0.5", "amd64")
                .file("/usr/bin/tool", b"older", 0o755)
                .file("/usr/bin/older", b"older", 0o755),
        )
        .unwrap();
    let pkg = env
        .unpacker
        .unpack_into(&mut tree, &c, &mut own)
        .unwrap_err();
    assert!(matches!(pkg, UnpackError::Conflict { .. }), "{pkg}");
    let d = env
        .prepare(
            &DebBuilder::new("newest", "3", "amd64")
                .replaces("new-tool, older")
                .file("/usr/bin/tool", b"newest", 0o755),
        )
        .unwrap();
    env.unpacker.unpack_into(&mut tree, &d, &mut own).unwrap();
    let e = env
        .prepare(
            &DebBuilder::new("older", "0.5", "amd64")
                .file("/usr/bin/tool", b"older", 0o755)
                .file("/usr/bin/older", b"older", 0o755),
        )
        .unwrap();
    let pkg = env.unpacker.unpack_into(&mut tree, &e, &mut own).unwrap();
    assert!(!pkg.files().iter().any(|f| &*f.shipped == b"/usr/bin/tool"));
    assert!(pkg.files().iter().any(|f| &*f.shipped == b"/usr/bin/older"));
    assert_eq!(contents(&tree, "usr/bin/tool"), b"newest");

    // Unpacking a package twice is refused.
    assert!(matches!(
        env.unpacker.unpack_into(&mut tree, &d, &mut own),
        Err(UnpackError::AlreadyUnpacked { .. })
    ));
    // A directory is never replaced by a file.
    let f = env
        .prepare(&DebBuilder::new("dir-clash", "1", "amd64").file("/etc", b"x", 0o644))
        .unwrap();
    assert!(matches!(
        env.unpacker.unpack_into(&mut tree, &f, &mut own),
        Err(UnpackError::ReplaceDirectory { .. })
    ));
}

#[test]
fn corrupt_packages_give_clear_errors() {
    let env = Env::new();
    let good = rich_package(Compression::Xz).build();
    let dir = env.dir.path();
    let try_bytes = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        fs::write(&path, bytes).unwrap();
        let err = env.unpacker.prepare(&path, &sha256(bytes)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(name), "{msg} does not name the file");
        err
    };

    let err = try_bytes("truncated.deb", &good[..good.len() / 2]);
    assert!(
        matches!(err, UnpackError::Deb(DebError::TruncatedMember { ref member, .. }) if member == "data.tar.xz"),
        "{err}"
    );

    let mut bad = good.clone();
    bad[..8].copy_from_slice(b"!<arcX>\n");
    assert!(matches!(
        try_bytes("magic.deb", &bad),
        UnpackError::Deb(DebError::NotAnArchive { .. })
    ));

    // Flip bytes in the middle of the xz data member.
    let mut bad = good.clone();
    let n = bad.len();
    for b in &mut bad[n - 400..n - 300] {
        *b ^= 0x55;
    }
    let err = try_bytes("badxz.deb", &bad);
    assert!(
        matches!(err, UnpackError::Deb(DebError::Decompress { ref member, .. }) if member == "data.tar.xz"),
        "{err}"
    );
    // Nothing was left in the cache.
    let leftovers: Vec<_> = fs::read_dir(env.unpacker.cache_dir().join("tar"))
        .unwrap()
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let deb = |members: &[(&str, &[u8])]| ar_archive(members, 0);
    let ctl = DebBuilder::new("x", "1", "all").compression(Compression::Gzip);
    let ctl_gz = Compression::Gzip.compress(&ctl.control_tar());
    let data_gz = Compression::Gzip.compress(&ctl.data_tar());
    assert!(matches!(
        try_bytes("version.deb", &deb(&[("debian-binary", b"3.0\n")])),
        UnpackError::Deb(DebError::BadDebianBinary { .. })
    ));
    assert!(matches!(
        try_bytes("first.deb", &deb(&[("control.tar.gz", &ctl_gz)])),
        UnpackError::Deb(DebError::BadDebianBinary { .. })
    ));
    assert!(matches!(
        try_bytes(
            "nodata.deb",
            &deb(&[("debian-binary", b"2.0\n"), ("control.tar.gz", &ctl_gz)])
        ),
        UnpackError::Deb(DebError::MissingMember {
            member: "data.tar",
            ..
        })
    ));
    assert!(matches!(
        try_bytes(
            "bz2.deb",
            &deb(&[
                ("debian-binary", b"2.0\n"),
                ("control.tar.gz", &ctl_gz),
                ("data.tar.bz2", b"BZh")
            ])
        ),
        UnpackError::Deb(DebError::UnsupportedCompression { .. })
    ));
    assert!(matches!(
        try_bytes(
            "order.deb",
            &deb(&[
                ("debian-binary", b"2.0\n"),
                ("data.tar.gz", &data_gz),
                ("control.tar.gz", &ctl_gz)
            ])
        ),
        UnpackError::Deb(DebError::UnexpectedMember { .. })
    ));
    // Members starting with `_` are skipped, as dpkg does.
    let ok = deb(&[
        ("debian-binary", b"2.0\n"),
        ("_gpgorigin", b"sig"),
        ("control.tar.gz", &ctl_gz),
        ("data.tar.gz", &data_gz),
    ]);
    let path = dir.join("underscore.deb");
    fs::write(&path, &ok).unwrap();
    let f = DebFile::open(&path).unwrap();
    assert_eq!(f.data_member().compression, DebCompression::Gzip);
    env.unpacker.prepare(&path, &sha256(&ok)).unwrap();

    // A wrong digest is caught before anything is parsed.
    let (path, _) = write_deb(&dir.join("debs"), &ctl);
    let err = env.unpacker.prepare(&path, &"0".repeat(64)).unwrap_err();
    assert!(matches!(err, UnpackError::DigestMismatch { .. }), "{err}");
    assert!(matches!(
        env.unpacker.prepare(&path, "../../etc/passwd"),
        Err(UnpackError::BadDigest { .. })
    ));

    // A conffile that is not shipped.
    let mut b = DebBuilder::new("noconf", "1", "all").conffile("/etc/x", b"x");
    b = b.control_member("conffiles", b"/etc/x\n/etc/missing\n");
    let err = env.prepare(&b).unwrap_err();
    assert!(err.to_string().contains("/etc/missing"), "{err}");

    // A control file without a Version.
    let b = DebBuilder::new("nover", "1", "all");
    let text = b.control_text().replace("Version: 1\n", "");
    let b = b.control_member("control", text.as_bytes());
    let err = env.prepare(&b).unwrap_err();
    assert!(matches!(err, UnpackError::Control { .. }), "{err}");
    assert!(err.to_string().contains("Version"), "{err}");
    assert!(err.to_string().contains("nover.deb"), "{err}");
}

#[test]
fn warm_cache_skips_decompression() {
    let env = Env::new();
    let b = rich_package(Compression::Zstd);
    let first = env.prepare(&b).unwrap();
    assert!(!first.cache_hit());
    let meta1 = fs::metadata(first.tar_path()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let second = env.prepare(&b).unwrap();
    assert!(second.cache_hit());
    let meta2 = fs::metadata(second.tar_path()).unwrap();
    assert_eq!(meta1.ino(), meta2.ino(), "the cached tar was rewritten");
    assert_eq!(meta1.mtime_nsec(), meta2.mtime_nsec());
    assert_eq!(first.entries(), second.entries());
    // The cache is content-addressed: its name is the package's digest.
    assert_eq!(
        first.tar_path().file_name().unwrap().to_str().unwrap(),
        format!("{}.tar", first.sha256())
    );
    // A damaged cached tar is noticed and decompressed again.
    let tar = first.tar_path().to_path_buf();
    let mut bytes = fs::read(&tar).unwrap();
    bytes[700] ^= 1;
    fs::write(&tar, &bytes).unwrap();
    let third = env.prepare(&b).unwrap();
    assert!(!third.cache_hit());
    assert_eq!(fs::read(&tar).unwrap()[700], bytes[700] ^ 1);
    // So is a truncated one, or one without its recorded digest.
    let len = bytes.len();
    fs::write(&tar, &bytes[..len / 2]).unwrap();
    assert!(!env.prepare(&b).unwrap().cache_hit());
    let mut record = tar.clone().into_os_string();
    record.push(".sha256");
    fs::remove_file(&record).unwrap();
    assert!(!env.prepare(&b).unwrap().cache_hit());
    assert!(env.prepare(&b).unwrap().cache_hit());
    // A different file with the same digest claim fails verification
    // instead of picking up the cached tar.
    fs::write(env.deb_path("rich"), b"not the same").unwrap();
    assert!(matches!(
        env.unpacker.prepare(&env.deb_path("rich"), first.sha256()),
        Err(UnpackError::DigestMismatch { .. })
    ));
}

#[test]
fn prepare_all_matches_sequential_and_keeps_order() {
    let env = Env::new();
    let dir = env.dir.path().join("debs");
    let mut debs = Vec::new();
    for i in 0..7 {
        let b = DebBuilder::new(&format!("p{i}"), "1", "all")
            .file(
                &format!("/usr/share/p{i}/data"),
                &fixtures::pattern(i, 1000 * (i as usize + 1) * 50),
                0o644,
            )
            .compression(Compression::ALL[i as usize % 4]);
        debs.push(write_deb(&dir, &b));
    }
    let all = env.unpacker.prepare_all(&debs, 3).unwrap();
    assert_eq!(all.len(), 7);
    for (i, p) in all.iter().enumerate() {
        assert_eq!(p.name(), format!("p{i}"));
    }
    let mut tree = skeleton();
    let mut own = Ownership::new("amd64");
    for p in &all {
        env.unpacker.unpack_into(&mut tree, p, &mut own).unwrap();
    }
    assert_eq!(
        contents(&tree, "usr/share/p6/data"),
        fixtures::pattern(6, 350_000)
    );
    // An error is reported for the first failing package in input order.
    let mut bad = debs.clone();
    bad[4].1 = "f".repeat(64);
    bad[2].1 = "e".repeat(64);
    let err = env.unpacker.prepare_all(&bad, 2).unwrap_err();
    assert!(
        matches!(&err, UnpackError::DigestMismatch { path, .. } if path.ends_with("p2.deb")),
        "{err}"
    );
}

#[test]
fn data_tar_listing_keeps_names_and_ids() {
    let env = Env::new();
    let deb = env.prepare(&rich_package(Compression::None)).unwrap();
    let chage = deb
        .entries()
        .iter()
        .find(|e| &*e.path == b"usr/bin/chage")
        .unwrap();
    assert_eq!(&*chage.uname, b"root");
    assert_eq!(&*chage.gname, b"shadow");
    assert_eq!(chage.gid, 42);
    assert!(matches!(chage.kind, TarEntryKind::File { size: 12, .. }));
}

/// One line of `dpkg-deb -c`.
#[derive(Debug)]
struct Listed {
    mode: String,
    owner: String,
    size: String,
    path: String,
    target: Option<String>,
}

fn dpkg_deb_listing(deb: &Path) -> Vec<Listed> {
    let out = Command::new("dpkg-deb")
        .arg("-c")
        .arg(deb)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l
                .splitn(6, char::is_whitespace)
                .filter(|s| !s.is_empty())
                .collect();
            let mut it = l.split_whitespace();
            let mode = it.next().unwrap().to_string();
            let owner = it.next().unwrap().to_string();
            let size = it.next().unwrap().to_string();
            let _date = it.next().unwrap();
            let _time = it.next().unwrap();
            let rest: Vec<&str> = it.collect();
            let rest = rest.join(" ");
            let (path, target) = match rest.split_once(" -> ") {
                Some((p, t)) => (p.to_string(), Some(t.to_string())),
                None => match rest.split_once(" link to ") {
                    Some((p, t)) => (p.to_string(), Some(t.to_string())),
                    None => (rest, None),
                },
            };
            let _ = f;
            Listed {
                mode,
                owner,
                size,
                path,
                target,
            }
        })
        .collect()
}

fn mode_string(kind: &NodeKind, mode: u16) -> String {
    let t = match kind {
        NodeKind::File(_) => '-',
        NodeKind::Dir(_) => 'd',
        NodeKind::Symlink(_) => 'l',
        NodeKind::CharDevice(_) => 'c',
        NodeKind::BlockDevice(_) => 'b',
        NodeKind::Fifo => 'p',
        NodeKind::Socket => 's',
    };
    let mut s = String::from(t);
    let bits = [
        (0o400, 'r'),
        (0o200, 'w'),
        (0o100, 'x'),
        (0o040, 'r'),
        (0o020, 'w'),
        (0o010, 'x'),
        (0o004, 'r'),
        (0o002, 'w'),
        (0o001, 'x'),
    ];
    for (i, (bit, c)) in bits.iter().enumerate() {
        let mut ch = if mode & bit != 0 { *c } else { '-' };
        let special = match i {
            2 => Some((0o4000, 's', 'S')),
            5 => Some((0o2000, 's', 'S')),
            8 => Some((0o1000, 't', 'T')),
            _ => None,
        };
        if let Some((sbit, lower, upper)) = special {
            if mode & sbit != 0 {
                ch = if mode & bit != 0 { lower } else { upper };
            }
        }
        s.push(ch);
    }
    s
}

/// Real packages: `AMI_E2E=1` (needs `apt-get download`, so the network
/// and a configured apt).
#[test]
fn e2e_real_packages_match_dpkg_deb() {
    if std::env::var_os("AMI_E2E").is_none_or(|v| v != "1") {
        eprintln!("skipped: set AMI_E2E=1 to fetch real packages with apt-get download");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let names = [
        "coreutils",
        "base-files",
        "libc6",
        "openssh-server",
        "dash",
        "passwd",
        "sudo",
    ];
    let out = Command::new("apt-get")
        .arg("download")
        .args(names)
        .current_dir(dir.path())
        .output()
        .expect("apt-get");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut debs: Vec<(PathBuf, String)> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .map(|p| {
            let sha = sha256(&fs::read(&p).unwrap());
            (p, sha)
        })
        .collect();
    debs.sort();
    assert_eq!(debs.len(), names.len());
    let unpacker = Unpacker::new(dir.path().join("cache"));
    let prepared = unpacker.prepare_all(&debs, 2).unwrap();
    let mut tree = skeleton();
    let mut own = Ownership::new("amd64");
    for (deb, (path, _)) in prepared.iter().zip(&debs) {
        let pkg = unpacker.unpack_into(&mut tree, deb, &mut own).unwrap();
        let listing = dpkg_deb_listing(path);
        assert_eq!(listing.len(), deb.entries().len(), "{}", pkg.name());
        let by_path: BTreeMap<String, &ami_deb::unpack::ListEntry> = pkg
            .files()
            .iter()
            .map(|f| (String::from_utf8_lossy(&f.shipped).into_owned(), f))
            .collect();
        for l in &listing {
            let shipped = match l.path.trim_start_matches('.').trim_end_matches('/') {
                "" => "/.".to_string(),
                p => p.to_string(),
            };
            let entry = by_path
                .get(&shipped)
                .unwrap_or_else(|| panic!("{}: {shipped} not listed", pkg.name()));
            let id = tree
                .lookup(&entry.canonical)
                .unwrap_or_else(|| panic!("{shipped} not in the tree"));
            let node = tree.node(id);
            if shipped == "/." || l.mode.starts_with('d') {
                // Directories may be the merged-/usr links or shared.
                continue;
            }
            let (uname, gname) = l.owner.split_once('/').unwrap();
            let tar = deb
                .entries()
                .iter()
                .find(|e| e.list_path() == shipped.as_bytes())
                .unwrap();
            assert_eq!(
                (&*tar.uname, &*tar.gname),
                (uname.as_bytes(), gname.as_bytes())
            );
            assert_eq!(
                (node.meta.uid, node.meta.gid),
                (tar.uid, tar.gid),
                "{shipped}"
            );
            if l.mode.starts_with('h') {
                let target = l.target.as_deref().unwrap().trim_start_matches('.');
                let t = by_path[target];
                assert_eq!(tree.lookup(&t.canonical), Some(id), "{shipped}");
                continue;
            }
            assert_eq!(mode_string(&node.kind, node.meta.mode), l.mode, "{shipped}");
            match &node.kind {
                NodeKind::File(data) => {
                    assert_eq!(data.len().to_string(), l.size, "{shipped}");
                }
                NodeKind::Symlink(t) => {
                    assert_eq!(
                        Some(String::from_utf8_lossy(t).into_owned()),
                        l.target,
                        "{shipped}"
                    );
                }
                _ => {}
            }
        }
    }
    // The md5sums of every package match the unpacked contents.
    for pkg in own.packages() {
        let Some(m) = pkg.control_archive().get("md5sums") else {
            continue;
        };
        for line in String::from_utf8_lossy(&m.data).lines() {
            let (md5, path) = line.split_once("  ").unwrap();
            let entry = pkg
                .files()
                .iter()
                .find(|f| f.shipped[1..] == *path.as_bytes())
                .unwrap_or_else(|| panic!("{}: {path} not listed", pkg.name()));
            let id = tree.lookup(&entry.canonical).unwrap();
            let NodeKind::File(data) = &tree.node(id).kind else {
                panic!("{path}")
            };
            assert_eq!(ami_deb::unpack::md5_of(data).unwrap(), md5, "{path}");
        }
    }
}

/// Timings on a directory of real packages (not run by default):
/// `AMI_BENCH_DEBS=<dir> cargo test --release -p ami-deb --test unpack
/// bench -- --ignored --nocapture` (`AMI_BENCH_THREADS`, default 2).
#[test]
#[ignore]
fn bench_prepare_and_unpack() {
    use std::time::Instant;
    let Some(dir) = std::env::var_os("AMI_BENCH_DEBS") else {
        eprintln!("set AMI_BENCH_DEBS to a directory of .deb files");
        return;
    };
    let threads: usize = std::env::var("AMI_BENCH_THREADS").map_or(2, |t| t.parse().unwrap());
    let mut debs: Vec<(PathBuf, String)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .map(|p| {
            let sha = sha256(&fs::read(&p).unwrap());
            (p, sha)
        })
        .collect();
    debs.sort();
    let size: u64 = debs.iter().map(|d| fs::metadata(&d.0).unwrap().len()).sum();
    // Process CPU time (user + system) in seconds, from /proc.
    let cpu = || -> f64 {
        let stat = fs::read_to_string("/proc/self/stat").unwrap();
        let f: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
    };
    let cache = tempfile::tempdir().unwrap();
    let unpacker = Unpacker::new(cache.path());
    let (t, c) = (Instant::now(), cpu());
    let prepared = unpacker.prepare_all(&debs, threads).unwrap();
    let (cold, cold_cpu) = (t.elapsed(), cpu() - c);
    let tar: u64 = prepared.iter().map(|p| p.tar_size()).sum();
    let (t, c) = (Instant::now(), cpu());
    let warm_prepared = unpacker.prepare_all(&debs, threads).unwrap();
    let (warm, warm_cpu) = (t.elapsed(), cpu() - c);
    assert!(warm_prepared.iter().all(|p| p.cache_hit()));
    let t = Instant::now();
    let mut tree = skeleton();
    let mut own = Ownership::new("amd64");
    for p in &prepared {
        unpacker.unpack_into(&mut tree, p, &mut own).unwrap();
    }
    let unpack = t.elapsed();
    let t = Instant::now();
    let db: Vec<ami_deb::dpkgdb::DbPackage<'_>> = own
        .packages()
        .iter()
        .map(|p| ami_deb::dpkgdb::DbPackage::new(p, ami_deb::dpkgdb::Status::INSTALLED))
        .collect();
    let opts = ami_deb::dpkgdb::DbOptions::new("amd64", Timestamp::from_secs(T));
    ami_deb::dpkgdb::write_database(&mut tree, &db, &opts).unwrap();
    let database = t.elapsed();
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "{} packages, {:.1} MiB of .deb, {:.1} MiB of tar, {} threads\n\
         prepare (cold cache): {cold:.2?} ({:.1} MiB/s of .deb), {cold_cpu:.2} s of CPU\n\
         prepare (warm cache): {warm:.2?}, {warm_cpu:.2} s of CPU\n\
         unpack into the tree: {unpack:.2?} ({} nodes)\n\
         dpkg database:        {database:.2?}",
        debs.len(),
        mib(size),
        mib(tar),
        threads,
        mib(size) / cold.as_secs_f64(),
        tree.node_count(),
    );
}
