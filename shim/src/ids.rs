//! Virtual process and thread ids: inside a cooperating process `getpid`,
//! `gettid`, `getppid` (and the same calls made through `syscall(2)`)
//! answer with the ids the process had where it started, and `kill`,
//! `tgkill` and `tkill` aimed at those ids reach the process's own
//! threads wherever it runs now. The table behind it is the state block
//! ([`crate::block`]), which the destination agent rewrites at each move;
//! these wrappers only read it and are async-signal-safe.
//!
//! Ids of other processes are not translated, and neither are ids in
//! other calls (`waitpid`, `pidfd_open`, `/proc/self` is the real one).

use std::ffi::c_long;

use migrate_proto::shim::{off, VPPID_SET};

use crate::block;

/// A system call, made without libc (whose `syscall` is this library's
/// own): the kernel's return value, `-errno` on failure.
#[cfg(target_arch = "x86_64")]
pub fn raw(n: c_long, a: [c_long; 6]) -> c_long {
    let ret: c_long;
    // SAFETY: the `syscall` instruction with the x86_64 Linux convention;
    // it clobbers only rax (the result), rcx and r11. What the call does
    // with its arguments is the caller's request, exactly as with libc's
    // `syscall(2)`.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") n => ret,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            in("r8") a[4],
            in("r9") a[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// libc's convention: the value, or -1 with `errno` set.
fn errno_convention(r: c_long) -> c_long {
    if (-4095..0).contains(&r) {
        // SAFETY: `__errno_location` returns this thread's errno.
        unsafe { *libc::__errno_location() = -r as i32 };
        -1
    } else {
        r
    }
}

/// The real pid of this process.
pub fn real_pid() -> i32 {
    raw(libc::SYS_getpid, [0; 6]) as i32
}

fn real_tid() -> i32 {
    raw(libc::SYS_gettid, [0; 6]) as i32
}

fn vpid() -> i32 {
    if block::ready() {
        block::get(off::VPID) as i32
    } else {
        real_pid()
    }
}

fn vtid() -> i32 {
    let real = real_tid();
    if block::ready() {
        block::virtual_tid(real)
    } else {
        real
    }
}

fn vppid() -> i32 {
    if block::ready() && block::get(off::FLAGS) & VPPID_SET != 0 {
        block::get(off::VPPID) as i32
    } else {
        raw(libc::SYS_getppid, [0; 6]) as i32
    }
}

/// The real id for the id `id` as this process sees it: itself or one of
/// its threads; any other id unchanged.
fn real_of(id: i32) -> i32 {
    if !block::ready() || id <= 0 {
        id
    } else if id == block::get(off::VPID) as i32 {
        real_pid()
    } else {
        block::real_tid(id)
    }
}

fn virtualized(n: c_long, a: [c_long; 6]) -> Option<c_long> {
    Some(match n {
        libc::SYS_getpid => c_long::from(vpid()),
        libc::SYS_gettid => c_long::from(vtid()),
        libc::SYS_getppid => c_long::from(vppid()),
        libc::SYS_kill | libc::SYS_tkill => errno_convention(raw(
            n,
            [c_long::from(real_of(a[0] as i32)), a[1], 0, 0, 0, 0],
        )),
        libc::SYS_tgkill => errno_convention(raw(
            n,
            [
                c_long::from(real_of(a[0] as i32)),
                c_long::from(real_of(a[1] as i32)),
                a[2],
                0,
                0,
                0,
            ],
        )),
        _ => return None,
    })
}

/// `pid_t getpid(void)`.
#[no_mangle]
pub extern "C" fn getpid() -> libc::pid_t {
    vpid()
}

/// `pid_t gettid(void)`.
#[no_mangle]
pub extern "C" fn gettid() -> libc::pid_t {
    vtid()
}

/// `pid_t getppid(void)`.
#[no_mangle]
pub extern "C" fn getppid() -> libc::pid_t {
    vppid()
}

/// `int kill(pid_t, int)`.
#[no_mangle]
pub extern "C" fn kill(pid: libc::pid_t, sig: libc::c_int) -> libc::c_int {
    virtualized(
        libc::SYS_kill,
        [c_long::from(pid), c_long::from(sig), 0, 0, 0, 0],
    )
    .unwrap_or(-1) as libc::c_int
}

/// `int tgkill(pid_t, pid_t, int)`.
#[no_mangle]
pub extern "C" fn tgkill(tgid: libc::pid_t, tid: libc::pid_t, sig: libc::c_int) -> libc::c_int {
    virtualized(
        libc::SYS_tgkill,
        [
            c_long::from(tgid),
            c_long::from(tid),
            c_long::from(sig),
            0,
            0,
            0,
        ],
    )
    .unwrap_or(-1) as libc::c_int
}

/// `long syscall(long number, ...)`: the id calls are virtualized, every
/// other call goes to the kernel unchanged. On x86_64 the variadic
/// arguments arrive where these six fixed ones are read (registers, then
/// the stack); arguments the caller did not pass are read but unused.
///
/// # Safety
///
/// As libc's `syscall(2)`: the call must be valid for its arguments.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn syscall(
    n: c_long,
    a1: c_long,
    a2: c_long,
    a3: c_long,
    a4: c_long,
    a5: c_long,
    a6: c_long,
) -> c_long {
    let a = [a1, a2, a3, a4, a5, a6];
    virtualized(n, a).unwrap_or_else(|| errno_convention(raw(n, a)))
}

/// In a child after `fork`: it is a new process here, whose parent (as it
/// sees it) is the virtual id of the process that forked it.
pub extern "C" fn after_fork_child() {
    if !block::ready() {
        return;
    }
    let parent = block::get(off::VPID);
    let parent_real = raw(libc::SYS_getppid, [0; 6]) as u32;
    block::set(off::VPID, real_pid() as u32);
    block::set(off::VPPID, parent);
    let flags = block::get(off::FLAGS) & !VPPID_SET;
    block::set(
        off::FLAGS,
        flags | if parent == parent_real { 0 } else { VPPID_SET },
    );
    block::set(off::MOVES, 0);
    block::set(off::NTIDS, 0);
    block::set(off::NRECONNECTED, 0);
    block::set(off::LISTENING, 0);
    crate::listener::forget_after_fork();
}
