//! One conformance suite, run against a `vfs://` directory and an S3 server (s3s-fs in this
//! process). Every scenario is a function taking an [`Env`]; the `conformance!` macro at the
//! bottom registers each one twice, as `vfs::name` and `s3::name`. Crash, locking and
//! concurrency scenarios are in `conformance_concurrency.rs`.

// The API takes a list of byte ranges; a single whole-volume range is the common full backup.
#![allow(clippy::single_range_in_vec_init)]

use crate::support;

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
    let blocks = env.pack_files().len();
    assert_eq!(blocks as u64, a.stats.packs_uploaded);
    assert!(a.stats.blocks_uploaded > 1);
    let b = full_backup(&t, &img, "volb").await;
    assert_eq!(b.stats.blocks_uploaded, 0, "{:?}", b.stats);
    assert_eq!(
        b.stats.blocks_deduplicated,
        a.stats.blocks_uploaded + a.stats.blocks_deduplicated
    );
    assert_eq!(env.pack_files().len(), blocks);
    // Deleting one volume's backup keeps the blocks the other uses.
    t.delete(&a.backup).await.unwrap();
    assert_eq!(env.pack_files().len(), blocks);
    let (got, _) = restore_bytes(&t, &b.backup, size).await.unwrap();
    assert!(got == img.bytes());
    let err = t.delete(&a.backup).await.unwrap_err();
    assert!(matches!(err, BackupError::BackupNotFound { .. }), "{err}");
    t.delete(&b.backup).await.unwrap();
    assert_eq!(env.pack_files().len(), 0);
    assert_eq!(env.files_under("refs").len(), 0);
}

async fn corrupt_missing_and_truncated(env: Env) {
    let t = env.target();
    let size = 12 * C;
    let img = Image::new(size, 3);
    let done = full_backup(&t, &img, "vol1").await;
    let files = env.pack_files();
    assert_eq!(files.len(), 1, "12 small chunks fit one pack");

    // Corrupt one byte inside the first block of the pack: restore and verify name the block's
    // offset in the volume.
    let victim = &files[0];
    let original = std::fs::read(victim).unwrap();
    let mut bad = original.clone();
    bad[16 + 12 + 40] ^= 0x55;
    std::fs::write(victim, &bad).unwrap();
    let err = restore_bytes(&t, &done.backup, size).await.unwrap_err();
    assert!(matches!(err, BackupError::CorruptBlock { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("offset 0 "), "{msg}");
    let err = t.verify(&done.backup, &NoProgress).await.unwrap_err();
    assert!(matches!(err, BackupError::CorruptBlock { .. }), "{err}");
    std::fs::write(victim, &original).unwrap();
    t.verify(&done.backup, &NoProgress).await.unwrap();

    // Missing pack.
    std::fs::remove_file(&files[0]).unwrap();
    let err = restore_bytes(&t, &done.backup, size).await.unwrap_err();
    assert!(matches!(err, BackupError::MissingBlock { .. }), "{err}");
    assert!(t.verify(&done.backup, &NoProgress).await.is_err());
    std::fs::write(victim, &original).unwrap();

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
    // Only backup #2 is left, with the packs it uses.
    let (left, _) = chain[2].clone();
    assert!(!env.pack_files().is_empty());
    assert_eq!(t.repair().await.unwrap(), Default::default());
    t.delete(&left).await.unwrap();
    assert_eq!(env.pack_files().len(), 0);
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
    let blocks = env.pack_files().len();
    for i in 0..5 {
        t.delete(&BackupRef::new("many", &format!("b{i:05}")).unwrap())
            .await
            .unwrap();
    }
    // The first backups ran concurrently, each packing the same blocks before any pack was
    // listed: a pack only deleted backups referenced goes, one a remaining backup uses stays.
    let left = env.pack_files().len();
    assert!(left >= 1 && left <= blocks, "{left} packs of {blocks}");
    for i in 5..40 {
        let r = BackupRef::new("many", &format!("b{i:05}")).unwrap();
        t.verify(&r, &NoProgress).await.unwrap();
    }
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

/// A format 1 store and a format 1 manifest are refused with a message naming both versions.
async fn format_1_is_refused(env: Env) {
    let t = env.target();
    let img = Image::new(2 * C, 12);
    let done = full_backup(&t, &img, "v2vol").await;
    let manifest = env.objects_root.join(format!(
        "volumes/v2vol/backups/{}.manifest",
        done.backup.backup
    ));
    let mut bytes = std::fs::read(&manifest).unwrap();
    bytes[..8].copy_from_slice(b"CVMANIF1");
    std::fs::write(&manifest, &bytes).unwrap();
    let err = restore_bytes(&t, &done.backup, 2 * C).await.unwrap_err();
    assert!(
        matches!(err, BackupError::UnsupportedFormat { found: 1, .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("version 1") && msg.contains("version 2"),
        "{msg}"
    );
    std::fs::write(
        env.objects_root.join("convoy-backupstore.json"),
        br#"{"format":"convoy-backupstore","version":1}"#,
    )
    .unwrap();
    let err = t
        .backup(
            img.file.clone(),
            &[0..2 * C],
            None,
            meta("v2vol", 2 * C),
            &NoProgress,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, BackupError::UnsupportedFormat { found: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("format version 2"), "{err}");
}

/// Packs larger than `multipart_above` go as multipart uploads and restore exactly.
async fn large_packs_go_multipart(env: Env) {
    let mut opts = env.opts.clone();
    opts.pack_size = 12 << 20;
    opts.multipart_above = 5 << 20;
    let t = convoy_backupstore::BackupTarget::open(&env.dest, opts).unwrap();
    let size = 256 * C;
    let img = Image::new(size, 13);
    let done = full_backup(&t, &img, "big").await;
    // Half the chunks are random (8 MiB), a quarter text (a few KiB compressed): one pack,
    // above the multipart threshold.
    assert_eq!(done.stats.packs_uploaded, 1, "{:?}", done.stats);
    let packs = env.pack_files();
    assert_eq!(packs.len(), 1);
    assert!(std::fs::metadata(&packs[0]).unwrap().len() > 5 << 20);
    let (got, _) = restore_bytes(&t, &done.backup, size).await.unwrap();
    assert!(got == img.bytes());
    t.delete(&done.backup).await.unwrap();
    assert_eq!(env.pack_files().len(), 0);
}

/// Without a local index cache the store index comes from the packs' tails, read by byte
/// range; a pack smaller than the first tail read (64 KiB) must not trip the server (s3s-fs
/// fails a suffix range longer than the object).
async fn small_packs_without_a_cache(env: Env) {
    let caches = tempfile::tempdir().unwrap();
    let with_cache = |n: &str| {
        let mut o = env.opts.clone();
        o.cache_dir = Some(caches.path().join(n));
        convoy_backupstore::BackupTarget::open(&env.dest, o).unwrap()
    };
    let img = Image::new(C, 21);
    let first = full_backup(&with_cache("a"), &img, "small").await;
    let packs = env.pack_files();
    assert_eq!(packs.len(), 1);
    assert!(std::fs::metadata(&packs[0]).unwrap().len() < 64 << 10);
    // A second backup of the same data from an empty cache finds the block stored.
    let again = full_backup(&with_cache("b"), &img, "small2").await;
    assert_eq!(again.stats.packs_uploaded, 0, "{:?}", again.stats);
    let (got, _) = restore_bytes(&with_cache("c"), &first.backup, C)
        .await
        .unwrap();
    assert!(got == img.bytes());
}

conformance!(
    small_packs_without_a_cache,
    large_packs_go_multipart,
    format_1_is_refused,
    full_and_incremental_round_trip,
    dedup_across_volumes,
    corrupt_missing_and_truncated,
    delete_in_a_chain_keeps_the_rest,
    thousand_backups,
    bad_urls_and_names,
);
