//! The delta between two thin devices: both mapping trees walked together, in key order, never
//! descending where both sides point at the same block (identical subtrees).

use std::io::{Read, Seek};

use crate::block::BlockReader;
use crate::cursor::{Item, TreeCursor};
use crate::error::Result;
use crate::mappings::{unpack_mapping, TIME_BITS};

/// How the virtual blocks of a run compare between the left and the right device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeltaKind {
    /// Both map the blocks to the same data blocks.
    Same,
    /// Both map the blocks, to different data blocks.
    Different,
    /// Only the left device maps the blocks.
    LeftOnly,
    /// Only the right device maps the blocks.
    RightOnly,
}

/// A run of virtual blocks `begin..begin+length` with one [`DeltaKind`]; the data blocks of each
/// side that maps them are contiguous (`left_data..left_data+length`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeltaRun {
    /// Comparison result.
    pub kind: DeltaKind,
    /// First virtual block.
    pub begin: u64,
    /// Number of blocks.
    pub length: u64,
    /// First data block on the left (None for `RightOnly`).
    pub left_data: Option<u64>,
    /// First data block on the right (None for `LeftOnly`).
    pub right_data: Option<u64>,
}

/// What a delta reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeltaMode {
    /// Every mapped block, `Same` ones included: shared subtrees are read once (from one side)
    /// to list their mappings. This is what `thin_delta --verbose` prints.
    Full,
    /// Every mapped block like [`DeltaMode::Full`], but a run is split only where the kind
    /// changes or the virtual blocks stop being contiguous, whatever the data blocks do:
    /// `left_data` / `right_data` are then the data blocks of the run's *first* virtual block
    /// only. This is all plain `thin_delta` (no `--verbose`) prints, and it lets a shared leaf
    /// whose keys are contiguous be listed in O(1) after it is read and validated.
    FullByKey,
    /// Only `Different`, `LeftOnly` and `RightOnly` runs: shared subtrees are not read at all,
    /// so the cost follows what changed.
    ChangesOnly,
}

/// Streaming delta; see [`crate::ThinMetadata::delta`]. After an error it yields nothing more.
pub struct Delta<'a, R> {
    reader: &'a mut BlockReader<R>,
    left: TreeCursor,
    right: TreeCursor,
    shared: Option<TreeCursor>,
    mode: DeltaMode,
    pending: Option<DeltaRun>,
    shared_skipped: u64,
    done: bool,
}

/// A run of compared virtual blocks: kind, first key, length, first data block of each side.
/// Data blocks are contiguous along it except in [`DeltaMode::FullByKey`].
type Elem = (DeltaKind, u64, u64, Option<u64>, Option<u64>);

fn before(hi: Option<u64>, lo: u64) -> bool {
    hi.is_some_and(|h| h <= lo)
}

impl<'a, R: Read + Seek> Delta<'a, R> {
    pub(crate) fn new(
        reader: &'a mut BlockReader<R>,
        left: TreeCursor,
        right: TreeCursor,
        mode: DeltaMode,
    ) -> Self {
        Delta {
            reader,
            left,
            right,
            shared: None,
            mode,
            pending: None,
            shared_skipped: 0,
            done: false,
        }
    }

    /// Metadata blocks read from the source so far (cache hits not counted; includes the
    /// superblock and lookups made before the walk on the same reader).
    pub fn blocks_read(&self) -> u64 {
        self.reader.blocks_read()
    }

    /// Shared subtrees skipped without reading (only in [`DeltaMode::ChangesOnly`]).
    pub fn shared_subtrees_skipped(&self) -> u64 {
        self.shared_skipped
    }

    /// The next compared virtual block, in key order.
    fn next_elem(&mut self) -> Result<Option<Elem>> {
        loop {
            if let Some(shared) = &mut self.shared {
                match shared.peek() {
                    None => self.shared = None,
                    Some(Item::Subtree { .. }) => shared.descend(self.reader)?,
                    Some(Item::Entry { .. }) => {
                        // A whole run of the leaf at once; the leaf was validated when read.
                        let by_data = self.mode != DeltaMode::FullByKey;
                        if let Some((key, len, value)) = shared.take_run(by_data, TIME_BITS) {
                            let d = unpack_mapping(value).0;
                            return Ok(Some((DeltaKind::Same, key, len, Some(d), Some(d))));
                        }
                        shared.advance();
                    }
                }
                continue;
            }
            let a = self.left.peek();
            let b = self.right.peek();
            match (a, b) {
                (None, None) => return Ok(None),
                (Some(Item::Subtree { .. }), None) => self.left.descend(self.reader)?,
                (None, Some(Item::Subtree { .. })) => self.right.descend(self.reader)?,
                (Some(Item::Entry { key, value }), None) => {
                    self.left.advance();
                    let d = unpack_mapping(value).0;
                    return Ok(Some((DeltaKind::LeftOnly, key, 1, Some(d), None)));
                }
                (None, Some(Item::Entry { key, value })) => {
                    self.right.advance();
                    let d = unpack_mapping(value).0;
                    return Ok(Some((DeltaKind::RightOnly, key, 1, None, Some(d))));
                }
                (
                    Some(Item::Subtree {
                        block: ba,
                        lo: la,
                        hi: ha,
                        height: ta,
                    }),
                    Some(Item::Subtree {
                        block: bb,
                        lo: lb,
                        hi: hb,
                        height: tb,
                    }),
                ) => {
                    if ba == bb && ta == tb {
                        // Identical subtrees: both sides hold exactly the same mappings there.
                        let whole_tree = self.left.at_root() && self.right.at_root();
                        self.left.advance();
                        self.right.advance();
                        match self.mode {
                            DeltaMode::ChangesOnly => self.shared_skipped += 1,
                            DeltaMode::Full | DeltaMode::FullByKey => {
                                let lo = la.max(lb);
                                let hi = match (ha, hb) {
                                    (Some(x), Some(y)) => Some(x.min(y)),
                                    (x, None) => x,
                                    (None, y) => y,
                                };
                                self.shared = Some(TreeCursor::subtree(
                                    "mapping tree node",
                                    8,
                                    ba,
                                    ta,
                                    lo,
                                    hi,
                                    whole_tree,
                                ));
                            }
                        }
                    } else if before(ha, lb) {
                        self.left.descend(self.reader)?;
                    } else if before(hb, la) {
                        self.right.descend(self.reader)?;
                    } else if ta > tb {
                        self.left.descend(self.reader)?;
                    } else if tb > ta {
                        self.right.descend(self.reader)?;
                    } else {
                        self.left.descend(self.reader)?;
                        self.right.descend(self.reader)?;
                    }
                }
                (Some(Item::Subtree { lo, .. }), Some(Item::Entry { key, value })) => {
                    if key < lo {
                        self.right.advance();
                        let d = unpack_mapping(value).0;
                        return Ok(Some((DeltaKind::RightOnly, key, 1, None, Some(d))));
                    }
                    self.left.descend(self.reader)?;
                }
                (Some(Item::Entry { key, value }), Some(Item::Subtree { lo, .. })) => {
                    if key < lo {
                        self.left.advance();
                        let d = unpack_mapping(value).0;
                        return Ok(Some((DeltaKind::LeftOnly, key, 1, Some(d), None)));
                    }
                    self.right.descend(self.reader)?;
                }
                (
                    Some(Item::Entry { key: ka, value: va }),
                    Some(Item::Entry { key: kb, value: vb }),
                ) => {
                    let (da, db) = (unpack_mapping(va).0, unpack_mapping(vb).0);
                    return Ok(Some(if ka == kb {
                        let kind = if da == db {
                            DeltaKind::Same
                        } else {
                            DeltaKind::Different
                        };
                        let length = self.equal_keys_run(ka, da, db, kind);
                        self.left.skip_entries(length);
                        self.right.skip_entries(length);
                        (kind, ka, length as u64, Some(da), Some(db))
                    } else if ka < kb {
                        self.left.advance();
                        (DeltaKind::LeftOnly, ka, 1, Some(da), None)
                    } else {
                        self.right.advance();
                        (DeltaKind::RightOnly, kb, 1, None, Some(db))
                    }));
                }
            }
        }
    }

    /// Both cursors are on leaf entries with key `key` (data blocks `da`, `db`, comparing as
    /// `kind`): the number of entries from there, within both current leaves, that continue
    /// one run (same keys on both sides, contiguous, same kind and, except in
    /// [`DeltaMode::FullByKey`], contiguous data blocks on both sides). At least 1.
    fn equal_keys_run(&self, key: u64, da: u64, db: u64, kind: DeltaKind) -> usize {
        let (Some((ln, li)), Some((rn, ri))) = (self.left.leaf(), self.right.leaf()) else {
            return 1;
        };
        let by_data = self.mode != DeltaMode::FullByKey;
        let same = kind == DeltaKind::Same;
        let max = (ln.nr_entries - li).min(rn.nr_entries - ri);
        let mut length = 1;
        while length < max {
            let step = length as u64;
            let Some(k) = key.checked_add(step) else {
                break;
            };
            if ln.key(li + length) != k || rn.key(ri + length) != k {
                break;
            }
            let a = unpack_mapping(ln.value_u64(li + length)).0;
            let b = unpack_mapping(rn.value_u64(ri + length)).0;
            if (a == b) != same || (by_data && (a != da + step || b != db + step)) {
                break;
            }
            length += 1;
        }
        length
    }

    fn step(&mut self) -> Result<Option<DeltaRun>> {
        let by_key = self.mode == DeltaMode::FullByKey;
        loop {
            let Some((kind, key, length, l, r)) = self.next_elem()? else {
                return Ok(self.pending.take());
            };
            if kind == DeltaKind::Same && self.mode == DeltaMode::ChangesOnly {
                continue;
            }
            if let Some(run) = &mut self.pending {
                let follows = |start: Option<u64>, next: Option<u64>| match (start, next) {
                    (Some(s), Some(n)) => s + run.length == n,
                    (None, None) => true,
                    _ => false,
                };
                if run.kind == kind
                    && run.begin.checked_add(run.length) == Some(key)
                    && (by_key || (follows(run.left_data, l) && follows(run.right_data, r)))
                {
                    run.length += length;
                    continue;
                }
            }
            let next = DeltaRun {
                kind,
                begin: key,
                length,
                left_data: l,
                right_data: r,
            };
            if let Some(done) = self.pending.replace(next) {
                return Ok(Some(done));
            }
        }
    }
}

impl<R: Read + Seek> Iterator for Delta<'_, R> {
    type Item = Result<DeltaRun>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        // Fused: nothing more after the end or after the first error.
        let item = self.step().transpose();
        self.done = !matches!(item, Some(Ok(_)));
        item
    }
}
