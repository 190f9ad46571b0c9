//! Who we upload to: the choking policy of SPEC.md section 4, as pure functions.
//!
//! Inputs are plain facts (who is interested, how many bytes each sent us in
//! the last interval, or took from us where the machine says so, who is
//! unchoked now) and an RNG; outputs are decisions.
//! The engine applies them. Never sends, logs or reads a clock.

use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;
use std::collections::BTreeSet;

/// What the policy needs to know about one neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NeighbourStats {
    pub id: u32,
    /// The neighbour told us it is interested in our pieces.
    pub interested: bool,
    /// Piece bytes it sent us during the interval that just ended (SPEC.md;
    /// outside strict mode, for a p2pft neighbour on another host, those we
    /// sent it: see `Machine::stats`).
    pub bytes: u64,
}

/// The preferred neighbours: at most `k` interested ones, those that sent us the
/// most bytes in the last interval with ties broken at random, or `k` at random
/// when we have the complete file (there is nothing to download, so rates say
/// nothing). Returned sorted by id.
pub(crate) fn select_preferred(
    neighbours: &[NeighbourStats],
    k: usize,
    have_complete_file: bool,
    rng: &mut impl Rng,
) -> Vec<u32> {
    let mut interested: Vec<NeighbourStats> = neighbours
        .iter()
        .copied()
        .filter(|n| n.interested)
        .collect();
    // Shuffle first, then a stable sort: equal rates keep their random order.
    interested.shuffle(rng);
    if !have_complete_file {
        interested.sort_by_key(|n| std::cmp::Reverse(n.bytes));
    }
    let mut chosen: Vec<u32> = interested.iter().take(k).map(|n| n.id).collect();
    chosen.sort_unstable();
    chosen
}

/// The optimistic neighbour: one chosen at random among the interested
/// neighbours that are choked now (not preferred, not the current optimistic
/// one). When there is no such neighbour, the current one stays if it is still
/// interested and not preferred; otherwise there is none.
pub(crate) fn select_optimistic(
    neighbours: &[NeighbourStats],
    preferred: &[u32],
    current: Option<u32>,
    rng: &mut impl Rng,
) -> Option<u32> {
    let eligible = |n: &&NeighbourStats| n.interested && !preferred.contains(&n.id);
    let choked: Vec<u32> = neighbours
        .iter()
        .filter(eligible)
        .map(|n| n.id)
        .filter(|&id| Some(id) != current)
        .collect();
    if let Some(&id) = choked.choose(rng) {
        return Some(id);
    }
    current.filter(|id| neighbours.iter().filter(eligible).any(|n| n.id == *id))
}

/// Messages that move the unchoked set from `unchoked_now` to `preferred`
/// plus `optimistic`: who gets `unchoke` (newly unchoked only) and who gets
/// `choke` (unchoked before, neither preferred nor optimistic now).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ChokePlan {
    pub unchoke: Vec<u32>,
    pub choke: Vec<u32>,
}

pub(crate) fn plan(
    unchoked_now: &BTreeSet<u32>,
    preferred: &[u32],
    optimistic: Option<u32>,
) -> ChokePlan {
    let target: BTreeSet<u32> = preferred.iter().copied().chain(optimistic).collect();
    ChokePlan {
        unchoke: target.difference(unchoked_now).copied().collect(),
        choke: unchoked_now.difference(&target).copied().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::collections::BTreeMap;

    fn n(id: u32, interested: bool, bytes: u64) -> NeighbourStats {
        NeighbourStats {
            id,
            interested,
            bytes,
        }
    }

    #[test]
    fn the_fastest_interested_neighbours_are_preferred() {
        let ns = [
            n(1, true, 10),
            n(2, true, 500),
            n(3, false, 9000),
            n(4, true, 300),
            n(5, true, 0),
        ];
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(select_preferred(&ns, 2, false, &mut rng), vec![2, 4]);
        assert_eq!(select_preferred(&ns, 10, false, &mut rng), vec![1, 2, 4, 5]);
    }

    #[test]
    fn ties_are_broken_at_random() {
        // 2 is fastest; 1, 3, 4 tie for the second slot.
        let ns = [n(1, true, 7), n(2, true, 99), n(3, true, 7), n(4, true, 7)];
        let mut rng = StdRng::seed_from_u64(11);
        let mut second = BTreeMap::new();
        for _ in 0..300 {
            let chosen = select_preferred(&ns, 2, false, &mut rng);
            assert!(chosen.contains(&2), "{chosen:?}");
            let other = chosen.into_iter().find(|&id| id != 2).unwrap();
            *second.entry(other).or_insert(0) += 1;
        }
        assert_eq!(second.keys().copied().collect::<Vec<_>>(), vec![1, 3, 4]);
        assert!(second.values().all(|&c| c > 50), "{second:?}");
    }

    #[test]
    fn a_complete_peer_chooses_at_random_ignoring_rates() {
        let ns = [
            n(1, true, 1_000_000),
            n(2, true, 0),
            n(3, true, 0),
            n(4, false, 0),
        ];
        let mut rng = StdRng::seed_from_u64(5);
        let mut picked = BTreeMap::new();
        for _ in 0..300 {
            for id in select_preferred(&ns, 1, true, &mut rng) {
                *picked.entry(id).or_insert(0) += 1;
            }
        }
        assert_eq!(picked.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(picked.values().all(|&c| c > 60), "{picked:?}");
    }

    #[test]
    fn nobody_interested_means_nobody_preferred() {
        let ns = [n(1, false, 5), n(2, false, 6)];
        let mut rng = StdRng::seed_from_u64(0);
        assert!(select_preferred(&ns, 3, false, &mut rng).is_empty());
        assert!(select_preferred(&[], 3, true, &mut rng).is_empty());
    }

    #[test]
    fn optimistic_is_only_among_choked_and_interested() {
        let ns = [
            n(1, true, 0),
            n(2, true, 0),
            n(3, false, 0),
            n(4, true, 0),
            n(5, true, 0),
        ];
        let preferred = [1, 2];
        let mut rng = StdRng::seed_from_u64(9);
        let mut picked = BTreeMap::new();
        for _ in 0..300 {
            let o = select_optimistic(&ns, &preferred, Some(5), &mut rng).unwrap();
            *picked.entry(o).or_insert(0) += 1;
        }
        // 1, 2 are preferred, 3 is not interested, 5 is unchoked already.
        assert_eq!(picked.keys().copied().collect::<Vec<_>>(), vec![4]);
    }

    #[test]
    fn optimistic_is_spread_over_candidates() {
        let ns = [n(1, true, 0), n(2, true, 0), n(3, true, 0)];
        let mut rng = StdRng::seed_from_u64(1);
        let mut picked = BTreeMap::new();
        for _ in 0..300 {
            *picked
                .entry(select_optimistic(&ns, &[], None, &mut rng).unwrap())
                .or_insert(0) += 1;
        }
        assert_eq!(picked.len(), 3, "{picked:?}");
    }

    #[test]
    fn optimistic_stays_when_no_one_else_qualifies_and_goes_when_it_loses_interest() {
        let mut rng = StdRng::seed_from_u64(0);
        let ns = [n(1, true, 0), n(2, true, 0)];
        assert_eq!(select_optimistic(&ns, &[1], Some(2), &mut rng), Some(2));
        let ns = [n(1, true, 0), n(2, false, 0)];
        assert_eq!(select_optimistic(&ns, &[1], Some(2), &mut rng), None);
        // Promoted to preferred: no longer the optimistic one.
        let ns = [n(1, true, 0), n(2, true, 0)];
        assert_eq!(select_optimistic(&ns, &[1, 2], Some(2), &mut rng), None);
    }

    #[test]
    fn plan_sends_unchoke_only_to_new_and_choke_only_to_dropped() {
        let now: BTreeSet<u32> = [1, 2, 9].into_iter().collect();
        let p = plan(&now, &[2, 3], Some(4));
        assert_eq!(p.unchoke, vec![3, 4]);
        assert_eq!(p.choke, vec![1, 9]);
        let p = plan(&now, &[1, 2], Some(9));
        assert_eq!(p, ChokePlan::default());
    }
}
