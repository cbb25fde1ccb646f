//! A uniform sample of bounded size over a stream of unknown length
//! (reservoir sampling, Vitter's algorithm R): the record keeps at most a
//! few thousand fault samples, drawn evenly from the whole of post-copy
//! rather than from its start.

/// At most `cap` items, each item offered so far equally likely to be
/// among them.
#[derive(Debug)]
pub struct Reservoir<T> {
    kept: Vec<T>,
    cap: usize,
    offered: u64,
    rng: SplitMix64,
}

impl<T> Reservoir<T> {
    /// An empty reservoir of `cap` items whose draws come from `seed`.
    pub fn new(cap: usize, seed: u64) -> Reservoir<T> {
        Reservoir {
            kept: Vec::new(),
            cap,
            offered: 0,
            rng: SplitMix64(seed),
        }
    }

    /// Offers one item: kept with probability `cap / offered`, in place of
    /// a kept one drawn at random once the reservoir is full.
    pub fn offer(&mut self, item: T) {
        self.offered += 1;
        if self.kept.len() < self.cap {
            self.kept.push(item);
            return;
        }
        let j = self.rng.below(self.offered);
        if let Some(slot) = self.kept.get_mut(j as usize) {
            *slot = item;
        }
    }

    /// Items offered so far.
    pub fn offered(&self) -> u64 {
        self.offered
    }

    /// The kept items, in no particular order; the reservoir is left empty.
    pub fn take(&mut self) -> Vec<T> {
        self.offered = 0;
        std::mem::take(&mut self.kept)
    }
}

/// A small, fast generator (Steele, Lea and Flood's SplitMix64): enough to
/// pick which samples stay, nothing more.
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), by widening multiplication (Lemire; the
    /// bias is below 2^-40 for the counts seen here).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_everything_until_full() {
        let mut r = Reservoir::new(10, 1);
        for i in 0..7 {
            r.offer(i);
        }
        assert_eq!(r.take(), (0..7).collect::<Vec<_>>());
    }

    #[test]
    fn never_holds_more_than_its_cap() {
        let mut r = Reservoir::new(64, 2);
        for i in 0..100_000u32 {
            r.offer(i);
        }
        assert_eq!(r.offered(), 100_000);
        let kept = r.take();
        assert_eq!(kept.len(), 64);
        let mut sorted = kept.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 64, "an item kept twice");
    }

    /// The sample covers the whole stream: each tenth of 200,000 items
    /// holds about a tenth of 4096 kept ones (binomial, sd ~19; the bound
    /// is over 6 sd), where keeping the first 4096 puts them all in the
    /// first tenth.
    #[test]
    fn samples_evenly_over_the_whole_stream() {
        for seed in [3, 4, 5] {
            let mut r = Reservoir::new(4096, seed);
            let n = 200_000u64;
            for i in 0..n {
                r.offer(i);
            }
            let mut tenths = [0u32; 10];
            for i in r.take() {
                tenths[(i * 10 / n) as usize] += 1;
            }
            for (k, &c) in tenths.iter().enumerate() {
                assert!(
                    (290..=530).contains(&c),
                    "seed {seed}: tenth {k} holds {c} of 4096: {tenths:?}"
                );
            }
        }
    }
}
