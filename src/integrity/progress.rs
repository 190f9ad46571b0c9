//! The progress record of a leecher: which pieces are durably on disk, kept
//! beside its file as `peer_<ID>/.<FileName>.p2pft-progress`.
//!
//! It lets a peer without metadata resume after a crash. Correctness rests on
//! one order: the data file is synced *before* a record naming its pieces is
//! written, and the record replaces the old one atomically (temporary file,
//! fsync, rename, fsync of the directory). A crash at any instant leaves
//! either the old record or the new one, each naming only durable pieces, so
//! a crash loses work, never correctness. With metadata a leecher resumes by
//! re-hashing instead, and its checkpoints only flush data (no record). Never
//! reads or writes piece data.

use crate::protocol::bitfield::Bitfield;
use crate::protocol::layout::Layout;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};

const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Record {
    format_version: u32,
    file_size_bytes: u64,
    piece_size_bytes: u32,
    /// The bitfield in wire form, as lower-case hex.
    have: String,
}

/// The record's path for a store at `file`.
pub fn path_for(file: &Path) -> PathBuf {
    crate::support::files::beside(file, "p2pft-progress")
}

/// The pieces a record names, if there is a readable record for this layout.
pub fn load(path: &Path, layout: &Layout) -> Option<Bitfield> {
    parse(&std::fs::read(path).ok()?, layout)
}

/// The pieces the record in `bytes` names, if it is a record for this layout.
pub fn parse(bytes: &[u8], layout: &Layout) -> Option<Bitfield> {
    let r: Record = serde_json::from_slice(bytes).ok()?;
    if r.format_version != FORMAT_VERSION
        || r.file_size_bytes != layout.file_size_bytes()
        || r.piece_size_bytes != layout.piece_size_bytes()
        || r.have.len() != layout.bitfield_len() * 2
    {
        return None;
    }
    Bitfield::from_wire(
        &crate::integrity::meta::from_hex(&r.have)?,
        layout.num_pieces(),
    )
}

fn save(path: &Path, layout: &Layout, have: &Bitfield) -> io::Result<()> {
    let record = Record {
        format_version: FORMAT_VERSION,
        file_size_bytes: layout.file_size_bytes(),
        piece_size_bytes: layout.piece_size_bytes(),
        have: crate::integrity::meta::to_hex(have.as_wire()),
    };
    let bytes = serde_json::to_vec(&record).expect("record serializes");
    crate::support::files::replace_file(path, &bytes, true)
}

/// Writes records in order: a checkpoint older than the last one written is
/// skipped, so concurrent checkpoints on a pool cannot move progress back.
pub(crate) struct Checkpointer {
    path: PathBuf,
    last_written: Mutex<u64>,
    layout: Layout,
    /// False with metadata (resume re-hashes instead): checkpoints then only
    /// flush data, which spreads the writeback over the download so that the
    /// flush before completion is short.
    write_record: bool,
}

impl Checkpointer {
    /// The checkpointer of the file at `file`, of `layout`.
    pub(crate) fn new(file: &Path, layout: Layout, write_record: bool) -> Checkpointer {
        Checkpointer {
            path: path_for(file),
            layout,
            last_written: Mutex::new(0),
            write_record,
        }
    }

    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the file's data durable with `sync`, then records `have`
    /// (snapshot number `generation`).
    pub(crate) fn checkpoint(
        &self,
        sync: impl FnOnce() -> io::Result<()>,
        generation: u64,
        have: &Bitfield,
    ) -> io::Result<()> {
        let mut last = self.last_written.lock();
        if generation <= *last {
            return Ok(());
        }
        sync()?;
        if !self.write_record {
            *last = generation;
            return Ok(());
        }
        save(&self.path, &self.layout, have).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot write progress record {}: {e}", self.path.display()),
            )
        })?;
        *last = generation;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_round_trips_and_old_ones_never_overwrite_new() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(10_000, 1_000).unwrap();
        let cp = Checkpointer::new(&dir.path().join("peer_2/f.dat"), layout, true);
        let synced = std::cell::Cell::new(0);
        let sync = || {
            synced.set(synced.get() + 1);
            Ok(())
        };
        assert_eq!(cp.path(), dir.path().join("peer_2/.f.dat.p2pft-progress"));
        assert_eq!(load(cp.path(), &layout), None);
        let mut have = Bitfield::empty(10);
        have.set(3, true);
        have.set(9, true);
        std::fs::create_dir_all(dir.path().join("peer_2")).unwrap();
        cp.checkpoint(sync, 2, &have).unwrap();
        assert_eq!(synced.get(), 1, "the data is synced before the record");
        assert_eq!(load(cp.path(), &layout), Some(have.clone()));
        cp.checkpoint(sync, 1, &Bitfield::empty(10)).unwrap();
        assert_eq!(synced.get(), 1, "an old generation does nothing");
        assert_eq!(load(cp.path(), &layout), Some(have));
    }

    #[test]
    fn parse_reads_a_record_without_a_file() {
        let layout = Layout::new(10_000, 1_000).unwrap();
        let text = br#"{"format_version":1,"file_size_bytes":10000,"piece_size_bytes":1000,"have":"1040"}"#;
        let have = parse(text, &layout).unwrap();
        assert_eq!(have.count(), 2);
        assert!(have.has(3) && have.has(9));
        assert_eq!(parse(&text[..30], &layout), None);
        let other = Layout::new(10_000, 2_000).unwrap();
        assert_eq!(parse(text, &other), None);
    }

    #[test]
    fn a_record_for_another_layout_or_garbage_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(10_000, 1_000).unwrap();
        let path = dir.path().join("rec");
        save(&path, &layout, &Bitfield::full(10)).unwrap();
        assert!(load(&path, &Layout::new(10_000, 500).unwrap()).is_none());
        assert!(load(&path, &Layout::new(9_999, 1_000).unwrap()).is_none());
        std::fs::write(&path, b"{\"format_version\":1").unwrap();
        assert!(load(&path, &layout).is_none());
    }
}
