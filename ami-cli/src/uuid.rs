//! Filesystem UUIDs: parsing, printing, random and reproducible ones.

use std::fs::File;
use std::io::{self, Read};

use sha2::{Digest, Sha256};

/// Parses the standard `8-4-4-4-12` hex form (either case).
///
/// # Errors
/// A message for clap when the text is not a UUID or is the nil UUID (which
/// the ext4 writer would replace by a derived one).
pub fn parse_uuid(text: &str) -> Result<[u8; 16], String> {
    let bad = || format!("{text:?} is not a UUID (expected the form 8-4-4-4-12 in hex digits)");
    let bytes = text.as_bytes();
    if bytes.len() != 36 {
        return Err(bad());
    }
    let mut uuid = [0u8; 16];
    let mut nibbles = 0usize;
    for (i, &c) in bytes.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if c != b'-' {
                return Err(bad());
            }
            continue;
        }
        let value = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return Err(bad()),
        };
        uuid[nibbles / 2] |= if nibbles.is_multiple_of(2) {
            value << 4
        } else {
            value
        };
        nibbles += 1;
    }
    if uuid == [0; 16] {
        return Err("the nil UUID cannot be used as a filesystem UUID".to_owned());
    }
    Ok(uuid)
}

/// Formats a UUID in the lower-case `8-4-4-4-12` form.
pub fn format_uuid(uuid: &[u8; 16]) -> String {
    let mut out = String::with_capacity(36);
    for (i, byte) in uuid.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// Sets the version nibble and the RFC 4122 / 9562 variant bits.
fn set_version(mut uuid: [u8; 16], version: u8) -> [u8; 16] {
    uuid[6] = (uuid[6] & 0x0f) | (version << 4);
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    uuid
}

/// A random (version 4) UUID from the kernel's random source.
///
/// # Errors
/// Reading `/dev/urandom` failed.
pub fn random_uuid() -> io::Result<[u8; 16]> {
    let mut uuid = [0u8; 16];
    File::open("/dev/urandom")?.read_exact(&mut uuid)?;
    Ok(set_version(uuid, 4))
}

/// A UUID that depends only on the source date epoch and the label, so two
/// builds of the same inputs get the same one: the first 16 bytes of
/// SHA-256 over a fixed domain string, the epoch in decimal and the label,
/// marked as a version-8 (custom) UUID.
pub fn derived_uuid(source_date_epoch: i64, label: &[u8]) -> [u8; 16] {
    let mut hash = Sha256::new();
    hash.update(b"ami mkfs filesystem uuid\0");
    hash.update(source_date_epoch.to_string().as_bytes());
    hash.update(b"\0");
    hash.update(label);
    let digest = hash.finalize();
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&digest[..16]);
    set_version(uuid, 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format_round_trip() {
        let text = "0123abcd-4567-89ef-ABCD-0123456789ab";
        let uuid = parse_uuid(text).unwrap();
        assert_eq!(uuid[0], 0x01);
        assert_eq!(uuid[3], 0xcd);
        assert_eq!(uuid[15], 0xab);
        assert_eq!(format_uuid(&uuid), text.to_ascii_lowercase());
    }

    #[test]
    fn parse_rejects_malformed() {
        for bad in [
            "",
            "0123abcd456789efabcd0123456789ab",
            "0123abcd-4567-89ef-abcd-0123456789a",
            "0123abcd-4567-89ef-abcd-0123456789abc",
            "0123abcd+4567-89ef-abcd-0123456789ab",
            "0123abcd-4567-89ef-abcd-0123456789ag",
            "{0123abc-4567-89ef-abcd-0123456789a}",
            "00000000-0000-0000-0000-000000000000",
        ] {
            assert!(parse_uuid(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn random_uuids_are_version_4_and_differ() {
        let a = random_uuid().unwrap();
        let b = random_uuid().unwrap();
        assert_ne!(a, b);
        assert_eq!(a[6] >> 4, 4);
        assert_eq!(a[8] >> 6, 0b10);
    }

    #[test]
    fn derived_uuids_are_stable_and_depend_on_inputs() {
        let a = derived_uuid(1_700_000_000, b"root");
        assert_eq!(a, derived_uuid(1_700_000_000, b"root"));
        assert_ne!(a, derived_uuid(1_700_000_001, b"root"));
        assert_ne!(a, derived_uuid(1_700_000_000, b"boot"));
        assert_eq!(a[6] >> 4, 8);
        assert_eq!(a[8] >> 6, 0b10);
        // Pinned so that a change of the derivation (which changes every
        // reproducible image) is a deliberate one.
        // (Checked independently: the first 16 bytes of
        // sha256("ami mkfs filesystem uuid\01700000000\0root") with the
        // version and variant bits set.)
        assert_eq!(format_uuid(&a), "f851a698-9c6d-8ee7-a5e4-9bf190fd4499");
    }
}
