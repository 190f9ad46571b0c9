//! Which piece to request next: a pure policy.
//!
//! SPEC.md: among the pieces the neighbour has, we lack and have not requested
//! from anyone, one chosen uniformly at random ([`pick_random`]). A p2pft
//! neighbour (one that negotiated the pipelining extension; never with
//! `--strict`) is first asked for the newest piece it announced that we
//! still want ([`pick_newest`]): it keeps its most recently written pieces in
//! memory (see [`crate::support::piecebuf::BufferPool`]), so that piece goes out
//! without a read from its disk, and a piece just announced is one the other
//! peers are least likely to have yet. When it announced nothing we want
//! and a seed serves us, a p2pft leecher is not asked for an older piece at
//! all ([`pick_from_p2pft`]). Otherwise, when the store gathers small pieces
//! into granules (see [`crate::runtime::coalesce`]), a p2pft neighbour is asked for
//! the rest of the granules already begun ([`Filling`]) before a random
//! piece begins another: a granule completes soon and goes to the disk in
//! one write. A p2pft neighbour on another host is asked for its newest
//! announced piece, else for the rarest piece it has
//! ([`crate::policy::rarity::Rarity::pick`], or [`pick_rarest`]'s pass):
//! there the links, not the disks, set the pace, and a piece spreads fastest
//! when the seed sends each piece once before any twice. The caller keeps `wanted` (missing
//! and not in flight) up to date; this module only chooses, with the RNG
//! passed in so tests can pin the choice. Never touches protocol state.

use crate::protocol::bitfield::Bitfield;
use rand::Rng;
use std::collections::VecDeque;

/// The newest of `recent` (announced pieces, newest at the back) that is
/// `wanted`, or `None`.
pub(crate) fn pick_newest(recent: &VecDeque<u32>, wanted: &Bitfield) -> Option<u32> {
    recent.iter().rev().copied().find(|&i| wanted.has(i))
}

/// The pick for a p2pft neighbour: the newest piece it announced that is
/// `wanted`; failing that, one of a granule begun ([`Filling::pick`]), else
/// a random one of `theirs`, unless `seed_instead`
/// says so (it is a leecher and a neighbour with the whole file serves us;
/// asked only when no announced piece is wanted): then none, and that older
/// piece comes from the seed's page cache rather than from this leecher's
/// disk, which cut leechers' reads to serve and the wall time (see
/// docs/PERFORMANCE.md).
pub(crate) fn pick_from_p2pft(
    recent: &VecDeque<u32>,
    theirs: &Bitfield,
    wanted: &Bitfield,
    seed_instead: impl FnOnce() -> bool,
    filling: Option<&mut Filling>,
    rng: &mut impl Rng,
) -> Option<u32> {
    match pick_newest(recent, wanted) {
        Some(index) => Some(index),
        None if seed_instead() => None,
        None => filling
            .and_then(|f| f.pick(theirs, wanted))
            .or_else(|| pick_random(theirs, wanted, rng)),
    }
}

/// Granules begun and not yet all requested, remembered at most.
const MAX_FILLING: usize = 16;

/// The granules (runs of `per` pieces that the store writes as one) with
/// pieces requested or stored but some still wanted, oldest first.
#[derive(Debug)]
pub(crate) struct Filling {
    per: u32,
    granules: VecDeque<u32>,
}

impl Filling {
    pub(crate) fn new(per: u32) -> Filling {
        Filling {
            per: per.max(1),
            granules: VecDeque::new(),
        }
    }

    /// The lowest piece in `theirs` and `wanted` of the oldest granule that
    /// has one. Granules with nothing wanted left are forgotten on the way.
    pub(crate) fn pick(&mut self, theirs: &Bitfield, wanted: &Bitfield) -> Option<u32> {
        let n = wanted.len().min(theirs.len());
        let mut at = 0;
        while at < self.granules.len() {
            let first = self.granules[at] * self.per;
            let mut any_wanted = false;
            for i in first..(first + self.per).min(n) {
                if wanted.has(i) {
                    if theirs.has(i) {
                        return Some(i);
                    }
                    any_wanted = true;
                }
            }
            if any_wanted {
                at += 1;
            } else {
                self.granules.remove(at);
            }
        }
        None
    }

    /// Piece `index` was picked: its granule is begun (the newest, unless
    /// it is already listed).
    pub(crate) fn begun(&mut self, index: u32) {
        let granule = index / self.per;
        if !self.granules.contains(&granule) {
            if self.granules.len() == MAX_FILLING {
                self.granules.pop_front();
            }
            self.granules.push_back(granule);
        }
    }

    /// Piece `index` is wanted again (its request will not be answered): its
    /// granule is the first to finish.
    pub(crate) fn reopen(&mut self, index: u32) {
        let granule = index / self.per;
        if let Some(at) = self.granules.iter().position(|&g| g == granule) {
            self.granules.remove(at);
        } else if self.granules.len() == MAX_FILLING {
            self.granules.pop_back();
        }
        self.granules.push_front(granule);
    }
}

/// Of the pieces in both `theirs` and `wanted`, one that the fewest
/// neighbours have (`available`, a count a piece), at random among those;
/// `None` when there is none. One pass over the bitfields, 64 pieces at a
/// time, and a look at the count of each candidate: what
/// [`crate::policy::rarity::Rarity::pick`] falls back to when the rarest
/// pieces are not the neighbour's.
pub fn pick_rarest(
    theirs: &Bitfield,
    wanted: &Bitfield,
    available: &[u32],
    rng: &mut impl Rng,
) -> Option<u32> {
    let mut best: Option<(u32, u32)> = None; // (count, piece)
    let mut ties = 0u32;
    for (word_index, word) in words(theirs.as_wire())
        .zip(words(wanted.as_wire()))
        .map(|(a, b)| a & b)
        .enumerate()
    {
        let mut word = word;
        while word != 0 {
            let bit = word.leading_zeros();
            word &= !(1u64 << 63 >> bit);
            let index = word_index as u32 * 64 + bit;
            let count = available.get(index as usize).copied().unwrap_or(0);
            match best {
                Some((least, _)) if count > least => {}
                Some((least, _)) if count == least => {
                    // Reservoir sampling: each tie is kept with equal chance.
                    ties += 1;
                    if rng.random_range(0..ties) == 0 {
                        best = Some((count, index));
                    }
                }
                _ => {
                    best = Some((count, index));
                    ties = 1;
                }
            }
        }
    }
    best.map(|(_, index)| index)
}

/// Random draws tried before the exact pass of [`pick_random`].
const DRAWS: u32 = 8;

/// A uniformly random piece present in both `theirs` and `wanted`, or `None`.
///
/// First a few uniform draws over all pieces, each kept only if it is a
/// candidate (rejection sampling: a hit is uniform over the candidates);
/// while candidates are plenty, as for most of a download, one draw does.
/// When every draw misses, two passes over the bitfields, 64 bits at a time,
/// choose exactly; a mixture of uniform choices is uniform. No allocation.
/// (With many small pieces the passes alone were a visible share of a
/// swarm's CPU; see docs/PERFORMANCE.md.)
pub fn pick_random(theirs: &Bitfield, wanted: &Bitfield, rng: &mut impl Rng) -> Option<u32> {
    let n = theirs.len().min(wanted.len());
    if n > 0 {
        for _ in 0..DRAWS {
            let i = rng.random_range(0..n);
            if theirs.has(i) && wanted.has(i) {
                return Some(i);
            }
        }
    }
    let both = || {
        words(theirs.as_wire())
            .zip(words(wanted.as_wire()))
            .map(|(a, b)| a & b)
    };
    let total: u32 = both().map(u64::count_ones).sum();
    if total == 0 {
        return None;
    }
    let mut skip = rng.random_range(0..total);
    for (word_index, word) in both().enumerate() {
        let ones = word.count_ones();
        if skip >= ones {
            skip -= ones;
            continue;
        }
        let mut word = word;
        loop {
            let bit = word.leading_zeros();
            if skip == 0 {
                return Some(word_index as u32 * 64 + bit);
            }
            skip -= 1;
            word &= !(1u64 << 63 >> bit);
        }
    }
    unreachable!("the count of candidate bits was {total}")
}

/// Wire-order bytes as big-endian 64-bit words (the last one zero-padded), so
/// bit `i` of the field is bit `63 - i % 64` of word `i / 64`.
fn words(bytes: &[u8]) -> impl Iterator<Item = u64> + '_ {
    bytes.chunks(8).map(|chunk| {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        u64::from_be_bytes(word)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn field(n: u32, ones: &[u32]) -> Bitfield {
        let mut b = Bitfield::empty(n);
        for &i in ones {
            b.set(i, true);
        }
        b
    }

    #[test]
    fn the_rarest_piece_is_picked_at_random_among_the_rarest() {
        let mut rng = StdRng::seed_from_u64(3);
        let theirs = field(130, &[1, 2, 70, 100, 129]);
        let wanted = field(130, &[2, 70, 100, 129]);
        let mut available = vec![5; 130];
        available[70] = 2;
        available[129] = 2;
        available[1] = 0; // not wanted: never picked
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            seen.insert(pick_rarest(&theirs, &wanted, &available, &mut rng).unwrap());
        }
        assert_eq!(seen, [70, 129].into());
        assert_eq!(
            pick_rarest(&theirs, &field(130, &[3]), &available, &mut rng),
            None
        );
    }

    #[test]
    fn the_newest_wanted_announcement_is_picked() {
        let wanted = field(20, &[3, 5, 9]);
        let recent = |v: &[u32]| v.iter().copied().collect::<VecDeque<u32>>();
        assert_eq!(pick_newest(&recent(&[3, 9, 5, 4]), &wanted), Some(5));
        assert_eq!(pick_newest(&recent(&[9, 3, 4]), &wanted), Some(3));
        assert_eq!(pick_newest(&recent(&[1, 4]), &wanted), None);
        assert_eq!(pick_newest(&recent(&[]), &wanted), None);
    }

    #[test]
    fn a_p2pft_leecher_is_asked_for_old_pieces_only_when_no_seed_serves_us() {
        let wanted = field(20, &[3, 5, 9]);
        let theirs = field(20, &[1, 3, 4, 9]);
        let recent = |v: &[u32]| v.iter().copied().collect::<VecDeque<u32>>();
        let mut rng = StdRng::seed_from_u64(2);
        for seed_instead in [false, true] {
            let newest = pick_from_p2pft(
                &recent(&[9, 4]),
                &theirs,
                &wanted,
                || seed_instead,
                None,
                &mut rng,
            );
            assert_eq!(newest, Some(9));
        }
        let old = pick_from_p2pft(&recent(&[4]), &theirs, &wanted, || false, None, &mut rng);
        assert!(matches!(old, Some(3 | 9)), "{old:?}");
        assert_eq!(
            pick_from_p2pft(&recent(&[4]), &theirs, &wanted, || true, None, &mut rng),
            None
        );
    }

    #[test]
    fn begun_granules_are_filled_oldest_first_before_a_random_pick() {
        let mut rng = StdRng::seed_from_u64(4);
        let mut wanted = Bitfield::full(40);
        let seed = Bitfield::full(40);
        let mut filling = Filling::new(8);
        let none = VecDeque::new();
        let mut pick = |filling: &mut Filling, wanted: &mut Bitfield, theirs: &Bitfield| {
            let p = pick_from_p2pft(&none, theirs, wanted, || false, Some(filling), &mut rng);
            if let Some(i) = p {
                wanted.set(i, false);
                filling.begun(i);
            }
            p
        };
        // Nothing begun: a random piece, then the rest of its granule in order.
        let first = pick(&mut filling, &mut wanted, &seed).unwrap();
        let g = first / 8;
        let mut rest: Vec<u32> = (g * 8..g * 8 + 8).filter(|&i| i != first).collect();
        for &i in &rest {
            assert_eq!(pick(&mut filling, &mut wanted, &seed), Some(i));
        }
        // Granule g is all requested: the next pick begins another at random.
        let second = pick(&mut filling, &mut wanted, &seed).unwrap();
        assert_ne!(second / 8, g);
        // A piece of g wanted again comes before the second granule's rest.
        let back = rest.pop().unwrap();
        wanted.set(back, true);
        filling.reopen(back);
        assert_eq!(pick(&mut filling, &mut wanted, &seed), Some(back));
        // A neighbour without the rest of a begun granule gets a random pick
        // it has; the begun granule stays for others.
        let h = (0..5).find(|&h| h != g && h != second / 8).unwrap();
        let only = field(40, &[h * 8 + 3]);
        assert_eq!(pick(&mut filling, &mut wanted, &only), Some(h * 8 + 3));
        let next = pick(&mut filling, &mut wanted, &seed).unwrap();
        assert_eq!(next / 8, second / 8, "{next} {second}");
        // At most MAX_FILLING granules are remembered, the oldest dropped.
        let mut many = Filling::new(1);
        for i in 0..MAX_FILLING as u32 + 3 {
            many.begun(i);
        }
        assert_eq!(many.granules.len(), MAX_FILLING);
        assert_eq!(many.granules.front(), Some(&3));
    }

    #[test]
    fn nothing_in_common_gives_none() {
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(
            pick_random(&field(20, &[1, 2]), &field(20, &[3, 4]), &mut rng),
            None
        );
        assert_eq!(
            pick_random(&field(20, &[]), &Bitfield::full(20), &mut rng),
            None
        );
    }

    #[test]
    fn only_candidates_are_picked_and_all_of_them_eventually() {
        let theirs = field(100, &[0, 7, 8, 50, 63, 64, 99]);
        let wanted = field(100, &[0, 8, 9, 50, 64, 99]);
        let mut rng = StdRng::seed_from_u64(7);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..1000 {
            let p = pick_random(&theirs, &wanted, &mut rng).unwrap();
            assert!(theirs.has(p) && wanted.has(p), "picked {p}");
            seen.insert(p);
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![0, 8, 50, 64, 99]);
    }

    #[test]
    fn choice_is_roughly_uniform() {
        let n = 16;
        let all = Bitfield::full(n);
        let mut rng = StdRng::seed_from_u64(42);
        let mut counts = vec![0u32; n as usize];
        for _ in 0..16_000 {
            counts[pick_random(&all, &all, &mut rng).unwrap() as usize] += 1;
        }
        // Each bucket expects 1000; 6 sigma is about 190.
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn choice_stays_uniform_when_draws_and_the_exact_pass_mix() {
        // Few candidates (draws mostly miss) and half of them (draws mostly
        // hit, but not always): each candidate's count within 6 sigma.
        for (n, ones) in [(1000, vec![3, 500, 501, 999]), (8, vec![0, 2, 5, 7])] {
            let theirs = field(n, &ones);
            let mut rng = StdRng::seed_from_u64(5);
            let mut counts = std::collections::BTreeMap::new();
            for _ in 0..4000 {
                let p = pick_random(&theirs, &Bitfield::full(n), &mut rng).unwrap();
                *counts.entry(p).or_insert(0u32) += 1;
            }
            assert_eq!(counts.keys().copied().collect::<Vec<_>>(), ones);
            assert!(
                counts.values().all(|&c| (835..1165).contains(&c)),
                "{counts:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn a_pick_is_in_both_fields_and_none_only_when_they_share_nothing(
            bits in proptest::collection::vec((proptest::bool::ANY, proptest::bool::ANY), 1..300),
            seed in 0u64..1000,
        ) {
            let n = bits.len() as u32;
            let mut theirs = Bitfield::empty(n);
            let mut wanted = Bitfield::empty(n);
            for (i, &(a, b)) in bits.iter().enumerate() {
                theirs.set(i as u32, a);
                wanted.set(i as u32, b);
            }
            let common = bits.iter().filter(|(a, b)| *a && *b).count();
            match pick_random(&theirs, &wanted, &mut StdRng::seed_from_u64(seed)) {
                None => proptest::prop_assert_eq!(common, 0),
                Some(p) => proptest::prop_assert!(p < n && theirs.has(p) && wanted.has(p)),
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_choice() {
        let all = Bitfield::full(1000);
        let a = pick_random(&all, &all, &mut StdRng::seed_from_u64(3));
        let b = pick_random(&all, &all, &mut StdRng::seed_from_u64(3));
        assert_eq!(a, b);
    }
}
