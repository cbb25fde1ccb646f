//! Exercises what userfaultfd reports as events, on memory that may still
//! be on the source: on SIGUSR2 it forks a child that checks untouched
//! pages, drops a range with MADV_DONTNEED and expects zeros, moves a range
//! with mremap and checks it, unmaps part of another and checks the rest. Prints one line per
//! check, `all ok` or `all FAIL`, then `done`.
//!
//! With `--walk FILE`, SIGUSR2 starts a walk instead: every page in order,
//! one a millisecond, checked word by word; `walked <n>` every 64 pages
//! and `FAIL page <n>` for a wrong one go to FILE (opened at the start, so
//! that it reports without the forwarded standard streams), `walk done`
//! at the end.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr2(_: libc::c_int) {
    GO.store(true, Ordering::Relaxed);
}

const PAGE: usize = 4096;
const WORDS: usize = PAGE / 8;

fn pattern(page: usize, word: usize) -> u64 {
    ((page as u64) << 32) ^ (word as u64) ^ 0x9e37_79b9_7f4a_7c15
}

fn check(base: *const u64, first_page: usize, pages: usize, index0: usize) -> bool {
    (0..pages).all(|p| {
        (0..WORDS).all(|w| {
            // SAFETY: the caller passes a mapped range of `pages` pages.
            let v = unsafe { base.add((first_page + p) * WORDS + w).read_volatile() };
            v == pattern(index0 + p, w)
        })
    })
}

fn say(out: &mut impl Write, what: &str, ok: bool) -> bool {
    let _ = writeln!(out, "{what} {}", if ok { "ok" } else { "FAIL" });
    let _ = out.flush();
    ok
}

fn main() {
    // Descriptors inherited from whoever started us are not ours to keep.
    // SAFETY: close_range on integers; nothing of ours is open yet.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    let args: Vec<String> = std::env::args().collect();
    let mib: usize = args
        .iter()
        .position(|a| a == "--mib")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let walk = args
        .iter()
        .position(|a| a == "--walk")
        .and_then(|i| args.get(i + 1))
        .map(|path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("--walk FILE")
        });
    let pages = mib * 256;
    let len = pages * PAGE;
    // SAFETY: an anonymous private mapping; checked below.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(base, libc::MAP_FAILED, "mmap failed");
    let words = base.cast::<u64>();
    for p in 0..pages {
        for w in 0..WORDS {
            // SAFETY: inside the mapping just made.
            unsafe { words.add(p * WORDS + w).write(pattern(p, w)) };
        }
    }
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe { libc::signal(libc::SIGUSR2, on_usr2 as *const () as libc::sighandler_t) };
    let out = std::io::stdout();
    let mut out = out.lock();
    let _ = writeln!(out, "pid {}\nready", std::process::id());
    let _ = out.flush();
    while !GO.load(Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    if let Some(mut report) = walk {
        for p in 0..pages {
            if !check(words, p, 1, p) {
                let _ = writeln!(report, "FAIL page {p}");
            }
            if (p + 1) % 64 == 0 {
                let _ = writeln!(report, "walked {}", p + 1);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let _ = writeln!(report, "walk done");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
    let q = pages / 4;
    let mut ok = true;

    // (a) A child reads the second quarter.
    // SAFETY: fork in a single-threaded process; the child only reads
    // memory and exits.
    let child = unsafe { libc::fork() };
    if child == 0 {
        let good = check(words, q, q, q);
        // SAFETY: _exit ends the child at once.
        unsafe { libc::_exit(if good { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child with a valid status pointer.
    unsafe { libc::waitpid(child, &mut status, 0) };
    ok &= say(
        &mut out,
        "fork",
        child > 0 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
    );

    // (b) The third quarter is dropped and must read as zeros.
    // SAFETY: inside our mapping, page aligned.
    let r = unsafe {
        libc::madvise(
            base.cast::<u8>().add(2 * q * PAGE).cast(),
            q * PAGE,
            libc::MADV_DONTNEED,
        )
    };
    let zeros = r == 0
        && (0..q * WORDS).all(|w| {
            // SAFETY: inside our mapping.
            unsafe { words.add(2 * q * WORDS + w).read_volatile() == 0 }
        });
    ok &= say(&mut out, "dontneed", zeros);

    // (c) The last quarter moves elsewhere and keeps its content.
    // SAFETY: reserving a fresh range to move into.
    let target = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            q * PAGE,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    // SAFETY: both ranges are ours; MREMAP_FIXED replaces the reservation.
    let moved = unsafe {
        libc::mremap(
            base.cast::<u8>().add(3 * q * PAGE).cast(),
            q * PAGE,
            q * PAGE,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            target,
        )
    };
    let remap_ok = target != libc::MAP_FAILED
        && moved != libc::MAP_FAILED
        && check(moved.cast::<u64>(), 0, q, 3 * q);
    ok &= say(&mut out, "mremap", remap_ok);

    // (d) The second half of the first quarter is unmapped; the first half,
    // untouched until now, must be intact.
    let half = q / 2;
    // SAFETY: unmapping part of our own mapping, never used again.
    let r = unsafe { libc::munmap(base.cast::<u8>().add(half * PAGE).cast(), (q - half) * PAGE) };
    ok &= say(&mut out, "munmap", r == 0);
    ok &= say(&mut out, "first", check(words, 0, half, 0));
    // The second quarter in the parent too.
    ok &= say(&mut out, "second", check(words, q, q, q));

    let _ = writeln!(out, "all {}\ndone", if ok { "ok" } else { "FAIL" });
    let _ = out.flush();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
