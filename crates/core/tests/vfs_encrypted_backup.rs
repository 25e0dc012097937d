//! Host tier: a vfs volume backed up to an encrypted `vfs://` store through the volume manager,
//! with the secret configured process-wide (`configure_backup_secret`, what the daemon's
//! `--backup-passphrase-file` does), then restored; without the secret the store is refused.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use convoy_backupstore::{BackupTarget, KdfParams, SecretSource, TargetOptions};
use convoy_core::{
    configure_backup_secret, CreateVolumeRequest, ErrorKind, ManagerConfig, NoProgress,
    VolumeManager,
};

fn config(dir: &Path) -> ManagerConfig {
    ManagerConfig {
        root: dir.join("root"),
        drivers: vec!["vfs".into()],
        driver_opts: BTreeMap::from([(
            "vfs.path".to_owned(),
            dir.join("vols").display().to_string(),
        )]),
    }
}

fn named(name: &str) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: Some(name.into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn vfs_backup_to_an_encrypted_store_needs_the_configured_secret() {
    let dir = tempfile::tempdir().unwrap();
    let dest = format!("vfs://{}", dir.path().join("backups").display());
    let pass = dir.path().join("pass");
    fs::write(&pass, "daemon passphrase\n").unwrap();
    let secret = SecretSource::PassphraseFile(pass.clone());
    BackupTarget::open(
        &dest,
        TargetOptions {
            secret: Some(secret.clone()),
            kdf: KdfParams::insecure_fast(),
            ..Default::default()
        },
    )
    .unwrap()
    .init(true)
    .await
    .unwrap();

    let m = VolumeManager::open(config(dir.path())).await.unwrap();
    m.create_volume(named("vol1"), Arc::new(NoProgress))
        .await
        .unwrap();
    let at = m.mount_volume("vol1", None).await.unwrap();
    fs::write(
        at.join("data.txt"),
        b"encrypted through the volume manager".repeat(1000),
    )
    .unwrap();
    m.create_snapshot("vol1", Some("s1".into())).await.unwrap();

    configure_backup_secret(None);
    let e = m
        .create_backup_report("s1", &dest, &Default::default(), Arc::new(NoProgress))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("no key was given"), "{e}");

    configure_backup_secret(Some(secret));
    let report = m
        .create_backup_report("s1", &dest, &Default::default(), Arc::new(NoProgress))
        .await
        .unwrap();
    let info = m
        .inspect_backup(&report.backup_url, &Default::default())
        .await
        .unwrap();
    assert_eq!(info.encrypted, "true");
    m.create_volume(
        CreateVolumeRequest {
            backup_url: Some(report.backup_url.clone()),
            ..named("copy")
        },
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    let copy = m.mount_volume("copy", None).await.unwrap();
    assert_eq!(
        fs::read(copy.join("data.txt")).unwrap(),
        fs::read(at.join("data.txt")).unwrap()
    );
}
