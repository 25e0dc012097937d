//! Reliability suite, concurrency (issue 8): many calls at once against one daemon.
//!
//! * `rel_vm_parallel_sequences`: 100 (quick 16) parallel create + snapshot + delete sequences
//!   on a real dm-thin pool; afterwards no orphan thin id, record, device or mount.
//! * `rel_vm_backup_latency`: a backup and a restore of a big volume run while other volumes are
//!   created, mounted, snapshotted and deleted; the latency of every unrelated call is recorded
//!   (`max_blocked_ms` is the worst delay beyond the same call's worst time without a backup).
//! * `rel_host_backup_delete_one_store`: backups of two volumes that share blocks run while
//!   older backups are deleted from the same store, many rounds; every remaining backup must
//!   restore bit-exact and no block may be orphaned.
//! * `rel_host_plugin_mount_storm`: parallel Docker plugin Mount/Unmount calls with random IDs;
//!   a volume stays mounted while any ID holds it and is unmounted when the last one leaves.

mod cli_support;
mod rel_support;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cli_support::TestDaemon;
use convoy_api::wire::*;
use convoy_api::{ApiError, Client};
use convoy_e2e::{run, LoopDevice};
use rel_support::{by_scale, rng, Figure};

const SUITE: &str = "concurrency";

/// A client of the daemon with its own single-thread runtime (one per test thread).
struct Api {
    rt: tokio::runtime::Runtime,
    c: Client,
}

impl Api {
    fn new(socket: &Path) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Api {
            rt,
            c: Client::new(socket),
        }
    }

    fn run<T>(&self, f: impl Future<Output = T>) -> T {
        self.rt.block_on(f)
    }

    fn create(
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
            s3_endpoint: String::new(),
        };
        self.run(self.c.create_volume(&req))
    }

    fn delete(&self, name: &str) -> Result<(), ApiError> {
        let req = VolumeDeleteRequest {
            volume_name: name.into(),
            reference_only: false,
        };
        self.run(self.c.delete_volume(&req))
    }

    fn mount(&self, name: &str) -> Result<VolumeResponse, ApiError> {
        let req = VolumeMountRequest {
            volume_name: name.into(),
            mount_point: String::new(),
        };
        self.run(self.c.mount_volume(&req))
    }

    fn snapshot(&self, volume: &str, name: &str) -> Result<SnapshotResponse, ApiError> {
        let req = SnapshotCreateRequest {
            name: name.into(),
            volume_name: volume.into(),
        };
        self.run(self.c.create_snapshot(&req))
    }

    fn backup(&self, snapshot: &str, dest: &str) -> Result<String, ApiError> {
        let req = BackupCreateRequest {
            url: dest.into(),
            snapshot_name: snapshot.into(),
            s3_endpoint: String::new(),
        };
        self.run(self.c.create_backup(&req)).map(|r| r.url)
    }

    fn delete_backup(&self, url: &str) -> Result<(), ApiError> {
        let req = BackupUrlRequest {
            url: url.into(),
            s3_endpoint: String::new(),
        };
        self.run(self.c.delete_backup(&req))
    }
}

/// Runs `f`, answering its result and how long it took in milliseconds.
fn timed<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed().as_millis() as u64)
}

/// An error is clear when it has a message naming the object it is about.
fn assert_clear(e: &ApiError, object: &str, what: &str) {
    let message = e.to_string();
    assert!(
        message.contains(object),
        "{what}: error does not name {object}: {message:?} (seed {})",
        rel_support::seed()
    );
}

/// Removes every device-mapper device whose name contains the tag (thin devices, then pools).
struct DmCleanup(String);

impl Drop for DmCleanup {
    fn drop(&mut self) {
        let mut names = dm_names(&self.0);
        names.sort_by_key(|n| n.ends_with("pool"));
        for name in names {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(format!("/dev/mapper/{name}"))
                .stderr(std::process::Stdio::null())
                .status();
            let _ = Command::new("dmsetup")
                .args(["remove", "--force", &name])
                .status();
        }
    }
}

fn dm_names(tag: &str) -> Vec<String> {
    let Ok(out) = Command::new("dmsetup").arg("ls").output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.contains(tag))
        .map(str::to_string)
        .collect()
}

/// A devicemapper daemon on a pool over loop devices. Drop order: daemon, devices, files.
struct DmDaemon {
    d: TestDaemon,
    tag: String,
    pool: String,
    meta: LoopDevice,
    _cleanup: DmCleanup,
    _data: LoopDevice,
    _disks: tempfile::TempDir,
}

impl DmDaemon {
    fn start(scenario: &str, data_bytes: u64, default_size: &str) -> Self {
        let tag = format!("rc{scenario}{}", std::process::id());
        let pool = format!("{tag}-pool");
        let cleanup = DmCleanup(tag.clone());
        let disks = tempfile::tempdir().unwrap();
        let data = LoopDevice::new(&disks.path().join("data.img"), data_bytes);
        let meta = LoopDevice::new(&disks.path().join("meta.img"), 128 << 20);
        let d = TestDaemon::start_with(&[], |_| {
            [
                "--drivers",
                "devicemapper",
                "--driver-opts",
                &format!("dm.datadev={}", data.as_str()),
                "--driver-opts",
                &format!("dm.metadatadev={}", meta.as_str()),
                "--driver-opts",
                &format!("dm.thinpoolname={pool}"),
                "--driver-opts",
                &format!("dm.defaultvolumesize={default_size}"),
            ]
            .map(String::from)
            .into()
        });
        DmDaemon {
            d,
            tag,
            pool,
            meta,
            _cleanup: cleanup,
            _data: data,
            _disks: disks,
        }
    }

    /// Thin device ids in the pool's metadata (read under a metadata snapshot).
    fn thin_ids(&self) -> Vec<u64> {
        run(
            "dmsetup",
            &["message", &self.pool, "0", "reserve_metadata_snap"],
        );
        let dump = Command::new("thin_dump")
            .args(["-m", self.meta.as_str()])
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
    fn assert_empty(&self, figure: &mut Figure, context: &str) {
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

fn assert_no_mounts_under(dir: &Path, context: &str) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = dir.to_string_lossy();
    let left: Vec<_> = mountinfo.lines().filter(|l| l.contains(&*dir)).collect();
    assert!(left.is_empty(), "{context}: mounts left: {left:?}");
}

/// p-th percentile (0..=100) of sorted `v`.
fn percentile(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) * p).div_ceil(100)]
}

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_vm_parallel_sequences() {
    let n: usize = by_scale(16, 100);
    let mut rng = rng("parallel-sequences");
    let dm = DmDaemon::start("ps", 8 << 30, "32M");
    let mut figure = Figure::new(
        SUITE,
        format!("{n} parallel create+snapshot+delete sequences"),
    );
    // Each sequence's plan, drawn up front so the run repeats: size, whether it mounts and
    // writes, which other volume it inspects.
    let plans: Vec<(u64, bool, usize)> = (0..n)
        .map(|_| (rng.u64(1..=4) * 16 << 20, rng.bool(), rng.usize(..n)))
        .collect();
    let tag = dm.tag.clone();
    let socket = dm.d.socket.clone();
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let calls = Arc::new(Mutex::new(0u64));
    let threads: Vec<_> = plans
        .into_iter()
        .enumerate()
        .map(|(i, (size, write, other))| {
            let (tag, socket) = (tag.clone(), socket.clone());
            let (errors, calls) = (errors.clone(), calls.clone());
            std::thread::spawn(move || {
                let api = Api::new(&socket);
                let vol = format!("{tag}-v{i}");
                let (s1, s2) = (format!("{tag}-v{i}-s1"), format!("{tag}-v{i}-s2"));
                let mut count = 0u64;
                let mut step = |what: &str, object: &str, r: Result<(), ApiError>| {
                    count += 1;
                    if let Err(e) = r {
                        assert_clear(&e, object, what);
                        errors.lock().unwrap().push(format!("{what} {object}: {e}"));
                        return false;
                    }
                    true
                };
                let created = api.create(&vol, Some(size), "").map(|_| ());
                if !step("create", &vol, created) {
                    return;
                }
                if write {
                    let mounted = api.mount(&vol);
                    let ok = match mounted {
                        Ok(v) => std::fs::write(Path::new(&v.mount_point).join("f"), &vol).is_ok(),
                        Err(e) => step("mount", &vol, Err(e)),
                    };
                    step("write", &vol, Ok(()));
                    assert!(ok, "write into {vol} failed");
                    let r = api.run(api.c.umount_volume(&vol));
                    step("umount", &vol, r);
                }
                let r = api.snapshot(&vol, &s1).map(|_| ());
                step("snapshot", &s1, r);
                // Another sequence's volume: found or not, never a vague answer.
                let other = format!("{tag}-v{other}");
                if let Err(e) = api.run(api.c.inspect_volume(&other)) {
                    assert_clear(&e, &other, "inspect");
                }
                let r = api.snapshot(&vol, &s2).map(|_| ());
                step("snapshot", &s2, r);
                let r = api.run(api.c.delete_snapshot(&s1));
                step("snapshot delete", &s1, r);
                let r = api.delete(&vol);
                step("delete", &vol, r);
                *calls.lock().unwrap() += count;
            })
        })
        .collect();
    // Meanwhile the list must stay consistent: every entry is whole and named by its key.
    let api = Api::new(&socket);
    let mut lists = 0;
    while threads.iter().any(|t| !t.is_finished()) {
        let list = api
            .run(api.c.list_volumes(""))
            .expect("list during the storm");
        for (key, v) in &list {
            assert_eq!(key, &v.name, "list entry {key} names {}", v.name);
            assert!(!v.created_time.is_empty(), "half-made volume listed: {v:?}");
        }
        lists += 1;
    }
    for t in threads {
        t.join().expect("a sequence panicked");
    }
    let errors = errors.lock().unwrap().clone();
    figure.trials = n as u64;
    figure.checks += lists;
    figure.set("calls", *calls.lock().unwrap());
    figure.set("clear_errors", errors.len() as u64);
    // Leftovers of failed sequences are removed before the invariant checks.
    let leftovers: Vec<String> =
        dm.d.json(&["list"])
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
    for name in &leftovers {
        dm.d.ok(&["delete", name]);
    }
    figure.set("leftovers_deleted", leftovers.len() as u64);
    let emptied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut f = figure.clone();
        dm.assert_empty(&mut f, "after the storm");
        f
    }));
    if let Ok(f) = &emptied {
        figure = f.clone();
    }
    figure.emit();
    if let Err(panic) = emptied {
        std::panic::resume_unwind(panic);
    }
    assert!(
        errors.is_empty(),
        "calls failed (clearly) although every sequence had its own names: {errors:?}"
    );
}

/// Latencies of one kind of call, by phase.
#[derive(Default)]
struct Latencies(BTreeMap<&'static str, Vec<u64>>);

impl Latencies {
    fn add(&mut self, kind: &'static str, ms: u64) {
        self.0.entry(kind).or_default().push(ms);
    }
    fn max(&self, kind: &str) -> u64 {
        self.0
            .get(kind)
            .and_then(|v| v.iter().max().copied())
            .unwrap_or(0)
    }
    fn all_sorted(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.0.values().flatten().copied().collect();
        v.sort_unstable();
        v
    }
}

/// One round of unrelated work on a small volume: create, mount, write, snapshot, inspect,
/// list, umount, delete; each call timed.
fn unrelated_round(api: &Api, name: &str, lat: &mut Latencies) {
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
fn fill(path: &Path, bytes: usize, rng: &mut fastrand::Rng) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..bytes.div_ceil(chunk.len()) {
        rng.fill(&mut chunk);
        f.write_all(&chunk).unwrap();
    }
    f.into_inner().unwrap().sync_all().unwrap();
}

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_vm_backup_latency() {
    let data_mib: usize = by_scale(96, 512);
    let baseline_rounds = by_scale(3, 10);
    let mut rng = rng("backup-latency");
    let dm = DmDaemon::start("bl", 8 << 30, "32M");
    let mut figure = Figure::new(
        SUITE,
        "calls during a backup and a restore of another volume",
    );
    let tag = dm.tag.clone();
    let api = Api::new(&dm.d.socket);
    let big = format!("{tag}-big");
    api.create(&big, Some(1 << 30), "").unwrap();
    let at = api.mount(&big).unwrap().mount_point;
    fill(&Path::new(&at).join("data"), data_mib << 20, &mut rng);
    api.run(api.c.umount_volume(&big)).unwrap();
    let snap = format!("{big}-s");
    api.snapshot(&big, &snap).unwrap();
    let dest = format!("vfs://{}", dm.d.dir.path().join("store").display());

    // The same calls without a backup running.
    let mut baseline = Latencies::default();
    for i in 0..baseline_rounds {
        unrelated_round(&api, &format!("{tag}-b{i}"), &mut baseline);
    }

    // A backup, then a restore of it, in the background; unrelated rounds until both are done.
    let socket = dm.d.socket.clone();
    let (snap2, dest2, restored) = (snap.clone(), dest.clone(), format!("{tag}-restored"));
    let background = std::thread::spawn(move || {
        let api = Api::new(&socket);
        let (url, backup_ms) = timed(|| api.backup(&snap2, &dest2));
        let url = url.unwrap_or_else(|e| panic!("backup {snap2}: {e}"));
        let (r, restore_ms) = timed(|| api.create(&restored, None, &url));
        r.unwrap_or_else(|e| panic!("restore {url}: {e}"));
        (backup_ms, restore_ms)
    });
    let mut loaded = Latencies::default();
    let mut rounds = 0;
    while !background.is_finished() {
        unrelated_round(&api, &format!("{tag}-u{rounds}"), &mut loaded);
        rounds += 1;
    }
    let (backup_ms, restore_ms) = background.join().expect("backup or restore failed");

    // The restored volume holds the data bit-exact.
    let restored = format!("{tag}-restored");
    let at2 = api.mount(&restored).unwrap().mount_point;
    let same = Command::new("cmp")
        .arg(format!("{at}/data"))
        .arg(format!("{at2}/data"))
        .status()
        .is_ok_and(|s| s.success());
    if same {
        figure.checks += 1;
    } else {
        figure.lost += 1;
    }

    let mut blocked = 0u64;
    let mut worst = ("", 0u64);
    for (kind, v) in &loaded.0 {
        for &ms in v {
            let excess = ms.saturating_sub(baseline.max(kind));
            if excess > worst.1 {
                worst = (kind, excess);
            }
            if excess > 1000 {
                blocked += 1;
            }
        }
    }
    let all = loaded.all_sorted();
    figure.trials = rounds;
    figure.checks += all.len() as u64;
    figure
        .set("data_mib", data_mib as u64)
        .set("backup_ms", backup_ms)
        .set("restore_ms", restore_ms)
        .set("calls_during", all.len() as u64)
        .set("p50_ms", percentile(&all, 50))
        .set("p99_ms", percentile(&all, 99))
        .set("max_ms", all.last().copied().unwrap_or(0))
        .set(
            "baseline_max_ms",
            baseline.all_sorted().last().copied().unwrap_or(0),
        )
        .set("max_blocked_ms", worst.1)
        .set("worst_call", worst.0)
        .set("calls_blocked_over_1s", blocked);
    figure.emit();
    for (kind, v) in &loaded.0 {
        eprintln!(
            "{kind}: baseline max {} ms; during backup p50 {} max {} ms",
            baseline.max(kind),
            percentile(
                &{
                    let mut v = v.clone();
                    v.sort_unstable();
                    v
                },
                50
            ),
            loaded.max(kind)
        );
    }
    api.run(api.c.umount_volume(&restored)).unwrap();
    assert!(
        same,
        "the restore of {big} differs from it (seed {})",
        rel_support::seed()
    );
    assert!(
        rounds > 0,
        "the backup and restore ended before any unrelated call was made"
    );
    assert_eq!(
        blocked, 0,
        "{blocked} unrelated calls were delayed more than 1 s beyond their time without a backup \
         (worst: {} by {} ms)",
        worst.0, worst.1
    );
}

/// Every regular file under `dir` (relative path → bytes).
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
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
fn change(dir: &Path, files: usize, rng: &mut fastrand::Rng) {
    let mut data = vec![0u8; rng.usize(1..=(256 << 10))];
    rng.fill(&mut data);
    std::fs::write(dir.join(format!("f{}", rng.usize(..files + 1))), data).unwrap();
}

/// Blocks of a `vfs://` store no live backup references, and reference records of backups
/// that do not exist.
fn store_orphans(store: &Path) -> (Vec<String>, Vec<String>) {
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
    for prefix in names(store.join("blocks")) {
        for block in names(store.join("blocks").join(&prefix)) {
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

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_host_backup_delete_one_store() {
    let rounds: usize = by_scale(6, 50);
    let files = 6;
    let mut rng = rng("backup-delete-one-store");
    let d = TestDaemon::start(&[]);
    let mut figure = Figure::new(SUITE, "backups of two block-sharing volumes while deleting");
    let store = d.dir.path().join("store");
    let dest = format!("vfs://{}", store.display());
    let api = Api::new(&d.socket);
    // Volume a, backed up once; volume b restored from that backup (so they share blocks).
    api.create("va", None, "").unwrap();
    for _ in 0..files {
        change(&d.vols.join("va"), files, &mut rng);
    }
    api.snapshot("va", "va-0").unwrap();
    let first = api.backup("va-0", &dest).unwrap();
    let mut expected: BTreeMap<String, BTreeMap<PathBuf, Vec<u8>>> = BTreeMap::new();
    expected.insert(first.clone(), tree(&d.vols.join("va")));
    api.create("vb", None, &first).unwrap();
    assert_eq!(tree(&d.vols.join("vb")), expected[&first], "first restore");
    let mut live = vec![first];
    let (mut deletes, mut backups) = (0u64, 1u64);
    for round in 1..=rounds {
        let mut snaps = Vec::new();
        for v in ["va", "vb"] {
            change(&d.vols.join(v), files, &mut rng);
            let snap = format!("{v}-{round}");
            api.snapshot(v, &snap).unwrap();
            snaps.push((snap, tree(&d.vols.join(v))));
        }
        // Delete an older backup while both new ones are made.
        let victim = (live.len() > 1).then(|| live.remove(rng.usize(..live.len())));
        let socket = d.socket.clone();
        let deleter = victim
            .clone()
            .map(|url| std::thread::spawn(move || Api::new(&socket).delete_backup(&url)));
        let makers: Vec<_> = snaps
            .into_iter()
            .map(|(snap, content)| {
                let (socket, dest) = (d.socket.clone(), dest.clone());
                std::thread::spawn(move || (Api::new(&socket).backup(&snap, &dest), snap, content))
            })
            .collect();
        for m in makers {
            let (r, snap, content) = m.join().unwrap();
            let url = r.unwrap_or_else(|e| panic!("round {round}: backup {snap}: {e}"));
            expected.insert(url.clone(), content);
            live.push(url);
            backups += 1;
        }
        if let (Some(t), Some(url)) = (deleter, victim) {
            match t.join().unwrap() {
                Ok(()) => {
                    expected.remove(&url);
                    deletes += 1;
                }
                Err(e) => {
                    assert_clear(&e, &url, "delete backup");
                    live.push(url);
                }
            }
        }
        // Old snapshots go too (the last one of each volume stays, for incrementals).
        if round > 1 {
            for v in ["va", "vb"] {
                api.run(api.c.delete_snapshot(&format!("{v}-{}", round - 1)))
                    .unwrap();
            }
        }
        figure.trials += 1;
    }
    // What the store lists is what was made and not deleted.
    let listed: BTreeSet<String> = d
        .json(&["backup", "list", &dest])
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let (orphans, stale) = store_orphans(&store);
    let mut restored = 0;
    let mut lost = Vec::new();
    for (i, (url, content)) in expected.iter().enumerate() {
        let name = format!("r{i}");
        match api.create(&name, None, url) {
            Ok(_) if tree(&d.vols.join(&name)) == *content => restored += 1,
            Ok(_) => lost.push(format!("{url}: restored content differs")),
            Err(e) => lost.push(format!("{url}: {e}")),
        }
        let _ = api.delete(&name);
    }
    figure.lost = lost.len() as u64;
    figure.checks += restored + u64::from(orphans.is_empty()) + 1;
    figure
        .set("backups_made", backups)
        .set("backups_deleted", deletes)
        .set("backups_restored_bit_exact", restored)
        .set("orphan_blocks", orphans.len() as u64)
        .set("stale_refs", stale.len() as u64);
    figure.emit();
    let seed = rel_support::seed();
    assert_eq!(
        listed,
        expected.keys().cloned().collect::<BTreeSet<_>>(),
        "listed backups differ from those made and not deleted (seed {seed})"
    );
    assert!(lost.is_empty(), "backups lost (seed {seed}): {lost:#?}");
    assert!(
        orphans.is_empty(),
        "orphan blocks (seed {seed}): {orphans:?}"
    );
    assert!(
        stale.is_empty(),
        "references of deleted backups (seed {seed}): {stale:?}"
    );
}

/// A Docker plugin call; answers the JSON (every plugin answer is HTTP 200).
fn plugin(api: &Api, endpoint: &str, body: String) -> serde_json::Value {
    let answer = api
        .run(api.c.raw("POST", endpoint, body.clone(), false))
        .unwrap_or_else(|e| panic!("{endpoint} {body}: {e}"));
    assert_eq!(answer.status, 200, "{endpoint} {body}");
    serde_json::from_slice(&answer.body).unwrap()
}

/// Parallel Mount/Unmount storms with random IDs on `volumes`; answers (calls, checks).
fn mount_storm(d: &TestDaemon, volumes: &[String], threads: usize, ops: usize) -> (u64, u64) {
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
fn assert_released(d: &mut TestDaemon, volumes: &[String]) -> u64 {
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

fn storm_scenario(d: &mut TestDaemon, figure: &mut Figure, prefix: &str) {
    let (threads, ops) = by_scale((8, 30), (16, 200));
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
    storm_scenario(&mut d, &mut figure, "storm");
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
    storm_scenario(&mut dm.d, &mut figure, &prefix);
    dm.assert_empty(&mut figure, "after the storm");
}
