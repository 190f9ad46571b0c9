//! The shared file on disk, `peer_<ID>/<FileName>`, read and written a piece
//! at a time at its offset.
//!
//! Positioned reads and writes (`pread`/`pwrite`) on one `File`, so any thread
//! may use a shared `&Store` without a lock or a seek. A seed's store is opened
//! read-only and can never write. Never holds more than the caller's buffer in
//! memory: there is no whole-file buffer.

use crate::layout::Layout;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct Store {
    file: File,
    path: PathBuf,
    layout: Layout,
    writable: bool,
    /// A leecher's file was already there (with data) when opened: there may
    /// be something to resume.
    existed: bool,
}

fn with_path(path: &Path, what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

impl Store {
    /// Opens a complete file read-only; it must be exactly the layout's size.
    pub fn open_seed(path: &Path, layout: Layout) -> io::Result<Store> {
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
            path: path.to_path_buf(),
            layout,
            writable: false,
            existed: true,
        })
    }

    /// Opens (creating it and its directory if needed) the file a leecher fills,
    /// at its full size without writing it: the unwritten parts stay sparse.
    pub fn open_leecher(path: &Path, layout: Layout) -> io::Result<Store> {
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
        file.set_len(layout.file_size_bytes())
            .map_err(|e| with_path(path, "cannot size", e))?;
        Ok(Store {
            file,
            path: path.to_path_buf(),
            layout,
            writable: true,
            existed,
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file held data before this run (false: freshly created).
    pub fn existed(&self) -> bool {
        self.existed
    }

    /// The open file, for positioned reads (hashing).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Reads piece `index` into `buf`, resizing it to the piece's length.
    pub fn read_piece(&self, index: u32, buf: &mut Vec<u8>) -> io::Result<()> {
        buf.resize(self.layout.piece_len(index) as usize, 0);
        self.file
            .read_exact_at(buf, self.layout.offset(index))
            .map_err(|e| with_path(&self.path, &format!("cannot read piece {index} of"), e))
    }

    /// Writes piece `index` at its offset. `data` must be exactly the piece.
    pub fn write_piece(&self, index: u32, data: &[u8]) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "a seed's file is never written",
            ));
        }
        assert_eq!(data.len(), self.layout.piece_len(index) as usize);
        self.file
            .write_all_at(data, self.layout.offset(index))
            .map_err(|e| with_path(&self.path, &format!("cannot write piece {index} to"), e))
    }

    /// Makes everything written so far durable.
    pub fn sync(&self) -> io::Result<()> {
        if self.writable {
            self.file
                .sync_data()
                .map_err(|e| with_path(&self.path, "cannot flush", e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_land_at_their_offsets_and_the_file_has_its_full_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peer_2/f.dat");
        let layout = Layout::new(10, 4).unwrap();
        let store = Store::open_leecher(&path, layout).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 10);
        store.write_piece(2, b"yz").unwrap();
        store.write_piece(0, b"abcd").unwrap();
        store.write_piece(1, b"efgh").unwrap();
        store.sync().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"abcdefghyz");
        let mut buf = Vec::new();
        store.read_piece(1, &mut buf).unwrap();
        assert_eq!(buf, b"efgh");
        store.read_piece(2, &mut buf).unwrap();
        assert_eq!(buf, b"yz");
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
