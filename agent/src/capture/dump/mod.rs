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

use migrate_inject::{InjectError, Regs, RemoteMem, ReturnPath, Seized, Vdso};
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
mod process;
mod scan;
mod threads;
mod tree;
mod way_back;

use memory::*;
use process::*;
use scan::*;
pub use scan::{RunningScan, Scouted};
use threads::*;
pub use tree::{freeze_and_dump_tree, FrozenTree};
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
    /// What the caller does once the process is frozen failed.
    #[error("once the process was frozen: {0}")]
    AfterFreeze(String),
    /// The process changed between pre-flight and freeze.
    #[error("process changed before the freeze: {}", migrate_proto::refusal::texts(&.0.0, "; "))]
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
    /// Collecting a descriptor failed.
    #[error(transparent)]
    Fd(crate::fd::FdError),
}

impl From<crate::fd::FdError> for DumpError {
    fn from(e: crate::fd::FdError) -> DumpError {
        use crate::fd::FdError;
        match e {
            FdError::Proc { pid, what, source } => DumpError::Proc { pid, what, source },
            FdError::Refused(why) => DumpError::Refused(Refusal(vec![why])),
            other => DumpError::Fd(other),
        }
    }
}

/// A frozen process and its image.
pub struct Frozen {
    /// Our copies of its connections checkpointed in repair mode: first,
    /// so that dropped they leave it before the threads resume.
    pub in_repair: crate::fd::tcp_repair::InRepair,
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

impl Frozen {
    /// Its pid here (the image names it as it names itself).
    pub fn pid(&self) -> i32 {
        self.tasks[0].tid()
    }
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
/// `frozen` runs once every thread is stopped, before anything is read
/// (service addresses leave then: the process cannot see them go, and
/// its connections on them change no more).
#[allow(clippy::too_many_arguments)]
pub fn freeze_and_dump(
    pid: i32,
    caller: &Caller,
    opts: &MigrateOptions,
    ship: &[(i32, bool)],
    tracker: Option<&mut DirtyTracker>,
    scouted: Scouted,
    coop: &Cooperation,
    frozen: &mut dyn FnMut() -> Result<(), String>,
) -> Result<Frozen, DumpError> {
    let tasks = freeze_threads(pid)?;
    frozen().map_err(DumpError::AfterFreeze)?;
    let how = DumpHow {
        caller,
        opts,
        ship,
        coop,
        kin: &[],
    };
    dump_frozen(pid, tasks, &how, tracker, scouted)
}

/// What a dump is asked for, beside the process.
pub(crate) struct DumpHow<'a> {
    pub caller: &'a Caller,
    pub opts: &'a MigrateOptions,
    /// Descriptors whose files travel with the image (fd, as a private
    /// copy).
    pub ship: &'a [(i32, bool)],
    pub coop: &'a Cooperation,
    /// The processes that move with this one (its tree's other members).
    pub kin: &'a [i32],
}

/// Collects the image of `pid`, whose threads `tasks` are frozen.
fn dump_frozen(
    pid: i32,
    mut tasks: Vec<Seized>,
    how: &DumpHow,
    tracker: Option<&mut DirtyTracker>,
    scouted: Scouted,
) -> Result<Frozen, DumpError> {
    let (caller, opts, ship, coop, kin) = (how.caller, how.opts, how.ship, how.coop, how.kin);
    let Scouted { running, sigreturn } = scouted;
    let t0 = std::time::Instant::now();
    let step = |what: &str| debug!(pid, us = t0.elapsed().as_micros() as u64, "dump: {what}");
    step("frozen");
    // Every system call made inside the process below is two wake-ups;
    // on one CPU they are cheap. Dropped (affinity back) before `tasks`;
    // if the agent dies first, the next one gives it back.
    let tids: Vec<i32> = tasks.iter().map(|t| t.tid()).collect();
    let pin = crate::host::lent::lend(pid, &tids);
    // The process may have changed since pre-flight: check again, frozen.
    let tcp = crate::fd::TcpRules {
        policy: coop.tcp,
        moved: opts.move_addresses.clone(),
    };
    let checked = preflight::inspect_in_tree(pid, caller, sys::getpid(), true, &tcp, kin)
        .map_err(DumpError::Refused)?;
    step("checked again");
    let stored = match tracker {
        Some(t) => Some(t.clean()?),
        None => None,
    };
    let mem = RemoteMem::open(pid)?;
    let maps0 = procfs::maps(pid).map_err(proc_err(pid, "maps"))?;
    let Vdso {
        range: vdso,
        syscall: insn,
        hash: vdso_hash,
    } = procfs::vdso_range(&maps0)
        .and_then(|r| Vdso::at(&mem, r))
        .ok_or(DumpError::NoVdso(pid))?;
    for t in &mut tasks {
        t.set_syscall_insn(insn);
        t.set_midway(in_syscall);
    }
    let status = procfs::status(pid).map_err(proc_err(pid, "status"))?;
    let handled = procfs::status_hex(&status, "SigCgt") | procfs::status_hex(&status, "SigIgn");

    let scratch = scratch(pid, &mut tasks, &maps0, &mem, vdso, sigreturn, &status)?;
    let scratch_at = scratch.addr();
    step("injecting");
    let injected = (|| -> Result<_, DumpError> {
        crate::failpoints::hit("source.dump.injecting")?;
        let mut threads = Vec::with_capacity(tasks.len());
        for t in tasks.iter_mut() {
            threads.push(thread_state(pid, t, &mem, scratch_at)?);
        }
        Ok((
            threads,
            injected_reads(pid, &mut tasks[0], &mem, scratch_at, handled)?,
        ))
    })();
    if let Scratch::Page(page) = scratch {
        tasks[0].munmap(page, PAGE_SIZE)?;
    }
    drop(pin);
    let (mut threads, injected) = injected?;
    // Named as it names them (in a pid namespace of its own, not as here).
    let inside = crate::capture::pid_ns::IdsInside::read(pid, &tids)
        .map_err(proc_err(pid, "task/status"))?;
    for t in &mut threads {
        t.tid = inside.of(t.tid);
    }
    let Injected {
        sigactions,
        brk,
        dumpable,
        no_new_privs,
        itimers,
        mut posix_timers,
        personality,
    } = injected;
    let mut queued_signals = queued_signals(&tasks)?;
    for q in &mut queued_signals {
        q.tid = inside.of(q.tid);
    }
    // Their target as /proc names it.
    for t in &mut posix_timers {
        t.target_tid = inside.of(t.target_tid);
    }

    let maps = procfs::maps(pid).map_err(proc_err(pid, "maps"))?;
    let stat = procfs::stat_fields(pid).map_err(proc_err(pid, "stat"))?;
    let fields = mm_fields(&stat, brk);
    let eager_addrs = eager_addrs(coop, opts, &threads, tasks[0].regs());
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

    let Identity {
        auxv,
        exe,
        cwd,
        comm,
        umask,
        creds,
        rlimits,
    } = identity(pid, &status)?;
    step("memory map and pages");
    let crate::fd::Dumped {
        fds,
        pipes,
        memfds,
        to_reset,
        in_repair,
    } = crate::fd::dump_all(&checked.survey, &maps)?;
    step("descriptors");

    let image = ProcessImage {
        pid: inside.of(pid),
        ppid: inside.parent(procfs::stat_field(&stat, 4) as i32),
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
        shipped: ship_files(pid, ship, &maps0)?,
        deputy: false,
        lineage: Default::default(),
    };
    Ok(Frozen {
        in_repair,
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
/// sent. `fds`: (descriptor, ship as a private unlinked copy); a pseudo
/// descriptor below 0 names a file mapped shared and writable
/// ([`crate::capture::shared_files`]), found in `maps`.
fn ship_files(
    pid: i32,
    fds: &[(i32, bool)],
    maps: &[procfs::MapsEntry],
) -> Result<Vec<ShippedFile>, DumpError> {
    use std::os::unix::fs::MetadataExt;
    let mapped = crate::capture::shared_files::files(pid, maps);
    let mut out = Vec::new();
    for &(fd, private) in fds {
        if let Some(k) = crate::capture::shared_files::index(fd) {
            let f = mapped.get(k).ok_or_else(|| {
                DumpError::Refused(crate::capture::preflight::Refusal::one(
                    migrate_proto::msg::Code::Mapping,
                    "a file mapped shared and writable was unmapped since the check".to_string(),
                ))
            })?;
            out.push(ShippedFile {
                fd,
                path: f.path.clone(),
                deleted: f.deleted,
                mode: f.ident.mode & 0o7777,
                uid: f.ident.uid,
                gid: f.ident.gid,
                size: f.ident.size,
                mapped: Some(migrate_proto::image::MappedShared {
                    mapping: f.mapping,
                    at_path: !private && !f.deleted,
                }),
            });
            continue;
        }
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
            mapped: None,
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
