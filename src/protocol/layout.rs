//! Piece geometry: how a file of `file_size_bytes` splits into pieces.
//!
//! Owns the arithmetic of piece counts, lengths and offsets so that the wire
//! limits, the picker and the store agree on it. Must never do I/O.

/// The split of one file into fixed-size pieces; the last piece holds the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    file_size_bytes: u64,
    piece_size_bytes: u32,
    num_pieces: u32,
}

impl Layout {
    /// `None` when either size is zero or the file needs more than `u32::MAX` pieces.
    pub fn new(file_size_bytes: u64, piece_size_bytes: u32) -> Option<Layout> {
        if file_size_bytes == 0 || piece_size_bytes == 0 {
            return None;
        }
        let num_pieces = file_size_bytes.div_ceil(u64::from(piece_size_bytes));
        let num_pieces = u32::try_from(num_pieces).ok()?;
        Some(Layout {
            file_size_bytes,
            piece_size_bytes,
            num_pieces,
        })
    }

    pub fn file_size_bytes(&self) -> u64 {
        self.file_size_bytes
    }

    pub fn piece_size_bytes(&self) -> u32 {
        self.piece_size_bytes
    }

    pub fn num_pieces(&self) -> u32 {
        self.num_pieces
    }

    /// Byte offset of piece `index` in the file.
    pub(crate) fn offset(&self, index: u32) -> u64 {
        u64::from(index) * u64::from(self.piece_size_bytes)
    }

    /// Length of piece `index`; panics when `index` is out of range, which the
    /// wire decoder rules out before any index reaches here.
    pub fn piece_len(&self, index: u32) -> u32 {
        assert!(index < self.num_pieces, "piece {index} out of range");
        let rest = self.file_size_bytes - self.offset(index);
        rest.min(u64::from(self.piece_size_bytes)) as u32
    }

    /// Bytes a bitfield of this file takes on the wire.
    pub fn bitfield_len(&self) -> usize {
        (self.num_pieces as usize).div_ceil(8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_example_has_306_pieces_and_a_short_last_one() {
        let l = Layout::new(10_000_232, 32_768).unwrap();
        assert_eq!(l.num_pieces(), 306);
        assert_eq!(l.piece_len(305), 5_992);
        assert_eq!(l.piece_len(0), 32_768);
        assert_eq!(l.offset(305), 305 * 32_768);
        assert_eq!(l.bitfield_len(), 39);
    }

    #[test]
    fn exact_multiple_has_full_last_piece() {
        let l = Layout::new(4 * 1024, 1024).unwrap();
        assert_eq!(l.num_pieces(), 4);
        assert_eq!(l.piece_len(3), 1024);
    }

    #[test]
    fn one_piece_file_smaller_than_piece_size() {
        let l = Layout::new(10, 1 << 20).unwrap();
        assert_eq!(l.num_pieces(), 1);
        assert_eq!(l.piece_len(0), 10);
        assert_eq!(l.bitfield_len(), 1);
    }

    #[test]
    fn zero_sizes_and_too_many_pieces_are_rejected() {
        assert!(Layout::new(0, 10).is_none());
        assert!(Layout::new(10, 0).is_none());
        assert!(Layout::new(u64::MAX, 1).is_none());
    }
}
