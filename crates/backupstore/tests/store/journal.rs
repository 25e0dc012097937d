//! The store index cache and the pack deletion journal in the store marker: a backup uses its
//! host's cache without listing `packs/`, and never a pack that a delete or compaction on
//! another host removed meanwhile; a cache the journal cannot account for is rebuilt from a
//! listing; a store whose marker predates the journal gets one. Each case runs on `vfs://`
//! (with a cache directory, which `vfs://` has only when asked) and on S3.

// The API takes a list of byte ranges; one range is the common case.
#![allow(clippy::single_range_in_vec_init)]

use crate::support;

use std::path::{Path, PathBuf};

use convoy_backupstore::{BackupOutcome, BackupTarget, CompactOptions, NoProgress};
use support::*;

const C: u64 = CHUNK as u64;

/// A target with its own index cache: one host.
fn host(env: &Env, cache: &Path) -> BackupTarget {
    let mut o = env.opts.clone();
    o.cache_dir = Some(cache.to_path_buf());
    BackupTarget::open(&env.dest, o).unwrap()
}

fn marker_path(env: &Env) -> PathBuf {
    env.objects_root.join("convoy-backupstore.json")
}

fn marker(env: &Env) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(marker_path(env)).unwrap()).unwrap()
}

/// The cache record of the store's current journal: (journal seq, listed at).
fn cache_record(env: &Env, cache: &Path) -> (u64, u64) {
    let id = marker(env)["packs_gone"]["id"].as_str().unwrap().to_owned();
    let st: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cache.join(id).join("journal.json")).unwrap())
            .unwrap();
    (
        st["seq"].as_u64().unwrap(),
        st["listed_at"].as_u64().unwrap(),
    )
}

async fn backup_as(t: &BackupTarget, img: &Image, volume: &str) -> BackupOutcome {
    let out = full_backup(t, img, volume).await;
    let (got, _) = restore_bytes(t, &out.backup, img.size).await.unwrap();
    assert!(got == img.bytes(), "{volume} restores");
    out
}

/// Host A backs up; host B deletes that backup (its packs go) and compacts; host A then backs
/// up the same data again: it must store it again, not point at the packs that went, and it
/// learns what went from the journal, without listing `packs/`.
async fn deletions_elsewhere_reach_the_cache_through_the_journal(env: Env) {
    let caches = tempfile::tempdir().unwrap();
    let (a, b) = (
        host(&env, &caches.path().join("a")),
        host(&env, &caches.path().join("b")),
    );
    let img = Image::new(16 * C, 5);
    let first = backup_as(&a, &img, "one").await;
    assert!(first.stats.packs_uploaded > 0);
    let (seq0, listed0) = cache_record(&env, &caches.path().join("a"));
    assert_eq!(seq0, 0);
    // A second backup of other data, so that compaction has something to keep.
    let other = Image::new(16 * C, 6);
    let kept = backup_as(&a, &other, "kept").await;
    b.delete(&first.backup).await.unwrap();
    b.compact(
        &CompactOptions {
            threshold: 0.99,
            ..CompactOptions::default()
        },
        &NoProgress,
    )
    .await
    .unwrap();
    let journal = &marker(&env)["packs_gone"];
    assert!(journal["seq"].as_u64().unwrap() >= 1, "{journal}");
    let again = backup_as(&a, &img, "two").await;
    assert_eq!(
        again.stats.blocks_deduplicated, 0,
        "nothing of the deleted backup may be reused: {:?}",
        again.stats
    );
    assert!(again.stats.blocks_uploaded > 0);
    let (seq1, listed1) = cache_record(&env, &caches.path().join("a"));
    assert!(seq1 >= 1, "the cache caught up with the journal");
    assert_eq!(listed1, listed0, "from the journal, not a new listing");
    // What stayed is still found: a backup of the kept data stores nothing new.
    let dup = backup_as(&a, &other, "kept-again").await;
    assert_eq!(dup.stats.blocks_uploaded, 0, "{:?}", dup.stats);
    let (got, _) = restore_bytes(&b, &kept.backup, other.size).await.unwrap();
    assert!(got == other.bytes());
}

/// A backup whose cache is up to date takes the index from it, without listing `packs/`
/// (the cache's record keeps the time of its last listing); one whose cache has no record
/// lists.
async fn an_up_to_date_cache_spares_the_listing(env: Env) {
    let caches = tempfile::tempdir().unwrap();
    let cache = caches.path().join("a");
    let t = host(&env, &cache);
    let img = Image::new(8 * C, 9);
    let full = backup_as(&t, &img, "vol").await;
    let (_, listed_full) = cache_record(&env, &cache);
    let incremental = |name: &'static str, parent: String, seed: u64| {
        img.write(2 * C, &noise(C as usize, seed));
        let mut m = meta("vol", img.size);
        m.backup_name = Some(name.into());
        let (t, img) = (&t, &img);
        async move {
            // A listing now would be recorded with a later second.
            tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
            let out = t
                .backup(
                    img.file.clone(),
                    &[2 * C..3 * C],
                    Some(&parent),
                    m,
                    &NoProgress,
                )
                .await
                .unwrap();
            let (got, _) = restore_bytes(t, &out.backup, img.size).await.unwrap();
            assert!(got == img.bytes(), "{name} restores");
        }
    };
    incremental("i1", full.backup.backup.clone(), 1).await;
    assert_eq!(cache_record(&env, &cache).1, listed_full, "no listing");
    // Forget the cache's record: the next backup lists.
    let id = marker(&env)["packs_gone"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    std::fs::remove_file(cache.join(id).join("journal.json")).unwrap();
    incremental("i2", "i1".into(), 2).await;
    assert!(cache_record(&env, &cache).1 > listed_full, "a new listing");
}

/// A cache the journal cannot account for (here: the journal was replaced, as a store made
/// again at the same URL has another) is not trusted: the index comes from a listing, so a
/// pack that went without a record is not reused. A marker without a journal (a store made
/// before it existed) gets one from the next backup.
async fn a_cache_of_another_journal_is_rebuilt(env: Env) {
    let caches = tempfile::tempdir().unwrap();
    let t = host(&env, &caches.path().join("a"));
    let img = Image::new(8 * C, 3);
    backup_as(&t, &img, "one").await;
    // A pack removed behind the store's back, and the journal gone from the marker.
    for p in env.pack_files() {
        std::fs::remove_file(p).unwrap();
    }
    let mut m = marker(&env);
    let old_id = m["packs_gone"]["id"].as_str().unwrap().to_owned();
    m.as_object_mut().unwrap().remove("packs_gone");
    std::fs::write(marker_path(&env), serde_json::to_vec(&m).unwrap()).unwrap();
    let again = backup_as(&t, &img, "two").await;
    assert_eq!(again.stats.blocks_deduplicated, 0, "{:?}", again.stats);
    let new_id = marker(&env)["packs_gone"]["id"]
        .as_str()
        .expect("the backup gave the marker a journal")
        .to_owned();
    assert_ne!(new_id, old_id);
    assert!(caches.path().join("a").join(&new_id).is_dir());
    // The marker still says what it said.
    let m = marker(&env);
    assert_eq!(m["version"], 2);
    assert_eq!(m["cipher"], "none");
}

conformance!(
    deletions_elsewhere_reach_the_cache_through_the_journal,
    an_up_to_date_cache_spares_the_listing,
    a_cache_of_another_journal_is_rebuilt,
    a_delete_between_the_first_reads_and_the_lock_is_caught,
    a_pack_collected_before_the_lock_is_caught,
);

/// Pack object files under `root` (a store's folder).
fn packs_in(root: &Path) -> usize {
    fn count(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .fold(0, |n, e| {
                let p = e.path();
                match p.is_dir() {
                    true => n + count(&p),
                    false => n + usize::from(p.file_name().is_some_and(|f| f.len() == 64)),
                }
            })
    }
    count(&root.join("packs"))
}

/// A backup sends its packs before its lock is held (only their reference records wait for
/// it). A repair on another host that runs in that window, holding the exclusive lock the
/// backup waits for, takes such a pack for garbage and deletes it: the backup finds it out
/// under its lock, before publishing (the pack is in the marker's deletion journal), runs
/// again, and publishes a backup whose every block is there.
async fn a_pack_collected_before_the_lock_is_caught(env: Env) {
    let caches = tempfile::tempdir().unwrap();
    let a = host(&env, &caches.path().join("a"));
    let b = std::sync::Arc::new(host(&env, &caches.path().join("b")));
    let img = Image::new(8 * C, 4);
    let one = backup_as(&a, &img, "one").await;
    img.write(2 * C, &noise(C as usize, 91));
    let before = packs_in(&env.objects_root);
    let faults = convoy_backupstore::testing::Faults::new();
    let (b2, root) = (b.clone(), env.objects_root.clone());
    faults.before_first_lock(async move {
        // The incremental's pack is stored before its lock record is written.
        let started = std::time::Instant::now();
        while packs_in(&root) == before {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "no pack was sent before the lock"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let stats = b2.repair().await.unwrap();
        assert_eq!(stats.packs_removed, 1, "{stats:?}");
    });
    let two = a
        .with_faults(faults)
        .backup(
            img.file.clone(),
            &[2 * C..3 * C],
            Some(&one.backup.backup),
            meta("one", img.size),
            &NoProgress,
        )
        .await
        .unwrap();
    a.settle().await;
    let (got, _) = restore_bytes(&a, &two.backup, img.size).await.unwrap();
    assert!(
        got == img.bytes(),
        "the backup made over the repair restores"
    );
    a.verify(&two.backup, &NoProgress).await.unwrap();
    assert_eq!(a.repair().await.unwrap(), Default::default());
    for done in [&two, &one] {
        a.delete(&done.backup).await.unwrap();
    }
    assert_eq!(packs_in(&env.objects_root), 0, "packs left");
    assert_eq!(
        env.files_under("refs"),
        Vec::<PathBuf>::new(),
        "reference records left once every backup is deleted"
    );
}

/// Between a backup's first reads (sent beside its lock's write) and its lock, a delete on
/// another host removes the packs the backup's cache would reuse: the backup finds it out
/// before publishing (the journal, read again under the lock), runs again, and stores the data
/// anew. And an incremental whose parent is deleted in that window is refused as such, so
/// that the caller takes a full backup, instead of carrying entries of a backup that is gone.
/// Neither leaves reference records behind: once every backup is deleted, none is left (the
/// first run's records of the packs that went stayed under the published backup's name, and
/// its delete never visited them: seen in the reliability suite as references of deleted
/// backups).
async fn a_delete_between_the_first_reads_and_the_lock_is_caught(env: Env) {
    let caches = tempfile::tempdir().unwrap();
    let a = host(&env, &caches.path().join("a"));
    let b = std::sync::Arc::new(host(&env, &caches.path().join("b")));
    let img = Image::new(8 * C, 4);
    let one = backup_as(&a, &img, "one").await;
    // Another backup, so that the cache is fresh and the store not empty.
    let keep = backup_as(&a, &Image::new(8 * C, 8), "keep").await;
    let faults = convoy_backupstore::testing::Faults::new();
    let (b2, gone) = (b.clone(), one.backup.clone());
    faults.before_first_lock(async move {
        // The first reads are answered by now (a local server).
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        b2.delete(&gone).await.unwrap();
    });
    let two = full_backup(&a.with_faults(faults), &img, "two").await;
    let (got, _) = restore_bytes(&a, &two.backup, img.size).await.unwrap();
    assert!(
        got == img.bytes(),
        "the backup made over the delete restores"
    );
    assert_eq!(two.stats.blocks_deduplicated, 0, "{:?}", two.stats);
    a.verify(&two.backup, &NoProgress).await.unwrap();

    // The parent deleted in the window.
    let base = backup_as(&a, &img, "three").await;
    img.write(0, &noise(C as usize, 77));
    let faults = convoy_backupstore::testing::Faults::new();
    let (b2, gone) = (b.clone(), base.backup.clone());
    faults.before_first_lock(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        b2.delete(&gone).await.unwrap();
    });
    let err = a
        .with_faults(faults)
        .backup(
            img.file.clone(),
            &[0..C],
            Some(&base.backup.backup),
            meta("three", img.size),
            &NoProgress,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, convoy_backupstore::BackupError::BadParent { .. }),
        "{err}"
    );
    let listed = a.list(Some("three")).await.unwrap();
    assert!(listed.is_empty(), "nothing published: {listed:?}");

    for done in [&two, &keep] {
        a.delete(&done.backup).await.unwrap();
    }
    assert_eq!(
        env.files_under("refs"),
        Vec::<PathBuf>::new(),
        "reference records left once every backup is deleted"
    );
}
