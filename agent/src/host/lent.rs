//! CPU affinity a frozen process lends its dump. The dump holds the
//! process's threads on the agent's CPU while it injects syscalls (each
//! is two wake-ups; on one CPU they cost a few µs, across CPUs tens), and
//! puts their affinity back before it lets them go. So that an agent
//! dying meanwhile leaves nothing changed, each thread's affinity is
//! written down (`STATE_DIR/lent/PID`) before it is changed, and an agent
//! that starts gives back whatever a dead one left written there.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tracing::{debug, info, warn};

use crate::host::procfs;
use crate::host::sys::{self, AffinityWords, CpuPin};

static DIR: OnceLock<PathBuf> = OnceLock::new();

/// Opens the journal under `state_dir` and gives back what an agent
/// before this one lent and did not (it died); returns how many threads
/// got their affinity back.
pub fn open(state_dir: &Path) -> io::Result<usize> {
    let dir = state_dir.join("lent");
    fs::create_dir_all(&dir)?;
    let mut given = 0;
    for entry in fs::read_dir(&dir)? {
        let path = entry?.path();
        let text = fs::read_to_string(&path).unwrap_or_default();
        for (tid, start, words) in text.lines().filter_map(parse) {
            // The same thread (a tid reused since is another's).
            if start_time(tid) == Some(start) && sys::set_affinity_words(tid, &words).is_ok() {
                given += 1;
            }
        }
        fs::remove_file(&path)?;
    }
    if given > 0 {
        info!(
            threads = given,
            "gave back CPU affinity a dead agent had lent"
        );
    }
    let _ = DIR.set(dir);
    Ok(given)
}

/// The threads `tids` of `pid` held on the calling thread's CPU, their
/// affinity written down first (when the journal is open); given back
/// when dropped.
pub struct Lent {
    pin: Option<CpuPin>,
    file: Option<PathBuf>,
}

/// Holds `tids` of process `pid` on the calling thread's CPU.
pub fn lend(pid: i32, tids: &[i32]) -> Lent {
    let file = DIR.get().map(|d| d.join(pid.to_string()));
    let pin = CpuPin::near_me_noting(tids, |old| match &file {
        Some(f) => write(f, old),
        None => Ok(()),
    });
    Lent {
        pin: Some(pin),
        file,
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        // Affinity back first, then the note that it was lent.
        drop(self.pin.take());
        if let Some(f) = &self.file {
            if let Err(e) = fs::remove_file(f) {
                if e.kind() != io::ErrorKind::NotFound {
                    warn!(path = %f.display(), error = %e, "could not remove a lent-affinity note");
                }
            }
        }
    }
}

fn start_time(tid: i32) -> Option<u64> {
    // Field 22, `starttime`; `fields[0]` is field 3.
    procfs::stat_fields(tid).ok()?.get(19)?.parse().ok()
}

fn write(path: &Path, old: &[(i32, AffinityWords)]) -> io::Result<()> {
    let mut text = String::new();
    for (tid, words) in old {
        // A thread gone already needs nothing back.
        let Some(start) = start_time(*tid) else {
            continue;
        };
        text.push_str(&format(*tid, start, words));
    }
    let mut f = fs::File::create(path)?;
    f.write_all(text.as_bytes())?;
    debug!(path = %path.display(), threads = old.len(), "lent affinity written down");
    Ok(())
}

fn format(tid: i32, start: u64, words: &AffinityWords) -> String {
    let w: Vec<String> = words.iter().map(|w| format!("{w:x}")).collect();
    format!("{tid} {start} {}\n", w.join(","))
}

fn parse(line: &str) -> Option<(i32, u64, AffinityWords)> {
    let mut it = line.split_whitespace();
    let tid = it.next()?.parse().ok()?;
    let start = it.next()?.parse().ok()?;
    let mut words = [0u64; 16];
    let mut n = 0;
    for (i, w) in it.next()?.split(',').enumerate() {
        *words.get_mut(i)? = u64::from_str_radix(w, 16).ok()?;
        n += 1;
    }
    (n == 16).then_some((tid, start, words))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_read_back() {
        let mut w = [0u64; 16];
        w[0] = 0b1011;
        w[15] = 1 << 63;
        let line = format(4242, 987_654, &w);
        assert_eq!(parse(line.trim_end()), Some((4242, 987_654, w)));
        assert_eq!(parse("4242 987654 1,2"), None);
        assert_eq!(parse("x 1 0"), None);
    }
}
