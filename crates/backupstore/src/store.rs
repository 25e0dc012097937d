//! Opening a destination and the object operations every other module uses, with errors
//! mapped to [`BackupError`] naming the destination and key.

use std::path::PathBuf;
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
        let objects: Arc<dyn ObjectStore> = match parse_destination(dest_url)? {
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
                });
            }
            Destination::S3 {
                bucket,
                region,
                prefix,
            } => {
                let s3 = Self::build_s3(dest_url, &bucket, region, opts)?;
                if prefix.is_empty() {
                    Arc::new(s3)
                } else {
                    Arc::new(PrefixStore::new(s3, prefix.as_str()))
                }
            }
        };
        Ok(Store {
            dest: dest_url.to_string(),
            objects,
            local_root: None,
        })
    }

    fn build_s3(
        url: &str,
        bucket: &str,
        region: Option<String>,
        opts: &TargetOptions,
    ) -> Result<object_store::aws::AmazonS3> {
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
        let from_file = || {
            let path = opts
                .aws_credentials_file
                .clone()
                .or_else(aws_files::default_credentials_file)?;
            aws_files::read_credentials(&path, &profile)
        };
        let creds = match &opts.s3_credentials {
            Some(c) => Some(c.clone()),
            None if env("AWS_ACCESS_KEY_ID").is_some() => None,
            None => from_file(),
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
            .with_client_options(ClientOptions::new().with_connect_timeout(r.connect_timeout));
        // After the client options: `with_allow_http` is stored in them.
        if let Some(ep) = &endpoint {
            b = b
                .with_endpoint(ep.trim_end_matches('/'))
                .with_allow_http(ep.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        b.build().map_err(|e| s3_config(url, e.to_string()))
    }

    fn err(&self, op: &'static str, path: &Path, source: object_store::Error) -> BackupError {
        BackupError::Store {
            dest: self.dest.clone(),
            op,
            path: path.to_string(),
            source: Box::new(source),
        }
    }

    /// The whole object, or `None` if it does not exist.
    pub async fn get_opt(&self, path: &Path) -> Result<Option<Bytes>> {
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

    /// The object's bytes as a stream, or `None` if it does not exist.
    pub async fn get_stream_opt(
        &self,
        path: &Path,
    ) -> Result<Option<BoxStream<'static, object_store::Result<Bytes>>>> {
        match self.objects.get(path).await {
            Ok(r) => Ok(Some(r.into_stream())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("get", path, e)),
        }
    }

    /// Writes an object (overwriting).
    pub async fn put(&self, path: &Path, data: impl Into<PutPayload>) -> Result<()> {
        self.objects
            .put(path, data.into())
            .await
            .map(|_| ())
            .map_err(|e| self.err("put", path, e))
    }

    /// Writes an object unless it exists; returns whether it was created.
    pub async fn put_new(&self, path: &Path, data: impl Into<PutPayload>) -> Result<bool> {
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
        match self.objects.head(path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.err("head", path, e)),
        }
    }

    /// Deletes an object; a missing object is not an error.
    pub async fn delete(&self, path: &Path) -> Result<()> {
        match self.objects.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("delete", path, e)),
        }
    }

    /// Every key under `prefix` (paginated by the store as it goes).
    pub fn list(&self, prefix: &Path) -> BoxStream<'_, Result<Path>> {
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
