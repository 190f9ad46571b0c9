//! What several targets share: a file layout read from the input's first
//! bytes, so one input names both the geometry and the bytes judged by it.
#![allow(dead_code)]

use p2pft::protocol::layout::Layout;

/// Bytes of input that [`layout`] takes.
pub const LAYOUT_BYTES: usize = 6;

/// A layout from the first [`LAYOUT_BYTES`] of `data`, and the rest. Pieces
/// of 1 byte to 64 KiB and up to 65,536 of them (a bitfield up to 8 KiB), so
/// both a bitfield larger than a piece and pieces larger than a bitfield
/// occur, and no frame the layout allows is a large allocation by itself.
pub fn layout(data: &[u8]) -> Option<(Layout, &[u8])> {
    let (head, rest) = data.split_first_chunk::<LAYOUT_BYTES>()?;
    let piece = 1 + u32::from(u16::from_be_bytes([head[0], head[1]]));
    let num_pieces = 1 + u64::from(u16::from_be_bytes([head[2], head[3]]));
    let last = 1 + u64::from(u16::from_be_bytes([head[4], head[5]])) % u64::from(piece);
    let file_size = (num_pieces - 1) * u64::from(piece) + last;
    let layout = Layout::new(file_size, piece).expect("sizes in range");
    assert_eq!(u64::from(layout.num_pieces()), num_pieces);
    Some((layout, rest))
}
