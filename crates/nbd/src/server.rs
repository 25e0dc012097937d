//! The server loop: reads requests from the socket, runs each in a task of its own (up to
//! [`ServeOptions::max_in_flight`] at once) and writes the replies as they complete, in any
//! order, each with its request's cookie.
//!
//! Every request is answered: a backend error or a backend task that panics is an error reply
//! (`EIO` unless the error is one the protocol names), never data. `NBD_CMD_DISC` stops the
//! reading; the requests in flight are answered before the socket is closed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};

use crate::backend::BlockBackend;
use crate::error::{NbdError, Result};
use crate::protocol::{self as p, Request};

/// Largest request accepted (the kernel's NBD client sends at most 32 MiB, its
/// `max_hw_sectors`).
pub const MAX_REQUEST: u32 = 32 << 20;

/// How the server runs.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Requests handled at once; further ones wait to be read (the kernel queues them).
    pub max_in_flight: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions { max_in_flight: 64 }
    }
}

/// Counters of a server, shared while it runs.
#[derive(Debug, Default)]
pub struct ServeStats {
    /// Requests answered.
    pub requests: AtomicU64,
    /// Requests answered with an error.
    pub errors: AtomicU64,
    /// Bytes read for the client.
    pub bytes_read: AtomicU64,
    /// Bytes written by the client.
    pub bytes_written: AtomicU64,
}

/// How a server ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServeEnd {
    /// The client sent `NBD_CMD_DISC` (a clean detach).
    Disconnected,
    /// The socket closed without one (the kernel tore the device down, or the peer died).
    Closed,
}

struct Reply {
    header: [u8; p::REPLY_LEN],
    data: Option<Vec<u8>>,
}

fn transmission_flags(backend: &dyn BlockBackend) -> u16 {
    let mut f = p::FLAG_HAS_FLAGS | p::FLAG_SEND_FLUSH;
    if backend.read_only() {
        f |= p::FLAG_READ_ONLY;
    } else if backend.supports_trim() {
        f |= p::FLAG_SEND_TRIM;
    }
    f
}

/// The transmission flags the kernel must be given for `backend` (`HAS_FLAGS`, `SEND_FLUSH`,
/// and `READ_ONLY` or `SEND_TRIM` as the backend says). FUA is not advertised: the kernel then
/// sends a flush after a write that needs one, which the server already handles.
pub fn flags_for(backend: &dyn BlockBackend) -> u16 {
    transmission_flags(backend)
}

/// Serves `backend` on `stream` until the client disconnects or the socket closes.
///
/// # Errors
/// [`NbdError::Protocol`] for a request with a bad magic or too long; [`NbdError::Io`] for a
/// socket error other than the peer closing it.
pub async fn serve<S>(
    stream: S,
    backend: Arc<dyn BlockBackend>,
    options: ServeOptions,
    stats: Arc<ServeStats>,
) -> Result<ServeEnd>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let in_flight = options.max_in_flight.max(1);
    let (tx, mut rx) = mpsc::channel::<Reply>(in_flight);
    let written = tokio::spawn(async move {
        while let Some(r) = rx.recv().await {
            writer.write_all(&r.header).await?;
            if let Some(d) = r.data {
                writer.write_all(&d).await?;
            }
            // Nothing else is queued: send what we have (the kernel waits for it).
            if rx.is_empty() {
                writer.flush().await?;
            }
        }
        writer.flush().await?;
        writer.shutdown().await
    });
    let permits = Arc::new(Semaphore::new(in_flight));
    let outcome = read_loop(&mut reader, &backend, &permits, &tx, &stats).await;
    // Answer everything in flight before closing.
    let _all = permits
        .acquire_many(in_flight as u32)
        .await
        .expect("never closed");
    drop(tx);
    let wrote = written
        .await
        .map_err(|e| NbdError::Protocol(format!("reply writer failed: {e}")))?;
    let end = outcome?;
    match wrote {
        Ok(()) => Ok(end),
        // The kernel closes its end right after a disconnect: replies to nothing are fine.
        Err(e) if is_closed(&e) => Ok(end),
        Err(e) => Err(NbdError::Io {
            what: "writing replies".into(),
            source: e,
        }),
    }
}

fn is_closed(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(
        e.kind(),
        BrokenPipe | ConnectionReset | ConnectionAborted | UnexpectedEof
    )
}

async fn read_loop<R>(
    reader: &mut R,
    backend: &Arc<dyn BlockBackend>,
    permits: &Arc<Semaphore>,
    tx: &mpsc::Sender<Reply>,
    stats: &Arc<ServeStats>,
) -> Result<ServeEnd>
where
    R: AsyncRead + Unpin,
{
    loop {
        let mut header = [0u8; p::REQUEST_LEN];
        match reader.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if is_closed(&e) => return Ok(ServeEnd::Closed),
            Err(e) => return Err(NbdError::io("reading a request")(e)),
        }
        let req = Request::parse(&header).ok_or_else(|| {
            NbdError::Protocol(format!(
                "request magic {:#010x}, expected {:#010x}",
                u32::from_be_bytes(header[0..4].try_into().expect("4 bytes")),
                p::REQUEST_MAGIC
            ))
        })?;
        if req.kind == p::CMD_DISC {
            return Ok(ServeEnd::Disconnected);
        }
        let data = if req.kind == p::CMD_WRITE {
            if req.length > MAX_REQUEST {
                return Err(NbdError::Protocol(format!(
                    "write of {} bytes, more than the {MAX_REQUEST} accepted",
                    req.length
                )));
            }
            let mut d = vec![0u8; req.length as usize];
            reader
                .read_exact(&mut d)
                .await
                .map_err(NbdError::io("reading a write's data"))?;
            Some(d)
        } else {
            None
        };
        let permit = permits.clone().acquire_owned().await.expect("never closed");
        let (backend, tx, stats) = (backend.clone(), tx.clone(), stats.clone());
        tokio::spawn(async move {
            // In a task of its own: a panicking backend is an error reply, not a request the
            // kernel waits for until its timeout.
            let work = tokio::spawn(handle(backend, req, data, stats.clone()));
            let reply = work.await.unwrap_or_else(|_| Reply {
                header: p::encode_reply(req.cookie, p::EIO),
                data: None,
            });
            stats.requests.fetch_add(1, Ordering::Relaxed);
            if reply.header[4..8] != [0; 4] {
                stats.errors.fetch_add(1, Ordering::Relaxed);
            }
            let _ = tx.send(reply).await;
            drop(permit);
        });
    }
}

fn in_range(size: u64, req: &Request) -> bool {
    req.offset
        .checked_add(u64::from(req.length))
        .is_some_and(|end| end <= size)
}

async fn handle(
    backend: Arc<dyn BlockBackend>,
    req: Request,
    data: Option<Vec<u8>>,
    stats: Arc<ServeStats>,
) -> Reply {
    let error = |code: u32| Reply {
        header: p::encode_reply(req.cookie, code),
        data: None,
    };
    let ok = |data: Option<Vec<u8>>| Reply {
        header: p::encode_reply(req.cookie, 0),
        data,
    };
    let size = backend.size();
    match req.kind {
        p::CMD_READ => {
            if !in_range(size, &req) || req.length > MAX_REQUEST {
                return error(p::EINVAL);
            }
            let mut buf = vec![0u8; req.length as usize];
            match backend.read_at(req.offset, &mut buf).await {
                Ok(()) => {
                    stats
                        .bytes_read
                        .fetch_add(u64::from(req.length), Ordering::Relaxed);
                    ok(Some(buf))
                }
                Err(e) => {
                    tracing::warn!(
                        offset = req.offset,
                        len = req.length,
                        "nbd read failed: {e}"
                    );
                    error(p::error_code(&e))
                }
            }
        }
        p::CMD_WRITE => {
            if backend.read_only() {
                return error(p::EPERM);
            }
            if !in_range(size, &req) {
                return error(p::EINVAL);
            }
            let data = data.unwrap_or_default();
            let mut result = backend.write_at(req.offset, &data).await;
            if result.is_ok() && req.flags & p::CMD_FLAG_FUA != 0 {
                result = backend.flush().await;
            }
            match result {
                Ok(()) => {
                    stats
                        .bytes_written
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                    ok(None)
                }
                Err(e) => {
                    tracing::warn!(
                        offset = req.offset,
                        len = req.length,
                        "nbd write failed: {e}"
                    );
                    error(p::error_code(&e))
                }
            }
        }
        p::CMD_FLUSH => match backend.flush().await {
            Ok(()) => ok(None),
            Err(e) => {
                tracing::warn!("nbd flush failed: {e}");
                error(p::error_code(&e))
            }
        },
        p::CMD_TRIM => {
            if backend.read_only() {
                return error(p::EPERM);
            }
            if !backend.supports_trim() || !in_range(size, &req) {
                return error(p::EINVAL);
            }
            match backend.trim(req.offset, u64::from(req.length)).await {
                Ok(()) => ok(None),
                Err(e) => error(p::error_code(&e)),
            }
        }
        _ => error(p::EINVAL),
    }
}
