//! The check record of a file: proof that a whole file matched its metadata,
//! kept beside it as `peer_<ID>/.<FileName>.p2pft-checked`, so that a seed
//! restarted on an unchanged file need not hash it all again (libtorrent's
//! resume data, git's index do the same).
//!
//! A record names the metadata (whole-file SHA-1 and piece size) and the file
//! as the kernel sees it: device, inode, size, modification and change times
//! (nanoseconds). Any write to the file moves its change time, which no user
//! program can set back, so a file that still has all of these is the file
//! that was hashed. One race remains, the one git calls "racy": file times
//! come from a clock that ticks every few milliseconds, so a write in the same
//! tick as the last one before the hash would leave the times unchanged. A
//! record is therefore only written when the file's change time is at least
//! [`RACY_MARGIN`] older than the start of the hash (a pass over a file
//! changed a moment ago waits that long first), and the times did not move
//! while it ran.
//!
//! What a stale record could cost is an early error, never bad data:
//! leechers verify every piece they receive against the metadata. Owns
//! reading and writing the record; never hashes or reads piece data.

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const FORMAT_VERSION: u32 = 1;

/// How much older than the hash the file's last change must be for a record
/// (ten ticks of a 1,000 Hz kernel clock, two of a 100 Hz one).
pub(crate) const RACY_MARGIN: Duration = Duration::from_millis(20);

/// The file as the kernel sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileId {
    pub fn of(file: &File) -> io::Result<FileId> {
        let m = file.metadata()?;
        let ns = |secs: i64, nsecs: i64| i128::from(secs) * 1_000_000_000 + i128::from(nsecs);
        Ok(FileId {
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        })
    }

    /// The file's last change (of data or of its inode).
    fn changed_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(u64::try_from(self.ctime_ns.max(0)).unwrap_or(u64::MAX))
    }
}

/// A whole-file hash pass about to start: the file's identity and the time.
#[derive(Debug, Clone, Copy)]
pub struct Before {
    id: FileId,
    at: SystemTime,
}

impl Before {
    /// The file's identity and the time the pass begins. A file changed less
    /// than [`RACY_MARGIN`] ago (a launcher's fresh copy of the seed's file)
    /// is first waited for, that long at most, so that the pass can leave a
    /// record: otherwise the next start would hash the whole file again.
    pub fn take(file: &File) -> io::Result<Before> {
        let id = FileId::of(file)?;
        let age = SystemTime::now()
            .duration_since(id.changed_at())
            .unwrap_or(Duration::ZERO);
        if let Some(wait) = RACY_MARGIN.checked_sub(age) {
            std::thread::sleep(wait);
        }
        Ok(Before {
            id,
            at: SystemTime::now(),
        })
    }

    /// The file's size when the pass began.
    pub fn size(&self) -> u64 {
        self.id.size
    }
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Record {
    format_version: u32,
    /// The metadata's whole-file SHA-1 (lower-case hex).
    file_sha1: String,
    piece_size_bytes: u32,
    file: FileId,
}

/// The record's path for the file at `path`.
pub fn path_for(path: &Path) -> PathBuf {
    crate::support::files::beside(path, "p2pft-checked")
}

/// Whether the record beside `path` says that `file`, as it is now, matched
/// the metadata with this whole-file SHA-1 and piece size.
pub(crate) fn is_current(path: &Path, file: &File, file_sha1: &str, piece_size_bytes: u32) -> bool {
    let Ok(text) = std::fs::read(path_for(path)) else {
        return false;
    };
    parse(&text, file_sha1, piece_size_bytes)
        .is_some_and(|recorded| FileId::of(file).is_ok_and(|id| id == recorded))
}

/// The file the record in `bytes` names, if it is a record of a match with
/// the metadata of this whole-file SHA-1 and piece size.
pub fn parse(bytes: &[u8], file_sha1: &str, piece_size_bytes: u32) -> Option<FileId> {
    let r = serde_json::from_slice::<Record>(bytes).ok()?;
    (r.format_version == FORMAT_VERSION
        && r.file_sha1 == file_sha1
        && r.piece_size_bytes == piece_size_bytes)
        .then_some(r.file)
}

/// Why no record was written after a pass that matched.
#[derive(Debug, PartialEq, Eq)]
pub enum NotRecorded {
    /// The file changed less than [`RACY_MARGIN`] before the pass.
    Racy,
    /// The file changed while it was being hashed.
    Changed,
}

/// Records that `file` at `path` matched the metadata in a pass that began at
/// `before` and has just ended. Replaces any old record atomically.
pub fn record(
    path: &Path,
    file: &File,
    before: Before,
    file_sha1: &str,
    piece_size_bytes: u32,
) -> io::Result<Result<(), NotRecorded>> {
    let now = FileId::of(file)?;
    if now != before.id {
        return Ok(Err(NotRecorded::Changed));
    }
    if now.changed_at() + RACY_MARGIN > before.at {
        return Ok(Err(NotRecorded::Racy));
    }
    let record = Record {
        format_version: FORMAT_VERSION,
        file_sha1: file_sha1.to_owned(),
        piece_size_bytes,
        file: now,
    };
    let bytes = serde_json::to_vec(&record).expect("record serializes");
    crate::support::files::replace_file(&path_for(path), &bytes, false)?;
    Ok(Ok(()))
}

/// Removes the record beside `path`, if any.
pub(crate) fn forget(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path_for(path)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn old_file() -> (tempfile::TempDir, PathBuf, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.dat");
        std::fs::write(&path, b"some data").unwrap();
        std::thread::sleep(RACY_MARGIN * 2);
        let file = File::options().read(true).write(true).open(&path).unwrap();
        (dir, path, file)
    }

    #[test]
    fn a_record_holds_until_the_file_is_written() {
        let (_dir, path, file) = old_file();
        assert!(!is_current(&path, &file, SHA, 4));
        let before = Before::take(&file).unwrap();
        assert_eq!(record(&path, &file, before, SHA, 4).unwrap(), Ok(()));
        assert!(is_current(&path, &file, SHA, 4));
        // Other metadata: not this record.
        assert!(!is_current(&path, &file, &SHA.replace('0', "f"), 4));
        assert!(!is_current(&path, &file, SHA, 8));
        // The same bytes written again still move the change time.
        std::thread::sleep(RACY_MARGIN);
        file.write_all_at(b"some", 0).unwrap();
        assert!(!is_current(&path, &file, SHA, 4));
    }

    /// A launcher copies the seed's file and hashes it at once: the pass
    /// waits out the margin instead of leaving no record.
    #[test]
    fn a_file_written_a_moment_ago_is_waited_for_and_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.dat");
        std::fs::write(&path, b"fresh").unwrap();
        let file = File::open(&path).unwrap();
        let before = Before::take(&file).unwrap();
        assert!(before.at >= FileId::of(&file).unwrap().changed_at() + RACY_MARGIN);
        assert_eq!(record(&path, &file, before, SHA, 4).unwrap(), Ok(()));
        assert!(is_current(&path, &file, SHA, 4));
    }

    #[test]
    fn no_record_for_a_file_changed_just_before_or_during_the_pass() {
        // A change time within the margin of the pass's start (a clock
        // that went back while the pass waited).
        let (_dir, path, file) = old_file();
        let id = FileId::of(&file).unwrap();
        let before = Before {
            id,
            at: id.changed_at() + RACY_MARGIN / 2,
        };
        assert_eq!(
            record(&path, &file, before, SHA, 4).unwrap(),
            Err(NotRecorded::Racy)
        );
        assert!(!path_for(&path).exists());

        let (_dir, path, file) = old_file();
        let before = Before::take(&file).unwrap();
        file.set_len(4).unwrap();
        assert_eq!(
            record(&path, &file, before, SHA, 4).unwrap(),
            Err(NotRecorded::Changed)
        );
        assert!(!is_current(&path, &file, SHA, 4));
    }

    #[test]
    fn parse_names_the_file_only_for_this_metadata() {
        let text = format!(
            r#"{{"format_version":1,"file_sha1":"{SHA}","piece_size_bytes":4,"file":{{"dev":1,"ino":2,"size":9,"mtime_ns":-5,"ctime_ns":7}}}}"#
        );
        let id = parse(text.as_bytes(), SHA, 4).unwrap();
        assert_eq!(id.size, 9);
        assert_eq!(id.mtime_ns, -5);
        assert_eq!(parse(text.as_bytes(), SHA, 8), None);
        assert_eq!(parse(text.as_bytes(), &SHA.replace('0', "f"), 4), None);
        assert_eq!(parse(&text.as_bytes()[..40], SHA, 4), None);
        let other_version = text.replace("\"format_version\":1", "\"format_version\":2");
        assert_eq!(parse(other_version.as_bytes(), SHA, 4), None);
    }

    #[test]
    fn forget_removes_the_record_and_tolerates_none() {
        let (_dir, path, file) = old_file();
        forget(&path).unwrap();
        let before = Before::take(&file).unwrap();
        record(&path, &file, before, SHA, 4).unwrap().unwrap();
        forget(&path).unwrap();
        assert!(!is_current(&path, &file, SHA, 4));
    }
}
