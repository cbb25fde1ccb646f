//! An end of a pipe or named FIFO whose both ends the process (or its tree)
//! holds, or whose other end nobody holds any more, with the bytes in it: the pipe is made once, above every number,
//! sized and refilled, each end given its number; a process of the same
//! tree rebuilt later opens it through `/proc` instead. A FIFO on a
//! filesystem both hosts share is one object the original still holds,
//! bytes included.

use migrate_proto::image::{FdKind, PipeState};

use super::{proc_err, sys_err, Collect, FdError, Rebuild, Remote, RemoteCalls};
use crate::host::procfs::FdInfo;
use crate::host::{fsuser, sys};

/// Which pipe and end; the pipe's buffer (peeked, left in place) when its
/// read end is met first.
pub fn dump(c: &mut Collect, info: &FdInfo, ino: u64) -> Result<FdKind, FdError> {
    let write = info.flags & libc::O_ACCMODE as u32 != 0;
    let known = c.out.pipes.iter().any(|p| p.inode == ino);
    if write && !known && c.survey.widowed(info) {
        // A write end whose read end nobody holds: its bytes are never
        // read; the pipe is made empty.
        let ours = c.take(info.fd)?;
        c.out.pipes.push(PipeState {
            inode: ino,
            capacity: pipe_size(&ours),
            data: Vec::new(),
            fifo: None,
        });
    }
    if !write && !known {
        let ours = c.take(info.fd)?;
        let capacity = pipe_size(&ours);
        let data = sys::peek_pipe(&ours, capacity).map_err(proc_err(c.pid, "pipe content"))?;
        c.out.pipes.push(PipeState {
            inode: ino,
            capacity,
            data,
            fifo: info.target.starts_with('/').then(|| info.target.clone()),
        });
    }
    Ok(FdKind::Pipe {
        pipe: ino,
        write,
        flags: info.flags,
    })
}

/// The size of the pipe `end` is of.
fn pipe_size(end: &std::os::fd::OwnedFd) -> u32 {
    sys::fcntl_get(end, libc::F_GETPIPE_SZ)
        .ok()
        .and_then(|c| u32::try_from(c).ok())
        .unwrap_or(65536)
}

/// This end at `want`, the pipe made when its first end comes.
pub fn restore(
    r: &mut impl Remote,
    b: &mut Rebuild,
    want: i32,
    pipe: u64,
    write: bool,
    flags: u32,
) -> Result<(), FdError> {
    let (rd, wr) = match b.pipes.get(&pipe) {
        Some(&p) => p,
        None => {
            let p = match b.kin.pipes.get(&pipe) {
                Some(&(pid, fd)) => {
                    let both = open_both(r, &format!("/proc/{pid}/fd/{fd}"))?;
                    r.pair_above(both, b.high)?
                }
                None => make(r, b, pipe)?,
            };
            let p = (p[0], p[1]);
            b.pipes.insert(pipe, p);
            p
        }
    };
    r.dup_to(if write { wr } else { rd }, want, flags)?;
    let status = flags as i32 & (libc::O_NONBLOCK | libc::O_APPEND);
    // Always: a FIFO end was opened non-blocking to be made.
    r.fcntl_setfl(want, status)
}

/// Creates pipe `inode` of the image in the process at descriptors above
/// `b.high`, sized and filled as it was; returns [read, write].
fn make(r: &mut impl Remote, b: &Rebuild, inode: u64) -> Result<[i32; 2], FdError> {
    let state = b
        .image
        .pipes
        .iter()
        .find(|p| p.inode == inode)
        .ok_or_else(|| FdError::Incompatible(format!("pipe:[{inode}] has no recorded state")))?;
    let hi = match &state.fifo {
        Some(path) => {
            let fifo = open_fifo(r, path)?;
            r.pair_above(fifo, b.high)?
        }
        None => {
            let pipe = r.pipe2()?;
            r.pair_above(pipe, b.high)?
        }
    };
    r.fcntl_setpipe_sz(hi[1], state.capacity)?;
    // A FIFO on a filesystem both hosts share is one kernel object: the
    // original still holds it, bytes included.
    let already = match &state.fifo {
        Some(_) => {
            let rd = r.take(hi[0], "taking a FIFO's read end")?;
            sys::pending_bytes(&rd).map_err(sys_err("FIFO FIONREAD"))?
        }
        None => 0,
    };
    if already != 0 && already != state.data.len() {
        return Err(FdError::Incompatible(format!(
            "FIFO {:?} holds {already} bytes here, {} at the freeze",
            state.fifo,
            state.data.len()
        )));
    }
    if !state.data.is_empty() && already == 0 {
        let wr = r.take(hi[1], "taking a pipe's write end")?;
        std::io::Write::write_all(&mut std::fs::File::from(wr), &state.data)
            .map_err(sys_err("refilling a pipe"))?;
    }
    Ok(hi)
}

/// Opens both ends of the named FIFO at `path` in the process without
/// blocking (made here, as the process's user, if this host lacks it):
/// (read, write).
fn open_fifo(r: &mut impl Remote, path: &str) -> Result<[i32; 2], FdError> {
    let made = fsuser::run_as(r.who(), || {
        if std::path::Path::new(path).exists() {
            Ok(())
        } else {
            sys::mkfifo(path, 0o600)
        }
    });
    made.and_then(|m| m).map_err(sys_err("making a FIFO"))?;
    open_both(r, path)
}

/// Opens both ends of the FIFO or pipe at `path` (a FIFO's name, or a
/// `/proc/PID/fd/N` link of a pipe) in the process without blocking:
/// [read, write].
fn open_both(r: &mut impl Remote, path: &str) -> Result<[i32; 2], FdError> {
    let nb = libc::O_NONBLOCK | libc::O_CLOEXEC;
    // Read-write first: a FIFO opened so never waits for a partner.
    let base = r.open(path, libc::O_RDWR | nb)?;
    let again = format!("/proc/self/fd/{base}");
    let rd = r.open(&again, libc::O_RDONLY | nb)?;
    let wr = r.open(&again, libc::O_WRONLY | nb)?;
    r.close(base)?;
    Ok([rd, wr])
}
