//! The socket calls `TCP_REPAIR` needs beside the integer ones: options
//! of any size, queue sizes, peeking at a queue, binding and connecting a
//! socket of the agent's.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use super::check;

/// `getsockopt` into `buf`; returns the bytes the kernel wrote.
pub fn getsockopt_bytes(fd: &OwnedFd, level: i32, name: i32, buf: &mut [u8]) -> io::Result<usize> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: `buf`/`len` describe a writable buffer the kernel fills.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    } as libc::c_long)?;
    Ok(len as usize)
}

/// `setsockopt` from `value`, of any size.
pub fn setsockopt_bytes(fd: &OwnedFd, level: i32, name: i32, value: &[u8]) -> io::Result<()> {
    // SAFETY: `value` is readable for its length, passed along.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            value.as_ptr().cast(),
            value.len() as libc::socklen_t,
        )
    } as libc::c_long)?;
    Ok(())
}

/// An `ioctl` that writes one int (`SIOCINQ`, `SIOCOUTQ`, `SIOCOUTQNSD`).
pub fn ioctl_int(fd: &OwnedFd, request: libc::c_ulong) -> io::Result<i32> {
    let mut n: libc::c_int = 0;
    // SAFETY: the requests this is called with write one int.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), request, &mut n) } as libc::c_long)?;
    Ok(n)
}

/// Up to `len` bytes of the socket's selected queue, left in place
/// (`MSG_PEEK`, not waiting).
pub fn peek(fd: &OwnedFd, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    if len == 0 {
        return Ok(buf);
    }
    // SAFETY: receiving into our buffer, at most its length.
    let n = check(unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            len,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    } as libc::c_long)?;
    buf.truncate(n as usize);
    Ok(buf)
}

/// `send` without waiting; returns the bytes taken.
pub fn send_nowait(fd: &OwnedFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: sending from a valid slice of `data.len()` bytes.
    let n = check(unsafe {
        libc::send(
            fd.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    } as libc::c_long)?;
    Ok(n as usize)
}

/// `bind` to the raw `sockaddr` `addr`.
pub fn bind_raw(fd: &OwnedFd, addr: &[u8]) -> io::Result<()> {
    check(
        // SAFETY: `addr` holds a sockaddr of its length.
        unsafe { libc::bind(fd.as_raw_fd(), addr.as_ptr().cast(), addr.len() as u32) }
            as libc::c_long,
    )?;
    Ok(())
}

/// `connect` to the raw `sockaddr` `addr`.
pub fn connect_raw(fd: &OwnedFd, addr: &[u8]) -> io::Result<()> {
    check(
        // SAFETY: `addr` holds a sockaddr of its length.
        unsafe { libc::connect(fd.as_raw_fd(), addr.as_ptr().cast(), addr.len() as u32) }
            as libc::c_long,
    )?;
    Ok(())
}
