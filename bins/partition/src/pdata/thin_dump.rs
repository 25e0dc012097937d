//! `thin_dump`: lists the devices and mappings of pool metadata in the XML format of
//! thin-provisioning-tools 0.9.0 (for debugging). `-m [BLOCK]` reads the held metadata snapshot;
//! `--dev-id N` (repeatable) limits the listing to some devices.

use std::io::{BufWriter, Write};
use std::process::ExitCode;

use convoy_thinmeta::xml::{
    write_dump_device, write_dump_device_end, write_dump_end, write_dump_header, write_dump_run,
};
use convoy_thinmeta::ThinMetadata;

const USAGE: &str = "Usage: thin_dump [options] <device or file>
Options:
  {-m, --metadata-snap} [block#]
  {--dev-id} <dev id>   (repeatable)
  {-h|--help}";

struct Options {
    metadata_snap: Option<Option<u64>>,
    dev_ids: Vec<u64>,
    path: String,
}

fn number(s: &str) -> Result<u64, String> {
    s.parse()
        .map_err(|_| format!("Couldn't parse number: '{s}'"))
}

fn parse(args: &[String]) -> Result<Option<Options>, String> {
    let mut opts = Options {
        metadata_snap: None,
        dev_ids: Vec::new(),
        path: String::new(),
    };
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        match arg {
            "-m" | "--metadata-snap" => opts.metadata_snap = Some(None),
            _ if arg.starts_with("--metadata-snap=") => {
                opts.metadata_snap = Some(Some(number(&arg["--metadata-snap=".len()..])?))
            }
            _ if arg.starts_with("-m") => opts.metadata_snap = Some(Some(number(&arg[2..])?)),
            "--dev-id" => {
                i += 1;
                opts.dev_ids
                    .push(number(args.get(i).ok_or("--dev-id needs a value")?)?);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            _ if arg.starts_with('-') => return Err(format!("unknown option {arg}")),
            _ if opts.path.is_empty() => opts.path = arg.to_string(),
            _ => return Err("more than one device or file given".into()),
        }
        i += 1;
    }
    if opts.path.is_empty() {
        return Err("No input file provided.".into());
    }
    Ok(Some(opts))
}

/// Runs `thin_dump` with the arguments that follow the tool name.
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
            eprintln!("thin_dump: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(opts: &Options) -> Result<(), String> {
    let path = &opts.path;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open {path}: {e}"))?;
    let mut md = match opts.metadata_snap {
        None => ThinMetadata::open(file),
        Some(block) => ThinMetadata::open_metadata_snapshot(file, block),
    }
    .map_err(|e| format!("{path}: {e}"))?;
    let sb = md.superblock().clone();
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let wr = |e: std::io::Error| format!("writing output: {e}");
    write_dump_header(&mut out, &sb).map_err(wr)?;
    let devices = md.devices().map_err(|e| format!("{path}: {e}"))?;
    for details in devices {
        if !opts.dev_ids.is_empty() && !opts.dev_ids.contains(&details.dev_id) {
            continue;
        }
        write_dump_device(&mut out, &details).map_err(wr)?;
        let runs = md
            .mapped_runs(details.dev_id)
            .map_err(|e| format!("{path}: {e}"))?;
        for run in runs {
            let run = run.map_err(|e| format!("{path}: {e}"))?;
            write_dump_run(&mut out, &run).map_err(wr)?;
        }
        write_dump_device_end(&mut out).map_err(wr)?;
    }
    write_dump_end(&mut out).map_err(wr)?;
    out.flush().map_err(wr)
}
