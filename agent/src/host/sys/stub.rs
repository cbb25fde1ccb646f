//! The stub: the process a rebuild starts from, this binary re-executed
//! as `migrate-agent __stub`.

/// The stub: fork once so that init parents the restored process, start a
/// new session, print the pid and sleep until the agent seizes us. Runs in
/// a freshly exec'd, single-threaded process.
pub fn run_stub() -> ! {
    let want: i32 = std::env::args()
        .nth(2)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: called first thing in `main` of a fresh single-threaded
    // process, so a fork-like clone3 cannot leave another thread's locks
    // held; the arguments point at live locals.
    let pid = unsafe { fork_with_pid(want) };
    if pid != 0 {
        // SAFETY: _exit is always safe to call; skips atexit handlers.
        unsafe { libc::_exit(if pid > 0 { 0 } else { 1 }) };
    }
    // SAFETY: plain syscalls with integer or valid string arguments.
    unsafe {
        libc::setsid();
        let me = libc::getpid();
        let line = format!("{me}\n");
        libc::write(1, line.as_ptr().cast(), line.len());
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        libc::dup2(null, 1);
        loop {
            libc::pause();
        }
    }
}

/// fork(), as pid `want` when that pid is free in our pid namespace
/// (clone3 with `set_tid`), else as any pid.
///
/// # Safety
///
/// As fork(): the caller must be single-threaded.
unsafe fn fork_with_pid(want: i32) -> i32 {
    if want > 1 {
        let tid = [want];
        let args = linux_raw_sys::general::clone_args {
            flags: 0,
            pidfd: 0,
            child_tid: 0,
            parent_tid: 0,
            exit_signal: libc::SIGCHLD as u64,
            stack: 0,
            stack_size: 0,
            tls: 0,
            set_tid: tid.as_ptr() as u64,
            set_tid_size: 1,
            cgroup: 0,
        };
        // SAFETY: `args` and `tid` live across the call; no CLONE_VM, so the
        // child continues on a copy of this stack like after fork().
        let r = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const linux_raw_sys::general::clone_args,
                std::mem::size_of_val(&args),
            )
        };
        if r >= 0 {
            return r as i32;
        }
    }
    // SAFETY: the caller guarantees a single-threaded process.
    unsafe { libc::fork() }
}
