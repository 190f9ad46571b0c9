//! Piece buffers and the pool that reuses them.
//!
//! A [`PieceBuf`] holds one piece's bytes starting at a 4 KiB boundary, so a
//! received piece can go from the buffer it was read into straight to disk
//! with direct I/O (see [`crate::store`]), without a copy into the page cache.
//! The alignment is found with safe code: the buffer is over-allocated by one
//! alignment unit and the piece starts at the first aligned byte inside it.
//!
//! The [`BufferPool`] hands buffers to readers and takes them back once a
//! piece is written, so the steady state allocates (and zeroes) nothing per
//! piece. Nothing here does I/O or knows the protocol.

use parking_lot::Mutex;
use std::fmt;
use std::ops::{Deref, DerefMut};

/// Where a piece starts in its buffer: a multiple of this many bytes, the
/// largest logical block size direct I/O asks for on Linux file systems.
pub const ALIGN: usize = 4096;

/// Whether `bytes` start at an [`ALIGN`]ed address (an empty slice has no
/// bytes to place, so it is).
pub fn is_aligned(bytes: &[u8]) -> bool {
    bytes.is_empty() || bytes.as_ptr().align_offset(ALIGN) == 0
}

/// One piece's bytes, starting at an [`ALIGN`]ed address.
#[derive(Default)]
pub struct PieceBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl PieceBuf {
    /// A zeroed buffer of `len` bytes.
    pub fn zeroed(len: usize) -> PieceBuf {
        let mut buf = PieceBuf::default();
        buf.resize(len);
        buf
    }

    /// Makes the piece `len` bytes long. Contents are unspecified, but never
    /// uninitialised: growing beyond the allocation zeroes a new one.
    pub fn resize(&mut self, len: usize) {
        if self.raw.len() - self.start < len {
            self.raw = vec![0; len + ALIGN];
            // `align_offset` on a `u8` pointer is always computable.
            self.start = self.raw.as_ptr().align_offset(ALIGN).min(ALIGN);
        }
        self.len = len;
    }

    /// Whether the bytes start at an [`ALIGN`]ed address (always, unless the
    /// allocator could not be asked for one).
    pub fn is_aligned(&self) -> bool {
        is_aligned(self)
    }
}

impl Deref for PieceBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }
}

impl DerefMut for PieceBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

impl From<&[u8]> for PieceBuf {
    fn from(bytes: &[u8]) -> PieceBuf {
        let mut buf = PieceBuf::default();
        buf.resize(bytes.len());
        buf.copy_from_slice(bytes);
        buf
    }
}

impl From<Vec<u8>> for PieceBuf {
    fn from(bytes: Vec<u8>) -> PieceBuf {
        PieceBuf::from(&bytes[..])
    }
}

impl Clone for PieceBuf {
    fn clone(&self) -> PieceBuf {
        PieceBuf::from(&self[..])
    }
}

impl PartialEq for PieceBuf {
    fn eq(&self, other: &PieceBuf) -> bool {
        self[..] == other[..]
    }
}

impl Eq for PieceBuf {}

impl fmt::Debug for PieceBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PieceBuf({} bytes)", self.len)
    }
}

/// Piece buffers for reuse: readers take one for each received piece, the pool
/// gives it back once the piece is written.
pub struct BufferPool {
    free: Mutex<Vec<PieceBuf>>,
    max_pooled: usize,
}

impl BufferPool {
    pub fn new(max_pooled: usize) -> BufferPool {
        BufferPool {
            free: Mutex::new(Vec::new()),
            max_pooled,
        }
    }

    /// A buffer of exactly `len` bytes (contents unspecified).
    pub fn take(&self, len: usize) -> PieceBuf {
        let mut buf = self.free.lock().pop().unwrap_or_default();
        buf.resize(len);
        buf
    }

    /// Runs `f` with a pooled buffer (of unspecified length) and returns the
    /// buffer to the pool afterwards.
    pub fn with<R>(&self, f: impl FnOnce(&mut PieceBuf) -> R) -> R {
        let mut buf = self.take(0);
        let result = f(&mut buf);
        self.give(buf);
        result
    }

    pub fn give(&self, buf: PieceBuf) {
        let mut free = self.free.lock();
        if free.len() < self.max_pooled {
            free.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_and_keep_their_bytes_when_shrunk() {
        for len in [0, 1, 4095, 4096, 16_411, 262_144] {
            let mut b = PieceBuf::zeroed(len);
            assert_eq!(b.len(), len);
            assert!(b.is_aligned(), "len {len}");
            assert!(b.iter().all(|&x| x == 0));
            if len > 0 {
                b[len - 1] = 7;
                b.resize(len / 2 + 1);
                assert!(b.is_aligned());
                assert_eq!(b.len(), len / 2 + 1);
            }
        }
        let b = PieceBuf::from(vec![1, 2, 3]);
        assert_eq!(&b[..], [1, 2, 3]);
        assert_eq!(b.clone(), b);
        assert_ne!(b, PieceBuf::from(vec![1, 2]));
    }

    #[test]
    fn the_pool_reuses_a_returned_buffer_and_caps_what_it_keeps() {
        let pool = BufferPool::new(1);
        let a = pool.take(10_000);
        let address = a.as_ptr();
        pool.give(a);
        pool.give(PieceBuf::zeroed(5));
        let b = pool.take(9_000);
        assert_eq!(b.as_ptr(), address, "the first buffer back, not the second");
        assert_eq!(b.len(), 9_000);
        assert!(pool.free.lock().is_empty());
    }
}
