//! S3-only failure modes: wrong credentials, unreachable endpoint, missing bucket; and the
//! `vfs://` counterpart of an unusable destination.

// The API takes a list of byte ranges; a single whole-volume range is the common full backup.
#![allow(clippy::single_range_in_vec_init)]

use crate::support;

use convoy_backupstore::{BackupError, BackupTarget, NoProgress, TargetOptions};
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

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_that_never_answered_fails_at_once_with_its_name() {
    let port = closed_port();
    // The default retry policy (16 retries over up to 180 s): a refused first contact must
    // not go through it.
    let opts = TargetOptions {
        s3_endpoint: Some(format!("http://127.0.0.1:{port}")),
        s3_credentials: creds(AK, SK),
        ..Default::default()
    };
    let t = BackupTarget::open("s3://convoy-test/x", opts).unwrap();
    let err = t.list(None).await.unwrap_err();
    expect_store_error(&err);
    let text = format!("{err} {:?}", std::error::Error::source(&err));
    assert!(
        text.contains(&format!("cannot reach http://127.0.0.1:{port}"))
            && text.contains("has not answered")
            && text.contains("--s3-endpoint"),
        "{text}"
    );
    // Not retried: object_store says "after N retries" when it retried, and counts them.
    assert!(!err.to_string().contains(" retries"), "{err}");
    assert!(text.contains("retries: 0,"), "{text}");
    assert!(text.contains("Connection refused"), "{text}");
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
    // The backup's first request (its lock) failed the same way, unretried.
    let debug = format!("{err:?}");
    assert!(
        debug.contains("Unreachable") && debug.contains("retries: 0,"),
        "{debug}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_fails_at_once_with_its_name() {
    // `.invalid` never resolves (RFC 6761).
    let opts = TargetOptions {
        s3_endpoint: Some("http://s3.convoy-test.invalid:9000".into()),
        s3_credentials: creds(AK, SK),
        ..Default::default()
    };
    let t = BackupTarget::open("s3://convoy-test/x", opts).unwrap();
    let err = t.list(None).await.unwrap_err();
    let text = format!("{err} {:?}", std::error::Error::source(&err));
    assert!(
        text.contains("cannot reach http://s3.convoy-test.invalid:9000")
            && text.contains("retries: 0,")
            && !err.to_string().contains(" retries"),
        "{text}"
    );
    // The resolver's own words, not only "error sending request".
    assert!(
        err.to_string().contains("failed to lookup address"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_that_answered_is_retried_through_5xx_and_refusals() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A server that answers one request with 503, then goes away (its port refuses).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 8192];
        let _ = socket.read(&mut buf).await;
        socket
            .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        socket.shutdown().await.unwrap();
        drop(listener);
    });
    let mut opts = fast_opts();
    opts.s3_endpoint = Some(format!("http://127.0.0.1:{port}"));
    opts.s3_credentials = creds(AK, SK);
    opts.retry.max_retries = 3;
    let t = BackupTarget::open("s3://convoy-test/x", opts).unwrap();
    let err = t.list(None).await.unwrap_err();
    server.await.unwrap();
    let text = format!("{err} {:?}", std::error::Error::source(&err));
    // The 503 and then the refused connections were retried until the policy gave up.
    assert!(text.contains("after 3 retries"), "{text}");
    assert!(!text.contains("has not answered"), "{text}");
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
