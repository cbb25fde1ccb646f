//! A standard stream forwarded to and from the home host (a pipe to
//! another process, or a terminal): on the destination a pipe whose other
//! end the agent relays.

use migrate_proto::image::FdKind;

use super::{FdError, Rebuild, Remote};
use crate::host::kinds;
use crate::host::procfs::FdInfo;

/// Its direction, and whether it is a terminal.
pub fn dump(info: &FdInfo) -> FdKind {
    FdKind::Forwarded {
        flags: info.flags,
        output: info.flags & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32,
        terminal: kinds::is_terminal(info),
    }
}

/// A pipe: the process's end at `fd`, the agent's handed over for relaying.
pub fn restore(
    r: &mut impl Remote,
    b: &Rebuild,
    fd: i32,
    flags: u32,
    output: bool,
) -> Result<(), FdError> {
    let want = fd as u64;
    // Both ends clear of the numbers still to restore.
    let p = r.put_bytes(&[0u8; 8])?;
    let [rd, wr] = r.fd_pair_above("pipe2", libc::SYS_pipe2, [p, 0, 0, 0, 0, 0], b.high)?;
    let (mine, relay) = if output { (wr, rd) } else { (rd, wr) };
    let ours = r.take(relay, "taking a forwarded stream's pipe")?;
    r.close(relay)?;
    r.move_fd(mine, want, u64::from(flags))?;
    let status = u64::from(flags) & (libc::O_NONBLOCK | libc::O_APPEND) as u64;
    if status != 0 {
        r.sys(
            format!("F_SETFL fd {want}"),
            libc::SYS_fcntl,
            [want, libc::F_SETFL as u64, status, 0, 0, 0],
        )?;
    }
    r.forwarded(fd, ours, output);
    Ok(())
}
