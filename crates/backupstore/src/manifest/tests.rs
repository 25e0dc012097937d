use super::*;

fn header() -> ManifestHeader {
    ManifestHeader {
        format_version: FORMAT_VERSION,
        backup_name: "b1".into(),
        backup_uuid: "u".into(),
        driver_name: "devicemapper".into(),
        volume_name: "v1".into(),
        volume_uuid: "vu".into(),
        volume_size: 10 * 65536 + 100,
        volume_created_at: String::new(),
        snapshot_name: "s".into(),
        snapshot_uuid: "su".into(),
        snapshot_created_at: String::new(),
        created_time: "now".into(),
        chunk_size: 65536,
        parent: None,
        cipher: cipher_none(),
        key_id: None,
    }
}

fn loc() -> Loc {
    Loc {
        pack: BlockId::of(b"p"),
        offset: 16,
        stored_len: 10,
    }
}

fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut enc = ManifestEncoder::new(header()).unwrap();
    let mut out = Vec::new();
    for e in entries {
        enc.push(e).unwrap();
        out.extend(enc.take());
    }
    out.extend(enc.finish());
    out
}

async fn decode(bytes: Vec<u8>, piece: usize) -> Result<Vec<Entry>> {
    let chunks: Vec<object_store::Result<Bytes>> = bytes
        .chunks(piece)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let mut r = ManifestReader::open("b1", futures::stream::iter(chunks).boxed()).await?;
    assert_eq!(r.header(), &header());
    let mut out = Vec::new();
    while let Some(e) = r.next_entry().await? {
        out.push(e);
    }
    Ok(out)
}

fn entries() -> Vec<Entry> {
    vec![
        Entry {
            offset: 0,
            len: 65536,
            id: BlockId::of(b"a"),
            loc: loc(),
        },
        Entry {
            offset: 3 * 65536,
            len: 65536,
            id: BlockId::of(b"b"),
            loc: loc(),
        },
        Entry {
            offset: 10 * 65536,
            len: 100,
            id: BlockId::of(b"c"),
            loc: loc(),
        },
    ]
}

#[tokio::test]
async fn round_trip_in_any_piece_size() {
    let bytes = encode(&entries());
    for piece in [1, 7, 44, 48, 1000, 1 << 20] {
        assert_eq!(decode(bytes.clone(), piece).await.unwrap(), entries());
    }
    assert_eq!(decode(encode(&[]), 3).await.unwrap(), vec![]);
}

#[tokio::test]
async fn truncation_and_corruption_are_detected() {
    let bytes = encode(&entries());
    for cut in [
        0,
        5,
        16,
        40,
        bytes.len() - 48,
        bytes.len() - 1,
        bytes.len() - 44,
    ] {
        let err = decode(bytes[..cut].to_vec(), 13).await.unwrap_err();
        assert!(
            matches!(err, BackupError::CorruptManifest { .. }),
            "{cut}: {err}"
        );
    }
    let mut flipped = bytes.clone();
    let i = flipped.len() - 60;
    flipped[i] ^= 1;
    assert!(decode(flipped, 100).await.is_err());
    // A format 1 manifest is refused naming both versions.
    let mut v1 = bytes.clone();
    v1[..8].copy_from_slice(&MANIFEST_MAGIC_V1);
    let err = decode(v1, 100).await.unwrap_err();
    assert!(
        matches!(err, BackupError::UnsupportedFormat { found: 1, .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("version 1") && msg.contains("version 2"),
        "{msg}"
    );
}

#[test]
fn encoder_refuses_bad_entries() {
    let mut enc = ManifestEncoder::new(header()).unwrap();
    let id = BlockId::of(b"x");
    enc.push(&Entry {
        offset: 65536,
        len: 65536,
        id,
        loc: loc(),
    })
    .unwrap();
    for bad in [
        Entry {
            offset: 0,
            len: 65536,
            id,
            loc: loc(),
        },
        Entry {
            offset: 65536,
            len: 65536,
            id,
            loc: loc(),
        },
        Entry {
            offset: 2 * 65536 + 1,
            len: 10,
            id,
            loc: loc(),
        },
        Entry {
            offset: 3 * 65536,
            len: 10,
            id,
            loc: loc(),
        },
        Entry {
            offset: 10 * 65536,
            len: 101,
            id,
            loc: loc(),
        },
    ] {
        assert!(enc.push(&bad).is_err(), "{bad:?}");
    }
}
