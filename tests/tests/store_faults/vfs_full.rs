//! A `vfs://` target on a full tmpfs, and on one remounted read-only.

use super::*;

/// A tmpfs mounted on a temp dir; unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().to_string_lossy().into_owned();
        convoy_e2e::run(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", &path],
        );
        Tmpfs { dir }
    }

    fn remount(&self, opts: &str) {
        let path = self.dir.path().to_string_lossy().into_owned();
        convoy_e2e::run("mount", &["-o", &format!("remount,{opts}"), &path]);
    }

    fn dest(&self) -> String {
        format!("vfs://{}/store", self.dir.path().display())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// One trial of a vfs target fault: a small backup completes; with `fault` applied a larger
/// backup must fail naming `cause`; with `clear` applied it must succeed; both restore.
/// A fault of a vfs target: how to apply and clear it, and what its error must say.
struct VfsFault<'a> {
    fault: &'a dyn Fn(&Tmpfs),
    clear: &'a dyn Fn(&Tmpfs),
    cause: &'a [&'a str],
}

fn vfs_fault_trial(
    d: &mut TestDaemon,
    l: &mut Ledger,
    rng: &mut fastrand::Rng,
    fs: &Tmpfs,
    f: &VfsFault<'_>,
    faulted_restores: &mut (u64, u64),
) -> bool {
    let t = l.fig.trials;
    for volume in ["small", "big"] {
        let dir = PathBuf::from(d.ok(&["mount", volume]));
        for e in std::fs::read_dir(&dir).expect("volume dir").flatten() {
            std::fs::remove_dir_all(e.path()).expect("clear volume");
        }
    }
    scribble(d, "small", rng, 2, (64 << 10, 512 << 10));
    let tree = snapshot(d, "small", &format!("small{t}"));
    let Some(first) = clean_backup(d, l, &format!("small{t}"), tree) else {
        return false;
    };
    scribble(d, "big", rng, 8, (1 << 20, 3 << 19));
    let big = format!("big{t}");
    let tree = snapshot(d, "big", &big);
    (f.fault)(fs);
    let (res, took) = spawn_op(d, &["backup", "create", &big, "--dest", &l.dest]).finish("backup");
    l.took(took);
    let injected = match res {
        Ok(url) => {
            // Fitted after all: a complete backup, still checked below.
            l.complete.insert(url, tree.clone());
            false
        }
        Err(msg) => {
            l.fig.faults += 1;
            l.clean_failure(&msg, f.cause);
            true
        }
    };
    l.check_listing(d);
    // Reading from the faulted store: a restore either works or fails cleanly, leaving nothing.
    if injected {
        let name = format!("rf{t}");
        let (res, took) = spawn_op(d, &["create", &name, "--backup", &first]).finish("restore");
        l.took(took);
        l.restores += 1;
        match res {
            Ok(_) => {
                let got = read_tree(&PathBuf::from(d.ok(&["mount", &name])));
                let want = l.complete[&first].clone();
                if got != want {
                    l.fig.lost += 1;
                }
                l.check(got == want, || {
                    format!("restore {name} from the faulted store differs")
                });
                d.ok(&["umount", &name]);
                d.ok(&["delete", &name]);
                faulted_restores.0 += 1;
            }
            Err(msg) => {
                // Backups must stay restorable from a full or read-only store.
                l.check(false, || {
                    format!("restore from the faulted store failed: {msg}")
                });
                check_no_volume(d, l, &name);
                faulted_restores.1 += 1;
            }
        }
    }
    (f.clear)(fs);
    if injected {
        clean_backup(d, l, &big, tree);
    }
    l.check_listing(d);
    let opts = lib_opts(None);
    for url in l.complete.keys().cloned().collect::<Vec<_>>() {
        l.verify_one(&url, &opts);
    }
    l.check_restore(d, &first, &format!("rs{t}"));
    if let Some(url) = l
        .complete
        .keys()
        .find(|u| u.contains("backup=") && *u != &first)
        .cloned()
    {
        l.check_restore(d, &url, &format!("rb{t}"));
    }
    injected
}

fn vfs_fault_scenario(
    scenario: &str,
    seed_name: &str,
    f: VfsFault<'_>,
    initial_size: &dyn Fn(&mut fastrand::Rng) -> String,
) {
    let _serial = serial();
    let started = Instant::now();
    let mut rng = rng(seed_name);
    let mut d = TestDaemon::start(&[]);
    d.ok(&["create", "small"]);
    d.ok(&["create", "big"]);
    let mut fig = Figure::new("store-faults", scenario);
    let mut violations = Vec::new();
    let (mut max_op_ms, mut restores, mut completed) = (0, 0, 0);
    let mut repaired = [0; 3];
    let mut faulted_restores = (0, 0);
    let target = by_scale(1, 20);
    let mut trials = 0;
    while fig.faults < target && trials < target * 2 {
        trials += 1;
        let fs = Tmpfs::mount(&initial_size(&mut rng));
        let mut l = Ledger::new(scenario, fs.dest());
        l.fig.trials = trials;
        vfs_fault_trial(&mut d, &mut l, &mut rng, &fs, &f, &mut faulted_restores);
        let r = l.finish_store(&mut d, &lib_opts(None), false);
        for (a, b) in repaired.iter_mut().zip(r) {
            *a += b;
        }
        fig.faults += l.fig.faults;
        fig.checks += l.fig.checks;
        fig.lost += l.fig.lost;
        max_op_ms = max_op_ms.max(l.max_op_ms);
        restores += l.restores;
        completed += l.complete.len() as u64;
        violations.append(&mut l.violations);
        drop(fs);
    }
    fig.trials = trials;
    fig.set("backups_completed", completed)
        .set("restores_while_faulted_ok", faulted_restores.0)
        .set("restores_while_faulted_failed", faulted_restores.1);
    let l = Ledger {
        dest: String::new(),
        complete: BTreeMap::new(),
        fig,
        violations,
        max_op_ms,
        restores,
        started,
    };
    l.emit_and_assert(repaired);
}

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_host_vfs_target_full() {
    vfs_fault_scenario(
        "vfs target on a full tmpfs",
        "vfs-target-full",
        VfsFault {
            fault: &|_| {},
            clear: &|fs| fs.remount("size=256m"),
            cause: &["No space left"],
        },
        &|rng| format!("{}k", rng.u64(3 << 10..7 << 10)),
    );
}

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_host_vfs_target_read_only() {
    vfs_fault_scenario(
        "vfs target remounted read-only",
        "vfs-target-read-only",
        VfsFault {
            fault: &|fs| fs.remount("ro"),
            clear: &|fs| fs.remount("rw"),
            cause: &["Read-only file system"],
        },
        &|_| "256m".to_string(),
    );
}
