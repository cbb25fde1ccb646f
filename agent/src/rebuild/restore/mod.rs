//! Rebuild a process from its image inside a stub, by injected syscalls.
//!
//! The stub is this binary re-executed as `migrate-agent __stub`: it forks
//! once (so the host's init, not the agent, parents and reaps it), starts a
//! new session and sleeps. The agent seizes it and, from outside:
//!
//! 1. maps a scratch page for syscall arguments at an address free in both
//!    layouts;
//! 2. unmaps everything of the stub but the vDSO family and the scratch;
//! 3. moves `[vvar]`, `[vvar_vclock]`, `[vdso]` to the source addresses
//!    (through a free area first, so old and new never overlap);
//! 4. maps every VMA with `MAP_FIXED_NOREPLACE` and writes the eager pages
//!    by several threads (see [`Restorer::page_writers`]);
//! 5. creates the userfaultfd inside the process, takes it over with
//!    `pidfd_getfd` and registers the lazy ranges;
//! 6. descriptors, cwd, umask, signal dispositions, limits, name,
//!    `PR_SET_MM_MAP`, `set_tid_address`, robust list, rseq;
//! 7. credentials last: never more privilege than the source had;
//! 8. the final `munmap` of the scratch page, at whose exit stop the
//!    thread gets its dumped registers. It stays stopped until commit.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Command, Stdio};

use migrate_inject::{InjectError, Regs, RemoteMem, Seized};
use migrate_proto::image::{FsCreds, ProcessImage, ThreadState, Vma, VmaKind};
use migrate_proto::PAGE_SIZE;

use crate::fd::{FdError, Remote};

mod calls;
mod fork;
mod memory;
mod process;
mod remote;
mod shared_files;
mod stub;
mod threads;
mod writers;

use crate::host::children::{self, Claim};
use crate::{host::procfs, host::sys, host::uffd};
use memory::free_area;
pub use stub::{NsInit, Stub};
use writers::PageSink;
pub use writers::PageWriters;

/// Errors while rebuilding a process.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Starting the stub failed.
    #[error("cannot start the stub process")]
    Stub(#[source] std::io::Error),
    /// An injected step failed.
    #[error("{step} failed")]
    Step {
        /// What was being done.
        step: String,
        /// Cause.
        #[source]
        source: InjectError,
    },
    /// A local syscall failed.
    #[error("{step} failed")]
    Sys {
        /// What was being done.
        step: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The image cannot be rebuilt on this host.
    #[error("{0}")]
    Incompatible(String),
    /// A failpoint failed the rebuild.
    #[error(transparent)]
    Failpoint(#[from] crate::failpoints::Injected),
    /// Making a descriptor failed.
    #[error(transparent)]
    Fd(#[from] FdError),
}

fn step<T>(what: impl Into<String>, r: Result<T, InjectError>) -> Result<T, RestoreError> {
    r.map_err(|source| RestoreError::Step {
        step: what.into(),
        source,
    })
}

const SCRATCH_LEN: u64 = 4 * PAGE_SIZE;

/// Shared memory objects mapped by the processes of a tree started so
/// far: by the source's inode, a process (pid here) and the start and end
/// of one of its mappings of it. A process started later maps the same
/// object through `/proc/PID/map_files`.
pub type KinShmem = HashMap<u64, (i32, u64, u64)>;

/// Notes the shared memory of `image`, mapped as process `pid`, for the
/// processes of its tree started after it.
pub fn note_shmem(kin: &mut KinShmem, pid: i32, image: &ProcessImage) {
    for v in &image.mm.vmas {
        if let VmaKind::Shmem { inode, .. } = v.kind {
            kin.entry(inode).or_insert((pid, v.start, v.end));
        }
    }
}

/// A process being rebuilt: stopped, not yet running.
pub struct Restorer {
    task: Seized,
    /// The process on this thread's CPU while it is built (its threads
    /// inherit that); released before it runs.
    pin: Option<sys::CpuPin>,
    /// Threads other than the leader, once created.
    threads: Vec<Seized>,
    /// Shared-memory VMAs: (start, end, offset in their object).
    shmem_vmas: Vec<(u64, u64, u64)>,
    /// Agent-side ends of the forwarded standard streams: (fd, end,
    /// the process writes to it).
    forwarded: Vec<(i32, OwnedFd, bool)>,
    /// Descriptors whose TCP connection was made again here.
    reconnected: Vec<i32>,
    /// Connections made again in repair mode, live at the resume.
    repaired: Vec<crate::fd::tcp_repair::Repaired>,
    /// Pid on this host.
    pub pid: i32,
    mem: RemoteMem,
    pidfd: OwnedFd,
    scratch: u64,
    /// Who the process is to the filesystem: every path this restore
    /// opens, creates or removes for it is handled as this user.
    who: FsCreds,
    /// Content of files shipped as unlinked copies, by descriptor.
    shipped: HashMap<i32, std::fs::File>,
    /// Files made for mappings shared and writable, filled with their
    /// shipped content and opened again for descriptors of them.
    mapped_files: Vec<shared_files::MappedFile>,
    /// The process is this agent's child, waited for by its owner.
    claim: Option<Claim>,
    /// Rebuilt in a pid namespace of its own, whose placeholder init
    /// (this agent's child instead) is this, until taken for the wait.
    ns_init: Option<NsInit>,
    /// In a pid namespace of its own: its ids there are the image's.
    own_pid_ns: bool,
    /// Let run ([`Restorer::resume`]); until then dropping the Restorer
    /// kills the half-built process.
    resumed: bool,
}

impl Drop for Restorer {
    fn drop(&mut self) {
        if self.resumed {
            return;
        }
        // Half-built, or built but never committed: it must never run.
        let _ = sys::pidfd_kill(&self.pidfd, libc::SIGKILL);
        self.task.kill_in_place();
        for t in &mut self.threads {
            t.kill_in_place();
        }
    }
}

impl Restorer {
    /// Seizes a fresh stub and strips it down to the vDSO, then maps every
    /// VMA of `image` (no page content yet).
    pub fn start(image: &ProcessImage, stub_exe: &Path) -> Result<Restorer, RestoreError> {
        Restorer::start_in(image, Stub::spawn(stub_exe, image.pid)?)
    }

    /// As [`Restorer::start`], in a stub started beforehand.
    pub fn start_in(image: &ProcessImage, stub: Stub) -> Result<Restorer, RestoreError> {
        Restorer::start_in_tree(image, stub, &KinShmem::new())
    }

    /// As [`Restorer::start_in`], for a process of a tree: shared memory
    /// that the processes started before it mapped (`kin`) is mapped from
    /// theirs, one object as on the source.
    pub fn start_in_tree(
        image: &ProcessImage,
        mut stub: Stub,
        kin: &KinShmem,
    ) -> Result<Restorer, RestoreError> {
        let pid = stub.pid;
        let t0 = std::time::Instant::now();
        let lap =
            |what: &str| tracing::debug!(us = t0.elapsed().as_micros() as u64, "start_in: {what}");
        let mut task = step("seizing the stub", Seized::seize_exitkill(pid))?;
        lap("seized");
        let pin = sys::CpuPin::near_me(&[pid]);
        let mem = step("opening the stub's memory", RemoteMem::open(pid))?;
        let stub_maps = procfs::maps(pid).map_err(|source| RestoreError::Sys {
            step: "reading the stub's maps",
            source,
        })?;
        let (insn, hash) = procfs::vdso_range(&stub_maps)
            .and_then(|r| migrate_inject::syscall_site(&mem, r))
            .ok_or_else(|| RestoreError::Incompatible("the stub has no vDSO".into()))?;
        if hash != image.vdso_hash {
            return Err(RestoreError::Incompatible(
                "the vDSO differs between the two hosts (different kernel builds): \
                 the process would crash calling it"
                    .into(),
            ));
        }
        task.set_syscall_insn(insn);
        lap("vdso checked");

        let mut taken: Vec<(u64, u64)> = stub_maps.iter().map(|m| (m.start, m.end)).collect();
        taken.extend(image.mm.vmas.iter().map(|v| (v.start, v.end)));
        let scratch = free_area(SCRATCH_LEN, &taken)
            .ok_or_else(|| RestoreError::Incompatible("no free address for scratch".into()))?;
        taken.push((scratch, scratch + SCRATCH_LEN));
        Restorer::map_scratch(&mut task, scratch, SCRATCH_LEN)?;
        lap("scratch");
        // From here the Restorer decides the stub's end (and the kernel,
        // should this agent exit first: it was seized with EXITKILL).
        let pidfd = stub.pidfd.take().ok_or_else(|| {
            RestoreError::Incompatible("the stub was given to a restorer before".into())
        })?;
        let ns_init = stub.ns.take();
        let mut r = Restorer::around(image, task, pin, mem, pidfd, scratch, stub.claim.take());
        if let Some(init) = &ns_init {
            if init.inner_pid != image.pid {
                return Err(RestoreError::Incompatible(format!(
                    "pid {} could not be had even in a pid namespace of its own (got {})",
                    image.pid, init.inner_pid
                )));
            }
        }
        r.own_pid_ns = ns_init.is_some();
        r.ns_init = ns_init;
        r.act_as_user()?;
        lap("as user");
        r.strip_stub(&stub_maps)?;
        lap("stripped");
        r.move_vdso(&stub_maps, image, &taken, insn)?;
        lap("vdso moved");
        r.map_vmas(image, kin)?;
        lap("mapped");
        Ok(r)
    }

    /// A restorer of `image` in the process of `task` (its pidfd and
    /// memory), with scratch memory at `scratch`, owned through `claim` if
    /// it is this agent's child.
    fn around(
        image: &ProcessImage,
        task: Seized,
        pin: sys::CpuPin,
        mem: RemoteMem,
        pidfd: OwnedFd,
        scratch: u64,
        claim: Option<Claim>,
    ) -> Restorer {
        Restorer {
            threads: Vec::new(),
            forwarded: Vec::new(),
            reconnected: Vec::new(),
            repaired: Vec::new(),
            shmem_vmas: image
                .mm
                .vmas
                .iter()
                .filter_map(|v| match v.kind {
                    VmaKind::Shmem { offset, .. } => Some((v.start, v.end, offset)),
                    _ => None,
                })
                .collect(),
            pid: task.tid(),
            task,
            pin: Some(pin),
            mem,
            pidfd,
            scratch,
            // Its effective ids, which `setresuid` makes its filesystem ids
            // (the source's file check used the same: `Credentials::fs`).
            who: FsCreds {
                uid: image.creds.uid[1],
                gid: image.creds.gid[1],
                groups: image.creds.groups.clone(),
            },
            shipped: HashMap::new(),
            mapped_files: Vec::new(),
            claim,
            ns_init: None,
            own_pid_ns: false,
            resumed: false,
        }
    }

    /// Writes a NUL-terminated string to the scratch page; returns its address.
    fn put_str(&self, s: &str) -> Result<u64, RestoreError> {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        if b.len() as u64 > SCRATCH_LEN {
            return Err(RestoreError::Incompatible(format!("path too long: {s}")));
        }
        step("writing scratch", self.mem.write(self.scratch, &b))?;
        Ok(self.scratch)
    }

    fn put_bytes(&self, b: &[u8]) -> Result<u64, RestoreError> {
        step("writing scratch", self.mem.write(self.scratch, b))?;
        Ok(self.scratch)
    }

    /// Runs syscall `nr` in the process (the thread in `self.task`), past
    /// the failpoint `dest.rebuild.injecting`; `what` names it in errors.
    /// The typed calls ([`calls`]) are made on it.
    fn sys(
        &mut self,
        what: impl Into<String>,
        nr: i64,
        args: [u64; 6],
    ) -> Result<u64, RestoreError> {
        crate::failpoints::hit("dest.rebuild.injecting")?;
        step(what, self.task.syscall(nr, args))
    }

    /// Everything after memory: descriptors, process attributes, thread
    /// state, credentials; leaves the process stopped with its own registers.
    pub fn finish(&mut self, image: &ProcessImage) -> Result<(), RestoreError> {
        self.finish_in_tree(image, &crate::fd::Kin::default())
    }

    /// As [`Restorer::finish`], for a process of a tree whose processes
    /// rebuilt before it are `kin`.
    pub fn finish_in_tree(
        &mut self,
        image: &ProcessImage,
        kin: &crate::fd::Kin,
    ) -> Result<(), RestoreError> {
        crate::fd::restore_all_in_tree(self, image, kin)?;
        self.chdir(&image.cwd)?;
        self.umask(image.umask)?;
        self.restore_sigactions(image)?;
        self.restore_rlimits(image)?;
        self.prctl_set_name(&image.comm)?;
        self.restore_mm(image)?;
        let main = image
            .threads
            .first()
            .ok_or_else(|| RestoreError::Incompatible("image has no thread".into()))?;
        // Threads are cloned while the process still has the agent's
        // credentials (clone3 with set_tid needs them), then each drops
        // its own: credentials are per thread in the kernel.
        for t in &image.threads[1..] {
            let th = self.spawn_thread(self.pid, t)?;
            if let Some(pin) = &mut self.pin {
                pin.inherit(th.tid(), self.pid);
            }
            self.threads.push(th);
        }
        let mut threads = std::mem::take(&mut self.threads);
        for (th, t) in threads.iter_mut().zip(&image.threads[1..]) {
            std::mem::swap(&mut self.task, th);
            let r = self.restore_thread(image, t, false);
            std::mem::swap(&mut self.task, th);
            if let Err(e) = r {
                self.threads = threads;
                return Err(e);
            }
        }
        self.threads = threads;
        self.patch_thread_ids(image)?;
        self.restore_timers(image)?;
        self.restore_thread(image, main, true)
    }

    /// Who the process is to the filesystem.
    pub fn who(&self) -> &FsCreds {
        &self.who
    }

    /// The content of the files shipped as unlinked copies, by descriptor
    /// (received by [`crate::rebuild::shipped::ShippedFiles`]), for the rebuild to
    /// copy into the process's own unlinked files. Files shipped to their
    /// path are already in place.
    pub fn set_shipped(&mut self, held: HashMap<i32, std::fs::File>) -> Result<(), RestoreError> {
        self.shipped = held;
        self.fill_mapped_files()
    }

    /// Lets the process run (after commit). Returns its pid and the claim
    /// of whoever waits for it to end.
    pub fn resume(mut self, signals: &[i32]) -> Result<(i32, Option<Claim>), RestoreError> {
        let pid = self.pid;
        drop(self.pin.take());
        for t in &mut self.threads {
            let tid = t.tid();
            step(format!("detaching thread {tid}"), t.detach_in_place())?;
        }
        step("detaching", self.task.detach_in_place())?;
        // Running: from here its owner is whoever waits for it.
        self.resumed = true;
        for &s in signals {
            let _ = sys::kill(pid, s);
        }
        Ok((pid, self.claim.take()))
    }

    /// Our copies of its connections made again in repair mode (for its
    /// keeper, which silences them if the agent dies).
    pub fn repaired(&self) -> Vec<std::os::fd::BorrowedFd<'_>> {
        self.repaired.iter().map(|c| c.as_fd()).collect()
    }

    /// The connections made again in repair mode, to go live once the
    /// addresses they are on are here.
    pub fn take_repaired(&mut self) -> Vec<crate::fd::tcp_repair::Repaired> {
        std::mem::take(&mut self.repaired)
    }

    /// The agent's ends of the forwarded standard streams.
    pub fn take_forwarded(&mut self) -> Vec<(i32, OwnedFd, bool)> {
        std::mem::take(&mut self.forwarded)
    }

    /// The CPUs the restoring thread may run on when not pinned to one
    /// for ptrace: threads it starts before the resume that drive no
    /// ptrace take them back (they inherit the pin).
    pub fn unpinned_cpus(&self) -> Option<sys::AffinityWords> {
        self.pin.as_ref().and_then(sys::CpuPin::before_me)
    }

    /// A pidfd of the process.
    pub fn pidfd(&self) -> &OwnedFd {
        &self.pidfd
    }

    /// The placeholder init of the pid namespace of its own it was
    /// rebuilt in, if so: whoever waits for the process waits for it.
    pub fn take_ns_init(&mut self) -> Option<NsInit> {
        self.ns_init.take()
    }

    /// The id by which the process itself names its thread that had id
    /// `tid` on the source (the leader's: its pid), or `None` if it has
    /// no such thread.
    fn id_seen_inside(&self, image: &ProcessImage, tid: i32) -> Option<i32> {
        if self.own_pid_ns {
            return image.threads.iter().any(|t| t.tid == tid).then_some(tid);
        }
        if tid == image.threads.first()?.tid {
            return Some(self.pid);
        }
        image.threads[1..]
            .iter()
            .zip(&self.threads)
            .find(|(s, _)| s.tid == tid)
            .map(|(_, th)| th.tid())
    }
}
