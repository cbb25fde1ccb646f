//! The frozen process's memory map: each mapping described, and its pages
//! sorted into eager, lazy and stored.

use super::*;

pub(super) fn collect_vmas(
    pid: i32,
    maps: &[procfs::MapsEntry],
    eager: &[(u64, u64)],
    opts: &MigrateOptions,
    stored: Option<&PageSet>,
    advice: &std::collections::HashMap<u64, Vec<u32>>,
    held: &std::collections::HashMap<u64, Vec<(u64, u64)>>,
) -> Result<Vec<Vma>, DumpError> {
    let mut budget = match opts.eager {
        EagerSet::Dirty => opts.eager_budget_pages,
        _ => 0,
    };
    let pagemap =
        fs::File::open(format!("/proc/{pid}/pagemap")).map_err(proc_err(pid, "pagemap"))?;
    let mut out = Vec::with_capacity(maps.len());
    let mut buf = Vec::new();
    for m in maps {
        let kind = if kinds::is_vdso(&m.path) {
            VmaKind::Vdso(m.path.clone())
        } else if m.path == "[vsyscall]" {
            VmaKind::Vsyscall
        } else if kinds::is_anon(m) {
            VmaKind::Anon
        } else if kinds::is_shmem(m) {
            let f = map_file(pid, m)?;
            let size = f.metadata().map_err(proc_err(pid, "map_files"))?.len();
            VmaKind::Shmem {
                inode: m.inode,
                memfd: kinds::memfd_name(&m.path).map(String::from),
                offset: m.offset,
                size,
            }
        } else {
            // A file mapped shared and writable is looked at through its
            // mapping: it may be deleted since.
            let shared = crate::capture::shared_files::is_shared_writable(m);
            let md = match shared {
                true => fs::metadata(crate::capture::shared_files::map_files_path(
                    pid,
                    (m.start, m.end),
                )),
                false => fs::metadata(&m.path),
            }
            .map_err(proc_err(pid, "map_files"))?;
            let path = match shared {
                true => m.path.strip_suffix(" (deleted)").unwrap_or(&m.path),
                false => &m.path,
            };
            VmaKind::File {
                path: path.to_string(),
                offset: m.offset,
                ident: kinds::file_ident(&md),
            }
        };
        let mut vma = Vma {
            start: m.start,
            end: m.end,
            prot: m.prot(),
            shared: m.shared(),
            growsdown: m.path == "[stack]",
            advice: advice.get(&m.start).cloned().unwrap_or_default(),
            kind,
            pages: Vec::new(),
        };
        if let VmaKind::Shmem { offset, .. } = vma.kind {
            // Every populated page of the object within the mapping, eager.
            let f = map_file(pid, m)?;
            for (a, b) in sys::data_ranges(&f, offset, offset + (m.end - m.start)) {
                vma.pages.push(PageRun {
                    first: (a - offset) / PAGE_SIZE,
                    count: (b - a).div_ceil(PAGE_SIZE),
                    fill: Fill::Eager,
                });
            }
            out.push(vma);
            continue;
        }
        if let Some(anonymous) = copies_pages(m) {
            let needed = match held.get(&m.start) {
                Some(h) => pages_since(&pagemap, (m.start, m.end), anonymous, h, &mut buf),
                None => procfs::needed_pages(&pagemap, m.start, m.end, anonymous, &mut buf),
            }
            .map_err(proc_err(pid, "pagemap"))?;
            let sorting = Sorting {
                // File-backed private pages cannot be registered with
                // userfaultfd (MISSING mode is anonymous-only): always eager.
                all_eager: !anonymous,
                none_lazy: matches!(opts.mode, Mode::StopCopy | Mode::PreCopy),
                eager,
                stored,
            };
            vma.pages = sorting.runs(m.start, &needed, &mut budget);
        }
        out.push(vma);
    }
    Ok(out)
}

/// How the pages a mapping holds travel: eager (in the freeze), stored
/// (pre-copied and still current) or lazy (after the resume).
pub(super) struct Sorting<'a> {
    /// Every page eager (file-backed private pages).
    pub(super) all_eager: bool,
    /// Every page not stored eager (stop-copy, pre-copy).
    pub(super) none_lazy: bool,
    /// Pages needed while rebuilding (stacks, thread blocks, rseq areas,
    /// the shim's block): (page address, count); they may overlap.
    pub(super) eager: &'a [(u64, u64)],
    /// Pages the destination already holds.
    pub(super) stored: Option<&'a PageSet>,
}

impl Sorting<'_> {
    /// The runs of the mapping at `start` for its `needed` address ranges;
    /// up to `budget` lazy pages become eager (the `dirty` eager set).
    /// Works a stretch of equal fill at a time, not a page at a time: a
    /// few GiB hold a million pages, and this runs while the process is
    /// frozen.
    pub(super) fn runs(&self, start: u64, needed: &[(u64, u64)], budget: &mut u64) -> Vec<PageRun> {
        let mut runs: Vec<PageRun> = Vec::new();
        for &(a, b) in needed {
            let mut addr = a;
            while addr < b {
                let left = (b - addr) / PAGE_SIZE;
                let (fill, n) = self.stretch(addr, left, budget);
                let first = (addr - start) / PAGE_SIZE;
                match runs.last_mut() {
                    Some(r) if r.fill == fill && r.first + r.count == first => r.count += n,
                    _ => runs.push(PageRun {
                        first,
                        count: n,
                        fill,
                    }),
                }
                addr += n * PAGE_SIZE;
            }
        }
        runs
    }

    /// The fill of the page at `addr` and how many pages from it (at
    /// least one, at most `left`) share it.
    pub(super) fn stretch(&self, addr: u64, left: u64, budget: &mut u64) -> (Fill, u64) {
        if self.all_eager {
            return (Fill::Eager, left);
        }
        let pages_to = |end: u64| ((end - addr) / PAGE_SIZE).clamp(1, left);
        let eager_end = self
            .eager
            .iter()
            .filter(|&&(e, n)| e <= addr && addr < e + n * PAGE_SIZE)
            .map(|&(e, n)| e + n * PAGE_SIZE)
            .max();
        if let Some(end) = eager_end {
            return (Fill::Eager, pages_to(end));
        }
        // Up to the next eager stretch, then up to a change of stored.
        let mut n = self
            .eager
            .iter()
            .filter(|&&(e, _)| e > addr)
            .map(|&(e, _)| pages_to(e))
            .min()
            .unwrap_or(left);
        if let Some(s) = self.stored {
            match s.run_at(addr, n) {
                0 => n = s.gap_at(addr, n).max(1),
                k => return (Fill::Stored, k),
            }
        }
        if self.none_lazy {
            return (Fill::Eager, n);
        }
        if *budget > 0 {
            let k = n.min(*budget);
            *budget -= k;
            return (Fill::Eager, k);
        }
        (Fill::Lazy, n)
    }
}

/// The object behind a mapping, through `/proc/<pid>/map_files`.
pub(super) fn map_file(pid: i32, m: &procfs::MapsEntry) -> Result<fs::File, DumpError> {
    fs::File::open(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end))
        .map_err(proc_err(pid, "map_files"))
}

/// The `mm` fields `prctl(PR_SET_MM_MAP)` takes, from `/proc/PID/stat`
/// (`brk` read by an injected syscall).
pub(super) fn mm_fields(stat: &[String], brk: u64) -> MmFields {
    let f = |n| procfs::stat_field(stat, n);
    MmFields {
        start_code: f(26),
        end_code: f(27),
        start_stack: f(28),
        start_data: f(45),
        end_data: f(46),
        start_brk: f(47),
        brk,
        arg_start: f(48),
        arg_end: f(49),
        env_start: f(50),
        env_end: f(51),
    }
}
