//! The ticking workload: fills N MiB with a known pattern, then every T ms
//! writes a new value into `--dirty-pages K` pages (default 1; 0: only
//! ticks), in an order fixed by the tick number, and prints `tick <n>
//! <realtime ns> <write µs> <sleep µs> <touch µs>`: how long the last
//! tick's line took to write, this tick's sleep and its page writes (what
//! the gap since the last tick went on). SIGUSR1 makes it verify every
//! word (the written ones against a replay of the writes, not against a
//! copy kept in its own memory) and print `verify ok <pages>` or where it
//! failed.
//!
//! `--reserve-mib R` also maps R MiB it never touches; `--map-file PATH`
//! maps PATH shared read-only and checks it too; `--reserve-none-gib G`
//! reserves G GiB PROT_NONE (as language runtimes do); `--advise` maps four
//! 2 MiB areas with MADV_DONTFORK, MADV_WIPEONFORK, MADV_HUGEPAGE and
//! MADV_DONTDUMP (printing `advised <start hex> <smaps flag>`) and one
//! executable page of generated code that `verify` runs (`jit 42`).
//! `--fork N` forks N children once the memory is filled (printing `child
//! <pid>` for each), which share it copy-on-write and write their own
//! copies as the parent does, silently; SIGUSR1 makes a child verify its
//! copy and print `verify ok <pages> child <k>` (or where it failed).
//! With `--own` each child first rewrites every page with a pattern of
//! its own: N + 1 processes of N MiB each, nothing shared. Each child
//! prints `child ready <k>` once its memory is filled. `--echo ADDR:PORT`
//! echoes on a thread of its own every byte a client sends there.
//! `--zeros P` (0-100) writes zeros, not the pattern, into the first P of
//! every 100 pages (pages in memory that read as zeros, as a runtime's
//! pre-touched heap has).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static VERIFY: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    VERIFY.store(true, Ordering::Relaxed);
}

const WORDS: usize = 4096 / 8;

/// The value of word `word` of page `page` in the process with `seed` (0:
/// the first process; a child with `--own`: its number).
fn pattern(page: usize, word: usize, seed: u64) -> u64 {
    if page % 100 < zeros() {
        return 0;
    }
    (((page as u64) << 32) ^ (word as u64) ^ 0x9e37_79b9_7f4a_7c15)
        .wrapping_add(seed.wrapping_mul(0x0100_0000_0000_0001))
}

/// `--zeros P`: of every 100 pages, the first P hold zeros.
fn zeros() -> usize {
    static ZEROS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *ZEROS.get_or_init(|| arg("--zeros", 0).min(100))
}

fn arg_str(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn arg(name: &str, default: usize) -> usize {
    arg_str(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `--echo ADDR:PORT`: a thread that echoes every byte of one client at a
/// time back to it.
fn echo(at: &str) {
    let l = std::net::TcpListener::bind(at).expect("echo: bind");
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let mut r = c;
            let mut w = match r.try_clone() {
                Ok(w) => w,
                Err(_) => continue,
            };
            let _ = std::io::copy(&mut r, &mut w);
        }
    });
}

fn map_anon(len: usize, prot: i32) -> *mut u8 {
    // SAFETY: a fresh anonymous private mapping.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap failed");
    p.cast()
}

/// Maps `path` shared read-only; returns the mapping and its sum.
fn map_file(path: &str) -> (&'static [u8], u64) {
    let f = std::fs::File::open(path).expect("open --map-file");
    let len = f.metadata().expect("stat").len() as usize;
    // SAFETY: mapping an open file read-only; the fd may close afterwards.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&f),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap of the file failed");
    // SAFETY: the mapping is `len` bytes long and never unmapped.
    let bytes = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) };
    (bytes, sum(bytes))
}

fn sum(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        (h ^ u64::from(*x)).wrapping_mul(0x100_0000_01b3)
    })
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

extern "C" {
    /// glibc: offset of the rseq area from the thread pointer.
    static __rseq_offset: isize;
    /// glibc: size of the registered rseq area (0: not registered).
    static __rseq_size: u32;
}

/// x86_64's rseq signature as glibc registers it.
const RSEQ_SIG: u32 = 0x5305_3053;

/// Per-thread kernel state the process can see of itself: the
/// `clear_child_tid` address, the robust list head, and whether the kernel
/// still has glibc's rseq area registered (registering it again answers
/// EBUSY only if it is).
fn kernel_state() -> String {
    let mut tid_addr: u64 = 0;
    // SAFETY: PR_GET_TID_ADDRESS writes one pointer to the given address.
    unsafe { libc::prctl(libc::PR_GET_TID_ADDRESS, &mut tid_addr as *mut u64) };
    let mut head: u64 = 0;
    let mut len: usize = 0;
    // SAFETY: get_robust_list(0) writes a pointer and a size_t.
    unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            0,
            &mut head as *mut u64,
            &mut len as *mut usize,
        )
    };
    let tp: u64;
    // SAFETY: reads the TCB self pointer at fs:0 (x86_64 TLS ABI).
    unsafe { std::arch::asm!("mov {}, fs:0", out(reg) tp) };
    // SAFETY: glibc defines both symbols; they are constant after start-up.
    let (off, size) = unsafe { (__rseq_offset, __rseq_size) };
    let rseq = if size == 0 {
        "off".to_string()
    } else {
        let area = tp.wrapping_add_signed(off as i64);
        // SAFETY: rseq with the very arguments glibc registered; it either
        // fails (already registered) or registers the same area again.
        let r = unsafe { libc::syscall(libc::SYS_rseq, area, size.max(32), 0, RSEQ_SIG) };
        let e = std::io::Error::last_os_error().raw_os_error();
        match (r, e) {
            (-1, Some(libc::EBUSY)) => format!("registered@{area:#x}"),
            (0, _) => format!("NOT-registered@{area:#x}"),
            _ => format!("error {e:?}"),
        }
    };
    let mut pdeath: libc::c_int = 0;
    // SAFETY: PR_GET_PDEATHSIG writes one int to the given address.
    unsafe { libc::prctl(libc::PR_GET_PDEATHSIG, &mut pdeath as *mut libc::c_int) };
    let mut ss: libc::stack_t = libc::stack_t {
        ss_sp: std::ptr::null_mut(),
        ss_flags: 0,
        ss_size: 0,
    };
    // SAFETY: sigaltstack writes the current stack_t into `ss`; prctl
    // queries with integer arguments.
    let (nnp, dumpable) = unsafe {
        libc::sigaltstack(std::ptr::null(), &mut ss);
        (
            libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0),
            libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0),
        )
    };
    format!(
        "state tid_address={tid_addr:#x} robust={head:#x}/{len} rseq={rseq} altstack={:p}/{}/{} nnp={nnp} dumpable={dumpable} pdeathsig={pdeath}",
        ss.ss_sp, ss.ss_size, ss.ss_flags
    )
}

/// The page the `seq`-th write goes to.
fn written_page(seq: usize, pages: usize) -> usize {
    seq.wrapping_mul(7919) % pages
}

fn main() {
    // Descriptors inherited from whoever started us are not ours to keep.
    // SAFETY: close_range on integers; nothing of ours is open yet.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    let mib = arg("--mib", 64);
    let tick_ms = arg("--tick-ms", 5) as u64;
    let dirty = arg("--dirty-pages", 1);
    let pages = mib * 256;
    let mut mem: Vec<u64> = vec![0; pages * WORDS];
    let reserve = arg("--reserve-mib", 0) << 20;
    if reserve > 0 {
        map_anon(reserve, libc::PROT_READ | libc::PROT_WRITE);
    }
    let file = arg_str("--map-file").map(|p| map_file(&p));
    let pdeathsig = arg("--pdeathsig", 0);
    if pdeathsig > 0 {
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, pdeathsig as libc::c_ulong) };
    }
    if std::env::args().any(|a| a == "--process-state") {
        // An alternate signal stack of our own, no_new_privs, not dumpable.
        let stack = map_anon(64 << 10, libc::PROT_READ | libc::PROT_WRITE);
        let ss = libc::stack_t {
            ss_sp: stack.cast(),
            ss_flags: 0,
            ss_size: 64 << 10,
        };
        // SAFETY: the stack is a live mapping of 64 KiB; prctl with integers.
        unsafe {
            libc::sigaltstack(&ss, std::ptr::null_mut());
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        }
    }
    let none_gib = arg("--reserve-none-gib", 0);
    if none_gib > 0 {
        // SAFETY: a fresh PROT_NONE reservation, never touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                none_gib << 30,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "reservation failed");
    }
    let mut advised = Vec::new();
    let mut jit: Option<extern "C" fn() -> u32> = None;
    if std::env::args().any(|a| a == "--advise") {
        for (advice, flag) in [
            (libc::MADV_DONTFORK, "dc"),
            (libc::MADV_WIPEONFORK, "wf"),
            (libc::MADV_HUGEPAGE, "hg"),
            (libc::MADV_DONTDUMP, "dd"),
        ] {
            let p = map_anon(2 << 20, libc::PROT_READ | libc::PROT_WRITE);
            // SAFETY: advice on a mapping of ours, then touching it.
            unsafe {
                libc::madvise(p.cast(), 2 << 20, advice);
                p.write_bytes(0x5a, 2 << 20);
            }
            advised.push(format!("advised {:x} {flag}", p as usize));
        }
        let code = map_anon(4096, libc::PROT_READ | libc::PROT_WRITE);
        // mov eax, 42; ret
        let bytes = [0xb8u8, 42, 0, 0, 0, 0xc3];
        // SAFETY: writing 6 bytes into our page, then making it executable.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), code, bytes.len());
            libc::mprotect(code.cast(), 4096, libc::PROT_READ | libc::PROT_EXEC);
        }
        // SAFETY: the page holds a complete function with the C ABI.
        jit = Some(unsafe { std::mem::transmute::<*mut u8, extern "C" fn() -> u32>(code) });
    }
    if let Some(at) = arg_str("--echo") {
        echo(&at);
    }
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let out = std::io::stdout();
    let mut out = out.lock();
    let _ = writeln!(out, "pid {}", std::process::id());
    let _ = out.flush();
    for (i, page) in mem.chunks_mut(WORDS).enumerate() {
        for (j, w) in page.iter_mut().enumerate() {
            *w = pattern(i, j, 0);
        }
    }
    for a in &advised {
        let _ = writeln!(out, "{a}");
    }
    let _ = out.flush();
    // This process's number: 0 for the first, k for its k-th child.
    let mut index = 0u64;
    for k in 1..=arg("--fork", 0) as u64 {
        // SAFETY: fork in a process with one thread; both sides go on with
        // plain Rust.
        match unsafe { libc::fork() } {
            0 => {
                index = k;
                break;
            }
            -1 => panic!("fork failed"),
            pid => {
                let _ = writeln!(out, "child {pid}");
            }
        }
    }
    let child = index > 0;
    let seed = if std::env::args().any(|a| a == "--own") {
        index
    } else {
        0
    };
    if seed > 0 {
        for (i, page) in mem.chunks_mut(WORDS).enumerate() {
            for (j, w) in page.iter_mut().enumerate() {
                *w = pattern(i, j, seed);
            }
        }
    }
    if child {
        let _ = writeln!(out, "child ready {index}");
    } else {
        let _ = writeln!(out, "ready {mib}");
    }
    let _ = out.flush();
    let whose = if child {
        format!(" child {index}")
    } else {
        String::new()
    };
    let mut n: u64 = 0;
    // How long the last tick's line took to write, µs.
    let mut wrote_us = 0;
    loop {
        let asleep = Instant::now();
        std::thread::sleep(Duration::from_millis(tick_ms));
        let touching = Instant::now();
        n += 1;
        for k in 0..dirty {
            let seq = n as usize * dirty + k;
            mem[written_page(seq, pages) * WORDS + 1] = seq as u64 + 1;
        }
        if !child {
            // The tick's parts, which make up the gap from the last tick:
            // the last line's write, the sleep, the pages' writes.
            let slept_us = (touching - asleep).as_micros();
            let touch_us = touching.elapsed().as_micros();
            let writing = Instant::now();
            let _ = writeln!(
                out,
                "tick {n} {} {wrote_us} {slept_us} {touch_us}",
                now_ns()
            );
            let _ = out.flush();
            wrote_us = writing.elapsed().as_micros();
        }
        if VERIFY.swap(false, Ordering::Relaxed) {
            // Replay the writes so far: the value each page must hold.
            let mut last = std::collections::HashMap::new();
            for seq in dirty..(n as usize + 1) * dirty {
                last.insert(written_page(seq, pages), seq as u64 + 1);
            }
            let bad = mem.chunks(WORDS).enumerate().find_map(|(i, page)| {
                page.iter()
                    .enumerate()
                    .find(|(j, w)| {
                        let want = match (*j, last.get(&i)) {
                            (1, Some(v)) => *v,
                            _ => pattern(i, *j, seed),
                        };
                        **w != want
                    })
                    .map(|(j, _)| (i, j))
            });
            let file_ok = file.is_none_or(|(b, s)| sum(b) == s);
            let _ = match bad {
                None if !file_ok => writeln!(out, "verify FAIL mapped file{whose}"),
                None => {
                    if let Some(f) = jit {
                        let _ = writeln!(out, "jit {}", f());
                    }
                    writeln!(out, "verify ok {pages}{whose}\n{}", kernel_state())
                }
                Some((i, j)) => writeln!(out, "verify FAIL page {i} word {j}{whose}"),
            };
            let _ = out.flush();
        }
    }
}
