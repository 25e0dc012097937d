//! Fault injection for crash tests (not part of the supported API): a target whose store
//! fails every write from the n-th on, as if the process had died just before it. Reads keep
//! working; nothing after the fault reaches the store.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// Counts the writes (puts, multipart uploads, deletes, copies) a target sends and fails them
/// from a chosen one on.
pub struct Faults {
    writes: AtomicU64,
    fail_from: AtomicU64,
    failed: AtomicU64,
    before_lock: std::sync::Mutex<Option<futures::future::BoxFuture<'static, ()>>>,
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Faults")
            .field("writes", &self.writes)
            .field("fail_from", &self.fail_from)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Faults {
    /// Counts writes, fails none.
    pub fn new() -> Arc<Faults> {
        Arc::new(Faults {
            writes: AtomicU64::new(0),
            fail_from: AtomicU64::new(u64::MAX),
            failed: AtomicU64::new(0),
            before_lock: std::sync::Mutex::new(None),
        })
    }

    /// Runs `f` to its end before the target's first lock record is written (once): what
    /// happens to the store between an operation's first reads and its lock.
    pub fn before_first_lock(&self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        *self.before_lock.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::pin(f));
    }

    async fn at_write(&self, path: &Path) {
        if path.as_ref().starts_with("locks/") {
            let f = self
                .before_lock
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(f) = f {
                f.await;
            }
        }
    }

    /// Fails the `n`-th write (from 0) and every later one.
    pub fn fail_from(&self, n: u64) {
        self.fail_from.store(n, Ordering::SeqCst);
    }

    /// Writes attempted so far (failed ones included).
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// Writes refused so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }

    fn admit(&self, path: &Path) -> object_store::Result<()> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst);
        if n >= self.fail_from.load(Ordering::SeqCst) {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Err(object_store::Error::Generic {
                store: "fault injection",
                source: format!("injected crash at write {n} ({path})").into(),
            });
        }
        Ok(())
    }
}

/// An object store whose writes pass through [`Faults`].
pub(crate) struct Faulty {
    pub inner: Arc<dyn ObjectStore>,
    pub faults: Arc<Faults>,
}

impl fmt::Debug for Faulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

impl fmt::Display for Faulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Faulty {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.faults.at_write(location).await;
        self.faults.admit(location)?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.faults.admit(location)?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_range(&self, location: &Path, range: Range<u64>) -> object_store::Result<Bytes> {
        self.inner.get_range(location, range).await
    }

    async fn head(&self, location: &Path) -> object_store::Result<ObjectMeta> {
        self.inner.head(location).await
    }

    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        self.faults.admit(location)?;
        self.inner.delete(location).await
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.faults.admit(to)?;
        self.inner.copy(from, to).await
    }

    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.faults.admit(to)?;
        self.inner.copy_if_not_exists(from, to).await
    }
}

/// Argon2id derivations this process has run (passphrase slots opened without the derived-key
/// cache, or made).
pub fn argon2_runs() -> u64 {
    crate::kek_cache::RUNS.load(Ordering::Relaxed)
}
