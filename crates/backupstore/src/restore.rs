//! Restore and verify: stream the manifest, download blocks `parallelism` at a time, check
//! every block's hash, write non-zero data at its offset (holes stay sparse).

use std::sync::Arc;

use convoy_blockstore::{decode_block, BlockError};
use futures::StreamExt;

use crate::error::{BackupError, Result};
use crate::layout;
use crate::manifest::{Entry, ManifestReader};
use crate::store::Store;
use crate::types::{BlockSink, Progress, RestoreOptions, RestoreStats};
use crate::url::BackupRef;

/// Opens a backup's manifest for reading.
pub(crate) async fn open_manifest(store: &Store, r: &BackupRef) -> Result<ManifestReader> {
    let stream = store
        .get_stream_opt(&layout::manifest(r))
        .await?
        .ok_or_else(|| BackupError::BackupNotFound {
            dest: store.dest.clone(),
            volume: r.volume.clone(),
            backup: r.backup.clone(),
        })?;
    ManifestReader::open(&r.backup, stream).await
}

/// Downloads and verifies one block.
pub(crate) async fn fetch(store: &Store, r: &BackupRef, e: Entry) -> Result<Vec<u8>> {
    let stored =
        store
            .get_opt(&layout::block(&e.id))
            .await?
            .ok_or_else(|| BackupError::MissingBlock {
                backup: r.backup.clone(),
                offset: e.offset,
                id: e.id,
            })?;
    let backup = r.backup.clone();
    let data = crate::worker::run(move || decode_block(&stored, &e.id))
        .await?
        .map_err(|source| BackupError::CorruptBlock {
            backup,
            offset: e.offset,
            id: e.id,
            source: Box::new(source),
        })?;
    if data.len() != e.len as usize {
        return Err(BackupError::CorruptBlock {
            backup: r.backup.clone(),
            offset: e.offset,
            id: e.id,
            source: Box::new(BlockError::Malformed {
                id: e.id,
                reason: format!("{} bytes, the manifest says {}", data.len(), e.len),
            }),
        });
    }
    Ok(data)
}

/// What to do with each verified block.
enum Action {
    Write(Arc<dyn BlockSink>),
    Check,
}

/// Work items: a block to fetch, or (with `zero_holes`) a hole to zero.
enum Item {
    Block(Entry),
    Hole { offset: u64, len: u64 },
}

struct Items {
    reader: ManifestReader,
    zero_holes: bool,
    next_free: u64,
    pending: Option<Entry>,
    chunk: u64,
    size: u64,
}

impl Items {
    async fn next(&mut self) -> Result<Option<Item>> {
        if self.pending.is_none() {
            self.pending = self.reader.next_entry().await?;
        }
        let upto = self.pending.map_or(self.size, |e| e.offset);
        if self.zero_holes && self.next_free < upto {
            let len = (upto - self.next_free).min(self.chunk);
            let item = Item::Hole {
                offset: self.next_free,
                len,
            };
            self.next_free += len;
            return Ok(Some(item));
        }
        Ok(self.pending.take().map(|e| {
            self.next_free = e.offset + u64::from(e.len);
            Item::Block(e)
        }))
    }
}

async fn run(
    store: &Arc<Store>,
    r: &BackupRef,
    action: Action,
    opts: &RestoreOptions,
    parallelism: usize,
    progress: &dyn Progress,
) -> Result<RestoreStats> {
    let reader = open_manifest(store, r).await?;
    let size = reader.header().volume_size;
    let chunk = u64::from(reader.header().chunk_size);
    progress.start(size);
    let zero = Arc::new(vec![0u8; chunk as usize]);
    let items = Items {
        reader,
        zero_holes: opts.zero_holes && matches!(action, Action::Write(_)),
        next_free: 0,
        pending: None,
        chunk,
        size,
    };
    let stream = futures::stream::unfold(items, |mut g| async {
        match g.next().await {
            Ok(Some(i)) => Some((Ok(i), g)),
            Ok(None) => None,
            Err(e) => Some((Err(e), g)),
        }
    });
    let sink = match &action {
        Action::Write(s) => Some(s.clone()),
        Action::Check => None,
    };
    let finisher = sink.clone();
    let results = stream
        .map(|item| {
            let store = store.clone();
            let sink = sink.clone();
            let zero = zero.clone();
            async move {
                match item? {
                    Item::Hole { offset, len } => {
                        let sink = sink.expect("holes only when writing");
                        crate::worker::run(move || {
                            sink.write_at(offset, &zero[..len as usize])
                                .map_err(|source| BackupError::SinkWrite { offset, source })
                        })
                        .await??;
                        Ok((0u64, 0u64))
                    }
                    Item::Block(e) => {
                        let data = fetch(&store, r, e).await?;
                        if let Some(sink) = sink {
                            crate::worker::run(move || {
                                sink.write_at(e.offset, &data).map_err(|source| {
                                    BackupError::SinkWrite {
                                        offset: e.offset,
                                        source,
                                    }
                                })
                            })
                            .await??;
                        }
                        Ok((1u64, u64::from(e.len)))
                    }
                }
            }
        })
        .buffer_unordered(parallelism.max(1));
    let mut results = std::pin::pin!(results);
    let mut stats = RestoreStats {
        volume_size: size,
        ..Default::default()
    };
    while let Some(res) = results.next().await {
        let (blocks, bytes) = res?;
        stats.blocks += blocks;
        stats.bytes += bytes;
        progress.advance(bytes);
    }
    if let Some(sink) = finisher {
        crate::worker::run(move || sink.finish())
            .await?
            .map_err(|source| BackupError::SinkWrite {
                offset: size,
                source,
            })?;
    }
    progress.finish();
    Ok(stats)
}

/// Restores backup `r` into `sink`.
pub(crate) async fn restore(
    store: &Arc<Store>,
    r: &BackupRef,
    sink: Arc<dyn BlockSink>,
    opts: &RestoreOptions,
    parallelism: usize,
    progress: &dyn Progress,
) -> Result<RestoreStats> {
    run(store, r, Action::Write(sink), opts, parallelism, progress).await
}

/// Downloads and checks every block of backup `r` and the manifest's checksum.
pub(crate) async fn verify(
    store: &Arc<Store>,
    r: &BackupRef,
    parallelism: usize,
    progress: &dyn Progress,
) -> Result<RestoreStats> {
    let opts = RestoreOptions::default();
    run(store, r, Action::Check, &opts, parallelism, progress).await
}
