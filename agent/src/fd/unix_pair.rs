//! One end of a connected pair of unnamed Unix sockets (socketpair) whose
//! both ends the process (or its tree) holds, with the data queued on it:
//! the pair is made once, above every number, each end given its number,
//! and the queued data sent again from the other end once both exist. A
//! process of the same tree rebuilt later is given its end from the
//! agent's copy.
//!
//! A connected Unix socket whose peer is gone (closed by whoever held it:
//! the kernel keeps the survivor connected to nothing) moves the same way,
//! as the only end of a pair of its own: made with its data queued from
//! the other end, which is then closed, so that it reads its data, then
//! end-of-file (a stream) and its writes fail as before.

use migrate_proto::image::FdKind;

use super::{proc_err, sys_err, Collect, FdError, Rebuild, Remote, RemoteCalls};
use crate::host::procfs::FdInfo;
use crate::host::sys::{self, UnixSocket};

/// Which pair and end, its type, and the data waiting on it (peeked).
pub fn dump(c: &Collect, info: &FdInfo, u: UnixSocket) -> Result<FdKind, FdError> {
    let ours = c.take(info.fd)?;
    let stream = i32::from(u.stype) == libc::SOCK_STREAM;
    // Widowed: a pair of its own, of which it is the only end.
    let (pair, first) = match u.peer {
        0 => (u.inode, true),
        peer => (u.inode.min(peer), u.inode < peer),
    };
    Ok(FdKind::UnixPair {
        pair,
        first,
        stype: i32::from(u.stype),
        flags: info.flags,
        queued: sys::peek_unix(&ours, stream).map_err(proc_err(c.pid, "unix socket queue"))?,
    })
}

/// This end at `want`, the pair made when its first end comes.
pub fn restore(
    r: &mut impl Remote,
    b: &mut Rebuild,
    want: i32,
    pair: u64,
    first: bool,
    stype: i32,
    flags: u32,
) -> Result<(), FdError> {
    let kept = b.kin.pair_ends.borrow_mut().remove(&(pair, first));
    if let Some(end) = kept {
        // Made by a process of its tree rebuilt before: given its end.
        let got = r.pass_in(&end)?;
        r.move_fd(got, want, flags)?;
        return r.fcntl_setfl(want, flags as i32 & libc::O_NONBLOCK);
    }
    let (x, y) = match b.pairs.get(&pair) {
        Some(&p) => p,
        None => {
            let mut ty = stype;
            if flags & libc::O_NONBLOCK as u32 != 0 {
                ty |= libc::SOCK_NONBLOCK;
            }
            let made = r.socketpair(libc::AF_UNIX, ty, 0)?;
            let hi = r.pair_above(made, b.high)?;
            b.pairs.insert(pair, (hi[0], hi[1]));
            (hi[0], hi[1])
        }
    };
    r.dup_to(if first { x } else { y }, want, flags)
}

/// Data waiting on one end of each pair, sent from the other.
pub fn refill(r: &mut impl Remote, b: &Rebuild) -> Result<(), FdError> {
    for e in &b.image.fds {
        let FdKind::UnixPair {
            pair,
            first,
            queued,
            ..
        } = &e.kind
        else {
            continue;
        };
        if queued.is_empty() {
            continue;
        }
        let ours = match b.pairs.get(pair) {
            Some(&(x, y)) => r.take(if *first { y } else { x }, "taking a socket")?,
            // Its pair was made by a process of its tree: sent from the
            // agent's copy of the other end.
            None => match b.kin.pair_ends.borrow().get(&(*pair, !*first)) {
                Some(other) => other.try_clone().map_err(sys_err("a socket's copy"))?,
                None => continue,
            },
        };
        for msg in queued {
            let n = sys::send(&ours, msg).map_err(sys_err("refilling a socketpair"))?;
            if n != msg.len() {
                return Err(FdError::Incompatible(format!(
                    "refilling a socketpair: sent {n} of {} bytes",
                    msg.len()
                )));
            }
        }
    }
    Ok(())
}

/// Keeps copies of both ends of each pair made here whose other end this
/// process does not hold (a process of its tree rebuilt later does).
pub fn keep_for_kin(r: &mut impl Remote, b: &Rebuild) -> Result<(), FdError> {
    for (&pair, &(x, y)) in &b.pairs {
        let holds = |end: bool| {
            b.image.fds.iter().any(|e| {
                matches!(e.kind, FdKind::UnixPair { pair: p, first, .. } if p == pair && first == end)
            })
        };
        if holds(true) && holds(false) {
            continue;
        }
        let mut kept = b.kin.pair_ends.borrow_mut();
        kept.insert((pair, true), r.take(x, "keeping a socketpair's end")?);
        kept.insert((pair, false), r.take(y, "keeping a socketpair's end")?);
    }
    Ok(())
}

/// A connected pair of Unix sockets moves when the process holds both ends
/// (as a socketpair: bound names are not kept), and so does a connected
/// socket whose peer is gone, and a listener bound to a name with no
/// connection waiting; other Unix sockets are refused.
pub fn movable(survey: &super::Survey, s: &UnixSocket) -> bool {
    let pair = s.state == 1 && s.peer != 0 && survey.holds_socket(s.peer);
    // A listener bound to a name, nobody waiting to be accepted.
    let listener =
        s.state == 10 && s.name.as_ref().is_some_and(|n| !n.is_empty()) && s.queues.0 == 0;
    pair || listener || widowed(s)
}

/// Whether `s` is connected to a peer that is gone: the kernel reports a
/// released peer as inode 0.
pub fn widowed(s: &UnixSocket) -> bool {
    s.state == 1 && s.peer == 0
}
