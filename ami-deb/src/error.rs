//! The crate's error type.

use std::fmt;

use crate::relation::RelationKind;

/// Everything that can go wrong while parsing Debian metadata or resolving
/// a package set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A version string is not valid (see [`crate::Version`] for which
    /// parser rejects what).
    #[error("invalid version {version:?}: {reason}")]
    InvalidVersion {
        /// The text that was parsed.
        version: String,
        /// dpkg's wording of the problem.
        reason: &'static str,
    },
    /// A deb822 text is malformed.
    #[error("line {line}: {reason}")]
    Syntax {
        /// 1-based line number in the parsed text.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A field cannot be written to a paragraph.
    #[error("cannot write field {name:?}: {reason}")]
    InvalidField {
        /// The field name.
        name: String,
        /// What is wrong with the name or value.
        reason: String,
    },
    /// A relationship field (`Depends`, `Provides`, ...) is malformed.
    #[error("invalid {field} entry {text:?}: {reason}")]
    Relation {
        /// The field name (`relation` for a lone relation or request).
        field: String,
        /// The offending comma-separated entry.
        text: String,
        /// What is wrong.
        reason: String,
    },
    /// A required field is missing from a package record.
    #[error("missing {field} field")]
    MissingField {
        /// The field name.
        field: &'static str,
    },
    /// A field of a package record has a value that cannot be used.
    #[error("invalid {field} field {value:?}: {reason}")]
    InvalidValue {
        /// The field name.
        field: &'static str,
        /// The value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// A package record of an index could not be read.
    #[error("{origin}:{line}: {}{cause}", package_prefix(package))]
    Index {
        /// The label of the index the record came from.
        origin: String,
        /// 1-based line number of the record in that index.
        line: usize,
        /// The record's package name, when it has one.
        package: Option<String>,
        /// The underlying problem.
        #[source]
        cause: Box<Error>,
    },
    /// A requested package name is not in the index at all.
    #[error("no package named {name:?} is available")]
    UnknownPackage {
        /// The requested name.
        name: String,
    },
    /// A requested name is only provided by several packages, none of which
    /// is preferred.
    #[error("{name} is a virtual package provided by {}: request one of them", providers.join(", "))]
    VirtualPackage {
        /// The requested virtual name.
        name: String,
        /// The names of the packages providing it.
        providers: Vec<String>,
    },
    /// A request entry cannot be parsed or is contradictory by itself.
    #[error("invalid package request {spec:?}: {reason}")]
    InvalidRequest {
        /// The request entry as given.
        spec: String,
        /// What is wrong.
        reason: String,
    },
    /// A request cannot be met by any available version.
    #[error("cannot install {request}: {reason}")]
    UnsatisfiableRequest {
        /// The request entry.
        request: String,
        /// Why (for example `only foo 1.0 is available`).
        reason: String,
    },
    /// Two requested packages (or two requests for the same package) cannot
    /// both be installed.
    #[error("conflicting requests: {first} and {second}: {reason}")]
    ConflictingRequests {
        /// The first request (with its version).
        first: String,
        /// The second request (with its version).
        second: String,
        /// Why they cannot be installed together.
        reason: String,
    },
    /// A dependency of a selected package cannot be satisfied.
    #[error("{0}")]
    Unresolvable(Box<Unresolvable>),
    /// Two packages that are both needed conflict with (or break) each
    /// other.
    #[error("{0}")]
    Conflict(Box<Conflict>),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn package_prefix(package: &Option<String>) -> String {
    match package {
        Some(p) => format!("package {p}: "),
        None => String::new(),
    }
}

struct Chain<'a>(&'a [String]);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, name) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" -> ")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}

/// Details of [`Error::Unresolvable`].
///
/// Displays as `sudo depends on libc6 (>= 2.38), but only libc6 2.36-9 is
/// available (required by: openssh-server -> sudo)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolvable {
    /// The package whose dependency fails.
    pub package: String,
    /// Its version.
    pub version: String,
    /// The field the dependency is in.
    pub kind: RelationKind,
    /// The dependency (the whole `|` group).
    pub relation: String,
    /// Why no alternative can be used, e.g. `only libc6 2.36-9 is
    /// available`.
    pub reason: String,
    /// How the package was pulled in: names from a root of the request
    /// down to the package itself.
    pub chain: Vec<String>,
}

impl fmt::Display for Unresolvable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}, but {}{}",
            self.package,
            self.kind.verb(),
            self.relation,
            self.reason,
            chain_suffix(&self.chain)
        )
    }
}

/// Details of [`Error::Conflict`].
///
/// Displays as `a conflicts with b (<< 2), but b 1.0 is also needed
/// (required by: x -> a) (b required by: y -> b)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The package declaring the conflict.
    pub package: String,
    /// Its version.
    pub version: String,
    /// `Conflicts` or `Breaks`.
    pub kind: RelationKind,
    /// The relation that matches the other package.
    pub relation: String,
    /// The other package.
    pub other: String,
    /// The other package's version.
    pub other_version: String,
    /// How `package` was pulled in (a root down to the package).
    pub chain: Vec<String>,
    /// How `other` was pulled in.
    pub other_chain: Vec<String>,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}, but {} {} is also needed{}",
            self.package,
            self.kind.verb(),
            self.relation,
            self.other,
            self.other_version,
            chain_suffix(&self.chain)
        )?;
        if self.other_chain.len() > 1 {
            write!(
                f,
                " ({} required by: {})",
                self.other,
                Chain(&self.other_chain)
            )?;
        }
        Ok(())
    }
}

fn chain_suffix(chain: &[String]) -> String {
    if chain.len() > 1 {
        format!(" (required by: {})", Chain(chain))
    } else {
        String::new()
    }
}
