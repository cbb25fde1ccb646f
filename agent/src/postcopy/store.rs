//! The destination's store of pre-copied pages: a sparse memfd with each
//! page at the offset of its source address, so the agent's own memory
//! does not grow with the process (tmpfs keeps only pages written), and
//! pages are dropped from it as they are installed.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use migrate_proto::PAGE_SIZE;

use crate::postcopy::pageset::PageSet;

/// Pages received before the freeze, by source address.
pub struct PageStore {
    file: File,
    held: PageSet,
}

impl PageStore {
    /// An empty store.
    pub fn new() -> io::Result<PageStore> {
        Ok(PageStore {
            file: crate::host::sys::memfd("migrate-precopy")?,
            held: PageSet::new(),
        })
    }

    /// Keeps `data` (whole pages) as the content at source address `addr`,
    /// replacing what an earlier round sent.
    pub fn put(&mut self, addr: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, addr)?;
        self.held.insert(addr, addr + data.len() as u64);
        Ok(())
    }

    /// Pages held.
    pub fn held(&self) -> &PageSet {
        &self.held
    }

    /// Reads `buf.len()` bytes of pages from source address `addr`.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, addr)
    }

    /// Frees the pages `[addr, addr + n pages)` (installed or not needed).
    pub fn forget(&self, addr: u64, n: u64) {
        let _ = crate::host::sys::punch_hole(&self.file, addr, n * PAGE_SIZE);
    }
}
