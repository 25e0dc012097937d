//! Progress of backups and restores: logged, and streamed to clients that ask for it
//! (`x-convoy-progress` request header) as newline-delimited JSON.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderMap};
use axum::response::Response;
use bytes::Bytes;
use convoy_api::wire::{ProgressUpdate, StreamLine, NDJSON, PROGRESS_HEADER};
use convoy_core::Progress;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::Result;

/// How often at most a progress line is sent.
const SEND_EVERY: Duration = Duration::from_millis(250);

/// Whether the client asked for a progress stream.
pub(crate) fn wants_stream(headers: &HeaderMap) -> bool {
    headers.contains_key(PROGRESS_HEADER)
}

/// Logs start and end of an operation; optionally forwards updates to a stream.
///
/// The bytes a backup uploads (`uploaded`, the stored size of its new blocks) are summed and
/// logged at the end; the stream's lines (`ProgressUpdate`) carry the volume bytes processed
/// only, so the figure goes no further than the log.
pub(crate) struct OperationProgress {
    what: String,
    total: AtomicU64,
    done: AtomicU64,
    uploaded: AtomicU64,
    last_sent: Mutex<Option<Instant>>,
    stream: Option<mpsc::UnboundedSender<Bytes>>,
}

impl OperationProgress {
    /// Progress of `what`, streamed to `stream` if given.
    pub(crate) fn new(what: String, stream: Option<mpsc::UnboundedSender<Bytes>>) -> Arc<Self> {
        Arc::new(Self {
            what,
            total: AtomicU64::new(0),
            done: AtomicU64::new(0),
            uploaded: AtomicU64::new(0),
            last_sent: Mutex::new(None),
            stream,
        })
    }

    fn send(&self, force: bool) {
        let Some(stream) = &self.stream else { return };
        {
            let mut last = self.last_sent.lock().unwrap_or_else(|e| e.into_inner());
            if !force && last.is_some_and(|t| t.elapsed() < SEND_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let line = StreamLine {
            progress: Some(ProgressUpdate {
                total: self.total.load(Ordering::Relaxed),
                done: self.done.load(Ordering::Relaxed),
            }),
            ..StreamLine::default()
        };
        let _ = stream.send(encode_line(&line));
    }
}

impl Progress for OperationProgress {
    fn start(&self, total_bytes: u64) {
        self.total.store(total_bytes, Ordering::Relaxed);
        tracing::info!(what = %self.what, total_bytes, "started");
        self.send(true);
    }
    fn advance(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
        self.send(false);
    }
    fn uploaded(&self, stored_bytes: u64) {
        self.uploaded.fetch_add(stored_bytes, Ordering::Relaxed);
    }
    fn finish(&self) {
        let uploaded = self.uploaded.load(Ordering::Relaxed);
        if uploaded > 0 {
            tracing::info!(what = %self.what, bytes = self.done.load(Ordering::Relaxed),
                uploaded_bytes = uploaded, "finished");
        } else {
            tracing::info!(what = %self.what, bytes = self.done.load(Ordering::Relaxed), "finished");
        }
        self.send(true);
    }
}

fn encode_line(line: &StreamLine) -> Bytes {
    let mut bytes = serde_json::to_vec(line).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// Runs `work` to completion in its own task (a client that goes away does not cancel a
/// backup half-way) and answers a stream of progress lines ending with its result or error.
pub(crate) fn stream<R, F, Fut>(what: String, work: F) -> Response
where
    R: Serialize + Send + 'static,
    F: FnOnce(Arc<dyn Progress>) -> Fut,
    Fut: Future<Output = Result<R>> + Send + 'static,
{
    let (sender, mut receiver) = mpsc::unbounded_channel::<Bytes>();
    let progress = OperationProgress::new(what.clone(), Some(sender.clone()));
    let future = work(progress);
    tokio::spawn(async move {
        let line = match future.await {
            Ok(value) => StreamLine {
                result: Some(serde_json::to_value(&value).unwrap_or_default()),
                ..StreamLine::default()
            },
            Err(e) => {
                tracing::warn!(%what, error = %e, "failed");
                StreamLine {
                    error: Some(e.to_string()),
                    ..StreamLine::default()
                }
            }
        };
        let _ = sender.send(encode_line(&line));
    });
    let body = futures::stream::poll_fn(move |cx| {
        receiver
            .poll_recv(cx)
            .map(|line| line.map(Ok::<Bytes, Infallible>))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, NDJSON)
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploaded_bytes_are_summed_but_not_streamed() {
        let (sender, mut receiver) = mpsc::unbounded_channel();
        let progress = OperationProgress::new("backup s1".into(), Some(sender));
        let counted = crate::metrics::CountingProgress::new(progress.clone());
        counted.start(10);
        counted.advance(4);
        counted.uploaded(100);
        counted.uploaded(23);
        counted.finish();
        assert_eq!(progress.uploaded.load(Ordering::Relaxed), 123);
        assert_eq!(counted.bytes(), 4);
        let mut last = None;
        while let Ok(line) = receiver.try_recv() {
            last = Some(line);
        }
        let line: StreamLine = serde_json::from_slice(&last.unwrap()).unwrap();
        assert_eq!(line.progress, Some(ProgressUpdate { total: 10, done: 4 }));
    }
}
