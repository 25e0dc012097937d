//! S3-only failure modes: wrong credentials, unreachable endpoint, missing bucket; and the
//! `vfs://` counterpart of an unusable destination.

// The API takes a list of byte ranges; a single whole-volume range is the common full backup.
#![allow(clippy::single_range_in_vec_init)]

mod support;

use std::time::Duration;

use convoy_backupstore::{BackupError, BackupTarget, NoProgress};
use support::*;

fn expect_store_error(err: &BackupError) {
    assert!(matches!(err, BackupError::Store { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_refused() {
    let env = Env::s3().await;
    let mut opts = env.opts.clone();
    opts.s3_credentials = creds(AK, "not-the-secret");
    let t = BackupTarget::open(&env.dest, opts).unwrap();
    let img = Image::new(CHUNK as u64, 1);
    let err = t
        .backup(
            img.file.clone(),
            &[0..img.size],
            None,
            meta("vol1", img.size),
            &NoProgress,
        )
        .await
        .unwrap_err();
    expect_store_error(&err);
    let err = t.list(None).await.unwrap_err();
    expect_store_error(&err);
    // The credentials file's `default` profile is wrong too; the right profile works.
    let mut opts = env.opts.clone();
    opts.aws_profile = Some("default".into());
    let t = BackupTarget::open(&env.dest, opts).unwrap();
    expect_store_error(&t.list(None).await.unwrap_err());
    env.target().list(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_endpoint_fails_after_retries() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut opts = fast_opts();
    opts.s3_endpoint = Some(format!("http://127.0.0.1:{port}"));
    opts.s3_credentials = creds(AK, SK);
    opts.retry.max_retries = 1;
    opts.retry.timeout = Duration::from_secs(2);
    let t = BackupTarget::open("s3://convoy-test/x", opts).unwrap();
    let err = t.list(None).await.unwrap_err();
    expect_store_error(&err);
    let img = Image::new(CHUNK as u64, 1);
    let err = t
        .backup(
            img.file.clone(),
            &[0..img.size],
            None,
            meta("vol1", img.size),
            &NoProgress,
        )
        .await
        .unwrap_err();
    expect_store_error(&err);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_bucket_is_reported() {
    let Some(moto) = Moto::start().await else {
        panic!("moto_server is not installed (pip install 'moto[server]'); it is needed for the missing-bucket test");
    };
    let mut opts = fast_opts();
    opts.s3_endpoint = Some(moto.endpoint.clone());
    opts.s3_credentials = creds("testing", "testing");
    let t = BackupTarget::open("s3://no-such-bucket@us-east-1/path", opts).unwrap();
    let err = t.list(None).await.unwrap_err();
    expect_store_error(&err);
    let img = Image::new(CHUNK as u64, 1);
    let err = t
        .backup(
            img.file.clone(),
            &[0..img.size],
            None,
            meta("vol1", img.size),
            &NoProgress,
        )
        .await
        .unwrap_err();
    expect_store_error(&err);
    assert!(
        format!("{err:?}").contains("NoSuchBucket") || err.to_string().contains("not found"),
        "{err:?}"
    );
}

#[tokio::test]
async fn region_is_required_without_endpoint() {
    let mut opts = fast_opts();
    opts.s3_endpoint = None;
    // With neither @region, AWS_REGION nor an endpoint, opening names the expected forms.
    if std::env::var_os("AWS_REGION").is_none()
        && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        && std::env::var_os("AWS_ENDPOINT").is_none()
    {
        opts.aws_profile = Some("convoy-no-such-profile".into());
        let err = BackupTarget::open("s3://some-bucket/path", opts).unwrap_err();
        assert!(err.to_string().contains("s3://bucket@region/path"), "{err}");
    }
}

#[tokio::test]
async fn unusable_vfs_destination() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let err =
        BackupTarget::open(&format!("vfs://{}/sub", file.display()), fast_opts()).unwrap_err();
    assert!(matches!(err, BackupError::LocalIo { .. }), "{err}");
}
