//! What this agent knows of the processes on its host beyond `/proc`: the
//! host each started on, how often it moved, and whether it cooperates
//! (started by `migrate run`, with the shim). Entries are keyed by pid and
//! the process's start time, so a reused pid never inherits them.

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

/// Lineages of the processes on this host that started elsewhere or under
/// `migrate run`.
#[derive(Default)]
pub struct Lineages {
    known: Mutex<HashMap<i32, (u64, Lineage)>>,
}

impl Lineages {
    /// Records `lineage` for the process `pid` as it is now.
    pub fn set(&self, pid: i32, lineage: Lineage) {
        let Some(t) = start_time(pid) else { return };
        let mut k = self.known.lock().unwrap_or_else(|e| e.into_inner());
        k.retain(|p, (t0, _)| start_time(*p) == Some(*t0));
        k.insert(pid, (t, lineage));
    }

    /// The lineage of `pid`, or that of a process that started here and
    /// never moved.
    pub fn get(&self, pid: i32, this_host: &str) -> Lineage {
        let k = self.known.lock().unwrap_or_else(|e| e.into_inner());
        match k.get(&pid) {
            Some((t, l)) if start_time(pid) == Some(*t) => l.clone(),
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
        // Another start time under the same pid is another process.
        l.known.lock().unwrap().get_mut(&me).unwrap().0 += 1;
        assert_eq!(l.get(me, "h1").moves, 0);
        l.forget(me);
        assert!(l.known.lock().unwrap().is_empty());
    }
}
