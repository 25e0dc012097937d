//! Snapshot latency of an active, mounted 1 GiB ext4 thin volume under a concurrent writer.
//!
//! Measures `ThinPool::create_snap` (suspend with flush and filesystem freeze, `create_snap`
//! message, resume) over N snapshots (default 100) and, interleaved in the same run as the peer,
//! the same operation done the classic way with three `dmsetup` commands (suspend, message,
//! resume). Prints p50 / p99 / max of both and their ratio. Each snapshot is deleted right after
//! it is measured (not timed), so the pool does not fill up.
//!
//! Needs device-mapper, root, `losetup`, `mkfs.ext4`, `dmsetup`. Run it in the VM:
//!
//! ```text
//! cargo build -p convoy-thinpool --release --example bench_snapshot
//! cargo xtask vm -- target/release/examples/bench_snapshot [N]
//! ```
//!
//! Its sparse backing files (768 MiB data, 64 MiB metadata) go to `$TMPDIR` (the guest's `/tmp`,
//! a tmpfs of half the guest's memory).

use std::error::Error;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use convoy_thinpool::{PoolConfig, Sectors, ThinId, ThinPool};

type Res<T> = Result<T, Box<dyn Error>>;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

fn run(cmd: &str, args: &[&str]) -> Res<String> {
    let out = Command::new(cmd).args(args).output()?;
    if !out.status.success() {
        return Err(format!(
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Loop devices, mount and pool, cleaned up on drop in reverse order.
struct Setup {
    dir: PathBuf,
    loops: Vec<String>,
    mount: Option<PathBuf>,
    pool: Option<ThinPool>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(m) = self.mount.take() {
            let _ = Command::new("umount").arg(&m).status();
        }
        if let Some(pool) = self.pool.take() {
            if let Err(e) = pool.teardown() {
                eprintln!("teardown: {e}");
            }
        }
        for l in self.loops.drain(..).rev() {
            let _ = Command::new("losetup").args(["-d", &l]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn loop_device(path: &Path, size: u64) -> Res<String> {
    File::create(path)?.set_len(size)?;
    run("losetup", &["-f", "--show", path.to_str().ok_or("path")?])
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() -> Res<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100);
    let dir = std::env::temp_dir().join(format!("bench-snapshot-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut setup = Setup {
        dir: dir.clone(),
        loops: Vec::new(),
        mount: None,
        pool: None,
    };
    // 768 MiB of pool data for a 1 GiB thin volume (thin: only what is written is allocated).
    // The pool's allocator walks the whole data device before reusing freed blocks, so the
    // backing file grows to this size: it must fit the guest's tmpfs /tmp (half its memory).
    let data = loop_device(&dir.join("data.img"), 768 * MIB)?;
    setup.loops.push(data.clone());
    let meta = loop_device(&dir.join("meta.img"), 64 * MIB)?;
    setup.loops.push(meta.clone());

    let config = PoolConfig::new(&data, &meta).with_name("bench-snap-pool");
    let pool = setup.pool.insert(ThinPool::create(config)?);
    let origin_id = ThinId::new(0)?;
    pool.create_thin(origin_id)?;
    let origin = pool.activate(origin_id, "bench-snap-origin", Sectors(GIB / 512))?;
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-E",
            "lazy_itable_init=0,lazy_journal_init=0",
            origin.path.to_str().ok_or("path")?,
        ],
    )?;
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt)?;
    run(
        "mount",
        &[
            "-o",
            "noatime",
            origin.path.to_str().ok_or("path")?,
            mnt.to_str().ok_or("path")?,
        ],
    )?;
    setup.mount = Some(mnt.clone());

    // The concurrent writer: rewrites 32 files of 1 MiB in a loop, fsyncing each.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, written, mnt) = (stop.clone(), written.clone(), mnt.clone());
        thread::spawn(move || -> std::io::Result<()> {
            let buf: Vec<u8> = (0..MIB).map(|i| (i * 7 + 3) as u8).collect();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut f = File::create(mnt.join(format!("f{}", i % 32)))?;
                f.write_all(&buf)?;
                f.sync_all()?;
                written.fetch_add(MIB, Ordering::Relaxed);
                i += 1;
            }
            Ok(())
        })
    };
    while written.load(Ordering::Relaxed) < 8 * MIB {
        thread::sleep(Duration::from_millis(5));
    }

    let pool = setup.pool.as_ref().ok_or("pool")?;
    let pool_name = pool.name().to_owned();
    let mut ours = Vec::with_capacity(n);
    let mut peer = Vec::with_capacity(n);
    let started = Instant::now();
    let written_before = written.load(Ordering::Relaxed);
    for i in 0..n {
        let snap = ThinId::new(1 + i as u64 % 2)?;
        // Ours.
        let t = Instant::now();
        pool.create_snap(snap, origin_id)?;
        ours.push(t.elapsed());
        pool.delete(snap)?;
        // Peer: dmsetup suspend / message / resume.
        let t = Instant::now();
        run("dmsetup", &["suspend", &origin.name])?;
        let msg = run(
            "dmsetup",
            &[
                "message",
                &pool_name,
                "0",
                &format!("create_snap {snap} {origin_id}"),
            ],
        );
        run("dmsetup", &["resume", &origin.name])?;
        peer.push(t.elapsed());
        msg?;
        pool.delete(snap)?;
    }
    let elapsed = started.elapsed();
    let written_during = written.load(Ordering::Relaxed) - written_before;
    stop.store(true, Ordering::Relaxed);
    writer.join().map_err(|_| "writer panicked")??;

    ours.sort();
    peer.sort();
    println!("snapshot latency, mounted 1 GiB ext4 thin volume, concurrent fsync writer, n={n}");
    println!(
        "writer throughput during the run: {:.1} MiB/s",
        written_during as f64 / MIB as f64 / elapsed.as_secs_f64()
    );
    for (label, v) in [
        ("convoy-thinpool create_snap", &ours),
        ("dmsetup suspend+message+resume", &peer),
    ] {
        println!(
            "{label:32} p50 {:8.2} ms  p99 {:8.2} ms  max {:8.2} ms",
            ms(percentile(v, 0.50)),
            ms(percentile(v, 0.99)),
            ms(percentile(v, 1.0)),
        );
    }
    println!(
        "ratio dmsetup/convoy: p50 {:.2}x  p99 {:.2}x",
        ms(percentile(&peer, 0.50)) / ms(percentile(&ours, 0.50)),
        ms(percentile(&peer, 0.99)) / ms(percentile(&ours, 0.99)),
    );
    drop(setup);
    Ok(())
}
