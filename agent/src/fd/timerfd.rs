//! A timerfd: its clock, when it fires next, its interval, and the
//! expirations not read yet.

use migrate_proto::image::FdKind;

use super::{nonblock_cloexec, FdError, Remote};
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
    want: u64,
    flags: u32,
    clock: i32,
    value_ns: u64,
    interval_ns: u64,
    ticks: u64,
) -> Result<(), FdError> {
    let got = r.sys(
        "timerfd_create",
        libc::SYS_timerfd_create,
        [clock as u64, nonblock_cloexec(flags), 0, 0, 0, 0],
    )?;
    // An expiry not read yet shows as 0 remaining while the kernel holds
    // the periodic timer until the read: the next one is an interval away.
    let value_ns = if value_ns == 0 { interval_ns } else { value_ns };
    if value_ns != 0 {
        let mut b = Vec::with_capacity(32);
        for w in [
            interval_ns / 1_000_000_000,
            interval_ns % 1_000_000_000,
            value_ns / 1_000_000_000,
            value_ns % 1_000_000_000,
        ] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        let p = r.put_bytes(&b)?;
        r.sys(
            "timerfd_settime",
            libc::SYS_timerfd_settime,
            [got, 0, p, 0, 0, 0],
        )?;
    }
    if ticks != 0 {
        // TFD_IOC_SET_TICKS: expirations not read yet.
        let p = r.put_bytes(&ticks.to_le_bytes())?;
        r.sys(
            "TFD_IOC_SET_TICKS",
            libc::SYS_ioctl,
            [got, 0x4008_5400, p, 0, 0, 0],
        )?;
    }
    r.move_fd(got, want, u64::from(flags))
}
