//! The store index: for every block stored, the pack and byte range holding it. It is the
//! union of every pack's own index (the tail of the pack), cached locally per destination (one
//! file per pack). The cache is kept true with the pack deletion journal in the store marker
//! (`crate::gone`), which a backup reads anyway: packs deleted since the cache was last brought
//! up to date are dropped from it. It is rebuilt from a listing of `packs/` (cached packs no
//! longer listed dropped, packs not cached read: one ranged GET of the tail each) when there is
//! no cache, when the journal cannot account for it, and once an hour, so that packs other
//! hosts wrote meanwhile are found for deduplication.
//!
//! A backup uses it to decide "already stored" without a request per chunk; `repair` and
//! compaction-free deletes do not need it.

use std::collections::{HashMap, HashSet};
use std::path::{Path as FsPath, PathBuf};

use convoy_blockstore::{decode_pack_index, pack_tail_len, BlockId, PackEntry};
use futures::{StreamExt, TryStreamExt};

use serde::{Deserialize, Serialize};

use crate::error::{BackupError, Result};
use crate::gone::Journal;
use crate::layout;
use crate::manifest::Loc;
use crate::store::Store;

/// How many bytes of a pack's tail are read first (the whole index of packs of up to about
/// 1500 blocks; larger indexes take a second read).
const FIRST_TAIL: u64 = 64 << 10;

/// Every block of the store and where it lies.
#[derive(Debug, Default)]
pub(crate) struct StoreIndex {
    map: HashMap<BlockId, Loc>,
}

impl StoreIndex {
    /// Where block `id` is stored, if anywhere.
    pub fn get(&self, id: &BlockId) -> Option<Loc> {
        self.map.get(id).copied()
    }

    fn add(&mut self, pack: BlockId, entries: &[PackEntry]) {
        for e in entries {
            self.map.entry(e.id).or_insert(Loc {
                pack,
                offset: e.offset,
                stored_len: e.stored_len,
            });
        }
    }
}

/// Reads the index of one pack of `size` bytes (as listed) from the store: `None` if the pack
/// is gone. The tail is read with explicit byte ranges, never a suffix range: some S3 servers
/// (s3s-fs among them) fail a suffix longer than the object instead of returning all of it.
pub(crate) async fn read_pack_index(
    store: &Store,
    pack: &BlockId,
    size: u64,
) -> Result<Option<(Vec<u8>, Vec<PackEntry>)>> {
    let key = layout::pack(pack);
    let bad = |e: convoy_blockstore::BlockError| BackupError::CorruptPack {
        pack: key.to_string(),
        source: Box::new(e),
    };
    if size == 0 {
        return Err(bad(convoy_blockstore::BlockError::MalformedPack {
            reason: "empty object".into(),
        }));
    }
    let first = FIRST_TAIL.min(size);
    let Some(tail) = store.get_range_opt(&key, size - first..size).await? else {
        return Ok(None);
    };
    let keys = store.keys();
    let need = match keys {
        Some(k) => crate::sealed::sealed_tail_len(&tail, k.cipher()),
        None => pack_tail_len(&tail),
    }
    .map_err(bad)?;
    let tail = if need as u64 > size {
        return Err(bad(convoy_blockstore::BlockError::MalformedPack {
            reason: format!("index of {need} bytes in a pack of {size}"),
        }));
    } else if need > tail.len() {
        match store.get_range_opt(&key, size - need as u64..size).await? {
            Some(t) => t,
            None => return Ok(None),
        }
    } else {
        tail.slice(tail.len() - need..)
    };
    let entries = decode_tail(keys, pack, &tail, Some(size)).map_err(bad)?;
    Ok(Some((tail.to_vec(), entries)))
}

/// Decodes a pack's tail: sealed in an encrypted store (the cache holds the sealed tail, so
/// it shows nothing the store does not).
fn decode_tail(
    keys: Option<&crate::crypto::Keys>,
    pack: &BlockId,
    tail: &[u8],
    size: Option<u64>,
) -> std::result::Result<Vec<PackEntry>, convoy_blockstore::BlockError> {
    match keys {
        Some(k) => crate::sealed::decode_sealed_index(k, pack, tail, size),
        None => decode_pack_index(tail, size),
    }
}

fn cache_file(dir: &FsPath, pack: &BlockId) -> PathBuf {
    dir.join(pack.to_hex())
}

/// Writes a pack's tail into the cache (a temporary name, then renamed: a reader never sees
/// half a file; a failure only costs a read of the tail later).
fn write_cache(dir: &FsPath, pack: &BlockId, tail: &[u8]) {
    let tmp = dir.join(format!(".{}.tmp", pack.to_hex()));
    if std::fs::write(&tmp, tail).is_ok() {
        let _ = std::fs::rename(&tmp, cache_file(dir, pack));
    }
}

/// Caches the index of a pack this process has just written (`bytes`, the whole pack), so
/// that the next load does not read it back from the store: on S3 that was a GET per pack of
/// the previous backup at the start of every incremental one.
pub(crate) fn cache_written(store: &Store, pack: &BlockId, bytes: &[u8]) {
    let Some(dir) = store.index_cache() else {
        return;
    };
    let probe = &bytes[bytes.len().saturating_sub(FIRST_TAIL as usize)..];
    let need = match store.keys() {
        Some(k) => crate::sealed::sealed_tail_len(probe, k.cipher()),
        None => pack_tail_len(probe),
    };
    match need {
        Ok(need) if need <= bytes.len() => {
            let _ = std::fs::create_dir_all(&dir);
            write_cache(&dir, pack, &bytes[bytes.len() - need..]);
        }
        _ => {}
    }
}

/// How long a cache is used without a new listing, in seconds: packs other hosts wrote are
/// not in it until then (at worst a block is stored twice, each copy collected on its own).
pub(crate) const RELIST_AFTER: u64 = 3600;

/// A cache of another journal (another store at the same URL, or one made again) that has
/// not been used for this long is removed, in seconds.
const FORGET_AFTER: u64 = 7 * 86_400;

/// The cache's own record, beside its pack files: the journal (id and last deletion) it has
/// been brought up to date with, and when it was last made from a listing.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CacheState {
    journal: String,
    seq: u64,
    listed_at: u64,
}

const STATE_FILE: &str = "journal.json";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn read_state(dir: &FsPath) -> Option<CacheState> {
    serde_json::from_slice(&std::fs::read(dir.join(STATE_FILE)).ok()?).ok()
}

fn write_state(dir: &FsPath, st: &CacheState) {
    let tmp = dir.join(format!(".{STATE_FILE}.{}.tmp", std::process::id()));
    if std::fs::write(&tmp, serde_json::to_vec(st).expect("json")).is_ok() {
        let _ = std::fs::rename(&tmp, dir.join(STATE_FILE));
    }
}

/// A journal id as a directory name: the 32 hex digits `gone::Journal::fresh` makes, nothing
/// else (the marker is the store's to write, the path is ours).
fn safe_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Makes the store index, under the run's lock, from the marker's pack deletion `journal`. The
/// cache of this journal
/// (`<cache dir>/<journal id>/`: caches of two stores never mix, even at one URL) is used if
/// it was made from a listing less than [`RELIST_AFTER`] ago and the journal still holds every
/// deletion since: the packs deleted meanwhile are dropped from it, those compaction wrote are
/// added (a GET of each one's index), and no other request is made.
/// Otherwise the index is made from a listing of `packs/`, and the cache with it. Without a
/// cache directory (`vfs://` by default) it is made from a listing and every pack's tail.
/// Answers the journal when the index came from the cache: it was read before the lock was
/// held, so the run checks before publishing that nothing it reuses was deleted since (a
/// listing is made under the lock, which nothing can change).
pub(crate) async fn resolve(
    store: &Store,
    journal: Option<Journal>,
    parallelism: usize,
    gate: &crate::gate::Gate,
) -> Result<(StoreIndex, Option<Journal>)> {
    // A listing is made under the lock (nothing can change what it found before the backup
    // publishes), as is the marker's first journal.
    let Some(root) = store.cache_dir.clone() else {
        gate.wait().await?;
        return Ok((load(store, None, parallelism).await?, None));
    };
    let journal = match journal {
        Some(j) => Some(j),
        // A marker made before the journal existed gets one now (once per store).
        None => {
            gate.wait().await?;
            crate::gone::adopt(store).await?
        }
    };
    let Some(journal) = journal.filter(|j| safe_id(&j.id)) else {
        store.set_index_cache(None);
        gate.wait().await?;
        return Ok((load(store, None, parallelism).await?, None));
    };
    let dir = root.join(&journal.id);
    store.set_index_cache(Some(dir.clone()));
    let cached = read_state(&dir)
        .filter(|st| st.journal == journal.id && now().saturating_sub(st.listed_at) < RELIST_AFTER);
    if let Some(st) = cached {
        if let Some(changes) = journal.changes_after(st.seq) {
            for p in &changes.gone {
                let _ = std::fs::remove_file(cache_file(&dir, p));
            }
            // Packs a compaction wrote: their indexes are read (a GET each, only then).
            let new: Vec<(BlockId, u64)> = changes
                .added
                .into_iter()
                .filter(|(p, _)| !cache_file(&dir, p).exists())
                .collect();
            fetch_indexes(store, new, Some(&dir), parallelism).await?;
            let index = from_cache(store, &dir);
            write_state(
                &dir,
                &CacheState {
                    journal: journal.id.clone(),
                    seq: journal.seq,
                    listed_at: st.listed_at,
                },
            );
            return Ok((index, Some(journal)));
        }
    }
    gate.wait().await?;
    let index = load(store, Some(&dir), parallelism).await?;
    write_state(
        &dir,
        &CacheState {
            journal: journal.id.clone(),
            seq: journal.seq,
            listed_at: now(),
        },
    );
    forget_others(&root, &journal.id);
    Ok((index, None))
}

/// Removes what else the cache directory holds: pack files of the layout before journals,
/// and caches of other journals unused for [`FORGET_AFTER`].
fn forget_others(root: &FsPath, keep: &str) {
    let Ok(rd) = std::fs::read_dir(root) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name == keep {
            continue;
        }
        let path = e.path();
        if path.is_dir() {
            let old = read_state(&path).is_none_or(|st| {
                safe_id(&name) && now().saturating_sub(st.listed_at) > FORGET_AFTER
            });
            if old && safe_id(&name) {
                let _ = std::fs::remove_dir_all(&path);
            }
        } else if name.parse::<BlockId>().is_ok() {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// The index of every pack in the cache directory; a damaged file is removed (its pack is
/// then not deduplicated against until the next listing).
fn from_cache(store: &Store, dir: &FsPath) -> StoreIndex {
    let mut index = StoreIndex::default();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return index;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(p) = name.to_str().and_then(|n| n.parse::<BlockId>().ok()) else {
            continue;
        };
        match read_cached(store, dir, &p) {
            Some(entries) => index.add(p, &entries),
            None => {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    index
}

/// A pack's index from the cache `dir`, if there and intact.
fn read_cached(store: &Store, dir: &FsPath, pack: &BlockId) -> Option<Vec<PackEntry>> {
    let bytes = std::fs::read(cache_file(dir, pack)).ok()?;
    decode_tail(store.keys(), pack, &bytes, None).ok()
}

/// Reads the indexes of `packs` (id and size) from the store, `parallelism` at a time, and
/// caches each in `cache`. A pack deleted meanwhile is left out.
async fn fetch_indexes(
    store: &Store,
    packs: Vec<(BlockId, u64)>,
    cache: Option<&FsPath>,
    parallelism: usize,
) -> Result<Vec<(BlockId, Vec<PackEntry>)>> {
    let fetched: Vec<_> = futures::stream::iter(packs)
        .map(|(p, size)| async move { read_pack_index(store, &p, size).await.map(|r| (p, r)) })
        .buffer_unordered(parallelism.clamp(1, 32))
        .try_collect()
        .await?;
    Ok(fetched
        .into_iter()
        .filter_map(|(p, r)| {
            let (tail, entries) = r?;
            if let Some(dir) = cache {
                write_cache(dir, &p, &tail);
            }
            Some((p, entries))
        })
        .collect())
}

/// Loads the store index from a listing: lists `packs/`, takes each listed pack's index from
/// the cache `cache` when present and intact, reads it from the store otherwise (and caches
/// it), and drops cached packs that are no longer listed.
async fn load(store: &Store, cache: Option<&FsPath>, parallelism: usize) -> Result<StoreIndex> {
    let listed: Vec<(object_store::path::Path, u64)> = store
        .list_meta(&layout::packs_prefix())
        .try_collect()
        .await?;
    let packs: Vec<(BlockId, u64)> = listed
        .iter()
        .filter_map(|(k, size)| Some((k.filename()?.parse::<BlockId>().ok()?, *size)))
        .collect();
    if let Some(dir) = cache {
        let _ = std::fs::create_dir_all(dir);
    }
    let mut index = StoreIndex::default();
    let mut missing = Vec::new();
    for (p, size) in &packs {
        match cache.and_then(|d| read_cached(store, d, p)) {
            Some(entries) => index.add(*p, &entries),
            None => missing.push((*p, *size)),
        }
    }
    for (p, entries) in fetch_indexes(store, missing, cache, parallelism).await? {
        index.add(p, &entries);
    }
    if let Some(dir) = cache {
        let live: HashSet<String> = packs.iter().map(|(p, _)| p.to_hex()).collect();
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name != STATE_FILE && !live.contains(&name) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
    Ok(index)
}
