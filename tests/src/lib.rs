//! # convoy-e2e
//!
//! End-to-end tests that drive convoy the way a user does, and the real-kernel (VM tier) tests
//! that need no single crate of their own. Tests whose name starts with `dm_` need a dm-thin
//! kernel: they are `#[ignore]`d on the host and run inside the guest by `cargo xtask test`
//! (see `docs/testing.md`).
//!
//! This library holds the small helpers those tests share: running a command and failing the
//! test with its output, and loop devices over sparse files that detach themselves.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `program args...`, panics with its output if it fails, returns its stdout.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A loop device over a sparse file; detached when dropped.
#[derive(Debug)]
pub struct LoopDevice {
    path: PathBuf,
}

impl LoopDevice {
    /// Creates a sparse file of `bytes` at `backing` and attaches it to a free loop device.
    pub fn new(backing: &Path, bytes: u64) -> Self {
        std::fs::File::create(backing)
            .and_then(|f| f.set_len(bytes))
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", backing.display()));
        let backing = backing.to_string_lossy();
        let device = run("losetup", &["-f", "--show", &backing]);
        Self {
            path: PathBuf::from(device.trim()),
        }
    }

    /// The loop device node, e.g. `/dev/loop0`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The node as a string, for command lines.
    pub fn as_str(&self) -> &str {
        self.path.to_str().expect("loop device paths are ASCII")
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
    }
}

/// Size of a block device in 512-byte sectors.
pub fn device_sectors(device: &str) -> u64 {
    run("blockdev", &["--getsz", device])
        .trim()
        .parse()
        .expect("blockdev --getsz prints a number")
}

/// A binary of this workspace (`convoy`, `convoy-partition`, ...) from the same target directory
/// and profile as the running test (`target/<profile>/deps/<test>` → `target/<profile>/<name>`).
/// `cargo xtask test` builds every workspace binary before the VM tier.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps");
    let bin = profile_dir.join(name);
    assert!(
        bin.is_file(),
        "{} is missing: build it first (cargo build --workspace --bins)",
        bin.display()
    );
    bin
}

/// Removes every device-mapper device whose name contains the tag when dropped: each is
/// lazily unmounted first, thin devices go before pools.
#[derive(Debug)]
pub struct DmCleanup(pub String);

impl Drop for DmCleanup {
    fn drop(&mut self) {
        let mut names = dm_names(&self.0);
        names.sort_by_key(|n| n.ends_with("pool"));
        for name in names {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(format!("/dev/mapper/{name}"))
                .stderr(std::process::Stdio::null())
                .status();
            let _ = Command::new("dmsetup")
                .args(["remove", "--force", &name])
                .status();
        }
    }
}

/// The device-mapper devices whose name contains `tag` (none when `dmsetup` cannot run).
pub fn dm_names(tag: &str) -> Vec<String> {
    let Ok(out) = Command::new("dmsetup").arg("ls").output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.contains(tag))
        .map(str::to_string)
        .collect()
}

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

/// The credentials `convoy-test-s3` accepts.
pub const TEST_S3_ACCESS_KEY: &str = "AKIACONVOYRELTEST";
/// The secret key `convoy-test-s3` accepts.
pub const TEST_S3_SECRET_KEY: &str = "convoy/rel/test/secret";
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

/// Every regular file under `root` (but `lost+found`) and its bytes, by path relative to it.
pub fn tree_files(root: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    fn go(root: &Path, rel: &Path, out: &mut std::collections::BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(root.join(rel)).unwrap() {
            let name = entry.unwrap().file_name();
            if name == "lost+found" {
                continue;
            }
            let rel = rel.join(name);
            let path = root.join(&rel);
            if path.is_dir() {
                go(root, &rel, out);
            } else {
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    go(root, Path::new(""), &mut out);
    out
}

/// Pseudo-random bytes (xorshift), different for each seed.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
