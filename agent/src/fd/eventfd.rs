//! An eventfd, with its counter.

use migrate_proto::image::FdKind;

use super::{nonblock_cloexec, sys_err, FdError, Remote, RemoteCalls};
use crate::host::procfs::FdInfo;

/// Its flags, counter and mode, from fdinfo.
pub fn dump(info: &FdInfo) -> FdKind {
    FdKind::EventFd {
        flags: info.flags,
        count: info
            .get("eventfd-count")
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .unwrap_or(0),
        semaphore: info.get("eventfd-semaphore") == Some("1"),
    }
}

/// `eventfd2`, the counter written in.
pub fn restore(
    r: &mut impl Remote,
    want: i32,
    flags: u32,
    count: u64,
    semaphore: bool,
) -> Result<(), FdError> {
    let mut f = nonblock_cloexec(flags);
    if semaphore {
        f |= libc::EFD_SEMAPHORE;
    }
    let got = r.eventfd2(0, f)?;
    if count != 0 {
        let ours = r.take(got, "taking an eventfd")?;
        std::io::Write::write_all(&mut std::fs::File::from(ours), &count.to_ne_bytes())
            .map_err(sys_err("setting an eventfd's counter"))?;
    }
    r.move_fd(got, want, flags)
}
