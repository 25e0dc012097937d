//! Shared by the real-Docker tests (`docker_real`, `rel_docker_storm`): a `dockerd` started by
//! hand with a private data root, the convoy plugin spec that points it at a test daemon, and a
//! one-binary busybox image imported without a registry.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use convoy_testkit::{ServerProcess, StartFailure};

use crate::cli_support::TestDaemon;

/// Finds `program` in PATH (or at the given absolute path).
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// A `dockerd` with its own data root, exec root and socket; stopped (SIGTERM) when dropped.
pub struct Dockerd {
    _child: ServerProcess,
    host: String,
    docker: PathBuf,
    log: PathBuf,
}

impl Dockerd {
    pub fn start(dir: &Path, dockerd: &Path) -> Self {
        let socket = dir.join("docker.sock");
        let log = dir.join("dockerd.log");
        let mut command = Command::new(dockerd);
        command
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
            ));
        // The distribution's client matches its daemon's API; fall back to any docker in PATH.
        let docker = [PathBuf::from("/usr/bin/docker")]
            .into_iter()
            .find(|p| p.is_file())
            .or_else(|| find_program("docker"))
            .expect("dockerd is installed but no docker client was found");
        let host = format!("unix://{}", socket.display());
        let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
        // Wait until it answers. The limit only turns a hang into a failure.
        let answers = || {
            Command::new(&docker)
                .arg("-H")
                .arg(&host)
                .arg("version")
                .output()
                .expect("cannot run docker")
                .status
                .success()
        };
        let child = ServerProcess::start_until(
            &mut command,
            Duration::from_secs(120),
            Duration::from_millis(250),
            answers,
        )
        .unwrap_or_else(|e| match e {
            StartFailure::Exited(out) => panic!("dockerd exited ({}):\n{}", out.status, read_log()),
            StartFailure::TimedOut(_) => panic!("dockerd did not start:\n{}", read_log()),
        });
        Dockerd {
            _child: child,
            host,
            docker,
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.docker)
            .arg("-H")
            .arg(&self.host)
            .args(args)
            .output()
            .expect("cannot run docker")
    }

    /// Runs `docker args...`, panics with both logs on failure, returns stdout.
    pub fn ok(&self, args: &[&str], convoy: &TestDaemon) -> String {
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

/// `/etc/docker/plugins/<name>.spec` pointing at the test's socket; removed when dropped.
pub struct PluginSpec(PathBuf);

impl PluginSpec {
    pub fn register(name: &str, socket: &Path) -> Self {
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
pub fn import_busybox(docker: &Dockerd, convoy: &TestDaemon, dir: &Path, image: &str) {
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
    convoy_e2e::run(
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
