//! `DeltaMode::FullByKey` (what plain `thin_delta` output is rendered from): its runs are
//! exactly `Full`'s runs merged wherever kind and virtual blocks continue, its plain output
//! equals Debian thin_delta's, and it reads the same blocks as `Full`. Also the block reader's
//! read-ahead: a forward walk over a big tree reads the same nodes as a random one and a
//! truncated source is still an error naming the block.

mod common;

use std::io::Cursor;
use std::path::Path;

use common::{their_delta, thin_check, Rng};
use convoy_thinmeta::builder::{BuilderConfig, MetadataBuilder};
use convoy_thinmeta::xml::write_delta;
use convoy_thinmeta::{BlockReader, DeltaMode, DeltaRun, ThinMetaError, ThinMetadata};

/// `Full` runs merged where kind and virtual blocks continue, keeping the first data blocks.
fn merge_by_key(runs: Vec<DeltaRun>) -> Vec<DeltaRun> {
    let mut out: Vec<DeltaRun> = Vec::new();
    for run in runs {
        if let Some(last) = out.last_mut() {
            if last.kind == run.kind && last.begin + last.length == run.begin {
                last.length += run.length;
                continue;
            }
        }
        out.push(run);
    }
    out
}

fn runs(path: &Path, l: u64, r: u64, mode: DeltaMode) -> (Vec<DeltaRun>, u64) {
    let mut md = ThinMetadata::open(std::fs::File::open(path).unwrap()).unwrap();
    let mut delta = md.delta(l, r, mode).unwrap();
    let runs = delta.by_ref().map(|x| x.unwrap()).collect();
    (runs, delta.blocks_read())
}

fn plain_by_key(path: &Path, l: u64, r: u64) -> String {
    let mut md = ThinMetadata::open(std::fs::File::open(path).unwrap()).unwrap();
    let sb = md.superblock().clone();
    let delta = md.delta(l, r, DeltaMode::FullByKey).unwrap();
    let mut out = Vec::new();
    write_delta(&mut out, &sb, l, r, delta, false).unwrap();
    String::from_utf8(out).unwrap()
}

/// An origin of contiguous and gapped runs (data partly contiguous), snapshots, then writes
/// and discards on all of them.
fn shared_pool(rng: &mut Rng) -> MetadataBuilder {
    let mut b = MetadataBuilder::new(BuilderConfig {
        nr_metadata_blocks: 4096,
        nr_data_blocks: 200_000,
        ..BuilderConfig::default()
    });
    let mut base = Vec::new();
    let mut v = rng.below(10);
    while base.len() < 1000 + rng.below(12_000) as usize {
        let mut d = rng.below(90_000);
        for _ in 0..1 + rng.below(300) {
            base.push((v, d, 0));
            v += 1;
            d = if rng.chance(70) {
                d + 1
            } else {
                rng.below(90_000)
            };
        }
        v += if rng.chance(50) { 0 } else { rng.below(20) };
    }
    b.create_thin_with(1, base.iter().copied(), 1 + rng.below(252) as usize)
        .unwrap();
    let mut next = 100_000;
    for snap in 2..=3 {
        b.create_snapshot(1, snap).unwrap();
        for _ in 0..rng.below(60) {
            let dev = 1 + rng.below(snap);
            let v = rng.below(v + 50);
            if rng.chance(20) {
                b.remove(dev, v).unwrap();
            } else {
                for i in 0..1 + rng.below(30) {
                    b.insert(dev, v + i, next, b.time()).unwrap();
                    next += 1;
                }
            }
        }
    }
    b
}

#[test]
fn full_by_key_is_full_merged_by_key_and_prints_as_thin_delta() {
    let dir = tempfile::tempdir().unwrap();
    for seed in 0..12u64 {
        let mut rng = Rng(7000 + seed);
        let b = shared_pool(&mut rng);
        let path = dir.path().join(format!("bykey{seed}"));
        b.write_file(&path).unwrap();
        thin_check(&path);
        for (l, r) in [(1, 2), (2, 1), (2, 3), (1, 1), (3, 1)] {
            let (full, full_reads) = runs(&path, l, r, DeltaMode::Full);
            let (by_key, by_key_reads) = runs(&path, l, r, DeltaMode::FullByKey);
            assert_eq!(by_key, merge_by_key(full), "seed {seed}: {l} vs {r}");
            assert_eq!(by_key_reads, full_reads, "seed {seed}: {l} vs {r}");
            assert_eq!(
                plain_by_key(&path, l, r),
                their_delta(&path, l, r, false, false),
                "seed {seed}: {l} vs {r}"
            );
        }
    }
}

#[test]
fn full_by_key_lists_a_whole_shared_tree_in_one_run_per_gap() {
    // Identical devices: every leaf is shared; keys contiguous except one gap per 1000.
    let mut b = MetadataBuilder::new(BuilderConfig {
        nr_metadata_blocks: 2048,
        nr_data_blocks: 100_000,
        ..BuilderConfig::default()
    });
    let maps = (0..60_000u64)
        .filter(|v| v % 1000 != 999)
        .map(|v| (v, (v * 7) % 90_000, 0));
    b.create_thin_with(1, maps, 97).unwrap();
    b.create_snapshot(1, 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gaps");
    b.write_file(&path).unwrap();
    let (by_key, _) = runs(&path, 1, 2, DeltaMode::FullByKey);
    assert_eq!(by_key.len(), 60);
    for (i, run) in by_key.iter().enumerate() {
        let begin = i as u64 * 1000;
        assert_eq!((run.begin, run.length), (begin, 999), "run {i}");
        assert_eq!(run.left_data, Some((begin * 7) % 90_000));
        assert_eq!(run.left_data, run.right_data);
    }
    let (changes, _) = runs(&path, 1, 2, DeltaMode::ChangesOnly);
    assert!(changes.is_empty());
}

fn big_image() -> Vec<u8> {
    let mut b = MetadataBuilder::new(BuilderConfig {
        nr_metadata_blocks: 1024,
        nr_data_blocks: 400_000,
        ..BuilderConfig::default()
    });
    b.create_thin_with(1, (0..100_000).map(|v| (v, v + 3, 0)), 250)
        .unwrap();
    b.create_snapshot(1, 2).unwrap();
    for v in (0..100_000).step_by(4999) {
        b.insert(2, v, 200_000 + v, 1).unwrap();
    }
    let mut out = Cursor::new(Vec::new());
    b.write_to(&mut out).unwrap();
    let mut img = out.into_inner();
    img.resize(1024 * 4096, 0);
    img
}

#[test]
fn read_ahead_does_not_change_what_is_read_or_counted() {
    let img = big_image();
    let mut md = ThinMetadata::open(Cursor::new(&img[..])).unwrap();
    let nodes = md.mapping_tree_blocks(1).unwrap();
    let mut md = ThinMetadata::open(Cursor::new(&img[..])).unwrap();
    let start = md.blocks_read();
    let total: u64 = md.mapped_runs(1).unwrap().map(|r| r.unwrap().length).sum();
    assert_eq!(total, 100_000);
    // Each node once, plus the device lookup path (cache hits are not counted).
    let read = md.blocks_read() - start;
    assert!(
        read >= nodes.len() as u64 && read <= nodes.len() as u64 + 4,
        "read {read} blocks for {} nodes",
        nodes.len()
    );
}

#[test]
fn read_ahead_gives_each_block_its_own_bytes_and_a_truncated_source_an_error() {
    // Blocks filled with their own number; the source ends 100 bytes into block 150.
    let nr = 200u64;
    let mut img = Vec::new();
    for b in 0..nr {
        img.extend(std::iter::repeat_n((b % 251) as u8, 4096));
    }
    img.truncate(150 * 4096 + 100);
    let mut reader = BlockReader::new(Cursor::new(&img[..]));
    reader.set_nr_blocks(nr);
    // Forward with small gaps (read-ahead grows), then backwards and random (it resets).
    // Blocks 0..32 are re-read after the cache has moved on, so they come from the windows.
    let order: Vec<u64> = (0..150)
        .filter(|b| b % 5 != 3)
        .chain((0..150).rev().step_by(7))
        .chain([3, 149, 8, 77, 78, 79])
        // Two interleaved forward streams (a delta over two trees), then three.
        .chain((0..45).flat_map(|i| [i, 100 + i]))
        .chain((0..30).flat_map(|i| [2 * i, 60 + 2 * i, 120 + i]))
        .collect();
    for (i, &b) in order.iter().enumerate() {
        let data = reader.read(b, "test").unwrap();
        assert!(
            data.iter().all(|&x| x == (b % 251) as u8),
            "block {b} (read {i})"
        );
    }
    match reader.read(150, "test") {
        Err(ThinMetaError::Corrupt { block, problem, .. }) => {
            assert_eq!(block, 150);
            assert!(problem.contains("truncated"), "{problem}");
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a truncated block must not read"),
    }
    assert!(matches!(
        reader.read(nr, "the test"),
        Err(ThinMetaError::OutOfRange { block: 200, .. })
    ));
    // Still usable after the errors.
    assert_eq!(reader.read(149, "test").unwrap()[4095], 149);
}
