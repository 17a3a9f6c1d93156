//! The Packages index model: records, sources, lookups, provides,
//! multi-arch satisfaction and load errors.

use ami_deb::index::{MultiArch, Priority};
use ami_deb::relation::{Relation, RelationKind};
use ami_deb::{Error, PackageIndex};

const MAIN: &str = "\
Package: libc6
Version: 2.36-9
Architecture: amd64
Multi-Arch: same
Priority: optional
Section: libs
Installed-Size: 12986
Filename: pool/main/g/glibc/libc6_2.36-9_amd64.deb
Size: 2757936
SHA256: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
Depends: libgcc-s1
Recommends: libidn2-0 (>= 2.0.5~)
Breaks: hurd (<< 1:0.9.git20220301-2)
Description: GNU C Library: Shared libraries
 Contains the standard libraries.

Package: perl
Version: 5.36.0-7
Architecture: amd64
Multi-Arch: allowed
Priority: standard
Provides: libdigest-md5-perl (= 2.58), libtest-simple-perl

Package: mawk
Version: 1.3.4.20200120-3.1
Architecture: amd64
Essential: yes
Protected: yes
Priority: required
Multi-Arch: foreign
Provides: awk
Pre-Depends: libc6 (>= 2.34)

Package: tzdata
Version: 2024a-0+deb12u1
Architecture: all
Priority: required

Package: libc6
Version: 2.36-9
Architecture: i386
";

const SECURITY: &str = "\
Package: libc6
Version: 2.36-9+deb12u4
Architecture: amd64
Multi-Arch: same
Priority: optional
";

fn index() -> PackageIndex {
    let mut index = PackageIndex::new("amd64");
    index.add_source("bookworm/main", MAIN).unwrap();
    index
        .add_source("bookworm-security/main", SECURITY)
        .unwrap();
    index
}

#[test]
fn records_keep_their_fields() {
    let index = index();
    assert_eq!(index.len(), 5);
    assert_eq!(index.skipped(), 1, "the i386 record");
    let libc = index.lookup("libc6").last().unwrap();
    assert_eq!(libc.name(), "libc6");
    assert_eq!(libc.version().as_str(), "2.36-9");
    assert_eq!(libc.architecture(), "amd64");
    assert_eq!(libc.multi_arch(), MultiArch::Same);
    assert_eq!(libc.priority(), Some(&Priority::Optional));
    assert!(!libc.essential());
    assert_eq!(libc.section(), Some("libs"));
    assert_eq!(libc.installed_size(), Some(12986));
    assert_eq!(
        libc.filename(),
        Some("pool/main/g/glibc/libc6_2.36-9_amd64.deb")
    );
    assert_eq!(libc.size(), Some(2757936));
    assert_eq!(libc.sha256().map(str::len), Some(64));
    assert_eq!(libc.depends().to_string(), "libgcc-s1");
    assert_eq!(libc.recommends().to_string(), "libidn2-0 (>= 2.0.5~)");
    assert_eq!(libc.breaks().to_string(), "hurd (<< 1:0.9.git20220301-2)");
    assert!(libc.conflicts().is_empty());
    assert!(libc.pre_depends().is_empty());
    assert!(libc.replaces().is_empty());
    assert_eq!(libc.relations(RelationKind::Suggests).len(), 0);
    assert_eq!(libc.to_string(), "libc6 2.36-9");
    // The raw paragraph, for the status writer.
    assert!(libc.raw().starts_with("Package: libc6\nVersion: 2.36-9\n"));
    assert!(libc.raw().ends_with("Breaks: hurd (<< 1:0.9.git20220301-2)\nDescription: GNU C Library: Shared libraries\n Contains the standard libraries.\n"));
    assert_eq!(
        libc.paragraph().get("Description"),
        Some("GNU C Library: Shared libraries\n Contains the standard libraries.")
    );

    let mawk = index.candidate("mawk").unwrap();
    assert!(mawk.essential());
    assert!(mawk.protected());
    assert_eq!(mawk.multi_arch(), MultiArch::Foreign);
    assert_eq!(mawk.pre_depends().to_string(), "libc6 (>= 2.34)");
    assert_eq!(index.candidate("tzdata").unwrap().architecture(), "all");
    assert_eq!(
        index
            .candidate("perl")
            .unwrap()
            .priority()
            .map(Priority::rank),
        Some(3)
    );
    assert!(index.candidate("nonexistent").is_none());
    assert_eq!(index.lookup("nonexistent").len(), 0);
}

#[test]
fn sources_candidates_and_ids() {
    let index = index();
    assert_eq!(index.sources().len(), 2);
    assert_eq!(index.sources()[0].label(), "bookworm/main");
    assert_eq!(index.sources()[0].package_count(), 4);
    assert_eq!(index.sources()[1].package_count(), 1);
    assert_eq!(index.sources()[1].text(), SECURITY);
    // Highest version first, whatever the source order.
    let versions: Vec<&str> = index
        .lookup("libc6")
        .map(|p| p.version().as_str())
        .collect();
    assert_eq!(versions, ["2.36-9+deb12u4", "2.36-9"]);
    let candidate = index.candidate("libc6").unwrap();
    assert_eq!(
        index.source(candidate.source()).label(),
        "bookworm-security/main"
    );
    assert_eq!(index.package(candidate.id()).version(), candidate.version());
    assert_eq!(index[candidate.id()].name(), "libc6");
    assert_eq!(
        index.packages()[candidate.id().index()].version(),
        candidate.version()
    );
    let mut names: Vec<&str> = index.names().collect();
    names.sort();
    assert_eq!(names, ["libc6", "mawk", "perl", "tzdata"]);

    // Equal versions: the earlier source wins.
    let mut twice = PackageIndex::new("amd64");
    twice
        .add_source("first", "Package: a\nVersion: 1.0\nArchitecture: all\n")
        .unwrap();
    twice
        .add_source("second", "Package: a\nVersion: 1.00\nArchitecture: all\n")
        .unwrap();
    assert_eq!(twice.candidate("a").unwrap().version().as_str(), "1.0");
}

#[test]
fn provides_map() {
    let index = index();
    let awk = index.providers("awk");
    assert_eq!(awk.len(), 1);
    assert_eq!(index[awk[0].package].name(), "mawk");
    assert_eq!(awk[0].version, None);
    let md5 = index.providers("libdigest-md5-perl");
    assert_eq!(md5[0].version.as_ref().map(|v| v.as_str()), Some("2.58"));
    assert!(index.providers("nothing").is_empty());
}

#[test]
fn satisfaction_rules() {
    let index = index();
    let rel = |s: &str| Relation::parse(s).unwrap();
    let perl = index.candidate("perl").unwrap();
    let mawk = index.candidate("mawk").unwrap();
    let libc = index.candidate("libc6").unwrap();
    // Real packages and versions.
    assert!(index.satisfies(libc, &rel("libc6 (>= 2.36)")));
    assert!(!index.satisfies(libc, &rel("libc6 (>= 2.37)")));
    assert!(!index.satisfies(libc, &rel("libc")));
    // Architecture qualifiers.
    assert!(
        index.satisfies(perl, &rel("perl:any")),
        "Multi-Arch: allowed"
    );
    assert!(
        !index.satisfies(libc, &rel("libc6:any")),
        "Multi-Arch: same"
    );
    assert!(
        !index.satisfies(mawk, &rel("mawk:any")),
        "Multi-Arch: foreign"
    );
    assert!(index.satisfies(libc, &rel("libc6:amd64")));
    assert!(index.satisfies(libc, &rel("libc6:native")));
    assert!(!index.satisfies(libc, &rel("libc6:i386")));
    // Provides: unversioned provides satisfy unversioned relations only.
    assert!(index.satisfies(mawk, &rel("awk")));
    assert!(!index.satisfies(mawk, &rel("awk (>= 1)")));
    assert!(index.satisfies(perl, &rel("libdigest-md5-perl (>= 2.55)")));
    assert!(!index.satisfies(perl, &rel("libdigest-md5-perl (>> 2.58)")));
    assert!(index.satisfies(perl, &rel("libtest-simple-perl")));
    assert!(!index.satisfies(perl, &rel("libtest-simple-perl (>= 1)")));
    assert!(
        index.satisfies(perl, &rel("libtest-simple-perl:any")),
        "provider is Multi-Arch: allowed"
    );
    assert!(
        !index.satisfies(mawk, &rel("awk:any")),
        "provider is Multi-Arch: foreign"
    );
}

fn load_error(text: &str) -> (usize, Option<String>, Error) {
    let mut index = PackageIndex::new("amd64");
    index
        .add_source("ok", "Package: keep\nVersion: 1\nArchitecture: all\n")
        .unwrap();
    let result = index.add_source("test/main", text.to_owned());
    // Nothing of a failed source is kept.
    assert_eq!(index.len(), 1);
    assert_eq!(index.sources().len(), 1);
    match result {
        Err(Error::Index {
            origin,
            line,
            package,
            cause,
        }) => {
            assert_eq!(origin, "test/main");
            (line, package, *cause)
        }
        other => panic!("expected an index error, got {other:?}"),
    }
}

#[test]
fn load_errors_name_source_line_and_package() {
    let good = "Package: a\nVersion: 1\nArchitecture: amd64\n\n";
    let (line, package, cause) = load_error(&format!("{good}Package: b\nArchitecture: amd64\n"));
    assert_eq!((line, package.as_deref()), (5, Some("b")));
    assert_eq!(cause, Error::MissingField { field: "Version" });

    let (_, _, cause) = load_error("Package: b\nVersion: 1\n");
    assert_eq!(
        cause,
        Error::MissingField {
            field: "Architecture"
        }
    );
    let (_, _, cause) = load_error("Version: 1\nArchitecture: all\n");
    assert_eq!(cause, Error::MissingField { field: "Package" });
    let (_, _, cause) = load_error("Package: b\nVersion: 1:\nArchitecture: all\n");
    assert!(matches!(cause, Error::InvalidVersion { .. }));
    let (_, _, cause) = load_error("Package: b\nVersion: 1\nArchitecture: all\nDepends: c (>= )\n");
    assert!(
        matches!(cause, Error::Relation { ref field, .. } if field == "Depends"),
        "{cause:?}"
    );
    let (_, _, cause) = load_error("Package: b\nVersion: 1\nArchitecture: all\nConflicts: c | d\n");
    assert!(
        matches!(cause, Error::Relation { ref field, .. } if field == "Conflicts"),
        "{cause:?}"
    );
    let (_, _, cause) =
        load_error("Package: b\nVersion: 1\nArchitecture: all\nProvides: c (>= 1)\n");
    assert!(
        matches!(cause, Error::Relation { ref field, ref reason, .. } if field == "Provides" && reason.contains("'='")),
        "{cause:?}"
    );
    let (_, _, cause) =
        load_error("Package: b\nVersion: 1\nArchitecture: all\nMulti-Arch: sometimes\n");
    assert!(matches!(
        cause,
        Error::InvalidValue {
            field: "Multi-Arch",
            ..
        }
    ));
    let (_, _, cause) = load_error("Package: b\nVersion: 1\nArchitecture: all\nEssential: maybe\n");
    assert!(matches!(
        cause,
        Error::InvalidValue {
            field: "Essential",
            ..
        }
    ));
    let (_, _, cause) = load_error("Package: b\nVersion: 1\nArchitecture: all\nSize: -3\n");
    assert!(matches!(cause, Error::InvalidValue { field: "Size", .. }));
    let (line, package, cause) = load_error(&format!("{good}Package: c\n continuation\nbroken\n"));
    assert_eq!((line, package), (7, None));
    assert!(matches!(cause, Error::Syntax { line: 7, .. }));

    // The message reads as origin:line: package: problem.
    let mut index = PackageIndex::new("amd64");
    let e = index
        .add_source(
            "bookworm/main",
            "Package: b\nVersion: 1\nArchitecture: all\nDepends: c (>= )\n",
        )
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "bookworm/main:1: package b: invalid Depends entry \"c (>= )\": missing version after the operator"
    );
    assert!(std::error::Error::source(&e).is_some());
}

#[test]
fn index_is_shareable_between_threads() {
    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    let index = index();
    assert_send_sync(&index);
    // Relations are built lazily; building them from two threads at once
    // gives the same result.
    let libc = index.candidate("libc6").unwrap().id();
    let texts: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| s.spawn(|| index[libc].depends().to_string()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(texts, ["", ""], "the security record has no Depends");
    let old = index.lookup("libc6").last().unwrap();
    assert_eq!(old.depends().to_string(), "libgcc-s1");
}

#[test]
fn records_of_other_architectures_are_not_validated() {
    // Only the kept records are parsed, so a broken foreign record does not
    // fail the index.
    let index =
        PackageIndex::from_text("amd64", "Package: x\nVersion: 1:\nArchitecture: i386\n").unwrap();
    assert_eq!((index.len(), index.skipped()), (0, 1));
    assert_eq!(index.arch(), "amd64");
    assert!(index.is_empty());
}
