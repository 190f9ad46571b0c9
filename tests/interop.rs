//! p2pft peers and an independent peer that knows only SPEC.md
//! (`tests/spec_peer.py`) in one swarm: everyone finishes with the seed's
//! file, every process exits 0, and every log (theirs too) is well-formed.

mod common;
use common::{Spec, Swarm};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);

/// Starts peers in file order; `spec_peers` lists positions run by the Python peer.
fn run_mixed(spec: Spec, spec_peers: &[usize], env: &[(&str, &str)], meta: bool) {
    let mut swarm = if meta {
        Swarm::new(spec)
    } else {
        Swarm::without_meta(spec)
    };
    for (pos, id) in swarm.ids.clone().into_iter().enumerate() {
        if spec_peers.contains(&pos) {
            swarm.start_spec_peer(id, env);
        } else {
            swarm.start(id);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    swarm.finish_and_check(LIMIT);
}

#[test]
fn spec_peers_as_leechers_among_ours() {
    run_mixed(Spec::new(5, 400_003, 8_192), &[1, 3], &[], true);
}

#[test]
fn a_spec_peer_as_the_only_seed() {
    run_mixed(Spec::new(4, 300_000, 16_384), &[0], &[], false);
}

#[test]
fn a_spec_peer_with_an_ascii_handshake() {
    run_mixed(
        Spec::new(4, 200_000, 10_000),
        &[0, 2],
        &[("SPEC_PEER_ASCII", "1")],
        true,
    );
}

/// Pieces large enough for direct I/O (and a short, unaligned last piece):
/// our leechers write them past the page cache and serve them back with
/// direct reads, to the spec peer as well as to each other.
#[test]
fn spec_peers_among_ours_with_direct_io_pieces() {
    run_mixed(Spec::new(5, 40 * 131_072 + 1_234, 131_072), &[2], &[], true);
}
