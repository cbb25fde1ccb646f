//! The cooperating side of `migrate` inside a process.
//!
//! Built twice: as `libmigrate_shim.so`, which `migrate run` preloads and
//! whose C API is declared in `include/migrate.h`, and as this Rust crate,
//! whose [`current_host`], [`home_host`] and [`migrations`] a Rust program
//! calls directly. Each query asks the agent of the host the process runs
//! on now, over its control socket (`MIGRATE_SOCKET`, default
//! `/run/migrate/agent.sock`), which knows the caller by its credentials;
//! the connection lasts only as long as the call.
//!
//! Not built yet: callbacks around the freeze, `migrate_request`, pid
//! virtualization, the TCP policies.

use std::ffi::c_char;
use std::io;
use std::os::unix::net::UnixStream;

use migrate_proto::image::Lineage;
use migrate_proto::msg::{Reply, Request};
use migrate_proto::PROTOCOL_VERSION;

/// The agent's control socket.
fn socket() -> String {
    std::env::var("MIGRATE_SOCKET").unwrap_or_else(|_| "/run/migrate/agent.sock".into())
}

/// This host's name and this process's lineage, from the local agent.
fn whoami() -> io::Result<(String, Lineage)> {
    let mut s = UnixStream::connect(socket())?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    let ask = |s: &mut UnixStream, r: &Request| r.ask(s).map_err(io::Error::other);
    match ask(
        &mut s,
        &Request::Hello {
            version: PROTOCOL_VERSION,
        },
    )? {
        Reply::Welcome { .. } => {}
        other => return Err(io::Error::other(format!("the agent answered {other:?}"))),
    }
    let pid = std::process::id() as i32;
    match ask(&mut s, &Request::Whoami { pid })? {
        Reply::Whoami { host, lineage } => Ok((host, lineage)),
        other => Err(io::Error::other(format!("the agent answered {other:?}"))),
    }
}

/// The host this process runs on now.
pub fn current_host() -> io::Result<String> {
    whoami().map(|(h, _)| h)
}

/// The host this process started on.
pub fn home_host() -> io::Result<String> {
    whoami().map(|(_, l)| l.home)
}

/// How many times this process has been migrated.
pub fn migrations() -> io::Result<u32> {
    whoami().map(|(_, l)| l.moves)
}

/// Copies `s` and a NUL into the C buffer `buf` of `len` bytes: 0, or -1
/// if it does not fit.
fn copy_out(s: &str, buf: *mut c_char, len: usize) -> i32 {
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

/// Runs `f`, turning a panic into `fail`: no Rust panic crosses into C.
fn guarded<T>(fail: T, f: impl FnOnce() -> T) -> T {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(fail)
}

/// C: `int migrate_current_host(char *buf, size_t len)`.
#[no_mangle]
pub extern "C" fn migrate_current_host(buf: *mut c_char, len: usize) -> i32 {
    guarded(-1, || match current_host() {
        Ok(h) => copy_out(&h, buf, len),
        Err(_) => -1,
    })
}

/// C: `int migrate_home_host(char *buf, size_t len)`.
#[no_mangle]
pub extern "C" fn migrate_home_host(buf: *mut c_char, len: usize) -> i32 {
    guarded(-1, || match home_host() {
        Ok(h) => copy_out(&h, buf, len),
        Err(_) => -1,
    })
}

/// C: `int migrate_count(void)`: migrations so far, or -1.
#[no_mangle]
pub extern "C" fn migrate_count() -> i32 {
    guarded(-1, || {
        migrations()
            .ok()
            .and_then(|n| i32::try_from(n).ok())
            .unwrap_or(-1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_out_checks_the_buffer() {
        let mut b = [0x55 as c_char; 6];
        assert_eq!(copy_out("host2", b.as_mut_ptr(), b.len()), 0);
        assert_eq!(b[5], 0);
        assert_eq!(copy_out("host22", b.as_mut_ptr(), b.len()), -1);
        assert_eq!(copy_out("h", std::ptr::null_mut(), 6), -1);
    }

    #[test]
    fn without_an_agent_the_queries_fail_cleanly() {
        std::env::set_var("MIGRATE_SOCKET", "/nonexistent/agent.sock");
        assert!(current_host().is_err());
        assert_eq!(migrate_count(), -1);
    }
}
