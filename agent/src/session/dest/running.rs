//! The copy from the commit on: resumed, then its memory filled as pages
//! arrive or faults ask for them, with the source watched.

use super::*;
use crate::host::sys::AffinityWords;
use crate::net::spares::Spares;
use crate::postcopy::content::Received;
use std::sync::{mpsc, Mutex};

/// Pushed frames received and not yet taken by an installer, at most: 1 MiB
/// at the push's 64-page frames (a frame is at most
/// [`frame::MAX_PAGES_PER_FRAME`] pages).
const PUSH_QUEUE: usize = 4;
/// Threads installing pushed pages. Two make the 2 GiB post-copy's total
/// shorter on a 2-vCPU VM (2.97 against 3.50 s) but the workload's faults
/// and page writes during it slower, and its downtime longer (README,
/// 2026-12-05, measured twice: with the post-copy threads held on one CPU
/// and with them free): one.
const PUSH_INSTALLERS: usize = 1;

/// After the resume, the only reader of the control lane: skips the
/// source's heartbeats, and if it falls silent for [`peer::PEER_SILENCE`]
/// closes the page lanes (the fault handler then fails and the process is
/// killed). Its last message (`Done`) is handed over.
pub(super) struct SourceWatch {
    done: std::sync::mpsc::Receiver<()>,
    finished: Arc<std::sync::atomic::AtomicBool>,
}

impl SourceWatch {
    pub(super) fn start(
        ctl: &PeerStream,
        seq: Arc<Sequencer>,
        demand: &PeerStream,
        bulk: &PeerStream,
        id: u64,
    ) -> Result<SourceWatch, FrameError> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let mut reader = ctl.try_clone().map_err(FrameError::Io)?;
        let lanes = [
            demand.try_clone().map_err(FrameError::Io)?,
            bulk.try_clone().map_err(FrameError::Io)?,
        ];
        reader
            .set_read_timeout(Some(peer::PEER_SILENCE))
            .map_err(FrameError::Io)?;
        let finished = Arc::new(AtomicBool::new(false));
        let over = finished.clone();
        let (tx, done) = std::sync::mpsc::channel();
        std::thread::spawn(move || loop {
            match seq.recv::<SourceMsg>(&mut reader) {
                Ok(SourceMsg::Heartbeat) => continue,
                Ok(SourceMsg::Done) => {
                    let _ = tx.send(());
                    return;
                }
                Ok(other) => {
                    warn!(
                        id,
                        ?other,
                        "unexpected message from the source during post-copy"
                    );
                    return;
                }
                Err(e) => {
                    if !over.load(Ordering::Relaxed) {
                        warn!(
                            id,
                            error = %error_chain(&e),
                            "lost the source during post-copy: its lanes are closed (the process is killed if it still needs pages only the source has)"
                        );
                        for l in &lanes {
                            let _ = l.shutdown(Shutdown::Both);
                        }
                    }
                    return;
                }
            }
        });
        Ok(SourceWatch { done, finished })
    }

    /// Waits up to `limit` for the source's `Done`.
    pub(super) fn wait_done(&self, limit: Duration) {
        let _ = self.done.recv_timeout(limit);
    }
}

impl Drop for SourceWatch {
    fn drop(&mut self) {
        self.finished
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A resumed copy's end, for its deputy on the home host: the copy is
/// reaped here when it ends (this agent is its subreaper, or holds its
/// claim) and how it ended is told on a channel, which the deputy's lane
/// serves once post-copy is over.
pub(super) struct Reaped {
    pid: i32,
    /// A deputy stays on the home host (a forwarded terminal).
    terminal: bool,
    pidfd: std::os::fd::OwnedFd,
    tx: std::sync::mpsc::Sender<migrate_proto::msg::DeputyMsg>,
    rx: std::sync::mpsc::Receiver<migrate_proto::msg::DeputyMsg>,
}

impl Reaped {
    /// Reaps `pid` (whose pidfd is `pidfd`, claimed by `claim`; or, in a
    /// pid namespace of its own, that namespace's init) when it ends;
    /// `image` says whether it left a deputy at home.
    pub(super) fn start(
        pid: i32,
        pidfd: std::os::fd::OwnedFd,
        (claim, ns_init): (
            Option<crate::host::children::Claim>,
            Option<crate::rebuild::restore::NsInit>,
        ),
        image: &ProcessImage,
    ) -> std::io::Result<Reaped> {
        let terminal = image.deputy
            || image.fds.iter().any(|e| {
                matches!(
                    e.kind,
                    migrate_proto::image::FdKind::Forwarded { terminal: true, .. }
                )
            });
        if terminal {
            // From now on it has a deputy at home (made at completion).
            crate::session::deputy::hosted(pid, true);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let told = tx.clone();
        let reap_pidfd = pidfd.try_clone()?;
        std::thread::spawn(move || {
            let _claim = claim;
            let ended = match ns_init {
                Some(init) => init.wait(),
                None => crate::host::sys::wait_exit(pid, &reap_pidfd),
            };
            if let Ok((code, signal)) = ended {
                let exited = migrate_proto::msg::DeputyMsg::Exited { code, signal };
                if told.send(exited).is_err() {
                    // Nobody serves a deputy for it (none, or post-copy failed).
                    crate::session::deputy::hosted(pid, false);
                }
            }
        });
        Ok(Reaped {
            pid,
            terminal,
            pidfd,
            tx,
            rx,
        })
    }

    /// Post-copy is over: a copy with a deputy at home serves the lane the
    /// deputy opens from `home`.
    pub(super) fn serve_deputy(self, lanes: &PeerLanes<'_>, id: u64, home: &str) {
        if !self.terminal {
            return;
        }
        // The source turns the original into a deputy now.
        match lanes.take_from(Lane::Deputy(id), home, Duration::from_secs(30)) {
            Some(lane) => {
                crate::session::deputy::serve_remote(self.pid, lane, self.pidfd, self.tx, self.rx)
            }
            None => {
                crate::session::deputy::hosted(self.pid, false);
                warn!(id, "the deputy never called");
            }
        }
    }
}

/// Starts the relays of forwarded standard streams (fd, our end, whether
/// it is an output, its lane): this host is now the process's.
pub(super) fn relay_streams(streams: Vec<(i32, std::os::fd::OwnedFd, bool, PeerStream)>) {
    for (fd, end, output, lane) in streams {
        if output {
            crate::net::relay::spawn_to_peer(fd, end, lane);
        } else {
            crate::net::relay::spawn_from_peer(fd, lane, end);
        }
    }
}

impl Receiving<'_, '_, '_> {
    /// Lets the copy run: starts the fault handler and the page lanes'
    /// readers, resumes it, and says so.
    pub(super) fn resume(&mut self, b: Built, signals: Vec<i32>) -> Result<Running, DestError> {
        let ctl = &mut *self.ctl;
        let (seq, id, image, lineages, prefetch) =
            (self.seq, self.id, self.image, self.lineages, self.prefetch);
        let events = &mut *self.events;
        let fate = &mut *self.fate;
        let t0 = self.t0;
        let step = |what: &str| debug!(id, us = t0.elapsed().as_micros() as u64, "rebuild: {what}");
        let Built {
            mut r,
            map,
            uffd,
            local,
            keeper,
            streams,
            demand,
            bulk,
        } = b;
        let pidfd = r.pidfd().try_clone().map_err(|source| DestError::Local {
            step: "pidfd",
            source,
        })?;
        let handler = match uffd {
            Some(u) => {
                let demand_w = demand.try_clone().map_err(FrameError::Io)?;
                Some(Arc::new(
                    FaultHandler::new(vec![(u, map)], demand_w, prefetch, pidfd, local.clone())
                        .map_err(FrameError::Io)?,
                ))
            }
            None => None,
        };
        let threads = match &handler {
            Some(h) => spawn_fault_threads(h, local, (&demand, &bulk), r.unpinned_cpus())?,
            None => Vec::new(),
        };
        let deputy_pidfd = r.pidfd().try_clone().map_err(FrameError::Io)?;
        step("committed, fault handler started");
        let network = LiveNetwork::bring(r.pid, &self.addresses, r.take_repaired())?;
        // Counted as run from the first thread let go: a resume that fails or
        // panics half-way kills the process (the Restorer's drop), but some of
        // it may have run.
        fate.resuming(handler.is_some());
        let ns_init = r.take_ns_init();
        let (new_pid, claim) = r.resume(&signals)?;
        if handler.is_none() {
            // Without pages owed nothing kills it once it runs.
            fate.independent();
        }
        step("resumed");
        lineages.set(
            new_pid,
            migrate_proto::image::Lineage {
                moves: image.lineage.moves + 1,
                ..image.lineage.clone()
            },
        );
        let reaped = Reaped::start(new_pid, deputy_pidfd, (claim, ns_init), image)
            .map_err(FrameError::Io)?;
        relay_streams(streams);
        if failpoints::hit("dest.after-resume").is_err() {
            // As if the control lane broke once the process runs.
            let _ = ctl.shutdown(Shutdown::Both);
        }
        events.push(("resumed".into(), crate::unix_us()));
        info!(id, new_pid, "resumed");
        if let Some(addr) = image.lineage.shim {
            crate::capture::coop::tell(new_pid, addr, migrate_proto::shim::Phase::Resumed);
        }
        seq.send(ctl, &DestMsg::Resumed)?;
        // Both agents beat until the end; a source silent for PEER_SILENCE is
        // gone (dead, or cut off): its pages cannot come, so the lanes are
        // closed and the process is killed rather than left waiting forever.
        let beat = ctl
            .try_clone()
            .ok()
            .map(|l| peer::Heartbeat::start(l, seq.clone(), DestMsg::Heartbeat));
        let watch = SourceWatch::start(ctl, seq.clone(), &demand, &bulk, id)?;

        Ok(Running {
            new_pid,
            network,
            handler,
            threads,
            keeper,
            reaped,
            beat,
            watch,
            demand,
            bulk,
        })
    }

    /// Post-copy until every page is in: then the keeper is released, the
    /// copy runs by itself, and the source hears `Complete`.
    pub(super) fn post_copy(&mut self, run: Running) -> Result<(), DestError> {
        let ctl = &mut *self.ctl;
        let (seq, id, image, lanes) = (self.seq, self.id, self.image, self.lanes);
        let events = &mut *self.events;
        let fate = &mut *self.fate;
        let t0 = self.t0;
        let end_step = |what: &str| {
            debug!(
                id,
                us = t0.elapsed().as_micros() as u64,
                "post-copy: {what}"
            )
        };
        let Running {
            new_pid,
            network,
            handler,
            threads,
            keeper,
            reaped,
            beat,
            watch,
            demand,
            bulk,
        } = run;
        let (outcome, discarded, faults) = match &handler {
            Some(h) => h.wait(),
            None => (Outcome::Complete, 0, Vec::new()),
        };
        end_step("every page in");
        // Unblock the lane readers.
        let _ = demand.shutdown(Shutdown::Both);
        let _ = bulk.shutdown(Shutdown::Both);
        for t in threads {
            let _ = t.join();
        }
        // Every userfaultfd of ours is closed by now: the keeper's copy is the
        // last, and its exit unregisters the ranges.
        let mut outcome = outcome;
        match (&outcome, keeper) {
            (Outcome::Complete | Outcome::Exited, Some(k)) => {
                let released = failpoints::hit("dest.keeper-release")
                    .map_err(std::io::Error::other)
                    .and_then(|()| {
                        // Said before it is true: until the release is
                        // over, what becomes of it cannot be told.
                        fate.releasing();
                        k.release()
                    });
                match released {
                    // Released: nothing kills it any more.
                    Ok(()) => fate.independent(),
                    Err(e) => {
                        // Unreleased, the keeper kills the process as it goes.
                        fate.killed();
                        outcome = Outcome::Failed(format!("releasing the keeper: {e}"));
                    }
                }
            }
            (_, k) => drop(k),
        }
        end_step("lanes closed, userfaultfds released");
        match outcome {
            Outcome::Complete | Outcome::Exited => {
                network.keep();
                if outcome == Outcome::Exited {
                    info!(id, new_pid, "the process exited during post-copy");
                }
                drop(beat);
                if failpoints::hit("dest.before-complete").is_err() {
                    // As if the control lane broke: `Complete` cannot go.
                    let _ = ctl.shutdown(Shutdown::Both);
                }
                seq.send(
                    ctl,
                    &DestMsg::Complete {
                        discarded_pages: discarded,
                        faults,
                        events: {
                            events.push(("every page in".into(), crate::unix_us()));
                            events.clone()
                        },
                        messages: seq.log(),
                    },
                )?;
                if failpoints::hit("dest.after-complete").is_err() {
                    // As if the control lane broke: `Done` never comes.
                    let _ = ctl.shutdown(Shutdown::Both);
                }
                // Wait for the source's Done (or its close).
                watch.wait_done(Duration::from_secs(30));
                end_step("source released");
                info!(id, new_pid, "post-copy complete");
                reaped.serve_deputy(lanes, id, &image.lineage.home);
                Ok(())
            }
            Outcome::Failed(why) => {
                network.lose();
                Err(DestError::CopyFailed(why))
            }
        }
    }
}

/// A copy's moved addresses, put on this host, and our copies of its
/// repaired connections, live: kept once every page is in; if it dies
/// owed pages, its connections are silenced and its addresses leave.
pub(super) struct LiveNetwork {
    added: crate::host::address::Added,
    connections: Vec<std::os::fd::OwnedFd>,
}

impl LiveNetwork {
    /// Puts `addresses` on this host for process `pid` (announced), then
    /// takes the `repaired` connections out of repair.
    pub(super) fn bring(
        pid: i32,
        addresses: &[crate::host::sys::IfAddr],
        repaired: impl IntoIterator<Item = crate::fd::tcp_repair::Repaired>,
    ) -> Result<LiveNetwork, DestError> {
        let added = crate::host::address::Added::put_on(pid, addresses)?;
        let connections = repaired
            .into_iter()
            .map(|c| c.go_live())
            .collect::<Result<_, _>>()
            .map_err(|source| DestError::Local {
                step: "taking a connection out of repair",
                source,
            })?;
        Ok(LiveNetwork { added, connections })
    }

    /// The process owns its addresses here from now on.
    pub(super) fn keep(self) {
        self.added.let_go();
    }

    /// Killed owed pages: its ends reach no peer, and its addresses leave
    /// with it.
    pub(super) fn lose(self) {
        crate::fd::tcp_repair::silence(&self.connections);
        drop(self.added);
    }
}

/// The threads of post-copy on the destination: the fault loop, the
/// pre-copied pages installed in the background, one reader for each page
/// lane (the demand lane's installs what it reads), and the installers of
/// the pushed pages, in the background.
///
/// They are started before the resume, by the thread the restore pins to
/// one CPU for ptrace: each first takes back the CPUs that thread had
/// (`cpus`), as they drive no ptrace.
pub(super) fn spawn_fault_threads(
    h: &Arc<FaultHandler>,
    local: Option<Arc<LocalPages>>,
    (demand, bulk): (&PeerStream, &PeerStream),
    cpus: Option<AffinityWords>,
) -> Result<Vec<std::thread::JoinHandle<()>>, DestError> {
    use crate::postcopy::spawn_on;
    let mut threads = Vec::new();
    let h1 = h.clone();
    threads.push(spawn_on("fault-loop", cpus, move || h1.run()));
    if let Some(local) = local {
        // Pre-copied pages go in from here, in the background.
        let h3 = h.clone();
        threads.push(spawn_on("local-install", cpus, move || {
            h3.install_local(&local)
        }));
    }
    // Pushed pages go in in the background, from threads of their own
    // (see `PUSH_INSTALLERS`): the push's reader takes the next frame off
    // the lane (and opens it) while the installers take the last ones. The
    // demand lane and the fault loop come first. The frames' buffers go
    // back to the reader once installed: as many are kept as can be in
    // flight (queued, being installed, being read).
    let (queue, queued) = mpsc::sync_channel::<Received>(PUSH_QUEUE);
    let queued = Arc::new(Mutex::new(queued));
    let spares = Arc::new(Spares::new(PUSH_QUEUE + PUSH_INSTALLERS + 1));
    for _ in 0..PUSH_INSTALLERS {
        let (h4, queued, spares) = (h.clone(), queued.clone(), spares.clone());
        threads.push(spawn_on("push-install", cpus, move || {
            let _ = crate::host::sys::set_thread_nice(crate::net::peer::BULK_NICE);
            loop {
                let next = queued.lock().unwrap_or_else(|e| e.into_inner()).recv();
                let Ok(pages) = next else { return };
                h4.install_background(pages.addr, pages.content());
                if let Some(buf) = pages.into_bytes() {
                    spares.give(buf);
                }
            }
        }));
    }
    let h5 = h.clone();
    // The demand lane's reader installs what it read itself, into one
    // buffer used again.
    let demand_spares = Arc::new(Spares::new(1));
    let given_back = demand_spares.clone();
    let demand_install: Install = Box::new(move |pages| {
        h5.install(pages.addr, pages.content());
        if let Some(buf) = pages.into_bytes() {
            given_back.give(buf);
        }
        true
    });
    // Fails only if the installers are gone (they end when the queue's
    // sender is dropped, or by a panic).
    let push_install: Install = Box::new(move |pages| queue.send(pages).is_ok());
    type Install = Box<dyn FnMut(Received) -> bool + Send>;
    type Failpoint = fn() -> Result<(), failpoints::Injected>;
    let lanes: [(&str, PeerStream, Install, Failpoint, Arc<Spares>); 2] = [
        (
            "demand",
            demand.try_clone().map_err(FrameError::Io)?,
            demand_install,
            || failpoints::hit("dest.demand"),
            demand_spares,
        ),
        (
            "bulk",
            bulk.try_clone().map_err(FrameError::Io)?,
            push_install,
            || failpoints::hit("dest.push"),
            spares,
        ),
    ];
    for (lane, mut s, mut install, failpoint, spares) in lanes {
        let h2 = h.clone();
        let name = if lane == "bulk" {
            "push-read"
        } else {
            "demand-read"
        };
        threads.push(spawn_on(name, cpus, move || {
            if lane == "bulk" {
                let _ = crate::host::sys::set_thread_nice(crate::net::peer::BULK_NICE);
            }
            let mut pushed = false;
            loop {
                match frame::read_frame_into(&mut s, spares.take()).map(Received::of) {
                    Ok(Ok(_)) if failpoint().is_err() => {
                        h2.end(Outcome::Failed(format!("lost the source ({lane} lane)")));
                        return;
                    }
                    Ok(Ok(pages)) => {
                        if !install(pages) {
                            h2.end(Outcome::Failed(format!(
                                "the {lane} lane's installers are gone"
                            )));
                            return;
                        }
                    }
                    Ok(Err(Frame::Control(body)))
                        if lane == "bulk" && frame::decode::<PushDone>(&body).is_ok() =>
                    {
                        pushed = true;
                    }
                    Ok(Err(_)) => {
                        h2.end(Outcome::Failed(format!(
                            "unexpected message on the {lane} lane"
                        )));
                        return;
                    }
                    Err(e) => {
                        // The push lane closes once the push said it
                        // is over; closed before, pages may never come.
                        // Only pages the source has are missed: those
                        // pre-copied here go in without it.
                        if (lane == "demand" || !pushed) && h2.needs_source() {
                            h2.end(Outcome::Failed(format!(
                                "lost the source ({lane} lane): {e}"
                            )));
                        }
                        return;
                    }
                }
            }
        }));
    }
    Ok(threads)
}
