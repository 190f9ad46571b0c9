//! Small file-system helpers every layer may use: errors that name their
//! path, where a record about a file lives, an exclusive lock, and atomic
//! replacement of a small file. Each call is one blocking operation on the
//! caller's thread; nothing here knows about pieces or the protocol.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// `e`, saying what was being done (`what`) to which path.
pub(crate) fn with_path(path: &Path, what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// `peer_<ID>/.<FileName>.<suffix>`: where a record about the file at `file`
/// lives (progress, check).
pub(crate) fn beside(file: &Path, suffix: &str) -> PathBuf {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    file.with_file_name(format!(".{name}.{suffix}"))
}

/// An exclusive `flock` on the file or directory at `path`, if nobody holds
/// one (else an error of kind `WouldBlock`); `None` where the file system
/// has no such locks.
pub(crate) fn try_lock(path: &Path) -> io::Result<Option<nix::fcntl::Flock<File>>> {
    use nix::errno::Errno;
    use nix::fcntl::{Flock, FlockArg};
    let file = File::open(path).map_err(|e| with_path(path, "cannot open", e))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, Errno::EWOULDBLOCK)) => Err(io::ErrorKind::WouldBlock.into()),
        Err((_, e)) => {
            log::debug!("no lock on {}: {e}", path.display());
            Ok(None)
        }
    }
}

/// Replaces `path` with `bytes` atomically: a temporary file beside it (its
/// name with `.tmp` added, so records of one file never share one), then a
/// rename. `durable`: the new contents and the rename are synced first, so
/// a crash leaves the old file or the new one, never a torn one. A failure (a
/// full disk) leaves the old file and no temporary one.
pub(crate) fn replace_file(path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let written = File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        Ok(())
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if durable {
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_replaced_whole_and_a_failed_replace_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.dat");
        let (progress, checked) = (
            beside(&file, "p2pft-progress"),
            beside(&file, "p2pft-checked"),
        );
        replace_file(&progress, b"one", true).unwrap();
        replace_file(&checked, b"two", false).unwrap();
        assert_eq!(std::fs::read(&progress).unwrap(), b"one");
        assert_eq!(std::fs::read(&checked).unwrap(), b"two");
        // A path the rename cannot replace: a directory with something in it.
        std::fs::remove_file(&progress).unwrap();
        std::fs::create_dir(&progress).unwrap();
        std::fs::write(progress.join("x"), b"").unwrap();
        assert!(replace_file(&progress, b"three", true).is_err());
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
        assert_eq!(std::fs::read(&checked).unwrap(), b"two");
    }
}
