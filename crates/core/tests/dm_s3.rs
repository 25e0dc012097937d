//! VM tier: backups of a devicemapper volume to `s3://` (an in-process s3s-fs server), full
//! and incremental, restored and compared.

mod common;

use std::sync::Arc;

use common::{checksum, thin_checksum, write_file, Fixture, MIB};
use convoy_core::{BackupKind, CreateVolumeRequest, NoProgress, StoreOptions};

/// Starts the test rig's S3 server (s3s-fs) on 127.0.0.1 with bucket `convoy-core`, and points
/// this process's AWS credentials file at its credentials.
async fn s3_server(dir: &std::path::Path) -> convoy_testkit::S3Server {
    let server = convoy_testkit::S3Server::start(&dir.join("s3data"), &["convoy-core"]).await;
    let creds = dir.join("credentials");
    std::fs::write(
        &creds,
        convoy_testkit::S3Server::credentials_profile("default"),
    )
    .unwrap();
    // The store reads credentials the usual AWS ways; this test process is the only user.
    std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", &creds);
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
async fn dm_backup_to_s3_full_incremental_restore() {
    let fx = Fixture::new("s3", 4096, "ext4", 1024 * MIB);
    let s3 = s3_server(fx.dir.path()).await;
    let st = StoreOptions {
        s3_endpoint: Some(s3.endpoint()),
        ..StoreOptions::default()
    };
    let dest = "s3://convoy-core@us-east-1/backups";
    let m = fx.open().await;
    let v = m
        .create_volume(
            CreateVolumeRequest {
                name: Some("vol".into()),
                ..Default::default()
            },
            Arc::new(NoProgress),
        )
        .await
        .unwrap();
    let size: u64 = v.driver_info["Size"].parse().unwrap();
    let at = m.mount_volume("vol", None).await.unwrap();
    write_file(&at.join("a"), 1, 3 * MIB as usize);
    let s1 = m.create_snapshot("vol", Some("s1".into())).await.unwrap();
    let sum1 = thin_checksum(&fx, s1.driver_info["DevID"].parse().unwrap(), size);
    let b1 = m
        .create_backup_report("s1", dest, &st, Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(b1.kind, BackupKind::Full);
    write_file(&at.join("b"), 2, 2 * MIB as usize);
    let s2 = m.create_snapshot("vol", Some("s2".into())).await.unwrap();
    let sum2 = thin_checksum(&fx, s2.driver_info["DevID"].parse().unwrap(), size);
    let b2 = m
        .create_backup_report("s2", dest, &st, Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(b2.kind, BackupKind::Incremental, "{b2:?}");
    assert!(b2.backup_url.starts_with(dest), "{}", b2.backup_url);
    assert_eq!(
        m.list_backups(dest, Some("vol"), &st).await.unwrap().len(),
        2
    );

    for (name, url, sum) in [("r1", &b1.backup_url, sum1), ("r2", &b2.backup_url, sum2)] {
        let v = m
            .create_volume(
                CreateVolumeRequest {
                    name: Some(name.into()),
                    backup_url: Some(url.clone()),
                    store: st.clone(),
                    ..Default::default()
                },
                Arc::new(NoProgress),
            )
            .await
            .unwrap();
        let (got, _) = checksum(std::path::Path::new(&v.driver_info["Device"]));
        assert_eq!(got, sum, "restore of {url}");
    }
    m.delete_backup(&b1.backup_url, &st).await.unwrap();
    assert_eq!(m.list_backups(dest, None, &st).await.unwrap().len(), 1);
    m.umount_volume("vol").await.unwrap();
}
