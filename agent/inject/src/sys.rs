//! Thin wrappers around ptrace and waitpid: the only unsafe code of this crate.

use std::io;

use crate::regs::Regs;

/// `PTRACE_GET_RSEQ_CONFIGURATION` (not in every libc crate version).
pub const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
/// `NT_X86_XSTATE`.
pub const NT_X86_XSTATE: libc::c_int = 0x202;

/// `struct ptrace_rseq_configuration`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct RseqConfiguration {
    pub rseq_abi_pointer: u64,
    pub rseq_abi_size: u32,
    pub signature: u32,
    pub flags: u32,
    pub pad: u32,
}
const _: () = assert!(std::mem::size_of::<RseqConfiguration>() == 24);
const _: () = assert!(std::mem::size_of::<libc::user_regs_struct>() == 27 * 8);

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A ptrace request whose `addr`/`data` are plain integers.
pub fn ptrace_simple(req: libc::c_uint, tid: i32, addr: u64, data: u64) -> io::Result<()> {
    // SAFETY: the request takes integer arguments only (SEIZE, INTERRUPT,
    // CONT, SYSCALL, DETACH); no memory of ours is written.
    let ret = unsafe {
        libc::ptrace(
            req,
            tid,
            addr as *mut libc::c_void,
            data as *mut libc::c_void,
        )
    };
    check(ret).map(|_| ())
}

/// `PTRACE_GETREGS`.
pub fn get_regs(tid: i32) -> io::Result<Regs> {
    // SAFETY: an all-zero user_regs_struct is a valid value of plain integers.
    let mut r: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    // SAFETY: `r` is a valid, correctly sized user_regs_struct the kernel fills.
    let ret = unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGS,
            tid,
            0,
            &mut r as *mut libc::user_regs_struct,
        )
    };
    check(ret)?;
    Ok(Regs(r))
}

/// `PTRACE_SETREGS`.
pub fn set_regs(tid: i32, regs: &Regs) -> io::Result<()> {
    // SAFETY: `regs.0` is a valid user_regs_struct the kernel only reads.
    let ret = unsafe {
        libc::ptrace(
            libc::PTRACE_SETREGS,
            tid,
            0,
            &regs.0 as *const libc::user_regs_struct,
        )
    };
    check(ret).map(|_| ())
}

/// `PTRACE_GETREGSET` for `note` into `buf`; returns the length filled.
pub fn get_regset(tid: i32, note: libc::c_int, buf: &mut [u8]) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: `iov` describes `buf`, which stays borrowed for the call; the
    // kernel writes at most `iov_len` bytes and updates `iov_len`.
    let ret = unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGSET,
            tid,
            note as usize,
            &mut iov as *mut libc::iovec,
        )
    };
    check(ret)?;
    Ok(iov.iov_len)
}

/// `PTRACE_SETREGSET` for `note` from `buf`.
pub fn set_regset(tid: i32, note: libc::c_int, buf: &[u8]) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `iov` describes `buf`, which the kernel only reads.
    let ret = unsafe {
        libc::ptrace(
            libc::PTRACE_SETREGSET,
            tid,
            note as usize,
            &mut iov as *mut libc::iovec,
        )
    };
    check(ret).map(|_| ())
}

/// `PTRACE_GETSIGMASK`.
pub fn get_sigmask(tid: i32) -> io::Result<u64> {
    let mut mask: u64 = 0;
    // SAFETY: the kernel writes exactly `size_of::<u64>()` bytes into `mask`.
    let ret = unsafe { libc::ptrace(libc::PTRACE_GETSIGMASK, tid, 8usize, &mut mask as *mut u64) };
    check(ret)?;
    Ok(mask)
}

/// `PTRACE_SETSIGMASK`.
pub fn set_sigmask(tid: i32, mask: u64) -> io::Result<()> {
    // SAFETY: the kernel reads exactly `size_of::<u64>()` bytes from `mask`.
    let ret = unsafe { libc::ptrace(libc::PTRACE_SETSIGMASK, tid, 8usize, &mask as *const u64) };
    check(ret).map(|_| ())
}

/// `PTRACE_GETEVENTMSG`: at a clone, fork or vfork event stop, the new
/// task's id in the tracer's pid namespace.
pub fn get_event_msg(tid: i32) -> io::Result<u64> {
    let mut msg: u64 = 0;
    // SAFETY: the kernel writes one unsigned long into `msg`.
    let ret = unsafe { libc::ptrace(libc::PTRACE_GETEVENTMSG, tid, 0usize, &mut msg as *mut u64) };
    check(ret)?;
    Ok(msg)
}

/// Size of one `siginfo_t`.
pub const SIGINFO_LEN: usize = 128;

/// `PTRACE_PEEKSIGINFO`: the queued signals of `tid` (or of its whole
/// thread group with `shared`), without dequeuing them.
pub fn peek_siginfo(tid: i32, shared: bool) -> io::Result<Vec<[u8; SIGINFO_LEN]>> {
    #[repr(C)]
    struct Args {
        off: u64,
        flags: u32,
        nr: i32,
    }
    const PTRACE_PEEKSIGINFO: libc::c_uint = 0x4209;
    const BATCH: usize = 32;
    let mut out = Vec::new();
    loop {
        let mut args = Args {
            off: out.len() as u64,
            flags: u32::from(shared),
            nr: BATCH as i32,
        };
        let mut buf = [[0u8; SIGINFO_LEN]; BATCH];
        // SAFETY: `args` is a ptrace_peeksiginfo_args and `buf` has room for
        // `nr` siginfo_t records.
        let ret = unsafe {
            libc::ptrace(
                PTRACE_PEEKSIGINFO,
                tid,
                &mut args as *mut Args,
                buf.as_mut_ptr(),
            )
        };
        let n = usize::try_from(check(ret)?).unwrap_or(0);
        out.extend_from_slice(&buf[..n.min(BATCH)]);
        if n < BATCH {
            return Ok(out);
        }
    }
}

/// `PTRACE_GET_RSEQ_CONFIGURATION`.
pub fn get_rseq(tid: i32) -> io::Result<RseqConfiguration> {
    let mut conf = RseqConfiguration::default();
    // SAFETY: `conf` is a correctly sized ptrace_rseq_configuration; the
    // kernel writes at most `addr` bytes into it.
    let ret = unsafe {
        libc::ptrace(
            PTRACE_GET_RSEQ_CONFIGURATION,
            tid,
            std::mem::size_of::<RseqConfiguration>(),
            &mut conf as *mut RseqConfiguration,
        )
    };
    check(ret)?;
    Ok(conf)
}

/// `waitpid(tid, __WALL)`; returns the raw status.
pub fn wait(tid: i32) -> io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid int the kernel writes.
        let ret = unsafe { libc::waitpid(tid, &mut status, libc::__WALL) };
        if ret == -1 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        return Ok(status);
    }
}

/// Sends `sig` to thread `tid` of process `tid`'s group.
pub fn tgkill(tgid: i32, tid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: plain syscall with integer arguments.
    let ret = unsafe { libc::syscall(libc::SYS_tgkill, tgid, tid, sig) };
    check(ret).map(|_| ())
}
