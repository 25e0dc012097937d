//! What the daemon's enabled drivers can do. It decides which optional capabilities the
//! services declare, so that an orchestrator (or a conformance suite) never calls an RPC the
//! pool cannot serve: a daemon whose only driver is vfs (directories, no block devices)
//! declares neither volume expansion nor the SnapshotMetadata service.

use tonic::Status;

use crate::{util, Csi};

/// The one driver without block devices: its volumes are directories, which have no size to
/// grow and no block metadata.
pub(crate) const DIRECTORY_DRIVER: &str = "vfs";

impl Csi {
    /// The drivers enabled in the daemon, read once from `info` (they do not change while the
    /// daemon runs).
    pub(crate) async fn drivers(&self) -> Result<&[String], Status> {
        let drivers = self
            .drivers
            .get_or_try_init(|| async {
                let info = self.manager.info().await.map_err(util::status)?;
                let list = info.general.get("DriverList").cloned().unwrap_or_default();
                Ok::<_, Status>(
                    list.split(',')
                        .map(str::trim)
                        .filter(|d| !d.is_empty())
                        .map(str::to_string)
                        .collect(),
                )
            })
            .await?;
        Ok(drivers)
    }

    /// Some enabled driver makes block devices: volumes that grow (ControllerExpandVolume,
    /// NodeExpandVolume) and snapshots with block metadata (the SnapshotMetadata service).
    pub(crate) async fn has_block_driver(&self) -> Result<bool, Status> {
        Ok(self.drivers().await?.iter().any(|d| d != DIRECTORY_DRIVER))
    }
}
