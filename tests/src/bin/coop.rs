//! A cooperating Rust program: on SIGUSR1 it asks the `migrate-shim`
//! crate where it runs, where it started and how often it moved, and
//! prints `query OK HOST HOME COUNT`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static ASKED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    ASKED.store(true, Ordering::Relaxed);
}

fn main() {
    // Descriptors inherited from whoever started us are not ours to keep.
    // SAFETY: close_range on integers; nothing of ours is open yet.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    println!("pid {}", std::process::id());
    loop {
        if ASKED.swap(false, Ordering::Relaxed) {
            let q = (
                migrate_shim::current_host(),
                migrate_shim::home_host(),
                migrate_shim::migrations(),
            );
            match q {
                (Ok(h), Ok(home), Ok(n)) => println!("query 1 {h} {home} {n}"),
                (h, home, n) => println!("query 0 {h:?} {home:?} {n:?}"),
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
