//! Delete with garbage collection, under the exclusive lock.
//!
//! Invariant (see `docs/backup-format.md`, "References and deletion"): every entry of every
//! backup X is either *carried* — equal (offset and id) to the entry of X's current parent at
//! the same offset — or *referenced* — a record `refs/<id>/<volume>+<X>` exists. So a block
//! with no reference records is used by no backup, and a backup's own references cover exactly
//! what it added relative to its parent.
//!
//! Deleting B (parent P, possibly none):
//! 1. for each child C of B: add references for C's entries carried from B that P does not
//!    have at the same offset, then make P the parent of C;
//! 2. copy B's manifest (and its parent name) to `trash/`, then remove the manifest — the
//!    backup is gone from listings from here on;
//! 3. for each pack holding an entry of B not carried from P: delete B's reference, and the
//!    pack itself when no reference is left (one short listing per pack); a compacted pack's
//!    forwarding object goes with it, and so do the packs only it still sent blocks to;
//! 4. remove B's trash entry.
//!
//! Steps 3–4 resume from the trash after a crash: every delete first finishes leftover trash.
//! Cost: B's manifest, its children's manifests, P's manifest — never the whole store.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use convoy_blockstore::BlockId;
use futures::TryStreamExt;

use crate::error::{BackupError, Result};
use crate::layout;
use crate::manifest::{EntryCursor, ManifestReader};
use crate::restore::open_manifest;
use crate::store::Store;
use crate::types::DeleteStats;
use crate::url::BackupRef;

async fn open_cursor(store: &Store, r: &BackupRef) -> Result<Option<EntryCursor>> {
    match open_manifest(store, r).await {
        Ok(reader) => Ok(Some(EntryCursor::new(reader))),
        Err(BackupError::BackupNotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The current parent of `r`, if any.
pub(crate) async fn current_parent(store: &Store, r: &BackupRef) -> Result<Option<String>> {
    Ok(store
        .get_opt(&layout::parent_record(r))
        .await?
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .filter(|p| !p.is_empty()))
}

/// Deletes backup `r` and collects the blocks only it used. Caller holds the exclusive lock.
pub(crate) async fn delete(store: &Arc<Store>, r: &BackupRef) -> Result<DeleteStats> {
    let mut stats = finish_trash(store).await?;
    if !store.exists(&layout::manifest(r)).await? {
        return Err(BackupError::BackupNotFound {
            dest: store.dest.clone(),
            volume: r.volume.clone(),
            backup: r.backup.clone(),
        });
    }
    let parent = current_parent(store, r).await?;
    let parent_ref = parent
        .as_deref()
        .map(|p| BackupRef::new(&r.volume, p))
        .transpose()?;

    // 1. Re-attach children.
    let children: Vec<_> = store
        .list(&layout::children_of(&r.volume, &r.backup))
        .try_collect()
        .await?;
    for key in children {
        let Some(child) = key.filename().map(str::to_string) else {
            continue;
        };
        let cref = BackupRef::new(&r.volume, &child)?;
        if let Some(c) = open_cursor(store, &cref).await? {
            reattach(store, c, r, parent_ref.as_ref(), &cref).await?;
            stats.children_reparented += 1;
        }
        match &parent {
            Some(p) => {
                store
                    .put(&layout::parent_record(&cref), Bytes::from(p.clone()))
                    .await?;
                store
                    .put(&layout::child_marker(&r.volume, p, &child), Bytes::new())
                    .await?;
            }
            None => store.delete(&layout::parent_record(&cref)).await?,
        }
        store.delete(&key).await?;
    }

    // 2. Move to the trash.
    let manifest =
        store
            .get_opt(&layout::manifest(r))
            .await?
            .ok_or_else(|| BackupError::BackupNotFound {
                dest: store.dest.clone(),
                volume: r.volume.clone(),
                backup: r.backup.clone(),
            })?;
    if let Some(p) = &parent {
        store
            .put(&layout::trash_parent(r), Bytes::from(p.clone()))
            .await?;
    }
    store.put(&layout::trash_manifest(r), manifest).await?;
    store.sync_local().await?;
    store.delete(&layout::manifest(r)).await?;
    store.delete(&layout::parent_record(r)).await?;
    if let Some(p) = &parent {
        store
            .delete(&layout::child_marker(&r.volume, p, &r.backup))
            .await?;
    }

    // 3-4. Collect.
    let (packs, blocks) = collect(store, r).await?;
    stats.packs_removed += packs;
    stats.blocks_removed += blocks;
    Ok(stats)
}

/// Adds references for the entries of child `c` that lose their carrier when `deleted` goes.
async fn reattach(
    store: &Store,
    mut c: EntryCursor,
    deleted: &BackupRef,
    new_parent: Option<&BackupRef>,
    cref: &BackupRef,
) -> Result<()> {
    let mut d = open_cursor(store, deleted).await?;
    let mut p = match new_parent {
        Some(pr) => open_cursor(store, pr).await?,
        None => None,
    };
    let mut done = HashSet::new();
    while let Some(e) = c.next().await? {
        let from_deleted = match &mut d {
            Some(d) => d.at(e.offset).await? == Some(e),
            None => false,
        };
        if !from_deleted {
            continue;
        }
        let in_parent = match &mut p {
            Some(p) => p.at(e.offset).await? == Some(e),
            None => false,
        };
        if !in_parent && done.insert(e.loc.pack) {
            store
                .put(&store.pack_ref(&e.loc.pack, cref), Bytes::new())
                .await?;
        }
    }
    Ok(())
}

/// Steps 3–4 for a trashed backup. Returns packs removed and the backup's blocks in them.
async fn collect(store: &Store, r: &BackupRef) -> Result<(u64, u64)> {
    let mut removed = (0, 0);
    // Packs holding entries `r` added (not carried from its parent), with how many.
    let mut own: HashMap<BlockId, u64> = HashMap::new();
    if let Some(stream) = store.manifest_stream(&layout::trash_manifest(r), r).await? {
        let parent = store
            .get_opt(&layout::trash_parent(r))
            .await?
            .map(|b| String::from_utf8_lossy(&b).trim().to_string());
        // A trash entry means the deletion was decided: finish hiding the backup first, in
        // case a crash came between the copy to the trash and the removal of the manifest
        // (only if the visible manifest is that same backup, not a later one of that name).
        let trashed_uuid = match store.manifest_stream(&layout::trash_manifest(r), r).await? {
            Some(s) => ManifestReader::open(&r.backup, s)
                .await
                .ok()
                .map(|m| m.header().backup_uuid.clone()),
            None => None,
        };
        let visible_uuid = match open_manifest(store, r).await {
            Ok(m) => Some(m.header().backup_uuid.clone()),
            Err(_) => None,
        };
        if visible_uuid.is_some() && visible_uuid == trashed_uuid {
            store.delete(&layout::manifest(r)).await?;
            store.delete(&layout::parent_record(r)).await?;
            if let Some(p) = parent.as_deref().filter(|p| !p.is_empty()) {
                store
                    .delete(&layout::child_marker(&r.volume, p, &r.backup))
                    .await?;
            }
        }
        let mut p = match parent.as_deref() {
            Some(name) if !name.is_empty() => {
                open_cursor(store, &BackupRef::new(&r.volume, name)?).await?
            }
            _ => None,
        };
        match ManifestReader::open(&r.backup, stream).await {
            Ok(reader) => {
                let mut b = EntryCursor::new(reader);
                loop {
                    let e = match b.next().await {
                        Ok(Some(e)) => e,
                        Ok(None) => break,
                        // A damaged trashed manifest: collect what could be read; `repair`
                        // catches the rest.
                        Err(_) => break,
                    };
                    let carried = match &mut p {
                        Some(p) => p.at(e.offset).await? == Some(e),
                        None => false,
                    };
                    if carried {
                        continue;
                    }
                    *own.entry(e.loc.pack).or_insert(0) += 1;
                }
            }
            Err(BackupError::CorruptManifest { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    // One reference delete and one short listing per pack; the pack goes when no backup
    // references it any more (with, for a compacted pack, its forwarding object and the
    // packs only it still used).
    for (pack, entries) in own {
        store.delete(&store.pack_ref(&pack, r)).await?;
        if !store.any_under(&layout::refs_of(&pack)).await? {
            removed.0 += crate::forward::collect_pack(store, pack).await?;
            removed.1 += entries;
        }
    }
    store.delete(&layout::trash_manifest(r)).await?;
    store.delete(&layout::trash_parent(r)).await?;
    Ok(removed)
}

/// Finishes deletions a crash interrupted.
pub(crate) async fn finish_trash(store: &Store) -> Result<DeleteStats> {
    let mut stats = DeleteStats::default();
    let keys: Vec<_> = store.list(&layout::trash_prefix()).try_collect().await?;
    for key in keys {
        let parts: Vec<String> = key.parts().map(|p| p.as_ref().to_string()).collect();
        if parts.len() == 4 && parts[3] == "manifest" {
            let r = BackupRef::new(&parts[1], &parts[2])?;
            let (packs, blocks) = collect(store, &r).await?;
            stats.packs_removed += packs;
            stats.blocks_removed += blocks;
        } else if parts.len() == 4 && parts[3] == "parent" {
            // Removed with its manifest; a lone one is dropped.
            let r = BackupRef::new(&parts[1], &parts[2])?;
            if !store.exists(&layout::trash_manifest(&r)).await? {
                store.delete(&key).await?;
            }
        }
    }
    Ok(stats)
}
