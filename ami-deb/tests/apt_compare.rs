//! The resolver against apt itself, on the host's real indices
//! (`AMI_E2E=1`; needs apt with downloaded lists, i.e. after `apt-get
//! update`).
//!
//! Three requests, all without Recommends and with merged /usr: variant
//! Minbase, variant Default, and the image's set (Default plus
//! `usr-is-merged makedev sudo openssh-server ssh wget
//! linux-image-cloud-amd64`). For each, apt is asked to simulate installing
//! the same roots, in the same order, into an empty system
//! (`Dir::State::status=/dev/null`); both must choose the same packages at
//! the same versions (on Debian 12: 88, 156 and 177 packages), and apt's
//! choice must pass this crate's validation.

mod host;

use std::collections::BTreeMap;
use std::time::Instant;

use ami_deb::{resolve, validate, PackageIndex, Request, Variant};

const EXTRAS: &[&str] = &[
    "usr-is-merged",
    "makedev",
    "sudo",
    "openssh-server",
    "ssh",
    "wget",
    "linux-image-cloud-amd64",
];

/// Packages where this resolver and apt are allowed to differ, with the
/// reason. Empty: on Debian 12 they agree exactly.
const ALLOWED_DIFFERENCES: &[(&str, &str)] = &[];

fn load_host_index() -> PackageIndex {
    let mut index = PackageIndex::new(&host::arch());
    let priorities = host::priorities();
    for (label, text) in host::packages_indices() {
        let id = index
            .add_source(label.clone(), text)
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        // apt's pins: a backports suite in the host's sources (NotAutomatic)
        // must not win over the release.
        index.set_priority(id, priorities.get(&label).copied().unwrap_or(500));
    }
    index
}

/// `name -> version` from `apt-get -s` output (`Inst name (version ...)`).
fn apt_choice(roots: &[&str]) -> BTreeMap<String, String> {
    let mut args = vec![
        "-s",
        "-o",
        "Dir::State::status=/dev/null",
        "-o",
        "APT::Install-Recommends=false",
        "-o",
        "Debug::NoLocking=true",
        "install",
    ];
    args.extend_from_slice(roots);
    let out = host::run("apt-get", &args);
    let mut chosen = BTreeMap::new();
    for line in out.lines() {
        let Some(rest) = line.strip_prefix("Inst ") else {
            continue;
        };
        let (name, rest) = rest.split_once(' ').expect("Inst line has a name");
        let version = rest
            .strip_prefix('(')
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected apt line {line:?}"));
        chosen.insert(
            name.split(':').next().unwrap_or(name).to_owned(),
            version.to_owned(),
        );
    }
    assert!(!chosen.is_empty(), "apt-get -s installed nothing:\n{out}");
    chosen
}

/// Resolves `variant` plus `extras` and asks apt for the same roots;
/// returns the number of packages, after checking that both agree.
fn compare(index: &PackageIndex, variant: Variant, extras: &[&str]) -> usize {
    let request = Request::new(variant).packages(extras.iter().copied());
    let resolution = resolve(index, &request).unwrap_or_else(|e| panic!("{variant:?}: {e}"));

    // The roots, computed independently of the resolver from the raw
    // paragraphs of the candidates, sorted; then usr-is-merged (merged
    // /usr) and the extras.
    let mut base: Vec<&str> = index
        .names()
        .filter(|name| {
            let candidate = index.candidate(name).expect("listed names exist");
            // Suites apt never installs from automatically (backports)
            // contribute no variant members.
            if index.priority_of(candidate) < ami_deb::index::DEFAULT_PRIORITY {
                return false;
            }
            let p = candidate.paragraph();
            let essential = p.get("Essential") == Some("yes");
            let priority = p.get("Priority");
            match variant {
                Variant::Minbase => essential || priority == Some("required") || *name == "apt",
                Variant::Default => essential || matches!(priority, Some("required" | "important")),
                _ => unreachable!("only minbase and default are compared"),
            }
        })
        .collect();
    base.sort_unstable();
    let mut expected_roots: Vec<&str> = base;
    if !expected_roots.contains(&"usr-is-merged") {
        expected_roots.push("usr-is-merged");
    }
    for extra in extras {
        if !expected_roots.contains(extra) {
            expected_roots.push(extra);
        }
    }
    let roots: Vec<&str> = resolution.roots().map(|p| p.name()).collect();
    assert_eq!(roots, expected_roots, "{variant:?}: the resolver's roots");

    let ours: BTreeMap<String, String> = resolution
        .packages()
        .map(|p| (p.name().to_owned(), p.version().to_string()))
        .collect();
    let apt = apt_choice(&expected_roots);

    let allowed = |name: &str| ALLOWED_DIFFERENCES.iter().any(|(n, _)| *n == name);
    let only_ours: Vec<&String> = ours
        .keys()
        .filter(|n| !apt.contains_key(*n) && !allowed(n))
        .collect();
    let only_apt: Vec<&String> = apt
        .keys()
        .filter(|n| !ours.contains_key(*n) && !allowed(n))
        .collect();
    let versions: Vec<String> = ours
        .iter()
        .filter_map(|(n, v)| {
            apt.get(n)
                .filter(|a| *a != v)
                .map(|a| format!("{n}: ours {v}, apt {a}"))
        })
        .collect();
    assert!(
        only_ours.is_empty() && only_apt.is_empty() && versions.is_empty(),
        "{variant:?} {extras:?}: differences from apt:\nonly ours: {only_ours:?}\nonly apt: {only_apt:?}\nversions: {versions:?}"
    );
    assert!(ours.contains_key("usr-is-merged") && !ours.contains_key("usrmerge"));
    assert!(
        !ours.contains_key("perl"),
        "merged /usr must not pull in perl"
    );

    // apt's own choice passes this crate's validation.
    let apt_ids: Vec<_> = apt
        .iter()
        .map(|(n, v)| {
            index
                .lookup(n)
                .find(|p| p.version().as_str() == v)
                .unwrap_or_else(|| panic!("apt chose {n} {v}, which the index lacks"))
                .id()
        })
        .collect();
    validate(index, &apt_ids).unwrap();
    eprintln!(
        "{variant:?} + {extras:?}: {} packages, same as apt",
        ours.len()
    );
    ours.len()
}

#[test]
fn same_choice_as_apt() {
    if !host::e2e() {
        eprintln!("skipped: set AMI_E2E=1 to compare with apt on the host's indices");
        return;
    }
    let texts = host::packages_indices();
    let bytes: usize = texts.iter().map(|(_, t)| t.len()).sum();

    // Timing: parsing every index plus resolving the image's set
    // (decompressed input). Only reported: this is a debug build.
    let start = Instant::now();
    let mut index = PackageIndex::new(&host::arch());
    let priorities = host::priorities();
    for (label, text) in texts {
        let id = index.add_source(label.clone(), text).unwrap();
        index.set_priority(id, priorities.get(&label).copied().unwrap_or(500));
    }
    let parsed = start.elapsed();
    let request = Request::new(Variant::Default).packages(EXTRAS.iter().copied());
    let image = resolve(&index, &request).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "{} records ({bytes} bytes, {} sources) parsed in {parsed:?}, image set of {} resolved in {:?} more",
        index.len(),
        index.sources().len(),
        image.len(),
        start.elapsed() - parsed
    );
    // The research notes' facts about the image's set.
    assert!(
        image.get("lsb-base").is_none(),
        "sysvinit-utils provides lsb-base"
    );
    assert!(image.get("man-db").is_none() && image.get("ca-certificates").is_none());

    compare(&index, Variant::Minbase, &[]);
    compare(&index, Variant::Default, &[]);
    compare(&index, Variant::Default, EXTRAS);
}

#[test]
fn every_host_record_loads_and_resolves_its_relations() {
    if !host::e2e() {
        eprintln!("skipped: set AMI_E2E=1 to load the host's indices");
        return;
    }
    let index = load_host_index();
    assert!(index.len() > 1000, "only {} records", index.len());
    // Building every relation field (checked at load) must not panic, and
    // each field must write back to text that parses to the same thing.
    let mut groups = 0;
    for p in index.packages() {
        for kind in ami_deb::relation::RelationKind::ALL {
            let rel = p.relations(kind);
            groups += rel.len();
            if !rel.is_empty() {
                let again =
                    ami_deb::relation::Relations::parse(kind.field_name(), &rel.to_string())
                        .unwrap();
                assert_eq!(&again, rel, "{p} {kind}");
            }
        }
        assert_eq!(p.paragraph().get("Package"), Some(p.name()));
    }
    assert!(groups > 10_000);
    // Every package with a candidate has a consistent lookup order.
    for name in index.names() {
        let versions: Vec<_> = index.lookup(name).map(|p| p.version().clone()).collect();
        assert!(
            versions.windows(2).all(|w| w[0] >= w[1]),
            "{name}: {versions:?}"
        );
    }
}
