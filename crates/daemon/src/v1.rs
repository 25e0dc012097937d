//! Handlers of convoy's `/v1` API: decode the request, call the manager, encode the answer.
//! Errors answer `{"Error": "..."}` with a status chosen by the error's kind.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use bytes::Bytes;
use convoy_api::wire::*;
use serde::{de::DeserializeOwned, Serialize};

use crate::http::{self, non_empty, required};
use crate::manager::NewVolume;
use crate::progress;
use crate::{Daemon, Manager, Result};

/// Shared handler state.
pub(crate) type Shared<M> = State<Arc<Daemon<M>>>;

/// Decodes `T`, runs `work`, encodes its answer or its error.
async fn answer<T, R, F, Fut>(uri: &Uri, query: Option<String>, body: Bytes, work: F) -> Response
where
    T: DeserializeOwned + Default,
    R: Serialize,
    F: FnOnce(T) -> Fut,
    Fut: Future<Output = Result<R>>,
{
    let route = uri.path();
    let outcome = match http::parse::<T>(route, query.as_deref(), &body) {
        Ok(request) => work(request).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(value) => http::json(&value),
        Err(e) => {
            tracing::warn!(route, error = %e, "request failed");
            http::error(&e)
        }
    }
}

/// An empty JSON object, the answer of calls that return nothing.
#[derive(Serialize)]
struct Empty {}

pub(crate) async fn info<M: Manager>(
    State(d): Shared<M>,
    uri: Uri,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    answer(&uri, q, body, |_: serde_json::Value| async move {
        d.manager.info().await
    })
    .await
}

pub(crate) async fn volume_list<M: Manager>(
    State(d): Shared<M>,
    uri: Uri,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    answer(&uri, q, body, |r: VolumeListRequest| async move {
        let driver = non_empty(&r.driver_name);
        d.manager.list_volumes(driver.as_deref()).await
    })
    .await
}

pub(crate) async fn volume_inspect<M: Manager>(
    State(d): Shared<M>,
    uri: Uri,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let route = uri.path().to_string();
    answer(&uri, q, body, |r: VolumeNameRequest| async move {
        let name = required(&route, "VolumeName", &r.volume_name)?;
        d.manager.inspect_volume(name).await
    })
    .await
}

pub(crate) async fn volume_create<M: Manager>(
    State(d): Shared<M>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let request = match http::parse::<VolumeCreateRequest>(uri.path(), q.as_deref(), &body) {
        Ok(r) => r,
        Err(e) => return http::error(&e),
    };
    let volume = NewVolume {
        name: non_empty(&request.name),
        driver: non_empty(&request.driver_name),
        size: request.size,
        backup_url: non_empty(&request.backup_url),
        s3_endpoint: non_empty(&request.s3_endpoint),
    };
    let what = match &volume.backup_url {
        Some(url) => format!("restore of {url} into volume {}", request.name),
        None => format!("create of volume {}", request.name),
    };
    if progress::wants_stream(&headers) {
        return progress::stream(what, move |p| async move {
            d.manager.create_volume(volume, p).await
        });
    }
    let p = progress::OperationProgress::new(what, None);
    answer(
        &uri,
        None,
        Bytes::new(),
        |_: serde_json::Value| async move { d.manager.create_volume(volume, p).await },
    )
    .await
}

pub(crate) async fn volume_delete<M: Manager>(
    State(d): Shared<M>,
    uri: Uri,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let route = uri.path().to_string();
    answer(&uri, q, body, |r: VolumeDeleteRequest| async move {
        let name = required(&route, "VolumeName", &r.volume_name)?;
        d.manager.delete_volume(name, r.reference_only).await?;
        d.docker_mounts.lock().await.forget(name)?;
        Ok(Empty {})
    })
    .await
}

pub(crate) async fn volume_mount<M: Manager>(
    State(d): Shared<M>,
    uri: Uri,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let route = uri.path().to_string();
    answer(&uri, q, body, |r: VolumeMountRequest| async move {
        let name = required(&route, "VolumeName", &r.volume_name)?;
        let mount_point = non_empty(&r.mount_point).map(PathBuf::from);
        d.manager.mount_volume(name, mount_point).await?;
        d.manager.inspect_volume(name).await
    })
    .await
}

pub(crate) async fn volume_umount<M: Manager>(
    State(d): Shared<M>,
    uri: Uri,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let route = uri.path().to_string();
    answer(&uri, q, body, |r: VolumeNameRequest| async move {
        let name = required(&route, "VolumeName", &r.volume_name)?;
        d.manager.umount_volume(name).await?;
        Ok(Empty {})
    })
    .await
}

pub(crate) async fn snapshot_create<M: Manager>(
    State(d): Shared<M>,
    uri: Uri,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let route = uri.path().to_string();
    answer(&uri, q, body, |r: SnapshotCreateRequest| async move {
        let volume = required(&route, "VolumeName", &r.volume_name)?;
        d.manager.create_snapshot(volume, non_empty(&r.name)).await
    })
    .await
}

pub(crate) async fn snapshot_inspect<M: Manager>(
    State(d): Shared<M>,
    uri: Uri,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let route = uri.path().to_string();
    answer(&uri, q, body, |r: SnapshotNameRequest| async move {
        let name = required(&route, "SnapshotName", &r.snapshot_name)?;
        d.manager.inspect_snapshot(name).await
    })
    .await
}

pub(crate) async fn snapshot_delete<M: Manager>(
    State(d): Shared<M>,
    uri: Uri,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let route = uri.path().to_string();
    answer(&uri, q, body, |r: SnapshotNameRequest| async move {
        let name = required(&route, "SnapshotName", &r.snapshot_name)?;
        d.manager.delete_snapshot(name).await?;
        Ok(Empty {})
    })
    .await
}

pub(crate) async fn backup_create<M: Manager>(
    State(d): Shared<M>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let route = uri.path().to_string();
    let checked = http::parse::<BackupCreateRequest>(&route, q.as_deref(), &body).and_then(|r| {
        required(&route, "SnapshotName", &r.snapshot_name)?;
        required(&route, "URL", &r.url)?;
        Ok(r)
    });
    let request = match checked {
        Ok(r) => r,
        Err(e) => return http::error(&e),
    };
    let what = format!(
        "backup of snapshot {} to {}",
        request.snapshot_name, request.url
    );
    let work = move |p| async move {
        let url = d
            .manager
            .create_backup(
                &request.snapshot_name,
                &request.url,
                non_empty(&request.s3_endpoint),
                p,
            )
            .await?;
        Ok(BackupUrlResponse { url })
    };
    if progress::wants_stream(&headers) {
        return progress::stream(what, work);
    }
    let p = progress::OperationProgress::new(what, None);
    answer(&uri, None, Bytes::new(), |_: serde_json::Value| work(p)).await
}

pub(crate) async fn backup_list<M: Manager>(
    State(d): Shared<M>,
    uri: Uri,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let route = uri.path().to_string();
    answer(&uri, q, body, |r: BackupListRequest| async move {
        let dest = required(&route, "URL", &r.url)?;
        let volume = non_empty(&r.volume_name);
        d.manager
            .list_backups(dest, volume.as_deref(), non_empty(&r.s3_endpoint))
            .await
    })
    .await
}

pub(crate) async fn backup_inspect<M: Manager>(
    State(d): Shared<M>,
    uri: Uri,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let route = uri.path().to_string();
    answer(&uri, q, body, |r: BackupUrlRequest| async move {
        let url = required(&route, "URL", &r.url)?;
        d.manager
            .inspect_backup(url, non_empty(&r.s3_endpoint))
            .await
    })
    .await
}

pub(crate) async fn backup_delete<M: Manager>(
    State(d): Shared<M>,
    uri: Uri,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let route = uri.path().to_string();
    answer(&uri, q, body, |r: BackupUrlRequest| async move {
        let url = required(&route, "URL", &r.url)?;
        d.manager
            .delete_backup(url, non_empty(&r.s3_endpoint))
            .await?;
        Ok(Empty {})
    })
    .await
}
