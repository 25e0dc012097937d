//! The Identity service: plugin name and version, capabilities, and `Probe` reporting the
//! pool's health.

use tonic::{Request, Response, Status};

use crate::pb::identity_server::Identity;
use crate::pb::plugin_capability::{service, volume_expansion, Service, Type, VolumeExpansion};
use crate::pb::*;
use crate::{util, Csi, PLUGIN_NAME};

#[tonic::async_trait]
impl Identity for Csi {
    async fn get_plugin_info(
        &self,
        _request: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        Ok(Response::new(GetPluginInfoResponse {
            name: PLUGIN_NAME.to_string(),
            vendor_version: env!("CARGO_PKG_VERSION").to_string(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _request: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        let service = |t: service::Type| PluginCapability {
            r#type: Some(Type::Service(Service { r#type: t as i32 })),
        };
        let mut capabilities = vec![
            service(service::Type::ControllerService),
            service(service::Type::VolumeAccessibilityConstraints),
        ];
        // Growing volumes and block metadata need a driver with block devices.
        if self.has_block_driver().await? {
            capabilities.push(service(service::Type::SnapshotMetadataService));
            capabilities.push(PluginCapability {
                r#type: Some(Type::VolumeExpansion(VolumeExpansion {
                    r#type: volume_expansion::Type::Online as i32,
                })),
            });
        }
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities,
        }))
    }

    /// Ready when the manager answers `info` and no driver is degraded (a pool that failed to
    /// open or check); a degraded driver is FAILED_PRECONDITION naming why.
    async fn probe(
        &self,
        _request: Request<ProbeRequest>,
    ) -> Result<Response<ProbeResponse>, Status> {
        let manager = self.manager.clone();
        let info = util::detached("Probe", async move {
            manager.info().await.map_err(util::status)
        })
        .await?;
        if let Some((driver, why)) = info.drivers.iter().find_map(|(driver, section)| {
            section
                .get("Degraded")
                .map(|why| (driver.clone(), why.clone()))
        }) {
            return Err(Status::failed_precondition(format!(
                "driver {driver} is degraded: {why}"
            )));
        }
        Ok(Response::new(ProbeResponse { ready: Some(true) }))
    }
}
