//! Compaction stopped at every write, on `vfs://` and on S3 (s3s-fs in this process): the
//! store's writes fail from the n-th on (as if the process died just before it), for every n a
//! compaction makes; then a new compaction (or `repair`, then a compaction) runs, and every
//! backup restores bit-exact, `repair` finds nothing left, and a further compaction has nothing
//! to do. The real `kill -9` of `convoy backup compact` is the reliability suite's
//! `rel_host_compact_killed` (`tests/tests/rel_compact.rs`).

#![allow(clippy::single_range_in_vec_init)]

use crate::support;

use convoy_backupstore::testing::Faults;
use convoy_backupstore::{BackupTarget, CompactOptions, NoProgress};
use support::compaction::*;
use support::*;

fn opts() -> CompactOptions {
    CompactOptions {
        threshold: 0.9,
        ..Default::default()
    }
}

/// A store with several packs to rewrite, one of them into a pack that already holds moved
/// blocks (so the crash points include updating forwarding objects). Returns the kept backups.
async fn prepare(t: &BackupTarget) -> Kept {
    let mut kept = sharing_store(t).await;
    t.compact(&opts(), &NoProgress).await.unwrap();
    // The first run moved va's latest blocks, which vc shares in part; deleting va leaves the
    // pack they were moved to partly used.
    let (va, _) = kept.remove(0);
    t.delete(&va).await.unwrap();
    let img = Image::new(CHUNKS * CHUNK as u64, 23);
    let full = full_backup(t, &img, "ve").await.backup;
    let changed = scribble(&img, &random_chunks(23)[..10], 9);
    let inc = incremental(t, &img, "ve", &full, &changed).await;
    t.delete(&full).await.unwrap();
    kept.push((inc, img.bytes()));
    kept
}

async fn crash_scenario(env: &Env, t: &BackupTarget) {
    let kept = prepare(t).await;
    let template = tempfile::tempdir().unwrap();
    copy_tree(&env.objects_root, template.path());
    // A clean run counts the writes.
    let counter = Faults::new();
    let s = t
        .with_faults(counter.clone())
        .compact(&opts(), &NoProgress)
        .await
        .unwrap();
    eprintln!("clean run: {s:?}, {} writes", counter.writes());
    assert!(s.packs_rewritten >= 2 && s.forwards_written >= 2, "{s:?}");
    assert!(s.forwards_updated >= 1, "{s:?}");
    let writes = counter.writes();
    check_all(t, &kept, "after the clean run").await;
    check_forwards(env, "after the clean run");
    let mut finished_by_repair = 0;
    for n in 0..writes {
        reset_to(env, template.path());
        let faults = Faults::new();
        faults.fail_from(n);
        let err = t
            .with_faults(faults.clone())
            .compact(&opts(), &NoProgress)
            .await;
        assert!(
            err.is_err(),
            "write {n} of {writes} failed, yet the compaction succeeded"
        );
        assert!(faults.failed() >= 1);
        // Readable right after the crash, before anything is cleaned.
        if n % 4 == 0 {
            check_all(t, &kept, &format!("right after a crash at write {n}")).await;
        }
        if n % 2 == 1 {
            t.repair().await.unwrap();
            finished_by_repair += 1;
            check_all(t, &kept, &format!("after repair of a crash at write {n}")).await;
        }
        let s = t.compact(&opts(), &NoProgress).await.unwrap();
        check_all(
            t,
            &kept,
            &format!("after recompacting a crash at write {n}"),
        )
        .await;
        check_forwards(env, &format!("after recompacting a crash at write {n}"));
        let r = t.repair().await.unwrap();
        assert_eq!(r, Default::default(), "crash at write {n}: {s:?}");
        let again = t.compact(&opts(), &NoProgress).await.unwrap();
        assert_eq!(
            (
                again.packs_rewritten,
                again.packs_written,
                again.garbage_removed
            ),
            (0, 0, 0),
            "crash at write {n}: a third run still had work: {again:?}"
        );
        if n == writes / 2 {
            delete_all_leaves_nothing(env, t, &kept).await;
        }
    }
    eprintln!("{writes} crash points, {finished_by_repair} repaired first");
}

async fn compaction_crash_at_every_write(env: Env) {
    crash_scenario(&env, &env.target()).await;
}

async fn encrypted_compaction_crash_at_every_write(env: Env) {
    let t = encrypted_target(&env).await;
    crash_scenario(&env, &t).await;
}

conformance!(
    compaction_crash_at_every_write,
    encrypted_compaction_crash_at_every_write,
);
