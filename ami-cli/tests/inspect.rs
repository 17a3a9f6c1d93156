//! `ami inspect` reads images written by `ami mkfs` and by mke2fs.

use std::fs;
use std::process::Command;

fn ami() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ami"))
}

#[test]
fn inspect_lists_describes_and_cats() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("etc")).unwrap();
    fs::write(src.join("etc/hostname"), b"inspected\n").unwrap();
    std::os::unix::fs::symlink("hostname", src.join("etc/name")).unwrap();
    let img = dir.path().join("img");
    let out = ami()
        .args(["mkfs", "--root-owner", "--label", "insp"])
        .arg(&src)
        .arg(&img)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = ami().arg("inspect").arg(&img).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("label:       insp"), "{text}");
    assert!(text.contains("metadata_csum"), "{text}");

    let out = ami().arg("inspect").arg(&img).arg("/etc").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("hostname") && text.contains("name -> hostname"),
        "{text}"
    );

    let out = ami()
        .arg("inspect")
        .arg("--cat")
        .arg(&img)
        .arg("/etc/hostname")
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"inspected\n");

    let out = ami()
        .arg("inspect")
        .arg(&img)
        .arg("/missing")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/missing"));

    // An image made by mke2fs -d (another writer) reads the same way.
    let other = dir.path().join("mke2fs.img");
    let st = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-d"])
        .arg(&src)
        .arg(&other)
        .arg("8M")
        .status();
    if st.map(|s| s.success()).unwrap_or(false) {
        let out = ami()
            .arg("inspect")
            .arg("--cat")
            .arg(&other)
            .arg("/etc/hostname")
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"inspected\n");
    }

    // Not an image: a clear error.
    let out = ami()
        .arg("inspect")
        .arg(src.join("etc/hostname"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("as ext4"));
}
