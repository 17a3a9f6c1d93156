//! Package sources: which mirror, suites and components to read, in apt's
//! two configuration formats.
//!
//! * **One-line** (`sources.list`, `sources.list.d/*.list`):
//!   `deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] URI SUITE COMPONENT...`;
//!   `#` starts a comment, `deb-src` lines are skipped.
//! * **deb822** (`sources.list.d/*.sources`): paragraphs with `Types`,
//!   `URIs`, `Suites`, `Components`, `Architectures`, `Signed-By` (keyring
//!   paths, fingerprints, or an inline armored key), `Enabled`, `Trusted`;
//!   `#` comment lines; several URIs and suites per paragraph.
//!
//! Each [`Source`] is one URI and one suite (a paragraph with two URIs and
//! three suites gives six). The file locations are always parameters
//! ([`load_apt_sources`], [`default_keyring_files`]), so tests use temporary
//! directories.
//!
//! ```
//! use ami_deb::sources::{parse_deb822, parse_one_line};
//!
//! let sources = parse_deb822(
//!     "Types: deb\nURIs: http://mirror.invalid/debian\n# a comment\nSuites: bookworm bookworm-updates\n\
//!      Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
//!     "debian.sources",
//! )?;
//! assert_eq!(sources.len(), 2);
//! assert_eq!(sources[1].suite, "bookworm-updates");
//! assert_eq!(sources[0].dists_url(), "http://mirror.invalid/debian/dists/bookworm/");
//!
//! let sources = parse_one_line(
//!     "deb [arch=amd64,arm64 trusted=yes] file:/srv/repo stable main contrib # local\n",
//!     "local.list",
//! )?;
//! assert_eq!(sources[0].architectures, ["amd64", "arm64"]);
//! assert_eq!(sources[0].components, ["main", "contrib"]);
//! assert!(sources[0].trusted);
//! # Ok::<(), ami_deb::sources::SourcesError>(())
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use crate::control::Paragraphs;

/// An error reading source definitions.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourcesError {
    /// A file or directory could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A definition is malformed.
    #[error("{origin}:{line}: {reason}")]
    Syntax {
        /// The file name given to the parser.
        origin: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Result type of this module.
pub type Result<T, E = SourcesError> = std::result::Result<T, E>;

/// A source's `Signed-By`: the keys its `Release` must be signed with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SignedBy {
    /// Keyring files.
    pub keyrings: Vec<PathBuf>,
    /// Fingerprints (upper-case hex) of keys to take from the default
    /// keyring.
    pub fingerprints: Vec<String>,
    /// An ASCII-armored public key block written in the source itself.
    pub inline: Option<String>,
}

/// One URI and one suite to read packages from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The repository root (no trailing `/`), e.g. `http://host/debian` or
    /// `file:///srv/repo`.
    pub uri: String,
    /// The suite or codename (`bookworm`, `stable`, `bookworm-security`).
    pub suite: String,
    /// Components (`main`, `contrib`, ...).
    pub components: Vec<String>,
    /// Architectures the source is limited to (empty: any).
    pub architectures: Vec<String>,
    /// Keys to verify with; `None`: the default keyring.
    pub signed_by: Option<SignedBy>,
    /// `trusted=yes`: apt accepts this source unsigned. ami does **not**
    /// follow it on its own (see the repository's insecure option); it is
    /// kept for reporting.
    pub trusted: bool,
    /// Where it was defined (`file:line`, or a label).
    pub origin: String,
}

impl Source {
    /// A source of `uri` (any trailing `/` removed), `suite` and
    /// `components`, with no other option.
    pub fn new<S: Into<String>>(
        uri: &str,
        suite: &str,
        components: impl IntoIterator<Item = S>,
    ) -> Source {
        Source {
            uri: uri.trim_end_matches('/').to_owned(),
            suite: suite.to_owned(),
            components: components.into_iter().map(Into::into).collect(),
            architectures: Vec::new(),
            signed_by: None,
            trusted: false,
            origin: "command line".to_owned(),
        }
    }

    /// The suite's directory: `<uri>/dists/<suite>/`.
    pub fn dists_url(&self) -> String {
        format!("{}/dists/{}/", self.uri, self.suite)
    }

    /// Whether the source is for `arch` (no `Architectures` limit, or
    /// listed).
    pub fn has_arch(&self, arch: &str) -> bool {
        self.architectures.is_empty() || self.architectures.iter().any(|a| a == arch)
    }
}

impl fmt::Display for Source {
    /// Writes `URI SUITE COMPONENT...`, like a one-line source.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.uri, self.suite)?;
        for c in &self.components {
            write!(f, " {c}")?;
        }
        Ok(())
    }
}

fn syntax(origin: &str, line: usize, reason: impl Into<String>) -> SourcesError {
    SourcesError::Syntax {
        origin: origin.to_owned(),
        line,
        reason: reason.into(),
    }
}

fn check_uri(uri: &str, origin: &str, line: usize) -> Result<String> {
    let Some((scheme, _)) = uri.split_once(':') else {
        return Err(syntax(origin, line, format!("{uri:?} is not a URI")));
    };
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return Err(syntax(origin, line, format!("{uri:?} is not a URI")));
    }
    Ok(uri.trim_end_matches('/').to_owned())
}

fn check_suite(suite: &str, components: &[String], origin: &str, line: usize) -> Result<()> {
    if suite.ends_with('/') {
        return Err(syntax(
            origin,
            line,
            format!("flat repository suite {suite:?} is not supported (use a dists/ layout)"),
        ));
    }
    if suite.contains("$(") {
        return Err(syntax(
            origin,
            line,
            format!("variables in suite {suite:?} are not supported"),
        ));
    }
    if components.is_empty() {
        return Err(syntax(
            origin,
            line,
            format!("suite {suite:?} has no component"),
        ));
    }
    Ok(())
}

/// Parses a `Signed-By` value: comma- or space-separated paths (absolute)
/// and fingerprints, or an inline armored key block.
fn parse_signed_by(value: &str, origin: &str, line: usize) -> Result<SignedBy> {
    if value.contains("-----BEGIN PGP PUBLIC KEY BLOCK-----") {
        // deb822 multi-line value: continuation lines start with one space,
        // a lone "." is an empty line.
        let block: String = value
            .lines()
            .map(|l| {
                l.strip_prefix(' ')
                    .or_else(|| l.strip_prefix('\t'))
                    .unwrap_or(l)
            })
            .map(|l| if l == "." { "" } else { l })
            .skip_while(|l| l.trim().is_empty())
            .map(|l| format!("{l}\n"))
            .collect();
        return Ok(SignedBy {
            inline: Some(block),
            ..SignedBy::default()
        });
    }
    let mut signed_by = SignedBy::default();
    for item in value
        .split([',', ' ', '\t', '\n'])
        .filter(|s| !s.is_empty())
    {
        if item.starts_with('/') {
            signed_by.keyrings.push(PathBuf::from(item));
        } else {
            let fp = item.trim_end_matches('!');
            if fp.len() >= 16 && fp.bytes().all(|b| b.is_ascii_hexdigit()) {
                signed_by.fingerprints.push(fp.to_ascii_uppercase());
            } else {
                return Err(syntax(
                    origin,
                    line,
                    format!(
                        "Signed-By entry {item:?} is neither an absolute path nor a fingerprint"
                    ),
                ));
            }
        }
    }
    if signed_by == SignedBy::default() {
        return Err(syntax(origin, line, "empty Signed-By"));
    }
    Ok(signed_by)
}

fn yes_no(value: &str, what: &str, origin: &str, line: usize) -> Result<bool> {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "true" | "1" => Ok(true),
        "no" | "false" | "0" => Ok(false),
        _ => Err(syntax(
            origin,
            line,
            format!("{what} must be yes or no, not {value:?}"),
        )),
    }
}

/// Parses one-line source definitions (`sources.list` syntax). `origin`
/// (usually the file name) prefixes error messages.
pub fn parse_one_line(text: &str, origin: &str) -> Result<Vec<Source>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let (kind, rest) = content
            .split_once(|c: char| c.is_ascii_whitespace())
            .unwrap_or((content, ""));
        let rest = rest.trim_start();
        match kind {
            "deb" => {}
            "deb-src" => continue,
            other => {
                return Err(syntax(
                    origin,
                    line,
                    format!("unknown type {other:?} (expected deb or deb-src)"),
                ))
            }
        }
        let (options, rest) = if let Some(after) = rest.strip_prefix('[') {
            let (opts, after) = after
                .split_once(']')
                .ok_or_else(|| syntax(origin, line, "unterminated [ options ]"))?;
            (opts, after)
        } else {
            ("", rest)
        };
        let mut words = rest.split_ascii_whitespace();
        let uri = words
            .next()
            .ok_or_else(|| syntax(origin, line, "missing URI"))?;
        let suite = words
            .next()
            .ok_or_else(|| syntax(origin, line, "missing suite"))?;
        let components: Vec<String> = words.map(str::to_owned).collect();
        let uri = check_uri(uri, origin, line)?;
        check_suite(suite, &components, origin, line)?;
        let mut source = Source {
            uri,
            suite: suite.to_owned(),
            components,
            architectures: Vec::new(),
            signed_by: None,
            trusted: false,
            origin: format!("{origin}:{line}"),
        };
        for option in options.split_ascii_whitespace() {
            let (key, value) = option.split_once('=').ok_or_else(|| {
                syntax(origin, line, format!("option {option:?} is not key=value"))
            })?;
            match key {
                "arch" => source.architectures = value.split(',').map(str::to_owned).collect(),
                "signed-by" => source.signed_by = Some(parse_signed_by(value, origin, line)?),
                "trusted" => source.trusted = yes_no(value, "trusted", origin, line)?,
                "arch+" | "arch-" => {
                    return Err(syntax(
                        origin,
                        line,
                        format!("option {key}= is not supported (use arch=)"),
                    ))
                }
                // lang=, target=, pdiffs=, by-hash=, check-valid-until=, ...:
                // about apt's own downloads, not about what is in the source.
                _ => {}
            }
        }
        out.push(source);
    }
    Ok(out)
}

/// Parses deb822 source definitions (`*.sources` syntax). `origin`
/// (usually the file name) prefixes error messages.
pub fn parse_deb822(text: &str, origin: &str) -> Result<Vec<Source>> {
    let mut out = Vec::new();
    for paragraph in Paragraphs::with_comments(text) {
        let paragraph = paragraph.map_err(|e| syntax(origin, 0, e.to_string()))?;
        let line = paragraph.line();
        let list = |name: &str| -> Vec<String> {
            paragraph
                .get(name)
                .map(|v| v.split_ascii_whitespace().map(str::to_owned).collect())
                .unwrap_or_default()
        };
        if let Some(enabled) = paragraph.get("Enabled") {
            if !yes_no(enabled, "Enabled", origin, line)? {
                continue;
            }
        }
        let types = list("Types");
        if types.is_empty() {
            return Err(syntax(origin, line, "missing Types"));
        }
        if let Some(bad) = types.iter().find(|t| *t != "deb" && *t != "deb-src") {
            return Err(syntax(
                origin,
                line,
                format!("unknown type {bad:?} (expected deb or deb-src)"),
            ));
        }
        if !types.iter().any(|t| t == "deb") {
            continue;
        }
        let uris = list("URIs");
        let suites = list("Suites");
        if uris.is_empty() {
            return Err(syntax(origin, line, "missing URIs"));
        }
        if suites.is_empty() {
            return Err(syntax(origin, line, "missing Suites"));
        }
        let components = list("Components");
        let architectures = list("Architectures");
        let signed_by = paragraph
            .field("Signed-By")
            .map(|f| parse_signed_by(f.value(), origin, f.line()))
            .transpose()?;
        let trusted = paragraph
            .get("Trusted")
            .map(|v| yes_no(v, "Trusted", origin, line))
            .transpose()?
            .unwrap_or(false);
        for uri in &uris {
            let uri = check_uri(uri, origin, line)?;
            for suite in &suites {
                check_suite(suite, &components, origin, line)?;
                out.push(Source {
                    uri: uri.clone(),
                    suite: suite.clone(),
                    components: components.clone(),
                    architectures: architectures.clone(),
                    signed_by: signed_by.clone(),
                    trusted,
                    origin: format!("{origin}:{line}"),
                });
            }
        }
    }
    Ok(out)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| SourcesError::Io {
        path: path.to_owned(),
        source,
    })
}

/// The files of `dir` whose names end with one of `extensions`, sorted by
/// name; nothing when `dir` does not exist.
fn files_with(dir: &Path, extensions: &[&str]) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(SourcesError::Io {
                path: dir.to_owned(),
                source,
            })
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| SourcesError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // apt ignores hidden files and backups.
        if name.starts_with('.') || !extensions.iter().any(|ext| name.ends_with(ext)) {
            continue;
        }
        files.push(entry.path());
    }
    files.sort();
    Ok(files)
}

/// Reads apt's source configuration: `sources_list` (one-line format; may
/// be absent) and then, in name order, `parts_dir/*.list` (one-line) and
/// `parts_dir/*.sources` (deb822); other files are ignored, as apt does.
/// On a Debian host these are `/etc/apt/sources.list` and
/// `/etc/apt/sources.list.d`.
pub fn load_apt_sources(sources_list: &Path, parts_dir: &Path) -> Result<Vec<Source>> {
    let mut out = Vec::new();
    if sources_list.exists() {
        out.extend(parse_one_line(
            &read(sources_list)?,
            &sources_list.display().to_string(),
        )?);
    }
    for file in files_with(parts_dir, &[".list", ".sources"])? {
        let text = read(&file)?;
        let origin = file.display().to_string();
        if origin.ends_with(".sources") {
            out.extend(parse_deb822(&text, &origin)?);
        } else {
            out.extend(parse_one_line(&text, &origin)?);
        }
    }
    Ok(out)
}

/// [`load_apt_sources`] for an apt configuration directory
/// (`<etc_apt>/sources.list` and `<etc_apt>/sources.list.d`).
pub fn load_etc_apt(etc_apt: &Path) -> Result<Vec<Source>> {
    load_apt_sources(
        &etc_apt.join("sources.list"),
        &etc_apt.join("sources.list.d"),
    )
}

/// apt's default trusted keyrings in an apt configuration directory:
/// `<etc_apt>/trusted.gpg` if it exists, then
/// `<etc_apt>/trusted.gpg.d/*.gpg` and `*.asc` in name order.
pub fn default_keyring_files(etc_apt: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let main = etc_apt.join("trusted.gpg");
    if main.is_file() {
        files.push(main);
    }
    files.extend(files_with(
        &etc_apt.join("trusted.gpg.d"),
        &[".gpg", ".asc"],
    )?);
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_errors_name_the_line() {
        let err = parse_one_line("# ok\ndeb http://x/debian\n", "a.list").unwrap_err();
        assert_eq!(err.to_string(), "a.list:2: missing suite");
        let err = parse_one_line("deb [arch=amd64 http://x/ d main\n", "a.list").unwrap_err();
        assert_eq!(err.to_string(), "a.list:1: unterminated [ options ]");
        let err = parse_one_line("deb http://x/ ./\n", "a.list").unwrap_err();
        assert!(err.to_string().contains("flat repository"), "{err}");
        let err = parse_one_line("rpm http://x/ d main\n", "a.list").unwrap_err();
        assert!(err.to_string().contains("unknown type \"rpm\""), "{err}");
        let err = parse_one_line("deb [signed-by=relative.gpg] http://x/ d main\n", "a.list")
            .unwrap_err();
        assert!(
            err.to_string().contains("neither an absolute path"),
            "{err}"
        );
    }

    #[test]
    fn signed_by_forms() {
        let s = parse_signed_by("/a.gpg, /b.asc", "x", 1).unwrap();
        assert_eq!(
            s.keyrings,
            [PathBuf::from("/a.gpg"), PathBuf::from("/b.asc")]
        );
        let s = parse_signed_by("b7c5d7d6350947f8 /a.gpg", "x", 1).unwrap();
        assert_eq!(s.fingerprints, ["B7C5D7D6350947F8"]);
        let s = parse_signed_by(
            "\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n mDMEZ\n -----END PGP PUBLIC KEY BLOCK-----",
            "x",
            1,
        )
        .unwrap();
        assert_eq!(
            s.inline.as_deref(),
            Some("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZ\n-----END PGP PUBLIC KEY BLOCK-----\n")
        );
    }

    #[test]
    fn deb822_expands_uris_and_suites() {
        let text = "Types: deb deb-src\nURIs: http://a/debian http://b/debian\nSuites: s1 s2\nComponents: main\nArchitectures: arm64\n\n\
                    Types: deb-src\nURIs: http://c/\nSuites: s\nComponents: main\n\n\
                    Enabled: no\nTypes: deb\nURIs: http://d/\nSuites: s\nComponents: main\n";
        let sources = parse_deb822(text, "x.sources").unwrap();
        let pairs: Vec<String> = sources
            .iter()
            .map(|s| format!("{} {}", s.uri, s.suite))
            .collect();
        assert_eq!(
            pairs,
            [
                "http://a/debian s1",
                "http://a/debian s2",
                "http://b/debian s1",
                "http://b/debian s2"
            ]
        );
        assert!(sources
            .iter()
            .all(|s| s.architectures == ["arm64"] && s.origin == "x.sources:1"));
        assert!(!sources[0].has_arch("amd64"));
        let err =
            parse_deb822("Types: deb\nSuites: s\nComponents: main\n", "y.sources").unwrap_err();
        assert_eq!(err.to_string(), "y.sources:1: missing URIs");
    }
}
