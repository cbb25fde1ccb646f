//! What an entry of `/proc/<pid>` is: classifiers of mappings and
//! descriptors, shared by the pre-flight, the dump and the rebuild. No
//! policy: what may move is decided in `capture::preflight`.

use std::fs;
use std::os::unix::fs::MetadataExt;

use migrate_proto::image::FileIdent;

use crate::host::procfs::{FdInfo, MapsEntry};

/// Whether a maps entry is a pseudo mapping of the vDSO family.
pub fn is_vdso(path: &str) -> bool {
    matches!(path, "[vdso]" | "[vvar]" | "[vvar_vclock]")
}

/// Whether a maps entry is private anonymous memory.
pub fn is_anon(m: &MapsEntry) -> bool {
    m.inode == 0
        && (m.path.is_empty()
            || m.path == "[heap]"
            || m.path == "[stack]"
            || m.path.starts_with("[anon:"))
}

/// Shared memory of the shmem kind that moves with its content: shared
/// anonymous memory, a shared memfd mapping, or a shared mapping of a
/// `/dev/shm` file since deleted.
pub fn is_shmem(m: &MapsEntry) -> bool {
    m.shared()
        && (m.path == "/dev/zero (deleted)"
            || memfd_name(&m.path).is_some()
            || deleted_shm_file(&m.path))
}

/// A file of `/dev/shm` (tmpfs) removed while mapped, as `sem_open` and
/// `shm_open` callers leave their objects once every process of theirs
/// has one: nothing can open it again by its path, so it is shared
/// memory like a memfd's, rebuilt as one.
fn deleted_shm_file(path: &str) -> bool {
    path.strip_prefix("/dev/shm/")
        .and_then(|p| p.strip_suffix(" (deleted)"))
        .is_some_and(|name| !name.is_empty() && !name.contains('/'))
}

/// The name of a memfd mapping's object (`/memfd:NAME (deleted)`).
pub fn memfd_name(path: &str) -> Option<&str> {
    path.strip_prefix("/memfd:")?.strip_suffix(" (deleted)")
}

/// The inode of an anonymous pipe descriptor (`pipe:[N]`).
pub fn pipe_inode(info: &FdInfo) -> Option<u64> {
    if info.mode != libc::S_IFIFO {
        return None;
    }
    if info.target.starts_with('/') {
        // A named FIFO, identified like a pipe by its inode.
        return Some(info.ino);
    }
    info.target
        .strip_prefix("pipe:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Size and mtime of a file.
pub fn file_ident(md: &fs::Metadata) -> FileIdent {
    FileIdent {
        size: md.size(),
        mtime_ns: i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec()),
        mode: md.mode(),
        uid: md.uid(),
        gid: md.gid(),
    }
}

/// What opening a file again with open flags `flags` asks of its
/// permissions (`R_OK`, `W_OK` bits; nothing for `O_PATH`).
pub fn access_for(flags: u32) -> u32 {
    if flags & libc::O_PATH as u32 != 0 {
        return 0;
    }
    match flags & libc::O_ACCMODE as u32 {
        f if f == libc::O_RDONLY as u32 => libc::R_OK as u32,
        f if f == libc::O_WRONLY as u32 => libc::W_OK as u32,
        _ => (libc::R_OK | libc::W_OK) as u32,
    }
}

/// A terminal (pty or console).
pub fn is_terminal(info: &FdInfo) -> bool {
    info.mode == libc::S_IFCHR
        && (info.target.starts_with("/dev/pts/") || info.target.starts_with("/dev/tty"))
}

/// The path a deleted regular file had (its content gets shipped).
pub fn deleted_file(info: &FdInfo) -> Option<&str> {
    if info.mode != libc::S_IFREG || memfd_name(&info.target).is_some() {
        return None;
    }
    info.target
        .strip_suffix(" (deleted)")
        .filter(|p| p.starts_with('/'))
}
