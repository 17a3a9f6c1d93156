//! The resolver on small synthetic indices.

use ami_deb::relation::RelationKind;
use ami_deb::resolve::Reason;
use ami_deb::{resolve, validate, Error, PackageIndex, Request, Resolution, Variant};

/// A `Packages` stanza for amd64; `fields` are extra lines.
fn stanza(name: &str, version: &str, fields: &str) -> String {
    let mut s = format!("Package: {name}\nVersion: {version}\n");
    if !fields.contains("Architecture:") {
        s.push_str("Architecture: amd64\n");
    }
    for line in fields.lines().map(str::trim).filter(|l| !l.is_empty()) {
        s.push_str(line);
        s.push('\n');
    }
    s.push('\n');
    s
}

fn index(stanzas: &[String]) -> PackageIndex {
    PackageIndex::from_text("amd64", stanzas.concat()).unwrap()
}

fn custom(specs: &[&str]) -> Request {
    Request::new(Variant::Custom).packages(specs.iter().copied())
}

fn names(r: &Resolution<'_>) -> Vec<String> {
    r.packages().map(|p| p.name().to_owned()).collect()
}

fn with_versions(r: &Resolution<'_>) -> Vec<String> {
    r.packages().map(|p| p.to_string()).collect()
}

#[test]
fn variants() {
    let idx = index(&[
        stanza("base-files", "12", "Essential: yes\nPriority: required"),
        stanza(
            "dash",
            "0.5",
            "Essential: yes\nPriority: required\nPre-Depends: libc6",
        ),
        stanza("libc6", "2.36", "Priority: optional"),
        stanza("mount", "2.38", "Priority: required"),
        stanza("apt", "2.6", "Priority: important\nDepends: libapt-pkg6.0"),
        stanza("libapt-pkg6.0", "2.6", "Priority: optional"),
        stanza("iproute2", "6.1", "Priority: important"),
        stanza("less", "590", "Priority: standard"),
    ]);
    let run = |variant| names(&resolve(&idx, &Request::new(variant)).unwrap());
    assert_eq!(run(Variant::Essential), ["base-files", "dash", "libc6"]);
    assert_eq!(
        run(Variant::Minbase),
        [
            "apt",
            "base-files",
            "dash",
            "libapt-pkg6.0",
            "libc6",
            "mount"
        ]
    );
    assert_eq!(
        run(Variant::Default),
        [
            "apt",
            "base-files",
            "dash",
            "iproute2",
            "libapt-pkg6.0",
            "libc6",
            "mount"
        ]
    );
    assert!(run(Variant::Custom).is_empty());
    let r = resolve(&idx, &Request::new(Variant::Minbase)).unwrap();
    assert_eq!(r.reason("dash"), Some(&Reason::Essential));
    assert_eq!(
        r.reason("mount"),
        Some(&Reason::Priority(ami_deb::index::Priority::Required))
    );
    assert_eq!(r.reason("apt"), Some(&Reason::Variant));
    assert_eq!(
        r.reason("libc6"),
        Some(&Reason::Dependency {
            by: "dash".into(),
            kind: RelationKind::PreDepends,
            relation: "libc6".into()
        })
    );
    let roots: Vec<&str> = r.roots().map(|p| p.name()).collect();
    assert_eq!(roots, ["apt", "base-files", "dash", "mount"]);
    assert_eq!(Request::default().variant, Variant::Default);
}

#[test]
fn candidates_and_pins() {
    let mut idx = PackageIndex::new("amd64");
    idx.add_source(
        "release",
        [
            stanza("foo", "1.0-1", ""),
            stanza("bar", "1", "Depends: foo (<< 2)"),
        ]
        .concat(),
    )
    .unwrap();
    idx.add_source(
        "updates",
        [stanza("foo", "2.0-1", ""), stanza("foo", "1.5-1", "")].concat(),
    )
    .unwrap();
    let r = resolve(&idx, &custom(&["foo"])).unwrap();
    assert_eq!(with_versions(&r), ["foo 2.0-1"]);
    assert_eq!(
        idx.source(r.get("foo").unwrap().source()).label(),
        "updates"
    );
    let r = resolve(&idx, &custom(&["foo=1.0-1"])).unwrap();
    assert_eq!(with_versions(&r), ["foo 1.0-1"]);
    let r = resolve(&idx, &custom(&["foo (<< 2)"])).unwrap();
    assert_eq!(with_versions(&r), ["foo 1.5-1"]);
    // A dependency's constraint picks the highest version that fits.
    let r = resolve(&idx, &custom(&["bar"])).unwrap();
    assert_eq!(with_versions(&r), ["bar 1", "foo 1.5-1"]);
    // ... unless the request pinned another.
    let e = resolve(&idx, &custom(&["foo=2.0-1", "bar"])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "bar depends on foo (<< 2), but foo 2.0-1 is selected"
    );
    let e = resolve(&idx, &custom(&["foo (>= 3)"])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot install foo (>= 3): only foo 2.0-1, 1.5-1 and 1.0-1 are available"
    );
    let e = resolve(&idx, &custom(&["foo=1.0-1", "foo (>= 2)"])).unwrap_err();
    assert!(matches!(e, Error::ConflictingRequests { .. }), "{e}");
    assert!(
        e.to_string().contains("foo=1.0-1 (foo 1.0-1)")
            && e.to_string().contains("foo (>= 2) (foo 2.0-1)"),
        "{e}"
    );
    // The same package twice is fine.
    assert_eq!(
        resolve(&idx, &custom(&["foo", "foo (>= 2)"]))
            .unwrap()
            .len(),
        1
    );
    for bad in ["foo=", "foo=1:", "foo (>= 1)=2", "foo [amd64]", "a | b", ""] {
        assert!(
            matches!(
                resolve(&idx, &custom(&[bad])),
                Err(Error::InvalidRequest { .. })
            ),
            "{bad:?}"
        );
    }
    let e = resolve(&idx, &custom(&["nothing"])).unwrap_err();
    assert_eq!(
        e,
        Error::UnknownPackage {
            name: "nothing".into()
        }
    );
}

#[test]
fn first_alternative_unless_another_is_already_selected() {
    let idx = index(&[
        stanza("app", "1", "Depends: first | second"),
        stanza("first", "1", ""),
        stanza("second", "1", ""),
    ]);
    assert_eq!(
        names(&resolve(&idx, &custom(&["app"])).unwrap()),
        ["app", "first"]
    );
    // Roots are selected before any dependency is expanded.
    assert_eq!(
        names(&resolve(&idx, &custom(&["app", "second"])).unwrap()),
        ["app", "second"]
    );
    // Unavailable alternatives are skipped.
    let idx = index(&[
        stanza("app", "1", "Depends: gone | second (>= 1)"),
        stanza("second", "1", ""),
    ]);
    assert_eq!(
        names(&resolve(&idx, &custom(&["app"])).unwrap()),
        ["app", "second"]
    );
}

#[test]
fn providers_selected_first_then_apt_order() {
    let idx = index(&[
        stanza("mailer", "1", "Depends: mail-transport-agent"),
        stanza(
            "exim4",
            "4.96",
            "Priority: standard\nProvides: mail-transport-agent",
        ),
        stanza(
            "postfix",
            "3.7",
            "Priority: optional\nProvides: mail-transport-agent",
        ),
        stanza(
            "a-mta",
            "1",
            "Priority: optional\nProvides: mail-transport-agent",
        ),
        stanza(
            "zz-essential-mta",
            "1",
            "Priority: extra\nEssential: yes\nProvides: other-mta",
        ),
        stanza("aa-mta", "1", "Priority: extra\nProvides: other-mta"),
        stanza("user", "1", "Depends: other-mta"),
    ]);
    // A provider already selected satisfies the dependency.
    assert_eq!(
        names(&resolve(&idx, &custom(&["postfix", "mailer"])).unwrap()),
        ["mailer", "postfix"]
    );
    // Otherwise by Priority (standard before optional), then by name.
    assert_eq!(
        names(&resolve(&idx, &custom(&["mailer"])).unwrap()),
        ["exim4", "mailer"]
    );
    // Essential comes first of all.
    assert_eq!(
        names(&resolve(&idx, &custom(&["user"])).unwrap()),
        ["user", "zz-essential-mta"]
    );
    // Requesting a virtual name with several providers is ambiguous ...
    match resolve(&idx, &custom(&["mail-transport-agent"])).unwrap_err() {
        Error::VirtualPackage {
            name,
            mut providers,
        } => {
            providers.sort();
            assert_eq!(name, "mail-transport-agent");
            assert_eq!(providers, ["a-mta", "exim4", "postfix"]);
        }
        other => panic!("{other}"),
    }
    // ... with one provider it selects that provider.
    let idx = index(&[stanza("mawk", "1.3", "Provides: awk")]);
    let r = resolve(&idx, &custom(&["awk"])).unwrap();
    assert_eq!(names(&r), ["mawk"]);
    assert_eq!(r.reason("mawk"), Some(&Reason::Requested));
}

#[test]
fn real_package_before_providers() {
    let idx = index(&[
        stanza("script", "1", "Depends: awk"),
        stanza("awk", "1", ""),
        stanza("mawk", "1", "Priority: required\nProvides: awk"),
    ]);
    assert_eq!(
        names(&resolve(&idx, &custom(&["script"])).unwrap()),
        ["awk", "script"]
    );
}

#[test]
fn versioned_provides() {
    let idx = index(&[
        stanza("app", "1", "Depends: foo (>= 2)"),
        stanza("foo", "1", ""),
        stanza("unversioned", "1", "Provides: foo"),
        stanza("versioned", "1", "Provides: foo (= 2.1)"),
        stanza("old", "1", "Provides: foo (= 1.9)"),
    ]);
    assert_eq!(
        names(&resolve(&idx, &custom(&["app"])).unwrap()),
        ["app", "versioned"]
    );
    // Unversioned dependencies take any provider (the real package first).
    let idx2 = index(&[
        stanza("app", "1", "Depends: foo (>= 3)"),
        stanza("versioned", "1", "Provides: foo (= 2.1)"),
        stanza("u", "1", "Provides: foo"),
    ]);
    let e = resolve(&idx2, &custom(&["app"])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "app depends on foo (>= 3), but no provider of foo fits (provided by versioned and u)"
    );
    // sysvinit-utils pattern: a package conflicting with a name it provides
    // does not conflict with itself, and its versioned Provides satisfies
    // dependencies on the transitional real package.
    let idx = index(&[
        stanza(
            "sysvinit-utils",
            "3.06-4",
            "Essential: yes\nProvides: lsb-base (= 11.1.0)\nConflicts: lsb-base (<< 11.3~)",
        ),
        stanza("lsb-base", "11.6", "Depends: sysvinit-utils (>= 3.05-4~)"),
        stanza("daemon", "1", "Depends: lsb-base (>= 3.0-6)"),
    ]);
    let r = resolve(&idx, &Request::new(Variant::Essential).package("daemon")).unwrap();
    assert_eq!(names(&r), ["daemon", "sysvinit-utils"]);
}

#[test]
fn multi_arch_any() {
    let idx = index(&[
        stanza("script", "1", "Depends: perl:any (>= 5)"),
        stanza("perl", "5.36", "Multi-Arch: allowed"),
    ]);
    assert_eq!(
        names(&resolve(&idx, &custom(&["script"])).unwrap()),
        ["perl", "script"]
    );
    let idx = index(&[
        stanza("script", "1", "Depends: perl:any"),
        stanza("perl", "5.36", ""),
    ]);
    let e = resolve(&idx, &custom(&["script"])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "script depends on perl:any, but perl is not Multi-Arch: allowed, so it cannot satisfy perl:any"
    );
    // Foreign-architecture qualifiers cannot be satisfied in a
    // single-architecture index; arch: all counts as native.
    let idx = index(&[
        stanza("a", "1", "Depends: data:amd64, lib:i386 | lib"),
        stanza("data", "1", "Architecture: all"),
        stanza("lib", "1", ""),
    ]);
    assert_eq!(
        names(&resolve(&idx, &custom(&["a"])).unwrap()),
        ["a", "data", "lib"]
    );
}

#[test]
fn conflicts_and_breaks_steer_alternatives() {
    let idx = index(&[
        stanza("root", "1", "Conflicts: first"),
        stanza("app", "1", "Depends: first | second"),
        stanza("first", "1", ""),
        stanza("second", "1", ""),
        stanza("breaker", "1", "Breaks: first (<< 2)"),
        stanza("reverse", "1", ""),
        stanza("first-breaks", "1", "Breaks: reverse"),
        stanza("app2", "1", "Depends: first-breaks | second"),
    ]);
    assert_eq!(
        names(&resolve(&idx, &custom(&["root", "app"])).unwrap()),
        ["app", "root", "second"]
    );
    assert_eq!(
        names(&resolve(&idx, &custom(&["breaker", "app"])).unwrap()),
        ["app", "breaker", "second"]
    );
    // The candidate breaks a selected package.
    assert_eq!(
        names(&resolve(&idx, &custom(&["reverse", "app2"])).unwrap()),
        ["app2", "reverse", "second"]
    );
}

#[test]
fn unavoidable_conflicts_name_both_packages_and_chains() {
    let idx = index(&[
        stanza("server", "1", "Depends: helper"),
        stanza("helper", "2", "Depends: libold (<< 1)"),
        stanza("libold", "0.9", ""),
        stanza("client", "1", "Depends: libnew"),
        stanza("libnew", "1", "Breaks: libold (<< 1)"),
    ]);
    let e = resolve(&idx, &custom(&["client", "server"])).unwrap_err();
    match &e {
        Error::Conflict(c) => {
            assert_eq!((c.package.as_str(), c.other.as_str()), ("libnew", "libold"));
            assert_eq!(c.kind, RelationKind::Breaks);
            assert_eq!(c.chain, ["client", "libnew"]);
            assert_eq!(c.other_chain, ["server", "helper", "libold"]);
        }
        other => panic!("{other}"),
    }
    assert_eq!(
        e.to_string(),
        "libnew breaks libold (<< 1), but libold 0.9 is also needed (required by: client -> libnew) (libold required by: server -> helper -> libold)"
    );
    // Requested packages that conflict: a request error naming both.
    let idx = index(&[stanza("a", "1", "Conflicts: b"), stanza("b", "2", "")]);
    let e = resolve(&idx, &custom(&["b", "a"])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "conflicting requests: b (b 2) and a (a 1): a conflicts with b"
    );
    // Conflicts on a virtual name apply to its providers.
    let idx = index(&[
        stanza("a", "1", "Conflicts: mail-transport-agent"),
        stanza("exim4", "1", "Provides: mail-transport-agent"),
        stanza("b", "1", "Depends: exim4 | nullmailer"),
        stanza("nullmailer", "1", ""),
    ]);
    assert_eq!(
        names(&resolve(&idx, &custom(&["a", "b"])).unwrap()),
        ["a", "b", "nullmailer"]
    );
}

#[test]
fn unresolvable_chain_is_explained() {
    let idx = index(&[
        stanza("openssh-server", "1:9.2p1-2", "Depends: sudo"),
        stanza("sudo", "1.9.13p3-1", "Depends: libc6 (>= 2.38)"),
        stanza("libc6", "2.36-9", ""),
    ]);
    let e = resolve(&idx, &custom(&["openssh-server"])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "sudo depends on libc6 (>= 2.38), but only libc6 2.36-9 is available (required by: openssh-server -> sudo)"
    );
    match e {
        Error::Unresolvable(u) => {
            assert_eq!(u.package, "sudo");
            assert_eq!(u.version, "1.9.13p3-1");
            assert_eq!(u.kind, RelationKind::Depends);
            assert_eq!(u.relation, "libc6 (>= 2.38)");
            assert_eq!(u.reason, "only libc6 2.36-9 is available");
            assert_eq!(u.chain, ["openssh-server", "sudo"]);
        }
        other => panic!("{other}"),
    }
    let idx = index(&[
        stanza("a", "1", "Pre-Depends: x | y (>= 2)"),
        stanza("y", "1", ""),
    ]);
    let e = resolve(&idx, &custom(&["a"])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "a pre-depends on x | y (>= 2), but no alternative can be used (no package named x is available; only y 1 is available)"
    );
}

#[test]
fn failed_alternatives_are_undone() {
    let idx = index(&[
        stanza("app", "1", "Depends: first | second"),
        stanza("first", "1", "Depends: helper, missing"),
        stanza("helper", "1", "Depends: helper-lib"),
        stanza("helper-lib", "1", ""),
        stanza("second", "1", "Depends: helper-lib"),
    ]);
    let r = resolve(&idx, &custom(&["app"])).unwrap();
    assert_eq!(names(&r), ["app", "helper-lib", "second"]);
    assert_eq!(r.chain("helper-lib"), ["app", "second", "helper-lib"]);
    // When nothing works, the error is the first alternative's own failure.
    let idx = index(&[
        stanza("app", "1", "Depends: first | second"),
        stanza("first", "1", "Depends: missing"),
    ]);
    let e = resolve(&idx, &custom(&["app"])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "first depends on missing, but no package named missing is available (required by: app -> first)"
    );
}

#[test]
fn recommends_only_when_asked_and_never_fatal() {
    let idx = index(&[
        stanza(
            "app",
            "1",
            "Recommends: extra, missing | gone\nDepends: base",
        ),
        stanza("extra", "1", "Depends: unavailable"),
        stanza("base", "1", "Recommends: nice"),
        stanza("nice", "1", ""),
    ]);
    assert_eq!(
        names(&resolve(&idx, &custom(&["app"])).unwrap()),
        ["app", "base"]
    );
    let r = resolve(&idx, &custom(&["app"]).recommends(true)).unwrap();
    assert_eq!(names(&r), ["app", "base", "nice"]);
    assert_eq!(
        r.reason("nice").unwrap().to_string(),
        "base recommends nice"
    );
}

#[test]
fn merged_usr_prefers_usr_is_merged() {
    let idx = index(&[
        stanza(
            "init-system-helpers",
            "1.65",
            "Essential: yes\nDepends: usrmerge | usr-is-merged",
        ),
        stanza(
            "usrmerge",
            "37",
            "Depends: perl:any\nProvides: usr-is-merged",
        ),
        stanza("usr-is-merged", "37", "Priority: optional"),
        stanza("perl", "5.36", "Multi-Arch: allowed"),
    ]);
    let r = resolve(&idx, &Request::new(Variant::Essential)).unwrap();
    assert_eq!(names(&r), ["init-system-helpers", "usr-is-merged"]);
    assert_eq!(r.reason("usr-is-merged"), Some(&Reason::MergedUsr));
    let r = resolve(&idx, &Request::new(Variant::Essential).merged_usr(false)).unwrap();
    assert_eq!(names(&r), ["init-system-helpers", "perl", "usrmerge"]);
    // Requested explicitly: the reason says so.
    let r = resolve(
        &idx,
        &Request::new(Variant::Essential).package("usr-is-merged"),
    )
    .unwrap();
    assert_eq!(r.reason("usr-is-merged"), Some(&Reason::Requested));
    let e = resolve(&idx, &Request::new(Variant::Essential).package("usrmerge")).unwrap_err();
    assert!(matches!(e, Error::InvalidRequest { .. }), "{e}");
}

#[test]
fn exclusions() {
    let idx = index(&[
        stanza("ess", "1", "Essential: yes\nDepends: a | b"),
        stanza("a", "1", ""),
        stanza("b", "1", ""),
        stanza("opt", "1", "Priority: required"),
        stanza("needs-a", "1", "Depends: a"),
    ]);
    let r = resolve(
        &idx,
        &Request::new(Variant::Minbase).exclude("a").exclude("opt"),
    )
    .unwrap();
    assert_eq!(names(&r), ["b", "ess"]);
    let e = resolve(
        &idx,
        &Request::new(Variant::Custom)
            .exclude("a")
            .package("needs-a"),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "needs-a depends on a, but a is excluded");
    let e = resolve(
        &idx,
        &Request::new(Variant::Custom).exclude("a").package("a"),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid package request \"a\": a is excluded"
    );
}

#[test]
fn cycles_and_duplicates() {
    let idx = index(&[
        stanza("a", "1", "Depends: b"),
        stanza("b", "1", "Depends: a, c"),
        stanza("c", "1", "Depends: a | b"),
    ]);
    let r = resolve(&idx, &custom(&["a", "a", "c"])).unwrap();
    assert_eq!(names(&r), ["a", "b", "c"]);
    assert_eq!(r.reason("c"), Some(&Reason::Requested));
    assert_eq!(r.chain("b"), ["a", "b"]);
    assert_eq!(r.chain("a"), ["a"]);
    assert!(r.chain("zzz").is_empty());
    assert!(r.get("zzz").is_none());
}

#[test]
fn deterministic_whatever_the_input_order() {
    let stanzas = vec![
        stanza("app", "1", "Depends: mta, libx | liby, tool"),
        stanza("p1", "1", "Provides: mta\nPriority: optional"),
        stanza("p2", "1", "Provides: mta\nPriority: optional"),
        stanza("libx", "2", "Depends: common (>= 1)"),
        stanza("libx", "1", ""),
        stanza("liby", "1", ""),
        stanza("common", "1.5", ""),
        stanza("common", "1.0", ""),
        stanza("tool", "3", "Provides: mta"),
    ];
    let forward = index(&stanzas);
    let mut reversed_stanzas = stanzas.clone();
    reversed_stanzas.reverse();
    let reversed = index(&reversed_stanzas);
    let a = with_versions(&resolve(&forward, &custom(&["app"])).unwrap());
    let b = with_versions(&resolve(&reversed, &custom(&["app"])).unwrap());
    assert_eq!(a, b);
    assert_eq!(a, ["app 1", "common 1.5", "libx 2", "p1 1", "tool 3"]);
    assert_eq!(
        a,
        with_versions(&resolve(&forward, &custom(&["app"])).unwrap())
    );
}

#[test]
fn validate_checks_any_set() {
    let idx = index(&[
        stanza("a", "1", "Depends: b (>= 2)"),
        stanza("b", "2", ""),
        stanza("b", "1", ""),
        stanza("c", "1", "Conflicts: b"),
    ]);
    let id = |name: &str, version: &str| {
        idx.lookup(name)
            .find(|p| p.version().as_str() == version)
            .unwrap()
            .id()
    };
    validate(&idx, &[id("a", "1"), id("b", "2")]).unwrap();
    let e = validate(&idx, &[id("a", "1"), id("b", "1")]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "a depends on b (>= 2), but no package of the set satisfies it"
    );
    let e = validate(&idx, &[id("b", "2"), id("c", "1")]).unwrap_err();
    assert!(
        matches!(e, Error::Conflict(ref c) if c.package == "c" && c.other == "b"),
        "{e}"
    );
    let e = validate(&idx, &[id("b", "2"), id("b", "1")]).unwrap_err();
    assert!(matches!(e, Error::ConflictingRequests { .. }), "{e}");
    validate(&idx, &[]).unwrap();
}

#[test]
fn resolution_accessors() {
    let idx = index(&[stanza("a", "1", "Depends: b"), stanza("b", "1", "")]);
    let r = resolve(&idx, &custom(&["a"])).unwrap();
    assert_eq!(r.len(), 2);
    assert!(!r.is_empty());
    assert_eq!(r.ids().len(), 2);
    assert!(std::ptr::eq(r.index(), &idx));
    let listed: Vec<(String, String)> = r
        .iter()
        .map(|(p, why)| (p.name().to_owned(), why.to_string()))
        .collect();
    assert_eq!(
        listed,
        [
            ("a".to_owned(), "requested".to_owned()),
            ("b".to_owned(), "a depends on b".to_owned())
        ]
    );
    assert_eq!(r.get("b").unwrap().version().as_str(), "1");
}
