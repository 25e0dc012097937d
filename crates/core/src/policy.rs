//! Policies: scheduled snapshots and backups of volumes, with retention (`docs/operations.md`).
//!
//! A [`Policy`] says how often to snapshot a volume, how often to back it up (to one
//! destination), and which of the snapshots and backups **it made** to keep ([`KeepPolicy`],
//! the rule of `retention.rs`). It is set for one volume or for all volumes
//! ([`ALL_VOLUMES`]); a volume's own policy of the same name replaces the all-volumes one.
//! A volume may have several policies under different names (say hourly snapshots and daily
//! backups to S3 under one, weekly backups to NFS under another).
//!
//! [`PolicyEngine`] keeps the policies and their run state in `<root>/policies.json` and decides
//! what is due at a given time; the caller passes the time in (no clock is read here), so a
//! year of schedules is tested in a second. [`PolicyEngine::run_job`] runs one due job against a
//! [`PolicyTarget`] (implemented by [`crate::VolumeManager`]).
//!
//! Rules the engine keeps:
//! * A run missed while nothing ran (daemon down) runs once when it is next looked at, not
//!   once per missed interval; after a restart the missed runs are spread over a short
//!   window ([`PolicyEngine::open`]).
//! * Each (volume, policy, action) gets a fixed offset within its interval (a hash of the
//!   three, at most an hour), so 100 volumes with the same policy do not start together.
//! * Retention deletes only snapshots and backups the policy made, never the snapshot its next
//!   incremental backup needs.

pub(crate) mod book;
pub(crate) mod run;
#[cfg(test)]
mod tests;

pub use book::{PolicyEngine, PolicyStatus};
pub use run::PolicyTarget;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::retention::KeepPolicy;

/// The volume name under which a policy for all volumes is set.
pub const ALL_VOLUMES: &str = "*";
/// The name of a policy set without one.
pub const DEFAULT_POLICY_NAME: &str = "default";
/// Longest policy name.
pub const MAX_POLICY_NAME_LEN: usize = 16;
/// Shortest interval accepted, seconds.
pub const MIN_INTERVAL_SECS: u64 = 1;
/// Longest offset (jitter) of a schedule within its interval, seconds.
pub const MAX_JITTER_SECS: u64 = 3600;
/// The window over which runs missed while the engine was closed are spread, seconds.
pub const MISSED_SPREAD_SECS: u64 = 300;

/// What a policy does to a volume.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Take a snapshot every so many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_every: Option<u64>,
    /// Take a snapshot and back it up to `backup_dest` every so many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_every: Option<u64>,
    /// The backup store URL (`vfs:///path`, `s3://bucket@region/path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_dest: Option<String>,
    /// S3 endpoint override for `backup_dest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_endpoint: Option<String>,
    /// Which of the policy's snapshots to keep. Empty: keep those of snapshot runs; a backup
    /// run's snapshot is deleted once a newer backup no longer needs it.
    #[serde(default)]
    pub keep_snapshots: KeepPolicy,
    /// Which of the policy's backups to keep (empty: all).
    #[serde(default)]
    pub keep_backups: KeepPolicy,
}

impl Policy {
    /// Checks the policy makes sense.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the setting.
    pub fn validate(&self) -> Result<()> {
        for (what, every) in [
            ("snapshot interval", self.snapshot_every),
            ("backup interval", self.backup_every),
        ] {
            if matches!(every, Some(s) if s < MIN_INTERVAL_SECS) {
                return Err(Error::invalid(what, "it must be at least 1s"));
            }
        }
        if self.snapshot_every.is_none() && self.backup_every.is_none() {
            return Err(Error::invalid(
                "policy",
                "it does nothing: give a snapshot interval, a backup interval, or both",
            ));
        }
        match (&self.backup_every, &self.backup_dest) {
            (Some(_), None) => Err(Error::invalid(
                "policy",
                "a backup interval needs a backup destination (--backup-dest URL)",
            )),
            (None, Some(_)) => Err(Error::invalid(
                "policy",
                "a backup destination needs a backup interval (--backup-every DURATION)",
            )),
            (None, None) if !self.keep_backups.is_empty() => Err(Error::invalid(
                "policy",
                "backup retention needs backups (--backup-every and --backup-dest)",
            )),
            _ => Ok(()),
        }
    }
}

/// A scheduled action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Take a snapshot (and apply snapshot retention).
    Snapshot,
    /// Take a snapshot, back it up, apply snapshot and backup retention.
    Backup,
}

impl Action {
    /// `snapshot` or `backup`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Snapshot => "snapshot",
            Action::Backup => "backup",
        }
    }

    fn interval(self, policy: &Policy) -> Option<u64> {
        match self {
            Action::Snapshot => policy.snapshot_every,
            Action::Backup => policy.backup_every,
        }
    }
}

/// Checks a policy name: like a volume name, at most [`MAX_POLICY_NAME_LEN`] characters.
///
/// # Errors
/// [`Error::InvalidArgument`].
pub fn validate_policy_name(name: &str) -> Result<()> {
    crate::names::validate_name(name)
        .map_err(|e| Error::invalid(format!("policy name {name:?}"), e.to_string()))?;
    if name.len() > MAX_POLICY_NAME_LEN {
        return Err(Error::invalid(
            format!("policy name {name:?}"),
            format!("it is longer than {MAX_POLICY_NAME_LEN} characters"),
        ));
    }
    Ok(())
}

/// Parses an interval: a number with a unit, `30s`, `15m`, `1h`, `1d`, `1w` (or combined as
/// `1h30m`); at least one second.
///
/// # Errors
/// [`Error::InvalidArgument`] naming `what`.
pub fn parse_interval(what: &str, text: &str) -> Result<u64> {
    let secs = humantime::parse_duration(text.trim())
        .map_err(|e| {
            Error::invalid(
                format!("{what} {text:?}"),
                format!("{e} (write e.g. 30s, 15m, 1h, 1d, 1w)"),
            )
        })?
        .as_secs();
    if secs < MIN_INTERVAL_SECS {
        return Err(Error::invalid(
            format!("{what} {text:?}"),
            "it must be at least 1s",
        ));
    }
    Ok(secs)
}

/// Writes an interval back in the form [`parse_interval`] reads (`1h`, `1d 2h`).
pub fn format_interval(secs: u64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

/// Parses a retention rule: comma-separated `KIND=N` with KIND one of `last`, `hourly`,
/// `daily`, `weekly`, `monthly` (e.g. `last=5,daily=7,weekly=4`); `none` or empty for none.
///
/// # Errors
/// [`Error::InvalidArgument`] naming `what` and the bad part.
pub fn parse_keep(what: &str, text: &str) -> Result<KeepPolicy> {
    let mut keep = KeepPolicy::default();
    let text = text.trim();
    if text.is_empty() || text == "none" {
        return Ok(keep);
    }
    for part in text.split(',') {
        let bad = |reason: &str| {
            Error::invalid(
                format!("{what} {text:?}"),
                format!(
                    "{part:?}: {reason} (write e.g. last=5,hourly=24,daily=7,weekly=4,monthly=12)"
                ),
            )
        };
        let (kind, count) = part
            .trim()
            .split_once('=')
            .ok_or_else(|| bad("not KIND=N"))?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| bad("the count is not a whole number"))?;
        let slot = match kind.trim() {
            "last" => &mut keep.last,
            "hourly" => &mut keep.hourly,
            "daily" => &mut keep.daily,
            "weekly" => &mut keep.weekly,
            "monthly" => &mut keep.monthly,
            _ => {
                return Err(bad(
                    "the kind must be last, hourly, daily, weekly or monthly",
                ))
            }
        };
        *slot = count;
    }
    Ok(keep)
}

/// Writes a retention rule back in the form [`parse_keep`] reads (`none` when empty).
pub fn format_keep(keep: &KeepPolicy) -> String {
    let parts: Vec<String> = [
        ("last", keep.last),
        ("hourly", keep.hourly),
        ("daily", keep.daily),
        ("weekly", keep.weekly),
        ("monthly", keep.monthly),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(k, n)| format!("{k}={n}"))
    .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(",")
    }
}

/// A stable hash (FNV-1a, 64 bits) of the parts, for schedule offsets and short name tags.
fn stable_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain([0u8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The offset of (volume, policy, action)'s runs within an interval of `every` seconds.
fn jitter(volume: &str, policy: &str, action: Action, every: u64) -> u64 {
    stable_hash(&[volume, policy, action.as_str()]) % every.clamp(1, MAX_JITTER_SECS)
}

/// `YYYYMMDDhhmmss` (UTC) of Unix time `t`.
fn stamp(t: i64) -> String {
    let [y, m, d, hh, mm, ss] = civil(t);
    format!("{y:04}{m:02}{d:02}{hh:02}{mm:02}{ss:02}")
}

/// Unix time `t` in RFC 3339, UTC (`2025-12-31T23:00:00Z`).
pub fn rfc3339(t: i64) -> String {
    let [y, m, d, hh, mm, ss] = civil(t);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

/// [year, month, day, hour, minute, second] (UTC) of Unix time `t`.
fn civil(t: i64) -> [i64; 6] {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (y, m) = crate::retention::year_month(days);
    let first = crate::retention::days_from_civil(y, m, 1);
    let d = days - first + 1;
    [y, m, d, secs / 3600, secs % 3600 / 60, secs % 60]
}

/// The name of a snapshot a policy takes: `VOLUME.POLICY.sYYYYMMDDhhmmss` (`b` for a backup
/// run's). A volume name too long for that is cut and tagged with a hash of it, so that the
/// name stays within [`crate::MAX_NAME_LEN`] and distinct per volume.
pub fn policy_snapshot_name(volume: &str, policy: &str, action: Action, t: i64) -> String {
    let kind = match action {
        Action::Snapshot => 's',
        Action::Backup => 'b',
    };
    let tail = format!(".{policy}.{kind}{}", stamp(t));
    let room = crate::names::MAX_NAME_LEN - tail.len();
    if volume.len() <= room {
        return format!("{volume}{tail}");
    }
    let tag = format!("{:08x}", stable_hash(&[volume]) as u32);
    let keep = room - tag.len() - 1;
    format!("{}-{tag}{tail}", &volume[..keep])
}
