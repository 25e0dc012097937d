//! The secret of encrypted backup stores for this process (the daemon's
//! `--backup-passphrase-file`, `--backup-key-file`, `--backup-passcmd` or
//! `$CONVOY_BACKUP_PASSPHRASE`): a thin pass-through to the backup store's options. The secret
//! itself is read by the store only when an encrypted store is opened, and never logged.

use std::sync::RwLock;

use convoy_backupstore::SecretSource;

static SECRET: RwLock<Option<SecretSource>> = RwLock::new(None);

/// Sets where the secret of encrypted backup stores comes from for every later backup,
/// restore, list, inspect and delete of this process (`None`: no secret; encrypted stores are
/// then refused with an error naming the store).
pub fn configure_backup_secret(source: Option<SecretSource>) {
    *SECRET.write().unwrap_or_else(|e| e.into_inner()) = source;
}

/// The configured secret source.
pub(crate) fn current() -> Option<SecretSource> {
    SECRET.read().unwrap_or_else(|e| e.into_inner()).clone()
}
