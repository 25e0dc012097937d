//! Encryption of a store (see `docs/backup-format.md`, "Encryption"): the master key and the
//! keys derived from it, AEAD sealing of objects, and the secrets that open key slots.
//!
//! Every sealed record is `nonce [24] | ciphertext | tag [16]` under XChaCha20-Poly1305 (the
//! `chacha20poly1305` crate), with a fresh random nonce, and associated data that names the
//! record's kind, the store id and the record's name, so that a record moved to another name,
//! kind or store fails to open.

use std::fmt;
use std::path::PathBuf;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use convoy_blockstore::BlockId;
use zeroize::Zeroizing;

use crate::error::{BackupError, Result};
use crate::url::BackupRef;

/// The `cipher` of an encrypted store (marker, manifest header).
pub const CIPHER_NAME: &str = "xchacha20poly1305";
/// The cipher code in the header of an encrypted pack.
pub const CIPHER_CODE: u8 = 1;
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
    aead: XChaCha20Poly1305,
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
    /// Derives the keys of store `store_id` from its master key.
    pub fn new(store_id: [u8; 16], master: [u8; 32]) -> Keys {
        let master = Zeroizing::new(master);
        let chunk_key = Zeroizing::new(blake3::derive_key(
            "convoy-backupstore 2 chunk id key",
            &master[..],
        ));
        let name_key = Zeroizing::new(blake3::derive_key(
            "convoy-backupstore 2 reference name key",
            &master[..],
        ));
        let data_key = Zeroizing::new(blake3::derive_key(
            "convoy-backupstore 2 data key",
            &master[..],
        ));
        let aead = XChaCha20Poly1305::new((&*data_key).into());
        Keys {
            store_id,
            master,
            chunk_key,
            name_key,
            aead,
        }
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
        let tag = self
            .aead
            .encrypt_in_place_detached(
                XNonce::from_slice(&nonce),
                &aad,
                &mut out[start + NONCE_LEN..],
            )
            .map_err(|_| BackupError::Task("sealing failed".into()))?;
        out.extend_from_slice(&tag);
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
        if sealed.len() < SEAL_OVERHEAD {
            return None;
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut buf = ct.to_vec();
        let aad = self.aad(kind, name);
        self.aead
            .decrypt_in_place_detached(
                XNonce::from_slice(nonce),
                &aad,
                &mut buf,
                Tag::from_slice(tag),
            )
            .ok()?;
        Some(buf)
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
    fn records_open_only_under_their_kind_name_and_store() {
        let k = Keys::new([1; 16], [7; 32]);
        let s = k.seal(Kind::Blob, &[b"a"], b"hello").unwrap();
        assert_eq!(k.open(Kind::Blob, &[b"a"], &s).unwrap(), b"hello");
        assert!(k.open(Kind::Blob, &[b"b"], &s).is_none());
        assert!(k.open(Kind::PackIndex, &[b"a"], &s).is_none());
        assert!(Keys::new([2; 16], [7; 32])
            .open(Kind::Blob, &[b"a"], &s)
            .is_none());
        assert!(Keys::new([1; 16], [8; 32])
            .open(Kind::Blob, &[b"a"], &s)
            .is_none());
        let mut bad = s.clone();
        bad[30] ^= 1;
        assert!(k.open(Kind::Blob, &[b"a"], &bad).is_none());
        assert!(k.open(Kind::Blob, &[b"a"], &s[..s.len() - 1]).is_none());
        // Names are length-prefixed: ["ab", ""] is not ["a", "b"].
        let t = k.seal(Kind::Blob, &[b"ab", b""], b"x").unwrap();
        assert!(k.open(Kind::Blob, &[b"a", b"b"], &t).is_none());
        assert_ne!(k.chunk_id(b"x"), BlockId::of(b"x"));
    }
}
