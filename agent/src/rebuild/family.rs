//! How a tree of processes is made again: the plan its stubs follow
//! ([`StubNode`]), from the relations the source saw. Parents come before
//! their children; the root leads a new session and process group, which
//! take the place of the session and group it had on the source when
//! those were led from outside the tree.

use std::path::Path;

use migrate_proto::image::{ProcessImage, Relation};

use crate::host::sys::StubNode;
use crate::rebuild::restore::{note_shmem, KinShmem, RestoreError, Restorer, Stub};

/// Why a tree's relations cannot be made again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A member's parent is neither in the tree nor listed before it.
    #[error("process {pid}'s parent {ppid} is not before it in the tree")]
    Orphan {
        /// The member.
        pid: i32,
        /// Its parent.
        ppid: i32,
    },
    /// A member's session is not its parent's nor its own.
    #[error("process {pid} is in session {sid}, neither its parent's nor its own")]
    Session {
        /// The member.
        pid: i32,
        /// Its session.
        sid: i32,
    },
    /// A member's group is led by no member before it in its session.
    #[error(
        "process {pid} is in process group {pgid}, which no process before it in its session leads"
    )]
    Group {
        /// The member.
        pid: i32,
        /// Its group.
        pgid: i32,
    },
    /// A zombie with children in the tree.
    #[error("zombie {pid} has children in the tree")]
    ZombieParent {
        /// The zombie.
        pid: i32,
    },
}

/// The stub plan for `tree`, the root first and every parent before its
/// children.
pub fn plan(tree: &[Relation]) -> Result<Vec<StubNode>, PlanError> {
    let Some(root) = tree.first() else {
        return Ok(Vec::new());
    };
    let inside = |id: i32| tree.iter().any(|m| m.pid == id);
    // A session or group led from outside becomes the root's.
    let here = |id: i32| if inside(id) { id } else { root.pid };
    let mut out: Vec<StubNode> = Vec::with_capacity(tree.len());
    // Session and group of each node planned so far, as they will be.
    let mut made: Vec<(i32, i32)> = Vec::with_capacity(tree.len());
    for (i, m) in tree.iter().enumerate() {
        if i == 0 {
            out.push(StubNode {
                pid: m.pid,
                parent: None,
                session: true,
                group: 0,
                exit: m.exit,
            });
            made.push((m.pid, m.pid));
            continue;
        }
        let parent = tree[..i]
            .iter()
            .position(|p| p.pid == m.ppid)
            .ok_or(PlanError::Orphan {
                pid: m.pid,
                ppid: m.ppid,
            })?;
        if tree[parent].exit.is_some() {
            return Err(PlanError::ZombieParent {
                pid: tree[parent].pid,
            });
        }
        let (psid, pgrp) = made[parent];
        let (sid, pgid) = (here(m.sid), here(m.pgid));
        let session = sid == m.pid;
        if !session && sid != psid {
            return Err(PlanError::Session { pid: m.pid, sid });
        }
        let group = if session || pgid == pgrp {
            0
        } else if pgid == m.pid
            || tree[..i]
                .iter()
                .zip(&made)
                .any(|(o, &(s, g))| o.pid == pgid && g == pgid && s == sid)
        {
            pgid
        } else {
            return Err(PlanError::Group { pid: m.pid, pgid });
        };
        out.push(StubNode {
            pid: m.pid,
            parent: Some(parent),
            session,
            group,
            exit: m.exit,
        });
        made.push((sid, if session { m.pid } else { pgid }));
    }
    Ok(out)
}

/// Starts the rebuild of a tree on this host: its stubs made as planned
/// from `relations`, and a [`Restorer`] seized on each member's stub,
/// `None` for a zombie (`images` in the same order, `None` for a zombie);
/// shared memory between members is one object again.
/// Each is then given its pages and finished, in order
/// ([`Restorer::finish_in_tree`], noting each one for the next with
/// [`crate::fd::Kin::note`]). Dropped, they kill the tree.
pub fn start(
    exe: &Path,
    relations: &[Relation],
    images: &[Option<&ProcessImage>],
) -> Result<Vec<Option<Restorer>>, RestoreError> {
    let nodes = plan(relations).map_err(|e| RestoreError::Incompatible(e.to_string()))?;
    if images.len() != nodes.len() {
        return Err(RestoreError::Incompatible(format!(
            "{} images for a tree of {}",
            images.len(),
            nodes.len()
        )));
    }
    let stubs = Stub::spawn_tree(exe, &nodes)?;
    let mut out = Vec::with_capacity(stubs.len());
    let mut shmem = KinShmem::new();
    // Seized in order: dropping what is started so far kills the tree.
    for (stub, image) in stubs.into_iter().zip(images) {
        out.push(match image {
            Some(image) => {
                let r = Restorer::start_in_tree(image, stub, &shmem)?;
                note_shmem(&mut shmem, r.pid, image);
                Some(r)
            }
            None => None,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(pid: i32, ppid: i32, pgid: i32, sid: i32) -> Relation {
        Relation {
            pid,
            ppid,
            pgid,
            sid,
            exit: None,
        }
    }

    fn node(pid: i32, parent: Option<usize>, session: bool, group: i32) -> StubNode {
        StubNode {
            pid,
            parent,
            session,
            group,
            exit: None,
        }
    }

    #[test]
    fn groups_sessions_and_zombies_are_planned() {
        // A shell's job: the root in the shell's group and session, two
        // children in a group the first leads, a grandchild leading a
        // session of its own, a zombie.
        let mut zombie = rel(14, 10, 1, 1);
        zombie.exit = Some(3 << 8);
        let tree = [
            rel(10, 1, 1, 1),
            rel(11, 10, 11, 1),
            rel(12, 10, 11, 1),
            rel(13, 11, 13, 13),
            zombie,
        ];
        let mut z = node(14, Some(0), false, 0);
        z.exit = Some(3 << 8);
        assert_eq!(
            plan(&tree).unwrap(),
            [
                node(10, None, true, 0),
                node(11, Some(0), false, 11),
                node(12, Some(0), false, 11),
                node(13, Some(1), true, 0),
                z,
            ]
        );
    }

    #[test]
    fn relations_that_cannot_be_made_are_refused() {
        // A group led by a later member.
        let tree = [rel(10, 1, 10, 10), rel(11, 10, 12, 10), rel(12, 10, 12, 10)];
        assert_eq!(plan(&tree), Err(PlanError::Group { pid: 11, pgid: 12 }));
        // A session that is neither the parent's nor its own.
        let tree = [rel(10, 1, 10, 10), rel(11, 10, 11, 11), rel(12, 10, 11, 11)];
        assert_eq!(plan(&tree), Err(PlanError::Session { pid: 12, sid: 11 }));
        // A child listed before its parent.
        let tree = [rel(10, 1, 10, 10), rel(12, 11, 10, 10), rel(11, 10, 10, 10)];
        assert_eq!(plan(&tree), Err(PlanError::Orphan { pid: 12, ppid: 11 }));
    }
}
