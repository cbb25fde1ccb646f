//! The original's memory after the freeze: pre-copy rounds, the pages still
//! owed, the demand lane that serves faults and the bulk lane that pushes
//! the rest.

use super::*;
use crate::postcopy::content::zero_runs;

/// Lazy pages of the image, with a "sent" flag each so every page crosses
/// once on the bulk lane.
pub(super) struct LazyPages {
    pub(super) runs: Vec<(u64, u64, usize)>,
    pub(super) sent: Vec<AtomicBool>,
    /// Pages whose flag is set, by either lane: the push ends at `total`.
    pub(super) claimed: std::sync::atomic::AtomicUsize,
}

impl LazyPages {
    /// The lazy pages of `images`, each a tree member's (its index, its
    /// image: member 0 for a process alone), named by
    /// [`tree_page`](migrate_proto::image::tree_page).
    pub(super) fn of_members<'a>(
        images: impl Iterator<Item = (usize, &'a ProcessImage)>,
    ) -> LazyPages {
        let mut runs = Vec::new();
        let mut n = 0usize;
        for (member, image) in images {
            for v in &image.mm.vmas {
                for p in v.pages.iter().filter(|p| p.fill == Fill::Lazy) {
                    let addr = v.start + p.first * PAGE_SIZE;
                    runs.push((migrate_proto::image::tree_page(member, addr), p.count, n));
                    n += p.count as usize;
                }
            }
        }
        LazyPages {
            runs,
            sent: (0..n).map(|_| AtomicBool::new(false)).collect(),
            claimed: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    pub(super) fn total(&self) -> u64 {
        self.sent.len() as u64
    }

    /// The run holding flat page index `i`: (address, count, first index).
    pub(super) fn run_of(&self, i: usize) -> Option<(u64, u64, usize)> {
        let k = self.runs.partition_point(|r| r.2 + r.1 as usize <= i);
        self.runs.get(k).copied()
    }

    /// Flat index of the first lazy page above `addr`, if any.
    pub(super) fn index_after(&self, addr: u64) -> Option<usize> {
        let k = self.runs.partition_point(|(a, _, _)| *a <= addr);
        self.runs.get(k).map(|(_, _, off)| *off)
    }

    pub(super) fn index(&self, addr: u64) -> Option<usize> {
        // Runs are in address order.
        let k = self
            .runs
            .partition_point(|(a, c, _)| a + c * PAGE_SIZE <= addr);
        let &(a, _, off) = self.runs.get(k)?;
        (addr >= a).then(|| off + ((addr - a) / PAGE_SIZE) as usize)
    }

    /// Whether `[addr, addr + n pages)` lies inside the lazy set.
    pub(super) fn contains(&self, addr: u64, n: u64) -> bool {
        let k = self
            .runs
            .partition_point(|(a, c, _)| a + c * PAGE_SIZE <= addr);
        self.runs
            .get(k)
            .is_some_and(|(a, c, _)| addr >= *a && addr + n * PAGE_SIZE <= a + c * PAGE_SIZE)
    }

    /// Sets page `i`'s flag; whether this call set it.
    pub(super) fn claim(&self, i: usize) -> bool {
        let fresh = !self.sent[i].swap(true, Ordering::Relaxed);
        if fresh {
            self.claimed.fetch_add(1, Ordering::Relaxed);
        }
        fresh
    }

    /// Whether every page has been claimed by one lane or the other.
    pub(super) fn all_claimed(&self) -> bool {
        self.claimed.load(Ordering::Relaxed) == self.sent.len()
    }

    pub(super) fn mark(&self, addr: u64, n: u64) {
        let Some(first) = self.index(addr) else {
            return;
        };
        // `contains` checked the range lies in one run: indexes are
        // consecutive.
        for i in first..first + n as usize {
            self.claim(i);
        }
    }
}

/// The memory post-copy reads pages from: the frozen process's, or each
/// member's of a tree (`None` for a zombie), a page named as
/// [`tree_page`](migrate_proto::image::tree_page) says.
pub(super) struct Memories(pub(super) Vec<Option<RemoteMem>>);

impl Memories {
    /// Reads the page(s) named `name` into `buf`.
    pub(super) fn read_direct(&self, name: u64, buf: &mut [u8]) -> Result<(), String> {
        let (member, addr) = migrate_proto::image::tree_page_of(name);
        match self.0.get(member).and_then(Option::as_ref) {
            Some(mem) => mem.read_direct(addr, buf).map_err(|e| error_chain(&e)),
            None => Err(format!("no process {member} in the tree")),
        }
    }

    /// The frozen process's memory (a tree's root).
    pub(super) fn first(&self) -> Option<&RemoteMem> {
        self.0.first().and_then(Option::as_ref)
    }
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) demand_pages: AtomicU64,
    pub(super) demand_requests: AtomicU64,
    pub(super) pushed_pages: AtomicU64,
    /// Address of the latest demand request + 1 (0: none yet), for the
    /// push order that follows faults.
    pub(super) last_fault: AtomicU64,
    /// (microseconds since the request, pages pushed), sampled.
    pub(super) push_samples: std::sync::Mutex<Vec<(u64, u64)>>,
    /// Page bytes put on the demand and bulk lanes (compressed or not).
    pub(super) wire_bytes: AtomicU64,
    /// When the latest demand request was answered ([`steady_us`]; 0:
    /// none yet).
    pub(super) last_demand_us: AtomicU64,
}

/// Microseconds on a clock that never steps back (since this agent first
/// asked), never 0: when demand requests were answered, for the push's
/// wait for the first faults.
pub(super) fn steady_us() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64 + 1
}

/// The push waits until the process's first faults after the resume have
/// settled (no demand request for this long)...
const PUSH_QUIET: Duration = Duration::from_millis(2);
/// ... but no longer than this after the resume.
const PUSH_HOLD: Duration = Duration::from_millis(30);

/// Waits until no demand request came for [`PUSH_QUIET`], at most
/// [`PUSH_HOLD`]: the resumed process's first faults have the link and
/// both hosts' CPUs to themselves.
fn wait_for_quiet(c: &Counters) {
    let start = Instant::now();
    while start.elapsed() < PUSH_HOLD {
        let last = c.last_demand_us.load(Ordering::Relaxed);
        let since = Duration::from_micros(steady_us().saturating_sub(last));
        if since >= PUSH_QUIET && start.elapsed() >= PUSH_QUIET {
            return;
        }
        std::thread::sleep(
            PUSH_QUIET
                .saturating_sub(since)
                .max(Duration::from_micros(200)),
        );
    }
}

/// Why pre-copy stopped before the freeze (the process runs on untouched).
pub(super) enum PreCopyError {
    /// Tracking is not possible for this process or kernel.
    Refused(String),
    /// The destination went away.
    Lost(String),
}

/// Pre-copy rounds on control lane `ctl` while the process runs: each
/// sends the pages written since the previous one (all present pages the
/// first time), until a round finds at most `converge_pages`, stops
/// shrinking, or `max_rounds` is reached (one round in hybrid mode).
/// Returns the tracker, whose last scan happens in the freeze.
pub(super) fn precopy(
    ctl: &mut PeerStream,
    seq: &Sequencer,
    pid: i32,
    opts: &MigrateOptions,
    rec: &mut MigrationRecord,
) -> Result<DirtyTracker, PreCopyError> {
    let refuse = |e: &DirtyError| match e {
        DirtyError::Gone(_) => PreCopyError::Refused(e.to_string()),
        _ => PreCopyError::Refused(format!("pre-copy is not possible: {}", error_chain(e))),
    };
    let mem = RemoteMem::open(pid).map_err(|_| refuse(&DirtyError::Gone(pid)))?;
    let mut tracker = DirtyTracker::attach(pid, &mem).map_err(|e| refuse(&e))?;
    let rounds = match opts.mode {
        Mode::Hybrid => 1,
        _ => opts.max_rounds.max(1),
    };
    let lost = |e: frame::FrameError| PreCopyError::Lost(frame_error(&e));
    let mut w = std::io::BufWriter::with_capacity(1 << 20, &mut *ctl);
    let mut buf = Vec::new();
    let mut last = u64::MAX;
    let mut wire = 0u64;
    for round in 0..rounds {
        let written = tracker.take_written().map_err(|e| refuse(&e))?;
        let mut sent = 0;
        for (start, end) in written.ranges() {
            let mut addr = start;
            while addr < end {
                let n = ((end - addr) / PAGE_SIZE).min(u64::from(MAX_PAGES_PER_FRAME));
                buf.resize((n * PAGE_SIZE) as usize, 0);
                // A range the process unmapped meanwhile is skipped: if it
                // is back by the freeze, it goes then.
                if mem.read(addr, &mut buf).is_ok() {
                    wire += put_pages(&mut w, addr, &buf, opts.compress).map_err(lost)?;
                    tracker.mark_sent(addr, addr + n * PAGE_SIZE);
                    sent += n;
                }
                addr += n * PAGE_SIZE;
            }
        }
        seq.send(&mut w, &SourceMsg::PreCopyRound { round, pages: sent })
            .map_err(lost)?;
        rec.precopy_rounds.push(sent);
        info!(pid, round, pages = sent, "pre-copy round");
        if sent <= opts.converge_pages || sent >= last {
            break;
        }
        last = sent;
    }
    w.flush().map_err(|e| lost(e.into()))?;
    rec.page_wire_bytes += wire;
    Ok(tracker)
}

/// Sends pages, LZ4-compressed if asked; returns the payload bytes sent.
pub(super) fn put_pages(
    w: &mut impl Write,
    addr: u64,
    data: &[u8],
    compress: bool,
) -> Result<u64, frame::FrameError> {
    if compress {
        frame::write_pages_lz4(w, addr, data)
    } else {
        frame::write_pages(w, addr, data)?;
        Ok(data.len() as u64)
    }
}

/// Sends the pages of a post-copy lane: each run of pages whose every byte
/// is zero as a mark (the destination maps the zero page there: nothing
/// on the link, no fresh memory written), the rest as [`put_pages`] does.
/// Returns the payload bytes sent.
pub(super) fn put_lazy_pages(
    w: &mut impl Write,
    addr: u64,
    data: &[u8],
    compress: bool,
) -> Result<u64, frame::FrameError> {
    let mut wire = 0;
    for (first, n, zero) in zero_runs(data) {
        let at = addr + first * PAGE_SIZE;
        if zero {
            // `data` is at most a frame's pages.
            frame::write_zeros(w, at, n as u32)?;
        } else {
            let bytes = &data[(first * PAGE_SIZE) as usize..((first + n) * PAGE_SIZE) as usize];
            wire += put_pages(w, at, bytes, compress)?;
        }
    }
    Ok(wire)
}

pub(super) fn spawn_demand(
    lane: Option<PeerStream>,
    mem: Arc<Memories>,
    lazy: Arc<LazyPages>,
    c: Arc<Counters>,
    compress: bool,
) -> std::thread::JoinHandle<()> {
    crate::postcopy::spawn_named("demand-serve", move || {
        let Some(mut s) = lane else { return };
        serve_demand(&mut s, &mem, &lazy, &c, compress);
        // However it ended, the lane is closed (the session holds another
        // handle of it): a destination whose requests go unanswered knows.
        let _ = s.shutdown(Shutdown::Both);
    })
}

/// Answers demand requests on `s` until the lane ends or fails.
pub(super) fn serve_demand(
    s: &mut PeerStream,
    mem: &Memories,
    lazy: &LazyPages,
    c: &Counters,
    compress: bool,
) {
    let mut buf = Vec::new();
    loop {
        let req: PageRequest = match frame::read_msg(&mut *s) {
            Ok(r) => r,
            Err(_) => return,
        };
        // Timed only for its trace line.
        let received =
            tracing::enabled!(tracing::Level::TRACE).then(|| (Instant::now(), crate::unix_us()));
        let n = u64::from(req.npages.min(MAX_PAGES_PER_FRAME));
        if n == 0 || !req.addr.is_multiple_of(PAGE_SIZE) || !lazy.contains(req.addr, n) {
            warn!(
                addr = req.addr,
                n, "demand request outside the process's lazy pages: closing the lane"
            );
            return;
        }
        if failpoints::hit("source.demand").is_err() {
            return; // as if the lane broke
        }
        lazy.mark(req.addr, n);
        // The faulting page (the first) is read and sent alone and
        // first: the thread waiting on it runs again as soon as it is
        // in; the prefetched rest follows in a second frame.
        buf.resize((n * PAGE_SIZE) as usize, 0);
        let (head, rest) = buf.split_at_mut(PAGE_SIZE as usize);
        let mut send = |addr: u64, pages: &mut [u8]| -> Result<u64, frame::FrameError> {
            if pages.is_empty() {
                return Ok(0);
            }
            mem.read_direct(addr, pages)
                .map_err(|e| frame::FrameError::Io(std::io::Error::other(e)))?;
            put_lazy_pages(&mut *s, addr, pages, compress)
        };
        let sent = send(req.addr, head).and_then(|a| Ok(a + send(req.addr + PAGE_SIZE, rest)?));
        match sent {
            Ok(n) => {
                c.wire_bytes.fetch_add(n, Ordering::Relaxed);
                // Lined up with the destination's slow faults by address.
                if let Some((at, unix_us)) = received {
                    trace!(
                        addr = req.addr,
                        received_unix_us = unix_us,
                        answer_us = at.elapsed().as_micros() as u64,
                        "demand request answered"
                    );
                }
            }
            Err(e) => {
                warn!(error = %error_chain(&e), "answering a demand request: closing the lane");
                return;
            }
        }
        c.demand_requests.fetch_add(1, Ordering::Relaxed);
        c.demand_pages.fetch_add(n, Ordering::Relaxed);
        c.last_fault
            .store(req.addr + n * PAGE_SIZE + 1, Ordering::Relaxed);
        c.last_demand_us.store(steady_us(), Ordering::Relaxed);
    }
}

pub(super) fn spawn_push(
    lane: Option<PeerStream>,
    mem: Arc<Memories>,
    lazy: Arc<LazyPages>,
    c: Arc<Counters>,
    opts: &MigrateOptions,
    t_request: Instant,
) -> std::thread::JoinHandle<()> {
    let (rate_mib, order, compress) = (opts.push_rate_mib, opts.push_order, opts.compress);
    crate::postcopy::spawn_named("push-send", move || {
        let Some(s) = lane else { return };
        // The push is background work: faults and the process come first.
        let _ = crate::host::sys::set_thread_nice(crate::net::peer::BULK_NICE);
        wait_for_quiet(&c);
        // Small frames are gathered; a frame larger than the buffer goes
        // to the lane from `buf` itself (sealed from it, not copied first).
        let mut w = std::io::BufWriter::with_capacity(PUSH_GATHER, &s);
        let t0 = Instant::now();
        let mut sent_bytes = 0u64;
        let mut buf = Vec::new();
        let total = lazy.sent.len();
        // Cursor: index into the flat page list, wrapping around until
        // every page is claimed (by this lane or the demand lane).
        let mut i = 0usize;
        let mut hint_seen = 0u64;
        let mut last_sample = Instant::now();
        let completed = 'push: {
            while !lazy.all_claimed() {
                if order == PushOrder::NearFaults {
                    let hint = c.last_fault.load(Ordering::Relaxed);
                    if hint != hint_seen {
                        hint_seen = hint;
                        if let Some(k) = lazy.index(hint - 1).or_else(|| lazy.index_after(hint - 1))
                        {
                            i = k;
                        }
                    }
                }
                if i >= total {
                    i = 0;
                }
                let Some((run_addr, run_count, run_off)) = lazy.run_of(i) else {
                    break 'push false;
                };
                // Claim a stretch of unsent pages within this run; skip the
                // ones already sent.
                let run_end = run_off + run_count as usize;
                while i < run_end && lazy.sent[i].load(Ordering::Relaxed) {
                    i += 1;
                }
                let first = i;
                while i < run_end && i - first < PUSH_CHUNK as usize && lazy.claim(i) {
                    i += 1;
                }
                let n = (i - first) as u64;
                if n == 0 {
                    continue;
                }
                let addr = run_addr + (first - run_off) as u64 * PAGE_SIZE;
                buf.resize((n * PAGE_SIZE) as usize, 0);
                if mem.read_direct(addr, &mut buf).is_err()
                    || failpoints::hit("source.push").is_err()
                {
                    break 'push false;
                }
                match put_lazy_pages(&mut w, addr, &buf, compress) {
                    Ok(n) => {
                        c.wire_bytes.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(_) => break 'push false,
                }
                let pushed = c.pushed_pages.fetch_add(n, Ordering::Relaxed) + n;
                sent_bytes += n * PAGE_SIZE;
                if last_sample.elapsed() >= PUSH_SAMPLE_EVERY {
                    last_sample = Instant::now();
                    if let Ok(mut v) = c.push_samples.lock() {
                        v.push((t_request.elapsed().as_micros() as u64, pushed));
                    }
                }
                if let Some(rate) = rate_mib.filter(|r| *r > 0) {
                    let due =
                        Duration::from_secs_f64(sent_bytes as f64 / (rate as f64 * 1048576.0));
                    if let Some(wait) = due.checked_sub(t0.elapsed()) {
                        let _ = w.flush();
                        std::thread::sleep(wait);
                    }
                }
            }
            true
        };
        // Only a push that went to its end says so; one that failed
        // closes the lane without it (the destination counts it lost).
        if completed {
            let pages = c.pushed_pages.load(Ordering::Relaxed);
            let _ = frame::write_msg(&mut w, &PushDone { pages }).and_then(|()| Ok(w.flush()?));
            drop(w);
            let _ = s.shutdown(Shutdown::Write);
        } else {
            drop(w);
            let _ = s.shutdown(Shutdown::Both);
        }
    })
}
