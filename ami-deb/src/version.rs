//! Debian version numbers, parsed and compared exactly as dpkg does.
//!
//! A version is `[epoch:]upstream[-revision]`. The epoch is everything
//! before the first `:`, the revision everything after the last `-`.
//! Ordering follows dpkg's `verrevcmp`: epochs compare numerically, then
//! the upstream parts, then the revisions, each as alternating runs of
//! non-digits and digits. Non-digit runs compare character by character
//! with `~` before everything (even the end of the string), then the end,
//! then letters, then all other characters; digit runs compare as numbers of
//! any length.
//!
//! ```
//! use ami_deb::Version;
//!
//! let a: Version = "1.0~rc1".parse()?;
//! let b: Version = "1.0".parse()?;
//! assert!(a < b);
//! assert!("1:0.1".parse::<Version>()? > "9.9".parse()?);
//! // dpkg's equality is not string equality:
//! assert_eq!("1.0".parse::<Version>()?, "0:1.00-0".parse()?);
//! assert_eq!("0:1.00-0".parse::<Version>()?.to_string(), "0:1.00-0");
//! # Ok::<(), ami_deb::Error>(())
//! ```
//!
//! # Validity
//!
//! dpkg rejects some versions outright (empty, embedded whitespace, a bad
//! epoch, nothing after the epoch colon, an empty revision after a `-`) and
//! only *warns* about others (an upstream part not starting with a digit,
//! characters outside `[A-Za-z0-9.+~-:]` in the upstream part or outside
//! `[A-Za-z0-9.+~]` in the revision). [`Version::parse`] (and [`FromStr`])
//! rejects both kinds, as Debian policy requires. [`Version::parse_lenient`]
//! rejects only what dpkg rejects and is what the index and relation parsers
//! use, so that any repository dpkg accepts can be read; such versions still
//! compare as dpkg compares them (for bytes above 0x7F, as dpkg on a platform
//! with signed `char`, such as amd64). Deliberate deviation: dpkg parses the
//! epoch with `strtol`, so it also accepts a leading `+`; both parsers here
//! accept only ASCII digits.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Range;
use std::str::FromStr;

use crate::error::{Error, Result};

/// dpkg's largest epoch (`INT_MAX`).
const MAX_EPOCH: u32 = i32::MAX as u32;

/// A parsed Debian version.
///
/// `Display` prints the text exactly as parsed (surrounding whitespace
/// removed), so `0:1.0` stays `0:1.0`. Comparison and equality are dpkg's:
/// `1.0`, `0:1.0`, `1.00` and `1.0-0` are all equal. `Hash` is consistent
/// with that equality. Use [`Version::as_str`] when the exact text matters.
#[derive(Clone)]
pub struct Version {
    text: Box<str>,
    epoch: u32,
    /// Start of the upstream part in `text` (after the epoch colon).
    upstream_start: u32,
    /// End of the upstream part (the last `-`, or the end).
    upstream_end: u32,
}

/// What kind of parse: dpkg's errors only, or errors and warnings.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Strictness {
    Strict,
    Lenient,
}

impl Version {
    /// Parses a version, rejecting everything dpkg rejects *or warns about*
    /// (see the [module documentation](self)). Surrounding ASCII whitespace
    /// is ignored, as dpkg does.
    pub fn parse(text: &str) -> Result<Version> {
        Self::parse_with(text, Strictness::Strict)
    }

    /// Parses a version, rejecting only what dpkg rejects: an empty string,
    /// embedded whitespace, an epoch that is empty, not a number or larger
    /// than 2147483647, nothing after the epoch colon, or an empty revision.
    pub fn parse_lenient(text: &str) -> Result<Version> {
        Self::parse_with(text, Strictness::Lenient)
    }

    fn parse_with(text: &str, strictness: Strictness) -> Result<Version> {
        let parts = analyze(text, strictness).map_err(|reason| Error::InvalidVersion {
            version: text.to_owned(),
            reason,
        })?;
        Ok(Version {
            text: text[parts.text.clone()].into(),
            epoch: parts.epoch,
            upstream_start: (parts.upstream.start - parts.text.start) as u32,
            upstream_end: (parts.upstream.end - parts.text.start) as u32,
        })
    }

    /// Checks what [`Version::parse_lenient`] checks, without allocating.
    pub fn check_lenient(text: &str) -> Result<()> {
        analyze(text, Strictness::Lenient)
            .map(|_| ())
            .map_err(|reason| Error::InvalidVersion {
                version: text.to_owned(),
                reason,
            })
    }

    /// The version exactly as parsed (without surrounding whitespace).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The epoch, 0 when the version has none.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Whether the text spells out an epoch (`0:1.0` does, `1.0` does not).
    pub fn has_explicit_epoch(&self) -> bool {
        self.upstream_start > 0
    }

    /// The upstream part: between the epoch colon and the last hyphen.
    pub fn upstream(&self) -> &str {
        &self.text[self.upstream_start as usize..self.upstream_end as usize]
    }

    /// The Debian revision: after the last hyphen, empty when there is none
    /// (dpkg compares an absent revision like `0`).
    pub fn revision(&self) -> &str {
        self.text
            .get(self.upstream_end as usize + 1..)
            .unwrap_or_default()
    }
}

/// Where the parts of a version are in its text.
struct Parts {
    /// The text without surrounding whitespace.
    text: Range<usize>,
    epoch: u32,
    upstream: Range<usize>,
}

/// Splits and checks a version; the error is dpkg's wording.
fn analyze(text: &str, strictness: Strictness) -> std::result::Result<Parts, &'static str> {
    let start = text.len()
        - text
            .trim_start_matches(|c: char| c.is_ascii_whitespace())
            .len();
    let trimmed = text.trim_matches(|c: char| c.is_ascii_whitespace());
    if trimmed.is_empty() {
        return Err("version string is empty");
    }
    if trimmed.bytes().any(|b| b.is_ascii_whitespace()) {
        return Err("version string has embedded spaces");
    }
    if trimmed.len() > u32::MAX as usize {
        return Err("version string is too long");
    }
    let (epoch, upstream_start) = match trimmed.find(':') {
        Some(colon) => {
            let digits = &trimmed[..colon];
            if !digits.starts_with(|c: char| c.is_ascii_digit()) {
                return Err("epoch in version is empty");
            }
            if !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err("epoch in version is not number");
            }
            let epoch = digits
                .parse::<u64>()
                .ok()
                .filter(|&e| e <= u64::from(MAX_EPOCH))
                .ok_or("epoch in version is too big")?;
            if colon + 1 == trimmed.len() {
                return Err("nothing after colon in version number");
            }
            (epoch as u32, colon + 1)
        }
        None => (0, 0),
    };
    let rest = &trimmed[upstream_start..];
    let upstream_end = match rest.rfind('-') {
        Some(hyphen) => {
            if hyphen + 1 == rest.len() {
                return Err("revision number is empty");
            }
            upstream_start + hyphen
        }
        None => trimmed.len(),
    };
    let upstream = &trimmed[upstream_start..upstream_end];
    if upstream.is_empty() {
        return Err("version number is empty");
    }
    if strictness == Strictness::Strict {
        if !upstream.as_bytes()[0].is_ascii_digit() {
            return Err("version number does not start with digit");
        }
        if !upstream
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-+~:".contains(&b))
        {
            return Err("invalid character in version number");
        }
        let revision = trimmed.get(upstream_end + 1..).unwrap_or("");
        if !revision
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".+~".contains(&b))
        {
            return Err("invalid character in revision number");
        }
    }
    Ok(Parts {
        text: start..start + trimmed.len(),
        epoch,
        upstream: start + upstream_start..start + upstream_end,
    })
}

impl FromStr for Version {
    type Err = Error;

    /// Same as [`Version::parse`].
    fn from_str(s: &str) -> Result<Version> {
        Version::parse(s)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Version({:?})", &*self.text)
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| verrevcmp(self.upstream().as_bytes(), other.upstream().as_bytes()))
            .then_with(|| verrevcmp(self.revision().as_bytes(), other.revision().as_bytes()))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl Hash for Version {
    /// Hashes a canonical form: the epoch, then each part as its runs,
    /// digit runs by value, with trailing runs that compare like the end of
    /// the string (empty non-digit runs followed by zero) left out.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.epoch.hash(state);
        hash_part(self.upstream().as_bytes(), state);
        hash_part(self.revision().as_bytes(), state);
    }
}

/// Hashes one part (upstream or revision) consistently with [`verrevcmp`].
fn hash_part<H: Hasher>(mut s: &[u8], state: &mut H) {
    // Split into (non-digit run, digit run without leading zeros) pairs.
    let mut pairs: Vec<(&[u8], &[u8])> = Vec::new();
    while !s.is_empty() {
        let nd = s.iter().position(u8::is_ascii_digit).unwrap_or(s.len());
        let (text, rest) = s.split_at(nd);
        let d = rest
            .iter()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(rest.len());
        let (digits, rest) = rest.split_at(d);
        let zeros = digits.iter().take_while(|&&b| b == b'0').count();
        pairs.push((text, &digits[zeros..]));
        s = rest;
    }
    // Trailing pairs equal to ("", 0) compare like the end of the string.
    while pairs
        .last()
        .is_some_and(|(t, d)| t.is_empty() && d.is_empty())
    {
        pairs.pop();
    }
    pairs.len().hash(state);
    for (text, digits) in pairs {
        text.hash(state);
        digits.hash(state);
    }
}

/// dpkg's character weight in a non-digit run: `~` first, then the end of
/// the string (and digits, which end the run), then letters, then the rest.
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(b'~') => -1,
        // dpkg reads the byte as a (signed on amd64) `char` and adds 256:
        // bytes above 0x7F land between the letters and ASCII punctuation.
        Some(c) if c >= 0x80 => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

/// dpkg's `verrevcmp` on one part (upstream or revision).
fn verrevcmp(a: &[u8], b: &[u8]) -> Ordering {
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        // The non-digit runs, character by character.
        while a.get(i).is_some_and(|c| !c.is_ascii_digit())
            || b.get(j).is_some_and(|c| !c.is_ascii_digit())
        {
            let (ac, bc) = (order(a.get(i).copied()), order(b.get(j).copied()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        // The digit runs, as numbers of any length.
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while let (Some(x), Some(y)) = (a.get(i), b.get(j)) {
            if !x.is_ascii_digit() || !y.is_ascii_digit() {
                break;
            }
            if first_diff == Ordering::Equal {
                first_diff = x.cmp(y);
            }
            i += 1;
            j += 1;
        }
        if a.get(i).is_some_and(u8::is_ascii_digit) {
            return Ordering::Greater;
        }
        if b.get(j).is_some_and(u8::is_ascii_digit) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::DefaultHasher;

    fn v(s: &str) -> Version {
        Version::parse_lenient(s).unwrap()
    }

    fn hash(v: &Version) -> u64 {
        let mut h = DefaultHasher::new();
        v.hash(&mut h);
        h.finish()
    }

    #[test]
    fn parts() {
        let x = v("2:1.0-a-3~bpo1");
        assert_eq!(x.epoch(), 2);
        assert!(x.has_explicit_epoch());
        assert_eq!(x.upstream(), "1.0-a");
        assert_eq!(x.revision(), "3~bpo1");
        let y = v("1.0");
        assert_eq!((y.epoch(), y.upstream(), y.revision()), (0, "1.0", ""));
        assert!(!y.has_explicit_epoch());
        assert_eq!(v(" 1.0 ").as_str(), "1.0");
    }

    #[test]
    fn hash_agrees_with_eq() {
        let equal = ["1.0", "0:1.0", "1.00", "1.0-0", "01.0", "1.0-00", "1.000-0"];
        for a in equal {
            for b in equal {
                assert_eq!(v(a), v(b), "{a} == {b}");
                assert_eq!(hash(&v(a)), hash(&v(b)), "hash {a} {b}");
            }
        }
        assert_eq!(hash(&v("1a")), hash(&v("1a0")));
        assert_ne!(v("1.0"), v("1.0."));
    }

    #[test]
    fn verrevcmp_runs() {
        assert_eq!(verrevcmp(b"", b""), Ordering::Equal);
        assert_eq!(verrevcmp(b"~", b""), Ordering::Less);
        assert_eq!(verrevcmp(b"a", b""), Ordering::Greater);
        assert_eq!(verrevcmp(b"a", b"+"), Ordering::Less);
        assert_eq!(verrevcmp(b"10", b"9"), Ordering::Greater);
        assert_eq!(
            verrevcmp(
                b"123456789012345678901234567890",
                b"123456789012345678901234567891"
            ),
            Ordering::Less
        );
        assert_eq!(verrevcmp(b"1\xc3", b"1a"), Ordering::Greater);
        assert_eq!(verrevcmp(b"1\xc3", b"1+"), Ordering::Less);
    }
}
