//! Reading and writing another process's memory through `/proc/<pid>/mem`.
//!
//! `/proc/<pid>/mem` goes through the kernel's forced access, so it reads
//! `PROT_NONE` pages and writes read-only private mappings (breaking COW),
//! which `process_vm_readv/writev` refuse.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;

use crate::InjectError;

/// An open handle on another process's memory.
#[derive(Debug)]
pub struct RemoteMem {
    pid: i32,
    file: File,
}

impl RemoteMem {
    /// Opens `/proc/<pid>/mem` for reading and writing.
    pub fn open(pid: i32) -> Result<RemoteMem, InjectError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"))
            .map_err(|source| InjectError::Mem {
                pid,
                addr: 0,
                source,
            })?;
        Ok(RemoteMem { pid, file })
    }

    /// A second handle on the same memory.
    pub fn try_clone(&self) -> Result<RemoteMem, InjectError> {
        let file = self.file.try_clone().map_err(|source| InjectError::Mem {
            pid: self.pid,
            addr: 0,
            source,
        })?;
        Ok(RemoteMem {
            pid: self.pid,
            file,
        })
    }

    /// Fills `buf` from `addr`.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), InjectError> {
        self.file
            .read_exact_at(buf, addr)
            .map_err(|source| InjectError::Mem {
                pid: self.pid,
                addr,
                source,
            })
    }

    /// Fills `buf` from `addr` with one `process_vm_readv`, which copies
    /// straight from the process's pages (`/proc/<pid>/mem` goes through a
    /// kernel page at a time); what it refuses (`PROT_NONE` pages) is read
    /// through `/proc/<pid>/mem`.
    pub fn read_direct(&self, addr: u64, buf: &mut [u8]) -> Result<(), InjectError> {
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let remote = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // SAFETY: `local` describes `buf`, writable for its whole length;
        // `remote` is only read by the kernel, in the other process, which
        // checks it.
        let n = unsafe { libc::process_vm_readv(self.pid, &local, 1, &remote, 1, 0) };
        if n == buf.len() as isize {
            return Ok(());
        }
        self.read(addr, buf)
    }

    /// Writes `buf` at `addr` with `process_vm_writev`, which copies
    /// straight into the process's pages (`/proc/<pid>/mem` goes through a
    /// kernel page at a time); what it refuses (read-only or `PROT_NONE`
    /// pages) is written through `/proc/<pid>/mem`.
    pub fn write_direct(&self, addr: u64, buf: &[u8]) -> Result<(), InjectError> {
        let local = libc::iovec {
            iov_base: buf.as_ptr().cast_mut().cast(),
            iov_len: buf.len(),
        };
        let remote = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // SAFETY: `local` describes `buf`, which the kernel only reads;
        // `remote` is written by the kernel in the other process, which
        // checks it.
        let n = unsafe { libc::process_vm_writev(self.pid, &local, 1, &remote, 1, 0) };
        let done = usize::try_from(n).unwrap_or(0).min(buf.len());
        if done == buf.len() {
            return Ok(());
        }
        self.write(addr + done as u64, &buf[done..])
    }

    /// Writes `buf` at `addr`.
    pub fn write(&self, addr: u64, buf: &[u8]) -> Result<(), InjectError> {
        self.file
            .write_all_at(buf, addr)
            .map_err(|source| InjectError::Mem {
                pid: self.pid,
                addr,
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page of this process with `fill` in it, then protected `prot`.
    fn page(fill: u8, prot: i32) -> *mut u8 {
        // SAFETY: a fresh private anonymous page, written before it is
        // protected; never unmapped (the test process ends).
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            std::ptr::write_bytes(p.cast::<u8>(), fill, 4096);
            assert_eq!(libc::mprotect(p, 4096, prot), 0);
            p.cast()
        }
    }

    #[test]
    fn direct_reads_fall_back_for_what_process_vm_readv_refuses() {
        // SAFETY: getpid has no preconditions.
        let mem = RemoteMem::open(unsafe { libc::getpid() }).unwrap();
        for (fill, prot) in [(0x5a, libc::PROT_READ), (0xa5, libc::PROT_NONE)] {
            let p = page(fill, prot);
            let mut buf = vec![0u8; 4096];
            mem.read_direct(p as u64, &mut buf).unwrap();
            assert!(buf.iter().all(|&b| b == fill), "prot {prot}");
        }
    }

    #[test]
    fn direct_writes_fall_back_for_what_process_vm_writev_refuses() {
        // SAFETY: getpid has no preconditions.
        let mem = RemoteMem::open(unsafe { libc::getpid() }).unwrap();
        for (fill, prot) in [
            (0x11, libc::PROT_READ | libc::PROT_WRITE),
            (0x22, libc::PROT_READ),
            (0x33, libc::PROT_NONE),
        ] {
            let p = page(0, prot);
            mem.write_direct(p as u64, &[fill; 4096]).unwrap();
            let mut buf = vec![0u8; 4096];
            mem.read(p as u64, &mut buf).unwrap();
            assert!(buf.iter().all(|&b| b == fill), "prot {prot}");
        }
    }
}
