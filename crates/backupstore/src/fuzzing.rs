//! Entry points for the fuzz targets in `fuzz/` (not part of the supported API).
//!
//! They drive the same private decoders a restore uses, from plain bytes, so a libFuzzer target
//! can reach them without an object store.

use bytes::Bytes;
use futures::StreamExt;

use crate::error::Result;
use crate::manifest::ManifestReader;

/// Decodes a whole manifest from `bytes`, delivered to the reader in pieces of `piece` bytes
/// (0 means one piece), exactly as a restore reads it. Returns the number of entries on success.
pub fn decode_manifest(bytes: &[u8], piece: usize) -> Result<u64> {
    let pieces: Vec<object_store::Result<Bytes>> = if piece == 0 {
        vec![Ok(Bytes::copy_from_slice(bytes))]
    } else {
        bytes
            .chunks(piece)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect()
    };
    futures::executor::block_on(async move {
        let mut reader =
            ManifestReader::open("fuzz", futures::stream::iter(pieces).boxed()).await?;
        let mut count = 0;
        while reader.next_entry().await?.is_some() {
            count += 1;
        }
        Ok(count)
    })
}

/// Encodes a manifest of a volume of `volume_size` bytes with `chunk_size` chunks holding an
/// entry (of content `i`) at every chunk index in `chunks` (ascending), for seed corpora and
/// round-trip checks.
pub fn encode_manifest(volume_size: u64, chunk_size: u32, chunks: &[u64]) -> Result<Vec<u8>> {
    use crate::manifest::{Entry, ManifestEncoder, ManifestHeader, FORMAT_VERSION};
    let header = ManifestHeader {
        format_version: FORMAT_VERSION,
        backup_name: "b".into(),
        backup_uuid: "u".into(),
        driver_name: "vfs".into(),
        volume_name: "v".into(),
        volume_uuid: "vu".into(),
        volume_size,
        volume_created_at: String::new(),
        snapshot_name: "s".into(),
        snapshot_uuid: "su".into(),
        snapshot_created_at: String::new(),
        created_time: String::new(),
        chunk_size,
        parent: None,
        cipher: crate::manifest::cipher_none(),
        key_id: None,
    };
    let mut enc = ManifestEncoder::new(header)?;
    for &c in chunks {
        let offset = c * u64::from(chunk_size);
        let len = volume_size
            .saturating_sub(offset)
            .min(u64::from(chunk_size)) as u32;
        let id = convoy_blockstore::BlockId::of(&c.to_le_bytes());
        let loc = crate::manifest::Loc {
            pack: convoy_blockstore::BlockId::of(b"pack"),
            offset: 16 + c as u32 * 100,
            stored_len: 100,
        };
        enc.push(&Entry {
            offset,
            len,
            id,
            loc,
        })?;
    }
    Ok(enc.finish())
}

/// Decodes a pack index from the tail of a pack (`bytes`), as the store index does. Returns
/// the number of entries on success.
pub fn decode_pack_tail(bytes: &[u8]) -> std::result::Result<usize, convoy_blockstore::BlockError> {
    convoy_blockstore::decode_pack_index(bytes, Some(bytes.len() as u64)).map(|e| e.len())
}
