//! Reliability suite, crash consistency (VM tier, a real dm-thin pool on loop devices): the
//! real `convoy daemon` is killed with SIGKILL at a seeded random moment inside create,
//! snapshot, backup, restore and delete (a delay drawn in [0, 1.2 × the operation's measured
//! duration]), or aborted at one of convoy-core's named crash points (`CONVOY_CORE_CRASH_AT`)
//! on every fourth trial. Then, on about half the trials, what a reboot does is done by hand
//! (thaw, unmount, remove the thin devices and the pool, `thin_check` the metadata). The
//! daemon is restarted (it re-activates the pool and reconciles) and checked: every object
//! reported created exists, mounts and reads back its data; every reported delete stuck; no
//! orphan thin ids, records, active devices or mounts; every listed backup restores
//! bit-exact and no half-written backup is listed; calls work after the restart.
//!
//! A call counts as "in flight" when the kill came before the CLI reported success, "after
//! completion" when it had. One figure per operation (suite `crash`).

mod cli_support;
mod crash_rig;
mod crash_run;
mod rel_support;

use std::collections::BTreeMap;
use std::time::Instant;

use crash_rig::VOLUME_SIZE;
use crash_run::Run;

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_vm_crash_create() {
    let mut r = Run::new(
        "create",
        'c',
        &["create-volume-after-intent", "create-volume-before-ready"],
    );
    let tag = r.rig.tag.clone();
    let m = format!("{tag}m");
    let d = r.measure(&["create", &m, "--size", VOLUME_SIZE]);
    r.ok(0, &["delete", &m]);
    r.fig.set("measured_ms", d.as_millis() as u64);
    let mut t = 0;
    while r.more(t) {
        let name = format!("{tag}c{t}");
        let o = r.crash(t, &["create", &name, "--size", VOLUME_SIZE], d);
        r.recover(t);
        let exists = r.volume_listed(t, &name);
        if o.acked && !exists {
            r.lose(
                t,
                &format!("volume {name} was reported created and is gone"),
            );
        }
        if exists {
            // It mounts, takes data, reads it back and deletes.
            let bytes = r.write(t, &name);
            r.verify(t, &name, &bytes, "new volume");
            r.ok(t, &["umount", &name]);
            r.ok(t, &["delete", &name]);
        }
        let gone = !r.volume_listed(t, &name);
        r.check(t, gone, &format!("{name} still listed after delete"));
        t += 1;
    }
    r.finish();
}

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_vm_crash_snapshot() {
    let mut r = Run::new(
        "snapshot",
        's',
        &[
            "create-snapshot-after-intent",
            "create-snapshot-before-ready",
        ],
    );
    let tag = r.rig.tag.clone();
    let base = format!("{tag}b");
    r.ok(0, &["create", &base, "--size", VOLUME_SIZE]);
    r.write(0, &base);
    let m = format!("{tag}m");
    let d = r.measure(&["snapshot", "create", &base, "--name", &m]);
    r.ok(0, &["snapshot", "delete", &m]);
    r.fig.set("measured_ms", d.as_millis() as u64);
    let mut t = 0;
    while r.more(t) {
        // Written while mounted: the snapshot freezes the filesystem; a kill inside must not
        // leave it frozen (the write of the next trial would hang, then fail).
        let data = r.write(t, &base);
        let snap = format!("{tag}s{t}");
        let o = r.crash(t, &["snapshot", "create", &base, "--name", &snap], d);
        r.recover(t);
        r.verify(t, &base, &data, "origin after the crash");
        let listed = r.snapshot_listed(t, &base, &snap);
        if o.acked && !listed {
            r.lose(
                t,
                &format!("snapshot {snap} was reported created and is gone"),
            );
        }
        if listed && (r.rng.u8(..4) == 0 || t + 1 == r.trials || !r.more(t + 1)) {
            // Its content: back it up and restore it.
            let url = r.ok(
                t,
                &["backup", "create", &snap, "--dest", &r.rig.dest.clone()],
            );
            let v = format!("{tag}v{t}");
            r.ok(t, &["create", &v, "--backup", &url]);
            r.verify(t, &v, &data, "snapshot content");
            r.ok(t, &["umount", &v]);
            r.ok(t, &["delete", &v]);
            r.count("snapshots_read_back");
        }
        if listed {
            r.ok(t, &["snapshot", "delete", &snap]);
        }
        let gone = !r.snapshot_listed(t, &base, &snap);
        r.check(t, gone, &format!("{snap} still listed after delete"));
        t += 1;
    }
    r.finish();
}

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_vm_crash_backup() {
    let mut r = Run::new("backup", 'b', &["backup-after-activate"]);
    let tag = r.rig.tag.clone();
    let dest = r.rig.dest.clone();
    let base = format!("{tag}b");
    r.ok(0, &["create", &base, "--size", VOLUME_SIZE]);
    let mut ledger: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let data = r.write(0, &base);
    let m = format!("{tag}m");
    r.ok(0, &["snapshot", "create", &base, "--name", &m]);
    let start = Instant::now();
    let url = r.ok(0, &["backup", "create", &m, "--dest", &dest]);
    let d = start.elapsed();
    ledger.insert(url, data);
    r.ok(0, &["snapshot", "delete", &m]);
    r.fig.set("measured_ms", d.as_millis() as u64);
    let mut t = 0;
    while r.more(t) {
        let data = r.write(t, &base);
        let snap = format!("{tag}s{t}");
        r.ok(t, &["snapshot", "create", &base, "--name", &snap]);
        let o = r.crash(t, &["backup", "create", &snap, "--dest", &dest], d);
        r.recover(t);
        let listed = match r.rig.try_json(&["backup", "list", &dest]) {
            Ok(v) => v.as_object().cloned().unwrap_or_default(),
            Err(e) => r.fail(t, &e),
        };
        if o.acked && !listed.contains_key(&o.stdout) {
            r.lose(
                t,
                &format!("backup {} was reported and is not listed", o.stdout),
            );
        }
        for url in ledger.keys() {
            if !listed.contains_key(url) {
                let msg = format!("backup {url} (made before) is no longer listed");
                r.lose(t, &msg);
            }
        }
        let new: Vec<String> = listed
            .keys()
            .filter(|u| !ledger.contains_key(*u))
            .cloned()
            .collect();
        r.check(
            t,
            new.len() <= 1,
            &format!("unknown backups listed: {new:?}"),
        );
        for url in new {
            // Listed, so it must be whole: it restores bit-exact.
            let v = format!("{tag}r{t}");
            if let Err(e) = r.rig.try_ok(&["create", &v, "--backup", &url]) {
                r.lose(t, &format!("listed backup {url} does not restore: {e}"));
            }
            r.verify(t, &v, &data, "listed backup");
            r.ok(t, &["umount", &v]);
            r.ok(t, &["delete", &v]);
            ledger.insert(url, data.clone());
        }
        r.ok(t, &["snapshot", "delete", &snap]);
        t += 1;
    }
    // Every backup made still restores (a later crashed backup must not damage shared blocks).
    let last = r.done;
    for (i, (url, data)) in ledger.clone().iter().enumerate() {
        let v = format!("{tag}f{i}");
        if let Err(e) = r.rig.try_ok(&["create", &v, "--backup", url]) {
            r.lose(last, &format!("backup {url} no longer restores: {e}"));
        }
        r.verify(last, &v, data, "backup at the end");
        r.ok(last, &["umount", &v]);
        r.ok(last, &["delete", &v]);
    }
    r.fig.set("backups_restored_at_end", ledger.len());
    r.finish();
}

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_vm_crash_restore() {
    let mut r = Run::new(
        "restore",
        'r',
        &[
            "restore-after-open",
            "create-volume-after-intent",
            "create-volume-before-ready",
        ],
    );
    let tag = r.rig.tag.clone();
    let dest = r.rig.dest.clone();
    let base = format!("{tag}b");
    r.ok(0, &["create", &base, "--size", VOLUME_SIZE]);
    let data = r.write(0, &base);
    let snap = format!("{tag}s");
    r.ok(0, &["snapshot", "create", &base, "--name", &snap]);
    let url = r.ok(0, &["backup", "create", &snap, "--dest", &dest]);
    let m = format!("{tag}m");
    let d = r.measure(&["create", &m, "--backup", &url]);
    r.verify(0, &m, &data, "restore before the trials");
    r.ok(0, &["umount", &m]);
    r.ok(0, &["delete", &m]);
    r.fig.set("measured_ms", d.as_millis() as u64);
    let mut t = 0;
    while r.more(t) {
        let name = format!("{tag}r{t}");
        let o = r.crash(t, &["create", &name, "--backup", &url], d);
        r.recover(t);
        let exists = r.volume_listed(t, &name);
        if o.acked && !exists {
            r.lose(
                t,
                &format!("restored volume {name} was reported and is gone"),
            );
        }
        if exists {
            // Listed, so it must be whole.
            r.verify(t, &name, &data, "restored volume");
            r.ok(t, &["umount", &name]);
            r.ok(t, &["delete", &name]);
        }
        let gone = !r.volume_listed(t, &name);
        r.check(t, gone, &format!("{name} still listed after delete"));
        t += 1;
    }
    r.verify(r.done, &base, &data, "origin at the end");
    r.finish();
}

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_vm_crash_delete() {
    let mut r = Run::new(
        "delete",
        'd',
        &[
            "delete-volume-after-intent",
            "delete-volume-before-record-removed",
        ],
    );
    let tag = r.rig.tag.clone();
    // One volume with a snapshot, written and unmounted (a mounted volume is not deleted).
    let make = |r: &mut Run, t: usize, v: &str, s: &str| -> Vec<u8> {
        r.ok(t, &["create", v, "--size", VOLUME_SIZE]);
        let data = r.write(t, v);
        r.ok(t, &["umount", v]);
        r.ok(t, &["snapshot", "create", v, "--name", s]);
        data
    };
    let (mv, ms) = (format!("{tag}m"), format!("{tag}ms"));
    make(&mut r, 0, &mv, &ms);
    let d_snap = r.measure(&["snapshot", "delete", &ms]);
    let d_vol = r.measure(&["delete", &mv]);
    r.fig.set("measured_ms", d_vol.as_millis() as u64);
    r.fig.set("measured_snapshot_ms", d_snap.as_millis() as u64);
    let mut t = 0;
    while r.more(t) {
        let (v, s) = (format!("{tag}v{t}"), format!("{tag}v{t}s"));
        let data = make(&mut r, t, &v, &s);
        // The named crash points are on the volume-delete path.
        let whole_volume = t % 4 == 1 || r.rng.bool();
        if whole_volume {
            let o = r.crash(t, &["delete", &v], d_vol);
            r.recover(t);
            let exists = r.volume_listed(t, &v);
            r.check(
                t,
                !(o.acked && exists),
                &format!("deleted volume {v} is back"),
            );
            if exists {
                r.verify(t, &v, &data, "volume whose delete was interrupted");
                r.ok(t, &["umount", &v]);
            }
            r.count("volume_deletes");
        } else {
            // The snapshot-delete path has no named crash point: always a timed kill.
            let points = std::mem::take(&mut r.points);
            let o = r.crash(t, &["snapshot", "delete", &s], d_snap);
            r.points = points;
            r.recover(t);
            let listed = r.snapshot_listed(t, &v, &s);
            r.check(
                t,
                !(o.acked && listed),
                &format!("deleted snapshot {s} is back"),
            );
            r.verify(t, &v, &data, "volume of the snapshot being deleted");
            r.ok(t, &["umount", &v]);
            r.count("snapshot_deletes");
        }
        if r.volume_listed(t, &v) {
            r.ok(t, &["delete", &v]);
        }
        let gone = !r.volume_listed(t, &v);
        r.check(t, gone, &format!("{v} still listed after delete"));
        t += 1;
    }
    r.finish();
}
