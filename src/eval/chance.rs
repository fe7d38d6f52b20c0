//! The `chance` rows of the perturbation benchmark: the same tests with each sample's units
//! removed in a random order, the level an explanation has to beat. One order per sample and
//! modality, drawn from the run's seed and the sample's id, so that a resumed run draws what
//! an uninterrupted one would have, and reruns give the same numbers.

use crate::hash::fnv1a;
use crate::synth::rng::Rng;

/// The name of the chance rows in results files and reports (no method is called so).
pub const CHANCE: &str = "chance";

/// Which units a random order ranks: the image's and the text's are drawn apart.
#[derive(Debug, Clone, Copy)]
pub enum Units {
    Image = 1,
    Text = 2,
}

/// Relevance that ranks `n` units in a uniformly random order: the ranks 0…n−1, shuffled,
/// drawn for `sample` from `seed`. Every value differs, so no tie is left to break.
pub fn random_relevance(seed: u64, sample: &str, units: Units, n: usize) -> Vec<f32> {
    let stream = fnv1a(&[sample.as_bytes(), &[units as u8]]);
    let mut rng = Rng::fork(seed, stream);
    let mut ranks: Vec<f32> = (0..n).map(|r| r as f32).collect();
    rng.shuffle(&mut ranks);
    ranks
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A permutation of the ranks, the same for the same seed and sample, a different one for
    /// another sample, seed or modality.
    #[test]
    fn orders_are_permutations_fixed_by_seed_sample_and_units() {
        let a = random_relevance(7, "q1", Units::Image, 36);
        let mut sorted = a.clone();
        sorted.sort_by(f32::total_cmp);
        assert_eq!(sorted, (0..36).map(|r| r as f32).collect::<Vec<_>>());
        assert_eq!(a, random_relevance(7, "q1", Units::Image, 36));
        assert_ne!(a, random_relevance(7, "q2", Units::Image, 36));
        assert_ne!(a, random_relevance(8, "q1", Units::Image, 36));
        assert_ne!(a, random_relevance(7, "q1", Units::Text, 36));
        assert!(random_relevance(7, "q1", Units::Text, 0).is_empty());
    }

    /// Uniform over every order: over many samples, each of the 24 orders of 4 units comes
    /// up about equally often (χ² with 23 degrees of freedom under 49.7, which a uniform
    /// draw exceeds with probability 0.001). A draw that reached only some orders (a random
    /// rotation: 4 of them) would fail.
    #[test]
    fn every_order_is_equally_likely() {
        let draws = 24_000;
        let mut counts = std::collections::HashMap::new();
        for s in 0..draws {
            let r = random_relevance(1234, &format!("sample {s}"), Units::Text, 4);
            let order: Vec<u8> = r.iter().map(|&x| x as u8).collect();
            *counts.entry(order).or_insert(0usize) += 1;
        }
        assert_eq!(counts.len(), 24, "orders drawn: {counts:?}");
        let expected = draws as f64 / 24.0;
        let chi2: f64 = counts
            .values()
            .map(|&c| (c as f64 - expected).powi(2) / expected)
            .sum();
        assert!(chi2 < 49.7, "order counts {counts:?}: χ² = {chi2:.1}");
    }
}
