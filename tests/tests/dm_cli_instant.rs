//! VM tier: instant restore with the CLI (`convoy create NAME --backup URL --instant`) on a
//! real pool: a 4 GiB ext4 volume with data is backed up to `vfs://` and to S3
//! (`convoy-test-s3`) and restored instantly from each; the new volume is mounted and every
//! file compared while the fill runs; writes made during the fill survive it; operations that
//! need the whole volume are refused while it fills, and so is deleting the backup; on S3 the
//! daemon is killed with SIGKILL mid-fill and the next start resumes the fill with the
//! filesystem still mounted; once filled, the volume's device is its thin device, the fill's
//! devices are gone and the data is the same after a remount. An encrypted `vfs://` store is
//! browsed and restored instantly the same way. With the S3 server down mid-fill, a read of
//! a chunk not yet filled fails with EIO (never wrong data), `inspect` says the fill is
//! retrying, and once the server is back the read answers the backup's bytes and the fill
//! completes.
//!
//! The fill is paced by `CONVOY_TEST_FILL_PAUSE_MS` (one run of chunks at a time) so that a
//! few hundred MiB still take several seconds: the test can act while it runs.

mod cli_support;

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cli_support::TestDaemon;
use convoy_e2e::{dm_names, noise, run, tree_files as files, DmDisks, S3Process};

/// Small text files in a tree, a 10 MiB file, a random one of `big_mib` MiB.
fn fill(at: &Path, seed: u64, big_mib: usize) {
    std::fs::create_dir_all(at.join("etc/deep")).unwrap();
    for i in 0..20u64 {
        std::fs::write(
            at.join(format!("etc/deep/conf{i}.txt")),
            format!("line {i} of seed {seed}\n").repeat(50),
        )
        .unwrap();
    }
    std::fs::write(at.join("ten_mib.bin"), noise(seed, 10 << 20)).unwrap();
    std::fs::write(at.join("big.bin"), noise(seed + 1, big_mib << 20)).unwrap();
}

static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// Where the test's time went: written to the process's standard error directly, which
/// libtest does not capture, so that the VM tier's log shows it whether the test passes or not.
fn mark(what: &str) {
    use std::io::Write;
    let line = format!(
        "TIMING {:>7.1?} {what}\n",
        T0.get_or_init(Instant::now).elapsed()
    );
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

fn driver_info(d: &TestDaemon, vol: &str) -> serde_json::Value {
    d.json(&["inspect", vol])["DriverInfo"].clone()
}

/// Waits until the volume's fill is over (no `InstantRestore` in `inspect`).
fn wait_filled(d: &TestDaemon, vol: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let info = driver_info(d, vol);
        if info.get("InstantRestore").is_none() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "fill of {vol} not done in 300 s: {info}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Writes made during the fill: a new file, and the first 4 KiB of `ten_mib.bin` replaced
/// (a partial write of a chunk the fill may not have copied yet). Synced. Updates `want`.
fn write_during_fill(at: &Path, want: &mut BTreeMap<PathBuf, Vec<u8>>, seed: u64) {
    let new = noise(seed + 100, 3 << 20);
    std::fs::write(at.join(format!("during-{seed}.bin")), &new).unwrap();
    want.insert(PathBuf::from(format!("during-{seed}.bin")), new);
    let patch = vec![seed as u8; 4096];
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(at.join("ten_mib.bin"))
        .unwrap();
    f.write_all_at(&patch, 0).unwrap();
    f.sync_all().unwrap();
    want.get_mut(Path::new("ten_mib.bin")).unwrap()[..4096].copy_from_slice(&patch);
    run("sync", &["-f", at.to_str().unwrap()]);
}

/// Restores `url` instantly into `vol` and checks it during and after the fill; with `kill`,
/// kills the daemon mid-fill and checks the restart resumes it.
fn instant_case(
    d: &mut TestDaemon,
    tag: &str,
    url: &str,
    vol: &str,
    want: &BTreeMap<PathBuf, Vec<u8>>,
    kill: bool,
) {
    let mut want = want.clone();
    mark("case start");
    let t0 = Instant::now();
    d.ok(&["create", vol, "--backup", url, "--instant"]);
    let at = PathBuf::from(d.ok(&["mount", vol]));
    let first = std::fs::read(at.join("etc/deep/conf3.txt")).unwrap();
    eprintln!(
        "instant restore of {url}: first file read {:?} after the command",
        t0.elapsed()
    );
    assert_eq!(first, want[Path::new("etc/deep/conf3.txt")]);

    let info = driver_info(d, vol);
    assert_eq!(info["InstantRestore"], url, "{info}");
    assert!(info["FillChunks"].as_str().is_some(), "{info}");
    let device = info["Device"].as_str().unwrap().to_owned();
    let table = run(
        "dmsetup",
        &["table", device.trim_start_matches("/dev/mapper/")],
    );
    assert!(
        table.contains("linear"),
        "during the fill {device} is {table}"
    );

    // Refused while it fills: what needs the whole volume, and the backup's removal.
    let e = d.fail(&["snapshot", "create", vol]);
    assert!(e.contains("instant restore"), "{e}");
    let e = d.fail(&["expand", vol, "--size", "5G"]);
    assert!(e.contains("instant restore"), "{e}");
    let e = d.fail(&["backup", "delete", url]);
    assert!(e.contains("instant restore"), "{e}");

    mark("refusals done");
    write_during_fill(&at, &mut want, 1);
    mark("written");

    if kill {
        let before = driver_info(d, vol);
        assert!(
            before.get("InstantRestore").is_some(),
            "the fill ended before the kill: pace it more ({before})"
        );
        d.kill9_and_restart();
        mark("restarted");
        // Still mounted, served again by the new daemon.
        assert_eq!(files(&at), want, "files after the restart differ");
        mark("compared after restart");
        write_during_fill(&at, &mut want, 2);
        assert!(
            d.log().contains("resumed"),
            "no resume in the log:\n{}",
            d.log()
        );
    } else {
        assert_eq!(files(&at), want, "files read during the fill differ");
        mark("files compared");
    }

    wait_filled(d, vol);
    mark("filled");
    let table = run(
        "dmsetup",
        &["table", device.trim_start_matches("/dev/mapper/")],
    );
    assert!(
        table.contains(" thin "),
        "after the fill {device} is {table}"
    );
    assert!(
        !dm_names(tag).iter().any(|n| n.contains("-fill-")),
        "fill devices left: {:?}",
        dm_names(tag)
    );
    assert_eq!(files(&at), want, "files after the fill differ");
    d.ok(&["umount", vol]);
    d.ok(&["mount", vol]);
    assert_eq!(files(&at), want, "files after a remount differ");
    // An ordinary volume now.
    let snap = format!("{vol}-after");
    d.ok(&["snapshot", "create", vol, "--name", &snap]);
    d.ok(&["snapshot", "delete", &snap]);
    d.ok(&["umount", vol]);
    d.ok(&["delete", vol]);
    mark("case end");
}

/// Byte offset of ext4's backup superblock in block group 7 (4 KiB blocks, 32768 blocks a
/// group): 896 MiB into a 1 GiB volume, past where a paced fill gets in its first seconds,
/// and never a hole.
const GROUP_7: u64 = 7 * 32768 * 4096;

/// Reads the 4 KiB at [`GROUP_7`] of `device` past the page cache (`O_DIRECT`).
fn read_group_7(device: &str) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(device)?;
    let mut buf = vec![0u8; 2 * 4096];
    let start = buf.as_ptr().align_offset(4096);
    let aligned = &mut buf[start..start + 4096];
    f.read_exact_at(aligned, GROUP_7)?;
    Ok(aligned.to_vec())
}

/// Restores `url` (on `s3`, a backup of a 1 GiB ext4 volume) instantly into `vol`, left
/// unmounted (no filesystem I/O of its
/// own meets the outage), then stops the server: a read of a chunk not filled yet fails with
/// EIO and the fill says it is retrying; with the server back, the read answers the backup's
/// bytes (an ext4 backup superblock) and the fill completes with every file intact.
fn store_down_case(
    d: &TestDaemon,
    s3: &mut S3Process,
    url: &str,
    vol: &str,
    want: &BTreeMap<PathBuf, Vec<u8>>,
) {
    mark("store-down case start");
    d.ok(&["create", vol, "--backup", url, "--instant"]);
    s3.kill9();
    let device = driver_info(d, vol)["Device"].as_str().unwrap().to_owned();
    let e = read_group_7(&device).expect_err("a read of an unfilled chunk with the store down");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    mark("read failed with EIO");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let info = driver_info(d, vol);
        let state = info["FillState"].as_str().unwrap_or_default().to_owned();
        if state.starts_with("retrying") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the fill never said it retries: {info}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    s3.spawn();
    mark("store back");
    let block = read_group_7(&device).expect("the same read with the store back");
    assert_eq!(
        block[0x38..0x3A],
        [0x53, 0xEF],
        "no ext4 superblock magic at group 7"
    );
    wait_filled(d, vol);
    let at = PathBuf::from(d.ok(&["mount", vol]));
    assert_eq!(
        &files(&at),
        want,
        "files after a fill through an outage differ"
    );
    d.ok(&["umount", vol]);
    d.ok(&["delete", vol]);
    mark("store-down case end");
}

#[test]
#[ignore = "needs a dm-thin kernel and nbd: run by cargo xtask test"]
fn dm_cli_instant_restore_from_vfs_and_s3() {
    let disks = DmDisks::new("cvi", 12 << 30, 128 << 20);
    let tag = disks.tag.clone();
    let s3_dir = tempfile::tempdir().unwrap();
    let mut s3 = S3Process::start(s3_dir.path());
    // The daemon inherits these (no other test of this binary reads them).
    for (k, v) in s3.env() {
        std::env::set_var(k, v);
    }
    std::env::set_var("CONVOY_TEST_FILL_PAUSE_MS", "400");
    // A fetch from a store that is down fails after 3 s of retries instead of 30.
    std::env::set_var("CONVOY_TEST_FETCH_RETRY_MS", "3000");
    mark("start");
    let mut d = TestDaemon::start_with(&[], |_| disks.daemon_flags(&[]));
    mark("daemon up");

    let vol = format!("{tag}-src");
    d.ok(&["create", &vol, "--size", "4G"]);
    let at = PathBuf::from(d.ok(&["mount", &vol]));
    fill(&at, 7, 200);
    let snap = format!("{tag}-s1");
    d.ok(&["snapshot", "create", &vol, "--name", &snap]);
    let want = files(&at);
    d.ok(&["umount", &vol]);
    // A small volume for the outage and the encrypted store: what they prove does not need
    // 4 GiB, and reading 200 MiB through a filling volume takes tens of seconds in the VM.
    let small = format!("{tag}-small");
    d.ok(&["create", &small, "--size", "1G"]);
    let at = PathBuf::from(d.ok(&["mount", &small]));
    fill(&at, 8, 16);
    let small_snap = format!("{tag}-s2");
    d.ok(&["snapshot", "create", &small, "--name", &small_snap]);
    let small_want = files(&at);
    d.ok(&["umount", &small]);

    let vfs_dest = format!("vfs://{}", d.dir.path().join("backups").display());
    let vfs_url = d.ok(&["backup", "create", &snap, "--dest", &vfs_dest]);
    mark("data written");
    let s3_url = d.ok(&["backup", "create", &snap, "--dest", &s3.dest("instant")]);
    let small_s3_url = d.ok(&[
        "backup",
        "create",
        &small_snap,
        "--dest",
        &s3.dest("instant"),
    ]);
    mark("backups made");

    // Not without a backup.
    let out = d.convoy(&["create", &format!("{tag}-x"), "--instant"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("--backup"), "{e}");

    instant_case(&mut d, &tag, &vfs_url, &format!("{tag}-rv"), &want, false);
    instant_case(&mut d, &tag, &s3_url, &format!("{tag}-rs"), &want, true);

    store_down_case(
        &d,
        &mut s3,
        &small_s3_url,
        &format!("{tag}-rd"),
        &small_want,
    );

    // An encrypted store: the daemon restarted with its passphrase (a daemon with a key backs
    // up to encrypted stores only), a backup made, browsed, then restored instantly (paced
    // more: the small volume's fill must still run when the test looks).
    let pass = d.dir.path().join("passphrase");
    std::fs::write(&pass, "instant restore test passphrase\n").unwrap();
    let pass = pass.to_str().unwrap().to_owned();
    let enc_dest = format!("vfs://{}", d.dir.path().join("sealed").display());
    d.ok(&[
        "backup",
        "init",
        &enc_dest,
        "--encrypt",
        "--passphrase-file",
        &pass,
    ]);
    std::env::set_var("CONVOY_TEST_FILL_PAUSE_MS", "2000");
    d.restart_with(&["--backup-passphrase-file", &pass]);
    let enc_url = d.ok(&["backup", "create", &small_snap, "--dest", &enc_dest]);
    mark("encrypted backup made");
    let look = d.dir.path().join("look");
    std::fs::create_dir(&look).unwrap();
    d.ok(&["backup", "mount", &enc_url, look.to_str().unwrap()]);
    assert_eq!(
        files(&look),
        small_want,
        "browsed files of the encrypted backup differ"
    );
    d.ok(&["backup", "umount", look.to_str().unwrap()]);
    mark("encrypted backup browsed");
    instant_case(
        &mut d,
        &tag,
        &enc_url,
        &format!("{tag}-re"),
        &small_want,
        false,
    );
    mark("encrypted store done");

    // Nothing depends on the backups any more.
    d.ok(&["backup", "delete", &enc_url]);
    d.restart();
    for url in [&vfs_url, &s3_url, &small_s3_url] {
        d.ok(&["backup", "delete", url]);
    }
    d.ok(&["delete", &vol]);
    d.ok(&["delete", &small]);
    mark("end");
}
