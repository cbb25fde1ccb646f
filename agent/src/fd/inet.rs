//! A listening TCP or unconnected UDP socket: made and bound again, with
//! its integer options and backlog; a UDP socket connected from an address
//! that moves with the process, connected again too.

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
    r.bind(got, s.addr)?;
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
