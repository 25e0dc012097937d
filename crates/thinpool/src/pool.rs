//! The pool itself: create, open (reuse an active pool or re-activate existing metadata), tear
//! down, status, transaction id.

use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;

use devicemapper::{
    DevId, Device, DmOptions, TargetTable, ThinPoolDevTargetTable, ThinPoolTargetParams, DM,
};
use nix::errno::Errno;

use crate::devnode::{block_device_number, device_size_bytes, ensure_node, remove_node};
use crate::dmio::{self, raw_table_text};
use crate::error::{errno_of, Error, Result};
use crate::names::{dm_name, mapper_path, validate_name, DEFAULT_POOL_NAME};
use crate::status::{parse_pool_status, PoolState, PoolStatus};
use crate::superblock::{self, MetadataContent};
use crate::units::{BlockSize, DataBlocks, Sectors};

/// Whether newly provisioned pool blocks are zeroed before use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BlockZeroing {
    /// Zero each block when it is first provisioned (the kernel's default; convoy's default).
    /// A partial write into a new block never exposes what a deleted device left there.
    #[default]
    Zero,
    /// Skip zeroing (`skip_block_zeroing`): faster first writes, but the unwritten part of a newly
    /// provisioned block shows whatever a deleted device left on the data device. Only for pools
    /// whose users all trust each other, or whose filesystems never read unwritten blocks.
    Skip,
}

/// How to find or make a pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    /// Device-mapper name of the pool (default `convoy-pool`).
    pub name: String,
    /// Block device holding the pool's data.
    pub data_device: PathBuf,
    /// Block device holding the pool's metadata.
    pub metadata_device: PathBuf,
    /// Data block size (default 4096 sectors = 2 MiB).
    pub block_size: BlockSize,
    /// Block zeroing (default on).
    pub zeroing: BlockZeroing,
    /// Let [`ThinPool::create`] overwrite a metadata device that holds something else (or an
    /// old pool). Never used by [`ThinPool::open`].
    pub force: bool,
    /// The pool's low-water mark as a percent of its data blocks: when fewer blocks than that
    /// are free, the kernel raises a device-mapper event once ([`PoolEvents`]). 0: none.
    pub low_water_free_percent: u8,
}

impl PoolConfig {
    /// A config with the defaults: name `convoy-pool`, 2 MiB blocks, zeroing on, no force.
    pub fn new(data_device: impl Into<PathBuf>, metadata_device: impl Into<PathBuf>) -> Self {
        PoolConfig {
            name: DEFAULT_POOL_NAME.to_owned(),
            data_device: data_device.into(),
            metadata_device: metadata_device.into(),
            block_size: BlockSize::DEFAULT,
            zeroing: BlockZeroing::Zero,
            force: false,
            low_water_free_percent: 0,
        }
    }

    /// Set the pool name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Set the block size.
    pub fn with_block_size(mut self, block_size: BlockSize) -> Self {
        self.block_size = block_size;
        self
    }

    /// Set block zeroing.
    pub fn with_zeroing(mut self, zeroing: BlockZeroing) -> Self {
        self.zeroing = zeroing;
        self
    }

    /// Raise a device-mapper event when fewer than `percent` % of the data blocks are free
    /// (the table's low-water mark; 0 for none, values over 100 count as 100).
    pub fn with_low_water_free_percent(mut self, percent: u8) -> Self {
        self.low_water_free_percent = percent.min(100);
        self
    }

    /// Allow [`ThinPool::create`] to overwrite the metadata device.
    pub fn with_force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }
}

/// What [`ThinPool::open`] or [`ThinPool::setup`] found and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupAction {
    /// A new pool was created on zeroed metadata.
    Created,
    /// The pool was inactive; its existing metadata was activated (nothing wiped).
    Reactivated,
    /// The pool was already active with a matching table and is reused.
    AlreadyActive,
}

/// An active dm-thin pool. Methods take `&self` and the type is `Send + Sync`, so a volume
/// manager can share it (`Arc<ThinPool>`); sequences of pool messages that must not interleave
/// (snapshot, delete, activate, deactivate) are serialized inside.
///
/// Dropping a `ThinPool` leaves the kernel's pool active; [`ThinPool::teardown`] removes it.
pub struct ThinPool {
    pub(crate) dm: DM,
    pub(crate) config: PoolConfig,
    pub(crate) device: Device,
    pub(crate) data_blocks: DataBlocks,
    /// Serializes multi-step operations (suspend / message / resume, scan / remove).
    pub(crate) ops: Mutex<()>,
}

impl fmt::Debug for ThinPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThinPool")
            .field("name", &self.config.name)
            .field("device", &self.device.to_string())
            .field("data_device", &self.config.data_device)
            .field("metadata_device", &self.config.metadata_device)
            .field("block_size", &self.config.block_size)
            .field("data_blocks", &self.data_blocks)
            .finish()
    }
}

/// The data and metadata devices of a config, checked.
struct Resolved {
    meta: Device,
    data: Device,
    data_blocks: DataBlocks,
}

impl ThinPool {
    /// Create a new pool. The metadata device must be zeroed in its first 4 KiB (or `force` set,
    /// in which case its superblock is zeroed first and the kernel formats fresh metadata).
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] when a device-mapper device of that name exists;
    /// [`Error::MetadataInUse`] when the metadata holds a pool (use [`ThinPool::open`]);
    /// [`Error::ForeignMetadata`] when it holds anything else; [`Error::NotABlockDevice`],
    /// [`Error::InvalidSize`], [`Error::InvalidName`], [`Error::Busy`] (device claimed by
    /// another dm device), [`Error::DeviceMapperUnavailable`].
    pub fn create(config: PoolConfig) -> Result<ThinPool> {
        let resolved = resolve(&config)?;
        let dm = open_dm()?;
        if dmio::exists(&dm, &config.name)? {
            return Err(Error::AlreadyExists {
                kind: "device-mapper device",
                name: config.name.clone(),
            });
        }
        match superblock::inspect(&config.metadata_device)? {
            MetadataContent::Zeroed => {}
            _ if config.force => superblock::wipe(&config.metadata_device)?,
            MetadataContent::ThinPool(sb) => {
                return Err(Error::MetadataInUse {
                    path: config.metadata_device.clone(),
                    transaction_id: sb.transaction_id,
                })
            }
            MetadataContent::Foreign => {
                return Err(Error::ForeignMetadata {
                    path: config.metadata_device.clone(),
                })
            }
        }
        ThinPool::start(dm, config, &resolved)
    }

    /// Open an existing pool: reuse it if it is active (after checking that its table uses the
    /// same devices and block size; the no-space policy and zeroing are brought in line with the
    /// config), or activate its existing metadata. Metadata is never wiped here.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the pool is inactive and the metadata device is zeroed (no pool
    /// yet: use [`ThinPool::create`] or [`ThinPool::setup`]); [`Error::TableMismatch`];
    /// [`Error::BlockSizeMismatch`]; [`Error::ForeignMetadata`]; and those of `create`.
    pub fn open(config: PoolConfig) -> Result<(ThinPool, SetupAction)> {
        let resolved = resolve(&config)?;
        let dm = open_dm()?;
        if dmio::exists(&dm, &config.name)? {
            let pool = ThinPool::reuse(dm, config, &resolved)?;
            return Ok((pool, SetupAction::AlreadyActive));
        }
        match superblock::inspect(&config.metadata_device)? {
            MetadataContent::ThinPool(sb) => {
                if sb.data_block_size != config.block_size.sectors() {
                    return Err(Error::BlockSizeMismatch {
                        path: config.metadata_device.clone(),
                        requested: *config.block_size.sectors(),
                        on_disk: *sb.data_block_size,
                    });
                }
                let pool = ThinPool::start(dm, config, &resolved)?;
                Ok((pool, SetupAction::Reactivated))
            }
            MetadataContent::Zeroed => Err(Error::NotFound {
                kind: "thin-pool metadata on",
                name: config.metadata_device.display().to_string(),
            }),
            MetadataContent::Foreign => Err(Error::ForeignMetadata {
                path: config.metadata_device.clone(),
            }),
        }
    }

    /// Open the pool if it exists (active, or in its metadata), else create it on zeroed
    /// metadata. This is what a daemon calls at start-up. `force` is honoured only for foreign
    /// metadata (existing pool metadata is always re-activated, never wiped).
    ///
    /// # Errors
    /// Those of [`ThinPool::open`] and [`ThinPool::create`].
    pub fn setup(config: PoolConfig) -> Result<(ThinPool, SetupAction)> {
        let metadata_is_new = !dmio::exists(&open_dm()?, &config.name)?
            && !matches!(
                superblock::inspect(&config.metadata_device)?,
                MetadataContent::ThinPool(_)
            );
        if metadata_is_new {
            ThinPool::create(config).map(|p| (p, SetupAction::Created))
        } else {
            ThinPool::open(config)
        }
    }

    /// Device-mapper name of the pool.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The config the pool was opened with.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// Data block size.
    pub fn block_size(&self) -> BlockSize {
        self.config.block_size
    }

    /// Number of data blocks (the data device's size in whole blocks).
    pub fn data_blocks(&self) -> DataBlocks {
        self.data_blocks
    }

    /// Size of the pool's data area in sectors (whole blocks).
    pub fn data_size(&self) -> Sectors {
        self.config.block_size.sectors_of(self.data_blocks)
    }

    /// The pool device's `major:minor`.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Stable path of the pool device: `/dev/mapper/<name>`.
    pub fn path(&self) -> PathBuf {
        mapper_path(&self.config.name)
    }

    /// Current status as typed values.
    ///
    /// # Errors
    /// [`Error::Failed`] when the kernel reports the pool failed; [`Error::StatusParse`];
    /// [`Error::NotFound`] if the pool vanished.
    pub fn status(&self) -> Result<PoolStatus> {
        let line = dmio::status_line(&self.dm, self.name())?;
        match parse_pool_status(&line) {
            Ok(PoolState::Working(s)) => Ok(s),
            Ok(PoolState::Failed) => Err(Error::Failed {
                device: format!("thin pool {}", self.name()),
            }),
            Err(reason) => Err(Error::StatusParse {
                device: format!("thin pool {}", self.name()),
                line,
                reason,
            }),
        }
    }

    /// Set the pool's transaction id from `old` to `new` (a counter the caller can use to tie
    /// its own records to the metadata's state).
    ///
    /// # Errors
    /// [`Error::TransactionIdMismatch`] when `old` is not the current id.
    pub fn set_transaction_id(&self, old: u64, new: u64) -> Result<()> {
        let msg = format!("set_transaction_id {old} {new}");
        match self.message(&msg) {
            Err(e) if errno_of(&e) == Some(Errno::EINVAL) => {
                let actual = self.status()?.transaction_id;
                if actual != old {
                    Err(Error::TransactionIdMismatch {
                        pool: self.name().to_owned(),
                        given: old,
                        actual,
                    })
                } else {
                    Err(self.message_error(&msg, "transaction id", e))
                }
            }
            Err(e) => Err(self.message_error(&msg, "transaction id", e)),
            Ok(()) => Ok(()),
        }
    }

    /// Deactivate every thin device of the pool and remove the pool device. The metadata and
    /// data stay on their devices; [`ThinPool::open`] re-activates them.
    ///
    /// # Errors
    /// [`Error::Busy`] naming the first thin device that is open (mounted); nothing is torn
    /// down in that case.
    pub fn teardown(self) -> Result<()> {
        let _guard = self.lock();
        let thins = self.scan_active()?;
        for thin in &thins {
            let info = dmio::info(&self.dm, &thin.name)?;
            if info.open_count() > 0 {
                return Err(Error::Busy {
                    device: thin.name.clone(),
                    reason: format!(
                        "thin device of pool {} is open {} time(s) (mounted?); unmount it before \
                         tearing the pool down",
                        self.name(),
                        info.open_count()
                    ),
                });
            }
        }
        for thin in &thins {
            self.remove_thin_device(&thin.name, thin.device)?;
        }
        dmio::remove(&self.dm, self.name())?;
        remove_node(self.name(), self.device)
    }

    /// Create the pool device and load its table (shared by create and re-activation).
    fn start(dm: DM, config: PoolConfig, resolved: &Resolved) -> Result<ThinPool> {
        let table = pool_table(&config, resolved);
        let name = dm_name(&config.name)?;
        let id = DevId::Name(name);
        dm.device_create(name, None, DmOptions::default())
            .map_err(|e| dmio::create_error(&config.name, e))?;
        let loaded = dm
            .table_load(&id, &table.to_raw_table(), DmOptions::default())
            .map_err(|e| load_error(&config, e))
            .and_then(|_| {
                dm.device_suspend(&id, DmOptions::private())
                    .map_err(|e| crate::error::dm_error("resume", &config.name, e))
            });
        let info = match loaded {
            Ok(info) => info,
            Err(e) => {
                // Leave nothing half-made behind.
                let _ = dm.device_remove(&id, DmOptions::default());
                return Err(e);
            }
        };
        let device = info.device();
        ensure_node(&config.name, device)?;
        Ok(ThinPool {
            dm,
            data_blocks: resolved.data_blocks,
            config,
            device,
            ops: Mutex::new(()),
        })
    }

    /// Adopt an active pool after checking its table.
    fn reuse(dm: DM, config: PoolConfig, resolved: &Resolved) -> Result<ThinPool> {
        let raw = dmio::table(&dm, &config.name)?;
        let expected = pool_table(&config, resolved);
        let found =
            ThinPoolDevTargetTable::from_raw_table(&raw).map_err(|_| Error::TableMismatch {
                device: config.name.clone(),
                expected: expected.to_string().trim().to_owned(),
                found: raw_table_text(&raw),
            })?;
        let (want, have) = (&expected.table.params, &found.table.params);
        if want.metadata_dev != have.metadata_dev
            || want.data_dev != have.data_dev
            || want.data_block_size != have.data_block_size
        {
            return Err(Error::TableMismatch {
                device: config.name.clone(),
                expected: expected.to_string().trim().to_owned(),
                found: found.to_string().trim().to_owned(),
            });
        }
        let want_low = low_water(&config, config.block_size.blocks_in(found.table.length));
        if want.feature_args != have.feature_args || want_low != have.low_water_mark {
            // Same devices, other policy (zeroing / no-space / low-water mark): load the
            // wanted features, keeping the active length, and resume.
            let mut table = found.clone();
            table.table.params.feature_args = want.feature_args.clone();
            table.table.params.low_water_mark = want_low;
            let id = DevId::Name(dm_name(&config.name)?);
            dm.table_load(&id, &table.to_raw_table(), DmOptions::default())
                .map_err(|e| load_error(&config, e))?;
            dm.device_suspend(&id, DmOptions::private())
                .map_err(|e| crate::error::dm_error("resume", &config.name, e))?;
        }
        let device = dmio::info(&dm, &config.name)?.device();
        ensure_node(&config.name, device)?;
        let data_blocks = config.block_size.blocks_in(found.table.length);
        Ok(ThinPool {
            dm,
            config,
            device,
            data_blocks,
            ops: Mutex::new(()),
        })
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // A panic while holding the lock leaves no state behind it to protect: recover.
        self.ops.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn open_dm() -> Result<DM> {
    dmio::check_udev_socket(std::path::Path::new(dmio::UDEV_CONTROL))?;
    DM::new().map_err(|e| Error::DeviceMapperUnavailable {
        reason: e.to_string(),
    })
}

fn resolve(config: &PoolConfig) -> Result<Resolved> {
    validate_name(&config.name)?;
    let meta = block_device_number(&config.metadata_device)?;
    let data = block_device_number(&config.data_device)?;
    if meta == data {
        return Err(Error::Busy {
            device: config.data_device.display().to_string(),
            reason: "the same device is given as data and metadata device".to_owned(),
        });
    }
    let data_sectors = Sectors(device_size_bytes(&config.data_device)? / 512);
    let data_blocks = config.block_size.blocks_in(data_sectors);
    if *data_blocks == 0 {
        return Err(Error::invalid_size(
            config.data_device.display().to_string(),
            data_sectors,
            &format!(
                "the data device is smaller than one pool block ({})",
                config.block_size
            ),
        ));
    }
    Ok(Resolved {
        meta,
        data,
        data_blocks,
    })
}

/// The feature arguments convoy puts in every pool table.
pub(crate) fn feature_args(zeroing: BlockZeroing) -> Vec<String> {
    // A full pool must fail writes, not queue them: see docs/thinpool.md.
    let mut args = vec!["error_if_no_space".to_owned()];
    if zeroing == BlockZeroing::Skip {
        args.push("skip_block_zeroing".to_owned());
    }
    args
}

/// The low-water mark, in free data blocks, of a pool of `data_blocks`.
fn low_water(config: &PoolConfig, data_blocks: DataBlocks) -> DataBlocks {
    DataBlocks(data_blocks.0 * u64::from(config.low_water_free_percent.min(100)) / 100)
}

fn pool_table(config: &PoolConfig, resolved: &Resolved) -> ThinPoolDevTargetTable {
    ThinPoolDevTargetTable::new(
        Sectors(0),
        config.block_size.sectors_of(resolved.data_blocks),
        ThinPoolTargetParams::new(
            resolved.meta,
            resolved.data,
            config.block_size.sectors(),
            // The event tells convoy early that the pool fills (convoy does not extend pools).
            low_water(config, resolved.data_blocks),
            feature_args(config.zeroing),
        ),
    )
}

fn load_error(config: &PoolConfig, e: devicemapper::DmError) -> Error {
    match errno_of(&e) {
        Some(Errno::EBUSY) => Error::Busy {
            device: format!(
                "{} / {}",
                config.data_device.display(),
                config.metadata_device.display()
            ),
            reason: "claimed by another device (another pool, a mount or an open with O_EXCL)"
                .to_owned(),
        },
        _ => crate::error::dm_error(
            "load thin-pool table (see dmesg for the kernel's reason)",
            &config.name,
            e,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_is_shareable_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ThinPool>();
    }

    #[test]
    fn config_defaults() {
        let c = PoolConfig::new("/dev/vdb", "/dev/vdc");
        assert_eq!(c.name, "convoy-pool");
        assert_eq!(c.block_size.sectors(), Sectors(4096));
        assert_eq!(c.zeroing, BlockZeroing::Zero);
        assert!(!c.force);
    }

    #[test]
    fn zeroing_is_never_skipped_by_default_and_full_pools_error() {
        assert_eq!(feature_args(BlockZeroing::default()), ["error_if_no_space"]);
        assert_eq!(
            feature_args(BlockZeroing::Skip),
            ["error_if_no_space", "skip_block_zeroing"]
        );
    }

    #[test]
    fn resolve_refuses_non_block_devices() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data.img");
        std::fs::write(&data, [0u8; 512]).unwrap();
        let c = PoolConfig::new(&data, &data);
        assert!(matches!(resolve(&c), Err(Error::NotABlockDevice { .. })));
        let c = PoolConfig::new(&data, &data).with_name("bad/name");
        assert!(matches!(resolve(&c), Err(Error::InvalidName { .. })));
    }
}
