//! Interoperability with Amazon's own EC2 AMI tools (Ruby, 1.5.x), both
//! ways: `ec2-unbundle` unbundles our bundles, we unbundle
//! `ec2-bundle-image`'s, both tar streams have the same digest, and
//! `ec2-migrate-manifest` (the tools' only signature checker) accepts our
//! signature.
//!
//! The tools are under the Amazon Software License and are not part of
//! this repository or of CI. To run this test, unpack them somewhere
//! (e.g. the `ec2-ami-tools` 1.5.3 release), install Ruby, and point
//! `AMI_EC2_AMI_TOOLS` at the directory holding `bin/ec2-bundle-image`:
//!
//! ```sh
//! AMI_EC2_AMI_TOOLS=/opt/ec2-ami-tools cargo test -p ami-bundle --test ruby_tools -- --ignored
//! ```
//!
//! (It is `#[ignore]`d by default, so that CI, which has no copy of the
//! tools, lists it as ignored.)

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use ami_bundle::{unbundle_to_dir, SignatureCheck};
use ami_core::progress::NoProgress;
use common::*;

fn run_tool(tools: &Path, name: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(tools.join("bin").join(name))
        .args(args)
        .env("EC2_AMITOOL_HOME", tools)
        .output()
        .unwrap_or_else(|e| panic!("running {name} (is Ruby installed?): {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{name} failed ({}):\n{text}",
        out.status
    );
    text
}

fn digest(manifest: &Path) -> String {
    let text = fs::read_to_string(manifest).unwrap();
    text.split("<digest algorithm='SHA1'>").nth(1).unwrap()[..40].to_owned()
}

#[test]
#[ignore = "needs Amazon's ec2-ami-tools: set AMI_EC2_AMI_TOOLS and run with --ignored"]
fn amazon_tools_and_ours_read_each_others_bundles() {
    let tools = std::env::var_os("AMI_EC2_AMI_TOOLS")
        .map(PathBuf::from)
        .expect("AMI_EC2_AMI_TOOLS must name the directory of Amazon's ec2-ami-tools");
    let os = |s: &str| std::ffi::OsString::from(s);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A sparse image with data in a few places, more than one part.
    let image = d.join("interop.img");
    sparse_file(
        &image,
        40 << 20,
        &[(0, noise(12 << 20, 1)), (30 << 20, noise(100_000, 2))],
    );
    for sub in ["theirs", "ours", "from-theirs", "from-ours"] {
        fs::create_dir(d.join(sub)).unwrap();
    }
    let key = data("user-key.pem");
    let cert = data("user-cert.pem");

    // Theirs → ours.
    run_tool(
        &tools,
        "ec2-bundle-image",
        &[
            os("-i").as_os_str(),
            image.as_os_str(),
            os("-c").as_os_str(),
            cert.as_os_str(),
            os("-k").as_os_str(),
            key.as_os_str(),
            os("-u").as_os_str(),
            os("123456789012").as_os_str(),
            os("-r").as_os_str(),
            os("x86_64").as_os_str(),
            os("-d").as_os_str(),
            d.join("theirs").as_os_str(),
            os("--batch").as_os_str(),
        ],
    );
    let (path, _) = unbundle_to_dir(
        &d.join("theirs/interop.img.manifest.xml"),
        &user_key(),
        &SignatureCheck::PrivateKey,
        &d.join("theirs"),
        &d.join("from-theirs"),
        &NoProgress,
    )
    .unwrap();
    assert_same_file(&path, &image);

    // Ours → theirs.
    bundler("interop.img")
        .bundle_file(&image, &d.join("ours"), &mut rng(1), &NoProgress)
        .unwrap();
    let ours_manifest = d.join("ours/interop.img.manifest.xml");
    let text = run_tool(
        &tools,
        "ec2-unbundle",
        &[
            os("-m").as_os_str(),
            ours_manifest.as_os_str(),
            os("-k").as_os_str(),
            key.as_os_str(),
            os("-s").as_os_str(),
            d.join("ours").as_os_str(),
            os("-d").as_os_str(),
            d.join("from-ours").as_os_str(),
            os("--batch").as_os_str(),
        ],
    );
    assert!(text.contains("Unbundle complete"), "{text}");
    assert_same_file(&d.join("from-ours/interop.img"), &image);

    // The same tar stream.
    assert_eq!(
        digest(&ours_manifest),
        digest(&d.join("theirs/interop.img.manifest.xml"))
    );

    // Their signature checker accepts ours (it rewrites the manifest, so
    // on a copy).
    let copy = d.join("copy.manifest.xml");
    fs::copy(&ours_manifest, &copy).unwrap();
    run_tool(
        &tools,
        "ec2-migrate-manifest",
        &[
            os("-c").as_os_str(),
            cert.as_os_str(),
            os("-k").as_os_str(),
            key.as_os_str(),
            os("-m").as_os_str(),
            copy.as_os_str(),
            os("--no-mapping").as_os_str(),
            os("--region").as_os_str(),
            os("us-east-1").as_os_str(),
            os("--batch").as_os_str(),
        ],
    );
}
