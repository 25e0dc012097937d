//! An HTTP proxy in front of the S3 server that counts every request (by method) and delays
//! each by a set latency before forwarding it, as S3 in another region would: both tools talk
//! to the server through it, so their requests are counted the same way, outside either tool.
//! With `CONVOY_BENCH_TRACE=1` it also prints each request as it ends (milliseconds since the
//! proxy started, method, path, status, milliseconds taken): which round trips are sequential.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// What the proxy counts; shared with the benchmark.
#[derive(Default)]
pub struct Counts {
    /// Requests by method, since the last [`Counts::take`].
    by_method: Mutex<BTreeMap<String, u64>>,
    /// Added latency, milliseconds.
    latency_ms: AtomicU64,
    /// Request bytes (bodies) forwarded, by `Content-Length`.
    sent_bytes: AtomicU64,
}

impl Counts {
    /// Sets the latency added to every request from now on.
    pub fn set_latency(&self, latency: Duration) {
        self.latency_ms
            .store(latency.as_millis() as u64, Ordering::Relaxed);
    }

    /// The requests counted since the last call (by method), and resets them.
    pub fn take(&self) -> Tally {
        let by_method = std::mem::take(&mut *self.by_method.lock().unwrap());
        Tally {
            total: by_method.values().sum(),
            by_method,
            sent_bytes: self.sent_bytes.swap(0, Ordering::Relaxed),
        }
    }
}

/// Requests of one phase.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub total: u64,
    pub by_method: BTreeMap<String, u64>,
    pub sent_bytes: u64,
}

impl Tally {
    /// `GET 12, PUT 40` (the methods seen).
    pub fn methods(&self) -> String {
        self.by_method
            .iter()
            .map(|(m, n)| format!("{m} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Starts the proxy on a free loopback port in front of `upstream` (`127.0.0.1:PORT`);
/// returns its port. It runs until the runtime stops.
pub async fn start(upstream: u16, counts: Arc<Counts>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let trace = std::env::var("CONVOY_BENCH_TRACE").is_ok_and(|v| v == "1");
    let epoch = std::time::Instant::now();
    let client: Client<_, Incoming> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build_http();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let _ = socket.set_nodelay(true);
            let (client, counts) = (client.clone(), counts.clone());
            tokio::spawn(async move {
                let service = service_fn(move |mut req: Request<Incoming>| {
                    let (client, counts) = (client.clone(), counts.clone());
                    async move {
                        let began = epoch.elapsed();
                        *counts
                            .by_method
                            .lock()
                            .unwrap()
                            .entry(req.method().to_string())
                            .or_default() += 1;
                        if let Some(n) = req
                            .headers()
                            .get(hyper::header::CONTENT_LENGTH)
                            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                        {
                            counts.sent_bytes.fetch_add(n, Ordering::Relaxed);
                        }
                        let latency = counts.latency_ms.load(Ordering::Relaxed);
                        if latency > 0 {
                            tokio::time::sleep(Duration::from_millis(latency)).await;
                        }
                        // The Host header stays the client's (it is signed); only the address
                        // the request goes to changes.
                        let path = req
                            .uri()
                            .path_and_query()
                            .map(|p| p.as_str().to_string())
                            .unwrap_or_else(|| "/".into());
                        *req.uri_mut() = format!("http://127.0.0.1:{upstream}{path}")
                            .parse::<Uri>()
                            .unwrap();
                        let method = req.method().clone();
                        let answer = client.request(req).await;
                        if trace {
                            let status = answer.as_ref().map_or(0, |a| a.status().as_u16());
                            eprintln!(
                                "proxy {:>8.1} ms: {method} {path} -> {status} in {:.1} ms",
                                began.as_secs_f64() * 1e3,
                                (epoch.elapsed() - began).as_secs_f64() * 1e3
                            );
                        }
                        answer
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    port
}
