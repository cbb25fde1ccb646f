//! The records of the migrations this agent started (the latest [`KEPT`]),
//! for `migrate status`, `migrate list --history` and `migrate report`.
//! They are kept in memory and appended to a file in the state directory
//! (`history.jsonl`, one `{uid, record}` per line, a later line replacing
//! an earlier one with the same id), so they outlive the agent.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use migrate_proto::record::MigrationRecord;
use serde::{Deserialize, Serialize};
use tracing::warn;

/// The outcome of a migration that was under way when the agent that ran
/// it ended.
pub const UNDER_WAY_AT_RESTART: &str = "unknown: the agent that ran it ended during its post-copy";

/// Records kept.
pub const KEPT: usize = 256;

/// The file is rewritten with only the kept records once it holds this
/// many lines.
const COMPACT_AT: usize = 4 * KEPT;

#[derive(Serialize, Deserialize)]
struct Line {
    uid: u32,
    record: MigrationRecord,
}

/// Past and running migrations, with the uid that asked for each.
#[derive(Default)]
pub struct History {
    records: Mutex<VecDeque<(u32, MigrationRecord)>>,
    file: Option<Mutex<Store>>,
}

struct Store {
    path: PathBuf,
    lines: usize,
}

impl History {
    /// The history kept in `dir` (created, mode 0700, if missing): what the
    /// file holds is loaded; unreadable lines are skipped with a warning.
    pub fn open(dir: &Path) -> io::Result<History> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let path = dir.join("history.jsonl");
        let h = History {
            records: Mutex::new(VecDeque::new()),
            file: None,
        };
        let mut lines = 0;
        match File::open(&path) {
            Ok(f) => {
                for (n, line) in BufReader::new(f).lines().enumerate() {
                    lines += 1;
                    match line.map(|l| serde_json::from_str::<Line>(&l)) {
                        Ok(Ok(mut l)) => {
                            // Under way when an agent before this one
                            // ended: this one will never say how it ended.
                            if l.record.outcome == "resumed" {
                                l.record.outcome = UNDER_WAY_AT_RESTART.into();
                            }
                            h.remember(l.uid, &l.record)
                        }
                        _ => {
                            warn!(path = %path.display(), line = n + 1, "skipping an unreadable history line")
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(History {
            file: Some(Mutex::new(Store { path, lines })),
            ..h
        })
    }

    /// Adds `rec` (asked by `uid`) or replaces the record with its id.
    pub fn put(&self, uid: u32, rec: &MigrationRecord) {
        self.remember(uid, rec);
        if let Some(store) = &self.file {
            let mut s = store.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = self.write(&mut s, uid, rec) {
                warn!(path = %s.path.display(), error = %e, "the history file was not updated");
            }
        }
    }

    /// Notes that `moved` pages of migration `id` are in on the
    /// destination (memory only: the file gets the record at its end).
    pub fn progress(&self, id: u64, moved: u64) {
        let mut v = self.records.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, r)) = v.iter_mut().find(|(_, r)| r.id == id) {
            r.moved_pages = r.moved_pages.max(moved);
        }
    }

    fn remember(&self, uid: u32, rec: &MigrationRecord) {
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

    fn write(&self, s: &mut Store, uid: u32, rec: &MigrationRecord) -> io::Result<()> {
        let open = |path: &Path, append: bool| {
            OpenOptions::new()
                .create(true)
                .append(append)
                .write(true)
                .truncate(!append)
                .mode(0o600)
                .open(path)
        };
        let line = |uid: u32, record: &MigrationRecord| -> io::Result<Vec<u8>> {
            let mut b = serde_json::to_vec(&Line {
                uid,
                record: record.clone(),
            })
            .map_err(io::Error::other)?;
            b.push(b'\n');
            Ok(b)
        };
        if s.lines + 1 < COMPACT_AT {
            open(&s.path, true)?.write_all(&line(uid, rec)?)?;
            s.lines += 1;
            return Ok(());
        }
        // Compact: the kept records only, written aside, then renamed over.
        let tmp = s.path.with_extension("jsonl.new");
        let mut f = open(&tmp, false)?;
        let kept = self
            .records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (u, r) in &kept {
            f.write_all(&line(*u, r)?)?;
        }
        f.sync_all()?;
        fs::rename(&tmp, &s.path)?;
        s.lines = kept.len();
        Ok(())
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

    #[test]
    fn records_outlive_the_agent_and_the_file_stays_bounded() {
        let dir = std::env::temp_dir().join(format!("migrate-history-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        {
            let h = History::open(&dir).unwrap();
            h.put(1000, &rec(1, "resumed"));
            h.put(1000, &rec(1, "complete"));
            h.put(0, &rec(2, "failed"));
            h.put(0, &rec(3, "resumed"));
        }
        // A damaged line is skipped, the rest kept.
        let path = dir.join("history.jsonl");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{not json\n").unwrap();
        let h = History::open(&dir).unwrap();
        let all = h.visible_to(0);
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].outcome, "complete");
        // Under way when the agent ended: no longer said to be.
        assert_eq!(all[2].outcome, UNDER_WAY_AT_RESTART);
        assert_eq!(h.visible_to(1000).len(), 1);
        for id in 10..10 + COMPACT_AT as u64 {
            h.put(0, &rec(id, "complete"));
        }
        let lines = fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines <= COMPACT_AT, "{lines} lines");
        let again = History::open(&dir).unwrap().visible_to(0);
        assert_eq!(again.len(), KEPT);
        assert_eq!(again.last().unwrap().id, 9 + COMPACT_AT as u64);
        fs::remove_dir_all(&dir).unwrap();
    }
}
