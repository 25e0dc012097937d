//! Unit tests of the metrics: names, labels, credential stripping, the endpoint.
//!
//! The event metrics are process-global, so each test uses label values of its own.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use convoy_core::{Info, Volume};

use super::state::State;
use super::*;

/// The whole exposition with an empty state.
fn exposition() -> String {
    endpoint::encode(enable(), &State::default()).unwrap()
}

/// The value of the sample line that starts with `series` (name and labels, exactly).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.split(' ').next().unwrap().parse().unwrap())
}

#[test]
fn destination_labels_never_carry_credentials_or_queries() {
    for (url, label) in [
        (
            "vfs:///srv/backups?backup=backup-1&volume=v1",
            "vfs:///srv/backups",
        ),
        ("vfs:///srv/backups", "vfs:///srv/backups"),
        (
            "s3://bucket@us-west-2/some/path",
            "s3://bucket@us-west-2/some/path",
        ),
        ("s3://AKIAX:s3cr3t-value@bucket/p", "s3://bucket/p"),
        ("s3://AKIAX:s3cr3t@value@bucket/p?x=1", "s3://bucket/p"),
        ("s3://bucket/p?aws_secret_access_key=k", "s3://bucket/p"),
        ("s3://bucket#frag", "s3://bucket"),
        ("  vfs:///a/b  ", "vfs:///a/b"),
        ("/not/a/url:secret", "invalid"),
    ] {
        let got = destination_label(url);
        assert_eq!(got, label, "{url}");
        assert!(!got.contains("s3cr3t") && !got.contains('?'), "{got}");
    }
}

#[test]
fn policy_runs_set_counters_and_the_last_success() {
    enable();
    record_policy_run("pvol-a", "default", "backup", true, 1_700_000_000);
    record_policy_run("pvol-a", "default", "backup", false, 1_700_000_100);
    record_policy_run("pvol-a", "default", "backup", true, 1_700_000_200);
    record_policy_run("pvol-b", "default", "snapshot", false, 1_700_000_300);
    let text = exposition();
    assert!(text.contains("# TYPE convoy_policy_runs counter"), "{text}");
    assert!(
        text.contains("# TYPE convoy_policy_last_success_timestamp_seconds gauge"),
        "{text}"
    );
    let runs = |volume: &str, action: &str, result: &str| {
        sample(
            &text,
            &format!(
                "convoy_policy_runs_total{{volume=\"{volume}\",policy=\"default\",action=\"{action}\",result=\"{result}\"}}"
            ),
        )
    };
    assert_eq!(runs("pvol-a", "backup", "success"), Some(2.0), "{text}");
    assert_eq!(runs("pvol-a", "backup", "failure"), Some(1.0), "{text}");
    assert_eq!(runs("pvol-b", "snapshot", "failure"), Some(1.0), "{text}");
    assert_eq!(
        sample(
            &text,
            "convoy_policy_last_success_timestamp_seconds{volume=\"pvol-a\",policy=\"default\",action=\"backup\"}"
        ),
        Some(1_700_000_200.0),
        "{text}"
    );
    // A volume whose runs all failed has no last success.
    assert!(
        !text.contains("convoy_policy_last_success_timestamp_seconds{volume=\"pvol-b\""),
        "{text}"
    );
}

#[test]
fn transfers_count_by_stripped_destination() {
    enable();
    let dest = "s3://KEY:topsecret@unit-bucket/t1";
    Transfer::start(TransferKind::Backup, dest).finish::<()>(Ok(4096));
    Transfer::start(TransferKind::Backup, &format!("{dest}?backup=b2")).finish(Err(()));
    drop(Transfer::start(
        TransferKind::Restore,
        "vfs:///unit/t1?backup=b&volume=v",
    ));
    Transfer::start(TransferKind::Restore, "vfs:///unit/t1?backup=b&volume=v")
        .finish::<()>(Ok(1000));
    let text = exposition();
    assert!(!text.contains("topsecret"), "{text}");
    let b = "{destination=\"s3://unit-bucket/t1\"}";
    let r = "{destination=\"vfs:///unit/t1\"}";
    assert_eq!(
        sample(&text, &format!("convoy_backups_started_total{b}")),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, &format!("convoy_backups_succeeded_total{b}")),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, &format!("convoy_backups_failed_total{b}")),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, &format!("convoy_backup_bytes_total{b}")),
        Some(4096.0)
    );
    assert_eq!(
        sample(&text, &format!("convoy_restores_started_total{r}")),
        Some(2.0)
    );
    // Dropped unfinished: a failure.
    assert_eq!(
        sample(&text, &format!("convoy_restores_failed_total{r}")),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, &format!("convoy_restore_bytes_total{r}")),
        Some(1000.0)
    );
    assert_eq!(
        sample(
            &text,
            "convoy_backup_duration_seconds_count{destination=\"s3://unit-bucket/t1\",result=\"failure\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert!(text.contains("# TYPE convoy_restore_duration_seconds histogram"));
    assert!(text.ends_with("# EOF\n"));
}

fn volume(name: &str, driver: &str, info: &[(&str, &str)], snapshots: usize) -> Volume {
    Volume {
        name: name.into(),
        driver: driver.into(),
        mount_point: None,
        created_time: String::new(),
        driver_info: info
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        snapshots: (0..snapshots)
            .map(|i| {
                (
                    format!("{name}-s{i}"),
                    convoy_core::Snapshot {
                        name: format!("{name}-s{i}"),
                        volume_name: name.into(),
                        volume_created_at: String::new(),
                        created_time: String::new(),
                        driver_info: BTreeMap::new(),
                    },
                )
            })
            .collect(),
    }
}

fn section(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn state_shows_pools_drivers_and_volumes() {
    let mut info = Info::default();
    info.drivers.insert(
        "devicemapper".into(),
        section(&[
            ("ThinpoolDevice", "/dev/mapper/convoy-pool"),
            ("ThinpoolBlockSize", "2097152"),
            ("ThinpoolUsedBlocks", "850"),
            ("ThinpoolTotalBlocks", "1000"),
            ("ThinpoolMetadataUsedBlocks", "210"),
            ("ThinpoolMetadataTotalBlocks", "16384"),
            ("ThinpoolFillLevel", "warn"),
            ("ThinpoolFillWarnPercent", "80"),
            ("ThinpoolFillRefusePercent", "95"),
        ]),
    );
    info.drivers
        .insert("vfs".into(), section(&[("Driver", "vfs"), ("Path", "/v")]));
    info.drivers
        .insert("other".into(), section(&[("Degraded", "no pool")]));
    let volumes = [
        volume("d1", "devicemapper", &[("Size", "1073741824")], 2),
        volume("d2", "devicemapper", &[("Size", "2147483648")], 0),
        volume("v1", "vfs", &[("Path", "/v/v1")], 1),
    ];
    let allocated = BTreeMap::from([("d1".to_string(), 4_194_304u64)]);
    let state = State::from_parts(&info, &volumes, &allocated);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &state.registry()).unwrap();
    for (series, value) in [
        ("convoy_volumes{driver=\"devicemapper\"}", 2.0),
        ("convoy_volumes{driver=\"vfs\"}", 1.0),
        ("convoy_volumes{driver=\"other\"}", 0.0),
        ("convoy_snapshots{driver=\"devicemapper\"}", 2.0),
        ("convoy_snapshots{driver=\"vfs\"}", 1.0),
        ("convoy_driver_degraded{driver=\"other\"}", 1.0),
        ("convoy_driver_degraded{driver=\"vfs\"}", 0.0),
        ("convoy_pool_data_used_blocks{pool=\"convoy-pool\"}", 850.0),
        ("convoy_pool_data_size_blocks{pool=\"convoy-pool\"}", 1000.0),
        (
            "convoy_pool_metadata_used_blocks{pool=\"convoy-pool\"}",
            210.0,
        ),
        (
            "convoy_pool_metadata_size_blocks{pool=\"convoy-pool\"}",
            16384.0,
        ),
        (
            "convoy_pool_block_size_bytes{pool=\"convoy-pool\"}",
            2_097_152.0,
        ),
        ("convoy_pool_fill_level{pool=\"convoy-pool\"}", 1.0),
        (
            "convoy_pool_fill_threshold_ratio{pool=\"convoy-pool\",threshold=\"warn\"}",
            0.8,
        ),
        (
            "convoy_pool_fill_threshold_ratio{pool=\"convoy-pool\",threshold=\"refuse\"}",
            0.95,
        ),
        (
            "convoy_volume_size_bytes{volume=\"d1\",driver=\"devicemapper\"}",
            1_073_741_824.0,
        ),
        (
            "convoy_volume_allocated_bytes{volume=\"d1\",driver=\"devicemapper\"}",
            4_194_304.0,
        ),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }
    // vfs volumes have no size; d2's device reported no allocation.
    assert!(!text.contains("volume=\"v1\""), "{text}");
    assert!(
        !text.contains("convoy_volume_allocated_bytes{volume=\"d2\""),
        "{text}"
    );
    assert!(
        text.contains("# UNIT convoy_pool_block_size_bytes bytes"),
        "{text}"
    );
}

/// Sends `GET path` to `address`; answers the whole HTTP/1.1 response.
fn get(address: std::net::SocketAddr, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_serves_openmetrics_and_refuses_a_used_port() {
    let dir = tempfile::tempdir().unwrap();
    let manager = convoy_core::VolumeManager::open(convoy_core::ManagerConfig {
        root: dir.path().join("root"),
        drivers: vec!["vfs".into()],
        driver_opts: BTreeMap::from([(
            "vfs.path".to_string(),
            dir.path().join("vols").display().to_string(),
        )]),
    })
    .await
    .unwrap();
    manager
        .create_volume(
            convoy_core::CreateVolumeRequest {
                name: Some("ep-vol".into()),
                ..Default::default()
            },
            std::sync::Arc::new(convoy_core::NoProgress),
        )
        .await
        .unwrap();
    let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), manager.clone()).unwrap();
    let address = server.address();
    let answer = tokio::task::spawn_blocking(move || get(address, "/metrics"))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{answer}"
    );
    assert_eq!(sample(&answer, "convoy_volumes{driver=\"vfs\"}"), Some(1.0));
    assert!(answer.contains("# TYPE convoy_volumes gauge"), "{answer}");
    assert!(answer.trim_end().ends_with("# EOF"), "{answer}");

    // The port is taken: a clear error naming the flag and the address.
    let err = MetricsServer::start(address, manager.clone()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("--metrics-listen") && msg.contains(&address.to_string()),
        "{msg}"
    );

    // Dropped: the port is free again.
    drop(server);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    drop(std::net::TcpListener::bind(address).unwrap());
}

#[test]
fn bad_listen_addresses_name_the_flag() {
    assert_eq!(
        parse_listen_address("127.0.0.1:9898").unwrap().to_string(),
        "127.0.0.1:9898"
    );
    parse_listen_address("[::1]:9898").unwrap();
    for bad in ["9898", "localhost", "127.0.0.1", "1.2.3.4:99999", ""] {
        let msg = parse_listen_address(bad).unwrap_err().to_string();
        assert!(
            msg.contains("--metrics-listen") && msg.contains("ADDR:PORT"),
            "{msg}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_timed_by_route_template() {
    enable();
    let app = axum::Router::new()
        .route("/unit-test/{name}", axum::routing::get(|| async { "ok" }))
        .layer(axum::middleware::from_fn(track_request));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(async move { axum::serve(listener, app).await });
    let answers = tokio::task::spawn_blocking(move || {
        [
            get(address, "/unit-test/a"),
            get(address, "/unit-test/b"),
            get(address, "/unit-test-nowhere/secret-name"),
        ]
    })
    .await
    .unwrap();
    task.abort();
    assert!(answers[0].starts_with("HTTP/1.1 200"), "{}", answers[0]);
    let text = exposition();
    assert_eq!(
        sample(
            &text,
            "convoy_http_request_duration_seconds_count{route=\"/unit-test/{name}\",method=\"GET\",status=\"200\"}"
        ),
        Some(2.0),
        "{text}"
    );
    assert!(!text.contains("secret-name"), "{text}");
    assert!(
        text.contains("route=\"unmatched\",method=\"GET\",status=\"404\""),
        "{text}"
    );
}
