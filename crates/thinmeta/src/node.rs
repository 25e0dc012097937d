//! Validated btree nodes.

use std::rc::Rc;

use crate::block::Block;
use crate::checksum::{le32, le64, verify, BLOCK_SIZE, BTREE_NODE_SALT};
use crate::error::{corrupt, Result};

/// Size of the node header.
pub const NODE_HEADER_SIZE: usize = 32;
/// Flag of an internal node.
pub const INTERNAL_NODE: u32 = 1;
/// Flag of a leaf node.
pub const LEAF_NODE: u32 = 2;

/// Entries a node holds for a value size, as the kernel computes it.
pub const fn max_entries(value_size: usize) -> usize {
    let n = (BLOCK_SIZE - NODE_HEADER_SIZE) / (8 + value_size);
    (n / 3) * 3
}

/// What a node must look like, given where it was reached from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expect {
    /// Name of the tree, for errors.
    pub what: &'static str,
    /// Value size of leaves of this tree.
    pub leaf_value_size: usize,
    /// 0 = leaf, else internal at this height.
    pub height: u32,
    /// Keys must be >= lo.
    pub lo: u64,
    /// Keys must be < hi (None: unbounded).
    pub hi: Option<u64>,
    /// An empty node is allowed (only for a root).
    pub allow_empty: bool,
}

/// A validated btree node.
#[derive(Clone)]
pub(crate) struct Node {
    pub block: u64,
    data: Rc<Block>,
    pub leaf: bool,
    pub nr_entries: usize,
    max_entries: usize,
    value_size: usize,
}

impl Node {
    /// Parses just the header (no key checks), for finding a tree's height.
    pub fn parse_header(data: Rc<Block>, block: u64, what: &'static str) -> Result<Node> {
        if let Err((stored, computed)) = verify(&data, BTREE_NODE_SALT) {
            return Err(corrupt(
                block,
                what,
                format!("bad checksum {stored:#010x}, expected {computed:#010x}"),
            ));
        }
        let flags = le32(&data[..], 4);
        let blocknr = le64(&data[..], 8);
        let nr_entries = le32(&data[..], 16) as usize;
        let max = le32(&data[..], 20) as usize;
        let value_size = le32(&data[..], 24) as usize;
        if blocknr != block {
            return Err(corrupt(
                block,
                what,
                format!("records its location as block {blocknr}"),
            ));
        }
        let leaf = match flags {
            INTERNAL_NODE => false,
            LEAF_NODE => true,
            f => return Err(corrupt(block, what, format!("bad node flags {f:#x}"))),
        };
        if value_size == 0 || value_size > BLOCK_SIZE {
            return Err(corrupt(block, what, format!("bad value size {value_size}")));
        }
        if max == 0 || NODE_HEADER_SIZE + max * (8 + value_size) > BLOCK_SIZE {
            return Err(corrupt(
                block,
                what,
                format!("max_entries {max} does not fit a block with {value_size}-byte values"),
            ));
        }
        if nr_entries > max {
            return Err(corrupt(
                block,
                what,
                format!("nr_entries {nr_entries} exceeds max_entries {max}"),
            ));
        }
        Ok(Node {
            block,
            data,
            leaf,
            nr_entries,
            max_entries: max,
            value_size,
        })
    }

    /// Parses and fully validates a node against what its parent promised.
    pub fn parse(data: Rc<Block>, block: u64, expect: &Expect) -> Result<Node> {
        let what = expect.what;
        let node = Node::parse_header(data, block, what)?;
        if node.leaf != (expect.height == 0) {
            return Err(corrupt(
                block,
                what,
                format!(
                    "is {} but the tree needs {} here (height {})",
                    if node.leaf {
                        "a leaf"
                    } else {
                        "an internal node"
                    },
                    if expect.height == 0 {
                        "a leaf"
                    } else {
                        "an internal node"
                    },
                    expect.height
                ),
            ));
        }
        let want_vs = if node.leaf { expect.leaf_value_size } else { 8 };
        if node.value_size != want_vs {
            return Err(corrupt(
                block,
                what,
                format!("value size {}, expected {want_vs}", node.value_size),
            ));
        }
        if node.nr_entries == 0 && !(expect.allow_empty && node.leaf) {
            return Err(corrupt(block, what, "node has no entries"));
        }
        let n = node.nr_entries;
        if n == 0 {
            return Ok(node);
        }
        // Strictly ascending keys lie in [lo, hi) exactly when the first is >= lo and the last
        // is < hi, so the range needs checking only at the ends.
        let keys = &node.data[NODE_HEADER_SIZE..NODE_HEADER_SIZE + 8 * n];
        let mut prev = le64(keys, 0);
        for (i, chunk) in keys.chunks_exact(8).enumerate().skip(1) {
            let k = le64(chunk, 0);
            if k <= prev {
                return Err(corrupt(
                    block,
                    what,
                    format!("keys not ascending: key {i} is {k} after {prev}"),
                ));
            }
            prev = k;
        }
        for k in [node.key(0), node.key(n - 1)] {
            if k < expect.lo || expect.hi.is_some_and(|hi| k >= hi) {
                return Err(corrupt(
                    block,
                    what,
                    format!(
                        "key {k} outside the range [{}, {}) its parent gives it",
                        expect.lo,
                        expect.hi.map_or("end".to_string(), |h| h.to_string())
                    ),
                ));
            }
        }
        Ok(node)
    }

    /// Key `i`.
    #[inline]
    pub fn key(&self, i: usize) -> u64 {
        le64(&self.data[..], NODE_HEADER_SIZE + 8 * i)
    }

    /// Value `i` read as a u64 (child pointer, mapping).
    #[inline]
    pub fn value_u64(&self, i: usize) -> u64 {
        le64(&self.data[..], self.value_offset(i))
    }

    /// Raw bytes of value `i`.
    pub fn value_bytes(&self, i: usize) -> &[u8] {
        let off = self.value_offset(i);
        &self.data[off..off + self.value_size]
    }

    #[inline]
    fn value_offset(&self, i: usize) -> usize {
        NODE_HEADER_SIZE + 8 * self.max_entries + self.value_size * i
    }
}
