//! The two checksum primitives of ext4.
//!
//! * [`crc32c()`]: ext4's "crc32c" is the raw reflected CRC-32C update
//!   (Castagnoli polynomial 0x82F63B78) **without** the final inversion,
//!   started from a caller-given seed (kernel `ext4_chksum`). In terms of
//!   the standard CRC-32C (`crc32c_append`, which inverts on entry and exit):
//!   `raw(seed, data) = !crc32c_append(!seed, data)`.
//!   Every metadata_csum checksum chains from the filesystem seed
//!   `raw(0xFFFF_FFFF, s_uuid)`.
//! * [`crc16()`]: the group-descriptor checksum of the `uninit_bg`
//!   (`gdt_csum`) feature: CRC-16 with the reflected polynomial 0xA001
//!   (the "ANSI"/IBM CRC), initial value 0xFFFF, no final inversion
//!   (e2fsprogs `lib/ext2fs/crc16.c`).
//!
//! The CRC-32C itself comes from the `crc32c` crate (hardware-accelerated
//! with SSE4.2); CRC-16 is ten lines, so it is written here.

/// ext4's raw CRC-32C update of `crc` with `data` (no final inversion).
pub fn crc32c(crc: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!crc, data)
}

/// The metadata_csum seed of a filesystem with this UUID.
pub fn csum_seed(uuid: &[u8; 16]) -> u32 {
    crc32c(!0, uuid)
}

/// CRC-16 (poly 0xA001 reflected) update of `crc` with `data`.
pub fn crc16(mut crc: u16, data: &[u8]) -> u16 {
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // The standard CRC-32C of "123456789" is 0xE3069283.
        assert_eq!(!crc32c(!0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn crc16_matches_the_arc_check_value() {
        // CRC-16/ARC ("123456789", init 0) is 0xBB3D; MODBUS (init 0xFFFF) 0x4B37.
        assert_eq!(crc16(0, b"123456789"), 0xBB3D);
        assert_eq!(crc16(0xFFFF, b"123456789"), 0x4B37);
    }
}
