//! Latency of convoy-core's operations on a mounted volume, on the real kernel: snapshot (with
//! its peer, the earlier sequence that ran `sync -f` on the mount point before the same
//! snapshot), clone of a snapshot, clone of the mounted volume, revert of an unmounted volume,
//! online expand. N rounds
//! (default 20), interleaved; prints the median, p90 and max of each.
//!
//! ```text
//! cargo xtask bench lifecycle          # builds it in release and runs it in the VM
//! cargo xtask vm -- target/debug/examples/bench_lifecycle 20
//! ```
//!
//! Needs root and a dm-thin kernel. Makes its own loop devices over sparse files in `TMPDIR`.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "support/mod.rs"]
mod support;
use support::{loop_device, run};

use convoy_core::{CreateVolumeRequest, ManagerConfig, NoProgress, VolumeManager};

const MIB: u64 = 1 << 20;

fn stats(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    println!(
        "| {name} | {} | {:.1} | {:.1} | {:.1} |",
        v.len(),
        ms(p(0.5)),
        ms(p(0.9)),
        ms(*v.last().unwrap())
    );
}

fn named(name: &str) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: Some(name.into()),
        ..Default::default()
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map_or(20, |a| a.parse().expect("rounds"));
    let dir = tempfile::tempdir().unwrap();
    let data = loop_device(&dir.path().join("data"), 2048 * MIB);
    let meta = loop_device(&dir.path().join("meta"), 64 * MIB);
    let config = ManagerConfig {
        root: dir.path().join("root"),
        drivers: vec!["devicemapper".into()],
        driver_opts: BTreeMap::from([
            ("dm.datadev".into(), data.clone()),
            ("dm.metadatadev".into(), meta.clone()),
            ("dm.thinpoolname".into(), "bench-lifecycle".into()),
            ("dm.defaultvolumesize".into(), "256m".into()),
        ]),
    };
    let m = VolumeManager::open(config).await.unwrap();
    m.create_volume(named("bench"), Arc::new(NoProgress))
        .await
        .unwrap();
    let at = m.mount_volume("bench", None).await.unwrap();
    let at_s = at.to_str().unwrap().to_owned();

    let (mut snap, mut snap_sync, mut clone_snap, mut clone_vol, mut revert, mut expand) =
        Default::default();
    let push = |v: &mut Vec<Duration>, t: Instant| v.push(t.elapsed());
    for i in 0..rounds {
        // A little dirty data before each snapshot, as a live volume has.
        std::fs::write(at.join(format!("f{i}")), vec![i as u8; 256 * 1024]).unwrap();
        let t = Instant::now();
        m.create_snapshot("bench", Some(format!("s{i}")))
            .await
            .unwrap();
        push(&mut snap, t);
        std::fs::write(at.join(format!("g{i}")), vec![i as u8; 256 * 1024]).unwrap();
        // Peer: the earlier sequence, a syncfs of the mount point in its own process (as
        // convoy ran it, under setpriv) and then the snapshot.
        let t = Instant::now();
        run(
            "setpriv",
            &["--pdeathsig", "KILL", "--", "sync", "-f", &at_s],
        );
        m.create_snapshot("bench", Some(format!("p{i}")))
            .await
            .unwrap();
        push(&mut snap_sync, t);
        let t = Instant::now();
        m.create_volume(
            CreateVolumeRequest {
                from_snapshot: Some(format!("s{i}")),
                ..named(&format!("c{i}"))
            },
            Arc::new(NoProgress),
        )
        .await
        .unwrap();
        push(&mut clone_snap, t);
        let t = Instant::now();
        m.create_volume(
            CreateVolumeRequest {
                from_volume: Some("bench".into()),
                ..named(&format!("v{i}"))
            },
            Arc::new(NoProgress),
        )
        .await
        .unwrap();
        push(&mut clone_vol, t);
        // Revert an unmounted volume (the clone of s{i}) to a snapshot of its own.
        m.create_snapshot(&format!("c{i}"), Some(format!("cs{i}")))
            .await
            .unwrap();
        let t = Instant::now();
        m.revert_snapshot(&format!("cs{i}")).await.unwrap();
        push(&mut revert, t);
        // Online expand of the mounted volume, 2 MiB (one pool block) at a time.
        let t = Instant::now();
        m.expand_volume("bench", 256 * MIB + 2 * MIB * (i as u64 + 1))
            .await
            .unwrap();
        push(&mut expand, t);
        for n in [format!("c{i}"), format!("v{i}")] {
            m.delete_volume(&n, false).await.unwrap();
        }
        m.delete_snapshot(&format!("s{i}")).await.unwrap();
        m.delete_snapshot(&format!("p{i}")).await.unwrap();
    }
    println!("| operation | n | p50 ms | p90 ms | max ms |\n|---|---|---|---|---|");
    stats("snapshot of the mounted volume", snap);
    stats(
        "peer: `sync -f` then the same snapshot (the earlier code)",
        snap_sync,
    );
    stats("clone of a snapshot", clone_snap);
    stats("clone of the mounted volume", clone_vol);
    stats("revert (unmounted volume)", revert);
    stats("expand of the mounted volume (online, +2 MiB)", expand);
    m.umount_volume("bench").await.unwrap();
    drop(m);
    let _ = Command::new("losetup").args(["-d", &data, &meta]).status();
}
