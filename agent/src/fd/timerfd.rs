//! A timerfd: its clock, when it fires next, its interval, and the
//! expirations not read yet.

use migrate_proto::image::FdKind;

use super::{nonblock_cloexec, FdError, Remote, RemoteCalls};
use crate::host::procfs::FdInfo;

/// From fdinfo.
pub fn dump(info: &FdInfo) -> FdKind {
    FdKind::TimerFd {
        flags: info.flags,
        clock: info
            .get("clockid")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
        value_ns: info.get_timespec_ns("it_value").unwrap_or(0),
        interval_ns: info.get_timespec_ns("it_interval").unwrap_or(0),
        ticks: info.get("ticks").and_then(|v| v.parse().ok()).unwrap_or(0),
    }
}

/// `timerfd_create`, armed again, its unread expirations set back.
pub fn restore(
    r: &mut impl Remote,
    want: i32,
    flags: u32,
    clock: i32,
    value_ns: u64,
    interval_ns: u64,
    ticks: u64,
) -> Result<(), FdError> {
    let got = r.timerfd_create(clock, nonblock_cloexec(flags))?;
    // An expiry not read yet shows as 0 remaining while the kernel holds
    // the periodic timer until the read: the next one is an interval away.
    let value_ns = if value_ns == 0 { interval_ns } else { value_ns };
    if value_ns != 0 {
        r.timerfd_settime(got, interval_ns, value_ns)?;
    }
    if ticks != 0 {
        r.timerfd_set_ticks(got, ticks)?;
    }
    r.move_fd(got, want, flags)
}
