//! Pool-fill guards: a thin pool that runs out of data or metadata space fails every write that
//! needs a new block (and a full metadata device turns the pool read-only, see
//! `docs/thinpool.md`), so the devicemapper driver refuses to *start* new work — new volumes,
//! snapshots, clones and restores — once the pool is filled past a threshold, and warns before.
//! Running writers are never touched: the guard only answers the requests that would add to
//! the pool's commitments.
//!
//! Thresholds (driver options, percent of data or metadata space, whichever is fuller):
//! `dm.fillwarn` (default 80) and `dm.fillrefuse` (default 95). Each crossing of a threshold,
//! up or down, is logged once, when the fill is observed (by a guarded request, `info`, or
//! [`crate::VolumeManager::check_pool_fill`]).

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::error::{Error, Result};

/// Default warning threshold, percent.
pub const DEFAULT_FILL_WARN_PERCENT: u8 = 80;
/// Default refusal threshold, percent.
pub const DEFAULT_FILL_REFUSE_PERCENT: u8 = 95;

/// Option naming the warning threshold.
pub const FILL_WARN_OPTION: &str = "dm.fillwarn";
/// Option naming the refusal threshold.
pub const FILL_REFUSE_OPTION: &str = "dm.fillrefuse";

/// Warning and refusal thresholds, whole percent of the data or metadata space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FillThresholds {
    /// At or above this fill a warning is logged and `info` shows `warn`.
    pub warn: u8,
    /// At or above this fill new volumes, snapshots, clones and restores are refused.
    pub refuse: u8,
}

impl Default for FillThresholds {
    fn default() -> Self {
        FillThresholds {
            warn: DEFAULT_FILL_WARN_PERCENT,
            refuse: DEFAULT_FILL_REFUSE_PERCENT,
        }
    }
}

/// How full a pool is, relative to the thresholds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FillLevel {
    /// Below the warning threshold.
    Normal,
    /// At or above the warning threshold, below the refusal one.
    Warn,
    /// At or above the refusal threshold: new objects are refused.
    Refuse,
}

impl FillLevel {
    /// The word `info` shows: `ok`, `warn` or `refuse`.
    pub fn as_str(self) -> &'static str {
        match self {
            FillLevel::Normal => "ok",
            FillLevel::Warn => "warn",
            FillLevel::Refuse => "refuse",
        }
    }
}

/// Used and total blocks of a pool's data and metadata space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolFill {
    /// Data blocks in use.
    pub data_used: u64,
    /// Data blocks in total.
    pub data_total: u64,
    /// Metadata blocks (4 KiB) in use.
    pub meta_used: u64,
    /// Metadata blocks in total.
    pub meta_total: u64,
}

/// Whether `used` is at least `percent`% of `total` (exact, integer arithmetic). An empty
/// space (total 0) is never over a threshold.
fn at_least(used: u64, total: u64, percent: u8) -> bool {
    total > 0 && u128::from(used) * 100 >= u128::from(percent) * u128::from(total)
}

/// `used / total` in percent with one decimal, rounded down ("83.1").
pub fn percent_text(used: u64, total: u64) -> String {
    if total == 0 {
        return "0.0".into();
    }
    let tenths = u128::from(used) * 1000 / u128::from(total);
    format!("{}.{}", tenths / 10, tenths % 10)
}

impl PoolFill {
    /// The level of each space: (data, metadata).
    fn levels(&self, t: &FillThresholds) -> (FillLevel, FillLevel) {
        let level = |used, total| {
            if at_least(used, total, t.refuse) {
                FillLevel::Refuse
            } else if at_least(used, total, t.warn) {
                FillLevel::Warn
            } else {
                FillLevel::Normal
            }
        };
        (
            level(self.data_used, self.data_total),
            level(self.meta_used, self.meta_total),
        )
    }

    /// The pool's level: that of its fuller space (data or metadata).
    pub fn level(&self, t: &FillThresholds) -> FillLevel {
        let (d, m) = self.levels(t);
        d.max(m)
    }

    /// The space that decides the level ("data" when both are at the same level), with its
    /// used and total blocks.
    fn deciding(&self, t: &FillThresholds) -> (&'static str, u64, u64) {
        let (d, m) = self.levels(t);
        if m > d {
            ("metadata", self.meta_used, self.meta_total)
        } else {
            ("data", self.data_used, self.data_total)
        }
    }

    /// The `info` lines of this fill (`Thinpool...` keys).
    pub fn info(&self, t: &FillThresholds, into: &mut BTreeMap<String, String>) {
        into.insert(
            "ThinpoolDataFill".into(),
            format!("{}%", percent_text(self.data_used, self.data_total)),
        );
        into.insert(
            "ThinpoolMetadataUsedBlocks".into(),
            self.meta_used.to_string(),
        );
        into.insert(
            "ThinpoolMetadataTotalBlocks".into(),
            self.meta_total.to_string(),
        );
        into.insert(
            "ThinpoolMetadataFill".into(),
            format!("{}%", percent_text(self.meta_used, self.meta_total)),
        );
        into.insert("ThinpoolFillLevel".into(), self.level(t).as_str().into());
        into.insert("ThinpoolFillWarnPercent".into(), t.warn.to_string());
        into.insert("ThinpoolFillRefusePercent".into(), t.refuse.to_string());
    }
}

impl FillThresholds {
    /// Reads `dm.fillwarn` and `dm.fillrefuse` from the driver options (defaults 80, 95).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the option: not a whole number from 1 to 100, or a
    /// warning threshold above the refusal one.
    pub fn parse(opts: &BTreeMap<String, String>) -> Result<Self> {
        let read = |key: &str, default: u8| -> Result<u8> {
            let Some(v) = opts.get(key) else {
                return Ok(default);
            };
            let v = v.trim().trim_end_matches('%');
            match v.parse::<u8>() {
                Ok(p) if (1..=100).contains(&p) => Ok(p),
                _ => Err(Error::invalid(
                    format!("driver option {key}"),
                    format!("{v:?} is not a whole percentage from 1 to 100"),
                )),
            }
        };
        let warn = read(FILL_WARN_OPTION, DEFAULT_FILL_WARN_PERCENT)?;
        let refuse = read(FILL_REFUSE_OPTION, DEFAULT_FILL_REFUSE_PERCENT)?;
        if warn > refuse {
            return Err(Error::invalid(
                format!("driver option {FILL_WARN_OPTION}"),
                format!(
                    "the warning threshold {warn}% is above the refusal threshold \
                     {FILL_REFUSE_OPTION}={refuse}%"
                ),
            ));
        }
        Ok(FillThresholds { warn, refuse })
    }
}

/// A request refused by the guard ([`Error::PoolFill`]): what, the pool, its fill, the setting.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} refused: thin pool {pool} is {percent}% full ({space}: {used} of {total} blocks \
     used), at or above the refusal threshold {setting}%; free space (delete snapshots or \
     volumes, fstrim mounted volumes), extend the pool, or raise the setting"
)]
pub struct FillRefusal {
    /// The refused request ("create volume v1").
    pub what: String,
    /// The pool's device-mapper name.
    pub pool: String,
    /// "data" or "metadata": the space over the threshold.
    pub space: &'static str,
    /// Its blocks in use.
    pub used: u64,
    /// Its blocks in total.
    pub total: u64,
    /// `used / total` in percent, one decimal.
    pub percent: String,
    /// The setting and its value (`dm.fillrefuse=95`).
    pub setting: String,
}

/// One pool's guard: its thresholds and the level last observed (to log each crossing once).
#[derive(Debug)]
pub(crate) struct FillGuard {
    pool: String,
    thresholds: FillThresholds,
    last: Mutex<FillLevel>,
}

impl FillGuard {
    /// A guard for pool `pool` (its device-mapper name).
    pub(crate) fn new(pool: &str, thresholds: FillThresholds) -> FillGuard {
        FillGuard {
            pool: pool.to_owned(),
            thresholds,
            last: Mutex::new(FillLevel::Normal),
        }
    }

    /// The thresholds.
    pub(crate) fn thresholds(&self) -> &FillThresholds {
        &self.thresholds
    }

    /// Notes the fill; logs a line when the level changed since the last observation.
    /// Returns the level.
    pub(crate) fn observe(&self, fill: &PoolFill) -> FillLevel {
        let level = fill.level(&self.thresholds);
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if *last != level {
            let data = percent_text(fill.data_used, fill.data_total);
            let meta = percent_text(fill.meta_used, fill.meta_total);
            let t = &self.thresholds;
            match level {
                FillLevel::Refuse => tracing::error!(
                    pool = %self.pool, data = %data, metadata = %meta,
                    "thin pool {} is {}% (data) / {}% (metadata) full, at or above \
                     {FILL_REFUSE_OPTION}={}%: new volumes, snapshots and restores are refused \
                     until space is freed",
                    self.pool, data, meta, t.refuse
                ),
                FillLevel::Warn => tracing::warn!(
                    pool = %self.pool, data = %data, metadata = %meta,
                    "thin pool {} is {}% (data) / {}% (metadata) full, at or above \
                     {FILL_WARN_OPTION}={}% (refusals start at {FILL_REFUSE_OPTION}={}%)",
                    self.pool, data, meta, t.warn, t.refuse
                ),
                FillLevel::Normal => tracing::info!(
                    pool = %self.pool, data = %data, metadata = %meta,
                    "thin pool {} is back below {FILL_WARN_OPTION}={}%: {}% (data) / {}% \
                     (metadata) full",
                    self.pool, t.warn, data, meta
                ),
            }
            *last = level;
        }
        level
    }

    /// Observes the fill and refuses `what` ("create volume v1") when the pool is at or
    /// above the refusal threshold.
    ///
    /// # Errors
    /// [`Error::PoolFill`] naming the pool, its fill and the setting.
    pub(crate) fn check(&self, fill: &PoolFill, what: &str) -> Result<()> {
        if self.observe(fill) < FillLevel::Refuse {
            return Ok(());
        }
        let (space, used, total) = fill.deciding(&self.thresholds);
        Err(Error::PoolFill(Box::new(FillRefusal {
            what: what.to_owned(),
            pool: self.pool.clone(),
            space,
            used,
            total,
            percent: percent_text(used, total),
            setting: format!("{FILL_REFUSE_OPTION}={}", self.thresholds.refuse),
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn fill(data_used: u64, meta_used: u64) -> PoolFill {
        PoolFill {
            data_used,
            data_total: 1000,
            meta_used,
            meta_total: 200,
        }
    }

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn levels_follow_the_fuller_space_exactly_at_the_thresholds() {
        let t = FillThresholds::default();
        assert_eq!(fill(0, 0).level(&t), FillLevel::Normal);
        assert_eq!(fill(799, 0).level(&t), FillLevel::Normal);
        assert_eq!(fill(800, 0).level(&t), FillLevel::Warn);
        assert_eq!(fill(949, 0).level(&t), FillLevel::Warn);
        assert_eq!(fill(950, 0).level(&t), FillLevel::Refuse);
        assert_eq!(fill(1000, 0).level(&t), FillLevel::Refuse);
        // Metadata: 80% of 200 is 160, 95% is 190.
        assert_eq!(fill(0, 159).level(&t), FillLevel::Normal);
        assert_eq!(fill(0, 160).level(&t), FillLevel::Warn);
        assert_eq!(fill(0, 190).level(&t), FillLevel::Refuse);
        assert_eq!(fill(900, 190).level(&t), FillLevel::Refuse);
        // An empty pool (total 0, as a status never says) is never over.
        let empty = PoolFill {
            data_used: 0,
            data_total: 0,
            meta_used: 0,
            meta_total: 0,
        };
        assert_eq!(empty.level(&t), FillLevel::Normal);
    }

    #[test]
    fn huge_counts_do_not_overflow() {
        let t = FillThresholds::default();
        let f = PoolFill {
            data_used: u64::MAX / 100 * 96,
            data_total: u64::MAX,
            meta_used: 0,
            meta_total: 1,
        };
        assert_eq!(f.level(&t), FillLevel::Refuse);
    }

    #[test]
    fn refusal_names_pool_fill_space_and_setting() {
        let g = FillGuard::new("convoy-pool", FillThresholds::default());
        g.check(&fill(949, 189), "create volume v1").unwrap();
        let e = g.check(&fill(951, 10), "create volume v2").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        let msg = e.to_string();
        for part in [
            "create volume v2",
            "convoy-pool",
            "95.1%",
            "data",
            "951 of 1000",
            "dm.fillrefuse=95",
        ] {
            assert!(msg.contains(part), "{part:?} missing from {msg}");
        }
        let e = g.check(&fill(100, 199), "snapshot s1").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("metadata"), "{msg}");
        assert!(msg.contains("199 of 200"), "{msg}");
        assert!(msg.contains("99.5%"), "{msg}");
    }

    #[test]
    fn observe_tracks_crossings_both_ways() {
        let g = FillGuard::new(
            "p",
            FillThresholds {
                warn: 50,
                refuse: 90,
            },
        );
        assert_eq!(*g.last.lock().unwrap(), FillLevel::Normal);
        assert_eq!(g.observe(&fill(500, 0)), FillLevel::Warn);
        assert_eq!(*g.last.lock().unwrap(), FillLevel::Warn);
        assert_eq!(g.observe(&fill(900, 0)), FillLevel::Refuse);
        assert!(g.check(&fill(900, 0), "x").is_err());
        assert_eq!(g.observe(&fill(100, 0)), FillLevel::Normal);
        assert_eq!(*g.last.lock().unwrap(), FillLevel::Normal);
        g.check(&fill(100, 0), "x").unwrap();
    }

    #[test]
    fn thresholds_parse_defaults_values_and_refuse_bad_ones() {
        assert_eq!(
            FillThresholds::parse(&opts(&[])).unwrap(),
            FillThresholds {
                warn: 80,
                refuse: 95
            }
        );
        assert_eq!(
            FillThresholds::parse(&opts(&[("dm.fillwarn", "70"), ("dm.fillrefuse", "90%")]))
                .unwrap(),
            FillThresholds {
                warn: 70,
                refuse: 90
            }
        );
        for (k, v) in [
            ("dm.fillwarn", "0"),
            ("dm.fillwarn", "101"),
            ("dm.fillrefuse", "abc"),
            ("dm.fillrefuse", "-5"),
            ("dm.fillrefuse", "50"),
        ] {
            let e = FillThresholds::parse(&opts(&[(k, v)])).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{k}={v}");
            assert!(e.to_string().contains("driver option dm.fill"), "{e}");
        }
    }

    #[test]
    fn info_shows_both_fills_level_and_thresholds() {
        let mut m = BTreeMap::new();
        fill(831, 20).info(&FillThresholds::default(), &mut m);
        assert_eq!(m["ThinpoolDataFill"], "83.1%");
        assert_eq!(m["ThinpoolMetadataFill"], "10.0%");
        assert_eq!(m["ThinpoolMetadataUsedBlocks"], "20");
        assert_eq!(m["ThinpoolMetadataTotalBlocks"], "200");
        assert_eq!(m["ThinpoolFillLevel"], "warn");
        assert_eq!(m["ThinpoolFillWarnPercent"], "80");
        assert_eq!(m["ThinpoolFillRefusePercent"], "95");
    }
}
