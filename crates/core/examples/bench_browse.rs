//! Getting one file back out of a block backup: by browsing it (`mount_backup`, copy the file,
//! `umount_backup`) against its peer, a whole restore into a new volume (`create_volume` with
//! the backup, mount it, copy the file). A devicemapper volume of `CONVOY_BENCH_VOLUME_GIB`
//! (default 4) holding `CONVOY_BENCH_FILL_GIB` (default 3) of data files plus one 10 MiB file
//! is backed up to a `vfs://` store on the same disk; the page cache is dropped before each
//! timed phase; each phase runs `CONVOY_BENCH_ROUNDS` times (default 3), interleaved.
//!
//! ```text
//! cargo xtask bench browse            # builds it in release and runs it in the VM
//! ```
//!
//! Needs root, a dm-thin kernel and the nbd driver. Makes its own loop devices over sparse
//! files in `TMPDIR`.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "support/mod.rs"]
mod support;
use support::{drop_caches, loop_device, noise, run};

use convoy_core::{CreateVolumeRequest, ManagerConfig, NoProgress, VolumeManager};

const MIB: u64 = 1 << 20;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map_or(default, |v| v.parse().expect(name))
}

fn named(name: &str) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: Some(name.into()),
        ..Default::default()
    }
}

fn secs(v: &[Duration]) -> String {
    let mut v = v.to_vec();
    v.sort();
    let s: Vec<String> = v
        .iter()
        .map(|d| format!("{:.2}", d.as_secs_f64()))
        .collect();
    format!(
        "median {:.2} s (all: {})",
        v[v.len() / 2].as_secs_f64(),
        s.join(", ")
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let volume_gib = env_u64("CONVOY_BENCH_VOLUME_GIB", 4);
    let fill_gib = env_u64("CONVOY_BENCH_FILL_GIB", 3);
    let rounds = env_u64("CONVOY_BENCH_ROUNDS", 3) as usize;
    let dir = tempfile::tempdir().unwrap();
    // Room for the volume and one restored copy at a time.
    let data = loop_device(&dir.path().join("data"), (2 * volume_gib + 1) << 30);
    let meta = loop_device(&dir.path().join("meta"), 128 * MIB);
    let config = ManagerConfig {
        root: dir.path().join("root"),
        drivers: vec!["devicemapper".into()],
        driver_opts: BTreeMap::from([
            ("dm.datadev".into(), data.clone()),
            ("dm.metadatadev".into(), meta.clone()),
            ("dm.thinpoolname".into(), "bench-browse".into()),
            ("dm.defaultvolumesize".into(), format!("{volume_gib}g")),
        ]),
    };
    let m = VolumeManager::open(config).await.unwrap();
    m.create_volume(named("src"), Arc::new(NoProgress))
        .await
        .unwrap();
    let at = m.mount_volume("src", None).await.unwrap();
    let t = Instant::now();
    // Data files of 64 MiB: a third random, a third text-like, a third zeros.
    let files = fill_gib * 1024 / 64;
    for i in 0..files {
        let body = support::data_file(i);
        let mut f = std::fs::File::create(at.join(format!("data{i:03}"))).unwrap();
        f.write_all(&body).unwrap();
    }
    let wanted = noise(7, (10 * MIB) as usize);
    std::fs::write(at.join("wanted.bin"), &wanted).unwrap();
    run("sync", &[]);
    println!(
        "filled {files} files of 64 MiB + one of 10 MiB in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    m.create_snapshot("src", Some("s1".into())).await.unwrap();
    let dest = format!("vfs://{}", dir.path().join("store").display());
    let t = Instant::now();
    let report = m
        .create_backup_report("s1", &dest, &Default::default(), Arc::new(NoProgress))
        .await
        .unwrap();
    println!(
        "backup: {:.1} s, {} bytes read",
        t.elapsed().as_secs_f64(),
        report.bytes_read
    );
    let url = report.backup_url;
    let store = Default::default();
    let out = dir.path().join("copied.bin");
    let mnt = dir.path().join("browse");
    std::fs::create_dir(&mnt).unwrap();
    let (mut browse, mut restore) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        drop_caches();
        let t = Instant::now();
        m.mount_backup(&url, &mnt, &store).await.unwrap();
        std::fs::copy(mnt.join("wanted.bin"), &out).unwrap();
        m.umount_backup(&mnt).await.unwrap();
        browse.push(t.elapsed());
        assert!(
            std::fs::read(&out).unwrap() == wanted,
            "browsed copy differs"
        );
        std::fs::remove_file(&out).unwrap();

        drop_caches();
        let name = format!("restored{round}");
        let t = Instant::now();
        m.create_volume(
            CreateVolumeRequest {
                backup_url: Some(url.clone()),
                ..named(&name)
            },
            Arc::new(NoProgress),
        )
        .await
        .unwrap();
        let r = m.mount_volume(&name, None).await.unwrap();
        std::fs::copy(r.join("wanted.bin"), &out).unwrap();
        restore.push(t.elapsed());
        assert!(
            std::fs::read(&out).unwrap() == wanted,
            "restored copy differs"
        );
        std::fs::remove_file(&out).unwrap();
        m.umount_volume(&name).await.unwrap();
        m.delete_volume(&name, false).await.unwrap();
    }
    let med = |v: &[Duration]| {
        let mut v = v.to_vec();
        v.sort();
        v[v.len() / 2].as_secs_f64()
    };
    println!(
        "| one 10 MiB file out of a {volume_gib} GiB backup ({fill_gib} GiB of data) | time |"
    );
    println!("|---|---|");
    println!("| browse: mount, copy, umount | {} |", secs(&browse));
    println!(
        "| restore whole: create --backup, mount, copy | {} |",
        secs(&restore)
    );
    println!(
        "browse is {:.1}x faster than a whole restore",
        med(&restore) / med(&browse)
    );
    m.umount_volume("src").await.unwrap();
    drop(m);
    let _ = Command::new("losetup").args(["-d", &data, &meta]).status();
}
