//! The whole-store view that `compact` and `repair` start from (under the exclusive lock), and
//! the sweep that removes what crashed backups, deletes and compactions left behind.
//!
//! What is live (see `docs/backup-format.md`, "Compaction"):
//! * a backup record `refs/<X>/<owner>` is valid when its backup exists;
//! * a pack X is **referenced** when it has a valid backup record, or a forward record
//!   `refs/X/from=<P>` such that `moved/<P>` exists, sends blocks to X, and P is referenced;
//! * a forwarding object `moved/<P>` is kept while P is referenced; if the pack P itself is
//!   still there (a compaction stopped between writing `moved/<P>` and deleting P), the
//!   compaction is finished by deleting P — unless `moved/<P>` is damaged or names a pack that
//!   does not exist, in which case `moved/<P>` goes and P stays;
//! * a damaged `moved/<P>` whose pack is gone is kept (its forward records count as valid):
//!   its blocks are somewhere, and nothing it might point to is removed.
//!
//! Everything else — records of backups that do not exist, forward records no forwarding
//! object backs, forwarding objects of unreferenced packs, unreferenced packs — is garbage.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use convoy_blockstore::BlockId;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;

use crate::error::Result;
use crate::forward::Forward;
use crate::layout;
use crate::list::{backups_of, volumes};
use crate::store::Store;
use crate::url::BackupRef;

/// A forwarding object as found.
#[derive(Clone, Debug)]
pub(crate) enum Found {
    /// Decoded.
    Ok(Arc<Forward>),
    /// Does not decode.
    Damaged,
}

/// Every pack, forwarding object, reference record and backup of the store.
#[derive(Debug, Default)]
pub(crate) struct Survey {
    /// `packs/` objects and their sizes.
    pub packs: HashMap<BlockId, u64>,
    /// `moved/` objects.
    pub moved: HashMap<BlockId, Found>,
    /// Every backup (published manifest).
    pub backups: Vec<BackupRef>,
    /// Backup records by pack (owner names).
    pub backup_refs: HashMap<BlockId, BTreeSet<String>>,
    /// Forward records by pack: the compacted packs sending blocks to it.
    pub fwd_refs: HashMap<BlockId, BTreeSet<BlockId>>,
    /// Keys under `refs/` and `moved/` that name nothing.
    pub junk: Vec<Path>,
    /// The record names of every backup.
    owners: HashSet<String>,
}

/// Lists the whole store and reads every forwarding object. Requests: one listing call per
/// 1000 keys of `refs/`, `packs/` and `moved/`, one per volume, and one read per forwarding
/// object.
pub(crate) async fn survey(store: &Store) -> Result<Survey> {
    let mut s = Survey::default();
    for v in volumes(store).await? {
        for r in backups_of(store, &v).await? {
            s.owners.insert(store.ref_owner(&r));
            s.backups.push(r);
        }
    }
    let mut refs = store.list(&layout::refs_prefix());
    while let Some(key) = refs.try_next().await? {
        let parts: Vec<String> = key.parts().map(|p| p.as_ref().to_string()).collect();
        let pack = parts.get(1).and_then(|h| h.parse::<BlockId>().ok());
        match (pack, parts.get(2)) {
            (Some(pack), Some(name)) if parts.len() == 3 => {
                match name.strip_prefix(layout::FORWARD_REF_PREFIX) {
                    Some(from) => match from.parse::<BlockId>() {
                        Ok(from) => {
                            s.fwd_refs.entry(pack).or_default().insert(from);
                        }
                        Err(_) => s.junk.push(key),
                    },
                    None => {
                        s.backup_refs.entry(pack).or_default().insert(name.clone());
                    }
                }
            }
            _ => s.junk.push(key),
        }
    }
    drop(refs);
    let packs: Vec<(Path, u64)> = store
        .list_meta(&layout::packs_prefix())
        .try_collect()
        .await?;
    for (key, size) in packs {
        // A file not at its id's place (or not named by an id) is read by nobody: junk.
        match key.filename().and_then(|f| f.parse::<BlockId>().ok()) {
            Some(id) if key == layout::pack(&id) => {
                s.packs.insert(id, size);
            }
            _ => s.junk.push(key),
        }
    }
    let moved: Vec<Path> = store.list(&layout::moved_prefix()).try_collect().await?;
    let mut ids = Vec::new();
    for key in moved {
        match key.filename().and_then(|f| f.parse::<BlockId>().ok()) {
            Some(id) if key == layout::moved(&id) => ids.push(id),
            _ => s.junk.push(key),
        }
    }
    let found: Vec<(BlockId, Option<Found>)> = futures::stream::iter(ids)
        .map(|id| async move {
            let f = match crate::forward::read(store, &id).await {
                Ok(Some(f)) => Some(Found::Ok(Arc::new(f))),
                Ok(None) => None,
                Err(crate::BackupError::CorruptForward { .. }) => Some(Found::Damaged),
                Err(e) => return Err(e),
            };
            Ok((id, f))
        })
        .buffer_unordered(16)
        .try_collect()
        .await?;
    for (id, f) in found {
        if let Some(f) = f {
            s.moved.insert(id, f);
        }
    }
    Ok(s)
}

/// What a sweep removed.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Swept {
    /// Reference records (backup and forward) removed.
    pub refs_removed: u64,
    /// Forwarding objects (and stray keys under `moved/`) removed.
    pub forwards_removed: u64,
    /// Unreferenced packs removed.
    pub packs_removed: u64,
    /// Blocks in them (counted only when asked).
    pub blocks_removed: u64,
    /// Compacted packs still there, removed (a compaction stopped before deleting them).
    pub compactions_finished: u64,
}

/// How a forwarding object stands.
#[derive(Clone)]
enum Standing {
    /// Decoded, and usable: its targets are the packs it sends blocks to.
    Usable(BTreeSet<BlockId>),
    /// Damaged, its pack gone: kept, its forward records trusted.
    Kept,
    /// Removed (damaged or incomplete while its pack is still there).
    Dropped,
}

struct Liveness<'a> {
    s: &'a Survey,
    standing: HashMap<BlockId, Standing>,
    memo: HashMap<BlockId, bool>,
    visiting: HashSet<BlockId>,
}

impl Liveness<'_> {
    /// Whether the forward record `refs/<to>/from=<from>` is backed by its forwarding object.
    fn backs(&self, from: &BlockId, to: &BlockId) -> bool {
        match self.standing.get(from) {
            Some(Standing::Usable(t)) => t.contains(to),
            Some(Standing::Kept) => true,
            Some(Standing::Dropped) | None => false,
        }
    }

    fn referenced(&mut self, x: BlockId) -> bool {
        if let Some(&r) = self.memo.get(&x) {
            return r;
        }
        if !self.visiting.insert(x) {
            return false; // a loop (only damage makes one): not a reason to keep anything
        }
        let by_backup = self
            .s
            .backup_refs
            .get(&x)
            .is_some_and(|o| o.iter().any(|o| self.s.owners.contains(o)));
        let r = by_backup || {
            let froms: Vec<BlockId> = self
                .s
                .fwd_refs
                .get(&x)
                .map(|f| f.iter().copied().collect())
                .unwrap_or_default();
            froms
                .into_iter()
                .any(|p| self.backs(&p, &x) && self.referenced(p))
        };
        self.visiting.remove(&x);
        self.memo.insert(x, r);
        r
    }
}

/// Removes every piece of garbage of `s` (see the module documentation) and updates `s` to
/// what is left. With `count_blocks`, reads the index of each pack removed to count its blocks.
/// Caller holds the exclusive lock.
pub(crate) async fn sweep(store: &Store, s: &mut Survey, count_blocks: bool) -> Result<Swept> {
    let mut out = Swept::default();
    let present = |s: &Survey, t: &BlockId| {
        s.packs.contains_key(t) || matches!(s.moved.get(t), Some(Found::Ok(_)))
    };
    let mut standing = HashMap::new();
    for (p, f) in &s.moved {
        let st = match f {
            Found::Damaged if s.packs.contains_key(p) => Standing::Dropped,
            Found::Damaged => Standing::Kept,
            Found::Ok(f) => {
                let targets = f.targets();
                if s.packs.contains_key(p) && !targets.iter().all(|t| present(s, t)) {
                    Standing::Dropped
                } else {
                    Standing::Usable(targets)
                }
            }
        };
        standing.insert(*p, st);
    }
    let mut live = Liveness {
        s,
        standing,
        memo: HashMap::new(),
        visiting: HashSet::new(),
    };
    let mut all: BTreeSet<BlockId> = BTreeSet::new();
    all.extend(live.s.packs.keys());
    all.extend(live.s.moved.keys());
    all.extend(live.s.backup_refs.keys());
    all.extend(live.s.fwd_refs.keys());
    let referenced: HashSet<BlockId> = all.into_iter().filter(|x| live.referenced(*x)).collect();
    let mut dead_fwd = Vec::new();
    for (to, froms) in &live.s.fwd_refs {
        for from in froms {
            if !(live.backs(from, to) && referenced.contains(from)) {
                dead_fwd.push((*to, *from));
            }
        }
    }
    let standing = live.standing;

    // Records first: a crash in the middle leaves only more of the same garbage.
    for (pack, owners) in &mut s.backup_refs {
        let dead: Vec<String> = owners
            .iter()
            .filter(|o| !s.owners.contains(*o))
            .cloned()
            .collect();
        for o in dead {
            store
                .delete(&Path::from(format!("refs/{}/{o}", pack.to_hex())))
                .await?;
            owners.remove(&o);
            out.refs_removed += 1;
        }
    }
    s.backup_refs.retain(|_, o| !o.is_empty());
    for (to, from) in dead_fwd {
        store.delete(&layout::forward_ref(&to, &from)).await?;
        if let Some(f) = s.fwd_refs.get_mut(&to) {
            f.remove(&from);
        }
        out.refs_removed += 1;
    }
    s.fwd_refs.retain(|_, f| !f.is_empty());
    for key in std::mem::take(&mut s.junk) {
        store.delete(&key).await?;
        if key.as_ref().starts_with("moved/") {
            out.forwards_removed += 1;
        } else if key.as_ref().starts_with("packs/") {
            out.packs_removed += 1;
        } else {
            out.refs_removed += 1;
        }
    }
    // Forwarding objects of unreferenced packs, and unusable ones.
    for (p, st) in &standing {
        if matches!(st, Standing::Dropped) || !referenced.contains(p) {
            store.delete(&layout::moved(p)).await?;
            s.moved.remove(p);
            out.forwards_removed += 1;
        }
    }
    // Compactions stopped after writing the forwarding object: its pack goes.
    let mut finished = Vec::new();
    for (p, st) in &standing {
        if matches!(st, Standing::Usable(_))
            && referenced.contains(p)
            && s.packs.remove(p).is_some()
        {
            finished.push(*p);
        }
    }
    crate::gone::delete_packs(store, &finished).await?;
    out.compactions_finished += finished.len() as u64;
    // Unreferenced packs.
    let dead: Vec<(BlockId, u64)> = s
        .packs
        .iter()
        .filter(|(p, _)| !referenced.contains(*p))
        .map(|(p, size)| (*p, *size))
        .collect();
    if count_blocks {
        for &(p, size) in &dead {
            // A damaged pack counts no blocks.
            if let Ok(Some((_, entries))) = crate::index::read_pack_index(store, &p, size).await {
                out.blocks_removed += entries.len() as u64;
            }
        }
    }
    let dead: Vec<BlockId> = dead.into_iter().map(|(p, _)| p).collect();
    crate::gone::delete_packs(store, &dead).await?;
    for p in &dead {
        s.packs.remove(p);
    }
    out.packs_removed += dead.len() as u64;
    Ok(out)
}
