//! An established TCP connection of a cooperating process
//! ([`TcpPolicy`]): on the destination dialled again to its peer, or a
//! socket whose connection was reset (and, with `close`, the original's
//! reset at the commit).

use std::time::Duration;

use migrate_proto::image::{FdKind, TcpPolicy};

use super::{proc_err, Collect, FdError, Remote};
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
    let want = fd as u64;
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
    if u64::from(flags) & libc::O_NONBLOCK as u64 != 0 {
        r.sys(
            format!("O_NONBLOCK on fd {want}"),
            libc::SYS_fcntl,
            [got, libc::F_SETFL as u64, libc::O_NONBLOCK as u64, 0, 0, 0],
        )?;
    }
    r.move_fd(got, want, u64::from(flags))
}

/// A TCP connection from inside the process to `peer` (a raw sockaddr),
/// or `None` if it cannot be made within [`RECONNECT_TIMEOUT`].
fn connect_again(r: &mut impl Remote, domain: i32, peer: &[u8]) -> Result<Option<u64>, FdError> {
    let s = r.sys(
        "socket",
        libc::SYS_socket,
        [domain as u64, libc::SOCK_STREAM as u64, 0, 0, 0, 0],
    )?;
    // A blocking connect gives up after SO_SNDTIMEO.
    let tv = |secs: i64| {
        let mut b = secs.to_ne_bytes().to_vec();
        b.extend_from_slice(&0i64.to_ne_bytes());
        b
    };
    let timeout = tv(RECONNECT_TIMEOUT.as_secs() as i64);
    r.setsockopt(s, libc::SOL_SOCKET, libc::SO_SNDTIMEO, &timeout)?;
    let p = r.put_bytes(peer)?;
    // A refused or timed-out connect is an answer; losing the process
    // while injecting it is a failure.
    if r.try_sys(libc::SYS_connect, [s, p, peer.len() as u64, 0, 0, 0])?
        .is_err()
    {
        r.close(s)?;
        return Ok(None);
    }
    r.setsockopt(s, libc::SOL_SOCKET, libc::SO_SNDTIMEO, &tv(0))?;
    Ok(Some(s))
}

/// A TCP socket inside the process whose connection was reset (its next
/// read reports `ECONNRESET`): connected to a listener on the loopback
/// that is closed with an RST at once.
fn reset_socket(r: &mut impl Remote) -> Result<u64, FdError> {
    let inet = libc::AF_INET as u64;
    let stream = libc::SOCK_STREAM as u64;
    let l = r.sys("socket", libc::SYS_socket, [inet, stream, 0, 0, 0, 0])?;
    // sockaddr_in 127.0.0.1:0 at scratch+16, its length at scratch.
    let mut sin = vec![0u8; 16];
    sin[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    sin[4..8].copy_from_slice(&[127, 0, 0, 1]);
    let mut b = 16u32.to_ne_bytes().to_vec();
    b.resize(16, 0);
    b.extend_from_slice(&sin);
    let len_at = r.put_bytes(&b)?;
    let addr_at = len_at + 16;
    r.sys("bind", libc::SYS_bind, [l, addr_at, 16, 0, 0, 0])?;
    r.sys("listen", libc::SYS_listen, [l, 1, 0, 0, 0, 0])?;
    r.sys(
        "getsockname",
        libc::SYS_getsockname,
        [l, addr_at, len_at, 0, 0, 0],
    )?;
    let c = r.sys("socket", libc::SYS_socket, [inet, stream, 0, 0, 0, 0])?;
    r.sys("connect", libc::SYS_connect, [c, addr_at, 16, 0, 0, 0])?;
    let a = r.sys("accept", libc::SYS_accept, [l, 0, 0, 0, 0, 0])?;
    // struct linger { on = 1, seconds = 0 }: close sends an RST.
    let mut linger = 1i32.to_ne_bytes().to_vec();
    linger.extend_from_slice(&0i32.to_ne_bytes());
    r.setsockopt(a, libc::SOL_SOCKET, libc::SO_LINGER, &linger)?;
    r.close(a)?;
    r.close(l)?;
    Ok(c)
}
