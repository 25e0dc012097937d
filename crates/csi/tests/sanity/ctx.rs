//! The per-case context's helpers (csi-sanity's `TestContext`, `Resources` and the
//! request makers of `pkg/sanity`): unique names, capabilities, requests, creating and
//! deleting what a case makes (remembered for the clean-up), the declared capabilities, the
//! Node staging and publishing the Node cases share, and the clean-up itself.

use std::future::Future;
use std::path::PathBuf;

use convoy_csi::pb::controller_service_capability::rpc::Type as CtrlRpc;
use convoy_csi::pb::node_service_capability::rpc::Type as NodeRpc;
use convoy_csi::pb::plugin_capability::service::Type as PluginService;
use convoy_csi::pb::volume_capability::access_mode::Mode;
use convoy_csi::pb::*;
use tonic::{Code, Response, Status};

use super::{Ctx, Made};

/// Asserts `r` succeeded or failed with NOT_FOUND (csi-sanity's `expectNoErrorOrMissing`).
fn ok_or_missing<T>(r: Result<T, Status>, what: String) -> Option<String> {
    match r {
        Ok(_) => None,
        Err(e) if e.code() == Code::NotFound => None,
        Err(e) => Some(format!("{what} failed: {e:?}")),
    }
}

impl Ctx {
    /// csi-sanity's `UniqueString`: `prefix` and the run's suffix.
    pub fn unique(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.suffix)
    }

    /// A unique name of exactly `len` characters (csi-sanity's `UniqueStringWithLength`).
    pub fn unique_with_length(&self, prefix: &str, len: usize) -> String {
        let mut name = self.unique(prefix);
        while name.len() < len {
            name.push('a');
        }
        name.truncate(len);
        name
    }

    /// The publish target csi-sanity uses: `<TargetPath>/target`, made by the driver.
    pub fn target(&self) -> PathBuf {
        self.mount_dir.join("target")
    }

    /// A volume capability with `mode` and the suite's access type
    /// (`TestVolumeCapabilityWithAccessType`).
    pub fn cap(&self, mode: Mode) -> VolumeCapability {
        let access_type = if self.config.block {
            volume_capability::AccessType::Block(volume_capability::BlockVolume {})
        } else {
            volume_capability::AccessType::Mount(volume_capability::MountVolume::default())
        };
        VolumeCapability {
            access_type: Some(access_type),
            access_mode: Some(volume_capability::AccessMode { mode: mode as i32 }),
        }
    }

    /// The single-node-writer capability most cases use.
    pub fn writer(&self) -> VolumeCapability {
        self.cap(Mode::SingleNodeWriter)
    }

    /// csi-sanity's `MakeCreateVolumeReq`: required = limit = the test size.
    pub fn make_create_volume_req(&self, name: &str) -> CreateVolumeRequest {
        CreateVolumeRequest {
            name: name.into(),
            volume_capabilities: vec![self.writer()],
            capacity_range: Some(CapacityRange {
                required_bytes: self.config.volume_size,
                limit_bytes: self.config.volume_size,
            }),
            parameters: self.config.parameters.clone(),
            ..Default::default()
        }
    }

    /// A create with `required_bytes` only (the form most Controller cases send).
    pub fn create_req_required(&self, name: &str) -> CreateVolumeRequest {
        let mut req = self.make_create_volume_req(name);
        req.capacity_range = Some(CapacityRange {
            required_bytes: self.config.volume_size,
            limit_bytes: 0,
        });
        req
    }

    /// csi-sanity's `MakeCreateSnapshotReq`.
    pub fn make_create_snapshot_req(&self, name: &str, source: &str) -> CreateSnapshotRequest {
        CreateSnapshotRequest {
            name: name.into(),
            source_volume_id: source.into(),
            ..Default::default()
        }
    }

    fn remember(&self, made: Made) {
        self.made.lock().unwrap().push(made);
    }

    fn forget(&self, id: &str) {
        let mut made = self.made.lock().unwrap();
        if let Some(i) = made.iter().position(|m| match m {
            Made::Volume(v) | Made::Snapshot(v) => v == id,
        }) {
            made.remove(i);
        }
    }

    /// CreateVolume, the volume remembered for clean-up when made.
    pub async fn create_volume(
        &self,
        req: CreateVolumeRequest,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        let answer = self.c.clone().create_volume(req).await;
        if let Ok(a) = &answer {
            if let Some(v) = a
                .get_ref()
                .volume
                .as_ref()
                .filter(|v| !v.volume_id.is_empty())
            {
                self.remember(Made::Volume(v.volume_id.clone()));
            }
        }
        answer
    }

    /// CreateVolume that must succeed with a volume id (`MustCreateVolume`).
    #[track_caller]
    pub fn must_create_volume(
        &self,
        req: CreateVolumeRequest,
    ) -> impl Future<Output = Volume> + Send + '_ {
        let caller = std::panic::Location::caller();
        async move {
            let answer = self
                .create_volume(req)
                .await
                .unwrap_or_else(|e| panic!("volume create failed ({caller}): {e:?}"));
            let v = answer
                .into_inner()
                .volume
                .expect("volume in response is nil");
            assert!(!v.volume_id.is_empty(), "volume ID in response is missing");
            v
        }
    }

    /// DeleteVolume, forgetting the volume when it succeeds.
    pub async fn delete_volume(&self, id: &str) -> Result<(), Status> {
        self.c
            .clone()
            .delete_volume(DeleteVolumeRequest {
                volume_id: id.into(),
                ..Default::default()
            })
            .await?;
        self.forget(id);
        Ok(())
    }

    /// CreateSnapshot, the snapshot remembered for clean-up when made.
    pub async fn create_snapshot(
        &self,
        req: CreateSnapshotRequest,
    ) -> Result<Response<CreateSnapshotResponse>, Status> {
        let answer = self.c.clone().create_snapshot(req).await;
        if let Ok(a) = &answer {
            if let Some(s) = a
                .get_ref()
                .snapshot
                .as_ref()
                .filter(|s| !s.snapshot_id.is_empty())
            {
                self.remember(Made::Snapshot(s.snapshot_id.clone()));
            }
        }
        answer
    }

    /// CreateSnapshot that must succeed with a complete snapshot (`MustCreateSnapshot`).
    pub async fn must_create_snapshot(&self, req: CreateSnapshotRequest) -> Snapshot {
        let answer = self
            .create_snapshot(req)
            .await
            .unwrap_or_else(|e| panic!("create snapshot failed: {e:?}"));
        let s = answer.into_inner().snapshot.expect("snapshot is nil");
        verify_snapshot(&s);
        s
    }

    /// A volume from `req`, then a snapshot `name` of it (`MustCreateSnapshotFromVolumeRequest`).
    pub async fn must_create_snapshot_from_volume(
        &self,
        req: CreateVolumeRequest,
        name: &str,
    ) -> (Snapshot, Volume) {
        let v = self.must_create_volume(req).await;
        let s = self
            .must_create_snapshot(self.make_create_snapshot_req(name, &v.volume_id))
            .await;
        (s, v)
    }

    /// DeleteSnapshot, forgetting the snapshot when it succeeds.
    pub async fn delete_snapshot(&self, id: &str) -> Result<(), Status> {
        self.c
            .clone()
            .delete_snapshot(DeleteSnapshotRequest {
                snapshot_id: id.into(),
                ..Default::default()
            })
            .await?;
        self.forget(id);
        Ok(())
    }

    /// The driver declares Controller capability `t`.
    pub async fn controller_has(&self, t: CtrlRpc) -> bool {
        let caps = self
            .c
            .clone()
            .controller_get_capabilities(ControllerGetCapabilitiesRequest {})
            .await
            .expect("ControllerGetCapabilities")
            .into_inner();
        caps.capabilities.iter().any(|c| match &c.r#type {
            Some(controller_service_capability::Type::Rpc(r)) => r.r#type == t as i32,
            None => false,
        })
    }

    /// The driver declares Node capability `t`.
    pub async fn node_has(&self, t: NodeRpc) -> bool {
        let caps = self
            .n
            .clone()
            .node_get_capabilities(NodeGetCapabilitiesRequest {})
            .await
            .expect("NodeGetCapabilities")
            .into_inner();
        caps.capabilities.iter().any(|c| match &c.r#type {
            Some(node_service_capability::Type::Rpc(r)) => r.r#type == t as i32,
            None => false,
        })
    }

    /// The driver declares plugin service `t`.
    pub async fn plugin_has(&self, t: PluginService) -> bool {
        let caps = self
            .i
            .clone()
            .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
            .await
            .expect("GetPluginCapabilities")
            .into_inner();
        caps.capabilities.iter().any(|c| match &c.r#type {
            Some(plugin_capability::Type::Service(s)) => s.r#type == t as i32,
            _ => false,
        })
    }

    /// NodeGetInfo, checked as csi-sanity checks it before using it.
    pub async fn node_info(&self) -> NodeGetInfoResponse {
        let ni = self
            .n
            .clone()
            .node_get_info(NodeGetInfoRequest {})
            .await
            .expect("NodeGetInfo")
            .into_inner();
        assert!(!ni.node_id.is_empty());
        ni
    }

    /// Stages `v` at the staging dir when staging is declared (the suite's `nodeStageVolume`).
    pub async fn node_stage(&self, v: &Volume) {
        if !self.node_has(NodeRpc::StageUnstageVolume).await {
            return;
        }
        self.n
            .clone()
            .node_stage_volume(NodeStageVolumeRequest {
                volume_id: v.volume_id.clone(),
                staging_target_path: self.staging_dir.display().to_string(),
                volume_capability: Some(self.writer()),
                volume_context: v.volume_context.clone(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("NodeStageVolume: {e:?}"));
    }

    /// Publishes `v` at `<mount>/target` (the suite's `nodePublishVolume`).
    pub async fn node_publish(&self, v: &Volume) {
        let staging = if self.node_has(NodeRpc::StageUnstageVolume).await {
            self.staging_dir.display().to_string()
        } else {
            String::new()
        };
        self.n
            .clone()
            .node_publish_volume(NodePublishVolumeRequest {
                volume_id: v.volume_id.clone(),
                target_path: self.target().display().to_string(),
                staging_target_path: staging,
                volume_capability: Some(self.writer()),
                volume_context: v.volume_context.clone(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("NodePublishVolume: {e:?}"));
    }

    /// The suite's `Resources.Cleanup`: last made first; answers what failed.
    pub(super) async fn cleanup(&self) -> Vec<String> {
        let made: Vec<Made> = std::mem::take(&mut *self.made.lock().unwrap());
        let staging = self.node_has(NodeRpc::StageUnstageVolume).await;
        let mut problems = Vec::new();
        for m in made.into_iter().rev() {
            match m {
                Made::Volume(id) => {
                    let r = self
                        .n
                        .clone()
                        .node_unpublish_volume(NodeUnpublishVolumeRequest {
                            volume_id: id.clone(),
                            target_path: self.target().display().to_string(),
                        })
                        .await;
                    problems.extend(ok_or_missing(r, format!("NodeUnpublishVolume of {id}")));
                    if staging {
                        let r = self
                            .n
                            .clone()
                            .node_unstage_volume(NodeUnstageVolumeRequest {
                                volume_id: id.clone(),
                                staging_target_path: self.staging_dir.display().to_string(),
                            })
                            .await;
                        problems.extend(ok_or_missing(r, format!("NodeUnstageVolume of {id}")));
                    }
                    if let Err(e) = self
                        .c
                        .clone()
                        .delete_volume(DeleteVolumeRequest {
                            volume_id: id.clone(),
                            ..Default::default()
                        })
                        .await
                    {
                        problems.push(format!("DeleteVolume of {id} failed: {e:?}"));
                    }
                }
                Made::Snapshot(id) => {
                    if let Err(e) = self
                        .c
                        .clone()
                        .delete_snapshot(DeleteSnapshotRequest {
                            snapshot_id: id.clone(),
                            ..Default::default()
                        })
                        .await
                    {
                        problems.push(format!("DeleteSnapshot of {id} failed: {e:?}"));
                    }
                }
            }
        }
        problems
    }
}

/// csi-sanity's `verifySnapshotInfo`.
#[track_caller]
pub fn verify_snapshot(s: &Snapshot) {
    assert!(!s.snapshot_id.is_empty(), "snapshot id is empty: {s:?}");
    assert!(
        !s.source_volume_id.is_empty(),
        "source volume id is empty: {s:?}"
    );
    assert!(
        s.creation_time
            .is_some_and(|t| t.seconds != 0 || t.nanos != 0),
        "creation time is zero: {s:?}"
    );
}
