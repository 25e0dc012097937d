//! `thin_metadata_size`: the metadata-area estimate of a dm-thin pool, with the arguments, unit
//! letters, output and diagnostics of thin-provisioning-tools 0.9.0 (checked against Debian's
//! binary by `tests/thin_metadata_size_oracle.rs`).
//!
//! The estimate, in 4 KiB metadata blocks: one superblock, one btree leaf per 252 mappings for
//! twice the pool's data blocks, and one block per thin device —
//! `1 + floor(floor(2 * pool_sectors / block_sectors) / 252) + max_thins`. Leaves and thins are
//! summed as wrapping 64-bit integers, the superblock added in double precision, and the bytes
//! divided by the output unit — the C tool's order, which shows in the last digits of absurdly
//! large inputs, and which is kept so the outputs match for every input.

pub mod format;
pub mod getopt;
pub mod units;

use getopt::{Getopt, HasArg, OptSpec};
use units::{SizeArg, Unit, SECTORS};

/// The name the tool reports itself by.
pub const TOOL: &str = "thin_metadata_size";

/// The version printed by `-V`: the thin-provisioning-tools release whose behaviour this copies.
pub const VERSION: &str = "0.9.0";

/// Mappings per btree leaf of a 4 KiB metadata block.
pub const MAPPINGS_PER_LEAF: u64 = 252;

/// Bytes per metadata block.
pub const METADATA_BLOCK_BYTES: u64 = 4096;

const USAGE: &str = "Thin Provisioning Metadata Device Size Calculator.
Usage: thin_metadata_size [options]
\t-b  --block-size BLOCKSIZE[bskKmMgGtTpPeEzZyY]  Block size of thin provisioned devices.
\t-s  --pool-size SIZE[bskKmMgGtTpPeEzZyY]        Size of pool device.
\t-m  --max-thins #MAXTHINS[bskKmMgGtTpPeEzZyY]   Maximum sum of all thin devices and snapshots.
\t-u  --unit {bskKmMgGtTpPeEzZyY}                 Output unit specifier.
\t-n  --numeric-only [short|long]                 Output numeric value only (optionally with short/long unit identifier).
\t-h  --help                                      This help.
\t-V  --version                                   Print thin provisioning tools version.
";

const OPTIONS: [OptSpec; 7] = [
    OptSpec {
        short: 'b',
        long: "block-size",
        has_arg: HasArg::Required,
    },
    OptSpec {
        short: 's',
        long: "pool-size",
        has_arg: HasArg::Required,
    },
    OptSpec {
        short: 'm',
        long: "max-thins",
        has_arg: HasArg::Required,
    },
    OptSpec {
        short: 'u',
        long: "unit",
        has_arg: HasArg::Required,
    },
    OptSpec {
        short: 'n',
        long: "numeric-only",
        has_arg: HasArg::Optional,
    },
    OptSpec {
        short: 'h',
        long: "help",
        has_arg: HasArg::No,
    },
    OptSpec {
        short: 'V',
        long: "version",
        has_arg: HasArg::No,
    },
];

/// What a run prints and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Text for standard output.
    pub stdout: String,
    /// Text for standard error.
    pub stderr: String,
    /// The exit status (0 or 1).
    pub status: u8,
}

impl Outcome {
    fn ok(stdout: String) -> Outcome {
        Outcome {
            stdout,
            stderr: String::new(),
            status: 0,
        }
    }

    fn error(line: String) -> Outcome {
        Outcome {
            stdout: String::new(),
            stderr: line + "\n",
            status: 1,
        }
    }

    fn failure(message: &str) -> Outcome {
        Outcome::error(format!("{TOOL} - {message}"))
    }
}

/// How `-n` asked for the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Numeric {
    Sentence,
    Bare,
    ShortUnit,
    LongUnit,
}

/// One of `-b`, `-s`, `-m` once given: the argument and its value in the tool's base unit
/// (sectors for sizes, a count for thins).
#[derive(Debug, Default)]
struct Given {
    arg: Option<SizeArg>,
    value: u64,
}

/// The estimate in bytes for a pool of `pool_sectors` with `block_sectors` blocks and
/// `max_thins` thin devices, in the C tool's arithmetic (see the module documentation).
pub fn estimate_bytes(pool_sectors: u64, block_sectors: u64, max_thins: u64) -> f64 {
    let mappings = 2 * pool_sectors / block_sectors;
    let leaves = mappings / MAPPINGS_PER_LEAF;
    // Leaves and thins are added as 64-bit integers (wrapping), the superblock in floating point.
    let blocks = leaves.wrapping_add(max_thins) as f64 + 1.0;
    blocks * METADATA_BLOCK_BYTES as f64
}

/// Runs the tool on `args` (the words after `thin_metadata_size`).
pub fn run(args: &[String]) -> Outcome {
    let mut block = Given::default();
    let mut pool = Given::default();
    let mut thins = Given::default();
    let mut out_unit: Unit = SECTORS;
    let mut numeric: Option<Numeric> = None;

    for parsed in Getopt::new(TOOL, args, &OPTIONS) {
        let (letter, value) = match parsed {
            Ok(option) => option,
            Err(line) => return Outcome::error(line),
        };
        if letter == 'n' {
            if numeric.is_some() {
                return Outcome::failure("-n already given!");
            }
            numeric = Some(match value.as_deref() {
                None => Numeric::Bare,
                // Any non-empty prefix of the word: `-ns`, `-nlo`, `--numeric-only=sh`.
                Some(word) if !word.is_empty() && "short".starts_with(word) => Numeric::ShortUnit,
                Some(word) if !word.is_empty() && "long".starts_with(word) => Numeric::LongUnit,
                Some(_) => return Outcome::failure("-n invalid option argument"),
            });
            continue;
        }
        let value = value.unwrap_or_default();
        match letter {
            'b' | 's' | 'm' => {
                let target = match letter {
                    'b' => &mut block,
                    's' => &mut pool,
                    _ => &mut thins,
                };
                if target.value != 0 {
                    return Outcome::failure("option already given!");
                }
                let Some(size) = SizeArg::parse(&value) else {
                    return Outcome::failure("Invalid unit specifier!");
                };
                target.value = if letter == 'm' && size.unit.is_some() {
                    size.bytes(SECTORS)
                } else {
                    size.bytes(SECTORS) / 512
                };
                target.arg = Some(size);
            }
            'u' => match units::lookup(&value) {
                Some(unit) => out_unit = unit,
                None => return Outcome::failure("output unit specifier invalid!"),
            },
            'h' => return Outcome::ok(USAGE.to_string()),
            _ => return Outcome::ok(format!("{VERSION}\n")),
        }
    }

    if block.value == 0 {
        return Outcome::failure("block size required!");
    }
    if pool.value == 0 {
        return Outcome::failure("pool size required!");
    }
    if thins.value == 0 {
        return Outcome::failure("max thins required!");
    }
    if !block.value.is_power_of_two() {
        return Outcome::failure("block size must be 2^^N");
    }
    if pool.value <= block.value {
        return Outcome::failure("pool size must be larger than block size");
    }

    let estimate = estimate_bytes(pool.value, block.value, thins.value) / out_unit.factor as f64;
    let number = format::format_estimate(estimate);
    let describe = |given: &Given, default: Option<Unit>| {
        given
            .arg
            .as_ref()
            .map(|a| a.describe(default))
            .unwrap_or_default()
    };
    let stdout = match numeric.unwrap_or(Numeric::Sentence) {
        Numeric::Bare => format!("{number}\n"),
        Numeric::ShortUnit => format!("{number}{}\n", out_unit.letter),
        Numeric::LongUnit => format!("{number}{}\n", out_unit.name),
        Numeric::Sentence => format!(
            "{TOOL} - {number} {} estimated metadata area size for \"--block-size={} --pool-size={} --max-thins={}\"\n",
            out_unit.name,
            describe(&block, Some(SECTORS)),
            describe(&pool, Some(SECTORS)),
            describe(&thins, None),
        ),
    };
    Outcome::ok(stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_words(words: &str) -> Outcome {
        let args: Vec<String> = words.split_whitespace().map(String::from).collect();
        run(&args)
    }

    #[test]
    fn seed_example() {
        assert_eq!(
            run_words("-b 2m -s 100G -m 100000 -u M").stdout,
            "thin_metadata_size - 411.15 megabytes estimated metadata area size for \
             \"--block-size=2mebibytes --pool-size=100gigabytes --max-thins=100000\"\n"
        );
    }

    #[test]
    fn partition_helper_call() {
        assert_eq!(
            run_words("-b 2m -s 107374182400b -m 10000 -u b -n").stdout,
            "42627072\n"
        );
    }

    #[test]
    fn errors_exit_one() {
        let missing = run_words("-b 2m -s 100G");
        assert_eq!(missing.stderr, "thin_metadata_size - max thins required!\n");
        assert_eq!(missing.status, 1);
        assert_eq!(
            run_words("-b 63k -s 1G -m 1").stderr,
            "thin_metadata_size - block size must be 2^^N\n"
        );
    }
}
