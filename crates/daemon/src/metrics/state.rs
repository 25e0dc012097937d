//! The state metrics: pools, drivers, volumes and snapshots, read from the volume manager at
//! each scrape and encoded from a registry made for that scrape.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicU64;

use convoy_core::{Info, Volume, VolumeManager};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

/// One pool, from its driver's `info` section (`docs/operations.md`, "`info`").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PoolState {
    /// The pool's device-mapper name.
    pub pool: String,
    pub data_used: Option<u64>,
    pub data_total: Option<u64>,
    pub meta_used: Option<u64>,
    pub meta_total: Option<u64>,
    pub block_bytes: Option<u64>,
    /// 0 ok, 1 warn, 2 refuse.
    pub level: Option<i64>,
    pub warn_percent: Option<u64>,
    pub refuse_percent: Option<u64>,
}

/// One driver: whether it runs, and its counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct DriverState {
    pub name: String,
    pub degraded: bool,
    pub volumes: u64,
    pub snapshots: u64,
}

/// One volume: what its driver knows of its size.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct VolumeState {
    pub name: String,
    pub driver: String,
    /// Its virtual size (devicemapper); vfs volumes have none.
    pub size: Option<u64>,
    /// Bytes of the pool mapped to it (devicemapper, device active).
    pub allocated: Option<u64>,
}

/// Everything the state metrics show, as read at one scrape.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct State {
    pub drivers: Vec<DriverState>,
    pub pools: Vec<PoolState>,
    pub volumes: Vec<VolumeState>,
}

fn number(section: &BTreeMap<String, String>, key: &str) -> Option<u64> {
    section.get(key).and_then(|v| v.trim().parse().ok())
}

impl State {
    /// Reads the state from `manager` (each part that cannot be read is left out and logged).
    pub(crate) async fn read(manager: &VolumeManager) -> State {
        let info = manager.info().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "metrics: cannot read info");
            Info::default()
        });
        let volumes = manager.list_volumes(None).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "metrics: cannot list volumes");
            Vec::new()
        });
        let allocated = manager.volume_allocated_bytes().await;
        State::from_parts(&info, &volumes, &allocated)
    }

    /// The state shown by `info`, the volume list and the allocations.
    pub(crate) fn from_parts(
        info: &Info,
        volumes: &[Volume],
        allocated: &BTreeMap<String, u64>,
    ) -> State {
        let mut drivers: BTreeMap<&str, DriverState> = info
            .drivers
            .iter()
            .map(|(name, section)| {
                let state = DriverState {
                    name: name.clone(),
                    degraded: section.contains_key("Degraded"),
                    ..DriverState::default()
                };
                (name.as_str(), state)
            })
            .collect();
        for v in volumes {
            let d = drivers
                .entry(v.driver.as_str())
                .or_insert_with(|| DriverState {
                    name: v.driver.clone(),
                    ..DriverState::default()
                });
            d.volumes += 1;
            d.snapshots += v.snapshots.len() as u64;
        }
        let pools = info
            .drivers
            .iter()
            .filter_map(|(driver, section)| {
                let device = section.get("ThinpoolDevice")?;
                let pool = Path::new(device)
                    .file_name()
                    .map_or_else(|| driver.clone(), |n| n.to_string_lossy().into_owned());
                Some(PoolState {
                    pool,
                    data_used: number(section, "ThinpoolUsedBlocks"),
                    data_total: number(section, "ThinpoolTotalBlocks"),
                    meta_used: number(section, "ThinpoolMetadataUsedBlocks"),
                    meta_total: number(section, "ThinpoolMetadataTotalBlocks"),
                    block_bytes: number(section, "ThinpoolBlockSize"),
                    level: section
                        .get("ThinpoolFillLevel")
                        .and_then(|l| match l.as_str() {
                            "ok" => Some(0),
                            "warn" => Some(1),
                            "refuse" => Some(2),
                            _ => None,
                        }),
                    warn_percent: number(section, "ThinpoolFillWarnPercent"),
                    refuse_percent: number(section, "ThinpoolFillRefusePercent"),
                })
            })
            .collect();
        let volumes = volumes
            .iter()
            .map(|v| VolumeState {
                name: v.name.clone(),
                driver: v.driver.clone(),
                size: number(&v.driver_info, "Size"),
                allocated: allocated.get(&v.name).copied(),
            })
            .collect();
        State {
            drivers: drivers.into_values().collect(),
            pools,
            volumes,
        }
    }

    /// A registry (prefix `convoy`) holding this state as gauges.
    pub(crate) fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("convoy");
        let mut g = Gauges(&mut r);
        let blocks = || Unit::Other("blocks".into());

        let volumes = g.family("volumes", "volumes, by driver", None);
        let snapshots = g.family("snapshots", "snapshots, by driver", None);
        let degraded = g.family(
            "driver_degraded",
            "1 when the driver failed to start (its volumes are unavailable), else 0",
            None,
        );
        for d in &self.drivers {
            let l = vec![("driver", d.name.clone())];
            volumes.get_or_create(&l).set(saturate(d.volumes));
            snapshots.get_or_create(&l).set(saturate(d.snapshots));
            degraded.get_or_create(&l).set(i64::from(d.degraded));
        }

        let data_used = g.family("pool_data_used", "data blocks in use", Some(blocks()));
        let data_size = g.family("pool_data_size", "data blocks in total", Some(blocks()));
        let meta_used = g.family(
            "pool_metadata_used",
            "metadata blocks (4 KiB) in use",
            Some(blocks()),
        );
        let meta_size = g.family(
            "pool_metadata_size",
            "metadata blocks (4 KiB) in total",
            Some(blocks()),
        );
        let block_size = g.family(
            "pool_block_size",
            "size of a data block of the pool",
            Some(Unit::Bytes),
        );
        let level = g.family(
            "pool_fill_level",
            "fill level against dm.fillwarn/dm.fillrefuse: 0 ok, 1 warn, 2 refuse",
            None,
        );
        let threshold: Family<Vec<(&'static str, String)>, Gauge<f64, AtomicU64>> =
            Family::default();
        g.0.register_with_unit(
            "pool_fill_threshold",
            "the thresholds in force (threshold=warn: dm.fillwarn, refuse: dm.fillrefuse)",
            Unit::Other("ratio".into()),
            threshold.clone(),
        );
        for p in &self.pools {
            let l = vec![("pool", p.pool.clone())];
            for (family, value) in [
                (&data_used, p.data_used),
                (&data_size, p.data_total),
                (&meta_used, p.meta_used),
                (&meta_size, p.meta_total),
                (&block_size, p.block_bytes),
            ] {
                if let Some(v) = value {
                    family.get_or_create(&l).set(saturate(v));
                }
            }
            if let Some(v) = p.level {
                level.get_or_create(&l).set(v);
            }
            for (which, percent) in [("warn", p.warn_percent), ("refuse", p.refuse_percent)] {
                if let Some(percent) = percent {
                    let l = vec![("pool", p.pool.clone()), ("threshold", which.to_owned())];
                    threshold.get_or_create(&l).set(percent as f64 / 100.0);
                }
            }
        }

        let size = g.family(
            "volume_size",
            "virtual size of a volume (devicemapper; vfs volumes have none)",
            Some(Unit::Bytes),
        );
        let allocated = g.family(
            "volume_allocated",
            "pool space mapped to a volume: mapped blocks x block size (devicemapper, device \
             active)",
            Some(Unit::Bytes),
        );
        for v in &self.volumes {
            let l = vec![("volume", v.name.clone()), ("driver", v.driver.clone())];
            if let Some(s) = v.size {
                size.get_or_create(&l).set(saturate(s));
            }
            if let Some(a) = v.allocated {
                allocated.get_or_create(&l).set(saturate(a));
            }
        }
        r
    }
}

type GaugeFamily = Family<Vec<(&'static str, String)>, Gauge>;

/// Registers gauge families.
struct Gauges<'r>(&'r mut Registry);

impl Gauges<'_> {
    fn family(&mut self, name: &str, help: &str, unit: Option<Unit>) -> GaugeFamily {
        let family = GaugeFamily::default();
        match unit {
            Some(unit) => self.0.register_with_unit(name, help, unit, family.clone()),
            None => self.0.register(name, help, family.clone()),
        }
        family
    }
}

fn saturate(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
