//! Parsing byte sizes given on the command line (`--size 2G`).

/// Parses a size in bytes with an optional binary unit: `1234` (bytes),
/// `512K`, `64M`, `2G`, `1T`, or the spellings `KiB`, `MiB`, `GiB`, `TiB`
/// (case-insensitive; a trailing `B` alone means bytes). Units are powers of
/// 1024. Decimal spellings such as `MB` are rejected because they are
/// ambiguous.
///
/// # Errors
/// A message for clap when the text is not a positive size or overflows.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!(
            "{text:?} is not a size: expected a whole number with an optional unit (K, M, G, T)"
        ));
    }
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        "kb" | "mb" | "gb" | "tb" => {
            return Err(format!(
                "{text:?}: decimal units are ambiguous, use {u} or {u}iB (powers of 1024)",
                u = unit[..1].to_ascii_uppercase()
            ))
        }
        _ if unit.starts_with(['.', ',']) => {
            return Err(format!(
                "{text:?}: only whole numbers are accepted (write 1536M for 1.5G)"
            ))
        }
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use K, M, G, T or KiB, MiB, GiB, TiB)"
            ))
        }
    };
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is too large"))?;
    let bytes = number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))?;
    if bytes == 0 {
        return Err("the size must be greater than zero".to_owned());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn plain_bytes() {
        assert_eq!(parse_size("1234"), Ok(1234));
        assert_eq!(parse_size("4096B"), Ok(4096));
    }

    #[test]
    fn binary_units() {
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("2gib"), Ok(2 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("3KiB"), Ok(3072));
        assert_eq!(parse_size("1TiB"), Ok(1 << 40));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "G", "1.5G", "-1", "12X", "1 G G", "0", "0M", "0x10"] {
            assert!(parse_size(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn rejects_fractions_with_a_hint() {
        let err = parse_size("1.5G").unwrap_err();
        assert!(err.contains("whole numbers"), "{err}");
    }

    #[test]
    fn rejects_decimal_units_with_a_hint() {
        let err = parse_size("10MB").unwrap_err();
        assert!(err.contains("M or MiB"), "{err}");
    }

    #[test]
    fn rejects_overflow() {
        assert!(parse_size("18446744073709551616").is_err());
        assert!(parse_size("16777216T").is_err());
        assert_eq!(parse_size("16777215T"), Ok(16_777_215 << 40));
    }
}
