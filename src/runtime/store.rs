//! The shared file on disk, `peer_<ID>/<FileName>`, read and written a piece
//! at a time at its offset.
//!
//! Positioned reads and writes (`pread`/`pwrite`), so any thread may use a
//! shared `&Store` without a lock or a seek. A seed's store is opened
//! read-only and can never write. Never holds more than the caller's buffer in
//! memory: there is no whole-file buffer.
//!
//! A leecher's file is opened twice: once as usual, and once with `O_DIRECT`
//! (for pieces of at least [`DIRECT_IO_MIN_PIECE`]). A piece whose buffer,
//! offset and length are all 4 KiB multiples (every piece of a power-of-two
//! size but perhaps the last) is written with direct
//! I/O, from the reused piece buffer straight to the device: no page-cache
//! page is allocated and filled for it, and such a piece is read back the same
//! way when it is served. Profiles showed that copy into fresh page-cache
//! pages as the largest cost of a download (several times SHA-1 on a virtual
//! machine). Other pieces, file systems that refuse `O_DIRECT` (the first
//! refusal turns it off for the file) and `P2pftDirectIo 0` take the buffered
//! path; the kernel keeps the two views of the file coherent.
//!
//! Smaller aligned pieces (16 KiB, say) may be gathered first
//! ([`Coalescer`]): such a piece is held in its buffer until its 256 KiB
//! granule is complete, then the granule goes out in one vectored direct
//! write. A held piece is not stored yet: the caller hears of it as written
//! (and may count it, serve it, record it) only once it is in the file.
//! Pieces also go out incomplete: when too many granules are open, on
//! [`Store::write_held`], and when the store is dropped.

use crate::protocol::bitfield::Bitfield;
use crate::protocol::layout::Layout;
use crate::runtime::coalesce::{Batch, Coalescer, Run, MAX_OPEN};
use crate::support::files::{try_lock, with_path};
use crate::support::piecebuf::{self, PieceBuf, ALIGN};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Pieces smaller than this are not written one by one with direct I/O: each
/// direct write waits for the device (a VM exit and a round trip on a
/// virtual disk), and at 16 KiB that per-write cost outweighs the page-cache
/// copy it saves; at 64 KiB direct still wins (see docs/PERFORMANCE.md).
/// They are gathered into granules instead ([`Coalescer`]).
pub(crate) const DIRECT_IO_MIN_PIECE: u32 = 64 * 1024;

#[derive(Debug)]
pub struct Store {
    file: File,
    /// The same file opened with `O_DIRECT`, while direct writes work.
    direct: Option<File>,
    direct_works: AtomicBool,
    /// Pieces written with direct I/O and through the page cache.
    direct_writes: AtomicU64,
    buffered_writes: AtomicU64,
    /// Gathers small pieces into granules (a leecher's store with direct I/O).
    coalescer: Option<Coalescer>,
    path: PathBuf,
    layout: Layout,
    writable: bool,
    /// A leecher's file was already there (with data) when opened: there may
    /// be something to resume.
    existed: bool,
    /// A leecher's exclusive lock on its file ([`lock_exclusive`]), held
    /// while the store lives.
    _lock: Option<nix::fcntl::Flock<File>>,
}

/// Takes an exclusive lock (`flock`) on the file at `path` before anything
/// is written to it or read back to resume: a second process of the same
/// leecher (started twice by hand, or by two launchers) is refused at once
/// with a message, instead of re-hashing and writing into the file the first
/// is downloading into, and failing only later at its port. `None` where
/// the file system has no such locks.
fn lock_exclusive(path: &Path) -> io::Result<Option<nix::fcntl::Flock<File>>> {
    try_lock(path).map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock => io::Error::new(
            e.kind(),
            format!(
                "{} is in use by another process (is this peer running already?)",
                path.display()
            ),
        ),
        _ => e,
    })
}

/// Reserves the blocks of the first `len` bytes of `file` (`fallocate`, mode
/// 0: holes become allocated, unwritten extents that read as zeros; data
/// already there is kept). A full disk is then an error at start, not in the
/// middle of a download, and direct writes land on allocated blocks: ext4
/// takes its inode lock shared for those, but exclusive (held until the
/// device is done) for a write that must allocate, which serialised the disk
/// threads (see docs/PERFORMANCE.md). File systems without
/// `fallocate` keep a sparse file (`Ok(false)`).
pub(crate) fn preallocate(file: &File, len: u64) -> io::Result<bool> {
    use nix::errno::Errno;
    use nix::fcntl::{fallocate, FallocateFlags};
    use std::os::fd::AsRawFd;
    let Ok(len) = libc::off_t::try_from(len) else {
        return Err(io::Error::from(io::ErrorKind::FileTooLarge));
    };
    if len == 0 {
        return Ok(true);
    }
    loop {
        match fallocate(file.as_raw_fd(), FallocateFlags::empty(), 0, len) {
            Ok(()) => return Ok(true),
            Err(Errno::EINTR) => continue,
            Err(e @ (Errno::EOPNOTSUPP | Errno::ENOSYS)) => {
                log::debug!("no fallocate here ({e}): the file stays sparse");
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

impl Store {
    /// Opens a complete file read-only; it must be exactly the layout's size.
    pub(crate) fn open_seed(path: &Path, layout: Layout) -> io::Result<Store> {
        let file = File::open(path).map_err(|e| with_path(path, "cannot open", e))?;
        let len = file.metadata()?.len();
        if len != layout.file_size_bytes() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} has {len} bytes, expected {}",
                    path.display(),
                    layout.file_size_bytes()
                ),
            ));
        }
        Ok(Store {
            file,
            direct: None,
            direct_works: AtomicBool::new(false),
            direct_writes: AtomicU64::new(0),
            buffered_writes: AtomicU64::new(0),
            coalescer: None,
            path: path.to_path_buf(),
            layout,
            writable: false,
            existed: true,
            _lock: None,
        })
    }

    /// Opens (creating it and its directory if needed) the file a leecher fills,
    /// at its full size without writing it, its blocks reserved up front
    /// ([`preallocate`]).
    /// With `direct_io`, aligned pieces are written with `O_DIRECT` where the
    /// file system allows it; with `gather` too, small ones may be gathered
    /// into granules first (see [`Store::put_piece`]).
    pub fn open_leecher(
        path: &Path,
        layout: Layout,
        direct_io: bool,
        gather: bool,
    ) -> io::Result<Store> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| with_path(dir, "cannot create", e))?;
        }
        let existed = std::fs::metadata(path).is_ok_and(|m| m.len() > 0);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| with_path(path, "cannot open for writing", e))?;
        let lock = lock_exclusive(path)?;
        file.set_len(layout.file_size_bytes())
            .map_err(|e| with_path(path, "cannot size", e))?;
        preallocate(&file, layout.file_size_bytes())
            .map_err(|e| with_path(path, "cannot reserve space for", e))?;
        let small = layout.piece_size_bytes() < DIRECT_IO_MIN_PIECE;
        let coalescer = (direct_io && gather && small)
            .then(|| Coalescer::new(&layout, MAX_OPEN))
            .flatten();
        let direct = if direct_io && (!small || coalescer.is_some()) {
            OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(path)
                .map_err(|e| log::debug!("no direct I/O for {}: {e}", path.display()))
                .ok()
        } else {
            None
        };
        Ok(Store {
            file,
            direct_works: AtomicBool::new(direct.is_some()),
            coalescer: coalescer.filter(|_| direct.is_some()),
            direct,
            direct_writes: AtomicU64::new(0),
            buffered_writes: AtomicU64::new(0),
            path: path.to_path_buf(),
            layout,
            writable: true,
            existed,
            _lock: lock,
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file held data before this run (false: freshly created).
    pub(crate) fn existed(&self) -> bool {
        self.existed
    }

    /// The open file, for positioned reads (hashing).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Reads piece `index` into `buf`, resizing it to the piece's length.
    pub(crate) fn read_piece(&self, index: u32, buf: &mut PieceBuf) -> io::Result<()> {
        buf.resize(self.layout.piece_len(index) as usize);
        self.file
            .read_exact_at(buf, self.layout.offset(index))
            .map_err(|e| with_path(&self.path, &format!("cannot read piece {index} of"), e))
    }

    /// Writes piece `index`, taking its buffer, or with `gather` (and a
    /// store that gathers, see [`Coalescer`]) holds it until its granule
    /// goes out: `Ok(true)`, not written yet. Every piece written meanwhile
    /// (this one, or a granule's) goes to `written` with its buffer, once it
    /// is in the file.
    pub fn put_piece(
        &self,
        index: u32,
        data: PieceBuf,
        gather: bool,
        written: &mut dyn FnMut(u32, PieceBuf),
    ) -> io::Result<bool> {
        let gathering = self
            .coalescer
            .as_ref()
            .filter(|c| gather && c.gathers(index) && self.direct_works.load(Relaxed));
        let Some(c) = gathering else {
            self.write_piece(index, &data)?;
            if let Some(c) = &self.coalescer {
                c.note_written(index);
            }
            written(index, data);
            return Ok(false);
        };
        match c.hold(index, data) {
            None => Ok(true),
            Some(batch) => {
                // The batch is this piece's granule, or another one pushed out.
                let ours = batch.holds(index);
                self.write_batch(batch, written)?;
                Ok(!ours)
            }
        }
    }

    /// Bytes of pieces this store may hold in memory at most.
    pub(crate) fn max_held_bytes(&self) -> u64 {
        self.coalescer.as_ref().map_or(0, Coalescer::max_held_bytes)
    }

    /// Pieces a granule when small pieces are gathered.
    pub(crate) fn granule_pieces(&self) -> Option<u32> {
        self.coalescer.as_ref().map(Coalescer::per_granule)
    }

    /// Records the pieces found on disk at start-up (see [`Coalescer::note_on_disk`]).
    pub(crate) fn note_on_disk(&self, have: &Bitfield) {
        if let Some(c) = &self.coalescer {
            c.note_on_disk(|i| have.has(i));
        }
    }

    /// Granule batches written complete and incomplete so far.
    pub(crate) fn batches(&self) -> (u64, u64) {
        self.coalescer.as_ref().map_or((0, 0), Coalescer::batches)
    }

    /// Writes a batch of held pieces, then hands each to `written`.
    fn write_batch(&self, batch: Batch, written: &mut dyn FnMut(u32, PieceBuf)) -> io::Result<()> {
        batch.runs.iter().try_for_each(|run| self.write_run(run))?;
        batch.into_pieces().for_each(|(i, buf)| written(i, buf));
        Ok(())
    }

    /// Writes consecutive pieces with one vectored direct write, or one by
    /// one ([`Store::write_piece`]) when direct I/O is refused.
    fn write_run(&self, run: &Run) -> io::Result<()> {
        let offset = self.layout.offset(run.first);
        let what = || format!("cannot write pieces {}.. to", run.first);
        if let Some(direct) = self.direct.as_ref() {
            if self.direct_works.load(Relaxed) && run.pieces.iter().all(PieceBuf::is_aligned) {
                match write_all_vectored_at(direct, &run.pieces, offset) {
                    Ok(()) => {
                        self.direct_writes
                            .fetch_add(run.pieces.len() as u64, Relaxed);
                        return Ok(());
                    }
                    Err(e) if self.refused(&e) => {}
                    Err(e) => return Err(with_path(&self.path, &what(), e)),
                }
            }
        }
        (run.first..)
            .zip(&run.pieces)
            .try_for_each(|(index, piece)| self.write_piece(index, piece))
    }

    /// Writes held pieces (see [`Store::put_piece`]), handing each to
    /// `written`: all of them, or with `idle_only` those whose granules got
    /// nothing since the last such call (see [`Coalescer::drain`]). On an
    /// error, what is left is dropped.
    pub fn write_held(
        &self,
        idle_only: bool,
        written: &mut dyn FnMut(u32, PieceBuf),
    ) -> io::Result<()> {
        let Some(c) = &self.coalescer else {
            return Ok(());
        };
        c.drain(idle_only)
            .into_iter()
            .try_for_each(|batch| self.write_batch(batch, written))
    }

    /// Writes piece `index` at its offset. `data` must be exactly the piece.
    pub(crate) fn write_piece(&self, index: u32, data: &[u8]) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "a seed's file is never written",
            ));
        }
        assert_eq!(data.len(), self.layout.piece_len(index) as usize);
        let offset = self.layout.offset(index);
        let what = || format!("cannot write piece {index} to");
        if let Some(direct) = self.direct_for(index, data) {
            match direct.write_all_at(data, offset) {
                Ok(()) => {
                    self.direct_writes.fetch_add(1, Relaxed);
                    return Ok(());
                }
                Err(e) if self.refused(&e) => {}
                Err(e) => return Err(with_path(&self.path, &what(), e)),
            }
        }
        self.buffered_writes.fetch_add(1, Relaxed);
        self.file
            .write_all_at(data, offset)
            .map_err(|e| with_path(&self.path, &what(), e))
    }

    /// Whether pieces may be read back with [`Store::read_piece_direct`] (a
    /// leecher writing with direct I/O): callers need not fetch a buffer
    /// otherwise.
    pub(crate) fn reads_direct(&self) -> bool {
        self.direct.is_some() && self.direct_works.load(Relaxed)
    }

    /// Reads piece `index` into `buf` with direct I/O when this store writes
    /// with it and the piece is aligned: a piece written that way is not in
    /// the page cache, and reading it through the cache would fill fresh
    /// pages for one use. `Ok(false)`: not done, read it another way.
    pub(crate) fn read_piece_direct(&self, index: u32, buf: &mut PieceBuf) -> io::Result<bool> {
        buf.resize(self.layout.piece_len(index) as usize);
        let Some(direct) = self.direct_for(index, buf) else {
            return Ok(false);
        };
        match direct.read_exact_at(buf, self.layout.offset(index)) {
            Ok(()) => Ok(true),
            Err(e) if self.refused(&e) => Ok(false),
            Err(e) => Err(with_path(
                &self.path,
                &format!("cannot read piece {index} of"),
                e,
            )),
        }
    }

    /// The `O_DIRECT` file for piece `index` in `bytes`, when direct I/O is on
    /// and the buffer, the piece's offset and its length are all aligned.
    fn direct_for(&self, index: u32, bytes: &[u8]) -> Option<&File> {
        let direct = self.direct.as_ref()?;
        let aligned = piecebuf::is_aligned(bytes)
            && self.layout.offset(index) % ALIGN as u64 == 0
            && bytes.len() % ALIGN == 0;
        (aligned && self.direct_works.load(Relaxed)).then_some(direct)
    }

    /// Whether `e` is the file system (or device) refusing direct I/O; the
    /// first refusal is reported and turns direct I/O off for this file.
    fn refused(&self, e: &io::Error) -> bool {
        if e.raw_os_error() != Some(libc::EINVAL) {
            return false;
        }
        if self.direct_works.swap(false, Relaxed) {
            log::debug!(
                "direct I/O refused for {} ({e}); using the page cache",
                self.path.display()
            );
        }
        true
    }

    /// Pieces written so far with direct I/O, and through the page cache.
    pub fn writes(&self) -> (u64, u64) {
        (
            self.direct_writes.load(Relaxed),
            self.buffered_writes.load(Relaxed),
        )
    }

    /// Makes every piece written so far durable. Held pieces are not written
    /// (see [`Store::write_held`]).
    pub fn sync(&self) -> io::Result<()> {
        if self.writable {
            self.file
                .sync_data()
                .map_err(|e| with_path(&self.path, "cannot flush", e))?;
        }
        Ok(())
    }
}

impl Drop for Store {
    /// Held pieces are written (not flushed) when the store goes away early,
    /// so a restart that re-hashes the file finds them.
    fn drop(&mut self) {
        if self.writable {
            if let Err(e) = self.write_held(false, &mut |_, _| {}) {
                log::warn!("{e}");
            }
        }
    }
}

/// Writes `pieces` back to back at `offset` with vectored writes.
fn write_all_vectored_at(file: &File, pieces: &[PieceBuf], offset: u64) -> io::Result<()> {
    use std::io::IoSlice;
    let mut slices: Vec<IoSlice<'_>> = pieces.iter().map(|p| IoSlice::new(p)).collect();
    let mut slices = &mut slices[..];
    let mut offset = offset;
    while !slices.is_empty() {
        let at = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::from(io::ErrorKind::FileTooLarge))?;
        match nix::sys::uio::pwritev(file, slices, at) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                IoSlice::advance_slices(&mut slices, n);
                offset += n as u64;
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::support::piecebuf::PieceBuf;

    #[test]
    fn pieces_land_at_their_offsets_and_the_file_has_its_full_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peer_2/f.dat");
        let layout = Layout::new(10, 4).unwrap();
        let store = Store::open_leecher(&path, layout, true, true).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 10);
        store.write_piece(2, b"yz").unwrap();
        store.write_piece(0, b"abcd").unwrap();
        store.write_piece(1, b"efgh").unwrap();
        store.sync().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"abcdefghyz");
        let mut buf = PieceBuf::default();
        store.read_piece(1, &mut buf).unwrap();
        assert_eq!(&buf[..], b"efgh");
        store.read_piece(2, &mut buf).unwrap();
        assert_eq!(&buf[..], b"yz");
    }

    #[test]
    fn a_leechers_file_is_opened_by_one_store_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peer_2/f.dat");
        let layout = Layout::new(1 << 20, 1 << 16).unwrap();
        let first = Store::open_leecher(&path, layout, true, true).unwrap();
        first.write_piece(3, &[7; 1 << 16]).unwrap();
        first.sync().unwrap();
        let Err(e) = Store::open_leecher(&path, layout, true, true) else {
            panic!("opened twice");
        };
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert!(
            e.to_string()
                .contains("peer_2/f.dat is in use by another process"),
            "{e}"
        );
        // A seed only reads: no lock.
        drop(Store::open_seed(&path, layout).unwrap());
        drop(first);
        let again = Store::open_leecher(&path, layout, true, true).unwrap();
        let mut buf = crate::support::piecebuf::PieceBuf::default();
        again.read_piece(3, &mut buf).unwrap();
        assert_eq!(
            &buf[..],
            &[7; 1 << 16][..],
            "the refused open changed nothing"
        );
    }

    #[test]
    fn preallocation_reserves_blocks_and_keeps_data() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.dat");
        std::fs::write(&path, b"kept").unwrap();
        let len = 8 << 20;
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len).unwrap();
        let sparse_blocks = std::fs::metadata(&path).unwrap().blocks();
        let reserved = preallocate(&file, len).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        if reserved {
            assert!(meta.blocks() * 512 >= len, "{} blocks", meta.blocks());
        } else {
            assert_eq!(meta.blocks(), sparse_blocks);
        }
        assert_eq!(meta.len(), len);
        let data = std::fs::read(&path).unwrap();
        assert_eq!(&data[..4], b"kept");
        assert!(data[4..].iter().all(|&b| b == 0));
    }

    #[test]
    fn aligned_pieces_go_direct_the_short_last_one_buffered() {
        let dir = tempfile::tempdir().unwrap();
        let size = DIRECT_IO_MIN_PIECE;
        let layout = Layout::new(3 * u64::from(size) + 100, size).unwrap();
        let piece = |i: u32| PieceBuf::from(vec![i as u8 + 1; layout.piece_len(i) as usize]);
        for direct_io in [true, false] {
            let path = dir.path().join(format!("d{direct_io}/f.dat"));
            let store = Store::open_leecher(&path, layout, direct_io, true).unwrap();
            for i in [3, 1, 0, 2] {
                store.write_piece(i, &piece(i)).unwrap();
            }
            // An unaligned buffer of an aligned piece is written buffered.
            let shifted = [vec![0u8], piece(1).to_vec()].concat();
            store.write_piece(1, &shifted[1..]).unwrap();
            store.sync().unwrap();
            let expected: Vec<u8> = (0..4).flat_map(|i| piece(i).to_vec()).collect();
            assert_eq!(std::fs::read(&path).unwrap(), expected);
            let mut buf = PieceBuf::default();
            store.read_piece(2, &mut buf).unwrap();
            assert_eq!(buf, piece(2));
            let mut direct_buf = PieceBuf::default();
            for i in 0..4 {
                let done = store.read_piece_direct(i, &mut direct_buf).unwrap();
                assert_eq!(done, direct_io && i < 3, "piece {i}");
                if done {
                    assert_eq!(direct_buf, piece(i));
                }
            }
            let (direct, buffered) = store.writes();
            assert_eq!(direct + buffered, 5);
            // Where O_DIRECT opens at all (ext4, xfs, tmpfs), it must be used.
            if direct_io && store.direct.is_some() {
                assert_eq!((direct, buffered), (3, 2));
            } else {
                assert_eq!(direct, 0);
            }
            if !direct_io {
                assert!(store.direct.is_none());
            }
        }
    }

    #[test]
    fn small_pieces_are_held_until_their_granule_is_complete_then_written_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = 16_384u32;
        // Two granules of 16 pieces and a short last piece.
        let layout = Layout::new(32 * u64::from(p) + 100, p).unwrap();
        let piece = |i: u32| PieceBuf::from(vec![i as u8 + 1; layout.piece_len(i) as usize]);
        let path = dir.path().join("f");
        let store = Store::open_leecher(&path, layout, true, true).unwrap();
        if store.direct.is_none() {
            return; // no O_DIRECT here: nothing is gathered
        }
        assert_eq!(store.granule_pieces(), Some(16));
        let on_disk = |i: u32| {
            let at = layout.offset(i) as usize;
            std::fs::read(&path).unwrap()[at..at + piece(i).len()] == piece(i)[..]
        };
        let mut written = Vec::new();
        let put = |i: u32, gather: bool, written: &mut Vec<u32>| {
            store
                .put_piece(i, piece(i), gather, &mut |i, buf| {
                    assert_eq!(buf, piece(i));
                    written.push(i);
                })
                .unwrap()
        };
        // Held until the granule is complete, then written as one.
        for i in 1..16 {
            assert!(put(i, true, &mut written), "{i} is held");
        }
        assert!(written.is_empty() && !on_disk(1));
        assert!(!put(0, true, &mut written), "0 completes the granule");
        assert_eq!(written, (0..16).collect::<Vec<_>>());
        assert!((0..16).all(on_disk));
        assert_eq!((store.writes(), store.batches()), ((16, 0), (1, 0)));
        // The short last piece and a piece not to be gathered are written
        // at once; the latter's granule then completes without it.
        written.clear();
        assert!(!put(32, true, &mut written) && !put(17, false, &mut written));
        assert!(put(18, true, &mut written) && put(19, true, &mut written));
        assert_eq!(written, [32, 17]);
        // Idle granules go out at the second look; what is held at drop, too.
        store.write_held(true, &mut |i, _| written.push(i)).unwrap();
        assert_eq!(written.len(), 2, "added to since the first look");
        store.write_held(true, &mut |i, _| written.push(i)).unwrap();
        assert_eq!(written, [32, 17, 18, 19]);
        assert!(on_disk(18) && on_disk(19));
        for i in 20..32 {
            assert!(put(i, true, &mut written));
        }
        assert!(!put(16, true, &mut written), "17-19 are on disk already");
        assert_eq!(store.batches(), (2, 1));
        // Stored again (with the rest on disk), it goes out at once.
        assert!(!put(20, true, &mut written));
        assert_eq!(store.batches(), (3, 1));
        drop(store);
        let all: Vec<u8> = (0..33).flat_map(|i| piece(i).to_vec()).collect();
        assert_eq!(std::fs::read(&path).unwrap(), all);
        // Whatever is held when a store is dropped is written.
        let other = dir.path().join("g");
        let store = Store::open_leecher(&other, layout, true, true).unwrap();
        assert!(store.put_piece(5, piece(5), true, &mut |_, _| ()).unwrap());
        drop(store);
        let at = layout.offset(5) as usize;
        assert_eq!(
            std::fs::read(&other).unwrap()[at..at + p as usize],
            piece(5)[..]
        );
    }

    #[test]
    fn without_direct_io_or_gathering_small_pieces_are_written_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(4 * 16_384, 16_384).unwrap();
        for (direct, gather) in [(false, true), (true, false)] {
            let path = dir.path().join(format!("f{direct}"));
            let store = Store::open_leecher(&path, layout, direct, gather).unwrap();
            assert!(store.granule_pieces().is_none());
            let mut written = Vec::new();
            let held = store
                .put_piece(1, PieceBuf::zeroed(16_384), true, &mut |i, _| {
                    written.push(i)
                })
                .unwrap();
            assert!(!held);
            assert_eq!((store.writes(), written), ((0, 1), vec![1]));
        }
    }

    #[test]
    fn a_seed_store_refuses_the_wrong_size_and_never_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.dat");
        std::fs::write(&path, b"abcdefghyz").unwrap();
        assert!(Store::open_seed(&path, Layout::new(11, 4).unwrap()).is_err());
        let store = Store::open_seed(&path, Layout::new(10, 4).unwrap()).unwrap();
        assert_eq!(
            store.write_piece(0, b"XXXX").unwrap_err().kind(),
            io::ErrorKind::PermissionDenied
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"abcdefghyz");
    }
}
