//! The metadata document: [`p2pft::meta::Meta::parse`], then the checks of
//! [`p2pft::meta::Meta::verifier`] on what it accepts, over any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pft::meta::Meta;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("TheFile.dat.meta.json");
    let Ok(meta) = Meta::parse(path, data) else {
        return;
    };
    // What was read writes back to a document that reads the same.
    let again = serde_json::to_vec(&meta).expect("metadata serializes");
    assert_eq!(
        Meta::parse(path, &again).expect("written metadata reads"),
        meta
    );
    if let Ok(v) = meta.verifier(path, None) {
        assert_eq!(v.pieces.len(), v.layout.num_pieces() as usize);
        assert_eq!(v.layout.file_size_bytes(), meta.file_size_bytes);
    }
});
