//! The sealed objects of an encrypted store (see `docs/backup-format.md`, "Encryption"):
//! packs whose blobs and index are sealed, and manifests sealed in segments.
//!
//! ```text
//! pack      header 16: "CVPACK02" | cipher 1 | reserved [7]
//!           blob × n: sealed block object (associated data: blob, store id, block id)
//!           index: sealed n × 44-byte entries (associated data: pack index, store id, pack id)
//!           trailer 48: n u32 | cipher u32 = 1 | BLAKE3(sealed index) [32] | "CVPKEND2"
//! manifest  "CVMANSE2" | segment × m
//!           segment: plaintext length u32 | last u8 | sealed plaintext (associated data:
//!                    manifest, store id, volume, backup, segment number, last)
//! ```

use std::sync::Arc;

use bytes::Bytes;
use convoy_blockstore::{
    decode_block_with, BlockError, BlockId, PackBuilder, PackEntry, MAX_BLOCK_LEN, PACK_ENTRY_LEN,
    PACK_HEADER_LEN, PACK_TRAILER_LEN, PACK_TRAILER_MAGIC,
};
use futures::stream::BoxStream;
use futures::StreamExt;

use crate::crypto::{Cipher, Keys, Kind, SEAL_OVERHEAD};
use crate::error::Result;
use crate::url::BackupRef;

/// Magic of a sealed manifest.
pub const SEALED_MANIFEST_MAGIC: [u8; 8] = *b"CVMANSE2";
/// Plaintext bytes per manifest segment.
const SEGMENT: usize = 64 << 10;
/// Largest segment a reader accepts.
const MAX_SEGMENT: usize = 1 << 20;

fn malformed(reason: impl Into<String>) -> BlockError {
    BlockError::MalformedPack {
        reason: reason.into(),
    }
}

/// Seals an encoded block object of id `id`.
pub(crate) fn seal_blob(keys: &Keys, id: &BlockId, encoded: &[u8]) -> Result<Vec<u8>> {
    keys.seal(Kind::Blob, &[id.as_bytes()], encoded)
}

/// Opens and decodes a sealed blob of id `id`, checking its keyed hash.
pub(crate) fn open_blob(keys: &Keys, id: &BlockId, stored: &[u8]) -> Result<Vec<u8>, BlockError> {
    keys.open_with(Kind::Blob, &[id.as_bytes()], stored, |encoded| {
        decode_block_with(encoded, id, |d| keys.chunk_id(d))
    })
    .unwrap_or_else(|| {
        Err(BlockError::Malformed {
            id: *id,
            reason: "sealed block fails to authenticate (altered, truncated, or not this \
                     block of this store)"
                .into(),
        })
    })
}

/// An empty sealed pack with room for `capacity` bytes (blobs pushed must be sealed with
/// [`seal_blob`]; finish it with [`finish_sealed_pack`]).
pub(crate) fn sealed_pack_builder(capacity: usize, keys: &Keys) -> PackBuilder {
    PackBuilder::with_cipher(capacity, keys.cipher().code())
}

/// Appends the sealed index of pack `pack` and the trailer.
pub(crate) fn finish_sealed_pack(
    builder: PackBuilder,
    keys: &Keys,
    pack: &BlockId,
) -> Result<Vec<u8>> {
    builder
        .finish_with(|index, out| keys.seal_into(Kind::PackIndex, &[pack.as_bytes()], index, out))
}

/// How many bytes at the end of a sealed pack its index and trailer take (from the trailer,
/// the last [`PACK_TRAILER_LEN`] bytes of `tail`), in a store sealed with `cipher`.
pub(crate) fn sealed_tail_len(tail: &[u8], cipher: Cipher) -> Result<usize, BlockError> {
    if tail.len() < PACK_TRAILER_LEN {
        return Err(malformed(format!(
            "{} bytes is shorter than the trailer",
            tail.len()
        )));
    }
    let t = &tail[tail.len() - PACK_TRAILER_LEN..];
    if t[40..48] != PACK_TRAILER_MAGIC {
        return Err(malformed("trailer magic missing (truncated or not a pack)"));
    }
    let count = u32::from_le_bytes(t[0..4].try_into().expect("4 bytes")) as usize;
    let found = u32::from_le_bytes(t[4..8].try_into().expect("4 bytes"));
    if found != u32::from(cipher.code()) {
        return Err(malformed(format!(
            "the trailer says cipher {found}, the store's cipher ({cipher}) is {}: not a \
             sealed pack of this store",
            cipher.code()
        )));
    }
    if count > convoy_blockstore::MAX_PACK_LEN / PACK_ENTRY_LEN {
        return Err(malformed(format!("index of {count} entries is too large")));
    }
    Ok(count * PACK_ENTRY_LEN + SEAL_OVERHEAD + PACK_TRAILER_LEN)
}

/// Opens the sealed index of pack `pack` from `tail` (at least its last [`sealed_tail_len`]
/// bytes), checking that every entry lies inside a pack of `pack_len` bytes (when known).
pub(crate) fn decode_sealed_index(
    keys: &Keys,
    pack: &BlockId,
    tail: &[u8],
    pack_len: Option<u64>,
) -> Result<Vec<PackEntry>, BlockError> {
    let need = sealed_tail_len(tail, keys.cipher())?;
    if tail.len() < need {
        return Err(malformed(format!(
            "index needs {need} bytes at the end of the pack, have {}",
            tail.len()
        )));
    }
    let part = &tail[tail.len() - need..];
    let sealed = &part[..need - PACK_TRAILER_LEN];
    let t = &part[need - PACK_TRAILER_LEN..];
    if blake3::hash(sealed).as_bytes() != &t[8..40] {
        return Err(malformed("index checksum mismatch"));
    }
    let index = keys
        .open(Kind::PackIndex, &[pack.as_bytes()], sealed)
        .ok_or_else(|| {
            malformed(
                "sealed index fails to authenticate (altered, or the pack was renamed or comes \
                 from another store)",
            )
        })?;
    let data_end = match pack_len {
        Some(n) => n
            .checked_sub(need as u64)
            .ok_or_else(|| malformed("pack shorter than its index"))?,
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
            || e.raw_len as usize > MAX_BLOCK_LEN
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

fn segment_name(r: &BackupRef, n: u64, last: bool) -> [Vec<u8>; 4] {
    [
        r.volume.as_bytes().to_vec(),
        r.backup.as_bytes().to_vec(),
        n.to_le_bytes().to_vec(),
        vec![u8::from(last)],
    ]
}

fn seal_segment(keys: &Keys, r: &BackupRef, n: u64, last: bool, plain: &[u8]) -> Result<Vec<u8>> {
    let name = segment_name(r, n, last);
    let parts: Vec<&[u8]> = name.iter().map(Vec::as_slice).collect();
    let mut out = Vec::with_capacity(plain.len() + SEAL_OVERHEAD + 5);
    out.extend_from_slice(&(plain.len() as u32).to_le_bytes());
    out.push(u8::from(last));
    keys.seal_into(Kind::Manifest, &parts, plain, &mut out)?;
    Ok(out)
}

/// Seals a manifest as it is written.
pub(crate) struct ManifestSealer {
    keys: Arc<Keys>,
    backup: BackupRef,
    pending: Vec<u8>,
    segments: u64,
    started: bool,
}

impl ManifestSealer {
    /// A sealer for the manifest of `backup`.
    pub fn new(keys: Arc<Keys>, backup: BackupRef) -> Self {
        ManifestSealer {
            keys,
            backup,
            pending: Vec::new(),
            segments: 0,
            started: false,
        }
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            out.extend_from_slice(&SEALED_MANIFEST_MAGIC);
            self.started = true;
        }
    }

    /// Takes plaintext; returns the sealed bytes ready to be written.
    pub fn push(&mut self, plain: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.start(&mut out);
        self.pending.extend_from_slice(plain);
        let mut at = 0;
        while self.pending.len() - at > SEGMENT {
            out.extend(seal_segment(
                &self.keys,
                &self.backup,
                self.segments,
                false,
                &self.pending[at..at + SEGMENT],
            )?);
            self.segments += 1;
            at += SEGMENT;
        }
        self.pending.drain(..at);
        Ok(out)
    }

    /// The last segment.
    pub fn finish(&mut self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.start(&mut out);
        let rest = std::mem::take(&mut self.pending);
        out.extend(seal_segment(
            &self.keys,
            &self.backup,
            self.segments,
            true,
            &rest,
        )?);
        self.segments += 1;
        Ok(out)
    }
}

struct Opening {
    keys: Arc<Keys>,
    backup: BackupRef,
    inner: BoxStream<'static, object_store::Result<Bytes>>,
    buf: Vec<u8>,
    eof: bool,
    started: bool,
    done: bool,
    segments: u64,
}

fn stream_err(reason: String) -> object_store::Error {
    object_store::Error::Generic {
        store: "sealed manifest",
        source: reason.into(),
    }
}

impl Opening {
    /// Reads until `n` bytes are buffered or the end; false at the end.
    async fn fill(&mut self, n: usize) -> object_store::Result<bool> {
        while self.buf.len() < n && !self.eof {
            match self.inner.next().await {
                Some(b) => self.buf.extend_from_slice(&b?),
                None => self.eof = true,
            }
        }
        Ok(self.buf.len() >= n)
    }

    async fn next_plain(&mut self) -> object_store::Result<Option<Bytes>> {
        if self.done {
            if self.fill(1).await? {
                return Err(stream_err("bytes after the last sealed segment".into()));
            }
            return Ok(None);
        }
        if !self.started {
            if !self.fill(8).await? || self.buf[..8] != SEALED_MANIFEST_MAGIC {
                return Err(stream_err(
                    "not a sealed manifest (magic CVMANSE2 missing), in an encrypted store".into(),
                ));
            }
            self.buf.drain(..8);
            self.started = true;
        }
        if !self.fill(5).await? {
            return Err(stream_err(format!(
                "truncated: ends after {} sealed segments, before the last one",
                self.segments
            )));
        }
        let len = u32::from_le_bytes(self.buf[..4].try_into().expect("4 bytes")) as usize;
        let last = match self.buf[4] {
            0 => false,
            1 => true,
            f => return Err(stream_err(format!("segment flag {f} is neither 0 nor 1"))),
        };
        if len > MAX_SEGMENT {
            return Err(stream_err(format!("segment of {len} bytes is too large")));
        }
        let total = 5 + len + SEAL_OVERHEAD;
        if !self.fill(total).await? {
            return Err(stream_err(format!(
                "truncated inside sealed segment {}",
                self.segments
            )));
        }
        let name = segment_name(&self.backup, self.segments, last);
        let parts: Vec<&[u8]> = name.iter().map(Vec::as_slice).collect();
        let plain = self
            .keys
            .open(Kind::Manifest, &parts, &self.buf[5..total])
            .ok_or_else(|| {
                stream_err(format!(
                    "sealed segment {} fails to authenticate (altered, reordered, or the \
                     manifest of another backup or store)",
                    self.segments
                ))
            })?;
        self.buf.drain(..total);
        self.segments += 1;
        self.done = last;
        Ok(Some(Bytes::from(plain)))
    }
}

/// Unseals a sealed manifest's bytes as they arrive; any failure ends the stream with an error.
pub(crate) fn open_manifest_stream(
    keys: Arc<Keys>,
    backup: BackupRef,
    inner: BoxStream<'static, object_store::Result<Bytes>>,
) -> BoxStream<'static, object_store::Result<Bytes>> {
    let st = Opening {
        keys,
        backup,
        inner,
        buf: Vec::new(),
        eof: false,
        started: false,
        done: false,
        segments: 0,
    };
    futures::stream::unfold(Some(st), |st| async move {
        let mut st = st?;
        match st.next_plain().await {
            Ok(Some(b)) => Some((Ok(b), Some(st))),
            Ok(None) => None,
            Err(e) => Some((Err(e), None)),
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn unseal(keys: &Arc<Keys>, r: &BackupRef, bytes: Vec<u8>) -> Result<Vec<u8>, String> {
        let pieces: Vec<object_store::Result<Bytes>> = bytes
            .chunks(777)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let mut s = open_manifest_stream(
            keys.clone(),
            r.clone(),
            futures::stream::iter(pieces).boxed(),
        );
        let mut out = Vec::new();
        while let Some(b) = s.next().await {
            out.extend_from_slice(&b.map_err(|e| e.to_string())?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn manifest_segments_round_trip_and_detect_damage() {
        let keys = Arc::new(Keys::new([3; 16], [9; 32], Cipher::preferred()));
        let r = BackupRef::new("vol1", "b1").unwrap();
        let plain: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut s = ManifestSealer::new(keys.clone(), r.clone());
        let mut sealed = s.push(&plain[..70_000]).unwrap();
        sealed.extend(s.push(&plain[70_000..]).unwrap());
        sealed.extend(s.finish().unwrap());
        assert_eq!(unseal(&keys, &r, sealed.clone()).await.unwrap(), plain);
        // Truncated at a segment boundary (the last segment dropped) and inside one.
        let first = 8 + 5 + SEGMENT + SEAL_OVERHEAD;
        let e = unseal(&keys, &r, sealed[..first].to_vec())
            .await
            .unwrap_err();
        assert!(e.contains("truncated"), "{e}");
        let e = unseal(&keys, &r, sealed[..sealed.len() - 1].to_vec())
            .await
            .unwrap_err();
        assert!(e.contains("truncated"), "{e}");
        let mut bad = sealed.clone();
        bad[100] ^= 1;
        assert!(unseal(&keys, &r, bad)
            .await
            .unwrap_err()
            .contains("authenticate"));
        // Another backup's name.
        let other = BackupRef::new("vol1", "b2").unwrap();
        assert!(unseal(&keys, &other, sealed.clone()).await.is_err());
        let mut extra = sealed.clone();
        extra.push(0);
        assert!(unseal(&keys, &r, extra)
            .await
            .unwrap_err()
            .contains("after the last"));
    }

    #[test]
    fn sealed_pack_index_round_trips_and_is_bound_to_its_pack() {
        for cipher in Cipher::ALL {
            let keys = Keys::new([4; 16], [5; 32], cipher);
            let pack = BlockId([1; 32]);
            let mut b = sealed_pack_builder(1 << 20, &keys);
            let mut want = Vec::new();
            for i in 0..3u8 {
                let data = vec![i + 1; 5000];
                let id = keys.chunk_id(&data);
                let enc = convoy_blockstore::encode_block(&data, 3).unwrap();
                let sealed = seal_blob(&keys, &id, &enc).unwrap();
                want.push((b.push(id, &sealed, 5000), data));
            }
            let bytes = finish_sealed_pack(b, &keys, &pack).unwrap();
            assert_eq!(bytes[8], cipher.code());
            let got = decode_sealed_index(&keys, &pack, &bytes, Some(bytes.len() as u64)).unwrap();
            assert_eq!(got, want.iter().map(|w| w.0).collect::<Vec<_>>());
            for (e, data) in &want {
                let s = &bytes[e.offset as usize..(e.offset + e.stored_len) as usize];
                assert_eq!(&open_blob(&keys, &e.id, s).unwrap(), data);
                assert!(open_blob(&keys, &want[0].0.id, s).is_err() || e.id == want[0].0.id);
            }
            let e = decode_sealed_index(&keys, &BlockId([2; 32]), &bytes, None).unwrap_err();
            assert!(e.to_string().contains("authenticate"), "{e}");
            // The same master key under the other cipher reads neither index nor blobs.
            for other in Cipher::ALL.into_iter().filter(|c| *c != cipher) {
                let k2 = Keys::new([4; 16], [5; 32], other);
                let e = decode_sealed_index(&k2, &pack, &bytes, None).unwrap_err();
                assert!(e.to_string().contains("cipher"), "{e}");
                let (e0, _) = &want[0];
                let s = &bytes[e0.offset as usize..(e0.offset + e0.stored_len) as usize];
                assert!(open_blob(&k2, &e0.id, s).is_err());
            }
        }
    }

    #[tokio::test]
    async fn hostile_bytes_are_refused_without_panics() {
        let keys = Arc::new(Keys::new([6; 16], [6; 32], Cipher::preferred()));
        let r = BackupRef::new("vol1", "b1").unwrap();
        let mut s = ManifestSealer::new(keys.clone(), r.clone());
        let mut good = s.push(&[7u8; 1000]).unwrap();
        good.extend(s.finish().unwrap());
        let mut pack = sealed_pack_builder(1 << 20, &keys);
        let id = keys.chunk_id(b"x");
        let blob = seal_blob(
            &keys,
            &id,
            &convoy_blockstore::encode_block(b"x", 3).unwrap(),
        )
        .unwrap();
        pack.push(id, &blob, 1);
        let pack_id = BlockId([9; 32]);
        let good_pack = finish_sealed_pack(pack, &keys, &pack_id).unwrap();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..2000 {
            // Random bytes, and the good objects with a few random bytes changed or cut short.
            let (mut m, mut p) = (good.clone(), good_pack.clone());
            match round % 3 {
                0 => {
                    let n = (next() % 300) as usize;
                    m = (0..n).map(|_| next() as u8).collect();
                    p = (0..n).map(|_| next() as u8).collect();
                }
                1 => {
                    for _ in 0..1 + next() % 4 {
                        let i = (next() as usize) % m.len();
                        m[i] = next() as u8;
                        let j = (next() as usize) % p.len();
                        p[j] = next() as u8;
                    }
                }
                _ => {
                    m.truncate((next() as usize) % m.len());
                    p.truncate((next() as usize) % p.len());
                }
            }
            let m_ok = unseal(&keys, &r, m.clone()).await;
            assert!(m_ok.is_err() || m == good, "round {round}");
            // The index decodes only if the tail is intact (a blob may differ: its own check
            // is below).
            let tail = good_pack.len() - 16 - blob.len();
            let p_ok = decode_sealed_index(&keys, &pack_id, &p, Some(p.len() as u64));
            assert!(
                p_ok.is_err()
                    || (p.len() == good_pack.len()
                        && p[16 + blob.len()..] == good_pack[16 + blob.len()..]),
                "round {round}, tail {tail}"
            );
            if let Some(b) = p.get(16..16 + blob.len()) {
                assert!(
                    open_blob(&keys, &id, b).is_err() || b == &blob[..],
                    "round {round}"
                );
            }
        }
    }
}
