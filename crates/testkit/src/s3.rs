//! A real S3 server for tests: s3s over s3s-fs, serving a directory (each subdirectory a
//! bucket) on a loopback port with fixed credentials.
//!
//! [`S3Server`] runs it in the test's own tokio runtime. [`service`] and [`serve`] are the same
//! server for a process of its own (`convoy-test-s3`, which the reliability suite kills with
//! SIGKILL and starts again).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use s3s::service::S3Service;
use tokio::net::TcpListener;

/// The access key id the test servers accept.
pub const S3_ACCESS_KEY: &str = "AKIACONVOYTEST";
/// The secret key the test servers accept.
pub const S3_SECRET_KEY: &str = "convoy/test/secret";
/// The region of the test servers' buckets (s3s-fs ignores it; destinations name it).
pub const S3_REGION: &str = "us-east-1";

/// The S3 service over `data` (s3s-fs; each subdirectory a bucket), accepting
/// [`S3_ACCESS_KEY`] / [`S3_SECRET_KEY`]. `data` must exist.
pub fn service(data: &Path) -> Result<S3Service, String> {
    let fs = s3s_fs::FileSystem::new(data)
        .map_err(|e| format!("cannot serve {}: {e:?}", data.display()))?;
    let mut builder = s3s::service::S3ServiceBuilder::new(fs);
    builder.set_auth(s3s::auth::SimpleAuth::from_single(
        S3_ACCESS_KEY,
        S3_SECRET_KEY,
    ));
    Ok(builder.build())
}

/// Serves `service` on `listener`, each connection (HTTP/1 or 2) in a task of its own, until
/// accepting fails.
pub async fn serve(listener: TcpListener, service: S3Service) -> std::io::Result<()> {
    serve_counted(listener, service, Arc::default()).await
}

/// [`serve`], every request passing through `waves`.
pub async fn serve_counted(
    listener: TcpListener,
    service: S3Service,
    waves: Arc<Waves>,
) -> std::io::Result<()> {
    loop {
        let (socket, _) = listener.accept().await?;
        let (inner, waves) = (service.clone(), waves.clone());
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let (inner, waves) = (inner.clone(), waves.clone());
                async move {
                    waves
                        .around(hyper::service::Service::call(&inner, req))
                        .await
                }
            });
        tokio::spawn(async move {
            let http =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let _ = http
                .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                .await;
        });
    }
}

/// What a server saw: it can hold every request for a set delay, and counts the **waves** of
/// requests: a wave starts when a request arrives while none is in flight. With a delay far
/// above the client's own work between requests, the waves of an operation are the round
/// trips it waits for one after another (requests sent together overlap and make one wave).
#[derive(Debug, Default)]
pub struct Waves {
    in_flight: AtomicU64,
    waves: AtomicU64,
    delay_ms: AtomicU64,
}

impl Waves {
    /// Holds every request for `delay` from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(delay.as_millis() as u64, SeqCst);
    }

    /// Waves seen so far.
    pub fn count(&self) -> u64 {
        self.waves.load(SeqCst)
    }

    async fn around<F: std::future::Future>(&self, f: F) -> F::Output {
        if self.in_flight.fetch_add(1, SeqCst) == 0 {
            self.waves.fetch_add(1, SeqCst);
        }
        let delay = self.delay_ms.load(SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let out = f.await;
        self.in_flight.fetch_sub(1, SeqCst);
        out
    }
}

/// An S3 server in this process, on `127.0.0.1` and a free port; stops when dropped (or when
/// the runtime it was started in shuts down).
///
/// The store reads its credentials the usual AWS ways: give them with [`S3Server::env`] to a
/// convoy process, or as a credentials file ([`S3Server::credentials_profile`]).
#[derive(Debug)]
pub struct S3Server {
    data: PathBuf,
    port: u16,
    waves: Arc<Waves>,
    task: tokio::task::JoinHandle<()>,
}

impl S3Server {
    /// Starts a server over the directory `data` (created, with a directory for each of
    /// `buckets`). Must be called inside a tokio runtime.
    pub async fn start(data: &Path, buckets: &[&str]) -> S3Server {
        for bucket in buckets {
            std::fs::create_dir_all(data.join(bucket))
                .unwrap_or_else(|e| panic!("cannot create bucket {bucket}: {e}"));
        }
        std::fs::create_dir_all(data).expect("S3 data dir");
        let service = service(data).unwrap_or_else(|e| panic!("{e}"));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let port = listener.local_addr().expect("bound address").port();
        let waves = Arc::new(Waves::default());
        let counted = waves.clone();
        let task = tokio::spawn(async move {
            let _ = serve_counted(listener, service, counted).await;
        });
        S3Server {
            data: data.to_path_buf(),
            port,
            waves,
            task,
        }
    }

    /// Its requests' waves (see [`Waves`]), and the delay it holds each request for.
    pub fn waves(&self) -> &Arc<Waves> {
        &self.waves
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The directory it serves.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The directory holding `bucket`'s objects as files (`<bucket>/<key>`).
    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.data.join(bucket)
    }

    /// `s3://<bucket>@us-east-1/<path>`, a backup destination on this server.
    pub fn dest(&self, bucket: &str, path: &str) -> String {
        format!("s3://{bucket}@{S3_REGION}/{path}")
    }

    /// The environment a convoy process needs to reach this server.
    pub fn env(&self) -> [(&'static str, String); 3] {
        [
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY.to_owned()),
            ("AWS_ENDPOINT", self.endpoint()),
        ]
    }

    /// A section of an AWS credentials file, `[profile]`, with the server's credentials.
    pub fn credentials_profile(profile: &str) -> String {
        format!(
            "[{profile}]\naws_access_key_id = {S3_ACCESS_KEY}\naws_secret_access_key = {S3_SECRET_KEY}\n"
        )
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}
