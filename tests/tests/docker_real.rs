//! Real Docker: a `dockerd` started by hand uses convoy as its volume plugin, as a user's Docker
//! host would. Needs root and `dockerd` (`apt-get install docker.io`); no registry is needed —
//! the image is imported from a busybox-static root filesystem.
//!
//! Ignored by default (it needs root and dockerd, which a developer machine may lack). CI runs
//! it explicitly, and there a missing dockerd is a failure, not a skip:
//!
//! ```text
//! apt-get install -y docker.io busybox-static
//! cargo test -p convoy-e2e --test docker_real -- --ignored
//! ```

mod cli_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cli_support::TestDaemon;

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
#[ignore = "needs root and dockerd (apt-get install docker.io): cargo test -p convoy-e2e --test docker_real -- --ignored"]
fn docker_real_dockerd_volume_lifecycle() {
    let Some(dockerd) = find_program("dockerd") else {
        panic!("dockerd is not installed: apt-get install -y docker.io (this test was asked for with --ignored)");
    };
    let uid = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap();
    assert_eq!(
        uid.trim(),
        "0",
        "the real Docker test needs root (dockerd, /etc/docker/plugins)"
    );

    let convoy = TestDaemon::start(&[]);
    let plugin = format!("convoytest{}", std::process::id());
    let _spec = PluginSpec::register(&plugin, &convoy.socket);
    let dir = tempfile::tempdir().unwrap();
    let docker = Dockerd::start(dir.path(), &dockerd);
    let image = "convoy-test-busybox";
    import_busybox(&docker, &convoy, dir.path(), image);

    // docker volume create -d convoy -o size=... v
    let name = "dockervol";
    assert_eq!(
        docker.ok(
            &["volume", "create", "-d", &plugin, "-o", "size=64M", name],
            &convoy
        ),
        name
    );
    assert_eq!(convoy.json(&["inspect", name])["Name"], name);
    let ls = docker.ok(
        &["volume", "ls", "--format", "{{.Driver}} {{.Name}}"],
        &convoy,
    );
    assert!(ls.lines().any(|l| l == format!("{plugin} {name}")), "{ls}");
    let inspect = docker.ok(
        &["volume", "inspect", name, "--format", "{{.Driver}}"],
        &convoy,
    );
    assert_eq!(inspect, plugin);

    // Write in one container, read back in another.
    let volume_arg = format!("{name}:/data");
    docker.ok(
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            &volume_arg,
            image,
            "sh",
            "-c",
            "echo x > /data/f",
        ],
        &convoy,
    );
    let read = docker.ok(
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            &volume_arg,
            image,
            "cat",
            "/data/f",
        ],
        &convoy,
    );
    assert_eq!(read, "x");
    // Every Docker mount was released: convoy unmounted the volume after the last container.
    assert_eq!(
        convoy.json(&["inspect", name])["MountPoint"],
        "",
        "{}",
        convoy.log()
    );
    assert_eq!(
        std::fs::read_to_string(convoy.vols.join(name).join("f"))
            .ok()
            .as_deref(),
        Some("x\n")
    );

    // docker volume rm v deletes the convoy volume.
    docker.ok(&["volume", "rm", name], &convoy);
    assert!(convoy.fail(&["inspect", name]).contains(name));
    let ls = docker.ok(&["volume", "ls", "-q"], &convoy);
    assert!(!ls.lines().any(|l| l == name), "{ls}");
}
