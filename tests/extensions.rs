//! The pipelining extension: on between p2pft peers, off with `--strict` and
//! with plain peers, and never costing a plain peer its connection, even one
//! that hangs up on any non-zero reserved byte.

mod common;
use common::{Spec, Swarm, PEER_PROCESS};
use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);

fn ours(strict: bool) -> Command {
    let mut cmd = Command::new(PEER_PROCESS);
    cmd.env("P2PFT_LOG", "info");
    if strict {
        cmd.arg("--strict");
    }
    cmd
}

/// Which neighbours `id` said it pipelines with, and which not.
fn pipelining(swarm: &Swarm, id: u32) -> (Vec<u32>, Vec<u32>) {
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for line in swarm.stderr_text(id).lines() {
        let Some(rest) = line.split(": connected to ").nth(1) else {
            continue;
        };
        let (peer, state) = rest.split_once(", pipelining ").unwrap();
        let peer: u32 = peer.parse().unwrap();
        if state == "on" {
            on.push(peer);
        } else {
            off.push(peer);
        }
    }
    on.sort_unstable();
    off.sort_unstable();
    (on, off)
}

#[test]
fn pipelined_and_strict_peers_in_one_swarm() {
    let mut swarm = Swarm::new(Spec::new(6, 3 << 20, 16 * 1024));
    let strict = [1002, 1005];
    for id in swarm.ids.clone() {
        swarm.start_with(ours(strict.contains(&id)), id);
        std::thread::sleep(Duration::from_millis(20));
    }
    swarm.finish_and_check(LIMIT);
    for id in swarm.ids.clone() {
        let (on, off) = pipelining(&swarm, id);
        let expect_on: Vec<u32> = if strict.contains(&id) {
            vec![]
        } else {
            swarm
                .ids
                .iter()
                .copied()
                .filter(|&x| x != id && !strict.contains(&x))
                .collect()
        };
        assert_eq!(on, expect_on, "peer {id} pipelines with");
        assert_eq!(on.len() + off.len(), 5, "peer {id}: one connection each");
    }
}

#[test]
fn a_plain_peer_that_hangs_up_on_reserved_bytes_still_completes() {
    // 1003 runs tests/spec_peer.py, closing on any non-zero reserved byte.
    // It dials 1001 and 1002 (ours) and is dialled by 1004 and 1005 (ours,
    // which offer the extension first and must fall back without it).
    let mut swarm = Swarm::new(Spec::new(5, 1 << 20, 8 * 1024));
    for id in swarm.ids.clone() {
        if id == 1003 {
            swarm.start_spec_peer(id, &[("SPEC_PEER_STRICT_RESERVED", "1")]);
        } else {
            swarm.start_with(ours(false), id);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    swarm.finish_and_check(LIMIT);
    for id in [1001, 1002, 1004, 1005] {
        let (on, off) = pipelining(&swarm, id);
        assert!(
            off.contains(&1003) && !on.contains(&1003),
            "peer {id}: on {on:?} off {off:?}"
        );
        assert_eq!(
            on.len(),
            3,
            "peer {id} pipelines with the other p2pft peers: {on:?}"
        );
    }
}

#[test]
fn strict_peers_begin_choking_once_every_neighbour_has_spoken_not_at_the_first_tick() {
    // With p = m = 600 s a strict seed that waited for its first tick would
    // unchoke nobody for ten minutes; SPEC.md fixes the period of the rounds,
    // not their phase, so the first round comes as soon as every neighbour
    // is connected and has said whether it is interested.
    let mut spec = Spec::new(4, 1 << 20, 16 * 1024);
    spec.k = 3;
    spec.p = "600";
    spec.m = "600";
    let mut swarm = Swarm::new(spec);
    for id in swarm.ids.clone() {
        swarm.start_with(ours(true), id);
        std::thread::sleep(Duration::from_millis(20));
    }
    swarm.finish_and_check(LIMIT);
    let text = std::fs::read_to_string(swarm.log_of(1001)).unwrap();
    let seed = common::LogCheck::parse(1001, &text, swarm.spec.num_pieces(), false);
    assert_eq!(
        seed.preferred,
        [vec![1002, 1003, 1004]],
        "one round, all three"
    );
    assert!(
        seed.optimistic.is_empty(),
        "nobody left to unchoke optimistically"
    );
}

/// A fake leecher on a raw socket, `as_id`, that has handshaken with the
/// seed (1001) and read its bitfield.
fn fake_leecher(swarm: &Swarm, as_id: u32) -> std::net::TcpStream {
    use p2pft::protocol::wire::{encode_handshake, encode_to_vec, Message};
    use std::io::{Read, Write};
    let mut s = swarm.connect(1001);
    s.write_all(&encode_handshake(as_id)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut theirs = [0u8; 32];
    s.read_exact(&mut theirs).unwrap();
    let full = p2pft::protocol::bitfield::Bitfield::full(swarm.spec.num_pieces());
    let mut bitfield = vec![0u8; encode_to_vec(&Message::Bitfield(full)).len()];
    s.read_exact(&mut bitfield).unwrap();
    s
}

/// A fake leecher (see [`fake_leecher`]) that has said it is interested.
fn interested(swarm: &Swarm, as_id: u32) -> std::net::TcpStream {
    let mut s = fake_leecher(swarm, as_id);
    send(&mut s, p2pft::protocol::wire::Message::Interested);
    s
}

fn send(s: &mut std::net::TcpStream, message: p2pft::protocol::wire::Message) {
    use std::io::Write;
    s.write_all(&p2pft::protocol::wire::encode_to_vec(&message))
        .unwrap();
}

/// The type of the next message on `s` within `wait`, if one comes.
fn next_kind(s: &mut std::net::TcpStream, wait: Duration) -> Option<u8> {
    use std::io::Read;
    s.set_read_timeout(Some(wait)).unwrap();
    let mut header = [0u8; 5];
    match s.read_exact(&mut header) {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            return None
        }
        Err(e) => panic!("{e}"),
    }
    let len = u32::from_be_bytes(header[..4].try_into().unwrap()) as usize;
    let mut rest = vec![0u8; len - 1];
    s.read_exact(&mut rest).unwrap();
    Some(header[4])
}

/// Outside strict mode, a neighbour that gives up interest, or its
/// connection, gives up its upload slot at once to an interested neighbour
/// left choked, not at the next round (here never: p = m = 600 s).
#[test]
fn a_slot_given_up_goes_at_once_to_a_neighbour_left_waiting() {
    use p2pft::protocol::wire::Message;
    const UNCHOKE: u8 = 1;
    const CHOKE: u8 = 0;
    let mut spec = Spec::new(5, 1 << 20, 16 * 1024);
    spec.k = 1;
    spec.p = "600";
    spec.m = "600";
    let mut swarm = Swarm::new(spec);
    swarm.reconnects_allowed = true;
    swarm.start(1001);
    let wait = Duration::from_secs(10);
    // One at a time, so that the seed hears them in this order.
    let [mut s2, s3] =
        [(1002, "the preferred slot"), (1003, "the optimistic slot")].map(|(id, slot)| {
            let mut s = interested(&swarm, id);
            assert_eq!(next_kind(&mut s, wait), Some(UNCHOKE), "{slot}");
            s
        });
    let mut s4 = interested(&swarm, 1004);
    let short = Duration::from_millis(300);
    assert_eq!(next_kind(&mut s4, short), None, "no slot is free");
    send(&mut s2, Message::NotInterested);
    assert_eq!(
        next_kind(&mut s2, wait),
        Some(CHOKE),
        "1002 gives its slot up"
    );
    assert_eq!(next_kind(&mut s4, wait), Some(UNCHOKE), "and 1004 gets it");
    let mut s5 = interested(&swarm, 1005);
    assert_eq!(next_kind(&mut s5, short), None, "no slot is free");
    drop(s3);
    assert_eq!(
        next_kind(&mut s5, wait),
        Some(UNCHOKE),
        "1003's slot, as it left"
    );
    swarm.kill_all();
}
