//! The pre-flight's verdict on each descriptor, from its class
//! ([`fd::Survey::class`]): what `migrate check` calls it, what stops it
//! from moving, and which files the destination must have for it.

use std::fs;
use std::os::unix::fs::MetadataExt;

use migrate_proto::msg::{Code, FileNeed, Reason};

use crate::fd::{self, Class, Survey};
use crate::host::kinds::{access_for, deleted_file, file_ident};
use crate::host::procfs::{self, FdInfo};

/// What the pre-flight says of one descriptor.
pub struct FdVerdict {
    /// Its kind, as `migrate check` shows it.
    pub kind: String,
    /// Why it cannot move (empty: it moves).
    pub why: Vec<Reason>,
    /// Files the destination must have for it.
    pub needs: Vec<FileNeed>,
}

/// The verdict on descriptor `info` of the survey's process.
pub fn verdict(s: &Survey, info: &FdInfo) -> FdVerdict {
    let (fd, t) = (info.fd, info.target.as_str());
    let (mut why, mut needs) = (Vec::new(), Vec::new());
    let mut refuse = |code, text: String| why.push(Reason::new(code, text));
    match s.inherited_from(info) {
        // Checked (and carried) as that process's.
        Ok(Some((pid, of))) => {
            return FdVerdict {
                kind: format!("{t}, the open file of process {pid}'s fd {of}"),
                why,
                needs,
            }
        }
        Ok(None) => {}
        Err(e) => refuse(
            Code::Descriptor,
            format!("fd {fd}: cannot tell whether another process of its tree shares it: {e}"),
        ),
    }
    let kind = match s.class(info) {
        Class::Forwarded { terminal: true } => "terminal, forwarded; a deputy stays here".into(),
        Class::Forwarded { terminal: false } => "forwarded to and from this host".into(),
        Class::Terminal => {
            refuse(
                Code::Terminal,
                format!(
                    "fd {fd}: {t} (terminal): not forwarded yet; redirect it to a file or pipe"
                ),
            );
            "terminal".into()
        }
        Class::EventFd => "eventfd".into(),
        Class::TimerFd => "timerfd".into(),
        Class::SignalFd => "signalfd".into(),
        Class::Inotify => format!("inotify, {} watches", info.inotify_watches().len()),
        Class::Epoll => {
            fd::epoll::check(s, info)
                .into_iter()
                .for_each(|r| refuse(r.code, r.text));
            format!("epoll, {} watches", info.epoll_entries().len())
        }
        Class::OtherAnon(k) => {
            refuse(Code::Descriptor, format!("fd {fd}: {t} not supported"));
            k.into()
        }
        Class::Memfd(_) => "memfd".into(),
        Class::UnixListener(u) | Class::Unix(u) => {
            if !fd::unix_pair::movable(s, u) {
                refuse(
                    Code::Socket,
                    format!(
                        "fd {fd}: {} not supported: only socketpairs held at both ends, \
                         sockets whose peer is gone and listeners with no connection waiting \
                         move",
                        socket_name(s.pid, t)
                    ),
                );
            }
            if fd::unix_pair::widowed(u) {
                "unix socket, its peer gone".into()
            } else {
                "unix socket".into()
            }
        }
        Class::Tcp(_) => format!("TCP connection ({})", s.tcp.policy.name()),
        Class::TcpRepair(i) => {
            if i.state != 0x01 {
                refuse(
                    Code::TcpConnection,
                    format!(
                        "fd {fd}: {}: only established connections are repaired yet (its peer \
                         has closed it)",
                        socket_name(s.pid, t)
                    ),
                );
            }
            "TCP connection, repaired on the moved address".into()
        }
        Class::Inet(i) => {
            if i.established() {
                refuse(
                    Code::TcpConnection,
                    format!(
                        "fd {fd}: {} not supported: an established TCP connection moves \
                         intact with its local address (`--move-address ADDR`), or is closed or \
                         dialled again by a process started with `migrate run --tcp \
                         close|reconnect`",
                        socket_name(s.pid, t)
                    ),
                );
            } else if !(i.movable() || (i.connected_udp() && s.tcp.repairs(i))) {
                let why = if i.tcp && i.state == 0x0a {
                    "connections wait in its accept queue"
                } else if i.connected_udp() {
                    "a connected UDP socket moves only with its local address \
                     (`--move-address ADDR`)"
                } else {
                    "connected sockets in this state are not supported"
                };
                refuse(
                    Code::Socket,
                    format!("fd {fd}: {}: {why}", socket_name(s.pid, t)),
                );
            }
            "socket".into()
        }
        Class::Unbound => "socket, never bound".into(),
        Class::Socket => {
            refuse(Code::Socket, format!("fd {fd}: {t} not supported"));
            "socket".into()
        }
        Class::Pipe { ino, write, both } => {
            let end = if write { "write" } else { "read" };
            if !both {
                let to = match s.pipe_elsewhere(ino) {
                    Some((other, _)) => format!("process {other}"),
                    None => "another process".into(),
                };
                refuse(
                    Code::Pipe,
                    format!(
                        "fd {fd}: {t} leads to {to} (only its {end} end is here): \
                         not supported yet"
                    ),
                );
            } else if let Some((other, link)) = s.pipe_elsewhere(ino) {
                refuse(
                    Code::Pipe,
                    format!(
                        "fd {fd}: pipe or FIFO {link} is also open in process {other}: \
                         not supported yet"
                    ),
                );
            }
            format!("pipe, {end} end")
        }
        Class::Path => {
            let (kind, need) = path_need(s.pid, info);
            needs.extend(need);
            kind.into()
        }
        Class::Other => {
            let what = match info.mode {
                libc::S_IFDIR => format!("{t} (directory)"),
                _ if t.ends_with(" (deleted)") => format!("{t} (file deleted from disk)"),
                _ => t.to_string(),
            };
            refuse(Code::Descriptor, format!("fd {fd}: {what} not supported"));
            "other".into()
        }
    };
    fd::check_locks(info, &mut why);
    FdVerdict { kind, why, needs }
}

/// What `migrate check` says of each descriptor of `s`'s process: its
/// kind and verdict.
pub fn describe(s: &Survey) -> Vec<String> {
    s.infos
        .iter()
        .map(|info| {
            let v = verdict(s, info);
            let verdict = if v.why.is_empty() {
                "moves".to_string()
            } else {
                // The line names the descriptor already.
                let own = format!("fd {}: ", info.fd);
                let texts: Vec<&str> = v
                    .why
                    .iter()
                    .map(|r| r.text.strip_prefix(&own).unwrap_or(&r.text))
                    .collect();
                format!("refused: {}", texts.join("; "))
            };
            format!(
                "fd {}: {} ({}): {verdict}",
                info.fd,
                socket_name(s.pid, &info.target),
                v.kind
            )
        })
        .collect()
}

/// A socket's link with its addresses and state, if the agent can read
/// them; any other link as it is.
fn socket_name(pid: i32, t: &str) -> String {
    procfs::socket_inode(t)
        .and_then(|ino| crate::host::net_tables::describe_socket(pid, ino))
        .map(|d| format!("{t} ({d})"))
        .unwrap_or_else(|| t.to_string())
}

/// The kind of a descriptor reopened by path, and the file the
/// destination needs for it (with its content, shipped if it is not
/// there or differs, for a regular file).
fn path_need(pid: i32, info: &FdInfo) -> (&'static str, Option<FileNeed>) {
    let fd = info.fd;
    if let Some(path) = deleted_file(info) {
        let size = fs::metadata(format!("/proc/{pid}/fd/{fd}"))
            .map(|m| m.len())
            .unwrap_or(0);
        return (
            "deleted file, shipped",
            Some(FileNeed {
                path: path.to_string(),
                ident: None,
                why: format!("fd {fd}"),
                ship: Some((fd, size)),
                deleted: true,
                same_file: None,
                access: 0,
            }),
        );
    }
    let kind = match info.mode {
        libc::S_IFREG => "file",
        libc::S_IFDIR => "directory",
        _ => return ("device", None),
    };
    let regular = info.mode == libc::S_IFREG;
    let md = fs::metadata(format!("/proc/{pid}/fd/{fd}")).ok();
    let size = md.as_ref().map(|m| m.len()).unwrap_or(0);
    let same_file = md
        .as_ref()
        .filter(|_| regular)
        .map(|m| (m.dev(), m.ino(), file_ident(m)));
    let need = FileNeed {
        path: info.target.clone(),
        ident: None,
        why: format!("fd {fd}"),
        ship: regular.then_some((fd, size)),
        deleted: false,
        same_file,
        access: access_for(info.flags),
    };
    (kind, Some(need))
}
