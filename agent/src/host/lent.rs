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
        let pid = path
            .file_name()
            .and_then(|n| n.to_str()?.parse::<i32>().ok());
        let text = fs::read_to_string(&path).unwrap_or_default();
        // The same process (a pid reused since is another's), and threads
        // still its own.
        if let (Some(pid), Some((start, threads))) = (pid, parse(&text)) {
            if procfs::start_time(pid) == Some(start) {
                for (tid, words) in threads {
                    let own = Path::new(&format!("/proc/{pid}/task/{tid}")).exists();
                    if own && sys::set_affinity_words(tid, &words).is_ok() {
                        given += 1;
                    }
                }
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
        // The process's own threads: the agent's is its own business.
        Some(f) => write(f, pid, old.iter().filter(|(t, _)| tids.contains(t))),
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

/// Writes the note: the process's start time, then each thread and the
/// affinity it had. One `/proc` read, whatever the number of threads (this
/// runs while the process is frozen).
fn write<'a>(
    path: &Path,
    pid: i32,
    old: impl Iterator<Item = &'a (i32, AffinityWords)>,
) -> io::Result<()> {
    let start = procfs::start_time(pid).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
    let text = format(start, old);
    fs::File::create(path)?.write_all(text.as_bytes())?;
    debug!(path = %path.display(), "lent affinity written down");
    Ok(())
}

fn format<'a>(start: u64, threads: impl Iterator<Item = &'a (i32, AffinityWords)>) -> String {
    let mut text = format!("start {start}\n");
    for (tid, words) in threads {
        let w: Vec<String> = words.iter().map(|w| format!("{w:x}")).collect();
        text.push_str(&format!("{tid} {}\n", w.join(",")));
    }
    text
}

/// The process's start time and its threads' affinities.
fn parse(text: &str) -> Option<(u64, Vec<(i32, AffinityWords)>)> {
    let mut lines = text.lines();
    let start = lines.next()?.strip_prefix("start ")?.parse().ok()?;
    let mut threads = Vec::new();
    for line in lines {
        let (tid, w) = line.split_once(' ')?;
        let mut words = [0u64; 16];
        let mut n = 0;
        for (i, w) in w.split(',').enumerate() {
            *words.get_mut(i)? = u64::from_str_radix(w, 16).ok()?;
            n += 1;
        }
        if n != 16 {
            return None;
        }
        threads.push((tid.parse().ok()?, words));
    }
    Some((start, threads))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_read_back() {
        let mut w = [0u64; 16];
        w[0] = 0b1011;
        w[15] = 1 << 63;
        let threads = [(4242, w), (4243, [1; 16])];
        let text = format(987_654, threads.iter());
        assert_eq!(parse(&text), Some((987_654, threads.to_vec())));
        assert_eq!(parse("start 1\n4242 1,2\n"), None);
        assert_eq!(parse("4242 0\n"), None);
        assert_eq!(parse("start x\n"), None);
    }
}
