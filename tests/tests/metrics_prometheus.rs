//! `--metrics-listen` against a real Prometheus (Debian's `prometheus` package, in
//! `xtask/prerequisites.list`): the daemon (vfs driver) serves `/metrics`, a Prometheus of this
//! test's own scrapes it every second, and its query API must show the volumes, snapshots,
//! backup and restore counters and request latencies of what the test did through the daemon.

mod cli_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cli_support::TestDaemon;
use convoy_e2e::DmDisks;
use serde_json::Value;

/// How long Prometheus may take to start and to show what is expected. Not a timing
/// assertion: it only turns a hang into a failure.
const DEADLINE: Duration = Duration::from_secs(90);

/// The `prometheus` binary; a failure (not a skip) when it is missing.
fn prometheus_bin() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("prometheus"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "the prometheus binary is not installed (Debian package prometheus): run \
             `cargo xtask prerequisites` (as root it installs it)"
        )
    })
}

/// What a query's value must satisfy.
type Check = fn(f64) -> bool;

/// A free local TCP port (bound, then released).
fn free_address() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free local port")
}

/// `GET path` over HTTP/1.0 (no chunking); `None` when nothing answers yet.
fn http_get(address: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus server of this test, killed when dropped.
struct Prometheus {
    child: Child,
    address: SocketAddr,
    log: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every second, its data and log under `dir`.
    fn start(dir: &Path, target: SocketAddr) -> Prometheus {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: convoy\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let address = free_address();
        let log = dir.join("prometheus.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(prometheus_bin())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdout(Stdio::from(log_file.try_clone().unwrap()))
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("cannot start prometheus");
        Prometheus {
            child,
            address,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The single value `query` gives now, if it gives one.
    fn value(&self, query: &str) -> Option<f64> {
        let (status, body) = http_get(
            self.address,
            &format!("/api/v1/query?query={}", url_encode(query)),
        )?;
        if status != 200 {
            return None;
        }
        let answer: Value = serde_json::from_str(&body).ok()?;
        let result = answer["data"]["result"].as_array()?;
        if result.len() != 1 {
            return None;
        }
        result[0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn metrics_prometheus_scrapes_volumes_backups_and_requests() {
    // Checked first: without Prometheus this must fail, not pass having checked nothing.
    prometheus_bin();
    let metrics = free_address();
    let listen = metrics.to_string();
    let d = TestDaemon::start(&["--metrics-listen", &listen]);

    // Work through the daemon: volumes, a snapshot, a backup and its restore.
    d.ok(&["create", "m1"]);
    d.ok(&["create", "m2"]);
    let mount_point = d.ok(&["mount", "m1"]);
    std::fs::write(Path::new(&mount_point).join("data"), vec![7u8; 300_000]).unwrap();
    d.ok(&["snapshot", "create", "m1", "--name", "m1-snap"]);
    let store = d.dir.path().join("backups");
    let dest = format!("vfs://{}", store.display());
    let url = d.ok(&["backup", "create", "m1-snap", "--dest", &dest]);
    assert!(url.contains("backup="), "{url}");
    d.ok(&["create", "m3", "--backup", &url]);
    // A policy: a snapshot of m2 every second, the newest kept.
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    d.ok(&[
        "policy",
        "set",
        "m2",
        "--snapshot-every",
        "1s",
        "--keep-snapshots",
        "last=1",
    ]);

    let (status, text) = http_get(metrics, "/metrics").expect("the metrics endpoint answers");
    assert_eq!(status, 200, "{text}");
    assert!(
        !text.contains("backup="),
        "a backup URL query leaked into a label:\n{text}"
    );

    let prom_dir = tempfile::tempdir().unwrap();
    let mut prometheus = Prometheus::start(prom_dir.path(), metrics);
    let destination = format!("destination=\"{dest}\"");
    let expected: Vec<(String, Check)> = vec![
        ("up{job=\"convoy\"}".into(), |v| v == 1.0),
        ("convoy_volumes{driver=\"vfs\"}".into(), |v| v == 3.0),
        // m1-snap and the policy's newest of m2 (a second one while a run is in flight).
        ("convoy_snapshots{driver=\"vfs\"}".into(), |v| v == 2.0 || v == 3.0),
        (
            "convoy_policy_runs_total{volume=\"m2\",policy=\"default\",action=\"snapshot\",result=\"success\"}".into(),
            |v| v >= 1.0,
        ),
        (
            format!("convoy_backups_started_total{{{destination}}}"),
            |v| v == 1.0,
        ),
        (
            format!("convoy_backups_succeeded_total{{{destination}}}"),
            |v| v == 1.0,
        ),
        (
            format!("convoy_backup_bytes_total{{{destination}}}"),
            |v| v > 0.0,
        ),
        (
            format!("sum(convoy_backup_duration_seconds_count{{{destination}}})"),
            |v| v == 1.0,
        ),
        (
            format!("convoy_restores_succeeded_total{{{destination}}}"),
            |v| v == 1.0,
        ),
        (
            format!("convoy_restore_bytes_total{{{destination}}}"),
            |v| v > 0.0,
        ),
        (
            "sum(convoy_http_request_duration_seconds_count{route=\"/v1/volumes/create\",status=\"200\"})"
                .into(),
            |v| v >= 3.0,
        ),
        (
            "sum(convoy_http_request_duration_seconds_count{route=\"/v1/backups/create\"})".into(),
            |v| v >= 1.0,
        ),
    ];
    let last_success = "convoy_policy_last_success_timestamp_seconds{volume=\"m2\",policy=\"default\",action=\"snapshot\"}";
    let deadline = Instant::now() + DEADLINE;
    loop {
        let now: Vec<(String, Option<f64>)> = expected
            .iter()
            .map(|(q, _)| (q.clone(), prometheus.value(q)))
            .collect();
        let pending: Vec<&(String, Option<f64>)> = now
            .iter()
            .zip(&expected)
            .filter(|((_, v), (_, ok))| !v.is_some_and(ok))
            .map(|(n, _)| n)
            .collect();
        let policy_fresh = prometheus.value(last_success).is_some_and(|t| t >= started);
        if pending.is_empty() && policy_fresh {
            break;
        }
        if let Ok(Some(status)) = prometheus.child.try_wait() {
            panic!("prometheus exited ({status}):\n{}", prometheus.log());
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not show the expected values within {DEADLINE:?}; still pending \
             (query, value now): {pending:?}; {last_success} >= {started}: {policy_fresh}\ntargets: {:?}\nprometheus log:\n{}\ndaemon log:\n{}",
            http_get(prometheus.address, "/api/v1/targets"),
            prometheus.log(),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // No backup or restore failed: those series do not exist (the queries answer nothing).
    assert_eq!(prometheus.value("count(convoy_backups_failed_total)"), None);
    assert_eq!(
        prometheus.value("count(convoy_restores_failed_total)"),
        None
    );
    drop(prometheus);
}

/// The value of the sample line `series` (name and labels, exactly as encoded).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split(' ').next()?.parse().ok())
}

/// VM tier: the devicemapper numbers come from a real pool — its block counts, a volume's size
/// and the bytes it really has allocated after a write.
#[test]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
fn dm_metrics_show_the_pool_and_a_volumes_allocated_bytes() {
    let disks = DmDisks::new("cvm", 512 << 20, 16 << 20);
    let tag = disks.tag.clone();
    let pool = disks.pool.clone();
    let metrics = free_address();
    let listen = metrics.to_string();
    let d = TestDaemon::start_with(&["--metrics-listen", &listen], |_| disks.daemon_flags(&[]));
    let volume = format!("{tag}-vol");
    d.ok(&["create", &volume, "--size", "64M"]);
    let mount = d.ok(&["mount", &volume]);
    std::fs::write(Path::new(&mount).join("data"), vec![0x5au8; 8 << 20]).unwrap();
    convoy_e2e::run("sync", &["-f", &mount]);

    let (status, text) = http_get(metrics, "/metrics").expect("the metrics endpoint answers");
    assert_eq!(status, 200, "{text}");
    let p = format!("{{pool=\"{pool}\"}}");
    let total = sample(&text, &format!("convoy_pool_data_size_blocks{p}")).unwrap_or(0.0);
    let used = sample(&text, &format!("convoy_pool_data_used_blocks{p}")).unwrap_or(0.0);
    let block = sample(&text, &format!("convoy_pool_block_size_bytes{p}")).unwrap_or(0.0);
    assert!(total > 0.0 && block > 0.0, "{text}");
    assert_eq!(total * block, (512u64 << 20) as f64, "{text}");
    assert!(used * block >= (8u64 << 20) as f64, "{text}");
    assert!(
        sample(&text, &format!("convoy_pool_metadata_size_blocks{p}")).unwrap_or(0.0) > 0.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, &format!("convoy_pool_fill_level{p}")),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "convoy_volumes{driver=\"devicemapper\"}"),
        Some(1.0),
        "{text}"
    );
    let v = format!("{{volume=\"{volume}\",driver=\"devicemapper\"}}");
    assert_eq!(
        sample(&text, &format!("convoy_volume_size_bytes{v}")),
        Some((64u64 << 20) as f64),
        "{text}"
    );
    let allocated = sample(&text, &format!("convoy_volume_allocated_bytes{v}")).unwrap_or(0.0);
    assert!(
        allocated >= (8u64 << 20) as f64 && allocated <= (64u64 << 20) as f64,
        "allocated {allocated}: {text}"
    );
    d.ok(&["umount", &volume]);
    d.ok(&["delete", &volume]);
}
