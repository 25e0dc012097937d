//! The vfs driver's backup image: a directory tree serialized into one virtual image so that it
//! goes through the same chunked, deduplicating block store as devicemapper volumes.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! 0..8        magic "CVYVFS1\n"
//! 8..16       u64: length N of the index
//! 16..16+N    index, JSON: {"version":1,"align":A,"root_mode":M,"entries":[...]}
//! ...         zeros up to the next multiple of A
//! offset_i    the bytes of regular file i (every offset is a multiple of A), zeros after it
//!             up to the next multiple of A
//! ```
//!
//! An entry is `{"path","kind":"dir"|"file"|"symlink","mode","size","offset","target","mtime"}`
//! with `path` relative (`/`-separated, no `.`/`..`/empty components), in depth-first order
//! with names sorted, parents before children. Because every file starts on a chunk boundary
//! (`A` is the backup chunk size), an unchanged file yields the same chunks in every backup
//! and the store deduplicates them whatever happened to the other files; only the index
//! chunks change. The image is never written out for a backup: [`TreeImage`] reads it
//! straight from the snapshot directory.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::{symlink, FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use convoy_backupstore::BlockSource;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::vfs_layout::{place, FileMeta, Layout};

/// Magic at the start of every image.
const MAGIC: &[u8; 8] = b"CVYVFS1\n";
/// Bytes before the index.
const PREFIX: u64 = 16;
/// Image format version.
const VERSION: u32 = 1;
/// Largest index accepted on restore (a hostile image cannot make us allocate more).
const MAX_INDEX: u64 = 1 << 30;
/// Restored files get a hole for every all-zero piece of this size.
const HOLE_GRAIN: usize = 64 << 10;

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Dir,
    File,
    Symlink,
}

/// One directory, regular file or symlink of the tree.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Entry {
    path: String,
    kind: Kind,
    #[serde(default)]
    mode: u32,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    offset: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mtime: Option<(i64, u32)>,
}

/// The image's index.
#[derive(Debug, Serialize, Deserialize)]
struct Index {
    version: u32,
    align: u64,
    root_mode: u32,
    entries: Vec<Entry>,
}

/// A snapshot directory seen as an image ([`BlockSource`]).
#[derive(Debug)]
pub(crate) struct TreeImage {
    root: PathBuf,
    /// Magic, length and index.
    head: Vec<u8>,
    /// Regular files by offset: (offset, size, relative path).
    files: Vec<(u64, u64, String)>,
    size: u64,
}

fn mtime_of(meta: &fs::Metadata) -> Option<(i64, u32)> {
    let t = meta.modified().ok()?;
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Some((i64::try_from(d.as_secs()).ok()?, d.subsec_nanos())),
        Err(_) => None,
    }
}

fn walk(root: &Path, rel: &str, out: &mut Vec<Entry>) -> Result<()> {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let mut names = Vec::new();
    for entry in fs::read_dir(&dir).map_err(|e| Error::io("read", &dir, e))? {
        let entry = entry.map_err(|e| Error::io("read", &dir, e))?;
        let name = entry
            .file_name()
            .into_string()
            .map_err(|n| Error::Unsupported {
                what: format!("backup of {}", dir.join(&n).display()),
                why: "the vfs backup image holds only UTF-8 file names".into(),
            })?;
        names.push(name);
    }
    names.sort();
    for name in names {
        let path = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let full = root.join(&path);
        let meta = fs::symlink_metadata(&full).map_err(|e| Error::io("stat", &full, e))?;
        let ft = meta.file_type();
        let mode = meta.permissions().mode() & 0o7777;
        let mtime = mtime_of(&meta);
        if ft.is_dir() {
            out.push(Entry {
                path: path.clone(),
                kind: Kind::Dir,
                mode,
                size: 0,
                offset: 0,
                target: None,
                mtime,
            });
            walk(root, &path, out)?;
        } else if ft.is_file() {
            out.push(Entry {
                path,
                kind: Kind::File,
                mode,
                size: meta.len(),
                offset: 0,
                target: None,
                mtime,
            });
        } else if ft.is_symlink() {
            let target = fs::read_link(&full).map_err(|e| Error::io("read link", &full, e))?;
            let target = target
                .into_os_string()
                .into_string()
                .map_err(|_| Error::Unsupported {
                    what: format!("backup of symlink {}", full.display()),
                    why: "the vfs backup image holds only UTF-8 symlink targets".into(),
                })?;
            out.push(Entry {
                path,
                kind: Kind::Symlink,
                mode: 0,
                size: 0,
                offset: 0,
                target: Some(target),
                mtime: None,
            });
        } else {
            return Err(Error::Unsupported {
                what: format!("backup of {}", full.display()),
                why: "vfs backups hold only directories, regular files and symlinks".into(),
            });
        }
    }
    Ok(())
}

impl TreeImage {
    /// Indexes the tree at `root`, placing files on multiples of `align` bytes: unchanged
    /// files where `base` (the layout of this snapshot's earlier scan, or of the parent
    /// backup's snapshot) put them, the rest afresh (`vfs_layout`). Returns the image and its
    /// layout.
    pub(crate) fn scan(root: &Path, align: u64, base: Option<&Layout>) -> Result<(Self, Layout)> {
        let meta = fs::symlink_metadata(root).map_err(|e| Error::io("stat", root, e))?;
        let mut entries = Vec::new();
        walk(root, "", &mut entries)?;
        let files: Vec<FileMeta> = entries
            .iter()
            .filter(|e| e.kind == Kind::File)
            .map(|e| (e.path.clone(), e.size, e.mtime))
            .collect();
        let mut base = base;
        // The offsets depend on the head's length, which depends on the offsets: settle them
        // by iterating (the estimate only grows, so this ends).
        let mut head_len = PREFIX + 64 * (entries.len() as u64 + 1);
        loop {
            let Some(layout) = place(&files, align, head_len, base) else {
                base = None;
                continue;
            };
            let mut placed = layout.files.iter();
            for e in entries.iter_mut().filter(|e| e.kind == Kind::File) {
                e.offset = placed.next().expect("one place per file").offset;
            }
            let index = Index {
                version: VERSION,
                align,
                root_mode: meta.permissions().mode() & 0o7777,
                entries: entries.clone(),
            };
            let json = serde_json::to_vec(&index)
                .map_err(|e| Error::Internal(format!("vfs image index: {e}")))?;
            if PREFIX + json.len() as u64 <= head_len {
                let mut head = Vec::with_capacity(PREFIX as usize + json.len());
                head.extend_from_slice(MAGIC);
                head.extend_from_slice(&(json.len() as u64).to_le_bytes());
                head.extend_from_slice(&json);
                let mut files: Vec<(u64, u64, String)> = layout
                    .files
                    .iter()
                    .map(|p| (p.offset, p.size, p.path.clone()))
                    .collect();
                // Reads find files by offset.
                files.sort();
                let image = TreeImage {
                    root: root.to_path_buf(),
                    head,
                    files,
                    size: layout.size,
                };
                return Ok((image, layout));
            }
            // Leave room so small growth of the offsets' digits does not need another pass.
            head_len = PREFIX + json.len() as u64 + 64;
        }
    }

    /// The image size (the backup's volume size).
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// The ranges holding data: the head, then each non-empty file.
    pub(crate) fn ranges(&self) -> Vec<Range<u64>> {
        let mut out: Vec<Range<u64>> = Vec::with_capacity(self.files.len() + 1);
        out.push(0..self.head.len() as u64);
        for (off, size, _) in &self.files {
            if *size == 0 {
                continue;
            }
            let r = *off..off + size;
            match out.last_mut() {
                Some(last) if last.end >= r.start => last.end = last.end.max(r.end),
                _ => out.push(r),
            }
        }
        out
    }
}

impl BlockSource for TreeImage {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        buf.fill(0);
        let end = offset + buf.len() as u64;
        // The head.
        let head_len = self.head.len() as u64;
        if offset < head_len {
            let to = end.min(head_len);
            buf[..(to - offset) as usize].copy_from_slice(&self.head[offset as usize..to as usize]);
        }
        // Files overlapping [offset, end).
        let first = self.files.partition_point(|(o, s, _)| o + s <= offset);
        for (off, size, path) in &self.files[first..] {
            if *off >= end {
                break;
            }
            let from = offset.max(*off);
            let to = end.min(off + size);
            if from >= to {
                continue;
            }
            let file = File::open(self.root.join(path))?;
            let dst = &mut buf[(from - offset) as usize..(to - offset) as usize];
            // A file that shrank since the snapshot reads as zeros past its end.
            let mut done = 0;
            while done < dst.len() {
                let n = FileExt::read_at(&file, &mut dst[done..], from - off + done as u64)?;
                if n == 0 {
                    break;
                }
                done += n;
            }
        }
        Ok(())
    }
}

/// Checks a relative path from an image: `/`-separated, no empty, `.` or `..` components.
fn check_path(p: &str) -> std::result::Result<(), String> {
    if p.is_empty() {
        return Err("an empty path".into());
    }
    if p.starts_with('/') {
        return Err(format!("absolute path {p:?}"));
    }
    if p.contains('\0') {
        return Err(format!("path {p:?} holds a NUL byte"));
    }
    if let Some(c) = p
        .split('/')
        .find(|c| c.is_empty() || *c == "." || *c == "..")
    {
        return Err(format!("path {p:?} has a {c:?} component"));
    }
    Ok(())
}

fn set_mtime(file: &File, mtime: Option<(i64, u32)>) {
    if let Some((s, n)) = mtime {
        if let (Ok(s), true) = (u64::try_from(s), n < 1_000_000_000) {
            let _ = file.set_modified(UNIX_EPOCH + Duration::new(s, n));
        }
    }
}

fn read_index(image: &File, what: &str) -> Result<(Index, u64)> {
    let bad = |why: String| Error::invalid(what.to_owned(), why);
    let len = image
        .metadata()
        .map_err(|e| Error::io("stat", what.to_owned(), e))?
        .len();
    let mut prefix = [0u8; PREFIX as usize];
    image
        .read_exact_at(&mut prefix, 0)
        .map_err(|_| bad("it is too short to be a vfs backup image".into()))?;
    if &prefix[..8] != MAGIC {
        return Err(bad("it is not a vfs backup image (bad magic)".into()));
    }
    let n = u64::from_le_bytes(prefix[8..].try_into().expect("8 bytes"));
    if n > MAX_INDEX || PREFIX + n > len {
        return Err(bad(format!(
            "its index length {n} does not fit the {len}-byte image"
        )));
    }
    let mut json = vec![0u8; n as usize];
    image
        .read_exact_at(&mut json, PREFIX)
        .map_err(|e| Error::io("read", what.to_owned(), e))?;
    let index: Index =
        serde_json::from_slice(&json).map_err(|e| bad(format!("its index is not valid: {e}")))?;
    if index.version != VERSION {
        return Err(bad(format!(
            "its format version {} is not {VERSION}",
            index.version
        )));
    }
    Ok((index, len))
}

/// Checks every entry of an image before anything is written: paths are relative and clean,
/// unique, and each parent is a directory listed earlier (so nothing is ever created through a
/// symlink), file data lies inside the image, symlinks have a target.
fn check_index(index: &Index, len: u64, what: &str) -> Result<()> {
    let bad = |why: String| Error::invalid(what.to_owned(), why);
    let mut kinds: BTreeMap<&str, Kind> = BTreeMap::new();
    for e in &index.entries {
        check_path(&e.path).map_err(|w| bad(format!("its index has {w}")))?;
        if let Some((parent, _)) = e.path.rsplit_once('/') {
            if kinds.get(parent) != Some(&Kind::Dir) {
                return Err(bad(format!(
                    "entry {:?} is not inside a directory listed before it",
                    e.path
                )));
            }
        }
        if kinds.insert(&e.path, e.kind).is_some() {
            return Err(bad(format!("entry {:?} is listed twice", e.path)));
        }
        match e.kind {
            Kind::File => {
                let end = e.offset.checked_add(e.size);
                if end.is_none_or(|end| end > len) {
                    return Err(bad(format!(
                        "file {:?} ({} bytes at {}) lies outside the {len}-byte image",
                        e.path, e.size, e.offset
                    )));
                }
            }
            Kind::Symlink => match &e.target {
                Some(t) if !t.is_empty() && !t.contains('\0') => {}
                _ => return Err(bad(format!("symlink {:?} has no valid target", e.path))),
            },
            Kind::Dir => {}
        }
    }
    Ok(())
}

/// Copies `size` bytes at `offset` of `image` into a new file, leaving zero blocks as holes.
fn copy_out(image: &File, offset: u64, size: u64, to: &Path) -> Result<File> {
    let out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)
        .map_err(|e| Error::io("create", to, e))?;
    let mut buf = vec![0u8; (1 << 20).min(size) as usize];
    let mut done = 0u64;
    while done < size {
        let n = (size - done).min(buf.len() as u64) as usize;
        image
            .read_exact_at(&mut buf[..n], offset + done)
            .map_err(|e| Error::io("read restored image", to, e))?;
        for (i, piece) in buf[..n].chunks(HOLE_GRAIN).enumerate() {
            if piece.iter().any(|b| *b != 0) {
                out.write_all_at(piece, done + (i * HOLE_GRAIN) as u64)
                    .map_err(|e| Error::io("write", to, e))?;
            }
        }
        done += n as u64;
    }
    out.set_len(size)
        .map_err(|e| Error::io("truncate", to, e))?;
    out.sync_all().map_err(|e| Error::io("sync", to, e))?;
    Ok(out)
}

/// Builds the tree an image holds in `dest` (which must not exist). Everything is checked
/// before the first write; on error the caller removes `dest`.
pub(crate) fn materialize(image_path: &Path, dest: &Path, what: &str) -> Result<()> {
    let image = File::open(image_path).map_err(|e| Error::io("open", image_path, e))?;
    let (index, len) = read_index(&image, what)?;
    check_index(&index, len, what)?;
    fs::create_dir(dest).map_err(|e| Error::io("create directory", dest, e))?;
    for e in &index.entries {
        let to = dest.join(&e.path);
        match e.kind {
            Kind::Dir => {
                fs::create_dir(&to).map_err(|err| Error::io("create directory", &to, err))?
            }
            Kind::File => {
                let f = copy_out(&image, e.offset, e.size, &to)?;
                f.set_permissions(fs::Permissions::from_mode(e.mode & 0o7777))
                    .map_err(|err| Error::io("chmod", &to, err))?;
                set_mtime(&f, e.mtime);
            }
            Kind::Symlink => {
                let target = e.target.as_deref().unwrap_or_default();
                symlink(target, &to).map_err(|err| Error::io("create symlink", &to, err))?
            }
        }
    }
    // Directories last (children first) so their modes and times stick.
    let dirs = index.entries.iter().filter(|e| e.kind == Kind::Dir).rev();
    for (path, mode, mtime) in dirs.map(|e| (dest.join(&e.path), e.mode, e.mtime)).chain([(
        dest.to_path_buf(),
        index.root_mode,
        None,
    )]) {
        let f = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
        f.sync_all().map_err(|e| Error::io("sync", &path, e))?;
        set_mtime(&f, mtime);
        fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7777))
            .map_err(|e| Error::io("chmod", &path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked() {
        for bad in ["", "/etc/x", "../x", "a/../../x", "a//b", "./a", "a/."] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "a/b", "..a", "a..b/c"] {
            assert!(check_path(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn image_round_trips_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("d/e")).unwrap();
        fs::write(src.join("d/f"), b"hello").unwrap();
        fs::write(src.join("empty"), b"").unwrap();
        symlink("d/f", src.join("l")).unwrap();
        let (img, _) = TreeImage::scan(&src, 65536, None).unwrap();
        assert_eq!(img.size() % 65536, 0);
        let mut bytes = vec![0u8; img.size() as usize];
        img.read_at(0, &mut bytes).unwrap();
        let path = dir.path().join("img");
        fs::write(&path, &bytes).unwrap();
        materialize(&path, &dir.path().join("out"), "test image").unwrap();
        assert_eq!(fs::read(dir.path().join("out/d/f")).unwrap(), b"hello");
        assert!(dir.path().join("out/d/e").is_dir());
        assert_eq!(
            fs::read_link(dir.path().join("out/l")).unwrap(),
            Path::new("d/f")
        );
    }
}
