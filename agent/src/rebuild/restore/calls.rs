//! Typed remote calls of the [`Restorer`]: the system calls it makes
//! inside the process (in the thread in `self.task`) for its memory,
//! credentials, signals, timers and threads, each with its arguments named
//! and typed (structures written to the scratch page here) and its own
//! step text for errors. The descriptors' calls are
//! [`crate::fd::RemoteCalls`].
//!
//! Most pass the failpoint `dest.rebuild.injecting` ([`Restorer::sys`]);
//! those documented "no failpoint" never did: they run before the
//! Restorer exists, move the stub's own mappings, answer with an errno
//! the caller handles, or are the last call of all.

use std::io;

use linux_raw_sys::{general as k, prctl as pr};
use migrate_proto::image::{AltStack, ITimer, Rseq, SigAction};

use super::*;

// The kernel's numbers and struct sizes, from its headers (linux-raw-sys).
const PR_SET_MM: u64 = pr::PR_SET_MM as u64;
const PR_SET_MM_MAP: u64 = pr::PR_SET_MM_MAP as u64;
const PR_SET_NAME: u64 = pr::PR_SET_NAME as u64;
const PR_SET_KEEPCAPS: u64 = pr::PR_SET_KEEPCAPS as u64;
const PR_SET_DUMPABLE: u64 = pr::PR_SET_DUMPABLE as u64;
const PR_SET_PDEATHSIG: u64 = pr::PR_SET_PDEATHSIG as u64;
const PR_TIMER_CREATE_RESTORE_IDS: u64 = pr::PR_TIMER_CREATE_RESTORE_IDS as u64;
const PR_SET_NO_NEW_PRIVS: u64 = pr::PR_SET_NO_NEW_PRIVS as u64;
const LINUX_CAPABILITY_VERSION_3: u32 = k::_LINUX_CAPABILITY_VERSION_3;
/// `struct clone_args`, written word by word (11 words).
const CLONE_ARGS_SIZE: u64 = std::mem::size_of::<k::clone_args>() as u64;
const _: () = assert!(CLONE_ARGS_SIZE == 11 * 8);
/// `struct prctl_mm_map`, written field by field (12 words, two u32s,
/// the auxv pointer being one of the words).
const PRCTL_MM_MAP_SIZE: u64 = std::mem::size_of::<pr::prctl_mm_map>() as u64;
const _: () = assert!(PRCTL_MM_MAP_SIZE == 12 * 8 + 8);

/// How a POSIX timer notifies (the fields of `struct sigevent` it uses).
pub(super) struct SigEvent {
    /// `sigev_value`.
    pub value: u64,
    /// `sigev_signo`.
    pub signo: i32,
    /// `sigev_notify`.
    pub notify: i32,
    /// The thread signalled (`SIGEV_THREAD_ID`), or 0.
    pub tid: i32,
}

impl Restorer {
    /// As [`Restorer::sys`], without the failpoint.
    fn raw(
        &mut self,
        what: impl Into<String>,
        nr: i64,
        args: [u64; 6],
    ) -> Result<u64, RestoreError> {
        step(what, self.task.syscall(nr, args))
    }

    /// Runs syscall `nr` without the failpoint; its own failure with
    /// errno `answer` is an answer, `Ok(Err(_))`; any other failure is an
    /// error that `what` names.
    fn raw_or(
        &mut self,
        what: impl Into<String>,
        nr: i64,
        args: [u64; 6],
        answer: i32,
    ) -> Result<Result<u64, io::Error>, RestoreError> {
        match self.task.syscall(nr, args) {
            Ok(v) => Ok(Ok(v)),
            Err(InjectError::RemoteSyscall { source, .. })
                if source.raw_os_error() == Some(answer) =>
            {
                Ok(Err(source))
            }
            Err(e) => step(what, Err(e)),
        }
    }

    // Memory.

    /// `mmap(addr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE |
    /// MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0)` in `task`, before its
    /// Restorer exists: the scratch area. No failpoint.
    pub(super) fn map_scratch(task: &mut Seized, addr: u64, len: u64) -> Result<(), RestoreError> {
        step(
            "mapping the scratch page",
            task.syscall(
                libc::SYS_mmap,
                [
                    addr,
                    len,
                    (libc::PROT_READ | libc::PROT_WRITE) as u64,
                    (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64,
                    u64::MAX,
                    0,
                ],
            ),
        )
        .map(|_| ())
    }

    /// `munmap(addr, len)`: removes a mapping of the stub. No failpoint.
    pub(super) fn munmap(&mut self, addr: u64, len: u64) -> Result<(), RestoreError> {
        self.raw(
            format!("unmapping the stub's {addr:#x}-{:#x}", addr + len),
            libc::SYS_munmap,
            [addr, len, 0, 0, 0, 0],
        )
        .map(|_| ())
    }

    /// `mremap(from, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, to)`: moves
    /// the mapping at `from` to `to`. No failpoint.
    pub(super) fn mremap(&mut self, from: u64, len: u64, to: u64) -> Result<(), RestoreError> {
        self.raw(
            format!("moving {from:#x}-{:#x} to {to:#x}", from + len),
            libc::SYS_mremap,
            [
                from,
                len,
                len,
                (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64,
                to,
                0,
            ],
        )
        .map(|_| ())
    }

    /// `mmap(addr, len, prot, flags, fd, offset)`: a mapping at `addr`
    /// (`fd` -1 for anonymous memory).
    pub(super) fn mmap(
        &mut self,
        addr: u64,
        len: u64,
        prot: u32,
        flags: i32,
        fd: i32,
        offset: u64,
    ) -> Result<u64, RestoreError> {
        self.sys(
            format!("mapping {addr:#x}-{:#x}", addr + len),
            libc::SYS_mmap,
            [addr, len, u64::from(prot), flags as u64, fd as u64, offset],
        )
    }

    /// `madvise(addr, len, advice)`: advice on a mapping.
    pub(super) fn madvise(&mut self, addr: u64, len: u64, advice: u32) -> Result<(), RestoreError> {
        self.sys(
            format!("madvise({advice}) at {addr:#x}"),
            libc::SYS_madvise,
            [addr, len, u64::from(advice), 0, 0, 0],
        )
        .map(|_| ())
    }

    /// `openat(AT_FDCWD, path, flags)`: opens `path` in the process.
    pub(super) fn open(&mut self, path: &str, flags: i32) -> Result<i32, RestoreError> {
        let p = self.put_str(path)?;
        self.sys(
            format!("opening {path}"),
            libc::SYS_openat,
            [libc::AT_FDCWD as u64, p, flags as u64, 0, 0, 0],
        )
        .map(|fd| fd as i32)
    }

    /// `close(fd)`: closes descriptor `fd`, which `what` names in errors.
    pub(super) fn close(&mut self, fd: i32, what: &str) -> Result<(), RestoreError> {
        self.sys(
            format!("closing {what} (fd {fd})"),
            libc::SYS_close,
            [fd as u64, 0, 0, 0, 0, 0],
        )
        .map(|_| ())
    }

    /// `userfaultfd(flags)`: a new userfaultfd in the process.
    pub(super) fn create_userfaultfd(&mut self, flags: i32) -> Result<i32, RestoreError> {
        self.sys(
            "userfaultfd",
            libc::SYS_userfaultfd,
            [flags as u64, 0, 0, 0, 0, 0],
        )
        .map(|fd| fd as i32)
    }

    /// `prctl(PR_SET_MM, PR_SET_MM_MAP, map)`: the `mm` fields at once
    /// (`map` a `struct prctl_mm_map`, followed by what it points to in
    /// the scratch page).
    pub(super) fn prctl_set_mm_map(&mut self, map: &[u8]) -> Result<(), RestoreError> {
        let p = self.put_bytes(map)?;
        self.prctl(
            "PR_SET_MM_MAP",
            [PR_SET_MM, PR_SET_MM_MAP, p, PRCTL_MM_MAP_SIZE],
        )
    }

    // Process attributes.

    /// `chdir(path)`: the working directory.
    pub(super) fn chdir(&mut self, path: &str) -> Result<(), RestoreError> {
        let p = self.put_str(path)?;
        self.sys(format!("chdir {path}"), libc::SYS_chdir, [p, 0, 0, 0, 0, 0])
            .map(|_| ())
    }

    /// `umask(mask)`: the file mode creation mask.
    pub(super) fn umask(&mut self, mask: u32) -> Result<(), RestoreError> {
        self.sys("umask", libc::SYS_umask, [u64::from(mask), 0, 0, 0, 0, 0])
            .map(|_| ())
    }

    /// `prctl(option, args...)`, `what` naming the option in errors.
    fn prctl(&mut self, what: &str, args: [u64; 4]) -> Result<(), RestoreError> {
        let [option, a2, a3, a4] = args;
        self.sys(what, libc::SYS_prctl, [option, a2, a3, a4, 0, 0])
            .map(|_| ())
    }

    /// `prctl(PR_SET_NAME, name)`: the thread's name.
    pub(super) fn prctl_set_name(&mut self, name: &str) -> Result<(), RestoreError> {
        let p = self.put_str(name)?;
        self.prctl("PR_SET_NAME", [PR_SET_NAME, p, 0, 0])
    }

    /// `prctl(PR_SET_KEEPCAPS, on)`: whether capabilities survive a
    /// change of uids.
    pub(super) fn prctl_set_keepcaps(&mut self, on: bool) -> Result<(), RestoreError> {
        self.prctl("PR_SET_KEEPCAPS", [PR_SET_KEEPCAPS, u64::from(on), 0, 0])
    }

    /// `prctl(PR_SET_DUMPABLE, on)`: whether the process is dumpable.
    pub(super) fn prctl_set_dumpable(&mut self, on: bool) -> Result<(), RestoreError> {
        self.prctl("PR_SET_DUMPABLE", [PR_SET_DUMPABLE, u64::from(on), 0, 0])
    }

    /// `prctl(PR_SET_NO_NEW_PRIVS, 1)`: no more privilege through execve.
    pub(super) fn prctl_set_no_new_privs(&mut self) -> Result<(), RestoreError> {
        self.prctl("PR_SET_NO_NEW_PRIVS", [PR_SET_NO_NEW_PRIVS, 1, 0, 0])
    }

    /// `prctl(PR_SET_PDEATHSIG, signo)`: the signal the thread gets when
    /// its parent dies.
    pub(super) fn prctl_set_pdeathsig(&mut self, signo: i32) -> Result<(), RestoreError> {
        self.prctl("PR_SET_PDEATHSIG", [PR_SET_PDEATHSIG, signo as u64, 0, 0])
    }

    /// `prctl(PR_TIMER_CREATE_RESTORE_IDS, on)`: whether `timer_create`
    /// takes the id to use from its `timer_id` argument.
    pub(super) fn prctl_timer_create_restore_ids(&mut self, on: bool) -> Result<(), RestoreError> {
        let what = if on {
            "PR_TIMER_CREATE_RESTORE_IDS"
        } else {
            "PR_TIMER_CREATE_RESTORE_IDS off"
        };
        self.prctl(what, [PR_TIMER_CREATE_RESTORE_IDS, u64::from(on), 0, 0])
    }

    /// `prlimit64(0, res, {cur, max}, NULL)`: sets resource limit
    /// `res`; `EPERM` (above what the agent may set) is an answer,
    /// `Ok(Err(_))`. No failpoint.
    pub(super) fn try_prlimit64(
        &mut self,
        res: u32,
        cur: u64,
        max: u64,
    ) -> Result<Result<(), io::Error>, RestoreError> {
        let mut b = Vec::with_capacity(16);
        b.extend_from_slice(&cur.to_le_bytes());
        b.extend_from_slice(&max.to_le_bytes());
        let p = self.put_bytes(&b)?;
        Ok(self
            .raw_or(
                format!("setting resource limit {res}"),
                libc::SYS_prlimit64,
                [0, u64::from(res), p, 0, 0, 0],
                libc::EPERM,
            )?
            .map(|_| ()))
    }

    /// `personality(persona)`: the execution domain.
    pub(super) fn personality(&mut self, persona: u32) -> Result<(), RestoreError> {
        self.sys(
            "personality",
            libc::SYS_personality,
            [u64::from(persona), 0, 0, 0, 0, 0],
        )
        .map(|_| ())
    }

    // Credentials.

    /// `setgroups(groups)`: the supplementary groups.
    pub(super) fn setgroups(&mut self, groups: &[u32]) -> Result<(), RestoreError> {
        let mut b = Vec::with_capacity(groups.len() * 4);
        for g in groups {
            b.extend_from_slice(&g.to_le_bytes());
        }
        let p = self.put_bytes(&b)?;
        self.sys(
            "setgroups",
            libc::SYS_setgroups,
            [groups.len() as u64, p, 0, 0, 0, 0],
        )
        .map(|_| ())
    }

    /// `setfsgid(gid)`: the filesystem gid; returns the previous one
    /// (`u32::MAX` changes nothing).
    pub(super) fn setfsgid(&mut self, gid: u32) -> Result<u32, RestoreError> {
        self.sys(
            "setfsgid",
            libc::SYS_setfsgid,
            [u64::from(gid), 0, 0, 0, 0, 0],
        )
        .map(|g| g as u32)
    }

    /// `setfsuid(uid)`: the filesystem uid; returns the previous one
    /// (`u32::MAX` changes nothing).
    pub(super) fn setfsuid(&mut self, uid: u32) -> Result<u32, RestoreError> {
        self.sys(
            "setfsuid",
            libc::SYS_setfsuid,
            [u64::from(uid), 0, 0, 0, 0, 0],
        )
        .map(|u| u as u32)
    }

    /// `setresgid(real, effective, saved)`.
    pub(super) fn setresgid(&mut self, gid: [u32; 3]) -> Result<(), RestoreError> {
        let [r, e, s] = gid.map(u64::from);
        self.sys(
            format!("setresgid({r}, {e}, {s})"),
            libc::SYS_setresgid,
            [r, e, s, 0, 0, 0],
        )
        .map(|_| ())
    }

    /// `setresuid(real, effective, saved)`.
    pub(super) fn setresuid(&mut self, uid: [u32; 3]) -> Result<(), RestoreError> {
        let [r, e, s] = uid.map(u64::from);
        self.sys(
            format!("setresuid({r}, {e}, {s})"),
            libc::SYS_setresuid,
            [r, e, s, 0, 0, 0],
        )
        .map(|_| ())
    }

    /// `capset`: the thread's capability sets (version 3, this thread).
    pub(super) fn capset(
        &mut self,
        effective: u64,
        permitted: u64,
        inheritable: u64,
    ) -> Result<(), RestoreError> {
        let mut b = Vec::with_capacity(32);
        b.extend_from_slice(&LINUX_CAPABILITY_VERSION_3.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        // Two data words: low and high 32 bits of each set.
        for half in [0, 32] {
            for set in [effective, permitted, inheritable] {
                b.extend_from_slice(&((set >> half) as u32).to_le_bytes());
            }
        }
        let p = self.put_bytes(&b)?;
        self.sys("capset", libc::SYS_capset, [p, p + 8, 0, 0, 0, 0])
            .map(|_| ())
    }

    // Signals and timers.

    /// `rt_sigaction(signo, act, NULL, 8)` with `act` the four words
    /// `struct kernel_sigaction` holds.
    fn sigaction(&mut self, what: String, signo: u32, act: [u64; 4]) -> Result<(), RestoreError> {
        let mut b = Vec::with_capacity(32);
        for w in act {
            b.extend_from_slice(&w.to_le_bytes());
        }
        let p = self.put_bytes(&b)?;
        self.sys(
            what,
            libc::SYS_rt_sigaction,
            [u64::from(signo), p, 0, 8, 0, 0],
        )
        .map(|_| ())
    }

    /// `rt_sigaction`: the disposition `a` for its signal.
    pub(super) fn rt_sigaction(&mut self, a: &SigAction) -> Result<(), RestoreError> {
        self.sigaction(
            format!("rt_sigaction({})", a.signo),
            a.signo,
            [a.handler, a.flags, a.restorer, a.mask],
        )
    }

    /// `rt_sigaction` to `SIG_DFL`: signal `signo` back to its default.
    pub(super) fn sigaction_default(&mut self, signo: u32) -> Result<(), RestoreError> {
        self.sigaction(format!("resetting signal {signo}"), signo, [0; 4])
    }

    /// `setitimer(which, {interval, value}, NULL)`: interval timer `t`.
    pub(super) fn setitimer(&mut self, t: &ITimer) -> Result<(), RestoreError> {
        let mut b = Vec::with_capacity(32);
        for w in [
            t.interval_us / 1_000_000,
            t.interval_us % 1_000_000,
            t.value_us / 1_000_000,
            t.value_us % 1_000_000,
        ] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        let p = self.put_bytes(&b)?;
        self.sys(
            format!("setitimer({})", t.which),
            libc::SYS_setitimer,
            [u64::from(t.which), p, 0, 0, 0, 0],
        )
        .map(|_| ())
    }

    /// `timer_create(clock, ev, &id)` with `id` asked for (under
    /// `PR_TIMER_CREATE_RESTORE_IDS`); returns the id the timer got.
    pub(super) fn timer_create(
        &mut self,
        clock: i32,
        ev: &SigEvent,
        id: i32,
    ) -> Result<i32, RestoreError> {
        // struct sigevent (64 bytes), then the id slot.
        let mut b = vec![0u8; 64];
        b[0..8].copy_from_slice(&ev.value.to_le_bytes());
        b[8..12].copy_from_slice(&ev.signo.to_le_bytes());
        b[12..16].copy_from_slice(&ev.notify.to_le_bytes());
        b[16..20].copy_from_slice(&ev.tid.to_le_bytes());
        b.extend_from_slice(&(id as u64).to_le_bytes());
        let p = self.put_bytes(&b)?;
        self.sys(
            format!("timer_create (id {id})"),
            libc::SYS_timer_create,
            [clock as u64, p, p + 64, 0, 0, 0],
        )?;
        let mut got = [0u8; 4];
        step("reading a timer id", self.mem.read(p + 64, &mut got))?;
        Ok(i32::from_le_bytes(got))
    }

    /// `timer_settime(id, 0, {interval, value}, NULL)`: arms POSIX timer
    /// `id` (relative times, in nanoseconds).
    pub(super) fn timer_settime(
        &mut self,
        id: i32,
        interval_ns: u64,
        value_ns: u64,
    ) -> Result<(), RestoreError> {
        let q = self.put_bytes(&crate::fd::itimerspec(interval_ns, value_ns))?;
        self.sys(
            format!("timer_settime (id {id})"),
            libc::SYS_timer_settime,
            [id as u64, 0, q, 0, 0, 0],
        )
        .map(|_| ())
    }

    /// `rt_sigtimedwait({signo}, NULL, {0, 0}, 8)`: takes signal `signo`
    /// off the pending set, if it is there, without waiting.
    pub(super) fn rt_sigtimedwait_now(&mut self, signo: i32) -> Result<(), RestoreError> {
        let mut b = (1u64 << (signo - 1)).to_le_bytes().to_vec();
        b.extend_from_slice(&[0u8; 16]);
        let p = self.put_bytes(&b)?;
        self.raw_or(
            format!("taking signal {signo} off the pending set"),
            libc::SYS_rt_sigtimedwait,
            [p, 0, p + 8, 8, 0, 0],
            libc::EAGAIN,
        )
        .map(|_| ())
    }

    /// `rt_sigqueueinfo(pid, signo, info)`: queues a process-wide signal
    /// with its 128-byte `siginfo`.
    pub(super) fn rt_sigqueueinfo(
        &mut self,
        pid: i32,
        signo: i32,
        info: &[u8],
    ) -> Result<(), RestoreError> {
        let p = self.put_bytes(info)?;
        let signo = u64::from(signo as u32);
        self.sys(
            format!("requeueing signal {signo}"),
            libc::SYS_rt_sigqueueinfo,
            [u64::from(pid as u32), signo, p, 0, 0, 0],
        )
        .map(|_| ())
    }

    /// `rt_tgsigqueueinfo(pid, tid, signo, info)`: queues a signal for
    /// thread `tid` with its 128-byte `siginfo`.
    pub(super) fn rt_tgsigqueueinfo(
        &mut self,
        pid: i32,
        tid: i32,
        signo: i32,
        info: &[u8],
    ) -> Result<(), RestoreError> {
        let p = self.put_bytes(info)?;
        let signo = u64::from(signo as u32);
        self.sys(
            format!("requeueing signal {signo} for thread {tid}"),
            libc::SYS_rt_tgsigqueueinfo,
            [u64::from(pid as u32), u64::from(tid as u32), signo, p, 0, 0],
        )
        .map(|_| ())
    }

    // Threads.

    /// `struct clone_args` for a thread (`flags`), with the one-entry
    /// `set_tid` array asking for id `tid` when given.
    fn clone_args(&self, flags: u64, set_tid: Option<i32>) -> Vec<u8> {
        self.clone_args_signal(flags, 0, set_tid)
    }

    /// As [`Restorer::clone_args`], with `exit_signal` (a new process's
    /// signal to its parent when it ends).
    fn clone_args_signal(&self, flags: u64, exit_signal: u64, set_tid: Option<i32>) -> Vec<u8> {
        let (at, n) = match set_tid {
            Some(_) => (self.scratch + 128, 1),
            None => (0, 0),
        };
        let mut b = Vec::with_capacity(136);
        for w in [flags, 0, 0, 0, exit_signal, 0, 0, 0, at, n, 0] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.resize(128, 0);
        if let Some(tid) = set_tid {
            b.extend_from_slice(&(tid as u64).to_le_bytes());
        }
        b
    }

    /// `clone3` of a thread (`flags`) with id `tid`; `EEXIST` (the id is
    /// taken here) is an answer, `Ok(Err(_))`. Returns the new thread's
    /// id. No failpoint.
    pub(super) fn try_clone3_as(
        &mut self,
        flags: u64,
        tid: i32,
    ) -> Result<Result<i32, io::Error>, RestoreError> {
        let p = self.put_bytes(&self.clone_args(flags, Some(tid)))?;
        Ok(self
            .raw_or(
                format!("creating thread {tid}"),
                libc::SYS_clone3,
                [p, CLONE_ARGS_SIZE, 0, 0, 0, 0],
                libc::EEXIST,
            )?
            .map(|v| v as i32))
    }

    /// `clone3` of a thread (`flags`) with any id, `tid` naming the
    /// image's thread in errors. Returns the new thread's id. No failpoint.
    pub(super) fn clone3(&mut self, flags: u64, tid: i32) -> Result<i32, RestoreError> {
        let p = self.put_bytes(&self.clone_args(flags, None))?;
        self.raw(
            format!("creating thread {tid}"),
            libc::SYS_clone3,
            [p, CLONE_ARGS_SIZE, 0, 0, 0, 0],
        )
        .map(|v| v as i32)
    }

    /// `clone3` of a new process (a fork: the child a copy of this one,
    /// sharing its private pages copy-on-write) with pid `pid`; `EEXIST`
    /// (the pid is taken here) is an answer, `Ok(Err(_))`. No failpoint.
    pub(super) fn try_fork_as(&mut self, pid: i32) -> Result<Result<i32, io::Error>, RestoreError> {
        let args = self.clone_args_signal(0, libc::SIGCHLD as u64, Some(pid));
        let p = self.put_bytes(&args)?;
        Ok(self
            .raw_or(
                format!("forking process {pid}"),
                libc::SYS_clone3,
                [p, CLONE_ARGS_SIZE, 0, 0, 0, 0],
                libc::EEXIST,
            )?
            .map(|v| v as i32))
    }

    /// `setsid()`: a new session and process group, led by this process.
    pub(super) fn setsid(&mut self) -> Result<(), RestoreError> {
        self.sys("setsid", libc::SYS_setsid, [0; 6]).map(|_| ())
    }

    /// `setpgid(0, pgid)`: joins (or, its own pid, leads) group `pgid`.
    pub(super) fn setpgid(&mut self, pgid: i32) -> Result<(), RestoreError> {
        self.sys(
            format!("setpgid(0, {pgid})"),
            libc::SYS_setpgid,
            [0, pgid as u64, 0, 0, 0, 0],
        )
        .map(|_| ())
    }

    /// `set_tid_address(addr)`: the word cleared at the thread's exit.
    pub(super) fn set_tid_address(&mut self, addr: u64) -> Result<(), RestoreError> {
        self.sys(
            "set_tid_address",
            libc::SYS_set_tid_address,
            [addr, 0, 0, 0, 0, 0],
        )
        .map(|_| ())
    }

    /// `sigaltstack(stack, NULL)`: the thread's alternate signal stack,
    /// or none (`SS_DISABLE`).
    pub(super) fn sigaltstack(&mut self, stack: Option<AltStack>) -> Result<(), RestoreError> {
        let (sp, flags, size) = match stack {
            Some(a) => (a.sp, u64::from(a.flags), a.size),
            None => (0, libc::SS_DISABLE as u64, 0),
        };
        let mut st = Vec::with_capacity(24);
        for w in [sp, flags, size] {
            st.extend_from_slice(&w.to_le_bytes());
        }
        let p = self.put_bytes(&st)?;
        self.sys("sigaltstack", libc::SYS_sigaltstack, [p, 0, 0, 0, 0, 0])
            .map(|_| ())
    }

    /// `set_robust_list(head, len)`: the thread's robust futex list.
    pub(super) fn set_robust_list(&mut self, head: u64, len: u64) -> Result<(), RestoreError> {
        self.sys(
            "set_robust_list",
            libc::SYS_set_robust_list,
            [head, len, 0, 0, 0, 0],
        )
        .map(|_| ())
    }

    /// `rseq(addr, len, 0, sig)`: registers the thread's `struct rseq`.
    pub(super) fn rseq(&mut self, r: Rseq) -> Result<(), RestoreError> {
        self.sys(
            "rseq registration",
            libc::SYS_rseq,
            [r.addr, u64::from(r.len), 0, u64::from(r.sig), 0, 0],
        )
        .map(|_| ())
    }

    /// `munmap` of the scratch area as the thread's very last injected
    /// call: it stays at that call's exit stop with `regs`, its own. No
    /// failpoint.
    pub(super) fn unmap_scratch_last(&mut self, regs: Regs) -> Result<(), RestoreError> {
        step(
            "unmapping the scratch page",
            self.task.syscall_last(
                libc::SYS_munmap,
                [self.scratch, SCRATCH_LEN, 0, 0, 0, 0],
                regs,
            ),
        )
        .map(|_| ())
    }
}
