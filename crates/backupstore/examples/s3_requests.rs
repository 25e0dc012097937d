//! Counts the requests convoy's store format 2 sends to an S3 server for a full backup, an
//! incremental after a 1% scattered change, a restore, and the delete of one backup out of 10
//! (counted by the target itself: every object call, listing call and multipart part).
//!
//! `CONVOY_S3_ENDPOINT=http://127.0.0.1:PORT AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=y \
//!  cargo run -p convoy-backupstore --example s3_requests` against a server holding the bucket
//! `convoy-bench` (e.g. `moto_server -p PORT` and `curl -X PUT http://127.0.0.1:PORT/convoy-bench`).
//! `CONVOY_BENCH_SIZE_MIB` sets the image size (default 256).

// The API takes a list of byte ranges; one whole-image range is a full backup.
#![allow(clippy::single_range_in_vec_init)]

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Instant;

use convoy_backupstore::{
    BackupMeta, BackupRef, BackupTarget, NoProgress, RestoreOptions, TargetOptions,
};

const MIB: u64 = 1 << 20;

fn fill(buf: &mut [u8], kind: u64, mut s: u64) {
    match kind {
        0 => buf.fill(0),
        1 => {
            let text = b"volume snapshot backup the of and block device ";
            for (i, b) in buf.iter_mut().enumerate() {
                *b = text[(i + s as usize) % text.len()];
            }
        }
        _ => {
            for b in buf.iter_mut() {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                *b = s as u8;
            }
        }
    }
}

fn meta(size: u64, name: &str) -> BackupMeta {
    BackupMeta {
        backup_name: Some(name.into()),
        driver_name: "bench".into(),
        volume_name: "bench".into(),
        volume_size: size,
        ..Default::default()
    }
}

#[tokio::main]
async fn main() {
    let mib: u64 = std::env::var("CONVOY_BENCH_SIZE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let size = mib * MIB;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("image");
    let file = Arc::new(
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap(),
    );
    let mut buf = vec![0u8; MIB as usize];
    for i in 0..mib {
        fill(&mut buf, (i * 7 + i / 3) % 3, i + 1);
        file.write_all_at(&buf, i * MIB).unwrap();
    }
    let mut opts = TargetOptions {
        s3_endpoint: std::env::var("CONVOY_S3_ENDPOINT").ok(),
        cache_dir: Some(dir.path().join("cache")),
        ..Default::default()
    };
    opts.retry.max_retries = 2;
    let dest = format!("s3://convoy-bench@us-east-1/run-{}", std::process::id());
    let t = BackupTarget::open(&dest, opts).unwrap();
    let phase = |name: &str, t0: Instant, before: u64, t: &BackupTarget| {
        println!(
            "| {name} | {:.2} s | {} |",
            t0.elapsed().as_secs_f64(),
            t.requests() - before
        );
    };
    println!("image {mib} MiB, pack size 16 MiB, chunk 1 MiB\n\n| phase | wall | requests |\n|---|---|---|");
    let (t0, r0) = (Instant::now(), t.requests());
    let full = t
        .backup(
            file.clone(),
            &[0..size],
            None,
            meta(size, "b00"),
            &NoProgress,
        )
        .await
        .unwrap();
    phase("full backup", t0, r0, &t);
    eprintln!("{:?}", full.stats);
    // 1% scattered change: mib/100 chunks of 1 MiB rewritten with fresh random data.
    let mut prev = "b00".to_string();
    for round in 1..10u64 {
        let mut ranges = Vec::new();
        for k in 0..(mib / 100).max(1) {
            let at = ((k * 97 + round * 13) % mib) * MIB;
            fill(&mut buf, 2, 1000 * round + k);
            file.write_all_at(&buf, at).unwrap();
            ranges.push(at..at + MIB);
        }
        let name = format!("b{round:02}");
        let (t0, r0) = (Instant::now(), t.requests());
        let out = t
            .backup(
                file.clone(),
                &ranges,
                Some(&prev),
                meta(size, &name),
                &NoProgress,
            )
            .await
            .unwrap();
        if round == 1 {
            phase("incremental after 1% change", t0, r0, &t);
            eprintln!("{:?}", out.stats);
        }
        prev = name;
    }
    let out = Arc::new(std::fs::File::create(dir.path().join("restored")).unwrap());
    let (t0, r0) = (Instant::now(), t.requests());
    t.restore(
        &BackupRef::new("bench", &prev).unwrap(),
        out,
        &RestoreOptions::default(),
        &NoProgress,
    )
    .await
    .unwrap();
    phase("restore of the 10th backup", t0, r0, &t);
    let (t0, r0) = (Instant::now(), t.requests());
    t.delete(&BackupRef::new("bench", "b05").unwrap())
        .await
        .unwrap();
    phase("delete 1 of 10 (middle of the chain)", t0, r0, &t);
}
