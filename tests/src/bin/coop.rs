//! A cooperating Rust program using the `migrate-api` crate, the twin of
//! `tests/workloads/coop.c` (same signals, same lines):
//!   SIGUSR1: `query OK HOST HOME COUNT`;
//!   SIGUSR2: `ids PID TID PPID SPID STID SPPID T2 T2FIRST KILL TGKILL`;
//!   SIGHUP: `migrate_api::request` to the other lab host, then
//!   `request RC HOST`;
//! its callbacks print `freeze N` and `resume N HOST`.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::time::Duration;

static ASKED: AtomicBool = AtomicBool::new(false);
static IDS: AtomicBool = AtomicBool::new(false);
static HOP: AtomicBool = AtomicBool::new(false);
static KILLS: AtomicU32 = AtomicU32::new(0);
static URG_ON: AtomicI32 = AtomicI32::new(0);
static T2_NOW: AtomicI32 = AtomicI32::new(0);
static T2_FIRST: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    match sig {
        libc::SIGUSR1 => ASKED.store(true, Ordering::Relaxed),
        libc::SIGUSR2 => IDS.store(true, Ordering::Relaxed),
        libc::SIGHUP => HOP.store(true, Ordering::Relaxed),
        libc::SIGPROF => {
            KILLS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: gettid has no preconditions (async-signal-safe).
        libc::SIGURG => URG_ON.store(unsafe { libc::gettid() }, Ordering::Relaxed),
        _ => {}
    }
}

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Waits up to 2 s for `cond`.
fn wait(cond: impl Fn() -> bool) -> bool {
    for _ in 0..200 {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

fn sys(n: libc::c_long) -> libc::c_long {
    // SAFETY: an id query without arguments.
    unsafe { libc::syscall(n) }
}

fn main() {
    // Descriptors inherited from whoever started us are not ours to keep.
    // SAFETY: close_range on integers; nothing of ours is open yet.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    for sig in [
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGHUP,
        libc::SIGPROF,
        libc::SIGURG,
    ] {
        // SAFETY: the handler only touches atomics and calls gettid.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    let freezes = AtomicU32::new(0);
    let freezes: &'static AtomicU32 = Box::leak(Box::new(freezes));
    let resumes: &'static AtomicU32 = Box::leak(Box::new(AtomicU32::new(0)));
    let registered = migrate_api::on_freeze(move || {
        say(format!(
            "freeze {}",
            freezes.fetch_add(1, Ordering::SeqCst) + 1
        ))
    })
    .and_then(|()| {
        migrate_api::on_resume(move |host, _| {
            say(format!(
                "resume {} {host}",
                resumes.fetch_add(1, Ordering::SeqCst) + 1
            ))
        })
    });
    if let Err(e) = registered {
        say(format!("callbacks not registered: {e}"));
    }
    std::thread::spawn(|| {
        // SAFETY: gettid has no preconditions.
        T2_FIRST.store(unsafe { libc::gettid() }, Ordering::SeqCst);
        loop {
            // SAFETY: as above.
            T2_NOW.store(unsafe { libc::gettid() }, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    wait(|| T2_FIRST.load(Ordering::SeqCst) != 0);
    // SAFETY: getppid has no preconditions.
    let ppid = unsafe { libc::getppid() };
    say(format!(
        "pid {} ppid {ppid} tid2 {}",
        std::process::id(),
        T2_FIRST.load(Ordering::SeqCst)
    ));
    loop {
        if ASKED.swap(false, Ordering::Relaxed) {
            let q = (
                migrate_api::current_host(),
                migrate_api::home_host(),
                migrate_api::migrations(),
            );
            say(match q {
                (Ok(h), Ok(home), Ok(n)) => format!("query 1 {h} {home} {n}"),
                (h, home, n) => format!("query 0 {h:?} {home:?} {n:?}"),
            });
        }
        if IDS.swap(false, Ordering::Relaxed) {
            let me = std::process::id() as i32;
            let k0 = KILLS.load(Ordering::SeqCst);
            // SAFETY: signals to this process, whose handlers are set.
            unsafe { libc::kill(me, libc::SIGPROF) };
            wait(|| KILLS.load(Ordering::SeqCst) > k0);
            // SAFETY: as above.
            unsafe { libc::syscall(libc::SYS_kill, me, libc::SIGPROF) };
            wait(|| KILLS.load(Ordering::SeqCst) > k0 + 1);
            let target = T2_FIRST.load(Ordering::SeqCst);
            URG_ON.store(0, Ordering::SeqCst);
            // SAFETY: as above, to the second thread (by its virtual id).
            unsafe { libc::syscall(libc::SYS_tgkill, me, target, libc::SIGURG) };
            wait(|| URG_ON.load(Ordering::SeqCst) != 0);
            say(format!(
                "ids {me} {} {} {} {} {} {} {target} {} {}",
                // SAFETY: id queries without preconditions.
                unsafe { libc::gettid() },
                // SAFETY: as above.
                unsafe { libc::getppid() },
                sys(libc::SYS_getpid),
                sys(libc::SYS_gettid),
                sys(libc::SYS_getppid),
                T2_NOW.load(Ordering::SeqCst),
                u8::from(KILLS.load(Ordering::SeqCst) == k0 + 2),
                u8::from(URG_ON.load(Ordering::SeqCst) == target),
            ));
        }
        if HOP.swap(false, Ordering::Relaxed) {
            let here = migrate_api::current_host().unwrap_or_default();
            let to = if here == "host1" { "host2" } else { "host1" };
            say(match migrate_api::request(to) {
                Ok(()) => format!("request 0 {to}"),
                Err(e) => format!("request -1 {e}"),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
