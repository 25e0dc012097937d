//! What the backup benchmarks (`bench_restic`, `bench_s3`) share: the test image (per 1 MiB
//! region ~30% zeros, ~35% text-like, ~35% random), the 1% change, timing of a child process
//! under GNU time, and content checks. Included by each as `#[path] mod bench_support`.

// Each example uses a different part of this module.
#![allow(dead_code)]

use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use convoy_backupstore::{
    BackupMeta, BackupRef, BackupTarget, NoProgress, RestoreOptions, TargetOptions,
};

/// A convoy child's S3 endpoint (unset: none) and index cache directory come through these.
pub const ENDPOINT_ENV: &str = "CONVOY_BENCH_S3_ENDPOINT";
pub const CACHE_ENV: &str = "CONVOY_BENCH_CACHE";
/// A convoy child's pack size in MiB (unset: the default).
pub const PACK_ENV: &str = "CONVOY_BENCH_PACK_MIB";

pub const MIB: u64 = 1 << 20;
pub const POOL_BLOCK: u64 = 2 * MIB;

pub fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

pub fn fill_random(buf: &mut [u8], seed: u64) {
    let mut s = seed | 1;
    for chunk in buf.chunks_mut(8) {
        let v = xorshift(&mut s).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

pub fn fill_text(buf: &mut [u8], seed: u64) {
    const WORDS: &[&str] = &[
        "volume",
        "snapshot",
        "backup",
        "the",
        "of",
        "and",
        "block",
        "device",
        "mapper",
        "thin",
        "pool",
        "docker",
        "container",
        "restore",
        "error",
        "info",
        "2026-11-25",
        "GET",
        "/v1/volumes",
        "200",
        "user",
        "id=",
        "level=debug",
        "msg=",
        "\n",
        "{\"key\":",
        "value",
        "}",
        "lorem",
        "ipsum",
        "data",
        "convoy",
    ];
    let mut s = seed | 1;
    let mut i = 0;
    while i < buf.len() {
        let r = xorshift(&mut s);
        let w = WORDS[(r % WORDS.len() as u64) as usize].as_bytes();
        let n = w.len().min(buf.len() - i);
        buf[i..i + n].copy_from_slice(&w[..n]);
        i += n;
        if i < buf.len() {
            buf[i] = if r & 0x100 != 0 {
                b' '
            } else {
                b'0' + (r >> 20) as u8 % 10
            };
            i += 1;
        }
    }
}

/// The benchmark's working directory: `$CONVOY_BENCH_DIR` (created, kept), or a temporary
/// one removed when the returned guard drops.
pub fn work_dir() -> (Option<tempfile::TempDir>, PathBuf) {
    let (tmp, work) = match std::env::var_os("CONVOY_BENCH_DIR") {
        Some(d) => (None, PathBuf::from(d)),
        None => {
            let t = tempfile::tempdir().unwrap();
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    std::fs::create_dir_all(&work).unwrap();
    (tmp, work)
}

pub fn make_image(path: &Path, size: u64) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    let mut buf = vec![0u8; MIB as usize];
    let mut s = 0x1234_5678_9abc_def1u64;
    for i in 0..size / MIB {
        match xorshift(&mut s) % 20 {
            0..=5 => continue, // 30% zeros (a hole in the file, read back as zeros)
            6..=12 => fill_text(&mut buf, 2 * i + 1),
            _ => fill_random(&mut buf, 2 * i + 1),
        }
        f.write_all_at(&buf, i * MIB).unwrap();
    }
    f.sync_all().unwrap();
}

/// Overwrites 1% of the pool blocks with new data; returns the changed byte ranges.
pub fn change_one_percent(path: &Path, size: u64) -> Vec<(u64, u64)> {
    let blocks = size / POOL_BLOCK;
    let n = (blocks / 100).max(1);
    let mut s = 0xfeed_beefu64;
    let mut chosen = std::collections::BTreeSet::new();
    while (chosen.len() as u64) < n {
        chosen.insert(xorshift(&mut s) % blocks);
    }
    let ranges: Vec<(u64, u64)> = chosen
        .iter()
        .map(|b| (b * POOL_BLOCK, (b + 1) * POOL_BLOCK))
        .collect();
    rewrite(path, &ranges, 777);
    ranges
}

/// Writes new data (random and text-like in turn, from `seed`) over `ranges`, whole
/// [`POOL_BLOCK`]s: the same blocks changed again, with data no backup holds yet.
pub fn rewrite(path: &Path, ranges: &[(u64, u64)], seed: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let mut buf = vec![0u8; POOL_BLOCK as usize];
    for (k, &(start, _)) in ranges.iter().enumerate() {
        let b = start / POOL_BLOCK;
        if k % 2 == 0 {
            fill_random(&mut buf, seed + b);
        } else {
            fill_text(&mut buf, seed + b);
        }
        f.write_all_at(&buf, start).unwrap();
    }
    f.sync_all().unwrap();
}

pub struct Measured {
    /// Wall time of the command and the `sync` after it.
    pub secs: f64,
    /// Wall time of the command alone.
    pub cmd_secs: f64,
    pub peak_rss_kib: u64,
    /// CPU time (user + system) of the command.
    pub cpu_secs: f64,
}

/// Runs `cmd` under GNU time, then `sync`; wall time includes the sync.
pub fn measure(cmd: Command, what: &str) -> Measured {
    let out = std::env::temp_dir().join(format!("convoy-bench-time-{}", std::process::id()));
    let program = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let mut timed = Command::new("/usr/bin/time");
    timed
        .arg("-f")
        .arg("%U %S %M")
        .arg("-o")
        .arg(&out)
        .arg(program)
        .args(args);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    let start = Instant::now();
    let status = timed.status().expect("run /usr/bin/time");
    let cmd_secs = start.elapsed().as_secs_f64();
    Command::new("sync").status().unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert!(status.success(), "{what} failed: {status}");
    let text = std::fs::read_to_string(&out).unwrap();
    let fields: Vec<&str> = text.lines().last().unwrap().split_whitespace().collect();
    let cpu_secs = fields[0].parse::<f64>().unwrap() + fields[1].parse::<f64>().unwrap();
    let peak_rss_kib = fields[2].parse().unwrap();
    Measured {
        secs,
        cmd_secs,
        peak_rss_kib,
        cpu_secs,
    }
}

pub fn tree_bytes(dir: &Path) -> (u64, u64) {
    let (mut apparent, mut allocated) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = e.metadata().unwrap();
            allocated += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            } else {
                apparent += m.len();
            }
        }
    }
    (apparent, allocated)
}

pub fn same_content(a: &Path, b: &Path) -> bool {
    let (fa, fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let size = fa.metadata().unwrap().len();
    if fb.metadata().unwrap().len() != size {
        return false;
    }
    let (mut x, mut y) = (vec![0u8; 8 << 20], vec![0u8; 8 << 20]);
    let mut off = 0;
    while off < size {
        let n = (size - off).min(x.len() as u64) as usize;
        fa.read_exact_at(&mut x[..n], off).unwrap();
        fb.read_exact_at(&mut y[..n], off).unwrap();
        if x[..n] != y[..n] {
            return false;
        }
        off += n as u64;
    }
    true
}

/// Names a directory where phases keep the names convoy made for their backups: with it, a
/// phase's backup name is a label (a backup gets a name made for it, as `convoy backup create`
/// gives, and `<dir>/<label>` records it for the phases after); without it, the label is the
/// backup's name, which the caller then gives (and the store checks is free).
pub const NAMES_ENV: &str = "CONVOY_BENCH_NAMES";

/// The backup name a label stands for (see [`NAMES_ENV`]).
fn name_of(label: &str) -> String {
    std::env::var_os(NAMES_ENV)
        .and_then(|d| std::fs::read_to_string(Path::new(&d).join(label)).ok())
        .unwrap_or_else(|| label.to_owned())
}

pub fn meta(size: u64, name: &str) -> BackupMeta {
    BackupMeta {
        backup_name: std::env::var_os(NAMES_ENV).is_none().then(|| name.into()),
        driver_name: "devicemapper".into(),
        volume_name: "bench".into(),
        volume_size: size,
        snapshot_name: name.into(),
        ..Default::default()
    }
}

/// A convoy phase, in this (child) process.
pub fn phase(args: &[String]) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut opts = TargetOptions {
            s3_endpoint: std::env::var(ENDPOINT_ENV).ok(),
            cache_dir: std::env::var_os(CACHE_ENV).map(PathBuf::from),
            // An encrypted store's phases get CONVOY_BACKUP_PASSPHRASE from the parent.
            secret: convoy_backupstore::SecretSource::choose(None, None, None),
            ..Default::default()
        };
        if let Some(mib) = std::env::var(PACK_ENV)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
        {
            opts.pack_size = mib << 20;
        }
        // As a running daemon does: the store was opened before (by an earlier command), and
        // this operation opens it again; only the operation is timed, into the file named.
        let warm = std::env::var_os(WARM_TIME_ENV).map(PathBuf::from);
        if warm.is_some() {
            let first = BackupTarget::open(&args[1], opts.clone()).unwrap();
            first.list(None).await.unwrap();
        }
        let started = std::time::Instant::now();
        let target = BackupTarget::open(&args[1], opts).unwrap();
        match args[0].as_str() {
            "init-encrypted" => {
                target.init(true).await.unwrap();
            }
            // backup DEST IMAGE NAME [PARENT RANGES-FILE]
            "backup" => {
                let img = std::fs::File::open(&args[2]).unwrap();
                let size = img.metadata().unwrap().len();
                let (parent, ranges) = match args.get(4) {
                    Some(parent) => (Some(name_of(parent)), read_ranges(Path::new(&args[5]))),
                    None => (None, vec![0..size]),
                };
                let out = target
                    .backup(
                        Arc::new(img),
                        &ranges,
                        parent.as_deref(),
                        meta(size, &args[3]),
                        &NoProgress,
                    )
                    .await
                    .unwrap();
                if let Some(dir) = std::env::var_os(NAMES_ENV) {
                    std::fs::create_dir_all(&dir).unwrap();
                    std::fs::write(Path::new(&dir).join(&args[3]), &out.backup.backup).unwrap();
                }
                eprintln!("convoy {}: {:?}", args[3], out.stats);
            }
            // restore DEST NAME OUT SIZE
            "restore" => {
                let size: u64 = args[4].parse().unwrap();
                let f = std::fs::File::create(&args[3]).unwrap();
                f.set_len(size).unwrap();
                // As convoy-core restores into a volume: direct I/O, synced at the end
                // (restic 0.14 does not sync what it restored).
                let f = convoy_backupstore::DirectFile::new(f, Path::new(&args[3])).unwrap();
                let r = BackupRef::new("bench", &name_of(&args[2])).unwrap();
                target
                    .restore(&r, Arc::new(f), &RestoreOptions::default(), &NoProgress)
                    .await
                    .unwrap();
            }
            // delete DEST NAME
            "delete" => {
                let r = BackupRef::new("bench", &name_of(&args[2])).unwrap();
                let stats = target.delete(&r).await.unwrap();
                eprintln!("convoy delete {}: {stats:?}", args[2]);
            }
            other => panic!("unknown phase {other}"),
        }
        if let Some(file) = warm {
            std::fs::write(file, started.elapsed().as_secs_f64().to_string()).unwrap();
        }
        // What the operation left running (a backup's lock record's removal, which a running
        // daemon does not wait for) is done before the process ends: within its wall time,
        // outside the warm operation's.
        target.settle().await;
    });
}

/// Names the file a phase writes its own duration to, after opening the store once untimed
/// (what a running daemon pays for an operation; see `phase`).
pub const WARM_TIME_ENV: &str = "CONVOY_BENCH_WARM_TIME_FILE";

/// Runs `cmd` (a `--phase` child) warm and returns the seconds its operation took.
pub fn measure_warm(mut cmd: Command, what: &str) -> f64 {
    let file = std::env::temp_dir().join(format!("convoy-bench-warm-{}", std::process::id()));
    let _ = std::fs::remove_file(&file);
    cmd.env(WARM_TIME_ENV, &file);
    let status = cmd.status().expect("run a phase");
    assert!(status.success(), "{what} failed: {status}");
    Command::new("sync").status().unwrap();
    std::fs::read_to_string(&file)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

pub fn read_ranges(path: &Path) -> Vec<std::ops::Range<u64>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let (a, b) = l.split_once(' ').unwrap();
            a.parse().unwrap()..b.parse().unwrap()
        })
        .collect()
}

pub fn write_ranges(path: &Path, ranges: &[(u64, u64)]) {
    let mut f = std::fs::File::create(path).unwrap();
    for (a, b) in ranges {
        writeln!(f, "{a} {b}").unwrap();
    }
}
