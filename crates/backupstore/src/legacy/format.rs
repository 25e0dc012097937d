//! The original Convoy's (0.5.x) object-store layout, as facts:
//!
//! ```text
//! <dest>/convoy-objectstore/volumes/<n0n1>/<n2n3>/<name>/volume.cfg
//!     {"Name","Driver","Size","CreatedTime","LastBackupName"}
//! .../<name>/backups/backup_<backup>.cfg
//!     {"Name","Driver","VolumeName","SnapshotName","SnapshotCreatedAt","CreatedTime",
//!      "Blocks":[{"Offset","BlockChecksum"}],"SingleFile":{"FilePath"}}
//! .../<name>/blocks/<c0c1>/<c2c3>/<checksum>.blk
//!     gzip of one 2 MiB block; checksum = the first 64 hex digits of its SHA-512
//! ```
//!
//! A volume name shorter than 4 characters is padded with `!` to make its two directory levels
//! (and its directory name). `vfs:///path` keeps the tree under `/path`; `s3://bucket/path`
//! under the key prefix `path/`.

use std::io::Read;

use serde::Deserialize;
use sha2::{Digest, Sha512};

/// The top directory the original wrote under a destination.
pub const BASE: &str = "convoy-objectstore";

/// The block size of every delta-block backup of the original (its devicemapper driver
/// refused any other pool block size).
pub const BLOCK_SIZE: u64 = 2 * 1024 * 1024;

/// `volume.cfg`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct VolumeConfig {
    /// Volume name.
    pub name: String,
    /// Driver that made its backups (`devicemapper`).
    pub driver: String,
    /// Volume size in bytes.
    pub size: i64,
    /// When the volume was created (Go `time.RubyDate`).
    pub created_time: String,
    /// The volume's latest backup.
    pub last_backup_name: String,
}

/// One block of a backup: its offset in the volume and checksum.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BlockMapping {
    /// Byte offset in the volume (a multiple of [`BLOCK_SIZE`]).
    pub offset: i64,
    /// First 64 hex digits of the block's SHA-512.
    pub block_checksum: String,
}

/// A single-file backup (the original's vfs driver), which has no blocks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct SingleFile {
    /// The archive's path in the store; empty for a delta-block backup.
    pub file_path: String,
}

/// `backup_<name>.cfg`: one backup, with the whole volume's block list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct BackupConfig {
    /// Backup name.
    pub name: String,
    /// Driver (the original left it empty for delta-block backups).
    pub driver: String,
    /// The volume backed up.
    pub volume_name: String,
    /// The snapshot backed up.
    pub snapshot_name: String,
    /// When that snapshot was made.
    pub snapshot_created_at: String,
    /// When the backup was made (Go `time.RubyDate`).
    pub created_time: String,
    /// Every block of the volume at that snapshot, by offset.
    pub blocks: Vec<BlockMapping>,
    /// Set for a single-file backup.
    pub single_file: SingleFile,
}

/// The directory of `volume` (relative to the destination).
pub fn volume_dir(volume: &str) -> String {
    let mut padded = volume.to_string();
    while padded.len() < 4 {
        padded.push('!');
    }
    format!("{BASE}/volumes/{}/{}/{padded}", &padded[..2], &padded[2..4])
}

/// `volume.cfg` of `volume`.
pub fn volume_config_path(volume: &str) -> String {
    format!("{}/volume.cfg", volume_dir(volume))
}

/// The directory of `volume`'s backup configs.
pub fn backups_dir(volume: &str) -> String {
    format!("{}/backups", volume_dir(volume))
}

/// The config of backup `backup` of `volume`.
pub fn backup_config_path(volume: &str, backup: &str) -> String {
    format!("{}/backup_{backup}.cfg", backups_dir(volume))
}

/// The backup name in a config file name `backup_<name>.cfg`.
pub fn backup_name_of(file_name: &str) -> Option<&str> {
    file_name
        .strip_prefix("backup_")?
        .strip_suffix(".cfg")
        .filter(|n| !n.is_empty())
}

/// Whether `checksum` is 64 lower-case hex digits (anything else cannot name a block file).
pub fn valid_checksum(checksum: &str) -> bool {
    checksum.len() == 64
        && checksum
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The block file of `checksum` in `volume`.
pub fn block_path(volume: &str, checksum: &str) -> String {
    format!(
        "{}/blocks/{}/{}/{checksum}.blk",
        volume_dir(volume),
        &checksum[..2],
        &checksum[2..4]
    )
}

/// The original's checksum of a block: the first 64 hex digits of its SHA-512.
pub fn checksum(data: &[u8]) -> String {
    let digest = Sha512::digest(data);
    let mut out = String::with_capacity(64);
    for byte in &digest[..32] {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// Decompresses a stored block and checks its length and checksum; the reason on failure.
pub fn decode_block(stored: &[u8], expected_checksum: &str) -> Result<Vec<u8>, String> {
    let mut data = Vec::with_capacity(BLOCK_SIZE as usize);
    // One byte more than a block may hold, to see an oversized block without reading it all.
    flate2::read::GzDecoder::new(stored)
        .take(BLOCK_SIZE + 1)
        .read_to_end(&mut data)
        .map_err(|e| format!("not a gzip stream: {e}"))?;
    if data.len() as u64 != BLOCK_SIZE {
        return Err(format!(
            "it holds {} bytes once decompressed, not {BLOCK_SIZE}",
            data.len()
        ));
    }
    let found = checksum(&data);
    if found != expected_checksum {
        return Err(format!(
            "its content has checksum {found}, not the {expected_checksum} it is named by"
        ));
    }
    Ok(data)
}

/// Compresses a block as the original stored it (gzip). Tests write stores with it.
pub fn encode_block(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder
        .write_all(data)
        .expect("writing into a Vec cannot fail");
    encoder.finish().expect("writing into a Vec cannot fail")
}

/// Parses Go's `time.RubyDate` (`Tue Dec 01 22:08:32 +0000 2026`) into Unix seconds, for
/// ordering backups; `None` for anything else.
pub fn parse_ruby_date(text: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [_, month, day, clock, zone, year] = parts.as_slice() else {
        return None;
    };
    let month = MONTHS.iter().position(|m| m == month)? as i64 + 1;
    let day: i64 = day.parse().ok()?;
    let year: i64 = year.parse().ok()?;
    let mut hms = clock.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if zone.len() != 5 {
        return None;
    }
    let sign = match &zone[..1] {
        "+" => 1,
        "-" => -1,
        _ => return None,
    };
    let zh: i64 = zone[1..3].parse().ok()?;
    let zm: i64 = zone[3..5].parse().ok()?;
    // Days from civil (proleptic Gregorian), the usual era computation.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + m * 60 + s - sign * (zh * 3600 + zm * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_original_layout() {
        assert_eq!(
            volume_config_path("appdata"),
            "convoy-objectstore/volumes/ap/pd/appdata/volume.cfg"
        );
        assert_eq!(volume_dir("ab"), "convoy-objectstore/volumes/ab/!!/ab!!");
        assert_eq!(volume_dir("abc"), "convoy-objectstore/volumes/ab/c!/abc!");
        let sum = "556d2b18df75c3f82ce277a521335421a4c69711b0c968737ec8906c5b8654c6";
        assert_eq!(
            block_path("appdata", sum),
            format!("convoy-objectstore/volumes/ap/pd/appdata/blocks/55/6d/{sum}.blk")
        );
        assert_eq!(
            backup_name_of("backup_backup-12f904136003451d.cfg"),
            Some("backup-12f904136003451d")
        );
        assert_eq!(backup_name_of("backup_.cfg"), None);
        assert_eq!(backup_name_of("volume.cfg"), None);
        assert!(valid_checksum(sum));
        assert!(!valid_checksum("../../etc/passwd"));
    }

    #[test]
    fn blocks_round_trip_and_bad_ones_are_named() {
        let block = vec![7u8; BLOCK_SIZE as usize];
        let sum = checksum(&block);
        let stored = encode_block(&block);
        assert_eq!(decode_block(&stored, &sum).unwrap(), block);
        let other = checksum(&[0u8; 4]);
        assert!(decode_block(&stored, &other)
            .unwrap_err()
            .contains("checksum"));
        assert!(decode_block(b"garbage", &sum).unwrap_err().contains("gzip"));
        let short = encode_block(&[7u8; 4096]);
        assert!(decode_block(&short, &sum)
            .unwrap_err()
            .contains("4096 bytes"));
    }

    #[test]
    fn ruby_dates_order_backups() {
        let a = parse_ruby_date("Tue Dec 01 22:08:28 +0000 2026").unwrap();
        let b = parse_ruby_date("Tue Dec 01 22:08:32 +0000 2026").unwrap();
        assert_eq!(b - a, 4);
        assert_eq!(parse_ruby_date("Thu Jan 01 00:00:00 +0000 1970"), Some(0));
        assert_eq!(parse_ruby_date("Thu Jan 01 01:00:00 +0100 1970"), Some(0));
        assert_eq!(parse_ruby_date("2026-12-01T22:08:32Z"), None);
    }
}
