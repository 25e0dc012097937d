//! Shared by the concurrency scenarios (`rel_concurrency.rs`, `rel_docker_storm.rs`): a client
//! with its own runtime per thread, a devicemapper daemon on loop devices with the checks that
//! nothing is left of its volumes, latency bookkeeping, vfs store scans and the Docker plugin
//! Mount/Unmount storm.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use convoy_api::wire::*;
use convoy_api::{ApiError, Client};
use convoy_e2e::run;

use crate::cli_support::TestDaemon;
use crate::rel_support::{self, rng, Figure};

/// A client of the daemon with its own single-thread runtime (one per test thread).
pub struct Api {
    rt: tokio::runtime::Runtime,
    /// The client.
    pub c: Client,
}

impl Api {
    pub fn new(socket: &Path) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Api {
            rt,
            c: Client::new(socket),
        }
    }

    pub fn run<T>(&self, f: impl Future<Output = T>) -> T {
        self.rt.block_on(f)
    }

    pub fn create(
        &self,
        name: &str,
        size: Option<u64>,
        backup: &str,
    ) -> Result<VolumeResponse, ApiError> {
        let req = VolumeCreateRequest {
            name: name.into(),
            driver_name: String::new(),
            size,
            backup_url: backup.into(),
            ..Default::default()
        };
        self.run(self.c.create_volume(&req))
    }

    pub fn delete(&self, name: &str) -> Result<(), ApiError> {
        let req = VolumeDeleteRequest {
            volume_name: name.into(),
            reference_only: false,
        };
        self.run(self.c.delete_volume(&req))
    }

    pub fn mount(&self, name: &str) -> Result<VolumeResponse, ApiError> {
        let req = VolumeMountRequest {
            volume_name: name.into(),
            mount_point: String::new(),
            ..Default::default()
        };
        self.run(self.c.mount_volume(&req))
    }

    pub fn snapshot(&self, volume: &str, name: &str) -> Result<SnapshotResponse, ApiError> {
        let req = SnapshotCreateRequest {
            name: name.into(),
            volume_name: volume.into(),
            ..Default::default()
        };
        self.run(self.c.create_snapshot(&req))
    }

    pub fn backup(&self, snapshot: &str, dest: &str) -> Result<String, ApiError> {
        let req = BackupCreateRequest {
            url: dest.into(),
            snapshot_name: snapshot.into(),
            ..Default::default()
        };
        self.run(self.c.create_backup(&req)).map(|r| r.url)
    }

    pub fn delete_backup(&self, url: &str) -> Result<(), ApiError> {
        let req = BackupUrlRequest {
            url: url.into(),
            s3_endpoint: String::new(),
        };
        self.run(self.c.delete_backup(&req))
    }
}

/// Runs `f`, answering its result and how long it took in milliseconds.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed().as_millis() as u64)
}

/// An error is clear when it has a message naming the object it is about.
pub fn assert_clear(e: &ApiError, object: &str, what: &str) {
    let message = e.to_string();
    assert!(
        message.contains(object),
        "{what}: error does not name {object}: {message:?} (seed {})",
        rel_support::seed()
    );
}

pub use convoy_e2e::dm_names;

/// A devicemapper daemon on a pool over loop devices ([`convoy_e2e::DmDisks`]). Drop order:
/// daemon, devices, loop devices, files.
pub struct DmDaemon {
    pub d: TestDaemon,
    pub tag: String,
    pub pool: String,
    disks: convoy_e2e::DmDisks,
}

impl DmDaemon {
    pub fn start(scenario: &str, data_bytes: u64, default_size: &str) -> Self {
        let disks = convoy_e2e::DmDisks::new(&format!("rc{scenario}"), data_bytes, 128 << 20);
        let flags = disks.daemon_flags(&[&format!("dm.defaultvolumesize={default_size}")]);
        let d = TestDaemon::start_with(&[], |_| flags);
        DmDaemon {
            d,
            tag: disks.tag.clone(),
            pool: disks.pool.clone(),
            disks,
        }
    }

    /// Thin device ids in the pool's metadata (read under a metadata snapshot).
    pub fn thin_ids(&self) -> Vec<u64> {
        run(
            "dmsetup",
            &["message", &self.pool, "0", "reserve_metadata_snap"],
        );
        let dump = Command::new("thin_dump")
            .args(["-m", self.disks.meta.as_str()])
            .output();
        run(
            "dmsetup",
            &["message", &self.pool, "0", "release_metadata_snap"],
        );
        let dump = dump.expect("thin_dump");
        assert!(dump.status.success(), "thin_dump: {dump:?}");
        String::from_utf8_lossy(&dump.stdout)
            .lines()
            .filter_map(|l| l.trim().strip_prefix("<device dev_id=\""))
            .filter_map(|l| l.split('"').next()?.parse().ok())
            .collect()
    }

    /// Checks that nothing of any volume is left: records, devices, mounts, thin ids.
    pub fn assert_empty(&self, figure: &mut Figure, context: &str) {
        let list = self.d.json(&["list"]);
        assert_eq!(list, serde_json::json!({}), "{context}: volumes left");
        let records: Vec<_> = std::fs::read_dir(self.d.root.join("devicemapper/volumes"))
            .map(|dir| dir.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(records.is_empty(), "{context}: records left: {records:?}");
        let devices: Vec<_> = dm_names(&self.tag)
            .into_iter()
            .filter(|n| *n != self.pool)
            .collect();
        assert!(
            devices.is_empty(),
            "{context}: thin devices left: {devices:?}"
        );
        let ids = self.thin_ids();
        assert!(ids.is_empty(), "{context}: orphan thin ids {ids:?}");
        assert_no_mounts_under(self.d.dir.path(), context);
        figure.checks += 5;
    }
}

pub fn assert_no_mounts_under(dir: &Path, context: &str) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = dir.to_string_lossy();
    let left: Vec<_> = mountinfo.lines().filter(|l| l.contains(&*dir)).collect();
    assert!(left.is_empty(), "{context}: mounts left: {left:?}");
}

/// p-th percentile (0..=100) of sorted `v`.
pub fn percentile(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) * p).div_ceil(100)]
}

/// Latencies of one kind of call, by phase.
#[derive(Default)]
pub struct Latencies(pub BTreeMap<&'static str, Vec<u64>>);

impl Latencies {
    pub fn add(&mut self, kind: &'static str, ms: u64) {
        self.0.entry(kind).or_default().push(ms);
    }
    pub fn max(&self, kind: &str) -> u64 {
        self.0
            .get(kind)
            .and_then(|v| v.iter().max().copied())
            .unwrap_or(0)
    }
    pub fn all_sorted(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.0.values().flatten().copied().collect();
        v.sort_unstable();
        v
    }
}

/// One round of unrelated work on a small volume: create, mount, write, snapshot, inspect,
/// list, umount, delete; each call timed.
pub fn unrelated_round(api: &Api, name: &str, lat: &mut Latencies) {
    let snap = format!("{name}-s");
    let (r, ms) = timed(|| api.create(name, None, ""));
    r.unwrap_or_else(|e| panic!("create {name}: {e}"));
    lat.add("create", ms);
    let (r, ms) = timed(|| api.mount(name));
    let v = r.unwrap_or_else(|e| panic!("mount {name}: {e}"));
    lat.add("mount", ms);
    std::fs::write(Path::new(&v.mount_point).join("f"), name).unwrap();
    let (r, ms) = timed(|| api.snapshot(name, &snap));
    r.unwrap_or_else(|e| panic!("snapshot {name}: {e}"));
    lat.add("snapshot", ms);
    let (r, ms) = timed(|| api.run(api.c.inspect_volume(name)));
    r.unwrap_or_else(|e| panic!("inspect {name}: {e}"));
    lat.add("inspect", ms);
    let (r, ms) = timed(|| api.run(api.c.list_volumes("")));
    r.unwrap_or_else(|e| panic!("list: {e}"));
    lat.add("list", ms);
    let (r, ms) = timed(|| api.run(api.c.umount_volume(name)));
    r.unwrap_or_else(|e| panic!("umount {name}: {e}"));
    lat.add("umount", ms);
    let (r, ms) = timed(|| api.delete(name));
    r.unwrap_or_else(|e| panic!("delete {name}: {e}"));
    lat.add("delete", ms);
}

/// Fills `path` with `bytes` of seeded, incompressible data; answers nothing.
pub fn fill(path: &Path, bytes: usize, rng: &mut fastrand::Rng) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..bytes.div_ceil(chunk.len()) {
        rng.fill(&mut chunk);
        f.write_all(&chunk).unwrap();
    }
    f.into_inner().unwrap().sync_all().unwrap();
}

/// Every regular file under `dir` (relative path → bytes).
pub fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// Rewrites one random file of the volume directory (sometimes adds one), seeded.
pub fn change(dir: &Path, files: usize, rng: &mut fastrand::Rng) {
    let mut data = vec![0u8; rng.usize(1..=(256 << 10))];
    rng.fill(&mut data);
    std::fs::write(dir.join(format!("f{}", rng.usize(..files + 1))), data).unwrap();
}

/// Blocks of a `vfs://` store no live backup references, and reference records of backups
/// that do not exist.
pub fn store_orphans(store: &Path) -> (Vec<String>, Vec<String>) {
    let names = |d: PathBuf| -> Vec<String> {
        std::fs::read_dir(d)
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut live = BTreeSet::new();
    for v in names(store.join("volumes")) {
        for m in names(store.join("volumes").join(&v).join("backups")) {
            if let Some(b) = m.strip_suffix(".manifest") {
                live.insert(format!("{v}+{b}"));
            }
        }
    }
    let mut orphan_blocks = Vec::new();
    for prefix in names(store.join("packs")) {
        for block in names(store.join("packs").join(&prefix)) {
            if !names(store.join("refs").join(&block))
                .iter()
                .any(|r| live.contains(r))
            {
                orphan_blocks.push(block);
            }
        }
    }
    let mut stale_refs = Vec::new();
    for block in names(store.join("refs")) {
        for r in names(store.join("refs").join(&block)) {
            if !live.contains(&r) {
                stale_refs.push(format!("{block}/{r}"));
            }
        }
    }
    (orphan_blocks, stale_refs)
}

/// A Docker plugin call; answers the JSON (every plugin answer is HTTP 200).
pub fn plugin(api: &Api, endpoint: &str, body: String) -> serde_json::Value {
    let answer = api
        .run(api.c.raw("POST", endpoint, body.clone(), false))
        .unwrap_or_else(|e| panic!("{endpoint} {body}: {e}"));
    assert_eq!(answer.status, 200, "{endpoint} {body}");
    serde_json::from_slice(&answer.body).unwrap()
}

/// Parallel Mount/Unmount storms with random IDs on `volumes`; answers (calls, checks).
pub fn mount_storm(d: &TestDaemon, volumes: &[String], threads: usize, ops: usize) -> (u64, u64) {
    let mut seeds = rng("mount-storm");
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (socket, volumes) = (d.socket.clone(), volumes.to_vec());
            let seed = seeds.u64(..);
            std::thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(seed);
                let api = Api::new(&socket);
                let id = |rng: &mut fastrand::Rng| -> String {
                    (0..4).map(|_| format!("{:016x}", rng.u64(..))).collect()
                };
                let body = |v: &str, id: &str| format!("{{\"Name\":\"{v}\",\"ID\":\"{id}\"}}\n");
                let mut held: Vec<(String, String)> = Vec::new();
                let (mut calls, mut checks) = (0u64, 0u64);
                for op in 0..ops {
                    if held.is_empty() || rng.u8(..3) > 0 && held.len() < 6 {
                        let v = volumes[rng.usize(..volumes.len())].clone();
                        let i = id(&mut rng);
                        let m = plugin(&api, "/VolumeDriver.Mount", body(&v, &i));
                        assert_eq!(m["Err"], "", "thread {t} op {op}: mount {v}: {m}");
                        assert_ne!(m["Mountpoint"], "", "thread {t} op {op}: {m}");
                        held.push((v, i));
                    } else {
                        let (v, i) = held.swap_remove(rng.usize(..held.len()));
                        let u = plugin(&api, "/VolumeDriver.Unmount", body(&v, &i));
                        assert_eq!(u["Err"], "", "thread {t} op {op}: unmount {v}: {u}");
                        if rng.bool() {
                            // The same ID again, or one never seen: a harmless no-op.
                            let i = if rng.bool() { i } else { id(&mut rng) };
                            let u = plugin(&api, "/VolumeDriver.Unmount", body(&v, &i));
                            assert_eq!(u["Err"], "", "thread {t} op {op}: stray unmount: {u}");
                            calls += 1;
                        }
                    }
                    calls += 1;
                    // While this thread holds a volume, it stays mounted.
                    for v in volumes.iter().filter(|v| held.iter().any(|(h, _)| h == *v)) {
                        let mine = held.iter().filter(|(h, _)| h == v).count() as u64;
                        let g = plugin(&api, "/VolumeDriver.Get", format!("{{\"Name\":\"{v}\"}}"));
                        let vol = &g["Volume"];
                        assert_ne!(
                            vol["Mountpoint"], "",
                            "thread {t} op {op}: {v} unmounted while held: {g}"
                        );
                        let holders = vol["Status"]["DockerMounts"].as_u64().unwrap_or(0);
                        assert!(
                            holders >= mine,
                            "thread {t} op {op}: {v} holders {holders} < {mine}: {g}"
                        );
                        calls += 1;
                        checks += 2;
                    }
                }
                for (v, i) in held {
                    let u = plugin(&api, "/VolumeDriver.Unmount", body(&v, &i));
                    assert_eq!(u["Err"], "", "thread {t}: final unmount {v}: {u}");
                    calls += 1;
                }
                (calls, checks)
            })
        })
        .collect();
    workers
        .into_iter()
        .map(|w| w.join().expect("a storm thread failed"))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// After a storm: every volume unmounted, no Docker reference left (also after a restart).
pub fn assert_released(d: &mut TestDaemon, volumes: &[String]) -> u64 {
    let mut checks = 0;
    for pass in ["after the storm", "after a restart"] {
        for v in volumes {
            assert_eq!(
                d.json(&["inspect", v])["MountPoint"],
                "",
                "{pass}: {v} still mounted"
            );
            let g = d.docker("/VolumeDriver.Get", &format!("{{\"Name\":\"{v}\"}}"));
            assert_eq!(g["Volume"]["Status"]["DockerMounts"], 0, "{pass}: {g}");
            checks += 2;
        }
        let table = std::fs::read_to_string(d.root.join("docker-mounts.json")).unwrap_or_default();
        let table: serde_json::Value =
            serde_json::from_str(&table).unwrap_or(serde_json::json!({}));
        assert_eq!(
            table,
            serde_json::json!({}),
            "{pass}: Docker mount table not empty"
        );
        assert_no_mounts_under(&d.root, pass);
        checks += 2;
        if pass == "after the storm" {
            d.restart();
        }
    }
    checks
}
