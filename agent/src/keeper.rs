//! The keeper: a small process that outlives the destination agent for
//! the length of post-copy. It holds a copy of the restored process's
//! userfaultfd, so faults stay blocked rather than being filled with zeros
//! by the kernel if the agent dies, and kills the process when the agent
//! goes away without saying that post-copy is over.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::children::Claim;

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

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` is a valid array of two ints for the kernel to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 just returned these two descriptors; nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl Keeper {
    /// Starts `exe __keeper` holding `uffd` and `pidfd`.
    pub fn spawn(exe: &Path, uffd: &OwnedFd, pidfd: &OwnedFd) -> io::Result<Keeper> {
        let (rx, tx) = pipe()?;
        let fds = [uffd.as_raw_fd(), pidfd.as_raw_fd(), rx.as_raw_fd()];
        let mut cmd = Command::new(exe);
        cmd.arg("__keeper")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: the closure runs between fork and exec and calls only
        // fcntl and dup2, which are async-signal-safe; it touches no memory
        // but the copied array.
        unsafe {
            cmd.pre_exec(move || {
                // Move out of the way first so dup2 never meets itself.
                let mut high = [0i32; 3];
                for (h, fd) in high.iter_mut().zip(fds) {
                    *h = libc::fcntl(fd, libc::F_DUPFD, 10);
                    if *h < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                for (h, target) in high
                    .into_iter()
                    .zip([KEEPER_UFFD, KEEPER_PIDFD, KEEPER_PIPE])
                {
                    if libc::dup2(h, target) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let (child, claim) = crate::children::spawning(|| {
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
    // SAFETY: plain syscalls on integers; ignoring signals so that a
    // terminal's ^C aimed at the agent does not take the keeper along.
    unsafe {
        libc::setsid();
        for sig in [libc::SIGINT, libc::SIGHUP, libc::SIGTERM, libc::SIGPIPE] {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
    // Nothing is ever written: the pipe closes when the agent is gone. A
    // release ends this process first (SIGKILL, which nothing here stops).
    let mut b = [0u8; 1];
    loop {
        // SAFETY: reading one byte into a valid buffer.
        let n = unsafe { libc::read(KEEPER_PIPE, b.as_mut_ptr().cast(), 1) };
        if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        break;
    }
    {
        // SAFETY: pidfd_send_signal on the descriptor the agent gave us.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                KEEPER_PIDFD,
                libc::SIGKILL,
                0usize,
                0u32,
            );
        }
    }
    // SAFETY: _exit ends the keeper; its descriptors close with it.
    unsafe { libc::_exit(0) }
}
