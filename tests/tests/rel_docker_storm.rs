//! Reliability suite, concurrency (issue 8): Docker mount/unmount storms against a real
//! `dockerd` using convoy (vfs driver) as its volume plugin. Many `docker run --rm -v vol:/data`
//! containers at once on a few volumes, while raw plugin Mount/Unmount calls with random IDs hit
//! the same volumes; afterwards every volume is unmounted, no Docker reference is left (also
//! across a convoy restart) and every container's write is there.

mod cli_support;
mod rel_concurrency_rig;
mod rel_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cli_support::TestDaemon;
use rel_concurrency_rig::{assert_released, mount_storm};
use rel_support::{by_scale, rng, Figure};

/// Finds `program` in PATH (or at the given absolute path).
fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// A `dockerd` with its own data root, exec root and socket; stopped by PID when dropped.
struct Dockerd {
    child: Child,
    host: String,
    docker: PathBuf,
    log: PathBuf,
}

impl Dockerd {
    fn start(dir: &Path, dockerd: &Path) -> Self {
        let socket = dir.join("docker.sock");
        let log = dir.join("dockerd.log");
        let child = Command::new(dockerd)
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("--host")
            .arg(format!("unix://{}", socket.display()))
            .args(["--bridge", "none", "--iptables=false", "--ip-masq=false"])
            .args(["--storage-driver", "vfs"])
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(
                std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
            ))
            .spawn()
            .expect("cannot start dockerd");
        // The distribution's client matches its daemon's API; fall back to any docker in PATH.
        let docker = [PathBuf::from("/usr/bin/docker")]
            .into_iter()
            .find(|p| p.is_file())
            .or_else(|| find_program("docker"))
            .expect("dockerd is installed but no docker client was found");
        let mut daemon = Dockerd {
            child,
            host: format!("unix://{}", socket.display()),
            docker,
            log,
        };
        // Wait until it answers. The limit only turns a hang into a failure.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = daemon.child.try_wait().unwrap() {
                panic!("dockerd exited ({status}):\n{}", daemon.log());
            }
            if daemon.run(&["version"]).status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not start:\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        daemon
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.docker)
            .arg("-H")
            .arg(&self.host)
            .args(args)
            .output()
            .expect("cannot run docker")
    }

    /// Runs `docker args...`, panics with both logs on failure, returns stdout.
    fn ok(&self, args: &[&str], convoy: &TestDaemon) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed ({}):\n{}{}\n--- dockerd log:\n{}\n--- convoy log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log(),
            convoy.log()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let _ = self.child.wait();
    }
}

/// `/etc/docker/plugins/<name>.spec` pointing at the test's socket; removed when dropped.
struct PluginSpec(PathBuf);

impl PluginSpec {
    fn register(name: &str, socket: &Path) -> Self {
        let dir = Path::new("/etc/docker/plugins");
        std::fs::create_dir_all(dir).expect("create /etc/docker/plugins");
        let path = dir.join(format!("{name}.spec"));
        std::fs::write(&path, format!("unix://{}\n", socket.display())).expect("write spec");
        PluginSpec(path)
    }
}

impl Drop for PluginSpec {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Imports a one-binary busybox image (`docker import` of a tiny root filesystem).
fn import_busybox(docker: &Dockerd, convoy: &TestDaemon, dir: &Path, image: &str) {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("busybox-static is needed for the test image: apt-get install busybox-static");
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy(&busybox, rootfs.join("bin/busybox")).unwrap();
    for tool in ["sh", "cat", "echo", "ls"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(tool)).unwrap();
    }
    let tar = dir.join("rootfs.tar");
    cli_support_run(
        "tar",
        &[
            "-C",
            rootfs.to_str().unwrap(),
            "-cf",
            tar.to_str().unwrap(),
            ".",
        ],
    );
    docker.ok(&["import", tar.to_str().unwrap(), image], convoy);
}

fn cli_support_run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_docker_storm_mounts() {
    let dockerd =
        find_program("dockerd").expect("dockerd is not installed (apt-get install docker.io)");
    let (runs, parallel) = by_scale((12usize, 4usize), (100, 8));
    let mut rng = rng("docker-storm");
    let mut convoy = TestDaemon::start(&[]);
    let plugin = format!("convoystorm{}", std::process::id());
    let _spec = PluginSpec::register(&plugin, &convoy.socket);
    let dir = tempfile::tempdir().unwrap();
    let docker = Dockerd::start(dir.path(), &dockerd);
    let image = "convoy-storm-busybox";
    import_busybox(&docker, &convoy, dir.path(), image);
    let volumes: Vec<String> = (0..3).map(|i| format!("dstorm{i}")).collect();
    for v in &volumes {
        docker.ok(&["volume", "create", "-d", &plugin, v], &convoy);
    }
    let mut figure = Figure::new(
        "concurrency",
        format!("{runs} docker run -v with {parallel} at once, raw Mount/Unmount storm alongside"),
    );
    let plan: Vec<(usize, String)> = (0..runs)
        .map(|i| (i, volumes[rng.usize(..volumes.len())].clone()))
        .collect();
    let docker = std::sync::Arc::new(docker);
    let failures = std::sync::Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let (calls, mut checks) = std::thread::scope(|s| {
        for _ in 0..parallel {
            s.spawn(|| loop {
                let k = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some((i, v)) = plan.get(k) else { break };
                let script = format!("echo run-{i} > /data/run-{i} && cat /data/run-{i}");
                let out = docker.run(&[
                    "run",
                    "--rm",
                    "--network",
                    "none",
                    "-v",
                    &format!("{v}:/data"),
                    image,
                    "sh",
                    "-c",
                    &script,
                ]);
                let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if !out.status.success() || stdout != format!("run-{i}") {
                    failures.lock().unwrap().push(format!(
                        "run {i} on {v}: {}: {stdout} {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
            });
        }
        // Raw plugin calls with random IDs on the same volumes, at the same time.
        let (threads, ops) = by_scale((2, 30), (4, 150));
        mount_storm(&convoy, &volumes, threads, ops)
    });
    let failures = failures.into_inner().unwrap();
    let mut written = 0u64;
    for (i, v) in &plan {
        let file = convoy.vols.join(v).join(format!("run-{i}"));
        if std::fs::read_to_string(&file).ok().as_deref() == Some(&format!("run-{i}\n")) {
            written += 1;
        }
    }
    let left = docker.ok(&["ps", "-aq"], &convoy);
    let released = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert_released(&mut convoy, &volumes)
    }));
    if let Ok(n) = &released {
        checks += n;
    }
    figure.trials = runs as u64;
    figure.checks = checks + written + u64::from(left.is_empty());
    figure.lost = runs as u64 - written;
    figure
        .set("parallel_containers", parallel as u64)
        .set("raw_plugin_calls", calls)
        .set("failed_runs", failures.len() as u64);
    figure.emit();
    if let Err(panic) = released {
        std::panic::resume_unwind(panic);
    }
    let seed = rel_support::seed();
    assert!(
        failures.is_empty(),
        "docker runs failed (seed {seed}): {failures:#?}"
    );
    assert_eq!(
        written, runs as u64,
        "container writes missing (seed {seed})"
    );
    assert!(left.is_empty(), "containers left: {left}");
    for v in &volumes {
        docker.ok(&["volume", "rm", v], &convoy);
    }
}
