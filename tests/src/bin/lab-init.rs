//! PID 1 of a simulated lab host: names the host, gives it private `/tmp`
//! and `/run` and its own `/sys`, says `ready`, then reaps orphans until
//! killed.
//!
//! The project's own tree and build output stay visible in the host even
//! when they live under `/tmp` or `/run` (a checkout in `/tmp`): they are
//! bound back over the private mounts.

use std::ffi::CString;

fn mount(src: &str, target: &str, fstype: &str) -> std::io::Result<()> {
    let c = |s: &str| CString::new(s).expect("no NUL");
    let (s, t, f) = (c(src), c(target), c(fstype));
    // SAFETY: valid NUL-terminated strings; no data argument.
    let r = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, std::ptr::null()) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn main() {
    let name = std::env::args().nth(1).unwrap_or_else(|| "lab".into());
    // SAFETY: the buffer and length describe `name`.
    unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
    // SAFETY: umount2 with a valid path string.
    unsafe { libc::umount2(c"/sys".as_ptr(), libc::MNT_DETACH) };
    let _ = mount("sysfs", "/sys", "sysfs");
    // The workspace and the directory holding our binaries, if hidden by
    // the private mounts below, are held open to be bound back.
    let mut keep: Vec<std::path::PathBuf> = vec![std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/.."
    ))];
    if let Some(target) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent()?.parent().map(|p| p.to_path_buf()))
    {
        keep.push(target);
    }
    let held: Vec<(String, std::fs::File)> = keep
        .iter()
        .filter_map(|p| p.canonicalize().ok())
        .filter(|p| p.starts_with("/tmp") || p.starts_with("/run"))
        .filter_map(|p| {
            let f = std::fs::File::open(&p).ok()?;
            Some((p.to_string_lossy().into_owned(), f))
        })
        .collect();
    for dir in ["/tmp", "/run"] {
        if let Err(e) = mount("tmpfs", dir, "tmpfs") {
            eprintln!("lab-init: mounting {dir}: {e}");
            std::process::exit(1);
        }
    }
    for (path, f) in &held {
        let _ = std::fs::create_dir_all(path);
        let src = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(f));
        let (s, t) = (
            CString::new(src).expect("no NUL"),
            CString::new(path.as_str()).expect("no NUL"),
        );
        // SAFETY: a bind mount between two valid paths.
        let r = unsafe {
            libc::mount(
                s.as_ptr(),
                t.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            )
        };
        if r != 0 {
            eprintln!(
                "lab-init: keeping {path}: {}",
                std::io::Error::last_os_error()
            );
            std::process::exit(1);
        }
    }
    drop(held);
    let _ = std::fs::create_dir_all("/run/migrate");
    println!("ready");
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid status pointer.
        let r = unsafe { libc::waitpid(-1, &mut status, 0) };
        if r < 0 {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}
