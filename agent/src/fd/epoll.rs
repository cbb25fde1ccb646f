//! An epoll set: made empty with the other descriptors, its
//! registrations added once everything they watch exists.

use migrate_proto::image::{EpollWatch, FdKind};
use migrate_proto::msg::{Code, Reason};

use super::{FdError, Remote};
use crate::host::procfs::FdInfo;

/// Its registrations, from fdinfo.
pub fn dump(info: &FdInfo) -> FdKind {
    FdKind::Epoll {
        flags: info.flags,
        watches: info
            .epoll_entries()
            .into_iter()
            .map(|e| EpollWatch {
                fd: e.tfd,
                events: e.events,
                data: e.data,
            })
            .collect(),
    }
}

/// `epoll_create1`, empty.
pub fn restore(r: &mut impl Remote, want: u64, flags: u32) -> Result<(), FdError> {
    let f = u64::from(flags) & libc::O_CLOEXEC as u64;
    let got = r.sys("epoll_create1", libc::SYS_epoll_create1, [f, 0, 0, 0, 0, 0])?;
    r.move_fd(got, want, u64::from(flags))
}

/// The registrations of epoll set `fd`.
pub fn register(r: &mut impl Remote, fd: i32, watches: &[EpollWatch]) -> Result<(), FdError> {
    for w in watches {
        let mut ev = Vec::with_capacity(12);
        ev.extend_from_slice(&w.events.to_le_bytes());
        ev.extend_from_slice(&w.data.to_le_bytes());
        let p = r.put_bytes(&ev)?;
        r.sys(
            format!("epoll_ctl(fd {fd}, add fd {})", w.fd),
            libc::SYS_epoll_ctl,
            [fd as u64, libc::EPOLL_CTL_ADD as u64, w.fd as u64, p, 0, 0],
        )?;
    }
    Ok(())
}

/// An epoll set moves if every descriptor it watches is still open under
/// the number it was registered with (they are re-registered by number).
pub fn check(s: &super::Survey, info: &FdInfo) -> Vec<Reason> {
    let mut why = Vec::new();
    for e in info.epoll_entries() {
        let same = s.infos.iter().any(|t| t.fd == e.tfd && t.ino == e.ino);
        if !same {
            why.push(Reason::new(
                Code::Epoll,
                format!(
                    "fd {}: epoll watches fd {} which was closed or replaced since: not supported",
                    info.fd, e.tfd
                ),
            ));
        }
    }
    why
}
