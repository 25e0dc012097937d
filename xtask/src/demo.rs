//! `cargo xtask demo`: convoy's main job on an embedded default, on a real dm-thin kernel.
//!
//! The host side builds the `convoy` binary and boots the VM; inside it, this same xtask binary
//! (visible through the 9p share) runs the hidden `demo-guest` task, which drives the `convoy`
//! CLI exactly as a user would: a daemon on a loopback pool, a volume with files, a snapshot, a
//! backup to a local `vfs://` folder, more writes, an incremental backup, both backups restored
//! into new volumes and verified file by file. It prints each step with its time and the sizes.

use crate::vm::{self, shell_quote, GuestRun, Mode};
use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Runs `cargo xtask demo` on the host.
pub fn run() -> Result<bool> {
    crate::prereq::ensure(crate::prereq::Level::Demo, true)?;
    println!("demo: building convoy");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--quiet", "-p", "convoy"])
        .current_dir(vm::repo_root())
        .status()
        .context("running cargo build")?;
    ensure!(status.success(), "building convoy failed");
    let xtask = std::env::current_exe().context("locating the xtask binary")?;
    let convoy = target_dir().join("debug").join("convoy");
    ensure!(convoy.is_file(), "no convoy binary at {}", convoy.display());
    println!("demo: booting the VM (real dm-thin kernel)");
    let guest = GuestRun {
        script_body: format!(
            "{}export CONVOY_DEMO_BIN={}\nexec {} demo-guest\n",
            vm::SCRATCH_TMP_SCRIPT,
            shell_quote(&convoy.to_string_lossy()),
            shell_quote(&xtask.to_string_lossy())
        ),
        disk_sizes: vec![vm::SCRATCH_DISK_BYTES],
        disk_files: Vec::new(),
        timeout: Duration::from_secs(1200),
        memory_mib: 2048,
        mode: Mode::Batch,
        verbose: false,
    };
    let outcome = vm::boot(&guest, &mut |line| println!("{line}"))?;
    Ok(outcome.exit_status == 0)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| vm::repo_root().join("target"))
}

/// The loop devices, daemon and mounts of the demo; torn down in reverse order on drop.
struct Stage {
    convoy: PathBuf,
    socket: PathBuf,
    daemon: Option<Child>,
    loops: Vec<String>,
}

impl Stage {
    /// Runs `convoy --socket S ARGS...` and returns its trimmed stdout, failing with its output.
    fn convoy(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.convoy)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .with_context(|| format!("running convoy {}", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "`convoy {}` failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            // SIGTERM: the daemon shuts down gracefully.
            let _ = Command::new("kill").arg(daemon.id().to_string()).status();
            let _ = daemon.wait();
        }
        let _ = Command::new("dmsetup")
            .args(["remove_all", "--force"])
            .status();
        for dev in self.loops.iter().rev() {
            let _ = Command::new("losetup").args(["-d", dev]).status();
        }
    }
}

/// Runs the demo inside the guest (`xtask demo-guest`).
pub fn guest() -> Result<bool> {
    // It removes every dm device and loop device it made with a broad brush: guest only.
    ensure!(
        std::env::var_os("CONVOY_VM").is_some(),
        "demo-guest runs only inside the VM; use `cargo xtask demo`"
    );
    let convoy = PathBuf::from(std::env::var("CONVOY_DEMO_BIN").context("CONVOY_DEMO_BIN unset")?);
    let dir_buf = std::env::temp_dir().join("convoy-demo");
    let dir = dir_buf.as_path();
    fs::create_dir_all(dir.join("root"))?;
    let mut steps: Vec<(String, Duration)> = Vec::new();
    let mut timed = |name: &str, started: Instant| {
        let took = started.elapsed();
        println!("demo: {name:<48} {:>7.2} s", took.as_secs_f64());
        steps.push((name.to_string(), took));
    };

    // A loopback pool, as `cargo xtask dev-pool` makes on a host with device-mapper.
    let t = Instant::now();
    let mut stage = Stage {
        convoy,
        socket: dir.join("convoy.sock"),
        daemon: None,
        loops: Vec::new(),
    };
    for (file, size) in [("data.vol", 8u64 << 30), ("metadata.vol", 256 << 20)] {
        let path = dir.join(file);
        fs::File::create(&path)?.set_len(size)?;
        let out = Command::new("losetup")
            .arg("-f")
            .arg("--show")
            .arg(&path)
            .output()?;
        ensure!(out.status.success(), "losetup {} failed", path.display());
        stage
            .loops
            .push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    let (data_dev, meta_dev) = (stage.loops[0].clone(), stage.loops[1].clone());
    let log = fs::File::create(dir.join("daemon.log"))?;
    let daemon = Command::new(&stage.convoy)
        .arg("--socket")
        .arg(&stage.socket)
        .args(["daemon", "--root"])
        .arg(dir.join("root"))
        .args(["--drivers", "devicemapper"])
        .args(["--driver-opts", &format!("dm.datadev={data_dev}")])
        .args(["--driver-opts", &format!("dm.metadatadev={meta_dev}")])
        .args(["--driver-opts", "dm.defaultvolumesize=1G"])
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting convoy daemon")?;
    stage.daemon = Some(daemon);
    wait_for_daemon(&stage, dir)?;
    timed(
        &format!("daemon up on loopback pool ({data_dev}, {meta_dev})"),
        t,
    );

    let t = Instant::now();
    let name = stage.convoy(&["create", "demo-vol", "--size", "1G"])?;
    ensure!(
        name == "demo-vol",
        "create printed {name:?}, expected the volume's name"
    );
    let mountpoint = PathBuf::from(stage.convoy(&["mount", "demo-vol"])?);
    timed("create a 1 GiB volume (ext4) and mount it", t);

    let t = Instant::now();
    let written = write_files(&mountpoint, 0)?;
    let state1 = checksums(&mountpoint)?;
    timed(
        &format!("write {} files, {} MiB", state1.len(), written >> 20),
        t,
    );

    let t = Instant::now();
    stage.convoy(&["snapshot", "create", "demo-vol", "--name", "demo-snap-1"])?;
    timed("snapshot demo-snap-1", t);

    let dest = format!("vfs://{}", dir.join("backups").display());
    let t = Instant::now();
    let url1 = stage.convoy(&["backup", "create", "demo-snap-1", "--dest", &dest])?;
    timed("full backup of demo-snap-1 to vfs://", t);
    let size1 = du(&dir.join("backups"))?;
    println!(
        "demo:   backup URL {url1}\ndemo:   store holds {} KiB",
        size1 >> 10
    );

    let t = Instant::now();
    let written2 = write_files(&mountpoint, 1)?;
    let state2 = checksums(&mountpoint)?;
    stage.convoy(&["snapshot", "create", "demo-vol", "--name", "demo-snap-2"])?;
    timed(
        &format!("write {} MiB more, snapshot demo-snap-2", written2 >> 20),
        t,
    );

    let t = Instant::now();
    let url2 = stage.convoy(&["backup", "create", "demo-snap-2", "--dest", &dest])?;
    timed("incremental backup of demo-snap-2", t);
    let size2 = du(&dir.join("backups"))?;
    println!(
        "demo:   backup URL {url2}\ndemo:   store grew by {} KiB to {} KiB",
        (size2.saturating_sub(size1)) >> 10,
        size2 >> 10
    );

    for (i, (url, expected)) in [(&url1, &state1), (&url2, &state2)].into_iter().enumerate() {
        let restored = format!("demo-restore-{}", i + 1);
        let t = Instant::now();
        stage.convoy(&["create", &restored, "--backup", url])?;
        let mp = PathBuf::from(stage.convoy(&["mount", &restored])?);
        timed(&format!("restore backup {} into {restored}", i + 1), t);
        let got = checksums(&mp)?;
        ensure!(
            &got == expected,
            "{restored} differs from the volume at backup {}: {} files expected, {} found",
            i + 1,
            expected.len(),
            got.len()
        );
        println!(
            "demo:   {restored}: all {} files match the snapshot",
            got.len()
        );
        stage.convoy(&["umount", &restored])?;
    }

    let t = Instant::now();
    stage.convoy(&["umount", "demo-vol"])?;
    stage.convoy(&["delete", "demo-vol", "demo-restore-1", "demo-restore-2"])?;
    timed("unmount and delete the volumes", t);
    let total: Duration = steps.iter().map(|(_, d)| *d).sum();
    println!(
        "demo: done in {:.1} s; every restored file verified",
        total.as_secs_f64()
    );
    Ok(true)
}

fn wait_for_daemon(stage: &Stage, dir: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if stage.convoy(&["info"]).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            let log = fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
            bail!("convoy daemon did not answer within 120 s; its log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Writes a deterministic mix of files (text and incompressible data); `round` 1 rewrites part
/// of the big file and adds files. Returns the bytes written.
fn write_files(dir: &Path, round: u32) -> Result<u64> {
    let docs = dir.join("docs");
    fs::create_dir_all(&docs)?;
    let mut written = 0u64;
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ u64::from(round + 1));
    let count = if round == 0 { 200 } else { 50 };
    for i in 0..count {
        let mut f = fs::File::create(docs.join(format!("note-{round}-{i:03}.txt")))?;
        let line =
            format!("convoy demo round {round}, note {i}: thin volumes, snapshots, backups\n");
        let body = line.repeat(40 + i % 60);
        f.write_all(body.as_bytes())?;
        written += body.len() as u64;
    }
    let big = dir.join("data.bin");
    let mut f = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&big)?;
    let (start, len) = if round == 0 {
        (0u64, 48u64 << 20)
    } else {
        (16 << 20, 4 << 20)
    };
    let mut buf = vec![0u8; 1 << 20];
    for mib in 0..(len >> 20) {
        rng.fill(&mut buf);
        use std::io::{Seek, SeekFrom};
        f.seek(SeekFrom::Start(start + (mib << 20)))?;
        f.write_all(&buf)?;
        written += buf.len() as u64;
    }
    f.sync_all()?;
    let status = Command::new("sync").status()?;
    ensure!(status.success(), "sync failed");
    Ok(written)
}

/// Relative path → `sha256sum` of every file under `dir`.
fn checksums(dir: &Path) -> Result<BTreeMap<String, String>> {
    let out = Command::new("sh")
        .arg("-c")
        .arg("find . -type f ! -path './lost+found/*' -print0 | sort -z | xargs -0 -r sha256sum")
        .current_dir(dir)
        .output()?;
    ensure!(
        out.status.success(),
        "checksumming {} failed",
        dir.display()
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once("  "))
        .map(|(sum, path)| (path.to_string(), sum.to_string()))
        .collect())
}

fn du(path: &Path) -> Result<u64> {
    let out = Command::new("du").arg("-sb").arg(path).output()?;
    ensure!(out.status.success(), "du {} failed", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .context("du printed no size")
}

/// A small deterministic generator for incompressible demo data.
struct XorShift(u64);

impl XorShift {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let bytes = self.0.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}
