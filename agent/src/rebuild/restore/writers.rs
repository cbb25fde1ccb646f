//! Pages written into a process being rebuilt by several threads at once,
//! while the next ones are received: on a VM the first write to each fresh
//! page is the dearest part of a stop-and-copy, and two threads pay it side
//! by side (1 GiB of first writes on the 2-core lab VM, alternating runs:
//! one thread 0.36-1.47 s, two 0.23-0.29 s).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use migrate_inject::RemoteMem;

use crate::host::sys::{self, AffinityWords};
use crate::net::spares::Spares;

use super::{step, RestoreError};

/// Threads writing pages.
pub(super) const WRITERS: usize = 2;
/// Page batches received and waiting for a writer: with the ones being
/// written and the one being received, what the agent holds at most.
const QUEUED: usize = 2;
/// The first pages are written by the receiving thread itself: a small
/// set (post-copy's stacks) is in before threads would have started.
const INLINE_BYTES: usize = 2 << 20;

/// Where pages of a process go: private memory straight into the process,
/// shared memory into its object (it may be mapped read-only).
#[derive(Debug)]
pub(super) struct PageSink {
    pub(super) pid: i32,
    pub(super) mem: RemoteMem,
    /// Shared-memory VMAs: (start, end, offset in their object).
    pub(super) shmem: Vec<(u64, u64, u64)>,
}

impl PageSink {
    /// Writes page content at `addr` (source address space = ours).
    pub(super) fn write(&self, addr: u64, data: &[u8]) -> Result<(), RestoreError> {
        write_pages(self.pid, &self.mem, &self.shmem, addr, data)
    }
}

/// Writes page content at `addr` into process `pid`, whose memory is `mem`
/// and whose shared-memory VMAs are `shmem`.
pub(super) fn write_pages(
    pid: i32,
    mem: &RemoteMem,
    shmem: &[(u64, u64, u64)],
    addr: u64,
    data: &[u8],
) -> Result<(), RestoreError> {
    let shm = shmem
        .iter()
        .find(|(s, e, _)| *s <= addr && addr < *e)
        .copied();
    if let Some((start, end, offset)) = shm {
        use std::os::unix::fs::FileExt;
        let path = format!("/proc/{pid}/map_files/{start:x}-{end:x}");
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|source| RestoreError::Sys {
                step: "opening shared memory",
                source,
            })?;
        return f
            .write_all_at(data, offset + (addr - start))
            .map_err(|source| RestoreError::Sys {
                step: "writing shared memory",
                source,
            });
    }
    step(
        format!("writing pages at {addr:#x}"),
        mem.write_direct(addr, data),
    )
}

/// Writer threads for one process's pages; each batch goes to the first
/// free one. Batches must not overlap (each page is written once).
pub struct PageWriters {
    /// One per writer thread, until they start.
    sinks: Vec<PageSink>,
    /// Bytes still to write from the receiving thread.
    inline_left: usize,
    tx: Option<SyncSender<(u64, Vec<u8>)>>,
    threads: Vec<JoinHandle<Result<(), RestoreError>>>,
    failed: Arc<AtomicBool>,
    /// Buffers written, for the next batches to be read into.
    spares: Arc<Spares>,
    /// The CPUs the writers run on (the receiving thread is pinned to one
    /// for ptrace, and they would inherit it); `None`: as they inherit.
    cpus: Option<AffinityWords>,
}

impl PageWriters {
    /// Writers through `sinks`, one thread each once the pages are more
    /// than a few, on `cpus`.
    pub(super) fn start(
        sinks: Vec<PageSink>,
        cpus: Option<AffinityWords>,
    ) -> Result<PageWriters, RestoreError> {
        Ok(PageWriters {
            sinks,
            inline_left: INLINE_BYTES,
            tx: None,
            threads: Vec::new(),
            failed: Arc::new(AtomicBool::new(false)),
            // As many as can be held: queued, being written, being read.
            spares: Arc::new(Spares::new(QUEUED + WRITERS + 1)),
            cpus,
        })
    }

    /// Starts one writer thread per sink.
    fn start_threads(&mut self) -> Result<(), RestoreError> {
        let (tx, rx) = sync_channel::<(u64, Vec<u8>)>(QUEUED);
        let rx = Arc::new(Mutex::new(rx));
        self.tx = Some(tx);
        for sink in std::mem::take(&mut self.sinks) {
            let (rx, failed, cpus) = (rx.clone(), self.failed.clone(), self.cpus);
            let spares = self.spares.clone();
            let t = std::thread::Builder::new()
                .name("page-writer".into())
                .spawn(move || {
                    sys::take_cpus(cpus.as_ref());
                    write_until_closed(&sink, &rx, &failed, &spares)
                })
                .map_err(|source| RestoreError::Sys {
                    step: "starting a page writer",
                    source,
                })?;
            self.threads.push(t);
        }
        Ok(())
    }

    /// A buffer for the next batch to be read into (one written before,
    /// handed back by its writer, or an empty one):
    /// [`migrate_proto::frame::read_frame_into`].
    pub fn spare(&self) -> Vec<u8> {
        self.spares.take()
    }

    /// Hands `data`, pages at `addr`, to a writer; waits while every
    /// writer is busy and the queue is full. A write that failed ends
    /// the writing: its error is returned here or by [`Self::finish`].
    pub fn write(&mut self, addr: u64, data: Vec<u8>) -> Result<(), RestoreError> {
        if self.threads.is_empty() {
            if let Some(sink) = self
                .sinks
                .first()
                .filter(|_| data.len() <= self.inline_left)
            {
                self.inline_left -= data.len();
                sink.write(addr, &data)?;
                self.spares.give(data);
                return Ok(());
            }
            self.start_threads()?;
        }
        let sent = match &self.tx {
            Some(tx) if !self.failed.load(Ordering::Acquire) => tx.send((addr, data)).is_ok(),
            _ => false,
        };
        if sent {
            return Ok(());
        }
        self.end()?;
        Err(RestoreError::Incompatible(
            "the page writers ended before the pages did".into(),
        ))
    }

    /// Waits until every page handed over is written.
    pub fn finish(mut self) -> Result<(), RestoreError> {
        self.end()
    }

    /// Closes the queue and joins the writers: the first error, if any.
    fn end(&mut self) -> Result<(), RestoreError> {
        self.tx = None;
        let mut result = Ok(());
        for t in self.threads.drain(..) {
            let r = t.join().unwrap_or_else(|_| {
                Err(RestoreError::Incompatible("a page writer panicked".into()))
            });
            if result.is_ok() {
                result = r;
            }
        }
        result
    }
}

impl Drop for PageWriters {
    fn drop(&mut self) {
        let _ = self.end();
    }
}

fn write_until_closed(
    sink: &PageSink,
    rx: &Mutex<Receiver<(u64, Vec<u8>)>>,
    failed: &AtomicBool,
    spares: &Spares,
) -> Result<(), RestoreError> {
    loop {
        let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok((addr, data)) = next else {
            return Ok(());
        };
        if failed.load(Ordering::Acquire) {
            return Ok(());
        }
        if let Err(e) = sink.write(addr, &data) {
            failed.store(true, Ordering::Release);
            return Err(e);
        }
        spares.give(data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use migrate_proto::PAGE_SIZE;

    fn sinks_of_this_process() -> Vec<PageSink> {
        let pid = std::process::id() as i32;
        (0..WRITERS)
            .map(|_| PageSink {
                pid,
                mem: RemoteMem::open(pid).unwrap(),
                shmem: Vec::new(),
            })
            .collect()
    }

    #[test]
    fn every_batch_lands_where_it_belongs() {
        // Past what the receiving thread writes itself.
        let pages = INLINE_BYTES / PAGE_SIZE as usize + 64;
        let mut area = vec![0u8; pages * PAGE_SIZE as usize];
        let base = area.as_mut_ptr() as u64;
        let mut w = PageWriters::start(sinks_of_this_process(), None).unwrap();
        // Each batch in a buffer handed back from one written before, as
        // the receiving thread reads them.
        let mut reused = 0;
        for i in 0..pages {
            let addr = base + i as u64 * PAGE_SIZE;
            let mut batch = w.spare();
            reused += usize::from(batch.capacity() > 0);
            batch.resize(PAGE_SIZE as usize, 0);
            batch.fill((i % 251) as u8 + 1);
            w.write(addr, batch).unwrap();
        }
        assert!(
            reused >= INLINE_BYTES / PAGE_SIZE as usize - 1,
            "{reused} buffers used again"
        );
        assert_eq!(w.threads.len(), WRITERS);
        w.finish().unwrap();
        for (i, page) in area.chunks(PAGE_SIZE as usize).enumerate() {
            assert!(page.iter().all(|&b| b == (i % 251) as u8 + 1), "page {i}");
        }
    }

    /// `Cpus_allowed_list` of `/proc/self/task/<tid>` (or `thread-self`).
    fn cpus_of(task: &str) -> String {
        let status = std::fs::read_to_string(format!("{task}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    #[test]
    fn writers_started_by_a_pinned_thread_run_on_its_cpus_from_before() {
        let before = cpus_of("/proc/thread-self");
        let pin = sys::CpuPin::near_me(&[]);
        if cpus_of("/proc/thread-self") == before {
            eprintln!("SKIP writers_started_by_a_pinned_thread_...: one CPU only");
            return;
        }
        let pages = INLINE_BYTES / PAGE_SIZE as usize + 64;
        let mut area = vec![0u8; pages * PAGE_SIZE as usize];
        let base = area.as_mut_ptr() as u64;
        let mut w = PageWriters::start(sinks_of_this_process(), pin.before_me()).unwrap();
        for i in 0..pages {
            let addr = base + i as u64 * PAGE_SIZE;
            w.write(addr, vec![1; PAGE_SIZE as usize]).unwrap();
        }
        // Every page writer of this process (other tests' too, which no
        // pin holds) runs where this thread could before its pin.
        let writers = || {
            std::fs::read_dir("/proc/self/task")
                .unwrap()
                .flatten()
                .map(|e| e.path().display().to_string())
                .filter(|t| {
                    std::fs::read_to_string(format!("{t}/comm"))
                        .is_ok_and(|c| c.trim() == "page-writer")
                })
                .map(|t| cpus_of(&t))
                .collect::<Vec<_>>()
        };
        let t0 = std::time::Instant::now();
        let mut seen = writers();
        while seen.iter().any(|c| *c != before) && t0.elapsed().as_secs() < 5 {
            std::thread::sleep(std::time::Duration::from_millis(10));
            seen = writers();
        }
        assert!(seen.len() >= WRITERS, "writers: {seen:?}");
        assert!(
            seen.iter().all(|c| *c == before),
            "writers on {seen:?}, the pinned thread had {before}"
        );
        w.finish().unwrap();
        assert!(area.iter().all(|&b| b == 1));
    }

    #[test]
    fn a_failed_write_is_reported() {
        // Below `vm.mmap_min_addr`: nothing is ever mapped there.
        let hole = PAGE_SIZE;
        let mut w = PageWriters::start(sinks_of_this_process(), None).unwrap();
        // Inline, then from the threads.
        assert!(w.write(hole, vec![1; PAGE_SIZE as usize]).is_err());
        w.inline_left = 0;
        let mut failed = false;
        for _ in 0..8 {
            if w.write(hole, vec![1; PAGE_SIZE as usize]).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed || w.finish().is_err());
    }
}
