//! One backup as a read-only block device: a [`convoy_nbd::BlockBackend`] over a
//! [`BackupReader`], and how a reader is opened for interactive use (bounded retries, so a
//! store outage becomes an I/O error within the kernel's request timeout).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use convoy_backupstore::{BackupReader, ReaderOptions};
use convoy_thinpool::{SectorBytes, Sectors, SECTOR_SIZE};

use crate::backups::{store_error_of, target_options};
use crate::error::{Error, Result};
use crate::types::StoreOptions;

/// How long the store client retries one fetch of an interactive reader before the read
/// fails (the kernel's NBD request timeout, [`REQUEST_TIMEOUT`], is well above it).
pub(crate) const FETCH_RETRY: Duration = Duration::from_secs(30);

/// [`FETCH_RETRY`], or (tests only) `CONVOY_TEST_FETCH_RETRY_MS`: a VM test of a store outage
/// need not wait 30 s for each read to fail.
fn fetch_retry() -> Duration {
    std::env::var("CONVOY_TEST_FETCH_RETRY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(FETCH_RETRY, Duration::from_millis)
}

/// The kernel fails an NBD request after this long (see `convoy_nbd::AttachOptions`).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);

/// Opens `url` for random access, as `operation` (named in the store's lock record).
pub(crate) async fn open_reader(
    url: &str,
    store: &StoreOptions,
    operation: String,
    cache_bytes: u64,
) -> Result<BackupReader> {
    let mut opts = target_options(store, None);
    opts.retry.timeout = fetch_retry();
    // A delete or repair elsewhere holds the exclusive lock for a short while only.
    opts.lock.wait = Duration::from_secs(60);
    BackupReader::open_url(
        url,
        opts,
        ReaderOptions {
            cache_bytes,
            read_ahead_chunks: 8,
            operation,
        },
    )
    .await
    .map_err(|e| store_error_of(format!("open {url}"), e))
}

/// The attach options of convoy's devices: 512-byte blocks (any filesystem a backup holds
/// mounts on it), the request timeout above the reader's retries.
pub(crate) fn attach_options() -> convoy_nbd::AttachOptions {
    convoy_nbd::AttachOptions {
        block_size: SECTOR_SIZE as u32,
        request_timeout: REQUEST_TIMEOUT,
        dead_connection_timeout: Duration::from_secs(120),
        serve: convoy_nbd::ServeOptions { max_in_flight: 64 },
    }
}

/// `major:minor` of `/dev/nbd<index>`, from sysfs.
pub(crate) fn nbd_device_number(index: u32) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(format!("/sys/block/nbd{index}/dev")).ok()?;
    let (ma, mi) = text.trim().split_once(':')?;
    Some((ma.parse().ok()?, mi.parse().ok()?))
}

/// An NBD error as a core error.
pub(crate) fn nbd_error(context: impl Into<String>) -> impl FnOnce(convoy_nbd::NbdError) -> Error {
    let context = context.into();
    move |e| match e {
        convoy_nbd::NbdError::DriverUnavailable { reason } => Error::Unsupported {
            what: context,
            why: format!("it needs the kernel's nbd driver, which is not available: {reason}"),
        },
        other => Error::Internal(format!("{context}: {other}")),
    }
}

/// A backup served read-only.
pub(crate) struct ReaderBackend(pub BackupReader);

#[async_trait::async_trait]
impl convoy_nbd::BlockBackend for ReaderBackend {
    fn size(&self) -> u64 {
        self.0.size()
    }

    fn read_only(&self) -> bool {
        true
    }

    async fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.read_at(offset, buf).await.map_err(io::Error::other)
    }

    async fn write_at(&self, _offset: u64, _data: &[u8]) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::EPERM))
    }

    async fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}

/// Attaches `reader` read-only to a free `/dev/nbdN`.
pub(crate) async fn attach_read_only(
    reader: BackupReader,
    what: &str,
) -> Result<convoy_nbd::NbdDevice> {
    if Sectors::from_bytes(reader.size()).is_none() {
        return Err(Error::Unsupported {
            what: what.to_owned(),
            why: format!(
                "the backup's volume size {} is not whole 512-byte sectors",
                reader.size()
            ),
        });
    }
    convoy_nbd::NbdDevice::attach(Arc::new(ReaderBackend(reader)), attach_options())
        .await
        .map_err(nbd_error(what.to_owned()))
}
