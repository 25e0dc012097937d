//! # convoy-daemon
//!
//! The convoy daemon as a library. It will own one entry point, `run(listener, manager,
//! shutdown)`, serving convoy's `/v1` API and the Docker volume plugin endpoints over HTTP on a
//! unix socket.
