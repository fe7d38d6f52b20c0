//! The deterministic sample subset: Python's `random.seed(seed)`, `random.shuffle(range(n))`,
//! keep the first N — what the reference does with seed 1234 (spec §E), reproduced bit for
//! bit: CPython's Mersenne Twister (MT19937 seeded through `init_by_array` with the seed's
//! 32-bit words) and its shuffle (Fisher–Yates from the end, `_randbelow` by rejection on
//! `getrandbits(bit_length)`). Because the order is fixed by the seed, a larger N extends a
//! smaller one's subset.

const N: usize = 624;
const M: usize = 397;

/// CPython's `_random.Random` state.
struct Mt19937 {
    state: [u32; N],
    index: usize,
}

impl Mt19937 {
    /// `random.seed(seed)` for a non-negative integer seed.
    fn python_seeded(seed: u64) -> Self {
        let (lo, hi) = (seed as u32, (seed >> 32) as u32);
        let key: Vec<u32> = if hi == 0 { vec![lo] } else { vec![lo, hi] };
        let mut mt = Self::from_u32(19_650_218);
        let s = &mut mt.state;
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..N.max(key.len()) {
            let prev = s[i - 1] ^ (s[i - 1] >> 30);
            s[i] = (s[i] ^ prev.wrapping_mul(1_664_525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                s[0] = s[N - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..N - 1 {
            let prev = s[i - 1] ^ (s[i - 1] >> 30);
            s[i] = (s[i] ^ prev.wrapping_mul(1_566_083_941)).wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                s[0] = s[N - 1];
                i = 1;
            }
        }
        s[0] = 0x8000_0000;
        mt
    }

    fn from_u32(seed: u32) -> Self {
        let mut state = [0u32; N];
        state[0] = seed;
        for i in 1..N {
            let prev = state[i - 1] ^ (state[i - 1] >> 30);
            state[i] = 1_812_433_253u32.wrapping_mul(prev).wrapping_add(i as u32);
        }
        Self { state, index: N }
    }

    fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            let s = &mut self.state;
            for k in 0..N {
                let y = (s[k] & 0x8000_0000) | (s[(k + 1) % N] & 0x7fff_ffff);
                let mag = if y & 1 == 1 { 0x9908_b0df } else { 0 };
                s[k] = s[(k + M) % N] ^ (y >> 1) ^ mag;
            }
            self.index = 0;
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `_randbelow(n)` for 0 < n < 2³²: `getrandbits(n.bit_length())` until below n.
    fn below(&mut self, n: u32) -> u32 {
        let bits = 32 - n.leading_zeros();
        loop {
            let r = self.next_u32() >> (32 - bits);
            if r < n {
                return r;
            }
        }
    }
}

/// The first `count` indices of `random.shuffle(list(range(len)))` after `random.seed(seed)`
/// (all of them when `count` ≥ `len`).
///
/// # Panics
/// If `len` does not fit in 32 bits (Python would draw more bits; no dataset is that big).
pub fn python_shuffled_prefix(len: usize, seed: u64, count: usize) -> Vec<usize> {
    assert!(u32::try_from(len).is_ok(), "dataset of {len} items");
    let mut mt = Mt19937::python_seeded(seed);
    let mut items: Vec<usize> = (0..len).collect();
    for i in (1..len).rev() {
        let j = mt.below(i as u32 + 1) as usize;
        items.swap(i, j);
    }
    items.truncate(count);
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `random.seed(seed); l = list(range(n)); random.shuffle(l); l[:12]` (Python 3.11).
    #[test]
    fn matches_python_shuffle() {
        assert_eq!(
            python_shuffled_prefix(50, 1234, 12),
            [31, 26, 40, 27, 12, 11, 20, 32, 23, 19, 10, 24]
        );
        assert_eq!(python_shuffled_prefix(7, 0, 12), [4, 2, 1, 0, 5, 3, 6]);
        assert_eq!(
            python_shuffled_prefix(1000, 9595, 12),
            [483, 584, 222, 360, 145, 122, 570, 457, 223, 416, 609, 481]
        );
    }

    #[test]
    fn larger_counts_extend_smaller_ones() {
        let all = python_shuffled_prefix(200, 7, 200);
        assert_eq!(python_shuffled_prefix(200, 7, 20), all[..20]);
        let mut sorted = all.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..200).collect::<Vec<_>>());
        assert!(python_shuffled_prefix(0, 1, 5).is_empty());
    }
}
