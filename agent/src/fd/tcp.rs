//! An established TCP connection of a cooperating process
//! ([`TcpPolicy`]): on the destination dialled again to its peer, or a
//! socket whose connection was reset (and, with `close`, the original's
//! reset at the commit).

use std::time::Duration;

use migrate_proto::image::{FdKind, TcpPolicy};

use super::{proc_err, Collect, FdError, Remote, RemoteCalls};
use crate::host::procfs::FdInfo;
use crate::host::sys;

/// How long connecting a TCP connection again may take.
const RECONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Its family and peer; with `--tcp close`, our copy of it is kept to be
/// reset at the commit.
pub fn dump(c: &mut Collect, info: &FdInfo) -> Result<FdKind, FdError> {
    let ours = c.take(info.fd)?;
    let kind = FdKind::TcpConnection {
        flags: info.flags,
        domain: sys::getsockopt_int(&ours, libc::SOL_SOCKET, libc::SO_DOMAIN)
            .map_err(proc_err(c.pid, "socket"))?,
        peer: sys::getpeername(&ours).map_err(proc_err(c.pid, "socket"))?,
        reconnect: c.tcp == TcpPolicy::Reconnect,
    };
    if c.tcp == TcpPolicy::Close {
        c.out.to_reset.push(ours);
    }
    Ok(kind)
}

/// Dialled again (when asked and it answers), else a reset socket.
pub fn restore(
    r: &mut impl Remote,
    fd: i32,
    flags: u32,
    domain: i32,
    peer: &[u8],
    reconnect: bool,
) -> Result<(), FdError> {
    let again = if reconnect {
        connect_again(r, domain, peer)?
    } else {
        None
    };
    let got = match again {
        Some(s) => {
            r.reconnected(fd);
            s
        }
        None => reset_socket(r)?,
    };
    if flags & libc::O_NONBLOCK as u32 != 0 {
        r.fcntl_setfl(got, libc::O_NONBLOCK)?;
    }
    r.move_fd(got, fd, flags)
}

/// A TCP connection from inside the process to `peer` (a raw sockaddr),
/// or `None` if it cannot be made within [`RECONNECT_TIMEOUT`].
fn connect_again(r: &mut impl Remote, domain: i32, peer: &[u8]) -> Result<Option<i32>, FdError> {
    let s = r.socket(domain, libc::SOCK_STREAM, 0)?;
    // A blocking connect gives up after SO_SNDTIMEO.
    let tv = |secs: i64| {
        let mut b = secs.to_ne_bytes().to_vec();
        b.extend_from_slice(&0i64.to_ne_bytes());
        b
    };
    let timeout = tv(RECONNECT_TIMEOUT.as_secs() as i64);
    r.setsockopt(s, libc::SOL_SOCKET, libc::SO_SNDTIMEO, &timeout)?;
    // A refused or timed-out connect is an answer; losing the process
    // while injecting it is a failure.
    if r.try_connect(s, peer)?.is_err() {
        r.close(s)?;
        return Ok(None);
    }
    r.setsockopt(s, libc::SOL_SOCKET, libc::SO_SNDTIMEO, &tv(0))?;
    Ok(Some(s))
}

/// A TCP socket inside the process whose connection was reset (its next
/// read reports `ECONNRESET`): connected to a listener on the loopback
/// that is closed with an RST at once.
fn reset_socket(r: &mut impl Remote) -> Result<i32, FdError> {
    let l = r.socket(libc::AF_INET, libc::SOCK_STREAM, 0)?;
    // sockaddr_in 127.0.0.1:0: a port of the kernel's choosing.
    let mut sin = vec![0u8; 16];
    sin[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    sin[4..8].copy_from_slice(&[127, 0, 0, 1]);
    r.bind(l, &sin)?;
    r.listen(l, 1)?;
    let addr = r.getsockname(l)?;
    let c = r.socket(libc::AF_INET, libc::SOCK_STREAM, 0)?;
    r.connect(c, &addr)?;
    let a = r.accept(l)?;
    // struct linger { on = 1, seconds = 0 }: close sends an RST.
    let mut linger = 1i32.to_ne_bytes().to_vec();
    linger.extend_from_slice(&0i32.to_ne_bytes());
    r.setsockopt(a, libc::SOL_SOCKET, libc::SO_LINGER, &linger)?;
    r.close(a)?;
    r.close(l)?;
    Ok(c)
}
