//! Gathers the new blocks of a backup into pack objects of about `pack_size` bytes and
//! uploads them, a few at once, each after the backup's reference record for it; writes the
//! backup's reference to every other pack it uses. Memory: the pack being filled plus at most
//! `max_uploads` packs being sent.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use convoy_blockstore::{BlockId, PackBuilder};
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};

use crate::error::Result;
use crate::gate::Gate;
use crate::layout;
use crate::manifest::Loc;
use crate::sealed::{finish_sealed_pack, sealed_pack_builder};
use crate::store::Store;
use crate::url::BackupRef;

/// How packs are made and sent.
#[derive(Clone, Debug)]
pub(crate) struct PackerConfig {
    /// Target pack size in bytes.
    pub pack_size: usize,
    /// Packs above this go as multipart uploads.
    pub multipart_above: usize,
    /// Uploads (packs or references) in flight at once.
    pub max_uploads: usize,
    /// Upload bandwidth limit in bytes per second.
    pub limit_upload: Option<u64>,
}

/// Paces uploads to a rate: each upload waits until the bytes sent before it, at `rate`,
/// would have taken as long as has passed since the start.
pub(crate) struct Pacer {
    start: Instant,
    rate: u64,
    reserved: std::sync::Mutex<u64>,
}

impl Pacer {
    /// A pacer of `rate` bytes per second.
    pub fn new(rate: u64) -> Self {
        Pacer {
            start: Instant::now(),
            rate: rate.max(1),
            reserved: std::sync::Mutex::new(0),
        }
    }

    /// Reserves `n` more bytes; returns when, after the start, they may be sent: once every
    /// byte reserved so far, these included, would have gone at the rate. So no upload starts
    /// before the average rate since the start allows all of it, and a backup's average never
    /// exceeds the limit. (Counting only the bytes *before* it let the last pack go early: 64
    /// MiB in 16 MiB packs at 16 MiB/s took 3.2 s, 20 MiB/s on average.)
    fn reserve(&self, n: u64) -> Duration {
        let mut r = self.reserved.lock().unwrap_or_else(|p| p.into_inner());
        *r += n;
        Duration::from_secs_f64(*r as f64 / self.rate as f64)
    }

    /// Waits until `n` more bytes may be sent.
    pub async fn admit(&self, n: u64) {
        let due = self.start + self.reserve(n);
        tokio::time::sleep_until(due).await;
    }
}

/// Random pack id (packs are named at creation; their content is verified block by block).
pub(crate) fn new_pack_id() -> BlockId {
    let mut id = [0u8; 32];
    id[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    id[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    BlockId(id)
}

/// The packer of one backup.
pub(crate) struct Packer {
    store: Arc<Store>,
    me: BackupRef,
    cfg: PackerConfig,
    pacer: Option<Arc<Pacer>>,
    current: Option<(BlockId, PackBuilder)>,
    mine: HashMap<BlockId, Loc>,
    referenced: HashSet<BlockId>,
    /// Uploads in flight, each answering the bytes of pack it held.
    inflight: FuturesUnordered<BoxFuture<'static, Result<u64>>>,
    /// Bytes of the packs in `inflight`.
    inflight_bytes: u64,
    packs: u64,
    /// Every upload but a pack's waits here until the backup's lock is held.
    gate: Gate,
}

/// Bytes of packs being sent at once, whatever the pack size (at least one pack goes): with
/// the pack being filled, a backup's packs take at most this plus one pack of memory. At the
/// default 16 MiB it allows `max_uploads` (3) packs; at 32 MiB one (measured in
/// `docs/benchmarks.md`, "convoy by pack size": peak RSS grew with pack size times the uploads).
const UPLOAD_BYTES_IN_FLIGHT: u64 = 48 << 20;

impl Packer {
    /// A packer writing for backup `me`.
    pub fn new(store: Arc<Store>, me: BackupRef, cfg: PackerConfig, gate: Gate) -> Self {
        Packer {
            store,
            me,
            pacer: cfg.limit_upload.map(|r| Arc::new(Pacer::new(r))),
            cfg,
            current: None,
            mine: HashMap::new(),
            referenced: HashSet::new(),
            inflight: FuturesUnordered::new(),
            inflight_bytes: 0,
            packs: 0,
            gate,
        }
    }

    /// Starts upload `f`, which holds `bytes` of pack, once there is room for it: fewer than
    /// `max_uploads` in flight and their packs within [`UPLOAD_BYTES_IN_FLIGHT`] (an upload
    /// always starts when none is in flight).
    async fn push(&mut self, bytes: u64, f: BoxFuture<'static, Result<u64>>) -> Result<()> {
        while !self.inflight.is_empty()
            && (self.inflight.len() >= self.cfg.max_uploads.max(1)
                || self.inflight_bytes + bytes > UPLOAD_BYTES_IN_FLIGHT)
        {
            if let Some(r) = self.inflight.next().await {
                self.inflight_bytes -= r?;
            }
        }
        self.inflight_bytes += bytes;
        self.inflight.push(f);
        Ok(())
    }

    /// The store written to.
    pub fn store(&self) -> Arc<Store> {
        self.store.clone()
    }

    /// Adds a new block (encoded); returns where it is stored and whether it was added (false:
    /// this backup already stored the same content).
    pub async fn add(&mut self, id: BlockId, encoded: &[u8], raw_len: u32) -> Result<(Loc, bool)> {
        if let Some(l) = self.mine.get(&id) {
            return Ok((*l, false));
        }
        // A pack is sent once it reaches `pack_size`; it is allocated with an eighth more, for
        // the blob that crosses the size and the index, and sent before a blob would outgrow
        // that: a pack that grew past its allocation would be copied into one twice as large
        // (a full backup's peak RSS rose by ~100 MiB so).
        if self
            .current
            .as_ref()
            .is_some_and(|(_, b)| !b.fits(encoded.len()))
        {
            self.flush().await?;
        }
        let cap = self.cfg.pack_size;
        let room = cap + cap / 8;
        let keys = self.store.keys();
        let (pack, builder) = self.current.get_or_insert_with(|| {
            let b = match keys {
                Some(k) => sealed_pack_builder(room, k),
                None => PackBuilder::new(room),
            };
            (new_pack_id(), b)
        });
        let e = builder.push(id, encoded, raw_len);
        let loc = Loc {
            pack: *pack,
            offset: e.offset,
            stored_len: e.stored_len,
        };
        self.mine.insert(id, loc);
        if builder.len() >= cap || !builder.fits(0) {
            self.flush().await?;
        }
        Ok((loc, true))
    }

    /// Sends the pack being filled and its reference record.
    async fn flush(&mut self) -> Result<()> {
        let Some((pack, builder)) = self.current.take() else {
            return Ok(());
        };
        self.referenced.insert(pack);
        self.packs += 1;
        // One buffer per pack: the upload and the index cache share it (a copy for the upload
        // held two of every pack in flight).
        let bytes = Bytes::from(match self.store.keys() {
            None => builder.finish(),
            Some(keys) => finish_sealed_pack(builder, keys, &pack)?,
        });
        let store = self.store.clone();
        let me = self.me.clone();
        let pacer = self.pacer.clone();
        let above = self.cfg.multipart_above;
        let held = bytes.len() as u64;
        let gate = self.gate.clone();
        self.push(
            held,
            Box::pin(async move {
                // The pack goes out at once, even before the backup's lock is held: a pack
                // without a reference record is garbage, which a delete, compaction or repair
                // running meanwhile may remove, but each records in the marker's pack deletion
                // journal what it is about to delete, and the run checks, under its lock and
                // before publishing, that none of its packs is there (see `backup::Checks`).
                // Its reference record waits for the lock (`repair` removes the records of
                // backups not published), and then goes out beside the pack: a crash that
                // leaves either without the other leaves garbage `repair` removes.
                let ref_key = store.pack_ref(&pack, &me);
                let reference = async {
                    gate.wait().await?;
                    store.put(&ref_key, Bytes::new()).await
                };
                let body = async {
                    if let Some(p) = pacer {
                        p.admit(held).await;
                    }
                    store
                        .put_large(&layout::pack(&pack), bytes.clone(), above)
                        .await
                };
                futures::try_join!(reference, body)?;
                crate::index::cache_written(&store, &pack, &bytes);
                Ok(held)
            }),
        )
        .await
    }

    /// Records that this backup uses blocks of `pack` (an existing pack).
    pub async fn reference(&mut self, pack: BlockId) -> Result<()> {
        if !self.referenced.insert(pack) {
            return Ok(());
        }
        let store = self.store.clone();
        let me = self.me.clone();
        let gate = self.gate.clone();
        self.push(
            0,
            Box::pin(async move {
                gate.wait().await?;
                store.put(&store.pack_ref(&pack, &me), Bytes::new()).await?;
                Ok(0)
            }),
        )
        .await
    }

    /// After a failure, before the manifest is published: lets the uploads already started
    /// finish and starts none. Then, when `tidy` (the run owns its backup's name — it was made
    /// for it, so no other run writes records under it — and the store answers), removes the
    /// reference records it wrote. Else a run made again under the same name (after a
    /// [`crate::BackupError::Conflict`]) publishes a backup holding records of packs it does
    /// not use (packs a delete removed, packs this run wrote that the next did not reuse),
    /// which that backup's delete never visits; and a run that fails for good leaves records
    /// of a backup that never existed. Packs this run wrote stay (another backup may use them
    /// by now); with no record left they are garbage that `repair` and `compact` remove. So
    /// is everything when not `tidy`, or when a removal fails (best effort).
    pub async fn abandon(mut self, tidy: bool) {
        while self.inflight.next().await.is_some() {}
        if !tidy {
            return;
        }
        // A few at once; the first removal that fails ends it. (Each future owns what it uses:
        // borrowing ones make the backup's future not `Send`.)
        let keys: Vec<_> = self
            .referenced
            .iter()
            .map(|pack| self.store.pack_ref(pack, &self.me))
            .collect();
        let store = self.store.clone();
        let _ = futures::stream::iter(keys)
            .map(move |key| {
                let store = store.clone();
                async move { store.delete(&key).await }
            })
            .buffer_unordered(self.cfg.max_uploads.max(1) * 4)
            .try_for_each(|()| async { Ok(()) })
            .await;
    }

    /// Sends the last pack and waits for every upload; returns the packs written.
    pub async fn finish(&mut self) -> Result<u64> {
        self.flush().await?;
        while let Some(r) = self.inflight.next().await {
            self.inflight_bytes -= r?;
        }
        Ok(self.packs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_spaces_uploads_at_the_rate() {
        // 10 uploads of 1 MiB at 1 MiB/s: the k-th (from 1) may start k seconds after the
        // start, when the bytes up to its end are due; one of 3 MiB then waits 3 s more.
        let p = Pacer::new(1 << 20);
        for k in 1..=10u64 {
            assert_eq!(p.reserve(1 << 20), Duration::from_secs(k));
        }
        assert_eq!(p.reserve(3 << 20), Duration::from_secs(13));
        assert_eq!(p.reserve(1 << 19), Duration::from_millis(13_500));
    }
}
