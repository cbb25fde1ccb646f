//! A process and its descendants, the unit a migration moves: who is whose
//! parent, process groups and sessions, and which members cannot come
//! (another pid or user namespace than the root's). Read from `/proc`
//! alone, before anything is touched.

use std::fs;

use migrate_proto::msg::{Code, Reason};

use migrate_proto::image::Relation;

use crate::host::procfs;
use crate::rebuild::family;

/// Most processes in one tree: past it the tree is refused, so that a
/// fork bomb does not size the agent's memory and threads (a destination
/// takes no larger tree).
pub const MAX_MEMBERS: usize = migrate_proto::image::MAX_TREE;

/// One process of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its pid.
    pub pid: i32,
    /// Its parent's pid (the root's parent is outside the tree).
    pub ppid: i32,
    /// Its process group.
    pub pgid: i32,
    /// Its session.
    pub sid: i32,
    /// Its command name.
    pub comm: String,
    /// Exited, not reaped yet.
    pub zombie: bool,
    /// A zombie's wait status.
    pub exit: Option<i32>,
}

/// A process and every descendant, parents before their children.
#[derive(Debug, Clone)]
pub struct Tree {
    /// The members, the root first.
    pub members: Vec<Member>,
}

impl Tree {
    /// Reads the tree rooted at `root`; `None` if the root is gone. Past
    /// [`MAX_MEMBERS`] the members beyond are left out and the tree says
    /// so in [`Tree::obstacles`].
    pub fn read(root: i32) -> Option<Tree> {
        let mut members = vec![member(root)?];
        // Parents before their children; one past the most, to know.
        members.extend(
            procfs::descendants(root, MAX_MEMBERS)
                .into_iter()
                .filter_map(member),
        );
        Some(Tree { members })
    }

    /// The root.
    pub fn root(&self) -> &Member {
        &self.members[0]
    }

    /// Pids of every member.
    pub fn pids(&self) -> Vec<i32> {
        self.members.iter().map(|m| m.pid).collect()
    }

    /// The members' relations, as a destination makes them again.
    pub fn relations(&self) -> Vec<Relation> {
        self.members
            .iter()
            .map(|m| Relation {
                pid: m.pid,
                ppid: m.ppid,
                pgid: m.pgid,
                sid: m.sid,
                exit: m.exit,
            })
            .collect()
    }

    /// What stops the tree as a whole from moving: too many members, a
    /// member in another pid or user namespace than the root's, relations
    /// that cannot be made again.
    pub fn obstacles(&self) -> Vec<Reason> {
        let mut why = Vec::new();
        if self.members.len() > MAX_MEMBERS {
            why.push(Reason::new(
                Code::Children,
                format!(
                    "process {} has more than {MAX_MEMBERS} descendants: trees that large are \
                     not migrated",
                    self.root().pid
                ),
            ));
            return why;
        }
        let root = self.root().pid;
        for ns in ["pid", "user"] {
            let of = |pid: i32| fs::read_link(format!("/proc/{pid}/ns/{ns}")).ok();
            let want = of(root);
            for m in &self.members[1..] {
                let theirs = of(m.pid);
                if theirs.is_some() && theirs != want {
                    why.push(Reason::new(
                        Code::Children,
                        format!(
                            "process {} ({}) is in another {ns} namespace than process {root}: \
                             not migrated",
                            m.pid, m.comm
                        ),
                    ));
                }
            }
        }
        if let Err(e) = family::plan(&self.relations()) {
            why.push(Reason::new(Code::Children, format!("{e}: not migrated")));
        }
        why
    }
}

/// `pid` as a member, from its `stat`; `None` if it is gone.
fn member(pid: i32) -> Option<Member> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &text)
}

/// A member from the text of its `/proc/PID/stat`.
fn parse_stat(pid: i32, text: &str) -> Option<Member> {
    let comm = text.get(text.find('(')? + 1..text.rfind(')')?)?.to_string();
    let f = procfs::parse_stat(text)?;
    let zombie = matches!(f.first()?.as_str(), "Z" | "X");
    let n = |k: usize| procfs::stat_field(&f, k) as i32;
    Some(Member {
        pid,
        ppid: n(4),
        pgid: n(5),
        sid: n(6),
        comm,
        zombie,
        exit: zombie.then(|| n(52)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_relations_and_state() {
        let rest = (7..52).map(|i| i.to_string()).collect::<Vec<_>>().join(" ");
        let text = format!("40 (a (b) c) Z 7 40 3 {rest} 256");
        let m = parse_stat(40, &text).unwrap();
        assert_eq!(
            m,
            Member {
                pid: 40,
                ppid: 7,
                pgid: 40,
                sid: 3,
                comm: "a (b) c".into(),
                zombie: true,
                exit: Some(256),
            }
        );
        assert!(parse_stat(1, "1 (init").is_none());
    }

    #[test]
    fn this_process_and_its_children_make_a_tree() {
        let me = std::process::id() as i32;
        let mut kids: Vec<_> = (0..2)
            .map(|_| {
                std::process::Command::new("sleep")
                    .arg("30")
                    .spawn()
                    .unwrap()
            })
            .collect();
        let tree = Tree::read(me).unwrap();
        for k in &mut kids {
            let _ = k.kill();
            let _ = k.wait();
        }
        assert_eq!(tree.root().pid, me);
        for k in &kids {
            let m = tree
                .members
                .iter()
                .find(|m| m.pid == k.id() as i32)
                .unwrap_or_else(|| panic!("child {} missing: {tree:?}", k.id()));
            assert_eq!(m.ppid, me);
            assert_eq!(m.comm, "sleep");
        }
    }
}
