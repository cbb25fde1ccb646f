//! A regular file, directory or device, reopened by path with its flags
//! and offset; a file deleted on the source, made again as an unlinked
//! file (`O_TMPFILE`) with its shipped content.

use crate::host::kinds::{deleted_file, memfd_name};
use migrate_proto::image::FdKind;

use super::{sys_err, FdError, Rebuild, Remote, RemoteCalls};
use crate::host::fsuser;
use crate::host::procfs::FdInfo;

/// Its path, flags and offset (what the file needs on the destination
/// is the pre-flight's list).
pub fn dump(info: &FdInfo) -> FdKind {
    FdKind::Path {
        path: info.target.clone(),
        flags: info.flags,
        pos: info.pos,
    }
}

/// Open flags that would change the file rather than open it again.
fn reopen_flags(flags: u32) -> i32 {
    flags as i32 & !(libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL | libc::O_NOCTTY)
}

/// Opened again at `fd`, at its offset.
pub fn restore(
    r: &mut impl Remote,
    b: &Rebuild,
    fd: i32,
    path: &str,
    flags: u32,
    pos: u64,
) -> Result<(), FdError> {
    let source_path = path.strip_suffix(" (deleted)").unwrap_or(path);
    let got = if let Some(file) = r.mapped_file(source_path) {
        // A file its mappings share, shared and writable, made again for
        // them: opened again as the descriptor was.
        let passed = r.pass_in(&file)?;
        let again = r.open(&format!("/proc/self/fd/{passed}"), reopen_flags(flags))?;
        r.close(passed)?;
        again
    } else if b.image.shipped.iter().any(|f| f.fd == fd && f.deleted) {
        make_deleted(r, b, fd, flags)?
    } else {
        r.open(path, reopen_flags(flags))?
    };
    r.move_fd(got, fd, flags)?;
    r.seek(fd, pos)
}

/// Where an unlinked copy of the file at `path` is made: beside it if its
/// directory is here, else in `/tmp`.
pub(crate) fn unlinked_dir(path: &str) -> String {
    std::path::Path::new(path)
        .parent()
        .filter(|d| d.is_dir())
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/tmp".into())
}

/// A file deleted on the source, made again as an unlinked file
/// (`O_TMPFILE`) with its content, opened as the original descriptor was.
fn make_deleted(r: &mut impl Remote, b: &Rebuild, fd: i32, flags: u32) -> Result<i32, FdError> {
    let f = b
        .image
        .shipped
        .iter()
        .find(|f| f.fd == fd)
        .ok_or_else(|| FdError::Incompatible(format!("fd {fd}: no shipped content")))?;
    let tmp = r.open_tmpfile(&unlinked_dir(&f.path), f.mode)?;
    let file = std::fs::File::from(r.take(tmp, "taking a deleted file")?);
    let mut held = r.shipped(fd).ok_or_else(|| {
        FdError::Incompatible(format!("fd {fd}: its shipped content never arrived"))
    })?;
    // In the kernel (copy_file_range), from the start of what arrived.
    std::io::Seek::rewind(&mut held)
        .and_then(|()| std::io::copy(&mut held, &mut &file))
        .map_err(sys_err("filling a deleted file"))?;
    // Given its owner as the process's user would give it: a private,
    // unlinked copy of another user's file stays the process's own.
    let _ = fsuser::run_as(r.who(), || {
        std::os::unix::fs::fchown(&file, Some(f.uid), Some(f.gid))
    });
    let again = r.open(&format!("/proc/self/fd/{tmp}"), reopen_flags(flags))?;
    r.close(tmp)?;
    Ok(again)
}

/// `/dev/null` is character device 1:3.
/// /dev/null, /dev/zero, /dev/random, /dev/urandom: reopened by path.
const REOPENABLE_DEVICES: [u64; 4] = [
    libc::makedev(1, 3),
    libc::makedev(1, 5),
    libc::makedev(1, 8),
    libc::makedev(1, 9),
];

/// Whether an fd is of a kind that moves by reopening its path.
pub fn movable(info: &FdInfo) -> bool {
    (info.mode == libc::S_IFREG && memfd_name(&info.target).is_some())
        || deleted_file(info).is_some()
        || ((info.mode == libc::S_IFREG || info.mode == libc::S_IFDIR)
            && info.target.starts_with('/')
            && !info.target.ends_with(" (deleted)"))
        || (info.mode == libc::S_IFCHR && REOPENABLE_DEVICES.contains(&info.rdev))
}
