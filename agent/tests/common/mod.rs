//! What the agent's local dump-and-rebuild tests share: the root gate, a
//! wait on a program's output, and the stop-copy dump of a process.
//! Each test file uses its own part of it.
#![allow(dead_code)]

use std::fs;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use migrate_agent::capture::dump::{freeze_and_dump, DumpError, Frozen, Scouted};
use migrate_proto::msg::{MigrateOptions, Mode};

/// Whether the test runs as root; without, it is skipped with `why`
/// (never under CI, which must run it).
pub fn root(why: &str) -> bool {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI must run as root"
    );
    eprintln!("SKIP: {why} needs root");
    false
}

/// The first line of `path` containing `needle`, waited for at most `secs`.
pub fn wait_for(path: &Path, needle: &str, secs: u64) -> Option<String> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        let text = fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(needle)) {
            return Some(line.to_string());
        }
        sleep(Duration::from_millis(20));
    }
    None
}

/// Whether `f` came true within `secs`.
pub fn wait_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if f() {
            return true;
        }
        sleep(Duration::from_millis(20));
    }
    false
}

/// Freezes and dumps `pid` for a stop-copy move, as root would ask.
pub fn dump(pid: i32) -> Result<Frozen, DumpError> {
    freeze_and_dump(
        pid,
        &migrate_agent::host::access::Caller::ROOT,
        &MigrateOptions {
            mode: Mode::StopCopy,
            ..Default::default()
        },
        &[],
        None,
        Scouted::take(pid),
        &Default::default(),
        &mut || Ok(()),
    )
}
