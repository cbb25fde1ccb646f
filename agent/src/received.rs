//! The migrations this agent received, the latest [`RECEIVED`]: each id
//! once only (a control session naming one again is a replay, refused),
//! and what became of its copy, which the source asks after losing touch
//! ([`migrate_proto::msg::Lane::Outcome`]) before it may resume the
//! original.

use std::collections::VecDeque;
use std::sync::Mutex;

use migrate_proto::msg::CopyState;

/// How many migrations [`Received`] remembers.
pub const RECEIVED: usize = 4096;

struct Entry {
    id: u64,
    /// The source's host name: only it is told the copy's state.
    from: String,
    state: CopyState,
}

/// The migrations received here and their copies' states.
#[derive(Default)]
pub struct Received(Mutex<VecDeque<Entry>>);

impl Received {
    fn entries(&self) -> std::sync::MutexGuard<'_, VecDeque<Entry>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records migration `id` from `from`, its copy being built: the
    /// [`Fate`] that keeps its state, or None if `id` was received before
    /// (a replay).
    pub fn first_time<'a>(&'a self, id: u64, from: &str) -> Option<Fate<'a>> {
        let mut v = self.entries();
        if v.iter().any(|e| e.id == id) {
            return None;
        }
        if v.len() == RECEIVED {
            v.pop_front();
        }
        v.push_back(Entry {
            id,
            from: from.to_string(),
            state: CopyState::Building,
        });
        Some(Fate {
            received: self,
            id,
            ran: false,
            settled: false,
        })
    }

    /// The state of migration `id`'s copy, as told to `asker`.
    pub fn state(&self, id: u64, asker: &str) -> CopyState {
        self.entries()
            .iter()
            .find(|e| e.id == id && e.from == asker)
            .map_or(CopyState::Unknown, |e| e.state)
    }

    fn set(&self, id: u64, state: CopyState) {
        if let Some(e) = self.entries().iter_mut().find(|e| e.id == id) {
            e.state = state;
        }
    }
}

/// The state of one received migration's copy, kept by its session: each
/// state is recorded before the step that makes it true could have taken
/// effect, so an answer never says less than may be. Dropped unsettled (the
/// session failed, returned early or unwound), the copy is gone: every
/// owner of a copy that may still run kills it as it is dropped.
pub struct Fate<'a> {
    received: &'a Received,
    id: u64,
    ran: bool,
    settled: bool,
}

impl Fate<'_> {
    /// The copy is about to be let run, with pages still owed or on its
    /// way to running by itself ([`Fate::independent`] once it does).
    pub fn post_copy(&mut self) {
        self.ran = true;
        self.received.set(self.id, CopyState::PostCopy);
    }

    /// The copy goes on by itself, or is about to, whatever the source
    /// does or this session becomes (every page in, or none was owed).
    pub fn independent(&mut self) {
        self.ran = true;
        self.settled = true;
        self.received.set(self.id, CopyState::Independent);
    }

    /// The copy that was about to go on by itself was killed after all.
    pub fn killed(&mut self) {
        self.settled = false;
    }

    /// Whether the copy was let run.
    pub fn ran(&self) -> bool {
        self.ran
    }
}

impl Drop for Fate<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.received
                .set(self.id, CopyState::Gone { ran: self.ran });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_migration_id_is_received_once() {
        let r = Received::default();
        drop(r.first_time(7, "a").unwrap());
        drop(r.first_time(8, "a").unwrap());
        assert!(
            r.first_time(7, "a").is_none(),
            "a replayed migration was accepted"
        );
        assert!(
            r.first_time(7, "b").is_none(),
            "a replay from another host was accepted"
        );
        for id in 100..100 + RECEIVED as u64 {
            drop(r.first_time(id, "a"));
        }
        // Bounded: the oldest are forgotten.
        assert!(r.first_time(7, "a").is_some());
    }

    #[test]
    fn a_copy_is_gone_unless_its_session_settled_it() {
        let r = Received::default();
        let mut f = r.first_time(1, "src").unwrap();
        assert_eq!(r.state(1, "src"), CopyState::Building);
        assert_eq!(r.state(1, "other"), CopyState::Unknown);
        assert_eq!(r.state(2, "src"), CopyState::Unknown);
        f.post_copy();
        assert_eq!(r.state(1, "src"), CopyState::PostCopy);
        drop(f);
        assert_eq!(r.state(1, "src"), CopyState::Gone { ran: true });

        let f = r.first_time(3, "src").unwrap();
        drop(f);
        assert_eq!(r.state(3, "src"), CopyState::Gone { ran: false });

        let mut f = r.first_time(4, "src").unwrap();
        f.independent();
        drop(f);
        assert_eq!(r.state(4, "src"), CopyState::Independent);

        let mut f = r.first_time(5, "src").unwrap();
        f.independent();
        f.killed();
        drop(f);
        assert_eq!(r.state(5, "src"), CopyState::Gone { ran: true });
    }
}
