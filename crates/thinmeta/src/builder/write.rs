//! Layout and writing of built metadata: allocates blocks, computes reference counts of both
//! space maps, encodes every block.

use std::io::{Seek, SeekFrom, Write};

use super::disk::{
    bitmap, btree_node, metadata_index, IndexEntry, ENTRIES_PER_BITMAP, MAX_METADATA_BITMAPS,
};
use super::tree::{chunk_sizes, MemNode, NodeId};
use super::{Device, MetadataBuilder, WrittenMetadata};
use crate::block::Block;
use crate::checksum::{seal, BLOCK_SIZE, SUPERBLOCK_SALT};
use crate::details::DETAILS_VALUE_SIZE;
use crate::error::{Result, ThinMetaError};
use crate::node::max_entries;
use crate::superblock::{SpaceMapRoot, SUPERBLOCK_MAGIC};

/// Sequential block allocator that records each block's reference count.
struct Alloc {
    counts: Vec<u32>,
    limit: u64,
}

impl Alloc {
    fn take(&mut self) -> Result<u64> {
        let b = self.counts.len() as u64;
        if b >= self.limit {
            return Err(ThinMetaError::InvalidDescription(format!(
                "metadata does not fit in {} blocks",
                self.limit
            )));
        }
        self.counts.push(1);
        Ok(b)
    }
}

/// Writes blocks, seeking only when not sequential.
struct Out<W> {
    w: W,
    pos: Option<u64>,
}

impl<W: Write + Seek> Out<W> {
    fn put(&mut self, blocknr: u64, block: &Block) -> Result<()> {
        if self.pos != Some(blocknr) {
            self.w
                .seek(SeekFrom::Start(blocknr * BLOCK_SIZE as u64))
                .map_err(ThinMetaError::Write)?;
        }
        self.w.write_all(block).map_err(ThinMetaError::Write)?;
        self.pos = Some(blocknr + 1);
        Ok(())
    }
}

/// Writes a btree of `(key, value bytes)` bottom-up; every node gets count 1. Returns the root.
fn write_btree<W: Write + Seek>(
    alloc: &mut Alloc,
    out: &mut Out<W>,
    entries: &[(u64, Vec<u8>)],
    value_size: usize,
) -> Result<u64> {
    if entries.is_empty() {
        let b = alloc.take()?;
        out.put(b, &btree_node(b, true, &[], value_size, |_, _| {}))?;
        return Ok(b);
    }
    let mut level: Vec<(u64, u64)> = Vec::new();
    let mut rest = entries;
    let max = max_entries(value_size);
    for size in chunk_sizes(entries.len(), max, max) {
        let (chunk, r) = rest.split_at(size);
        rest = r;
        let b = alloc.take()?;
        let keys: Vec<u64> = chunk.iter().map(|e| e.0).collect();
        let node = btree_node(b, true, &keys, value_size, |i, v| {
            v.copy_from_slice(&chunk[i].1)
        });
        out.put(b, &node)?;
        level.push((keys[0], b));
    }
    while level.len() > 1 {
        let mut next = Vec::new();
        let mut rest = &level[..];
        for size in chunk_sizes(level.len(), max_entries(8), max_entries(8)) {
            let (chunk, r) = rest.split_at(size);
            rest = r;
            let b = alloc.take()?;
            let keys: Vec<u64> = chunk.iter().map(|e| e.0).collect();
            let node = btree_node(b, false, &keys, 8, |i, v| {
                v.copy_from_slice(&chunk[i].1.to_le_bytes())
            });
            out.put(b, &node)?;
            next.push((keys[0], b));
        }
        level = next;
    }
    Ok(level[0].1)
}

fn encode_sm_root(r: &SpaceMapRoot, out: &mut [u8]) {
    out[0..8].copy_from_slice(&r.nr_blocks.to_le_bytes());
    out[8..16].copy_from_slice(&r.nr_allocated.to_le_bytes());
    out[16..24].copy_from_slice(&r.bitmap_root.to_le_bytes());
    out[24..32].copy_from_slice(&r.ref_count_root.to_le_bytes());
}

struct SbFields {
    blocknr: u64,
    time: u32,
    transaction_id: u64,
    metadata_snap: u64,
    data_sm: SpaceMapRoot,
    metadata_sm: SpaceMapRoot,
    mapping_root: u64,
    details_root: u64,
}

fn superblock(f: &SbFields, b: &MetadataBuilder) -> Box<Block> {
    let mut s = Box::new([0u8; BLOCK_SIZE]);
    s[8..16].copy_from_slice(&f.blocknr.to_le_bytes());
    s[32..40].copy_from_slice(&SUPERBLOCK_MAGIC.to_le_bytes());
    s[40..44].copy_from_slice(&2u32.to_le_bytes());
    s[44..48].copy_from_slice(&f.time.to_le_bytes());
    s[48..56].copy_from_slice(&f.transaction_id.to_le_bytes());
    s[56..64].copy_from_slice(&f.metadata_snap.to_le_bytes());
    encode_sm_root(&f.data_sm, &mut s[64..192]);
    encode_sm_root(&f.metadata_sm, &mut s[192..320]);
    s[320..328].copy_from_slice(&f.mapping_root.to_le_bytes());
    s[328..336].copy_from_slice(&f.details_root.to_le_bytes());
    s[336..340].copy_from_slice(&b.config.data_block_size.to_le_bytes());
    s[340..344].copy_from_slice(&8u32.to_le_bytes());
    s[344..352].copy_from_slice(&b.config.nr_metadata_blocks.to_le_bytes());
    seal(&mut s, SUPERBLOCK_SALT);
    s
}

/// Writes the top-level mapping tree and details tree of one set of devices.
fn write_device_trees<W: Write + Seek>(
    b: &MetadataBuilder,
    devices: &std::collections::BTreeMap<u64, Device>,
    block_of: &[u64],
    alloc: &mut Alloc,
    out: &mut Out<W>,
) -> Result<(u64, u64)> {
    let top: Vec<(u64, Vec<u8>)> = devices
        .iter()
        .map(|(&id, d)| (id, block_of[d.root].to_le_bytes().to_vec()))
        .collect();
    let top_root = write_btree(alloc, out, &top, 8)?;
    let details: Vec<(u64, Vec<u8>)> = devices
        .iter()
        .map(|(&id, d)| {
            let mut det = d.details;
            det.mapped_blocks = b.arena.count(d.root);
            (id, det.to_bytes().to_vec())
        })
        .collect();
    let details_root = write_btree(alloc, out, &details, DETAILS_VALUE_SIZE)?;
    Ok((top_root, details_root))
}

pub(super) fn write<W: Write + Seek>(b: &MetadataBuilder, w: W) -> Result<WrittenMetadata> {
    let cfg = &b.config;
    let mut out = Out { w, pos: None };
    let mut alloc = Alloc {
        counts: Vec::new(),
        limit: cfg.nr_metadata_blocks,
    };
    let sb_block = alloc.take()?;
    let nr_meta_bitmaps = cfg.nr_metadata_blocks.div_ceil(ENTRIES_PER_BITMAP);
    if nr_meta_bitmaps as usize > MAX_METADATA_BITMAPS {
        return Err(ThinMetaError::InvalidDescription(format!(
            "{} metadata blocks is more than a metadata space map can index",
            cfg.nr_metadata_blocks
        )));
    }
    let meta_bitmaps: Vec<u64> = (0..nr_meta_bitmaps)
        .map(|_| alloc.take())
        .collect::<Result<_>>()?;
    let meta_index = alloc.take()?;
    let nr_data_bitmaps = cfg.nr_data_blocks.div_ceil(ENTRIES_PER_BITMAP);
    let data_bitmaps: Vec<u64> = (0..nr_data_bitmaps)
        .map(|_| alloc.take())
        .collect::<Result<_>>()?;

    // Mapping-tree nodes reachable from the live and held devices, each once, preorder.
    let arena = &b.arena;
    let mut block_of = vec![u64::MAX; arena.nodes.len()];
    let mut order: Vec<NodeId> = Vec::new();
    let held_devices = b.held.as_ref().map(|h| &h.devices);
    let all_roots = b
        .devices
        .values()
        .chain(held_devices.into_iter().flat_map(|d| d.values()))
        .map(|d| d.root);
    let mut stack: Vec<NodeId> = Vec::new();
    for root in all_roots {
        stack.push(root);
        while let Some(id) = stack.pop() {
            if block_of[id] != u64::MAX {
                continue;
            }
            block_of[id] = alloc.take()?;
            alloc.counts[block_of[id] as usize] = 0;
            order.push(id);
            if let MemNode::Internal { children, .. } = &arena.nodes[id] {
                stack.extend(children.iter().rev());
            }
        }
    }
    let mut data_counts = vec![0u32; cfg.nr_data_blocks as usize];
    for &id in &order {
        match &arena.nodes[id] {
            MemNode::Internal { keys, children } => {
                for &c in children {
                    alloc.counts[block_of[c] as usize] += 1;
                }
                let node = btree_node(block_of[id], false, keys, 8, |i, v| {
                    v.copy_from_slice(&block_of[children[i]].to_le_bytes())
                });
                out.put(block_of[id], &node)?;
            }
            MemNode::Leaf { keys, values } => {
                for &v in values {
                    data_counts[(v >> 24) as usize] += 1;
                }
                let node = btree_node(block_of[id], true, keys, 8, |i, v| {
                    v.copy_from_slice(&values[i].to_le_bytes())
                });
                out.put(block_of[id], &node)?;
            }
        }
    }
    for d in b
        .devices
        .values()
        .chain(held_devices.into_iter().flat_map(|d| d.values()))
    {
        alloc.counts[block_of[d.root] as usize] += 1;
    }

    let (mapping_root, details_root) =
        write_device_trees(b, &b.devices, &block_of, &mut alloc, &mut out)?;
    let held = match &b.held {
        Some(h) => {
            let held_sb = alloc.take()?;
            let (m, d) = write_device_trees(b, &h.devices, &block_of, &mut alloc, &mut out)?;
            Some((held_sb, m, d, h))
        }
        None => None,
    };

    // Data space map.
    let mut data_index = Vec::new();
    for (i, &blk) in data_bitmaps.iter().enumerate() {
        let (bm, entry) = bitmap(blk, i as u64, cfg.nr_data_blocks, |d| {
            data_counts[d as usize]
        });
        out.put(blk, &bm)?;
        let mut v = vec![0u8; 16];
        entry.encode(&mut v);
        data_index.push((i as u64, v));
    }
    let data_index_root = write_btree(&mut alloc, &mut out, &data_index, 16)?;
    let data_high: Vec<(u64, Vec<u8>)> = data_counts
        .iter()
        .enumerate()
        .filter(|(_, &c)| c >= 3)
        .map(|(d, &c)| (d as u64, c.to_le_bytes().to_vec()))
        .collect();
    let data_rc_root = write_btree(&mut alloc, &mut out, &data_high, 4)?;
    let data_sm = SpaceMapRoot {
        nr_blocks: cfg.nr_data_blocks,
        nr_allocated: data_counts.iter().filter(|&&c| c > 0).count() as u64,
        bitmap_root: data_index_root,
        ref_count_root: data_rc_root,
    };

    // Metadata space map: its reference-count tree's own nodes have count 1.
    let meta_high: Vec<(u64, Vec<u8>)> = alloc
        .counts
        .iter()
        .enumerate()
        .filter(|(_, &c)| c >= 3)
        .map(|(blk, &c)| (blk as u64, c.to_le_bytes().to_vec()))
        .collect();
    let meta_rc_root = write_btree(&mut alloc, &mut out, &meta_high, 4)?;
    let mut entries: Vec<IndexEntry> = Vec::new();
    for (i, &blk) in meta_bitmaps.iter().enumerate() {
        let (bm, entry) = bitmap(blk, i as u64, cfg.nr_metadata_blocks, |m| {
            alloc.counts.get(m as usize).copied().unwrap_or(0)
        });
        out.put(blk, &bm)?;
        entries.push(entry);
    }
    out.put(meta_index, &metadata_index(meta_index, &entries))?;
    let metadata_sm = SpaceMapRoot {
        nr_blocks: cfg.nr_metadata_blocks,
        nr_allocated: alloc.counts.len() as u64,
        bitmap_root: meta_index,
        ref_count_root: meta_rc_root,
    };

    if let Some((held_sb, m, d, h)) = held {
        let f = SbFields {
            blocknr: held_sb,
            time: h.time,
            transaction_id: h.transaction_id,
            metadata_snap: 0,
            data_sm: SpaceMapRoot::default(),
            metadata_sm: SpaceMapRoot::default(),
            mapping_root: m,
            details_root: d,
        };
        out.put(held_sb, &superblock(&f, b))?;
    }
    let f = SbFields {
        blocknr: sb_block,
        time: b.time,
        transaction_id: cfg.transaction_id,
        metadata_snap: held.map_or(0, |h| h.0),
        data_sm,
        metadata_sm,
        mapping_root,
        details_root,
    };
    out.put(sb_block, &superblock(&f, b))?;
    out.w.flush().map_err(ThinMetaError::Write)?;
    Ok(WrittenMetadata {
        allocated_blocks: alloc.counts.len() as u64,
        held_root: held.map(|h| h.0),
        mapping_nodes: order.len() as u64,
    })
}
