//! A depth-bounded cursor over one btree: yields child subtrees (without reading them) and leaf
//! entries in key order, and descends into a subtree only when asked. Memory: one node per level.

use std::io::{Read, Seek};

use crate::block::BlockReader;
use crate::error::{corrupt, Result};
use crate::node::{Expect, Node};

/// Deepest tree accepted. Real pool trees are 4-5 levels deep; a deeper one is corrupt, and the
/// bound keeps hostile metadata from causing unbounded work.
pub const MAX_HEIGHT: u32 = 16;

/// What the cursor is positioned on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Item {
    /// An unread child subtree: its root block, the key range its parent gives it and its height
    /// (0 = a leaf).
    Subtree {
        block: u64,
        lo: u64,
        hi: Option<u64>,
        height: u32,
    },
    /// A leaf entry; `value` is the first eight bytes of the value.
    Entry { key: u64, value: u64 },
}

struct Frame {
    node: Node,
    idx: usize,
    hi: Option<u64>,
    height: u32,
}

/// Pending root of the walk (not read yet).
#[derive(Clone, Copy)]
struct Pending {
    block: u64,
    lo: u64,
    hi: Option<u64>,
    height: u32,
    is_root: bool,
}

/// Cursor over a btree.
pub(crate) struct TreeCursor {
    what: &'static str,
    leaf_value_size: usize,
    pending: Option<Pending>,
    stack: Vec<Frame>,
}

/// Finds the height of the tree at `root` by following first children (bounded).
pub(crate) fn tree_height<R: Read + Seek>(
    reader: &mut BlockReader<R>,
    root: u64,
    what: &'static str,
) -> Result<u32> {
    let mut block = root;
    let mut height = 0;
    loop {
        let data = reader.read(block, what)?;
        let node = Node::parse_header(data, block, what)?;
        if node.leaf {
            return Ok(height);
        }
        if node.nr_entries == 0 {
            return Err(corrupt(block, what, "internal node has no entries"));
        }
        height += 1;
        if height > MAX_HEIGHT {
            return Err(corrupt(
                root,
                what,
                format!("tree deeper than {MAX_HEIGHT} levels (or a cycle) below this root"),
            ));
        }
        block = node.value_u64(0);
    }
}

impl TreeCursor {
    /// A cursor over the whole tree rooted at `root`.
    pub fn new<R: Read + Seek>(
        reader: &mut BlockReader<R>,
        root: u64,
        what: &'static str,
        leaf_value_size: usize,
    ) -> Result<Self> {
        let height = tree_height(reader, root, what)?;
        Ok(TreeCursor {
            what,
            leaf_value_size,
            pending: Some(Pending {
                block: root,
                lo: 0,
                hi: None,
                height,
                is_root: true,
            }),
            stack: Vec::new(),
        })
    }

    /// A cursor over a subtree whose height and key range are already known; `is_root` if it
    /// is a whole tree (then it may be an empty leaf).
    pub fn subtree(
        what: &'static str,
        leaf_value_size: usize,
        block: u64,
        height: u32,
        lo: u64,
        hi: Option<u64>,
        is_root: bool,
    ) -> Self {
        TreeCursor {
            what,
            leaf_value_size,
            pending: Some(Pending {
                block,
                lo,
                hi,
                height,
                is_root,
            }),
            stack: Vec::new(),
        }
    }

    /// Whether the cursor is still on the (unread) root of its tree.
    pub fn at_root(&self) -> bool {
        self.pending.is_some_and(|p| p.is_root)
    }

    /// The current item, or `None` at the end.
    pub fn peek(&mut self) -> Option<Item> {
        if let Some(p) = self.pending {
            return Some(Item::Subtree {
                block: p.block,
                lo: p.lo,
                hi: p.hi,
                height: p.height,
            });
        }
        loop {
            let top = self.stack.last()?;
            if top.idx < top.node.nr_entries {
                break;
            }
            self.stack.pop();
        }
        let top = self.stack.last()?;
        let i = top.idx;
        if top.node.leaf {
            Some(Item::Entry {
                key: top.node.key(i),
                value: top.node.value_u64(i),
            })
        } else {
            let hi = if i + 1 < top.node.nr_entries {
                Some(top.node.key(i + 1))
            } else {
                top.hi
            };
            Some(Item::Subtree {
                block: top.node.value_u64(i),
                lo: top.node.key(i),
                hi,
                height: top.height - 1,
            })
        }
    }

    /// Raw value bytes of the current leaf entry (call after `peek` returned an entry).
    pub fn entry_bytes(&self) -> Option<&[u8]> {
        let top = self.stack.last()?;
        (top.node.leaf && top.idx < top.node.nr_entries).then(|| top.node.value_bytes(top.idx))
    }

    /// Consumes, from the current leaf, the run of entries that starts at the current entry and
    /// has contiguous keys (and, with `by_data`, contiguous data blocks: values compared after
    /// `>> data_shift`). Returns `(first key, length, first value)`, or `None` if the cursor is
    /// not on a leaf entry. Work is O(1) for a leaf whose remaining keys are all contiguous
    /// when `by_data` is false, else linear in the run.
    pub fn take_run(&mut self, by_data: bool, data_shift: u32) -> Option<(u64, u64, u64)> {
        if self.pending.is_some() {
            return None;
        }
        let top = self.stack.last_mut()?;
        let (node, i, n) = (&top.node, top.idx, top.node.nr_entries);
        if !node.leaf || i >= n {
            return None;
        }
        let key0 = node.key(i);
        let value0 = node.value_u64(i);
        // Keys are validated strictly ascending, so the remaining keys are all contiguous
        // exactly when the last one is `n - 1 - i` above the first.
        let end = if !by_data && node.key(n - 1) - key0 == (n - 1 - i) as u64 {
            n
        } else {
            let data0 = value0 >> data_shift;
            let mut j = i + 1;
            while j < n {
                let step = (j - i) as u64;
                if key0.checked_add(step) != Some(node.key(j)) {
                    break;
                }
                if by_data && Some(node.value_u64(j) >> data_shift) != data0.checked_add(step) {
                    break;
                }
                j += 1;
            }
            j
        };
        top.idx = end;
        Some((key0, (end - i) as u64, value0))
    }

    /// The current (validated) leaf and the index of the current entry in it; `None` unless
    /// the cursor is on a leaf entry.
    pub fn leaf(&self) -> Option<(&Node, usize)> {
        if self.pending.is_some() {
            return None;
        }
        let top = self.stack.last()?;
        (top.node.leaf && top.idx < top.node.nr_entries).then_some((&top.node, top.idx))
    }

    /// Skips `count` entries of the current leaf (at most to its end).
    pub fn skip_entries(&mut self, count: usize) {
        if let Some(top) = self.stack.last_mut() {
            top.idx = (top.idx + count).min(top.node.nr_entries.max(top.idx));
        }
    }

    /// Skips the current item (a whole subtree or one entry) without reading it.
    pub fn advance(&mut self) {
        if self.pending.take().is_some() {
            return;
        }
        if let Some(top) = self.stack.last_mut() {
            top.idx += 1;
        }
    }

    /// Reads the current subtree's root and positions the cursor on its first item.
    /// Does nothing if the current item is an entry.
    pub fn descend<R: Read + Seek>(&mut self, reader: &mut BlockReader<R>) -> Result<()> {
        let Some(Item::Subtree {
            block,
            lo,
            hi,
            height,
        }) = self.peek()
        else {
            return Ok(());
        };
        let is_root = self.pending.take().is_some_and(|p| p.is_root);
        let parent = self.stack.last().map(|f| f.node.block);
        if let Some(top) = self.stack.last_mut() {
            top.idx += 1;
        }
        if self.stack.iter().any(|f| f.node.block == block) {
            return Err(corrupt(
                block,
                self.what,
                "cycle: the node is its own ancestor",
            ));
        }
        let what = self.what;
        let data = reader.read_with(block, || match parent {
            Some(p) => format!("{what} node {p}"),
            None => format!("the {what} root pointer"),
        })?;
        let expect = Expect {
            what: self.what,
            leaf_value_size: self.leaf_value_size,
            height,
            lo,
            hi,
            allow_empty: is_root,
        };
        let node = Node::parse(data, block, &expect)?;
        self.stack.push(Frame {
            node,
            idx: 0,
            hi,
            height,
        });
        Ok(())
    }

    /// Advances to the next leaf entry, descending as needed; returns it with its key.
    pub fn next_entry<R: Read + Seek>(
        &mut self,
        reader: &mut BlockReader<R>,
    ) -> Result<Option<(u64, u64)>> {
        loop {
            match self.peek() {
                None => return Ok(None),
                Some(Item::Subtree { .. }) => self.descend(reader)?,
                Some(Item::Entry { key, value }) => {
                    self.advance();
                    return Ok(Some((key, value)));
                }
            }
        }
    }

    /// Positions the cursor on the leaf entry with `key` (None if absent). Reads one path.
    pub fn seek_exact<R: Read + Seek>(
        &mut self,
        reader: &mut BlockReader<R>,
        key: u64,
    ) -> Result<Option<u64>> {
        loop {
            match self.peek() {
                None => return Ok(None),
                Some(Item::Entry { key: k, value }) => {
                    if k == key {
                        return Ok(Some(value));
                    }
                    if k > key {
                        return Ok(None);
                    }
                    self.advance();
                }
                Some(Item::Subtree { hi, .. }) => {
                    if hi.is_some_and(|h| h <= key) {
                        self.advance();
                    } else {
                        self.descend(reader)?;
                    }
                }
            }
        }
    }
}
