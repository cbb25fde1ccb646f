//! The application's callbacks and the thread that runs them.
//!
//! The first callback registered (or the first `migrate_request`) starts
//! a thread named [`LISTENER_NAME`] which waits for [`SIGNAL`], blocked in
//! itself only, and marks the state block `listening`. An agent about to
//! freeze the process sends it [`Phase::Freeze`] and waits (bounded) for
//! the acknowledgement the thread writes once the freeze callbacks have
//! returned; the destination sends [`Phase::Resumed`] once the process runs
//! there; a migration that does not happen ends with [`Phase::Stayed`].
//! Callbacks therefore run in this thread, in the order registered, once
//! per migration: freeze callbacks, then resume callbacks with the name of
//! the host the process runs on (the same host if the migration failed
//! after the freeze).

use std::ffi::{c_char, c_int, c_void, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use migrate_proto::shim::{off, Phase, LISTENER_NAME, SIGNAL};

use crate::block;

/// `void (*)(void *arg)`.
pub type FreezeFn = extern "C" fn(*mut c_void);
/// `void (*)(const char *host, const int *reconnected, size_t n, void *arg)`.
pub type ResumeFn = extern "C" fn(*const c_char, *const c_int, usize, *mut c_void);

#[derive(Clone, Copy)]
enum Callback {
    Freeze(FreezeFn, usize),
    Resume(ResumeFn, usize),
}

/// What the listener has seen, for `migrate_request`.
#[derive(Default)]
struct Seen {
    /// Migrations ended (resumed elsewhere, or stayed).
    ended: u64,
    /// The last one moved the process.
    moved: bool,
}

static CALLBACKS: Mutex<Vec<Callback>> = Mutex::new(Vec::new());
static RUNNING: AtomicBool = AtomicBool::new(false);
static SEEN: Mutex<Seen> = Mutex::new(Seen {
    ended: 0,
    moved: false,
});
static ENDED: Condvar = Condvar::new();

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Registers a freeze callback; starts the listener.
pub fn on_freeze(f: FreezeFn, arg: *mut c_void) -> std::io::Result<()> {
    lock(&CALLBACKS).push(Callback::Freeze(f, arg as usize));
    ensure_running()
}

/// Registers a resume callback; starts the listener.
pub fn on_resume(f: ResumeFn, arg: *mut c_void) -> std::io::Result<()> {
    lock(&CALLBACKS).push(Callback::Resume(f, arg as usize));
    ensure_running()
}

/// Starts the listener thread once; returns when it listens.
pub fn ensure_running() -> std::io::Result<()> {
    if !block::ready() {
        return Err(std::io::Error::other(
            "the shim was not initialised in this process",
        ));
    }
    if RUNNING.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    std::thread::Builder::new()
        .name(LISTENER_NAME.into())
        .spawn(listen)
        .inspect_err(|_| RUNNING.store(false, Ordering::SeqCst))?;
    let t0 = Instant::now();
    while block::get(off::LISTENING) == 0 && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// In a child after `fork`: the listener thread was not copied.
pub fn forget_after_fork() {
    RUNNING.store(false, Ordering::SeqCst);
}

/// Number of migrations ended so far (for `wait_ended`).
pub fn ended() -> u64 {
    lock(&SEEN).ended
}

/// Waits until more than `after` migrations have ended, at most `limit`:
/// whether the last one moved the process, or `None` on time-out.
pub fn wait_ended(after: u64, limit: Duration) -> Option<bool> {
    let t0 = Instant::now();
    let mut seen = lock(&SEEN);
    while seen.ended <= after {
        let left = limit.checked_sub(t0.elapsed())?;
        seen = ENDED
            .wait_timeout(seen, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    Some(seen.moved)
}

/// The signal set with only [`SIGNAL`].
fn our_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise the zeroed set in place.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, SIGNAL);
        set
    }
}

fn listen() {
    let set = our_set();
    // SAFETY: blocks SIGNAL in this thread only; `set` is initialised.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    block::set(off::LISTENING, 1);
    let mut frozen = false;
    loop {
        // SAFETY: `info` is written by the kernel; `set` is initialised.
        let (r, info) = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            (libc::sigwaitinfo(&set, &mut info), info)
        };
        if r != SIGNAL {
            continue; // interrupted (a freeze, a stop): wait again
        }
        // SAFETY: a signal queued with a value (SI_QUEUE) carries it here.
        let value = unsafe { info.si_value() }.sival_ptr as usize as u32;
        // Only notices from the agent: it writes the value into the block
        // before it sends the signal.
        if block::get(off::NOTICE) != value {
            continue;
        }
        let Some(phase) = Phase::of(value) else {
            continue;
        };
        let callbacks = lock(&CALLBACKS).clone();
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match phase {
            Phase::Freeze => {
                frozen = true;
                for c in &callbacks {
                    if let Callback::Freeze(f, arg) = c {
                        f(*arg as *mut c_void);
                    }
                }
            }
            Phase::Resumed | Phase::Stayed => {
                if std::mem::take(&mut frozen) {
                    let host = CString::new(block::host()).unwrap_or_default();
                    let fds = block::reconnected();
                    for c in &callbacks {
                        if let Callback::Resume(f, arg) = c {
                            f(host.as_ptr(), fds.as_ptr(), fds.len(), *arg as *mut c_void);
                        }
                    }
                }
            }
        }));
        block::set(off::ACK, value >> 8);
        if phase != Phase::Freeze {
            let mut seen = lock(&SEEN);
            seen.ended += 1;
            seen.moved = phase == Phase::Resumed;
            ENDED.notify_all();
        }
    }
}
