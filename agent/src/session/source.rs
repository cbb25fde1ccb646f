//! The source's session: pre-flight, freeze, ship the core and the eager
//! set, commit, then serve the rest of the memory (demand lane) and push
//! it (bulk lane) until the destination has every page; then the frozen
//! original is killed.

use std::io::Write;
use std::net::{Shutdown, SocketAddr};
use std::path::Path;

use crate::net::secure::{PeerStream, Security};
use crate::session::ask::{self, Asker, CopyFate};
use crate::session::commit::{FrozenOriginal, Uncommitted};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use migrate_inject::RemoteMem;
use migrate_proto::envelope::Sequencer;
use migrate_proto::frame::{self, MAX_PAGES_PER_FRAME};
use migrate_proto::image::Lineage;
use migrate_proto::image::{Fill, ProcessImage};
use migrate_proto::msg::{
    DestMsg, Lane, LossPolicy, MigrateOptions, Mode, PageRequest, PushDone, PushOrder, Reply,
    Resolution, SourceMsg, SHIPPED_CHUNK,
};
use migrate_proto::record::{Event, LaneBytes, MigrationRecord};
use migrate_proto::PAGE_SIZE;
use tracing::{info, warn};

use crate::capture::dirty::{DirtyError, DirtyTracker};
use crate::capture::dump::{self, Frozen};
use crate::host::access::Caller;
use crate::net::peer::{self, REPLY_TIMEOUT, STALL_TIMEOUT};
use crate::{capture::preflight, error_chain, failpoints, host::procfs, host::sys};

/// Pages per frame when pushing.
const PUSH_CHUNK: u64 = 64;
/// The push's buffer for small frames, bytes.
const PUSH_GATHER: usize = 64 << 10;
/// How often the push records its progress.
const PUSH_SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// How often the caller hears of post-copy's progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// Clock probes at the handshake.
const CLOCK_PROBES: usize = 8;

/// What a source session needs from its agent.
pub struct SourceCtx<'a> {
    /// This host's name.
    pub host: &'a str,
    /// The destination, resolved.
    pub addr: SocketAddr,
    /// The destination as the user named it.
    pub to: &'a str,
    /// Largest file shipped when the destination lacks it, bytes.
    pub ship_limit: u64,
    /// How links to the peer are secured.
    pub sec: &'a Security,
    /// This agent's control socket (where a deputy asks for its lane).
    pub socket: &'a Path,
    /// Originals kept after their destination was lost.
    pub kept: &'a KeptOriginals,
    /// Where local processes started and how often they moved.
    pub lineages: &'a crate::session::lineage::Lineages,
}

fn us(t0: Instant) -> u64 {
    t0.elapsed().as_micros() as u64
}

/// Lazy pages of the image, with a "sent" flag each so every page crosses
/// once on the bulk lane.
struct LazyPages {
    runs: Vec<(u64, u64, usize)>,
    sent: Vec<AtomicBool>,
    /// Pages whose flag is set, by either lane: the push ends at `total`.
    claimed: std::sync::atomic::AtomicUsize,
}

impl LazyPages {
    fn new(image: &ProcessImage) -> LazyPages {
        let mut runs = Vec::new();
        let mut n = 0usize;
        for v in &image.mm.vmas {
            for p in v.pages.iter().filter(|p| p.fill == Fill::Lazy) {
                runs.push((v.start + p.first * PAGE_SIZE, p.count, n));
                n += p.count as usize;
            }
        }
        LazyPages {
            runs,
            sent: (0..n).map(|_| AtomicBool::new(false)).collect(),
            claimed: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn total(&self) -> u64 {
        self.sent.len() as u64
    }

    /// The run holding flat page index `i`: (address, count, first index).
    fn run_of(&self, i: usize) -> Option<(u64, u64, usize)> {
        let k = self.runs.partition_point(|r| r.2 + r.1 as usize <= i);
        self.runs.get(k).copied()
    }

    /// Flat index of the first lazy page above `addr`, if any.
    fn index_after(&self, addr: u64) -> Option<usize> {
        let k = self.runs.partition_point(|(a, _, _)| *a <= addr);
        self.runs.get(k).map(|(_, _, off)| *off)
    }

    fn index(&self, addr: u64) -> Option<usize> {
        // Runs are in address order.
        let k = self
            .runs
            .partition_point(|(a, c, _)| a + c * PAGE_SIZE <= addr);
        let &(a, _, off) = self.runs.get(k)?;
        (addr >= a).then(|| off + ((addr - a) / PAGE_SIZE) as usize)
    }

    /// Whether `[addr, addr + n pages)` lies inside the lazy set.
    fn contains(&self, addr: u64, n: u64) -> bool {
        let k = self
            .runs
            .partition_point(|(a, c, _)| a + c * PAGE_SIZE <= addr);
        self.runs
            .get(k)
            .is_some_and(|(a, c, _)| addr >= *a && addr + n * PAGE_SIZE <= a + c * PAGE_SIZE)
    }

    /// Sets page `i`'s flag; whether this call set it.
    fn claim(&self, i: usize) -> bool {
        let fresh = !self.sent[i].swap(true, Ordering::Relaxed);
        if fresh {
            self.claimed.fetch_add(1, Ordering::Relaxed);
        }
        fresh
    }

    /// Whether every page has been claimed by one lane or the other.
    fn all_claimed(&self) -> bool {
        self.claimed.load(Ordering::Relaxed) == self.sent.len()
    }

    fn mark(&self, addr: u64, n: u64) {
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

#[derive(Default)]
struct Counters {
    demand_pages: AtomicU64,
    demand_requests: AtomicU64,
    pushed_pages: AtomicU64,
    /// Address of the latest demand request + 1 (0: none yet), for the
    /// push order that follows faults.
    last_fault: AtomicU64,
    /// (microseconds since the request, pages pushed), sampled.
    push_samples: std::sync::Mutex<Vec<(u64, u64)>>,
    /// Page bytes put on the demand and bulk lanes (compressed or not).
    wire_bytes: AtomicU64,
}

/// Signals for the destination to deliver at the commit: those that
/// stopped a thread while it was being seized, and any that became
/// pending after the queues were copied into the image (without their
/// siginfo: sent plainly).
fn pending_signals(frozen: &Frozen) -> Vec<i32> {
    let mut out: Vec<i32> = Vec::new();
    for t in &frozen.tasks {
        for &s in t.pending_signals() {
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    let in_image: Vec<i32> = frozen
        .image
        .queued_signals
        .iter()
        .map(|q| q.signo())
        .collect();
    let mut bits = 0u64;
    for t in &frozen.tasks {
        if let Ok(st) = procfs::status(t.tid()) {
            bits |= procfs::status_hex(&st, "SigPnd") | procfs::status_hex(&st, "ShdPnd");
        }
    }
    for s in 1..=64 {
        if bits & (1u64 << (s - 1)) != 0 && !out.contains(&s) && !in_image.contains(&s) {
            out.push(s);
        }
    }
    out
}

fn refused(reasons: Vec<String>) -> Reply {
    Reply::Refused { reasons }
}

fn failed(error: String, resumed_original: bool) -> Reply {
    Reply::Failed {
        error,
        resumed_original,
        record: None,
    }
}

/// Migrates `pid` for `caller`, whom the control socket has authorized
/// ([`crate::host::access::authorize`]) before claiming the pid; pre-flight
/// checks it again, and again once the process is frozen. `progress`
/// receives intermediate replies (`Resumed`); the final reply is returned.
/// A cooperating process that stays here (refused, or resumed after a
/// failure) is told so (not after an exec: its lineage forgets the shim).
pub fn migrate(
    cx: &SourceCtx<'_>,
    caller: &Caller,
    pid: i32,
    opts: &MigrateOptions,
    progress: &mut dyn FnMut(&Reply),
) -> Reply {
    let lineage = cx.lineages.get(pid, cx.host);
    // A panic unwinds the session alone: its owners' drops undo what it
    // holds (before the commit the original resumes; after it the original
    // is killed), and the caller hears what became of the process.
    let committed = std::cell::Cell::new(None);
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        migrate_process(cx, caller, pid, opts, &lineage, &committed, progress)
    }));
    let reply = match run {
        Ok(reply) => reply,
        Err(panic) => after_panic(cx, pid, opts, committed.get(), &panic_text(&*panic)),
    };
    let stayed = match &reply {
        Reply::Refused { .. } => true,
        Reply::Failed {
            resumed_original, ..
        } => *resumed_original,
        _ => false,
    };
    if let (Some(addr), true) = (lineage.shim, stayed) {
        crate::capture::coop::tell(pid, addr, migrate_proto::shim::Phase::Stayed);
    }
    reply
}

/// What a panic said.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

/// The session of migration `pid` panicked, after the commit if
/// `committed` holds the migration's id and the copy's pid: its original
/// was killed by then, so what became of the copy is asked.
fn after_panic(
    cx: &SourceCtx<'_>,
    pid: i32,
    opts: &MigrateOptions,
    committed: Option<(u64, i32)>,
    what: &str,
) -> Reply {
    tracing::error!(
        pid,
        committed = committed.is_some(),
        "the migration's thread panicked: {what}"
    );
    let Some((id, new_pid)) = committed else {
        return failed(
            format!("internal error before the commit ({what}); the original was let run"),
            true,
        );
    };
    let asker = Asker {
        addr: cx.addr,
        to: cx.to,
        me: cx.host,
        sec: cx.sec,
    };
    let lost = |copy: String| Reply::Failed {
        error: format!(
            "internal error after the commit ({what}); the original (pid {pid}) was killed: {copy}"
        ),
        resumed_original: false,
        record: None,
    };
    match asker.learn(id, Instant::now() + ask::SETTLED_WITHIN) {
        CopyFate::Runs => {
            cx.lineages.forget(pid);
            crate::session::deputy::moved(pid, cx.addr, id);
            Reply::Complete(MigrationRecord {
                id,
                mode: opts.mode.name().to_string(),
                options: opts.clone(),
                pid,
                new_pid,
                to: cx.to.to_string(),
                outcome: format!(
                    "complete: the session here failed after the commit ({what}); {} said its copy runs with every page",
                    cx.to
                ),
                ..Default::default()
            })
        }
        CopyFate::Gone => lost(format!(
            "its copy on {} is gone: the process is lost",
            cx.to
        )),
        CopyFate::Unknown(why) => lost(format!("its copy on {} may run on ({why})", cx.to)),
    }
}

/// The descriptors whose files travel with the image, from the
/// destination's verdict: those deleted here, missing there or a different
/// file there (shipped as a private copy: the second member), each and all
/// together within `limit` bytes; or why not, a line each.
fn files_to_ship(
    needs: &[migrate_proto::msg::FileNeed],
    missing: &[String],
    different: &[String],
    limit: u64,
) -> Result<Vec<(i32, bool)>, Vec<String>> {
    let mut ship = Vec::new();
    let mut too_big = Vec::new();
    for n in needs
        .iter()
        .filter(|n| n.deleted || missing.contains(&n.path) || different.contains(&n.path))
    {
        let private = n.deleted || different.contains(&n.path);
        let Some((fd, size)) = n.ship else { continue };
        if size > limit {
            too_big.push(format!(
                "fd {fd}: {} ({} bytes) is {} and over the shipping limit of {} bytes",
                n.path,
                size,
                if n.deleted {
                    "deleted"
                } else if private {
                    "a different file on the destination"
                } else {
                    "missing on the destination"
                },
                limit
            ));
        } else if !ship.iter().any(|(f, _)| *f == fd) {
            ship.push((fd, private));
        }
    }
    // All of them together within the same budget: they travel in the
    // image, in the freeze.
    let total: u64 = needs
        .iter()
        .filter_map(|n| n.ship)
        .filter(|(fd, _)| ship.iter().any(|(f, _)| f == fd))
        .map(|(_, size)| size)
        .sum();
    if too_big.is_empty() && total > limit {
        too_big.push(format!(
            "the files to ship take {total} bytes together, over the shipping limit of {limit} bytes"
        ));
    }
    if too_big.is_empty() {
        Ok(ship)
    } else {
        Err(too_big)
    }
}

/// The parts of a source session every state carries: nothing in them
/// needs undoing.
struct Session<'s, 'c> {
    cx: &'s SourceCtx<'c>,
    caller: &'s Caller,
    pid: i32,
    id: u64,
    opts: &'s MigrateOptions,
    lineage: &'s Lineage,
    coop: dump::Cooperation,
    /// Set once a panic must be answered as after the commit.
    committed: &'s std::cell::Cell<Option<(u64, i32)>>,
    progress: &'s mut dyn FnMut(&Reply),
    t0: Instant,
    rec: MigrationRecord,
}

/// Where a source session is ([`crate::session::commit`] states the rule). Each
/// state owns what leaving it other than into the next must undo, and
/// undoes it when dropped; [`Session::step`] moves to the next one or
/// ends with the caller's answer.
enum State {
    /// The destination accepted the files and the lanes are open; nothing
    /// is frozen. Dropped: the destination hears `Abort`.
    Offered(Offered),
    /// The original is frozen and dumped. Dropped: the destination hears
    /// `Abort`, then the original runs on.
    Frozen(FrozenState),
    /// The destination rebuilt the copy and waits for the commit. Dropped:
    /// as `Frozen`.
    Ready(ReadyState),
    /// The original is owned as committed: it never runs again unless its
    /// copy is known gone. Dropped: the original is killed.
    Committed(Box<CommittedState>),
    /// Over: the caller's answer.
    Over(Reply),
}

/// See [`State::Offered`].
struct Offered {
    abort: Uncommitted,
    ctl: PeerStream,
    seq: Arc<Sequencer>,
    demand: PeerStream,
    bulk: PeerStream,
    /// Descriptors whose files travel with the image, and whether each
    /// becomes a private copy.
    ship: Vec<(i32, bool)>,
    /// Pre-copy's write tracking, if any.
    tracker: Option<DirtyTracker>,
}

/// See [`State::Frozen`]. Fields drop in order: the abort, the write
/// tracking, then the original, which runs on.
struct FrozenState {
    abort: Uncommitted,
    ctl: PeerStream,
    seq: Arc<Sequencer>,
    demand: PeerStream,
    bulk: PeerStream,
    tracker: Option<DirtyTracker>,
    /// Forwarded standard streams: fd, our end, whether it is an output,
    /// and its lane.
    streams: Vec<(i32, std::os::fd::OwnedFd, bool, PeerStream)>,
    lazy: Arc<LazyPages>,
    t_freeze: Instant,
    frozen: Frozen,
}

/// See [`State::Ready`].
struct ReadyState {
    frozen: FrozenState,
    new_pid: i32,
}

/// See [`State::Committed`].
struct CommittedState {
    ctl: PeerStream,
    seq: Arc<Sequencer>,
    demand: PeerStream,
    bulk: PeerStream,
    tracker: Option<DirtyTracker>,
    streams: Vec<(i32, std::os::fd::OwnedFd, bool, PeerStream)>,
    lazy: Arc<LazyPages>,
    t_freeze: Instant,
    mem: Arc<RemoteMem>,
    counters: Arc<Counters>,
    servers: Vec<std::thread::JoinHandle<()>>,
    push: bool,
    frozen_terminal: bool,
    signals: Vec<i32>,
    task: FrozenOriginal,
}

fn migrate_process(
    cx: &SourceCtx<'_>,
    caller: &Caller,
    pid: i32,
    opts: &MigrateOptions,
    lineage: &Lineage,
    committed: &std::cell::Cell<Option<(u64, i32)>>,
    progress: &mut dyn FnMut(&Reply),
) -> Reply {
    let mut s = Session {
        cx,
        caller,
        pid,
        id: migration_id(pid),
        opts,
        lineage,
        coop: dump::Cooperation {
            shim: lineage.shim,
            tcp: lineage.tcp,
        },
        committed,
        progress,
        t0: Instant::now(),
        rec: MigrationRecord::default(),
    };
    let mut state = s.offer();
    loop {
        state = match state {
            State::Over(reply) => return reply,
            state => s.step(state),
        };
    }
}

impl Session<'_, '_> {
    /// The one step function: from each state to the next, or to the end.
    fn step(&mut self, state: State) -> State {
        match state {
            State::Offered(o) => self.freeze(o),
            State::Frozen(f) => self.ship(f),
            State::Ready(r) => self.commit(r),
            State::Committed(c) => State::Over(self.finish(*c)),
            State::Over(reply) => State::Over(reply),
        }
    }

    fn event(&mut self, what: &str) {
        self.rec.events.push(Event {
            at_us: us(self.t0) as i64,
            host: self.cx.host.to_string(),
            what: what.to_string(),
        })
    }

    /// Pre-flight, the destination's file check, the clock, the lanes and
    /// pre-copy: everything while the process runs.
    fn offer(&mut self) -> State {
        let (cx, pid, id, opts) = (self.cx, self.pid, self.id, self.opts);
        let started_unix_us = crate::unix_us();
        let insp = match preflight::inspect(pid, self.caller, sys::getpid(), false, self.coop.tcp) {
            Ok(i) => i,
            Err(r) => return State::Over(refused(r.0)),
        };
        let unreachable = |e: peer::PeerError| refused(vec![format!("host {}: {e}", cx.to)]);
        let seq = Arc::new(Sequencer::new(id));
        let (mut ctl, peer_name) = match peer::connect(cx.addr, cx.host, Lane::Control, cx.sec) {
            Ok(x) => x,
            Err(e) => return State::Over(unreachable(e)),
        };
        let _ = ctl.set_read_timeout(Some(REPLY_TIMEOUT));
        let _ = ctl.set_write_timeout(Some(STALL_TIMEOUT));
        let verdict = seq
            .send(
                &mut ctl,
                &SourceMsg::FileCheck {
                    pid,
                    who: insp.who.clone(),
                    needs: insp.needs.clone(),
                },
            )
            .and_then(|_| seq.recv::<DestMsg>(&mut ctl));
        let ship = match verdict {
            Ok(DestMsg::FileVerdict {
                refused: v,
                missing,
                different,
            }) if v.is_empty() => {
                match files_to_ship(&insp.needs, &missing, &different, cx.ship_limit) {
                    Ok(ship) => ship,
                    Err(too_big) => return State::Over(refused(too_big)),
                }
            }
            Ok(DestMsg::FileVerdict { refused: v, .. }) => return State::Over(refused(v)),
            Ok(other) => {
                return State::Over(refused(vec![format!(
                    "{}: unexpected answer {other:?}",
                    cx.to
                )]))
            }
            Err(e) => {
                return State::Over(refused(vec![format!(
                    "host {}: {}",
                    cx.to,
                    error_chain(&e)
                )]))
            }
        };
        // From here the destination waits for the core: leaving calls it off.
        let mut abort = Uncommitted::arm(&ctl, &seq);
        if let Err(e) = failpoints::hit("source.after-file-check") {
            abort.because(e.to_string());
            return State::Over(refused(vec![format!("host {}: {e}", cx.to)]));
        }
        let clock = match sync_clock(&mut ctl, &seq) {
            Ok(c) => c,
            Err(e) => {
                return State::Over(refused(vec![format!(
                    "host {}: {}",
                    cx.to,
                    error_chain(&e)
                )]))
            }
        };
        let lanes = peer::connect(cx.addr, cx.host, Lane::Demand(id), cx.sec).and_then(|(d, _)| {
            Ok((
                d,
                peer::connect(cx.addr, cx.host, Lane::Bulk(id), cx.sec)?.0,
            ))
        });
        let (demand, bulk) = match lanes {
            Ok(x) => x,
            Err(e) => return State::Over(unreachable(e)),
        };
        if let Err(e) = bulk.set_send_buffer(peer::BULK_SNDBUF) {
            warn!(error = %e, "bulk lane's send buffer not capped: faults may wait behind the push");
        }
        self.rec = MigrationRecord {
            id,
            mode: opts.mode.name().to_string(),
            options: opts.clone(),
            pid,
            to: peer_name,
            started_unix_us,
            clock_offset_us: clock.0,
            clock_uncertainty_us: clock.1,
            ..Default::default()
        };
        self.event("request");

        // Pre-copy, while the process runs.
        let mut tracker = None;
        if opts.mode.precopies() {
            self.rec.timeline.precopy = us(self.t0);
            self.event("pre-copy");
            match precopy(&mut ctl, &seq, pid, opts, &mut self.rec) {
                Ok(t) => tracker = Some(t),
                Err(PreCopyError::Refused(why)) => {
                    abort.because(why.clone());
                    return State::Over(refused(vec![why]));
                }
                Err(PreCopyError::Lost(why)) => {
                    return State::Over(refused(vec![format!("host {}: {why}", cx.to)]));
                }
            }
        }
        State::Offered(Offered {
            abort,
            ctl,
            seq,
            demand,
            bulk,
            ship,
            tracker,
        })
    }

    /// Freezes and dumps the original; opens the lanes of its forwarded
    /// standard streams.
    fn freeze(&mut self, o: Offered) -> State {
        let (cx, pid, id) = (self.cx, self.pid, self.id);
        let Offered {
            mut abort,
            ctl,
            seq,
            demand,
            bulk,
            ship,
            mut tracker,
        } = o;
        // A cooperating process runs its freeze callbacks first.
        if let Some(addr) = self.coop.shim {
            match crate::capture::coop::before_freeze(pid, addr) {
                crate::capture::coop::FreezeNotice::Done => self.event("freeze callbacks done"),
                crate::capture::coop::FreezeNotice::TimedOut => {
                    self.event("freeze callbacks timed out")
                }
                crate::capture::coop::FreezeNotice::NotListening => {}
            }
        }
        if let Err(e) = failpoints::hit("source.before-freeze") {
            abort.because(e.to_string());
            return State::Over(failed(e.to_string(), true));
        }
        let scouted = dump::Scouted::take(pid);
        // Freeze. From here until the commit, leaving resumes the original.
        let t_freeze = Instant::now();
        self.rec.timeline.freeze = us(self.t0);
        self.event("freeze");
        let dumped = dump::freeze_and_dump(
            pid,
            self.caller,
            self.opts,
            &ship,
            tracker.as_mut(),
            scouted,
            &self.coop,
        );
        let mut frozen = match dumped {
            Ok(f) => f,
            Err(dump::DumpError::Refused(r)) => {
                abort.because("refused after freeze");
                return State::Over(refused(r.0));
            }
            Err(e) => {
                abort.because(e.to_string());
                return State::Over(failed(error_chain(&e), true));
            }
        };
        self.rec.timeline.dump = us(self.t0);
        self.event("core dumped");
        // A process whose deputy this host serves takes the deputy along.
        frozen.image.deputy = crate::session::deputy::has_deputy(pid);
        frozen.image.lineage = self.lineage.clone();
        let lazy = Arc::new(LazyPages::new(&frozen.image));
        let mut f = FrozenState {
            abort,
            ctl,
            seq,
            demand,
            bulk,
            tracker,
            streams: Vec::new(),
            lazy,
            t_freeze,
            frozen,
        };
        // Forwarded standard streams: our own copies of the original's
        // ends, and a lane to the destination for each.
        let forwarded: Vec<(i32, bool)> = f
            .frozen
            .image
            .fds
            .iter()
            .filter_map(|e| match e.kind {
                migrate_proto::image::FdKind::Forwarded { output, .. } => Some((e.fd, output)),
                _ => None,
            })
            .collect();
        for (fd, output) in forwarded {
            let end = sys::pidfd_open(pid).and_then(|p| sys::pidfd_getfd(&p, fd));
            let lane = peer::connect(cx.addr, cx.host, Lane::Stdio(id, fd), cx.sec);
            match (end, lane) {
                (Ok(end), Ok((lane, _))) => f.streams.push((fd, end, output, lane)),
                (Err(err), _) => {
                    f.abort.because("stdio");
                    return State::Over(failed(
                        format!("taking fd {fd} of the original: {err}"),
                        true,
                    ));
                }
                (_, Err(err)) => {
                    f.abort.because("stdio");
                    return State::Over(failed(
                        format!("opening the lane for fd {fd}: {}", error_chain(&err)),
                        true,
                    ));
                }
            }
        }
        self.rec.lazy_pages = f.lazy.total();
        self.rec.stored_pages = f
            .frozen
            .image
            .mm
            .vmas
            .iter()
            .flat_map(|v| &v.pages)
            .filter(|p| p.fill == Fill::Stored)
            .map(|p| p.count)
            .sum();
        State::Frozen(f)
    }

    /// Ships the core and the eager pages, and waits until the destination
    /// has rebuilt the copy.
    fn ship(&mut self, mut f: FrozenState) -> State {
        let cx = self.cx;
        let shipped = failpoints::hit("source.before-core")
            .map_err(|e| e.to_string())
            .and_then(|()| {
                ship_core(
                    &mut f.ctl,
                    &f.seq,
                    self.id,
                    &f.frozen,
                    self.opts,
                    &mut self.rec,
                )
            })
            .and_then(|()| failpoints::hit("source.after-core").map_err(|e| e.to_string()));
        let ready = shipped.and_then(|_| match f.seq.recv::<DestMsg>(&mut f.ctl) {
            Ok(DestMsg::Ready { pid }) => Ok(pid),
            Ok(DestMsg::Failed { error, .. }) => {
                Err(format!("{} could not rebuild the process: {error}", cx.to))
            }
            Ok(other) => Err(format!("unexpected answer from {}: {other:?}", cx.to)),
            Err(e) => Err(format!("lost {} before commit: {}", cx.to, frame_error(&e))),
        });
        let ready = ready.and_then(|p| {
            failpoints::hit("source.after-ready")
                .map_err(|e| e.to_string())
                .map(|()| p)
        });
        match ready {
            Ok(new_pid) => State::Ready(ReadyState { frozen: f, new_pid }),
            Err(e) => {
                // Dropped: the destination hears why, the original runs on.
                f.abort.because(e.clone());
                State::Over(failed(e, true))
            }
        }
    }

    /// The commit: from here the original never runs again unless its copy
    /// is known gone.
    fn commit(&mut self, r: ReadyState) -> State {
        let (pid, new_pid) = (self.pid, r.new_pid);
        self.rec.new_pid = new_pid;
        self.rec.timeline.restored = us(self.t0);
        self.event("commit");
        let FrozenState {
            abort,
            ctl,
            seq,
            demand,
            bulk,
            tracker,
            streams,
            lazy,
            t_freeze,
            frozen,
        } = r.frozen;
        let signals = pending_signals(&frozen);
        let frozen_terminal = frozen.image.fds.iter().any(|e| {
            matches!(
                e.kind,
                migrate_proto::image::FdKind::Forwarded { terminal: true, .. }
            )
        });
        let Frozen {
            tasks,
            mem,
            to_reset,
            ..
        } = frozen;
        // From here a dropped original is killed: a panic is answered as
        // after the commit.
        self.committed.set(Some((self.id, new_pid)));
        let mut task = FrozenOriginal(tasks);
        // From the commit on, the original must never run again: if this
        // agent dies, the kernel kills it rather than letting it go on
        // beside its copy.
        for t in &mut task.0 {
            if let Err(e) = t.set_options(libc::PTRACE_O_TRACESYSGOOD | libc::PTRACE_O_EXITKILL) {
                warn!(error = %error_chain(&e), "setting PTRACE_O_EXITKILL on the original");
            }
        }
        abort.disarm();
        let mem = Arc::new(mem);
        let counters = Arc::new(Counters::default());
        let mut servers = Vec::new();
        // Faults are served from the resume on; the push starts once the
        // process runs there, so that it takes no CPU from the resume itself.
        let push = self.rec.lazy_pages > 0 && self.opts.push_rate_mib != Some(0);
        if self.rec.lazy_pages > 0 {
            servers.push(spawn_demand(
                demand.try_clone().ok(),
                mem.clone(),
                lazy.clone(),
                counters.clone(),
                self.opts.compress,
            ));
        }
        if !push {
            if let Ok(mut b) = bulk.try_clone() {
                let _ = frame::write_msg(&mut b, &PushDone { pages: 0 });
            }
            let _ = bulk.shutdown(Shutdown::Write);
        }
        // `--tcp close`: the remote ends see their connections reset as the
        // copy takes over, not when the original is gone.
        for conn in &to_reset {
            if let Err(e) = sys::reset_connection(conn) {
                warn!(error = %e, "resetting a connection of the original");
            }
        }
        drop(to_reset);
        info!(id = self.id, pid, new_pid, "committing");
        State::Committed(Box::new(CommittedState {
            ctl,
            seq,
            demand,
            bulk,
            tracker,
            streams,
            lazy,
            t_freeze,
            mem,
            counters,
            servers,
            push,
            frozen_terminal,
            signals,
            task,
        }))
    }

    /// Sends the commit, then serves post-copy until the destination has
    /// every page (complete: the original is killed, or becomes the
    /// deputy) or is lost ([`after_loss`]).
    fn finish(&mut self, c: CommittedState) -> Reply {
        let (cx, pid, id, opts) = (self.cx, self.pid, self.id, self.opts);
        let CommittedState {
            mut ctl,
            seq,
            demand,
            bulk,
            mut tracker,
            streams,
            lazy,
            t_freeze,
            mem,
            counters,
            mut servers,
            push,
            frozen_terminal,
            signals,
            task,
        } = c;
        let t0 = self.t0;
        let started_unix_us = self.rec.started_unix_us;
        let new_pid = self.rec.new_pid;
        let uid = self.caller.uid;
        let mut rec = std::mem::take(&mut self.rec);
        let progress = &mut *self.progress;
        let event = |rec: &mut MigrationRecord, what: &str| {
            rec.events.push(Event {
                at_us: us(t0) as i64,
                host: cx.host.to_string(),
                what: what.to_string(),
            })
        };
        let lost = |rec: &mut MigrationRecord, what: String| {
            rec.outcome = what.clone();
            Reply::Failed {
                error: format!("{what}; the original (pid {pid}) was killed: the process is lost unless it runs on {}", cx.to),
                resumed_original: false,
                record: Some(Box::new(rec.clone())),
            }
        };
        let committed = seq
            .send(&mut ctl, &SourceMsg::Commit { id, signals })
            .and_then(|()| {
                // As if the lane broke once the commit was sent.
                failpoints::hit("source.after-commit-sent")
                    .map_err(|e| frame::FrameError::Io(std::io::Error::other(e)))
            });
        let early = match committed {
            Err(e) => Some((
                format!("lost {} at commit: {}", cx.to, error_chain(&e)),
                false,
            )),
            Ok(()) => {
                let _ = ctl.set_read_timeout(Some(REPLY_TIMEOUT));
                match seq.recv::<DestMsg>(&mut ctl) {
                    Ok(DestMsg::Resumed) => None,
                    Ok(DestMsg::Failed { error, ran: false }) => {
                        // The copy never ran: the commit is void, the original
                        // resumes as after any failure before it.
                        let _ = demand.shutdown(Shutdown::Both);
                        let _ = bulk.shutdown(Shutdown::Both);
                        task.resume();
                        info!(id, pid, "the copy never ran: the original runs on here");
                        return failed(
                            format!("{} could not resume the process: {error}", cx.to),
                            true,
                        );
                    }
                    Ok(DestMsg::Failed { error, ran: true }) => Some((
                        format!("{} could not resume the process: {error}", cx.to),
                        true,
                    )),
                    Ok(other) => Some((
                        format!("{} did not resume the process: {other:?}", cx.to),
                        false,
                    )),
                    Err(e) => Some((
                        format!("lost {} after commit: {}", cx.to, error_chain(&e)),
                        false,
                    )),
                }
            }
        };
        if let Some((what, copy_gone)) = early {
            let _ = ctl.shutdown(Shutdown::Both);
            let _ = demand.shutdown(Shutdown::Both);
            let _ = bulk.shutdown(Shutdown::Both);
            let loss = Loss {
                what,
                copy_gone,
                at: Instant::now(),
            };
            return after_loss(cx, uid, id, task, loss, opts.on_loss, rec, progress);
        }
        if failpoints::hit("source.after-resumed").is_err() {
            // As if the lane broke: post-copy's end is never heard.
            let _ = ctl.shutdown(Shutdown::Both);
        }
        rec.timeline.resume = us(t0);
        event(&mut rec, "resume acknowledged");
        if push {
            servers.push(spawn_push(
                bulk.try_clone().ok(),
                mem.clone(),
                lazy.clone(),
                counters.clone(),
                opts,
                t0,
            ));
        }
        // Closing the write-tracking userfaultfd clears the protection of every
        // page it covers (tens of ms for GiBs): done now, off the downtime, and
        // on another thread. (On the paths that resume the original it is
        // dropped on return, unregistering before the original runs on.)
        if let Some(t) = tracker.take() {
            std::thread::spawn(move || drop(t));
        }
        rec.downtime_us = t_freeze.elapsed().as_micros() as u64;
        rec.outcome = "resumed".into();
        info!(
            id,
            pid,
            new_pid,
            downtime_us = rec.downtime_us,
            "resumed on {}",
            cx.to
        );
        // From here this host is the process's home for its standard streams.
        for (fd, end, output, lane) in streams {
            if output {
                crate::net::relay::spawn_from_peer(fd, lane, end);
            } else {
                crate::net::relay::spawn_to_peer(fd, end, lane);
            }
        }
        progress(&Reply::Resumed(rec.clone()));

        // Post-copy: no bound on how long the process takes to touch its pages,
        // but both agents beat every second and each counts the other gone
        // after PEER_SILENCE without a word. The end is awaited on another
        // thread; meanwhile the caller hears how far it got.
        let beat = ctl
            .try_clone()
            .ok()
            .map(|l| peer::Heartbeat::start(l, seq.clone(), SourceMsg::Heartbeat));
        let _ = ctl.set_read_timeout(Some(peer::PEER_SILENCE));
        let (end_tx, end_rx) = std::sync::mpsc::channel();
        let mut end_reader = ctl.try_clone();
        let end_seq = seq.clone();
        std::thread::spawn(move || {
            let end = match end_reader.as_mut() {
                Ok(s) => loop {
                    match end_seq.recv::<DestMsg>(s) {
                        Ok(DestMsg::Heartbeat) => continue,
                        Err(e) if peer::is_timeout(&e) => {
                            break Err(frame::FrameError::Io(std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                format!("no word for {} s", peer::PEER_SILENCE.as_secs()),
                            )))
                        }
                        other => break other,
                    }
                },
                Err(e) => Err(frame::FrameError::Io(std::io::Error::new(
                    e.kind(),
                    e.to_string(),
                ))),
            };
            let _ = end_tx.send(end);
        });
        let end = loop {
            match end_rx.recv_timeout(PROGRESS_EVERY) {
                Ok(end) => break end,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => progress(&Reply::Progress {
                    moved_pages: counters.demand_pages.load(Ordering::Relaxed)
                        + counters.pushed_pages.load(Ordering::Relaxed),
                    total_pages: rec.lazy_pages,
                    elapsed_us: us(t0),
                }),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    break Err(frame::FrameError::Io(std::io::Error::other(
                        "the control lane reader ended",
                    )))
                }
            }
        };
        // Silence from here on: a destination that is alive but cut off
        // counts us gone and kills its copy.
        drop(beat);
        let lost_at = Instant::now();
        let complete = matches!(end, Ok(DestMsg::Complete { .. }));
        let mut kept = None;
        if complete && frozen_terminal {
            // A terminal's session leader waits for this pid: the original
            // becomes the deputy that stands in for the process here.
            crate::session::deputy::made(pid);
            if let Err(e) = deputize(task, &mem, cx, id) {
                warn!(error = %e, "the deputy could not be made: the original was killed");
            }
        } else if complete {
            // Its deputy (if this host served one) now talks to the new host.
            crate::session::deputy::moved(pid, cx.addr, id);
            task.kill();
        } else {
            kept = Some(task);
        }
        let _ = demand.shutdown(Shutdown::Both);
        let _ = bulk.shutdown(Shutdown::Both);
        for s in servers {
            let _ = s.join();
        }
        rec.push_progress = std::mem::take(
            &mut *counters
                .push_samples
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        rec.page_wire_bytes += counters.wire_bytes.load(Ordering::Relaxed);
        rec.demand_pages = counters.demand_pages.load(Ordering::Relaxed);
        rec.demand_requests = counters.demand_requests.load(Ordering::Relaxed);
        rec.pushed_pages = counters.pushed_pages.load(Ordering::Relaxed);
        rec.lanes = LaneBytes {
            precopy: rec.precopy_rounds.iter().sum::<u64>() * PAGE_SIZE,
            eager: rec.eager_pages * PAGE_SIZE,
            demand: rec.demand_pages * PAGE_SIZE,
            bulk: rec.pushed_pages * PAGE_SIZE,
        };
        match end {
            Ok(DestMsg::Complete {
                discarded_pages,
                faults,
                events,
            }) => {
                for (what, at) in events {
                    rec.events.push(Event {
                        at_us: at as i64 - rec.clock_offset_us - started_unix_us as i64,
                        host: rec.to.clone(),
                        what,
                    });
                }
                if failpoints::hit("source.after-complete").is_err() {
                    // As if the lane broke: `Done` is not sent.
                    let _ = ctl.shutdown(Shutdown::Both);
                }
                event(&mut rec, "original released");
                cx.lineages.forget(pid);
                rec.events.sort_by_key(|e| e.at_us);
                let _ = seq.send(&mut ctl, &SourceMsg::Done);
                rec.discarded_pages = discarded_pages;
                rec.faults = faults;
                rec.timeline.complete = us(t0);
                rec.residual_us = rec.timeline.complete - rec.timeline.resume;
                rec.outcome = "complete".into();
                info!(id, pid, new_pid, residual_us = rec.residual_us, "complete");
                Reply::Complete(rec)
            }
            other => {
                // The destination said its copy is gone, or it went silent.
                let (what, copy_gone) = match other {
                    Ok(DestMsg::Failed { error, .. }) => {
                        (format!("post-copy failed on {}: {error}", cx.to), true)
                    }
                    Ok(m) => (format!("unexpected answer from {}: {m:?}", cx.to), false),
                    Err(e) => (
                        format!("lost {} during post-copy: {}", cx.to, error_chain(&e)),
                        false,
                    ),
                };
                let _ = ctl.shutdown(Shutdown::Both);
                let Some(task) = kept else {
                    return lost(&mut rec, what);
                };
                let loss = Loss {
                    what,
                    copy_gone,
                    at: lost_at,
                };
                after_loss(cx, uid, id, task, loss, opts.on_loss, rec, progress)
            }
        }
    }
}

/// How the destination was lost after the commit.
struct Loss {
    what: String,
    /// The destination said its copy is gone (killed).
    copy_gone: bool,
    /// When this side stopped beating.
    at: Instant,
}

/// The destination was lost after the commit. What became of the copy is
/// learned first (the destination said, or is asked): a copy that runs
/// with every page completes the migration, and the original is killed;
/// otherwise the original, frozen here since before its copy ran, is
/// killed, resumed or kept as `policy` says, resumed only once its copy is
/// known gone, and kept when that cannot be learned.
#[allow(clippy::too_many_arguments)]
fn after_loss(
    cx: &SourceCtx<'_>,
    uid: u32,
    id: u64,
    task: FrozenOriginal,
    loss: Loss,
    policy: LossPolicy,
    mut rec: MigrationRecord,
    progress: &mut dyn FnMut(&Reply),
) -> Reply {
    let pid = rec.pid;
    let asker = Asker {
        addr: cx.addr,
        to: cx.to,
        me: cx.host,
        sec: cx.sec,
    };
    let fate = if loss.copy_gone {
        CopyFate::Gone
    } else {
        // Killing needs no answer: one question, to report truly.
        let until = match policy {
            LossPolicy::Kill => Instant::now(),
            LossPolicy::Keep | LossPolicy::Resume => loss.at + ask::SETTLED_WITHIN,
        };
        asker.learn(id, until)
    };
    info!(id, pid, ?fate, "{}", loss.what);
    let failed = |rec: &mut MigrationRecord, outcome: String, error: String, resumed: bool| {
        rec.outcome = outcome;
        Reply::Failed {
            error,
            resumed_original: resumed,
            record: Some(Box::new(rec.clone())),
        }
    };
    let resume = |task: FrozenOriginal, rec: &mut MigrationRecord| {
        task.resume();
        info!(id, pid, "the original runs here again");
        failed(
            rec,
            format!("{}; original resumed", loss.what),
            format!(
                "{}; its copy on {} is gone and the original runs here again",
                loss.what, cx.to
            ),
            true,
        )
    };
    let kill = |task: FrozenOriginal, rec: &mut MigrationRecord, how: &str| {
        task.kill();
        failed(
            rec,
            format!("{}; original killed{how}", loss.what),
            format!(
                "{}; the original (pid {pid}) was killed{how}: the process is lost unless it runs on {}",
                loss.what, cx.to
            ),
            false,
        )
    };
    match (policy, fate) {
        (_, CopyFate::Runs) => {
            // The process lives there: the migration is complete.
            task.kill();
            cx.lineages.forget(pid);
            crate::session::deputy::moved(pid, cx.addr, id);
            rec.outcome = format!(
                "complete: {}; {} then said its copy runs with every page",
                loss.what, cx.to
            );
            info!(id, pid, "{}", rec.outcome);
            Reply::Complete(rec)
        }
        (LossPolicy::Kill, _) => kill(task, &mut rec, ""),
        (LossPolicy::Resume, CopyFate::Gone) => resume(task, &mut rec),
        (LossPolicy::Keep | LossPolicy::Resume, fate) => {
            let why = match &fate {
                CopyFate::Unknown(why) => format!(
                    "; whether its copy on {} is gone cannot be learned ({why})",
                    cx.to
                ),
                _ => format!("; its copy on {} is gone", cx.to),
            };
            let decisions = cx.kept.keep(id, uid);
            warn!(id, pid, "{}{why}: the original is kept frozen", loss.what);
            progress(&failed(
                &mut rec,
                format!("{}; original kept frozen", loss.what),
                format!(
                    "{}{why}: the original (pid {pid}) is kept frozen here: `migrate resolve {id:016x} --kill` \
                     ends it, `migrate resolve {id:016x} --resume` runs it here again once {} says its copy is gone",
                    loss.what, cx.to
                ),
                false,
            ));
            // Until someone decides (or this agent dies, and the original
            // with it: PTRACE_O_EXITKILL).
            let known_gone = fate == CopyFate::Gone;
            let reply = loop {
                let (action, answer) = match decisions.recv() {
                    Ok(d) => d,
                    Err(_) => (Resolution::Kill, std::sync::mpsc::channel().0),
                };
                match action {
                    Resolution::Kill => {
                        let _ =
                            answer.send(Ok(format!("pid {pid} (migration {id:016x}) was killed")));
                        break kill(task, &mut rec, " on request");
                    }
                    Resolution::Resume => {
                        if !known_gone {
                            match asker.learn(id, Instant::now()) {
                                CopyFate::Gone => {}
                                CopyFate::Runs => {
                                    let _ = answer.send(Err(format!(
                                        "{} says the copy of migration {id:016x} runs there with every \
                                         page: resuming the original would run the process twice; \
                                         `migrate resolve {id:016x} --kill` ends the original",
                                        cx.to
                                    )));
                                    continue;
                                }
                                CopyFate::Unknown(why) => {
                                    let _ = answer.send(Err(format!(
                                        "the copy of migration {id:016x} is not known to be gone ({why}): \
                                         the original stays frozen"
                                    )));
                                    continue;
                                }
                            }
                        }
                        let _ = answer.send(Ok(format!(
                            "pid {pid} (migration {id:016x}) runs here again"
                        )));
                        break resume(task, &mut rec);
                    }
                }
            };
            cx.kept.forget(id);
            progress(&reply);
            reply
        }
    }
}

/// A decision on a kept original and where to say what was done, or why
/// not.
type Decision = (Resolution, std::sync::mpsc::Sender<Result<String, String>>);

/// Originals kept frozen after their destination was lost, by migration id:
/// their owner's uid and the way to the session holding each.
#[derive(Default)]
pub struct KeptOriginals {
    map: std::sync::Mutex<std::collections::HashMap<u64, (u32, std::sync::mpsc::Sender<Decision>)>>,
}

impl KeptOriginals {
    fn keep(&self, id: u64, uid: u32) -> std::sync::mpsc::Receiver<Decision> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, (uid, tx));
        rx
    }

    fn forget(&self, id: u64) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// Carries out `action` on migration `id`'s kept original for a caller
    /// of uid `uid`; returns what was done, or why not.
    pub fn resolve(&self, id: u64, uid: u32, action: Resolution) -> Result<String, String> {
        let tx = {
            let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            // Another user's migration reads as none at all.
            match map.get(&id) {
                Some((owner, tx)) if uid == 0 || *owner == uid => tx.clone(),
                _ => return Err(format!("migration {id:016x} keeps no frozen original here")),
            }
        };
        let (answer, done) = std::sync::mpsc::channel();
        tx.send((action, answer))
            .map_err(|_| format!("migration {id:016x} is no longer kept"))?;
        done.recv_timeout(4 * peer::PEER_SILENCE)
            .map_err(|_| format!("migration {id:016x}: no answer from its session"))?
    }
}

/// Turns the frozen original into the deputy: an injected execve of this
/// agent's binary as `__deputy`, keeping its pid, parent, session and
/// terminal; its other threads end with the exec.
fn deputize(
    mut task: FrozenOriginal,
    mem: &RemoteMem,
    cx: &SourceCtx<'_>,
    id: u64,
) -> Result<(), String> {
    let mut threads = std::mem::take(&mut task.0);
    let mut main = threads.remove(0);
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let args = [
        exe.to_string_lossy().into_owned(),
        "__deputy".to_string(),
        cx.socket.to_string_lossy().into_owned(),
        cx.addr.to_string(),
        id.to_string(),
        cx.host.to_string(),
    ];
    let scratch = match main.syscall(
        libc::SYS_mmap,
        [
            0,
            8192,
            (libc::PROT_READ | libc::PROT_WRITE) as u64,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
            u64::MAX,
            0,
        ],
    ) {
        Ok(a) => a,
        Err(e) => {
            main.kill();
            for t in threads {
                t.kill();
            }
            return Err(error_chain(&e));
        }
    };
    // Strings from 1024 on; argv (pointers, then NULL) and envp (NULL) first.
    let mut blob = vec![0u8; 1024];
    let mut ptrs = Vec::new();
    for a in &args {
        ptrs.push(scratch + blob.len() as u64);
        blob.extend_from_slice(a.as_bytes());
        blob.push(0);
    }
    for (i, p) in ptrs.iter().enumerate() {
        blob[i * 8..i * 8 + 8].copy_from_slice(&p.to_le_bytes());
    }
    let envp = scratch + (ptrs.len() as u64 + 1) * 8;
    if let Err(e) = mem.write(scratch, &blob) {
        main.kill();
        for t in threads {
            t.kill();
        }
        return Err(error_chain(&e));
    }
    let r = main.exec_and_release([ptrs[0], scratch, envp, 0, 0, 0]);
    for t in threads {
        // Ended by the exec (or killed with the process if it failed).
        t.abandon();
    }
    r.map_err(|e| error_chain(&e))
}

fn migration_id(pid: i32) -> u64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_ok()
    {
        return u64::from_le_bytes(b);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (pid as u64) << 32
}

/// A transport error in words, a stall (no progress within
/// [`STALL_TIMEOUT`]) named as such.
fn frame_error(e: &frame::FrameError) -> String {
    match e {
        frame::FrameError::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            format!(
                "no progress for {} s: the link or the destination is down",
                STALL_TIMEOUT.as_secs()
            )
        }
        _ => error_chain(e),
    }
}

/// Estimates the destination's clock offset (destination minus source,
/// microseconds) and its uncertainty by Cristian's method: the peer's time
/// plus half the round trip, over several probes, keeping the tightest.
fn sync_clock(ctl: &mut PeerStream, seq: &Sequencer) -> Result<(i64, u64), frame::FrameError> {
    let mut best: Option<(u64, i64)> = None;
    for _ in 0..CLOCK_PROBES {
        let sent = crate::unix_us();
        seq.send(ctl, &SourceMsg::ClockProbe)?;
        let peer = match seq.recv::<DestMsg>(ctl)? {
            DestMsg::Clock { unix_us } => unix_us,
            other => {
                return Err(frame::FrameError::Io(std::io::Error::other(format!(
                    "unexpected answer to a clock probe: {other:?}"
                ))))
            }
        };
        let back = crate::unix_us();
        let rtt = back.saturating_sub(sent);
        let offset = peer as i64 - (sent + rtt / 2) as i64;
        if best.is_none_or(|(r, _)| rtt < r) {
            best = Some((rtt, offset));
        }
    }
    let (rtt, offset) = best.unwrap_or((0, 0));
    Ok((offset, rtt.div_ceil(2)))
}

/// Why pre-copy stopped before the freeze (the process runs on untouched).
enum PreCopyError {
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
fn precopy(
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
fn put_pages(
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

fn ship_core(
    ctl: &mut PeerStream,
    seq: &Sequencer,
    id: u64,
    frozen: &Frozen,
    opts: &MigrateOptions,
    rec: &mut MigrationRecord,
) -> Result<(), String> {
    let err = |e: frame::FrameError| format!("sending the core: {}", frame_error(&e));
    seq.send(
        ctl,
        &SourceMsg::Core {
            id,
            image: Box::new(frozen.image.clone()),
            opts: opts.clone(),
        },
    )
    .map_err(err)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, &mut *ctl);
    send_shipped(&mut w, seq, &frozen.image)?;
    let mut buf = Vec::new();
    for v in &frozen.image.mm.vmas {
        for p in v.pages.iter().filter(|p| p.fill == Fill::Eager) {
            let mut first = p.first;
            let end = p.first + p.count;
            while first < end {
                let n = (end - first).min(u64::from(MAX_PAGES_PER_FRAME));
                let addr = v.start + first * PAGE_SIZE;
                buf.resize((n * PAGE_SIZE) as usize, 0);
                frozen
                    .mem
                    .read(addr, &mut buf)
                    .map_err(|e| format!("reading pages at {addr:#x}: {}", error_chain(&e)))?;
                rec.page_wire_bytes += put_pages(&mut w, addr, &buf, opts.compress).map_err(err)?;
                rec.eager_pages += n;
                first += n;
            }
        }
    }
    seq.send(&mut w, &SourceMsg::EagerDone).map_err(err)?;
    w.flush().map_err(|e| err(e.into()))?;
    if opts.mode == Mode::StopCopy {
        debug_assert_eq!(rec.lazy_pages, 0);
    }
    Ok(())
}

/// Streams the content of the image's shipped files, [`SHIPPED_CHUNK`] at a
/// time, read from the frozen process's descriptors: exactly the size the
/// image gives for each (a file cut shorter meanwhile fails the migration).
fn send_shipped(
    w: &mut impl std::io::Write,
    seq: &Sequencer,
    image: &ProcessImage,
) -> Result<(), String> {
    use std::io::Read;
    let mut buf = vec![0u8; SHIPPED_CHUNK];
    for f in &image.shipped {
        let what = || format!("shipping the content of fd {} ({})", f.fd, f.path);
        let file = std::fs::File::open(format!("/proc/{}/fd/{}", image.pid, f.fd))
            .map_err(|e| format!("{}: {e}", what()))?;
        let mut file = file.take(f.size);
        let mut left = f.size;
        while left > 0 {
            let n = (left as usize).min(SHIPPED_CHUNK);
            file.read_exact(&mut buf[..n])
                .map_err(|e| format!("{}: {e}", what()))?;
            seq.send(w, &SourceMsg::ShippedData(buf[..n].to_vec()))
                .map_err(|e| format!("{}: {}", what(), frame_error(&e)))?;
            left -= n as u64;
        }
    }
    Ok(())
}

fn spawn_demand(
    lane: Option<PeerStream>,
    mem: Arc<RemoteMem>,
    lazy: Arc<LazyPages>,
    c: Arc<Counters>,
    compress: bool,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let Some(mut s) = lane else { return };
        serve_demand(&mut s, &mem, &lazy, &c, compress);
        // However it ended, the lane is closed (the session holds another
        // handle of it): a destination whose requests go unanswered knows.
        let _ = s.shutdown(Shutdown::Both);
    })
}

/// Answers demand requests on `s` until the lane ends or fails.
fn serve_demand(
    s: &mut PeerStream,
    mem: &RemoteMem,
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
            put_pages(&mut *s, addr, pages, compress)
        };
        let sent = send(req.addr, head).and_then(|a| Ok(a + send(req.addr + PAGE_SIZE, rest)?));
        match sent {
            Ok(n) => {
                c.wire_bytes.fetch_add(n, Ordering::Relaxed);
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
    }
}

fn spawn_push(
    lane: Option<PeerStream>,
    mem: Arc<RemoteMem>,
    lazy: Arc<LazyPages>,
    c: Arc<Counters>,
    opts: &MigrateOptions,
    t_request: Instant,
) -> std::thread::JoinHandle<()> {
    let (rate_mib, order, compress) = (opts.push_rate_mib, opts.push_order, opts.compress);
    std::thread::spawn(move || {
        let Some(s) = lane else { return };
        // The push is background work: faults and the process come first.
        let _ = crate::host::sys::set_thread_nice(crate::net::peer::BULK_NICE);
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
                match put_pages(&mut w, addr, &buf, compress) {
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
