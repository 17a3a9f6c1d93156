//! Relationship fields: `Depends`, `Pre-Depends`, `Recommends`,
//! `Suggests`, `Enhances`, `Conflicts`, `Breaks`, `Provides`, `Replaces`
//! (and the build-dependency fields, which share the syntax).
//!
//! A field is a comma-separated list of groups ([`Relations`]); a group is a
//! `|`-separated list of alternatives ([`Alternatives`]); each alternative
//! is a [`Relation`]:
//!
//! ```text
//! name[:archqual] [(op version)] [[arch ...]] [<profile ...> ...]
//! ```
//!
//! with `op` one of `<<`, `<=`, `=`, `>=`, `>>`; the obsolete `<` and `>`
//! are read as `<=` and `>=`, as dpkg does, and written back in the modern
//! form. Whitespace (including newlines of folded fields) is allowed between
//! tokens. An empty field is an empty list and one trailing comma is
//! accepted; any other empty group or alternative is an error. Versions are
//! parsed with [`Version::parse_lenient`], i.e. accepting what dpkg accepts.
//!
//! ```
//! use ami_deb::relation::{Op, Relations};
//!
//! let deps = Relations::parse("Depends", "libc6 (>= 2.34), debconf (>= 0.5) | debconf-2.0, perl:any")?;
//! assert_eq!(deps.len(), 3);
//! assert_eq!(deps[1].len(), 2);
//! let libc = &deps[0][0];
//! assert_eq!(libc.name, "libc6");
//! assert_eq!(libc.constraint.as_ref().unwrap().op, Op::Ge);
//! assert!(libc.matches_version(&"2.36-9".parse()?));
//! assert!(!libc.matches_version(&"2.31-13".parse()?));
//! assert_eq!(deps[2].first().arch.as_deref(), Some("any"));
//! assert_eq!(deps.to_string(), "libc6 (>= 2.34), debconf (>= 0.5) | debconf-2.0, perl:any");
//! # Ok::<(), ami_deb::Error>(())
//! ```

use std::cmp::Ordering;
use std::fmt;
use std::ops::Deref;

use crate::error::{Error, Result};
use crate::version::Version;

/// A version comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `<<`: strictly earlier.
    Lt,
    /// `<=` (or the obsolete `<`): earlier or equal.
    Le,
    /// `=`: equal.
    Eq,
    /// `>=` (or the obsolete `>`): later or equal.
    Ge,
    /// `>>`: strictly later.
    Gt,
}

impl Op {
    /// The operator as written in control files (`<<`, `<=`, `=`, `>=`,
    /// `>>`).
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<<",
            Op::Le => "<=",
            Op::Eq => "=",
            Op::Ge => ">=",
            Op::Gt => ">>",
        }
    }

    /// Whether a version that compares `ordering` to the constraint's
    /// version satisfies the operator.
    pub fn accepts(self, ordering: Ordering) -> bool {
        match self {
            Op::Lt => ordering == Ordering::Less,
            Op::Le => ordering != Ordering::Greater,
            Op::Eq => ordering == Ordering::Equal,
            Op::Ge => ordering != Ordering::Less,
            Op::Gt => ordering == Ordering::Greater,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A version constraint such as `(>= 2.34)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Constraint {
    /// The operator.
    pub op: Op,
    /// The version it compares against.
    pub version: Version,
}

impl Constraint {
    /// Whether `version` satisfies the constraint.
    pub fn matches(&self, version: &Version) -> bool {
        self.op.accepts(version.cmp(&self.version))
    }
}

impl fmt::Display for Constraint {
    /// Writes `op version`, without parentheses.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op, self.version)
    }
}

/// One term of an architecture restriction list (`[amd64 !i386]`) or a
/// build profile formula (`<!nocheck>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Term {
    /// Whether the term was written with a leading `!`.
    pub negated: bool,
    /// The architecture (or wildcard) or profile name.
    pub name: String,
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.negated {
            f.write_str("!")?;
        }
        f.write_str(&self.name)
    }
}

/// One alternative of a relationship field.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Relation {
    /// The package (or virtual package) name.
    pub name: String,
    /// The architecture qualifier after `:` (`any`, `native` or an
    /// architecture name).
    pub arch: Option<String>,
    /// The version constraint.
    pub constraint: Option<Constraint>,
    /// The architecture restriction list; all terms have the same
    /// `negated` flag. Empty when there is none.
    pub arches: Vec<Term>,
    /// The build profile restriction formulas (each `<...>` is one inner
    /// list, whose terms must all hold; the relation applies when any
    /// formula holds). Empty when there is none.
    pub profiles: Vec<Vec<Term>>,
}

impl Relation {
    /// A relation on `name`, without qualifier or constraint.
    pub fn new(name: impl Into<String>) -> Relation {
        Relation {
            name: name.into(),
            arch: None,
            constraint: None,
            arches: Vec::new(),
            profiles: Vec::new(),
        }
    }

    /// Parses a single relation (no `,` or `|`).
    pub fn parse(text: &str) -> Result<Relation> {
        let err = |reason: String| Error::Relation {
            field: "relation".to_owned(),
            text: text.trim().to_owned(),
            reason,
        };
        if text.contains([',', '|']) {
            return Err(err("a single relation was expected".to_owned()));
        }
        scan_relation(text).map(|s| s.to_relation()).map_err(err)
    }

    /// Whether `version` satisfies the version constraint (always true
    /// without one). Names and architectures are not checked here; see
    /// [`crate::PackageIndex::satisfies`].
    pub fn matches_version(&self, version: &Version) -> bool {
        self.constraint.as_ref().is_none_or(|c| c.matches(version))
    }

    /// Whether the relation applies on architecture `arch` with the build
    /// profiles `profiles` active: its architecture list (if any) admits
    /// `arch` (see [`arch_matches`]) and one of its profile formulas (if
    /// any) holds.
    pub fn applies_to(&self, arch: &str, profiles: &[&str]) -> bool {
        let arch_ok = match self.arches.first() {
            None => true,
            Some(t) if t.negated => !self.arches.iter().any(|t| arch_matches(arch, &t.name)),
            Some(_) => self.arches.iter().any(|t| arch_matches(arch, &t.name)),
        };
        let profile_ok = self.profiles.is_empty()
            || self.profiles.iter().any(|formula| {
                formula
                    .iter()
                    .all(|t| profiles.contains(&t.name.as_str()) != t.negated)
            });
        arch_ok && profile_ok
    }
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(arch) = &self.arch {
            write!(f, ":{arch}")?;
        }
        if let Some(c) = &self.constraint {
            write!(f, " ({c})")?;
        }
        if !self.arches.is_empty() {
            f.write_str(" [")?;
            write_terms(f, &self.arches)?;
            f.write_str("]")?;
        }
        for formula in &self.profiles {
            f.write_str(" <")?;
            write_terms(f, formula)?;
            f.write_str(">")?;
        }
        Ok(())
    }
}

fn write_terms(f: &mut fmt::Formatter<'_>, terms: &[Term]) -> fmt::Result {
    for (i, t) in terms.iter().enumerate() {
        if i > 0 {
            f.write_str(" ")?;
        }
        write!(f, "{t}")?;
    }
    Ok(())
}

/// A group of alternatives separated by `|`; never empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Alternatives(Vec<Relation>);

impl Alternatives {
    /// A group from its alternatives; `None` if `relations` is empty.
    pub fn new(relations: Vec<Relation>) -> Option<Alternatives> {
        (!relations.is_empty()).then_some(Alternatives(relations))
    }

    /// The first alternative.
    pub fn first(&self) -> &Relation {
        &self.0[0]
    }
}

impl Deref for Alternatives {
    type Target = [Relation];

    fn deref(&self) -> &[Relation] {
        &self.0
    }
}

impl fmt::Display for Alternatives {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// A whole relationship field: groups separated by commas, each of which
/// must be satisfied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Relations(Vec<Alternatives>);

impl Relations {
    /// An empty list.
    pub fn new() -> Relations {
        Relations(Vec::new())
    }

    /// Parses the value of field `field` (the name is used in error
    /// messages only).
    pub fn parse(field: &str, text: &str) -> Result<Relations> {
        let mut groups = Vec::new();
        walk(field, text, |_, alternatives| {
            groups.push(Alternatives(
                alternatives.iter().map(Scanned::to_relation).collect(),
            ));
            Ok(())
        })?;
        Ok(Relations(groups))
    }

    /// A list from its groups.
    pub fn from_groups(groups: Vec<Alternatives>) -> Relations {
        Relations(groups)
    }
}

impl Deref for Relations {
    type Target = [Alternatives];

    fn deref(&self) -> &[Alternatives] {
        &self.0
    }
}

impl fmt::Display for Relations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, g) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{g}")?;
        }
        Ok(())
    }
}

/// The binary package relationship fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RelationKind {
    /// `Pre-Depends`.
    PreDepends,
    /// `Depends`.
    Depends,
    /// `Recommends`.
    Recommends,
    /// `Suggests`.
    Suggests,
    /// `Enhances`.
    Enhances,
    /// `Conflicts`.
    Conflicts,
    /// `Breaks`.
    Breaks,
    /// `Provides`.
    Provides,
    /// `Replaces`.
    Replaces,
}

impl RelationKind {
    /// Every kind, in the order above.
    pub const ALL: [RelationKind; 9] = [
        RelationKind::PreDepends,
        RelationKind::Depends,
        RelationKind::Recommends,
        RelationKind::Suggests,
        RelationKind::Enhances,
        RelationKind::Conflicts,
        RelationKind::Breaks,
        RelationKind::Provides,
        RelationKind::Replaces,
    ];

    /// The control field name, e.g. `Pre-Depends`.
    pub fn field_name(self) -> &'static str {
        match self {
            RelationKind::PreDepends => "Pre-Depends",
            RelationKind::Depends => "Depends",
            RelationKind::Recommends => "Recommends",
            RelationKind::Suggests => "Suggests",
            RelationKind::Enhances => "Enhances",
            RelationKind::Conflicts => "Conflicts",
            RelationKind::Breaks => "Breaks",
            RelationKind::Provides => "Provides",
            RelationKind::Replaces => "Replaces",
        }
    }

    /// A verb phrase for messages, e.g. `pre-depends on`.
    pub fn verb(self) -> &'static str {
        match self {
            RelationKind::PreDepends => "pre-depends on",
            RelationKind::Depends => "depends on",
            RelationKind::Recommends => "recommends",
            RelationKind::Suggests => "suggests",
            RelationKind::Enhances => "enhances",
            RelationKind::Conflicts => "conflicts with",
            RelationKind::Breaks => "breaks",
            RelationKind::Provides => "provides",
            RelationKind::Replaces => "replaces",
        }
    }
}

impl fmt::Display for RelationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.field_name())
    }
}

/// Whether the Debian architecture `arch` matches `pattern`: equal, `any`,
/// or an `os-any` / `any-cpu` wildcard. Architectures without a hyphen are
/// Linux ones (`amd64` is `linux-amd64`); ABI variants are not modelled.
pub fn arch_matches(arch: &str, pattern: &str) -> bool {
    if pattern == arch || pattern == "any" {
        return true;
    }
    let split = |a: &str| -> (String, String) {
        match a.split_once('-') {
            Some((os, cpu)) => (os.to_owned(), cpu.to_owned()),
            None => ("linux".to_owned(), a.to_owned()),
        }
    };
    if arch == "all" || pattern == "all" {
        return false;
    }
    let (os, cpu) = split(arch);
    match pattern.split_once('-') {
        Some(("any", pcpu)) => pcpu == cpu,
        Some((pos, "any")) => pos == os,
        Some((pos, pcpu)) => pos == os && pcpu == cpu,
        None => os == "linux" && pattern == cpu,
    }
}

fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"+-._".contains(&c)
}

fn skip_ws(s: &str) -> &str {
    s.trim_start_matches(|c: char| c.is_ascii_whitespace())
}

/// Checks a list of terms between brackets (`amd64 !i386`), returning how
/// many there are and whether the first is negated.
fn check_terms(inner: &str, what: &str) -> std::result::Result<(usize, bool), String> {
    let mut count = 0;
    let mut first_negated = false;
    for word in inner.split_ascii_whitespace() {
        let (negated, name) = match word.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, word),
        };
        if name.is_empty() || !name.bytes().all(is_name_char) {
            return Err(format!("invalid {what} {word:?}"));
        }
        if count == 0 {
            first_negated = negated;
        }
        count += 1;
    }
    if count == 0 {
        return Err(format!("empty {what} list"));
    }
    Ok((count, first_negated))
}

/// Terms of an already checked list.
fn terms(inner: &str) -> Vec<Term> {
    inner
        .split_ascii_whitespace()
        .map(|word| match word.strip_prefix('!') {
            Some(rest) => Term {
                negated: true,
                name: rest.to_owned(),
            },
            None => Term {
                negated: false,
                name: word.to_owned(),
            },
        })
        .collect()
}

/// One alternative, checked but not copied.
struct Scanned<'a> {
    name: &'a str,
    arch: Option<&'a str>,
    constraint: Option<(Op, &'a str)>,
    /// Inside the brackets.
    arches: Option<&'a str>,
    /// Inside each pair of angle brackets.
    profiles: Vec<&'a str>,
}

impl Scanned<'_> {
    fn to_relation(&self) -> Relation {
        Relation {
            name: self.name.to_owned(),
            arch: self.arch.map(str::to_owned),
            constraint: self.constraint.map(|(op, v)| Constraint {
                op,
                version: Version::parse_lenient(v).expect("checked while scanning"),
            }),
            arches: self.arches.map(terms).unwrap_or_default(),
            profiles: self.profiles.iter().map(|p| terms(p)).collect(),
        }
    }
}

/// Checks one alternative; the error is a reason (the caller adds the field
/// and text). Allocates only for build profiles and errors.
fn scan_relation(text: &str) -> std::result::Result<Scanned<'_>, String> {
    let s = skip_ws(text);
    let end = s
        .bytes()
        .position(|c| c.is_ascii_whitespace() || b":([<".contains(&c))
        .unwrap_or(s.len());
    let name = &s[..end];
    if name.is_empty() {
        return Err("missing package name".to_owned());
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(format!(
            "package name {name:?} must start with a letter or digit"
        ));
    }
    if let Some(c) = name.bytes().find(|&c| !is_name_char(c)) {
        return Err(format!(
            "invalid character {:?} in package name {name:?}",
            c as char
        ));
    }
    let mut scanned = Scanned {
        name,
        arch: None,
        constraint: None,
        arches: None,
        profiles: Vec::new(),
    };
    let mut s = &s[end..];
    if let Some(rest) = s.strip_prefix(':') {
        let end = rest
            .bytes()
            .position(|c| c.is_ascii_whitespace() || b"([<".contains(&c))
            .unwrap_or(rest.len());
        let qual = &rest[..end];
        if qual.is_empty() || !qual.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-') {
            return Err(format!("invalid architecture qualifier {qual:?}"));
        }
        scanned.arch = Some(qual);
        s = &rest[end..];
    }
    s = skip_ws(s);
    if let Some(rest) = s.strip_prefix('(') {
        let close = rest.find(')').ok_or("missing ')' after the version")?;
        let inner = skip_ws(&rest[..close]);
        let (op, len) = if inner.starts_with("<<") {
            (Op::Lt, 2)
        } else if inner.starts_with("<=") {
            (Op::Le, 2)
        } else if inner.starts_with(">>") {
            (Op::Gt, 2)
        } else if inner.starts_with(">=") {
            (Op::Ge, 2)
        } else if inner.starts_with('=') {
            (Op::Eq, 1)
        } else if inner.starts_with('<') {
            (Op::Le, 1)
        } else if inner.starts_with('>') {
            (Op::Ge, 1)
        } else {
            return Err("missing or invalid version operator".to_owned());
        };
        let version = inner[len..].trim();
        if version.is_empty() {
            return Err("missing version after the operator".to_owned());
        }
        Version::check_lenient(version).map_err(|e| e.to_string())?;
        scanned.constraint = Some((op, version));
        s = skip_ws(&rest[close + 1..]);
    }
    if let Some(rest) = s.strip_prefix('[') {
        let close = rest
            .find(']')
            .ok_or("missing ']' after the architectures")?;
        let inner = &rest[..close];
        let (_, first_negated) = check_terms(inner, "architecture")?;
        if inner
            .split_ascii_whitespace()
            .any(|w| w.starts_with('!') != first_negated)
        {
            return Err("architecture list mixes negated and plain entries".to_owned());
        }
        scanned.arches = Some(inner);
        s = skip_ws(&rest[close + 1..]);
    }
    while let Some(rest) = s.strip_prefix('<') {
        let close = rest
            .find('>')
            .ok_or("missing '>' after the build profiles")?;
        check_terms(&rest[..close], "build profile")?;
        scanned.profiles.push(&rest[..close]);
        s = skip_ws(&rest[close + 1..]);
    }
    if !s.is_empty() {
        return Err(format!("unexpected {s:?}"));
    }
    Ok(scanned)
}

/// Walks a field: calls `each` with every entry (trimmed) and its scanned
/// alternatives. Stops at the first error.
fn walk<'a>(
    field: &str,
    text: &'a str,
    mut each: impl FnMut(&'a str, &[Scanned<'a>]) -> std::result::Result<(), String>,
) -> Result<()> {
    if text.trim().is_empty() {
        return Ok(());
    }
    let mut alternatives: Vec<Scanned<'a>> = Vec::new();
    let mut entries = text.split(',').peekable();
    while let Some(entry) = entries.next() {
        let err = |reason: String| Error::Relation {
            field: field.to_owned(),
            text: entry.trim().to_owned(),
            reason,
        };
        if entry.trim().is_empty() {
            if entries.peek().is_none() {
                break;
            }
            return Err(err("empty entry between commas".to_owned()));
        }
        alternatives.clear();
        for alternative in entry.split('|') {
            alternatives.push(scan_relation(alternative).map_err(err)?);
        }
        each(entry.trim(), &alternatives).map_err(err)?;
    }
    Ok(())
}

/// Checks a field without building it: the same errors as
/// [`Relations::parse`], without allocating on success (except for build
/// profiles). `max_alternatives` limits the alternatives per group (1 for
/// `Conflicts`, `Breaks`, `Replaces`, `Provides`); `equal_only` allows only
/// the `=` operator (for `Provides`).
pub(crate) fn check(
    field: &str,
    text: &str,
    max_alternatives: usize,
    equal_only: bool,
) -> Result<()> {
    walk(field, text, |_, alternatives| {
        if alternatives.len() > max_alternatives {
            return Err("alternatives ('|') are not allowed in this field".to_owned());
        }
        if equal_only
            && alternatives
                .iter()
                .any(|a| a.constraint.is_some_and(|(op, _)| op != Op::Eq))
        {
            return Err(format!("only '=' is allowed in {field}"));
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_wildcards() {
        assert!(arch_matches("amd64", "amd64"));
        assert!(arch_matches("amd64", "any"));
        assert!(arch_matches("amd64", "linux-any"));
        assert!(arch_matches("amd64", "any-amd64"));
        assert!(arch_matches("amd64", "linux-amd64"));
        assert!(!arch_matches("amd64", "any-i386"));
        assert!(!arch_matches("amd64", "kfreebsd-any"));
        assert!(arch_matches("hurd-i386", "hurd-any"));
        assert!(!arch_matches("hurd-i386", "i386"));
        assert!(!arch_matches("all", "amd64"));
    }

    #[test]
    fn op_accepts() {
        use Ordering::*;
        let table = [
            (Op::Lt, [true, false, false]),
            (Op::Le, [true, true, false]),
            (Op::Eq, [false, true, false]),
            (Op::Ge, [false, true, true]),
            (Op::Gt, [false, false, true]),
        ];
        for (op, expected) in table {
            assert_eq!(
                [op.accepts(Less), op.accepts(Equal), op.accepts(Greater)],
                expected,
                "{op}"
            );
        }
    }
}
