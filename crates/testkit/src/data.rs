//! Test data: pseudo-random and patterned bytes, files written to disk, whole trees read back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Pseudo-random bytes (xorshift), the same for a seed on every run, different for each seed.
/// Incompressible: a backup of them stores every byte.
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

/// `len` bytes of a cheap pattern seeded by `seed`: every 4 KiB block differs from its
/// neighbours, and a block written at the wrong place shows.
pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
        .collect()
}

/// Writes `data` to the file at `path` and syncs it to its device.
pub fn write_synced(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .unwrap_or_else(|e| panic!("sync {}: {e}", path.display()));
}

/// Every regular file under `root` (but `lost+found`) and its bytes, by path relative to it.
pub fn tree_files(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn go(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
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
    let mut out = BTreeMap::new();
    go(root, Path::new(""), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_repeatable_and_seeded() {
        assert_eq!(noise(7, 4096), noise(7, 4096));
        assert_ne!(noise(7, 4096), noise(8, 4096));
        assert_eq!(&noise(7, 4096)[..100], &noise(7, 100)[..]);
    }

    #[test]
    fn pattern_blocks_differ() {
        let p = pattern(3, 3 * 4096);
        assert_ne!(p[..4096], p[4096..8192]);
        assert_ne!(pattern(3, 64), pattern(4, 64));
    }

    #[test]
    fn tree_files_reads_back_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::create_dir_all(dir.path().join("lost+found")).unwrap();
        write_synced(&dir.path().join("a/b/f"), b"deep");
        write_synced(&dir.path().join("top"), b"top");
        write_synced(&dir.path().join("lost+found/x"), b"skipped");
        let files = tree_files(dir.path());
        assert_eq!(
            files,
            BTreeMap::from([
                (PathBuf::from("a/b/f"), b"deep".to_vec()),
                (PathBuf::from("top"), b"top".to_vec()),
            ])
        );
    }
}
