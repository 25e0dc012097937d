//! # convoy-e2e
//!
//! End-to-end tests that drive convoy the way a user does, and the real-kernel (VM tier) tests
//! that need no single crate of their own. Tests whose name starts with `dm_` need a dm-thin
//! kernel: they are `#[ignore]`d on the host and run inside the guest by `cargo xtask test`
//! (see `docs/testing.md`).
//!
//! This library holds what only these tests share: a dm-thin pool's disks for `convoy daemon`
//! ([`DmDisks`]) and the S3 server as a process of its own ([`S3Process`]). The rest of the rig
//! (commands, loop devices, device-mapper clean-up, server processes, test data) is
//! `convoy-testkit`'s, re-exported here so that the suites keep one import.

use std::path::{Path, PathBuf};
use std::process::Command;

pub use convoy_testkit::{
    device_sectors, dm_names, noise, run, tree_files, workspace_bin, DmCleanup, LoopDevice,
};

/// The backing of one test's dm-thin pool: a tag that every device the test makes carries (the
/// pool is `<tag>-pool`), data and metadata loop devices over sparse files, and, when dropped,
/// the removal of the tag's devices before the loop devices are detached.
///
/// Declare it before the daemon that uses it, so the daemon stops first.
#[derive(Debug)]
pub struct DmDisks {
    /// Unique to this process: `<prefix><pid>`.
    pub tag: String,
    /// The pool's device-mapper name, `<tag>-pool`.
    pub pool: String,
    // Field order is drop order: devices, then loop devices, then their files.
    _cleanup: DmCleanup,
    /// The pool's data device.
    pub data: LoopDevice,
    /// The pool's metadata device.
    pub meta: LoopDevice,
    _files: tempfile::TempDir,
}

impl DmDisks {
    /// Loop devices of `data_bytes` and `meta_bytes`, tagged `<prefix><pid>`.
    pub fn new(prefix: &str, data_bytes: u64, meta_bytes: u64) -> Self {
        let tag = format!("{prefix}{}", std::process::id());
        let files = tempfile::tempdir().expect("temp dir");
        let cleanup = DmCleanup(tag.clone());
        let data = LoopDevice::new(&files.path().join("data.img"), data_bytes);
        let meta = LoopDevice::new(&files.path().join("meta.img"), meta_bytes);
        Self {
            pool: format!("{tag}-pool"),
            tag,
            _cleanup: cleanup,
            data,
            meta,
            _files: files,
        }
    }

    /// `convoy daemon`'s driver flags for a devicemapper driver on these disks, with the
    /// extra `dm.` options `opts` (`"dm.defaultvolumesize=64M"`, ...).
    pub fn daemon_flags(&self, opts: &[&str]) -> Vec<String> {
        let mut flags = vec!["--drivers".to_string(), "devicemapper".into()];
        let fixed = [
            format!("dm.datadev={}", self.data.as_str()),
            format!("dm.metadatadev={}", self.meta.as_str()),
            format!("dm.thinpoolname={}", self.pool),
        ];
        for opt in fixed.iter().map(String::as_str).chain(opts.iter().copied()) {
            flags.push("--driver-opts".into());
            flags.push(opt.to_string());
        }
        flags
    }
}

/// The credentials `convoy-test-s3` accepts (the testkit's S3 server's).
pub const TEST_S3_ACCESS_KEY: &str = convoy_testkit::S3_ACCESS_KEY;
/// The secret key `convoy-test-s3` accepts.
pub const TEST_S3_SECRET_KEY: &str = convoy_testkit::S3_SECRET_KEY;
/// The bucket [`S3Process::start`] creates.
pub const TEST_S3_BUCKET: &str = "convoy-rel";

/// `convoy-test-s3` (an s3s-fs server, a separate process) serving a directory on a fixed
/// loopback port, with bucket [`TEST_S3_BUCKET`]; it can be killed with SIGKILL and started
/// again on the same port and data. Killed when dropped.
#[derive(Debug)]
pub struct S3Process {
    dir: PathBuf,
    /// The port it listens on (kept across restarts).
    pub port: u16,
    child: Option<std::process::Child>,
}

impl S3Process {
    /// Starts a server over `dir` (created, with the bucket's directory) on a free port.
    pub fn start(dir: &Path) -> S3Process {
        std::fs::create_dir_all(dir.join(TEST_S3_BUCKET)).expect("bucket dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut s = S3Process {
            dir: dir.to_path_buf(),
            port,
            child: None,
        };
        s.spawn();
        s
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `s3://<bucket>@us-east-1/<path>`, a destination in this server's bucket.
    pub fn dest(&self, path: &str) -> String {
        format!("s3://{TEST_S3_BUCKET}@us-east-1/{path}")
    }

    /// The environment a convoy process needs to reach this server.
    pub fn env(&self) -> [(&'static str, String); 3] {
        [
            ("AWS_ACCESS_KEY_ID", TEST_S3_ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", TEST_S3_SECRET_KEY.to_owned()),
            ("AWS_ENDPOINT", self.endpoint()),
        ]
    }

    /// Starts the server (again) and waits for its `listening` line.
    pub fn spawn(&mut self) {
        use std::io::BufRead;
        assert!(self.child.is_none(), "server already running");
        let mut child = Command::new(workspace_bin("convoy-test-s3"))
            .arg("--dir")
            .arg(&self.dir)
            .arg("--port")
            .arg(self.port.to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("cannot start convoy-test-s3");
        let mut line = String::new();
        let _ = std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
        if !line.starts_with("listening") {
            let _ = child.kill();
            let out = child.wait_with_output().expect("server output");
            panic!(
                "convoy-test-s3 did not start on port {}: {line}{}",
                self.port,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.child = Some(child);
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9 convoy-test-s3");
            let _ = child.wait();
        }
    }
}

impl Drop for S3Process {
    fn drop(&mut self) {
        self.kill9();
    }
}
