//! The Controller service: volumes (create, delete, clone, restore, expand, validate, list,
//! get) and capacity. Snapshot RPCs are in `snapshots`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use convoy_core::{ErrorKind, StoreOptions, Volume as ConvoyVolume};
use tonic::{Request, Response, Status};

use crate::pb::controller_server::Controller;
use crate::pb::controller_service_capability::{rpc, Rpc, Type as CapType};
use crate::pb::volume_capability::access_mode::Mode;
use crate::pb::volume_capability::AccessType;
use crate::pb::volume_content_source::Type as SourceType;
use crate::pb::*;
use crate::records::{self, VolumeRequest};
use crate::util::{self, convoy_name, detached, required};
use crate::Csi;

/// Parameter: the convoy driver (`devicemapper`, `vfs`); default the daemon's default driver.
pub const PARAM_DRIVER: &str = "driver";
/// Parameter: the filesystem (`ext4`, `xfs`); must be the pool's (see docs/csi.md).
pub const PARAM_FS_TYPE: &str = "fsType";
/// Parameter: restore the new volume from this convoy backup URL.
pub const PARAM_BACKUP_URL: &str = "backupURL";
/// Parameter: S3 endpoint for `backupURL`.
pub const PARAM_S3_ENDPOINT: &str = "s3Endpoint";
/// Parameters under this prefix are the external-provisioner's metadata, accepted and ignored.
const K8S_PREFIX: &str = "csi.storage.k8s.io/";

/// A volume's size in bytes from its `DriverInfo` (`Size`; 0 when the driver has none).
pub(crate) fn volume_size(v: &ConvoyVolume) -> i64 {
    v.driver_info
        .get("Size")
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or(0)
}

/// A string value of an `info` section.
pub(crate) fn info_str(section: Option<&BTreeMap<String, String>>, key: &str) -> Option<String> {
    section?.get(key).cloned()
}

/// Checks that convoy can serve every capability in `caps` on `driver` whose pool makes
/// `pool_fs` filesystems; `Err(reason)` names the first it cannot.
pub(crate) fn check_capabilities(
    caps: &[VolumeCapability],
    driver: &str,
    pool_fs: Option<&str>,
) -> Result<(), String> {
    for cap in caps {
        match cap.access_type.as_ref() {
            None => return Err("a volume capability has no access type".into()),
            Some(AccessType::Block(_)) if driver == "vfs" => {
                return Err(
                    "the vfs driver has no block devices: raw block access needs devicemapper"
                        .into(),
                )
            }
            Some(AccessType::Block(_)) => {}
            Some(AccessType::Mount(m)) => {
                if !m.fs_type.is_empty() {
                    if driver == "vfs" {
                        return Err(format!(
                            "the vfs driver makes directories, not {} filesystems",
                            m.fs_type
                        ));
                    }
                    if pool_fs.is_some_and(|fs| fs != m.fs_type) {
                        return Err(format!(
                            "this pool makes {} filesystems, not {} (one filesystem per pool: dm.fs)",
                            pool_fs.unwrap_or_default(),
                            m.fs_type
                        ));
                    }
                }
                if !m.mount_flags.is_empty() {
                    return Err("mount flags are not supported".into());
                }
            }
        }
        let mode = cap.access_mode.as_ref().map(|m| m.mode);
        match mode.and_then(|m| Mode::try_from(m).ok()) {
            Some(Mode::SingleNodeWriter | Mode::SingleNodeReaderOnly) => {}
            None => return Err("a volume capability has no access mode".into()),
            Some(other) => {
                return Err(format!(
                    "access mode {} is not supported: convoy volumes are local to one node",
                    other.as_str_name()
                ))
            }
        }
    }
    Ok(())
}

impl Csi {
    /// The driver a request names (parameter `driver`) or the default one, and its pool's
    /// filesystem.
    pub(crate) async fn driver_of(
        &self,
        parameters: &HashMap<String, String>,
    ) -> Result<(String, Option<String>), Status> {
        let info = self.manager.info().await.map_err(util::status)?;
        let driver = match parameters.get(PARAM_DRIVER) {
            Some(d) => d.clone(),
            None => info_str(Some(&info.general), "DefaultDriver").unwrap_or_default(),
        };
        let Some(section) = info.drivers.get(&driver) else {
            return Err(Status::invalid_argument(format!(
                "driver {driver:?} is not enabled in this daemon"
            )));
        };
        Ok((driver, info_str(Some(section), "Filesystem")))
    }

    /// A convoy volume as a CSI volume.
    pub(crate) fn csi_volume(&self, v: &ConvoyVolume, source: &str) -> Volume {
        let content_source = match source.split_once(':') {
            Some(("snapshot", id)) => Some(VolumeContentSource {
                r#type: Some(SourceType::Snapshot(
                    volume_content_source::SnapshotSource {
                        snapshot_id: id.into(),
                    },
                )),
            }),
            Some(("volume", id)) => Some(VolumeContentSource {
                r#type: Some(SourceType::Volume(volume_content_source::VolumeSource {
                    volume_id: id.into(),
                })),
            }),
            _ => None,
        };
        Volume {
            capacity_bytes: volume_size(v),
            volume_id: v.name.clone(),
            volume_context: HashMap::from([("driver".to_string(), v.driver.clone())]),
            content_source,
            accessible_topology: vec![self.topology()],
        }
    }

    /// The condition of a volume: abnormal when its device node is missing.
    pub(crate) fn condition(v: &ConvoyVolume) -> VolumeCondition {
        match v.driver_info.get("Device").filter(|d| !d.is_empty()) {
            Some(device) if !std::path::Path::new(device).exists() => VolumeCondition {
                abnormal: true,
                message: format!("the volume's device {device} is missing"),
            },
            _ => VolumeCondition {
                abnormal: false,
                message: "healthy".into(),
            },
        }
    }

    async fn create(&self, r: CreateVolumeRequest) -> Result<Volume, Status> {
        let name = required(&r.name, "name")?.to_string();
        if r.volume_capabilities.is_empty() {
            return Err(Status::invalid_argument("volume_capabilities is required"));
        }
        for key in r.parameters.keys() {
            let known = [
                PARAM_DRIVER,
                PARAM_FS_TYPE,
                PARAM_BACKUP_URL,
                PARAM_S3_ENDPOINT,
            ];
            if !known.contains(&key.as_str()) && !key.starts_with(K8S_PREFIX) {
                return Err(Status::invalid_argument(format!(
                    "unknown parameter {key:?} (known: {})",
                    known.join(", ")
                )));
            }
        }
        let (driver, pool_fs) = self.driver_of(&r.parameters).await?;
        if let Some(fs) = r.parameters.get(PARAM_FS_TYPE) {
            if !matches!(fs.as_str(), "ext4" | "xfs") {
                return Err(Status::invalid_argument(format!(
                    "fsType {fs:?}: convoy makes ext4 or xfs"
                )));
            }
            let cap = VolumeCapability {
                access_type: Some(AccessType::Mount(volume_capability::MountVolume {
                    fs_type: fs.clone(),
                    ..Default::default()
                })),
                access_mode: Some(volume_capability::AccessMode {
                    mode: Mode::SingleNodeWriter as i32,
                }),
            };
            check_capabilities(&[cap], &driver, pool_fs.as_deref())
                .map_err(Status::invalid_argument)?;
        }
        check_capabilities(&r.volume_capabilities, &driver, pool_fs.as_deref())
            .map_err(Status::invalid_argument)?;
        let range = r.capacity_range.unwrap_or_default();
        let (required_bytes, limit_bytes) = (range.required_bytes, range.limit_bytes);
        if required_bytes < 0 || limit_bytes < 0 {
            return Err(Status::invalid_argument(
                "capacity_range must not be negative",
            ));
        }
        if limit_bytes > 0 && required_bytes > limit_bytes {
            return Err(Status::out_of_range(format!(
                "required_bytes {required_bytes} is above limit_bytes {limit_bytes}"
            )));
        }
        if let Some(requisite) = r.accessibility_requirements.as_ref().map(|a| &a.requisite) {
            if !requisite.is_empty() && !requisite.iter().any(|t| self.on_this_node(t)) {
                return Err(Status::resource_exhausted(format!(
                    "no requisite topology names this node ({})",
                    self.settings.node_id
                )));
            }
        }
        let source = match r.volume_content_source.and_then(|s| s.r#type) {
            Some(SourceType::Snapshot(s)) => {
                format!("snapshot:{}", required(&s.snapshot_id, "snapshot_id")?)
            }
            Some(SourceType::Volume(v)) => {
                format!("volume:{}", required(&v.volume_id, "volume_id")?)
            }
            None => String::new(),
        };
        let request = VolumeRequest {
            name: name.clone(),
            required_bytes,
            limit_bytes,
            parameters: r.parameters.clone().into_iter().collect(),
            source: source.clone(),
        };
        let id = convoy_name(&name);
        let _guard = self.lock(&id).await;
        let dir = self.records_dir().to_path_buf();
        match self.manager.inspect_volume(&id).await {
            Ok(existing) => {
                return match records::load(&dir, &id)? {
                    Some(recorded) if recorded == request => {
                        Ok(self.csi_volume(&existing, &source))
                    }
                    Some(_) => Err(Status::already_exists(format!(
                        "volume {name:?} exists with a different capacity, parameters or source"
                    ))),
                    None => Err(Status::already_exists(format!(
                        "a convoy volume named {id} exists that CSI did not create"
                    ))),
                };
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(util::status(e)),
        }
        // The source must exist: NOT_FOUND as the spec names it.
        let mut new = convoy_core::CreateVolumeRequest {
            name: Some(id.clone()),
            driver: Some(driver),
            ..Default::default()
        };
        let size = if required_bytes > 0 {
            required_bytes
        } else {
            limit_bytes
        };
        match source.split_once(':') {
            Some(("snapshot", snap)) => {
                self.manager
                    .inspect_snapshot(snap)
                    .await
                    .map_err(util::status)?;
                new.from_snapshot = Some(snap.to_string());
            }
            Some(("volume", vol)) => {
                self.manager
                    .inspect_volume(vol)
                    .await
                    .map_err(util::status)?;
                new.from_volume = Some(vol.to_string());
            }
            _ => {
                if let Some(url) = r.parameters.get(PARAM_BACKUP_URL) {
                    new.backup_url = Some(url.clone());
                    new.store = StoreOptions {
                        s3_endpoint: r.parameters.get(PARAM_S3_ENDPOINT).cloned(),
                        ..StoreOptions::default()
                    };
                    if size > 0 {
                        new.size = Some(size as u64);
                        new.grow = true;
                    }
                } else if size > 0 {
                    new.size = Some(size as u64);
                }
            }
        }
        records::save(&dir, &id, &request)?;
        // Through the daemon's metrics: a restore is measured as the daemon's own are.
        let made = convoy_daemon::metrics::measured::create_volume(
            &self.manager,
            new,
            Arc::new(convoy_core::NoProgress),
        )
        .await
        .map_err(util::status);
        let mut volume = match made {
            Ok(v) => v,
            Err(status) => {
                records::remove(&dir, &id)?;
                return Err(status);
            }
        };
        // A clone has its source's size: grow it to the size asked for.
        if !source.is_empty() && size > volume_size(&volume) && volume_size(&volume) > 0 {
            match self.manager.expand_volume(&id, size as u64).await {
                Ok(v) => volume = v,
                Err(e) => return Err(self.undo_create(&id, util::status(e)).await),
            }
        }
        let capacity = volume_size(&volume);
        if limit_bytes > 0 && capacity > limit_bytes {
            let status = Status::out_of_range(format!(
                "the volume would be {capacity} bytes, above limit_bytes {limit_bytes}"
            ));
            return Err(self.undo_create(&id, status).await);
        }
        Ok(self.csi_volume(&volume, &source))
    }

    /// Deletes a volume this call just made (and its record); answers `status`.
    async fn undo_create(&self, id: &str, status: Status) -> Status {
        if let Err(e) = self.manager.delete_volume(id, false).await {
            tracing::warn!(volume = id, error = %e, "cannot remove the volume of a failed CreateVolume");
            return status;
        }
        if let Err(e) = records::remove(self.records_dir(), id) {
            tracing::warn!(volume = id, error = %e, "cannot remove a CSI record");
        }
        status
    }

    pub(crate) fn on_this_node(&self, t: &Topology) -> bool {
        t.segments
            .get(crate::TOPOLOGY_KEY)
            .is_some_and(|n| *n == self.settings.node_id)
    }

    async fn delete(&self, id: String) -> Result<(), Status> {
        let _guard = self.lock(&id).await;
        let volume = match self.manager.inspect_volume(&id).await {
            Ok(v) => v,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return records::remove(self.records_dir(), &id);
            }
            Err(e) => return Err(util::status(e)),
        };
        if !volume.snapshots.is_empty() {
            return Err(Status::failed_precondition(format!(
                "volume {id} has snapshots ({}); convoy snapshots belong to their volume: delete them first",
                volume.snapshots.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        // A staged or published volume (a vfs bind mount, a raw block device node bound on a
        // file: neither is a mount the daemon tracks) is not deleted under its pods.
        if let Some(at) = crate::mounts::mounts_of(&volume)?.first() {
            return Err(Status::failed_precondition(format!(
                "volume {id} is mounted at {} (staged or published): unpublish and unstage it first",
                at.display()
            )));
        }
        match self.manager.delete_volume(&id, false).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(util::status(e)),
        }
        records::remove(self.records_dir(), &id)
    }

    async fn source_of(&self, id: &str) -> String {
        records::load(self.records_dir(), id)
            .ok()
            .flatten()
            .map(|r| r.source)
            .unwrap_or_default()
    }
}

#[tonic::async_trait]
impl Controller for Csi {
    async fn create_volume(
        &self,
        request: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        let me = self.clone();
        let volume = detached("CreateVolume", async move {
            me.create(request.into_inner()).await
        })
        .await?;
        Ok(Response::new(CreateVolumeResponse {
            volume: Some(volume),
        }))
    }

    async fn delete_volume(
        &self,
        request: Request<DeleteVolumeRequest>,
    ) -> Result<Response<DeleteVolumeResponse>, Status> {
        let id = required(&request.get_ref().volume_id, "volume_id")?.to_string();
        let me = self.clone();
        detached("DeleteVolume", async move { me.delete(id).await }).await?;
        Ok(Response::new(DeleteVolumeResponse {}))
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        let r = request.into_inner();
        let id = required(&r.volume_id, "volume_id")?;
        if r.volume_capabilities.is_empty() {
            return Err(Status::invalid_argument("volume_capabilities is required"));
        }
        let volume = self
            .manager
            .inspect_volume(id)
            .await
            .map_err(util::status)?;
        let pool_fs = volume.driver_info.get("Filesystem").cloned();
        let answer =
            match check_capabilities(&r.volume_capabilities, &volume.driver, pool_fs.as_deref()) {
                Ok(()) => ValidateVolumeCapabilitiesResponse {
                    confirmed: Some(validate_volume_capabilities_response::Confirmed {
                        volume_context: r.volume_context,
                        volume_capabilities: r.volume_capabilities,
                        parameters: r.parameters,
                        mutable_parameters: r.mutable_parameters,
                    }),
                    message: String::new(),
                },
                Err(reason) => ValidateVolumeCapabilitiesResponse {
                    confirmed: None,
                    message: reason,
                },
            };
        Ok(Response::new(answer))
    }

    async fn list_volumes(
        &self,
        request: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        let r = request.into_inner();
        let mut all: Vec<ConvoyVolume> = self
            .manager
            .list_volumes(None)
            .await
            .map_err(util::status)?;
        all.sort_by(|a, b| a.name.cmp(&b.name));
        let (page, next_token) = util::page(all, &r.starting_token, r.max_entries)?;
        let mut entries = Vec::with_capacity(page.len());
        for v in page {
            let source = self.source_of(&v.name).await;
            entries.push(list_volumes_response::Entry {
                volume: Some(self.csi_volume(&v, &source)),
                status: Some(list_volumes_response::VolumeStatus {
                    published_node_ids: Vec::new(),
                    volume_condition: Some(Self::condition(&v)),
                }),
            });
        }
        Ok(Response::new(ListVolumesResponse {
            entries,
            next_token,
        }))
    }

    async fn get_capacity(
        &self,
        request: Request<GetCapacityRequest>,
    ) -> Result<Response<GetCapacityResponse>, Status> {
        let me = self.clone();
        let answer = detached("GetCapacity", async move {
            me.capacity(request.into_inner()).await
        })
        .await?;
        Ok(Response::new(answer))
    }

    async fn controller_get_capabilities(
        &self,
        _request: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        let mut types = vec![
            rpc::Type::CreateDeleteVolume,
            rpc::Type::ListVolumes,
            rpc::Type::GetCapacity,
            rpc::Type::CreateDeleteSnapshot,
            rpc::Type::ListSnapshots,
            rpc::Type::CloneVolume,
            rpc::Type::VolumeCondition,
            rpc::Type::GetVolume,
        ];
        if self.has_block_driver().await? {
            types.push(rpc::Type::ExpandVolume);
        }
        let capabilities = types
            .into_iter()
            .map(|t| ControllerServiceCapability {
                r#type: Some(CapType::Rpc(Rpc { r#type: t as i32 })),
            })
            .collect();
        Ok(Response::new(ControllerGetCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn create_snapshot(
        &self,
        request: Request<CreateSnapshotRequest>,
    ) -> Result<Response<CreateSnapshotResponse>, Status> {
        let me = self.clone();
        let snapshot = detached("CreateSnapshot", async move {
            me.snapshot_create(request.into_inner()).await
        })
        .await?;
        Ok(Response::new(CreateSnapshotResponse {
            snapshot: Some(snapshot),
        }))
    }

    async fn delete_snapshot(
        &self,
        request: Request<DeleteSnapshotRequest>,
    ) -> Result<Response<DeleteSnapshotResponse>, Status> {
        let id = required(&request.get_ref().snapshot_id, "snapshot_id")?.to_string();
        let me = self.clone();
        detached(
            "DeleteSnapshot",
            async move { me.snapshot_delete(id).await },
        )
        .await?;
        Ok(Response::new(DeleteSnapshotResponse {}))
    }

    async fn list_snapshots(
        &self,
        request: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        Ok(Response::new(
            self.snapshot_list(request.into_inner()).await?,
        ))
    }

    async fn controller_expand_volume(
        &self,
        request: Request<ControllerExpandVolumeRequest>,
    ) -> Result<Response<ControllerExpandVolumeResponse>, Status> {
        let me = self.clone();
        let answer = detached("ControllerExpandVolume", async move {
            me.expand(request.into_inner()).await
        })
        .await?;
        Ok(Response::new(answer))
    }

    async fn controller_get_volume(
        &self,
        request: Request<ControllerGetVolumeRequest>,
    ) -> Result<Response<ControllerGetVolumeResponse>, Status> {
        let id = required(&request.get_ref().volume_id, "volume_id")?;
        let volume = self
            .manager
            .inspect_volume(id)
            .await
            .map_err(util::status)?;
        let source = self.source_of(id).await;
        Ok(Response::new(ControllerGetVolumeResponse {
            volume: Some(self.csi_volume(&volume, &source)),
            status: Some(controller_get_volume_response::VolumeStatus {
                published_node_ids: Vec::new(),
                volume_condition: Some(Self::condition(&volume)),
            }),
        }))
    }
}
