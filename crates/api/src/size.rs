//! Sizes as users write them: an integer with an optional `k`, `m`, `g` or `t` suffix (powers of
//! 1024, case-insensitive), as the original Convoy accepted, and an optional trailing `b`/`B`
//! (`10GB`, `512b`). The syntax is `convoy_names::parse_size`, the one every convoy crate uses;
//! here its errors are the API's.

use crate::ApiError;

/// Parses `"10G"`, `"512m"`, `"512b"`, `"1048576"` into bytes (`"0"` is 0: callers that need a
/// size refuse it themselves, each with its own advice).
pub fn parse_size(input: &str) -> Result<u64, ApiError> {
    convoy_names::parse_size(input).map_err(|e| ApiError::InvalidSize {
        input: e.value,
        why: e.reason,
    })
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
    fn a_b_for_bytes_follows_a_number_or_a_unit() {
        assert_eq!(parse_size("512b").unwrap(), 512);
        assert_eq!(parse_size("512B").unwrap(), 512);
        assert_eq!(parse_size("10GB").unwrap(), 10 << 30);
        assert_eq!(parse_rate("512b/s").unwrap(), 512);
        let err = parse_size("512bb").unwrap_err().to_string();
        assert!(err.contains("invalid size \"512bb\""), "{err}");
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
