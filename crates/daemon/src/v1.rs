//! Handlers of convoy's `/v1` API: decode the request, call the manager, encode the answer.
//! Errors answer `{"Error": "..."}` with a status chosen by the error's kind, or plain text to
//! the original Convoy client ([`Caller`]). `create`, `mount`, `snapshot create` and
//! `backup create` answer the bare name, mount point or URL as `text/plain` when the request
//! says `"Verbose": false` (the original client's default), the JSON object otherwise.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{FromRequest, Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use convoy_api::wire::*;
use convoy_core::{CreateVolumeRequest, StoreOptions};
use serde::{de::DeserializeOwned, Serialize};

use crate::http::{self, non_empty, required, Caller, Reply};
use crate::progress;
use crate::wire;
use crate::{Daemon, DaemonError, Result};

pub(crate) mod policy;

/// Shared handler state.
pub(crate) type Shared = State<Arc<Daemon>>;

/// One `/v1` call as a handler receives it: who calls (for the form of errors), the route,
/// the query string and the raw body (decoded by [`Call::answer`] / [`Call::reply`], so that a
/// malformed body gets convoy's error, not axum's).
pub(crate) struct Call {
    caller: Caller,
    headers: HeaderMap,
    route: String,
    query: Option<String>,
    body: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for Call {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> std::result::Result<Self, Response> {
        let headers = request.headers().clone();
        let route = request.uri().path().to_string();
        let query = request.uri().query().map(str::to_string);
        let body = Bytes::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Call {
            caller: Caller::of(&headers),
            headers,
            route,
            query,
            body,
        })
    }
}

impl Call {
    /// The request's path, as errors name it.
    fn route(&self) -> String {
        self.route.clone()
    }

    /// Decodes `T`, runs `work` in its own task (a client that hangs up cancels nothing
    /// half-way), encodes its answer (JSON) or its error (in the caller's form).
    async fn answer<T, R, F, Fut>(self, work: F) -> Response
    where
        T: DeserializeOwned + Default,
        R: Serialize + Send + 'static,
        F: FnOnce(T) -> Fut,
        Fut: Future<Output = Result<R>> + Send + 'static,
    {
        self.reply(|request: T| {
            let pending = work(request);
            async move { Reply::json(&pending.await?) }
        })
        .await
    }

    /// Decodes `T`, runs `work` in its own task, sends its [`Reply`] or its error.
    async fn reply<T, F, Fut>(self, work: F) -> Response
    where
        T: DeserializeOwned + Default,
        F: FnOnce(T) -> Fut,
        Fut: Future<Output = Result<Reply>> + Send + 'static,
    {
        match self.parse::<T>(http::NullBody::NoBody) {
            Ok(request) => self.run(work(request)).await,
            Err(e) => self.fail(&e),
        }
    }

    /// Decodes the body (or query) as `T`, with what `null` means on this route.
    fn parse<T: DeserializeOwned + Default>(&self, null: http::NullBody) -> Result<T> {
        http::parse_with(&self.route, self.query.as_deref(), &self.body, null)
    }

    /// Runs `work` (already decoded) in its own task and sends its [`Reply`] or its error.
    async fn run(self, work: impl Future<Output = Result<Reply>> + Send + 'static) -> Response {
        match crate::tasks::detached(&self.route, work).await {
            Ok(reply) => reply.into_response(),
            Err(e) => self.fail(&e),
        }
    }

    /// The error's answer, in the caller's form.
    fn fail(&self, e: &crate::DaemonError) -> Response {
        tracing::warn!(route = self.route, error = %e, "request failed");
        http::error_for(self.caller, e)
    }
}

/// The version of `/v1` this daemon speaks, as the original's `API_VERSION`.
pub(crate) const API_VERSION: &str = "1";

/// Refuses, as the original daemon did, a `/v1` request from another version of its client
/// library (`User-Agent: Convoy-Client/<version>`, version other than [`API_VERSION`]): 404,
/// `client version N doesn't match with server 1`. Other clients are not concerned.
pub(crate) async fn check_client_version(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if request.uri().path().starts_with("/v1/") {
        if let Some(version) = http::client_version(request.headers()) {
            if version != API_VERSION {
                return http::plain(
                    axum::http::StatusCode::NOT_FOUND,
                    format!("client version {version} doesn't match with server {API_VERSION}\n"),
                );
            }
        }
    }
    next.run(request).await
}

/// An empty JSON object, the answer of calls that return nothing.
#[derive(Serialize)]
struct Empty {}

pub(crate) async fn info(State(d): Shared, call: Call) -> Response {
    call.answer(|_: serde_json::Value| async move {
        let mut info = wire::info_response(d.manager.info().await?);
        complete_general(&mut info, d.settings);
        Ok(info)
    })
    .await
}

/// `General` as the original daemon had it: `DriverList` a list, and its other keys
/// (`IgnoreDockerDelete`, `CreateOnDockerMount`, `MountNamespaceFD`, `CmdTimeout`). convoy
/// enters no mount namespace and times out none of its commands, so the last two are empty.
fn complete_general(info: &mut InfoResponse, settings: crate::DaemonSettings) {
    use serde_json::Value;
    let drivers = driver_list(info);
    let general = info.entry("General".to_string()).or_default();
    general.insert(
        "DriverList".into(),
        Value::Array(drivers.into_iter().map(Value::String).collect()),
    );
    general.insert(
        "IgnoreDockerDelete".into(),
        Value::Bool(settings.ignore_docker_delete),
    );
    general.insert(
        "CreateOnDockerMount".into(),
        Value::Bool(settings.create_on_docker_mount),
    );
    general
        .entry("MountNamespaceFD".to_string())
        .or_insert_with(|| Value::String(String::new()));
    general
        .entry("CmdTimeout".to_string())
        .or_insert_with(|| Value::String(String::new()));
}

pub(crate) async fn volume_list(State(d): Shared, call: Call) -> Response {
    call.answer(|r: VolumeListRequest| async move {
        let driver = non_empty(&r.driver_name);
        let volumes = d.manager.list_volumes(driver.as_deref()).await;
        volumes.map(wire::volume_list).map_err(DaemonError::from)
    })
    .await
}

pub(crate) async fn volume_inspect(State(d): Shared, call: Call) -> Response {
    let route = call.route();
    call.answer(|r: VolumeNameRequest| async move {
        let name = required(&route, "VolumeName", &r.volume_name)?;
        let volume = d.manager.inspect_volume(name).await;
        volume.map(wire::volume_response).map_err(DaemonError::from)
    })
    .await
}

pub(crate) async fn volume_create(State(d): Shared, call: Call) -> Response {
    // `null` stands for "no body" on the original client's GETs; here it would create a volume
    // under a generated name from what is no request at all.
    let null = http::NullBody::Refused {
        hint: "send {} to create a volume under a generated name",
    };
    let request = match call.parse::<VolumeCreateRequest>(null) {
        Ok(r) => r,
        Err(e) => return call.fail(&e),
    };
    let verbose = request.verbose;
    let volume = CreateVolumeRequest {
        name: non_empty(&request.name),
        driver: non_empty(&request.driver_name),
        size: request.size,
        backup_url: non_empty(&request.backup_url),
        store: wire::store(non_empty(&request.s3_endpoint)),
        from_snapshot: non_empty(&request.snapshot_name),
        from_volume: non_empty(&request.source_volume_name),
        grow: request.grow,
        instant: request.instant,
    };
    let what = match &volume.backup_url {
        Some(url) => format!("restore of {url} into volume {}", request.name),
        None => format!("create of volume {}", request.name),
    };
    if progress::wants_stream(&call.headers) {
        return progress::stream(
            what,
            move |p| async move { create_volume(&d, volume, p).await },
        );
    }
    let p = progress::OperationProgress::new(what, None);
    call.run(async move {
        let created = create_volume(&d, volume, p).await?;
        Reply::verbose_or(verbose, &created, |v| v.name.clone())
    })
    .await
}

/// Creates a volume (a restore measured) and answers it in wire form.
async fn create_volume(
    d: &Daemon,
    volume: CreateVolumeRequest,
    progress: std::sync::Arc<dyn convoy_core::Progress>,
) -> Result<VolumeResponse> {
    crate::metrics::measured::create_volume(&d.manager, volume, progress)
        .await
        .map(wire::volume_response)
        .map_err(DaemonError::from)
}

/// `POST /v1/volumes/expand` (convoy's addition): `{VolumeName, Size}`.
pub(crate) async fn volume_expand(State(d): Shared, call: Call) -> Response {
    let route = call.route();
    call.answer(|r: VolumeExpandRequest| async move {
        let name = required(&route, "VolumeName", &r.volume_name)?;
        let size = r.size.ok_or_else(|| {
            crate::DaemonError::failed(
                crate::ErrorKind::InvalidArgument,
                format!("{route}: Size is required (the new size, e.g. \"20G\")"),
            )
        })?;
        let volume = d.manager.expand_volume(name, size).await;
        volume.map(wire::volume_response).map_err(DaemonError::from)
    })
    .await
}

/// `POST /v1/snapshots/revert` (convoy's addition): `{SnapshotName}`.
pub(crate) async fn snapshot_revert(State(d): Shared, call: Call) -> Response {
    let route = call.route();
    call.answer(|r: SnapshotNameRequest| async move {
        let name = required(&route, "SnapshotName", &r.snapshot_name)?;
        let volume = d.manager.revert_snapshot(name).await;
        volume.map(wire::volume_response).map_err(DaemonError::from)
    })
    .await
}

pub(crate) async fn volume_delete(State(d): Shared, call: Call) -> Response {
    let route = call.route();
    call.answer(|r: VolumeDeleteRequest| async move {
        let name = required(&route, "VolumeName", &r.volume_name)?;
        // Docker's mount references of the volume go with it (the manager's).
        d.manager.delete_volume(name, r.reference_only).await?;
        d.policies.forget_volume(name)?;
        Ok(Empty {})
    })
    .await
}

pub(crate) async fn volume_mount(State(d): Shared, call: Call) -> Response {
    let route = call.route();
    call.reply(|r: VolumeMountRequest| async move {
        let name = required(&route, "VolumeName", &r.volume_name)?;
        let mount_point = non_empty(&r.mount_point).map(PathBuf::from);
        d.manager.mount_volume(name, mount_point).await?;
        let volume = wire::volume_response(d.manager.inspect_volume(name).await?);
        Reply::verbose_or(r.verbose, &volume, |v| v.mount_point.clone())
    })
    .await
}

pub(crate) async fn volume_umount(State(d): Shared, call: Call) -> Response {
    let route = call.route();
    call.answer(|r: VolumeNameRequest| async move {
        let name = required(&route, "VolumeName", &r.volume_name)?;
        d.manager.umount_volume(name).await?;
        Ok(Empty {})
    })
    .await
}

pub(crate) async fn snapshot_create(State(d): Shared, call: Call) -> Response {
    let route = call.route();
    call.reply(|r: SnapshotCreateRequest| async move {
        let volume = required(&route, "VolumeName", &r.volume_name)?;
        let snapshot = d
            .manager
            .create_snapshot(volume, non_empty(&r.name))
            .await?;
        let snapshot = wire::snapshot_wire(&d.manager, snapshot).await;
        Reply::verbose_or(r.verbose, &snapshot, |s| s.name.clone())
    })
    .await
}

pub(crate) async fn snapshot_inspect(State(d): Shared, call: Call) -> Response {
    let route = call.route();
    call.answer(|r: SnapshotNameRequest| async move {
        let name = required(&route, "SnapshotName", &r.snapshot_name)?;
        let snapshot = d.manager.inspect_snapshot(name).await?;
        Ok(wire::snapshot_wire(&d.manager, snapshot).await)
    })
    .await
}

pub(crate) async fn snapshot_delete(State(d): Shared, call: Call) -> Response {
    let route = call.route();
    call.answer(|r: SnapshotNameRequest| async move {
        let name = required(&route, "SnapshotName", &r.snapshot_name)?;
        d.manager.delete_snapshot(name).await?;
        Ok(Empty {})
    })
    .await
}

pub(crate) async fn backup_create(State(d): Shared, call: Call) -> Response {
    let route = call.route();
    let checked = call
        .parse::<BackupCreateRequest>(http::NullBody::NoBody)
        .and_then(|r| {
            required(&route, "SnapshotName", &r.snapshot_name)?;
            required(&route, "URL", &r.url)?;
            Ok(r)
        });
    let request = match checked {
        Ok(r) => r,
        Err(e) => return call.fail(&e),
    };
    let verbose = request.verbose;
    let limit_upload = d.settings.backup_limit_upload;
    let what = format!(
        "backup of snapshot {} to {}",
        request.snapshot_name, request.url
    );
    let work = move |p| async move {
        let store = StoreOptions {
            limit_upload: request.limit_upload.or(limit_upload),
            ..wire::store(non_empty(&request.s3_endpoint))
        };
        let url = crate::metrics::measured::create_backup(
            &d.manager,
            &request.snapshot_name,
            &request.url,
            &store,
            p,
        )
        .await?;
        Ok(BackupUrlResponse { url })
    };
    if progress::wants_stream(&call.headers) {
        return progress::stream(what, work);
    }
    let p = progress::OperationProgress::new(what, None);
    call.run(async move {
        let created = work(p).await?;
        Reply::verbose_or(verbose, &created, |b| b.url.clone())
    })
    .await
}

pub(crate) async fn backup_list(State(d): Shared, call: Call) -> Response {
    let route = call.route();
    call.answer(|r: BackupListRequest| async move {
        let dest = required(&route, "URL", &r.url)?;
        let volume = non_empty(&r.volume_name);
        let store = wire::store(non_empty(&r.s3_endpoint));
        let backups = d
            .manager
            .list_backups(dest, volume.as_deref(), &store)
            .await;
        backups.map(wire::backup_list).map_err(DaemonError::from)
    })
    .await
}

pub(crate) async fn backup_inspect(State(d): Shared, call: Call) -> Response {
    let route = call.route();
    call.answer(|r: BackupUrlRequest| async move {
        let url = required(&route, "URL", &r.url)?;
        let store = wire::store(non_empty(&r.s3_endpoint));
        let backup = d.manager.inspect_backup(url, &store).await;
        backup.map(wire::backup_response).map_err(DaemonError::from)
    })
    .await
}

pub(crate) async fn backup_delete(State(d): Shared, call: Call) -> Response {
    let route = call.route();
    call.answer(|r: BackupUrlRequest| async move {
        let url = required(&route, "URL", &r.url)?;
        let store = wire::store(non_empty(&r.s3_endpoint));
        d.manager.delete_backup(url, &store).await?;
        Ok(Empty {})
    })
    .await
}

/// `POST /v1/backups/mount` (convoy's addition): `{URL, MountPoint}`.
pub(crate) async fn backup_mount(State(d): Shared, call: Call) -> Response {
    let route = call.route();
    call.answer(|r: BackupMountRequest| async move {
        let url = required(&route, "URL", &r.url)?;
        let at = required(&route, "MountPoint", &r.mount_point)?;
        let store = wire::store(non_empty(&r.s3_endpoint));
        let mount = d.manager.mount_backup(url, Path::new(at), &store).await;
        mount
            .map(wire::backup_mount_response)
            .map_err(DaemonError::from)
    })
    .await
}

/// `POST /v1/backups/umount` (convoy's addition): `{MountPoint}`.
pub(crate) async fn backup_umount(State(d): Shared, call: Call) -> Response {
    let route = call.route();
    call.answer(|r: BackupUmountRequest| async move {
        let at = required(&route, "MountPoint", &r.mount_point)?;
        d.manager.umount_backup(Path::new(at)).await?;
        Ok(Empty {})
    })
    .await
}

/// `GET /v1/backups/mounts` (convoy's addition): mount point → mount.
pub(crate) async fn backup_mounts(State(d): Shared, call: Call) -> Response {
    call.answer(|_: serde_json::Value| async move {
        Ok(wire::backup_mount_list(d.manager.list_backup_mounts()))
    })
    .await
}
