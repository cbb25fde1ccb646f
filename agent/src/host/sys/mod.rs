//! Thin wrappers around the syscalls the agent needs beyond std: the only
//! unsafe code of the agent besides `uffd`. Larger parts in modules of
//! their own, re-exported: the rebuild's stub (`stub`), sock_diag over
//! netlink (`netlink`), `PAGEMAP_SCAN` (`pagemap`), CPU affinity
//! (`affinity`), open files between processes (`shared_files`).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

mod addr;
mod affinity;
mod clone3;
mod netlink;
mod pagemap;
mod repair;
mod shared_files;
mod stub;

pub use addr::*;
pub use affinity::*;
pub use clone3::*;
pub use netlink::*;
pub use pagemap::*;
pub use repair::*;
pub use shared_files::*;
pub use stub::*;

/// `s` as a C string (an interior NUL is invalid input).
pub(crate) fn c_path(s: &str) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

pub(crate) fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Fills `buf` from the kernel's random number generator (`getrandom`).
pub fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    let mut at = 0;
    while at < buf.len() {
        let rest = &mut buf[at..];
        // SAFETY: `rest` is valid for writes of `rest.len()` bytes.
        let n = check(
            unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) } as libc::c_long,
        )?;
        at += n as usize;
    }
    Ok(())
}

/// Lowers the calling thread's scheduling priority to `nice` (Linux keeps
/// a nice value per thread): background work yields the CPU to the
/// migrated process and to fault service.
pub fn set_thread_nice(nice: i32) -> io::Result<()> {
    // SAFETY: plain syscalls with integer arguments, on this thread only.
    let ret = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, nice)
    };
    check(libc::c_long::from(ret)).map(|_| ())
}

/// Makes the kernel notice a dead peer on an idle `sock` by itself:
/// keepalive probes after `idle` seconds of silence, every `interval`
/// seconds, `count` of them; a blocked read then fails instead of waiting
/// forever. (No `TCP_USER_TIMEOUT`: it would also end a healthy connection
/// whose reader is slow, e.g. a pipe into a pager.)
pub fn set_tcp_keepalive(
    sock: &impl AsRawFd,
    idle: u32,
    interval: u32,
    count: u32,
) -> io::Result<()> {
    let set = |level, name, value| setsockopt_int(sock, level, name, value);
    let int = |v: u32| libc::c_int::try_from(v).unwrap_or(libc::c_int::MAX);
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
    set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, int(idle))?;
    set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, int(interval))?;
    set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, int(count))
}

/// `setsockopt(sock, level, name, &value)` for an integer option.
pub fn setsockopt_int(
    sock: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a valid c_int for the duration of the call and
    // its size is passed along.
    let ret = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    check(libc::c_long::from(ret)).map(|_| ())
}

/// `pidfd_open(pid, 0)`.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: the syscall returned a new descriptor that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `pidfd_getfd(pidfd, targetfd, 0)`: a copy of another process's descriptor.
pub fn pidfd_getfd(pidfd: &OwnedFd, target: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments; `pidfd` is open.
    let fd = check(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target, 0) })?;
    // SAFETY: the syscall returned a new descriptor that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The events ready on `fd` now (`poll` with no wait).
pub fn poll_now(fd: &impl AsRawFd, events: i16) -> io::Result<i16> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    check(unsafe { libc::poll(&mut p, 1, 0) } as i64)?;
    Ok(p.revents)
}

/// `pidfd_send_signal(pidfd, sig, NULL, 0)`.
pub fn pidfd_kill(pidfd: &OwnedFd, sig: i32) -> io::Result<()> {
    pidfd_kill_raw(pidfd.as_raw_fd(), sig)
}

/// Queues `sig` with the value `value` for the thread `tid` of process
/// `tgid` (`rt_tgsigqueueinfo`, as `sigqueue(3)` would for a process).
pub fn queue_to_thread(tgid: i32, tid: i32, sig: i32, value: u32) -> io::Result<()> {
    // siginfo_t on x86_64: signo, errno, code, then (at 16) pid, uid and
    // the 8-byte sigval.
    let mut info = [0u8; 128];
    info[0..4].copy_from_slice(&sig.to_le_bytes());
    info[8..12].copy_from_slice(&libc::SI_QUEUE.to_le_bytes());
    info[16..20].copy_from_slice(&getpid().to_le_bytes());
    // SAFETY: getuid cannot fail.
    info[20..24].copy_from_slice(&unsafe { libc::getuid() }.to_le_bytes());
    info[24..32].copy_from_slice(&u64::from(value).to_le_bytes());
    // SAFETY: the kernel reads 128 bytes of siginfo from `info`.
    check(unsafe { libc::syscall(libc::SYS_rt_tgsigqueueinfo, tgid, tid, sig, info.as_ptr()) })
        .map(|_| ())
}

/// `kill(pid, sig)`.
pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: plain syscall with integer arguments.
    check(libc::c_long::from(unsafe { libc::kill(pid, sig) })).map(|_| ())
}

/// Credentials of the process at the other end of a Unix socket.
pub fn peer_cred(sock: &UnixStream) -> io::Result<libc::ucred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes and `len` holds the
    // size of `cred`, as SO_PEERCRED requires.
    let ret = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    check(libc::c_long::from(ret))?;
    Ok(cred)
}

/// `prlimit64(pid, resource, NULL, &old)`: another process's limit.
pub fn get_rlimit(pid: i32, resource: u32) -> io::Result<(u64, u64)> {
    let mut old = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `old` is a valid rlimit64 the kernel writes; new limit is NULL.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_prlimit64,
            pid,
            resource,
            std::ptr::null::<libc::rlimit64>(),
            &mut old as *mut libc::rlimit64,
        )
    };
    check(ret)?;
    Ok((old.rlim_cur, old.rlim_max))
}

/// `get_robust_list(pid)`: head and length of another task's robust list.
pub fn get_robust_list(tid: i32) -> io::Result<(u64, u64)> {
    let mut head: u64 = 0;
    let mut len: usize = 0;
    // SAFETY: `head` and `len` are valid for writes of a pointer and a size_t.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            tid,
            &mut head as *mut u64,
            &mut len as *mut usize,
        )
    };
    check(ret)?;
    Ok((head, len as u64))
}

/// `waitpid(pid, WNOHANG)`: reaps `pid` if it has exited.
pub fn try_reap(pid: i32) -> bool {
    let mut status = 0;
    // SAFETY: `status` is a valid int the kernel writes.
    let ret = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG | libc::__WALL) };
    ret == pid
}

/// The signals that stop or reload the agent: blocked in every thread and
/// taken by [`wait_signal`] alone, so that no other thread's syscall is
/// interrupted by one. (Children start with an empty mask: `Command`
/// clears it before exec.)
pub const STOP_SIGNALS: [i32; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

fn stop_signal_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&mut set);
        for s in STOP_SIGNALS {
            libc::sigaddset(&mut set, s);
        }
    }
    set
}

/// Blocks [`STOP_SIGNALS`] in the calling thread and the threads it starts
/// from now on: call it before any thread starts.
pub fn block_stop_signals() -> io::Result<()> {
    let set = stop_signal_set();
    // SAFETY: `set` is a valid sigset_t; the old mask is not wanted.
    let ret = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if ret != 0 {
        return Err(io::Error::from_raw_os_error(ret));
    }
    Ok(())
}

/// Waits for one of [`STOP_SIGNALS`] (blocked by [`block_stop_signals`])
/// and returns it.
pub fn wait_signal() -> io::Result<i32> {
    let set = stop_signal_set();
    let mut sig = 0;
    // SAFETY: `set` is a valid sigset_t and `sig` a valid int to write.
    let ret = unsafe { libc::sigwait(&set, &mut sig) };
    if ret != 0 {
        return Err(io::Error::from_raw_os_error(ret));
    }
    Ok(sig)
}

/// Ends the process as `sig`'s default action does (for `SIGTERM`: killed
/// by it, as an agent that handled no signal would be).
pub fn die_of(sig: i32) -> ! {
    // SAFETY: resetting a disposition to its default and raising a signal
    // take integer arguments; the mask is changed for this thread only.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
        libc::_exit(128 + sig)
    }
}

/// A pipe, both ends close-on-exec: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` is a valid array of two ints for the kernel to fill.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } as libc::c_long)?;
    // SAFETY: pipe2 just returned these two descriptors; nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Makes the program `cmd` runs find `fds[i]` at descriptor number
/// `at[i]` (each `at` above 2).
pub fn pass_fds(cmd: &mut std::process::Command, fds: &[RawFd], at: &[RawFd]) {
    use std::os::unix::process::CommandExt;
    assert_eq!(fds.len(), at.len(), "one place for each descriptor");
    // Above every target: a copy made there is never overwritten by a
    // later dup2. Everything the child touches is allocated before the fork.
    let floor = at.iter().copied().max().unwrap_or(0).max(9) + 1;
    let pairs: Vec<(RawFd, RawFd)> = fds.iter().copied().zip(at.iter().copied()).collect();
    let mut high = vec![0i32; pairs.len()];
    // SAFETY: the closure runs between fork and exec and calls only fcntl
    // and dup2, which are async-signal-safe; it allocates nothing and
    // touches no memory but the vectors moved into it.
    unsafe {
        cmd.pre_exec(move || {
            // Out of the way first, so that dup2 never meets itself.
            for (h, (fd, _)) in high.iter_mut().zip(&pairs) {
                *h = libc::fcntl(*fd, libc::F_DUPFD, floor);
                if *h < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            for (h, (_, target)) in high.iter().zip(&pairs) {
                if libc::dup2(*h, *target) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Starts a session of its own and ignores the signals a terminal sends
/// (for a helper that must outlive a ^C aimed at the agent), blocking
/// none (not the agent's stop signals, which it inherited blocked).
pub fn detach_from_terminal() {
    // SAFETY: plain syscalls on integers, and an empty set from
    // sigemptyset set as the mask.
    unsafe {
        libc::setsid();
        for sig in [libc::SIGINT, libc::SIGHUP, libc::SIGTERM, libc::SIGPIPE] {
            libc::signal(sig, libc::SIG_IGN);
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// Blocks until descriptor `fd` (inherited, not owned) has data or its
/// writers are gone.
pub fn wait_readable_or_closed(fd: RawFd) {
    let mut b = [0u8; 1];
    loop {
        // SAFETY: reading one byte into a valid buffer from a descriptor
        // number; a closed one fails with EBADF.
        let n = unsafe { libc::read(fd, b.as_mut_ptr().cast(), 1) };
        if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return;
    }
}

/// `pidfd_send_signal` on descriptor number `pidfd` (inherited, not owned).
pub fn pidfd_kill_raw(pidfd: RawFd, sig: i32) -> io::Result<()> {
    // SAFETY: plain syscall with integer arguments; a NULL siginfo is allowed.
    check(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd,
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    })?;
    Ok(())
}

/// Ends the process at once (`_exit`): no destructors, no atexit.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is always safe to call; descriptors close with the process.
    unsafe { libc::_exit(code) }
}

/// `getuid()`.
pub fn getpid() -> i32 {
    std::process::id() as i32
}

/// Copies the bytes waiting in the pipe `src` (a read end) without taking
/// them out, through `tee` into a pipe of our own. `capacity` is the
/// pipe's size; fails if the copy is short.
pub fn peek_pipe(src: &OwnedFd, capacity: u32) -> io::Result<Vec<u8>> {
    let mut waiting: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    if unsafe { libc::ioctl(src.as_raw_fd(), libc::FIONREAD, &mut waiting) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let waiting = waiting.max(0) as usize;
    if waiting == 0 {
        return Ok(Vec::new());
    }
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 just made these two descriptors, owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on our own descriptor with an integer argument.
    unsafe {
        libc::fcntl(
            w.as_raw_fd(),
            libc::F_SETPIPE_SZ,
            capacity.max(4096) as libc::c_int,
        )
    };
    // SAFETY: tee between two pipe descriptors; no memory involved.
    let n = unsafe {
        libc::tee(
            src.as_raw_fd(),
            w.as_raw_fd(),
            waiting,
            libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != waiting {
        return Err(io::Error::other(format!(
            "copied {n} of the {waiting} bytes in the pipe"
        )));
    }
    drop(w);
    let mut out = Vec::with_capacity(waiting);
    std::io::Read::read_to_end(&mut std::fs::File::from(r), &mut out)?;
    Ok(out)
}

/// `getsockopt` of an int option on our descriptor.
pub fn getsockopt_int(fd: &OwnedFd, level: i32, name: i32) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` describe an int-sized buffer the kernel fills.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

/// `getsockname` as raw `sockaddr` bytes.
pub fn getsockname(fd: &OwnedFd) -> io::Result<Vec<u8>> {
    socket_address(fd, libc::getsockname)
}

/// The remote address of a connected socket (`getpeername`).
pub fn getpeername(fd: &OwnedFd) -> io::Result<Vec<u8>> {
    socket_address(fd, libc::getpeername)
}

type AddressCall =
    unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int;

fn socket_address(fd: &OwnedFd, call: AddressCall) -> io::Result<Vec<u8>> {
    let mut buf = [0u8; 128];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: `buf`/`len` describe a buffer large enough for any sockaddr.
    let r = unsafe { call(fd.as_raw_fd(), buf.as_mut_ptr().cast(), &mut len) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(buf[..len as usize].to_vec())
}

/// Resets an established TCP connection (the peer gets an RST; the
/// socket's next read reports `ECONNRESET`): `connect` to `AF_UNSPEC`.
pub fn reset_connection(fd: &OwnedFd) -> io::Result<()> {
    let unspec = libc::sockaddr {
        sa_family: libc::AF_UNSPEC as libc::sa_family_t,
        sa_data: [0; 14],
    };
    // SAFETY: a valid sockaddr of its own size.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &unspec,
            std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The bytes (stream) or datagrams waiting to be read on Unix socket `s`,
/// read with MSG_PEEK and SO_PEEK_OFF so nothing is taken out.
pub fn peek_unix(s: &OwnedFd, stream: bool) -> io::Result<Vec<Vec<u8>>> {
    let set_off = |v: libc::c_int| {
        // SAFETY: setting an int option on our descriptor.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEEK_OFF,
                (&v as *const libc::c_int).cast(),
                4,
            )
        }
    };
    if set_off(0) < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    for _ in 0..100_000 {
        // SAFETY: a peek into our buffer, at most its length.
        let n = unsafe {
            libc::recv(
                s.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if n <= 0 {
            break;
        }
        out.push(buf[..n as usize].to_vec());
    }
    set_off(-1);
    if stream {
        let all: Vec<u8> = out.concat();
        return Ok(if all.is_empty() {
            Vec::new()
        } else {
            vec![all]
        });
    }
    Ok(out)
}

/// The path of the file a kernel file handle names on the filesystem with
/// device `sdev` (the kernel's internal encoding, major << 20 | minor).
pub fn path_of_handle(sdev: u64, handle_type: i32, handle: &[u8]) -> io::Result<String> {
    let (major, minor) = (sdev >> 20, sdev & 0xfffff);
    let want = format!("{major}:{minor}");
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mount = info
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(2) == Some(&want.as_str()) && f.get(3) == Some(&"/"))
        .and_then(|f| f.get(4).map(|s| s.to_string()))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no mount of device {want}"),
            )
        })?;
    let m = std::fs::File::open(&mount)?;
    // struct file_handle: handle_bytes (u32), handle_type (i32), bytes.
    let mut fh = Vec::with_capacity(8 + handle.len());
    fh.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
    fh.extend_from_slice(&handle_type.to_ne_bytes());
    fh.extend_from_slice(handle);
    // SAFETY: open_by_handle_at reads the file_handle we built; the mount
    // descriptor is ours.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            m.as_raw_fd(),
            fh.as_ptr(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us.
    let f = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let path = std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd()))?;
    Ok(path.to_string_lossy().into_owned())
}

/// Bytes waiting to be read on a descriptor (FIONREAD).
pub fn pending_bytes(fd: &OwnedFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n.max(0) as usize)
}

/// `fcntl(fd, cmd)` without an argument (`F_GET_SEALS`, `F_GETPIPE_SZ`).
pub fn fcntl_get(fd: &impl AsRawFd, cmd: libc::c_int) -> io::Result<i32> {
    // SAFETY: fcntl query commands take no pointer argument.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), cmd) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

/// `lseek(fd, pos, whence)`; `None` at ENXIO (no data or hole past `pos`).
pub fn seek(fd: &impl AsRawFd, pos: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    // SAFETY: lseek with integer arguments on a descriptor the caller owns.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), pos as libc::off_t, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENXIO) {
            Ok(None)
        } else {
            Err(e)
        };
    }
    Ok(Some(r as u64))
}

/// `send(fd, data, 0)`: how many bytes went.
pub fn send(fd: &impl AsRawFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: sending from a valid slice of `data.len()` bytes.
    let r = unsafe { libc::send(fd.as_raw_fd(), data.as_ptr().cast(), data.len(), 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// `mkfifo(path, mode)`.
pub fn mkfifo(path: &str, mode: libc::mode_t) -> io::Result<()> {
    let c = c_path(path)?;
    // SAFETY: mkfifo with a valid NUL-terminated path.
    if unsafe { libc::mkfifo(c.as_ptr(), mode) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Every signal back to its default disposition, none blocked.
pub fn reset_signals() {
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: restoring the default disposition.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    // SAFETY: an empty set from sigemptyset, then unblocking it all.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// Installs `handler` for `sig` (it must be async-signal-safe).
pub fn set_handler(sig: i32, handler: extern "C" fn(libc::c_int)) {
    // SAFETY: the handler only does async-signal-safe work (the caller's
    // promise); signal() with a function pointer.
    unsafe { libc::signal(sig, handler as *const () as libc::sighandler_t) };
}

/// Ends this process by signal `sig` (as the process it stands for did).
pub fn die_by(sig: i32) -> ! {
    // SAFETY: default disposition, then raising the signal; _exit if it
    // did not end us.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
        libc::_exit(128 + sig)
    }
}

/// Makes this process a child subreaper: orphans below it (the processes
/// it rebuilds) become its children, so it learns how they end.
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits for child `pid` (whose pidfd is `pidfd`) to end: (exit code,
/// killing signal). It waits on the pidfd first and reaps only once the
/// process has exited: a wait on a child this agent may be tracing would
/// otherwise swallow the ptrace stops another thread waits for.
pub fn wait_exit(pid: i32, pidfd: &OwnedFd) -> io::Result<(Option<i32>, Option<i32>)> {
    loop {
        let mut p = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, -1) };
        if r > 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if r < 0 && e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
    let mut status = 0;
    for _ in 0..1000 {
        // SAFETY: waitpid with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Ok(if libc::WIFEXITED(status) {
                (Some(libc::WEXITSTATUS(status)), None)
            } else {
                (None, Some(libc::WTERMSIG(status)))
            });
        }
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Err(io::Error::other("exited but could not be reaped"))
}

/// Page-aligned ranges of `[from, to)` in `f` that hold data (SEEK_DATA /
/// SEEK_HOLE), so holes are never sent.
pub fn data_ranges(f: &std::fs::File, from: u64, to: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut pos = from;
    while pos < to {
        let Ok(Some(a)) = seek(f, pos, libc::SEEK_DATA) else {
            break;
        };
        if a >= to {
            break;
        }
        let b = seek(f, a, libc::SEEK_HOLE)
            .ok()
            .flatten()
            .unwrap_or(to)
            .min(to);
        let a = a & !(migrate_proto::PAGE_SIZE - 1);
        out.push((a, b));
        pos = b.max(a + migrate_proto::PAGE_SIZE);
    }
    out
}

/// Frees `[offset, offset + len)` of a file, keeping its size.
pub fn punch_hole(file: &impl AsRawFd, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: plain syscall on an open descriptor with integer arguments.
    check(libc::c_long::from(unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            len as libc::off_t,
        )
    }))
    .map(|_| ())
}

/// `memfd_create(name, MFD_CLOEXEC)` in this process.
pub fn memfd(name: &str) -> io::Result<std::fs::File> {
    let name = c_path(name)?;
    // SAFETY: `name` is a NUL-terminated string that outlives the call.
    let fd = check(libc::c_long::from(unsafe {
        libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC)
    }))?;
    // SAFETY: the syscall returned a new descriptor that nobody else owns.
    Ok(unsafe { std::fs::File::from_raw_fd(fd as RawFd) })
}

/// A new eventfd (counter 0, non-blocking, close-on-exec): a wake-up
/// another thread can poll for.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: no pointers; returns a new descriptor or -1.
    let fd = check(libc::c_long::from(unsafe {
        libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK)
    }))?;
    // SAFETY: the syscall returned a new descriptor that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Adds 1 to eventfd `fd`'s counter: it polls readable until read.
pub fn eventfd_signal(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: no pointers; `fd` is an open descriptor.
    check(libc::c_long::from(unsafe {
        libc::eventfd_write(fd.as_raw_fd(), 1)
    }))
    .map(|_| ())
}

/// Makes the calling thread, and it alone, act on files as another user:
/// supplementary groups `groups`, filesystem gid `gid` and uid `uid`, by
/// raw system calls (glibc's wrappers would change every thread of the
/// agent). With a filesystem uid other than 0 the kernel also drops the
/// thread's capabilities that override file permissions, so its lookups,
/// opens and creations are checked as that user's.
pub fn become_fs_user(uid: u32, gid: u32, groups: &[u32]) -> io::Result<()> {
    // SAFETY: setgroups reads `groups.len()` gids from a valid slice.
    check(unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) })?;
    // SAFETY: integer arguments; these calls report the previous id and
    // cannot fail in a way they report, so the ids are read back below
    // (an invalid id, -1, changes nothing and returns the current one).
    let (fsuid, fsgid) = unsafe {
        libc::syscall(libc::SYS_setfsgid, gid);
        libc::syscall(libc::SYS_setfsuid, uid);
        (
            libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32,
            libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32,
        )
    };
    if (fsuid, fsgid) != (uid, gid) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("filesystem ids {fsuid}/{fsgid}, not {uid}/{gid}"),
        ));
    }
    Ok(())
}

/// Opens `path` as an `O_PATH` descriptor with no symbolic link followed
/// anywhere on the way (`openat2`, `RESOLVE_NO_SYMLINKS`): `ELOOP` when
/// there is one.
pub fn open_path_no_symlinks(path: &str) -> io::Result<OwnedFd> {
    let c = c_path(path)?;
    // SAFETY: open_how is plain data; zeroed is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_NO_SYMLINKS;
    // SAFETY: openat2 with a valid NUL-terminated path and a valid
    // open_how of the size passed.
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    })?;
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Whether the calling thread, with its filesystem ids, may access `path`
/// as `mode` (`R_OK`, `W_OK`, `X_OK` bits): `faccessat2` with
/// `AT_EACCESS`, by raw system call (glibc may answer from `stat` and the
/// effective uid instead).
pub fn may_access(path: &str, mode: u32) -> io::Result<()> {
    let c = c_path(path)?;
    // SAFETY: faccessat2 with a valid NUL-terminated path.
    check(unsafe {
        libc::syscall(
            libc::SYS_faccessat2,
            libc::AT_FDCWD,
            c.as_ptr(),
            mode,
            libc::AT_EACCESS,
        )
    })
    .map(|_| ())
}
