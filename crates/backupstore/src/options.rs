//! Options of a backup target.

use std::path::PathBuf;
use std::time::Duration;

use crate::aws_files::StaticCredentials;
use crate::crypto::{Cipher, KdfParams, SecretSource};

/// Smallest accepted backup chunk size (64 KiB).
pub const MIN_CHUNK_SIZE: u32 = 64 << 10;
/// Largest accepted backup chunk size (4 MiB).
pub const MAX_CHUNK_SIZE: u32 = 4 << 20;
/// Default backup chunk size (1 MiB).
pub const DEFAULT_CHUNK_SIZE: u32 = 1 << 20;

/// Smallest accepted pack size (1 MiB).
pub const MIN_PACK_SIZE: usize = 1 << 20;
/// Largest accepted pack size (1 GiB).
pub const MAX_PACK_SIZE: usize = 1 << 30;
/// Default pack size (see `docs/benchmarks.md` for the measurement behind it).
pub const DEFAULT_PACK_SIZE: usize = 16 << 20;

/// How a target is opened and how its operations run.
#[derive(Clone, Debug)]
pub struct TargetOptions {
    /// S3 endpoint override (the `--s3-endpoint` flag); `AWS_ENDPOINT` is used when `None`.
    pub s3_endpoint: Option<String>,
    /// Explicit S3 credentials, taking precedence over every other source.
    pub s3_credentials: Option<StaticCredentials>,
    /// Credentials file to read instead of `AWS_SHARED_CREDENTIALS_FILE` / `~/.aws/credentials`.
    pub aws_credentials_file: Option<PathBuf>,
    /// Profile to use instead of `AWS_PROFILE` / `default`.
    pub aws_profile: Option<String>,
    /// Backup chunk size in bytes: a power of two from [`MIN_CHUNK_SIZE`] to
    /// [`MAX_CHUNK_SIZE`], independent of the pool's block size. Used for new backups; an
    /// incremental backup uses its parent's.
    pub chunk_size: u32,
    /// How many chunks are in flight at once (read, hash, compress, upload or download).
    /// Memory use is about `2 × parallelism × chunk_size`.
    pub parallelism: usize,
    /// zstd level for new blocks.
    pub zstd_level: i32,
    /// Target size of the pack objects new blocks are gathered into (format 2), from
    /// [`MIN_PACK_SIZE`] to [`MAX_PACK_SIZE`]. Larger packs mean fewer requests and objects;
    /// memory use grows by about three packs.
    pub pack_size: usize,
    /// Packs larger than this are sent as a multipart upload of parts of this size (up to 4
    /// parts at once); smaller ones in a single PUT.
    pub multipart_above: usize,
    /// Upload bandwidth limit in bytes per second (`None`: unlimited). Packs are paced so
    /// that a backup's average upload rate stays under it.
    pub limit_upload: Option<u64>,
    /// Where the store index (the list of every pack's blocks) is cached between runs.
    /// `None`: for `s3://`, `$XDG_CACHE_HOME/convoy/backupstore/<hash of the URL>` (or under
    /// `~/.cache`); for `vfs://`, not cached (packs are read locally). The cache is checked
    /// against the store's list of packs on every use, so a stale or missing cache only costs
    /// the requests to rebuild it.
    pub cache_dir: Option<PathBuf>,
    /// Retries of transient S3 errors.
    pub retry: RetryPolicy,
    /// Store lock timing.
    pub lock: LockPolicy,
    /// The secret of an encrypted store (read when the store is first used, never logged).
    /// Needed for every operation on an encrypted store except `list`ing key slots; with a
    /// secret given, a backup refuses a store that is not encrypted (so that a replaced marker
    /// cannot turn encryption off).
    pub secret: Option<SecretSource>,
    /// Argon2id cost of new passphrase slots (`backup init --encrypt`, `backup key add`).
    pub kdf: KdfParams,
    /// The cipher of a store created encrypted (`backup init --encrypt --cipher`); `None`:
    /// [`Cipher::preferred`] on this machine. Existing stores keep the cipher they were made
    /// with.
    pub cipher: Option<Cipher>,
}

impl TargetOptions {
    /// The cipher a store created encrypted with these options gets: [`Self::cipher`], else
    /// [`Cipher::preferred`].
    pub fn new_store_cipher(&self) -> Cipher {
        self.cipher.unwrap_or_else(Cipher::preferred)
    }
}

impl Default for TargetOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        TargetOptions {
            s3_endpoint: None,
            s3_credentials: None,
            aws_credentials_file: None,
            aws_profile: None,
            chunk_size: DEFAULT_CHUNK_SIZE,
            parallelism: (cores * 4).clamp(8, 64),
            zstd_level: 3,
            pack_size: DEFAULT_PACK_SIZE,
            multipart_above: 64 << 20,
            limit_upload: None,
            cache_dir: None,
            retry: RetryPolicy::default(),
            lock: LockPolicy::default(),
            secret: None,
            kdf: KdfParams::default(),
            cipher: None,
        }
    }
}

/// Retry with exponential backoff of transient store errors (5xx, throttling, connection
/// failures); given to `object_store`'s HTTP client for S3 targets.
///
/// `object_store` draws each delay at random between `initial_backoff` and twice the previous
/// one ("decorrelated jitter"), so delays grow by about `initial_backoff / 2` per retry on
/// average, not by doubling: 8 retries from 100 ms gave up after about 2 s. The defaults (16
/// retries from 500 ms) ride out an outage of about 13 s in 99 % of requests and 26 s in half
/// of them, and give up on a dead endpoint after about half a minute.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: usize,
    /// First backoff delay.
    pub initial_backoff: Duration,
    /// Largest backoff delay.
    pub max_backoff: Duration,
    /// Give up retrying after this long.
    pub timeout: Duration,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 16,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(15),
            timeout: Duration::from_secs(180),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Timing of the store lock (see `docs/backup-format.md`, "Locking").
#[derive(Clone, Debug)]
pub struct LockPolicy {
    /// How long to wait for a conflicting lock to go away before failing.
    pub wait: Duration,
    /// How often a held lock is refreshed.
    pub refresh: Duration,
    /// A lock not refreshed for this long is stale and removed by the next locker.
    pub stale_after: Duration,
}

impl Default for LockPolicy {
    fn default() -> Self {
        LockPolicy {
            wait: Duration::from_secs(600),
            refresh: Duration::from_secs(120),
            stale_after: Duration::from_secs(900),
        }
    }
}
