//! Host tier: every committed fuzz seed (`fuzz/seeds/<target>/*`: valid examples and every input
//! that once failed) run through the same code its libFuzzer target runs (`fuzz/bodies/`), so a
//! regression on a known input fails `cargo test` without cargo-fuzz. Fuzzing itself (finding
//! new inputs) is `cargo xtask fuzz`.
//!
//! `CONVOY_WRITE_FUZZ_SEEDS=1 cargo test -p convoy-e2e --test fuzz_seeds` (re)writes the
//! generated seeds of the format-2 decoders (packs and manifests) from the current encoders.

use std::path::{Path, PathBuf};

#[path = "../../fuzz/bodies/api_json.rs"]
mod api_json;
#[path = "../../fuzz/bodies/backup_block.rs"]
mod backup_block;
#[path = "../../fuzz/bodies/backup_manifest.rs"]
mod backup_manifest;
#[path = "../../fuzz/bodies/backup_pack.rs"]
mod backup_pack;
#[path = "../../fuzz/bodies/backup_url.rs"]
mod backup_url;
#[path = "../../fuzz/bodies/thinmeta_reader.rs"]
mod thinmeta_reader;

type Body = fn(&[u8]);

const TARGETS: &[(&str, Body)] = &[
    ("api_json", api_json::run),
    ("backup_block", backup_block::run),
    ("backup_manifest", backup_manifest::run),
    ("backup_pack", backup_pack::run),
    ("backup_url", backup_url::run),
    ("thinmeta_reader", thinmeta_reader::run),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    out.retain(|p| p.is_file());
    out.sort();
    out
}

#[test]
fn every_fuzz_target_is_replayed() {
    let mut on_disk: Vec<String> = files(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_string()))
        .collect();
    on_disk.sort();
    let here: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        on_disk, here,
        "fuzz/fuzz_targets and this test's TARGETS differ"
    );
}

#[test]
fn every_seed_runs_clean() {
    if std::env::var_os("CONVOY_WRITE_FUZZ_SEEDS").is_some() {
        write_generated_seeds();
    }
    for (name, body) in TARGETS {
        let seeds = files(&fuzz_dir().join("seeds").join(name));
        assert!(!seeds.is_empty(), "no seeds for fuzz target {name}");
        for seed in seeds {
            let data = std::fs::read(&seed).unwrap();
            let outcome = std::panic::catch_unwind(|| body(&data));
            assert!(
                outcome.is_ok(),
                "fuzz target {name} failed on {}",
                seed.display()
            );
        }
    }
}

/// Seeds for the format-2 decoders, from the encoders: whole valid objects and a few cut ones.
fn write_generated_seeds() {
    use convoy_blockstore::{encode_block, BlockId, PackBuilder};
    let seeds = fuzz_dir().join("seeds");
    let pack_dir = seeds.join("backup_pack");
    std::fs::create_dir_all(&pack_dir).unwrap();
    for (i, count) in [1usize, 3, 40].into_iter().enumerate() {
        let mut b = PackBuilder::new(1 << 20);
        for j in 0..count {
            let data = vec![(i * 7 + j) as u8; 4096 + j];
            let enc = encode_block(&data, 1).unwrap();
            b.push(BlockId::of(&data), &enc, data.len() as u32);
        }
        let pack = b.finish();
        std::fs::write(pack_dir.join(format!("pack-{count}")), &pack).unwrap();
        std::fs::write(
            pack_dir.join(format!("pack-{count}-cut")),
            &pack[pack.len() / 2..],
        )
        .unwrap();
    }
    let man_dir = seeds.join("backup_manifest");
    std::fs::create_dir_all(&man_dir).unwrap();
    for (i, chunks) in [&[][..], &[0], &[0, 1, 5, 9]].into_iter().enumerate() {
        let m = convoy_backupstore::fuzzing::encode_manifest(10 << 16, 1 << 16, chunks).unwrap();
        for piece in [0u8, 7] {
            let mut seed = vec![piece];
            seed.extend_from_slice(&m);
            std::fs::write(man_dir.join(format!("v2-{i}-piece{piece}")), &seed).unwrap();
        }
    }
}
