//! The `PeerInfo.cfg` parser ([`p2pft::protocol::config::parse_peer_info`]) over any
//! text (bytes that are not UTF-8 are refused before it, as on load).
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pft::protocol::config::parse_peer_info;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(peers) = parse_peer_info(Path::new("PeerInfo.cfg"), text) {
        assert!(!peers.is_empty());
        for (i, p) in peers.iter().enumerate() {
            assert_ne!(p.port, 0);
            assert!(peers[..i].iter().all(|q| q.id != p.id), "duplicate ID");
        }
    }
});
