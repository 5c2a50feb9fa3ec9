//! The training run's own random stream: timesteps, noise, caption dropout, VAE posterior
//! samples. A SplitMix64 generator (Steele, Lea & Flood 2014) because its whole state is one
//! `u64`: a checkpoint stores it in its JSON and a resumed run continues with exactly the same
//! numbers. (`crate::rng::TorchGenerator` exists to reproduce torch's sampling noise; training
//! needs reproducibility against itself, not against torch.)

use serde::{Deserialize, Serialize};

/// SplitMix64 with a Box-Muller normal. `Clone` copies the state: the clone continues with the
/// same numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainRng {
    state: u64,
}

const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// The SplitMix64 output function: a bijective 64-bit mix (also used to derive seeds).
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl TrainRng {
    pub fn new(seed: u64) -> Self {
        Self { state: mix64(seed) }
    }

    /// A generator for one named sub-stream of `seed` (e.g. the initial value of one weight),
    /// independent of every other name: an FNV-1a hash of the name mixed into the seed.
    pub fn for_name(seed: u64, name: &str) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
        Self::new(mix64(seed) ^ h)
    }

    /// The whole state, for checkpoints.
    pub fn state(&self) -> u64 {
        self.state
    }

    /// A generator continuing from a saved [`Self::state`].
    pub fn from_state(state: u64) -> Self {
        Self { state }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix64(self.state)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, n), without modulo bias (Lemire 2019); 0 when n is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = (self.next_u64() as u128) * (n as u128);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// `n` standard normal values (Box-Muller on pairs of uniforms; an odd tail discards the
    /// pair's second value, so the state after a draw depends only on `n`).
    pub fn normal_vec(&mut self, n: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(n + 1);
        while out.len() < n {
            // 1 - u lies in (0, 1], so the log is finite.
            let r = (-2.0 * (1.0 - self.uniform()).ln()).sqrt();
            let theta = 2.0 * std::f64::consts::PI * self.uniform();
            out.push((r * theta.cos()) as f32);
            out.push((r * theta.sin()) as f32);
        }
        out.truncate(n);
        out
    }

    /// A uniformly random permutation of 0..n (Fisher-Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.below(i as u64 + 1) as usize;
            p.swap(i, j);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trip_continues_the_stream() {
        let mut a = TrainRng::new(42);
        a.normal_vec(7);
        let mut b = TrainRng::from_state(a.state());
        assert_eq!(a.normal_vec(5), b.normal_vec(5));
        assert_eq!(a.below(1000), b.below(1000));
    }

    #[test]
    fn normals_have_unit_moments_and_permutations_are_permutations() {
        let mut r = TrainRng::new(1);
        let v = r.normal_vec(100_001);
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
        let mut p = r.permutation(50);
        assert_ne!(p, (0..50).collect::<Vec<_>>());
        p.sort_unstable();
        assert_eq!(p, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn names_give_independent_streams() {
        let a = TrainRng::for_name(3, "a.weight").next_u64();
        let b = TrainRng::for_name(3, "b.weight").next_u64();
        let a2 = TrainRng::for_name(3, "a.weight").next_u64();
        assert_ne!(a, b);
        assert_eq!(a, a2);
        assert!(TrainRng::new(5).below(0) == 0);
    }
}
