//! Real swarms of `peerProcess` binaries over loopback, checked end to end:
//! files byte for byte, exit codes, and every spec log line.

mod common;
use common::{Spec, Swarm};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(90);

#[test]
fn six_peers_one_seed() {
    let mut swarm = Swarm::new(Spec::new(6, 1 << 20, 16 * 1024));
    swarm.run_and_check(LIMIT);
}

#[test]
fn two_seeds_one_of_them_in_the_middle() {
    let mut spec = Spec::new(5, 600 * 1024, 16 * 1024);
    spec.seeds[2] = true;
    // No metadata: the peers work exactly as SPEC.md alone says.
    Swarm::without_meta(spec).run_and_check(LIMIT);
}

#[test]
fn file_size_not_a_multiple_of_the_piece_size() {
    // 43 pieces, the last one 6,001 bytes.
    Swarm::new(Spec::new(4, 42 * 7_000 + 6_001, 7_000)).run_and_check(LIMIT);
}

#[test]
fn one_piece_file() {
    Swarm::new(Spec::new(3, 1_000, 4_096)).run_and_check(LIMIT);
}

#[test]
fn k_larger_than_the_number_of_neighbours() {
    let mut spec = Spec::new(4, 256 * 1024, 8 * 1024);
    spec.k = 10;
    Swarm::new(spec).run_and_check(LIMIT);
}

#[test]
fn eight_peers_with_slow_intervals_still_use_the_optimistic_slot() {
    // k = 1 and a long preferred interval: optimistic unchoking must show up.
    let mut spec = Spec::new(8, 2 << 20, 16 * 1024);
    spec.k = 1;
    spec.p = "0.5";
    spec.m = "0.1";
    let mut swarm = Swarm::new(spec);
    swarm.run_and_check(LIMIT);
    let seed_log = std::fs::read_to_string(swarm.log_of(1001)).unwrap();
    assert!(
        seed_log.contains("has the optimistically unchoked neighbor"),
        "no optimistic line in the seed's log"
    );
}

#[test]
fn choke_churn_mid_transfer_loses_no_piece() {
    // 4,096 pieces of 512 bytes and intervals of tens of milliseconds: chokes
    // land between requests and answers, and freed requests go elsewhere.
    let mut spec = Spec::new(6, 4096 * 512 - 100, 512);
    spec.k = 1;
    spec.p = "0.03";
    spec.m = "0.05";
    let mut swarm = Swarm::new(spec);
    swarm.run_and_check(LIMIT);
    let chokes: usize = swarm
        .ids
        .iter()
        .map(|&id| {
            let log = std::fs::read_to_string(swarm.log_of(id)).unwrap();
            log.matches("is choked by").count()
        })
        .sum();
    assert!(
        chokes > 0,
        "the run ended before any choke: the test did not test churn"
    );
}

#[test]
fn a_bitfield_larger_than_a_piece() {
    // Regression: 8,192 pieces of 256 bytes need a 1,024-byte bitfield, four
    // times a piece; it was refused as an oversized frame and nothing moved.
    Swarm::new(Spec::new(4, 8192 * 256, 256)).run_and_check(LIMIT);
}
