//! Open files between processes: whether two descriptors are one open
//! file (`kcmp`), and handing one over a Unix socket (`SCM_RIGHTS`).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

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
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // Room for one cmsghdr with one int, aligned as the kernel wants.
    let mut control = [0u64; 4];
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) } as usize;
    assert!(space <= std::mem::size_of_val(&control));
    // SAFETY: msghdr is plain data; every pointer set below points at a
    // live local for the duration of sendmsg.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: the control buffer holds `space` bytes, enough for one
    // header and one int (checked above); CMSG_FIRSTHDR of it is in bounds.
    let r = unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>(), fd.as_raw_fd());
        libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
