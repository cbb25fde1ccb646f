//! Open files between processes: whether two descriptors are one open
//! file (`kcmp`), and handing one over a Unix socket (`SCM_RIGHTS`).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// `kcmp(pid, pid, KCMP_FILE, a, b)`: whether two descriptors of `pid` are
/// the same open file.
pub fn same_open_file(pid: i32, a: i32, b: i32) -> io::Result<bool> {
    same_open_file_of((pid, a), (pid, b))
}

/// `kcmp(pid1, pid2, KCMP_FILE, fd1, fd2)`: whether descriptor `a.1` of
/// process `a.0` and `b.1` of `b.0` are the same open file.
pub fn same_open_file_of(a: (i32, i32), b: (i32, i32)) -> io::Result<bool> {
    const KCMP_FILE: libc::c_long = 0;
    // SAFETY: kcmp with integer arguments only.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, a.0, b.0, KCMP_FILE, a.1, b.1) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r == 0)
}

/// Sends descriptor `fd` over the Unix socket `sock` (`SCM_RIGHTS`, with
/// one byte of data).
pub fn send_fd(sock: &OwnedFd, fd: &OwnedFd) -> io::Result<()> {
    send_fds(sock, &[0], &[fd.as_raw_fd()])
}

/// Most descriptors one [`send_fds`] takes (the kernel's `SCM_MAX_FD` is 253).
pub const MAX_FDS_PER_MESSAGE: usize = 200;

/// Room for the control message of [`MAX_FDS_PER_MESSAGE`] descriptors.
const FDS_CONTROL_WORDS: usize = 128;

/// Sends `data` with the descriptors `fds` (at most
/// [`MAX_FDS_PER_MESSAGE`]) over the Unix socket `sock` (`SCM_RIGHTS`).
pub fn send_fds(sock: &impl AsRawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    assert!(fds.len() <= MAX_FDS_PER_MESSAGE && !data.is_empty());
    let mut iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    let mut control = [0u64; FDS_CONTROL_WORDS];
    let bytes = std::mem::size_of_val(fds) as u32;
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(bytes) } as usize;
    assert!(space <= std::mem::size_of_val(&control));
    // SAFETY: msghdr is plain data; every pointer set below points at a
    // live local for the duration of sendmsg (the kernel only reads `iov`).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
    }
    // SAFETY: the control buffer holds `space` bytes (checked above), room
    // for one header and the descriptors; CMSG_FIRSTHDR of it is in bounds.
    let r = unsafe {
        if !fds.is_empty() {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(bytes) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(c).cast::<libc::c_int>(),
                fds.len(),
            );
        }
        libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    if r as usize != data.len() {
        return Err(io::Error::other("a short send of descriptors"));
    }
    Ok(())
}

/// Receives exactly `data.len()` bytes sent by one [`send_fds`] from the
/// Unix stream socket `sock`, and the descriptors that came with them.
/// `Ok(None)`: the other end closed first.
pub fn recv_fds(sock: RawFd, data: &mut [u8]) -> io::Result<Option<Vec<OwnedFd>>> {
    use std::os::fd::FromRawFd;
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let mut control = [0u64; FDS_CONTROL_WORDS];
    // SAFETY: msghdr is plain data; every pointer set below points at a
    // live local for the duration of recvmsg.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    let n = loop {
        // SAFETY: `msg` describes live local buffers of the sizes given.
        let n =
            unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC | libc::MSG_WAITALL) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let mut fds = Vec::new();
    // SAFETY: the kernel filled `msg_controllen` bytes of `control` with
    // well-formed headers; CMSG_FIRSTHDR/NXTHDR stay within them, and each
    // SCM_RIGHTS descriptor is new in this process, owned from here.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let p = libc::CMSG_DATA(c).cast::<libc::c_int>();
                for i in 0..len / std::mem::size_of::<libc::c_int>() {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(p.add(i))));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if n == 0 {
        return Ok(None);
    }
    if n != data.len() || msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other(
            "a short or truncated message of descriptors",
        ));
    }
    Ok(Some(fds))
}
