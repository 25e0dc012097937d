//! Full-store repair after crashes: removes what interrupted backups, deletes and compactions
//! left behind. This is the only operation besides `compact` whose cost is proportional to the
//! store; normal deletes never need it. Runs under the exclusive lock.

use std::collections::HashSet;

use futures::TryStreamExt;

use crate::delete::finish_trash;
use crate::error::Result;
use crate::layout;
use crate::store::Store;
use crate::types::RepairStats;

/// Removes reference records of backups that do not exist, forward records and forwarding
/// objects nothing needs, packs nothing references (finishing compactions that stopped half
/// way), stale parent/child records, and temp files. Caller holds the exclusive lock.
pub(crate) async fn repair(store: &Store) -> Result<RepairStats> {
    let mut stats = RepairStats::default();
    let trash = finish_trash(store).await?;
    stats.blocks_removed += trash.blocks_removed;
    stats.packs_removed += trash.packs_removed;
    let mut survey = crate::gc::survey(store).await?;
    let live: HashSet<(String, String)> = survey
        .backups
        .iter()
        .map(|r| (r.volume.clone(), r.backup.clone()))
        .collect();
    let swept = crate::gc::sweep(store, &mut survey, true).await?;
    stats.refs_removed += swept.refs_removed;
    stats.packs_removed += swept.packs_removed + swept.compactions_finished;
    stats.blocks_removed += swept.blocks_removed;
    stats.records_removed += swept.forwards_removed;
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
            let mut dirs = vec![
                root.join("packs"),
                root.join("refs"),
                root.join("moved"),
                root.join("volumes"),
            ];
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
