//! The load a power cut interrupts: writers and the snapshot/backup loop.

use super::*;

/// The load: writers and the snapshot/backup loop, until the power goes (or `LOAD_CAP`).
pub(super) fn run_load(boot: u64) {
    let d = Arc::new(Daemon::start());
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for vol in VOLUMES {
        let mp = PathBuf::from(d.ok(&["mount", vol]));
        let next = log_lines(&acks_path(vol))
            .iter()
            .filter_map(|l| l.split_once(' ')?.1.parse::<u64>().ok())
            .max()
            .map_or(0, |m| m + 1);
        let (stop, acked) = (stop.clone(), acked.clone());
        workers.push(thread::spawn(move || writer(vol, &mp, next, &stop, &acked)));
    }
    {
        let (d, stop) = (d.clone(), stop.clone());
        workers.push(thread::spawn(move || backups(&d, boot, &stop)));
    }
    while acked.load(Ordering::SeqCst) < VOLUMES.len() as u64 {
        assert!(
            !workers.iter().any(|w| w.is_finished()),
            "a load thread stopped early"
        );
        thread::sleep(Duration::from_millis(20));
    }
    println!("{READY} boot {boot}: writers and backups running");
    let started = Instant::now();
    while started.elapsed() < LOAD_CAP && !workers.iter().any(|w| w.is_finished()) {
        thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().expect("a load thread failed");
    }
    println!("powercut: the load ran {LOAD_CAP:?} without being cut");
}

/// Writes records (each fdatasync'd, then its id logged and fsync'd) and replaces files by
/// rename (file fsync'd, renamed, directory fsync'd, then logged).
fn writer(vol: &str, mp: &Path, first: u64, stop: &AtomicBool, acked: &AtomicU64) {
    let files = mp.join("files");
    fs::create_dir_all(&files).unwrap();
    let data = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(mp.join("records.dat"))
        .unwrap();
    sync_dir(mp);
    let mut acks = OpenOptions::new()
        .append(true)
        .open(acks_path(vol))
        .unwrap();
    let mut ack = |line: String| {
        acks.write_all(line.as_bytes()).unwrap();
        acks.sync_data().unwrap();
    };
    for id in first.. {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        data.write_all_at(&record(vol, id), (id % SLOTS) * RECORD as u64)
            .unwrap();
        data.sync_data().unwrap();
        ack(format!("r {id}\n"));
        if id % FILE_EVERY == 0 {
            let tmp = files.join(".tmp");
            let mut f = File::create(&tmp).unwrap();
            f.write_all(&file_record(vol, id)).unwrap();
            f.sync_all().unwrap();
            fs::rename(
                &tmp,
                files.join(format!("f{}", (id / FILE_EVERY) % FILE_SLOTS)),
            )
            .unwrap();
            sync_dir(&files);
            ack(format!("f {id}\n"));
        }
        acked.fetch_add(1, Ordering::SeqCst);
    }
}

/// Snapshot, checksum, back up, delete the oldest; each result logged after the call returned.
fn backups(d: &Daemon, boot: u64, stop: &AtomicBool) {
    let mut events = Events::load();
    let mut r = rng(&format!("powercut-load-{boot}"));
    for n in 0.. {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let vol = VOLUMES[r.usize(..VOLUMES.len())];
        let snap = format!("pcs-{boot}-{n}");
        println!("{LOAD_MARK}snapshot {snap}");
        d.ok(&["snapshot", "create", vol, "--name", &snap]);
        events.record(&format!("snap {snap} {vol}"));
        println!("{LOAD_MARK}backup {snap}");
        let url = d.ok(&["backup", "create", &snap, "--dest", &dest()]);
        // Checksummed after the backup so that cuts land in uploads sooner; logged only now.
        let sha = snapshot_sha(d, &snap);
        events.record(&format!("backup {url} {vol} {snap} {sha}"));
        println!("{LOAD_MARK}delete old");
        let snaps = events.live_snaps(vol);
        for old in &snaps[..snaps.len().saturating_sub(KEEP_SNAPSHOTS)] {
            events.record(&format!("snap-deleting {old}"));
            d.ok(&["snapshot", "delete", old]);
            events.record(&format!("snap-deleted {old}"));
        }
        let urls = events.live_backups(vol);
        for old in &urls[..urls.len().saturating_sub(KEEP_BACKUPS)] {
            events.record(&format!("backup-deleting {old}"));
            d.ok(&["backup", "delete", old]);
            events.record(&format!("backup-deleted {old}"));
        }
    }
}
