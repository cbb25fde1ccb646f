//! Processes in a pid namespace other than the agent's: a process the
//! destination rebuilt in a pid namespace of its own (its ids were taken
//! there) has other ids here than it has for itself. It moves named by
//! the ids it has for itself, and only as the one process its namespace
//! holds beside that namespace's init, its parent (the placeholder a
//! rebuild makes): a namespace of more is a container, not moved.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;

use migrate_proto::msg::{Code, Reason};

/// The pid namespace of process `pid` (its inode).
fn namespace_of(pid: &str) -> io::Result<u64> {
    Ok(fs::metadata(format!("/proc/{pid}/ns/pid"))?.ino())
}

/// The last id of a `status` text's `NSpid` line: the task's id in its
/// own pid namespace.
fn innermost_id(status: &str) -> Option<i32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// `PPid` of a `status` text.
fn parent_of(status: &str) -> Option<i32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))?
        .trim()
        .parse()
        .ok()
}

fn status_text(pid: i32, tid: i32) -> io::Result<String> {
    fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))
}

/// Whether `pid` may move as far as its pid namespace goes: `None` when
/// it is in this agent's, or alone in its own beside the namespace's
/// init, its parent.
pub fn verdict(pid: i32) -> Option<Reason> {
    let refuse = |text: String| Some(Reason::new(Code::PidNamespace, text));
    let (Ok(ns), Ok(ours)) = (namespace_of(&pid.to_string()), namespace_of("self")) else {
        return None;
    };
    if ns == ours {
        return None;
    }
    let Ok(status) = status_text(pid, pid) else {
        return None;
    };
    if innermost_id(&status) == Some(1) {
        return refuse(format!(
            "process {pid} is pid 1 of a pid namespace of its own (a container's init): \
             not moved alone"
        ));
    }
    let parent = parent_of(&status).unwrap_or(0);
    let parent_is_init = parent > 0
        && namespace_of(&parent.to_string()).is_ok_and(|n| n == ns)
        && status_text(parent, parent)
            .ok()
            .as_deref()
            .and_then(innermost_id)
            == Some(1);
    let others: Vec<String> = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| p != pid && !(parent_is_init && p == parent))
        .filter(|p| namespace_of(&p.to_string()).is_ok_and(|n| n == ns))
        .map(|p| p.to_string())
        .collect();
    if !parent_is_init || !others.is_empty() {
        return refuse(format!(
            "process {pid} is in a pid namespace with other processes ({}): a process \
             moves alone in a pid namespace only beside that namespace's init, its parent",
            if others.is_empty() {
                format!("its parent {parent} is not the namespace's init")
            } else {
                others.join(", ")
            }
        ));
    }
    None
}

/// The ids of a process's threads as it has them, where they differ
/// from this agent's (it is in a pid namespace of its own).
#[derive(Debug, Default)]
pub struct IdsInside {
    /// Id here → id inside; empty when they are the same.
    inside: HashMap<i32, i32>,
}

impl IdsInside {
    /// Reads the ids of threads `tids` of `pid` inside its namespace.
    pub fn read(pid: i32, tids: &[i32]) -> io::Result<IdsInside> {
        let (ns, ours) = (namespace_of(&pid.to_string())?, namespace_of("self")?);
        let mut inside = HashMap::new();
        if ns != ours {
            for &tid in tids {
                let id = innermost_id(&status_text(pid, tid)?).ok_or_else(|| {
                    io::Error::other(format!("no NSpid line for thread {tid} of {pid}"))
                })?;
                inside.insert(tid, id);
            }
        }
        Ok(IdsInside { inside })
    }

    /// The id inside of a thread that has `id` here (0, "none", stays 0).
    pub fn of(&self, id: i32) -> i32 {
        self.inside.get(&id).copied().unwrap_or(id)
    }

    /// Its parent's pid as it sees it: the namespace's init, or as here.
    pub fn parent(&self, ppid: i32) -> i32 {
        if self.inside.is_empty() {
            ppid
        } else {
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_innermost_id_is_the_last_of_nspid() {
        let status = "Name:\theap\nPid:\t65\nPPid:\t64\nNSpid:\t65\t8\nNSpgid:\t65\t8\n";
        assert_eq!(innermost_id(status), Some(8));
        assert_eq!(parent_of(status), Some(64));
        assert_eq!(innermost_id("Pid:\t7\nNSpid:\t7\n"), Some(7));
        assert_eq!(innermost_id("Pid:\t7\n"), None);
    }

    #[test]
    fn ids_outside_a_namespace_stay_as_they_are() {
        let ids = IdsInside {
            inside: HashMap::from([(65, 8), (66, 9)]),
        };
        assert_eq!((ids.of(65), ids.of(66), ids.of(0)), (8, 9, 0));
        assert_eq!(ids.parent(64), 1);
        let same = IdsInside::default();
        assert_eq!((same.of(65), same.parent(64)), (65, 64));
    }
}
