//! The agent's children and who reaps them.
//!
//! The agent is a child subreaper: the processes it rebuilds are its
//! children, and so, once their parent is gone, are their own orphans,
//! which nothing in the agent waits for. Each child the agent starts or
//! waits for itself is *claimed* by its owner (a [`Claim`], released when
//! dropped); a reaper thread reaps every ended child that no one claims.
//! Children are started inside [`spawning`], so the reaper never sees one
//! before it is claimed.

use std::collections::BTreeSet;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use tracing::{debug, warn};

use crate::{host::procfs, host::sys};

/// How often the reaper looks for ended children.
const REAP_EVERY: Duration = Duration::from_millis(500);

static CLAIMED: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());
/// Held for reading while children are started and claimed, for writing
/// while the reaper reaps.
static SPAWNING: RwLock<()> = RwLock::new(());

/// A child that its owner waits for itself: the reaper leaves it alone
/// until this is dropped.
#[derive(Debug)]
pub struct Claim(i32);

impl Claim {
    /// Claims child `pid`. A child just started must be claimed inside
    /// [`spawning`].
    pub fn new(pid: i32) -> Claim {
        claimed().insert(pid);
        Claim(pid)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        claimed().remove(&self.0);
    }
}

/// Runs `start`, which starts children and claims them, with the reaper
/// held off.
pub fn spawning<T>(start: impl FnOnce() -> T) -> T {
    let _held = SPAWNING.read().unwrap_or_else(|e| e.into_inner());
    start()
}

fn claimed() -> std::sync::MutexGuard<'static, BTreeSet<i32>> {
    CLAIMED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reaps, once, every ended child of this process that no one claims;
/// returns how many.
pub fn reap_unclaimed() -> usize {
    let _held = SPAWNING.write().unwrap_or_else(|e| e.into_inner());
    reap_among(ended_children())
}

/// Reaps those of `ended` that no one claims.
fn reap_among(ended: Vec<i32>) -> usize {
    let mut reaped = 0;
    for pid in ended {
        if !claimed().contains(&pid) && sys::try_reap(pid) {
            debug!(pid, "reaped an orphan");
            reaped += 1;
        }
    }
    reaped
}

/// Starts the reaper thread.
pub fn start_reaper() {
    let started = std::thread::Builder::new()
        .name("reaper".into())
        .spawn(|| loop {
            std::thread::sleep(REAP_EVERY);
            reap_unclaimed();
        });
    if let Err(e) = started {
        warn!(error = %e, "no reaper thread: orphans of moved processes stay zombies");
    }
}

/// Children of every thread of this process that have ended (zombies).
fn ended_children() -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut pids: Vec<i32> = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids.retain(|&pid| procfs::stat_fields(pid).is_ok_and(|f| f.first().is_some_and(|s| s == "Z")));
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::zombie_processes)] // the orphan is left for the reaper
    fn an_unclaimed_ended_child_is_reaped_and_a_claimed_one_is_not() {
        let (mine, orphan) = spawning(|| {
            let mine = std::process::Command::new("true").spawn().unwrap();
            let claim = Claim::new(mine.id() as i32);
            let orphan = std::process::Command::new("true").spawn().unwrap();
            ((mine, claim), orphan.id() as i32)
        });
        let (mut mine, claim) = mine;
        let pids = [mine.id() as i32, orphan];
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !pids.iter().all(|p| ended_children().contains(p)) {
            assert!(std::time::Instant::now() < deadline, "they never ended");
            std::thread::sleep(Duration::from_millis(10));
        }
        // Only these two: other tests' children are theirs to wait for.
        assert_eq!(reap_among(pids.to_vec()), 1);
        assert!(
            !ended_children().contains(&orphan),
            "the orphan is a zombie"
        );
        assert!(
            mine.wait().unwrap().success(),
            "the claimed child was taken"
        );
        drop(claim);
    }
}
