//! The keeper: a small process that outlives the destination agent for
//! the length of post-copy. It holds a copy of the restored process's
//! userfaultfd, so faults stay blocked rather than being filled with zeros
//! by the kernel if the agent dies, and kills the process when the agent
//! goes away without saying that post-copy is over. It holds copies of
//! the process's repaired connections too, and puts them in repair mode
//! before the kill: the end of a copy that dies owed pages reaches no
//! peer (no FIN that would read as the service's clean close).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::host::children::Claim;
use crate::host::sys;

/// Descriptor numbers in the keeper.
const KEEPER_UFFD: i32 = 3;
const KEEPER_PIDFD: i32 = 4;
const KEEPER_PIPE: i32 = 5;
/// The first of the connections, one after the other.
const KEEPER_CONNS: i32 = 6;

/// A running keeper.
pub struct Keeper {
    tx: Option<File>,
    child: Child,
    /// Last: released once the keeper has been waited for.
    _claim: Claim,
}

impl Keeper {
    /// Starts `exe __keeper N` holding `uffd`, `pidfd` and the `N`
    /// connections `conns`.
    pub fn spawn(
        exe: &Path,
        uffd: &OwnedFd,
        pidfd: &OwnedFd,
        conns: &[BorrowedFd<'_>],
    ) -> io::Result<Keeper> {
        let (rx, tx) = sys::pipe()?;
        let mut cmd = Command::new(exe);
        cmd.arg("__keeper")
            .arg(conns.len().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut fds = vec![uffd.as_raw_fd(), pidfd.as_raw_fd(), rx.as_raw_fd()];
        let mut at = vec![KEEPER_UFFD, KEEPER_PIDFD, KEEPER_PIPE];
        for (i, c) in conns.iter().enumerate() {
            fds.push(c.as_raw_fd());
            at.push(KEEPER_CONNS + i as i32);
        }
        sys::pass_fds(&mut cmd, &fds, &at);
        let (child, claim) = crate::host::children::spawning(|| {
            let child = cmd.spawn()?;
            let claim = Claim::new(child.id() as i32);
            Ok::<_, io::Error>((child, claim))
        })?;
        drop(rx);
        Ok(Keeper {
            tx: Some(File::from(tx)),
            child,
            _claim: claim,
        })
    }

    /// Post-copy is over: the keeper is ended before it can kill anything
    /// (it kills only once its pipe closes, and the pipe stays open until
    /// it is gone).
    pub fn release(mut self) -> io::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        self.tx.take();
        Ok(())
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        // Without the release byte the keeper kills the process.
        self.tx.take();
        let _ = self.child.wait();
    }
}

/// Body of `migrate-agent __keeper N`: waits on the pipe from the agent.
pub fn run(conns: usize) -> ! {
    // A terminal's ^C aimed at the agent must not take the keeper along.
    sys::detach_from_terminal();
    // Nothing is ever written: the pipe closes when the agent is gone. A
    // release ends this process first (SIGKILL, which nothing here stops).
    sys::wait_readable_or_closed(KEEPER_PIPE);
    // Its connections go quiet first; our copies keep them open, in
    // repair mode, until this process ends, and they close silently then.
    let given: Vec<RawSock> = (KEEPER_CONNS..).take(conns).map(RawSock).collect();
    crate::fd::tcp_repair::silence(&given);
    let _ = sys::pidfd_kill_raw(KEEPER_PIDFD, libc::SIGKILL);
    sys::exit_now(0)
}

/// A descriptor number this process was given at its start.
struct RawSock(i32);

impl AsRawFd for RawSock {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0
    }
}
