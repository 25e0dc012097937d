//! Reliability suite, lifecycle operations during backups (issue 17): expand, clone (of a
//! snapshot and of the live volume) and revert of a volume while backups of its own snapshots
//! run, on a real dm-thin pool (`rel_vm_lifecycle_during_backups`).
//!
//! Each trial (quick 2, full 20), with seeded data, delays and order:
//! 1. a mounted ext4 volume holds seeded files; snapshot `s1`; a backup of `s1` starts in the
//!    background;
//! 2. while it runs, in a seeded order after seeded delays: an online expand of the mounted
//!    volume, a clone of `s1` (`create --snapshot`) and a clone of the live volume
//!    (`create --volume`);
//! 3. a file of the volume is rewritten; snapshot `s2`; a backup of `s2` starts in the
//!    background; the volume is unmounted and reverted to `s1` while that backup runs.
//!
//! Checks, every one counted: each operation succeeds; the expand is seen at once by `inspect`
//! and by the mounted filesystem; each backup restores to its snapshot's files byte for byte
//! (the revert under the second one changes nothing of `s2`); each clone holds its source's
//! files as they were when it was made; the reverted volume holds `s1`'s files and `s1`'s size;
//! the snapshots are still listed. Afterwards everything is deleted and no record, device,
//! mount or thin id is left. Latencies are figures, never asserted.

mod cli_support;
mod rel_concurrency_rig;
mod rel_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use convoy_api::wire::VolumeExpandRequest;
use rel_concurrency_rig::*;
use rel_support::{by_scale, rng, Figure};

const SUITE: &str = "concurrency";
const MIB: u64 = 1 << 20;

/// Bytes a mounted filesystem offers (`df`'s size, from `stat -f`).
fn fs_bytes(at: &str) -> u64 {
    let out = std::process::Command::new("stat")
        .args(["-f", "-c", "%b %S", at])
        .output()
        .expect("stat -f");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<u64> = text
        .split_whitespace()
        .map(|n| n.parse().expect("stat -f answers numbers"))
        .collect();
    v[0] * v[1]
}

/// The volume's `Size` as `inspect` shows it.
fn size_of(api: &Api, name: &str) -> String {
    let v = api.run(api.c.inspect_volume(name)).unwrap();
    v.driver_info.get("Size").cloned().unwrap_or_default()
}

/// Starts `op` on a thread of its own with its own client.
fn background<T: Send + 'static>(
    socket: &Path,
    op: impl FnOnce(&Api) -> T + Send + 'static,
) -> std::thread::JoinHandle<(T, u64)> {
    let socket = socket.to_path_buf();
    std::thread::spawn(move || {
        let api = Api::new(&socket);
        timed(|| op(&api))
    })
}

/// The files of a volume restored from or cloned into `name`, mounted; unmounted after.
fn files_of(api: &Api, name: &str) -> BTreeMap<PathBuf, Vec<u8>> {
    let at = api
        .mount(name)
        .unwrap_or_else(|e| panic!("mount {name}: {e}"))
        .mount_point;
    let mut files = tree(Path::new(&at));
    files.retain(|p, _| !p.starts_with("lost+found"));
    api.run(api.c.umount_volume(name))
        .unwrap_or_else(|e| panic!("umount {name}: {e}"));
    files
}

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_vm_lifecycle_during_backups() {
    let trials = by_scale(2, 20);
    let data_mib = by_scale(24, 96);
    let mut rng = rng("lifecycle-during-backups");
    let dm = DmDaemon::start("lb", 8 << 30, "128M");
    let mut figure = Figure::new(
        SUITE,
        "expand, clones and revert of a volume while backups of its snapshots run",
    );
    let api = Api::new(&dm.d.socket);
    let socket = dm.d.socket.clone();
    let dest = format!("vfs://{}", dm.d.dir.path().join("store").display());
    let mut latencies = Latencies::default();
    let mut checks = 0u64;
    let mut check = |ok: bool, what: String| {
        assert!(ok, "{what} (seed {})", rel_support::seed());
        checks += 1;
    };
    let mut trials_done = 0;
    for trial in 0..trials {
        let v = format!("{}-v{trial}", dm.tag);
        let (s1, s2) = (format!("{v}-s1"), format!("{v}-s2"));
        let size = 256 * MIB;
        api.create(&v, Some(size), "")
            .unwrap_or_else(|e| panic!("create {v}: {e}"));
        let at = api.mount(&v).unwrap().mount_point;
        fill(
            &Path::new(&at).join("a"),
            (data_mib as usize) << 20,
            &mut rng,
        );
        fill(&Path::new(&at).join("b"), 3 << 20, &mut rng);
        api.snapshot(&v, &s1).unwrap();
        let want_s1 = tree(Path::new(&at));
        let fs_before = fs_bytes(&at);

        // 1-2: a backup of s1, and meanwhile expand, clone s1, clone the live volume.
        let (snap, to) = (s1.clone(), dest.clone());
        let first = background(&socket, move |api| api.backup(&snap, &to));
        let grown = size + 64 * MIB;
        let (c1, c2) = (format!("{v}-c1"), format!("{v}-c2"));
        let mut order = [0u8, 1, 2];
        rng.shuffle(&mut order);
        let mut want_c2 = BTreeMap::new();
        for op in order {
            std::thread::sleep(Duration::from_millis(rng.u64(0..400)));
            match op {
                0 => {
                    let req = VolumeExpandRequest {
                        volume_name: v.clone(),
                        size: Some(grown),
                    };
                    let (r, ms) = timed(|| api.run(api.c.expand_volume(&req)));
                    r.unwrap_or_else(|e| panic!("expand {v} during a backup: {e}"));
                    latencies.add("expand", ms);
                    let seen = size_of(&api, &v);
                    check(
                        seen == grown.to_string(),
                        format!("inspect after expand: {seen}"),
                    );
                    check(
                        fs_bytes(&at) > fs_before + 48 * MIB,
                        format!("the mounted filesystem grew: {}", fs_bytes(&at)),
                    );
                }
                1 => {
                    let req = convoy_api::wire::VolumeCreateRequest {
                        name: c1.clone(),
                        snapshot_name: s1.clone(),
                        ..Default::default()
                    };
                    let (r, ms) = timed(|| api.run(api.c.create_volume(&req)));
                    r.unwrap_or_else(|e| panic!("clone {s1} during its backup: {e}"));
                    latencies.add("clone of a snapshot", ms);
                }
                _ => {
                    want_c2 = tree(Path::new(&at));
                    let req = convoy_api::wire::VolumeCreateRequest {
                        name: c2.clone(),
                        source_volume_name: v.clone(),
                        ..Default::default()
                    };
                    let (r, ms) = timed(|| api.run(api.c.create_volume(&req)));
                    r.unwrap_or_else(|e| panic!("clone {v} during a backup: {e}"));
                    latencies.add("clone of the mounted volume", ms);
                }
            }
        }

        // 3: a change, s2, its backup, and a revert to s1 while that backup runs.
        fill(&Path::new(&at).join("b"), 2 << 20, &mut rng);
        api.snapshot(&v, &s2).unwrap();
        let want_s2 = tree(Path::new(&at));
        let (snap, to) = (s2.clone(), dest.clone());
        let second = background(&socket, move |api| api.backup(&snap, &to));
        std::thread::sleep(Duration::from_millis(rng.u64(0..300)));
        api.run(api.c.umount_volume(&v)).unwrap();
        let (r, ms) = timed(|| api.run(api.c.revert_snapshot(&s1)));
        r.unwrap_or_else(|e| panic!("revert {v} to {s1} during a backup of {s2}: {e}"));
        latencies.add("revert", ms);

        let (url1, ms1) = first.join().expect("the first backup's thread");
        let url1 = url1.unwrap_or_else(|e| panic!("backup {s1} under expand and clones: {e}"));
        let (url2, ms2) = second.join().expect("the second backup's thread");
        let url2 = url2.unwrap_or_else(|e| panic!("backup {s2} under a revert: {e}"));
        latencies.add("backup", ms1);
        latencies.add("backup", ms2);

        // Every result holds exactly what it should.
        let strip = |mut t: BTreeMap<PathBuf, Vec<u8>>| {
            t.retain(|p, _| !p.starts_with("lost+found"));
            t
        };
        let (want_s1, want_s2, want_c2) = (strip(want_s1), strip(want_s2), strip(want_c2));
        for (name, url, want) in [("r1", &url1, &want_s1), ("r2", &url2, &want_s2)] {
            let r = format!("{v}-{name}");
            api.create(&r, None, url)
                .unwrap_or_else(|e| panic!("restore {url}: {e}"));
            check(
                &files_of(&api, &r) == want,
                format!("{url} restores its snapshot's files"),
            );
            api.delete(&r).unwrap();
        }
        check(files_of(&api, &c1) == want_s1, format!("{c1} holds {s1}"));
        check(
            files_of(&api, &c2) == want_c2,
            format!("{c2} holds {v} as it was when cloned"),
        );
        check(
            files_of(&api, &v) == want_s1,
            format!("{v} reverted to {s1} holds its files"),
        );
        let seen = size_of(&api, &v);
        check(
            seen == size.to_string(),
            format!("the reverted {v} has {s1}'s size: {seen}"),
        );
        for s in [&s1, &s2] {
            check(
                api.run(api.c.inspect_snapshot(s)).is_ok(),
                format!("{s} is still listed"),
            );
        }
        for name in [&c1, &c2, &v] {
            api.delete(name)
                .unwrap_or_else(|e| panic!("delete {name}: {e}"));
        }
        for url in [&url1, &url2] {
            api.delete_backup(url).unwrap();
        }
        trials_done += 1;
    }
    figure.trials = trials_done;
    figure.checks += checks;
    dm.assert_empty(&mut figure, "after the lifecycle trials");
    let all = latencies.all_sorted();
    figure
        .set("data_mib", data_mib)
        .set("p50_ms", percentile(&all, 50))
        .set("max_ms", all.last().copied().unwrap_or(0));
    for (kind, v) in &latencies.0 {
        let mut v = v.clone();
        v.sort_unstable();
        figure.set(&format!("{kind} p50_ms"), percentile(&v, 50));
    }
    figure.emit();
}
