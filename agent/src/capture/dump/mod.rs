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

mod memory;
mod scan;
mod threads;
mod way_back;

use memory::*;
use scan::*;
pub use scan::{RunningScan, Scouted};
use threads::*;
use way_back::*;

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
    #[error("process changed before the freeze: {}", .0.texts().join("; "))]
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

/// What a cooperating process adds to its dump.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cooperation {
    /// Address of its shim's state block, shipped with the eager pages.
    pub shim: Option<u64>,
    /// What its established TCP connections become.
    pub tcp: TcpPolicy,
}

/// Pages above the stack pointer shipped eagerly.
const EAGER_STACK_PAGES: u64 = 16;

fn proc_err(pid: i32, what: &'static str) -> impl FnOnce(std::io::Error) -> DumpError {
    move |source| DumpError::Proc { pid, what, source }
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
