//! Files shipped with a process, on the destination: made as the process's
//! user when the core arrives, then filled as their content streams in
//! behind it, one chunk at a time, so the agent never holds a whole file.
//!
//! A file that the process had at a path is made at that path (it was
//! missing here: the file check said so). A file that was deleted on the
//! source, or one that differs here and travels as a private copy, is
//! received into an unlinked file the agent holds; the rebuild copies it
//! into the process's own unlinked file.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use migrate_proto::image::{FsCreds, ShippedFile};
use thiserror::Error;

use crate::host::fsuser;

/// Why shipped files could not be received.
#[derive(Debug, Error)]
pub enum ShippedError {
    /// A file could not be made, filled or finished.
    #[error("{step} ({path}): {source}")]
    Io {
        /// What was being done.
        step: &'static str,
        /// The file's path on the source.
        path: String,
        /// The error.
        source: io::Error,
    },
    /// The content sent does not match the sizes in the image.
    #[error("shipped content: {0}")]
    Content(String),
}

/// One file being received.
struct Receiving {
    meta: ShippedFile,
    file: File,
    written: u64,
}

/// The shipped files of one migration, as their content arrives.
pub struct ShippedFiles {
    files: Vec<Receiving>,
    /// Index of the file the next bytes belong to.
    current: usize,
}

impl ShippedFiles {
    /// Makes every file of `shipped`, as `who`.
    pub fn create(shipped: &[ShippedFile], who: &FsCreds) -> Result<ShippedFiles, ShippedError> {
        let made = fsuser::run_as(who, || {
            shipped
                .iter()
                .map(|meta| {
                    let file = make(meta).map_err(|source| ShippedError::Io {
                        step: "making a shipped file",
                        path: meta.path.clone(),
                        source,
                    })?;
                    Ok(Receiving {
                        meta: meta.clone(),
                        file,
                        written: 0,
                    })
                })
                .collect::<Result<Vec<_>, ShippedError>>()
        })
        .map_err(|source| ShippedError::Io {
            step: "acting as the process's user",
            path: String::new(),
            source,
        })??;
        Ok(ShippedFiles {
            files: made,
            current: 0,
        })
    }

    /// Writes the next bytes of content.
    pub fn write(&mut self, mut data: &[u8]) -> Result<(), ShippedError> {
        while !data.is_empty() {
            while self
                .files
                .get(self.current)
                .is_some_and(|r| r.written == r.meta.size)
            {
                self.current += 1;
            }
            let Some(r) = self.files.get_mut(self.current) else {
                return Err(ShippedError::Content(
                    "more bytes than the shipped files hold".into(),
                ));
            };
            let n = data.len().min((r.meta.size - r.written) as usize);
            r.file
                .write_all(&data[..n])
                .map_err(|source| ShippedError::Io {
                    step: "writing a shipped file",
                    path: r.meta.path.clone(),
                    source,
                })?;
            r.written += n as u64;
            data = &data[n..];
        }
        Ok(())
    }

    /// Checks that every file is complete, gives the files made at their
    /// path their mode and owner (as `who`), and returns the unlinked ones
    /// by descriptor, for the rebuild to copy.
    pub fn finish(self, who: &FsCreds) -> Result<HashMap<i32, File>, ShippedError> {
        if let Some(r) = self.files.iter().find(|r| r.written < r.meta.size) {
            return Err(ShippedError::Content(format!(
                "{} of {} bytes of {} arrived",
                r.written, r.meta.size, r.meta.path
            )));
        }
        let finished = fsuser::run_as(who, || {
            for r in self.files.iter().filter(|r| !r.meta.held_unlinked()) {
                let io = |step| {
                    let path = r.meta.path.clone();
                    move |source| ShippedError::Io { step, path, source }
                };
                // After the content: a write clears set-id bits.
                r.file
                    .set_permissions(std::fs::Permissions::from_mode(r.meta.mode))
                    .map_err(io("setting a shipped file's mode"))?;
                std::os::unix::fs::fchown(&r.file, Some(r.meta.uid), Some(r.meta.gid))
                    .map_err(io("setting a shipped file's owner"))?;
            }
            Ok::<_, ShippedError>(())
        });
        finished.map_err(|source| ShippedError::Io {
            step: "acting as the process's user",
            path: String::new(),
            source,
        })??;
        Ok(self
            .files
            .into_iter()
            .filter(|r| r.meta.held_unlinked())
            .map(|r| (r.meta.fd, r.file))
            .collect())
    }
}

/// Makes one shipped file: at its path, or unlinked (beside where it was,
/// else in `/tmp`) for a private copy.
fn make(meta: &ShippedFile) -> io::Result<File> {
    let path = Path::new(&meta.path);
    if meta.held_unlinked() {
        let dir = path
            .parent()
            .filter(|d| d.is_dir())
            .unwrap_or(Path::new("/tmp"));
        let unlinked = |dir: &Path| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
                .mode(0o600)
                .open(dir)
        };
        return unlinked(dir).or_else(|_| unlinked(Path::new("/tmp")));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(meta.mode & 0o777)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek};
    use std::os::unix::fs::MetadataExt;

    /// This test process as a user.
    fn me() -> FsCreds {
        let m = std::fs::metadata("/proc/self").unwrap();
        FsCreds {
            uid: m.uid(),
            gid: m.gid(),
            groups: Vec::new(),
        }
    }

    fn meta(fd: i32, path: &Path, deleted: bool, size: u64) -> ShippedFile {
        ShippedFile {
            fd,
            path: path.to_string_lossy().into_owned(),
            deleted,
            mode: 0o640,
            uid: me().uid,
            gid: me().gid,
            size,
            mapped: None,
        }
    }

    /// Makes `files`, or None where this test may not take its own ids
    /// (taking them sets the groups: root only).
    fn create(files: &[ShippedFile]) -> Option<ShippedFiles> {
        match ShippedFiles::create(files, &me()) {
            Err(ShippedError::Io { source, .. })
                if source.kind() == io::ErrorKind::PermissionDenied =>
            {
                eprintln!("skipped: needs root (the files are made as a user)");
                None
            }
            other => Some(other.unwrap()),
        }
    }

    #[test]
    fn content_is_split_across_files_in_order() {
        let dir = std::env::temp_dir().join(format!("shipped-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = dir.join("sub/a");
        let files = [
            meta(3, &a, false, 5),
            meta(4, Path::new("/nonexistent-dir/b"), true, 0),
            meta(5, &dir.join("c"), true, 7),
        ];
        let Some(mut s) = create(&files) else { return };
        s.write(b"hel").unwrap();
        s.write(b"lo1234").unwrap();
        s.write(b"567").unwrap();
        assert!(s.write(b"x").is_err(), "a byte past the end");
        let mut held = s.finish(&me()).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"hello");
        assert_eq!(std::fs::metadata(&a).unwrap().mode() & 0o7777, 0o640);
        let mut c = held.remove(&5).unwrap();
        c.rewind().unwrap();
        let mut got = String::new();
        c.read_to_string(&mut got).unwrap();
        assert_eq!(got, "1234567");
        assert_eq!(held.remove(&4).unwrap().metadata().unwrap().len(), 0);
        assert!(held.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_short_file_is_refused() {
        let files = [meta(3, &std::env::temp_dir().join("x"), true, 5)];
        let Some(mut s) = create(&files) else { return };
        s.write(b"abc").unwrap();
        let e = s.finish(&me()).unwrap_err().to_string();
        assert!(e.contains("3 of 5 bytes"), "{e}");
    }
}
