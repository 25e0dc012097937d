//! Compaction (see `docs/backup-format.md`, "Compaction"): packs whose used fraction fell
//! below a threshold are rewritten — the blocks some backup still uses copied byte for byte
//! into new packs, a forwarding object `moved/<P>` left for the old pack P, P removed.
//! Manifests are never rewritten.
//!
//! One run, under the exclusive lock:
//! 1. finish the trash, survey the store, remove garbage (crashed backups, deletes and
//!    compactions: `gc::sweep`), point every forwarding object straight at live packs;
//! 2. read every manifest, resolve each entry through the forwarding objects to the pack that
//!    holds it now, and add up each pack's used bytes;
//! 3. pick the packs under the threshold, least used first, up to `max_bytes` of used blocks;
//! 4. copy: for each new pack N — `refs/N/from=<P>` for every P with blocks in it, then N;
//!    then for each P whose blocks are all in written packs, `moved/<P>`; then P is deleted
//!    (on `vfs://` the filesystem is flushed between the steps);
//! 5. point the forwarding objects at the new packs again (step 1's flattening), and collect
//!    what no longer has a record.
//!
//! A crash anywhere leaves the store readable (every step only adds a copy or removes one
//! nothing points to any more) and garbage that the next run's (or `repair`'s) sweep removes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use convoy_blockstore::{decode_block, BlockId, PackBuilder};
use futures::{StreamExt, TryStreamExt};

use crate::error::{BackupError, Result};
use crate::forward::{self, Forward, Moved, MAX_HOPS};
use crate::gc::{self, Found};
use crate::layout;
use crate::manifest::Loc;
use crate::packer::new_pack_id;
use crate::restore::open_manifest;
use crate::sealed::{finish_sealed_pack, sealed_pack_builder};
use crate::store::Store;
use crate::types::{CompactOptions, CompactStats, Progress};

/// Largest ranged read of a pack being compacted.
const MAX_READ: u64 = 4 << 20;
/// Unused bytes between two used blocks read with them rather than with a second request.
const MAX_GAP: u64 = 256 << 10;

/// How new packs are written.
pub(crate) struct Output {
    /// Target pack size.
    pub pack_size: usize,
    /// Packs above this go as multipart uploads.
    pub multipart_above: usize,
}

/// The store as the run sees it: kept up to date as it changes the store.
#[derive(Default)]
struct State {
    /// `packs/` objects and their sizes.
    real: HashMap<BlockId, u64>,
    /// Usable forwarding objects.
    fwd: HashMap<BlockId, Arc<Forward>>,
    /// Damaged forwarding objects kept (their packs gone).
    damaged: HashSet<BlockId>,
    /// Packs with at least one (valid) backup record.
    backup_refs: HashSet<BlockId>,
    /// Forward records: pack → compacted packs sending blocks to it.
    fwd_refs: HashMap<BlockId, BTreeSet<BlockId>>,
}

impl State {
    fn from_survey(s: gc::Survey) -> State {
        let mut st = State {
            real: s.packs,
            backup_refs: s.backup_refs.into_keys().collect(),
            fwd_refs: s.fwd_refs,
            ..Default::default()
        };
        for (p, f) in s.moved {
            match f {
                Found::Ok(f) => {
                    st.fwd.insert(p, f);
                }
                Found::Damaged => {
                    st.damaged.insert(p);
                }
            }
        }
        st
    }

    /// Where the block stored at `loc` is now (`None`: nowhere known).
    fn resolve(&self, mut loc: Loc) -> Option<Loc> {
        for _ in 0..=MAX_HOPS {
            if self.real.contains_key(&loc.pack) {
                return Some(loc);
            }
            loc = self
                .fwd
                .get(&loc.pack)?
                .lookup(loc.offset, loc.stored_len)?;
        }
        None
    }

    fn referenced(&self, p: &BlockId) -> bool {
        self.backup_refs.contains(p) || self.fwd_refs.get(p).is_some_and(|f| !f.is_empty())
    }

    fn stored(&self) -> u64 {
        self.real.values().sum()
    }
}

/// A used block of a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Blob {
    id: BlockId,
    stored_len: u32,
    raw_len: u32,
}

/// The used blocks of one pack, by offset.
#[derive(Default)]
struct Used {
    blobs: BTreeMap<u32, Blob>,
    bytes: u64,
}

#[derive(Default)]
struct Usage {
    packs: HashMap<BlockId, Used>,
    /// Packs two manifests disagree about (another block at the same place): not touched.
    conflicted: HashSet<BlockId>,
    unresolved: u64,
}

impl Usage {
    fn add(&mut self, loc: Loc, b: Blob) {
        let used = self.packs.entry(loc.pack).or_default();
        match used.blobs.get(&loc.offset) {
            Some(had) if *had == b => {}
            Some(_) => {
                self.conflicted.insert(loc.pack);
            }
            None => {
                used.blobs.insert(loc.offset, b);
                used.bytes += u64::from(b.stored_len);
            }
        }
    }
}

/// Reads every manifest and adds up what each live pack holds that some backup uses.
async fn usage(store: &Store, st: &State, backups: &[crate::BackupRef]) -> Result<Usage> {
    let usage = Mutex::new(Usage::default());
    futures::stream::iter(backups)
        .map(|r| {
            let usage = &usage;
            async move {
                let mut reader = match open_manifest(store, r).await {
                    Ok(m) => m,
                    Err(BackupError::BackupNotFound { .. }) => return Ok(()),
                    Err(e) => return Err(e),
                };
                let mut batch = Vec::with_capacity(4096);
                loop {
                    let e = reader.next_entry().await?;
                    if e.is_none() || batch.len() == batch.capacity() {
                        let mut u = usage.lock().unwrap_or_else(|p| p.into_inner());
                        for (loc, blob) in batch.drain(..) {
                            match loc {
                                Some(loc) => u.add(loc, blob),
                                None => u.unresolved += 1,
                            }
                        }
                    }
                    let Some(e) = e else { break };
                    let blob = Blob {
                        id: e.id,
                        stored_len: e.loc.stored_len,
                        raw_len: e.len,
                    };
                    batch.push((st.resolve(e.loc), blob));
                }
                Ok::<_, BackupError>(())
            }
        })
        .buffer_unordered(4)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(usage.into_inner().unwrap_or_else(|p| p.into_inner()))
}

/// Reads and verifies the used blocks of `pack`; `None` if one fails (the pack is left as it
/// is: copying cannot make a damaged block good, and its verify error names it).
async fn read_used(
    store: &Arc<Store>,
    pack: &BlockId,
    used: &Used,
) -> Result<Option<Vec<(u32, Blob, Bytes)>>> {
    let blobs: Vec<(u32, Blob)> = used.blobs.iter().map(|(o, b)| (*o, *b)).collect();
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, (o, b)) in blobs.iter().enumerate() {
        let end = u64::from(*o) + u64::from(b.stored_len);
        match runs.last_mut() {
            Some(r)
                if u64::from(*o) - end_of(&blobs[r.end - 1]) <= MAX_GAP
                    && end - u64::from(blobs[r.start].0) <= MAX_READ =>
            {
                r.end = i + 1
            }
            _ => runs.push(i..i + 1),
        }
    }
    let mut out = Vec::with_capacity(blobs.len());
    for run in runs {
        let start = u64::from(blobs[run.start].0);
        let end = end_of(&blobs[run.end - 1]);
        let Some(bytes) = store.get_range_opt(&layout::pack(pack), start..end).await? else {
            return Ok(None);
        };
        if bytes.len() as u64 != end - start {
            return Ok(None);
        }
        let part: Vec<(u32, Blob)> = blobs[run].to_vec();
        let store2 = store.clone();
        let checked = crate::worker::run(move || {
            let mut got = Vec::with_capacity(part.len());
            for (o, b) in part {
                let at = (u64::from(o) - start) as usize;
                let stored = bytes.slice(at..at + b.stored_len as usize);
                let data = match store2.keys() {
                    Some(k) => crate::sealed::open_blob(k, &b.id, &stored),
                    None => decode_block(&stored, &b.id),
                };
                match data {
                    Ok(d) if d.len() == b.raw_len as usize => got.push((o, b, stored)),
                    _ => return None,
                }
            }
            Some(got)
        })
        .await?;
        match checked {
            Some(got) => out.extend(got),
            None => return Ok(None),
        }
    }
    Ok(Some(out))
}

fn end_of((o, b): &(u32, Blob)) -> u64 {
    u64::from(*o) + u64::from(b.stored_len)
}

/// A pack whose blocks were placed in new packs, waiting for the last of them to be written.
struct Placed {
    pack: BlockId,
    used: u64,
    moved: Vec<Moved>,
    last: BlockId,
}

/// The copying of one run.
struct Copier<'a> {
    store: &'a Arc<Store>,
    st: &'a mut State,
    stats: &'a mut CompactStats,
    progress: &'a dyn Progress,
    output: &'a Output,
    pack: Option<(BlockId, PackBuilder, BTreeSet<BlockId>)>,
    placed: Vec<Placed>,
}

impl Copier<'_> {
    async fn add(&mut self, pack: BlockId, blobs: Vec<(u32, Blob, Bytes)>) -> Result<()> {
        let used: u64 = blobs.iter().map(|b| u64::from(b.1.stored_len)).sum();
        let mut moved = Vec::with_capacity(blobs.len());
        for (offset, b, bytes) in blobs {
            let full = self
                .pack
                .as_ref()
                .is_some_and(|(_, pb, _)| !pb.fits(bytes.len()));
            if full {
                self.flush().await?;
            }
            let keys = self.store.keys();
            let cap = self.output.pack_size;
            let (id, pb, sources) = self.pack.get_or_insert_with(|| {
                let pb = match keys {
                    Some(k) => sealed_pack_builder(cap, k),
                    None => PackBuilder::new(cap),
                };
                (new_pack_id(), pb, BTreeSet::new())
            });
            let e = pb.push(b.id, &bytes, b.raw_len);
            sources.insert(pack);
            moved.push(Moved {
                offset,
                to: Loc {
                    pack: *id,
                    offset: e.offset,
                    stored_len: e.stored_len,
                },
            });
        }
        let last = self.pack.as_ref().map(|p| p.0).expect("a block was added");
        self.stats.bytes_copied += used;
        self.placed.push(Placed {
            pack,
            used,
            moved,
            last,
        });
        Ok(())
    }

    /// Writes the pack being filled (its forward records first), then the forwarding objects
    /// of the packs it completes, then deletes those packs.
    async fn flush(&mut self) -> Result<()> {
        let Some((id, pb, sources)) = self.pack.take() else {
            return Ok(());
        };
        let bytes = match self.store.keys() {
            None => pb.finish(),
            Some(k) => finish_sealed_pack(pb, k, &id)?,
        };
        let len = bytes.len() as u64;
        for p in &sources {
            self.store
                .put(&layout::forward_ref(&id, p), Bytes::new())
                .await?;
        }
        self.st.fwd_refs.entry(id).or_default().extend(sources);
        self.store
            .put_large(
                &layout::pack(&id),
                Bytes::from(bytes),
                self.output.multipart_above,
            )
            .await?;
        self.st.real.insert(id, len);
        self.stats.packs_written += 1;
        self.progress.uploaded(len);
        self.store.sync_local().await?;
        let (done, rest): (Vec<Placed>, Vec<Placed>) = std::mem::take(&mut self.placed)
            .into_iter()
            .partition(|p| p.last == id);
        self.placed = rest;
        let mut forwards = Vec::with_capacity(done.len());
        for p in &done {
            let f = Forward {
                pack: p.pack,
                entries: p.moved.clone(),
            };
            forward::write(self.store, &f).await?;
            self.stats.forwards_written += 1;
            forwards.push(Arc::new(f));
        }
        self.store.sync_local().await?;
        let gone: Vec<BlockId> = done.iter().map(|p| p.pack).collect();
        crate::gone::record_and_delete(self.store, &gone, &[(id, len)]).await?;
        for (p, f) in done.iter().zip(forwards) {
            self.st.real.remove(&p.pack);
            self.st.fwd.insert(p.pack, f);
            self.stats.packs_rewritten += 1;
            self.progress.advance(p.used);
        }
        Ok(())
    }
}

/// Removes `p` and what only it kept, if nothing references it: its pack object (if any) and
/// its forwarding object with the forward records it backs, following to the packs those
/// records kept.
async fn collect(
    store: &Store,
    st: &mut State,
    p: BlockId,
    stats: &mut CompactStats,
) -> Result<()> {
    let mut work = vec![p];
    while let Some(p) = work.pop() {
        if st.referenced(&p) {
            continue;
        }
        if st.real.remove(&p).is_some() {
            crate::gone::delete_packs(store, &[p]).await?;
        }
        if let Some(f) = st.fwd.remove(&p) {
            for to in f.targets() {
                store.delete(&layout::forward_ref(&to, &p)).await?;
                if let Some(s) = st.fwd_refs.get_mut(&to) {
                    s.remove(&p);
                }
                work.push(to);
            }
            store.delete(&layout::moved(&p)).await?;
            stats.forwards_updated += 1;
        }
    }
    Ok(())
}

/// Points every forwarding object that sends blocks to a compacted pack straight at the packs
/// holding them now (dropping blocks no longer used), then removes the forward records and
/// packs this leaves without a reason to exist. Order: new forward records, the objects (one
/// PUT each), the old records.
async fn flatten(store: &Store, st: &mut State, stats: &mut CompactStats) -> Result<()> {
    let mut plans = Vec::new();
    for (x, f) in &st.fwd {
        let targets = f.targets();
        if targets.iter().all(|t| st.real.contains_key(t))
            || targets.iter().any(|t| st.damaged.contains(t))
        {
            continue;
        }
        let entries: Vec<Moved> = f
            .entries
            .iter()
            .filter_map(|m| {
                st.resolve(m.to).map(|to| Moved {
                    offset: m.offset,
                    to,
                })
            })
            .collect();
        plans.push((Forward { pack: *x, entries }, targets));
    }
    if plans.is_empty() {
        return Ok(());
    }
    plans.sort_by_key(|p| p.0.pack);
    for (nf, old) in &plans {
        for t in nf.targets().difference(old) {
            store
                .put(&layout::forward_ref(t, &nf.pack), Bytes::new())
                .await?;
            st.fwd_refs.entry(*t).or_default().insert(nf.pack);
        }
    }
    store.sync_local().await?;
    for (nf, _) in &plans {
        if nf.entries.is_empty() {
            store.delete(&layout::moved(&nf.pack)).await?;
            st.fwd.remove(&nf.pack);
        } else {
            forward::write(store, nf).await?;
            st.fwd.insert(nf.pack, Arc::new(nf.clone()));
        }
        stats.forwards_updated += 1;
    }
    store.sync_local().await?;
    for (nf, old) in plans {
        for t in old.difference(&nf.targets()) {
            store.delete(&layout::forward_ref(t, &nf.pack)).await?;
            if let Some(s) = st.fwd_refs.get_mut(t) {
                s.remove(&nf.pack);
            }
            collect(store, st, *t, stats).await?;
        }
    }
    Ok(())
}

/// Compacts the store. Caller holds the exclusive lock and has checked `opts`.
pub(crate) async fn compact(
    store: &Arc<Store>,
    opts: &CompactOptions,
    output: &Output,
    progress: &dyn Progress,
) -> Result<CompactStats> {
    let mut stats = CompactStats::default();
    let trash = crate::delete::finish_trash(store).await?;
    stats.garbage_removed += trash.packs_removed;
    let mut survey = gc::survey(store).await?;
    stats.bytes_stored_before = survey.packs.values().sum();
    let backups = std::mem::take(&mut survey.backups);
    let swept = gc::sweep(store, &mut survey, false).await?;
    stats.garbage_removed += swept.refs_removed
        + swept.forwards_removed
        + swept.packs_removed
        + swept.compactions_finished;
    let mut st = State::from_survey(survey);
    flatten(store, &mut st, &mut stats).await?;

    let usage = usage(store, &st, &backups).await?;
    stats.backups_read = backups.len() as u64;
    stats.entries_unresolved = usage.unresolved;
    // Packs that may hold blocks of a damaged forwarding object are left alone.
    let suspect: HashSet<BlockId> = st
        .fwd_refs
        .iter()
        .filter(|(_, f)| f.iter().any(|p| st.damaged.contains(p)))
        .map(|(p, _)| *p)
        .collect();
    let mut candidates: Vec<(f64, BlockId, u64, u64)> = Vec::new();
    for (p, &size) in &st.real {
        stats.packs_examined += 1;
        let used = usage.packs.get(p).map_or(0, |u| u.bytes);
        let fraction = used as f64 / size.max(1) as f64;
        if fraction >= opts.threshold {
            continue;
        }
        if usage.conflicted.contains(p) || suspect.contains(p) {
            stats.packs_deferred += 1;
            continue;
        }
        candidates.push((fraction, *p, size, used));
    }
    candidates.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut budget = opts.max_bytes;
    let mut chosen = Vec::new();
    for c in candidates {
        if c.3 <= budget {
            budget -= c.3;
            chosen.push(c);
        } else {
            stats.packs_deferred += 1;
        }
    }
    progress.start(chosen.iter().map(|c| c.3).sum());

    let mut copier = Copier {
        store,
        st: &mut st,
        stats: &mut stats,
        progress,
        output,
        pack: None,
        placed: Vec::new(),
    };
    let empty = Used::default();
    for (_, p, _, _) in chosen {
        let used = usage.packs.get(&p).unwrap_or(&empty);
        if used.blobs.is_empty() {
            // Nothing uses it: no copy, no forwarding object.
            crate::gone::delete_packs(store, &[p]).await?;
            copier.st.real.remove(&p);
            copier.stats.packs_rewritten += 1;
            continue;
        }
        match read_used(store, &p, used).await? {
            Some(blobs) => copier.add(p, blobs).await?,
            None => copier.stats.packs_deferred += 1,
        }
    }
    copier.flush().await?;
    debug_assert!(copier.placed.is_empty());
    flatten(store, &mut st, &mut stats).await?;
    stats.bytes_stored_after = st.stored();
    stats.bytes_reclaimed = stats
        .bytes_stored_before
        .saturating_sub(stats.bytes_stored_after);
    progress.finish();
    Ok(stats)
}
