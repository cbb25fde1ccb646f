//! `libmigrate_shim.so`: the cooperating side of `migrate` inside a
//! process. `migrate run` preloads it; a program may also link it
//! (`-lmigrate_shim`). Its C API is declared in `include/migrate.h`; Rust
//! programs use the `migrate-api` crate, which calls this library.
//!
//! At load it initialises its state block ([`block`]) and tells the local
//! agent where the block is (`ShimAttach`, over the control socket
//! `MIGRATE_SOCKET`, default `/run/migrate/agent.sock`); without an agent
//! it stays passive. What it adds:
//! - virtual process and thread ids ([`ids`]);
//! - callbacks around the freeze, run by its listener thread
//!   ([`listener`]), and `migrate_request` ([`request`]);
//! - queries: the host it runs on, where it started, how often it moved
//!   ([`query`]).
//!
//! No Rust panic crosses into C: every entry point catches them.

pub mod block;
pub mod ids;
pub mod listener;
pub mod query;
pub mod request;

use std::ffi::{c_char, c_int, c_void, CStr};

/// Runs `f`, turning a panic into `fail`.
fn guarded<T>(fail: T, f: impl FnOnce() -> T) -> T {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(fail)
}

/// Sets errno from an I/O error and returns -1.
fn fail(e: &std::io::Error) -> c_int {
    let errno = e.raw_os_error().unwrap_or(match e.kind() {
        std::io::ErrorKind::PermissionDenied => libc::EACCES,
        std::io::ErrorKind::NotFound => libc::ENOENT,
        _ => libc::EIO,
    });
    // SAFETY: `__errno_location` returns this thread's errno.
    unsafe { *libc::__errno_location() = errno };
    -1
}

extern "C" fn init() {
    guarded((), || {
        block::init(ids::real_pid());
        // SAFETY: registers a plain function for the child side of fork.
        unsafe { libc::pthread_atfork(None, None, Some(ids::after_fork_child)) };
        if let Ok(host) = query::attach(block::address()) {
            block::set_host(&host);
        }
    })
}

/// Runs [`init`] when the library is loaded.
#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;

/// C: `int migrate_current_host(char *buf, size_t len)`.
///
/// # Safety
///
/// `buf` is null or points to `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn migrate_current_host(buf: *mut c_char, len: usize) -> c_int {
    guarded(-1, || match query::whoami() {
        // SAFETY: the caller's contract.
        Ok((h, _)) => unsafe { query::copy_out(&h, buf, len) },
        Err(e) => fail(&e),
    })
}

/// C: `int migrate_home_host(char *buf, size_t len)`.
///
/// # Safety
///
/// `buf` is null or points to `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn migrate_home_host(buf: *mut c_char, len: usize) -> c_int {
    guarded(-1, || match query::whoami() {
        // SAFETY: the caller's contract.
        Ok((_, l)) => unsafe { query::copy_out(&l.home, buf, len) },
        Err(e) => fail(&e),
    })
}

/// C: `int migrate_count(void)`: migrations so far, or -1.
#[no_mangle]
pub extern "C" fn migrate_count() -> c_int {
    guarded(-1, || match query::whoami() {
        Ok((_, l)) => c_int::try_from(l.moves).unwrap_or(-1),
        Err(e) => fail(&e),
    })
}

/// C: `int migrate_on_freeze(void (*cb)(void *), void *arg)`.
#[no_mangle]
pub extern "C" fn migrate_on_freeze(cb: Option<listener::FreezeFn>, arg: *mut c_void) -> c_int {
    guarded(-1, || match cb {
        None => fail(&std::io::Error::from_raw_os_error(libc::EINVAL)),
        Some(f) => listener::on_freeze(f, arg).map_or_else(|e| fail(&e), |()| 0),
    })
}

/// C: `int migrate_on_resume(void (*cb)(const char *, const int *, size_t,
/// void *), void *arg)`.
#[no_mangle]
pub extern "C" fn migrate_on_resume(cb: Option<listener::ResumeFn>, arg: *mut c_void) -> c_int {
    guarded(-1, || match cb {
        None => fail(&std::io::Error::from_raw_os_error(libc::EINVAL)),
        Some(f) => listener::on_resume(f, arg).map_or_else(|e| fail(&e), |()| 0),
    })
}

/// C: `int migrate_request(const char *host)`: 0 once the process runs on
/// `host`; -1 with errno if the agent refused, the migration failed (the
/// process runs on here) or it did not end within two minutes.
///
/// # Safety
///
/// `host` is null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn migrate_request(host: *const c_char) -> c_int {
    guarded(-1, || {
        if host.is_null() {
            return fail(&std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: not null, NUL-terminated (the caller's contract).
        let host = unsafe { CStr::from_ptr(host) }.to_string_lossy();
        match request::migrate_me(&host) {
            Ok(()) => 0,
            Err(e) => fail(&e),
        }
    })
}
