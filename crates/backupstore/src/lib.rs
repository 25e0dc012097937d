//! # convoy-backupstore
//!
//! The backup engine of convoy: incremental, deduplicated, verified block backups of volumes to
//! `vfs:///path` directories (local or NFS) and `s3://bucket[@region]/path` buckets, through
//! `object_store`. The on-store format is specified in `docs/backup-format.md`.
//!
//! ## Overview
//!
//! * A volume is cut into fixed **chunks** (1 MiB by default, 64 KiB–4 MiB, independent of the
//!   thin pool's block size: ranges are given in bytes). Each non-zero chunk is a **block**
//!   named by the BLAKE3 of its content ([`convoy_blockstore`]), zstd compressed, stored once
//!   per store whatever the volume, inside a **pack** object of about
//!   [`TargetOptions::pack_size`] (16 MiB) that ends with its own index. Zero chunks and
//!   unmapped ranges are holes.
//! * Each backup has one **manifest** listing the whole volume (84 bytes per stored chunk: the
//!   block id and its pack and byte range), streamed out as the backup runs and published
//!   last, atomically and durably: a backup is visible only once complete.
//! * An **incremental** backup reads only the byte ranges it is given and carries every other
//!   chunk from its parent's manifest. "Already stored" is decided from the parent's manifest
//!   and the **store index** (every pack's index, cached locally and kept true by the pack
//!   deletion journal in the store marker), never with a request per chunk.
//! * **Delete** removes the packs no other backup uses, at a cost proportional to the deleted
//!   backup (one reference record per pack plus parent/child links); a **store lock** (shared
//!   for backup, restore and verify; exclusive for delete and repair) keeps concurrent backups
//!   and deletes from losing blocks. **Compaction** rewrites packs that deletes left mostly
//!   unused: their used blocks are copied into new packs and a small forwarding object left
//!   in place of the old pack, so manifests never change.
//! * Store format version 2 (`docs/backup-format.md`); version 1 stores are refused with
//!   [`BackupError::UnsupportedFormat`].
//! * **Encrypted stores** ([`BackupTarget::init`]`(true)`): every pack (blocks and index),
//!   manifest and reference name sealed with XChaCha20-Poly1305, chunk ids keyed, under a random
//!   master key wrapped by key slots (Argon2id passphrase, or key file). The secret comes from
//!   [`TargetOptions::secret`] ([`SecretSource`]); without it, or with a wrong one, every
//!   operation fails with [`BackupError::Key`] before writing anything.
//!
//! ## API
//!
//! | Call | Does | Lock |
//! |---|---|---|
//! | [`BackupTarget::open`]`(dest_url, TargetOptions)` | parse `vfs://` / `s3://` and set up the store (no network I/O) | — |
//! | [`BackupTarget::open_backup`]`(backup_url, opts)` | same, for `<dest>?backup=..&volume=..`; returns the [`BackupRef`] | — |
//! | [`BackupTarget::backup`]`(source, ranges, parent, meta, progress)` | full (`parent = None`) or incremental backup; returns [`BackupOutcome`] (info, ref, [`BackupStats`]) | shared |
//! | [`BackupTarget::restore`]`(backup, sink, options, progress)` | verified parallel ranged reads of packs, holes left sparse | shared (none on a read-only or full `vfs://` filesystem) |
//! | [`BackupTarget::delete`]`(backup)` | delete and collect packs no other backup uses | exclusive |
//! | [`BackupTarget::list`]`(volume)` | backups (of one volume or all) keyed by backup URL | — |
//! | [`BackupTarget::inspect`]`(backup)` | the `backup inspect` record ([`BackupInfo`]) | — |
//! | [`BackupTarget::verify`]`(backup, progress)` | manifest checksum + every block's hash | shared (as restore) |
//! | [`BackupTarget::repair`]`()` | remove leftovers of crashed backups, deletes and compactions (whole-store scan) | exclusive |
//! | [`BackupTarget::compact`]`(options, progress)` | rewrite packs mostly unused ([`CompactOptions`]); returns [`CompactStats`] | exclusive |
//! | [`BackupTarget::init`]`(encrypt)` | create a store (encrypted: master key and first slot) | — |
//! | [`BackupTarget::key_list`], [`BackupTarget::key_add`], [`BackupTarget::key_remove`] | key slots of an encrypted store | — |
//! | [`BackupTarget::is_encrypted`] | whether the marker says encrypted | — |
//! | [`BackupReader::open`]`(target, backup, ReaderOptions)` | random access to one backup: `read_at` fetches and verifies only the chunks touched (coalesced ranged GETs, bounded cache, read-ahead) | shared, held while open |
//! | [`restore_url`], [`delete_url`], [`inspect_url`], [`verify_url`], [`list_url`] | the same by URL, for the CLI and daemon | |
//!
//! The caller supplies a [`BlockSource`] (`read_at`; implemented for `std::fs::File`), a
//! [`BlockSink`] (`write_at`, `finish`; implemented for `std::fs::File`, which fsyncs at the
//! end) and optionally a [`Progress`] ([`NoProgress`] is silent). Errors are one enum,
//! [`BackupError`], whose variants name the URL, backup, block id and volume offset involved.
//! S3 options: [`TargetOptions::s3_endpoint`] (the `--s3-endpoint` flag; `AWS_ENDPOINT`
//! otherwise), credentials from the environment or `~/.aws/credentials` (profile
//! `AWS_PROFILE` or `default`), transient errors retried per [`RetryPolicy`].
//!
//! ## Usage
//!
//! ```no_run
//! use std::sync::Arc;
//! use convoy_backupstore::{BackupMeta, BackupTarget, NoProgress, RestoreOptions, TargetOptions};
//! # async fn demo() -> Result<(), convoy_backupstore::BackupError> {
//! let target = BackupTarget::open("vfs:///var/backups", TargetOptions::default())?;
//! let image = Arc::new(std::fs::File::open("/dev/mapper/snap").unwrap());
//! let meta = BackupMeta {
//!     driver_name: "devicemapper".into(),
//!     volume_name: "vol1".into(),
//!     volume_size: 1 << 30,
//!     snapshot_name: "snap1".into(),
//!     ..Default::default()
//! };
//! // Full backup of the mapped ranges; pass the changed ranges and `Some(parent)` for an
//! // incremental one.
//! let done = target
//!     .backup(image, &[0..(1 << 30)], None, meta, &NoProgress)
//!     .await?;
//! println!("{}", done.info.backup_url);
//! let out = Arc::new(std::fs::File::create("/tmp/restored").unwrap());
//! target
//!     .restore(&done.backup, out, &RestoreOptions::default(), &NoProgress)
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! The functions [`restore_url`], [`delete_url`], [`inspect_url`], [`verify_url`] and
//! [`list_url`] take the URLs the CLI passes around (`<dest>?backup=<name>&volume=<name>`).

mod aws_files;
mod backup;
mod compact;
mod crypto;
mod delete;
mod direct;
mod error;
mod first_contact;
mod forward;
#[doc(hidden)]
pub mod fuzzing;
mod gate;
mod gc;
mod gone;
mod index;
mod kek_cache;
mod keys;
mod layout;
pub mod legacy;
mod list;
mod lock;
mod manifest;
mod options;
mod packer;
mod publish;
mod reader;
mod repair;
mod restore;
mod sealed;
mod slot_hint;
mod store;
mod target_keys;
#[doc(hidden)]
pub mod testing;
mod types;
mod url;
mod worker;

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

pub use aws_files::StaticCredentials;
pub use crypto::{Cipher, KdfParams, SecretSource, PASSPHRASE_ENV};
pub use direct::{write_all_direct, DirectFile};
pub use error::{BackupError, Result};
pub use keys::SlotInfo;
pub use manifest::{ENTRY_LEN, FORMAT_VERSION};
pub use options::{
    LockPolicy, RetryPolicy, TargetOptions, DEFAULT_CHUNK_SIZE, DEFAULT_PACK_SIZE, MAX_CHUNK_SIZE,
    MAX_PACK_SIZE, MIN_CHUNK_SIZE, MIN_PACK_SIZE,
};
pub use reader::{BackupReader, ChunkFetch, ReaderOptions, ReaderStats};
pub use types::{
    BackupInfo, BackupMeta, BackupOutcome, BackupStats, BlockSink, BlockSource, CompactOptions,
    CompactStats, DeleteStats, NoProgress, Progress, RepairStats, RestoreOptions, RestoreStats,
    DEFAULT_COMPACT_MAX_BYTES, DEFAULT_COMPACT_THRESHOLD,
};
pub use url::{backup_url, parse_backup_url, parse_destination, BackupRef, Destination};

use keys::MarkerCipher;
use lock::{LockGuard, LockKind};
use manifest::{ManifestHeader, FORMAT_VERSION as MANIFEST_VERSION};
use store::Store;

/// The store marker as read: its cipher and pack deletion journal; `None`: the store has none.
type MarkerSeen = Option<(MarkerCipher, Option<gone::Journal>)>;

/// When a backup run sends its first reads (the store marker, the name, the parent's manifest).
#[derive(Clone, Copy)]
enum FirstReadsAt {
    /// Beside the lock's requests: one round trip less; what they answered is checked again
    /// under the lock before publishing.
    BesideTheLock,
    /// Once the lock is held: nothing can delete packs between the reads and the publishing.
    UnderTheLock,
}

/// How one run of a backup goes.
#[derive(Clone, Copy)]
struct RunMode {
    first_reads: FirstReadsAt,
    /// The backup's name was made for this call (see `backup::BackupJob::owns_name`).
    owns_name: bool,
}

/// An open backup destination.
#[derive(Clone)]
pub struct BackupTarget {
    store: Arc<Store>,
    opts: TargetOptions,
}

impl std::fmt::Debug for BackupTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupTarget")
            .field("dest", &self.store.dest)
            .finish()
    }
}

/// Runs `f` under a lock of `kind`, releasing it afterwards whatever the outcome.
async fn locked<T, F>(t: &BackupTarget, kind: LockKind, op: &str, f: F) -> Result<T>
where
    F: std::future::Future<Output = Result<T>>,
{
    let guard = LockGuard::acquire(t.store.clone(), kind, op, &t.opts.lock).await?;
    let out = f.await;
    let released = guard.release().await;
    let value = out?;
    released?;
    Ok(value)
}

/// Bytes of chunks a backup reads and encodes ahead while its first round trips (the lock's
/// write and listing, the parent's manifest) are under way: a 1% change of a 1 GiB volume
/// (10–12 MiB) is then encoded when the lock is held. At 8 chunks its last chunks were still
/// being encoded then: its pack went out 14–26 ms after the lock's listing returned, with 16
/// MiB 12–16 ms after (20 ms per request, traced by `bench_s3 --proxy`). At least
/// `parallelism` chunks, at most 64.
const PREFETCH_BYTES: u64 = 16 << 20;

/// Whether `e` comes from a local filesystem that refuses writes (mounted read-only, or full).
fn refuses_writes(e: &BackupError) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::{QuotaExceeded, ReadOnlyFilesystem, StorageFull};
            if matches!(io.kind(), ReadOnlyFilesystem | StorageFull | QuotaExceeded) {
                return true;
            }
        }
        cause = c.source();
    }
    false
}

/// Runs a read-only operation (restore, verify) under a shared lock; on a `vfs://` store
/// whose filesystem refuses the lock record (a read-only mount, a full disk) runs it without
/// one, so that backups stay restorable from such a store. Without the lock a delete made
/// elsewhere could remove blocks as they are read; the read then fails with a missing block
/// (every block is verified), never returns wrong data.
async fn locked_read<T, F>(t: &BackupTarget, op: &str, f: F) -> Result<T>
where
    F: std::future::Future<Output = Result<T>>,
{
    match LockGuard::acquire(t.store.clone(), LockKind::Shared, op, &t.opts.lock).await {
        Ok(guard) => {
            let out = f.await;
            let released = guard.release().await;
            let value = out?;
            released?;
            Ok(value)
        }
        Err(e) if t.store.local_root.is_some() && refuses_writes(&e) => f.await,
        Err(e) => Err(e),
    }
}

impl BackupTarget {
    /// Opens a destination URL (`vfs:///path`, `s3://bucket@region/path`, `s3://bucket/path`).
    /// No network I/O happens here; a `vfs://` directory is created if missing.
    pub fn open(dest_url: &str, options: TargetOptions) -> Result<Self> {
        let c = options.chunk_size;
        if !c.is_power_of_two() || !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&c) {
            return Err(BackupError::InvalidArgument(format!(
                "chunk size {c} must be a power of two from {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE}"
            )));
        }
        let p = options.pack_size;
        if !(MIN_PACK_SIZE..=MAX_PACK_SIZE).contains(&p) {
            return Err(BackupError::InvalidArgument(format!(
                "pack size {p} must be from {MIN_PACK_SIZE} to {MAX_PACK_SIZE} bytes"
            )));
        }
        if options.multipart_above < (5 << 20) {
            return Err(BackupError::InvalidArgument(format!(
                "multipart part size {} must be at least 5 MiB (the S3 minimum)",
                options.multipart_above
            )));
        }
        if options.limit_upload == Some(0) {
            return Err(BackupError::InvalidArgument(
                "upload limit must be more than 0 bytes/s".into(),
            ));
        }
        Ok(BackupTarget {
            store: Arc::new(Store::open(dest_url, &options)?),
            opts: options,
        })
    }

    /// Opens the destination of a backup URL and returns the backup it names.
    pub fn open_backup(backup_url: &str, options: TargetOptions) -> Result<(Self, BackupRef)> {
        let (dest, r) = parse_backup_url(backup_url)?;
        Ok((Self::open(&dest, options)?, r))
    }

    /// The destination URL.
    pub fn dest_url(&self) -> &str {
        &self.store.dest
    }

    /// Waits for the requests an operation left running when it returned: the removal of a
    /// backup's lock record, which a backup does not wait for (once its manifest is published,
    /// lockers treat the record as released). A process about to exit calls it to leave no
    /// record behind; a record left behind is removed by the next delete, compaction or
    /// repair, at the cost of one request to see that its backup exists.
    pub async fn settle(&self) {
        self.store.settle().await;
    }

    /// Requests this target has sent to the store so far (a listing counts once per call, a
    /// multipart upload once per part plus two).
    pub fn requests(&self) -> u64 {
        self.store
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The URL of one backup at this destination.
    pub fn backup_url(&self, r: &BackupRef) -> String {
        backup_url(&self.store.dest, r)
    }

    /// Backs up `source`: reads the chunks covering `ranges` (bytes; every mapped range for a
    /// full backup, the changed ranges for an incremental one), carries every other chunk from
    /// `parent` (a backup of the same volume at this destination), and publishes the manifest.
    pub async fn backup(
        &self,
        source: Arc<dyn BlockSource>,
        ranges: &[Range<u64>],
        parent: Option<&str>,
        meta: BackupMeta,
        progress: &dyn Progress,
    ) -> Result<BackupOutcome> {
        if meta.volume_size == 0 {
            return Err(BackupError::InvalidArgument(format!(
                "volume {} has size 0",
                meta.volume_name
            )));
        }
        if let Some(r) = ranges
            .iter()
            .find(|r| r.start > r.end || r.end > meta.volume_size)
        {
            return Err(BackupError::InvalidArgument(format!(
                "range {}..{} is outside volume {} of {} bytes",
                r.start, r.end, meta.volume_name, meta.volume_size
            )));
        }
        let owns_name = meta.backup_name.is_none();
        let name = meta.backup_name.clone().unwrap_or_else(|| {
            format!(
                "backup-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..16]
            )
        });
        let header = ManifestHeader {
            format_version: MANIFEST_VERSION,
            backup_name: name,
            backup_uuid: uuid::Uuid::new_v4().to_string(),
            driver_name: meta.driver_name,
            volume_name: meta.volume_name,
            volume_uuid: meta.volume_uuid,
            volume_size: meta.volume_size,
            volume_created_at: meta.volume_created_at,
            snapshot_name: meta.snapshot_name,
            snapshot_uuid: meta.snapshot_uuid,
            snapshot_created_at: meta.snapshot_created_at,
            created_time: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            chunk_size: self.opts.chunk_size,
            parent: None,
            cipher: manifest::cipher_none(),
            key_id: None,
        };
        // A run that finds the store changed under it as it started publishes nothing and is
        // made once more, with its first reads after the lock is held: nothing that deletes
        // packs can run between them then, so the second run cannot conflict again (however
        // often deletes and compactions come).
        match self
            .backup_run(
                source.clone(),
                ranges,
                parent,
                header.clone(),
                progress,
                RunMode {
                    first_reads: FirstReadsAt::BesideTheLock,
                    owns_name,
                },
            )
            .await
        {
            Err(BackupError::Conflict { .. }) => {
                self.backup_run(
                    source,
                    ranges,
                    parent,
                    header,
                    progress,
                    RunMode {
                        first_reads: FirstReadsAt::UnderTheLock,
                        owns_name,
                    },
                )
                .await
            }
            r => r,
        }
    }

    /// One run of [`Self::backup`].
    async fn backup_run(
        &self,
        source: Arc<dyn BlockSource>,
        ranges: &[Range<u64>],
        parent: Option<&str>,
        mut header: ManifestHeader,
        progress: &dyn Progress,
        mode: RunMode,
    ) -> Result<BackupOutcome> {
        // Refused here, before any request, if the names do not make a backup's place.
        let me = &BackupRef::new(&header.volume_name, &header.backup_name)?;
        // Without a key there is nothing to derive before writing: the store marker is read
        // beside the lock's write (one round trip less on a distant store). A marker that
        // says the store is encrypted then fails the backup and the lock is removed, so the
        // store is left as it was. With a key, the key is opened first, before any write.
        let early = self.opts.secret.is_none() && self.store.keys.get().is_none();
        // The first chunks are read and encoded meanwhile (see `backup::Prefetch`).
        let volume_size = header.volume_size;
        let read_ahead = |keys: Option<Arc<crypto::Keys>>| {
            backup::Prefetch::start(
                &source,
                ranges,
                u64::from(self.opts.chunk_size),
                volume_size,
                self.opts.zstd_level,
                keys,
                ((PREFETCH_BYTES / u64::from(self.opts.chunk_size.max(1))) as usize)
                    .max(self.opts.parallelism)
                    .clamp(1, 64),
            )
        };
        let mut prefetch = early.then(|| read_ahead(None));
        // Whether the store's encryption is what the options say, and the manifest's cipher.
        let check_keys = |keys: &Option<Arc<crypto::Keys>>, header: &mut ManifestHeader| match keys
        {
            Some(k) => {
                header.cipher = k.cipher().name().into();
                header.key_id = Some(crypto::hex(&k.store_id));
                Ok(())
            }
            None if self.opts.secret.is_some() => Err(BackupError::Key {
                dest: self.store.dest.clone(),
                reason: "a backup key was given but the store is not encrypted (or does \
                             not exist yet): create an encrypted store with `convoy backup \
                             init DEST --encrypt`, or give no key for an unencrypted one"
                    .into(),
            }),
            None => Ok(()),
        };
        let mut seen = None;
        if !early {
            // Nothing is written before the key is known to fit.
            let (keys, marker) = self.unlock_reading().await?;
            check_keys(&keys, &mut header)?;
            prefetch = Some(read_ahead(keys));
            seen = marker;
        }
        // The lock is taken while the run starts: its first reads (the marker, the name, the
        // parent's manifest) go out beside the lock's write and listing (they depend on nothing
        // the lock answers, and the run checks what they answered again, under the lock,
        // before it publishes), and its local work (reading, hashing, packing, the store index
        // from the cache) goes on meanwhile. Whatever writes to the store, or reads what only
        // the lock keeps true, waits at the gate until the lock is held.
        let (keeper, gate) = gate::Gate::new();
        let lock = async {
            let guard = LockGuard::acquire_publishing(
                self.store.clone(),
                LockKind::Shared,
                "backup",
                &self.opts.lock,
                mode.owns_name.then_some(me),
            )
            .await;
            if guard.is_ok() {
                keeper.open();
            }
            guard
        };
        let work = {
            let gate = gate.clone();
            async move {
                if matches!(mode.first_reads, FirstReadsAt::UnderTheLock) {
                    gate.wait().await?;
                }
                let marker = Box::pin(async {
                    if early {
                        seen = self.unlock_reading().await?.1;
                    }
                    self.ensure_marker(seen).await
                });
                let first =
                    backup::FirstReads::read(&self.store, me, parent, marker, mode.owns_name)
                        .await?;
                if early {
                    // Opened by the first reads (no request now); without a key it cannot
                    // fail.
                    let keys = self.unlock().await?;
                    check_keys(&keys, &mut header)?;
                }
                backup::run(backup::BackupJob {
                    store: self.store.clone(),
                    source,
                    ranges,
                    parent,
                    header,
                    parallelism: self.opts.parallelism,
                    level: self.opts.zstd_level,
                    packing: packer::PackerConfig {
                        pack_size: self.opts.pack_size,
                        multipart_above: self.opts.multipart_above,
                        max_uploads: 3,
                        limit_upload: self.opts.limit_upload,
                    },
                    progress,
                    first,
                    prefetch,
                    owns_name: mode.owns_name,
                    gate,
                })
                .await
            }
        };
        let (lock, work) = (Box::pin(lock), Box::pin(work));
        let (stats, written) = match futures::future::select(lock, work).await {
            futures::future::Either::Left((Ok(guard), work)) => match work.await {
                // Published: a record that names its backup is treated as released from now
                // on, so the run does not wait for its removal; another is removed first.
                Ok(done) if mode.owns_name => {
                    guard.let_go();
                    done
                }
                Ok(done) => {
                    guard.release().await?;
                    done
                }
                Err(e) => {
                    let _ = guard.release().await;
                    return Err(e);
                }
            },
            // The gate is closed: the run stops at its first write, having written nothing.
            futures::future::Either::Left((Err(e), _work)) => return Err(e),
            // The run failed before the lock was held (it cannot publish without it): the
            // acquisition is dropped, and the record it wrote, if any, removed before the
            // error is answered.
            futures::future::Either::Right((Err(e), lock)) => {
                drop(lock);
                self.store.settle().await;
                return Err(e);
            }
            futures::future::Either::Right((Ok(_), _)) => {
                return Err(BackupError::Task(
                    "a backup ended without its lock being held".into(),
                ))
            }
        };
        // From the header just published, not read back: one request less per backup.
        let info = BackupInfo::from_header(self.backup_url(me), &written);
        Ok(BackupOutcome {
            info,
            backup: me.clone(),
            stats,
        })
    }

    /// Writes the marker of an unencrypted store if the store has none; checks that the store
    /// is still what [`Self::unlock`] found (encrypted with the same id, or not). Answers the
    /// pack deletion journal the marker holds (`None`: none, or not a readable one).
    /// `seen`: the marker as this operation's [`Self::unlock_reading`] just read it (then it
    /// is not read again).
    async fn ensure_marker(&self, seen: Option<MarkerSeen>) -> Result<Option<gone::Journal>> {
        let want = match self.store.keys() {
            Some(k) => MarkerCipher::Sealed(k.store_id, k.cipher()),
            None => MarkerCipher::None,
        };
        let seen = match seen {
            Some(s) => s,
            None => keys::read_marker_journal(&self.store).await?,
        };
        match seen {
            Some((found, journal)) if found == want => Ok(journal),
            Some(_) => Err(BackupError::Key {
                dest: self.store.dest.clone(),
                reason: "the store's marker changed while in use (encryption turned on or off, \
                         or another store id)"
                    .into(),
            }),
            None if want == MarkerCipher::None => {
                let journal = gone::Journal::fresh();
                let created = self
                    .store
                    .put_new(&layout::marker(), keys::marker_body_with(&want, &journal))
                    .await?;
                Ok(created.then_some(journal))
            }
            None => Err(BackupError::Key {
                dest: self.store.dest.clone(),
                reason: "the store marker of this encrypted store disappeared".into(),
            }),
        }
    }

    /// Reads the store marker and, for an encrypted store, opens its master key with
    /// [`TargetOptions::secret`]; done once per target, before any data is read or written.
    /// Returns the keys (`None`: not encrypted, or no store yet).
    async fn unlock(&self) -> Result<Option<Arc<crypto::Keys>>> {
        Ok(self.unlock_reading().await?.0)
    }

    /// [`Self::unlock`], also answering what the marker said when this call read it (`None`:
    /// the keys were known already, nothing was read): a backup takes it as its first read of
    /// the marker instead of reading it again.
    async fn unlock_reading(&self) -> Result<(Option<Arc<crypto::Keys>>, Option<MarkerSeen>)> {
        if let Some(k) = self.store.keys.get() {
            return Ok((k.clone(), None));
        }
        // With a key given, the store's key slots are read beside the marker (wasted on an
        // unencrypted store, which a key does not open anyway).
        let (seen, slots) = match &self.opts.secret {
            Some(_) => {
                let (marker, slots) = futures::join!(
                    keys::read_marker_journal(&self.store),
                    keys::read_slots(&self.store)
                );
                (marker?, Some(slots))
            }
            None => (keys::read_marker_journal(&self.store).await?, None),
        };
        let marker = seen.as_ref().map(|(c, _)| c.clone());
        let keys = match marker {
            None | Some(MarkerCipher::None) => None,
            Some(MarkerCipher::Sealed(id, cipher)) => {
                let (Some(src), Some(slots)) = (&self.opts.secret, slots) else {
                    return Err(BackupError::Key {
                        dest: self.store.dest.clone(),
                        reason: format!(
                            "the store is encrypted ({cipher}) and no key was given: give \
                             its passphrase (--passphrase-file, CONVOY_BACKUP_PASSPHRASE or \
                             --backup-passcmd) or its key file (--key-file)"
                        ),
                    });
                };
                Some(Arc::new(
                    keys::open_slots(&self.store, id, cipher, src, slots?).await?,
                ))
            }
        };
        let _ = self.store.keys.set(keys);
        Ok((self.store.keys.get().cloned().flatten(), Some(seen)))
    }

    /// Restores backup `r` into `sink` (holes are not written unless `options.zero_holes`).
    pub async fn restore(
        &self,
        r: &BackupRef,
        sink: Arc<dyn BlockSink>,
        options: &RestoreOptions,
        progress: &dyn Progress,
    ) -> Result<RestoreStats> {
        self.unlock().await?;
        locked_read(self, "restore", async {
            restore::restore(
                &self.store,
                r,
                sink,
                options,
                self.opts.parallelism,
                progress,
            )
            .await
        })
        .await
    }

    /// Deletes backup `r` and every block no other backup uses.
    pub async fn delete(&self, r: &BackupRef) -> Result<DeleteStats> {
        self.unlock().await?;
        locked(
            self,
            LockKind::Exclusive,
            "delete",
            delete::delete(&self.store, r),
        )
        .await
    }

    /// Lists backups, of one volume or of all, keyed by backup URL.
    pub async fn list(&self, volume: Option<&str>) -> Result<BTreeMap<String, BackupInfo>> {
        self.unlock().await?;
        list::list(&self.store, volume).await
    }

    /// The `backup inspect` record of backup `r`.
    pub async fn inspect(&self, r: &BackupRef) -> Result<BackupInfo> {
        self.unlock().await?;
        let h = list::header(&self.store, r).await?;
        Ok(BackupInfo::from_header(self.backup_url(r), &h))
    }

    /// Checks that backup `r` is complete and every block it references hashes right.
    pub async fn verify(&self, r: &BackupRef, progress: &dyn Progress) -> Result<RestoreStats> {
        self.unlock().await?;
        locked_read(self, "verify", async {
            restore::verify(&self.store, r, self.opts.parallelism, progress).await
        })
        .await
    }

    /// Rewrites the packs whose used fraction is below `options.threshold`, least used first,
    /// copying at most `options.max_bytes` of used blocks (see `docs/backup-format.md`,
    /// "Compaction"); first removes what crashed backups, deletes and compactions left. Reads
    /// every manifest (a whole-store pass, like `repair`). `progress` hears the bytes to copy
    /// (`start`), each pack rewritten (`advance`, its used bytes) and each pack written
    /// (`uploaded`).
    pub async fn compact(
        &self,
        options: &CompactOptions,
        progress: &dyn Progress,
    ) -> Result<CompactStats> {
        let t = options.threshold;
        if !(t > 0.0 && t < 1.0) {
            return Err(BackupError::InvalidArgument(format!(
                "compaction threshold {t} must be between 0 and 1 (both excluded)"
            )));
        }
        self.unlock().await?;
        let output = compact::Output {
            pack_size: self.opts.pack_size,
            multipart_above: self.opts.multipart_above,
        };
        locked(
            self,
            LockKind::Exclusive,
            "compact",
            compact::compact(&self.store, options, &output, progress),
        )
        .await
    }

    /// A target on the same store whose writes go through `faults` (crash tests only).
    #[doc(hidden)]
    pub fn with_faults(&self, faults: Arc<testing::Faults>) -> BackupTarget {
        let s = &self.store;
        let store = Store {
            dest: s.dest.clone(),
            objects: Arc::new(testing::Faulty {
                inner: s.objects.clone(),
                faults,
            }),
            local_root: s.local_root.clone(),
            cache_dir: s.cache_dir.clone(),
            index_cache: std::sync::Mutex::new(None),
            requests: std::sync::atomic::AtomicU64::new(0),
            credentials_search: s.credentials_search.clone(),
            keys: std::sync::OnceLock::new(),
            background: Default::default(),
        };
        BackupTarget {
            store: Arc::new(store),
            opts: self.opts.clone(),
        }
    }

    /// Removes leftovers of crashed backups and deletes (full scan; see [`RepairStats`]).
    pub async fn repair(&self) -> Result<RepairStats> {
        self.unlock().await?;
        locked(
            self,
            LockKind::Exclusive,
            "repair",
            repair::repair(&self.store),
        )
        .await
    }
}

/// Restores the backup at `backup_url` into `sink`.
pub async fn restore_url(
    backup_url: &str,
    sink: Arc<dyn BlockSink>,
    target: TargetOptions,
    options: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreStats> {
    let (t, r) = BackupTarget::open_backup(backup_url, target)?;
    t.restore(&r, sink, options, progress).await
}

/// Deletes the backup at `backup_url`.
pub async fn delete_url(backup_url: &str, target: TargetOptions) -> Result<DeleteStats> {
    let (t, r) = BackupTarget::open_backup(backup_url, target)?;
    t.delete(&r).await
}

/// Inspects the backup at `backup_url`.
pub async fn inspect_url(backup_url: &str, target: TargetOptions) -> Result<BackupInfo> {
    let (t, r) = BackupTarget::open_backup(backup_url, target)?;
    t.inspect(&r).await
}

/// Verifies the backup at `backup_url`.
pub async fn verify_url(backup_url: &str, target: TargetOptions) -> Result<RestoreStats> {
    let (t, r) = BackupTarget::open_backup(backup_url, target)?;
    t.verify(&r, &NoProgress).await
}

/// Lists the backups at `dest_url` (of `volume`, or all).
pub async fn list_url(
    dest_url: &str,
    volume: Option<&str>,
    target: TargetOptions,
) -> Result<BTreeMap<String, BackupInfo>> {
    BackupTarget::open(dest_url, target)?.list(volume).await
}
