//! A second number for an open file (`dup`): one offset, one set of status
//! flags, found by `kcmp` against the lower numbers.

use migrate_proto::image::FdKind;

use super::{proc_err, Collect, FdError, Remote, RemoteCalls};
use crate::host::procfs::FdInfo;
use crate::host::sys;

/// `Some` if `info` is the same open file as one of the `earlier`
/// descriptors (of the same inode and type).
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
    Ok(None)
}

/// Descriptor `want` as another number for `of` (made before it).
pub fn restore(r: &mut impl Remote, want: i32, of: i32, cloexec: bool) -> Result<(), FdError> {
    r.dup3(of, want, cloexec)
}
