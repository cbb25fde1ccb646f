//! What of the network a migration holds back, written down so that an
//! agent dying meanwhile leaves nothing changed (`STATE_DIR/held`, one
//! note per item, removed once the item is given back or let go):
//! - on the source, a service address taken off this host
//!   (`PID-address-ADDR`) and a connection of the original put in repair
//!   mode (`PID-repair-FD`);
//! - on the destination, an address put on this host for a copy still
//!   owed pages (`PID-added-ADDR`).
//!
//! An agent that starts settles what a dead one left: an original still
//! running here (its agent died before the commit; from the commit on an
//! original dies with its agent) gets its addresses back and its
//! connections out of repair; a copy that is gone (its keeper killed it)
//! takes its added address with it.

use std::fs;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tracing::{info, warn};

use crate::host::procfs;
use crate::host::sys::{self, IfAddr};

static DIR: OnceLock<PathBuf> = OnceLock::new();

/// `TCP_REPAIR` (linux/tcp.h).
const TCP_REPAIR: i32 = 19;

/// One item held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// A service address taken off this host (source).
    Address(IfAddr),
    /// Descriptor `fd`, a connection of socket inode `ino`, in repair
    /// mode (source).
    Repair { fd: i32, ino: u64 },
    /// An address put on this host for a copy (destination).
    Added(IfAddr),
}

/// The written note of one item: removed when dropped (the item given
/// back or let go); left behind only by an agent that dies.
#[derive(Debug)]
pub struct Note(Option<PathBuf>);

impl Drop for Note {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            if let Err(e) = fs::remove_file(p) {
                if e.kind() != io::ErrorKind::NotFound {
                    warn!(path = %p.display(), error = %e, "could not remove a held-network note");
                }
            }
        }
    }
}

/// Writes down that `item` is held for process `pid` (nothing if the
/// journal is not open: unit tests).
pub fn note(pid: i32, item: &Held) -> io::Result<Note> {
    let Some(dir) = DIR.get() else {
        return Ok(Note(None));
    };
    let start = procfs::start_time(pid).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
    let path = dir.join(format!("{pid}-{}", name(item)));
    fs::File::create(&path)?.write_all(format(start, item).as_bytes())?;
    Ok(Note(Some(path)))
}

/// The inode of socket `s` (to know it again).
pub fn inode(s: &OwnedFd) -> io::Result<u64> {
    Ok(fs::File::from(s.try_clone()?).metadata()?.ino())
}

fn name(item: &Held) -> String {
    match item {
        Held::Address(a) => format!("address-{}", a.addr),
        Held::Repair { fd, .. } => format!("repair-{fd}"),
        Held::Added(a) => format!("added-{}", a.addr),
    }
}

fn format(start: u64, item: &Held) -> String {
    let mut text = format!("start {start}\n");
    match item {
        Held::Address(a) | Held::Added(a) => {
            let kind = if matches!(item, Held::Address(_)) {
                "address"
            } else {
                "added"
            };
            text += &format!("{kind} {} {} {} {}\n", a.addr, a.prefix, a.ifindex, a.dev);
        }
        Held::Repair { fd, ino } => text += &format!("repair {fd} {ino}\n"),
    }
    text
}

/// A note's start time and item.
fn parse(text: &str) -> Option<(u64, Held)> {
    let mut lines = text.lines();
    let start = lines.next()?.strip_prefix("start ")?.parse().ok()?;
    let f: Vec<&str> = lines.next()?.split(' ').collect();
    let item = match f.as_slice() {
        [kind @ ("address" | "added"), addr, prefix, ifindex, dev] => {
            let a = IfAddr {
                addr: addr.parse::<std::net::IpAddr>().ok()?,
                prefix: prefix.parse().ok()?,
                ifindex: ifindex.parse().ok()?,
                dev: dev.to_string(),
            };
            if *kind == "address" {
                Held::Address(a)
            } else {
                Held::Added(a)
            }
        }
        ["repair", fd, ino] => Held::Repair {
            fd: fd.parse().ok()?,
            ino: ino.parse().ok()?,
        },
        _ => return None,
    };
    Some((start, item))
}

/// Opens the journal under `state_dir` and settles what an agent before
/// this one held and did not give back or let go (it died); returns how
/// many items it settled.
pub fn open(state_dir: &Path) -> io::Result<usize> {
    let dir = state_dir.join("held");
    fs::create_dir_all(&dir)?;
    let mut settled = 0;
    for entry in fs::read_dir(&dir)? {
        let path = entry?.path();
        let pid = path
            .file_name()
            .and_then(|n| n.to_str()?.split('-').next()?.parse::<i32>().ok());
        let text = fs::read_to_string(&path).unwrap_or_default();
        if let (Some(pid), Some((start, item))) = (pid, parse(&text)) {
            // The same process (a pid reused since is another's).
            let alive = procfs::start_time(pid) == Some(start);
            settle(pid, alive, &item);
            settled += 1;
        }
        fs::remove_file(&path)?;
    }
    if settled > 0 {
        info!(
            items = settled,
            "settled what a dead agent held of the network"
        );
    }
    let _ = DIR.set(dir);
    Ok(settled)
}

fn settle(pid: i32, alive: bool, item: &Held) {
    match (item, alive) {
        // The original runs here: its agent died before the commit.
        (Held::Address(a), true) => match sys::change_address(a, true) {
            Ok(()) => {
                info!(addr = %a.addr, pid, "gave an address back to a process that runs here")
            }
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => warn!(addr = %a.addr, error = %e, "giving an address back"),
        },
        (Held::Repair { fd, ino }, true) => {
            let own = sys::pidfd_open(pid).and_then(|p| sys::pidfd_getfd(&p, *fd));
            match own {
                // Still that connection.
                Ok(s) if inode(&s).ok() == Some(*ino) => {
                    match sys::setsockopt_int(&s, libc::IPPROTO_TCP, TCP_REPAIR, 0) {
                        Ok(()) => info!(pid, fd, "took a connection out of repair"),
                        Err(e) => warn!(pid, fd, error = %e, "taking a connection out of repair"),
                    }
                }
                _ => {}
            }
        }
        // The copy is gone: its address goes too.
        (Held::Added(a), false) => match sys::change_address(a, false) {
            Ok(()) => info!(addr = %a.addr, pid, "took the address of a copy that is gone off"),
            Err(e) => warn!(addr = %a.addr, error = %e, "taking an address off"),
        },
        // An original that died (committed: the address is its copy's),
        // or a copy that runs (its address stays).
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_read_back() {
        let a = IfAddr {
            dev: "mgl0".into(),
            ifindex: 7,
            addr: std::net::Ipv4Addr::new(10, 77, 0, 100).into(),
            prefix: 24,
        };
        for item in [
            Held::Address(a.clone()),
            Held::Added(a),
            Held::Repair { fd: 5, ino: 99 },
        ] {
            assert_eq!(parse(&format(42, &item)), Some((42, item)));
        }
        assert_eq!(parse("start 1\nrepair x 2\n"), None);
        assert_eq!(parse("repair 1 2\n"), None);
    }
}
