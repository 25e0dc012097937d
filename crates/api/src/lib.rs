//! # convoy-api
//!
//! Wire types shared by the daemon and its clients. It will own the JSON shapes of convoy's
//! `/v1` API (field names as the original Convoy), the Docker volume plugin protocol types, and a
//! client for the daemon's unix socket.
