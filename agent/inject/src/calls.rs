//! Typed remote calls: the system calls the agent makes inside another
//! process, each with its arguments named and typed, instead of a number
//! and six words packed by the caller. Addresses are the task's; reads
//! (`*_into`) write their result at an address of the task's memory that
//! the caller reads back.

use crate::{InjectError, Seized};

/// `prctl` options the agent reads.
pub mod pr {
    /// `PR_GET_PDEATHSIG` (writes an `int`).
    pub const GET_PDEATHSIG: i32 = libc::PR_GET_PDEATHSIG;
    /// `PR_GET_DUMPABLE` (returns it).
    pub const GET_DUMPABLE: i32 = libc::PR_GET_DUMPABLE;
    /// `PR_GET_NO_NEW_PRIVS` (returns it).
    pub const GET_NO_NEW_PRIVS: i32 = libc::PR_GET_NO_NEW_PRIVS;
    /// `PR_GET_TID_ADDRESS` (writes a pointer).
    pub const GET_TID_ADDRESS: i32 = libc::PR_GET_TID_ADDRESS;
}

impl Seized {
    /// `prctl(option, arg2, 0, 0, 0)`.
    pub fn prctl(&mut self, option: i32, arg2: u64) -> Result<u64, InjectError> {
        self.syscall(libc::SYS_prctl, [option as u64, arg2, 0, 0, 0, 0])
    }

    /// `brk(0)`: the current program break.
    pub fn current_brk(&mut self) -> Result<u64, InjectError> {
        self.syscall(libc::SYS_brk, [0; 6])
    }

    /// `personality(0xffffffff)`: the persona, unchanged.
    pub fn current_personality(&mut self) -> Result<u32, InjectError> {
        self.syscall(libc::SYS_personality, [0xffff_ffff, 0, 0, 0, 0, 0])
            .map(|p| p as u32)
    }

    /// `rt_sigaction(signo, NULL, out)`: signal `signo`'s `struct
    /// sigaction` (kernel layout, 32 bytes) written at `out`.
    pub fn sigaction_into(&mut self, signo: u32, out: u64) -> Result<(), InjectError> {
        self.syscall(libc::SYS_rt_sigaction, [u64::from(signo), 0, out, 8, 0, 0])
            .map(|_| ())
    }

    /// `getitimer(which, out)`: `struct itimerval` at `out`.
    pub fn getitimer_into(&mut self, which: u32, out: u64) -> Result<(), InjectError> {
        self.syscall(libc::SYS_getitimer, [u64::from(which), out, 0, 0, 0, 0])
            .map(|_| ())
    }

    /// `timer_gettime(id, out)`: `struct itimerspec` at `out`.
    pub fn timer_gettime_into(&mut self, id: i32, out: u64) -> Result<(), InjectError> {
        self.syscall(libc::SYS_timer_gettime, [id as u64, out, 0, 0, 0, 0])
            .map(|_| ())
    }

    /// `sigaltstack(NULL, out)`: the alternate signal stack (`stack_t`) at
    /// `out`.
    pub fn sigaltstack_into(&mut self, out: u64) -> Result<(), InjectError> {
        self.syscall(libc::SYS_sigaltstack, [0, out, 0, 0, 0, 0])
            .map(|_| ())
    }

    /// `mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE |
    /// MAP_ANONYMOUS, -1, 0)`: fresh private memory.
    pub fn map_anonymous(&mut self, len: u64) -> Result<u64, InjectError> {
        self.syscall(
            libc::SYS_mmap,
            [
                0,
                len,
                (libc::PROT_READ | libc::PROT_WRITE) as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
                u64::MAX,
                0,
            ],
        )
    }

    /// `munmap(addr, len)`.
    pub fn munmap(&mut self, addr: u64, len: u64) -> Result<(), InjectError> {
        self.syscall(libc::SYS_munmap, [addr, len, 0, 0, 0, 0])
            .map(|_| ())
    }

    /// `userfaultfd(flags)`: a new userfaultfd in the task.
    pub fn userfaultfd(&mut self, flags: i32) -> Result<i32, InjectError> {
        self.syscall(libc::SYS_userfaultfd, [flags as u64, 0, 0, 0, 0, 0])
            .map(|fd| fd as i32)
    }

    /// `close(fd)`.
    pub fn close(&mut self, fd: i32) -> Result<(), InjectError> {
        self.syscall(libc::SYS_close, [fd as u64, 0, 0, 0, 0, 0])
            .map(|_| ())
    }
}
