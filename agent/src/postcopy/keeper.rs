//! The keeper: a small process that outlives the destination agent for
//! the length of post-copy. It holds a copy of the restored process's
//! userfaultfd, so faults stay blocked rather than being filled with zeros
//! by the kernel if the agent dies, and kills the process when the agent
//! goes away without saying that post-copy is over. It holds copies of
//! the process's repaired connections too, and puts them in repair mode
//! before the kill: the end of a copy that dies owed pages reaches no
//! peer (no FIN that would read as the service's clean close).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::host::children::Claim;
use crate::host::sys;

/// The keeper's end of its link to the agent, as a descriptor number in
/// the keeper.
const KEEPER_LINK: i32 = 3;

/// A running keeper. Started before it is needed (a process started
/// during the freeze would count in the downtime), it holds nothing until
/// it is [armed](Keeper::arm).
pub struct Keeper {
    /// Closed when the agent is gone (or drops it): the keeper kills.
    link: Option<UnixStream>,
    child: Child,
    /// Last: released once the keeper has been waited for.
    _claim: Claim,
}

impl Keeper {
    /// Starts `exe __keeper`, waiting for what to keep.
    pub fn start(exe: &Path) -> io::Result<Keeper> {
        let (ours, theirs) = UnixStream::pair()?;
        let mut cmd = Command::new(exe);
        cmd.arg("__keeper")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        sys::pass_fds(&mut cmd, &[theirs.as_raw_fd()], &[KEEPER_LINK]);
        let (child, claim) = crate::host::children::spawning(|| {
            let child = cmd.spawn()?;
            let claim = Claim::new(child.id() as i32);
            Ok::<_, io::Error>((child, claim))
        })?;
        drop(theirs);
        Ok(Keeper {
            link: Some(ours),
            child,
            _claim: claim,
        })
    }

    /// A keeper holding `uffd`, `pidfd` and `conns`: `early`, started
    /// before it was needed, or (without one, or should it not take
    /// them) one started now.
    pub fn armed(
        early: Option<Keeper>,
        exe: &Path,
        uffd: &OwnedFd,
        pidfd: &OwnedFd,
        conns: &[BorrowedFd<'_>],
    ) -> io::Result<Keeper> {
        if let Some(k) = early {
            match k.arm(uffd, pidfd, conns) {
                Ok(()) => return Ok(k),
                Err(e) => {
                    tracing::warn!(error = %e, "the early keeper took nothing: starting another")
                }
            }
        }
        let k = Keeper::start(exe)?;
        k.arm(uffd, pidfd, conns)?;
        Ok(k)
    }

    /// Gives the keeper copies of `uffd`, `pidfd` and the connections
    /// `conns`: from now on it kills the process (its connections put in
    /// repair first) if the agent goes away before [`Keeper::release`].
    pub fn arm(&self, uffd: &OwnedFd, pidfd: &OwnedFd, conns: &[BorrowedFd<'_>]) -> io::Result<()> {
        let link = self
            .link
            .as_ref()
            .ok_or_else(|| io::Error::other("the keeper's link is closed"))?;
        let count = u32::try_from(conns.len()).map_err(io::Error::other)?;
        sys::send_fds(
            link,
            &count.to_le_bytes(),
            &[uffd.as_raw_fd(), pidfd.as_raw_fd()],
        )?;
        for chunk in conns.chunks(sys::MAX_FDS_PER_MESSAGE) {
            let fds: Vec<RawFd> = chunk.iter().map(|c| c.as_raw_fd()).collect();
            sys::send_fds(link, &(fds.len() as u32).to_le_bytes(), &fds)?;
        }
        Ok(())
    }

    /// Post-copy is over: the keeper is ended before it can kill anything
    /// (it kills only once its link closes, and the link stays open until
    /// it is gone).
    pub fn release(mut self) -> io::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        self.link.take();
        Ok(())
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        // Closing the link makes an armed keeper kill the process (an
        // unarmed one just ends).
        self.link.take();
        let _ = self.child.wait();
    }
}

/// What an armed keeper holds: the userfaultfd (only held), the pidfd, the
/// connections. `None`: the agent closed the link before arming it.
fn receive_what_to_keep() -> Option<(OwnedFd, OwnedFd, Vec<OwnedFd>)> {
    let mut count = [0u8; 4];
    let mut first = sys::recv_fds(KEEPER_LINK, &mut count).ok()??;
    if first.len() != 2 {
        return None;
    }
    let pidfd = first.pop()?;
    let uffd = first.pop()?;
    let mut conns = Vec::new();
    let mut left = u32::from_le_bytes(count) as usize;
    while left > 0 {
        let mut n = [0u8; 4];
        let fds = sys::recv_fds(KEEPER_LINK, &mut n).ok()??;
        if fds.is_empty() || fds.len() > left {
            return None;
        }
        left -= fds.len();
        conns.extend(fds);
    }
    Some((uffd, pidfd, conns))
}

/// Body of `migrate-agent __keeper`: waits to be armed, then on its link
/// to the agent.
pub fn run() -> ! {
    // A terminal's ^C aimed at the agent must not take the keeper along.
    sys::detach_from_terminal();
    let Some((_uffd, pidfd, conns)) = receive_what_to_keep() else {
        // Never armed: nothing to keep.
        sys::exit_now(0)
    };
    // Nothing more is ever written: the link closes when the agent is
    // gone. A release ends this process first (SIGKILL, which nothing
    // here stops).
    sys::wait_readable_or_closed(KEEPER_LINK);
    // Its connections go quiet first; our copies keep them open, in
    // repair mode, until this process ends, and they close silently then.
    crate::fd::tcp_repair::silence(&conns);
    let _ = sys::pidfd_kill(&pidfd, libc::SIGKILL);
    sys::exit_now(0)
}
