//! A second number for an open file (`dup`): one offset, one set of status
//! flags, found by `kcmp` against the lower numbers; or, in a tree, an open
//! file inherited across a fork, found by `kcmp` against the descriptors
//! of the processes dumped before, and passed from the one rebuilt first.

use migrate_proto::image::FdKind;

use super::{proc_err, sys_err, Collect, FdError, Rebuild, Remote, RemoteCalls};
use crate::host::procfs::FdInfo;
use crate::host::sys;

/// `Some` if `info` is the same open file as one of the `earlier`
/// descriptors (of the same inode and type), or as one of a process of
/// its tree dumped before it.
pub fn dump(c: &Collect, info: &FdInfo, earlier: &[FdInfo]) -> Result<Option<FdKind>, FdError> {
    for e in earlier
        .iter()
        .filter(|e| e.ino == info.ino && e.mode == info.mode)
    {
        if sys::same_open_file(c.pid, e.fd, info.fd).map_err(proc_err(c.pid, "kcmp"))? {
            return Ok(Some(FdKind::Dup {
                of: e.fd,
                cloexec: info.flags & libc::O_CLOEXEC as u32 != 0,
            }));
        }
    }
    let inherited = c
        .survey
        .inherited_from(info)
        .map_err(proc_err(c.pid, "kcmp"))?;
    Ok(inherited.map(|(of_pid, of_fd)| FdKind::Inherited {
        of_pid,
        of_fd,
        cloexec: info.flags & libc::O_CLOEXEC as u32 != 0,
    }))
}

/// Descriptor `want` as the open file of descriptor `of_fd` of process
/// `of_pid` (of the same tree, rebuilt before it), passed in.
pub fn restore_inherited(
    r: &mut impl Remote,
    b: &Rebuild,
    want: i32,
    of_pid: i32,
    of_fd: i32,
    cloexec: bool,
) -> Result<(), FdError> {
    // Only ever a descriptor of the tree's own processes, rebuilt here.
    if !b.kin.pids.contains(&of_pid) {
        return Err(FdError::Incompatible(format!(
            "descriptor {want} is inherited from process {of_pid}, not one of its tree rebuilt before it"
        )));
    }
    let theirs = sys::pidfd_open(of_pid)
        .and_then(|p| sys::pidfd_getfd(&p, of_fd))
        .map_err(sys_err("taking a descriptor of a process of the tree"))?;
    let got = r.pass_in(&theirs)?;
    let flags = if cloexec { libc::O_CLOEXEC as u32 } else { 0 };
    if got == want {
        // Received close-on-exec: as the original was.
        return r.fcntl_setfd(want, cloexec);
    }
    r.move_fd(got, want, flags)
}

/// Descriptor `want` as another number for `of` (made before it).
pub fn restore(r: &mut impl Remote, want: i32, of: i32, cloexec: bool) -> Result<(), FdError> {
    r.dup3(of, want, cloexec)
}
