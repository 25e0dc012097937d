//! VM tier: a device made over another block device and handed over to a thin device while
//! its filesystem is mounted and written (the end of an instant restore). The stand-in for the
//! userspace device is a second activation path onto the same thin device: the front device
//! starts as `linear` over the hidden thin device and ends as that thin device itself.
//! Needs a dm-thin kernel: `cargo xtask test`.

mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{mkfs_ext4, run, Fixture, Mount, MIB};
use convoy_thinpool::{Error, Sectors, ThinId, ThinPool};

#[test]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
fn dm_handover_from_linear_to_thin_under_a_writer() {
    let fx = Fixture::new("ho", 128 * MIB, 8 * MIB);
    let pool = ThinPool::create(fx.config()).unwrap();
    let id = ThinId::new(1).unwrap();
    let size = Sectors(64 * MIB / 512);
    pool.create_thin(id).unwrap();
    let hidden = pool.activate(id, "ctp-ho-hidden", size).unwrap();
    mkfs_ext4(&hidden.path);

    let front = pool
        .activate_over("ctp-ho-front", hidden.device, size)
        .unwrap();
    assert!(run("dmsetup", &["table", "ctp-ho-front"]).contains(" linear "));
    let err = pool
        .activate_over("ctp-ho-front", hidden.device, size)
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");

    let dir = fx.subdir("mnt");
    let mount = Mount::new(&front, &dir, "rw");
    std::fs::write(dir.join("before"), b"written through the linear table").unwrap();

    // A writer appends numbered, fsynced records the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let path = dir.join("log");
    let writer = {
        let (stop, path) = (stop.clone(), path.clone());
        thread::spawn(move || {
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) || n < 200 {
                writeln!(f, "record {n:08}").unwrap();
                f.sync_data().unwrap();
                n += 1;
            }
            n
        })
    };
    thread::sleep(Duration::from_millis(200));
    let thin = pool.hand_over_to_thin("ctp-ho-front", id, size).unwrap();
    assert_eq!(thin.id, id);
    let table = run("dmsetup", &["table", "ctp-ho-front"]);
    assert!(
        table.contains(" thin ") && !table.contains("linear"),
        "{table}"
    );
    // Again: already handed over, nothing to do.
    pool.hand_over_to_thin("ctp-ho-front", id, size).unwrap();
    thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();

    // The hidden device is no longer in the front's path: it can go while the front is used.
    let err = pool.remove_device("ctp-ho-front").unwrap_err();
    assert!(matches!(err, Error::Busy { .. }), "{err}");
    pool.remove_device("ctp-ho-hidden").unwrap();
    pool.remove_device("ctp-ho-hidden").unwrap();
    std::fs::write(dir.join("after"), b"written through the thin table").unwrap();
    drop(mount);

    // Everything is on the thin device: activate it again alone and read it all back.
    pool.deactivate("ctp-ho-front").unwrap();
    let again = pool.activate(id, "ctp-ho-again", size).unwrap();
    let _m = Mount::new(&again.path, &dir, "ro");
    assert_eq!(
        std::fs::read(dir.join("before")).unwrap(),
        b"written through the linear table"
    );
    assert_eq!(
        std::fs::read(dir.join("after")).unwrap(),
        b"written through the thin table"
    );
    let log = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        lines.len() as u64,
        written,
        "records lost across the handover"
    );
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(*l, format!("record {i:08}"));
    }
}
