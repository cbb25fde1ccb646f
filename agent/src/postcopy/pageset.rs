//! A set of pages kept as sorted, disjoint, coalesced address ranges:
//! which pages a pre-copy round sent, which pages a destination holds.
//! Pure logic.

use std::collections::BTreeMap;

use migrate_proto::PAGE_SIZE;

/// Page-aligned ranges `[start, end)`, keyed by start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageSet {
    ranges: BTreeMap<u64, u64>,
    pages: u64,
}

impl PageSet {
    /// An empty set.
    pub fn new() -> PageSet {
        PageSet::default()
    }

    /// Number of pages in the set.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.pages == 0
    }

    /// The ranges, in address order.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(&s, &e)| (s, e))
    }

    /// Adds `[start, end)`.
    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut lo, mut hi) = (start, end);
        // Absorb every range that touches or overlaps.
        let touching: Vec<(u64, u64)> = self
            .ranges
            .range(..=end)
            .rev()
            .take_while(|(_, &e)| e >= start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in touching {
            self.ranges.remove(&s);
            self.pages -= (e - s) / PAGE_SIZE;
            lo = lo.min(s);
            hi = hi.max(e);
        }
        self.ranges.insert(lo, hi);
        self.pages += (hi - lo) / PAGE_SIZE;
    }

    /// Removes `[start, end)`.
    pub fn remove(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let overlapping: Vec<(u64, u64)> = self
            .ranges
            .range(..end)
            .rev()
            .take_while(|(_, &e)| e > start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in overlapping {
            self.ranges.remove(&s);
            self.pages -= (e - s) / PAGE_SIZE;
            if s < start {
                self.ranges.insert(s, start);
                self.pages += (start - s) / PAGE_SIZE;
            }
            if e > end {
                self.ranges.insert(end, e);
                self.pages += (e - end) / PAGE_SIZE;
            }
        }
    }

    /// Whether the page at `addr` is in the set.
    pub fn contains(&self, addr: u64) -> bool {
        self.run_at(addr, 1) == 1
    }

    /// How many consecutive pages from `addr` (page-aligned) are in the
    /// set, at most `max`.
    pub fn run_at(&self, addr: u64, max: u64) -> u64 {
        match self.ranges.range(..=addr).next_back() {
            Some((_, &e)) if e > addr => ((e - addr) / PAGE_SIZE).min(max),
            _ => 0,
        }
    }

    /// How many consecutive pages from `addr` are *not* in the set, at
    /// most `max`.
    pub fn gap_at(&self, addr: u64, max: u64) -> u64 {
        if self.run_at(addr, 1) == 1 {
            return 0;
        }
        match self.ranges.range(addr..).next() {
            Some((&s, _)) => ((s - addr) / PAGE_SIZE).min(max),
            None => max,
        }
    }

    /// The parts of `[start, end)` in the set.
    pub fn within(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let first = self
            .ranges
            .range(..=start)
            .next_back()
            .map(|(&s, _)| s)
            .unwrap_or(start);
        for (&s, &e) in self.ranges.range(first..end) {
            let (a, b) = (s.max(start), e.min(end));
            if a < b {
                out.push((a, b));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = PAGE_SIZE;

    fn set(r: &[(u64, u64)]) -> PageSet {
        let mut s = PageSet::new();
        for &(a, b) in r {
            s.insert(a * P, b * P);
        }
        s
    }

    fn pages(s: &PageSet) -> Vec<(u64, u64)> {
        s.ranges().map(|(a, b)| (a / P, b / P)).collect()
    }

    #[test]
    fn inserts_coalesce_touching_and_overlapping_ranges() {
        let s = set(&[(10, 20), (30, 40), (20, 25), (24, 31)]);
        assert_eq!(pages(&s), vec![(10, 40)]);
        assert_eq!(s.pages(), 30);
        let s = set(&[(10, 20), (0, 5), (50, 60)]);
        assert_eq!(pages(&s), vec![(0, 5), (10, 20), (50, 60)]);
        assert_eq!(s.pages(), 25);
        let s = set(&[(10, 20), (0, 100)]);
        assert_eq!(pages(&s), vec![(0, 100)]);
        assert_eq!(s.pages(), 100);
    }

    #[test]
    fn removal_splits_and_trims() {
        let mut s = set(&[(0, 10), (20, 30), (40, 50)]);
        s.remove(5 * P, 25 * P);
        assert_eq!(pages(&s), vec![(0, 5), (25, 30), (40, 50)]);
        s.remove(42 * P, 44 * P);
        assert_eq!(pages(&s), vec![(0, 5), (25, 30), (40, 42), (44, 50)]);
        assert_eq!(s.pages(), 5 + 5 + 2 + 6);
        s.remove(0, 100 * P);
        assert!(s.is_empty());
    }

    #[test]
    fn runs_gaps_and_membership() {
        let s = set(&[(10, 20), (30, 40)]);
        assert!(s.contains(10 * P) && s.contains(19 * P));
        assert!(!s.contains(20 * P) && !s.contains(9 * P));
        assert_eq!(s.run_at(15 * P, 100), 5);
        assert_eq!(s.run_at(15 * P, 3), 3);
        assert_eq!(s.run_at(25 * P, 100), 0);
        assert_eq!(s.gap_at(20 * P, 100), 10);
        assert_eq!(s.gap_at(20 * P, 4), 4);
        assert_eq!(s.gap_at(12 * P, 4), 0);
        assert_eq!(s.gap_at(45 * P, 7), 7);
        assert_eq!(
            s.within(15 * P, 35 * P),
            vec![(15 * P, 20 * P), (30 * P, 35 * P)]
        );
        assert_eq!(s.within(0, 5 * P), vec![]);
    }
}
