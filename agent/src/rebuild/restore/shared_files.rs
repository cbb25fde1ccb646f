//! Files the process mapped shared and writable that travelled with it
//! ([`crate::capture::shared_files`]): made again in the process, as the
//! process, at their path if nothing is there, else as a private unlinked
//! copy beside it; sized when its mappings are made, and filled once the
//! content has arrived, before the process runs.

use std::fs::File;

use migrate_proto::image::ShippedFile;

use super::*;
use crate::fd::RemoteCalls;

/// A file made for the process's mappings of a file shared and writable.
pub(super) struct MappedFile {
    /// The pseudo descriptor its content was shipped under.
    pub fd: i32,
    /// Its path on the source.
    pub path: String,
    /// The agent's copy of the process's descriptor of it.
    pub file: File,
}

impl Restorer {
    /// The process's descriptor of `f`, a shipped file it maps shared and
    /// writable, made now (empty, at its size); the agent keeps a copy of
    /// the descriptor to fill it.
    pub(super) fn make_mapped_file(&mut self, f: &ShippedFile) -> Result<i32, RestoreError> {
        let at_path = f.mapped.as_ref().is_some_and(|m| m.at_path);
        // Something may have come to the path meanwhile, or its directory
        // may be missing here: then a private copy.
        let made = at_path
            .then(|| RemoteCalls::create_new(self, &f.path, f.mode).ok())
            .flatten();
        let fd = match made {
            Some(fd) => fd,
            None => {
                RemoteCalls::open_tmpfile(self, &crate::fd::path::unlinked_dir(&f.path), f.mode)?
            }
        };
        RemoteCalls::ftruncate(self, fd, f.size)?;
        let ours = Remote::take(self, fd, "taking a file mapped shared")?;
        self.mapped_files.push(MappedFile {
            fd: f.fd,
            path: f.path.clone(),
            file: File::from(ours),
        });
        Ok(fd)
    }

    /// Fills the files [`Restorer::make_mapped_file`] made with the content
    /// that arrived for them (taken from the shipped files held).
    pub(super) fn fill_mapped_files(&mut self) -> Result<(), RestoreError> {
        for m in &self.mapped_files {
            let (fd, file) = (m.fd, &m.file);
            let mut held = self.shipped.remove(&fd).ok_or_else(|| {
                RestoreError::Incompatible(format!(
                    "the content of a file mapped shared (pseudo fd {fd}) never arrived"
                ))
            })?;
            std::io::Seek::rewind(&mut held)
                .and_then(|()| std::io::copy(&mut held, &mut &*file))
                .map_err(|source| RestoreError::Sys {
                    step: "filling a file mapped shared",
                    source,
                })?;
        }
        Ok(())
    }
}
