//! The fixture builder's output is accepted by Debian's thin_check and read identically by
//! thin_dump and by our reader; thin_delta agrees with our delta on shared trees.

mod common;

use common::{our_delta, our_dump, their_delta, thin_check, tool};
use convoy_thinmeta::builder::{BuilderConfig, MetadataBuilder};

#[test]
fn small_shared_snapshot_passes_thin_check() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = MetadataBuilder::new(BuilderConfig::default());
    b.create_thin_with(1, (0..2000).map(|v| (v, v, 0)), 100)
        .unwrap();
    b.create_snapshot(1, 2).unwrap();
    b.create_snapshot(1, 3).unwrap();
    b.insert(1, 5, 5000, 1).unwrap();
    b.insert(2, 1500, 6000, 1).unwrap();
    let path = dir.path().join("m");
    b.write_file(&path).unwrap();
    thin_check(&path);
    assert_eq!(
        our_dump(&path),
        tool("thin_dump", &[path.to_str().unwrap()])
    );
    for (l, r) in [(1, 2), (2, 1), (1, 3), (2, 3)] {
        for v in [false, true] {
            assert_eq!(
                our_delta(&path, l, r, v, false),
                their_delta(&path, l, r, v, false)
            );
        }
    }
}

/// thin_check really checks the metadata reference counts our builder writes: lowering the
/// count of the root shared by an origin and its snapshot makes it fail.
#[test]
fn thin_check_notices_a_wrong_shared_node_count() {
    use convoy_thinmeta::checksum::{seal, BITMAP_SALT};
    use convoy_thinmeta::ThinMetadata;
    let dir = tempfile::tempdir().unwrap();
    let mut b = MetadataBuilder::new(BuilderConfig::default());
    b.create_thin_with(1, (0..500).map(|v| (v, v, 0)), 100)
        .unwrap();
    b.create_snapshot(1, 2).unwrap();
    let path = dir.path().join("m");
    b.write_file(&path).unwrap();
    thin_check(&path);

    let mut md = ThinMetadata::open(std::fs::File::open(&path).unwrap()).unwrap();
    let root = md.device_root(1).unwrap();
    assert_eq!(root, md.device_root(2).unwrap());
    let index = md.superblock().metadata_space_map.bitmap_root;
    let mut img = std::fs::read(&path).unwrap();
    let at = |b: u64, off: usize| b as usize * 4096 + off;
    let bitmap = u64::from_le_bytes(img[at(index, 16)..at(index, 24)].try_into().unwrap());
    // Entry `root` of the bitmap: 2 bits, high bit at 2j, low bit at 2j+1 of its 64-bit word.
    let byte = at(bitmap, 16 + root as usize / 4);
    let shift = (root % 4) * 2;
    assert_eq!(
        (img[byte] >> shift) & 3,
        1,
        "count 2 = high bit set, low bit clear"
    );
    img[byte] = (img[byte] & !(3 << shift)) | (2 << shift); // count 1
    let block: &mut [u8; 4096] = (&mut img[at(bitmap, 0)..at(bitmap, 4096)])
        .try_into()
        .unwrap();
    seal(block, BITMAP_SALT);
    std::fs::write(&path, &img).unwrap();
    let out = std::process::Command::new("thin_check")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success(), "thin_check accepted a wrong count");
}
