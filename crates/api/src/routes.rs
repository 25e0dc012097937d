//! Route paths of the daemon, shared by the server and the client.

/// `GET`: daemon and driver information.
pub const INFO: &str = "/v1/info";
/// `GET`: every volume.
pub const VOLUMES_LIST: &str = "/v1/volumes/list";
/// `GET`: inspect one volume; `DELETE`: delete it.
pub const VOLUMES: &str = "/v1/volumes/";
/// `POST`: create a volume.
pub const VOLUMES_CREATE: &str = "/v1/volumes/create";
/// `POST`: mount a volume.
pub const VOLUMES_MOUNT: &str = "/v1/volumes/mount";
/// `POST`: unmount a volume.
pub const VOLUMES_UMOUNT: &str = "/v1/volumes/umount";
/// `POST`: grow a volume and its filesystem (convoy's addition).
pub const VOLUMES_EXPAND: &str = "/v1/volumes/expand";
/// `POST`: revert a snapshot's volume to it (convoy's addition).
pub const SNAPSHOTS_REVERT: &str = "/v1/snapshots/revert";
/// `POST`: create a snapshot.
pub const SNAPSHOTS_CREATE: &str = "/v1/snapshots/create";
/// `GET`: inspect one snapshot; `DELETE`: delete it.
pub const SNAPSHOTS: &str = "/v1/snapshots/";
/// `POST`: back a snapshot up.
pub const BACKUPS_CREATE: &str = "/v1/backups/create";
/// `GET`: list the backups at a destination.
pub const BACKUPS_LIST: &str = "/v1/backups/list";
/// `GET`: inspect one backup.
pub const BACKUPS_INSPECT: &str = "/v1/backups/inspect";
/// `DELETE`: delete one backup.
pub const BACKUPS: &str = "/v1/backups";
/// `POST`: mount one backup's filesystem read-only for browsing (convoy's addition).
pub const BACKUPS_MOUNT: &str = "/v1/backups/mount";
/// `POST`: unmount a backup mounted for browsing (convoy's addition).
pub const BACKUPS_UMOUNT: &str = "/v1/backups/umount";
/// `GET`: the backups mounted for browsing (convoy's addition).
pub const BACKUPS_MOUNTS: &str = "/v1/backups/mounts";
/// `POST`: set a policy (convoy's addition).
pub const POLICIES_SET: &str = "/v1/policies/set";
/// `POST`: remove a policy (convoy's addition).
pub const POLICIES_REMOVE: &str = "/v1/policies/remove";
/// `GET`: every policy with its state (convoy's addition).
pub const POLICIES_LIST: &str = "/v1/policies/list";

/// Docker: `POST`, handshake.
pub const PLUGIN_ACTIVATE: &str = "/Plugin.Activate";
/// Docker: `POST`, create a volume.
pub const DOCKER_CREATE: &str = "/VolumeDriver.Create";
/// Docker: `POST`, remove a volume.
pub const DOCKER_REMOVE: &str = "/VolumeDriver.Remove";
/// Docker: `POST`, mount for one container (by request ID).
pub const DOCKER_MOUNT: &str = "/VolumeDriver.Mount";
/// Docker: `POST`, unmount for one request ID.
pub const DOCKER_UNMOUNT: &str = "/VolumeDriver.Unmount";
/// Docker: `POST`, where a volume is mounted.
pub const DOCKER_PATH: &str = "/VolumeDriver.Path";
/// Docker: `POST`, one volume.
pub const DOCKER_GET: &str = "/VolumeDriver.Get";
/// Docker: `POST`, every volume.
pub const DOCKER_LIST: &str = "/VolumeDriver.List";
/// Docker: `POST`, driver scope.
pub const DOCKER_CAPABILITIES: &str = "/VolumeDriver.Capabilities";
