//! `Release` / `InRelease` files, verified before use.
//!
//! A suite's `InRelease` (or `Release` plus the detached `Release.gpg`) is
//! the root of trust of a repository: it lists the size and SHA-256 of
//! every index. Reading it goes through a typestate:
//!
//! 1. [`UnverifiedRelease::parse`] reads the OpenPGP framing only (the
//!    cleartext-signed message, or a plain `Release` to which
//!    [`UnverifiedRelease::with_detached_signature`] attaches `Release.gpg`);
//!    it exposes no field of the file.
//! 2. [`UnverifiedRelease::verify`] checks the signatures against a
//!    [`Keyring`] (see [`crate::keyring`] for the rules; at least one good
//!    signature is required), then parses the fields, then checks `Date`
//!    (not in the future beyond a small skew) and `Valid-Until` (not
//!    passed). Only then does it return a [`VerifiedRelease`], the only type
//!    with the index entries.
//!
//! [`UnverifiedRelease::insecure_skip_signature`] is the explicit way around
//! step 2's signature check, for unsigned test repositories; the dates are
//! still checked, and so are the hashes of everything fetched later.
//!
//! Every error names the file (its URL) and what did not match.
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use ami_deb::keyring::Keyring;
//! use ami_deb::release::UnverifiedRelease;
//!
//! let text = "Suite: stable\nCodename: bookworm\nDate: Sat, 10 Jun 2023 08:55:32 UTC\n\
//! Architectures: amd64\nComponents: main\nSHA256:\n \
//! 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 4 main/binary-amd64/Packages\n";
//! let unverified = UnverifiedRelease::parse(text.as_bytes(), "file:///repo/dists/stable/Release")?;
//! let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
//! // Not signed: refused unless the insecure route is taken explicitly.
//! let error = unverified.clone().verify(&Keyring::new(), now).unwrap_err();
//! assert!(error.to_string().contains("is not signed"));
//! let release = unverified.insecure_skip_signature(now)?;
//! assert!(release.is_insecure());
//! assert_eq!(release.codename(), Some("bookworm"));
//! let entry = release.entry("main/binary-amd64/Packages").unwrap();
//! assert_eq!(entry.size, 4);
//! # Ok::<(), ami_deb::release::ReleaseError>(())
//! ```

use std::collections::BTreeMap;
use std::io::Cursor;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pgp::composed::{CleartextSignedMessage, Deserializable, DetachedSignature};
use pgp::packet::Signature;

use crate::control::Paragraph;
use crate::keyring::{Keyring, Signer};

/// The first line of a cleartext-signed OpenPGP message.
const CLEARTEXT_HEADER: &str = "-----BEGIN PGP SIGNED MESSAGE-----";

/// How far in the future a `Date` may be (clock skew) by default.
pub const DEFAULT_MAX_FUTURE: Duration = Duration::from_secs(10 * 60);

/// An error reading or verifying a `Release` file. Each variant names the
/// file's URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseError {
    /// The OpenPGP framing (armor, signature packets) cannot be parsed.
    #[error("{url}: invalid OpenPGP data: {reason}")]
    Armor {
        /// The file.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The file is not signed and the insecure option was not given.
    #[error(
        "{url} is not signed (no InRelease and no Release.gpg); refusing an unsigned repository \
         (the insecure option exists for test repositories only)"
    )]
    Unsigned {
        /// The file.
        url: String,
    },
    /// No signature is good: each entry says why one signature failed.
    #[error("{url}: no good signature: {}", reasons.join("; "))]
    NoGoodSignature {
        /// The file.
        url: String,
        /// One entry per signature, e.g. `signature 1 was made by key ...,
        /// which is not in the keyring`.
        reasons: Vec<String>,
    },
    /// The text is not a valid deb822 `Release` paragraph.
    #[error("{url}: {reason}")]
    Syntax {
        /// The file.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A field has a value that cannot be used.
    #[error("{url}: invalid {field} field {value:?}: {reason}")]
    InvalidField {
        /// The file.
        url: String,
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// `Date` is later than now plus the allowed skew.
    #[error("{url}: Date {date} is in the future (now {now}): check the clock, or the mirror")]
    NotYetValid {
        /// The file.
        url: String,
        /// The `Date` value, normalised.
        date: String,
        /// The time used as now.
        now: String,
    },
    /// `Valid-Until` has passed.
    #[error("{url}: expired: Valid-Until {valid_until} has passed (now {now})")]
    Expired {
        /// The file.
        url: String,
        /// The `Valid-Until` value, normalised.
        valid_until: String,
        /// The time used as now.
        now: String,
    },
}

/// Result type of this module.
pub type Result<T, E = ReleaseError> = std::result::Result<T, E>;

/// How signatures and dates are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyPolicy {
    /// The time to check against (keys' expiry, `Date`, `Valid-Until`).
    pub now: SystemTime,
    /// How far `Date` may be in the future.
    pub max_future: Duration,
    /// Whether to check `Date` at all (apt's `Acquire::Check-Date`).
    pub check_date: bool,
    /// Whether to check `Valid-Until` (apt's `Acquire::Check-Valid-Until`).
    pub check_valid_until: bool,
}

impl VerifyPolicy {
    /// All checks on, at `now`, with [`DEFAULT_MAX_FUTURE`].
    pub fn at(now: SystemTime) -> VerifyPolicy {
        VerifyPolicy {
            now,
            max_future: DEFAULT_MAX_FUTURE,
            check_date: true,
            check_valid_until: true,
        }
    }
}

#[derive(Debug, Clone)]
enum Signed {
    /// No signature (a plain `Release`).
    None,
    /// `InRelease`: the signatures cover `data` (the cleartext, CRLF).
    Inline {
        data: String,
        signatures: Vec<Signature>,
    },
    /// `Release` + `Release.gpg`.
    Detached { signatures: Vec<Signature> },
}

/// A `Release` or `InRelease` file whose signature has not been checked;
/// see the [module documentation](self). It exposes no field.
#[derive(Debug, Clone)]
pub struct UnverifiedRelease {
    url: String,
    /// The Release text (the signed text for `InRelease`, LF line ends).
    text: String,
    signed: Signed,
}

impl UnverifiedRelease {
    /// Reads an `InRelease` (cleartext-signed) or plain `Release` file;
    /// `url` names it in errors.
    ///
    /// # Security
    /// Only the OpenPGP framing is parsed: a cleartext message must start
    /// at the first byte and have nothing after its signature block. No
    /// field is read until [`UnverifiedRelease::verify`].
    pub fn parse(bytes: &[u8], url: impl Into<String>) -> Result<UnverifiedRelease> {
        let url = url.into();
        let text = std::str::from_utf8(bytes).map_err(|e| ReleaseError::Syntax {
            url: url.clone(),
            reason: format!("not UTF-8 text ({e})"),
        })?;
        if !text.starts_with(CLEARTEXT_HEADER) {
            return Ok(UnverifiedRelease {
                url,
                text: text.to_owned(),
                signed: Signed::None,
            });
        }
        let (message, _headers) =
            CleartextSignedMessage::from_string(text).map_err(|e| ReleaseError::Armor {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let data = message.signed_text();
        let mut text = data.replace("\r\n", "\n");
        if !text.ends_with('\n') {
            text.push('\n');
        }
        Ok(UnverifiedRelease {
            url,
            text,
            signed: Signed::Inline {
                data,
                signatures: message.signatures().to_vec(),
            },
        })
    }

    /// Attaches a detached signature (`Release.gpg`, armored or binary,
    /// one or more signatures) to a plain `Release`.
    pub fn with_detached_signature(
        self,
        signature: &[u8],
        signature_url: &str,
    ) -> Result<UnverifiedRelease> {
        if !matches!(self.signed, Signed::None) {
            return Err(ReleaseError::Armor {
                url: signature_url.to_owned(),
                reason: format!("{} already carries its signatures", self.url),
            });
        }
        let armor = |reason: String| ReleaseError::Armor {
            url: signature_url.to_owned(),
            reason,
        };
        let (parsed, _headers) = DetachedSignature::from_reader_many(Cursor::new(signature))
            .map_err(|e| armor(e.to_string()))?;
        let mut signatures = Vec::new();
        for sig in parsed {
            signatures.push(sig.map_err(|e| armor(e.to_string()))?.signature);
        }
        if signatures.is_empty() {
            return Err(armor("no signature packet".to_owned()));
        }
        Ok(UnverifiedRelease {
            signed: Signed::Detached { signatures },
            ..self
        })
    }

    /// The URL given to [`UnverifiedRelease::parse`].
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the file carries signatures (inline or detached).
    pub fn is_signed(&self) -> bool {
        !matches!(self.signed, Signed::None)
    }

    /// Verifies with all checks at `now`; see
    /// [`UnverifiedRelease::verify_with`].
    pub fn verify(self, keyring: &Keyring, now: SystemTime) -> Result<VerifiedRelease> {
        self.verify_with(keyring, &VerifyPolicy::at(now))
    }

    /// Checks the signatures against `keyring` (at least one must be good;
    /// see [`crate::keyring`]), then parses the fields and checks the dates
    /// as `policy` says.
    ///
    /// # Security
    /// The fields are parsed from exactly the text the good signature
    /// covers. An unsigned file is refused.
    pub fn verify_with(self, keyring: &Keyring, policy: &VerifyPolicy) -> Result<VerifiedRelease> {
        let (signatures, data): (&[Signature], &[u8]) = match &self.signed {
            Signed::None => return Err(ReleaseError::Unsigned { url: self.url }),
            Signed::Inline { data, signatures } => (signatures, data.as_bytes()),
            Signed::Detached { signatures } => (signatures, self.text.as_bytes()),
        };
        let mut signers = Vec::new();
        let mut reasons = Vec::new();
        for (i, sig) in signatures.iter().enumerate() {
            match keyring.check(sig, data, policy.now) {
                Ok(signer) => signers.push(signer),
                Err(reason) => reasons.push(format!("signature {} {reason}", i + 1)),
            }
        }
        if signers.is_empty() {
            if signatures.is_empty() {
                reasons.push("the file has no signature".to_owned());
            }
            if keyring.is_empty() {
                reasons.push("the keyring is empty".to_owned());
            }
            return Err(ReleaseError::NoGoodSignature {
                url: self.url,
                reasons,
            });
        }
        VerifiedRelease::new(self.url, self.text, signers, false, policy)
    }

    /// **Insecure**: accepts the file without checking any signature, for
    /// unsigned test repositories. The dates are still checked, and the
    /// hashes it lists are still enforced for every index and package
    /// fetched through it; but anyone who can change the file can change
    /// what gets installed.
    pub fn insecure_skip_signature(self, now: SystemTime) -> Result<VerifiedRelease> {
        self.insecure_skip_signature_with(&VerifyPolicy::at(now))
    }

    /// [`UnverifiedRelease::insecure_skip_signature`] with a policy for the
    /// date checks.
    pub fn insecure_skip_signature_with(self, policy: &VerifyPolicy) -> Result<VerifiedRelease> {
        VerifiedRelease::new(self.url, self.text, Vec::new(), true, policy)
    }
}

/// One file listed in the `SHA256` field of a `Release`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// Path relative to the suite's directory (`main/binary-amd64/Packages.xz`).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, lower-case hex.
    pub sha256: String,
}

/// How an index file is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IndexCompression {
    /// `.xz`.
    Xz,
    /// `.gz`.
    Gzip,
    /// `.zst`.
    Zstd,
    /// Not compressed.
    None,
}

impl IndexCompression {
    /// In order of preference (smallest download first).
    pub const PREFERENCE: [IndexCompression; 4] = [
        IndexCompression::Xz,
        IndexCompression::Zstd,
        IndexCompression::Gzip,
        IndexCompression::None,
    ];

    /// The file name extension (`.xz`, `.gz`, `.zst`, or empty).
    pub fn extension(self) -> &'static str {
        match self {
            IndexCompression::Xz => ".xz",
            IndexCompression::Gzip => ".gz",
            IndexCompression::Zstd => ".zst",
            IndexCompression::None => "",
        }
    }
}

/// The `Packages` index of one component and architecture, as a verified
/// `Release` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackagesFiles {
    /// The listed variants, in order of preference.
    pub variants: Vec<(IndexEntry, IndexCompression)>,
    /// The uncompressed file's entry, when listed (Debian lists it even
    /// though mirrors only serve compressed variants): the decompressed
    /// data must match it.
    pub uncompressed: Option<IndexEntry>,
}

/// A `Release` whose signature (or explicit insecure acceptance) and dates
/// have been checked; see the [module documentation](self).
#[derive(Debug, Clone)]
pub struct VerifiedRelease {
    url: String,
    text: String,
    signers: Vec<Signer>,
    insecure: bool,
    fields: Vec<(String, String)>,
    date: Option<u64>,
    valid_until: Option<u64>,
    entries: BTreeMap<String, IndexEntry>,
}

impl VerifiedRelease {
    fn new(
        url: String,
        text: String,
        signers: Vec<Signer>,
        insecure: bool,
        policy: &VerifyPolicy,
    ) -> Result<VerifiedRelease> {
        let paragraph = Paragraph::parse(&text).map_err(|e| ReleaseError::Syntax {
            url: url.clone(),
            reason: format!("not a Release file: {e}"),
        })?;
        let invalid =
            |field: &'static str, value: &str, reason: String| ReleaseError::InvalidField {
                url: url.clone(),
                field,
                value: value.to_owned(),
                reason,
            };
        let date_field = |field: &'static str| -> Result<Option<u64>> {
            paragraph
                .get(field)
                .map(|v| parse_date(v).map_err(|reason| invalid(field, v, reason)))
                .transpose()
        };
        let date = date_field("Date")?;
        let valid_until = date_field("Valid-Until")?;
        let sha256 = paragraph
            .get("SHA256")
            .ok_or_else(|| ReleaseError::Syntax {
                url: url.clone(),
                reason:
                    "no SHA256 field: indices cannot be verified (MD5Sum and SHA1 are not accepted)"
                        .to_owned(),
            })?;
        let mut entries = BTreeMap::new();
        for line in sha256.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let parts: Vec<&str> = line.split_ascii_whitespace().collect();
            let bad = |reason: &str| invalid("SHA256", line, reason.to_owned());
            let [hash, size, path] = parts[..] else {
                return Err(bad("expected `<sha256> <size> <path>`"));
            };
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad("not a SHA-256 in hex"));
            }
            let size = size
                .parse::<u64>()
                .map_err(|_| bad("size is not a number"))?;
            if path.starts_with('/') || path.split('/').any(|c| c == ".." || c.is_empty()) {
                return Err(bad("unsafe path"));
            }
            entries.insert(
                path.to_owned(),
                IndexEntry {
                    path: path.to_owned(),
                    size,
                    sha256: hash.to_ascii_lowercase(),
                },
            );
        }
        let now = policy
            .now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if policy.check_date {
            if let Some(date) = date {
                if date > now.saturating_add(policy.max_future.as_secs()) {
                    return Err(ReleaseError::NotYetValid {
                        url,
                        date: format_date(date),
                        now: format_date(now),
                    });
                }
            }
        }
        if policy.check_valid_until {
            if let Some(until) = valid_until {
                if until <= now {
                    return Err(ReleaseError::Expired {
                        url,
                        valid_until: format_date(until),
                        now: format_date(now),
                    });
                }
            }
        }
        let fields = paragraph
            .fields()
            .iter()
            .map(|f| (f.name().to_owned(), f.value().to_owned()))
            .collect();
        Ok(VerifiedRelease {
            url,
            signers,
            insecure,
            fields,
            date,
            valid_until,
            entries,
            text,
        })
    }

    /// The URL the file was read from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The keys that made the good signatures (empty when insecure).
    pub fn signers(&self) -> &[Signer] {
        &self.signers
    }

    /// Whether the signature check was skipped
    /// ([`UnverifiedRelease::insecure_skip_signature`]).
    pub fn is_insecure(&self) -> bool {
        self.insecure
    }

    /// The verified Release text (LF line ends).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Any field's value (case-insensitive name).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `Suite` (e.g. `stable`).
    pub fn suite(&self) -> Option<&str> {
        self.field("Suite")
    }

    /// `Codename` (e.g. `bookworm`).
    pub fn codename(&self) -> Option<&str> {
        self.field("Codename")
    }

    /// `Origin` (e.g. `Debian`).
    pub fn origin(&self) -> Option<&str> {
        self.field("Origin")
    }

    /// `Label`.
    pub fn label(&self) -> Option<&str> {
        self.field("Label")
    }

    /// `Version`.
    pub fn version(&self) -> Option<&str> {
        self.field("Version")
    }

    /// `Date`.
    pub fn date(&self) -> Option<SystemTime> {
        self.date.map(|s| UNIX_EPOCH + Duration::from_secs(s))
    }

    /// `Valid-Until`.
    pub fn valid_until(&self) -> Option<SystemTime> {
        self.valid_until
            .map(|s| UNIX_EPOCH + Duration::from_secs(s))
    }

    /// `Architectures` (empty when absent).
    pub fn architectures(&self) -> Vec<&str> {
        self.field("Architectures")
            .map(|v| v.split_ascii_whitespace().collect())
            .unwrap_or_default()
    }

    /// `Components` (empty when absent).
    pub fn components(&self) -> Vec<&str> {
        self.field("Components")
            .map(|v| v.split_ascii_whitespace().collect())
            .unwrap_or_default()
    }

    /// `Acquire-By-Hash: yes`: indices may be fetched from
    /// `by-hash/SHA256/<hash>`.
    pub fn acquire_by_hash(&self) -> bool {
        self.field("Acquire-By-Hash") == Some("yes")
    }

    /// Whether `binary-all` records are already in each architecture's
    /// `Packages` (`No-Support-for-Architecture-all: Packages`).
    pub fn all_in_arch_indices(&self) -> bool {
        self.field("No-Support-for-Architecture-all") == Some("Packages")
    }

    /// Every `SHA256` entry, by path.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = &IndexEntry> + '_ {
        self.entries.values()
    }

    /// The entry of one path (relative to the suite directory).
    pub fn entry(&self, path: &str) -> Option<&IndexEntry> {
        self.entries.get(path)
    }

    /// The `Packages` files listed for `component` and `arch` (`all`
    /// included), or `None` when none is listed.
    pub fn packages(&self, component: &str, arch: &str) -> Option<PackagesFiles> {
        let base = format!("{component}/binary-{arch}/Packages");
        let variants: Vec<(IndexEntry, IndexCompression)> = IndexCompression::PREFERENCE
            .iter()
            .filter_map(|c| {
                self.entry(&format!("{base}{}", c.extension()))
                    .map(|e| (e.clone(), *c))
            })
            .collect();
        if variants.is_empty() {
            return None;
        }
        Some(PackagesFiles {
            variants,
            uncompressed: self.entry(&base).cloned(),
        })
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Parses an RFC 2822 date as `Release` files write them (`Sat, 10 Jun
/// 2023 08:55:32 UTC`; the weekday is optional; zones `UTC`, `GMT`, `Z`
/// or `+hhmm`/`-hhmm`) to seconds since the epoch.
pub fn parse_date(value: &str) -> std::result::Result<u64, String> {
    let mut parts: Vec<&str> = value.split_ascii_whitespace().collect();
    if parts.first().is_some_and(|p| p.ends_with(',')) {
        parts.remove(0);
    }
    let [day, month, year, time, zone] = parts[..] else {
        return Err("expected `Day, DD Mon YYYY HH:MM:SS UTC`".to_owned());
    };
    let bad = |what: &str| format!("bad {what}");
    let day: u32 = day.parse().map_err(|_| bad("day"))?;
    let month = MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(month))
        .ok_or_else(|| bad("month"))? as u32
        + 1;
    let year: i64 = year.parse().map_err(|_| bad("year"))?;
    let hms: Vec<u32> = time
        .split(':')
        .map(|p| p.parse::<u32>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| bad("time"))?;
    let [h, m, s] = hms[..] else {
        return Err(bad("time"));
    };
    if !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 || !(1970..=9999).contains(&year) {
        return Err(bad("date or time"));
    }
    let offset: i64 = match zone {
        "UTC" | "GMT" | "Z" | "UT" => 0,
        z if z.len() == 5 && (z.starts_with('+') || z.starts_with('-')) => {
            let n: i64 = z[1..].parse().map_err(|_| bad("zone"))?;
            let secs = (n / 100) * 3600 + (n % 100) * 60;
            if z.starts_with('-') {
                -secs
            } else {
                secs
            }
        }
        _ => return Err(bad("zone")),
    };
    let secs =
        days_from_civil(year, month, day) * 86_400 + i64::from(h * 3600 + m * 60 + s) - offset;
    u64::try_from(secs).map_err(|_| bad("date (before 1970)"))
}

/// Formats seconds since the epoch as `Sat, 10 Jun 2023 08:55:32 UTC`.
pub fn format_date(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} UTC",
        WEEKDAYS[days.rem_euclid(7) as usize],
        day,
        MONTHS[month as usize - 1],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        let secs = parse_date("Sat, 10 Jun 2023 08:55:32 UTC").unwrap();
        assert_eq!(secs, 1_686_387_332);
        assert_eq!(format_date(secs), "Sat, 10 Jun 2023 08:55:32 UTC");
        assert_eq!(parse_date("10 Jun 2023 10:55:32 +0200").unwrap(), secs);
        assert_eq!(format_date(0), "Thu, 01 Jan 1970 00:00:00 UTC");
        assert_eq!(format_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 UTC");
        for bad in [
            "",
            "Sat, 10 Foo 2023 08:55:32 UTC",
            "Sat, 10 Jun 2023 08:55 UTC",
            "10 Jun 2023 08:55:32 CEST",
        ] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
    }

    fn unsigned(text: &str) -> UnverifiedRelease {
        UnverifiedRelease::parse(text.as_bytes(), "test://Release").unwrap()
    }

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn dates_are_enforced() {
        let text = format!(
            "Date: Sat, 10 Jun 2023 08:55:32 UTC\nValid-Until: Sat, 17 Jun 2023 08:55:32 UTC\nSHA256:\n {HASH} 4 main/binary-amd64/Packages\n"
        );
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        let date = 1_686_387_332;
        assert!(unsigned(&text).insecure_skip_signature(at(date)).is_ok());
        // Within the skew.
        assert!(unsigned(&text)
            .insecure_skip_signature(at(date - 60))
            .is_ok());
        let early = unsigned(&text)
            .insecure_skip_signature(at(date - 3600))
            .unwrap_err();
        assert!(matches!(early, ReleaseError::NotYetValid { .. }), "{early}");
        assert!(early
            .to_string()
            .contains("Date Sat, 10 Jun 2023 08:55:32 UTC is in the future"));
        let late = unsigned(&text)
            .insecure_skip_signature(at(date + 7 * 86_400))
            .unwrap_err();
        assert_eq!(
            late.to_string(),
            "test://Release: expired: Valid-Until Sat, 17 Jun 2023 08:55:32 UTC has passed (now Sat, 17 Jun 2023 08:55:32 UTC)"
        );
        let mut lax = VerifyPolicy::at(at(date + 7 * 86_400));
        lax.check_valid_until = false;
        assert!(unsigned(&text).insecure_skip_signature_with(&lax).is_ok());
    }

    #[test]
    fn entries_and_variants() {
        let text = format!(
            "Codename: bookworm\nAcquire-By-Hash: yes\nMD5Sum:\n 00000000000000000000000000000000 9 main/binary-amd64/Packages.gz\nSHA256:\n {HASH} 4 main/binary-amd64/Packages\n {HASH} 9 main/binary-amd64/Packages.gz\n {HASH} 7 main/binary-amd64/Packages.xz\n"
        );
        let release = unsigned(&text)
            .insecure_skip_signature(SystemTime::now())
            .unwrap();
        assert!(release.acquire_by_hash());
        assert_eq!(release.entries().len(), 3);
        let files = release.packages("main", "amd64").unwrap();
        let kinds: Vec<IndexCompression> = files.variants.iter().map(|(_, c)| *c).collect();
        assert_eq!(
            kinds,
            [
                IndexCompression::Xz,
                IndexCompression::Gzip,
                IndexCompression::None
            ]
        );
        assert_eq!(files.variants[0].0.size, 7);
        assert_eq!(files.uncompressed.unwrap().size, 4);
        assert!(release.packages("contrib", "amd64").is_none());
    }

    #[test]
    fn malformed_entries_are_rejected() {
        for (line, reason) in [
            ("abc 4 main/Packages", "not a SHA-256"),
            (
                &format!("{HASH} x main/Packages") as &str,
                "size is not a number",
            ),
            (&format!("{HASH} 4 ../Packages"), "unsafe path"),
            (&format!("{HASH} 4"), "expected"),
        ] {
            let text = format!("SHA256:\n {line}\n");
            let err = unsigned(&text)
                .insecure_skip_signature(SystemTime::now())
                .unwrap_err();
            assert!(err.to_string().contains(reason), "{err}");
        }
        let err = unsigned("MD5Sum:\n 00 1 a\n")
            .insecure_skip_signature(SystemTime::now())
            .unwrap_err();
        assert!(err.to_string().contains("no SHA256 field"), "{err}");
    }

    #[test]
    fn broken_cleartext_is_an_armor_error() {
        let err = UnverifiedRelease::parse(
            b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nSuite: x\n",
            "test://InRelease",
        )
        .unwrap_err();
        assert!(matches!(err, ReleaseError::Armor { .. }), "{err}");
        assert!(err
            .to_string()
            .starts_with("test://InRelease: invalid OpenPGP data"));
    }
}
