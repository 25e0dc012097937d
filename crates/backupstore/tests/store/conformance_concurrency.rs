//! The conformance suite, part 2: crashes, locking and concurrent backup + delete, run against
//! a `vfs://` directory and an S3 server (s3s-fs in this process), like `conformance.rs`.

// The API takes a list of byte ranges; a single whole-volume range is the common full backup.
#![allow(clippy::single_range_in_vec_init)]

use crate::support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use convoy_backupstore::{BackupError, BackupRef, BlockSource, NoProgress};
use support::*;

const C: u64 = CHUNK as u64;

/// A source that fails (or stalls) at one offset: a crash between block uploads and the
/// manifest.
struct Failing {
    inner: Arc<std::fs::File>,
    at: u64,
    stall: bool,
}

impl BlockSource for Failing {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        if offset == self.at {
            if self.stall {
                std::thread::sleep(Duration::from_secs(2));
            }
            return Err(std::io::Error::other("injected read failure"));
        }
        self.inner.read_at(offset, buf)
    }
}

async fn crash_before_manifest(env: Env) {
    let mut opts = env.opts.clone();
    opts.lock.wait = Duration::from_secs(3);
    let t = convoy_backupstore::BackupTarget::open(&env.dest, opts).unwrap();
    let size = 40 * C;
    let img = Image::new(size, 4);
    let failing = Arc::new(Failing {
        inner: img.file.clone(),
        at: 39 * C,
        stall: false,
    });
    let err = t
        .backup(failing, &[0..size], None, meta("vol1", size), &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::SourceRead { .. }), "{err}");
    assert!(
        !env.pack_files().is_empty(),
        "no block was uploaded before the failure"
    );
    assert!(
        t.list(None).await.unwrap().is_empty(),
        "a failed backup is visible"
    );
    // Its reference records went with it; its packs stay (another backup may use them).
    assert_eq!(
        env.files_under("refs"),
        Vec::<std::path::PathBuf>::new(),
        "the failed backup left reference records"
    );

    // A backup cancelled mid-way (its task dropped): nothing visible, its lock goes away.
    let stalling = Arc::new(Failing {
        inner: img.file.clone(),
        at: 20 * C,
        stall: true,
    });
    let cancelled = tokio::time::timeout(
        Duration::from_millis(300),
        t.backup(stalling, &[0..size], None, meta("vol1", size), &NoProgress),
    )
    .await;
    assert!(cancelled.is_err(), "the stalled backup should not finish");
    assert!(t.list(None).await.unwrap().is_empty());

    // The next backup is fine, and a delete is not blocked by the dead backups' locks.
    let ok = full_backup(&t, &img, "vol1").await;
    let (got, _) = restore_bytes(&t, &ok.backup, size).await.unwrap();
    assert!(got == img.bytes());
    let other = full_backup(&t, &img, "vol2").await;
    t.delete(&other.backup).await.unwrap();

    // Repair removes what the cancelled backup left (its lock; references of packs it sent,
    // if it sent any); then deleting the last backup leaves nothing behind.
    t.repair().await.unwrap();
    t.verify(&ok.backup, &NoProgress).await.unwrap();
    t.delete(&ok.backup).await.unwrap();
    assert_eq!(env.pack_files().len(), 0);
    assert_eq!(env.files_under("refs").len(), 0);
    assert_eq!(env.files_under("trash").len(), 0);
}

/// Backups made and the image content each must restore to, oldest first.
type Made = VecDeque<(BackupRef, Vec<u8>)>;

async fn concurrent_backup_and_delete(env: Env) {
    let t = env.target();
    let size = 16 * C;
    let img = Arc::new(Image::new(size, 5));
    let made: Arc<Mutex<Made>> = Default::default();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let backups = {
        let (t, img, made, done) = (t.clone(), img.clone(), made.clone(), done.clone());
        tokio::spawn(async move {
            let mut parent: Option<String> = None;
            for round in 0..12u64 {
                let a = (round * 7) % 16;
                let b = (round * 3 + 1) % 16;
                img.write(a * C, &noise(C as usize, 1000 + round));
                img.write(b * C + 5, &round.to_le_bytes());
                let changed = [a * C..(a + 1) * C, b * C..(b + 1) * C];
                let all = [0..size];
                // The first backup is a full one: every mapped range.
                let ranges = if parent.is_some() {
                    &changed[..]
                } else {
                    &all[..]
                };
                let m = meta("vol1", size);
                let out = match t
                    .backup(
                        img.file.clone(),
                        ranges,
                        parent.as_deref(),
                        m.clone(),
                        &NoProgress,
                    )
                    .await
                {
                    Ok(o) => o,
                    // The parent was deleted meanwhile: take a full backup, as convoy-core does.
                    Err(BackupError::BadParent { .. }) => t
                        .backup(img.file.clone(), &[0..size], None, m, &NoProgress)
                        .await
                        .unwrap(),
                    Err(e) => panic!("backup failed: {e}"),
                };
                parent = Some(out.backup.backup.clone());
                made.lock().unwrap().push_back((out.backup, img.bytes()));
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    let deletes = {
        let (t, made, done) = (t.clone(), made.clone(), done.clone());
        tokio::spawn(async move {
            let mut deleted = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let victim = {
                    let mut q = made.lock().unwrap();
                    if q.len() > 2 {
                        q.pop_front()
                    } else {
                        None
                    }
                };
                match victim {
                    Some((r, _)) => {
                        t.delete(&r).await.unwrap();
                        deleted += 1;
                    }
                    None => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
            deleted
        })
    };
    backups.await.unwrap();
    let deleted = deletes.await.unwrap();
    assert!(deleted > 0);
    let remaining: Vec<_> = made.lock().unwrap().drain(..).collect();
    assert_eq!(remaining.len() + deleted, 12);
    for (r, bytes) in &remaining {
        t.verify(r, &NoProgress).await.unwrap();
        let (got, _) = restore_bytes(&t, r, size).await.unwrap();
        let differing: Vec<usize> = (0..got.len() / C as usize)
            .filter(|&i| {
                got[i * C as usize..(i + 1) * C as usize]
                    != bytes[i * C as usize..(i + 1) * C as usize]
            })
            .collect();
        assert!(
            differing.is_empty(),
            "backup {} restores wrong data in chunks {differing:?}",
            r.backup
        );
    }
    for (r, _) in &remaining {
        t.delete(r).await.unwrap();
    }
    assert_eq!(env.pack_files().len(), 0, "orphaned blocks");
    assert_eq!(env.files_under("refs").len(), 0, "orphaned references");
    assert!(t.list(None).await.unwrap().is_empty());
}

/// Writes a lock record as another process would.
fn plant_lock(env: &Env, name: &str, host: &str, pid: u32, age_secs: u64) -> std::path::PathBuf {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let kind = name.split('-').next().unwrap();
    let dir = env.objects_root.join("locks");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.json"));
    let rec = serde_json::json!({
        "kind": kind, "operation": "test", "host": host, "pid": pid,
        "process": "planted", "created": now - age_secs, "refreshed": now - age_secs,
    });
    std::fs::write(&path, rec.to_string()).unwrap();
    path
}

/// A target that waits 400 ms for a lock, an image of two chunks (seeded by `seed`), and a
/// first full backup of it as volume `vol1`.
async fn impatient_with_a_backup(
    env: &Env,
    seed: u64,
) -> (
    convoy_backupstore::BackupTarget,
    Image,
    convoy_backupstore::BackupOutcome,
) {
    let mut opts = env.opts.clone();
    opts.lock.wait = Duration::from_millis(400);
    let t = convoy_backupstore::BackupTarget::open(&env.dest, opts).unwrap();
    let img = Image::new(2 * C, seed);
    let first = full_backup(&t, &img, "vol1").await;
    (t, img, first)
}

/// Adds to the planted record at `p` the backup its holder publishes.
fn publishing(p: &std::path::Path, volume: &str, backup: &str) {
    let mut rec: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
    rec["publishes"] = serde_json::json!({"volume": volume, "backup": backup});
    std::fs::write(p, rec.to_string()).unwrap();
}

async fn foreign_locks(env: Env) {
    let (t, img, first) = impatient_with_a_backup(&env, 9).await;
    let here = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let here = here.trim();

    // A live exclusive lock held elsewhere blocks a backup, with an error naming the holder.
    let p = plant_lock(&env, "exclusive-planted1", "otherhost", 1, 0);
    let err = t
        .backup(
            img.file.clone(),
            &[0..2 * C],
            None,
            meta("vol1", 2 * C),
            &NoProgress,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("otherhost"), "{err}");
    std::fs::remove_file(p).unwrap();

    // An exclusive lock of a process of this host that no longer exists is stale.
    let dead_pid = 4_194_303;
    assert!(!std::path::Path::new(&format!("/proc/{dead_pid}")).exists());
    let p = plant_lock(&env, "exclusive-planted2", here, dead_pid, 0);
    full_backup(&t, &img, "vol1").await;
    assert!(!p.exists(), "the stale lock was not removed");

    // A live shared lock held elsewhere lets backups run but blocks a delete...
    let p = plant_lock(&env, "shared-planted3", "otherhost", 1, 0);
    full_backup(&t, &img, "vol1").await;
    let err = t.delete(&first.backup).await.unwrap_err();
    assert!(matches!(err, BackupError::Locked { .. }), "{err}");
    // ...until it is older than `stale_after` without a refresh.
    std::fs::remove_file(p).unwrap();
    let p = plant_lock(&env, "shared-planted4", "otherhost", 1, 3600);
    t.delete(&first.backup).await.unwrap();
    assert!(!p.exists());
}

/// A backup's shared lock record that names the backup it publishes (a backup named for it,
/// which does not wait for its record's removal) blocks a delete while that backup is not
/// published, and is removed by the delete once it is: a process that published and ended
/// without removing its record holds nothing up.
async fn a_published_backups_lock_is_released(env: Env) {
    let (t, img, first) = impatient_with_a_backup(&env, 12).await;
    let name = "backup-00c0ffee00c0ffee";
    let p = plant_lock(&env, "shared-planted5", "otherhost", 1, 0);
    publishing(&p, "vol1", name);
    let err = t.delete(&first.backup).await.unwrap_err();
    assert!(matches!(err, BackupError::Locked { .. }), "{err}");
    assert!(p.exists());
    // Its backup is published (here by this target, under the name the record gives).
    let mut m = meta("vol1", 2 * C);
    m.backup_name = Some(name.into());
    t.backup(img.file.clone(), &[0..2 * C], None, m, &NoProgress)
        .await
        .unwrap();
    t.delete(&first.backup).await.unwrap();
    assert!(!p.exists(), "the record of a published backup was kept");
    // A record naming no valid backup is an ordinary one.
    let p = plant_lock(&env, "shared-planted6", "otherhost", 1, 0);
    publishing(&p, "../vol1", name);
    let second = BackupRef::new("vol1", name).unwrap();
    let err = t.delete(&second).await.unwrap_err();
    assert!(matches!(err, BackupError::Locked { .. }), "{err}");
    std::fs::remove_file(p).unwrap();
    t.delete(&second).await.unwrap();
}

/// A delete that crashed after copying the manifest to the trash (manifest still visible) is
/// finished by the next delete: the backup disappears and its own blocks are collected.
async fn interrupted_delete_is_finished(env: Env) {
    let t = env.target();
    let keep_img = Image::new(4 * C, 10);
    let gone_img = Image::new(4 * C, 11);
    let keep = full_backup(&t, &keep_img, "vol1").await;
    let gone = full_backup(&t, &gone_img, "vol2").await;
    let third = full_backup(&t, &keep_img, "vol3").await;
    let manifest = env.objects_root.join(format!(
        "volumes/vol2/backups/{}.manifest",
        gone.backup.backup
    ));
    let trash = env
        .objects_root
        .join(format!("trash/vol2/{}", gone.backup.backup));
    std::fs::create_dir_all(&trash).unwrap();
    std::fs::copy(&manifest, trash.join("manifest")).unwrap();
    assert_eq!(t.list(None).await.unwrap().len(), 3);
    t.delete(&third.backup).await.unwrap();
    let left = t.list(None).await.unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left.contains_key(&keep.info.backup_url));
    assert_eq!(env.files_under("trash").len(), 0);
    assert_eq!(env.pack_files().len() as u64, keep.stats.packs_uploaded);
    let (got, _) = restore_bytes(&t, &keep.backup, 4 * C).await.unwrap();
    assert!(got == keep_img.bytes());
    assert_eq!(t.repair().await.unwrap(), Default::default());
}

conformance!(
    crash_before_manifest,
    concurrent_backup_and_delete,
    foreign_locks,
    a_published_backups_lock_is_released,
    interrupted_delete_is_finished,
);
