//! Rebuild a process from its image inside a stub, by injected syscalls.
//!
//! The stub is this binary re-executed as `migrate-agent __stub`: it forks
//! once (so the host's init, not the agent, parents and reaps it), starts a
//! new session and sleeps. The agent seizes it and, from outside:
//!
//! 1. maps a scratch page for syscall arguments at an address free in both
//!    layouts;
//! 2. unmaps everything of the stub but the vDSO family and the scratch;
//! 3. moves `[vvar]`, `[vvar_vclock]`, `[vdso]` to the source addresses
//!    (through a free area first, so old and new never overlap);
//! 4. maps every VMA with `MAP_FIXED_NOREPLACE` and writes the eager pages
//!    through `/proc/<pid>/mem` (see [`Restorer::write_pages`]);
//! 5. creates the userfaultfd inside the process, takes it over with
//!    `pidfd_getfd` and registers the lazy ranges;
//! 6. descriptors, cwd, umask, signal dispositions, limits, name,
//!    `PR_SET_MM_MAP`, `set_tid_address`, robust list, rseq;
//! 7. credentials last: never more privilege than the source had;
//! 8. the final `munmap` of the scratch page, at whose exit stop the
//!    thread gets its dumped registers. It stays stopped until commit.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Command, Stdio};

use migrate_inject::{InjectError, Regs, RemoteMem, Seized};
use migrate_proto::image::{FsCreds, ProcessImage, ThreadState, Vma, VmaKind};
use migrate_proto::PAGE_SIZE;

use crate::fd::{FdError, Remote};
use crate::host::children::{self, Claim};
use crate::{host::procfs, host::sys, host::uffd};

/// Errors while rebuilding a process.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Starting the stub failed.
    #[error("cannot start the stub process")]
    Stub(#[source] std::io::Error),
    /// An injected step failed.
    #[error("{step} failed")]
    Step {
        /// What was being done.
        step: String,
        /// Cause.
        #[source]
        source: InjectError,
    },
    /// A local syscall failed.
    #[error("{step} failed")]
    Sys {
        /// What was being done.
        step: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The image cannot be rebuilt on this host.
    #[error("{0}")]
    Incompatible(String),
    /// A failpoint failed the rebuild.
    #[error(transparent)]
    Failpoint(#[from] crate::failpoints::Injected),
    /// Making a descriptor failed.
    #[error(transparent)]
    Fd(#[from] FdError),
}

fn step<T>(what: impl Into<String>, r: Result<T, InjectError>) -> Result<T, RestoreError> {
    r.map_err(|source| RestoreError::Step {
        step: what.into(),
        source,
    })
}

const SCRATCH_LEN: u64 = 4 * PAGE_SIZE;
const PR_SET_MM: u64 = 35;
const PR_SET_MM_MAP: u64 = 14;
const PR_SET_NAME: u64 = 15;
const PR_SET_KEEPCAPS: u64 = 8;
const PR_SET_DUMPABLE: u64 = 4;
const PR_SET_PDEATHSIG: u64 = 1;
const PR_TIMER_CREATE_RESTORE_IDS: u64 = 77;
const PR_SET_NO_NEW_PRIVS: u64 = 38;
const SYS_USERFAULTFD: i64 = 323;
const SYS_RSEQ: i64 = 334;
const SYS_CLONE3: i64 = 435;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// A process being rebuilt: stopped, not yet running.
pub struct Restorer {
    task: Seized,
    /// The process on this thread's CPU while it is built (its threads
    /// inherit that); released before it runs.
    pin: Option<sys::CpuPin>,
    /// Threads other than the leader, once created.
    threads: Vec<Seized>,
    /// Shared-memory VMAs: (start, end, offset in their object).
    shmem_vmas: Vec<(u64, u64, u64)>,
    /// Agent-side ends of the forwarded standard streams: (fd, end,
    /// the process writes to it).
    forwarded: Vec<(i32, OwnedFd, bool)>,
    /// Descriptors whose TCP connection was made again here.
    reconnected: Vec<i32>,
    /// Pid on this host.
    pub pid: i32,
    mem: RemoteMem,
    pidfd: OwnedFd,
    scratch: u64,
    /// Who the process is to the filesystem: every path this restore
    /// opens, creates or removes for it is handled as this user.
    who: FsCreds,
    /// Content of files shipped as unlinked copies, by descriptor.
    shipped: HashMap<i32, std::fs::File>,
    /// The process is this agent's child, waited for by its owner.
    claim: Option<Claim>,
    /// Let run ([`Restorer::resume`]); until then dropping the Restorer
    /// kills the half-built process.
    resumed: bool,
}

impl Drop for Restorer {
    fn drop(&mut self) {
        if self.resumed {
            return;
        }
        // Half-built, or built but never committed: it must never run.
        let _ = sys::pidfd_kill(&self.pidfd, libc::SIGKILL);
        self.task.kill_in_place();
        for t in &mut self.threads {
            t.kill_in_place();
        }
    }
}

/// A stub process waiting to become a restored process: it sleeps until
/// a [`Restorer`] seizes it, and is killed if none does.
pub struct Stub {
    pid: i32,
    pidfd: Option<OwnedFd>,
    /// The stub, then the process it becomes, is waited for by its owner.
    claim: Option<Claim>,
}

impl Stub {
    /// Starts a stub, with pid `want_pid` if that is free here. Starting
    /// one (fork, exec, a second fork) takes milliseconds: a destination
    /// starts it before the source freezes the process.
    pub fn spawn(exe: &Path, want_pid: i32) -> Result<Stub, RestoreError> {
        let (pid, claim) = children::spawning(|| spawn_stub(exe, want_pid))?;
        let pidfd = sys::pidfd_open(pid).map_err(|source| RestoreError::Sys {
            step: "pidfd_open of the stub",
            source,
        })?;
        Ok(Stub {
            pid,
            pidfd: Some(pidfd),
            claim: Some(claim),
        })
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        if let Some(fd) = self.pidfd.take() {
            let _ = sys::pidfd_kill(&fd, libc::SIGKILL);
        }
    }
}

/// Starts a stub process, with pid `want_pid` if that is free here, and
/// returns its pid (it sleeps until seized), claimed: once its launcher
/// has exited it is this agent's child. Called inside
/// [`children::spawning`].
fn spawn_stub(exe: &Path, want_pid: i32) -> Result<(i32, Claim), RestoreError> {
    let mut child = Command::new(exe)
        .arg("__stub")
        .arg(want_pid.to_string())
        .env("GLIBC_TUNABLES", "glibc.pthread.rseq=0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(RestoreError::Stub)?;
    let _launcher = Claim::new(child.id() as i32);
    let mut line = String::new();
    let out = child
        .stdout
        .take()
        .ok_or_else(|| RestoreError::Stub(std::io::Error::other("no stdout")))?;
    BufReader::new(out)
        .read_line(&mut line)
        .map_err(RestoreError::Stub)?;
    let pid = line
        .trim()
        .parse()
        .map_err(|_| RestoreError::Stub(std::io::Error::other(format!("stub said {line:?}"))))?;
    let claim = Claim::new(pid);
    let _ = child.wait();
    Ok((pid, claim))
}

fn overlaps(a0: u64, a1: u64, b0: u64, b1: u64) -> bool {
    a0 < b1 && b0 < a1
}

/// First address of a `len`-byte area free in every given layout.
fn free_area(len: u64, taken: &[(u64, u64)]) -> Option<u64> {
    let mut base: u64 = 0x1000_0000_0000;
    while base < 0x7f00_0000_0000 {
        if !taken.iter().any(|&(s, e)| overlaps(base, base + len, s, e)) {
            return Some(base);
        }
        base += 0x10_0000_0000;
    }
    None
}

impl Restorer {
    /// Seizes a fresh stub and strips it down to the vDSO, then maps every
    /// VMA of `image` (no page content yet).
    pub fn start(image: &ProcessImage, stub_exe: &Path) -> Result<Restorer, RestoreError> {
        Restorer::start_in(image, Stub::spawn(stub_exe, image.pid)?)
    }

    /// As [`Restorer::start`], in a stub started beforehand.
    pub fn start_in(image: &ProcessImage, mut stub: Stub) -> Result<Restorer, RestoreError> {
        let pid = stub.pid;
        let mut task = step("seizing the stub", Seized::seize_exitkill(pid))?;
        let pin = sys::CpuPin::near_me(&[pid]);
        let mem = step("opening the stub's memory", RemoteMem::open(pid))?;
        let stub_maps = procfs::maps(pid).map_err(|source| RestoreError::Sys {
            step: "reading the stub's maps",
            source,
        })?;
        let (insn, hash) = procfs::vdso_range(&stub_maps)
            .and_then(|r| migrate_inject::syscall_site(&mem, r))
            .ok_or_else(|| RestoreError::Incompatible("the stub has no vDSO".into()))?;
        if hash != image.vdso_hash {
            return Err(RestoreError::Incompatible(
                "the vDSO differs between the two hosts (different kernel builds): \
                 the process would crash calling it"
                    .into(),
            ));
        }
        task.set_syscall_insn(insn);

        let mut taken: Vec<(u64, u64)> = stub_maps.iter().map(|m| (m.start, m.end)).collect();
        taken.extend(image.mm.vmas.iter().map(|v| (v.start, v.end)));
        let scratch = free_area(SCRATCH_LEN, &taken)
            .ok_or_else(|| RestoreError::Incompatible("no free address for scratch".into()))?;
        taken.push((scratch, scratch + SCRATCH_LEN));
        step(
            "mapping the scratch page",
            task.syscall(
                libc::SYS_mmap,
                [
                    scratch,
                    SCRATCH_LEN,
                    (libc::PROT_READ | libc::PROT_WRITE) as u64,
                    (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64,
                    u64::MAX,
                    0,
                ],
            ),
        )?;
        // From here the Restorer decides the stub's end (and the kernel,
        // should this agent exit first: it was seized with EXITKILL).
        let pidfd = stub.pidfd.take().ok_or_else(|| {
            RestoreError::Incompatible("the stub was given to a restorer before".into())
        })?;
        let mut r = Restorer {
            threads: Vec::new(),
            forwarded: Vec::new(),
            reconnected: Vec::new(),
            shmem_vmas: image
                .mm
                .vmas
                .iter()
                .filter_map(|v| match v.kind {
                    VmaKind::Shmem { offset, .. } => Some((v.start, v.end, offset)),
                    _ => None,
                })
                .collect(),
            task,
            pin: Some(pin),
            pid,
            mem,
            pidfd,
            scratch,
            // Its effective ids, which `setresuid` makes its filesystem ids
            // (the source's file check used the same: `Credentials::fs`).
            who: FsCreds {
                uid: image.creds.uid[1],
                gid: image.creds.gid[1],
                groups: image.creds.groups.clone(),
            },
            shipped: HashMap::new(),
            claim: stub.claim.take(),
            resumed: false,
        };
        r.act_as_user()?;
        r.strip_stub(&stub_maps)?;
        r.move_vdso(&stub_maps, image, &taken, insn)?;
        r.map_vmas(image)?;
        Ok(r)
    }

    /// The stub takes the process's groups and filesystem ids before it
    /// touches any path: from here the kernel checks its opens, lookups
    /// and creations as the process's own (its capabilities that override
    /// file permissions are dropped with a filesystem uid other than 0).
    fn act_as_user(&mut self) -> Result<(), RestoreError> {
        let mut b = Vec::new();
        for g in &self.who.groups {
            b.extend_from_slice(&g.to_le_bytes());
        }
        let p = self.put_bytes(&b)?;
        let (uid, gid, n) = (self.who.uid, self.who.gid, self.who.groups.len());
        self.sys("setgroups", libc::SYS_setgroups, [n as u64, p, 0, 0, 0, 0])?;
        self.sys(
            "setfsgid",
            libc::SYS_setfsgid,
            [u64::from(gid), 0, 0, 0, 0, 0],
        )?;
        self.sys(
            "setfsuid",
            libc::SYS_setfsuid,
            [u64::from(uid), 0, 0, 0, 0, 0],
        )?;
        // They report the previous ids, never an error: read them back.
        let fsgid = self.sys(
            "setfsgid",
            libc::SYS_setfsgid,
            [u64::from(u32::MAX), 0, 0, 0, 0, 0],
        )?;
        let fsuid = self.sys(
            "setfsuid",
            libc::SYS_setfsuid,
            [u64::from(u32::MAX), 0, 0, 0, 0, 0],
        )?;
        if (fsuid as u32, fsgid as u32) != (uid, gid) {
            return Err(RestoreError::Incompatible(format!(
                "the stub could not take filesystem ids {uid}/{gid} (it has {fsuid}/{fsgid})"
            )));
        }
        Ok(())
    }

    fn strip_stub(&mut self, stub_maps: &[procfs::MapsEntry]) -> Result<(), RestoreError> {
        for m in stub_maps {
            if crate::host::kinds::is_vdso(&m.path) || m.path == "[vsyscall]" {
                continue;
            }
            step(
                format!("unmapping the stub's {:#x}", m.start),
                self.task
                    .syscall(libc::SYS_munmap, [m.start, m.end - m.start, 0, 0, 0, 0]),
            )?;
        }
        Ok(())
    }

    fn move_vdso(
        &mut self,
        stub_maps: &[procfs::MapsEntry],
        image: &ProcessImage,
        taken: &[(u64, u64)],
        insn: u64,
    ) -> Result<(), RestoreError> {
        let ours: Vec<_> = stub_maps
            .iter()
            .filter(|m| crate::host::kinds::is_vdso(&m.path))
            .collect();
        let theirs: Vec<(&str, &Vma)> = image
            .mm
            .vmas
            .iter()
            .filter_map(|v| match &v.kind {
                VmaKind::Vdso(name) => Some((name.as_str(), v)),
                _ => None,
            })
            .collect();
        let same = ours.len() == theirs.len()
            && ours.iter().all(|m| {
                theirs
                    .iter()
                    .any(|(n, v)| *n == m.path && v.end - v.start == m.end - m.start)
            });
        if !same {
            return Err(RestoreError::Incompatible(
                "the vDSO layout differs between the two hosts".into(),
            ));
        }
        let span = ours.iter().map(|m| m.end).max().unwrap_or(0)
            - ours.iter().map(|m| m.start).min().unwrap_or(0);
        let lo = ours.iter().map(|m| m.start).min().unwrap_or(0);
        let tmp = free_area(span, taken)
            .ok_or_else(|| RestoreError::Incompatible("no free address for the vDSO".into()))?;
        let mremap = |task: &mut Seized, from: u64, len: u64, to: u64| {
            step(
                format!("moving the vDSO to {to:#x}"),
                task.syscall(
                    libc::SYS_mremap,
                    [
                        from,
                        len,
                        len,
                        (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64,
                        to,
                        0,
                    ],
                ),
            )
        };
        let vdso_start = ours.iter().find(|m| m.path == "[vdso]").map(|m| m.start);
        for m in &ours {
            mremap(
                &mut self.task,
                m.start,
                m.end - m.start,
                tmp + (m.start - lo),
            )?;
            if Some(m.start) == vdso_start {
                self.task.set_syscall_insn(tmp + (insn - lo));
            }
        }
        for m in &ours {
            let (_, v) = theirs
                .iter()
                .find(|(n, _)| *n == m.path)
                .ok_or_else(|| RestoreError::Incompatible("vDSO mapping vanished".into()))?;
            mremap(
                &mut self.task,
                tmp + (m.start - lo),
                m.end - m.start,
                v.start,
            )?;
            if Some(m.start) == vdso_start {
                self.task.set_syscall_insn(v.start + (insn - m.start));
            }
        }
        Ok(())
    }

    /// Writes a NUL-terminated string to the scratch page; returns its address.
    fn put_str(&self, s: &str) -> Result<u64, RestoreError> {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        if b.len() as u64 > SCRATCH_LEN {
            return Err(RestoreError::Incompatible(format!("path too long: {s}")));
        }
        step("writing scratch", self.mem.write(self.scratch, &b))?;
        Ok(self.scratch)
    }

    fn put_bytes(&self, b: &[u8]) -> Result<u64, RestoreError> {
        step("writing scratch", self.mem.write(self.scratch, b))?;
        Ok(self.scratch)
    }

    fn sys(
        &mut self,
        what: impl Into<String>,
        nr: i64,
        args: [u64; 6],
    ) -> Result<u64, RestoreError> {
        crate::failpoints::hit("dest.rebuild.injecting")?;
        step(what, self.task.syscall(nr, args))
    }

    fn open(&mut self, path: &str, flags: u64) -> Result<u64, RestoreError> {
        let p = self.put_str(path)?;
        self.sys(
            format!("opening {path}"),
            libc::SYS_openat,
            [libc::AT_FDCWD as u64, p, flags, 0, 0, 0],
        )
    }

    fn map_vmas(&mut self, image: &ProcessImage) -> Result<(), RestoreError> {
        let mut files: HashMap<String, u64> = HashMap::new();
        let mut shmem: HashMap<u64, u64> = HashMap::new();
        for v in &image.mm.vmas {
            let (fd, offset, base_flags) = match &v.kind {
                VmaKind::Anon => (u64::MAX, 0, libc::MAP_ANONYMOUS),
                VmaKind::Shmem {
                    inode,
                    memfd,
                    offset,
                    size,
                } => {
                    let alone = image
                        .mm
                        .vmas
                        .iter()
                        .filter(
                            |w| matches!(&w.kind, VmaKind::Shmem { inode: i, .. } if i == inode),
                        )
                        .count()
                        == 1;
                    if memfd.is_none() && alone && *offset == 0 && *size == v.end - v.start {
                        // Plain shared anonymous memory, as it was made.
                        (u64::MAX, 0, libc::MAP_ANONYMOUS)
                    } else {
                        let fd = match shmem.get(inode) {
                            Some(&fd) => fd,
                            None => {
                                let name = memfd.as_deref().unwrap_or("shared-anon");
                                let fd = crate::fd::memfd::make(self, name, *size)?;
                                shmem.insert(*inode, fd);
                                fd
                            }
                        };
                        (fd, *offset, 0)
                    }
                }
                VmaKind::File { path, offset, .. } => {
                    let fd = match files.get(path) {
                        Some(&fd) => fd,
                        None => {
                            let fd = self.open(path, (libc::O_RDONLY | libc::O_CLOEXEC) as u64)?;
                            files.insert(path.clone(), fd);
                            fd
                        }
                    };
                    (fd, *offset, 0)
                }
                VmaKind::Vdso(_) | VmaKind::Vsyscall => continue,
            };
            let mut flags = base_flags
                | libc::MAP_FIXED_NOREPLACE
                | if v.shared {
                    libc::MAP_SHARED
                } else {
                    libc::MAP_PRIVATE
                };
            if v.growsdown {
                flags |= libc::MAP_GROWSDOWN;
            }
            self.sys(
                format!("mapping {:#x}-{:#x}", v.start, v.end),
                libc::SYS_mmap,
                [
                    v.start,
                    v.end - v.start,
                    u64::from(v.prot),
                    flags as u64,
                    fd,
                    offset,
                ],
            )?;
        }
        for (_, fd) in shmem {
            self.sys("closing a memfd", libc::SYS_close, [fd, 0, 0, 0, 0, 0])?;
        }
        for (_, fd) in files {
            self.sys(
                "closing a mapped file",
                libc::SYS_close,
                [fd, 0, 0, 0, 0, 0],
            )?;
        }
        for v in &image.mm.vmas {
            for &a in &v.advice {
                self.sys(
                    format!("madvise({a}) at {:#x}", v.start),
                    libc::SYS_madvise,
                    [v.start, v.end - v.start, u64::from(a), 0, 0, 0],
                )?;
            }
        }
        Ok(())
    }

    /// Writes page content at `addr` (source address space = ours).
    pub fn write_pages(&mut self, addr: u64, data: &[u8]) -> Result<(), RestoreError> {
        let shm = self
            .shmem_vmas
            .iter()
            .find(|(s, e, _)| *s <= addr && addr < *e)
            .copied();
        if let Some((start, end, offset)) = shm {
            // Shared memory may be mapped read-only: write the object.
            use std::os::unix::fs::FileExt;
            let path = format!("/proc/{}/map_files/{start:x}-{end:x}", self.pid);
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|source| RestoreError::Sys {
                    step: "opening shared memory",
                    source,
                })?;
            return f
                .write_all_at(data, offset + (addr - start))
                .map_err(|source| RestoreError::Sys {
                    step: "writing shared memory",
                    source,
                });
        }
        step(
            format!("writing pages at {addr:#x}"),
            self.mem.write(addr, data),
        )
    }

    /// Creates the userfaultfd inside the process, takes it over and
    /// registers `ranges` (start, len) in MISSING mode.
    pub fn userfaultfd(&mut self, ranges: &[(u64, u64)]) -> Result<OwnedFd, RestoreError> {
        let fd = self.sys(
            "userfaultfd",
            SYS_USERFAULTFD,
            [(libc::O_CLOEXEC | libc::O_NONBLOCK) as u64, 0, 0, 0, 0, 0],
        )?;
        let ours =
            sys::pidfd_getfd(&self.pidfd, fd as i32).map_err(|source| RestoreError::Sys {
                step: "pidfd_getfd of the userfaultfd",
                source,
            })?;
        self.sys(
            "closing the process's userfaultfd",
            libc::SYS_close,
            [fd, 0, 0, 0, 0, 0],
        )?;
        let features = uffd::FEATURE_EVENT_FORK
            | uffd::FEATURE_EVENT_REMAP
            | uffd::FEATURE_EVENT_REMOVE
            | uffd::FEATURE_EVENT_UNMAP
            | uffd::FEATURE_THREAD_ID;
        uffd::api(&ours, features).map_err(|source| RestoreError::Sys {
            step: "UFFDIO_API",
            source,
        })?;
        for &(start, len) in ranges {
            uffd::register_missing(&ours, start, len).map_err(|source| RestoreError::Sys {
                step: "UFFDIO_REGISTER",
                source,
            })?;
        }
        Ok(ours)
    }

    /// Everything after memory: descriptors, process attributes, thread
    /// state, credentials; leaves the process stopped with its own registers.
    pub fn finish(&mut self, image: &ProcessImage) -> Result<(), RestoreError> {
        crate::fd::restore_all(self, image)?;
        let cwd = self.put_str(&image.cwd)?;
        self.sys(
            format!("chdir {}", image.cwd),
            libc::SYS_chdir,
            [cwd, 0, 0, 0, 0, 0],
        )?;
        self.sys(
            "umask",
            libc::SYS_umask,
            [u64::from(image.umask), 0, 0, 0, 0, 0],
        )?;
        self.restore_sigactions(image)?;
        self.restore_rlimits(image)?;
        let name = self.put_str(&image.comm)?;
        self.sys(
            "PR_SET_NAME",
            libc::SYS_prctl,
            [PR_SET_NAME, name, 0, 0, 0, 0],
        )?;
        self.restore_mm(image)?;
        let main = image
            .threads
            .first()
            .ok_or_else(|| RestoreError::Incompatible("image has no thread".into()))?;
        // Threads are cloned while the process still has the agent's
        // credentials (clone3 with set_tid needs them), then each drops
        // its own: credentials are per thread in the kernel.
        for t in &image.threads[1..] {
            let th = self.spawn_thread(image.pid, t)?;
            if let Some(pin) = &mut self.pin {
                pin.inherit(th.tid(), self.pid);
            }
            self.threads.push(th);
        }
        let mut threads = std::mem::take(&mut self.threads);
        for (th, t) in threads.iter_mut().zip(&image.threads[1..]) {
            std::mem::swap(&mut self.task, th);
            let r = self.restore_thread(image, t, false);
            std::mem::swap(&mut self.task, th);
            if let Err(e) = r {
                self.threads = threads;
                return Err(e);
            }
        }
        self.threads = threads;
        self.patch_thread_ids(image)?;
        self.restore_timers(image)?;
        self.restore_thread(image, main, true)
    }

    /// Queues again, from inside the thread in `self.task` (so any
    /// `si_code` is accepted), the signals its own queue held at the freeze,
    /// and for the leader (`last`) the process-wide ones. Everything is
    /// blocked meanwhile; the thread's own mask is set afterwards, so they
    /// are delivered, with their siginfo, once it runs.
    fn queue_signals(
        &mut self,
        image: &ProcessImage,
        t: &ThreadState,
        last: bool,
    ) -> Result<(), RestoreError> {
        let mine: Vec<_> = image
            .queued_signals
            .iter()
            .filter(|q| q.tid == t.tid || (last && q.tid == 0))
            .collect();
        if mine.is_empty() {
            return Ok(());
        }
        step("blocking signals", self.task.set_sigmask(!0))?;
        let tid = u64::from(self.task.tid() as u32);
        let pid = u64::from(self.pid as u32);
        for q in mine {
            if q.info.len() != 128 {
                return Err(RestoreError::Incompatible("malformed siginfo".into()));
            }
            let p = self.put_bytes(&q.info)?;
            let signo = u64::from(q.signo() as u32);
            if q.tid == 0 {
                self.sys(
                    format!("requeueing signal {signo}"),
                    libc::SYS_rt_sigqueueinfo,
                    [pid, signo, p, 0, 0, 0],
                )?;
            } else {
                self.sys(
                    format!("requeueing signal {signo} for thread {}", t.tid),
                    libc::SYS_rt_tgsigqueueinfo,
                    [pid, tid, signo, p, 0, 0],
                )?;
            }
        }
        Ok(())
    }

    /// Personality, interval timers and POSIX timers (with their ids).
    fn restore_timers(&mut self, image: &ProcessImage) -> Result<(), RestoreError> {
        if image.personality != 0 {
            self.sys(
                "personality",
                libc::SYS_personality,
                [u64::from(image.personality), 0, 0, 0, 0, 0],
            )?;
        }
        for t in &image.itimers {
            let mut b = Vec::with_capacity(32);
            for w in [
                t.interval_us / 1_000_000,
                t.interval_us % 1_000_000,
                t.value_us / 1_000_000,
                t.value_us % 1_000_000,
            ] {
                b.extend_from_slice(&w.to_le_bytes());
            }
            let p = self.put_bytes(&b)?;
            self.sys(
                format!("setitimer({})", t.which),
                libc::SYS_setitimer,
                [u64::from(t.which), p, 0, 0, 0, 0],
            )?;
        }
        if image.posix_timers.is_empty() {
            return Ok(());
        }
        // timer_create takes the id to use from *timer_id in this mode.
        self.sys(
            "PR_TIMER_CREATE_RESTORE_IDS",
            libc::SYS_prctl,
            [PR_TIMER_CREATE_RESTORE_IDS, 1, 0, 0, 0, 0],
        )?;
        // /proc lists the newest first: create the oldest first.
        for t in image.posix_timers.iter().rev() {
            let target = if t.target_tid == 0 {
                0
            } else if t.target_tid == image.threads[0].tid {
                self.pid
            } else {
                image.threads[1..]
                    .iter()
                    .zip(&self.threads)
                    .find(|(s, _)| s.tid == t.target_tid)
                    .map(|(_, th)| th.tid())
                    .ok_or_else(|| {
                        RestoreError::Incompatible(format!(
                            "timer {} aims at unknown thread {}",
                            t.id, t.target_tid
                        ))
                    })?
            };
            // struct sigevent (64 bytes), then the id slot.
            let mut b = vec![0u8; 64];
            b[0..8].copy_from_slice(&t.sigval.to_le_bytes());
            b[8..12].copy_from_slice(&t.signo.to_le_bytes());
            b[12..16].copy_from_slice(&t.notify.to_le_bytes());
            b[16..20].copy_from_slice(&target.to_le_bytes());
            b.extend_from_slice(&(t.id as u64).to_le_bytes());
            let p = self.put_bytes(&b)?;
            self.sys(
                format!("timer_create (id {})", t.id),
                libc::SYS_timer_create,
                [t.clock as u64, p, p + 64, 0, 0, 0],
            )?;
            let mut got = [0u8; 4];
            step("reading a timer id", self.mem.read(p + 64, &mut got))?;
            if i32::from_le_bytes(got) != t.id {
                return Err(RestoreError::Incompatible(format!(
                    "timer {} came back as {}",
                    t.id,
                    i32::from_le_bytes(got)
                )));
            }
            // A periodic timer whose signal is still pending is re-armed by
            // the kernel only at delivery: the next expiry is an interval away.
            let value_ns = if t.value_ns == 0 {
                t.interval_ns
            } else {
                t.value_ns
            };
            if value_ns != 0 {
                let mut v = Vec::with_capacity(32);
                for w in [
                    t.interval_ns / 1_000_000_000,
                    t.interval_ns % 1_000_000_000,
                    value_ns / 1_000_000_000,
                    value_ns % 1_000_000_000,
                ] {
                    v.extend_from_slice(&w.to_le_bytes());
                }
                let q = self.put_bytes(&v)?;
                self.sys(
                    format!("timer_settime (id {})", t.id),
                    libc::SYS_timer_settime,
                    [t.id as u64, 0, q, 0, 0, 0],
                )?;
            }
        }
        self.sys(
            "PR_TIMER_CREATE_RESTORE_IDS off",
            libc::SYS_prctl,
            [PR_TIMER_CREATE_RESTORE_IDS, 0, 0, 0, 0, 0],
        )?;
        Ok(())
    }

    /// Threads (the leader included) that got new ids here get them
    /// written where their thread library caches them.
    fn patch_thread_ids(&mut self, image: &ProcessImage) -> Result<(), RestoreError> {
        let mut changed = Vec::new();
        if self.pid != image.pid {
            changed.push((&image.threads[0], self.pid));
        }
        for (th, t) in self.threads.iter().zip(&image.threads[1..]) {
            if th.tid() != t.tid {
                changed.push((t, th.tid()));
            }
        }
        if changed.is_empty() {
            return Ok(());
        }
        let Some(off) = image.tid_offset else {
            let ids: Vec<String> = changed.iter().map(|(t, _)| t.tid.to_string()).collect();
            return Err(RestoreError::Incompatible(format!(
                "thread ids {} are in use on this host and the thread library's copy of them was not found",
                ids.join(", ")
            )));
        };
        for (t, new) in changed {
            let fs = Regs::from_words(&t.regs)
                .ok_or_else(|| RestoreError::Incompatible("malformed registers".into()))?
                .0
                .fs_base;
            let mut cur = [0u8; 4];
            step("reading a thread id", self.mem.read(fs + off, &mut cur))?;
            if cur != t.tid.to_le_bytes() {
                return Err(RestoreError::Incompatible(format!(
                    "thread {}: its cached id is not where the source had it",
                    t.tid
                )));
            }
            step(
                format!("mapping thread id {} to {new}", t.tid),
                self.mem.write(fs + off, &new.to_le_bytes()),
            )?;
        }
        Ok(())
    }

    /// Rewrites the state block of the process's shim (at `addr`) for its
    /// life here: each thread's id here against its virtual one, the
    /// host, one more move, the descriptors reconnected. The block went
    /// with the eager pages; one that does not decode is an error and is
    /// left alone.
    pub fn patch_shim(
        &mut self,
        image: &ProcessImage,
        addr: u64,
        host: &str,
    ) -> Result<(), RestoreError> {
        use migrate_proto::shim::{ShimState, SIZE};
        let mut b = vec![0u8; SIZE];
        step("reading the shim's state", self.mem.read(addr, &mut b))?;
        let Some(mut state) = ShimState::decode(&b) else {
            return Err(RestoreError::Incompatible(format!(
                "no shim state block of version {} at {addr:#x}",
                migrate_proto::shim::VERSION
            )));
        };
        let mut ids = vec![(image.threads[0].tid, self.pid)];
        ids.extend(
            image.threads[1..]
                .iter()
                .zip(&self.threads)
                .map(|(t, th)| (t.tid, th.tid())),
        );
        state.moved(&ids, image.ppid, host, &self.reconnected);
        state.encode_into(&mut b);
        step("writing the shim's state", self.mem.write(addr, &b))
    }

    /// Creates the thread `t` (with its own id) by an injected clone3 in
    /// the leader; it starts stopped under ptrace.
    fn spawn_thread(&mut self, tgid: i32, t: &ThreadState) -> Result<Seized, RestoreError> {
        step(
            "tracing clones",
            self.task.set_options(
                libc::PTRACE_O_TRACESYSGOOD | libc::PTRACE_O_EXITKILL | libc::PTRACE_O_TRACECLONE,
            ),
        )?;
        let flags = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM) as u64;
        // struct clone_args (11 words), then the one-entry set_tid array.
        let tid_at = self.scratch + 128;
        let mut new = None;
        // Its own id if free here, else any (patched in afterwards).
        for (set_tid, n) in [(tid_at, 1u64), (0, 0)] {
            let args = [flags, 0, 0, 0, 0, 0, 0, 0, set_tid, n, 0];
            let mut b = Vec::with_capacity(136);
            for w in args {
                b.extend_from_slice(&w.to_le_bytes());
            }
            b.resize(128, 0);
            b.extend_from_slice(&(t.tid as u64).to_le_bytes());
            let p = self.put_bytes(&b)?;
            match self.task.syscall(SYS_CLONE3, [p, 88, 0, 0, 0, 0]) {
                Ok(v) => {
                    new = Some(v as i32);
                    break;
                }
                Err(migrate_inject::InjectError::RemoteSyscall { source, .. })
                    if n == 1 && source.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => {
                    return Err(RestoreError::Step {
                        step: format!("creating thread {}", t.tid),
                        source: e,
                    })
                }
            }
        }
        let new = new.ok_or_else(|| {
            RestoreError::Incompatible(format!("thread {} could not be created", t.tid))
        })?;
        let mut th = step(
            format!("stopping new thread {new}"),
            Seized::adopt(tgid, new),
        )?;
        if let Some(insn) = self.task.syscall_insn() {
            th.set_syscall_insn(insn);
        }
        Ok(th)
    }

    /// Per-thread state of the thread in `self.task`; the leader (`last`)
    /// also unmaps the scratch area as its very last injected call.
    fn restore_thread(
        &mut self,
        image: &ProcessImage,
        t: &ThreadState,
        last: bool,
    ) -> Result<(), RestoreError> {
        self.sys(
            "set_tid_address",
            libc::SYS_set_tid_address,
            [t.clear_child_tid, 0, 0, 0, 0, 0],
        )?;
        // The stub's own alternate stack (Rust's runtime sets one) points into
        // memory that is gone; the source's, or none, replaces it.
        let (sp, flags, size) = match t.altstack {
            Some(a) => (a.sp, u64::from(a.flags), a.size),
            None => (0, libc::SS_DISABLE as u64, 0),
        };
        let mut st = Vec::with_capacity(24);
        for w in [sp, flags, size] {
            st.extend_from_slice(&w.to_le_bytes());
        }
        let p = self.put_bytes(&st)?;
        self.sys("sigaltstack", libc::SYS_sigaltstack, [p, 0, 0, 0, 0, 0])?;
        if t.robust_list.0 != 0 {
            self.sys(
                "set_robust_list",
                libc::SYS_set_robust_list,
                [t.robust_list.0, t.robust_list.1, 0, 0, 0, 0],
            )?;
        }
        if let Some(r) = t.rseq {
            self.sys(
                "rseq registration",
                SYS_RSEQ,
                [r.addr, u64::from(r.len), 0, u64::from(r.sig), 0, 0],
            )?;
        }
        if !last || t.name != image.comm {
            let name = self.put_str(&t.name)?;
            self.sys(
                "PR_SET_NAME",
                libc::SYS_prctl,
                [PR_SET_NAME, name, 0, 0, 0, 0],
            )?;
        }
        self.restore_creds(image)?;
        if last {
            // Per process; after the credentials, which reset dumpable.
            self.sys(
                "PR_SET_DUMPABLE",
                libc::SYS_prctl,
                [PR_SET_DUMPABLE, u64::from(image.dumpable == 1), 0, 0, 0, 0],
            )?;
        }
        if image.no_new_privs {
            self.sys(
                "PR_SET_NO_NEW_PRIVS",
                libc::SYS_prctl,
                [PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0],
            )?;
        }
        if t.pdeathsig != 0 {
            // After the credentials: changing them clears it.
            self.sys(
                "PR_SET_PDEATHSIG",
                libc::SYS_prctl,
                [PR_SET_PDEATHSIG, t.pdeathsig as u64, 0, 0, 0, 0],
            )?;
        }
        self.queue_signals(image, t, last)?;
        let regs = Regs::from_words(&t.regs)
            .ok_or_else(|| RestoreError::Incompatible("malformed registers".into()))?;
        step("restoring FPU state", self.task.set_xstate(&t.xstate))?;
        step(
            "restoring the signal mask",
            self.task.set_sigmask(t.sigmask),
        )?;
        if last {
            step(
                "unmapping the scratch page",
                self.task.syscall_last(
                    libc::SYS_munmap,
                    [self.scratch, SCRATCH_LEN, 0, 0, 0, 0],
                    regs,
                ),
            )?;
        } else {
            self.task.set_final_regs(regs);
        }
        Ok(())
    }

    /// Who the process is to the filesystem.
    pub fn who(&self) -> &FsCreds {
        &self.who
    }

    /// The content of the files shipped as unlinked copies, by descriptor
    /// (received by [`crate::rebuild::shipped::ShippedFiles`]), for the rebuild to
    /// copy into the process's own unlinked files. Files shipped to their
    /// path are already in place.
    pub fn set_shipped(&mut self, held: HashMap<i32, std::fs::File>) {
        self.shipped = held;
    }

    fn restore_sigactions(&mut self, image: &ProcessImage) -> Result<(), RestoreError> {
        let status = procfs::status(self.pid).map_err(|source| RestoreError::Sys {
            step: "reading the stub's status",
            source,
        })?;
        let stub_handled =
            procfs::status_hex(&status, "SigCgt") | procfs::status_hex(&status, "SigIgn");
        for a in &image.sigactions {
            let mut b = Vec::with_capacity(32);
            for w in [a.handler, a.flags, a.restorer, a.mask] {
                b.extend_from_slice(&w.to_le_bytes());
            }
            let p = self.put_bytes(&b)?;
            self.sys(
                format!("rt_sigaction({})", a.signo),
                libc::SYS_rt_sigaction,
                [u64::from(a.signo), p, 0, 8, 0, 0],
            )?;
        }
        // The stub's own dispositions that the source did not have go back to default.
        let p = self.put_bytes(&[0u8; 32])?;
        for signo in 1..=64u32 {
            let bit = 1u64 << (signo - 1);
            if stub_handled & bit != 0 && !image.sigactions.iter().any(|a| a.signo == signo) {
                self.sys(
                    format!("resetting signal {signo}"),
                    libc::SYS_rt_sigaction,
                    [u64::from(signo), p, 0, 8, 0, 0],
                )?;
            }
        }
        Ok(())
    }

    fn restore_rlimits(&mut self, image: &ProcessImage) -> Result<(), RestoreError> {
        for (res, l) in image.rlimits.iter().enumerate() {
            let res = res as u32;
            let cur = sys::get_rlimit(self.pid, res).map_err(|source| RestoreError::Sys {
                step: "reading the stub's limits",
                source,
            })?;
            if cur == (l.cur, l.max) {
                continue;
            }
            let mut b = Vec::with_capacity(16);
            b.extend_from_slice(&l.cur.to_le_bytes());
            b.extend_from_slice(&l.max.to_le_bytes());
            let p = self.put_bytes(&b)?;
            match self
                .task
                .syscall(libc::SYS_prlimit64, [0, u64::from(res), p, 0, 0, 0])
            {
                Ok(_) => {}
                Err(InjectError::RemoteSyscall { source, .. })
                    if source.raw_os_error() == Some(libc::EPERM) =>
                {
                    return Err(RestoreError::Incompatible(format!(
                        "resource limit {res} ({}/{}) is above what this host allows the agent \
                         to set (hard limit {}; raising it needs CAP_SYS_RESOURCE)",
                        l.cur, l.max, cur.1
                    )));
                }
                Err(e) => return step(format!("setting resource limit {res}"), Err(e)),
            }
        }
        Ok(())
    }

    fn restore_mm(&mut self, image: &ProcessImage) -> Result<(), RestoreError> {
        let exe_fd = self.open(&image.exe, (libc::O_RDONLY | libc::O_CLOEXEC) as u64)?;
        let f = &image.mm.fields;
        let auxv_at = self.scratch + 256;
        let mut b = Vec::with_capacity(256);
        for w in [
            f.start_code,
            f.end_code,
            f.start_data,
            f.end_data,
            f.start_brk,
            f.brk,
            f.start_stack,
            f.arg_start,
            f.arg_end,
            f.env_start,
            f.env_end,
            auxv_at,
        ] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.extend_from_slice(&(image.mm.auxv.len() as u32).to_le_bytes());
        b.extend_from_slice(&(exe_fd as u32).to_le_bytes());
        b.resize(256, 0);
        b.extend_from_slice(&image.mm.auxv);
        if b.len() as u64 > SCRATCH_LEN {
            return Err(RestoreError::Incompatible("auxv too large".into()));
        }
        let p = self.put_bytes(&b)?;
        self.sys(
            "PR_SET_MM_MAP",
            libc::SYS_prctl,
            [PR_SET_MM, PR_SET_MM_MAP, p, 104, 0, 0],
        )?;
        self.sys(
            "closing the exe fd",
            libc::SYS_close,
            [exe_fd, 0, 0, 0, 0, 0],
        )?;
        Ok(())
    }

    fn restore_creds(&mut self, image: &ProcessImage) -> Result<(), RestoreError> {
        let c = &image.creds;
        let status = procfs::status(self.pid).map_err(|source| RestoreError::Sys {
            step: "reading the stub's status",
            source,
        })?;
        let stub_groups: Vec<u32> = procfs::status_nums(&status, "Groups")
            .into_iter()
            .map(|g| g as u32)
            .collect();
        let stub_ids = |k| procfs::status_nums(&status, k);
        let stub_caps = [
            procfs::status_hex(&status, "CapInh"),
            procfs::status_hex(&status, "CapPrm"),
            procfs::status_hex(&status, "CapEff"),
        ];
        if stub_groups != c.groups {
            let mut b = Vec::new();
            for g in &c.groups {
                b.extend_from_slice(&g.to_le_bytes());
            }
            let p = self.put_bytes(&b)?;
            self.sys(
                "setgroups",
                libc::SYS_setgroups,
                [c.groups.len() as u64, p, 0, 0, 0, 0],
            )?;
        }
        let gids: Vec<u64> = c.gid.iter().map(|&g| u64::from(g)).collect();
        if stub_ids("Gid")[..3] != gids[..] {
            self.sys(
                "setresgid",
                libc::SYS_setresgid,
                [gids[0], gids[1], gids[2], 0, 0, 0],
            )?;
        }
        let uids: Vec<u64> = c.uid.iter().map(|&u| u64::from(u)).collect();
        let keep_caps = c.caps != [0, 0, 0] && c.uid != [0, 0, 0];
        if stub_ids("Uid")[..3] != uids[..] {
            if keep_caps {
                self.sys(
                    "PR_SET_KEEPCAPS",
                    libc::SYS_prctl,
                    [PR_SET_KEEPCAPS, 1, 0, 0, 0, 0],
                )?;
            }
            self.sys(
                "setresuid",
                libc::SYS_setresuid,
                [uids[0], uids[1], uids[2], 0, 0, 0],
            )?;
            if keep_caps {
                self.sys(
                    "PR_SET_KEEPCAPS",
                    libc::SYS_prctl,
                    [PR_SET_KEEPCAPS, 0, 0, 0, 0, 0],
                )?;
            }
        }
        if stub_caps != c.caps && (keep_caps || c.uid == [0, 0, 0]) {
            let mut b = Vec::new();
            b.extend_from_slice(&LINUX_CAPABILITY_VERSION_3.to_le_bytes());
            b.extend_from_slice(&0u32.to_le_bytes());
            // Two data words: low and high 32 bits of each set.
            for half in [0, 32] {
                for set in [c.caps[2], c.caps[1], c.caps[0]] {
                    b.extend_from_slice(&((set >> half) as u32).to_le_bytes());
                }
            }
            let p = self.put_bytes(&b)?;
            self.sys("capset", libc::SYS_capset, [p, p + 8, 0, 0, 0, 0])?;
        }
        Ok(())
    }

    /// Lets the process run (after commit). Returns its pid and the claim
    /// of whoever waits for it to end.
    pub fn resume(mut self, signals: &[i32]) -> Result<(i32, Option<Claim>), RestoreError> {
        let pid = self.pid;
        drop(self.pin.take());
        for t in &mut self.threads {
            let tid = t.tid();
            step(format!("detaching thread {tid}"), t.detach_in_place())?;
        }
        step("detaching", self.task.detach_in_place())?;
        // Running: from here its owner is whoever waits for it.
        self.resumed = true;
        for &s in signals {
            let _ = sys::kill(pid, s);
        }
        Ok((pid, self.claim.take()))
    }

    /// The agent's ends of the forwarded standard streams.
    pub fn take_forwarded(&mut self) -> Vec<(i32, OwnedFd, bool)> {
        std::mem::take(&mut self.forwarded)
    }

    /// A pidfd of the process.
    pub fn pidfd(&self) -> &OwnedFd {
        &self.pidfd
    }
}

/// What the descriptors' rebuilds ([`crate::fd`]) do inside the process.
impl Remote for Restorer {
    fn sys(&mut self, step: impl Into<String>, nr: i64, args: [u64; 6]) -> Result<u64, FdError> {
        Restorer::sys(self, step, nr, args).map_err(remote)
    }

    fn try_sys(&mut self, nr: i64, args: [u64; 6]) -> Result<Result<u64, std::io::Error>, FdError> {
        match self.task.syscall(nr, args) {
            Ok(v) => Ok(Ok(v)),
            Err(InjectError::RemoteSyscall { source, .. }) => Ok(Err(source)),
            Err(e) => Err(remote(RestoreError::Step {
                step: format!("syscall {nr}"),
                source: e,
            })),
        }
    }

    fn put_bytes(&mut self, b: &[u8]) -> Result<u64, FdError> {
        Restorer::put_bytes(self, b).map_err(remote)
    }

    fn put_str(&mut self, s: &str) -> Result<u64, FdError> {
        Restorer::put_str(self, s).map_err(remote)
    }

    fn read_back(&mut self, b: &mut [u8]) -> Result<(), FdError> {
        step("reading back scratch", self.mem.read(self.scratch, b)).map_err(remote)
    }

    fn take(&self, fd: u64, what: &'static str) -> Result<OwnedFd, FdError> {
        sys::pidfd_getfd(&self.pidfd, fd as i32)
            .map_err(|source| FdError::Sys { step: what, source })
    }

    fn who(&self) -> &FsCreds {
        &self.who
    }

    fn shipped(&mut self, fd: i32) -> Option<std::fs::File> {
        self.shipped.remove(&fd)
    }

    fn forwarded(&mut self, fd: i32, ours: OwnedFd, output: bool) {
        self.forwarded.push((fd, ours, output));
    }

    fn reconnected(&mut self, fd: i32) {
        self.reconnected.push(fd);
    }
}

fn remote(e: RestoreError) -> FdError {
    FdError::Remote(Box::new(e))
}
