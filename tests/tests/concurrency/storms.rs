//! The storms of the concurrency suite: parallel Docker plugin Mount/Unmount calls with random
//! IDs (host and VM), and many `/v1` clients creating, mounting, snapshotting and deleting
//! volumes of four shared names at once (`rel_host_shared_names_storm`).

use super::*;

fn storm_scenario(d: &mut TestDaemon, figure: &mut Figure, prefix: &str, counts: (usize, usize)) {
    let (threads, ops) = counts;
    let volumes: Vec<String> = (0..3).map(|i| format!("{prefix}{i}")).collect();
    for v in &volumes {
        d.ok(&["create", v]);
    }
    let (calls, checks) = mount_storm(d, &volumes, threads, ops);
    figure.trials = (threads * ops) as u64;
    figure.checks = checks;
    figure
        .set("threads", threads as u64)
        .set("plugin_calls", calls);
    let released = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert_released(d, &volumes)
    }));
    if let Ok(n) = &released {
        figure.checks += n;
    }
    figure.emit();
    if let Err(panic) = released {
        std::panic::resume_unwind(panic);
    }
    for v in &volumes {
        d.ok(&["delete", v]);
    }
}

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_host_plugin_mount_storm() {
    let mut d = TestDaemon::start(&[]);
    let mut figure = Figure::new(SUITE, "plugin Mount/Unmount storm, random IDs (vfs)");
    storm_scenario(&mut d, &mut figure, "storm", by_scale((8, 30), (16, 200)));
}

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_vm_plugin_mount_storm() {
    let mut dm = DmDaemon::start("ms", 4 << 30, "32M");
    let mut figure = Figure::new(
        SUITE,
        "plugin Mount/Unmount storm, random IDs (devicemapper)",
    );
    let prefix = format!("{}-m", dm.tag);
    storm_scenario(&mut dm.d, &mut figure, &prefix, by_scale((4, 15), (8, 60)));
    dm.assert_empty(&mut figure, "after the storm");
}

/// Names in a directory (none if it does not exist), hidden ones left out.
fn dir_names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

/// What the daemon lists agrees with its records and the vfs directories: answers the listed
/// volume names and snapshot names.
fn assert_vfs_consistent(d: &TestDaemon, context: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let list = d.json(&["list"]);
    let list = list.as_object().unwrap();
    let volumes: BTreeSet<String> = list.keys().cloned().collect();
    let snapshots: BTreeSet<String> = list
        .values()
        .flat_map(|v| v["Snapshots"].as_object().unwrap().keys().cloned())
        .collect();
    let records: BTreeSet<String> = dir_names(&d.root.join("vfs/volumes"))
        .into_iter()
        .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
        .collect();
    assert_eq!(volumes, records, "{context}: listed volumes vs records");
    let dirs: BTreeSet<String> = dir_names(&d.vols)
        .into_iter()
        .filter(|n| !n.contains('.'))
        .collect();
    assert_eq!(
        volumes, dirs,
        "{context}: listed volumes vs volume directories"
    );
    let snap_dirs = dir_names(&d.vols.join(".snapshots"));
    assert_eq!(
        snapshots, snap_dirs,
        "{context}: listed snapshots vs snapshot directories"
    );
    (volumes, snapshots)
}

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_host_shared_names_storm() {
    let (threads, ops) = by_scale((8, 40), (16, 250));
    let mut seeds = rng("shared-names-storm");
    let mut d = TestDaemon::start(&[]);
    let mut figure = Figure::new(
        SUITE,
        "create/mount/snapshot/delete storm on 4 shared names",
    );
    let names: Vec<String> = (0..4).map(|i| format!("shared{i}")).collect();
    let outcomes = Arc::new(Mutex::new(BTreeMap::<String, (u64, u64)>::new()));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (socket, names, outcomes) = (d.socket.clone(), names.clone(), outcomes.clone());
            let seed = seeds.u64(..);
            std::thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(seed);
                let api = Api::new(&socket);
                for op in 0..ops {
                    let v = &names[rng.usize(..names.len())];
                    let snap = format!("{v}-s{}", rng.usize(..3));
                    let (kind, object, r): (&str, &str, Result<(), ApiError>) = match rng.u8(..7) {
                        0 | 1 => ("create", v, api.create(v, None, "").map(|_| ())),
                        2 => ("delete", v, api.delete(v)),
                        3 => ("mount", v, api.mount(v).map(|_| ())),
                        4 => ("umount", v, api.run(api.c.umount_volume(v))),
                        5 => ("snapshot", v, api.snapshot(v, &snap).map(|_| ())),
                        _ => (
                            "snapshot delete",
                            &snap,
                            api.run(api.c.delete_snapshot(&snap)),
                        ),
                    };
                    if let Err(e) = &r {
                        assert_clear(e, object, &format!("thread {t} op {op}: {kind}"));
                    }
                    let mut o = outcomes.lock().unwrap();
                    let entry = o.entry(kind.to_string()).or_default();
                    if r.is_ok() {
                        entry.0 += 1;
                    } else {
                        entry.1 += 1;
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a storm thread failed");
    }
    let consistent = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let before = assert_vfs_consistent(&d, "after the storm");
        d.restart();
        let after = assert_vfs_consistent(&d, "after a restart");
        assert_eq!(before, after, "a restart changed the volumes or snapshots");
    }));
    let outcomes = outcomes.lock().unwrap().clone();
    figure.trials = (threads * ops) as u64;
    figure.checks = figure.trials + if consistent.is_ok() { 7 } else { 0 };
    for (kind, (ok, err)) in &outcomes {
        figure.set(&format!("{}_ok", kind.replace(' ', "_")), *ok);
        figure.set(&format!("{}_clear_errors", kind.replace(' ', "_")), *err);
    }
    figure.emit();
    if let Err(panic) = consistent {
        std::panic::resume_unwind(panic);
    }
}
