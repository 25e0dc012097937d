//! `convoy-partition`: splits an empty block device into a data partition (1) and a metadata
//! partition (2) for a thin pool, sized as the original `dm_dev_partition.sh` did, and prints the
//! `convoy daemon` command line that uses them. A dry run unless `--write-to-disk` is given.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use convoy_setup::helper::{self, Options};
use convoy_setup::sizing::DEFAULT_MAX_THINS;

/// Partition an empty disk for convoy's devicemapper driver (data first, metadata second).
#[derive(Debug, Parser)]
#[command(name = "convoy-partition", version)]
struct Cli {
    /// Write the partition table (without it: a dry run that only prints the plan).
    #[arg(long)]
    write_to_disk: bool,
    /// Maximum number of volumes plus snapshots the metadata partition is sized for.
    #[arg(short = 'm', long = "max-thins", value_name = "N", default_value_t = DEFAULT_MAX_THINS)]
    max_thins: u64,
    /// The whole disk to partition (e.g. /dev/sdb, /dev/nvme1n1, /dev/loop0).
    device: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let options = Options {
        device: cli.device,
        max_thins: cli.max_thins,
        write_to_disk: cli.write_to_disk,
    };
    let mut stdout = std::io::stdout();
    match helper::run(&options, &mut stdout) {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}
