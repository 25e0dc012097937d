//! VM tier: the pool's low-water mark is set at `dm.fillwarn`, the kernel raises its event when
//! writers fill the pool past it, and the daemon's fill watcher wakes on that event (not only
//! on its 30 s look) to log the crossing.

mod cli_support;

use std::path::Path;
use std::time::{Duration, Instant};

use cli_support::TestDaemon;
use convoy_e2e::{run, DmDisks};

fn events(pool: &str) -> u64 {
    run(
        "dmsetup",
        &["info", "-c", "--noheadings", "-o", "events", pool],
    )
    .trim()
    .parse()
    .unwrap()
}

#[test]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
fn dm_fill_event_the_low_water_mark_wakes_the_fill_watcher() {
    let disks = DmDisks::new("cve", 256 << 20, 16 << 20);
    let tag = disks.tag.clone();
    let pool = disks.pool.clone();
    let d = TestDaemon::start_with(&[], |_| disks.daemon_flags(&["dm.fillwarn=50"]));
    // 256 MiB of 2 MiB blocks: 128 blocks; warn at 50% used is 64 blocks free.
    let table = run("dmsetup", &["table", &pool]);
    let fields: Vec<&str> = table.split_whitespace().collect();
    assert_eq!(fields[2], "thin-pool", "{table}");
    assert_eq!(fields[6], "64", "low-water mark (free blocks) in {table}");

    let volume = format!("{tag}-vol");
    d.ok(&["create", &volume, "--size", "200M"]);
    let mount = d.ok(&["mount", &volume]);
    // Let the watcher's first looks pass, so that what follows is the event's doing.
    std::thread::sleep(Duration::from_secs(2));
    let before = events(&pool);
    let start = Instant::now();
    std::fs::write(Path::new(&mount).join("fill"), vec![0xa5u8; 150 << 20]).unwrap();
    run("sync", &["-f", &mount]);
    assert!(events(&pool) > before, "the kernel raised no pool event");
    // The watcher logs the crossing. Its periodic look is every 30 s; the event wakes it at
    // once. A deadline under 30 s tells the two apart (a deadline, not a speed measurement).
    let deadline = start + Duration::from_secs(20);
    loop {
        let log = d.log();
        if log.contains("at or above dm.fillwarn=50%") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no crossing logged within 20 s of the writes:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    d.ok(&["umount", &volume]);
    d.ok(&["delete", &volume]);
}
