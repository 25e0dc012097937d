//! The `GET /metrics` endpoint on `--metrics-listen ADDR:PORT`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State as Extract;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use convoy_core::VolumeManager;
use prometheus_client::encoding::text::{encode_eof, encode_registry};

use super::state::State;
use super::Metrics;
use crate::{DaemonError, Result};

/// The daemon flag that turns the endpoint on.
pub const LISTEN_FLAG: &str = "--metrics-listen";

/// The content type of OpenMetrics text, as prometheus-client's encoder writes it.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Parses the value of `--metrics-listen`: an IP address and a port (`127.0.0.1:9898`,
/// `[::1]:9898`, `0.0.0.0:9898`).
///
/// # Errors
/// [`DaemonError::BadRequest`] naming the flag and the form wanted.
pub fn parse_listen_address(text: &str) -> Result<SocketAddr> {
    text.trim().parse().map_err(|e| DaemonError::BadRequest {
        route: LISTEN_FLAG.into(),
        message: format!(
            "{text:?} is not ADDR:PORT ({e}); e.g. 127.0.0.1:9898, [::1]:9898 or \
                 0.0.0.0:9898 (all interfaces)"
        ),
    })
}

/// The running endpoint; stopped when dropped.
#[derive(Debug)]
pub struct MetricsServer {
    address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

struct Scrape {
    metrics: &'static Metrics,
    manager: VolumeManager,
    /// One scrape at a time: each reads the pools and volumes.
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl MetricsServer {
    /// Turns the metrics on and serves them for `manager` on `address` (port 0: any free
    /// port, see [`MetricsServer::address`]).
    ///
    /// # Errors
    /// [`DaemonError::MetricsListen`] when the address cannot be bound (in use, not local).
    pub fn start(address: SocketAddr, manager: VolumeManager) -> Result<MetricsServer> {
        let fail = |error| DaemonError::MetricsListen { address, error };
        let listener = std::net::TcpListener::bind(address).map_err(fail)?;
        listener.set_nonblocking(true).map_err(fail)?;
        let bound = listener.local_addr().map_err(fail)?;
        let listener = tokio::net::TcpListener::from_std(listener).map_err(fail)?;
        let scrape = Arc::new(Scrape {
            metrics: super::enable(),
            manager,
            one_at_a_time: tokio::sync::Mutex::new(()),
        });
        let app = Router::new()
            .route("/metrics", get(metrics))
            .with_state(scrape);
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(address = %bound, error = %e, "metrics endpoint failed");
            }
        });
        tracing::info!(address = %bound, "metrics endpoint listening (GET /metrics)");
        Ok(MetricsServer {
            address: bound,
            task,
        })
    }

    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn metrics(Extract(scrape): Extract<Arc<Scrape>>) -> Response {
    let _one = scrape.one_at_a_time.lock().await;
    let state = State::read(&scrape.manager).await;
    match encode(scrape.metrics, &state) {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the metrics: {e}"),
        )
            .into_response(),
    }
}

/// The whole exposition: the event metrics, then `state`'s, then `# EOF`.
pub(crate) fn encode(
    metrics: &Metrics,
    state: &State,
) -> std::result::Result<String, std::fmt::Error> {
    let mut text = String::new();
    encode_registry(&mut text, metrics.registry())?;
    encode_registry(&mut text, &state.registry())?;
    encode_eof(&mut text)?;
    Ok(text)
}
