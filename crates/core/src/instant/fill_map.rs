//! The fill map of an instant restore: one bit per backup chunk, set once the chunk's bytes
//! are in the volume's thin device (fetched from the backup, or written by the user), kept
//! in a file next to the volume's record.
//!
//! File: a 64-byte header — magic `CONVOYFM`, version (u32 LE, 1), reserved (u32), chunk
//! count (u64 LE), chunk size (u64 LE), the 32-byte id of the backup it belongs to — then
//! `ceil(chunk_count / 8)` bytes of bits, chunk `i` in bit `i % 8` of byte `i / 8`.
//!
//! Crash rules: bits only ever go from 0 to 1, and [`FillMap::commit`] writes them in place
//! only after the caller made the data of every bit it writes durable. A torn write of the
//! bitmap can therefore only lose bits set since the last commit (their chunks are filled
//! again, with the same backup bytes, or were user writes not yet flushed), never clear a bit
//! committed before, and a bit on disk always means its chunk's data is on disk.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"CONVOYFM";
const VERSION: u32 = 1;
const HEADER: u64 = 64;

/// A persistent bitmap of filled chunks. `Send + Sync`: bits are set from many tasks.
#[derive(Debug)]
pub(crate) struct FillMap {
    path: PathBuf,
    file: File,
    chunk_count: u64,
    words: Vec<AtomicU64>,
    filled: AtomicU64,
    /// Serializes commits (one in-place write of the bitmap at a time).
    commit: Mutex<()>,
}

fn header(chunk_count: u64, chunk_size: u64, backup_id: &[u8; 32]) -> [u8; HEADER as usize] {
    let mut h = [0u8; HEADER as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&chunk_count.to_le_bytes());
    h[24..32].copy_from_slice(&chunk_size.to_le_bytes());
    h[32..64].copy_from_slice(backup_id);
    h
}

fn bitmap_len(chunk_count: u64) -> u64 {
    chunk_count.div_ceil(8)
}

impl FillMap {
    /// A new map with no chunk filled, durable (file and directory entry synced) when it
    /// returns. An existing file at `path` is an error.
    pub(crate) fn create(
        path: &Path,
        chunk_count: u64,
        chunk_size: u64,
        backup_id: &[u8; 32],
    ) -> Result<FillMap> {
        let io = |e| Error::io("create the fill map", path, e);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(io)?;
        file.write_all_at(&header(chunk_count, chunk_size, backup_id), 0)
            .map_err(io)?;
        file.set_len(HEADER + bitmap_len(chunk_count)).map_err(io)?;
        file.sync_all().map_err(io)?;
        if let Some(dir) = path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(FillMap {
            path: path.to_path_buf(),
            file,
            chunk_count,
            words: (0..chunk_count.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            filled: AtomicU64::new(0),
            commit: Mutex::new(()),
        })
    }

    /// The map at `path`, which must belong to the same backup and geometry.
    ///
    /// # Errors
    /// A clear error naming the file when it is missing, truncated, of another format or
    /// version, or made for another backup or chunk geometry: a map never applies to data it
    /// was not made for.
    pub(crate) fn open(
        path: &Path,
        chunk_count: u64,
        chunk_size: u64,
        backup_id: &[u8; 32],
    ) -> Result<FillMap> {
        let io = |e| Error::io("open the fill map", path, e);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io)?;
        let bad = |why: String| Error::CorruptRecord {
            path: path.to_path_buf(),
            reason: format!("fill map: {why}"),
        };
        let len = file.metadata().map_err(io)?.len();
        let want_len = HEADER + bitmap_len(chunk_count);
        let mut h = [0u8; HEADER as usize];
        if len < HEADER {
            return Err(bad(format!("{len} bytes, shorter than its header")));
        }
        file.read_exact_at(&mut h, 0).map_err(io)?;
        if &h[..8] != MAGIC {
            return Err(bad("not a fill map (bad magic)".into()));
        }
        let version = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(bad(format!(
                "version {version}, this convoy reads {VERSION}"
            )));
        }
        if h != header(chunk_count, chunk_size, backup_id) {
            return Err(bad(
                "made for another backup or chunk geometry than the volume's".into(),
            ));
        }
        if len != want_len {
            return Err(bad(format!("{len} bytes, expected {want_len}")));
        }
        let mut bits = vec![0u8; bitmap_len(chunk_count) as usize];
        file.read_exact_at(&mut bits, HEADER).map_err(io)?;
        let words: Vec<AtomicU64> = bits
            .chunks(8)
            .map(|c| {
                let mut w = [0u8; 8];
                w[..c.len()].copy_from_slice(c);
                AtomicU64::new(u64::from_le_bytes(w))
            })
            .collect();
        // Bits past the last chunk are never set; ignore any a foreign write left.
        if let Some(last) = words.last() {
            let tail = chunk_count % 64;
            if tail != 0 {
                last.fetch_and((1u64 << tail) - 1, Ordering::Relaxed);
            }
        }
        let filled = words
            .iter()
            .map(|w| u64::from(w.load(Ordering::Relaxed).count_ones()))
            .sum();
        Ok(FillMap {
            path: path.to_path_buf(),
            file,
            chunk_count,
            words,
            filled: AtomicU64::new(filled),
            commit: Mutex::new(()),
        })
    }

    /// Chunks the map covers.
    pub(crate) fn chunk_count(&self) -> u64 {
        self.chunk_count
    }

    /// Chunks filled (in memory: committed or not).
    pub(crate) fn filled(&self) -> u64 {
        self.filled.load(Ordering::Relaxed)
    }

    /// Whether every chunk is filled.
    pub(crate) fn complete(&self) -> bool {
        self.filled() == self.chunk_count
    }

    /// Whether chunk `i` is filled.
    pub(crate) fn is_filled(&self, i: u64) -> bool {
        self.words[(i / 64) as usize].load(Ordering::Acquire) & (1 << (i % 64)) != 0
    }

    /// Marks chunk `i` filled, in memory only (see [`FillMap::commit`]). Answers whether it
    /// was not before.
    pub(crate) fn set(&self, i: u64) -> bool {
        assert!(
            i < self.chunk_count,
            "chunk {i} past the map's {}",
            self.chunk_count
        );
        let bit = 1 << (i % 64);
        let was = self.words[(i / 64) as usize].fetch_or(bit, Ordering::AcqRel);
        let new = was & bit == 0;
        if new {
            self.filled.fetch_add(1, Ordering::Relaxed);
        }
        new
    }

    /// The unfilled chunks in ascending runs of at most `max_run` chunks.
    pub(crate) fn unfilled_runs(&self, max_run: u64) -> Vec<std::ops::Range<u64>> {
        let mut runs = Vec::new();
        let mut i = 0;
        while i < self.chunk_count {
            if self.is_filled(i) {
                i += 1;
                continue;
            }
            let start = i;
            while i < self.chunk_count && !self.is_filled(i) && i - start < max_run.max(1) {
                i += 1;
            }
            runs.push(start..i);
        }
        runs
    }

    /// Writes the bits set in memory to the file, in place, and syncs it. The caller has made
    /// the data of every chunk whose bit is set durable first (the crash rule above).
    ///
    /// # Errors
    /// The file's write or sync error (the bits stay set in memory; commit again).
    #[cfg(test)]
    pub(crate) fn commit(&self) -> Result<()> {
        self.commit_after(|| Ok(()))
    }

    /// Takes the bits set in memory now, runs `make_durable` (which makes the data of every
    /// chunk filled before this call durable: a sync of the device), and then writes those
    /// bits — not bits set while `make_durable` ran, whose data it may not cover. Commits are
    /// serialized, so an older set of bits never overwrites a newer one.
    ///
    /// # Errors
    /// The error of `make_durable` (nothing is written then) or of the map's write or sync.
    pub(crate) fn commit_after(
        &self,
        make_durable: impl FnOnce() -> std::io::Result<()>,
    ) -> Result<()> {
        let _one = self.commit.lock().unwrap_or_else(|p| p.into_inner());
        let bits = self.bits();
        make_durable().map_err(|e| Error::io("sync the volume being filled", &self.path, e))?;
        let io = |e| Error::io("write the fill map", &self.path, e);
        self.file.write_all_at(&bits, HEADER).map_err(io)?;
        self.file.sync_data().map_err(io)
    }

    fn bits(&self) -> Vec<u8> {
        let mut bits = Vec::with_capacity(bitmap_len(self.chunk_count) as usize);
        for w in &self.words {
            bits.extend_from_slice(&w.load(Ordering::Acquire).to_le_bytes());
        }
        bits.truncate(bitmap_len(self.chunk_count) as usize);
        bits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: [u8; 32] = [7; 32];

    #[test]
    fn bits_survive_commit_and_reopen_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vol.fill");
        let m = FillMap::create(&p, 130, 1 << 20, &ID).unwrap();
        assert!(FillMap::create(&p, 130, 1 << 20, &ID).is_err());
        assert_eq!((m.filled(), m.complete(), m.chunk_count()), (0, false, 130));
        assert_eq!(m.unfilled_runs(8).len(), 17);
        for i in [0, 1, 63, 64, 129] {
            assert!(m.set(i));
        }
        assert!(!m.set(64));
        assert_eq!(m.filled(), 5);
        m.commit().unwrap();
        // Set but not committed: lost at a crash, which is allowed.
        m.set(100);
        drop(m);
        let m = FillMap::open(&p, 130, 1 << 20, &ID).unwrap();
        assert_eq!(m.filled(), 5);
        assert!(m.is_filled(63) && m.is_filled(129) && !m.is_filled(100));
        assert_eq!(m.unfilled_runs(1000), vec![2..63, 65..129]);
        for i in 0..130 {
            m.set(i);
        }
        assert!(m.complete());
        assert!(m.unfilled_runs(8).is_empty());

        for (count, size, id) in [
            (131, 1 << 20, ID),
            (130, 1 << 21, ID),
            (130, 1 << 20, [8; 32]),
        ] {
            let e = FillMap::open(&p, count, size, &id).unwrap_err();
            assert!(e.to_string().contains("another backup"), "{e}");
        }
        let len = std::fs::metadata(&p).unwrap().len();
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(len - 1).unwrap();
        let e = FillMap::open(&p, 130, 1 << 20, &ID).unwrap_err();
        assert!(e.to_string().contains("expected"), "{e}");
        f.set_len(10).unwrap();
        let e = FillMap::open(&p, 130, 1 << 20, &ID).unwrap_err();
        assert!(e.to_string().contains("shorter than its header"), "{e}");
        f.write_all_at(b"NOTAMAP!", 0).unwrap();
        f.set_len(len).unwrap();
        let e = FillMap::open(&p, 130, 1 << 20, &ID).unwrap_err();
        assert!(e.to_string().contains("bad magic"), "{e}");
        let e = FillMap::open(&dir.path().join("none"), 1, 1, &ID).unwrap_err();
        assert!(e.to_string().contains("none"), "{e}");
    }
}
