//! The encryption side of [`BackupTarget`]: creating a store, and its key slots.

use std::sync::Arc;

use crate::error::{BackupError, Result};
use crate::keys::{self, MarkerCipher};
use crate::{layout, BackupTarget, SecretSource, SlotInfo};

impl BackupTarget {
    /// Whether the store is encrypted (reads the marker; no key needed). `false` for a store
    /// that does not exist yet.
    pub async fn is_encrypted(&self) -> Result<bool> {
        Ok(matches!(
            keys::read_marker(&self.store).await?,
            Some(MarkerCipher::Sealed(..))
        ))
    }

    /// Creates a new store: writes its marker, and with `encrypt` a random master key wrapped
    /// in a first key slot for [`TargetOptions::secret`](crate::TargetOptions::secret) (required then). Refuses a destination
    /// that already holds a store. Returns the first slot's name when encrypted.
    pub async fn init(&self, encrypt: bool) -> Result<Option<String>> {
        if keys::read_marker(&self.store).await?.is_some() {
            return Err(BackupError::InvalidArgument(format!(
                "{} is already a backup store (it has a marker {})",
                self.store.dest,
                layout::marker()
            )));
        }
        if !encrypt {
            if !self
                .store
                .put_new(&layout::marker(), keys::marker_body(&MarkerCipher::None))
                .await?
            {
                return Err(BackupError::InvalidArgument(format!(
                    "{} was made a backup store meanwhile",
                    self.store.dest
                )));
            }
            return Ok(None);
        }
        let Some(src) = &self.opts.secret else {
            return Err(BackupError::Key {
                dest: self.store.dest.clone(),
                reason: "an encrypted store needs a passphrase or key file for its first key slot"
                    .into(),
            });
        };
        let cipher = self.opts.new_store_cipher();
        let (id, keys, slot) = keys::create(&self.store, src, self.opts.kdf, cipher).await?;
        if !self
            .store
            .put_new(
                &layout::marker(),
                keys::marker_body(&MarkerCipher::Sealed(id, cipher)),
            )
            .await?
        {
            return Err(BackupError::InvalidArgument(format!(
                "{} was made a backup store meanwhile",
                self.store.dest
            )));
        }
        let _ = self.store.keys.set(Some(Arc::new(keys)));
        Ok(Some(slot))
    }

    /// The key slots of an encrypted store (no key needed).
    pub async fn key_list(&self) -> Result<Vec<SlotInfo>> {
        self.require_encrypted().await?;
        keys::list(&self.store).await
    }

    /// Adds a key slot for `new` (a passphrase slot with [`TargetOptions::kdf`](crate::TargetOptions::kdf), or a key file
    /// slot), after opening the store with [`TargetOptions::secret`](crate::TargetOptions::secret); returns its name. Data is
    /// not re-encrypted: every slot wraps the same master key.
    pub async fn key_add(&self, new: &SecretSource) -> Result<String> {
        self.require_encrypted().await?;
        let k = self.unlock().await?.expect("encrypted");
        keys::add(&self.store, &k, new, self.opts.kdf).await
    }

    /// Removes key slot `slot`, after opening the store with [`TargetOptions::secret`](crate::TargetOptions::secret);
    /// refuses to remove the last usable slot.
    pub async fn key_remove(&self, slot: &str) -> Result<()> {
        self.require_encrypted().await?;
        self.unlock().await?;
        keys::remove(&self.store, slot).await
    }

    async fn require_encrypted(&self) -> Result<()> {
        if !self.is_encrypted().await? {
            return Err(BackupError::Key {
                dest: self.store.dest.clone(),
                reason: "the store is not encrypted (or does not exist): it has no key slots"
                    .into(),
            });
        }
        Ok(())
    }
}
