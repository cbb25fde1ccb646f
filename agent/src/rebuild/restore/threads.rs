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
        // Its own id if free here, else any (patched in afterwards); in a
        // pid namespace of its own, every id is free.
        let inside = match self.try_clone3_as(flags, t.tid)? {
            Ok(new) => new,
            Err(e) if self.own_pid_ns => {
                return Err(RestoreError::Incompatible(format!(
                    "thread id {} could not be had in a pid namespace of its own: {e}",
                    t.tid
                )))
            }
            Err(_) => self.clone3(flags, t.tid)?,
        };
        // Traced by its id here, which the clone told (in the process's own
        // pid namespace it has another).
        let new = self.task.take_cloned().unwrap_or(inside);
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
        self.set_tid_address(t.clear_child_tid)?;
        // The stub's own alternate stack (Rust's runtime sets one) points into
        // memory that is gone; the source's, or none, replaces it.
        self.sigaltstack(t.altstack)?;
        if t.robust_list.0 != 0 {
            self.set_robust_list(t.robust_list.0, t.robust_list.1)?;
        }
        if let Some(r) = t.rseq {
            self.rseq(r)?;
        }
        if !last || t.name != image.comm {
            self.prctl_set_name(&t.name)?;
        }
        self.restore_creds(image)?;
        if last {
            // Per process; after the credentials, which reset dumpable.
            self.prctl_set_dumpable(image.dumpable == 1)?;
        }
        if image.no_new_privs {
            self.prctl_set_no_new_privs()?;
        }
        if t.pdeathsig != 0 {
            // After the credentials: changing them clears it.
            self.prctl_set_pdeathsig(t.pdeathsig)?;
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
            self.unmap_scratch_last(regs)?;
        } else {
            self.task.set_final_regs(regs);
        }
        Ok(())
    }

    /// Threads (the leader included) that got new ids here get them
    /// written where their thread library caches them.
    pub(super) fn patch_thread_ids(&mut self, image: &ProcessImage) -> Result<(), RestoreError> {
        if self.own_pid_ns {
            // Every thread has its own id there.
            return Ok(());
        }
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
        // Named as the process names them: these run inside it.
        let (pid, tid) = if self.own_pid_ns {
            (image.pid, t.tid)
        } else {
            (self.pid, self.task.tid())
        };
        for q in mine {
            if q.info.len() != 128 {
                return Err(RestoreError::Incompatible("malformed siginfo".into()));
            }
            if q.tid == 0 {
                self.rt_sigqueueinfo(pid, q.signo(), &q.info)?;
            } else {
                self.rt_tgsigqueueinfo(pid, tid, q.signo(), &q.info)?;
            }
        }
        Ok(())
    }
}
