//! The records of the migrations this agent started, kept while it runs
//! (the latest [`KEPT`]), for `migrate status` and `migrate list --history`.

use std::collections::VecDeque;
use std::sync::Mutex;

use migrate_proto::record::MigrationRecord;

/// Records kept.
pub const KEPT: usize = 256;

/// Past and running migrations, with the uid that asked for each.
#[derive(Default)]
pub struct History {
    records: Mutex<VecDeque<(u32, MigrationRecord)>>,
}

impl History {
    /// Adds `rec` (asked by `uid`) or replaces the record with its id.
    pub fn put(&self, uid: u32, rec: &MigrationRecord) {
        let mut v = self.records.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = v.iter_mut().find(|(_, r)| r.id == rec.id) {
            *slot = (uid, rec.clone());
            return;
        }
        if v.len() == KEPT {
            v.pop_front();
        }
        v.push_back((uid, rec.clone()));
    }

    /// The records `uid` may see (root sees all), oldest first.
    pub fn visible_to(&self, uid: u32) -> Vec<MigrationRecord> {
        let v = self.records.lock().unwrap_or_else(|e| e.into_inner());
        v.iter()
            .filter(|(u, _)| uid == 0 || *u == uid)
            .map(|(_, r)| r.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u64, outcome: &str) -> MigrationRecord {
        MigrationRecord {
            id,
            outcome: outcome.into(),
            ..Default::default()
        }
    }

    #[test]
    fn records_are_replaced_by_id_bounded_and_filtered_by_uid() {
        let h = History::default();
        h.put(1000, &rec(1, "resumed"));
        h.put(1000, &rec(1, "complete"));
        h.put(1001, &rec(2, "complete"));
        let mine = h.visible_to(1000);
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0].outcome, "complete");
        assert_eq!(h.visible_to(0).len(), 2);
        for id in 10..10 + KEPT as u64 {
            h.put(0, &rec(id, "complete"));
        }
        let all = h.visible_to(0);
        assert_eq!(all.len(), KEPT);
        assert_eq!(all[0].id, 10);
    }
}
