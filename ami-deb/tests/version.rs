//! Debian version parsing and comparison.
//!
//! The hand-made table below was checked with `dpkg --compare-versions`;
//! with `AMI_E2E=1` the table is checked against dpkg again, and so is the
//! order of every distinct version string of the host's `Packages` indices
//! (see `e2e_host.rs`).

mod host;

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use ami_deb::{Error, Version};

/// `(a, dpkg operator, b)`, each verified with `dpkg --compare-versions`.
const TABLE: &[(&str, &str, &str)] = &[
    // From the research notes: the cases existing crates get wrong.
    ("0.9+ds0-3", "lt", "0.9+ds-4"),
    ("0.16.14+git221008-1", "gt", "0~svn146.0"),
    ("1.0~rc1", "lt", "1.0"),
    ("1:0.1", "gt", "9.9"),
    ("1.0-1", "gt", "1.0-1~bpo1"),
    ("1.0-1~bpo1", "lt", "1.0-1"),
    // An absent revision compares like "0"; so do absent epochs and
    // leading zeros.
    ("1.0", "eq", "1.0-0"),
    ("1.0", "eq", "0:1.0"),
    ("1.0", "eq", "1.00"),
    ("1a", "eq", "1a0"),
    ("0:0", "eq", "0"),
    ("1.0-0", "eq", "1.0-00"),
    ("1.02", "eq", "1.2"),
    // Tilde before everything, even the end; the end before letters;
    // letters before other characters.
    ("1.0", "lt", "1.0."),
    ("1.0+", "gt", "1.0a"),
    ("1.0~", "lt", "1.0"),
    ("1.0~~", "lt", "1.0~"),
    ("1.0~~~", "lt", "1.0~~"),
    ("1.0~~a", "lt", "1.0~"),
    ("1.0~a", "gt", "1.0~~"),
    ("1.0", "lt", "1.0a"),
    ("1.0a", "lt", "1.0b"),
    ("1.0a", "lt", "1.0+"),
    ("1.2a", "lt", "1.2+"),
    ("7.0p1", "lt", "7.0.1"),
    ("1.0-1~", "lt", "1.0-1"),
    ("1.0-0~", "lt", "1.0"),
    ("1.0-1.1", "gt", "1.0-1"),
    ("1.0-1+b1", "gt", "1.0-1"),
    ("1.0-1+b1", "lt", "1.0-1.1"),
    // Letters in a revision sort after digits at the same place.
    ("1.0-a", "gt", "1.0-1"),
    ("1:1.0-a.b", "gt", "1:1.0-a"),
    // Digit runs are numbers of any length.
    ("1.0-1", "lt", "1.0-2"),
    ("1.0-10", "gt", "1.0-9"),
    ("1.2.3", "lt", "1.10"),
    ("0", "lt", "0.0"),
    (
        "1.123456789012345678901234567890",
        "gt",
        "1.123456789012345678901234567889",
    ),
    ("1.0", "lt", "1.0-0.1"),
    // Epochs first.
    ("2:1.0", "gt", "1:9.9"),
    ("10:1", "gt", "9:1"),
    ("2147483647:1", "gt", "2147483646:99"),
    // The last hyphen separates the revision.
    ("1.0-1-1", "gt", "1.0-1"),
    // Archive-style versions.
    ("1.0+dfsg1-1", "gt", "1.0-1"),
    ("1.0~dfsg1-1", "lt", "1.0-1"),
    ("1.0+really0.9-1", "gt", "1.0-1"),
    ("2.36-9+deb12u4", "gt", "2.36-9"),
    ("3.0.22-1~deb12u2", "gt", "3.0.20-1~deb12u1"),
    ("9.2p1-2+deb12u3", "gt", "9.2p1-2"),
    ("1.9.13p3-1+deb12u1", "gt", "1.9.13p3-1"),
    ("2026f-0+deb12u1", "gt", "2026b-0+deb12u1"),
];

fn v(s: &str) -> Version {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn expected(op: &str) -> Ordering {
    match op {
        "lt" => Ordering::Less,
        "eq" => Ordering::Equal,
        "gt" => Ordering::Greater,
        _ => unreachable!("operator {op}"),
    }
}

#[test]
fn table_matches_dpkg() {
    for &(a, op, b) in TABLE {
        let (va, vb) = (v(a), v(b));
        assert_eq!(va.cmp(&vb), expected(op), "{a} {op} {b}");
        assert_eq!(vb.cmp(&va), expected(op).reverse(), "{b} vs {a}");
        assert_eq!(va == vb, op == "eq", "{a} == {b}");
    }
}

#[test]
fn table_sorts_consistently() {
    // Sorting every version of the table must respect every table entry:
    // catches an order that is not transitive.
    let mut all: Vec<Version> = TABLE.iter().flat_map(|(a, _, b)| [v(a), v(b)]).collect();
    all.sort();
    for &(a, op, b) in TABLE {
        let first = |x: &str| all.iter().position(|y| *y == v(x)).unwrap();
        let last = |x: &str| all.iter().rposition(|y| *y == v(x)).unwrap();
        match op {
            "lt" => assert!(last(a) < first(b), "{a} < {b}"),
            "gt" => assert!(first(a) > last(b), "{a} > {b}"),
            _ => assert_eq!(first(a), first(b), "{a} == {b}"),
        }
    }
}

#[test]
fn display_round_trips() {
    for s in [
        "1.0",
        "0:1.0",
        "1:2.3-4",
        "1.00-0",
        "2:1.0-a-3~bpo1+b2",
        "1.0~rc1",
    ] {
        let x = v(s);
        assert_eq!(x.to_string(), s);
        assert_eq!(x.as_str(), s);
        assert_eq!(v(&x.to_string()), x);
    }
    assert_eq!(v("  1.0-1\t").to_string(), "1.0-1");
    assert_eq!(format!("{:?}", v("1.0")), "Version(\"1.0\")");
}

#[test]
fn parts_are_split_like_dpkg() {
    let x = v("3:1.2-3-4");
    assert_eq!((x.epoch(), x.upstream(), x.revision()), (3, "1.2-3", "4"));
    assert!(x.has_explicit_epoch());
    let y = v("1.2");
    assert_eq!((y.epoch(), y.upstream(), y.revision()), (0, "1.2", ""));
    assert!(!y.has_explicit_epoch());
    assert_eq!(v("2147483647:1").epoch(), 2147483647);
}

/// `(text, dpkg's message)`: rejected by dpkg itself, so by both parsers.
const ERRORS: &[(&str, &str)] = &[
    ("", "version string is empty"),
    (" ", "version string is empty"),
    ("1 0", "version string has embedded spaces"),
    (":1.0", "epoch in version is empty"),
    ("a:1.0", "epoch in version is empty"),
    ("1a:1.0", "epoch in version is not number"),
    ("1:", "nothing after colon in version number"),
    ("1.0-", "revision number is empty"),
    ("-1", "version number is empty"),
    ("99999999999:1", "epoch in version is too big"),
    ("2147483648:1", "epoch in version is too big"),
];

/// `(text, dpkg's warning)`: dpkg only warns, the strict parser rejects.
const WARNINGS: &[(&str, &str)] = &[
    ("a1.0", "version number does not start with digit"),
    ("1.0_1", "invalid character in version number"),
    ("1.0-1_2", "invalid character in revision number"),
    ("1:1.0-a:b", "invalid character in revision number"),
    ("1.0\u{e9}", "invalid character in version number"),
];

#[test]
fn invalid_versions_are_rejected_with_dpkgs_reason() {
    for &(text, reason) in ERRORS {
        for result in [Version::parse(text), Version::parse_lenient(text)] {
            match result {
                Err(Error::InvalidVersion { version, reason: r }) => {
                    assert_eq!(version, text);
                    assert_eq!(r, reason, "{text:?}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        assert!(Version::check_lenient(text).is_err(), "{text:?}");
    }
    let e = Version::parse("1:").unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid version \"1:\": nothing after colon in version number"
    );
}

#[test]
fn warnings_are_errors_only_when_strict() {
    for &(text, reason) in WARNINGS {
        match text.parse::<Version>() {
            Err(Error::InvalidVersion { reason: r, .. }) => assert_eq!(r, reason, "{text:?}"),
            other => panic!("{text:?}: {other:?}"),
        }
        let lenient = Version::parse_lenient(text).unwrap();
        assert_eq!(lenient.as_str(), text);
        assert!(Version::check_lenient(text).is_ok());
    }
    // Lenient versions still compare as dpkg does.
    assert!(Version::parse_lenient("a1.0").unwrap() > Version::parse_lenient("1.0").unwrap());
}

#[test]
fn signed_epochs_are_rejected_unlike_dpkg() {
    // dpkg reads the epoch with strtol and so accepts "+1:1.0" (documented
    // deviation); "-1:1.0" dpkg rejects as negative.
    assert!(Version::parse_lenient("+1:1.0").is_err());
    assert!(Version::parse_lenient("-1:1.0").is_err());
}

#[test]
fn hash_is_consistent_with_equality() {
    use std::collections::HashSet;
    let set: HashSet<Version> = ["1.0", "0:1.0", "1.00", "1.0-0", "1.0-00", "01.0"]
        .iter()
        .map(|s| v(s))
        .collect();
    assert_eq!(set.len(), 1);
    let set: HashSet<Version> = ["1.0", "1.0.", "1.0~", "1.0-1", "1:1.0"]
        .iter()
        .map(|s| v(s))
        .collect();
    assert_eq!(set.len(), 5);
}

/// A version made of pieces that exercise every rule: epochs, digit runs
/// with leading zeros, letters, tildes, punctuation, revisions.
fn arbitrary_version() -> impl proptest::strategy::Strategy<Value = Version> {
    use proptest::prelude::*;
    let piece = prop_oneof![
        "[0-9]{1,3}",
        "0{1,2}[0-9]",
        "[a-c]{1,2}",
        Just("~".to_owned()),
        Just(".".to_owned()),
        Just("+".to_owned()),
    ];
    (
        proptest::option::of(0u32..3),
        "[0-9]{1,2}",
        proptest::collection::vec(piece.clone(), 0..5),
        proptest::option::of(proptest::collection::vec(piece, 1..4)),
    )
        .prop_filter_map("valid", |(epoch, first, rest, revision)| {
            let mut s = String::new();
            if let Some(e) = epoch {
                s.push_str(&format!("{e}:"));
            }
            s.push_str(&first);
            s.extend(rest);
            if let Some(r) = revision {
                s.push('-');
                s.extend(r);
            }
            Version::parse(&s).ok()
        })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    /// `Ord` is a total order consistent with `Eq` and `Hash`, and
    /// `Display` round-trips.
    #[test]
    fn order_laws(a in arbitrary_version(), b in arbitrary_version(), c in arbitrary_version()) {
        use std::hash::{BuildHasher, RandomState};
        proptest::prop_assert_eq!(a.cmp(&b), b.cmp(&a).reverse());
        proptest::prop_assert_eq!(a == b, a.cmp(&b) == Ordering::Equal);
        if a == b {
            let state = RandomState::new();
            proptest::prop_assert_eq!(state.hash_one(&a), state.hash_one(&b));
        }
        if a <= b && b <= c {
            proptest::prop_assert!(a <= c, "{} <= {} <= {}", a, b, c);
        }
        proptest::prop_assert_eq!(&v(&a.to_string()), &a);
        proptest::prop_assert_eq!(a.to_string(), a.as_str());
    }

    /// Equal versions written differently: padding digit runs with zeros,
    /// spelling out a zero epoch or adding a "-0" revision changes nothing.
    #[test]
    fn equal_spellings(a in arbitrary_version()) {
        use std::hash::{BuildHasher, RandomState};
        let state = RandomState::new();
        let epoch = if a.has_explicit_epoch() { format!("{}:", a.epoch()) } else { String::new() };
        let revision = if a.revision().is_empty() { String::new() } else { format!("-{}", a.revision()) };
        let mut spellings = vec![format!("{epoch}0{}{revision}", a.upstream())];
        if !a.has_explicit_epoch() {
            spellings.push(format!("0:{a}"));
        }
        if a.revision().is_empty() {
            spellings.push(format!("{a}-0"));
        }
        for s in spellings {
            let b = Version::parse(&s).unwrap();
            proptest::prop_assert_eq!(&b, &a, "{} vs {}", s, a);
            proptest::prop_assert_eq!(state.hash_one(&b), state.hash_one(&a));
        }
    }
}

/// Asks dpkg about `(a, op, b)` triples, two shells in parallel; returns
/// whether dpkg agreed with each.
fn dpkg_agrees(pairs: &[(String, &'static str, String)]) -> Vec<bool> {
    let script = r#"while read -r a op b; do if dpkg --compare-versions "$a" "$op" "$b"; then echo 1; else echo 0; fi; done"#;
    let half = pairs.len().div_ceil(2);
    let mut children = Vec::new();
    for chunk in pairs.chunks(half.max(1)) {
        let mut child = Command::new("sh")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot run sh");
        let mut input = String::new();
        for (a, op, b) in chunk {
            input.push_str(&format!("{a} {op} {b}\n"));
        }
        let mut stdin = child.stdin.take().expect("piped stdin");
        let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
        children.push((child, writer, chunk.len()));
    }
    let mut answers = Vec::new();
    for (child, writer, len) in children {
        let output = child.wait_with_output().expect("sh runs");
        writer.join().expect("writer thread").expect("write to sh");
        let text = String::from_utf8(output.stdout).expect("UTF-8");
        let got: Vec<bool> = text.lines().map(|l| l == "1").collect();
        assert_eq!(
            got.len(),
            len,
            "dpkg answered {} of {len} comparisons (is dpkg installed?)",
            got.len()
        );
        answers.extend(got);
    }
    answers
}

fn op_of(ordering: Ordering) -> &'static str {
    match ordering {
        Ordering::Less => "lt",
        Ordering::Equal => "eq",
        Ordering::Greater => "gt",
    }
}

#[test]
fn table_agrees_with_dpkg_itself() {
    if !host::e2e() {
        eprintln!("skipped: set AMI_E2E=1 to check the table with dpkg");
        return;
    }
    let pairs: Vec<(String, &'static str, String)> = TABLE
        .iter()
        .map(|&(a, op, b)| (a.to_owned(), op_of(expected(op)), b.to_owned()))
        .collect();
    let answers = dpkg_agrees(&pairs);
    for (pair, ok) in pairs.iter().zip(answers) {
        assert!(ok, "dpkg disagrees with the table: {pair:?}");
    }
}

/// Every version string of the host's indices (`Version` fields and
/// versions inside relation fields), sorted with `Ord`; every neighbouring
/// pair and 20,000 random pairs checked with `dpkg --compare-versions`.
#[test]
fn host_corpus_agrees_with_dpkg() {
    if !host::e2e() {
        eprintln!("skipped: set AMI_E2E=1 to compare the host's versions with dpkg");
        return;
    }
    const RELATION_FIELDS: &[&str] = &[
        "Depends:",
        "Pre-Depends:",
        "Recommends:",
        "Suggests:",
        "Enhances:",
        "Conflicts:",
        "Breaks:",
        "Provides:",
        "Replaces:",
        "Built-Using:",
        "Static-Built-Using:",
        "Source:",
    ];
    let mut strings = BTreeSet::new();
    for (_, text) in host::packages_indices() {
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("Version:") {
                strings.insert(v.trim().to_owned());
            } else if RELATION_FIELDS.iter().any(|f| line.starts_with(f)) {
                // Independent of the crate's relation parser: "(op version)".
                for part in line.split('(').skip(1) {
                    let inner = part.split(')').next().unwrap_or_default();
                    let version = inner.trim_start_matches(['<', '>', '=', ' ']).trim();
                    if !version.is_empty() {
                        strings.insert(version.to_owned());
                    }
                }
            }
        }
    }
    assert!(
        strings.len() > 1000,
        "only {} versions found",
        strings.len()
    );
    let mut strict_failures = 0;
    let mut versions: Vec<Version> = strings
        .iter()
        .map(|s| {
            if Version::parse(s).is_err() {
                strict_failures += 1;
            }
            let v = Version::parse_lenient(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(v.to_string(), *s, "display round trip");
            v
        })
        .collect();
    versions.sort();

    let mut pairs: Vec<(String, &'static str, String)> = versions
        .windows(2)
        .map(|w| (w[0].to_string(), op_of(w[0].cmp(&w[1])), w[1].to_string()))
        .collect();
    let neighbours = pairs.len();
    // splitmix64, fixed seed: the same pairs on every run.
    let mut state: u64 = 0x5EED_0FDE_B1A5;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for _ in 0..20_000 {
        let a = &versions[(next() % versions.len() as u64) as usize];
        let b = &versions[(next() % versions.len() as u64) as usize];
        pairs.push((a.to_string(), op_of(a.cmp(b)), b.to_string()));
    }
    let answers = dpkg_agrees(&pairs);
    let mismatches: Vec<_> = pairs
        .iter()
        .zip(&answers)
        .filter(|(_, ok)| !**ok)
        .map(|(p, _)| p)
        .collect();
    eprintln!(
        "{} distinct versions ({strict_failures} only valid leniently), {neighbours} neighbouring and {} random pairs checked with dpkg, {} mismatches",
        versions.len(),
        pairs.len() - neighbours,
        mismatches.len()
    );
    assert!(
        mismatches.is_empty(),
        "dpkg disagrees: {:?}",
        &mismatches[..mismatches.len().min(20)]
    );
}
