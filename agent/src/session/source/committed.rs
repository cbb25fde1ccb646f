//! The session from the commit on: the commit itself, then post-copy and
//! its end (or the loss of the destination).

use super::*;

impl Session<'_, '_> {
    /// The commit: from here the original never runs again unless its copy
    /// is known gone.
    pub(super) fn commit(&mut self, r: ReadyState) -> State {
        let (pid, new_pid) = (self.pid, r.new_pid);
        self.rec.new_pid = new_pid;
        self.rec.timeline.restored = us(self.t0);
        self.event("commit");
        let FrozenState {
            mut abort,
            ctl,
            seq,
            demand,
            bulk,
            tracker,
            streams,
            lazy,
            t_freeze,
            moved,
            frozen,
            kin,
        } = r.frozen;
        let signals = pending_signals(&frozen);
        // A tree's other members: their signals, threads and connections
        // join the root's.
        let mut kin_signals = Vec::new();
        let mut kin_tasks = Vec::new();
        let mut kin_reset = Vec::new();
        let mut in_repair = crate::fd::tcp_repair::InRepair::default();
        let mut kin_mems = Vec::new();
        for m in kin.into_iter().flat_map(|k| k.members) {
            kin_signals.push(m.as_ref().map(pending_signals).unwrap_or_default());
            kin_mems.push(m.map(|m| {
                kin_tasks.extend(m.tasks);
                kin_reset.extend(m.to_reset);
                in_repair.extend(m.in_repair);
                m.mem
            }));
        }
        let frozen_terminal = frozen.image.fds.iter().any(|e| {
            matches!(
                e.kind,
                migrate_proto::image::FdKind::Forwarded { terminal: true, .. }
            )
        });
        let Frozen {
            mut tasks,
            mem,
            mut to_reset,
            in_repair: root_repair,
            ..
        } = frozen;
        in_repair.extend(root_repair);
        let root_threads = tasks.len();
        tasks.extend(kin_tasks);
        to_reset.extend(kin_reset);
        // Its connections on moved addresses go quiet: the original's end,
        // from here on, must not reach their peers.
        if let Err(e) = in_repair.silence() {
            let why = format!("putting the original's connections in repair mode: {e}");
            abort.because(why.clone());
            // Addresses and connections back before the original runs on.
            drop(moved);
            drop(in_repair);
            drop(tasks);
            return State::Over(failed(why, true));
        }
        // From here a dropped original is killed: a panic is answered as
        // after the commit.
        self.committed.set(Some((self.id, new_pid)));
        let mut task = FrozenOriginal(tasks, HeldNetwork { moved, in_repair });
        // From the commit on, the original must never run again: if this
        // agent dies, the kernel kills it rather than letting it go on
        // beside its copy.
        for t in &mut task.0 {
            if let Err(e) = t.set_options(libc::PTRACE_O_TRACESYSGOOD | libc::PTRACE_O_EXITKILL) {
                warn!(error = %error_chain(&e), "setting PTRACE_O_EXITKILL on the original");
            }
        }
        abort.disarm();
        let mem = Arc::new(Memories(
            std::iter::once(Some(mem)).chain(kin_mems).collect(),
        ));
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
            kin_signals,
            root_threads,
            task,
        }))
    }

    /// Sends the commit, then serves post-copy until the destination has
    /// every page (complete: the original is killed, or becomes the
    /// deputy) or is lost ([`after_loss`]).
    pub(super) fn finish(&mut self, c: CommittedState) -> Reply {
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
            kin_signals,
            root_threads,
            task,
        } = c;
        let t0 = self.t0;
        let started_unix_us = self.rec.started_unix_us;
        let new_pid = self.rec.new_pid;
        let uid = self.caller.uid;
        let mut rec = std::mem::take(&mut self.rec);
        let progress = &mut *self.progress;
        let event = |rec: &mut MigrationRecord, what: &str| note(rec, t0, cx.host, what);
        let early = match commit_answer(&mut ctl, &seq, id, (signals, kin_signals), cx.to) {
            CommitAnswer::Resumed => None,
            CommitAnswer::NeverRan(error) => {
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
            CommitAnswer::Lost(what, copy_gone) => Some((what, copy_gone)),
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
        relay_streams(streams);
        progress(&Reply::Resumed(rec.clone()));

        // Post-copy: no bound on how long the process takes to touch its pages,
        // but both agents beat every second and each counts the other gone
        // after PEER_SILENCE without a word. The end is awaited on another
        // thread; meanwhile the caller hears how far it got.
        let beat = ctl
            .try_clone()
            .ok()
            .map(|l| peer::Heartbeat::start(l, seq.clone(), SourceMsg::Heartbeat));
        let end = await_end(&ctl, &seq, &counters, rec.lazy_pages, t0, progress);
        // Silence from here on: a destination that is alive but cut off
        // counts us gone and kills its copy.
        drop(beat);
        let lost_at = Instant::now();
        let complete = matches!(end, Ok(DestMsg::Complete { .. }));
        let original = (task, root_threads);
        let kept = release_original(complete, frozen_terminal, original, &mem, cx, id, pid);
        let _ = demand.shutdown(Shutdown::Both);
        let _ = bulk.shutdown(Shutdown::Both);
        for s in servers {
            let _ = s.join();
        }
        count_pages(&mut rec, &counters);
        rec.moved_pages = (rec.demand_pages + rec.pushed_pages).min(rec.lazy_pages);
        match end {
            Ok(DestMsg::Complete {
                discarded_pages,
                faults,
                events,
                messages,
            }) => {
                merge_events(&mut rec, events, started_unix_us);
                let (ours, our_unlogged) = seq.log();
                rec.messages = migrate_proto::record::pair_messages(
                    (cx.host, &ours),
                    (&rec.to, &messages.0),
                    started_unix_us,
                    rec.clock_offset_us,
                );
                rec.messages_unlogged = our_unlogged + messages.1;
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
                rec.moved_pages = rec.lazy_pages;
                info!(id, pid, new_pid, residual_us = rec.residual_us, "complete");
                Reply::Complete(rec)
            }
            other => {
                let (what, copy_gone) = why_lost(other, cx.to);
                let _ = ctl.shutdown(Shutdown::Both);
                let Some(task) = kept else {
                    return lost(&mut rec, what, pid, cx.to);
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

/// Adds milestone `what` of this host to `rec`, at its time since `t0`.
fn note(rec: &mut MigrationRecord, t0: Instant, host: &str, what: &str) {
    rec.events.push(Event {
        at_us: us(t0) as i64,
        host: host.to_string(),
        what: what.to_string(),
    })
}

/// The answer when the destination was lost after the commit and the
/// original (`pid`) was killed: the process runs on `to` or nowhere.
fn lost(rec: &mut MigrationRecord, what: String, pid: i32, to: &str) -> Reply {
    rec.outcome = what.clone();
    Reply::Failed {
        error: format!(
            "{what}; the original (pid {pid}) was killed: the process is lost unless it runs on {to}"
        ),
        resumed_original: false,
        record: Some(Box::new(rec.clone())),
    }
}

/// What the destination answered to the commit.
#[derive(Debug)]
pub(super) enum CommitAnswer {
    /// Its copy runs.
    Resumed,
    /// It failed before its copy ever ran: the commit is void.
    NeverRan(String),
    /// Lost, or its copy failed after running (`true`: known gone).
    Lost(String, bool),
}

/// Sends the commit to destination `to` and reads the answer.
pub(super) fn commit_answer(
    ctl: &mut PeerStream,
    seq: &Sequencer,
    id: u64,
    (signals, kin_signals): (Vec<i32>, Vec<Vec<i32>>),
    to: &str,
) -> CommitAnswer {
    let commit = SourceMsg::Commit {
        id,
        signals,
        kin_signals,
    };
    let committed = seq.send(ctl, &commit).and_then(|()| {
        // As if the lane broke once the commit was sent.
        failpoints::hit("source.after-commit-sent")
            .map_err(|e| frame::FrameError::Io(std::io::Error::other(e)))
    });
    if let Err(e) = committed {
        return CommitAnswer::Lost(format!("lost {} at commit: {}", to, error_chain(&e)), false);
    }
    let _ = ctl.set_read_timeout(Some(REPLY_TIMEOUT));
    match seq.recv::<DestMsg>(ctl) {
        Ok(DestMsg::Resumed) => CommitAnswer::Resumed,
        Ok(DestMsg::Failed { error, ran: false }) => CommitAnswer::NeverRan(error),
        Ok(DestMsg::Failed { error, ran: true }) => CommitAnswer::Lost(
            format!("{} could not resume the process: {error}", to),
            true,
        ),
        Ok(other) => CommitAnswer::Lost(
            format!("{} did not resume the process: {other:?}", to),
            false,
        ),
        Err(e) => CommitAnswer::Lost(
            format!("lost {} after commit: {}", to, error_chain(&e)),
            false,
        ),
    }
}

/// Post-copy: no bound on how long the process takes to touch its pages,
/// but both agents beat every second and each counts the other gone after
/// PEER_SILENCE without a word. The end is awaited on another thread;
/// meanwhile the caller hears how far it got.
fn await_end(
    ctl: &PeerStream,
    seq: &Arc<Sequencer>,
    counters: &Counters,
    lazy_pages: u64,
    t0: Instant,
    progress: &mut dyn FnMut(&Reply),
) -> Result<DestMsg, frame::FrameError> {
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
    loop {
        match end_rx.recv_timeout(PROGRESS_EVERY) {
            Ok(end) => break end,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => progress(&Reply::Progress {
                moved_pages: counters.demand_pages.load(Ordering::Relaxed)
                    + counters.pushed_pages.load(Ordering::Relaxed),
                total_pages: lazy_pages,
                elapsed_us: us(t0),
            }),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                break Err(frame::FrameError::Io(std::io::Error::other(
                    "the control lane reader ended",
                )))
            }
        }
    }
}

/// The post-copy counters, into the record.
fn count_pages(rec: &mut MigrationRecord, counters: &Counters) {
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
}

/// The original once post-copy is over: with every page in, killed (or,
/// if a terminal's session leader waits for its pid, made the deputy);
/// otherwise kept, for the loss to decide.
fn release_original(
    complete: bool,
    frozen_terminal: bool,
    (mut task, root_threads): (FrozenOriginal, usize),
    mem: &Memories,
    cx: &SourceCtx<'_>,
    id: u64,
    pid: i32,
) -> Option<FrozenOriginal> {
    if complete && frozen_terminal {
        // A terminal's session leader waits for this pid: the original
        // becomes the deputy that stands in for the process here.
        crate::session::deputy::made(pid);
        // Of a tree, the root alone stays.
        task.kill_after(root_threads);
        let deputized = match mem.first() {
            Some(mem) => deputize(task, mem, cx, id),
            None => Err("the original's memory is not at hand".to_string()),
        };
        if let Err(e) = deputized {
            warn!(error = %e, "the deputy could not be made: the original was killed");
        }
        None
    } else if complete {
        // Its deputy (if this host served one) now talks to the new host.
        crate::session::deputy::moved(pid, cx.addr, id);
        task.kill();
        None
    } else {
        Some(task)
    }
}

/// The destination's events, on this host's time axis, into the record.
fn merge_events(rec: &mut MigrationRecord, events: Vec<(String, u64)>, started_unix_us: u64) {
    for (what, at) in events {
        rec.events.push(Event {
            at_us: at as i64 - rec.clock_offset_us - started_unix_us as i64,
            host: rec.to.clone(),
            what,
        });
    }
}

/// Why post-copy ended without `Complete`: the destination said its copy
/// is gone (`true`), or it went silent or off script.
fn why_lost(end: Result<DestMsg, frame::FrameError>, to: &str) -> (String, bool) {
    match end {
        Ok(DestMsg::Failed { error, .. }) => (format!("post-copy failed on {to}: {error}"), true),
        Ok(m) => (format!("unexpected answer from {to}: {m:?}"), false),
        Err(e) => (
            format!("lost {to} during post-copy: {}", error_chain(&e)),
            false,
        ),
    }
}

/// From here this host is the process's home for its standard streams:
/// each forwarded stream relayed over its lane.
fn relay_streams(streams: Vec<(i32, std::os::fd::OwnedFd, bool, PeerStream)>) {
    for (fd, end, output, lane) in streams {
        if output {
            crate::net::relay::spawn_from_peer(fd, lane, end);
        } else {
            crate::net::relay::spawn_to_peer(fd, end, lane);
        }
    }
}
