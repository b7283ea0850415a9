//! Deterministic hashing: every generated value and fault decision comes from here.

/// SplitMix64's finaliser: a bijective, well-mixing map of `u64`.
pub(super) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hashes a sequence of words (order matters).
pub(super) fn hash(parts: &[u64]) -> u64 {
    parts
        .iter()
        .fold(0x243F_6A88_85A3_08D3, |h, &p| mix(h ^ mix(p)))
}

/// Hashes a string to a word (FNV-1a, then mixed).
pub(super) fn hash_str(s: &str) -> u64 {
    let fnv = s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    mix(fnv)
}

/// Maps a hash to `[0, 1)`.
pub(super) fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// True with probability `share` (so never for `share <= 0`, always for `share >= 1`).
pub(super) fn chance(h: u64, share: f64) -> bool {
    unit(h) < share
}

/// Picks an element of a non-empty slice.
pub(super) fn pick<T>(h: u64, items: &[T]) -> &T {
    &items[index(h, items.len())]
}

/// `h` reduced into `0..n` (`n > 0`): an index into a slice of length `n`.
pub(super) fn index(h: u64, n: usize) -> usize {
    let n = u64::try_from(n).expect("a length fits in 64 bits");
    usize::try_from(h % n).expect("below a slice length")
}

/// Picks an index with probability proportional to its weight (weights not all zero).
pub(super) fn weighted(h: u64, weights: impl Iterator<Item = u32> + Clone) -> usize {
    let total: u64 = weights.clone().map(u64::from).sum();
    let mut target = h % total.max(1);
    for (i, w) in weights.enumerate() {
        let w = u64::from(w);
        if target < w {
            return i;
        }
        target -= w;
    }
    0
}
