//! The migrations this agent received, the latest [`RECEIVED`]: each id
//! once only (a control session naming one again is a replay, refused),
//! and what became of its copy, which the source asks after losing touch
//! ([`migrate_proto::msg::Lane::Outcome`]) before it may resume the
//! original. Kept in memory and appended to a file in the state directory
//! (`received.log`, one `ID STATE FROM` per line, a later line replacing an
//! earlier one), so that an agent that restarts still answers, and still
//! refuses replays.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use migrate_proto::msg::CopyState;
use tracing::warn;

/// How many migrations [`Received`] remembers.
pub const RECEIVED: usize = 4096;

/// The file is rewritten with only the remembered entries once it holds
/// this many lines.
const COMPACT_AT: usize = 4 * RECEIVED;

/// A copy's state as this agent keeps it: finer than what it answers
/// ([`CopyState`]), to say what became of the copy if the agent died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kept {
    /// Being built or waiting for the commit: not run.
    Building,
    /// Being let run; `owed`: with pages still owed (its keeper kills it
    /// if the agent dies), else about to run by itself.
    Resuming { owed: bool },
    /// Every page in; its keeper is being released.
    Releasing,
    /// It goes on by itself.
    Independent,
    /// Gone.
    Gone { ran: bool },
    /// Not known (an agent died at a step whose end it did not record).
    Uncertain,
}

impl Kept {
    /// What a source asking is told.
    fn answer(self) -> CopyState {
        match self {
            Kept::Building => CopyState::Building,
            Kept::Resuming { .. } | Kept::Releasing => CopyState::PostCopy,
            Kept::Independent => CopyState::Independent,
            Kept::Gone { ran } => CopyState::Gone { ran },
            Kept::Uncertain => CopyState::Unknown,
        }
    }

    /// What became of a copy in this state when the agent that kept it
    /// died: what was built and not let run dies with it (the kernel kills
    /// a seized process whose tracer dies), a copy owing pages dies with
    /// its keeper; the rest cannot be told.
    fn after_agent_died(self) -> Kept {
        match self {
            Kept::Building => Kept::Gone { ran: false },
            Kept::Resuming { owed: true } => Kept::Gone { ran: true },
            Kept::Resuming { owed: false } | Kept::Releasing => Kept::Uncertain,
            done => done,
        }
    }

    fn word(self) -> &'static str {
        match self {
            Kept::Building => "building",
            Kept::Resuming { owed: true } => "resuming-owed",
            Kept::Resuming { owed: false } => "resuming",
            Kept::Releasing => "releasing",
            Kept::Independent => "independent",
            Kept::Gone { ran: true } => "gone-ran",
            Kept::Gone { ran: false } => "gone",
            Kept::Uncertain => "uncertain",
        }
    }

    fn from_word(w: &str) -> Option<Kept> {
        Some(match w {
            "building" => Kept::Building,
            "resuming-owed" => Kept::Resuming { owed: true },
            "resuming" => Kept::Resuming { owed: false },
            "releasing" => Kept::Releasing,
            "independent" => Kept::Independent,
            "gone-ran" => Kept::Gone { ran: true },
            "gone" => Kept::Gone { ran: false },
            "uncertain" => Kept::Uncertain,
            _ => return None,
        })
    }
}

struct Entry {
    id: u64,
    /// The source's host name: only it is told the copy's state.
    from: String,
    state: Kept,
}

struct Store {
    path: PathBuf,
    lines: usize,
}

/// The migrations received here and their copies' states.
#[derive(Default)]
pub struct Received {
    entries: Mutex<VecDeque<Entry>>,
    file: Option<Mutex<Store>>,
}

impl Received {
    /// The record kept in `dir` (which exists): what the file holds is
    /// loaded, each state as the agent that wrote it left it when it
    /// ended; unreadable lines are skipped with a warning.
    pub fn open(dir: &Path) -> io::Result<Received> {
        let path = dir.join("received.log");
        let mut entries: VecDeque<Entry> = VecDeque::new();
        let mut lines = 0;
        match File::open(&path) {
            Ok(f) => {
                for (n, line) in BufReader::new(f).lines().enumerate() {
                    lines += 1;
                    match line.ok().as_deref().and_then(parse_line) {
                        Some(e) => remember(&mut entries, e),
                        None => {
                            warn!(path = %path.display(), line = n + 1, "skipping an unreadable line")
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        for e in &mut entries {
            e.state = e.state.after_agent_died();
        }
        let r = Received {
            entries: Mutex::new(entries),
            file: Some(Mutex::new(Store { path, lines })),
        };
        // The states as they now are, and the file compact.
        r.rewrite(&r.list())?;
        Ok(r)
    }

    fn list(&self) -> std::sync::MutexGuard<'_, VecDeque<Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records migration `id` from `from`, its copy being built: the
    /// [`Fate`] that keeps its state, or None if `id` was received before
    /// (a replay).
    pub fn first_time<'a>(&'a self, id: u64, from: &str) -> Option<Fate<'a>> {
        let mut v = self.list();
        if v.iter().any(|e| e.id == id) {
            return None;
        }
        let e = Entry {
            id,
            from: from.to_string(),
            state: Kept::Building,
        };
        self.append(&v, &e);
        remember(&mut v, e);
        Some(Fate {
            received: self,
            id,
            ran: false,
            settled: false,
        })
    }

    /// The state of migration `id`'s copy, as told to `asker`.
    pub fn state(&self, id: u64, asker: &str) -> CopyState {
        self.list()
            .iter()
            .find(|e| e.id == id && e.from == asker)
            .map_or(CopyState::Unknown, |e| e.state.answer())
    }

    fn set(&self, id: u64, state: Kept) {
        let mut v = self.list();
        let Some(i) = v.iter().position(|e| e.id == id) else {
            return;
        };
        v[i].state = state;
        let line = Entry {
            id,
            from: v[i].from.clone(),
            state,
        };
        self.append(&v, &line);
    }

    /// Appends `e` to the file (compacting it when long), under the lock
    /// of `entries`. A file that cannot be written is logged: the answers
    /// then hold until the agent restarts.
    fn append(&self, entries: &VecDeque<Entry>, e: &Entry) {
        let Some(file) = &self.file else { return };
        let mut store = file.lock().unwrap_or_else(|e| e.into_inner());
        let written = if store.lines + 1 >= COMPACT_AT {
            drop(store);
            let mut all: Vec<&Entry> = entries.iter().filter(|x| x.id != e.id).collect();
            all.push(e);
            self.rewrite_entries(&all)
        } else {
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&store.path)
                .and_then(|mut f| f.write_all(line(e).as_bytes()))
                .map(|()| store.lines += 1)
        };
        if let Err(err) = written {
            warn!(error = %err, "cannot record a received migration's state");
        }
    }

    fn rewrite(&self, entries: &VecDeque<Entry>) -> io::Result<()> {
        self.rewrite_entries(&entries.iter().collect::<Vec<_>>())
    }

    fn rewrite_entries(&self, entries: &[&Entry]) -> io::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let mut store = file.lock().unwrap_or_else(|e| e.into_inner());
        let tmp = store.path.with_extension("log.new");
        let text: String = entries.iter().map(|e| line(e)).collect();
        {
            let mut f = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
        }
        fs::rename(&tmp, &store.path)?;
        store.lines = entries.len();
        Ok(())
    }
}

/// Keeps `e`, forgetting the oldest past [`RECEIVED`].
fn remember(v: &mut VecDeque<Entry>, e: Entry) {
    if let Some(i) = v.iter().position(|x| x.id == e.id) {
        v[i] = e;
        return;
    }
    if v.len() == RECEIVED {
        v.pop_front();
    }
    v.push_back(e);
}

fn line(e: &Entry) -> String {
    format!("{:016x} {} {}\n", e.id, e.state.word(), e.from)
}

fn parse_line(l: &str) -> Option<Entry> {
    let mut w = l.splitn(3, ' ');
    let id = u64::from_str_radix(w.next()?, 16).ok()?;
    let state = Kept::from_word(w.next()?)?;
    let from = w.next()?.to_string();
    Some(Entry { id, from, state })
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
    /// The copy is about to be let run, with pages still owed (`owed`:
    /// its keeper kills it if this agent dies) or not (it then runs by
    /// itself: [`Fate::independent`] once the resume is done).
    pub fn resuming(&mut self, owed: bool) {
        self.ran = true;
        self.received.set(self.id, Kept::Resuming { owed });
    }

    /// Every page is in and its keeper is about to be released: dropped
    /// before [`Fate::independent`] or [`Fate::killed`], what became of it
    /// cannot be told.
    pub fn releasing(&mut self) {
        self.ran = true;
        self.settled = true;
        self.received.set(self.id, Kept::Releasing);
    }

    /// The copy goes on by itself, whatever the source does or this
    /// session becomes.
    pub fn independent(&mut self) {
        self.ran = true;
        self.settled = true;
        self.received.set(self.id, Kept::Independent);
    }

    /// The copy was killed.
    pub fn killed(&mut self) {
        self.settled = true;
        self.received.set(self.id, Kept::Gone { ran: self.ran });
    }

    /// Whether the copy was let run.
    pub fn ran(&self) -> bool {
        self.ran
    }
}

impl Drop for Fate<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.received.set(self.id, Kept::Gone { ran: self.ran });
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
        f.resuming(true);
        assert_eq!(r.state(1, "src"), CopyState::PostCopy);
        drop(f);
        assert_eq!(r.state(1, "src"), CopyState::Gone { ran: true });

        let f = r.first_time(3, "src").unwrap();
        drop(f);
        assert_eq!(r.state(3, "src"), CopyState::Gone { ran: false });

        let mut f = r.first_time(4, "src").unwrap();
        f.resuming(false);
        f.independent();
        drop(f);
        assert_eq!(r.state(4, "src"), CopyState::Independent);

        let mut f = r.first_time(5, "src").unwrap();
        f.releasing();
        f.killed();
        drop(f);
        assert_eq!(r.state(5, "src"), CopyState::Gone { ran: true });

        // Dropped while its keeper is released: not known.
        let mut f = r.first_time(6, "src").unwrap();
        f.releasing();
        drop(f);
        assert_eq!(r.state(6, "src"), CopyState::PostCopy);
    }

    /// What a restarted agent answers: each state as the dead agent's
    /// owners left it, replays still refused.
    #[test]
    fn an_agent_that_restarts_still_answers() {
        let dir = std::env::temp_dir().join(format!("migrate-received-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        {
            let r = Received::open(&dir).unwrap();
            // Left in each state, as by an agent that dies (no drop).
            let states: [&dyn Fn(&mut Fate<'_>); 5] = [
                &|_| {},
                &|f| f.resuming(true),
                &|f| f.resuming(false),
                &|f| f.independent(),
                &|f| f.releasing(),
            ];
            for (i, step) in states.iter().enumerate() {
                let mut f = r.first_time(i as u64 + 1, "src").unwrap();
                step(&mut f);
                std::mem::forget(f);
            }
            drop(r.first_time(9, "src").unwrap());
        }
        let r = Received::open(&dir).unwrap();
        let answers: Vec<CopyState> = (1..=5).map(|id| r.state(id, "src")).collect();
        assert_eq!(
            answers,
            [
                CopyState::Gone { ran: false },
                CopyState::Gone { ran: true },
                CopyState::Unknown,
                CopyState::Independent,
                CopyState::Unknown,
            ]
        );
        assert_eq!(r.state(9, "src"), CopyState::Gone { ran: false });
        assert!(r.first_time(3, "src").is_none(), "a replay after a restart");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_file_stays_bounded() {
        let dir = std::env::temp_dir().join(format!("migrate-received-b-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let r = Received::open(&dir).unwrap();
        for id in 0..(COMPACT_AT as u64 + 10) {
            drop(r.first_time(id, "src").unwrap());
        }
        let lines = fs::read_to_string(dir.join("received.log"))
            .unwrap()
            .lines()
            .count();
        assert!(lines < COMPACT_AT, "{lines} lines");
        drop(r);
        let r = Received::open(&dir).unwrap();
        assert_eq!(
            r.state(COMPACT_AT as u64 + 9, "src"),
            CopyState::Gone { ran: false }
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
