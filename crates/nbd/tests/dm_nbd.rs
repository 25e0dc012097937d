//! VM tier: real `/dev/nbdN` devices through the kernel's NBD client.

use std::io;
use std::os::unix::fs::FileExt;
use std::process::Command;
use std::sync::Arc;

use convoy_nbd::{AttachOptions, BlockBackend, MemoryBackend, NbdDevice};
use convoy_testkit::{run, MIB};

/// Unmounts a directory on drop (also when an assertion fails).
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the kernel's nbd driver: run by cargo xtask test"]
async fn dm_nbd_ext4_on_a_memory_device_mount_write_read_fsck_detach() {
    let backend = Arc::new(MemoryBackend::new(96 * MIB));
    let dev = NbdDevice::attach(backend.clone(), AttachOptions::default())
        .await
        .unwrap();
    let path = dev.path().to_str().unwrap().to_owned();
    assert_eq!(
        run("blockdev", &["--getsize64", &path]).trim(),
        (96 * MIB).to_string()
    );
    // The blocking tools run beside the runtime that serves them.
    let p = path.clone();
    let dir = tempfile::tempdir().unwrap();
    let at = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        run("mkfs.ext4", &["-q", "-F", &p]);
        run("mount", &[&p, at.to_str().unwrap()]);
        let guard = Mounted(at.clone());
        let data: Vec<u8> = (0..5 * MIB as usize).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(at.join("f"), &data).unwrap();
        std::fs::File::open(at.join("f"))
            .unwrap()
            .sync_all()
            .unwrap();
        // Drop the page cache so the read comes through the device again.
        run("sh", &["-c", "echo 3 > /proc/sys/vm/drop_caches"]);
        assert_eq!(std::fs::read(at.join("f")).unwrap(), data);
        drop(guard);
        run("e2fsck", &["-f", "-n", &p]);
    })
    .await
    .unwrap();
    let stats = dev.stats();
    assert!(
        stats
            .bytes_written
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 5 * MIB
    );
    dev.detach().await.unwrap();
    // The filesystem is in the backend: found there after the device is gone.
    let image = backend.snapshot();
    assert_eq!(&image[1080..1082], &[0x53, 0xef], "ext4 superblock magic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the kernel's nbd driver: run by cargo xtask test"]
async fn dm_nbd_several_devices_at_once_each_its_own_index_and_data() {
    let attaches = (0..4u8).map(|i| async move {
        let b = Arc::new(MemoryBackend::new(8 * MIB));
        (
            i,
            NbdDevice::attach(b, AttachOptions::default())
                .await
                .unwrap(),
        )
    });
    let devs = futures_join(attaches).await;
    let mut indices: Vec<u32> = devs.iter().map(|(_, d)| d.index()).collect();
    indices.sort();
    indices.dedup();
    assert_eq!(indices.len(), 4, "four distinct devices: {indices:?}");
    let paths: Vec<(u8, String)> = devs
        .iter()
        .map(|(i, d)| (*i, d.path().to_str().unwrap().to_owned()))
        .collect();
    tokio::task::spawn_blocking(move || {
        for (i, p) in &paths {
            let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
            f.write_all_at(&vec![*i + 1; MIB as usize], MIB).unwrap();
            f.sync_all().unwrap();
        }
        run("sh", &["-c", "echo 3 > /proc/sys/vm/drop_caches"]);
        for (i, p) in &paths {
            let f = std::fs::File::open(p).unwrap();
            let mut buf = vec![0u8; MIB as usize];
            f.read_exact_at(&mut buf, MIB).unwrap();
            assert!(buf.iter().all(|b| *b == i + 1), "device {p}");
        }
    })
    .await
    .unwrap();
    for (_, d) in devs {
        d.detach().await.unwrap();
    }
}

async fn futures_join<F: std::future::Future + Send + 'static>(
    fs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// Reads of its second MiB fail; every other byte is 0xAB.
struct Broken;

#[async_trait::async_trait]
impl BlockBackend for Broken {
    fn size(&self) -> u64 {
        4 * MIB
    }
    fn read_only(&self) -> bool {
        true
    }
    async fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if offset < 2 * MIB && offset + buf.len() as u64 > MIB {
            return Err(io::Error::other("the store is down"));
        }
        buf.fill(0xab);
        Ok(())
    }
    async fn write_at(&self, _offset: u64, _data: &[u8]) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(1))
    }
    async fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the kernel's nbd driver: run by cargo xtask test"]
async fn dm_nbd_backend_errors_are_eio_to_the_reader_never_data() {
    let dev = NbdDevice::attach(Arc::new(Broken), AttachOptions::default())
        .await
        .unwrap();
    let path = dev.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        // O_DIRECT: straight to the device, no readahead into the bad range.
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix_o_direct())
            .open(&path)
            .unwrap();
        let mut buf = AlignedBuf::new(64 << 10);
        f.read_exact_at(buf.as_mut(), 0).unwrap();
        assert!(buf.as_mut().iter().all(|b| *b == 0xab));
        buf.as_mut().fill(0);
        let e = f.read_exact_at(buf.as_mut(), MIB + 4096).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(5), "EIO, got {e}");
        assert!(buf.as_mut().iter().all(|b| *b == 0), "no data on error");
        f.read_exact_at(buf.as_mut(), 3 * MIB).unwrap();
        assert!(buf.as_mut().iter().all(|b| *b == 0xab), "still serving");
        // The kernel refuses writes to a read-only device itself.
        let w = std::fs::OpenOptions::new().write(true).open(&path);
        assert!(w.is_err() || w.unwrap().write_all_at(&[1; 4096], 0).is_err());
    })
    .await
    .unwrap();
    dev.detach().await.unwrap();
}

const fn nix_o_direct() -> i32 {
    0o40000
}

/// A 4096-aligned buffer for O_DIRECT (a Vec with slack, sliced at the aligned offset).
struct AlignedBuf {
    raw: Vec<u8>,
    at: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> Self {
        let raw = vec![0u8; len + 4096];
        let at = (4096 - (raw.as_ptr() as usize % 4096)) % 4096;
        AlignedBuf { raw, at, len }
    }
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.at..self.at + self.len]
    }
}
