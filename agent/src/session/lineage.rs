//! What this agent knows of the processes on its host beyond `/proc`: the
//! host each started on, how often it moved, and whether it cooperates
//! (started by `migrate run`, with the shim). Entries are keyed by pid and
//! the process's start time, so a reused pid never inherits them; what
//! is known of its cooperation is dropped once it execs (another program,
//! a setuid one perhaps, whose memory no longer holds the shim's block).

use std::collections::HashMap;
use std::sync::Mutex;

use migrate_proto::image::Lineage;

/// Of `pid`'s `/proc/<pid>/stat`, read once: its start time in clock ticks
/// since boot (field 22), which tells a process from a later one with its
/// pid, and where its stack starts (field 28), placed anew at every exec.
fn stat_times(pid: i32) -> Option<(u64, u64)> {
    let f = crate::host::procfs::stat_fields(pid).ok()?;
    let field = |n: usize| f.get(n - 3)?.parse().ok();
    Some((field(22)?, field(28)?))
}

fn start_time(pid: i32) -> Option<u64> {
    stat_times(pid).map(|(start, _)| start)
}

/// What changes when a process execs: its program's file (device, inode)
/// and where its stack starts (`stack`, from [`stat_times`]).
fn exec_ident(pid: i32, stack: u64) -> Option<(u64, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let exe = std::fs::metadata(format!("/proc/{pid}/exe")).ok()?;
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
        let Some((t, stack)) = stat_times(pid) else {
            return;
        };
        // A program that cannot be read matches none: no cooperation.
        let exe = exec_ident(pid, stack).or(Some((0, 0, 0)));
        self.put(pid, t, exe, lineage);
    }

    /// Records `lineage` for `pid`, which is about to exec the program it
    /// will be (`migrate run`): the entry holds through that exec, until
    /// [`Lineages::set`] records the program.
    pub fn set_before_exec(&self, pid: i32, lineage: Lineage) {
        let Some(t) = start_time(pid) else { return };
        self.put(pid, t, None, lineage);
    }

    fn put(&self, pid: i32, t: u64, exe: Option<(u64, u64, u64)>, lineage: Lineage) {
        let mut k = self.known.lock().unwrap_or_else(|e| e.into_inner());
        k.retain(|p, (t0, _, _)| start_time(*p) == Some(*t0));
        k.insert(pid, (t, exe, lineage));
    }

    /// The lineage of `pid`, or that of a process that started here and
    /// never moved. A process that has exec'd since its entry was made
    /// keeps its home and moves, not its cooperation.
    pub fn get(&self, pid: i32, this_host: &str) -> Lineage {
        let k = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let now = k.get(&pid).and_then(|_| stat_times(pid));
        match (k.get(&pid), now) {
            (Some((t, exe, l)), Some((t_now, stack))) if t_now == *t => {
                if exe.is_none() || exec_ident(pid, stack) == *exe {
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

/// The processes `caller` may migrate from this host, with their lineage:
/// those the pre-flight checks pass.
pub fn movable_processes(
    lineages: &Lineages,
    host: &str,
    caller: &crate::host::access::Caller,
) -> Vec<migrate_proto::msg::ProcessEntry> {
    let me = crate::host::sys::getpid();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids.into_iter()
        .filter(|&p| p != me)
        .filter_map(|p| {
            let lineage = lineages.get(p, host);
            let i = crate::capture::preflight::inspect(
                p,
                caller,
                me,
                false,
                &crate::fd::TcpRules::policy(lineage.tcp),
            )
            .ok()?;
            Some(migrate_proto::msg::ProcessEntry {
                pid: i.pid,
                comm: i.comm,
                uid: i.uid,
                rss_kib: i.rss_kib,
                lineage,
            })
        })
        .collect()
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
