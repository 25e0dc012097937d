//! The backup-target conformance suite, request counts: what an operation costs in requests
//! must not grow with the store. Each case runs on `vfs://` and on S3 (see `support`).

// The API takes a list of byte ranges; one range is the common case.
#![allow(clippy::single_range_in_vec_init)]

use crate::support;

use convoy_backupstore::{
    BackupRef, BackupTarget, KdfParams, NoProgress, SecretSource, TargetOptions,
};
use support::*;
use zeroize::Zeroizing;

const C: u64 = CHUNK as u64;

/// An incremental backup of `changed` in `img` (of volume `volume`) over `parent`, named `name`
/// (`None`: a name made for it, as `convoy backup create` gives).
async fn incremental_of(
    t: &BackupTarget,
    img: &Image,
    volume: &str,
    parent: &BackupRef,
    changed: std::ops::Range<u64>,
    name: Option<String>,
) -> convoy_backupstore::BackupOutcome {
    let mut m = meta(volume, img.size);
    m.backup_name = name;
    let out = t
        .backup(
            img.file.clone(),
            &[changed],
            Some(&parent.backup),
            m,
            &NoProgress,
        )
        .await
        .unwrap();
    // Its lock record's removal, which the backup does not wait for, counts as one of its
    // requests.
    t.settle().await;
    out
}

/// `backup` restores to what `img` holds now.
async fn assert_restores(t: &BackupTarget, backup: &BackupRef, img: &Image, what: &str) {
    let (got, _) = restore_bytes(t, backup, img.size).await.unwrap();
    assert!(got == img.bytes(), "{what} restores");
}

/// Deleting one backup costs the same number of requests whether the store holds 10 backups
/// or 100 (counted by the target itself: every object call, listing call and part).
async fn delete_cost_is_flat(env: Env) {
    let seed = env.seeding_target();
    let t = env.target();
    let size = 8 * C;
    let img = Image::new(size, 11);
    let mut names = Vec::new();
    let mut add = |n: usize| {
        let (seed, img) = (seed.clone(), &img);
        let start = names.len();
        names.extend((start..start + n).map(|i| format!("b{i:03}")));
        let names = names.clone();
        async move {
            for i in start..start + n {
                img.write((i as u64 % 8) * C, &noise(C as usize, 1000 + i as u64));
                let mut m = meta("flat", size);
                m.backup_name = Some(names[i].clone());
                let parent = (i > 0).then(|| names[i - 1].clone());
                let ranges = if i == 0 {
                    vec![0..size]
                } else {
                    vec![(i as u64 % 8) * C..(i as u64 % 8 + 1) * C]
                };
                seed.backup(img.file.clone(), &ranges, parent.as_deref(), m, &NoProgress)
                    .await
                    .unwrap();
            }
        }
    };
    add(10).await;
    // The target reads the store's marker once, on first use (to open an encrypted store).
    t.inspect(&BackupRef::new("flat", "b001").unwrap())
        .await
        .unwrap();
    let before = t.requests();
    t.delete(&BackupRef::new("flat", "b005").unwrap())
        .await
        .unwrap();
    let at_10 = t.requests() - before;
    add(90).await;
    let before = t.requests();
    t.delete(&BackupRef::new("flat", "b050").unwrap())
        .await
        .unwrap();
    let at_100 = t.requests() - before;
    assert!(at_10 > 5, "{at_10}");
    assert_eq!(
        at_10, at_100,
        "delete requests: {at_10} among 10 backups, {at_100} among 100"
    );
    let last = BackupRef::new("flat", "b099").unwrap();
    let (got, _) = restore_bytes(&t, &last, size).await.unwrap();
    assert!(got == img.bytes());
}

/// A target that wrote a backup's packs keeps their indexes in its cache: the next backup's
/// requests do not grow with how many packs the store holds (before, an incremental backup
/// read the tail of every pack its parent had just written: a GET per pack on S3).
async fn own_packs_are_cached(env: Env) {
    let caches = tempfile::tempdir().unwrap();
    let mut opts = env.opts.clone();
    opts.cache_dir = Some(caches.path().join("cache"));
    let t = BackupTarget::open(&env.dest, opts).unwrap();
    let mut requests = Vec::new();
    for (volume, chunks) in [("few", 64u64), ("many", 512)] {
        let size = chunks * C;
        let img = Image::new(size, chunks);
        let full = full_backup(&t, &img, volume).await;
        assert!(
            full.stats.packs_uploaded >= chunks / 32,
            "{volume}: {:?}",
            full.stats
        );
        img.write(C, &noise(C as usize, 7 + chunks));
        let before = t.requests();
        let name = Some(format!("{volume}-inc"));
        let inc = incremental_of(&t, &img, volume, &full.backup, C..2 * C, name).await;
        requests.push(t.requests() - before);
        assert_restores(&t, &inc.backup, &img, &format!("{volume}: the incremental")).await;
    }
    assert_eq!(
        requests[0], requests[1],
        "incremental backup requests after a full backup of few packs and of many"
    );
}

/// A backup whose name the caller gave asks whether the name is taken, before it writes and
/// again before it publishes (S3: a `HEAD` each; `vfs://` needs only the first, its publishing
/// link refuses an existing name). A backup named for it (64 random bits) asks neither: two
/// requests less on S3 (a full backup of 1 GiB sent 65 where restic sent 43 or 44).
async fn a_backup_named_for_it_does_not_ask_for_its_name(env: Env) {
    // With a cache, the second backup does not read the index of the pack the first wrote.
    let caches = tempfile::tempdir().unwrap();
    let mut opts = env.opts.clone();
    opts.cache_dir = Some(caches.path().join("cache"));
    let t = BackupTarget::open(&env.dest, opts).unwrap();
    let size = 8 * C;
    let img = Image::new(size, 8);
    let full = full_backup(&t, &img, "names").await;
    let mut sent = Vec::new();
    for (i, name) in [Some("given".to_string()), None].into_iter().enumerate() {
        // New data each time, so that each uploads one pack.
        img.write(C, &noise(C as usize, 100 + i as u64));
        let before = t.requests();
        let inc = incremental_of(&t, &img, "names", &full.backup, C..2 * C, name).await;
        sent.push(t.requests() - before);
        assert_eq!(inc.stats.blocks_uploaded, 1, "{:?}", inc.stats);
        assert_restores(&t, &inc.backup, &img, "the incremental").await;
    }
    let asks = if env.dest.starts_with("vfs://") { 1 } else { 2 };
    assert_eq!(
        sent[0],
        sent[1] + asks,
        "requests of an incremental with a given name, and with a name made for it"
    );
}

conformance!(
    delete_cost_is_flat,
    own_packs_are_cached,
    a_backup_named_for_it_does_not_ask_for_its_name
);

/// Waves of requests (round trips) an incremental backup of one changed chunk waits for on
/// S3, counted at a server that holds every request for 100 ms, far above the client's own work
/// between them (tiny chunks). `opts` opens the store (`seed` has made it, with the same cache
/// directory); a new target makes the incremental, as a new `convoy backup create` process (or
/// the daemon, per command) opens one. The incremental is checked to restore.
async fn incremental_waves(env: &Env, seed: &BackupTarget, opts: TargetOptions) -> u64 {
    let size = 16 * C;
    let img = Image::new(size, 5);
    let full = full_backup(seed, &img, "waves").await;
    img.write(3 * C, &noise(C as usize, 99));
    let t = BackupTarget::open(&env.dest, opts).unwrap();
    env.waves().set_delay(std::time::Duration::from_millis(100));
    let before = env.waves().count();
    // Named for it, as the daemon's backups are: its lock record's removal is not waited for
    // (counted only once the backup has returned).
    let inc = t
        .backup(
            img.file.clone(),
            &[3 * C..4 * C],
            Some(&full.backup.backup),
            meta("waves", img.size),
            &NoProgress,
        )
        .await
        .unwrap();
    let waves = env.waves().count() - before;
    t.settle().await;
    env.waves().set_delay(std::time::Duration::ZERO);
    eprintln!("the incremental waited for {waves} round trips");
    assert_eq!(inc.stats.blocks_uploaded, 1, "{:?}", inc.stats);
    assert_restores(&t, &inc.backup, &img, "the incremental").await;
    waves
}

/// An incremental backup after a small change waits for four round trips on S3, one after
/// another: the lock's write, and beside it the store marker's read and the first reads
/// (marker with its deletion journal, the parent's manifest); the listing of locks, while the
/// changed chunk is read and packed; the writes (pack, its reference, the parent records) with
/// the checks of what the first reads answered (the parent, the journal); the manifest. Its lock
/// record's removal is sent after it returns. Before the requests were sent together it waited
/// for nine; before the first reads went out beside the lock and the store index came from the
/// journal instead of a listing, six; before the parent's manifest was read beside the marker
/// and the lock's removal was left to the background, five.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_waits_for_four_round_trips() {
    let env = Env::s3().await;
    let caches = tempfile::tempdir().unwrap();
    let mut opts = env.opts.clone();
    opts.cache_dir = Some(caches.path().join("cache"));
    let seed = BackupTarget::open(&env.dest, opts.clone()).unwrap();
    let waves = incremental_waves(&env, &seed, opts).await;
    assert!(waves <= 4, "the incremental waited for {waves} round trips");
}

/// The same incremental on an encrypted store waits for one round trip more: the key is
/// opened before anything is written, and the key slots this host knows of (remembered in the
/// cache directory when `seed` made them) are read beside the listing of `keys/` and the
/// marker's read. Five (six before the lock's removal was left to the background); seven when
/// the slots were read after their listing, ten when the marker, the listing and each of the
/// two slots were read one after another (two slots, so that reading them one by one shows),
/// eight before the first reads went out beside the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_incremental_waits_for_five_round_trips() {
    let env = Env::s3().await;
    let caches = tempfile::tempdir().unwrap();
    let pass = |p: &str| SecretSource::Passphrase(Zeroizing::new(p.into()));
    let mut opts = env.opts.clone();
    opts.cache_dir = Some(caches.path().join("cache"));
    opts.secret = Some(pass("pw"));
    opts.kdf = KdfParams::insecure_fast();
    let seed = BackupTarget::open(&env.dest, opts.clone()).unwrap();
    seed.init(true).await.unwrap();
    seed.key_add(&pass("second")).await.unwrap();
    // The derived key is kept by the process, as the daemon keeps it.
    let waves = incremental_waves(&env, &seed, opts).await;
    assert!(
        waves <= 5,
        "the encrypted incremental waited for {waves} round trips"
    );
}
