//! The store marker's cipher and the key slots of an encrypted store: `keys/<slot>.json`, each
//! wrapping the store's master key under a key derived from a passphrase (Argon2id) or a key
//! file (BLAKE3). See `docs/backup-format.md`, "Encryption".

use std::time::SystemTime;

use bytes::Bytes;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::{hex, random, unhex, Cipher, KdfParams, Keys, Secret, SecretSource};
use crate::error::{BackupError, Result};
use crate::layout;
use crate::store::Store;

/// Prefix of the key slots.
pub(crate) fn keys_prefix() -> Path {
    Path::from("keys")
}

fn slot_key(slot: &str) -> Path {
    Path::from(format!("keys/{slot}.json"))
}

/// What the marker says about encryption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MarkerCipher {
    /// `"cipher": "none"`.
    None,
    /// An encrypted store: its id (`key_id`) and cipher.
    Sealed([u8; 16], Cipher),
}

/// Reads the marker: `None` when the store has none yet (a new store). Refuses other versions,
/// unknown ciphers and unreadable markers.
pub(crate) async fn read_marker(store: &Store) -> Result<Option<MarkerCipher>> {
    Ok(read_marker_journal(store).await?.map(|(c, _)| c))
}

/// [`read_marker`], with the pack deletion journal the marker holds (`None`: it has none, or
/// not a readable one).
pub(crate) async fn read_marker_journal(
    store: &Store,
) -> Result<Option<(MarkerCipher, Option<crate::gone::Journal>)>> {
    let Some(v) = read_marker_json(store).await? else {
        return Ok(None);
    };
    match v.get("version").and_then(|v| v.as_u64()) {
        Some(found) if found == u64::from(crate::FORMAT_VERSION) => {}
        Some(found) => {
            return Err(BackupError::UnsupportedFormat {
                what: format!("the store at {}", store.dest),
                found,
            })
        }
        None => return Err(unreadable_marker(store)),
    }
    let journal = crate::gone::Journal::from_marker(&v);
    let cipher = match v.get("cipher").and_then(|c| c.as_str()) {
        None | Some("none") => MarkerCipher::None,
        Some(name) => {
            let cipher = Cipher::from_name(name).ok_or_else(|| BackupError::Key {
                dest: store.dest.clone(),
                reason: format!(
                    "the store is encrypted with {name:?}, which this build does not support \
                     (it reads {})",
                    Cipher::ALL.map(|c| c.name()).join(" and ")
                ),
            })?;
            let id = v
                .get("key_id")
                .and_then(|k| k.as_str())
                .and_then(unhex)
                .and_then(|b| <[u8; 16]>::try_from(b).ok())
                .ok_or_else(|| unreadable_marker(store))?;
            MarkerCipher::Sealed(id, cipher)
        }
    };
    Ok(Some((cipher, journal)))
}

fn unreadable_marker(store: &Store) -> BackupError {
    BackupError::InvalidArgument(format!(
        "{} has an unreadable store marker {}",
        store.dest,
        layout::marker()
    ))
}

/// The marker's JSON as stored (not checked further), `None` if the store has none.
pub(crate) async fn read_marker_json(store: &Store) -> Result<Option<serde_json::Value>> {
    let Some(bytes) = store.get_opt(&layout::marker()).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|_| unreadable_marker(store))
}

/// The marker's JSON, with a new, empty pack deletion journal.
pub(crate) fn marker_body(cipher: &MarkerCipher) -> Vec<u8> {
    marker_body_with(cipher, &crate::gone::Journal::fresh())
}

/// The marker's JSON, with `journal`.
pub(crate) fn marker_body_with(cipher: &MarkerCipher, journal: &crate::gone::Journal) -> Vec<u8> {
    let (c, id) = match cipher {
        MarkerCipher::None => ("none", None),
        MarkerCipher::Sealed(id, cipher) => (cipher.name(), Some(hex(id))),
    };
    serde_json::to_vec(&serde_json::json!({
        "format": "convoy-backupstore",
        "version": crate::FORMAT_VERSION,
        "cipher": c,
        "key_id": id,
        crate::gone::FIELD: journal,
    }))
    .expect("json")
}

/// Key derivation of a slot.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "algorithm", rename_all = "lowercase")]
enum Kdf {
    /// Passphrase slots.
    Argon2id {
        version: u32,
        memory_kib: u32,
        iterations: u32,
        parallelism: u32,
    },
    /// Key file slots: `derive_key(context, salt | file content)`.
    Blake3,
}

/// One key slot object.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Slot {
    slot: String,
    kind: String,
    created: String,
    kdf: Kdf,
    salt: String,
    check: String,
    nonce: String,
    wrapped: String,
}

/// A key slot as `backup key list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SlotInfo {
    /// Slot name (what `backup key remove` takes).
    pub slot: String,
    /// `passphrase` or `keyfile`.
    pub kind: String,
    /// When it was added (RFC 3339).
    pub created: String,
    /// Key derivation, e.g. `argon2id m=65536KiB t=3 p=1`.
    pub kdf: String,
}

const SLOT_AAD: &[u8] = b"convoy-backupstore 2 key slot\0";
const CHECK_CONTEXT: &[u8] = b"convoy-backupstore 2 slot check";
const KEYFILE_CONTEXT: &str = "convoy-backupstore 2 key file slot";

/// Reads a secret off the async runtime (a passphrase command may take its time).
async fn read_secret(store: &Store, source: &SecretSource) -> Result<Secret> {
    let (source, dest) = (source.clone(), store.dest.clone());
    tokio::task::spawn_blocking(move || source.read(&dest))
        .await
        .map_err(|e| BackupError::Task(e.to_string()))?
}

fn key_err(store: &Store, reason: String) -> BackupError {
    BackupError::Key {
        dest: store.dest.clone(),
        reason,
    }
}

/// Derives a slot's wrapping key from `secret`; `None` when the secret is of the other kind.
async fn derive(
    store: &Store,
    slot: &Slot,
    secret: &Secret,
) -> Result<Option<Zeroizing<[u8; 32]>>> {
    let salt = unhex(&slot.salt)
        .filter(|s| s.len() >= 16)
        .ok_or_else(|| key_err(store, format!("key slot {} has a bad salt", slot.slot)))?;
    match (&slot.kdf, secret) {
        (
            Kdf::Argon2id {
                version,
                memory_kib,
                iterations,
                parallelism,
            },
            Secret::Passphrase(p),
        ) => {
            let bad = |why: String| {
                key_err(
                    store,
                    format!(
                        "key slot {} has unusable Argon2id parameters: {why}",
                        slot.slot
                    ),
                )
            };
            if *version != 0x13 || *memory_kib > (4 << 20) || *iterations > 64 || *parallelism > 16
            {
                return Err(bad(format!(
                    "version {version}, {memory_kib} KiB, {iterations} passes, {parallelism} lanes"
                )));
            }
            let params = argon2::Params::new(*memory_kib, *iterations, *parallelism, Some(32))
                .map_err(|e| bad(e.to_string()))?;
            if let Some(kek) = crate::kek_cache::get(&cache_input(slot, &salt, p)) {
                return Ok(Some(kek));
            }
            let p = p.clone();
            crate::kek_cache::RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let kek = crate::worker::run(move || {
                let mut out = Zeroizing::new([0u8; 32]);
                argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                    .hash_password_into(&p, &salt, &mut out[..])
                    .map(|()| out)
            })
            .await?
            .map_err(|e| bad(e.to_string()))?;
            Ok(Some(kek))
        }
        (Kdf::Blake3, Secret::KeyFile(k)) => {
            let mut h = blake3::Hasher::new_derive_key(KEYFILE_CONTEXT);
            h.update(&salt);
            h.update(k);
            Ok(Some(Zeroizing::new(*h.finalize().as_bytes())))
        }
        _ => Ok(None),
    }
}

/// What the process's derived-key cache keys an Argon2id slot's wrapping key by.
fn cache_input<'a>(
    slot: &Slot,
    salt: &'a [u8],
    passphrase: &'a [u8],
) -> crate::kek_cache::Input<'a> {
    let (version, memory_kib, iterations, parallelism) = match slot.kdf {
        Kdf::Argon2id {
            version,
            memory_kib,
            iterations,
            parallelism,
        } => (version, memory_kib, iterations, parallelism),
        Kdf::Blake3 => (0, 0, 0, 0),
    };
    crate::kek_cache::Input {
        salt,
        version,
        memory_kib,
        iterations,
        parallelism,
        passphrase,
    }
}

/// Keeps a passphrase slot's wrapping key once it has opened the slot (see `kek_cache`).
fn remember(slot: &Slot, secret: &Secret, kek: &Zeroizing<[u8; 32]>) {
    if let (Kdf::Argon2id { .. }, Secret::Passphrase(p)) = (&slot.kdf, secret) {
        if let Some(salt) = unhex(&slot.salt) {
            crate::kek_cache::put(&cache_input(slot, &salt, p), kek);
        }
    }
}

fn check_of(kek: &[u8; 32]) -> String {
    hex(&blake3::keyed_hash(kek, CHECK_CONTEXT).as_bytes()[..16])
}

fn slot_aad(store_id: &[u8; 16], slot: &str) -> Vec<u8> {
    let mut a = SLOT_AAD.to_vec();
    a.extend_from_slice(store_id);
    a.extend_from_slice(slot.as_bytes());
    a
}

/// Makes a new slot wrapping `master` under `secret`.
async fn make_slot(
    store: &Store,
    store_id: &[u8; 16],
    master: &[u8; 32],
    secret: &Secret,
    kdf: KdfParams,
) -> Result<Slot> {
    let mut name = [0u8; 4];
    random(&mut name)?;
    let mut salt = [0u8; 32];
    random(&mut salt)?;
    let mut nonce = [0u8; 24];
    random(&mut nonce)?;
    let (kind, kdf) = match secret {
        Secret::Passphrase(_) => (
            "passphrase",
            Kdf::Argon2id {
                version: 0x13,
                memory_kib: kdf.memory_kib,
                iterations: kdf.iterations,
                parallelism: kdf.parallelism,
            },
        ),
        Secret::KeyFile(_) => ("keyfile", Kdf::Blake3),
    };
    let mut slot = Slot {
        slot: hex(&name),
        kind: kind.into(),
        created: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        kdf,
        salt: hex(&salt),
        check: String::new(),
        nonce: hex(&nonce),
        wrapped: String::new(),
    };
    let kek = derive(store, &slot, secret)
        .await?
        .expect("the slot's kind follows the secret");
    slot.check = check_of(&kek);
    let wrapped = XChaCha20Poly1305::new((&*kek).into())
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: master,
                aad: &slot_aad(store_id, &slot.slot),
            },
        )
        .map_err(|_| BackupError::Task("sealing the key failed".into()))?;
    slot.wrapped = hex(&wrapped);
    Ok(slot)
}

/// Reads every key slot (name order). `BackupTarget::unlock` reads them beside the store
/// marker, before it knows the store is encrypted. The slots this host found last time
/// (`slot_hint`) are read beside the listing: an encrypted store whose slots did not change
/// opens in one round trip, otherwise in two.
pub(crate) async fn read_slots(store: &Store) -> Result<Slots> {
    let remembered = crate::slot_hint::read(store);
    let hinted: Vec<Path> = remembered.iter().map(|n| slot_key(n)).collect();
    let (listed, early) = futures::join!(
        store.list(&keys_prefix()).try_collect::<Vec<Path>>(),
        get_all(store, hinted)
    );
    let listed = listed?;
    // A hinted read that failed or found nothing is made again if the listing shows the slot.
    let mut bodies: std::collections::HashMap<Path, Bytes> = early
        .into_iter()
        .filter_map(|(k, r)| Some((k, r.ok()??)))
        .collect();
    let named: Vec<(String, Path)> = listed
        .into_iter()
        .filter_map(|k| {
            let name = k.filename()?.strip_suffix(".json")?.to_string();
            Some((name, k))
        })
        .collect();
    let unread: Vec<Path> = named
        .iter()
        .filter(|(_, k)| !bodies.contains_key(k))
        .map(|(_, k)| k.clone())
        .collect();
    for (k, r) in get_all(store, unread).await {
        if let Some(body) = r? {
            bodies.insert(k, body);
        }
    }
    let found: Vec<String> = named.iter().map(|(n, _)| n.clone()).collect();
    crate::slot_hint::update(store, &remembered, &found);
    let mut out: Slots = named
        .into_iter()
        .filter_map(|(name, k)| {
            // Gone between the listing and its read: not a slot any more.
            let body = bodies.get(&k)?;
            let parsed = serde_json::from_slice::<Slot>(body)
                .map_err(|e| format!("unreadable: {e}"))
                .and_then(|s| {
                    if s.slot == name {
                        Ok(s)
                    } else {
                        Err(format!("it names itself {:?}", s.slot))
                    }
                });
            Some((name, parsed))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Reads `keys` together (at most 8 at once); each object's body, or `None` if it is gone.
async fn get_all(store: &Store, keys: Vec<Path>) -> Vec<(Path, Result<Option<Bytes>>)> {
    futures::stream::iter(keys)
        .map(|k| async move {
            let r = store.get_opt(&k).await;
            (k, r)
        })
        .buffered(8)
        .collect()
        .await
}

/// The key slots of a store, by name: each parsed, or why it could not be.
pub(crate) type Slots = Vec<(String, std::result::Result<Slot, String>)>;

/// Opens the master key of store `store_id` with the secret from `source` (the tests' shortcut;
/// `BackupTarget::unlock` reads the slots beside the marker instead).
#[cfg(test)]
pub(crate) async fn unlock(
    store: &Store,
    store_id: [u8; 16],
    source: &SecretSource,
) -> Result<Keys> {
    let cipher = Cipher::preferred();
    open_slots(store, store_id, cipher, source, read_slots(store).await?).await
}

/// Opens the master key of store `store_id` with the secret from `source` and the store's key
/// slots, as [`read_slots`] read them. The secret is read only now, once the store is known to be
/// encrypted (a command given for it is not run for an unencrypted store).
pub(crate) async fn open_slots(
    store: &Store,
    store_id: [u8; 16],
    cipher: Cipher,
    source: &SecretSource,
    slots: Slots,
) -> Result<Keys> {
    let secret = read_secret(store, source).await?;
    if slots.is_empty() {
        return Err(key_err(
            store,
            "the store is encrypted but has no key slot under keys/ (deleted?): it cannot be opened"
                .into(),
        ));
    }
    let mut tried = Vec::new();
    let mut damaged = Vec::new();
    for (name, slot) in &slots {
        let slot = match slot {
            Ok(s) => s,
            Err(why) => {
                damaged.push(format!("{name} ({why})"));
                continue;
            }
        };
        let Some(kek) = derive(store, slot, &secret).await? else {
            continue;
        };
        tried.push(name.clone());
        if check_of(&kek) != slot.check {
            continue;
        }
        let altered = || {
            key_err(
                store,
                format!(
                    "key slot {name} is damaged or altered: the secret matches its check value \
                     but the wrapped key fails to authenticate"
                ),
            )
        };
        let nonce = unhex(&slot.nonce)
            .filter(|n| n.len() == 24)
            .ok_or_else(altered)?;
        let wrapped = unhex(&slot.wrapped).ok_or_else(altered)?;
        let master = XChaCha20Poly1305::new((&*kek).into())
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &wrapped,
                    aad: &slot_aad(&store_id, name),
                },
            )
            .map_err(|_| altered())?;
        let master = Zeroizing::new(master);
        let master: [u8; 32] = master[..].try_into().map_err(|_| altered())?;
        remember(slot, &secret, &kek);
        return Ok(Keys::new(store_id, master, cipher));
    }
    let kind = match secret {
        Secret::Passphrase(_) => "passphrase",
        Secret::KeyFile(_) => "keyfile",
    };
    let mut reason = if tried.is_empty() {
        format!(
            "{source} is a {kind}, and none of the store's key slots ({}) is a {kind} slot",
            slots
                .iter()
                .map(|(n, s)| match s {
                    Ok(s) => format!("{n}: {}", s.kind),
                    Err(_) => n.clone(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        format!(
            "{source} opens none of its {kind} key slots ({}): wrong {kind}, or the slot was altered",
            tried.join(", ")
        )
    };
    if !damaged.is_empty() {
        reason.push_str(&format!("; damaged key slots: {}", damaged.join(", ")));
    }
    Err(key_err(store, reason))
}

/// Creates the key material of a new encrypted store sealed with `cipher`, and its first slot;
/// returns the store id, the keys and the slot name. The caller writes the marker afterwards.
pub(crate) async fn create(
    store: &Store,
    source: &SecretSource,
    kdf: KdfParams,
    cipher: Cipher,
) -> Result<([u8; 16], Keys, String)> {
    let secret = read_secret(store, source).await?;
    let mut store_id = [0u8; 16];
    random(&mut store_id)?;
    let mut master = Zeroizing::new([0u8; 32]);
    random(&mut master[..])?;
    let slot = make_slot(store, &store_id, &master, &secret, kdf).await?;
    write_slot(store, &slot).await?;
    crate::slot_hint::add(store, &slot.slot);
    Ok((store_id, Keys::new(store_id, *master, cipher), slot.slot))
}

async fn write_slot(store: &Store, slot: &Slot) -> Result<()> {
    let body = serde_json::to_vec_pretty(slot).expect("json");
    if !store.put_new(&slot_key(&slot.slot), body).await? {
        return Err(key_err(
            store,
            format!("key slot {} exists already", slot.slot),
        ));
    }
    Ok(())
}

/// Adds a slot for the secret from `source` to an unlocked store; returns its name.
pub(crate) async fn add(
    store: &Store,
    keys: &Keys,
    source: &SecretSource,
    kdf: KdfParams,
) -> Result<String> {
    let secret = read_secret(store, source).await?;
    let slot = make_slot(store, &keys.store_id, keys.master(), &secret, kdf).await?;
    write_slot(store, &slot).await?;
    crate::slot_hint::add(store, &slot.slot);
    Ok(slot.slot)
}

/// Removes slot `name` of an unlocked store, unless it is the last one.
pub(crate) async fn remove(store: &Store, name: &str) -> Result<()> {
    let slots = read_slots(store).await?;
    if !slots.iter().any(|(n, _)| n == name) {
        return Err(key_err(
            store,
            format!(
                "no key slot {name:?} (slots: {})",
                slots
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    if !slots.iter().any(|(n, s)| n != name && s.is_ok()) {
        return Err(key_err(
            store,
            format!("key slot {name} is the store's last usable slot; add another one first"),
        ));
    }
    store.delete(&slot_key(name)).await?;
    crate::slot_hint::remove(store, name);
    Ok(())
}

/// Lists the slots (no key needed).
pub(crate) async fn list(store: &Store) -> Result<Vec<SlotInfo>> {
    Ok(read_slots(store)
        .await?
        .into_iter()
        .map(|(name, s)| match s {
            Ok(s) => SlotInfo {
                slot: name,
                kind: s.kind,
                created: s.created,
                kdf: match s.kdf {
                    Kdf::Argon2id {
                        memory_kib,
                        iterations,
                        parallelism,
                        ..
                    } => format!("argon2id m={memory_kib}KiB t={iterations} p={parallelism}"),
                    Kdf::Blake3 => "blake3 (key file)".into(),
                },
            },
            Err(why) => SlotInfo {
                slot: name,
                kind: "damaged".into(),
                created: String::new(),
                kdf: why,
            },
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kek_cache::RUNS;
    use crate::options::TargetOptions;
    use std::sync::atomic::Ordering;

    fn pass(p: &str) -> SecretSource {
        SecretSource::Passphrase(Zeroizing::new(p.to_owned()))
    }

    fn runs() -> u64 {
        RUNS.load(Ordering::Relaxed)
    }

    // The only test of this binary that runs Argon2id, so the run counter is its own.
    #[tokio::test]
    async fn a_passphrase_is_derived_once_per_slot_and_a_removed_slot_still_fails() {
        let dir = tempfile::tempdir().unwrap();
        let opts = TargetOptions {
            kdf: KdfParams::insecure_fast(),
            ..TargetOptions::default()
        };
        let store = Store::open(&format!("vfs://{}", dir.path().display()), &opts).unwrap();
        let (id, keys, first) = create(&store, &pass("one"), opts.kdf, Cipher::preferred())
            .await
            .unwrap();
        let before = runs();
        unlock(&store, id, &pass("one")).await.unwrap();
        assert_eq!(runs() - before, 1, "the first open derives");
        for _ in 0..3 {
            let k = unlock(&store, id, &pass("one")).await.unwrap();
            assert_eq!(k.master(), keys.master());
        }
        assert_eq!(runs() - before, 1, "later opens reuse the derived key");
        // A wrong passphrase is derived (and refused) every time: only successes are kept.
        for _ in 0..2 {
            let e = unlock(&store, id, &pass("two")).await.unwrap_err();
            assert!(e.to_string().contains("opens none"), "{e}");
        }
        assert_eq!(runs() - before, 3);
        // With the slot gone, the cached key opens nothing.
        let second = add(&store, &keys, &pass("two"), opts.kdf).await.unwrap();
        remove(&store, &first).await.unwrap();
        let e = unlock(&store, id, &pass("one")).await.unwrap_err();
        assert!(e.to_string().contains("opens none"), "{e}");
        unlock(&store, id, &pass("two")).await.unwrap();
        assert_ne!(first, second);
    }
}
