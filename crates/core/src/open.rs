//! Opening a [`VolumeManager`]: the root lock, `convoy.cfg`, the drivers (a driver that
//! cannot start comes up degraded unless it is the only one), loading and settling the
//! records, and each driver's reconciliation.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::path::Path;
use std::sync::{Arc, Mutex};

use nix::fcntl::{Flock, FlockArg};

use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::manager::{Inner, VolumeManager};
use crate::mount_refs::MountRefs;
use crate::records::{ObjectState, RecordStore, VolumeRecord};
use crate::saved_config::{
    original_saved_config, replace_original_config, save_config, saved_config, SavedConfig,
    CONFIG_FILE,
};
use crate::state::State;
use crate::types::ManagerConfig;
use crate::vfs::{VfsDriver, VFS};

fn lock_root(root: &Path) -> Result<Flock<File>> {
    fs::create_dir_all(root).map_err(|e| Error::io("create root directory", root, e))?;
    // Records, configuration and the lock are the daemon's alone (other users reach volumes
    // through their mount points, never through the root's listing).
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io("restrict the root directory to its owner", root, e))?;
    }
    let path = root.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("open", &path, e))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        Error::busy(
            &root.display().to_string(),
            format!("another convoy manager holds {} ({errno})", path.display()),
        )
    })
}

/// How the setup was settled.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Settled {
    /// Read from convoy's `convoy.cfg`.
    Saved,
    /// Given, to be written to `convoy.cfg` once the drivers have started (a setup that cannot
    /// start is never saved, so the next start is not held to it).
    Given,
    /// Read from the original Convoy's `convoy.cfg` (another format), read, not written:
    /// [`replace_original_config`] replaces it once the drivers have adopted its volumes.
    Original,
}

/// Reads `convoy.cfg` ([`crate::saved_config`]) when the config names no drivers; otherwise
/// the given setup is to be saved once it has started (the original's file is looked for all
/// the same: its volumes are adopted either way).
fn settle_config(config: ManagerConfig) -> Result<(ManagerConfig, Settled)> {
    if !config.drivers.is_empty() {
        return Ok(match original_saved_config(&config.root)? {
            Some(_) => (config, Settled::Original),
            None => (config, Settled::Given),
        });
    }
    match saved_config(&config.root)? {
        Some(SavedConfig::Original(original)) => Ok((
            ManagerConfig {
                root: config.root,
                ..original
            },
            Settled::Original,
        )),
        Some(SavedConfig::Convoy(saved)) => Ok((saved, Settled::Saved)),
        None => Err(Error::invalid(
            "manager config",
            format!(
                "no drivers given and no {} from an earlier run",
                config.root.join(CONFIG_FILE).display()
            ),
        )),
    }
}

fn make_driver(name: &str, config: &ManagerConfig) -> Result<Arc<dyn Driver>> {
    match name {
        VFS => Ok(Arc::new(VfsDriver::new(&config.driver_opts)?)),
        crate::dm::DEVICEMAPPER => Ok(Arc::new(crate::dm::DmDriver::new(
            &config.root,
            &config.driver_opts,
        )?)),
        other => Err(Error::invalid(
            "driver",
            format!("{other:?} is not a driver (devicemapper, vfs)"),
        )),
    }
}

/// Start-up settling of one driver's records: finishes deletes, undoes half-made objects.
fn settle_records(
    driver: &dyn Driver,
    store: &RecordStore,
    records: Vec<VolumeRecord>,
    report: &mut Vec<String>,
) -> Result<Vec<VolumeRecord>> {
    let mut kept = Vec::new();
    for mut rec in records {
        match rec.state {
            ObjectState::Creating | ObjectState::Deleting => {
                driver.remove_volume(&rec, false)?;
                store.remove(&rec.name)?;
                driver.release(&rec);
                report.push(format!(
                    "{}: removed volume {} left {} by an interrupted operation",
                    driver.name(),
                    rec.name,
                    if rec.state == ObjectState::Creating {
                        "half-made"
                    } else {
                        "half-deleted"
                    }
                ));
                continue;
            }
            ObjectState::Ready => {}
        }
        crate::lifecycle::settle_pending(driver, store, &mut rec, report)?;
        let unsettled: Vec<String> = rec
            .snapshots
            .values()
            .filter(|s| s.state != ObjectState::Ready)
            .map(|s| s.name.clone())
            .collect();
        for name in unsettled {
            if let Some(snap) = rec.snapshots.get(&name).cloned() {
                driver.remove_snapshot(&rec, &snap)?;
                rec.snapshots.remove(&name);
                store.save(&rec)?;
                driver.release_snapshot(&snap);
                report.push(format!(
                    "{}: removed snapshot {} of volume {} left by an interrupted operation",
                    driver.name(),
                    name,
                    rec.name
                ));
            }
        }
        kept.push(rec);
    }
    Ok(kept)
}

/// Loads one driver's records, settles them and reconciles the driver with them.
fn start_driver(
    driver: &dyn Driver,
    store: &RecordStore,
    report: &mut Vec<String>,
) -> Result<Vec<VolumeRecord>> {
    report.extend(driver.adopt_original(store)?);
    let records = store.load_all()?;
    let mut known = records.clone();
    known.extend(store.load_released()?);
    driver.load(&known)?;
    let kept = settle_records(driver, store, records, report)?;
    report.extend(driver.reconcile(&kept)?);
    Ok(kept)
}

/// Refuses a driver option that no driver in `drivers` takes (`dm.*` without devicemapper,
/// `vfs.*` without vfs, or no driver prefix), before anything is saved.
fn check_driver_opts(config: &ManagerConfig) -> Result<()> {
    for key in config.driver_opts.keys() {
        let owner = match key.split_once('.') {
            Some(("dm", _)) => crate::dm::DEVICEMAPPER,
            Some(("vfs", _)) => VFS,
            _ => {
                return Err(Error::invalid(
                    format!("driver option {key}"),
                    "driver options are dm.* (devicemapper driver) or vfs.* (vfs driver), \
                     given as --driver-opts KEY=VALUE",
                ))
            }
        };
        if !config.drivers.iter().any(|d| d == owner) {
            return Err(Error::invalid(
                format!("driver option {key}"),
                format!(
                    "it belongs to the {owner} driver, which is not among --drivers ({}); add \
                     --drivers {owner} or drop the option",
                    config.drivers.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

pub(crate) fn open_blocking(config: ManagerConfig) -> Result<VolumeManager> {
    let root_lock = lock_root(&config.root)?;
    if !config.drivers.is_empty() {
        check_driver_opts(&config)?;
    }
    let (config, settled) = settle_config(config)?;
    let mut drivers = BTreeMap::new();
    let mut stores = BTreeMap::new();
    let mut degraded = BTreeMap::new();
    let mut order = Vec::new();
    let mut first_error = None;
    for name in &config.drivers {
        if drivers.contains_key(name) || degraded.contains_key(name) {
            continue;
        }
        stores.insert(name.clone(), RecordStore::new(&config.root, name));
        order.push(name.clone());
        // A driver that cannot start (a failed pool) must not take the others down: it
        // comes up degraded, unless it is the only one.
        match make_driver(name, &config) {
            Ok(driver) => {
                drivers.insert(name.clone(), driver);
            }
            Err(e) if e.kind() == crate::error::ErrorKind::InvalidArgument => return Err(e),
            Err(e) => {
                degraded.insert(name.clone(), e.to_string());
                first_error.get_or_insert(e);
            }
        }
    }
    if drivers.is_empty() {
        if let Some(e) = first_error {
            return Err(e);
        }
    }
    let mut state = State::default();
    let mut report = Vec::new();
    for (name, store) in &stores {
        let started = match drivers.get(name) {
            Some(driver) => start_driver(driver.as_ref(), store, &mut report),
            None => Err(Error::Internal(degraded[name].clone())),
        };
        let kept = match started {
            Ok(kept) => kept,
            Err(e) => {
                // Loading or reconciling failed (a pool in `Fail`): degraded too.
                if drivers.remove(name).is_some() {
                    degraded.insert(name.clone(), e.to_string());
                }
                if drivers.is_empty() {
                    return Err(e);
                }
                let records = store.load_all()?;
                report.push(format!(
                    "{name}: degraded, its {} volume(s) unavailable until it starts: {}",
                    records.len(),
                    degraded[name]
                ));
                records
            }
        };
        for rec in kept {
            if let Some(other) = state.volumes.get(&rec.name) {
                return Err(Error::CorruptRecord {
                    path: store.dir().join(format!("{}.json", rec.name)),
                    reason: format!("volume name also used by driver {}", other.driver),
                });
            }
            state.volumes.insert(rec.name.clone(), rec);
        }
    }
    crate::browse::clean_at_start(&config.root, &mut report)?;
    let mut mount_refs = MountRefs::load(&config.root)?;
    for volume in mount_refs.retain_volumes(|v| state.volumes.contains_key(v))? {
        report.push(format!(
            "dropped the Docker mount references of volume {volume}, which no longer exists"
        ));
    }
    match settled {
        Settled::Original if degraded.is_empty() => replace_original_config(&config)?,
        Settled::Given => save_config(&config)?,
        _ => {}
    }
    Ok(VolumeManager {
        inner: Arc::new(Inner {
            root: config.root,
            order,
            drivers,
            stores,
            degraded,
            state: Mutex::new(state),
            browses: Default::default(),
            fills: Default::default(),
            mount_refs: Mutex::new(mount_refs),
            reconcile_report: report,
            _root_lock: root_lock,
        }),
    })
}
