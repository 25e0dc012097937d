//! The Node service: stage (mount once per node under the staging path), publish (bind mounts,
//! read-only honoured; raw block volumes bind-mount the device node on a file), stats, expand,
//! info.
//!
//! devicemapper volumes are staged through the manager (`mount_volume` at the staging path),
//! so `convoy list` shows where they are mounted and a volume mounted by CSI cannot be deleted
//! under it. A vfs volume is a directory: it is bind-mounted on the staging path.

use std::collections::HashMap;
use std::path::Path;

use convoy_core::Volume as ConvoyVolume;
use tonic::{Request, Response, Status};

use crate::controller::{check_capabilities, volume_size};
use crate::mounts::{self, VolumeIdentity};
use crate::pb::node_server::Node;
use crate::pb::node_service_capability::{rpc, Rpc, Type as CapType};
use crate::pb::volume_capability::AccessType;
use crate::pb::*;
use crate::util::{self, detached, required, required_path};
use crate::Csi;

fn is_block(cap: &VolumeCapability) -> bool {
    matches!(cap.access_type, Some(AccessType::Block(_)))
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Status {
    Status::internal(format!("{what} {}: {e}", path.display()))
}

/// The volume's device node (devicemapper), checked to exist.
fn device_of(volume: &ConvoyVolume) -> Result<&str, Status> {
    match volume.driver_info.get("Device").filter(|d| !d.is_empty()) {
        Some(d) if Path::new(d).exists() => Ok(d),
        Some(d) => Err(Status::internal(format!(
            "volume {}: its device {d} is missing",
            volume.name
        ))),
        None => Err(Status::invalid_argument(format!(
            "volume {} has no block device (driver {})",
            volume.name, volume.driver
        ))),
    }
}

impl Csi {
    async fn volume(&self, id: &str) -> Result<ConvoyVolume, Status> {
        self.manager.inspect_volume(id).await.map_err(util::status)
    }

    fn check_cap(
        volume: &ConvoyVolume,
        cap: Option<&VolumeCapability>,
    ) -> Result<VolumeCapability, Status> {
        let cap = cap
            .cloned()
            .ok_or_else(|| Status::invalid_argument("volume_capability is required"))?;
        let fs = volume.driver_info.get("Filesystem").map(String::as_str);
        check_capabilities(std::slice::from_ref(&cap), &volume.driver, fs)
            .map_err(Status::invalid_argument)?;
        Ok(cap)
    }

    async fn stage(&self, r: NodeStageVolumeRequest) -> Result<(), Status> {
        let id = required(&r.volume_id, "volume_id")?.to_string();
        let staging = required_path(&r.staging_target_path, "staging_target_path")?;
        let cap = r
            .volume_capability
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("volume_capability is required"))?;
        let _guard = self.lock(&id).await;
        let volume = self.volume(&id).await?;
        let cap = Self::check_cap(&volume, Some(cap))?;
        if is_block(&cap) {
            // Nothing to stage: the device node exists while the volume does.
            device_of(&volume)?;
            return Ok(());
        }
        std::fs::create_dir_all(&staging).map_err(|e| io("cannot create", &staging, e))?;
        if volume.driver != "vfs" && volume.mount_point.as_deref() == Some(staging.as_path()) {
            return Ok(());
        }
        if mounts::mounted_at(&staging)?.is_some() {
            return if VolumeIdentity::of(&volume).is_some_and(|i| i.is_at(&staging)) {
                Ok(())
            } else {
                Err(Status::failed_precondition(format!(
                    "{} holds another mount, not volume {id}",
                    staging.display()
                )))
            };
        }
        if volume.driver == "vfs" {
            let dir = volume.driver_info.get("Path").cloned().unwrap_or_default();
            return mounts::bind(Path::new(&dir), &staging, false);
        }
        self.manager
            .mount_volume(&id, Some(staging))
            .await
            .map_err(util::status)?;
        Ok(())
    }

    async fn unstage(&self, r: NodeUnstageVolumeRequest) -> Result<(), Status> {
        let id = required(&r.volume_id, "volume_id")?.to_string();
        let staging = required_path(&r.staging_target_path, "staging_target_path")?;
        let _guard = self.lock(&id).await;
        let volume = self.volume(&id).await?;
        if volume.mount_point.as_deref() == Some(staging.as_path()) && volume.driver != "vfs" {
            self.manager
                .umount_volume(&id)
                .await
                .map_err(util::status)?;
        }
        mounts::unmount_volume(&staging, &volume)?;
        Ok(())
    }

    async fn publish(&self, r: NodePublishVolumeRequest) -> Result<(), Status> {
        let id = required(&r.volume_id, "volume_id")?.to_string();
        let target = required_path(&r.target_path, "target_path")?;
        let cap_in = r
            .volume_capability
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("volume_capability is required"))?;
        let staging = required_path(&r.staging_target_path, "staging_target_path")?;
        let _guard = self.lock(&id).await;
        let volume = self.volume(&id).await?;
        let cap = Self::check_cap(&volume, Some(cap_in))?;
        let identity = VolumeIdentity::of(&volume);
        if let Some(existing) = mounts::mounted_at(&target)? {
            if identity.is_some_and(|i| !i.is_at(&target)) {
                return Err(Status::failed_precondition(format!(
                    "{} holds another mount, not volume {id}",
                    target.display()
                )));
            }
            if existing.read_only != r.readonly {
                return Err(Status::already_exists(format!(
                    "{} is already published {}",
                    target.display(),
                    if existing.read_only {
                        "read-only"
                    } else {
                        "read-write"
                    }
                )));
            }
            return Ok(());
        }
        if is_block(&cap) {
            let device = device_of(&volume)?;
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io("cannot create", parent, e))?;
            }
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&target)
                .map_err(|e| io("cannot create", &target, e))?;
            return mounts::bind(Path::new(device), &target, r.readonly);
        }
        let staged =
            mounts::mounted_at(&staging)?.is_some() && identity.is_none_or(|i| i.is_at(&staging));
        if !staged {
            return Err(Status::failed_precondition(format!(
                "volume {id} is not staged at {}",
                staging.display()
            )));
        }
        std::fs::create_dir_all(&target).map_err(|e| io("cannot create", &target, e))?;
        mounts::bind(&staging, &target, r.readonly)
    }

    async fn unpublish(&self, r: NodeUnpublishVolumeRequest) -> Result<(), Status> {
        let id = required(&r.volume_id, "volume_id")?.to_string();
        let target = required_path(&r.target_path, "target_path")?;
        let _guard = self.lock(&id).await;
        let volume = self.volume(&id).await?;
        if !mounts::unmount_volume(&target, &volume)? {
            // Another volume is published there: this one is not, nothing to undo.
            return Ok(());
        }
        // The spec: the plugin removes the file or directory it made at the target path.
        let removed = match std::fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() => std::fs::remove_dir(&target),
            Ok(_) => std::fs::remove_file(&target),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        removed.map_err(|e| io("cannot remove", &target, e))
    }

    /// The path a Node RPC names for volume `volume`: NOT_FOUND unless it is an absolute path
    /// that holds the volume (mounted there, staged there or published on a file there).
    fn volume_at(volume: &ConvoyVolume, path: &str) -> Result<std::path::PathBuf, Status> {
        let not_here = |why: &str| {
            Status::not_found(format!("volume {} is not at {path:?}: {why}", volume.name))
        };
        let path = Path::new(path);
        if !path.is_absolute() {
            return Err(not_here("not an absolute path"));
        }
        std::fs::metadata(path).map_err(|e| not_here(&e.to_string()))?;
        // A volume whose device node is missing cannot be recognised; its stats report it
        // abnormal instead.
        if VolumeIdentity::of(volume).is_some_and(|i| !i.is_at(path)) {
            return Err(not_here("the path holds something else"));
        }
        Ok(path.to_path_buf())
    }

    async fn stats(
        &self,
        r: NodeGetVolumeStatsRequest,
    ) -> Result<NodeGetVolumeStatsResponse, Status> {
        let id = required(&r.volume_id, "volume_id")?;
        let path = required(&r.volume_path, "volume_path")?;
        let volume = self.volume(id).await?;
        let path = Self::volume_at(&volume, path)?;
        let meta = std::fs::metadata(&path)
            .map_err(|e| Status::not_found(format!("volume path {}: {e}", path.display())))?;
        let condition = Some(Self::condition(&volume));
        if !meta.is_dir() {
            // A raw block volume published on a file: its size is all there is to say.
            let total = volume_size(&volume);
            return Ok(NodeGetVolumeStatsResponse {
                usage: vec![VolumeUsage {
                    available: 0,
                    total,
                    used: 0,
                    unit: volume_usage::Unit::Bytes as i32,
                }],
                volume_condition: condition,
            });
        }
        let s = nix::sys::statvfs::statvfs(&path)
            .map_err(|e| Status::internal(format!("statvfs {}: {e}", path.display())))?;
        let frag = s.fragment_size() as i64;
        let bytes = VolumeUsage {
            available: s.blocks_available() as i64 * frag,
            total: s.blocks() as i64 * frag,
            used: (s.blocks() as i64 - s.blocks_free() as i64) * frag,
            unit: volume_usage::Unit::Bytes as i32,
        };
        let inodes = VolumeUsage {
            available: s.files_available() as i64,
            total: s.files() as i64,
            used: s.files() as i64 - s.files_free() as i64,
            unit: volume_usage::Unit::Inodes as i32,
        };
        Ok(NodeGetVolumeStatsResponse {
            usage: vec![bytes, inodes],
            volume_condition: condition,
        })
    }

    async fn node_expand(
        &self,
        r: NodeExpandVolumeRequest,
    ) -> Result<NodeExpandVolumeResponse, Status> {
        let id = required(&r.volume_id, "volume_id")?.to_string();
        let path = required(&r.volume_path, "volume_path")?.to_string();
        let _guard = self.lock(&id).await;
        let volume = self.volume(&id).await?;
        Self::volume_at(&volume, &path)?;
        let range = r.capacity_range.unwrap_or_default();
        if range.required_bytes < 0 || range.limit_bytes < 0 {
            return Err(Status::invalid_argument(
                "capacity_range must not be negative",
            ));
        }
        let target = range.required_bytes;
        let current = volume_size(&volume);
        if range.limit_bytes > 0 && current > range.limit_bytes {
            return Err(Status::out_of_range(format!(
                "volume {id} is {current} bytes, above limit_bytes {}",
                range.limit_bytes
            )));
        }
        // convoy grows the device and the filesystem together (online when mounted); a node
        // call that asks for more than the volume has does the whole grow here.
        let capacity = if target > current {
            let grown = self
                .manager
                .expand_volume(&id, target as u64)
                .await
                .map_err(util::status)?;
            volume_size(&grown)
        } else {
            current
        };
        Ok(NodeExpandVolumeResponse {
            capacity_bytes: capacity,
        })
    }
}

#[tonic::async_trait]
impl Node for Csi {
    async fn node_stage_volume(
        &self,
        request: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        let me = self.clone();
        detached("NodeStageVolume", async move {
            me.stage(request.into_inner()).await
        })
        .await?;
        Ok(Response::new(NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume(
        &self,
        request: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        let me = self.clone();
        detached("NodeUnstageVolume", async move {
            me.unstage(request.into_inner()).await
        })
        .await?;
        Ok(Response::new(NodeUnstageVolumeResponse {}))
    }

    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let me = self.clone();
        detached("NodePublishVolume", async move {
            me.publish(request.into_inner()).await
        })
        .await?;
        Ok(Response::new(NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let me = self.clone();
        detached("NodeUnpublishVolume", async move {
            me.unpublish(request.into_inner()).await
        })
        .await?;
        Ok(Response::new(NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        Ok(Response::new(self.stats(request.into_inner()).await?))
    }

    async fn node_expand_volume(
        &self,
        request: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        let me = self.clone();
        let answer = detached("NodeExpandVolume", async move {
            me.node_expand(request.into_inner()).await
        })
        .await?;
        Ok(Response::new(answer))
    }

    async fn node_get_capabilities(
        &self,
        _request: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        let mut types = vec![
            rpc::Type::StageUnstageVolume,
            rpc::Type::GetVolumeStats,
            rpc::Type::VolumeCondition,
        ];
        if self.has_block_driver().await? {
            types.push(rpc::Type::ExpandVolume);
        }
        let capabilities = types
            .into_iter()
            .map(|t| NodeServiceCapability {
                r#type: Some(CapType::Rpc(Rpc { r#type: t as i32 })),
            })
            .collect();
        Ok(Response::new(NodeGetCapabilitiesResponse { capabilities }))
    }

    async fn node_get_info(
        &self,
        _request: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        Ok(Response::new(NodeGetInfoResponse {
            node_id: self.settings.node_id.clone(),
            max_volumes_per_node: self.settings.max_volumes,
            accessible_topology: Some(Topology {
                segments: HashMap::from([(
                    crate::TOPOLOGY_KEY.to_string(),
                    self.settings.node_id.clone(),
                )]),
            }),
        }))
    }
}
