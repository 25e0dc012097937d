//! Encrypted stores, on `vfs://` and on S3 (s3s-fs in this process): nothing of the data or
//! its ids in any object, keys and slots, and tampering of every object kind detected and
//! named. Argon2id runs with tiny parameters ([`KdfParams::insecure_fast`]) to stay fast.

#![allow(clippy::single_range_in_vec_init)]

use crate::support;

use std::path::{Path, PathBuf};

use convoy_backupstore::{
    BackupError, BackupTarget, KdfParams, NoProgress, SecretSource, TargetOptions,
};
use support::*;
use zeroize::Zeroizing;

const C: u64 = CHUNK as u64;
const MARKER: &[u8] = b"CONVOY-SECRET-MARKER-7f3a";

fn pass(p: &str) -> SecretSource {
    SecretSource::Passphrase(Zeroizing::new(p.to_string()))
}

fn opts_with(env: &Env, secret: Option<SecretSource>) -> TargetOptions {
    let mut o = env.opts.clone();
    o.secret = secret;
    o.kdf = KdfParams::insecure_fast();
    o
}

fn target_with(env: &Env, secret: Option<SecretSource>) -> BackupTarget {
    BackupTarget::open(&env.dest, opts_with(env, secret)).unwrap()
}

/// Makes the store encrypted with passphrase "first"; returns a target opened with it.
async fn encrypted(env: &Env) -> BackupTarget {
    let t = target_with(env, Some(pass("first")));
    let slot = t.init(true).await.unwrap();
    assert!(slot.is_some());
    assert!(t.is_encrypted().await.unwrap());
    t
}

/// An image whose every chunk is the marker repeated (compressible: zstd keeps it visible in
/// the clear) or random data.
fn marked_image(chunks: u64, seed: u64) -> Image {
    let img = Image::new(chunks * C, seed);
    for i in (0..chunks).step_by(2) {
        let mut chunk = MARKER.repeat(CHUNK as usize / MARKER.len() + 1);
        chunk.truncate(CHUNK as usize);
        chunk[..8].copy_from_slice(&i.to_le_bytes());
        img.write(i * C, &chunk);
    }
    img
}

fn all_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                dirs.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Counts files and their total size, to show that a refused operation wrote nothing.
fn snapshot(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = all_files(root)
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    v.sort();
    v
}

async fn marker_never_stored(env: Env) {
    let cache = tempfile::tempdir().unwrap();
    let mut o = opts_with(&env, Some(pass("first")));
    o.cache_dir = Some(cache.path().to_path_buf());
    let t = BackupTarget::open(&env.dest, o.clone()).unwrap();
    t.init(true).await.unwrap();
    let cipher = o
        .cipher
        .unwrap_or_else(convoy_backupstore::Cipher::preferred);
    let marker = std::fs::read_to_string(env.objects_root.join("convoy-backupstore.json")).unwrap();
    assert!(
        marker.contains(&format!("\"cipher\":\"{}\"", cipher.name())),
        "{marker}"
    );
    let img = marked_image(16, 3);
    let full = full_backup(&t, &img, "secretvol").await;
    assert_eq!(full.info.encrypted, "true");
    // An incremental after a change, through a fresh target (index from the cache on S3).
    let mut changed = MARKER.repeat(100);
    changed.extend_from_slice(b"changed");
    img.write(3 * C, &changed);
    let t2 = BackupTarget::open(&env.dest, o).unwrap();
    let inc = t2
        .backup(
            img.file.clone(),
            &[3 * C..4 * C],
            Some(&full.backup.backup),
            meta("secretvol", img.size),
            &NoProgress,
        )
        .await
        .unwrap();
    let (got, _) = restore_bytes(&t2, &inc.backup, img.size).await.unwrap();
    assert!(got == img.bytes());
    // Plain BLAKE3 ids of the chunks: an attacker could look known content up by them.
    let bytes = img.bytes();
    let ids: Vec<[u8; 32]> = bytes
        .chunks(CHUNK as usize)
        .map(|c| *blake3::hash(c).as_bytes())
        .collect();
    let hex_ids: Vec<String> = ids
        .iter()
        .map(|i| i.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    let mut scanned = 0;
    for root in [env.objects_root.as_path(), cache.path()] {
        for f in all_files(root) {
            let b = std::fs::read(&f).unwrap();
            let name = f.to_string_lossy().to_string();
            assert!(!contains(&b, MARKER), "marker in {name}");
            for (id, hex) in ids.iter().zip(&hex_ids) {
                assert!(!contains(&b, id), "a plain chunk id in {name}");
                assert!(
                    !name.contains(hex.as_str()),
                    "a plain chunk id names {name}"
                );
            }
            if f.starts_with(env.objects_root.join("refs")) {
                assert!(!name.contains("secretvol"), "volume name in {name}");
            }
            scanned += b.len();
        }
    }
    assert!(scanned > 4 * CHUNK as usize, "scanned only {scanned} bytes");
    // The cache held the sealed indexes (S3 only; vfs reads packs directly).
    if env.is_s3 {
        assert!(!all_files(cache.path()).is_empty());
    }
}

async fn wrong_and_missing_key(env: Env) {
    let t = encrypted(&env).await;
    let img = marked_image(4, 5);
    let done = full_backup(&t, &img, "vv").await;
    let before = snapshot(&env.objects_root);
    let cases = [
        (None, "no key was given"),
        (
            Some(pass("wrong")),
            "opens none of its passphrase key slots",
        ),
        (
            Some(SecretSource::Env("CONVOY_TEST_UNSET_PASSPHRASE".into())),
            "not set",
        ),
        (
            Some(SecretSource::Command("exit 3".into())),
            "the command failed",
        ),
    ];
    for (secret, why) in cases {
        let t = target_with(&env, secret);
        let b = t
            .backup(
                img.file.clone(),
                &[0..img.size],
                None,
                meta("vv", img.size),
                &NoProgress,
            )
            .await
            .unwrap_err();
        let r = restore_bytes(&t, &done.backup, img.size).await.unwrap_err();
        let l = t.list(None).await.unwrap_err();
        let d = t.delete(&done.backup).await.unwrap_err();
        for e in [b, r, l, d] {
            assert!(matches!(e, BackupError::Key { .. }), "{e}");
            let s = e.to_string();
            assert!(s.contains(&env.dest) && s.contains(why), "{s}");
            assert!(!s.contains("wrong\""), "the secret in {s}");
        }
        // Nothing was written (no lock record, no pack, no reference).
        assert!(
            snapshot(&env.objects_root) == before,
            "a refused call wrote"
        );
    }
    // A key for an unencrypted store: backups refuse it (a replaced marker cannot turn
    // encryption off), reads do not need it.
    let plain = Env::local().await;
    let p = target_with(&plain, Some(pass("first")));
    let e = p
        .backup(
            img.file.clone(),
            &[0..img.size],
            None,
            meta("vv", img.size),
            &NoProgress,
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not encrypted"), "{e}");
    assert!(all_files(&plain.objects_root).is_empty());
    let init_again = t.init(true).await.unwrap_err();
    assert!(init_again.to_string().contains("already a backup store"));
}

fn flip(path: &Path, at_from_end: Option<usize>, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    let i = match at_from_end {
        Some(n) => b.len() - n,
        None => at,
    };
    b[i] ^= 0x20;
    std::fs::write(path, b).unwrap();
}

async fn tampering_is_detected_and_named(env: Env) {
    let t = encrypted(&env).await;
    let img = marked_image(8, 7);
    let a = full_backup(&t, &img, "va").await;
    let packs_a = env.pack_files();
    assert_eq!(packs_a.len(), 1);
    let pack_a = packs_a[0].clone();
    let b = full_backup(&t, &Image::new(8 * C, 11), "vb").await;
    let packs = env.pack_files();
    assert_eq!(packs.len(), 2);
    let manifests = |v: &str, name: &str| {
        env.objects_root
            .join(format!("volumes/{v}/backups/{name}.manifest"))
    };
    let ma = manifests("va", &a.backup.backup);
    let mb = manifests("vb", &b.backup.backup);

    // A manifest: one byte altered, truncated, or another backup's manifest in its place.
    let orig = std::fs::read(&ma).unwrap();
    for (what, bytes) in [
        ("altered", {
            let mut x = orig.clone();
            x[orig.len() / 2] ^= 1;
            x
        }),
        ("truncated", orig[..orig.len() - 10].to_vec()),
        ("swapped", std::fs::read(&mb).unwrap()),
    ] {
        std::fs::write(&ma, &bytes).unwrap();
        let e = t.inspect(&a.backup).await.unwrap_err();
        let v = t.verify(&a.backup, &NoProgress).await.unwrap_err();
        for e in [e, v] {
            assert!(
                matches!(&e, BackupError::CorruptManifest { backup, .. } if *backup == a.backup.backup),
                "{what}: {e}"
            );
        }
    }
    std::fs::write(&ma, &orig).unwrap();
    t.verify(&a.backup, &NoProgress).await.unwrap();

    // A block inside a pack.
    let porig = std::fs::read(&pack_a).unwrap();
    flip(&pack_a, None, 16 + 40);
    let e = t.verify(&a.backup, &NoProgress).await.unwrap_err();
    assert!(matches!(e, BackupError::CorruptBlock { .. }), "{e}");
    assert!(e.to_string().contains("authenticate"), "{e}");
    std::fs::write(&pack_a, &porig).unwrap();

    // A pack's index: the next backup, which loads every index, names the pack (with an empty
    // index cache: on S3 a cached index is trusted while its pack is listed).
    flip(&pack_a, Some(48 + 20), 0);
    let fresh_cache = tempfile::tempdir().unwrap();
    let mut o = opts_with(&env, Some(pass("first")));
    o.cache_dir = Some(fresh_cache.path().to_path_buf());
    let e = BackupTarget::open(&env.dest, o)
        .unwrap()
        .backup(
            img.file.clone(),
            &[0..img.size],
            None,
            meta("vc", img.size),
            &NoProgress,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, BackupError::CorruptPack { .. }), "{e}");
    assert!(e
        .to_string()
        .contains(&pack_a.file_name().unwrap().to_string_lossy().to_string()));
    std::fs::write(&pack_a, &porig).unwrap();

    // A pack truncated, and another pack's bytes under its name (swapped).
    std::fs::write(&pack_a, &porig[..porig.len() / 2]).unwrap();
    let e = t.verify(&a.backup, &NoProgress).await.unwrap_err();
    assert!(
        matches!(
            e,
            BackupError::CorruptBlock { .. }
                | BackupError::MissingBlock { .. }
                | BackupError::Store { .. }
        ),
        "{e}"
    );
    let other = packs.iter().find(|p| **p != pack_a).unwrap();
    std::fs::write(&pack_a, std::fs::read(other).unwrap()).unwrap();
    let e = t.verify(&a.backup, &NoProgress).await.unwrap_err();
    assert!(matches!(e, BackupError::CorruptBlock { .. }), "{e}");
    std::fs::write(&pack_a, &porig).unwrap();
    t.verify(&a.backup, &NoProgress).await.unwrap();
    t.verify(&b.backup, &NoProgress).await.unwrap();

    // A key slot: the wrapped key altered (named), the salt altered (no slot opens).
    let slots = all_files(&env.objects_root.join("keys"));
    assert_eq!(slots.len(), 1);
    let sorig = std::fs::read_to_string(&slots[0]).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&sorig).unwrap();
    let wrapped = v["wrapped"].as_str().unwrap().to_string();
    let altered = format!(
        "{}{}",
        if wrapped.starts_with('0') { "1" } else { "0" },
        &wrapped[1..]
    );
    v["wrapped"] = altered.into();
    std::fs::write(&slots[0], serde_json::to_vec(&v).unwrap()).unwrap();
    let e = target_with(&env, Some(pass("first")))
        .verify(&a.backup, &NoProgress)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("damaged or altered"), "{e}");
    let mut v: serde_json::Value = serde_json::from_str(&sorig).unwrap();
    v["salt"] = "00".repeat(32).into();
    std::fs::write(&slots[0], serde_json::to_vec(&v).unwrap()).unwrap();
    let e = target_with(&env, Some(pass("first")))
        .verify(&a.backup, &NoProgress)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("or the slot was altered"), "{e}");
    std::fs::write(&slots[0], &sorig).unwrap();
    target_with(&env, Some(pass("first")))
        .verify(&a.backup, &NoProgress)
        .await
        .unwrap();
}

async fn slots_add_remove_then_restore_with_each(env: Env) {
    let t = encrypted(&env).await;
    let first_slot = t.key_list().await.unwrap()[0].slot.clone();
    let keyfile_dir = tempfile::tempdir().unwrap();
    let keyfile = keyfile_dir.path().join("key");
    std::fs::write(&keyfile, support::noise(64, 99)).unwrap();
    let k_slot = t
        .key_add(&SecretSource::KeyFile(keyfile.clone()))
        .await
        .unwrap();
    let passfile = keyfile_dir.path().join("pass");
    std::fs::write(&passfile, "second passphrase\n").unwrap();
    let p_slot = t
        .key_add(&SecretSource::PassphraseFile(passfile.clone()))
        .await
        .unwrap();
    let list = t.key_list().await.unwrap();
    assert_eq!(list.len(), 3, "{list:?}");
    assert!(list.iter().any(|s| s.slot == k_slot && s.kind == "keyfile"));
    assert!(list
        .iter()
        .any(|s| s.slot == p_slot && s.kind == "passphrase" && s.kdf.contains("argon2id")));
    let img = marked_image(6, 13);
    let done = full_backup(&t, &img, "vv").await;
    // Remove the first slot, opening the store with the key file.
    let by_file = target_with(&env, Some(SecretSource::KeyFile(keyfile.clone())));
    by_file.key_remove(&first_slot).await.unwrap();
    assert_eq!(t.key_list().await.unwrap().len(), 2);
    let e = target_with(&env, Some(pass("first")))
        .list(None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("opens none"), "{e}");
    for secret in [
        SecretSource::KeyFile(keyfile.clone()),
        SecretSource::PassphraseFile(passfile.clone()),
        SecretSource::Command(format!("cat {}", passfile.display())),
    ] {
        let t = target_with(&env, Some(secret));
        let (got, _) = restore_bytes(&t, &done.backup, img.size).await.unwrap();
        assert!(got == img.bytes());
    }
    // The last usable slot stays.
    by_file.key_remove(&p_slot).await.unwrap();
    let e = by_file.key_remove(&k_slot).await.unwrap_err();
    assert!(e.to_string().contains("last usable slot"), "{e}");
    let e = by_file.key_remove("nope").await.unwrap_err();
    assert!(e.to_string().contains("no key slot"), "{e}");
}

async fn dedup_across_volumes_encrypted(env: Env) {
    let t = encrypted(&env).await;
    let img = marked_image(12, 17);
    let a = full_backup(&t, &img, "vola").await;
    assert!(a.stats.blocks_uploaded > 1);
    let b = full_backup(&target_with(&env, Some(pass("first"))), &img, "volb").await;
    assert_eq!(b.stats.blocks_uploaded, 0, "{:?}", b.stats);
    assert_eq!(env.pack_files().len() as u64, a.stats.packs_uploaded);
    t.delete(&a.backup).await.unwrap();
    let (got, _) = restore_bytes(&t, &b.backup, img.size).await.unwrap();
    assert!(got == img.bytes());
    t.delete(&b.backup).await.unwrap();
    assert_eq!(env.pack_files().len(), 0);
    assert_eq!(env.files_under("refs").len(), 0);
    // Repair keeps the references of live backups (their names are keyed hashes).
    let c = full_backup(&t, &img, "volc").await;
    let stats = t.repair().await.unwrap();
    assert_eq!(stats.refs_removed, 0, "{stats:?}");
    assert_eq!(stats.packs_removed, 0, "{stats:?}");
    t.verify(&c.backup, &NoProgress).await.unwrap();
    let listed = t.list(None).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed.values().all(|i| i.encrypted == "true"));
}

/// Objects of another encrypted store (another master key and store id) under the same names
/// fail to open, and a plain store's manifest in an encrypted store is refused.
async fn objects_from_another_store_fail(env: Env) {
    let t = encrypted(&env).await;
    let img = marked_image(4, 19);
    let mut m = meta("vv", img.size);
    m.backup_name = Some("same".into());
    let mine = t
        .backup(
            img.file.clone(),
            &[0..img.size],
            None,
            m.clone(),
            &NoProgress,
        )
        .await
        .unwrap();
    let manifest = env.objects_root.join("volumes/vv/backups/same.manifest");
    let original = std::fs::read(&manifest).unwrap();
    for encrypt in [true, false] {
        let other = Env::local().await;
        let o = target_with(&other, Some(pass("first")));
        o.init(encrypt).await.unwrap();
        let o = target_with(&other, encrypt.then(|| pass("first")));
        o.backup(
            img.file.clone(),
            &[0..img.size],
            None,
            m.clone(),
            &NoProgress,
        )
        .await
        .unwrap();
        let theirs = other.objects_root.join("volumes/vv/backups/same.manifest");
        std::fs::copy(&theirs, &manifest).unwrap();
        let e = t.verify(&mine.backup, &NoProgress).await.unwrap_err();
        assert!(
            matches!(&e, BackupError::CorruptManifest { .. }),
            "encrypted {encrypt}: {e}"
        );
        std::fs::write(&manifest, &original).unwrap();
    }
    t.verify(&mine.backup, &NoProgress).await.unwrap();
}

/// Registers each scenario on `vfs://` and S3 with the cipher this machine chooses for a new
/// store (`vfs::name`, `s3::name`), and on `vfs://` with the other one (`other_cipher::name`:
/// XChaCha20-Poly1305 where the CPU has AES instructions), so that both ciphers are proven on
/// every machine. One list, so that a new scenario runs under both.
macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        conformance!($($name),*);

        mod other_cipher {
            use convoy_backupstore::Cipher;

            async fn env() -> super::support::Env {
                let mut env = super::support::Env::local().await;
                let other = Cipher::ALL.into_iter().find(|c| *c != Cipher::preferred());
                env.opts.cipher = Some(other.expect("two ciphers"));
                env
            }

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(env().await).await
                }
            )*
        }
    };
}

scenarios!(
    objects_from_another_store_fail,
    marker_never_stored,
    wrong_and_missing_key,
    tampering_is_detected_and_named,
    slots_add_remove_then_restore_with_each,
    dedup_across_volumes_encrypted,
);
