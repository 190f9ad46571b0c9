//! A running peer meets sockets that do not follow the protocol: it drops
//! each such connection, keeps running, and the swarm still finishes.

mod common;
use common::{Spec, Swarm};
use p2pft::protocol::wire::{encode_handshake, encode_to_vec, Message};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// True when the other side closes `s` within a few seconds.
fn closed_by_peer(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
}

/// Handshakes with the seed (1001) as `as_id` using `handshake` bytes and
/// checks what the seed sends first: its exact handshake, then a full bitfield.
fn handshake_as(swarm: &Swarm, handshake: &[u8; 32]) -> TcpStream {
    let mut s = swarm.connect(1001);
    s.write_all(handshake).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut theirs = [0u8; 32];
    s.read_exact(&mut theirs).unwrap();
    assert_eq!(theirs, encode_handshake(1001), "the seed's handshake");
    let n = swarm.spec.num_pieces();
    let expected = encode_to_vec(&Message::Bitfield(
        p2pft::protocol::bitfield::Bitfield::full(n),
    ));
    let mut bitfield = vec![0u8; expected.len()];
    s.read_exact(&mut bitfield).unwrap();
    assert_eq!(bitfield, expected, "the seed's bitfield");
    s
}

#[test]
fn garbage_and_bad_handshakes_are_dropped_and_the_swarm_finishes() {
    let mut spec = Spec::new(4, 300 * 1024, 16 * 1024);
    spec.seeds[0] = true;
    let mut swarm = Swarm::new(spec);
    swarm.reconnects_allowed = true;
    swarm.start(1001);

    // Plain garbage.
    let mut s = swarm.connect(1001);
    s.write_all(&[0xde; 64]).unwrap();
    assert!(closed_by_peer(&mut s), "garbage connection not dropped");

    // A handshake with the wrong header.
    let mut s = swarm.connect(1001);
    let mut bad = encode_handshake(1002);
    bad[..4].copy_from_slice(b"HTTP");
    s.write_all(&bad).unwrap();
    assert!(closed_by_peer(&mut s), "wrong header not dropped");

    // IDs the seed must not accept: itself, and one not in PeerInfo.cfg.
    for id in [1001, 4242] {
        let mut s = swarm.connect(1001);
        s.write_all(&encode_handshake(id)).unwrap();
        assert!(closed_by_peer(&mut s), "handshake as {id} not dropped");
    }

    // Real IDs, then frames that break the rules.
    let mut s = handshake_as(&swarm, &encode_handshake(1003));
    s.write_all(&[0, 0, 0, 1, 9]).unwrap(); // unknown type
    assert!(closed_by_peer(&mut s), "unknown type not dropped");

    let mut s = handshake_as(&swarm, &encode_handshake(1004));
    s.write_all(&[0x7f, 0xff, 0xff, 0xff, 7]).unwrap(); // 2 GiB piece
    assert!(closed_by_peer(&mut s), "oversized frame not dropped");

    let mut s = handshake_as(&swarm, &encode_handshake(1002));
    s.write_all(&encode_to_vec(&Message::Have(99_999))).unwrap(); // index out of range
    assert!(closed_by_peer(&mut s), "out-of-range index not dropped");

    // Lenient reading: ASCII zero padding and an ASCII ID are accepted. A
    // request while choked is ignored, not answered and not fatal.
    let mut s = handshake_as(&swarm, b"P2PFILESHARINGPROJ00000000001002");
    s.write_all(&encode_to_vec(&Message::Request(0))).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("a choked request was answered or closed the connection: {other:?}"),
    }
    drop(s);

    // A silent client must not block the real peers' handshakes.
    let _silent = swarm.connect(1001);

    for id in [1002, 1003, 1004] {
        swarm.start(id);
    }
    let statuses = swarm.wait_all(Duration::from_secs(90));
    for (id, status) in &statuses {
        assert!(status.success(), "peer {id} exited with {status}");
    }
    swarm.check_files();
    swarm.check_logs();
}

/// A neighbour that keeps requesting but never reads fills the queue of
/// messages to it; at the queue's limit (a `have` of every piece plus a
/// few) it is dropped, so memory stays bounded, and the swarm goes on.
#[test]
fn a_neighbour_that_requests_but_never_reads_is_dropped() {
    let mut spec = Spec::new(2, 64 * 16 * 1024, 16 * 1024);
    spec.seeds[0] = true;
    let mut swarm = Swarm::new(spec);
    swarm.reconnects_allowed = true;
    swarm.start(1001);
    let mut s = handshake_as(&swarm, &encode_handshake(1002));
    s.write_all(&encode_to_vec(&Message::Interested)).unwrap();
    let mut unchoke = [0u8; 5];
    s.read_exact(&mut unchoke).unwrap();
    assert_eq!(
        unchoke[..],
        encode_to_vec(&Message::Unchoke)[..],
        "a free slot"
    );
    // 2,000 requests (32 MiB of pieces) without reading a byte: far more
    // than the socket buffers and 64 + 64 queued messages hold.
    let requests: Vec<u8> = (0..2000u32)
        .flat_map(|i| encode_to_vec(&Message::Request(i % 64)))
        .collect();
    s.write_all(&requests).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert!(closed_by_peer(&mut s), "a neighbour not reading was kept");
    // The seed kept running: the real 1002 still gets the file.
    swarm.start(1002);
    let statuses = swarm.wait_all(Duration::from_secs(60));
    for (id, status) in &statuses {
        assert!(status.success(), "peer {id} exited with {status}");
    }
    swarm.check_files();
}

#[test]
fn a_seed_with_another_file_size_is_named_as_such_and_not_dialled_again() {
    // 1001 is a socket here that answers 1002's handshake with a bitfield
    // one byte short, as a seed with a smaller FileSize would.
    let mut swarm = Swarm::new(Spec::new(2, 300 * 1024, 16 * 1024));
    let listener = std::net::TcpListener::bind(swarm.addr(1001)).unwrap();
    swarm.start(1002);
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut theirs = [0u8; 32];
    s.read_exact(&mut theirs).unwrap();
    s.write_all(&encode_handshake(1001)).unwrap();
    let n = swarm.spec.num_pieces(); // 19 pieces: 3 bytes of bitfield
    let mut short = encode_to_vec(&Message::Bitfield(
        p2pft::protocol::bitfield::Bitfield::full(n),
    ));
    short.pop();
    short[3] -= 1; // the frame's length
    s.write_all(&short).unwrap();
    assert!(closed_by_peer(&mut s), "a short bitfield was not dropped");
    // It would break the protocol again: no second dial (a redial would
    // come within 50 ms).
    listener.set_nonblocking(true).unwrap();
    let until = std::time::Instant::now() + Duration::from_millis(1500);
    while std::time::Instant::now() < until {
        match listener.accept() {
            Ok(_) => panic!("1002 dialled the broken seed again"),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("{e}"),
        }
    }
    swarm.kill_all();
    let stderr = swarm.stderr_text(1002);
    assert!(
        stderr.contains(
            "bitfield frame of length 3, expected 4 (is its Common.cfg's FileSize or PieceSize another?)"
        ),
        "{stderr}"
    );
}

#[test]
fn a_peer_that_ends_reads_on_until_its_neighbour_closes_so_nothing_is_reset() {
    // The seed ends as soon as 1002 (a socket here) says it has every
    // piece. 1002 goes on sending for a while: a peer that closed its
    // socket with those bytes unread would reset the connection, and a
    // reset throws away what it had not sent yet (its last haves, its
    // goodbye), which on a capped link can be a lot.
    let mut spec = Spec::new(2, 300 * 1024, 16 * 1024);
    spec.seeds[0] = true;
    let mut swarm = Swarm::new(spec);
    swarm.start(1001);
    let mut s = handshake_as(&swarm, &encode_handshake(1002));
    let n = swarm.spec.num_pieces();
    s.write_all(&encode_to_vec(&Message::Bitfield(
        p2pft::protocol::bitfield::Bitfield::full(n),
    )))
    .unwrap();
    // Meanwhile the seed ends: 'not interested' every 10 ms for 1 s.
    for _ in 0..100 {
        if s.write_all(&encode_to_vec(&Message::NotInterested))
            .is_err()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // A reset connection is no longer connected.
    if let Err(e) = s.shutdown(std::net::Shutdown::Write) {
        panic!("the seed reset the connection: {e}");
    }
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) => panic!(
            "the seed's end of the connection: {e} (after {} bytes)",
            rest.len()
        ),
    }
    let status = swarm.wait_one(1001, Duration::from_secs(20));
    assert!(status.success(), "the seed exited with {status}");
}
