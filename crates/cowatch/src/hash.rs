//! A fast hasher for keys this crate chooses itself (dense `u32` video ids)
//! and for short-lived sets bounded in size (a request's history).
//!
//! Keys a client controls and that live long (video names in the interner,
//! user names of the windows) use the standard library's keyed SipHash
//! instead, so nobody can craft colliding ids to slow the tables down.

use std::hash::{BuildHasher, Hasher};

/// Builds [`MixHasher`]s.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MixState;

impl BuildHasher for MixState {
    type Hasher = MixHasher;

    fn build_hasher(&self) -> MixHasher {
        MixHasher(0x9E37_79B9_7F4A_7C15)
    }
}

/// Folds the input into 64 bits and finishes with MurmurHash3's `fmix64`,
/// which spreads every input bit over the whole word: `DashMap` picks the
/// shard from the high bits and `hashbrown` the bucket from the low bits and
/// its tag from the top seven, so all of them must be good.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MixHasher(u64);

const K: u64 = 0xFF51_AFD7_ED55_8CCD;

impl MixHasher {
    fn fold(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(K).rotate_left(29);
    }
}

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        h ^= h >> 33;
        h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
        h ^ (h >> 33)
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.fold(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.fold(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 56));
        }
    }

    fn write_u8(&mut self, v: u8) {
        self.fold(u64::from(v) | 0x100);
    }

    fn write_u32(&mut self, v: u32) {
        self.fold(u64::from(v));
    }

    fn write_u64(&mut self, v: u64) {
        self.fold(v);
    }

    fn write_usize(&mut self, v: usize) {
        self.fold(v as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_ids_spread_over_high_and_low_bits() {
        let state = MixState;
        let mut high = [0u32; 64];
        let mut low = [0u32; 64];
        for id in 0u32..64_000 {
            let h = state.hash_one(id);
            high[((h << 7) >> 58) as usize] += 1;
            low[(h & 63) as usize] += 1;
        }
        for bucket in high.iter().chain(&low) {
            assert!((800..1_200).contains(bucket), "{high:?} {low:?}");
        }
        assert_ne!(state.hash_one("v12"), state.hash_one("v21"));
        assert_ne!(state.hash_one("abcdefgh1"), state.hash_one("abcdefgh2"));
    }
}
