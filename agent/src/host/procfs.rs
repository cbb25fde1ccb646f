//! Reading a process's state from `/proc/<pid>`: parsing only, no policy.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;

/// One line of `/proc/<pid>/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapsEntry {
    /// Start address.
    pub start: u64,
    /// End address (exclusive).
    pub end: u64,
    /// `rwxp` / `rwxs` string.
    pub perms: String,
    /// File offset.
    pub offset: u64,
    /// Inode number (0 for anonymous).
    pub inode: u64,
    /// Path or pseudo name (`[heap]`), empty for anonymous.
    pub path: String,
}

impl MapsEntry {
    /// `PROT_*` bits.
    pub fn prot(&self) -> u32 {
        let b = self.perms.as_bytes();
        let mut p = 0;
        if b.first() == Some(&b'r') {
            p |= libc::PROT_READ as u32;
        }
        if b.get(1) == Some(&b'w') {
            p |= libc::PROT_WRITE as u32;
        }
        if b.get(2) == Some(&b'x') {
            p |= libc::PROT_EXEC as u32;
        }
        p
    }

    /// Mapped `MAP_SHARED`.
    pub fn shared(&self) -> bool {
        self.perms.as_bytes().get(3) == Some(&b's')
    }
}

/// Parses the text of `/proc/<pid>/maps`.
pub fn parse_maps(text: &str) -> Vec<MapsEntry> {
    text.lines().filter_map(parse_maps_line).collect()
}

fn parse_maps_line(line: &str) -> Option<MapsEntry> {
    let mut it = line.splitn(6, ' ');
    let range = it.next()?;
    let perms = it.next()?.to_string();
    let offset = u64::from_str_radix(it.next()?, 16).ok()?;
    let _dev = it.next()?;
    let inode = it.next()?.parse().ok()?;
    let path = it.next().unwrap_or("").trim_start().to_string();
    let (s, e) = range.split_once('-')?;
    Some(MapsEntry {
        start: u64::from_str_radix(s, 16).ok()?,
        end: u64::from_str_radix(e, 16).ok()?,
        perms,
        offset,
        inode,
        path,
    })
}

/// Reads and parses `/proc/<pid>/maps`.
pub fn maps(pid: i32) -> io::Result<Vec<MapsEntry>> {
    Ok(parse_maps(&fs::read_to_string(format!(
        "/proc/{pid}/maps"
    ))?))
}

/// Where the vDSO is mapped (`[vdso]`): start and end.
pub fn vdso_range(maps: &[MapsEntry]) -> Option<(u64, u64)> {
    maps.iter()
        .find(|m| m.path == "[vdso]")
        .map(|m| (m.start, m.end))
}

/// The fields of `/proc/<pid>/stat` after the command name, so that
/// `fields[0]` is field 3 (`state`) of proc(5).
pub fn stat_fields(pid: i32) -> io::Result<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad stat"))
}

/// The fields of a `/proc/PID/stat` line after the command name (as
/// [`stat_fields`] returns them).
pub fn parse_stat(text: &str) -> Option<Vec<String>> {
    let close = text.rfind(')')?;
    Some(
        text[close + 1..]
            .split_whitespace()
            .map(str::to_string)
            .collect(),
    )
}

/// Field `n` (1-based, as numbered in proc(5)) of a `stat_fields` result.
pub fn stat_field(fields: &[String], n: usize) -> u64 {
    fields
        .get(n.wrapping_sub(3))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// `PF_EXITING` in a task's `stat` flags: inside `exit`, never cleared.
const PF_EXITING: u64 = 0x4;

/// The start time of process `pid` (field 22 of its `stat`, clock ticks
/// since boot): with its pid, names it across pid reuse.
pub fn start_time(pid: i32) -> Option<u64> {
    // `fields[0]` is field 3.
    stat_fields(pid).ok()?.get(19)?.parse().ok()
}

/// Whether process `pid` has ended: gone, or a zombie.
pub fn ended(pid: i32) -> bool {
    stat_fields(pid).map_or(true, |f| {
        matches!(f.first().map(String::as_str), Some("Z" | "X"))
    })
}

/// Whether process `pid` has ended or is on its way (inside `exit`, not a
/// zombie yet).
pub fn ending(pid: i32) -> bool {
    match stat_fields(pid) {
        Ok(f) => {
            matches!(f.first().map(String::as_str), Some("Z" | "X"))
                || stat_field(&f, 9) & PF_EXITING != 0
        }
        Err(_) => true,
    }
}

/// Waits up to `limit` for a process that is [`ending`] to have ended
/// (its address space torn down can take a while); whether it has.
pub fn await_end(pid: i32, limit: std::time::Duration) -> bool {
    let until = std::time::Instant::now() + limit;
    loop {
        if ended(pid) {
            return true;
        }
        if std::time::Instant::now() >= until {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// `/proc/<pid>/status` as key/value pairs.
pub fn status(pid: i32) -> io::Result<Vec<(String, String)>> {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect())
}

/// Looks up a key of a `status` result.
pub fn status_get<'a>(status: &'a [(String, String)], key: &str) -> Option<&'a str> {
    status
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Numbers of a status line (`Uid:  0 0 0 0`).
pub fn status_nums(status: &[(String, String)], key: &str) -> Vec<u64> {
    status_get(status, key)
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// A hex status field (`SigCgt`, `CapEff`, ...).
pub fn status_hex(status: &[(String, String)], key: &str) -> u64 {
    status_get(status, key)
        .and_then(|v| u64::from_str_radix(v, 16).ok())
        .unwrap_or(0)
}

/// Open descriptor numbers in ascending order.
pub fn fds(pid: i32) -> io::Result<Vec<i32>> {
    let mut v: Vec<i32> = fs::read_dir(format!("/proc/{pid}/fd"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    v.sort_unstable();
    Ok(v)
}

const PM_PRESENT: u64 = 1 << 63;
const PM_SWAPPED: u64 = 1 << 62;
const PM_FILE: u64 = 1 << 61;

/// Ranges of `[start, end)` whose content must be copied: pages the
/// process has written (anonymous, or private copies of file pages) or that
/// are swapped out; never-touched pages, shared zero pages and unmodified
/// file pages are left out. `PAGEMAP_SCAN` walks only populated page
/// tables, so huge untouched reservations cost nothing; kernels without it
/// get a chunked read of `pagemap` (`buf` is its scratch space).
///
/// In an `anonymous` mapping no page can be a file page, and the scan is
/// not asked whether one is: that question costs the kernel a look at
/// every page's `struct page` (about 10 ms for 2 GiB here, while frozen).
pub fn needed_pages(
    pagemap: &fs::File,
    start: u64,
    end: u64,
    anonymous: bool,
    buf: &mut Vec<u8>,
) -> io::Result<Vec<(u64, u64)>> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut push = |a: u64, b: u64| match out.last_mut() {
        Some(l) if l.1 == a => l.1 = b,
        _ => out.push((a, b)),
    };
    use crate::host::sys::page_is;
    let file = if anonymous { 0 } else { page_is::FILE };
    let q = crate::host::sys::PageQuery {
        any: page_is::PRESENT | page_is::SWAPPED,
        report: page_is::PRESENT | page_is::SWAPPED | file | page_is::PFNZERO,
        ..Default::default()
    };
    let scanned = crate::host::sys::pagemap_scan(pagemap, start, end, q, &mut |a, b, c| {
        let needed = c & page_is::SWAPPED != 0
            || (c & page_is::PRESENT != 0 && c & page_is::FILE == 0 && c & page_is::PFNZERO == 0);
        if needed {
            push(a, b);
        }
    });
    match scanned {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTTY) | Some(libc::EINVAL)) => {
            needed_pages_by_read(pagemap, start, end, buf)
        }
        Err(e) => Err(e),
        Ok(()) => Ok(out),
    }
}

fn needed_pages_by_read(
    pagemap: &fs::File,
    start: u64,
    end: u64,
    buf: &mut Vec<u8>,
) -> io::Result<Vec<(u64, u64)>> {
    use std::os::unix::fs::FileExt;
    const CHUNK: u64 = 1 << 16;
    let page = 4096u64;
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut first = start / page;
    let last = end / page;
    while first < last {
        let n = (last - first).min(CHUNK);
        buf.resize((n * 8) as usize, 0);
        pagemap.read_exact_at(buf, first * 8)?;
        for i in 0..n {
            let mut e = [0u8; 8];
            e.copy_from_slice(&buf[(i * 8) as usize..(i * 8 + 8) as usize]);
            let e = u64::from_le_bytes(e);
            if (e & PM_PRESENT != 0 && e & PM_FILE == 0) || e & PM_SWAPPED != 0 {
                let a = (first + i) * page;
                match out.last_mut() {
                    Some(l) if l.1 == a => l.1 = a + page,
                    _ => out.push((a, a + page)),
                }
            }
        }
        first += n;
    }
    Ok(out)
}

/// The `madvise` advice visible in smaps' `VmFlags`, per VMA start.
pub fn advice(pid: i32) -> io::Result<std::collections::HashMap<u64, Vec<u32>>> {
    Ok(parse_advice(&fs::read_to_string(format!(
        "/proc/{pid}/smaps"
    ))?))
}

/// Parses smaps into VMA start -> `MADV_*` values.
pub fn parse_advice(text: &str) -> std::collections::HashMap<u64, Vec<u32>> {
    const FLAGS: [(&str, u32); 5] = [
        ("dc", 10), // MADV_DONTFORK
        ("wf", 18), // MADV_WIPEONFORK
        ("hg", 14), // MADV_HUGEPAGE
        ("nh", 15), // MADV_NOHUGEPAGE
        ("dd", 16), // MADV_DONTDUMP
    ];
    let mut out = std::collections::HashMap::new();
    let mut cur = None;
    for line in text.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            if let Some(start) = cur.take() {
                let adv: Vec<u32> = flags
                    .split_whitespace()
                    .filter_map(|f| FLAGS.iter().find(|(n, _)| *n == f).map(|(_, a)| *a))
                    .collect();
                if !adv.is_empty() {
                    out.insert(start, adv);
                }
            }
        } else if let Some((range, _)) = line.split_once(' ') {
            if let Some((a, _)) = range.split_once('-') {
                if let Ok(start) = u64::from_str_radix(a, 16) {
                    cur = Some(start);
                }
            }
        }
    }
    out
}

/// A POSIX timer as `/proc/<pid>/timers` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerInfo {
    /// Timer id.
    pub id: i32,
    /// Signal number.
    pub signo: i32,
    /// `sigev_value`.
    pub sigval: u64,
    /// `sigev_notify`, with `SIGEV_THREAD_ID` (4) when aimed at a thread.
    pub notify: i32,
    /// The pid or tid it notifies.
    pub target: i32,
    /// Clock id.
    pub clock: i32,
}

/// Parses `/proc/<pid>/timers`.
pub fn parse_timers(text: &str) -> Vec<TimerInfo> {
    let mut out = Vec::new();
    let mut cur: Option<TimerInfo> = None;
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k {
            "ID" => {
                out.extend(cur.take());
                cur = Some(TimerInfo {
                    id: v.parse().unwrap_or(-1),
                    signo: 0,
                    sigval: 0,
                    notify: 0,
                    target: 0,
                    clock: 0,
                });
            }
            "signal" => {
                if let (Some(t), Some((sig, val))) = (cur.as_mut(), v.split_once('/')) {
                    t.signo = sig.parse().unwrap_or(0);
                    t.sigval = u64::from_str_radix(val.trim_start_matches("0x"), 16).unwrap_or(0);
                }
            }
            "notify" => {
                // "signal/pid.123", "none/pid.123", "thread/tid.123"
                if let (Some(t), Some((kind, who))) = (cur.as_mut(), v.split_once('/')) {
                    let base = match kind {
                        "signal" => 0,
                        "none" => 1,
                        "thread" => 2,
                        _ => 0,
                    };
                    let (scope, id) = who.split_once('.').unwrap_or((who, "0"));
                    t.notify = base | if scope == "tid" { 4 } else { 0 };
                    t.target = id.parse().unwrap_or(0);
                }
            }
            "ClockID" => {
                if let Some(t) = cur.as_mut() {
                    t.clock = v.parse().unwrap_or(0);
                }
            }
            _ => {}
        }
    }
    out.extend(cur);
    out
}

/// Every descendant of `pid` alive now (children, theirs, and so on),
/// read from each thread's `children` list; at most `limit` of them.
pub fn descendants(pid: i32, limit: usize) -> Vec<i32> {
    let mut found = Vec::new();
    let mut next = vec![pid];
    while let Some(p) = next.pop() {
        for tid in tids(p).unwrap_or_default() {
            let list =
                fs::read_to_string(format!("/proc/{p}/task/{tid}/children")).unwrap_or_default();
            for c in list.split_whitespace().filter_map(|c| c.parse().ok()) {
                if found.len() >= limit {
                    return found;
                }
                found.push(c);
                next.push(c);
            }
        }
    }
    found
}

/// Whether every thread of `pid` is stopped (`T`, `t`) or asleep in the
/// kernel (`S`, `D`: a fault waiting for its page), so that it cannot
/// fork; false when it is gone.
pub fn is_stopped_or_faulting(pid: i32) -> bool {
    let Ok(tids) = tids(pid) else { return false };
    !tids.is_empty()
        && tids.iter().all(|t| {
            fs::read_to_string(format!("/proc/{pid}/task/{t}/stat"))
                .ok()
                .and_then(|text| parse_stat(&text))
                .is_some_and(|f| {
                    matches!(f.first().map(String::as_str), Some("T" | "t" | "S" | "D"))
                })
        })
}

/// The pid a pidfd of ours refers to (`Pid:` of its fdinfo), if it still
/// runs.
pub fn pidfd_pid(pidfd: &std::os::fd::OwnedFd) -> Option<i32> {
    use std::os::fd::AsRawFd;
    fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd()))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Pid:"))?
        .trim()
        .parse()
        .ok()
        .filter(|&p: &i32| p > 0)
}

/// Thread ids of `pid`, the leader first.
pub fn tids(pid: i32) -> io::Result<Vec<i32>> {
    let mut v: Vec<i32> = fs::read_dir(format!("/proc/{pid}/task"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    v.sort_unstable_by_key(|&t| (t != pid, t));
    Ok(v)
}

/// What a descriptor points at, as far as procfs tells.
#[derive(Debug, Clone)]
pub struct FdInfo {
    /// Descriptor number.
    pub fd: i32,
    /// `readlink /proc/<pid>/fd/<fd>`.
    pub target: String,
    /// `flags:` of fdinfo (octal in the file).
    pub flags: u32,
    /// `pos:` of fdinfo.
    pub pos: u64,
    /// File type bits of the target (`S_IFMT`), 0 if unknown.
    pub mode: u32,
    /// Device number of a character/block device target.
    pub rdev: u64,
    /// Inode number of the target.
    pub ino: u64,
    /// Everything else fdinfo says, as (key, value) lines.
    pub extra: Vec<(String, String)>,
}

/// An epoll registration as fdinfo shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpollEntry {
    /// Watched descriptor number.
    pub tfd: i32,
    /// Event mask.
    pub events: u32,
    /// User data.
    pub data: u64,
    /// Inode of the watched file.
    pub ino: u64,
}

impl FdInfo {
    /// An fdinfo value by key.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.extra
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A `(sec, nsec)` fdinfo value (timerfd's `it_value`), in ns.
    pub fn get_timespec_ns(&self, key: &str) -> Option<u64> {
        let v = self.get(key)?.trim().strip_prefix('(')?.strip_suffix(')')?;
        let (a, b) = v.split_once(',')?;
        Some(a.trim().parse::<u64>().ok()? * 1_000_000_000 + b.trim().parse::<u64>().ok()?)
    }

    /// Watches of an inotify descriptor: (wd, sdev, mask, handle type,
    /// handle bytes).
    pub fn inotify_watches(&self) -> Vec<(i32, u64, u32, i32, Vec<u8>)> {
        self.extra
            .iter()
            .filter(|(k, _)| k == "inotify")
            .filter_map(|(_, v)| {
                let get = |key: &str| v.split_whitespace().find_map(|w| w.strip_prefix(key));
                let handle = get("f_handle:")?;
                // Pairs of hex digits; anything else (not ASCII, say) is no
                // handle rather than a slice across a character.
                let bytes = handle
                    .as_bytes()
                    .chunks_exact(2)
                    .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
                    .collect::<Option<Vec<u8>>>()?;
                Some((
                    get("wd:")?.parse().ok()?,
                    u64::from_str_radix(get("sdev:")?, 16).ok()?,
                    u32::from_str_radix(get("mask:")?, 16).ok()?,
                    get("fhandle-type:")?.parse().ok()?,
                    bytes,
                ))
            })
            .collect()
    }

    /// Registrations of an epoll descriptor.
    pub fn epoll_entries(&self) -> Vec<EpollEntry> {
        self.extra
            .iter()
            .filter(|(k, _)| k == "tfd")
            .filter_map(|(_, v)| parse_tfd(v))
            .collect()
    }
}

/// Parses the rest of a `tfd:` line:
/// `5 events: 19 data: 7f0100000006  pos:0 ino:40e sdev:10`.
fn parse_tfd(v: &str) -> Option<EpollEntry> {
    let w: Vec<&str> = v.split_whitespace().collect();
    let after = |key: &str| {
        w.iter()
            .position(|x| *x == key)
            .and_then(|i| w.get(i + 1))
            .copied()
    };
    let ino = w.iter().find_map(|x| x.strip_prefix("ino:"))?;
    Some(EpollEntry {
        tfd: w.first()?.parse().ok()?,
        events: u32::from_str_radix(after("events:")?, 16).ok()?,
        data: u64::from_str_radix(after("data:")?, 16).ok()?,
        ino: u64::from_str_radix(ino, 16).ok()?,
    })
}

/// Reads one descriptor's link and fdinfo.
pub fn fd_info(pid: i32, fd: i32) -> io::Result<FdInfo> {
    let target = fs::read_link(format!("/proc/{pid}/fd/{fd}"))?
        .to_string_lossy()
        .into_owned();
    let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))?;
    let mut flags = 0;
    let mut pos = 0;
    let mut extra = Vec::new();
    for line in info.lines() {
        if let Some(v) = line.strip_prefix("flags:") {
            flags = u32::from_str_radix(v.trim(), 8).unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("pos:") {
            pos = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("inotify ") {
            extra.push(("inotify".to_string(), v.trim().to_string()));
        } else if let Some((k, v)) = line.split_once(':') {
            extra.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let (mode, rdev, ino) = match fs::metadata(format!("/proc/{pid}/fd/{fd}")) {
        Ok(m) => (m.mode() & libc::S_IFMT, m.rdev(), m.ino()),
        Err(_) => (0, 0, 0),
    };
    Ok(FdInfo {
        fd,
        target,
        flags,
        pos,
        mode,
        rdev,
        ino,
        extra,
    })
}

/// The inode of a socket descriptor (`socket:[N]`).
pub fn socket_inode(target: &str) -> Option<u64> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Parses `/proc/<pid>/auxv` into (type, value) pairs.
/// Parses `/proc/<pid>/limits`: (soft, hard) per resource, in resource
/// number order; `unlimited` is `u64::MAX` (RLIM_INFINITY).
pub fn parse_limits(text: &str) -> Vec<(u64, u64)> {
    let val = |v: &str| {
        if v == "unlimited" {
            Some(u64::MAX)
        } else {
            v.parse().ok()
        }
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            // "Max open files            1024                 524288               files"
            let rest = l.get(26..)?;
            let mut w = rest.split_whitespace();
            Some((val(w.next()?)?, val(w.next()?)?))
        })
        .collect()
}

/// The resource limits of `pid` (readable even without CAP_SYS_RESOURCE,
/// which `prlimit` on another user's process needs).
pub fn limits(pid: i32) -> io::Result<Vec<(u64, u64)>> {
    Ok(parse_limits(&fs::read_to_string(format!(
        "/proc/{pid}/limits"
    ))?))
}

pub fn auxv_pairs(raw: &[u8]) -> Vec<(u64, u64)> {
    raw.chunks_exact(16)
        .map(|c| {
            let mut a = [0u8; 8];
            let mut b = [0u8; 8];
            a.copy_from_slice(&c[..8]);
            b.copy_from_slice(&c[8..]);
            (u64::from_le_bytes(a), u64::from_le_bytes(b))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inotify_handle_that_is_not_hex_is_no_handle() {
        let info = |handle: &str| {
            FdInfo {
            fd: 3,
            target: "anon_inode:inotify".into(),
            flags: 0,
            pos: 0,
            mode: 0,
            rdev: 0,
            ino: 0,
            extra: vec![(
                "inotify".into(),
                format!("wd:1 ino:2 sdev:3 mask:4 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:{handle}"),
            )],
        }
        };
        assert_eq!(info("0a0b").inotify_watches()[0].4, vec![10, 11]);
        assert!(info("\u{e9}a").inotify_watches().is_empty());
        assert!(info("zz").inotify_watches().is_empty());
    }

    #[test]
    fn parses_epoll_registrations() {
        let e =
            parse_tfd("6 events:       19 data:     7f0100000006  pos:0 ino:40e sdev:10").unwrap();
        assert_eq!(
            e,
            EpollEntry {
                tfd: 6,
                events: 0x19,
                data: 0x7f01_0000_0006,
                ino: 0x40e
            }
        );
        let e =
            parse_tfd("4 events: 80000019 data:                4  pos:0 ino:22f3b sdev:f").unwrap();
        assert_eq!((e.events, e.data, e.ino), (0x8000_0019, 4, 0x22f3b));
    }

    #[test]
    fn parses_advice() {
        let text = "7f0000000000-7f0000100000 rw-p 00000000 00:00 0 \nSize:               1024 kB\nVmFlags: rd wr mr mw me ac dc hg \n7f0000200000-7f0000300000 rw-p 00000000 00:00 0 \nVmFlags: rd wr mr mw me ac \n";
        let a = parse_advice(text);
        assert_eq!(a.get(&0x7f00_0000_0000), Some(&vec![10, 14]));
        assert_eq!(a.get(&0x7f00_0020_0000), None);
    }

    #[test]
    fn parses_timers() {
        let text = "ID: 0\nsignal: 14/00007f0000001000\nnotify: signal/pid.42\nClockID: 1\nID: 3\nsignal: 10/0000000000000000\nnotify: thread/tid.43\nClockID: 0\n";
        let t = parse_timers(text);
        assert_eq!(t.len(), 2);
        assert_eq!(
            (
                t[0].id,
                t[0].signo,
                t[0].sigval,
                t[0].notify,
                t[0].target,
                t[0].clock
            ),
            (0, 14, 0x7f0000001000, 0, 42, 1)
        );
        assert_eq!((t[1].id, t[1].notify, t[1].target), (3, 4 | 2, 43));
    }

    #[test]
    fn parses_limits() {
        let text =
            "Limit                     Soft Limit           Hard Limit           Units     \n\
Max cpu time              unlimited            unlimited            seconds   \n\
Max file size             unlimited            unlimited            bytes     \n\
Max data size             unlimited            unlimited            bytes     \n\
Max stack size            8388608              unlimited            bytes     \n\
Max core file size        0                    unlimited            bytes     \n\
Max resident set          unlimited            unlimited            bytes     \n\
Max processes             96365                96365                processes \n\
Max open files            1024                 524288               files     \n";
        let l = parse_limits(text);
        assert_eq!(l.len(), 8);
        assert_eq!(l[0], (u64::MAX, u64::MAX));
        assert_eq!(l[3], (8388608, u64::MAX));
        assert_eq!(l[7], (1024, 524288));
    }

    #[test]
    fn parses_maps_lines() {
        let text = "55d4a0a00000-55d4a0a02000 r--p 00000000 fd:01 1234   /usr/bin/my prog\n\
                    7ffd1000-7ffd2000 rw-p 00000000 00:00 0                  [stack]\n\
                    7f0000000000-7f0000001000 ---p 00000000 00:00 0 \n";
        let m = parse_maps(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].path, "/usr/bin/my prog");
        assert_eq!(m[0].inode, 1234);
        assert_eq!(m[0].prot(), libc::PROT_READ as u32);
        assert_eq!(m[1].path, "[stack]");
        assert_eq!(m[2].path, "");
        assert_eq!(m[2].prot(), 0);
        assert!(!m[1].shared());
    }

    #[test]
    fn parses_stat_with_spaces_in_comm() {
        let f = parse_stat("42 (a b) c) S 1 42 42 0 -1").unwrap();
        assert_eq!(f[0], "S");
        assert_eq!(stat_field(&f, 4), 1);
    }
}
