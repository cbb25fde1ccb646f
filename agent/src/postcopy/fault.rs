//! The destination's side of post-copy: resolves the restored process's
//! page faults, installs pages arriving from the source, and follows the
//! process's own changes to its memory (fork, `madvise`, `mremap`,
//! `munmap`) through userfaultfd's non-cooperative events.
//!
//! A mutex covers the handler's state (which pages are still to come, and
//! where); a read-write lock covers the copies into the userfaultfds. The
//! fault loop and the demand lane hold both, exclusively: they read the
//! userfaultfds, apply their events and install, as one. Pages installed
//! in the background (pushed, pre-copied) share the copy lock with each
//! other, a small piece at a time: each takes its pages off the map under
//! the mutex, copies them without it (so that installs run on several
//! CPUs at once), then settles under it; they step aside while a fault's
//! thread waits. So no event is applied, and no fault resolved, while a
//! background copy is under way: a page taken for a copy is never given a
//! zero page nor moved under it. An install that races with an unread
//! event fails with `EAGAIN`; the events are then applied (by the fault
//! loop, for a background install) before it is tried again.

use crate::net::secure::PeerStream;
use std::collections::HashMap;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockWriteGuard};
use std::time::{Duration, Instant};

use migrate_proto::frame;
use migrate_proto::msg::{PageRequest, Prefetch};
use migrate_proto::record::FaultSample;
use migrate_proto::PAGE_SIZE;
use tracing::{debug, info, warn};

use crate::host::uffd::{self, Event, Install};
use crate::postcopy::content::Content;
use crate::postcopy::lazy::LazyMap;
use crate::postcopy::pageset::PageSet;
use crate::postcopy::reservoir::Reservoir;
use crate::postcopy::store::PageStore;
use timing::{log_slow_fault, Arrival, Awaited, Stages, SLOW_FAULT};

/// Most fault samples kept for the record: a uniform sample of every
/// network-served fault of the migration.
const MAX_SAMPLES: usize = 4096;
/// How long an install may keep meeting mm changes (a process that
/// unmaps and remaps all the time) before post-copy gives up.
const RETRY_FOR: Duration = Duration::from_secs(10);
/// Most address spaces waiting for pages at once (the process and the
/// children it forks during post-copy): past it, post-copy fails rather
/// than let a fork loop grow the agent.
const MAX_SPACES: usize = 256;
/// How long post-copy may wait with no page arriving before it says
/// what it waits for.
const STALL: Duration = Duration::from_secs(5);
/// Attempts in a row that find no registered mapping where a pending page
/// should go, events applied in between.
const MAX_MISSING: u32 = 3;

/// Reaps `pids`, killed descendants of a restored process: with their
/// parent dead too they become this agent's children (it is a subreaper),
/// and nothing else waits for them. Bounded: a few seconds, on a thread.
fn reap_orphans(mut pids: Vec<i32>) {
    if pids.is_empty() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("reap".into())
        .spawn(move || {
            for _ in 0..100 {
                pids.retain(|&p| {
                    !crate::host::sys::try_reap(p) && crate::host::sys::kill(p, 0).is_ok()
                });
                if pids.is_empty() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            warn!(
                left = pids.len(),
                "killed children of a failed post-copy not reaped"
            );
        });
    if let Err(e) = spawned {
        warn!(error = %e, "no thread to reap the children of a failed post-copy");
    }
}

/// Address spaces with pages still to come.
fn waiting_spaces(st: &State) -> usize {
    st.spaces.iter().filter(|s| s.map.left() > 0).count()
}

/// Paces retries: at once the first few times, then short sleeps.
fn pause(attempt: u32) {
    if attempt > 3 {
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// One address space being filled: a restored process (the process, or
/// each member of a tree, ids from 0) or a child one forked during
/// post-copy.
struct Space {
    id: u64,
    /// Shared with background copies under way (the descriptor stays open
    /// until they are done, even if the space goes meanwhile).
    uffd: Arc<OwnedFd>,
    map: LazyMap,
    /// Current addresses `[start, end)` of the latest window asked for.
    last_window: (u64, u64),
}

/// Most pages a fault at `page` asks for under `prefetch`, given the latest
/// window asked for in its space: with readahead, a fault where that window
/// ends continues a read in address order and gets a whole window; one
/// inside it (its page still on the way) or anywhere else gets its page
/// alone, so that a process touching pages here and there waits for one
/// page, not for a window's worth ahead of its next fault.
fn window_pages(prefetch: Prefetch, page: u64, last_window: (u64, u64)) -> u32 {
    match prefetch {
        Prefetch::Fixed(n) => n.max(1),
        Prefetch::Readahead { max } if page == last_window.1 && last_window.0 < last_window.1 => {
            max.max(1)
        }
        Prefetch::Readahead { .. } => 1,
    }
}

/// How post-copy ended for the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every page arrived or was discarded.
    Complete,
    /// The process exited before that.
    Exited,
    /// Post-copy failed (the restored process was killed).
    Failed(String),
}

struct State {
    /// In id order (a fork's new space is pushed last, with the next id).
    spaces: Vec<Space>,
    /// Spaces of the restored processes (ids below): each one's keeper
    /// holds its userfaultfd, so the handler keeps them to the end.
    restored: u64,
    next_id: u64,
    discarded: u64,
    samples: Reservoir<FaultSample>,
    /// The stages of faults answered on the demand lane, sampled as
    /// `samples` are.
    stages: Reservoir<Stages>,
    /// Faulting pages asked of the source.
    requested: HashMap<u64, Awaited>,
    /// Faults read and not yet resolved: space, address, thread, when read.
    faults_to_redo: Vec<(u64, u64, u32, Instant)>,
    outcome: Option<Outcome>,
    /// Bumped whenever `spaces` changes (fork, a space gone, the end).
    generation: u64,
    /// Background copies under way: post-copy is not complete until none
    /// is.
    copies_in_flight: usize,
}

/// The handler's lock held by a thread on a fault's path, with the copy
/// lock held exclusively (released after the state's).
struct UrgentGuard<'a> {
    st: MutexGuard<'a, State>,
    _exclusive: RwLockWriteGuard<'a, ()>,
    urgent: &'a AtomicU32,
}

impl std::ops::Deref for UrgentGuard<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.st
    }
}

impl std::ops::DerefMut for UrgentGuard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.st
    }
}

impl Drop for UrgentGuard<'_> {
    fn drop(&mut self) {
        self.urgent.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Pages pre-copied to this host and still current: installed from the
/// store without asking the source.
pub struct LocalPages {
    /// Their content, by source address.
    pub store: PageStore,
    /// Which pages (source addresses) to take from the store.
    pub pages: PageSet,
}

impl LocalPages {
    /// The content of `n` pages from source address `src`.
    fn read(&self, src: u64, n: u64) -> Result<Vec<u8>, String> {
        let mut buf = vec![0u8; (n * PAGE_SIZE) as usize];
        self.store
            .read(src, &mut buf)
            .map_err(|e| format!("reading pre-copied pages at {src:#x}: {e}"))?;
        Ok(buf)
    }
}

/// Pages per local install in the background.
const LOCAL_CHUNK: u64 = 64;

/// Shared by the fault loop, the lane readers and the local installer.
pub struct FaultHandler {
    state: Mutex<State>,
    /// Taken before `state`: shared by background copies, exclusive for
    /// everything else that touches a userfaultfd.
    copying: RwLock<()>,
    /// Tests widen the window between a background piece's take and its
    /// copy by this many µs.
    #[cfg(test)]
    copy_pause_us: std::sync::atomic::AtomicU64,
    ended: Condvar,
    demand: Mutex<PeerStream>,
    prefetch: Prefetch,
    resumed: Instant,
    pidfd: OwnedFd,
    /// Signalled when post-copy ends: the fault loop polls it beside the
    /// userfaultfds, and lets go of them at once.
    ended_fd: OwnedFd,
    local: Option<Arc<LocalPages>>,
    /// Threads on a fault's path (the fault loop, the demand lane)
    /// waiting for or holding the lock: background installs wait until
    /// none is.
    urgent: AtomicU32,
    /// Faulting pages asked of the source and not yet in (the length of
    /// `State::requested`): background installs wait until none is, so
    /// that the reply finds the lock free.
    awaited: AtomicUsize,
}

/// Pages installed in the background under one hold of the lock: a fault
/// waits for at most that many. First writes to fresh memory cost several
/// µs a page on a VM: with 16 a fault's read waited 140 µs for the lock in
/// the median (scheduler traces of 2 GiB post-copies, 2026-12-05), with 4
/// 13 µs.
const BACKGROUND_PIECE: usize = 4;
/// Longest background installs step aside for faults before going on anyway.
const STEP_ASIDE: Duration = Duration::from_millis(2);

impl FaultHandler {
    /// A handler for the restored processes with userfaultfds and pending
    /// pages `spaces` (the process alone, or a tree's members; the first
    /// is the one `pidfd` names, whose end ends post-copy once no other
    /// space waits); faults are requested on `demand`, except for the
    /// pages of `local`.
    pub fn new(
        spaces: Vec<(OwnedFd, LazyMap)>,
        demand: PeerStream,
        prefetch: Prefetch,
        pidfd: OwnedFd,
        local: Option<Arc<LocalPages>>,
    ) -> std::io::Result<FaultHandler> {
        let done = spaces.iter().all(|(_, m)| m.left() == 0);
        let restored = spaces.len() as u64;
        let spaces = spaces
            .into_iter()
            .zip(0..)
            .map(|((uffd, map), id)| Space {
                id,
                uffd: Arc::new(uffd),
                map,
                last_window: (0, 0),
            })
            .collect();
        Ok(FaultHandler {
            state: Mutex::new(State {
                spaces,
                restored,
                next_id: restored,
                discarded: 0,
                samples: Reservoir::new(MAX_SAMPLES, crate::unix_us()),
                stages: Reservoir::new(MAX_SAMPLES, crate::unix_us() ^ 0x5eed),
                requested: HashMap::new(),
                faults_to_redo: Vec::new(),
                outcome: done.then_some(Outcome::Complete),
                generation: 0,
                copies_in_flight: 0,
            }),
            copying: RwLock::new(()),
            #[cfg(test)]
            copy_pause_us: std::sync::atomic::AtomicU64::new(0),
            ended: Condvar::new(),
            demand: Mutex::new(demand),
            prefetch,
            resumed: Instant::now(),
            pidfd,
            ended_fd: crate::host::sys::eventfd()?,
            local,
            urgent: AtomicU32::new(0),
            awaited: AtomicUsize::new(0),
        })
    }

    /// The lock, for a thread on a fault's path: background installs step
    /// aside.
    fn lock_urgent(&self) -> UrgentGuard<'_> {
        self.urgent.fetch_add(1, Ordering::AcqRel);
        let exclusive = self.copying.write().unwrap_or_else(|e| e.into_inner());
        UrgentGuard {
            st: self.lock(),
            _exclusive: exclusive,
            urgent: &self.urgent,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pages still to come, over every address space.
    pub fn left(&self) -> u64 {
        self.lock().spaces.iter().map(|s| s.map.left()).sum()
    }

    /// Whether a page still to come can only come from the source: one
    /// not among the pre-copied pages kept here.
    pub fn needs_source(&self) -> bool {
        let st = self.lock();
        let here = |src: u64| self.local.as_ref().is_some_and(|l| l.pages.contains(src));
        st.spaces
            .iter()
            .any(|s| s.map.pending_sources().any(|src| !here(src)))
    }

    /// Ends post-copy with `outcome` unless it already ended.
    pub fn end(&self, outcome: Outcome) {
        let mut st = self.lock();
        self.end_locked(&mut st, outcome);
    }

    /// Kills the restored process and every descendant: children it forked
    /// during post-copy wait for pages too and must die before their
    /// userfaultfds close (a fault on a closed one would read zeros). The
    /// tree is stopped first, until no new member appears (a stopped
    /// process forks no more, and a fork under way ends with the child on
    /// its parent's list), so none escapes by being reparented; then all
    /// are killed and reaped as they fall to this agent.
    fn kill_tree(&self) {
        let Some(pid) = crate::host::procfs::pidfd_pid(&self.pidfd) else {
            let _ = crate::host::sys::pidfd_kill(&self.pidfd, libc::SIGKILL);
            return;
        };
        let _ = crate::host::sys::pidfd_kill(&self.pidfd, libc::SIGSTOP);
        let mut tree: Vec<i32> = Vec::new();
        for _ in 0..100 {
            let mut new = 0;
            for p in crate::host::procfs::descendants(pid, 4 * MAX_SPACES) {
                if !tree.contains(&p) {
                    let _ = crate::host::sys::kill(p, libc::SIGSTOP);
                    tree.push(p);
                    new += 1;
                }
            }
            // Stopped, or asleep in a fault (where it cannot fork either).
            if new == 0 && crate::host::procfs::is_stopped_or_faulting(pid) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = crate::host::sys::pidfd_kill(&self.pidfd, libc::SIGKILL);
        tree.retain(|&p| crate::host::sys::kill(p, libc::SIGKILL).is_ok());
        reap_orphans(tree);
    }

    fn end_locked(&self, st: &mut State, outcome: Outcome) {
        if st.outcome.is_some() {
            return;
        }
        if let Outcome::Failed(why) = &outcome {
            warn!(%why, "post-copy failed: killing the restored process");
            // Children it forked during post-copy wait for pages too: they
            // die before their userfaultfds close (a fault on a closed one
            // would read zeros).
            self.kill_tree();
        }
        // Closing the userfaultfds unregisters every range: from now on the
        // kernel serves the process's faults itself.
        st.spaces.clear();
        st.generation += 1;
        st.outcome = Some(outcome);
        self.ended.notify_all();
        if let Err(e) = crate::host::sys::eventfd_signal(&self.ended_fd) {
            warn!(error = %e, "waking the fault loop");
        }
    }

    /// Waits until post-copy ends; returns how, the pages discarded by
    /// the process, and the fault samples (in the order they happened).
    pub fn wait(&self) -> (Outcome, u64, Vec<FaultSample>) {
        let mut st = self.lock();
        while st.outcome.is_none() {
            st = self
                .ended
                .wait_timeout(st, Duration::from_millis(200))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let stages = st.stages.take();
        if !stages.is_empty() {
            let m = Stages::medians(&stages);
            info!(
                faults = stages.len(),
                request_us = m.request_us,
                round_trip_us = m.round_trip_us,
                lock_us = m.lock_us,
                install_us = m.install_us,
                "demand faults answered on the demand lane, median of each stage"
            );
        }
        let mut samples = st.samples.take();
        samples.sort_by_key(|s| s.at_us);
        (
            st.outcome.clone().unwrap_or(Outcome::Complete),
            st.discarded,
            samples,
        )
    }

    fn is_over(&self) -> bool {
        self.lock().outcome.is_some()
    }

    /// Installs pages that arrived from the source (source address `src`).
    pub fn install<'a>(&self, src: u64, data: impl Into<Content<'a>>) {
        let data = data.into();
        let arrived = Instant::now();
        let mut st = self.lock_urgent();
        let at = Arrival {
            arrived,
            locked: Instant::now(),
        };
        self.install_arrived(&mut st, src, data, Some(at));
    }

    fn install_locked(&self, st: &mut State, src: u64, data: Content<'_>) {
        self.install_arrived(st, src, data, None);
    }

    /// Installs pages, those from the demand lane with their `arrival`.
    fn install_arrived(
        &self,
        st: &mut State,
        src: u64,
        data: Content<'_>,
        arrival: Option<Arrival>,
    ) {
        let n = data.pages();
        if st.outcome.is_some() {
            return;
        }
        let waiting = self.take_waiting(st, src, n);
        // Into every space, those a fork adds meanwhile too: an install
        // that meets a fork under way reads its event and takes the child's
        // space from the parent's as it is then, with these pages still to
        // come in both (the kernel copied none of them).
        // (Spaces are kept in id order, a fork's new one last.)
        let mut next = 0;
        while st.outcome.is_none() {
            let i = st.spaces.partition_point(|s| s.id < next);
            let Some(id) = st.spaces.get(i).map(|s| s.id) else {
                break;
            };
            next = id + 1;
            self.install_into(st, id, src, data);
        }
        self.settle_waiting(st, waiting, arrival);
        // Faults read while applying events here would otherwise wait for
        // the fault loop's next wake-up.
        self.redo_faults(st);
        self.check_complete(st);
    }

    /// Takes the faults asked of the source that wait for the `n` pages
    /// from `src` (they are being installed).
    fn take_waiting(&self, st: &mut State, src: u64, n: u64) -> Vec<(u64, Awaited)> {
        let mut waiting = Vec::new();
        if !st.requested.is_empty() {
            for k in 0..n {
                let addr = src + k * PAGE_SIZE;
                if let Some(a) = st.requested.remove(&addr) {
                    waiting.push((addr, a));
                }
            }
            self.awaited.store(st.requested.len(), Ordering::Release);
        }
        waiting
    }

    /// Records the faults that waited for pages just installed.
    fn settle_waiting(
        &self,
        st: &mut State,
        waiting: Vec<(u64, Awaited)>,
        arrival: Option<Arrival>,
    ) {
        // UFFDIO_COPY (without DONTWAKE) has woken the faulting threads
        // by now: a fault's latency runs from its read to here.
        if !waiting.is_empty() && st.outcome.as_ref().is_none_or(|o| *o == Outcome::Complete) {
            let now = Instant::now();
            for (addr, a) in waiting {
                let latency = now.duration_since(a.read_at);
                let stages = arrival.map(|r| Stages::of(&a, r, now));
                if let Some(s) = stages {
                    st.stages.offer(s);
                }
                if latency > SLOW_FAULT {
                    log_slow_fault(addr, &a, stages, now);
                }
                st.samples.offer(FaultSample {
                    at_us: a.read_at.duration_since(self.resumed).as_micros() as u64,
                    addr,
                    latency_us: latency.as_micros() as u64,
                    tid: a.tid,
                });
            }
        }
    }

    fn install_into(&self, st: &mut State, id: u64, src: u64, data: Content<'_>) {
        let n = data.pages();
        let start = Instant::now();
        let mut missing = 0;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Some(sp) = st.spaces.iter_mut().find(|s| s.id == id) else {
                return;
            };
            let runs = sp.map.take_arrived(src, n);
            let mut failed = None;
            for (i, &(dst, k, cnt)) in runs.iter().enumerate() {
                match data.part(k, cnt).install(&sp.uffd, dst) {
                    Ok(Install::Done) => {}
                    Ok(r @ (Install::Retry | Install::Missing)) => {
                        failed = Some((i, r));
                        break;
                    }
                    Ok(Install::Gone) => {
                        self.drop_space(st, id);
                        return;
                    }
                    Err(e) => {
                        let why = format!("installing pages at {dst:#x}: {e}");
                        self.end_locked(st, Outcome::Failed(why));
                        return;
                    }
                }
            }
            let Some((i, why)) = failed else { return };
            // Put back what was not installed, apply the pending events,
            // then try again with the map as it is now.
            let sp = st.spaces.iter_mut().find(|s| s.id == id).expect("space");
            for &(dst, _, cnt) in &runs[i..] {
                sp.map.unarrive(dst, cnt);
            }
            let dst = runs[i].0;
            self.drain_events(st, id, None);
            if why == Install::Missing {
                missing += 1;
            }
            if missing >= MAX_MISSING || start.elapsed() > RETRY_FOR {
                // Never leave a pending page uninstalled with its fault
                // unanswered, nor let it read as zeros.
                let why = format!(
                    "pages at {dst:#x} could not be installed ({why:?} after {attempt} attempts)"
                );
                self.end_locked(st, Outcome::Failed(why));
                return;
            }
            pause(attempt);
        }
    }

    fn drop_space(&self, st: &mut State, id: u64) {
        debug!(id, "address space gone");
        st.spaces.retain(|s| s.id != id);
        st.generation += 1;
    }

    fn check_complete(&self, st: &mut State) {
        // A page taken for a background copy counts as in, and the copy
        // may yet fail and put it back: nothing is complete, and no space
        // let go, while one is under way (the last to settle checks).
        if st.copies_in_flight > 0 {
            return;
        }
        if st.outcome.is_none() && st.spaces.iter().all(|s| s.map.left() == 0) {
            self.end_locked(st, Outcome::Complete);
            return;
        }
        // A forked child's space with every page in needs no handler:
        // closing its userfaultfd lets the kernel serve its faults (an
        // exited child's space would otherwise linger, as nothing installs
        // into it any more). A restored process's own space stays to the
        // end: its keeper holds a copy of its userfaultfd.
        let before = st.spaces.len();
        let restored = st.restored;
        st.spaces.retain(|s| s.id < restored || s.map.left() > 0);
        if st.spaces.len() != before {
            st.generation += 1;
        }
    }

    /// Reads and applies every event of space `id`; faults are kept in
    /// `faults_to_redo` for the fault loop, timed from `seen` (when the
    /// fault loop saw the userfaultfd readable, before it waited for the
    /// lock: the faulting thread waits from then too).
    fn drain_events(&self, st: &mut State, id: u64, seen: Option<Instant>) {
        let mut events = Vec::new();
        {
            let Some(sp) = st.spaces.iter().find(|s| s.id == id) else {
                return;
            };
            if let Err(e) = uffd::read_events(&sp.uffd, &mut events) {
                // Its faults and events are lost: never take that for an
                // address space with nothing left to fill.
                let why = format!("reading the userfaultfd of address space {id}: {e}");
                self.end_locked(st, Outcome::Failed(why));
                return;
            }
        }
        let read_at = seen.unwrap_or_else(Instant::now);
        for ev in events {
            self.apply(st, id, ev, read_at);
        }
    }

    fn apply(&self, st: &mut State, id: u64, ev: Event, read_at: Instant) {
        match ev {
            Event::PageFault { addr, tid } => st.faults_to_redo.push((id, addr, tid, read_at)),
            Event::Fork { ufd } if waiting_spaces(st) >= MAX_SPACES => {
                drop(uffd::adopt(ufd));
                let why = format!(
                    "the process forked past {MAX_SPACES} address spaces waiting for pages \
                     during post-copy"
                );
                self.end_locked(st, Outcome::Failed(why));
            }
            Event::Fork { ufd } => match uffd::adopt(ufd) {
                Ok(fd) => {
                    // Nothing pending for the child: it needs no handler
                    // (its userfaultfd closes here).
                    let Some(map) = st
                        .spaces
                        .iter()
                        .find(|s| s.id == id && s.map.left() > 0)
                        .map(|s| s.map.clone())
                    else {
                        return;
                    };
                    let nid = st.next_id;
                    st.next_id += 1;
                    debug!(parent = id, child = nid, left = map.left(), "fork");
                    st.spaces.push(Space {
                        id: nid,
                        uffd: Arc::new(fd),
                        map,
                        last_window: (0, 0),
                    });
                    st.generation += 1;
                }
                Err(e) => warn!(error = %e, "fork event"),
            },
            Event::Remap { from, to, len } => {
                if let Some(sp) = st.spaces.iter_mut().find(|s| s.id == id) {
                    sp.map.remap(from, to, len);
                }
            }
            Event::Remove { start, end } | Event::Unmap { start, end } => {
                if let Some(sp) = st.spaces.iter_mut().find(|s| s.id == id) {
                    let n = sp.map.discard(start, end);
                    st.discarded += n;
                }
            }
            Event::Other(code) => debug!(code, "ignored userfaultfd event"),
        }
    }

    /// Resolves the fault of thread `tid` at `addr` in space `id`, read
    /// from its userfaultfd at `read_at`.
    fn handle_fault(&self, st: &mut State, id: u64, addr: u64, tid: u32, read_at: Instant) {
        let page = addr & !(PAGE_SIZE - 1);
        let start = Instant::now();
        for attempt in 1.. {
            if start.elapsed() > RETRY_FOR {
                let why = format!("the fault at {page:#x} could not be resolved");
                self.end_locked(st, Outcome::Failed(why));
                return;
            }
            let Some(sp) = st.spaces.iter_mut().find(|s| s.id == id) else {
                return;
            };
            let most = window_pages(self.prefetch, page, sp.last_window);
            if let Some((src, n)) = sp.map.window(page, most) {
                // A fault inside the latest window leaves it as it was.
                if !(sp.last_window.0..sp.last_window.1).contains(&page) {
                    sp.last_window = (page, page + u64::from(n) * PAGE_SIZE);
                }
                let mut n = n;
                if let Some(local) = &self.local {
                    let here = local.pages.run_at(src, u64::from(n));
                    if here > 0 {
                        match local.read(src, here) {
                            Ok(buf) => self.install_locked(st, src, Content::Bytes(&buf)),
                            Err(why) => self.end_locked(st, Outcome::Failed(why)),
                        }
                        return;
                    }
                    // Only pages the source has: the rest are here.
                    n = local.pages.gap_at(src, u64::from(n)) as u32;
                }
                // The faulting page is timed; the rest of the window is
                // prefetch.
                st.requested.entry(src).or_insert(Awaited {
                    read_at,
                    tid,
                    sent_at: None,
                });
                self.awaited.store(st.requested.len(), Ordering::Release);
                let req = PageRequest {
                    addr: src,
                    npages: n,
                };
                let mut w = self.demand.lock().unwrap_or_else(|e| e.into_inner());
                if let Err(e) = frame::write_msg(&mut *w, &req).and_then(|_| Ok(w.flush()?)) {
                    drop(w);
                    self.end_locked(st, Outcome::Failed(format!("lost the source: {e}")));
                    return;
                }
                drop(w);
                if let Some(a) = st.requested.get_mut(&src) {
                    a.sent_at.get_or_insert_with(Instant::now);
                }
                return;
            }
            // Not pending: never present on the source, or discarded.
            match uffd::zeropage(&sp.uffd, page, PAGE_SIZE) {
                Ok(Install::Done) => return,
                Ok(Install::Retry) => {
                    self.drain_events(st, id, None);
                    pause(attempt);
                }
                // The range went away under the fault: its thread is woken
                // by the unmap and faults again if it still can.
                Ok(Install::Missing) => return,
                Ok(Install::Gone) => {
                    self.drop_space(st, id);
                    return;
                }
                Err(e) => {
                    let why = format!("zero page at {page:#x}: {e}");
                    self.end_locked(st, Outcome::Failed(why));
                    return;
                }
            }
        }
    }

    /// Resolves the faults that event reads (in installs or here) set
    /// aside.
    fn redo_faults(&self, st: &mut State) {
        // Installs made while resolving faults may set more aside.
        for _ in 0..16 {
            let faults = std::mem::take(&mut st.faults_to_redo);
            if faults.is_empty() {
                return;
            }
            for (id, addr, tid, read_at) in faults {
                self.handle_fault(st, id, addr, tid, read_at);
            }
        }
    }

    /// Logs each space's pending pages once `STALL` passed with the total
    /// left unchanged (`seen`: the total last seen, and since when).
    fn note_stall(&self, st: &State, seen: &mut (u64, Instant)) {
        let left: u64 = st.spaces.iter().map(|s| s.map.left()).sum();
        if left != seen.0 {
            *seen = (left, Instant::now());
            return;
        }
        if seen.1.elapsed() > STALL {
            seen.1 = Instant::now();
            for s in &st.spaces {
                info!(
                    id = s.id,
                    left = s.map.left(),
                    first = ?s.map.first_pending(),
                    requested = st.requested.len(),
                    "post-copy waits for pages"
                );
            }
        }
    }

    /// The fault loop: runs until post-copy ends. It sleeps in poll on its
    /// own copies of the userfaultfds (refreshed when a fork adds one or a
    /// space goes), never holding the lock that installs need.
    pub fn run(&self) {
        let mut watched: Vec<(u64, OwnedFd)> = Vec::new();
        let mut generation = u64::MAX;
        // The first restored process ended while others still wait.
        let mut first_gone = false;
        // Pages left when last seen changing: a post-copy that stalls says
        // what it waits for.
        let mut seen = (u64::MAX, Instant::now());
        while !self.is_over() {
            {
                let st = self.lock();
                if st.generation != generation {
                    generation = st.generation;
                    watched = st
                        .spaces
                        .iter()
                        .filter_map(|s| Some((s.id, s.uffd.try_clone().ok()?)))
                        .collect();
                }
            }
            let mut fds: Vec<&OwnedFd> = watched.iter().map(|(_, f)| f).collect();
            fds.push(&self.ended_fd);
            if !first_gone {
                fds.push(&self.pidfd);
            }
            let ready = match uffd::poll_readable(&fds, 50) {
                Ok(r) => r,
                Err(e) => {
                    self.end(Outcome::Failed(format!("poll: {e}")));
                    return;
                }
            };
            let readable_at = Instant::now();
            let mut st = self.lock_urgent();
            if !ready.iter().any(|r| *r) {
                // Nothing for 50 ms: if no page came for long, say what
                // each space still waits for.
                self.note_stall(&st, &mut seen);
            }
            if !first_gone && ready.last().copied().unwrap_or(false) {
                // Its space is gone; others (a tree's members, children
                // it forked) may still wait for pages.
                st.spaces.retain(|s| s.id != 0);
                st.generation += 1;
                if st.spaces.iter().all(|s| s.map.left() == 0) {
                    self.end_locked(&mut st, Outcome::Exited);
                    return;
                }
                first_gone = true;
                continue;
            }
            for (i, (id, _)) in watched.iter().enumerate() {
                if ready.get(i).copied().unwrap_or(false) {
                    self.drain_events(&mut st, *id, Some(readable_at));
                }
            }
            self.redo_faults(&mut st);
            self.check_complete(&mut st);
        }
    }
}

mod background;
mod timing;

#[cfg(test)]
mod tests;
