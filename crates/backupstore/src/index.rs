//! The store index: for every block stored, the pack and byte range holding it. It is the
//! union of every pack's own index (the tail of the pack), cached locally per destination and
//! checked against the store's listing of `packs/` on every load: packs no longer listed are
//! dropped from the cache, packs not cached are read (one ranged GET of the tail each).
//!
//! A backup uses it to decide "already stored" without a request per chunk; `repair` and
//! compaction-free deletes do not need it.

use std::collections::{HashMap, HashSet};
use std::path::{Path as FsPath, PathBuf};

use convoy_blockstore::{decode_pack_index, pack_tail_len, BlockId, PackEntry};
use futures::{StreamExt, TryStreamExt};

use crate::error::{BackupError, Result};
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
        Some(_) => crate::sealed::sealed_tail_len(&tail),
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
    let Some(dir) = &store.cache_dir else {
        return;
    };
    let probe = &bytes[bytes.len().saturating_sub(FIRST_TAIL as usize)..];
    let need = match store.keys() {
        Some(_) => crate::sealed::sealed_tail_len(probe),
        None => pack_tail_len(probe),
    };
    match need {
        Ok(need) if need <= bytes.len() => {
            let _ = std::fs::create_dir_all(dir);
            write_cache(dir, pack, &bytes[bytes.len() - need..]);
        }
        _ => {}
    }
}

/// Loads the store index: lists `packs/`, takes each listed pack's index from the cache when
/// present and intact, reads it from the store otherwise (and caches it), and drops cached
/// packs that are no longer listed.
pub(crate) async fn load(store: &Store, parallelism: usize) -> Result<StoreIndex> {
    let listed: Vec<(object_store::path::Path, u64)> = store
        .list_meta(&layout::packs_prefix())
        .try_collect()
        .await?;
    let packs: Vec<(BlockId, u64)> = listed
        .iter()
        .filter_map(|(k, size)| Some((k.filename()?.parse::<BlockId>().ok()?, *size)))
        .collect();
    let cache = store.cache_dir.clone();
    if let Some(dir) = &cache {
        let _ = std::fs::create_dir_all(dir);
    }
    let mut index = StoreIndex::default();
    let mut missing = Vec::new();
    for (p, size) in &packs {
        let cached = cache
            .as_ref()
            .and_then(|d| std::fs::read(cache_file(d, p)).ok())
            .and_then(|b| decode_tail(store.keys(), p, &b, None).ok());
        match cached {
            Some(entries) => index.add(*p, &entries),
            None => missing.push((*p, *size)),
        }
    }
    let fetched: Vec<_> = futures::stream::iter(missing)
        .map(|(p, size)| async move { read_pack_index(store, &p, size).await.map(|r| (p, r)) })
        .buffer_unordered(parallelism.clamp(1, 32))
        .try_collect()
        .await?;
    for (p, r) in fetched {
        // A pack deleted since the listing is simply not in the index.
        if let Some((tail, entries)) = r {
            if let Some(dir) = &cache {
                write_cache(dir, &p, &tail);
            }
            index.add(p, &entries);
        }
    }
    if let Some(dir) = &cache {
        let live: HashSet<String> = packs.iter().map(|(p, _)| p.to_hex()).collect();
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if !live.contains(&name) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
    Ok(index)
}
