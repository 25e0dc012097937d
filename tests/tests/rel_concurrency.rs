//! Reliability suite, concurrency (issue 8): many calls at once against one daemon.
//!
//! * `rel_vm_parallel_sequences`: 100 (quick 16) parallel create + snapshot + delete sequences
//!   on a real dm-thin pool; afterwards no orphan thin id, record, device or mount.
//! * `rel_vm_backup_latency`: a backup and a restore of a big volume run while other volumes are
//!   created, mounted, snapshotted and deleted; the latency of every unrelated call is recorded
//!   (`max_blocked_ms` is the worst delay beyond the same call's worst time without a backup).
//! * `rel_host_backup_delete_one_store`: backups of two volumes that share blocks run while
//!   older backups are deleted from the same store, many rounds; every remaining backup must
//!   restore bit-exact and no block may be orphaned.
//! * `rel_host_plugin_mount_storm`: parallel Docker plugin Mount/Unmount calls with random IDs;
//!   a volume stays mounted while any ID holds it and is unmounted when the last one leaves.
//!   This and `rel_host_shared_names_storm` are in `concurrency/storms.rs`.

mod cli_support;
mod rel_concurrency_rig;
mod rel_support;
#[path = "concurrency/storms.rs"]
mod storms;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use cli_support::TestDaemon;
use convoy_api::ApiError;
use rel_concurrency_rig::*;
use rel_support::{by_scale, rng, Figure};

const SUITE: &str = "concurrency";

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_vm_parallel_sequences() {
    let n: usize = by_scale(16, 100);
    let mut rng = rng("parallel-sequences");
    let dm = DmDaemon::start("ps", 8 << 30, "32M");
    let mut figure = Figure::new(
        SUITE,
        format!("{n} parallel create+snapshot+delete sequences"),
    );
    // Each sequence's plan, drawn up front so the run repeats: size, whether it mounts and
    // writes, which other volume it inspects.
    let plans: Vec<(u64, bool, usize)> = (0..n)
        .map(|_| ((rng.u64(1..=4) * 16) << 20, rng.bool(), rng.usize(..n)))
        .collect();
    let tag = dm.tag.clone();
    let socket = dm.d.socket.clone();
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let calls = Arc::new(Mutex::new(0u64));
    let threads: Vec<_> = plans
        .into_iter()
        .enumerate()
        .map(|(i, (size, write, other))| {
            let (tag, socket) = (tag.clone(), socket.clone());
            let (errors, calls) = (errors.clone(), calls.clone());
            std::thread::spawn(move || {
                let api = Api::new(&socket);
                let vol = format!("{tag}-v{i}");
                let (s1, s2) = (format!("{tag}-v{i}-s1"), format!("{tag}-v{i}-s2"));
                let mut count = 0u64;
                let mut step = |what: &str, object: &str, r: Result<(), ApiError>| {
                    count += 1;
                    if let Err(e) = r {
                        assert_clear(&e, object, what);
                        errors.lock().unwrap().push(format!("{what} {object}: {e}"));
                        return false;
                    }
                    true
                };
                let created = api.create(&vol, Some(size), "").map(|_| ());
                if !step("create", &vol, created) {
                    return;
                }
                if write {
                    let mounted = api.mount(&vol);
                    let ok = match mounted {
                        Ok(v) => std::fs::write(Path::new(&v.mount_point).join("f"), &vol).is_ok(),
                        Err(e) => step("mount", &vol, Err(e)),
                    };
                    step("write", &vol, Ok(()));
                    assert!(ok, "write into {vol} failed");
                    let r = api.run(api.c.umount_volume(&vol));
                    step("umount", &vol, r);
                }
                let r = api.snapshot(&vol, &s1).map(|_| ());
                step("snapshot", &s1, r);
                // Another sequence's volume: found or not, never a vague answer.
                let other = format!("{tag}-v{other}");
                if let Err(e) = api.run(api.c.inspect_volume(&other)) {
                    assert_clear(&e, &other, "inspect");
                }
                let r = api.snapshot(&vol, &s2).map(|_| ());
                step("snapshot", &s2, r);
                let r = api.run(api.c.delete_snapshot(&s1));
                step("snapshot delete", &s1, r);
                let r = api.delete(&vol);
                step("delete", &vol, r);
                *calls.lock().unwrap() += count;
            })
        })
        .collect();
    // Meanwhile the list must stay consistent: every entry is whole and named by its key.
    let api = Api::new(&socket);
    let mut lists = 0;
    while threads.iter().any(|t| !t.is_finished()) {
        let list = api
            .run(api.c.list_volumes(""))
            .expect("list during the storm");
        for (key, v) in &list {
            assert_eq!(key, &v.name, "list entry {key} names {}", v.name);
            assert!(!v.created_time.is_empty(), "half-made volume listed: {v:?}");
        }
        lists += 1;
    }
    for t in threads {
        t.join().expect("a sequence panicked");
    }
    let errors = errors.lock().unwrap().clone();
    figure.trials = n as u64;
    figure.checks += lists;
    figure.set("calls", *calls.lock().unwrap());
    figure.set("clear_errors", errors.len() as u64);
    // Leftovers of failed sequences are removed before the invariant checks.
    let leftovers: Vec<String> =
        dm.d.json(&["list"])
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
    for name in &leftovers {
        dm.d.ok(&["delete", name]);
    }
    figure.set("leftovers_deleted", leftovers.len() as u64);
    let emptied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut f = figure.clone();
        dm.assert_empty(&mut f, "after the storm");
        f
    }));
    if let Ok(f) = &emptied {
        figure = f.clone();
    }
    figure.emit();
    if let Err(panic) = emptied {
        std::panic::resume_unwind(panic);
    }
    assert!(
        errors.is_empty(),
        "calls failed (clearly) although every sequence had its own names: {errors:?}"
    );
}

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_vm_backup_latency() {
    let data_mib: usize = by_scale(64, 384);
    let baseline_rounds = by_scale(2, 8);
    let mut rng = rng("backup-latency");
    let dm = DmDaemon::start("bl", 8 << 30, "32M");
    let mut figure = Figure::new(
        SUITE,
        "calls during a backup and a restore of another volume",
    );
    let tag = dm.tag.clone();
    let api = Api::new(&dm.d.socket);
    let big = format!("{tag}-big");
    api.create(&big, Some(1 << 30), "").unwrap();
    let at = api.mount(&big).unwrap().mount_point;
    fill(&Path::new(&at).join("data"), data_mib << 20, &mut rng);
    api.run(api.c.umount_volume(&big)).unwrap();
    let snap = format!("{big}-s");
    api.snapshot(&big, &snap).unwrap();
    let dest = format!("vfs://{}", dm.d.dir.path().join("store").display());

    // The same calls without a backup running.
    let mut baseline = Latencies::default();
    for i in 0..baseline_rounds {
        unrelated_round(&api, &format!("{tag}-b{i}"), &mut baseline);
    }

    // A backup, then a restore of it, in the background; unrelated rounds until both are done.
    let socket = dm.d.socket.clone();
    let (snap2, dest2, restored) = (snap.clone(), dest.clone(), format!("{tag}-restored"));
    let phase = Arc::new(std::sync::atomic::AtomicU8::new(0));
    let in_restore = phase.clone();
    let background = std::thread::spawn(move || {
        let api = Api::new(&socket);
        let (url, backup_ms) = timed(|| api.backup(&snap2, &dest2));
        let url = url.unwrap_or_else(|e| panic!("backup {snap2}: {e}"));
        in_restore.store(1, std::sync::atomic::Ordering::SeqCst);
        let (r, restore_ms) = timed(|| api.create(&restored, None, &url));
        r.unwrap_or_else(|e| panic!("restore {url}: {e}"));
        (backup_ms, restore_ms)
    });
    // Calls that touch only the daemon's in-memory state (a global lock held by the backup
    // would show here first), made every 50 ms by a prober, beside the device rounds.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (socket, stop, probe) = (dm.d.socket.clone(), done.clone(), format!("{tag}-b0"));
    let prober = std::thread::spawn(move || {
        let api = Api::new(&socket);
        api.create(&probe, None, "").unwrap();
        let mut lat = Latencies::default();
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let (r, ms) = timed(|| api.run(api.c.inspect_volume(&probe)));
            r.unwrap_or_else(|e| panic!("inspect {probe}: {e}"));
            lat.add("probe inspect", ms);
            let (r, ms) = timed(|| api.run(api.c.list_volumes("")));
            r.unwrap_or_else(|e| panic!("list: {e}"));
            lat.add("probe list", ms);
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        api.delete(&probe).unwrap();
        lat
    });
    let mut loaded = Latencies::default();
    let mut by_phase = [Latencies::default(), Latencies::default()];
    let mut rounds = 0;
    while !background.is_finished() {
        let p = usize::from(phase.load(std::sync::atomic::Ordering::SeqCst));
        let mut lat = Latencies::default();
        unrelated_round(&api, &format!("{tag}-u{rounds}"), &mut lat);
        for (kind, v) in lat.0 {
            for ms in v {
                loaded.add(kind, ms);
                by_phase[p].add(kind, ms);
            }
        }
        rounds += 1;
    }
    // The worst delay beyond the same call's worst time without a backup, by phase.
    let excess = |lat: &Latencies| {
        lat.0
            .iter()
            .flat_map(|(k, v)| v.iter().map(|&ms| ms.saturating_sub(baseline.max(k))))
            .max()
            .unwrap_or(0)
    };
    let (during_backup, during_restore) = (excess(&by_phase[0]), excess(&by_phase[1]));
    let (backup_ms, restore_ms) = background.join().expect("backup or restore failed");
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let probed = prober.join().expect("the prober failed");
    let probe_all = probed.all_sorted();
    let probe_max = probe_all.last().copied().unwrap_or(0);
    loaded.0.extend(probed.0);

    // The restored volume holds the data bit-exact.
    let restored = format!("{tag}-restored");
    let at2 = api.mount(&restored).unwrap().mount_point;
    api.mount(&big).unwrap();
    let same = Command::new("cmp")
        .arg(format!("{at}/data"))
        .arg(format!("{at2}/data"))
        .status()
        .is_ok_and(|s| s.success());
    if same {
        figure.checks += 1;
    } else {
        figure.lost += 1;
    }

    let mut blocked = 0u64;
    let mut worst = ("", 0u64);
    for (kind, v) in &loaded.0 {
        for &ms in v {
            // Probe calls are compared with nothing: they do no device work at all.
            let excess = ms.saturating_sub(baseline.max(kind));
            if excess > worst.1 {
                worst = (kind, excess);
            }
            if excess > 1000 {
                blocked += 1;
            }
        }
    }
    let all = loaded.all_sorted();
    figure.trials = rounds;
    figure.checks += all.len() as u64;
    figure
        .set("data_mib", data_mib as u64)
        .set("backup_ms", backup_ms)
        .set("restore_ms", restore_ms)
        .set("calls_during", all.len() as u64)
        .set("p50_ms", percentile(&all, 50))
        .set("p99_ms", percentile(&all, 99))
        .set("max_ms", all.last().copied().unwrap_or(0))
        .set(
            "baseline_max_ms",
            baseline.all_sorted().last().copied().unwrap_or(0),
        )
        .set("max_blocked_ms", worst.1)
        .set("max_blocked_ms_backup_phase", during_backup)
        .set("max_blocked_ms_restore_phase", during_restore)
        .set("worst_call", worst.0)
        .set("calls_blocked_over_1s", blocked)
        .set("target_1s_met", blocked == 0)
        .set("state_only_calls", probe_all.len() as u64)
        .set("state_only_p99_ms", percentile(&probe_all, 99))
        .set("state_only_max_ms", probe_max);
    figure.emit();
    for (kind, v) in &loaded.0 {
        eprintln!(
            "{kind}: baseline max {} ms; during backup p50 {} max {} ms",
            baseline.max(kind),
            percentile(
                &{
                    let mut v = v.clone();
                    v.sort_unstable();
                    v
                },
                50
            ),
            loaded.max(kind)
        );
    }
    api.run(api.c.umount_volume(&restored)).unwrap();
    api.run(api.c.umount_volume(&big)).unwrap();
    assert!(
        same,
        "the restore of {big} differs from it (seed {})",
        rel_support::seed()
    );
    assert!(
        rounds > 0,
        "the backup and restore ended before any unrelated call was made"
    );
    // The 1 s target is a measured figure (`target_1s_met`, `calls_blocked_over_1s`), reported
    // by `cargo xtask reliability` and in docs/reliability.md, never a timing assertion: on a
    // loaded 2-core TCG guest the same code measures anywhere from 0.3 s to 30 s.
}

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_host_backup_delete_one_store() {
    let rounds: usize = by_scale(6, 50);
    let files = 6;
    let mut rng = rng("backup-delete-one-store");
    let d = TestDaemon::start(&[]);
    let mut figure = Figure::new(SUITE, "backups of two block-sharing volumes while deleting");
    let store = d.dir.path().join("store");
    let dest = format!("vfs://{}", store.display());
    let api = Api::new(&d.socket);
    // Volume a, backed up once; volume b restored from that backup (so they share blocks).
    api.create("va", None, "").unwrap();
    for _ in 0..files {
        change(&d.vols.join("va"), files, &mut rng);
    }
    api.snapshot("va", "va-0").unwrap();
    let first = api.backup("va-0", &dest).unwrap();
    let mut expected: BTreeMap<String, BTreeMap<PathBuf, Vec<u8>>> = BTreeMap::new();
    expected.insert(first.clone(), tree(&d.vols.join("va")));
    api.create("vb", None, &first).unwrap();
    assert_eq!(tree(&d.vols.join("vb")), expected[&first], "first restore");
    let mut live = vec![first];
    let (mut deletes, mut backups) = (0u64, 1u64);
    for round in 1..=rounds {
        let mut snaps = Vec::new();
        for v in ["va", "vb"] {
            change(&d.vols.join(v), files, &mut rng);
            let snap = format!("{v}-{round}");
            api.snapshot(v, &snap).unwrap();
            snaps.push((snap, tree(&d.vols.join(v))));
        }
        // Delete an older backup while both new ones are made.
        let victim = (live.len() > 1).then(|| live.remove(rng.usize(..live.len())));
        let socket = d.socket.clone();
        let deleter = victim
            .clone()
            .map(|url| std::thread::spawn(move || Api::new(&socket).delete_backup(&url)));
        let makers: Vec<_> = snaps
            .into_iter()
            .map(|(snap, content)| {
                let (socket, dest) = (d.socket.clone(), dest.clone());
                std::thread::spawn(move || (Api::new(&socket).backup(&snap, &dest), snap, content))
            })
            .collect();
        for m in makers {
            let (r, snap, content) = m.join().unwrap();
            let url = r.unwrap_or_else(|e| panic!("round {round}: backup {snap}: {e}"));
            expected.insert(url.clone(), content);
            live.push(url);
            backups += 1;
        }
        if let (Some(t), Some(url)) = (deleter, victim) {
            match t.join().unwrap() {
                Ok(()) => {
                    expected.remove(&url);
                    deletes += 1;
                }
                Err(e) => {
                    assert_clear(&e, &url, "delete backup");
                    live.push(url);
                }
            }
        }
        // Old snapshots go too (the last one of each volume stays, for incrementals).
        if round > 1 {
            for v in ["va", "vb"] {
                api.run(api.c.delete_snapshot(&format!("{v}-{}", round - 1)))
                    .unwrap();
            }
        }
        figure.trials += 1;
    }
    // What the store lists is what was made and not deleted.
    let listed: BTreeSet<String> = d
        .json(&["backup", "list", &dest])
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let (orphans, stale) = store_orphans(&store);
    let mut restored = 0;
    let mut lost = Vec::new();
    for (i, (url, content)) in expected.iter().enumerate() {
        let name = format!("r{i}");
        match api.create(&name, None, url) {
            Ok(_) if tree(&d.vols.join(&name)) == *content => restored += 1,
            Ok(_) => lost.push(format!("{url}: restored content differs")),
            Err(e) => lost.push(format!("{url}: {e}")),
        }
        let _ = api.delete(&name);
    }
    figure.lost = lost.len() as u64;
    figure.checks += restored + u64::from(orphans.is_empty()) + 1;
    figure
        .set("backups_made", backups)
        .set("backups_deleted", deletes)
        .set("backups_restored_bit_exact", restored)
        .set("orphan_blocks", orphans.len() as u64)
        .set("stale_refs", stale.len() as u64);
    figure.emit();
    let seed = rel_support::seed();
    assert_eq!(
        listed,
        expected.keys().cloned().collect::<BTreeSet<_>>(),
        "listed backups differ from those made and not deleted (seed {seed})"
    );
    assert!(lost.is_empty(), "backups lost (seed {seed}): {lost:#?}");
    assert!(
        orphans.is_empty(),
        "orphan blocks (seed {seed}): {orphans:?}"
    );
    assert!(
        stale.is_empty(),
        "references of deleted backups (seed {seed}): {stale:?}"
    );
}
