//! Relationship fields: syntax, errors, version matching, restrictions.

use ami_deb::relation::{arch_matches, Alternatives, Op, Relation, RelationKind, Relations, Term};
use ami_deb::{Error, Version};

fn v(s: &str) -> Version {
    s.parse().unwrap()
}

fn rels(text: &str) -> Relations {
    Relations::parse("Depends", text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

#[test]
fn groups_alternatives_and_constraints() {
    let r = rels(
        "libc6 (>= 2.34), debconf (>= 0.5) | debconf-2.0,perl:any,  python3:native (<< 3.12~) ",
    );
    assert_eq!(r.len(), 4);
    assert_eq!(r[1].len(), 2);
    let libc = &r[0][0];
    assert_eq!(libc.name, "libc6");
    assert_eq!(libc.arch, None);
    let c = libc.constraint.as_ref().unwrap();
    assert_eq!((c.op, c.version.as_str()), (Op::Ge, "2.34"));
    assert_eq!(r[1][1].name, "debconf-2.0");
    assert!(r[1][1].constraint.is_none());
    assert_eq!(r[2].first().arch.as_deref(), Some("any"));
    assert_eq!(r[3].first().arch.as_deref(), Some("native"));
    assert_eq!(r[3].first().constraint.as_ref().unwrap().op, Op::Lt);
    assert_eq!(
        r.to_string(),
        "libc6 (>= 2.34), debconf (>= 0.5) | debconf-2.0, perl:any, python3:native (<< 3.12~)"
    );
}

#[test]
fn operators_including_obsolete_ones() {
    let cases = [
        ("<<", Op::Lt),
        ("<=", Op::Le),
        ("=", Op::Eq),
        (">=", Op::Ge),
        (">>", Op::Gt),
        ("<", Op::Le),
        (">", Op::Ge),
    ];
    for (text, op) in cases {
        let r = Relation::parse(&format!("foo ({text} 1.0)")).unwrap();
        assert_eq!(r.constraint.as_ref().unwrap().op, op, "{text}");
        // Without spaces, too.
        let r = Relation::parse(&format!("foo({text}1.0)")).unwrap();
        assert_eq!(r.constraint.unwrap().op, op, "{text}");
    }
    // Obsolete forms are written back in the modern form.
    assert_eq!(
        Relation::parse("foo (< 1)").unwrap().to_string(),
        "foo (<= 1)"
    );
    assert_eq!(
        Relation::parse("foo (> 1)").unwrap().to_string(),
        "foo (>= 1)"
    );
}

#[test]
fn version_matching() {
    let table = [
        ("foo (<< 2)", "1.9", true),
        ("foo (<< 2)", "2", false),
        ("foo (<= 2)", "2", true),
        ("foo (<= 2)", "2.0", false), // "2.0" sorts after "2"
        ("foo (<= 2)", "2~", true),
        ("foo (= 1:2-1)", "1:2-1", true),
        ("foo (= 2-1)", "2-1.1", false),
        ("foo (= 1.0)", "1.0-0", true),
        ("foo (>= 2.36)", "2.36-9", true),
        ("foo (>= 2.38)", "2.36-9", false),
        ("foo (>> 1.0)", "1.0", false),
        ("foo (>> 1.0)", "1.0+b1", true),
        ("foo (>= 1.0~)", "1.0~rc1", true),
        ("foo (>= 1.0)", "1.0~rc1", false),
        ("foo", "0~", true),
    ];
    for (rel, version, expected) in table {
        let r = Relation::parse(rel).unwrap();
        assert_eq!(
            r.matches_version(&v(version)),
            expected,
            "{version} vs {rel}"
        );
        if let Some(c) = &r.constraint {
            assert_eq!(c.matches(&v(version)), expected);
        }
    }
}

#[test]
fn architecture_and_profile_restrictions() {
    let r = Relation::parse("foo [amd64 arm64] <!nocheck> <stage1 cross>").unwrap();
    assert_eq!(
        r.arches,
        [
            Term {
                negated: false,
                name: "amd64".into()
            },
            Term {
                negated: false,
                name: "arm64".into()
            }
        ]
    );
    assert_eq!(r.profiles.len(), 2);
    assert_eq!(r.to_string(), "foo [amd64 arm64] <!nocheck> <stage1 cross>");
    assert!(r.applies_to("amd64", &[]));
    assert!(!r.applies_to("i386", &[]));
    assert!(!r.applies_to("amd64", &["nocheck"]));
    assert!(r.applies_to("amd64", &["nocheck", "stage1", "cross"]));
    let neg = Relation::parse("bar (>= 1) [!i386 !hurd-any]").unwrap();
    assert!(neg.applies_to("amd64", &[]));
    assert!(!neg.applies_to("i386", &[]));
    assert!(!neg.applies_to("hurd-amd64", &[]));
    let wild = Relation::parse("baz [linux-any]").unwrap();
    assert!(wild.applies_to("arm64", &[]));
    assert!(!wild.applies_to("kfreebsd-amd64", &[]));
    assert!(Relation::parse("plain")
        .unwrap()
        .applies_to("anything", &["x"]));
    assert!(arch_matches("amd64", "any-amd64"));
    assert!(!arch_matches("amd64", "any-arm64"));
}

#[test]
fn folded_fields_and_trailing_comma() {
    let r = rels("a,\n b (>= 1)\n  | c,\n");
    assert_eq!(r.to_string(), "a, b (>= 1) | c");
    assert!(rels("").is_empty());
    assert!(rels("  \n ").is_empty());
}

fn relation_error(field: &str, text: &str) -> (String, String, String) {
    match Relations::parse(field, text) {
        Err(Error::Relation {
            field,
            text,
            reason,
        }) => (field, text, reason),
        other => panic!("{text:?}: expected an error, got {other:?}"),
    }
}

#[test]
fn errors_name_the_field_and_the_entry() {
    let cases: &[(&str, &str, &str)] = &[
        ("a, (>= 1), c", " (>= 1)", "missing package name"),
        ("a, , c", "", "empty entry"),
        ("a | | b", "a | | b", "missing package name"),
        ("a, b |", "b |", "missing package name"),
        ("a (>= 1", "a (>= 1", "missing ')'"),
        ("a (1.0)", "a (1.0)", "operator"),
        ("a (>= )", "a (>= )", "missing version"),
        ("a (>= 1:)", "a (>= 1:)", "nothing after colon"),
        ("a (>= 1 0)", "a (>= 1 0)", "embedded spaces"),
        ("a [amd64", "a [amd64", "missing ']'"),
        ("a [amd64 !i386]", "a [amd64 !i386]", "mixes negated"),
        ("a []", "a []", "empty architecture list"),
        ("a <!nocheck", "a <!nocheck", "missing '>'"),
        ("a:", "a:", "architecture qualifier"),
        ("Foo_bar!", "Foo_bar!", "invalid character '!'"),
        ("-a", "-a", "must start with a letter or digit"),
        ("a (>= 1) extra", "a (>= 1) extra", "unexpected \"extra\""),
        ("a [amd64] (>= 1)", "a [amd64] (>= 1)", "unexpected"),
    ];
    for &(field_text, entry, reason) in cases {
        let (field, text, r) = relation_error("Pre-Depends", field_text);
        assert_eq!(field, "Pre-Depends");
        assert_eq!(text, entry.trim(), "{field_text:?}");
        assert!(r.contains(reason), "{field_text:?}: {r}");
    }
    let e = Relations::parse("Depends", "libc6 (>= 2.34), perl (>> )").unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid Depends entry \"perl (>> )\": missing version after the operator"
    );
    assert!(matches!(
        Relation::parse("a | b"),
        Err(Error::Relation { .. })
    ));
}

#[test]
fn building_and_kinds() {
    let mut r = Relation::new("foo");
    assert_eq!(r.to_string(), "foo");
    r.arch = Some("any".into());
    let group = Alternatives::new(vec![r, Relation::new("bar")]).unwrap();
    assert!(Alternatives::new(Vec::new()).is_none());
    let list = Relations::from_groups(vec![group]);
    assert_eq!(list.to_string(), "foo:any | bar");
    assert_eq!(Relations::new().len(), 0);
    assert_eq!(RelationKind::PreDepends.field_name(), "Pre-Depends");
    assert_eq!(RelationKind::Breaks.verb(), "breaks");
    assert_eq!(RelationKind::ALL.len(), 9);
    assert_eq!(RelationKind::Provides.to_string(), "Provides");
}
