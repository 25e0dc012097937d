//! Random access to one backup without restoring it: [`BackupReader`] serves `read_at(offset,
//! len)` by fetching only the chunks a read touches, with ranged GETs of their packs
//! (adjacent blocks of one pack in one request), every block verified as a restore verifies
//! it, holes read as zeros, a bounded memory cache of decoded chunks and a read-ahead on
//! sequential reads. This is what backup browsing and instant restore read through.
//!
//! While a reader is open it holds a **shared** store lock (refreshed in the background), so a
//! delete or repair — which take the exclusive lock — waits for it to be closed and then fails
//! with `Locked` naming the holder, instead of removing packs the reader still needs. As for a
//! restore, a `vfs://` store on a filesystem that refuses the lock record (read-only, full)
//! is read without one: a delete made meanwhile elsewhere then makes reads fail with
//! `MissingBlock`, never return wrong data.
//!
//! Locating a chunk's bytes is done in one place, [`Inner::read_pack_range`]: a later
//! compaction that moves blocks to other packs adds its "pack not found: look the block up
//! again" step there.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use convoy_blockstore::{decode_block, BlockError};
use futures::StreamExt;

use crate::error::{BackupError, Result};
use crate::lock::{LockGuard, LockKind};
use crate::manifest::{Entry, ManifestHeader};
use crate::store::Store;
use crate::types::BackupInfo;
use crate::url::BackupRef;
use crate::BackupTarget;

/// Largest ranged GET a read coalesces adjacent blocks into.
const MAX_GET: u64 = 4 << 20;
/// Ranged GETs one read runs at once.
const GETS_AT_ONCE: usize = 8;
/// Stripes of the per-chunk fetch locks (two reads of one chunk fetch it once).
const STRIPES: usize = 1024;

/// How [`BackupReader::chunks`] fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkFetch {
    /// Keep what was fetched in the memory cache (a fill that writes each chunk once does
    /// not).
    pub cache: bool,
    /// Someone waits for it (a program's read): the chunks are decoded at once at normal
    /// priority instead of queueing behind the background work of the backup workers (a
    /// background fill, a read-ahead).
    pub urgent: bool,
}

/// How a [`BackupReader`] caches and reads ahead.
#[derive(Clone, Debug)]
pub struct ReaderOptions {
    /// Bytes of decoded chunks kept in memory (least recently used evicted first).
    pub cache_bytes: u64,
    /// Chunks fetched ahead of a read that starts where the previous one ended.
    pub read_ahead_chunks: u64,
    /// The operation named in the store lock's record (`browse`, `instant restore`).
    pub operation: String,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            cache_bytes: 256 << 20,
            read_ahead_chunks: 8,
            operation: "read".into(),
        }
    }
}

/// Counters of a reader.
#[derive(Debug, Default)]
pub struct ReaderStats {
    /// Ranged GETs sent.
    pub requests: AtomicU64,
    /// Stored (compressed, sealed) bytes downloaded.
    pub bytes_fetched: AtomicU64,
    /// Chunks downloaded and verified.
    pub chunks_fetched: AtomicU64,
    /// Chunk reads answered from the cache.
    pub cache_hits: AtomicU64,
}

/// Decoded chunks by index, least recently used evicted past the byte limit.
struct Cache {
    limit: u64,
    bytes: u64,
    tick: u64,
    chunks: HashMap<u64, (Arc<Vec<u8>>, u64)>,
    order: BTreeMap<u64, u64>,
}

impl Cache {
    fn get(&mut self, chunk: u64) -> Option<Arc<Vec<u8>>> {
        let (data, tick) = self.chunks.get_mut(&chunk)?;
        self.order.remove(tick);
        self.tick += 1;
        *tick = self.tick;
        self.order.insert(self.tick, chunk);
        Some(data.clone())
    }

    fn put(&mut self, chunk: u64, data: Arc<Vec<u8>>) {
        if self.limit == 0 || self.chunks.contains_key(&chunk) {
            return;
        }
        self.tick += 1;
        self.bytes += data.len() as u64;
        self.chunks.insert(chunk, (data, self.tick));
        self.order.insert(self.tick, chunk);
        while self.bytes > self.limit {
            let Some((_, old)) = self.order.pop_first() else {
                break;
            };
            if let Some((d, _)) = self.chunks.remove(&old) {
                self.bytes -= d.len() as u64;
            }
        }
    }
}

struct Inner {
    store: Arc<Store>,
    backup: BackupRef,
    header: ManifestHeader,
    info: BackupInfo,
    entries: Vec<Entry>,
    chunk: u64,
    cache: Mutex<Cache>,
    stripes: Vec<tokio::sync::Mutex<()>>,
    stats: ReaderStats,
    read_ahead: u64,
    /// Where the last read ended (sequential reads start there).
    last_end: AtomicU64,
}

/// One backup, readable at any offset. Cheap to clone; the store lock is released when the
/// last clone is dropped (or at [`BackupReader::close`]).
#[derive(Clone)]
pub struct BackupReader {
    inner: Arc<Inner>,
    lock: Arc<Mutex<Option<LockGuard>>>,
}

impl std::fmt::Debug for BackupReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupReader")
            .field("backup", &self.inner.backup)
            .field("size", &self.inner.header.volume_size)
            .finish()
    }
}

impl BackupReader {
    /// Opens backup `r` of `target`: takes the shared store lock, reads and checks the whole
    /// manifest (its entries stay in memory, 84 bytes per stored chunk).
    ///
    /// # Errors
    /// [`BackupError::BackupNotFound`], [`BackupError::CorruptManifest`], `Key` for an
    /// encrypted store without its secret, `Locked` while a delete or repair runs.
    pub async fn open(target: &BackupTarget, r: &BackupRef, opts: ReaderOptions) -> Result<Self> {
        target.unlock().await?;
        let store = target.store.clone();
        let lock = match LockGuard::acquire(
            store.clone(),
            LockKind::Shared,
            &opts.operation,
            &target.opts.lock,
        )
        .await
        {
            Ok(g) => Some(g),
            Err(e) if store.local_root.is_some() && crate::refuses_writes(&e) => None,
            Err(e) => return Err(e),
        };
        let mut reader = crate::restore::open_manifest(&store, r).await?;
        let header = reader.header().clone();
        let mut entries = Vec::new();
        while let Some(e) = reader.next_entry().await? {
            entries.push(e);
        }
        let info = BackupInfo::from_header(target.backup_url(r), &header);
        let inner = Inner {
            chunk: u64::from(header.chunk_size),
            store,
            backup: r.clone(),
            header,
            info,
            entries,
            cache: Mutex::new(Cache {
                limit: opts.cache_bytes,
                bytes: 0,
                tick: 0,
                chunks: HashMap::new(),
                order: BTreeMap::new(),
            }),
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            stats: ReaderStats::default(),
            read_ahead: opts.read_ahead_chunks,
            last_end: AtomicU64::new(u64::MAX),
        };
        Ok(BackupReader {
            inner: Arc::new(inner),
            lock: Arc::new(Mutex::new(lock)),
        })
    }

    /// Opens the backup at `backup_url`.
    ///
    /// # Errors
    /// As [`BackupReader::open`], and `InvalidUrl`.
    pub async fn open_url(
        backup_url: &str,
        target: crate::TargetOptions,
        opts: ReaderOptions,
    ) -> Result<Self> {
        let (t, r) = BackupTarget::open_backup(backup_url, target)?;
        Self::open(&t, &r, opts).await
    }

    /// The backup's volume size in bytes.
    pub fn size(&self) -> u64 {
        self.inner.header.volume_size
    }

    /// The backup's chunk size in bytes.
    pub fn chunk_size(&self) -> u64 {
        self.inner.chunk
    }

    /// Number of chunks (the last may be short).
    pub fn chunk_count(&self) -> u64 {
        self.size().div_ceil(self.inner.chunk)
    }

    /// The backup as `inspect` shows it.
    pub fn info(&self) -> &BackupInfo {
        &self.inner.info
    }

    /// The counters.
    pub fn stats(&self) -> &ReaderStats {
        &self.inner.stats
    }

    /// Whether chunk `index` is a hole (no stored block: zeros).
    pub fn is_hole(&self, index: u64) -> bool {
        self.inner.entry(index).is_none()
    }

    /// Byte range of chunk `index` in the volume.
    pub fn chunk_range(&self, index: u64) -> Range<u64> {
        let start = index * self.inner.chunk;
        start..(start + self.inner.chunk).min(self.size())
    }

    /// Fills `buf` with the volume's bytes at `offset`, fetching (and verifying) the chunks
    /// not cached.
    ///
    /// # Errors
    /// `InvalidArgument` for a range past the end; `MissingBlock`, `CorruptBlock`, store errors
    /// (after the store client's retries): the buffer's content is then unspecified.
    pub async fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|e| *e <= self.size())
            .ok_or_else(|| {
                BackupError::InvalidArgument(format!(
                    "read of {} bytes at {offset} is past the end of backup {} ({} bytes)",
                    buf.len(),
                    self.inner.backup.backup,
                    self.size()
                ))
            })?;
        if buf.is_empty() {
            return Ok(());
        }
        let c = self.inner.chunk;
        let chunks = offset / c..end.div_ceil(c);
        let sequential = self.inner.last_end.swap(end, Ordering::Relaxed) == offset;
        let data = self
            .chunks(
                chunks.clone(),
                ChunkFetch {
                    cache: true,
                    urgent: true,
                },
            )
            .await?;
        for (index, chunk) in data {
            let start = index * c;
            let from = offset.max(start);
            let to = end.min(start + c);
            let dst = &mut buf[(from - offset) as usize..(to - offset) as usize];
            match chunk {
                Some(d) => dst.copy_from_slice(&d[(from - start) as usize..(to - start) as usize]),
                None => dst.fill(0),
            }
        }
        if sequential && self.inner.read_ahead > 0 {
            let ahead = chunks.end..(chunks.end + self.inner.read_ahead).min(self.chunk_count());
            if !ahead.is_empty() {
                let me = self.clone();
                tokio::spawn(async move {
                    let how = ChunkFetch {
                        cache: true,
                        urgent: false,
                    };
                    let _ = me.chunks(ahead, how).await;
                });
            }
        }
        Ok(())
    }

    /// The data of chunks `range` in order (`None`: a hole), fetched with coalesced ranged
    /// GETs, as `how` says (cached or not, urgent or not).
    ///
    /// # Errors
    /// As [`BackupReader::read_at`].
    pub async fn chunks(
        &self,
        range: Range<u64>,
        how: ChunkFetch,
    ) -> Result<Vec<(u64, Option<Arc<Vec<u8>>>)>> {
        let ChunkFetch { cache, urgent } = how;
        let inner = &self.inner;
        let range = range.start..range.end.min(self.chunk_count());
        // Take the stripes of every stored chunk in ascending order (no deadlock), so that a
        // chunk two reads want is fetched once.
        let mut stripes: Vec<usize> = range
            .clone()
            .filter(|i| inner.entry(*i).is_some())
            .map(|i| (i as usize) % STRIPES)
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut _held = Vec::with_capacity(stripes.len());
        for s in stripes {
            _held.push(inner.stripes[s].lock().await);
        }
        let mut out: Vec<(u64, Option<Arc<Vec<u8>>>)> = Vec::new();
        let mut missing: Vec<Entry> = Vec::new();
        {
            let mut c = inner.cache.lock().unwrap_or_else(|p| p.into_inner());
            for i in range {
                match inner.entry(i) {
                    None => out.push((i, None)),
                    Some(e) => match c.get(i) {
                        Some(d) => {
                            inner.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                            out.push((i, Some(d)));
                        }
                        None => {
                            missing.push(*e);
                            out.push((i, None));
                        }
                    },
                }
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        let groups = group(missing);
        let fetched: Vec<Result<Fetched>> = futures::stream::iter(groups)
            .map(|g| inner.fetch_group(g, urgent))
            .buffer_unordered(GETS_AT_ONCE)
            .collect()
            .await;
        let mut got = HashMap::new();
        for r in fetched {
            for (e, data) in r? {
                got.insert(e.offset / inner.chunk, Arc::new(data));
            }
        }
        let mut c = inner.cache.lock().unwrap_or_else(|p| p.into_inner());
        for (i, slot) in &mut out {
            if let Some(d) = got.remove(i) {
                if cache {
                    c.put(*i, d.clone());
                }
                *slot = Some(d);
            }
        }
        Ok(out)
    }

    /// Releases the store lock now (also done when the last clone is dropped).
    ///
    /// # Errors
    /// The store's error deleting the lock record.
    pub async fn close(self) -> Result<()> {
        let guard = self.lock.lock().unwrap_or_else(|p| p.into_inner()).take();
        match guard {
            Some(g) => g.release().await,
            None => Ok(()),
        }
    }
}

/// The blocks of one ranged GET, decoded and verified.
type Fetched = Vec<(Entry, Vec<u8>)>;

/// Entries (ascending) in runs adjacent in one pack, each at most [`MAX_GET`] bytes.
fn group(entries: Vec<Entry>) -> Vec<Vec<Entry>> {
    let mut out: Vec<Vec<Entry>> = Vec::new();
    for e in entries {
        if let Some(g) = out.last_mut() {
            let first = g[0].loc;
            let last = g[g.len() - 1].loc;
            let end = u64::from(last.offset) + u64::from(last.stored_len);
            if e.loc.pack == first.pack
                && u64::from(e.loc.offset) == end
                && end + u64::from(e.loc.stored_len) - u64::from(first.offset) <= MAX_GET
            {
                g.push(e);
                continue;
            }
        }
        out.push(vec![e]);
    }
    out
}

impl Inner {
    /// The entry of chunk `index`, if it is stored.
    fn entry(&self, index: u64) -> Option<&Entry> {
        let offset = index * self.chunk;
        self.entries
            .binary_search_by_key(&offset, |e| e.offset)
            .ok()
            .map(|i| &self.entries[i])
    }

    /// The stored bytes `range` of the pack holding `first`: the one place a block's bytes are
    /// located. A pack that is gone is `MissingBlock` (named by the run's first block).
    async fn read_pack_range(&self, first: &Entry, range: Range<u64>) -> Result<Bytes> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let bytes = self
            .store
            .get_range_opt(&crate::layout::pack(&first.loc.pack), range)
            .await?
            .ok_or_else(|| BackupError::MissingBlock {
                backup: self.backup.backup.clone(),
                offset: first.offset,
                id: first.id,
            })?;
        self.stats
            .bytes_fetched
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(bytes)
    }

    /// Downloads a run of blocks with one ranged GET and decodes and verifies each.
    async fn fetch_group(&self, g: Vec<Entry>, urgent: bool) -> Result<Fetched> {
        let first = g[0];
        let last = g[g.len() - 1];
        let range = u64::from(first.loc.offset)
            ..u64::from(last.loc.offset) + u64::from(last.loc.stored_len);
        let bytes = self.read_pack_range(&first, range.clone()).await?;
        let backup = self.backup.backup.clone();
        let store = self.store.clone();
        let n = g.len() as u64;
        let decode = move || {
            let mut out = Vec::with_capacity(g.len());
            for e in g {
                let corrupt = |source: BlockError| BackupError::CorruptBlock {
                    backup: backup.clone(),
                    offset: e.offset,
                    id: e.id,
                    source: Box::new(source),
                };
                let at = (u64::from(e.loc.offset) - range.start) as usize;
                let Some(stored) = bytes.get(at..at + e.loc.stored_len as usize) else {
                    return Err(corrupt(BlockError::Malformed {
                        id: e.id,
                        reason: "the pack ends before the block's range".into(),
                    }));
                };
                let data = match store.keys() {
                    Some(k) => crate::sealed::open_blob(k, &e.id, stored),
                    None => decode_block(stored, &e.id),
                }
                .map_err(corrupt)?;
                if data.len() != e.len as usize {
                    return Err(corrupt(BlockError::Malformed {
                        id: e.id,
                        reason: format!("{} bytes, the manifest says {}", data.len(), e.len),
                    }));
                }
                out.push((e, data));
            }
            Ok(out)
        };
        let out = if urgent {
            crate::worker::run_now(decode).await??
        } else {
            crate::worker::run(decode).await??
        };
        self.stats.chunks_fetched.fetch_add(n, Ordering::Relaxed);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use convoy_blockstore::BlockId;

    fn entry(chunk: u64, pack: u8, offset: u32, len: u32) -> Entry {
        Entry {
            offset: chunk << 20,
            len: 1 << 20,
            id: BlockId([chunk as u8; 32]),
            loc: crate::manifest::Loc {
                pack: BlockId([pack; 32]),
                offset,
                stored_len: len,
            },
        }
    }

    #[test]
    fn runs_are_adjacent_in_one_pack_and_bounded() {
        let g = group(vec![
            entry(0, 1, 16, 100),
            entry(1, 1, 116, 100),
            entry(2, 1, 300, 100),
            entry(3, 2, 400, 100),
            entry(4, 2, 500, 4 << 20),
        ]);
        let shape: Vec<Vec<u64>> = g
            .iter()
            .map(|r| r.iter().map(|e| e.offset >> 20).collect())
            .collect();
        assert_eq!(shape, vec![vec![0, 1], vec![2], vec![3], vec![4]]);
    }

    #[test]
    fn the_cache_evicts_the_least_recently_used_past_its_limit() {
        let mut c = Cache {
            limit: 3000,
            bytes: 0,
            tick: 0,
            chunks: HashMap::new(),
            order: BTreeMap::new(),
        };
        for i in 0..3 {
            c.put(i, Arc::new(vec![0; 1000]));
        }
        assert!(c.get(0).is_some());
        c.put(3, Arc::new(vec![0; 1000]));
        assert!(c.get(1).is_none(), "least recently used evicted");
        assert!(c.get(0).is_some() && c.get(2).is_some() && c.get(3).is_some());
        assert_eq!(c.bytes, 3000);
    }
}
