//! Pre-flight: decide from `/proc` alone, before touching the process,
//! whether it can move, and list every obstacle if not.

use std::fs;
use std::os::unix::fs::MetadataExt;

use crate::fd::TcpRules;
use migrate_proto::msg::{Code, FileNeed, Reason};

use crate::capture::shared_files;
use crate::capture::tree::{Member, Tree};
use crate::fd;
use crate::host::access::{self, Caller};
use crate::host::kinds::{file_ident, is_anon, is_shmem, is_vdso};
use crate::host::procfs::{self, MapsEntry};

mod fds;
mod tree;

pub use tree::{inspect_tree, TreeInspection};

/// Everything pre-flight learned about a movable process.
#[derive(Debug)]
pub struct Inspection {
    /// Its descriptors as they were checked (the dump of a frozen process
    /// collects them from this same reading).
    pub survey: fd::Survey,
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
    tcp: &TcpRules,
) -> Result<Inspection, Refusal> {
    inspect_in_tree(pid, caller, agent_pid, frozen, tcp, &[])
}

/// Checks process `pid` as [`inspect`] does, as one of a tree that moves
/// together: what it shares with processes `kin` (pipes, socketpairs,
/// shared memory) stays inside. With no kin, a process with children is
/// refused.
pub fn inspect_in_tree(
    pid: i32,
    caller: &Caller,
    agent_pid: i32,
    frozen: bool,
    tcp: &TcpRules,
    kin: &[i32],
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
    process_state(&status, &mut why);
    why.extend(crate::capture::pid_ns::verdict(pid));
    if kin.is_empty() {
        why.extend(children(pid));
    }

    let mut needs = Vec::new();
    let maps = procfs::maps(pid)
        .map_err(|_| Refusal::one(Code::NoSuchProcess, format!("no such process: {pid}")))?;
    // Files mapped shared and writable: needed, or shipped (one need
    // each, under its pseudo descriptor).
    let shared = shared_files::files(pid, &maps);
    for (k, f) in shared.iter().enumerate() {
        needs.push(shared_need(k, f));
    }
    for m in &maps {
        let path = m.path.strip_suffix(" (deleted)").unwrap_or(&m.path);
        if shared_files::is_shared_writable(m) && shared.iter().any(|f| f.path == path) {
            continue;
        }
        check_vma(m, &mut needs, &mut why);
    }
    let shmem: Vec<u64> = maps
        .iter()
        .filter(|m| is_shmem(m))
        .map(|m| m.inode)
        .collect();
    if !shmem.is_empty() {
        why.extend(shmem_sharers(pid, &shmem, kin));
    }
    let survey = fd::Survey::read(pid, tcp)
        .map(|s| s.with_kin(kin))
        .map_err(|e| {
            Refusal::one(
                Code::NoSuchProcess,
                format!("cannot read descriptors of {pid}: {e}"),
            )
        })?;
    for info in &survey.infos {
        let v = fds::verdict(&survey, info);
        why.extend(v.why);
        // A descriptor of a file mapped shared and writable is opened on
        // the file its mappings get: nothing of its own to check or ship.
        let of_mapped = !shared.is_empty() && shared_files::opened_at(pid, info.fd, &shared);
        needs.extend(v.needs.into_iter().filter(|_| !of_mapped));
    }

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
        survey,
    })
}

/// Process-wide state that would be lost if moved today.
fn process_state(status: &[(String, String)], why: &mut Vec<Reason>) {
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
}

/// A process with children, moved alone: refused, naming them.
fn children(pid: i32) -> Option<Reason> {
    let tree = Tree::read(pid)?;
    if tree.members.len() < 2 {
        return None;
    }
    let list: Vec<String> = tree.members[1..]
        .iter()
        .map(|m| format!("{} ({})", m.pid, m.comm))
        .collect();
    Some(Reason::new(
        Code::Children,
        format!(
            "child processes {}: a process with children moves with them, as a tree \
             (`migrate check {pid}` gives each one's verdict)",
            list.join(", ")
        ),
    ))
}

/// Other processes mapping the shmem objects (inodes) of `pid`: sharing
/// that a migration would silently break.
fn shmem_sharers(pid: i32, inodes: &[u64], kin: &[i32]) -> Vec<Reason> {
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(other) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if other == pid || kin.contains(&other) {
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

/// What the destination needs of the k-th file the process maps shared
/// and writable: the same file (device and inode, never a copy: the
/// process writes to it until the freeze), or else its content, shipped.
fn shared_need(k: usize, f: &shared_files::SharedFile) -> FileNeed {
    FileNeed {
        path: f.path.clone(),
        ident: None,
        why: format!("mapped shared and writable at {:#x}", f.mapping.0),
        ship: Some((shared_files::pseudo_fd(k), f.ident.size)),
        deleted: f.deleted,
        same_file: Some((f.dev, f.ino, shared_files::never_identical(&f.ident))),
        access: (libc::R_OK | libc::W_OK) as u32,
    }
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
                "mapping {at}: shared writable mapping of {}, not a regular file, is not supported",
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

/// What `migrate check` says of the tree rooted at `pid` when it has
/// more than the root: what stops the tree as a whole, then each member
/// with its relations and verdict (taken as moving with the others), and
/// its descriptors. Empty for a process without children.
pub fn describe_tree(pid: i32, caller: &Caller, agent_pid: i32, tcp: &TcpRules) -> Vec<String> {
    let Some(tree) = Tree::read(pid).filter(|t| t.members.len() > 1) else {
        return Vec::new();
    };
    let kin = tree.pids();
    let mut out = vec![format!(
        "tree of {} processes (each taken as moving with the others):",
        tree.members.len()
    )];
    for r in tree.obstacles() {
        out.push(format!("  refused: {}", r.text));
    }
    for m in &tree.members {
        let head = member_line(m, pid);
        if m.zombie {
            out.push(format!("  {head}: exited, not reaped yet"));
            continue;
        }
        match inspect_in_tree(m.pid, caller, agent_pid, false, tcp, &kin) {
            Ok(_) => out.push(format!("  {head}: moves")),
            Err(r) => out.push(format!(
                "  {head}: refused: {}",
                migrate_proto::refusal::texts(&r.0, "; ")
            )),
        }
        if let Ok(s) = fd::Survey::read(m.pid, tcp) {
            let s = s.with_kin(&kin);
            out.extend(fds::describe(&s).into_iter().map(|l| format!("    {l}")));
        }
    }
    out
}

/// A member's pid, name and relations.
fn member_line(m: &Member, root: i32) -> String {
    let mut line = format!("pid {} ({})", m.pid, m.comm);
    if m.pid != root {
        line += &format!(", child of {}", m.ppid);
    }
    line += &format!(", group {}, session {}", m.pgid, m.sid);
    line
}

/// What `migrate check` says of each descriptor of `pid`: its kind and
/// verdict.
pub fn describe_fds(pid: i32, tcp: &TcpRules) -> Vec<String> {
    fd::Survey::read(pid, tcp)
        .map(|s| fds::describe(&s))
        .unwrap_or_default()
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
        // refused; shared and writable, refused here (a regular file so
        // mapped is taken before, as `shared_files` says).
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
