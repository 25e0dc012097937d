//! An S3 server behind a TCP proxy adding seeded delays, stalls and dropped connections.

use super::*;

/// Fault settings of the slow proxy, and what it did.
#[derive(Default)]
struct ProxyState {
    rng: Mutex<Option<fastrand::Rng>>,
    /// Per forwarded read: delay up to this many ms.
    delay_ms: AtomicU64,
    /// Per mille of reads followed by a stall of 0.5–3 s.
    stall_permille: AtomicU64,
    /// Per mille of reads after which both connections are shut down.
    drop_permille: AtomicU64,
    delayed: AtomicU64,
    stalls: AtomicU64,
    drops: AtomicU64,
}

impl ProxyState {
    fn set(&self, delay_ms: u64, stall: u64, drop: u64) {
        self.delay_ms.store(delay_ms, Ordering::SeqCst);
        self.stall_permille.store(stall, Ordering::SeqCst);
        self.drop_permille.store(drop, Ordering::SeqCst);
    }

    fn faults(&self) -> u64 {
        self.stalls.load(Ordering::SeqCst) + self.drops.load(Ordering::SeqCst)
    }

    /// What to do after one read: `None` = drop the connection, else the delay.
    fn decide(&self) -> Option<Duration> {
        let mut guard = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        let rng = guard.as_mut().expect("proxy rng");
        let roll = rng.u64(0..1000);
        if roll < self.drop_permille.load(Ordering::SeqCst) {
            self.drops.fetch_add(1, Ordering::SeqCst);
            return None;
        }
        if roll
            < self.drop_permille.load(Ordering::SeqCst) + self.stall_permille.load(Ordering::SeqCst)
        {
            self.stalls.fetch_add(1, Ordering::SeqCst);
            return Some(Duration::from_millis(rng.u64(500..3000)));
        }
        let max = self.delay_ms.load(Ordering::SeqCst);
        if max == 0 {
            return Some(Duration::ZERO);
        }
        self.delayed.fetch_add(1, Ordering::SeqCst);
        Some(Duration::from_millis(rng.u64(0..=max)))
    }
}

/// A TCP proxy on 127.0.0.1 to `upstream_port`, delaying, stalling and dropping connections
/// as `state` says. Its threads end with the test process.
fn start_proxy(upstream_port: u16, state: Arc<ProxyState>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("proxy listen");
    let port = listener.local_addr().expect("proxy addr").port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
                continue;
            };
            for (from, to) in [
                (client.try_clone(), server.try_clone()),
                (server.try_clone(), client.try_clone()),
            ] {
                let (Ok(from), Ok(to)) = (from, to) else {
                    continue;
                };
                let state = state.clone();
                std::thread::spawn(move || pump(from, to, &state));
            }
        }
    });
    port
}

fn pump(mut from: TcpStream, mut to: TcpStream, state: &ProxyState) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        match state.decide() {
            None => break,
            Some(delay) => std::thread::sleep(delay),
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_host_s3_slow_proxy() {
    let _serial = serial();
    let mut rng = rng("s3-slow-proxy");
    let dir = tempfile::tempdir().expect("temp dir");
    let server = S3Server::start(&dir.path().join("s3"));
    let state = Arc::new(ProxyState::default());
    *state.rng.lock().expect("rng") = Some(fastrand::Rng::with_seed(rng.u64(..)));
    let proxy = format!(
        "http://127.0.0.1:{}",
        start_proxy(server.port, state.clone())
    );
    let mut d = s3_daemon(&proxy);
    let opts = lib_opts(Some(&server.endpoint()));
    let mut l = Ledger::new(
        "slow S3: delays, stalls and dropped connections through a proxy",
        format!("s3://{BUCKET}@us-east-1/store"),
    );
    d.ok(&["create", "vol"]);
    let (mut failed, mut restores_failed) = (0u64, 0u64);
    let target = by_scale(3, 20);
    let min_trials = by_scale(1, 10);
    while (state.faults() < target || l.fig.trials < min_trials) && l.fig.trials < target * 4 {
        l.fig.trials += 1;
        let t = l.fig.trials;
        scribble(&d, "vol", &mut rng, 8, (256 << 10, 1 << 20));
        let snap = format!("s{t}");
        let tree = snapshot(&d, "vol", &snap);
        state.set(rng.u64(0..30), rng.u64(0..15), rng.u64(0..15));
        let (res, took) =
            spawn_op(&d, &["backup", "create", &snap, "--dest", &l.dest]).finish("backup");
        l.took(took);
        let url = match res {
            Ok(url) => {
                l.complete.insert(url.clone(), tree);
                Some(url)
            }
            Err(msg) => {
                failed += 1;
                l.clean_failure(&msg, &[]);
                state.set(0, 0, 0);
                l.check_listing(&d);
                clean_backup(&d, &mut l, &snap, tree)
            }
        };
        l.check_listing(&d);
        let Some(url) = url else { continue };
        state.set(rng.u64(0..30), rng.u64(0..15), rng.u64(0..15));
        let name = format!("r{t}");
        let (res, took) = spawn_op(&d, &["create", &name, "--backup", &url]).finish("restore");
        l.took(took);
        l.restores += 1;
        state.set(0, 0, 0);
        match res {
            Ok(_) => {
                let got = read_tree(&PathBuf::from(d.ok(&["mount", &name])));
                let want = l.complete[&url].clone();
                if got != want {
                    l.fig.lost += 1;
                }
                l.check(got == want, || {
                    format!("restore {name} through the proxy differs")
                });
                d.ok(&["umount", &name]);
                d.ok(&["delete", &name]);
            }
            Err(msg) => {
                restores_failed += 1;
                l.clean_failure(&msg, &[]);
                check_no_volume(&d, &mut l, &name);
                l.check_restore(&d, &url, &name);
            }
        }
        l.verify_one(&url, &opts);
    }
    state.set(0, 0, 0);
    l.fig.faults = state.faults();
    l.fig
        .set("stalls", state.stalls.load(Ordering::SeqCst))
        .set("dropped_connections", state.drops.load(Ordering::SeqCst))
        .set("delayed_reads", state.delayed.load(Ordering::SeqCst))
        .set("backups_failed_cleanly", failed)
        .set("restores_failed_cleanly", restores_failed);
    let repaired = l.finish_store(&mut d, &opts, true);
    l.emit_and_assert(repaired);
}
