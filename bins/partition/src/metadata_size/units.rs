//! Unit letters and names of `thin_metadata_size`, and the parsing of its size arguments.
//!
//! Lower-case letters are powers of 1024, upper-case letters powers of 1000; `b` is bytes and
//! `s` 512-byte sectors. A unit may also be spelled as a prefix of its long name (`mebi`,
//! `sectors`). Factors are 64-bit and wrap like the C tool's: `z`/`y` (2^70, 2^80) become 0 and
//! `Z`/`Y` wrap modulo 2^64 — reproduced on purpose, the outputs are compared byte for byte.

/// One unit: its letter, its long name and its factor in bytes (wrapped to 64 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unit {
    /// The one-letter specifier (`m`, `M`, ...).
    pub letter: char,
    /// The long name printed in the output (`mebibytes`).
    pub name: &'static str,
    /// Bytes per unit, computed with wrapping 64-bit multiplication.
    pub factor: u64,
}

const fn unit(letter: char, name: &'static str, base: u64, power: u32) -> Unit {
    Unit {
        letter,
        name,
        factor: base.wrapping_pow(power),
    }
}

/// Every unit, in the order the tool searches them when matching a long-name prefix.
pub const UNITS: [Unit; 18] = [
    unit('b', "bytes", 1, 1),
    unit('s', "sectors", 512, 1),
    unit('k', "kibibytes", 1024, 1),
    unit('K', "kilobytes", 1000, 1),
    unit('m', "mebibytes", 1024, 2),
    unit('M', "megabytes", 1000, 2),
    unit('g', "gibibytes", 1024, 3),
    unit('G', "gigabytes", 1000, 3),
    unit('t', "tebibytes", 1024, 4),
    unit('T', "terabytes", 1000, 4),
    unit('p', "pebibytes", 1024, 5),
    unit('P', "petabytes", 1000, 5),
    unit('e', "ebibytes", 1024, 6),
    unit('E', "exabytes", 1000, 6),
    unit('z', "zebibytes", 1024, 7),
    unit('Z', "zetabytes", 1000, 7),
    unit('y', "yobibytes", 1024, 8),
    unit('Y', "yottabytes", 1000, 8),
];

/// The sector unit (`s`), the default for block and pool sizes and for the output.
pub const SECTORS: Unit = UNITS[1];

/// Looks a unit specifier up: one character is a letter, anything longer (or empty) is a
/// prefix of a long name, the first match in [`UNITS`] order winning (`me` is `mebibytes`,
/// the empty string `bytes`).
pub fn lookup(spec: &str) -> Option<Unit> {
    let mut chars = spec.chars();
    if let (Some(letter), None) = (chars.next(), chars.next()) {
        return UNITS.iter().copied().find(|u| u.letter == letter);
    }
    UNITS.iter().copied().find(|u| u.name.starts_with(spec))
}

/// A parsed size argument (`2m`, `100G`, `4096`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeArg {
    /// The digits as typed (kept verbatim for the echo in the output, leading zeros included).
    pub digits: String,
    /// The number, saturated at `i64::MAX` as `strtoll` does.
    pub number: u64,
    /// The unit given after the digits, if any.
    pub unit: Option<Unit>,
}

impl SizeArg {
    /// Parses `DIGITS[UNIT]`. `None` when the text after the digits is not a unit specifier
    /// (signs, spaces, decimals, unknown letters).
    pub fn parse(text: &str) -> Option<SizeArg> {
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, suffix) = text.split_at(split);
        let unit = if suffix.is_empty() {
            None
        } else {
            Some(lookup(suffix)?)
        };
        let max = i64::MAX as u64;
        let number = digits.bytes().fold(0u64, |acc, d| {
            acc.saturating_mul(10)
                .saturating_add(u64::from(d - b'0'))
                .min(max)
        });
        Some(SizeArg {
            digits: digits.to_string(),
            number,
            unit,
        })
    }

    /// The size in bytes with `default` as the unit when none was typed (wrapping, as the tool).
    pub fn bytes(&self, default: Unit) -> u64 {
        self.number
            .wrapping_mul(self.unit.unwrap_or(default).factor)
    }

    /// How the tool echoes the argument: the digits and the long unit name (`2mebibytes`);
    /// `default` names the unit when none was typed (`None`: nothing appended).
    pub fn describe(&self, default: Option<Unit>) -> String {
        match self.unit.or(default) {
            Some(unit) => format!("{}{}", self.digits, unit.name),
            None => self.digits.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_and_prefixes() {
        assert_eq!(lookup("m").map(|u| u.name), Some("mebibytes"));
        assert_eq!(lookup("M").map(|u| u.name), Some("megabytes"));
        assert_eq!(lookup("me").map(|u| u.name), Some("mebibytes"));
        assert_eq!(lookup("meg").map(|u| u.name), Some("megabytes"));
        assert_eq!(lookup("").map(|u| u.name), Some("bytes"));
        assert_eq!(lookup("Kilo"), None);
        assert_eq!(lookup("x"), None);
        assert_eq!(lookup("bytesx"), None);
    }

    #[test]
    fn wrapped_factors() {
        assert_eq!(lookup("z").map(|u| u.factor), Some(0));
        assert_eq!(
            lookup("Z").map(|u| u.factor),
            Some(3_875_820_019_684_212_736)
        );
        assert_eq!(
            lookup("E").map(|u| u.factor),
            Some(1_000_000_000_000_000_000)
        );
    }

    #[test]
    fn size_arguments() {
        let two_m = SizeArg::parse("2m").unwrap();
        assert_eq!(two_m.bytes(SECTORS), 2 << 20);
        assert_eq!(two_m.describe(Some(SECTORS)), "2mebibytes");
        let plain = SizeArg::parse("0128").unwrap();
        assert_eq!(plain.bytes(SECTORS), 128 * 512);
        assert_eq!(plain.describe(Some(SECTORS)), "0128sectors");
        assert_eq!(plain.describe(None), "0128");
        assert_eq!(
            SizeArg::parse("99999999999999999999").unwrap().number,
            i64::MAX as u64
        );
        assert_eq!(SizeArg::parse("m").unwrap().number, 0);
        for bad in ["-1", "+2m", " 2m", "2m ", "1.5m", "0x10", "2mm", "1mb"] {
            assert_eq!(SizeArg::parse(bad), None, "{bad}");
        }
    }
}
