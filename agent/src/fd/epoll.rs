//! An epoll set: made empty with the other descriptors, its
//! registrations added once everything they watch exists.

use migrate_proto::image::{EpollWatch, FdKind};
use migrate_proto::msg::{Code, Reason};

use super::{FdError, Remote, RemoteCalls};
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
pub fn restore(r: &mut impl Remote, want: i32, flags: u32) -> Result<(), FdError> {
    let got = r.epoll_create1((flags & libc::O_CLOEXEC as u32) as i32)?;
    r.move_fd(got, want, flags)
}

/// The registrations of epoll set `fd`.
pub fn register(r: &mut impl Remote, fd: i32, watches: &[EpollWatch]) -> Result<(), FdError> {
    for w in watches {
        r.epoll_ctl_add(fd, w.fd, w.events, w.data)?;
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
