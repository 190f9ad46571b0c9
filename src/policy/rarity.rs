//! How many connected neighbours have each piece, kept sorted, so that the
//! rarest piece a neighbour can give us is found without a pass over every
//! piece.
//!
//! Owns the counts and their order (pieces bucketed by count, as
//! libtorrent's piece picker keeps them, pieces we have set apart at the
//! end); [`Rarity::pick`] is rarest first with ties broken at random.
//! Never decides whom to ask or when: that is [`crate::machine`]'s.

use crate::protocol::bitfield::Bitfield;
use rand::Rng;

/// Pieces [`Rarity::pick`] looks at, from the rarest, before it falls back to
/// one pass over the bitfields: a neighbour that has most of the rarest
/// pieces we want (a seed, a well-stocked peer) is served in a few looks;
/// one that lacks them costs a pass, 64 pieces a step, as without the order.
const LOOKS: usize = 256;
/// Pieces of a bucket drawn at random before it is looked through in turn.
const DRAWS: usize = 8;

/// Pieces up to which [`Rarity`] keeps no order: one pass over their
/// bitfields is 64 words or fewer, cheaper than keeping them sorted (the
/// simulator of 1,000 hosts and 96 pieces ran slower sorted).
const UNSORTED_UP_TO: u32 = 4096;

/// Neighbours having each piece, and the pieces in order of that count.
#[derive(Debug, Clone)]
pub struct Rarity {
    count: Vec<u32>,
    /// Every piece we lack, by count, least first; then the pieces we have
    /// ([`Rarity::retire`]), in no order.
    order: Vec<u32>,
    /// Where each piece is in `order`.
    at: Vec<u32>,
    /// `start[c]`: where the pieces of count `c` begin in `order`; the last
    /// entry is where the pieces we have begin, so bucket `c` is
    /// `order[start[c]..start[c + 1]]`.
    start: Vec<u32>,
    /// Up to [`UNSORTED_UP_TO`] pieces, only `count` is kept.
    sorted: bool,
}

impl Rarity {
    /// `pieces` pieces, none held by any neighbour yet.
    pub fn new(pieces: u32) -> Rarity {
        Rarity::with_order(pieces, pieces > UNSORTED_UP_TO)
    }

    fn with_order(pieces: u32, sorted: bool) -> Rarity {
        let all = if sorted { pieces } else { 0 };
        Rarity {
            count: vec![0; pieces as usize],
            order: (0..all).collect(),
            at: (0..all).collect(),
            start: vec![0, all],
            sorted,
        }
    }

    /// Neighbours that have piece `index`.
    pub fn count(&self, index: u32) -> u32 {
        self.count[index as usize]
    }

    /// Whether piece `index` was [retired](Rarity::retire).
    fn retired(&self, index: u32) -> bool {
        self.at[index as usize] >= *self.start.last().expect("never empty")
    }

    /// Whether `index`'s place in the order must be kept: a sorted one we
    /// lack.
    fn placed(&self, index: u32) -> bool {
        self.sorted && !self.retired(index)
    }

    fn swap(&mut self, a: u32, b: u32) {
        let (pa, pb) = (self.order[a as usize], self.order[b as usize]);
        self.order.swap(a as usize, b as usize);
        self.at[pa as usize] = b;
        self.at[pb as usize] = a;
    }

    /// One more neighbour has piece `index`: it moves to the end of its
    /// bucket, which then ends one sooner.
    pub fn add(&mut self, index: u32) {
        let c = self.count[index as usize] as usize;
        if !self.placed(index) {
            self.count[index as usize] += 1;
            return;
        }
        if c + 2 == self.start.len() {
            self.start.push(*self.start.last().expect("never empty"));
        }
        let last = self.start[c + 1] - 1;
        self.swap(self.at[index as usize], last);
        self.start[c + 1] -= 1;
        self.count[index as usize] += 1;
    }

    /// One neighbour fewer has piece `index` (it left): it moves to the
    /// start of its bucket, which then begins one later.
    pub fn remove(&mut self, index: u32) {
        let c = self.count[index as usize] as usize;
        debug_assert!(c > 0, "piece {index} was counted for nobody");
        if !self.placed(index) {
            self.count[index as usize] -= 1;
            return;
        }
        let first = self.start[c];
        self.swap(self.at[index as usize], first);
        self.start[c] += 1;
        self.count[index as usize] -= 1;
    }

    /// We have piece `index` now: it is never picked again, and is set
    /// apart so that no pick looks at it. It moves to the end of each
    /// bucket from its own to the last, each then ending one sooner.
    pub fn retire(&mut self, index: u32) {
        if !self.placed(index) {
            return;
        }
        let mut c = self.count[index as usize] as usize;
        while c + 1 < self.start.len() {
            let last = self.start[c + 1] - 1;
            self.swap(self.at[index as usize], last);
            self.start[c + 1] -= 1;
            c += 1;
        }
    }

    /// Of the pieces in both `theirs` and `wanted`, one that the fewest
    /// neighbours have, at random among those; `None` when there is none.
    /// Buckets are looked through from the rarest: first [`DRAWS`] pieces
    /// drawn at random (a candidate found so is one of the bucket's
    /// candidates uniformly), then in turn from a random place. Past
    /// [`LOOKS`] pieces looked at in turn, one pass over the bitfields
    /// decides.
    pub fn pick(&self, theirs: &Bitfield, wanted: &Bitfield, rng: &mut impl Rng) -> Option<u32> {
        let exact =
            |rng: &mut _| crate::policy::picker::pick_rarest(theirs, wanted, &self.count, rng);
        if !self.sorted {
            return exact(rng);
        }
        let is_candidate = |i: u32| theirs.has(i) && wanted.has(i);
        let mut looks = 0;
        for c in 0..self.start.len() - 1 {
            let bucket = &self.order[self.start[c] as usize..self.start[c + 1] as usize];
            if bucket.is_empty() {
                continue;
            }
            for _ in 0..DRAWS.min(bucket.len()) {
                let i = bucket[rng.random_range(0..bucket.len())];
                if is_candidate(i) {
                    return Some(i);
                }
            }
            // The draws missed: a bucket with few candidates, if any.
            let from = rng.random_range(0..bucket.len());
            let (tail, head) = bucket.split_at(from);
            for &i in head.iter().chain(tail) {
                if is_candidate(i) {
                    return Some(i);
                }
                looks += 1;
                if looks == LOOKS {
                    return exact(rng);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::collections::BTreeMap;

    fn field(n: u32, set: impl IntoIterator<Item = u32>) -> Bitfield {
        let mut b = Bitfield::empty(n);
        for i in set {
            b.set(i, true);
        }
        b
    }

    /// The order is the counts sorted and the buckets where they change.
    fn check(r: &Rarity) {
        let n = r.count.len();
        for (p, &i) in r.order.iter().enumerate() {
            assert_eq!(r.at[i as usize] as usize, p);
        }
        for c in 0..r.start.len() - 1 {
            for p in r.start[c]..r.start[c + 1] {
                assert_eq!(r.count[r.order[p as usize] as usize] as usize, c);
            }
        }
        assert!(*r.start.last().unwrap() as usize <= n);
        assert_eq!(r.start[0], 0);
    }

    #[test]
    fn counts_stay_sorted_through_any_adds_removes_and_retirements() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut r = Rarity::with_order(50, true);
        let mut shadow = [0u32; 50];
        let mut had = [false; 50];
        for step in 0..5_000 {
            let i = rng.random_range(0..50u32);
            if step % 97 == 0 {
                r.retire(i);
                had[i as usize] = true;
            } else if shadow[i as usize] > 0 && rng.random_bool(0.45) {
                r.remove(i);
                shadow[i as usize] -= 1;
            } else {
                r.add(i);
                shadow[i as usize] += 1;
            }
            assert_eq!(r.count(i), shadow[i as usize]);
            check(&r);
        }
        let live = *r.start.last().unwrap() as usize;
        assert_eq!(live, had.iter().filter(|&&h| !h).count());
        for (i, &h) in had.iter().enumerate() {
            assert_eq!(r.retired(i as u32), h, "piece {i}");
        }
    }

    #[test]
    fn a_piece_we_have_is_never_picked() {
        let mut rng = StdRng::seed_from_u64(5);
        let n = 100;
        let mut r = Rarity::with_order(n, true);
        for i in 0..n {
            (0..1 + i % 3).for_each(|_| r.add(i));
        }
        let all = Bitfield::full(n);
        let rarest: Vec<u32> = (0..n).filter(|i| i % 3 == 0).collect();
        for &i in &rarest {
            r.retire(i);
        }
        r.retire(rarest[0]); // twice changes nothing
        check(&r);
        for _ in 0..200 {
            let i = r.pick(&all, &all, &mut rng).unwrap();
            assert_eq!(i % 3, 1, "{i}: the rarest left");
        }
        r.add(rarest[1]);
        r.remove(rarest[2]);
        assert_eq!((r.count(rarest[1]), r.count(rarest[2])), (2, 0));
        check(&r);
    }

    /// The pick agrees with one pass over every piece: the least count
    /// among the candidates, every tie now and then.
    #[test]
    fn picks_the_rarest_candidate_and_every_tie() {
        let mut rng = StdRng::seed_from_u64(9);
        let n = 2_000;
        for round in 0..40 {
            let mut r = Rarity::with_order(n, true);
            for i in 0..n {
                for _ in 0..(i * 7 + round) % 5 {
                    r.add(i);
                }
            }
            let theirs = field(n, (0..n).filter(|i| (i + round) % 3 != 0));
            let wanted = field(n, (0..n).filter(|i| (i * 13 + round) % 4 != 0));
            let least = (0..n)
                .filter(|&i| theirs.has(i) && wanted.has(i))
                .map(|i| r.count(i))
                .min();
            let mut seen = BTreeMap::new();
            for _ in 0..400 {
                let i = r.pick(&theirs, &wanted, &mut rng).unwrap();
                assert!(theirs.has(i) && wanted.has(i));
                assert_eq!(Some(r.count(i)), least);
                *seen.entry(i).or_insert(0) += 1;
            }
            assert!(seen.len() > 50, "ties should vary: {}", seen.len());
        }
    }

    #[test]
    fn a_few_pieces_are_picked_by_one_pass_the_same_way() {
        let mut rng = StdRng::seed_from_u64(2);
        let n = 300;
        let (mut plain, mut sorted) = (Rarity::new(n), Rarity::with_order(n, true));
        assert!(!plain.sorted);
        for i in 0..n {
            for r in [&mut plain, &mut sorted] {
                (0..i % 4 + 1).for_each(|_| r.add(i));
                if i % 4 == 0 {
                    r.retire(i);
                }
            }
        }
        let theirs = Bitfield::full(n);
        let wanted = field(n, (0..n).filter(|i| i % 4 != 0));
        for _ in 0..50 {
            let (a, b) = (
                plain.pick(&theirs, &wanted, &mut rng).unwrap(),
                sorted.pick(&theirs, &wanted, &mut rng).unwrap(),
            );
            assert_eq!((a % 4, b % 4), (1, 1), "{a} {b}");
        }
        assert!(Rarity::new(UNSORTED_UP_TO + 1).sorted);
    }

    #[test]
    fn few_candidates_among_many_rare_pieces_fall_back_to_the_exact_pass() {
        let mut rng = StdRng::seed_from_u64(1);
        let n = 10_000;
        let mut r = Rarity::with_order(n, true);
        // Pieces 0..9,000 nobody has; the rest one or two neighbours have.
        for i in 9_000..n {
            r.add(i);
            if i % 2 == 0 {
                r.add(i);
            }
        }
        let theirs = field(n, 9_000..n);
        let wanted = field(n, [9_998, 9_999, 9_500]);
        for _ in 0..20 {
            let i = r.pick(&theirs, &wanted, &mut rng).unwrap();
            assert!(i == 9_999, "{i}"); // the only candidate held by one
        }
        assert_eq!(r.pick(&theirs, &field(n, [5]), &mut rng), None);
        assert_eq!(r.pick(&Bitfield::empty(n), &wanted, &mut rng), None);
    }
}
