//! A multi-threaded workload: 8 threads, each owning a heap region and a
//! counter; four of them also count under one shared mutex and signal a
//! condition variable that a fifth waits on; one sleeps in long
//! nanosleeps. The main thread prints
//! `tick <n> <c0> .. <c7> total=<t> sum=<s> wakeups=<w>` every 20 ms;
//! `total` (kept under the mutex) must equal `sum` (of the four threads'
//! own counts of their locked increments). On SIGUSR1 every thread checks
//! its own region and the main thread prints `verify ok <threads>` or
//! `verify FAIL thread <i>`.
//!
//! A ninth thread blocks reading a pipe the main thread feeds one byte per
//! tick (`piped=<bytes read>`); a second pipe (256 KiB, non-blocking read
//! end, its write end dup'ed) holds 100000 bytes that `verify` reads,
//! checks and puts back. A POSIX timer signals the process every 10 ms; the tick line ends with
//! `timer=<expiries handled>`.
//!
//! With `--churn`, one more thread keeps creating and joining short-lived
//! threads; the tick line ends with `churn=<threads joined so far>`.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

const THREADS: usize = 8;
const WORDS: usize = 1 << 17; // 1 MiB of u64 per thread

static VERIFY: AtomicBool = AtomicBool::new(false);
static TIMER_FIRED: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_timer(_: libc::c_int) {
    TIMER_FIRED.fetch_add(1, Ordering::Relaxed);
}

/// A POSIX timer sending SIGUSR2 to the process every 10 ms.
fn start_timer() {
    // SAFETY: installing a handler that only touches an atomic; a zeroed
    // sigevent then filled for SIGEV_SIGNAL; the timer id is written to a
    // local; the itimerspec is read from a local.
    unsafe {
        libc::signal(libc::SIGUSR2, on_timer as *const () as libc::sighandler_t);
        let mut ev: libc::sigevent = std::mem::zeroed();
        ev.sigev_notify = libc::SIGEV_SIGNAL;
        ev.sigev_signo = libc::SIGUSR2;
        let mut id: libc::timer_t = std::ptr::null_mut();
        assert_eq!(
            libc::timer_create(libc::CLOCK_MONOTONIC, &mut ev, &mut id),
            0
        );
        let period = libc::timespec {
            tv_sec: 0,
            tv_nsec: 10_000_000,
        };
        let its = libc::itimerspec {
            it_interval: period,
            it_value: period,
        };
        assert_eq!(libc::timer_settime(id, 0, &its, std::ptr::null_mut()), 0);
    }
}

extern "C" fn on_usr1(_: libc::c_int) {
    VERIFY.store(true, Ordering::Relaxed);
}

fn pattern(t: usize, w: usize) -> u64 {
    ((t as u64) << 40) ^ (w as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Step between the words a worker writes, one per round: odd, so the
/// rounds visit every word before any twice.
const STRIDE: usize = 4099;

/// The inverse of `STRIDE` modulo `WORDS` (a power of two), by Newton's
/// iteration: round `j` writes word `j * STRIDE % WORDS`, so word `w` is
/// written in rounds `w * inverse % WORDS + m * WORDS`.
fn stride_inverse() -> usize {
    let mut x: usize = STRIDE;
    for _ in 0..5 {
        x = x.wrapping_mul(2usize.wrapping_sub(STRIDE.wrapping_mul(x)));
    }
    x % WORDS
}

/// What word `w` of worker `t` holds after `rounds` rounds: its pattern
/// plus the number of times it was written, so a write lost or undone
/// (a stale page after the move) is seen.
fn expected(t: usize, w: usize, rounds: usize, inverse: usize) -> u64 {
    let first = match w * inverse % WORDS {
        0 => WORDS,
        r => r,
    };
    let writes = if rounds >= first {
        (rounds - first) / WORDS + 1
    } else {
        0
    };
    pattern(t, w).wrapping_add(writes as u64)
}

struct Shared {
    counts: [AtomicU64; THREADS],
    locked_counts: [AtomicU64; 4],
    wakeups: AtomicU64,
    verify_epoch: AtomicU64,
    verified: [AtomicU64; THREADS],
    failed: [AtomicBool; THREADS],
    total: Mutex<u64>,
    cond: Condvar,
    churned: AtomicU64,
}

fn worker(i: usize, s: Arc<Shared>) {
    let mut mine: Vec<u64> = (0..WORDS).map(|w| pattern(i, w)).collect();
    let inverse = stride_inverse();
    let mut seen_epoch = 0;
    let mut k = 0usize;
    let mut rounds = 0usize;
    loop {
        match i {
            6 => std::thread::sleep(Duration::from_millis(50)),
            7 => {
                let g = s.total.lock().unwrap_or_else(|e| e.into_inner());
                let _g = s
                    .cond
                    .wait_timeout(g, Duration::from_millis(100))
                    .unwrap_or_else(|e| e.into_inner());
                s.wakeups.fetch_add(1, Ordering::Relaxed);
            }
            _ => std::thread::sleep(Duration::from_millis(5)),
        }
        if i < 4 {
            let mut t = s.total.lock().unwrap_or_else(|e| e.into_inner());
            *t += 1;
            s.locked_counts[i].fetch_add(1, Ordering::Relaxed);
            s.cond.notify_one();
        }
        k = (k + STRIDE) % WORDS;
        mine[k] = mine[k].wrapping_add(1);
        rounds += 1;
        s.counts[i].fetch_add(1, Ordering::Relaxed);
        let epoch = s.verify_epoch.load(Ordering::Acquire);
        if epoch != seen_epoch {
            seen_epoch = epoch;
            let ok = mine
                .iter()
                .enumerate()
                .all(|(w, v)| *v == expected(i, w, rounds, inverse));
            s.failed[i].store(!ok, Ordering::Relaxed);
            s.verified[i].store(epoch, Ordering::Release);
        }
    }
}

static PIPED: AtomicU64 = AtomicU64::new(0);
static POLLED: AtomicU64 = AtomicU64::new(0);

/// A semaphore eventfd holding 7: `verify` takes all seven (one by one)
/// and gives them back.
fn check_semaphore(efd: i32) -> Result<(), String> {
    let mut taken = 0;
    let mut v = 0u64;
    // SAFETY: 8-byte reads into a local, on a non-blocking eventfd.
    while unsafe { libc::read(efd, (&mut v as *mut u64).cast(), 8) } == 8 {
        taken += 1;
        if taken > 100 {
            break;
        }
    }
    if taken != 7 {
        return Err(format!("semaphore eventfd gave {taken}"));
    }
    let seven = 7u64;
    // SAFETY: writing 8 bytes from a local.
    unsafe { libc::write(efd, (&seven as *const u64).cast(), 8) };
    Ok(())
}
const BUFFERED: usize = 100_000;

fn pipe(flags: libc::c_int) -> (i32, i32) {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), flags) }, 0);
    (fds[0], fds[1])
}

fn buffered_byte(i: usize) -> u8 {
    (i * 31 % 251) as u8
}

/// Reads the buffered pipe dry (non-blocking), checks it, refills it.
fn check_buffered(r: i32, w: i32) -> Result<(), String> {
    let mut got = vec![0u8; BUFFERED + 4096];
    // SAFETY: reading into our buffer, at most its length.
    let n = unsafe { libc::read(r, got.as_mut_ptr().cast(), got.len()) };
    if n != BUFFERED as isize {
        return Err(format!("pipe held {n} bytes"));
    }
    if (0..BUFFERED).any(|i| got[i] != buffered_byte(i)) {
        return Err("pipe bytes differ".into());
    }
    // SAFETY: fcntl with integer arguments.
    let size = unsafe { libc::fcntl(w, libc::F_GETPIPE_SZ) };
    if size < 256 * 1024 {
        return Err(format!("pipe capacity {size}"));
    }
    // SAFETY: writing our buffer back.
    unsafe { libc::write(w, got.as_ptr().cast(), BUFFERED) };
    Ok(())
}

fn main() {
    // SAFETY: close_range on integers; nothing of ours is open yet.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    let (feed_r, feed_w) = pipe(libc::O_CLOEXEC);
    let (buf_r, buf_w) = pipe(libc::O_CLOEXEC);
    // SAFETY: fcntl/dup/write with integer arguments and our own buffer.
    let buf_w2 = unsafe {
        libc::fcntl(buf_w, libc::F_SETPIPE_SZ, 256 * 1024);
        libc::fcntl(buf_r, libc::F_SETFL, libc::O_NONBLOCK);
        let bytes: Vec<u8> = (0..BUFFERED).map(buffered_byte).collect();
        assert_eq!(
            libc::write(buf_w, bytes.as_ptr().cast(), BUFFERED),
            BUFFERED as isize
        );
        libc::dup(buf_w)
    };
    // SAFETY: eventfd/epoll calls with integer arguments and a local event.
    let (tick_efd, sem_efd) = unsafe {
        let tick = libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK);
        let sem = libc::eventfd(
            7,
            libc::EFD_CLOEXEC | libc::EFD_NONBLOCK | libc::EFD_SEMAPHORE,
        );
        (tick, sem)
    };
    std::thread::Builder::new()
        .name("epoller".into())
        .spawn(move || {
            // SAFETY: an epoll set of our own watching our eventfd; events go
            // into a local array.
            let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: 0xfeed,
            };
            // SAFETY: as above.
            unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, tick_efd, &mut ev) };
            loop {
                let mut out = [libc::epoll_event { events: 0, u64: 0 }; 4];
                // SAFETY: as above.
                let n = unsafe { libc::epoll_wait(ep, out.as_mut_ptr(), 4, -1) };
                if n == 1 && { out[0].u64 } == 0xfeed {
                    let mut v = 0u64;
                    // SAFETY: an 8-byte read into a local.
                    if unsafe { libc::read(tick_efd, (&mut v as *mut u64).cast(), 8) } == 8 {
                        POLLED.fetch_add(v, Ordering::Relaxed);
                    }
                }
            }
        })
        .expect("spawn");
    std::thread::Builder::new()
        .name("piper".into())
        .spawn(move || loop {
            let mut b = [0u8; 64];
            // SAFETY: reading into a local buffer.
            let n = unsafe { libc::read(feed_r, b.as_mut_ptr().cast(), b.len()) };
            if n > 0 {
                PIPED.fetch_add(n as u64, Ordering::Relaxed);
            }
        })
        .expect("spawn");
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let s = Arc::new(Shared {
        counts: Default::default(),
        locked_counts: Default::default(),
        wakeups: AtomicU64::new(0),
        verify_epoch: AtomicU64::new(0),
        verified: Default::default(),
        failed: Default::default(),
        total: Mutex::new(0),
        cond: Condvar::new(),
        churned: AtomicU64::new(0),
    });
    if std::env::args().any(|a| a == "--churn") {
        let s = s.clone();
        std::thread::Builder::new()
            .name("churn".into())
            .spawn(move || loop {
                let h = std::thread::spawn(|| std::thread::sleep(Duration::from_micros(200)));
                if h.join().is_ok() {
                    s.churned.fetch_add(1, Ordering::Relaxed);
                }
            })
            .expect("spawn");
    }
    for i in 0..THREADS {
        let s = s.clone();
        std::thread::Builder::new()
            .name(format!("worker{i}"))
            .spawn(move || worker(i, s))
            .expect("spawn");
    }
    start_timer();
    let out = std::io::stdout();
    let mut out = out.lock();
    let _ = writeln!(out, "pid {}\nready", std::process::id());
    let _ = out.flush();
    let mut n = 0u64;
    loop {
        std::thread::sleep(Duration::from_millis(20));
        n += 1;
        // SAFETY: one byte from a local into our pipe; 8 bytes into our
        // eventfd.
        unsafe {
            libc::write(feed_w, b"x".as_ptr().cast(), 1);
            let one = 1u64;
            libc::write(tick_efd, (&one as *const u64).cast(), 8);
        }
        let (total, sum) = {
            let t = s.total.lock().unwrap_or_else(|e| e.into_inner());
            let sum: u64 = s
                .locked_counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .sum();
            (*t, sum)
        };
        let counts: Vec<String> = s
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed).to_string())
            .collect();
        let _ = writeln!(
            out,
            "tick {n} {} total={total} sum={sum} wakeups={} churn={} timer={} piped={} polled={}",
            counts.join(" "),
            s.wakeups.load(Ordering::Relaxed),
            s.churned.load(Ordering::Relaxed),
            TIMER_FIRED.load(Ordering::Relaxed),
            PIPED.load(Ordering::Relaxed),
            POLLED.load(Ordering::Relaxed)
        );
        let _ = out.flush();
        if VERIFY.swap(false, Ordering::Relaxed) {
            let epoch = s.verify_epoch.fetch_add(1, Ordering::AcqRel) + 1;
            let mut waited = 0;
            while s.verified.iter().any(|v| v.load(Ordering::Acquire) < epoch) && waited < 500 {
                std::thread::sleep(Duration::from_millis(10));
                waited += 1;
            }
            let bad = (0..THREADS).find(|&i| {
                s.verified[i].load(Ordering::Acquire) < epoch || s.failed[i].load(Ordering::Relaxed)
            });
            let pipe = check_buffered(buf_r, buf_w2).and_then(|_| check_semaphore(sem_efd));
            let _ = match (bad, pipe) {
                (None, Ok(())) => writeln!(out, "verify ok {THREADS}"),
                (Some(i), _) => writeln!(out, "verify FAIL thread {i}"),
                (None, Err(e)) => writeln!(out, "verify FAIL {e}"),
            };
            let _ = out.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_follows_the_rounds() {
        let inverse = stride_inverse();
        assert_eq!(STRIDE * inverse % WORDS, 1);
        let mut mine: Vec<u64> = (0..WORDS).map(|w| pattern(3, w)).collect();
        let mut k = 0;
        for rounds in 1..=2 * WORDS + 7 {
            k = (k + STRIDE) % WORDS;
            mine[k] = mine[k].wrapping_add(1);
            if rounds % 40_000 == 0 || rounds > 2 * WORDS {
                assert!((0..WORDS).all(|w| mine[w] == expected(3, w, rounds, inverse)));
            }
        }
        // One write lost is seen.
        mine[k] = mine[k].wrapping_sub(1);
        assert!(mine[k] != expected(3, k, 2 * WORDS + 7, inverse));
    }
}
