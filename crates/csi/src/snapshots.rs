//! The Controller's snapshot RPCs: create (idempotent by name), delete, list with pagination.
//! A CSI snapshot id is the convoy snapshot name; a snapshot is ready as soon as it exists
//! (thin snapshots are instant).

use convoy_core::ErrorKind;
use tonic::Status;

use crate::pb::*;
use crate::util::{self, convoy_name, required};
use crate::Csi;

/// A convoy snapshot as a CSI snapshot of volume `volume`.
fn csi_snapshot(s: &convoy_core::Snapshot, volume: &str) -> Snapshot {
    let size_bytes = s
        .driver_info
        .get("Size")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Snapshot {
        size_bytes,
        snapshot_id: s.name.clone(),
        source_volume_id: volume.to_string(),
        creation_time: convoy_core::parse_ruby_date(&s.created_time)
            .map(|seconds| prost_types::Timestamp { seconds, nanos: 0 }),
        ready_to_use: true,
        group_snapshot_id: String::new(),
    }
}

impl Csi {
    pub(crate) async fn snapshot_create(
        &self,
        r: CreateSnapshotRequest,
    ) -> Result<Snapshot, Status> {
        let volume = required(&r.source_volume_id, "source_volume_id")?.to_string();
        let name = required(&r.name, "name")?;
        if let Some(key) = r.parameters.keys().next() {
            return Err(Status::invalid_argument(format!(
                "snapshots take no parameters (got {key:?})"
            )));
        }
        let id = convoy_name(name);
        let _guard = self.lock(&id).await;
        match self.manager.inspect_snapshot(&id).await {
            Ok(s) if s.volume_name == volume => return Ok(csi_snapshot(&s, &volume)),
            Ok(s) => {
                return Err(Status::already_exists(format!(
                    "snapshot {name:?} exists, of volume {} not {volume}",
                    s.volume_name
                )))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(util::status(e)),
        }
        self.manager
            .inspect_volume(&volume)
            .await
            .map_err(util::status)?;
        let made = self
            .manager
            .create_snapshot(&volume, Some(id.clone()))
            .await
            .map_err(util::status)?;
        // The answer of create leaves the volume's keys out on some paths: ask for the whole.
        let s = self
            .manager
            .inspect_snapshot(&made.name)
            .await
            .map_err(util::status)?;
        Ok(csi_snapshot(&s, &volume))
    }

    pub(crate) async fn snapshot_delete(&self, id: String) -> Result<(), Status> {
        let _guard = self.lock(&id).await;
        match self.manager.delete_snapshot(&id).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(util::status(e)),
        }
    }

    pub(crate) async fn snapshot_list(
        &self,
        r: ListSnapshotsRequest,
    ) -> Result<ListSnapshotsResponse, Status> {
        let volumes = self
            .manager
            .list_volumes(None)
            .await
            .map_err(util::status)?;
        let mut all: Vec<Snapshot> = volumes
            .iter()
            .filter(|v| r.source_volume_id.is_empty() || v.name == r.source_volume_id)
            .flat_map(|v| v.snapshots.values().map(|s| csi_snapshot(s, &v.name)))
            .filter(|s| r.snapshot_id.is_empty() || s.snapshot_id == r.snapshot_id)
            .collect();
        all.sort_by(|a, b| a.snapshot_id.cmp(&b.snapshot_id));
        let (page, next_token) = util::page(all, &r.starting_token, r.max_entries)?;
        Ok(ListSnapshotsResponse {
            entries: page
                .into_iter()
                .map(|s| list_snapshots_response::Entry { snapshot: Some(s) })
                .collect(),
            next_token,
        })
    }
}
