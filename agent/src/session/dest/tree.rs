//! The destination's session for a process tree: the family rebuilt as
//! the core and each member's eager pages stream in, every member stopped
//! until the commit, then all let run; in post-copy each member's pages
//! still to come fill it through a userfaultfd of its own, one fault
//! handler serving them all.
//!
//! The commit rule holds as for one process ([`crate::session::commit`]):
//! until `Commit` the members are owned by their [`Restorer`]s, which kill
//! them when dropped; from the resume until every page is in, each member
//! with pages owed has a keeper that kills it if this agent dies, and a
//! failed post-copy kills them all.

use migrate_proto::image::TreeImage;
use migrate_proto::msg::MigrateOptions;

use super::*;
use crate::rebuild::family;
use running::{relay_streams, spawn_fault_threads, LiveNetwork, Reaped, SourceWatch};

/// A tree's id, image and options, as its core brought them.
pub(super) type TreeCore = (u64, Box<TreeImage>, MigrateOptions);

/// A member rebuilt and stopped (its [`Restorer`] kills it if dropped),
/// with what post-copy needs of it.
struct Member {
    r: Restorer,
    /// Its userfaultfd and the pages still to come, if any.
    lazy: Option<(std::os::fd::OwnedFd, LazyMap)>,
    /// Holds a copy of its userfaultfd; kills it if this agent dies.
    keeper: Option<Keeper>,
}

/// The root's forwarded standard streams: fd, our end, whether it is an
/// output, and its lane.
type Streams = Vec<(i32, std::os::fd::OwnedFd, bool, PeerStream)>;

/// The members running with pages owed, until post-copy ends.
struct TreeRunning {
    /// The root's end, for its deputy at home.
    reaped: Reaped,
    handler: Option<Arc<FaultHandler>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    keepers: Vec<Keeper>,
    beat: Option<peer::Heartbeat>,
    watch: SourceWatch,
    /// Its addresses and every member's connections here.
    network: LiveNetwork,
}

/// What a tree's session needs from the destination's.
pub(super) struct TreeSession<'a, 'p, 'f> {
    pub ctl: &'a mut PeerStream,
    pub seq: &'a Arc<Sequencer>,
    pub lanes: &'a PeerLanes<'p>,
    pub lineages: &'a Lineages,
    pub events: &'a mut Vec<(String, u64)>,
    pub fate: &'a mut Fate<'f>,
    pub limits: ImageLimits,
    pub local: std::net::IpAddr,
    /// This agent's binary (keepers).
    pub exe: &'a Path,
    /// The addresses that move with it, where they go on this host.
    pub addresses: Vec<crate::host::sys::IfAddr>,
}

impl TreeSession<'_, '_, '_> {
    /// Rebuilds the tree of `core` in `stub` (started with the root's
    /// pid), waits for the commit, lets every member run, and sees the
    /// source to its end.
    pub(super) fn run(&mut self, core: TreeCore, stub: Stub) -> Result<(), DestError> {
        let (id, mut tree, opts) = core;
        use migrate_proto::msg::Mode;
        if !matches!(opts.mode, Mode::StopCopy | Mode::PostCopy) {
            return Err(DestError::ImageRefused(format!(
                "a process tree in {} mode: trees move in post-copy or stop-and-copy",
                opts.mode.name()
            )));
        }
        tree.validate(&self.limits)
            .map_err(DestError::ImageRefused)?;
        for image in tree.images.iter_mut().flatten() {
            remap_socket_addresses(image, self.local, &opts.move_addresses);
        }
        info!(
            id,
            pid = tree.relations[0].pid,
            members = tree.relations.len(),
            "incoming process tree"
        );
        let demand = self
            .lanes
            .take(Lane::Demand(id), LANE_TIMEOUT)
            .ok_or_else(|| DestError::LaneMissing("demand lane".into()))?;
        let bulk = self
            .lanes
            .take(Lane::Bulk(id), LANE_TIMEOUT)
            .ok_or_else(|| DestError::LaneMissing("bulk lane".into()))?;
        let (built, streams) = self.build(&tree, stub, id)?;
        self.events.push(("rebuilt".into(), crate::unix_us()));
        let (signals, kin_signals) = self.await_commit(id, built[0].r.pid)?;
        if kin_signals.len() + 1 != tree.relations.len() {
            return Err(DestError::BadImage(format!(
                "the commit names signals for {} processes of a tree of {}",
                kin_signals.len() + 1,
                tree.relations.len()
            )));
        }
        let lanes = (demand, bulk);
        let running = self.resume(
            (id, &tree, &opts),
            (built, streams),
            (signals, kin_signals),
            &lanes,
        )?;
        self.post_copy(id, &tree, running, &lanes)
    }

    /// The family, rebuilt and stopped, one [`Member`] per living member
    /// in the tree's order. A member's pages still to come are registered
    /// once every member is forked (a fork would leave the child's
    /// unregistered).
    fn build(
        &mut self,
        tree: &TreeImage,
        stub: Stub,
        id: u64,
    ) -> Result<(Vec<Member>, Streams), DestError> {
        let (ctl, seq) = (&mut *self.ctl, self.seq);
        let images: Vec<Option<&ProcessImage>> = tree.images.iter().map(Option::as_ref).collect();
        let restorers = family::start(stub, &tree.relations, &images, |i, r| {
            receive_member_pages(ctl, seq, i, r)
        })?;
        match seq.recv::<SourceMsg>(ctl)? {
            SourceMsg::EagerDone => {}
            SourceMsg::Abort(why) => return Err(DestError::SourceAborted(why)),
            other => {
                return Err(DestError::Unexpected {
                    expected: "EagerDone",
                    got: format!("{other:?}"),
                })
            }
        }
        let mut kin = crate::fd::Kin::default();
        let mut built = Vec::new();
        for (i, (r, image)) in restorers.into_iter().zip(&tree.images).enumerate() {
            let (Some(mut r), Some(image)) = (r, image) else {
                continue;
            };
            let ToCome { map, ranges, .. } = pages_to_come_of(i, &image.mm.vmas, None)?;
            // (A child's own pages are not its parent's since its fork:
            // see `Restorer::fork_child`.)
            let lazy = if ranges.is_empty() {
                None
            } else {
                Some((r.userfaultfd(&ranges)?, map))
            };
            r.finish_in_tree(image, &kin)?;
            kin.note(r.pid, image);
            let keeper = match &lazy {
                Some((uffd, _)) => Some(
                    Keeper::armed(None, self.exe, uffd, r.pidfd(), &r.repaired()).map_err(
                        |source| DestError::Local {
                            step: "starting a keeper",
                            source,
                        },
                    )?,
                ),
                None => None,
            };
            built.push(Member { r, lazy, keeper });
        }
        failpoints::hit("dest.after-keeper")?;
        // The root's forwarded standard streams (the others' are the
        // root's, inherited): a lane each.
        let mut streams = Vec::new();
        if let Some(root) = built.first_mut() {
            for (fd, end, output) in root.r.take_forwarded() {
                let lane = self.lanes.take(Lane::Stdio(id, fd), LANE_TIMEOUT);
                let lane =
                    lane.ok_or_else(|| DestError::LaneMissing(format!("lane for fd {fd}")))?;
                streams.push((fd, end, output, lane));
            }
        }
        Ok((built, streams))
    }

    /// Says Ready (the root's pid) and waits for the source's commit;
    /// returns the signals pending on the root and on each other member.
    fn await_commit(&mut self, id: u64, pid: i32) -> Result<(Vec<i32>, Vec<Vec<i32>>), DestError> {
        let (ctl, seq) = (&mut *self.ctl, self.seq);
        failpoints::hit("dest.before-ready")?;
        seq.send(ctl, &DestMsg::Ready { pid })?;
        failpoints::hit("dest.after-ready")?;
        let committed = match seq.recv::<SourceMsg>(ctl) {
            Ok(SourceMsg::Commit {
                id: committed,
                signals,
                kin_signals,
            }) if committed == id => (signals, kin_signals),
            Ok(other) => return Err(DestError::NoCommit(format!("{other:?}"))),
            Err(e) => return Err(DestError::LostSource(e)),
        };
        failpoints::hit("dest.after-commit")?;
        Ok(committed)
    }

    /// Lets every member run, children before their parents (a parent
    /// let go first could wait for a child still stopped), each with the
    /// signals the source had pending for it, its pages still to come
    /// served from then on; says Resumed.
    fn resume(
        &mut self,
        (id, tree, opts): (u64, &TreeImage, &MigrateOptions),
        (mut built, streams): (Vec<Member>, Streams),
        (signals, kin_signals): (Vec<i32>, Vec<Vec<i32>>),
        (demand, bulk): &(PeerStream, PeerStream),
    ) -> Result<TreeRunning, DestError> {
        let local = |step: &'static str| move |source| DestError::Local { step, source };
        let root_pidfd = built[0].r.pidfd().try_clone().map_err(local("pidfd"))?;
        let spaces: Vec<_> = built.iter_mut().filter_map(|m| m.lazy.take()).collect();
        let handler = if spaces.is_empty() {
            None
        } else {
            let pidfd = root_pidfd.try_clone().map_err(local("pidfd"))?;
            let demand_w = demand.try_clone().map_err(FrameError::Io)?;
            let h = FaultHandler::new(spaces, demand_w, opts.prefetch, pidfd, None);
            Some(Arc::new(h.map_err(FrameError::Io)?))
        };
        let threads = match &handler {
            // The first member's restorer pinned this thread first: its
            // CPUs from before any pin.
            Some(h) => spawn_fault_threads(h, None, (demand, bulk), built[0].r.unpinned_cpus())?,
            None => Vec::new(),
        };
        let keepers: Vec<Keeper> = built.iter_mut().filter_map(|m| m.keeper.take()).collect();
        let network = LiveNetwork::bring(
            tree.relations[0].pid,
            &self.addresses,
            built.iter_mut().flat_map(|m| m.r.take_repaired()),
        )?;
        let living = tree
            .relations
            .iter()
            .zip(std::iter::once(signals).chain(kin_signals))
            .filter(|(r, _)| r.exit.is_none());
        let mut members: Vec<(Restorer, Vec<i32>)> = built
            .into_iter()
            .map(|m| m.r)
            .zip(living.map(|(_, s)| s))
            .collect();
        // Counted as run from the first member let go: a resume that fails
        // half-way kills the members not yet let go, and the others may
        // have run.
        self.fate.resuming(handler.is_some());
        let mut root_claim = None;
        let mut running = Vec::new();
        while let Some((r, signals)) = members.pop() {
            let is_root = members.is_empty();
            let pidfd = r.pidfd().try_clone();
            match (r.resume(&signals), pidfd) {
                (Ok((_, claim)), Ok(pidfd)) => {
                    running.push(pidfd);
                    if is_root {
                        root_claim = claim;
                    }
                }
                (resumed, _) => {
                    // Half a family runs nowhere: the members let go are
                    // killed too (those still stopped, as they drop).
                    for p in &running {
                        let _ = crate::host::sys::pidfd_kill(p, libc::SIGKILL);
                    }
                    if let Some(h) = &handler {
                        h.end(Outcome::Failed("the tree could not be resumed".into()));
                    }
                    self.fate.killed();
                    return Err(match resumed {
                        Err(e) => e.into(),
                        Ok(_) => DestError::Local {
                            step: "pidfd",
                            source: std::io::Error::last_os_error(),
                        },
                    });
                }
            }
        }
        if handler.is_none() {
            // Nothing owed: nothing kills it once it runs.
            self.fate.independent();
        }
        let root = tree.relations[0].pid;
        let root_image = tree.images[0]
            .as_ref()
            .ok_or_else(|| DestError::BadImage("the tree's root is a zombie".into()))?;
        self.lineages.set(
            root,
            migrate_proto::image::Lineage {
                moves: root_image.lineage.moves + 1,
                ..root_image.lineage.clone()
            },
        );
        // The root is reaped here when it ends (the others by their
        // parents, or, orphaned, by the agent's reaper), its deputy told.
        let reaped = Reaped::start(root, root_pidfd, (root_claim, None), root_image)
            .map_err(local("reaping the root"))?;
        relay_streams(streams);
        if failpoints::hit("dest.after-resume").is_err() {
            // As if the control lane broke once the tree runs.
            let _ = self.ctl.shutdown(Shutdown::Both);
        }
        self.events.push(("resumed".into(), crate::unix_us()));
        info!(id, pid = root, "process tree resumed");
        self.seq.send(self.ctl, &DestMsg::Resumed)?;
        let beat = self
            .ctl
            .try_clone()
            .ok()
            .map(|l| peer::Heartbeat::start(l, self.seq.clone(), DestMsg::Heartbeat));
        let watch = SourceWatch::start(self.ctl, self.seq.clone(), demand, bulk, id)?;
        Ok(TreeRunning {
            reaped,
            handler,
            threads,
            keepers,
            beat,
            watch,
            network,
        })
    }

    /// Post-copy until every page is in: then the keepers are released,
    /// the tree runs by itself, and the source hears `Complete`.
    fn post_copy(
        &mut self,
        id: u64,
        tree: &TreeImage,
        run: TreeRunning,
        (demand, bulk): &(PeerStream, PeerStream),
    ) -> Result<(), DestError> {
        let TreeRunning {
            reaped,
            handler,
            threads,
            keepers,
            beat,
            watch,
            network,
        } = run;
        let (mut outcome, discarded, faults) = match &handler {
            Some(h) => h.wait(),
            None => (Outcome::Complete, 0, Vec::new()),
        };
        let _ = demand.shutdown(Shutdown::Both);
        let _ = bulk.shutdown(Shutdown::Both);
        for t in threads {
            let _ = t.join();
        }
        if matches!(outcome, Outcome::Complete | Outcome::Exited) && !keepers.is_empty() {
            let released = failpoints::hit("dest.keeper-release")
                .map_err(std::io::Error::other)
                .and_then(|()| {
                    // Said before it is true: until the release is over,
                    // what becomes of the tree cannot be told.
                    self.fate.releasing();
                    keepers.into_iter().try_for_each(Keeper::release)
                });
            match released {
                Ok(()) => self.fate.independent(),
                Err(e) => {
                    // A keeper not released kills its member as it goes;
                    // the others are killed with it.
                    if let Some(h) = &handler {
                        h.end(Outcome::Failed(format!("releasing a keeper: {e}")));
                    }
                    self.fate.killed();
                    outcome = Outcome::Failed(format!("releasing a keeper: {e}"));
                }
            }
        }
        if let Outcome::Failed(why) = outcome {
            network.lose();
            return Err(DestError::CopyFailed(why));
        }
        network.keep();
        drop(beat);
        let (ctl, seq) = (&mut *self.ctl, self.seq);
        if failpoints::hit("dest.before-complete").is_err() {
            let _ = ctl.shutdown(Shutdown::Both);
        }
        self.events.push(("every page in".into(), crate::unix_us()));
        seq.send(
            ctl,
            &DestMsg::Complete {
                discarded_pages: discarded,
                faults,
                events: self.events.clone(),
                messages: seq.log(),
            },
        )?;
        if failpoints::hit("dest.after-complete").is_err() {
            let _ = ctl.shutdown(Shutdown::Both);
        }
        watch.wait_done(Duration::from_secs(30));
        info!(id, "process tree migration complete");
        if let Some(root) = &tree.images[0] {
            reaped.serve_deputy(self.lanes, id, &root.lineage.home);
        }
        Ok(())
    }
}

/// Receives member `index`'s own pages into its memory (`r`), up to the
/// source's `MemberDone` for it.
fn receive_member_pages(
    ctl: &mut PeerStream,
    seq: &Sequencer,
    index: usize,
    r: &mut Restorer,
) -> Result<(), DestError> {
    let mut writers = r.page_writers()?;
    loop {
        match frame::read_frame_into(ctl, writers.spare())? {
            Frame::Pages(h, data) => writers.write(h.addr, data)?,
            Frame::Zeros(_) => return Err(marks_in_the_freeze()),
            Frame::Control(body) => match seq.open::<SourceMsg>(&body)? {
                SourceMsg::MemberDone(i) if i as usize == index => return Ok(writers.finish()?),
                SourceMsg::Abort(why) => return Err(DestError::SourceAborted(why)),
                other => {
                    return Err(DestError::Unexpected {
                        expected: "the pages of the next process of the tree",
                        got: format!("{other:?}"),
                    })
                }
            },
        }
    }
}
