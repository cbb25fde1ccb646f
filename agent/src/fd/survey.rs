//! Which kind a descriptor is: one rule, asked by the pre-flight (for its
//! verdict), by the dump (for what to collect) and by `migrate check` (for
//! what to show), so that the three never disagree.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;

use migrate_proto::image::TcpPolicy;

use crate::host::kinds::{self, pipe_inode};
use crate::host::net_tables::{self, InetSocket};
use crate::host::procfs::{self, FdInfo};
use crate::host::sys::{self, UnixSocket};

/// What a descriptor is, as far as moving it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class<'a> {
    /// A standard stream (0-2) forwarded to and from the home host: a pipe
    /// whose other end is outside (neither the process's nor its kin's),
    /// or a terminal.
    Forwarded {
        /// A terminal (a deputy stays on the home host).
        terminal: bool,
    },
    /// A terminal on another number: not forwarded.
    Terminal,
    /// An eventfd.
    EventFd,
    /// A timerfd.
    TimerFd,
    /// A signalfd.
    SignalFd,
    /// An inotify instance.
    Inotify,
    /// An epoll set.
    Epoll,
    /// Another anonymous-inode descriptor (its kind named): not carried.
    OtherAnon(&'a str),
    /// A memfd (its name).
    Memfd(&'a str),
    /// A Unix socket listening on a name.
    UnixListener(&'a UnixSocket),
    /// Another Unix socket (a socketpair moves if both ends are here).
    Unix(&'a UnixSocket),
    /// An established TCP connection on an address that moves with the
    /// process: checkpointed with `TCP_REPAIR` and made again.
    TcpRepair(&'a InetSocket),
    /// An established TCP connection that the process's TCP policy
    /// closes or dials again.
    Tcp(&'a InetSocket),
    /// Another IPv4/IPv6 socket.
    Inet(&'a InetSocket),
    /// An IPv4/IPv6 TCP or UDP socket never bound nor connected (in no
    /// table): made again, unbound.
    Unbound,
    /// A socket found in no table this agent reads.
    Socket,
    /// A pipe or FIFO end.
    Pipe {
        /// Its inode.
        ino: u64,
        /// The write end (else the read end).
        write: bool,
        /// Both ends are inside (the process's or its kin's).
        both: bool,
    },
    /// A regular file, directory or device reopened by its path, or a
    /// deleted file shipped with its content.
    Path,
    /// Anything else: not carried.
    Other,
}

/// What becomes of a process's established TCP connections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TcpRules {
    /// A cooperating process's choice (else refused).
    pub policy: TcpPolicy,
    /// Addresses that move with the process (`--move-address`): its
    /// connections on them are repaired (unless a cooperating process
    /// chose to close or dial them again).
    pub moved: Vec<IpAddr>,
}

impl TcpRules {
    /// Rules of a process that moves no address.
    pub fn policy(policy: TcpPolicy) -> TcpRules {
        TcpRules {
            policy,
            moved: Vec::new(),
        }
    }

    /// Whether the established connection `s` is repaired: its local
    /// address moves.
    pub fn repairs(&self, s: &InetSocket) -> bool {
        s.local.is_some_and(|a| self.moved.contains(&a))
    }
}

/// A process's descriptors, read once, with what classifying them needs.
#[derive(Debug)]
pub struct Survey {
    /// The process.
    pub pid: i32,
    /// Its descriptors, in number order.
    pub infos: Vec<FdInfo>,
    /// What its established TCP connections become.
    pub tcp: TcpRules,
    /// The host's Unix sockets (sock_diag).
    unix: Vec<UnixSocket>,
    /// The process's inet sockets, read when the first one is met.
    inet: OnceCell<HashMap<u64, InetSocket>>,
    /// The descriptors of the processes that move with this one (the
    /// other members of its tree): a pipe or socketpair end they hold is
    /// held inside.
    kin: Vec<(i32, Vec<FdInfo>)>,
    /// How many of `kin` come before this process in its tree.
    before: usize,
    /// Pipes (not forwarded) that a process outside holds too (inode,
    /// that process, its link), found when first asked.
    shared_pipes: OnceCell<Vec<(u64, i32, String)>>,
    /// Its pipe ends whose other end nobody holds, found when first asked.
    widowed: OnceCell<Vec<i32>>,
}

impl Survey {
    /// Reads the descriptors of `pid` (those closed meanwhile left out)
    /// and the host's Unix sockets.
    pub fn read(pid: i32, tcp: &TcpRules) -> io::Result<Survey> {
        let infos = procfs::fds(pid)?
            .into_iter()
            .filter_map(|fd| procfs::fd_info(pid, fd).ok())
            .collect();
        Ok(Survey {
            pid,
            infos,
            tcp: tcp.clone(),
            unix: sys::unix_sockets()?,
            inet: OnceCell::new(),
            kin: Vec::new(),
            before: 0,
            shared_pipes: OnceCell::new(),
            widowed: OnceCell::new(),
        })
    }

    /// The same, with the descriptors of processes `kin` that move with
    /// this one (those gone meanwhile left out).
    pub fn with_kin(mut self, kin: &[i32]) -> Survey {
        self.before = kin.iter().position(|&p| p == self.pid).unwrap_or(0);
        for &pid in kin.iter().filter(|&&p| p != self.pid) {
            let Ok(fds) = procfs::fds(pid) else { continue };
            let infos = fds
                .into_iter()
                .filter_map(|fd| procfs::fd_info(pid, fd).ok())
                .collect();
            self.kin.push((pid, infos));
        }
        self
    }

    /// The descriptors of the kin that come before this process in its
    /// tree (dumped and rebuilt before it), by process.
    pub fn kin_before(&self) -> &[(i32, Vec<FdInfo>)] {
        &self.kin[..self.before.min(self.kin.len())]
    }

    /// The process of its tree dumped before it, and its descriptor, whose
    /// open file `info` is (inherited across a fork, found by `kcmp`): that
    /// process's descriptor is checked and carried, this one is passed
    /// from it.
    pub fn inherited_from(&self, info: &FdInfo) -> io::Result<Option<(i32, i32)>> {
        for (pid, infos) in self.kin_before() {
            for e in infos
                .iter()
                .filter(|e| e.ino == info.ino && e.mode == info.mode)
            {
                match sys::same_open_file_of((*pid, e.fd), (self.pid, info.fd)) {
                    Ok(true) => return Ok(Some((*pid, e.fd))),
                    Ok(false) => {}
                    // That process ended since it was read: it does not
                    // move, nor share anything.
                    Err(_) if procfs::ending(*pid) => break,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(None)
    }

    /// Every descriptor held inside: this process's, then its kin's.
    fn inside(&self) -> impl Iterator<Item = &FdInfo> {
        self.infos
            .iter()
            .chain(self.kin.iter().flat_map(|(_, i)| i.iter()))
    }

    /// The process's inet socket of inode `ino`.
    pub fn inet(&self, ino: u64) -> Option<&InetSocket> {
        self.inet
            .get_or_init(|| net_tables::inet_sockets(self.pid))
            .get(&ino)
    }

    /// The host's Unix socket of inode `ino`.
    pub fn unix(&self, ino: u64) -> Option<&UnixSocket> {
        self.unix.iter().find(|u| u.inode == ino)
    }

    /// Whether a descriptor of the process or its kin is the socket of
    /// inode `ino`.
    pub fn holds_socket(&self, ino: u64) -> bool {
        self.inside()
            .any(|i| procfs::socket_inode(&i.target) == Some(ino))
    }

    /// A process outside (neither this one nor its kin) holding the pipe
    /// or FIFO of inode `ino`, with its link, if any.
    pub fn pipe_elsewhere(&self, ino: u64) -> Option<(i32, &str)> {
        self.shared_pipes
            .get_or_init(|| self.find_shared_pipes())
            .iter()
            .find(|s| s.0 == ino)
            .map(|s| (s.1, s.2.as_str()))
    }

    /// The class of descriptor `info`, one of this survey's.
    pub fn class<'a>(&'a self, info: &'a FdInfo) -> Class<'a> {
        let t = info.target.as_str();
        if let Some(ino) = pipe_inode(info) {
            let write = is_write_end(info);
            let both = self
                .inside()
                .any(|o| pipe_inode(o) == Some(ino) && is_write_end(o) != write)
                || self.widowed(info);
            return if !both && is_stdio(info) {
                Class::Forwarded { terminal: false }
            } else {
                Class::Pipe { ino, write, both }
            };
        }
        if kinds::is_terminal(info) {
            return if is_stdio(info) {
                Class::Forwarded { terminal: true }
            } else {
                Class::Terminal
            };
        }
        match t {
            "anon_inode:[eventfd]" => return Class::EventFd,
            "anon_inode:[timerfd]" => return Class::TimerFd,
            "anon_inode:[signalfd]" => return Class::SignalFd,
            "anon_inode:inotify" => return Class::Inotify,
            "anon_inode:[eventpoll]" => return Class::Epoll,
            _ => {}
        }
        if let Some(k) = t.strip_prefix("anon_inode:") {
            return Class::OtherAnon(k.trim_start_matches('[').trim_end_matches(']'));
        }
        if info.mode == libc::S_IFREG {
            if let Some(name) = kinds::memfd_name(t) {
                return Class::Memfd(name);
            }
        }
        if let Some(ino) = procfs::socket_inode(t) {
            if let Some(u) = self.unix(ino) {
                return if u.state == super::unix_listener::LISTENING {
                    Class::UnixListener(u)
                } else {
                    Class::Unix(u)
                };
            }
            return match self.inet(ino) {
                // Repaired unless a cooperating process chose otherwise.
                Some(s)
                    if s.established()
                        && self.tcp.policy == TcpPolicy::Refuse
                        && self.tcp.repairs(s) =>
                {
                    Class::TcpRepair(s)
                }
                Some(s) if s.established() && self.tcp.policy != TcpPolicy::Refuse => Class::Tcp(s),
                Some(s) => Class::Inet(s),
                None if self.never_bound(info.fd) => Class::Unbound,
                None => Class::Socket,
            };
        }
        if super::path::movable(info) {
            return Class::Path;
        }
        Class::Other
    }

    /// Whether the process's socket `fd` is an IPv4/IPv6 one never bound
    /// nor connected, asked of a copy of it.
    fn never_bound(&self, fd: i32) -> bool {
        sys::pidfd_open(self.pid)
            .and_then(|pidfd| sys::pidfd_getfd(&pidfd, fd))
            .is_ok_and(|s| super::inet::never_bound(&s))
    }

    /// Whether the pipe end `info` (one of this survey's; not a named
    /// FIFO) is alone: its other end is closed in every process (as `make
    /// -j` gives its jobs a standard input that reads as ended). It moves
    /// as a pipe made with both ends, the other closed once the process
    /// is rebuilt.
    pub fn widowed(&self, info: &FdInfo) -> bool {
        self.widowed
            .get_or_init(|| self.find_widowed())
            .contains(&info.fd)
    }

    /// The process's pipe ends that are alone, asked once of copies of
    /// them: a read end without writers reports a hang-up, a write end
    /// without readers an error.
    fn find_widowed(&self) -> Vec<i32> {
        let Ok(pidfd) = sys::pidfd_open(self.pid) else {
            return Vec::new();
        };
        self.infos
            .iter()
            .filter(|i| i.target.starts_with("pipe:["))
            .filter(|i| {
                let (events, alone) = match is_write_end(i) {
                    false => (libc::POLLIN, libc::POLLHUP),
                    true => (libc::POLLOUT, libc::POLLERR),
                };
                sys::pidfd_getfd(&pidfd, i.fd)
                    .and_then(|end| sys::poll_now(&end, events))
                    .is_ok_and(|r| r & alone != 0)
            })
            .map(|i| i.fd)
            .collect()
    }

    /// Whether process `other` descends from this process or its kin.
    fn born_inside(&self, other: i32) -> bool {
        let mut pid = other;
        // Bounded: a chain of parents is never longer than the tree's depth
        // plus the way to init.
        for _ in 0..1024 {
            let Ok(f) = procfs::stat_fields(pid) else {
                return false;
            };
            pid = procfs::stat_field(&f, 4) as i32;
            if pid <= 1 {
                return false;
            }
            if pid == self.pid || self.kin.iter().any(|(k, _)| *k == pid) {
                return true;
            }
        }
        false
    }

    fn find_shared_pipes(&self) -> Vec<(u64, i32, String)> {
        let mut inodes: Vec<u64> = self
            .infos
            .iter()
            .filter_map(|i| match self.class(i) {
                Class::Pipe { ino, .. } => Some(ino),
                _ => None,
            })
            .collect();
        inodes.sort_unstable();
        inodes.dedup();
        let mut out = Vec::new();
        if inodes.is_empty() {
            return out;
        }
        let Ok(dir) = fs::read_dir("/proc") else {
            return out;
        };
        for e in dir.flatten() {
            let Some(other) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            if other == self.pid || self.kin.iter().any(|(k, _)| *k == other) {
                continue;
            }
            let Ok(fds) = fs::read_dir(format!("/proc/{other}/fd")) else {
                continue;
            };
            for f in fds.flatten() {
                let Ok(t) = fs::read_link(f.path()) else {
                    continue;
                };
                let t = t.to_string_lossy();
                let ino = t
                    .strip_prefix("pipe:[")
                    .and_then(|x| x.strip_suffix(']'))
                    .and_then(|x| x.parse::<u64>().ok())
                    .or_else(|| {
                        // Named FIFOs: by the inode behind the link.
                        let md = fs::metadata(f.path()).ok()?;
                        (md.mode() & libc::S_IFMT == libc::S_IFIFO).then_some(md.ino())
                    });
                if let Some(ino) = ino.filter(|i| inodes.contains(i)) {
                    // A child born since the tree was read is frozen with it.
                    if self.born_inside(other) {
                        break;
                    }
                    if !out.iter().any(|s: &(u64, i32, String)| s.0 == ino) {
                        out.push((ino, other, t.into_owned()));
                    }
                }
            }
        }
        out
    }
}

/// A standard stream's number.
fn is_stdio(info: &FdInfo) -> bool {
    (0..=2).contains(&info.fd)
}

/// A pipe descriptor opened for writing.
fn is_write_end(info: &FdInfo) -> bool {
    info.flags & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(fd: i32, target: &str, mode: u32, flags: i32) -> FdInfo {
        FdInfo {
            fd,
            target: target.into(),
            flags: flags as u32,
            pos: 0,
            mode,
            rdev: 0,
            ino: 0,
            extra: Vec::new(),
        }
    }

    fn survey(infos: Vec<FdInfo>) -> Survey {
        Survey {
            pid: 0,
            infos,
            tcp: TcpRules::default(),
            unix: Vec::new(),
            inet: OnceCell::from(HashMap::new()),
            kin: Vec::new(),
            before: 0,
            shared_pipes: OnceCell::from(Vec::new()),
            widowed: OnceCell::from(Vec::new()),
        }
    }

    fn classes(s: &Survey) -> Vec<Class<'_>> {
        s.infos.iter().map(|i| s.class(i)).collect()
    }

    #[test]
    fn a_stdio_pipe_is_forwarded_only_if_its_other_end_is_elsewhere() {
        let fifo = libc::S_IFIFO;
        // Output to another process: forwarded.
        let s = survey(vec![info(1, "pipe:[7]", fifo, libc::O_WRONLY)]);
        assert_eq!(classes(&s), [Class::Forwarded { terminal: false }]);
        // The process's own pipe, its write end dup'ed onto stdout: a pipe,
        // both ends of it kept in the process.
        let s = survey(vec![
            info(1, "pipe:[7]", fifo, libc::O_WRONLY),
            info(5, "pipe:[7]", fifo, libc::O_RDONLY),
        ]);
        assert_eq!(
            classes(&s),
            [
                Class::Pipe {
                    ino: 7,
                    write: true,
                    both: true
                },
                Class::Pipe {
                    ino: 7,
                    write: false,
                    both: true
                }
            ]
        );
        // Both ends on standard streams: a pipe too.
        let s = survey(vec![
            info(0, "pipe:[8]", fifo, libc::O_RDONLY),
            info(1, "pipe:[8]", fifo, libc::O_WRONLY),
        ]);
        assert!(classes(&s)
            .iter()
            .all(|c| matches!(c, Class::Pipe { both: true, .. })));
        // One end elsewhere, off the standard streams: a pipe held at one end.
        let s = survey(vec![info(4, "pipe:[9]", fifo, libc::O_RDONLY)]);
        assert_eq!(
            classes(&s),
            [Class::Pipe {
                ino: 9,
                write: false,
                both: false
            }]
        );
    }

    #[test]
    fn a_pipe_to_a_process_that_moves_too_is_a_pipe_not_a_stream() {
        let fifo = libc::S_IFIFO;
        let mut s = survey(vec![info(1, "pipe:[7]", fifo, libc::O_WRONLY)]);
        s.kin = vec![(2, vec![info(0, "pipe:[7]", fifo, libc::O_RDONLY)])];
        assert_eq!(
            classes(&s),
            [Class::Pipe {
                ino: 7,
                write: true,
                both: true
            }]
        );
    }

    #[test]
    fn terminals_anonymous_inodes_and_files_get_their_class() {
        let s = survey(vec![
            info(0, "/dev/pts/3", libc::S_IFCHR, libc::O_RDWR),
            info(3, "/dev/pts/3", libc::S_IFCHR, libc::O_RDWR),
            info(4, "anon_inode:[eventfd]", 0, 0),
            info(5, "anon_inode:inotify", 0, 0),
            info(6, "anon_inode:[io_uring]", 0, 0),
            info(7, "/memfd:buf (deleted)", libc::S_IFREG, libc::O_RDWR),
            info(8, "/etc/hostname", libc::S_IFREG, 0),
            info(9, "/gone (deleted)", libc::S_IFREG, 0),
            info(10, "socket:[12]", libc::S_IFSOCK, libc::O_RDWR),
            info(11, "/dev/sda", libc::S_IFBLK, 0),
        ]);
        assert_eq!(
            classes(&s),
            [
                Class::Forwarded { terminal: true },
                Class::Terminal,
                Class::EventFd,
                Class::Inotify,
                Class::OtherAnon("io_uring"),
                Class::Memfd("buf"),
                Class::Path,
                Class::Path,
                Class::Socket,
                Class::Other,
            ]
        );
    }

    #[test]
    fn a_pipe_end_whose_other_end_nobody_holds_moves_as_a_pipe() {
        use std::os::fd::AsRawFd;
        let me = std::process::id() as i32;
        let class_of = |fd: i32| {
            let s = Survey::read(me, &TcpRules::default()).unwrap();
            let i = s.infos.iter().find(|i| i.fd == fd).unwrap().clone();
            match s.class(&i) {
                Class::Pipe { both, .. } => both,
                other => panic!("fd {fd}: {other:?}"),
            }
        };
        // Both ends here.
        let (rd, wr) = sys::pipe().unwrap();
        assert!(class_of(rd.as_raw_fd()));
        // Its write end closed everywhere: alone, it moves as a pipe.
        drop(wr);
        assert!(class_of(rd.as_raw_fd()));
        // A write end whose read end is closed.
        let (rd, wr) = sys::pipe().unwrap();
        drop(rd);
        assert!(class_of(wr.as_raw_fd()));
        // The write end held by a child: one end elsewhere.
        let (rd, wr) = sys::pipe().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .stdout(wr)
            .spawn()
            .unwrap();
        let held = class_of(rd.as_raw_fd());
        let _ = child.kill();
        let _ = child.wait();
        assert!(!held);
    }
}
