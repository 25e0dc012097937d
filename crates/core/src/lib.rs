//! # convoy-core
//!
//! The volume manager and convoy's embedding API. It will compose the layers below into what
//! users do: the `devicemapper` and `vfs` drivers, volumes, snapshots, incremental backups and
//! restores, crash-safe records under the root directory, and start-up reconciliation.
