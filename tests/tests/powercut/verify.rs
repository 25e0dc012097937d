//! The boot after a cut: every check of what the previous boot's power cut left.

use super::*;

/// What one verify found.
#[derive(Default)]
struct Tally {
    checks: u64,
    lost: u64,
    acked_records: u64,
    acked_files: u64,
    backups_restored: u64,
    violations: Vec<String>,
}

impl Tally {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if ok {
            self.checks += 1;
        } else {
            self.violations.push(what());
        }
    }
}

/// Checks every acknowledged write of `vol` under its mount point `mp`.
fn check_acked(vol: &str, mp: &Path, t: &mut Tally) {
    let mut last_record: BTreeMap<u64, u64> = BTreeMap::new();
    let mut last_file: BTreeMap<u64, u64> = BTreeMap::new();
    for line in log_lines(&acks_path(vol)) {
        let Some((kind, id)) = line.split_once(' ') else {
            continue;
        };
        let id: u64 = id.parse().expect("ack id");
        match kind {
            "r" => {
                t.acked_records += 1;
                last_record.insert(id % SLOTS, id);
            }
            "f" => {
                t.acked_files += 1;
                last_file.insert((id / FILE_EVERY) % FILE_SLOTS, id);
            }
            _ => panic!("acks of {vol}: unreadable line {line:?}"),
        }
    }
    let data = fs::read(mp.join("records.dat")).unwrap_or_default();
    let mut bad = Vec::new();
    for (&slot, &acked) in &last_record {
        let at = (slot as usize) * RECORD;
        let bytes = data.get(at..at + RECORD).unwrap_or_default();
        let ok = header_id(bytes, "pcrec", vol)
            .is_some_and(|id| id >= acked && id % SLOTS == slot && bytes == record(vol, id));
        if !ok {
            bad.push(format!("record {acked}"));
        }
    }
    for (&slot, &acked) in &last_file {
        let bytes = fs::read(mp.join(format!("files/f{slot}"))).unwrap_or_default();
        let ok = header_id(&bytes, "pcfile", vol).is_some_and(|id| {
            id >= acked && (id / FILE_EVERY) % FILE_SLOTS == slot && bytes == file_record(vol, id)
        });
        if !ok {
            bad.push(format!("file f{slot} (id {acked})"));
        }
    }
    t.lost += bad.len() as u64;
    t.check(bad.is_empty(), || {
        format!("{vol}: acknowledged writes lost: {}", bad.join(", "))
    });
}

/// Every check of what the previous boot's power cut left.
pub(super) fn verify(boot: u64) {
    let mut t = Tally::default();
    let mut events = Events::load();
    let d = Daemon::start();
    let list = d.json(&["list"]);
    for vol in &events.vols {
        t.check(list.get(vol).is_some(), || {
            format!("volume {vol} lost: {list}")
        });
    }
    for (snap, vol) in &events.snaps {
        let exists = list[vol]["Snapshots"].get(snap).is_some();
        if events.snap_deleted.contains(snap) {
            t.check(!exists, || format!("deleted snapshot {snap} is back"));
        } else if !events.snap_deleting.contains(snap) {
            t.check(exists, || format!("snapshot {snap} of {vol} lost: {list}"));
        }
    }
    // Acknowledged writes, through the filesystems start-up re-mounted.
    for vol in VOLUMES {
        let mp = list[vol]["MountPoint"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        t.check(!mp.is_empty(), || {
            format!("{vol} was not re-mounted at start-up")
        });
        let mp = if mp.is_empty() {
            d.ok(&["mount", vol])
        } else {
            mp
        };
        check_acked(vol, Path::new(&mp), &mut t);
    }
    // The filesystems are clean once unmounted, and mount again.
    for vol in VOLUMES {
        d.ok(&["umount", vol]);
        let device = list[vol]["DriverInfo"]["Device"]
            .as_str()
            .unwrap_or_default();
        let out = Command::new("fsck.ext4")
            .args(["-f", "-n", device])
            .output()
            .unwrap();
        t.check(out.status.success(), || {
            format!(
                "fsck of {vol} ({device}) not clean: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        let mp = d.ok(&["mount", vol]);
        t.check(Path::new(&mp).join("records.dat").is_file(), || {
            format!("{vol} re-mounted at {mp} without records.dat")
        });
        d.ok(&["umount", vol]);
    }
    // Every acknowledged backup is listed; every listed backup restores bit-exact.
    let listed = d.json(&["backup", "list", &dest()]);
    let listed: Vec<String> = listed
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap();
    for (url, (_, snap, _)) in &events.backups {
        if !events.backup_deleting.contains(url) && !events.backup_deleted.contains(url) {
            let ok = listed.contains(url);
            t.lost += u64::from(!ok);
            t.check(ok, || {
                format!("acknowledged backup of {snap} not listed: {url}")
            });
        }
    }
    let existing: HashSet<String> = list
        .as_object()
        .unwrap()
        .values()
        .flat_map(|v| v["Snapshots"].as_object().unwrap().keys().cloned())
        .collect();
    for (i, url) in listed.iter().enumerate() {
        let expected = match events.backups.get(url) {
            Some((_, _, sha)) => Some(sha.clone()),
            None => {
                // Published, but the call did not return before the cut: compare with its
                // snapshot while that still exists.
                let snap = d.json(&["backup", "inspect", url])["SnapshotName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                existing.contains(&snap).then(|| snapshot_sha(&d, &snap))
            }
        };
        let got = restore_sha(&d, url, &format!("pcr-{boot}-{i}"));
        t.backups_restored += u64::from(got.is_ok());
        let ok = match (&got, &expected) {
            (Ok(g), Some(e)) => g == e,
            (Ok(_), None) => true,
            (Err(_), _) => false,
        };
        t.lost += u64::from(!ok && events.backups.contains_key(url));
        t.check(ok, || {
            format!("listed backup {url} does not restore bit-exact: {got:?}")
        });
    }
    // Finish deletions the cut interrupted, then the next backup must work.
    for (snap, _) in events.snaps.clone() {
        if events.snap_deleting.contains(&snap) && !events.snap_deleted.contains(&snap) {
            if existing.contains(&snap) {
                d.ok(&["snapshot", "delete", &snap]);
            }
            events.record(&format!("snap-deleted {snap}"));
        }
    }
    for url in events.backup_order.clone() {
        if events.backup_deleting.contains(&url) && !events.backup_deleted.contains(&url) {
            if listed.contains(&url) {
                d.ok(&["backup", "delete", &url]);
            }
            events.record(&format!("backup-deleted {url}"));
        }
    }
    let snap = format!("pcs-{boot}-verify");
    d.ok(&["snapshot", "create", VOLUMES[0], "--name", &snap]);
    events.record(&format!("snap {snap} {}", VOLUMES[0]));
    let sha = snapshot_sha(&d, &snap);
    let url = d.ok(&["backup", "create", &snap, "--dest", &dest()]);
    events.record(&format!("backup {url} {} {snap} {sha}", VOLUMES[0]));
    let got = restore_sha(&d, &url, &format!("pcr-{boot}-next"));
    t.check(got.as_ref() == Ok(&sha), || {
        format!("the next backup {url} restores as {got:?}")
    });

    // Thin ids: exactly those the records name, then thin_check with the pool gone.
    let list = d.json(&["list"]);
    let mut named = HashSet::new();
    for v in list.as_object().unwrap().values() {
        named.insert(
            v["DriverInfo"]["DevID"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
        for s in v["Snapshots"].as_object().unwrap().values() {
            named.insert(
                s["DriverInfo"]["DevID"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
    }
    d.stop();
    remove_dm_devices();
    let [_, meta, _] = disks();
    let out = Command::new("thin_check").arg(&meta).output().unwrap();
    t.check(out.status.success(), || {
        format!(
            "thin_check {meta}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let dump = run("thin_dump", &[&meta]);
    let in_pool: HashSet<String> = dump
        .split("<device dev_id=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next().map(str::to_string))
        .collect();
    let orphans: Vec<_> = in_pool.difference(&named).collect();
    let missing: Vec<_> = named.difference(&in_pool).collect();
    t.check(orphans.is_empty(), || {
        format!("orphan thin ids in the pool: {orphans:?}")
    });
    t.check(missing.is_empty(), || {
        format!("thin ids recorded but not in the pool: {missing:?}")
    });

    let line = serde_json::json!({
        "boot": boot, "checks": t.checks, "lost": t.lost, "violations": t.violations.len(),
        "acked_records": t.acked_records, "acked_files": t.acked_files,
        "backups_listed": listed.len(), "backups_restored": t.backups_restored,
    });
    println!("@@POWERCUT-VERIFY {line}");
    assert!(
        t.violations.is_empty(),
        "power cut before boot {boot} (seed {}): {}\n{}",
        seed(),
        t.violations.join("\n"),
        daemon_log_tail()
    );
}

/// Removes every device-mapper device of the test (thin devices, then the pool).
fn remove_dm_devices() {
    let out = run("dmsetup", &["ls"]);
    let mut names: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        // The test's devices and convoy's thin devices of its pool.
        .filter(|n| n.starts_with("pc") || n.starts_with(&format!("convoy-{POOL}-")))
        .collect();
    names.sort_by_key(|n| *n == POOL);
    for name in names {
        run("dmsetup", &["remove", name]);
    }
}
