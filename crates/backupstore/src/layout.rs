//! Object keys of a store, relative to the destination (see `docs/backup-format.md`, "Layout").

use convoy_blockstore::BlockId;
use object_store::path::Path;

use crate::url::BackupRef;

/// The store marker: a small JSON record of the format version.
pub fn marker() -> Path {
    Path::from("convoy-backupstore.json")
}

/// A pack object: `packs/<first 2 hex>/<64 hex>`.
pub fn pack(id: &BlockId) -> Path {
    let hex = id.to_hex();
    Path::from(format!("packs/{}/{hex}", &hex[..2]))
}

/// Prefix of every pack object.
pub fn packs_prefix() -> Path {
    Path::from("packs")
}

/// Prefix of a pack's reference records: `refs/<64 hex>`.
pub fn refs_of(pack: &BlockId) -> Path {
    Path::from(format!("refs/{}", pack.to_hex()))
}

/// Prefix of every reference record.
pub fn refs_prefix() -> Path {
    Path::from("refs")
}

/// Name prefix of a forward record `refs/<N>/from=<P>`: "the forwarding object of pack P
/// sends blocks to pack N". (`=` appears in no backup's record name: volume and backup names
/// are `[a-zA-Z0-9_.-]`, and an encrypted store's names are hex.)
pub const FORWARD_REF_PREFIX: &str = "from=";

/// The forward record "`moved/<from>` sends blocks to pack `to`": `refs/<to>/from=<from>`.
pub fn forward_ref(to: &BlockId, from: &BlockId) -> Path {
    Path::from(format!(
        "refs/{}/{FORWARD_REF_PREFIX}{}",
        to.to_hex(),
        from.to_hex()
    ))
}

/// The forwarding object of a compacted pack: `moved/<first 2 hex>/<64 hex>`.
pub fn moved(pack: &BlockId) -> Path {
    let hex = pack.to_hex();
    Path::from(format!("moved/{}/{hex}", &hex[..2]))
}

/// Prefix of every forwarding object.
pub fn moved_prefix() -> Path {
    Path::from("moved")
}

/// Prefix of every volume.
pub fn volumes_prefix() -> Path {
    Path::from("volumes")
}

/// Prefix of a volume's manifests.
pub fn manifests_of(volume: &str) -> Path {
    Path::from(format!("volumes/{volume}/backups"))
}

/// Suffix of manifest keys.
pub const MANIFEST_SUFFIX: &str = ".manifest";

/// A backup's manifest: `volumes/<volume>/backups/<backup>.manifest`.
pub fn manifest(r: &BackupRef) -> Path {
    Path::from(format!(
        "volumes/{}/backups/{}{MANIFEST_SUFFIX}",
        r.volume, r.backup
    ))
}

/// A backup's current parent record: `volumes/<volume>/parent/<backup>` (absent: no parent).
pub fn parent_record(r: &BackupRef) -> Path {
    Path::from(format!("volumes/{}/parent/{}", r.volume, r.backup))
}

/// Prefix of the child markers of `parent`: `volumes/<volume>/children/<parent>`.
pub fn children_of(volume: &str, parent: &str) -> Path {
    Path::from(format!("volumes/{volume}/children/{parent}"))
}

/// Marker "`child` is an incremental child of `parent`".
pub fn child_marker(volume: &str, parent: &str, child: &str) -> Path {
    Path::from(format!("volumes/{volume}/children/{parent}/{child}"))
}

/// Prefix of the trash (deletions in progress).
pub fn trash_prefix() -> Path {
    Path::from("trash")
}

/// A deleted backup's manifest while its blocks are collected.
pub fn trash_manifest(r: &BackupRef) -> Path {
    Path::from(format!("trash/{}/{}/manifest", r.volume, r.backup))
}

/// A deleted backup's parent at deletion time.
pub fn trash_parent(r: &BackupRef) -> Path {
    Path::from(format!("trash/{}/{}/parent", r.volume, r.backup))
}

/// Prefix of lock records.
pub fn locks_prefix() -> Path {
    Path::from("locks")
}

/// A lock record.
pub fn lock(id: &str) -> Path {
    Path::from(format!("locks/{id}.json"))
}
