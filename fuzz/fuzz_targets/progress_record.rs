//! The progress record ([`p2pft::integrity::progress::parse`]) over any bytes, judged
//! against a layout read from the input's first bytes.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((layout, record)) = common::layout(data) else {
        return;
    };
    if let Some(have) = p2pft::integrity::progress::parse(record, &layout) {
        assert_eq!(have.len(), layout.num_pieces());
        assert_eq!(have.as_wire().len(), layout.bitfield_len());
    }
});
