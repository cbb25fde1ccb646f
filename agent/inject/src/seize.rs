//! The [`Seized`] guard: a task stopped under ptrace, and remote syscalls in it.

use std::io;

use tracing::{debug, warn};

use crate::frame::{self, FrameError, FrameSpace, ReturnPath, SigFrame};
use crate::regs::Regs;
use crate::{sys, InjectError, RemoteMem};

const PTRACE_EVENT_STOP: i32 = 128;
const SYSCALL_STOP: i32 = libc::SIGTRAP | 0x80;

/// A task attached with `PTRACE_SEIZE` and stopped with `PTRACE_INTERRUPT`.
///
/// Dropping it puts the registers back (turned into a re-execution of any
/// interrupted syscall if something was injected) and detaches, delivering
/// the signals that arrived while it was stopped.
///
/// Safe to abandon: if the tracer dies between two injected syscalls the
/// task runs on from its own registers. Inside one (its registers are the
/// injection's), with a way back ([`Seized::set_way_back`]) it returns to
/// its own registers by itself; without one the kernel kills it
/// (`PTRACE_O_EXITKILL`, set for the duration of each injected syscall)
/// rather than let it run from the injection's.
#[derive(Debug)]
pub struct Seized {
    tid: i32,
    tgid: i32,
    saved: Regs,
    injected: bool,
    syscall_insn: Option<u64>,
    pending_signals: Vec<i32>,
    released: bool,
    /// The ptrace options outside injected syscalls.
    options: i32,
    /// Called inside each injected syscall (entered, not yet run): fault
    /// injection for tests of what abandoning it there does.
    midway: Option<fn() -> Result<(), String>>,
    /// The frame injected syscalls return through, and where it is written.
    way_back: Option<(ReturnPath, SigFrame, FrameSpace, RemoteMem)>,
    /// The task an injected clone made, by its id in the tracer's pid
    /// namespace (which the clone's own result, the id in the task's
    /// namespace, need not be).
    cloned: Option<i32>,
}

fn ptrace(op: &'static str, req: libc::c_uint, tid: i32, data: u64) -> Result<(), InjectError> {
    sys::ptrace_simple(req, tid, 0, data).map_err(|source| InjectError::Ptrace { op, tid, source })
}

impl Seized {
    /// Attaches to `tid` and stops it. If this thread exits without
    /// releasing it, the kernel detaches it and it runs on.
    pub fn seize(tid: i32) -> Result<Seized, InjectError> {
        Self::seize_with(tid, libc::PTRACE_O_TRACESYSGOOD)
    }

    /// Like [`Seized::seize`], but the kernel kills the task if the tracer
    /// exits first (for a process being built that must never run
    /// half-made).
    pub fn seize_exitkill(tid: i32) -> Result<Seized, InjectError> {
        Self::seize_with(tid, libc::PTRACE_O_TRACESYSGOOD | libc::PTRACE_O_EXITKILL)
    }

    fn seize_with(tid: i32, options: i32) -> Result<Seized, InjectError> {
        sys::ptrace_simple(libc::PTRACE_SEIZE, tid, 0, options as u64)
            .map_err(|source| InjectError::Seize { tid, source })?;
        let mut pending = Vec::new();
        let res = (|| {
            ptrace("INTERRUPT", libc::PTRACE_INTERRUPT, tid, 0)?;
            loop {
                let status = wait(tid)?;
                let sig = libc::WSTOPSIG(status);
                if status >> 16 == PTRACE_EVENT_STOP {
                    break;
                }
                // A signal-delivery stop: keep the signal for later and let
                // the pending interrupt stop the task.
                debug!(tid, sig, "signal arrived while seizing");
                pending.push(sig);
                ptrace("CONT", libc::PTRACE_CONT, tid, 0)?;
            }
            sys::get_regs(tid).map_err(|source| InjectError::Ptrace {
                op: "GETREGS",
                tid,
                source,
            })
        })();
        match res {
            Ok(saved) => Ok(Seized {
                tid,
                tgid: tid,
                saved,
                injected: false,
                syscall_insn: None,
                pending_signals: pending,
                released: false,
                options,
                midway: None,
                way_back: None,
                cloned: None,
            }),
            Err(e) => {
                let _ = sys::ptrace_simple(libc::PTRACE_DETACH, tid, 0, 0);
                Err(e)
            }
        }
    }

    /// Takes over a task that is already traced by this thread and stopped
    /// (a thread created under `PTRACE_O_TRACECLONE`), once it has reported
    /// its first stop.
    pub fn adopt(tgid: i32, tid: i32) -> Result<Seized, InjectError> {
        let status = wait(tid)?;
        if status >> 16 != PTRACE_EVENT_STOP && libc::WSTOPSIG(status) != libc::SIGSTOP {
            return Err(InjectError::UnexpectedStop { tid, status });
        }
        let saved = sys::get_regs(tid).map_err(|source| InjectError::Ptrace {
            op: "GETREGS",
            tid,
            source,
        })?;
        Ok(Seized {
            tid,
            tgid,
            saved,
            injected: false,
            syscall_insn: None,
            pending_signals: Vec::new(),
            released: false,
            // Inherited from the tracee that cloned it (ours: killed with
            // the tracer).
            options: libc::PTRACE_O_TRACESYSGOOD | libc::PTRACE_O_EXITKILL,
            midway: None,
            way_back: None,
            cloned: None,
        })
    }

    /// Names the thread group this task belongs to (for redelivering
    /// signals to a thread that is not the leader).
    pub fn set_tgid(&mut self, tgid: i32) {
        self.tgid = tgid;
    }

    /// Replaces the ptrace options (`PTRACE_O_*`).
    pub fn set_options(&mut self, options: i32) -> Result<(), InjectError> {
        ptrace(
            "SETOPTIONS",
            libc::PTRACE_SETOPTIONS,
            self.tid,
            options as u64,
        )?;
        self.options = options;
        Ok(())
    }

    /// Calls `hook` inside each injected syscall, entered but not yet run;
    /// an error it returns fails the syscall there (fault injection).
    pub fn set_midway(&mut self, hook: fn() -> Result<(), String>) {
        self.midway = Some(hook);
    }

    /// Gives injected syscalls a way back ([`crate::frame`]): from now on
    /// they run from `path.site` on a signal frame laid out in the task's
    /// dead stack, `space` (written through `mem` before the first, and
    /// again only after another task's frame took its place), which
    /// returns the task to its own registers, FPU state and signal mask if
    /// the tracer dies inside one. Fails, changing nothing, if no right
    /// frame can be made.
    pub fn set_way_back(
        &mut self,
        path: ReturnPath,
        space: &FrameSpace,
        mem: &RemoteMem,
    ) -> Result<(), WayBackError> {
        let xstate = self.xstate()?;
        let xstate = frame::static_part(&xstate, frame::dynamic_state_offset());
        let mask = self.sigmask()?;
        let back = self.saved.for_resume_elsewhere();
        let frame = frame::build(&back, xstate, mask, &path, space.floor, space.top)?;
        self.way_back = Some((path, frame, space.clone(), mem.try_clone()?));
        Ok(())
    }

    /// Sets the registers the task will have when released, as they are
    /// (no syscall-restart adjustment).
    pub fn set_final_regs(&mut self, regs: Regs) {
        self.saved = regs;
        self.injected = false;
        // The frame returns to the registers it was made with.
        self.way_back = None;
    }

    /// The task the last injected clone made (traced with
    /// `PTRACE_O_TRACECLONE`), by its id in this tracer's pid namespace.
    pub fn take_cloned(&mut self) -> Option<i32> {
        self.cloned.take()
    }

    /// The task id.
    pub fn tid(&self) -> i32 {
        self.tid
    }

    /// Registers as they were when the task stopped.
    pub fn regs(&self) -> Regs {
        self.saved
    }

    /// Signals that arrived while seizing; redelivered on detach.
    pub fn pending_signals(&self) -> &[i32] {
        &self.pending_signals
    }

    /// Drops signal `sig` from those held back for the detach: one the
    /// owner made arrive itself, which the task must never see.
    pub fn forget_signal(&mut self, sig: i32) {
        self.pending_signals.retain(|&s| s != sig);
    }

    /// Extended FPU state (`NT_X86_XSTATE`).
    pub fn xstate(&self) -> Result<Vec<u8>, InjectError> {
        let mut buf = vec![0u8; 16384];
        let len = sys::get_regset(self.tid, sys::NT_X86_XSTATE, &mut buf).map_err(|source| {
            InjectError::Ptrace {
                op: "GETREGSET(XSTATE)",
                tid: self.tid,
                source,
            }
        })?;
        buf.truncate(len);
        Ok(buf)
    }

    /// Sets the extended FPU state.
    pub fn set_xstate(&self, xstate: &[u8]) -> Result<(), InjectError> {
        sys::set_regset(self.tid, sys::NT_X86_XSTATE, xstate).map_err(|source| {
            InjectError::Ptrace {
                op: "SETREGSET(XSTATE)",
                tid: self.tid,
                source,
            }
        })
    }

    /// Blocked signals.
    pub fn sigmask(&self) -> Result<u64, InjectError> {
        sys::get_sigmask(self.tid).map_err(|source| InjectError::Ptrace {
            op: "GETSIGMASK",
            tid: self.tid,
            source,
        })
    }

    /// Sets the blocked signals.
    pub fn set_sigmask(&self, mask: u64) -> Result<(), InjectError> {
        sys::set_sigmask(self.tid, mask).map_err(|source| InjectError::Ptrace {
            op: "SETSIGMASK",
            tid: self.tid,
            source,
        })
    }

    /// Signals queued for this thread (or, with `shared`, for its whole
    /// thread group), as `siginfo_t` records, left in the queue.
    pub fn queued_signals(&self, shared: bool) -> Result<Vec<[u8; sys::SIGINFO_LEN]>, InjectError> {
        sys::peek_siginfo(self.tid, shared).map_err(|source| InjectError::Ptrace {
            op: "PEEKSIGINFO",
            tid: self.tid,
            source,
        })
    }

    /// rseq registration: `(address, length, signature)`, or `None`.
    pub fn rseq(&self) -> Result<Option<(u64, u32, u32)>, InjectError> {
        let c = sys::get_rseq(self.tid).map_err(|source| InjectError::Ptrace {
            op: "GET_RSEQ_CONFIGURATION",
            tid: self.tid,
            source,
        })?;
        Ok((c.rseq_abi_pointer != 0).then_some((c.rseq_abi_pointer, c.rseq_abi_size, c.signature)))
    }

    /// Address of a `syscall` instruction in the task to run remote syscalls from.
    pub fn set_syscall_insn(&mut self, addr: u64) {
        self.syscall_insn = Some(addr);
    }

    /// The `syscall` instruction injections run from.
    pub fn syscall_insn(&self) -> Option<u64> {
        self.syscall_insn
    }

    /// Runs syscall `nr` in the task; returns its result or the errno.
    pub fn syscall(&mut self, nr: i64, args: [u64; 6]) -> Result<u64, InjectError> {
        let ret = self.run_syscall(nr, args, None)?;
        self.check(nr, ret)
    }

    /// Runs syscall `nr` and leaves the task at its exit stop with `last`
    /// as its registers: the last step of building a process.
    pub fn syscall_last(
        &mut self,
        nr: i64,
        args: [u64; 6],
        last: Regs,
    ) -> Result<u64, InjectError> {
        let ret = self.run_syscall(nr, args, Some(last))?;
        self.saved = last;
        self.injected = false;
        self.check(nr, ret)
    }

    fn check(&self, nr: i64, ret: i64) -> Result<u64, InjectError> {
        if (-4095..0).contains(&ret) {
            let errno = i32::try_from(-ret).unwrap_or(libc::EINVAL);
            return Err(InjectError::RemoteSyscall {
                nr,
                tid: self.tid,
                source: io::Error::from_raw_os_error(errno),
            });
        }
        Ok(ret as u64)
    }

    fn run_syscall(
        &mut self,
        nr: i64,
        args: [u64; 6],
        last: Option<Regs>,
    ) -> Result<i64, InjectError> {
        let ret = self.enter_and_exit(nr, args)?;
        let tid = self.tid;
        let back = last.unwrap_or(self.saved);
        sys::set_regs(tid, &back).map_err(|source| InjectError::Ptrace {
            op: "SETREGS",
            tid,
            source,
        })?;
        // Its own registers again: abandoned from here, it may run on.
        if self.options & libc::PTRACE_O_EXITKILL == 0 && self.way_back.is_none() {
            ptrace(
                "SETOPTIONS",
                libc::PTRACE_SETOPTIONS,
                tid,
                self.options as u64,
            )?;
        }
        Ok(ret)
    }

    /// Points the task at the `syscall` instruction with `nr` and `args`,
    /// runs it to its exit stop and returns its raw result; the registers
    /// are left as the syscall left them.
    fn enter_and_exit(&mut self, nr: i64, args: [u64; 6]) -> Result<i64, InjectError> {
        let tid = self.tid;
        let insn = self.syscall_insn.ok_or(InjectError::Ptrace {
            op: "SYSCALL (no syscall instruction known)",
            tid,
            source: io::Error::from(io::ErrorKind::NotFound),
        })?;
        let mut r = self.saved;
        r.0.rip = insn;
        if let Some((path, frame, space, mem)) = &self.way_back {
            // Abandoned from here on, it returns through the frame.
            if !space.holds(tid) {
                mem.write(frame.base, &frame.bytes)?;
                space.now_holds(tid);
            }
            r.0.rip = path.site;
            r.0.rsp = frame.sp;
            if path.leave {
                r.0.rbp = frame.base;
            }
        }
        r.0.rax = nr as u64;
        r.0.orig_rax = u64::MAX;
        r.0.rdi = args[0];
        r.0.rsi = args[1];
        r.0.rdx = args[2];
        r.0.r10 = args[3];
        r.0.r8 = args[4];
        r.0.r9 = args[5];
        // Without a way back, with the injection's registers it must never
        // run on its own: if the tracer dies now, the kernel kills it.
        if self.options & libc::PTRACE_O_EXITKILL == 0 && self.way_back.is_none() {
            ptrace(
                "SETOPTIONS",
                libc::PTRACE_SETOPTIONS,
                tid,
                (self.options | libc::PTRACE_O_EXITKILL) as u64,
            )?;
        }
        self.injected = true;
        sys::set_regs(tid, &r).map_err(|source| InjectError::Ptrace {
            op: "SETREGS",
            tid,
            source,
        })?;
        self.step_to_syscall_stop()?; // entry
        if let Some(hook) = self.midway {
            hook().map_err(|why| InjectError::Interrupted { tid, why })?;
        }
        self.step_to_syscall_stop()?; // exit
        let out = sys::get_regs(tid).map_err(|source| InjectError::Ptrace {
            op: "GETREGS",
            tid,
            source,
        })?;
        Ok(out.0.rax as i64)
    }

    fn step_to_syscall_stop(&mut self) -> Result<(), InjectError> {
        let tid = self.tid;
        let mut sig = 0u64;
        for _ in 0..64 {
            ptrace("SYSCALL", libc::PTRACE_SYSCALL, tid, sig)?;
            let status = wait(tid)?;
            let stopsig = libc::WSTOPSIG(status);
            if stopsig == SYSCALL_STOP {
                return Ok(());
            }
            if status >> 16 != 0 {
                // An event stop (group stop, clone of an injected clone3):
                // nothing to deliver.
                if matches!(
                    status >> 16,
                    libc::PTRACE_EVENT_CLONE | libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK
                ) {
                    let msg = sys::get_event_msg(tid).map_err(|source| InjectError::Ptrace {
                        op: "GETEVENTMSG",
                        tid,
                        source,
                    })?;
                    self.cloned = i32::try_from(msg).ok();
                }
                sig = 0;
                continue;
            }
            if matches!(
                stopsig,
                libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE
            ) {
                // The injected call itself faulted: not something to retry.
                return Err(InjectError::UnexpectedStop { tid, status });
            }
            // A signal arrived: hold it back until the task is released.
            self.pending_signals.push(stopsig);
            sig = 0;
        }
        Err(InjectError::UnexpectedStop { tid, status: 0 })
    }

    /// Runs `execve` in the task and lets the new program go: the task is
    /// detached at the exec's syscall exit with the new image's registers.
    /// If the exec fails the task is killed, never resumed as it was.
    pub fn exec_and_release(mut self, args: [u64; 6]) -> Result<(), InjectError> {
        let r = self.try_exec(args);
        if r.is_err() {
            // Never let a task that was meant to become something else run
            // on as it was.
            self.released = true;
            let _ = sys::tgkill(self.tgid, self.tid, libc::SIGKILL);
            let _ = sys::ptrace_simple(libc::PTRACE_DETACH, self.tid, 0, 0);
        }
        r
    }

    fn try_exec(&mut self, args: [u64; 6]) -> Result<(), InjectError> {
        let tid = self.tid;
        let ret = self.enter_and_exit(libc::SYS_execve, args)?;
        self.check(libc::SYS_execve, ret)?;
        self.released = true;
        ptrace("DETACH", libc::PTRACE_DETACH, tid, 0)
    }

    /// Forgets a task that no longer exists (a thread ended by another
    /// thread's execve) without touching it.
    pub fn abandon(mut self) {
        self.released = true;
    }

    /// Detaches, leaving the task running.
    pub fn detach(mut self) -> Result<(), InjectError> {
        self.release()
    }

    fn release(&mut self) -> Result<(), InjectError> {
        if self.released {
            return Ok(());
        }
        self.released = true;
        let tid = self.tid;
        let regs = if self.injected {
            self.saved.for_resume_elsewhere()
        } else {
            self.saved
        };
        sys::set_regs(tid, &regs).map_err(|source| InjectError::Ptrace {
            op: "SETREGS",
            tid,
            source,
        })?;
        let mut signals = std::mem::take(&mut self.pending_signals).into_iter();
        let first = signals.next().unwrap_or(0);
        ptrace("DETACH", libc::PTRACE_DETACH, tid, first as u64)?;
        for sig in signals {
            let _ = sys::tgkill(self.tgid, tid, sig);
        }
        debug!(tid, "detached");
        Ok(())
    }

    /// Kills the task (SIGKILL) and forgets it.
    pub fn kill(mut self) {
        self.kill_in_place();
    }

    /// As [`Seized::detach`], for an owner that cannot give the handle up
    /// (it is inert afterwards).
    pub fn detach_in_place(&mut self) -> Result<(), InjectError> {
        self.release()
    }

    /// As [`Seized::kill`], for an owner that cannot give the handle up
    /// (it is inert afterwards).
    pub fn kill_in_place(&mut self) {
        self.released = true;
        let _ = sys::tgkill(self.tgid, self.tid, libc::SIGKILL);
        let _ = sys::ptrace_simple(libc::PTRACE_DETACH, self.tid, 0, 0);
    }
}

impl Drop for Seized {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            warn!(tid = self.tid, error = %e, "could not release task");
        }
    }
}

/// Why injected syscalls got no way back.
#[derive(Debug, thiserror::Error)]
pub enum WayBackError {
    /// The task's state could not be read, or the frame not written.
    #[error(transparent)]
    Inject(#[from] InjectError),
    /// No frame that returns it exactly could be made.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

fn wait(tid: i32) -> Result<i32, InjectError> {
    let status = sys::wait(tid).map_err(|source| InjectError::Ptrace {
        op: "waitpid",
        tid,
        source,
    })?;
    if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
        return Err(InjectError::Gone { tid, status });
    }
    Ok(status)
}
