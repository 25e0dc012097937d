//! Full-store repair after crashes: removes what interrupted backups and deletes left behind.
//! This is the only operation whose cost is proportional to the store; normal deletes never
//! need it. Runs under the exclusive lock.

use std::collections::HashSet;

use convoy_blockstore::BlockId;
use futures::TryStreamExt;

use crate::delete::finish_trash;
use crate::error::Result;
use crate::layout;
use crate::list::{backups_of, volumes};
use crate::store::Store;
use crate::types::RepairStats;

/// Removes reference records of backups that do not exist, blocks nothing references, stale
/// parent/child records, and temp files. Caller holds the exclusive lock.
pub(crate) async fn repair(store: &Store) -> Result<RepairStats> {
    let mut stats = RepairStats::default();
    let trash = finish_trash(store).await?;
    stats.blocks_removed += trash.blocks_removed;
    stats.packs_removed += trash.packs_removed;
    let mut live = HashSet::new();
    let mut owners = HashSet::new();
    for v in volumes(store).await? {
        for r in backups_of(store, &v).await? {
            owners.insert(store.ref_owner(&r));
            live.insert((r.volume, r.backup));
        }
    }
    // References: refs/<pack>/<owner> (`<volume>+<backup>`, or its keyed hash when encrypted).
    let mut referenced: HashSet<BlockId> = HashSet::new();
    let mut refs = store.list(&layout::refs_prefix());
    while let Some(key) = refs.try_next().await? {
        let parts: Vec<String> = key.parts().map(|p| p.as_ref().to_string()).collect();
        let id = parts.get(1).and_then(|h| h.parse::<BlockId>().ok());
        let owner = parts.get(2);
        match (id, owner) {
            (Some(id), Some(owner)) if parts.len() == 3 && owners.contains(owner) => {
                referenced.insert(id);
            }
            _ => {
                store.delete(&key).await?;
                stats.refs_removed += 1;
            }
        }
    }
    drop(refs);
    let packs: Vec<_> = store
        .list_meta(&layout::packs_prefix())
        .try_collect()
        .await?;
    for (key, size) in packs {
        let id = key.filename().and_then(|f| f.parse::<BlockId>().ok());
        if !id.is_some_and(|id| referenced.contains(&id)) {
            if let Some(id) = id {
                // Count its blocks for the report (a damaged pack counts none).
                if let Ok(Some((_, entries))) =
                    crate::index::read_pack_index(store, &id, size).await
                {
                    stats.blocks_removed += entries.len() as u64;
                }
            }
            store.delete(&key).await?;
            stats.packs_removed += 1;
        }
    }
    // volumes/<v>/parent/<b> and volumes/<v>/children/<p>/<c> of backups that do not exist.
    let mut records = store.list(&layout::volumes_prefix());
    while let Some(key) = records.try_next().await? {
        let parts: Vec<String> = key.parts().map(|p| p.as_ref().to_string()).collect();
        let owner = match (parts.len(), parts.get(2).map(String::as_str)) {
            (4, Some("parent")) => Some(&parts[3]),
            (5, Some("children")) => Some(&parts[4]),
            _ => None,
        };
        if let Some(owner) = owner {
            if !live.contains(&(parts[1].clone(), owner.clone())) {
                store.delete(&key).await?;
                stats.records_removed += 1;
            }
        }
    }
    drop(records);
    if let Some(root) = store.local_root.clone() {
        // object_store's local store stages writes as `<name>#<n>`; a crash leaves them.
        let staged = tokio::task::spawn_blocking(move || {
            let mut removed = 0;
            let mut dirs = vec![root.join("packs"), root.join("refs"), root.join("volumes")];
            while let Some(dir) = dirs.pop() {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let path = entry.path();
                    if path.is_dir() {
                        dirs.push(path);
                    } else if entry.file_name().to_string_lossy().contains('#')
                        && std::fs::remove_file(&path).is_ok()
                    {
                        removed += 1;
                    }
                }
            }
            removed
        })
        .await
        .map_err(|e| crate::BackupError::Task(e.to_string()))?;
        stats.records_removed += staged;
    }
    if let Some(root) = &store.local_root {
        if let Ok(mut dir) = tokio::fs::read_dir(root.join("tmp")).await {
            while let Ok(Some(entry)) = dir.next_entry().await {
                if tokio::fs::remove_file(entry.path()).await.is_ok() {
                    stats.records_removed += 1;
                }
            }
        }
    }
    Ok(stats)
}
