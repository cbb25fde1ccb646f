//! A standard stream forwarded to and from the home host (a pipe to
//! another process, or a terminal): on the destination a pipe whose other
//! end the agent relays.

use migrate_proto::image::FdKind;

use super::{FdError, Rebuild, Remote, RemoteCalls};
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
    let want = fd;
    // Both ends clear of the numbers still to restore.
    let pipe = r.pipe2()?;
    let [rd, wr] = r.pair_above(pipe, b.high)?;
    let (mine, relay) = if output { (wr, rd) } else { (rd, wr) };
    let ours = r.take(relay, "taking a forwarded stream's pipe")?;
    r.close(relay)?;
    r.move_fd(mine, want, flags)?;
    let status = flags as i32 & (libc::O_NONBLOCK | libc::O_APPEND);
    if status != 0 {
        r.fcntl_setfl(want, status)?;
    }
    r.forwarded(fd, ours, output);
    Ok(())
}
