//! Freezing and dumping a process with its descendants: every member
//! frozen before any is read, parents first (a frozen parent forks no
//! more), then each one's image taken with the others as its kin.

use std::fs::File;
use std::os::unix::fs::FileExt;

use migrate_proto::image::{FdKind, Fill, PageRun, ProcessImage, Relation, TreeImage};
use migrate_proto::msg::{Code, MigrateOptions};
use migrate_proto::PAGE_SIZE;

use super::{dump_frozen, freeze_threads, Cooperation, DumpError, DumpHow, Frozen, Scouted};
use crate::capture::preflight::Refusal;
use crate::capture::tree::{Tree, MAX_MEMBERS};
use crate::host::access::Caller;
use crate::host::procfs::{await_end, ending};

/// Times the tree is read again for members born while it was frozen.
const SETTLE_ROUNDS: usize = 10;

/// How long a member that was ending when it was to be frozen is waited
/// for to end (its memory freed).
const END_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A tree frozen and dumped.
pub struct FrozenTree {
    /// Each member's relations, the root first, parents before children.
    pub relations: Vec<Relation>,
    /// Each member's frozen threads and image, in the same order; `None`
    /// for a zombie.
    pub members: Vec<Option<Frozen>>,
}

impl FrozenTree {
    /// The tree's image, as a destination receives it.
    pub fn image(&self) -> TreeImage {
        TreeImage {
            relations: self.relations.clone(),
            images: self
                .members
                .iter()
                .map(|m| m.as_ref().map(|f| f.image.clone()))
                .collect(),
        }
    }
}

/// Freezes the process `root` and every descendant and collects their
/// images; `frozen_hook` runs once every member is frozen, before any is
/// read. On error every member is resumed (their `Seized` guards detach
/// on drop).
pub fn freeze_and_dump_tree(
    root: i32,
    caller: &Caller,
    opts: &MigrateOptions,
    coop: &Cooperation,
    frozen_hook: &mut dyn FnMut() -> Result<(), String>,
) -> Result<FrozenTree, DumpError> {
    // Looked up while the members still run, so that the freeze does not
    // wait for it; those born meanwhile are scouted once frozen.
    let mut scouted: Vec<(i32, Scouted)> = Tree::read(root)
        .map(|t| {
            t.members
                .iter()
                .filter(|m| !m.zombie)
                .map(|m| (m.pid, Scouted::take(m.pid)))
                .collect()
        })
        .unwrap_or_default();
    let mut frozen = Vec::new();
    let mut settled = None;
    for _ in 0..SETTLE_ROUNDS {
        let tree = Tree::read(root).ok_or_else(|| {
            DumpError::Refused(Refusal::one(
                Code::NoSuchProcess,
                format!("no such process: {root}"),
            ))
        })?;
        if tree.members.len() > MAX_MEMBERS {
            return Err(DumpError::Refused(Refusal(tree.obstacles())));
        }
        let mut born = false;
        for m in tree.members.iter().filter(|m| !m.zombie) {
            if frozen.iter().any(|(pid, _)| *pid == m.pid) {
                continue;
            }
            match freeze_threads(m.pid) {
                Ok(tasks) => frozen.push((m.pid, tasks)),
                // A child that ended since the tree was read (a short-lived
                // one, as `make -j` starts them): once a zombie, which its
                // frozen parent cannot reap, it comes as one; read again.
                Err(e) if m.pid != root && ending(m.pid) => {
                    tracing::debug!(pid = m.pid, "a member ended as it was being frozen");
                    if !await_end(m.pid, END_WAIT) {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
            born = true;
        }
        if !born {
            settled = Some(tree);
            break;
        }
    }
    let tree = settled.ok_or_else(|| {
        DumpError::Refused(Refusal::one(
            Code::Children,
            format!("the descendants of process {root} keep changing while they are stopped"),
        ))
    })?;
    let why = tree.obstacles();
    if !why.is_empty() {
        return Err(DumpError::Refused(Refusal(why)));
    }
    // Every member stands still: what must happen before anything is
    // read (its addresses leave) happens now.
    frozen_hook().map_err(DumpError::AfterFreeze)?;
    let kin = tree.pids();
    let how = DumpHow {
        caller,
        opts,
        ship: &[],
        coop,
        kin: &kin,
    };
    let mut members = Vec::with_capacity(tree.members.len());
    for m in &tree.members {
        let tasks = frozen
            .iter()
            .position(|(pid, _)| *pid == m.pid)
            .map(|i| frozen.swap_remove(i).1);
        let scout = match scouted.iter().position(|(pid, _)| *pid == m.pid) {
            Some(i) => scouted.swap_remove(i).1,
            None => Scouted::take(m.pid),
        };
        members.push(match tasks {
            Some(tasks) => Some(dump_frozen(m.pid, tasks, &how, None, scout)?),
            None => None,
        });
    }
    gather_pipes(&mut members);
    let relations = tree.relations();
    for i in 1..members.len() {
        let Some(p) = relations[..i]
            .iter()
            .position(|r| r.pid == relations[i].ppid)
        else {
            continue;
        };
        let (before, after) = members.split_at_mut(i);
        if let (Some(parent), Some(child)) = (&mut before[p], &mut after[0]) {
            share_with_parent(&mut child.image, &mut parent.image)?;
        }
    }
    Ok(FrozenTree { relations, members })
}

/// Gives each pipe's bytes to the first member holding one of its ends,
/// which makes it on the destination; the others open it there.
fn gather_pipes(members: &mut [Option<Frozen>]) {
    let mut states: Vec<_> = members
        .iter_mut()
        .flatten()
        .flat_map(|f| std::mem::take(&mut f.image.pipes))
        .collect();
    states.sort_by_key(|p| p.inode);
    states.dedup_by_key(|p| p.inode);
    for f in members.iter_mut().flatten() {
        let held: Vec<u64> = f
            .image
            .fds
            .iter()
            .filter_map(|e| match e.kind {
                FdKind::Pipe { pipe, .. } => Some(pipe),
                _ => None,
            })
            .collect();
        let (mine, rest): (Vec<_>, Vec<_>) =
            states.into_iter().partition(|p| held.contains(&p.inode));
        f.image.pipes = mine;
        states = rest;
    }
}

/// Marks [`Fill::Parent`] the pages of `child`'s private mappings that it
/// still shares with its parent since the fork (the same physical page at
/// the same address in both, read from `/proc/PID/pagemap`), where the
/// parent has the same mapping: on the destination the child is forked
/// from its rebuilt parent and gets them without a copy. The parent's
/// copies of them travel in the freeze (post-copy would leave them to
/// come after the fork, to the parent alone).
fn share_with_parent(child: &mut ProcessImage, parent: &mut ProcessImage) -> Result<(), DumpError> {
    let open = |pid: i32| {
        File::open(format!("/proc/{pid}/pagemap")).map_err(|source| DumpError::Proc {
            pid,
            what: "pagemap",
            source,
        })
    };
    let (mine, theirs) = (open(child.pid)?, open(parent.pid)?);
    for v in child.mm.vmas.iter_mut().filter(|v| !v.shared) {
        if !parent.mm.vmas.iter().any(|p| p.forks_as(v)) {
            continue;
        }
        let mut runs = Vec::with_capacity(v.pages.len());
        for run in &v.pages {
            let at = (v.start / PAGE_SIZE + run.first) * 8;
            let n = run.count as usize;
            let (mut a, mut b) = (vec![0u8; n * 8], vec![0u8; n * 8]);
            let read = |f: &File, buf: &mut [u8], pid: i32| {
                f.read_exact_at(buf, at).map_err(|source| DumpError::Proc {
                    pid,
                    what: "pagemap",
                    source,
                })
            };
            read(&mine, &mut a, child.pid)?;
            read(&theirs, &mut b, parent.pid)?;
            let shared = |k: usize| {
                let word =
                    |x: &[u8]| u64::from_le_bytes(x[k * 8..k * 8 + 8].try_into().expect("8"));
                let (x, y) = (word(&a), word(&b));
                // Present, and the same frame (its number is 0 to a reader
                // without CAP_SYS_ADMIN: then nothing counts as shared).
                let pfn = |w: u64| w & ((1 << 55) - 1);
                x >> 63 == 1 && y >> 63 == 1 && pfn(x) != 0 && pfn(x) == pfn(y)
            };
            for k in 0..n {
                let fill = if shared(k) { Fill::Parent } else { run.fill };
                match runs.last_mut() {
                    Some(PageRun {
                        first,
                        count,
                        fill: f,
                    }) if *f == fill && *first + *count == run.first + k as u64 => *count += 1,
                    _ => runs.push(PageRun {
                        first: run.first + k as u64,
                        count: 1,
                        fill,
                    }),
                }
            }
        }
        v.pages = runs;
        if let Some(theirs) = parent.mm.vmas.iter_mut().find(|p| p.forks_as(v)) {
            for r in v.pages.iter().filter(|r| r.fill == Fill::Parent) {
                make_eager(&mut theirs.pages, r.first, r.count);
            }
        }
    }
    Ok(())
}

/// Makes the lazy pages of `runs` in `[first, first + count)` eager,
/// splitting runs where needed.
fn make_eager(runs: &mut Vec<PageRun>, first: u64, count: u64) {
    let end = first + count;
    if !runs
        .iter()
        .any(|r| r.fill == Fill::Lazy && r.first < end && first < r.first + r.count)
    {
        return;
    }
    let mut out: Vec<PageRun> = Vec::with_capacity(runs.len() + 2);
    let mut push = |run: PageRun| {
        if run.count == 0 {
            return;
        }
        match out.last_mut() {
            Some(last) if last.fill == run.fill && last.first + last.count == run.first => {
                last.count += run.count
            }
            _ => out.push(run),
        }
    };
    for r in runs.iter() {
        let (a, b) = (r.first, r.first + r.count);
        if r.fill != Fill::Lazy || b <= first || end <= a {
            push(*r);
            continue;
        }
        let (lo, hi) = (a.max(first), b.min(end));
        push(PageRun {
            first: a,
            count: lo - a,
            fill: Fill::Lazy,
        });
        push(PageRun {
            first: lo,
            count: hi - lo,
            fill: Fill::Eager,
        });
        push(PageRun {
            first: hi,
            count: b - hi,
            fill: Fill::Lazy,
        });
    }
    *runs = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(first: u64, count: u64, fill: Fill) -> PageRun {
        PageRun { first, count, fill }
    }

    #[test]
    fn pages_a_child_shares_become_eager_in_the_parent() {
        let mut runs = vec![
            run(0, 4, Fill::Eager),
            run(4, 8, Fill::Lazy),
            run(20, 4, Fill::Lazy),
        ];
        make_eager(&mut runs, 6, 16);
        assert_eq!(
            runs,
            [
                run(0, 4, Fill::Eager),
                run(4, 2, Fill::Lazy),
                run(6, 6, Fill::Eager),
                run(20, 2, Fill::Eager),
                run(22, 2, Fill::Lazy),
            ]
        );
        // Nothing lazy there: unchanged.
        let before = runs.clone();
        make_eager(&mut runs, 0, 4);
        assert_eq!(runs, before);
    }
}
