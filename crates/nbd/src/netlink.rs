//! The kernel's NBD driver through generic netlink (family `nbd`, version 1): connect a
//! socket to a device (the kernel picks a free index, or makes a new device), disconnect,
//! replace a dead socket (reconfigure) and read which devices are connected.
//!
//! Messages are built and parsed here (a netlink header, a generic netlink header, then
//! attributes `len u16 | type u16 | payload`, each padded to 4 bytes, native byte order) over
//! a `NETLINK_GENERIC` socket from `nix`: no `unsafe` and no ioctl. The socket has a receive
//! timeout, so a call never hangs.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::sys::socket::{
    bind, recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use nix::sys::time::TimeVal;

use crate::error::{NbdError, Result};

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const GENL_ID_CTRL: u16 = 0x10;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLA_F_NESTED: u16 = 1 << 15;
const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | (1 << 14));

const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;

const NBD_CMD_CONNECT: u8 = 1;
const NBD_CMD_DISCONNECT: u8 = 2;
const NBD_CMD_RECONFIGURE: u8 = 3;
const NBD_CMD_STATUS: u8 = 5;
const NBD_VERSION: u8 = 1;

const NBD_ATTR_INDEX: u16 = 1;
const NBD_ATTR_SIZE_BYTES: u16 = 2;
const NBD_ATTR_BLOCK_SIZE_BYTES: u16 = 3;
const NBD_ATTR_TIMEOUT: u16 = 4;
const NBD_ATTR_SERVER_FLAGS: u16 = 5;
const NBD_ATTR_SOCKETS: u16 = 7;
const NBD_ATTR_DEAD_CONN_TIMEOUT: u16 = 8;
const NBD_ATTR_DEVICE_LIST: u16 = 9;
const NBD_SOCK_ITEM: u16 = 1;
const NBD_SOCK_FD: u16 = 1;
const NBD_DEVICE_ITEM: u16 = 1;
const NBD_DEVICE_INDEX: u16 = 1;
const NBD_DEVICE_CONNECTED: u16 = 2;

/// How long a netlink answer is waited for.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Attributes being built.
#[derive(Default)]
struct Attrs(Vec<u8>);

impl Attrs {
    fn raw(&mut self, kind: u16, payload: &[u8]) -> &mut Self {
        let len = 4 + payload.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(payload);
        self.0.resize(align4(self.0.len()), 0);
        self
    }
    fn u32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.raw(kind, &v.to_ne_bytes())
    }
    fn u64(&mut self, kind: u16, v: u64) -> &mut Self {
        self.raw(kind, &v.to_ne_bytes())
    }
    fn nested(&mut self, kind: u16, inner: &Attrs) -> &mut Self {
        self.raw(kind | NLA_F_NESTED, &inner.0)
    }
}

/// Parsed attributes: `(type, payload)`.
fn parse_attrs(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let kind = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            break;
        }
        out.push((kind, &b[4..len]));
        b = &b[align4(len).min(b.len())..];
    }
    out
}

fn attr_u32(attrs: &[(u16, &[u8])], kind: u16) -> Option<u32> {
    attrs
        .iter()
        .find(|(k, _)| *k == kind)
        .and_then(|(_, v)| v.get(..4))
        .map(|v| u32::from_ne_bytes(v.try_into().expect("4 bytes")))
}

/// An open generic netlink socket.
struct Genl {
    fd: OwnedFd,
    seq: u32,
}

fn netlink_err(operation: &'static str) -> impl Fn(nix::Error) -> NbdError {
    move |e| NbdError::Netlink {
        operation,
        source: std::io::Error::from(e),
    }
}

impl Genl {
    fn open() -> Result<Genl> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkGeneric,
        )
        .map_err(netlink_err("open a socket"))?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(netlink_err("bind"))?;
        let t = TimeVal::new(ANSWER_TIMEOUT.as_secs() as i64, 0);
        setsockopt(&fd, sockopt::ReceiveTimeout, &t).map_err(netlink_err("set a timeout"))?;
        Ok(Genl { fd, seq: 1 })
    }

    /// Sends one request and returns the attributes of each answer message of type `family`
    /// (the kernel's acknowledgement, or its error, ends the exchange).
    fn request(
        &mut self,
        operation: &'static str,
        family: u16,
        cmd: u8,
        version: u8,
        attrs: &Attrs,
    ) -> Result<Vec<Vec<u8>>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let len = 16 + 4 + attrs.0.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&family.to_ne_bytes());
        msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&[cmd, version, 0, 0]);
        msg.extend_from_slice(&attrs.0);
        send(self.fd.as_raw_fd(), &msg, MsgFlags::empty()).map_err(netlink_err(operation))?;
        let mut answers = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty())
                .map_err(netlink_err(operation))?;
            let mut b = &buf[..n];
            while b.len() >= 16 {
                let mlen = u32::from_ne_bytes(b[0..4].try_into().expect("4 bytes")) as usize;
                let mtype = u16::from_ne_bytes([b[4], b[5]]);
                let mseq = u32::from_ne_bytes(b[8..12].try_into().expect("4 bytes"));
                if mlen < 16 || mlen > b.len() {
                    return Err(NbdError::Netlink {
                        operation,
                        source: std::io::Error::other("truncated netlink answer"),
                    });
                }
                let body = &b[16..mlen];
                b = &b[align4(mlen).min(b.len())..];
                if mseq != seq {
                    continue;
                }
                match mtype {
                    NLMSG_ERROR => {
                        let code = body
                            .get(..4)
                            .map_or(0, |v| i32::from_ne_bytes(v.try_into().expect("4 bytes")));
                        if code == 0 {
                            return Ok(answers);
                        }
                        return Err(NbdError::Netlink {
                            operation,
                            source: std::io::Error::from_raw_os_error(-code),
                        });
                    }
                    NLMSG_DONE => return Ok(answers),
                    t if t == family && body.len() >= 4 => answers.push(body[4..].to_vec()),
                    _ => {}
                }
            }
        }
    }

    /// The id of the `nbd` generic netlink family.
    fn nbd_family(&mut self) -> Result<u16> {
        let mut a = Attrs::default();
        a.raw(CTRL_ATTR_FAMILY_NAME, b"nbd\0");
        let answers = self.request("resolve family", GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1, &a)?;
        answers
            .iter()
            .find_map(|body| {
                parse_attrs(body)
                    .iter()
                    .find(|(k, _)| *k == CTRL_ATTR_FAMILY_ID)
                    .and_then(|(_, v)| v.get(..2))
                    .map(|v| u16::from_ne_bytes([v[0], v[1]]))
            })
            .ok_or_else(|| NbdError::Netlink {
                operation: "resolve family",
                source: std::io::Error::other("the answer names no family id"),
            })
    }
}

/// What [`connect`] tells the kernel.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnectRequest {
    pub size: u64,
    pub block_size: u64,
    pub server_flags: u64,
    pub timeout: Duration,
    pub dead_connection_timeout: Duration,
}

/// Whether the NBD family is registered (the driver is loaded).
pub(crate) fn driver_loaded() -> bool {
    Genl::open().and_then(|mut g| g.nbd_family()).is_ok()
}

/// Connects socket `fd` to a free device (the kernel picks it, or makes a new one); returns
/// the device's index.
pub(crate) fn connect(fd: RawFd, req: &ConnectRequest) -> Result<u32> {
    let mut g = Genl::open()?;
    let family = g.nbd_family()?;
    let mut item = Attrs::default();
    item.u32(NBD_SOCK_FD, fd as u32);
    let mut socks = Attrs::default();
    socks.nested(NBD_SOCK_ITEM, &item);
    let mut a = Attrs::default();
    a.u64(NBD_ATTR_SIZE_BYTES, req.size)
        .u64(NBD_ATTR_BLOCK_SIZE_BYTES, req.block_size)
        .u64(NBD_ATTR_SERVER_FLAGS, req.server_flags)
        .u64(NBD_ATTR_TIMEOUT, req.timeout.as_secs().max(1))
        .u64(
            NBD_ATTR_DEAD_CONN_TIMEOUT,
            req.dead_connection_timeout.as_secs(),
        )
        .nested(NBD_ATTR_SOCKETS, &socks);
    let answers = g.request("connect", family, NBD_CMD_CONNECT, NBD_VERSION, &a)?;
    answers
        .iter()
        .find_map(|body| attr_u32(&parse_attrs(body), NBD_ATTR_INDEX))
        .ok_or_else(|| NbdError::Netlink {
            operation: "connect",
            source: std::io::Error::other("the kernel's answer names no device index"),
        })
}

/// Replaces the dead socket of connected device `index` by `fd` (a restarted server).
pub(crate) fn reconfigure(index: u32, fd: RawFd) -> Result<()> {
    let mut g = Genl::open()?;
    let family = g.nbd_family()?;
    let mut item = Attrs::default();
    item.u32(NBD_SOCK_FD, fd as u32);
    let mut socks = Attrs::default();
    socks.nested(NBD_SOCK_ITEM, &item);
    let mut a = Attrs::default();
    a.u32(NBD_ATTR_INDEX, index)
        .nested(NBD_ATTR_SOCKETS, &socks);
    g.request("reconfigure", family, NBD_CMD_RECONFIGURE, NBD_VERSION, &a)
        .map(drop)
}

/// Disconnects device `index` (the kernel sends `NBD_CMD_DISC` to its server and fails what
/// is still queued). Disconnecting an unconnected device is not an error.
pub(crate) fn disconnect(index: u32) -> Result<()> {
    let mut g = Genl::open()?;
    let family = g.nbd_family()?;
    let mut a = Attrs::default();
    a.u32(NBD_ATTR_INDEX, index);
    g.request("disconnect", family, NBD_CMD_DISCONNECT, NBD_VERSION, &a)
        .map(drop)
}

/// Whether device `index` is connected (`None`: no such device).
pub(crate) fn status(index: u32) -> Result<Option<bool>> {
    let mut g = Genl::open()?;
    let family = g.nbd_family()?;
    let mut a = Attrs::default();
    a.u32(NBD_ATTR_INDEX, index);
    let answers = g.request("status", family, NBD_CMD_STATUS, NBD_VERSION, &a)?;
    for body in &answers {
        for (k, list) in parse_attrs(body) {
            if k != NBD_ATTR_DEVICE_LIST {
                continue;
            }
            for (k, item) in parse_attrs(list) {
                if k != NBD_DEVICE_ITEM {
                    continue;
                }
                let attrs = parse_attrs(item);
                if attr_u32(&attrs, NBD_DEVICE_INDEX) == Some(index) {
                    let connected = attrs
                        .iter()
                        .find(|(k, _)| *k == NBD_DEVICE_CONNECTED)
                        .and_then(|(_, v)| v.first())
                        .is_some_and(|c| *c != 0);
                    return Ok(Some(connected));
                }
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_parse_back() {
        let mut inner = Attrs::default();
        inner.u32(NBD_SOCK_FD, 7);
        let mut a = Attrs::default();
        a.raw(CTRL_ATTR_FAMILY_NAME, b"nbd\0")
            .u64(NBD_ATTR_SIZE_BYTES, 1 << 30)
            .raw(9, b"abcde")
            .nested(NBD_ATTR_SOCKETS, &inner);
        assert_eq!(a.0.len() % 4, 0);
        let parsed = parse_attrs(&a.0);
        assert_eq!(parsed.len(), 4);
        assert_eq!(parsed[0], (CTRL_ATTR_FAMILY_NAME, &b"nbd\0"[..]));
        assert_eq!(parsed[1].1, &(1u64 << 30).to_ne_bytes()[..]);
        assert_eq!(parsed[2].1, b"abcde");
        // The nested flag is masked off the type; the nested payload parses on its own.
        assert_eq!(parsed[3].0, NBD_ATTR_SOCKETS);
        assert_eq!(attr_u32(&parse_attrs(parsed[3].1), NBD_SOCK_FD), Some(7));
        // Garbage never panics.
        assert!(parse_attrs(&[0xff, 0xff, 0, 0, 1]).is_empty());
        assert!(parse_attrs(&[2, 0, 0, 0]).is_empty());
    }
}
