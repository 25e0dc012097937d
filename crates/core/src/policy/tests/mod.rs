//! Policy tests with a made-up clock and a stand-in target: parsing, the schedule (grid,
//! offsets, missed runs), a year of hourly snapshots and daily backups with retention checked
//! exactly, a restart in the middle, two policies on one volume, a store that is down, the
//! backup concurrency limit, a crash between recording and making a snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::book::{Job, MadeSnapshot};
use super::*;
use crate::error::Error;
use crate::retention::days_from_civil;

mod runs;

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

fn at(y: i64, m: i64, d: i64, h: i64) -> i64 {
    days_from_civil(y, m, d) * DAY + h * HOUR
}

#[derive(Default)]
struct Fake {
    /// snapshot → volume
    snapshots: Mutex<BTreeMap<String, String>>,
    /// backup URL → snapshot
    backups: Mutex<BTreeMap<String, String>>,
    store_down: std::sync::atomic::AtomicBool,
    busy: Mutex<BTreeSet<String>>,
    running: AtomicUsize,
    most_running: AtomicUsize,
    backup_calls: AtomicUsize,
}

impl PolicyTarget for Fake {
    async fn create_snapshot(&self, volume: &str, name: &str) -> Result<()> {
        let mut s = self.snapshots.lock().unwrap();
        if s.contains_key(name) {
            return Err(Error::AlreadyExists {
                what: "snapshot",
                name: name.into(),
            });
        }
        s.insert(name.into(), volume.into());
        Ok(())
    }
    async fn snapshot_exists(&self, name: &str) -> bool {
        self.snapshots.lock().unwrap().contains_key(name)
    }
    async fn delete_snapshot(&self, name: &str) -> Result<()> {
        if self.busy.lock().unwrap().contains(name) {
            return Err(Error::busy(name, "a backup is reading it"));
        }
        self.snapshots
            .lock()
            .unwrap()
            .remove(name)
            .map(drop)
            .ok_or_else(|| Error::not_found("snapshot", name))
    }
    async fn create_backup(&self, snapshot: &str, dest: &str, _: Option<&str>) -> Result<String> {
        self.backup_calls.fetch_add(1, Ordering::SeqCst);
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_running.fetch_max(now, Ordering::SeqCst);
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        if self.store_down.load(Ordering::SeqCst) {
            return Err(Error::invalid("store", format!("{dest} is unreachable")));
        }
        assert!(self.snapshots.lock().unwrap().contains_key(snapshot));
        let url = format!("{dest}?backup={snapshot}");
        self.backups
            .lock()
            .unwrap()
            .insert(url.clone(), snapshot.into());
        Ok(url)
    }
    async fn delete_backup(&self, url: &str, _: Option<&str>) -> Result<()> {
        self.backups
            .lock()
            .unwrap()
            .remove(url)
            .map(drop)
            .ok_or_else(|| Error::not_found("backup", url))
    }
}

impl Fake {
    fn snapshot_names(&self) -> BTreeSet<String> {
        self.snapshots.lock().unwrap().keys().cloned().collect()
    }
    fn backup_snapshots(&self) -> BTreeSet<String> {
        self.backups.lock().unwrap().values().cloned().collect()
    }
}

fn vols(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn keep(text: &str) -> crate::KeepPolicy {
    parse_keep("test", text).unwrap()
}

/// From `from` (already run), steps the engine from its next due time to the next until
/// `end`, running every due job; answers how many ran.
async fn run_until(
    engine: &PolicyEngine,
    fake: &Fake,
    volumes: &[String],
    from: i64,
    end: i64,
) -> usize {
    let mut runs = 0;
    // Schedules runs not scheduled yet.
    assert!(engine.due(volumes, from).unwrap().is_empty());
    while let Some(t) = engine.next_due(volumes) {
        if t > end {
            break;
        }
        for (v, n, a, outcome) in engine.run_due(fake, volumes, t, 2).await.unwrap() {
            outcome.unwrap_or_else(|e| panic!("{} run of {n} on {v} at {t}: {e}", a.as_str()));
            runs += 1;
        }
    }
    runs
}

#[test]
fn intervals_and_keep_rules_parse_and_print_back() {
    assert_eq!(parse_interval("i", "1h").unwrap(), 3600);
    assert_eq!(parse_interval("i", "1h30m").unwrap(), 5400);
    assert_eq!(parse_interval("i", "2d").unwrap(), 2 * 86_400);
    assert_eq!(format_interval(5400), "1h 30m");
    assert_eq!(parse_interval("i", &format_interval(5400)).unwrap(), 5400);
    for bad in ["", "0s", "10", "1 fortnight", "-1h"] {
        let e = parse_interval("snapshot interval", bad).unwrap_err();
        assert!(e.to_string().contains("snapshot interval"), "{bad}: {e}");
    }
    let k = keep("last=5,hourly=24 , daily=7,weekly=4,monthly=12");
    assert_eq!(
        (k.last, k.hourly, k.daily, k.weekly, k.monthly),
        (5, 24, 7, 4, 12)
    );
    assert_eq!(
        format_keep(&k),
        "last=5,hourly=24,daily=7,weekly=4,monthly=12"
    );
    assert_eq!(format_keep(&keep("none")), "none");
    assert!(keep("").is_empty());
    for bad in ["yearly=1", "last", "last=-1", "daily=x"] {
        let e = parse_keep("--keep-snapshots", bad).unwrap_err().to_string();
        assert!(
            e.contains("--keep-snapshots") && e.contains("last=5"),
            "{e}"
        );
    }
}

#[test]
fn policies_that_make_no_sense_are_refused_with_the_setting_named() {
    let dest = Some("vfs:///b".to_string());
    let cases = [
        (Policy::default(), "does nothing"),
        (
            Policy {
                backup_every: Some(60),
                ..Policy::default()
            },
            "needs a backup destination",
        ),
        (
            Policy {
                snapshot_every: Some(60),
                backup_dest: dest.clone(),
                ..Policy::default()
            },
            "needs a backup interval",
        ),
        (
            Policy {
                snapshot_every: Some(60),
                keep_backups: keep("last=1"),
                ..Policy::default()
            },
            "backup retention needs backups",
        ),
        (
            Policy {
                snapshot_every: Some(0),
                ..Policy::default()
            },
            "at least 1s",
        ),
    ];
    for (p, want) in cases {
        let e = p.validate().unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
    }
    assert!(validate_policy_name("nightly").is_ok());
    assert!(validate_policy_name("a-very-long-policy-name").is_err());
    assert!(validate_policy_name("bad/name").is_err());
}

#[test]
fn snapshot_names_fit_the_name_rule_and_stay_distinct() {
    let t = at(2025, 12, 31, 23) + 59 * 60 + 58;
    assert_eq!(
        policy_snapshot_name("db", "default", Action::Snapshot, t),
        "db.default.s20251231235958"
    );
    assert_eq!(
        policy_snapshot_name("db", "nightly", Action::Backup, at(2024, 2, 29, 0)),
        "db.nightly.b20240229000000"
    );
    let long_a = format!("{}a", "v".repeat(63));
    let long_b = format!("{}b", "v".repeat(63));
    let a = policy_snapshot_name(&long_a, "nightly", Action::Backup, t);
    let b = policy_snapshot_name(&long_b, "nightly", Action::Backup, t);
    assert_ne!(a, b);
    for n in [&a, &b] {
        crate::validate_name(n).unwrap();
        assert_eq!(n.len(), crate::MAX_NAME_LEN);
    }
}

#[tokio::test]
async fn schedules_sit_on_a_grid_with_a_stable_offset_spread_over_volumes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = PolicyEngine::open(dir.path(), 0).unwrap();
    let hourly = Policy {
        snapshot_every: Some(3600),
        ..Policy::default()
    };
    engine.set(ALL_VOLUMES, "default", hourly).unwrap();
    let volumes: Vec<String> = (0..100).map(|i| format!("vol{i}")).collect();
    let now = at(2025, 6, 1, 12) + 17;
    assert!(
        engine.due(&volumes, now).unwrap().is_empty(),
        "first call only schedules"
    );
    let mut starts = BTreeSet::new();
    for s in engine
        .status(&volumes)
        .iter()
        .filter(|s| s.volume != ALL_VOLUMES)
    {
        let next = s.state.snapshot.next_run.unwrap();
        assert!(next > now && next <= now + 3600, "{next}");
        assert_eq!(
            next.rem_euclid(3600),
            jitter(&s.volume, "default", Action::Snapshot, 3600) as i64
        );
        starts.insert(next);
    }
    assert!(
        starts.len() > 80,
        "100 volumes start at only {} distinct seconds",
        starts.len()
    );
}
