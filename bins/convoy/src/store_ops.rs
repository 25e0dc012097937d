//! `convoy backup verify`, `repair`, `compact`, `init` and `key`: store-only operations, run in this
//! process through `convoy-backupstore` (no volume is involved, so the daemon is not needed),
//! with progress on stderr and the figures as JSON on stdout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use convoy_backupstore::{
    BackupTarget, Cipher, CompactOptions, NoProgress, Progress, SecretSource, TargetOptions,
};
use serde::Serialize;

use crate::cli::{KeyArgs, KeyCommand};
use crate::output::print_json;

fn options(s3_endpoint: &str, key: &KeyArgs) -> TargetOptions {
    TargetOptions {
        s3_endpoint: (!s3_endpoint.is_empty()).then(|| s3_endpoint.to_string()),
        secret: SecretSource::choose(
            key.passphrase_file.clone(),
            key.key_file.clone(),
            key.backup_passcmd.clone(),
        ),
        ..Default::default()
    }
}

/// `convoy backup init DEST [--encrypt [--cipher C]]`.
pub async fn init(
    dest: &str,
    s3_endpoint: &str,
    key: &KeyArgs,
    encrypt: bool,
    cipher: Option<Cipher>,
) -> anyhow::Result<()> {
    let opts = TargetOptions {
        cipher,
        ..options(s3_endpoint, key)
    };
    let cipher = opts.new_store_cipher();
    let target = BackupTarget::open(dest, opts)?;
    match target.init(encrypt).await? {
        Some(slot) => {
            eprintln!("created encrypted backup store {dest} ({cipher}, key slot {slot})")
        }
        None => eprintln!("created backup store {dest} (not encrypted)"),
    }
    Ok(())
}

/// `convoy backup key list|add|remove`.
pub async fn key(command: KeyCommand, s3_endpoint: &str, key: &KeyArgs) -> anyhow::Result<()> {
    match command {
        KeyCommand::List { dest } => {
            let target = BackupTarget::open(&dest, options(s3_endpoint, key))?;
            print_json(&target.key_list().await?);
        }
        KeyCommand::Add {
            dest,
            new_passphrase_file,
            new_key_file,
            new_passcmd,
        } => {
            let new = new_passphrase_file
                .map(SecretSource::PassphraseFile)
                .or(new_key_file.map(SecretSource::KeyFile))
                .or(new_passcmd.map(SecretSource::Command))
                .ok_or_else(|| anyhow::anyhow!("give the new secret"))?;
            let target = BackupTarget::open(&dest, options(s3_endpoint, key))?;
            let slot = target.key_add(&new).await?;
            println!("{slot}");
        }
        KeyCommand::Remove { dest, slot } => {
            let target = BackupTarget::open(&dest, options(s3_endpoint, key))?;
            target.key_remove(&slot).await?;
            eprintln!("removed key slot {slot} of {dest}");
        }
    }
    Ok(())
}

/// Prints "verified X of Y MiB" to stderr at most every 10% of the way.
#[derive(Default)]
struct Stderr {
    total: AtomicU64,
    done: AtomicU64,
    shown: AtomicU64,
}

impl Progress for Stderr {
    fn start(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }
    fn advance(&self, bytes: u64) {
        let done = self.done.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let total = self.total.load(Ordering::Relaxed).max(1);
        let tenth = done * 10 / total;
        if self.shown.fetch_max(tenth, Ordering::Relaxed) < tenth {
            eprintln!(
                "verified {} of {} MiB of volume data",
                done >> 20,
                total >> 20
            );
        }
    }
}

/// The figures `convoy backup verify` prints.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct VerifyReport {
    #[serde(rename = "BackupURL")]
    backup_url: String,
    /// Blocks downloaded and checked.
    blocks_checked: u64,
    /// Volume bytes they hold.
    bytes_checked: u64,
    volume_size: u64,
    seconds: f64,
}

/// The figures `convoy backup repair` prints.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RepairReport {
    dest: String,
    refs_removed: u64,
    packs_removed: u64,
    blocks_removed: u64,
    records_removed: u64,
    seconds: f64,
}

/// `convoy backup verify URL`.
pub async fn verify(url: &str, s3_endpoint: &str, key: &KeyArgs) -> anyhow::Result<()> {
    let (target, r) = BackupTarget::open_backup(url, options(s3_endpoint, key))?;
    let started = Instant::now();
    eprintln!("verifying {url}");
    let stats = target.verify(&r, &Stderr::default()).await?;
    print_json(&VerifyReport {
        backup_url: url.to_string(),
        blocks_checked: stats.blocks,
        bytes_checked: stats.bytes,
        volume_size: stats.volume_size,
        seconds: started.elapsed().as_secs_f64(),
    });
    Ok(())
}

/// `convoy backup repair DEST`.
pub async fn repair(dest: &str, s3_endpoint: &str, key: &KeyArgs) -> anyhow::Result<()> {
    let target = BackupTarget::open(dest, options(s3_endpoint, key))?;
    let started = Instant::now();
    eprintln!("repairing {dest} (whole-store scan under the exclusive lock)");
    let stats = target.repair().await?;
    print_json(&RepairReport {
        dest: dest.to_string(),
        refs_removed: stats.refs_removed,
        packs_removed: stats.packs_removed,
        blocks_removed: stats.blocks_removed,
        records_removed: stats.records_removed,
        seconds: started.elapsed().as_secs_f64(),
    });
    Ok(())
}

/// The figures `convoy backup compact` prints.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CompactReport {
    dest: String,
    backups_read: u64,
    packs_examined: u64,
    packs_rewritten: u64,
    packs_deferred: u64,
    packs_written: u64,
    bytes_copied: u64,
    bytes_stored_before: u64,
    bytes_stored_after: u64,
    bytes_reclaimed: u64,
    garbage_removed: u64,
    entries_unresolved: u64,
    seconds: f64,
}

/// `convoy backup compact DEST [--threshold F] [--max-bytes SIZE]`.
pub async fn compact(
    dest: &str,
    s3_endpoint: &str,
    key: &KeyArgs,
    threshold: f64,
    max_bytes: u64,
) -> anyhow::Result<()> {
    let target = BackupTarget::open(dest, options(s3_endpoint, key))?;
    let started = Instant::now();
    eprintln!(
        "compacting {dest}: packs under {:.0}% used, at most {} MiB copied (exclusive lock)",
        threshold * 100.0,
        max_bytes >> 20
    );
    let s = target
        .compact(
            &CompactOptions {
                threshold,
                max_bytes,
            },
            &NoProgress,
        )
        .await?;
    if s.packs_deferred > 0 {
        eprintln!(
            "{} packs left for a later run (over --max-bytes, or damaged: see verify)",
            s.packs_deferred
        );
    }
    print_json(&CompactReport {
        dest: dest.to_string(),
        backups_read: s.backups_read,
        packs_examined: s.packs_examined,
        packs_rewritten: s.packs_rewritten,
        packs_deferred: s.packs_deferred,
        packs_written: s.packs_written,
        bytes_copied: s.bytes_copied,
        bytes_stored_before: s.bytes_stored_before,
        bytes_stored_after: s.bytes_stored_after,
        bytes_reclaimed: s.bytes_reclaimed,
        garbage_removed: s.garbage_removed,
        entries_unresolved: s.entries_unresolved,
        seconds: started.elapsed().as_secs_f64(),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    // The API takes a list of byte ranges; one whole-image range is a full backup.
    #![allow(clippy::single_range_in_vec_init)]

    use std::sync::Arc;

    use convoy_backupstore::BackupMeta;

    use super::*;

    #[tokio::test]
    async fn verify_finds_a_flipped_byte_and_repair_removes_a_crashed_backups_pack() {
        let dir = tempfile::tempdir().unwrap();
        let dest = format!("vfs://{}", dir.path().join("store").display());
        let image = dir.path().join("image");
        let data: Vec<u8> = (0..3u32 << 20).map(|i| (i * 7 / 3) as u8).collect();
        std::fs::write(&image, &data).unwrap();
        let target = BackupTarget::open(&dest, options("", &KeyArgs::default())).unwrap();
        let meta = BackupMeta {
            driver_name: "vfs".into(),
            volume_name: "v1".into(),
            volume_size: data.len() as u64,
            ..Default::default()
        };
        let file = Arc::new(std::fs::File::open(&image).unwrap());
        let size = data.len() as u64;
        let done = target
            .backup(file, &[0..size], None, meta, &NoProgress)
            .await
            .unwrap();
        let url = done.info.backup_url;
        verify(&url, "", &KeyArgs::default()).await.unwrap();
        repair(&dest, "", &KeyArgs::default()).await.unwrap();

        // A flipped byte inside the first block: verify fails naming the block's offset.
        let packs = dir.path().join("store/packs");
        let sub = std::fs::read_dir(&packs).unwrap().next().unwrap().unwrap();
        let pack = std::fs::read_dir(sub.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        let original = std::fs::read(pack.path()).unwrap();
        let mut bad = original.clone();
        bad[16 + 12 + 5] ^= 0x40;
        std::fs::write(pack.path(), &bad).unwrap();
        let err = verify(&url, "", &KeyArgs::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("corrupt") && err.contains("offset 0 "),
            "{err}"
        );
        std::fs::write(pack.path(), &original).unwrap();

        // An unreferenced pack (a crashed backup's) is removed by repair, the backup stays.
        let orphan = sub.path().join("0".repeat(64));
        std::fs::write(&orphan, &original).unwrap();
        repair(&dest, "", &KeyArgs::default()).await.unwrap();
        assert!(!orphan.exists());
        verify(&url, "", &KeyArgs::default()).await.unwrap();
    }

    #[tokio::test]
    async fn compact_rewrites_a_pack_a_deleted_backup_left_mostly_unused() {
        let dir = tempfile::tempdir().unwrap();
        let dest = format!("vfs://{}", dir.path().join("store").display());
        let key = KeyArgs::default();
        let image = dir.path().join("image");
        // Incompressible bytes (xorshift), so that pack sizes follow the data's.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut data: Vec<u8> = (0..4u32 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        std::fs::write(&image, &data).unwrap();
        let target = BackupTarget::open(&dest, options("", &key)).unwrap();
        let meta = BackupMeta {
            driver_name: "vfs".into(),
            volume_name: "v1".into(),
            volume_size: data.len() as u64,
            ..Default::default()
        };
        let size = data.len() as u64;
        let file = Arc::new(std::fs::File::open(&image).unwrap());
        let first = target
            .backup(file, &[0..size], None, meta.clone(), &NoProgress)
            .await
            .unwrap();
        // The second backup changes the last three MiB: the first one's pack keeps one used MiB.
        for b in &mut data[1 << 20..] {
            *b = b.wrapping_mul(31).wrapping_add(7);
        }
        std::fs::write(&image, &data).unwrap();
        let file = Arc::new(std::fs::File::open(&image).unwrap());
        let second = target
            .backup(
                file,
                &[1 << 20..size],
                Some(&first.backup.backup),
                meta,
                &NoProgress,
            )
            .await
            .unwrap();
        target.delete(&first.backup).await.unwrap();
        let packs_bytes = || -> u64 {
            walk(&dir.path().join("store/packs"))
                .iter()
                .map(|p| std::fs::metadata(p).unwrap().len())
                .sum()
        };
        let before = packs_bytes();

        // A threshold out of range is refused and changes nothing.
        let err = compact(&dest, "", &key, 1.5, 1 << 30).await.unwrap_err();
        assert!(err.to_string().contains("threshold"), "{err}");
        assert_eq!(packs_bytes(), before);

        compact(&dest, "", &key, 0.5, 1 << 30).await.unwrap();
        let after = packs_bytes();
        assert!(
            after + (2 << 20) < before,
            "compaction freed too little: {before} -> {after} bytes of packs"
        );
        verify(&second.info.backup_url, "", &key).await.unwrap();
        let out = dir.path().join("restored");
        let sink = Arc::new(std::fs::File::create(&out).unwrap());
        target
            .restore(
                &second.backup,
                sink,
                &convoy_backupstore::RestoreOptions::default(),
                &NoProgress,
            )
            .await
            .unwrap();
        assert!(std::fs::read(&out).unwrap() == data, "restore differs");
        repair(&dest, "", &key).await.unwrap();
    }

    /// Every file under `dir`, recursively.
    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }

    #[tokio::test]
    async fn init_encrypted_then_keys_and_verify_need_the_secret() {
        for cipher in Cipher::ALL {
            init_keys_and_verify(cipher).await;
        }
    }

    async fn init_keys_and_verify(cipher: Cipher) {
        let dir = tempfile::tempdir().unwrap();
        let dest = format!("vfs://{}", dir.path().join("store").display());
        let pass = dir.path().join("pass");
        std::fs::write(&pass, "correct horse\n").unwrap();
        let by_file = KeyArgs {
            passphrase_file: Some(pass.clone()),
            ..Default::default()
        };
        init(&dest, "", &by_file, true, Some(cipher)).await.unwrap();
        let marker =
            std::fs::read_to_string(dir.path().join("store/convoy-backupstore.json")).unwrap();
        assert!(
            marker.contains(&format!("\"{}\"", cipher.name())),
            "{marker}"
        );
        let err = init(&dest, "", &by_file, true, Some(cipher))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("already a backup store"), "{err}");
        // A second slot through a command, then a backup and its verify with either secret.
        key(
            KeyCommand::Add {
                dest: dest.clone(),
                new_passphrase_file: None,
                new_key_file: None,
                new_passcmd: Some("echo second".into()),
            },
            "",
            &by_file,
        )
        .await
        .unwrap();
        let by_cmd = KeyArgs {
            backup_passcmd: Some("echo second".into()),
            ..Default::default()
        };
        let image = dir.path().join("image");
        let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
        std::fs::write(&image, &data).unwrap();
        let target = BackupTarget::open(&dest, options("", &by_cmd)).unwrap();
        let meta = BackupMeta {
            driver_name: "vfs".into(),
            volume_name: "v1".into(),
            volume_size: data.len() as u64,
            ..Default::default()
        };
        let file = Arc::new(std::fs::File::open(&image).unwrap());
        let done = target
            .backup(file, &[0..data.len() as u64], None, meta, &NoProgress)
            .await
            .unwrap();
        assert_eq!(done.info.encrypted, "true");
        let url = done.info.backup_url;
        verify(&url, "", &by_file).await.unwrap();
        verify(&url, "", &by_cmd).await.unwrap();
        let wrong = KeyArgs {
            backup_passcmd: Some("echo wrong".into()),
            ..Default::default()
        };
        let err = verify(&url, "", &wrong).await.unwrap_err().to_string();
        assert!(err.contains("opens none") && err.contains(&dest), "{err}");
        assert!(!err.contains("wrong\n") && !err.contains("echo"), "{err}");
    }
}
