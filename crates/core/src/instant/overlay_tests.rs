use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use convoy_nbd::BlockBackend;

use super::*;

const CHUNK: u64 = 4096;
const ID: [u8; 32] = [3; 32];

/// A backup held in memory: chunk `i` is `None` (a hole) or its bytes. Fetches are counted
/// and fail while `down` is set.
struct Table {
    chunks: Vec<Option<Arc<Vec<u8>>>>,
    size: u64,
    fetched: AtomicU64,
    down: AtomicBool,
    /// Fetches going on now, the most seen at once, and how long each takes (ms).
    fetching: AtomicU64,
    most_fetching: AtomicU64,
    fetch_ms: AtomicU64,
}

impl Table {
    /// 40 chunks and a 1000-byte tail chunk; every third chunk a hole.
    fn new() -> Table {
        let size = 40 * CHUNK + 1000;
        let chunks = (0..size.div_ceil(CHUNK))
            .map(|i| {
                (i % 3 != 1).then(|| {
                    let len = CHUNK.min(size - i * CHUNK);
                    Arc::new((0..len).map(|b| (i * 7 + b * 13 % 251) as u8 | 1).collect())
                })
            })
            .collect();
        Table {
            chunks,
            size,
            fetched: AtomicU64::new(0),
            down: AtomicBool::new(false),
            fetching: AtomicU64::new(0),
            most_fetching: AtomicU64::new(0),
            fetch_ms: AtomicU64::new(0),
        }
    }

    fn image(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.size as usize];
        for (i, c) in self.chunks.iter().enumerate() {
            if let Some(c) = c {
                let s = i * CHUNK as usize;
                v[s..s + c.len()].copy_from_slice(c);
            }
        }
        v
    }
}

#[async_trait::async_trait]
impl ChunkSource for Arc<Table> {
    fn size(&self) -> u64 {
        self.size
    }
    fn chunk_size(&self) -> u64 {
        CHUNK
    }
    fn is_hole(&self, i: u64) -> bool {
        self.chunks[i as usize].is_none()
    }
    async fn fetch(
        &self,
        range: Range<u64>,
        _urgent: bool,
    ) -> io::Result<Vec<(u64, Option<Arc<Vec<u8>>>)>> {
        if self.down.load(Ordering::SeqCst) {
            return Err(io::Error::other("store unreachable"));
        }
        self.fetched
            .fetch_add(range.end - range.start, Ordering::SeqCst);
        let now = self.fetching.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_fetching.fetch_max(now, Ordering::SeqCst);
        let ms = self.fetch_ms.load(Ordering::SeqCst);
        if ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        self.fetching.fetch_sub(1, Ordering::SeqCst);
        Ok(range
            .map(|i| (i, self.chunks[i as usize].clone()))
            .collect())
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    device: std::path::PathBuf,
    map: std::path::PathBuf,
    table: Arc<Table>,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let table = Arc::new(Table::new());
        let device = dir.path().join("thin");
        File::create(&device).unwrap().set_len(table.size).unwrap();
        let map = dir.path().join("vol.fill");
        FillMap::create(&map, table.chunks.len() as u64, CHUNK, &ID).unwrap();
        Setup {
            _dir: dir,
            device,
            map,
            table,
        }
    }

    /// An overlay over the device and map on disk (a start, or a restart after a crash).
    fn overlay(&self) -> Arc<Overlay<Arc<Table>>> {
        let n = self.table.chunks.len() as u64;
        let map = Arc::new(FillMap::open(&self.map, n, CHUNK, &ID).unwrap());
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.device)
            .unwrap();
        Arc::new(Overlay::new(self.table.clone(), f, map).unwrap())
    }

    fn device(&self) -> Vec<u8> {
        std::fs::read(&self.device).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_fetch_only_what_they_touch_and_the_fill_completes_the_device() {
    let s = Setup::new();
    let o = s.overlay();
    let image = s.table.image();
    let mut buf = vec![0u8; 6000];
    o.read_at(CHUNK * 5 + 100, &mut buf).await.unwrap();
    assert_eq!(buf[..], image[(CHUNK * 5 + 100) as usize..][..6000]);
    // Chunks 5 and 6 are touched, and the read fills the 3 after them with them (7 is a
    // hole, not fetched; 8 and 9 are): 4 fetched, 10 and later untouched.
    assert_eq!(s.table.fetched.load(Ordering::SeqCst), 4);
    assert!(o.map().is_filled(9) && !o.map().is_filled(10));
    o.read_at(CHUNK * 5, &mut buf).await.unwrap();
    assert_eq!(
        s.table.fetched.load(Ordering::SeqCst),
        4,
        "filled chunks are read locally"
    );

    let written = o.fill(4).await.unwrap();
    let stored = s.table.chunks.iter().flatten().count() as u64;
    assert_eq!(s.table.fetched.load(Ordering::SeqCst), stored);
    assert!(written > 0 && o.map().complete());
    assert_eq!(s.device(), image);
    let mut tail = vec![0u8; 1000];
    o.read_at(40 * CHUNK, &mut tail).await.unwrap();
    assert_eq!(tail[..], image[40 * CHUNK as usize..]);
    // Committed: a restart has nothing left to fill.
    drop(o);
    let o = s.overlay();
    assert!(o.map().complete());
    assert_eq!(o.fill(4).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_never_overwritten_by_the_fill() {
    let s = Setup::new();
    let o = s.overlay();
    let mut want = s.table.image();
    // A part of a stored chunk, a part of a hole, a whole chunk, one across two chunks.
    let writes: [(u64, usize); 4] = [
        (CHUNK * 2 + 10, 100),
        (CHUNK * 4 + 5, 50),
        (CHUNK * 9, CHUNK as usize),
        (CHUNK * 12 - 20, 40),
    ];
    for (k, (at, len)) in writes.iter().enumerate() {
        let d = vec![0xA0 + k as u8; *len];
        o.write_at(*at, &d).await.unwrap();
        want[*at as usize..*at as usize + len].copy_from_slice(&d);
    }
    // Chunks 2, 11 and 12 were fetched for the partial writes; 9 (written whole) and the
    // hole 4 were not.
    assert_eq!(s.table.fetched.load(Ordering::SeqCst), 3);
    let before = s.table.fetched.load(Ordering::SeqCst);
    o.fill(3).await.unwrap();
    assert_eq!(
        s.table.fetched.load(Ordering::SeqCst) - before,
        s.table.chunks.iter().flatten().count() as u64 - 4,
        "the fill fetches each stored chunk not yet filled once (2, 11 and 12 were filled by \
         partial writes, 9 written whole)"
    );
    assert_eq!(s.device(), want);
    let mut buf = vec![0u8; want.len()];
    o.read_at(0, &mut buf).await.unwrap();
    assert_eq!(buf, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_racing_the_fill_survive_it() {
    let s = Setup::new();
    let o = s.overlay();
    let mut want = s.table.image();
    let mut writers = Vec::new();
    for k in 0..40u64 {
        let at = k * CHUNK + (k * 37) % CHUNK / 2;
        let len = (CHUNK as usize) / 3 + k as usize;
        let d = vec![0x40 + k as u8; len];
        want[at as usize..at as usize + len].copy_from_slice(&d);
        let o = o.clone();
        writers.push(tokio::spawn(async move { o.write_at(at, &d).await }));
    }
    let filler = {
        let o = o.clone();
        tokio::spawn(async move { o.fill(4).await })
    };
    for w in writers {
        w.await.unwrap().unwrap();
    }
    filler.await.unwrap().unwrap();
    assert!(o.map().complete());
    assert_eq!(s.device(), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fetch_is_an_error_never_wrong_data() {
    let s = Setup::new();
    let o = s.overlay();
    s.table.down.store(true, Ordering::SeqCst);
    let mut buf = vec![0u8; 100];
    let e = o.read_at(CHUNK * 3, &mut buf).await.unwrap_err();
    assert!(e.to_string().contains("unreachable"), "{e}");
    // A partial write of an unfilled stored chunk cannot be done without its bytes.
    assert!(o.write_at(CHUNK * 3 + 1, &[9; 10]).await.is_err());
    assert!(o.fill(2).await.is_err());
    assert!(!o.map().is_filled(3));
    // A hole needs no fetch, a whole-chunk write neither.
    o.read_at(CHUNK * 4, &mut buf).await.unwrap();
    assert!(buf.iter().all(|b| *b == 0));
    o.write_at(CHUNK * 6, &[5; CHUNK as usize]).await.unwrap();

    s.table.down.store(false, Ordering::SeqCst);
    o.read_at(CHUNK * 3, &mut buf).await.unwrap();
    let image = s.table.image();
    assert_eq!(buf[..], image[(CHUNK * 3) as usize..][..100]);
    o.fill(2).await.unwrap();
    let mut want = image;
    want[(CHUNK * 6) as usize..(CHUNK * 7) as usize].fill(5);
    assert_eq!(s.device(), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_flushed_writes_and_fills_the_rest() {
    let s = Setup::new();
    let o = s.overlay();
    let mut want = s.table.image();
    o.write_at(CHUNK * 8 + 7, &[0xEE; 300]).await.unwrap();
    want[(CHUNK * 8 + 7) as usize..(CHUNK * 8 + 307) as usize].fill(0xEE);
    let mut buf = vec![0u8; 10];
    o.read_at(CHUNK * 20, &mut buf).await.unwrap();
    o.flush().await.unwrap();
    // Filled after the flush and never committed: lost at the "crash", filled again.
    o.read_at(CHUNK * 30, &mut buf).await.unwrap();
    drop(o);

    let o = s.overlay();
    assert!(o.map().is_filled(8) && o.map().is_filled(20));
    assert!(!o.map().is_filled(30));
    let before = s.table.fetched.load(Ordering::SeqCst);
    // Kept from before the crash: chunk 8 (the write's) and what the read at 20 filled.
    let kept = (0..o.map().chunk_count())
        .filter(|&i| o.map().is_filled(i) && !s.table.is_hole(i))
        .count() as u64;
    assert!(kept >= 2, "{kept}");
    o.fill(4).await.unwrap();
    let stored = s.table.chunks.iter().flatten().count() as u64;
    assert_eq!(
        s.table.fetched.load(Ordering::SeqCst) - before,
        stored - kept
    );
    assert_eq!(s.device(), want);
}

#[test]
fn a_map_of_another_geometry_is_refused() {
    let s = Setup::new();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("other.fill");
    let map = Arc::new(FillMap::create(&p, 3, CHUNK, &ID).unwrap());
    let f = File::open(&s.device).unwrap();
    let e = Overlay::new(s.table.clone(), f, map).err().unwrap();
    assert!(e.to_string().contains("3 chunks"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_fill_keeps_one_run_in_flight_while_user_io_fetches() {
    // Every fetch takes a while, so that runs started together overlap.
    let s = Setup::new();
    s.table.fetch_ms.store(20, Ordering::SeqCst);
    let o = s.overlay();
    {
        // User I/O fetching during the whole fill: one run at a time.
        let _user = o.foreground.begin();
        o.fill(4).await.unwrap();
    }
    assert_eq!(s.table.most_fetching.load(Ordering::SeqCst), 1);
    assert_eq!(s.device(), s.table.image());

    // The same fill with no user I/O opens up to more runs at once.
    let again = Setup::new();
    again.table.fetch_ms.store(20, Ordering::SeqCst);
    again.overlay().fill(4).await.unwrap();
    assert!(
        again.table.most_fetching.load(Ordering::SeqCst) >= 2,
        "the fill never ran two runs at once"
    );
    assert_eq!(again.device(), again.table.image());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_fill_writes_past_the_page_cache_where_it_can() {
    use std::os::unix::fs::OpenOptionsExt;
    let s = Setup::new();
    // Direct I/O to the device file (the temp dir must allow it, as ext4 and xfs do); the
    // 1000-byte tail chunk cannot be written so and goes through the page cache instead.
    let direct = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&s.device)
        .expect("O_DIRECT open of a file in the temp dir");
    let n = s.table.chunks.len() as u64;
    let map = Arc::new(FillMap::open(&s.map, n, CHUNK, &ID).unwrap());
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&s.device)
        .unwrap();
    let o = Overlay::new(s.table.clone(), f, map)
        .unwrap()
        .with_direct(Some(direct));
    let mut buf = vec![0u8; 100];
    o.read_at(CHUNK * 2, &mut buf).await.unwrap();
    o.fill(3).await.unwrap();
    assert!(o.map().complete());
    assert_eq!(s.device(), s.table.image());
    // Unaligned ranges are refused before any I/O, so the caller can fall back.
    let d = std::fs::OpenOptions::new()
        .write(true)
        .open(&s.device)
        .unwrap();
    let e = write_direct(&d, &[1u8; 1000], 0).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    let e = write_direct(&d, &[1u8; 4096], 512).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
}
