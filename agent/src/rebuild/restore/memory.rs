//! The rebuilt process's memory: the stub's mappings removed, the vDSO
//! moved where it was, every mapping of the image made again, pages
//! written, userfaultfd registered for the pages still to come, the `mm`
//! fields.

use super::*;

pub(super) fn overlaps(a0: u64, a1: u64, b0: u64, b1: u64) -> bool {
    a0 < b1 && b0 < a1
}

/// First address of a `len`-byte area free in every given layout.
pub(super) fn free_area(len: u64, taken: &[(u64, u64)]) -> Option<u64> {
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
    pub(super) fn strip_stub(
        &mut self,
        stub_maps: &[procfs::MapsEntry],
    ) -> Result<(), RestoreError> {
        for m in stub_maps {
            if crate::host::kinds::is_vdso(&m.path) || m.path == "[vsyscall]" {
                continue;
            }
            self.munmap(m.start, m.end - m.start)?;
        }
        Ok(())
    }

    pub(super) fn move_vdso(
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
        let vdso_start = ours.iter().find(|m| m.path == "[vdso]").map(|m| m.start);
        for m in &ours {
            self.mremap(m.start, m.end - m.start, tmp + (m.start - lo))?;
            if Some(m.start) == vdso_start {
                self.task.set_syscall_insn(tmp + (insn - lo));
            }
        }
        for m in &ours {
            let (_, v) = theirs
                .iter()
                .find(|(n, _)| *n == m.path)
                .ok_or_else(|| RestoreError::Incompatible("vDSO mapping vanished".into()))?;
            self.mremap(tmp + (m.start - lo), m.end - m.start, v.start)?;
            if Some(m.start) == vdso_start {
                self.task.set_syscall_insn(v.start + (insn - m.start));
            }
        }
        Ok(())
    }

    pub(super) fn map_vmas(
        &mut self,
        image: &ProcessImage,
        kin: &super::KinShmem,
    ) -> Result<(), RestoreError> {
        self.map_vmas_but(image, kin, |_| false)
    }

    /// Maps every mapping of `image` but those `there` says exist already.
    pub(super) fn map_vmas_but(
        &mut self,
        image: &ProcessImage,
        kin: &super::KinShmem,
        there: impl Fn(&Vma) -> bool,
    ) -> Result<(), RestoreError> {
        let mut files: HashMap<(String, bool), i32> = HashMap::new();
        let mut shmem: HashMap<u64, i32> = HashMap::new();
        for v in image.mm.vmas.iter().filter(|v| !there(v)) {
            let (fd, offset, base_flags) = match &v.kind {
                VmaKind::Anon => (-1, 0, libc::MAP_ANONYMOUS),
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
                    if let Some(&(pid, start, end)) = kin.get(inode) {
                        // Made by a process of its tree: the same object.
                        let fd = match shmem.get(inode) {
                            Some(&fd) => fd,
                            None => {
                                let path = format!("/proc/{pid}/map_files/{start:x}-{end:x}");
                                let fd = self.open(&path, libc::O_RDWR | libc::O_CLOEXEC)?;
                                shmem.insert(*inode, fd);
                                fd
                            }
                        };
                        (fd, *offset, 0)
                    } else if memfd.is_none() && alone && *offset == 0 && *size == v.end - v.start {
                        // Plain shared anonymous memory, as it was made.
                        (-1, 0, libc::MAP_ANONYMOUS)
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
                    // Mapped shared and writable: opened for writing, or
                    // made again if it travelled.
                    let writes = v.shared && v.prot & libc::PROT_WRITE as u32 != 0;
                    let key = (path.clone(), writes);
                    let fd = match files.get(&key) {
                        Some(&fd) => fd,
                        None => {
                            let shipped = image
                                .shipped
                                .iter()
                                .find(|f| f.mapped.is_some() && f.path == *path);
                            let fd = match shipped {
                                Some(f) => self.make_mapped_file(f)?,
                                None if writes => {
                                    self.open(path, libc::O_RDWR | libc::O_CLOEXEC)?
                                }
                                None => self.open(path, libc::O_RDONLY | libc::O_CLOEXEC)?,
                            };
                            files.insert(key, fd);
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
            self.mmap(v.start, v.end - v.start, v.prot, flags, fd, offset)?;
        }
        for (_, fd) in shmem {
            self.close(fd, "a memfd")?;
        }
        for (_, fd) in files {
            self.close(fd, "a mapped file")?;
        }
        for v in &image.mm.vmas {
            for &a in &v.advice {
                self.madvise(v.start, v.end - v.start, a)?;
            }
        }
        Ok(())
    }

    /// Writes page content at `addr` (source address space = ours), from
    /// this thread.
    pub fn write_pages(&mut self, addr: u64, data: &[u8]) -> Result<(), RestoreError> {
        writers::write_pages(self.pid, &self.mem, &self.shmem_vmas, addr, data)
    }

    /// Writers of page content into the process (source address space =
    /// ours), several threads at once.
    pub fn page_writers(&self) -> Result<PageWriters, RestoreError> {
        let sinks = (0..writers::WRITERS)
            .map(|_| {
                Ok(PageSink {
                    pid: self.pid,
                    mem: step("opening the process's memory", self.mem.try_clone())?,
                    shmem: self.shmem_vmas.clone(),
                })
            })
            .collect::<Result<_, RestoreError>>()?;
        PageWriters::start(sinks, self.unpinned_cpus())
    }

    /// Drops the pages of `[addr, addr + len)` (`MADV_DONTNEED`): those a
    /// process forked from its rebuilt parent got from it and did not
    /// share with it on the source.
    pub(super) fn drop_pages(&mut self, addr: u64, len: u64) -> Result<(), RestoreError> {
        self.madvise(addr, len, libc::MADV_DONTNEED as u32)
    }

    /// Creates the userfaultfd inside the process, takes it over and
    /// registers `ranges` (start, len) in MISSING mode.
    pub fn userfaultfd(&mut self, ranges: &[(u64, u64)]) -> Result<OwnedFd, RestoreError> {
        let fd = self.create_userfaultfd(libc::O_CLOEXEC | libc::O_NONBLOCK)?;
        let ours = sys::pidfd_getfd(&self.pidfd, fd).map_err(|source| RestoreError::Sys {
            step: "pidfd_getfd of the userfaultfd",
            source,
        })?;
        self.close(fd, "the process's userfaultfd")?;
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

    pub(super) fn restore_mm(&mut self, image: &ProcessImage) -> Result<(), RestoreError> {
        let exe_fd = self.open(&image.exe, libc::O_RDONLY | libc::O_CLOEXEC)?;
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
        self.prctl_set_mm_map(&b)?;
        self.close(exe_fd, "the exe")
    }
}
