//! Property tests against the oracle: for many seeded random pool layouts our thin_delta and
//! thin_dump output equals Debian's (thin-provisioning-tools 0.9.0) element for element, on
//! unshared trees made by thin_restore and on shared trees made by our builder.

mod common;

use std::fmt::Write as _;
use std::path::Path;

use common::{our_delta, our_dump, restore, their_delta, thin_check, tool, Rng};
use convoy_thinmeta::builder::{BuilderConfig, MetadataBuilder};
use convoy_thinmeta::{DeltaKind, DeltaMode, DeltaRun, ThinMetadata};

/// Random mappings: runs of contiguous blocks with gaps, data blocks partly contiguous.
fn random_mappings(rng: &mut Rng, max: u64) -> Vec<(u64, u64, u32)> {
    let mut out = Vec::new();
    let mut v = rng.below(20);
    let target = rng.below(max) + 1;
    while (out.len() as u64) < target {
        let len = 1 + rng.below(40);
        let mut d = rng.below(60_000);
        for _ in 0..len {
            out.push((v, d, rng.below(3) as u32));
            v += 1;
            d = if rng.chance(80) {
                d + 1
            } else {
                rng.below(60_000)
            };
        }
        v += if rng.chance(30) { 0 } else { rng.below(50) };
    }
    out
}

/// Derives a changed copy of `base`: some data blocks changed, some removed, some added.
fn mutate(rng: &mut Rng, base: &[(u64, u64, u32)]) -> Vec<(u64, u64, u32)> {
    let mut map: std::collections::BTreeMap<u64, (u64, u32)> =
        base.iter().map(|&(v, d, t)| (v, (d, t))).collect();
    let n = rng.below(base.len() as u64 / 4 + 3);
    let end = base.last().map_or(100, |m| m.0 + 50);
    for _ in 0..n {
        let v = rng.below(end);
        match rng.below(3) {
            0 => {
                map.remove(&v);
            }
            _ => {
                let len = 1 + rng.below(8);
                let d = rng.below(60_000);
                for i in 0..len {
                    map.insert(v + i, (d + i, 1));
                }
            }
        }
    }
    map.into_iter().map(|(v, (d, t))| (v, d, t)).collect()
}

fn device_xml(xml: &mut String, id: u64, maps: &[(u64, u64, u32)]) {
    writeln!(
        xml,
        "  <device dev_id=\"{id}\" mapped_blocks=\"{}\" transaction=\"0\" creation_time=\"0\" snap_time=\"0\">",
        maps.len()
    )
    .unwrap();
    for &(v, d, t) in maps {
        writeln!(
            xml,
            "    <single_mapping origin_block=\"{v}\" data_block=\"{d}\" time=\"{t}\"/>"
        )
        .unwrap();
    }
    xml.push_str("  </device>\n");
}

/// Compares every ordered pair; returns the shared subtrees skipped by changes-only walks.
fn compare_all(path: &Path, ids: &[u64], snap: bool) -> u64 {
    let mut skipped = 0;
    for &l in ids {
        for &r in ids {
            for verbose in [false, true] {
                assert_eq!(
                    our_delta(path, l, r, verbose, snap),
                    their_delta(path, l, r, verbose, snap),
                    "delta {l} vs {r} verbose={verbose} metadata_snap={snap} on {}",
                    path.display()
                );
            }
            skipped += check_changes_only(path, l, r, snap);
        }
    }
    skipped
}

/// ChangesOnly gives exactly the non-Same runs of Full, reading no more blocks; returns the
/// number of shared subtrees it skipped.
fn check_changes_only(path: &Path, l: u64, r: u64, snap: bool) -> u64 {
    let open = || {
        let f = std::fs::File::open(path).unwrap();
        if snap {
            ThinMetadata::open_metadata_snapshot(f, None).unwrap()
        } else {
            ThinMetadata::open(f).unwrap()
        }
    };
    let mut full_md = open();
    let mut full = full_md.delta(l, r, DeltaMode::Full).unwrap();
    let all: Vec<DeltaRun> = full.by_ref().map(|x| x.unwrap()).collect();
    let full_reads = full.blocks_read();
    let mut md = open();
    let mut changes = md.delta(l, r, DeltaMode::ChangesOnly).unwrap();
    let changed: Vec<DeltaRun> = changes.by_ref().map(|x| x.unwrap()).collect();
    let expected: Vec<DeltaRun> = all
        .into_iter()
        .filter(|run| run.kind != DeltaKind::Same)
        .collect();
    assert_eq!(changed, expected, "changes-only {l} vs {r}");
    assert!(changes.blocks_read() <= full_reads);
    changes.shared_subtrees_skipped()
}

#[test]
fn thin_restore_fixtures_match_thin_delta_and_thin_dump() {
    let dir = tempfile::tempdir().unwrap();
    for seed in 0..40u64 {
        let mut rng = Rng(seed);
        let base = random_mappings(&mut rng, if seed % 4 == 0 { 3000 } else { 400 });
        let mut xml = String::from(
            "<superblock uuid=\"\" time=\"2\" transaction=\"7\" flags=\"0\" version=\"2\" data_block_size=\"128\" nr_data_blocks=\"60100\">\n",
        );
        device_xml(&mut xml, 1, &base);
        device_xml(&mut xml, 2, &mutate(&mut rng, &base));
        device_xml(&mut xml, 5, &random_mappings(&mut rng, 300));
        device_xml(&mut xml, 6, &[]);
        xml.push_str("</superblock>\n");
        let path = restore(dir.path(), &format!("seed{seed}"), &xml, 1024);
        assert_eq!(
            our_dump(&path),
            tool("thin_dump", &[path.to_str().unwrap()]),
            "seed {seed}"
        );
        compare_all(&path, &[1, 2, 5, 6], false);
    }
}

/// A random history on shared trees: an origin, snapshots, then writes and discards on all.
fn random_shared_pool(rng: &mut Rng) -> MetadataBuilder {
    let mut b = MetadataBuilder::new(BuilderConfig {
        nr_metadata_blocks: 4096,
        nr_data_blocks: 200_000,
        ..BuilderConfig::default()
    });
    let max = if rng.chance(30) { 20_000 } else { 2000 };
    let base = random_mappings(rng, max);
    let fill = 1 + rng.below(252) as usize;
    b.create_thin_with(1, base.iter().copied(), fill).unwrap();
    let end = base.last().map_or(100, |m| m.0 + 100);
    let mut next_data = 100_000;
    let mut ids = vec![1u64];
    for snap in 2..=(2 + rng.below(3)) {
        let origin = ids[rng.below(ids.len() as u64) as usize];
        b.create_snapshot(origin, snap).unwrap();
        ids.push(snap);
        let time = b.time();
        for _ in 0..rng.below(300) {
            let dev = ids[rng.below(ids.len() as u64) as usize];
            let v = rng.below(end);
            if rng.chance(15) {
                b.remove(dev, v).unwrap();
            } else {
                for i in 0..1 + rng.below(20) {
                    b.insert(dev, v + i, next_data, time).unwrap();
                    next_data += 1;
                }
            }
        }
    }
    b
}

#[test]
fn shared_trees_match_thin_delta() {
    let dir = tempfile::tempdir().unwrap();
    let mut skipped = 0;
    for seed in 0..30u64 {
        let mut rng = Rng(1000 + seed);
        let mut b = random_shared_pool(&mut rng);
        let hold = seed % 3 == 0;
        if hold {
            b.reserve_metadata_snapshot().unwrap();
            // Live changes after the reservation must not show through the held root.
            for v in 0..50 {
                b.insert(1, v * 7, 150_000 + v, b.time()).unwrap();
            }
        }
        let path = dir.path().join(format!("shared{seed}"));
        let written = b.write_file(&path).unwrap();
        thin_check(&path);
        assert_eq!(
            our_dump(&path),
            tool("thin_dump", &[path.to_str().unwrap()]),
            "seed {seed}"
        );
        let ids: Vec<u64> = (1..=5).filter(|&i| b_has(&path, i)).collect();
        skipped += compare_all(&path, &ids, false);
        if hold {
            assert!(written.held_root.is_some());
            compare_all(&path, &ids, true);
        }
    }
    // The skip path must have been exercised (and checked against thin_delta) many times.
    assert!(skipped > 100, "only {skipped} shared subtrees skipped");
}

fn b_has(path: &Path, id: u64) -> bool {
    let f = std::fs::File::open(path).unwrap();
    ThinMetadata::open(f).unwrap().device_root(id).is_ok()
}

#[test]
fn differently_split_trees_match_thin_delta() {
    let dir = tempfile::tempdir().unwrap();
    for seed in 0..15u64 {
        let mut rng = Rng(5000 + seed);
        let base = random_mappings(&mut rng, 8000);
        let other = mutate(&mut rng, &base);
        let mut b = MetadataBuilder::new(BuilderConfig {
            nr_data_blocks: 70_000,
            ..BuilderConfig::default()
        });
        b.create_thin_with(1, base.iter().copied(), 1 + rng.below(252) as usize)
            .unwrap();
        b.create_thin_with(2, other.iter().copied(), 1 + rng.below(252) as usize)
            .unwrap();
        b.create_thin_with(3, base.iter().copied(), 1 + rng.below(30) as usize)
            .unwrap();
        let path = dir.path().join(format!("split{seed}"));
        b.write_file(&path).unwrap();
        thin_check(&path);
        compare_all(&path, &[1, 2, 3], false);
    }
}

#[test]
fn trees_of_different_heights_sharing_subtrees() {
    // 252 full-ish leaves under one root; after the snapshot, inserts into one origin leaf
    // split it, the root overflows and splits: the origin grows a level, the snapshot does not,
    // and all other leaves stay shared one level lower on the origin side.
    let dir = tempfile::tempdir().unwrap();
    let mut b = MetadataBuilder::new(BuilderConfig {
        nr_data_blocks: 100_000,
        ..BuilderConfig::default()
    });
    let n = 252 * 100;
    b.create_thin_with(1, (0..n).map(|v| (v * 4, v, 0)), 100)
        .unwrap();
    b.create_snapshot(1, 2).unwrap();
    // Leaf 10 holds keys 4000..4396; fill 200 of its free slots.
    let new_keys = (4000..4400u64).filter(|k| k % 4 != 0).take(200);
    for (i, k) in new_keys.enumerate() {
        b.insert(1, k, 60_000 + i as u64, 1).unwrap();
    }
    let path = dir.path().join("heights");
    b.write_file(&path).unwrap();
    thin_check(&path);
    compare_all(&path, &[1, 2], false);
    let mut md = ThinMetadata::open(std::fs::File::open(&path).unwrap()).unwrap();
    let left: std::collections::HashSet<u64> =
        md.mapping_tree_blocks(1).unwrap().into_iter().collect();
    let right: std::collections::HashSet<u64> =
        md.mapping_tree_blocks(2).unwrap().into_iter().collect();
    let differing = left.symmetric_difference(&right).count() as u64;
    assert!(
        left.len() > right.len(),
        "the origin should have grown a level: {} vs {} nodes",
        left.len(),
        right.len()
    );
    let start = md.blocks_read();
    let mut delta = md.delta(1, 2, DeltaMode::ChangesOnly).unwrap();
    let changed: u64 = delta.by_ref().map(|r| r.unwrap().length).sum();
    assert_eq!(changed, 200);
    assert!(delta.shared_subtrees_skipped() > 200);
    let read = delta.blocks_read() - start;
    assert!(
        read <= differing + 4,
        "read {read} nodes, {differing} differ"
    );
}
