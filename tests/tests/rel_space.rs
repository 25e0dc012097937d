//! Reliability suite, space exhaustion (VM tier): a real dm-thin pool (convoy sets
//! `error_if_no_space`) run out of data space (small data device, a volume written until the
//! writes fail) and out of metadata space (a tiny metadata device, snapshots and writes that
//! break block sharing), driven through the CLI of a `convoy daemon` (devicemapper + vfs).
//!
//! Checked: create / snapshot / restore fail with exit 1 and a JSON error that says what is
//! full; a write the kernel acknowledged (fsync returned) reads back; data written before the
//! pool filled reads back; backups listed restore bit-exact; once space is freed (or, for
//! metadata, the metadata device grown) the pool works again; `thin_check` passes at the end.

mod cli_support;
mod rel_faultpool;
mod rel_support;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use rel_faultpool::{drop_caches, random_bytes, write_synced, Answer, Rig};
use rel_support::{by_scale, rng, Figure};

/// Waits (bounded) until the pool's mode is `want`; returns the last mode seen.
fn wait_mode(rig: &Rig, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mode = rig.pool_mode();
        if mode == want || Instant::now() > deadline {
            return mode;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Checks every recorded file under `dir`; returns how many differ.
fn verify(dir: &Path, files: &BTreeMap<String, Vec<u8>>) -> u64 {
    files
        .iter()
        .filter(|(name, want)| std::fs::read(dir.join(name)).ok().as_ref() != Some(*want))
        .count() as u64
}

/// A call that must fail clearly and say `what` (case-insensitive) in its message.
fn must_refuse(rig: &Rig, args: &[&str], what: &[&str], trial: usize) -> String {
    match rig.call(args) {
        Answer::Ok(out) => panic!("trial {trial}: convoy {args:?} succeeded on a full pool: {out}"),
        Answer::Err(e) => {
            let lower = e.to_lowercase();
            assert!(
                what.iter().any(|w| lower.contains(w)),
                "trial {trial}: convoy {args:?}: the error does not say the pool is full \
                 ({what:?}): {e}"
            );
            e
        }
    }
}

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_vm_space_data_full() {
    let mut rng = rng("space-data");
    let trials = by_scale(1, 5);
    // 48 MiB of data: 768 blocks of 64 KiB.
    let mut rig = Rig::start("s", 48 << 20, 16 << 20, &[]);
    let mut fig = Figure::new("space", "pool data space exhausted and freed");
    let mut notes: BTreeMap<String, String> = BTreeMap::new();
    let vol = rig.name("a");
    rig.ok(&["create", &vol]);
    let mut files = BTreeMap::new();
    let mut acked_total = 0u64;
    // Calls refused with a clear error while the pool was full.
    let mut refused = 0u64;
    for trial in 0..trials {
        let at = rig.ok(&["mount", &vol]);
        let name = format!("f{trial}");
        let bytes = random_bytes(&mut rng, 256 << 10);
        write_synced(&Path::new(&at).join(&name), &bytes).unwrap();
        files.insert(name, bytes);
        let snap = rig.name(&format!("s{trial}"));
        rig.ok(&["snapshot", "create", &vol, "--name", &snap]);
        rig.ok(&["umount", &vol]);

        // A filler volume bigger than the pool, written through its filesystem until a write
        // fails. Every chunk whose fsync returned is acknowledged and must read back.
        let filler = rig.name(&format!("fill{trial}"));
        rig.ok(&["create", &filler, "--size", "256M"]);
        let fat = rig.ok(&["mount", &filler]);
        let fill_path = Path::new(&fat).join("fill");
        let mut file = File::create(&fill_path).unwrap();
        let mut acked: Vec<Vec<u8>> = Vec::new();
        let write_error = loop {
            let chunk = random_bytes(&mut rng, 1 << 20);
            match file.write_all(&chunk).and_then(|_| file.sync_data()) {
                Ok(()) => acked.push(chunk),
                Err(e) => break e.to_string(),
            }
            assert!(
                acked.len() < 256,
                "trial {trial}: 256 MiB written to a 48 MiB pool"
            );
        };
        drop(file);
        fig.faults += 1;
        notes.entry("write when full".into()).or_insert(write_error);
        let mode = rig.pool_mode();
        notes
            .entry("pool mode when full".into())
            .or_insert(mode.clone());
        assert_eq!(
            mode,
            "out_of_data_space",
            "trial {trial}: {}",
            rig.pool_status()
        );

        // Clear refusals.
        let full = ["out of data space", "no space", "full"];
        let newvol = rig.name(&format!("n{trial}"));
        let e = must_refuse(&rig, &["create", &newvol], &full, trial);
        notes.entry("create".into()).or_insert(e);
        let e = must_refuse(
            &rig,
            &[
                "snapshot",
                "create",
                &vol,
                "--name",
                &rig.name(&format!("x{trial}")),
            ],
            &full,
            trial,
        );
        notes.entry("snapshot".into()).or_insert(e);
        // A backup only reads: it may work; if it does, it must restore later.
        let backup = rig.call(&["backup", "create", &snap, "--dest", &rig.dest]);
        notes
            .entry("backup".into())
            .or_insert_with(|| format!("{backup:?}"));
        if let Answer::Ok(url) = &backup {
            let e = must_refuse(
                &rig,
                &["create", &rig.name(&format!("r{trial}")), "--backup", url],
                &full,
                trial,
            );
            notes.entry("restore".into()).or_insert(e);
        }
        // create and snapshot, and the restore when the backup worked (each asserted above).
        refused += 2 + u64::from(matches!(backup, Answer::Ok(_)));
        let list = rig.json(&["list"]);
        assert!(
            list.get(&newvol).is_none(),
            "trial {trial}: refused volume listed: {list}"
        );
        rig.ok(&["info"]);
        let v = rig.name(&format!("vfs{trial}"));
        rig.ok(&["create", &v, "--driver", "vfs"]);
        rig.ok(&["delete", &v]);
        fig.checks += 3;

        // Acknowledged writes read back (from the device, not the page cache).
        drop_caches();
        let mut back = Vec::new();
        File::open(&fill_path)
            .and_then(|mut f| f.read_to_end(&mut back))
            .unwrap_or_else(|e| panic!("trial {trial}: read back {}: {e}", fill_path.display()));
        let ok_chunks = acked
            .iter()
            .enumerate()
            .filter(|(i, c)| back.get(i * (1 << 20)..(i + 1) * (1 << 20)) == Some(&c[..]))
            .count();
        fig.lost += (acked.len() - ok_chunks) as u64;
        acked_total += acked.len() as u64;
        fig.checks += 1;

        // Free the space: delete the filler. The pool leaves out_of_data_space by itself.
        rig.ok(&["umount", &filler]);
        rig.ok(&["delete", &filler]);
        let mode = wait_mode(&rig, "rw");
        notes
            .entry("pool mode after delete".into())
            .or_insert(mode.clone());
        assert_eq!(
            mode,
            "rw",
            "trial {trial}: after freeing: {}",
            rig.pool_status()
        );
        rig.ok(&["create", &newvol]);
        rig.ok(&["delete", &newvol]);
        if let Answer::Ok(url) = &backup {
            let r = rig.name(&format!("r{trial}"));
            rig.ok(&["create", &r, "--backup", url]);
            let m = rig.ok(&["mount", &r]);
            drop_caches();
            fig.lost += verify(Path::new(&m), &files);
            rig.ok(&["umount", &r]);
            rig.ok(&["delete", &r]);
            fig.checks += 1;
        }
        fig.checks += 2;
        fig.trials += 1;
    }
    let at = rig.ok(&["mount", &vol]);
    drop_caches();
    fig.lost += verify(Path::new(&at), &files);
    rig.ok(&["umount", &vol]);
    rig.stop();
    rig.deactivate_pool();
    let check = rig.thin_check(&[]);
    fig.checks += 2;
    fig.set("acked_mib", acked_total)
        .set("clear_errors", refused)
        .set("thin_check", format!("{check:?}"))
        .set("notes", serde_json::to_value(&notes).unwrap());
    fig.emit();
    assert_eq!(fig.lost, 0, "data lost (seed {})", rel_support::seed());
    assert!(check.is_ok(), "thin_check after data-full: {check:?}");
}

/// Writes `len` random bytes at `offset` of the raw thin device and flushes; the error as text.
fn raw_write(dev: &File, rng: &mut fastrand::Rng, offset: u64, len: usize) -> Result<(), String> {
    let buf = random_bytes(rng, len);
    dev.write_all_at(&buf, offset)
        .and_then(|_| dev.sync_data())
        .map_err(|e| e.to_string())
}

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_vm_space_metadata_full() {
    let mut rng = rng("space-metadata");
    // A tiny metadata device (128 blocks of 4 KiB) fills after a few dozen snapshots.
    let meta_bytes: u64 = 512 << 10;
    let mut rig = Rig::start("t", 256 << 20, meta_bytes, &[]);
    let mut fig = Figure::new("space", "pool metadata space exhausted, then grown");
    let mut notes: BTreeMap<String, String> = BTreeMap::new();
    let vol = rig.name("a");
    rig.ok(&["create", &vol]);
    let at = rig.ok(&["mount", &vol]);
    let mut files = BTreeMap::new();
    let base = random_bytes(&mut rng, 256 << 10);
    write_synced(&Path::new(&at).join("base"), &base).unwrap();
    files.insert("base".to_string(), base);
    rig.ok(&["umount", &vol]);
    let s0 = rig.name("s0");
    rig.ok(&["snapshot", "create", &vol, "--name", &s0]);
    let b0 = rig.ok(&["backup", "create", &s0, "--dest", &rig.dest]);

    // A filler volume, written raw (unmounted): fully provisioned, then snapshot after
    // snapshot with one small write in every 8 MiB (one btree leaf each) breaking the sharing.
    let filler = rig.name("fill");
    rig.ok(&["create", &filler, "--size", "128M"]);
    let dev = OpenOptions::new()
        .write(true)
        .open(
            rig.json(&["inspect", &filler])["DriverInfo"]["Device"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    for i in 0..128u64 {
        raw_write(&dev, &mut rng, i << 20, 1 << 20).unwrap();
    }
    let mut snaps = Vec::new();
    let mut first_refusal = None;
    let mut writes_failed = 0u64;
    for cycle in 0..400 {
        let s = rig.name(&format!("c{cycle}"));
        match rig.call(&["snapshot", "create", &filler, "--name", &s]) {
            Answer::Ok(_) => snaps.push(s),
            Answer::Err(e) => {
                first_refusal = Some((cycle, e));
                break;
            }
        }
        for k in 0..16u64 {
            let off = (k << 23) + (rng.u64(0..128) << 16);
            if raw_write(&dev, &mut rng, off, 4096).is_err() {
                writes_failed += 1;
            }
        }
    }
    drop(dev);
    let (cycles, refusal) = first_refusal.expect("metadata never filled in 400 snapshots");
    fig.faults += 1;
    notes.insert("snapshot refused".into(), refusal.clone());
    notes.insert("pool status when full".into(), rig.pool_status());
    let full = ["metadata"];
    let lower = refusal.to_lowercase();
    assert!(
        full.iter().any(|w| lower.contains(w)),
        "snapshot refusal does not say the metadata is full: {refusal}"
    );
    let e = must_refuse(&rig, &["create", &rig.name("n0")], &full, 0);
    notes.insert("create".into(), e);
    let backup = rig.call(&["backup", "create", &s0, "--dest", &rig.dest]);
    notes.insert("backup".into(), format!("{backup:?}"));
    // Deleting snapshots to free metadata: what the kernel allows.
    let del = rig.call(&["snapshot", "delete", &snaps[snaps.len() - 1]]);
    notes.insert("snapshot delete when full".into(), format!("{del:?}"));
    if matches!(del, Answer::Ok(_)) {
        snaps.pop();
    }
    // The snapshot and create refusals (asserted), and what backup and delete answered.
    let refused = 2 + u64::from(backup.err().is_some()) + u64::from(del.err().is_some());
    rig.ok(&["info"]);
    let v = rig.name("vfs");
    rig.ok(&["create", &v, "--driver", "vfs"]);
    rig.ok(&["delete", &v]);
    fig.checks += 2;

    // Recovery: grow the metadata device (x4) and reload the pool's table in place.
    rig.meta.grow(meta_bytes * 4);
    let table = rel_faultpool::dm_table(&rig.pool);
    convoy_e2e::run("dmsetup", &["suspend", &rig.pool]);
    convoy_e2e::run("dmsetup", &["load", &rig.pool, "--table", &table]);
    convoy_e2e::run("dmsetup", &["resume", &rig.pool]);
    let mode = wait_mode(&rig, "rw");
    notes.insert("after growing metadata + reload".into(), rig.pool_status());
    if mode != "rw" {
        // Needs the pool re-activated (and maybe its needs_check flag cleared).
        rig.stop();
        rig.deactivate_pool();
        let check = rig.thin_check(&[]);
        notes.insert(
            "thin_check when reload was not enough".into(),
            format!("{check:?}"),
        );
        if check.is_err() {
            let c = rig.thin_check(&["--clear-needs-check-flag"]);
            notes.insert(
                "thin_check --clear-needs-check-flag".into(),
                format!("{c:?}"),
            );
        }
        rig.start_again().expect("daemon after metadata recovery");
    }
    let mode = rig.pool_mode();
    fig.checks += 1;
    // Everything works again; data and backups are intact.
    for s in snaps.drain(..) {
        if let Answer::Err(e) = rig.call(&["snapshot", "delete", &s]) {
            notes.insert(format!("delete {s} after recovery"), e);
        }
    }
    notes.insert(
        "filler snapshots left".into(),
        rig.json(&["inspect", &filler])["Snapshots"].to_string(),
    );
    rig.ok(&["delete", &filler]);
    rig.ok(&["create", &rig.name("n1")]);
    let at = rig.ok(&["mount", &vol]);
    drop_caches();
    fig.lost += verify(Path::new(&at), &files);
    rig.ok(&["umount", &vol]);
    let r = rig.name("r0");
    rig.ok(&["create", &r, "--backup", &b0]);
    let m = rig.ok(&["mount", &r]);
    fig.lost += verify(Path::new(&m), &files);
    rig.ok(&["umount", &r]);
    rig.stop();
    rig.deactivate_pool();
    let check = rig.thin_check(&[]);
    fig.checks += 4;
    fig.trials = 1;
    fig.set("snapshots_before_full", cycles)
        .set("clear_errors", refused)
        .set("writes_failed", writes_failed)
        .set("metadata_bytes", meta_bytes)
        .set("pool_mode_after_recovery", mode.clone())
        .set("thin_check", format!("{check:?}"))
        .set("notes", serde_json::to_value(&notes).unwrap());
    fig.emit();
    assert_eq!(fig.lost, 0, "data lost (seed {})", rel_support::seed());
    assert_eq!(mode, "rw");
    assert!(check.is_ok(), "thin_check after metadata-full: {check:?}");
}
