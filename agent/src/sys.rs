//! Thin wrappers around the syscalls the agent needs beyond std: the only
//! unsafe code of the agent besides `uffd`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;

/// `s` as a C string (an interior NUL is invalid input).
fn c_path(s: &str) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
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
/// `at[i]` (each `at` above 2 and below 10).
pub fn pass_fds<const N: usize>(cmd: &mut std::process::Command, fds: [RawFd; N], at: [RawFd; N]) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and calls only fcntl
    // and dup2, which are async-signal-safe; it touches no memory but the
    // copied arrays.
    unsafe {
        cmd.pre_exec(move || {
            // Out of the way first, so that dup2 never meets itself.
            let mut high = [0i32; N];
            for (h, fd) in high.iter_mut().zip(fds) {
                *h = libc::fcntl(fd, libc::F_DUPFD, 10);
                if *h < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            for (h, target) in high.into_iter().zip(at) {
                if libc::dup2(h, target) < 0 {
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

/// The stub: fork once so that init parents the restored process, start a
/// new session, print the pid and sleep until the agent seizes us. Runs in
/// a freshly exec'd, single-threaded process.
pub fn run_stub() -> ! {
    let want: i32 = std::env::args()
        .nth(2)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: called first thing in `main` of a fresh single-threaded
    // process, so a fork-like clone3 cannot leave another thread's locks
    // held; the arguments point at live locals.
    let pid = unsafe { fork_with_pid(want) };
    if pid != 0 {
        // SAFETY: _exit is always safe to call; skips atexit handlers.
        unsafe { libc::_exit(if pid > 0 { 0 } else { 1 }) };
    }
    // SAFETY: plain syscalls with integer or valid string arguments.
    unsafe {
        libc::setsid();
        let me = libc::getpid();
        let line = format!("{me}\n");
        libc::write(1, line.as_ptr().cast(), line.len());
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        libc::dup2(null, 1);
        loop {
            libc::pause();
        }
    }
}

/// fork(), as pid `want` when that pid is free in our pid namespace
/// (clone3 with `set_tid`), else as any pid.
///
/// # Safety
///
/// As fork(): the caller must be single-threaded.
unsafe fn fork_with_pid(want: i32) -> i32 {
    if want > 1 {
        let tid = [want];
        // struct clone_args: flags, pidfd, child_tid, parent_tid,
        // exit_signal, stack, stack_size, tls, set_tid, set_tid_size, cgroup.
        let args: [u64; 11] = [
            0,
            0,
            0,
            0,
            libc::SIGCHLD as u64,
            0,
            0,
            0,
            tid.as_ptr() as u64,
            1,
            0,
        ];
        // SAFETY: `args` and `tid` live across the call; no CLONE_VM, so the
        // child continues on a copy of this stack like after fork().
        let r = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                args.as_ptr(),
                std::mem::size_of_val(&args),
            )
        };
        if r >= 0 {
            return r as i32;
        }
    }
    // SAFETY: the caller guarantees a single-threaded process.
    unsafe { libc::fork() }
}

/// `kcmp(pid, pid, KCMP_FILE, a, b)`: whether two descriptors of `pid` are
/// the same open file.
pub fn same_open_file(pid: i32, a: i32, b: i32) -> io::Result<bool> {
    const KCMP_FILE: libc::c_long = 0;
    // SAFETY: kcmp with integer arguments only.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid, pid, KCMP_FILE, a, b) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r == 0)
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

/// `PAGEMAP_SCAN` page categories (`include/uapi/linux/fs.h`).
pub mod page_is {
    /// Not write-protected since the last scan that protected it.
    pub const WRITTEN: u64 = 1 << 1;
    /// Present in memory.
    pub const PRESENT: u64 = 1 << 3;
    /// Backed by a file.
    pub const FILE: u64 = 1 << 2;
    /// Swapped out.
    pub const SWAPPED: u64 = 1 << 4;
    /// Mapped to the shared zero page.
    pub const PFNZERO: u64 = 1 << 5;
}

/// `PM_SCAN_WP_MATCHING`: write-protect the pages reported.
pub const PM_SCAN_WP_MATCHING: u64 = 1;

#[repr(C)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

const PAGEMAP_SCAN: u64 =
    (3 << 30) | ((std::mem::size_of::<PmScanArg>() as u64) << 16) | ((b'f' as u64) << 8) | 16;
const _: () = assert!(PAGEMAP_SCAN == 0xc060_6610);
const _: () = assert!(std::mem::size_of::<PageRegion>() == 24);

/// Which pages a [`pagemap_scan`] reports.
#[derive(Debug, Clone, Copy, Default)]
pub struct PageQuery {
    /// `PM_SCAN_*` flags, e.g. [`PM_SCAN_WP_MATCHING`].
    pub flags: u64,
    /// Categories every reported page has.
    pub all: u64,
    /// Categories of which a reported page has at least one (0: none
    /// required).
    pub any: u64,
    /// Categories reported with each range.
    pub report: u64,
}

/// `ioctl(pagemap, PAGEMAP_SCAN)` over `[start, end)`: calls `out` with
/// each range of pages matching `q` and its categories. `PAGEMAP_SCAN`
/// walks only populated page tables, so untouched reservations cost
/// nothing.
pub fn pagemap_scan(
    pagemap: &impl AsRawFd,
    start: u64,
    end: u64,
    q: PageQuery,
    out: &mut dyn FnMut(u64, u64, u64),
) -> io::Result<()> {
    let mut vec = vec![PageRegion::default(); 1024];
    let mut at = start;
    while at < end {
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            flags: q.flags,
            start: at,
            end,
            walk_end: 0,
            vec: vec.as_mut_ptr() as u64,
            vec_len: vec.len() as u64,
            max_pages: 0,
            category_inverted: 0,
            category_mask: q.all,
            category_anyof_mask: q.any,
            return_mask: q.report | q.all | q.any,
        };
        // SAFETY: `arg` is the kernel's `struct pm_scan_arg` (size checked
        // above and passed in `size`); `vec` points at `vec_len` writable
        // `struct page_region`s that outlive the call.
        let n = check(libc::c_long::from(unsafe {
            libc::ioctl(
                pagemap.as_raw_fd(),
                PAGEMAP_SCAN,
                &mut arg as *mut PmScanArg,
            )
        }))?;
        for r in &vec[..n as usize] {
            out(r.start, r.end, r.categories);
        }
        if arg.walk_end <= at {
            break;
        }
        at = arg.walk_end;
    }
    Ok(())
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

/// A CPU affinity as 64-bit words, CPU `n` in bit `n % 64` of word `n / 64`.
pub type AffinityWords = [u64; 16];

fn set_to_words(set: &libc::cpu_set_t) -> AffinityWords {
    let mut w = [0u64; 16];
    for cpu in 0..(libc::CPU_SETSIZE as usize).min(16 * 64) {
        // SAFETY: `cpu` is below CPU_SETSIZE: the read is inside `set`.
        if unsafe { libc::CPU_ISSET(cpu, set) } {
            w[cpu / 64] |= 1 << (cpu % 64);
        }
    }
    w
}

/// Sets a task's CPU affinity given as [`AffinityWords`].
pub fn set_affinity_words(tid: i32, words: &AffinityWords) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data, for which all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for cpu in 0..(libc::CPU_SETSIZE as usize).min(16 * 64) {
        if words[cpu / 64] & (1 << (cpu % 64)) != 0 {
            // SAFETY: `cpu` is below CPU_SETSIZE: the write is inside `set`.
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
    }
    set_affinity(tid, &set)
}

/// A task's CPU affinity (`sched_getaffinity`).
fn affinity(tid: i32) -> io::Result<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is plain data, for which all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is writable for the size passed.
    let ret =
        unsafe { libc::sched_getaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    check(libc::c_long::from(ret))?;
    Ok(set)
}

/// Sets a task's CPU affinity (`sched_setaffinity`).
fn set_affinity(tid: i32, set: &libc::cpu_set_t) -> io::Result<()> {
    // SAFETY: `set` is readable for the size passed.
    let ret = unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), set) };
    check(libc::c_long::from(ret)).map(|_| ())
}

/// The CPU the calling thread runs on (`sched_getcpu`).
fn current_cpu() -> io::Result<usize> {
    // SAFETY: no arguments; returns a CPU number or -1.
    let cpu = unsafe { libc::sched_getcpu() };
    check(libc::c_long::from(cpu)).map(|c| c as usize)
}

/// Tasks held on one CPU with the thread that drives them through
/// ptrace, each stop and resume a wake-up on the same CPU instead of one
/// across CPUs (which costs tens of µs on a VM, milliseconds over the
/// system calls of a dump); their own affinity is put back on drop.
pub struct CpuPin {
    saved: Vec<(i32, libc::cpu_set_t)>,
}

impl CpuPin {
    /// Pins the calling thread and `tids` to the CPU it runs on, those
    /// it can (a task whose affinity excludes that CPU is left alone).
    pub fn near_me(tids: &[i32]) -> CpuPin {
        Self::near_me_noting(tids, |_| Ok(()))
    }

    /// As [`CpuPin::near_me`], first handing `note` each task's affinity
    /// as it is (as [`AffinityWords`]) before any is changed; if `note`
    /// fails, nothing is pinned.
    pub fn near_me_noting(
        tids: &[i32],
        note: impl FnOnce(&[(i32, AffinityWords)]) -> io::Result<()>,
    ) -> CpuPin {
        // SAFETY: gettid has no arguments and cannot fail.
        let me = unsafe { libc::gettid() };
        let tids: Vec<i32> = std::iter::once(me).chain(tids.iter().copied()).collect();
        let mut saved = Vec::new();
        let Ok(cpu) = current_cpu() else {
            return CpuPin { saved };
        };
        if cpu >= libc::CPU_SETSIZE as usize {
            return CpuPin { saved };
        }
        // SAFETY: all zeroes is the empty set; `cpu` is below CPU_SETSIZE,
        // so CPU_SET writes inside it.
        let one = unsafe {
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut one);
            one
        };
        let mut plan = Vec::new();
        for tid in tids {
            let Ok(old) = affinity(tid) else { continue };
            // SAFETY: `cpu` is below CPU_SETSIZE: the read is inside `old`.
            if unsafe { libc::CPU_ISSET(cpu, &old) } {
                plan.push((tid, old));
            }
        }
        let words: Vec<(i32, AffinityWords)> = plan
            .iter()
            .map(|(t, set)| (*t, set_to_words(set)))
            .collect();
        if note(&words).is_err() {
            return CpuPin { saved };
        }
        for (tid, old) in plan {
            if set_affinity(tid, &one).is_ok() {
                saved.push((tid, old));
            }
        }
        CpuPin { saved }
    }

    /// Counts `tid`, a thread `parent` (pinned here) created and which
    /// inherited the pin, as pinned too: it gets `parent`'s affinity back.
    pub fn inherit(&mut self, tid: i32, parent: i32) {
        if let Some(&(_, old)) = self.saved.iter().find(|(t, _)| *t == parent) {
            self.saved.push((tid, old));
        }
    }
}

impl Drop for CpuPin {
    fn drop(&mut self) {
        for (tid, old) in &self.saved {
            let _ = set_affinity(*tid, old);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cpus(set: &libc::cpu_set_t) -> Vec<usize> {
        // SAFETY: every index is below CPU_SETSIZE.
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| unsafe { libc::CPU_ISSET(c, set) })
            .collect()
    }

    #[test]
    fn a_pin_holds_the_tasks_on_one_cpu_and_gives_their_affinity_back() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            // SAFETY: gettid has no arguments and cannot fail.
            tx.send(unsafe { libc::gettid() }).unwrap();
            let _ = stop_rx.recv();
        });
        let tid = rx.recv().unwrap();
        // SAFETY: as above.
        let me = unsafe { libc::gettid() };
        let before = (cpus(&affinity(me).unwrap()), cpus(&affinity(tid).unwrap()));
        {
            let _pin = CpuPin::near_me(&[tid]);
            let mine = cpus(&affinity(me).unwrap());
            assert_eq!(mine.len(), 1, "the calling thread is on one CPU: {mine:?}");
            assert_eq!(
                cpus(&affinity(tid).unwrap()),
                mine,
                "the other task is on the same one"
            );
        }
        let after = (cpus(&affinity(me).unwrap()), cpus(&affinity(tid).unwrap()));
        assert_eq!(after, before);
        stop_tx.send(()).unwrap();
        other.join().unwrap();
    }
}
