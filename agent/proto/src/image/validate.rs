//! Checking an image received from a source before anything is built
//! from it.

use super::*;

impl ProcessImage {
    /// Checks the image against `limits` and its own consistency (aligned,
    /// ordered, disjoint mappings inside user space; page runs inside their
    /// mapping, ordered; fds ascending) before anything is allocated from
    /// it. Returns why it is refused.
    pub fn validate(&self, limits: &ImageLimits) -> Result<(), String> {
        self.validate_in(limits, &Kinship::default()).map(|_| ())
    }

    /// As [`ProcessImage::validate`], for a process of a tree: its
    /// descriptors may be inherited from the processes `kin.earlier`, its
    /// private pages may be its parent's (`kin.parent`) where the parent
    /// has the same mapping. Returns the pages it brings (not its
    /// parent's).
    pub(super) fn validate_in(&self, limits: &ImageLimits, kin: &Kinship) -> Result<u64, String> {
        let page = crate::PAGE_SIZE;
        if self.threads.is_empty() || self.threads.len() > limits.threads {
            return Err(format!(
                "{} threads (1 to {} accepted)",
                self.threads.len(),
                limits.threads
            ));
        }
        let vmas = &self.mm.vmas;
        if vmas.len() > limits.vmas {
            return Err(format!("{} mappings (at most {})", vmas.len(), limits.vmas));
        }
        let mut prev_end = 0u64;
        let mut pages = 0u64;
        for v in vmas {
            let at = v.start;
            if v.start >= v.end || v.start % page != 0 || v.end % page != 0 {
                return Err(format!(
                    "mapping {at:#x}-{:#x} is empty or not page-aligned",
                    v.end
                ));
            }
            let vsyscall = matches!(v.kind, VmaKind::Vsyscall);
            if vsyscall && v.start != VSYSCALL {
                return Err(format!("vsyscall mapping at {at:#x}"));
            }
            if !vsyscall && v.end > USER_END {
                return Err(format!(
                    "mapping {at:#x}-{:#x} is outside user space",
                    v.end
                ));
            }
            if v.start < prev_end {
                return Err(format!("mapping {at:#x} overlaps or is out of order"));
            }
            prev_end = v.end;
            let n = v.npages();
            let mut next = 0u64;
            for r in &v.pages {
                let end = r.first.checked_add(r.count);
                if r.count == 0 || r.first < next || end.is_none_or(|e| e > n) {
                    return Err(format!(
                        "page run {}+{} is outside mapping {at:#x} or out of order",
                        r.first, r.count
                    ));
                }
                next = r.first + r.count;
                if r.fill != Fill::Parent {
                    pages = pages.saturating_add(r.count);
                    continue;
                }
                let theirs = kin
                    .parent
                    .filter(|_| !v.shared)
                    .and_then(|p| p.mm.vmas.iter().find(|w| w.forks_as(v)));
                let Some(theirs) = theirs else {
                    return Err(format!(
                        "pages of mapping {at:#x} are said to be its parent's, which has no such mapping"
                    ));
                };
                // The child gets them by the fork: they must be in the
                // parent by then, not still to come.
                let lazy = theirs.pages.iter().any(|p| {
                    p.fill == Fill::Lazy
                        && p.first < r.first + r.count
                        && r.first < p.first + p.count
                });
                if lazy {
                    return Err(format!(
                        "pages of mapping {at:#x} are said to be its parent's, which has them still to come"
                    ));
                }
            }
        }
        if pages > limits.pages {
            return Err(format!(
                "{} MiB of pages, more than this host's {} MiB of memory",
                pages.saturating_mul(page) >> 20,
                limits.pages.saturating_mul(page) >> 20
            ));
        }
        if self.fds.len() > limits.fds {
            return Err(format!(
                "{} descriptors (at most {})",
                self.fds.len(),
                limits.fds
            ));
        }
        if self.fds.windows(2).any(|w| w[0].fd >= w[1].fd) || self.fds.iter().any(|e| e.fd < 0) {
            return Err("descriptors out of order or negative".into());
        }
        for e in &self.fds {
            if let FdKind::Inherited { of_pid, .. } = e.kind {
                if !kin.earlier.contains(&of_pid) {
                    return Err(format!(
                        "descriptor {} is said to be inherited from process {of_pid}, not one \
                         of its tree before it",
                        e.fd
                    ));
                }
            }
        }
        // One file at most per descriptor, and per mapping for files
        // mapped shared and writable.
        let (for_maps, for_fds) = self
            .shipped
            .iter()
            .fold((0, 0), |(m, d), f| match f.mapped {
                Some(_) => (m + 1, d),
                None => (m, d + 1),
            });
        if for_fds > self.fds.len() || for_maps > self.mm.vmas.len() {
            return Err(format!(
                "{} shipped files for {} descriptors and {} mappings",
                self.shipped.len(),
                self.fds.len(),
                self.mm.vmas.len()
            ));
        }
        let shipped = self
            .shipped
            .iter()
            .fold(0u64, |sum, f| sum.saturating_add(f.size));
        if shipped > limits.shipped_bytes {
            return Err(format!(
                "{} MiB of shipped files, more than the {} MiB this host accepts",
                shipped >> 20,
                limits.shipped_bytes >> 20
            ));
        }
        Ok(pages)
    }
}

/// Who a process of a tree may take from: the processes before it (their
/// descriptors) and its parent (its pages).
#[derive(Default)]
pub(super) struct Kinship<'a> {
    pub earlier: &'a [i32],
    pub parent: Option<&'a ProcessImage>,
}

#[cfg(test)]
pub(in crate::image) mod tests {
    use super::*;

    pub(in crate::image) fn image() -> ProcessImage {
        let mut i: ProcessImage = serde_json::from_str(EMPTY).unwrap();
        i.threads.push(serde_json::from_str(THREAD).unwrap());
        i.mm.vmas.push(vma(
            0x10000,
            0x20000,
            vec![(0, 4, Fill::Eager), (4, 12, Fill::Lazy)],
        ));
        i.mm.vmas
            .push(vma(0x7fff_0000_0000, 0x7fff_0001_0000, vec![]));
        i
    }

    fn vma(start: u64, end: u64, runs: Vec<(u64, u64, Fill)>) -> Vma {
        Vma {
            start,
            end,
            prot: 3,
            shared: false,
            growsdown: false,
            advice: Vec::new(),
            kind: VmaKind::Anon,
            pages: runs
                .into_iter()
                .map(|(first, count, fill)| PageRun { first, count, fill })
                .collect(),
        }
    }

    fn shipped(fd: i32, size: u64) -> ShippedFile {
        ShippedFile {
            fd,
            path: "/f".into(),
            deleted: false,
            mode: 0o600,
            uid: 0,
            gid: 0,
            size,
            mapped: None,
        }
    }

    #[test]
    fn a_sane_image_passes_and_each_lie_is_named() {
        assert_eq!(image().validate(&ImageLimits::default()), Ok(()));
        let refused = |f: &dyn Fn(&mut ProcessImage), want: &str| {
            let mut i = image();
            f(&mut i);
            let e = i.validate(&ImageLimits::default()).unwrap_err();
            assert!(e.contains(want), "{e:?} lacks {want:?}");
        };
        refused(&|i| i.threads.clear(), "threads");
        // A descriptor of another process: never for a lone process.
        refused(
            &|i| {
                i.fds.push(FdEntry {
                    fd: 0,
                    kind: FdKind::Inherited {
                        of_pid: 1,
                        of_fd: 3,
                        cloexec: false,
                    },
                })
            },
            "not one of its tree",
        );
        refused(
            &|i| i.mm.vmas[0].pages[0].fill = Fill::Parent,
            "said to be its parent's",
        );
        refused(
            &|i| {
                i.fds.push(FdEntry {
                    fd: 3,
                    kind: FdKind::Dup {
                        of: 0,
                        cloexec: false,
                    },
                });
                i.shipped.push(shipped(3, 65 << 20));
            },
            "65 MiB of shipped files",
        );
        refused(
            &|i| i.shipped.push(shipped(3, 1)),
            "1 shipped files for 0 descriptors",
        );
        refused(&|i| i.mm.vmas[0].end = 0x10001, "page-aligned");
        refused(
            &|i| i.mm.vmas[1].end = USER_END + 0x1000,
            "outside user space",
        );
        refused(&|i| i.mm.vmas.swap(0, 1), "out of order");
        refused(&|i| i.mm.vmas[0].pages[1].count = 13, "outside mapping");
        refused(&|i| i.mm.vmas[0].pages[1].first = 2, "out of order");
        refused(
            &|i| i.mm.vmas[0].pages[1].count = u64::MAX,
            "outside mapping",
        );
        let mut i = image();
        let small = ImageLimits {
            pages: 8,
            ..ImageLimits::default()
        };
        assert!(i.validate(&small).unwrap_err().contains("memory"));
        i.mm.vmas.clear();
        assert_eq!(i.validate(&small), Ok(()));
    }

    const THREAD: &str = r#"{"tid":1,"name":"t","regs":[],"xstate":[],"sigmask":0,"rseq":null,"robust_list":[0,0],"clear_child_tid":0,"altstack":null,"pdeathsig":0}"#;
    const EMPTY: &str = r#"{"pid":1,"comm":"t","exe":"/t","cwd":"/","umask":18,"threads":[],"mm":{"vmas":[],"fields":{"start_code":0,"end_code":0,"start_stack":0,"start_data":0,"end_data":0,"start_brk":0,"brk":0,"arg_start":0,"arg_end":0,"env_start":0,"env_end":0},"auxv":[]},"sigactions":[],"rlimits":[],"creds":{"uid":[0,0,0],"gid":[0,0,0],"groups":[],"caps":[0,0,0]},"fds":[],"vdso_hash":0,"tid_offset":null,"dumpable":1,"no_new_privs":false,"personality":0,"itimers":[],"posix_timers":[],"queued_signals":[],"pipes":[],"memfds":[],"shipped":[],"deputy":false}"#;
}

#[cfg(test)]
mod decode_size_tests {
    use super::*;
    use crate::frame::{decode, FrameError, MAX_CONTROL_LEN, MAX_DECODED_LEN};

    /// Decodes `i` as a destination does; returns its length on the wire.
    fn round_trip(i: &ProcessImage) -> usize {
        let wire = postcard::to_stdvec(i).unwrap();
        assert!(wire.len() as u64 <= MAX_CONTROL_LEN);
        let back: ProcessImage = decode(&wire).unwrap();
        assert_eq!(back.fds.len(), i.fds.len());
        assert_eq!(back.mm.vmas.len(), i.mm.vmas.len());
        assert_eq!(back.threads.len(), i.threads.len());
        wire.len()
    }

    #[test]
    fn the_largest_images_the_limits_accept_decode() {
        let limits = ImageLimits::default();
        let mut i = super::tests::image();
        i.fds = (0..limits.fds as i32)
            .map(|fd| FdEntry {
                fd,
                kind: FdKind::Dup {
                    of: 0,
                    cloexec: false,
                },
            })
            .collect();
        round_trip(&i);
        let v = i.mm.vmas[0].clone();
        i.mm.vmas = (0..limits.vmas as u64)
            .map(|k| {
                let mut v = v.clone();
                v.start = 0x10000 + k * 0x100000;
                v.end = v.start + 0x10000;
                v.pages = (0..8)
                    .map(|r| PageRun {
                        first: r * 2,
                        count: 1,
                        fill: Fill::Lazy,
                    })
                    .collect();
                v
            })
            .collect();
        round_trip(&i);
        let t = i.threads[0].clone();
        i.threads = (0..16_000)
            .map(|tid| {
                let mut t = t.clone();
                t.tid = tid;
                t.regs = vec![0; 27];
                t.xstate = vec![0; 2696];
                t
            })
            .collect();
        assert!(round_trip(&i) > 40 << 20);
    }

    #[test]
    fn a_frame_of_empty_entries_is_refused_within_the_budget() {
        // 60 M empty strings: 1.4 GiB once decoded.
        let bomb: Vec<String> = vec![String::new(); 60 << 20];
        let wire = postcard::to_stdvec(&bomb).unwrap();
        assert!(wire.len() as u64 <= MAX_CONTROL_LEN);
        match decode::<Vec<String>>(&wire) {
            Err(FrameError::TooLarge { limit }) => assert_eq!(limit, MAX_DECODED_LEN),
            other => panic!("decoded: {:?}", other.map(|v| v.len())),
        }
    }
}
