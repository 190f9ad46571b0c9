//! The check record ([`p2pft::integrity::checked::parse`]) over any bytes, for the
//! metadata of a fixed whole-file SHA-1 and a piece size read from the
//! input's first 4 bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// The whole-file SHA-1 the seed records name.
const FILE_SHA1: &str = "0123456789abcdef0123456789abcdef01234567";

fuzz_target!(|data: &[u8]| {
    let Some((piece, record)) = data.split_first_chunk::<4>() else {
        return;
    };
    let piece_size = u32::from_be_bytes(*piece);
    let _ = p2pft::integrity::checked::parse(record, FILE_SHA1, piece_size);
});
