//! The in-process S3 server answers a real S3 client with the test credentials, refuses
//! others, keeps objects as files in the bucket's directory, and stops when dropped.

use convoy_testkit::{S3Server, S3_ACCESS_KEY, S3_SECRET_KEY};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;

fn client(server: &S3Server, secret: &str) -> impl ObjectStore {
    AmazonS3Builder::new()
        .with_endpoint(server.endpoint())
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_bucket_name("bucket")
        .with_access_key_id(S3_ACCESS_KEY)
        .with_secret_access_key(secret)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_list_and_refuse_a_wrong_secret() {
    let dir = tempfile::tempdir().unwrap();
    let server = S3Server::start(&dir.path().join("s3"), &["bucket"]).await;
    let store = client(&server, S3_SECRET_KEY);
    let key = ObjectPath::from("a/b/object");
    store.put(&key, b"hello".to_vec().into()).await.unwrap();
    let got = store.get(&key).await.unwrap().bytes().await.unwrap();
    assert_eq!(&got[..], b"hello");
    assert_eq!(
        std::fs::read(server.bucket_dir("bucket").join("a/b/object")).unwrap(),
        b"hello"
    );
    let wrong = client(&server, "not-the-secret");
    assert!(wrong.get(&key).await.is_err());
    assert_eq!(server.dest("bucket", "p"), "s3://bucket@us-east-1/p");
    assert!(S3Server::credentials_profile("x").contains(S3_ACCESS_KEY));

    let port = server.port();
    drop(server);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err());
}
