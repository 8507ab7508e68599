//! A small deterministic pseudo-random generator (splitmix64) for the synthetic dataset.
//!
//! The dataset must be identical on every machine and every run for a given
//! seed, so it uses its own generator rather than a crate whose output could
//! change between versions.

/// One splitmix64 step: a bijective mix of a 64-bit word.
pub(super) const fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// A splitmix64 stream.
#[derive(Debug, Clone)]
pub(super) struct Rng {
    state: u64,
}

impl Rng {
    /// A stream derived from a seed and a path of stream identifiers, so that
    /// each dossier (and each purpose within a dossier) has an independent
    /// stream that does not shift when another one draws more numbers.
    pub(super) fn for_stream(seed: u64, path: &[u64]) -> Self {
        let state = path.iter().fold(mix(seed ^ GAMMA), |acc, part| {
            mix(acc ^ mix(part.wrapping_add(GAMMA)))
        });
        Self { state }
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix(self.state)
    }

    /// A number in `0..n` (0 when `n` is 0). The multiply-shift bias is below
    /// 2^-32 for the small ranges used here.
    pub(super) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A number in `lo..=hi` (`lo` when the range is empty).
    pub(super) fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        let span = hi.abs_diff(lo).saturating_add(1);
        lo.saturating_add_unsigned(self.below(span))
    }

    /// A number in `[0, 1)`.
    pub(super) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub(super) fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A uniformly chosen item (the type's default for an empty table).
    pub(super) fn pick<T: Copy + Default>(&mut self, items: &[T]) -> T {
        let index = usize::try_from(self.below(items.len() as u64)).unwrap_or(0);
        items.get(index).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_stream_path_gives_the_same_numbers() {
        let mut a = Rng::for_stream(42, &[1, 7]);
        let mut b = Rng::for_stream(42, &[1, 7]);
        let mut c = Rng::for_stream(42, &[1, 8]);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..8).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
    }

    #[test]
    fn ranges_stay_within_their_bounds_and_reach_both_ends() {
        let mut rng = Rng::for_stream(1, &[]);
        let draws: Vec<i64> = (0..2_000).map(|_| rng.range(-2, 3)).collect();
        assert!(draws.iter().all(|x| (-2..=3).contains(x)));
        assert!(draws.contains(&-2) && draws.contains(&3));
        assert_eq!(rng.range(5, 5), 5);
        assert_eq!(rng.below(0), 0);
        assert!((0..1_000).all(|_| (0.0..1.0).contains(&rng.unit())));
    }
}
