//! A tree of processes as one image: each member's relations and, unless
//! it is a zombie, its image; parents before children.

use serde::{Deserialize, Serialize};

use super::validate::Kinship;
use super::{ImageLimits, ProcessImage, Relation};

/// Most processes in one tree.
pub const MAX_TREE: usize = 64;

/// Where a tree member's index sits in the page addresses of post-copy:
/// a page of member `i` at address `a` is named `a | i << TREE_TAG_SHIFT`
/// in page requests and frames (member 0, the root or a process alone,
/// by its plain address). Above every user address ([`super::USER_END`]).
pub const TREE_TAG_SHIFT: u32 = 56;

/// The name on the wire of member `member`'s page at `addr`.
pub fn tree_page(member: usize, addr: u64) -> u64 {
    addr | (member as u64) << TREE_TAG_SHIFT
}

/// The member and address a page name on the wire stands for.
pub fn tree_page_of(name: u64) -> (usize, u64) {
    (
        (name >> TREE_TAG_SHIFT) as usize,
        name & ((1 << TREE_TAG_SHIFT) - 1),
    )
}

/// A process and its descendants, as one image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TreeImage {
    /// Each member's relations, the root first, every parent before its
    /// children.
    pub relations: Vec<Relation>,
    /// Each member's image, in the same order; `None` for a zombie.
    pub images: Vec<Option<ProcessImage>>,
}

impl TreeImage {
    /// Checks the tree as [`ProcessImage::validate`] checks one process,
    /// and its members against each other: at most [`MAX_TREE`] of them,
    /// distinct pids, every parent a member before its child and not a
    /// zombie, an image for every member but the zombies and only for
    /// them, descriptors inherited only from members before, pages the
    /// parent's only where it has the same mapping, all the members'
    /// pages together within `limits`.
    pub fn validate(&self, limits: &ImageLimits) -> Result<(), String> {
        let n = self.relations.len();
        if n == 0 || n > MAX_TREE || self.images.len() != n {
            return Err(format!(
                "a tree of {n} processes with {} images (1 to {MAX_TREE} accepted)",
                self.images.len()
            ));
        }
        let mut pages = 0u64;
        for (i, (r, image)) in self.relations.iter().zip(&self.images).enumerate() {
            let earlier = &self.relations[..i];
            if r.pid <= 0 || earlier.iter().any(|e| e.pid == r.pid) {
                return Err(format!("pid {} is not valid or not unique", r.pid));
            }
            let parent = match earlier.iter().position(|e| e.pid == r.ppid) {
                Some(p) if self.relations[p].exit.is_some() => {
                    return Err(format!("process {} has a zombie for a parent", r.pid))
                }
                Some(p) => self.images[p].as_ref(),
                None if i > 0 => {
                    return Err(format!("process {}'s parent is not before it", r.pid))
                }
                None => None,
            };
            match (image, r.exit) {
                (None, Some(status)) if (0..=0xffff).contains(&status) => continue,
                (Some(image), None) if image.pid == r.pid => {
                    let pids: Vec<i32> = earlier
                        .iter()
                        .filter(|e| e.exit.is_none())
                        .map(|e| e.pid)
                        .collect();
                    let kin = Kinship {
                        earlier: &pids,
                        parent,
                    };
                    let mine = image
                        .validate_in(limits, &kin)
                        .map_err(|e| format!("process {}: {e}", r.pid))?;
                    pages = pages.saturating_add(mine);
                }
                _ => {
                    return Err(format!(
                        "process {}: an image must come for every process but the zombies",
                        r.pid
                    ))
                }
            }
        }
        if pages > limits.pages {
            return Err(format!(
                "{} MiB of pages in the tree, more than this host's {} MiB of memory",
                pages.saturating_mul(crate::PAGE_SIZE) >> 20,
                limits.pages.saturating_mul(crate::PAGE_SIZE) >> 20
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{FdEntry, FdKind, Fill};
    use super::*;

    fn rel(pid: i32, ppid: i32, exit: Option<i32>) -> Relation {
        Relation {
            pid,
            ppid,
            pgid: pid,
            sid: pid,
            exit,
        }
    }

    fn image(pid: i32) -> ProcessImage {
        let mut i = super::super::validate::tests::image();
        i.pid = pid;
        i
    }

    /// A parent, a child and a zombie; the child's first page its parent's
    /// and its descriptor 0 the parent's descriptor 0.
    fn family() -> TreeImage {
        let mut child = image(11);
        child.mm.vmas[0].pages[0].fill = Fill::Parent;
        child.fds.push(FdEntry {
            fd: 0,
            kind: FdKind::Inherited {
                of_pid: 10,
                of_fd: 0,
                cloexec: false,
            },
        });
        TreeImage {
            relations: vec![
                rel(10, 1, None),
                rel(11, 10, None),
                rel(12, 10, Some(5 << 8)),
            ],
            images: vec![Some(image(10)), Some(child), None],
        }
    }

    #[test]
    fn page_names_carry_the_member() {
        let a = 0x7fff_dead_b000;
        assert_eq!(tree_page(0, a), a);
        assert_eq!(tree_page_of(tree_page(63, a)), (63, a));
        assert!(tree_page(1, 0) > super::super::USER_END);
    }

    #[test]
    fn a_sane_tree_passes_and_each_lie_is_named() {
        let limits = ImageLimits::default();
        assert_eq!(family().validate(&limits), Ok(()));
        let refused = |f: &dyn Fn(&mut TreeImage), want: &str| {
            let mut t = family();
            f(&mut t);
            let e = t.validate(&limits).unwrap_err();
            assert!(e.contains(want), "{e:?} lacks {want:?}");
        };
        refused(&|t| t.relations[2].pid = 11, "not unique");
        refused(
            &|t| {
                t.relations.push(rel(13, 12, None));
                t.images.push(Some(image(13)));
            },
            "zombie for a parent",
        );
        refused(&|t| t.relations[1].ppid = 12, "not before it");
        refused(&|t| t.images[2] = Some(image(12)), "but the zombies");
        refused(&|t| t.images[1] = None, "but the zombies");
        // Taking from a process after it, or from outside the tree.
        refused(
            &|t| {
                let fds = &mut t.images[1].as_mut().unwrap().fds;
                fds[0].kind = FdKind::Inherited {
                    of_pid: 12,
                    of_fd: 0,
                    cloexec: false,
                };
            },
            "not one of its tree",
        );
        // Pages of a mapping its parent lacks.
        refused(
            &|t| {
                t.images[0].as_mut().unwrap().mm.vmas.remove(0);
            },
            "which has no such mapping",
        );
        // Nor of a mapping a fork leaves out (MADV_DONTFORK).
        refused(
            &|t| t.images[0].as_mut().unwrap().mm.vmas[0].advice.push(10),
            "which has no such mapping",
        );
        // Nor pages the parent itself waits for (post-copy): the fork
        // would give the child nothing.
        refused(
            &|t| t.images[0].as_mut().unwrap().mm.vmas[0].pages[0].fill = Fill::Lazy,
            "which has them still to come",
        );
        // The root has no parent to take pages from.
        refused(
            &|t| t.images[0].as_mut().unwrap().mm.vmas[0].pages[0].fill = Fill::Parent,
            "which has no such mapping",
        );
        // Every member's pages count against the host's memory; the
        // parent's pages in the child do not.
        let small = ImageLimits {
            pages: 20,
            ..ImageLimits::default()
        };
        let e = family().validate(&small).unwrap_err();
        assert!(e.contains("pages in the tree"), "{e}");
        let enough = ImageLimits {
            pages: 16 + 12,
            ..ImageLimits::default()
        };
        assert_eq!(family().validate(&enough), Ok(()));
    }
}
