//! The S3 server killed with SIGKILL mid-backup and mid-restore, then restarted.

use super::*;

/// How long the server stays down: usually within the daemon's retry budget; in a full run
/// every tenth outage outlasts it (the operation must then fail cleanly).
fn outage(rng: &mut fastrand::Rng, trial: u64) -> Duration {
    if rel_support::scale() == rel_support::Scale::Full && trial % 10 == 5 {
        Duration::from_secs(45)
    } else {
        Duration::from_millis(rng.u64(100..3000))
    }
}

/// Runs `op`, kills the server at a seeded moment within `est` if the op still runs, restarts
/// it after a seeded outage. Returns the op's outcome and whether a fault hit it mid-way.
fn with_server_kill(
    server: &mut S3Server,
    mut op: Op,
    rng: &mut fastrand::Rng,
    est: &mut Duration,
    l: &mut Ledger,
    what: &str,
) -> (Result<String, String>, bool) {
    let kill_at = Duration::from_millis(rng.u64(0..=est.as_millis().max(1) as u64));
    let down = outage(rng, l.fig.trials);
    while op.started.elapsed() < kill_at && op.running() {
        std::thread::sleep(Duration::from_millis(2));
    }
    let mid = op.running();
    if mid {
        server.kill9();
        l.fig.faults += 1;
        std::thread::sleep(down);
        server.spawn();
    }
    let (res, took) = op.finish(what);
    l.took(took);
    if !mid {
        // Done before the kill: operations got faster (less load); aim within this one.
        *est = took;
    }
    (res, mid)
}

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_host_s3_killed_mid_backup() {
    let _serial = serial();
    let mut rng = rng("s3-killed-mid-backup");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = S3Server::start(&dir.path().join("s3"));
    let mut d = s3_daemon(&server.endpoint());
    let opts = lib_opts(Some(&server.endpoint()));
    let mut l = Ledger::new(
        "S3 server kill -9 and restart during backup",
        format!("s3://{BUCKET}@us-east-1/store"),
    );
    d.ok(&["create", "vol"]);
    scribble(&d, "vol", &mut rng, 24, (256 << 10, 1 << 20));
    let tree = snapshot(&d, "vol", "s0");
    let started = Instant::now();
    clean_backup(&d, &mut l, "s0", tree);
    let mut est = started.elapsed();
    let (mut failed, mut survived) = (0u64, 0u64);
    let target = by_scale(2, 20);
    while l.fig.faults < target && l.fig.trials < target * 3 {
        l.fig.trials += 1;
        let snap = format!("s{}", l.fig.trials);
        scribble(&d, "vol", &mut rng, 8, (256 << 10, 1 << 20));
        let tree = snapshot(&d, "vol", &snap);
        let op = spawn_op(&d, &["backup", "create", &snap, "--dest", &l.dest]);
        let (res, mid) = with_server_kill(&mut server, op, &mut rng, &mut est, &mut l, "backup");
        let url = match res {
            Ok(url) => {
                survived += u64::from(mid);
                l.complete.insert(url.clone(), tree);
                Some(url)
            }
            Err(msg) => {
                failed += 1;
                l.clean_failure(&msg, &[]);
                l.check_listing(&d);
                // The fault is gone: the next backup must succeed.
                let started = Instant::now();
                let url = clean_backup(&d, &mut l, &snap, tree);
                est = started.elapsed();
                url
            }
        };
        l.check_listing(&d);
        if let Some(url) = url {
            l.verify_one(&url, &opts);
            l.check_restore(&d, &url, &format!("r{}", l.fig.trials));
        }
    }
    l.fig
        .set("failed_cleanly", failed)
        .set("completed_despite_kill", survived)
        .set("clean_backup_ms", est.as_millis() as u64);
    let repaired = l.finish_store(&mut d, &opts, true);
    l.emit_and_assert(repaired);
}

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_host_s3_killed_mid_restore() {
    let _serial = serial();
    let mut rng = rng("s3-killed-mid-restore");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = S3Server::start(&dir.path().join("s3"));
    let mut d = s3_daemon(&server.endpoint());
    let opts = lib_opts(Some(&server.endpoint()));
    let mut l = Ledger::new(
        "S3 server kill -9 and restart during restore",
        format!("s3://{BUCKET}@us-east-1/store"),
    );
    d.ok(&["create", "vol"]);
    scribble(&d, "vol", &mut rng, 32, (256 << 10, 1 << 20));
    let tree = snapshot(&d, "vol", "s0");
    let Some(url) = clean_backup(&d, &mut l, "s0", tree.clone()) else {
        return l.emit_and_assert([0; 3]);
    };
    let started = Instant::now();
    l.check_restore(&d, &url, "r0");
    let mut est = started.elapsed();
    let (mut failed, mut survived) = (0u64, 0u64);
    let target = by_scale(2, 20);
    while l.fig.faults < target && l.fig.trials < target * 3 {
        l.fig.trials += 1;
        let name = format!("r{}", l.fig.trials);
        let op = spawn_op(&d, &["create", &name, "--backup", &url]);
        let (res, mid) = with_server_kill(&mut server, op, &mut rng, &mut est, &mut l, "restore");
        l.restores += 1;
        match res {
            Ok(_) => {
                survived += u64::from(mid);
                let got = read_tree(&PathBuf::from(d.ok(&["mount", &name])));
                if got != tree {
                    l.fig.lost += 1;
                }
                l.check(got == tree, || {
                    format!("restore {name} differs from the backup")
                });
                d.ok(&["umount", &name]);
                d.ok(&["delete", &name]);
            }
            Err(msg) => {
                failed += 1;
                l.clean_failure(&msg, &[]);
                check_no_volume(&d, &mut l, &name);
                // The fault is gone: the restore must now succeed.
                l.check_restore(&d, &url, &name);
            }
        }
    }
    l.fig
        .set("failed_cleanly", failed)
        .set("completed_despite_kill", survived)
        .set("clean_restore_ms", est.as_millis() as u64);
    l.verify_all(&opts);
    let repaired = l.finish_store(&mut d, &opts, true);
    l.emit_and_assert(repaired);
}
