//! The stub a process is rebuilt in: this binary re-executed as
//! `migrate-agent __stub`, with the pid the process had when that pid is
//! free here, or in a pid namespace of its own where every id it had is.

use super::*;

/// A stub process waiting to become a restored process: it sleeps until
/// a [`Restorer`] seizes it, and is killed if none does.
pub struct Stub {
    pub(super) pid: i32,
    pub(super) pidfd: Option<OwnedFd>,
    /// The stub, then the process it becomes, is waited for by its owner
    /// (in a pid namespace of its own: its placeholder init is).
    pub(super) claim: Option<Claim>,
    /// The placeholder init of its own pid namespace, if in one.
    pub(super) ns: Option<NsInit>,
}

/// Pid 1 of the pid namespace a process was rebuilt in (see
/// [`crate::host::sys::run_stub`]): this agent's child, where the
/// process is not; it tells how the process ended.
#[derive(Debug)]
pub struct NsInit {
    /// Its pid here.
    pub pid: i32,
    pidfd: OwnedFd,
    /// The process's pid inside (the one it had on the source).
    pub(super) inner_pid: i32,
    /// Where it tells how the process ended.
    report: BufReader<std::process::ChildStdout>,
}

impl NsInit {
    /// Waits for the process to end (and its init with it), reaping the
    /// init: how the process ended, `(exit code, signal)`.
    pub fn wait(mut self) -> std::io::Result<(Option<i32>, Option<i32>)> {
        let own = sys::wait_exit(self.pid, &self.pidfd)?;
        let mut line = String::new();
        let _ = self.report.read_line(&mut line);
        let mut words = line.split_whitespace();
        let told = match (words.next(), words.next().and_then(|n| n.parse().ok())) {
            (Some("exited"), Some(code)) => (Some(code), None),
            (Some("killed"), Some(sig)) => (None, Some(sig)),
            // It did not say (killed itself): the namespace ended with it.
            _ => own,
        };
        Ok(told)
    }
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
            ns: None,
        })
    }

    /// Starts a stub as pid `want_pid` of a pid namespace of its own (for
    /// a process whose ids are taken here and cannot be given others).
    pub fn spawn_in_own_pid_ns(exe: &Path, want_pid: i32) -> Result<Stub, RestoreError> {
        let (pid, init) = children::spawning(|| spawn_stub_in_own_pid_ns(exe, want_pid))?;
        let pidfd = sys::pidfd_open(pid).map_err(|source| RestoreError::Sys {
            step: "pidfd_open of the stub",
            source,
        })?;
        let (init, claim) = init;
        Ok(Stub {
            pid,
            pidfd: Some(pidfd),
            claim: Some(claim),
            ns: Some(init),
        })
    }

    /// The stub to rebuild `image` in: `early` (started before the image
    /// was known, as its pid if free) or a new one. Where an id the
    /// process had is taken here and its thread library's copy of its
    /// ids was not found (Go, statically linked programs: a new id could
    /// not be written where the program keeps it), a pid namespace of its
    /// own, where every id it had is free.
    pub fn for_image(
        exe: &Path,
        image: &ProcessImage,
        early: Option<Stub>,
    ) -> Result<Stub, RestoreError> {
        let pid_taken = early.as_ref().is_some_and(|s| s.pid != image.pid)
            || (early.is_none() && taken_here(image.pid));
        let ids_taken = pid_taken || image.threads.iter().skip(1).any(|t| taken_here(t.tid));
        if ids_taken && image.tid_offset.is_none() && image.pid > 1 {
            tracing::info!(
                pid = image.pid,
                "ids taken here and not patchable: rebuilt in a pid namespace of its own"
            );
            drop(early);
            return Stub::spawn_in_own_pid_ns(exe, image.pid);
        }
        match early {
            Some(s) => Ok(s),
            None => Stub::spawn(exe, image.pid),
        }
    }

    /// Whether it is in a pid namespace of its own.
    pub fn in_own_pid_ns(&self) -> bool {
        self.ns.is_some()
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

/// Whether a process or thread has id `id` in this agent's pid namespace.
fn taken_here(id: i32) -> bool {
    Path::new(&format!("/proc/{id}")).exists()
}

/// Starts a stub process, with pid `want_pid` if that is free here, and
/// returns its pid (it sleeps until seized), claimed: once its launcher
/// has exited it is this agent's child. Called inside
/// [`children::spawning`].
pub(super) fn spawn_stub(exe: &Path, want_pid: i32) -> Result<(i32, Claim), RestoreError> {
    let (mut child, _launcher, line, _) = launch_stub(exe, want_pid, false)?;
    let pid = line
        .trim()
        .parse()
        .map_err(|_| RestoreError::Stub(std::io::Error::other(format!("stub said {line:?}"))))?;
    let claim = Claim::new(pid);
    let _ = child.wait();
    Ok((pid, claim))
}

/// As [`spawn_stub`], in a pid namespace of its own: the stub's pid and
/// its init, claimed (the agent's child; the stub is the init's).
fn spawn_stub_in_own_pid_ns(
    exe: &Path,
    want_pid: i32,
) -> Result<(i32, (NsInit, Claim)), RestoreError> {
    let (mut child, _launcher, line, report) = launch_stub(exe, want_pid, true)?;
    let said = || RestoreError::Stub(std::io::Error::other(format!("stub said {line:?}")));
    let ids: Vec<i32> = line
        .split_whitespace()
        .map(|w| w.parse().map_err(|_| said()))
        .collect::<Result<_, _>>()?;
    let &[pid, init, inner_pid] = ids.as_slice() else {
        return Err(said());
    };
    let claim = Claim::new(init);
    let _ = child.wait();
    let pidfd = sys::pidfd_open(init).map_err(|source| RestoreError::Sys {
        step: "pidfd_open of the stub's init",
        source,
    })?;
    let init = NsInit {
        pid: init,
        pidfd,
        inner_pid,
        report,
    };
    Ok((pid, (init, claim)))
}

/// Runs `migrate-agent __stub` (in a pid namespace of its own with
/// `own_ns`): the launcher (claimed), the first line it said, and the
/// rest of its output.
fn launch_stub(exe: &Path, want_pid: i32, own_ns: bool) -> Result<Launched, RestoreError> {
    let mut child = Command::new(exe)
        .arg("__stub")
        .arg(want_pid.to_string())
        .args(own_ns.then_some("own-pid-ns"))
        .env("GLIBC_TUNABLES", "glibc.pthread.rseq=0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(RestoreError::Stub)?;
    let launcher = Claim::new(child.id() as i32);
    let mut line = String::new();
    let out = child
        .stdout
        .take()
        .ok_or_else(|| RestoreError::Stub(std::io::Error::other("no stdout")))?;
    let mut out = BufReader::new(out);
    out.read_line(&mut line).map_err(RestoreError::Stub)?;
    Ok((child, launcher, line, out))
}

/// A launched stub: the launcher, its claim, the first line the stub
/// said, and the rest of its output.
type Launched = (
    std::process::Child,
    Claim,
    String,
    BufReader<std::process::ChildStdout>,
);
