//! Metadata of the shared file: name, sizes, the SHA-1 of every piece and of
//! the whole file, as a versioned JSON document (`<FileName>.meta.json`
//! beside the configs).
//!
//! Owns creating it (pieces hashed in parallel on a rayon pool while one
//! thread hashes the whole file in the same read pass), checking a file
//! against it, and its agreement with `Common.cfg`. Never touches the
//! network or protocol state.

use crate::integrity::checked;
use crate::protocol::bitfield::Bitfield;
use crate::protocol::config::CommonConfig;
use crate::protocol::layout::Layout;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub(crate) const FORMAT_VERSION: u32 = 1;

/// A SHA-1 digest.
pub use crate::integrity::sha1pair::{sha1, Hash};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub format_version: u32,
    pub file_name: String,
    pub file_size_bytes: u64,
    pub piece_size_bytes: u32,
    /// Lower-case hex.
    pub file_sha1: String,
    /// One a piece, in order.
    pub piece_sha1: Vec<HexHash>,
}

/// A SHA-1 digest written as 40 lower-case hex digits. Piece hashes are read
/// straight into these: read as strings, a document of many hashes took
/// memory at its peak that stayed in the peer's RSS (see docs/PERFORMANCE.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HexHash(pub Hash);

impl Serialize for HexHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&to_hex(&self.0))
    }
}

impl<'de> Deserialize<'de> for HexHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<HexHash, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = HexHash;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("40 hex digits")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HexHash, E> {
                hash_from_hex(v)
                    .map(HexHash)
                    .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_str(Visitor)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: not valid metadata: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("{}: hashing stopped before the end", path.display())]
    Stopped { path: PathBuf },
    #[error("{}: {what} is {meta} in the metadata but {config} in Common.cfg", path.display())]
    Disagrees {
        path: PathBuf,
        what: &'static str,
        meta: String,
        config: String,
    },
}

/// Bytes of metadata a piece takes (its SHA-1 in hex, quoted, and a separator).
pub(crate) const BYTES_PER_PIECE: u64 = 48;

/// Bytes as lower-case hex (hashes here, bitfields in the progress record).
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of a hex string, or `None` when it is not hex of even length.
pub(crate) fn from_hex(s: &str) -> Option<Vec<u8>> {
    // `from_str_radix` alone would also take a sign: "+f" is not hex.
    if s.len() % 2 != 0 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

fn hash_from_hex(s: &str) -> Option<Hash> {
    from_hex(s)?.try_into().ok()
}

/// A rayon pool for hashing whole files; `threads` 0 means one a core.
pub fn hashing_pool(threads: usize) -> io::Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("sha1-{i}"))
        .build()
        .map_err(|e| io::Error::other(format!("cannot start the hashing threads: {e}")))
}

/// `<FileName>.meta.json` in `dir` (in messages `TheFile.dat.meta.json`, not
/// `./TheFile.dat.meta.json`, for the working directory).
pub(crate) fn default_path(dir: &Path, file_name: &str) -> PathBuf {
    let name = format!("{file_name}.meta.json");
    if dir == Path::new(".") {
        PathBuf::from(name)
    } else {
        dir.join(name)
    }
}

/// Metadata checked and decoded for use: piece hashes as bytes.
#[derive(Debug, Clone)]
pub struct Verifier {
    pub layout: Layout,
    pub pieces: Vec<Hash>,
    pub file: Hash,
}

impl Verifier {
    pub(crate) fn piece_ok(&self, index: u32, data: &[u8]) -> bool {
        sha1(data) == self.pieces[index as usize]
    }

    /// [`Verifier::piece_ok`] for two pieces, hashed together (see
    /// [`crate::integrity::sha1pair`]: about 1.8 times the rate of one at a time).
    pub(crate) fn pieces_ok(&self, (i, a): (u32, &[u8]), (j, b): (u32, &[u8])) -> (bool, bool) {
        let (ha, hb) = crate::integrity::sha1pair::sha1_pair(a, b);
        (ha == self.pieces[i as usize], hb == self.pieces[j as usize])
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> MetaError + '_ {
    move |source| MetaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Hashes every piece of `file` in parallel on `pool`, reading each piece with
/// a positioned read; `None` for pieces that cannot be read. Each task reads
/// two neighbouring pieces and hashes them together ([`crate::integrity::sha1pair`]).
/// Once `stop()` holds, the pieces not yet read are left `None`.
pub(crate) fn hash_pieces(
    file: &File,
    layout: &Layout,
    pool: &rayon::ThreadPool,
    stop: &Stop,
) -> Vec<Option<Hash>> {
    let n = layout.num_pieces();
    let read = |buf: &mut Vec<u8>, index: u32| {
        buf.resize(layout.piece_len(index) as usize, 0);
        file.read_exact_at(buf, layout.offset(index)).is_ok()
    };
    let pairs: Vec<[Option<Hash>; 2]> = pool.install(|| {
        (0..n.div_ceil(2))
            .into_par_iter()
            .map_init(
                || (Vec::new(), Vec::new()),
                |(a, b), pair| {
                    if stop() {
                        return [None, None];
                    }
                    let (i, j) = (2 * pair, 2 * pair + 1);
                    let (a_ok, b_ok) = (read(a, i), j < n && read(b, j));
                    if a_ok && b_ok {
                        let (ha, hb) = crate::integrity::sha1pair::sha1_pair(a, b);
                        return [Some(ha), Some(hb)];
                    }
                    [a_ok.then(|| sha1(a)), b_ok.then(|| sha1(b))]
                },
            )
            .collect()
    });
    let mut hashes: Vec<Option<Hash>> = pairs.into_iter().flatten().collect();
    hashes.truncate(n as usize);
    hashes
}

/// Asked between pieces (and 1 MiB blocks) of a long hash pass: true ends
/// it early. A launcher passes "a signal came"; everyone else [`never()`].
pub(crate) type Stop = dyn Fn() -> bool + Sync;

/// A hash pass that runs to its end.
pub fn never() -> bool {
    false
}

/// Runs `pieces` (a parallel pass over the pieces of `file`) while a thread of
/// its own hashes the whole file: both read the same pages at about the same
/// time, so the file is read from the disk once.
pub(crate) fn with_whole_file_hash<T: Send>(
    file: &File,
    stop: &Stop,
    pieces: impl FnOnce() -> T + Send,
) -> (T, io::Result<Hash>) {
    std::thread::scope(|s| {
        let whole = s.spawn(|| hash_file(file, stop));
        let pieces = pieces();
        (pieces, whole.join().expect("hashing thread"))
    })
}

/// SHA-1 of a whole file, read sequentially in 1 MiB blocks; an
/// `Interrupted` error once `stop()` holds.
pub(crate) fn hash_file(file: &File, stop: &Stop) -> io::Result<Hash> {
    let mut hasher = Sha1::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        let n = file.read_at(&mut buf, offset)?;
        if n == 0 {
            return Ok(hasher.finalize().into());
        }
        hasher.update(&buf[..n]);
        offset += n as u64;
        if stop() {
            return Err(io::ErrorKind::Interrupted.into());
        }
    }
}

impl Meta {
    /// Hashes `path` with pieces of `piece_size_bytes`: the pieces in parallel
    /// on `pool`, the whole file on a thread of its own at the same time. The
    /// file then matches the new metadata by construction, which is recorded
    /// beside it ([`checked`]) so that a seed started on it does not hash it
    /// again.
    pub fn create(
        path: &Path,
        piece_size_bytes: u32,
        pool: &rayon::ThreadPool,
    ) -> Result<Meta, MetaError> {
        Self::create_until(path, piece_size_bytes, pool, &never)
    }

    /// [`Meta::create`], given up with [`MetaError::Stopped`] soon after
    /// `stop()` holds (a launcher asked to stop while it hashes a large file).
    pub(crate) fn create_until(
        path: &Path,
        piece_size_bytes: u32,
        pool: &rayon::ThreadPool,
        stop: &Stop,
    ) -> Result<Meta, MetaError> {
        let file = File::open(path).map_err(io_err(path))?;
        let before = checked::Before::take(&file).map_err(io_err(path))?;
        let size = before.size();
        let layout = Layout::new(size, piece_size_bytes).ok_or_else(|| MetaError::Invalid {
            path: path.to_path_buf(),
            reason: "empty file or piece size 0".into(),
        })?;
        let (pieces, whole) =
            with_whole_file_hash(&file, stop, || hash_pieces(&file, &layout, pool, stop));
        if stop() {
            return Err(MetaError::Stopped {
                path: path.to_path_buf(),
            });
        }
        let file_sha1 = to_hex(&whole.map_err(io_err(path))?);
        let piece_sha1 = pieces
            .into_iter()
            .map(|h| h.map(HexHash))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| io_err(path)(io::Error::other("file shrank while being hashed")))?;
        record_check(path, &file, before, &file_sha1, piece_size_bytes);
        Ok(Meta {
            format_version: FORMAT_VERSION,
            file_name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            file_size_bytes: size,
            piece_size_bytes,
            file_sha1,
            piece_sha1,
        })
    }

    pub fn load(path: &Path) -> Result<Meta, MetaError> {
        Meta::parse(path, &std::fs::read(path).map_err(io_err(path))?)
    }

    /// The document in `bytes`, read from `path` (named in errors). Only its
    /// form is checked here; [`Meta::verifier`] checks its content.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Meta, MetaError> {
        serde_json::from_slice(bytes).map_err(|e| MetaError::Invalid {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// Writes the document atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> Result<(), MetaError> {
        let text = serde_json::to_vec_pretty(self).expect("metadata serializes");
        crate::support::files::replace_file(path, &text, false).map_err(io_err(path))
    }

    /// Checks the document itself and its agreement with `Common.cfg`.
    pub fn verifier(
        &self,
        path: &Path,
        common: Option<&CommonConfig>,
    ) -> Result<Verifier, MetaError> {
        let invalid = |reason: String| MetaError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        if self.format_version != FORMAT_VERSION {
            return Err(invalid(format!(
                "format_version {} (this p2pft reads {FORMAT_VERSION})",
                self.format_version
            )));
        }
        if let Some(c) = common {
            let disagree = |what, meta: String, config: String| MetaError::Disagrees {
                path: path.to_path_buf(),
                what,
                meta,
                config,
            };
            for (what, meta, config) in [
                ("FileName", self.file_name.clone(), c.file_name.clone()),
                (
                    "FileSize",
                    self.file_size_bytes.to_string(),
                    c.file_size_bytes.to_string(),
                ),
                (
                    "PieceSize",
                    self.piece_size_bytes.to_string(),
                    c.piece_size_bytes.to_string(),
                ),
            ] {
                if meta != config {
                    return Err(disagree(what, meta, config));
                }
            }
        }
        let layout = Layout::new(self.file_size_bytes, self.piece_size_bytes)
            .ok_or_else(|| invalid("file_size_bytes or piece_size_bytes is 0".into()))?;
        if self.piece_sha1.len() != layout.num_pieces() as usize {
            return Err(invalid(format!(
                "{} piece hashes for {} pieces",
                self.piece_sha1.len(),
                layout.num_pieces()
            )));
        }
        let pieces = self.piece_sha1.iter().map(|h| h.0).collect();
        let file = hash_from_hex(&self.file_sha1)
            .ok_or_else(|| invalid("file_sha1 is not 40 hex digits".into()))?;
        Ok(Verifier {
            layout,
            pieces,
            file,
        })
    }
}

/// Writes a check record, logging (not failing) when none can be written.
fn record_check(
    path: &Path,
    file: &File,
    before: checked::Before,
    file_sha1: &str,
    piece_size: u32,
) {
    match checked::record(path, file, before, file_sha1, piece_size) {
        Ok(Ok(())) => log::debug!("recorded the check of {}", path.display()),
        Ok(Err(why)) => log::debug!("no check record for {}: {why:?}", path.display()),
        Err(e) => log::warn!(
            "cannot write the check record {}: {e}",
            checked::path_for(path).display()
        ),
    }
}

impl Verifier {
    /// Whether the check record beside `path` says `file` matched this
    /// metadata and has not changed since ([`checked`]).
    pub(crate) fn is_checked(&self, path: &Path, file: &File) -> bool {
        checked::is_current(
            path,
            file,
            &to_hex(&self.file),
            self.layout.piece_size_bytes(),
        )
    }

    /// [`Verifier::check_file`], then, when the file has its full size and
    /// every piece matches, a check record beside `path`.
    pub(crate) fn check_and_record(
        &self,
        path: &Path,
        file: &File,
        pool: &rayon::ThreadPool,
    ) -> Bitfield {
        let before = checked::Before::take(file);
        let good = self.check_file(file, pool);
        match before {
            Ok(before) if good.is_complete() && before.size() == self.layout.file_size_bytes() => {
                record_check(
                    path,
                    file,
                    before,
                    &to_hex(&self.file),
                    self.layout.piece_size_bytes(),
                )
            }
            _ => {}
        }
        good
    }

    /// Which pieces of `file` match, hashed in parallel on `pool`.
    pub(crate) fn check_file(&self, file: &File, pool: &rayon::ThreadPool) -> Bitfield {
        let mut good = Bitfield::empty(self.layout.num_pieces());
        for (i, h) in hash_pieces(file, &self.layout, pool, &never)
            .into_iter()
            .enumerate()
        {
            if h.as_ref() == Some(&self.pieces[i]) {
                good.set(i as u32, true);
            }
        }
        good
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> rayon::ThreadPool {
        hashing_pool(2).unwrap()
    }

    fn file_with(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.dat");
        std::fs::write(&path, bytes).unwrap();
        (dir, path)
    }

    #[test]
    fn sha1_of_abc_is_the_standard_vector() {
        assert_eq!(
            to_hex(&sha1(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }

    #[test]
    fn hex_with_a_sign_is_not_hex() {
        assert_eq!(from_hex("+f"), None);
        assert_eq!(from_hex("-0"), None);
        assert_eq!(from_hex("0a"), Some(vec![10]));
        assert_eq!(from_hex("FF"), Some(vec![255]));
        assert_eq!(hash_from_hex(&"+a".repeat(20)), None);
    }

    #[test]
    fn create_save_load_round_trip() {
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (_dir, path) = file_with(&bytes);
        let meta = Meta::create(&path, 4096, &pool()).unwrap();
        assert_eq!(meta.file_name, "f.dat");
        assert_eq!(meta.piece_sha1.len(), 3);
        assert_eq!(meta.piece_sha1[2], HexHash(sha1(&bytes[8192..])));
        assert_eq!(meta.file_sha1, to_hex(&sha1(&bytes)));
        let meta_path = path.with_extension("meta.json");
        meta.save(&meta_path).unwrap();
        assert_eq!(Meta::load(&meta_path).unwrap(), meta);
    }

    #[test]
    fn pieces_hashed_in_pairs_match_one_at_a_time_and_unreadable_ones_are_none() {
        let bytes: Vec<u8> = (0..4_500u32).map(|i| (i * 13 % 251) as u8).collect();
        let (_dir, path) = file_with(&bytes);
        for piece_size in [1000, 1500, 4500] {
            let layout = Layout::new(bytes.len() as u64, piece_size).unwrap();
            let want: Vec<Option<Hash>> = bytes
                .chunks(piece_size as usize)
                .map(|p| Some(sha1(p)))
                .collect();
            let got = hash_pieces(&File::open(&path).unwrap(), &layout, &pool(), &never);
            assert_eq!(got, want, "piece size {piece_size}");
        }
        // Cut inside piece 2 (of 1000-byte pieces): 2, 3 and 4 cannot be read;
        // 2 and 3 share a pair, 4 is alone.
        std::fs::write(&path, &bytes[..2_500]).unwrap();
        let layout = Layout::new(bytes.len() as u64, 1000).unwrap();
        let got = hash_pieces(&File::open(&path).unwrap(), &layout, &pool(), &never);
        let some = |r: std::ops::Range<usize>| Some(sha1(&bytes[r]));
        assert_eq!(got, [some(0..1000), some(1000..2000), None, None, None]);
    }

    #[test]
    fn a_flipped_byte_fails_exactly_its_piece() {
        let bytes = vec![5u8; 10_000];
        let (_dir, path) = file_with(&bytes);
        let meta = Meta::create(&path, 1000, &pool()).unwrap();
        let v = meta.verifier(&path, None).unwrap();
        let mut bad = bytes.clone();
        bad[4321] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        let good = v.check_file(&File::open(&path).unwrap(), &pool());
        assert_eq!(good.count(), 9);
        assert!(!good.has(4));
        assert!(v.piece_ok(3, &bad[3000..4000]));
        assert!(!v.piece_ok(4, &bad[4000..5000]));
    }

    #[test]
    fn disagreement_with_common_cfg_is_named() {
        let (_dir, path) = file_with(&[1u8; 100]);
        let meta = Meta::create(&path, 10, &pool()).unwrap();
        let common = |size: u64, piece: u32, name: &str| {
            CommonConfig::parse(
                Path::new("Common.cfg"),
                &format!("NumberOfPreferredNeighbors 1\nUnchokingInterval 1\nOptimisticUnchokingInterval 1\nFileName {name}\nFileSize {size}\nPieceSize {piece}\n"),
            )
            .unwrap()
            .0
        };
        assert!(meta
            .verifier(&path, Some(&common(100, 10, "f.dat")))
            .is_ok());
        let e = meta
            .verifier(&path, Some(&common(100, 20, "f.dat")))
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("PieceSize is 10 in the metadata but 20 in Common.cfg"),
            "{e}"
        );
        let e = meta
            .verifier(&path, Some(&common(99, 10, "f.dat")))
            .unwrap_err();
        assert!(e.to_string().contains("FileSize"), "{e}");
        let e = meta
            .verifier(&path, Some(&common(100, 10, "g.dat")))
            .unwrap_err();
        assert!(e.to_string().contains("FileName"), "{e}");
    }

    #[test]
    fn malformed_documents_are_refused() {
        let (dir, path) = file_with(&[1u8; 100]);
        let mut meta = Meta::create(&path, 10, &pool()).unwrap();
        meta.piece_sha1.pop();
        assert!(meta.verifier(&path, None).is_err());
        let meta = Meta::create(&path, 10, &pool()).unwrap();
        let doc = dir.path().join("f.meta.json");
        meta.save(&doc).unwrap();
        assert_eq!(Meta::load(&doc).unwrap(), meta);
        let text = std::fs::read_to_string(&doc).unwrap();
        let good = to_hex(&meta.piece_sha1[3].0);
        assert!(text.contains(&good));
        std::fs::write(&doc, text.replace(&good, "zz")).unwrap();
        let e = Meta::load(&doc).unwrap_err();
        assert!(e.to_string().contains("expected 40 hex digits"), "{e}");
        let mut meta = Meta::create(&path, 10, &pool()).unwrap();
        meta.format_version = 99;
        assert!(meta.verifier(&path, None).is_err());
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(Meta::load(&path), Err(MetaError::Invalid { .. })));
    }
}
