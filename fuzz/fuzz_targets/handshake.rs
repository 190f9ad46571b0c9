//! The handshake decoder ([`p2pft::protocol::wire::decode_handshake`]) and the reading
//! of its reserved bytes, over any 32 bytes and any set of accepted IDs (from
//! the bytes after them).
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pft::protocol::wire::{self, HANDSHAKE_LEN};

fuzz_target!(|data: &[u8]| {
    let Some((bytes, rest)) = data.split_first_chunk::<HANDSHAKE_LEN>() else {
        return;
    };
    let accepted: Vec<u32> = rest
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
        .collect();
    let accept = |id: u32| accepted.contains(&id);
    let reserved = wire::handshake_reserved(bytes);
    let _ = wire::offers_pipelining(&reserved);
    match wire::decode_handshake(bytes, accept) {
        Ok(id) => {
            assert!(accept(id));
            assert_eq!(&bytes[..18], wire::HANDSHAKE_HEADER);
            // Read as binary, it is exactly what the sender encoded.
            if bytes[28..] == id.to_be_bytes() {
                assert_eq!(&wire::encode_handshake_with(id, reserved), bytes);
            }
        }
        Err(wire::WireError::BadHandshakeHeader) => {
            assert_ne!(&bytes[..18], wire::HANDSHAKE_HEADER)
        }
        Err(wire::WireError::UnexpectedPeer(id)) => {
            assert_eq!(id.to_be_bytes(), bytes[28..]);
            assert!(!accept(id));
        }
        Err(other) => panic!("a handshake cannot fail with {other:?}"),
    }
});
