//! Seeded random values that depend only on (seed, index): the same seed gives the same
//! tensor on every device and machine, whatever order elements are generated in.

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 64 random bits for element `index` of the stream `seed`.
pub fn bits(seed: u64, index: u64) -> u64 {
    splitmix64(splitmix64(seed) ^ index)
}

/// Uniform in [0, 1), with 24 bits of resolution (all an f32 mantissa holds).
pub fn uniform(seed: u64, index: u64) -> f32 {
    (bits(seed, index) >> 40) as f32 / (1u64 << 24) as f32
}

/// A seed for a sub-stream (an epoch, a sample), distinct for every `(seed, stream)` pair.
pub fn derive(seed: u64, stream: u64) -> u64 {
    splitmix64(seed ^ splitmix64(stream ^ 0xD1B5_4A32_D192_ED03))
}

/// The numbers 0..n in an order that depends only on `seed` (Fisher–Yates).
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (bits(seed, i as u64) % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// Standard normal by Box–Muller over two uniforms of the element's own stream.
pub fn normal(seed: u64, index: u64) -> f32 {
    let u1 = 1.0 - uniform(seed, 2 * index); // (0, 1]: keeps ln finite
    let u2 = uniform(seed, 2 * index + 1);
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_and_normal_have_the_right_moments() {
        let n = 100_000u64;
        let u: Vec<f32> = (0..n).map(|i| uniform(7, i)).collect();
        assert!(u.iter().all(|&v| (0.0..1.0).contains(&v)));
        let mean = u.iter().sum::<f32>() / n as f32;
        assert!((mean - 0.5).abs() < 0.01, "uniform mean {mean}");

        let z: Vec<f32> = (0..n).map(|i| normal(7, i)).collect();
        let mean = z.iter().sum::<f32>() / n as f32;
        let var = z.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n as f32;
        assert!(mean.abs() < 0.02 && (var - 1.0).abs() < 0.03, "normal mean {mean} var {var}");
    }

    #[test]
    fn permutations_are_reproducible_and_complete() {
        let p = permutation(1000, 3);
        assert_eq!(p, permutation(1000, 3));
        assert_ne!(p, permutation(1000, 4));
        let mut sorted = p.clone();
        sorted.sort();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_ne!(derive(1, 0), derive(1, 1));
    }

    #[test]
    fn seeds_give_distinct_reproducible_streams() {
        assert_eq!(uniform(1, 5), uniform(1, 5));
        assert_ne!(uniform(1, 5), uniform(2, 5));
        assert_ne!(uniform(1, 5), uniform(1, 6));
    }
}
