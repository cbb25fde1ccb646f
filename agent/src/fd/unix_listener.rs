//! A Unix socket listening on a name (a path, or an abstract name): made,
//! bound and listening again. A socket file the original left in the way
//! (a filesystem both hosts share) is replaced.

use migrate_proto::image::FdKind;

use super::{FdError, Remote, RemoteCalls};
use crate::host::fsuser;
use crate::host::procfs::FdInfo;
use crate::host::sys::UnixSocket;

/// sock_diag's state of a listening socket.
pub const LISTENING: u8 = 10;

/// Its type, name and backlog, as sock_diag gives them.
pub fn dump(info: &FdInfo, u: &UnixSocket) -> FdKind {
    FdKind::UnixListener {
        flags: info.flags,
        stype: i32::from(u.stype),
        name: u.name.clone().unwrap_or_default(),
        backlog: u.queues.1,
    }
}

/// `socket(AF_UNIX)`, `bind` to the name, `listen`.
pub fn restore(
    r: &mut impl Remote,
    want: i32,
    flags: u32,
    stype: i32,
    name: &[u8],
    backlog: u32,
) -> Result<(), FdError> {
    let mut ty = stype;
    if flags & libc::O_NONBLOCK as u32 != 0 {
        ty |= libc::SOCK_NONBLOCK;
    }
    let got = r.socket(libc::AF_UNIX, ty, 0)?;
    let path_name = !name.is_empty() && name[0] != 0;
    if path_name {
        // A socket file left by the original (a filesystem both hosts
        // share) is in the way: the new one takes its place. Any other
        // file there is kept: bind fails.
        let path =
            String::from_utf8_lossy(name.split(|b| *b == 0).next().unwrap_or(name)).into_owned();
        let _ = fsuser::run_as(r.who(), || {
            if let Ok(md) = std::fs::symlink_metadata(&path) {
                if std::os::unix::fs::FileTypeExt::is_socket(&md.file_type()) {
                    let _ = std::fs::remove_file(&path);
                }
            }
        });
    }
    let mut addr = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
    addr.extend_from_slice(name);
    if path_name && addr.last() != Some(&0) {
        addr.push(0);
    }
    r.bind(got, &addr)?;
    r.listen(got, backlog as i32)?;
    r.move_fd(got, want, flags)
}
