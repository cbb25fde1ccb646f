//! Freeze and dump: stop the process with ptrace and collect its image.
//!
//! Order: seize, read registers, inject the few syscalls that read state
//! `/proc` does not show (exact `brk`, signal dispositions, the
//! `clear_child_tid` address) through scratch memory (dead stack below the
//! main thread's, or a page unmapped again), then read the memory map and
//! classify every page with
//! `/proc/<pid>/pagemap`.

use std::fs;
use std::os::fd::OwnedFd;

use migrate_inject::{InjectError, Regs, RemoteMem, ReturnPath, Seized};
use migrate_proto::image::{
    AltStack, Creds, Fill, ITimer, MmFields, MmState, PageRun, PosixTimer, ProcessImage,
    QueuedSignal, Rlimit, Rseq, ShippedFile, SigAction, TcpPolicy, ThreadState, Vma, VmaKind,
};
use migrate_proto::msg::{EagerSet, MigrateOptions, Mode};
use migrate_proto::PAGE_SIZE;

use tracing::debug;

use crate::capture::dirty::{DirtyError, DirtyTracker};
use crate::capture::preflight::{self, Refusal};
use crate::host::access::Caller;
use crate::host::kinds;
use crate::host::procfs;
use crate::host::sys;
use crate::postcopy::pageset::PageSet;

/// Errors while freezing or dumping.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// ptrace or injection failed.
    #[error("freezing the process failed")]
    Inject(#[from] InjectError),
    /// Reading procfs failed.
    #[error("reading /proc/{pid}/{what} failed")]
    Proc {
        /// Pid.
        pid: i32,
        /// File.
        what: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The process changed between pre-flight and freeze.
    #[error("process changed before the freeze: {}", .0.0.join("; "))]
    Refused(Refusal),
    /// No `syscall` instruction to inject from.
    #[error("no vDSO found in process {0}: cannot inject syscalls")]
    NoVdso(i32),
    /// The last dirty-page scan failed.
    #[error("reading the pages written since pre-copy")]
    Dirty(#[from] DirtyError),
    /// A failpoint failed the dump.
    #[error(transparent)]
    Failpoint(#[from] crate::failpoints::Injected),
}

impl From<crate::fd::FdError> for DumpError {
    fn from(e: crate::fd::FdError) -> DumpError {
        use crate::fd::FdError;
        match e {
            FdError::Proc { pid, what, source } => DumpError::Proc { pid, what, source },
            FdError::Refused(why) => DumpError::Refused(Refusal(vec![why])),
            other => DumpError::Proc {
                pid: 0,
                what: "fd",
                source: std::io::Error::other(other.to_string()),
            },
        }
    }
}

/// A frozen process and its image.
pub struct Frozen {
    /// The stopped threads, the leader first (they resume on drop).
    pub tasks: Vec<Seized>,
    /// Its memory, for serving pages.
    pub mem: RemoteMem,
    /// The image.
    pub image: ProcessImage,
    /// Our copies of the TCP connections `--tcp close` ends: reset at the
    /// commit, so that a migration that fails before it leaves them alone.
    pub to_reset: Vec<OwnedFd>,
}

const PR_GET_TID_ADDRESS: u64 = 40;
const PR_GET_DUMPABLE: u64 = 3;
const PR_GET_PDEATHSIG: u64 = 2;
const PR_GET_NO_NEW_PRIVS: u64 = 39;
/// What a cooperating process adds to its dump.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cooperation {
    /// Address of its shim's state block, shipped with the eager pages.
    pub shim: Option<u64>,
    /// What its established TCP connections become.
    pub tcp: TcpPolicy,
}

/// Where injected syscalls write what they read.
#[derive(Debug, Clone, Copy)]
enum Scratch {
    /// Dead stack below the main thread's: nothing to undo.
    Stack(u64),
    /// A page mapped for it, unmapped afterwards.
    Page(u64),
}

impl Scratch {
    fn addr(self) -> u64 {
        match self {
            Scratch::Stack(a) | Scratch::Page(a) => a,
        }
    }
}

/// Bytes of scratch the injected reads need (the largest, `struct
/// sigaction` and `itimerspec`, take 32).
const SCRATCH_LEN: u64 = 64;

/// Scratch memory in the main stack below the main thread's stack pointer
/// and its red zone: memory the program cannot count on (the kernel
/// writes signal frames there whenever it likes), so using it changes
/// nothing the program sees, and abandoning it leaves nothing behind.
/// Only when that thread's stack pointer is in the main stack (`[stack]`,
/// not a thread's or a runtime's own stack, nor a signal stack, where what
/// lies below may be live) and the bytes are there and writable. Returns
/// the scratch and the bottom of the stack (the dead space below the
/// scratch, where the way back's frames go, is down to it).
fn stack_scratch(regs: &Regs, maps: &[procfs::MapsEntry], mem: &RemoteMem) -> Option<(u64, u64)> {
    const RED_ZONE: u64 = 128;
    let sp = regs.0.rsp;
    let stack = maps
        .iter()
        .find(|m| m.path == "[stack]" && m.start <= sp && sp < m.end)?;
    let at = sp.checked_sub(RED_ZONE + SCRATCH_LEN)? & !15;
    if at < stack.start {
        return None;
    }
    mem.write(at, &[0u8; SCRATCH_LEN as usize]).ok()?;
    Some((at, stack.start))
}

/// Gives every task's injected syscalls a way back through a frame in the
/// dead stack below the scratch at `scratch` (down to `floor`), so that an
/// agent dying inside one leaves the process as it was
/// ([`migrate_inject::frame`]). Tasks it cannot be given to keep the
/// fallback: the kernel kills the process rather than let it run from an
/// injection's registers.
fn give_way_back(
    pid: i32,
    tasks: &mut [Seized],
    mem: &RemoteMem,
    vdso: (u64, u64),
    sigreturn: Option<u64>,
    status: &[(String, String)],
    (scratch, floor): (u64, u64),
) {
    let shadow_stack = procfs::status_get(status, "x86_Thread_features")
        .is_some_and(|f| f.split_whitespace().any(|f| f == "shstk"));
    let path = (|| {
        if shadow_stack {
            return Err("it uses a shadow stack".to_string());
        }
        let sigreturn = sigreturn
            .filter(|&g| migrate_inject::is_sigreturn_gadget(mem, g))
            .ok_or("no rt_sigreturn gadget in its code")?;
        let (site, leave) = migrate_inject::returning_site(mem, vdso)
            .ok_or("no syscall in its vDSO returns straight away")?;
        Ok(ReturnPath {
            site,
            leave,
            sigreturn,
        })
    })();
    let path = match path {
        Ok(p) => p,
        Err(why) => {
            debug!(pid, why, "no way back out of injected syscalls");
            return;
        }
    };
    for t in tasks {
        if let Err(e) = t.set_way_back(path, floor, scratch, mem) {
            debug!(pid, tid = t.tid(), error = %e, "no way back out of injected syscalls");
        }
    }
}

/// Inside each syscall injected into the original: the failpoint there.
fn in_syscall() -> Result<(), String> {
    crate::failpoints::hit("source.dump.in-syscall").map_err(|e| e.to_string())
}

/// Pages above the stack pointer shipped eagerly.
const EAGER_STACK_PAGES: u64 = 16;

fn proc_err(pid: i32, what: &'static str) -> impl FnOnce(std::io::Error) -> DumpError {
    move |source| DumpError::Proc { pid, what, source }
}

/// What the dump reads of a process just before the freeze, while it
/// still runs, because reading it walks every page table (milliseconds
/// per GiB, which would otherwise count as downtime): the `madvise` flags
/// of its mappings (`smaps`) and the pages it holds. Used by the dump only
/// if the frozen process's mappings are exactly those seen around the
/// read. A flag changed on a whole mapping between this read and the
/// freeze (within milliseconds) is the one thing it can miss; pages are
/// checked again where it found none (see [`pages_since`]).
pub struct RunningScan {
    maps: Vec<procfs::MapsEntry>,
    advice: std::collections::HashMap<u64, Vec<u32>>,
    /// Per private mapping (by start): the ranges of pages it held.
    pages: std::collections::HashMap<u64, Vec<(u64, u64)>>,
}

impl RunningScan {
    /// Reads `pid`'s advice and pages; `None` if its mappings changed
    /// meanwhile.
    pub fn take(pid: i32) -> Option<RunningScan> {
        let before = procfs::maps(pid).ok()?;
        let advice = procfs::advice(pid).ok()?;
        let pagemap = fs::File::open(format!("/proc/{pid}/pagemap")).ok()?;
        let mut buf = Vec::new();
        let mut pages = std::collections::HashMap::new();
        for m in &before {
            let Some(anonymous) = copies_pages(m) else {
                continue;
            };
            if let Ok(held) = procfs::needed_pages(&pagemap, m.start, m.end, anonymous, &mut buf) {
                pages.insert(m.start, held);
            }
        }
        let after = procfs::maps(pid).ok()?;
        (before == after).then_some(RunningScan {
            maps: after,
            advice,
            pages,
        })
    }
}

/// What the dump looks up while the process still runs, so that the
/// freeze does not wait for it.
pub struct Scouted {
    /// Advice and pages, if the mappings held still.
    pub running: Option<RunningScan>,
    /// An `rt_sigreturn` gadget in the process's code, for the way back
    /// out of injected syscalls ([`migrate_inject::frame`]); checked again
    /// once frozen.
    pub sigreturn: Option<u64>,
}

/// Bytes of code searched for an `rt_sigreturn` gadget at most (the C
/// library's is found in its first few hundred KiB).
const GADGET_SEARCH: u64 = 64 << 20;

impl Scouted {
    /// Scouts `pid`.
    pub fn take(pid: i32) -> Scouted {
        let sigreturn = (|| {
            let maps = procfs::maps(pid).ok()?;
            let mem = RemoteMem::open(pid).ok()?;
            // The C library first: its `__restore_rt` is the usual find.
            let mut code: Vec<&procfs::MapsEntry> =
                maps.iter().filter(|m| m.perms.contains('x')).collect();
            code.sort_by_key(|m| !m.path.contains("/libc"));
            let ranges: Vec<(u64, u64)> = code.iter().map(|m| (m.start, m.end)).collect();
            migrate_inject::sigreturn_gadget(&mem, &ranges, GADGET_SEARCH)
        })();
        Scouted {
            running: RunningScan::take(pid),
            sigreturn,
        }
    }
}

/// Whether the dump copies the pages mapping `m` holds (private memory,
/// anonymous or of a file: not shared memory, not the kernel's vDSO pages),
/// and if so whether it is anonymous. The running scan and the dump follow
/// this one rule.
fn copies_pages(m: &procfs::MapsEntry) -> Option<bool> {
    (!m.shared() && !kinds::is_vdso(&m.path) && m.path != "[vsyscall]").then(|| kinds::is_anon(m))
}

/// Most holes of a running scan looked at again in one mapping; beyond,
/// the whole mapping is scanned at once.
const MAX_HOLES: usize = 64;

/// The pages of the mapping `[start, end)` to copy, knowing it held
/// `held` while running: a page it held then and dropped since reads as
/// zeros (copied for nothing, rarely), but a page it touched since lies
/// in a hole of `held`, and only the holes are scanned again. For a
/// process whose memory is dense that is next to nothing, however large.
fn pages_since(
    pagemap: &fs::File,
    (start, end): (u64, u64),
    anonymous: bool,
    held: &[(u64, u64)],
    buf: &mut Vec<u8>,
) -> std::io::Result<Vec<(u64, u64)>> {
    let mut holes = Vec::new();
    let mut at = start;
    for &(a, b) in held {
        if a > at {
            holes.push((at, a));
        }
        at = at.max(b);
    }
    if at < end {
        holes.push((at, end));
    }
    if holes.len() > MAX_HOLES {
        return procfs::needed_pages(pagemap, start, end, anonymous, buf);
    }
    let mut all: Vec<(u64, u64)> = held.to_vec();
    for (a, b) in holes {
        all.extend(procfs::needed_pages(pagemap, a, b, anonymous, buf)?);
    }
    all.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(all.len());
    for (a, b) in all {
        match merged.last_mut() {
            Some(l) if l.1 >= a => l.1 = l.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    Ok(merged)
}

/// Freezes `pid` and collects its image. On error the process is resumed
/// (the `Seized` guard detaches on drop).
///
/// With a `tracker` (pre-copy), pages the destination already holds and
/// the process has not written since are marked [`Fill::Stored`].
pub fn freeze_and_dump(
    pid: i32,
    caller: &Caller,
    opts: &MigrateOptions,
    ship: &[(i32, bool)],
    tracker: Option<&mut DirtyTracker>,
    scouted: Scouted,
    coop: &Cooperation,
) -> Result<Frozen, DumpError> {
    let Scouted { running, sigreturn } = scouted;
    let t0 = std::time::Instant::now();
    let step = |what: &str| debug!(pid, us = t0.elapsed().as_micros() as u64, "dump: {what}");
    step("seizing");
    let mut tasks = freeze_threads(pid)?;
    step("frozen");
    // Every system call made inside the process below is two wake-ups;
    // on one CPU they are cheap. Dropped (affinity back) before `tasks`;
    // if the agent dies first, the next one gives it back.
    let tids: Vec<i32> = tasks.iter().map(|t| t.tid()).collect();
    let pin = crate::host::lent::lend(pid, &tids);
    // The process may have changed since pre-flight: check again, frozen.
    preflight::inspect(pid, caller, sys::getpid(), true, coop.tcp).map_err(DumpError::Refused)?;
    step("checked again");
    let stored = match tracker {
        Some(t) => Some(t.clean()?),
        None => None,
    };
    let mem = RemoteMem::open(pid)?;
    let maps0 = procfs::maps(pid).map_err(proc_err(pid, "maps"))?;
    let vdso = procfs::vdso_range(&maps0).ok_or(DumpError::NoVdso(pid))?;
    let (insn, vdso_hash) =
        migrate_inject::syscall_site(&mem, vdso).ok_or(DumpError::NoVdso(pid))?;
    for t in &mut tasks {
        t.set_syscall_insn(insn);
        t.set_midway(in_syscall);
    }
    let status = procfs::status(pid).map_err(proc_err(pid, "status"))?;
    let handled = procfs::status_hex(&status, "SigCgt") | procfs::status_hex(&status, "SigIgn");

    // Injected reads through scratch memory: dead stack below the main
    // thread's, or (without room there) a page mapped for it and unmapped
    // before the maps are read. With dead stack, the way back out of
    // injected syscalls goes below it.
    let scratch = match stack_scratch(&tasks[0].regs(), &maps0, &mem) {
        Some(stack) => {
            give_way_back(pid, &mut tasks, &mem, vdso, sigreturn, &status, stack);
            Scratch::Stack(stack.0)
        }
        None => Scratch::Page(tasks[0].syscall(
            libc::SYS_mmap,
            [
                0,
                PAGE_SIZE,
                (libc::PROT_READ | libc::PROT_WRITE) as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
                u64::MAX,
                0,
            ],
        )?),
    };
    let scratch_at = scratch.addr();
    step("injecting");
    let injected = (|| -> Result<_, DumpError> {
        crate::failpoints::hit("source.dump.injecting")?;
        let mut threads = Vec::with_capacity(tasks.len());
        for t in tasks.iter_mut() {
            threads.push(thread_state(pid, t, &mem, scratch_at)?);
        }
        let task = &mut tasks[0];
        let mut sigactions = Vec::new();
        for signo in 1..=64u32 {
            if handled & (1u64 << (signo - 1)) == 0
                || signo == libc::SIGKILL as u32
                || signo == libc::SIGSTOP as u32
            {
                continue;
            }
            task.syscall(
                libc::SYS_rt_sigaction,
                [u64::from(signo), 0, scratch_at, 8, 0, 0],
            )?;
            let mut b = [0u8; 32];
            mem.read(scratch_at, &mut b)?;
            sigactions.push(SigAction {
                signo,
                handler: word(&b, 0),
                flags: word(&b, 1),
                restorer: word(&b, 2),
                mask: word(&b, 3),
            });
        }
        let brk = task.syscall(libc::SYS_brk, [0; 6])?;
        let mut itimers = Vec::new();
        for which in 0..3u32 {
            task.syscall(
                libc::SYS_getitimer,
                [u64::from(which), scratch_at, 0, 0, 0, 0],
            )?;
            let mut b = [0u8; 32];
            mem.read(scratch_at, &mut b)?;
            let us = |sec: u64, usec: u64| sec * 1_000_000 + usec;
            let t = ITimer {
                which,
                interval_us: us(word(&b, 0), word(&b, 1)),
                value_us: us(word(&b, 2), word(&b, 3)),
            };
            if t.value_us != 0 {
                itimers.push(t);
            }
        }
        let text = fs::read_to_string(format!("/proc/{pid}/timers")).unwrap_or_default();
        let mut posix_timers = Vec::new();
        for t in procfs::parse_timers(&text) {
            task.syscall(
                libc::SYS_timer_gettime,
                [t.id as u64, scratch_at, 0, 0, 0, 0],
            )?;
            let mut b = [0u8; 32];
            mem.read(scratch_at, &mut b)?;
            let ns = |sec: u64, nsec: u64| sec * 1_000_000_000 + nsec;
            posix_timers.push(PosixTimer {
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
        let personality = task.syscall(libc::SYS_personality, [0xffff_ffff, 0, 0, 0, 0, 0])? as u32;
        let dumpable = task.syscall(libc::SYS_prctl, [PR_GET_DUMPABLE, 0, 0, 0, 0, 0])? as u32;
        let no_new_privs =
            task.syscall(libc::SYS_prctl, [PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0, 0])? != 0;
        let extra = (itimers, posix_timers, personality);
        Ok((threads, sigactions, brk, dumpable, no_new_privs, extra))
    })();
    if let Scratch::Page(page) = scratch {
        tasks[0].syscall(libc::SYS_munmap, [page, PAGE_SIZE, 0, 0, 0, 0])?;
    }
    drop(pin);
    let (threads, sigactions, brk, dumpable, no_new_privs, (itimers, posix_timers, personality)) =
        injected?;
    let regs = tasks[0].regs();
    let rseq = threads[0].rseq;
    let mut queued_signals = Vec::new();
    for (i, t) in tasks.iter().enumerate() {
        let mut queues = vec![(t.tid(), t.queued_signals(false)?)];
        if i == 0 {
            queues.push((0, t.queued_signals(true)?));
        }
        for (tid, infos) in queues {
            queued_signals.extend(infos.into_iter().map(|info| QueuedSignal {
                tid,
                info: info.to_vec(),
            }));
        }
    }

    let maps = procfs::maps(pid).map_err(proc_err(pid, "maps"))?;
    let stat = procfs::stat_fields(pid).map_err(proc_err(pid, "stat"))?;
    let f = |n| procfs::stat_field(&stat, n);
    let fields = MmFields {
        start_code: f(26),
        end_code: f(27),
        start_stack: f(28),
        start_data: f(45),
        end_data: f(46),
        start_brk: f(47),
        brk,
        arg_start: f(48),
        arg_end: f(49),
        env_start: f(50),
        env_end: f(51),
    };
    // Each thread's stack top, its thread control block (patched on
    // restore if its id changes) and its rseq area go during the freeze.
    let _ = (regs, rseq);
    // A cooperating process's shim block goes too: the destination
    // rewrites it before the process runs.
    let mut eager_addrs: Vec<(u64, u64)> = coop
        .shim
        .map(|a| (a & !(PAGE_SIZE - 1), 1))
        .into_iter()
        .collect();
    for t in &threads {
        let r = Regs::from_words(&t.regs).unwrap_or(regs);
        if opts.eager != EagerSet::None {
            eager_addrs.push((
                r.0.rsp.saturating_sub(256) & !(PAGE_SIZE - 1),
                EAGER_STACK_PAGES,
            ));
        }
        if r.0.fs_base != 0 {
            eager_addrs.push((r.0.fs_base & !(PAGE_SIZE - 1), 2));
        }
        if let Some(q) = t.rseq {
            eager_addrs.push((q.addr & !(PAGE_SIZE - 1), 1));
        }
    }
    step("thread and process state");
    let tid_offset = find_tid_offset(&mem, &threads);
    let (advice, held) = match running {
        Some(r) if r.maps == maps => (r.advice, r.pages),
        _ => {
            step("mappings changed since the running scan: reading them again");
            let advice = procfs::advice(pid).map_err(proc_err(pid, "smaps"))?;
            (advice, Default::default())
        }
    };
    let vmas = collect_vmas(
        pid,
        &maps,
        &eager_addrs,
        opts,
        stored.as_ref(),
        &advice,
        &held,
    )?;
    step("pages sorted");

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
    let umask = procfs::status_get(&status, "Umask")
        .and_then(|v| u32::from_str_radix(v, 8).ok())
        .unwrap_or(0o022);
    let ids = |k| {
        let v = procfs::status_nums(&status, k);
        [0, 1, 2].map(|i| v.get(i).copied().unwrap_or(0) as u32)
    };
    let creds = Creds {
        uid: ids("Uid"),
        gid: ids("Gid"),
        groups: procfs::status_nums(&status, "Groups")
            .into_iter()
            .map(|g| g as u32)
            .collect(),
        caps: [
            procfs::status_hex(&status, "CapInh"),
            procfs::status_hex(&status, "CapPrm"),
            procfs::status_hex(&status, "CapEff"),
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
    step("memory map and pages");
    let crate::fd::Dumped {
        fds,
        pipes,
        memfds,
        to_reset,
    } = crate::fd::dump_all(pid, &maps, coop.tcp)?;
    step("descriptors");

    let image = ProcessImage {
        pid,
        ppid: f(4) as i32,
        comm,
        exe,
        cwd,
        umask,
        threads,
        mm: MmState { vmas, fields, auxv },
        sigactions,
        rlimits,
        creds,
        fds,
        vdso_hash,
        tid_offset,
        dumpable,
        no_new_privs,
        personality,
        itimers,
        posix_timers,
        queued_signals,
        pipes,
        memfds,
        shipped: ship_files(pid, ship)?,
        deputy: false,
        lineage: Default::default(),
    };
    Ok(Frozen {
        tasks,
        mem,
        image,
        to_reset,
    })
}

fn word(b: &[u8], i: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[i * 8..i * 8 + 8]);
    u64::from_le_bytes(a)
}

/// What the files open at descriptors `fds` are (deleted files too), for
/// a destination that lacks them; their content is read later, as it is
/// sent. `fds`: (descriptor, ship as a private unlinked copy).
fn ship_files(pid: i32, fds: &[(i32, bool)]) -> Result<Vec<ShippedFile>, DumpError> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for &(fd, private) in fds {
        let link = fs::read_link(format!("/proc/{pid}/fd/{fd}"))
            .map_err(proc_err(pid, "fd"))?
            .to_string_lossy()
            .into_owned();
        let (path, deleted) = match link.strip_suffix(" (deleted)") {
            Some(p) => (p.to_string(), true),
            None => (link, private),
        };
        let md = fs::metadata(format!("/proc/{pid}/fd/{fd}")).map_err(proc_err(pid, "fd"))?;
        out.push(ShippedFile {
            fd,
            path,
            deleted,
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            size: md.len(),
        });
    }
    Ok(out)
}

/// The object behind a mapping, through `/proc/<pid>/map_files`.
fn map_file(pid: i32, m: &procfs::MapsEntry) -> Result<fs::File, DumpError> {
    fs::File::open(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end))
        .map_err(proc_err(pid, "map_files"))
}

/// Glibc's `struct pthread` offset of `tid` on x86_64 (2.26 to 2.40): the
/// tie-breaker when several offsets hold every thread's id.
const GLIBC_TID_OFFSET: u64 = 0x2d0;

/// Finds the offset from the thread pointer at which every thread's
/// control block holds that thread's id (the thread library's cached id).
fn find_tid_offset(mem: &RemoteMem, threads: &[ThreadState]) -> Option<u64> {
    // struct pthread sits at the very top of a thread's stack mapping:
    // scan a window small enough to stay inside it.
    const SCAN: usize = 1024;
    let mut candidates: Option<Vec<u64>> = None;
    for t in threads {
        let fs = Regs::from_words(&t.regs)?.0.fs_base;
        if fs == 0 {
            return None;
        }
        let mut buf = vec![0u8; SCAN];
        mem.read(fs, &mut buf).ok()?;
        let here: Vec<u64> = (0..SCAN / 4)
            .filter(|i| buf[i * 4..i * 4 + 4] == t.tid.to_le_bytes())
            .map(|i| (i * 4) as u64)
            .collect();
        candidates = Some(match candidates {
            None => here,
            Some(c) => c.into_iter().filter(|o| here.contains(o)).collect(),
        });
    }
    let c = candidates?;
    match c.as_slice() {
        [one] => Some(*one),
        many if many.contains(&GLIBC_TID_OFFSET) => Some(GLIBC_TID_OFFSET),
        _ => None,
    }
}

/// Seizes every thread of `pid`, again and again until no new one
/// appears (a thread may clone until it is stopped itself).
fn freeze_threads(pid: i32) -> Result<Vec<Seized>, DumpError> {
    let mut tasks: Vec<Seized> = Vec::new();
    for _ in 0..100 {
        let tids = procfs::tids(pid).map_err(proc_err(pid, "task"))?;
        let mut new = false;
        for tid in tids {
            if tasks.iter().any(|t| t.tid() == tid) {
                continue;
            }
            match Seized::seize(tid) {
                Ok(mut t) => {
                    t.set_tgid(pid);
                    tasks.push(t);
                    new = true;
                }
                // A thread that exited between the listing and the seize.
                Err(_) if tid != pid => continue,
                Err(e) => return Err(e.into()),
            }
        }
        if !new {
            return Ok(tasks);
        }
    }
    Err(DumpError::Refused(Refusal(vec![format!(
        "process {pid} keeps creating threads faster than they can be stopped"
    )])))
}

/// Registers and the per-thread kernel state of one stopped thread; the
/// parts only the thread itself can read are read by injected syscalls
/// through `scratch`.
fn thread_state(
    pid: i32,
    t: &mut Seized,
    mem: &RemoteMem,
    scratch: u64,
) -> Result<ThreadState, DumpError> {
    let tid = t.tid();
    let regs = t.regs();
    let xstate = t.xstate()?;
    let sigmask = t.sigmask()?;
    let rseq = t.rseq()?.map(|(addr, len, sig)| Rseq { addr, len, sig });
    let robust_list = sys::get_robust_list(tid).map_err(proc_err(pid, "robust_list"))?;
    t.syscall(libc::SYS_prctl, [PR_GET_TID_ADDRESS, scratch, 0, 0, 0, 0])?;
    let mut w = [0u8; 8];
    mem.read(scratch, &mut w)?;
    let clear_child_tid = u64::from_le_bytes(w);
    t.syscall(libc::SYS_prctl, [PR_GET_PDEATHSIG, scratch, 0, 0, 0, 0])?;
    let mut d = [0u8; 4];
    mem.read(scratch, &mut d)?;
    let pdeathsig = i32::from_le_bytes(d);
    t.syscall(libc::SYS_sigaltstack, [0, scratch, 0, 0, 0, 0])?;
    let mut st = [0u8; 24];
    mem.read(scratch, &mut st)?;
    // stack_t: ss_sp, ss_flags (int, padded), ss_size.
    let flags = word(&st, 1) as u32;
    let altstack = (flags & libc::SS_DISABLE as u32 == 0).then(|| AltStack {
        sp: word(&st, 0),
        flags: flags & !(libc::SS_ONSTACK as u32),
        size: word(&st, 2),
    });
    let name = fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
        .map_err(proc_err(pid, "task/comm"))?
        .trim_end_matches('\n')
        .to_string();
    Ok(ThreadState {
        tid,
        name,
        regs: regs.for_resume_elsewhere().to_words(),
        xstate,
        sigmask,
        rseq,
        robust_list,
        clear_child_tid,
        altstack,
        pdeathsig,
    })
}

fn collect_vmas(
    pid: i32,
    maps: &[procfs::MapsEntry],
    eager: &[(u64, u64)],
    opts: &MigrateOptions,
    stored: Option<&PageSet>,
    advice: &std::collections::HashMap<u64, Vec<u32>>,
    held: &std::collections::HashMap<u64, Vec<(u64, u64)>>,
) -> Result<Vec<Vma>, DumpError> {
    let mut budget = match opts.eager {
        EagerSet::Dirty => opts.eager_budget_pages,
        _ => 0,
    };
    let pagemap =
        fs::File::open(format!("/proc/{pid}/pagemap")).map_err(proc_err(pid, "pagemap"))?;
    let mut out = Vec::with_capacity(maps.len());
    let mut buf = Vec::new();
    for m in maps {
        let kind = if kinds::is_vdso(&m.path) {
            VmaKind::Vdso(m.path.clone())
        } else if m.path == "[vsyscall]" {
            VmaKind::Vsyscall
        } else if kinds::is_anon(m) {
            VmaKind::Anon
        } else if kinds::is_shmem(m) {
            let f = map_file(pid, m)?;
            let size = f.metadata().map_err(proc_err(pid, "map_files"))?.len();
            VmaKind::Shmem {
                inode: m.inode,
                memfd: kinds::memfd_name(&m.path).map(String::from),
                offset: m.offset,
                size,
            }
        } else {
            let md = fs::metadata(&m.path).map_err(proc_err(pid, "map_files"))?;
            VmaKind::File {
                path: m.path.clone(),
                offset: m.offset,
                ident: kinds::file_ident(&md),
            }
        };
        let mut vma = Vma {
            start: m.start,
            end: m.end,
            prot: m.prot(),
            shared: m.shared(),
            growsdown: m.path == "[stack]",
            advice: advice.get(&m.start).cloned().unwrap_or_default(),
            kind,
            pages: Vec::new(),
        };
        if let VmaKind::Shmem { offset, .. } = vma.kind {
            // Every populated page of the object within the mapping, eager.
            let f = map_file(pid, m)?;
            for (a, b) in sys::data_ranges(&f, offset, offset + (m.end - m.start)) {
                vma.pages.push(PageRun {
                    first: (a - offset) / PAGE_SIZE,
                    count: (b - a).div_ceil(PAGE_SIZE),
                    fill: Fill::Eager,
                });
            }
            out.push(vma);
            continue;
        }
        if let Some(anonymous) = copies_pages(m) {
            let needed = match held.get(&m.start) {
                Some(h) => pages_since(&pagemap, (m.start, m.end), anonymous, h, &mut buf),
                None => procfs::needed_pages(&pagemap, m.start, m.end, anonymous, &mut buf),
            }
            .map_err(proc_err(pid, "pagemap"))?;
            let sorting = Sorting {
                // File-backed private pages cannot be registered with
                // userfaultfd (MISSING mode is anonymous-only): always eager.
                all_eager: !anonymous,
                none_lazy: matches!(opts.mode, Mode::StopCopy | Mode::PreCopy),
                eager,
                stored,
            };
            vma.pages = sorting.runs(m.start, &needed, &mut budget);
        }
        out.push(vma);
    }
    Ok(out)
}

/// How the pages a mapping holds travel: eager (in the freeze), stored
/// (pre-copied and still current) or lazy (after the resume).
struct Sorting<'a> {
    /// Every page eager (file-backed private pages).
    all_eager: bool,
    /// Every page not stored eager (stop-copy, pre-copy).
    none_lazy: bool,
    /// Pages needed while rebuilding (stacks, thread blocks, rseq areas,
    /// the shim's block): (page address, count); they may overlap.
    eager: &'a [(u64, u64)],
    /// Pages the destination already holds.
    stored: Option<&'a PageSet>,
}

impl Sorting<'_> {
    /// The runs of the mapping at `start` for its `needed` address ranges;
    /// up to `budget` lazy pages become eager (the `dirty` eager set).
    /// Works a stretch of equal fill at a time, not a page at a time: a
    /// few GiB hold a million pages, and this runs while the process is
    /// frozen.
    fn runs(&self, start: u64, needed: &[(u64, u64)], budget: &mut u64) -> Vec<PageRun> {
        let mut runs: Vec<PageRun> = Vec::new();
        for &(a, b) in needed {
            let mut addr = a;
            while addr < b {
                let left = (b - addr) / PAGE_SIZE;
                let (fill, n) = self.stretch(addr, left, budget);
                let first = (addr - start) / PAGE_SIZE;
                match runs.last_mut() {
                    Some(r) if r.fill == fill && r.first + r.count == first => r.count += n,
                    _ => runs.push(PageRun {
                        first,
                        count: n,
                        fill,
                    }),
                }
                addr += n * PAGE_SIZE;
            }
        }
        runs
    }

    /// The fill of the page at `addr` and how many pages from it (at
    /// least one, at most `left`) share it.
    fn stretch(&self, addr: u64, left: u64, budget: &mut u64) -> (Fill, u64) {
        if self.all_eager {
            return (Fill::Eager, left);
        }
        let pages_to = |end: u64| ((end - addr) / PAGE_SIZE).clamp(1, left);
        let eager_end = self
            .eager
            .iter()
            .filter(|&&(e, n)| e <= addr && addr < e + n * PAGE_SIZE)
            .map(|&(e, n)| e + n * PAGE_SIZE)
            .max();
        if let Some(end) = eager_end {
            return (Fill::Eager, pages_to(end));
        }
        // Up to the next eager stretch, then up to a change of stored.
        let mut n = self
            .eager
            .iter()
            .filter(|&&(e, _)| e > addr)
            .map(|&(e, _)| pages_to(e))
            .min()
            .unwrap_or(left);
        if let Some(s) = self.stored {
            match s.run_at(addr, n) {
                0 => n = s.gap_at(addr, n).max(1),
                k => return (Fill::Stored, k),
            }
        }
        if self.none_lazy {
            return (Fill::Eager, n);
        }
        if *budget > 0 {
            let k = n.min(*budget);
            *budget -= k;
            return (Fill::Eager, k);
        }
        (Fill::Lazy, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page-at-a-time rule `Sorting` must agree with.
    fn reference(s: &Sorting, start: u64, needed: &[(u64, u64)], budget: &mut u64) -> Vec<PageRun> {
        let mut runs: Vec<PageRun> = Vec::new();
        for &(a, b) in needed {
            let mut addr = a;
            while addr < b {
                let in_eager = s
                    .eager
                    .iter()
                    .any(|&(e, n)| addr >= e && addr < e + n * PAGE_SIZE);
                let stored = s.stored.is_some_and(|p| p.run_at(addr, 1) == 1);
                let fill = if s.all_eager || in_eager {
                    Fill::Eager
                } else if stored {
                    Fill::Stored
                } else if s.none_lazy {
                    Fill::Eager
                } else if *budget > 0 {
                    *budget -= 1;
                    Fill::Eager
                } else {
                    Fill::Lazy
                };
                let i = (addr - start) / PAGE_SIZE;
                match runs.last_mut() {
                    Some(r) if r.fill == fill && r.first + r.count == i => r.count += 1,
                    _ => runs.push(PageRun {
                        first: i,
                        count: 1,
                        fill,
                    }),
                }
                addr += PAGE_SIZE;
            }
        }
        runs
    }

    #[test]
    fn pages_touched_after_the_running_scan_are_found_in_its_holes() {
        let page = PAGE_SIZE as usize;
        // Fresh anonymous memory (calloc of this size is a new mapping):
        // untouched pages are not present.
        let mut v = vec![0u8; 80 * page];
        let base = (v.as_ptr() as usize).next_multiple_of(page);
        let off = base - v.as_ptr() as usize;
        let (start, end) = (base as u64, (base + 64 * page) as u64);
        let touch = |v: &mut Vec<u8>, i: usize| {
            v[off + i * page] = 1;
        };
        for i in [3, 4, 5, 20, 40, 41] {
            touch(&mut v, i);
        }
        let pagemap = fs::File::open("/proc/self/pagemap").unwrap();
        let mut buf = Vec::new();
        let held = procfs::needed_pages(&pagemap, start, end, true, &mut buf).unwrap();
        let p = |i: usize| start + (i * page) as u64;
        assert_eq!(held, vec![(p(3), p(6)), (p(20), p(21)), (p(40), p(42))]);
        // Touched since: in holes, at either end and beside a held run.
        for i in [0, 6, 30, 63] {
            touch(&mut v, i);
        }
        let now = pages_since(&pagemap, (start, end), true, &held, &mut buf).unwrap();
        assert_eq!(
            now,
            vec![
                (p(0), p(1)),
                (p(3), p(7)),
                (p(20), p(21)),
                (p(30), p(31)),
                (p(40), p(42)),
                (p(63), p(64))
            ]
        );
        assert_eq!(
            now,
            procfs::needed_pages(&pagemap, start, end, true, &mut buf).unwrap()
        );
        std::hint::black_box(&v);
    }

    /// A small deterministic generator (xorshift), so failures replay.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    #[test]
    fn sorting_by_stretches_matches_page_by_page() {
        let start = 0x7000_0000u64;
        let page = |i: u64| start + i * PAGE_SIZE;
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for case in 0..2000 {
            let span = 1 + rng.below(200);
            let mut needed = Vec::new();
            let mut i = rng.below(3);
            while i < span {
                let n = 1 + rng.below(40);
                needed.push((page(i), page((i + n).min(span))));
                i += n + 1 + rng.below(10);
            }
            let eager: Vec<(u64, u64)> = (0..rng.below(4))
                .map(|_| (page(rng.below(span + 4)), 1 + rng.below(20)))
                .collect();
            let mut stored = PageSet::new();
            for _ in 0..rng.below(5) {
                let at = rng.below(span);
                stored.insert(page(at), page(at + 1 + rng.below(30)));
            }
            let s = Sorting {
                all_eager: rng.below(8) == 0,
                none_lazy: rng.below(4) == 0,
                eager: &eager,
                stored: (rng.below(2) == 0).then_some(&stored),
            };
            let budget = [0, 0, 1, 5, 1000][rng.below(5) as usize];
            let (mut b1, mut b2) = (budget, budget);
            assert_eq!(
                s.runs(start, &needed, &mut b1),
                reference(&s, start, &needed, &mut b2),
                "case {case}: needed {needed:x?} eager {eager:x?} budget {budget}"
            );
            assert_eq!(b1, b2, "case {case}: budget left");
        }
    }
}
