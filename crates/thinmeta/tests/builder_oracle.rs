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
