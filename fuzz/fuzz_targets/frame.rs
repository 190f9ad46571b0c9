//! The frame reader the reader threads run ([`p2pft::runtime::net::read_frame`]) over
//! arbitrary bytes, frame after frame until an error or the end, beside the
//! buffer decoder ([`Limits::decode_frame`]): both must say the same, take
//! the same bytes, and every decoded frame must encode back to its bytes.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use p2pft::machine::CloseReason;
use p2pft::runtime::net::read_frame;
use p2pft::support::piecebuf::BufferPool;
use p2pft::protocol::wire::{self, Limits, Message};

fuzz_target!(|data: &[u8]| {
    let Some((layout, stream)) = common::layout(data) else {
        return;
    };
    let limits = Limits::new(layout);
    let pool = BufferPool::new(0, 0);
    let mut socket = stream;
    let mut at = 0;
    loop {
        let decoded = limits.decode_frame(&stream[at..]);
        let read = read_frame(&mut socket, &limits, &pool);
        match (decoded, read) {
            (Ok(Some((message, used))), Ok(same)) => {
                assert_eq!(message, same);
                let frame = &stream[at..at + used];
                at += used;
                assert_eq!(
                    socket.len(),
                    stream.len() - at,
                    "read_frame took other bytes"
                );
                encodes_back(&message, frame, layout.num_pieces());
            }
            (Ok(None), Err(CloseReason::Eof)) => break,
            (Err(e), Err(CloseReason::Protocol(same))) => {
                assert_eq!(e, same);
                break;
            }
            other => panic!("the decoders disagree: {other:?}"),
        }
    }
});

/// `wire::encode` gives back the frame's bytes, but for a bitfield's spare
/// bits, which a reader ignores (some implementations set them) and a writer
/// always sends as zero.
fn encodes_back(message: &Message, frame: &[u8], num_pieces: u32) {
    let mut again = wire::encode_to_vec(message);
    let mut frame = frame.to_vec();
    if let (Message::Bitfield(_), spare @ 1..) = (message, (8 - num_pieces % 8) % 8) {
        let last = frame.len() - 1;
        frame[last] &= 0xff << spare;
        assert_eq!(again[last] & !(0xff << spare), 0, "spare bits set");
    }
    assert_eq!(again, frame);
    again.clear();
}
