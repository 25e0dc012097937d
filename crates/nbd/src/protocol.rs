//! The NBD transmission phase as the kernel's client speaks it (no handshake: the kernel is
//! given an already negotiated socket and the export's flags through netlink).
//!
//! All integers are big-endian. A request is 28 bytes, followed by `length` bytes of data for
//! a write:
//!
//! ```text
//! magic 0x25609513 u32 | command flags u16 | type u16 | cookie u64 | offset u64 | length u32
//! ```
//!
//! A simple reply is 16 bytes, followed by `length` bytes of data for a successful read:
//!
//! ```text
//! magic 0x67446698 u32 | error u32 | cookie u64
//! ```
//!
//! The cookie (the spec's "handle") is echoed unchanged; replies may come in any order.

/// First 4 bytes of every request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// First 4 bytes of every simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Bytes of a request header.
pub const REQUEST_LEN: usize = 28;
/// Bytes of a simple reply header.
pub const REPLY_LEN: usize = 16;

/// `NBD_CMD_READ`.
pub const CMD_READ: u16 = 0;
/// `NBD_CMD_WRITE`.
pub const CMD_WRITE: u16 = 1;
/// `NBD_CMD_DISC`: the client disconnects; finish what is in flight, then close.
pub const CMD_DISC: u16 = 2;
/// `NBD_CMD_FLUSH`: every write completed so far must reach stable storage.
pub const CMD_FLUSH: u16 = 3;
/// `NBD_CMD_TRIM`: the range may be discarded.
pub const CMD_TRIM: u16 = 4;

/// Command flag `NBD_CMD_FLAG_FUA` (force unit access; only sent when advertised).
pub const CMD_FLAG_FUA: u16 = 1 << 0;

/// Transmission flag `NBD_FLAG_HAS_FLAGS` (always set).
pub const FLAG_HAS_FLAGS: u16 = 1 << 0;
/// Transmission flag `NBD_FLAG_READ_ONLY`.
pub const FLAG_READ_ONLY: u16 = 1 << 1;
/// Transmission flag `NBD_FLAG_SEND_FLUSH`.
pub const FLAG_SEND_FLUSH: u16 = 1 << 2;
/// Transmission flag `NBD_FLAG_SEND_FUA`.
pub const FLAG_SEND_FUA: u16 = 1 << 3;
/// Transmission flag `NBD_FLAG_SEND_TRIM`.
pub const FLAG_SEND_TRIM: u16 = 1 << 5;

/// Error `NBD_EPERM` (a write to a read-only export).
pub const EPERM: u32 = 1;
/// Error `NBD_EIO`.
pub const EIO: u32 = 5;
/// Error `NBD_ENOMEM`.
pub const ENOMEM: u32 = 12;
/// Error `NBD_EINVAL` (a range outside the export, an unknown command).
pub const EINVAL: u32 = 22;
/// Error `NBD_ENOSPC`.
pub const ENOSPC: u32 = 28;
/// Error `NBD_EOVERFLOW`.
pub const EOVERFLOW: u32 = 75;
/// Error `NBD_ENOTSUP`.
pub const ENOTSUP: u32 = 95;
/// Error `NBD_ESHUTDOWN` (the server is shutting down).
pub const ESHUTDOWN: u32 = 108;

/// One parsed request header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// Command flags (`CMD_FLAG_*`).
    pub flags: u16,
    /// Command type (`CMD_*`).
    pub kind: u16,
    /// The client's cookie, echoed in the reply.
    pub cookie: u64,
    /// Byte offset in the export.
    pub offset: u64,
    /// Bytes concerned (of data following the header for a write).
    pub length: u32,
}

impl Request {
    /// Parses a 28-byte header; `None` when the magic is wrong.
    pub fn parse(b: &[u8; REQUEST_LEN]) -> Option<Request> {
        let u32_at = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        if u32_at(0) != REQUEST_MAGIC {
            return None;
        }
        Some(Request {
            flags: u16::from_be_bytes([b[4], b[5]]),
            kind: u16::from_be_bytes([b[6], b[7]]),
            cookie: u64_at(8),
            offset: u64_at(16),
            length: u32_at(24),
        })
    }

    /// The 28 bytes of this header (what a client sends).
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut b = [0u8; REQUEST_LEN];
        b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&self.kind.to_be_bytes());
        b[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        b[16..24].copy_from_slice(&self.offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.length.to_be_bytes());
        b
    }
}

/// The 16 bytes of a simple reply.
pub fn encode_reply(cookie: u64, error: u32) -> [u8; REPLY_LEN] {
    let mut b = [0u8; REPLY_LEN];
    b[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&error.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b
}

/// Parses a simple reply: `(error, cookie)`, `None` when the magic is wrong.
pub fn parse_reply(b: &[u8; REPLY_LEN]) -> Option<(u32, u64)> {
    if u32::from_be_bytes(b[0..4].try_into().expect("4 bytes")) != SIMPLE_REPLY_MAGIC {
        return None;
    }
    Some((
        u32::from_be_bytes(b[4..8].try_into().expect("4 bytes")),
        u64::from_be_bytes(b[8..16].try_into().expect("8 bytes")),
    ))
}

/// The NBD error code for an I/O error of a backend: the errno when it is one the protocol
/// names, `EIO` otherwise.
pub fn error_code(e: &std::io::Error) -> u32 {
    match e.raw_os_error().map(|c| c as u32) {
        Some(c @ (EPERM | EIO | ENOMEM | EINVAL | ENOSPC | EOVERFLOW | ENOTSUP | ESHUTDOWN)) => c,
        _ if e.kind() == std::io::ErrorKind::Unsupported => ENOTSUP,
        _ => EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_bad_magic_is_refused() {
        let r = Request {
            flags: CMD_FLAG_FUA,
            kind: CMD_WRITE,
            cookie: 0x0102_0304_0506_0708,
            offset: 1 << 40,
            length: 65536,
        };
        let b = r.encode();
        assert_eq!(&b[0..4], &[0x25, 0x60, 0x95, 0x13]);
        assert_eq!(Request::parse(&b), Some(r));
        let mut bad = b;
        bad[0] ^= 1;
        assert_eq!(Request::parse(&bad), None);
        let reply = encode_reply(7, EIO);
        assert_eq!(&reply[0..4], &[0x67, 0x44, 0x66, 0x98]);
        assert_eq!(parse_reply(&reply), Some((EIO, 7)));
    }

    #[test]
    fn io_errors_map_to_protocol_codes() {
        use std::io::{Error, ErrorKind};
        assert_eq!(error_code(&Error::from_raw_os_error(28)), ENOSPC);
        assert_eq!(error_code(&Error::from_raw_os_error(2)), EIO);
        assert_eq!(error_code(&Error::other("x")), EIO);
        assert_eq!(
            error_code(&Error::new(ErrorKind::Unsupported, "x")),
            ENOTSUP
        );
    }
}
