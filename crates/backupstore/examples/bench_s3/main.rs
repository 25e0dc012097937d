//! Benchmark: convoy-backupstore (plain and encrypted store) against restic on the same image,
//! to the same real S3 server (moto_server on loopback), in one run, through a proxy that
//! counts every request and, in a second pass, adds 20 ms to each (S3 in another region).
//!
//! `cargo run --release -p convoy-backupstore --example bench_s3` (what `cargo xtask bench s3`
//! runs). Needs `moto_server`, `restic` and GNU `/usr/bin/time`.
//!
//! Environment: `CONVOY_BENCH_SIZE_MIB` (image, default 1024), `CONVOY_BENCH_LATENCIES_MS`
//! (default `0,20`), `CONVOY_BENCH_DELETE_AT` (store sizes at which one backup is deleted,
//! default `10,100`), `CONVOY_BENCH_DELETE_MIB` (the delete phase's image, default 64),
//! `CONVOY_BENCH_DIR` (work directory, default a temp dir), `CONVOY_BENCH_PACK_SWEEP_MIB` (pack
//! sizes, e.g. `8,16,32,64`: instead of the comparison, convoy alone at each pack size, at the
//! last latency — what the default pack size was chosen from).
//!
//! `bench_s3 --proxy UPSTREAM-PORT [LATENCY-MS]` runs only the counting proxy (it prints its
//! port), for measuring a phase by hand through the same proxy.
//!
//! For each latency, each tool: a full backup of the image; a backup after 1% of its 2 MiB
//! blocks changed (convoy is given the changed ranges and its first backup as parent, as
//! convoy-core does with a thin-pool delta; restic re-reads the image, as it must); a restore
//! of that second backup, checked byte-identical; then convoy's backup after the same blocks
//! changed again (new data, parent the second backup) and its restore, with the store opened
//! before, as the daemon runs them (`warm.rs`). Per
//! phase: wall time of the tool's process, requests seen by the proxy (by method), peak RSS
//! (GNU time); after phase 2 the objects and
//! bytes the tool's prefix holds (listed from the server directly, not counted). Then, at the
//! last latency, the delete phase: a small image backed up again and again with a small change
//! each time, and when the store holds 10 (then 100) backups one in the middle is deleted
//! (`restic forget ID --prune`, `BackupTarget::delete`): its requests and time.

// The API takes a list of byte ranges; a single whole-image range is the full backup.
#![allow(clippy::single_range_in_vec_init)]

#[path = "../bench_support/mod.rs"]
mod bench_support;
mod delete;
mod proxy;
mod sweep;
mod warm;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bench_support::*;
use futures::TryStreamExt;
use object_store::ObjectStore;

const BUCKET: &str = "bench";
const KEY: &str = "testing";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_list(name: &str, default: &str) -> Vec<u64> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter(|v| !v.trim().is_empty())
        .map(|v| v.trim().parse().expect("a comma-separated list of numbers"))
        .collect()
}

/// moto_server on a free port, killed when dropped.
struct Moto {
    child: std::process::Child,
    port: u16,
}

impl Moto {
    fn start() -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Owned by `Moto` at once, so that its `Drop` kills and waits for it on every path.
        let moto = Moto {
            child: Command::new("moto_server")
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("moto_server (cargo xtask prerequisites installs it)"),
            port,
        };
        for _ in 0..400 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                moto.create_bucket();
                return moto;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("moto_server did not start");
    }

    fn create_bucket(&self) {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "PUT /{BUCKET} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "create bucket: {answer}"
        );
    }

    /// Objects and bytes under `prefix`, listed from the server directly (not counted).
    async fn stored(&self, prefix: &str) -> (u64, u64) {
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(format!("http://127.0.0.1:{}", self.port))
            .with_allow_http(true)
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_access_key_id(KEY)
            .with_secret_access_key(KEY)
            .build()
            .unwrap();
        let prefix = object_store::path::Path::from(prefix);
        let all: Vec<_> = store.list(Some(&prefix)).try_collect().await.unwrap();
        (all.len() as u64, all.iter().map(|o| o.size).sum())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One tool's figures for one phase.
struct Run {
    m: Measured,
    t: proxy::Tally,
    /// CPU seconds the S3 server (moto_server, on this machine) spent meanwhile.
    server_cpu: f64,
}

/// The tools compared.
#[derive(Clone, Copy, PartialEq)]
enum Tool {
    Restic,
    Convoy,
    ConvoyEncrypted,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Restic => "restic",
            Tool::Convoy => "convoy",
            Tool::ConvoyEncrypted => "convoy-enc",
        }
    }
}

struct Bench {
    work: PathBuf,
    exe: PathBuf,
    proxy_port: u16,
    counts: Arc<proxy::Counts>,
    /// moto_server's process.
    server_pid: u32,
}

/// CPU seconds (user + system) process `pid` has used so far (`/proc/<pid>/stat`).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which ends with the last ')'): utime and stime are
    // the 12th and 13th of them, in clock ticks.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: u64 = fields
        .get(11..13)
        .map_or(0, |f| f.iter().map(|v| v.parse::<u64>().unwrap_or(0)).sum());
    // USER_HZ, what /proc counts in: 100 on Linux.
    ticks as f64 / 100.0
}

impl Bench {
    fn restic(&self, prefix: &str, sub: &[&str]) -> Command {
        let mut c = Command::new("restic");
        c.arg("-q")
            .arg("--repo")
            .arg(format!(
                "s3:http://127.0.0.1:{}/{BUCKET}/{prefix}",
                self.proxy_port
            ))
            .args(sub);
        c.env("RESTIC_PASSWORD", "bench")
            .env("AWS_ACCESS_KEY_ID", KEY)
            .env("AWS_SECRET_ACCESS_KEY", KEY)
            .env(
                "RESTIC_CACHE_DIR",
                self.work.join(format!("cache-{prefix}")),
            );
        c
    }

    fn convoy(&self, tool: Tool, prefix: &str, sub: &[&str]) -> Command {
        let mut c = Command::new(&self.exe);
        c.arg("--phase")
            .arg(sub[0])
            .arg(format!("s3://{BUCKET}@us-east-1/{prefix}"))
            .args(&sub[1..]);
        c.env(
            ENDPOINT_ENV,
            format!("http://127.0.0.1:{}", self.proxy_port),
        )
        .env(CACHE_ENV, self.work.join(format!("cache-{prefix}")))
        // Backups get names made for them, as `convoy backup create` gives.
        .env(NAMES_ENV, self.work.join(format!("names-{prefix}")))
        .env("AWS_ACCESS_KEY_ID", KEY)
        .env("AWS_SECRET_ACCESS_KEY", KEY);
        match tool {
            Tool::ConvoyEncrypted => c.env(convoy_backupstore::PASSPHRASE_ENV, "bench passphrase"),
            _ => c.env_remove(convoy_backupstore::PASSPHRASE_ENV),
        };
        c
    }

    /// Runs `cmd` timed, with the proxy's count of its requests.
    fn run(&self, cmd: Command, what: &str) -> Run {
        self.counts.take();
        let server = cpu_seconds(self.server_pid);
        let m = measure(cmd, what);
        Run {
            m,
            t: self.counts.take(),
            server_cpu: cpu_seconds(self.server_pid) - server,
        }
    }

    fn init(&self, tool: Tool, prefix: &str) {
        let mut cmd = match tool {
            Tool::Restic => self.restic(prefix, &["init"]),
            Tool::Convoy => return,
            Tool::ConvoyEncrypted => self.convoy(tool, prefix, &["init-encrypted"]),
        };
        assert!(cmd.status().unwrap().success(), "{} init", tool.name());
    }

    /// A backup of `image`; convoy's has a parent and ranges when given.
    fn backup(
        &self,
        tool: Tool,
        prefix: &str,
        image: &Path,
        name: &str,
        parent: Option<(&str, &Path)>,
    ) -> Run {
        let img = image.to_str().unwrap();
        let cmd = match (tool, parent) {
            (Tool::Restic, _) => self.restic(prefix, &["backup", img]),
            (_, None) => self.convoy(tool, prefix, &["backup", img, name]),
            (_, Some((p, ranges))) => self.convoy(
                tool,
                prefix,
                &["backup", img, name, p, ranges.to_str().unwrap()],
            ),
        };
        self.run(cmd, &format!("{} backup {name}", tool.name()))
    }
}

fn mib_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / MIB as f64 / secs
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--phase") {
        return phase(&args[2..]);
    }
    // `--proxy UPSTREAM-PORT [LATENCY-MS]`: only the counting proxy, for runs by hand; prints
    // its port, then each second's requests while there are any.
    if args.get(1).map(String::as_str) == Some("--proxy") {
        return proxy_only(&args[2..]);
    }
    let size_mib: u64 = env_or("CONVOY_BENCH_SIZE_MIB", 1024);
    let size = size_mib * MIB;
    let latencies = env_list("CONVOY_BENCH_LATENCIES_MS", "0,20");
    let delete_at = env_list("CONVOY_BENCH_DELETE_AT", "10,100");
    let delete_mib: u64 = env_or("CONVOY_BENCH_DELETE_MIB", 64);
    let (_tmp, work) = work_dir();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let moto = Moto::start();
    let counts = Arc::new(proxy::Counts::default());
    let proxy_port = rt.block_on(proxy::start(moto.port, counts.clone()));
    let b = Bench {
        work: work.clone(),
        exe: std::env::current_exe().unwrap(),
        proxy_port,
        counts: counts.clone(),
        server_pid: moto.child.id(),
    };

    eprintln!("generating a {size_mib} MiB image in {}", work.display());
    let first = work.join("image-1.img");
    let second = work.join("image-2.img");
    make_image(&first, size);
    std::fs::copy(&first, &second).unwrap();
    let changed = change_one_percent(&second, size);
    let ranges = work.join("changed-ranges");
    write_ranges(&ranges, &changed);
    // The warm backup's image: the same blocks changed again, with new data (the data of
    // image 2 is stored by then, and a backup of it would upload nothing).
    let third = work.join("image-3.img");
    std::fs::copy(&second, &third).unwrap();
    rewrite(&third, &changed, 1_000_001);
    println!(
        "image {size_mib} MiB, {} of its 2 MiB blocks changed for phase 2; moto_server on \
         loopback behind a counting proxy",
        changed.len()
    );

    let sweep = env_list("CONVOY_BENCH_PACK_SWEEP_MIB", "");
    if !sweep.is_empty() {
        let latency = *latencies.last().unwrap_or(&0);
        return sweep::pack_sizes(&b, &moto, &rt, &first, &second, &ranges, latency, &sweep);
    }
    let tools = [Tool::Restic, Tool::Convoy, Tool::ConvoyEncrypted];
    for &latency in &latencies {
        counts.set_latency(Duration::from_millis(latency));
        let mut rows: Vec<(Tool, [Run; 3], (u64, u64))> = Vec::new();
        let mut warm = Vec::new();
        for tool in tools {
            let prefix = format!("{}-{latency}ms", tool.name());
            eprintln!("latency {latency} ms: {prefix}");
            b.init(tool, &prefix);
            let full = b.backup(tool, &prefix, &first, "full", None);
            let inc = b.backup(tool, &prefix, &second, "second", Some(("full", &ranges)));
            let stored = rt.block_on(moto.stored(&prefix));
            let out = work.join(format!("restore-{prefix}"));
            let restore = match tool {
                Tool::Restic => {
                    std::fs::create_dir_all(&out).unwrap();
                    let r = b.run(
                        b.restic(
                            &prefix,
                            &["restore", "latest", "--target", out.to_str().unwrap()],
                        ),
                        "restic restore",
                    );
                    let file = out.join(second.strip_prefix("/").unwrap());
                    assert!(same_content(&second, &file), "restic restore differs");
                    r
                }
                _ => {
                    let r = b.run(
                        b.convoy(
                            tool,
                            &prefix,
                            &[
                                "restore",
                                "second",
                                out.to_str().unwrap(),
                                &size.to_string(),
                            ],
                        ),
                        "convoy restore",
                    );
                    assert!(same_content(&second, &out), "{prefix} restore differs");
                    r
                }
            };
            let _ = std::fs::remove_dir_all(&out);
            let _ = std::fs::remove_file(&out);
            if tool != Tool::Restic {
                warm.push(warm::measure(&b, tool, &prefix, &third, &ranges, &out));
            }
            rows.push((tool, [full, inc, restore], stored));
        }
        print_table(latency, size, &rows);
        warm::print(size, &rows[0].1, &warm[0], &warm[1]);
    }

    if !delete_at.is_empty() {
        delete::delete_phase(&b, &moto, &rt, &work, delete_mib, &delete_at, &latencies);
    }
}

fn proxy_only(args: &[String]) {
    let upstream: u16 = args[0].parse().expect("an upstream port");
    let latency: u64 = args.get(1).map_or(0, |v| v.parse().expect("milliseconds"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let counts = Arc::new(proxy::Counts::default());
    counts.set_latency(Duration::from_millis(latency));
    let port = rt.block_on(proxy::start(upstream, counts.clone()));
    println!("{port}");
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let t = counts.take();
        if t.total > 0 {
            eprintln!("{} requests: {}", t.total, t.methods());
        }
    }
}

fn print_table(latency: u64, size: u64, rows: &[(Tool, [Run; 3], (u64, u64))]) {
    let r = &rows[0].1;
    println!("\n### {latency} ms added per request\n");
    println!("| phase | restic 0.14 | convoy | convoy encrypted | convoy / restic (goal) | encrypted / restic |");
    println!("|---|---|---|---|---|---|");
    let cell = |run: &Run, i: usize| match i {
        1 => format!("{:.2} s", run.m.cmd_secs),
        _ => format!(
            "{:.1} s, {:.0} MiB/s",
            run.m.cmd_secs,
            mib_s(size, run.m.cmd_secs)
        ),
    };
    let names = ["1. full backup", "2. backup after 1% change", "3. restore"];
    let time_goal = [
        if latency >= 20 { ">= 1.5x" } else { ">= 1x" },
        ">= 20x faster",
        ">= 2x",
    ];
    for i in 0..3 {
        let (c, e) = (&rows[1].1[i], &rows[2].1[i]);
        println!(
            "| {} | {} | {} | {} | {:.2}x ({}) | {:.2}x |",
            names[i],
            cell(&r[i], i),
            cell(c, i),
            cell(e, i),
            r[i].m.cmd_secs / c.m.cmd_secs,
            time_goal[i],
            r[i].m.cmd_secs / e.m.cmd_secs
        );
    }
    let req_goal = ["<= 1.5x", "<= 1x", "-"];
    for i in 0..3 {
        let (c, e) = (&rows[1].1[i], &rows[2].1[i]);
        println!(
            "| {} requests | {} | {} | {} | {:.2}x ({}) | {:.2}x |",
            names[i],
            r[i].t.total,
            c.t.total,
            e.t.total,
            c.t.total as f64 / r[i].t.total as f64,
            req_goal[i],
            e.t.total as f64 / r[i].t.total as f64
        );
    }
    for i in 0..3 {
        let (c, e) = (&rows[1].1[i], &rows[2].1[i]);
        println!(
            "| {} CPU s (user + sys) | {:.2} | {:.2} | {:.2} | {:.2}x | {:.2}x (encrypted / plain: {:.2}x) |",
            names[i],
            r[i].m.cpu_secs,
            c.m.cpu_secs,
            e.m.cpu_secs,
            c.m.cpu_secs / r[i].m.cpu_secs,
            e.m.cpu_secs / r[i].m.cpu_secs,
            e.m.cpu_secs / c.m.cpu_secs
        );
    }
    // The server shares the 2 cores: what it spends serving a tool is not the tool's.
    for i in 0..3 {
        let (c, e) = (&rows[1].1[i], &rows[2].1[i]);
        println!(
            "| {} server (moto_server) CPU s | {:.2} | {:.2} | {:.2} | {:.2}x | {:.2}x |",
            names[i],
            r[i].server_cpu,
            c.server_cpu,
            e.server_cpu,
            c.server_cpu / r[i].server_cpu,
            e.server_cpu / r[i].server_cpu
        );
    }
    let rss = |runs: &[Run; 3]| runs.iter().map(|x| x.m.peak_rss_kib).max().unwrap();
    println!(
        "| peak RSS (max of phases) | {} MiB | {} MiB | {} MiB | {:.2}x (<= 1x) | {:.2}x |",
        rss(r) / 1024,
        rss(&rows[1].1) / 1024,
        rss(&rows[2].1) / 1024,
        rss(&rows[1].1) as f64 / rss(r) as f64,
        rss(&rows[2].1) as f64 / rss(r) as f64
    );
    let (ro, rb) = rows[0].2;
    let (co, cb) = rows[1].2;
    let (eo, eb) = rows[2].2;
    println!(
        "| objects stored after phase 2 | {ro} | {co} | {eo} | {:.2}x (<= 2x) | {:.2}x |",
        co as f64 / ro as f64,
        eo as f64 / ro as f64
    );
    println!(
        "| bytes stored after phase 2 | {:.0} MiB | {:.0} MiB | {:.0} MiB | {:.3}x | {:.3}x |",
        rb as f64 / MIB as f64,
        cb as f64 / MIB as f64,
        eb as f64 / MIB as f64,
        cb as f64 / rb as f64,
        eb as f64 / rb as f64
    );
    println!("\nrequests by method:");
    for (tool, runs, _) in rows {
        for (i, run) in runs.iter().enumerate() {
            println!(
                "* {} {}: {} ({:.0} MiB sent)",
                tool.name(),
                names[i],
                run.t.methods(),
                run.t.sent_bytes as f64 / MIB as f64
            );
        }
    }
    println!(
        "peak RSS per phase MiB: {}",
        rows.iter()
            .map(|(t, runs, _)| format!(
                "{} {}",
                t.name(),
                runs.iter()
                    .map(|x| (x.m.peak_rss_kib / 1024).to_string())
                    .collect::<Vec<_>>()
                    .join(" / ")
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
}
