//! The 32-bit Mersenne Twister exactly as PyTorch's CPU generator runs it.
//!
//! Source: aten/src/ATen/core/MT19937RNGEngine.h (`mt19937_engine`). It is the standard
//! MT19937 (Matsumoto & Nishimura 1998); the points that matter for reproducing torch are the
//! seeding (only the low 32 bits of the u64 seed are used) and that the first output comes
//! after a full regeneration of the state (`left_ = 1` after seeding).

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

#[derive(Clone, Debug)]
pub(crate) struct Mt19937 {
    state: [u32; N],
    /// Index of the next word of `state` to temper and return; `N` means "regenerate first".
    next: usize,
}

impl Mt19937 {
    /// `mt19937_engine::init_with_uint32`: torch keeps the u64 seed for reporting but seeds the
    /// engine with `seed & 0xffffffff`.
    pub(crate) fn new(seed: u64) -> Self {
        let mut state = [0u32; N];
        state[0] = seed as u32;
        for j in 1..N {
            let prev = state[j - 1];
            state[j] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(j as u32);
        }
        Self { state, next: N }
    }

    /// One tempered 32-bit output (`mt19937_engine::operator()`).
    pub(crate) fn next_u32(&mut self) -> u32 {
        if self.next >= N {
            self.regenerate();
        }
        let mut y = self.state[self.next];
        self.next += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// `mt19937_engine::next_state`: the twist over all 624 words.
    fn regenerate(&mut self) {
        let twist = |u: u32, v: u32| -> u32 {
            let mixed = (u & UPPER_MASK) | (v & LOWER_MASK);
            (mixed >> 1) ^ if v & 1 == 1 { MATRIX_A } else { 0 }
        };
        for i in 0..N {
            let next = self.state[(i + 1) % N];
            self.state[i] = self.state[(i + M) % N] ^ twist(self.state[i], next);
        }
        self.next = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference MT19937 (and C++'s `std::mt19937`) seeded with 5489 gives 3499211612
    /// first and, as its 10000th output, 4123659995 (a value the C++ standard requires).
    #[test]
    fn matches_the_reference_mt19937_outputs() {
        let mut mt = Mt19937::new(5489);
        assert_eq!(mt.next_u32(), 3_499_211_612);
        for _ in 1..9999 {
            mt.next_u32();
        }
        assert_eq!(mt.next_u32(), 4_123_659_995);
    }

    #[test]
    fn uses_only_the_low_32_bits_of_the_seed() {
        let mut a = Mt19937::new(5);
        let mut b = Mt19937::new((1u64 << 32) + 5);
        for _ in 0..700 {
            assert_eq!(a.next_u32(), b.next_u32());
        }
    }
}
