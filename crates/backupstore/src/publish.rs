//! Writing a manifest so that it becomes visible only once complete and durable.
//!
//! * `vfs://`: stream into `tmp/<uuid>`, `fsync` it, `syncfs` the store's filesystem (making
//!   every block and reference written before durable), hard-link it to its final name (which
//!   fails if a backup of that name exists), remove the temp name, `fsync` the directory.
//! * S3: stream through a multipart upload (a single PUT when small); S3 makes the object
//!   visible atomically when the upload completes.

use object_store::buffered::BufWriter;
use object_store::path::Path;
use std::path::PathBuf;
use tokio::io::AsyncWriteExt;

use crate::error::{BackupError, Result};
use crate::store::Store;
use crate::url::BackupRef;

fn local_err(what: &'static str, path: &std::path::Path, source: std::io::Error) -> BackupError {
    BackupError::LocalIo {
        what,
        path: path.display().to_string(),
        source,
    }
}

enum Sink {
    Local {
        tmp: PathBuf,
        file: tokio::fs::File,
        root: PathBuf,
    },
    Remote(Box<BufWriter>),
}

/// A backup of that name is already published.
fn exists_err(store: &Store, backup: &BackupRef) -> BackupError {
    BackupError::BackupExists {
        dest: store.dest.clone(),
        volume: backup.volume.clone(),
        backup: backup.backup.clone(),
    }
}

/// A manifest being written.
pub(crate) struct ManifestUpload<'a> {
    store: &'a Store,
    key: Path,
    backup: BackupRef,
    sink: Option<Sink>,
    sealer: Option<crate::sealed::ManifestSealer>,
}

impl<'a> ManifestUpload<'a> {
    /// Starts writing the manifest of `backup` to `key`.
    pub async fn start(store: &'a Store, key: Path, backup: BackupRef) -> Result<Self> {
        let sink = match &store.local_root {
            Some(root) => {
                let dir = root.join("tmp");
                tokio::fs::create_dir_all(&dir)
                    .await
                    .map_err(|e| local_err("creating", &dir, e))?;
                let tmp = dir.join(uuid::Uuid::new_v4().to_string());
                let file = tokio::fs::File::create(&tmp)
                    .await
                    .map_err(|e| local_err("creating", &tmp, e))?;
                Sink::Local {
                    tmp,
                    file,
                    root: root.clone(),
                }
            }
            None => Sink::Remote(Box::new(BufWriter::new(store.objects.clone(), key.clone()))),
        };
        let sealer = store
            .keys
            .get()
            .cloned()
            .flatten()
            .map(|k| crate::sealed::ManifestSealer::new(k, backup.clone()));
        Ok(ManifestUpload {
            store,
            key,
            backup,
            sink: Some(sink),
            sealer,
        })
    }

    /// Appends bytes (sealed first in an encrypted store).
    pub async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        match self.sealer.as_mut() {
            Some(s) => {
                let sealed = s.push(bytes)?;
                self.write_raw(&sealed).await
            }
            None => self.write_raw(bytes).await,
        }
    }

    async fn write_raw(&mut self, bytes: &[u8]) -> Result<()> {
        match self.sink.as_mut().expect("not finished") {
            Sink::Local { tmp, file, .. } => file
                .write_all(bytes)
                .await
                .map_err(|e| local_err("writing", tmp, e)),
            Sink::Remote(w) => w.write_all(bytes).await.map_err(|e| self.upload_err(e)),
        }
    }

    fn exists_err(&self) -> BackupError {
        exists_err(self.store, &self.backup)
    }

    /// The manifest upload's stream failed.
    fn upload_err(&self, e: std::io::Error) -> BackupError {
        BackupError::Store {
            dest: self.store.dest.clone(),
            op: "put",
            path: self.key.to_string(),
            source: Box::new(object_store::Error::Generic {
                store: "manifest upload",
                source: Box::new(e),
            }),
        }
    }

    /// Checks that no backup of this name has been published since the run began (S3: a
    /// `HEAD`; `vfs://` needs none, its publishing link refuses an existing name). Called
    /// by the run beside its last uploads; [`Self::commit`] relies on it.
    pub fn check_free(&self) -> impl std::future::Future<Output = Result<()>> + Send + 'a {
        let remote = matches!(self.sink, Some(Sink::Remote(_)));
        let (store, key, backup) = (self.store, self.key.clone(), self.backup.clone());
        async move {
            if remote && store.exists(&key).await? {
                return Err(exists_err(store, &backup));
            }
            Ok(())
        }
    }

    /// Makes the manifest visible (after making everything before it durable). The caller has
    /// run [`Self::check_free`] after its other uploads began.
    pub async fn commit(mut self) -> Result<()> {
        if let Some(mut s) = self.sealer.take() {
            let last = s.finish()?;
            self.write_raw(&last).await?;
        }
        match self.sink.take().expect("not finished") {
            Sink::Local {
                tmp,
                mut file,
                root,
            } => {
                file.flush()
                    .await
                    .map_err(|e| local_err("writing", &tmp, e))?;
                file.sync_all()
                    .await
                    .map_err(|e| local_err("fsync", &tmp, e))?;
                drop(file);
                self.store.sync_local().await?;
                let fin = root.join(self.key.as_ref());
                let dir = fin
                    .parent()
                    .expect("manifest key has a directory")
                    .to_path_buf();
                let result = tokio::task::spawn_blocking(move || {
                    std::fs::create_dir_all(&dir).map_err(|e| local_err("creating", &dir, e))?;
                    let linked = std::fs::hard_link(&tmp, &fin);
                    let _ = std::fs::remove_file(&tmp);
                    match linked {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                            return Ok(false)
                        }
                        Err(e) => return Err(local_err("publishing", &fin, e)),
                    }
                    std::fs::File::open(&dir)
                        .and_then(|d| d.sync_all())
                        .map_err(|e| local_err("fsync", &dir, e))?;
                    Ok(true)
                })
                .await
                .map_err(|e| BackupError::Task(e.to_string()))??;
                if !result {
                    return Err(self.exists_err());
                }
                Ok(())
            }
            Sink::Remote(mut w) => w.shutdown().await.map_err(|e| self.upload_err(e)),
        }
    }

    /// Abandons the manifest; nothing becomes visible.
    pub async fn abort(mut self) {
        match self.sink.take() {
            Some(Sink::Local { tmp, file, .. }) => {
                drop(file);
                let _ = tokio::fs::remove_file(&tmp).await;
            }
            Some(Sink::Remote(mut w)) => {
                let _ = w.abort().await;
            }
            None => {}
        }
    }
}
