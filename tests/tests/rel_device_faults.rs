//! Reliability suite, device faults (VM tier): I/O errors injected under a real dm-thin pool's
//! data device and, separately, its metadata device (`error`, always-down `flakey`, a linear
//! table with an `error` segment), while a `convoy daemon` (devicemapper + vfs) serves.
//!
//! Checked: every failing call ends with exit status 1 and a JSON error (no hang, no panic);
//! the daemon keeps answering `info`/`list` and serving vfs volumes during the fault; a backup
//! that hit a read error is not listed; after the fault is cleared, backups complete and
//! restore bit-exact, data synced before the fault reads back, and `thin_check` passes. For
//! metadata faults the kernel puts the pool in read-only or fail mode: the test records what
//! convoy says then, and what brings the pool back (deactivate, `thin_check`, restart).

mod cli_support;
mod rel_faultpool;
mod rel_support;

use std::collections::BTreeMap;
use std::path::Path;

use rel_faultpool::{drop_caches, random_bytes, write_synced, Answer, Fault, Rig};
use rel_support::{by_scale, rng, Figure};

/// Counts for the figure line.
#[derive(Default)]
struct Count {
    faults: u64,
    calls: u64,
    clear_errors: u64,
    checks: u64,
}

impl Count {
    /// A call made while a fault is on: it may fail, but only clearly (`Rig::call` panics on an
    /// unclear failure or a hang).
    fn call(&mut self, rig: &Rig, args: &[&str]) -> Answer {
        self.calls += 1;
        let a = rig.call(args);
        if a.err().is_some() {
            self.clear_errors += 1;
        }
        a
    }

    /// A call that must fail clearly; returns the message.
    fn must_fail(&mut self, rig: &Rig, args: &[&str], what: &str) -> String {
        match self.call(rig, args) {
            Answer::Err(e) => e,
            Answer::Ok(out) => panic!("{what}: convoy {args:?} succeeded ({out}) under a fault"),
        }
    }

    /// A call that must succeed even though the fault is on (another driver, info, list).
    fn must_serve(&mut self, rig: &Rig, args: &[&str]) -> String {
        self.calls += 1;
        self.checks += 1;
        rig.ok(args)
    }
}

/// Checks that every file in `files` under `dir` has the recorded bytes; returns mismatches.
fn verify(dir: &Path, files: &BTreeMap<String, Vec<u8>>) -> u64 {
    files
        .iter()
        .filter(|(name, want)| std::fs::read(dir.join(name)).ok().as_ref() != Some(*want))
        .count() as u64
}

/// The vfs driver keeps serving while the pool is faulty: create, mount, write, delete.
fn vfs_serves(c: &mut Count, rig: &Rig, trial: usize) {
    let v = rig.name(&format!("vfs{trial}"));
    c.must_serve(rig, &["create", &v, "--driver", "vfs"]);
    let at = c.must_serve(rig, &["mount", &v]);
    write_synced(&Path::new(&at).join("f"), b"vfs during a pool fault").unwrap();
    c.must_serve(rig, &["umount", &v]);
    c.must_serve(rig, &["delete", &v]);
    let list = rig.json(&["list"]);
    assert!(list.get(&v).is_none(), "deleted {v} still listed: {list}");
    c.must_serve(rig, &["info"]);
}

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_vm_device_faults_data() {
    let mut rng = rng("device-faults-data");
    let trials = by_scale(1, 20);
    let mut rig = Rig::start("d", 512 << 20, 16 << 20, &[]);
    let mut c = Count::default();
    let mut fig = Figure::new("device-faults", "I/O errors under the pool's data device");
    let vol = rig.name("a");
    rig.ok(&["create", &vol]);
    let mut files = BTreeMap::new();
    let mut messages = BTreeMap::new();
    let mut restored = 0u64;
    let mut read_only = 0u64;
    for trial in 0..trials {
        // Healthy: new data, synced, and a snapshot of it.
        // The volume is unmounted while the fault is on: a mounted ext4 aborts its journal at
        // its first failed write (lazy inode table init, a commit) and stays read-only.
        let at = rig.ok(&["mount", &vol]);
        let name = format!("f{trial}");
        let len = 64 << 10 << rng.usize(0..4);
        let bytes = random_bytes(&mut rng, len);
        write_synced(&Path::new(&at).join(&name), &bytes).unwrap();
        files.insert(name, bytes);
        let snap = rig.name(&format!("s{trial}"));
        rig.ok(&["snapshot", "create", &vol, "--name", &snap]);

        let fault = [Fault::ErrorAll, Fault::FlakeyDown, Fault::ErrorHead(75)][rng.usize(0..3)];
        rig.ok(&["umount", &vol]);
        rig.data.set(fault);
        c.faults += 1;

        // A backup reading the snapshot hits the error: a clear failure, nothing listed.
        let err = c.must_fail(
            &rig,
            &["backup", "create", &snap, "--dest", &rig.dest],
            "backup",
        );
        messages.insert(format!("backup/{}", fault.label()), err.clone());
        assert!(
            err.contains(&snap) || err.contains("Input/output") || err.contains("I/O error"),
            "trial {trial}: backup error names neither the snapshot nor the I/O error: {err}"
        );
        let listed = rig.listed_backups(&vol);
        c.checks += 1;
        assert!(
            listed.iter().all(|(_, s)| s != &snap),
            "trial {trial} ({}): a backup of {snap} is listed after a read error: {listed:?}",
            fault.label()
        );
        // A new volume cannot be formatted.
        let newvol = rig.name(&format!("n{trial}"));
        let err = c.must_fail(&rig, &["create", &newvol], "create under a data fault");
        messages.insert(format!("create/{}", fault.label()), err);
        // The daemon keeps serving: info, list, inspect, the vfs driver.
        c.must_serve(&rig, &["inspect", &vol]);
        let list = rig.json(&["list"]);
        c.checks += 1;
        assert!(
            list.get(&vol).is_some() && list.get(&newvol).is_none(),
            "trial {trial}: list under a data fault: {list}"
        );
        vfs_serves(&mut c, &rig, trial);

        rig.data.set(Fault::Healthy);
        // A commit during the fault (the pool flushes the data device before committing its
        // metadata) leaves the pool read-only with needs_check: only the offline recovery
        // brings it back.
        let mode = rig.pool_mode();
        if mode != "rw" {
            read_only += 1;
            if let Answer::Err(e) = c.call(&rig, &["create", &newvol]) {
                messages.insert("create, pool read-only after a data fault".into(), e);
            }
            messages.insert(
                "pool after a data fault".into(),
                format!("{mode}: {}", rig.pool_status()),
            );
            messages.insert("offline recovery".into(), rig.recover_offline());
            c.checks += 1;
            assert_eq!(
                rig.pool_mode(),
                "rw",
                "trial {trial}: {}",
                rig.pool_status()
            );
        }
        // The same backup now completes and is listed.
        let url = rig.ok(&["backup", "create", &snap, "--dest", &rig.dest]);
        c.checks += 1;
        assert!(rig.listed_backups(&vol).iter().any(|(u, _)| u == &url));
        if trial + 1 == trials || rng.usize(0..4) == 0 {
            let r = rig.name(&format!("r{trial}"));
            rig.ok(&["create", &r, "--backup", &url]);
            let m = rig.ok(&["mount", &r]);
            drop_caches();
            let bad = verify(Path::new(&m), &files);
            fig.lost += bad;
            c.checks += 1;
            restored += 1;
            rig.ok(&["umount", &r]);
            rig.ok(&["delete", &r]);
        }
    }
    // Data written before the faults reads back from the volume itself.
    let at = rig.ok(&["mount", &vol]);
    drop_caches();
    let bad = verify(Path::new(&at), &files);
    fig.lost += bad;
    c.checks += 1;
    let mode = rig.pool_mode();
    fig.trials = trials as u64;
    fig.faults = c.faults;
    fig.checks = c.checks;
    fig.set("calls", c.calls)
        .set("clear_errors", c.clear_errors)
        .set("restores_compared", restored)
        .set("pool_read_only_after_fault", read_only)
        .set("pool_mode_after", mode.clone())
        .set("errors", serde_json::to_value(&messages).unwrap());
    fig.emit();
    assert_eq!(fig.lost, 0, "data lost (seed {})", rel_support::seed());
    assert_eq!(mode, "rw", "pool after data faults: {}", rig.pool_status());
}

/// A metadata fault, then the recovery: what convoy says, and what brings the pool back.
#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_vm_device_faults_metadata() {
    let mut rng = rng("device-faults-metadata");
    let trials = by_scale(1, 20);
    let mut rig = Rig::start("m", 512 << 20, 16 << 20, &[]);
    let mut c = Count::default();
    let mut fig = Figure::new(
        "device-faults",
        "I/O errors under the pool's metadata device",
    );
    let vol = rig.name("a");
    rig.ok(&["create", &vol]);
    let mut files = BTreeMap::new();
    let mut notes: BTreeMap<String, String> = BTreeMap::new();
    // Objects convoy reported made while the fault was on: checked after recovery.
    let mut snapshots_ok = Vec::new();
    let mut backups_ok = Vec::new();
    for trial in 0..trials {
        let at = rig.ok(&["mount", &vol]);
        let name = format!("f{trial}");
        let len = 64 << 10 << rng.usize(0..4);
        let bytes = random_bytes(&mut rng, len);
        write_synced(&Path::new(&at).join(&name), &bytes).unwrap();
        files.insert(name, bytes);
        let snap = rig.name(&format!("s{trial}"));
        rig.ok(&["snapshot", "create", &vol, "--name", &snap]);
        rig.ok(&["umount", &vol]);

        let fault = [Fault::ErrorAll, Fault::FlakeyDown][rng.usize(0..2)];
        rig.meta.set(fault);
        c.faults += 1;
        let label = fault.label();

        // Calls that change or read the metadata.
        let newvol = rig.name(&format!("n{trial}"));
        if let Answer::Err(e) = c.call(&rig, &["create", &newvol]) {
            notes.entry(format!("create/{label}")).or_insert(e);
        } else {
            panic!("trial {trial}: create {newvol} succeeded with the metadata device failing");
        }
        let snap2 = rig.name(&format!("t{trial}"));
        match c.call(&rig, &["snapshot", "create", &vol, "--name", &snap2]) {
            Answer::Ok(_) => snapshots_ok.push(snap2.clone()),
            Answer::Err(e) => {
                notes.entry(format!("snapshot/{label}")).or_insert(e);
            }
        }
        match c.call(&rig, &["backup", "create", &snap, "--dest", &rig.dest]) {
            Answer::Ok(url) => backups_ok.push((url, files.clone())),
            Answer::Err(e) => {
                notes.entry(format!("backup/{label}")).or_insert(e);
                c.checks += 1;
                assert!(
                    rig.listed_backups(&vol).iter().all(|(_, s)| s != &snap),
                    "trial {trial}: a failed backup of {snap} is listed"
                );
            }
        }
        // The daemon keeps serving.
        let list = rig.json(&["list"]);
        c.checks += 1;
        assert!(
            list.get(&vol).is_some(),
            "trial {trial}: {vol} not listed: {list}"
        );
        vfs_serves(&mut c, &rig, trial);
        let mode = rig.pool_mode();
        notes.entry(format!("pool_mode/{label}")).or_insert(mode);

        rig.meta.set(Fault::Healthy);
        // What convoy says once the device works again, the pool still in its failed mode.
        match c.call(&rig, &["create", &newvol]) {
            Answer::Err(e) => {
                notes.entry("create after heal".into()).or_insert(e);
            }
            Answer::Ok(_) => {
                notes
                    .entry("create after heal".into())
                    .or_insert("works".into());
                rig.ok(&["delete", &newvol]);
            }
        }
        // A restart with the pool left active.
        rig.stop();
        match rig.start_again() {
            Ok(()) => {
                notes
                    .entry("restart, pool active".into())
                    .or_insert(format!("daemon up, pool {}", rig.pool_mode()));
                rig.stop();
            }
            Err(e) => {
                notes.entry("restart, pool active".into()).or_insert(e);
            }
        }
        // Recovery: deactivate the pool, check (and clear the needs_check flag), restart.
        let check = rig.recover_offline();
        notes
            .entry(format!("thin_check after {label}"))
            .or_insert(check);
        c.checks += 1;
        assert_eq!(
            rig.pool_mode(),
            "rw",
            "trial {trial}: {}",
            rig.pool_status()
        );
    }
    // Everything reported done is there: data, snapshots, backups.
    let at = rig.ok(&["mount", &vol]);
    drop_caches();
    fig.lost += verify(Path::new(&at), &files);
    rig.ok(&["umount", &vol]);
    c.checks += 1;
    for s in &snapshots_ok {
        c.checks += 1;
        if let Answer::Err(e) = rig.call(&["backup", "create", s, "--dest", &rig.dest]) {
            fig.lost += 1;
            notes.insert(format!("LOST snapshot {s}"), e);
        }
    }
    for (i, (url, want)) in backups_ok.iter().enumerate() {
        let r = rig.name(&format!("rb{i}"));
        c.checks += 1;
        match rig.call(&["create", &r, "--backup", url]) {
            Answer::Ok(_) => {
                let m = rig.ok(&["mount", &r]);
                fig.lost += verify(Path::new(&m), want);
                rig.ok(&["umount", &r]);
                rig.ok(&["delete", &r]);
            }
            Answer::Err(e) => {
                fig.lost += 1;
                notes.insert(format!("LOST backup {url}"), e);
            }
        }
    }
    rig.stop();
    rig.deactivate_pool();
    let final_check = rig.thin_check(&[]);
    fig.trials = trials as u64;
    fig.faults = c.faults;
    fig.checks = c.checks;
    fig.set("calls", c.calls)
        .set("clear_errors", c.clear_errors)
        .set("snapshots_reported_under_fault", snapshots_ok.len())
        .set("backups_reported_under_fault", backups_ok.len())
        .set("thin_check_final", format!("{final_check:?}"))
        .set("notes", serde_json::to_value(&notes).unwrap());
    fig.emit();
    assert_eq!(fig.lost, 0, "lost after metadata faults: {notes:?}");
    assert!(final_check.is_ok(), "thin_check: {final_check:?}");
}
