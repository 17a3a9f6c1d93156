//! OpenPGP keyrings and the signature checks apt's `gpgv` makes.
//!
//! A [`Keyring`] holds OpenPGP certificates loaded from keyring files:
//! binary (`.gpg`, as in `/usr/share/keyrings`) or ASCII-armored (`.asc`),
//! each with any number of certificates. Nothing is embedded: the caller
//! names the files (typically a source's `Signed-By`, or the distribution's
//! archive keyring package).
//!
//! Signatures are checked by [`crate::release`], which is the only consumer;
//! the rules are those of an apt-like verifier:
//!
//! * the signature's issuer (fingerprint or key ID) is looked up among the
//!   primary keys *and* the subkeys of every certificate;
//! * the certificate must have a valid self-signature (a user ID
//!   certification or a direct-key signature made by the primary key itself;
//!   third-party certifications are ignored, they come from keys outside the
//!   keyring), must not be revoked and must not be expired at `now`;
//! * a subkey must have a valid binding signature from its primary key that
//!   gives it the signing flag, with a valid embedded back-signature, and
//!   must be neither revoked nor expired; a primary key that signs must not
//!   have key flags that exclude signing;
//! * data signatures made with MD5, SHA-1 or RIPEMD-160 are rejected
//!   (self-signatures made with SHA-1 are still accepted, as gpgv does);
//! * the signature must not be older than the key, nor expired.
//!
//! ```
//! use ami_deb::keyring::Keyring;
//!
//! let empty = Keyring::new();
//! assert!(empty.is_empty());
//! let error = Keyring::from_bytes(b"not a key", "inline").unwrap_err();
//! assert!(error.to_string().starts_with("inline: "));
//! ```

use std::fmt;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use pgp::composed::{Deserializable, SignedPublicKey, SignedPublicSubKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{Signature, SignatureType, SubpacketData};
use pgp::types::{KeyDetails, Tag};

/// An error loading a keyring.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyringError {
    /// A keyring file could not be read.
    #[error("cannot read keyring {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A keyring holds no usable OpenPGP certificate.
    #[error("{origin}: {reason}")]
    Parse {
        /// The file name (or the label given to [`Keyring::from_bytes`]).
        origin: String,
        /// What is wrong.
        reason: String,
    },
}

/// One certificate of a [`Keyring`].
#[derive(Debug, Clone)]
struct Cert {
    key: SignedPublicKey,
    origin: String,
}

/// A set of trusted OpenPGP certificates; see the
/// [module documentation](self).
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    certs: Vec<Cert>,
}

/// Upper-case hex, the way gpg prints fingerprints.
fn upper_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

impl Keyring {
    /// An empty keyring (verifies nothing).
    pub fn new() -> Keyring {
        Keyring::default()
    }

    /// Parses a keyring: binary or ASCII-armored OpenPGP data with one or
    /// more certificates. `origin` names it in errors. Certificates that
    /// rPGP cannot parse (for example with algorithms it does not support)
    /// are skipped; having none at all is an error.
    ///
    /// # Security
    /// Only parses: no signature on the certificates is checked here; that
    /// happens, for the certificate concerned, when a signature is verified.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Keyring, KeyringError> {
        let parse_error = |reason: String| KeyringError::Parse {
            origin: origin.to_owned(),
            reason,
        };
        let (certs, _headers) = SignedPublicKey::from_reader_many(Cursor::new(bytes))
            .map_err(|e| parse_error(format!("not an OpenPGP keyring: {e}")))?;
        let mut keyring = Keyring::new();
        let mut first_error = None;
        for cert in certs {
            match cert {
                Ok(key) => keyring.certs.push(Cert {
                    key,
                    origin: origin.to_owned(),
                }),
                Err(e) => {
                    first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        if keyring.certs.is_empty() {
            return Err(parse_error(match first_error {
                Some(e) => format!("no usable OpenPGP certificate: {e}"),
                None => "no OpenPGP certificate".to_owned(),
            }));
        }
        Ok(keyring)
    }

    /// Reads and parses a keyring file (see [`Keyring::from_bytes`]).
    pub fn load(path: &Path) -> Result<Keyring, KeyringError> {
        let bytes = std::fs::read(path).map_err(|source| KeyringError::Io {
            path: path.to_owned(),
            source,
        })?;
        Keyring::from_bytes(&bytes, &path.display().to_string())
    }

    /// Reads several keyring files into one keyring.
    pub fn load_all<P: AsRef<Path>>(paths: &[P]) -> Result<Keyring, KeyringError> {
        let mut keyring = Keyring::new();
        for path in paths {
            keyring.extend(Keyring::load(path.as_ref())?);
        }
        Ok(keyring)
    }

    /// Adds the certificates of `other`.
    pub fn extend(&mut self, other: Keyring) {
        self.certs.extend(other.certs);
    }

    /// Keeps only the certificates whose primary key or one of whose
    /// subkeys has one of `fingerprints` (hex, any case, spaces ignored),
    /// as apt does for a `Signed-By` list of fingerprints.
    pub fn retain_fingerprints<S: AsRef<str>>(&mut self, fingerprints: &[S]) {
        let wanted: Vec<String> = fingerprints
            .iter()
            .map(|f| {
                f.as_ref()
                    .chars()
                    .filter(|c| !c.is_whitespace())
                    .collect::<String>()
                    .trim_end_matches('!')
                    .to_ascii_uppercase()
            })
            .collect();
        self.certs.retain(|cert| {
            std::iter::once(upper_hex(cert.key.primary_key.fingerprint().as_bytes()))
                .chain(
                    cert.key
                        .public_subkeys
                        .iter()
                        .map(|s| upper_hex(s.key.fingerprint().as_bytes())),
                )
                .any(|fp| wanted.contains(&fp))
        });
    }

    /// Number of certificates.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// Whether the keyring has no certificate.
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// The primary-key fingerprints (upper-case hex), in load order.
    pub fn fingerprints(&self) -> Vec<String> {
        self.certs
            .iter()
            .map(|c| upper_hex(c.key.primary_key.fingerprint().as_bytes()))
            .collect()
    }

    /// Checks one data signature over `data` (for a text signature, the
    /// cleartext with CRLF line ends, as the cleartext framework hashes
    /// it). Returns who signed, or why the signature is not good.
    pub(crate) fn check(
        &self,
        sig: &Signature,
        data: &[u8],
        now: SystemTime,
    ) -> Result<Signer, String> {
        let now = unix_secs(now);
        match sig.typ() {
            Some(SignatureType::Binary | SignatureType::Text) => {}
            other => return Err(format!("is not a data signature (type {other:?})")),
        }
        let issuer = describe_issuer(sig);
        let hash = sig.hash_alg().unwrap_or(HashAlgorithm::None);
        if is_weak(hash) {
            return Err(format!(
                "by {issuer} uses the insecure hash algorithm {hash}"
            ));
        }
        let candidates = self.candidates(sig);
        if candidates.is_empty() {
            return Err(format!("was made by {issuer}, which is not in the keyring"));
        }
        let mut reasons = Vec::new();
        for (cert, subkey) in candidates {
            match check_with(cert, subkey, sig, data, now) {
                Ok(signer) => return Ok(signer),
                Err(reason) => reasons.push(reason),
            }
        }
        Err(format!("by {issuer}: {}", reasons.join("; ")))
    }

    /// The (certificate, subkey) pairs whose key matches the issuer of
    /// `sig` (`None`: the primary key). A signature without issuer
    /// information matches every key.
    fn candidates<'a>(
        &'a self,
        sig: &Signature,
    ) -> Vec<(&'a Cert, Option<&'a SignedPublicSubKey>)> {
        let ids = sig.issuer_key_id();
        let fps = sig.issuer_fingerprint();
        let matches = |key: &dyn KeyDetails| {
            (ids.is_empty() && fps.is_empty())
                || ids.iter().any(|id| **id == key.legacy_key_id())
                || fps.iter().any(|fp| **fp == key.fingerprint())
        };
        let mut out = Vec::new();
        for cert in &self.certs {
            if matches(&cert.key.primary_key) {
                out.push((cert, None));
            }
            for sub in &cert.key.public_subkeys {
                if matches(&sub.key) {
                    out.push((cert, Some(sub)));
                }
            }
        }
        out
    }
}

/// Who made a good signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    /// Fingerprint (upper-case hex) of the key that made the signature: the
    /// primary key or a signing subkey.
    pub key: String,
    /// Fingerprint of the certificate's primary key.
    pub primary: String,
    /// The certificate's first user ID, if it has one.
    pub user_id: Option<String>,
    /// The keyring file the certificate came from.
    pub keyring: String,
}

impl fmt::Display for Signer {
    /// Writes `user id <fingerprint>` (or just the fingerprint).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.user_id {
            Some(uid) => write!(f, "{uid} ({})", self.key),
            None => f.write_str(&self.key),
        }
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn is_weak(hash: HashAlgorithm) -> bool {
    matches!(
        hash,
        HashAlgorithm::None | HashAlgorithm::Md5 | HashAlgorithm::Sha1 | HashAlgorithm::Ripemd160
    )
}

fn describe_issuer(sig: &Signature) -> String {
    if let Some(fp) = sig.issuer_fingerprint().first() {
        format!("key {}", upper_hex(fp.as_bytes()))
    } else if let Some(id) = sig.issuer_key_id().first() {
        format!("key {}", upper_hex(id.as_ref()))
    } else {
        "an unnamed key".to_owned()
    }
}

fn created(sig: &Signature) -> u64 {
    sig.created().map(|t| u64::from(t.as_secs())).unwrap_or(0)
}

/// Whether a (self-)signature has passed its own expiration time.
fn sig_expired(sig: &Signature, now: u64) -> bool {
    match sig
        .signature_expiration_time()
        .map(|d| u64::from(d.as_secs()))
    {
        Some(0) | None => false,
        Some(d) => created(sig) + d <= now,
    }
}

fn has_key_flags(sig: &Signature) -> bool {
    sig.config().is_some_and(|c| {
        c.hashed_subpackets()
            .any(|p| matches!(p.data, SubpacketData::KeyFlags(_)))
    })
}

/// A key's expiry time from the signature that bound it: `None` when it
/// never expires.
fn expiry(key_created: u64, binding: &Signature) -> Option<u64> {
    match binding
        .key_expiration_time()
        .map(|d| u64::from(d.as_secs()))
    {
        Some(0) | None => None,
        Some(d) => Some(key_created + d),
    }
}

fn date(secs: u64) -> String {
    crate::release::format_date(secs)
}

/// The newest valid self-signature of the certificate's primary key (user
/// ID certifications and direct-key signatures), after checking that the
/// key is not revoked.
fn primary_self_signature(cert: &Cert, now: u64) -> Result<&Signature, String> {
    let primary = &cert.key.primary_key;
    let fp = upper_hex(primary.fingerprint().as_bytes());
    for rev in &cert.key.details.revocation_signatures {
        if rev.verify_key(primary).is_ok() {
            return Err(format!("certificate {fp} is revoked"));
        }
    }
    let mut valid: Vec<&Signature> = Vec::new();
    for user in &cert.key.details.users {
        for sig in &user.signatures {
            if sig
                .verify_certification(primary, Tag::UserId, &user.id)
                .is_ok()
            {
                valid.push(sig);
            }
        }
    }
    for sig in &cert.key.details.direct_signatures {
        if sig.typ() == Some(SignatureType::Key) && sig.verify_key(primary).is_ok() {
            valid.push(sig);
        }
    }
    let best = valid
        .into_iter()
        .filter(|sig| !sig_expired(sig, now) && sig.hash_alg() != Some(HashAlgorithm::Md5))
        .max_by_key(|sig| created(sig));
    let best = best.ok_or_else(|| format!("certificate {fp} has no valid self-signature"))?;
    if let Some(end) = expiry(u64::from(primary.created_at().as_secs()), best) {
        if end <= now {
            return Err(format!("certificate {fp} expired on {}", date(end)));
        }
    }
    Ok(best)
}

/// The newest valid binding of a signing subkey, after checking that it is
/// not revoked.
fn subkey_binding<'a>(
    cert: &Cert,
    sub: &'a SignedPublicSubKey,
    now: u64,
) -> Result<&'a Signature, String> {
    let primary = &cert.key.primary_key;
    let fp = upper_hex(sub.key.fingerprint().as_bytes());
    let mut best: Option<&Signature> = None;
    let mut problems = Vec::new();
    for sig in &sub.signatures {
        if sig.verify_subkey_binding(primary, &sub.key).is_err() {
            continue;
        }
        match sig.typ() {
            Some(SignatureType::SubkeyRevocation) => return Err(format!("subkey {fp} is revoked")),
            Some(SignatureType::SubkeyBinding) => {}
            _ => continue,
        }
        if sig_expired(sig, now) || sig.hash_alg() == Some(HashAlgorithm::Md5) {
            continue;
        }
        if !sig.key_flags().sign() {
            problems.push(format!("subkey {fp} is not signing-capable"));
            continue;
        }
        let back_ok = sig
            .embedded_signature()
            .is_some_and(|back| back.verify_primary_key_binding(&sub.key, primary).is_ok());
        if !back_ok {
            problems.push(format!("subkey {fp} has no valid back-signature"));
            continue;
        }
        if best.is_none_or(|b| created(sig) >= created(b)) {
            best = Some(sig);
        }
    }
    best.ok_or_else(|| {
        problems
            .pop()
            .unwrap_or_else(|| format!("subkey {fp} has no valid binding signature"))
    })
}

fn user_id(cert: &Cert) -> Option<String> {
    cert.key
        .details
        .users
        .first()
        .map(|u| String::from_utf8_lossy(u.id.id()).into_owned())
}

/// Checks `sig` as made by `cert`'s primary key (`subkey` `None`) or by
/// `subkey`.
fn check_with(
    cert: &Cert,
    subkey: Option<&SignedPublicSubKey>,
    sig: &Signature,
    data: &[u8],
    now: u64,
) -> Result<Signer, String> {
    let primary = &cert.key.primary_key;
    let self_sig = primary_self_signature(cert, now)?;
    let (key_fp, key_created) = match subkey {
        None => {
            if has_key_flags(self_sig) && !self_sig.key_flags().sign() {
                return Err(format!(
                    "primary key {} is not signing-capable",
                    upper_hex(primary.fingerprint().as_bytes())
                ));
            }
            (
                primary.fingerprint(),
                u64::from(primary.created_at().as_secs()),
            )
        }
        Some(sub) => {
            let binding = subkey_binding(cert, sub, now)?;
            let created_at = u64::from(sub.key.created_at().as_secs());
            if let Some(end) = expiry(created_at, binding) {
                if end <= now {
                    return Err(format!(
                        "subkey {} expired on {}",
                        upper_hex(sub.key.fingerprint().as_bytes()),
                        date(end)
                    ));
                }
            }
            (sub.key.fingerprint(), created_at)
        }
    };
    let key_fp = upper_hex(key_fp.as_bytes());
    let verified = match subkey {
        None => sig.verify(primary, data),
        Some(sub) => sig.verify(&sub.key, data),
    };
    verified.map_err(|_| {
        format!("key {key_fp}: the signature does not match the signed data (BAD signature)")
    })?;
    if created(sig) < key_created {
        return Err(format!("key {key_fp}: the signature is older than the key"));
    }
    if sig_expired(sig, now) {
        return Err(format!("key {key_fp}: the signature has expired"));
    }
    Ok(Signer {
        key: key_fp,
        primary: upper_hex(primary.fingerprint().as_bytes()),
        user_id: user_id(cert),
        keyring: cert.origin.clone(),
    })
}
