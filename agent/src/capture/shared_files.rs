//! Regular files a process maps shared and writable (a JVM's
//! performance-data file in `/tmp`): they move with it. Where both hosts
//! see one file (the same device and inode: shared storage) the
//! destination maps that file. Anywhere else the file's content at the
//! freeze travels as a shipped file does, read through the mapping (the
//! process may have no descriptor of it), and the destination makes the
//! file again in the process, as the process: at its path if nothing is
//! there, else (a different file there, or the file deleted on the source)
//! as a private unlinked copy; its mappings of it share pages as before.
//! Shipped, such a file goes under a pseudo descriptor below 0: the k-th
//! such file of the process (in the order of its maps) is `-1 - k`.

use std::fs;
use std::os::unix::fs::MetadataExt;

use migrate_proto::image::FileIdent;

use crate::host::kinds;
use crate::host::procfs::MapsEntry;

/// One file the process maps shared and writable, and one mapping of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedFile {
    /// Its path, without " (deleted)".
    pub path: String,
    /// Deleted on the source.
    pub deleted: bool,
    /// A mapping of it: (start, end).
    pub mapping: (u64, u64),
    /// Device and inode.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// What it is on the source.
    pub ident: FileIdent,
}

/// Whether `m` maps a file (by path) shared and writable, other than the
/// shared memory that moves with its content (`kinds::is_shmem`).
pub fn is_shared_writable(m: &MapsEntry) -> bool {
    m.shared()
        && m.perms.as_bytes().get(1) == Some(&b'w')
        && m.path.starts_with('/')
        && !m.path.starts_with("/memfd:")
        && !m.path.starts_with("/SYSV")
        && !kinds::is_shmem(m)
}

/// The path of mapping `(start, end)` of `pid` in `/proc`: the mapped
/// file itself, deleted or not.
pub fn map_files_path(pid: i32, (start, end): (u64, u64)) -> String {
    format!("/proc/{pid}/map_files/{start:x}-{end:x}")
}

/// Each regular file `pid` maps shared and writable, once, in the order of
/// `maps`; a mapping that is not of a regular file is left out (the
/// pre-flight refuses it).
pub fn files(pid: i32, maps: &[MapsEntry]) -> Vec<SharedFile> {
    let mut out: Vec<SharedFile> = Vec::new();
    for m in maps.iter().filter(|m| is_shared_writable(m)) {
        let (path, deleted) = match m.path.strip_suffix(" (deleted)") {
            Some(p) => (p.to_string(), true),
            None => (m.path.clone(), false),
        };
        if out.iter().any(|f| f.path == path) {
            continue;
        }
        let Ok(md) = fs::metadata(map_files_path(pid, (m.start, m.end))) else {
            continue;
        };
        if !md.is_file() {
            continue;
        }
        out.push(SharedFile {
            path,
            deleted,
            mapping: (m.start, m.end),
            dev: md.dev(),
            ino: md.ino(),
            ident: kinds::file_ident(&md),
        });
    }
    out
}

/// Whether descriptor `fd` of `pid` has one of `files` open (the same
/// device and inode): it is opened again on the file made for them.
pub fn opened_at(pid: i32, fd: i32, files: &[SharedFile]) -> bool {
    fs::metadata(format!("/proc/{pid}/fd/{fd}"))
        .is_ok_and(|md| files.iter().any(|f| f.dev == md.dev() && f.ino == md.ino()))
}

/// The pseudo descriptor the k-th such file ships under.
pub fn pseudo_fd(k: usize) -> i32 {
    -1 - k as i32
}

/// Which such file pseudo descriptor `fd` names, if it is one.
pub fn index(fd: i32) -> Option<usize> {
    (fd < 0).then(|| (-1 - i64::from(fd)) as usize)
}

/// An identity no file has: a file mapped shared and writable is the same
/// on the destination only if it is the same inode (a copy identical
/// before the freeze is not after the process wrote to it).
pub fn never_identical(ident: &FileIdent) -> FileIdent {
    FileIdent {
        mtime_ns: i128::MIN,
        ..ident.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(perms: &str, path: &str) -> MapsEntry {
        MapsEntry {
            start: 0x1000,
            end: 0x2000,
            perms: perms.into(),
            offset: 0,
            inode: 7,
            path: path.into(),
        }
    }

    #[test]
    fn only_regular_shared_writable_file_mappings() {
        assert!(is_shared_writable(&entry("rw-s", "/tmp/hsperfdata_root/8")));
        assert!(is_shared_writable(&entry("rw-s", "/tmp/x (deleted)")));
        assert!(!is_shared_writable(&entry("r--s", "/tmp/x")));
        assert!(!is_shared_writable(&entry("rw-p", "/tmp/x")));
        assert!(!is_shared_writable(&entry("rw-s", "/memfd:buf (deleted)")));
        assert!(!is_shared_writable(&entry(
            "rw-s",
            "/SYSV00000000 (deleted)"
        )));
        assert!(!is_shared_writable(&entry("rw-s", "/dev/zero (deleted)")));
    }

    #[test]
    fn pseudo_descriptors_name_their_file() {
        for k in [0usize, 1, 41] {
            assert!(pseudo_fd(k) < 0);
            assert_eq!(index(pseudo_fd(k)), Some(k));
        }
        assert_eq!(index(0), None);
        assert_eq!(index(3), None);
    }

    #[test]
    fn a_mapped_file_is_the_same_only_as_the_same_inode() {
        let a = FileIdent {
            size: 32768,
            mtime_ns: 5,
            mode: 0o100600,
            uid: 0,
            gid: 0,
        };
        assert_ne!(never_identical(&a), a);
    }
}
