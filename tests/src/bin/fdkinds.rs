//! Descriptors checked through themselves after a move: a timerfd firing
//! every 20 ms, a signalfd reading SIGUSR2, a directory listing half read.
//! Prints `pid`, `ready`, then every 100 ms `tick <n> timer=<expirations>
//! sigs=<SIGUSR2 read> ms=<its own monotonic time since the start>` and, on SIGUSR1, `dir ok <entries>` if the rest of
//! the listing completes the first half exactly, else `dir FAIL ...`, and
//! `devices ok` if /dev/zero and /dev/urandom, open since the start, read
//! as they should.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static VERIFY: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    VERIFY.store(true, Ordering::Relaxed);
}

const DIR: &str = "/usr/lib/x86_64-linux-gnu";

/// Reads up to `max` names from directory descriptor `fd` (getdents64).
fn names(fd: i32, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 4096];
    while out.len() < max {
        // SAFETY: getdents64 fills at most `buf.len()` bytes of our buffer.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len()) };
        if n <= 0 {
            break;
        }
        let mut off = 0usize;
        while off < n as usize && out.len() < max {
            let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
            let name = &buf[off + 19..off + reclen];
            let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
            out.push(String::from_utf8_lossy(&name[..end]).into_owned());
            off += reclen;
        }
        if out.len() >= max && off < n as usize {
            // Entries read but not taken: step back to the first of them.
            let d_off = i64::from_ne_bytes(
                buf[off - reclen_at(&buf, off) + 8..off - reclen_at(&buf, off) + 16]
                    .try_into()
                    .unwrap(),
            );
            // SAFETY: lseek on our own directory descriptor.
            unsafe { libc::lseek(fd, d_off, libc::SEEK_SET) };
        }
    }
    out
}

/// Length of the record that ends at `end` (walks from the start).
fn reclen_at(buf: &[u8], end: usize) -> usize {
    let mut off = 0;
    loop {
        let r = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
        if off + r == end {
            return r;
        }
        off += r;
    }
}

fn main() {
    // SAFETY: close_range on integers; nothing of ours is open yet.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    // SAFETY: timerfd, sigmask, signalfd and open calls with valid
    // arguments; the structures are locals.
    let (tfd, sfd, dfd) = unsafe {
        libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t);
        let tfd = libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC);
        let period = libc::timespec {
            tv_sec: 0,
            tv_nsec: 20_000_000,
        };
        let its = libc::itimerspec {
            it_interval: period,
            it_value: period,
        };
        libc::timerfd_settime(tfd, 0, &its, std::ptr::null_mut());
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let sfd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        let path = std::ffi::CString::new(DIR).unwrap();
        let dfd = libc::open(
            path.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        (tfd, sfd, dfd)
    };
    let zero = std::fs::File::open("/dev/zero").expect("/dev/zero");
    let urandom = std::fs::File::open("/dev/urandom").expect("/dev/urandom");
    let first = names(dfd, 40);
    let out = std::io::stdout();
    let mut out = out.lock();
    let _ = writeln!(out, "pid {}\nready", std::process::id());
    let _ = out.flush();
    let (mut expirations, mut sigs, mut n) = (0u64, 0u64, 0u64);
    let mut last = std::time::Instant::now();
    let start = last;
    loop {
        let mut v = 0u64;
        // SAFETY: a blocking 8-byte read from our timerfd into a local.
        if unsafe { libc::read(tfd, (&mut v as *mut u64).cast(), 8) } == 8 {
            expirations += v;
        }
        let mut si = [0u8; 128];
        // SAFETY: non-blocking reads of signalfd_siginfo records into a local.
        while unsafe { libc::read(sfd, si.as_mut_ptr().cast(), 128) } == 128 {
            if u32::from_ne_bytes([si[0], si[1], si[2], si[3]]) == libc::SIGUSR2 as u32 {
                sigs += 1;
            }
        }
        if last.elapsed().as_millis() >= 100 {
            last = std::time::Instant::now();
            n += 1;
            let _ = writeln!(
                out,
                "tick {n} timer={expirations} sigs={sigs} ms={}",
                start.elapsed().as_millis()
            );
            let _ = out.flush();
        }
        if VERIFY.swap(false, Ordering::Relaxed) {
            let rest = names(dfd, usize::MAX);
            let mut all: Vec<String> = first.iter().chain(rest.iter()).cloned().collect();
            let fresh: BTreeSet<String> = std::fs::read_dir(DIR)
                .map(|d| {
                    d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                        .collect()
                })
                .unwrap_or_default();
            all.retain(|x| x != "." && x != "..");
            let seen: BTreeSet<String> = all.iter().cloned().collect();
            let (mut z, mut u) = ([1u8; 64], [0u8; 64]);
            let devs_ok = std::io::Read::read_exact(&mut &zero, &mut z).is_ok()
                && std::io::Read::read_exact(&mut &urandom, &mut u).is_ok()
                && z.iter().all(|b| *b == 0)
                && u.iter().any(|b| *b != 0);
            let _ = writeln!(out, "devices {}", if devs_ok { "ok" } else { "FAIL" });
            let _ = if seen.len() == all.len() && seen == fresh {
                writeln!(out, "dir ok {}", all.len())
            } else {
                writeln!(
                    out,
                    "dir FAIL {} entries, {} distinct, {} expected",
                    all.len(),
                    seen.len(),
                    fresh.len()
                )
            };
            let _ = out.flush();
        }
    }
}
