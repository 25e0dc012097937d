//! Benchmark: our delta against Debian's `thin_delta` (0.9.0) on the same metadata files, in
//! the same run. Run with `cargo run --release -p convoy-thinmeta --example bench_delta`.
//!
//! Fixtures (written by the builder, checked by `thin_check`):
//! * `unshared`: two devices of 5M mappings in separate trees split at different keys, 1% of the
//!   blocks remapped;
//! * `shared`: a 5M-mapping origin and its snapshot, then 50 clusters of 16 blocks rewritten in
//!   the snapshot (the trees share everything else, as the kernel leaves them).
//!
//! Both tools run as child processes under `/usr/bin/time` (wall time and peak RSS): ours is
//! `convoy-pdata_tools thin_delta` (output must equal thin_delta's byte for byte), and with
//! `--changes-only` (output must equal thin_delta's minus its `same` lines). For the shared
//! fixture it also prints metadata nodes read against the nodes that differ between the trees.
//! Targets (full output, wall time, best of the runs): unshared >= 3x, shared >= 20x; peak RSS
//! of ours < 16 MiB; nodes read by the changes-only walk <= 1.1x the nodes that differ.
//!
//! Options: `--dir DIR` (fixtures, default /tmp/convoy-bench-thinmeta), `--mappings N`
//! (default 5000000), `--runs N` (best of, default 3), `--no-check` (skip thin_check).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use convoy_thinmeta::builder::{BuilderConfig, MetadataBuilder};
use convoy_thinmeta::{DeltaMode, ThinMetadata};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

struct Opts {
    dir: PathBuf,
    mappings: u64,
    runs: u32,
    check: bool,
}

fn parse_opts() -> Res<Opts> {
    let mut o = Opts {
        dir: PathBuf::from("/tmp/convoy-bench-thinmeta"),
        mappings: 5_000_000,
        runs: 3,
        check: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => o.dir = args.next().ok_or("--dir needs a value")?.into(),
            "--mappings" => o.mappings = args.next().ok_or("--mappings needs a value")?.parse()?,
            "--runs" => o.runs = args.next().ok_or("--runs needs a value")?.parse()?,
            "--no-check" => o.check = false,
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    Ok(o)
}

/// Fragmented but unique data placement: groups of 4 contiguous blocks scattered by an odd
/// multiplier modulo 2^21 groups.
fn data_of(v: u64) -> u64 {
    (((v / 4).wrapping_mul(0x9e37_79b1) & ((1 << 21) - 1)) * 4) + v % 4
}

fn hash(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const NEW_DATA: u64 = 1 << 23;

fn config(mappings: u64) -> BuilderConfig {
    BuilderConfig {
        nr_metadata_blocks: (mappings / 40).max(4096) + 16384,
        nr_data_blocks: NEW_DATA + (1 << 21),
        data_block_size: 128,
        transaction_id: 1,
    }
}

fn build_unshared(path: &Path, n: u64) -> Res<()> {
    let mut b = MetadataBuilder::new(config(n));
    b.create_thin_with(1, (0..n).map(|v| (v, data_of(v), 0)), 252)?;
    let mut next = NEW_DATA;
    let right = (0..n).map(|v| {
        if hash(v).is_multiple_of(100) {
            next += 1;
            (v, next, 1)
        } else {
            (v, data_of(v), 0)
        }
    });
    b.create_thin_with(2, right, 181)?;
    b.write_file(path)?;
    Ok(())
}

fn build_shared(path: &Path, n: u64) -> Res<()> {
    let mut b = MetadataBuilder::new(config(n));
    b.create_thin_with(1, (0..n).map(|v| (v, data_of(v), 0)), 200)?;
    b.create_snapshot(1, 2)?;
    let mut next = NEW_DATA;
    for c in 0..50 {
        let start = hash(c + 1000) % (n - 16);
        for v in start..start + 16 {
            b.insert(2, v, next, b.time())?;
            next += 1;
        }
    }
    b.write_file(path)?;
    Ok(())
}

struct Measured {
    secs: f64,
    /// User + system CPU seconds of the run with the best wall time.
    cpu_secs: f64,
    rss_kib: u64,
    output: Vec<u8>,
}

/// Runs `cmd` under /usr/bin/time; best wall time of `runs`, largest peak RSS.
fn measure(cmd: &[&str], runs: u32) -> Res<Measured> {
    let mut best = f64::MAX;
    let mut best_cpu = 0.0;
    let mut rss = 0;
    let mut output = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let out = Command::new("/usr/bin/time")
            .arg("-f")
            .arg("MAXRSS_KIB=%M CPU_S=%U %S")
            .args(cmd)
            .output()?;
        let secs = start.elapsed().as_secs_f64();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(format!("{cmd:?} failed: {stderr}").into());
        }
        let line = stderr
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("MAXRSS_KIB="))
            .ok_or("no RSS from /usr/bin/time")?;
        let (kib, cpu) = line
            .split_once(" CPU_S=")
            .ok_or("no CPU from /usr/bin/time")?;
        let kib: u64 = kib.trim().parse()?;
        let cpu: f64 = cpu
            .split_whitespace()
            .map(str::parse::<f64>)
            .sum::<Result<f64, _>>()?;
        if secs < best {
            best = secs;
            best_cpu = cpu;
        }
        rss = rss.max(kib);
        output = out.stdout;
    }
    Ok(Measured {
        secs: best,
        cpu_secs: best_cpu,
        rss_kib: rss,
        output,
    })
}

fn pdata_tools() -> Res<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/release/examples/bench_delta -> target/release/convoy-pdata_tools
    let bin = exe
        .parent()
        .and_then(|p| p.parent())
        .ok_or("cannot locate the target directory")?
        .join("convoy-pdata_tools");
    // Always (re)build: a stale binary would measure old code. A no-op when up to date.
    {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--release",
                "-p",
                "convoy-partition",
                "--bin",
                "convoy-pdata_tools",
            ])
            .status()?;
        if !status.success() {
            return Err("building convoy-pdata_tools failed".into());
        }
    }
    Ok(bin)
}

fn without_same(xml: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(xml);
    let kept: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("<same "))
        .map(|l| format!("{l}\n"))
        .collect();
    kept.into_bytes()
}

fn main() -> Res<()> {
    let o = parse_opts()?;
    std::fs::create_dir_all(&o.dir)?;
    let tools = pdata_tools()?;
    let tools = tools.to_str().ok_or("non-UTF-8 path")?;
    println!(
        "# thin delta benchmark: {} mappings per device, best of {} runs",
        o.mappings, o.runs
    );
    let mut failures = Vec::new();
    for (name, build) in [
        ("unshared", build_unshared as fn(&Path, u64) -> Res<()>),
        ("shared", build_shared),
    ] {
        let path = o.dir.join(format!("{name}-{}.meta", o.mappings));
        let t = Instant::now();
        build(&path, o.mappings)?;
        println!(
            "\n## {name}: built {} in {:.1}s",
            path.display(),
            t.elapsed().as_secs_f64()
        );
        if o.check {
            let out = Command::new("thin_check").arg(&path).output()?;
            if !out.status.success() {
                return Err(format!(
                    "thin_check rejects {}: {}",
                    path.display(),
                    String::from_utf8_lossy(&out.stderr)
                )
                .into());
            }
            println!("thin_check: ok");
        }
        let p = path.to_str().ok_or("non-UTF-8 path")?;
        let args = ["--snap1", "1", "--snap2", "2", p];
        let theirs = measure(&[&["thin_delta"][..], &args].concat(), o.runs.min(2))?;
        let ours = measure(&[&[tools, "thin_delta"][..], &args].concat(), o.runs)?;
        let ours_changes = measure(
            &[&[tools, "thin_delta", "--changes-only"][..], &args].concat(),
            o.runs,
        )?;
        let verbose_args = [&["--verbose"][..], &args].concat();
        let theirs_verbose = measure(&[&["thin_delta"][..], &verbose_args].concat(), 1)?;
        let ours_verbose = measure(&[&[tools, "thin_delta"][..], &verbose_args].concat(), 1)?;
        let same_verbose = ours_verbose.output == theirs_verbose.output;
        println!(
            "--verbose ({} lines): thin_delta {:.3}s (CPU {:.2}s) {:.1} MiB, ours {:.3}s (CPU {:.2}s) {:.1} MiB, {:.1}x, output equal: {same_verbose}",
            theirs_verbose.output.iter().filter(|&&c| c == b'\n').count(),
            theirs_verbose.secs,
            theirs_verbose.cpu_secs,
            theirs_verbose.rss_kib as f64 / 1024.0,
            ours_verbose.secs,
            ours_verbose.cpu_secs,
            ours_verbose.rss_kib as f64 / 1024.0,
            theirs_verbose.secs / ours_verbose.secs
        );
        if !same_verbose {
            failures.push(format!("{name}: --verbose output differs from thin_delta"));
        }
        let same_output = ours.output == theirs.output;
        let same_changes = ours_changes.output == without_same(&theirs.output);
        println!("| tool | wall s | CPU s (user+sys) | peak RSS MiB | speed-up (wall) |");
        println!("|---|---|---|---|---|");
        for (label, m) in [
            ("Debian thin_delta 0.9.0", &theirs),
            ("convoy-pdata_tools thin_delta", &ours),
            (
                "convoy-pdata_tools thin_delta --changes-only",
                &ours_changes,
            ),
        ] {
            println!(
                "| {label} | {:.3} | {:.2} | {:.1} | {:.1}x |",
                m.secs,
                m.cpu_secs,
                m.rss_kib as f64 / 1024.0,
                theirs.secs / m.secs
            );
        }
        println!("output equal to thin_delta: {same_output}; --changes-only equal to thin_delta minus `same`: {same_changes}");
        if !same_output || !same_changes {
            failures.push(format!("{name}: output differs from thin_delta"));
        }
        for (label, m) in [("ours", &ours), ("ours --changes-only", &ours_changes)] {
            if m.rss_kib > 16 * 1024 {
                failures.push(format!(
                    "{name}: {label} peak RSS {} KiB > 16 MiB",
                    m.rss_kib
                ));
            }
        }
        // In-process: nodes read by the changes-only walk against the nodes that differ.
        let mut md = ThinMetadata::open(std::fs::File::open(&path)?)?;
        let left: HashSet<u64> = md.mapping_tree_blocks(1)?.into_iter().collect();
        let right: HashSet<u64> = md.mapping_tree_blocks(2)?.into_iter().collect();
        let differing = left.symmetric_difference(&right).count() as u64;
        let mut md = ThinMetadata::open(std::fs::File::open(&path)?)?;
        let before = md.blocks_read();
        let t = Instant::now();
        let mut delta = md.delta(1, 2, DeltaMode::ChangesOnly)?;
        let mut changed_blocks = 0u64;
        for run in delta.by_ref() {
            changed_blocks += run?.length;
        }
        let read = delta.blocks_read() - before;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "in-process changes-only delta: {changed_blocks} changed blocks in {:.4}s; metadata nodes read {read} (incl. device lookups) vs {differing} nodes that differ between the trees (changed leaves + their paths, both sides): {:.3}x; nodes in the two trees: {} + {}",
            secs,
            read as f64 / differing.max(1) as f64,
            left.len(),
            right.len()
        );
        // Both targets are met by the full output (what thin_delta prints), not only by
        // --changes-only.
        let target = if name == "unshared" { 3.0 } else { 20.0 };
        let speedup = theirs.secs / ours.secs;
        println!("speed-up target {target}x (full output): {speedup:.1}x");
        if speedup < target {
            failures.push(format!("{name}: speed-up {speedup:.1}x below {target}x"));
        }
        if name == "shared" && read as f64 > 1.1 * differing as f64 {
            failures.push(format!("{name}: read {read} nodes > 1.1 x {differing}"));
        }
    }
    if failures.is_empty() {
        println!("\nall targets met");
        Ok(())
    } else {
        for f in &failures {
            println!("MISSED: {f}");
        }
        Err("targets missed".into())
    }
}
