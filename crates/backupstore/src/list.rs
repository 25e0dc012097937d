//! Listing and inspecting backups (no lock: manifests are immutable once visible).

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};

use crate::error::Result;
use crate::layout;
use crate::manifest::ManifestHeader;
use crate::restore::open_manifest;
use crate::store::Store;
use crate::types::BackupInfo;
use crate::url::{backup_url, check_name, BackupRef};

/// Reads a backup's manifest header.
pub(crate) async fn header(store: &Store, r: &BackupRef) -> Result<ManifestHeader> {
    Ok(open_manifest(store, r).await?.header().clone())
}

/// Names of the volumes that have backups.
pub(crate) async fn volumes(store: &Store) -> Result<Vec<String>> {
    store.list_dirs(&layout::volumes_prefix()).await
}

/// Every backup of `volume` (paginated listing of its manifests).
pub(crate) async fn backups_of(store: &Store, volume: &str) -> Result<Vec<BackupRef>> {
    let keys: Vec<_> = store
        .list(&layout::manifests_of(volume))
        .try_collect()
        .await?;
    Ok(keys
        .iter()
        .filter_map(|k| k.filename()?.strip_suffix(layout::MANIFEST_SUFFIX))
        .filter_map(|name| BackupRef::new(volume, name).ok())
        .collect())
}

/// Backups at the destination (of one volume, or all), keyed by backup URL.
pub(crate) async fn list(
    store: &Store,
    volume: Option<&str>,
) -> Result<BTreeMap<String, BackupInfo>> {
    let vols = match volume {
        Some(v) => {
            check_name("volume", v)?;
            vec![v.to_string()]
        }
        None => volumes(store).await?,
    };
    let mut refs = Vec::new();
    for v in &vols {
        refs.extend(backups_of(store, v).await?);
    }
    let infos: Vec<Option<BackupInfo>> = futures::stream::iter(refs)
        .map(|r| async move {
            match header(store, &r).await {
                Ok(h) => Ok(Some(BackupInfo::from_header(
                    backup_url(&store.dest, &r),
                    &h,
                ))),
                // Deleted between listing and reading: not listed.
                Err(crate::BackupError::BackupNotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .buffer_unordered(16)
        .try_collect()
        .await?;
    Ok(infos
        .into_iter()
        .flatten()
        .map(|i| (i.backup_url.clone(), i))
        .collect())
}
