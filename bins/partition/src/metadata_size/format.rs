//! Number formatting as `thin_metadata_size` prints its estimate.
//!
//! The estimate is a double. Whole values print as an unsigned 64-bit integer (converted the
//! way x86-64 C code does: values of 2^64 and above, and infinity, come out as 0); values whose
//! fractional part is at least 0.01 print with two decimals (`411.15`); smaller fractions
//! print in C's `%.2e` style (`3.74e-04`, `4.10e+03`).

/// Formats `value` as the tool prints it.
pub fn format_estimate(value: f64) -> String {
    if value == value.floor() {
        return c_to_u64(value).to_string();
    }
    if value - value.floor() < 0.01 {
        c_exponential(value)
    } else {
        format!("{value:.2}")
    }
}

/// The x86-64 conversion of a non-negative double to `uint64_t`: out of range gives 0.
fn c_to_u64(value: f64) -> u64 {
    const TWO_TO_64: f64 = 18_446_744_073_709_551_616.0;
    if (0.0..TWO_TO_64).contains(&value) {
        value as u64
    } else {
        0
    }
}

/// C's `%.2e`: two decimals, an explicit exponent sign and at least two exponent digits.
fn c_exponential(value: f64) -> String {
    let rust = format!("{value:.2e}");
    match rust.split_once('e') {
        Some((mantissa, exponent)) => {
            let exponent: i32 = exponent.parse().unwrap_or(0);
            let sign = if exponent < 0 { '-' } else { '+' };
            format!("{mantissa}e{sign}{:02}", exponent.unsigned_abs())
        }
        None => rust,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(format_estimate(803_032.0), "803032");
        assert_eq!(format_estimate(411.152_384), "411.15");
        assert_eq!(format_estimate(0.000_374), "3.74e-04");
        assert_eq!(format_estimate(4_096.001_516), "4.10e+03");
        assert_eq!(format_estimate(f64::INFINITY), "0");
        assert_eq!(format_estimate(2f64.powi(64)), "0");
        assert_eq!(format_estimate(2f64.powi(63)), "9223372036854775808");
        // Ties round to even on the exact binary value, as C's printf does.
        assert_eq!(format_estimate(2.125), "2.12");
        assert_eq!(format_estimate(2.375), "2.38");
    }
}
