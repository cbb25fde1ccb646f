//! Who may act on what. The agent is root and acts for local users: it
//! acts on a process for a caller only where the kernel would let that
//! caller ptrace the process itself (`ptrace_may_access` with the caller's
//! credentials), and it moves only processes whose credentials and
//! capabilities mean the same on every host (those of its own user
//! namespace).

use std::fs;
use std::os::unix::fs::MetadataExt;

use thiserror::Error;

use crate::host::procfs;

/// The local user a request comes from, as its connection's `SO_PEERCRED`
/// tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// Its uid (0: root, who may act on any process).
    pub uid: u32,
    /// Its gid.
    pub gid: u32,
}

impl Caller {
    /// Root, for the agent's own uses.
    pub const ROOT: Caller = Caller { uid: 0, gid: 0 };

    /// Whether the caller is root, to whom the kernel lets any process be
    /// traced.
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}

/// Why a caller may not act on a process.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Denied {
    /// No such process (or it is gone).
    #[error("no such process: {0}")]
    NoProcess(i32),
    /// The kernel would not let the caller trace it.
    #[error("permission denied: you (uid {uid}) may not trace process {pid}: {why}")]
    NotTraceable {
        /// The process.
        pid: i32,
        /// The caller's uid.
        uid: u32,
        /// What the kernel's rule found.
        why: String,
    },
    /// Its ids and capabilities belong to a user namespace of its own.
    #[error(
        "process {pid} is in a user namespace other than this agent's: its uids and \
         capabilities there (it may hold every capability of that namespace) would not mean \
         the same on the destination; it is not migrated"
    )]
    UserNamespace {
        /// The process.
        pid: i32,
    },
}

/// What the attach rule looks at in a process, as this agent sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Real, effective, saved and filesystem uids.
    pub uids: [u32; 4],
    /// Real, effective, saved and filesystem gids.
    pub gids: [u32; 4],
    /// Permitted capabilities.
    pub cap_permitted: u64,
    /// Owner of `/proc/PID`: the effective uid while the process is
    /// dumpable, root once it is not (setuid exec, `PR_SET_DUMPABLE 0`).
    pub proc_owner: u32,
    /// Whether it is in this agent's user namespace.
    pub same_user_ns: bool,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl Credentials {
    /// Reads them for `pid`.
    pub fn of(pid: i32) -> Result<Credentials, Denied> {
        let status = procfs::status(pid).map_err(|_| Denied::NoProcess(pid))?;
        Credentials::from_status(pid, &status)
    }

    /// Reads them for `pid`, whose `/proc/PID/status` was read as `status`.
    pub fn from_status(pid: i32, status: &[(String, String)]) -> Result<Credentials, Denied> {
        let gone = |_| Denied::NoProcess(pid);
        let proc_owner = fs::metadata(format!("/proc/{pid}")).map_err(gone)?.uid();
        let theirs = fs::metadata(format!("/proc/{pid}/ns/user")).map_err(gone)?;
        let ours = fs::metadata("/proc/self/ns/user").map_err(gone)?;
        let four = |key: &str| -> Result<[u32; 4], Denied> {
            let v = procfs::status_nums(status, key);
            match v.as_slice() {
                [a, b, c, d] => Ok([*a as u32, *b as u32, *c as u32, *d as u32]),
                _ => Err(Denied::NoProcess(pid)),
            }
        };
        Ok(Credentials {
            uids: four("Uid")?,
            gids: four("Gid")?,
            cap_permitted: procfs::status_hex(status, "CapPrm"),
            proc_owner,
            same_user_ns: (theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino()),
            groups: procfs::status_nums(status, "Groups")
                .into_iter()
                .map(|g| g as u32)
                .collect(),
        })
    }

    /// Who the process is to the filesystem once rebuilt: its effective
    /// uid and gid (`setresuid` makes them the filesystem ids, as the
    /// destination's `Restorer` (`rebuild::restore`) does) and its groups.
    pub fn fs(&self) -> migrate_proto::image::FsCreds {
        migrate_proto::image::FsCreds {
            uid: self.uids[1],
            gid: self.gids[1],
            groups: self.groups.clone(),
        }
    }
}

/// The kernel's attach rule for `caller` and a process with `creds`, and
/// this agent's own: a process of another user namespace is never moved.
///
/// For a caller other than root: every uid of the process is the caller's
/// uid and every gid its gid, the process is dumpable, and it holds no
/// capability (the caller, not root, is taken to hold none; the kernel
/// would ask for a subset of the caller's).
pub fn check(caller: &Caller, pid: i32, creds: &Credentials) -> Result<(), Denied> {
    if !creds.same_user_ns {
        return Err(Denied::UserNamespace { pid });
    }
    if caller.is_root() {
        return Ok(());
    }
    let deny = |why: String| {
        Err(Denied::NotTraceable {
            pid,
            uid: caller.uid,
            why,
        })
    };
    if creds.uids.iter().any(|&u| u != caller.uid) {
        let [r, e, s, f] = creds.uids;
        return deny(format!(
            "its uids (real {r}, effective {e}, saved {s}, filesystem {f}) are not all yours"
        ));
    }
    if creds.gids.iter().any(|&g| g != caller.gid) {
        let [r, e, s, f] = creds.gids;
        return deny(format!(
            "its gids (real {r}, effective {e}, saved {s}, filesystem {f}) are not all your gid {}",
            caller.gid
        ));
    }
    if creds.proc_owner != caller.uid {
        return deny(
            "it is not dumpable (a setuid or setgid program, or PR_SET_DUMPABLE 0)".into(),
        );
    }
    if creds.cap_permitted != 0 {
        return deny(format!(
            "it holds capabilities (CapPrm {:016x})",
            creds.cap_permitted
        ));
    }
    Ok(())
}

/// Whether `caller` may act on process `pid` (migrate it, check it, see
/// its descriptors), read from `/proc` now.
pub fn authorize(caller: &Caller, pid: i32) -> Result<(), Denied> {
    if pid <= 0 {
        return Err(Denied::NoProcess(pid));
    }
    check(caller, pid, &Credentials::of(pid)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(uid: u32) -> Caller {
        Caller { uid, gid: uid }
    }

    fn plain(uid: u32) -> Credentials {
        Credentials {
            uids: [uid; 4],
            gids: [uid; 4],
            cap_permitted: 0,
            proc_owner: uid,
            same_user_ns: true,
            groups: Vec::new(),
        }
    }

    #[test]
    fn a_user_may_act_on_its_own_plain_process() {
        assert_eq!(check(&user(1000), 7, &plain(1000)), Ok(()));
    }

    #[test]
    fn root_may_act_on_any_process_of_its_namespace() {
        let mut c = plain(1000);
        c.uids[1] = 0;
        c.proc_owner = 0;
        c.cap_permitted = u64::MAX;
        assert_eq!(check(&Caller::ROOT, 7, &c), Ok(()));
    }

    #[test]
    fn any_uid_or_gid_not_the_callers_denies() {
        for i in 0..4 {
            let mut c = plain(1000);
            c.uids[i] = 0;
            assert!(check(&user(1000), 7, &c).is_err(), "uid {i}");
            let mut c = plain(1000);
            c.gids[i] = 5;
            assert!(check(&user(1000), 7, &c).is_err(), "gid {i}");
        }
        assert!(check(&user(1001), 7, &plain(1000)).is_err());
    }

    #[test]
    fn a_setuid_program_is_denied_to_its_user() {
        // Started by 65534, effective and saved uid root, not dumpable.
        let mut c = plain(65534);
        c.uids = [65534, 0, 0, 0];
        c.proc_owner = 0;
        assert!(check(&user(65534), 7, &c).is_err());
        // Dropped back to the user's ids but still not dumpable.
        let mut c = plain(65534);
        c.proc_owner = 0;
        assert!(check(&user(65534), 7, &c).is_err());
    }

    #[test]
    fn capabilities_deny_to_a_user() {
        let mut c = plain(1000);
        c.cap_permitted = 1 << 13;
        assert!(check(&user(1000), 7, &c).is_err());
    }

    #[test]
    fn another_user_namespace_is_refused_to_everyone() {
        let mut c = plain(1000);
        c.same_user_ns = false;
        c.cap_permitted = 0x1ff_feff_ffff;
        assert_eq!(
            check(&user(1000), 7, &c),
            Err(Denied::UserNamespace { pid: 7 })
        );
        assert_eq!(
            check(&Caller::ROOT, 7, &c),
            Err(Denied::UserNamespace { pid: 7 })
        );
    }

    #[test]
    fn this_process_reads_as_acting_on_itself() {
        let me = std::process::id() as i32;
        let c = Credentials::of(me).unwrap();
        assert!(c.same_user_ns);
        let caller = Caller {
            uid: c.uids[0],
            gid: c.gids[0],
        };
        if !caller.is_root() {
            assert_eq!(authorize(&caller, me), Ok(()));
        }
        assert_eq!(authorize(&caller, -3), Err(Denied::NoProcess(-3)));
    }
}
