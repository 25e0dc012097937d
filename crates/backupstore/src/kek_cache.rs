//! Wrapping keys derived by Argon2id in this process.
//!
//! A daemon opens the same encrypted store for every backup, restore and listing (a policy's runs,
//! each CLI command). Deriving a passphrase slot's wrapping key costs an Argon2id run (about
//! 0.1–0.3 s and 64 MiB at the default cost), which dominated a small incremental backup. The
//! derived key is kept here after it has opened a slot, and reused when the same passphrase meets
//! the same slot again: same salt, same parameters.
//!
//! What is kept: the wrapping key, in zeroized memory, under a fingerprint that is a BLAKE3 hash
//! keyed with a random key of this process over (salt, parameters, passphrase) — no passphrase
//! and no unkeyed hash of one. The slot object is still read and checked on every open, so a
//! removed slot no longer opens the store and a changed passphrase derives afresh. The table is
//! bounded; the oldest entry goes first.

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use zeroize::Zeroizing;

/// Entries kept (slots × passphrases this process has opened).
const ENTRIES: usize = 32;

struct Cache {
    fingerprint_key: [u8; 32],
    entries: VecDeque<([u8; 32], Zeroizing<[u8; 32]>)>,
}

static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

/// Argon2id runs this process has made (for tests: `testing::argon2_runs`).
pub(crate) static RUNS: AtomicU64 = AtomicU64::new(0);

/// What an Argon2id derivation depends on.
pub(crate) struct Input<'a> {
    pub salt: &'a [u8],
    pub version: u32,
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    pub passphrase: &'a [u8],
}

fn fingerprint(key: &[u8; 32], i: &Input<'_>) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(&(i.salt.len() as u64).to_le_bytes());
    h.update(i.salt);
    for n in [i.version, i.memory_kib, i.iterations, i.parallelism] {
        h.update(&n.to_le_bytes());
    }
    h.update(&(i.passphrase.len() as u64).to_le_bytes());
    h.update(i.passphrase);
    *h.finalize().as_bytes()
}

fn with_cache<T>(f: impl FnOnce(&mut Cache) -> T) -> Option<T> {
    let mut guard = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if guard.is_none() {
        let mut fingerprint_key = [0u8; 32];
        // Without randomness there is no cache (every open derives), never a guessable key.
        crate::crypto::random(&mut fingerprint_key).ok()?;
        *guard = Some(Cache {
            fingerprint_key,
            entries: VecDeque::new(),
        });
    }
    guard.as_mut().map(f)
}

/// The wrapping key derived earlier from exactly this input, if any.
pub(crate) fn get(i: &Input<'_>) -> Option<Zeroizing<[u8; 32]>> {
    with_cache(|c| {
        let fp = fingerprint(&c.fingerprint_key, i);
        c.entries
            .iter()
            .find(|(f, _)| *f == fp)
            .map(|(_, k)| k.clone())
    })
    .flatten()
}

/// Keeps `kek`, derived from `i`, after it has opened a slot.
pub(crate) fn put(i: &Input<'_>, kek: &Zeroizing<[u8; 32]>) {
    with_cache(|c| {
        let fp = fingerprint(&c.fingerprint_key, i);
        if c.entries.iter().any(|(f, _)| *f == fp) {
            return;
        }
        if c.entries.len() >= ENTRIES {
            c.entries.pop_front();
        }
        c.entries.push_back((fp, kek.clone()));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(salt: &'a [u8], passphrase: &'a [u8], iterations: u32) -> Input<'a> {
        Input {
            salt,
            version: 0x13,
            memory_kib: 64,
            iterations,
            parallelism: 1,
            passphrase,
        }
    }

    #[test]
    fn a_key_is_found_only_for_the_same_salt_parameters_and_passphrase() {
        let salt = b"0123456789abcdef-cache-test-salt";
        let kek = Zeroizing::new([7u8; 32]);
        put(&input(salt, b"right", 3), &kek);
        assert_eq!(get(&input(salt, b"right", 3)).as_deref(), Some(&[7u8; 32]));
        assert!(get(&input(salt, b"wrong", 3)).is_none());
        assert!(get(&input(salt, b"right", 4)).is_none());
        assert!(get(&input(b"another-salt-of-sixteen+", b"right", 3)).is_none());
        // The passphrase and its length are both bound: "ab"+"c" is not "a"+"bc".
        assert!(get(&input(salt, b"righ", 3)).is_none());
    }

    #[test]
    fn the_table_is_bounded() {
        let salts: Vec<[u8; 16]> = (0..ENTRIES as u8 + 4).map(|i| [i; 16]).collect();
        for s in &salts {
            put(&input(s, b"bounded", 1), &Zeroizing::new([1u8; 32]));
        }
        assert!(
            get(&input(&salts[0], b"bounded", 1)).is_none(),
            "oldest gone"
        );
        assert!(get(&input(salts.last().unwrap(), b"bounded", 1)).is_some());
        assert!(with_cache(|c| c.entries.len()).unwrap() <= ENTRIES);
    }
}
