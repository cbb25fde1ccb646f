//! The destination's session: checks files, rebuilds the process from the
//! core and eager pages, waits for the commit, resumes it and fills the
//! rest of its memory as pages arrive or faults ask for them.

use std::net::Shutdown;

use crate::host::kinds;
use crate::net::secure::PeerStream;
use crate::session::lineage::Lineages;
use crate::{error_chain, failpoints, host::sys, net::peer};
use migrate_proto::envelope::Sequencer;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use migrate_proto::frame::{self, Frame, FrameError};
use migrate_proto::image::{Fill, FsCreds, ImageLimits, ProcessImage, Vma, VmaKind};
use migrate_proto::msg::{DestMsg, FileNeed, Lane, Prefetch, PushDone, SourceMsg};
use migrate_proto::PAGE_SIZE;
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::net::peer::{PeerLanes, STALL_TIMEOUT};
use crate::postcopy::fault::{FaultHandler, LocalPages, Outcome};
use crate::postcopy::keeper::Keeper;
use crate::postcopy::lazy::LazyMap;
use crate::postcopy::pageset::PageSet;
use crate::postcopy::store::PageStore;
use crate::rebuild::restore::{RestoreError, Restorer, Stub};
use crate::rebuild::shipped::{ShippedError, ShippedFiles};
use crate::session::received::{Fate, Received};

mod files;
mod running;
mod tree;

pub use files::{check_files, remap_socket_addresses};
use running::*;

/// How long the data lanes have to follow the core.
const LANE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a destination session ended early.
#[derive(Debug, Error)]
pub enum DestError {
    /// Transport.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// Rebuilding failed.
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// Shipped files could not be received.
    #[error(transparent)]
    Shipped(#[from] ShippedError),
    /// A failpoint failed the step.
    #[error(transparent)]
    Failpoint(#[from] crate::failpoints::Injected),
    /// The source sent a message the session does not expect there.
    #[error("expected {expected}, got {got}")]
    Unexpected {
        /// What the step waits for.
        expected: &'static str,
        /// What came, as debug text.
        got: String,
    },
    /// The source did not commit.
    #[error("source did not commit: {0}")]
    NoCommit(String),
    /// The control session names a migration id received before.
    #[error("migration {0:016x} was received here before: a replay, refused")]
    Replay(u64),
    /// The source gave up.
    #[error("source aborted: {0}")]
    SourceAborted(String),
    /// The source was lost before the commit.
    #[error("lost the source before commit: {0}")]
    LostSource(#[source] FrameError),
    /// The image is not one this host will build from.
    #[error("image refused: {0}")]
    ImageRefused(String),
    /// The image or what came with it contradicts itself.
    #[error("{0}")]
    BadImage(String),
    /// Pre-copy sent more pages than this host's memory.
    #[error("pre-copy sent more pages than this host's memory ({0} pages)")]
    TooManyPages(u64),
    /// A lane of the migration never came.
    #[error("the {0} never came")]
    LaneMissing(String),
    /// A moving address could not be put here.
    #[error(transparent)]
    Address(#[from] crate::host::address::AddressError),
    /// A local step failed.
    #[error("{step}: {source}")]
    Local {
        /// What was being done.
        step: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The copy failed after it ran (its session's own account).
    #[error("{0}")]
    CopyFailed(String),
}

/// Runs one incoming migration on control connection `ctl`.
pub fn serve(
    config: &crate::config::Config,
    mut ctl: PeerStream,
    lanes: &PeerLanes<'_>,
    stub: &Path,
    received: &Received,
    from: &str,
    lineages: &Lineages,
) -> Result<(), DestError> {
    let host = config.name.as_str();
    let local = config.listen.ip();
    let seq = Arc::new(Sequencer::unbound());
    // Until the commit a silent source (a cut link, a dead host) ends the
    // session within a bound; what was built is killed.
    ctl.set_read_timeout(Some(STALL_TIMEOUT))
        .map_err(FrameError::Io)?;
    ctl.set_write_timeout(Some(STALL_TIMEOUT))
        .map_err(FrameError::Io)?;
    // 1. Files.
    let (pid, needs, who, kin, addresses) = match seq.recv::<SourceMsg>(&mut ctl)? {
        SourceMsg::FileCheck {
            pid,
            needs,
            who,
            kin,
            addresses,
        } => (pid, needs, who, kin, addresses),
        other => {
            return Err(DestError::Unexpected {
                expected: "FileCheck",
                got: format!("{other:?}"),
            })
        }
    };
    // The first message named the migration: once only.
    let named = seq.id().unwrap_or_default();
    // What becomes of the copy, for a source that asks: gone unless the
    // session says otherwise.
    let Some(mut fate) = received.first_time(named, from) else {
        return Err(DestError::Replay(named));
    };
    let (refused, missing, different) = check_files(host, &needs, &who);
    let mut refused: Vec<_> = refused
        .into_iter()
        .map(|t| migrate_proto::msg::Reason::new(migrate_proto::msg::Code::File, t))
        .collect();
    if !kin.is_empty() {
        // A tree keeps every pid: one taken here stops it now.
        refused.extend(taken_pids(
            host,
            std::iter::once(pid).chain(kin.iter().copied()),
        ));
    }
    // Where each moving address goes here (none: already here).
    let mut placed = Vec::new();
    for &a in &addresses {
        match crate::host::address::place(a) {
            Ok(Some(p)) => placed.push(p),
            Ok(None) => {}
            Err(e) => refused.push(migrate_proto::msg::Reason::new(
                migrate_proto::msg::Code::Address,
                format!("address {a} on {host}: {e}"),
            )),
        }
    }
    failpoints::hit("dest.after-file-check")?;
    // The stub the process will be rebuilt in starts now, while the source
    // still runs it: starting one takes milliseconds that would otherwise
    // count as downtime. Unused (a refusal, an abort), it is killed.
    // So does the keeper that post-copy will need.
    let early_stub = refused.is_empty().then(|| {
        let exe = stub.to_path_buf();
        std::thread::spawn(move || {
            let keeper = Keeper::start(&exe)
                .map_err(|e| warn!(error = %e, "the early keeper did not start"))
                .ok();
            (Stub::spawn(&exe, pid), keeper)
        })
    });
    seq.send(
        &mut ctl,
        &DestMsg::FileVerdict {
            refused,
            missing,
            different,
        },
    )?;

    // 2. Pre-copy rounds, if any, then the core. Pages held before the
    // image arrives are bounded by this host's memory: no process larger
    // could be rebuilt here anyway.
    let mut store: Option<PageStore> = None;
    let (id, mut image, opts) = match receive_core(&mut ctl, &seq, &mut store)? {
        Some(Incoming::One(core)) => core,
        Some(Incoming::Tree(core)) => {
            failpoints::hit("dest.after-core")?;
            let stub_path = stub;
            // (Each member's keeper starts as it is rebuilt.)
            let stub = match early_stub.and_then(|t| t.join().ok()) {
                Some((Ok(stub), _)) => stub,
                Some((Err(e), _)) => return Err(e.into()),
                None => Stub::spawn(stub, pid)?,
            };
            let result = tree::TreeSession {
                ctl: &mut ctl,
                seq: &seq,
                lanes,
                lineages,
                events: &mut vec![("core received".to_string(), crate::unix_us())],
                fate: &mut fate,
                limits: ImageLimits {
                    pages: memory_pages().unwrap_or(u64::MAX),
                    ..ImageLimits::default()
                },
                local,
                exe: stub_path,
                addresses: placed,
            }
            .run(core, stub);
            return report_failure(&mut ctl, &seq, &fate, result);
        }
        // The source gave up before the freeze, or refused after the file
        // check and closed.
        None => return Ok(()),
    };
    failpoints::hit("dest.after-core")?;
    let mut events = vec![("core received".to_string(), crate::unix_us())];
    info!(id, pid = image.pid, comm = %image.comm, "incoming migration");
    remap_socket_addresses(&mut image, local, &opts.move_addresses);
    let limits = ImageLimits {
        pages: memory_pages().unwrap_or(u64::MAX),
        shipped_bytes: config.ship_limit_mib << 20,
        ..ImageLimits::default()
    };
    let result = match image.validate(&limits) {
        Err(why) => Err(DestError::ImageRefused(why.to_string())),
        Ok(()) => {
            // The stub started at the file check, or (should that have
            // failed) one now.
            let (started, keeper) = match early_stub.and_then(|t| t.join().ok()) {
                Some((s, keeper)) => (
                    s.map_err(|e| warn!(id, error = %e, "the early stub did not start"))
                        .ok(),
                    keeper,
                ),
                None => (None, None),
            };
            match Stub::for_image(stub, &image, started) {
                Ok(ready) => Receiving {
                    ctl: &mut ctl,
                    seq: &seq,
                    id,
                    image: &image,
                    prefetch: opts.prefetch,
                    store,
                    lanes,
                    stub_exe: stub,
                    lineages,
                    host,
                    events: &mut events,
                    fate: &mut fate,
                    t0: std::time::Instant::now(),
                    addresses: placed,
                    keeper,
                }
                .run(ready),
                Err(e) => Err(e.into()),
            }
        }
    };
    report_failure(&mut ctl, &seq, &fate, result)
}

/// A session's end: a failure is told to the source, with whether the
/// copy was let run (a failure after that has killed it).
fn report_failure(
    ctl: &mut PeerStream,
    seq: &Sequencer,
    fate: &Fate<'_>,
    result: Result<(), DestError>,
) -> Result<(), DestError> {
    if let Err(e) = &result {
        warn!(error = %e, "migration failed on this side");
        let failed = DestMsg::Failed {
            error: e.to_string(),
            ran: fate.ran(),
        };
        let _ = seq.send(ctl, &failed);
    }
    result
}

/// The pids of `pids` that a process here already has, each a reason.
fn taken_pids(host: &str, pids: impl Iterator<Item = i32>) -> Vec<migrate_proto::msg::Reason> {
    pids.filter(|p| Path::new(&format!("/proc/{p}")).exists())
        .map(|p| {
            migrate_proto::msg::Reason::new(
                migrate_proto::msg::Code::Destination,
                format!(
                    "pid {p} is taken on {host}: a process tree keeps its pids, and this one \
                     cannot be had there"
                ),
            )
        })
        .collect()
}

/// Where a destination session is once the core is in ([`crate::session::commit`]
/// states the rule). Each state owns what leaving it other than into the
/// next must undo, and undoes it when dropped; [`Receiving::step`] moves
/// to the next one or ends.
enum State {
    /// The stub waits to become the process.
    Building(Stub),
    /// Rebuilt and stopped, its keeper holding its userfaultfd. Dropped:
    /// the process is killed (its [`Restorer`]) and the keeper ends.
    Built(Box<Built>),
    /// The source committed: the copy may run. Dropped: as `Built`.
    Committed(Box<Built>, Vec<i32>),
    /// It runs; post-copy until every page is in. Dropped: while pages are
    /// owed its keeper kills it.
    Running(Box<Running>),
    /// Over.
    Over(Result<(), DestError>),
}

/// See [`State::Built`].
struct Built {
    r: Restorer,
    map: LazyMap,
    uffd: Option<std::os::fd::OwnedFd>,
    local: Option<Arc<LocalPages>>,
    keeper: Option<Keeper>,
    /// Forwarded standard streams: fd, our end, whether it is an output,
    /// and its lane.
    streams: Vec<(i32, std::os::fd::OwnedFd, bool, PeerStream)>,
    demand: PeerStream,
    bulk: PeerStream,
}

/// See [`State::Running`].
struct Running {
    new_pid: i32,
    /// Its addresses and connections here.
    network: running::LiveNetwork,
    handler: Option<Arc<FaultHandler>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    keeper: Option<Keeper>,
    /// Its end, for its deputy at home.
    reaped: Reaped,
    beat: Option<peer::Heartbeat>,
    watch: SourceWatch,
    demand: PeerStream,
    bulk: PeerStream,
}

/// What a destination session carries through its states: nothing in it
/// needs undoing.
struct Receiving<'a, 'p, 'f> {
    ctl: &'a mut PeerStream,
    seq: &'a Arc<Sequencer>,
    id: u64,
    image: &'a ProcessImage,
    prefetch: Prefetch,
    store: Option<PageStore>,
    lanes: &'a PeerLanes<'p>,
    stub_exe: &'a Path,
    lineages: &'a Lineages,
    host: &'a str,
    events: &'a mut Vec<(String, u64)>,
    fate: &'a mut Fate<'f>,
    t0: std::time::Instant,
    /// Addresses to put on this host as the process resumes.
    addresses: Vec<crate::host::sys::IfAddr>,
    /// A keeper started before the freeze, armed if post-copy needs one.
    keeper: Option<Keeper>,
}

impl Receiving<'_, '_, '_> {
    /// Runs the session from the stub to its end.
    fn run(&mut self, stub: Stub) -> Result<(), DestError> {
        let mut state = State::Building(stub);
        loop {
            state = match state {
                State::Over(result) => return result,
                state => self.step(state),
            };
        }
    }

    /// The one step function: from each state to the next, or to the end.
    fn step(&mut self, state: State) -> State {
        let next = match state {
            State::Building(stub) => self.build(stub).map(|b| State::Built(Box::new(b))),
            State::Built(b) => self
                .await_commit(&b)
                .map(|signals| State::Committed(b, signals)),
            State::Committed(b, signals) => self
                .resume(*b, signals)
                .map(|r| State::Running(Box::new(r))),
            State::Running(r) => self.post_copy(*r).map(|()| State::Over(Ok(()))),
            State::Over(result) => Ok(State::Over(result)),
        };
        next.unwrap_or_else(|e| State::Over(Err(e)))
    }

    /// Rebuilds the process in the stub: shipped files, eager pages, its
    /// state; registers its lazy ranges and starts its keeper; takes its
    /// lanes.
    fn build(&mut self, stub: Stub) -> Result<Built, DestError> {
        let ctl = &mut *self.ctl;
        let (seq, id, image, lanes, stub_exe, host) = (
            self.seq,
            self.id,
            self.image,
            self.lanes,
            self.stub_exe,
            self.host,
        );
        let store = self.store.take();
        let events = &mut *self.events;
        let t0 = self.t0;
        if image.threads.is_empty() {
            return Err(DestError::BadImage("image has no thread".into()));
        }
        let demand = lanes
            .take(Lane::Demand(id), LANE_TIMEOUT)
            .ok_or_else(|| DestError::LaneMissing("demand lane".into()))?;
        let bulk = lanes
            .take(Lane::Bulk(id), LANE_TIMEOUT)
            .ok_or_else(|| DestError::LaneMissing("bulk lane".into()))?;

        let step = |what: &str| debug!(id, us = t0.elapsed().as_micros() as u64, "rebuild: {what}");
        let mut r = Restorer::start_in(image, stub)?;
        step("stub ready");
        let built = (|| -> Result<_, DestError> {
            // Shipped files as they stream in, then eager pages.
            let who = r.who().clone();
            let mut shipped = ShippedFiles::create(&image.shipped, &who)?;
            let mut writers = r.page_writers()?;
            loop {
                match frame::read_frame_into(ctl, writers.spare())? {
                    Frame::Pages(h, data) => writers.write(h.addr, data)?,
                    Frame::Zeros(_) => return Err(marks_in_the_freeze()),
                    Frame::Control(body) => match seq.open::<SourceMsg>(&body)? {
                        SourceMsg::ShippedData(data) => shipped.write(&data)?,
                        SourceMsg::EagerDone => break,
                        SourceMsg::Abort(why) => return Err(DestError::SourceAborted(why)),
                        other => {
                            return Err(DestError::Unexpected {
                                expected: "pages",
                                got: format!("{other:?}"),
                            })
                        }
                    },
                }
            }
            writers.finish()?;
            r.set_shipped(shipped.finish(&who)?)?;
            step("eager pages written");
            let ToCome { map, ranges, local } = pages_to_come(&image.mm.vmas, store)?;
            let uffd = if ranges.is_empty() {
                None
            } else {
                Some(r.userfaultfd(&ranges)?)
            };
            step("userfaultfd registered");
            r.finish(image)?;
            step("process state restored");
            Ok((map, uffd, local))
        })();
        // From here an early return drops `r`, which kills what was built.
        let (map, uffd, local) = built?;
        let early_keeper = self.keeper.take();
        let keeper = match &uffd {
            Some(u) => match Keeper::armed(early_keeper, stub_exe, u, r.pidfd(), &r.repaired()) {
                Ok(k) => Some(k),
                Err(e) => {
                    return Err(DestError::Local {
                        step: "starting the keeper",
                        source: e,
                    })
                }
            },
            None => None,
        };
        step("keeper started");
        failpoints::hit("dest.after-keeper")?;
        // The relays of forwarded standard streams: one lane each.
        let mut streams = Vec::new();
        for (fd, end, output) in r.take_forwarded() {
            match lanes.take(Lane::Stdio(id, fd), LANE_TIMEOUT) {
                Some(lane) => streams.push((fd, end, output, lane)),
                None => {
                    return Err(DestError::LaneMissing(format!("lane for fd {fd}")));
                }
            }
        }
        if let Some(addr) = image.lineage.shim {
            // Its virtual ids and the rest of what its shim reads; a block
            // that cannot be patched leaves the ids real, the move goes on.
            if let Err(e) = r.patch_shim(image, addr, host) {
                warn!(id, error = %error_chain(&e), "the shim's state was not updated");
            }
        }
        step("rebuilt");
        events.push(("rebuilt".into(), crate::unix_us()));
        Ok(Built {
            r,
            map,
            uffd,
            local,
            keeper,
            streams,
            demand,
            bulk,
        })
    }

    /// Says Ready and waits for the source's commit; returns the signals
    /// the original had pending.
    fn await_commit(&mut self, b: &Built) -> Result<Vec<i32>, DestError> {
        let ctl = &mut *self.ctl;
        let (seq, id) = (self.seq, self.id);
        let r = &b.r;
        failpoints::hit("dest.before-ready")?;
        seq.send(ctl, &DestMsg::Ready { pid: r.pid })?;
        failpoints::hit("dest.after-ready")?;

        // 3. Commit or abort.
        let signals = match seq.recv::<SourceMsg>(ctl) {
            Ok(SourceMsg::Commit {
                id: committed,
                signals,
                ..
            }) if committed == id => {
                // Post-copy lasts as long as the process takes to touch its
                // pages.
                let _ = ctl.set_read_timeout(None);
                signals
            }
            Ok(other) => {
                return Err(DestError::NoCommit(format!("{other:?}")));
            }
            Err(e) => {
                return Err(DestError::LostSource(e));
            }
        };

        failpoints::hit("dest.after-commit")?;
        Ok(signals)
    }
}

/// This host's memory in pages (`MemTotal`).
fn memory_pages() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024 / PAGE_SIZE)
}

/// Zero-page marks where pages come whole (in the freeze): marks are for
/// post-copy's lanes only.
fn marks_in_the_freeze() -> DestError {
    DestError::Unexpected {
        expected: "pages",
        got: "zero-page marks".into(),
    }
}

/// Pre-copy rounds, if any (their pages kept in `store`), then the core:
/// `None` if the source gave up first. Pages held before the image arrives
/// are bounded by this host's memory: no process larger could be rebuilt
/// here anyway.
fn receive_core(
    ctl: &mut PeerStream,
    seq: &Sequencer,
    store: &mut Option<PageStore>,
) -> Result<Option<Incoming>, DestError> {
    let most_held = memory_pages().unwrap_or(u64::MAX);
    loop {
        let msg = match frame::read_frame(ctl) {
            Ok(Frame::Pages(h, data)) => {
                if store.is_none() {
                    *store = Some(PageStore::new().map_err(|e| DestError::Local {
                        step: "making the pre-copy store",
                        source: e,
                    })?);
                }
                if let Some(s) = store.as_mut() {
                    s.put(h.addr, &data).map_err(|e| DestError::Local {
                        step: "keeping pre-copied pages",
                        source: e,
                    })?;
                    if s.held().pages() > most_held {
                        return Err(DestError::TooManyPages(most_held));
                    }
                }
                continue;
            }
            Ok(Frame::Control(body)) => seq.open::<SourceMsg>(&body),
            // Marks are for post-copy's lanes only.
            Ok(Frame::Zeros(_)) => Err(FrameError::BadPages("zero-page marks in pre-copy")),
            Err(e) => Err(e),
        };
        match msg {
            Ok(SourceMsg::ClockProbe) => {
                seq.send(
                    ctl,
                    &DestMsg::Clock {
                        unix_us: crate::unix_us(),
                    },
                )?;
            }
            Ok(SourceMsg::PreCopyRound { round, pages }) => {
                info!(round, pages, "pre-copy round received");
            }
            Ok(SourceMsg::Core { id, image, opts }) => {
                return Ok(Some(Incoming::One((id, image, opts))))
            }
            Ok(SourceMsg::CoreTree { id, tree, opts }) => {
                return Ok(Some(Incoming::Tree((id, tree, opts))))
            }
            Ok(SourceMsg::Abort(why)) => {
                info!(%why, "source gave up before the freeze");
                return Ok(None);
            }
            Ok(other) => {
                return Err(DestError::Unexpected {
                    expected: "Core",
                    got: format!("{other:?}"),
                })
            }
            // The source refused after the file check and closed.
            Err(FrameError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Ok(None)
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// A migration's id, image and options, as the core brought them.
type Core = (u64, Box<ProcessImage>, migrate_proto::msg::MigrateOptions);

/// What the source sent as its core.
enum Incoming {
    /// One process.
    One(Core),
    /// A process with its descendants.
    Tree(tree::TreeCore),
}

/// What the rebuilt process's memory (its mappings `vmas`) still waits
/// for: the map of pages to come (from the source, or from the pre-copy
/// store here, `store`), the ranges to register with userfaultfd (private
/// anonymous mappings with such pages), and the pre-copied pages held
/// here.
fn pages_to_come(vmas: &[Vma], store: Option<PageStore>) -> Result<ToCome, DestError> {
    pages_to_come_of(0, vmas, store)
}

/// As [`pages_to_come`], for member `member` of a tree: its pages are
/// named on the wire as [`migrate_proto::image::tree_page`] says.
fn pages_to_come_of(
    member: usize,
    vmas: &[Vma],
    store: Option<PageStore>,
) -> Result<ToCome, DestError> {
    let name = |a: u64| migrate_proto::image::tree_page(member, a);
    // Lazy ranges: private anonymous VMAs with pages still to come,
    // from the source or from the pre-copy store here.
    let mut map = LazyMap::new();
    let mut ranges = Vec::new();
    let mut local = PageSet::new();
    for v in vmas {
        let lazy: Vec<_> = v
            .pages
            .iter()
            .filter(|p| matches!(p.fill, Fill::Lazy | Fill::Stored))
            .collect();
        if lazy.is_empty() {
            continue;
        }
        if v.shared || !matches!(v.kind, VmaKind::Anon) {
            return Err(DestError::BadImage(format!(
                "lazy pages in the mapping at {:#x}, which is not private anonymous",
                v.start
            )));
        }
        ranges.push((v.start, v.end - v.start));
        // One map region per stretch of pending pages, wherever they
        // come from: pre-copy leaves lazy and stored runs interleaved.
        let mut run: Option<(u64, u64)> = None;
        for p in lazy {
            let addr = v.start + p.first * PAGE_SIZE;
            if p.fill == Fill::Stored {
                local.insert(addr, addr + p.count * PAGE_SIZE);
            }
            run = match run {
                Some((a, n)) if a + n * PAGE_SIZE == addr => Some((a, n + p.count)),
                Some((a, n)) => {
                    map.add_from(a, name(a), n);
                    Some((addr, p.count))
                }
                None => Some((addr, p.count)),
            };
        }
        if let Some((a, n)) = run {
            map.add_from(a, name(a), n);
        }
    }
    let local = match (local.is_empty(), store) {
        (true, _) => None,
        (false, Some(store)) => {
            if let Some((a, _)) = local
                .ranges()
                .find(|&(a, b)| store.held().run_at(a, (b - a) / PAGE_SIZE) < (b - a) / PAGE_SIZE)
            {
                return Err(DestError::BadImage(format!(
                    "the core names pre-copied pages at {a:#x} that never arrived"
                )));
            }
            Some(Arc::new(LocalPages {
                store,
                pages: local,
            }))
        }
        (false, None) => {
            return Err(DestError::BadImage(
                "the core names pre-copied pages but none arrived".into(),
            ))
        }
    };
    Ok(ToCome { map, ranges, local })
}

/// See [`pages_to_come`].
struct ToCome {
    map: LazyMap,
    ranges: Vec<(u64, u64)>,
    local: Option<Arc<LocalPages>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vma(start: u64, pages: u64, shared: bool, runs: &[(u64, u64, Fill)]) -> Vma {
        Vma {
            start,
            end: start + pages * PAGE_SIZE,
            prot: 3,
            shared,
            growsdown: false,
            advice: Vec::new(),
            kind: VmaKind::Anon,
            pages: runs
                .iter()
                .map(|&(first, count, fill)| migrate_proto::image::PageRun { first, count, fill })
                .collect(),
        }
    }

    #[test]
    fn only_lazy_pages_of_private_anonymous_mappings_are_to_come() {
        let a = 0x10_0000;
        let b = 0x40_0000;
        let vmas = [
            vma(
                a,
                16,
                false,
                &[(0, 4, Fill::Eager), (4, 4, Fill::Lazy), (10, 2, Fill::Lazy)],
            ),
            vma(b, 8, false, &[(0, 8, Fill::Eager)]),
        ];
        let ToCome { map, ranges, local } = pages_to_come(&vmas, None).unwrap();
        // The mapping with lazy pages is registered whole; the eager one not.
        assert_eq!(ranges, [(a, 16 * PAGE_SIZE)]);
        assert!(local.is_none());
        assert_eq!(map.left(), 6);
        for page in [4, 7, 10, 11] {
            assert!(map.source_of(a + page * PAGE_SIZE).is_some(), "page {page}");
        }
        for page in [0, 3, 8, 9, 12] {
            assert!(map.source_of(a + page * PAGE_SIZE).is_none(), "page {page}");
        }
        assert!(map.source_of(b).is_none());
    }

    #[test]
    fn images_that_contradict_themselves_are_refused() {
        let shared = [vma(0x10_0000, 4, true, &[(0, 4, Fill::Lazy)])];
        assert!(matches!(
            pages_to_come(&shared, None),
            Err(DestError::BadImage(_))
        ));
        // Pre-copied pages named, none arrived.
        let stored = [vma(0x10_0000, 4, false, &[(0, 4, Fill::Stored)])];
        assert!(matches!(
            pages_to_come(&stored, None),
            Err(DestError::BadImage(_))
        ));
    }
    use migrate_proto::image::{FdEntry, FdKind};

    fn v4(ip: [u8; 4], port: u16) -> Vec<u8> {
        let mut a = (libc::AF_INET as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(&port.to_be_bytes());
        a.extend_from_slice(&ip);
        a.extend_from_slice(&[0u8; 8]);
        a
    }

    fn socket(addr: Vec<u8>) -> FdEntry {
        FdEntry {
            fd: 3,
            kind: FdKind::Socket {
                flags: 0,
                domain: libc::AF_INET,
                stype: libc::SOCK_STREAM,
                protocol: 0,
                peer: None,
                addr,
                listen: Some(5),
                options: Vec::new(),
            },
        }
    }

    fn addr_of(e: &FdEntry) -> Vec<u8> {
        match &e.kind {
            FdKind::Socket { addr, .. } => addr.clone(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn source_addresses_become_ours_wildcard_and_loopback_stay() {
        let here: std::net::IpAddr = "10.77.0.2".parse().unwrap();
        for (before, after) in [
            (v4([10, 77, 0, 1], 8000), v4([10, 77, 0, 2], 8000)),
            (v4([0, 0, 0, 0], 8000), v4([0, 0, 0, 0], 8000)),
            (v4([127, 0, 0, 1], 8000), v4([127, 0, 0, 1], 8000)),
        ] {
            let mut image: ProcessImage = serde_json::from_str(IMAGE).unwrap();
            image.fds = vec![socket(before)];
            remap_socket_addresses(&mut image, here, &[]);
            assert_eq!(addr_of(&image.fds[0]), after);
        }
        // A moving address stays, bound before it is here.
        let mut image: ProcessImage = serde_json::from_str(IMAGE).unwrap();
        image.fds = vec![socket(v4([10, 77, 0, 100], 8000))];
        remap_socket_addresses(&mut image, here, &["10.77.0.100".parse().unwrap()]);
        assert_eq!(addr_of(&image.fds[0]), v4([10, 77, 0, 100], 8000));
        // So does a moving IPv6 address, with an IPv4 agent address.
        let moving: std::net::Ipv6Addr = "fd77::100".parse().unwrap();
        let mut a = (libc::AF_INET6 as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(&8000u16.to_be_bytes());
        a.extend_from_slice(&[0; 4]);
        a.extend_from_slice(&moving.octets());
        a.extend_from_slice(&[0; 4]);
        let mut e = socket(a.clone());
        if let FdKind::Socket { domain, .. } = &mut e.kind {
            *domain = libc::AF_INET6;
        }
        image.fds = vec![e];
        remap_socket_addresses(&mut image, here, &[moving.into()]);
        assert_eq!(addr_of(&image.fds[0]), a);
        let FdKind::Socket { options, .. } = &image.fds[0].kind else {
            unreachable!()
        };
        assert!(options.contains(&(libc::IPPROTO_IP, libc::IP_FREEBIND, 1)));
    }

    const IMAGE: &str = r#"{"pid":1,"comm":"t","exe":"/t","cwd":"/","umask":18,"threads":[],"mm":{"vmas":[],"fields":{"start_code":0,"end_code":0,"start_stack":0,"start_data":0,"end_data":0,"start_brk":0,"brk":0,"arg_start":0,"arg_end":0,"env_start":0,"env_end":0},"auxv":[]},"sigactions":[],"rlimits":[],"creds":{"uid":[0,0,0],"gid":[0,0,0],"groups":[],"caps":[0,0,0]},"fds":[],"vdso_hash":0,"tid_offset":null,"dumpable":1,"no_new_privs":false,"personality":0,"itimers":[],"posix_timers":[],"queued_signals":[],"pipes":[],"memfds":[],"shipped":[],"deputy":false}"#;
}
