//! A memfd: its object reopened through the process's mapping of it when
//! it maps it (then the mapping carries the content), else made again,
//! filled and sealed as it was.

use std::os::unix::fs::FileExt;

use migrate_proto::image::{FdKind, MemfdState, VmaKind};

use super::{proc_err, sys_err, Collect, FdError, Rebuild, Remote, RemoteCalls};
use crate::host::procfs::FdInfo;
use crate::host::{kinds, sys};

/// Its object (once per object: size, seals, and the content unless a
/// mapping of the process carries it) and this descriptor's offset.
pub fn dump(c: &mut Collect, info: &FdInfo, name: &str) -> Result<FdKind, FdError> {
    if !c.out.memfds.iter().any(|m| m.inode == info.ino) {
        let f = std::fs::File::from(c.take(info.fd)?);
        let size = f.metadata().map_err(proc_err(c.pid, "memfd"))?.len();
        let seals = sys::fcntl_get(&f, libc::F_GET_SEALS).unwrap_or(0);
        let mapped = c
            .maps
            .iter()
            .any(|m| kinds::is_shmem(m) && m.inode == info.ino);
        let mut data = Vec::new();
        if !mapped {
            for (a, b) in sys::data_ranges(&f, 0, size) {
                let mut buf = vec![0u8; (b - a) as usize];
                f.read_exact_at(&mut buf, a)
                    .map_err(proc_err(c.pid, "memfd"))?;
                data.push((a, buf));
            }
        }
        c.out.memfds.push(MemfdState {
            inode: info.ino,
            name: name.to_string(),
            size,
            seals: u32::try_from(seals).unwrap_or(0),
            data,
        });
    }
    Ok(FdKind::Memfd {
        inode: info.ino,
        flags: info.flags,
        pos: info.pos,
    })
}

/// The object at `want`, at its offset, sealed once its content is in.
pub fn restore(
    r: &mut impl Remote,
    b: &mut Rebuild,
    want: i32,
    inode: u64,
    flags: u32,
    pos: u64,
) -> Result<(), FdError> {
    let got = open(r, b, inode, flags)?;
    r.move_fd(got, want, flags)?;
    r.seek(want, pos)?;
    if !b.sealed.contains(&inode) {
        b.sealed.push(inode);
        if let Some(m) = b.image.memfds.iter().find(|m| m.inode == inode) {
            if m.seals != 0 {
                // Once the content is in.
                r.fcntl_add_seals(want, m.seals)?;
            }
        }
    }
    Ok(())
}

/// A new descriptor for memfd object `inode`: reopened through the
/// mapping of it when the process maps it (the same object), else made
/// again and filled.
fn open(r: &mut impl Remote, b: &Rebuild, inode: u64, flags: u32) -> Result<i32, FdError> {
    let mapped = b
        .image
        .mm
        .vmas
        .iter()
        .find(|v| matches!(&v.kind, VmaKind::Shmem { inode: i, .. } if *i == inode));
    let open_flags =
        flags as i32 & (libc::O_ACCMODE | libc::O_CLOEXEC | libc::O_APPEND | libc::O_NONBLOCK);
    if let Some(v) = mapped {
        return r.open(
            &format!("/proc/self/map_files/{:x}-{:x}", v.start, v.end),
            open_flags,
        );
    }
    let m = b
        .image
        .memfds
        .iter()
        .find(|m| m.inode == inode)
        .ok_or_else(|| FdError::Incompatible(format!("memfd {inode} has no recorded state")))?;
    let fd = make(r, &m.name, m.size)?;
    if !m.data.is_empty() {
        let f = std::fs::File::from(r.take(fd, "taking a memfd")?);
        for (off, bytes) in &m.data {
            f.write_all_at(bytes, *off)
                .map_err(sys_err("filling a memfd"))?;
        }
    }
    // Access mode and status flags as the original descriptor had them.
    let acc = flags as i32 & libc::O_ACCMODE;
    if acc != libc::O_RDWR {
        let again = r.open(&format!("/proc/self/fd/{fd}"), open_flags)?;
        r.close(fd)?;
        return Ok(again);
    }
    Ok(fd)
}

/// `memfd_create(name)` with sealing allowed, sized `size`.
pub fn make(r: &mut impl Remote, name: &str, size: u64) -> Result<i32, FdError> {
    let fd = r.memfd_create(name, libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)?;
    r.ftruncate(fd, size)?;
    Ok(fd)
}
