//! Typed pool and thin-device status, parsed from the kernel's status lines.
//!
//! Pool line (kernel `Documentation/admin-guide/device-mapper/thin-provisioning.rst`):
//! `<transaction id> <used meta>/<total meta> <used data>/<total data> <held root|-> ro|rw|out_of_data_space
//! [no_]discard_passdown error|queue_if_no_space needs_check|- [<metadata low water mark>]`,
//! or `Fail`, or `Error`. Thin line: `<mapped sectors> <highest mapped sector|->`, or `Fail`/`Error`.

use crate::units::{DataBlocks, MetaBlocks, Sectors};

/// Used and total amounts of one resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage<T> {
    /// Amount in use.
    pub used: T,
    /// Total amount.
    pub total: T,
}

impl<T: Copy + PartialOrd + std::ops::Sub<Output = T> + Default> Usage<T> {
    /// Amount free (`total - used`, zero if the kernel ever reports more used than total).
    pub fn free(&self) -> T {
        if self.used >= self.total {
            T::default()
        } else {
            self.total - self.used
        }
    }
}

/// The pool's operating mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolMode {
    /// Normal operation (`rw`).
    ReadWrite,
    /// Metadata is read-only (`ro`): after a metadata error, or out of metadata space.
    ReadOnly,
    /// No free data blocks (`out_of_data_space`): writes needing a new block fail (with the
    /// `error_if_no_space` policy this crate sets) until space is freed.
    OutOfDataSpace,
}

impl PoolMode {
    /// The kernel's word for the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::ReadWrite => "rw",
            PoolMode::ReadOnly => "ro",
            PoolMode::OutOfDataSpace => "out_of_data_space",
        }
    }
}

/// What the pool does with a write that needs a block when none is free.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoSpacePolicy {
    /// Fail the write at once (`error_if_no_space`). Convoy's choice: see `docs/thinpool.md`.
    Error,
    /// Queue it until space appears or the kernel's `no_space_timeout` expires
    /// (`queue_if_no_space`, the kernel's default).
    Queue,
}

/// Status of a working pool, as typed values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolStatus {
    /// Transaction id of the metadata (set by `set_transaction_id`).
    pub transaction_id: u64,
    /// Metadata blocks (4 KiB each) used and total.
    pub metadata: Usage<MetaBlocks>,
    /// Data blocks (the pool's block size each) used and total.
    pub data: Usage<DataBlocks>,
    /// Block number of the held metadata snapshot's root, when one is reserved.
    pub held_metadata_root: Option<MetaBlocks>,
    /// Operating mode.
    pub mode: PoolMode,
    /// Whether discards are passed down to the data device.
    pub discard_passdown: bool,
    /// The no-space policy in force.
    pub no_space_policy: NoSpacePolicy,
    /// The metadata superblock is flagged as needing `thin_check`.
    pub needs_check: bool,
}

/// What the kernel says about a pool: working with numbers, or failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolState {
    /// The pool works; its status.
    Working(PoolStatus),
    /// The kernel reports `Fail` (I/O errors on the metadata) or `Error` (status unavailable).
    Failed,
}

/// Usage of one thin device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThinUsage {
    /// Sectors mapped (provisioned) in the device.
    pub mapped: Sectors,
    /// Highest mapped sector, if any is mapped.
    pub highest_mapped: Option<Sectors>,
}

/// What the kernel says about a thin device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThinState {
    /// The device works; its usage.
    Working(ThinUsage),
    /// The kernel reports `Fail` or `Error`.
    Failed,
}

/// Parse a thin-pool status line. The error is a description of what is wrong.
pub fn parse_pool_status(line: &str) -> Result<PoolState, String> {
    let line = line.trim();
    if line.starts_with("Fail") || line.starts_with("Error") {
        return Ok(PoolState::Failed);
    }
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 8 {
        return Err(format!(
            "expected at least 8 fields, found {}",
            fields.len()
        ));
    }
    let transaction_id = number(fields[0], "transaction id")?;
    let (used_meta, total_meta) = fraction(fields[1], "metadata usage")?;
    let (used_data, total_data) = fraction(fields[2], "data usage")?;
    let held_metadata_root = match fields[3] {
        "-" => None,
        v => Some(MetaBlocks(number(v, "held metadata root")?)),
    };
    let mode = match fields[4] {
        "rw" => PoolMode::ReadWrite,
        "ro" => PoolMode::ReadOnly,
        "out_of_data_space" => PoolMode::OutOfDataSpace,
        v => return Err(format!("unknown mode {v:?}")),
    };
    let discard_passdown = match fields[5] {
        "discard_passdown" => true,
        "no_discard_passdown" => false,
        v => return Err(format!("unknown discard setting {v:?}")),
    };
    let no_space_policy = match fields[6] {
        "error_if_no_space" => NoSpacePolicy::Error,
        "queue_if_no_space" => NoSpacePolicy::Queue,
        v => return Err(format!("unknown no-space policy {v:?}")),
    };
    let needs_check = match fields[7] {
        "needs_check" => true,
        "-" => false,
        v => return Err(format!("unknown needs_check field {v:?}")),
    };
    Ok(PoolState::Working(PoolStatus {
        transaction_id,
        metadata: Usage {
            used: MetaBlocks(used_meta),
            total: MetaBlocks(total_meta),
        },
        data: Usage {
            used: DataBlocks(used_data),
            total: DataBlocks(total_data),
        },
        held_metadata_root,
        mode,
        discard_passdown,
        no_space_policy,
        needs_check,
    }))
}

/// Parse a thin device status line. The error is a description of what is wrong.
pub fn parse_thin_status(line: &str) -> Result<ThinState, String> {
    let line = line.trim();
    if line.starts_with("Fail") || line.starts_with("Error") {
        return Ok(ThinState::Failed);
    }
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 2 {
        return Err(format!("expected 2 fields, found {}", fields.len()));
    }
    let mapped = Sectors(number(fields[0], "mapped sectors")?);
    let highest_mapped = match fields[1] {
        "-" => None,
        v => Some(Sectors(number(v, "highest mapped sector")?)),
    };
    Ok(ThinState::Working(ThinUsage {
        mapped,
        highest_mapped,
    }))
}

fn number(field: &str, what: &str) -> Result<u64, String> {
    field
        .parse::<u64>()
        .map_err(|_| format!("{what} {field:?} is not a number"))
}

fn fraction(field: &str, what: &str) -> Result<(u64, u64), String> {
    let (used, total) = field
        .split_once('/')
        .ok_or_else(|| format!("{what} {field:?} is not of the form used/total"))?;
    Ok((number(used, what)?, number(total, what)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_fresh_pool() {
        let s = parse_pool_status("0 10/2048 0/128 - rw discard_passdown error_if_no_space - 1024")
            .unwrap();
        let PoolState::Working(s) = s else {
            panic!("failed")
        };
        assert_eq!(s.transaction_id, 0);
        assert_eq!(s.metadata.used, MetaBlocks(10));
        assert_eq!(s.metadata.total, MetaBlocks(2048));
        assert_eq!(s.data.free(), DataBlocks(128));
        assert_eq!(s.held_metadata_root, None);
        assert_eq!(s.mode, PoolMode::ReadWrite);
        assert!(s.discard_passdown);
        assert_eq!(s.no_space_policy, NoSpacePolicy::Error);
        assert!(!s.needs_check);
    }

    #[test]
    fn parses_held_root_out_of_space_and_needs_check() {
        let PoolState::Working(s) = parse_pool_status(
            "5 33/2048 128/128 21 out_of_data_space no_discard_passdown queue_if_no_space needs_check",
        )
        .unwrap() else {
            panic!("failed")
        };
        assert_eq!(s.transaction_id, 5);
        assert_eq!(s.held_metadata_root, Some(MetaBlocks(21)));
        assert_eq!(s.mode, PoolMode::OutOfDataSpace);
        assert_eq!(s.data.free(), DataBlocks(0));
        assert!(!s.discard_passdown);
        assert_eq!(s.no_space_policy, NoSpacePolicy::Queue);
        assert!(s.needs_check);
        let PoolState::Working(ro) =
            parse_pool_status("1 1/2 3/4 - ro discard_passdown error_if_no_space -").unwrap()
        else {
            panic!("failed")
        };
        assert_eq!(ro.mode, PoolMode::ReadOnly);
    }

    #[test]
    fn fail_and_error_are_failed() {
        assert_eq!(parse_pool_status("Fail").unwrap(), PoolState::Failed);
        assert_eq!(parse_pool_status("Error").unwrap(), PoolState::Failed);
        assert_eq!(parse_thin_status("Fail").unwrap(), ThinState::Failed);
    }

    #[test]
    fn malformed_lines_are_errors_not_panics() {
        for bad in [
            "",
            "0 10/2048",
            "x 10/2048 0/128 - rw discard_passdown error_if_no_space -",
            "0 102048 0/128 - rw discard_passdown error_if_no_space -",
            "0 10/ 0/128 - rw discard_passdown error_if_no_space -",
            "0 10/2048 0/128 q rw discard_passdown error_if_no_space -",
            "0 10/2048 0/128 - rx discard_passdown error_if_no_space -",
            "0 10/2048 0/128 - rw passdown error_if_no_space -",
            "0 10/2048 0/128 - rw discard_passdown panic_if_no_space -",
            "0 10/2048 0/128 - rw discard_passdown error_if_no_space maybe",
        ] {
            assert!(parse_pool_status(bad).is_err(), "{bad:?} accepted");
        }
        for bad in ["", "12", "a b", "12 x"] {
            assert!(parse_thin_status(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn parses_thin_usage() {
        assert_eq!(
            parse_thin_status("0 -").unwrap(),
            ThinState::Working(ThinUsage {
                mapped: Sectors(0),
                highest_mapped: None
            })
        );
        assert_eq!(
            parse_thin_status("8192 16383").unwrap(),
            ThinState::Working(ThinUsage {
                mapped: Sectors(8192),
                highest_mapped: Some(Sectors(16383))
            })
        );
    }

    #[test]
    fn usage_free_saturates() {
        let u = Usage {
            used: DataBlocks(5),
            total: DataBlocks(3),
        };
        assert_eq!(u.free(), DataBlocks(0));
    }
}
