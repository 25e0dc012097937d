//! VM tier: a real dm-thin pool on loop devices. Write to a volume, snapshot, rewrite scattered
//! blocks, snapshot again; under `reserve_metadata_snap` our delta read from the live metadata
//! device equals `thin_delta -m` on the same device, and the changes between the two snapshots
//! are exactly the blocks rewritten in between.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use convoy_testkit::{run, LoopDevice};
use convoy_thinmeta::xml::write_delta;
use convoy_thinmeta::{DeltaKind, DeltaMode, ThinMetadata};

/// Data block size in sectors (64 KiB).
const BLOCK_SECTORS: u64 = 128;
const BLOCK_BYTES: u64 = BLOCK_SECTORS * 512;
/// Virtual size of the thin volume, in data blocks.
const VOLUME_BLOCKS: u64 = 4096;

/// Device-mapper devices created by the test, removed (newest first) on drop.
struct Dm {
    pool: String,
    names: Vec<String>,
}

impl Dm {
    fn create(&mut self, name: &str, table: &str) {
        run("dmsetup", &["create", name, "--table", table]);
        self.names.push(name.to_string());
    }
    fn message(&self, msg: &str) {
        run("dmsetup", &["message", &self.pool, "0", msg]);
    }
    fn dev(&self, name: &str) -> PathBuf {
        let dev = run(
            "dmsetup",
            &["info", "-c", "--noheadings", "-o", "blkdevname", name],
        );
        PathBuf::from(format!("/dev/{}", dev.trim()))
    }
    fn major_minor(&self, name: &str) -> String {
        run(
            "dmsetup",
            &[
                "info",
                "-c",
                "--noheadings",
                "--separator",
                ":",
                "-o",
                "major,minor",
                name,
            ],
        )
        .trim()
        .to_string()
    }
}

impl Drop for Dm {
    fn drop(&mut self) {
        let _ = Command::new("dmsetup")
            .args(["message", &self.pool, "0", "release_metadata_snap"])
            .output();
        for name in self.names.iter().rev() {
            let _ = Command::new("dmsetup").args(["remove", name]).output();
        }
    }
}

/// Writes 4 KiB (tagged with `tag`) at the start of each virtual block.
fn write_blocks(dev: &Path, blocks: impl IntoIterator<Item = u64>, tag: u8) {
    let mut f = OpenOptions::new().write(true).open(dev).unwrap();
    for b in blocks {
        f.seek(SeekFrom::Start(b * BLOCK_BYTES)).unwrap();
        f.write_all(&[tag; 4096]).unwrap();
    }
    f.sync_all().unwrap();
}

fn our_delta(meta: &str, l: u64, r: u64, verbose: bool) -> String {
    let mut md = ThinMetadata::open_metadata_snapshot(File::open(meta).unwrap(), None).unwrap();
    let sb = md.superblock().clone();
    let delta = md.delta(l, r, DeltaMode::Full).unwrap();
    let mut out = Vec::new();
    if let Err(e) = write_delta(&mut out, &sb, l, r, delta, verbose) {
        panic!("delta {l}/{r}: {e:?}");
    }
    String::from_utf8(out).unwrap()
}

fn scattered(seed: u64, n: usize, limit: u64) -> BTreeSet<u64> {
    let mut x = seed;
    let mut out = BTreeSet::new();
    while out.len() < n {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.insert((x >> 33) % limit);
    }
    out
}

/// Compares our delta with `thin_delta -m` for every ordered pair, plain and verbose.
fn compare_pairs(meta: &str, ids: &[u64]) {
    run("blockdev", &["--flushbufs", meta]);
    for &l in ids {
        for &r in ids {
            for verbose in [false, true] {
                let (ls, rs) = (l.to_string(), r.to_string());
                let mut args = vec!["-m", "--snap1", &ls, "--snap2", &rs];
                if verbose {
                    args.push("--verbose");
                }
                args.push(meta);
                let theirs = run("thin_delta", &args);
                assert_eq!(
                    our_delta(meta, l, r, verbose),
                    theirs,
                    "delta {l}/{r} verbose={verbose}"
                );
            }
        }
    }
}

/// Random permutation of `0..n` (seeded).
fn shuffled(seed: u64, n: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..n).collect();
    let mut x = seed;
    for i in (1..v.len()).rev() {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        v.swap(i, ((x >> 33) % (i as u64 + 1)) as usize);
    }
    v
}

#[test]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
fn dm_delta_on_snapshots_diverged_by_random_writes() {
    // Writes in random order on both an origin and its active snapshot make the kernel split
    // the two trees at different keys; the delta must still match thin_delta.
    const BLOCKS: u64 = 12_000;
    let dir = tempfile::tempdir().unwrap();
    let data = LoopDevice::new(&dir.path().join("data.img"), 2 << 30);
    let meta = LoopDevice::new(&dir.path().join("meta.img"), 64 << 20);
    let tag = format!("ctm-{}-div", std::process::id());
    let mut dm = Dm {
        pool: format!("{tag}-pool"),
        names: Vec::new(),
    };
    let pool = dm.pool.clone();
    dm.create(
        &pool,
        &format!(
            "0 {} thin-pool {} {} {BLOCK_SECTORS} 0 1 skip_block_zeroing",
            (2u64 << 30) / 512,
            meta.as_str(),
            data.as_str()
        ),
    );
    let pool_dev = dm.major_minor(&pool);
    let size = BLOCKS * BLOCK_SECTORS;
    dm.message("create_thin 1");
    let origin = format!("{tag}-t1");
    dm.create(&origin, &format!("0 {size} thin {pool_dev} 1"));
    let origin_dev = dm.dev(&origin);
    let order = shuffled(1, BLOCKS);
    write_blocks(
        &origin_dev,
        order[..BLOCKS as usize * 2 / 3].iter().copied(),
        1,
    );
    run("dmsetup", &["suspend", &origin]);
    dm.message("create_snap 2 1");
    run("dmsetup", &["resume", &origin]);
    let snap = format!("{tag}-t2");
    dm.create(&snap, &format!("0 {size} thin {pool_dev} 2"));
    let snap_dev = dm.dev(&snap);
    // Both sides: rewrites of shared blocks and first writes of new ones, interleaved.
    let rest = shuffled(2, BLOCKS);
    write_blocks(&origin_dev, rest[..3000].iter().copied(), 2);
    write_blocks(&snap_dev, rest[2000..5000].iter().copied(), 3);
    dm.message("create_thin 3");
    let other = format!("{tag}-t3");
    dm.create(&other, &format!("0 {size} thin {pool_dev} 3"));
    write_blocks(
        &dm.dev(&other),
        shuffled(3, 500).into_iter().map(|b| b * 7),
        4,
    );
    dm.message("reserve_metadata_snap");
    compare_pairs(meta.as_str(), &[1, 2, 3]);
    let mut md =
        ThinMetadata::open_metadata_snapshot(File::open(meta.as_str()).unwrap(), None).unwrap();
    let nodes = md.mapping_tree_blocks(1).unwrap().len();
    eprintln!("origin tree: {nodes} nodes");
    assert!(nodes > 40, "the trees should have several levels");
}

#[test]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
fn dm_delta_matches_thin_delta_under_metadata_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let data = LoopDevice::new(&dir.path().join("data.img"), 1 << 30);
    let meta = LoopDevice::new(&dir.path().join("meta.img"), 32 << 20);
    let tag = format!("ctm-{}", std::process::id());
    let mut dm = Dm {
        pool: format!("{tag}-pool"),
        names: Vec::new(),
    };
    let pool = dm.pool.clone();
    dm.create(
        &pool,
        &format!(
            "0 {} thin-pool {} {} {BLOCK_SECTORS} 0 1 skip_block_zeroing",
            (1u64 << 30) / 512,
            meta.as_str(),
            data.as_str()
        ),
    );
    let pool_dev = dm.major_minor(&pool);
    let origin = format!("{tag}-t1");
    dm.message("create_thin 1");
    dm.create(
        &origin,
        &format!("0 {} thin {pool_dev} 1", VOLUME_BLOCKS * BLOCK_SECTORS),
    );
    let origin_dev = dm.dev(&origin);

    // Fill most of the volume, in two passes so that data blocks are not all contiguous.
    write_blocks(&origin_dev, (0..VOLUME_BLOCKS - 200).step_by(2), 1);
    write_blocks(&origin_dev, (1..VOLUME_BLOCKS - 200).step_by(2), 2);
    let snap = |dm: &Dm, id: u64| {
        run("dmsetup", &["suspend", &origin]);
        dm.message(&format!("create_snap {id} 1"));
        run("dmsetup", &["resume", &origin]);
    };
    snap(&dm, 2);
    // Rewrite scattered blocks (some never written before), then snapshot again.
    let rewritten = scattered(7, 60, VOLUME_BLOCKS);
    write_blocks(&origin_dev, rewritten.iter().copied(), 3);
    snap(&dm, 3);
    write_blocks(&origin_dev, scattered(8, 30, VOLUME_BLOCKS), 4);
    dm.message("reserve_metadata_snap");
    // Our reads go through the loop device's page cache; the pool wrote around it.
    run("blockdev", &["--flushbufs", meta.as_str()]);

    for (l, r) in [(2, 3), (3, 2), (1, 2), (1, 3), (2, 2)] {
        for verbose in [false, true] {
            let mut args = vec![
                "-m".to_string(),
                "--snap1".into(),
                l.to_string(),
                "--snap2".into(),
                r.to_string(),
            ];
            if verbose {
                args.push("--verbose".into());
            }
            args.push(meta.as_str().into());
            let theirs = run(
                "thin_delta",
                &args.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            );
            assert_eq!(
                our_delta(meta.as_str(), l, r, verbose),
                theirs,
                "delta {l}/{r} verbose={verbose}"
            );
        }
    }

    // Between the snapshots exactly the rewritten blocks changed (newly written ones are
    // right-only), and the changes-only walk reads far fewer nodes than the trees hold.
    let mut md =
        ThinMetadata::open_metadata_snapshot(File::open(meta.as_str()).unwrap(), None).unwrap();
    let nodes_in_tree = md.mapping_tree_blocks(2).unwrap().len() as u64;
    let before = md.blocks_read();
    let mut delta = md.delta(2, 3, DeltaMode::ChangesOnly).unwrap();
    let mut changed = BTreeSet::new();
    for run in delta.by_ref() {
        let run = run.unwrap();
        assert!(matches!(
            run.kind,
            DeltaKind::Different | DeltaKind::RightOnly
        ));
        changed.extend(run.begin..run.begin + run.length);
    }
    let read = delta.blocks_read() - before;
    assert_eq!(changed, rewritten);
    eprintln!("changes-only delta read {read} nodes; one tree has {nodes_in_tree}");
    assert!(read < 2 * nodes_in_tree);

    dm.message("release_metadata_snap");
    run("blockdev", &["--flushbufs", meta.as_str()]);
    let mut md = ThinMetadata::open(File::open(meta.as_str()).unwrap()).unwrap();
    assert_eq!(md.superblock().metadata_snap, 0);
    assert!(md.mapped_runs(1).unwrap().all(|r| r.is_ok()));
}
