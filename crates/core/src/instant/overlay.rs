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
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use convoy_thinpool::SECTOR_SIZE;
use futures::stream::FuturesUnordered;
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
    /// The data of chunks `range` in order, `None` for a hole, each verified. `urgent`: a
    /// program waits for it (not the background fill).
    async fn fetch(
        &self,
        range: Range<u64>,
        urgent: bool,
    ) -> io::Result<Vec<(u64, Option<Arc<Vec<u8>>>)>>;
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
    async fn fetch(
        &self,
        range: Range<u64>,
        urgent: bool,
    ) -> io::Result<Vec<(u64, Option<Arc<Vec<u8>>>)>> {
        let how = convoy_backupstore::ChunkFetch {
            cache: false,
            urgent,
        };
        self.chunks(range, how).await.map_err(io::Error::other)
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

/// The background fill yields to user I/O that has to fetch: while such I/O is going on, and
/// for this long after it, the fill keeps at most one run in flight (a user's fetch then
/// queues behind one run, not behind `parallel` of them).
const YIELD_FOR: std::time::Duration = std::time::Duration::from_millis(300);

/// How often a yielding background fill looks again whether it may start more runs.
const YIELD_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// The device served during an instant restore. `Send + Sync`: the NBD server and the
/// background fill call it from many tasks.
pub(crate) struct Overlay<S: ChunkSource> {
    source: S,
    target: Arc<File>,
    /// The same device opened with `O_DIRECT`, for the background fill's writes.
    direct: Option<Arc<File>>,
    map: Arc<FillMap>,
    size: u64,
    chunk: u64,
    stripes: Vec<tokio::sync::Mutex<()>>,
    /// Tests only: the background fill runs one run at a time and waits this long after
    /// each (so that a test can act while a small fill is still going on).
    pause: Option<std::time::Duration>,
    /// User I/O that is fetching chunks now, and when the last such fetch ended.
    foreground: Foreground,
}

/// User I/O that has to fetch, as the background fill sees it (see [`YIELD_FOR`]).
struct Foreground {
    active: AtomicUsize,
    /// Milliseconds after `epoch` when the last fetch of user I/O ended (0: never).
    last_end_ms: AtomicU64,
    epoch: std::time::Instant,
}

impl Foreground {
    fn new() -> Self {
        Foreground {
            active: AtomicUsize::new(0),
            last_end_ms: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
        }
    }

    /// Marks a user fetch as going on until the guard is dropped (on every path).
    fn begin(&self) -> ForegroundGuard<'_> {
        self.active.fetch_add(1, Ordering::SeqCst);
        ForegroundGuard(self)
    }

    /// Whether the background fill should yield now.
    fn busy(&self) -> bool {
        if self.active.load(Ordering::SeqCst) > 0 {
            return true;
        }
        let last = self.last_end_ms.load(Ordering::SeqCst);
        last != 0 && self.now_ms().saturating_sub(last) < YIELD_FOR.as_millis() as u64
    }

    fn now_ms(&self) -> u64 {
        (self.epoch.elapsed().as_millis() as u64).max(1)
    }
}

struct ForegroundGuard<'a>(&'a Foreground);

impl Drop for ForegroundGuard<'_> {
    fn drop(&mut self) {
        self.0.last_end_ms.store(self.0.now_ms(), Ordering::SeqCst);
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Alignment of offsets for `O_DIRECT` (a page: enough for any logical block size).
const DIRECT_ALIGN: usize = 4096;

/// Writes `data` at `offset` through `direct` (opened with `O_DIRECT`; aligned by
/// [`convoy_backupstore::write_all_direct`], as a restore writes). `EINVAL`: the device or the
/// range does not allow direct I/O.
fn write_direct(direct: &File, data: &[u8], offset: u64) -> io::Result<()> {
    if !(offset as usize).is_multiple_of(DIRECT_ALIGN) || !data.len().is_multiple_of(SECTOR_SIZE) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    convoy_backupstore::write_all_direct(direct, data, offset)
}

/// Starts writing `range` of `target` out now and drops it from the page cache once written
/// (`POSIX_FADV_DONTNEED` starts writeback of the range's dirty pages).
fn write_out(target: &File, range: Range<u64>) -> io::Result<()> {
    let off = |v: u64| {
        libc::off_t::try_from(v).map_err(|_| io::Error::other(format!("offset {v} too large")))
    };
    nix::fcntl::posix_fadvise(
        target,
        off(range.start)?,
        off(range.end - range.start)?,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )
    .map_err(io::Error::from)
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
            direct: None,
            map,
            size,
            chunk,
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            pause: None,
            foreground: Foreground::new(),
        })
    }

    /// Has the background fill write through `direct`, the target opened with `O_DIRECT`:
    /// its writes then never sit in the page cache as dirty pages, which the next flush of
    /// the user's filesystem (a journal commit syncs the whole device) would have to write
    /// out first — seconds of waiting for a mount or an `fsync` early in a fill.
    pub(crate) fn with_direct(mut self, direct: Option<File>) -> Self {
        self.direct = direct.map(Arc::new);
        self
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
    ///
    /// `background` (the background fill): each chunk is written past the page cache
    /// (`with_direct`), or else sent to the disk at once and dropped from the cache, so that
    /// the fill leaves no dirty pages for the user's next flush to wait for.
    async fn fill_locked(
        &self,
        wanted: impl Iterator<Item = u64>,
        background: bool,
    ) -> io::Result<u64> {
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
            for (i, data) in self.source.fetch(run, !background).await? {
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
                let (t, at) = (self.target.clone(), r.clone());
                let direct = self.direct.clone().filter(|_| background);
                blocking(move || {
                    if let Some(d) = direct {
                        match write_direct(&d, &data, at.start) {
                            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                            done => return done,
                        }
                    }
                    t.write_all_at(&data, at.start)?;
                    if background {
                        write_out(&t, at)?;
                    }
                    Ok(())
                })
                .await?;
                written += r.end - r.start;
                self.map.set(i);
            }
        }
        Ok(written)
    }

    /// Fills every chunk not filled, up to `parallel` runs at once, committing the map as it
    /// goes and at the end. Returns the bytes written. A fetch error ends the fill with that
    /// error (what was filled stays filled; call again to go on).
    ///
    /// The fill makes way for user I/O: it starts with one run in flight and doubles that
    /// with each run completed while no user I/O fetches, up to `parallel`; while user I/O
    /// fetches (and for [`YIELD_FOR`] after) it drops back to one run, so a read of data not
    /// yet filled waits behind one run rather than behind all of them.
    pub(crate) async fn fill(&self, parallel: usize) -> io::Result<u64> {
        let mut runs = self.map.unfilled_runs(FILL_RUN).into_iter().peekable();
        let parallel = if self.pause.is_some() {
            1
        } else {
            parallel.max(1)
        };
        let mut in_flight = FuturesUnordered::new();
        // Runs allowed in flight while no user I/O fetches (slow start).
        let mut window = 1usize;
        let (mut total, mut since_commit) = (0, 0);
        loop {
            let allowed = if self.foreground.busy() {
                window = 1;
                1
            } else {
                window
            };
            while in_flight.len() < allowed {
                let Some(run) = runs.next() else { break };
                in_flight.push(self.fill_run(run));
            }
            if in_flight.is_empty() {
                if runs.peek().is_none() {
                    break;
                }
                continue;
            }
            let done = tokio::select! {
                done = in_flight.next() => done,
                () = tokio::time::sleep(YIELD_POLL), if in_flight.len() < parallel => None,
            };
            let n = match done {
                None => continue,
                Some(Ok(n)) => n,
                Some(Err(e)) => {
                    // The other runs end first: a run dropped mid-way could leave a write of
                    // backup data still going on in a blocking thread after its locks are
                    // released.
                    while in_flight.next().await.is_some() {}
                    return Err(e);
                }
            };
            if !self.foreground.busy() {
                window = (window * 2).min(parallel);
            }
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

    /// One run of the background fill, under its chunks' locks.
    async fn fill_run(&self, run: Range<u64>) -> io::Result<u64> {
        let n = {
            let _held = self.lock(run.clone()).await;
            self.fill_locked(run, true).await
        };
        if let (Some(p), Ok(1..)) = (self.pause, &n) {
            tokio::time::sleep(p).await;
        }
        n
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
        let began = std::time::Instant::now();
        let chunks = self.chunks_of(offset, buf.len() as u64);
        let held = if chunks.clone().all(|i| self.map.is_filled(i)) {
            None
        } else {
            let count = self.size.div_ceil(self.chunk);
            let wider = chunks.start..(chunks.end + READ_AHEAD).min(count);
            let started = std::time::Instant::now();
            let _fetching = self.foreground.begin();
            let held = self.lock(wider.clone()).await;
            let locked = started.elapsed();
            let written = self.fill_locked(wider.clone(), false).await?;
            tracing::debug!(
                chunks = ?wider,
                written,
                lock_ms = locked.as_millis() as u64,
                total_ms = started.elapsed().as_millis() as u64,
                "read filled chunks first"
            );
            Some(held)
        };
        let t = self.target.clone();
        let mut v = vec![0u8; buf.len()];
        let v = blocking(move || t.read_exact_at(&mut v, offset).map(|()| v)).await?;
        drop(held);
        buf.copy_from_slice(&v);
        let took = began.elapsed();
        if took >= std::time::Duration::from_millis(50) {
            tracing::debug!(
                offset,
                len = buf.len(),
                total_ms = took.as_millis() as u64,
                "slow read"
            );
        }
        Ok(())
    }

    async fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let end = offset + data.len() as u64;
        let chunks = self.chunks_of(offset, data.len() as u64);
        // Chunks the write covers only in part keep the rest of their backup bytes.
        let partial: Vec<u64> = chunks
            .clone()
            .filter(|&i| {
                let r = self.chunk_range(i);
                (offset > r.start || end < r.end) && !self.map.is_filled(i)
            })
            .collect();
        let _fetching = (!partial.is_empty()).then(|| self.foreground.begin());
        let _held = self.lock(chunks.clone()).await;
        self.fill_locked(partial.into_iter(), false).await?;
        let t = self.target.clone();
        let d = data.to_vec();
        blocking(move || t.write_all_at(&d, offset)).await?;
        for i in chunks {
            self.map.set(i);
        }
        Ok(())
    }

    async fn flush(&self) -> io::Result<()> {
        let started = std::time::Instant::now();
        let synced = self.sync().await;
        tracing::debug!(
            total_ms = started.elapsed().as_millis() as u64,
            "flush: device synced, fill map committed"
        );
        synced
    }
}

#[cfg(test)]
#[path = "overlay_tests.rs"]
mod tests;
