//! How a tree of processes is made again: the plan ([`Node`]), from the
//! relations the source saw, and the build that follows it. Parents come
//! before their children; the root, rebuilt in a stub, leads a new session
//! and process group, which take the place of the session and group it had
//! on the source when those were led from outside the tree. Every other
//! process is forked from its rebuilt parent, so that the private pages
//! they shared copy-on-write on the source are shared again.

use migrate_proto::image::{ProcessImage, Relation};

use crate::rebuild::restore::{note_shmem, KinShmem, RestoreError, Restorer, Stub};

/// One process of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    /// The pid it must have.
    pub pid: i32,
    /// Its parent's index in the plan (before its own); the root has none.
    pub parent: Option<usize>,
    /// Leads a session of its own (`setsid`).
    pub session: bool,
    /// Joins or leads this process group (0: keeps its parent's). A group
    /// another node leads is led by a node earlier in the plan.
    pub group: i32,
    /// Ends at once with this wait status and stays unreaped (a zombie).
    pub exit: Option<i32>,
}

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
pub fn plan(tree: &[Relation]) -> Result<Vec<Node>, PlanError> {
    let Some(root) = tree.first() else {
        return Ok(Vec::new());
    };
    let inside = |id: i32| tree.iter().any(|m| m.pid == id);
    // A session or group led from outside becomes the root's.
    let here = |id: i32| if inside(id) { id } else { root.pid };
    let mut out: Vec<Node> = Vec::with_capacity(tree.len());
    // Session and group of each node planned so far, as they will be.
    let mut made: Vec<(i32, i32)> = Vec::with_capacity(tree.len());
    for (i, m) in tree.iter().enumerate() {
        if i == 0 {
            out.push(Node {
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
        out.push(Node {
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

/// Rebuilds the memory of a tree on this host: the root in `stub` (started
/// with the root's pid), every other process forked from its rebuilt parent with its pid,
/// session and group (zombies ended at once with their status), its
/// mappings made its own and shared memory one object with the others'.
/// `fill(i, r)` writes process `i`'s own pages (those not
/// [`Fill::Parent`](migrate_proto::image::Fill::Parent)) once its memory
/// is mapped, before its children are forked from it. Returns a
/// [`Restorer`] per process (`None` for a zombie) to be finished in order
/// ([`Restorer::finish_in_tree`], noting each one for the next with
/// [`crate::fd::Kin::note`]); dropped, they kill the tree.
pub fn start<E: From<RestoreError>>(
    stub: Stub,
    relations: &[Relation],
    images: &[Option<&ProcessImage>],
    mut fill: impl FnMut(usize, &mut Restorer) -> Result<(), E>,
) -> Result<Vec<Option<Restorer>>, E> {
    let nodes = plan(relations).map_err(|e| RestoreError::Incompatible(e.to_string()))?;
    let images_len = images.len();
    let image = |i: usize| {
        images.get(i).copied().flatten().ok_or_else(|| {
            RestoreError::Incompatible(format!("no image for process {}", nodes[i].pid))
        })
    };
    if images_len != nodes.len() || nodes.is_empty() {
        return Err(RestoreError::Incompatible(format!(
            "{images_len} images for a tree of {}",
            nodes.len()
        ))
        .into());
    }
    let root = image(0)?;
    if stub.pid() != root.pid {
        return Err(RestoreError::Incompatible(format!(
            "pid {} of the process tree cannot be had here",
            root.pid
        ))
        .into());
    }
    let mut shmem = KinShmem::new();
    let mut r = Restorer::start_in_tree(root, stub, &shmem)?;
    note_shmem(&mut shmem, r.pid, root);
    fill(0, &mut r)?;
    let mut out = vec![Some(r)];
    for (i, node) in nodes.iter().enumerate().skip(1) {
        let p = node.parent.expect("planned: a parent before each child");
        let parent = out[p].as_mut().expect("planned: zombies have no children");
        if let Some(status) = node.exit {
            parent.fork_zombie(node.pid, status)?;
            out.push(None);
            continue;
        }
        let mut child = parent.fork_child(image(p)?, image(i)?, node, &shmem)?;
        note_shmem(&mut shmem, child.pid, image(i)?);
        fill(i, &mut child)?;
        out.push(Some(child));
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

    fn node(pid: i32, parent: Option<usize>, session: bool, group: i32) -> Node {
        Node {
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
