//! libFuzzer target: patches a pool's metadata (an origin, diverged snapshots, a held
//! metadata snapshot, built once by the fixture builder) with fuzzer-chosen bytes, re-seals the
//! checksums of patched blocks when asked, then walks everything the reader offers. The reader
//! must return errors, never panic, loop or grow without bound.
//!
//! Shared by the libFuzzer target (`fuzz_targets/thinmeta_reader.rs`) and the workspace's seed replay
//! test (`tests/tests/fuzz_seeds.rs`), which runs every committed seed through it.

use std::io::Cursor;
use std::sync::OnceLock;

use convoy_thinmeta::builder::{BuilderConfig, MetadataBuilder};
use convoy_thinmeta::checksum::{
    seal, verify, BITMAP_SALT, BTREE_NODE_SALT, INDEX_SALT, SUPERBLOCK_SALT,
};
use convoy_thinmeta::{DeltaMode, ThinMetadata};

const BS: usize = 4096;

fn base() -> &'static (Vec<u8>, usize) {
    static BASE: OnceLock<(Vec<u8>, usize)> = OnceLock::new();
    BASE.get_or_init(|| {
        let mut b = MetadataBuilder::new(BuilderConfig {
            nr_metadata_blocks: 256,
            ..BuilderConfig::default()
        });
        b.create_thin_with(1, (0..6_000).map(|v| (v, v + 7, 0)), 90)
            .unwrap();
        b.create_snapshot(1, 2).unwrap();
        b.reserve_metadata_snapshot().unwrap();
        for v in (0..6_000).step_by(397) {
            b.insert(1, v, 40_000 + v / 397, 1).unwrap();
        }
        b.create_snapshot(2, 3).unwrap();
        b.remove(3, 2_345).unwrap();
        let mut out = Cursor::new(Vec::new());
        let written = b.write_to(&mut out).unwrap();
        let mut img = out.into_inner();
        img.resize(256 * BS, 0);
        (img, written.allocated_blocks as usize)
    })
}

fn walk(img: &[u8]) -> Result<(), convoy_thinmeta::ThinMetaError> {
    let held = ThinMetadata::open(Cursor::new(img))?
        .superblock()
        .metadata_snap
        != 0;
    for snap in [false, true] {
        if snap && !held {
            continue;
        }
        let src = Cursor::new(img);
        let mut md = if snap {
            ThinMetadata::open_metadata_snapshot(src, None)?
        } else {
            ThinMetadata::open(src)?
        };
        md.devices()?;
        let ids: Vec<u64> = md.device_roots()?.into_iter().map(|d| d.0).collect();
        for &id in &ids {
            for run in md.mapped_runs(id)? {
                run?;
            }
        }
        for &l in &ids {
            for &r in &ids {
                for mode in [
                    DeltaMode::Full,
                    DeltaMode::FullByKey,
                    DeltaMode::ChangesOnly,
                ] {
                    for run in md.delta(l, r, mode)? {
                        run?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// One fuzz input.
pub fn run(data: &[u8]) {
    let (base, allocated) = base();
    let mut img = base.clone();
    // Patches of 5 bytes: block, offset (2 bytes), value, flags (bit 0: re-seal the block).
    for p in data.chunks_exact(5) {
        let block = p[0] as usize % allocated;
        let offset = u16::from_le_bytes([p[1], p[2]]) as usize % BS;
        let at = block * BS;
        let blk: &mut [u8; BS] = (&mut img[at..at + BS]).try_into().unwrap();
        let salt = [SUPERBLOCK_SALT, BTREE_NODE_SALT, BITMAP_SALT, INDEX_SALT]
            .into_iter()
            .find(|&s| verify(blk, s).is_ok());
        blk[offset] = p[3];
        if let (Some(s), true) = (salt, p[4] & 1 == 1) {
            seal(blk, s);
        }
    }
    if data.len() % 5 == 1 {
        // A truncated source.
        img.truncate(data[data.len() - 1] as usize * BS / 2);
    }
    let _ = walk(&img);
}
