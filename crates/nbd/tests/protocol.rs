//! Host tier: the server loop against a fake client over a socket pair (no kernel involved).

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use convoy_nbd::protocol::{self as p, Request};
use convoy_nbd::{
    serve, BlockBackend, MemoryBackend, NbdError, ServeEnd, ServeOptions, ServeStats,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// A client speaking the transmission phase, as the kernel does.
struct Client {
    sock: UnixStream,
    next: u64,
}

impl Client {
    async fn send(&mut self, kind: u16, offset: u64, length: u32, data: &[u8]) -> u64 {
        self.next += 1;
        let req = Request {
            flags: 0,
            kind,
            cookie: self.next * 0x1_0000_0001,
            offset,
            length,
        };
        self.sock.write_all(&req.encode()).await.unwrap();
        self.sock.write_all(data).await.unwrap();
        req.cookie
    }

    /// Reads one reply; `lengths` says how much data follows a successful read of each cookie.
    async fn reply(&mut self, lengths: &HashMap<u64, usize>) -> (u64, u32, Vec<u8>) {
        let mut h = [0u8; p::REPLY_LEN];
        self.sock.read_exact(&mut h).await.unwrap();
        let (error, cookie) = p::parse_reply(&h).expect("reply magic");
        let mut data = vec![0u8; if error == 0 { lengths[&cookie] } else { 0 }];
        self.sock.read_exact(&mut data).await.unwrap();
        (cookie, error, data)
    }
}

fn start(
    backend: Arc<dyn BlockBackend>,
    in_flight: usize,
) -> (
    Client,
    tokio::task::JoinHandle<convoy_nbd::Result<ServeEnd>>,
) {
    let (a, b) = UnixStream::pair().unwrap();
    let server = tokio::spawn(serve(
        a,
        backend,
        ServeOptions {
            max_in_flight: in_flight,
        },
        Arc::new(ServeStats::default()),
    ));
    (Client { sock: b, next: 0 }, server)
}

/// Reads are slower the lower their offset, so replies come back out of order.
struct Slow(MemoryBackend);

#[async_trait::async_trait]
impl BlockBackend for Slow {
    fn size(&self) -> u64 {
        self.0.size()
    }
    async fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let wait = 200u64.saturating_sub(offset / 4096 * 20);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        self.0.read_at(offset, buf).await
    }
    async fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.write_at(offset, data).await
    }
    async fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}

/// Fails every read touching its bad range with EIO; panics on a read at offset 0.
struct Faulty(MemoryBackend);

#[async_trait::async_trait]
impl BlockBackend for Faulty {
    fn size(&self) -> u64 {
        self.0.size()
    }
    async fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if offset == 0 {
            panic!("a backend bug");
        }
        if offset < 8192 + 4096 && offset + buf.len() as u64 > 8192 {
            return Err(io::Error::other("store unreachable"));
        }
        self.0.read_at(offset, buf).await
    }
    async fn write_at(&self, _offset: u64, _data: &[u8]) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(28))
    }
    async fn flush(&self) -> io::Result<()> {
        Err(io::Error::other("flush failed"))
    }
}

#[tokio::test]
async fn writes_then_reads_many_in_flight_replies_out_of_order_with_cookies_echoed() {
    let backend = Arc::new(Slow(MemoryBackend::new(64 * 4096)));
    let (mut c, server) = start(backend.clone(), 16);
    let mut lengths = HashMap::new();
    let mut want = HashMap::new();
    for i in 0..10u64 {
        let data = vec![i as u8 + 1; 4096];
        let cookie = c.send(p::CMD_WRITE, i * 4096, 4096, &data).await;
        lengths.insert(cookie, 0);
    }
    for _ in 0..10 {
        let (_, err, _) = c.reply(&lengths).await;
        assert_eq!(err, 0);
    }
    // Ten reads at once: the first one sent is the slowest.
    let mut order = Vec::new();
    for i in 0..10u64 {
        let cookie = c.send(p::CMD_READ, i * 4096, 4096, &[]).await;
        lengths.insert(cookie, 4096);
        want.insert(cookie, vec![i as u8 + 1; 4096]);
        order.push(cookie);
    }
    let mut got = Vec::new();
    for _ in 0..10 {
        let (cookie, err, data) = c.reply(&lengths).await;
        assert_eq!(err, 0);
        assert_eq!(data, want[&cookie], "cookie {cookie:#x}");
        got.push(cookie);
    }
    assert_ne!(got, order, "replies should complete out of order");
    let mut sorted = got.clone();
    sorted.sort();
    order.sort();
    assert_eq!(sorted, order, "every cookie answered once");
    c.send(p::CMD_DISC, 0, 0, &[]).await;
    assert_eq!(server.await.unwrap().unwrap(), ServeEnd::Disconnected);
}

#[tokio::test]
async fn backend_errors_and_panics_are_error_replies_and_the_stream_stays_in_step() {
    let (mut c, server) = start(Arc::new(Faulty(MemoryBackend::new(16 * 4096))), 4);
    let mut lengths = HashMap::new();
    for (offset, want) in [(8192, p::EIO), (0, p::EIO), (4096, 0), (12288, 0)] {
        let cookie = c.send(p::CMD_READ, offset, 4096, &[]).await;
        lengths.insert(cookie, 4096);
        let (got, err, data) = c.reply(&lengths).await;
        assert_eq!((got, err), (cookie, want), "read at {offset}");
        if want != 0 {
            assert!(data.is_empty(), "an error reply carries no data");
        } else {
            assert_eq!(data, vec![0; 4096]);
        }
    }
    let cookie = c.send(p::CMD_WRITE, 4096, 4096, &[7; 4096]).await;
    lengths.insert(cookie, 0);
    assert_eq!(c.reply(&lengths).await.1, p::ENOSPC, "errno kept");
    let cookie = c.send(p::CMD_FLUSH, 0, 0, &[]).await;
    lengths.insert(cookie, 0);
    assert_eq!(c.reply(&lengths).await.1, p::EIO);
    drop(c);
    assert_eq!(server.await.unwrap().unwrap(), ServeEnd::Closed);
}

#[tokio::test]
async fn ranges_read_only_trim_and_unknown_commands() {
    let ro = Arc::new(MemoryBackend::from_bytes(vec![5; 8192], true));
    let (mut c, server) = start(ro, 4);
    let mut lengths = HashMap::new();
    for (kind, offset, len, data, want) in [
        (p::CMD_WRITE, 0, 512, vec![1u8; 512], p::EPERM),
        (p::CMD_TRIM, 0, 512, vec![], p::EPERM),
        (p::CMD_READ, 8000, 512, vec![], p::EINVAL),
        (p::CMD_READ, u64::MAX - 10, 512, vec![], p::EINVAL),
        (9, 0, 0, vec![], p::EINVAL),
        (p::CMD_FLUSH, 0, 0, vec![], 0),
    ] {
        let cookie = c.send(kind, offset, len, &data).await;
        lengths.insert(cookie, len as usize);
        let (got, err, _) = c.reply(&lengths).await;
        assert_eq!((got, err), (cookie, want), "command {kind} at {offset}");
    }
    let cookie = c.send(p::CMD_READ, 4096, 4096, &[]).await;
    lengths.insert(cookie, 4096);
    assert_eq!(c.reply(&lengths).await.2, vec![5; 4096]);
    c.send(p::CMD_DISC, 0, 0, &[]).await;
    assert_eq!(server.await.unwrap().unwrap(), ServeEnd::Disconnected);

    let rw = Arc::new(MemoryBackend::from_bytes(vec![5; 8192], false));
    let (mut c, server) = start(rw.clone(), 4);
    let cookie = c.send(p::CMD_TRIM, 4096, 4096, &[]).await;
    lengths.insert(cookie, 0);
    assert_eq!(c.reply(&lengths).await.1, 0);
    c.send(p::CMD_DISC, 0, 0, &[]).await;
    server.await.unwrap().unwrap();
    assert_eq!(&rw.snapshot()[4096..], &[0; 4096][..]);
    assert_eq!(&rw.snapshot()[..4096], &[5; 4096][..]);
}

#[tokio::test]
async fn a_disconnect_answers_what_is_in_flight_before_closing() {
    let backend = Arc::new(Slow(MemoryBackend::from_bytes(vec![9; 8 * 4096], false)));
    let (mut c, server) = start(backend, 8);
    let mut lengths = HashMap::new();
    for i in 0..4u64 {
        let cookie = c.send(p::CMD_READ, i * 4096, 4096, &[]).await;
        lengths.insert(cookie, 4096);
    }
    c.send(p::CMD_DISC, 0, 0, &[]).await;
    for _ in 0..4 {
        let (_, err, data) = c.reply(&lengths).await;
        assert_eq!((err, data), (0, vec![9; 4096]));
    }
    let mut rest = Vec::new();
    c.sock.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "closed after the last reply");
    assert_eq!(server.await.unwrap().unwrap(), ServeEnd::Disconnected);
}

#[tokio::test]
async fn a_bad_magic_or_oversized_write_is_a_protocol_error() {
    let (mut c, server) = start(Arc::new(MemoryBackend::new(4096)), 4);
    c.sock.write_all(&[0u8; p::REQUEST_LEN]).await.unwrap();
    let e = server.await.unwrap().unwrap_err();
    assert!(matches!(e, NbdError::Protocol(_)), "{e}");
    assert!(e.to_string().contains("magic"), "{e}");

    let (mut c, server) = start(Arc::new(MemoryBackend::new(4096)), 4);
    let req = Request {
        flags: 0,
        kind: p::CMD_WRITE,
        cookie: 1,
        offset: 0,
        length: convoy_nbd::MAX_REQUEST + 1,
    };
    c.sock.write_all(&req.encode()).await.unwrap();
    let e = server.await.unwrap().unwrap_err();
    assert!(e.to_string().contains("more than"), "{e}");
}
