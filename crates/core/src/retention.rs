//! Retention: which snapshots (or backups) a `--keep-*` policy keeps, as a pure function of
//! their times, so that it is tested exactly with made-up times (no clock is read here).
//!
//! Semantics (those of restic's `forget --keep-*`): the items are taken newest first.
//! * `last` N keeps the N newest items.
//! * `hourly`/`daily`/`weekly`/`monthly` N: for each of the N most recent hours (days, weeks,
//!   months) that **hold at least one item**, the newest item of that period is kept. Periods
//!   without items do not count, so a daemon that was down for a week keeps its older
//!   snapshots instead of letting them age out. Periods are UTC; weeks start on Monday.
//! * Each rule is applied on its own; an item is kept if any rule keeps it (the reasons are
//!   all returned).
//! * Items listed as protected (the snapshot the next incremental backup needs) are always
//!   kept, whatever the rules say.
//! * An empty policy (every count zero) keeps everything: no retention.

use std::collections::BTreeSet;

/// A `--keep-*` policy: how many of each kind to keep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeepPolicy {
    /// The newest N items.
    #[serde(default)]
    pub last: u32,
    /// The newest item of each of the N most recent hours holding items.
    #[serde(default)]
    pub hourly: u32,
    /// Likewise per day (UTC).
    #[serde(default)]
    pub daily: u32,
    /// Likewise per week (Monday to Sunday, UTC).
    #[serde(default)]
    pub weekly: u32,
    /// Likewise per calendar month (UTC).
    #[serde(default)]
    pub monthly: u32,
}

impl KeepPolicy {
    /// Whether every count is zero (then nothing is deleted).
    pub fn is_empty(&self) -> bool {
        *self == KeepPolicy::default()
    }
}

/// Why an item is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeepReason {
    /// The policy is empty.
    NoPolicy,
    /// Among the `last` newest.
    Last,
    /// The newest of its hour.
    Hourly,
    /// The newest of its day.
    Daily,
    /// The newest of its week.
    Weekly,
    /// The newest of its month.
    Monthly,
    /// The next incremental backup needs it.
    Protected,
}

/// An item to decide on: a name and its time (seconds since the Unix epoch, UTC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionItem {
    /// Its name (snapshot name or backup URL).
    pub name: String,
    /// When it was made.
    pub time: i64,
}

/// The decision for one item: kept for `reasons`, or deleted when `reasons` is empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionDecision {
    /// The item's name.
    pub name: String,
    /// Its time.
    pub time: i64,
    /// Why it is kept (empty: delete it).
    pub reasons: Vec<KeepReason>,
}

impl RetentionDecision {
    /// Whether the item is kept.
    pub fn keep(&self) -> bool {
        !self.reasons.is_empty()
    }
}

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

/// Days since 1970-01-01 → (year, month 1–12), proleptic Gregorian (Hinnant's algorithm).
pub(crate) fn year_month(days: i64) -> (i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month)
}

/// (year, month 1–12, day 1–31) → days since 1970-01-01, proleptic Gregorian (the inverse of
/// [`year_month`] with the day).
pub(crate) fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The period of `time` for each tier: hour, day, week (Monday-based), month.
fn periods(time: i64) -> [i64; 4] {
    let day = time.div_euclid(DAY);
    // 1970-01-01 was a Thursday: +3 makes Mondays start a new week.
    let week = (day + 3).div_euclid(7);
    let (y, m) = year_month(day);
    [time.div_euclid(HOUR), day, week, y * 12 + m - 1]
}

/// Decides which items `policy` keeps; `protected` names are always kept. The result is
/// ordered newest first (equal times: by name, descending, so the order is total).
pub fn retention(
    items: &[RetentionItem],
    policy: &KeepPolicy,
    protected: &BTreeSet<String>,
) -> Vec<RetentionDecision> {
    let mut sorted: Vec<&RetentionItem> = items.iter().collect();
    sorted.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.name.cmp(&a.name)));
    let tiers = [
        (policy.hourly, KeepReason::Hourly),
        (policy.daily, KeepReason::Daily),
        (policy.weekly, KeepReason::Weekly),
        (policy.monthly, KeepReason::Monthly),
    ];
    // Per tier: the last period seen and how many periods were kept.
    let mut seen: [(Option<i64>, u32); 4] = [(None, 0); 4];
    sorted
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let mut reasons = Vec::new();
            if policy.is_empty() {
                reasons.push(KeepReason::NoPolicy);
            }
            if (i as u64) < u64::from(policy.last) {
                reasons.push(KeepReason::Last);
            }
            let p = periods(item.time);
            for (t, (count, reason)) in tiers.iter().enumerate() {
                let (last, kept) = &mut seen[t];
                if *last != Some(p[t]) {
                    *last = Some(p[t]);
                    if *kept < *count {
                        *kept += 1;
                        reasons.push(*reason);
                    }
                }
            }
            if protected.contains(&item.name) {
                reasons.push(KeepReason::Protected);
            }
            RetentionDecision {
                name: item.name.clone(),
                time: item.time,
                reasons,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
