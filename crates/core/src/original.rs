//! The original Convoy's (0.5.x) state under a root, read so that convoy can take a host over in
//! place (`docs/migrating.md`): stop the original daemon, start convoy with the same flags on the
//! same root and pool, and its volumes and snapshots are convoy's, data untouched.
//!
//! What the original left (format facts from its source):
//!
//! * `<root>/convoy.cfg`: the daemon's saved flags, `{Root, DriverList, DefaultDriver, ...}`.
//!   convoy's own `convoy.cfg` has other keys; a file with `DriverList` is the original's.
//!   `crate::saved_config` reads the file (and writes convoy's); this module parses the
//!   original's.
//! * `<root>/devicemapper/devicemapper.cfg`: the pool, `{DataDevice, MetadataDevice,
//!   ThinpoolDevice: "/dev/mapper/<pool>", ThinpoolBlockSize (sectors), DefaultVolumeSize,
//!   LastDevID, ...}`.
//! * `<root>/devicemapper/devicemapper_volume_<name>.json`: a volume, `{Name, DevID, Size,
//!   Base, MountPoint, CreatedTime, Snapshots: {name: {Name, CreatedTime, DevID, Activated}}}`;
//!   its device is `/dev/mapper/<name>` (convoy renames it to its own scheme at start-up).
//!
//! Adoption writes convoy's records first, then moves each of the original's files into
//! `<root>/convoy-0.5-adopted/` (same relative path): a crash in between repeats the adoption,
//! which finds convoy's records already there and equal. Anything that cannot be adopted safely
//! (another pool, a thin id no record names, an image-based volume, a name convoy refuses, a
//! driver convoy lacks) is refused before anything is written.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::durable::{remove_durably, write_atomic};
use crate::error::{Error, Result};
use crate::records::{ObjectState, SnapshotRecord, VolumeRecord};
use crate::types::ManagerConfig;

/// Where the original's files go once adopted (kept for the user to roll back or compare).
pub(crate) const ADOPTED_DIR: &str = "convoy-0.5-adopted";
/// The original devicemapper driver's pool file, in `<root>/devicemapper/`.
pub(crate) const DM_CONFIG_FILE: &str = "devicemapper.cfg";
/// Prefix and suffix of the original devicemapper driver's volume files.
const DM_VOLUME_PREFIX: &str = "devicemapper_volume_";
const DM_IMAGE_PREFIX: &str = "devicemapper_image_";
const CFG_SUFFIX: &str = ".json";

/// `<root>/convoy.cfg` as the original daemon saved it (only what convoy uses).
#[derive(Deserialize)]
struct DaemonConfig {
    #[serde(rename = "DriverList")]
    driver_list: Vec<String>,
    #[serde(rename = "DefaultDriver", default)]
    default_driver: String,
}

/// `<root>/devicemapper/devicemapper.cfg`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub(crate) struct DmConfig {
    /// The pool's data device.
    #[serde(rename = "DataDevice")]
    pub data_device: String,
    /// The pool's metadata device.
    #[serde(rename = "MetadataDevice")]
    pub metadata_device: String,
    /// `/dev/mapper/<pool name>`.
    #[serde(rename = "ThinpoolDevice")]
    pub thinpool_device: String,
    /// Pool block size in 512-byte sectors.
    #[serde(rename = "ThinpoolBlockSize")]
    pub thinpool_block_size: u64,
    /// Default volume size in bytes.
    #[serde(rename = "DefaultVolumeSize", default)]
    pub default_volume_size: u64,
}

impl DmConfig {
    /// The pool's device-mapper name.
    pub fn pool_name(&self) -> &str {
        self.thinpool_device
            .rsplit('/')
            .next()
            .unwrap_or(&self.thinpool_device)
    }
}

/// A snapshot in a volume file.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Snapshot {
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "CreatedTime", default)]
    created_time: String,
    #[serde(rename = "DevID")]
    dev_id: i64,
}

/// `devicemapper_volume_<name>.json`.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Volume {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "DevID")]
    dev_id: i64,
    #[serde(rename = "Size")]
    size: i64,
    #[serde(rename = "Base", default)]
    base: String,
    #[serde(rename = "MountPoint", default)]
    mount_point: String,
    #[serde(rename = "CreatedTime", default)]
    created_time: String,
    #[serde(rename = "Snapshots", default)]
    snapshots: Option<BTreeMap<String, Snapshot>>,
}

fn refuse(path: &Path, reason: impl Into<String>) -> Error {
    Error::invalid(
        format!("the original Convoy's record {}", path.display()),
        format!(
            "{}; convoy adopts the original's volumes in place only when it can do so safely \
             (docs/migrating.md); nothing was changed",
            reason.into()
        ),
    )
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let bytes = fs::read(path).map_err(|e| Error::io("read", path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| refuse(path, format!("it cannot be parsed: {e}")))
}

/// Whether `bytes` (a `convoy.cfg`) is the original daemon's.
pub(crate) fn is_original_config(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v.as_object().map(|o| o.contains_key("DriverList")))
        .unwrap_or(false)
}

/// The original daemon's saved setup (`bytes`, read from `path`, `<root>/convoy.cfg`, by
/// [`crate::saved_config`]), and for devicemapper its `devicemapper.cfg`, as convoy's
/// [`ManagerConfig`]: its drivers (the default first) and the `dm.*` options of its pool.
///
/// # Errors
/// [`Error::InvalidArgument`] for a driver convoy does not have, an unreadable or missing
/// `devicemapper.cfg`; [`Error::Io`].
pub(crate) fn config_of_original(root: &Path, path: &Path, bytes: &[u8]) -> Result<ManagerConfig> {
    let saved: DaemonConfig = serde_json::from_slice(bytes)
        .map_err(|e| refuse(path, format!("it cannot be parsed: {e}")))?;
    let mut drivers = Vec::new();
    if !saved.default_driver.is_empty() {
        drivers.push(saved.default_driver.clone());
    }
    for d in saved.driver_list {
        if !drivers.contains(&d) {
            drivers.push(d);
        }
    }
    let mut driver_opts = BTreeMap::new();
    for d in &drivers {
        match d.as_str() {
            crate::dm::DEVICEMAPPER => {
                let rel = Path::new(crate::dm::DEVICEMAPPER).join(DM_CONFIG_FILE);
                let mut cfg_path = root.join(&rel);
                if !cfg_path.exists() {
                    // Adopted already, and stopped before convoy's convoy.cfg was written.
                    cfg_path = root.join(ADOPTED_DIR).join(&rel);
                }
                if !cfg_path.exists() {
                    return Err(refuse(
                        path,
                        format!(
                            "it names the devicemapper driver, but {} is missing",
                            root.join(&rel).display()
                        ),
                    ));
                }
                let cfg: DmConfig = read_json(&cfg_path)?;
                driver_opts.extend(dm_options(&cfg));
            }
            other => {
                return Err(refuse(
                    path,
                    format!(
                        "it names the {other} driver; convoy adopts the original's \
                         devicemapper volumes only (move others through backups)"
                    ),
                ))
            }
        }
    }
    if drivers.is_empty() {
        return Err(refuse(path, "it names no driver"));
    }
    Ok(ManagerConfig {
        root: root.to_path_buf(),
        drivers,
        driver_opts,
    })
}

/// The `dm.*` options that name the original's pool.
pub(crate) fn dm_options(cfg: &DmConfig) -> BTreeMap<String, String> {
    let mut opts = BTreeMap::from([
        ("dm.datadev".to_owned(), cfg.data_device.clone()),
        ("dm.metadatadev".to_owned(), cfg.metadata_device.clone()),
        ("dm.thinpoolname".to_owned(), cfg.pool_name().to_owned()),
        (
            "dm.thinpoolblocksize".to_owned(),
            cfg.thinpool_block_size.to_string(),
        ),
    ]);
    if cfg.default_volume_size > 0 {
        opts.insert(
            "dm.defaultvolumesize".to_owned(),
            cfg.default_volume_size.to_string(),
        );
    }
    opts
}

/// Copies `<root>/<rel>` into `<root>/convoy-0.5-adopted/<rel>` (once: an existing copy is
/// kept, it is the first one).
pub(crate) fn preserve(root: &Path, rel: &Path) -> Result<()> {
    let from = root.join(rel);
    let to = root.join(ADOPTED_DIR).join(rel);
    if to.exists() {
        return Ok(());
    }
    let bytes = fs::read(&from).map_err(|e| Error::io("read", &from, e))?;
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    }
    write_atomic(&to, &bytes)
}

/// Moves `<root>/<rel>` into the adopted directory.
pub(crate) fn retire(root: &Path, rel: &Path) -> Result<()> {
    preserve(root, rel)?;
    remove_durably(&root.join(rel))
}

/// What the original devicemapper driver left in `dir` (`<root>/devicemapper`).
#[derive(Debug)]
pub(crate) struct DmState {
    /// `devicemapper.cfg`.
    pub config: DmConfig,
    /// Each volume file and what it holds.
    pub volumes: Vec<(PathBuf, Volume)>,
}

/// Reads the original devicemapper driver's files in `dir`; `None` when there are none.
///
/// # Errors
/// Refusals: an image file, a volume file without `devicemapper.cfg`, unparsable files.
pub(crate) fn read_dm_state(dir: &Path) -> Result<Option<DmState>> {
    let cfg_path = dir.join(DM_CONFIG_FILE);
    let mut volume_files = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("read", dir, e))?;
            let file = entry.file_name().to_string_lossy().into_owned();
            if file.starts_with(DM_IMAGE_PREFIX) {
                return Err(refuse(
                    &entry.path(),
                    "volumes based on the original's images have no counterpart in convoy",
                ));
            }
            if file.starts_with(DM_VOLUME_PREFIX) && file.ends_with(CFG_SUFFIX) {
                volume_files.push(entry.path());
            }
        }
    }
    if !cfg_path.exists() {
        return match volume_files.first() {
            None => Ok(None),
            Some(path) => Err(refuse(
                path,
                format!("the original's pool file {} is missing", cfg_path.display()),
            )),
        };
    }
    volume_files.sort();
    let config: DmConfig = read_json(&cfg_path)?;
    let mut volumes = Vec::new();
    for path in volume_files {
        let v: Volume = read_json(&path)?;
        volumes.push((path, v));
    }
    Ok(Some(DmState { config, volumes }))
}

/// Refuses an original pool other than the one convoy was started on.
pub(crate) fn check_same_pool(
    cfg_path: &Path,
    cfg: &DmConfig,
    pool_name: &str,
    data_device: &Path,
    metadata_device: &Path,
    block_sectors: u64,
) -> Result<()> {
    let same_device = |a: &str, b: &Path| {
        Path::new(a) == b
            || matches!(
                (fs::canonicalize(a), fs::canonicalize(b)),
                (Ok(x), Ok(y)) if x == y
            )
    };
    let mut differences = Vec::new();
    if cfg.pool_name() != pool_name {
        differences.push(format!(
            "pool {} (dm.thinpoolname={})",
            cfg.pool_name(),
            pool_name
        ));
    }
    if !same_device(&cfg.data_device, data_device) {
        differences.push(format!(
            "data device {} (dm.datadev={})",
            cfg.data_device,
            data_device.display()
        ));
    }
    if !same_device(&cfg.metadata_device, metadata_device) {
        differences.push(format!(
            "metadata device {} (dm.metadatadev={})",
            cfg.metadata_device,
            metadata_device.display()
        ));
    }
    if cfg.thinpool_block_size != block_sectors {
        differences.push(format!(
            "block size {} sectors (dm.thinpoolblocksize={block_sectors})",
            cfg.thinpool_block_size
        ));
    }
    if differences.is_empty() {
        return Ok(());
    }
    Err(refuse(
        cfg_path,
        format!(
            "the original's pool differs from the one convoy was started with: its {}; start \
             convoy with the original daemon's flags (or none, to reuse its saved setup)",
            differences.join(", its ")
        ),
    ))
}

fn thin_id(path: &Path, what: &str, raw: i64) -> Result<u32> {
    u32::try_from(raw)
        .ok()
        .filter(|id| *id > 0 && *id < (1 << 24))
        .ok_or_else(|| refuse(path, format!("{what} has thin id {raw}, not a valid one")))
}

/// convoy's records for the original's volumes, checked: valid unique names (volumes and
/// snapshots share one namespace), unique thin ids that all exist in the pool (`pool_ids`),
/// sizes in whole pool blocks, no image-based volume, and no thin id in the pool that no
/// record names (`known_ids`: ids convoy's own records already hold).
pub(crate) fn convert(
    state: &DmState,
    block_bytes: u64,
    pool_ids: &BTreeSet<u64>,
    known_ids: &BTreeSet<u64>,
) -> Result<Vec<VolumeRecord>> {
    let mut names = BTreeSet::new();
    let mut ids = BTreeMap::new();
    let mut out = Vec::new();
    for (path, v) in &state.volumes {
        let file = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let stem = file
            .strip_prefix(DM_VOLUME_PREFIX)
            .and_then(|s| s.strip_suffix(CFG_SUFFIX))
            .unwrap_or_default();
        if v.name != stem {
            return Err(refuse(path, format!("it names volume {:?}", v.name)));
        }
        crate::names::validate_name(&v.name).map_err(|e| refuse(path, e.to_string()))?;
        if !v.base.is_empty() {
            return Err(refuse(
                path,
                format!(
                    "volume {} is based on the original's image {}, which convoy does not have",
                    v.name, v.base
                ),
            ));
        }
        let size = u64::try_from(v.size).unwrap_or(0);
        if size == 0 || size % block_bytes != 0 {
            return Err(refuse(
                path,
                format!(
                    "volume {} has size {}, not a whole number of the pool's {block_bytes}-byte blocks",
                    v.name, v.size
                ),
            ));
        }
        let mut claim = |name: &str, raw_id: i64, what: String| -> Result<u32> {
            crate::names::validate_name(name).map_err(|e| refuse(path, e.to_string()))?;
            if !names.insert(name.to_owned()) {
                return Err(refuse(
                    path,
                    format!(
                        "{what}: the name {name} is used twice (volumes and snapshots share names)"
                    ),
                ));
            }
            let id = thin_id(path, &what, raw_id)?;
            if let Some(other) = ids.insert(id, what.clone()) {
                return Err(refuse(
                    path,
                    format!("{what} and {other} share thin id {id}"),
                ));
            }
            if !pool_ids.contains(&u64::from(id)) {
                return Err(refuse(
                    path,
                    format!("{what} has thin id {id}, which the pool does not hold"),
                ));
            }
            Ok(id)
        };
        let dev_id = claim(&v.name, v.dev_id, format!("volume {}", v.name))?;
        let mut snapshots = BTreeMap::new();
        for (key, s) in v.snapshots.iter().flatten() {
            let name = if s.name.is_empty() { key } else { &s.name };
            if name != key {
                return Err(refuse(
                    path,
                    format!("snapshot {key} of volume {} names itself {name}", v.name),
                ));
            }
            let id = claim(
                name,
                s.dev_id,
                format!("snapshot {name} of volume {}", v.name),
            )?;
            snapshots.insert(
                name.clone(),
                SnapshotRecord {
                    name: name.clone(),
                    uuid: uuid::Uuid::new_v4().to_string(),
                    created_time: created(&s.created_time),
                    state: ObjectState::Ready,
                    size,
                    dev_id: Some(id),
                    path: None,
                },
            );
        }
        out.push(VolumeRecord {
            name: v.name.clone(),
            uuid: uuid::Uuid::new_v4().to_string(),
            driver: crate::dm::DEVICEMAPPER.to_owned(),
            created_time: created(&v.created_time),
            state: ObjectState::Ready,
            size,
            requested_size: None,
            mount_point: (!v.mount_point.is_empty()).then(|| PathBuf::from(&v.mount_point)),
            dev_id: Some(dev_id),
            path: None,
            // The original made every filesystem with `mkfs -t ext4`.
            filesystem: Some("ext4".to_owned()),
            restored_from: None,
            snapshots,
            last_backups: BTreeMap::new(),
            pending: None,
            instant: None,
        });
    }
    let strays: Vec<String> = pool_ids
        .iter()
        .filter(|id| !ids.contains_key(&(**id as u32)) && !known_ids.contains(id))
        .map(u64::to_string)
        .collect();
    if !strays.is_empty() {
        let cfg = Path::new(crate::dm::DEVICEMAPPER).join(DM_CONFIG_FILE);
        return Err(refuse(
            &cfg,
            format!(
                "the pool holds thin id(s) {} that no record of the original names (an \
                 interrupted operation of the original, or a device made by hand); convoy would \
                 have to delete them. Look at them first; if they are garbage, delete each with \
                 `dmsetup message {} 0 \"delete ID\"`, then start convoy again",
                strays.join(", "),
                state.config.pool_name()
            ),
        ));
    }
    Ok(out)
}

/// The original's time stamps are convoy's form already (`Tue Dec 01 22:05:16 +0000 2026`);
/// a missing one becomes now.
fn created(original: &str) -> String {
    if original.is_empty() {
        crate::names::now_ruby_date()
    } else {
        original.to_owned()
    }
}

#[cfg(test)]
mod tests;
