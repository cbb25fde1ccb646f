//! The Rust API of a cooperating process: a program started by
//! `migrate run` (which preloads `libmigrate_shim.so`) registers callbacks
//! around its migrations, asks to be migrated and asks where it runs.
//!
//! Every call goes to the preloaded library, found at run time; without it
//! each returns an error saying so. Virtual process ids need no call: the
//! library answers `getpid` (and so [`std::process::id`]) itself.
//!
//! ```no_run
//! migrate_api::on_freeze(|| eprintln!("about to be frozen")).unwrap();
//! migrate_api::on_resume(|host, fds| eprintln!("now on {host}, {fds:?} reconnected")).unwrap();
//! migrate_api::request("host2").unwrap();
//! ```

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::io;

type FreezeFn = extern "C" fn(*mut c_void);
type ResumeFn = extern "C" fn(*const c_char, *const c_int, usize, *mut c_void);

/// The address of `name` (NUL-terminated) in the loaded library.
fn symbol(name: &CStr) -> io::Result<*mut c_void> {
    // SAFETY: dlsym with a NUL-terminated name only looks the symbol up.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    if p.is_null() {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            "libmigrate_shim.so is not loaded: start the program with `migrate run`",
        ))
    } else {
        Ok(p)
    }
}

/// Resolves a C function of the library by name and type.
macro_rules! shim_fn {
    ($name:expr, $ty:ty) => {{
        let p = symbol($name)?;
        // SAFETY: the library defines this symbol as a function of exactly
        // this type (include/migrate.h).
        unsafe { std::mem::transmute::<*mut c_void, $ty>(p) }
    }};
}

fn check(r: c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn host_query(name: &CStr) -> io::Result<String> {
    let f = shim_fn!(name, extern "C" fn(*mut c_char, usize) -> c_int);
    let mut buf = [0 as c_char; 256];
    check(f(buf.as_mut_ptr(), buf.len()))?;
    // SAFETY: on success the library wrote a NUL-terminated string.
    Ok(unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned())
}

/// The host this process runs on now.
pub fn current_host() -> io::Result<String> {
    host_query(c"migrate_current_host")
}

/// The host this process started on.
pub fn home_host() -> io::Result<String> {
    host_query(c"migrate_home_host")
}

/// How many times this process has been migrated.
pub fn migrations() -> io::Result<u32> {
    let f = shim_fn!(c"migrate_count", extern "C" fn() -> c_int);
    u32::try_from(f()).map_err(|_| io::Error::last_os_error())
}

type FreezeBox = Box<dyn Fn() + Send + Sync>;
type ResumeBox = Box<dyn Fn(&str, &[c_int]) + Send + Sync>;

extern "C" fn call_freeze(arg: *mut c_void) {
    // SAFETY: `arg` is the leaked box registered by `on_freeze`.
    let f = unsafe { &*(arg as *const FreezeBox) };
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
}

extern "C" fn call_resume(host: *const c_char, fds: *const c_int, n: usize, arg: *mut c_void) {
    // SAFETY: `arg` is the leaked box registered by `on_resume`; the
    // library passes a NUL-terminated host and `n` descriptors at `fds`.
    let (f, host, fds) = unsafe {
        (
            &*(arg as *const ResumeBox),
            CStr::from_ptr(host).to_string_lossy(),
            if n == 0 {
                &[][..]
            } else {
                std::slice::from_raw_parts(fds, n)
            },
        )
    };
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&host, fds)));
}

/// Registers `f`, run (in the library's thread) just before each freeze.
pub fn on_freeze(f: impl Fn() + Send + Sync + 'static) -> io::Result<()> {
    let reg = shim_fn!(
        c"migrate_on_freeze",
        extern "C" fn(FreezeFn, *mut c_void) -> c_int
    );
    let b: Box<FreezeBox> = Box::new(Box::new(f));
    check(reg(call_freeze, Box::into_raw(b).cast()))
}

/// Registers `f`, run after each resume with the host the process runs on
/// and the descriptors reconnected there (`migrate run --tcp reconnect`).
pub fn on_resume(f: impl Fn(&str, &[c_int]) + Send + Sync + 'static) -> io::Result<()> {
    let reg = shim_fn!(
        c"migrate_on_resume",
        extern "C" fn(ResumeFn, *mut c_void) -> c_int
    );
    let b: Box<ResumeBox> = Box::new(Box::new(f));
    check(reg(call_resume, Box::into_raw(b).cast()))
}

/// Asks to be migrated to `host`; returns once the process runs there.
pub fn request(host: &str) -> io::Result<()> {
    let f = shim_fn!(c"migrate_request", extern "C" fn(*const c_char) -> c_int);
    let host = CString::new(host).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    check(f(host.as_ptr()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn without_the_library_every_call_says_so() {
        let e = super::current_host().unwrap_err();
        assert!(e.to_string().contains("migrate run"), "{e}");
        assert!(super::request("host2").is_err());
        assert!(super::on_freeze(|| ()).is_err());
    }
}
