//! The migrations in flight on this agent, either side, and the drain that
//! stops it without losing one: once draining, no new migration starts,
//! and the agent ends when the last one in flight is over.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Counts migrations in flight and refuses new ones once draining.
#[derive(Default)]
pub struct Drain {
    state: Mutex<State>,
    idle: Condvar,
}

#[derive(Default)]
struct State {
    draining: bool,
    in_flight: usize,
}

/// One migration in flight, counted for as long as it lives.
pub struct InFlight<'a>(&'a Drain);

impl Drain {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a new migration, or `None` once draining.
    pub fn enter(&self) -> Option<InFlight<'_>> {
        let mut s = self.state();
        if s.draining {
            return None;
        }
        s.in_flight += 1;
        Some(InFlight(self))
    }

    /// Starts draining; returns how many migrations are in flight. False
    /// in the second member if it had started already.
    pub fn begin(&self) -> (usize, bool) {
        let mut s = self.state();
        let first = !s.draining;
        s.draining = true;
        (s.in_flight, first)
    }

    /// Whether the agent drains.
    pub fn draining(&self) -> bool {
        self.state().draining
    }

    /// Waits up to `limit` until nothing is in flight; returns how many
    /// still are.
    pub fn wait_idle(&self, limit: Duration) -> usize {
        let s = self.state();
        let (s, _) = self
            .idle
            .wait_timeout_while(s, limit, |s| s.in_flight > 0)
            .unwrap_or_else(|e| e.into_inner());
        s.in_flight
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut s = self.0.state();
        s.in_flight -= 1;
        if s.in_flight == 0 {
            self.0.idle.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draining_refuses_new_ones_and_waits_for_those_in_flight() {
        let d = Drain::default();
        let a = d.enter().unwrap();
        let b = d.enter().unwrap();
        assert_eq!(d.begin(), (2, true));
        assert_eq!(d.begin(), (2, false));
        assert!(d.enter().is_none());
        assert_eq!(d.wait_idle(Duration::from_millis(10)), 2);
        drop(a);
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(50));
                drop(b);
            });
            assert_eq!(d.wait_idle(Duration::from_secs(10)), 0);
        });
    }
}
