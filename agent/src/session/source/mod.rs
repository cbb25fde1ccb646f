//! The source's session: pre-flight, freeze, ship the core and the eager
//! set, commit, then serve the rest of the memory (demand lane) and push
//! it (bulk lane) until the destination has every page; then the frozen
//! original is killed.

use std::io::Write;
use std::net::{Shutdown, SocketAddr};
use std::path::Path;

use crate::net::secure::{PeerStream, Security};
use crate::session::ask::{self, Asker, CopyFate};
use crate::session::commit::{FrozenOriginal, HeldNetwork, Uncommitted};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use migrate_inject::RemoteMem;
use migrate_proto::envelope::Sequencer;
use migrate_proto::frame::{self, MAX_PAGES_PER_FRAME};
use migrate_proto::image::Lineage;
use migrate_proto::image::{Fill, ProcessImage};
use migrate_proto::msg::{
    Code, DestMsg, Lane, LossPolicy, MigrateOptions, Mode, PageRequest, PushDone, PushOrder,
    Reason, Reply, Resolution, SourceMsg, SHIPPED_CHUNK,
};
use migrate_proto::record::{Event, LaneBytes, MigrationRecord};
use migrate_proto::PAGE_SIZE;
use tracing::{info, trace, warn};

use crate::capture::dirty::{DirtyError, DirtyTracker};
use crate::capture::dump::{self, Frozen};
use crate::host::access::Caller;
use crate::net::peer::{self, REPLY_TIMEOUT, STALL_TIMEOUT};
use crate::{capture::preflight, error_chain, failpoints, host::procfs, host::sys};

mod committed;
mod loss;
mod pages;
mod wire;

pub use loss::KeptOriginals;
use loss::*;
use pages::*;
use wire::*;

/// Pages per frame when pushing.
const PUSH_CHUNK: u64 = 64;
/// Pages per frame of the pages sent in the freeze: the destination's
/// writers take a frame each, so frames are small enough to share out.
const EAGER_FRAME_PAGES: u64 = 256;
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
    /// Service addresses any user may move with a process.
    pub hand_over: &'a [std::net::IpAddr],
    /// This agent's own address for peers (never moved).
    pub listen: SocketAddr,
}

fn us(t0: Instant) -> u64 {
    t0.elapsed().as_micros() as u64
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
            let at = match crate::capture::shared_files::index(fd) {
                Some(_) => "mapped shared and writable".to_string(),
                None => format!("fd {fd}"),
            };
            too_big.push(format!(
                "{at}: {} ({} bytes) is {} and over the shipping limit of {} bytes",
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
    // Each descriptor counted once, as it ships once.
    let total: u64 = ship
        .iter()
        .filter_map(|(fd, _)| needs.iter().find_map(|n| n.ship.filter(|s| s.0 == *fd)))
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
    /// The processes moving with this one (its descendants, zombies too);
    /// empty when it moves alone.
    kin: Vec<i32>,
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
    /// Service addresses to take off this host at the freeze.
    addresses: Vec<crate::host::sys::IfAddr>,
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
    /// Service addresses taken off this host (back when dropped, before
    /// the original runs on).
    moved: crate::host::address::Moved,
    frozen: Frozen,
    /// For a tree, the other members (they run on when dropped).
    kin: Option<FrozenKin>,
}

/// The members of a frozen tree besides its root.
struct FrozenKin {
    /// Every member's relations, the root first.
    relations: Vec<migrate_proto::image::Relation>,
    /// The members after the root, in the same order; `None` for a zombie.
    members: Vec<Option<Frozen>>,
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
    mem: Arc<Memories>,
    counters: Arc<Counters>,
    servers: Vec<std::thread::JoinHandle<()>>,
    push: bool,
    frozen_terminal: bool,
    signals: Vec<i32>,
    /// A tree's other members' signals, in the tree's order.
    kin_signals: Vec<Vec<i32>>,
    /// How many of `task`'s threads are the root's (the first).
    root_threads: usize,
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
        kin: Vec::new(),
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
        let agent = sys::getpid();
        let tcp = crate::fd::TcpRules {
            policy: self.coop.tcp,
            moved: opts.move_addresses.clone(),
        };
        let insp = match preflight::inspect_tree(pid, self.caller, agent, &tcp, opts.mode) {
            Ok(Some(tree)) => {
                self.kin = tree.kin;
                Ok(tree.root)
            }
            Ok(None) => preflight::inspect(pid, self.caller, agent, false, &tcp),
            Err(r) => Err(r),
        };
        // Every reason at once: the process's and its addresses'.
        let (insp, addresses) = match (insp, self.addresses_to_move()) {
            (Ok(i), Ok(a)) => (i, a),
            (i, a) => {
                let mut why = i.err().map(|r| r.0).unwrap_or_default();
                why.extend(a.err().unwrap_or_default());
                return State::Over(Reply::refused(why));
            }
        };
        let unreachable = |e: peer::PeerError| {
            Reply::refused_one(Code::Destination, format!("host {}: {e}", cx.to))
        };
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
                    // As the process names itself (the destination starts
                    // its stub as that pid).
                    pid: crate::capture::pid_ns::IdsInside::read(pid, &[pid])
                        .map_or(pid, |ids| ids.of(pid)),
                    who: insp.who.clone(),
                    needs: insp.needs.clone(),
                    kin: self.kin.clone(),
                    addresses: opts.move_addresses.clone(),
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
                    Ok(ship) if !ship.is_empty() && !self.kin.is_empty() => {
                        return State::Over(Reply::refused(
                            ship.iter()
                                .map(|(fd, _)| {
                                    Reason::new(
                                        Code::File,
                                        format!(
                                            "fd {fd}: its file is missing or different on {}: \
                                             shipping files with a tree is not built yet",
                                            cx.to
                                        ),
                                    )
                                })
                                .collect(),
                        ))
                    }
                    Ok(ship) => ship,
                    Err(too_big) => {
                        return State::Over(Reply::refused(
                            too_big
                                .into_iter()
                                .map(|t| Reason::new(Code::ShippingLimit, t))
                                .collect(),
                        ))
                    }
                }
            }
            Ok(DestMsg::FileVerdict { refused: v, .. }) => return State::Over(Reply::refused(v)),
            Ok(other) => {
                return State::Over(Reply::refused_one(
                    Code::Protocol,
                    format!("{}: unexpected answer {other:?}", cx.to),
                ))
            }
            Err(e) => {
                return State::Over(Reply::refused_one(
                    Code::Destination,
                    format!("host {}: {}", cx.to, error_chain(&e)),
                ))
            }
        };
        // From here the destination waits for the core: leaving calls it off.
        let mut abort = Uncommitted::arm(&ctl, &seq);
        if let Err(e) = failpoints::hit("source.after-file-check") {
            abort.because(e.to_string());
            return State::Over(Reply::refused_one(
                Code::Other,
                format!("host {}: {e}", cx.to),
            ));
        }
        let clock = match sync_clock(&mut ctl, &seq) {
            Ok(c) => c,
            Err(e) => {
                return State::Over(Reply::refused_one(
                    Code::Destination,
                    format!("host {}: {}", cx.to, error_chain(&e)),
                ))
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
            kin: self.kin.clone(),
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
                    return State::Over(Reply::refused_one(Code::PreCopy, why));
                }
                Err(PreCopyError::Lost(why)) => {
                    return State::Over(Reply::refused_one(
                        Code::Destination,
                        format!("host {}: {why}", cx.to),
                    ));
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
            addresses,
        })
    }

    /// The service addresses asked to move with the process, where they
    /// are on this host: refused unless each is a secondary address here
    /// that the caller may move (root, or one the agent hands over).
    fn addresses_to_move(&self) -> Result<Vec<crate::host::sys::IfAddr>, Vec<Reason>> {
        use crate::host::address;
        let (cx, asked) = (self.cx, &self.opts.move_addresses);
        let mut why = Vec::new();
        let mut found = Vec::new();
        for &a in asked {
            if self.caller.uid != 0 && !cx.hand_over.contains(&a) {
                why.push(Reason::new(
                    Code::NotPermitted,
                    format!(
                        "address {a}: only root may move an address this agent does not hand \
                         over (its `hand_over` setting)"
                    ),
                ));
                continue;
            }
            if a == cx.listen.ip() {
                why.push(Reason::new(
                    Code::Address,
                    format!("address {a} is this agent's own, which its peers reach it at"),
                ));
                continue;
            }
            match address::find(a) {
                Ok(here) if !found.contains(&here) => found.push(here),
                Ok(_) => {}
                Err(e) => why.push(Reason::new(Code::Address, format!("address {a}: {e}"))),
            }
        }
        if why.is_empty() {
            Ok(found)
        } else {
            Err(why)
        }
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
            addresses,
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
        // The addresses leave once the process is frozen, before anything
        // is read: from then their peers' segments are dropped (no host
        // answers for them), and the connections on them stand still.
        let mut moved = crate::host::address::Moved::default();
        let mut take_off = || {
            moved = crate::host::address::Moved::take_off(pid, &addresses)
                .map_err(|e| e.to_string())?;
            Ok(())
        };
        // (A tree's members are scouted by its own dump.)
        let scouted = self.kin.is_empty().then(|| dump::Scouted::take(pid));
        // Freeze. From here until the commit, leaving resumes the original.
        let t_freeze = Instant::now();
        self.rec.timeline.freeze = us(self.t0);
        self.event("freeze");
        let dumped = if let Some(scouted) = scouted {
            dump::freeze_and_dump(
                pid,
                self.caller,
                self.opts,
                &ship,
                tracker.as_mut(),
                scouted,
                &self.coop,
                &mut take_off,
            )
            .map(|f| (f, None))
        } else {
            dump::freeze_and_dump_tree(pid, self.caller, self.opts, &self.coop, &mut take_off)
                .and_then(|t| {
                    let mut members = t.members.into_iter();
                    match members.next().flatten() {
                        Some(root) => Ok((
                            root,
                            Some(FrozenKin {
                                relations: t.relations,
                                members: members.collect(),
                            }),
                        )),
                        None => Err(dump::DumpError::Refused(preflight::Refusal::one(
                            Code::NoSuchProcess,
                            format!("process {pid} ended"),
                        ))),
                    }
                })
        };
        let (mut frozen, kin) = match dumped {
            Ok(f) => f,
            Err(dump::DumpError::Refused(r)) => {
                abort.because("refused after freeze");
                return State::Over(Reply::refused(r.0));
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
        let members = std::iter::once(Some(&frozen))
            .chain(
                kin.iter()
                    .flat_map(|k| k.members.iter().map(Option::as_ref)),
            )
            .enumerate()
            .filter_map(|(i, m)| Some((i, &m?.image)));
        let lazy = Arc::new(LazyPages::of_members(members));
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
            moved,
            frozen,
            kin,
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
            .and_then(|()| match &f.kin {
                None => ship_core(
                    &mut f.ctl,
                    &f.seq,
                    self.id,
                    &f.frozen,
                    self.opts,
                    &mut self.rec,
                ),
                Some(kin) => ship_tree_core(
                    &mut f.ctl,
                    &f.seq,
                    self.id,
                    (&f.frozen, kin),
                    self.opts,
                    &mut self.rec,
                ),
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
}

#[cfg(test)]
mod tests;
