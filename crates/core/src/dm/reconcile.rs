//! Start-up reconciliation of the devicemapper driver with its records (which the manager has
//! already settled: no `Creating`/`Deleting` objects remain):
//!
//! 0. rename this pool's active thin devices that an older convoy named after their volume or
//!    snapshot to `convoy-<pool>-thin-<id>` (`names.rs`; one atomic rename each, repeated
//!    harmlessly by the next start if a crash stops it half-way; only devices whose table
//!    points into this pool are touched);
//! 1. resume thin devices a crash left suspended (inside a snapshot), release a metadata
//!    snapshot a crash left held, remove table-less devices of snapshots a crash left between
//!    creating a device and loading its table (volumes' are removed when activated);
//! 2. activate every volume, re-mount those recorded mounted, thaw a filesystem a crash left
//!    frozen;
//! 3. deactivate active thin devices of the pool that are not volumes (a snapshot a crashed
//!    backup was reading);
//! 4. delete orphan thin devices: ids in the pool's metadata (read under a metadata snapshot)
//!    that no record names — a crash between creating a thin id and recording it cannot make
//!    one (the intent is recorded first), but a crash between the pool message and removing an
//!    intent record, or records lost or edited by hand, can.

use std::collections::BTreeSet;

use convoy_thinpool::ThinId;

use crate::error::{Error, Result};
use crate::records::VolumeRecord;

use super::{meta, mounts, DmDriver};

pub(super) fn reconcile(d: &DmDriver, records: &[VolumeRecord]) -> Result<Vec<String>> {
    let mut report = migrate_names(d)?;
    let resumed = d
        .pool
        .resume_suspended()
        .map_err(Error::dm("resume suspended thin devices"))?;
    for name in resumed {
        report.push(format!(
            "devicemapper: resumed {name}, left suspended by a crash"
        ));
    }
    if d.pool.release_metadata_snap().is_ok() {
        report.push("devicemapper: released a metadata snapshot left held by a crash".into());
    }

    // A crash between creating a snapshot's device (for a backup) and loading its table
    // leaves a table-less device that no listing of the pool's devices shows.
    for snap in records.iter().flat_map(|r| r.snapshots.values()) {
        let Some(id) = snap.dev_id.and_then(|i| ThinId::new(u64::from(i)).ok()) else {
            continue;
        };
        let name = d.device_name(id);
        if d.pool
            .remove_half_made(&name)
            .map_err(Error::dm(format!("remove the half-made device {name}")))?
        {
            report.push(format!(
                "devicemapper: removed the table-less device {name} (snapshot {}), left \
                 half-made by a crash",
                snap.name
            ));
        }
    }

    let mut volume_devices = BTreeSet::new();
    for rec in records {
        if rec.instant.is_some() {
            // An instant restore: the manager resumes its fill, which serves the volume's
            // device and re-mounts it; its hidden thin device stays as it is.
            if let Some(id) = rec.dev_id.and_then(|i| ThinId::new(u64::from(i)).ok()) {
                volume_devices.insert(d.fill_name(id));
                volume_devices.insert(d.device_name(id));
            }
            continue;
        }
        let dev = d.activate_volume(rec)?;
        volume_devices.insert(dev.name.clone());
        if let Some(at) = &rec.mount_point {
            match mounts::device_at(at)? {
                Some((ma, mi)) if ma == dev.device.major && mi == dev.device.minor => {
                    // A crash during a snapshot can leave it frozen; thawing a thawed
                    // filesystem fails harmlessly.
                    if mounts::thaw(at).is_ok() {
                        report.push(format!("devicemapper: thawed {}", at.display()));
                    }
                }
                Some((ma, mi)) => report.push(format!(
                    "devicemapper: volume {} not re-mounted: {} is the mount point of {ma}:{mi}",
                    rec.name,
                    at.display()
                )),
                None => {
                    mounts::mount(&dev.path, at)?;
                    report.push(format!(
                        "devicemapper: re-mounted volume {} at {}",
                        rec.name,
                        at.display()
                    ));
                }
            }
        }
    }

    for dev in d
        .pool
        .list_active()
        .map_err(Error::dm("list active thin devices"))?
    {
        if !volume_devices.contains(&dev.name) {
            // Name the object: reports speak of the user's names, not only of devices.
            let snapshot = records.iter().find_map(|r| {
                r.snapshots
                    .values()
                    .find(|s| s.dev_id == Some(dev.id.get()))
                    .map(|s| format!(", snapshot {} of volume {}", s.name, r.name))
            });
            match d.pool.deactivate(&dev.name) {
                Ok(()) => report.push(format!(
                    "devicemapper: deactivated {} (thin id {}{}), not a volume",
                    dev.name,
                    dev.id,
                    snapshot.unwrap_or_default()
                )),
                Err(e) => report.push(format!(
                    "devicemapper: left {} (thin id {}) active: {e}",
                    dev.name, dev.id
                )),
            }
        }
    }

    let in_pool = {
        let _one = d.metadata.lock().unwrap_or_else(|e| e.into_inner());
        meta::with_metadata(&d.pool, &d.opts.metadata_device, meta::device_ids)?
    };
    for raw in in_pool {
        let Ok(id) = convoy_thinpool::ThinId::new(raw) else {
            continue;
        };
        if !d.ids().is_used(id) {
            d.destroy_id(id, &format!("orphan thin id {id}"))?;
            report.push(format!(
                "devicemapper: deleted orphan thin id {id} (no record names it)"
            ));
        }
    }
    Ok(report)
}

/// Step 0: renames this pool's active thin devices that do not have convoy's name for their
/// thin id (an older convoy named them after the volume or snapshot). Devices of other pools
/// and non-thin devices are never listed, so never touched. A rename that fails is reported
/// and the device left as it is (activation then answers why).
fn migrate_names(d: &DmDriver) -> Result<Vec<String>> {
    let mut report = Vec::new();
    for dev in d
        .pool
        .list_active()
        .map_err(Error::dm("list active thin devices"))?
    {
        let name = d.device_name(dev.id);
        if dev.name == name || dev.name == d.fill_name(dev.id) {
            continue;
        }
        match d.pool.rename(&dev.name, &name) {
            Ok(_) => report.push(format!(
                "devicemapper: renamed {} (thin id {}) to {name}",
                dev.name, dev.id
            )),
            Err(e) => report.push(format!(
                "devicemapper: could not rename {} (thin id {}) to {name}: {e}",
                dev.name, dev.id
            )),
        }
    }
    Ok(report)
}
