//! Conversations with the local agent over its control socket; each lasts
//! only as long as the call (a process holding a connection to its agent
//! could not be migrated).

use std::ffi::c_char;
use std::io;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use migrate_proto::image::Lineage;
use migrate_proto::msg::{Reply, Request};

use crate::ids::real_pid;

/// The agent's control socket.
fn socket() -> String {
    std::env::var("MIGRATE_SOCKET").unwrap_or_else(|_| "/run/migrate/agent.sock".into())
}

/// The error for an answer other than the one asked for (a refusal is
/// `PermissionDenied`, with the agent's reasons).
pub(crate) fn refused(other: Reply) -> io::Error {
    match other {
        Reply::Refused { reasons, .. } => io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "the agent refused: {}",
                migrate_proto::refusal::texts(&reasons, "; ")
            ),
        ),
        other => io::Error::other(format!("the agent answered {other:?}")),
    }
}

/// Asks the local agent `r` after the greeting.
pub fn ask(r: &Request) -> io::Result<Reply> {
    let mut s = UnixStream::connect(socket())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    match Request::hello(&mut s).map_err(io::Error::other)? {
        Reply::Welcome { .. } => r.ask(&mut s).map_err(io::Error::other),
        other => Err(refused(other)),
    }
}

/// This host's name and this process's lineage.
pub fn whoami() -> io::Result<(String, Lineage)> {
    match ask(&Request::Whoami { pid: real_pid() })? {
        Reply::Whoami { host, lineage } => Ok((host, lineage)),
        other => Err(refused(other)),
    }
}

/// Tells the agent where the state block is; returns this host's name.
pub fn attach(state: u64) -> io::Result<String> {
    match ask(&Request::ShimAttach {
        pid: real_pid(),
        state,
    })? {
        Reply::Whoami { host, .. } => Ok(host),
        other => Err(refused(other)),
    }
}

/// Copies `s` and a NUL into the C buffer `buf` of `len` bytes: 0, or -1
/// if it does not fit.
///
/// # Safety
///
/// `buf` is null or points to `len` writable bytes.
pub unsafe fn copy_out(s: &str, buf: *mut c_char, len: usize) -> i32 {
    if buf.is_null() || s.len() + 1 > len || s.as_bytes().contains(&0) {
        return -1;
    }
    // SAFETY: the caller gives `len` writable bytes at `buf` (the C API's
    // contract), and `s.len() + 1 <= len` was checked above.
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr(), buf.cast::<u8>(), s.len());
        *buf.add(s.len()) = 0;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_out_checks_the_buffer() {
        let mut b = [0x55 as c_char; 6];
        // SAFETY: `b` has the length given.
        unsafe {
            assert_eq!(copy_out("host2", b.as_mut_ptr(), b.len()), 0);
            assert_eq!(b[5], 0);
            assert_eq!(copy_out("host22", b.as_mut_ptr(), b.len()), -1);
            assert_eq!(copy_out("h", std::ptr::null_mut(), 6), -1);
        }
    }

    #[test]
    fn without_an_agent_the_queries_fail_cleanly() {
        std::env::set_var("MIGRATE_SOCKET", "/nonexistent/agent.sock");
        assert!(whoami().is_err());
    }
}
