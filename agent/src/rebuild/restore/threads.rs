//! The rebuilt process's threads: each made again with its registers, FPU
//! state, signal mask, rseq and robust list, and the thread ids the thread
//! library keeps patched; signals queued again.

use super::*;

impl Restorer {
    /// Creates the thread `t` (with its own id) by an injected clone3 in
    /// the leader; it starts stopped under ptrace.
    pub(super) fn spawn_thread(
        &mut self,
        tgid: i32,
        t: &ThreadState,
    ) -> Result<Seized, RestoreError> {
        step(
            "tracing clones",
            self.task.set_options(
                libc::PTRACE_O_TRACESYSGOOD | libc::PTRACE_O_EXITKILL | libc::PTRACE_O_TRACECLONE,
            ),
        )?;
        let flags = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM) as u64;
        // struct clone_args (11 words), then the one-entry set_tid array.
        let tid_at = self.scratch + 128;
        let mut new = None;
        // Its own id if free here, else any (patched in afterwards).
        for (set_tid, n) in [(tid_at, 1u64), (0, 0)] {
            let args = [flags, 0, 0, 0, 0, 0, 0, 0, set_tid, n, 0];
            let mut b = Vec::with_capacity(136);
            for w in args {
                b.extend_from_slice(&w.to_le_bytes());
            }
            b.resize(128, 0);
            b.extend_from_slice(&(t.tid as u64).to_le_bytes());
            let p = self.put_bytes(&b)?;
            match self
                .task
                .syscall(SYS_CLONE3, [p, CLONE_ARGS_SIZE, 0, 0, 0, 0])
            {
                Ok(v) => {
                    new = Some(v as i32);
                    break;
                }
                Err(migrate_inject::InjectError::RemoteSyscall { source, .. })
                    if n == 1 && source.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => {
                    return Err(RestoreError::Step {
                        step: format!("creating thread {}", t.tid),
                        source: e,
                    })
                }
            }
        }
        let new = new.ok_or_else(|| {
            RestoreError::Incompatible(format!("thread {} could not be created", t.tid))
        })?;
        let mut th = step(
            format!("stopping new thread {new}"),
            Seized::adopt(tgid, new),
        )?;
        if let Some(insn) = self.task.syscall_insn() {
            th.set_syscall_insn(insn);
        }
        Ok(th)
    }

    /// Per-thread state of the thread in `self.task`; the leader (`last`)
    /// also unmaps the scratch area as its very last injected call.
    pub(super) fn restore_thread(
        &mut self,
        image: &ProcessImage,
        t: &ThreadState,
        last: bool,
    ) -> Result<(), RestoreError> {
        self.sys(
            "set_tid_address",
            libc::SYS_set_tid_address,
            [t.clear_child_tid, 0, 0, 0, 0, 0],
        )?;
        // The stub's own alternate stack (Rust's runtime sets one) points into
        // memory that is gone; the source's, or none, replaces it.
        let (sp, flags, size) = match t.altstack {
            Some(a) => (a.sp, u64::from(a.flags), a.size),
            None => (0, libc::SS_DISABLE as u64, 0),
        };
        let mut st = Vec::with_capacity(24);
        for w in [sp, flags, size] {
            st.extend_from_slice(&w.to_le_bytes());
        }
        let p = self.put_bytes(&st)?;
        self.sys("sigaltstack", libc::SYS_sigaltstack, [p, 0, 0, 0, 0, 0])?;
        if t.robust_list.0 != 0 {
            self.sys(
                "set_robust_list",
                libc::SYS_set_robust_list,
                [t.robust_list.0, t.robust_list.1, 0, 0, 0, 0],
            )?;
        }
        if let Some(r) = t.rseq {
            self.sys(
                "rseq registration",
                SYS_RSEQ,
                [r.addr, u64::from(r.len), 0, u64::from(r.sig), 0, 0],
            )?;
        }
        if !last || t.name != image.comm {
            let name = self.put_str(&t.name)?;
            self.sys(
                "PR_SET_NAME",
                libc::SYS_prctl,
                [PR_SET_NAME, name, 0, 0, 0, 0],
            )?;
        }
        self.restore_creds(image)?;
        if last {
            // Per process; after the credentials, which reset dumpable.
            self.sys(
                "PR_SET_DUMPABLE",
                libc::SYS_prctl,
                [PR_SET_DUMPABLE, u64::from(image.dumpable == 1), 0, 0, 0, 0],
            )?;
        }
        if image.no_new_privs {
            self.sys(
                "PR_SET_NO_NEW_PRIVS",
                libc::SYS_prctl,
                [PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0],
            )?;
        }
        if t.pdeathsig != 0 {
            // After the credentials: changing them clears it.
            self.sys(
                "PR_SET_PDEATHSIG",
                libc::SYS_prctl,
                [PR_SET_PDEATHSIG, t.pdeathsig as u64, 0, 0, 0, 0],
            )?;
        }
        self.queue_signals(image, t, last)?;
        let regs = Regs::from_words(&t.regs)
            .ok_or_else(|| RestoreError::Incompatible("malformed registers".into()))?;
        step("restoring FPU state", self.task.set_xstate(&t.xstate))?;
        step(
            "restoring the signal mask",
            self.task.set_sigmask(t.sigmask),
        )?;
        if last {
            step(
                "unmapping the scratch page",
                self.task.syscall_last(
                    libc::SYS_munmap,
                    [self.scratch, SCRATCH_LEN, 0, 0, 0, 0],
                    regs,
                ),
            )?;
        } else {
            self.task.set_final_regs(regs);
        }
        Ok(())
    }

    /// Threads (the leader included) that got new ids here get them
    /// written where their thread library caches them.
    pub(super) fn patch_thread_ids(&mut self, image: &ProcessImage) -> Result<(), RestoreError> {
        let mut changed = Vec::new();
        if self.pid != image.pid {
            changed.push((&image.threads[0], self.pid));
        }
        for (th, t) in self.threads.iter().zip(&image.threads[1..]) {
            if th.tid() != t.tid {
                changed.push((t, th.tid()));
            }
        }
        if changed.is_empty() {
            return Ok(());
        }
        let Some(off) = image.tid_offset else {
            let ids: Vec<String> = changed.iter().map(|(t, _)| t.tid.to_string()).collect();
            return Err(RestoreError::Incompatible(format!(
                "thread ids {} are in use on this host and the thread library's copy of them was not found",
                ids.join(", ")
            )));
        };
        for (t, new) in changed {
            let fs = Regs::from_words(&t.regs)
                .ok_or_else(|| RestoreError::Incompatible("malformed registers".into()))?
                .0
                .fs_base;
            let mut cur = [0u8; 4];
            step("reading a thread id", self.mem.read(fs + off, &mut cur))?;
            if cur != t.tid.to_le_bytes() {
                return Err(RestoreError::Incompatible(format!(
                    "thread {}: its cached id is not where the source had it",
                    t.tid
                )));
            }
            step(
                format!("mapping thread id {} to {new}", t.tid),
                self.mem.write(fs + off, &new.to_le_bytes()),
            )?;
        }
        Ok(())
    }

    /// Queues again, from inside the thread in `self.task` (so any
    /// `si_code` is accepted), the signals its own queue held at the freeze,
    /// and for the leader (`last`) the process-wide ones. Everything is
    /// blocked meanwhile; the thread's own mask is set afterwards, so they
    /// are delivered, with their siginfo, once it runs.
    pub(super) fn queue_signals(
        &mut self,
        image: &ProcessImage,
        t: &ThreadState,
        last: bool,
    ) -> Result<(), RestoreError> {
        let mine: Vec<_> = image
            .queued_signals
            .iter()
            .filter(|q| q.tid == t.tid || (last && q.tid == 0))
            .collect();
        if mine.is_empty() {
            return Ok(());
        }
        step("blocking signals", self.task.set_sigmask(!0))?;
        let tid = u64::from(self.task.tid() as u32);
        let pid = u64::from(self.pid as u32);
        for q in mine {
            if q.info.len() != 128 {
                return Err(RestoreError::Incompatible("malformed siginfo".into()));
            }
            let p = self.put_bytes(&q.info)?;
            let signo = u64::from(q.signo() as u32);
            if q.tid == 0 {
                self.sys(
                    format!("requeueing signal {signo}"),
                    libc::SYS_rt_sigqueueinfo,
                    [pid, signo, p, 0, 0, 0],
                )?;
            } else {
                self.sys(
                    format!("requeueing signal {signo} for thread {}", t.tid),
                    libc::SYS_rt_tgsigqueueinfo,
                    [pid, tid, signo, p, 0, 0],
                )?;
            }
        }
        Ok(())
    }
}
