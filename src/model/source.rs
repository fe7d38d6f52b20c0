//! Where a model's tensors come from: a Hugging Face directory on disk, or a seeded random
//! generator (benchmarks build full-size models without multi-GB files).

use crate::model::weights::{LoadError, Weights};

/// A named tensor store; `shape` is what the architecture expects.
pub trait WeightSource {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, LoadError>;
}

impl WeightSource for Weights {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, LoadError> {
        self.get(name, shape)
    }
}

/// Deterministic pseudo-random tensors: each name seeds its own stream, so a tensor's
/// values do not depend on load order. Values are uniform in ±`scale`·√3 (std = `scale`),
/// except layer-norm weights, which are 1 (a zero-gain norm would hide work in benchmarks).
pub struct RandomWeights {
    pub seed: u64,
    pub scale: f32,
}

impl RandomWeights {
    fn stream(&self, name: &str) -> u64 {
        // FNV-1a over the name, mixed with the seed.
        name.bytes()
            .fold(0xcbf2_9ce4_8422_2325 ^ self.seed, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
            })
    }
}

impl WeightSource for RandomWeights {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, LoadError> {
        let len = shape.iter().product();
        let is_norm_gain = name.ends_with(".weight") && shape.len() == 1;
        if is_norm_gain {
            return Ok(vec![1.0; len]);
        }
        let mut state = self.stream(name) | 1;
        let amplitude = self.scale * 3f32.sqrt();
        Ok((0..len)
            .map(|_| {
                // xorshift64*: fast, and good enough for benchmark weights.
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                let bits = state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
                (bits as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * amplitude
            })
            .collect())
    }
}
