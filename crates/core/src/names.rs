//! Names and sizes as core applies them — the rule and the syntax are `convoy-names`', shared
//! with the CLI side and the backup store — generated names, and the creation-time format of
//! the original (Go's `time.RubyDate`).

use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

pub use convoy_names::MAX_NAME_LEN;

/// Check a volume or snapshot name: `^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`, at most
/// [`MAX_NAME_LEN`] characters (so it is always a valid device-mapper and file name).
///
/// # Errors
/// [`Error::InvalidName`] saying which part of the rule is broken.
pub fn validate_name(name: &str) -> Result<()> {
    convoy_names::validate_name(name).map_err(Error::from)
}

/// A generated name: `<prefix>-<16 hex digits>` (prefix `volume`, `snapshot`).
pub fn generate_name(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    )
}

/// Parse a volume size: the syntax of [`convoy_names::parse_size`] (an integer with an
/// optional `k`, `m`, `g` or `t` suffix, powers of 1024, case-insensitive, and an optional
/// trailing `b`/`B`: `512b`, `10GB`), more than zero.
///
/// # Errors
/// [`Error::InvalidSize`] for an empty, non-numeric, zero or overflowing value.
pub fn parse_size(text: &str) -> Result<u64> {
    match convoy_names::parse_size(text)? {
        0 => Err(Error::InvalidSize {
            value: text.to_owned(),
            reason: "a size must be greater than zero".to_owned(),
        }),
        n => Ok(n),
    }
}

/// The current time in Go's `time.RubyDate` layout (`Mon Jan 02 15:04:05 -0700 2006`), in UTC.
pub fn now_ruby_date() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    ruby_date(secs)
}

/// Unix seconds in Go's `time.RubyDate` layout, UTC.
pub fn ruby_date(unix_secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix_secs / 86_400;
    let rem = unix_secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{} {} {:02} {:02}:{:02}:{:02} +0000 {}",
        DAYS[(days % 7) as usize],
        MONTHS[(m - 1) as usize],
        d,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        y
    )
}

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule() {
        for ok in ["vol1", "a.b-c_d", "0x", "Volume-ABC.1"] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "a", "-ab", ".ab", "_ab", "a b", "a/b", "ä123", "vol1\n"] {
            let e = validate_name(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidName { .. }), "{bad:?}: {e}");
            assert!(e.to_string().contains("invalid name"), "{e}");
        }
        validate_name(&"a".repeat(64)).unwrap();
        assert!(validate_name(&"a".repeat(65)).is_err());
    }

    #[test]
    fn generated_names_are_valid_and_distinct() {
        let a = generate_name("volume");
        let b = generate_name("volume");
        assert_ne!(a, b);
        assert_eq!(a.len(), "volume-".len() + 16);
        assert!(a[7..].bytes().all(|c| c.is_ascii_hexdigit()));
        validate_name(&a).unwrap();
        validate_name(&generate_name("snapshot")).unwrap();
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("1k").unwrap(), 1024);
        assert_eq!(parse_size("1K").unwrap(), 1024);
        assert_eq!(parse_size("64m").unwrap(), 64 << 20);
        assert_eq!(parse_size("100G").unwrap(), 100 << 30);
        assert_eq!(parse_size("2t").unwrap(), 2 << 40);
        assert_eq!(parse_size("10GB").unwrap(), 10 << 30);
        for bad in [
            "",
            "g",
            "1x",
            "-1",
            "1.5g",
            "0",
            "99999999999999999999",
            "16777216t",
        ] {
            let e = parse_size(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidSize { .. }), "{bad:?}: {e}");
        }
    }

    #[test]
    fn sizes_are_convoy_names_syntax_and_more_than_zero() {
        assert_eq!(parse_size("512b").unwrap(), 512);
        assert_eq!(parse_size("1kb").unwrap(), 1024);
        let e = parse_size("0b").unwrap_err();
        assert!(e.to_string().contains("greater than zero"), "{e}");
        let e = parse_size("1.5G").unwrap_err();
        assert!(e.to_string().contains("invalid size \"1.5G\""), "{e}");
        let e = validate_name(&"a".repeat(MAX_NAME_LEN + 1)).unwrap_err();
        assert!(e.to_string().contains("at most 64 characters"), "{e}");
    }

    #[test]
    fn core_and_the_backup_store_apply_one_name_rule() {
        // The same rule; the store's limit is higher (names the original Convoy gave).
        let long = "v".repeat(MAX_NAME_LEN + 1);
        for name in [
            "vol1", "a.b-c_d", "0x", "v-", "", "a", "-ab", ".ab", "a b", "a/b", "\u{e4}1", &long,
        ] {
            let store = convoy_backupstore::BackupRef::new(name, "backup-1").is_ok();
            let core = validate_name(name).is_ok();
            let expected = if name.len() > MAX_NAME_LEN {
                !core && store
            } else {
                core == store
            };
            assert!(expected, "{name:?}: core {core}, store {store}");
        }
        let too_long = "v".repeat(convoy_names::MAX_STORED_NAME_LEN + 1);
        assert!(convoy_backupstore::BackupRef::new(&too_long, "backup-1").is_err());
    }

    #[test]
    fn ruby_dates_match_go() {
        // 2006-01-02 15:04:05 UTC, Go's reference time (a Monday).
        assert_eq!(ruby_date(1_136_214_245), "Mon Jan 02 15:04:05 +0000 2006");
        assert_eq!(ruby_date(0), "Thu Jan 01 00:00:00 +0000 1970");
        // 2024-02-29 (leap day, a Thursday).
        assert_eq!(ruby_date(1_709_164_800), "Thu Feb 29 00:00:00 +0000 2024");
    }

    #[test]
    fn ruby_dates_round_trip_through_the_one_parser() {
        for secs in [0u64, 1_136_214_245, 1_800_000_000] {
            let text = ruby_date(secs);
            assert_eq!(crate::parse_ruby_date(&text), Some(secs as i64), "{text}");
        }
        assert_eq!(
            crate::parse_ruby_date("Mon Jan 02 15:04:05 -0700 2006"),
            Some(1_136_214_245 + 7 * 3600)
        );
        assert_eq!(crate::parse_ruby_date("yesterday"), None);
    }
}
