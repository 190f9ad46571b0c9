//! The metadata document: [`p2pft::integrity::meta::Meta::parse`], then the checks of
//! [`p2pft::integrity::meta::Meta::verifier`] on what it accepts, over any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pft::integrity::meta::{to_hex, Meta};
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
    // Each hash read is its 40 hex digits, in either case, and nothing else.
    // (serde skips unknown fields without checking their strings' UTF-8, so
    // an accepted document need not be valid JSON throughout.)
    let doc = serde_json::from_slice::<serde_json::Value>(data);
    if let Ok(Some(serde_json::Value::Array(hashes))) = doc.as_ref().map(|d| d.get("piece_sha1")) {
        for (text, hash) in hashes.iter().zip(&meta.piece_sha1) {
            let text = text.as_str().expect("a string").to_ascii_lowercase();
            assert_eq!(text, to_hex(&hash.0));
        }
    }
    if let Ok(v) = meta.verifier(path, None) {
        assert_eq!(v.pieces.len(), v.layout.num_pieces() as usize);
        assert_eq!(v.layout.file_size_bytes(), meta.file_size_bytes);
    }
});
