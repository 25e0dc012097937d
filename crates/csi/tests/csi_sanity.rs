//! csi-sanity's cases (`tests/sanity`, the conformance suite's checks as Rust) against a daemon
//! with the vfs driver, started by the same `launch::serve` as `convoyd --csi-endpoint`, with
//! csi-sanity's defaults (10 GiB volumes, idempotent count 10). The Node cases bind-mount:
//! they need root. The devicemapper run of the same cases is in `dm_csi.rs`.

mod sanity;
mod support;

use support::{is_root, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csi_sanity_cases_pass_on_vfs() {
    if !is_root() {
        eprintln!("SKIPPED: the Node cases bind-mount, which needs root");
        return;
    }
    let server = Server::vfs().await;
    let base = server.dir.join("sanity");
    std::fs::create_dir(&base).unwrap();
    let config = sanity::Config::with_size(10 * sanity::GIB);
    let report = sanity::run(server.channel().await, &base, config, &sanity::all_cases()).await;
    report.assert_passed("csi-sanity cases, vfs driver");
    // A vfs daemon has no block devices: it declares no expansion, so csi-sanity skips those
    // cases (and convoy's SnapshotMetadata service is not declared either).
    for (group, name) in [
        ("ExpandVolume [Controller Server]", "should work"),
        (
            "Node Service",
            "NodeExpandVolume should work if node-expand is called after node-publish",
        ),
    ] {
        assert!(
            matches!(
                report.outcome(group, name),
                Some(Ok(sanity::Outcome::Skip(_)))
            ),
            "{group} / {name}: expected a skip on vfs"
        );
    }
    server.stop().await;
}
