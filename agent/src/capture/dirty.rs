//! Dirty-page tracking on a running process, for pre-copy.
//!
//! A userfaultfd is made inside the process (one injected syscall while a
//! thread is briefly stopped) and taken over; its private anonymous
//! mappings are registered in asynchronous write-protect mode, so a write
//! to a protected page costs the process one kernel-resolved fault and
//! leaves the page marked written. `PAGEMAP_SCAN` then reports the written
//! pages and protects them again in one atomic step: reading a page's
//! content after its scan means any later write shows in the next scan.
//! Mappings the process creates between rounds are registered at the next
//! one, where every present page of theirs reads as written.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;

use migrate_inject::{InjectError, RemoteMem, Seized, Vdso};
use thiserror::Error;
use tracing::debug;

use crate::host::kinds;
use crate::host::sys::{self, page_is, PageQuery, PM_SCAN_WP_MATCHING};
use crate::host::{procfs, uffd};
use crate::postcopy::pageset::PageSet;

/// Why tracking could not start or go on.
#[derive(Debug, Error)]
pub enum DirtyError {
    /// Making or taking the userfaultfd inside the process.
    #[error("making a userfaultfd inside process {pid}")]
    Inject {
        /// Target.
        pid: i32,
        /// Cause.
        #[source]
        source: InjectError,
    },
    /// The kernel lacks asynchronous write-protection.
    #[error("this kernel has no asynchronous userfaultfd write-protection (6.7 or later needed)")]
    Unsupported(#[source] io::Error),
    /// A mapping is already registered with another userfaultfd (the
    /// process uses one itself).
    #[error("the mapping at {start:#x} is registered with the process's own userfaultfd")]
    Busy {
        /// Mapping start.
        start: u64,
    },
    /// The process ended while it was being copied.
    #[error("process {0} exited during pre-copy")]
    Gone(i32),
    /// Reading `/proc` or an ioctl failed.
    #[error("{what} of process {pid}")]
    Io {
        /// Target.
        pid: i32,
        /// What was being done.
        what: &'static str,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

/// Write tracking on one running process, and the pages sent so far.
pub struct DirtyTracker {
    pid: i32,
    uffd: OwnedFd,
    pagemap: File,
    sent: PageSet,
}

impl DirtyTracker {
    /// Starts tracking `pid`, whose memory is `mem`. The process is
    /// stopped for two injected syscalls (`userfaultfd`, `close`) and runs
    /// on.
    pub fn attach(pid: i32, mem: &RemoteMem) -> Result<DirtyTracker, DirtyError> {
        let io = |what| move |source| DirtyError::Io { pid, what, source };
        let inject = |source| DirtyError::Inject { pid, source };
        // Found while the process runs: it is stopped only for the two calls.
        let vdso = Vdso::find(pid, mem).ok_or(DirtyError::Io {
            pid,
            what: "vDSO",
            source: io::Error::from(io::ErrorKind::NotFound),
        })?;
        let mut task = Seized::seize(pid).map_err(inject)?;
        task.set_syscall_insn(vdso.syscall);
        let flags = libc::O_CLOEXEC | libc::O_NONBLOCK | uffd::USER_MODE_ONLY;
        let fd = task.userfaultfd(flags).map_err(inject)?;
        let taken = sys::pidfd_open(pid).and_then(|p| sys::pidfd_getfd(&p, fd));
        let closed = task.close(fd);
        task.detach().map_err(inject)?;
        closed.map_err(inject)?;
        let uffd = taken.map_err(io("pidfd_getfd"))?;
        uffd::api(&uffd, uffd::FEATURE_WP_ASYNC | uffd::FEATURE_WP_UNPOPULATED)
            .map_err(DirtyError::Unsupported)?;
        let pagemap = File::open(format!("/proc/{pid}/pagemap")).map_err(io("pagemap"))?;
        Ok(DirtyTracker {
            pid,
            uffd,
            pagemap,
            sent: PageSet::new(),
        })
    }

    /// The mappings tracked: private anonymous memory, where the bulk of a
    /// process's pages live (private file pages and shared memory are
    /// copied during the freeze).
    fn mappings(&self) -> Result<Vec<(u64, u64)>, DirtyError> {
        let maps = procfs::maps(self.pid).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                DirtyError::Gone(self.pid)
            } else {
                DirtyError::Io {
                    pid: self.pid,
                    what: "maps",
                    source,
                }
            }
        })?;
        Ok(maps
            .iter()
            .filter(|m| kinds::is_anon(m) && !m.shared())
            .map(|m| (m.start, m.end))
            .collect())
    }

    /// Registers every tracked mapping (again: new ones join) and returns
    /// the present pages written since the last call, protected again.
    /// The first call returns every present page.
    pub fn take_written(&mut self) -> Result<PageSet, DirtyError> {
        self.written(PM_SCAN_WP_MATCHING)
    }

    /// The written pages; with [`PM_SCAN_WP_MATCHING`] in `flags` they are
    /// protected again in the same walk.
    fn written(&mut self, flags: u64) -> Result<PageSet, DirtyError> {
        let mut written = PageSet::new();
        for (start, end) in self.mappings()? {
            match uffd::register_wp(&self.uffd, start, end - start) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    return Err(DirtyError::Busy { start })
                }
                // Gone or changed since maps was read: the next round sees
                // it as it is then.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOMEM)) => {
                    debug!(start, error = %e, "mapping changed while registering");
                    continue;
                }
                Err(e) => {
                    return Err(DirtyError::Io {
                        pid: self.pid,
                        what: "UFFDIO_REGISTER",
                        source: e,
                    })
                }
            }
            let q = PageQuery {
                flags,
                all: page_is::WRITTEN,
                any: page_is::PRESENT | page_is::SWAPPED,
                report: 0,
            };
            sys::pagemap_scan(&self.pagemap, start, end, q, &mut |a, b, _| {
                written.insert(a, b)
            })
            .map_err(|source| DirtyError::Io {
                pid: self.pid,
                what: "PAGEMAP_SCAN",
                source,
            })?;
        }
        Ok(written)
    }

    /// Records that the destination holds `[start, end)` as read after
    /// the last [`DirtyTracker::take_written`].
    pub fn mark_sent(&mut self, start: u64, end: u64) {
        self.sent.insert(start, end);
    }

    /// With the process frozen: the pages the destination holds that were
    /// not written since they were sent. Nothing is protected again (no
    /// round follows), which spares the walk its page-table updates.
    pub fn clean(&mut self) -> Result<PageSet, DirtyError> {
        let written = self.written(0)?;
        let mut clean = self.sent.clone();
        for (a, b) in written.ranges() {
            clean.remove(a, b);
        }
        Ok(clean)
    }
}
