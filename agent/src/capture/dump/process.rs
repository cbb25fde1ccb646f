//! Process-wide state of the frozen process: what only the process can
//! say (read by syscalls injected into its main thread), the signals
//! queued for it, the pages that go eagerly, and what `/proc` says of its
//! identity.

use super::*;
use migrate_inject::calls::pr;

/// What the syscalls injected into the main thread read.
pub(super) struct Injected {
    pub(super) sigactions: Vec<SigAction>,
    pub(super) brk: u64,
    pub(super) dumpable: u32,
    pub(super) no_new_privs: bool,
    pub(super) itimers: Vec<ITimer>,
    pub(super) posix_timers: Vec<PosixTimer>,
    pub(super) personality: u32,
}

/// Reads, by syscalls injected into `task` (the main thread) writing to
/// `scratch`: the handlers of the signals in `handled`, `brk`, the
/// interval and POSIX timers, personality, dumpable, no_new_privs.
pub(super) fn injected_reads(
    pid: i32,
    task: &mut Seized,
    mem: &RemoteMem,
    scratch: u64,
    handled: u64,
) -> Result<Injected, DumpError> {
    let sigactions = sigactions(task, mem, scratch, handled)?;
    let brk = task.current_brk()?;
    let itimers = itimers(task, mem, scratch)?;
    let posix_timers = posix_timers(pid, task, mem, scratch)?;
    let personality = task.current_personality()?;
    let dumpable = task.prctl(pr::GET_DUMPABLE, 0)? as u32;
    let no_new_privs = task.prctl(pr::GET_NO_NEW_PRIVS, 0)? != 0;
    Ok(Injected {
        sigactions,
        brk,
        dumpable,
        no_new_privs,
        itimers,
        posix_timers,
        personality,
    })
}

/// The handler of every signal in `handled` (caught or ignored).
fn sigactions(
    task: &mut Seized,
    mem: &RemoteMem,
    scratch: u64,
    handled: u64,
) -> Result<Vec<SigAction>, DumpError> {
    let mut out = Vec::new();
    for signo in 1..=64u32 {
        if handled & (1u64 << (signo - 1)) == 0
            || signo == libc::SIGKILL as u32
            || signo == libc::SIGSTOP as u32
        {
            continue;
        }
        task.sigaction_into(signo, scratch)?;
        let mut b = [0u8; 32];
        mem.read(scratch, &mut b)?;
        out.push(SigAction {
            signo,
            handler: word(&b, 0),
            flags: word(&b, 1),
            restorer: word(&b, 2),
            mask: word(&b, 3),
        });
    }
    Ok(out)
}

/// The armed interval timers (`ITIMER_REAL`, `_VIRTUAL`, `_PROF`).
fn itimers(task: &mut Seized, mem: &RemoteMem, scratch: u64) -> Result<Vec<ITimer>, DumpError> {
    let mut out = Vec::new();
    for which in 0..3u32 {
        task.getitimer_into(which, scratch)?;
        let mut b = [0u8; 32];
        mem.read(scratch, &mut b)?;
        let us = |sec: u64, usec: u64| sec * 1_000_000 + usec;
        let t = ITimer {
            which,
            interval_us: us(word(&b, 0), word(&b, 1)),
            value_us: us(word(&b, 2), word(&b, 3)),
        };
        if t.value_us != 0 {
            out.push(t);
        }
    }
    Ok(out)
}

/// The POSIX timers `/proc/PID/timers` lists, each with its setting.
fn posix_timers(
    pid: i32,
    task: &mut Seized,
    mem: &RemoteMem,
    scratch: u64,
) -> Result<Vec<PosixTimer>, DumpError> {
    let text = fs::read_to_string(format!("/proc/{pid}/timers")).unwrap_or_default();
    let mut out = Vec::new();
    for t in procfs::parse_timers(&text) {
        task.timer_gettime_into(t.id, scratch)?;
        let mut b = [0u8; 32];
        mem.read(scratch, &mut b)?;
        let ns = |sec: u64, nsec: u64| sec * 1_000_000_000 + nsec;
        out.push(PosixTimer {
            id: t.id,
            clock: t.clock,
            signo: t.signo,
            sigval: t.sigval,
            notify: t.notify,
            target_tid: if t.notify & 4 != 0 { t.target } else { 0 },
            interval_ns: ns(word(&b, 0), word(&b, 1)),
            value_ns: ns(word(&b, 2), word(&b, 3)),
        });
    }
    Ok(out)
}

/// Signals queued for each thread, and (tid 0) for the whole process.
pub(super) fn queued_signals(tasks: &[Seized]) -> Result<Vec<QueuedSignal>, DumpError> {
    let mut out = Vec::new();
    for (i, t) in tasks.iter().enumerate() {
        let mut queues = vec![(t.tid(), t.queued_signals(false)?)];
        if i == 0 {
            queues.push((0, t.queued_signals(true)?));
        }
        for (tid, infos) in queues {
            out.extend(infos.into_iter().map(|info| QueuedSignal {
                tid,
                info: info.to_vec(),
            }));
        }
    }
    Ok(out)
}

/// What goes during the freeze beyond the eager set: each thread's stack
/// top, its thread control block (patched on restore if its id changes)
/// and its rseq area; a cooperating process's shim block (the destination
/// rewrites it before the process runs). `(address, pages)`.
pub(super) fn eager_addrs(
    coop: &Cooperation,
    opts: &MigrateOptions,
    threads: &[ThreadState],
    main: Regs,
) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = coop
        .shim
        .map(|a| (a & !(PAGE_SIZE - 1), 1))
        .into_iter()
        .collect();
    for t in threads {
        let r = Regs::from_words(&t.regs).unwrap_or(main);
        if opts.eager != EagerSet::None {
            out.push((
                r.0.rsp.saturating_sub(256) & !(PAGE_SIZE - 1),
                EAGER_STACK_PAGES,
            ));
        }
        if r.0.fs_base != 0 {
            out.push((r.0.fs_base & !(PAGE_SIZE - 1), 2));
        }
        if let Some(q) = t.rseq {
            out.push((q.addr & !(PAGE_SIZE - 1), 1));
        }
    }
    out
}

/// What `/proc` says of who and what the process is.
pub(super) struct Identity {
    pub(super) auxv: Vec<u8>,
    pub(super) exe: String,
    pub(super) cwd: String,
    pub(super) comm: String,
    pub(super) umask: u32,
    pub(super) creds: Creds,
    pub(super) rlimits: Vec<Rlimit>,
}

/// Reads [`Identity`] from `/proc/PID` (`status` read already).
pub(super) fn identity(pid: i32, status: &[(String, String)]) -> Result<Identity, DumpError> {
    let auxv = fs::read(format!("/proc/{pid}/auxv")).map_err(proc_err(pid, "auxv"))?;
    let exe = fs::read_link(format!("/proc/{pid}/exe"))
        .map_err(proc_err(pid, "exe"))?
        .to_string_lossy()
        .into_owned();
    let cwd = fs::read_link(format!("/proc/{pid}/cwd"))
        .map_err(proc_err(pid, "cwd"))?
        .to_string_lossy()
        .into_owned();
    let comm = fs::read_to_string(format!("/proc/{pid}/comm"))
        .map_err(proc_err(pid, "comm"))?
        .trim_end_matches('\n')
        .to_string();
    let umask = procfs::status_get(status, "Umask")
        .and_then(|v| u32::from_str_radix(v, 8).ok())
        .unwrap_or(0o022);
    let ids = |k| {
        let v = procfs::status_nums(status, k);
        [0, 1, 2].map(|i| v.get(i).copied().unwrap_or(0) as u32)
    };
    let creds = Creds {
        uid: ids("Uid"),
        gid: ids("Gid"),
        groups: procfs::status_nums(status, "Groups")
            .into_iter()
            .map(|g| g as u32)
            .collect(),
        caps: [
            procfs::status_hex(status, "CapInh"),
            procfs::status_hex(status, "CapPrm"),
            procfs::status_hex(status, "CapEff"),
        ],
    };
    let rlimits: Vec<Rlimit> = procfs::limits(pid)
        .map_err(proc_err(pid, "limits"))?
        .into_iter()
        .take(16)
        .map(|(cur, max)| Rlimit { cur, max })
        .collect();
    if rlimits.len() != 16 {
        return Err(DumpError::Proc {
            pid,
            what: "limits",
            source: std::io::Error::other(format!("{} limits listed, 16 expected", rlimits.len())),
        });
    }
    Ok(Identity {
        auxv,
        exe,
        cwd,
        comm,
        umask,
        creds,
        rlimits,
    })
}
