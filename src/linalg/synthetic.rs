//! Deterministic synthetic token features, bit-identical to
//! `tools/reference/spectral_features.py`, so that golden tests and benchmarks can use
//! large graphs (n = 577, d = 2048) without storing their features.
//!
//! The generator is counter-based SplitMix64 (Steele, Lea & Flood 2014): value i of a
//! stream with key s is `mix(s + (i + 1)·0x9E3779B97F4A7C15)`. Uniforms take the top 53
//! bits; "normals" are Irwin–Hall sums of four uniforms, rescaled to unit variance, so
//! that no transcendental function (whose last bit differs between libms) is involved.
//! Every step is an exactly rounded IEEE operation in a fixed order, in f64, rounded to
//! f32 once at the end — numpy reproduces it bit for bit.
//!
//! The Lanczos start vectors use the same uniforms, which keeps the solver free of any
//! hidden random state.

pub(crate) const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
/// √3 rounded to f64 (the Irwin–Hall sum of four uniforms has variance 1/3).
const SQRT_3: f64 = 1.732_050_807_568_877_2;

/// Stream keys of the clustered generator, xor-ed into the caller's seed.
const TAG_ASSIGN: u64 = 0xA551_6E00;
const TAG_CENTER: u64 = 0xCE47_E200;
const TAG_SHARED: u64 = 0x5A4E_D000;
const TAG_NOISE: u64 = 0x4015_E000;

/// The SplitMix64 output function (also the step of `synth::rng::Rng`).
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Value `i` of stream `key`, uniform in [0, 1) on a 2⁻⁵³ grid.
pub(crate) fn uniform(key: u64, i: u64) -> f64 {
    let z = mix(key.wrapping_add(i.wrapping_add(1).wrapping_mul(GOLDEN)));
    (z >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Value `i` of stream `key`, mean 0 and variance 1 (Irwin–Hall of four uniforms).
fn normal(key: u64, i: u64) -> f64 {
    let u = |j: u64| uniform(key, 4 * i + j);
    (((u(0) + u(1)) + u(2)) + u(3) - 2.0) * SQRT_3
}

/// Key of a sub-stream: the seed with a tag mixed in.
fn stream(seed: u64, tag: u64) -> u64 {
    mix(seed ^ tag)
}

/// `rows × dim` features (row-major) with i.i.d. unit-variance entries: a graph with no
/// structure, whose spectrum is a tight bulk (the slowest case for Lanczos).
pub fn random_features(rows: usize, dim: usize, seed: u64) -> Vec<f32> {
    (0..(rows * dim) as u64)
        .map(|i| normal(seed, i) as f32)
        .collect()
}

/// Shape of [`clustered_features`]: tokens drawn around `clusters` random centres.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clusters {
    /// Number of centres; each row picks one uniformly at random.
    pub clusters: usize,
    /// Weight of one direction shared by every row. Transformer features are anisotropic
    /// like this, which makes most affinities positive.
    pub shared: f64,
    /// Standard deviation of the per-row noise (centres have unit variance per column).
    pub noise: f64,
}

/// `rows × dim` features (row-major): row i = shared·s + c_{k(i)} + noise·gᵢ, with s, c_k and
/// gᵢ unit-variance random vectors and k(i) uniform over the clusters.
pub fn clustered_features(rows: usize, dim: usize, shape: &Clusters, seed: u64) -> Vec<f32> {
    let clusters = shape.clusters.max(1);
    let (assign, center, shared, noise) = (
        stream(seed, TAG_ASSIGN),
        stream(seed, TAG_CENTER),
        stream(seed, TAG_SHARED),
        stream(seed, TAG_NOISE),
    );
    let mut out = Vec::with_capacity(rows * dim);
    for i in 0..rows {
        let k = ((uniform(assign, i as u64) * clusters as f64) as usize).min(clusters - 1);
        for j in 0..dim {
            let s = shape.shared * normal(shared, j as u64);
            let c = normal(center, (k * dim + j) as u64);
            let g = shape.noise * normal(noise, (i * dim + j) as u64);
            out.push(((s + c) + g) as f32);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_published_sequence() {
        // SplitMix64 seeded with 1234567: the first outputs of the reference C code.
        let first = mix(1234567u64.wrapping_add(GOLDEN));
        assert_eq!(first, 6457827717110365317);
    }

    #[test]
    fn normals_have_unit_variance() {
        let n = 40_000u64;
        let xs: Vec<f64> = (0..n).map(|i| normal(99, i)).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(
            mean.abs() < 0.02 && (var - 1.0).abs() < 0.03,
            "mean {mean} var {var}"
        );
    }
}
