//! `convoy-pdata_tools thin_metadata_size` against Debian's thin-provisioning-tools 0.9.0
//! (`/usr/sbin/pdata_tools thin_metadata_size`, the oracle): standard output, standard error and
//! exit status must be identical over a table of inputs — block sizes, pool sizes in every unit,
//! thin counts, every output unit, `-n` variants, long options, and invalid input — plus a
//! deterministic pseudo-random sweep. The oracle must be installed (`apt-get install
//! thin-provisioning-tools`); without it the test fails rather than passing vacuously.

use std::path::Path;
use std::process::{Command, Output};

const ORACLE: &str = "/usr/sbin/pdata_tools";
const OURS: &str = env!("CARGO_BIN_EXE_convoy-pdata_tools");
const UNITS: &str = "bskKmMgGtTpPeEzZyY";

fn run(program: &str, args: &[String]) -> Output {
    Command::new(program)
        .arg("thin_metadata_size")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// Runs both and returns a description of the difference, if any.
fn compare(args: &[String]) -> Option<String> {
    let expected = run(ORACLE, args);
    let actual = run(OURS, args);
    let same = expected.stdout == actual.stdout
        && expected.stderr == actual.stderr
        && expected.status.code() == actual.status.code();
    (!same).then(|| {
        format!(
            "thin_metadata_size {args:?}\n  oracle: {:?} {:?} {:?}\n  ours:   {:?} {:?} {:?}",
            expected.status.code(),
            String::from_utf8_lossy(&expected.stdout),
            String::from_utf8_lossy(&expected.stderr),
            actual.status.code(),
            String::from_utf8_lossy(&actual.stdout),
            String::from_utf8_lossy(&actual.stderr),
        )
    })
}

fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(String::from).collect()
}

fn require_oracle() {
    assert!(
        Path::new(ORACLE).exists(),
        "{ORACLE} is missing: install thin-provisioning-tools (0.9.0) to run this comparison"
    );
}

fn assert_all_match(cases: Vec<Vec<String>>) {
    require_oracle();
    let differences: Vec<String> = cases.iter().filter_map(|args| compare(args)).collect();
    assert!(
        differences.is_empty(),
        "{} of {} cases differ:\n{}",
        differences.len(),
        cases.len(),
        differences.join("\n")
    );
}

#[test]
fn seed_example_is_exact() {
    let out = run(OURS, &words("-b 2m -s 100G -m 100000 -u M"));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "thin_metadata_size - 411.15 megabytes estimated metadata area size for \
         \"--block-size=2mebibytes --pool-size=100gigabytes --max-thins=100000\"\n"
    );
    assert!(out.status.success());
}

#[test]
fn table_of_valid_inputs() {
    let mut cases = Vec::new();
    let blocks = [
        "64k", "128k", "2m", "4m", "1g", "128", "4096s", "65536b", "1", "0128",
    ];
    let pools = [
        "100G",
        "100g",
        "1t",
        "1T",
        "5000",
        "107374182400b",
        "1p",
        "1P",
        "1e",
        "1E",
        "2Z",
        "3Y",
    ];
    let thins = [
        "1",
        "1000",
        "100000",
        "1k",
        "2K",
        "1s",
        "3b",
        "4503599627370495",
    ];
    for (i, block) in blocks.iter().enumerate() {
        for (j, pool) in pools.iter().enumerate() {
            let thin = thins[(i + j) % thins.len()];
            cases.push(words(&format!("-b {block} -s {pool} -m {thin}")));
        }
    }
    // Every pool-size unit, every output unit, in sentence and numeric forms.
    for (i, letter) in UNITS.chars().enumerate() {
        cases.push(words(&format!("-b 2m -s 7{letter} -m 10")));
        cases.push(words(&format!("-b 2m -s 100G -m 100000 -u {letter}")));
        let numeric = ["-n", "-nshort", "-nlong", "--numeric-only=long"][i % 4];
        cases.push(words(&format!(
            "-b 2m -s 100G -m {} -u {letter} {numeric}",
            1 + i * 997
        )));
    }
    for line in [
        "--block-size=2m --pool-size=100G --max-thins=100000 --unit=M",
        "--block-size 2m --pool-size 100G --max-thins 100000 --unit M",
        "--bl 2m --p 100G --m 1 --u kilo --num=short",
        "-b2m -s100G -m100000 -uM",
        "-b 2m -s 100G -m 100000 -u mebi -nlong",
        "-b 2m -s 100G -m 100000 -u bytes",
        "-b 2m -s 100G -m 1 -uk -nl",
        "-b 2m -s 100G -m 1 -ns",
        "-b 2m -s 100G -m 1 -nsho",
        "-b 2m -s 100G -m 1 -nlon",
        "-b 2m -s 100G -m 1 --numeric-only=s",
        "-b 2m -s 100G -m 100000 extra words -n",
        "-b 2m -s 100G -m 1 -- -x",
        "-b 0 -b 2m -s 100G -m 1",
        "-b 2m -s 100G -m 165 -u m",
        "-b 2m -s 100G -m 9007199254740991 -u s -n",
        "-b 2m -s 100G -m 18446744073709551615",
        "-b 1 -s 36028797018963967 -m 1",
        "-b 2m -s 100G -m 1 -u z",
        "-h",
        "-b 2m --help",
        "-V",
        "--version",
    ] {
        cases.push(words(line));
    }
    cases.push(vec![
        "-b".into(),
        "2m".into(),
        "-s".into(),
        "1G".into(),
        "-m".into(),
        "1".into(),
        "-u".into(),
        String::new(),
    ]);
    assert_all_match(cases);
}

#[test]
fn table_of_invalid_inputs() {
    let mut cases: Vec<Vec<String>> = [
        "",
        "-b 2m",
        "-b 2m -s 100G",
        "-s 100G -m 1",
        "-b 2m -s 100G -m 0",
        "-b 63k -s 100G -m 1",
        "-b 1M -s 100G -m 1",
        "-b 2b -s 100G -m 1",
        "-b 2m -s 2m -m 1",
        "-b 2m -s 4096 -m 1",
        "-b 2m -s 16e -m 1",
        "-b -1 -s 100G -m 1",
        "-b 1.5m -s 100G -m 1",
        "-b 2mm -s 100G -m 1",
        "-b 0x10 -s 100G -m 1",
        "-b 2m -s 100G -m 1x",
        "-b 2m -s 100G -m 1000 -b 4m",
        "-b 2m -s 100G -m 1000 -m 10",
        "-b 2m -s 100G -m 1 -u x",
        "-b 2m -s 100G -m 1 -u Kilo",
        "-b 2m -s 100G -m 1 -n=short",
        "-b 2m -s 100G -m 1 -nfoo",
        "-b 2m -s 100G -m 1 -nshortx",
        "-b 2m -s 100G -m 1 -nlongx",
        "-b 2m -s 100G -m 1 -nS",
        "-b 2m -s 100G -m 1 -n -n",
        "-b 2m -s 100G -m 1 --numeric-only=",
        "-b 2m -s 100G -m 1 -x",
        "-b 2m -s 100G -m 1 --bogus",
        "-b 2m -s 100G -m 1 --bogus=1",
        "-b 2m -s 100G -m",
        "-b 2m -s 100G -m 1 --unit",
        "--help=x",
        "--=x",
        "-x -h",
        "-b x -V",
    ]
    .iter()
    .map(|line| words(line))
    .collect();
    cases.push(vec![
        "-b".into(),
        " 2m".into(),
        "-s".into(),
        "1G".into(),
        "-m".into(),
        "1".into(),
    ]);
    assert_all_match(cases);
}

/// A small deterministic generator (xorshift), so the sweep is the same on every run.
struct Sweep(u64);

impl Sweep {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn size(&mut self) -> String {
        let number = match self.below(4) {
            0 => self.below(11),
            1 => self.below(100_000),
            2 => self.next() >> self.below(64),
            _ => 1 << self.below(63),
        };
        let unit = if self.below(2) == 0 {
            String::new()
        } else {
            let letters: Vec<char> = UNITS.chars().collect();
            letters[self.below(letters.len() as u64) as usize].to_string()
        };
        format!("{number}{unit}")
    }
}

#[test]
fn pseudo_random_sweep() {
    let mut sweep = Sweep(0x9e37_79b9_7f4a_7c15);
    let blocks = ["64k", "128k", "2m", "4m", "1g", "128", "4096s", "1", "8"];
    let mut cases = Vec::new();
    for _ in 0..400 {
        let block = if sweep.below(10) < 6 {
            blocks[sweep.below(blocks.len() as u64) as usize].to_string()
        } else {
            sweep.size()
        };
        let mut args = vec![
            "-b".to_string(),
            block,
            "-s".into(),
            sweep.size(),
            "-m".into(),
            sweep.size(),
        ];
        if sweep.below(10) < 7 {
            let letters: Vec<char> = UNITS.chars().collect();
            args.push(format!(
                "-u{}",
                letters[sweep.below(letters.len() as u64) as usize]
            ));
        }
        if sweep.below(10) < 3 {
            args.push(["-n", "-nshort", "-nlong"][sweep.below(3) as usize].to_string());
        }
        cases.push(args);
    }
    assert_all_match(cases);
}

/// Random sequences of option-like words: clusters, abbreviations, attached and detached
/// arguments, `--`, operands, repeated options, help and version in any position.
#[test]
fn option_structure_sweep() {
    const VOCABULARY: [&str; 54] = [
        "-b",
        "-s",
        "-m",
        "-u",
        "-n",
        "-nshort",
        "-nlong",
        "-nx",
        "-ns",
        "-nlo",
        "--numeric-only",
        "--numeric-only=short",
        "--num=long",
        "--",
        "-",
        "x",
        "2m",
        "100G",
        "1000",
        "0",
        "M",
        "k",
        "s",
        "-bx",
        "-b2m",
        "-s1G",
        "-m5",
        "--block=1k",
        "--pool-size",
        "--pool-size=",
        "--max-thins=7",
        "--unit=G",
        "--unit",
        "-hV",
        "-Vh",
        "-h",
        "-V",
        "--help",
        "--vers",
        "-x",
        "-:",
        "--bogus",
        "--=",
        "--b",
        "-nb",
        "-un",
        "-u-n",
        "-Ms",
        "1mebi",
        "1Kilo",
        "",
        " ",
        "-b ",
        "--max",
    ];
    let mut sweep = Sweep(0x2545_f491_4f6c_dd1d);
    let mut cases = Vec::new();
    for _ in 0..500 {
        let mut args: Vec<String> = if sweep.below(10) < 6 {
            words("-b 2m -s 100G -m 1000")
        } else {
            Vec::new()
        };
        for _ in 0..sweep.below(7) {
            let word = VOCABULARY[sweep.below(VOCABULARY.len() as u64) as usize];
            let at = sweep.below(args.len() as u64 + 1) as usize;
            args.insert(at, word.to_string());
        }
        cases.push(args);
    }
    assert_all_match(cases);
}
