//! Piece buffers and the pool that reuses them.
//!
//! A [`PieceBuf`] holds one piece's bytes starting at a 4 KiB boundary, so a
//! received piece can go from the buffer it was read into straight to disk
//! with direct I/O (see [`crate::runtime::store`]), without a copy into the page cache.
//! The alignment is found with safe code: the buffer is over-allocated by one
//! alignment unit and the piece starts at the first aligned byte inside it.
//!
//! The [`BufferPool`] hands buffers to readers and takes them back once a
//! piece is written, so the steady state allocates (and zeroes) nothing per
//! piece; until reused, a written piece's buffer serves that piece to
//! neighbours. Nothing here does I/O or knows the protocol.

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::fmt;
use std::ops::{Deref, DerefMut};

/// Where a piece starts in its buffer: a multiple of this many bytes, the
/// largest logical block size direct I/O asks for on Linux file systems.
pub(crate) const ALIGN: usize = 4096;

/// Whether `bytes` start at an [`ALIGN`]ed address (an empty slice has no
/// bytes to place, so it is).
pub(crate) fn is_aligned(bytes: &[u8]) -> bool {
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
    #[cfg(test)]
    pub(crate) fn zeroed(len: usize) -> PieceBuf {
        let mut buf = PieceBuf::default();
        buf.resize(len);
        buf
    }

    /// Makes the piece `len` bytes long. Contents are unspecified, but never
    /// uninitialised: growing beyond the allocation zeroes a new one.
    pub(crate) fn resize(&mut self, len: usize) {
        if self.raw.len() - self.start < len {
            self.raw = vec![0; len + ALIGN];
            // `align_offset` on a `u8` pointer is always computable.
            self.start = self.raw.as_ptr().align_offset(ALIGN).min(ALIGN);
        }
        self.len = len;
    }

    /// Whether the bytes start at an [`ALIGN`]ed address (always, unless the
    /// allocator could not be asked for one).
    pub(crate) fn is_aligned(&self) -> bool {
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
/// gets it back once the piece is written.
///
/// A written piece's buffer comes back [`kept`](BufferPool::keep) with its
/// index, and serves that piece ([`BufferPool::serve_kept`]) until it is
/// needed again: a leecher is asked for the pieces it has just announced, and
/// without the copy in memory each of those would be read back from the
/// device it has just been written to. The `max_kept` most recently written
/// pieces stay kept; an older one's buffer becomes a plain one, to be handed
/// out again.
///
/// Memory stays flat: once the pool has made `budget` buffers, a buffer
/// needed while no plain one is free is the longest-kept one, not a new one
/// (a new one only when nothing is kept either: then every buffer is in use,
/// which the engine bounds). Without the budget, each moment of more pieces
/// in flight than before added buffers for good, and the kept ones on top,
/// so peak RSS crept over a long run. And the pool frees nothing: freeing
/// and allocating again let memory creep too, as the allocator gives a freed
/// buffer back to the arena of the thread that made it, where another reader
/// cannot reuse it (see docs/PERFORMANCE.md).
pub struct BufferPool {
    inner: Mutex<Pooled>,
    max_kept: usize,
    budget: usize,
}

#[derive(Default)]
struct Pooled {
    plain: Vec<PieceBuf>,
    /// Written pieces' buffers with their indices, the longest-kept first.
    kept: VecDeque<(u32, PieceBuf)>,
    /// Buffers this pool has made.
    made: usize,
}

impl BufferPool {
    /// A pool keeping up to `max_kept` written pieces, and reusing kept
    /// buffers rather than making more than `budget` in all.
    pub fn new(max_kept: usize, budget: usize) -> BufferPool {
        BufferPool {
            inner: Mutex::new(Pooled::default()),
            max_kept,
            budget,
        }
    }

    /// A buffer of exactly `len` bytes (contents unspecified).
    pub fn take(&self, len: usize) -> PieceBuf {
        let mut buf = {
            let mut inner = self.inner.lock();
            let reused = match inner.plain.pop() {
                None if inner.made >= self.budget => inner.kept.pop_front().map(|(_, buf)| buf),
                plain => plain,
            };
            reused.unwrap_or_else(|| {
                inner.made += 1;
                PieceBuf::default()
            })
        };
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
        self.inner.lock().plain.push(buf);
    }

    /// Takes back `buf`, which holds piece `index` exactly as it is on disk.
    pub fn keep(&self, index: u32, buf: PieceBuf) {
        let mut inner = self.inner.lock();
        inner.kept.push_back((index, buf));
        if inner.kept.len() > self.max_kept {
            if let Some((_, oldest)) = inner.kept.pop_front() {
                inner.plain.push(oldest);
            }
        }
    }

    /// Runs `f` on the kept copy of piece `index`, if the pool has one; the
    /// copy is out of the pool (no one else can take it) while `f` runs, and
    /// kept again, as the most recent, afterwards.
    pub(crate) fn serve_kept<R>(&self, index: u32, f: impl FnOnce(&PieceBuf) -> R) -> Option<R> {
        let buf = {
            let mut inner = self.inner.lock();
            let at = inner.kept.iter().position(|(i, _)| *i == index)?;
            inner.kept.remove(at)?.1
        };
        let result = f(&buf);
        self.keep(index, buf);
        Some(result)
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
    fn the_pool_hands_back_the_last_returned_buffer_and_frees_none() {
        let pool = BufferPool::new(0, 0);
        let a = pool.take(10_000);
        let address = a.as_ptr();
        pool.give(PieceBuf::zeroed(5));
        pool.give(a);
        let b = pool.take(9_000);
        assert_eq!(b.as_ptr(), address, "the last buffer back first");
        assert_eq!(b.len(), 9_000);
        assert_eq!(pool.inner.lock().plain.len(), 1);
        // Written pieces are not kept with `max_kept` 0, but not lost either.
        pool.keep(3, b);
        assert_eq!(pool.serve_kept(3, |_| ()), None);
        assert_eq!(pool.inner.lock().plain.len(), 2);
    }

    #[test]
    fn the_newest_written_pieces_serve_and_older_ones_are_reused() {
        let pool = BufferPool::new(2, 10);
        pool.keep(7, PieceBuf::from(vec![7; 4]));
        pool.keep(8, PieceBuf::from(vec![8; 4]));
        assert_eq!(pool.serve_kept(7, |b| b[0]), Some(7));
        assert_eq!(pool.serve_kept(9, |b| b[0]), None);
        // Kept buffers are not handed out.
        assert_eq!(pool.take(4)[..], [0; 4]);
        // A third kept piece pushes out 8, kept longest (7 was served since),
        // and 8's buffer is the next one handed out.
        pool.keep(9, PieceBuf::from(vec![9; 4]));
        assert_eq!(pool.serve_kept(8, |_| ()), None);
        assert_eq!(pool.serve_kept(7, |b| b[0]), Some(7));
        assert_eq!(pool.take(4)[..], [8; 4]);
        pool.keep(1, PieceBuf::from(vec![1; 4]));
        pool.keep(2, PieceBuf::from(vec![2; 4]));
        let inner = pool.inner.lock();
        assert_eq!((inner.plain.len(), inner.kept.len()), (2, 2));
        assert_eq!(inner.kept.iter().map(|k| k.0).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn past_its_budget_the_pool_reuses_the_longest_kept_buffer() {
        let pool = BufferPool::new(4, 4);
        let (a, b, c) = (pool.take(4), pool.take(4), pool.take(4));
        pool.keep(1, a);
        pool.keep(2, b);
        // Under budget a new buffer is made; at it, the longest-kept is reused.
        let d = pool.take(4);
        assert_eq!(pool.inner.lock().made, 4);
        pool.keep(3, c);
        let reused = pool.take(4);
        assert_eq!(pool.inner.lock().made, 4);
        assert_eq!(pool.serve_kept(1, |_| ()), None, "1 was reused");
        assert_eq!(pool.serve_kept(2, |_| ()), Some(()));
        // Nothing plain nor kept: a buffer is made even past the budget.
        pool.keep(4, d);
        pool.keep(5, reused);
        let _reused = [pool.take(4), pool.take(4), pool.take(4), pool.take(4)];
        assert_eq!(pool.inner.lock().kept.len(), 0);
        assert_eq!(pool.inner.lock().made, 4);
        let _w = pool.take(4);
        assert_eq!(pool.inner.lock().made, 5);
    }
}
