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

/// FNV-1a over 8-byte little-endian words (a short tail zero-padded), each part followed by
/// its length: eight times the speed of the byte-wise hash, for hashing whole files (GB of
/// weights in well under a second).
pub fn fnv1a_words(parts: &[&[u8]]) -> u64 {
    let mut h = OFFSET;
    for part in parts {
        let mut words = part.chunks_exact(8);
        for w in &mut words {
            let word = u64::from_le_bytes(w.try_into().expect("chunks of 8"));
            h = (h ^ word).wrapping_mul(PRIME);
        }
        let mut tail = [0u8; 8];
        tail[..words.remainder().len()].copy_from_slice(words.remainder());
        h = (h ^ u64::from_le_bytes(tail)).wrapping_mul(PRIME);
        h = (h ^ part.len() as u64).wrapping_mul(PRIME);
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

    #[test]
    fn word_hash_sees_every_byte_and_the_lengths() {
        assert_ne!(fnv1a_words(&[b"ab", b"c"]), fnv1a_words(&[b"a", b"bc"]));
        // a zero byte at the end is not the zero padding of a shorter part
        assert_ne!(fnv1a_words(&[b"abc"]), fnv1a_words(&[b"abc\0"]));
        let mut bytes = vec![7u8; 1 << 20];
        let whole = fnv1a_words(&[&bytes]);
        for at in [0, 12345, (1 << 20) - 1] {
            bytes[at] ^= 1;
            assert_ne!(fnv1a_words(&[&bytes]), whole, "byte {at}");
            bytes[at] ^= 1;
        }
        assert_eq!(fnv1a_words(&[&bytes]), whole);
    }
}
