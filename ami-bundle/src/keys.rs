//! Signing keys: the RSA key pair and self-signed X.509 certificate that
//! bundles are wrapped for and signed with.
//!
//! This is what the AMI tutorial makes with `openssl genrsa 2048` and
//! `openssl req -new -x509 -nodes -sha256 -days 365`: an RSA key, and a
//! self-signed certificate (SHA-256 signature, random serial, subject and
//! issuer `CN=...`, valid from now for the given number of days). EC2
//! never checks the certificate's dates or issuer; only its public key is
//! used.

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::rsa::Rsa;
use openssl::x509::extension::{BasicConstraints, SubjectKeyIdentifier};
use openssl::x509::{X509NameBuilder, X509};

use crate::crypto::{Certificate, PrivateKey};
use crate::error::{Error, Result};

/// Key sizes [`generate`] accepts.
pub const KEY_BITS: [u32; 3] = [2048, 3072, 4096];

/// A new key pair and its certificate.
#[derive(Debug, Clone)]
pub struct SigningKeys {
    /// The private key.
    pub key: PrivateKey,
    /// The self-signed certificate of its public key.
    pub cert: Certificate,
}

/// Makes an RSA key of `bits` bits (2048, 3072 or 4096) and a self-signed
/// certificate for it with subject `CN=common_name`, valid for `days` days
/// from now. Randomness comes from OpenSSL's generator.
///
/// # Errors
///
/// [`Error::KeyParameters`] for another key size, 0 or more than 36500
/// days, or an empty or over-long name; [`Error::Crypto`] if OpenSSL fails.
pub fn generate(bits: u32, days: u32, common_name: &str) -> Result<SigningKeys> {
    if !KEY_BITS.contains(&bits) {
        return Err(Error::KeyParameters(format!(
            "{bits}-bit keys are not supported; use 2048, 3072 or 4096"
        )));
    }
    if days == 0 || days > 36_500 {
        return Err(Error::KeyParameters(format!(
            "a validity of {days} days; use 1 to 36500"
        )));
    }
    if common_name.is_empty() || common_name.len() > 64 {
        return Err(Error::KeyParameters(
            "the common name must be 1 to 64 bytes long".to_owned(),
        ));
    }
    let crypto = |what| move |source| Error::Crypto { what, source };
    let rsa = Rsa::generate(bits).map_err(crypto("generating an RSA key"))?;
    let key = PrivateKey::from_rsa(rsa);
    let pkey = key.pkey()?;

    let build = || -> std::result::Result<X509, openssl::error::ErrorStack> {
        let mut name = X509NameBuilder::new()?;
        name.append_entry_by_text("CN", common_name)?;
        let name = name.build();
        let mut serial = BigNum::new()?;
        serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
        let mut x509 = X509::builder()?;
        x509.set_version(2)?;
        let serial = serial.to_asn1_integer()?;
        x509.set_serial_number(&serial)?;
        x509.set_subject_name(&name)?;
        x509.set_issuer_name(&name)?;
        x509.set_pubkey(&pkey)?;
        let not_before = Asn1Time::days_from_now(0)?;
        let not_after = Asn1Time::days_from_now(days)?;
        x509.set_not_before(&not_before)?;
        x509.set_not_after(&not_after)?;
        let ski = SubjectKeyIdentifier::new().build(&x509.x509v3_context(None, None))?;
        x509.append_extension(ski)?;
        x509.append_extension(BasicConstraints::new().critical().ca().build()?)?;
        x509.sign(&pkey, MessageDigest::sha256())?;
        Ok(x509.build())
    };
    let x509 = build().map_err(crypto("making the certificate"))?;
    let pem = x509.to_pem().map_err(crypto("encoding the certificate"))?;
    let cert = Certificate::from_pem(&pem)?;
    Ok(SigningKeys { key, cert })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_match_their_certificates() {
        let keys = generate(2048, 30, "ami test").unwrap();
        assert!(keys.key.matches(&keys.cert));
        assert_eq!(keys.cert.public_key().bits(), 2048);
        assert_eq!(keys.cert.subject(), "CN=ami test");
        let again = PrivateKey::from_pem(&keys.key.to_pem().unwrap()).unwrap();
        assert!(again.matches(&keys.cert));
        let pem = String::from_utf8(keys.key.to_pem().unwrap()).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    }

    #[test]
    fn parameters_are_checked() {
        for (bits, days, cn) in [
            (1024, 1, "x"),
            (2048, 0, "x"),
            (2048, 40_000, "x"),
            (2048, 1, ""),
        ] {
            assert!(matches!(
                generate(bits, days, cn),
                Err(Error::KeyParameters(_))
            ));
        }
    }
}
