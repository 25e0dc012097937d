//! Handlers of the Docker volume plugin protocol (`docs/docker.md`).
//!
//! Every answer is HTTP 200 with JSON; a failure is reported in `Err`, which dockerd shows the
//! user verbatim. Bodies are parsed whatever their `Content-Type` (dockerd sends none).

use std::collections::BTreeMap;
use std::future::Future;

use axum::extract::State;
use axum::http::Uri;
use axum::response::Response;
use bytes::Bytes;
use convoy_api::plugin::*;
use convoy_api::size::parse_size;
use serde::de::DeserializeOwned;

use convoy_core::CreateVolumeRequest;

use crate::http::{self, required};
use crate::progress;
use crate::v1::Shared;
use crate::wire;
use crate::{Daemon, DaemonError, ErrorKind, Result};

/// `-o` options Docker users may pass to `docker volume create -d convoy`.
const OPTIONS: &[&str] = &[
    "size",
    "backup",
    "driver",
    "endpoint",
    "snapshot",
    "volume",
    "snapshot-every",
    "backup-every",
    "backup-dest",
    "keep-snapshots",
    "keep-backups",
];
/// Options the original Convoy accepted for other drivers; accepted and ignored here.
const IGNORED_OPTIONS: &[&str] = &["id", "type", "iops", "vm"];

/// Decodes `T`, runs `work`; on failure answers `failed(message)`.
async fn answer<T, F, Fut>(
    uri: &Uri,
    body: Bytes,
    failed: fn(String) -> Response,
    work: F,
) -> Response
where
    T: DeserializeOwned + Default,
    F: FnOnce(T) -> Fut,
    Fut: Future<Output = Result<Response>> + Send + 'static,
{
    let route = uri.path();
    let outcome = match http::parse::<T>(route, None, &body) {
        // In its own task: a dockerd that gives up on a `Create -o backup=` (or a Mount)
        // cancels neither the restore nor the mount bookkeeping half-way.
        Ok(request) => crate::tasks::detached(route, work(request)).await,
        Err(e) => Err(e),
    };
    outcome.unwrap_or_else(|e| {
        tracing::warn!(route, error = %e, "Docker request failed");
        failed(e.to_string())
    })
}

fn err_only(err: String) -> Response {
    http::json(&ErrResponse { err })
}

fn err_mountpoint(err: String) -> Response {
    http::json(&MountpointResponse {
        mountpoint: String::new(),
        err,
    })
}

fn err_get(err: String) -> Response {
    http::json(&GetResponse { volume: None, err })
}

fn err_list(err: String) -> Response {
    http::json(&ListResponse {
        volumes: Vec::new(),
        err,
    })
}

fn is_not_found(e: &DaemonError) -> bool {
    e.kind() == ErrorKind::NotFound
}

pub(crate) async fn activate() -> Response {
    http::json(&ActivateResponse {
        implements: vec!["VolumeDriver".to_string()],
    })
}

pub(crate) async fn capabilities() -> Response {
    http::json(&CapabilitiesResponse {
        capabilities: Capabilities {
            scope: "local".to_string(),
        },
    })
}

/// A Docker option's yes or no (`-o instant=true`, `-o instant` gives "").
fn truthy(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "" | "true" | "yes" | "1" | "on" => Some(true),
        "false" | "no" | "0" | "off" => Some(false),
        _ => None,
    }
}

/// Translates Docker `-o` options into a volume to create and, when a policy option is given
/// (`snapshot-every`, `backup-every`, `backup-dest`, `keep-snapshots`, `keep-backups`; the
/// S3 `endpoint` applies to it too), the volume's `default` policy.
fn new_volume(
    name: &str,
    opts: Option<BTreeMap<String, String>>,
) -> Result<(
    CreateVolumeRequest,
    Option<convoy_api::wire::PolicySetRequest>,
)> {
    let bad = |message: String| DaemonError::failed(ErrorKind::InvalidArgument, message);
    let mut volume = CreateVolumeRequest {
        name: Some(name.to_string()),
        ..CreateVolumeRequest::default()
    };
    let mut policy = convoy_api::wire::PolicySetRequest {
        volume_name: name.to_string(),
        ..Default::default()
    };
    let mut has_policy = false;
    for (key, value) in opts.unwrap_or_default() {
        let value = value.trim().to_string();
        match key.to_ascii_lowercase().as_str() {
            "size" => {
                let size = parse_size(&value).map_err(|e| bad(format!("option size: {e}")))?;
                if size == 0 {
                    return Err(bad(format!(
                        "option size: a volume cannot be 0 bytes ({value:?}); leave the option \
                         out for the driver's default"
                    )));
                }
                volume.size = Some(size);
            }
            "backup" => volume.backup_url = Some(value).filter(|v| !v.is_empty()),
            "instant" => {
                volume.instant = truthy(&value)
                    .ok_or_else(|| bad(format!("option instant: {value:?} is not true or false")))?
            }
            "driver" => volume.driver = Some(value).filter(|v| !v.is_empty()),
            "endpoint" => volume.store.s3_endpoint = Some(value).filter(|v| !v.is_empty()),
            "snapshot" => volume.from_snapshot = Some(value).filter(|v| !v.is_empty()),
            "volume" => volume.from_volume = Some(value).filter(|v| !v.is_empty()),
            "snapshot-every" | "backup-every" | "backup-dest" | "keep-snapshots"
            | "keep-backups" => {
                has_policy = true;
                let field = match key.to_ascii_lowercase().as_str() {
                    "snapshot-every" => &mut policy.snapshot_every,
                    "backup-every" => &mut policy.backup_every,
                    "backup-dest" => &mut policy.backup_dest,
                    "keep-snapshots" => &mut policy.keep_snapshots,
                    _ => &mut policy.keep_backups,
                };
                *field = value;
            }
            other if IGNORED_OPTIONS.contains(&other) => {
                tracing::info!(
                    volume = name,
                    option = other,
                    "ignoring option of the original's other drivers"
                );
            }
            _ => {
                return Err(bad(format!(
                    "unknown option {key:?} for convoy volume {name}; accepted options: {}",
                    OPTIONS.join(", ")
                )))
            }
        }
    }
    if has_policy {
        policy.s3_endpoint = volume.store.s3_endpoint.clone().unwrap_or_default();
        return Ok((volume, Some(policy)));
    }
    Ok((volume, None))
}

pub(crate) async fn create(State(d): Shared, uri: Uri, body: Bytes) -> Response {
    let route = uri.path().to_string();
    answer(&uri, body, err_only, |r: CreateRequest| async move {
        let name = required(&route, "Name", &r.name)?;
        let (volume, policy) = new_volume(name, r.opts)?;
        // The policy is checked before anything is made.
        let policy = policy
            .map(|p| crate::v1::policy::policy_of(&route, &p))
            .transpose()?;
        // Idempotent: dockerd may create a volume it already knows (and does after restarts).
        match d
            .manager
            .inspect_volume(name)
            .await
            .map_err(DaemonError::from)
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {
                let what = format!("Docker create of {name}");
                match create_volume(&d, volume, what).await {
                    Ok(()) => tracing::info!(volume = name, "created for Docker"),
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
        if let Some((volume, name, policy)) = policy {
            crate::v1::policy::set_policy(&d, &volume, &name, policy).await?;
        }
        Ok(err_only(String::new()))
    })
    .await
}

/// Creates a volume for Docker (a restore measured), reporting as `what`.
async fn create_volume(d: &Daemon, volume: CreateVolumeRequest, what: String) -> Result<()> {
    let progress = progress::OperationProgress::new(what, None);
    crate::metrics::measured::create_volume(&d.manager, volume, progress)
        .await
        .map(drop)
        .map_err(DaemonError::from)
}

pub(crate) async fn remove(State(d): Shared, uri: Uri, body: Bytes) -> Response {
    let route = uri.path().to_string();
    answer(&uri, body, err_only, |r: NameRequest| async move {
        let name = required(&route, "Name", &r.name)?;
        // A volume that is gone is removed already (dockerd retries); a name that can never be
        // a volume is a bad request, not a success.
        convoy_core::validate_name(name)?;
        if d.settings.ignore_docker_delete {
            tracing::info!(
                volume = name,
                "Docker removed the volume; kept (--ignore-docker-delete)"
            );
            return Ok(err_only(String::new()));
        }
        // Refused while Docker mounts remain, checked under the volume's lock.
        match d
            .manager
            .delete_unheld_volume(name)
            .await
            .map_err(DaemonError::from)
        {
            Ok(()) => tracing::info!(volume = name, "deleted for Docker"),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e),
        }
        d.policies.forget_volume(name)?;
        Ok(err_only(String::new()))
    })
    .await
}

pub(crate) async fn mount(State(d): Shared, uri: Uri, body: Bytes) -> Response {
    let route = uri.path().to_string();
    answer(&uri, body, err_mountpoint, |r: MountRequest| async move {
        let name = required(&route, "Name", &r.name)?;
        if d.settings.create_on_docker_mount {
            match d
                .manager
                .inspect_volume(name)
                .await
                .map_err(DaemonError::from)
            {
                Err(e) if is_not_found(&e) => {
                    tracing::info!(
                        volume = name,
                        "creating on Docker mount (--create-on-docker-mount)"
                    );
                    let what = format!("Docker mount-create of {name}");
                    match create_volume(&d, new_volume(name, None)?.0, what).await {
                        // Another Mount made it meanwhile.
                        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                        other => other?,
                    }
                }
                other => drop(other?),
            }
        }
        // Mounted where it really is, or mounted now: never the record's word alone (a volume
        // unmounted behind convoy's back is mounted again). Under the volume's lock only.
        let mountpoint = d.manager.mount_for(name, &r.id).await?;
        let holders = d.manager.mount_holders(name);
        tracing::info!(volume = name, id = %r.id, holders, "Docker mount");
        Ok(http::json(&MountpointResponse {
            mountpoint: mountpoint.to_string_lossy().into_owned(),
            err: String::new(),
        }))
    })
    .await
}

pub(crate) async fn unmount(State(d): Shared, uri: Uri, body: Bytes) -> Response {
    let route = uri.path().to_string();
    answer(&uri, body, err_only, |r: MountRequest| async move {
        let name = required(&route, "Name", &r.name)?;
        convoy_core::validate_name(name)?;
        // The last holder leaving unmounts the volume (the manager's, under the volume's lock).
        if !d.manager.unmount_for(name, &r.id).await? {
            // Not ours to undo: the ID never mounted (or was already unmounted).
            tracing::warn!(volume = name, id = %r.id, "Docker unmount of an unknown mount ID; nothing to do");
            return Ok(err_only(String::new()));
        }
        let holders = d.manager.mount_holders(name);
        tracing::info!(volume = name, id = %r.id, holders, "Docker unmount");
        Ok(err_only(String::new()))
    })
    .await
}

pub(crate) async fn path(State(d): Shared, uri: Uri, body: Bytes) -> Response {
    let route = uri.path().to_string();
    answer(&uri, body, err_mountpoint, |r: NameRequest| async move {
        let name = required(&route, "Name", &r.name)?;
        let volume = volume(&d, name).await?;
        Ok(http::json(&MountpointResponse {
            mountpoint: volume.mount_point,
            err: String::new(),
        }))
    })
    .await
}

/// One volume in wire form.
async fn volume(d: &Daemon, name: &str) -> Result<convoy_api::wire::VolumeResponse> {
    let volume = d.manager.inspect_volume(name).await?;
    Ok(wire::volume_response(volume))
}

pub(crate) async fn get(State(d): Shared, uri: Uri, body: Bytes) -> Response {
    let route = uri.path().to_string();
    answer(&uri, body, err_get, |r: NameRequest| async move {
        let name = required(&route, "Name", &r.name)?;
        let volume = volume(&d, name).await?;
        let holders = d.manager.mount_holders(name);
        let mut status: BTreeMap<String, serde_json::Value> = volume
            .driver_info
            .into_iter()
            .map(|(k, v)| (k, v.into()))
            .collect();
        status.insert("Driver".into(), volume.driver.into());
        status.insert("CreatedTime".into(), volume.created_time.into());
        status.insert("Snapshots".into(), volume.snapshots.len().into());
        status.insert("DockerMounts".into(), holders.into());
        Ok(http::json(&GetResponse {
            volume: Some(PluginVolume {
                name: volume.name,
                mountpoint: volume.mount_point,
                status: Some(status),
            }),
            err: String::new(),
        }))
    })
    .await
}

pub(crate) async fn list(State(d): Shared, uri: Uri, body: Bytes) -> Response {
    answer(&uri, body, err_list, |_: serde_json::Value| async move {
        let volumes = d.manager.list_volumes(None).await?;
        Ok(http::json(&ListResponse {
            volumes: volumes
                .into_iter()
                .map(wire::volume_response)
                .map(|v| PluginVolume {
                    name: v.name,
                    mountpoint: v.mount_point,
                    status: None,
                })
                .collect(),
            err: String::new(),
        }))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn clone_options_name_the_source() {
        let v = new_volume("c1", opts(&[("snapshot", "snap1")])).unwrap().0;
        assert_eq!(v.from_snapshot.as_deref(), Some("snap1"));
        assert_eq!(v.from_volume, None);
        let v = new_volume("c2", opts(&[("Volume", " vol1 ")])).unwrap().0;
        assert_eq!(v.from_volume.as_deref(), Some("vol1"));
        // Empty means unset, as for backup=.
        let v = new_volume("c3", opts(&[("snapshot", "")])).unwrap().0;
        assert_eq!(v.from_snapshot, None);
        let e = new_volume("c4", opts(&[("snap", "x")])).unwrap_err();
        assert!(e.to_string().contains("snapshot, volume"), "{e}");
    }

    #[test]
    fn policy_options_make_the_volumes_default_policy_and_bad_ones_are_refused() {
        let (v, p) = new_volume(
            "db",
            opts(&[
                ("snapshot-every", "1h"),
                ("Backup-Every", "1d"),
                ("backup-dest", "s3://b@us-east-1/x"),
                ("endpoint", "http://127.0.0.1:9000"),
                ("keep-snapshots", "hourly=24"),
                ("keep-backups", "daily=7"),
            ]),
        )
        .unwrap();
        assert_eq!(v.name.as_deref(), Some("db"));
        let p = p.unwrap();
        let (volume, name, policy) =
            crate::v1::policy::policy_of("/VolumeDriver.Create", &p).unwrap();
        assert_eq!((volume.as_str(), name.as_str()), ("db", "default"));
        assert_eq!(policy.snapshot_every, Some(3600));
        assert_eq!(policy.backup_every, Some(86_400));
        assert_eq!(policy.s3_endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(policy.keep_backups.daily, 7);
        assert!(new_volume("plain", None).unwrap().1.is_none());
        let (_, p) = new_volume("db", opts(&[("backup-every", "1d")])).unwrap();
        let e = crate::v1::policy::policy_of("/VolumeDriver.Create", &p.unwrap()).unwrap_err();
        assert!(e.to_string().contains("backup destination"), "{e}");
        let (_, p) = new_volume("db", opts(&[("snapshot-every", "often")])).unwrap();
        let e = crate::v1::policy::policy_of("/VolumeDriver.Create", &p.unwrap()).unwrap_err();
        assert!(e.to_string().contains("SnapshotEvery"), "{e}");
    }
}
