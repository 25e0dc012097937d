//! One conformance suite, run against a `vfs://` directory and an S3 server (s3s-fs in this
//! process). Every scenario is a function taking an [`Env`]; the macro at the bottom
//! registers each one twice, as `vfs::name` and `s3::name`.

// The API takes a list of byte ranges; a single whole-volume range is the common full backup.
#![allow(clippy::single_range_in_vec_init)]

mod support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use convoy_backupstore::{BackupError, BackupRef, BlockSource, NoProgress};
use futures::StreamExt;
use support::*;

const C: u64 = CHUNK as u64;

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
    let full = t
        .backup(
            img.file.clone(),
            &ranges,
            None,
            meta("vol1", size),
            &NoProgress,
        )
        .await
        .unwrap();
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

/// A source that fails (or stalls) at one offset: a crash between block uploads and the
/// manifest.
struct Failing {
    inner: Arc<std::fs::File>,
    at: u64,
    stall: bool,
}

impl BlockSource for Failing {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        if offset == self.at {
            if self.stall {
                std::thread::sleep(Duration::from_secs(2));
            }
            return Err(std::io::Error::other("injected read failure"));
        }
        self.inner.read_at(offset, buf)
    }
}

async fn crash_before_manifest(env: Env) {
    let mut opts = env.opts.clone();
    opts.lock.wait = Duration::from_secs(3);
    let t = convoy_backupstore::BackupTarget::open(&env.dest, opts).unwrap();
    let size = 40 * C;
    let img = Image::new(size, 4);
    let failing = Arc::new(Failing {
        inner: img.file.clone(),
        at: 39 * C,
        stall: false,
    });
    let err = t
        .backup(failing, &[0..size], None, meta("vol1", size), &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::SourceRead { .. }), "{err}");
    assert!(
        !env.block_files().is_empty(),
        "no block was uploaded before the failure"
    );
    assert!(
        t.list(None).await.unwrap().is_empty(),
        "a failed backup is visible"
    );

    // A backup cancelled mid-way (its task dropped): nothing visible, its lock goes away.
    let stalling = Arc::new(Failing {
        inner: img.file.clone(),
        at: 20 * C,
        stall: true,
    });
    let cancelled = tokio::time::timeout(
        Duration::from_millis(300),
        t.backup(stalling, &[0..size], None, meta("vol1", size), &NoProgress),
    )
    .await;
    assert!(cancelled.is_err(), "the stalled backup should not finish");
    assert!(t.list(None).await.unwrap().is_empty());

    // The next backup is fine, and a delete is not blocked by the dead backups' locks.
    let ok = full_backup(&t, &img, "vol1").await;
    let (got, _) = restore_bytes(&t, &ok.backup, size).await.unwrap();
    assert!(got == img.bytes());
    let other = full_backup(&t, &img, "vol2").await;
    t.delete(&other.backup).await.unwrap();

    // Repair removes the crashed backups' references; then deleting the last backup leaves
    // nothing behind.
    let stats = t.repair().await.unwrap();
    assert!(stats.refs_removed > 0, "{stats:?}");
    t.verify(&ok.backup, &NoProgress).await.unwrap();
    t.delete(&ok.backup).await.unwrap();
    assert_eq!(env.block_files().len(), 0);
    assert_eq!(env.files_under("refs").len(), 0);
    assert_eq!(env.files_under("trash").len(), 0);
}

/// Backups made and the image content each must restore to, oldest first.
type Made = VecDeque<(BackupRef, Vec<u8>)>;

async fn concurrent_backup_and_delete(env: Env) {
    let t = env.target();
    let size = 16 * C;
    let img = Arc::new(Image::new(size, 5));
    let made: Arc<Mutex<Made>> = Default::default();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let backups = {
        let (t, img, made, done) = (t.clone(), img.clone(), made.clone(), done.clone());
        tokio::spawn(async move {
            let mut parent: Option<String> = None;
            for round in 0..12u64 {
                let a = (round * 7) % 16;
                let b = (round * 3 + 1) % 16;
                img.write(a * C, &noise(C as usize, 1000 + round));
                img.write(b * C + 5, &round.to_le_bytes());
                let changed = [a * C..(a + 1) * C, b * C..(b + 1) * C];
                let all = [0..size];
                // The first backup is a full one: every mapped range.
                let ranges = if parent.is_some() {
                    &changed[..]
                } else {
                    &all[..]
                };
                let m = meta("vol1", size);
                let out = match t
                    .backup(
                        img.file.clone(),
                        ranges,
                        parent.as_deref(),
                        m.clone(),
                        &NoProgress,
                    )
                    .await
                {
                    Ok(o) => o,
                    // The parent was deleted meanwhile: take a full backup, as convoy-core does.
                    Err(BackupError::BadParent { .. }) => t
                        .backup(img.file.clone(), &[0..size], None, m, &NoProgress)
                        .await
                        .unwrap(),
                    Err(e) => panic!("backup failed: {e}"),
                };
                parent = Some(out.backup.backup.clone());
                made.lock().unwrap().push_back((out.backup, img.bytes()));
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    let deletes = {
        let (t, made, done) = (t.clone(), made.clone(), done.clone());
        tokio::spawn(async move {
            let mut deleted = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let victim = {
                    let mut q = made.lock().unwrap();
                    if q.len() > 2 {
                        q.pop_front()
                    } else {
                        None
                    }
                };
                match victim {
                    Some((r, _)) => {
                        t.delete(&r).await.unwrap();
                        deleted += 1;
                    }
                    None => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
            deleted
        })
    };
    backups.await.unwrap();
    let deleted = deletes.await.unwrap();
    assert!(deleted > 0);
    let remaining: Vec<_> = made.lock().unwrap().drain(..).collect();
    assert_eq!(remaining.len() + deleted, 12);
    for (r, bytes) in &remaining {
        t.verify(r, &NoProgress).await.unwrap();
        let (got, _) = restore_bytes(&t, r, size).await.unwrap();
        let differing: Vec<usize> = (0..got.len() / C as usize)
            .filter(|&i| {
                got[i * C as usize..(i + 1) * C as usize]
                    != bytes[i * C as usize..(i + 1) * C as usize]
            })
            .collect();
        assert!(
            differing.is_empty(),
            "backup {} restores wrong data in chunks {differing:?}",
            r.backup
        );
    }
    for (r, _) in &remaining {
        t.delete(r).await.unwrap();
    }
    assert_eq!(env.block_files().len(), 0, "orphaned blocks");
    assert_eq!(env.files_under("refs").len(), 0, "orphaned references");
    assert!(t.list(None).await.unwrap().is_empty());
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

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod vfs {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::support::Env::local().await).await
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::support::Env::s3().await).await
                }
            )*
        }
    };
}

conformance!(
    full_and_incremental_round_trip,
    dedup_across_volumes,
    corrupt_missing_and_truncated,
    crash_before_manifest,
    concurrent_backup_and_delete,
    thousand_backups,
    bad_urls_and_names,
    delete_in_a_chain_keeps_the_rest,
);
