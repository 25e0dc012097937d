//! `thin_delta`: prints the differences between the mappings of two thin devices, in the output
//! format of thin-provisioning-tools 0.9.0 (`--verbose` for data block ranges). Reads the
//! metadata with `convoy-thinmeta`; `-m` reads through the held metadata snapshot.
//!
//! Extension: `--changes-only` omits `same` ranges and does not read subtrees the two devices
//! share, so its cost follows what changed (the output is thin_delta's minus its `same` lines).

use std::io::{BufWriter, Write};
use std::process::ExitCode;

use convoy_thinmeta::xml::{write_delta, DeltaOutputError};
use convoy_thinmeta::{DeltaMode, ThinMetadata};

const USAGE: &str = "Usage: thin_delta [options] <device or file>
Options:
  {--thin1, --snap1} <dev id>
  {--thin2, --snap2} <dev id>
  {-m, --metadata-snap} [block#]
  {--verbose}
  {--changes-only}      (convoy extension: no `same` ranges, shared subtrees not read)
  {-h|--help}
  {-V|--version}";

struct Options {
    snap1: u64,
    snap2: u64,
    metadata_snap: Option<Option<u64>>,
    verbose: bool,
    changes_only: bool,
    path: String,
}

fn parse_number(what: &str, s: &str) -> Result<u64, String> {
    s.parse()
        .map_err(|_| format!("Couldn't parse {what}: '{s}'"))
}

fn parse(args: &[String]) -> Result<Option<Options>, String> {
    let (mut snap1, mut snap2, mut metadata_snap, mut verbose, mut path) =
        (None, None, None, false, None);
    let mut changes_only = false;
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg, None),
        };
        let value = |i: &mut usize| -> Result<String, String> {
            if let Some(v) = inline.clone() {
                return Ok(v);
            }
            *i += 1;
            args.get(*i)
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name {
            "--thin1" | "--snap1" => snap1 = Some(parse_number("thin id", &value(&mut i)?)?),
            "--thin2" | "--snap2" => snap2 = Some(parse_number("thin id", &value(&mut i)?)?),
            "-m" | "--metadata-snap" => {
                // Optional argument, given as --metadata-snap=N (or a following number).
                let block = match inline.clone() {
                    Some(v) => Some(parse_number("metadata snapshot block", &v)?),
                    None => None,
                };
                metadata_snap = Some(block);
            }
            _ if arg.starts_with("-m") && arg.len() > 2 => {
                metadata_snap = Some(Some(parse_number("metadata snapshot block", &arg[2..])?));
            }
            "--verbose" => verbose = true,
            "--changes-only" => changes_only = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            "-V" | "--version" => {
                println!("{}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            _ if arg.starts_with('-') && arg.len() > 1 => {
                return Err(format!("unknown option {arg}"))
            }
            _ => {
                if path.replace(arg.to_string()).is_some() {
                    return Err("more than one device or file given".into());
                }
            }
        }
        i += 1;
    }
    Ok(Some(Options {
        snap1: snap1.ok_or("--snap1 not specified.")?,
        snap2: snap2.ok_or("--snap2 not specified.")?,
        metadata_snap,
        verbose,
        changes_only,
        path: path.ok_or("No input device provided.")?,
    }))
}

/// Runs `thin_delta` with the arguments that follow the tool name.
pub fn main(args: &[String]) -> ExitCode {
    let opts = match parse(args) {
        Ok(Some(o)) => o,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(1);
        }
    };
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("thin_delta: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(opts: &Options) -> Result<(), String> {
    let file =
        std::fs::File::open(&opts.path).map_err(|e| format!("cannot open {}: {e}", opts.path))?;
    let mut md = match opts.metadata_snap {
        None => ThinMetadata::open(file),
        Some(block) => ThinMetadata::open_metadata_snapshot(file, block),
    }
    .map_err(|e| format!("{}: {e}", opts.path))?;
    let sb = md.superblock().clone();
    // Plain output merges touching runs of one kind whatever their data blocks, so it needs
    // only the key ranges (FullByKey); --verbose prints data ranges and needs Full.
    let mode = if opts.changes_only {
        DeltaMode::ChangesOnly
    } else if opts.verbose {
        DeltaMode::Full
    } else {
        DeltaMode::FullByKey
    };
    let delta = md
        .delta(opts.snap1, opts.snap2, mode)
        .map_err(|e| format!("{}: {e}", opts.path))?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    match write_delta(&mut out, &sb, opts.snap1, opts.snap2, delta, opts.verbose) {
        Ok(()) => {}
        Err(DeltaOutputError::Delta(e)) => {
            let _ = out.flush();
            return Err(format!("{}: {e}", opts.path));
        }
        Err(DeltaOutputError::Io(e)) => return Err(format!("writing output: {e}")),
    }
    out.flush().map_err(|e| format!("writing output: {e}"))
}
