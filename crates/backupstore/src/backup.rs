//! The backup pipeline: read → zero check → hash → compare with parent → reference → dedup
//! check → compress → upload, `parallelism` chunks in flight, results consumed in offset order
//! into the streamed manifest, which is published last.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use convoy_blockstore::{encode_block, is_zero, BlockId};
use futures::StreamExt;

use crate::error::{BackupError, Result};
use crate::gate::Gate;
use crate::index::StoreIndex;
use crate::layout;
use crate::manifest::{Entry, EntryCursor, ManifestEncoder, ManifestHeader, ManifestReader};
use crate::packer::{Packer, PackerConfig};
use crate::publish::ManifestUpload;
use crate::store::Store;
use crate::types::{BackupStats, BlockSource, Progress};
use crate::url::BackupRef;

/// One unit of work, in volume offset order.
enum Work {
    /// Take the parent's entry as it is.
    Carry(Entry),
    /// Read this chunk; `parent` is the parent's entry at the same offset, if any.
    Read {
        offset: u64,
        len: usize,
        parent: Option<Entry>,
    },
}

enum Outcome {
    Hole,
    Carried(Entry),
    Unchanged(Entry),
    /// Already in the store (found in the store index).
    Known(Entry),
    /// Not in the store index: encoded, to be packed (unless an earlier chunk of this backup
    /// had the same content).
    New {
        offset: u64,
        len: u32,
        id: BlockId,
        encoded: Vec<u8>,
    },
}

/// Turns byte ranges into sorted, merged chunk-index ranges clipped to the volume.
pub(crate) fn chunk_ranges(ranges: &[Range<u64>], chunk: u64, size: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = ranges
        .iter()
        .filter(|r| r.start < r.end && r.start < size)
        .map(|r| (r.start / chunk, r.end.min(size).div_ceil(chunk)))
        .collect();
    out.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(out.len());
    for (s, e) in out {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    merged
}

/// A chunk read, hashed and (unless all zero) encoded: its id (`None`: all zero) and its
/// encoded form.
type Prepared = (Option<BlockId>, Option<Vec<u8>>);

/// A chunk being prepared.
type Job = tokio::task::JoinHandle<Result<Result<Prepared>>>;

/// The first chunks of a run, read, hashed and encoded while the run's first round trips
/// (the lock, the parent's manifest, the store index) are under way: a small incremental's
/// local work then costs no time of its own. Bounded by a few chunks; what the run does not
/// take (another chunk size, an error before the pipeline) is dropped, and jobs not yet
/// started are cancelled with it.
pub(crate) struct Prefetch {
    jobs: std::sync::Mutex<std::collections::HashMap<u64, (usize, Job)>>,
}

impl Prefetch {
    /// Starts reading the first `count` chunks of `ranges`. `keys`: the store's keys, as
    /// the run will use them (`None`: an unencrypted store).
    pub(crate) fn start(
        source: &Arc<dyn BlockSource>,
        ranges: &[Range<u64>],
        chunk: u64,
        size: u64,
        level: i32,
        keys: Option<Arc<crate::crypto::Keys>>,
        count: usize,
    ) -> Prefetch {
        let mut jobs = std::collections::HashMap::new();
        let chunks = chunk_ranges(ranges, chunk, size)
            .into_iter()
            .flat_map(|(s, e)| s..e)
            .take(count);
        for index in chunks {
            let offset = index * chunk;
            let len = chunk.min(size - offset) as usize;
            let (source, keys) = (source.clone(), keys.clone());
            let job = tokio::spawn(crate::worker::run(move || {
                let buf = read_chunk(&*source, offset, len)?;
                if is_zero(&buf) {
                    return Ok((None, None));
                }
                let id = match &keys {
                    Some(k) => k.chunk_id(&buf),
                    None => BlockId::of(&buf),
                };
                let encoded = encode(keys.as_deref(), &buf, &id, offset, level)?;
                Ok((Some(id), Some(encoded)))
            }));
            jobs.insert(offset, (len, job));
        }
        Prefetch {
            jobs: std::sync::Mutex::new(jobs),
        }
    }

    /// The job for the chunk at `offset` of `len` bytes, if one was started.
    fn take(&self, offset: u64, len: usize) -> Option<Job> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        match jobs.remove(&offset) {
            Some((l, job)) if l == len => Some(job),
            Some((_, job)) => {
                job.abort();
                None
            }
            None => None,
        }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        let jobs = self.jobs.get_mut().unwrap_or_else(|p| p.into_inner());
        for (_, (_, job)) in jobs.drain() {
            job.abort();
        }
    }
}

/// Reads one chunk of the source.
fn read_chunk(source: &dyn BlockSource, offset: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    source
        .read_at(offset, &mut buf)
        .map_err(|source| BackupError::SourceRead {
            offset,
            len,
            source,
        })?;
    Ok(buf)
}

/// Compresses a chunk, and seals it in an encrypted store.
fn encode(
    keys: Option<&crate::crypto::Keys>,
    data: &[u8],
    id: &BlockId,
    offset: u64,
    level: i32,
) -> Result<Vec<u8>> {
    let enc = encode_block(data, level).map_err(|source| BackupError::Encode {
        offset,
        source: Box::new(source),
    })?;
    match keys {
        Some(k) => crate::sealed::seal_blob(k, id, &enc),
        None => Ok(enc),
    }
}

/// Produces [`Work`] in offset order from the chunk ranges and the parent manifest.
struct WorkGen {
    ranges: Vec<(u64, u64)>,
    index: usize,
    next_chunk: u64,
    parent: Option<EntryCursor>,
    chunk: u64,
    size: u64,
}

impl WorkGen {
    fn new(ranges: Vec<(u64, u64)>, parent: Option<EntryCursor>, chunk: u64, size: u64) -> Self {
        let next_chunk = ranges.first().map_or(0, |r| r.0);
        WorkGen {
            ranges,
            index: 0,
            next_chunk,
            parent,
            chunk,
            size,
        }
    }

    async fn next(&mut self) -> Result<Option<Work>> {
        while self.index < self.ranges.len() && self.next_chunk >= self.ranges[self.index].1 {
            self.index += 1;
            if let Some(r) = self.ranges.get(self.index) {
                self.next_chunk = self.next_chunk.max(r.0);
            }
        }
        let read_at = (self.index < self.ranges.len()).then(|| self.next_chunk * self.chunk);
        let parent_next = match &mut self.parent {
            Some(c) => c.peek().await?,
            None => None,
        };
        match (read_at, parent_next) {
            (None, None) => Ok(None),
            (None, Some(e)) => {
                self.parent.as_mut().expect("parent").next().await?;
                Ok(Some(Work::Carry(e)))
            }
            (Some(r), Some(e)) if e.offset < r => {
                self.parent.as_mut().expect("parent").next().await?;
                Ok(Some(Work::Carry(e)))
            }
            (Some(r), pe) => {
                let parent = match pe {
                    Some(e) if e.offset == r => {
                        self.parent.as_mut().expect("parent").next().await?;
                        Some(e)
                    }
                    _ => None,
                };
                self.next_chunk += 1;
                let len = self.chunk.min(self.size - r) as usize;
                Ok(Some(Work::Read {
                    offset: r,
                    len,
                    parent,
                }))
            }
        }
    }
}

/// Shared state of the pipeline's tasks.
struct Ctx {
    store: Arc<Store>,
    source: Arc<dyn BlockSource>,
    index: Arc<StoreIndex>,
    level: i32,
    prefetch: Option<Arc<Prefetch>>,
}

/// Processes one unit of work; returns what happened and the bytes read from the source.
async fn process(ctx: Arc<Ctx>, work: Work) -> Result<(Outcome, u64)> {
    let (offset, len, parent) = match work {
        Work::Carry(e) => return Ok((Outcome::Carried(e), 0)),
        Work::Read {
            offset,
            len,
            parent,
        } => (offset, len, parent),
    };
    let ahead = ctx.prefetch.as_ref().and_then(|p| p.take(offset, len));
    let (data, id, encoded) = match ahead {
        Some(job) => {
            let (id, encoded) = job
                .await
                .map_err(|e| BackupError::Task(format!("a chunk read ahead: {e}")))???;
            (Vec::new(), id, encoded)
        }
        None => {
            let source = ctx.source.clone();
            let store = ctx.store.clone();
            let (data, id) = crate::worker::run(move || {
                let buf = read_chunk(&*source, offset, len)?;
                let id = (!is_zero(&buf)).then(|| match store.keys() {
                    Some(k) => k.chunk_id(&buf),
                    None => BlockId::of(&buf),
                });
                Ok::<_, BackupError>((buf, id))
            })
            .await??;
            (data, id, None)
        }
    };
    let Some(id) = id else {
        return Ok((Outcome::Hole, len as u64));
    };
    if let Some(p) = parent.filter(|p| p.id == id && p.len as usize == len) {
        return Ok((Outcome::Unchanged(p), len as u64));
    }
    if let Some(loc) = ctx.index.get(&id) {
        let e = Entry {
            offset,
            len: len as u32,
            id,
            loc,
        };
        return Ok((Outcome::Known(e), len as u64));
    }
    let encoded = match encoded {
        Some(e) => e,
        None => {
            let level = ctx.level;
            let store = ctx.store.clone();
            crate::worker::run(move || encode(store.keys(), &data, &id, offset, level)).await??
        }
    };
    Ok((
        Outcome::New {
            offset,
            len: len as u32,
            id,
            encoded,
        },
        len as u64,
    ))
}

/// What a run reads before it writes anything, sent beside the lock's write and listing (they
/// depend on nothing the lock answers): the store marker with its pack deletion journal
/// (written if the store has none), whether the backup's name is taken, and the parent's
/// manifest. What they answered may change before the lock is held, so the run checks again
/// beside its last uploads (see [`Checks`]) before it publishes anything.
pub(crate) struct FirstReads {
    journal: Option<crate::gone::Journal>,
    exists: bool,
    parent: Option<(ManifestStream, Option<String>)>,
}

type ManifestStream = futures::stream::BoxStream<'static, object_store::Result<bytes::Bytes>>;

impl FirstReads {
    /// Sends the reads. `precheck`: the marker's check (answers the journal). `owns_name`:
    /// the name was made for this run (64 random bits), so whether it is taken is not asked.
    pub(crate) async fn read(
        store: &Store,
        me: &BackupRef,
        parent: Option<&str>,
        precheck: futures::future::BoxFuture<'_, Result<Option<crate::gone::Journal>>>,
        owns_name: bool,
    ) -> Result<FirstReads> {
        let parent_ref = parent.map(|p| BackupRef::new(&me.volume, p)).transpose()?;
        let name = layout::manifest(me);
        let exists = async {
            match owns_name {
                true => Ok(false),
                false => store.exists(&name).await,
            }
        };
        let parent_stream = async {
            match &parent_ref {
                None => Ok(None),
                Some(pref) => {
                    store
                        .manifest_stream_tagged(&layout::manifest(pref), pref)
                        .await
                }
            }
        };
        let (journal, exists, parent) = futures::try_join!(precheck, exists, parent_stream)?;
        Ok(FirstReads {
            journal,
            exists,
            parent,
        })
    }
}

/// Checked beside the run's last uploads, under the lock, before the manifest is published:
/// what the first reads answered before the lock was held still holds. The parent still
/// exists as it was read (a delete that ran meanwhile would leave the new backup carrying
/// entries of a backup that is gone: [`BackupError::BadParent`], which the caller answers with
/// a full backup), and no pack the run reuses was deleted (a cached store index read against
/// the journal before the lock), nor any pack it wrote (sent before the lock was held, taken
/// for garbage by a delete, compaction or repair that ran meanwhile): else
/// [`BackupError::Conflict`], nothing published.
struct Checks {
    parent: Option<(BackupRef, Option<String>)>,
    /// The journal the cached index was brought up to date with (`None`: the index came from
    /// a listing made under the lock, which nothing can have changed; the run waited for the
    /// lock before it, so its packs went out under the lock too).
    cached: Option<crate::gone::Journal>,
}

impl Checks {
    async fn run(
        &self,
        store: &Store,
        used: &std::collections::HashSet<BlockId>,
        gate: &Gate,
    ) -> Result<()> {
        gate.wait().await?;
        let parent = async {
            let Some((pref, tag)) = &self.parent else {
                return Ok(());
            };
            let now = store.version_tag(&layout::manifest(pref)).await?;
            if now.is_none() || (tag.is_some() && now.as_ref() != Some(tag)) {
                return Err(BackupError::BadParent {
                    parent: pref.backup.clone(),
                    reason: "it was deleted while this backup ran".into(),
                });
            }
            Ok(())
        };
        let journal = async {
            let Some(before) = &self.cached else {
                return Ok(());
            };
            let now = crate::keys::read_marker_journal(store)
                .await?
                .and_then(|(_, j)| j);
            let gone = now
                .filter(|j| j.id == before.id)
                .and_then(|j| j.changes_after(before.seq))
                .map(|c| c.gone);
            match gone {
                Some(gone) if gone.is_disjoint(used) => Ok(()),
                _ => Err(BackupError::Conflict {
                    dest: store.dest.clone(),
                    reason: "packs this backup reuses or wrote were deleted while it started (a \
                             delete, compaction or repair ran meanwhile); nothing was published"
                        .into(),
                }),
            }
        };
        futures::try_join!(parent, journal)?;
        Ok(())
    }
}

/// Everything a backup run needs.
pub(crate) struct BackupJob<'a> {
    pub store: Arc<Store>,
    pub source: Arc<dyn BlockSource>,
    pub ranges: &'a [Range<u64>],
    pub parent: Option<&'a str>,
    pub header: ManifestHeader,
    pub parallelism: usize,
    pub level: i32,
    pub packing: PackerConfig,
    pub progress: &'a dyn Progress,
    /// The first reads ([`FirstReads::read`]), made beside the lock's acquisition.
    pub first: FirstReads,
    /// The first chunks, read ahead (see [`Prefetch`]).
    pub prefetch: Option<Prefetch>,
    /// The backup's name was made for this call, so no other run writes records under it:
    /// a failed run removes the reference records it wrote (see [`Packer::abandon`]).
    pub owns_name: bool,
    /// Opens once the run's lock is held: every write waits for it (see [`Gate`]).
    pub gate: Gate,
}

/// Runs a backup under a lock the caller holds; returns its figures and the header of the
/// manifest it published. On error nothing becomes visible.
pub(crate) async fn run(job: BackupJob<'_>) -> Result<(BackupStats, ManifestHeader)> {
    let me = BackupRef::new(&job.header.volume_name, &job.header.backup_name)?;
    let store = job.store.clone();
    let mut header = job.header;
    let FirstReads {
        journal,
        exists,
        parent: parent_stream,
    } = job.first;
    if exists {
        return Err(BackupError::BackupExists {
            dest: store.dest.clone(),
            volume: me.volume,
            backup: me.backup,
        });
    }
    // The store index: from the local cache, kept true by the marker's pack deletion journal
    // (no request), or from a listing when the cache cannot be used.
    let (index, cached) =
        crate::index::resolve(&store, journal, job.parallelism, &job.gate).await?;
    let mut checks = Checks {
        parent: None,
        cached,
    };
    let parent = match job.parent {
        None => None,
        Some(p) => {
            let bad = |reason: String| BackupError::BadParent {
                parent: p.to_string(),
                reason,
            };
            let (stream, tag) =
                parent_stream.ok_or_else(|| bad("no such backup of this volume".into()))?;
            checks.parent = Some((BackupRef::new(&me.volume, p)?, tag));
            let reader = ManifestReader::open(p, stream).await?;
            let ph = reader.header();
            if ph.volume_size != header.volume_size {
                return Err(bad(format!(
                    "its volume size is {} bytes, the volume is now {}; take a full backup",
                    ph.volume_size, header.volume_size
                )));
            }
            header.chunk_size = ph.chunk_size;
            header.parent = Some(p.to_string());
            Some(EntryCursor::new(reader))
        }
    };
    // The parent records go out while the blocks are read and packed; they are in place
    // before the manifest that needs them is published (the pipeline waits for them then).
    let records: futures::future::BoxFuture<'_, Result<()>> = match &header.parent {
        Some(p) => {
            let (record, child) = (
                layout::parent_record(&me),
                layout::child_marker(&me.volume, p, &me.backup),
            );
            let (store, p, gate) = (store.clone(), p.clone(), job.gate.clone());
            Box::pin(async move {
                gate.wait().await?;
                futures::try_join!(
                    store.put(&record, Bytes::from(p)),
                    store.put(&child, Bytes::new()),
                )?;
                Ok(())
            })
        }
        None => Box::pin(async { Ok(()) }),
    };
    let packer = Packer::new(store.clone(), me.clone(), job.packing, job.gate.clone());
    let written = header.clone();
    let result = pipeline(
        &job.source,
        job.ranges,
        parent,
        header,
        job.parallelism,
        job.level,
        job.progress,
        Arc::new(index),
        packer,
        &me,
        records,
        job.prefetch.map(Arc::new),
        &checks,
        job.owns_name,
        &job.gate,
    )
    .await;
    if result.is_err() && job.gate.is_open() {
        if let Some(p) = job.parent {
            let _ = store
                .delete(&layout::child_marker(&me.volume, p, &me.backup))
                .await;
            let _ = store.delete(&layout::parent_record(&me)).await;
        }
    }
    result.map(|stats| (stats, written))
}

#[allow(clippy::too_many_arguments)]
async fn pipeline(
    source: &Arc<dyn BlockSource>,
    ranges: &[Range<u64>],
    parent: Option<EntryCursor>,
    header: ManifestHeader,
    parallelism: usize,
    level: i32,
    progress: &dyn Progress,
    index: Arc<StoreIndex>,
    mut packer: Packer,
    me: &BackupRef,
    records: futures::future::BoxFuture<'_, Result<()>>,
    prefetch: Option<Arc<Prefetch>>,
    checks: &Checks,
    owns_name: bool,
    gate: &Gate,
) -> Result<BackupStats> {
    let chunk = u64::from(header.chunk_size);
    let size = header.volume_size;
    let chunks = chunk_ranges(ranges, chunk, size);
    let total: u64 = chunks
        .iter()
        .map(|&(s, e)| (e * chunk).min(size) - s * chunk)
        .sum();
    progress.start(total);
    let ctx = Arc::new(Ctx {
        store: packer.store(),
        source: source.clone(),
        index,
        level,
        prefetch,
    });
    let store_for_checks = ctx.store.clone();
    // The manifest is started once the lock is held (on `vfs://` it is a file under `tmp/`,
    // which `repair` removes), at its first bytes or at the end.
    let mut upload: Option<ManifestUpload<'_>> = None;
    let mut encoder = ManifestEncoder::new(header)?;
    let work = futures::stream::unfold(WorkGen::new(chunks, parent, chunk, size), |mut g| async {
        match g.next().await {
            Ok(Some(w)) => Some((Ok(w), g)),
            Ok(None) => None,
            Err(e) => Some((Err(e), g)),
        }
    });
    let results = work
        .map(|w| {
            let ctx = ctx.clone();
            async move { process(ctx, w?).await }
        })
        .buffered(parallelism.max(1));
    let mut results = std::pin::pin!(results);
    let mut stats = BackupStats::default();
    // The packs of every entry: what `checks` makes sure still exist (a pack reused may have
    // been deleted as the run started; one this run wrote, sent before its lock was held, may
    // have been taken for garbage). Each pack sent holds an entry pushed before the checks.
    let mut used = std::collections::HashSet::new();
    let body = async {
        while let Some(r) = results.next().await {
            let (outcome, read) = r?;
            stats.bytes_read += read;
            progress.advance(read);
            let entry = match outcome {
                Outcome::Hole => {
                    stats.chunks_read += 1;
                    stats.zero_chunks += 1;
                    None
                }
                Outcome::Carried(e) => {
                    stats.carried_chunks += 1;
                    Some(e)
                }
                Outcome::Unchanged(e) => {
                    stats.chunks_read += 1;
                    stats.unchanged_chunks += 1;
                    Some(e)
                }
                Outcome::Known(e) => {
                    stats.chunks_read += 1;
                    stats.blocks_deduplicated += 1;
                    packer.reference(e.loc.pack).await?;
                    Some(e)
                }
                Outcome::New {
                    offset,
                    len,
                    id,
                    encoded,
                } => {
                    stats.chunks_read += 1;
                    let n = encoded.len() as u64;
                    let (loc, fresh) = packer.add(id, &encoded, len).await?;
                    if fresh {
                        stats.blocks_uploaded += 1;
                        stats.bytes_uploaded += n;
                        progress.uploaded(n);
                    } else {
                        stats.blocks_deduplicated += 1;
                    }
                    Some(Entry {
                        offset,
                        len,
                        id,
                        loc,
                    })
                }
            };
            if let Some(e) = entry {
                encoder.push(&e)?;
                used.insert(e.loc.pack);
            }
            if encoder.pending() >= 256 << 10 {
                let sink = start_upload(&mut upload, &store_for_checks, me, gate).await?;
                sink.write(&encoder.take()).await?;
            }
        }
        // The last packs go out with the check that no backup of this name was published
        // meanwhile (the store's own check, for S3 a request; none for a name made for this
        // run) and the run's own checks: one round trip for all.
        let free = async {
            let sink = start_upload(&mut upload, &store_for_checks, me, gate).await?;
            match owns_name {
                true => Ok(()),
                false => sink.check_free().await,
            }
        };
        // All three run to their end, whatever fails first: the manifest's start, dropped half
        // way, would leave its temporary file behind.
        let (packs, free, checked) = futures::join!(
            packer.finish(),
            free,
            checks.run(&store_for_checks, &used, gate)
        );
        let packs = packs?;
        free?;
        checked?;
        stats.packs_uploaded = packs;
        Ok::<(), BackupError>(())
    };
    // The parent records go out beside the blocks; both are done before the manifest is.
    let (outcome, recorded) = futures::join!(body, records);
    let outcome = outcome.and(recorded);
    // A remote store that failed a request is left alone (each removal would wait out the
    // retries first): the records are garbage for `repair`. A local one is tidied (a full
    // disk still removes files).
    let remote = packer.store().local_root.is_none();
    // Nothing is removed without the lock (a run whose lock was not taken wrote no record).
    let tidy = |e: &BackupError| {
        owns_name && gate.is_open() && !(remote && matches!(e, BackupError::Store { .. }))
    };
    let mut upload = match (outcome, upload) {
        (Ok(()), Some(upload)) => upload,
        (outcome, upload) => {
            if let Some(upload) = upload {
                upload.abort().await;
            }
            let e = outcome
                .err()
                .unwrap_or_else(|| BackupError::Task("the manifest was never started".into()));
            packer.abandon(tidy(&e)).await;
            return Err(e);
        }
    };
    stats.manifest_entries = encoder.count();
    if let Err(e) = upload.write(&encoder.finish()).await {
        upload.abort().await;
        packer.abandon(tidy(&e)).await;
        return Err(e);
    }
    upload.commit().await?;
    progress.finish();
    Ok(stats)
}

/// The manifest's upload, started (once the lock is held) if it was not yet.
async fn start_upload<'u, 's>(
    upload: &'u mut Option<ManifestUpload<'s>>,
    store: &'s Store,
    me: &BackupRef,
    gate: &Gate,
) -> Result<&'u mut ManifestUpload<'s>> {
    if upload.is_none() {
        gate.wait().await?;
        *upload = Some(ManifestUpload::start(store, layout::manifest(me), me.clone()).await?);
    }
    Ok(upload.as_mut().expect("started"))
}

#[cfg(test)]
mod tests {
    use super::chunk_ranges;

    #[test]
    fn ranges_become_merged_chunk_ranges() {
        let c = 1 << 20;
        assert_eq!(chunk_ranges(&[], c, 10 * c), vec![]);
        assert_eq!(
            chunk_ranges(
                &[5 * c..5 * c + 1, 0..1, c - 1..c + 1, 9 * c..20 * c],
                c,
                10 * c
            ),
            vec![(0, 2), (5, 6), (9, 10)]
        );
        assert_eq!(chunk_ranges(&[0..3, 2..5, 7..7], c, 10), vec![(0, 1)]);
        assert_eq!(
            chunk_ranges(&[11 * c..12 * c, 13 * c..14 * c], c, 10 * c),
            vec![]
        );
    }
}
