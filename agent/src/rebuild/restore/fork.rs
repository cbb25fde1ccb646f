//! The processes of a tree after the first: each forked from its rebuilt
//! parent, so that the private pages they still share since the fork on
//! the source are shared again (copy-on-write) instead of copied; then
//! its memory made its own (the parent's mappings it lacks unmapped, its
//! own mapped, its own pages written by the caller). Zombies are forked
//! and ended with their status.

use super::*;
use crate::rebuild::family::Node;
use crate::rebuild::restore::memory::overlaps;
use migrate_proto::image::Fill;

impl Restorer {
    /// Forks `image`, a child of this process in its tree, from this
    /// process, whose own memory (`parent`) is made and written: the
    /// child's pid, session and group as `node` plans; mappings it has as
    /// the parent has them are kept (pages of [`Fill::Parent`] shared),
    /// the others made as for any process. Shared memory from `kin`.
    pub fn fork_child(
        &mut self,
        parent: &ProcessImage,
        image: &ProcessImage,
        node: &Node,
        kin: &KinShmem,
    ) -> Result<Restorer, RestoreError> {
        let scratch = (self.scratch, self.scratch + SCRATCH_LEN);
        if image
            .mm
            .vmas
            .iter()
            .any(|v| overlaps(v.start, v.end, scratch.0, scratch.1))
        {
            return Err(RestoreError::Incompatible(format!(
                "process {} maps the address its parent is rebuilt through",
                image.pid
            )));
        }
        let task = self.fork_traced(image.pid)?;
        let pid = task.tid();
        let pidfd = sys::pidfd_open(pid).map_err(|source| RestoreError::Sys {
            step: "pidfd_open of a forked process",
            source,
        })?;
        let mem = step("opening a forked process's memory", RemoteMem::open(pid))?;
        let pin = sys::CpuPin::near_me(&[pid]);
        let mut r = Restorer::around(image, task, pin, mem, pidfd, self.scratch, None);
        if node.session {
            r.setsid()?;
        } else if node.group != 0 {
            r.setpgid(node.group)?;
        }
        r.act_as_user()?;
        r.place_vdso_as(parent, image)?;
        // What the fork gave it: the parent's mappings but those it does
        // not copy to a child (`MADV_DONTFORK`).
        let kept = |v: &Vma| parent.mm.vmas.iter().any(|p| p.forks_as(v));
        for p in &parent.mm.vmas {
            let theirs = matches!(p.kind, VmaKind::Vdso(_) | VmaKind::Vsyscall);
            if !theirs && !image.mm.vmas.iter().any(|v| p.same_mapping(v)) {
                r.munmap(p.start, p.end - p.start)?;
            }
        }
        r.map_vmas_but(image, kin, kept)?;
        r.drop_unshared(parent, image)?;
        Ok(r)
    }

    /// The vDSO where `image` had it, when that is not where its parent
    /// had it (a child that ran another program): moved from the parent's
    /// place before anything else is mapped.
    fn place_vdso_as(
        &mut self,
        parent: &ProcessImage,
        image: &ProcessImage,
    ) -> Result<(), RestoreError> {
        let vdso = |i: &ProcessImage| -> Vec<(u64, u64)> {
            i.mm.vmas
                .iter()
                .filter(|v| matches!(v.kind, VmaKind::Vdso(_)))
                .map(|v| (v.start, v.end))
                .collect()
        };
        if vdso(parent) == vdso(image) {
            return Ok(());
        }
        let maps = procfs::maps(self.pid).map_err(|source| RestoreError::Sys {
            step: "reading a forked process's maps",
            source,
        })?;
        let mut taken: Vec<(u64, u64)> = maps.iter().map(|m| (m.start, m.end)).collect();
        taken.extend(image.mm.vmas.iter().map(|v| (v.start, v.end)));
        let insn = self
            .task
            .syscall_insn()
            .ok_or_else(|| RestoreError::Incompatible("no syscall instruction".into()))?;
        self.move_vdso(&maps, image, &taken, insn)
    }

    /// In the private mappings the fork kept, drops every page but those
    /// `image` takes from its parent ([`Fill::Parent`]): the child's own
    /// pages are written (or come) after, and a page it did not have on
    /// the source (dropped there, or never touched) must not read as its
    /// parent's.
    fn drop_unshared(
        &mut self,
        parent: &ProcessImage,
        image: &ProcessImage,
    ) -> Result<(), RestoreError> {
        let private =
            |v: &&Vma| !v.shared && matches!(v.kind, VmaKind::Anon | VmaKind::File { .. });
        for v in image.mm.vmas.iter().filter(private) {
            if !parent.mm.vmas.iter().any(|p| p.forks_as(v)) {
                continue;
            }
            let mut next = 0u64;
            let parents = v.pages.iter().filter(|r| r.fill == Fill::Parent);
            let ends = parents
                .map(|r| (r.first, r.first + r.count))
                .chain(std::iter::once((v.npages(), v.npages())));
            for (first, end) in ends {
                if first > next {
                    self.drop_pages(v.start + next * PAGE_SIZE, (first - next) * PAGE_SIZE)?;
                }
                next = end;
            }
        }
        Ok(())
    }

    /// Forks process `pid` from this one and ends it with wait status
    /// `status` at once, left unreaped for this process (a zombie). What
    /// the zombie must inherit (no core file, the signal's default action)
    /// is set here first; this process's own limits and dispositions are
    /// set again from its image when it is finished.
    pub fn fork_zombie(&mut self, pid: i32, status: i32) -> Result<(), RestoreError> {
        let core = libc::RLIMIT_CORE;
        let (_, max) = sys::get_rlimit(self.pid, core).map_err(|source| RestoreError::Sys {
            step: "reading a core file limit",
            source,
        })?;
        if let Err(e) = self.try_prlimit64(core, 0, max)? {
            return Err(RestoreError::Incompatible(format!(
                "no core file limit for zombie {pid}: {e}"
            )));
        }
        let sig = status & 0x7f;
        if sig != 0 {
            self.sigaction_default(sig as u32)?;
        }
        let mut task = self.fork_traced(pid)?;
        let insn = self
            .task
            .syscall_insn()
            .ok_or_else(|| RestoreError::Incompatible("no syscall instruction".into()))?;
        // Released at its `syscall` instruction: it kills itself or exits.
        let mut regs = task.regs();
        regs.0.rip = insn;
        regs.0.orig_rax = u64::MAX;
        if sig != 0 {
            regs.0.rax = libc::SYS_kill as u64;
            regs.0.rdi = pid as u64;
            regs.0.rsi = sig as u64;
        } else {
            regs.0.rax = libc::SYS_exit_group as u64;
            regs.0.rdi = ((status >> 8) & 0xff) as u64;
        }
        task.set_final_regs(regs);
        step(format!("ending zombie {pid}"), task.detach())?;
        self.forget_zombie_signal(pid)
    }

    /// This process was told of zombie `pid`'s end (`SIGCHLD`) by the
    /// rebuild, long after it learned of it on the source (where, if it
    /// was still pending, it is in the image and queued again): once the
    /// zombie is dead, the signal is taken off its pending set and off
    /// those held back for its resume.
    fn forget_zombie_signal(&mut self, pid: i32) -> Result<(), RestoreError> {
        let dead = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| Some(s.rsplit_once(')')?.1.trim_start().starts_with('Z')))
                .unwrap_or(false)
        };
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !dead() {
            if std::time::Instant::now() > until {
                return Err(RestoreError::Incompatible(format!(
                    "zombie {pid} did not end"
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        self.rt_sigtimedwait_now(libc::SIGCHLD)?;
        self.task.forget_signal(libc::SIGCHLD);
        Ok(())
    }

    /// Forks process `pid` from this one, the child stopped and traced.
    fn fork_traced(&mut self, pid: i32) -> Result<Seized, RestoreError> {
        let traced = libc::PTRACE_O_TRACESYSGOOD | libc::PTRACE_O_EXITKILL;
        step(
            "tracing forks",
            self.task.set_options(traced | libc::PTRACE_O_TRACEFORK),
        )?;
        let forked = self.try_fork_as(pid);
        step("tracing forks no more", self.task.set_options(traced))?;
        let new = forked?.map_err(|e| {
            RestoreError::Incompatible(format!(
                "pid {pid} of the process tree cannot be had here: {e}"
            ))
        })?;
        let mut task = step(
            format!("stopping new process {new}"),
            Seized::adopt(new, new),
        )?;
        step("tracing a forked process", task.set_options(traced))?;
        if let Some(insn) = self.task.syscall_insn() {
            task.set_syscall_insn(insn);
        }
        Ok(task)
    }
}
