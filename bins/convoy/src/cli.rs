//! The command line, as clap structures. Names and flags are those of the original Convoy;
//! flags may follow positional arguments (`convoy create vol1 --size 1G`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use convoy_daemon::DaemonArgs;

/// Persistent Docker volumes on device-mapper thin provisioning, with instant snapshots and
/// incremental, deduplicated backups to S3 or a filesystem path.
#[derive(Debug, Parser)]
#[command(name = "convoy", version, propagate_version = true)]
pub struct Cli {
    /// The daemon's socket.
    #[arg(short = 's', long, global = true, value_name = "PATH", default_value = convoy_api::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Debug output (daemon: debug logs; client: the requests made).
    #[arg(long, global = true)]
    pub debug: bool,
    /// Print whole objects as JSON instead of bare names.
    #[arg(long, global = true)]
    pub verbose: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Every command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the convoy daemon (serves the CLI and Docker on the socket).
    Daemon(DaemonArgs),
    /// Show the daemon's configuration and driver details.
    Info,
    /// Create a volume (empty, or restored from a backup); prints its name.
    Create {
        /// Volume name (default: generated volume-<16 hex>).
        name: Option<String>,
        /// Driver to create it with (default: the daemon's first driver).
        #[arg(long)]
        driver: Option<String>,
        /// Size, e.g. 10G (k/m/g/t are powers of 1024); default: the driver's default.
        #[arg(long, allow_hyphen_values = true)]
        size: Option<String>,
        /// Restore this backup URL into the new volume.
        #[arg(long, value_name = "URL")]
        backup: Option<String>,
    },
    /// Delete volumes.
    Delete {
        /// Volumes to delete.
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        /// Only forget the volume; keep its data.
        #[arg(short = 'r', long)]
        reference: bool,
    },
    /// Mount a volume; prints the mount point.
    Mount {
        /// The volume.
        name: String,
        /// Where to mount it (default: under the daemon's root).
        #[arg(long, value_name = "PATH")]
        mountpoint: Option<String>,
    },
    /// Unmount a volume.
    Umount {
        /// The volume.
        name: String,
    },
    /// List volumes as JSON (name → volume).
    List {
        /// Only volumes of this driver.
        #[arg(long)]
        driver: Option<String>,
    },
    /// Show a volume as JSON.
    Inspect {
        /// The volume.
        name: String,
    },
    /// Snapshots of volumes.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Backups of snapshots.
    Backup(BackupArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `convoy snapshot ...`.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Snapshot a volume; prints the snapshot's name.
    Create {
        /// The volume.
        volume: String,
        /// Snapshot name (default: generated snapshot-<16 hex>).
        #[arg(long)]
        name: Option<String>,
    },
    /// Delete a snapshot.
    Delete {
        /// The snapshot.
        snapshot: String,
    },
    /// Show a snapshot as JSON.
    Inspect {
        /// The snapshot.
        snapshot: String,
    },
}

/// `convoy backup [--s3-endpoint URL] ...`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// S3 endpoint to use instead of AWS's (e.g. http://minio:9000); default: $AWS_ENDPOINT.
    #[arg(long, global = true, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: BackupCommand,
}

/// `convoy backup ...`.
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Back a snapshot up (incrementally when possible); prints the backup URL.
    Create {
        /// The snapshot.
        snapshot: String,
        /// Destination: s3://bucket@region/path or vfs:///path.
        #[arg(long, value_name = "URL", required = true)]
        dest: String,
    },
    /// Delete a backup.
    Delete {
        /// The backup URL.
        url: String,
    },
    /// List the backups at a destination as JSON (URL → backup).
    List {
        /// Destination: s3://bucket@region/path or vfs:///path.
        dest: String,
        /// Only backups of this volume.
        #[arg(long)]
        volume_name: Option<String>,
    },
    /// Show a backup as JSON.
    Inspect {
        /// The backup URL.
        url: String,
    },
}
