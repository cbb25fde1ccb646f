//! The stub: the process a rebuild starts from, this binary re-executed
//! as `migrate-agent __stub PID [own-pid-ns]`.
//!
//! With `own-pid-ns` the stub first makes a pid namespace of its own,
//! whose pid 1 (the placeholder init) forks the process to be rebuilt
//! there as pid `PID`: every id the process had is free in it. The
//! placeholder reaps what ends in the namespace and, when the process
//! ends, writes how on its standard output and exits (which ends the
//! namespace).

/// The stub: fork once so that init parents the restored process, start a
/// new session, print the pid and sleep until the agent seizes us. Runs in
/// a freshly exec'd, single-threaded process.
pub fn run_stub() -> ! {
    let want: i32 = std::env::args()
        .nth(2)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    if std::env::args().nth(3).as_deref() == Some("own-pid-ns") {
        run_in_own_pid_ns(want);
    }
    // SAFETY: called first thing in `main` of a fresh single-threaded
    // process, so a fork-like clone3 cannot leave another thread's locks
    // held; the arguments point at live locals.
    let pid = unsafe { fork_with_pid(want) };
    if pid != 0 {
        // SAFETY: _exit is always safe to call; skips atexit handlers.
        unsafe { libc::_exit(if pid > 0 { 0 } else { 1 }) };
    }
    // SAFETY: getpid has no arguments.
    let me = unsafe { libc::getpid() };
    become_stub(&format!("{me}\n"))
}

/// The stub proper: a new session, `line` told on stdout, then sleep.
fn become_stub(line: &str) -> ! {
    // SAFETY: plain syscalls with integer or valid string arguments.
    unsafe {
        libc::setsid();
        libc::write(1, line.as_ptr().cast(), line.len());
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        libc::dup2(null, 1);
        loop {
            libc::pause();
        }
    }
}

/// This process's pid as the agent sees it: `/proc` is the agent's, so
/// `/proc/self` names us in its pid namespace, not in ours.
fn outer_pid() -> i32 {
    std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

/// The stub in a pid namespace of its own: this launcher forks the
/// namespace's init and exits (the agent, a subreaper, inherits the
/// init); the init forks the stub as pid `want` there, which says "its
/// pid, the init's pid, its pid inside" (the first two as the agent sees
/// them), and then waits.
fn run_in_own_pid_ns(want: i32) -> ! {
    // SAFETY: single-threaded (see `run_stub`); the arguments point at
    // live locals.
    let init = unsafe { clone3_fork(u64::from(linux_raw_sys::general::CLONE_NEWPID), None) };
    if init != 0 {
        // SAFETY: _exit is always safe to call.
        unsafe { libc::_exit(if init > 0 { 0 } else { 1 }) };
    }
    let init_outer = outer_pid();
    // SAFETY: still single-threaded; pid 1 of the new namespace.
    let pid = unsafe { fork_with_pid(want) };
    if pid == 0 {
        // SAFETY: getpid has no arguments.
        let inner = unsafe { libc::getpid() };
        become_stub(&format!("{} {init_outer} {inner}\n", outer_pid()));
    }
    if pid < 0 {
        // SAFETY: _exit is always safe to call.
        unsafe { libc::_exit(1) };
    }
    placeholder_init(pid)
}

/// Pid 1 of the namespace: reaps whatever ends in it; when `process`
/// ends, says how ("exited N" or "killed S") on stdout and exits, which
/// ends the namespace.
fn placeholder_init(process: i32) -> ! {
    // SAFETY: plain syscalls; `status` is a valid out pointer.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        libc::dup2(null, 0);
        libc::dup2(null, 2);
        loop {
            let mut status = 0;
            let r = libc::waitpid(-1, &mut status, 0);
            if r == process {
                let line = if libc::WIFEXITED(status) {
                    format!("exited {}\n", libc::WEXITSTATUS(status))
                } else {
                    format!("killed {}\n", libc::WTERMSIG(status))
                };
                libc::write(1, line.as_ptr().cast(), line.len());
                libc::_exit(0);
            }
            if r < 0 && *libc::__errno_location() == libc::ECHILD {
                libc::_exit(0);
            }
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
        // SAFETY: as this function's.
        let r = unsafe { clone3_fork(0, Some(want)) };
        if r >= 0 {
            return r;
        }
    }
    // SAFETY: the caller guarantees a single-threaded process.
    unsafe { libc::fork() }
}

/// A fork by clone3 with `flags`, as pid `pid` (in the child's innermost
/// pid namespace) when given; -1 on failure.
///
/// # Safety
///
/// As fork(): the caller must be single-threaded.
unsafe fn clone3_fork(flags: u64, pid: Option<i32>) -> i32 {
    let tid = [pid.unwrap_or(0)];
    let args = linux_raw_sys::general::clone_args {
        flags,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: if pid.is_some() {
            tid.as_ptr() as u64
        } else {
            0
        },
        set_tid_size: u64::from(pid.is_some()),
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
    if r < 0 {
        -1
    } else {
        r as i32
    }
}
