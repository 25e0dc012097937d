//! Test environments for the conformance suite: a `vfs://` directory, the test rig's
//! in-process S3 server (`convoy_testkit::S3Server`, s3s-fs), and (when installed) moto_server
//! for "no such bucket".

#![allow(dead_code, unused_macros, clippy::single_range_in_vec_init)]

pub mod compaction;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use convoy_backupstore::{
    BackupMeta, BackupOutcome, BackupTarget, NoProgress, RestoreOptions, StaticCredentials,
    TargetOptions,
};

pub const CHUNK: u32 = 64 << 10;
/// The credentials the test rig's S3 server accepts.
pub const AK: &str = convoy_testkit::S3_ACCESS_KEY;
pub const SK: &str = convoy_testkit::S3_SECRET_KEY;

/// One backend under test.
pub struct Env {
    pub dest: String,
    pub opts: TargetOptions,
    /// Directory holding the destination's objects as files (for corruption tests).
    pub objects_root: PathBuf,
    pub is_s3: bool,
    pub endpoint: Option<String>,
    // Dropped before the directory it serves.
    _server: Option<convoy_testkit::S3Server>,
    _dir: tempfile::TempDir,
}

pub fn fast_opts() -> TargetOptions {
    let mut o = TargetOptions {
        chunk_size: CHUNK,
        parallelism: 8,
        pack_size: 1 << 20,
        ..Default::default()
    };
    o.retry.max_retries = 2;
    o.retry.initial_backoff = Duration::from_millis(10);
    o.retry.timeout = Duration::from_secs(5);
    o.retry.connect_timeout = Duration::from_secs(2);
    o.lock.wait = Duration::from_secs(60);
    o
}

impl Env {
    pub async fn local() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        Env {
            dest: format!("vfs://{}", root.display()),
            opts: fast_opts(),
            objects_root: root,
            is_s3: false,
            endpoint: None,
            _server: None,
            _dir: dir,
        }
    }

    /// An s3s-fs server in this process, with credentials given through a credentials file.
    pub async fn s3() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("s3data");
        let server = convoy_testkit::S3Server::start(&data, &["convoy-test"]).await;
        let creds = dir.path().join("credentials");
        std::fs::write(
            &creds,
            format!("[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n[convoy-test]\naws_access_key_id = {AK}\naws_secret_access_key = {SK}\n"),
        )
        .unwrap();
        let endpoint = server.endpoint();
        let mut opts = fast_opts();
        // s3s-fs answers 500 when a file vanishes while it walks the bucket for a listing
        // (concurrent lock records); real S3 does not. Retrying covers it.
        opts.retry.max_retries = 10;
        opts.s3_endpoint = Some(endpoint.clone());
        // The index cache of this store alone (the default is per URL and endpoint, and the
        // tests run side by side).
        opts.cache_dir = Some(dir.path().join("index-cache"));
        opts.aws_credentials_file = Some(creds);
        opts.aws_profile = Some("convoy-test".into());
        Env {
            dest: "s3://convoy-test@us-east-1/backups/store1".into(),
            opts,
            objects_root: data.join("convoy-test/backups/store1"),
            is_s3: true,
            endpoint: Some(endpoint),
            _server: Some(server),
            _dir: dir,
        }
    }

    /// The S3 server's waves of requests (see `convoy_testkit::s3::Waves`); S3 only.
    pub fn waves(&self) -> &Arc<convoy_testkit::s3::Waves> {
        self._server.as_ref().expect("an S3 environment").waves()
    }

    pub fn target(&self) -> BackupTarget {
        BackupTarget::open(&self.dest, self.opts.clone()).unwrap()
    }

    /// A target writing the same store directly through the filesystem: for `vfs` the target
    /// itself; for S3 a `vfs://` target over s3s-fs's bucket folder. s3s-fs lists by walking
    /// the whole bucket on every request, so creating a thousand backups through it takes
    /// minutes; seeding through the folder keeps the suite fast while listing, deleting and
    /// repairing still go through S3.
    pub fn seeding_target(&self) -> BackupTarget {
        let dest = format!("vfs://{}", self.objects_root.display());
        BackupTarget::open(&dest, fast_opts()).unwrap()
    }

    /// Object files under `objects_root/<sub>`.
    pub fn files_under(&self, sub: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(&self.objects_root.join(sub), &mut out);
        out
    }

    /// Pack object files.
    pub fn pack_files(&self) -> Vec<PathBuf> {
        self.files_under("packs")
            .into_iter()
            .filter(|p| p.file_name().unwrap().len() == 64)
            .collect()
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            // s3s-fs keeps its internal files under names starting with '.'.
            if !p.file_name().unwrap().to_string_lossy().starts_with('.') {
                out.push(p);
            }
        }
    }
}

/// A test volume image in a temp file.
pub struct Image {
    pub file: Arc<std::fs::File>,
    pub path: PathBuf,
    pub size: u64,
    _dir: tempfile::TempDir,
}

/// Deterministic pseudo-random bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    convoy_testkit::noise(seed, len)
}

impl Image {
    /// `size` bytes: zeros, text-like and random regions by chunk.
    pub fn new(size: u64, seed: u64) -> Image {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image");
        let mut data = vec![0u8; size as usize];
        for (i, chunk) in data.chunks_mut(CHUNK as usize).enumerate() {
            match (i as u64 + seed) % 4 {
                0 => {}
                1 => {
                    let text = format!("chunk {i} seed {seed} lorem ipsum dolor sit amet; ");
                    for (j, b) in chunk.iter_mut().enumerate() {
                        *b = text.as_bytes()[j % text.len()];
                    }
                }
                _ => chunk.copy_from_slice(&noise(chunk.len(), seed * 1000 + i as u64)),
            }
        }
        std::fs::write(&path, &data).unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        Image {
            file: Arc::new(file),
            path,
            size,
            _dir: dir,
        }
    }

    pub fn write(&self, offset: u64, data: &[u8]) {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(data, offset).unwrap();
    }

    pub fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap()
    }
}

pub fn meta(volume: &str, size: u64) -> BackupMeta {
    BackupMeta {
        driver_name: "devicemapper".into(),
        volume_name: volume.into(),
        volume_uuid: format!("uuid-{volume}"),
        volume_size: size,
        volume_created_at: "2026-01-01T00:00:00Z".into(),
        snapshot_name: format!("snap-{volume}"),
        snapshot_uuid: format!("snap-uuid-{volume}"),
        snapshot_created_at: "2026-01-02T00:00:00Z".into(),
        ..Default::default()
    }
}

/// A full backup of `img`, once the requests it left running (its lock record's removal)
/// are done, so that what follows sees the store as the backup left it.
pub async fn full_backup(t: &BackupTarget, img: &Image, volume: &str) -> BackupOutcome {
    let out = t
        .backup(
            img.file.clone(),
            &[0..img.size],
            None,
            meta(volume, img.size),
            &NoProgress,
        )
        .await
        .unwrap();
    t.settle().await;
    out
}

/// Restores into a fresh sparse file and returns its bytes and allocated size.
pub async fn restore_bytes(
    t: &BackupTarget,
    r: &convoy_backupstore::BackupRef,
    size: u64,
) -> convoy_backupstore::Result<(Vec<u8>, u64)> {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(size).unwrap();
    t.restore(r, Arc::new(f), &RestoreOptions::default(), &NoProgress)
        .await?;
    let allocated = std::fs::metadata(&path).unwrap().blocks() * 512;
    Ok((std::fs::read(&path).unwrap(), allocated))
}

/// Spawns moto_server on a free port, if installed.
pub struct Moto {
    pub child: std::process::Child,
    pub endpoint: String,
}

impl Moto {
    pub async fn start() -> Option<Moto> {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
            l.local_addr().ok()?.port()
        };
        let child = std::process::Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let mut moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Some(moto);
            }
            if let Ok(Some(_)) = moto.child.try_wait() {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn creds(ak: &str, sk: &str) -> Option<StaticCredentials> {
    Some(StaticCredentials {
        access_key_id: ak.into(),
        secret_access_key: sk.into(),
        session_token: None,
    })
}

/// Registers each scenario function twice: `vfs::name` and `s3::name`.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod vfs {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::support::Env::local().await).await
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::support::Env::s3().await).await
                }
            )*
        }
    };
}
