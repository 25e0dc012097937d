//! Pack objects (store format 2): many block objects concatenated behind a small header,
//! followed by the pack's own index, so that a store needs one object per pack instead of one
//! per block, and any pack's contents can be listed from its tail alone.
//!
//! ```text
//! header  16 bytes: "CVPACK02" | cipher u8 | reserved [7] (zero)
//! blob*   block objects as `encode_block` makes them (self-describing, verified on decode)
//! index   PACK_ENTRY_LEN bytes per blob: id [32] | offset u32 | stored length u32 | raw length u32
//! trailer 48 bytes: count u32 | cipher u32 | BLAKE3(index as stored) [32] | "CVPKEND2"
//! ```
//!
//! All integers little-endian. `cipher` is 0 (none) here; this module reads only such packs.
//! An encrypted store's packs (cipher 1) hold sealed blobs and a sealed index, built with
//! [`PackBuilder::with_cipher`] and [`PackBuilder::finish_with`] and read by the backup store's
//! `sealed` module (see `docs/backup-format.md`).

use crate::{BlockError, BlockId};

/// The first 8 bytes of every pack.
pub const PACK_MAGIC: [u8; 8] = *b"CVPACK02";
/// The last 8 bytes of every pack.
pub const PACK_TRAILER_MAGIC: [u8; 8] = *b"CVPKEND2";
/// Length of the pack header.
pub const PACK_HEADER_LEN: usize = 16;
/// Length of one pack index entry.
pub const PACK_ENTRY_LEN: usize = 44;
/// Length of the pack trailer.
pub const PACK_TRAILER_LEN: usize = 48;
/// The largest pack (offsets are 32-bit).
pub const MAX_PACK_LEN: usize = 1 << 31;
/// Cipher code of an unencrypted pack.
pub const CIPHER_NONE: u8 = 0;

/// Where a blob lies inside its pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PackEntry {
    /// Content id (BLAKE3 of the uncompressed data).
    pub id: BlockId,
    /// Byte offset of the block object in the pack.
    pub offset: u32,
    /// Length of the stored (encoded) block object.
    pub stored_len: u32,
    /// Length of the uncompressed data.
    pub raw_len: u32,
}

/// Builds one pack in memory.
#[derive(Debug)]
pub struct PackBuilder {
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
    /// The size the pack was started for: [`PackBuilder::fits`] keeps the pack, index and
    /// trailer within it, so `buf` (allocated with a little more, for a sealed index's nonce
    /// and tag) never grows.
    capacity: usize,
}

impl PackBuilder {
    /// Starts an empty, unencrypted pack with room for `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        Self::with_cipher(capacity, CIPHER_NONE)
    }

    /// Starts an empty pack whose header and trailer name `cipher` (an encrypted store's
    /// packs hold sealed blobs and a sealed index; see [`PackBuilder::finish_with`]).
    pub fn with_cipher(capacity: usize, cipher: u8) -> Self {
        let mut buf = Vec::with_capacity(capacity + 4096);
        buf.extend_from_slice(&PACK_MAGIC);
        buf.push(cipher);
        buf.extend_from_slice(&[0; 7]);
        PackBuilder {
            buf,
            entries: Vec::new(),
            capacity,
        }
    }

    /// Whether a blob of `n` more bytes keeps the finished pack (its index and trailer
    /// included) within the capacity it was started with. An empty pack takes any blob, so a
    /// blob larger than the capacity gets a pack of its own.
    pub fn fits(&self, n: usize) -> bool {
        self.entries.is_empty()
            || self.buf.len() + n + (self.entries.len() + 1) * PACK_ENTRY_LEN + PACK_TRAILER_LEN
                <= self.capacity
    }

    /// Appends an encoded (or sealed) block object of content `id` (`raw_len` bytes
    /// uncompressed); returns its entry.
    pub fn push(&mut self, id: BlockId, encoded: &[u8], raw_len: u32) -> PackEntry {
        let e = PackEntry {
            id,
            offset: self.buf.len() as u32,
            stored_len: encoded.len() as u32,
            raw_len,
        };
        self.buf.extend_from_slice(encoded);
        self.entries.push(e);
        e
    }

    /// Bytes so far (header and blobs).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no blob was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends the index and trailer; returns the pack's bytes.
    pub fn finish(self) -> Vec<u8> {
        self.finish_with(|index, out| {
            out.extend_from_slice(index);
            Ok::<(), std::convert::Infallible>(())
        })
        .unwrap_or_else(|never| match never {})
    }

    /// Appends the index as `write_index` writes it (plainly, or sealed) and the trailer, whose
    /// checksum covers the bytes `write_index` appended and whose second word is the header's
    /// cipher code; returns the pack's bytes.
    pub fn finish_with<E>(
        mut self,
        write_index: impl FnOnce(&[u8], &mut Vec<u8>) -> Result<(), E>,
    ) -> Result<Vec<u8>, E> {
        let mut index = Vec::with_capacity(self.entries.len() * PACK_ENTRY_LEN);
        for e in &self.entries {
            index.extend_from_slice(e.id.as_bytes());
            index.extend_from_slice(&e.offset.to_le_bytes());
            index.extend_from_slice(&e.stored_len.to_le_bytes());
            index.extend_from_slice(&e.raw_len.to_le_bytes());
        }
        let cipher = self.buf[PACK_MAGIC.len()];
        let start = self.buf.len();
        write_index(&index, &mut self.buf)?;
        let hash = blake3::hash(&self.buf[start..]);
        self.buf
            .extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(&u32::from(cipher).to_le_bytes());
        self.buf.extend_from_slice(hash.as_bytes());
        self.buf.extend_from_slice(&PACK_TRAILER_MAGIC);
        Ok(self.buf)
    }
}

fn malformed(reason: String) -> BlockError {
    BlockError::MalformedPack { reason }
}

/// Reads the trailer (the last [`PACK_TRAILER_LEN`] bytes of `tail`) and returns how many
/// bytes at the end of the pack the index and trailer take together.
pub fn pack_tail_len(tail: &[u8]) -> Result<usize, BlockError> {
    if tail.len() < PACK_TRAILER_LEN {
        return Err(malformed(format!(
            "{} bytes is shorter than the trailer",
            tail.len()
        )));
    }
    let t = &tail[tail.len() - PACK_TRAILER_LEN..];
    if t[40..48] != PACK_TRAILER_MAGIC {
        return Err(malformed(
            "trailer magic missing (truncated or not a pack)".into(),
        ));
    }
    let count = u32::from_le_bytes(t[0..4].try_into().expect("4 bytes")) as usize;
    if count > MAX_PACK_LEN / PACK_ENTRY_LEN {
        return Err(malformed(format!("index of {count} entries is too large")));
    }
    Ok(count * PACK_ENTRY_LEN + PACK_TRAILER_LEN)
}

/// Decodes the index of a pack from `tail` (at least the last [`pack_tail_len`] bytes of
/// it), checking its checksum and that every entry lies inside a pack of `pack_len` bytes
/// (when known) before the index.
pub fn decode_pack_index(tail: &[u8], pack_len: Option<u64>) -> Result<Vec<PackEntry>, BlockError> {
    let need = pack_tail_len(tail)?;
    if tail.len() < need {
        return Err(malformed(format!(
            "index needs {need} bytes at the end of the pack, have {}",
            tail.len()
        )));
    }
    let part = &tail[tail.len() - need..];
    let index = &part[..need - PACK_TRAILER_LEN];
    let t = &part[need - PACK_TRAILER_LEN..];
    if blake3::hash(index).as_bytes() != &t[8..40] {
        return Err(malformed("index checksum mismatch".into()));
    }
    let data_end = match pack_len {
        Some(n) => n
            .checked_sub(need as u64)
            .ok_or_else(|| malformed("pack shorter than its index".into()))?,
        None => u64::MAX,
    };
    let mut out = Vec::with_capacity(index.len() / PACK_ENTRY_LEN);
    for raw in index.chunks_exact(PACK_ENTRY_LEN) {
        let e = PackEntry {
            id: BlockId(raw[0..32].try_into().expect("32 bytes")),
            offset: u32::from_le_bytes(raw[32..36].try_into().expect("4 bytes")),
            stored_len: u32::from_le_bytes(raw[36..40].try_into().expect("4 bytes")),
            raw_len: u32::from_le_bytes(raw[40..44].try_into().expect("4 bytes")),
        };
        let end = u64::from(e.offset) + u64::from(e.stored_len);
        if (e.offset as usize) < PACK_HEADER_LEN
            || end > data_end
            || e.raw_len as usize > crate::MAX_BLOCK_LEN
        {
            return Err(malformed(format!(
                "entry {} ({}..{end}) lies outside the pack's data",
                e.id, e.offset
            )));
        }
        out.push(e);
    }
    Ok(out)
}

/// Checks a pack header (the first [`PACK_HEADER_LEN`] bytes).
pub fn check_pack_header(head: &[u8]) -> Result<(), BlockError> {
    if head.len() < PACK_HEADER_LEN || head[..8] != PACK_MAGIC {
        return Err(malformed("bad magic (not a convoy format 2 pack)".into()));
    }
    if head[8] != CIPHER_NONE {
        return Err(malformed(format!(
            "cipher {} is not supported by this build (only 0, none)",
            head[8]
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode_block, encode_block};

    #[test]
    fn blobs_that_fit_keep_the_finished_pack_within_its_capacity_and_allocation() {
        let cap = 64 << 10;
        let mut b = PackBuilder::new(cap);
        let allocated = b.buf.capacity();
        // Any blob fits an empty pack, however large.
        assert!(b.fits(10 * cap));
        let mut n = 0u32;
        while b.fits(3000) {
            b.push(BlockId::of(&n.to_le_bytes()), &[7; 3000], 3000);
            n += 1;
        }
        assert_eq!(
            n, 21,
            "64 KiB takes 21 blobs of 3000 bytes with their index entries"
        );
        let pack = b.finish();
        assert!(pack.len() <= cap, "{} > {cap}", pack.len());
        assert!(
            cap - pack.len() < 3000 + PACK_ENTRY_LEN,
            "the pack was sent too early"
        );
        assert!(
            pack.capacity() <= allocated,
            "the pack outgrew its allocation"
        );
    }

    #[test]
    fn pack_round_trip_and_damage() {
        let mut b = PackBuilder::new(1 << 20);
        assert!(b.is_empty());
        let blobs: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 1000 + usize::from(i)]).collect();
        let mut want = Vec::new();
        for d in &blobs {
            let enc = encode_block(d, 3).unwrap();
            want.push(b.push(BlockId::of(d), &enc, d.len() as u32));
        }
        let pack = b.finish();
        check_pack_header(&pack).unwrap();
        let got = decode_pack_index(&pack, Some(pack.len() as u64)).unwrap();
        assert_eq!(got, want);
        let tail = &pack[pack.len() - pack_tail_len(&pack).unwrap()..];
        assert_eq!(decode_pack_index(tail, None).unwrap(), want);
        for (e, d) in got.iter().zip(&blobs) {
            let s = &pack[e.offset as usize..(e.offset + e.stored_len) as usize];
            assert_eq!(&decode_block(s, &e.id).unwrap(), d);
        }
        let mut bad = pack.clone();
        let i = bad.len() - PACK_TRAILER_LEN - 3;
        bad[i] ^= 1;
        assert!(decode_pack_index(&bad, None).is_err());
        assert!(decode_pack_index(&pack[..pack.len() - 1], None).is_err());
        assert!(decode_pack_index(&pack[pack.len() - 60..], None).is_err());
        let mut enc = pack.clone();
        enc[8] = 1;
        assert!(check_pack_header(&enc)
            .unwrap_err()
            .to_string()
            .contains("cipher"));
    }
}
