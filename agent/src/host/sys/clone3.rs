//! Trying `clone3` with `set_tid` (for `migrate-agent check`).

use std::io;

use super::check;

/// Whether `clone3` may choose a child's pid (`set_tid`), tried: a child
/// made as pid 1 of a new pid namespace, which exits at once and is
/// reaped here. Call it only where this process has no reaper of its own
/// (`migrate-agent check`).
pub fn clone3_set_tid_works() -> io::Result<()> {
    use linux_raw_sys::general::clone_args;
    let pids = [1i32];
    // SAFETY: clone_args is plain data.
    let mut args: clone_args = unsafe { std::mem::zeroed() };
    args.flags = u64::from(linux_raw_sys::general::CLONE_NEWPID);
    args.exit_signal = libc::SIGCHLD as u64;
    args.set_tid = pids.as_ptr() as u64;
    args.set_tid_size = 1;
    // SAFETY: clone3 with a valid clone_args of its size, no new stack:
    // the child continues here on a copy of this thread's stack and only
    // calls _exit, which is async-signal-safe.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const clone_args,
            std::mem::size_of::<clone_args>(),
        )
    };
    if pid == 0 {
        // SAFETY: the child ends at once, touching nothing.
        unsafe { libc::_exit(0) };
    }
    let pid = check(pid)? as i32;
    let mut status = 0;
    // SAFETY: waiting for the child made just above.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    Ok(())
}
