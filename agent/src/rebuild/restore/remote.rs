//! What the descriptors' rebuilds ([`crate::fd`]) may do inside the
//! process, lent by the [`Restorer`].

use super::*;

/// What the descriptors' rebuilds ([`crate::fd`]) do inside the process.
impl Remote for Restorer {
    fn sys(&mut self, step: impl Into<String>, nr: i64, args: [u64; 6]) -> Result<u64, FdError> {
        Restorer::sys(self, step, nr, args).map_err(remote)
    }

    fn try_sys(&mut self, nr: i64, args: [u64; 6]) -> Result<Result<u64, std::io::Error>, FdError> {
        match self.task.syscall(nr, args) {
            Ok(v) => Ok(Ok(v)),
            Err(InjectError::RemoteSyscall { source, .. }) => Ok(Err(source)),
            Err(e) => Err(remote(RestoreError::Step {
                step: format!("syscall {nr}"),
                source: e,
            })),
        }
    }

    fn put_bytes(&mut self, b: &[u8]) -> Result<u64, FdError> {
        Restorer::put_bytes(self, b).map_err(remote)
    }

    fn put_str(&mut self, s: &str) -> Result<u64, FdError> {
        Restorer::put_str(self, s).map_err(remote)
    }

    fn read_back(&mut self, b: &mut [u8]) -> Result<(), FdError> {
        step("reading back scratch", self.mem.read(self.scratch, b)).map_err(remote)
    }

    fn take(&self, fd: i32, what: &'static str) -> Result<OwnedFd, FdError> {
        sys::pidfd_getfd(&self.pidfd, fd).map_err(|source| FdError::Sys { step: what, source })
    }

    fn who(&self) -> &FsCreds {
        &self.who
    }

    fn shipped(&mut self, fd: i32) -> Option<std::fs::File> {
        self.shipped.remove(&fd)
    }

    fn mapped_file(&self, path: &str) -> Option<OwnedFd> {
        self.mapped_files
            .iter()
            .find(|m| m.path == path)
            .and_then(|m| m.file.try_clone().ok())
            .map(OwnedFd::from)
    }

    fn forwarded(&mut self, fd: i32, ours: OwnedFd, output: bool) {
        self.forwarded.push((fd, ours, output));
    }

    fn reconnected(&mut self, fd: i32) {
        self.reconnected.push(fd);
    }

    fn repaired(&mut self, conn: crate::fd::tcp_repair::Repaired) {
        self.repaired.push(conn);
    }
}

pub(super) fn remote(e: RestoreError) -> FdError {
    FdError::Remote(Box::new(e))
}
