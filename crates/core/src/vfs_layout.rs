//! Where the files of a vfs backup image lie (`vfs_image`), kept per snapshot so that the next
//! backup of the volume puts its unchanged files at the same offsets. The block store then
//! carries their chunks over from the parent backup without reading them: vfs volumes back up
//! incrementally, as the thin-delta path lets devicemapper volumes do.
//!
//! A file is unchanged when the parent's layout holds it with the same path, size and
//! modification time (seconds and nanoseconds), the rule rsync uses by default. Snapshot copies
//! keep the volume's modification times, so an untouched file keeps its place snapshot after
//! snapshot. A changed or new file goes into the first gap big enough (left by deleted or
//! changed files) or at the end; the space it left becomes a gap, read as zeros, so the new
//! backup holds no chunk of a deleted file. When gaps make the image more than twice the live
//! data, or the index outgrows the room kept for it, the next layout starts afresh (a full
//! backup).
//!
//! A snapshot's layout is computed once, saved (`<vfs.path>/.layouts/<snapshot uuid>.json`)
//! before its first backup starts, and reused by every later backup of that snapshot: a backup
//! made from it and a child's incremental against it always agree on the offsets.

use std::ops::Range;

use serde::{Deserialize, Serialize};

/// Version of the saved layout.
pub(crate) const LAYOUT_VERSION: u32 = 1;

/// One regular file's place in the image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Placed {
    /// Relative path, as in the image's index.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// Modification time (seconds, nanoseconds) when the snapshot was scanned.
    pub mtime: Option<(i64, u32)>,
    /// Where its bytes start in the image (a multiple of the alignment).
    pub offset: u64,
}

/// A snapshot's image layout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Layout {
    pub version: u32,
    /// Alignment of every file (the backup chunk size).
    pub align: u64,
    /// Bytes kept for the head (magic, length, index); the first file starts here or later.
    pub data_start: u64,
    /// The image's size.
    pub size: u64,
    /// Every regular file, in the walk's (path) order.
    pub files: Vec<Placed>,
}

/// A regular file to place: path, size, modification time.
pub(crate) type FileMeta = (String, u64, Option<(i64, u32)>);

fn align_up(n: u64, a: u64) -> u64 {
    n.div_ceil(a) * a
}

/// The image size for data ending at `end`: a quarter more (zeros, stored as holes), so that
/// later snapshots can add files without changing the size, which would need a full backup.
fn with_slack(end: u64, data_start: u64, align: u64) -> u64 {
    align_up(end + (end - data_start) / 4, align).max(align)
}

/// Whether `p` (of an older layout) holds the same bytes as the file `path` of `size` bytes
/// modified at `mtime`, by the unchanged-file rule.
fn same_file(p: &Placed, path: &str, size: u64, mtime: Option<(i64, u32)>) -> bool {
    p.path == path && p.size == size && p.mtime.is_some() && p.mtime == mtime
}

/// Places `files` after a head of `head_len` bytes, reusing `base`'s offsets for unchanged
/// files. `None` when `base` cannot be followed (another alignment or version, the head does
/// not fit in its room, or the image would be more than twice the live data): the caller
/// places afresh with `base` `None`, which always succeeds.
pub(crate) fn place(
    files: &[FileMeta],
    align: u64,
    head_len: u64,
    base: Option<&Layout>,
) -> Option<Layout> {
    let Some(base) = base else {
        // Room for the index to grow by half before a layout must start afresh.
        let data_start = align_up(head_len + head_len / 2, align).max(align);
        let mut at = data_start;
        let placed = files
            .iter()
            .map(|(path, size, mtime)| {
                let offset = at;
                at = align_up(at + size, align);
                Placed {
                    path: path.clone(),
                    size: *size,
                    mtime: *mtime,
                    offset,
                }
            })
            .collect();
        return Some(Layout {
            version: LAYOUT_VERSION,
            align,
            data_start,
            size: with_slack(at, data_start, align),
            files: placed,
        });
    };
    if base.version != LAYOUT_VERSION || base.align != align || head_len > base.data_start {
        return None;
    }
    let old: std::collections::HashMap<&str, &Placed> =
        base.files.iter().map(|p| (p.path.as_str(), p)).collect();
    let kept: Vec<Option<u64>> = files
        .iter()
        .map(|f| {
            old.get(f.0.as_str())
                .filter(|p| same_file(p, &f.0, f.1, f.2))
                .map(|p| p.offset)
        })
        .collect();
    // The extents of kept files, then the gaps between them.
    let mut used: Vec<Range<u64>> = files
        .iter()
        .zip(&kept)
        .filter_map(|(f, k)| k.filter(|_| f.1 > 0).map(|o| o..align_up(o + f.1, align)))
        .collect();
    used.sort_by_key(|r| r.start);
    let mut gaps = Vec::new();
    let mut at = base.data_start;
    for r in &used {
        if r.start > at {
            gaps.push(at..r.start);
        }
        at = at.max(r.end);
    }
    let mut tail = at.max(base.size);
    if base.size > at {
        gaps.push(at..base.size);
    }
    let mut placed = Vec::with_capacity(files.len());
    let mut live = base.data_start;
    for ((path, size, mtime), k) in files.iter().zip(&kept) {
        let need = align_up(*size, align);
        live += need;
        let offset = match k {
            Some(o) => *o,
            None if *size == 0 => base.data_start,
            None => match gaps.iter_mut().find(|g| g.end - g.start >= need) {
                Some(g) => {
                    g.start += need;
                    g.start - need
                }
                None => {
                    tail += need;
                    tail - need
                }
            },
        };
        placed.push(Placed {
            path: path.clone(),
            size: *size,
            mtime: *mtime,
            offset,
        });
    }
    // The store takes a parent only for a backup of the same size: keep the size while new
    // files fit, and grow with slack when they do not (that backup is a full one).
    let size = if tail > base.size {
        with_slack(tail, base.data_start, align)
    } else {
        base.size
    };
    if size > 2 * live + 16 * align {
        return None;
    }
    Some(Layout {
        version: LAYOUT_VERSION,
        align,
        data_start: base.data_start,
        size,
        files: placed,
    })
}

/// The byte ranges of `new`'s image to read when `parent`'s backup is its parent: the head,
/// the new and changed files, and the parent's files that are gone from their place (read as
/// zeros, they become holes); unchanged files at the same offset are carried over unread.
/// `None` when the two layouts do not line up (alignment, head room, or another image size, which the store
/// refuses for an incremental): back up in full.
pub(crate) fn changed_ranges(new: &Layout, parent: &Layout) -> Option<Vec<Range<u64>>> {
    if new.version != parent.version
        || new.align != parent.align
        || new.data_start != parent.data_start
        || new.size != parent.size
    {
        return None;
    }
    let old: std::collections::HashMap<&str, &Placed> =
        parent.files.iter().map(|p| (p.path.as_str(), p)).collect();
    let same_place = |f: &Placed| {
        old.get(f.path.as_str())
            .is_some_and(|p| p.offset == f.offset && same_file(p, &f.path, f.size, f.mtime))
    };
    let extent = |f: &Placed| f.offset..align_up(f.offset + f.size, new.align);
    // Read: the head, every new or changed file, and every place the parent had a file that
    // is not there unchanged now (read as zeros: holes). Gaps in both stay unread: the parent
    // has no chunk there either.
    let kept: std::collections::HashSet<(&str, u64)> = new
        .files
        .iter()
        .filter(|f| same_place(f))
        .map(|f| (f.path.as_str(), f.offset))
        .collect();
    let mut read: Vec<Range<u64>> = Vec::with_capacity(new.files.len() + 1);
    read.push(0..new.data_start);
    read.extend(
        new.files
            .iter()
            .filter(|f| f.size > 0 && !kept.contains(&(f.path.as_str(), f.offset)))
            .map(extent),
    );
    read.extend(
        parent
            .files
            .iter()
            .filter(|p| p.size > 0 && !kept.contains(&(p.path.as_str(), p.offset)))
            .map(extent),
    );
    read.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(read.len());
    for r in read {
        match out.last_mut() {
            Some(last) if last.end >= r.start => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: u64 = 4096;

    fn f(path: &str, size: u64, t: i64) -> FileMeta {
        (path.to_string(), size, Some((t, 0)))
    }

    fn offset(l: &Layout, path: &str) -> u64 {
        l.files.iter().find(|p| p.path == path).unwrap().offset
    }

    /// No two files overlap and every one lies after the head and inside the image.
    fn check(l: &Layout) {
        let mut ext: Vec<Range<u64>> = l
            .files
            .iter()
            .filter(|p| p.size > 0)
            .map(|p| p.offset..p.offset + p.size)
            .collect();
        ext.sort_by_key(|r| r.start);
        for w in ext.windows(2) {
            assert!(w[0].end <= w[1].start, "{w:?} overlap");
        }
        for r in &ext {
            assert!(r.start >= l.data_start && r.end <= l.size && r.start % l.align == 0);
        }
    }

    #[test]
    fn a_fresh_layout_places_files_in_order_after_room_for_the_head() {
        let l = place(
            &[f("a", 5000, 1), f("b", 0, 1), f("c", 1, 1)],
            A,
            3000,
            None,
        )
        .unwrap();
        check(&l);
        assert_eq!(
            l.data_start, 8192,
            "3000 bytes of head and half as much room"
        );
        assert_eq!(offset(&l, "a"), 8192);
        assert_eq!(offset(&l, "c"), 16384);
        assert_eq!(
            l.size, 24576,
            "files end at 20480, a quarter of slack, aligned"
        );
    }

    #[test]
    fn unchanged_files_keep_their_offsets_and_only_the_rest_is_read() {
        let files = [f("a", 5000, 1), f("b", 100, 1), f("c", 9000, 1)];
        let p = place(&files, A, 100, None).unwrap();
        // b changes (new mtime), d is new, c unchanged.
        let files2 = [
            f("a", 5000, 1),
            f("b", 100, 2),
            f("c", 9000, 1),
            f("d", 10, 1),
        ];
        let n = place(&files2, A, 200, Some(&p)).unwrap();
        check(&n);
        assert_eq!(offset(&n, "a"), offset(&p, "a"));
        assert_eq!(offset(&n, "c"), offset(&p, "c"));
        // b is rewritten where it was (its old place became a gap, the first to fit).
        assert_eq!(offset(&n, "b"), offset(&p, "b"));
        let ranges = changed_ranges(&n, &p).unwrap();
        let a = offset(&n, "a");
        let c = offset(&n, "c");
        // Read: the head, b's slot, and everything after c (d at the end).
        assert_eq!(ranges[0], 0..a);
        assert!(ranges.iter().all(|r| r.end <= a || r.start >= a + 8192));
        assert!(ranges.iter().all(|r| r.end <= c || r.start >= c + 12288));
        assert!(ranges.iter().any(|r| r.contains(&offset(&n, "b"))));
        assert!(ranges.iter().any(|r| r.contains(&offset(&n, "d"))));
    }

    #[test]
    fn a_deleted_file_leaves_a_gap_that_is_read_as_zeros_and_reused() {
        let p = place(&[f("a", 3 * A, 1), f("b", A, 1)], A, 100, None).unwrap();
        let n = place(&[f("b", A, 1)], A, 100, Some(&p)).unwrap();
        let a = offset(&p, "a");
        let ranges = changed_ranges(&n, &p).unwrap();
        assert!(
            ranges.iter().any(|r| r.start <= a && r.end >= a + 3 * A),
            "a's old place is read (zeros, holes): {ranges:?}"
        );
        let n2 = place(&[f("b", A, 1), f("c", 2 * A, 5)], A, 100, Some(&n)).unwrap();
        check(&n2);
        assert_eq!(offset(&n2, "c"), a, "the first gap that fits");
        assert_eq!(n2.size, p.size, "no growth");
    }

    #[test]
    fn layouts_that_do_not_line_up_are_refused() {
        let p = place(&[f("a", A, 1)], A, 100, None).unwrap();
        // The head outgrew its room.
        assert!(place(&[f("a", A, 1)], A, p.data_start + 1, Some(&p)).is_none());
        // Another alignment.
        assert!(place(&[f("a", A, 1)], 2 * A, 100, Some(&p)).is_none());
        let mut other = p.clone();
        other.data_start += A;
        assert!(changed_ranges(&other, &p).is_none());
        let mut bigger = p.clone();
        bigger.size += A;
        assert!(changed_ranges(&bigger, &p).is_none());
        // A file without a modification time is never taken as unchanged.
        let q = place(&[("a".into(), A, None)], A, 100, None).unwrap();
        let r = place(&[("a".into(), A, None)], A, 100, Some(&q)).unwrap();
        assert_eq!(changed_ranges(&r, &q).unwrap(), vec![0..2 * A]);
    }

    #[test]
    fn a_file_that_keeps_growing_stays_within_twice_the_live_data() {
        let mut l = place(&[f("big", 64 * A, 1)], A, 100, None).unwrap();
        for t in 2..200u64 {
            // The file grows by one block each time: it never fits its old place alone.
            let files = [f("big", (64 + t) * A, t as i64)];
            let n = place(&files, A, 100, Some(&l))
                .unwrap_or_else(|| place(&files, A, 100, None).unwrap());
            check(&n);
            assert!(n.size <= 2 * (n.data_start + (64 + t) * A) + 16 * A);
            l = n;
        }
    }

    #[test]
    fn an_image_mostly_made_of_gaps_starts_afresh() {
        let files: Vec<FileMeta> = (0..100).map(|i| f(&format!("f{i:03}"), A, 1)).collect();
        let p = place(&files, A, 100, None).unwrap();
        // 99 files deleted, one kept at the far end: the image would stay 100 blocks.
        let n = place(&[f("f099", A, 1)], A, 100, Some(&p));
        assert!(n.is_none(), "{n:?}");
        // Three quarters of them kept: followed, at the same size.
        let most: Vec<FileMeta> = files
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 4 != 0)
            .map(|(_, f)| f.clone())
            .collect();
        assert_eq!(place(&most, A, 100, Some(&p)).unwrap().size, p.size);
    }
}
