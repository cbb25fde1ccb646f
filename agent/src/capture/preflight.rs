//! Pre-flight: decide from `/proc` alone, before touching the process,
//! whether it can move, and list every obstacle if not.

use std::fs;
use std::os::unix::fs::MetadataExt;

use migrate_proto::image::TcpPolicy;
use migrate_proto::msg::{Code, FileNeed, Reason};

use crate::fd;
use crate::host::access::{self, Caller};
use crate::host::kinds::{
    access_for, deleted_file, file_ident, forwarded_stdio, is_anon, is_shmem, is_terminal, is_vdso,
    memfd_name, pipe_inode,
};
use crate::host::procfs::{self, FdInfo, MapsEntry};

/// Everything pre-flight learned about a movable process.
#[derive(Debug)]
pub struct Inspection {
    /// The target pid.
    pub pid: i32,
    /// Its real uid.
    pub uid: u32,
    /// Its command name.
    pub comm: String,
    /// Files the destination must have.
    pub needs: Vec<FileNeed>,
    /// Number of mappings.
    pub nvmas: usize,
    /// Resident memory in KiB.
    pub rss_kib: u64,
    /// Who it is to the filesystem: the destination looks its files up as
    /// this user.
    pub who: migrate_proto::image::FsCreds,
}

/// Why a process cannot move: one line per obstacle.
#[derive(Debug, Clone)]
pub struct Refusal(pub Vec<Reason>);

impl Refusal {
    /// A refusal with one reason.
    pub fn one(code: Code, s: impl Into<String>) -> Refusal {
        Refusal(vec![Reason::new(code, s)])
    }
}

/// Checks process `pid` on behalf of `caller`, who must be allowed to act
/// on it ([`access::authorize`]).
///
/// `frozen` is set when the agent itself has the process stopped under
/// ptrace (the second check, after the freeze).
pub fn inspect(
    pid: i32,
    caller: &Caller,
    agent_pid: i32,
    frozen: bool,
    tcp: TcpPolicy,
) -> Result<Inspection, Refusal> {
    if pid <= 0 {
        return Err(Refusal::one(Code::InvalidPid, format!("invalid pid {pid}")));
    }
    if pid == 1 {
        return Err(Refusal::one(
            Code::HostInit,
            "pid 1 is this host's init: it cannot be migrated",
        ));
    }
    if pid == agent_pid {
        return Err(Refusal::one(
            Code::AgentItself,
            format!("pid {pid} is the migrate agent itself"),
        ));
    }
    let status = procfs::status(pid)
        .map_err(|_| Refusal::one(Code::NoSuchProcess, format!("no such process: {pid}")))?;
    let creds = access::Credentials::from_status(pid, &status)
        .and_then(|c| access::check(caller, pid, &c).map(|()| c))
        .map_err(|d| Refusal::one(Code::NotPermitted, d.to_string()))?;
    let comm = procfs::status_get(&status, "Name")
        .unwrap_or("?")
        .to_string();
    if fs::read_link(format!("/proc/{pid}/exe")).is_err() {
        return Err(Refusal::one(
            Code::KernelThread,
            format!("process {pid} ({comm}) is a kernel thread or has exited"),
        ));
    }
    let mut why = Vec::new();
    let state = procfs::status_get(&status, "State").unwrap_or("");
    match state.chars().next() {
        Some('Z') | Some('X') => {
            return Err(Refusal::one(
                Code::Zombie,
                format!("process {pid} ({comm}) is a zombie"),
            ))
        }
        Some('T') if !frozen => why.push(Reason::new(
            Code::Stopped,
            format!("process {pid} ({comm}) is stopped by a signal: continue it first"),
        )),
        _ => {}
    }
    let tracer = procfs::status_nums(&status, "TracerPid")
        .first()
        .copied()
        .unwrap_or(0);
    if tracer != 0 && !frozen {
        why.push(Reason::new(
            Code::Traced,
            format!("process {pid} is already traced by pid {tracer}"),
        ));
    }
    process_state(pid, &status, &mut why);

    let mut needs = Vec::new();
    let maps = procfs::maps(pid)
        .map_err(|_| Refusal::one(Code::NoSuchProcess, format!("no such process: {pid}")))?;
    for m in &maps {
        check_vma(m, &mut needs, &mut why);
    }
    let shmem: Vec<u64> = maps
        .iter()
        .filter(|m| is_shmem(m))
        .map(|m| m.inode)
        .collect();
    if !shmem.is_empty() {
        why.extend(shmem_sharers(pid, &shmem));
    }
    let fds = procfs::fds(pid).map_err(|e| {
        Refusal::one(
            Code::NoSuchProcess,
            format!("cannot read descriptors of {pid}: {e}"),
        )
    })?;
    let mut pipes: Vec<(u64, bool, i32)> = Vec::new();
    let unix = crate::host::sys::unix_sockets().unwrap_or_default();
    // Read once, when the first inet socket is met.
    let inet = std::cell::OnceCell::new();
    for fd in fds {
        match procfs::fd_info(pid, fd) {
            Ok(info) => match pipe_inode(&info) {
                Some(ino) => pipes.push((ino, info.flags & libc::O_ACCMODE as u32 != 0, fd)),
                None if fd::MOVABLE_ANON.contains(&info.target.as_str()) => {}
                None if procfs::socket_inode(&info.target)
                    .and_then(|ino| inet.get_or_init(|| procfs::inet_sockets(pid)).get(&ino))
                    .is_some_and(|s| {
                        s.movable() || tcp != TcpPolicy::Refuse && s.established()
                    }) => {}
                None if procfs::socket_inode(&info.target)
                    .and_then(|ino| unix.iter().find(|u| u.inode == ino))
                    .is_some_and(|u| fd::unix_pair::movable(pid, u)) => {}
                None if info.target == "anon_inode:[eventpoll]" => {
                    fd::epoll::check(pid, &info, &mut why)
                }
                None => check_fd(pid, &info, &mut needs, &mut why),
            },
            Err(_) => continue, // closed meanwhile
        }
    }
    fd::pipe::check(pid, &pipes, &mut why);

    match std::fs::read_link(format!("/proc/{pid}/cwd")) {
        Ok(cwd) => {
            let cwd = cwd.to_string_lossy().into_owned();
            if cwd.ends_with(" (deleted)") {
                why.push(Reason::new(
                    Code::WorkingDirectory,
                    format!("working directory {cwd} was removed"),
                ));
            } else {
                needs.push(FileNeed {
                    path: cwd,
                    ident: None,
                    why: "working directory".into(),
                    ship: None,
                    deleted: false,
                    same_file: None,
                    access: libc::X_OK as u32,
                });
            }
        }
        Err(e) => why.push(Reason::new(
            Code::WorkingDirectory,
            format!("cannot read the working directory of {pid}: {e}"),
        )),
    }
    if !why.is_empty() {
        return Err(Refusal(why));
    }
    let rss_kib = procfs::status_nums(&status, "VmRSS")
        .first()
        .copied()
        .unwrap_or(0);
    Ok(Inspection {
        pid,
        uid: creds.uids[0],
        who: creds.fs(),
        comm,
        needs,
        nvmas: maps.len(),
        rss_kib,
    })
}

/// Process-wide state that would be lost if moved today.
fn process_state(pid: i32, status: &[(String, String)], why: &mut Vec<Reason>) {
    let seccomp = procfs::status_nums(status, "Seccomp")
        .first()
        .copied()
        .unwrap_or(0);
    if seccomp != 0 {
        why.push(Reason::new(
            Code::Seccomp,
            "a seccomp filter is installed: seccomp is not migrated yet",
        ));
    }
    let mut children = Vec::new();
    if let Ok(tids) = procfs::tids(pid) {
        for t in tids {
            let c =
                fs::read_to_string(format!("/proc/{pid}/task/{t}/children")).unwrap_or_default();
            children.extend(c.split_whitespace().map(String::from));
        }
    }
    if !children.is_empty() {
        why.push(Reason::new(
            Code::Children,
            format!(
                "child processes {}: process trees are not migrated yet",
                children.join(", ")
            ),
        ));
    }
}

/// Other processes mapping the shmem objects (inodes) of `pid`: sharing
/// that a migration would silently break.
fn shmem_sharers(pid: i32, inodes: &[u64]) -> Vec<Reason> {
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(other) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if other == pid {
            continue;
        }
        let Ok(maps) = procfs::maps(other) else {
            continue;
        };
        if let Some(m) = maps
            .iter()
            .find(|m| is_shmem(m) && inodes.contains(&m.inode))
        {
            out.push(Reason::new(Code::SharedMemory, format!(
                "mapping {:#x}-{:#x} ({}) is shared with process {other}: shared memory between processes is not migrated",
                m.start, m.end, m.path
            )));
        }
    }
    out
}

fn check_vma(m: &MapsEntry, needs: &mut Vec<FileNeed>, why: &mut Vec<Reason>) {
    let at = format!("{:#x}-{:#x}", m.start, m.end);
    if is_vdso(&m.path) || m.path == "[vsyscall]" || is_shmem(m) {
        return;
    }
    if is_anon(m) {
        if m.shared() {
            why.push(Reason::new(
                Code::SharedMemory,
                format!("mapping {at}: shared anonymous memory is not supported yet"),
            ));
        }
        return;
    }
    if m.path.starts_with("/memfd:") {
        why.push(Reason::new(
            Code::Mapping,
            format!("mapping {at}: memfd {} is not supported yet", m.path),
        ));
        return;
    }
    if m.path.starts_with("/SYSV") {
        why.push(Reason::new(
            Code::SharedMemory,
            format!("mapping {at}: System V shared memory is not supported yet"),
        ));
        return;
    }
    if m.path.ends_with(" (deleted)") {
        why.push(Reason::new(
            Code::MappedFile,
            format!(
                "mapping {at}: {} is not supported (the file is gone from disk)",
                m.path
            ),
        ));
        return;
    }
    if !m.path.starts_with('/') {
        why.push(Reason::new(
            Code::Mapping,
            format!("mapping {at}: {} is not supported", m.path),
        ));
        return;
    }
    if m.shared() && m.perms.as_bytes().get(1) == Some(&b'w') {
        why.push(Reason::new(
            Code::Mapping,
            format!(
                "mapping {at}: shared writable mapping of {} is not supported yet",
                m.path
            ),
        ));
        return;
    }
    match fs::metadata(&m.path) {
        Ok(md) if md.is_file() && md.ino() == m.inode => {
            if !needs.iter().any(|n| n.path == m.path) {
                needs.push(FileNeed {
                    path: m.path.clone(),
                    ident: Some(file_ident(&md)),
                    why: format!("mapped at {:#x}", m.start),
                    ship: None,
                    deleted: false,
                    same_file: None,
                    access: libc::R_OK as u32,
                });
            }
        }
        Ok(md) if md.is_file() => why.push(Reason::new(
            Code::MappedFile,
            format!(
                "mapping {at}: {} was replaced on disk since it was mapped",
                m.path
            ),
        )),
        Ok(_) => why.push(Reason::new(
            Code::MappedFile,
            format!(
                "mapping {at}: {} is not a regular file (device mappings are not supported)",
                m.path
            ),
        )),
        Err(e) => why.push(Reason::new(
            Code::MappedFile,
            format!("mapping {at}: {}: {e}", m.path),
        )),
    }
}

/// What `migrate check` says of each descriptor: its kind and verdict.
pub fn describe_fds(pid: i32, tcp: TcpPolicy) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(fds) = procfs::fds(pid) else {
        return out;
    };
    let infos: Vec<FdInfo> = fds
        .into_iter()
        .filter_map(|fd| procfs::fd_info(pid, fd).ok())
        .collect();
    let unix = crate::host::sys::unix_sockets().unwrap_or_default();
    for info in &infos {
        let t = &info.target;
        let mut why = Vec::new();
        let kind = if forwarded_stdio(info) && is_terminal(info) {
            "terminal, forwarded; a deputy stays here".into()
        } else if forwarded_stdio(info) {
            "forwarded to and from this host".into()
        } else if is_terminal(info) {
            why.push(Reason::new(
                Code::Terminal,
                "terminals are not forwarded yet",
            ));
            "terminal".into()
        } else if let Some(ino) = pipe_inode(info) {
            let w = info.flags & libc::O_ACCMODE as u32 != 0;
            let other = infos.iter().any(|o| {
                pipe_inode(o) == Some(ino) && (o.flags & libc::O_ACCMODE as u32 != 0) != w
            });
            if !other {
                why.push(Reason::new(Code::Pipe, "leads to another process"));
            }
            format!("pipe, {} end", if w { "write" } else { "read" })
        } else if t == "anon_inode:inotify" {
            format!("inotify, {} watches", info.inotify_watches().len())
        } else if t == "anon_inode:[eventpoll]" {
            fd::epoll::check(pid, info, &mut why);
            format!("epoll, {} watches", info.epoll_entries().len())
        } else if let Some(k) = t
            .strip_prefix("anon_inode:[")
            .and_then(|k| k.strip_suffix(']'))
        {
            if !fd::MOVABLE_ANON.contains(&t.as_str()) {
                why.push(Reason::new(Code::Descriptor, "not supported"));
            }
            k.to_string()
        } else if let Some(u) =
            procfs::socket_inode(t).and_then(|ino| unix.iter().find(|u| u.inode == ino))
        {
            if !fd::unix_pair::movable(pid, u) {
                why.push(Reason::new(
                    Code::Socket,
                    "only pairs held at both ends and idle listeners are supported",
                ));
            }
            "unix socket".into()
        } else if let Some(s) =
            procfs::socket_inode(t).and_then(|ino| procfs::inet_socket(pid, ino))
        {
            if s.established() && tcp != TcpPolicy::Refuse {
                format!("TCP connection ({})", tcp.name())
            } else {
                if !s.movable() {
                    why.push(Reason::new(Code::Socket, if s.tcp && s.state == 0x0a {
                        "connections wait in its accept queue".to_string()
                    } else if s.established() {
                        "an established TCP connection moves only with `migrate run --tcp close|reconnect`".to_string()
                    } else {
                        "connected sockets in this state are not supported".to_string()
                    }));
                }
                "socket".into()
            }
        } else if fd::path::movable(info) {
            match info.mode {
                libc::S_IFREG if memfd_name(t).is_some() => "memfd".into(),
                libc::S_IFREG if deleted_file(info).is_some() => "deleted file, shipped".into(),
                libc::S_IFREG => "file".into(),
                libc::S_IFDIR => "directory".into(),
                _ => "device".into(),
            }
        } else {
            why.push(Reason::new(Code::Descriptor, "not supported"));
            if t.starts_with("socket:") {
                "socket".into()
            } else {
                "other".into()
            }
        };
        fd::check_locks(info, &mut why);
        let verdict = if why.is_empty() {
            "moves".to_string()
        } else {
            format!("refused: {}", migrate_proto::refusal::texts(&why, "; "))
        };
        let name = match t
            .strip_prefix("socket:[")
            .and_then(|s| s.strip_suffix(']'))
            .and_then(|s| s.parse::<u64>().ok())
        {
            Some(ino) => procfs::describe_socket(pid, ino)
                .map(|d| format!("{t} {d}"))
                .unwrap_or(t.clone()),
            None => t.clone(),
        };
        out.push(format!("fd {}: {name} ({kind}): {verdict}", info.fd));
    }
    out
}

fn check_fd(pid: i32, info: &FdInfo, needs: &mut Vec<FileNeed>, why: &mut Vec<Reason>) {
    let fd = info.fd;
    fd::check_locks(info, why);
    if forwarded_stdio(info) {
        return;
    }
    if is_terminal(info) {
        why.push(Reason::new(
            Code::Terminal,
            format!(
                "fd {fd}: {} (terminal): not forwarded yet; redirect it to a file or pipe",
                info.target
            ),
        ));
        return;
    }
    if let Some(path) = deleted_file(info) {
        let size = fs::metadata(format!("/proc/{pid}/fd/{fd}"))
            .map(|m| m.len())
            .unwrap_or(0);
        needs.push(FileNeed {
            path: path.to_string(),
            ident: None,
            why: format!("fd {fd}"),
            ship: Some((fd, size)),
            deleted: true,
            same_file: None,
            access: 0,
        });
        return;
    }
    if fd::path::movable(info) {
        if (info.mode == libc::S_IFREG || info.mode == libc::S_IFDIR)
            && memfd_name(&info.target).is_none()
        {
            let regular = info.mode == libc::S_IFREG;
            let md = fs::metadata(format!("/proc/{pid}/fd/{fd}")).ok();
            let size = md.as_ref().map(|m| m.len()).unwrap_or(0);
            let same_file = md
                .as_ref()
                .filter(|_| regular)
                .map(|m| (m.dev(), m.ino(), file_ident(m)));
            needs.push(FileNeed {
                path: info.target.clone(),
                ident: None,
                why: format!("fd {fd}"),
                ship: regular.then_some((fd, size)),
                deleted: false,
                same_file,
                access: access_for(info.flags),
            });
        }
        return;
    }
    let t = &info.target;
    let mut hint = "";
    let what = if let Some(ino) = t
        .strip_prefix("socket:[")
        .and_then(|s| s.strip_suffix(']'))
        .and_then(|s| s.parse::<u64>().ok())
    {
        if procfs::inet_socket(pid, ino).is_some_and(|s| s.established()) {
            hint = " (an established TCP connection moves only with `migrate run --tcp close|reconnect`)";
        }
        match procfs::describe_socket(pid, ino) {
            Some(d) => format!("{t} ({d})"),
            None => t.clone(),
        }
    } else if t.starts_with("pipe:") {
        format!("{t} (pipe)")
    } else if info.mode == libc::S_IFDIR {
        format!("{t} (directory)")
    } else if t.ends_with(" (deleted)") {
        format!("{t} (file deleted from disk)")
    } else {
        t.clone()
    };
    why.push(Reason::new(
        Code::Descriptor,
        format!("fd {fd}: {what} not supported{hint}"),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(perms: &str, inode: u64, path: &str) -> MapsEntry {
        MapsEntry {
            start: 0x10_0000,
            end: 0x10_4000,
            perms: perms.into(),
            offset: 0,
            inode,
            path: path.into(),
        }
    }

    /// The verdict on one mapping: the codes of its reasons, and the files
    /// it needs on the destination.
    fn verdict(m: &MapsEntry) -> (Vec<Code>, Vec<String>) {
        let (mut needs, mut why) = (Vec::new(), Vec::new());
        check_vma(m, &mut needs, &mut why);
        (
            why.iter().map(|r| r.code).collect(),
            needs.into_iter().map(|n| n.path).collect(),
        )
    }

    #[test]
    fn each_kind_of_mapping_gets_its_verdict() {
        let none = (Vec::new(), Vec::new());
        // Private anonymous memory, the vDSO family, shmem that moves.
        assert_eq!(verdict(&entry("rw-p", 0, "")), none);
        assert_eq!(verdict(&entry("rw-p", 0, "[heap]")), none);
        assert_eq!(verdict(&entry("r-xp", 0, "[vdso]")), none);
        assert_eq!(verdict(&entry("rw-s", 7, "/memfd:x (deleted)")), none);
        // What does not move, each with its code.
        assert_eq!(
            verdict(&entry("rw-s", 0, "")).0,
            [Code::SharedMemory],
            "shared anonymous outside shmem"
        );
        assert_eq!(
            verdict(&entry("rw-s", 9, "/SYSV00000000 (deleted)")).0,
            [Code::SharedMemory]
        );
        assert_eq!(
            verdict(&entry("r--p", 9, "/gone (deleted)")).0,
            [Code::MappedFile]
        );
        assert_eq!(verdict(&entry("r--p", 0, "[uprobes]")).0, [Code::Mapping]);
        // A file: needed on the destination if it is the one mapped, else
        // refused; shared and writable, refused.
        let exe = std::env::current_exe().unwrap();
        let path = exe.to_string_lossy().into_owned();
        let ino = fs::metadata(&exe).unwrap().ino();
        assert_eq!(
            verdict(&entry("r-xp", ino, &path)),
            (Vec::new(), vec![path.clone()])
        );
        assert_eq!(
            verdict(&entry("r-xp", ino + 1, &path)).0,
            [Code::MappedFile]
        );
        assert_eq!(verdict(&entry("rw-s", ino, &path)).0, [Code::Mapping]);
    }
}
