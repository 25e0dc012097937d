//! Forwarding objects (see `docs/backup-format.md`, "Compaction"): when compaction rewrites a
//! pack P, the blocks still used are copied byte for byte into new packs and `moved/<P>` says
//! where each went. Manifests are never rewritten: a reader that finds P gone looks its blocks
//! up here. All integers little-endian:
//!
//! ```text
//! header   16: "CVMOVE02" | cipher u8 (0 none, 1 sealed) | reserved [7], zero
//! body     plain: pack id P [32] | n u32 | n × 44: offset in P u32 | stored length u32
//!                 | new pack [32] | offset in new pack u32   (sorted by offset in P)
//!          sealed (encrypted stores): the plain body sealed as one record, associated data
//!                 `moved | store id | P`
//! trailer  40: BLAKE3(header | body as stored) [32] | "CVMVEND2"
//! ```

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use convoy_blockstore::{BlockId, PACK_HEADER_LEN};

use crate::crypto::{Keys, Kind};
use crate::error::{BackupError, Result};
use crate::layout;
use crate::manifest::Loc;
use crate::store::Store;

/// First 8 bytes of a forwarding object.
pub const MOVED_MAGIC: [u8; 8] = *b"CVMOVE02";
/// Last 8 bytes of a forwarding object.
pub const MOVED_END: [u8; 8] = *b"CVMVEND2";
/// Bytes of the header.
const HEADER_LEN: usize = 16;
/// Bytes of the trailer.
const TRAILER_LEN: usize = 40;
/// Bytes of one entry.
pub const MOVED_ENTRY_LEN: usize = 44;
/// Bytes of the plain body before the entries.
const BODY_HEAD: usize = 36;
/// Most forwarding hops a reader follows. Every compaction run starts and ends by pointing
/// every forwarding object straight at live packs, so chains are at most 2 long even after
/// crashes; a longer one is damage (or a loop).
pub const MAX_HOPS: usize = 8;

/// One block of a compacted pack and where it is now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Moved {
    /// Offset of the block object in the compacted pack.
    pub offset: u32,
    /// Its new place (same stored length: blocks are copied byte for byte).
    pub to: Loc,
}

/// The decoded forwarding object of pack `pack`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    /// The compacted pack.
    pub pack: BlockId,
    /// Its blocks still used when it was compacted, by offset.
    pub entries: Vec<Moved>,
}

impl Forward {
    /// Where the block at `offset` (of `stored_len` bytes) of the compacted pack is now.
    pub fn lookup(&self, offset: u32, stored_len: u32) -> Option<Loc> {
        let i = self
            .entries
            .binary_search_by_key(&offset, |m| m.offset)
            .ok()?;
        let m = self.entries[i];
        (m.to.stored_len == stored_len).then_some(m.to)
    }

    /// The packs this object sends blocks to.
    pub fn targets(&self) -> BTreeSet<BlockId> {
        self.entries.iter().map(|m| m.to.pack).collect()
    }

    /// Encodes the object (sealed with `keys` in an encrypted store).
    pub fn encode(&self, keys: Option<&Keys>) -> Result<Vec<u8>> {
        let mut body = Vec::with_capacity(BODY_HEAD + self.entries.len() * MOVED_ENTRY_LEN);
        body.extend_from_slice(self.pack.as_bytes());
        body.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for m in &self.entries {
            body.extend_from_slice(&m.offset.to_le_bytes());
            body.extend_from_slice(&m.to.stored_len.to_le_bytes());
            body.extend_from_slice(m.to.pack.as_bytes());
            body.extend_from_slice(&m.to.offset.to_le_bytes());
        }
        let mut out = Vec::with_capacity(HEADER_LEN + body.len() + 64 + TRAILER_LEN);
        out.extend_from_slice(&MOVED_MAGIC);
        out.push(keys.map_or(0, |k| k.cipher().code()));
        out.extend_from_slice(&[0; 7]);
        match keys {
            Some(k) => k.seal_into(Kind::Moved, &[self.pack.as_bytes()], &body, &mut out)?,
            None => out.extend_from_slice(&body),
        }
        let hash = blake3::hash(&out);
        out.extend_from_slice(hash.as_bytes());
        out.extend_from_slice(&MOVED_END);
        Ok(out)
    }

    /// Decodes the forwarding object stored as `moved/<pack>`; the reason on failure.
    pub fn decode(
        bytes: &[u8],
        pack: &BlockId,
        keys: Option<&Keys>,
    ) -> std::result::Result<Forward, String> {
        if bytes.len() < HEADER_LEN + TRAILER_LEN {
            return Err(format!(
                "{} bytes is shorter than header and trailer",
                bytes.len()
            ));
        }
        if bytes[..8] != MOVED_MAGIC {
            return Err("bad magic (not a forwarding object)".into());
        }
        let end = bytes.len() - TRAILER_LEN;
        if bytes[end + 32..] != MOVED_END {
            return Err("truncated: trailer magic missing".into());
        }
        if blake3::hash(&bytes[..end]).as_bytes() != &bytes[end..end + 32] {
            return Err("checksum mismatch".into());
        }
        let want = keys.map_or(0, |k| k.cipher().code());
        if bytes[8] != want {
            return Err(format!(
                "cipher {} in a store whose cipher is {want}",
                bytes[8]
            ));
        }
        if bytes[9..16].iter().any(|&b| b != 0) {
            return Err("reserved header bytes are not zero".into());
        }
        let stored = &bytes[HEADER_LEN..end];
        let opened;
        let body: &[u8] = match keys {
            Some(k) => {
                opened = k.open(Kind::Moved, &[pack.as_bytes()], stored).ok_or(
                    "fails to authenticate (altered, or the object of another pack or store)",
                )?;
                &opened
            }
            None => stored,
        };
        if body.len() < BODY_HEAD {
            return Err(format!("body of {} bytes is too short", body.len()));
        }
        let named = BlockId(body[..32].try_into().expect("32 bytes"));
        if named != *pack {
            return Err(format!("it names pack {named}"));
        }
        let n = u32::from_le_bytes(body[32..36].try_into().expect("4 bytes")) as usize;
        if Some(body.len()) != n.checked_mul(MOVED_ENTRY_LEN).map(|x| x + BODY_HEAD) {
            return Err(format!(
                "{n} entries do not fill a body of {} bytes",
                body.len()
            ));
        }
        let mut entries: Vec<Moved> = Vec::with_capacity(n);
        for raw in body[BODY_HEAD..].chunks_exact(MOVED_ENTRY_LEN) {
            let u32_at = |i: usize| u32::from_le_bytes(raw[i..i + 4].try_into().expect("4 bytes"));
            let m = Moved {
                offset: u32_at(0),
                to: Loc {
                    stored_len: u32_at(4),
                    pack: BlockId(raw[8..40].try_into().expect("32 bytes")),
                    offset: u32_at(40),
                },
            };
            let bad = |why: &str| format!("entry at offset {}: {why}", m.offset);
            if (m.offset as usize) < PACK_HEADER_LEN || (m.to.offset as usize) < PACK_HEADER_LEN {
                return Err(bad("inside a pack header"));
            }
            if m.to.stored_len == 0
                || u64::from(m.offset) + u64::from(m.to.stored_len) > u64::from(u32::MAX)
                || u64::from(m.to.offset) + u64::from(m.to.stored_len) > u64::from(u32::MAX)
            {
                return Err(bad("bad length"));
            }
            if m.to.pack == *pack {
                return Err(bad("forwards to its own pack"));
            }
            if let Some(prev) = entries.last() {
                if u64::from(prev.offset) + u64::from(prev.to.stored_len) > u64::from(m.offset) {
                    return Err(bad("out of order or overlapping"));
                }
            }
            entries.push(m);
        }
        Ok(Forward {
            pack: *pack,
            entries,
        })
    }
}

/// The error of a damaged forwarding object.
pub(crate) fn corrupt(pack: &BlockId, reason: impl Into<String>) -> BackupError {
    BackupError::CorruptForward {
        object: layout::moved(pack).to_string(),
        pack: pack.to_hex(),
        reason: reason.into(),
    }
}

/// Reads and decodes `moved/<pack>`: `None` if there is none.
pub(crate) async fn read(store: &Store, pack: &BlockId) -> Result<Option<Forward>> {
    let Some(bytes) = store.get_opt(&layout::moved(pack)).await? else {
        return Ok(None);
    };
    Forward::decode(&bytes, pack, store.keys())
        .map(Some)
        .map_err(|r| corrupt(pack, r))
}

/// Writes `moved/<pack>` (replacing any older version: a single PUT, atomic on every store).
pub(crate) async fn write(store: &Store, f: &Forward) -> Result<()> {
    let bytes = f.encode(store.keys())?;
    store.put(&layout::moved(&f.pack), Bytes::from(bytes)).await
}

/// The forwarding objects one restore or verify has read, each read once.
#[derive(Default)]
pub(crate) struct Forwards {
    seen: Mutex<HashMap<BlockId, Option<Arc<Forward>>>>,
}

impl Forwards {
    /// The forwarding object of `pack` if it was read already and exists.
    pub fn known(&self, pack: &BlockId) -> Option<Arc<Forward>> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(pack)
            .cloned()
            .flatten()
    }

    /// The forwarding object of `pack` (`None`: there is none), read once per operation.
    pub async fn get(&self, store: &Store, pack: &BlockId) -> Result<Option<Arc<Forward>>> {
        if let Some(f) = self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(pack)
        {
            return Ok(f.clone());
        }
        let f = read(store, pack).await?.map(Arc::new);
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(*pack, f.clone());
        Ok(f)
    }
}

/// Collects pack `pack`, which no record references any more: deletes the pack object (if it
/// is still there) and, if it was compacted, its forward records in the packs that received its
/// blocks — collecting each of those in turn when that was its last record — and last its
/// forwarding object. A damaged forwarding object is deleted without following it: the forward
/// records it leaves are recognised as garbage by `compact` and `repair`. Requests: one delete
/// and one read per pack, plus a delete and a short listing per pack forwarded to. Returns the
/// pack objects removed that were not compacted (a compacted pack's object was removed when it
/// was compacted).
pub(crate) async fn collect_pack(store: &Store, pack: BlockId) -> Result<u64> {
    let mut removed = 0;
    let mut work = vec![(pack, 0usize)];
    while let Some((p, depth)) = work.pop() {
        crate::gone::delete_packs(store, &[p]).await?;
        match read(store, &p).await {
            Ok(None) => removed += 1,
            Ok(Some(f)) => {
                for to in f.targets() {
                    store.delete(&layout::forward_ref(&to, &p)).await?;
                    if depth < MAX_HOPS && !store.any_under(&layout::refs_of(&to)).await? {
                        work.push((to, depth + 1));
                    }
                }
                store.delete(&layout::moved(&p)).await?;
            }
            Err(BackupError::CorruptForward { .. }) => {
                store.delete(&layout::moved(&p)).await?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Forward {
        let p = BlockId([1; 32]);
        Forward {
            pack: p,
            entries: vec![
                Moved {
                    offset: 16,
                    to: Loc {
                        pack: BlockId([2; 32]),
                        offset: 16,
                        stored_len: 100,
                    },
                },
                Moved {
                    offset: 116,
                    to: Loc {
                        pack: BlockId([3; 32]),
                        offset: 5000,
                        stored_len: 7,
                    },
                },
            ],
        }
    }

    #[test]
    fn round_trips_plain_and_sealed_and_is_bound_to_its_pack() {
        let keys = Keys::new([7; 16], [8; 32], crate::crypto::Cipher::preferred());
        let f = sample();
        for k in [None, Some(&keys)] {
            let bytes = f.encode(k).unwrap();
            assert_eq!(Forward::decode(&bytes, &f.pack, k).unwrap(), f);
            // Stored under another pack's name, or read in the other kind of store.
            assert!(Forward::decode(&bytes, &BlockId([9; 32]), k).is_err());
            let other = if k.is_some() { None } else { Some(&keys) };
            assert!(Forward::decode(&bytes, &f.pack, other).is_err());
        }
        assert_eq!(f.lookup(116, 7).unwrap().pack, BlockId([3; 32]));
        assert_eq!(f.lookup(116, 8), None);
        assert_eq!(f.lookup(17, 100), None);
        assert_eq!(f.targets().len(), 2);
        // Another store's key fails to authenticate (the checksum is not secret).
        let sealed = f.encode(Some(&keys)).unwrap();
        let e = Forward::decode(
            &sealed,
            &f.pack,
            Some(&Keys::new(
                [7; 16],
                [9; 32],
                crate::crypto::Cipher::preferred(),
            )),
        )
        .unwrap_err();
        assert!(e.contains("authenticate"), "{e}");
    }

    #[test]
    fn hostile_bytes_are_refused_without_panics() {
        let keys = Keys::new([5; 16], [6; 32], crate::crypto::Cipher::preferred());
        let f = sample();
        let good = [f.encode(None).unwrap(), f.encode(Some(&keys)).unwrap()];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..3000 {
            let sealed = round % 2 == 1;
            let k = sealed.then_some(&keys);
            let mut b = good[usize::from(sealed)].clone();
            match round % 3 {
                0 => {
                    let n = (next() % 300) as usize;
                    b = (0..n).map(|_| next() as u8).collect();
                }
                1 => {
                    for _ in 0..1 + next() % 4 {
                        let i = (next() as usize) % b.len();
                        b[i] = next() as u8;
                    }
                }
                _ => b.truncate((next() as usize) % b.len()),
            }
            let ok = Forward::decode(&b, &f.pack, k);
            assert!(
                ok.is_err() || b == good[usize::from(sealed)],
                "round {round}"
            );
        }
        // Entries out of order, overlapping or forwarding to the pack itself are refused even
        // with a valid checksum.
        for bad in [
            {
                let mut g = sample();
                g.entries.swap(0, 1);
                g
            },
            {
                let mut g = sample();
                g.entries[1].offset = 50;
                g
            },
            {
                let mut g = sample();
                g.entries[0].to.pack = g.pack;
                g
            },
        ] {
            let bytes = bad.encode(None).unwrap();
            assert!(Forward::decode(&bytes, &bad.pack, None).is_err());
        }
    }
}
