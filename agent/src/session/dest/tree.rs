//! The destination's session for a process tree (stop-and-copy): the
//! family rebuilt as the core and each member's pages stream in, every
//! member stopped until the commit, then all let run.
//!
//! The commit rule holds as for one process ([`crate::session::commit`]):
//! until `Commit` the members are owned by their [`Restorer`]s, which kill
//! them when dropped; nothing is owed after the resume, so the copy is
//! independent from its first instruction.

use migrate_proto::image::TreeImage;
use migrate_proto::msg::MigrateOptions;

use super::*;
use crate::rebuild::family;

/// A tree's id, image and options, as its core brought them.
pub(super) type TreeCore = (u64, Box<TreeImage>, MigrateOptions);

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
}

impl TreeSession<'_, '_, '_> {
    /// Rebuilds the tree of `core` in `stub` (started with the root's
    /// pid), waits for the commit, lets every member run, and sees the
    /// source to its end.
    pub(super) fn run(&mut self, core: TreeCore, stub: Stub) -> Result<(), DestError> {
        let (id, mut tree, opts) = core;
        if opts.mode != migrate_proto::msg::Mode::StopCopy {
            return Err(DestError::ImageRefused(format!(
                "a process tree in {} mode: trees move in stop-and-copy only",
                opts.mode.name()
            )));
        }
        tree.validate(&self.limits)
            .map_err(DestError::ImageRefused)?;
        for image in tree.images.iter_mut().flatten() {
            remap_socket_addresses(image, self.local);
        }
        info!(
            id,
            pid = tree.relations[0].pid,
            members = tree.relations.len(),
            "incoming process tree"
        );
        // The source opened the page lanes; nothing is owed on them.
        let _lanes = (
            self.lanes.take(Lane::Demand(id), LANE_TIMEOUT),
            self.lanes.take(Lane::Bulk(id), LANE_TIMEOUT),
        );
        let built = self.build(&tree, stub)?;
        self.events.push(("rebuilt".into(), crate::unix_us()));
        let (signals, kin_signals) = self.await_commit(id, built[0].pid)?;
        if kin_signals.len() + 1 != tree.relations.len() {
            return Err(DestError::BadImage(format!(
                "the commit names signals for {} processes of a tree of {}",
                kin_signals.len() + 1,
                tree.relations.len()
            )));
        }
        self.resume(id, &tree, built, signals, kin_signals)?;
        self.await_done(id)
    }

    /// The family, rebuilt and stopped, one [`Restorer`] per living
    /// member in the tree's order (dropped, they kill it).
    fn build(&mut self, tree: &TreeImage, stub: Stub) -> Result<Vec<Restorer>, DestError> {
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
        for (r, image) in restorers.into_iter().zip(&tree.images) {
            let (Some(mut r), Some(image)) = (r, image) else {
                continue;
            };
            r.finish_in_tree(image, &kin)?;
            kin.note(r.pid, image);
            built.push(r);
        }
        Ok(built)
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
    /// signals the source had pending for it; says Resumed.
    fn resume(
        &mut self,
        id: u64,
        tree: &TreeImage,
        built: Vec<Restorer>,
        signals: Vec<i32>,
        kin_signals: Vec<Vec<i32>>,
    ) -> Result<(), DestError> {
        let living = tree
            .relations
            .iter()
            .zip(std::iter::once(signals).chain(kin_signals))
            .filter(|(r, _)| r.exit.is_none());
        let mut members: Vec<(Restorer, Vec<i32>)> =
            built.into_iter().zip(living.map(|(_, s)| s)).collect();
        let root_pidfd = members[0]
            .0
            .pidfd()
            .try_clone()
            .map_err(|source| DestError::Local {
                step: "pidfd",
                source,
            })?;
        // Counted as run from the first member let go: a resume that fails
        // half-way kills the members not yet let go, and the others may
        // have run.
        self.fate.resuming(false);
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
        self.fate.independent();
        let root = tree.relations[0].pid;
        let lineage = tree.images[0]
            .as_ref()
            .map(|i| i.lineage.clone())
            .unwrap_or_default();
        self.lineages.set(
            root,
            migrate_proto::image::Lineage {
                moves: lineage.moves + 1,
                ..lineage
            },
        );
        // The root is reaped here when it ends (the others by their
        // parents, or, orphaned, by the agent's reaper).
        std::thread::spawn(move || {
            let _claim = root_claim;
            let _ = crate::host::sys::wait_exit(root, &root_pidfd);
        });
        if failpoints::hit("dest.after-resume").is_err() {
            // As if the control lane broke once the tree runs.
            let _ = self.ctl.shutdown(Shutdown::Both);
        }
        self.events.push(("resumed".into(), crate::unix_us()));
        info!(id, pid = root, "process tree resumed");
        self.seq.send(self.ctl, &DestMsg::Resumed)?;
        Ok(())
    }

    /// Nothing is owed: says Complete at once and waits for the source's
    /// `Done` (or its close).
    fn await_done(&mut self, id: u64) -> Result<(), DestError> {
        let (ctl, seq) = (&mut *self.ctl, self.seq);
        if failpoints::hit("dest.before-complete").is_err() {
            let _ = ctl.shutdown(Shutdown::Both);
        }
        self.events.push(("every page in".into(), crate::unix_us()));
        seq.send(
            ctl,
            &DestMsg::Complete {
                discarded_pages: 0,
                faults: Vec::new(),
                events: self.events.clone(),
            },
        )?;
        if failpoints::hit("dest.after-complete").is_err() {
            let _ = ctl.shutdown(Shutdown::Both);
        }
        let _ = ctl.set_read_timeout(Some(Duration::from_secs(30)));
        loop {
            match seq.recv::<SourceMsg>(ctl) {
                Ok(SourceMsg::Heartbeat) => continue,
                Ok(SourceMsg::Done) | Err(_) => break,
                Ok(other) => {
                    warn!(id, ?other, "unexpected message from the source at the end");
                    break;
                }
            }
        }
        info!(id, "process tree migration complete");
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
    loop {
        match frame::read_frame(ctl)? {
            Frame::Pages(h, data) => r.write_pages(h.addr, &data)?,
            Frame::Control(body) => match seq.open::<SourceMsg>(&body)? {
                SourceMsg::MemberDone(i) if i as usize == index => return Ok(()),
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
