//! The router, the socket and [`run`].

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::Uri;
use axum::http::{HeaderMap, Method};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::Router;
use convoy_api::routes as r;
use tokio::net::UnixListener;

use crate::{http, plugin, v1, Daemon, DaemonError, Result};

/// Every route of the daemon: the `/v1` API and the Docker plugin protocol.
pub fn router(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route(r::INFO, get(v1::info))
        .route(r::VOLUMES_LIST, get(v1::volume_list))
        .route(
            r::VOLUMES,
            get(v1::volume_inspect).delete(v1::volume_delete),
        )
        .route(
            "/v1/volumes",
            get(v1::volume_inspect).delete(v1::volume_delete),
        )
        .route(r::VOLUMES_CREATE, post(v1::volume_create))
        .route(r::VOLUMES_MOUNT, post(v1::volume_mount))
        .route(r::VOLUMES_UMOUNT, post(v1::volume_umount))
        .route(r::SNAPSHOTS_CREATE, post(v1::snapshot_create))
        .route(r::VOLUMES_EXPAND, post(v1::volume_expand))
        .route(r::SNAPSHOTS_REVERT, post(v1::snapshot_revert))
        .route(
            r::SNAPSHOTS,
            get(v1::snapshot_inspect).delete(v1::snapshot_delete),
        )
        .route(
            "/v1/snapshots",
            get(v1::snapshot_inspect).delete(v1::snapshot_delete),
        )
        .route(r::BACKUPS_CREATE, post(v1::backup_create))
        .route(r::BACKUPS_LIST, get(v1::backup_list))
        .route(r::BACKUPS_INSPECT, get(v1::backup_inspect))
        .route(r::BACKUPS, delete(v1::backup_delete))
        .route(r::BACKUPS_MOUNT, post(v1::backup_mount))
        .route(r::BACKUPS_UMOUNT, post(v1::backup_umount))
        .route(r::BACKUPS_MOUNTS, get(v1::backup_mounts))
        .route("/v1/backups/", delete(v1::backup_delete))
        .route(r::POLICIES_SET, post(v1::policy::set))
        .route(r::POLICIES_REMOVE, post(v1::policy::remove))
        .route(r::POLICIES_LIST, get(v1::policy::list_route))
        .route(r::PLUGIN_ACTIVATE, post(plugin::activate))
        .route(r::DOCKER_CREATE, post(plugin::create))
        .route(r::DOCKER_REMOVE, post(plugin::remove))
        .route(r::DOCKER_MOUNT, post(plugin::mount))
        .route(r::DOCKER_UNMOUNT, post(plugin::unmount))
        .route(r::DOCKER_PATH, post(plugin::path))
        .route(r::DOCKER_GET, post(plugin::get))
        .route(r::DOCKER_LIST, post(plugin::list))
        .route(r::DOCKER_CAPABILITIES, post(plugin::capabilities))
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn(v1::check_client_version))
        .layer(middleware::from_fn(log_request))
        .layer(middleware::from_fn(crate::metrics::track_request))
        .with_state(daemon)
}

async fn unknown_route(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    if http::Caller::of(&headers) == http::Caller::Original {
        // The original daemon's words, which its client prints.
        return http::plain(
            axum::http::StatusCode::NOT_FOUND,
            format!("Handler not found: {method} {uri}"),
        );
    }
    http::error(&DaemonError::failed(
        crate::ErrorKind::NotFound,
        format!("unknown route {method} {}", uri.path()),
    ))
}

async fn wrong_method(method: Method, uri: Uri) -> Response {
    let mut response = http::error(&DaemonError::BadRequest {
        route: uri.path().to_string(),
        message: format!("method {method} is not allowed here"),
    });
    *response.status_mut() = axum::http::StatusCode::METHOD_NOT_ALLOWED;
    response
}

async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    tracing::debug!(%method, %path, status = response.status().as_u16(), "request");
    response
}

/// Serves `daemon` on `listener` until `shutdown` completes, then lets in-flight requests end.
///
/// This is the daemon's whole life; `convoy daemon`, `convoyd` and the tests all call it.
pub async fn run(
    listener: UnixListener,
    daemon: Daemon,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    axum::serve(listener, router(Arc::new(daemon)))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(DaemonError::Serve)
}

/// Binds the daemon's socket at `path`: creates its directory, removes a stale socket file (one
/// no server answers on — dockerd hangs on those), refuses a live one, and restricts the socket
/// to its owner (mode 0600).
///
/// The socket file appears at `path` only once it listens: it is bound under a temporary name
/// beside `path` and then linked into place. A client that waits for the file (dockerd's plugin
/// discovery, a CSI sidecar, a script) never finds it refusing connections, as it would between
/// `bind` and `listen`. The link fails if another server took `path` meanwhile.
pub fn bind_socket(path: &Path) -> Result<UnixListener> {
    let fail = |source| DaemonError::Socket {
        socket: path.to_path_buf(),
        source,
    };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    if std::fs::symlink_metadata(path).is_ok() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(fail(another_server()));
        }
        tracing::info!(socket = %path.display(), "removing stale socket");
        std::fs::remove_file(path).map_err(fail)?;
    }
    static BINDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = BINDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let temp = dir
        .unwrap_or(Path::new("."))
        .join(format!(".convoy-{}-{n}.sock", std::process::id()));
    // A socket path holds at most 107 bytes. Where the temporary name would not fit, the
    // socket is bound in place; so is one whose own path is too long, which then fails as it
    // must (linked there, it would exist but no client could connect to it).
    if temp.as_os_str().len() > 107 || path.as_os_str().len() > 107 {
        let listener = UnixListener::bind(path).map_err(fail)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
        return Ok(listener);
    }
    let _ = std::fs::remove_file(&temp);
    let listener = UnixListener::bind(&temp).map_err(fail)?;
    let placed =
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600)).and_then(|()| {
            match std::fs::hard_link(&temp, path) {
                // A filesystem without hard links: moved into place instead (the stale file is
                // gone, so this replaces nothing but a server started in this very instant).
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    tracing::debug!(error = %e, "cannot link the socket into place; renaming it");
                    std::fs::rename(&temp, path)
                }
                linked => linked,
            }
        });
    let _ = std::fs::remove_file(&temp);
    match placed {
        Ok(()) => Ok(listener),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(fail(another_server())),
        Err(e) => Err(fail(e)),
    }
}

fn another_server() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "another server is answering on this socket",
    )
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::bind_socket;

    #[tokio::test]
    async fn the_socket_file_appears_listening_and_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run").join("convoy.sock");
        let _listener = bind_socket(&path).unwrap();
        // Connectable at once, owner-only, and no temporary name left beside it.
        std::os::unix::net::UnixStream::connect(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("convoy.sock")]);
        // A live socket is refused, and left as it was.
        let err = bind_socket(&path).unwrap_err().to_string();
        assert!(err.contains("another server is answering"), "{err}");
        std::os::unix::net::UnixStream::connect(&path).unwrap();
    }

    #[tokio::test]
    async fn a_path_too_long_for_a_socket_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("{}.sock", "s".repeat(120)));
        assert!(bind_socket(&path).is_err());
        assert!(std::fs::symlink_metadata(&path).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("convoy.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(std::os::unix::net::UnixStream::connect(&path).is_err());
        let _listener = bind_socket(&path).unwrap();
        std::os::unix::net::UnixStream::connect(&path).unwrap();
    }
}
