//! libFuzzer target: the JSON request bodies the daemon parses, for the `/v1` API and the Docker
//! volume plugin protocol, and the size syntax. The first byte picks the request type, the rest
//! is the body. Parsing must refuse with an error, never panic; a body it accepts must
//! serialize and parse back to the same request.
//!
//! Shared by the libFuzzer target (`fuzz_targets/api_json.rs`) and the workspace's seed replay
//! test (`tests/tests/fuzz_seeds.rs`), which runs every committed seed through it.

use convoy_api::{plugin, size::parse_size, wire};
use serde::{de::DeserializeOwned, Serialize};

fn round_trip<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(body: &[u8]) {
    if let Ok(req) = serde_json::from_slice::<T>(body) {
        let text = serde_json::to_vec(&req).expect("a parsed request serializes");
        let again: T = serde_json::from_slice(&text)
            .unwrap_or_else(|e| panic!("{req:?} serialized does not parse back: {e}"));
        assert_eq!(req, again);
    }
}

/// One fuzz input.
pub fn run(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 14 {
        0 => round_trip::<wire::VolumeCreateRequest>(body),
        1 => round_trip::<wire::VolumeDeleteRequest>(body),
        2 => round_trip::<wire::VolumeMountRequest>(body),
        3 => round_trip::<wire::VolumeNameRequest>(body),
        4 => round_trip::<wire::VolumeListRequest>(body),
        5 => round_trip::<wire::SnapshotCreateRequest>(body),
        6 => round_trip::<wire::SnapshotNameRequest>(body),
        7 => round_trip::<wire::BackupCreateRequest>(body),
        8 => round_trip::<wire::BackupListRequest>(body),
        9 => round_trip::<wire::BackupUrlRequest>(body),
        10 => round_trip::<plugin::CreateRequest>(body),
        11 => round_trip::<plugin::NameRequest>(body),
        12 => round_trip::<plugin::MountRequest>(body),
        _ => {
            if let Ok(text) = std::str::from_utf8(body) {
                if let Ok(n) = parse_size(text) {
                    // Whatever it accepts, the plain byte count parses to the same number.
                    assert_eq!(parse_size(&n.to_string()).ok(), Some(n));
                }
            }
        }
    }
}
