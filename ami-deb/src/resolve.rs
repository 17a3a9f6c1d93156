//! Dependency resolution: from "this variant plus these packages" to the
//! exact set of package records to install.
//!
//! The resolver is a deterministic greedy closure modelled on apt's
//! `MarkInstall` (apt is not a SAT solver either), followed by a validation
//! pass:
//!
//! 1. **Roots.** The variant's packages ([`Variant`]; names sorted), then
//!    `usr-is-merged` when [`Request::merged_usr`] is on, then the requested
//!    packages in the given order. All roots are selected before any
//!    dependency is looked at, so a root always wins over an alternative.
//!    Each root uses the candidate version (apt's: the highest version
//!    among the sources of the highest pin priority, so that `NotAutomatic`
//!    suites such as backports are not chosen by default) unless the request
//!    pins another one.
//! 2. **Closure**, depth first from each root in order, like apt: for each
//!    selected package, its `Pre-Depends`, then `Depends`, then (if asked)
//!    `Recommends` groups, in field order. A group already satisfied by the
//!    selection is skipped: an alternative already selected wins, and so
//!    does an already-selected provider. Otherwise the alternatives are
//!    tried in order; for each, the real package of that name first (its
//!    most preferred version that satisfies the constraint: pin priority,
//!    then version), then the packages
//!    providing it (versioned `Provides` for versioned dependencies),
//!    ordered as apt orders providers: `Essential` first, then `Protected`,
//!    then by `Priority`, then by name. A candidate is skipped when its name
//!    is excluded or already selected at another version, or when it
//!    conflicts with (or breaks) a selected package or the reverse; if one
//!    of its own dependencies cannot be satisfied, everything it pulled in is
//!    undone and the next candidate is tried. An unsatisfiable `Recommends`
//!    is ignored.
//! 3. **Validation**: every `Pre-Depends`/`Depends` group is satisfied, no
//!    `Conflicts`/`Breaks` holds between two selected packages (a package
//!    never conflicts with itself, including through its own `Provides`),
//!    one version per name. [`validate`] runs the same checks on any set.
//!
//! Known differences from apt, all in situations that do not occur for the
//! bootstrap sets of Debian 12: apt only ever installs candidate versions,
//! this resolver takes the highest version that satisfies a constraint; apt
//! may un-select an earlier choice that a new package conflicts with and
//! repair afterwards, this resolver rejects the new package instead; among
//! otherwise equal providers apt prefers the one it saw last in its cache,
//! this resolver the first by name.
//!
//! ```
//! use ami_deb::{resolve, PackageIndex, Request, Variant};
//!
//! let index = PackageIndex::from_text("amd64", "\
//! Package: base-files\nVersion: 12.4\nArchitecture: amd64\nEssential: yes\nPriority: required\n
//! Package: sudo\nVersion: 1.9.13p3-1\nArchitecture: amd64\nPriority: optional\nDepends: libc6 (>= 2.34), libpam0g\n
//! Package: libc6\nVersion: 2.36-9\nArchitecture: amd64\nPriority: optional\n
//! Package: libpam0g\nVersion: 1.5.2-6\nArchitecture: amd64\nPriority: optional\nDepends: libc6\n")?;
//! let request = Request::new(Variant::Minbase).package("sudo");
//! let resolution = resolve(&index, &request)?;
//! let names: Vec<&str> = resolution.packages().map(|p| p.name()).collect();
//! assert_eq!(names, ["base-files", "libc6", "libpam0g", "sudo"]);
//! assert_eq!(resolution.chain("libc6"), ["sudo", "libc6"]);
//! # Ok::<(), ami_deb::Error>(())
//! ```

use std::collections::HashMap;
use std::fmt;

use crate::error::{Conflict, Error, Result, Unresolvable};
use crate::index::{Package, PackageId, PackageIndex, Priority};
use crate::relation::{Alternatives, Constraint, Op, Relation, RelationKind};
use crate::version::Version;

/// Which base set a [`Request`] starts from (as debootstrap and mmdebstrap
/// name them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Variant {
    /// Only the requested packages and their dependencies.
    Custom,
    /// Packages with `Essential: yes`.
    Essential,
    /// `Essential: yes`, `Priority: required` and `apt`.
    Minbase,
    /// `Essential: yes`, `Priority: required` and `Priority: important`.
    #[default]
    Default,
}

/// What to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Request {
    /// The base set.
    pub variant: Variant,
    /// Packages to add: `name`, `name=version` or `name (op version)`.
    /// A virtual name with a single provider selects that provider.
    pub packages: Vec<String>,
    /// Whether to follow `Recommends` (debootstrap and mmdebstrap do not).
    pub recommends: bool,
    /// Names never to select: variant members are dropped, alternatives
    /// skipped; requesting one is an error.
    pub exclude: Vec<String>,
    /// Merged /usr the way debootstrap and mmdebstrap do it: add
    /// `usr-is-merged` (when the index has it) and exclude `usrmerge`, whose
    /// maintainer script converts a live system and pulls in perl. On by
    /// default.
    pub merged_usr: bool,
}

impl Request {
    /// A request for `variant` with no extra packages, no recommends, no
    /// exclusions and merged /usr.
    pub fn new(variant: Variant) -> Request {
        Request {
            variant,
            packages: Vec::new(),
            recommends: false,
            exclude: Vec::new(),
            merged_usr: true,
        }
    }

    /// Adds one package spec.
    pub fn package(mut self, spec: impl Into<String>) -> Request {
        self.packages.push(spec.into());
        self
    }

    /// Adds package specs.
    pub fn packages<I, S>(mut self, specs: I) -> Request
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.packages.extend(specs.into_iter().map(Into::into));
        self
    }

    /// Sets whether to follow `Recommends`.
    pub fn recommends(mut self, on: bool) -> Request {
        self.recommends = on;
        self
    }

    /// Adds a name never to select.
    pub fn exclude(mut self, name: impl Into<String>) -> Request {
        self.exclude.push(name.into());
        self
    }

    /// Sets [`Request::merged_usr`].
    pub fn merged_usr(mut self, on: bool) -> Request {
        self.merged_usr = on;
        self
    }
}

impl Default for Request {
    fn default() -> Request {
        Request::new(Variant::default())
    }
}

/// Why a package is in a [`Resolution`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Named in [`Request::packages`].
    Requested,
    /// `Essential: yes`, part of every variant but `Custom`.
    Essential,
    /// Its priority puts it in the variant (`required` or `important`).
    Priority(Priority),
    /// Named by the variant itself (`apt` in minbase).
    Variant,
    /// `usr-is-merged`, added for [`Request::merged_usr`].
    MergedUsr,
    /// Pulled in by another package.
    Dependency {
        /// The package whose relation it satisfies.
        by: String,
        /// The field of that relation.
        kind: RelationKind,
        /// The relation (the whole `|` group).
        relation: String,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Requested => f.write_str("requested"),
            Reason::Essential => f.write_str("Essential: yes"),
            Reason::Priority(p) => write!(f, "Priority: {p}"),
            Reason::Variant => f.write_str("part of the variant"),
            Reason::MergedUsr => f.write_str("merged /usr"),
            Reason::Dependency { by, kind, relation } => {
                write!(f, "{by} {} {relation}", kind.verb())
            }
        }
    }
}

/// The result of [`resolve`]: the package records to install, sorted by
/// name, each with the reason it was selected.
#[derive(Debug, Clone)]
pub struct Resolution<'a> {
    index: &'a PackageIndex,
    entries: Vec<(PackageId, Reason)>,
    roots: Vec<PackageId>,
}

impl<'a> Resolution<'a> {
    /// The index the records come from.
    pub fn index(&self) -> &'a PackageIndex {
        self.index
    }

    /// Number of packages.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing was selected.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The packages, sorted by name.
    pub fn packages(&self) -> impl ExactSizeIterator<Item = &'a Package> + '_ {
        self.entries.iter().map(|(id, _)| &self.index[*id])
    }

    /// The packages with the reason each was selected, sorted by name.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&'a Package, &Reason)> + '_ {
        self.entries.iter().map(|(id, r)| (&self.index[*id], r))
    }

    /// The ids of the packages, sorted by name.
    pub fn ids(&self) -> Vec<PackageId> {
        self.entries.iter().map(|(id, _)| *id).collect()
    }

    /// The roots in the order they were expanded: variant members (sorted
    /// by name), `usr-is-merged`, then the requested packages.
    pub fn roots(&self) -> impl ExactSizeIterator<Item = &'a Package> + '_ {
        self.roots.iter().map(|id| &self.index[*id])
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.entries
            .binary_search_by(|(id, _)| self.index[*id].name().cmp(name))
            .ok()
    }

    /// The selected record named `name`.
    pub fn get(&self, name: &str) -> Option<&'a Package> {
        self.position(name).map(|i| &self.index[self.entries[i].0])
    }

    /// Why `name` was selected.
    pub fn reason(&self, name: &str) -> Option<&Reason> {
        self.position(name).map(|i| &self.entries[i].1)
    }

    /// How `name` was pulled in: the names from a root down to `name`
    /// (just `[name]` for a root, empty if `name` is not selected).
    pub fn chain(&self, name: &str) -> Vec<&str> {
        let mut chain = Vec::new();
        let mut current = self.position(name);
        while let Some(i) = current {
            let (id, reason) = &self.entries[i];
            chain.push(self.index[*id].name());
            current = match reason {
                Reason::Dependency { by, .. } if chain.len() <= self.entries.len() => {
                    self.position(by)
                }
                _ => None,
            };
        }
        chain.reverse();
        chain
    }
}

/// Resolves `request` against `index`. See the [module documentation](self)
/// for the rules.
///
/// Errors: [`Error::InvalidRequest`], [`Error::UnknownPackage`],
/// [`Error::VirtualPackage`], [`Error::UnsatisfiableRequest`] and
/// [`Error::ConflictingRequests`] for the request itself;
/// [`Error::Unresolvable`] (with the chain of packages that led there) and
/// [`Error::Conflict`] for dependencies.
pub fn resolve<'a>(index: &'a PackageIndex, request: &Request) -> Result<Resolution<'a>> {
    let mut excluded = request.exclude.clone();
    if request.merged_usr {
        excluded.push("usrmerge".to_owned());
    }
    let mut solver = Solver::new(index, excluded, request.recommends);

    // The requested packages first, so that their pins apply to variant
    // members of the same name.
    let mut requested: Vec<(PackageId, String)> = Vec::new();
    for spec in &request.packages {
        let id = solver.resolve_spec(spec)?;
        if let Some((other, other_spec)) = requested
            .iter()
            .find(|(o, _)| index[*o].name() == index[id].name())
        {
            if *other != id {
                return Err(Error::ConflictingRequests {
                    first: format!("{other_spec} ({})", index[*other]),
                    second: format!("{spec} ({})", index[id]),
                    reason: "only one version of a package can be installed".to_owned(),
                });
            }
            continue;
        }
        requested.push((id, spec.clone()));
    }
    let pinned = |name: &str| requested.iter().find(|(id, _)| index[*id].name() == name);

    let mut roots: Vec<(PackageId, Reason, String)> = Vec::new();
    for (name, reason) in variant_members(index, request.variant) {
        if solver.is_excluded(name) {
            continue;
        }
        let id = match pinned(name) {
            Some((id, _)) => *id,
            None => index.candidate(name).expect("variant members exist").id(),
        };
        roots.push((id, reason, name.to_owned()));
    }
    if request.merged_usr
        && !roots
            .iter()
            .any(|(id, _, _)| index[*id].name() == "usr-is-merged")
    {
        if let Some(p) = pinned("usr-is-merged")
            .map(|(id, _)| &index[*id])
            .or_else(|| index.candidate("usr-is-merged"))
        {
            roots.push((p.id(), Reason::MergedUsr, p.name().to_owned()));
        }
    }
    for (id, spec) in &requested {
        match roots.iter_mut().find(|(r, _, _)| r == id) {
            Some(root) => root.1 = Reason::Requested,
            None => roots.push((*id, Reason::Requested, spec.clone())),
        }
    }

    // Select every root, then expand them in order.
    for (id, reason, _) in &roots {
        if let Some((declarer, kind, relation, other)) = solver.conflict_with_selection(*id) {
            let (first, second) = if declarer == *id {
                (other, *id)
            } else {
                (declarer, *id)
            };
            let find_label = |x: PackageId| {
                roots
                    .iter()
                    .find(|(r, _, _)| *r == x)
                    .map(|(_, _, l)| l.clone())
                    .unwrap_or_else(|| index[x].name().to_owned())
            };
            return Err(Error::ConflictingRequests {
                first: format!("{} ({})", find_label(first), index[first]),
                second: format!("{} ({})", find_label(second), index[second]),
                reason: format!("{} {} {relation}", index[declarer].name(), kind.verb()),
            });
        }
        solver.select(*id, reason.clone());
    }
    for (id, _, _) in &roots {
        solver.expand_root(*id)?;
    }
    let ids: Vec<PackageId> = solver.journal.clone();
    solver.validate(&ids)?;

    let mut entries: Vec<(PackageId, Reason)> = solver
        .journal
        .iter()
        .map(|id| {
            (
                *id,
                solver
                    .reasons
                    .remove(id)
                    .expect("selected packages have a reason"),
            )
        })
        .collect();
    entries.sort_by(|a, b| index[a.0].name().cmp(index[b.0].name()));
    Ok(Resolution {
        index,
        entries,
        roots: roots.iter().map(|(id, _, _)| *id).collect(),
    })
}

/// Checks a set of package records the way [`resolve`] checks its result:
/// one version per name, every `Pre-Depends` and `Depends` group satisfied
/// within the set, and no `Conflicts` or `Breaks` between two members.
/// Two records of one name give [`Error::ConflictingRequests`], an
/// unsatisfied dependency [`Error::Unresolvable`], a conflict
/// [`Error::Conflict`].
pub fn validate(index: &PackageIndex, packages: &[PackageId]) -> Result<()> {
    let mut solver = Solver::new(index, Vec::new(), false);
    for &id in packages {
        if let Some(&other) = solver.selected.get(index[id].name()) {
            if other == id {
                continue;
            }
            return Err(Error::ConflictingRequests {
                first: index[other].to_string(),
                second: index[id].to_string(),
                reason: "only one version of a package can be installed".to_owned(),
            });
        }
        solver.select(id, Reason::Requested);
    }
    let ids = solver.journal.clone();
    solver.validate(&ids)
}

/// The variant's members with their reasons, sorted by name; by the
/// candidate's fields.
fn variant_members(index: &PackageIndex, variant: Variant) -> Vec<(&str, Reason)> {
    let mut members: Vec<(&str, Reason)> = Vec::new();
    if variant == Variant::Custom {
        return members;
    }
    for name in index.names() {
        let Some(candidate) = index.candidate(name) else {
            continue;
        };
        // A package only a NotAutomatic suite (backports) has is never
        // installed automatically, however important it says it is.
        if index.priority_of(candidate) < crate::index::DEFAULT_PRIORITY {
            continue;
        }
        let priority = candidate.priority();
        let reason = if candidate.essential() {
            Reason::Essential
        } else if variant != Variant::Essential && priority == Some(&Priority::Required) {
            Reason::Priority(Priority::Required)
        } else if variant == Variant::Default && priority == Some(&Priority::Important) {
            Reason::Priority(Priority::Important)
        } else if variant == Variant::Minbase && name == "apt" {
            Reason::Variant
        } else {
            continue;
        };
        members.push((name, reason));
    }
    members.sort_by(|a, b| a.0.cmp(b.0));
    members
}

/// A selected package's negative relation: (declaring package, field,
/// relation).
type Negative<'a> = (PackageId, RelationKind, &'a Relation);

/// A conflict found while selecting: (declaring package, field, relation,
/// the package it matches).
type Clash<'a> = (PackageId, RelationKind, &'a Relation, PackageId);

/// A unit of pending work of the depth-first closure.
enum Frame<'a> {
    /// Walking the relation groups of a selected package.
    Expand {
        package: PackageId,
        groups: Vec<(RelationKind, &'a Alternatives)>,
        next: usize,
    },
    /// Trying the candidates of one group in turn.
    Satisfy {
        parent: PackageId,
        kind: RelationKind,
        group: &'a Alternatives,
        candidates: Vec<PackageId>,
        next: usize,
        snapshot: usize,
        first_error: Option<Error>,
    },
}

/// The selection being built, with undo by journal.
struct Solver<'a> {
    index: &'a PackageIndex,
    excluded: Vec<String>,
    recommends: bool,
    selected: HashMap<&'a str, PackageId>,
    journal: Vec<PackageId>,
    reasons: HashMap<PackageId, Reason>,
    provided: HashMap<&'a str, Vec<PackageId>>,
    negatives: HashMap<&'a str, Vec<Negative<'a>>>,
}

/// The relations of a group that apply on `arch` (binary indices have no
/// architecture or profile restrictions, but control files may).
fn active<'g>(group: &'g Alternatives, arch: &'g str) -> impl Iterator<Item = &'g Relation> + 'g {
    group.iter().filter(move |r| r.applies_to(arch, &[]))
}

/// "a", "a and b", "a, b and c".
fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

impl<'a> Solver<'a> {
    fn new(index: &'a PackageIndex, excluded: Vec<String>, recommends: bool) -> Solver<'a> {
        Solver {
            index,
            excluded,
            recommends,
            selected: HashMap::new(),
            journal: Vec::new(),
            reasons: HashMap::new(),
            provided: HashMap::new(),
            negatives: HashMap::new(),
        }
    }

    fn is_excluded(&self, name: &str) -> bool {
        self.excluded.iter().any(|e| e == name)
    }

    /// Resolves one request entry to a record.
    fn resolve_spec(&self, spec: &str) -> Result<PackageId> {
        let index = self.index;
        let invalid = |reason: String| Error::InvalidRequest {
            spec: spec.to_owned(),
            reason,
        };
        let trimmed = spec.trim();
        let relation = match trimmed.split_once('=') {
            Some((name, version)) if !name.contains('(') => {
                let version =
                    Version::parse_lenient(version).map_err(|e| invalid(e.to_string()))?;
                let mut r = Relation::parse(name).map_err(|e| invalid(e.to_string()))?;
                if r.constraint.is_some() {
                    return Err(invalid("two version constraints".to_owned()));
                }
                r.constraint = Some(Constraint {
                    op: Op::Eq,
                    version,
                });
                r
            }
            _ => Relation::parse(trimmed).map_err(|e| invalid(e.to_string()))?,
        };
        if !relation.arches.is_empty() || !relation.profiles.is_empty() {
            return Err(invalid(
                "architecture and profile restrictions are not allowed here".to_owned(),
            ));
        }
        if self.is_excluded(&relation.name) {
            return Err(invalid(format!("{} is excluded", relation.name)));
        }
        let mut real = index.preferred(&relation.name).into_iter().peekable();
        if real.peek().is_some() {
            let mut available = Vec::new();
            for p in real {
                if index.satisfies(p, &relation) && p.name() == relation.name {
                    return Ok(p.id());
                }
                available.push(p.version().to_string());
            }
            return Err(Error::UnsatisfiableRequest {
                request: relation.to_string(),
                reason: only_available(&relation.name, &available),
            });
        }
        let providers = self.providers_for(&relation);
        let mut names: Vec<&str> = providers.iter().map(|id| index[*id].name()).collect();
        names.dedup();
        match names.len() {
            1 => Ok(providers[0]),
            0 if index.providers(&relation.name).is_empty() => Err(Error::UnknownPackage {
                name: relation.name.clone(),
            }),
            0 => Err(Error::UnsatisfiableRequest {
                request: relation.to_string(),
                reason: format!("no package provides {relation}"),
            }),
            _ => Err(Error::VirtualPackage {
                name: relation.name.clone(),
                providers: names.iter().map(|s| (*s).to_owned()).collect(),
            }),
        }
    }

    /// Unselected, non-excluded providers of `relation` (other than the
    /// real package of that name): for each provider name its highest
    /// version that satisfies, sorted as apt sorts providers.
    fn providers_for(&self, relation: &Relation) -> Vec<PackageId> {
        let index = self.index;
        let mut best: Vec<PackageId> = Vec::new();
        for provider in index.providers(&relation.name) {
            let p = &index[provider.package];
            if p.name() == relation.name
                || self.is_excluded(p.name())
                || self.selected.contains_key(p.name())
                || !index.satisfies(p, relation)
            {
                continue;
            }
            match best.iter_mut().find(|b| index[**b].name() == p.name()) {
                Some(b) => {
                    let key = |q: &Package| (index.priority_of(q), q.version().clone());
                    if key(p) > key(&index[*b]) {
                        *b = p.id();
                    }
                }
                None => best.push(p.id()),
            }
        }
        best.sort_by(|a, b| {
            let (a, b) = (&index[*a], &index[*b]);
            let rank = |p: &Package| p.priority().map_or(u8::MAX, Priority::rank);
            b.essential()
                .cmp(&a.essential())
                .then(b.protected().cmp(&a.protected()))
                .then(rank(a).cmp(&rank(b)))
                .then(a.name().cmp(b.name()))
        });
        best
    }

    /// The selected package satisfying `relation`, ignoring the package
    /// named `except` (a package never conflicts with itself).
    fn satisfier(&self, relation: &Relation, except: Option<&str>) -> Option<PackageId> {
        let index = self.index;
        let ok = |id: PackageId| {
            Some(index[id].name()) != except && index.satisfies(&index[id], relation)
        };
        if let Some(&id) = self.selected.get(relation.name.as_str()) {
            if ok(id) {
                return Some(id);
            }
        }
        self.provided
            .get(relation.name.as_str())
            .and_then(|ids| ids.iter().copied().find(|&id| ok(id)))
    }

    fn group_satisfied(&self, group: &Alternatives) -> bool {
        let mut any = false;
        for r in active(group, self.index.arch()) {
            any = true;
            if self.satisfier(r, None).is_some() {
                return true;
            }
        }
        !any
    }

    /// A `Conflicts`/`Breaks` between `id` and the selection, either way.
    fn conflict_with_selection(&self, id: PackageId) -> Option<Clash<'a>> {
        let index = self.index;
        let p = &index[id];
        for kind in [RelationKind::Conflicts, RelationKind::Breaks] {
            for group in p.relations(kind).iter() {
                for r in active(group, index.arch()) {
                    if let Some(other) = self.satisfier(r, Some(p.name())) {
                        return Some((id, kind, r, other));
                    }
                }
            }
        }
        let names =
            std::iter::once(p.name()).chain(p.provides().iter().map(|g| g.first().name.as_str()));
        for name in names {
            for &(declarer, kind, r) in self.negatives.get(name).into_iter().flatten() {
                if index[declarer].name() != p.name() && index.satisfies(p, r) {
                    return Some((declarer, kind, r, id));
                }
            }
        }
        None
    }

    fn select(&mut self, id: PackageId, reason: Reason) {
        let index = self.index;
        let p = &index[id];
        self.selected.insert(p.name(), id);
        self.journal.push(id);
        self.reasons.insert(id, reason);
        for group in p.provides().iter() {
            self.provided
                .entry(group.first().name.as_str())
                .or_default()
                .push(id);
        }
        for kind in [RelationKind::Conflicts, RelationKind::Breaks] {
            for group in p.relations(kind).iter() {
                for r in active(group, index.arch()) {
                    self.negatives
                        .entry(r.name.as_str())
                        .or_default()
                        .push((id, kind, r));
                }
            }
        }
    }

    /// Undoes selections back to journal length `len`.
    fn rollback(&mut self, len: usize) {
        let index = self.index;
        while self.journal.len() > len {
            let id = self.journal.pop().expect("journal longer than len");
            let p = &index[id];
            self.selected.remove(p.name());
            self.reasons.remove(&id);
            for group in p.provides().iter().rev() {
                if let Some(ids) = self.provided.get_mut(group.first().name.as_str()) {
                    ids.pop();
                }
            }
            for kind in [RelationKind::Conflicts, RelationKind::Breaks] {
                for group in p.relations(kind).iter() {
                    for r in active(group, index.arch()) {
                        if let Some(list) = self.negatives.get_mut(r.name.as_str()) {
                            list.pop();
                        }
                    }
                }
            }
        }
    }

    /// Names from a root down to `id` (which must be selected).
    fn chain(&self, id: PackageId) -> Vec<String> {
        let mut chain = vec![self.index[id].name().to_owned()];
        let mut current = id;
        while let Some(Reason::Dependency { by, .. }) = self.reasons.get(&current) {
            match self.selected.get(by.as_str()) {
                Some(&next) if chain.len() <= self.journal.len() => {
                    chain.push(by.clone());
                    current = next;
                }
                _ => break,
            }
        }
        chain.reverse();
        chain
    }

    /// The groups to satisfy for a selected package, in apt's order.
    fn groups(&self, id: PackageId) -> Vec<(RelationKind, &'a Alternatives)> {
        let p = &self.index[id];
        let mut kinds = vec![RelationKind::PreDepends, RelationKind::Depends];
        if self.recommends {
            kinds.push(RelationKind::Recommends);
        }
        kinds
            .into_iter()
            .flat_map(|kind| p.relations(kind).iter().map(move |g| (kind, g)))
            .collect()
    }

    /// The candidates for an unsatisfied group, in preference order.
    fn candidates(&self, group: &Alternatives) -> Vec<PackageId> {
        let index = self.index;
        let mut out: Vec<PackageId> = Vec::new();
        for r in active(group, index.arch()) {
            if !self.is_excluded(&r.name) && !self.selected.contains_key(r.name.as_str()) {
                if let Some(p) = index
                    .preferred(&r.name)
                    .into_iter()
                    .find(|p| p.name() == r.name && index.satisfies(p, r))
                {
                    out.push(p.id());
                }
            }
            out.extend(self.providers_for(r));
        }
        let mut seen = Vec::with_capacity(out.len());
        out.retain(|id| {
            let new = !seen.contains(id);
            seen.push(*id);
            new
        });
        out
    }

    /// Why no alternative of `group` has a candidate.
    fn explain(&self, group: &Alternatives) -> String {
        let index = self.index;
        let mut notes = Vec::new();
        for r in active(group, index.arch()) {
            let name = r.name.as_str();
            let note = if self.is_excluded(name) {
                format!("{name} is excluded")
            } else if let Some(&id) = self
                .selected
                .get(name)
                .filter(|_| index.lookup(name).any(|p| index.satisfies(p, r)))
            {
                // A version that would do exists, but another is selected.
                format!("{} is selected", index[id])
            } else if index.lookup(name).next().is_some() {
                let all: Vec<&Package> = index.lookup(name).collect();
                if r.arch.as_deref() == Some("any")
                    && all.iter().all(|p| r.matches_version(p.version()))
                {
                    format!("{name} is not Multi-Arch: allowed, so it cannot satisfy {name}:any")
                } else {
                    let versions: Vec<String> =
                        all.iter().map(|p| p.version().to_string()).collect();
                    only_available(name, &versions)
                }
            } else if !index.providers(name).is_empty() {
                let names: Vec<String> = index
                    .providers(name)
                    .iter()
                    .map(|p| index[p.package].name().to_owned())
                    .collect();
                format!(
                    "no provider of {name} fits (provided by {})",
                    and_list(&names)
                )
            } else {
                format!("no package named {name} is available")
            };
            notes.push(note);
        }
        if notes.len() == 1 {
            notes.remove(0)
        } else {
            format!("no alternative can be used ({})", notes.join("; "))
        }
    }

    fn unresolvable(
        &self,
        parent: PackageId,
        kind: RelationKind,
        group: &Alternatives,
        reason: String,
    ) -> Error {
        let p = &self.index[parent];
        Error::Unresolvable(Box::new(Unresolvable {
            package: p.name().to_owned(),
            version: p.version().to_string(),
            kind,
            relation: group.to_string(),
            reason,
            chain: self.chain(parent),
        }))
    }

    fn conflict_error(&self, clash: Clash<'_>, parent: PackageId) -> Error {
        let (declarer, kind, relation, other) = clash;
        let index = self.index;
        // The candidate is not selected yet: its chain goes through parent.
        let chain_of = |id: PackageId| {
            if self.selected.get(index[id].name()) == Some(&id) {
                self.chain(id)
            } else {
                let mut c = self.chain(parent);
                c.push(index[id].name().to_owned());
                c
            }
        };
        Error::Conflict(Box::new(Conflict {
            package: index[declarer].name().to_owned(),
            version: index[declarer].version().to_string(),
            kind,
            relation: relation.to_string(),
            other: index[other].name().to_owned(),
            other_version: index[other].version().to_string(),
            chain: chain_of(declarer),
            other_chain: chain_of(other),
        }))
    }

    /// Expands a selected root depth first.
    fn expand_root(&mut self, root: PackageId) -> Result<()> {
        let mut stack = vec![Frame::Expand {
            package: root,
            groups: self.groups(root),
            next: 0,
        }];
        // The outcome of the frame just popped, for the frame below it.
        let mut outcome: Option<Result<()>> = None;
        while let Some(frame) = stack.last_mut() {
            match frame {
                Frame::Expand {
                    package,
                    groups,
                    next,
                } => {
                    let package = *package;
                    if let Some(Err(e)) = outcome.take() {
                        // A group failed: fatal for Pre-Depends and Depends,
                        // ignored for Recommends.
                        let (kind, _) = groups[*next - 1];
                        if kind != RelationKind::Recommends {
                            stack.pop();
                            outcome = Some(Err(e));
                            continue;
                        }
                    }
                    let Some(&(kind, group)) = groups.get(*next) else {
                        stack.pop();
                        outcome = Some(Ok(()));
                        continue;
                    };
                    *next += 1;
                    if self.group_satisfied(group) {
                        continue;
                    }
                    let candidates = self.candidates(group);
                    stack.push(Frame::Satisfy {
                        parent: package,
                        kind,
                        group,
                        candidates,
                        next: 0,
                        snapshot: self.journal.len(),
                        first_error: None,
                    });
                }
                Frame::Satisfy {
                    parent,
                    kind,
                    group,
                    candidates,
                    next,
                    snapshot,
                    first_error,
                } => {
                    match outcome.take() {
                        Some(Ok(())) => {
                            stack.pop();
                            outcome = Some(Ok(()));
                            continue;
                        }
                        Some(Err(e)) => {
                            let snapshot = *snapshot;
                            first_error.get_or_insert(e);
                            self.rollback(snapshot);
                        }
                        None => {}
                    }
                    let (parent, kind, group) = (*parent, *kind, *group);
                    let Some(&candidate) = candidates.get(*next) else {
                        let error = match first_error.take() {
                            Some(e) => e,
                            None => self.unresolvable(parent, kind, group, self.explain(group)),
                        };
                        stack.pop();
                        outcome = Some(Err(error));
                        continue;
                    };
                    *next += 1;
                    // Selected meanwhile at another version, or conflicting.
                    let index = self.index;
                    if self.selected.contains_key(index[candidate].name()) {
                        continue;
                    }
                    if let Some(clash) = self.conflict_with_selection(candidate) {
                        first_error.get_or_insert_with(|| self.conflict_error(clash, parent));
                        continue;
                    }
                    self.select(
                        candidate,
                        Reason::Dependency {
                            by: index[parent].name().to_owned(),
                            kind,
                            relation: group.to_string(),
                        },
                    );
                    stack.push(Frame::Expand {
                        package: candidate,
                        groups: self.groups(candidate),
                        next: 0,
                    });
                }
            }
        }
        outcome.unwrap_or(Ok(()))
    }

    /// Checks the selection `ids`: dependencies satisfied, no conflicts.
    fn validate(&self, ids: &[PackageId]) -> Result<()> {
        let index = self.index;
        for &id in ids {
            let p = &index[id];
            for kind in [RelationKind::PreDepends, RelationKind::Depends] {
                for group in p.relations(kind).iter() {
                    if !self.group_satisfied(group) {
                        return Err(self.unresolvable(
                            id,
                            kind,
                            group,
                            "no package of the set satisfies it".to_owned(),
                        ));
                    }
                }
            }
            for kind in [RelationKind::Conflicts, RelationKind::Breaks] {
                for group in p.relations(kind).iter() {
                    for r in active(group, index.arch()) {
                        if let Some(other) = self.satisfier(r, Some(p.name())) {
                            return Err(self.conflict_error((id, kind, r, other), id));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// "only foo 1.0 is available" / "only foo 2.0 and 1.0 are available".
fn only_available(name: &str, versions: &[String]) -> String {
    match versions {
        [] => format!("no package named {name} is available"),
        [one] => format!("only {name} {one} is available"),
        _ => format!("only {name} {} are available", and_list(versions)),
    }
}
