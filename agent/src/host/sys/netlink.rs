//! sock_diag over netlink: what the kernel says of sockets that their
//! descriptors do not (a listener's backlog, a Unix socket's peer).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use super::{getsockopt_int, send};

/// Sends one sock_diag dump request (`body` follows the netlink header)
/// and returns the payload of every answer.
fn sock_diag_dump(body: &[u8]) -> io::Result<Vec<Vec<u8>>> {
    // SAFETY: creating a netlink socket; the descriptor is owned below.
    let nl = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if nl < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `nl` was just created and nothing else owns it.
    let nl = unsafe { OwnedFd::from_raw_fd(nl) };
    let len = 16 + body.len();
    let mut req = vec![0u8; 16];
    req[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
    req[4..6].copy_from_slice(&20u16.to_ne_bytes()); // SOCK_DIAG_BY_FAMILY
    req[6..8].copy_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    req.extend_from_slice(body);
    send(&nl, &req)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..10_000 {
        // SAFETY: receiving into our buffer, at most its length.
        let n = unsafe { libc::recv(nl.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            break;
        }
        if !split_netlink(&buf[..n as usize], &mut out) {
            return Ok(out);
        }
    }
    Ok(out)
}

/// Appends the payload of each netlink message in `buf` (one datagram of
/// a dump) to `out`; false once the dump is over (done, an error, or a
/// message that does not fit).
pub fn split_netlink(buf: &[u8], out: &mut Vec<Vec<u8>>) -> bool {
    let mut off = 0usize;
    while off + 16 <= buf.len() {
        let len = u32_at(buf, off) as usize;
        let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
        if kind == libc::NLMSG_DONE as u16 || kind == libc::NLMSG_ERROR as u16 {
            return false;
        }
        if len < 16 || len > buf.len() - off {
            return false;
        }
        out.push(buf[off + 16..off + len].to_vec());
        off += (len + 3) & !3;
    }
    true
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// The backlog a listening TCP socket was given (`listen(2)`), read with
/// sock_diag (it is the `idiag_wqueue` of a listener).
pub fn listen_backlog(s: &OwnedFd) -> io::Result<i32> {
    let domain = getsockopt_int(s, libc::SOL_SOCKET, libc::SO_DOMAIN)?;
    let ino = std::fs::File::from(s.try_clone()?).metadata()?.ino();
    // inet_diag_req_v2: family, protocol, ext, pad, states, sockid (48).
    let mut body = [0u8; 56];
    body[0] = domain as u8;
    body[1] = libc::IPPROTO_TCP as u8;
    body[4..8].copy_from_slice(&(1u32 << 10).to_ne_bytes()); // TCP_LISTEN
                                                             // inet_diag_msg: ..., wqueue at 60, inode at 68.
    sock_diag_dump(&body)?
        .iter()
        .filter(|m| m.len() >= 72)
        .find(|m| u64::from(u32_at(m, 68)) == ino)
        .map(|m| u32_at(m, 60) as i32)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "listener not found by sock_diag"))
}

/// A Unix socket as sock_diag describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixSocket {
    /// Its inode.
    pub inode: u64,
    /// `SOCK_STREAM`, `SOCK_DGRAM` or `SOCK_SEQPACKET`.
    pub stype: u8,
    /// TCP-like state (1: connected, 10: listening, 7: unconnected).
    pub state: u8,
    /// The peer's inode (0: none).
    pub peer: u64,
    /// Bound path or abstract name, if any.
    pub name: Option<Vec<u8>>,
    /// Receive queue (for a listener: connections waiting) and send queue
    /// (for a listener: its backlog).
    pub queues: (u32, u32),
}

/// Every Unix socket in our network namespace, by sock_diag.
pub fn unix_sockets() -> io::Result<Vec<UnixSocket>> {
    // unix_diag_req: family, protocol, pad, states, ino, show, cookie.
    let mut body = [0u8; 24];
    body[0] = libc::AF_UNIX as u8;
    body[4..8].copy_from_slice(&u32::MAX.to_ne_bytes()); // all states
                                                         // udiag_show: NAME (1) | PEER (4) | RQLEN (16)
    body[12..16].copy_from_slice(&(1u32 | 4 | 16).to_ne_bytes());
    Ok(sock_diag_dump(&body)?
        .iter()
        .filter_map(|m| parse_unix_diag(m))
        .collect())
}

/// One `unix_diag_msg` with its attributes (name, peer, queue lengths);
/// `None` if it is too short to be one.
pub fn parse_unix_diag(m: &[u8]) -> Option<UnixSocket> {
    if m.len() < 16 {
        return None;
    }
    let mut s = UnixSocket {
        inode: u64::from(u32_at(m, 4)),
        stype: m[1],
        state: m[2],
        peer: 0,
        name: None,
        queues: (0, 0),
    };
    // rtattrs after the 16-byte unix_diag_msg.
    let mut a = 16;
    while a + 4 <= m.len() {
        let alen = u16::from_ne_bytes([m[a], m[a + 1]]) as usize;
        let atype = u16::from_ne_bytes([m[a + 2], m[a + 3]]);
        if alen < 4 || a + alen > m.len() {
            break;
        }
        match atype {
            0 => s.name = Some(m[a + 4..a + alen].to_vec()),
            2 if alen >= 8 => s.peer = u64::from(u32_at(m, a + 4)),
            4 if alen >= 12 => s.queues = (u32_at(m, a + 4), u32_at(m, a + 8)),
            _ => {}
        }
        a += (alen + 3) & !3;
    }
    Some(s)
}
