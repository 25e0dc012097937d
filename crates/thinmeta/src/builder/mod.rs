//! Fixture builder (in progress).
