//! Descriptors, one file per kind. Each kind's file holds both halves of
//! what the project knows about it: what the dump collects from a frozen
//! process's descriptor of that kind (`dump`, into its
//! [`FdKind`] image entry) and how the rebuild makes it again inside the
//! new process (`restore`, through the [`Remote`] the rebuild lends it).
//! Which kind a descriptor is has one answer, [`Survey::class`], which
//! the dump ([`dump_all`]), the pre-flight's verdicts and `migrate check`
//! all ask (a pipe on a standard stream is forwarded only if the process
//! does not hold its other end too). This module also fixes the order the
//! rebuild makes descriptors in ([`restore_all`]).
//!
//! | file | kind |
//! |---|---|
//! | `path` | a regular file, directory or device reopened by path; a deleted file, shipped |
//! | `dup` | a second number for an open file |
//! | `eventfd`, `timerfd`, `signalfd`, `inotify`, `epoll` | anonymous-inode descriptors |
//! | `memfd` | a memfd, its content with it |
//! | `pipe` | a pipe or FIFO whose both ends the process holds, with the bytes in it |
//! | `unix_pair` | a socketpair held at both ends, with the bytes queued |
//! | `unix_listener` | a Unix socket listening on a name |
//! | `inet` | a listening TCP or unconnected UDP socket |
//! | `tcp` | an established TCP connection of a cooperating process (closed or dialled again) |
//! | `forwarded` | a standard stream forwarded to and from the home host |
//! | `survey` | the classes: which kind a descriptor is |
//! | `calls` | the typed system calls the rebuilds make in the process ([`RemoteCalls`]) |

use migrate_proto::msg::{Code, Reason};
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;

use migrate_proto::image::{
    FdEntry, FdKind, FsCreds, MemfdState, PipeState, ProcessImage, TcpPolicy,
};

use crate::host::procfs::{FdInfo, MapsEntry};
use crate::host::sys;

mod calls;
pub mod dup;
pub mod epoll;
pub mod eventfd;
pub mod forwarded;
pub mod inet;
pub mod inotify;
pub mod memfd;
pub mod path;
pub mod pipe;
pub mod signalfd;
mod survey;
pub mod tcp;
pub mod tcp_repair;
pub mod timerfd;
pub mod unix_listener;
pub mod unix_pair;

pub(crate) use calls::itimerspec;
pub use calls::RemoteCalls;
pub use survey::{Class, Survey, TcpRules};

/// What went wrong with a descriptor.
#[derive(Debug, thiserror::Error)]
pub enum FdError {
    /// Reading the process's `/proc` or its descriptor failed.
    #[error("reading /proc/{pid}/{what} failed")]
    Proc {
        /// Pid.
        pid: i32,
        /// What.
        what: &'static str,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The descriptor cannot be carried (found once frozen).
    #[error("{0}")]
    Refused(Reason),
    /// A step of the rebuild done here (not inside the process) failed.
    #[error("{step} failed")]
    Sys {
        /// What was being done.
        step: &'static str,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The image's descriptor cannot be made on this host.
    #[error("{0}")]
    Incompatible(String),
    /// What the rebuild did inside the process failed.
    #[error(transparent)]
    Remote(Box<dyn std::error::Error + Send + Sync>),
}

fn proc_err(pid: i32, what: &'static str) -> impl FnOnce(io::Error) -> FdError {
    move |source| FdError::Proc { pid, what, source }
}

fn sys_err(step: &'static str) -> impl FnOnce(io::Error) -> FdError {
    move |source| FdError::Sys { step, source }
}

/// What a descriptor's rebuild may do inside the process being rebuilt:
/// its primitives. The typed system calls on them are [`RemoteCalls`].
/// Descriptor numbers are the process's, as `i32`; addresses are the
/// process's, as `u64`.
pub trait Remote {
    /// Runs syscall `nr` in the process; `step` names it in errors.
    fn sys(&mut self, step: impl Into<String>, nr: i64, args: [u64; 6]) -> Result<u64, FdError>;
    /// Runs syscall `nr`; its own failure (an errno) is an answer,
    /// `Ok(Err(_))`, not an error.
    fn try_sys(&mut self, nr: i64, args: [u64; 6]) -> Result<Result<u64, io::Error>, FdError>;
    /// Writes `b` to the process's scratch memory; returns its address.
    fn put_bytes(&mut self, b: &[u8]) -> Result<u64, FdError>;
    /// Reads back the start of the scratch memory.
    fn read_back(&mut self, b: &mut [u8]) -> Result<(), FdError>;
    /// A copy of the process's descriptor `fd` in the agent.
    fn take(&self, fd: i32, what: &'static str) -> Result<OwnedFd, FdError>;
    /// Who the process is to the filesystem.
    fn who(&self) -> &FsCreds;
    /// The content shipped for descriptor `fd` (once).
    fn shipped(&mut self, fd: i32) -> Option<File>;
    /// The file made for the process's mappings of `path`, shared and
    /// writable, if it travelled with them (a copy of the agent's
    /// descriptor).
    fn mapped_file(&self, path: &str) -> Option<OwnedFd>;
    /// Hands the agent's end of a forwarded stream of descriptor `fd` over.
    fn forwarded(&mut self, fd: i32, ours: OwnedFd, output: bool);
    /// Notes that descriptor `fd`'s connection was dialled again.
    fn reconnected(&mut self, fd: i32);
    /// Hands over a connection made again in repair mode, to go live when
    /// the process resumes.
    fn repaired(&mut self, conn: tcp_repair::Repaired);

    /// Writes a NUL-terminated string to scratch; returns its address.
    fn put_str(&mut self, s: &str) -> Result<u64, FdError> {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        self.put_bytes(&b)
    }
}

/// What the dump collected of a process's descriptors.
pub struct Dumped {
    /// Every descriptor.
    pub fds: Vec<FdEntry>,
    /// The pipes' buffers.
    pub pipes: Vec<PipeState>,
    /// Memfd objects reached through descriptors.
    pub memfds: Vec<MemfdState>,
    /// Our copies of the TCP connections `--tcp close` ends, reset at the
    /// commit.
    pub to_reset: Vec<OwnedFd>,
    /// Our copies of the connections checkpointed in repair mode.
    pub in_repair: tcp_repair::InRepair,
}

/// What the kinds' dumps share for one process.
pub struct Collect<'a> {
    /// The process.
    pub pid: i32,
    /// A pidfd of it, to take copies of its descriptors.
    pub pidfd: OwnedFd,
    /// Its mappings.
    pub maps: &'a [MapsEntry],
    /// What its established TCP connections become.
    pub tcp: TcpPolicy,
    /// Its descriptors and their sockets.
    pub survey: &'a Survey,
    /// Collected so far.
    pub out: Dumped,
}

impl Collect<'_> {
    /// A copy of the process's descriptor `fd` in the agent.
    pub fn take(&self, fd: i32) -> Result<OwnedFd, FdError> {
        sys::pidfd_getfd(&self.pidfd, fd).map_err(proc_err(self.pid, "pidfd_getfd"))
    }

    /// The process's inet socket of inode `ino`.
    pub fn inet(&self, ino: u64) -> Option<&crate::host::net_tables::InetSocket> {
        self.survey.inet(ino)
    }
}

/// The descriptors of frozen process `pid`, with open files shared
/// between numbers found by kcmp, and the content of pipes (copied by
/// tee, left in place) and memfds.
/// `survey`, read of the frozen process: descriptors shared with its kin,
/// which move with it, stay inside (a pipe between them is not forwarded).
pub fn dump_all(survey: &Survey, maps: &[MapsEntry]) -> Result<Dumped, FdError> {
    let (pid, tcp) = (survey.pid, survey.tcp.policy);
    let mut c = Collect {
        pid,
        pidfd: sys::pidfd_open(pid).map_err(proc_err(pid, "pidfd"))?,
        maps,
        tcp,
        survey,
        out: Dumped {
            fds: Vec::new(),
            pipes: Vec::new(),
            memfds: Vec::new(),
            to_reset: Vec::new(),
            in_repair: tcp_repair::InRepair::default(),
        },
    };
    for (i, info) in survey.infos.iter().enumerate() {
        let kind = match dup::dump(&c, info, &survey.infos[..i])? {
            Some(k) => k,
            None => dump_one(&mut c, info)?,
        };
        c.out.fds.push(FdEntry { fd: info.fd, kind });
    }
    Ok(c.out)
}

/// What the kind of `info` collects of it.
fn dump_one(c: &mut Collect, info: &FdInfo) -> Result<FdKind, FdError> {
    let refused = |code, what: &str| {
        Err(FdError::Refused(Reason::new(
            code,
            format!("fd {}: {} ({what}) is not carried", info.fd, info.target),
        )))
    };
    match c.survey.class(info) {
        Class::Forwarded { .. } => Ok(forwarded::dump(info)),
        Class::EventFd => Ok(eventfd::dump(info)),
        Class::TimerFd => Ok(timerfd::dump(info)),
        Class::SignalFd => Ok(signalfd::dump(info)),
        Class::Inotify => inotify::dump(c, info),
        Class::Epoll => Ok(epoll::dump(info)),
        Class::Memfd(name) => memfd::dump(c, info, name),
        Class::UnixListener(u) => Ok(unix_listener::dump(info, u)),
        Class::Unix(u) => unix_pair::dump(c, info, u.clone()),
        Class::Tcp(_) => tcp::dump(c, info),
        Class::TcpRepair(_) => tcp_repair::dump(c, info),
        Class::Inet(_) | Class::Unbound | Class::Socket => inet::dump(c, info),
        Class::Pipe { ino, .. } => pipe::dump(c, info, ino),
        Class::Path => Ok(path::dump(info)),
        Class::Terminal => refused(Code::Terminal, "terminal"),
        Class::OtherAnon(k) => refused(Code::Descriptor, k),
        Class::Other => refused(Code::Descriptor, "not supported"),
    }
}

/// What the kinds' rebuilds share for one process.
pub struct Rebuild<'a> {
    /// The image.
    pub image: &'a ProcessImage,
    /// Above every descriptor number of the image: pipes and pairs are
    /// made here, then given their numbers.
    pub high: i32,
    /// Pipes made so far, by inode: (read, write) above `high`.
    pub pipes: HashMap<u64, (i32, i32)>,
    /// Socketpairs made so far, by pair: (first, second) above `high`.
    pub pairs: HashMap<u64, (i32, i32)>,
    /// Memfd objects sealed so far.
    pub sealed: Vec<u64>,
    /// What the processes of its tree rebuilt before it offer.
    pub kin: &'a Kin,
}

/// What the processes of a tree rebuilt so far offer the next one: their
/// pids (whose descriptors it may be given) and the pipes they made, by
/// inode, each with a process (pid here) and its descriptor on it. A
/// process rebuilt later opens the same pipe through `/proc` instead of
/// making another.
#[derive(Debug, Default)]
pub struct Kin {
    /// The processes rebuilt so far.
    pub pids: Vec<i32>,
    /// Their pipes.
    pub pipes: HashMap<u64, (i32, i32)>,
    /// Both ends of each socketpair one of them made whose other end a
    /// later process holds, by pair and end (`true`: the first), kept by
    /// the agent until the tree is rebuilt: the later process is given its
    /// end, and its queued bytes are sent from the other.
    pub pair_ends: std::cell::RefCell<HashMap<(u64, bool), OwnedFd>>,
}

impl Kin {
    /// Notes `image`, rebuilt as process `pid`, for the processes of its
    /// tree rebuilt after it.
    pub fn note(&mut self, pid: i32, image: &ProcessImage) {
        self.pids.push(pid);
        for e in &image.fds {
            if let FdKind::Pipe { pipe, .. } = e.kind {
                self.pipes.entry(pipe).or_insert((pid, e.fd));
            }
        }
    }
}

/// Makes every descriptor of `image` in the process `r` rebuilds, at its
/// number: first the descriptors themselves (the process's own closed
/// first), then what joins them (bytes queued on socketpairs, epoll
/// registrations, once everything they watch exists).
pub fn restore_all(r: &mut impl Remote, image: &ProcessImage) -> Result<(), FdError> {
    restore_all_in_tree(r, image, &Kin::default())
}

/// As [`restore_all`], for a process of a tree whose processes rebuilt
/// before it are `kin`.
pub fn restore_all_in_tree(
    r: &mut impl Remote,
    image: &ProcessImage,
    kin: &Kin,
) -> Result<(), FdError> {
    r.close_range(0, u32::MAX)?;
    let mut b = Rebuild {
        image,
        high: image.fds.iter().map(|e| e.fd).max().unwrap_or(0) + 1,
        pipes: HashMap::new(),
        pairs: HashMap::new(),
        sealed: Vec::new(),
        kin,
    };
    for e in &image.fds {
        restore_one(r, &mut b, e)?;
    }
    unix_pair::refill(r, &b)?;
    unix_pair::keep_for_kin(r, &b)?;
    for (_, (x, y)) in b.pairs.iter().chain(&b.pipes) {
        r.close(*x)?;
        r.close(*y)?;
    }
    for e in &image.fds {
        if let FdKind::Epoll { watches, .. } = &e.kind {
            epoll::register(r, e.fd, watches)?;
        }
    }
    Ok(())
}

fn restore_one(r: &mut impl Remote, b: &mut Rebuild, e: &FdEntry) -> Result<(), FdError> {
    let want = e.fd;
    match &e.kind {
        FdKind::Path { path, flags, pos } => path::restore(r, b, e.fd, path, *flags, *pos),
        FdKind::Dup { of, cloexec } => dup::restore(r, want, *of, *cloexec),
        FdKind::Inherited {
            of_pid,
            of_fd,
            cloexec,
        } => dup::restore_inherited(r, b, want, *of_pid, *of_fd, *cloexec),
        FdKind::EventFd {
            flags,
            count,
            semaphore,
        } => eventfd::restore(r, want, *flags, *count, *semaphore),
        FdKind::TimerFd {
            flags,
            clock,
            value_ns,
            interval_ns,
            ticks,
        } => timerfd::restore(r, want, *flags, *clock, *value_ns, *interval_ns, *ticks),
        FdKind::Inotify { flags, watches } => inotify::restore(r, want, *flags, watches),
        FdKind::SignalFd { flags, mask } => signalfd::restore(r, want, *flags, *mask),
        FdKind::Memfd { inode, flags, pos } => memfd::restore(r, b, want, *inode, *flags, *pos),
        FdKind::Forwarded { flags, output, .. } => forwarded::restore(r, b, e.fd, *flags, *output),
        FdKind::UnixListener {
            flags,
            stype,
            name,
            backlog,
        } => unix_listener::restore(r, want, *flags, *stype, name, *backlog),
        FdKind::UnixPair {
            pair,
            first,
            stype,
            flags,
            ..
        } => unix_pair::restore(r, b, want, *pair, *first, *stype, *flags),
        FdKind::Socket {
            flags,
            domain,
            stype,
            protocol,
            addr,
            listen,
            options,
            peer,
        } => inet::restore(
            r,
            want,
            inet::Bound {
                flags: *flags,
                domain: *domain,
                stype: *stype,
                protocol: *protocol,
                addr,
                listen: *listen,
                options,
                peer: peer.as_deref(),
            },
        ),
        FdKind::TcpConnection {
            flags,
            domain,
            peer,
            reconnect,
        } => tcp::restore(r, e.fd, *flags, *domain, peer, *reconnect),
        FdKind::TcpRepaired {
            flags,
            domain,
            local,
            peer,
            state,
        } => tcp_repair::restore(r, want, *flags, *domain, local, peer, state),
        FdKind::Epoll { flags, .. } => epoll::restore(r, want, *flags),
        FdKind::Pipe { pipe, write, flags } => pipe::restore(r, b, want, *pipe, *write, *flags),
    }
}

/// File locks (flock, fcntl, OFD) on a descriptor's file, as fdinfo
/// lists them: not carried yet, so refused rather than silently dropped.
pub fn check_locks(info: &FdInfo, why: &mut Vec<Reason>) {
    if let Some(l) = info.extra.iter().find(|(k, _)| k == "lock") {
        why.push(Reason::new(
            Code::FileLock,
            format!(
                "fd {}: {} holds a file lock ({}): locks are not migrated yet",
                info.fd,
                info.target,
                l.1.split_whitespace()
                    .skip(1)
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        ));
    }
}

/// `O_NONBLOCK | O_CLOEXEC` of fdinfo flags, as the `*_create` calls of
/// anonymous-inode descriptors take them.
fn nonblock_cloexec(flags: u32) -> i32 {
    (flags & (libc::O_NONBLOCK | libc::O_CLOEXEC) as u32) as i32
}
