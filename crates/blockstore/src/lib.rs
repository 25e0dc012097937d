//! # convoy-blockstore
//!
//! Pure block handling for backups. It will own content ids (BLAKE3 of the uncompressed block),
//! all-zero block detection, and the block codec (zstd compression with integrity checks) that
//! `convoy-backupstore` stores and verifies.
