//! The devicemapper driver's options (`dm.*`), checked.

use std::collections::BTreeMap;
use std::path::PathBuf;

use convoy_thinpool::{BlockSize, SectorBytes, Sectors, DEFAULT_POOL_NAME};

use crate::error::{Error, Result};
use crate::guard_fill::FillThresholds;
use crate::names::parse_size;

/// Default thin size: 100 GiB.
pub const DEFAULT_VOLUME_SIZE: u64 = 100 << 30;

/// Parsed `dm.*` options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DmOptions {
    /// `dm.datadev`.
    pub data_device: PathBuf,
    /// `dm.metadatadev`.
    pub metadata_device: PathBuf,
    /// `dm.thinpoolname`.
    pub pool_name: String,
    /// `dm.thinpoolblocksize` (sectors).
    pub block_size: BlockSize,
    /// `dm.defaultvolumesize` (bytes).
    pub default_volume_size: u64,
    /// `dm.fs`: `ext4` or `xfs`.
    pub filesystem: String,
    /// `dm.fillwarn`, `dm.fillrefuse` (`guard_fill.rs`).
    pub fill: FillThresholds,
}

const KNOWN: [&str; 8] = [
    "dm.datadev",
    "dm.metadatadev",
    "dm.thinpoolname",
    "dm.thinpoolblocksize",
    "dm.defaultvolumesize",
    "dm.fs",
    crate::guard_fill::FILL_WARN_OPTION,
    crate::guard_fill::FILL_REFUSE_OPTION,
];

impl DmOptions {
    /// Parses the `dm.*` entries of `opts` (others are ignored).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the option: missing devices, unknown `dm.` keys, a bad
    /// block size, size or filesystem.
    pub fn parse(opts: &BTreeMap<String, String>) -> Result<Self> {
        if let Some(k) = opts
            .keys()
            .find(|k| k.starts_with("dm.") && !KNOWN.contains(&k.as_str()))
        {
            return Err(Error::invalid(
                format!("driver option {k}"),
                format!("unknown; the devicemapper options are {}", KNOWN.join(", ")),
            ));
        }
        let device = |key: &str| -> Result<PathBuf> {
            let v = opts.get(key).filter(|v| !v.is_empty()).ok_or_else(|| {
                Error::invalid(
                    format!("driver option {key}"),
                    "it is required by the devicemapper driver (a block device path)",
                )
            })?;
            Ok(PathBuf::from(v))
        };
        let data_device = device("dm.datadev")?;
        let metadata_device = device("dm.metadatadev")?;
        let pool_name = opts
            .get("dm.thinpoolname")
            .cloned()
            .unwrap_or_else(|| DEFAULT_POOL_NAME.to_owned());
        convoy_thinpool::validate_name(&pool_name)
            .map_err(|e| Error::invalid("driver option dm.thinpoolname", e.to_string()))?;
        let block_size = match opts.get("dm.thinpoolblocksize") {
            None => BlockSize::DEFAULT,
            Some(v) => {
                let sectors: u64 = v.trim().parse().map_err(|_| {
                    Error::invalid(
                        "driver option dm.thinpoolblocksize",
                        format!("{v:?} is not a number of 512-byte sectors"),
                    )
                })?;
                BlockSize::new(Sectors(sectors)).map_err(|e| {
                    Error::invalid("driver option dm.thinpoolblocksize", e.to_string())
                })?
            }
        };
        let default_volume_size = match opts.get("dm.defaultvolumesize") {
            None => DEFAULT_VOLUME_SIZE,
            Some(v) => parse_size(v)
                .map_err(|e| Error::invalid("driver option dm.defaultvolumesize", e.to_string()))?,
        };
        let filesystem = opts.get("dm.fs").cloned().unwrap_or_else(|| "ext4".into());
        if filesystem != "ext4" && filesystem != "xfs" {
            return Err(Error::invalid(
                "driver option dm.fs",
                format!("{filesystem:?} is not supported (ext4 or xfs)"),
            ));
        }
        let fill = FillThresholds::parse(opts)?;
        Ok(DmOptions {
            fill,
            data_device,
            metadata_device,
            pool_name,
            block_size,
            default_volume_size,
            filesystem,
        })
    }

    /// A size in bytes rounded up to whole pool blocks, in sectors.
    ///
    /// # Errors
    /// [`Error::InvalidSize`] for zero or an overflowing size.
    pub fn round_to_blocks(&self, bytes: u64) -> Result<Sectors> {
        let block = *self.block_size.sectors();
        let bad = |reason: &str| Error::InvalidSize {
            value: bytes.to_string(),
            reason: reason.to_owned(),
        };
        if bytes == 0 {
            return Err(bad("a size must be greater than zero"));
        }
        let sectors = *Sectors::covering(bytes);
        let rounded = Sectors(
            sectors
                .div_ceil(block)
                .checked_mul(block)
                .ok_or_else(|| bad("too large"))?,
        );
        if rounded.checked_bytes().is_none() {
            return Err(bad("too large"));
        }
        Ok(rounded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_and_errors() {
        let base = [("dm.datadev", "/dev/vdb"), ("dm.metadatadev", "/dev/vdc")];
        let o = DmOptions::parse(&opts(&base)).unwrap();
        assert_eq!(o.pool_name, "convoy-pool");
        assert_eq!(*o.block_size.sectors(), 4096);
        assert_eq!(o.default_volume_size, 100 << 30);
        assert_eq!(o.filesystem, "ext4");

        let e = DmOptions::parse(&opts(&base[..1])).unwrap_err();
        assert!(e.to_string().contains("dm.metadatadev"), "{e}");
        for (k, v) in [
            ("dm.thinpoolblocksize", "100"),
            ("dm.thinpoolblocksize", "2m"),
            ("dm.defaultvolumesize", "10x"),
            ("dm.fs", "btrfs"),
            ("dm.thinpoolname", "a/b"),
            ("dm.bogus", "1"),
        ] {
            let mut o = opts(&base);
            o.insert(k.into(), v.into());
            let e = DmOptions::parse(&o).unwrap_err();
            assert!(e.to_string().contains(k), "{k}={v}: {e}");
        }
        let mut o = opts(&base);
        o.insert("dm.thinpoolblocksize".into(), "128".into());
        o.insert("dm.defaultvolumesize".into(), "1g".into());
        o.insert("dm.fs".into(), "xfs".into());
        o.insert("vfs.path".into(), "/x".into());
        let o = DmOptions::parse(&o).unwrap();
        assert_eq!(o.default_volume_size, 1 << 30);
        assert_eq!(o.filesystem, "xfs");
    }

    #[test]
    fn sizes_round_up_to_whole_blocks() {
        let o = DmOptions::parse(&opts(&[("dm.datadev", "a"), ("dm.metadatadev", "b")])).unwrap();
        assert_eq!(*o.round_to_blocks(1).unwrap(), 4096);
        assert_eq!(*o.round_to_blocks(2 << 20).unwrap(), 4096);
        assert_eq!(*o.round_to_blocks((2 << 20) + 1).unwrap(), 8192);
        assert_eq!(*o.round_to_blocks(100 << 20).unwrap(), 204_800);
        assert!(o.round_to_blocks(0).is_err());
        assert!(o.round_to_blocks(u64::MAX).is_err());
    }
}
