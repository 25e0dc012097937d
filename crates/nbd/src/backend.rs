//! What a device serves: the [`BlockBackend`] trait, and [`MemoryBackend`], a byte vector.

use std::io;
use std::sync::Mutex;

/// The storage behind a device. Methods are async (backends fetch from object stores); the
/// server runs many of them at once, so an implementation must be safe under concurrent calls
/// on different and overlapping ranges. Ranges given are always inside [`BlockBackend::size`].
///
/// An error is answered to the kernel as an NBD error (the errno when the protocol names it,
/// `EIO` otherwise): the reader sees an I/O error, never the content of `buf`.
#[async_trait::async_trait]
pub trait BlockBackend: Send + Sync + 'static {
    /// Size of the device in bytes.
    fn size(&self) -> u64;

    /// Whether the device refuses writes (advertised to the kernel, which then refuses them
    /// itself; a write that still arrives is answered `EPERM`).
    fn read_only(&self) -> bool {
        false
    }

    /// Whether [`BlockBackend::trim`] is implemented (advertised as `SEND_TRIM`).
    fn supports_trim(&self) -> bool {
        false
    }

    /// Fills `buf` with the bytes at `offset`.
    async fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    /// Writes `data` at `offset`. Durable only after a later [`BlockBackend::flush`].
    async fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;

    /// Makes every write completed before this call durable.
    async fn flush(&self) -> io::Result<()>;

    /// The range `offset..offset + len` may be discarded (reads of it may then return zeros
    /// or the old data).
    async fn trim(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this backend does not trim",
        ))
    }
}

/// A device held in memory (tests, examples). Writes are visible at once; flush does nothing.
#[derive(Debug)]
pub struct MemoryBackend {
    data: Mutex<Vec<u8>>,
    read_only: bool,
}

impl MemoryBackend {
    /// A zeroed device of `size` bytes.
    pub fn new(size: u64) -> Self {
        Self::from_bytes(vec![0; size as usize], false)
    }

    /// A device holding `data` (read-only when `read_only`).
    pub fn from_bytes(data: Vec<u8>, read_only: bool) -> Self {
        MemoryBackend {
            data: Mutex::new(data),
            read_only,
        }
    }

    /// A copy of the whole content.
    pub fn snapshot(&self) -> Vec<u8> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl BlockBackend for MemoryBackend {
    fn size(&self) -> u64 {
        self.lock().len() as u64
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn supports_trim(&self) -> bool {
        !self.read_only
    }

    async fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let data = self.lock();
        let at = offset as usize;
        buf.copy_from_slice(&data[at..at + buf.len()]);
        Ok(())
    }

    async fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if self.read_only {
            return Err(io::Error::from_raw_os_error(1));
        }
        let mut mem = self.lock();
        let at = offset as usize;
        mem[at..at + data.len()].copy_from_slice(data);
        Ok(())
    }

    async fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    async fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        let mut mem = self.lock();
        mem[offset as usize..(offset + len) as usize].fill(0);
        Ok(())
    }
}
