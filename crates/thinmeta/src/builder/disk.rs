//! Encoding of on-disk blocks: btree nodes, space-map bitmaps and the metadata index.

use crate::block::Block;
use crate::checksum::{seal, BITMAP_SALT, BLOCK_SIZE, BTREE_NODE_SALT, INDEX_SALT};
use crate::node::{max_entries, INTERNAL_NODE, LEAF_NODE, NODE_HEADER_SIZE};

/// Entries (2 bits each) in one space-map bitmap block.
pub(crate) const ENTRIES_PER_BITMAP: u64 = ((BLOCK_SIZE - 16) * 4) as u64;
/// Entries in the metadata space-map index block.
pub(crate) const MAX_METADATA_BITMAPS: usize = 255;

/// Encodes a btree node.
pub(crate) fn btree_node(
    blocknr: u64,
    leaf: bool,
    keys: &[u64],
    value_size: usize,
    mut value: impl FnMut(usize, &mut [u8]),
) -> Box<Block> {
    let max = max_entries(value_size);
    debug_assert!(keys.len() <= max);
    let mut b = Box::new([0u8; BLOCK_SIZE]);
    let flags = if leaf { LEAF_NODE } else { INTERNAL_NODE };
    b[4..8].copy_from_slice(&flags.to_le_bytes());
    b[8..16].copy_from_slice(&blocknr.to_le_bytes());
    b[16..20].copy_from_slice(&(keys.len() as u32).to_le_bytes());
    b[20..24].copy_from_slice(&(max as u32).to_le_bytes());
    b[24..28].copy_from_slice(&(value_size as u32).to_le_bytes());
    for (i, k) in keys.iter().enumerate() {
        let off = NODE_HEADER_SIZE + 8 * i;
        b[off..off + 8].copy_from_slice(&k.to_le_bytes());
    }
    let values = NODE_HEADER_SIZE + 8 * max;
    for i in 0..keys.len() {
        let off = values + value_size * i;
        value(i, &mut b[off..off + value_size]);
    }
    seal(&mut b, BTREE_NODE_SALT);
    b
}

/// A 16-byte space-map index entry.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IndexEntry {
    pub blocknr: u64,
    pub nr_free: u32,
    pub none_free_before: u32,
}

impl IndexEntry {
    pub fn encode(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.blocknr.to_le_bytes());
        out[8..12].copy_from_slice(&self.nr_free.to_le_bytes());
        out[12..16].copy_from_slice(&self.none_free_before.to_le_bytes());
    }
}

/// Encodes bitmap number `index` of a space map from a count function; returns the block and
/// its index entry.
pub(crate) fn bitmap(
    blocknr: u64,
    index: u64,
    nr_blocks: u64,
    count: impl Fn(u64) -> u32,
) -> (Box<Block>, IndexEntry) {
    let mut b = Box::new([0u8; BLOCK_SIZE]);
    b[8..16].copy_from_slice(&blocknr.to_le_bytes());
    let first = index * ENTRIES_PER_BITMAP;
    let mut nr_free = 0u32;
    let mut none_free_before: Option<u32> = None;
    for e in 0..ENTRIES_PER_BITMAP {
        let block = first + e;
        if block >= nr_blocks {
            break;
        }
        let v = count(block).min(3);
        if v == 0 {
            nr_free += 1;
            none_free_before.get_or_insert(e as u32);
            continue;
        }
        // Within each little-endian 64-bit word, entry j uses bits 2j (high bit of the
        // count) and 2j+1 (low bit).
        let byte = 16 + (e / 4) as usize;
        let shift = (e % 4) * 2;
        if v & 2 != 0 {
            b[byte] |= 1 << shift;
        }
        if v & 1 != 0 {
            b[byte] |= 1 << (shift + 1);
        }
    }
    seal(&mut b, BITMAP_SALT);
    let entry = IndexEntry {
        blocknr,
        nr_free,
        none_free_before: none_free_before.unwrap_or(ENTRIES_PER_BITMAP as u32),
    };
    (b, entry)
}

/// Encodes the metadata space-map index block.
pub(crate) fn metadata_index(blocknr: u64, entries: &[IndexEntry]) -> Box<Block> {
    let mut b = Box::new([0u8; BLOCK_SIZE]);
    b[8..16].copy_from_slice(&blocknr.to_le_bytes());
    for (i, e) in entries.iter().enumerate() {
        e.encode(&mut b[16 + 16 * i..32 + 16 * i]);
    }
    seal(&mut b, INDEX_SALT);
    b
}
