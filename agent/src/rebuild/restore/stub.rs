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

    /// Starts a tree of stubs as `plan` says: every pid as planned (the
    /// tree is refused, naming the pid, if one is taken here), parents,
    /// process groups and sessions made by the stubs themselves, zombies
    /// ended with their status. The stubs, in plan order; dropping them
    /// kills the tree.
    pub fn spawn_tree(exe: &Path, plan: &[sys::StubNode]) -> Result<Vec<Stub>, RestoreError> {
        children::spawning(|| spawn_stub_tree(exe, plan))
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

/// Starts a stub tree (`migrate-agent __stub PLAN`), reads every node's
/// word and returns the stubs in plan order, the root claimed. Called
/// inside [`children::spawning`].
fn spawn_stub_tree(exe: &Path, plan: &[sys::StubNode]) -> Result<Vec<Stub>, RestoreError> {
    let mut child = Command::new(exe)
        .arg("__stub")
        .arg(sys::encode_plan(plan))
        .env("GLIBC_TUNABLES", "glibc.pthread.rseq=0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(RestoreError::Stub)?;
    let _launcher = Claim::new(child.id() as i32);
    let out = child
        .stdout
        .take()
        .ok_or_else(|| RestoreError::Stub(std::io::Error::other("no stdout")))?;
    // Each stub is held as soon as it is heard of (its pidfd opened while
    // its parent stub, which reaps nothing, or the root's claim keeps its
    // pid): whatever goes wrong next, dropping them kills the tree.
    let mut stubs: Vec<Option<Stub>> = plan.iter().map(|_| None).collect();
    let mut failed = None;
    // Bounded by the plan: one word per node, then end of file once every
    // stub has let go of its stdout.
    for line in BufReader::new(out).lines().take(plan.len()) {
        let line = line.map_err(RestoreError::Stub)?;
        let f: Vec<&str> = line.split(' ').collect();
        let word = f.first().copied();
        let i = f.get(1).and_then(|i| i.parse::<usize>().ok());
        let n = f.get(2).and_then(|n| n.parse::<i32>().ok());
        match (word, i.filter(|&i| i < plan.len()), n) {
            (Some("ok"), Some(i), Some(pid)) => {
                let claim = (i == 0).then(|| Claim::new(pid));
                let pidfd = sys::pidfd_open(pid).map_err(|source| RestoreError::Sys {
                    step: "pidfd_open of a stub",
                    source,
                })?;
                stubs[i] = Some(Stub {
                    pid,
                    pidfd: Some(pidfd),
                    claim,
                });
            }
            (Some("fail"), Some(i), Some(errno)) => {
                failed.get_or_insert((plan[i].pid, std::io::Error::from_raw_os_error(errno)));
            }
            _ => {
                return Err(RestoreError::Stub(std::io::Error::other(format!(
                    "the stub tree said {line:?}"
                ))))
            }
        }
    }
    let _ = child.wait();
    if let Some((pid, e)) = failed {
        return Err(RestoreError::Incompatible(format!(
            "pid {pid} of the process tree cannot be had here: {e}"
        )));
    }
    if let Some(i) = stubs.iter().position(Option::is_none) {
        return Err(RestoreError::Incompatible(format!(
            "the stub for pid {} of the process tree never started",
            plan[i].pid
        )));
    }
    Ok(stubs.into_iter().flatten().collect())
}
