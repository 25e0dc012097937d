//! # convoy-backupstore
//!
//! The backup engine over `object_store` targets (`vfs://` paths and `s3://` buckets). It will
//! own the store layout, versioned manifests, the parallel backup and restore pipelines, delete
//! with garbage collection, listing, inspection and verification.
