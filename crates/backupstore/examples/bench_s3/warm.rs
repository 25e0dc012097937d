//! The convoy phases as a running daemon pays for them: the store is opened once, untimed, in
//! the phase's process (an encrypted store's key derived then, as the daemon's key cache keeps
//! it), and only the operation that follows is timed ([`measure_warm`]). A new process per
//! phase, as the main table measures, pays for the key derivation (one Argon2id run) every time;
//! `convoy backup create` through the daemon pays it once.

use std::path::Path;

use crate::bench_support::{measure_warm, same_content};
use crate::{mib_s, Bench, Run, Tool};

/// Seconds of a warm backup after the change and of a warm restore of it.
pub struct Warm {
    pub incremental: f64,
    pub restore: f64,
}

/// A backup of `image` (the changed ranges, parent `second`) named `second-warm`, then its
/// restore into `out` (checked, then removed). `image` is `second`'s image with the same
/// blocks changed again, with new data: the backup uploads as much as `second` did (a backup
/// of `second`'s image again, as runs 10–15 made, found every chunk stored and uploaded
/// nothing).
pub fn measure(
    b: &Bench,
    tool: Tool,
    prefix: &str,
    image: &Path,
    ranges: &Path,
    out: &Path,
) -> Warm {
    let size = std::fs::metadata(image).unwrap().len();
    let img = image.to_str().unwrap();
    let incremental = measure_warm(
        b.convoy(
            tool,
            prefix,
            &[
                "backup",
                img,
                "second-warm",
                "second",
                ranges.to_str().unwrap(),
            ],
        ),
        &format!("{} backup second-warm", tool.name()),
    );
    let restore = measure_warm(
        b.convoy(
            tool,
            prefix,
            &[
                "restore",
                "second-warm",
                out.to_str().unwrap(),
                &size.to_string(),
            ],
        ),
        &format!("{} restore second-warm", tool.name()),
    );
    assert!(same_content(image, out), "{prefix} warm restore differs");
    let _ = std::fs::remove_file(out);
    Warm {
        incremental,
        restore,
    }
}

/// The warm phases of plain and encrypted convoy against restic's (new process) phases.
pub fn print(size: u64, restic: &[Run; 3], plain: &Warm, enc: &Warm) {
    println!("\nstore opened before, as the daemon runs a phase (only the operation timed):\n");
    println!("| phase | restic 0.14 | convoy | convoy encrypted | convoy / restic | encrypted / restic | encrypted vs plain (goal >= 0.85) |");
    println!("|---|---|---|---|---|---|---|");
    let (ri, rr) = (restic[1].m.cmd_secs, restic[2].m.cmd_secs);
    println!(
        "| 2. backup after 1% change | {ri:.2} s | {:.3} s | {:.3} s | {:.1}x faster | {:.1}x faster | {:.2}x |",
        plain.incremental,
        enc.incremental,
        ri / plain.incremental,
        ri / enc.incremental,
        plain.incremental / enc.incremental
    );
    println!(
        "| 3. restore | {rr:.1} s, {:.0} MiB/s | {:.1} s, {:.0} MiB/s | {:.1} s, {:.0} MiB/s | {:.2}x | {:.2}x | {:.2}x |",
        mib_s(size, rr),
        plain.restore,
        mib_s(size, plain.restore),
        enc.restore,
        mib_s(size, enc.restore),
        rr / plain.restore,
        rr / enc.restore,
        plain.restore / enc.restore
    );
}
