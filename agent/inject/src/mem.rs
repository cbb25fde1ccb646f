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
