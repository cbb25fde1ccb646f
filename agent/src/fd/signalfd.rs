//! A signalfd: the signals it reads.

use migrate_proto::image::FdKind;

use super::{nonblock_cloexec, FdError, Remote, RemoteCalls};
use crate::host::procfs::FdInfo;

/// Its flags and mask, from fdinfo.
pub fn dump(info: &FdInfo) -> FdKind {
    FdKind::SignalFd {
        flags: info.flags,
        mask: info
            .get("sigmask")
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .unwrap_or(0),
    }
}

/// `signalfd4` with the mask.
pub fn restore(r: &mut impl Remote, want: i32, flags: u32, mask: u64) -> Result<(), FdError> {
    let got = r.signalfd4(mask, nonblock_cloexec(flags))?;
    r.move_fd(got, want, flags)
}
