//! Which pages of a restored address space are still to come from the
//! source, and where they are now.
//!
//! Pages are named by their source address on the wire; the process may
//! move them (`mremap`), drop them (`madvise`, `munmap`) or fork while they
//! are in flight, so each address space keeps regions mapping its current
//! addresses to source addresses with a pending flag per page. Pure logic:
//! the fault handler applies userfaultfd events to it.

use migrate_proto::PAGE_SIZE;

/// A run of pages at `dst` (current address) that came from `src`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Region {
    dst: u64,
    src: u64,
    pending: Vec<bool>,
}

impl Region {
    fn end(&self) -> u64 {
        self.dst + self.pending.len() as u64 * PAGE_SIZE
    }

    /// Splits off the part at and above `at` (a page address inside).
    fn split_off(&mut self, at: u64) -> Region {
        let i = ((at - self.dst) / PAGE_SIZE) as usize;
        Region {
            dst: at,
            src: self.src + i as u64 * PAGE_SIZE,
            pending: self.pending.split_off(i),
        }
    }
}

/// The pending pages of one address space.
#[derive(Debug, Clone, Default)]
pub struct LazyMap {
    regions: Vec<Region>,
    left: u64,
}

impl LazyMap {
    /// An empty map.
    pub fn new() -> LazyMap {
        LazyMap::default()
    }

    /// Adds `count` pending pages at `addr` (source and current address
    /// are the same at restore time).
    pub fn add(&mut self, addr: u64, count: u64) {
        self.add_from(addr, addr, count)
    }

    /// Adds `count` pending pages at `addr`, named `src` on the wire (a
    /// tree member's pages, [`migrate_proto::image::tree_page`]).
    pub fn add_from(&mut self, addr: u64, src: u64, count: u64) {
        if count == 0 {
            return;
        }
        let at = self.regions.partition_point(|r| r.dst < addr);
        self.regions.insert(
            at,
            Region {
                dst: addr,
                src,
                pending: vec![true; count as usize],
            },
        );
        self.left += count;
    }

    /// Pages still pending.
    pub fn left(&self) -> u64 {
        self.left
    }

    /// The source addresses of the pending pages.
    pub fn pending_sources(&self) -> impl Iterator<Item = u64> + '_ {
        self.regions.iter().flat_map(|r| {
            r.pending
                .iter()
                .zip(0..)
                .filter(|(p, _)| **p)
                .map(move |(_, i)| r.src + i * PAGE_SIZE)
        })
    }

    /// The first pending page: (current address, source address).
    pub fn first_pending(&self) -> Option<(u64, u64)> {
        self.regions.iter().find_map(|r| {
            let i = r.pending.iter().position(|p| *p)? as u64;
            Some((r.dst + i * PAGE_SIZE, r.src + i * PAGE_SIZE))
        })
    }

    /// If the page at current address `dst` is pending, its source address.
    pub fn source_of(&self, dst: u64) -> Option<u64> {
        let dst = dst & !(PAGE_SIZE - 1);
        let r = self
            .regions
            .iter()
            .find(|r| r.dst <= dst && dst < r.end())?;
        let i = ((dst - r.dst) / PAGE_SIZE) as usize;
        r.pending[i].then_some(r.src + i as u64 * PAGE_SIZE)
    }

    /// Up to `max` consecutive pending pages starting at current address
    /// `dst` (which must be pending), within one region: (source address,
    /// count).
    pub fn window(&self, dst: u64, max: u32) -> Option<(u64, u32)> {
        let dst = dst & !(PAGE_SIZE - 1);
        let r = self
            .regions
            .iter()
            .find(|r| r.dst <= dst && dst < r.end())?;
        let i = ((dst - r.dst) / PAGE_SIZE) as usize;
        if !r.pending[i] {
            return None;
        }
        let n = r.pending[i..]
            .iter()
            .take(max.max(1) as usize)
            .take_while(|p| **p)
            .count();
        Some((r.src + i as u64 * PAGE_SIZE, n as u32))
    }

    /// Marks the pages with source addresses `[src, src + n pages)` as
    /// arrived and returns the runs of current addresses to install them
    /// at: (current address, index of the first page in the batch, count).
    pub fn take_arrived(&mut self, src: u64, n: u64) -> Vec<(u64, u64, u64)> {
        let end = src + n * PAGE_SIZE;
        let mut out: Vec<(u64, u64, u64)> = Vec::new();
        for r in &mut self.regions {
            let r_src_end = r.src + r.pending.len() as u64 * PAGE_SIZE;
            if r.src >= end || src >= r_src_end {
                continue;
            }
            let lo = src.max(r.src);
            let hi = end.min(r_src_end);
            let mut a = lo;
            while a < hi {
                let i = ((a - r.src) / PAGE_SIZE) as usize;
                if r.pending[i] {
                    r.pending[i] = false;
                    self.left -= 1;
                    let dst = r.dst + i as u64 * PAGE_SIZE;
                    let k = (a - src) / PAGE_SIZE;
                    match out.last_mut() {
                        Some(last)
                            if last.0 + last.2 * PAGE_SIZE == dst && last.1 + last.2 == k =>
                        {
                            last.2 += 1
                        }
                        _ => out.push((dst, k, 1)),
                    }
                }
                a += PAGE_SIZE;
            }
        }
        out
    }

    /// Puts pages back to pending (an install failed because the range
    /// changed; the caller re-applies events and retries).
    pub fn unarrive(&mut self, dst: u64, count: u64) {
        for k in 0..count {
            let a = dst + k * PAGE_SIZE;
            if let Some(r) = self.regions.iter_mut().find(|r| r.dst <= a && a < r.end()) {
                let i = ((a - r.dst) / PAGE_SIZE) as usize;
                if !r.pending[i] {
                    r.pending[i] = true;
                    self.left += 1;
                }
            }
        }
    }

    /// `[start, end)` now reads as zeros or is gone (`MADV_DONTNEED`,
    /// `munmap`): nothing pending there any more. Returns the pages dropped.
    pub fn discard(&mut self, start: u64, end: u64) -> u64 {
        let mut dropped = 0;
        for r in &mut self.regions {
            if r.dst >= end || start >= r.end() {
                continue;
            }
            let lo = ((start.max(r.dst) - r.dst) / PAGE_SIZE) as usize;
            let hi = ((end.min(r.end()) - r.dst).div_ceil(PAGE_SIZE)) as usize;
            for p in &mut r.pending[lo..hi] {
                if *p {
                    *p = false;
                    dropped += 1;
                }
            }
        }
        self.left -= dropped;
        self.regions.retain(|r| r.pending.iter().any(|p| *p));
        dropped
    }

    /// `mremap` moved `[from, from + len)` to `to`.
    pub fn remap(&mut self, from: u64, to: u64, len: u64) {
        let end = from + len;
        let mut moved = Vec::new();
        let mut kept = Vec::new();
        for mut r in std::mem::take(&mut self.regions) {
            if r.dst >= end || from >= r.end() {
                kept.push(r);
                continue;
            }
            if r.dst < from {
                let rest = r.split_off(from);
                kept.push(r);
                r = rest;
            }
            if r.end() > end {
                let rest = r.split_off(end);
                kept.push(rest);
            }
            r.dst = r.dst - from + to;
            moved.push(r);
        }
        // The destination range was unmapped by the kernel first.
        let mut tmp = LazyMap {
            regions: kept,
            left: self.left,
        };
        tmp.discard(to, to + len);
        self.regions = tmp.regions;
        self.left = tmp.left;
        self.regions.extend(moved);
        self.regions.sort_by_key(|r| r.dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = PAGE_SIZE;

    #[test]
    fn pending_sources_follow_arrivals_and_moves() {
        let mut m = LazyMap::new();
        m.add(0x10000, 4);
        m.take_arrived(0x10000 + P, 2);
        let got: Vec<u64> = m.pending_sources().collect();
        assert_eq!(got, vec![0x10000, 0x10000 + 3 * P]);
        // Moved elsewhere, a page keeps its source address.
        m.remap(0x10000, 0x80000, 4 * P);
        let got: Vec<u64> = m.pending_sources().collect();
        assert_eq!(got, vec![0x10000, 0x10000 + 3 * P]);
    }

    #[test]
    fn arrival_marks_and_reports_runs() {
        let mut m = LazyMap::new();
        m.add(0x10000, 8);
        assert_eq!(m.left(), 8);
        assert_eq!(m.take_arrived(0x10000 + P, 3), vec![(0x10000 + P, 0, 3)]);
        assert_eq!(m.left(), 5);
        assert_eq!(m.source_of(0x10000 + 2 * P), None);
        assert_eq!(m.source_of(0x10000), Some(0x10000));
        // Arriving again installs nothing.
        assert!(m.take_arrived(0x10000 + P, 3).is_empty());
        assert_eq!(m.window(0x10000, 16), Some((0x10000, 1)));
        assert_eq!(m.window(0x10000 + 4 * P, 16), Some((0x10000 + 4 * P, 4)));
        assert_eq!(m.window(0x10000 + 4 * P, 2), Some((0x10000 + 4 * P, 2)));
    }

    #[test]
    fn discard_drops_pending() {
        let mut m = LazyMap::new();
        m.add(0x10000, 8);
        assert_eq!(m.discard(0x10000 + 2 * P, 0x10000 + 4 * P), 2);
        assert_eq!(m.left(), 6);
        assert!(m.take_arrived(0x10000 + 2 * P, 2).is_empty());
        assert_eq!(m.discard(0, u64::MAX / 2), 6);
        assert_eq!(m.left(), 0);
    }

    #[test]
    fn remap_moves_the_middle_of_a_region() {
        let mut m = LazyMap::new();
        m.add(0x10000, 8);
        m.remap(0x10000 + 2 * P, 0x90000, 3 * P);
        assert_eq!(m.left(), 8);
        assert_eq!(m.source_of(0x90000), Some(0x10000 + 2 * P));
        assert_eq!(m.source_of(0x90000 + 2 * P), Some(0x10000 + 4 * P));
        assert_eq!(m.source_of(0x10000 + 2 * P), None);
        assert_eq!(m.source_of(0x10000 + 5 * P), Some(0x10000 + 5 * P));
        // A batch from the source lands at the new place, in two runs.
        let runs = m.take_arrived(0x10000, 8);
        assert_eq!(
            runs,
            vec![(0x10000, 0, 2), (0x10000 + 5 * P, 5, 3), (0x90000, 2, 3)]
        );
        assert_eq!(m.left(), 0);
    }

    #[test]
    fn remap_over_pending_pages_discards_them() {
        let mut m = LazyMap::new();
        m.add(0x10000, 4);
        m.add(0x20000, 4);
        m.remap(0x10000, 0x20000, 4 * P);
        assert_eq!(m.left(), 4);
        assert_eq!(m.source_of(0x20000), Some(0x10000));
    }

    #[test]
    fn unarrive_restores() {
        let mut m = LazyMap::new();
        m.add(0x10000, 4);
        let runs = m.take_arrived(0x10000, 4);
        assert_eq!(m.left(), 0);
        m.unarrive(runs[0].0, runs[0].2);
        assert_eq!(m.left(), 4);
    }
}
