//! Stores for the compaction tests: backups sharing packs, some deleted, so that packs are
//! partly used; and the checks every compaction test ends with.

use std::path::{Path, PathBuf};

use convoy_backupstore::{BackupRef, BackupTarget, KdfParams, NoProgress, SecretSource};
use zeroize::Zeroizing;

use super::*;

const C: u64 = CHUNK as u64;
/// Chunks per test volume.
pub const CHUNKS: u64 = 32;

/// The backups a test keeps, each with the image bytes it must restore to.
pub type Kept = Vec<(BackupRef, Vec<u8>)>;

/// Overwrites `chunks` of `img` with fresh random data; returns the changed ranges.
pub fn scribble(img: &Image, chunks: &[u64], seed: u64) -> Vec<std::ops::Range<u64>> {
    chunks
        .iter()
        .map(|&i| {
            img.write(i * C, &noise(C as usize, seed * 100 + i));
            i * C..(i + 1) * C
        })
        .collect()
}

/// An incremental backup of `img` after `changed`.
pub async fn incremental(
    t: &BackupTarget,
    img: &Image,
    volume: &str,
    parent: &BackupRef,
    changed: &[std::ops::Range<u64>],
) -> BackupRef {
    t.backup(
        img.file.clone(),
        changed,
        Some(&parent.backup),
        meta(volume, img.size),
        &NoProgress,
    )
    .await
    .unwrap()
    .backup
}

/// Random chunks of an image made with `seed` ((i + seed) % 4 is 2 or 3).
pub fn random_chunks(seed: u64) -> Vec<u64> {
    (0..CHUNKS).filter(|i| (i + seed) % 4 >= 2).collect()
}

/// Three volumes: `va` (a full backup and an incremental rewriting most of it, the full one
/// then deleted, so its packs are mostly unused), `vb` (a full backup, its packs wholly used)
/// and `vc` (a full backup of `va`'s latest data with a few chunks changed: it deduplicates
/// against `va`'s packs). Returns the backups kept.
pub async fn sharing_store(t: &BackupTarget) -> Kept {
    let a = Image::new(CHUNKS * C, 21);
    let a0 = full_backup(t, &a, "va").await.backup;
    let randoms = random_chunks(21);
    let changed = scribble(&a, &randoms[..12], 1);
    let a1 = incremental(t, &a, "va", &a0, &changed).await;
    let a1_bytes = a.bytes();
    let b = Image::new(CHUNKS * C, 22);
    let b0 = full_backup(t, &b, "vb").await.backup;
    scribble(&a, &randoms[12..14], 2);
    let c0 = full_backup(t, &a, "vc").await.backup;
    t.delete(&a0).await.unwrap();
    vec![(a1, a1_bytes), (b0, b.bytes()), (c0, a.bytes())]
}

/// Every kept backup restores bit-exact and verifies.
pub async fn check_all(t: &BackupTarget, kept: &Kept, when: &str) {
    for (r, bytes) in kept {
        let (got, _) = restore_bytes(t, r, bytes.len() as u64)
            .await
            .unwrap_or_else(|e| panic!("{when}: restore of {} failed: {e}", r.backup));
        assert!(&got == bytes, "{when}: {} restores wrong data", r.backup);
        t.verify(r, &NoProgress)
            .await
            .unwrap_or_else(|e| panic!("{when}: verify of {} failed: {e}", r.backup));
    }
}

/// Bytes of every pack object.
pub fn stored_bytes(env: &Env) -> u64 {
    env.pack_files()
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

/// Forwarding object files.
pub fn forward_files(env: &Env) -> Vec<PathBuf> {
    env.files_under("moved")
        .into_iter()
        .filter(|p| p.file_name().unwrap().len() == 64)
        .collect()
}

/// Deletes every kept backup; then the store holds no pack, forwarding object or record.
pub async fn delete_all_leaves_nothing(env: &Env, t: &BackupTarget, kept: &Kept) {
    for (r, _) in kept {
        t.delete(r).await.unwrap();
    }
    assert_eq!(env.pack_files().len(), 0, "{:?}", env.pack_files());
    assert_eq!(forward_files(env).len(), 0, "{:?}", forward_files(env));
    assert_eq!(
        env.files_under("refs").len(),
        0,
        "{:?}",
        env.files_under("refs")
    );
    assert_eq!(env.files_under("moved").len(), 0);
    assert_eq!(t.repair().await.unwrap(), Default::default());
}

/// Copies a directory tree (every file, hidden ones too).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let dest = to.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// Replaces the store's objects with a copy of `template`.
pub fn reset_to(env: &Env, template: &Path) {
    let _ = std::fs::remove_dir_all(&env.objects_root);
    copy_tree(template, &env.objects_root);
}

/// The invariants compaction leaves (plain stores: an encrypted forwarding object's entries
/// are sealed): every forwarding object names only packs that exist (chains are flat), each
/// of which has the forward record `refs/<target>/from=<pack>`; every forward record is backed
/// by its forwarding object; no compacted pack is still there. Returns forwarding objects seen.
pub fn check_forwards(env: &Env, when: &str) -> usize {
    let root = &env.objects_root;
    let mut seen = 0;
    for f in forward_files(env) {
        let pack = f.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(&f).unwrap();
        assert_eq!(&bytes[..8], b"CVMOVE02", "{when}: {f:?}");
        assert!(
            !root.join(format!("packs/{}/{pack}", &pack[..2])).exists(),
            "{when}: compacted pack {pack} is still there"
        );
        seen += 1;
        if bytes[8] != 0 {
            continue;
        }
        let n = u32::from_le_bytes(bytes[48..52].try_into().unwrap()) as usize;
        assert!(n > 0, "{when}: empty forwarding object {pack}");
        for i in 0..n {
            let at = 52 + i * 44 + 8;
            let target: String = bytes[at..at + 32]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert!(
                root.join(format!("packs/{}/{target}", &target[..2]))
                    .exists(),
                "{when}: {pack} forwards to {target}, which is not a pack (a chain or a loss)"
            );
            assert!(
                root.join(format!("refs/{target}/from={pack}")).exists(),
                "{when}: {pack} forwards to {target} without the record refs/{target}/from={pack}"
            );
        }
    }
    for r in env.files_under("refs") {
        let name = r.file_name().unwrap().to_string_lossy().to_string();
        if let Some(from) = name.strip_prefix("from=") {
            assert!(
                root.join(format!("moved/{}/{from}", &from[..2])).exists(),
                "{when}: forward record {r:?} without its forwarding object"
            );
        }
    }
    seen
}

/// A new encrypted store at `env`'s destination (passphrase "pw", fast KDF) and its target.
pub async fn encrypted_target(env: &Env) -> BackupTarget {
    let mut o = env.opts.clone();
    o.secret = Some(SecretSource::Passphrase(Zeroizing::new("pw".into())));
    o.kdf = KdfParams::insecure_fast();
    let t = BackupTarget::open(&env.dest, o).unwrap();
    t.init(true).await.unwrap();
    t
}
