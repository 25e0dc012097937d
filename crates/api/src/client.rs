//! [`Client`]: HTTP/1.1 over the daemon's unix socket, one connection per call.
//!
//! Requests carry their parameters as a JSON body, also on `GET` and `DELETE`, as the original
//! Convoy's client did. An error answer (`{"Error": "..."}`) becomes [`ApiError::Daemon`] with
//! the daemon's message verbatim.

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
        let request = request
            .body(Full::new(body.into()))
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
    pub async fn call_with_progress<Q: Serialize, T: DeserializeOwned>(
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
                let message = match serde_json::from_slice::<ErrorResponse>(&buffer) {
                    Ok(e) => e.error,
                    Err(_) => format!(
                        "HTTP {status} from {route}: {}",
                        String::from_utf8_lossy(&buffer).trim()
                    ),
                };
                return Err(ApiError::Daemon { status, message });
            }
            return serde_json::from_slice(&buffer)
                .map_err(|e| decode(format!("{e}: {}", String::from_utf8_lossy(&buffer))));
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

    /// Sends `request` as JSON and decodes a JSON answer of type `T`.
    pub async fn call<Q: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        route: &str,
        request: &Q,
    ) -> Result<T, ApiError> {
        let body = self.exchange(method, route, request).await?;
        serde_json::from_slice(&body).map_err(|e| ApiError::Decode {
            route: route.to_string(),
            message: format!("{e}: {}", String::from_utf8_lossy(&body)),
        })
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
        let answer = self.raw(method, route, body, true).await?;
        if answer.status >= 400 {
            let message = match serde_json::from_slice::<ErrorResponse>(&answer.body) {
                Ok(e) => e.error,
                Err(_) => format!(
                    "HTTP {} from {route}: {}",
                    answer.status,
                    String::from_utf8_lossy(&answer.body).trim()
                ),
            };
            return Err(ApiError::Daemon {
                status: answer.status,
                message,
            });
        }
        Ok(answer.body)
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
        self.call("POST", routes::VOLUMES_CREATE, request).await
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
        self.call("POST", routes::VOLUMES_MOUNT, request).await
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
        self.call("POST", routes::SNAPSHOTS_CREATE, request).await
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
        self.call("POST", routes::BACKUPS_CREATE, request).await
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

    /// `GET /v1/backups/inspect`.
    pub async fn inspect_backup(
        &self,
        request: &BackupUrlRequest,
    ) -> Result<BackupResponse, ApiError> {
        self.call("GET", routes::BACKUPS_INSPECT, request).await
    }
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
    }
}
