//! `Common.cfg` and `PeerInfo.cfg`: text in, a validated [`Config`] out.
//!
//! Parsing happens in two steps, as in ripgrep's flags: lines become raw
//! `key -> (value, line)` pairs, then those are checked into typed values with
//! units in their names. Every mistake is a [`ConfigError`] naming the file,
//! the line and what was expected. This module reads the two files and, for
//! [`Config::check_local_peer`], stats the seed's file; it never writes.

use crate::protocol::layout::Layout;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) const COMMON_CFG: &str = "Common.cfg";
pub(crate) const PEER_INFO_CFG: &str = "PeerInfo.cfg";

/// Largest piece we accept: a piece travels in one frame and is held in memory
/// while it is verified and written, so this bounds per-piece memory.
pub(crate) const MAX_PIECE_SIZE_BYTES: u32 = 64 * 1024 * 1024;

/// What is wrong with a configuration, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line number, when the mistake sits on one line.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

fn err(file: &Path, line: Option<usize>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        file: file.to_path_buf(),
        line,
        message: message.into(),
    }
}

/// The swarm-wide settings of `Common.cfg`.
#[derive(Debug, Clone, PartialEq)]
pub struct CommonConfig {
    /// k: how many preferred neighbours a peer unchokes.
    pub preferred_neighbors: usize,
    /// p: time between re-selections of the preferred neighbours.
    pub unchoking_interval: Duration,
    /// m: time between re-selections of the optimistic neighbour.
    pub optimistic_unchoking_interval: Duration,
    /// A bare file name, no directory part.
    pub file_name: String,
    pub file_size_bytes: u64,
    pub piece_size_bytes: u32,
    pub layout: Layout,
    /// `P2pftStrict 1`: every extension off; the peer behaves as SPEC.md alone says.
    pub strict: bool,
    /// `P2pftPipelineDepth N`: requests outstanding at once to a p2pft
    /// neighbour (default: [`default_pipeline_depth`] of the piece size).
    pub pipeline_depth: u32,
    /// No `P2pftPipelineDepth` was given: each neighbour's depth may grow
    /// past the default where its link needs more (see [`crate::policy::pacing`]).
    pub pipeline_adaptive: bool,
    /// `P2pftDirectIo 0` turns off writing received pieces with direct I/O
    /// (on by default; it falls back by itself where the file system refuses).
    pub direct_io: bool,
    /// `P2pftSecretFile PATH`: the file holding the swarm's shared secret,
    /// relative to the swarm directory; peers must prove they know it (see
    /// [`crate::protocol::auth`]). As written in Common.cfg: [`Config::secret_path`]
    /// resolves it.
    pub secret_file: Option<PathBuf>,
    /// `P2pftMaxUploadRate RATE`: piece bytes a second this peer sends, to
    /// all neighbours together, at most (see [`parse_rate`]).
    pub max_upload_rate: Option<u64>,
    /// `P2pftMaxDownloadRate RATE`: piece bytes a second it receives, at most.
    pub max_download_rate: Option<u64>,
    /// Unchokes interested neighbours (always, from Common.cfg); a peer
    /// started with `--leech-only` does not, the baseline of `bench --hosts`.
    pub serve: bool,
}

/// One line of `PeerInfo.cfg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerEntry {
    pub id: u32,
    pub host: String,
    pub port: u16,
    pub has_file: bool,
    /// Where the entry was written, for messages about it.
    pub line: usize,
}

/// Bytes of spec log a peer writes at most for each piece and peer of the
/// swarm: every neighbour's `have` of it is a line (about 90 bytes, "... Peer
/// 1002 received the 'have' message from 1003 for the piece 12345."), and so
/// is its download (see docs/PERFORMANCE.md for a measured log).
pub(crate) const MAX_BYTES_PER_PIECE_AND_PEER: u64 = 96;

/// The most one peer's log holds in a swarm of `peers` sharing `pieces`.
pub(crate) fn max_log_bytes(pieces: u64, peers: u64) -> u64 {
    pieces
        .saturating_mul(peers)
        .saturating_mul(MAX_BYTES_PER_PIECE_AND_PEER)
}

/// Both files of one swarm directory, checked.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// The directory the files were read from; peers work in it.
    pub dir: PathBuf,
    pub common: CommonConfig,
    /// In file order, which is start order.
    pub peers: Vec<PeerEntry>,
    /// Things worth telling a user that do not stop a peer (unknown keys).
    pub warnings: Vec<String>,
}

/// Lines of a config file with comments and blank lines dropped, each split
/// on any whitespace; CRLF and trailing spaces vanish with the split.
fn content_lines(text: &str) -> impl Iterator<Item = (usize, Vec<&str>)> {
    text.lines().enumerate().filter_map(|(i, line)| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        Some((i + 1, line.split_whitespace().collect()))
    })
}

fn read_file(path: &Path) -> Result<String, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| err(path, None, format!("cannot read: {e}")))?;
    String::from_utf8(bytes).map_err(|_| err(path, None, "is not UTF-8 text"))
}

const COMMON_KEYS: [&str; 12] = [
    "NumberOfPreferredNeighbors",
    "UnchokingInterval",
    "OptimisticUnchokingInterval",
    "FileName",
    "FileSize",
    "PieceSize",
    // p2pft's own keys; other implementations ignore unknown keys.
    "P2pftStrict",
    "P2pftPipelineDepth",
    "P2pftDirectIo",
    "P2pftSecretFile",
    "P2pftMaxUploadRate",
    "P2pftMaxDownloadRate",
];

/// A size or rate that does not read as one.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SizeError {
    #[error("`{0}` is not a size")]
    NotANumber(String),
    #[error("`{0}`: unit must be K, M or G")]
    Unit(String),
    #[error("`{0}` is not a size above 0")]
    NotAbove0(String),
    #[error("`{0}`: rates are in bytes a second (K, M, G: KiB/s, MiB/s, GiB/s), not bits; e.g. 100 Mbit/s is 11.9M")]
    Bits(String),
}

/// A size such as `512M`, `256K`, `2G` or `1000` (bytes; K, M, G are powers of 1024).
pub(crate) fn parse_size(s: &str) -> Result<u64, SizeError> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| SizeError::NotANumber(s.to_string()))?;
    let mult = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return Err(SizeError::Unit(s.to_string())),
    };
    n.checked_mul(mult)
        .filter(|&n| n > 0)
        .ok_or_else(|| SizeError::NotAbove0(s.to_string()))
}

/// A rate in bytes a second, as [`parse_size`] reads a size (`50M` is 50
/// MiB/s), with an optional `/s`. A lowercase `b` (`50Mb`, `400kbps`) is
/// refused: it usually means bits, and caps are in bytes.
pub(crate) fn parse_rate(s: &str) -> Result<u64, SizeError> {
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    if t.contains('b')
        || t.to_ascii_lowercase().contains("bit")
        || t.to_ascii_lowercase().ends_with("ps")
    {
        return Err(SizeError::Bits(s.trim().to_string()));
    }
    parse_size(t)
}

/// Requests outstanding at once to one p2pft neighbour, unless configured:
/// enough for [`PIPELINE_TARGET_BYTES`] in flight, from 4 to 64 requests.
/// Small pieces need more of them: at 16 KiB, 4 requests (64 KiB) left each
/// connection waiting on round trips, and past 32 memory grew for no speed
/// (see docs/PERFORMANCE.md).
pub(crate) fn default_pipeline_depth(piece_size_bytes: u32) -> u32 {
    PIPELINE_TARGET_BYTES
        .div_ceil(piece_size_bytes.max(1))
        .clamp(4, 64)
}

/// Bytes of requested pieces to keep in flight per neighbour by default.
pub(crate) const PIPELINE_TARGET_BYTES: u32 = 512 * 1024;

impl CommonConfig {
    /// Parses the text of a `Common.cfg` read from `path` (used in messages).
    /// Returns the settings and one warning per unknown key.
    pub fn parse(path: &Path, text: &str) -> Result<(CommonConfig, Vec<String>), ConfigError> {
        let mut raw: HashMap<&'static str, (&str, usize)> = HashMap::new();
        let mut warnings = Vec::new();
        for (line, fields) in content_lines(text) {
            if fields.len() != 2 {
                // Values are split on white space, as every implementation
                // of this format reads them: a name cannot hold a space.
                let hint = if fields.len() > 2 && fields[0].eq_ignore_ascii_case("FileName") {
                    " (a file name with spaces cannot be shared: rename the file)"
                } else {
                    ""
                };
                return Err(err(
                    path,
                    Some(line),
                    format!(
                        "expected `Key Value` (two fields), found {} field(s): `{}`{hint}",
                        fields.len(),
                        fields.join(" ")
                    ),
                ));
            }
            let Some(key) = COMMON_KEYS
                .iter()
                .find(|k| k.eq_ignore_ascii_case(fields[0]))
            else {
                warnings.push(format!(
                    "{}:{}: ignoring unknown key `{}`",
                    path.display(),
                    line,
                    fields[0]
                ));
                continue;
            };
            if let Some((_, first)) = raw.insert(key, (fields[1], line)) {
                return Err(err(
                    path,
                    Some(line),
                    format!("duplicate key {key} (first given on line {first})"),
                ));
            }
        }
        let get = |key: &'static str| {
            raw.get(key)
                .copied()
                .ok_or_else(|| err(path, None, format!("missing key {key}")))
        };
        let positive_int = |key: &'static str| -> Result<(u64, usize), ConfigError> {
            let (value, line) = get(key)?;
            match value.parse::<u64>() {
                Ok(0) => Err(err(
                    path,
                    Some(line),
                    format!("{key} must be at least 1, found 0"),
                )),
                Ok(n) => Ok((n, line)),
                Err(_) => Err(err(
                    path,
                    Some(line),
                    format!("{key} must be a positive whole number, found `{value}`"),
                )),
            }
        };
        let seconds = |key: &'static str| -> Result<Duration, ConfigError> {
            let (value, line) = get(key)?;
            // Below a millisecond, a choke timer would fire on every pass of
            // the engine's loop (and 1e-10 made a timer of zero).
            match value.parse::<f64>() {
                Ok(s) if (0.001..=86_400.0).contains(&s) => Ok(Duration::from_secs_f64(s)),
                _ => Err(err(
                    path,
                    Some(line),
                    format!(
                        "{key} must be a positive number of seconds, from 0.001 to 86400, found `{value}`"
                    ),
                )),
            }
        };

        let (k, k_line) = positive_int("NumberOfPreferredNeighbors")?;
        let preferred_neighbors = usize::try_from(k)
            .ok()
            .filter(|&k| k <= 10_000)
            .ok_or_else(|| {
                err(
                    path,
                    Some(k_line),
                    "NumberOfPreferredNeighbors is too large",
                )
            })?;
        let unchoking_interval = seconds("UnchokingInterval")?;
        let optimistic_unchoking_interval = seconds("OptimisticUnchokingInterval")?;

        let (file_name, name_line) = get("FileName")?;
        if file_name.contains(['/', '\\']) || file_name == "." || file_name.contains("..") {
            return Err(err(
                path,
                Some(name_line),
                format!(
                    "FileName must be a bare file name without a path or `..`, found `{file_name}`"
                ),
            ));
        }
        let (file_size_bytes, _) = positive_int("FileSize")?;
        let (piece_size, piece_line) = positive_int("PieceSize")?;
        let piece_size_bytes = u32::try_from(piece_size)
            .ok()
            .filter(|&p| p <= MAX_PIECE_SIZE_BYTES)
            .ok_or_else(|| {
                err(
                    path,
                    Some(piece_line),
                    format!("PieceSize must be at most {MAX_PIECE_SIZE_BYTES} bytes, found {piece_size}"),
                )
            })?;
        let flag = |key: &str, default: bool| match raw.get(key) {
            None => Ok(default),
            Some(("0", _)) => Ok(false),
            Some(("1", _)) => Ok(true),
            Some((other, line)) => Err(err(
                path,
                Some(*line),
                format!("{key} must be 0 or 1, found `{other}`"),
            )),
        };
        let strict = flag("P2pftStrict", false)?;
        let direct_io = flag("P2pftDirectIo", true)?;
        let pipeline_depth = match raw.get("P2pftPipelineDepth") {
            None => default_pipeline_depth(piece_size_bytes),
            Some(_) => {
                let (n, line) = positive_int("P2pftPipelineDepth")?;
                u32::try_from(n).ok().filter(|&n| n <= 64).ok_or_else(|| {
                    err(path, Some(line), "P2pftPipelineDepth must be from 1 to 64")
                })?
            }
        };
        let rate = |key: &str| match raw.get(key) {
            None => Ok(None),
            Some((value, line)) => parse_rate(value)
                .map(Some)
                .map_err(|e| err(path, Some(*line), format!("{key}: {e}"))),
        };
        let max_upload_rate = rate("P2pftMaxUploadRate")?;
        let max_download_rate = rate("P2pftMaxDownloadRate")?;
        let layout = Layout::new(file_size_bytes, piece_size_bytes).ok_or_else(|| {
            err(
                path,
                Some(piece_line),
                "FileSize / PieceSize gives more than 2^32-1 pieces",
            )
        })?;
        Ok((
            CommonConfig {
                preferred_neighbors,
                unchoking_interval,
                optimistic_unchoking_interval,
                file_name: file_name.to_string(),
                file_size_bytes,
                piece_size_bytes,
                layout,
                strict,
                pipeline_depth,
                pipeline_adaptive: !raw.contains_key("P2pftPipelineDepth"),
                direct_io,
                secret_file: raw.get("P2pftSecretFile").map(|(v, _)| PathBuf::from(v)),
                max_upload_rate,
                max_download_rate,
                serve: true,
            },
            warnings,
        ))
    }
}

/// `localhost` and `127.0.0.1` name the same host; so do case variants.
fn host_key(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    if host == "localhost" {
        "127.0.0.1".to_string()
    } else {
        host
    }
}

/// Parses the text of a `PeerInfo.cfg` read from `path` (used in messages).
pub fn parse_peer_info(path: &Path, text: &str) -> Result<Vec<PeerEntry>, ConfigError> {
    let mut peers: Vec<PeerEntry> = Vec::new();
    for (line, fields) in content_lines(text) {
        if fields.len() != 4 {
            return Err(err(
                path,
                Some(line),
                format!(
                    "expected `PeerID Host ListeningPort HasFile` (four fields), found {}: `{}`",
                    fields.len(),
                    fields.join(" ")
                ),
            ));
        }
        let id: u32 = fields[0].parse().map_err(|_| {
            err(
                path,
                Some(line),
                format!(
                    "PeerID must be a whole number from 0 to 4294967295, found `{}`",
                    fields[0]
                ),
            )
        })?;
        let port: u16 = fields[2].parse().ok().filter(|&p| p != 0).ok_or_else(|| {
            err(
                path,
                Some(line),
                format!(
                    "ListeningPort must be a port from 1 to 65535, found `{}`",
                    fields[2]
                ),
            )
        })?;
        let has_file = match fields[3] {
            "1" => true,
            "0" => false,
            other => {
                return Err(err(
                    path,
                    Some(line),
                    format!("HasFile must be 0 or 1, found `{other}`"),
                ))
            }
        };
        let host = fields[1].to_string();
        if let Some(prev) = peers.iter().find(|p| p.id == id) {
            return Err(err(
                path,
                Some(line),
                format!("duplicate PeerID {id} (first given on line {})", prev.line),
            ));
        }
        if let Some(prev) = peers
            .iter()
            .find(|p| p.port == port && host_key(&p.host) == host_key(&host))
        {
            return Err(err(
                path,
                Some(line),
                format!(
                    "peer {id} uses {host}:{port}, already taken by peer {} on line {}",
                    prev.id, prev.line
                ),
            ));
        }
        peers.push(PeerEntry {
            id,
            host,
            port,
            has_file,
            line,
        });
    }
    if peers.is_empty() {
        return Err(err(path, None, "lists no peers"));
    }
    Ok(peers)
}

/// Logs smaller than this are never worth a warning, whatever the file size.
const LOG_WARN_BYTES: u64 = 1 << 20;

/// `bytes` in the largest binary unit that leaves at least 1: "7.0 KiB".
fn size_text(bytes: u64) -> String {
    let units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

impl Config {
    /// Reads `Common.cfg` and `PeerInfo.cfg` from `dir`.
    pub(crate) fn load(dir: &Path) -> Result<Config, ConfigError> {
        // Paths in messages say `Common.cfg` and `peer_2/f`, not `./Common.cfg`.
        let dir = if dir == Path::new(".") {
            Path::new("")
        } else {
            dir
        };
        let in_dir = |name: &str| dir.join(name);
        let common_path = in_dir(COMMON_CFG);
        let (common, warnings) = CommonConfig::parse(&common_path, &read_file(&common_path)?)?;
        let info_path = in_dir(PEER_INFO_CFG);
        let peers = parse_peer_info(&info_path, &read_file(&info_path)?)?;
        let mut warnings = warnings;
        if !peers.iter().any(|p| p.has_file) {
            warnings.push(format!(
                "{}: no peer has HasFile 1; the swarm can only finish if the leechers' files together hold every piece",
                info_path.display()
            ));
        }
        let pieces = u64::from(common.layout.num_pieces());
        let log = max_log_bytes(pieces, peers.len() as u64);
        if log > common.file_size_bytes.max(LOG_WARN_BYTES) {
            warnings.push(format!(
                "{}: PieceSize {} makes {pieces} pieces: each peer's log may grow to {} (a line a piece and neighbour), more than the file; a larger PieceSize keeps the logs small and the transfer fast",
                common_path.display(),
                common.piece_size_bytes,
                size_text(log)
            ));
        }
        Ok(Config {
            dir: dir.to_path_buf(),
            common,
            peers,
            warnings,
        })
    }

    /// Where the secret file of an authenticated swarm is, if it is one.
    pub(crate) fn secret_path(&self) -> Option<PathBuf> {
        self.common.secret_file.as_ref().map(|f| self.dir.join(f))
    }

    pub(crate) fn peer_info_path(&self) -> PathBuf {
        self.dir.join(PEER_INFO_CFG)
    }

    /// Position of `id` in PeerInfo.cfg (its start order).
    pub(crate) fn position(&self, id: u32) -> Option<usize> {
        self.peers.iter().position(|p| p.id == id)
    }

    pub(crate) fn peer(&self, id: u32) -> Option<&PeerEntry> {
        self.peers.iter().find(|p| p.id == id)
    }

    /// `peer_<ID>/` under the swarm directory.
    pub(crate) fn peer_dir(&self, id: u32) -> PathBuf {
        self.dir.join(format!("peer_{id}"))
    }

    /// `peer_<ID>/<FileName>`.
    pub(crate) fn peer_file(&self, id: u32) -> PathBuf {
        self.peer_dir(id).join(&self.common.file_name)
    }

    /// `log_peer_<ID>.log` in the swarm directory.
    pub(crate) fn log_path(&self, id: u32) -> PathBuf {
        self.dir.join(format!("log_peer_{id}.log"))
    }

    /// The entry of `id`, or an error naming the IDs that are listed.
    pub(crate) fn listed(&self, id: u32) -> Result<&PeerEntry, ConfigError> {
        self.peer(id).ok_or_else(|| {
            let known: Vec<String> = self.peers.iter().map(|p| p.id.to_string()).collect();
            err(
                &self.peer_info_path(),
                None,
                format!("peer {id} is not listed (listed: {})", known.join(", ")),
            )
        })
    }

    /// Checks that `id` may start here: it is listed, and if it is a seed its
    /// file exists with exactly FileSize bytes.
    pub(crate) fn check_local_peer(&self, id: u32) -> Result<&PeerEntry, ConfigError> {
        let entry = self.listed(id)?;
        if entry.has_file {
            let file = self.peer_file(id);
            let want = self.common.file_size_bytes;
            let here = format!("peer {id} has HasFile 1 on line {}", entry.line);
            match std::fs::metadata(&file) {
                Ok(m) if m.is_file() && m.len() == want => {}
                Ok(m) if m.is_file() => {
                    return Err(err(
                        &file,
                        None,
                        format!(
                            "{here}, but this file has {} bytes where FileSize is {want}",
                            m.len()
                        ),
                    ))
                }
                Ok(_) => {
                    return Err(err(
                        &file,
                        None,
                        format!("{here}, but this is not a regular file"),
                    ))
                }
                Err(e) => {
                    return Err(err(
                        &file,
                        None,
                        format!("{here}, but the file cannot be read: {e}"),
                    ))
                }
            }
        }
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("256K"), Ok(256 << 10));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("M").is_err());
    }

    #[test]
    fn rates_are_bytes_a_second_and_bits_are_refused() {
        assert_eq!(parse_rate("50M"), Ok(50 << 20));
        assert_eq!(parse_rate("50MiB/s"), Ok(50 << 20));
        assert_eq!(parse_rate("800K/s"), Ok(800 << 10));
        assert_eq!(parse_rate("1000000"), Ok(1_000_000));
        for bits in ["50Mb", "100Mbit", "400kbps", "1Gbps"] {
            let e = parse_rate(bits).unwrap_err();
            assert!(e.to_string().contains("not bits"), "{bits}: {e}");
        }
        assert!(parse_rate("0").is_err());
    }

    const GOOD_COMMON: &str = "NumberOfPreferredNeighbors 3\nUnchokingInterval 5\nOptimisticUnchokingInterval 10\nFileName TheFile.dat\nFileSize 10000232\nPieceSize 32768\n";

    fn common(text: &str) -> Result<(CommonConfig, Vec<String>), ConfigError> {
        CommonConfig::parse(Path::new("Common.cfg"), text)
    }

    fn common_err(text: &str) -> ConfigError {
        common(text).expect_err("config should be refused")
    }

    #[test]
    fn an_interval_that_rounds_to_no_time_is_refused() {
        // Seen writing the common_cfg fuzz target's checks: a tiny positive
        // interval was accepted as a zero Duration, a timer that never waits.
        for tiny in ["1e-10", "0.0009", "0"] {
            let text =
                GOOD_COMMON.replace("UnchokingInterval 5", &format!("UnchokingInterval {tiny}"));
            let e = common_err(&text);
            assert!(e.message.contains("from 0.001 to 86400"), "{tiny}: {e}");
        }
        let text = GOOD_COMMON.replace("UnchokingInterval 5", "UnchokingInterval 0.001");
        assert_eq!(
            common(&text).unwrap().0.unchoking_interval,
            Duration::from_millis(1)
        );
    }

    #[test]
    fn parses_the_course_example() {
        let (c, warnings) = common(GOOD_COMMON).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(c.preferred_neighbors, 3);
        assert_eq!(c.unchoking_interval, Duration::from_secs(5));
        assert_eq!(c.optimistic_unchoking_interval, Duration::from_secs(10));
        assert_eq!(c.file_name, "TheFile.dat");
        assert_eq!(c.layout.num_pieces(), 306);
    }

    #[test]
    fn tolerates_tabs_crlf_trailing_space_blank_lines_and_comments() {
        let text = "# swarm\r\n\r\nNumberOfPreferredNeighbors\t3  \r\n  UnchokingInterval 5\r\nOptimisticUnchokingInterval   10\r\n\nFileName TheFile.dat\t\r\nFileSize 10000232\r\nPieceSize 32768";
        let (c, _) = common(text).unwrap();
        assert_eq!(c, common(GOOD_COMMON).unwrap().0);
    }

    #[test]
    fn fractional_intervals_are_accepted() {
        let text = GOOD_COMMON.replace("UnchokingInterval 5", "UnchokingInterval 0.25");
        assert_eq!(
            common(&text).unwrap().0.unchoking_interval,
            Duration::from_millis(250)
        );
    }

    #[test]
    fn p2pft_keys_are_read_and_checked() {
        let (c, _) = common(GOOD_COMMON).unwrap();
        assert!(!c.strict);
        assert_eq!(c.pipeline_depth, default_pipeline_depth(32768));
        assert_eq!(
            [1, 16_384, 65_536, 262_144, 1 << 20].map(default_pipeline_depth),
            [64, 32, 8, 4, 4]
        );
        assert!(c.direct_io);
        let (c, w) = common(&format!(
            "{GOOD_COMMON}P2pftStrict 1\nP2pftPipelineDepth 8\nP2pftDirectIo 0\n"
        ))
        .unwrap();
        assert!(w.is_empty());
        assert!(c.strict);
        assert_eq!(c.pipeline_depth, 8);
        assert!(!c.direct_io);
        for bad in [
            "P2pftDirectIo on",
            "P2pftStrict yes",
            "P2pftPipelineDepth 0",
            "P2pftPipelineDepth 65",
        ] {
            assert_eq!(
                common_err(&format!("{GOOD_COMMON}{bad}\n")).line,
                Some(7),
                "{bad}"
            );
        }
    }

    #[test]
    fn unknown_keys_warn_with_their_line() {
        let (_, warnings) = common(&format!("{GOOD_COMMON}MaxConnections 9\n")).unwrap();
        assert_eq!(
            warnings,
            vec!["Common.cfg:7: ignoring unknown key `MaxConnections`"]
        );
    }

    #[test]
    fn missing_key_is_named() {
        let e = common_err(&GOOD_COMMON.replace("PieceSize 32768\n", ""));
        assert_eq!(e.to_string(), "Common.cfg: missing key PieceSize");
    }

    #[test]
    fn duplicate_key_names_both_lines() {
        let e = common_err(&format!("{GOOD_COMMON}FileSize 5\n"));
        assert_eq!(e.line, Some(7));
        assert!(
            e.message
                .contains("duplicate key FileSize (first given on line 5)"),
            "{e}"
        );
    }

    #[test]
    fn non_numbers_zero_and_negative_values_are_refused_on_their_line() {
        for (from, to, line) in [
            ("FileSize 10000232", "FileSize ten", 5),
            ("FileSize 10000232", "FileSize 0", 5),
            ("FileSize 10000232", "FileSize -5", 5),
            ("PieceSize 32768", "PieceSize 0", 6),
            ("UnchokingInterval 5", "UnchokingInterval 0", 2),
            ("UnchokingInterval 5", "UnchokingInterval -1", 2),
            (
                "OptimisticUnchokingInterval 10",
                "OptimisticUnchokingInterval x",
                3,
            ),
            (
                "NumberOfPreferredNeighbors 3",
                "NumberOfPreferredNeighbors 0",
                1,
            ),
        ] {
            let e = common_err(&GOOD_COMMON.replace(from, to));
            assert_eq!(e.line, Some(line), "{to}: {e}");
        }
    }

    #[test]
    fn file_name_with_path_or_dotdot_is_refused() {
        for name in ["a/b.dat", "..", "x..y", "..\\evil", "/etc/passwd"] {
            let e = common_err(&GOOD_COMMON.replace("TheFile.dat", name));
            assert_eq!(e.line, Some(4), "{name}");
        }
    }

    #[test]
    fn a_line_with_three_fields_is_refused() {
        let e = common_err(&GOOD_COMMON.replace("FileName TheFile.dat", "FileName The File.dat"));
        assert_eq!(e.line, Some(4));
    }

    #[test]
    fn huge_piece_size_is_refused() {
        let e = common_err(&GOOD_COMMON.replace("PieceSize 32768", "PieceSize 9999999999"));
        assert_eq!(e.line, Some(6));
    }

    fn peers(text: &str) -> Result<Vec<PeerEntry>, ConfigError> {
        parse_peer_info(Path::new("PeerInfo.cfg"), text)
    }

    #[test]
    fn parses_peer_info_in_order() {
        let p = peers("1001 lin114-00.cise.ufl.edu 6008 1\r\n\t1002 localhost 6009 0 \n").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].id, 1001);
        assert!(p[0].has_file);
        assert_eq!(p[1].host, "localhost");
        assert_eq!(p[1].port, 6009);
        assert_eq!(p[1].line, 2);
    }

    #[test]
    fn peer_info_mistakes_name_their_line() {
        for (text, line, needle) in [
            ("1001 h 6008 1\n1001 h 6009 0\n", 2, "duplicate PeerID 1001"),
            (
                "1001 localhost 6008 1\n1002 127.0.0.1 6008 0\n",
                2,
                "already taken by peer 1001",
            ),
            ("1001 h 6008 2\n", 1, "HasFile must be 0 or 1"),
            ("1001 h 6008\n", 1, "four fields"),
            ("abc h 6008 1\n", 1, "PeerID"),
            ("1001 h 70000 1\n", 1, "ListeningPort"),
            ("1001 h 0 1\n", 1, "ListeningPort"),
        ] {
            let e = peers(text).expect_err(text);
            assert_eq!(e.line, Some(line), "{text}");
            assert!(e.message.contains(needle), "{text}: {e}");
        }
        assert_eq!(
            peers("\n# none\n").unwrap_err().to_string(),
            "PeerInfo.cfg: lists no peers"
        );
    }

    fn swarm_dir(peer_info: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(COMMON_CFG),
            GOOD_COMMON.replace("10000232", "100"),
        )
        .unwrap();
        std::fs::write(dir.path().join(PEER_INFO_CFG), peer_info).unwrap();
        dir
    }

    #[test]
    fn an_unlisted_id_is_refused() {
        let dir = swarm_dir("1001 localhost 6008 0\n");
        let config = Config::load(dir.path()).unwrap();
        let e = config.check_local_peer(7).unwrap_err();
        assert!(
            e.message.contains("peer 7 is not listed (listed: 1001)"),
            "{e}"
        );
    }

    #[test]
    fn a_seed_needs_its_file_at_exactly_file_size() {
        let dir = swarm_dir("1001 localhost 6008 1\n");
        let config = Config::load(dir.path()).unwrap();
        let e = config.check_local_peer(1001).unwrap_err();
        assert!(e.message.contains("cannot be read"), "{e}");
        std::fs::create_dir(config.peer_dir(1001)).unwrap();
        std::fs::write(config.peer_file(1001), [0u8; 99]).unwrap();
        let e = config.check_local_peer(1001).unwrap_err();
        assert!(
            e.message.contains("has 99 bytes where FileSize is 100"),
            "{e}"
        );
        std::fs::write(config.peer_file(1001), [0u8; 100]).unwrap();
        assert!(config.check_local_peer(1001).is_ok());
    }

    #[test]
    fn sizes_read_in_their_largest_unit() {
        assert_eq!(size_text(0), "0 bytes");
        assert_eq!(size_text(1023), "1023 bytes");
        assert_eq!(size_text(7200), "7.0 KiB");
        assert_eq!(size_text(3_623_992_320), "3.4 GiB");
        assert_eq!(size_text(u64::MAX), "16777216.0 TiB");
    }

    #[test]
    fn pieces_so_small_that_logs_outgrow_the_file_warn() {
        // 1 MB in 4-byte pieces among 3 peers: 250,000 pieces, a log of up
        // to 250,000 x 3 x 96 bytes, 72 times the file.
        let peer_info = "1001 localhost 6008 1\n1002 localhost 6009 0\n1003 localhost 6010 0\n";
        let dir = swarm_dir(peer_info);
        let common = std::fs::read_to_string(dir.path().join(COMMON_CFG)).unwrap();
        let with = |file_size: u64, piece_size: u32| {
            let text = common
                .replace("FileSize 100\n", &format!("FileSize {file_size}\n"))
                .replace("PieceSize 32768", &format!("PieceSize {piece_size}"));
            std::fs::write(dir.path().join(COMMON_CFG), text).unwrap();
            Config::load(dir.path()).unwrap().warnings
        };
        let warnings = with(1_000_000, 4);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let w = &warnings[0];
        assert!(w.contains("PieceSize 4 makes 250000 pieces"), "{w}");
        assert!(w.contains("may grow to 68.7 MiB"), "{w}");
        // Logs under 1 MiB never warn, even when larger than a tiny file.
        assert!(with(100, 4).is_empty());
        assert!(with(1_000_000, 4096).is_empty());
    }
}
