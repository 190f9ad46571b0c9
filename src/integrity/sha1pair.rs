//! SHA-1 of two messages at once on one core, for verifying pieces in pairs.
//!
//! The SHA instructions (SHA-NI) hash one message at the speed of their
//! latency: every `sha1rnds4` waits for the one before. Two independent
//! messages interleaved keep the unit busy, nearly doubling the rate of the
//! `sha1` crate one at a time (see docs/PERFORMANCE.md). Verifying every
//! piece is the largest single cost of a leecher, so this is worth `unsafe`
//! (the crate's only other is one system call in [`crate::runtime::sched`]).
//!
//! [`sha1_pair`] gives exactly the digests of [`sha1()`] for any
//! two inputs; it falls back to it when the CPU lacks the instructions or the
//! two messages need different numbers of blocks (only the last piece of a
//! file is shorter). Owns no state; must never be used for anything but
//! whole messages.
#![allow(unsafe_code)]

use sha1::{Digest, Sha1};

/// A SHA-1 digest.
pub type Hash = [u8; 20];

/// The SHA-1 digest of `data` (the `sha1` crate: SHA-NI where the CPU has it).
pub fn sha1(data: &[u8]) -> Hash {
    Sha1::digest(data).into()
}

/// The SHA-1 digests of `a` and of `b`.
pub fn sha1_pair(a: &[u8], b: &[u8]) -> (Hash, Hash) {
    #[cfg(target_arch = "x86_64")]
    if a.len() / 64 == b.len() / 64 && a.len() % 64 < 56 && b.len() % 64 < 56 && ni::available() {
        return ni::paired(a, b);
    }
    (sha1(a), sha1(b))
}

#[cfg(target_arch = "x86_64")]
mod ni {
    use super::Hash;
    use std::arch::x86_64::*;

    const INIT: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];

    /// Whether this CPU has the instructions [`digest_pair`] uses.
    pub(super) fn available() -> bool {
        is_x86_feature_detected!("sha")
            && is_x86_feature_detected!("sse2")
            && is_x86_feature_detected!("ssse3")
            && is_x86_feature_detected!("sse4.1")
    }

    /// Both messages have the same number of whole blocks and their tails
    /// (under 56 bytes) pad into one final block each; [`available`] is true.
    pub(super) fn paired(a: &[u8], b: &[u8]) -> (Hash, Hash) {
        let whole = a.len() / 64 * 64;
        let (blocks_a, tail_a) = a.split_at(whole);
        let (blocks_b, tail_b) = b.split_at(whole);
        let (mut state_a, mut state_b) = (INIT, INIT);
        // SAFETY: the caller checked that the CPU has every feature
        // `digest_pair` enables, and both slices are `whole` bytes long.
        unsafe { digest_pair(&mut state_a, &mut state_b, blocks_a, blocks_b) };
        let (last_a, last_b) = (final_block(tail_a, a.len()), final_block(tail_b, b.len()));
        // SAFETY: as above, one block each.
        unsafe { digest_pair(&mut state_a, &mut state_b, &last_a, &last_b) };
        (to_bytes(&state_a), to_bytes(&state_b))
    }

    /// The padded last block of a message of `len` bytes ending with `tail`
    /// (fewer than 56 bytes): tail, 0x80, zeros, the length in bits.
    fn final_block(tail: &[u8], len: usize) -> [u8; 64] {
        let mut block = [0u8; 64];
        block[..tail.len()].copy_from_slice(tail);
        block[tail.len()] = 0x80;
        block[56..].copy_from_slice(&((len as u64) * 8).to_be_bytes());
        block
    }

    fn to_bytes(state: &[u32; 5]) -> Hash {
        let mut out = [0u8; 20];
        for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out
    }

    macro_rules! rounds4 {
        ($h0:ident, $h1:ident, $wk:expr, $i:expr) => {
            _mm_sha1rnds4_epu32($h0, _mm_sha1nexte_epu32($h1, $wk), $i)
        };
    }

    macro_rules! schedule {
        ($v0:expr, $v1:expr, $v2:expr, $v3:expr) => {
            _mm_sha1msg2_epu32(_mm_xor_si128(_mm_sha1msg1_epu32($v0, $v1), $v2), $v3)
        };
    }

    macro_rules! schedule_rounds4 {
        (
            $h0:ident, $h1:ident,
            $w0:expr, $w1:expr, $w2:expr, $w3:expr, $w4:expr,
            $i:expr
        ) => {
            $w4 = schedule!($w0, $w1, $w2, $w3);
            $h1 = rounds4!($h0, $h1, $w4, $i);
        };
    }

    /// The 80 rounds of one block whose four message words are `$words`,
    /// added into `$abcd` and `$e`: those of the `sha1` crate's SHA-NI
    /// backend (sha1 0.10, `compress/x86.rs`).
    macro_rules! block {
        ($abcd:ident, $e:ident, $words:expr) => {{
            let (mut w0, mut w1, mut w2, mut w3) = $words;
            let mut w4;
            let mut h0 = $abcd;
            let mut h1 = _mm_add_epi32($e, w0);

            // Rounds 0..20
            h1 = _mm_sha1rnds4_epu32(h0, h1, 0);
            h0 = rounds4!(h1, h0, w1, 0);
            h1 = rounds4!(h0, h1, w2, 0);
            h0 = rounds4!(h1, h0, w3, 0);
            schedule_rounds4!(h0, h1, w0, w1, w2, w3, w4, 0);

            // Rounds 20..40
            schedule_rounds4!(h1, h0, w1, w2, w3, w4, w0, 1);
            schedule_rounds4!(h0, h1, w2, w3, w4, w0, w1, 1);
            schedule_rounds4!(h1, h0, w3, w4, w0, w1, w2, 1);
            schedule_rounds4!(h0, h1, w4, w0, w1, w2, w3, 1);
            schedule_rounds4!(h1, h0, w0, w1, w2, w3, w4, 1);

            // Rounds 40..60
            schedule_rounds4!(h0, h1, w1, w2, w3, w4, w0, 2);
            schedule_rounds4!(h1, h0, w2, w3, w4, w0, w1, 2);
            schedule_rounds4!(h0, h1, w3, w4, w0, w1, w2, 2);
            schedule_rounds4!(h1, h0, w4, w0, w1, w2, w3, 2);
            schedule_rounds4!(h0, h1, w0, w1, w2, w3, w4, 2);

            // Rounds 60..80
            schedule_rounds4!(h1, h0, w1, w2, w3, w4, w0, 3);
            schedule_rounds4!(h0, h1, w2, w3, w4, w0, w1, 3);
            schedule_rounds4!(h1, h0, w3, w4, w0, w1, w2, 3);
            schedule_rounds4!(h0, h1, w4, w0, w1, w2, w3, 3);
            schedule_rounds4!(h1, h0, w0, w1, w2, w3, w4, 3);

            $abcd = _mm_add_epi32($abcd, h0);
            $e = _mm_sha1nexte_epu32(h1, $e);
        }};
    }

    /// Runs the SHA-1 compression of the 64-byte blocks of `blocks_a` into
    /// `state_a` and of `blocks_b` into `state_b`. The rounds of one block
    /// form a single dependency chain; the two chains are independent, so
    /// the core runs them side by side.
    ///
    /// # Safety
    /// The CPU must have the SHA, SSE2, SSSE3 and SSE4.1 instructions. The two
    /// slices must have the same length, a multiple of 64 (else the last
    /// partial block of each is left out).
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn digest_pair(
        state_a: &mut [u32; 5],
        state_b: &mut [u32; 5],
        blocks_a: &[u8],
        blocks_b: &[u8],
    ) {
        debug_assert!(blocks_a.len() == blocks_b.len() && blocks_a.len() % 64 == 0);
        #[allow(non_snake_case)]
        let MASK: __m128i = _mm_set_epi64x(0x0001_0203_0405_0607, 0x0809_0A0B_0C0D_0E0F);
        let load = |s: &[u32; 5]| {
            (
                _mm_set_epi32(s[0] as i32, s[1] as i32, s[2] as i32, s[3] as i32),
                _mm_set_epi32(s[4] as i32, 0, 0, 0),
            )
        };
        let words = |block: &[u8]| {
            // SAFETY: `_mm_loadu_si128` reads 16 bytes at any alignment, and
            // each of the four slices is 16 bytes long.
            let word = |i: usize| unsafe {
                let word: &[u8; 16] = block[i * 16..][..16].try_into().expect("16 bytes");
                _mm_shuffle_epi8(_mm_loadu_si128(word.as_ptr().cast()), MASK)
            };
            (word(0), word(1), word(2), word(3))
        };
        let (mut abcd_a, mut e_a) = load(state_a);
        let (mut abcd_b, mut e_b) = load(state_b);
        for (block_a, block_b) in blocks_a.chunks_exact(64).zip(blocks_b.chunks_exact(64)) {
            block!(abcd_a, e_a, words(block_a));
            block!(abcd_b, e_b, words(block_b));
        }
        let store = |s: &mut [u32; 5], abcd: __m128i, e: __m128i| {
            s[0] = _mm_extract_epi32(abcd, 3) as u32;
            s[1] = _mm_extract_epi32(abcd, 2) as u32;
            s[2] = _mm_extract_epi32(abcd, 1) as u32;
            s[3] = _mm_extract_epi32(abcd, 0) as u32;
            s[4] = _mm_extract_epi32(e, 3) as u32;
        };
        store(state_a, abcd_a, e_a);
        store(state_b, abcd_b, e_b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn one(data: &[u8]) -> Hash {
        sha1(data)
    }

    #[test]
    fn pairs_match_the_sha1_crate_for_every_length_class() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut lens: Vec<(usize, usize)> = (0..200).map(|n| (n, n)).collect();
        lens.extend((0..200).map(|n| (n, 199 - n)));
        lens.extend([
            (262_144, 262_144),
            (262_144, 1000),
            (16_384, 16_384),
            (65_591, 65_591),
        ]);
        for (la, lb) in lens {
            let a: Vec<u8> = (0..la).map(|_| rng.random()).collect();
            let b: Vec<u8> = (0..lb).map(|_| rng.random()).collect();
            assert_eq!(
                sha1_pair(&a, &b),
                (one(&a), one(&b)),
                "lengths {la} and {lb}"
            );
        }
    }

    #[test]
    fn known_answers() {
        let (abc, empty) = sha1_pair(b"abc", b"");
        let hex = |h: Hash| h.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(hex(abc), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(hex(empty), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    }
}
