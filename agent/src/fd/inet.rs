//! A listening TCP or unconnected UDP socket: made and bound again, with
//! its integer options and backlog; a UDP socket connected from an address
//! that moves with the process, connected again too; a TCP or UDP socket
//! never bound, made again with its options and left unbound.

use std::os::fd::OwnedFd;

use migrate_proto::image::FdKind;

use super::{proc_err, Collect, FdError, Remote, RemoteCalls};
use crate::host::procfs::FdInfo;
use crate::host::sys;

/// Integer options carried for sockets: (level, name, only for domain;
/// -1: stream sockets only).
const SOCKET_OPTIONS: [(i32, i32, i32); 7] = [
    (libc::SOL_SOCKET, libc::SO_REUSEADDR, 0),
    (libc::SOL_SOCKET, libc::SO_REUSEPORT, 0),
    (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 0),
    (libc::SOL_SOCKET, libc::SO_BROADCAST, 0),
    (libc::IPPROTO_TCP, libc::TCP_NODELAY, -1),
    (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, libc::AF_INET6),
    (libc::SOL_SOCKET, libc::SO_PRIORITY, 0),
];

/// Family, type, address and options of the process's socket (taken over
/// with pidfd_getfd).
pub fn dump(c: &Collect, info: &FdInfo) -> Result<FdKind, FdError> {
    let s = c.take(info.fd)?;
    describe(&s, info.flags).map_err(proc_err(c.pid, "socket"))
}

fn describe(s: &OwnedFd, flags: u32) -> std::io::Result<FdKind> {
    let domain = sys::getsockopt_int(s, libc::SOL_SOCKET, libc::SO_DOMAIN)?;
    let stype = sys::getsockopt_int(s, libc::SOL_SOCKET, libc::SO_TYPE)?;
    let protocol = sys::getsockopt_int(s, libc::SOL_SOCKET, libc::SO_PROTOCOL)?;
    let listening = sys::getsockopt_int(s, libc::SOL_SOCKET, libc::SO_ACCEPTCONN)? != 0;
    let mut options = Vec::new();
    for (level, name, only) in SOCKET_OPTIONS {
        let applies = match only {
            0 => true,
            -1 => stype == libc::SOCK_STREAM,
            d => d == domain,
        };
        if applies {
            options.push((level, name, sys::getsockopt_int(s, level, name)?));
        }
    }
    Ok(FdKind::Socket {
        flags,
        domain,
        stype,
        protocol,
        addr: sys::getsockname(s)?,
        listen: listening.then_some(sys::listen_backlog(s).unwrap_or(libc::SOMAXCONN)),
        options,
        peer: (stype == libc::SOCK_DGRAM)
            .then(|| sys::getpeername(s).ok())
            .flatten(),
    })
}

/// Whether `s` is an IPv4/IPv6 stream or datagram socket never bound nor
/// connected: no port, the wildcard address, no peer, not listening.
pub fn never_bound(s: &OwnedFd) -> bool {
    let int = |level, name| sys::getsockopt_int(s, level, name).ok();
    let domain = int(libc::SOL_SOCKET, libc::SO_DOMAIN);
    let stype = int(libc::SOL_SOCKET, libc::SO_TYPE);
    let inet = matches!(domain, Some(libc::AF_INET | libc::AF_INET6));
    let kind = matches!(stype, Some(libc::SOCK_STREAM | libc::SOCK_DGRAM));
    inet && kind
        && int(libc::SOL_SOCKET, libc::SO_ACCEPTCONN) == Some(0)
        && sys::getpeername(s).is_err()
        && sys::getsockname(s).is_ok_and(|a| unbound_address(&a))
}

/// Whether the raw `sockaddr_in`/`sockaddr_in6` `a` has port 0 and the
/// wildcard address (what `getsockname` gives before any bind).
fn unbound_address(a: &[u8]) -> bool {
    let family = a.get(..2).map(|f| u16::from_ne_bytes([f[0], f[1]]) as i32);
    let address = match family {
        Some(libc::AF_INET) => a.get(4..8),
        Some(libc::AF_INET6) => a.get(8..24),
        _ => None,
    };
    let port_zero = a.get(2..4).is_some_and(|p| p == [0, 0]);
    port_zero && address.is_some_and(|b| b.iter().all(|&x| x == 0))
}

/// A bound socket of the image.
pub struct Bound<'a> {
    /// fdinfo flags.
    pub flags: u32,
    /// `AF_INET` or `AF_INET6`.
    pub domain: i32,
    /// `SOCK_STREAM` or `SOCK_DGRAM`.
    pub stype: i32,
    /// Protocol.
    pub protocol: i32,
    /// Raw `sockaddr`.
    pub addr: &'a [u8],
    /// Listening, with this backlog.
    pub listen: Option<i32>,
    /// (level, name, value).
    pub options: &'a [(i32, i32, i32)],
    /// The peer of a connected UDP socket.
    pub peer: Option<&'a [u8]>,
}

/// `socket`, its options, `bind`, and `listen` for a listener.
pub fn restore(r: &mut impl Remote, want: i32, s: Bound) -> Result<(), FdError> {
    let mut ty = s.stype;
    if s.flags & libc::O_NONBLOCK as u32 != 0 {
        ty |= libc::SOCK_NONBLOCK;
    }
    if s.flags & libc::O_CLOEXEC as u32 != 0 {
        ty |= libc::SOCK_CLOEXEC;
    }
    let got = r.socket(s.domain, ty, s.protocol)?;
    for &(level, name, value) in s.options {
        r.setsockopt(got, level, name, &value.to_ne_bytes())?;
    }
    // One never bound stays so (its port is chosen at its first use).
    if !unbound_address(s.addr) {
        r.bind(got, s.addr)?;
    }
    if let Some(backlog) = s.listen {
        r.listen(got, backlog)?;
    }
    if let Some(peer) = s.peer {
        // From the agent: its address may come only at the resume, and
        // routing from an address not (yet) this host's takes a capability
        // the process need not have.
        let ours = r.take(got, "taking a UDP socket to connect")?;
        super::tcp_repair::set_transparent(&ours, s.domain, true)
            .and_then(|()| sys::connect_raw(&ours, peer))
            .and_then(|()| super::tcp_repair::set_transparent(&ours, s.domain, false))
            .map_err(super::sys_err("connecting a UDP socket again"))?;
    }
    r.move_fd(got, want, s.flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(port: u16, ip: [u8; 4]) -> Vec<u8> {
        let mut a = vec![0u8; 16];
        a[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        a[2..4].copy_from_slice(&port.to_be_bytes());
        a[4..8].copy_from_slice(&ip);
        a
    }

    #[test]
    fn only_port_zero_on_the_wildcard_is_unbound() {
        assert!(unbound_address(&v4(0, [0; 4])));
        assert!(!unbound_address(&v4(53, [0; 4])));
        // Bound to an address with the port left for later.
        assert!(!unbound_address(&v4(0, [127, 0, 0, 1])));
        let mut v6 = vec![0u8; 28];
        v6[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        assert!(unbound_address(&v6));
        v6[23] = 1;
        assert!(!unbound_address(&v6));
        assert!(!unbound_address(&[]));
    }

    #[test]
    fn a_fresh_socket_is_never_bound_and_a_bound_one_is() {
        for (domain, ty) in [
            (libc::AF_INET, libc::SOCK_DGRAM),
            (libc::AF_INET, libc::SOCK_STREAM),
            (libc::AF_INET6, libc::SOCK_DGRAM),
        ] {
            // SAFETY: socket with integer arguments; the descriptor it
            // returns is ours alone.
            let s = unsafe {
                let fd = libc::socket(domain, ty, 0);
                assert!(fd >= 0, "socket({domain}, {ty})");
                <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
            };
            assert!(never_bound(&s), "{domain} {ty}");
        }
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(!never_bound(&OwnedFd::from(u)));
    }
}
