//! The keeper: a small process that outlives the destination agent for
//! the length of post-copy. It holds a copy of the restored process's
//! userfaultfd, so faults stay blocked rather than being filled with zeros
//! by the kernel if the agent dies, and kills the process when the agent
//! goes away without saying that post-copy is over.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::host::children::Claim;
use crate::host::sys;

/// Descriptor numbers in the keeper.
const KEEPER_UFFD: i32 = 3;
const KEEPER_PIDFD: i32 = 4;
const KEEPER_PIPE: i32 = 5;

/// A running keeper.
pub struct Keeper {
    tx: Option<File>,
    child: Child,
    /// Last: released once the keeper has been waited for.
    _claim: Claim,
}

impl Keeper {
    /// Starts `exe __keeper` holding `uffd` and `pidfd`.
    pub fn spawn(exe: &Path, uffd: &OwnedFd, pidfd: &OwnedFd) -> io::Result<Keeper> {
        let (rx, tx) = sys::pipe()?;
        let mut cmd = Command::new(exe);
        cmd.arg("__keeper")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        sys::pass_fds(
            &mut cmd,
            [uffd.as_raw_fd(), pidfd.as_raw_fd(), rx.as_raw_fd()],
            [KEEPER_UFFD, KEEPER_PIDFD, KEEPER_PIPE],
        );
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

/// Body of `migrate-agent __keeper`: waits on the pipe from the agent.
pub fn run() -> ! {
    // A terminal's ^C aimed at the agent must not take the keeper along.
    sys::detach_from_terminal();
    // Nothing is ever written: the pipe closes when the agent is gone. A
    // release ends this process first (SIGKILL, which nothing here stops).
    sys::wait_readable_or_closed(KEEPER_PIPE);
    let _ = sys::pidfd_kill_raw(KEEPER_PIDFD, libc::SIGKILL);
    sys::exit_now(0)
}
