//! One conformance suite, run against a `vfs://` directory and an S3 server (s3s-fs in this
//! process). Every scenario is a function taking an [`Env`]; the `conformance!` macro at the
//! bottom registers each one twice, as `vfs::name` and `s3::name`. Crash, locking and
//! concurrency scenarios are in `conformance_concurrency.rs`.

// The API takes a list of byte ranges; a single whole-volume range is the common full backup.
#![allow(clippy::single_range_in_vec_init)]

#[macro_use]
mod support;

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;

use convoy_backupstore::{BackupError, BackupRef, NoProgress, Progress};
use futures::StreamExt;
use support::*;

const C: u64 = CHUNK as u64;

/// A progress sink that adds everything up.
#[derive(Default)]
struct Counting {
    started: AtomicU64,
    advanced: AtomicU64,
    uploaded: AtomicU64,
    finished: AtomicU64,
}

impl Progress for Counting {
    fn start(&self, total: u64) {
        self.started.fetch_add(total, SeqCst);
    }
    fn advance(&self, bytes: u64) {
        self.advanced.fetch_add(bytes, SeqCst);
    }
    fn uploaded(&self, stored: u64) {
        self.uploaded.fetch_add(stored, SeqCst);
    }
    fn finish(&self) {
        self.finished.fetch_add(1, SeqCst);
    }
}

fn unmapped(mut bytes: Vec<u8>, ranges: &[std::ops::Range<u64>]) -> Vec<u8> {
    for r in ranges {
        bytes[r.start as usize..r.end as usize].fill(0);
    }
    bytes
}

async fn full_and_incremental_round_trip(env: Env) {
    let t = env.target();
    let size = 40 * C + 1000;
    let img = Image::new(size, 1);
    // Chunks 30..32 are "unmapped": not in the ranges, so never read, restored as zeros.
    let ranges = [0..30 * C, 32 * C..size];
    let progress = Counting::default();
    let full = t
        .backup(
            img.file.clone(),
            &ranges,
            None,
            meta("vol1", size),
            &progress,
        )
        .await
        .unwrap();
    let total = 38 * C + 1000;
    assert_eq!(progress.started.load(SeqCst), total);
    assert_eq!(progress.advanced.load(SeqCst), total);
    assert_eq!(full.stats.bytes_read, total);
    assert_eq!(progress.uploaded.load(SeqCst), full.stats.bytes_uploaded);
    assert_eq!(progress.finished.load(SeqCst), 1);
    let expected_full = unmapped(img.bytes(), &[30 * C..32 * C]);
    let zero_chunks = (0..41u64)
        .filter(|i| (i + 1) % 4 == 0 && !(30..32).contains(i))
        .count();
    assert_eq!(full.stats.zero_chunks, zero_chunks as u64);
    assert_eq!(full.stats.chunks_read, 39);
    let (got, allocated) = restore_bytes(&t, &full.backup, size).await.unwrap();
    assert!(got == expected_full, "full restore differs");
    assert!(
        allocated <= size - 10 * C,
        "holes were written: {allocated} bytes allocated of {size}"
    );

    // Incremental: a few changes, the backup is given exactly the changed ranges.
    img.write(5 * C + 100, b"changed");
    img.write(7 * C, &noise(C as usize, 99)); // was a zero chunk
    img.write(9 * C, &vec![0u8; C as usize]); // becomes a zero chunk
    img.write(size - 10, b"tail!");
    let changed = [
        5 * C + 100..5 * C + 107,
        7 * C..8 * C,
        9 * C..10 * C,
        size - 10..size - 5,
    ];
    let inc = t
        .backup(
            img.file.clone(),
            &changed,
            Some(&full.backup.backup),
            meta("vol1", size),
            &NoProgress,
        )
        .await
        .unwrap();
    assert_eq!(inc.stats.chunks_read, 4, "{:?}", inc.stats);
    assert!(inc.stats.carried_chunks > 20, "{:?}", inc.stats);
    assert_eq!(inc.stats.blocks_uploaded, 3, "{:?}", inc.stats);
    let expected_inc = unmapped(img.bytes(), &[30 * C..32 * C]);
    let (got, _) = restore_bytes(&t, &inc.backup, size).await.unwrap();
    assert!(got == expected_inc, "incremental restore differs");
    let (got, _) = restore_bytes(&t, &full.backup, size).await.unwrap();
    assert!(
        got == expected_full,
        "full backup changed by the incremental"
    );
    t.verify(&full.backup, &NoProgress).await.unwrap();
    let v = t.verify(&inc.backup, &NoProgress).await.unwrap();
    assert_eq!(v.volume_size, size);

    // Inspect and list.
    let info = t.inspect(&inc.backup).await.unwrap();
    let json = serde_json::to_value(&info).unwrap();
    let mut keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    let mut want = vec![
        "BackupURL",
        "BackupUUID",
        "DriverName",
        "VolumeUUID",
        "VolumeName",
        "VolumeSize",
        "VolumeCreatedAt",
        "SnapshotUUID",
        "SnapshotName",
        "SnapshotCreatedAt",
        "CreatedTime",
    ];
    want.sort();
    assert_eq!(keys, want);
    assert_eq!(json["VolumeSize"], size.to_string());
    assert_eq!(json["VolumeName"], "vol1");
    assert_eq!(
        info.backup_url,
        format!("{}?backup={}&volume=vol1", env.dest, inc.backup.backup)
    );
    let by_url = convoy_backupstore::inspect_url(&info.backup_url, env.opts.clone())
        .await
        .unwrap();
    assert_eq!(by_url, info);
    let listed = t.list(Some("vol1")).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains_key(&info.backup_url));
    assert!(t.list(Some("other")).await.unwrap().is_empty());

    // A parent of another size is refused with a clear error.
    let err = t
        .backup(
            img.file.clone(),
            &[],
            Some(&full.backup.backup),
            meta("vol1", size - 1000),
            &NoProgress,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::BadParent { .. }), "{err}");
    let err = t
        .backup(
            img.file.clone(),
            &[],
            Some("no-such"),
            meta("vol1", size),
            &NoProgress,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::BadParent { .. }), "{err}");
}

async fn dedup_across_volumes(env: Env) {
    let t = env.target();
    let size = 24 * C;
    let img = Image::new(size, 2);
    let a = full_backup(&t, &img, "vola").await;
    assert!(a.stats.blocks_uploaded > 0);
    let blocks = env.block_files().len();
    assert_eq!(blocks as u64, a.stats.blocks_uploaded);
    let b = full_backup(&t, &img, "volb").await;
    assert_eq!(b.stats.blocks_uploaded, 0, "{:?}", b.stats);
    assert_eq!(
        b.stats.blocks_deduplicated,
        a.stats.blocks_uploaded + a.stats.blocks_deduplicated
    );
    assert_eq!(env.block_files().len(), blocks);
    // Deleting one volume's backup keeps the blocks the other uses.
    t.delete(&a.backup).await.unwrap();
    assert_eq!(env.block_files().len(), blocks);
    let (got, _) = restore_bytes(&t, &b.backup, size).await.unwrap();
    assert!(got == img.bytes());
    let err = t.delete(&a.backup).await.unwrap_err();
    assert!(matches!(err, BackupError::BackupNotFound { .. }), "{err}");
    t.delete(&b.backup).await.unwrap();
    assert_eq!(env.block_files().len(), 0);
    assert_eq!(env.files_under("refs").len(), 0);
}

async fn corrupt_missing_and_truncated(env: Env) {
    let t = env.target();
    let size = 12 * C;
    let img = Image::new(size, 3);
    let done = full_backup(&t, &img, "vol1").await;
    let files = env.block_files();
    assert!(files.len() >= 2);

    // Corrupt one block: restore and verify name the block and its offset.
    let victim = &files[0];
    let original = std::fs::read(victim).unwrap();
    let mut bad = original.clone();
    let n = bad.len();
    bad[n - 1] ^= 0x55;
    std::fs::write(victim, &bad).unwrap();
    let id = victim.file_name().unwrap().to_string_lossy().to_string();
    let err = restore_bytes(&t, &done.backup, size).await.unwrap_err();
    assert!(matches!(err, BackupError::CorruptBlock { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&id) && msg.contains("offset"), "{msg}");
    let err = t.verify(&done.backup, &NoProgress).await.unwrap_err();
    assert!(matches!(err, BackupError::CorruptBlock { .. }), "{err}");
    std::fs::write(victim, &original).unwrap();
    t.verify(&done.backup, &NoProgress).await.unwrap();

    // Missing block.
    std::fs::remove_file(&files[1]).unwrap();
    let id = files[1].file_name().unwrap().to_string_lossy().to_string();
    let err = restore_bytes(&t, &done.backup, size).await.unwrap_err();
    assert!(matches!(err, BackupError::MissingBlock { .. }), "{err}");
    assert!(err.to_string().contains(&id), "{err}");
    assert!(t.verify(&done.backup, &NoProgress).await.is_err());

    // Truncated manifest.
    let again = full_backup(&t, &img, "vol2").await;
    let manifest = env.objects_root.join(format!(
        "volumes/vol2/backups/{}.manifest",
        again.backup.backup
    ));
    let bytes = std::fs::read(&manifest).unwrap();
    std::fs::write(&manifest, &bytes[..bytes.len() - 30]).unwrap();
    let err = restore_bytes(&t, &again.backup, size).await.unwrap_err();
    assert!(matches!(err, BackupError::CorruptManifest { .. }), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");
    let err = t.verify(&again.backup, &NoProgress).await.unwrap_err();
    assert!(matches!(err, BackupError::CorruptManifest { .. }), "{err}");

    // Unknown backup.
    let err = restore_bytes(&t, &BackupRef::new("vol1", "nope").unwrap(), size)
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::BackupNotFound { .. }), "{err}");
}

async fn delete_in_a_chain_keeps_the_rest(env: Env) {
    let t = env.target();
    let size = 16 * C;
    let img = Image::new(size, 8);
    let full = full_backup(&t, &img, "vol1").await;
    let mut chain = vec![(full.backup.clone(), img.bytes())];
    for round in 0..3u64 {
        let off = (round * 5 + 2) * C;
        img.write(off, &noise(C as usize, 500 + round));
        let parent = chain.last().unwrap().0.backup.clone();
        let out = t
            .backup(
                img.file.clone(),
                &[off..off + C],
                Some(&parent),
                meta("vol1", size),
                &NoProgress,
            )
            .await
            .unwrap();
        chain.push((out.backup, img.bytes()));
    }
    // Delete from the middle, then the root, then the tip: the others always restore exactly.
    for victim in [1usize, 0, 3] {
        let (r, _) = chain[victim].clone();
        let stats = t.delete(&r).await.unwrap();
        assert!(victim == 3 || stats.children_reparented == 1, "{stats:?}");
        chain[victim].1.clear();
        for (r, bytes) in chain.iter().filter(|(_, b)| !b.is_empty()) {
            let (got, _) = restore_bytes(&t, r, size).await.unwrap();
            assert!(
                &got == bytes,
                "{} differs after deleting #{victim}",
                r.backup
            );
        }
    }
    // Only backup #2 is left: the store holds exactly its non-zero chunks' blocks.
    let (left, bytes) = chain[2].clone();
    let distinct: std::collections::HashSet<_> = bytes
        .chunks(C as usize)
        .filter(|c| c.iter().any(|b| *b != 0))
        .map(convoy_blockstore::BlockId::of)
        .collect();
    assert_eq!(env.block_files().len(), distinct.len());
    assert_eq!(t.repair().await.unwrap(), Default::default());
    t.delete(&left).await.unwrap();
    assert_eq!(env.block_files().len(), 0);
    assert_eq!(env.files_under("refs").len(), 0);
    assert_eq!(
        env.files_under("volumes").len(),
        0,
        "{:?}",
        env.files_under("volumes")
    );
    if !env.is_s3 {
        let dirs = std::fs::read_dir(env.objects_root.join("refs")).map_or(0, |d| d.count());
        assert_eq!(dirs, 0, "empty reference directories left behind");
    }
}

async fn thousand_backups(env: Env) {
    let seed = env.seeding_target();
    let t = env.target();
    let img = Arc::new(Image::new(2 * C, 6));
    let n = 1010;
    let results: Vec<_> = futures::stream::iter(0..n)
        .map(|i| {
            let (t, img) = (seed.clone(), img.clone());
            async move {
                let mut m = meta("many", img.size);
                m.backup_name = Some(format!("b{i:05}"));
                t.backup(img.file.clone(), &[0..img.size], None, m, &NoProgress)
                    .await
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for r in &results {
        r.as_ref().unwrap();
    }
    assert_eq!(t.list(Some("many")).await.unwrap().len(), n);
    assert_eq!(t.list(None).await.unwrap().len(), n);
    let blocks = env.block_files().len();
    for i in 0..5 {
        t.delete(&BackupRef::new("many", &format!("b{i:05}")).unwrap())
            .await
            .unwrap();
    }
    assert_eq!(
        env.block_files().len(),
        blocks,
        "shared blocks were collected"
    );
    let stats = t.repair().await.unwrap();
    assert_eq!(
        stats,
        Default::default(),
        "repair found something to remove"
    );
    let last = BackupRef::new("many", &format!("b{:05}", n - 1)).unwrap();
    let (got, _) = restore_bytes(&t, &last, img.size).await.unwrap();
    assert!(got == img.bytes());
    assert_eq!(t.list(Some("many")).await.unwrap().len(), n - 5);
}

async fn bad_urls_and_names(env: Env) {
    for bad in ["vfs://relative", "s3://", "ftp://x/y", "vfs:///x?backup=b"] {
        let err = convoy_backupstore::BackupTarget::open(bad, env.opts.clone()).unwrap_err();
        assert!(err.to_string().contains("expected vfs:///path"), "{err}");
    }
    let t = env.target();
    let img = Image::new(C, 7);
    let err = t
        .backup(
            img.file.clone(),
            &[0..C],
            None,
            meta("-bad", C),
            &NoProgress,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::InvalidName { .. }), "{err}");
    let err = t
        .backup(
            img.file.clone(),
            &[0..2 * C],
            None,
            meta("vol1", C),
            &NoProgress,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::InvalidArgument(_)), "{err}");
    let mut m = meta("vol1", C);
    m.backup_name = Some("dup".into());
    t.backup(img.file.clone(), &[0..C], None, m.clone(), &NoProgress)
        .await
        .unwrap();
    let err = t
        .backup(img.file.clone(), &[0..C], None, m, &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::BackupExists { .. }), "{err}");
}

conformance!(
    full_and_incremental_round_trip,
    dedup_across_volumes,
    corrupt_missing_and_truncated,
    delete_in_a_chain_keeps_the_rest,
    thousand_backups,
    bad_urls_and_names,
);
