//! The delete phase of `bench_s3`: the cost of deleting one backup out of N, restic against
//! convoy, on the same server through the same counting proxy.

use std::path::Path;
use std::time::Duration;

use crate::bench_support::{fill_random, make_image, write_ranges, MIB};
use crate::{Bench, Moto, Tool};

fn restic_snapshot_ids(b: &Bench, prefix: &str) -> Vec<String> {
    let out = b.restic(prefix, &["snapshots", "--json"]).output().unwrap();
    assert!(out.status.success(), "restic snapshots");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// Backs a small image up until the store holds each count of `delete_at` backups, deleting
/// one in the middle at each: its requests and time, restic against convoy.
pub fn delete_phase(
    b: &Bench,
    moto: &Moto,
    rt: &tokio::runtime::Runtime,
    work: &Path,
    mib: u64,
    delete_at: &[u64],
    latencies: &[u64],
) {
    let latency = *latencies.last().unwrap_or(&0);
    b.counts.set_latency(Duration::from_millis(latency));
    let size = mib * MIB;
    let image = work.join("image-delete.img");
    let ranges = work.join("delete-ranges");
    let mut table = Vec::new();
    for tool in [Tool::Restic, Tool::Convoy] {
        // Each tool starts from the same image and makes the same changes.
        make_image(&image, size);
        let prefix = format!("{}-delete", tool.name());
        b.init(tool, &prefix);
        let mut live: Vec<String> = Vec::new();
        let mut made = 0u64;
        for &at in delete_at {
            eprintln!(
                "delete phase, {}: backing up until {at} backups",
                tool.name()
            );
            while (live.len() as u64) < at {
                let name = format!("d{made:04}");
                let parent = live.last().cloned();
                if made > 0 {
                    // A small change each time: one 2 MiB block.
                    let changed = change_blocks(&image, size, made);
                    write_ranges(&ranges, &changed);
                }
                let run = b.backup(
                    tool,
                    &prefix,
                    &image,
                    &name,
                    parent.as_deref().map(|p| (p, ranges.as_path())),
                );
                drop(run);
                live.push(name);
                made += 1;
            }
            let victim = live.len() / 2;
            let (objects_before, _) = rt.block_on(moto.stored(&prefix));
            let run = match tool {
                Tool::Restic => {
                    let ids = restic_snapshot_ids(b, &prefix);
                    assert_eq!(ids.len(), live.len(), "restic snapshots");
                    b.run(
                        b.restic(&prefix, &["forget", &ids[victim], "--prune"]),
                        "restic forget --prune",
                    )
                }
                _ => b.run(
                    b.convoy(tool, &prefix, &["delete", &live[victim]]),
                    "convoy delete",
                ),
            };
            live.remove(victim);
            table.push((tool, at, run, objects_before));
        }
    }
    println!(
        "\n### delete one backup out of N ({mib} MiB image, one 2 MiB block changed per backup, \
         {latency} ms added per request)\n"
    );
    println!("| tool | backups in the store | objects in the store | delete: wall | delete: requests | by method |");
    println!("|---|---|---|---|---|---|");
    for (tool, at, run, objects) in &table {
        println!(
            "| {} | {at} | {objects} | {:.2} s | {} | {} |",
            match tool {
                Tool::Restic => "restic forget --prune",
                _ => "convoy delete",
            },
            run.m.cmd_secs,
            run.t.total,
            run.t.methods()
        );
    }
}

/// Overwrites one 2 MiB block (chosen by `round`) with new data; returns its range.
fn change_blocks(path: &Path, size: u64, round: u64) -> Vec<(u64, u64)> {
    use std::os::unix::fs::FileExt;
    const BLOCK: u64 = 2 * MIB;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let block = (round * 7919) % (size / BLOCK);
    let mut buf = vec![0u8; BLOCK as usize];
    // Odd seeds: `fill_random` sets the low bit, so 2k and 2k + 1 would give the same data.
    fill_random(&mut buf, 10_001 + 2 * round);
    f.write_all_at(&buf, block * BLOCK).unwrap();
    f.sync_all().unwrap();
    vec![(block * BLOCK, (block + 1) * BLOCK)]
}
