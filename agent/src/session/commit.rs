//! The commit rule: when a migrated process may run where. Both sides'
//! sessions are written as states whose owners enforce it when dropped
//! (an error, an early return, a panic unwinding); nothing else kills or
//! resumes a process on a failure path.
//!
//! 1. Until the source owns the original as committed, the original is
//!    the process: any way out of the session resumes it (the dump's
//!    [`crate::capture::dump::Frozen`] detaches its threads when dropped), and the
//!    destination is told the migration is off ([`Uncommitted`]). If the
//!    source agent dies, the kernel detaches its threads; one inside an
//!    injected syscall returns to its own registers through a signal
//!    frame ([`migrate_inject::frame`]), and the next agent gives back
//!    the CPU affinity the dump held ([`crate::host::lent`]).
//! 2. The destination lets its copy run only after it received `Commit`
//!    for its migration id; until then what it built is killed when its
//!    owner is dropped ([`crate::rebuild::restore::Restorer`]), or by the kernel if
//!    its agent dies (`PTRACE_O_EXITKILL`).
//! 3. From the moment the source owns the original as committed
//!    ([`FrozenOriginal`], then `Commit` is sent), the original never runs
//!    again unless its copy is known gone: dropped, it is killed; if the
//!    source agent dies, the kernel kills it (`PTRACE_O_EXITKILL`).
//! 4. Known gone means the destination said so: its session failed before
//!    letting the copy run (`Failed { ran: false }`), its copy failed and
//!    was killed (`Failed { ran: true }`), or, asked afterwards
//!    ([`crate::session::ask`]), its record of that migration says gone
//!    ([`crate::session::received::Fate`], recorded before each step that makes it
//!    true). A copy that runs with every page is the process: the original
//!    is killed and the migration is complete. Not learned, the original
//!    stays frozen.
//!
//! The source's states (`source.rs`, one step function):
//!
//! | state | holds | dropped (left other than into the next) |
//! |---|---|---|
//! | Offered | lanes, files checked | the destination hears `Abort` |
//! | Frozen | the frozen original, its image | `Abort`, the original runs on |
//! | Ready | the same; the copy is built | `Abort`, the original runs on |
//! | Committed | the original as [`FrozenOriginal`] | the original is killed |
//! | Over | the caller's answer | - |
//!
//! The destination's (`dest.rs`, one step function), once the core is in:
//!
//! | state | holds | dropped |
//! |---|---|---|
//! | Building | the stub | the stub is killed |
//! | Built | the rebuilt process, stopped; its keeper | the process is killed ([`crate::rebuild::restore::Restorer`]) |
//! | Committed | the same; `Commit` received | the process is killed |
//! | Running | the fault handler, the keeper | while pages are owed the keeper kills it |
//! | Over | the session's result | - |
//!
//! Every page in, the keeper is released and the copy runs on by itself.
//! Each migration's [`crate::session::received::Fate`] records its copy's state, for a
//! source that lost touch to ask.

use std::sync::Arc;
use std::time::Duration;

use migrate_inject::Seized;
use migrate_proto::envelope::Sequencer;
use migrate_proto::msg::SourceMsg;

use crate::net::secure::PeerStream;

/// The source's control lane until the commit: dropped before it (a
/// failure, an early return, a panic), it tells the destination the
/// migration is off, and the destination kills what it built. It writes
/// on its own handle of the lane.
pub struct Uncommitted {
    lane: Option<PeerStream>,
    seq: Arc<Sequencer>,
    why: String,
}

impl Uncommitted {
    /// Armed on `ctl`, whose messages `seq` numbers.
    pub fn arm(ctl: &PeerStream, seq: &Arc<Sequencer>) -> Uncommitted {
        Uncommitted {
            lane: ctl.try_clone().ok(),
            seq: seq.clone(),
            why: "the source gave up".into(),
        }
    }

    /// What the destination is told if the session ends here.
    pub fn because(&mut self, why: impl Into<String>) {
        self.why = why.into();
    }

    /// The original is owned as committed: nothing to call off any more.
    pub fn disarm(mut self) {
        self.lane = None;
    }
}

impl Drop for Uncommitted {
    fn drop(&mut self) {
        if let Some(mut lane) = self.lane.take() {
            // A stalled link would hold the abort as long again: a short try.
            let _ = lane.set_write_timeout(Some(Duration::from_millis(500)));
            let why = std::mem::take(&mut self.why);
            let _ = self.seq.send(&mut lane, &SourceMsg::Abort(why));
        }
    }
}

/// What of the network a frozen original holds back: its service
/// addresses, taken off this host, and its connections on them, in repair
/// mode. Dropped, both come back (addresses first); let go, they stay
/// with the copy.
#[derive(Default)]
pub struct HeldNetwork {
    /// The addresses.
    pub moved: crate::host::address::Moved,
    /// The connections.
    pub in_repair: crate::fd::tcp_repair::InRepair,
}

impl HeldNetwork {
    /// Leaves the addresses gone and the connections silent.
    pub fn let_go(self) {
        let HeldNetwork { moved, in_repair } = self;
        moved.let_go();
        in_repair.let_go();
    }
}

/// The original's threads, stopped for good from the commit on, and what
/// of the network it holds back.
pub struct FrozenOriginal(pub Vec<Seized>, pub HeldNetwork);

impl FrozenOriginal {
    /// Ends it (as dropping it does).
    pub fn kill(self) {}

    /// Ends every thread after the first `n`: a tree's other members,
    /// when its root alone goes on (as the deputy).
    pub fn kill_after(&mut self, n: usize) {
        let n = n.min(self.0.len());
        for t in self.0.drain(n..) {
            t.kill();
        }
    }

    /// Lets it run here again: only once its copy is known gone.
    pub fn resume(mut self) {
        // Its addresses and connections first.
        drop(std::mem::take(&mut self.1));
        // Each thread resumes as its handle is released.
        self.0.clear();
    }
}

/// After the commit the original never runs again unless its copy is
/// known gone ([`FrozenOriginal::resume`]): an owner dropped otherwise (an
/// early return, a panic unwinding) kills it.
impl Drop for FrozenOriginal {
    fn drop(&mut self) {
        // Its connections die silently; the addresses stay with the copy.
        std::mem::take(&mut self.1).let_go();
        for t in self.0.drain(..) {
            t.kill();
        }
    }
}
