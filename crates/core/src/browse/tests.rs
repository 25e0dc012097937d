use super::*;

#[test]
fn journals_are_never_replayed_and_unknown_filesystems_are_refused() {
    assert_eq!(mount_options("ext4"), Some("ro,noload"));
    assert_eq!(mount_options("ext3"), Some("ro,noload"));
    assert_eq!(mount_options("xfs"), Some("ro,norecovery,nouuid"));
    assert_eq!(mount_options("btrfs"), None);
    assert_eq!(mount_options(""), None);
}

#[test]
fn a_backup_key_ignores_escaping_and_needs_a_backup() {
    let a = backup_key("vfs:///b?backup=x1&volume=v1").unwrap();
    let b = backup_key("vfs:///b?backup=x1\\u0026volume=v1").unwrap();
    assert_eq!(a, b);
    assert_eq!(a.1, "v1");
    assert_eq!(a.2, "x1");
    assert!(backup_key("vfs:///b").is_none());
    assert!(backup_key("not a url").is_none());
}

#[test]
fn a_claim_dropped_gives_the_mount_point_and_the_backup_back() {
    let b = Browses::default();
    let key = backup_key("vfs:///b?backup=x1&volume=v1").unwrap();
    let (one, two) = (Path::new("/m/one"), Path::new("/m/two"));
    {
        let _c = Claim::take(&b, one, key.clone()).unwrap();
        let again = Claim::take(&b, one, key.clone()).err().unwrap();
        assert_eq!(again.kind(), crate::ErrorKind::Busy, "{again}");
        let _d = Claim::take(&b, two, key.clone()).unwrap();
        assert_eq!(b.in_use().get(&key).map(Vec::len), Some(2));
    }
    assert!(b.sessions().is_empty());
    assert!(b.in_use().is_empty());
}

#[test]
fn mount_points_must_exist_be_absolute_directories_and_unused() {
    let e = check_mount_point(Path::new("rel/dir")).unwrap_err();
    assert!(e.to_string().contains("not an absolute path"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let e = check_mount_point(&missing).unwrap_err();
    assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("does not exist"), "{e}");
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let e = check_mount_point(&file).unwrap_err();
    assert!(e.to_string().contains("not a directory"), "{e}");
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(dir.path(), &link).unwrap();
    assert_eq!(
        check_mount_point(&link).unwrap(),
        std::fs::canonicalize(dir.path()).unwrap()
    );
    // `/proc` is a mount point on every Linux system.
    let e = check_mount_point(Path::new("/proc")).unwrap_err();
    assert_eq!(e.kind(), crate::ErrorKind::Busy);
    assert!(e.to_string().contains("already a mount point"), "{e}");
}
