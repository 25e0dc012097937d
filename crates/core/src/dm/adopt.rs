//! Taking over the original Convoy's devicemapper volumes in place (`crate::original`): its
//! records become convoy's, its thin ids and data stay as they are, and start-up
//! reconciliation then renames its active devices (`/dev/mapper/<volume>`) to convoy's names
//! without unmounting them.

use std::collections::BTreeSet;
use std::path::Path;

use crate::error::Result;
use crate::original;
use crate::records::RecordStore;

use super::{meta, DmDriver, DEVICEMAPPER};

pub(super) fn adopt_original(d: &DmDriver, store: &RecordStore) -> Result<Vec<String>> {
    let Some(state) = original::read_dm_state(&d.dir)? else {
        return Ok(Vec::new());
    };
    original::check_same_pool(
        &d.dir.join(original::DM_CONFIG_FILE),
        &state.config,
        &d.opts.pool_name,
        &d.opts.data_device,
        &d.opts.metadata_device,
        *d.opts.block_size.sectors(),
    )?;
    let pool_ids: BTreeSet<u64> = {
        let _one = d.metadata.lock().unwrap_or_else(|e| e.into_inner());
        meta::with_metadata(&d.pool, &d.opts.metadata_device, meta::device_ids)?
            .into_iter()
            .collect()
    };
    // (Read only if there: a refusal leaves the root as it found it.)
    let ours = if store.dir().exists() {
        store.load_all()?
    } else {
        Vec::new()
    };
    let known_ids: BTreeSet<u64> = ours
        .iter()
        .flat_map(|r| {
            r.dev_id
                .into_iter()
                .chain(r.snapshots.values().filter_map(|s| s.dev_id))
        })
        .map(u64::from)
        .collect();
    let records = original::convert(&state, d.block_bytes(), &pool_ids, &known_ids)?;
    // Nothing is written until every record converted; then convoy's records first.
    for rec in &records {
        if let Some(existing) = ours.iter().find(|r| r.name == rec.name) {
            if existing.dev_id != rec.dev_id {
                return Err(crate::error::Error::invalid(
                    format!("the original Convoy's volume {}", rec.name),
                    format!(
                        "convoy already has a volume of that name with another thin id ({:?}, \
                         the original's is {:?}); nothing was changed",
                        existing.dev_id, rec.dev_id
                    ),
                ));
            }
        }
    }
    let mut report = Vec::new();
    for rec in &records {
        if !ours.iter().any(|r| r.name == rec.name) {
            store.save(rec)?;
        }
        report.push(format!(
            "{DEVICEMAPPER}: adopted the original Convoy's volume {} (thin id {}, {} snapshot(s){})",
            rec.name,
            rec.dev_id.unwrap_or_default(),
            rec.snapshots.len(),
            rec.mount_point
                .as_ref()
                .map(|m| format!(", mounted at {}", m.display()))
                .unwrap_or_default()
        ));
    }
    let root = d.dir.parent().unwrap_or(Path::new("/"));
    for (path, _) in &state.volumes {
        let rel = Path::new(DEVICEMAPPER).join(path.file_name().unwrap_or_default());
        original::retire(root, &rel)?;
    }
    original::retire(
        root,
        &Path::new(DEVICEMAPPER).join(original::DM_CONFIG_FILE),
    )?;
    report.push(format!(
        "{DEVICEMAPPER}: the original Convoy's records are kept in {}",
        root.join(original::ADOPTED_DIR).display()
    ));
    Ok(report)
}
