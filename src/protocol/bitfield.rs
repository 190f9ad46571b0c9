//! One bit a piece: which pieces a peer has, in the wire's bit order.
//!
//! Byte 0 holds pieces 0..7 with 0x80 for piece 0 (bitvec's `Msb0` order), so
//! the wire form is the storage itself. Spare bits past the last piece are
//! always zero here, which lets set operations work on whole bytes. Never does
//! I/O and never panics on wire input: [`Bitfield::from_wire`] checks it.

use bitvec::prelude::*;

#[derive(PartialEq, Eq)]
pub struct Bitfield {
    bits: BitVec<u8, Msb0>,
}

/// A copy of the bytes: bitvec's own clone goes through its elements one
/// at a time, and a request that copies what we want paid for it.
impl Clone for Bitfield {
    fn clone(&self) -> Bitfield {
        let mut bits = BitVec::<u8, Msb0>::from_vec(self.bits.as_raw_slice().to_vec());
        bits.truncate(self.bits.len());
        Bitfield { bits }
    }
}

impl std::fmt::Debug for Bitfield {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bitfield({}/{})", self.count(), self.len())
    }
}

impl Bitfield {
    /// `num_pieces` pieces, none present.
    pub fn empty(num_pieces: u32) -> Bitfield {
        let mut bits = bitvec![u8, Msb0; 0; num_pieces as usize];
        bits.set_uninitialized(false);
        Bitfield { bits }
    }

    /// `num_pieces` pieces, all present.
    pub fn full(num_pieces: u32) -> Bitfield {
        let mut bits = bitvec![u8, Msb0; 1; num_pieces as usize];
        bits.set_uninitialized(false);
        Bitfield { bits }
    }

    /// Reads a wire bitfield. `None` when `bytes` is not exactly the length
    /// that `num_pieces` needs. Spare bits are ignored: some implementations set them.
    pub fn from_wire(bytes: &[u8], num_pieces: u32) -> Option<Bitfield> {
        if bytes.len() != (num_pieces as usize).div_ceil(8) {
            return None;
        }
        let mut bits = BitVec::<u8, Msb0>::from_slice(bytes);
        bits.truncate(num_pieces as usize);
        bits.set_uninitialized(false);
        Some(Bitfield { bits })
    }

    /// The wire form: high bit of byte 0 is piece 0, spare bits zero.
    pub fn as_wire(&self) -> &[u8] {
        self.bits.as_raw_slice()
    }

    pub fn len(&self) -> u32 {
        self.bits.len() as u32
    }

    pub fn is_empty(&self) -> bool {
        self.bits.is_empty()
    }

    pub fn has(&self, index: u32) -> bool {
        self.bits.get(index as usize).is_some_and(|b| *b)
    }

    pub fn set(&mut self, index: u32, value: bool) {
        self.bits.set(index as usize, value);
    }

    /// How many pieces are present.
    pub fn count(&self) -> u32 {
        self.bits.count_ones() as u32
    }

    pub(crate) fn is_complete(&self) -> bool {
        self.bits.all()
    }

    pub fn none(&self) -> bool {
        self.bits.not_any()
    }

    /// True when `self` holds a piece that `other` lacks: "they have something I want".
    pub fn has_any_missing_from(&self, other: &Bitfield) -> bool {
        debug_assert_eq!(self.len(), other.len());
        self.as_wire()
            .iter()
            .zip(other.as_wire())
            .any(|(mine, theirs)| mine & !theirs != 0)
    }

    /// True when a piece is in both.
    pub(crate) fn intersects(&self, other: &Bitfield) -> bool {
        debug_assert_eq!(self.len(), other.len());
        self.as_wire()
            .iter()
            .zip(other.as_wire())
            .any(|(mine, theirs)| mine & theirs != 0)
    }

    /// Sets every piece `other` has (a lenient merge of a late bitfield).
    pub(crate) fn union_with(&mut self, other: &Bitfield) {
        debug_assert_eq!(self.len(), other.len());
        for (mine, theirs) in self.bits.as_raw_mut_slice().iter_mut().zip(other.as_wire()) {
            *mine |= theirs;
        }
    }

    /// Clears every piece `other` has.
    pub(crate) fn remove_all(&mut self, other: &Bitfield) {
        debug_assert_eq!(self.len(), other.len());
        for (mine, theirs) in self.bits.as_raw_mut_slice().iter_mut().zip(other.as_wire()) {
            *mine &= !theirs;
        }
    }

    /// Indices of present pieces, ascending.
    pub(crate) fn iter_ones(&self) -> impl Iterator<Item = u32> + '_ {
        self.bits.iter_ones().map(|i| i as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_all_clears_what_the_other_has_and_keeps_the_rest() {
        let mut a = Bitfield::full(11);
        let mut b = Bitfield::empty(11);
        for i in [0, 7, 8, 10] {
            b.set(i, true);
        }
        a.remove_all(&b);
        assert_eq!(a.iter_ones().collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6, 9]);
        assert_eq!(
            a.as_wire(),
            Bitfield::from_wire(a.as_wire(), 11).unwrap().as_wire()
        );
    }

    #[test]
    fn a_clone_is_the_same_bits_and_bytes() {
        for n in [0u32, 1, 7, 8, 9, 64, 100_003] {
            let mut b = Bitfield::empty(n);
            for i in (0..n).filter(|i| (i * 7 + 3) % 5 < 2) {
                b.set(i, true);
            }
            let c = b.clone();
            assert_eq!(c, b, "{n}");
            assert_eq!((c.len(), c.count()), (b.len(), b.count()));
            assert_eq!(c.as_wire(), b.as_wire());
        }
        let full = Bitfield::full(13);
        assert_eq!(full.clone().as_wire(), &[0xff, 0xf8]);
    }

    #[test]
    fn ten_pieces_with_0_and_9_is_80_40() {
        let mut b = Bitfield::empty(10);
        b.set(0, true);
        b.set(9, true);
        assert_eq!(b.as_wire(), &[0x80, 0x40]);
        assert_eq!(b.count(), 2);
    }

    #[test]
    fn full_bitfield_keeps_spare_bits_zero() {
        assert_eq!(Bitfield::full(10).as_wire(), &[0xff, 0xc0]);
        assert_eq!(Bitfield::full(8).as_wire(), &[0xff]);
        assert!(Bitfield::full(10).is_complete());
    }

    #[test]
    fn from_wire_checks_length_and_clears_spare_bits() {
        assert!(Bitfield::from_wire(&[0xff], 10).is_none());
        assert!(Bitfield::from_wire(&[0xff, 0xff, 0x00], 10).is_none());
        let b = Bitfield::from_wire(&[0xff, 0xff], 10).unwrap();
        assert_eq!(b.as_wire(), &[0xff, 0xc0]);
        assert!(b.is_complete());
        assert_eq!(b.count(), 10);
    }

    #[test]
    fn wire_round_trip_for_every_single_piece() {
        for n in [1u32, 7, 8, 9, 100] {
            for i in 0..n {
                let mut b = Bitfield::empty(n);
                b.set(i, true);
                let back = Bitfield::from_wire(b.as_wire(), n).unwrap();
                assert_eq!(back.iter_ones().collect::<Vec<_>>(), vec![i]);
                assert_eq!(b.as_wire()[(i / 8) as usize], 0x80 >> (i % 8));
            }
        }
    }

    #[test]
    fn interest_is_a_piece_they_have_and_i_lack() {
        let mut mine = Bitfield::empty(12);
        let mut theirs = Bitfield::empty(12);
        assert!(!theirs.has_any_missing_from(&mine));
        theirs.set(11, true);
        assert!(theirs.has_any_missing_from(&mine));
        mine.set(11, true);
        assert!(!theirs.has_any_missing_from(&mine));
        mine.union_with(&Bitfield::full(12));
        assert!(mine.is_complete());
    }

    #[test]
    fn two_bitfields_intersect_where_both_have_a_piece() {
        let mut a = Bitfield::empty(12);
        let mut b = Bitfield::empty(12);
        a.set(3, true);
        b.set(11, true);
        assert!(!a.intersects(&b));
        b.set(3, true);
        assert!(a.intersects(&b) && b.intersects(&a));
    }
}
