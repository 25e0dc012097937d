//! Encryption of a store (see `docs/backup-format.md`, "Encryption"): the master key and the
//! keys derived from it, AEAD sealing of objects, and the secrets that open key slots.
//!
//! Every sealed record is `nonce [24] | ciphertext | tag [16]` under the store's [`Cipher`], with
//! a fresh random nonce, and associated data that names the record's kind, the store id and the
//! record's name, so that a record moved to another name, kind or store fails to open.

use std::fmt;
use std::path::PathBuf;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use convoy_blockstore::BlockId;
use zeroize::Zeroizing;

use crate::error::{BackupError, Result};
use crate::url::BackupRef;

/// The AEAD of an encrypted store, chosen when the store is created and named in its marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cipher {
    /// XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`), the 24-byte nonce used whole.
    /// Fast on any CPU; the cipher of stores made before AES-256-GCM was offered.
    XChaCha20Poly1305,
    /// AES-256-GCM (`ring`, the library under rustls). Each record's key is derived from the
    /// store's AES key and the first 12 bytes of its random 24-byte nonce (keyed BLAKE3); the
    /// other 12 are the GCM nonce. So, as with XChaCha20, 192 random bits choose each record's
    /// (key, nonce) and no count of records per store wears the key out. 4–5x faster than
    /// XChaCha20-Poly1305 where the CPU has AES and carry-less multiply instructions.
    Aes256Gcm,
}

impl Cipher {
    /// Every cipher this build reads.
    pub const ALL: [Cipher; 2] = [Cipher::Aes256Gcm, Cipher::XChaCha20Poly1305];

    /// The name in the store marker and manifest headers.
    pub fn name(self) -> &'static str {
        match self {
            Cipher::XChaCha20Poly1305 => "xchacha20poly1305",
            Cipher::Aes256Gcm => "aes256gcm",
        }
    }

    /// The code in the headers of sealed packs and forwarding objects.
    pub(crate) fn code(self) -> u8 {
        match self {
            Cipher::XChaCha20Poly1305 => 1,
            Cipher::Aes256Gcm => 2,
        }
    }

    /// The cipher named `name` (as stored: `aes256gcm`, `xchacha20poly1305`).
    pub fn from_name(name: &str) -> Option<Cipher> {
        Cipher::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The cipher of a new store made on this machine: AES-256-GCM where the CPU has AES and
    /// carry-less multiply instructions, XChaCha20-Poly1305 elsewhere (where AES in software is
    /// slower than it). Either store opens on any machine.
    pub fn preferred() -> Cipher {
        #[cfg(target_arch = "x86_64")]
        let hardware = std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq");
        #[cfg(target_arch = "aarch64")]
        let hardware = std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull");
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        let hardware = false;
        if hardware {
            Cipher::Aes256Gcm
        } else {
            Cipher::XChaCha20Poly1305
        }
    }
}

impl fmt::Display for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Cipher {
    type Err = String;

    /// Accepts the stored names and the usual spellings (`aes-256-gcm`, `xchacha20-poly1305`).
    fn from_str(s: &str) -> std::result::Result<Cipher, String> {
        let plain: String = s
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .collect::<String>()
            .to_ascii_lowercase();
        Cipher::from_name(&plain).ok_or_else(|| {
            format!("unknown cipher {s:?}: expected aes-256-gcm or xchacha20-poly1305")
        })
    }
}

/// Nonce length.
pub const NONCE_LEN: usize = 24;
/// Tag length.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed record adds to its plaintext.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// Fills `buf` with random bytes from the operating system.
pub(crate) fn random(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| BackupError::Task(format!("no random numbers: {e}")))
}

/// The keys of an unlocked store, all derived from the master key.
pub(crate) struct Keys {
    /// The store id (`key_id` of the marker), in every record's associated data.
    pub store_id: [u8; 16],
    master: Zeroizing<[u8; 32]>,
    chunk_key: Zeroizing<[u8; 32]>,
    name_key: Zeroizing<[u8; 32]>,
    aead: Aead,
}

/// The sealing key of a store.
enum Aead {
    XChaCha(XChaCha20Poly1305),
    /// The key each record's AES-256-GCM key is derived from.
    Aes(Zeroizing<[u8; 32]>),
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("store_id", &hex(&self.store_id))
            .finish_non_exhaustive()
    }
}

/// Lowercase hex.
pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Parses lowercase or uppercase hex.
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// What is sealed: part of every record's associated data.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    /// A block object inside a pack (named by its keyed id).
    Blob,
    /// A pack's index (named by the pack id).
    PackIndex,
    /// A segment of a manifest (named by volume and backup).
    Manifest,
    /// The body of a forwarding object (named by the compacted pack's id).
    Moved,
}

impl Kind {
    fn tag(self) -> &'static [u8] {
        match self {
            Kind::Blob => b"convoy-backupstore 2 blob\0",
            Kind::PackIndex => b"convoy-backupstore 2 pack index\0",
            Kind::Manifest => b"convoy-backupstore 2 manifest\0",
            Kind::Moved => b"convoy-backupstore 2 moved\0",
        }
    }
}

impl Keys {
    /// Derives the keys of store `store_id`, sealed with `cipher`, from its master key.
    pub fn new(store_id: [u8; 16], master: [u8; 32], cipher: Cipher) -> Keys {
        let master = Zeroizing::new(master);
        let chunk_key = Zeroizing::new(blake3::derive_key(
            "convoy-backupstore 2 chunk id key",
            &master[..],
        ));
        let name_key = Zeroizing::new(blake3::derive_key(
            "convoy-backupstore 2 reference name key",
            &master[..],
        ));
        let aead = match cipher {
            Cipher::XChaCha20Poly1305 => {
                let data_key = Zeroizing::new(blake3::derive_key(
                    "convoy-backupstore 2 data key",
                    &master[..],
                ));
                Aead::XChaCha(XChaCha20Poly1305::new((&*data_key).into()))
            }
            Cipher::Aes256Gcm => Aead::Aes(Zeroizing::new(blake3::derive_key(
                "convoy-backupstore 2 aes-256-gcm record key base",
                &master[..],
            ))),
        };
        Keys {
            store_id,
            master,
            chunk_key,
            name_key,
            aead,
        }
    }

    /// The store's cipher.
    pub fn cipher(&self) -> Cipher {
        match self.aead {
            Aead::XChaCha(_) => Cipher::XChaCha20Poly1305,
            Aead::Aes(_) => Cipher::Aes256Gcm,
        }
    }

    /// The AES-256-GCM key and GCM nonce of the record whose 24-byte nonce is `nonce`: the key
    /// is the keyed BLAKE3 of its first 12 bytes under `base`, the GCM nonce its last 12.
    fn aes_record(
        base: &[u8; 32],
        nonce: &[u8],
    ) -> Option<(ring::aead::LessSafeKey, ring::aead::Nonce)> {
        let (salt, n) = nonce.split_at(NONCE_LEN - ring::aead::NONCE_LEN);
        let key = Zeroizing::new(*blake3::keyed_hash(base, salt).as_bytes());
        let unbound = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &key[..]).ok()?;
        let n = ring::aead::Nonce::try_assume_unique_for_key(n).ok()?;
        Some((ring::aead::LessSafeKey::new(unbound), n))
    }

    /// The master key (to wrap it in a new slot).
    pub fn master(&self) -> &[u8; 32] {
        &self.master
    }

    /// The id of a chunk: keyed BLAKE3, so ids reveal nothing about content.
    pub fn chunk_id(&self, data: &[u8]) -> BlockId {
        BlockId::keyed(&self.chunk_key, data)
    }

    /// The name of backup `r`'s reference records (in place of `<volume>+<backup>`).
    pub fn ref_owner(&self, r: &BackupRef) -> String {
        let mut h = blake3::Hasher::new_keyed(&self.name_key);
        h.update(r.volume.as_bytes());
        h.update(b"\0");
        h.update(r.backup.as_bytes());
        hex(&h.finalize().as_bytes()[..16])
    }

    fn aad(&self, kind: Kind, name: &[&[u8]]) -> Vec<u8> {
        let mut a = Vec::with_capacity(96);
        a.extend_from_slice(kind.tag());
        a.extend_from_slice(&self.store_id);
        for part in name {
            a.extend_from_slice(&(part.len() as u32).to_le_bytes());
            a.extend_from_slice(part);
        }
        a
    }

    /// Seals `plain` as a record of `kind` named `name`, appending `nonce | ct | tag` to `out`.
    pub fn seal_into(
        &self,
        kind: Kind,
        name: &[&[u8]],
        plain: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let mut nonce = [0u8; NONCE_LEN];
        random(&mut nonce)?;
        let start = out.len();
        out.reserve(plain.len() + SEAL_OVERHEAD);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let aad = self.aad(kind, name);
        let failed = || BackupError::Task("sealing failed".into());
        let body = &mut out[start + NONCE_LEN..];
        match &self.aead {
            Aead::XChaCha(c) => {
                let tag = c
                    .encrypt_in_place_detached(XNonce::from_slice(&nonce), &aad, body)
                    .map_err(|_| failed())?;
                out.extend_from_slice(&tag);
            }
            Aead::Aes(base) => {
                let (key, n) = Self::aes_record(base, &nonce).ok_or_else(failed)?;
                let tag = key
                    .seal_in_place_separate_tag(n, ring::aead::Aad::from(&aad), body)
                    .map_err(|_| failed())?;
                out.extend_from_slice(tag.as_ref());
            }
        }
        Ok(())
    }

    /// Seals `plain`; returns `nonce | ct | tag`.
    pub fn seal(&self, kind: Kind, name: &[&[u8]], plain: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.seal_into(kind, name, plain, &mut out)?;
        Ok(out)
    }

    /// Opens a sealed record; `None` when it fails to authenticate (altered, truncated, or
    /// sealed under another kind, name, store or key).
    pub fn open(&self, kind: Kind, name: &[&[u8]], sealed: &[u8]) -> Option<Vec<u8>> {
        let mut buf = Vec::new();
        self.open_into(kind, name, sealed, &mut buf)?;
        Some(buf)
    }

    /// [`Self::open`], the plaintext given to `f` from a buffer this thread reuses (a restore
    /// opens a block per MiB: no new allocation, no fresh pages, for each).
    pub fn open_with<R>(
        &self,
        kind: Kind,
        name: &[&[u8]],
        sealed: &[u8],
        f: impl FnOnce(&[u8]) -> R,
    ) -> Option<R> {
        thread_local! {
            static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
        }
        // Taken out while in use: a nested call finds an empty one and allocates its own.
        let mut buf = SCRATCH.take();
        let out = self
            .open_into(kind, name, sealed, &mut buf)
            .map(|()| f(&buf));
        buf.clear();
        SCRATCH.set(buf);
        out
    }

    /// Opens `sealed` into `buf` (cleared first; after a failure its content is not to be used:
    /// both callers drop or clear it).
    fn open_into(
        &self,
        kind: Kind,
        name: &[&[u8]],
        sealed: &[u8],
        buf: &mut Vec<u8>,
    ) -> Option<()> {
        if sealed.len() < SEAL_OVERHEAD {
            return None;
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        buf.clear();
        buf.extend_from_slice(ct);
        let aad = self.aad(kind, name);
        let opened = match &self.aead {
            Aead::XChaCha(c) => c
                .decrypt_in_place_detached(
                    XNonce::from_slice(nonce),
                    &aad,
                    buf,
                    Tag::from_slice(tag),
                )
                .is_ok(),
            Aead::Aes(base) => {
                let (key, n) = Self::aes_record(base, nonce)?;
                let tag = ring::aead::Tag::try_from(tag).ok()?;
                key.open_in_place_separate_tag(n, ring::aead::Aad::from(&aad), tag, buf, 0..)
                    .is_ok()
            }
        };
        opened.then_some(())
    }
}

/// A secret that opens a key slot, as given (not yet read).
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A passphrase given directly (embedding, tests). Never printed.
    Passphrase(Zeroizing<String>),
    /// A file whose content (one trailing newline removed) is the passphrase.
    PassphraseFile(PathBuf),
    /// An environment variable holding the passphrase (`CONVOY_BACKUP_PASSPHRASE` by default).
    Env(String),
    /// A command run with `sh -c`, whose standard output (one trailing newline removed) is the
    /// passphrase, as restic's `--password-command` and wyng's `--passcmd`.
    Command(String),
    /// A raw key file: its whole content (at least 32 bytes) is the key.
    KeyFile(PathBuf),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Passphrase(_) => f.write_str("Passphrase(<hidden>)"),
            SecretSource::PassphraseFile(p) => write!(f, "PassphraseFile({})", p.display()),
            SecretSource::Env(v) => write!(f, "Env({v})"),
            SecretSource::Command(_) => f.write_str("Command(<hidden>)"),
            SecretSource::KeyFile(p) => write!(f, "KeyFile({})", p.display()),
        }
    }
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Passphrase(_) => f.write_str("the passphrase given"),
            SecretSource::PassphraseFile(p) => write!(f, "the passphrase file {}", p.display()),
            SecretSource::Env(v) => write!(f, "the passphrase in ${v}"),
            SecretSource::Command(_) => f.write_str("the passphrase command's output"),
            SecretSource::KeyFile(p) => write!(f, "the key file {}", p.display()),
        }
    }
}

/// The environment variable read for the passphrase when no other source is given.
pub const PASSPHRASE_ENV: &str = "CONVOY_BACKUP_PASSPHRASE";

impl SecretSource {
    /// The source chosen from the usual options (at most one of them given): a passphrase
    /// file, a key file, a command, else [`PASSPHRASE_ENV`] when set, else none.
    pub fn choose(
        passphrase_file: Option<PathBuf>,
        key_file: Option<PathBuf>,
        command: Option<String>,
    ) -> Option<SecretSource> {
        passphrase_file
            .map(SecretSource::PassphraseFile)
            .or(key_file.map(SecretSource::KeyFile))
            .or(command.map(SecretSource::Command))
            .or_else(|| {
                std::env::var_os(PASSPHRASE_ENV).map(|_| SecretSource::Env(PASSPHRASE_ENV.into()))
            })
    }
}

/// A secret read from its source.
pub(crate) enum Secret {
    /// Opens `passphrase` slots.
    Passphrase(Zeroizing<Vec<u8>>),
    /// Opens `keyfile` slots.
    KeyFile(Zeroizing<Vec<u8>>),
}

fn strip_newline(mut v: Vec<u8>) -> Zeroizing<Vec<u8>> {
    if v.last() == Some(&b'\n') {
        v.pop();
        if v.last() == Some(&b'\r') {
            v.pop();
        }
    }
    Zeroizing::new(v)
}

impl SecretSource {
    /// Reads the secret. Errors name the source, never the secret.
    pub(crate) fn read(&self, dest: &str) -> Result<Secret> {
        let fail = |reason: String| BackupError::Key {
            dest: dest.to_string(),
            reason: format!("cannot read {self}: {reason}"),
        };
        let secret = match self {
            SecretSource::Passphrase(p) => {
                Secret::Passphrase(Zeroizing::new(p.as_bytes().to_vec()))
            }
            SecretSource::PassphraseFile(path) => Secret::Passphrase(strip_newline(
                std::fs::read(path).map_err(|e| fail(e.to_string()))?,
            )),
            SecretSource::Env(var) => Secret::Passphrase(Zeroizing::new(
                std::env::var_os(var)
                    .ok_or_else(|| fail("not set".into()))?
                    .into_encoded_bytes(),
            )),
            SecretSource::Command(cmd) => {
                let out = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(cmd)
                    .stdin(std::process::Stdio::null())
                    .stderr(std::process::Stdio::inherit())
                    .output()
                    .map_err(|e| fail(format!("cannot run it: {e}")))?;
                if !out.status.success() {
                    return Err(fail(format!("the command failed ({})", out.status)));
                }
                Secret::Passphrase(strip_newline(out.stdout))
            }
            SecretSource::KeyFile(path) => {
                let v = Zeroizing::new(std::fs::read(path).map_err(|e| fail(e.to_string()))?);
                if v.len() < 32 {
                    return Err(fail(format!(
                        "{} bytes; a key file holds at least 32 random bytes",
                        v.len()
                    )));
                }
                Secret::KeyFile(v)
            }
        };
        if let Secret::Passphrase(p) = &secret {
            if p.is_empty() {
                return Err(fail("it is empty".into()));
            }
        }
        Ok(secret)
    }
}

/// Argon2id cost of new passphrase slots (the parameters are recorded in each slot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB (default 64 MiB).
    pub memory_kib: u32,
    /// Passes over memory (default 3).
    pub iterations: u32,
    /// Lanes (default 1).
    pub parallelism: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        KdfParams {
            memory_kib: 64 << 10,
            iterations: 3,
            parallelism: 1,
        }
    }
}

impl KdfParams {
    /// The smallest accepted parameters (fast; for tests only).
    pub fn insecure_fast() -> Self {
        KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_open_only_under_their_kind_name_store_and_cipher() {
        for cipher in Cipher::ALL {
            let k = Keys::new([1; 16], [7; 32], cipher);
            assert_eq!(k.cipher(), cipher);
            let s = k.seal(Kind::Blob, &[b"a"], b"hello").unwrap();
            assert_eq!(s.len(), 5 + SEAL_OVERHEAD);
            assert_eq!(k.open(Kind::Blob, &[b"a"], &s).unwrap(), b"hello");
            assert!(k.open(Kind::Blob, &[b"b"], &s).is_none());
            assert!(k.open(Kind::PackIndex, &[b"a"], &s).is_none());
            assert!(Keys::new([2; 16], [7; 32], cipher)
                .open(Kind::Blob, &[b"a"], &s)
                .is_none());
            assert!(Keys::new([1; 16], [8; 32], cipher)
                .open(Kind::Blob, &[b"a"], &s)
                .is_none());
            for other in Cipher::ALL.into_iter().filter(|c| *c != cipher) {
                assert!(Keys::new([1; 16], [7; 32], other)
                    .open(Kind::Blob, &[b"a"], &s)
                    .is_none());
            }
            // Any flipped bit: in the nonce (both halves), the ciphertext, the tag.
            for at in [0, 5, 12, 20, 24, 26, s.len() - 1] {
                let mut bad = s.clone();
                bad[at] ^= 1;
                assert!(
                    k.open(Kind::Blob, &[b"a"], &bad).is_none(),
                    "{cipher} bit at {at}"
                );
            }
            assert!(k.open(Kind::Blob, &[b"a"], &s[..s.len() - 1]).is_none());
            // Names are length-prefixed: ["ab", ""] is not ["a", "b"].
            let t = k.seal(Kind::Blob, &[b"ab", b""], b"x").unwrap();
            assert!(k.open(Kind::Blob, &[b"a", b"b"], &t).is_none());
            assert_ne!(k.chunk_id(b"x"), BlockId::of(b"x"));
            // The same plaintext sealed twice differs (fresh nonces).
            assert_ne!(k.seal(Kind::Blob, &[b"a"], b"hello").unwrap(), s);
            // A large record round-trips.
            let big: Vec<u8> = (0..(1 << 20) + 3).map(|i| (i * 7 % 251) as u8).collect();
            let sealed = k.seal(Kind::Blob, &[b"big"], &big).unwrap();
            assert!(!sealed.windows(64).any(|w| w == &big[4096..4160]));
            assert_eq!(k.open(Kind::Blob, &[b"big"], &sealed).unwrap(), big);
        }
    }

    #[test]
    fn aes_records_use_a_key_per_record_from_the_nonce() {
        // The documented construction, checked against ring directly: key = keyed BLAKE3 of
        // the nonce's first 12 bytes under the derived base key; GCM nonce = its last 12.
        let k = Keys::new([1; 16], [7; 32], Cipher::Aes256Gcm);
        let s = k.seal(Kind::Blob, &[b"a"], b"hello").unwrap();
        let base = blake3::derive_key("convoy-backupstore 2 aes-256-gcm record key base", &[7; 32]);
        let key = blake3::keyed_hash(&base, &s[..12]);
        let key = ring::aead::LessSafeKey::new(
            ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, key.as_bytes()).unwrap(),
        );
        let mut body = s[24..].to_vec();
        let n = ring::aead::Nonce::try_assume_unique_for_key(&s[12..24]).unwrap();
        let plain = key
            .open_in_place(
                n,
                ring::aead::Aad::from(k.aad(Kind::Blob, &[b"a"])),
                &mut body,
            )
            .unwrap();
        assert_eq!(plain, b"hello");
    }

    #[test]
    fn cipher_names_parse() {
        for c in Cipher::ALL {
            assert_eq!(Cipher::from_name(c.name()), Some(c));
            assert_eq!(c.name().parse::<Cipher>().unwrap(), c);
        }
        assert_eq!("AES-256-GCM".parse::<Cipher>().unwrap(), Cipher::Aes256Gcm);
        assert_eq!(
            "xchacha20-poly1305".parse::<Cipher>().unwrap(),
            Cipher::XChaCha20Poly1305
        );
        assert!("aes128"
            .parse::<Cipher>()
            .unwrap_err()
            .contains("aes-256-gcm"));
    }
}
