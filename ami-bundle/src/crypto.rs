//! Keys and certificates, and the RSA operations of the format.
//!
//! A bundle uses RSA in three ways (notes §8 and §10):
//!
//! * the AES key and IV, each as **32 lowercase hex characters** (not the
//!   16 raw bytes), are encrypted with RSA PKCS#1 v1.5 (type 2 padding) for
//!   the EC2 certificate and for the user's certificate;
//! * the manifest is signed with the user's private key (RSA PKCS#1 v1.5
//!   with SHA-1);
//! * unbundling decrypts the user's copy of the key and IV with the private
//!   key.
//!
//! Only public keys are taken from certificates: their dates, chains and
//! extensions are never checked (the EC2 certificates Amazon ships expired
//! long ago and are still the ones EC2 uses).
//!
//! The random padding of the PKCS#1 v1.5 encryption is drawn from the
//! caller's random source (the padding is built here and the raw RSA
//! operation is OpenSSL's), so that a seeded source gives a byte-identical
//! manifest.

use std::fmt;

use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private, Public};
use openssl::rsa::{Padding, Rsa};
use openssl::sign::{Signer, Verifier};
use openssl::x509::X509;
use rand::{CryptoRng, RngCore};

use crate::error::{Error, Result};

/// EC2's certificate for the commercial regions (`cert-ec2.pem` of
/// Amazon's AMI tools).
const EC2_STANDARD_PEM: &str = include_str!("../certs/cert-ec2.pem");
/// EC2's certificate for `us-gov-west-1` (`cert-ec2-gov.pem`).
const EC2_GOV_PEM: &str = include_str!("../certs/cert-ec2-gov.pem");
/// EC2's certificate for `cn-north-1` (`cert-ec2-cn-north-1.pem`).
const EC2_CHINA_PEM: &str = include_str!("../certs/cert-ec2-cn-north-1.pem");

/// The EC2 certificates shipped with the crate: which one encrypts the
/// bundle key for EC2 depends on the region the AMI is registered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ec2Cert {
    /// All commercial regions (the default).
    Standard,
    /// AWS GovCloud (US-West), `us-gov-west-1`.
    GovCloud,
    /// AWS China (Beijing), `cn-north-1`.
    China,
}

impl Ec2Cert {
    /// The certificate for `region`: [`Ec2Cert::GovCloud`] for
    /// `us-gov-west-1`, [`Ec2Cert::China`] for `cn-north-1`,
    /// [`Ec2Cert::Standard`] for other regions.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownRegion`] for the other GovCloud and China regions
    /// (`us-gov-*`, `cn-*`), whose certificates are not public: give the
    /// certificate explicitly there.
    pub fn for_region(region: &str) -> Result<Ec2Cert> {
        match region {
            "us-gov-west-1" => Ok(Ec2Cert::GovCloud),
            "cn-north-1" => Ok(Ec2Cert::China),
            r if r.starts_with("us-gov-") || r.starts_with("cn-") || r.is_empty() => {
                Err(Error::UnknownRegion(r.to_owned()))
            }
            _ => Ok(Ec2Cert::Standard),
        }
    }

    /// The certificate in PEM form, as Amazon ships it.
    pub fn pem(self) -> &'static str {
        match self {
            Ec2Cert::Standard => EC2_STANDARD_PEM,
            Ec2Cert::GovCloud => EC2_GOV_PEM,
            Ec2Cert::China => EC2_CHINA_PEM,
        }
    }

    /// The parsed certificate.
    ///
    /// # Errors
    ///
    /// None in practice: the embedded certificates are valid (a test
    /// parses all three).
    pub fn certificate(self) -> Result<Certificate> {
        Certificate::from_pem_named(self.pem().as_bytes(), "EC2")
    }
}

/// An X.509 certificate holding an RSA public key.
#[derive(Clone)]
pub struct Certificate {
    x509: X509,
    key: PublicKey,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("subject", &self.subject())
            .field("bits", &self.key.bits())
            .finish()
    }
}

impl Certificate {
    /// Reads a PEM certificate (the first one, if there are several).
    ///
    /// # Errors
    ///
    /// [`Error::Certificate`] if it is not a PEM X.509 certificate,
    /// [`Error::NotRsa`] if its key is not RSA.
    pub fn from_pem(pem: &[u8]) -> Result<Certificate> {
        Certificate::from_pem_named(pem, "user")
    }

    /// [`Certificate::from_pem`] with the name errors give the certificate.
    pub(crate) fn from_pem_named(pem: &[u8], what: &str) -> Result<Certificate> {
        let x509 = X509::from_pem(pem).map_err(|source| Error::Certificate {
            what: what.to_owned(),
            source,
        })?;
        let pkey = x509.public_key().map_err(|source| Error::Certificate {
            what: what.to_owned(),
            source,
        })?;
        let rsa = pkey
            .rsa()
            .map_err(|_| Error::NotRsa(format!("key of the {what} certificate")))?;
        Ok(Certificate {
            x509,
            key: PublicKey { rsa },
        })
    }

    /// The certificate's public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.key
    }

    /// The subject, one line, in OpenSSL's `key=value, ...` form.
    pub fn subject(&self) -> String {
        self.x509
            .subject_name()
            .entries()
            .map(|e| {
                let key = e.object().nid().short_name().unwrap_or("?");
                let value = e.data().to_string().unwrap_or_default();
                format!("{key}={value}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The certificate in PEM form.
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] if OpenSSL cannot encode it (should not happen).
    pub fn to_pem(&self) -> Result<Vec<u8>> {
        self.x509.to_pem().map_err(|source| Error::Crypto {
            what: "encoding a certificate",
            source,
        })
    }
}

/// An RSA public key.
#[derive(Clone)]
pub struct PublicKey {
    rsa: Rsa<Public>,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("bits", &self.bits())
            .finish()
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &PublicKey) -> bool {
        self.rsa.n() == other.rsa.n() && self.rsa.e() == other.rsa.e()
    }
}

impl Eq for PublicKey {}

impl PublicKey {
    /// Reads a PEM public key (`BEGIN PUBLIC KEY`, as `openssl pkey
    /// -pubout` writes).
    ///
    /// # Errors
    ///
    /// [`Error::Certificate`] if it cannot be read, [`Error::NotRsa`] if it
    /// is not RSA.
    pub fn from_pem(pem: &[u8]) -> Result<PublicKey> {
        let pkey = PKey::public_key_from_pem(pem).map_err(|source| Error::Certificate {
            what: "public key".to_owned(),
            source,
        })?;
        let rsa = pkey
            .rsa()
            .map_err(|_| Error::NotRsa("public key".to_owned()))?;
        Ok(PublicKey { rsa })
    }

    /// The key size in bits (the modulus length).
    pub fn bits(&self) -> u32 {
        self.rsa.n().num_bits().unsigned_abs()
    }

    /// The key in PEM form (`BEGIN PUBLIC KEY`).
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] if OpenSSL cannot encode it (should not happen).
    pub fn to_pem(&self) -> Result<Vec<u8>> {
        self.rsa
            .public_key_to_pem()
            .map_err(|source| Error::Crypto {
                what: "encoding a public key",
                source,
            })
    }

    /// RSA encryption with PKCS#1 v1.5 type 2 padding whose random bytes
    /// come from `rng` (RFC 8017 §7.2.1).
    pub(crate) fn encrypt_pkcs1(
        &self,
        message: &[u8],
        rng: &mut (impl RngCore + CryptoRng + ?Sized),
    ) -> Result<Vec<u8>> {
        let k = self.rsa.size() as usize;
        // 0x00 0x02 PS 0x00 M with at least 8 bytes of PS.
        if message.len() + 11 > k {
            return Err(Error::KeyParameters(format!(
                "a {}-bit RSA key is too small to encrypt {} bytes",
                self.bits(),
                message.len()
            )));
        }
        let mut block = vec![0u8; k];
        block[1] = 2;
        let pad_end = k - message.len() - 1;
        for byte in &mut block[2..pad_end] {
            // Padding bytes must be non-zero.
            let mut b = [0u8];
            while b[0] == 0 {
                rng.fill_bytes(&mut b);
            }
            *byte = b[0];
        }
        block[pad_end] = 0;
        block[pad_end + 1..].copy_from_slice(message);
        let mut out = vec![0u8; k];
        let n = self
            .rsa
            .public_encrypt(&block, &mut out, Padding::NONE)
            .map_err(|source| Error::Crypto {
                what: "RSA encryption",
                source,
            })?;
        out.truncate(n);
        Ok(out)
    }

    /// Checks an RSA PKCS#1 v1.5 SHA-1 signature of `data`.
    pub fn verify_sha1(&self, data: &[u8], signature: &[u8]) -> bool {
        let Ok(pkey) = PKey::from_rsa(self.rsa.clone()) else {
            return false;
        };
        let Ok(mut verifier) = Verifier::new(MessageDigest::sha1(), &pkey) else {
            return false;
        };
        verifier.verify_oneshot(signature, data).unwrap_or(false)
    }
}

/// An RSA private key.
#[derive(Clone)]
pub struct PrivateKey {
    rsa: Rsa<Private>,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key itself.
        f.debug_struct("PrivateKey")
            .field("bits", &self.public_key().bits())
            .finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// Reads an unencrypted PEM private key: PKCS#8 (`BEGIN PRIVATE KEY`,
    /// what `openssl req -nodes` and `openssl genpkey` write) or PKCS#1
    /// (`BEGIN RSA PRIVATE KEY`, what `openssl genrsa` wrote before
    /// OpenSSL 3).
    ///
    /// # Errors
    ///
    /// [`Error::PrivateKey`] if it cannot be read (also when it is
    /// encrypted with a passphrase), [`Error::NotRsa`] if it is not RSA.
    pub fn from_pem(pem: &[u8]) -> Result<PrivateKey> {
        let pkey = PKey::private_key_from_pem(pem).map_err(Error::PrivateKey)?;
        let rsa = pkey
            .rsa()
            .map_err(|_| Error::NotRsa("private key".to_owned()))?;
        Ok(PrivateKey { rsa })
    }

    pub(crate) fn from_rsa(rsa: Rsa<Private>) -> PrivateKey {
        PrivateKey { rsa }
    }

    pub(crate) fn pkey(&self) -> Result<PKey<Private>> {
        PKey::from_rsa(self.rsa.clone()).map_err(|source| Error::Crypto {
            what: "using the private key",
            source,
        })
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        // Cannot fail for a valid key: only copies n and e.
        let n = self.rsa.n().to_owned();
        let e = self.rsa.e().to_owned();
        match (n, e) {
            (Ok(n), Ok(e)) => match Rsa::from_public_components(n, e) {
                Ok(rsa) => PublicKey { rsa },
                Err(_) => unreachable_key(),
            },
            _ => unreachable_key(),
        }
    }

    /// The key in PEM form, PKCS#8 (`BEGIN PRIVATE KEY`).
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] if OpenSSL cannot encode it (should not happen).
    pub fn to_pem(&self) -> Result<Vec<u8>> {
        self.pkey()?
            .private_key_to_pem_pkcs8()
            .map_err(|source| Error::Crypto {
                what: "encoding the private key",
                source,
            })
    }

    /// Whether this key belongs to `cert` (same public key).
    pub fn matches(&self, cert: &Certificate) -> bool {
        self.public_key() == *cert.public_key()
    }

    /// RSA PKCS#1 v1.5 signature of `data` with SHA-1.
    pub(crate) fn sign_sha1(&self, data: &[u8]) -> Result<Vec<u8>> {
        let pkey = self.pkey()?;
        let crypto = |source| Error::Crypto {
            what: "signing the manifest",
            source,
        };
        let mut signer = Signer::new(MessageDigest::sha1(), &pkey).map_err(crypto)?;
        signer.sign_oneshot_to_vec(data).map_err(crypto)
    }

    /// RSA PKCS#1 v1.5 decryption; `None` if the padding is wrong (another
    /// key, or corrupt data).
    pub(crate) fn decrypt_pkcs1(&self, data: &[u8]) -> Option<Vec<u8>> {
        if data.len() != self.rsa.size() as usize {
            return None;
        }
        let mut out = vec![0u8; data.len()];
        let n = self
            .rsa
            .private_decrypt(data, &mut out, Padding::PKCS1)
            .ok()?;
        out.truncate(n);
        Some(out)
    }
}

#[cold]
fn unreachable_key() -> ! {
    panic!("OpenSSL could not copy the public half of a valid RSA key")
}

/// The AES-128 key and IV of a bundle, kept as the 32-character lowercase
/// hex strings the format wraps.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SymmetricKey {
    pub key_hex: String,
    pub iv_hex: String,
}

impl fmt::Debug for SymmetricKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SymmetricKey(..)")
    }
}

impl SymmetricKey {
    /// 16 random bytes for the key, then 16 for the IV.
    pub fn generate(rng: &mut (impl RngCore + CryptoRng + ?Sized)) -> SymmetricKey {
        let mut key = [0u8; 16];
        let mut iv = [0u8; 16];
        rng.fill_bytes(&mut key);
        rng.fill_bytes(&mut iv);
        SymmetricKey {
            key_hex: crate::hex::encode(&key),
            iv_hex: crate::hex::encode(&iv),
        }
    }

    /// From the hex strings unwrapped from a manifest; `None` unless both
    /// are 32 hex digits.
    pub fn from_hex(key: &[u8], iv: &[u8]) -> Option<SymmetricKey> {
        let valid = |s: &[u8]| s.len() == 32 && s.iter().all(u8::is_ascii_hexdigit);
        if !valid(key) || !valid(iv) {
            return None;
        }
        Some(SymmetricKey {
            key_hex: String::from_utf8_lossy(key).to_ascii_lowercase(),
            iv_hex: String::from_utf8_lossy(iv).to_ascii_lowercase(),
        })
    }

    pub fn key(&self) -> [u8; 16] {
        to_16(&self.key_hex)
    }

    pub fn iv(&self) -> [u8; 16] {
        to_16(&self.iv_hex)
    }
}

fn to_16(hex: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    if let Some(bytes) = crate::hex::decode(hex) {
        if bytes.len() == 16 {
            out.copy_from_slice(&bytes);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn embedded_ec2_certificates_parse() {
        assert_eq!(
            Ec2Cert::Standard.certificate().unwrap().public_key().bits(),
            1024
        );
        assert_eq!(
            Ec2Cert::GovCloud.certificate().unwrap().public_key().bits(),
            1024
        );
        assert_eq!(
            Ec2Cert::China.certificate().unwrap().public_key().bits(),
            2048
        );
        assert!(Ec2Cert::GovCloud
            .certificate()
            .unwrap()
            .subject()
            .contains("CN=EC2 AMI Authority"));
    }

    #[test]
    fn regions_pick_certificates() {
        assert_eq!(Ec2Cert::for_region("us-east-1").unwrap(), Ec2Cert::Standard);
        assert_eq!(Ec2Cert::for_region("eu-west-3").unwrap(), Ec2Cert::Standard);
        assert_eq!(
            Ec2Cert::for_region("us-gov-west-1").unwrap(),
            Ec2Cert::GovCloud
        );
        assert_eq!(Ec2Cert::for_region("cn-north-1").unwrap(), Ec2Cert::China);
        for unknown in ["us-gov-east-1", "cn-northwest-1", ""] {
            assert!(matches!(
                Ec2Cert::for_region(unknown),
                Err(Error::UnknownRegion(_))
            ));
        }
    }

    #[test]
    fn pkcs1_padding_round_trips_and_is_deterministic() {
        let rsa = Rsa::generate(1024).unwrap();
        let key = PrivateKey::from_rsa(rsa);
        let public = key.public_key();
        let message = b"00112233445566778899aabbccddeeff";
        let a = public
            .encrypt_pkcs1(message, &mut ChaCha20Rng::seed_from_u64(1))
            .unwrap();
        let b = public
            .encrypt_pkcs1(message, &mut ChaCha20Rng::seed_from_u64(1))
            .unwrap();
        let c = public
            .encrypt_pkcs1(message, &mut ChaCha20Rng::seed_from_u64(2))
            .unwrap();
        assert_eq!(a.len(), 128);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(key.decrypt_pkcs1(&a).unwrap(), message);
        assert_eq!(key.decrypt_pkcs1(&c).unwrap(), message);
        let other = PrivateKey::from_rsa(Rsa::generate(1024).unwrap());
        assert_ne!(other.decrypt_pkcs1(&a).as_deref(), Some(&message[..]));
    }

    #[test]
    fn signatures_verify_only_with_the_right_key_and_data() {
        let key = PrivateKey::from_rsa(Rsa::generate(1024).unwrap());
        let sig = key.sign_sha1(b"signed text").unwrap();
        assert!(key.public_key().verify_sha1(b"signed text", &sig));
        assert!(!key.public_key().verify_sha1(b"signed texT", &sig));
        let other = PrivateKey::from_rsa(Rsa::generate(1024).unwrap());
        assert!(!other.public_key().verify_sha1(b"signed text", &sig));
    }

    #[test]
    fn symmetric_keys_are_hex() {
        let k = SymmetricKey::generate(&mut ChaCha20Rng::seed_from_u64(7));
        assert_eq!(k.key_hex.len(), 32);
        assert!(k
            .key_hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_ne!(k.key_hex, k.iv_hex);
        assert_eq!(crate::hex::encode(&k.key()), k.key_hex);
        assert!(SymmetricKey::from_hex(b"00", k.iv_hex.as_bytes()).is_none());
        let parsed =
            SymmetricKey::from_hex(k.key_hex.to_uppercase().as_bytes(), k.iv_hex.as_bytes())
                .unwrap();
        assert_eq!(parsed, k);
    }
}
