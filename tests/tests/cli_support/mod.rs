//! Shared by the `cli_*` and `docker_*` tests: a `convoy daemon` (vfs driver) in a temp dir,
//! the CLI run against it, and raw HTTP requests to its socket.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `convoy` binary of this build, built once per test binary (with `convoyd`, by
/// `cargo build -p convoy -p convoyd`) so that the tests never run a stale one. `CONVOY_BIN`
/// overrides.
pub fn convoy_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(bin) = std::env::var("CONVOY_BIN") {
            return PathBuf::from(bin);
        }
        // target/<profile>/deps/<test exe> → target/<profile>/convoy
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>");
        let target_dir = profile_dir.parent().expect("target dir");
        let bin = profile_dir.join("convoy");
        if std::env::var_os("CONVOY_VM").is_some() {
            // In the guest: the host tier (run first) built it; cargo is not run in the guest.
            assert!(
                bin.is_file(),
                "{} missing: build it on the host first (cargo build -p convoy)",
                bin.display()
            );
            return bin;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        // The same selection as `cargo test --workspace` (every member, dev-dependencies
        // included) resolves the same features, so under that command this finds everything
        // built already. `-p convoy -p convoyd` resolved a smaller feature set and rebuilt
        // core, daemon and their dependencies a second time: minutes on a fresh machine.
        build.args(["build", "-q", "--workspace", "--bins", "--tests"]);
        // `cargo test` gave this process the test package's own variables; passed on, they
        // differ from what a plain `cargo test` saw, and build scripts that watch them (ring
        // watches `CARGO_MANIFEST_DIR` and `CARGO_PKG_*`) rebuilt half the tree here, minutes.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("CARGO_PKG_")
                || name.starts_with("CARGO_MANIFEST_")
                || name.starts_with("CARGO_BIN_EXE_")
                || matches!(
                    &*name,
                    "CARGO_CRATE_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                        | "CARGO_TARGET_TMPDIR"
                        | "OUT_DIR"
                )
            {
                build.env_remove(&*name);
            }
        }
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build
            .env("CARGO_TARGET_DIR", target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cannot run cargo to build the convoy binary");
        assert!(
            status.success(),
            "cargo build --workspace --bins --tests failed"
        );
        bin
    })
    .clone()
}

/// A running `convoy daemon` with the vfs driver, its root, volumes and socket in a temp dir.
pub struct TestDaemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub root: PathBuf,
    pub vols: PathBuf,
    flags: Vec<String>,
    child: Option<Child>,
}

impl TestDaemon {
    /// Starts a daemon with `flags` added to the vfs setup.
    pub fn start(flags: &[&str]) -> Self {
        Self::start_with(flags, |d| {
            vec![
                "--drivers".into(),
                "vfs".into(),
                "--driver-opts".into(),
                format!("vfs.path={}", d.vols.display()),
            ]
        })
    }

    /// Starts a daemon with `flags` and the driver flags `drivers` makes (given the daemon's
    /// directories, before it starts).
    pub fn start_with(flags: &[&str], drivers: impl FnOnce(&TestDaemon) -> Vec<String>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut daemon = TestDaemon {
            socket: dir.path().join("run/convoy.sock"),
            root: dir.path().join("root"),
            vols: dir.path().join("vols"),
            dir,
            flags: flags.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        let driver_flags = drivers(&daemon);
        let driver_flags: Vec<&str> = driver_flags.iter().map(String::as_str).collect();
        daemon.spawn(&driver_flags);
        daemon
    }

    /// The command line of `convoy daemon` with this daemon's root and socket.
    pub fn daemon_command(&self, extra: &[&str]) -> Command {
        let mut command = Command::new(convoy_bin());
        command
            .arg("--socket")
            .arg(&self.socket)
            .arg("daemon")
            .arg("--root")
            .arg(&self.root)
            .args(&self.flags)
            .args(extra)
            .arg("--log")
            .arg(self.dir.path().join("daemon.log"));
        command
    }

    fn spawn(&mut self, extra: &[&str]) {
        let mut child = self
            .daemon_command(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start convoy daemon");
        // Wait until it answers (or exits). Not a timing assertion: the limit only turns a hang
        // into a failure.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("wait on daemon") {
                let out = child.wait_with_output().expect("daemon output");
                panic!(
                    "convoy daemon exited ({status}):\n{}{}\nlog:\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr),
                    self.log()
                );
            }
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "convoy daemon did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Stops the daemon with SIGTERM and waits for it; panics if it did not exit cleanly.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let status = child.wait().expect("wait on daemon");
            assert!(
                status.success(),
                "daemon exit on SIGTERM: {status}\n{}",
                self.log()
            );
        }
    }

    /// Stops the daemon and starts it again with no driver flags (the saved setup is reused).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn(&[]);
    }

    /// Stops the daemon and starts it again with `extra` flags added (and no driver flags).
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.stop();
        self.spawn(extra);
    }

    /// Runs `convoy -s <socket> args...`.
    pub fn convoy(&self, args: &[&str]) -> Output {
        Command::new(convoy_bin())
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("cannot run convoy")
    }

    /// Runs the CLI, asserts success, returns trimmed stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.convoy(args);
        assert!(
            out.status.success(),
            "convoy {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Runs the CLI and parses its stdout as JSON.
    pub fn json(&self, args: &[&str]) -> Value {
        let text = self.ok(args);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("convoy {args:?}: {e}: {text}"))
    }

    /// Runs the CLI, asserts exit status 1 and `{"Error": ...}` on stdout; returns the message.
    pub fn fail(&self, args: &[&str]) -> String {
        let out = self.convoy(args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "convoy {args:?}: {stdout}");
        let value: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("convoy {args:?} error is not JSON ({e}): {stdout}"));
        value["Error"]
            .as_str()
            .unwrap_or_else(|| panic!("no Error key: {stdout}"))
            .to_string()
    }

    /// Sends `method path` with `body` exactly as given (no `Content-Type`), as dockerd does.
    /// Returns the status and the body as JSON.
    pub fn raw(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let client = convoy_api::Client::new(&self.socket);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let answer = runtime
            .block_on(client.raw(method, path, body.to_string(), false))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let value = serde_json::from_slice(&answer.body).unwrap_or_else(|e| {
            panic!(
                "{method} {path}: answer is not JSON ({e}): {}",
                String::from_utf8_lossy(&answer.body)
            )
        });
        (answer.status, value)
    }

    /// A Docker plugin call: asserts HTTP 200 and returns the answer.
    pub fn docker(&self, endpoint: &str, body: &str) -> Value {
        let (status, value) = self.raw("POST", endpoint, body);
        assert_eq!(status, 200, "{endpoint} {body}: {value}");
        value
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

/// A random 64-hex ID like the ones dockerd sends with Mount/Unmount.
pub fn docker_id() -> String {
    (0..4)
        .map(|_| format!("{:016x}", fastrand::u64(..)))
        .collect()
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            == Some("0")
    })
}

impl TestDaemon {
    /// Kills the daemon with SIGKILL (no shutdown of any kind) and starts it again with no
    /// driver flags, as a crash and a supervisor's restart would.
    pub fn kill9_and_restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9 the daemon");
            let _ = child.wait();
        }
        self.spawn(&[]);
    }
}
