//! The dpkg database (`/var/lib/dpkg`), written into a [`Tree`] the way
//! dpkg 1.21 leaves it after installing the packages.
//!
//! [`write_database`] creates, under `var/lib/dpkg` (existing directories
//! are kept, the files listed here are replaced):
//!
//! | path | contents |
//! |---|---|
//! | `status` | one stanza per package, sorted by name then architecture ([`status_stanza`]) |
//! | `available` | empty (dpkg no longer needs it; apt never writes it) |
//! | `arch` | the native architecture, then the foreign ones, one per line |
//! | `diversions` | `from`, `to`, `package` (or `:`) lines per [`Diversion`] |
//! | `statoverride` | `user group mode path` per [`StatOverride`] |
//! | `lock`, `lock-frontend` | empty, mode 0640 |
//! | `info/format` | `1` |
//! | `info/<pkg>.list` | the package's file list ([`UnpackedPackage::list_file`]) |
//! | `info/<pkg>.<member>` | every control member but `control` (scripts, `md5sums`, `conffiles`, `triggers`, `shlibs`, `symbols`, `templates`, ...), with its mode and time from the control archive |
//! | `info/<pkg>.md5sums` | generated from the unpacked contents when the package has none, as dpkg does |
//! | `triggers/File` | the file-trigger interests of every package's `triggers` member: `PATH PACKAGE[/noawait]` lines, in package order |
//! | `triggers/NAME` | for each named trigger a package is interested in: `PACKAGE[/noawait]` lines |
//! | `triggers/Unincorp` | empty |
//! | `triggers/Lock` | empty, mode 0600 |
//! | `alternatives/`, `updates/` | empty directories |
//!
//! `<pkg>` is `name` or, for `Multi-Arch: same` packages, `name:arch`.
//! Everything belongs to root; directories are 0755, files 0644 unless
//! stated. Files dpkg writes at installation time get
//! [`DbOptions::mtime`].
//!
//! Run this before the configuration step adds alternatives, trigger
//! interests and the like: it replaces the files above.
//!
//! # Status stanzas
//!
//! Known fields come in dpkg's order (`lib/dpkg/parse.c` `fieldinfos`),
//! with dpkg's spelling of the name; other fields follow in the order of
//! the package's `control` file. As dpkg does, `Essential` and `Protected`
//! are written only when `yes`, `Multi-Arch` only when not `no`,
//! `Priority` and `Multi-Arch` are lower-cased, the version loses a `0:`
//! epoch, relationship fields are re-written in canonical form
//! (`a (>= 1) | b, c:any`), and `Conffiles` lists each conffile with its
//! MD5 (or `newconffile` for a package that is only unpacked, whose
//! conffiles dpkg has not yet hashed), plus ` obsolete` and
//! ` remove-on-upgrade` flags. `Filename`, `Size`, `MD5sum` and
//! `MSDOS-Filename` (index fields) and `Status`/`Config-Version` from the
//! control file are dropped. `Config-Version` is not written: it only
//! appears while upgrading.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use ami_core::{FileData, Metadata, Node, NodeId, NodeKind, Timestamp, Tree, TreeError};

use crate::relation::Relations;
use crate::unpack::{md5_of, UnpackedPackage};
use crate::version::Version;

/// Where the database lives in the tree.
pub const ADMIN_DIR: &str = "var/lib/dpkg";

/// The selection state (first word of `Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Want {
    /// `unknown`.
    Unknown,
    /// `install`.
    Install,
    /// `hold`.
    Hold,
    /// `deinstall`.
    Deinstall,
    /// `purge`.
    Purge,
}

/// The error flag (second word of `Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorFlag {
    /// `ok`.
    Ok,
    /// `reinstreq`: the package must be reinstalled.
    ReinstReq,
}

/// The package state (third word of `Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// `not-installed`.
    NotInstalled,
    /// `config-files`.
    ConfigFiles,
    /// `half-installed`.
    HalfInstalled,
    /// `unpacked`.
    Unpacked,
    /// `half-configured`.
    HalfConfigured,
    /// `triggers-awaited`.
    TriggersAwaited,
    /// `triggers-pending`.
    TriggersPending,
    /// `installed`.
    Installed,
}

const WANTS: [(Want, &str); 5] = [
    (Want::Unknown, "unknown"),
    (Want::Install, "install"),
    (Want::Hold, "hold"),
    (Want::Deinstall, "deinstall"),
    (Want::Purge, "purge"),
];
const FLAGS: [(ErrorFlag, &str); 2] = [(ErrorFlag::Ok, "ok"), (ErrorFlag::ReinstReq, "reinstreq")];
const STATES: [(State, &str); 8] = [
    (State::NotInstalled, "not-installed"),
    (State::ConfigFiles, "config-files"),
    (State::HalfInstalled, "half-installed"),
    (State::Unpacked, "unpacked"),
    (State::HalfConfigured, "half-configured"),
    (State::TriggersAwaited, "triggers-awaited"),
    (State::TriggersPending, "triggers-pending"),
    (State::Installed, "installed"),
];

fn word<T: Copy + PartialEq>(table: &[(T, &'static str)], v: T) -> &'static str {
    table.iter().find(|(t, _)| *t == v).map_or("", |(_, s)| s)
}

/// The `Status` field: `want flag state`, e.g. `install ok installed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status {
    /// What the administrator asked for.
    pub want: Want,
    /// Whether the package needs reinstalling.
    pub flag: ErrorFlag,
    /// How far installation got.
    pub state: State,
}

impl Status {
    /// `install ok installed`.
    pub const INSTALLED: Status = Status {
        want: Want::Install,
        flag: ErrorFlag::Ok,
        state: State::Installed,
    };

    /// `install ok unpacked`: unpacked, maintainer scripts not run.
    pub const UNPACKED: Status = Status {
        want: Want::Install,
        flag: ErrorFlag::Ok,
        state: State::Unpacked,
    };
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}",
            word(&WANTS, self.want),
            word(&FLAGS, self.flag),
            word(&STATES, self.state)
        )
    }
}

impl FromStr for Status {
    type Err = DbError;

    /// Parses `want flag state` (single spaces, lower case).
    fn from_str(s: &str) -> Result<Status, DbError> {
        let bad = || DbError::BadStatus { status: s.into() };
        let mut it = s.split(' ');
        let mut next = || it.next().ok_or_else(bad);
        let find = |w: &str| WANTS.iter().find(|(_, n)| *n == w).map(|x| x.0);
        let want = find(next()?).ok_or_else(bad)?;
        let f = next()?;
        let flag = FLAGS
            .iter()
            .find(|(_, n)| *n == f)
            .map(|x| x.0)
            .ok_or_else(bad)?;
        let st = next()?;
        let state = STATES
            .iter()
            .find(|(_, n)| *n == st)
            .map(|x| x.0)
            .ok_or_else(bad)?;
        if it.next().is_some() {
            return Err(bad());
        }
        Ok(Status { want, flag, state })
    }
}

/// One package of the database: an unpacked package and its state.
#[derive(Debug, Clone)]
pub struct DbPackage<'a> {
    /// The package.
    pub package: &'a UnpackedPackage,
    /// Its `Status`.
    pub status: Status,
    /// Trigger names for `Triggers-Pending` (only in the
    /// `triggers-pending` state, where at least one is required).
    pub triggers_pending: Vec<String>,
    /// Packages whose trigger processing this one awaits, for
    /// `Triggers-Awaited` (only in the `triggers-awaited` state, where at
    /// least one is required, and `half-installed`, `unpacked`,
    /// `half-configured`).
    pub triggers_awaited: Vec<String>,
}

impl<'a> DbPackage<'a> {
    /// `package` with `status` and no triggers.
    pub fn new(package: &'a UnpackedPackage, status: Status) -> Self {
        DbPackage {
            package,
            status,
            triggers_pending: Vec::new(),
            triggers_awaited: Vec::new(),
        }
    }
}

/// A dpkg diversion (`dpkg-divert`): `from` is moved to `to` for every
/// package but `package`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diversion {
    /// The diverted path (`/bin/sh`).
    pub from: String,
    /// Where the diverted file goes (`/bin/sh.distrib`).
    pub to: String,
    /// The package allowed to install `from`; `None` for a local diversion
    /// (written `:`).
    pub package: Option<String>,
}

/// A dpkg stat override (`dpkg-statoverride`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatOverride {
    /// User name (or `#uid`).
    pub user: String,
    /// Group name (or `#gid`).
    pub group: String,
    /// Permission bits.
    pub mode: u16,
    /// The path.
    pub path: String,
}

/// What [`write_database`] needs besides the packages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbOptions {
    /// The native architecture (`amd64`).
    pub native_arch: String,
    /// Foreign architectures added with `dpkg --add-architecture`.
    pub foreign_archs: Vec<String>,
    /// Diversions.
    pub diversions: Vec<Diversion>,
    /// Stat overrides.
    pub statoverrides: Vec<StatOverride>,
    /// Time of the files dpkg writes when installing (`status`, lists,
    /// ...) and of new directories.
    pub mtime: Timestamp,
}

impl DbOptions {
    /// Options for `native_arch`, without foreign architectures,
    /// diversions or stat overrides.
    pub fn new(native_arch: impl Into<String>, mtime: Timestamp) -> Self {
        DbOptions {
            native_arch: native_arch.into(),
            foreign_archs: Vec::new(),
            diversions: Vec::new(),
            statoverrides: Vec::new(),
            mtime,
        }
    }
}

/// Errors of the database writer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// A `Status` string that is not `want flag state`.
    #[error("invalid status {status:?}")]
    BadStatus {
        /// The text.
        status: String,
    },
    /// A state that requires trigger fields without them, or the reverse.
    #[error("package {package}: status {status}: {reason}")]
    Triggers {
        /// The package.
        package: String,
        /// Its status.
        status: Status,
        /// What is inconsistent.
        reason: &'static str,
    },
    /// A relationship field that cannot be parsed.
    #[error("package {package}: {source}")]
    Relation {
        /// The package.
        package: String,
        /// The parse error.
        #[source]
        source: crate::Error,
    },
    /// A field value dpkg does not accept in a binary package.
    #[error("package {package}: {field}: {reason}")]
    Field {
        /// The package.
        package: String,
        /// The field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// Two packages with the same name and architecture.
    #[error("package {package}:{architecture} is given twice")]
    Duplicate {
        /// The package.
        package: String,
        /// Its architecture.
        architecture: String,
    },
    /// A diversion or stat override that cannot be written.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// `diversion`, `stat override` or `architecture`.
        what: &'static str,
        /// The offending value.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// Hashing a file for a generated `md5sums` failed.
    #[error("package {package}: hashing {path:?}: {source}")]
    Hash {
        /// The package.
        package: String,
        /// The file, as listed.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The tree refused an edit (a database path exists and is not a
    /// directory, ...).
    #[error("{path}: {source}")]
    Tree {
        /// The path in the tree.
        path: String,
        /// The tree's error.
        #[source]
        source: TreeError,
    },
}

/// dpkg's non-ambiguous version spelling: the epoch only when it is not
/// zero (or the rest contains a colon), no empty revision.
pub fn version_string(v: &Version) -> String {
    let (up, rev) = (v.upstream(), v.revision());
    let mut s = String::new();
    if v.epoch() != 0 || up.contains(':') || rev.contains(':') {
        s.push_str(&v.epoch().to_string());
        s.push(':');
    }
    s.push_str(up);
    if !rev.is_empty() {
        s.push('-');
        s.push_str(rev);
    }
    s
}

/// Re-writes a binary package relationship field the way dpkg stores it:
/// `name[:arch] [(op version)]`, alternatives joined by ` | `, groups by
/// `, `.
///
/// # Errors
/// The field does not parse, or has architecture restrictions or build
/// profiles (not allowed in binary packages).
fn format_relations(package: &str, field: &str, value: &str) -> Result<String, DbError> {
    let rels = Relations::parse(field, value).map_err(|source| DbError::Relation {
        package: package.into(),
        source,
    })?;
    let mut out = String::new();
    for (i, group) in rels.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        for (j, r) in group.iter().enumerate() {
            if j > 0 {
                out.push_str(" | ");
            }
            if !r.arches.is_empty() || !r.profiles.is_empty() {
                return Err(DbError::Field {
                    package: package.into(),
                    field: field.into(),
                    reason: format!("{r}: restrictions are not allowed in binary packages"),
                });
            }
            out.push_str(&r.name);
            if let Some(a) = &r.arch {
                out.push(':');
                out.push_str(a);
            }
            if let Some(c) = &r.constraint {
                out.push_str(&format!(" ({} {})", c.op, version_string(&c.version)));
            }
        }
    }
    Ok(out)
}

/// Fields dpkg knows, in the order it writes them.
const FIELD_ORDER: [&str; 30] = [
    "Package",
    "Essential",
    "Protected",
    "Status",
    "Priority",
    "Section",
    "Installed-Size",
    "Origin",
    "Maintainer",
    "Bugs",
    "Architecture",
    "Multi-Arch",
    "Source",
    "Version",
    "Config-Version",
    "Replaces",
    "Provides",
    "Depends",
    "Pre-Depends",
    "Recommends",
    "Suggests",
    "Breaks",
    "Conflicts",
    "Enhances",
    "Conffiles",
    "Filename",
    "Size",
    "MD5sum",
    "MSDOS-Filename",
    "Description",
];

/// Known fields after `Description`, and obsolete ones dpkg reads but
/// never writes.
const OTHER_KNOWN: [&str; 8] = [
    "Triggers-Pending",
    "Triggers-Awaited",
    "Recommended",
    "Optional",
    "Class",
    "Revision",
    "Package-Revision",
    "Package_Revision",
];

fn put(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str(": ");
    out.push_str(value);
    out.push('\n');
}

fn is_relation(field: &str) -> bool {
    matches!(
        field,
        "Replaces"
            | "Provides"
            | "Depends"
            | "Pre-Depends"
            | "Recommends"
            | "Suggests"
            | "Breaks"
            | "Conflicts"
            | "Enhances"
    )
}

/// The `status` stanza of one package, without the blank line that ends
/// it.
///
/// # Errors
/// Inconsistent trigger fields for the state, or a relationship field
/// that does not parse.
pub fn status_stanza(p: &DbPackage<'_>) -> Result<String, DbError> {
    let pkg = p.package;
    let name = pkg.name();
    let state = p.status.state;
    let trig_err = |reason| DbError::Triggers {
        package: name.into(),
        status: p.status,
        reason,
    };
    match state {
        State::TriggersPending if p.triggers_pending.is_empty() => {
            return Err(trig_err("Triggers-Pending is required"))
        }
        State::TriggersAwaited if p.triggers_awaited.is_empty() => {
            return Err(trig_err("Triggers-Awaited is required"))
        }
        State::TriggersPending => {}
        _ if !p.triggers_pending.is_empty() => {
            return Err(trig_err(
                "Triggers-Pending is only allowed in triggers-pending",
            ))
        }
        _ => {}
    }
    if !p.triggers_awaited.is_empty()
        && !matches!(
            state,
            State::HalfInstalled | State::Unpacked | State::HalfConfigured | State::TriggersAwaited
        )
    {
        return Err(trig_err("Triggers-Awaited is not allowed in this state"));
    }

    let control = pkg.control();
    let mut out = String::new();
    let get = |field: &str| control.get(field).filter(|v| !v.is_empty());
    for field in FIELD_ORDER {
        match field {
            "Package" => put(&mut out, field, name),
            "Essential" | "Protected" => {
                if get(field).is_some_and(|v| v.eq_ignore_ascii_case("yes")) {
                    put(&mut out, field, "yes");
                }
            }
            "Status" => put(&mut out, field, &p.status.to_string()),
            "Priority" => {
                if let Some(v) = get(field) {
                    let known = ["required", "important", "standard", "optional", "extra"]
                        .into_iter()
                        .find(|k| k.eq_ignore_ascii_case(v));
                    put(&mut out, field, known.unwrap_or(v));
                }
            }
            "Multi-Arch" => {
                let v = pkg.multi_arch().as_str();
                if v != "no" {
                    put(&mut out, field, v);
                }
            }
            "Version" => put(&mut out, field, &version_string(pkg.version())),
            "Config-Version" | "Filename" | "Size" | "MD5sum" | "MSDOS-Filename" => {}
            "Conffiles" => {
                if pkg.conffiles().is_empty() {
                    continue;
                }
                let mut v = String::new();
                for c in pkg.conffiles() {
                    let hash = if matches!(state, State::Unpacked | State::HalfInstalled) {
                        "newconffile"
                    } else {
                        c.md5.as_str()
                    };
                    v.push_str("\n ");
                    v.push_str(&c.path);
                    v.push(' ');
                    v.push_str(hash);
                    if c.obsolete {
                        v.push_str(" obsolete");
                    }
                    if c.remove_on_upgrade {
                        v.push_str(" remove-on-upgrade");
                    }
                }
                out.push_str("Conffiles:");
                out.push_str(&v);
                out.push('\n');
            }
            f if is_relation(f) => {
                if let Some(v) = get(f) {
                    let formatted = format_relations(name, f, v)?;
                    if !formatted.is_empty() {
                        put(&mut out, f, &formatted);
                    }
                }
            }
            f => {
                if let Some(v) = get(f) {
                    put(&mut out, f, v);
                }
            }
        }
    }
    if !p.triggers_pending.is_empty() {
        out.push_str("Triggers-Pending:");
        for t in &p.triggers_pending {
            out.push(' ');
            out.push_str(t);
        }
        out.push('\n');
    }
    if !p.triggers_awaited.is_empty() {
        out.push_str("Triggers-Awaited:");
        for t in &p.triggers_awaited {
            out.push(' ');
            out.push_str(t);
        }
        out.push('\n');
    }
    for (field, value) in control.fields() {
        let known = FIELD_ORDER
            .iter()
            .chain(&OTHER_KNOWN)
            .any(|k| k.eq_ignore_ascii_case(field));
        if !known {
            out.push_str(field);
            out.push_str(": ");
            out.push_str(value);
            out.push('\n');
        }
    }
    Ok(out)
}

/// The whole `status` file: stanzas sorted by package name, then
/// architecture, each followed by a blank line.
///
/// # Errors
/// As [`status_stanza`], and [`DbError::Duplicate`].
pub fn status_file(packages: &[DbPackage<'_>]) -> Result<String, DbError> {
    let mut sorted: BTreeMap<(&str, &str), &DbPackage<'_>> = BTreeMap::new();
    for p in packages {
        let key = (p.package.name(), p.package.architecture());
        if sorted.insert(key, p).is_some() {
            return Err(DbError::Duplicate {
                package: key.0.into(),
                architecture: key.1.into(),
            });
        }
    }
    let mut out = String::new();
    for p in sorted.values() {
        out.push_str(&status_stanza(p)?);
        out.push('\n');
    }
    Ok(out)
}

fn check_line(what: &'static str, value: &str, path: bool) -> Result<(), DbError> {
    let bad = |reason| DbError::Invalid {
        what,
        value: value.into(),
        reason,
    };
    if value.is_empty() {
        return Err(bad("empty"));
    }
    if value.contains('\n') {
        return Err(bad("contains a newline"));
    }
    if path && !value.starts_with('/') {
        return Err(bad("not an absolute path"));
    }
    if !path && value.contains(char::is_whitespace) {
        return Err(bad("contains whitespace"));
    }
    Ok(())
}

/// The `diversions` file.
///
/// # Errors
/// Paths that are not absolute or contain newlines.
pub fn diversions_file(diversions: &[Diversion]) -> Result<String, DbError> {
    let mut sorted: Vec<&Diversion> = diversions.iter().collect();
    sorted.sort_by(|a, b| a.from.cmp(&b.from));
    let mut out = String::new();
    for d in sorted {
        check_line("diversion", &d.from, true)?;
        check_line("diversion", &d.to, true)?;
        let package = d.package.as_deref().unwrap_or(":");
        check_line("diversion", package, false)?;
        out.push_str(&format!("{}\n{}\n{package}\n", d.from, d.to));
    }
    Ok(out)
}

/// The `statoverride` file, sorted by path.
///
/// # Errors
/// Empty names, names with whitespace, or paths that are not absolute.
pub fn statoverride_file(overrides: &[StatOverride]) -> Result<String, DbError> {
    let mut sorted: Vec<&StatOverride> = overrides.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut out = String::new();
    for o in sorted {
        check_line("stat override", &o.user, false)?;
        check_line("stat override", &o.group, false)?;
        check_line("stat override", &o.path, true)?;
        out.push_str(&format!(
            "{} {} {:o} {}\n",
            o.user,
            o.group,
            o.mode & 0o7777,
            o.path
        ));
    }
    Ok(out)
}

/// The `md5sums` dpkg generates for a package that has none: the MD5 of
/// every regular file of its list, in list order.
fn generated_md5sums(tree: &Tree, pkg: &UnpackedPackage) -> Result<Vec<u8>, DbError> {
    let mut out = Vec::new();
    for f in pkg.files() {
        let Some(id) = tree.lookup(&f.canonical) else {
            continue;
        };
        let NodeKind::File(data) = &tree.node(id).kind else {
            continue;
        };
        let md5 = md5_of(data).map_err(|source| DbError::Hash {
            package: pkg.name().into(),
            path: String::from_utf8_lossy(&f.shipped).into_owned(),
            source,
        })?;
        out.extend_from_slice(md5.as_bytes());
        out.extend_from_slice(b"  ");
        out.extend_from_slice(&f.shipped[1..]);
        out.push(b'\n');
    }
    Ok(out)
}

struct Writer<'t> {
    tree: &'t mut Tree,
    mtime: Timestamp,
}

impl Writer<'_> {
    fn tree_err(path: &str, source: TreeError) -> DbError {
        DbError::Tree {
            path: path.into(),
            source,
        }
    }

    fn dir(&mut self, path: &str) -> Result<NodeId, DbError> {
        self.tree
            .create_dir_all(path.as_bytes(), Metadata::new(0o755).times(self.mtime))
            .map_err(|e| Self::tree_err(path, e))
    }

    fn file(
        &mut self,
        dir: NodeId,
        dir_path: &str,
        name: &str,
        data: FileData,
        mode: u16,
        mtime: Timestamp,
    ) -> Result<(), DbError> {
        let path = format!("{dir_path}/{name}");
        let existing = match &self.tree.node(dir).kind {
            NodeKind::Dir(d) => d.get(name.as_bytes()),
            _ => None,
        };
        if let Some(id) = existing {
            if matches!(self.tree.node(id).kind, NodeKind::Dir(_)) {
                return Err(Self::tree_err(
                    &path,
                    TreeError::Exists { name: name.into() },
                ));
            }
            self.tree
                .remove(dir, name.as_bytes())
                .map_err(|e| Self::tree_err(&path, e))?;
        }
        let node = Node::file(data, Metadata::new(mode).times(mtime));
        self.tree
            .add(dir, name.as_bytes(), node)
            .map_err(|e| Self::tree_err(&path, e))?;
        Ok(())
    }

    fn text(
        &mut self,
        dir: NodeId,
        dir_path: &str,
        name: &str,
        text: &str,
        mode: u16,
    ) -> Result<(), DbError> {
        let data = FileData::from_bytes(text.as_bytes().to_vec());
        self.file(dir, dir_path, name, data, mode, self.mtime)
    }
}

/// The trigger interests dpkg records when it installs `packages`, from
/// each package's `triggers` control member (deb-triggers(5)): the text of
/// `triggers/File` (`PATH PACKAGE` for `interest`/`interest-await`,
/// `PATH PACKAGE/noawait` for `interest-noawait`, file triggers being
/// those whose name starts with `/`) and, per named trigger, the text of
/// `triggers/NAME`. Names that are not safe file names are skipped.
fn trigger_interests(packages: &[DbPackage<'_>]) -> (String, BTreeMap<String, String>) {
    let mut file = String::new();
    let mut named: BTreeMap<String, String> = BTreeMap::new();
    for p in packages {
        let Some(member) = p.package.control_archive().get("triggers") else {
            continue;
        };
        let text = String::from_utf8_lossy(&member.data);
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            let mut words = line.split_whitespace();
            let (Some(directive), Some(name), None) = (words.next(), words.next(), words.next())
            else {
                continue;
            };
            let suffix = match directive {
                "interest" | "interest-await" => "",
                "interest-noawait" => "/noawait",
                _ => continue,
            };
            let pkg = p.package.info_name();
            if name.starts_with('/') {
                file.push_str(&format!("{name} {pkg}{suffix}\n"));
            } else if !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
                && !name.starts_with('.')
            {
                named
                    .entry(name.to_owned())
                    .or_default()
                    .push_str(&format!("{pkg}{suffix}\n"));
            }
        }
    }
    (file, named)
}

/// Writes the dpkg database for `packages` into `tree`; see the [module
/// documentation](self).
///
/// # Errors
/// [`DbError`]: inconsistent package states, duplicate packages, invalid
/// options, or database paths that exist as something else.
pub fn write_database(
    tree: &mut Tree,
    packages: &[DbPackage<'_>],
    opts: &DbOptions,
) -> Result<(), DbError> {
    let status = status_file(packages)?;
    let diversions = diversions_file(&opts.diversions)?;
    let statoverride = statoverride_file(&opts.statoverrides)?;
    let mut arch = String::new();
    for a in std::iter::once(&opts.native_arch).chain(&opts.foreign_archs) {
        check_line("architecture", a, false)?;
        arch.push_str(a);
        arch.push('\n');
    }
    let mut md5sums = Vec::new();
    for p in packages {
        if p.package.control_archive().get("md5sums").is_none() {
            md5sums.push(generated_md5sums(tree, p.package)?);
        } else {
            md5sums.push(Vec::new());
        }
    }

    let mut w = Writer {
        tree,
        mtime: opts.mtime,
    };
    let admin = w.dir(ADMIN_DIR)?;
    w.text(admin, ADMIN_DIR, "status", &status, 0o644)?;
    w.text(admin, ADMIN_DIR, "available", "", 0o644)?;
    w.text(admin, ADMIN_DIR, "arch", &arch, 0o644)?;
    w.text(admin, ADMIN_DIR, "diversions", &diversions, 0o644)?;
    w.text(admin, ADMIN_DIR, "statoverride", &statoverride, 0o644)?;
    w.text(admin, ADMIN_DIR, "lock", "", 0o640)?;
    w.text(admin, ADMIN_DIR, "lock-frontend", "", 0o640)?;
    w.dir(&format!("{ADMIN_DIR}/updates"))?;
    w.dir(&format!("{ADMIN_DIR}/alternatives"))?;
    let triggers_path = format!("{ADMIN_DIR}/triggers");
    let triggers = w.dir(&triggers_path)?;
    let (file_interests, named) = trigger_interests(packages);
    w.text(triggers, &triggers_path, "File", &file_interests, 0o644)?;
    for (name, text) in &named {
        w.text(triggers, &triggers_path, name, text, 0o644)?;
    }
    w.text(triggers, &triggers_path, "Unincorp", "", 0o644)?;
    w.text(triggers, &triggers_path, "Lock", "", 0o600)?;
    let info_path = format!("{ADMIN_DIR}/info");
    let info = w.dir(&info_path)?;
    w.text(info, &info_path, "format", "1\n", 0o644)?;
    for (p, generated) in packages.iter().zip(md5sums) {
        let pkg = p.package;
        let base = pkg.info_name();
        let list = FileData::from_bytes(pkg.list_file());
        w.file(
            info,
            &info_path,
            &format!("{base}.list"),
            list,
            0o644,
            opts.mtime,
        )?;
        for m in pkg.control_archive().info_members() {
            let data = FileData::from_bytes(m.data.clone());
            let mtime = Timestamp::from_secs(m.mtime);
            w.file(
                info,
                &info_path,
                &format!("{base}.{}", m.name),
                data,
                m.mode,
                mtime,
            )?;
        }
        if !generated.is_empty() {
            let data = FileData::from_bytes(generated);
            w.file(
                info,
                &info_path,
                &format!("{base}.md5sums"),
                data,
                0o644,
                opts.mtime,
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_words_round_trip() {
        for s in [
            "install ok installed",
            "install ok unpacked",
            "hold reinstreq half-installed",
            "purge ok not-installed",
        ] {
            assert_eq!(s.parse::<Status>().unwrap().to_string(), s);
        }
        assert_eq!(Status::INSTALLED.to_string(), "install ok installed");
        assert!("install ok".parse::<Status>().is_err());
        assert!("install ok installed extra".parse::<Status>().is_err());
        assert!("install fine installed".parse::<Status>().is_err());
    }

    #[test]
    fn versions_and_relations_as_dpkg_writes_them() {
        let v = |s: &str| version_string(&Version::parse_lenient(s).unwrap());
        assert_eq!(v("0:1.0-1"), "1.0-1");
        assert_eq!(v("1:2.0"), "1:2.0");
        assert_eq!(v("0:1:2-3"), "0:1:2-3");
        let r =
            format_relations("p", "Depends", "a(>=0:1.0) |b ,\n c:any (<< 2)  , d (>1)").unwrap();
        assert_eq!(r, "a (>= 1.0) | b, c:any (<< 2), d (>= 1)");
        assert!(format_relations("p", "Depends", "a [amd64]").is_err());
        assert!(format_relations("p", "Depends", "a (>= )").is_err());
    }

    #[test]
    fn diversions_and_overrides() {
        let d = diversions_file(&[
            Diversion {
                from: "/usr/share/man/man1/sh.1.gz".into(),
                to: "/usr/share/man/man1/sh.distrib.1.gz".into(),
                package: Some("dash".into()),
            },
            Diversion {
                from: "/bin/sh".into(),
                to: "/bin/sh.distrib".into(),
                package: None,
            },
        ])
        .unwrap();
        assert_eq!(
            d,
            "/bin/sh\n/bin/sh.distrib\n:\n/usr/share/man/man1/sh.1.gz\n/usr/share/man/man1/sh.distrib.1.gz\ndash\n"
        );
        let s = statoverride_file(&[StatOverride {
            user: "root".into(),
            group: "crontab".into(),
            mode: 0o2755,
            path: "/usr/bin/crontab".into(),
        }])
        .unwrap();
        assert_eq!(s, "root crontab 2755 /usr/bin/crontab\n");
        assert!(statoverride_file(&[StatOverride {
            user: "ro ot".into(),
            group: "g".into(),
            mode: 0,
            path: "/x".into(),
        }])
        .is_err());
        assert!(diversions_file(&[Diversion {
            from: "relative".into(),
            to: "/x".into(),
            package: None,
        }])
        .is_err());
    }
}
