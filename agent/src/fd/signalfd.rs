//! A signalfd: the signals it reads.

use migrate_proto::image::FdKind;

use super::{nonblock_cloexec, FdError, Remote};
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
pub fn restore(r: &mut impl Remote, want: u64, flags: u32, mask: u64) -> Result<(), FdError> {
    let p = r.put_bytes(&mask.to_le_bytes())?;
    let got = r.sys(
        "signalfd4",
        libc::SYS_signalfd4,
        [u64::MAX, p, 8, nonblock_cloexec(flags), 0, 0],
    )?;
    r.move_fd(got, want, u64::from(flags))
}
