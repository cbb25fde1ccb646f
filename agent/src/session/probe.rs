//! `migrate-agent check`: what this host supports and lacks for each
//! mode, found by trying each kernel feature the agent relies on (not by
//! reading version numbers; ptrace and TCP_REPAIR by the capabilities and
//! settings they need), and the clock offset, kernel and vDSO of each
//! configured peer (asked over [`Lane::Probe`]), like `criu check`.

use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use migrate_proto::frame;
use migrate_proto::msg::{DestMsg, Lane, SourceMsg, PROBE_CLOCKS};

use crate::host::{procfs, sys, uffd};
use crate::net::peer;
use crate::net::secure::{PeerStream, Security};

/// What the modes (and moving process trees or addresses) need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Every mode.
    All,
    /// Post-copy and hybrid: pages that follow on demand.
    PostCopy,
    /// Pre-copy and hybrid: rounds that track written pages.
    PreCopy,
    /// A process tree keeps its pids.
    Trees,
    /// `--move-address`.
    Addresses,
}

impl Use {
    fn says(self) -> &'static str {
        match self {
            Use::All => "every mode",
            Use::PostCopy => "postcopy, hybrid",
            Use::PreCopy => "precopy, hybrid",
            Use::Trees => "process trees",
            Use::Addresses => "--move-address",
        }
    }
}

/// One thing tried.
#[derive(Debug, Clone)]
pub struct Finding {
    pub what: &'static str,
    pub ok: bool,
    pub detail: String,
    pub needed_by: Use,
}

/// The answers of this host and its peers.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// Per peer: its name and what it said (or why it did not).
    pub peers: Vec<(String, Result<PeerFacts, String>)>,
    /// This host's vDSO hash.
    pub vdso_hash: Option<u64>,
}

/// What a peer told.
#[derive(Debug, Clone)]
pub struct PeerFacts {
    pub kernel: String,
    pub vdso_hash: u64,
    /// Its clock minus ours, microseconds, and the uncertainty.
    pub offset_us: i64,
    pub uncertainty_us: u64,
}

impl Report {
    /// This host's findings (peers not asked yet).
    pub fn of_this_host() -> Report {
        let vdso_hash = vdso_hash();
        Report {
            findings: local(vdso_hash),
            peers: Vec::new(),
            vdso_hash,
        }
    }

    /// Whether everything `u` needs is here.
    pub fn works(&self, u: Use) -> bool {
        self.findings
            .iter()
            .filter(|f| f.needed_by == Use::All || f.needed_by == u)
            .all(|f| f.ok)
    }

    /// Writes the report for people.
    pub fn print(&self, out: &mut dyn Write) -> std::io::Result<()> {
        for f in &self.findings {
            writeln!(
                out,
                "{:<4} {:<28} {}  [{}]",
                if f.ok { "ok" } else { "LACK" },
                f.what,
                f.detail,
                f.needed_by.says()
            )?;
        }
        for (name, said) in &self.peers {
            match said {
                Ok(p) => {
                    let same = Some(p.vdso_hash) == self.vdso_hash;
                    writeln!(
                        out,
                        "{:<4} {:<28} clock {:+} µs ±{} µs, kernel {}, vDSO {}",
                        if same { "ok" } else { "LACK" },
                        format!("peer {name}"),
                        p.offset_us,
                        p.uncertainty_us,
                        p.kernel,
                        if same {
                            "the same as here"
                        } else {
                            "differs from here: processes cannot move between the two"
                        }
                    )?;
                }
                Err(e) => writeln!(out, "LACK {:<28} {e}", format!("peer {name}"))?,
            }
        }
        writeln!(out)?;
        for (mode, u) in [
            ("postcopy", Use::PostCopy),
            ("hybrid", Use::PostCopy),
            ("precopy", Use::PreCopy),
            ("stop-copy", Use::All),
            ("process trees", Use::Trees),
            ("--move-address", Use::Addresses),
        ] {
            let works = match mode {
                "hybrid" => self.works(Use::PostCopy) && self.works(Use::PreCopy),
                _ => self.works(u),
            };
            writeln!(
                out,
                "{mode:<15} {}",
                if works {
                    "works here"
                } else {
                    "cannot work here"
                }
            )?;
        }
        Ok(())
    }
}

/// Effective capabilities of this process (`CapEff`).
fn capabilities() -> u64 {
    procfs::status(sys::getpid())
        .map(|st| procfs::status_hex(&st, "CapEff"))
        .unwrap_or(0)
}

const CAP_SYS_PTRACE: u32 = 19;
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_RESOURCE: u32 = 24;

fn has(caps: u64, cap: u32) -> bool {
    caps & (1 << cap) != 0
}

/// The features this kernel's userfaultfd offers.
fn userfaultfd_features() -> Result<u64, String> {
    let fd = uffd::open().map_err(|e| {
        format!("userfaultfd: {e} (vm.unprivileged_userfaultfd, or a kernel without it)")
    })?;
    uffd::supported(&fd).map_err(|e| format!("UFFDIO_API: {e}"))
}

/// Whether `features` has every one of `wanted`: what it offers, or what
/// it lacks.
fn has_features(
    features: &Result<u64, String>,
    wanted: &[(u64, &'static str)],
    offers: &str,
    since: &str,
) -> Result<String, String> {
    match lacking(*features.as_ref()?, wanted) {
        l if l.is_empty() => Ok(offers.to_string()),
        l => Err(format!("lacks {}{since}", l.join(", "))),
    }
}

/// The feature names in `wanted` that `have` lacks.
fn lacking(have: u64, wanted: &[(u64, &'static str)]) -> Vec<&'static str> {
    wanted
        .iter()
        .filter(|(bit, _)| have & bit == 0)
        .map(|(_, n)| *n)
        .collect()
}

/// Tries everything on this host; `vdso` is its vDSO's hash.
pub fn local(vdso: Option<u64>) -> Vec<Finding> {
    let caps = capabilities();
    let scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    let ptrace = match (has(caps, CAP_SYS_PTRACE), scope) {
        (false, _) => Err("no CAP_SYS_PTRACE: the agent runs as root".to_string()),
        (true, Some(3)) => Err("yama.ptrace_scope is 3: no process may be traced".into()),
        (true, s) => Ok(format!(
            "CAP_SYS_PTRACE, yama.ptrace_scope {}",
            s.unwrap_or(0)
        )),
    };
    let getfd = sys::pipe()
        .and_then(|(r, _w)| {
            let me = sys::pidfd_open(sys::getpid())?;
            sys::pidfd_getfd(&me, r.as_raw_fd()).map(drop)
        })
        .map(|()| "takes a process's descriptors (5.6 or later)".to_string())
        .map_err(|e| e.to_string());
    let features = userfaultfd_features();
    let post = [
        (uffd::FEATURE_EVENT_FORK, "EVENT_FORK"),
        (uffd::FEATURE_EVENT_REMAP, "EVENT_REMAP"),
        (uffd::FEATURE_EVENT_REMOVE, "EVENT_REMOVE"),
        (uffd::FEATURE_EVENT_UNMAP, "EVENT_UNMAP"),
        (uffd::FEATURE_THREAD_ID, "THREAD_ID"),
    ];
    let wp = [
        (uffd::FEATURE_WP_ASYNC, "WP_ASYNC"),
        (uffd::FEATURE_WP_UNPOPULATED, "WP_UNPOPULATED"),
    ];
    let scan = std::fs::File::open("/proc/self/pagemap")
        .and_then(|pm| {
            let page = 4096u64;
            let here = &scan_probe as *const _ as u64 & !(page - 1);
            let q = sys::PageQuery {
                flags: 0,
                all: 0,
                any: 0,
                report: 0,
            };
            sys::pagemap_scan(&pm, here, here + page, q, &mut |_, _, _| {})
        })
        .map(|()| "finds written pages (6.7 or later)".to_string())
        .map_err(|e| format!("{e} (6.7 or later needed)"));
    let set_tid = sys::clone3_set_tid_works()
        .map(|()| "pids chosen at fork (5.5 or later, CAP_SYS_ADMIN)".to_string())
        .map_err(|e| format!("{e}: a tree cannot keep its pids"));
    let repair = match has(caps, CAP_NET_ADMIN) {
        true => Ok("CAP_NET_ADMIN: connections repaired, addresses moved".to_string()),
        false => Err("no CAP_NET_ADMIN".to_string()),
    };
    let capabilities = Ok(match has(caps, CAP_SYS_RESOURCE) {
        true => format!("CapEff {caps:#x}"),
        false => format!(
            "CapEff {caps:#x}; without CAP_SYS_RESOURCE (a rebuilt process's hard limits cannot \
             rise)"
        ),
    });
    let vdso = vdso
        .map(|h| format!("hash {h:016x}: a process moves only between hosts with the same"))
        .ok_or_else(|| "no vDSO found in this process".to_string());
    [
        ("ptrace", Use::All, ptrace),
        ("pidfd_getfd", Use::All, getfd),
        (
            "userfaultfd",
            Use::PostCopy,
            has_features(
                &features,
                &post,
                "missing-page faults with fork, remap, remove, unmap and thread ids",
                "",
            ),
        ),
        (
            "userfaultfd write-protect",
            Use::PreCopy,
            has_features(
                &features,
                &wp,
                "asynchronous write-protection (6.7 or later)",
                " (6.7 or later needed)",
            ),
        ),
        ("PAGEMAP_SCAN", Use::PreCopy, scan),
        ("clone3 with set_tid", Use::Trees, set_tid),
        ("TCP_REPAIR, addresses", Use::Addresses, repair),
        ("capabilities", Use::All, capabilities),
        ("vDSO", Use::All, vdso),
    ]
    .into_iter()
    .map(|(what, needed_by, tried)| Finding {
        what,
        ok: tried.is_ok(),
        detail: tried.unwrap_or_else(|e| e),
        needed_by,
    })
    .collect()
}

/// An address inside this module's code, for a page PAGEMAP_SCAN may read.
fn scan_probe() {}

/// This process's vDSO hash, as a dump records it.
pub fn vdso_hash() -> Option<u64> {
    let me = sys::getpid();
    let maps = procfs::maps(me).ok()?;
    let mem = migrate_inject::RemoteMem::open(me).ok()?;
    procfs::vdso_range(&maps)
        .and_then(|r| migrate_inject::syscall_site(&mem, r))
        .map(|(_, hash)| hash)
}

/// The running kernel's release.
fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Asks the peer at `addr` what it is, and its clock, [`PROBE_CLOCKS`]
/// times (the tightest round trip kept).
pub fn ask_peer(addr: SocketAddr, me: &str, sec: &Security) -> Result<PeerFacts, String> {
    let (mut s, _) = peer::connect(addr, me, Lane::Probe, sec).map_err(|e| e.to_string())?;
    let (vdso_hash, kernel) = match frame::read_msg::<DestMsg>(&mut s) {
        Ok(DestMsg::Facts { vdso_hash, kernel }) => (vdso_hash, kernel),
        Ok(other) => return Err(format!("unexpected answer {other:?}")),
        Err(e) => return Err(format!("no answer: {e}")),
    };
    let (offset_us, uncertainty_us) = crate::session::clock::offset(PROBE_CLOCKS, || {
        frame::write_msg(&mut s, &SourceMsg::ClockProbe).map_err(|e| e.to_string())?;
        match frame::read_msg::<DestMsg>(&mut s) {
            Ok(DestMsg::Clock { unix_us }) => Ok(unix_us),
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(e) => Err(format!("no answer: {e}")),
        }
    })?;
    Ok(PeerFacts {
        kernel,
        vdso_hash,
        offset_us,
        uncertainty_us,
    })
}

/// Answers another host's [`ask_peer`] on `s`.
pub fn answer(s: &mut PeerStream) -> Result<(), frame::FrameError> {
    // A peer that stops asking holds this thread no longer than this.
    s.set_read_timeout(Some(peer::CONNECT_TIMEOUT))?;
    frame::write_msg(
        s,
        &DestMsg::Facts {
            vdso_hash: vdso_hash().unwrap_or(0),
            kernel: kernel(),
        },
    )?;
    for _ in 0..PROBE_CLOCKS {
        match frame::read_msg::<SourceMsg>(s)? {
            SourceMsg::ClockProbe => frame::write_msg(
                s,
                &DestMsg::Clock {
                    unix_us: crate::unix_us(),
                },
            )?,
            _ => break,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mode_works_when_all_it_needs_is_here() {
        let finding = |ok, needed_by| Finding {
            what: "x",
            ok,
            detail: String::new(),
            needed_by,
        };
        let r = Report {
            findings: vec![finding(true, Use::All), finding(false, Use::PreCopy)],
            ..Default::default()
        };
        assert!(r.works(Use::PostCopy) && r.works(Use::All));
        assert!(!r.works(Use::PreCopy));
        let r = Report {
            findings: vec![finding(false, Use::All)],
            ..Default::default()
        };
        assert!(!r.works(Use::PostCopy));
        assert_eq!(lacking(0b101, &[(0b1, "a"), (0b10, "b")]), ["b"]);
    }

    /// This machine (a 6.x kernel, as root in CI) has what post-copy
    /// needs, found by trying it.
    #[test]
    fn this_host_is_probed_by_trying() {
        let f = local(vdso_hash());
        let get = |w: &str| f.iter().find(|x| x.what == w).unwrap();
        assert!(get("pidfd_getfd").ok, "{:?}", get("pidfd_getfd"));
        assert!(get("vDSO").ok);
        let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
        if uid == 0 {
            assert!(get("userfaultfd").ok, "{:?}", get("userfaultfd"));
        }
    }
}
