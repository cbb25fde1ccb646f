//! What is read of a process before the freeze, so that the freeze does not
//! wait for it: its advice and pages, and an `rt_sigreturn` gadget.

use super::*;

/// What the dump reads of a process just before the freeze, while it
/// still runs, because reading it walks every page table (milliseconds
/// per GiB, which would otherwise count as downtime): the `madvise` flags
/// of its mappings (`smaps`) and the pages it holds. Used by the dump only
/// if the frozen process's mappings are exactly those seen around the
/// read. A flag changed on a whole mapping between this read and the
/// freeze (within milliseconds) is the one thing it can miss; pages are
/// checked again where it found none (see `pages_since`).
pub struct RunningScan {
    pub(super) maps: Vec<procfs::MapsEntry>,
    pub(super) advice: std::collections::HashMap<u64, Vec<u32>>,
    /// Per private mapping (by start): the ranges of pages it held.
    pub(super) pages: std::collections::HashMap<u64, Vec<(u64, u64)>>,
}

impl RunningScan {
    /// Reads `pid`'s advice and pages; `None` if its mappings changed
    /// meanwhile.
    pub fn take(pid: i32) -> Option<RunningScan> {
        let before = procfs::maps(pid).ok()?;
        let advice = procfs::advice(pid).ok()?;
        let pagemap = fs::File::open(format!("/proc/{pid}/pagemap")).ok()?;
        let mut buf = Vec::new();
        let mut pages = std::collections::HashMap::new();
        for m in &before {
            let Some(anonymous) = copies_pages(m) else {
                continue;
            };
            if let Ok(held) = procfs::needed_pages(&pagemap, m.start, m.end, anonymous, &mut buf) {
                pages.insert(m.start, held);
            }
        }
        let after = procfs::maps(pid).ok()?;
        (before == after).then_some(RunningScan {
            maps: after,
            advice,
            pages,
        })
    }
}

/// What the dump looks up while the process still runs, so that the
/// freeze does not wait for it.
pub struct Scouted {
    /// Advice and pages, if the mappings held still.
    pub running: Option<RunningScan>,
    /// An `rt_sigreturn` gadget in the process's code, for the way back
    /// out of injected syscalls ([`migrate_inject::frame`]); checked again
    /// once frozen.
    pub sigreturn: Option<u64>,
}

/// Bytes of code searched for an `rt_sigreturn` gadget at most (the C
/// library's is found in its first few hundred KiB).
pub(super) const GADGET_SEARCH: u64 = 64 << 20;

impl Scouted {
    /// Scouts `pid`.
    pub fn take(pid: i32) -> Scouted {
        let sigreturn = (|| {
            let maps = procfs::maps(pid).ok()?;
            let mem = RemoteMem::open(pid).ok()?;
            // The C library first: its `__restore_rt` is the usual find.
            let mut code: Vec<&procfs::MapsEntry> =
                maps.iter().filter(|m| m.perms.contains('x')).collect();
            code.sort_by_key(|m| !m.path.contains("/libc"));
            let ranges: Vec<(u64, u64)> = code.iter().map(|m| (m.start, m.end)).collect();
            migrate_inject::sigreturn_gadget(&mem, &ranges, GADGET_SEARCH)
        })();
        Scouted {
            running: RunningScan::take(pid),
            sigreturn,
        }
    }
}

/// Whether the dump copies the pages mapping `m` holds (private memory,
/// anonymous or of a file: not shared memory, not the kernel's vDSO pages),
/// and if so whether it is anonymous. The running scan and the dump follow
/// this one rule.
pub(super) fn copies_pages(m: &procfs::MapsEntry) -> Option<bool> {
    (!m.shared() && !kinds::is_vdso(&m.path) && m.path != "[vsyscall]").then(|| kinds::is_anon(m))
}

/// Most holes of a running scan looked at again in one mapping; beyond,
/// the whole mapping is scanned at once.
pub(super) const MAX_HOLES: usize = 64;

/// The pages of the mapping `[start, end)` to copy, knowing it held
/// `held` while running: a page it held then and dropped since reads as
/// zeros (copied for nothing, rarely), but a page it touched since lies
/// in a hole of `held`, and only the holes are scanned again. For a
/// process whose memory is dense that is next to nothing, however large.
pub(super) fn pages_since(
    pagemap: &fs::File,
    (start, end): (u64, u64),
    anonymous: bool,
    held: &[(u64, u64)],
    buf: &mut Vec<u8>,
) -> std::io::Result<Vec<(u64, u64)>> {
    let mut holes = Vec::new();
    let mut at = start;
    for &(a, b) in held {
        if a > at {
            holes.push((at, a));
        }
        at = at.max(b);
    }
    if at < end {
        holes.push((at, end));
    }
    if holes.len() > MAX_HOLES {
        return procfs::needed_pages(pagemap, start, end, anonymous, buf);
    }
    let mut all: Vec<(u64, u64)> = held.to_vec();
    for (a, b) in holes {
        all.extend(procfs::needed_pages(pagemap, a, b, anonymous, buf)?);
    }
    all.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(all.len());
    for (a, b) in all {
        match merged.last_mut() {
            Some(l) if l.1 >= a => l.1 = l.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    Ok(merged)
}
