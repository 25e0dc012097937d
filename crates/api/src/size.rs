//! Sizes as users write them: an integer with an optional `k`, `m`, `g` or `t` suffix (powers of
//! 1024, case-insensitive), as the original Convoy accepted. A trailing `b`/`B` (`10GB`, `512b`)
//! is tolerated.

use crate::ApiError;

/// Parses `"10G"`, `"512m"`, `"1048576"` into bytes.
pub fn parse_size(input: &str) -> Result<u64, ApiError> {
    let invalid = |why| ApiError::InvalidSize {
        input: input.to_string(),
        why,
    };
    let text = input.trim();
    if text.is_empty() {
        return Err(invalid("it is empty"));
    }
    let lower = text.to_ascii_lowercase();
    let lower = match lower.strip_suffix('b') {
        Some(rest) if !rest.is_empty() => rest.to_string(),
        _ => lower,
    };
    let (digits, shift) = match lower.as_bytes()[lower.len() - 1] {
        b'k' => (&lower[..lower.len() - 1], 10),
        b'm' => (&lower[..lower.len() - 1], 20),
        b'g' => (&lower[..lower.len() - 1], 30),
        b't' => (&lower[..lower.len() - 1], 40),
        b'0'..=b'9' => (&lower[..], 0),
        _ => return Err(invalid("unknown unit suffix")),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("not a whole number"));
    }
    let number: u64 = digits.parse().map_err(|_| invalid("number too large"))?;
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| invalid("number too large"))
}

/// Parses a bandwidth limit in bytes per second: a size as [`parse_size`] reads it, with an
/// optional `/s` (`"10M"`, `"10M/s"`, `"500k"`). Zero is refused: "no limit" is no option.
pub fn parse_rate(input: &str) -> Result<u64, ApiError> {
    let text = input.trim();
    let text = text.strip_suffix("/s").unwrap_or(text);
    match parse_size(text) {
        Ok(0) => Err(ApiError::InvalidSize {
            input: input.to_string(),
            why: "a rate must be more than 0 bytes/s (leave the option out for no limit)",
        }),
        Ok(rate) => Ok(rate),
        Err(ApiError::InvalidSize { why, .. }) => Err(ApiError::InvalidSize {
            input: input.to_string(),
            why,
        }),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_rate, parse_size};

    #[test]
    fn rates_are_sizes_per_second_and_never_zero() {
        assert_eq!(parse_rate("10M").unwrap(), 10 << 20);
        assert_eq!(parse_rate("10M/s").unwrap(), 10 << 20);
        assert_eq!(parse_rate(" 500k/s ").unwrap(), 500 << 10);
        let zero = parse_rate("0").unwrap_err().to_string();
        assert!(zero.contains("more than 0"), "{zero}");
        let bad = parse_rate("fast").unwrap_err().to_string();
        assert!(bad.contains("fast"), "{bad}");
    }

    #[test]
    fn parses_units_case_insensitively() {
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("1k").unwrap(), 1024);
        assert_eq!(parse_size("10M").unwrap(), 10 << 20);
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("2t").unwrap(), 2 << 40);
        assert_eq!(parse_size("1GB").unwrap(), 1 << 30);
        assert_eq!(parse_size(" 3g ").unwrap(), 3 << 30);
    }

    #[test]
    fn refuses_garbage_with_a_reason() {
        for bad in [
            "",
            "g",
            "1.5G",
            "-1",
            "10X",
            "ten",
            "99999999999999999999",
            "16777216T",
        ] {
            let err = parse_size(bad).unwrap_err().to_string();
            assert!(err.contains("invalid size"), "{bad}: {err}");
        }
    }
}
