//! Corrupt, hostile and truncated metadata gives errors naming the block, never a panic or an
//! endless walk: targeted cases, then thousands of seeded random mutations (re-sealed with the
//! right checksum so they reach the structural checks).

mod common;

use std::io::Cursor;

use common::Rng;
use convoy_thinmeta::builder::{BuilderConfig, MetadataBuilder};
use convoy_thinmeta::checksum::{seal, verify, BTREE_NODE_SALT, SUPERBLOCK_SALT};
use convoy_thinmeta::{DeltaMode, ThinMetaError, ThinMetadata};

const BS: usize = 4096;
const SALTS: [u32; 4] = [
    convoy_thinmeta::checksum::SUPERBLOCK_SALT,
    convoy_thinmeta::checksum::BTREE_NODE_SALT,
    convoy_thinmeta::checksum::BITMAP_SALT,
    convoy_thinmeta::checksum::INDEX_SALT,
];

/// A pool with an origin, two snapshots diverged from it, a held metadata snapshot.
fn fixture() -> Vec<u8> {
    let mut b = MetadataBuilder::new(BuilderConfig {
        nr_metadata_blocks: 512,
        ..BuilderConfig::default()
    });
    b.create_thin_with(1, (0..30_000).map(|v| (v, v + 7, 0)), 200)
        .unwrap();
    b.create_snapshot(1, 2).unwrap();
    b.reserve_metadata_snapshot().unwrap();
    for v in (0..30_000).step_by(997) {
        b.insert(1, v, 40_000 + v / 997, 1).unwrap();
    }
    b.create_snapshot(2, 3).unwrap();
    b.remove(3, 12_345).unwrap();
    let mut out = Cursor::new(Vec::new());
    b.write_to(&mut out).unwrap();
    let mut v = out.into_inner();
    v.resize(512 * BS, 0);
    v
}

fn block_mut(img: &mut [u8], b: u64) -> &mut [u8; BS] {
    let off = b as usize * BS;
    (&mut img[off..off + BS]).try_into().unwrap()
}

fn reseal(img: &mut [u8], b: u64, salt: u32) {
    seal(block_mut(img, b), salt);
}

/// Walks everything reachable; returns the first error. Panics if a walk does not end.
fn walk_all(img: &[u8]) -> Result<(), ThinMetaError> {
    const BOUND: u64 = 5_000_000;
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
        let devices = md.devices()?;
        let ids: Vec<u64> = md.device_roots()?.into_iter().map(|d| d.0).collect();
        assert!(devices.len() <= 4096);
        for &id in &ids {
            let mut n = 0u64;
            for run in md.mapped_runs(id)? {
                run?;
                n += 1;
                assert!(n < BOUND, "mapped runs of {id} do not end");
            }
        }
        for &l in &ids {
            for &r in &ids {
                for mode in [
                    DeltaMode::Full,
                    DeltaMode::FullByKey,
                    DeltaMode::ChangesOnly,
                ] {
                    let mut n = 0u64;
                    for run in md.delta(l, r, mode)? {
                        run?;
                        n += 1;
                        assert!(n < BOUND, "delta {l}/{r} does not end");
                    }
                }
            }
        }
    }
    Ok(())
}

fn root_of(img: &[u8], dev: u64) -> u64 {
    ThinMetadata::open(Cursor::new(img))
        .unwrap()
        .device_root(dev)
        .unwrap()
}

fn le64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

fn expect_corrupt(img: &[u8], block: u64, needle: &str) {
    match walk_all(img) {
        Err(ThinMetaError::Corrupt {
            block: b, problem, ..
        }) => {
            assert_eq!(b, block, "error names the wrong block: {problem}");
            assert!(problem.contains(needle), "{problem:?} lacks {needle:?}");
        }
        other => panic!("expected corruption of block {block} ({needle}), got {other:?}"),
    }
}

#[test]
fn intact_fixture_walks() {
    walk_all(&fixture()).unwrap();
}

#[test]
fn bad_checksum_names_the_block() {
    let mut img = fixture();
    let root = root_of(&img, 1);
    block_mut(&mut img, root)[100] ^= 1;
    expect_corrupt(&img, root, "checksum");
}

#[test]
fn bad_superblock_is_reported() {
    let mut img = fixture();
    img[33] ^= 0xff; // magic
    reseal(&mut img, 0, SUPERBLOCK_SALT);
    expect_corrupt(&img, 0, "magic");
    let mut img = fixture();
    img[5000] ^= 1;
    assert!(verify(block_mut(&mut img, 0), SUPERBLOCK_SALT).is_ok());
    img[7] ^= 1;
    expect_corrupt(&img, 0, "checksum");
}

#[test]
fn cycle_is_detected() {
    let mut img = fixture();
    let root = root_of(&img, 3);
    // Device 3's root is internal: point its first child back at the root itself.
    let blk = block_mut(&mut img, root);
    assert_eq!(u32::from_le_bytes(blk[4..8].try_into().unwrap()), 1);
    let max = u32::from_le_bytes(blk[20..24].try_into().unwrap()) as usize;
    let v0 = 32 + 8 * max;
    blk[v0..v0 + 8].copy_from_slice(&root.to_le_bytes());
    reseal(&mut img, root, BTREE_NODE_SALT);
    expect_corrupt(&img, root, "cycle");
}

#[test]
fn keys_out_of_order_are_reported() {
    let mut img = fixture();
    let root = root_of(&img, 3);
    let blk = block_mut(&mut img, root);
    let k1 = le64(blk, 40);
    blk[32..40].copy_from_slice(&(k1 + 1).to_le_bytes());
    reseal(&mut img, root, BTREE_NODE_SALT);
    expect_corrupt(&img, root, "ascending");
}

#[test]
fn child_pointer_out_of_range_is_reported() {
    let mut img = fixture();
    let root = root_of(&img, 1);
    let blk = block_mut(&mut img, root);
    let max = u32::from_le_bytes(blk[20..24].try_into().unwrap()) as usize;
    let v0 = 32 + 8 * max;
    blk[v0..v0 + 8].copy_from_slice(&10_000_000u64.to_le_bytes());
    reseal(&mut img, root, BTREE_NODE_SALT);
    match walk_all(&img) {
        Err(ThinMetaError::OutOfRange { block, .. }) => assert_eq!(block, 10_000_000),
        other => panic!("expected out of range, got {other:?}"),
    }
}

#[test]
fn truncated_metadata_is_reported() {
    let img = fixture();
    let root = root_of(&img, 1);
    let short = &img[..root as usize * BS + 100];
    match walk_all(short) {
        Err(ThinMetaError::Corrupt { problem, .. }) => assert!(problem.contains("truncated")),
        Err(ThinMetaError::OutOfRange { .. }) => {}
        other => panic!("expected truncation error, got {other:?}"),
    }
    assert!(walk_all(&img[..100]).is_err());
    assert!(walk_all(&[]).is_err());
}

#[test]
fn missing_device_and_snapshot_are_errors() {
    let img = fixture();
    let mut md = ThinMetadata::open(Cursor::new(&img[..])).unwrap();
    assert!(matches!(
        md.delta(1, 99, DeltaMode::Full),
        Err(ThinMetaError::DeviceNotFound { dev_id: 99 })
    ));
    let mut b = MetadataBuilder::new(BuilderConfig::default());
    b.create_thin(1).unwrap();
    let mut out = Cursor::new(Vec::new());
    b.write_to(&mut out).unwrap();
    assert!(matches!(
        ThinMetadata::open_metadata_snapshot(Cursor::new(out.into_inner()), None),
        Err(ThinMetaError::NoMetadataSnapshot)
    ));
}

/// Interesting values to write into fields: small, boundary, and other blocks' numbers
/// (to make cycles and cross links).
fn interesting(rng: &mut Rng, nr_blocks: u64) -> u64 {
    match rng.below(6) {
        0 => rng.below(4),
        1 => u64::MAX - rng.below(2),
        2 => rng.below(nr_blocks),
        3 => rng.below(300),
        4 => 1 << rng.below(64),
        _ => rng.next(),
    }
}

fn mutate(rng: &mut Rng, img: &mut Vec<u8>, allocated: u64) {
    let nr_blocks = (img.len() / BS) as u64;
    for _ in 0..1 + rng.below(3) {
        let b = rng.below(allocated);
        let original = *block_mut(img, b);
        let salt = SALTS
            .iter()
            .copied()
            .find(|&s| verify(&original, s).is_ok());
        let blk = block_mut(img, b);
        // Mostly the header and the start of keys/values, where structure lives.
        let off = match rng.below(4) {
            0 => 4 + rng.below(28) as usize,
            1 => 32 + rng.below(64) as usize * 8,
            2 => 32 + 8 * 252 + rng.below(64) as usize * 8,
            _ => rng.below(BS as u64 - 8) as usize,
        }
        .min(BS - 8);
        match rng.below(3) {
            0 => blk[off] ^= 1 << rng.below(8),
            1 => blk[off..off + 4]
                .copy_from_slice(&(interesting(rng, nr_blocks) as u32).to_le_bytes()),
            _ => blk[off..off + 8].copy_from_slice(&interesting(rng, nr_blocks).to_le_bytes()),
        }
        if let Some(s) = salt {
            if rng.chance(90) {
                seal(blk, s);
            }
        }
    }
    if rng.chance(5) {
        let len = rng.below(img.len() as u64) as usize;
        img.truncate(len);
    }
}

/// Runs `iterations` seeded mutations of `base` (allocated blocks only) through `walk_all`.
fn fuzz(base: &[u8], first_seed: u64) {
    let allocated = (0..base.len() / BS)
        .rposition(|b| base[b * BS..(b + 1) * BS].iter().any(|&x| x != 0))
        .unwrap() as u64
        + 1;
    let iterations: u64 = std::env::var("THINMETA_FUZZ_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let mut errors = 0;
    for seed in first_seed..first_seed + iterations {
        let mut rng = Rng(seed);
        let mut img = base.to_vec();
        mutate(&mut rng, &mut img, allocated);
        match std::panic::catch_unwind(|| walk_all(&img)) {
            Ok(Err(e)) => {
                errors += 1;
                assert!(!e.to_string().is_empty());
            }
            Ok(Ok(())) => {}
            Err(_) => panic!("seed {seed}: the reader panicked"),
        }
    }
    // Most mutations hit structure the walk reads; a fuzzer that never errs tests nothing.
    assert!(
        errors > iterations / 10,
        "only {errors} errors in {iterations} mutations"
    );
}

#[test]
fn random_mutations_never_panic_or_hang() {
    fuzz(&fixture(), 0);
}

#[test]
fn random_mutations_of_thin_restore_metadata_never_panic_or_hang() {
    let dir = tempfile::tempdir().unwrap();
    let mut xml = String::from(
        "<superblock uuid=\"\" time=\"1\" transaction=\"1\" flags=\"0\" version=\"2\" data_block_size=\"128\" nr_data_blocks=\"100000\">\n",
    );
    for dev in 1..=3u64 {
        xml.push_str(&format!(
            "<device dev_id=\"{dev}\" mapped_blocks=\"0\" transaction=\"0\" creation_time=\"0\" snap_time=\"0\">\n"
        ));
        for v in 0..3000u64 {
            if (v * dev) % 7 != 3 {
                let d = (v * 13 + dev * 31) % 99_000;
                xml.push_str(&format!(
                    "<single_mapping origin_block=\"{v}\" data_block=\"{d}\" time=\"0\"/>\n"
                ));
            }
        }
        xml.push_str("</device>\n");
    }
    xml.push_str("</superblock>\n");
    let path = common::restore(dir.path(), "fuzz", &xml, 256);
    let base = std::fs::read(path).unwrap();
    walk_all(&base).unwrap();
    fuzz(&base, 1_000_000);
}
