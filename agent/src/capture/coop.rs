//! The agent's side of a cooperating process: its shim's state block
//! ([`migrate_proto::shim`]) and its listener thread.
//!
//! Before freezing such a process the source tells the listener
//! ([`before_freeze`]) and waits, at most [`FREEZE_NOTICE`], until its
//! freeze callbacks have returned; the destination rewrites the block of
//! the rebuilt process before it runs (`Restorer::patch_shim` in `rebuild::restore`)
//! and tells the listener once it runs ([`tell`]).

use std::time::{Duration, Instant};

use migrate_inject::RemoteMem;
use migrate_proto::shim::{Phase, ShimState, LISTENER_NAME, SIGNAL, SIZE};
use tracing::{info, warn};

use crate::host::sys;

/// Longest wait for the freeze callbacks to return.
pub const FREEZE_NOTICE: Duration = Duration::from_secs(10);

/// The listener thread of `pid`, found by its name.
pub fn listener(pid: i32) -> Option<i32> {
    crate::host::procfs::tids(pid)
        .ok()?
        .into_iter()
        .find(|tid| {
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
                .is_ok_and(|c| c.trim_end() == LISTENER_NAME)
        })
}

/// The state block at `addr` in `mem`, if it holds one.
fn read_state(mem: &RemoteMem, addr: u64) -> Option<ShimState> {
    let mut b = vec![0u8; SIZE];
    mem.read(addr, &mut b).ok()?;
    ShimState::decode(&b)
}

/// A sequence number for a phase: distinct from the last few (the
/// listener acknowledges by writing it back).
fn next_seq() -> u32 {
    (crate::unix_us() / 1000) as u32 & 0x00ff_ffff
}

/// Tells the listener of `pid` (if it listens) that `phase` happened;
/// returns the sequence number sent.
fn tell_in(mem: &RemoteMem, pid: i32, addr: u64, phase: Phase) -> Option<u32> {
    if !read_state(mem, addr)?.listening {
        return None;
    }
    let tid = listener(pid)?;
    let seq = next_seq();
    let value = phase.value(seq);
    // The listener acts only on a signal whose value the block holds.
    let at = addr + migrate_proto::shim::off::NOTICE as u64;
    if let Err(e) = mem.write(at, &value.to_le_bytes()) {
        warn!(pid, error = %e, "cannot write the shim's notice");
        return None;
    }
    match sys::queue_to_thread(pid, tid, SIGNAL, value) {
        Ok(()) => Some(seq),
        Err(e) => {
            warn!(pid, tid, error = %e, "cannot signal the shim's listener");
            None
        }
    }
}

/// Tells the listener of `pid` (if it listens) that `phase` happened.
pub fn tell(pid: i32, addr: u64, phase: Phase) {
    if let Ok(mem) = RemoteMem::open(pid) {
        tell_in(&mem, pid, addr, phase);
    }
}

/// How the freeze notice went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreezeNotice {
    /// No listener: the process registered no callbacks.
    NotListening,
    /// The freeze callbacks returned.
    Done,
    /// They did not return within [`FREEZE_NOTICE`].
    TimedOut,
}

/// Tells a cooperating process it is about to be frozen and waits until
/// its freeze callbacks have returned (at most [`FREEZE_NOTICE`]).
pub fn before_freeze(pid: i32, addr: u64) -> FreezeNotice {
    let Ok(mem) = RemoteMem::open(pid) else {
        return FreezeNotice::NotListening;
    };
    let Some(seq) = tell_in(&mem, pid, addr, Phase::Freeze) else {
        return FreezeNotice::NotListening;
    };
    let t0 = Instant::now();
    while t0.elapsed() < FREEZE_NOTICE {
        // A block that cannot be read any more: the process is gone, the
        // freeze will say so.
        if read_state(&mem, addr).is_none_or(|s| s.ack == seq) {
            info!(
                pid,
                ms = t0.elapsed().as_millis() as u64,
                "freeze callbacks done"
            );
            return FreezeNotice::Done;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    warn!(
        pid,
        "the freeze callbacks did not return in time; freezing anyway"
    );
    FreezeNotice::TimedOut
}
