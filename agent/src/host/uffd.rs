//! Thin wrappers around the userfaultfd ioctls and its event messages.
//!
//! The descriptor is created inside the restored process (it belongs to
//! that mm) and taken over with `pidfd_getfd`; every ioctl here then works
//! on that mm from the agent.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// `UFFD_API`.
const UFFD_API: u64 = 0xAA;
/// `UFFD_FEATURE_EVENT_FORK`.
pub const FEATURE_EVENT_FORK: u64 = 1 << 1;
/// `UFFD_FEATURE_EVENT_REMAP`.
pub const FEATURE_EVENT_REMAP: u64 = 1 << 2;
/// `UFFD_FEATURE_EVENT_REMOVE`.
pub const FEATURE_EVENT_REMOVE: u64 = 1 << 3;
/// `UFFD_FEATURE_THREAD_ID`: faults name their thread.
pub const FEATURE_THREAD_ID: u64 = 1 << 8;
/// `UFFD_FEATURE_EVENT_UNMAP`.
pub const FEATURE_EVENT_UNMAP: u64 = 1 << 6;
/// `UFFD_FEATURE_WP_UNPOPULATED`.
pub const FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
/// `UFFD_FEATURE_WP_ASYNC`: write faults on protected pages are resolved
/// by the kernel itself, which only clears the page's protection; the
/// written pages are then read with `PAGEMAP_SCAN`.
pub const FEATURE_WP_ASYNC: u64 = 1 << 15;
/// `UFFDIO_REGISTER_MODE_MISSING`.
const REGISTER_MODE_MISSING: u64 = 1;
/// `UFFDIO_REGISTER_MODE_WP`.
const REGISTER_MODE_WP: u64 = 2;

const fn iowr(nr: u64, size: usize) -> u64 {
    (3 << 30) | ((size as u64) << 16) | (0xAA << 8) | nr
}
const fn ior(nr: u64, size: usize) -> u64 {
    (2 << 30) | ((size as u64) << 16) | (0xAA << 8) | nr
}

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}
#[repr(C)]
#[derive(Clone, Copy)]
struct UffdioRange {
    start: u64,
    len: u64,
}
#[repr(C)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}
#[repr(C)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}
#[repr(C)]
struct UffdioZeropage {
    range: UffdioRange,
    mode: u64,
    zeropage: i64,
}

const UFFDIO_API: u64 = iowr(0x3F, std::mem::size_of::<UffdioApi>());
const UFFDIO_REGISTER: u64 = iowr(0x00, std::mem::size_of::<UffdioRegister>());
const UFFDIO_WAKE: u64 = ior(0x02, std::mem::size_of::<UffdioRange>());
const UFFDIO_COPY: u64 = iowr(0x03, std::mem::size_of::<UffdioCopy>());
const UFFDIO_ZEROPAGE: u64 = iowr(0x04, std::mem::size_of::<UffdioZeropage>());

// The kernel's numbers (include/uapi/linux/userfaultfd.h).
const _: () = assert!(UFFDIO_API == 0xc018_aa3f);
const _: () = assert!(UFFDIO_REGISTER == 0xc020_aa00);
const _: () = assert!(UFFDIO_WAKE == 0x8010_aa02);
const _: () = assert!(UFFDIO_COPY == 0xc028_aa03);
const _: () = assert!(UFFDIO_ZEROPAGE == 0xc020_aa04);
const _: () = assert!(std::mem::size_of::<RawMsg>() == 32);

fn ioctl<T>(fd: &OwnedFd, req: u64, arg: &mut T) -> io::Result<()> {
    // SAFETY: every caller passes the struct whose size is encoded in `req`
    // (checked by the const assertions above); the kernel reads/writes
    // only that struct.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), req, arg as *mut T) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Enables the API on a fresh userfaultfd with `features`.
pub fn api(fd: &OwnedFd, features: u64) -> io::Result<()> {
    let mut a = UffdioApi {
        api: UFFD_API,
        features,
        ioctls: 0,
    };
    ioctl(fd, UFFDIO_API, &mut a)
}

/// Registers `[start, start+len)` in MISSING mode.
pub fn register_missing(fd: &OwnedFd, start: u64, len: u64) -> io::Result<()> {
    let mut r = UffdioRegister {
        range: UffdioRange { start, len },
        mode: REGISTER_MODE_MISSING,
        ioctls: 0,
    };
    ioctl(fd, UFFDIO_REGISTER, &mut r)
}

/// Registers `[start, start+len)` in write-protect mode (registering a
/// range again with the same descriptor is allowed).
pub fn register_wp(fd: &OwnedFd, start: u64, len: u64) -> io::Result<()> {
    let mut r = UffdioRegister {
        range: UffdioRange { start, len },
        mode: REGISTER_MODE_WP,
        ioctls: 0,
    };
    ioctl(fd, UFFDIO_REGISTER, &mut r)
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
    let mut off = 0usize;
    while off < data.len() {
        let mut c = UffdioCopy {
            dst: dst + off as u64,
            src: data[off..].as_ptr() as u64,
            len: (data.len() - off) as u64,
            mode: 0,
            copy: 0,
        };
        match ioctl(fd, UFFDIO_COPY, &mut c) {
            Ok(()) => return Ok(Install::Done),
            Err(e) => {
                let copied = usize::try_from(c.copy.max(0)).unwrap_or(0);
                match e.raw_os_error() {
                    Some(libc::EEXIST) => {
                        // The page after the copied part is already there:
                        // wake its waiters and go on past it.
                        wake(fd, dst + (off + copied) as u64, 4096)?;
                        off += copied + 4096;
                    }
                    Some(libc::EAGAIN) | Some(libc::ENOENT) if copied > 0 => {
                        off += copied;
                    }
                    Some(libc::EAGAIN) => return Ok(Install::Retry),
                    Some(libc::ENOENT) => return Ok(Install::Missing),
                    Some(libc::ESRCH) => return Ok(Install::Gone),
                    _ => return Err(e),
                }
            }
        }
    }
    Ok(Install::Done)
}

/// Maps zero pages at `[start, start+len)` and wakes waiters.
pub fn zeropage(fd: &OwnedFd, start: u64, len: u64) -> io::Result<Install> {
    let mut z = UffdioZeropage {
        range: UffdioRange { start, len },
        mode: 0,
        zeropage: 0,
    };
    match ioctl(fd, UFFDIO_ZEROPAGE, &mut z) {
        Ok(()) => Ok(Install::Done),
        Err(e) => match e.raw_os_error() {
            Some(libc::EEXIST) => wake(fd, start, len).map(|_| Install::Done),
            Some(libc::EAGAIN) => Ok(Install::Retry),
            Some(libc::ENOENT) => Ok(Install::Missing),
            Some(libc::ESRCH) => Ok(Install::Gone),
            _ => Err(e),
        },
    }
}

/// Wakes threads waiting on `[start, start+len)`.
pub fn wake(fd: &OwnedFd, start: u64, len: u64) -> io::Result<()> {
    let mut r = UffdioRange { start, len };
    ioctl(fd, UFFDIO_WAKE, &mut r)
}

#[repr(C)]
struct RawMsg {
    event: u8,
    _r1: u8,
    _r2: u16,
    _r3: u32,
    a: u64,
    b: u64,
    c: u64,
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
            out.push(match m[0] {
                0x12 => Event::PageFault {
                    addr: w(1),
                    tid: w(2) as u32,
                },
                0x13 => Event::Fork {
                    ufd: w(0) as u32 as i32,
                },
                0x14 => Event::Remap {
                    from: w(0),
                    to: w(1),
                    len: w(2),
                },
                0x15 => Event::Remove {
                    start: w(0),
                    end: w(1),
                },
                0x16 => Event::Unmap {
                    start: w(0),
                    end: w(1),
                },
                other => Event::Other(other),
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
