//! Thin wrappers around the userfaultfd ioctls and its event messages.
//!
//! The descriptor is created inside the restored process (it belongs to
//! that mm) and taken over with `pidfd_getfd`; every ioctl here then works
//! on that mm from the agent.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use linux_raw_sys::general as k;
use linux_raw_sys::ioctl as nr;

/// `UFFD_FEATURE_EVENT_FORK`.
pub const FEATURE_EVENT_FORK: u64 = k::UFFD_FEATURE_EVENT_FORK as u64;
/// `UFFD_FEATURE_EVENT_REMAP`.
pub const FEATURE_EVENT_REMAP: u64 = k::UFFD_FEATURE_EVENT_REMAP as u64;
/// `UFFD_FEATURE_EVENT_REMOVE`.
pub const FEATURE_EVENT_REMOVE: u64 = k::UFFD_FEATURE_EVENT_REMOVE as u64;
/// `UFFD_FEATURE_THREAD_ID`: faults name their thread.
pub const FEATURE_THREAD_ID: u64 = k::UFFD_FEATURE_THREAD_ID as u64;
/// `UFFD_FEATURE_EVENT_UNMAP`.
pub const FEATURE_EVENT_UNMAP: u64 = k::UFFD_FEATURE_EVENT_UNMAP as u64;
/// `UFFD_FEATURE_WP_UNPOPULATED`.
pub const FEATURE_WP_UNPOPULATED: u64 = k::UFFD_FEATURE_WP_UNPOPULATED as u64;
/// `UFFD_FEATURE_WP_ASYNC`: write faults on protected pages are resolved
/// by the kernel itself, which only clears the page's protection; the
/// written pages are then read with `PAGEMAP_SCAN`.
pub const FEATURE_WP_ASYNC: u64 = k::UFFD_FEATURE_WP_ASYNC as u64;
/// `UFFD_USER_MODE_ONLY`: a userfaultfd for user-space faults only
/// (enough for write-protect tracking, and allowed to unprivileged
/// processes).
pub const USER_MODE_ONLY: i32 = k::UFFD_USER_MODE_ONLY as i32;

// Each ioctl number encodes its argument's size: the kernel's structs.
const _: () = assert!(std::mem::size_of::<k::uffd_msg>() == 32);
const _: () = assert!(std::mem::size_of::<k::uffdio_copy>() == 40);

fn ioctl<T>(fd: &OwnedFd, req: u32, arg: &mut T) -> io::Result<()> {
    // SAFETY: every caller passes the kernel's struct for `req` (both from
    // linux-raw-sys, generated from the same headers); the kernel reads and
    // writes only that struct.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), u64::from(req), arg as *mut T) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Enables the API on a fresh userfaultfd with `features`.
pub fn api(fd: &OwnedFd, features: u64) -> io::Result<()> {
    let mut a = k::uffdio_api {
        api: u64::from(k::UFFD_API),
        features,
        ioctls: 0,
    };
    ioctl(fd, nr::UFFDIO_API, &mut a)
}

/// A userfaultfd of this process (close-on-exec, non-blocking).
pub fn open() -> io::Result<OwnedFd> {
    // SAFETY: the userfaultfd syscall with flags only; the descriptor it
    // returns is owned below.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd as i32) })
}

/// The features the kernel offers, asked of a fresh userfaultfd (which
/// is then enabled with none).
pub fn supported(fd: &OwnedFd) -> io::Result<u64> {
    let mut a = k::uffdio_api {
        api: u64::from(k::UFFD_API),
        features: 0,
        ioctls: 0,
    };
    ioctl(fd, nr::UFFDIO_API, &mut a)?;
    Ok(a.features)
}

/// Registers `[start, start+len)` in MISSING mode.
pub fn register_missing(fd: &OwnedFd, start: u64, len: u64) -> io::Result<()> {
    register(fd, start, len, k::UFFDIO_REGISTER_MODE_MISSING)
}

/// Registers `[start, start+len)` in write-protect mode (registering a
/// range again with the same descriptor is allowed).
pub fn register_wp(fd: &OwnedFd, start: u64, len: u64) -> io::Result<()> {
    register(fd, start, len, k::UFFDIO_REGISTER_MODE_WP)
}

fn register(fd: &OwnedFd, start: u64, len: u64, mode: u32) -> io::Result<()> {
    let mut r = k::uffdio_register {
        range: k::uffdio_range { start, len },
        mode: u64::from(mode),
        ioctls: 0,
    };
    ioctl(fd, nr::UFFDIO_REGISTER, &mut r)
}

/// Outcome of an install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Install {
    /// Installed (or already there: the faulting threads were woken).
    Done,
    /// The mm is changing (an event is pending): read events, then retry.
    Retry,
    /// No registered mapping there (`ENOENT`).
    Missing,
    /// The process (mm) is gone.
    Gone,
}

/// Copies `data` to `dst` in the registered mm and wakes waiters.
/// `EEXIST` counts as done, page by page.
pub fn copy(fd: &OwnedFd, dst: u64, data: &[u8]) -> io::Result<Install> {
    fill(fd, dst, data.len() as u64, |off| {
        let mut c = k::uffdio_copy {
            dst: dst + off,
            src: data[off as usize..].as_ptr() as u64,
            len: data.len() as u64 - off,
            mode: 0,
            copy: 0,
        };
        (ioctl(fd, nr::UFFDIO_COPY, &mut c), c.copy)
    })
}

/// Maps zero pages at `[start, start+len)` and wakes waiters. Pages
/// already there are left as they are (their waiters woken), as
/// [`copy`] does.
pub fn zeropage(fd: &OwnedFd, start: u64, len: u64) -> io::Result<Install> {
    fill(fd, start, len, |off| {
        let mut z = k::uffdio_zeropage {
            range: k::uffdio_range {
                start: start + off,
                len: len - off,
            },
            mode: 0,
            zeropage: 0,
        };
        (ioctl(fd, nr::UFFDIO_ZEROPAGE, &mut z), z.zeropage)
    })
}

/// Fills `[dst, dst+len)` by `attempt(off)` (one ioctl from `off` on: its
/// result and the bytes it filled, as the kernel reports them), going on
/// after a partial fill and past a page already there (its waiters woken).
fn fill(
    fd: &OwnedFd,
    dst: u64,
    len: u64,
    mut attempt: impl FnMut(u64) -> (io::Result<()>, i64),
) -> io::Result<Install> {
    let mut off = 0u64;
    while off < len {
        let (result, filled) = attempt(off);
        let Err(e) = result else {
            return Ok(Install::Done);
        };
        let filled = u64::try_from(filled.max(0)).unwrap_or(0);
        match e.raw_os_error() {
            Some(libc::EEXIST) => {
                // The page after the filled part is already there: wake
                // its waiters and go on past it.
                wake(fd, dst + off + filled, 4096)?;
                off += filled + 4096;
            }
            Some(libc::EAGAIN) | Some(libc::ENOENT) if filled > 0 => off += filled,
            Some(libc::EAGAIN) => return Ok(Install::Retry),
            Some(libc::ENOENT) => return Ok(Install::Missing),
            Some(libc::ESRCH) => return Ok(Install::Gone),
            _ => return Err(e),
        }
    }
    Ok(Install::Done)
}

/// Wakes threads waiting on `[start, start+len)`.
pub fn wake(fd: &OwnedFd, start: u64, len: u64) -> io::Result<()> {
    let mut r = k::uffdio_range { start, len };
    ioctl(fd, nr::UFFDIO_WAKE, &mut r)
}

/// One message read from a userfaultfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A thread faulted on a missing page.
    PageFault {
        /// Faulting address.
        addr: u64,
        /// Faulting thread (with [`FEATURE_THREAD_ID`]).
        tid: u32,
    },
    /// The process forked; the child's userfaultfd is `ufd` in our table.
    Fork {
        /// New descriptor number.
        ufd: i32,
    },
    /// `mremap` moved `[from, from+len)` to `to`.
    Remap {
        /// Old start.
        from: u64,
        /// New start.
        to: u64,
        /// Length.
        len: u64,
    },
    /// `madvise(MADV_DONTNEED/REMOVE)`: the range now reads as zeros.
    Remove {
        /// Start.
        start: u64,
        /// End.
        end: u64,
    },
    /// `munmap` of the range.
    Unmap {
        /// Start.
        start: u64,
        /// End.
        end: u64,
    },
    /// Unknown event (ignored).
    Other(u8),
}

/// Reads every message available now (non-blocking fd); an empty vector
/// means none.
pub fn read_events(fd: &OwnedFd, out: &mut Vec<Event>) -> io::Result<()> {
    const N: usize = 64;
    let mut buf = [0u8; 32 * N];
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) => Ok(()),
                Some(libc::EINTR) => continue,
                _ => Err(e),
            };
        }
        let n = n as usize;
        for m in buf[..n].chunks_exact(32) {
            let w = |i: usize| {
                let mut a = [0u8; 8];
                a.copy_from_slice(&m[8 + i * 8..16 + i * 8]);
                u64::from_le_bytes(a)
            };
            out.push(match u32::from(m[0]) {
                k::UFFD_EVENT_PAGEFAULT => Event::PageFault {
                    addr: w(1),
                    tid: w(2) as u32,
                },
                k::UFFD_EVENT_FORK => Event::Fork {
                    ufd: w(0) as u32 as i32,
                },
                k::UFFD_EVENT_REMAP => Event::Remap {
                    from: w(0),
                    to: w(1),
                    len: w(2),
                },
                k::UFFD_EVENT_REMOVE => Event::Remove {
                    start: w(0),
                    end: w(1),
                },
                k::UFFD_EVENT_UNMAP => Event::Unmap {
                    start: w(0),
                    end: w(1),
                },
                _ => Event::Other(m[0]),
            });
        }
        if n < buf.len() {
            return Ok(());
        }
    }
}

/// Waits until `fds` are readable or `timeout_ms` passes; returns which are.
pub fn poll_readable(fds: &[&OwnedFd], timeout_ms: i32) -> io::Result<Vec<bool>> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|f| libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `p` is a valid array of `p.len()` pollfd structs.
    let ret = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) };
    if ret < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINTR) {
            return Ok(vec![false; fds.len()]);
        }
        return Err(e);
    }
    Ok(p.iter().map(|x| x.revents & libc::POLLIN != 0).collect())
}

/// Takes ownership of a userfaultfd the kernel installed in our table (the
/// child's descriptor of a fork event).
pub fn adopt(ufd: i32) -> io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: fcntl(F_GETFD) on an integer only queries the table.
    if ufd < 0 || unsafe { libc::fcntl(ufd, libc::F_GETFD) } < 0 {
        return Err(io::Error::other(format!(
            "fork event named no descriptor ({ufd})"
        )));
    }
    // SAFETY: the kernel created `ufd` for us in the fork event and nothing
    // else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(ufd) })
}
