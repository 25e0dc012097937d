//! VM tier: the manager killed inside expand, clone and revert (a crash point aborts a child
//! process running the operation), then re-opened: start-up must finish or roll back each
//! one — the old or the new size, the old or the snapshot's data — with no orphan thin id, and
//! `thin_check` must pass on the pool's metadata at the end.

mod common;

use std::sync::Arc;

use common::{run, write_file, Fixture, MIB};
use convoy_core::{CreateVolumeRequest, NoProgress, VolumeManager};

fn named(name: &str) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: Some(name.into()),
        ..Default::default()
    }
}

/// Runs one step in a child process (started by the test below); the crash point aborts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper: run in a child process by dm_lifecycle_killed_mid_step_is_reconciled"]
async fn lifecycle_crash_child() {
    let (config, step, arg) = common::child_request();
    let m = VolumeManager::open(config).await.unwrap();
    match step.as_str() {
        "expand" => drop(m.expand_volume(&arg, 128 * MIB).await),
        "clone" => {
            let req = CreateVolumeRequest {
                from_snapshot: Some("s1".into()),
                ..named(&arg)
            };
            drop(m.create_volume(req, Arc::new(NoProgress)).await)
        }
        "clone-volume" => {
            let req = CreateVolumeRequest {
                from_volume: Some("base".into()),
                ..named(&arg)
            };
            drop(m.create_volume(req, Arc::new(NoProgress)).await)
        }
        "revert" => drop(m.revert_snapshot(&arg).await),
        other => panic!("unknown step {other}"),
    }
    panic!("the crash point of step {step} was not reached");
}

/// Re-opens twice: the second open must find nothing left to do; no orphan was ever found.
async fn reopen_settled(fx: &Fixture, point: &str) -> (VolumeManager, String) {
    let (m, report) = common::reopen_settled(fx, point).await;
    assert!(!report.contains("orphan"), "{point}: {report}");
    // The active thin devices are exactly the volumes'.
    let mut volumes: Vec<String> = m
        .list_volumes(None)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.driver_info["Device"].clone())
        .collect();
    let mut active: Vec<String> = fx
        .pool()
        .list_active()
        .unwrap()
        .into_iter()
        .map(|d| d.path.display().to_string())
        .collect();
    volumes.sort();
    active.sort();
    assert_eq!(active, volumes, "{point}");
    (m, report)
}

fn df_size(at: &std::path::Path) -> u64 {
    let out = run("df", &["-B1", "--output=size", at.to_str().unwrap()]);
    out.lines().nth(1).unwrap().trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
async fn dm_lifecycle_killed_mid_step_is_reconciled() {
    let fx = Fixture::new("lcrash", 4096, "ext4", 1024 * MIB);
    let m = fx.open().await;
    m.create_volume(named("base"), Arc::new(NoProgress))
        .await
        .unwrap();
    let at = m.mount_volume("base", None).await.unwrap();
    write_file(&at.join("data"), 5, MIB as usize);
    let data = std::fs::read(at.join("data")).unwrap();
    m.create_snapshot("base", Some("s1".into())).await.unwrap();
    drop(m);

    // Expand: the intent is recorded first, so every crash finishes the expand.
    for (i, point) in [
        "expand-after-intent",
        "expand-after-device",
        "expand-before-record",
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("gv{i}");
        let m = fx.open().await;
        m.create_volume(named(&name), Arc::new(NoProgress))
            .await
            .unwrap();
        let gat = m.mount_volume(&name, None).await.unwrap();
        write_file(&gat.join("g"), 9, MIB as usize);
        let g = std::fs::read(gat.join("g")).unwrap();
        drop(m);
        common::run_crash_child(&fx, "lifecycle_crash_child", point, "expand", &name);
        let (m, report) = reopen_settled(&fx, point).await;
        assert!(report.contains("finished the expand"), "{point}: {report}");
        let v = m.inspect_volume(&name).await.unwrap();
        assert_eq!(v.driver_info["Size"], (128 * MIB).to_string(), "{point}");
        assert!(df_size(&gat) > 100 * MIB, "{point}: {}", df_size(&gat));
        assert_eq!(std::fs::read(gat.join("g")).unwrap(), g, "{point}");
        m.umount_volume(&name).await.unwrap();
        m.delete_volume(&name, false).await.unwrap();
    }

    // Clone: a half-made clone is removed.
    for (point, step) in [
        ("create-volume-after-intent", "clone"),
        ("clone-after-snap", "clone"),
        ("clone-after-snap", "clone-volume"),
    ] {
        common::run_crash_child(&fx, "lifecycle_crash_child", point, step, "cl");
        let (m, report) = reopen_settled(&fx, point).await;
        assert!(report.contains("cl"), "{point}: {report}");
        assert!(m.inspect_volume("cl").await.is_err(), "{point}");
    }

    // Revert: rolled back before the switch is recorded, finished after it.
    for (i, (point, reverted)) in [
        ("revert-after-intent", false),
        ("revert-after-snap", false),
        ("revert-after-switch", true),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("rv{i}");
        let snap = format!("rs{i}");
        let m = fx.open().await;
        m.create_volume(named(&name), Arc::new(NoProgress))
            .await
            .unwrap();
        let rat = m.mount_volume(&name, None).await.unwrap();
        std::fs::write(rat.join("f"), b"old").unwrap();
        m.create_snapshot(&name, Some(snap.clone())).await.unwrap();
        std::fs::write(rat.join("f"), b"new").unwrap();
        m.umount_volume(&name).await.unwrap();
        drop(m);
        common::run_crash_child(&fx, "lifecycle_crash_child", point, "revert", &snap);
        let (m, report) = reopen_settled(&fx, point).await;
        let word = if reverted { "finished" } else { "rolled back" };
        assert!(
            report.contains(&format!("{word} the revert of volume {name}")),
            "{point}: {report}"
        );
        let rat = m.mount_volume(&name, None).await.unwrap();
        let expect: &[u8] = if reverted { b"old" } else { b"new" };
        assert_eq!(std::fs::read(rat.join("f")).unwrap(), expect, "{point}");
        assert!(m.inspect_snapshot(&snap).await.is_ok(), "{point}");
        m.umount_volume(&name).await.unwrap();
        m.delete_volume(&name, false).await.unwrap();
    }

    let m = fx.open().await;
    assert_eq!(std::fs::read(at.join("data")).unwrap(), data);
    m.umount_volume("base").await.unwrap();
    drop(m);
    // The pool's metadata is sound.
    fx.pool().teardown().unwrap();
    run("thin_check", &[fx.meta.path().to_str().unwrap()]);
}
