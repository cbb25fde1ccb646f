//! Installs beside each other: each holds the gate shared, takes its
//! pages from the maps under the lock, copies them with the lock let go,
//! and puts back what the kernel refused (the process changed its memory)
//! to try again once the events are applied with the gate held alone.

use super::*;

impl FaultHandler {
    /// Installs `data` (source address `src`) into every space waiting for
    /// those pages, beside other installs; `urgent`: a fault waits for it.
    pub(super) fn install_shared(&self, src: u64, data: &[u8], urgent: bool) {
        let n = data.len() as u64 / PAGE_SIZE;
        let start = Instant::now();
        let mut missing = 0;
        for attempt in 1.. {
            let failed = {
                let _shared = self.gate.read().unwrap_or_else(|e| e.into_inner());
                let mut st = if urgent {
                    self.lock_urgent()
                } else {
                    self.lock_plain()
                };
                if st.outcome.is_some() {
                    return;
                }
                let waiting = self.take_requested(&mut st, src, n);
                let work: Vec<(u64, Arc<OwnedFd>, Vec<Run>)> = st
                    .spaces
                    .iter_mut()
                    .map(|sp| (sp.id, sp.uffd.clone(), sp.map.take_arrived(src, n)))
                    .filter(|(_, _, runs)| !runs.is_empty())
                    .collect();
                drop(st);
                let results: Vec<_> = work
                    .iter()
                    .map(|(_, fd, runs)| copy_runs(fd, runs, data))
                    .collect();
                let mut st = if urgent {
                    self.lock_urgent()
                } else {
                    self.lock_plain()
                };
                let mut failed = Vec::new();
                for ((id, _, runs), result) in work.iter().zip(results) {
                    match result {
                        Ok(None) => {}
                        Ok(Some((_, Install::Gone))) => self.drop_space(&mut st, *id),
                        Ok(Some((i, why))) => {
                            if let Some(sp) = st.spaces.iter_mut().find(|s| s.id == *id) {
                                for &(dst, _, cnt) in &runs[i..] {
                                    sp.map.unarrive(dst, cnt);
                                }
                            }
                            failed.push((*id, runs[i].0, why));
                        }
                        Err((i, e)) => {
                            let why = format!("installing pages at {:#x}: {e}", runs[i].0);
                            self.end_locked(&mut st, Outcome::Failed(why));
                        }
                    }
                }
                self.offer_samples(&mut st, waiting);
                self.check_complete(&mut st);
                failed
            };
            if failed.is_empty() {
                return;
            }
            // The process changed its memory: apply its events alone, then
            // try again with the maps as they are now.
            {
                let _alone = self.gate.write().unwrap_or_else(|e| e.into_inner());
                let mut st = self.lock_urgent();
                for &(id, _, _) in &failed {
                    self.drain_events(&mut st, id);
                }
                self.redo_faults(&mut st);
                if failed.iter().any(|f| f.2 == Install::Missing) {
                    missing += 1;
                }
                if st.outcome.is_none() && (missing >= MAX_MISSING || start.elapsed() > RETRY_FOR) {
                    let (_, dst, why) = failed[0];
                    let why = format!(
                        "pages at {dst:#x} could not be installed ({why:?} after {attempt} attempts)"
                    );
                    self.end_locked(&mut st, Outcome::Failed(why));
                    return;
                }
            }
            pause(attempt);
        }
    }

    /// The lock, with no claim to go first.
    pub(super) fn lock_plain(&self) -> UrgentGuard<'_> {
        UrgentGuard {
            st: self.lock(),
            urgent: &self.urgent,
            counted: false,
        }
    }

    /// Faulting pages among the `n` from `src` that were asked of the
    /// source: no longer awaited. (Page, when read, thread.)
    pub(super) fn take_requested(
        &self,
        st: &mut State,
        src: u64,
        n: u64,
    ) -> Vec<(u64, Instant, u32)> {
        let mut waiting = Vec::new();
        if !st.requested.is_empty() {
            for k in 0..n {
                let addr = src + k * PAGE_SIZE;
                if let Some((t, tid)) = st.requested.remove(&addr) {
                    waiting.push((addr, t, tid));
                }
            }
            self.awaited.store(st.requested.len(), Ordering::Release);
        }
        waiting
    }

    /// Samples the latency of the faults `waiting` (their pages are in,
    /// and `UFFDIO_COPY` without `DONTWAKE` has woken their threads).
    pub(super) fn offer_samples(&self, st: &mut State, waiting: Vec<(u64, Instant, u32)>) {
        if waiting.is_empty() || !st.outcome.as_ref().is_none_or(|o| *o == Outcome::Complete) {
            return;
        }
        let now = Instant::now();
        for (addr, t, tid) in waiting {
            st.samples.offer(FaultSample {
                at_us: t.duration_since(self.resumed).as_micros() as u64,
                addr,
                latency_us: now.duration_since(t).as_micros() as u64,
                tid,
            });
        }
    }
}

/// Pages to install in one space: current address, index of the first
/// page in the batch, count.
type Run = (u64, u64, u64);

/// Copies `runs` of `data` into the space of `fd`. `Ok(Some((i, why)))`: run `i`
/// and those after it were not installed (the mm changes, or is gone);
/// `Err((i, e))`: run `i` failed.
fn copy_runs(
    fd: &OwnedFd,
    runs: &[Run],
    data: &[u8],
) -> Result<Option<(usize, Install)>, (usize, std::io::Error)> {
    for (i, &(dst, k, cnt)) in runs.iter().enumerate() {
        let bytes = &data[(k * PAGE_SIZE) as usize..((k + cnt) * PAGE_SIZE) as usize];
        match uffd::copy(fd, dst, bytes) {
            Ok(Install::Done) => {}
            Ok(why) => return Ok(Some((i, why))),
            Err(e) => return Err((i, e)),
        }
    }
    Ok(None)
}
