//! Benchmark: convoy-backupstore against restic on the same image, to local repositories.
//!
//! `cargo run --release -p convoy-backupstore --example bench_restic`
//!
//! Environment: `CONVOY_BENCH_SIZE_MIB` (image size, default 4096), `CONVOY_BENCH_DIR` (work
//! directory, default a temp dir under $TMPDIR). Needs `restic` and `/usr/bin/time` (GNU).
//!
//! The image mixes, per 1 MiB region, ~30% zeros, ~35% text-like data and ~35% random data.
//! Phases, each timed (wall clock including a `sync` after the command, so that both tools'
//! data is on disk; restore is also shown until the tool exits, as restic does not fsync
//! restored files) with peak RSS from `/usr/bin/time`:
//! 1. first full backup (convoy is given the whole image; zero chunks are skipped);
//! 2. second backup after 1% of the 2 MiB pool blocks changed: convoy is given the changed
//!    ranges and its first backup as parent; restic re-reads the image, as it must;
//! 3. restore of the second backup to a new file (convoy) / directory (restic).
//!
//! Each convoy phase runs as a child process of this program (`--phase ...`) so that its peak
//! RSS is measured the same way as restic's. Every convoy phase is run twice: on a plain store,
//! then on an encrypted one (`init --encrypt`, passphrase in `CONVOY_BACKUP_PASSPHRASE`; each
//! phase opens the store, paying one Argon2id run at the default cost); a second table compares
//! the two (goal: encryption costs at most 15% of throughput) and the encrypted one to restic.
//! Phases 2 and 3 run once more as a running daemon makes them: the store opened by an earlier
//! command in the same process (the derived key is kept), only the operation timed.

// The API takes a list of byte ranges; a single whole-image range is the full backup.
#![allow(clippy::single_range_in_vec_init)]

use std::process::Command;

#[path = "bench_support/mod.rs"]
mod bench_support;

use bench_support::*;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--phase") {
        return phase(&args[2..]);
    }
    let size_mib: u64 = std::env::var("CONVOY_BENCH_SIZE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096);
    let size = size_mib * MIB;
    let (_tmp, work) = work_dir();
    let image = work.join("image.img");
    let restic_repo = work.join("restic-repo");
    let convoy_repo = work.join("convoy-repo");
    let restic_out = work.join("restic-restore");
    let convoy_out = work.join("convoy-restore.img");
    let exe = std::env::current_exe().unwrap();
    let dest = format!("vfs://{}", convoy_repo.display());

    eprintln!("generating a {size_mib} MiB image in {}", work.display());
    make_image(&image, size);
    let restic = |sub: &[&str]| {
        let mut c = Command::new("restic");
        c.arg("-q").arg("--repo").arg(&restic_repo).args(sub);
        c.env("RESTIC_PASSWORD", "bench")
            .env("RESTIC_CACHE_DIR", work.join("restic-cache"));
        c
    };
    assert!(restic(&["init"]).status().unwrap().success());
    let convoy = |sub: &[&str]| {
        let mut c = Command::new(&exe);
        c.arg("--phase").args(sub);
        c.env_remove(convoy_backupstore::PASSPHRASE_ENV);
        c
    };
    // The same phases on an encrypted store (Argon2id at its defaults, once per phase: the
    // cost a real run pays to open the store).
    let enc_repo = work.join("convoy-enc-repo");
    let enc_out = work.join("convoy-enc-restore.img");
    let enc_dest = format!("vfs://{}", enc_repo.display());
    let convoy_enc = |sub: &[&str]| {
        let mut c = Command::new(&exe);
        c.arg("--phase").args(sub);
        c.env(convoy_backupstore::PASSPHRASE_ENV, "bench passphrase");
        c
    };
    assert!(convoy_enc(&["init-encrypted", &enc_dest])
        .status()
        .unwrap()
        .success());
    let img = image.to_str().unwrap();

    eprintln!("phase 1: full backup");
    let r1 = measure(restic(&["backup", img]), "restic backup");
    let c1 = measure(convoy(&["backup", &dest, img, "full"]), "convoy backup");
    let e1 = measure(
        convoy_enc(&["backup", &enc_dest, img, "full"]),
        "convoy encrypted backup",
    );
    let (ra1, _) = tree_bytes(&restic_repo);
    let (ca1, _) = tree_bytes(&convoy_repo);

    eprintln!("phase 2: 1% of {} KiB blocks changed", POOL_BLOCK >> 10);
    let changed = change_one_percent(&image, size);
    let ranges_file = work.join("changed-ranges");
    write_ranges(&ranges_file, &changed);
    let r2 = measure(restic(&["backup", img]), "restic backup 2");
    let c2 = measure(
        convoy(&[
            "backup",
            &dest,
            img,
            "second",
            "full",
            ranges_file.to_str().unwrap(),
        ]),
        "convoy backup 2",
    );
    let e2 = measure(
        convoy_enc(&[
            "backup",
            &enc_dest,
            img,
            "second",
            "full",
            ranges_file.to_str().unwrap(),
        ]),
        "convoy encrypted backup 2",
    );

    eprintln!("phase 3: restore");
    std::fs::create_dir_all(&restic_out).unwrap();
    let r3 = measure(
        restic(&[
            "restore",
            "latest",
            "--target",
            restic_out.to_str().unwrap(),
        ]),
        "restic restore",
    );
    let c3 = measure(
        convoy(&[
            "restore",
            &dest,
            "second",
            convoy_out.to_str().unwrap(),
            &size.to_string(),
        ]),
        "convoy restore",
    );
    let e3 = measure(
        convoy_enc(&[
            "restore",
            &enc_dest,
            "second",
            enc_out.to_str().unwrap(),
            &size.to_string(),
        ]),
        "convoy encrypted restore",
    );
    assert!(
        same_content(&image, &enc_out),
        "convoy encrypted restore differs"
    );
    let (ea, _) = tree_bytes(&enc_repo);
    let restic_file = restic_out.join(image.strip_prefix("/").unwrap());
    assert!(same_content(&image, &restic_file), "restic restore differs");
    assert!(same_content(&image, &convoy_out), "convoy restore differs");
    let (ra, rl) = tree_bytes(&restic_repo);
    let (ca, cl) = tree_bytes(&convoy_repo);

    // Phases 2 and 3 again as a running daemon makes them: the store opened by an earlier
    // command, only the operation timed (an encrypted store's Argon2id was paid then).
    eprintln!("phases 2 and 3 again, store opened before (daemon)");
    let ranges = ranges_file.to_str().unwrap();
    let c2w = measure_warm(
        convoy(&["backup", &dest, img, "second-warm", "full", ranges]),
        "convoy backup 2 (warm)",
    );
    let e2w = measure_warm(
        convoy_enc(&["backup", &enc_dest, img, "second-warm", "full", ranges]),
        "convoy encrypted backup 2 (warm)",
    );
    let size_arg = size.to_string();
    // The outputs of the first restores are removed first, untimed: a restore over them would
    // time the truncation of gigabytes (seconds on a filesystem mounted with `discard`), not
    // the restore. bench_s3 does the same.
    let _ = std::fs::remove_file(&convoy_out);
    let _ = std::fs::remove_file(&enc_out);
    let c3w = measure_warm(
        convoy(&[
            "restore",
            &dest,
            "second",
            convoy_out.to_str().unwrap(),
            &size_arg,
        ]),
        "convoy restore (warm)",
    );
    let e3w = measure_warm(
        convoy_enc(&[
            "restore",
            &enc_dest,
            "second",
            enc_out.to_str().unwrap(),
            &size_arg,
        ]),
        "convoy encrypted restore (warm)",
    );
    assert!(same_content(&image, &convoy_out), "warm restore differs");
    assert!(
        same_content(&image, &enc_out),
        "warm encrypted restore differs"
    );

    let gib = size as f64 / (1u64 << 30) as f64;
    let mbps = |m: &Measured| size as f64 / MIB as f64 / m.secs;
    println!(
        "image: {size_mib} MiB, pool block {} KiB, {} blocks changed",
        POOL_BLOCK >> 10,
        changed.len()
    );
    println!("| phase | restic | convoy | ratio (goal) |");
    println!("|---|---|---|---|");
    println!(
        "| 1. full backup | {:.1} s, {:.0} MiB/s | {:.1} s, {:.0} MiB/s | {:.2}x throughput (>= 1) |",
        r1.secs, mbps(&r1), c1.secs, mbps(&c1), r1.secs / c1.secs
    );
    println!(
        "| 2. backup after 1% change | {:.2} s | {:.2} s | {:.1}x faster (>= 20) |",
        r2.secs,
        c2.secs,
        r2.secs / c2.secs
    );
    let mbps_cmd = |m: &Measured| size as f64 / MIB as f64 / m.cmd_secs;
    println!(
        "| 3. restore (until the tool exits) | {:.1} s, {:.0} MiB/s | {:.1} s, {:.0} MiB/s | {:.2}x throughput (>= 2) |",
        r3.cmd_secs,
        mbps_cmd(&r3),
        c3.cmd_secs,
        mbps_cmd(&c3),
        r3.cmd_secs / c3.cmd_secs
    );
    println!(
        "| 3. restore (+ sync: data on disk) | {:.1} s, {:.0} MiB/s | {:.1} s, {:.0} MiB/s | {:.2}x throughput |",
        r3.secs,
        mbps(&r3),
        c3.secs,
        mbps(&c3),
        r3.secs / c3.secs
    );
    let peak_r = [&r1, &r2, &r3]
        .iter()
        .map(|m| m.peak_rss_kib)
        .max()
        .unwrap();
    let peak_c = [&c1, &c2, &c3]
        .iter()
        .map(|m| m.peak_rss_kib)
        .max()
        .unwrap();
    println!(
        "| peak RSS (max of phases) | {} MiB | {} MiB | {:.2}x of restic (<= 1) |",
        peak_r / 1024,
        peak_c / 1024,
        peak_c as f64 / peak_r as f64
    );
    println!(
        "| stored after phase 1 (file bytes) | {:.0} MiB | {:.0} MiB | {:.3}x of restic (<= 1) |",
        ra1 as f64 / MIB as f64,
        ca1 as f64 / MIB as f64,
        ca1 as f64 / ra1 as f64
    );
    println!(
        "| stored after phase 2 (file bytes) | {:.0} MiB | {:.0} MiB | {:.3}x of restic (<= 1) |",
        ra as f64 / MIB as f64,
        ca as f64 / MIB as f64,
        ca as f64 / ra as f64
    );
    println!(
        "| stored after phase 2 (allocated) | {:.0} MiB | {:.0} MiB | {:.3}x of restic (<= 1) |",
        rl as f64 / MIB as f64,
        cl as f64 / MIB as f64,
        cl as f64 / rl as f64
    );
    println!(
        "per-phase peak RSS MiB: restic {} / {} / {}, convoy {} / {} / {}; image {gib:.2} GiB",
        r1.peak_rss_kib / 1024,
        r2.peak_rss_kib / 1024,
        r3.peak_rss_kib / 1024,
        c1.peak_rss_kib / 1024,
        c2.peak_rss_kib / 1024,
        c3.peak_rss_kib / 1024
    );
    println!();
    println!(
        "| phase | convoy | convoy encrypted | encrypted vs plain (goal) | encrypted vs restic |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| 1. full backup | {:.1} s, {:.0} MiB/s | {:.1} s, {:.0} MiB/s | {:.2}x throughput (>= 0.85) | {:.2}x throughput |",
        c1.secs, mbps(&c1), e1.secs, mbps(&e1), c1.secs / e1.secs, r1.secs / e1.secs
    );
    println!(
        "| 2. backup after 1% change | {:.2} s | {:.2} s | {:.2}x | {:.1}x faster |",
        c2.secs,
        e2.secs,
        c2.secs / e2.secs,
        r2.secs / e2.secs
    );
    println!(
        "| 3. restore (until the tool exits) | {:.1} s, {:.0} MiB/s | {:.1} s, {:.0} MiB/s | {:.2}x throughput (>= 0.85) | {:.2}x throughput |",
        c3.cmd_secs,
        mbps_cmd(&c3),
        e3.cmd_secs,
        mbps_cmd(&e3),
        c3.cmd_secs / e3.cmd_secs,
        r3.cmd_secs / e3.cmd_secs
    );
    println!(
        "| 2. backup after 1% change, store opened before (daemon) | {:.2} s | {:.2} s | {:.2}x (>= 0.85) | |",
        c2w,
        e2w,
        c2w / e2w
    );
    println!(
        "| 3. restore, store opened before (daemon) | {:.1} s, {:.0} MiB/s | {:.1} s, {:.0} MiB/s | {:.2}x throughput (>= 0.85) | |",
        c3w,
        size as f64 / MIB as f64 / c3w,
        e3w,
        size as f64 / MIB as f64 / e3w,
        c3w / e3w
    );
    println!(
        "| stored after phase 2 (file bytes) | {:.0} MiB | {:.0} MiB | {:.3}x | |",
        ca as f64 / MIB as f64,
        ea as f64 / MIB as f64,
        ea as f64 / ca as f64
    );
    println!(
        "| CPU seconds (user + sys) per phase | {:.2} / {:.2} / {:.2} | {:.2} / {:.2} / {:.2} | {:.2}x / {:.2}x / {:.2}x | restic {:.2} / {:.2} / {:.2} |",
        c1.cpu_secs,
        c2.cpu_secs,
        c3.cpu_secs,
        e1.cpu_secs,
        e2.cpu_secs,
        e3.cpu_secs,
        e1.cpu_secs / c1.cpu_secs,
        e2.cpu_secs / c2.cpu_secs,
        e3.cpu_secs / c3.cpu_secs,
        r1.cpu_secs,
        r2.cpu_secs,
        r3.cpu_secs
    );
    println!(
        "encrypted per-phase peak RSS MiB: {} / {} / {}",
        e1.peak_rss_kib / 1024,
        e2.peak_rss_kib / 1024,
        e3.peak_rss_kib / 1024
    );
}
