//! Small pieces gathered in memory into aligned granules, so that the disk
//! gets one large direct write where it would get many small ones.
//!
//! A granule is [`GRANULE_BYTES`] of the file (a whole number of pieces,
//! at most 64). A piece given to [`Coalescer::hold`] stays here in its own
//! buffer (no copy) until every piece of its granule is held or already on
//! disk; then the granule's held pieces go out as one batch of runs of
//! consecutive pieces (one vectored direct write each, see
//! [`crate::runtime::store`]). Granules that stay incomplete are handed out all the
//! same, the least recently added to first, once more than `max_open` are
//! open, and on [`Coalescer::drain`] (all of them, or those that got nothing
//! since the last look), so held memory is bounded and no piece waits long.
//!
//! Owns only that bookkeeping. Never does I/O (the store writes the batches
//! it is handed), never knows the protocol: a held piece is not yet stored,
//! and the caller must not count it until its batch is written.

use crate::protocol::layout::Layout;
use crate::support::piecebuf::{PieceBuf, ALIGN};
use parking_lot::Mutex;

/// Bytes of file a granule covers (pieces of 256 KiB are written one at a
/// time, and go to the device at its full rate).
pub(crate) const GRANULE_BYTES: u32 = 256 * 1024;

/// Granules with pieces held at once, at most, before the least recently
/// added to is written incomplete: 6 MiB of pieces.
pub(crate) const MAX_OPEN: usize = 24;

/// Pieces of consecutive indices, starting at `first`, to be written as one.
#[derive(Debug)]
pub(crate) struct Run {
    pub first: u32,
    pub pieces: Vec<PieceBuf>,
}

/// A granule's held pieces, handed out to be written.
#[derive(Debug)]
#[must_use = "held pieces must be written"]
pub(crate) struct Batch {
    pub runs: Vec<Run>,
}

impl Batch {
    /// Whether piece `index` is in this batch.
    pub(crate) fn holds(&self, index: u32) -> bool {
        self.runs
            .iter()
            .any(|r| (r.first..r.first + r.pieces.len() as u32).contains(&index))
    }

    /// The pieces' buffers with their indices.
    pub(crate) fn into_pieces(self) -> impl Iterator<Item = (u32, PieceBuf)> {
        self.runs
            .into_iter()
            .flat_map(|run| (run.first..).zip(run.pieces))
    }
}

#[derive(Debug)]
pub(crate) struct Coalescer {
    /// Pieces a granule.
    per: u32,
    /// Bytes a piece.
    piece: u32,
    /// Pieces `0..members` are gathered; a last piece whose length is not a
    /// multiple of [`ALIGN`] is not (it cannot go out with direct I/O).
    members: u32,
    max_open: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    open: Vec<Granule>,
    /// Per granule, the pieces on disk or handed out to be written.
    on_disk: Vec<u64>,
    /// Counts holds, to find the granule added to least recently.
    clock: u64,
    /// The clock at the last idle [`Coalescer::drain`].
    idle_mark: u64,
    /// Batches handed out complete and incomplete (for the debug log).
    complete: u64,
    incomplete: u64,
}

#[derive(Debug)]
struct Granule {
    index: u32,
    slots: Vec<Option<PieceBuf>>,
    held: u64,
    touched: u64,
}

impl Coalescer {
    /// A coalescer for `layout`, or `None` when its pieces are too large to
    /// gain from it (two would not fit in a granule) or not 4 KiB multiples.
    pub(crate) fn new(layout: &Layout, max_open: usize) -> Option<Coalescer> {
        let piece = layout.piece_size_bytes();
        let per = (GRANULE_BYTES / piece.max(1)).min(64);
        if per < 2 || piece as usize % ALIGN != 0 || max_open == 0 {
            return None;
        }
        let n = layout.num_pieces();
        let last_aligned = n > 0 && layout.piece_len(n - 1) as usize % ALIGN == 0;
        let members = if last_aligned { n } else { n.saturating_sub(1) };
        Some(Coalescer {
            per,
            piece,
            members,
            max_open,
            inner: Mutex::new(Inner {
                on_disk: vec![0; members.div_ceil(per) as usize],
                ..Inner::default()
            }),
        })
    }

    /// Bytes of pieces held at most (granules open, and one more being
    /// added to while the oldest goes out).
    pub(crate) fn max_held_bytes(&self) -> u64 {
        (self.max_open as u64 + 1) * u64::from(self.per * self.piece)
    }

    /// Pieces a granule.
    pub(crate) fn per_granule(&self) -> u32 {
        self.per
    }

    /// Whether piece `index` can be gathered here (else it is written alone).
    pub(crate) fn gathers(&self, index: u32) -> bool {
        index < self.members
    }

    /// Records pieces on disk (found at start-up, or written alone), so that
    /// their granules complete without them.
    pub(crate) fn note_on_disk(&self, on_disk: impl Fn(u32) -> bool) {
        let mut inner = self.inner.lock();
        for index in (0..self.members).filter(|&i| on_disk(i)) {
            inner.on_disk[(index / self.per) as usize] |= self.bit(index);
        }
    }

    /// Records piece `index`, written alone, as on disk.
    pub(crate) fn note_written(&self, index: u32) {
        if self.gathers(index) {
            self.inner.lock().on_disk[(index / self.per) as usize] |= self.bit(index);
        }
    }

    /// Holds `piece` (piece `index`, which [`gathers`](Coalescer::gathers)).
    /// Returns a batch to write when that completes its granule, or when
    /// too many granules are open (then the one added to least recently).
    pub(crate) fn hold(&self, index: u32, piece: PieceBuf) -> Option<Batch> {
        assert!(self.gathers(index), "piece {index} is not gathered");
        let granule = index / self.per;
        let mut inner = self.inner.lock();
        inner.clock += 1;
        let clock = inner.clock;
        let at = match inner.open.iter().position(|g| g.index == granule) {
            Some(at) => at,
            None => {
                inner.open.push(Granule {
                    index: granule,
                    slots: (0..self.per).map(|_| None).collect(),
                    held: 0,
                    touched: 0,
                });
                inner.open.len() - 1
            }
        };
        let g = &mut inner.open[at];
        g.slots[(index % self.per) as usize] = Some(piece);
        g.held |= self.bit(index);
        g.touched = clock;
        if g.held | inner.on_disk[granule as usize] == self.full_mask(granule) {
            inner.complete += 1;
            return Some(take(&mut inner, at, self.per));
        }
        if inner.open.len() > self.max_open {
            let oldest = (0..inner.open.len())
                .min_by_key(|&i| inner.open[i].touched)
                .expect("open granules");
            inner.incomplete += 1;
            return Some(take(&mut inner, oldest, self.per));
        }
        None
    }

    /// Open granules' held pieces, to be written now: all of them, or with
    /// `idle_only` those of granules that nothing was added to since the
    /// last such call (pieces that may wait for the rest of their granule a
    /// long time, from a neighbour that stopped sending, say).
    pub(crate) fn drain(&self, idle_only: bool) -> Vec<Batch> {
        let mut inner = self.inner.lock();
        let clock = inner.clock;
        let mark = if idle_only {
            std::mem::replace(&mut inner.idle_mark, clock)
        } else {
            u64::MAX
        };
        let mut batches = Vec::new();
        while let Some(at) = inner.open.iter().position(|g| g.touched <= mark) {
            inner.incomplete += 1;
            batches.push(take(&mut inner, at, self.per));
        }
        batches
    }

    /// Batches handed out complete and incomplete so far.
    pub(crate) fn batches(&self) -> (u64, u64) {
        let inner = self.inner.lock();
        (inner.complete, inner.incomplete)
    }

    fn bit(&self, index: u32) -> u64 {
        1 << (index % self.per)
    }

    fn full_mask(&self, granule: u32) -> u64 {
        let count = (self.members - granule * self.per).min(self.per);
        u64::MAX >> (64 - count)
    }
}

/// Takes open granule `at` out as a batch of runs; its pieces count as on
/// disk from now on.
fn take(inner: &mut Inner, at: usize, per: u32) -> Batch {
    let g = inner.open.swap_remove(at);
    inner.on_disk[g.index as usize] |= g.held;
    let mut runs: Vec<Run> = Vec::new();
    for (offset, slot) in (0u32..).zip(g.slots) {
        let Some(piece) = slot else { continue };
        let index = g.index * per + offset;
        match runs.last_mut() {
            Some(run) if run.first + run.pieces.len() as u32 == index => run.pieces.push(piece),
            _ => runs.push(Run {
                first: index,
                pieces: vec![piece],
            }),
        }
    }
    Batch { runs }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u32 = 16 * 1024;

    fn piece(i: u32) -> PieceBuf {
        PieceBuf::from(vec![i as u8; P as usize])
    }

    fn runs(batch: &Batch) -> Vec<(u32, usize)> {
        batch
            .runs
            .iter()
            .map(|r| (r.first, r.pieces.len()))
            .collect()
    }

    #[test]
    fn only_sizes_that_gain_are_gathered_and_a_short_last_piece_is_not() {
        let c = |size: u64, piece: u32| Coalescer::new(&Layout::new(size, piece).unwrap(), 4);
        assert!(c(1 << 20, 128 * 1024).is_some());
        assert!(c(1 << 20, 256 * 1024).is_none());
        assert!(c(1 << 20, 10_000).is_none());
        assert_eq!(c(1 << 20, 4096).unwrap().per_granule(), 64);
        let short = c(3 * u64::from(P) + 100, P).unwrap();
        assert_eq!(short.per_granule(), 16);
        assert!(short.gathers(2) && !short.gathers(3));
        let whole = c(3 * u64::from(P) + 4096, P).unwrap();
        assert!(whole.gathers(3));
        assert_eq!(whole.max_held_bytes(), 5 * 256 * 1024);
    }

    #[test]
    fn a_granule_goes_out_once_complete_in_runs_of_consecutive_pieces() {
        // 40 pieces: granules of 16, 16 and 8.
        let c = Coalescer::new(&Layout::new(40 * u64::from(P), P).unwrap(), 4).unwrap();
        for i in (17..32).rev() {
            assert!(c.hold(i, piece(i)).is_none(), "{i}");
        }
        let batch = c.hold(16, piece(16)).expect("complete");
        assert_eq!(runs(&batch), [(16, 16)]);
        let back: Vec<(u32, PieceBuf)> = batch.into_pieces().collect();
        assert_eq!(
            back.iter().map(|b| b.0).collect::<Vec<_>>(),
            (16..32).collect::<Vec<_>>()
        );
        assert!(back.iter().all(|(i, b)| b[0] == *i as u8));
        // The short last granule completes with its 8 pieces.
        for i in 33..40 {
            assert!(c.hold(i, piece(i)).is_none());
        }
        assert_eq!(runs(&c.hold(32, piece(32)).unwrap()), [(32, 8)]);
        // Pieces on disk complete a granule without being held.
        c.note_on_disk(|i| i < 16 && i % 3 != 0 && i != 4);
        c.note_written(4);
        let held: Vec<u32> = (0..16).filter(|i| i % 3 == 0).collect();
        for &i in &held[1..] {
            assert!(c.hold(i, piece(i)).is_none());
        }
        let batch = c.hold(0, piece(0)).unwrap();
        assert_eq!(
            runs(&batch),
            held.iter().map(|&i| (i, 1)).collect::<Vec<_>>()
        );
        assert_eq!(c.batches(), (3, 0));
    }

    #[test]
    fn past_max_open_the_granule_added_to_least_recently_goes_out_incomplete() {
        let c = Coalescer::new(&Layout::new(64 * u64::from(P), P).unwrap(), 2).unwrap();
        assert!(c.hold(0, piece(0)).is_none());
        assert!(c.hold(1, piece(1)).is_none());
        assert!(c.hold(17, piece(17)).is_none());
        assert!(c.hold(3, piece(3)).is_none());
        let batch = c.hold(40, piece(40)).expect("three open");
        assert_eq!(runs(&batch), [(17, 1)]);
        // Granule 1 opens again: three open, and 0 is now the oldest.
        let batch = c.hold(16, piece(16)).expect("three open again");
        assert_eq!(runs(&batch), [(0, 2), (3, 1)]);
        for i in 18..31 {
            assert!(c.hold(i, piece(i)).is_none(), "{i}");
        }
        // Complete without 17, which went out before.
        let batch = c.hold(31, piece(31)).expect("complete");
        assert_eq!(runs(&batch), [(16, 1), (18, 14)]);
        assert!(batch.holds(16) && batch.holds(31) && !batch.holds(17));
        let left = c.drain(false);
        assert_eq!(left.iter().map(runs).collect::<Vec<_>>(), [vec![(40, 1)]]);
        assert_eq!(c.drain(false).len(), 0);
        assert_eq!(c.batches(), (1, 3));
    }

    #[test]
    fn granules_left_alone_since_the_last_look_go_out() {
        let c = Coalescer::new(&Layout::new(64 * u64::from(P), P).unwrap(), 8).unwrap();
        assert!(c.hold(0, piece(0)).is_none());
        assert!(c.hold(20, piece(20)).is_none());
        // Both were added to since the (first) look.
        assert!(c.drain(true).is_empty());
        assert!(c.hold(21, piece(21)).is_none());
        let idle = c.drain(true);
        assert_eq!(idle.iter().map(runs).collect::<Vec<_>>(), [vec![(0, 1)]]);
        let idle = c.drain(true);
        assert_eq!(idle.iter().map(runs).collect::<Vec<_>>(), [vec![(20, 2)]]);
        assert!(c.drain(true).is_empty() && c.drain(false).is_empty());
    }
}
