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
        /// With --backup: allow a --size larger than the backup's volume and grow the
        /// restored filesystem to fill it.
        #[arg(long, requires = "backup")]
        grow: bool,
        /// With --backup (devicemapper): return as soon as the volume is usable and copy
        /// the backup in the background; reads of what is not copied yet fetch it first
        /// (docs/instant.md). `convoy inspect` shows the progress.
        #[arg(long, requires = "backup", conflicts_with = "grow")]
        instant: bool,
        /// Clone this snapshot into the new volume (instant with devicemapper).
        #[arg(long, value_name = "SNAP", conflicts_with_all = ["backup", "volume"])]
        snapshot: Option<String>,
        /// Clone this volume as it is now into the new volume (instant, crash-consistent
        /// with devicemapper).
        #[arg(long, value_name = "VOLUME", conflicts_with = "backup")]
        volume: Option<String>,
    },
    /// Grow a volume and its filesystem (online when mounted); prints its name.
    Expand {
        /// The volume.
        name: String,
        /// The new size, e.g. 20G (k/m/g/t are powers of 1024); never smaller than now.
        #[arg(long, required = true, allow_hyphen_values = true)]
        size: String,
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
    /// Scheduled snapshots and backups with retention.
    #[command(subcommand)]
    Policy(crate::policy_cmd::PolicyCommand),
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
    /// Point the snapshot's volume back at the snapshot's data (the volume must be
    /// unmounted; the snapshot stays); prints the volume's name.
    Revert {
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
    /// The secret of an encrypted store, for the commands that run in this process.
    #[command(flatten)]
    pub key: KeyArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: BackupCommand,
}

/// Where the secret of an encrypted store comes from, for `backup init`, `key`, `verify` and
/// `repair` (which run in this process; the daemon has its own options for the others). At
/// most one; none given: `$CONVOY_BACKUP_PASSPHRASE` when set. Never on the command line.
#[derive(Debug, Args, Clone, Default)]
pub struct KeyArgs {
    /// File holding the store's passphrase (one trailing newline ignored).
    #[arg(long, global = true, value_name = "PATH", conflicts_with_all = ["key_file", "backup_passcmd"])]
    pub passphrase_file: Option<std::path::PathBuf>,
    /// Key file of the store (at least 32 random bytes, e.g. `head -c 32 /dev/urandom`).
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        conflicts_with = "backup_passcmd"
    )]
    pub key_file: Option<std::path::PathBuf>,
    /// Command (run with `sh -c`) printing the store's passphrase on its standard output.
    #[arg(long, global = true, value_name = "COMMAND")]
    pub backup_passcmd: Option<String>,
}

/// `convoy backup key ...`.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List the key slots of an encrypted store as JSON (no key needed).
    List {
        /// Destination: s3://bucket@region/path or vfs:///path.
        dest: String,
    },
    /// Add a key slot (opening the store with the current secret); prints its name. The data
    /// is not re-encrypted: every slot wraps the same master key.
    Add {
        /// Destination: s3://bucket@region/path or vfs:///path.
        dest: String,
        /// File holding the new passphrase.
        #[arg(long, value_name = "PATH", required_unless_present_any = ["new_key_file", "new_passcmd"], conflicts_with_all = ["new_key_file", "new_passcmd"])]
        new_passphrase_file: Option<std::path::PathBuf>,
        /// New key file (at least 32 random bytes).
        #[arg(long, value_name = "PATH", conflicts_with = "new_passcmd")]
        new_key_file: Option<std::path::PathBuf>,
        /// Command printing the new passphrase.
        #[arg(long, value_name = "COMMAND")]
        new_passcmd: Option<String>,
    },
    /// Remove a key slot (opening the store with the current secret); the last usable slot
    /// cannot be removed.
    Remove {
        /// Destination: s3://bucket@region/path or vfs:///path.
        dest: String,
        /// The slot's name, as `backup key list` shows it.
        slot: String,
    },
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
        /// Upload at most RATE bytes per second (e.g. 10M = 10 MiB/s); default: the daemon's
        /// --backup-limit-upload, else no limit.
        #[arg(long, value_name = "RATE", value_parser = convoy_daemon::config::rate_arg)]
        limit_upload: Option<u64>,
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
    /// Mount a backup's filesystem read-only at DIR without restoring it (only the blocks
    /// read are fetched; a directory-volume backup is downloaded whole); prints DIR, or the
    /// mount as JSON with --verbose.
    Mount {
        /// The backup URL.
        url: String,
        /// Where to mount it: an existing directory that is not a mount point.
        dir: PathBuf,
    },
    /// Unmount a backup mounted with `backup mount`.
    Umount {
        /// Where it is mounted.
        dir: PathBuf,
    },
    /// List the backups mounted for browsing as JSON (mount point → mount).
    Mounts,
    /// Check that a backup is complete and every block of it reads back and hashes right;
    /// prints the figures as JSON. Runs in this process, with this user's store credentials.
    Verify {
        /// The backup URL.
        url: String,
    },
    /// Create a backup store at DEST (a backup creates an unencrypted one when missing); with
    /// --encrypt an encrypted one, its first key slot from --passphrase-file, --key-file,
    /// --backup-passcmd or $CONVOY_BACKUP_PASSPHRASE. Runs in this process.
    Init {
        /// Destination: s3://bucket@region/path or vfs:///path.
        dest: String,
        /// Encrypt everything stored (an AEAD, keyed chunk ids).
        #[arg(long)]
        encrypt: bool,
        /// The cipher of an encrypted store: aes-256-gcm or xchacha20-poly1305. Default:
        /// aes-256-gcm where this CPU has AES instructions, else xchacha20-poly1305.
        #[arg(long, requires = "encrypt")]
        cipher: Option<convoy_backupstore::Cipher>,
    },
    /// Key slots of an encrypted store. Runs in this process.
    Key {
        /// What to do.
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Remove what crashed backups and deletes left at a destination (a whole-store scan
    /// under the exclusive lock); prints what was removed as JSON. Runs in this process.
    Repair {
        /// Destination: s3://bucket@region/path or vfs:///path.
        dest: String,
    },
    /// Rewrite the packs at DEST that deleted backups left mostly unused: their used blocks are
    /// copied into new packs and the old packs removed (under the exclusive lock, which holds
    /// backups off for the run); prints what was done as JSON. Bounded by --max-bytes per run;
    /// run it again to go on. Runs in this process.
    Compact {
        /// Destination: s3://bucket@region/path or vfs:///path.
        dest: String,
        /// Packs whose used fraction is below this are rewritten (between 0 and 1, excluded).
        #[arg(long, default_value_t = convoy_backupstore::DEFAULT_COMPACT_THRESHOLD)]
        threshold: f64,
        /// At most this many bytes of used blocks are copied in one run, e.g. 1G (k/m/g/t are
        /// powers of 1024).
        #[arg(long, default_value = "1G")]
        max_bytes: String,
    },
    /// Convert the original Convoy's backups at OLD_DEST into convoy's format at NEW_DEST
    /// (runs here, without the daemon; resumable; OLD_DEST is only read).
    Import {
        /// The original's store: s3://bucket@region/path or vfs:///path.
        old_dest: String,
        /// Where to write convoy backups: s3://bucket@region/path or vfs:///path.
        new_dest: String,
    },
}
