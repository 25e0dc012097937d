//! The SnapshotMetadata part of the devicemapper life cycle: the delta of two snapshots of a
//! raw block volume against the writes made between them and against `thin_delta` of the same
//! two thin ids.

use std::path::Path;
use std::process::Command;

use convoy_csi::pb::*;
use tonic::Code;

use crate::support::dm::{pattern, Pool, BLOCK_SECTORS};
use crate::support::Server;
use crate::MIB;

/// Writes `len` bytes of `seed` at `offset` of a raw block device and syncs.
fn write_at(path: &Path, offset: u64, len: usize, seed: u8) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&pattern(seed, len)).unwrap();
    f.sync_all().unwrap();
}

/// The byte ranges `thin_delta` (thin-provisioning-tools) reports between two thin ids of the
/// pool, read under a metadata snapshot; merged.
fn thin_delta(pool: &Pool, left: &str, right: &str) -> Vec<(i64, i64)> {
    let msg = |text: &str| {
        let ok = Command::new("dmsetup")
            .args(["message", &pool.name, "0", text])
            .status()
            .unwrap();
        assert!(ok.success(), "dmsetup message {text}");
    };
    msg("reserve_metadata_snap");
    let out = Command::new("thin_delta")
        .args(["-m", "--snap1", left, "--snap2", right])
        .arg(pool.meta.path())
        .output()
        .unwrap();
    msg("release_metadata_snap");
    assert!(out.status.success(), "thin_delta: {out:?}");
    let block = (BLOCK_SECTORS * 512) as i64;
    let attr = |line: &str, key: &str| -> i64 {
        let from = line.find(&format!("{key}=\"")).unwrap() + key.len() + 2;
        line[from..].split('"').next().unwrap().parse().unwrap()
    };
    let mut ranges: Vec<(i64, i64)> = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let line = line.trim();
        if !["<different", "<left_only", "<right_only"]
            .iter()
            .any(|t| line.starts_with(t))
        {
            continue;
        }
        let (begin, length) = (attr(line, "begin") * block, attr(line, "length") * block);
        match ranges.last_mut() {
            Some(last) if last.0 + last.1 == begin => last.1 += length,
            _ => ranges.push((begin, length)),
        }
    }
    ranges
}

fn extents(list: &[BlockMetadata]) -> Vec<(i64, i64)> {
    list.iter().map(|b| (b.byte_offset, b.size_bytes)).collect()
}

/// The SnapshotMetadata service on the raw block volume (nothing but the test writes to it):
/// two snapshots around known writes; the delta is exactly those writes and what `thin_delta`
/// says of the same two thin ids; resume, paging and the error codes. Answers the snapshots.
pub async fn snapshot_metadata(
    server: &Server,
    pool: &Pool,
    c: &mut convoy_csi::pb::controller_client::ControllerClient<tonic::transport::Channel>,
    raw: &Path,
) -> Vec<String> {
    use convoy_csi::pb::snapshot_metadata_client::SnapshotMetadataClient;
    let snapshot = |name: &'static str| {
        let mut c = c.clone();
        async move {
            c.create_snapshot(CreateSnapshotRequest {
                source_volume_id: "pvc-raw".into(),
                name: name.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .snapshot
            .unwrap()
            .snapshot_id
        }
    };
    let s1 = snapshot("raw-s1").await;
    const BLOCK: i64 = (BLOCK_SECTORS * 512) as i64;
    write_at(raw, 20 << 20, BLOCK as usize, 4);
    write_at(raw, (40 << 20) + BLOCK as u64, 2 * BLOCK as usize, 5);
    let s2 = snapshot("raw-s2").await;
    let m = SnapshotMetadataClient::new(server.channel().await);
    let all = |base: Option<&str>, target: &str, offset: i64, max: i32| {
        let mut m = m.clone();
        let (base, target) = (base.map(str::to_owned), target.to_owned());
        async move {
            let mut pages = Vec::new();
            match base {
                Some(base) => {
                    let mut s = m
                        .get_metadata_delta(GetMetadataDeltaRequest {
                            base_snapshot_id: base,
                            target_snapshot_id: target,
                            starting_offset: offset,
                            max_results: max,
                            ..Default::default()
                        })
                        .await?
                        .into_inner();
                    while let Some(r) = s.message().await? {
                        assert_eq!(r.volume_capacity_bytes, 64 * MIB);
                        assert_eq!(
                            r.block_metadata_type,
                            BlockMetadataType::VariableLength as i32
                        );
                        pages.push(r.block_metadata);
                    }
                }
                None => {
                    let mut s = m
                        .get_metadata_allocated(GetMetadataAllocatedRequest {
                            snapshot_id: target,
                            starting_offset: offset,
                            max_results: max,
                            ..Default::default()
                        })
                        .await?
                        .into_inner();
                    while let Some(r) = s.message().await? {
                        assert_eq!(r.volume_capacity_bytes, 64 * MIB);
                        pages.push(r.block_metadata);
                    }
                }
            }
            Ok::<_, tonic::Status>(pages)
        }
    };
    // The delta: exactly the two writes, and what thin_delta reports.
    let delta = all(Some(&s1), &s2, 0, 0).await.unwrap();
    let delta: Vec<(i64, i64)> = delta.iter().flat_map(|p| extents(p)).collect();
    assert_eq!(
        delta,
        vec![(20 * MIB, BLOCK), (40 * MIB + BLOCK, 2 * BLOCK)]
    );
    let listed: serde_json::Value =
        serde_json::from_str(&server.v1_get("/v1/volumes/list").await).unwrap();
    let dev = |s: &str| {
        listed["pvc-raw"]["Snapshots"][s]["DriverInfo"]["DevID"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(delta, thin_delta(pool, &dev(&s1), &dev(&s2)));
    // Allocated: holds the earlier 1 MiB write and the two new ones; paging by one extent.
    let allocated = all(None, &s2, 0, 1).await.unwrap();
    assert!(allocated.iter().all(|p| p.len() <= 1));
    let allocated: Vec<(i64, i64)> = allocated.iter().flat_map(|p| extents(p)).collect();
    for (at, len) in [
        (8 * MIB, MIB),
        (20 * MIB, BLOCK),
        (40 * MIB + BLOCK, 2 * BLOCK),
    ] {
        assert!(
            allocated.iter().any(|(o, l)| *o <= at && at + len <= o + l),
            "{at}+{len} not in {allocated:?}"
        );
    }
    // Resumed inside the second write's extent: cut at its block.
    let resumed = all(Some(&s1), &s2, 40 * MIB + BLOCK + BLOCK + 100, 0)
        .await
        .unwrap();
    assert_eq!(
        resumed.iter().flat_map(|p| extents(p)).collect::<Vec<_>>(),
        vec![(40 * MIB + 2 * BLOCK, BLOCK)]
    );
    // The spec's codes.
    let code = |r: Result<Vec<Vec<BlockMetadata>>, tonic::Status>| r.unwrap_err().code();
    assert_eq!(code(all(None, "no-such-snap", 0, 0).await), Code::NotFound);
    assert_eq!(code(all(None, &s2, 64 * MIB, 0).await), Code::OutOfRange);
    assert_eq!(code(all(None, "", 0, 0).await), Code::InvalidArgument);
    assert_eq!(
        code(all(Some("snap-life"), &s2, 0, 0).await),
        Code::InvalidArgument
    );
    vec![s1, s2]
}
