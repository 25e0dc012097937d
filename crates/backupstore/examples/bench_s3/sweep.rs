//! `CONVOY_BENCH_PACK_SWEEP_MIB`: convoy alone at several pack sizes, on the same images and
//! server as the comparison — the measurement the default pack size is chosen from.

use std::path::Path;
use std::time::Duration;

use crate::bench_support::{same_content, PACK_ENV};
use crate::{mib_s, Bench, Moto, Run, Tool};

/// Full backup, backup after the change, restore, at each pack size in `sizes_mib`.
#[allow(clippy::too_many_arguments)]
pub fn pack_sizes(
    b: &Bench,
    moto: &Moto,
    rt: &tokio::runtime::Runtime,
    first: &Path,
    second: &Path,
    ranges: &Path,
    latency: u64,
    sizes_mib: &[u64],
) {
    b.counts.set_latency(Duration::from_millis(latency));
    let size = std::fs::metadata(first).unwrap().len();
    println!("\n### convoy by pack size ({latency} ms added per request)\n");
    println!(
        "| pack size | full backup | requests | backup after 1% change | requests | restore | \
         requests | peak RSS (max) | objects stored |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for &mib in sizes_mib {
        let prefix = format!("sweep-{mib}m");
        let with_size = |mut c: std::process::Command| {
            c.env(PACK_ENV, mib.to_string());
            c
        };
        let img = |p: &Path| p.to_str().unwrap().to_string();
        let full = b.run(
            with_size(b.convoy(Tool::Convoy, &prefix, &["backup", &img(first), "full"])),
            "convoy backup",
        );
        let inc = b.run(
            with_size(b.convoy(
                Tool::Convoy,
                &prefix,
                &["backup", &img(second), "second", "full", &img(ranges)],
            )),
            "convoy backup 2",
        );
        let (objects, _) = rt.block_on(moto.stored(&prefix));
        let out = b.work.join(format!("restore-{prefix}"));
        let restore = b.run(
            with_size(b.convoy(
                Tool::Convoy,
                &prefix,
                &["restore", "second", &img(&out), &size.to_string()],
            )),
            "convoy restore",
        );
        assert!(same_content(second, &out), "{prefix} restore differs");
        let _ = std::fs::remove_file(&out);
        let rss = [&full, &inc, &restore]
            .iter()
            .map(|r: &&Run| r.m.peak_rss_kib)
            .max()
            .unwrap();
        println!(
            "| {mib} MiB | {:.1} s, {:.0} MiB/s | {} | {:.2} s | {} | {:.1} s, {:.0} MiB/s | {} | {} MiB | {objects} |",
            full.m.cmd_secs,
            mib_s(size, full.m.cmd_secs),
            full.t.total,
            inc.m.cmd_secs,
            inc.t.total,
            restore.m.cmd_secs,
            mib_s(size, restore.m.cmd_secs),
            restore.t.total,
            rss / 1024,
        );
    }
}
