//! Release verification: signatures made by test keys generated here, the
//! verifier's refusals (wrong key, tampering, SHA-1, expired and revoked
//! keys, unsigned files, dates), and `gpgv` as an independent oracle.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ami_deb::keyring::Keyring;
use ami_deb::release::{ReleaseError, UnverifiedRelease, VerifiedRelease};
use fixtures::repo::{rfc2822, SigHash, TestKey};

const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn release_text() -> String {
    format!(
        "Origin: ami-tests\nSuite: stable\nCodename: testing-codename\nDate: {}\nArchitectures: amd64 arm64\nComponents: main\nSHA256:\n {HASH} 4 main/binary-amd64/Packages\n",
        rfc2822(now_secs() - 60)
    )
}

fn keyring_of(key: &TestKey) -> Keyring {
    Keyring::from_bytes(&key.public_keyring(), "test keyring").unwrap()
}

fn verify_inline(signed: &str, keyring: &Keyring) -> Result<VerifiedRelease, ReleaseError> {
    UnverifiedRelease::parse(signed.as_bytes(), "test://dists/stable/InRelease")
        .unwrap()
        .verify(keyring, SystemTime::now())
}

fn no_good_signature(err: ReleaseError) -> Vec<String> {
    match err {
        ReleaseError::NoGoodSignature { url, reasons } => {
            assert_eq!(url, "test://dists/stable/InRelease");
            reasons
        }
        other => panic!("expected NoGoodSignature, got {other}"),
    }
}

#[test]
fn inrelease_signed_by_a_subkey_verifies() {
    let key = TestKey::generate(1);
    let text = release_text();
    let release = verify_inline(&key.clearsign(&text), &keyring_of(&key)).unwrap();
    assert!(!release.is_insecure());
    assert_eq!(release.text(), text);
    assert_eq!(release.signers().len(), 1);
    let signer = &release.signers()[0];
    assert_eq!(signer.key, key.signing_fingerprint());
    assert_eq!(signer.primary, key.fingerprint());
    assert_ne!(
        signer.key, signer.primary,
        "the subkey signs, not the primary"
    );
    assert_eq!(release.codename(), Some("testing-codename"));
    assert_eq!(release.architectures(), ["amd64", "arm64"]);
    assert_eq!(
        release.entry("main/binary-amd64/Packages").unwrap().sha256,
        HASH
    );
}

#[test]
fn armored_keyrings_and_primary_signing_keys_work() {
    let key = TestKey::builder().seed(2).primary_signs().build();
    let keyring = Keyring::from_bytes(key.public_armored().as_bytes(), "armored").unwrap();
    assert_eq!(keyring.fingerprints(), [key.fingerprint()]);
    let release = verify_inline(&key.clearsign(&release_text()), &keyring).unwrap();
    assert_eq!(release.signers()[0].key, key.fingerprint());
}

#[test]
fn detached_signatures_verify_over_the_exact_bytes() {
    let key = TestKey::generate(3);
    let text = release_text();
    let sig = key.detached_sign(text.as_bytes());
    let release = UnverifiedRelease::parse(text.as_bytes(), "test://Release")
        .unwrap()
        .with_detached_signature(&sig, "test://Release.gpg")
        .unwrap()
        .verify(&keyring_of(&key), SystemTime::now())
        .unwrap();
    assert_eq!(release.signers()[0].key, key.signing_fingerprint());

    let other = text.replace("amd64 arm64", "amd64 armel");
    let err = UnverifiedRelease::parse(other.as_bytes(), "test://Release")
        .unwrap()
        .with_detached_signature(&sig, "test://Release.gpg")
        .unwrap()
        .verify(&keyring_of(&key), SystemTime::now())
        .unwrap_err();
    assert!(err.to_string().contains("BAD signature"), "{err}");
    assert!(
        err.to_string()
            .starts_with("test://Release: no good signature"),
        "{err}"
    );
}

#[test]
fn tampered_text_is_a_bad_signature() {
    let key = TestKey::generate(4);
    let signed = key.clearsign(&release_text());
    let tampered = signed.replace(HASH, &HASH.replace('9', "8"));
    assert_ne!(signed, tampered);
    let reasons = no_good_signature(verify_inline(&tampered, &keyring_of(&key)).unwrap_err());
    assert_eq!(reasons.len(), 1);
    assert!(
        reasons[0].contains("does not match the signed data (BAD signature)"),
        "{reasons:?}"
    );
}

#[test]
fn a_key_outside_the_keyring_is_refused() {
    let key = TestKey::generate(5);
    let stranger = TestKey::generate(6);
    let reasons = no_good_signature(
        verify_inline(&key.clearsign(&release_text()), &keyring_of(&stranger)).unwrap_err(),
    );
    assert_eq!(
        reasons,
        [format!(
            "signature 1 was made by key {}, which is not in the keyring",
            key.signing_fingerprint()
        )]
    );
    // With both keys, the right one is found.
    let mut both = keyring_of(&stranger);
    both.extend(keyring_of(&key));
    assert!(verify_inline(&key.clearsign(&release_text()), &both).is_ok());
    // An empty keyring says so.
    let reasons = no_good_signature(
        verify_inline(&key.clearsign(&release_text()), &Keyring::new()).unwrap_err(),
    );
    assert!(
        reasons.iter().any(|r| r == "the keyring is empty"),
        "{reasons:?}"
    );
}

#[test]
fn sha1_data_signatures_are_refused() {
    let key = TestKey::generate(7);
    let signed = key.clearsign_with(&release_text(), SigHash::Sha1);
    let reasons = no_good_signature(verify_inline(&signed, &keyring_of(&key)).unwrap_err());
    assert!(
        reasons[0].contains("insecure hash algorithm SHA1"),
        "{reasons:?}"
    );
    // SHA-512 is fine.
    let signed = key.clearsign_with(&release_text(), SigHash::Sha512);
    assert!(verify_inline(&signed, &keyring_of(&key)).is_ok());
}

#[test]
fn expired_keys_are_refused() {
    let day = 86_400;
    let subkey = TestKey::builder()
        .seed(8)
        .created_ago(3 * day)
        .expires_after(day)
        .build();
    let reasons = no_good_signature(
        verify_inline(&subkey.clearsign(&release_text()), &keyring_of(&subkey)).unwrap_err(),
    );
    assert!(
        reasons[0].contains(&format!(
            "subkey {} expired on ",
            subkey.signing_fingerprint()
        )),
        "{reasons:?}"
    );
    // Not yet expired: fine.
    let young = TestKey::builder()
        .seed(8)
        .created_ago(3 * day)
        .expires_after(4 * day)
        .build();
    assert!(verify_inline(&young.clearsign(&release_text()), &keyring_of(&young)).is_ok());

    let primary = TestKey::builder()
        .seed(9)
        .primary_signs()
        .created_ago(3 * day)
        .expires_after(day)
        .build();
    let reasons = no_good_signature(
        verify_inline(&primary.clearsign(&release_text()), &keyring_of(&primary)).unwrap_err(),
    );
    assert!(
        reasons[0].contains(&format!(
            "certificate {} expired on ",
            primary.fingerprint()
        )),
        "{reasons:?}"
    );
}

#[test]
fn revoked_keys_are_refused() {
    let key = TestKey::builder().seed(10).revoked().build();
    let reasons = no_good_signature(
        verify_inline(&key.clearsign(&release_text()), &keyring_of(&key)).unwrap_err(),
    );
    assert!(
        reasons[0].contains(&format!("certificate {} is revoked", key.fingerprint())),
        "{reasons:?}"
    );
}

#[test]
fn unsigned_files_need_the_insecure_route() {
    let text = release_text();
    let unverified = UnverifiedRelease::parse(text.as_bytes(), "test://Release").unwrap();
    assert!(!unverified.is_signed());
    let err = unverified
        .clone()
        .verify(&keyring_of(&TestKey::generate(11)), SystemTime::now())
        .unwrap_err();
    assert!(matches!(err, ReleaseError::Unsigned { .. }), "{err}");
    assert!(
        err.to_string().starts_with("test://Release is not signed"),
        "{err}"
    );
    let release = unverified
        .insecure_skip_signature(SystemTime::now())
        .unwrap();
    assert!(release.is_insecure());
    assert!(release.signers().is_empty());
}

#[test]
fn framing_outside_the_signed_message_is_refused() {
    let key = TestKey::generate(12);
    let signed = key.clearsign(&release_text());
    // Trailing data after the signature block.
    let trailing = format!("{signed}\nSHA256:\n {HASH} 1 evil\n");
    let err = UnverifiedRelease::parse(trailing.as_bytes(), "test://InRelease").unwrap_err();
    assert!(matches!(err, ReleaseError::Armor { .. }), "{err}");
    // Leading data: not a cleartext message at all, so it is unsigned.
    let leading = format!("Suite: evil\n{signed}");
    let unverified = UnverifiedRelease::parse(leading.as_bytes(), "test://InRelease").unwrap();
    assert!(!unverified.is_signed());
}

#[test]
fn dates_of_signed_files_are_checked() {
    let key = TestKey::generate(13);
    let future = release_text().replace(&rfc2822(now_secs() - 60), &rfc2822(now_secs() + 3600));
    let err = verify_inline(&key.clearsign(&future), &keyring_of(&key)).unwrap_err();
    assert!(matches!(err, ReleaseError::NotYetValid { .. }), "{err}");
    let expired = release_text().replace(
        "Architectures",
        &format!("Valid-Until: {}\nArchitectures", rfc2822(now_secs() - 1)),
    );
    let err = verify_inline(&key.clearsign(&expired), &keyring_of(&key)).unwrap_err();
    assert!(matches!(err, ReleaseError::Expired { .. }), "{err}");
    // And `now` is a parameter: the same file verified a day earlier.
    let day_before = SystemTime::now() - Duration::from_secs(86_400);
    let signed = key.clearsign(&expired);
    let err = UnverifiedRelease::parse(signed.as_bytes(), "x")
        .unwrap()
        .verify(&keyring_of(&key), day_before)
        .unwrap_err();
    // A day before, the Date (a minute ago) is in the future.
    assert!(matches!(err, ReleaseError::NotYetValid { .. }), "{err}");
}

fn gpgv(keyring: &Path, files: &[&Path]) -> bool {
    let output = Command::new("gpgv")
        .arg("--keyring")
        .arg(keyring)
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("cannot run gpgv (install the gpgv package): {e}"));
    output.status.success()
}

#[test]
fn gpgv_accepts_what_the_test_keys_sign() {
    let dir = tempfile::tempdir().unwrap();
    for (i, key) in [
        TestKey::generate(14),
        TestKey::builder().seed(15).primary_signs().build(),
    ]
    .iter()
    .enumerate()
    {
        let keyring = dir.path().join(format!("keyring{i}.gpg"));
        std::fs::write(&keyring, key.public_keyring()).unwrap();
        let text = release_text();
        let inrelease = dir.path().join(format!("InRelease{i}"));
        std::fs::write(&inrelease, key.clearsign(&text)).unwrap();
        assert!(gpgv(&keyring, &[&inrelease]), "gpgv refused InRelease {i}");
        let release = dir.path().join(format!("Release{i}"));
        let sig = dir.path().join(format!("Release{i}.gpg"));
        std::fs::write(&release, &text).unwrap();
        std::fs::write(&sig, key.detached_sign(text.as_bytes())).unwrap();
        assert!(
            gpgv(&keyring, &[&sig, &release]),
            "gpgv refused Release.gpg {i}"
        );
        // The oracle does refuse tampering.
        std::fs::write(&release, text.replace("amd64", "armel")).unwrap();
        assert!(
            !gpgv(&keyring, &[&sig, &release]),
            "gpgv accepted a tampered Release {i}"
        );
    }
}
