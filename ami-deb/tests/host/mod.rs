//! The host's apt indices, for the end-to-end tests (`AMI_E2E=1`).
//!
//! Uses `apt-get indextargets` to find the downloaded `Packages` files of
//! the configured suites and `apt-helper cat-file` to decompress them
//! (apt stores them plain, lz4- or gz-compressed depending on its
//! configuration), so the tests see exactly what apt sees.

#![allow(dead_code)]

use std::process::Command;

/// Whether the end-to-end tests are asked for.
pub fn e2e() -> bool {
    std::env::var("AMI_E2E").is_ok_and(|v| v == "1")
}

/// Runs a command and returns its stdout, panicking with a clear message if
/// it cannot run or fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (is apt/dpkg installed?): {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap_or_else(|e| panic!("{program}: output is not UTF-8: {e}"))
}

/// The host's native architecture (`dpkg --print-architecture`).
pub fn arch() -> String {
    run("dpkg", &["--print-architecture"]).trim().to_owned()
}

/// apt's pin priority of every downloaded `Packages` index, by label
/// (`release/component`), from the `NotAutomatic` and
/// `ButAutomaticUpgrades` fields of the suite's (In)Release file in apt's
/// lists directory.
#[allow(dead_code)]
pub fn priorities() -> std::collections::BTreeMap<String, i32> {
    let targets = run(
        "apt-get",
        &[
            "indextargets",
            "--format",
            "$(BASE_URI)|$(RELEASE)|$(COMPONENT)",
            "Identifier: Packages",
        ],
    );
    let mut out = std::collections::BTreeMap::new();
    for line in targets.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.split('|');
        let (Some(base), Some(release), Some(component)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let stem = base
            .split_once("://")
            .map_or(base, |(_, rest)| rest)
            .replace('/', "_");
        let text = ["InRelease", "Release"]
            .iter()
            .find_map(|f| std::fs::read_to_string(format!("/var/lib/apt/lists/{stem}{f}")).ok())
            .unwrap_or_default();
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
                .map(str::trim)
        };
        out.insert(
            format!("{release}/{component}"),
            ami_deb::index::release_priority(field("NotAutomatic"), field("ButAutomaticUpgrades")),
        );
    }
    out
}

/// `(label, text)` of every downloaded `Packages` index apt knows about,
/// labelled `release/component`. Panics if there is none (run `apt-get
/// update` first).
pub fn packages_indices() -> Vec<(String, String)> {
    let targets = run(
        "apt-get",
        &[
            "indextargets",
            "--format",
            "$(FILENAME)|$(RELEASE)|$(COMPONENT)",
            "Identifier: Packages",
        ],
    );
    let helper = ["/usr/lib/apt/apt-helper", "/usr/libexec/apt/apt-helper"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("apt-helper not found (is apt installed?)");
    let mut indices = Vec::new();
    for line in targets.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.split('|');
        let (Some(file), Some(release), Some(component)) =
            (fields.next(), fields.next(), fields.next())
        else {
            panic!("unexpected apt-get indextargets line {line:?}");
        };
        if !std::path::Path::new(file).exists() {
            continue;
        }
        let text = run(helper, &["cat-file", file]);
        indices.push((format!("{release}/{component}"), text));
    }
    assert!(
        !indices.is_empty(),
        "apt has no downloaded Packages indices: run apt-get update first"
    );
    indices
}
