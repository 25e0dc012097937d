//! With no AWS credentials anywhere, the error says where they were looked for and how to provide
//! them, instead of the instance metadata endpoint's HTTP error.
//!
//! One test in its own binary: it clears the process's AWS environment and points HOME and the
//! metadata endpoint at its own fixtures, which other tests running in parallel must not see.

// The API takes a list of byte ranges; a single whole-volume range is the common full backup.
#![allow(clippy::single_range_in_vec_init)]

mod support;

use convoy_backupstore::{BackupError, BackupTarget, NoProgress};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTP server answering every request with 403, as a metadata endpoint that refuses this
/// host does.
async fn forbidding_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    )
                    .await;
                let _ = socket.shutdown().await;
            });
        }
    });
    format!("http://127.0.0.1:{port}")
}

fn assert_explains(err: &BackupError, home: &std::path::Path, metadata: &str, found: &str) {
    let text = err.to_string();
    assert!(matches!(err, BackupError::S3Config { .. }), "{err:?}");
    for needle in [
        "no AWS credentials found",
        "AWS_ACCESS_KEY_ID is not set",
        &format!(
            "{}/.aws/credentials profile default ({found})",
            home.display()
        ),
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        &format!("instance metadata endpoint {metadata}"),
        "AWS_SECRET_ACCESS_KEY",
        "AWS_PROFILE",
        "instance role",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_credentials_name_every_source_tried() {
    let home = tempfile::tempdir().unwrap();
    for name in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_CONFIG_FILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_ENDPOINT",
    ] {
        std::env::remove_var(name);
    }
    std::env::set_var("HOME", home.path());
    let metadata = forbidding_server().await;
    std::env::set_var("AWS_METADATA_ENDPOINT", &metadata);

    // A working S3 server: only the credentials are missing.
    let env = Env::s3().await;
    let mut opts = env.opts.clone();
    opts.aws_credentials_file = None;
    opts.aws_profile = None;
    let t = BackupTarget::open(&env.dest, opts.clone()).unwrap();
    let err = t.list(None).await.unwrap_err();
    assert_explains(&err, home.path(), &metadata, "does not exist");
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
    assert_explains(&err, home.path(), &metadata, "does not exist");

    // A credentials file without the profile: said so.
    std::fs::create_dir_all(home.path().join(".aws")).unwrap();
    std::fs::write(
        home.path().join(".aws/credentials"),
        "[other]\naws_access_key_id = A\naws_secret_access_key = B\n",
    )
    .unwrap();
    let t = BackupTarget::open(&env.dest, opts.clone()).unwrap();
    let err = t.list(None).await.unwrap_err();
    assert_explains(&err, home.path(), &metadata, "has no [default] section");

    // A metadata endpoint that does not answer at all (no EC2 here): explained the same way,
    // at once.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    std::env::set_var("AWS_METADATA_ENDPOINT", &closed);
    let t = BackupTarget::open(&env.dest, opts.clone()).unwrap();
    let err = t.list(None).await.unwrap_err();
    assert_explains(&err, home.path(), &closed, "has no [default] section");

    // Once the profile exists, the same target works: the message named the right fix.
    std::fs::write(
        home.path().join(".aws/credentials"),
        format!("[default]\naws_access_key_id = {AK}\naws_secret_access_key = {SK}\n"),
    )
    .unwrap();
    let t = BackupTarget::open(&env.dest, opts).unwrap();
    t.list(None).await.unwrap();
}
