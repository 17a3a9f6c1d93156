//! A model of `Packages` indices for one architecture.
//!
//! A [`PackageIndex`] is built from one or more `Packages` texts (several
//! suites and components merged); every [`Package`] remembers which source
//! it came from and keeps its raw paragraph (for the dpkg `status` writer).
//! Records for other architectures are skipped: the index holds the target
//! architecture and `all`, a single-architecture view (see
//! [`PackageIndex::skipped`]).
//!
//! ```
//! use ami_deb::PackageIndex;
//!
//! let mut index = PackageIndex::new("amd64");
//! index.add_source("bookworm/main", "Package: a\nVersion: 1.0\nArchitecture: amd64\nProvides: b (= 2)\n\nPackage: a\nVersion: 0.9\nArchitecture: amd64\n")?;
//! index.add_source("bookworm-updates/main", "Package: a\nVersion: 1.1\nArchitecture: amd64\n\nPackage: c\nVersion: 1\nArchitecture: i386\n")?;
//! let candidate = index.candidate("a").unwrap();
//! assert_eq!(candidate.version().as_str(), "1.1");
//! assert_eq!(index.source(candidate.source()).label(), "bookworm-updates/main");
//! assert_eq!(index.lookup("a").count(), 3);
//! assert_eq!(index.providers("b").len(), 1);
//! assert_eq!(index.skipped(), 1); // c is for i386
//! # Ok::<(), ami_deb::Error>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::ops::{Index, Range};
use std::sync::{Arc, OnceLock};

use crate::control::{Paragraph, Paragraphs};
use crate::error::{Error, Result};
use crate::relation::{self, Relation, RelationKind, Relations};
use crate::version::Version;

/// Identifies one source (one `Packages` text) of a [`PackageIndex`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId(u32);

impl SourceId {
    /// Position of the source, in the order sources were added.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Identifies one package record of a [`PackageIndex`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackageId(u32);

impl PackageId {
    /// Position of the record in [`PackageIndex::packages`].
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// The `Multi-Arch` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MultiArch {
    /// No field, or `no`.
    #[default]
    No,
    /// `same`: co-installable with itself for other architectures.
    Same,
    /// `foreign`: satisfies dependencies of any architecture.
    Foreign,
    /// `allowed`: satisfies `name:any` dependencies.
    Allowed,
}

impl MultiArch {
    /// The field value (`no`, `same`, `foreign`, `allowed`).
    pub fn as_str(self) -> &'static str {
        match self {
            MultiArch::No => "no",
            MultiArch::Same => "same",
            MultiArch::Foreign => "foreign",
            MultiArch::Allowed => "allowed",
        }
    }
}

/// The `Priority` field.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Priority {
    /// `required`.
    Required,
    /// `important`.
    Important,
    /// `standard`.
    Standard,
    /// `optional`.
    Optional,
    /// `extra` (obsolete; same meaning as optional).
    Extra,
    /// Any other value, as written.
    Other(String),
}

impl Priority {
    /// Parses a field value; unknown values become [`Priority::Other`].
    pub fn parse(value: &str) -> Priority {
        match value {
            "required" => Priority::Required,
            "important" => Priority::Important,
            "standard" => Priority::Standard,
            "optional" => Priority::Optional,
            "extra" => Priority::Extra,
            other => Priority::Other(other.to_owned()),
        }
    }

    /// The field value.
    pub fn as_str(&self) -> &str {
        match self {
            Priority::Required => "required",
            Priority::Important => "important",
            Priority::Standard => "standard",
            Priority::Optional => "optional",
            Priority::Extra => "extra",
            Priority::Other(s) => s,
        }
    }

    /// apt's ranking: `required` 1, `important` 2, `standard` 3,
    /// `optional` 4, `extra` 5, anything else 6 (lower is preferred).
    pub fn rank(&self) -> u8 {
        match self {
            Priority::Required => 1,
            Priority::Important => 2,
            Priority::Standard => 3,
            Priority::Optional => 4,
            Priority::Extra => 5,
            Priority::Other(_) => 6,
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// apt's default pin priority of a source.
pub const DEFAULT_PRIORITY: i32 = 500;
/// apt's priority of a suite whose Release says `NotAutomatic: yes` (e.g.
/// backports, experimental): never chosen while another version exists.
pub const NOT_AUTOMATIC_PRIORITY: i32 = 1;
/// apt's priority of a `NotAutomatic: yes` suite that also says
/// `ButAutomaticUpgrades: yes` (backports): still below the default.
pub const BUT_AUTOMATIC_UPGRADES_PRIORITY: i32 = 100;

/// The pin priority apt gives a suite from its Release file's fields
/// (`field("NotAutomatic")`, `field("ButAutomaticUpgrades")`), as apt does
/// without preferences files.
pub fn release_priority(not_automatic: Option<&str>, but_automatic_upgrades: Option<&str>) -> i32 {
    let yes = |v: Option<&str>| v.is_some_and(|v| v.trim().eq_ignore_ascii_case("yes"));
    match (yes(not_automatic), yes(but_automatic_upgrades)) {
        (false, _) => DEFAULT_PRIORITY,
        (true, false) => NOT_AUTOMATIC_PRIORITY,
        (true, true) => BUT_AUTOMATIC_UPGRADES_PRIORITY,
    }
}

/// One `Packages` text added to an index.
#[derive(Debug, Clone)]
pub struct Source {
    label: String,
    text: Arc<str>,
    packages: usize,
    priority: i32,
}

impl Source {
    /// The pin priority of the source ([`DEFAULT_PRIORITY`] unless set
    /// with [`PackageIndex::set_priority`]).
    pub fn priority(&self) -> i32 {
        self.priority
    }

    /// The label given to [`PackageIndex::add_source`].
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The whole text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// How many of its records were kept (target architecture or `all`).
    pub fn package_count(&self) -> usize {
        self.packages
    }
}

/// A byte range of a source text, `u32`-sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// The span of `value`, a slice of `text`.
    fn of(text: &str, value: &str) -> Span {
        let start = value.as_ptr() as usize - text.as_ptr() as usize;
        debug_assert!(start + value.len() <= text.len());
        Span {
            start: start as u32,
            end: (start + value.len()) as u32,
        }
    }

    fn range(self) -> Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// One package record (one paragraph of a `Packages` text).
///
/// String fields point into the source text. The relationship fields are
/// checked when the record is added, but built only when first asked for
/// (`Provides` excepted), so that indices of tens of thousands of records
/// load quickly.
#[derive(Debug, Clone)]
pub struct Package {
    id: PackageId,
    source: SourceId,
    name: Span,
    version: Version,
    architecture: Span,
    multi_arch: MultiArch,
    priority: Option<Priority>,
    essential: bool,
    protected: bool,
    section: Option<Span>,
    filename: Option<Span>,
    size: Option<u64>,
    sha256: Option<Span>,
    installed_size: Option<u64>,
    provides: Relations,
    relations: OnceLock<Box<[Relations; 9]>>,
    text: Arc<str>,
    span: Span,
}

impl Package {
    /// The record's id in its index.
    pub fn id(&self) -> PackageId {
        self.id
    }

    /// The source it came from.
    pub fn source(&self) -> SourceId {
        self.source
    }

    /// `Package`.
    pub fn name(&self) -> &str {
        &self.text[self.name.range()]
    }

    /// `Version`.
    pub fn version(&self) -> &Version {
        &self.version
    }

    /// `Architecture` (the index's architecture or `all`).
    pub fn architecture(&self) -> &str {
        &self.text[self.architecture.range()]
    }

    /// `Multi-Arch`.
    pub fn multi_arch(&self) -> MultiArch {
        self.multi_arch
    }

    /// `Priority`.
    pub fn priority(&self) -> Option<&Priority> {
        self.priority.as_ref()
    }

    /// `Essential: yes`.
    pub fn essential(&self) -> bool {
        self.essential
    }

    /// `Protected: yes` (or its older name `Important: yes`).
    pub fn protected(&self) -> bool {
        self.protected
    }

    /// `Section`.
    pub fn section(&self) -> Option<&str> {
        self.section.map(|s| &self.text[s.range()])
    }

    /// `Filename`: the `.deb`'s path relative to the mirror root.
    pub fn filename(&self) -> Option<&str> {
        self.filename.map(|s| &self.text[s.range()])
    }

    /// `Size`: the `.deb`'s size in bytes.
    pub fn size(&self) -> Option<u64> {
        self.size
    }

    /// `SHA256`: the `.deb`'s hash, lowercase hex as written.
    pub fn sha256(&self) -> Option<&str> {
        self.sha256.map(|s| &self.text[s.range()])
    }

    /// `Installed-Size`, in KiB.
    pub fn installed_size(&self) -> Option<u64> {
        self.installed_size
    }

    /// The relationship field `kind` (empty when absent).
    pub fn relations(&self, kind: RelationKind) -> &Relations {
        if kind == RelationKind::Provides {
            return &self.provides;
        }
        let all = self.relations.get_or_init(|| {
            let paragraph = self.paragraph();
            let mut all: Box<[Relations; 9]> = Box::default();
            for kind in RelationKind::ALL {
                if let Some(value) = paragraph.get(kind.field_name()) {
                    if kind != RelationKind::Provides {
                        all[kind as usize] = Relations::parse(kind.field_name(), value)
                            .expect("relation fields are checked when the record is added");
                    }
                }
            }
            all
        });
        &all[kind as usize]
    }

    /// `Depends`.
    pub fn depends(&self) -> &Relations {
        self.relations(RelationKind::Depends)
    }

    /// `Pre-Depends`.
    pub fn pre_depends(&self) -> &Relations {
        self.relations(RelationKind::PreDepends)
    }

    /// `Recommends`.
    pub fn recommends(&self) -> &Relations {
        self.relations(RelationKind::Recommends)
    }

    /// `Conflicts`.
    pub fn conflicts(&self) -> &Relations {
        self.relations(RelationKind::Conflicts)
    }

    /// `Breaks`.
    pub fn breaks(&self) -> &Relations {
        self.relations(RelationKind::Breaks)
    }

    /// `Provides` (each group has exactly one relation, with an `=`
    /// constraint or none).
    pub fn provides(&self) -> &Relations {
        self.relations(RelationKind::Provides)
    }

    /// `Replaces`.
    pub fn replaces(&self) -> &Relations {
        self.relations(RelationKind::Replaces)
    }

    /// The raw paragraph, exactly as in the source text (with its final
    /// newline, if it had one).
    pub fn raw(&self) -> &str {
        &self.text[self.span.range()]
    }

    /// The paragraph, parsed again from [`Package::raw`] (line numbers
    /// count from the paragraph's first line).
    pub fn paragraph(&self) -> Paragraph<'_> {
        Paragraph::parse(self.raw()).expect("a paragraph that parsed before parses again")
    }
}

impl fmt::Display for Package {
    /// Writes `name version`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name(), self.version)
    }
}

/// A package that provides a virtual name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    /// The providing package.
    pub package: PackageId,
    /// The provided version, for versioned provides (`Provides: foo (= 1)`).
    pub version: Option<Version>,
}

/// Packages records of one architecture, from one or more sources.
#[derive(Debug, Clone)]
pub struct PackageIndex {
    arch: String,
    sources: Vec<Source>,
    packages: Vec<Package>,
    by_name: HashMap<String, Vec<PackageId>>,
    provides: HashMap<String, Vec<Provider>>,
    skipped: usize,
}

impl PackageIndex {
    /// An empty index for the Debian architecture `arch` (e.g. `amd64`).
    pub fn new(arch: &str) -> PackageIndex {
        PackageIndex {
            arch: arch.to_owned(),
            sources: Vec::new(),
            packages: Vec::new(),
            by_name: HashMap::new(),
            provides: HashMap::new(),
            skipped: 0,
        }
    }

    /// An index of a single `Packages` text, labelled `Packages`.
    pub fn from_text(arch: &str, text: impl Into<Arc<str>>) -> Result<PackageIndex> {
        let mut index = PackageIndex::new(arch);
        index.add_source("Packages", text)?;
        Ok(index)
    }

    /// The target architecture.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// Adds the records of a `Packages` text; `label` names it in errors
    /// and in [`Source::label`]. Records of other architectures are
    /// skipped. Either all records are added or, on error, none.
    ///
    /// Errors ([`Error::Index`]) give the label, the record's line and
    /// package, and the problem: a syntax error, a missing `Package`,
    /// `Version` or `Architecture`, an invalid version, relation field,
    /// number or `Multi-Arch`/`Essential` value, alternatives in
    /// `Conflicts`, `Breaks`, `Replaces` or `Provides`, or a `Provides`
    /// with an operator other than `=`.
    pub fn add_source(
        &mut self,
        label: impl Into<String>,
        text: impl Into<Arc<str>>,
    ) -> Result<SourceId> {
        let label = label.into();
        let text: Arc<str> = text.into();
        let source = SourceId(u32::try_from(self.sources.len()).expect("fewer than 2^32 sources"));
        if u32::try_from(text.len()).is_err() {
            return Err(Error::Index {
                origin: label,
                line: 0,
                package: None,
                cause: Box::new(Error::Syntax {
                    line: 0,
                    reason: "index text larger than 4 GiB".to_owned(),
                }),
            });
        }
        let mut added = Vec::new();
        let mut skipped = 0;
        for paragraph in Paragraphs::new(&text) {
            let paragraph = paragraph.map_err(|e| {
                let line = match &e {
                    Error::Syntax { line, .. } => *line,
                    _ => 0,
                };
                Error::Index {
                    origin: label.clone(),
                    line,
                    package: None,
                    cause: Box::new(e),
                }
            })?;
            let wrap = |e: Error| Error::Index {
                origin: label.clone(),
                line: paragraph.line(),
                package: paragraph.get("Package").map(str::to_owned),
                cause: Box::new(e),
            };
            let arch = paragraph
                .get("Architecture")
                .ok_or(Error::MissingField {
                    field: "Architecture",
                })
                .map_err(wrap)?;
            if arch != self.arch && arch != "all" {
                skipped += 1;
                continue;
            }
            let id = PackageId(
                u32::try_from(self.packages.len() + added.len()).expect("fewer than 2^32 packages"),
            );
            let package = parse_package(&paragraph, id, source, &text).map_err(wrap)?;
            added.push(package);
        }
        for package in &added {
            self.by_name
                .entry(package.name().to_owned())
                .or_default()
                .push(package.id);
            for group in package.provides().iter() {
                let provided = group.first();
                self.provides
                    .entry(provided.name.clone())
                    .or_default()
                    .push(Provider {
                        package: package.id,
                        version: provided.constraint.as_ref().map(|c| c.version.clone()),
                    });
            }
        }
        let count = added.len();
        self.packages.extend(added);
        let packages = &self.packages;
        for ids in self.by_name.values_mut() {
            ids.sort_by(|a, b| {
                packages[b.index()]
                    .version
                    .cmp(&packages[a.index()].version)
                    .then(a.cmp(b))
            });
        }
        self.skipped += skipped;
        self.sources.push(Source {
            label,
            text,
            packages: count,
            priority: DEFAULT_PRIORITY,
        });
        Ok(source)
    }

    /// Sets the pin priority of a source: [`candidate`](Self::candidate)
    /// takes the highest version among the records of the highest
    /// priority, as apt does (e.g. a backports suite, priority
    /// [`BUT_AUTOMATIC_UPGRADES_PRIORITY`], loses to the release's version
    /// even when newer). Unknown ids are ignored.
    pub fn set_priority(&mut self, source: SourceId, priority: i32) {
        if let Some(s) = self.sources.get_mut(source.index()) {
            s.priority = priority;
        }
    }

    /// The sources, in the order they were added.
    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    /// One source.
    pub fn source(&self, id: SourceId) -> &Source {
        &self.sources[id.index()]
    }

    /// All records, in the order they were added.
    pub fn packages(&self) -> &[Package] {
        &self.packages
    }

    /// One record.
    pub fn package(&self, id: PackageId) -> &Package {
        &self.packages[id.index()]
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.packages.len()
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.packages.is_empty()
    }

    /// How many records were skipped because of their architecture.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Every real package name, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.by_name.keys().map(String::as_str)
    }

    /// The records named `name`, highest version first (records with equal
    /// versions in the order they were added).
    pub fn lookup<'a>(
        &'a self,
        name: &str,
    ) -> impl ExactSizeIterator<Item = &'a Package> + DoubleEndedIterator + 'a {
        self.by_name
            .get(name)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(move |id| &self.packages[id.index()])
    }

    /// The candidate for installing `name`, as apt chooses it: among the
    /// records of the sources with the highest pin priority (see
    /// [`set_priority`](Self::set_priority); all equal by default), the
    /// highest version, the earliest-added record among equal versions.
    pub fn candidate(&self, name: &str) -> Option<&Package> {
        self.preferred(name).into_iter().next()
    }

    /// The records named `name` in apt's order of preference: higher pin
    /// priority first, then higher version (the first is the
    /// [`candidate`](Self::candidate)).
    pub fn preferred<'a>(&'a self, name: &str) -> Vec<&'a Package> {
        let mut all: Vec<&Package> = self.lookup(name).collect();
        // Stable: equal priorities keep the version order of `lookup`.
        all.sort_by_key(|p| std::cmp::Reverse(self.priority_of(p)));
        all
    }

    /// The pin priority of the source a record comes from.
    pub fn priority_of(&self, package: &Package) -> i32 {
        self.sources[package.source().index()].priority
    }

    /// The packages providing `name` (in the order they were added).
    pub fn providers(&self, name: &str) -> &[Provider] {
        self.provides
            .get(name)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Whether `package` satisfies `relation`, by its own name or through
    /// its `Provides`.
    ///
    /// * Versions: a real package must match the constraint; a provided
    ///   name satisfies an unversioned relation, and a versioned one only
    ///   when the `Provides` entry has a version that matches (policy 7.5).
    /// * Architecture qualifiers: none or `:native` (or the index's own
    ///   architecture) accept any record of the index; `:any` needs
    ///   `Multi-Arch: allowed` (for a provided name, on the provider); any
    ///   other architecture is never satisfied (single-architecture view).
    pub fn satisfies(&self, package: &Package, relation: &Relation) -> bool {
        let arch_ok = match relation.arch.as_deref() {
            None | Some("native") => true,
            Some("any") => package.multi_arch == MultiArch::Allowed,
            Some(arch) => arch == self.arch,
        };
        if !arch_ok {
            return false;
        }
        if package.name() == relation.name && relation.matches_version(&package.version) {
            return true;
        }
        package.provides().iter().any(|group| {
            let provided = group.first();
            provided.name == relation.name
                && match (&relation.constraint, &provided.constraint) {
                    (None, _) => true,
                    (Some(wanted), Some(given)) => wanted.matches(&given.version),
                    (Some(_), None) => false,
                }
        })
    }
}

impl Index<PackageId> for PackageIndex {
    type Output = Package;

    fn index(&self, id: PackageId) -> &Package {
        self.package(id)
    }
}

fn yes_no(field: &'static str, value: Option<&str>) -> Result<bool> {
    match value {
        None | Some("no") => Ok(false),
        Some("yes") => Ok(true),
        Some(other) => Err(Error::InvalidValue {
            field,
            value: other.to_owned(),
            reason: "expected yes or no".to_owned(),
        }),
    }
}

fn number(field: &'static str, value: Option<&str>) -> Result<Option<u64>> {
    value
        .map(|v| {
            v.parse::<u64>().map_err(|_| Error::InvalidValue {
                field,
                value: v.to_owned(),
                reason: "expected a non-negative integer".to_owned(),
            })
        })
        .transpose()
}

/// The fields a record is built from. The relation fields come last, in
/// [`RelationKind`] order.
const KNOWN_FIELDS: [&str; 22] = [
    "Package",
    "Version",
    "Architecture",
    "Multi-Arch",
    "Protected",
    "Important",
    "Priority",
    "Essential",
    "Section",
    "Filename",
    "Size",
    "SHA256",
    "Installed-Size",
    "Pre-Depends",
    "Depends",
    "Recommends",
    "Suggests",
    "Enhances",
    "Conflicts",
    "Breaks",
    "Provides",
    "Replaces",
];

/// Position of the first relation field in [`KNOWN_FIELDS`].
const FIRST_RELATION: usize = 13;

/// The values of [`KNOWN_FIELDS`], found in one pass over the paragraph.
fn known_fields<'p>(p: &'p Paragraph<'_>) -> [Option<&'p str>; 22] {
    let mut values = [None; 22];
    for field in p.fields() {
        let name = field.name();
        if let Some(i) = KNOWN_FIELDS
            .iter()
            .position(|k| k.len() == name.len() && k.eq_ignore_ascii_case(name))
        {
            values[i] = Some(field.value());
        }
    }
    values
}

fn parse_package(
    p: &Paragraph<'_>,
    id: PackageId,
    source: SourceId,
    text: &Arc<str>,
) -> Result<Package> {
    let fields = known_fields(p);
    let [package, version, architecture, multi_arch, protected, important, priority, essential, section, filename, size, sha256, installed_size, ..] =
        fields;
    let name = package.ok_or(Error::MissingField { field: "Package" })?;
    if name.is_empty() || name.contains(|c: char| c.is_ascii_whitespace()) {
        return Err(Error::InvalidValue {
            field: "Package",
            value: name.to_owned(),
            reason: "not a package name".to_owned(),
        });
    }
    let version = version.ok_or(Error::MissingField { field: "Version" })?;
    let version = Version::parse_lenient(version)?;
    let architecture = architecture.ok_or(Error::MissingField {
        field: "Architecture",
    })?;
    let multi_arch = match multi_arch {
        None | Some("no") => MultiArch::No,
        Some("same") => MultiArch::Same,
        Some("foreign") => MultiArch::Foreign,
        Some("allowed") => MultiArch::Allowed,
        Some(other) => {
            return Err(Error::InvalidValue {
                field: "Multi-Arch",
                value: other.to_owned(),
                reason: "expected no, same, foreign or allowed".to_owned(),
            })
        }
    };
    let protected = yes_no("Protected", protected)? || yes_no("Important", important)?;
    let mut provides = Relations::new();
    for (kind, value) in RelationKind::ALL.into_iter().zip(&fields[FIRST_RELATION..]) {
        let Some(value) = value else {
            continue;
        };
        let single = matches!(
            kind,
            RelationKind::Conflicts
                | RelationKind::Breaks
                | RelationKind::Replaces
                | RelationKind::Provides
        );
        let max_alternatives = if single { 1 } else { usize::MAX };
        relation::check(
            kind.field_name(),
            value,
            max_alternatives,
            kind == RelationKind::Provides,
        )?;
        if kind == RelationKind::Provides {
            provides = Relations::parse(kind.field_name(), value)?;
        }
    }
    let span = |value: &str| Span::of(text, value);
    let start = p.offset();
    Ok(Package {
        id,
        source,
        name: span(name),
        version,
        architecture: span(architecture),
        multi_arch,
        priority: priority.map(Priority::parse),
        essential: yes_no("Essential", essential)?,
        protected,
        section: section.map(span),
        filename: filename.map(span),
        size: number("Size", size)?,
        sha256: sha256.map(span),
        installed_size: number("Installed-Size", installed_size)?,
        provides,
        relations: OnceLock::new(),
        text: Arc::clone(text),
        span: Span {
            start: start as u32,
            end: (start + p.as_str().len()) as u32,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_relation_fields_follow_relation_kind_order() {
        assert_eq!(KNOWN_FIELDS.len() - FIRST_RELATION, RelationKind::ALL.len());
        for (i, kind) in RelationKind::ALL.into_iter().enumerate() {
            assert_eq!(KNOWN_FIELDS[FIRST_RELATION + i], kind.field_name());
            assert_eq!(kind as usize, i);
        }
    }
}

#[cfg(test)]
mod priority_tests {
    use super::*;
    use crate::{resolve, Request, Variant};

    #[test]
    fn not_automatic_suites_lose_to_the_release() {
        let mut index = PackageIndex::new("amd64");
        index
            .add_source(
                "bookworm/main",
                "Package: a\nVersion: 1.0\nArchitecture: amd64\nDepends: b\n\nPackage: b\nVersion: 1.0\nArchitecture: amd64\n",
            )
            .unwrap();
        let bpo = index
            .add_source(
                "bookworm-backports/main",
                "Package: a\nVersion: 2.0~bpo\nArchitecture: amd64\nDepends: b\n\nPackage: b\nVersion: 2.0~bpo\nArchitecture: amd64\n\nPackage: c\nVersion: 1\nArchitecture: amd64\nPriority: important\n",
            )
            .unwrap();
        // Same priority: the highest version wins.
        assert_eq!(index.candidate("a").unwrap().version().as_str(), "2.0~bpo");
        index.set_priority(bpo, release_priority(Some("yes"), Some("yes")));
        assert_eq!(
            index.sources()[bpo.index()].priority(),
            BUT_AUTOMATIC_UPGRADES_PRIORITY
        );
        assert_eq!(index.candidate("a").unwrap().version().as_str(), "1.0");
        // Only in backports: still the candidate.
        assert_eq!(index.candidate("c").unwrap().version().as_str(), "1");
        let versions: Vec<&str> = index
            .preferred("b")
            .iter()
            .map(|p| p.version().as_str())
            .collect();
        assert_eq!(versions, ["1.0", "2.0~bpo"]);
        // The resolver follows: a and its dependency b from the release.
        let r = resolve(&index, &Request::new(Variant::Custom).package("a")).unwrap();
        assert_eq!(r.get("a").unwrap().version().as_str(), "1.0");
        assert_eq!(r.get("b").unwrap().version().as_str(), "1.0");
        // A package only backports has is not part of a priority variant,
        // but can be asked for.
        let r = resolve(&index, &Request::new(Variant::Default)).unwrap();
        assert!(r.get("c").is_none());
        let r = resolve(&index, &Request::new(Variant::Default).package("c")).unwrap();
        assert!(r.get("c").is_some());
        // An explicit version still reaches backports.
        let r = resolve(&index, &Request::new(Variant::Custom).package("a=2.0~bpo")).unwrap();
        assert_eq!(r.get("a").unwrap().version().as_str(), "2.0~bpo");
        assert_eq!(release_priority(None, None), DEFAULT_PRIORITY);
        assert_eq!(release_priority(Some("yes"), None), NOT_AUTOMATIC_PRIORITY);
    }
}
