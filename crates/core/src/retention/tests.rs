//! Retention tests: made-up times (no clock), expected sets written out by hand.

use super::*;

/// Seconds since the epoch of a UTC date and hour (days counted here independently of the
/// module's calendar code: whole years and months added up).
fn at(year: i64, month: i64, day: i64, hour: i64) -> i64 {
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let mut days = 0;
    for y in 1970..year {
        days += if leap(y) { 366 } else { 365 };
    }
    let lengths = [
        31,
        if leap(year) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    for m in 1..month {
        days += lengths[(m - 1) as usize];
    }
    days += day - 1;
    days * 86_400 + hour * 3600
}

fn name(t: i64) -> String {
    format!("s{t}")
}

fn item(t: i64) -> RetentionItem {
    RetentionItem {
        name: name(t),
        time: t,
    }
}

fn kept(d: &[RetentionDecision]) -> BTreeSet<i64> {
    d.iter().filter(|d| d.keep()).map(|d| d.time).collect()
}

/// A year of hourly snapshots, 2025-01-01 00:00 to 2025-12-31 23:00 (8760 items).
fn year_of_hourly() -> Vec<RetentionItem> {
    let start = at(2025, 1, 1, 0);
    (0..8760).map(|h| item(start + h * 3600)).collect()
}

#[test]
fn calendar_helper_agrees_with_known_dates() {
    assert_eq!(at(1970, 1, 1, 0), 0);
    assert_eq!(at(2000, 3, 1, 0), 951_868_800);
    assert_eq!(at(2025, 1, 1, 0), 1_735_689_600);
    assert_eq!(year_month(at(2024, 2, 29, 0) / 86_400), (2024, 2));
    assert_eq!(year_month(-1), (1969, 12));
}

#[test]
fn a_year_of_hourly_snapshots_keeps_exactly_the_tiers() {
    let items = year_of_hourly();
    let policy = KeepPolicy {
        last: 5,
        hourly: 48,
        daily: 7,
        weekly: 4,
        monthly: 12,
    };
    let d = retention(&items, &policy, &BTreeSet::new());
    assert_eq!(d.len(), 8760);
    let mut want = BTreeSet::new();
    // Hourly 48 (covering last 5): 2025-12-30 00:00 .. 2025-12-31 23:00.
    for h in 0..48 {
        want.insert(at(2025, 12, 30, 0) + h * 3600);
    }
    // Daily 7: 23:00 of Dec 25..31.
    for day in 25..=31 {
        want.insert(at(2025, 12, day, 23));
    }
    // Weekly 4: 2025-12-31 is a Wednesday; the Sundays before close the earlier weeks.
    for day in [31, 28, 21, 14] {
        want.insert(at(2025, 12, day, 23));
    }
    // Monthly 12: the last hour of each month.
    let ends = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    for (m, end) in ends.iter().enumerate() {
        want.insert(at(2025, m as i64 + 1, *end, 23));
    }
    assert_eq!(kept(&d), want);
    assert_eq!(want.len(), 48 + 5 + 2 + 11);
    // Reasons of a few, exactly.
    let reasons = |t: i64| d.iter().find(|d| d.time == t).unwrap().reasons.clone();
    use KeepReason::*;
    assert_eq!(
        reasons(at(2025, 12, 31, 23)),
        [Last, Hourly, Daily, Weekly, Monthly]
    );
    assert_eq!(reasons(at(2025, 12, 31, 18)), [Hourly]);
    assert_eq!(reasons(at(2025, 12, 28, 23)), [Daily, Weekly]);
    assert_eq!(reasons(at(2025, 12, 14, 23)), [Weekly]);
    assert_eq!(reasons(at(2025, 2, 28, 23)), [Monthly]);
    assert!(reasons(at(2025, 2, 28, 22)).is_empty());
    // Newest first.
    assert_eq!(d[0].time, at(2025, 12, 31, 23));
    assert_eq!(d[8759].time, at(2025, 1, 1, 0));
}

#[test]
fn daily_backups_for_a_year_keep_weeks_and_months() {
    // One backup a day at 02:00, 2025-01-01 .. 2025-12-31.
    let start = at(2025, 1, 1, 2);
    let items: Vec<_> = (0..365).map(|d| item(start + d * 86_400)).collect();
    let policy = KeepPolicy {
        daily: 3,
        weekly: 2,
        monthly: 3,
        ..Default::default()
    };
    let d = retention(&items, &policy, &BTreeSet::new());
    let want: BTreeSet<i64> = [
        at(2025, 12, 31, 2),
        at(2025, 12, 30, 2),
        at(2025, 12, 29, 2),
        at(2025, 12, 28, 2), // Sunday: the week before
        at(2025, 11, 30, 2),
        at(2025, 10, 31, 2),
    ]
    .into_iter()
    .collect();
    assert_eq!(kept(&d), want);
}

#[test]
fn periods_without_items_do_not_count() {
    // Daily items, then a 10-day gap (daemon down), then two more days.
    let mut items: Vec<_> = (1..=5).map(|day| item(at(2025, 3, day, 12))).collect();
    items.push(item(at(2025, 3, 16, 12)));
    items.push(item(at(2025, 3, 17, 12)));
    let policy = KeepPolicy {
        daily: 4,
        ..Default::default()
    };
    let d = retention(&items, &policy, &BTreeSet::new());
    let want: BTreeSet<i64> = [17, 16, 5, 4]
        .into_iter()
        .map(|day| at(2025, 3, day, 12))
        .collect();
    assert_eq!(kept(&d), want);
}

#[test]
fn the_protected_snapshot_is_never_deleted() {
    let items = year_of_hourly();
    let old = at(2025, 6, 15, 7);
    let policy = KeepPolicy {
        last: 3,
        ..Default::default()
    };
    let protected = BTreeSet::from([name(old)]);
    let d = retention(&items, &policy, &protected);
    let k = kept(&d);
    assert_eq!(k.len(), 4);
    assert!(k.contains(&old));
    let p = d.iter().find(|d| d.time == old).unwrap();
    assert_eq!(p.reasons, [KeepReason::Protected]);
}

#[test]
fn an_empty_policy_keeps_everything_and_empty_input_is_fine() {
    let items = vec![item(10), item(20)];
    let d = retention(&items, &KeepPolicy::default(), &BTreeSet::new());
    assert!(d.iter().all(|d| d.reasons == [KeepReason::NoPolicy]));
    assert!(retention(
        &[],
        &KeepPolicy {
            last: 1,
            ..Default::default()
        },
        &BTreeSet::new()
    )
    .is_empty());
}

#[test]
fn several_items_in_one_hour_keep_the_newest_and_ties_order_by_name() {
    let t = at(2025, 5, 5, 5);
    let items = vec![
        RetentionItem {
            name: "a".into(),
            time: t + 10,
        },
        RetentionItem {
            name: "b".into(),
            time: t + 10,
        },
        RetentionItem {
            name: "c".into(),
            time: t + 5,
        },
        RetentionItem {
            name: "d".into(),
            time: t - 1,
        },
    ];
    let policy = KeepPolicy {
        hourly: 2,
        ..Default::default()
    };
    let d = retention(&items, &policy, &BTreeSet::new());
    let names: Vec<_> = d.iter().map(|d| (d.name.as_str(), d.keep())).collect();
    assert_eq!(
        names,
        [("b", true), ("a", false), ("c", false), ("d", true)]
    );
}
