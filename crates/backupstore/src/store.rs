//! Opening a destination and the object operations every other module uses, with errors
//! mapped to [`BackupError`] naming the destination and key.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, PutMode, PutOptions, PutPayload, RetryConfig,
};

use crate::aws_files;
use crate::error::{BackupError, Result};
use crate::options::TargetOptions;
use crate::url::{parse_destination, Destination};

/// An open destination: the object store and, for `vfs://`, the local directory.
pub(crate) struct Store {
    pub dest: String,
    pub objects: Arc<dyn ObjectStore>,
    pub local_root: Option<PathBuf>,
    /// Where the store index is cached (`None`: not cached).
    pub cache_dir: Option<PathBuf>,
    /// The cache of the store's current pack deletion journal, under `cache_dir`, once a
    /// backup has read the journal (see `crate::index`).
    pub(crate) index_cache: std::sync::Mutex<Option<PathBuf>>,
    /// Requests sent so far (each call below counts one; a listing one per call).
    pub requests: AtomicU64,
    /// For S3 without credentials found before the instance metadata endpoint: where they were
    /// looked for, to explain that endpoint's failure.
    pub credentials_search: Option<aws_files::CredentialsSearch>,
    /// The keys of an encrypted store (`Some(None)`: not encrypted), set once the marker has
    /// been read (see `BackupTarget::unlock`).
    pub keys: std::sync::OnceLock<Option<Arc<crate::crypto::Keys>>>,
    /// Requests an operation left running when it returned (a lock record's removal), for
    /// `BackupTarget::settle`.
    pub background: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Store {
    /// Sends `f` in the background (on the current runtime, if any), for `settle` to wait for.
    pub fn in_background(&self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let mut bg = self.background.lock().unwrap_or_else(|p| p.into_inner());
            bg.retain(|h| !h.is_finished());
            bg.push(rt.spawn(f));
        }
    }

    /// Waits for what [`Self::in_background`] sent.
    pub async fn settle(&self) {
        loop {
            let pending =
                std::mem::take(&mut *self.background.lock().unwrap_or_else(|p| p.into_inner()));
            if pending.is_empty() {
                return;
            }
            for h in pending {
                let _ = h.await;
            }
        }
    }
}

/// The default index cache directory of an S3 destination:
/// `$XDG_CACHE_HOME/convoy/backupstore/<16 hex of BLAKE3(dest, endpoint)>` (or under
/// `~/.cache`): one bucket path on two servers are two stores.
fn default_cache_dir(dest: &str, endpoint: Option<&str>) -> Option<PathBuf> {
    let base = env("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    let mut h = blake3::Hasher::new();
    h.update(dest.as_bytes());
    if let Some(e) = endpoint {
        h.update(b"\n");
        h.update(e.as_bytes());
    }
    let tag = h.finalize().to_hex();
    Some(base.join("convoy/backupstore").join(&tag.as_str()[..16]))
}

fn s3_config(url: &str, reason: impl Into<String>) -> BackupError {
    BackupError::S3Config {
        url: url.to_string(),
        reason: reason.into(),
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Store {
    /// Opens `dest_url`; a `vfs://` directory is created if missing.
    pub fn open(dest_url: &str, opts: &TargetOptions) -> Result<Store> {
        let (objects, credentials_search): (Arc<dyn ObjectStore>, _) =
            match parse_destination(dest_url)? {
                Destination::Vfs { path } => {
                    std::fs::create_dir_all(&path).map_err(|source| BackupError::LocalIo {
                        what: "creating backup directory",
                        path: path.display().to_string(),
                        source,
                    })?;
                    let fs = LocalFileSystem::new_with_prefix(&path).map_err(|source| {
                        BackupError::Store {
                            dest: dest_url.to_string(),
                            op: "open",
                            path: path.display().to_string(),
                            source: Box::new(source),
                        }
                    })?;
                    // Remove directories left empty by deletes (one per block under refs/).
                    let fs = fs.with_automatic_cleanup(true);
                    return Ok(Store {
                        dest: dest_url.to_string(),
                        objects: Arc::new(fs),
                        local_root: Some(path),
                        cache_dir: opts.cache_dir.clone(),
                        index_cache: std::sync::Mutex::new(None),
                        requests: AtomicU64::new(0),
                        credentials_search: None,
                        keys: std::sync::OnceLock::new(),
                        background: Default::default(),
                    });
                }
                Destination::S3 {
                    bucket,
                    region,
                    prefix,
                } => {
                    let (s3, search) = Self::build_s3(dest_url, &bucket, region, opts)?;
                    if prefix.is_empty() {
                        (Arc::new(s3), search)
                    } else {
                        (Arc::new(PrefixStore::new(s3, prefix.as_str())), search)
                    }
                }
            };
        Ok(Store {
            dest: dest_url.to_string(),
            objects,
            local_root: None,
            cache_dir: opts.cache_dir.clone().or_else(|| {
                let endpoint = opts.s3_endpoint.clone().or_else(|| env("AWS_ENDPOINT"));
                default_cache_dir(dest_url, endpoint.as_deref())
            }),
            index_cache: std::sync::Mutex::new(None),
            requests: AtomicU64::new(0),
            credentials_search,
            keys: std::sync::OnceLock::new(),
            background: Default::default(),
        })
    }

    /// The directory caching the index of this store's packs, once known (see `crate::index`).
    pub fn index_cache(&self) -> Option<PathBuf> {
        self.index_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sets [`Self::index_cache`].
    pub fn set_index_cache(&self, dir: Option<PathBuf>) {
        *self.index_cache.lock().unwrap_or_else(|p| p.into_inner()) = dir;
    }

    /// The keys of an encrypted store, `None` for an unencrypted one. Every operation reads the
    /// marker (and unlocks an encrypted store) before touching data: calling this earlier is a
    /// bug, not a way to write plaintext into an encrypted store.
    pub fn keys(&self) -> Option<&crate::crypto::Keys> {
        self.keys
            .get()
            .expect("the store's marker is read before its data")
            .as_deref()
    }

    /// The name of backup `r`'s reference records: `<volume>+<backup>`, or in an encrypted
    /// store a keyed hash of both.
    pub fn ref_owner(&self, r: &crate::url::BackupRef) -> String {
        match self.keys() {
            Some(k) => k.ref_owner(r),
            None => format!("{}+{}", r.volume, r.backup),
        }
    }

    /// The reference record "backup `r` uses pack `pack`".
    pub fn pack_ref(&self, pack: &convoy_blockstore::BlockId, r: &crate::url::BackupRef) -> Path {
        Path::from(format!("refs/{}/{}", pack.to_hex(), self.ref_owner(r)))
    }

    /// A manifest's bytes (unsealed in an encrypted store), `None` if it does not exist.
    /// `r` names the backup the manifest belongs to (also under `trash/`).
    pub async fn manifest_stream(
        &self,
        path: &Path,
        r: &crate::url::BackupRef,
    ) -> Result<Option<BoxStream<'static, object_store::Result<Bytes>>>> {
        Ok(self.manifest_stream_tagged(path, r).await?.map(|(s, _)| s))
    }

    /// [`Self::manifest_stream`], with the object's version tag (its `ETag`, if the store
    /// gives one): see [`Self::version_tag`].
    pub async fn manifest_stream_tagged(
        &self,
        path: &Path,
        r: &crate::url::BackupRef,
    ) -> Result<
        Option<(
            BoxStream<'static, object_store::Result<Bytes>>,
            Option<String>,
        )>,
    > {
        self.count();
        let got = match self.objects.get(path).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.err("get", path, e)),
        };
        let tag = got.meta.e_tag.clone();
        let s = got.into_stream();
        let s = match self.keys.get().cloned().flatten() {
            Some(k) => crate::sealed::open_manifest_stream(k, r.clone(), s),
            None => s,
        };
        Ok(Some((s, tag)))
    }

    /// Whether an object exists, and its version tag (`ETag`; `None` if the store gives
    /// none): `None` if it does not exist.
    pub async fn version_tag(&self, path: &Path) -> Result<Option<Option<String>>> {
        self.count();
        match self.objects.head(path).await {
            Ok(m) => Ok(Some(m.e_tag)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("head", path, e)),
        }
    }

    fn build_s3(
        url: &str,
        bucket: &str,
        region: Option<String>,
        opts: &TargetOptions,
    ) -> Result<(
        object_store::aws::AmazonS3,
        Option<aws_files::CredentialsSearch>,
    )> {
        let profile = opts
            .aws_profile
            .clone()
            .unwrap_or_else(aws_files::profile_from_env);
        let endpoint = opts.s3_endpoint.clone().or_else(|| env("AWS_ENDPOINT"));
        let region = region
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .or_else(|| {
                aws_files::default_config_file()
                    .and_then(|p| aws_files::read_region(&p, &profile))
            })
            .or_else(|| endpoint.as_ref().map(|_| "us-east-1".to_string()))
            .ok_or_else(|| {
                s3_config(
                    url,
                    "no region: use s3://bucket@region/path, or set AWS_REGION, or `region` in ~/.aws/config",
                )
            })?;
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_region(region);
        // Credentials: explicit option > environment > shared credentials file > object_store's
        // own chain (web identity, ECS, instance metadata).
        let file = opts
            .aws_credentials_file
            .clone()
            .or_else(aws_files::default_credentials_file);
        let from_file = || aws_files::read_credentials(file.as_deref()?, &profile);
        let creds = match &opts.s3_credentials {
            Some(c) => Some(c.clone()),
            None if env("AWS_ACCESS_KEY_ID").is_some() => None,
            None => from_file(),
        };
        let search = if creds.is_none() && env("AWS_ACCESS_KEY_ID").is_none() {
            aws_files::CredentialsSearch::after_nothing_found(
                file.as_deref(),
                &profile,
                b.get_config_value(&object_store::aws::AmazonS3ConfigKey::MetadataEndpoint),
            )
        } else {
            None
        };
        if let Some(c) = creds {
            b = b
                .with_access_key_id(c.access_key_id)
                .with_secret_access_key(c.secret_access_key);
            if let Some(t) = c.session_token {
                b = b.with_token(t);
            }
        }
        let r = &opts.retry;
        b = b
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: r.initial_backoff,
                    max_backoff: r.max_backoff,
                    base: 2.0,
                },
                max_retries: r.max_retries,
                retry_timeout: r.timeout,
            })
            .with_client_options(ClientOptions::new().with_connect_timeout(r.connect_timeout))
            .with_http_connector(crate::first_contact::FailFastConnector);
        // After the client options: `with_allow_http` is stored in them.
        if let Some(ep) = &endpoint {
            b = b
                .with_endpoint(ep.trim_end_matches('/'))
                .with_allow_http(ep.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        let s3 = b.build().map_err(|e| s3_config(url, e.to_string()))?;
        Ok((s3, search))
    }

    fn err(&self, op: &'static str, path: &Path, source: object_store::Error) -> BackupError {
        if let Some(reason) = self
            .credentials_search
            .as_ref()
            .and_then(|s| s.explain(&source))
        {
            return s3_config(&self.dest, reason);
        }
        BackupError::Store {
            dest: self.dest.clone(),
            op,
            path: path.to_string(),
            source: Box::new(source),
        }
    }

    fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes `range` of an object, or `None` if it does not exist.
    pub async fn get_range_opt(&self, path: &Path, range: Range<u64>) -> Result<Option<Bytes>> {
        self.count();
        match self.objects.get_range(path, range).await {
            Ok(b) => Ok(Some(b)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("get", path, e)),
        }
    }

    /// Every key under `prefix` with its size.
    pub fn list_meta(&self, prefix: &Path) -> BoxStream<'_, Result<(Path, u64)>> {
        self.count();
        let prefix_owned = prefix.clone();
        self.objects
            .list(Some(prefix))
            .map_ok(|m| (m.location, m.size))
            .map_err(move |e| self.err("list", &prefix_owned, e))
            .boxed()
    }

    /// Writes a pack: one PUT up to `multipart_above` bytes, a parallel multipart upload
    /// (parts of `multipart_above` bytes, up to 4 at once) above.
    pub async fn put_large(
        &self,
        path: &Path,
        data: bytes::Bytes,
        multipart_above: usize,
    ) -> Result<()> {
        if data.len() <= multipart_above {
            return self.put(path, data).await;
        }
        use tokio::io::AsyncWriteExt;
        let parts = data.len().div_ceil(multipart_above) as u64;
        self.requests.fetch_add(parts + 2, Ordering::Relaxed);
        let mut w = object_store::buffered::BufWriter::with_capacity(
            self.objects.clone(),
            path.clone(),
            multipart_above,
        )
        .with_max_concurrency(4);
        let io = |e: std::io::Error| BackupError::Store {
            dest: self.dest.clone(),
            op: "put",
            path: path.to_string(),
            source: Box::new(object_store::Error::Generic {
                store: "multipart upload",
                source: Box::new(e),
            }),
        };
        if let Err(e) = w.write_all(&data).await {
            let _ = w.abort().await;
            return Err(io(e));
        }
        drop(data);
        if let Err(e) = w.shutdown().await {
            let _ = w.abort().await;
            return Err(io(e));
        }
        Ok(())
    }

    /// The whole object, or `None` if it does not exist.
    pub async fn get_opt(&self, path: &Path) -> Result<Option<Bytes>> {
        self.count();
        match self.objects.get(path).await {
            Ok(r) => match r.bytes().await {
                Ok(b) => Ok(Some(b)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.err("get", path, e)),
            },
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("get", path, e)),
        }
    }

    /// Writes an object (overwriting).
    pub async fn put(&self, path: &Path, data: impl Into<PutPayload>) -> Result<()> {
        self.count();
        self.objects
            .put(path, data.into())
            .await
            .map(|_| ())
            .map_err(|e| self.err("put", path, e))
    }

    /// Writes an object unless it exists; returns whether it was created.
    pub async fn put_new(&self, path: &Path, data: impl Into<PutPayload>) -> Result<bool> {
        self.count();
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self.objects.put_opts(path, data.into(), opts).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.err("put", path, e)),
        }
    }

    /// Whether an object exists.
    pub async fn exists(&self, path: &Path) -> Result<bool> {
        Ok(self.version_tag(path).await?.is_some())
    }

    /// Deletes an object; a missing object is not an error.
    pub async fn delete(&self, path: &Path) -> Result<()> {
        self.count();
        match self.objects.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("delete", path, e)),
        }
    }

    /// Every key under `prefix` (paginated by the store as it goes).
    pub fn list(&self, prefix: &Path) -> BoxStream<'_, Result<Path>> {
        self.count();
        let prefix_owned = prefix.clone();
        self.objects
            .list(Some(prefix))
            .map_ok(|m| m.location)
            .map_err(move |e| self.err("list", &prefix_owned, e))
            .boxed()
    }

    /// Whether anything exists under `prefix` (reads at most one page).
    pub async fn any_under(&self, prefix: &Path) -> Result<bool> {
        Ok(self.list(prefix).try_next().await?.is_some())
    }

    /// The immediate sub-"directories" of `prefix`.
    pub async fn list_dirs(&self, prefix: &Path) -> Result<Vec<String>> {
        self.count();
        match self.objects.list_with_delimiter(Some(prefix)).await {
            Ok(r) => Ok(r
                .common_prefixes
                .into_iter()
                .filter_map(|p| p.filename().map(str::to_string))
                .collect()),
            Err(object_store::Error::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(self.err("list", prefix, e)),
        }
    }

    /// For `vfs://`: flushes the whole filesystem holding the store (`syncfs`), so that every
    /// block and reference written so far is durable. No-op for S3.
    pub async fn sync_local(&self) -> Result<()> {
        let Some(root) = self.local_root.clone() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || {
            let dir = std::fs::File::open(&root).map_err(|source| BackupError::LocalIo {
                what: "opening for syncfs",
                path: root.display().to_string(),
                source,
            })?;
            nix::unistd::syncfs(&dir).map_err(|e| BackupError::LocalIo {
                what: "syncfs",
                path: root.display().to_string(),
                source: e.into(),
            })
        })
        .await
        .map_err(|e| BackupError::Task(e.to_string()))?
    }
}
