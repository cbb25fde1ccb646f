//! The stub: the process a rebuild starts from, this binary re-executed
//! as `migrate-agent __stub`. For a tree of processes, a tree of stubs:
//! each forked by its parent's stub with the pid, process group and
//! session planned for it ([`StubNode`]), so that parents, groups and
//! sessions are the kernel's own after the rebuild.

/// One process of a stub tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StubNode {
    /// The pid it must have.
    pub pid: i32,
    /// Its parent's index in the plan (before its own); the root has none.
    pub parent: Option<usize>,
    /// Leads a session of its own (`setsid`).
    pub session: bool,
    /// Joins or leads this process group (0: keeps its parent's). A group
    /// another node leads must be led by a node earlier in the plan.
    pub group: i32,
    /// Ends at once with this wait status and stays unreaped (a zombie).
    pub exit: Option<i32>,
}

/// The plan as one argument: `pid/parent/session/group/exit` per node,
/// `;` between nodes, `-` for no parent or no exit.
pub fn encode_plan(nodes: &[StubNode]) -> String {
    let opt = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
    nodes
        .iter()
        .map(|n| {
            format!(
                "{}/{}/{}/{}/{}",
                n.pid,
                opt(n.parent.map(|p| p as i64)),
                u8::from(n.session),
                n.group,
                opt(n.exit.map(i64::from))
            )
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// Reads a plan written by [`encode_plan`]; `None` if it is malformed or
/// a parent does not come before its child.
pub fn decode_plan(s: &str) -> Option<Vec<StubNode>> {
    let mut out: Vec<StubNode> = Vec::new();
    for node in s.split(';') {
        let f: Vec<&str> = node.split('/').collect();
        let [pid, parent, session, group, exit] = f[..] else {
            return None;
        };
        let parent = match parent {
            "-" => None,
            p => Some(p.parse::<usize>().ok().filter(|&p| p < out.len())?),
        };
        if parent.is_none() != out.is_empty() {
            return None;
        }
        out.push(StubNode {
            pid: pid.parse().ok()?,
            parent,
            session: session == "1",
            group: group.parse().ok()?,
            exit: match exit {
                "-" => None,
                e => Some(e.parse().ok()?),
            },
        });
    }
    Some(out)
}

/// The stub: fork once so that init parents the restored process, start a
/// new session, print the pid and sleep until the agent seizes us. Runs in
/// a freshly exec'd, single-threaded process. With a plan instead of a
/// pid, the root of a stub tree: see [`run_tree`].
pub fn run_stub() -> ! {
    let arg = std::env::args().nth(2).unwrap_or_default();
    if let Some(plan) = decode_plan(&arg) {
        run_tree(&plan);
    }
    let want: i32 = arg.parse().unwrap_or(0);
    // SAFETY: called first thing in `main` of a fresh single-threaded
    // process, so a fork-like clone3 cannot leave another thread's locks
    // held; the arguments point at live locals.
    let pid = unsafe { fork_with_pid(want, false) };
    if pid != 0 {
        // SAFETY: _exit is always safe to call; skips atexit handlers.
        unsafe { libc::_exit(if pid > 0 { 0 } else { 1 }) };
    }
    // SAFETY: plain syscalls with integer or valid string arguments.
    unsafe {
        libc::setsid();
        let me = libc::getpid();
        say(&format!("{me}\n"));
        sleep_forever()
    }
}

/// The root of a stub tree: forks itself as the plan's root (which leads
/// a new session), then each node's stub forks its children in plan
/// order. Every node prints `ok INDEX PID` once it stands as planned, or
/// `fail INDEX ERRNO` if its pid could not be had; zombies print before
/// they end. Stdout closes once every node has printed.
fn run_tree(plan: &[StubNode]) -> ! {
    // SAFETY: as in `run_stub`: a fresh single-threaded process.
    let pid = unsafe { fork_with_pid(plan[0].pid, true) };
    if pid != 0 {
        if pid < 0 {
            say(&format!("fail 0 {}\n", errno()));
        }
        // SAFETY: _exit is always safe to call; skips atexit handlers.
        unsafe { libc::_exit(if pid > 0 { 0 } else { 1 }) };
    }
    // SAFETY: setsid takes no arguments.
    unsafe { libc::setsid() };
    become_node(plan, 0)
}

/// Node `i`, forked: takes its group and session, prints, ends if it is a
/// zombie, else forks its children and sleeps.
fn become_node(plan: &[StubNode], i: usize) -> ! {
    let n = plan[i];
    if i > 0 {
        // SAFETY: setsid and setpgid take integer arguments.
        unsafe {
            if n.session {
                libc::setsid();
            } else if n.group != 0 {
                libc::setpgid(0, n.group);
            }
        }
    }
    // SAFETY: getpid takes no arguments.
    say(&format!("ok {i} {}\n", unsafe { libc::getpid() }));
    if let Some(status) = n.exit {
        end_with(status);
    }
    for (j, c) in plan.iter().enumerate().filter(|(_, c)| c.parent == Some(i)) {
        // SAFETY: every stub of the tree is single-threaded.
        let pid = unsafe { fork_with_pid(c.pid, true) };
        if pid == 0 {
            become_node(plan, j);
        }
        if pid < 0 {
            say(&format!("fail {j} {}\n", errno()));
        } else if !c.session && c.group != 0 {
            // Also from here, so that the group exists before the next
            // sibling joins it (a session leader must not be moved).
            // SAFETY: setpgid takes integer arguments.
            unsafe { libc::setpgid(pid, c.group) };
        }
    }
    // SAFETY: no arguments beyond integers.
    unsafe { sleep_forever() }
}

/// Ends this process with wait status `status`: killed by its signal
/// (default action, no core file), or exited with its code.
fn end_with(status: i32) -> ! {
    let sig = status & 0x7f;
    if sig != 0 {
        let none = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: integer arguments and a pointer to a live local; the
        // signal's default action ends the process.
        unsafe {
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            libc::signal(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::kill(libc::getpid(), sig);
        }
    }
    // SAFETY: _exit is always safe to call.
    unsafe { libc::_exit((status >> 8) & 0xff) }
}

/// Writes `line` to stdout, whole (one write, under PIPE_BUF).
fn say(line: &str) {
    // SAFETY: writes bytes of a live string.
    unsafe { libc::write(1, line.as_ptr().cast(), line.len()) };
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Lets go of stdout and sleeps until seized or killed.
///
/// # Safety
///
/// Plain syscalls; safe in any process.
unsafe fn sleep_forever() -> ! {
    // SAFETY: a valid string and integer arguments.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        libc::dup2(null, 1);
        loop {
            libc::pause();
        }
    }
}

/// fork(), as pid `want` when that pid is free in our pid namespace
/// (clone3 with `set_tid`); else as any pid, or, if `exact`, not at all
/// (-1, errno set).
///
/// # Safety
///
/// As fork(): the caller must be single-threaded.
unsafe fn fork_with_pid(want: i32, exact: bool) -> i32 {
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
        if r >= 0 || exact {
            return r as i32;
        }
    }
    // SAFETY: the caller guarantees a single-threaded process.
    unsafe { libc::fork() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_reads_back_as_written() {
        let plan = [
            StubNode {
                pid: 100,
                parent: None,
                session: true,
                group: 0,
                exit: None,
            },
            StubNode {
                pid: 101,
                parent: Some(0),
                session: false,
                group: 101,
                exit: Some(15),
            },
        ];
        let text = encode_plan(&plan);
        assert_eq!(text, "100/-/1/0/-;101/0/0/101/15");
        assert_eq!(decode_plan(&text).unwrap(), plan);
        // A child before its parent, a second root, garbage: refused.
        assert!(decode_plan("100/-/1/0/-;101/1/0/0/-").is_none());
        assert!(decode_plan("100/-/1/0/-;101/-/0/0/-").is_none());
        assert!(decode_plan("100/0/1/0/-").is_none());
        assert!(decode_plan("4242").is_none());
    }
}
