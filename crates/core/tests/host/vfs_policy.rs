//! Host tier: a policy drives a real volume manager (vfs driver) and a real `vfs://` store
//! with a made-up clock: four days of hourly snapshots and daily backups; retention deletes
//! real snapshots and real backups in the store; the newest backup restores.

use std::sync::Arc;

use convoy_core::{
    parse_keep, CreateVolumeRequest, NoProgress, Policy, PolicyEngine, VolumeManager,
};

use crate::common::{named, vfs_config as config};

#[tokio::test]
async fn a_policy_takes_and_retires_real_snapshots_and_backups() {
    let dir = tempfile::tempdir().unwrap();
    let m = VolumeManager::open(config(dir.path())).await.unwrap();
    m.create_volume(named("app"), Arc::new(NoProgress))
        .await
        .unwrap();
    let mnt = m.mount_volume("app", None).await.unwrap();
    let dest = format!("vfs://{}", dir.path().join("backups").display());

    let engine = PolicyEngine::open(m.root(), 0).unwrap();
    engine
        .set(
            "app",
            "default",
            Policy {
                snapshot_every: Some(3600),
                backup_every: Some(86_400),
                backup_dest: Some(dest.clone()),
                keep_snapshots: parse_keep("k", "last=3").unwrap(),
                keep_backups: parse_keep("k", "last=2").unwrap(),
                ..Policy::default()
            },
        )
        .unwrap();
    let volumes = vec!["app".to_string()];
    let start = 1_750_000_000 - 1_750_000_000 % 86_400;
    assert!(engine.due(&volumes, start).unwrap().is_empty());
    let mut hour = 0;
    while let Some(t) = engine.next_due(&volumes) {
        if t >= start + 4 * 86_400 {
            break;
        }
        // The volume changes between runs.
        std::fs::write(mnt.join(format!("h{hour}")), format!("hour {hour}")).unwrap();
        hour += 1;
        for (v, n, a, outcome) in engine.run_due(&m, &volumes, t, 2).await.unwrap() {
            outcome.unwrap_or_else(|e| panic!("{a:?} of {n} on {v} at {t}: {e}"));
        }
    }
    let status = engine.status(&volumes);
    let st = &status[0].state;
    assert_eq!(st.backups.len(), 2);

    // The manager holds exactly the snapshots the policy keeps: the 3 newest (of all its
    // runs) and the last backup's.
    let volume = m.inspect_volume("app").await.unwrap();
    let mut kept: Vec<String> = st.snapshots.iter().map(|s| s.name.clone()).collect();
    kept.sort();
    let real: Vec<String> = volume.snapshots.keys().cloned().collect();
    assert_eq!(real, kept);
    assert!(real.len() == 3 || real.len() == 4, "{real:?}");
    assert!(real.contains(st.protected.as_ref().unwrap()));

    // The store holds exactly the 2 newest backups; the newest restores.
    let backups = m
        .list_backups(&dest, Some("app"), &Default::default())
        .await
        .unwrap();
    assert_eq!(backups.len(), 2, "{backups:?}");
    let newest = st.backups.iter().max_by_key(|b| b.time).unwrap();
    let restore = CreateVolumeRequest {
        name: Some("copy".into()),
        backup_url: Some(newest.url.clone()),
        ..Default::default()
    };
    m.create_volume(restore, Arc::new(NoProgress))
        .await
        .unwrap();
    let copy = m.mount_volume("copy", None).await.unwrap();
    assert!(copy.join("h0").exists());
    let newest_file = (0..hour)
        .rev()
        .find(|h| copy.join(format!("h{h}")).exists())
        .unwrap();
    assert!(
        newest_file > 70,
        "the newest backup holds day 4's files, not only {newest_file}"
    );
}
