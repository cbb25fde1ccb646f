//! An inotify instance with its watches, re-added by path in the order
//! that gives them back their numbers. Events not read yet cannot be
//! carried: refused.

use migrate_proto::image::FdKind;
use migrate_proto::msg::{Code, Reason};

use super::{nonblock_cloexec, proc_err, sys_err, Collect, FdError, Remote, RemoteCalls};
use crate::host::procfs::FdInfo;
use crate::host::sys;

/// Its watches, each file found again from its handle.
pub fn dump(c: &Collect, info: &FdInfo) -> Result<FdKind, FdError> {
    let ours = c.take(info.fd)?;
    let waiting = sys::pending_bytes(&ours).map_err(proc_err(c.pid, "inotify"))?;
    if waiting > 0 {
        return Err(FdError::Refused(Reason::new(
            Code::Inotify,
            format!(
                "fd {}: inotify has {waiting} bytes of events not read yet: they cannot be carried",
                info.fd
            ),
        )));
    }
    let mut watches = Vec::new();
    for (wd, sdev, mask, htype, handle) in info.inotify_watches() {
        let path = sys::path_of_handle(sdev, htype, &handle).map_err(|e| {
            FdError::Refused(Reason::new(
                Code::Inotify,
                format!(
                    "fd {}: inotify watch {wd} names a file that cannot be found: {e}",
                    info.fd
                ),
            ))
        })?;
        watches.push((wd, path, mask));
    }
    watches.sort();
    Ok(FdKind::Inotify {
        flags: info.flags,
        watches,
    })
}

/// Directories that hold the numbers of freed watches while the real ones
/// are added again.
const SPARE: [&str; 16] = [
    "/",
    "/usr",
    "/etc",
    "/var",
    "/bin",
    "/lib",
    "/opt",
    "/srv",
    "/home",
    "/root",
    "/dev",
    "/proc",
    "/sys",
    "/mnt",
    "/boot",
    "/usr/share",
];

/// `inotify_init1` and the watches, each with its number.
pub fn restore(
    r: &mut impl Remote,
    want: i32,
    flags: u32,
    watches: &[(i32, String, u32)],
) -> Result<(), FdError> {
    let got = r.inotify_init1(nonblock_cloexec(flags))?;
    // Watch descriptors are handed out in rising order: the numbers the
    // original had freed are held by dummy watches (on other directories)
    // until every real one is back.
    let mut spare = SPARE
        .iter()
        .filter(|p| !watches.iter().any(|(_, w, _)| w == *p));
    let mut dummies = Vec::new();
    let mut next = 1i32;
    for (wd, path, mask) in watches {
        while next < *wd {
            let d = spare.next().ok_or_else(|| {
                FdError::Incompatible(format!("inotify: too many freed watch numbers before {wd}"))
            })?;
            dummies.push(r.inotify_add_watch(got, d, libc::IN_ACCESS)?);
            next += 1;
        }
        let w = r.inotify_add_watch(got, path, *mask)?;
        if w != *wd {
            return Err(FdError::Incompatible(format!(
                "inotify watch {path} came back as {w}, not {wd}"
            )));
        }
        next = *wd + 1;
    }
    for d in dummies {
        r.inotify_rm_watch(got, d)?;
    }
    // Removing the dummies queued IN_IGNORED events: drop them.
    let ours = r.take(got, "taking an inotify descriptor")?;
    let waiting = sys::pending_bytes(&ours).map_err(sys_err("inotify FIONREAD"))?;
    if waiting > 0 {
        let mut junk = vec![0u8; waiting];
        std::io::Read::read_exact(&mut std::fs::File::from(ours), &mut junk)
            .map_err(sys_err("draining inotify"))?;
    }
    r.move_fd(got, want, flags)
}
