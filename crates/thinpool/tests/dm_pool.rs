//! VM tier, pool level: create / status / teardown / re-open, table and block-size checks,
//! foreign metadata, block sizes, metadata snapshot guard. Needs a dm-thin kernel:
//! `cargo xtask test` (or the test binary run in `cargo xtask vm`).

mod common;

use common::{read_at, write_at, Fixture, GIB, MIB};
use convoy_thinpool::{
    superblock, BlockSize, BlockZeroing, DataBlocks, Error, NoSpacePolicy, PoolMode, Sectors,
    SetupAction, ThinId, ThinPool,
};

fn id(n: u64) -> ThinId {
    ThinId::new(n).unwrap()
}

#[test]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
fn dm_create_status_teardown_reopen() {
    let fx = Fixture::new("reopen", 64 * MIB, 8 * MIB);
    let pool = ThinPool::create(fx.config()).unwrap();
    assert!(common::is_block_node_for(&pool.path(), pool.device()));

    let s = pool.status().unwrap();
    assert_eq!(s.transaction_id, 0);
    assert_eq!(s.data.total, DataBlocks(32)); // 64 MiB / 2 MiB
    assert_eq!(s.data.used, DataBlocks(0));
    assert_eq!(s.held_metadata_root, None);
    assert_eq!(s.mode, PoolMode::ReadWrite);
    assert_eq!(s.no_space_policy, NoSpacePolicy::Error);
    assert!(!s.needs_check);
    assert!(*s.metadata.used > 0 && s.metadata.used < s.metadata.total);

    // A second create of the same name is refused.
    assert!(matches!(
        ThinPool::create(fx.config()),
        Err(Error::AlreadyExists { ref name, .. }) if name == &fx.name
    ));

    // Put data in a thin device, then tear everything down.
    pool.create_thin(id(1)).unwrap();
    let dev = pool
        .activate(id(1), "ctp-reopen-v1", Sectors(8192))
        .unwrap();
    write_at(&dev.path, 4096, b"persists across teardown").unwrap();
    pool.set_transaction_id(0, 7).unwrap();
    pool.teardown().unwrap();
    assert!(!common::dm_names()
        .iter()
        .any(|n| n.starts_with("ctp-reopen")));
    assert!(!std::path::Path::new("/dev/mapper/ctp-reopen-v1").exists());

    // The metadata holds the pool: create refuses, open re-activates, nothing is wiped.
    assert!(matches!(
        ThinPool::create(fx.config()),
        Err(Error::MetadataInUse {
            transaction_id: 7,
            ..
        })
    ));
    let (pool, action) = ThinPool::open(fx.config()).unwrap();
    assert_eq!(action, SetupAction::Reactivated);
    assert_eq!(pool.status().unwrap().transaction_id, 7);
    assert!(matches!(
        pool.create_thin(id(1)),
        Err(Error::AlreadyExists { .. })
    ));
    let dev = pool
        .activate(id(1), "ctp-reopen-v1", Sectors(8192))
        .unwrap();
    assert_eq!(read_at(&dev.path, 4096, 24), b"persists across teardown");

    // Opening the active pool reuses it.
    let (again, action) = ThinPool::open(fx.config()).unwrap();
    assert_eq!(action, SetupAction::AlreadyActive);
    assert_eq!(again.device(), pool.device());
    assert_eq!(again.list_active().unwrap().len(), 1);

    // Tearing down with a device open is refused and leaves everything in place.
    let holder = std::fs::File::open(&dev.path).unwrap();
    assert!(
        matches!(again.teardown(), Err(Error::Busy { ref device, .. }) if device == "ctp-reopen-v1")
    );
    drop(holder);
    assert_eq!(pool.list_active().unwrap().len(), 1);
    pool.teardown().unwrap();
}

#[test]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
fn dm_open_checks_table_and_block_size() {
    let fx = Fixture::new("tablecheck", 64 * MIB, 8 * MIB);
    // Nothing there yet: open says so, and setup creates.
    assert!(matches!(
        ThinPool::open(fx.config()),
        Err(Error::NotFound { .. })
    ));
    let (pool, action) = ThinPool::setup(fx.config()).unwrap();
    assert_eq!(action, SetupAction::Created);

    // Active with another block size or other devices: mismatch.
    let other = fx
        .config()
        .with_block_size(BlockSize::new(Sectors(128)).unwrap());
    assert!(matches!(
        ThinPool::open(other.clone()),
        Err(Error::TableMismatch { .. })
    ));
    let mut swapped = fx.config();
    std::mem::swap(&mut swapped.data_device, &mut swapped.metadata_device);
    assert!(matches!(
        ThinPool::open(swapped),
        Err(Error::TableMismatch { .. })
    ));

    // Same devices, other zeroing policy: reused, and the table follows the config.
    let (skip, action) = ThinPool::open(fx.config().with_zeroing(BlockZeroing::Skip)).unwrap();
    assert_eq!(action, SetupAction::AlreadyActive);
    let table = common::run("dmsetup", &["table", &fx.name]);
    assert!(table.contains("skip_block_zeroing"), "{table}");
    assert!(table.contains("error_if_no_space"), "{table}");
    drop(skip);
    let (_, _) = ThinPool::open(fx.config()).unwrap();
    let table = common::run("dmsetup", &["table", &fx.name]);
    assert!(!table.contains("skip_block_zeroing"), "{table}");

    // Inactive with another block size: the superblock's size wins, with a clear error.
    pool.teardown().unwrap();
    let err = ThinPool::open(other).unwrap_err();
    assert!(
        matches!(
            err,
            Error::BlockSizeMismatch {
                requested: 128,
                on_disk: 4096,
                ..
            }
        ),
        "{err}"
    );
    let (_, action) = ThinPool::setup(fx.config()).unwrap();
    assert_eq!(action, SetupAction::Reactivated);
}

#[test]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
fn dm_foreign_metadata_refused_unless_forced() {
    let fx = Fixture::new("foreign", 64 * MIB, 8 * MIB);
    let junk = vec![0x5au8; 4096];
    write_at(fx.meta.path(), 0, &junk).unwrap();
    for result in [
        ThinPool::create(fx.config()).map(|_| ()),
        ThinPool::open(fx.config()).map(|_| ()),
        ThinPool::setup(fx.config()).map(|_| ()),
    ] {
        let err = result.unwrap_err();
        assert!(matches!(err, Error::ForeignMetadata { .. }), "{err}");
        assert!(err.to_string().contains(fx.meta.path().to_str().unwrap()));
    }
    assert_eq!(
        read_at(fx.meta.path(), 0, 4096),
        junk,
        "nothing was overwritten"
    );
    assert!(!common::dm_names().contains(&fx.name));

    let pool = ThinPool::create(fx.config().with_force(true)).unwrap();
    assert_eq!(pool.status().unwrap().transaction_id, 0);
    pool.teardown().unwrap();
    assert!(matches!(
        superblock::inspect(fx.meta.path()).unwrap(),
        superblock::MetadataContent::ThinPool(_)
    ));
}

#[test]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
fn dm_block_sizes_128_4096_2097152() {
    for (sectors, data_size) in [(128u64, 64 * MIB), (4096, 64 * MIB), (2_097_152, 3 * GIB)] {
        let fx = Fixture::new(&format!("bs{sectors}"), data_size, 8 * MIB);
        let bs = BlockSize::new(Sectors(sectors)).unwrap();
        // Zeroing two freshly provisioned 1 GiB blocks means writing 2 GiB through the loop
        // device, minutes under an emulated CPU; the largest size is checked without it (the
        // sparse data file reads as zeroes either way). Zeroing itself is tested at 64 KiB and
        // 2 MiB blocks.
        let zeroing = if sectors > 4096 {
            BlockZeroing::Skip
        } else {
            BlockZeroing::Zero
        };
        let pool = ThinPool::create(fx.config().with_block_size(bs).with_zeroing(zeroing)).unwrap();
        let expected = data_size / (sectors * 512);
        assert_eq!(pool.status().unwrap().data.total, DataBlocks(expected));
        assert_eq!(pool.block_size(), bs);

        pool.create_thin(id(0)).unwrap();
        let size = Sectors(sectors * 2);
        let dev = pool
            .activate(id(0), &format!("ctp-bs{sectors}-v"), size)
            .unwrap();
        // One small write in each of the first two blocks: two blocks provisioned, the rest of
        // each block reads as zeroes.
        let block_bytes = sectors * 512;
        write_at(&dev.path, 0, b"first").unwrap();
        write_at(&dev.path, block_bytes, b"second").unwrap();
        let s = pool.status().unwrap();
        assert_eq!(s.data.used, DataBlocks(2), "block size {sectors}");
        assert_eq!(read_at(&dev.path, block_bytes, 6), b"second");
        assert!(read_at(&dev.path, 4096, 60 * 1024).iter().all(|&b| b == 0));
        let usage = pool.thin_usage(&dev.name).unwrap();
        assert_eq!(usage.mapped, Sectors(2 * sectors));
        pool.teardown().unwrap();
    }
}

#[test]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
fn dm_metadata_snapshot_held_twice_is_an_error() {
    let fx = Fixture::new("metasnap", 64 * MIB, 8 * MIB);
    let pool = ThinPool::create(fx.config()).unwrap();
    pool.create_thin(id(3)).unwrap();

    let held = pool.reserve_metadata_snap().unwrap();
    let root = held.held_root();
    assert!(*root > 0);
    assert_eq!(pool.status().unwrap().held_metadata_root, Some(root));
    // The held root is a superblock copy on the metadata device.
    let copy = read_at(fx.meta.path(), *root * 4096, 4096);
    assert_eq!(
        u64::from_le_bytes(copy[32..40].try_into().unwrap()),
        superblock::THIN_SUPERBLOCK_MAGIC
    );

    let err = pool.reserve_metadata_snap().unwrap_err();
    assert!(
        matches!(err, Error::MetadataSnapshotHeld { ref pool } if pool == &fx.name),
        "{err}"
    );
    assert!(err
        .to_string()
        .contains("already holds a metadata snapshot"));
    drop(held);
    assert_eq!(pool.status().unwrap().held_metadata_root, None);

    // Reserve again, release explicitly; releasing with none held says so.
    let held = pool.reserve_metadata_snap().unwrap();
    held.release().unwrap();
    assert_eq!(pool.status().unwrap().held_metadata_root, None);
    assert!(matches!(
        pool.release_metadata_snap(),
        Err(Error::NotFound { .. })
    ));

    // A snapshot left held (a crash) survives teardown and re-open, and can be released.
    std::mem::forget(pool.reserve_metadata_snap().unwrap());
    pool.teardown().unwrap();
    let (pool, _) = ThinPool::open(fx.config()).unwrap();
    assert!(pool.status().unwrap().held_metadata_root.is_some());
    pool.release_metadata_snap().unwrap();
    assert_eq!(pool.status().unwrap().held_metadata_root, None);
}

#[test]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
fn dm_transaction_id_is_checked() {
    let fx = Fixture::new("txid", 64 * MIB, 8 * MIB);
    let pool = ThinPool::create(fx.config()).unwrap();
    pool.set_transaction_id(0, 1).unwrap();
    let err = pool.set_transaction_id(0, 2).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TransactionIdMismatch {
                given: 0,
                actual: 1,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(pool.status().unwrap().transaction_id, 1);
}

#[test]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
fn dm_read_only_pool_refuses_changes_and_open_restores_the_table() {
    let fx = Fixture::new("ro", 64 * MIB, 8 * MIB);
    let pool = ThinPool::create(fx.config()).unwrap();
    pool.create_thin(id(1)).unwrap();

    // Reload the table with the kernel's `read_only` feature, outside the crate.
    let table = common::run("dmsetup", &["table", &fx.name]);
    let mut words: Vec<String> = table.split_whitespace().map(str::to_owned).collect();
    let count: usize = words[7].parse().unwrap();
    words[7] = (count + 1).to_string();
    words.push("read_only".to_owned());
    common::run(
        "dmsetup",
        &["reload", &fx.name, "--table", &words.join(" ")],
    );
    common::run("dmsetup", &["resume", &fx.name]);
    assert_eq!(pool.status().unwrap().mode, PoolMode::ReadOnly);

    for err in [
        pool.create_thin(id(2)).unwrap_err(),
        pool.create_snap(id(2), id(1)).unwrap_err(),
        pool.delete(id(1)).unwrap_err(),
        pool.reserve_metadata_snap().map(|_| ()).unwrap_err(),
    ] {
        assert!(
            matches!(err, Error::PoolReadOnly { ref pool, .. } if pool == &fx.name),
            "{err}"
        );
    }
    // Reading still works: the thin device can be activated and read.
    let dev = pool.activate(id(1), "ctp-ro-v", Sectors(2048)).unwrap();
    assert!(read_at(&dev.path, 0, 4096).iter().all(|&b| b == 0));
    pool.deactivate("ctp-ro-v").unwrap();

    // Opening with the config reloads convoy's table (no read_only): writable again.
    let (pool, action) = ThinPool::open(fx.config()).unwrap();
    assert_eq!(action, SetupAction::AlreadyActive);
    assert_eq!(pool.status().unwrap().mode, PoolMode::ReadWrite);
    pool.create_thin(id(2)).unwrap();
}
