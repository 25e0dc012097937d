//! VM tier: runs the embedding example (`examples/lifecycle.rs`) on loop devices.

mod common;

#[allow(dead_code)]
#[path = "../examples/lifecycle.rs"]
mod lifecycle;

use common::{Fixture, MIB};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
async fn dm_example_life_cycle_runs() {
    let fx = Fixture::new("example", 4096, "ext4", 1024 * MIB);
    let out = lifecycle::run(
        fx.data.path().to_str().unwrap(),
        fx.meta.path().to_str().unwrap(),
        fx.root(),
        &fx.backups(),
        &fx.pool_name,
    )
    .await
    .unwrap();
    assert!(out.backup_url.contains("?backup="), "{out:?}");
    assert_eq!(out.restored, "example-restored");
}
