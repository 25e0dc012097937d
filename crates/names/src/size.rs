//! Sizes as users write them.

/// A size that cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid size {value:?}: {reason}")]
pub struct SizeError {
    /// The text given.
    pub value: String,
    /// Why it was refused.
    pub reason: &'static str,
}

/// Parses a size into bytes: an integer with an optional `k`, `m`, `g` or `t` suffix (powers of
/// 1024, case-insensitive), optionally followed by `b`/`B` — `4096`, `512b` (512 bytes), `64m`,
/// `10G`, `10GB`. Spaces around it are ignored. Zero parses (whether a zero size means anything
/// is the caller's to say).
///
/// # Errors
/// [`SizeError`] for an empty text, an unknown unit, a number that is not whole and
/// non-negative (`1.5G`, `-1`), or a size over 64 bits.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let bad = |reason| SizeError {
        value: text.to_owned(),
        reason,
    };
    let t = text.trim();
    // `b` for bytes, after a number (`512b`) or a unit (`10GB`).
    let t = match t.strip_suffix(['b', 'B']) {
        Some(rest) if !rest.is_empty() => rest,
        _ => t,
    };
    let (digits, shift) = match t.chars().last() {
        None => return Err(bad("it is empty")),
        Some(c) if c.is_ascii_digit() => (t, 0),
        Some(c) => {
            let shift = match c.to_ascii_lowercase() {
                'k' => 10,
                'm' => 20,
                'g' => 30,
                't' => 40,
                _ => return Err(bad("the unit must be k, m, g or t (powers of 1024)")),
            };
            (&t[..t.len() - 1], shift)
        }
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(
            "expected a whole number with an optional k/m/g/t suffix",
        ));
    }
    let number: u64 = digits
        .parse()
        .map_err(|_| bad("the size overflows 64 bits"))?;
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| bad("the size overflows 64 bits"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_sizes() {
        for (text, bytes) in [
            ("0", 0),
            ("4096", 4096),
            ("512b", 512),
            ("512B", 512),
            ("1k", 1 << 10),
            ("1K", 1 << 10),
            ("1kb", 1 << 10),
            ("64m", 64 << 20),
            ("10G", 10 << 30),
            ("10GB", 10 << 30),
            ("10gB", 10 << 30),
            ("2t", 2 << 40),
            (" 3g ", 3 << 30),
            ("16777215t", 16_777_215 << 40),
            ("18446744073709551615", u64::MAX),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text:?}");
        }
    }

    #[test]
    fn refused_sizes_say_why() {
        for (text, why) in [
            ("", "empty"),
            ("  ", "empty"),
            ("b", "unit"),
            ("g", "whole number"),
            ("gb", "whole number"),
            ("1x", "unit"),
            ("10X", "unit"),
            ("1.5G", "whole number"),
            ("1.5", "whole number"),
            ("-1", "whole number"),
            ("+1", "whole number"),
            ("1 G", "whole number"),
            ("ten", "unit"),
            ("512bb", "unit"),
            ("10GiB", "unit"),
            ("99999999999999999999", "overflows"),
            ("18446744073709551616", "overflows"),
            ("16777216t", "overflows"),
            ("16777216TB", "overflows"),
        ] {
            let e = parse_size(text).unwrap_err();
            assert_eq!(e.value, text);
            assert!(e.reason.contains(why), "{text:?}: {e}");
            assert!(e.to_string().starts_with("invalid size"), "{e}");
        }
    }
}
