//! Instant restore (`create_volume` with `instant`), measured against its peer, a plain
//! restore of the same backup: for each volume size in `CONVOY_BENCH_SIZES_GIB` (default
//! `1,4`), a devicemapper volume three quarters full of data files (a third random, a third
//! text-like, a third zeros) and a small file is backed up to a `vfs://` store on the same
//! disk; then, with the page cache dropped before each,
//!
//! * **first read**: from the instant create to the first successful read of the small file
//!   through the mounted volume (create, mount, read);
//! * **fill**: from the instant create to the end of its background fill (the volume handed
//!   over to its thin device), against the whole of a plain restore (`create --backup`);
//!
//! each `CONVOY_BENCH_ROUNDS` times (default 2), interleaved. Prints the ratio plain / fill
//! (≥ 1: the fill is as fast as a plain restore).
//!
//! ```text
//! cargo xtask bench instant            # builds it in release and runs it in the VM
//! ```
//!
//! Needs root, a dm-thin kernel and the nbd driver. Makes its own loop devices over sparse
//! files in `TMPDIR`, with direct I/O (`CONVOY_BENCH_LOOP=buffered`: without).
//! `CONVOY_BENCH_FIRST_READ_ONLY=1` times the first read alone.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "support/mod.rs"]
mod support;
use support::{direct_loop_device, drop_caches, loop_device, run};

use convoy_core::{CreateVolumeRequest, ManagerConfig, NoProgress, VolumeManager};

const MIB: u64 = 1 << 20;

fn named(name: &str, size_gib: u64) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: Some(name.into()),
        size: Some(size_gib << 30),
        ..Default::default()
    }
}

fn median(v: &[Duration]) -> f64 {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2].as_secs_f64()
}

fn all(v: &[Duration]) -> String {
    v.iter()
        .map(|d| format!("{:.2}", d.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Waits for the fill of `name` to end; answers when it did.
async fn wait_filled(m: &VolumeManager, name: &str) -> Instant {
    loop {
        let v = m.inspect_volume(name).await.unwrap();
        if !v.driver_info.contains_key("InstantRestore") {
            return Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Row {
    size_gib: u64,
    data_mib: u64,
    first_read: Vec<Duration>,
    /// The first read's parts: create, mount, read.
    parts: Vec<[Duration; 3]>,
    fill: Vec<Duration>,
    plain: Vec<Duration>,
}

async fn one_size(m: &VolumeManager, dir: &Path, size_gib: u64, rounds: usize) -> Row {
    let src = format!("src{size_gib}");
    m.create_volume(named(&src, size_gib), Arc::new(NoProgress))
        .await
        .unwrap();
    let at = m.mount_volume(&src, None).await.unwrap();
    // Files of 64 MiB filling three quarters of the volume.
    let files = size_gib * 1024 * 3 / 4 / 64;
    for i in 0..files {
        let body = support::data_file(i);
        let mut f = std::fs::File::create(at.join(format!("data{i:03}"))).unwrap();
        f.write_all(&body).unwrap();
    }
    let hello = b"hello from the backup\n".repeat(100);
    std::fs::write(at.join("hello.txt"), &hello).unwrap();
    run("sync", &[]);
    let snap = format!("s{size_gib}");
    m.create_snapshot(&src, Some(snap.clone())).await.unwrap();
    m.umount_volume(&src).await.unwrap();
    let dest = format!("vfs://{}", dir.join("store").display());
    let url = m
        .create_backup_report(&snap, &dest, &Default::default(), Arc::new(NoProgress))
        .await
        .unwrap()
        .backup_url;
    let mut row = Row {
        size_gib,
        data_mib: files * 64,
        first_read: Vec::new(),
        parts: Vec::new(),
        fill: Vec::new(),
        plain: Vec::new(),
    };
    for round in 0..rounds {
        drop_caches();
        let name = format!("instant{size_gib}-{round}");
        let t = Instant::now();
        m.create_volume(
            CreateVolumeRequest {
                backup_url: Some(url.clone()),
                instant: true,
                ..named(&name, size_gib)
            },
            Arc::new(NoProgress),
        )
        .await
        .unwrap();
        let created = t.elapsed();
        let r = m.mount_volume(&name, None).await.unwrap();
        let mounted = t.elapsed();
        let got = std::fs::read(r.join("hello.txt")).unwrap();
        let read = t.elapsed();
        row.first_read.push(read);
        row.parts.push([created, mounted - created, read - mounted]);
        assert!(got == hello, "the first read differs");
        if std::env::var("CONVOY_BENCH_READ_ALL").is_ok_and(|v| v == "1") {
            // Every data file read back during the fill, in order: on-demand reads.
            let t = Instant::now();
            let mut bytes = 0u64;
            for i in 0..files {
                bytes += std::fs::read(r.join(format!("data{i:03}"))).unwrap().len() as u64;
            }
            let s = t.elapsed().as_secs_f64();
            println!(
                "{name}: read every file during the fill: {} MiB in {s:.2} s, {:.0} MiB/s",
                bytes >> 20,
                (bytes >> 20) as f64 / s
            );
        }
        if first_read_only() {
            m.umount_volume(&name).await.unwrap();
            m.delete_volume(&name, false).await.unwrap();
            continue;
        }
        let done = wait_filled(m, &name).await;
        row.fill.push(done - t);
        m.umount_volume(&name).await.unwrap();
        m.delete_volume(&name, false).await.unwrap();

        drop_caches();
        let name = format!("plain{size_gib}-{round}");
        let t = Instant::now();
        m.create_volume(
            CreateVolumeRequest {
                backup_url: Some(url.clone()),
                ..named(&name, size_gib)
            },
            Arc::new(NoProgress),
        )
        .await
        .unwrap();
        row.plain.push(t.elapsed());
        m.delete_volume(&name, false).await.unwrap();
    }
    m.delete_volume(&src, false).await.unwrap();
    row
}

/// `CONVOY_BENCH_FIRST_READ_ONLY=1`: time the first read alone (no fill, no plain restore).
fn first_read_only() -> bool {
    std::env::var("CONVOY_BENCH_FIRST_READ_ONLY").is_ok_and(|v| v == "1")
}

/// Median of each part of the first read (create, mount, read).
fn parts(v: &[[Duration; 3]]) -> String {
    (0..3)
        .map(|i| {
            let p: Vec<Duration> = v.iter().map(|r| r[i]).collect();
            format!("{:.2}", median(&p))
        })
        .collect::<Vec<_>>()
        .join(" + ")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let sizes: Vec<u64> = std::env::var("CONVOY_BENCH_SIZES_GIB")
        .unwrap_or_else(|_| "1,4".into())
        .split(',')
        .map(|s| s.trim().parse().expect("CONVOY_BENCH_SIZES_GIB"))
        .collect();
    let rounds: usize = std::env::var("CONVOY_BENCH_ROUNDS")
        .ok()
        .map_or(2, |v| v.parse().expect("CONVOY_BENCH_ROUNDS"));
    let largest = sizes.iter().copied().max().unwrap_or(4);
    let dir = tempfile::tempdir().unwrap();
    // Room for a source volume and one restored copy at a time.
    // Direct I/O: a disk's flush, not a write-out of a buffered loop file (see the helper);
    // `CONVOY_BENCH_LOOP=buffered` for the loop devices of `cargo xtask dev-pool` and the tests.
    let buffered = std::env::var("CONVOY_BENCH_LOOP").is_ok_and(|v| v == "buffered");
    let attach = if buffered {
        loop_device
    } else {
        direct_loop_device
    };
    println!(
        "pool on {} loop devices",
        if buffered { "buffered" } else { "direct-I/O" }
    );
    let data = attach(&dir.path().join("data"), (2 * largest + 1) << 30);
    let meta = attach(&dir.path().join("meta"), 128 * MIB);
    let config = ManagerConfig {
        root: dir.path().join("root"),
        drivers: vec!["devicemapper".into()],
        driver_opts: BTreeMap::from([
            ("dm.datadev".into(), data.clone()),
            ("dm.metadatadev".into(), meta.clone()),
            ("dm.thinpoolname".into(), "bench-instant".into()),
        ]),
    };
    let m = VolumeManager::open(config).await.unwrap();
    let mut rows = Vec::new();
    for size in sizes {
        rows.push(one_size(&m, dir.path(), size, rounds).await);
    }
    println!(
        "| volume (data) | first read after the command | create + mount + read | instant fill | \
         plain restore | plain / fill |"
    );
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        let (fill, plain) = if r.fill.is_empty() {
            ("not run".to_string(), "not run".to_string())
        } else {
            (
                format!("{:.2} s ({})", median(&r.fill), all(&r.fill)),
                format!("{:.2} s ({})", median(&r.plain), all(&r.plain)),
            )
        };
        let ratio = if r.fill.is_empty() {
            "-".to_string()
        } else {
            format!("{:.2}x", median(&r.plain) / median(&r.fill))
        };
        println!(
            "| {} GiB ({} MiB) | {:.2} s ({}) | {} s | {fill} | {plain} | {ratio} |",
            r.size_gib,
            r.data_mib,
            median(&r.first_read),
            all(&r.first_read),
            parts(&r.parts),
        );
    }
    drop(m);
    let _ = Command::new("losetup").args(["-d", &data, &meta]).status();
}
