//! Prometheus metrics, opt-in with `--metrics-listen ADDR:PORT` (`docs/operations.md`,
//! "Metrics").
//!
//! * Event metrics (backups, restores, daemon requests, policy runs) live in one process-global
//!   [`Metrics`], made when the endpoint starts ([`enable`]). Until then every recording
//!   function here is a no-op, so a daemon without the flag pays one atomic load per event.
//! * State metrics (pools, volumes, snapshots) are read from the volume manager at each scrape
//!   (`state.rs`), so they are never stale and a deleted volume's series go with it.
//! * `endpoint.rs` serves `GET /metrics` (OpenMetrics text) on the TCP address.
//!
//! Destination labels are backup store URLs with credentials, query and fragment removed
//! ([`destination_label`]): a label never carries a secret or a backup's name.

mod endpoint;
pub mod measured;
mod state;
#[cfg(test)]
mod tests;

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use convoy_core::Progress;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

pub use endpoint::{parse_listen_address, MetricsServer, LISTEN_FLAG};

/// The process's metrics, once [`enable`]d.
static GLOBAL: OnceLock<Metrics> = OnceLock::new();

/// Labels of backup and restore counters: where the data went or came from.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DestinationLabels {
    destination: String,
}

/// Labels of backup and restore durations.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    destination: String,
    result: &'static str,
}

/// Labels of daemon request latencies.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    status: String,
}

/// Labels of a policy's last success.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    volume: String,
    policy: String,
    action: String,
}

/// Labels of policy runs.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyRunLabels {
    volume: String,
    policy: String,
    action: String,
    result: &'static str,
}

fn operation_buckets() -> Histogram {
    // 0.1 s … about 3.6 h.
    Histogram::new(exponential_buckets(0.1, 2.0, 18))
}

fn request_buckets() -> Histogram {
    // 1 ms … about 65 s (requests that back up or restore wait for the work).
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// The counters of one kind of transfer (backups or restores).
#[derive(Debug)]
struct Transfers {
    started: Family<DestinationLabels, Counter>,
    succeeded: Family<DestinationLabels, Counter>,
    failed: Family<DestinationLabels, Counter>,
    bytes: Family<DestinationLabels, Counter>,
    duration: Family<DurationLabels, Histogram, fn() -> Histogram>,
}

impl Transfers {
    /// Registers `<noun>s_started` … and `<noun>_duration_seconds` in `registry`.
    fn register(registry: &mut Registry, noun: &str, bytes_help: &str) -> Transfers {
        let t = Transfers {
            started: Family::default(),
            succeeded: Family::default(),
            failed: Family::default(),
            bytes: Family::default(),
            duration: Family::new_with_constructor(operation_buckets),
        };
        registry.register(
            format!("{noun}s_started"),
            format!("{noun}s started, by destination"),
            t.started.clone(),
        );
        registry.register(
            format!("{noun}s_succeeded"),
            format!("{noun}s that completed, by destination"),
            t.succeeded.clone(),
        );
        registry.register(
            format!("{noun}s_failed"),
            format!("{noun}s that failed, by destination"),
            t.failed.clone(),
        );
        registry.register_with_unit(noun, bytes_help, Unit::Bytes, t.bytes.clone());
        registry.register_with_unit(
            format!("{noun}_duration"),
            format!("time {noun}s took, by destination and result (success, failure)"),
            Unit::Seconds,
            t.duration.clone(),
        );
        t
    }
}

/// The event metrics of the process and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    backups: Transfers,
    restores: Transfers,
    requests: Family<RequestLabels, Histogram, fn() -> Histogram>,
    policy_runs: Family<PolicyRunLabels, Counter>,
    policy_last_success: Family<PolicyLabels, Gauge>,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("convoy");
        let backups = Transfers::register(
            &mut registry,
            "backup",
            "bytes backups read from their snapshots (successful backups), by destination",
        );
        let restores = Transfers::register(
            &mut registry,
            "restore",
            "bytes restores wrote into new volumes, by destination",
        );
        let requests = Family::new_with_constructor(request_buckets as fn() -> Histogram);
        registry.register_with_unit(
            "http_request_duration",
            "daemon requests (socket API and Docker plugin), by route template, method and \
             status code",
            Unit::Seconds,
            requests.clone(),
        );
        let policy_runs = Family::default();
        registry.register(
            "policy_runs",
            "scheduled policy runs, by volume, policy, action and result (success, failure)",
            policy_runs.clone(),
        );
        let policy_last_success = Family::default();
        registry.register_with_unit(
            "policy_last_success_timestamp",
            "Unix time of the last successful policy run, by volume, policy and action",
            Unit::Seconds,
            policy_last_success.clone(),
        );
        Metrics {
            registry,
            backups,
            restores,
            requests,
            policy_runs,
            policy_last_success,
        }
    }

    /// The registry of the event metrics.
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// Turns the metrics on for the rest of the process; returns them. Idempotent.
pub(crate) fn enable() -> &'static Metrics {
    GLOBAL.get_or_init(Metrics::new)
}

fn enabled() -> Option<&'static Metrics> {
    GLOBAL.get()
}

/// Records one run of a scheduled policy: `action` ("snapshot", "backup", …) on `volume`,
/// of policy `policy`, finished at `unix_time` (seconds). Increments
/// `convoy_policy_runs_total{volume,policy,action,result}` and, when `ok`, sets
/// `convoy_policy_last_success_timestamp_seconds{volume,policy,action}`. A no-op when the
/// metrics are off.
pub fn record_policy_run(volume: &str, policy: &str, action: &str, ok: bool, unix_time: i64) {
    let Some(m) = enabled() else { return };
    m.policy_runs
        .get_or_create(&PolicyRunLabels {
            volume: volume.to_owned(),
            policy: policy.to_owned(),
            action: action.to_owned(),
            result: if ok { "success" } else { "failure" },
        })
        .inc();
    if ok {
        m.policy_last_success
            .get_or_create(&PolicyLabels {
                volume: volume.to_owned(),
                policy: policy.to_owned(),
                action: action.to_owned(),
            })
            .set(unix_time);
    }
}

/// The label of a backup store URL: scheme, host part and path, without credentials
/// (`user:secret@`), query (`?backup=…`, keys) or fragment. `vfs:///srv/b?backup=x&volume=v`
/// is `vfs:///srv/b`; `s3://KEY:SECRET@bucket/p` is `s3://bucket/p`.
pub fn destination_label(url: &str) -> String {
    let url = url.trim();
    let end = url.find(['?', '#']).unwrap_or(url.len());
    let url = &url[..end];
    let Some((scheme, rest)) = url.split_once("://") else {
        // Not a URL: only its scheme-like head, never the whole text.
        return "invalid".to_owned();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    // Bucket names and regions hold no ':', so a ':' means a userinfo; whatever precedes its
    // last '@' goes (a secret may itself hold '@').
    let authority = if authority.contains(':') {
        authority.rsplit_once('@').map_or("", |(_, host)| host)
    } else {
        authority
    };
    format!("{scheme}://{authority}{path}")
}

/// The method label of a request: one of the standard methods, or `other`.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    [
        (Method::GET, "GET"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::DELETE, "DELETE"),
        (Method::HEAD, "HEAD"),
        (Method::PATCH, "PATCH"),
        (Method::OPTIONS, "OPTIONS"),
    ]
    .into_iter()
    .find_map(|(m, label)| (m == *method).then_some(label))
    .unwrap_or("other")
}

/// Middleware of the daemon's router: observes each request's duration under its route
/// template (`unmatched` for unknown routes: raw paths never become labels), method and
/// status.
pub(crate) async fn track_request(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let Some(m) = enabled() else {
        return next.run(request).await;
    };
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(request.method());
    let start = Instant::now();
    let response = next.run(request).await;
    m.requests
        .get_or_create(&RequestLabels {
            route,
            method,
            status: response.status().as_u16().to_string(),
        })
        .observe(start.elapsed().as_secs_f64());
    response
}

/// Backup or restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TransferKind {
    /// A backup to a store.
    Backup,
    /// A restore from a store into a new volume.
    Restore,
}

/// One backup or restore being measured: counted as started when made, as succeeded or failed
/// by [`Transfer::finish`] (failed if dropped unfinished). Inert when the metrics are off.
#[derive(Debug)]
pub(crate) struct Transfer {
    metrics: Option<(&'static Metrics, TransferKind, String, Instant)>,
}

impl Transfer {
    /// Starts measuring a transfer of `kind` to or from the store at `url`.
    pub(crate) fn start(kind: TransferKind, url: &str) -> Transfer {
        let metrics = enabled().map(|m| {
            let destination = destination_label(url);
            m.transfers(kind)
                .started
                .get_or_create(&DestinationLabels {
                    destination: destination.clone(),
                })
                .inc();
            (m, kind, destination, Instant::now())
        });
        Transfer { metrics }
    }

    /// Ends the transfer: succeeded having moved `Ok(bytes)`, or failed.
    pub(crate) fn finish<E>(mut self, outcome: Result<u64, E>) {
        self.end(outcome.ok());
    }

    fn end(&mut self, bytes: Option<u64>) {
        let Some((m, kind, destination, start)) = self.metrics.take() else {
            return;
        };
        let t = m.transfers(kind);
        let labels = DestinationLabels {
            destination: destination.clone(),
        };
        match bytes {
            Some(bytes) => {
                t.succeeded.get_or_create(&labels).inc();
                t.bytes.get_or_create(&labels).inc_by(bytes);
            }
            None => {
                t.failed.get_or_create(&labels).inc();
            }
        }
        t.duration
            .get_or_create(&DurationLabels {
                destination,
                result: if bytes.is_some() {
                    "success"
                } else {
                    "failure"
                },
            })
            .observe(start.elapsed().as_secs_f64());
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        self.end(None);
    }
}

impl Metrics {
    fn transfers(&self, kind: TransferKind) -> &Transfers {
        match kind {
            TransferKind::Backup => &self.backups,
            TransferKind::Restore => &self.restores,
        }
    }
}

/// A [`Progress`] that counts the bytes reported to it and passes everything on.
pub(crate) struct CountingProgress {
    inner: Arc<dyn Progress>,
    bytes: std::sync::atomic::AtomicU64,
}

impl CountingProgress {
    /// Counts what `inner` is told.
    pub(crate) fn new(inner: Arc<dyn Progress>) -> Arc<CountingProgress> {
        Arc::new(CountingProgress {
            inner,
            bytes: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The bytes reported so far.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Progress for CountingProgress {
    fn start(&self, total_bytes: u64) {
        self.inner.start(total_bytes);
    }
    fn advance(&self, bytes: u64) {
        self.bytes
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        self.inner.advance(bytes);
    }
    fn uploaded(&self, stored_bytes: u64) {
        self.inner.uploaded(stored_bytes);
    }
    fn finish(&self) {
        self.inner.finish();
    }
}
