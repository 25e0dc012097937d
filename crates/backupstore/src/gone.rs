//! The pack deletion journal, the `packs_gone` field of the store marker: every operation that
//! deletes pack objects (delete, compaction, repair) first records the ids of the packs it is
//! about to delete there, under the exclusive lock (compaction also the packs it wrote, so
//! that caches learn of them too). A backup (shared lock) reads the marker
//! anyway; it checks its locally cached store index against the journal instead of listing
//! `packs/` (one request per 1000 packs, a cost that grew with the store): a cached pack the
//! journal names since the cache was last brought up to date is dropped, and a cache the
//! journal cannot account for (another journal, or deletions older than the journal keeps) is
//! rebuilt from a listing. See `docs/backup-format.md`, "Store index".

use std::collections::HashSet;

use convoy_blockstore::BlockId;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::keys::read_marker_json;
use crate::layout;
use crate::store::Store;

/// The marker's field holding the journal.
pub(crate) const FIELD: &str = "packs_gone";

/// How many pack ids the journal keeps, over all its entries (about 270 KiB of JSON): older
/// entries are dropped first, and a cache older than what is kept is rebuilt from a listing.
pub(crate) const MAX_IDS: usize = 4096;

const FORMAT: &str = "convoy-packs-gone";
const VERSION: u32 = 1;

/// One deleting operation's packs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Deletion {
    pub seq: u64,
    /// Deleted.
    pub packs: Vec<String>,
    /// Written by the operation (compaction), with their sizes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<(String, u64)>,
}

/// What the journal says changed after a given deletion.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    /// Packs deleted.
    pub gone: HashSet<BlockId>,
    /// Packs written (by compaction) and not deleted since, with their sizes.
    pub added: Vec<(BlockId, u64)>,
}

/// The journal as stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Journal {
    format: String,
    version: u32,
    /// Random, chosen when the journal is created: a cache made against another journal (a
    /// store removed and made again at the same URL) is never taken for this one's.
    pub id: String,
    /// The number of the last deleting operation.
    pub seq: u64,
    /// `entries` hold every deletion numbered `since + 1 ..= seq`.
    pub since: u64,
    pub entries: Vec<Deletion>,
}

impl Journal {
    /// A new, empty journal with a fresh id.
    pub fn fresh() -> Journal {
        Journal {
            format: FORMAT.into(),
            version: VERSION,
            id: uuid::Uuid::new_v4().simple().to_string(),
            seq: 0,
            since: 0,
            entries: Vec::new(),
        }
    }

    /// The packs deleted after deletion `from` (up to `seq`), or `None` when the journal no
    /// longer holds all of them (or `from` is not one of its numbers).
    #[cfg(test)]
    pub fn deleted_after(&self, from: u64) -> Option<HashSet<BlockId>> {
        self.changes_after(from).map(|c| c.gone)
    }

    /// What changed after deletion `from` (up to `seq`), or `None` when the journal no longer
    /// holds all of it (or `from` is not one of its numbers).
    pub fn changes_after(&self, from: u64) -> Option<Changes> {
        if from < self.since || from > self.seq {
            return None;
        }
        let mut out = Changes::default();
        for d in self.entries.iter().filter(|d| d.seq > from) {
            for (p, size) in &d.added {
                out.added.push((p.parse::<BlockId>().ok()?, *size));
            }
            for p in &d.packs {
                out.gone.insert(p.parse::<BlockId>().ok()?);
            }
        }
        out.added.retain(|(p, _)| !out.gone.contains(p));
        Some(out)
    }

    /// Appends a deletion of `packs` (and the packs `added` beside it), dropping the oldest
    /// entries beyond [`MAX_IDS`].
    fn push(&mut self, packs: &[BlockId], added: &[(BlockId, u64)]) {
        self.seq += 1;
        self.entries.push(Deletion {
            seq: self.seq,
            packs: packs.iter().map(BlockId::to_hex).collect(),
            added: added.iter().map(|(p, n)| (p.to_hex(), *n)).collect(),
        });
        let size = |d: &Deletion| d.packs.len() + d.added.len();
        let mut total: usize = self.entries.iter().map(size).sum();
        while total > MAX_IDS {
            let d = self.entries.remove(0);
            total -= size(&d);
            self.since = d.seq;
        }
    }

    /// The journal in a marker's JSON, `None` if it has none or it is not one (a reader then
    /// trusts no cache; the next deleting operation starts a new journal).
    pub fn from_marker(marker: &serde_json::Value) -> Option<Journal> {
        let j: Journal = serde_json::from_value(marker.get(FIELD)?.clone()).ok()?;
        let consistent = j.format == FORMAT
            && j.version == VERSION
            && j.since <= j.seq
            && j.entries
                .iter()
                .map(|d| d.seq)
                .eq(j.since + 1..=j.since + j.entries.len() as u64)
            && j.since + j.entries.len() as u64 == j.seq;
        consistent.then_some(j)
    }

    fn into_marker(self, marker: &mut serde_json::Value) {
        if let Some(m) = marker.as_object_mut() {
            m.insert(FIELD.into(), serde_json::to_value(self).expect("json"));
        }
    }
}

async fn write_marker_json(store: &Store, marker: &serde_json::Value) -> Result<()> {
    store
        .put(&layout::marker(), serde_json::to_vec(marker).expect("json"))
        .await
}

/// Gives a store whose marker has no journal (made before the journal existed) a new, empty
/// one; answers it. Under a shared lock: a concurrent backup doing the same may overwrite it
/// with its own, which only makes the loser's cache be rebuilt once more.
pub(crate) async fn adopt(store: &Store) -> Result<Option<Journal>> {
    let Some(mut marker) = read_marker_json(store).await? else {
        return Ok(None);
    };
    if let Some(j) = Journal::from_marker(&marker) {
        return Ok(Some(j));
    }
    let j = Journal::fresh();
    j.clone().into_marker(&mut marker);
    write_marker_json(store, &marker).await?;
    Ok(Some(j))
}

/// Deletes pack objects, after recording them in the journal. Under the exclusive lock only
/// (no other writer of the journal runs meanwhile). A journal that cannot be read is replaced
/// by a new one, with a new id: every cache made against the old one is then rebuilt. A store
/// without a marker has no cache made against it (a cache needs the journal's id).
pub(crate) async fn delete_packs(store: &Store, packs: &[BlockId]) -> Result<()> {
    record_and_delete(store, packs, &[]).await
}

/// [`delete_packs`], also recording packs the operation wrote (`added`, with their sizes).
pub(crate) async fn record_and_delete(
    store: &Store,
    packs: &[BlockId],
    added: &[(BlockId, u64)],
) -> Result<()> {
    if packs.is_empty() && added.is_empty() {
        return Ok(());
    }
    if let Some(mut marker) = read_marker_json(store).await? {
        let mut j = Journal::from_marker(&marker).unwrap_or_else(Journal::fresh);
        j.push(packs, added);
        j.into_marker(&mut marker);
        write_marker_json(store, &marker).await?;
    }
    for p in packs {
        store.delete(&layout::pack(p)).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(j: &Journal) -> Option<Journal> {
        let mut marker = serde_json::json!({"format": "convoy-backupstore", "version": 2});
        j.clone().into_marker(&mut marker);
        Journal::from_marker(&marker)
    }

    fn id(n: u8) -> BlockId {
        BlockId::of(&[n])
    }

    #[test]
    fn deletions_are_answered_while_the_journal_holds_them() {
        let mut j = Journal::fresh();
        assert_eq!(j.deleted_after(0), Some(HashSet::new()));
        j.push(&[id(1), id(2)], &[]);
        j.push(&[id(3)], &[(id(9), 100)]);
        assert_eq!(
            j.deleted_after(0),
            Some(HashSet::from([id(1), id(2), id(3)]))
        );
        assert_eq!(j.deleted_after(1), Some(HashSet::from([id(3)])));
        assert_eq!(j.deleted_after(2), Some(HashSet::new()));
        assert_eq!(j.changes_after(1).unwrap().added, vec![(id(9), 100)]);
        j.push(&[id(9)], &[]);
        assert!(
            j.changes_after(1).unwrap().added.is_empty(),
            "added, then gone"
        );
        assert_eq!(j.deleted_after(4), None, "a number it never gave");
        assert_eq!(roundtrip(&j), Some(j));
    }

    #[test]
    fn the_oldest_deletions_go_beyond_the_bound_and_older_caches_are_refused() {
        let mut j = Journal::fresh();
        let many: Vec<BlockId> = (0..=255u8).map(id).collect();
        for _ in 0..(MAX_IDS / 256) {
            j.push(&many, &[]);
        }
        assert_eq!(j.since, 0);
        j.push(&[id(7)], &[]);
        assert_eq!(j.since, 1, "the first entry went");
        assert_eq!(j.deleted_after(0), None);
        assert!(j.deleted_after(1).unwrap().contains(&id(7)));
        // One deletion larger than the bound keeps no entry: every older cache is refused.
        let huge: Vec<BlockId> = (0..(MAX_IDS + 1))
            .map(|n| BlockId::of(&n.to_le_bytes()))
            .collect();
        j.push(&huge, &[]);
        assert!(j.entries.is_empty());
        assert_eq!(j.since, j.seq);
        assert_eq!(j.deleted_after(j.seq), Some(HashSet::new()));
        assert_eq!(j.deleted_after(j.seq - 1), None);
        assert!(roundtrip(&j).is_some());
    }

    #[test]
    fn a_damaged_journal_is_not_read_as_one() {
        let mut j = Journal::fresh();
        j.push(&[id(1)], &[]);
        let mut bad = j.clone();
        bad.seq = 5;
        assert!(roundtrip(&bad).is_none(), "entries missing");
        let mut bad = j.clone();
        bad.entries[0].packs[0] = "zz".into();
        let decoded = roundtrip(&bad).unwrap();
        assert_eq!(decoded.deleted_after(0), None, "an id that is not one");
        assert!(Journal::from_marker(&serde_json::json!({FIELD: "x"})).is_none());
        assert!(Journal::from_marker(&serde_json::json!({"version": 2})).is_none());
        let mut other = j.clone();
        other.version = 9;
        assert!(roundtrip(&other).is_none());
    }
}
