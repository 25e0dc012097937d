//! The overlay of an instant restore: the block device a volume is used through while its
//! backup is copied into its (hidden) thin device, served over NBD.
//!
//! * a read of a chunk not yet filled fetches the chunk from the backup, writes it to the
//!   thin device and then reads the thin device;
//! * a write that covers a chunk whole lands on the thin device and marks the chunk filled;
//!   a write that covers part of an unfilled chunk fills the chunk first;
//! * the background fill ([`Overlay::fill`]) fills the chunks still unfilled, each under the
//!   same per-chunk lock as the user's I/O and after checking its bit again, so it never
//!   overwrites a user write;
//! * a flush syncs the thin device and then commits the fill map, with the bits taken before
//!   the sync (`FillMap::commit_after`): a bit on disk always means its chunk's data is on
//!   disk, so a restart after a crash fills again only chunks whose bits were not committed
//!   (their data is the backup's, or a user write the device never acknowledged as flushed).
//!
//! A fetch that fails (a store down after its client's retries, a corrupt block) is an I/O
//! error to the reader or writer and leaves the chunk unfilled: never wrong data.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use futures::StreamExt;

use super::fill_map::FillMap;
use crate::block_ranges::coalesce;

/// Where the chunks come from: a backup (`BackupReader`), or a table in tests.
#[async_trait::async_trait]
pub(crate) trait ChunkSource: Send + Sync + 'static {
    /// Bytes of the volume.
    fn size(&self) -> u64;
    /// Bytes per chunk (the last chunk may be shorter).
    fn chunk_size(&self) -> u64;
    /// Whether chunk `i` holds no data (zeros: nothing to fetch or write).
    fn is_hole(&self, i: u64) -> bool;
    /// The data of chunks `range` in order, `None` for a hole, each verified.
    async fn fetch(&self, range: Range<u64>) -> io::Result<Vec<(u64, Option<Arc<Vec<u8>>>)>>;
}

#[async_trait::async_trait]
impl ChunkSource for convoy_backupstore::BackupReader {
    fn size(&self) -> u64 {
        convoy_backupstore::BackupReader::size(self)
    }
    fn chunk_size(&self) -> u64 {
        convoy_backupstore::BackupReader::chunk_size(self)
    }
    fn is_hole(&self, i: u64) -> bool {
        convoy_backupstore::BackupReader::is_hole(self, i)
    }
    async fn fetch(&self, range: Range<u64>) -> io::Result<Vec<(u64, Option<Arc<Vec<u8>>>)>> {
        self.chunks(range, false).await.map_err(io::Error::other)
    }
}

/// Per-chunk locks, striped (a chunk's lock is `stripes[i % STRIPES]`).
const STRIPES: usize = 256;

/// Chunks the background fill fetches in one step.
const FILL_RUN: u64 = 8;

/// Chunks after those a read needs that the read fills with them (in the same fetch): reads
/// come in small sequential requests, and each would otherwise wait for a fetch of its own.
const READ_AHEAD: u64 = 3;

/// Bytes the background fill writes between two commits of the fill map.
const COMMIT_EVERY: u64 = 256 << 20;

/// The device served during an instant restore. `Send + Sync`: the NBD server and the
/// background fill call it from many tasks.
pub(crate) struct Overlay<S: ChunkSource> {
    source: S,
    target: Arc<File>,
    map: Arc<FillMap>,
    size: u64,
    chunk: u64,
    stripes: Vec<tokio::sync::Mutex<()>>,
    /// Tests only: the background fill runs one run at a time and waits this long after
    /// each (so that a test can act while a small fill is still going on).
    pause: Option<std::time::Duration>,
}

/// `manager::blocking` for I/O errors (the NBD server answers their errno).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}

impl<S: ChunkSource> Overlay<S> {
    /// An overlay filling `target` (the thin device, at least `source.size()` bytes, reading
    /// zeros where nothing was written) from `source`, with `map` made for this source.
    pub(crate) fn new(source: S, target: File, map: Arc<FillMap>) -> io::Result<Self> {
        let size = source.size();
        let chunk = source.chunk_size();
        if chunk == 0 || size.div_ceil(chunk) != map.chunk_count() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the fill map covers {} chunks, the backup {} bytes in chunks of {chunk}",
                    map.chunk_count(),
                    size
                ),
            ));
        }
        Ok(Overlay {
            source,
            target: Arc::new(target),
            map,
            size,
            chunk,
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            pause: None,
        })
    }

    /// Paces the background fill (see the field): for tests that must act mid-fill.
    pub(crate) fn with_pause(mut self, pause: Option<std::time::Duration>) -> Self {
        self.pause = pause;
        self
    }

    /// The fill map (progress: `filled()` of `chunk_count()`).
    pub(crate) fn map(&self) -> &FillMap {
        &self.map
    }

    fn chunks_of(&self, offset: u64, len: u64) -> Range<u64> {
        offset / self.chunk..(offset + len).div_ceil(self.chunk)
    }

    fn chunk_range(&self, i: u64) -> Range<u64> {
        i * self.chunk..((i + 1) * self.chunk).min(self.size)
    }

    /// Locks the stripes of `chunks` in ascending order (no deadlock between two callers).
    async fn lock(&self, chunks: Range<u64>) -> Vec<tokio::sync::MutexGuard<'_, ()>> {
        let mut s: Vec<usize> = chunks.map(|i| (i as usize) % STRIPES).collect();
        s.sort_unstable();
        s.dedup();
        let mut held = Vec::with_capacity(s.len());
        for i in s {
            held.push(self.stripes[i].lock().await);
        }
        held
    }

    /// Fills the chunks of `wanted` that are not filled. The caller holds their locks.
    async fn fill_locked(&self, wanted: impl Iterator<Item = u64>) -> io::Result<u64> {
        let mut written = 0;
        let mut todo = Vec::new();
        for i in wanted {
            if self.map.is_filled(i) {
                continue;
            }
            if self.source.is_hole(i) {
                // The thin device reads zeros where nothing was written.
                self.map.set(i);
            } else {
                todo.push(i);
            }
        }
        // Runs of adjacent chunks, one fetch each.
        for run in coalesce(todo.into_iter().map(|i| i..i + 1).collect()) {
            for (i, data) in self.source.fetch(run).await? {
                let Some(data) = data else {
                    self.map.set(i);
                    continue;
                };
                let r = self.chunk_range(i);
                if data.len() as u64 != r.end - r.start {
                    return Err(io::Error::other(format!(
                        "chunk {i} of the backup is {} bytes, expected {}",
                        data.len(),
                        r.end - r.start
                    )));
                }
                let t = self.target.clone();
                blocking(move || t.write_all_at(&data, r.start)).await?;
                written += r.end - r.start;
                self.map.set(i);
            }
        }
        Ok(written)
    }

    /// Fills every chunk not filled, `parallel` runs at once, committing the map as it goes
    /// and at the end. Returns the bytes written. A fetch error ends the fill with that error
    /// (what was filled stays filled; call again to go on).
    pub(crate) async fn fill(&self, parallel: usize) -> io::Result<u64> {
        let runs = self.map.unfilled_runs(FILL_RUN);
        let parallel = if self.pause.is_some() { 1 } else { parallel };
        let mut results = futures::stream::iter(runs)
            .map(|run| async move {
                let n = {
                    let _held = self.lock(run.clone()).await;
                    self.fill_locked(run).await
                };
                if let (Some(p), Ok(1..)) = (self.pause, &n) {
                    tokio::time::sleep(p).await;
                }
                n
            })
            .buffer_unordered(parallel.max(1));
        let mut total = 0;
        let mut since_commit = 0;
        while let Some(r) = results.next().await {
            let n = r?;
            total += n;
            since_commit += n;
            if since_commit >= COMMIT_EVERY {
                self.sync().await?;
                since_commit = 0;
            }
        }
        self.sync().await?;
        Ok(total)
    }

    /// [`Overlay::sync`], on the calling (blocking) thread.
    pub(crate) fn sync_now(&self) -> crate::error::Result<()> {
        self.map.commit_after(|| self.target.sync_data())
    }

    /// Makes every completed write and fill durable, then commits the fill map.
    pub(crate) async fn sync(&self) -> io::Result<()> {
        let (t, map) = (self.target.clone(), self.map.clone());
        blocking(move || map.commit_after(|| t.sync_data()).map_err(io::Error::other)).await
    }
}

#[async_trait::async_trait]
impl<S: ChunkSource> convoy_nbd::BlockBackend for Overlay<S> {
    fn size(&self) -> u64 {
        self.size
    }

    async fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let chunks = self.chunks_of(offset, buf.len() as u64);
        let held = if chunks.clone().all(|i| self.map.is_filled(i)) {
            None
        } else {
            let count = self.size.div_ceil(self.chunk);
            let wider = chunks.start..(chunks.end + READ_AHEAD).min(count);
            let held = self.lock(wider.clone()).await;
            self.fill_locked(wider).await?;
            Some(held)
        };
        let t = self.target.clone();
        let mut v = vec![0u8; buf.len()];
        let v = blocking(move || t.read_exact_at(&mut v, offset).map(|()| v)).await?;
        drop(held);
        buf.copy_from_slice(&v);
        Ok(())
    }

    async fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let end = offset + data.len() as u64;
        let chunks = self.chunks_of(offset, data.len() as u64);
        let _held = self.lock(chunks.clone()).await;
        // Chunks the write covers only in part keep the rest of their backup bytes.
        let partial = chunks.clone().filter(|&i| {
            let r = self.chunk_range(i);
            offset > r.start || end < r.end
        });
        self.fill_locked(partial).await?;
        let t = self.target.clone();
        let d = data.to_vec();
        blocking(move || t.write_all_at(&d, offset)).await?;
        for i in chunks {
            self.map.set(i);
        }
        Ok(())
    }

    async fn flush(&self) -> io::Result<()> {
        self.sync().await
    }
}

#[cfg(test)]
#[path = "overlay_tests.rs"]
mod tests;
