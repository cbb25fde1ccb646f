//! Typed remote calls of the descriptors' rebuilds: the system calls a
//! kind's `restore` makes inside the process, each with its arguments
//! named and typed (descriptors as `i32`, paths and names as `&str`,
//! structures as bytes copied to the process's scratch memory here) and
//! its own step text for errors, instead of a number and six words packed
//! by the caller. They are [`RemoteCalls`], which every [`Remote`] has, on
//! its two primitives: [`Remote::sys`], and [`Remote::try_sys`] for the
//! calls whose own failure is an answer (`try_*`).

use std::io;

use std::os::fd::OwnedFd;

use super::{sys_err, FdError, Remote};
use crate::host::sys;

/// `sizeof(struct sockaddr_storage)`: room for any socket address.
const SOCKADDR_ROOM: usize = std::mem::size_of::<libc::sockaddr_storage>();

/// The system calls the descriptors' rebuilds make inside the process.
/// Descriptors are the process's; the calls that make one return it.
pub trait RemoteCalls: Remote {
    /// `openat(AT_FDCWD, path, flags, mode)` in the process; `what` names
    /// the step in errors.
    fn openat(&mut self, what: String, path: &str, flags: i32, mode: u32) -> Result<i32, FdError> {
        let p = self.put_str(path)?;
        self.sys(
            what,
            libc::SYS_openat,
            [
                libc::AT_FDCWD as u64,
                p,
                flags as u64,
                u64::from(mode),
                0,
                0,
            ],
        )
        .map(|fd| fd as i32)
    }

    /// `openat(AT_FDCWD, path, flags)`: opens `path` in the process.
    fn open(&mut self, path: &str, flags: i32) -> Result<i32, FdError> {
        self.openat(format!("opening {path}"), path, flags, 0)
    }

    /// `O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC`: a new file at `path`, made
    /// by the process.
    fn create_new(&mut self, path: &str, mode: u32) -> Result<i32, FdError> {
        let flags = libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_CLOEXEC;
        self.openat(format!("creating {path}"), path, flags, mode)
    }

    /// `O_TMPFILE | O_RDWR | O_CLOEXEC`: a new unlinked file in directory
    /// `dir`.
    fn open_tmpfile(&mut self, dir: &str, mode: u32) -> Result<i32, FdError> {
        let flags = libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC;
        self.openat(format!("O_TMPFILE in {dir}"), dir, flags, mode)
    }

    /// `close(fd)`: closes descriptor `fd`.
    fn close(&mut self, fd: i32) -> Result<(), FdError> {
        self.sys("close", libc::SYS_close, [fd as u64, 0, 0, 0, 0, 0])
            .map(|_| ())
    }

    /// `close_range(first, last, 0)`: closes every descriptor from `first`
    /// to `last`.
    fn close_range(&mut self, first: u32, last: u32) -> Result<(), FdError> {
        self.sys(
            "close_range",
            libc::SYS_close_range,
            [u64::from(first), u64::from(last), 0, 0, 0, 0],
        )
        .map(|_| ())
    }

    /// `dup3(old, new, O_CLOEXEC if cloexec)`: makes `new` another number
    /// for `old`, which stays.
    fn dup3(&mut self, old: i32, new: i32, cloexec: bool) -> Result<(), FdError> {
        let fl = if cloexec { libc::O_CLOEXEC as u64 } else { 0 };
        self.sys(
            format!("dup3 {old} to fd {new}"),
            libc::SYS_dup3,
            [old as u64, new as u64, fl, 0, 0, 0],
        )
        .map(|_| ())
    }

    /// Moves the freshly made descriptor `got` to number `want`, with
    /// `FD_CLOEXEC` as in the fdinfo `flags`.
    fn move_fd(&mut self, got: i32, want: i32, flags: u32) -> Result<(), FdError> {
        if got != want {
            self.dup3(got, want, flags & libc::O_CLOEXEC as u32 != 0)?;
            self.close(got)?;
        }
        Ok(())
    }

    /// Makes `want` another number for `src`, which stays, with
    /// `FD_CLOEXEC` as in the fdinfo `flags`.
    fn dup_to(&mut self, src: i32, want: i32, flags: u32) -> Result<(), FdError> {
        self.dup3(src, want, flags & libc::O_CLOEXEC as u32 != 0)
    }

    /// `lseek(fd, pos, SEEK_SET)`, if `pos` is not 0.
    fn seek(&mut self, fd: i32, pos: u64) -> Result<(), FdError> {
        if pos != 0 {
            self.sys(
                format!("lseek fd {fd}"),
                libc::SYS_lseek,
                [fd as u64, pos, libc::SEEK_SET as u64, 0, 0, 0],
            )?;
        }
        Ok(())
    }

    /// `fcntl(fd, F_DUPFD, min)`: another number for `fd`, the lowest free
    /// at or above `min`.
    fn fcntl_dupfd(&mut self, fd: i32, min: i32) -> Result<i32, FdError> {
        self.sys(
            "moving a descriptor",
            libc::SYS_fcntl,
            [fd as u64, libc::F_DUPFD as u64, min as u64, 0, 0, 0],
        )
        .map(|fd| fd as i32)
    }

    /// `fcntl(fd, cmd, arg)` for a command that sets something and
    /// answers 0; `name` names `cmd` in errors.
    fn fcntl_set(&mut self, fd: i32, cmd: i32, name: &str, arg: u64) -> Result<(), FdError> {
        self.sys(
            format!("{name} fd {fd}"),
            libc::SYS_fcntl,
            [fd as u64, cmd as u64, arg, 0, 0, 0],
        )
        .map(|_| ())
    }

    /// `fcntl(fd, F_SETFL, status)`: sets descriptor `fd`'s status flags
    /// (`O_NONBLOCK`, `O_APPEND`).
    fn fcntl_setfl(&mut self, fd: i32, status: i32) -> Result<(), FdError> {
        self.fcntl_set(fd, libc::F_SETFL, "F_SETFL", status as u64)
    }

    /// `fcntl(fd, F_SETFD, FD_CLOEXEC if cloexec)`: sets descriptor
    /// `fd`'s close-on-exec flag.
    fn fcntl_setfd(&mut self, fd: i32, cloexec: bool) -> Result<(), FdError> {
        let flag = if cloexec { libc::FD_CLOEXEC } else { 0 };
        self.fcntl_set(fd, libc::F_SETFD, "F_SETFD", flag as u64)
    }

    /// `fcntl(fd, F_SETPIPE_SZ, size)`: sizes the pipe of `fd`.
    fn fcntl_setpipe_sz(&mut self, fd: i32, size: u32) -> Result<(), FdError> {
        self.fcntl_set(fd, libc::F_SETPIPE_SZ, "F_SETPIPE_SZ", u64::from(size))
    }

    /// `fcntl(fd, F_ADD_SEALS, seals)`: seals the memfd of `fd`.
    fn fcntl_add_seals(&mut self, fd: i32, seals: u32) -> Result<(), FdError> {
        self.fcntl_set(fd, libc::F_ADD_SEALS, "F_ADD_SEALS", u64::from(seals))
    }

    /// `ftruncate(fd, size)`: sizes the file of `fd`.
    fn ftruncate(&mut self, fd: i32, size: u64) -> Result<(), FdError> {
        self.sys(
            format!("sizing fd {fd}"),
            libc::SYS_ftruncate,
            [fd as u64, size, 0, 0, 0, 0],
        )
        .map(|_| ())
    }

    /// Moves descriptor `fd` to the lowest free number at or above `high`.
    fn above(&mut self, fd: i32, high: i32) -> Result<i32, FdError> {
        let moved = self.fcntl_dupfd(fd, high)?;
        self.close(fd)?;
        Ok(moved)
    }

    /// Moves both descriptors of `pair` (first, then second) above
    /// `high`, clear of every number still to restore.
    fn pair_above(&mut self, pair: [i32; 2], high: i32) -> Result<[i32; 2], FdError> {
        Ok([self.above(pair[0], high)?, self.above(pair[1], high)?])
    }

    /// `pipe2(fds, 0)`: a new pipe, (read, write).
    fn pipe2(&mut self) -> Result<[i32; 2], FdError> {
        let p = self.put_bytes(&[0u8; 8])?;
        self.sys("pipe2", libc::SYS_pipe2, [p, 0, 0, 0, 0, 0])?;
        read_pair(self)
    }

    /// Puts a copy of the agent's descriptor `fd` into the process
    /// (`SCM_RIGHTS` over a socketpair made there for it); returns its
    /// number there, close-on-exec.
    fn pass_in(&mut self, fd: &OwnedFd) -> Result<i32, FdError> {
        let [a, b] = self.socketpair(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)?;
        let ours = self.take(b, "a socket to pass a descriptor in")?;
        sys::send_fd(&ours, fd).map_err(sys_err("sending a descriptor into the process"))?;
        drop(ours);
        let got = self.recv_fd(a)?;
        self.close(a)?;
        self.close(b)?;
        Ok(got)
    }

    /// `recvmsg(sock, ..., MSG_CMSG_CLOEXEC)` of one byte and one
    /// descriptor (`SCM_RIGHTS`); returns the descriptor.
    fn recv_fd(&mut self, sock: i32) -> Result<i32, FdError> {
        // In scratch: msghdr at 0, its iovec at 64, the byte at 80, the
        // control buffer (CMSG_SPACE of one int: 24 bytes) at 96.
        let base = self.put_bytes(&[])?;
        let mut b = [0u8; 120];
        let mut put = |at: usize, v: u64| b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        put(16, base + 64); // msg_iov
        put(24, 1); // msg_iovlen
        put(32, base + 96); // msg_control
        put(40, 24); // msg_controllen
        put(64, base + 80); // iov_base
        put(72, 1); // iov_len
        let p = self.put_bytes(&b)?;
        self.sys(
            format!("recvmsg of a descriptor on fd {sock}"),
            libc::SYS_recvmsg,
            [sock as u64, p, libc::MSG_CMSG_CLOEXEC as u64, 0, 0, 0],
        )?;
        self.read_back(&mut b)?;
        let word = |at: usize| i32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let len = u64::from_le_bytes(b[96..104].try_into().expect("8 bytes"));
        if len < 20 || word(104) != libc::SOL_SOCKET || word(108) != libc::SCM_RIGHTS {
            return Err(FdError::Incompatible(format!(
                "no descriptor arrived on fd {sock} in the process"
            )));
        }
        Ok(word(112))
    }

    /// `socketpair(domain, ty, proto, fds)`: a new connected pair.
    fn socketpair(&mut self, domain: i32, ty: i32, proto: i32) -> Result<[i32; 2], FdError> {
        let p = self.put_bytes(&[0u8; 8])?;
        self.sys(
            "socketpair",
            libc::SYS_socketpair,
            [domain as u64, ty as u64, proto as u64, p, 0, 0],
        )?;
        read_pair(self)
    }

    /// `socket(domain, ty, proto)`: a new socket.
    fn socket(&mut self, domain: i32, ty: i32, proto: i32) -> Result<i32, FdError> {
        self.sys(
            format!("socket({domain}, {ty:#x}, {proto})"),
            libc::SYS_socket,
            [domain as u64, ty as u64, proto as u64, 0, 0, 0],
        )
        .map(|fd| fd as i32)
    }

    /// `setsockopt(fd, level, name, value)`: sets a socket option.
    fn setsockopt(&mut self, fd: i32, level: i32, name: i32, value: &[u8]) -> Result<(), FdError> {
        let p = self.put_bytes(value)?;
        self.sys(
            format!("setsockopt({level}, {name}) on fd {fd}"),
            libc::SYS_setsockopt,
            [
                fd as u64,
                level as u64,
                name as u64,
                p,
                value.len() as u64,
                0,
            ],
        )
        .map(|_| ())
    }

    /// `bind(fd, addr)`: binds socket `fd` to `addr` (a raw `sockaddr`).
    fn bind(&mut self, fd: i32, addr: &[u8]) -> Result<(), FdError> {
        let p = self.put_bytes(addr)?;
        self.sys(
            format!("bind fd {fd} to {}", addr_text(addr)),
            libc::SYS_bind,
            [fd as u64, p, addr.len() as u64, 0, 0, 0],
        )
        .map(|_| ())
    }

    /// `listen(fd, backlog)`: makes socket `fd` listen.
    fn listen(&mut self, fd: i32, backlog: i32) -> Result<(), FdError> {
        self.sys(
            format!("listen fd {fd}"),
            libc::SYS_listen,
            [fd as u64, backlog as u64, 0, 0, 0, 0],
        )
        .map(|_| ())
    }

    /// `getsockname(fd)`: the address socket `fd` is bound to (a raw
    /// `sockaddr`).
    fn getsockname(&mut self, fd: i32) -> Result<Vec<u8>, FdError> {
        // Its length at the start, the address from 16 bytes on.
        let mut b = (SOCKADDR_ROOM as u32).to_ne_bytes().to_vec();
        b.resize(16 + SOCKADDR_ROOM, 0);
        let len_at = self.put_bytes(&b)?;
        self.sys(
            format!("getsockname fd {fd}"),
            libc::SYS_getsockname,
            [fd as u64, len_at + 16, len_at, 0, 0, 0],
        )?;
        self.read_back(&mut b)?;
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        Ok(b[16..16 + len.min(SOCKADDR_ROOM)].to_vec())
    }

    /// `connect(fd, addr)`: connects socket `fd` to `addr` (a raw
    /// `sockaddr`).
    fn connect(&mut self, fd: i32, addr: &[u8]) -> Result<(), FdError> {
        let p = self.put_bytes(addr)?;
        self.sys(
            format!("connect fd {fd} to {}", addr_text(addr)),
            libc::SYS_connect,
            [fd as u64, p, addr.len() as u64, 0, 0, 0],
        )
        .map(|_| ())
    }

    /// `connect(fd, addr)`, whose own failure (refused, timed out) is an
    /// answer, `Ok(Err(_))`, not an error.
    fn try_connect(&mut self, fd: i32, addr: &[u8]) -> Result<Result<(), io::Error>, FdError> {
        let p = self.put_bytes(addr)?;
        Ok(self
            .try_sys(
                libc::SYS_connect,
                [fd as u64, p, addr.len() as u64, 0, 0, 0],
            )?
            .map(|_| ()))
    }

    /// `accept(fd, NULL, NULL)`: the next connection waiting on listener
    /// `fd`.
    fn accept(&mut self, fd: i32) -> Result<i32, FdError> {
        self.sys(
            format!("accept on fd {fd}"),
            libc::SYS_accept,
            [fd as u64, 0, 0, 0, 0, 0],
        )
        .map(|fd| fd as i32)
    }

    /// `epoll_create1(flags)`: a new, empty epoll set.
    fn epoll_create1(&mut self, flags: i32) -> Result<i32, FdError> {
        self.sys(
            "epoll_create1",
            libc::SYS_epoll_create1,
            [flags as u64, 0, 0, 0, 0, 0],
        )
        .map(|fd| fd as i32)
    }

    /// `epoll_ctl(epfd, EPOLL_CTL_ADD, fd, {events, data})`: registers
    /// `fd` in epoll set `epfd`.
    fn epoll_ctl_add(&mut self, epfd: i32, fd: i32, events: u32, data: u64) -> Result<(), FdError> {
        let mut ev = Vec::with_capacity(12);
        ev.extend_from_slice(&events.to_le_bytes());
        ev.extend_from_slice(&data.to_le_bytes());
        let p = self.put_bytes(&ev)?;
        self.sys(
            format!("epoll_ctl(fd {epfd}, add fd {fd})"),
            libc::SYS_epoll_ctl,
            [epfd as u64, libc::EPOLL_CTL_ADD as u64, fd as u64, p, 0, 0],
        )
        .map(|_| ())
    }

    /// `eventfd2(initval, flags)`: a new eventfd.
    fn eventfd2(&mut self, initval: u32, flags: i32) -> Result<i32, FdError> {
        self.sys(
            "eventfd2",
            libc::SYS_eventfd2,
            [u64::from(initval), flags as u64, 0, 0, 0, 0],
        )
        .map(|fd| fd as i32)
    }

    /// `timerfd_create(clock, flags)`: a new, disarmed timerfd.
    fn timerfd_create(&mut self, clock: i32, flags: i32) -> Result<i32, FdError> {
        self.sys(
            "timerfd_create",
            libc::SYS_timerfd_create,
            [clock as u64, flags as u64, 0, 0, 0, 0],
        )
        .map(|fd| fd as i32)
    }

    /// `timerfd_settime(fd, 0, {interval, value})`: arms timerfd `fd`
    /// (relative times, in nanoseconds).
    fn timerfd_settime(&mut self, fd: i32, interval_ns: u64, value_ns: u64) -> Result<(), FdError> {
        let p = self.put_bytes(&itimerspec(interval_ns, value_ns))?;
        self.sys(
            format!("timerfd_settime fd {fd}"),
            libc::SYS_timerfd_settime,
            [fd as u64, 0, p, 0, 0, 0],
        )
        .map(|_| ())
    }

    /// `ioctl(fd, TFD_IOC_SET_TICKS, &ticks)`: sets the expirations of
    /// timerfd `fd` not read yet.
    fn timerfd_set_ticks(&mut self, fd: i32, ticks: u64) -> Result<(), FdError> {
        let p = self.put_bytes(&ticks.to_le_bytes())?;
        self.sys(
            format!("TFD_IOC_SET_TICKS fd {fd}"),
            libc::SYS_ioctl,
            [
                fd as u64,
                u64::from(linux_raw_sys::ioctl::TFD_IOC_SET_TICKS),
                p,
                0,
                0,
                0,
            ],
        )
        .map(|_| ())
    }

    /// `signalfd4(-1, &mask, 8, flags)`: a new signalfd reading the
    /// signals of `mask`.
    fn signalfd4(&mut self, mask: u64, flags: i32) -> Result<i32, FdError> {
        let p = self.put_bytes(&mask.to_le_bytes())?;
        self.sys(
            "signalfd4",
            libc::SYS_signalfd4,
            [u64::MAX, p, 8, flags as u64, 0, 0],
        )
        .map(|fd| fd as i32)
    }

    /// `inotify_init1(flags)`: a new inotify instance, no watches.
    fn inotify_init1(&mut self, flags: i32) -> Result<i32, FdError> {
        self.sys(
            "inotify_init1",
            libc::SYS_inotify_init1,
            [flags as u64, 0, 0, 0, 0, 0],
        )
        .map(|fd| fd as i32)
    }

    /// `inotify_add_watch(fd, path, mask)`: a watch on `path`; its number.
    fn inotify_add_watch(&mut self, fd: i32, path: &str, mask: u32) -> Result<i32, FdError> {
        let p = self.put_str(path)?;
        self.sys(
            format!("inotify watch on {path}"),
            libc::SYS_inotify_add_watch,
            [fd as u64, p, u64::from(mask), 0, 0, 0],
        )
        .map(|wd| wd as i32)
    }

    /// `inotify_rm_watch(fd, wd)`: removes watch `wd`.
    fn inotify_rm_watch(&mut self, fd: i32, wd: i32) -> Result<(), FdError> {
        self.sys(
            format!("inotify_rm_watch({wd}) on fd {fd}"),
            libc::SYS_inotify_rm_watch,
            [fd as u64, wd as u64, 0, 0, 0, 0],
        )
        .map(|_| ())
    }

    /// `memfd_create(name, flags)`: a new, empty memfd.
    fn memfd_create(&mut self, name: &str, flags: u32) -> Result<i32, FdError> {
        let p = self.put_str(name)?;
        self.sys(
            format!("memfd_create({name})"),
            libc::SYS_memfd_create,
            [p, u64::from(flags), 0, 0, 0, 0],
        )
        .map(|fd| fd as i32)
    }
}

impl<R: Remote> RemoteCalls for R {}

/// The two descriptors `pipe2` or `socketpair` wrote at the start of the
/// scratch memory.
fn read_pair(r: &mut (impl Remote + ?Sized)) -> Result<[i32; 2], FdError> {
    let mut b = [0u8; 8];
    r.read_back(&mut b)?;
    Ok([
        i32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
    ])
}

/// `struct itimerspec { it_interval, it_value }` of nanoseconds, as the
/// process reads it.
pub(crate) fn itimerspec(interval_ns: u64, value_ns: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(32);
    for w in [
        interval_ns / 1_000_000_000,
        interval_ns % 1_000_000_000,
        value_ns / 1_000_000_000,
        value_ns % 1_000_000_000,
    ] {
        b.extend_from_slice(&w.to_le_bytes());
    }
    b
}

/// A raw `sockaddr` as text, for errors: `1.2.3.4:80`, `[::1]:80`, a
/// Unix path or `@abstract` name.
fn addr_text(addr: &[u8]) -> String {
    let family = match addr {
        [a, b, ..] => i32::from(u16::from_ne_bytes([*a, *b])),
        _ => return "an empty address".into(),
    };
    let port = |a: &[u8]| u16::from_be_bytes([a[2], a[3]]);
    match family {
        libc::AF_INET if addr.len() >= 8 => {
            let ip = std::net::Ipv4Addr::new(addr[4], addr[5], addr[6], addr[7]);
            format!("{ip}:{}", port(addr))
        }
        libc::AF_INET6 if addr.len() >= 24 => {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&addr[8..24]);
            format!("[{}]:{}", std::net::Ipv6Addr::from(ip), port(addr))
        }
        libc::AF_UNIX => match &addr[2..] {
            [0, name @ ..] => format!("@{}", String::from_utf8_lossy(name)),
            path => {
                let path = path.split(|b| *b == 0).next().unwrap_or(path);
                String::from_utf8_lossy(path).into_owned()
            }
        },
        f => format!("an address of family {f}"),
    }
}

#[cfg(test)]
mod tests {
    use super::addr_text;

    #[test]
    fn addresses_read_as_text() {
        let mut v4 = (libc::AF_INET as u16).to_ne_bytes().to_vec();
        v4.extend_from_slice(&8080u16.to_be_bytes());
        v4.extend_from_slice(&[127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(addr_text(&v4), "127.0.0.1:8080");
        let mut un = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        un.extend_from_slice(b"/tmp/s\0");
        assert_eq!(addr_text(&un), "/tmp/s");
        let mut abs = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        abs.extend_from_slice(b"\0name");
        assert_eq!(addr_text(&abs), "@name");
        assert_eq!(addr_text(&[]), "an empty address");
    }
}
