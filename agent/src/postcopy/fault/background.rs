//! Pages no fault waits for (pushed by the source, or pre-copied),
//! installed in the background from several threads at once: each piece's
//! pages are taken off the map under the handler's lock, copied without
//! it, and settled under it again, within a shared hold of the copy lock
//! (see the parent module's doc).

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use migrate_proto::PAGE_SIZE;

use super::{FaultHandler, LocalPages, Outcome, BACKGROUND_PIECE, LOCAL_CHUNK, STEP_ASIDE};
use crate::host::uffd::Install;
use crate::postcopy::content::Content;

/// A background piece's copies into one space: its id, its userfaultfd,
/// and the runs taken off its map (destination, first page in the piece,
/// pages).
type SpaceCopy = (u64, Arc<OwnedFd>, Vec<(u64, u64, u64)>);

impl FaultHandler {
    /// Installs pages that no fault waits for (pushed by the source, or
    /// pre-copied), source address `src`, a piece at a time, letting
    /// faults go first.
    pub fn install_background<'a>(&self, src: u64, data: impl Into<Content<'a>>) {
        for (k, part) in data.into().parts(BACKGROUND_PIECE as u64) {
            let since = Instant::now();
            while since.elapsed() < STEP_ASIDE {
                if self.urgent.load(Ordering::Acquire) > 0 {
                    // The lock is wanted now: let it go at once.
                    std::thread::yield_now();
                } else if self.awaited.load(Ordering::Acquire) > 0 {
                    // A reply is a round trip away: leave the CPU to it.
                    std::thread::sleep(Duration::from_micros(10));
                } else {
                    break;
                }
            }
            self.install_shared(src + k * PAGE_SIZE, part);
        }
    }

    /// Installs one piece of background pages beside other background
    /// installs: its pages are taken off the map under the lock, copied
    /// without it, and settled under it again, all within a shared hold of
    /// the copy lock (see the module's doc).
    fn install_shared(&self, src: u64, data: Content<'_>) {
        let n = data.pages();
        let shared = self.copying.read().unwrap_or_else(|e| e.into_inner());
        let (waiting, plan): (_, Vec<SpaceCopy>) = {
            let mut st = self.lock();
            if st.outcome.is_some() {
                return;
            }
            let waiting = self.take_waiting(&mut st, src, n);
            let plan = st
                .spaces
                .iter_mut()
                .map(|sp| (sp.id, sp.uffd.clone(), sp.map.take_arrived(src, n)))
                .filter(|(_, _, runs)| !runs.is_empty())
                .collect();
            st.copies_in_flight += 1;
            (waiting, plan)
        };
        #[cfg(test)]
        match self.copy_pause_us.load(Ordering::Relaxed) {
            0 => {}
            us => std::thread::sleep(Duration::from_micros(us)),
        }
        // The copies, without the lock; each space's stop at its first
        // run not installed.
        let failed: Vec<Option<(usize, io::Result<Install>)>> = plan
            .iter()
            .map(|(_, fd, runs)| {
                runs.iter().enumerate().find_map(|(i, &(dst, k, cnt))| {
                    match data.part(k, cnt).install(fd, dst) {
                        Ok(Install::Done) => None,
                        r => Some((i, r)),
                    }
                })
            })
            .collect();
        let mut st = self.lock();
        st.copies_in_flight -= 1;
        let mut again = false;
        for ((id, _, runs), failed) in plan.iter().zip(failed) {
            let Some((i, result)) = failed else { continue };
            match result {
                Ok(Install::Gone) => self.drop_space(&mut st, *id),
                Ok(_) => {
                    // An event (or a mapping gone) got in the way: put back
                    // what was not installed.
                    if let Some(sp) = st.spaces.iter_mut().find(|s| s.id == *id) {
                        for &(dst, _, cnt) in &runs[i..] {
                            sp.map.unarrive(dst, cnt);
                        }
                    }
                    again = true;
                }
                Err(e) => {
                    let why = format!("installing pages at {:#x}: {e}", runs[i].0);
                    self.end_locked(&mut st, Outcome::Failed(why));
                }
            }
        }
        if !again || st.outcome.is_some() {
            self.settle_waiting(&mut st, waiting, None);
            self.check_complete(&mut st);
            return;
        }
        // Try again as the fault loop installs: holding the copy lock
        // alone, applying the events in between.
        for (addr, a) in waiting {
            st.requested.insert(addr, a);
        }
        self.awaited.store(st.requested.len(), Ordering::Release);
        drop(st);
        drop(shared);
        let mut st = self.lock_urgent();
        self.install_locked(&mut st, src, data);
    }

    /// Installs every local page in the background, in address order;
    /// faults on local pages are served ahead of it.
    pub fn install_local(&self, local: &LocalPages) {
        for (start, end) in local.pages.ranges() {
            let mut addr = start;
            while addr < end {
                if self.is_over() {
                    return;
                }
                let n = ((end - addr) / PAGE_SIZE).min(LOCAL_CHUNK);
                match local.read(addr, n) {
                    Ok(buf) => self.install_background(addr, &buf),
                    Err(why) => {
                        self.end(Outcome::Failed(why));
                        return;
                    }
                }
                local.store.forget(addr, n);
                addr += n * PAGE_SIZE;
            }
        }
    }
}
