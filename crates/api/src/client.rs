//! [`Client`]: HTTP/1.1 over the daemon's unix socket, one connection per call.
//!
//! Requests carry their parameters as a JSON body, also on `GET` and `DELETE`, as the original
//! Convoy's client did, with its `User-Agent: Convoy-Client/1` and `"Verbose": true` where the
//! original knows the field, so that both daemons answer JSON. Answers are read in either
//! daemon's form: JSON or a bare value (`text/plain`, the original daemon's non-verbose
//! answers), errors as `{"Error": "..."}` or plain text; an error becomes [`ApiError::Daemon`]
//! with the daemon's message verbatim.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::{de::DeserializeOwned, Serialize};
use tokio::net::UnixStream;

use crate::wire::*;
use crate::{routes, ApiError};

/// A client of the convoy daemon.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

/// A raw answer: HTTP status and body.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// HTTP status code.
    pub status: u16,
    /// The body, as sent.
    pub body: Bytes,
}

impl Client {
    /// A client of the daemon listening on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
        }
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `method path` with `body` as is (no `Content-Type` unless `json`), and returns the
    /// answer whatever its status. Tests use it to replay exactly what dockerd sends.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        body: impl Into<Bytes>,
        json: bool,
    ) -> Result<RawResponse, ApiError> {
        self.send(method, path, body.into(), json, None).await
    }

    /// Like [`Client::raw`], with a `User-Agent` header: tests replay the original client's
    /// requests (`Convoy-Client/1`) with it.
    pub async fn raw_as(
        &self,
        user_agent: &str,
        method: &str,
        path: &str,
        body: impl Into<Bytes>,
    ) -> Result<RawResponse, ApiError> {
        self.send(method, path, body.into(), true, Some(user_agent))
            .await
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Bytes,
        json: bool,
        user_agent: Option<&str>,
    ) -> Result<RawResponse, ApiError> {
        let http = |message: String| ApiError::Http {
            route: path.to_string(),
            message,
        };
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ApiError::Connect {
                    socket: self.socket.clone(),
                    source,
                })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| http(e.to_string()))?;
        // The connection future drives the socket; it ends when the exchange is over.
        let driver = tokio::spawn(connection);
        let method = Method::from_bytes(method.as_bytes()).map_err(|e| http(e.to_string()))?;
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("Host", "convoy");
        if json {
            request = request.header("Content-Type", "application/json");
        }
        if let Some(agent) = user_agent {
            request = request.header("User-Agent", agent);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| http(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| http(e.to_string()))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| http(e.to_string()))?
            .to_bytes();
        drop(sender);
        driver.abort();
        Ok(RawResponse { status, body })
    }

    /// Sends `request` asking for a progress stream ([`PROGRESS_HEADER`]), calls `on_progress`
    /// for every update and decodes the final `Result` as `T`. A daemon that answers with a
    /// plain object (no stream) is handled too.
    pub async fn call_with_progress<Q: Serialize, T: DeserializeOwned + FromBare>(
        &self,
        route: &str,
        request: &Q,
        on_progress: &mut (dyn FnMut(ProgressUpdate) + Send),
    ) -> Result<T, ApiError> {
        let decode = |message: String| ApiError::Decode {
            route: route.to_string(),
            message,
        };
        let http = |message: String| ApiError::Http {
            route: route.to_string(),
            message,
        };
        let body = serde_json::to_vec(request).map_err(|e| decode(e.to_string()))?;
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ApiError::Connect {
                    socket: self.socket.clone(),
                    source,
                })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| http(e.to_string()))?;
        let driver = tokio::spawn(connection);
        let request = Request::builder()
            .method(Method::POST)
            .uri(route)
            .header("Host", "convoy")
            .header("Content-Type", "application/json")
            .header("User-Agent", USER_AGENT)
            .header(PROGRESS_HEADER, "1")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| http(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| http(e.to_string()))?;
        let status = response.status().as_u16();
        let streamed = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(NDJSON.as_bytes()));
        let mut body = response.into_body();
        let mut buffer: Vec<u8> = Vec::new();
        let mut last: Option<StreamLine> = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| http(e.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buffer.extend_from_slice(&data);
            if !streamed {
                continue;
            }
            while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let line: StreamLine = serde_json::from_slice(&line)
                    .map_err(|e| decode(format!("{e}: {}", String::from_utf8_lossy(&line))))?;
                if let Some(update) = line.progress {
                    on_progress(update);
                }
                if line.result.is_some() || line.error.is_some() {
                    last = Some(line);
                }
            }
        }
        drop(sender);
        driver.abort();
        if !streamed {
            // A plain answer: an early error (bad request) or a daemon without streaming.
            if status >= 400 {
                return Err(daemon_error(status, route, &buffer));
            }
            return decode_answer(route, &buffer);
        }
        match last {
            Some(StreamLine {
                error: Some(message),
                ..
            }) => Err(ApiError::Daemon {
                status: 500,
                message,
            }),
            Some(StreamLine {
                result: Some(value),
                ..
            }) => serde_json::from_value(value).map_err(|e| decode(e.to_string())),
            _ => Err(http(
                "the progress stream ended without a result (did the daemon stop?)".into(),
            )),
        }
    }

    /// Sends `request` as JSON and decodes the answer as `T`: a JSON answer, or a bare value
    /// (the original daemon's non-verbose form) through [`FromBare`].
    pub async fn call<Q: Serialize, T: DeserializeOwned + FromBare>(
        &self,
        method: &str,
        route: &str,
        request: &Q,
    ) -> Result<T, ApiError> {
        let body = self.exchange(method, route, request).await?;
        decode_answer(route, &body)
    }

    /// Sends `request` and only checks that it succeeded.
    async fn call_unit<Q: Serialize>(
        &self,
        method: &str,
        route: &str,
        request: &Q,
    ) -> Result<(), ApiError> {
        self.exchange(method, route, request).await.map(drop)
    }

    async fn exchange<Q: Serialize>(
        &self,
        method: &str,
        route: &str,
        request: &Q,
    ) -> Result<Bytes, ApiError> {
        let body = serde_json::to_vec(request).map_err(|e| ApiError::Decode {
            route: route.to_string(),
            message: e.to_string(),
        })?;
        let answer = self
            .send(method, route, body.into(), true, Some(USER_AGENT))
            .await?;
        if answer.status >= 400 {
            return Err(daemon_error(answer.status, route, &answer.body));
        }
        Ok(answer.body)
    }

    /// `POST /v1/policies/set`; answers the policy as it now stands.
    pub async fn set_policy(
        &self,
        request: &PolicySetRequest,
    ) -> Result<PolicyListResponse, ApiError> {
        self.call("POST", routes::POLICIES_SET, request).await
    }

    /// `POST /v1/policies/remove`.
    pub async fn remove_policy(&self, request: &PolicyRemoveRequest) -> Result<(), ApiError> {
        self.call_unit("POST", routes::POLICIES_REMOVE, request)
            .await
    }

    /// `GET /v1/policies/list`.
    pub async fn list_policies(&self) -> Result<PolicyListResponse, ApiError> {
        self.call("GET", routes::POLICIES_LIST, &serde_json::json!({}))
            .await
    }

    /// `GET /v1/info`.
    pub async fn info(&self) -> Result<InfoResponse, ApiError> {
        self.call("GET", routes::INFO, &serde_json::json!({})).await
    }

    /// `GET /v1/volumes/list`.
    pub async fn list_volumes(&self, driver: &str) -> Result<VolumeListResponse, ApiError> {
        let request = VolumeListRequest {
            driver_name: driver.to_string(),
        };
        self.call("GET", routes::VOLUMES_LIST, &request).await
    }

    /// `GET /v1/volumes/`.
    pub async fn inspect_volume(&self, name: &str) -> Result<VolumeResponse, ApiError> {
        let request = VolumeNameRequest {
            volume_name: name.to_string(),
        };
        self.call("GET", routes::VOLUMES, &request).await
    }

    /// `POST /v1/volumes/create`.
    pub async fn create_volume(
        &self,
        request: &VolumeCreateRequest,
    ) -> Result<VolumeResponse, ApiError> {
        let mut request = request.clone();
        request.verbose.get_or_insert(true);
        let answer: Answer<VolumeResponse> =
            self.call("POST", routes::VOLUMES_CREATE, &request).await?;
        Ok(answer.or_bare(|name| VolumeResponse {
            name,
            ..Default::default()
        }))
    }

    /// `POST /v1/volumes/expand`; answers the grown volume.
    pub async fn expand_volume(
        &self,
        request: &VolumeExpandRequest,
    ) -> Result<VolumeResponse, ApiError> {
        let answer: Answer<VolumeResponse> =
            self.call("POST", routes::VOLUMES_EXPAND, request).await?;
        Ok(answer.or_bare(|name| VolumeResponse {
            name,
            ..Default::default()
        }))
    }

    /// `POST /v1/snapshots/revert`; answers the reverted volume.
    pub async fn revert_snapshot(&self, name: &str) -> Result<VolumeResponse, ApiError> {
        let request = SnapshotNameRequest {
            snapshot_name: name.to_owned(),
        };
        let answer: Answer<VolumeResponse> = self
            .call("POST", routes::SNAPSHOTS_REVERT, &request)
            .await?;
        Ok(answer.or_bare(|name| VolumeResponse {
            name,
            ..Default::default()
        }))
    }

    /// `DELETE /v1/volumes/`.
    pub async fn delete_volume(&self, request: &VolumeDeleteRequest) -> Result<(), ApiError> {
        self.call_unit("DELETE", routes::VOLUMES, request).await
    }

    /// `POST /v1/volumes/mount`; answers the mounted volume.
    pub async fn mount_volume(
        &self,
        request: &VolumeMountRequest,
    ) -> Result<VolumeResponse, ApiError> {
        let mut request = request.clone();
        request.verbose.get_or_insert(true);
        let answer: Answer<VolumeResponse> =
            self.call("POST", routes::VOLUMES_MOUNT, &request).await?;
        let mut volume = answer.or_bare(|mount_point| VolumeResponse {
            mount_point,
            ..Default::default()
        });
        if volume.name.is_empty() {
            volume.name.clone_from(&request.volume_name);
        }
        Ok(volume)
    }

    /// `POST /v1/volumes/umount`.
    pub async fn umount_volume(&self, name: &str) -> Result<(), ApiError> {
        let request = VolumeNameRequest {
            volume_name: name.to_string(),
        };
        self.call_unit("POST", routes::VOLUMES_UMOUNT, &request)
            .await
    }

    /// `POST /v1/snapshots/create`.
    pub async fn create_snapshot(
        &self,
        request: &SnapshotCreateRequest,
    ) -> Result<SnapshotResponse, ApiError> {
        let mut request = request.clone();
        request.verbose.get_or_insert(true);
        let answer: Answer<SnapshotResponse> = self
            .call("POST", routes::SNAPSHOTS_CREATE, &request)
            .await?;
        let mut snapshot = answer.or_bare(|name| SnapshotResponse {
            name,
            ..Default::default()
        });
        if snapshot.volume_name.is_empty() {
            snapshot.volume_name.clone_from(&request.volume_name);
        }
        Ok(snapshot)
    }

    /// `DELETE /v1/snapshots/`.
    pub async fn delete_snapshot(&self, name: &str) -> Result<(), ApiError> {
        let request = SnapshotNameRequest {
            snapshot_name: name.to_string(),
        };
        self.call_unit("DELETE", routes::SNAPSHOTS, &request).await
    }

    /// `GET /v1/snapshots/`.
    pub async fn inspect_snapshot(&self, name: &str) -> Result<SnapshotResponse, ApiError> {
        let request = SnapshotNameRequest {
            snapshot_name: name.to_string(),
        };
        self.call("GET", routes::SNAPSHOTS, &request).await
    }

    /// `POST /v1/backups/create`; answers the backup URL.
    pub async fn create_backup(
        &self,
        request: &BackupCreateRequest,
    ) -> Result<BackupUrlResponse, ApiError> {
        let mut request = request.clone();
        request.verbose.get_or_insert(true);
        let answer: Answer<BackupUrlResponse> =
            self.call("POST", routes::BACKUPS_CREATE, &request).await?;
        Ok(answer.or_bare(|url| BackupUrlResponse { url }))
    }

    /// `DELETE /v1/backups`.
    pub async fn delete_backup(&self, request: &BackupUrlRequest) -> Result<(), ApiError> {
        self.call_unit("DELETE", routes::BACKUPS, request).await
    }

    /// `GET /v1/backups/list`.
    pub async fn list_backups(
        &self,
        request: &BackupListRequest,
    ) -> Result<BackupListResponse, ApiError> {
        self.call("GET", routes::BACKUPS_LIST, request).await
    }

    /// `POST /v1/backups/mount`; answers the mount.
    pub async fn mount_backup(
        &self,
        request: &BackupMountRequest,
    ) -> Result<BackupMountResponse, ApiError> {
        self.call("POST", routes::BACKUPS_MOUNT, request).await
    }

    /// `POST /v1/backups/umount`.
    pub async fn umount_backup(&self, mount_point: &str) -> Result<(), ApiError> {
        let request = BackupUmountRequest {
            mount_point: mount_point.to_string(),
        };
        self.call_unit("POST", routes::BACKUPS_UMOUNT, &request)
            .await
    }

    /// `GET /v1/backups/mounts`.
    pub async fn list_backup_mounts(&self) -> Result<BackupMountListResponse, ApiError> {
        self.call("GET", routes::BACKUPS_MOUNTS, &serde_json::json!({}))
            .await
    }

    /// `GET /v1/backups/inspect`.
    pub async fn inspect_backup(
        &self,
        request: &BackupUrlRequest,
    ) -> Result<BackupResponse, ApiError> {
        self.call("GET", routes::BACKUPS_INSPECT, request).await
    }
}

/// The `User-Agent` the original client sent, and this one sends: the original daemon refuses
/// any other `Convoy-Client/` version.
pub const USER_AGENT: &str = "Convoy-Client/1";

/// An answer that may be JSON or a bare value (`text/plain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T> {
    /// A JSON object.
    Json(T),
    /// A bare value: a name, a mount point, a URL.
    Bare(String),
}

impl<T> Answer<T> {
    /// The JSON object, or one made from the bare value by `make`.
    pub fn or_bare(self, make: impl FnOnce(String) -> T) -> T {
        match self {
            Answer::Json(value) => value,
            Answer::Bare(text) => make(text),
        }
    }
}

/// How a type is read from a non-JSON answer. Only [`Answer`] accepts one: every other type
/// refuses it, so a daemon answering garbage is an [`ApiError::Decode`].
pub trait FromBare: Sized {
    /// `Some` when a bare answer is acceptable as `Self`.
    fn from_bare(_text: &str) -> Option<Self> {
        None
    }
}

impl<T> FromBare for Answer<T> {
    fn from_bare(text: &str) -> Option<Self> {
        Some(Answer::Bare(text.to_string()))
    }
}

impl<'de, T: DeserializeOwned> serde::Deserialize<'de> for Answer<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Answer::Json)
    }
}

impl FromBare for VolumeResponse {}
impl FromBare for PolicyListResponse {}
impl FromBare for SnapshotResponse {}
impl FromBare for BackupResponse {}
impl FromBare for BackupUrlResponse {}
impl FromBare for BackupMountResponse {}
impl FromBare for serde_json::Value {}
impl<K, V> FromBare for std::collections::BTreeMap<K, V> {}

/// Decodes an answer body: JSON as `T`; anything that is not JSON as a bare value, if `T`
/// takes one.
fn decode_answer<T: DeserializeOwned + FromBare>(route: &str, body: &[u8]) -> Result<T, ApiError> {
    let decode = |message: String| ApiError::Decode {
        route: route.to_string(),
        message,
    };
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(value) => serde_json::from_value(value)
            .map_err(|e| decode(format!("{e}: {}", String::from_utf8_lossy(body)))),
        Err(e) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim_end_matches(['\n', '\r']);
            match T::from_bare(text).filter(|_| !text.is_empty()) {
                Some(value) => Ok(value),
                None => Err(decode(format!("{e}: {text}"))),
            }
        }
    }
}

/// The daemon's message from an error answer: `{"Error": "..."}` (this daemon) or plain text
/// (the original's `http.Error`, ending with a newline).
fn daemon_error(status: u16, route: &str, body: &[u8]) -> ApiError {
    let message = match serde_json::from_slice::<ErrorResponse>(body) {
        Ok(e) => e.error,
        Err(_) => {
            let text = String::from_utf8_lossy(body).trim().to_string();
            if text.is_empty() {
                format!("HTTP {status} from {route} with an empty answer")
            } else {
                text
            }
        }
    };
    ApiError::Daemon { status, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_socket_is_a_clear_connect_error() {
        let dir = std::env::temp_dir().join(format!("convoy-api-test-{}", std::process::id()));
        let client = Client::new(dir.join("nope.sock"));
        let err = client.info().await.unwrap_err().to_string();
        assert!(err.contains("cannot connect to the convoy daemon"), "{err}");
        assert!(err.contains("nope.sock"), "{err}");
        assert!(err.contains("start one with `convoy daemon"), "{err}");
    }

    #[tokio::test]
    async fn a_stale_socket_says_no_daemon_listens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stale.sock");
        // Bound, then closed: the file stays, nobody listens.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let err = Client::new(&path).info().await.unwrap_err().to_string();
        assert!(err.contains("no daemon listens on it"), "{err}");
    }

    #[tokio::test]
    async fn permission_denied_says_which_user_may_connect() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("private.sock");
        let _listener = tokio::net::UnixListener::bind(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = ApiError::Connect {
            socket: path.clone(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        }
        .to_string();
        assert!(err.contains("may not use the daemon's socket"), "{err}");
        assert!(err.contains("mode 0600"), "{err}");
        assert!(err.contains("run convoy as that user"), "{err}");
    }
}
