//! What this agent knows of the processes on its host beyond `/proc`: the
//! host each started on, how often it moved, and whether it cooperates
//! (started by `migrate run`, with the shim). Entries are keyed by pid and
//! the process's start time, so a reused pid never inherits them; what
//! is known of its cooperation is dropped once it execs (another program,
//! a setuid one perhaps, whose memory no longer holds the shim's block).

use std::collections::HashMap;
use std::sync::Mutex;

use migrate_proto::image::Lineage;

/// Start time of `pid` in clock ticks since boot (`/proc/<pid>/stat`
/// field 22), which tells a process from a later one with its pid.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // Field 3 (state) is the first after the command name.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// What changes when a process execs: its program's file (device, inode)
/// and where its stack starts (placed anew at every exec).
fn exec_ident(pid: i32) -> Option<(u64, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let exe = std::fs::metadata(format!("/proc/{pid}/exe")).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // Field 28 (startstack).
    let stack = rest.split_whitespace().nth(25)?.parse().ok()?;
    Some((exe.dev(), exe.ino(), stack))
}

/// One process's entry: its start time, its program as registered (none
/// while `migrate run` is about to exec it), and its lineage.
type Entry = (u64, Option<(u64, u64, u64)>, Lineage);

/// Lineages of the processes on this host that started elsewhere or under
/// `migrate run`.
#[derive(Default)]
pub struct Lineages {
    known: Mutex<HashMap<i32, Entry>>,
}

impl Lineages {
    /// Records `lineage` for the process `pid` as it is now.
    pub fn set(&self, pid: i32, lineage: Lineage) {
        self.put(pid, exec_ident(pid).or(Some((0, 0, 0))), lineage);
    }

    /// Records `lineage` for `pid`, which is about to exec the program it
    /// will be (`migrate run`): the entry holds through that exec, until
    /// [`Lineages::set`] records the program.
    pub fn set_before_exec(&self, pid: i32, lineage: Lineage) {
        self.put(pid, None, lineage);
    }

    fn put(&self, pid: i32, exe: Option<(u64, u64, u64)>, lineage: Lineage) {
        let Some(t) = start_time(pid) else { return };
        let mut k = self.known.lock().unwrap_or_else(|e| e.into_inner());
        k.retain(|p, (t0, _, _)| start_time(*p) == Some(*t0));
        k.insert(pid, (t, exe, lineage));
    }

    /// The lineage of `pid`, or that of a process that started here and
    /// never moved. A process that has exec'd since its entry was made
    /// keeps its home and moves, not its cooperation.
    pub fn get(&self, pid: i32, this_host: &str) -> Lineage {
        let k = self.known.lock().unwrap_or_else(|e| e.into_inner());
        match k.get(&pid) {
            Some((t, exe, l)) if start_time(pid) == Some(*t) => {
                if exe.is_none() || exec_ident(pid) == *exe {
                    l.clone()
                } else {
                    Lineage {
                        cooperating: false,
                        shim: None,
                        tcp: Default::default(),
                        ..l.clone()
                    }
                }
            }
            _ => Lineage {
                home: this_host.to_string(),
                moves: 0,
                cooperating: false,
                shim: None,
                tcp: Default::default(),
            },
        }
    }

    /// Forgets `pid` (it moved away).
    pub fn forget(&self, pid: i32) {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lineage_belongs_to_its_process_only() {
        let l = Lineages::default();
        let me = std::process::id() as i32;
        assert_eq!(l.get(me, "h1").home, "h1");
        l.set(
            me,
            Lineage {
                home: "h0".into(),
                moves: 2,
                cooperating: true,
                shim: None,
                tcp: Default::default(),
            },
        );
        assert_eq!(l.get(me, "h1").moves, 2);
        assert!(l.get(me, "h1").cooperating);
        // Another program (an exec since) keeps the moves, not the
        // cooperation.
        l.known.lock().unwrap().get_mut(&me).unwrap().1 = Some((0, 0, 0));
        assert_eq!(l.get(me, "h1").moves, 2);
        assert!(!l.get(me, "h1").cooperating);
        // Another start time under the same pid is another process.
        l.known.lock().unwrap().get_mut(&me).unwrap().0 += 1;
        assert_eq!(l.get(me, "h1").moves, 0);
        l.forget(me);
        assert!(l.known.lock().unwrap().is_empty());
    }
}
