//! FNV-1a: a small hash that stays the same across builds and Rust releases (std's hasher
//! may change between them), for keys that outlive a process: the NVRTC cache's file names,
//! the weights fingerprint in a results file.

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0100_0000_01b3;

/// FNV-1a over `parts`, each followed by a separator byte, so that ["ab", "c"] and
/// ["a", "bc"] differ.
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h = OFFSET;
    for part in parts {
        for &b in *part {
            h = (h ^ b as u64).wrapping_mul(PRIME);
        }
        h = (h ^ 0xff).wrapping_mul(PRIME);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_separated_and_values_stable() {
        assert_ne!(fnv1a(&[b"ab", b"c"]), fnv1a(&[b"a", b"bc"]));
        // FNV-1a of "a" is 0xaf63dc4c8601ec8c; then the separator byte.
        assert_eq!(
            fnv1a(&[b"a"]),
            (0xaf63_dc4c_8601_ec8c_u64 ^ 0xff).wrapping_mul(PRIME)
        );
    }
}
