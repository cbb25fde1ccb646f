//! Write tracking on a live process, on its own (no network): what
//! `DirtyTracker` reports is exactly what the process wrote.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use migrate_agent::capture::dirty::DirtyTracker;
use migrate_agent::postcopy::pageset::PageSet;
use migrate_proto::PAGE_SIZE;

/// A process with a 64-page private anonymous mapping that writes the pages it is
/// told to (`w K`), maps and fills 8 more pages (`m`), and answers each
/// command with a line.
const SCRIPT: &str = include_str!("scripts/dirty_tracking_writer.py");

struct Child {
    proc: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Child {
    fn say(&mut self, cmd: &str) -> String {
        let stdin = self.proc.stdin.as_mut().unwrap();
        writeln!(stdin, "{cmd}").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        line.trim().to_string()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

/// Page numbers of `set` within `[base, base + n pages)`.
fn pages_in(set: &PageSet, base: u64, n: u64) -> Vec<u64> {
    set.within(base, base + n * PAGE_SIZE)
        .into_iter()
        .flat_map(|(a, b)| ((a - base) / PAGE_SIZE)..((b - base) / PAGE_SIZE))
        .collect()
}

#[test]
fn the_tracker_reports_exactly_the_pages_written() {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must run as root"
        );
        eprintln!("SKIP the_tracker_reports_exactly_the_pages_written: needs root");
        return;
    }
    let mut proc = Command::new("/usr/bin/python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(proc.stdout.take().unwrap());
    let mut c = Child { proc, out };
    let mut first = String::new();
    c.out.read_line(&mut first).unwrap();
    let base: u64 = first.trim().strip_prefix("base ").unwrap().parse().unwrap();
    let pid = c.proc.id() as i32;

    let mem = migrate_inject::RemoteMem::open(pid).unwrap();
    let mut t = DirtyTracker::attach(pid, &mem).expect("attach");
    // First scan: every present page of the mapping.
    let all = t.take_written().unwrap();
    assert_eq!(pages_in(&all, base, 64), (0..64).collect::<Vec<_>>());
    t.mark_sent(base, base + 64 * PAGE_SIZE);
    // Nothing written since: nothing reported.
    assert_eq!(
        pages_in(&t.take_written().unwrap(), base, 64),
        Vec::<u64>::new()
    );
    // Two writes: exactly those two pages.
    assert_eq!(c.say("w 5"), "ok");
    assert_eq!(c.say("w 17"), "ok");
    assert_eq!(pages_in(&t.take_written().unwrap(), base, 64), vec![5, 17]);
    // A mapping made after the tracking began: all its pages.
    let new: u64 = c.say("m").strip_prefix("new ").unwrap().parse().unwrap();
    assert_eq!(
        pages_in(&t.take_written().unwrap(), new, 8),
        (0..8).collect::<Vec<_>>()
    );
    // The frozen view: what was sent and not written since.
    assert_eq!(c.say("w 9"), "ok");
    let clean = t.clean().unwrap();
    let want: Vec<u64> = (0..64).filter(|&k| k != 9).collect();
    assert_eq!(pages_in(&clean, base, 64), want);
}
