//! The manifest: one per backup, describing the whole volume.
//!
//! Layout (all integers little-endian; see `docs/backup-format.md`):
//!
//! ```text
//! "CVMANIF2" | version u32 | header_len u32 | header JSON (header_len bytes)
//! entry* (84 bytes each: offset u64 | length u32 | BLAKE3 id [32]
//!         | pack id [32] | offset in pack u32 | stored length u32)
//! trailer (48 bytes: entry_count u64 | BLAKE3 of every preceding byte [32] | "CVMFEND2")
//! ```
//!
//! Entries are sorted by offset, chunk-aligned, never overlap; a chunk without an entry is a
//! hole (zero or unmapped). Both directions stream: the encoder emits bytes as entries arrive
//! and the reader yields entries as bytes arrive, checking the trailer at the end.

use bytes::Bytes;
use convoy_blockstore::BlockId;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::error::{BackupError, Result};

/// First 8 bytes of every manifest.
pub const MANIFEST_MAGIC: [u8; 8] = *b"CVMANIF2";
/// First 8 bytes of a format 1 manifest (refused with a message naming both versions).
pub const MANIFEST_MAGIC_V1: [u8; 8] = *b"CVMANIF1";
/// Last 8 bytes of every complete manifest.
pub const TRAILER_MAGIC: [u8; 8] = *b"CVMFEND2";
/// The manifest format version this crate writes and reads.
pub const FORMAT_VERSION: u32 = 2;
/// Bytes per block entry.
pub const ENTRY_LEN: usize = 84;
/// Bytes of the trailer.
pub const TRAILER_LEN: usize = 48;
/// Bytes before the header JSON.
pub const PREAMBLE_LEN: usize = 16;
/// Largest header JSON accepted.
pub const MAX_HEADER_LEN: usize = 1 << 20;

/// The human-readable part of a manifest (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestHeader {
    /// Format version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// The backup's name (unique within the volume).
    pub backup_name: String,
    /// A UUID generated for the backup.
    pub backup_uuid: String,
    /// The volume driver that made it (e.g. `devicemapper`).
    pub driver_name: String,
    /// Volume name.
    pub volume_name: String,
    /// Volume UUID.
    pub volume_uuid: String,
    /// Volume size in bytes.
    pub volume_size: u64,
    /// When the volume was created (as given by the caller).
    pub volume_created_at: String,
    /// Snapshot name.
    pub snapshot_name: String,
    /// Snapshot UUID.
    pub snapshot_uuid: String,
    /// When the snapshot was created (as given by the caller).
    pub snapshot_created_at: String,
    /// When the backup was made (RFC 3339, UTC).
    pub created_time: String,
    /// Chunk size in bytes: every entry's offset is a multiple of it.
    pub chunk_size: u32,
    /// The backup this one was made incrementally from, at the time it was made.
    pub parent: Option<String>,
    /// Cipher of the store's objects: `none` (reserved for the encryption issue).
    #[serde(default = "cipher_none")]
    pub cipher: String,
    /// Id of the key the objects are encrypted with (`None` when unencrypted).
    #[serde(default)]
    pub key_id: Option<String>,
}

pub(crate) fn cipher_none() -> String {
    "none".into()
}

/// One stored chunk of the volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Byte offset in the volume (a multiple of the chunk size).
    pub offset: u64,
    /// Bytes of volume data (the chunk size, except for the volume's last chunk).
    pub len: u32,
    /// Content id of the data.
    pub id: BlockId,
    /// Where the block object is stored.
    pub loc: Loc,
}

/// Where a block object lies: a byte range of a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Loc {
    /// The pack's id (its key is `packs/<2 hex>/<64 hex>`).
    pub pack: BlockId,
    /// Byte offset in the pack.
    pub offset: u32,
    /// Length of the stored block object.
    pub stored_len: u32,
}

impl Entry {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(self.loc.pack.as_bytes());
        out.extend_from_slice(&self.loc.offset.to_le_bytes());
        out.extend_from_slice(&self.loc.stored_len.to_le_bytes());
    }

    fn decode(b: &[u8]) -> Entry {
        Entry {
            offset: u64::from_le_bytes(b[0..8].try_into().expect("8 bytes")),
            len: u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")),
            id: BlockId(b[12..44].try_into().expect("32 bytes")),
            loc: Loc {
                pack: BlockId(b[44..76].try_into().expect("32 bytes")),
                offset: u32::from_le_bytes(b[76..80].try_into().expect("4 bytes")),
                stored_len: u32::from_le_bytes(b[80..84].try_into().expect("4 bytes")),
            },
        }
    }
}

/// Checks that `entry` may follow an entry ending at `next_free` in a volume of `header`'s shape.
fn check_entry(header: &ManifestHeader, next_free: u64, e: &Entry) -> Result<(), String> {
    let chunk = u64::from(header.chunk_size);
    let end = e
        .offset
        .checked_add(u64::from(e.len))
        .ok_or("offset overflow")?;
    if e.offset < next_free {
        return Err(format!("entry at {} is out of order or overlaps", e.offset));
    }
    if !e.offset.is_multiple_of(chunk) {
        return Err(format!("entry offset {} is not chunk-aligned", e.offset));
    }
    if e.loc.stored_len == 0 || (e.loc.offset as usize) < convoy_blockstore::PACK_HEADER_LEN {
        return Err(format!("entry at {} has a bad pack range", e.offset));
    }
    if e.len == 0 || u64::from(e.len) > chunk || end > header.volume_size {
        return Err(format!("entry at {} has bad length {}", e.offset, e.len));
    }
    if u64::from(e.len) != chunk && end != header.volume_size {
        return Err(format!("short entry at {} is not the last chunk", e.offset));
    }
    Ok(())
}

/// Streams a manifest out: feed it entries in offset order, take bytes as they accumulate.
pub struct ManifestEncoder {
    header: ManifestHeader,
    hasher: blake3::Hasher,
    buf: Vec<u8>,
    count: u64,
    next_free: u64,
}

impl ManifestEncoder {
    /// Starts a manifest with `header` (already serialized into the pending bytes).
    pub fn new(header: ManifestHeader) -> Result<Self> {
        let json = serde_json::to_vec(&header).map_err(|e| BackupError::CorruptManifest {
            backup: header.backup_name.clone(),
            reason: format!("header does not serialize: {e}"),
        })?;
        let mut buf = Vec::with_capacity(PREAMBLE_LEN + json.len() + 64 * 1024);
        buf.extend_from_slice(&MANIFEST_MAGIC);
        buf.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        buf.extend_from_slice(&(json.len() as u32).to_le_bytes());
        buf.extend_from_slice(&json);
        Ok(ManifestEncoder {
            header,
            hasher: blake3::Hasher::new(),
            buf,
            count: 0,
            next_free: 0,
        })
    }

    /// Appends an entry; entries must come in increasing offset order.
    pub fn push(&mut self, e: &Entry) -> Result<()> {
        check_entry(&self.header, self.next_free, e).map_err(|reason| {
            BackupError::CorruptManifest {
                backup: self.header.backup_name.clone(),
                reason: format!("refusing to write: {reason}"),
            }
        })?;
        self.next_free = e.offset + u64::from(e.len);
        e.encode(&mut self.buf);
        self.count += 1;
        Ok(())
    }

    /// Bytes pending output.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Takes the pending bytes.
    pub fn take(&mut self) -> Vec<u8> {
        self.hasher.update(&self.buf);
        std::mem::take(&mut self.buf)
    }

    /// Number of entries pushed.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Ends the manifest: the remaining bytes followed by the trailer.
    pub fn finish(mut self) -> Vec<u8> {
        let mut out = self.take();
        let digest = self.hasher.finalize();
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(digest.as_bytes());
        out.extend_from_slice(&TRAILER_MAGIC);
        out
    }
}

/// Parses the fixed preamble; returns the header JSON length.
pub fn parse_preamble(backup: &str, b: &[u8]) -> Result<usize> {
    let corrupt = |reason: String| BackupError::CorruptManifest {
        backup: backup.to_string(),
        reason,
    };
    if b.len() < PREAMBLE_LEN {
        return Err(corrupt(format!("only {} bytes", b.len())));
    }
    if b[..8] == MANIFEST_MAGIC_V1 {
        return Err(BackupError::UnsupportedFormat {
            what: format!("backup {backup}"),
            found: 1,
        });
    }
    if b[..8] != MANIFEST_MAGIC {
        return Err(corrupt("bad magic (not a convoy manifest)".into()));
    }
    let version = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(corrupt(format!(
            "format version {version}, this build reads {FORMAT_VERSION}"
        )));
    }
    let len = u32::from_le_bytes(b[12..16].try_into().expect("4 bytes")) as usize;
    if len > MAX_HEADER_LEN {
        return Err(corrupt(format!("header length {len} too large")));
    }
    Ok(len)
}

/// Parses and sanity-checks the header JSON.
pub fn parse_header(backup: &str, json: &[u8]) -> Result<ManifestHeader> {
    let corrupt = |reason: String| BackupError::CorruptManifest {
        backup: backup.to_string(),
        reason,
    };
    let h: ManifestHeader =
        serde_json::from_slice(json).map_err(|e| corrupt(format!("header JSON: {e}")))?;
    if !(h.cipher == "none" && h.key_id.is_none()
        || crate::crypto::Cipher::from_name(&h.cipher).is_some())
    {
        return Err(corrupt(format!(
            "cipher {:?} (key {:?}) is not supported by this build",
            h.cipher, h.key_id
        )));
    }
    if !h.chunk_size.is_power_of_two() || h.chunk_size < 4096 {
        return Err(corrupt(format!("bad chunk size {}", h.chunk_size)));
    }
    Ok(h)
}

/// Streams a manifest in: the header first, then entries, verifying the trailer at the end.
pub struct ManifestReader {
    backup: String,
    header: ManifestHeader,
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
    done: bool,
    hasher: blake3::Hasher,
    count: u64,
    next_free: u64,
}

impl ManifestReader {
    /// Reads the header from `stream` (the manifest object's bytes).
    pub async fn open(
        backup: &str,
        mut stream: BoxStream<'static, object_store::Result<Bytes>>,
    ) -> Result<Self> {
        let corrupt = |reason: String| BackupError::CorruptManifest {
            backup: backup.to_string(),
            reason,
        };
        let mut buf = Vec::new();
        let mut need = PREAMBLE_LEN;
        let mut header_len = None;
        loop {
            if header_len.is_none() && buf.len() >= PREAMBLE_LEN {
                let len = parse_preamble(backup, &buf)?;
                header_len = Some(len);
                need = PREAMBLE_LEN + len;
            }
            if header_len.is_some() && buf.len() >= need {
                break;
            }
            match stream.next().await {
                Some(Ok(bytes)) => buf.extend_from_slice(&bytes),
                Some(Err(e)) => return Err(corrupt(format!("reading: {e}"))),
                None => return Err(corrupt(format!("truncated: {} bytes", buf.len()))),
            }
        }
        let header = parse_header(backup, &buf[PREAMBLE_LEN..need])?;
        let mut hasher = blake3::Hasher::new();
        hasher.update(&buf[..need]);
        Ok(ManifestReader {
            backup: backup.to_string(),
            header,
            stream,
            buf,
            pos: need,
            eof: false,
            done: false,
            hasher,
            count: 0,
            next_free: 0,
        })
    }

    /// The manifest's header.
    pub fn header(&self) -> &ManifestHeader {
        &self.header
    }

    fn corrupt(&self, reason: String) -> BackupError {
        BackupError::CorruptManifest {
            backup: self.backup.clone(),
            reason,
        }
    }

    /// The next entry, or `None` after the last one once the trailer has been verified.
    pub async fn next_entry(&mut self) -> Result<Option<Entry>> {
        if self.done {
            return Ok(None);
        }
        while !self.eof && self.buf.len() - self.pos < ENTRY_LEN + TRAILER_LEN {
            if self.pos > 0 && self.pos >= self.buf.len() / 2 {
                self.buf.drain(..self.pos);
                self.pos = 0;
            }
            match self.stream.next().await {
                Some(Ok(bytes)) => self.buf.extend_from_slice(&bytes),
                Some(Err(e)) => return Err(self.corrupt(format!("reading: {e}"))),
                None => self.eof = true,
            }
        }
        let avail = self.buf.len() - self.pos;
        if avail >= ENTRY_LEN + TRAILER_LEN {
            let raw = &self.buf[self.pos..self.pos + ENTRY_LEN];
            self.hasher.update(raw);
            let e = Entry::decode(raw);
            self.pos += ENTRY_LEN;
            check_entry(&self.header, self.next_free, &e).map_err(|r| self.corrupt(r))?;
            self.next_free = e.offset + u64::from(e.len);
            self.count += 1;
            return Ok(Some(e));
        }
        // End of stream: what is left must be exactly the trailer.
        if avail != TRAILER_LEN {
            return Err(self.corrupt(format!(
                "truncated: {avail} bytes after {} entries where a {TRAILER_LEN}-byte trailer belongs",
                self.count
            )));
        }
        let t = &self.buf[self.pos..];
        let count = u64::from_le_bytes(t[0..8].try_into().expect("8 bytes"));
        if t[40..48] != TRAILER_MAGIC {
            return Err(self.corrupt("truncated: trailer magic missing".into()));
        }
        if count != self.count {
            return Err(self.corrupt(format!(
                "trailer counts {count} entries, found {}",
                self.count
            )));
        }
        if self.hasher.finalize().as_bytes() != &t[8..40] {
            return Err(self.corrupt("checksum mismatch".into()));
        }
        self.done = true;
        Ok(None)
    }
}

/// Keeps a position in a manifest and answers "what is the entry at offset X" for increasing X.
pub struct EntryCursor {
    reader: ManifestReader,
    peeked: Option<Entry>,
    finished: bool,
}

impl EntryCursor {
    /// Wraps a reader.
    pub fn new(reader: ManifestReader) -> Self {
        EntryCursor {
            reader,
            peeked: None,
            finished: false,
        }
    }

    /// The next entry (consumed).
    pub async fn next(&mut self) -> Result<Option<Entry>> {
        if let Some(e) = self.peeked.take() {
            return Ok(Some(e));
        }
        if self.finished {
            return Ok(None);
        }
        let e = self.reader.next_entry().await?;
        self.finished = e.is_none();
        Ok(e)
    }

    /// The next entry without consuming it.
    pub async fn peek(&mut self) -> Result<Option<Entry>> {
        if self.peeked.is_none() {
            self.peeked = self.next().await?;
        }
        Ok(self.peeked)
    }

    /// Skips entries before `offset` and returns the entry starting exactly at `offset`, if any
    /// (not consumed). Offsets passed must not decrease.
    pub async fn at(&mut self, offset: u64) -> Result<Option<Entry>> {
        while let Some(e) = self.peek().await? {
            if e.offset >= offset {
                return Ok((e.offset == offset).then_some(e));
            }
            self.peeked = None;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests;
