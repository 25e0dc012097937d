//! ControllerExpandVolume and GetCapacity.

use tonic::Status;

use crate::controller::{check_capabilities, info_str, volume_size};
use crate::pb::*;
use crate::util::{self, required};
use crate::Csi;

impl Csi {
    pub(crate) async fn expand(
        &self,
        r: ControllerExpandVolumeRequest,
    ) -> Result<ControllerExpandVolumeResponse, Status> {
        let id = required(&r.volume_id, "volume_id")?.to_string();
        let range = r
            .capacity_range
            .ok_or_else(|| Status::invalid_argument("capacity_range is required"))?;
        if range.required_bytes < 0 || range.limit_bytes < 0 {
            return Err(Status::invalid_argument(
                "capacity_range must not be negative",
            ));
        }
        let target = if range.required_bytes > 0 {
            range.required_bytes
        } else {
            range.limit_bytes
        };
        if target == 0 {
            return Err(Status::invalid_argument("capacity_range names no size"));
        }
        let _guard = self.lock(&id).await;
        let volume = self
            .manager
            .inspect_volume(&id)
            .await
            .map_err(util::status)?;
        let current = volume_size(&volume);
        if range.limit_bytes > 0 && current > range.limit_bytes {
            return Err(Status::out_of_range(format!(
                "volume {id} is already {current} bytes, above limit_bytes {}",
                range.limit_bytes
            )));
        }
        let capacity = if current >= target {
            current
        } else {
            let grown = self
                .manager
                .expand_volume(&id, target as u64)
                .await
                .map_err(util::status)?;
            volume_size(&grown)
        };
        // convoy grows the filesystem with the device (online when mounted).
        Ok(ControllerExpandVolumeResponse {
            capacity_bytes: capacity,
            node_expansion_required: false,
        })
    }

    pub(crate) async fn capacity(
        &self,
        r: GetCapacityRequest,
    ) -> Result<GetCapacityResponse, Status> {
        if let Some(t) = &r.accessible_topology {
            if !self.on_this_node(t) {
                return Ok(GetCapacityResponse::default());
            }
        }
        let (driver, pool_fs) = self.driver_of(&r.parameters).await?;
        if check_capabilities(&r.volume_capabilities, &driver, pool_fs.as_deref()).is_err() {
            return Ok(GetCapacityResponse::default());
        }
        let info = self.manager.info().await.map_err(util::status)?;
        let section = info.drivers.get(&driver);
        let num = |key: &str| info_str(section, key).and_then(|s| s.parse::<i64>().ok());
        let available = match (
            num("ThinpoolTotalBlocks"),
            num("ThinpoolUsedBlocks"),
            num("ThinpoolBlockSize"),
        ) {
            (Some(total), Some(used), Some(block)) => (total - used).max(0).saturating_mul(block),
            _ => match info_str(section, "Path") {
                Some(path) => nix::sys::statvfs::statvfs(path.as_str())
                    .map(|s| (s.blocks_available() as i64).saturating_mul(s.fragment_size() as i64))
                    .map_err(|e| Status::internal(format!("statvfs {path}: {e}")))?,
                None => 0,
            },
        };
        Ok(GetCapacityResponse {
            available_capacity: available,
            maximum_volume_size: None,
            minimum_volume_size: None,
        })
    }
}
