//! Helpers shared by the host-tier tests: running Debian's thin-provisioning-tools (the oracle),
//! rendering our own output, and a small seeded RNG.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use convoy_thinmeta::xml::{
    write_delta, write_dump_device, write_dump_device_end, write_dump_end, write_dump_header,
    write_dump_run,
};
use convoy_thinmeta::{DeltaMode, ThinMetadata};

/// SplitMix64: a tiny deterministic RNG, so every failure names a reproducible seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Runs a thin-provisioning-tools program and returns stdout, panicking with stderr on failure.
pub fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (install thin-provisioning-tools): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("tool output is UTF-8")
}

/// `thin_check` must accept the metadata.
pub fn thin_check(path: &Path) {
    let out = Command::new("thin_check")
        .arg(path)
        .output()
        .expect("run thin_check");
    assert!(
        out.status.success(),
        "thin_check rejects {}:\n{}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `xml` and restores it with thin_restore into a metadata file of `blocks` 4K blocks.
pub fn restore(dir: &Path, name: &str, xml: &str, blocks: u64) -> PathBuf {
    let xml_path = dir.join(format!("{name}.xml"));
    std::fs::write(&xml_path, xml).unwrap();
    let meta = dir.join(format!("{name}.meta"));
    let f = std::fs::File::create(&meta).unwrap();
    f.set_len(blocks * 4096).unwrap();
    tool(
        "thin_restore",
        &[
            "-i",
            xml_path.to_str().unwrap(),
            "-o",
            meta.to_str().unwrap(),
        ],
    );
    meta
}

/// Debian thin_delta's output.
pub fn their_delta(path: &Path, left: u64, right: u64, verbose: bool, snap: bool) -> String {
    let (l, r) = (left.to_string(), right.to_string());
    let mut args = vec!["--snap1", &l, "--snap2", &r];
    if verbose {
        args.push("--verbose");
    }
    if snap {
        args.push("-m");
    }
    args.push(path.to_str().unwrap());
    tool("thin_delta", &args)
}

/// Our thin_delta output, from the library.
pub fn our_delta(path: &Path, left: u64, right: u64, verbose: bool, snap: bool) -> String {
    let file = std::fs::File::open(path).unwrap();
    let mut md = if snap {
        ThinMetadata::open_metadata_snapshot(file, None).unwrap()
    } else {
        ThinMetadata::open(file).unwrap()
    };
    let sb = md.superblock().clone();
    let delta = md.delta(left, right, DeltaMode::Full).unwrap();
    let mut out = Vec::new();
    if let Err(e) = write_delta(&mut out, &sb, left, right, delta, verbose) {
        panic!("delta failed: {e:?}");
    }
    String::from_utf8(out).unwrap()
}

/// Our thin_dump output, from the library.
pub fn our_dump(path: &Path) -> String {
    let file = std::fs::File::open(path).unwrap();
    let mut md = ThinMetadata::open(file).unwrap();
    let sb = md.superblock().clone();
    let mut out = Vec::new();
    write_dump_header(&mut out, &sb).unwrap();
    for d in md.devices().unwrap() {
        write_dump_device(&mut out, &d).unwrap();
        for r in md.mapped_runs(d.dev_id).unwrap() {
            write_dump_run(&mut out, &r.unwrap()).unwrap();
        }
        write_dump_device_end(&mut out).unwrap();
    }
    write_dump_end(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}
