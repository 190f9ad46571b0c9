//! The `Common.cfg` parser ([`p2pft::protocol::config::CommonConfig::parse`]) over any
//! text (bytes that are not UTF-8 are refused before it, as on load).
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pft::protocol::config::CommonConfig;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((c, _warnings)) = CommonConfig::parse(Path::new("Common.cfg"), text) {
        assert!(c.preferred_neighbors >= 1);
        // "A positive number of seconds": a timer of zero would spin.
        assert!(!c.unchoking_interval.is_zero());
        assert!(!c.optimistic_unchoking_interval.is_zero());
        assert_eq!(c.layout.file_size_bytes(), c.file_size_bytes);
        assert_eq!(c.layout.piece_size_bytes(), c.piece_size_bytes);
        assert!((1..=64).contains(&c.pipeline_depth));
        assert!(!c.file_name.contains('/') && !c.file_name.contains(".."));
    }
});
