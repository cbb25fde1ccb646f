//! Work on a host's files done for a process: on a thread of its own that
//! takes the process's filesystem ids and groups first, so that the kernel
//! checks every lookup, open and creation as that user's, never with the
//! agent's (root's) rights.

use std::io;

use migrate_proto::image::FsCreds;

use crate::host::sys;

/// Runs `f` as `who` would touch files, and returns what it returns.
pub fn run_as<T: Send>(who: &FsCreds, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    std::thread::scope(|s| {
        let worker = std::thread::Builder::new()
            .name("as-user".into())
            .spawn_scoped(s, || -> io::Result<T> {
                sys::become_fs_user(who.uid, who.gid, &who.groups)?;
                Ok(f())
            })?;
        worker
            .join()
            .map_err(|_| io::Error::other("a thread acting as a user panicked"))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nobody() -> FsCreds {
        FsCreds {
            uid: 65534,
            gid: 65534,
            groups: Vec::new(),
        }
    }

    #[test]
    fn a_user_cannot_read_what_root_keeps_to_itself() {
        if running_as_root() {
            let dir = std::env::temp_dir().join(format!("migrate-fsuser-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let secret = dir.join("secret");
            std::fs::write(&secret, b"s").unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
            let p = secret.to_str().unwrap().to_string();
            let as_nobody = run_as(&nobody(), || std::fs::read(&p).map_err(|e| e.kind())).unwrap();
            assert_eq!(as_nobody, Err(io::ErrorKind::PermissionDenied));
            let may = run_as(&nobody(), || sys::may_access(&p, libc::R_OK as u32).is_ok());
            assert!(!may.unwrap());
            // The agent's own thread keeps its rights.
            assert_eq!(std::fs::read(&secret).unwrap(), b"s");
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn a_symlink_on_the_way_is_found() {
        let dir = std::env::temp_dir().join(format!("migrate-nosym-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("real"), b"r").unwrap();
        let _ = std::fs::remove_file(dir.join("link"));
        std::os::unix::fs::symlink(dir.join("real"), dir.join("link")).unwrap();
        let real = dir.join("real");
        assert!(sys::open_path_no_symlinks(real.to_str().unwrap()).is_ok());
        let link = dir.join("link");
        let e = sys::open_path_no_symlinks(link.to_str().unwrap()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn running_as_root() -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
    }
}
