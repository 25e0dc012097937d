//! Random access to one backup ([`BackupReader`]), on `vfs://` and on S3 (s3s-fs in this
//! process): every byte as backed up, only the chunks touched fetched, corruption and missing
//! packs reported (never wrong data), a delete held off while a reader is open, encrypted stores.

#![allow(clippy::single_range_in_vec_init)]

use crate::support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use convoy_backupstore::{
    BackupError, BackupReader, BackupTarget, KdfParams, ReaderOptions, SecretSource,
};
use support::*;

const C: u64 = CHUNK as u64;

fn reader_opts() -> ReaderOptions {
    ReaderOptions {
        cache_bytes: 4 * C,
        read_ahead_chunks: 0,
        operation: "test".into(),
    }
}

async fn reads_match_the_image_anywhere_and_fetch_only_what_they_touch(env: Env) {
    let t = BackupTarget::open(&env.dest, env.opts.clone()).unwrap();
    // 40 chunks and a short last one: zeros (holes), text and noise by chunk.
    let img = Image::new(40 * C + 1000, 3);
    let done = full_backup(&t, &img, "vol1").await;
    let want = img.bytes();
    let r = BackupReader::open(&t, &done.backup, reader_opts())
        .await
        .unwrap();
    assert_eq!(r.size(), want.len() as u64);
    assert_eq!(r.chunk_size(), C);
    assert_eq!(r.info().volume_name, "vol1");

    // One stored chunk: one ranged GET.
    let stored = (0..40).find(|i| !r.is_hole(*i)).unwrap();
    let mut buf = vec![0u8; 100];
    r.read_at(stored * C + 10, &mut buf).await.unwrap();
    assert_eq!(buf, want[(stored * C + 10) as usize..][..100]);
    assert_eq!(r.stats().requests.load(Ordering::Relaxed), 1);
    assert_eq!(r.stats().chunks_fetched.load(Ordering::Relaxed), 1);
    // The same chunk again: from the cache.
    r.read_at(stored * C, &mut buf).await.unwrap();
    assert_eq!(r.stats().requests.load(Ordering::Relaxed), 1);
    assert!(r.stats().cache_hits.load(Ordering::Relaxed) >= 1);

    // A full backup's blocks are adjacent in their pack: ten chunks in few requests.
    let before = r.stats().requests.load(Ordering::Relaxed);
    let mut ten = vec![0u8; 10 * C as usize];
    r.read_at(20 * C, &mut ten).await.unwrap();
    assert_eq!(ten, want[(20 * C) as usize..][..ten.len()]);
    let sent = r.stats().requests.load(Ordering::Relaxed) - before;
    assert!(sent <= 3, "{sent} requests for 10 chunks (packs of 1 MiB)");

    // Arbitrary ranges: across chunk boundaries, over holes, up to the last byte.
    let mut x = 12345u64;
    for _ in 0..60 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let offset = (x >> 20) % want.len() as u64;
        let len = ((x >> 4) % (3 * C)).min(want.len() as u64 - offset) as usize;
        let mut b = vec![0xee; len];
        r.read_at(offset, &mut b).await.unwrap();
        assert_eq!(
            b,
            want[offset as usize..][..len],
            "at {offset}, {len} bytes"
        );
    }
    let mut tail = vec![0u8; 1000];
    r.read_at(40 * C, &mut tail).await.unwrap();
    assert_eq!(tail, want[(40 * C) as usize..]);
    let e = r.read_at(40 * C + 1, &mut tail).await.unwrap_err();
    assert!(
        matches!(e, BackupError::InvalidArgument(_)) && e.to_string().contains("past the end"),
        "{e}"
    );
    // Holes read as zeros without a request.
    let hole = (0..40).find(|i| r.is_hole(*i)).unwrap();
    let before = r.stats().requests.load(Ordering::Relaxed);
    let mut z = vec![1u8; C as usize];
    r.read_at(hole * C, &mut z).await.unwrap();
    assert!(z.iter().all(|b| *b == 0));
    assert_eq!(r.stats().requests.load(Ordering::Relaxed), before);
    r.close().await.unwrap();
}

async fn sequential_reads_are_read_ahead(env: Env) {
    let t = BackupTarget::open(&env.dest, env.opts.clone()).unwrap();
    let img = Image::new(32 * C, 1);
    let done = full_backup(&t, &img, "vol1").await;
    let want = img.bytes();
    let r = BackupReader::open(
        &t,
        &done.backup,
        ReaderOptions {
            cache_bytes: 64 * C,
            read_ahead_chunks: 8,
            operation: "test".into(),
        },
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; C as usize];
    r.read_at(0, &mut buf).await.unwrap();
    r.read_at(C, &mut buf).await.unwrap();
    // The read-ahead of chunks 2..10 runs in the background.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let stored_ahead = (2..10).filter(|i| !r.is_hole(*i)).count() as u64;
    let fetched_first = (0..2).filter(|i| !r.is_hole(*i)).count() as u64;
    while r.stats().chunks_fetched.load(Ordering::Relaxed) < fetched_first + stored_ahead {
        assert!(std::time::Instant::now() < deadline, "no read-ahead");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let requests = r.stats().requests.load(Ordering::Relaxed);
    for i in 2..10u64 {
        r.read_at(i * C, &mut buf).await.unwrap();
        assert_eq!(buf, want[(i * C) as usize..][..C as usize]);
    }
    let after = r.stats().requests.load(Ordering::Relaxed);
    // Only the next read-ahead (chunks 10..) may have been asked for since.
    assert!(
        r.stats().cache_hits.load(Ordering::Relaxed) >= stored_ahead,
        "read from the cache"
    );
    assert!(after >= requests);
}

async fn damage_is_an_error_never_wrong_data(env: Env) {
    let t = BackupTarget::open(&env.dest, env.opts.clone()).unwrap();
    let img = Image::new(16 * C, 2);
    let done = full_backup(&t, &img, "vol1").await;
    let r = BackupReader::open(&t, &done.backup, reader_opts())
        .await
        .unwrap();
    // Flip one byte in the middle of every pack: a block in each is now corrupt.
    let packs = files_under(&env.objects_root.join("packs"));
    assert!(!packs.is_empty());
    for p in &packs {
        let mut b = std::fs::read(p).unwrap();
        let at = b.len() / 3;
        b[at] ^= 0x55;
        std::fs::write(p, b).unwrap();
    }
    let mut corrupt = 0;
    for i in 0..16u64 {
        let mut buf = vec![0u8; C as usize];
        match r.read_at(i * C, &mut buf).await {
            Ok(()) => assert_eq!(
                buf,
                img.bytes()[(i * C) as usize..][..C as usize],
                "chunk {i}"
            ),
            Err(BackupError::CorruptBlock { offset, .. }) => {
                assert_eq!(offset, i * C);
                corrupt += 1;
            }
            Err(e) => panic!("chunk {i}: {e}"),
        }
    }
    assert!(corrupt >= 1, "the damage was seen");
    // A pack gone: the block is missing, named by its offset.
    for p in &packs {
        std::fs::remove_file(p).unwrap();
    }
    let stored = (0..16).find(|i| !r.is_hole(*i)).unwrap();
    let r2 = BackupReader::open(&t, &done.backup, reader_opts())
        .await
        .unwrap();
    let mut buf = vec![0u8; 10];
    let e = r2.read_at(stored * C, &mut buf).await.unwrap_err();
    assert!(matches!(e, BackupError::MissingBlock { .. }), "{e}");
}

async fn a_delete_waits_for_open_readers_and_fails_locked(env: Env) {
    let t = BackupTarget::open(&env.dest, env.opts.clone()).unwrap();
    let img = Image::new(8 * C, 1);
    let done = full_backup(&t, &img, "vol1").await;
    let r = BackupReader::open(&t, &done.backup, reader_opts())
        .await
        .unwrap();
    let mut impatient = env.opts.clone();
    impatient.lock.wait = Duration::from_millis(300);
    let deleter = BackupTarget::open(&env.dest, impatient).unwrap();
    let e = deleter.delete(&done.backup).await.unwrap_err();
    assert!(matches!(e, BackupError::Locked { .. }), "{e}");
    assert!(e.to_string().contains("test"), "names the reader: {e}");
    // Every byte still there.
    let mut all = vec![0u8; img.size as usize];
    r.read_at(0, &mut all).await.unwrap();
    assert_eq!(all, img.bytes());
    r.close().await.unwrap();
    deleter.delete(&done.backup).await.unwrap();
}

async fn encrypted_stores_read_the_same(env: Env) {
    let mut o = env.opts.clone();
    o.secret = Some(SecretSource::Passphrase(zeroize::Zeroizing::new(
        "pw".to_string(),
    )));
    o.kdf = KdfParams::insecure_fast();
    let t = BackupTarget::open(&env.dest, o.clone()).unwrap();
    t.init(true).await.unwrap();
    let img = Image::new(12 * C + 7, 5);
    let done = full_backup(&t, &img, "vol1").await;
    let r = BackupReader::open(&t, &done.backup, reader_opts())
        .await
        .unwrap();
    let mut all = vec![0u8; img.size as usize];
    r.read_at(0, &mut all).await.unwrap();
    assert_eq!(all, img.bytes());
    assert_eq!(r.info().encrypted, "true");
    r.close().await.unwrap();
    // Without the secret: refused before anything is read.
    let mut no_key = o;
    no_key.secret = None;
    let t2 = BackupTarget::open(&env.dest, no_key).unwrap();
    let e = BackupReader::open(&t2, &done.backup, reader_opts())
        .await
        .unwrap_err();
    assert!(matches!(e, BackupError::Key { .. }), "{e}");
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if !p.file_name().unwrap().to_string_lossy().starts_with('.') {
                out.push(p);
            }
        }
    }
    out
}

conformance!(
    reads_match_the_image_anywhere_and_fetch_only_what_they_touch,
    sequential_reads_are_read_ahead,
    damage_is_an_error_never_wrong_data,
    a_delete_waits_for_open_readers_and_fails_locked,
    encrypted_stores_read_the_same,
);
