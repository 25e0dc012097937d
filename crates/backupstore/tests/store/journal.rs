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

/// A backup whose cache is up to date sends one request less than one that must list
/// `packs/` (the listing), whatever the store holds.
async fn an_up_to_date_cache_spares_the_listing(env: Env) {
    let caches = tempfile::tempdir().unwrap();
    let cache = caches.path().join("a");
    let t = host(&env, &cache);
    let img = Image::new(8 * C, 9);
    let full = backup_as(&t, &img, "vol").await;
    let incremental = |name: &'static str, parent: String, seed: u64| {
        img.write(2 * C, &noise(C as usize, seed));
        let mut m = meta("vol", img.size);
        m.backup_name = Some(name.into());
        let (t, img) = (&t, &img);
        async move {
            let before = t.requests();
            t.backup(
                img.file.clone(),
                &[2 * C..3 * C],
                Some(&parent),
                m,
                &NoProgress,
            )
            .await
            .unwrap();
            t.requests() - before
        }
    };
    let cached = incremental("i1", full.backup.backup.clone(), 1).await;
    // Forget the cache's record: the next backup lists.
    let id = marker(&env)["packs_gone"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    std::fs::remove_file(cache.join(id).join("journal.json")).unwrap();
    let listed = incremental("i2", "i1".into(), 2).await;
    assert_eq!(listed, cached + 1, "cached {cached}, listed {listed}");
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
);
