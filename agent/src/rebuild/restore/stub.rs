//! The stub a process is rebuilt in: this binary re-executed as
//! `migrate-agent __stub`, with the pid the process had when that pid is
//! free here.

use super::*;

/// A stub process waiting to become a restored process: it sleeps until
/// a [`Restorer`] seizes it, and is killed if none does.
pub struct Stub {
    pub(super) pid: i32,
    pub(super) pidfd: Option<OwnedFd>,
    /// The stub, then the process it becomes, is waited for by its owner.
    pub(super) claim: Option<Claim>,
}

impl Stub {
    /// Starts a stub, with pid `want_pid` if that is free here. Starting
    /// one (fork, exec, a second fork) takes milliseconds: a destination
    /// starts it before the source freezes the process.
    pub fn spawn(exe: &Path, want_pid: i32) -> Result<Stub, RestoreError> {
        let (pid, claim) = children::spawning(|| spawn_stub(exe, want_pid))?;
        let pidfd = sys::pidfd_open(pid).map_err(|source| RestoreError::Sys {
            step: "pidfd_open of the stub",
            source,
        })?;
        Ok(Stub {
            pid,
            pidfd: Some(pidfd),
            claim: Some(claim),
        })
    }
}

impl Stub {
    /// Its pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        if let Some(fd) = self.pidfd.take() {
            let _ = sys::pidfd_kill(&fd, libc::SIGKILL);
        }
    }
}

/// Starts a stub process, with pid `want_pid` if that is free here, and
/// returns its pid (it sleeps until seized), claimed: once its launcher
/// has exited it is this agent's child. Called inside
/// [`children::spawning`].
pub(super) fn spawn_stub(exe: &Path, want_pid: i32) -> Result<(i32, Claim), RestoreError> {
    let mut child = Command::new(exe)
        .arg("__stub")
        .arg(want_pid.to_string())
        .env("GLIBC_TUNABLES", "glibc.pthread.rseq=0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(RestoreError::Stub)?;
    let _launcher = Claim::new(child.id() as i32);
    let mut line = String::new();
    let out = child
        .stdout
        .take()
        .ok_or_else(|| RestoreError::Stub(std::io::Error::other("no stdout")))?;
    BufReader::new(out)
        .read_line(&mut line)
        .map_err(RestoreError::Stub)?;
    let pid = line
        .trim()
        .parse()
        .map_err(|_| RestoreError::Stub(std::io::Error::other(format!("stub said {line:?}"))))?;
    let claim = Claim::new(pid);
    let _ = child.wait();
    Ok((pid, claim))
}
