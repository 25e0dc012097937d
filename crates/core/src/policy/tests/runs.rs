//! The engine over time: a year of runs with retention checked exactly, a restart, two
//! policies on one volume, a store that is down, the concurrency limit, crashes and claims.

use super::*;

#[tokio::test]
async fn a_year_of_hourly_snapshots_and_daily_backups_keeps_exactly_the_tiers() {
    // Some 60 000 durable writes of the policy file: on tmpfs, where a sync costs nothing.
    let dir = tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap());
    let engine = PolicyEngine::open(dir.path(), 0).unwrap();
    let fake = Fake::default();
    let volumes = vols(&["db"]);
    let policy = Policy {
        snapshot_every: Some(3600),
        backup_every: Some(86_400),
        backup_dest: Some("vfs:///backups".into()),
        keep_snapshots: keep("hourly=24,daily=7,weekly=4,monthly=12"),
        keep_backups: keep("daily=7,weekly=4,monthly=6"),
        ..Policy::default()
    };
    engine.set("db", "default", policy).unwrap();
    let start = at(2025, 1, 1, 0);
    let end = at(2026, 1, 1, 0) - 1;
    let runs = run_until(&engine, &fake, &volumes, start - 1, end).await;
    let os = jitter("db", "default", Action::Snapshot, 3600) as i64;
    let ob = jitter("db", "default", Action::Backup, 86_400) as i64;
    assert!(ob < 3600, "daily offsets stay within the first hour");
    assert_eq!(runs, 8760 + 365, "one run per hour and per day, no more");

    // Snapshot runs happen at every hour + os; backup runs at every day + ob.
    let s = |t: i64| policy_snapshot_name("db", "default", Action::Snapshot, t);
    let b = |t: i64| policy_snapshot_name("db", "default", Action::Backup, t);
    let mut want = BTreeSet::new();
    // hourly=24: the last 24 hours of Dec 31.
    for h in 0..24 {
        want.insert(s(at(2025, 12, 31, h) + os));
    }
    // daily=7: the last snapshot (23:xx) of Dec 25–30 (Dec 31 already kept); a backup run's
    // snapshot is newer than the day's 23:xx snapshot only if ob > os + 23 h: never.
    for d in 25..=30 {
        want.insert(s(at(2025, 12, d, 23) + os));
    }
    // weekly=4: Sundays' last: Dec 28 (kept), Dec 21, Dec 14; the week of Dec 29 holds Dec 31.
    for d in [21, 14] {
        want.insert(s(at(2025, 12, d, 23) + os));
    }
    // monthly=12: last of each month Jan–Nov (Dec is Dec 31's).
    let last_day = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30];
    for (m, d) in last_day.iter().enumerate() {
        want.insert(s(at(2025, m as i64 + 1, *d, 23) + os));
    }
    // The next incremental's snapshot: the last backup run's (Dec 31), which is also the
    // newest of its hour when its offset is the later one.
    want.insert(b(at(2025, 12, 31, 0) + ob));
    if ob > os {
        want.remove(&s(at(2025, 12, 31, 0) + os));
    }
    assert_eq!(fake.snapshot_names(), want);

    // Backups: daily=7 (Dec 25–31); weekly=4, the newest of the weeks starting Dec 29, 22,
    // 15, 8: Dec 31, 28 (both daily), 21, 14; monthly=6: Dec 31, Nov 30, Oct 31, Sep 30,
    // Aug 31, Jul 31.
    let mut want_backups = BTreeSet::new();
    for d in 25..=31 {
        want_backups.insert(b(at(2025, 12, d, 0) + ob));
    }
    for d in [21, 14] {
        want_backups.insert(b(at(2025, 12, d, 0) + ob));
    }
    for (m, d) in [(11, 30), (10, 31), (9, 30), (8, 31), (7, 31)] {
        want_backups.insert(b(at(2025, m, d, 0) + ob));
    }
    assert_eq!(fake.backup_snapshots(), want_backups);

    let status = engine.status(&volumes);
    let st = &status[0].state;
    assert_eq!(st.snapshot.last_success, Some(at(2025, 12, 31, 23) + os));
    assert_eq!(st.backup.last_success, Some(at(2025, 12, 31, 0) + ob));
    assert_eq!(st.snapshot.next_run, Some(at(2026, 1, 1, 0) + os));
    assert_eq!(st.snapshots.len(), want.len());
    assert_eq!(st.backups.len(), want_backups.len());
}

#[tokio::test]
async fn a_restart_after_days_down_runs_each_missed_action_once_then_keeps_the_grid() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let volumes = vols(&["web"]);
    let start = at(2025, 3, 1, 0);
    {
        let engine = PolicyEngine::open(dir.path(), start).unwrap();
        engine
            .set(
                "web",
                "default",
                Policy {
                    snapshot_every: Some(3600),
                    backup_every: Some(86_400),
                    backup_dest: Some("vfs:///b".into()),
                    ..Policy::default()
                },
            )
            .unwrap();
        let runs = run_until(&engine, &fake, &volumes, start, start + 2 * DAY - 1).await;
        assert_eq!(runs, 48 + 2);
    }
    // Down for three days, then opened again (a new engine reads the file).
    let back = start + 5 * DAY + 600;
    let engine = PolicyEngine::open(dir.path(), back).unwrap();
    let st = engine.status(&volumes)[0].state.clone();
    for a in [&st.snapshot, &st.backup] {
        let next = a.next_run.unwrap();
        assert!(
            next >= back && next < back + MISSED_SPREAD_SECS as i64,
            "{next}"
        );
    }
    let before = (
        fake.snapshot_names().len(),
        fake.backup_calls.load(Ordering::SeqCst),
    );
    let t = st.snapshot.next_run.max(st.backup.next_run).unwrap();
    let out = engine.run_due(&fake, &volumes, t, 2).await.unwrap();
    assert_eq!(
        out.len(),
        2,
        "one snapshot run and one backup run make up for three days"
    );
    assert!(out.iter().all(|o| o.3.is_ok()));
    assert_eq!(
        fake.snapshot_names().len(),
        before.0 + 1,
        "a new snapshot; the backup run's new snapshot replaced the old one"
    );
    assert_eq!(fake.backup_calls.load(Ordering::SeqCst), before.1 + 1);
    // Then back on the grid.
    let os = jitter("web", "default", Action::Snapshot, 3600) as i64;
    let next = engine.status(&volumes)[0].state.snapshot.next_run.unwrap();
    assert_eq!(next.rem_euclid(3600), os);
    assert!(next > t && next - t <= 3600);
}

#[tokio::test]
async fn two_policies_on_one_volume_each_delete_only_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let engine = PolicyEngine::open(dir.path(), 0).unwrap();
    let fake = Fake::default();
    let volumes = vols(&["app", "other"]);
    // All volumes: hourly snapshots, keep 3. "app" also backs up every 6 h to two places.
    engine
        .set(
            ALL_VOLUMES,
            "default",
            Policy {
                snapshot_every: Some(3600),
                keep_snapshots: keep("last=3"),
                ..Policy::default()
            },
        )
        .unwrap();
    engine
        .set(
            "app",
            "offsite",
            Policy {
                backup_every: Some(6 * 3600),
                backup_dest: Some("s3://bucket@us-east-1/convoy".into()),
                keep_backups: keep("last=2"),
                ..Policy::default()
            },
        )
        .unwrap();
    // A user's own snapshot is never touched.
    fake.create_snapshot("app", "mine").await.unwrap();
    let t0 = at(2025, 5, 1, 0);
    run_until(&engine, &fake, &volumes, t0, t0 + 2 * DAY).await;
    let names = fake.snapshot_names();
    assert!(names.contains("mine"));
    let count = |prefix: &str| names.iter().filter(|n| n.starts_with(prefix)).count();
    assert_eq!(count("app.default.s"), 3);
    assert_eq!(count("other.default.s"), 3);
    assert_eq!(
        count("app.offsite.b"),
        1,
        "only the next incremental's snapshot"
    );
    assert_eq!(fake.backups.lock().unwrap().len(), 2);

    // "app" replaces the all-volumes "default" with its own: 2-hourly, keep 1.
    engine
        .set(
            "app",
            "default",
            Policy {
                snapshot_every: Some(7200),
                keep_snapshots: keep("last=1"),
                ..Policy::default()
            },
        )
        .unwrap();
    let status = engine.status(&volumes);
    let app_default = status
        .iter()
        .find(|s| s.volume == "app" && s.name == "default")
        .unwrap();
    assert!(!app_default.from_all);
    assert_eq!(
        app_default.state.snapshots.len(),
        3,
        "it inherits what the policy made"
    );
    run_until(&engine, &fake, &volumes, t0 + 2 * DAY, t0 + 3 * DAY).await;
    let names = fake.snapshot_names();
    assert_eq!(
        names
            .iter()
            .filter(|n| n.starts_with("app.default.s"))
            .count(),
        1
    );
    assert_eq!(
        names
            .iter()
            .filter(|n| n.starts_with("other.default.s"))
            .count(),
        3
    );

    // Removing a policy leaves what it made as ordinary snapshots.
    assert_eq!(engine.remove("app", Some("offsite")).unwrap(), 1);
    assert!(engine.remove("app", Some("offsite")).is_err());
    assert_eq!(fake.backups.lock().unwrap().len(), 2);
    engine.forget_volume("other").unwrap();
    assert!(engine
        .status(&volumes)
        .iter()
        .all(|s| s.volume != "other" || s.from_all));
}

#[tokio::test]
async fn a_store_that_is_down_fails_the_run_visibly_and_the_next_one_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let engine = PolicyEngine::open(dir.path(), 0).unwrap();
    let fake = Fake::default();
    let volumes = vols(&["db"]);
    engine
        .set(
            "db",
            "default",
            Policy {
                backup_every: Some(3600),
                backup_dest: Some("vfs:///b".into()),
                ..Policy::default()
            },
        )
        .unwrap();
    let t0 = at(2025, 1, 1, 0);
    engine.due(&volumes, t0).unwrap();
    let t1 = engine.next_due(&volumes).unwrap();
    engine.run_due(&fake, &volumes, t1, 1).await.unwrap()[0]
        .3
        .as_ref()
        .unwrap();
    fake.store_down.store(true, Ordering::SeqCst);
    let t2 = engine.next_due(&volumes).unwrap();
    let out = engine.run_due(&fake, &volumes, t2, 1).await.unwrap();
    let err = out[0].3.as_ref().unwrap_err().to_string();
    assert!(err.contains("unreachable"), "{err}");
    let st = engine.status(&volumes)[0].state.clone();
    assert_eq!(st.backup.last_run, Some(t2));
    assert_eq!(st.backup.last_success, Some(t1));
    assert!(st
        .backup
        .last_error
        .as_deref()
        .unwrap()
        .contains("unreachable"));
    assert_eq!(st.backup.next_run, Some(t2 + 3600));
    // The failed run's snapshot is gone; the previous backup's (the next incremental's) stays.
    assert_eq!(
        fake.snapshot_names(),
        BTreeSet::from([policy_snapshot_name("db", "default", Action::Backup, t1)])
    );
    fake.store_down.store(false, Ordering::SeqCst);
    let t3 = engine.next_due(&volumes).unwrap();
    engine.run_due(&fake, &volumes, t3, 1).await.unwrap()[0]
        .3
        .as_ref()
        .unwrap();
    let st = engine.status(&volumes)[0].state.clone();
    assert_eq!(st.backup.last_success, Some(t3));
    assert_eq!(st.backup.last_error, None);
    assert_eq!(fake.backups.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn at_most_the_configured_number_of_backups_run_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let engine = PolicyEngine::open(dir.path(), 0).unwrap();
    let fake = Fake::default();
    let volumes: Vec<String> = (0..10).map(|i| format!("v{i}")).collect();
    engine
        .set(
            ALL_VOLUMES,
            "default",
            Policy {
                backup_every: Some(60),
                backup_dest: Some("vfs:///b".into()),
                ..Policy::default()
            },
        )
        .unwrap();
    engine.due(&volumes, 0).unwrap();
    // Every volume's first run is within the first minute: at 60 all are due.
    let out = engine.run_due(&fake, &volumes, 60, 3).await.unwrap();
    assert_eq!(out.len(), 10);
    assert!(out.iter().all(|o| o.3.is_ok()));
    assert_eq!(fake.most_running.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_job_in_flight_is_not_handed_out_twice_and_its_claim_goes_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let engine = PolicyEngine::open(dir.path(), 0).unwrap();
    let volumes = vols(&["v1"]);
    engine
        .set(
            "v1",
            "default",
            Policy {
                snapshot_every: Some(1),
                ..Policy::default()
            },
        )
        .unwrap();
    engine.due(&volumes, 0).unwrap();
    let jobs: Vec<Job> = engine.due(&volumes, 10).unwrap();
    assert_eq!(jobs.len(), 1);
    assert!(
        engine.due(&volumes, 20).unwrap().is_empty(),
        "still in flight"
    );
    drop(jobs); // a cancelled run
    assert_eq!(engine.due(&volumes, 30).unwrap().len(), 1);
}

#[tokio::test]
async fn a_run_in_flight_when_its_policy_is_removed_finishes_and_leaves_no_state() {
    let dir = tempfile::tempdir().unwrap();
    let engine = PolicyEngine::open(dir.path(), 0).unwrap();
    let fake = Fake::default();
    let volumes = vols(&["v1"]);
    let policy = Policy {
        backup_every: Some(60),
        backup_dest: Some("vfs:///b".into()),
        keep_backups: keep("last=1"),
        ..Policy::default()
    };
    engine.set("v1", "default", policy).unwrap();
    engine.due(&volumes, 0).unwrap();
    let t1 = engine.next_due(&volumes).unwrap();
    engine.run_due(&fake, &volumes, t1, 1).await.unwrap();
    let t2 = engine.next_due(&volumes).unwrap();
    let jobs = engine.due(&volumes, t2).unwrap();
    assert_eq!(jobs.len(), 1);
    // Removed between handing the jobs out and running them.
    engine.remove("v1", Some("default")).unwrap();
    for job in jobs {
        engine.run_job(job, &fake).await.unwrap();
    }
    // What the run made stays, and what the policy made before it stays as it was (a
    // removed policy deletes nothing more); nothing of the policy is left in its file.
    let both = BTreeSet::from([
        policy_snapshot_name("v1", "default", Action::Backup, t1),
        policy_snapshot_name("v1", "default", Action::Backup, t2),
    ]);
    assert_eq!(fake.snapshot_names(), both);
    assert_eq!(fake.backup_snapshots(), both);
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("policies.json")).unwrap()).unwrap();
    assert_eq!(file["policies"], serde_json::json!([]), "{file}");
    assert_eq!(file["states"], serde_json::json!([]), "{file}");
    drop(engine);
    let engine = PolicyEngine::open(dir.path(), t2).unwrap();
    assert!(engine.status(&volumes).is_empty());
    assert!(engine.due(&volumes, t2 + 3600).unwrap().is_empty());
}

#[tokio::test]
async fn a_snapshot_made_just_before_a_crash_is_adopted_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let engine = PolicyEngine::open(dir.path(), 0).unwrap();
    let fake = Fake::default();
    let volumes = vols(&["v1"]);
    engine
        .set(
            "v1",
            "default",
            Policy {
                snapshot_every: Some(3600),
                keep_snapshots: keep("last=1"),
                ..Policy::default()
            },
        )
        .unwrap();
    // The crash: the intent was recorded and the snapshot made, then nothing more.
    let lost = policy_snapshot_name("v1", "default", Action::Snapshot, 100);
    let key = ("v1".to_string(), "default".to_string());
    engine
        .update(&key, |s| {
            s.pending.push(MadeSnapshot {
                name: lost.clone(),
                time: 100,
                action: Action::Snapshot,
            })
        })
        .unwrap();
    fake.create_snapshot("v1", &lost).await.unwrap();
    let gone = policy_snapshot_name("v1", "default", Action::Snapshot, 50);
    engine
        .update(&key, |s| {
            s.pending.push(MadeSnapshot {
                name: gone,
                time: 50,
                action: Action::Snapshot,
            })
        })
        .unwrap();
    drop(engine);
    let engine = PolicyEngine::open(dir.path(), 200).unwrap();
    engine.due(&volumes, 200).unwrap();
    let t = engine.next_due(&volumes).unwrap();
    engine.run_due(&fake, &volumes, t, 1).await.unwrap()[0]
        .3
        .as_ref()
        .unwrap();
    // Adopted, then let go by `last=1` like any other.
    assert_eq!(
        fake.snapshot_names(),
        BTreeSet::from([policy_snapshot_name("v1", "default", Action::Snapshot, t)])
    );
    let st = engine.status(&volumes)[0].state.clone();
    assert!(st.pending.is_empty());
    assert_eq!(st.snapshots.len(), 1);
}

#[test]
fn a_corrupt_or_unknown_policy_file_stops_the_open_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policies.json"), b"{not json").unwrap();
    let e = PolicyEngine::open(dir.path(), 0).unwrap_err().to_string();
    assert!(e.contains("policies.json") && e.contains("corrupt"), "{e}");
    std::fs::write(
        dir.path().join("policies.json"),
        br#"{"version":9,"policies":[],"states":[]}"#,
    )
    .unwrap();
    let e = PolicyEngine::open(dir.path(), 0).unwrap_err().to_string();
    assert!(e.contains("version 9"), "{e}");
}

#[tokio::test]
async fn a_busy_snapshot_is_kept_until_a_later_run() {
    {
        let dir = tempfile::tempdir().unwrap();
        let engine = PolicyEngine::open(dir.path(), 0).unwrap();
        let fake = Fake::default();
        let volumes = vols(&["v1"]);
        engine
            .set(
                "v1",
                "default",
                Policy {
                    snapshot_every: Some(60),
                    keep_snapshots: keep("last=1"),
                    ..Policy::default()
                },
            )
            .unwrap();
        engine.due(&volumes, 0).unwrap();
        let t1 = engine.next_due(&volumes).unwrap();
        engine.run_due(&fake, &volumes, t1, 1).await.unwrap();
        let first = policy_snapshot_name("v1", "default", Action::Snapshot, t1);
        fake.busy.lock().unwrap().insert(first.clone());
        let t2 = engine.next_due(&volumes).unwrap();
        let out = engine.run_due(&fake, &volumes, t2, 1).await.unwrap();
        assert!(out[0].3.is_ok());
        assert!(fake.snapshot_names().contains(&first));
        fake.busy.lock().unwrap().clear();
        let t3 = engine.next_due(&volumes).unwrap();
        engine.run_due(&fake, &volumes, t3, 1).await.unwrap();
        assert_eq!(fake.snapshot_names().len(), 1);
    }
}

#[test]
fn the_snapshot_being_backed_up_and_the_last_backups_are_never_retired() {
    use super::book::RunState;
    let made = |name: &str, time: i64, action: Action| MadeSnapshot {
        name: name.into(),
        time,
        action,
    };
    let state = RunState {
        snapshots: vec![
            made("b1", 1, Action::Backup),
            made("s2", 2, Action::Snapshot),
            made("b3", 3, Action::Backup),
            made("s4", 4, Action::Snapshot),
            made("s5", 5, Action::Snapshot),
        ],
        protected: Some("b1".into()),
        backing_up: Some("b3".into()),
        ..RunState::default()
    };
    // last=1: only s5 by the rule; b1 (the next incremental's base until b3's backup is
    // recorded) and b3 (being read) stay.
    let gone = super::run::snapshots_to_delete(&state, &keep("last=1"));
    assert_eq!(gone, vec!["s4".to_string(), "s2".to_string()]);
    // No rule: snapshot runs' stay, backup runs' go unless protected or being backed up.
    assert!(super::run::snapshots_to_delete(&state, &keep("")).is_empty());
}
