//! `p2pft report`: one self-contained SVG picture of a swarm, drawn from the
//! spec logs (`log_peer_<ID>.log`) and the two configs of its directory.
//!
//! Owns three steps, each pure but the last: [`parse_log`] turns log text into
//! events (any implementation's, as long as it writes SPEC.md's sentences:
//! the sentence is found by its fixed words wherever it starts in a line, the
//! time stamp may be in several formats, and lines it does not know are
//! skipped); [`Picture::build`] turns events into series (pieces over time,
//! the delivered rate, bytes from each peer to each); [`render_svg`] turns
//! series into SVG text. [`write()`] reads the directory and writes the file.
//!
//! Must never touch the network or a peer's file, and never write anything
//! but the one SVG it is asked for: it reads logs and configs only.

use crate::protocol::config::{Config, ConfigError};
use crate::protocol::layout::Layout;
use crate::support::status::{mib, MIB};
use clap::Args;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

/// `p2pft report [DIR] [--out FILE.svg]`.
#[derive(Debug, Args, Clone)]
pub struct ReportArgs {
    /// The swarm directory: Common.cfg, PeerInfo.cfg and `log_peer_<ID>.log`.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Where to write the SVG [default: DIR/swarm-report.svg].
    #[arg(long, value_name = "FILE.svg")]
    pub out: Option<PathBuf>,
}

/// Why no report could be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReportError {
    /// No Common.cfg or PeerInfo.cfg, or one that does not parse.
    #[error("{0} (a swarm directory holds Common.cfg, PeerInfo.cfg and the peers' logs)")]
    Config(#[from] ConfigError),
    #[error("no log_peer_<ID>.log in {0}: run the swarm there first")]
    NoLogs(PathBuf),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// One of SPEC.md's eleven sentences, IDs and numbers filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// `Peer A makes a connection to Peer B.`
    Dials { peer: u32, other: u32 },
    /// `Peer A is connected from Peer B.`
    Accepts { peer: u32, other: u32 },
    /// `Peer A has the preferred neighbors B,C,D.`
    Preferred { peer: u32, neighbours: Vec<u32> },
    /// `Peer A has the optimistically unchoked neighbor B.`
    Optimistic { peer: u32, other: u32 },
    /// `Peer A is unchoked by B.`
    Unchoked { peer: u32, by: u32 },
    /// `Peer A is choked by B.`
    Choked { peer: u32, by: u32 },
    /// `Peer A received the 'have' message from B for the piece N.`
    Have { peer: u32, from: u32, piece: u32 },
    /// `Peer A received the 'interested' message from B.`
    Interested { peer: u32, from: u32 },
    /// `Peer A received the 'not interested' message from B.`
    NotInterested { peer: u32, from: u32 },
    /// `Peer A has downloaded the piece N from B. Now the number of pieces it has is M.`
    Downloaded {
        peer: u32,
        piece: u32,
        from: u32,
        count: u32,
    },
    /// `Peer A has downloaded the complete file.`
    Complete { peer: u32 },
}

/// A recognised line: when, and what.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Line {
    /// Microseconds since 1970-01-01 00:00:00 of the time stamp as written
    /// (no time zone: only differences between lines matter).
    pub at_micros: i64,
    /// The finest step the time stamp can tell: 1 s without a fraction.
    pub resolution_secs: f64,
    pub event: Event,
}

/// What [`parse_log`] made of one log.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Parsed {
    pub lines: Vec<Line>,
    /// Lines that were neither blank nor a sentence with a time stamp.
    pub skipped: usize,
}

/// Every spec sentence of `text` with its time stamp, in the order written;
/// anything else is counted in `skipped` and otherwise ignored.
pub(crate) fn parse_log(text: &str) -> Parsed {
    let mut parsed = Parsed::default();
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        match parse_line(line) {
            Some(l) => parsed.lines.push(l),
            None => parsed.skipped += 1,
        }
    }
    parsed
}

/// One line: the first `Peer ` that starts a sentence, and a time stamp
/// before it (or, failing that, after it).
pub(crate) fn parse_line(line: &str) -> Option<Line> {
    let (start, event, end) = line
        .match_indices("Peer ")
        .find_map(|(i, _)| sentence(&line[i..]).map(|(e, len)| (i, e, i + len)))?;
    let (at_micros, resolution_secs) =
        time_stamp(&line[..start]).or_else(|| time_stamp(&line[end..]))?;
    Some(Line {
        at_micros,
        resolution_secs,
        event,
    })
}

/// A cursor over the text of a sentence.
struct Cursor<'a>(&'a str);

impl Cursor<'_> {
    fn lit(&mut self, s: &str) -> Option<()> {
        self.0 = self.0.strip_prefix(s)?;
        Some(())
    }

    /// Whether `s` comes next (and is then passed).
    fn opt(&mut self, s: &str) -> bool {
        self.lit(s).is_some()
    }

    fn num(&mut self) -> Option<u32> {
        let end = self
            .0
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(self.0.len());
        let n = self.0[..end].parse().ok()?;
        self.0 = &self.0[end..];
        Some(n)
    }

    /// Another peer's ID, as `B` or (some implementations) `Peer B`.
    fn other(&mut self) -> Option<u32> {
        self.opt("Peer ");
        self.num()
    }

    /// The closing full stop; an implementation that leaves it out is read all the same.
    fn end(&mut self) -> Option<()> {
        self.opt(".");
        Some(())
    }
}

/// The sentence at the start of `s` and how many bytes it takes.
fn sentence(s: &str) -> Option<(Event, usize)> {
    let mut c = Cursor(s);
    c.lit("Peer ")?;
    let peer = c.num()?;
    c.lit(" ")?;
    let event = if c.opt("makes a connection to ") {
        let other = c.other()?;
        Event::Dials { peer, other }
    } else if c.opt("is connected from ") {
        let other = c.other()?;
        Event::Accepts { peer, other }
    } else if c.opt("has the preferred neighbors ") {
        let mut neighbours = vec![c.other()?];
        while c.opt(",") {
            c.opt(" ");
            neighbours.push(c.other()?);
        }
        Event::Preferred { peer, neighbours }
    } else if c.opt("has the optimistically unchoked neighbor ") {
        let other = c.other()?;
        Event::Optimistic { peer, other }
    } else if c.opt("is unchoked by ") {
        let by = c.other()?;
        Event::Unchoked { peer, by }
    } else if c.opt("is choked by ") {
        let by = c.other()?;
        Event::Choked { peer, by }
    } else if c.opt("received the 'have' message from ") {
        let from = c.other()?;
        c.lit(" for the piece ")?;
        let piece = c.num()?;
        Event::Have { peer, from, piece }
    } else if c.opt("received the 'interested' message from ") {
        let from = c.other()?;
        Event::Interested { peer, from }
    } else if c.opt("received the 'not interested' message from ") {
        let from = c.other()?;
        Event::NotInterested { peer, from }
    } else if c.opt("has downloaded the piece ") {
        let piece = c.num()?;
        c.lit(" from ")?;
        let from = c.other()?;
        c.lit(".")?;
        c.opt(" ");
        c.lit("Now the number of pieces it has is ")?;
        let count = c.num()?;
        Event::Downloaded {
            peer,
            piece,
            from,
            count,
        }
    } else if c.opt("has downloaded the complete file") {
        Event::Complete { peer }
    } else {
        return None;
    };
    c.end()?;
    Some((event, s.len() - c.0.len()))
}

/// The first time stamp in `s`: `YYYY-MM-DD` (or with `/`), `T` or a space,
/// `HH:MM:SS`, optionally `.fff` or `,fff`; whatever brackets or separator
/// surround it. Microseconds since 1970 as written, and the stamp's
/// resolution in seconds.
pub(crate) fn time_stamp(s: &str) -> Option<(i64, f64)> {
    let b = s.as_bytes();
    // YYYY-MM-DD HH:MM:SS is 19 bytes.
    (0..b.len().saturating_sub(18)).find_map(|i| stamp_at(&b[i..]))
}

fn stamp_at(b: &[u8]) -> Option<(i64, f64)> {
    let digits = |from: usize, n: usize| -> Option<i64> {
        let d = b.get(from..from + n)?;
        d.iter()
            .all(u8::is_ascii_digit)
            .then(|| d.iter().fold(0i64, |a, &x| a * 10 + i64::from(x - b'0')))
    };
    let sep = |at: usize, ok: &[u8]| b.get(at).is_some_and(|c| ok.contains(c));
    let year = digits(0, 4)?;
    let ok = sep(4, b"-/") && sep(7, b"-/") && sep(10, b" T") && sep(13, b":") && sep(16, b":");
    if !ok {
        return None;
    }
    let (month, day) = (digits(5, 2)?, digits(8, 2)?);
    let (hour, minute, second) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let secs =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second.min(60);
    let mut micros = secs * 1_000_000;
    let mut resolution = 1.0;
    if sep(19, b".,") {
        let n = b[20..].iter().take_while(|c| c.is_ascii_digit()).count();
        if n > 0 {
            let n = n.min(6);
            let fraction = digits(20, n)?;
            resolution = 10f64.powi(-(n as i32));
            micros += fraction * 10i64.pow(6 - n as u32);
        }
    }
    Some((micros, resolution))
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar
/// (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day counted from 1970-01-01 (the inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// `YYYY-MM-DD HH:MM:SS` of microseconds since 1970 as written.
fn stamp_text(micros: i64) -> String {
    let whole = micros.div_euclid(1_000_000);
    let (y, m, d) = civil_from_days(whole.div_euclid(86_400));
    let s = whole.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// What the configs say about the swarm.
#[derive(Debug, Clone)]
pub(crate) struct SwarmInfo {
    pub file_name: String,
    pub layout: Layout,
    /// In PeerInfo.cfg's order: ID and HasFile.
    pub peers: Vec<(u32, bool)>,
}

impl SwarmInfo {
    pub(crate) fn from_config(config: &Config) -> SwarmInfo {
        SwarmInfo {
            file_name: config.common.file_name.clone(),
            layout: config.common.layout,
            peers: config.peers.iter().map(|p| (p.id, p.has_file)).collect(),
        }
    }
}

/// One peer's line in the picture.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PeerSeries {
    pub id: u32,
    /// HasFile 1, or a peer that others downloaded from but that logged
    /// no download and no completion of its own.
    pub seed: bool,
    /// (seconds from the first event, pieces held), in time order: where
    /// its log began, then one point a downloaded piece.
    pub points: Vec<(f64, u32)>,
    pub complete_secs: Option<f64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl PeerSeries {
    fn new(id: u32, seed: bool) -> PeerSeries {
        PeerSeries {
            id,
            seed,
            points: Vec::new(),
            complete_secs: None,
            bytes_in: 0,
            bytes_out: 0,
        }
    }
}

/// Everything the picture shows, computed from the events.
#[derive(Debug, Clone)]
pub(crate) struct Picture {
    pub file_name: String,
    pub layout: Layout,
    /// PeerInfo.cfg's peers in its order, then any other peer the logs name.
    pub peers: Vec<PeerSeries>,
    /// Seconds from the first event to the last download or completion.
    pub wall_secs: f64,
    /// The first event's time stamp, as written (`YYYY-MM-DD HH:MM:SS`).
    pub start_text: String,
    /// Width of a bin of [`Picture::rate_mib_s`], seconds.
    pub bin_secs: f64,
    /// The swarm's delivered rate, MiB/s, a bin after another from 0.
    pub rate_mib_s: Vec<f64>,
    /// Bytes from uploader to downloader, as the downloaders logged them.
    pub fed: BTreeMap<(u32, u32), u64>,
    pub delivered_bytes: u64,
    pub lines: usize,
    pub skipped: usize,
    /// Where the lines came from, as the subtitle says it.
    pub source: &'static str,
}

/// 1, 2 or 5 times a power of ten, the least at or above `x`.
fn nice_step(x: f64) -> f64 {
    if x <= 0.0 || !x.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(x.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|s| *s >= x * (1.0 - 1e-9))
        .unwrap_or(10.0 * p)
}

impl Picture {
    /// The picture of a swarm from every log's parsed lines (any order).
    pub(crate) fn build(info: &SwarmInfo, logs: &[Parsed]) -> Picture {
        let mut lines: Vec<&Line> = logs.iter().flat_map(|p| &p.lines).collect();
        lines.sort_by_key(|l| l.at_micros);
        let t0 = lines.first().map_or(0, |l| l.at_micros);
        let secs = |l: &Line| (l.at_micros - t0) as f64 / 1e6;
        let resolution = lines
            .iter()
            .map(|l| l.resolution_secs)
            .fold(0.001f64, f64::max);
        let pieces = info.layout.num_pieces();
        let bytes_of = |piece: u32| {
            if piece < pieces {
                u64::from(info.layout.piece_len(piece))
            } else {
                u64::from(info.layout.piece_size_bytes())
            }
        };
        let mut order: Vec<u32> = info.peers.iter().map(|p| p.0).collect();
        let mut series: BTreeMap<u32, PeerSeries> = info
            .peers
            .iter()
            .map(|&(id, seed)| (id, PeerSeries::new(id, seed)))
            .collect();
        // A peer's series, made for a peer PeerInfo.cfg does not list.
        fn entry<'a>(
            series: &'a mut BTreeMap<u32, PeerSeries>,
            order: &mut Vec<u32>,
            id: u32,
        ) -> &'a mut PeerSeries {
            series.entry(id).or_insert_with(|| {
                order.push(id);
                PeerSeries::new(id, false)
            })
        }
        let mut first_seen: BTreeMap<u32, f64> = BTreeMap::new();
        let mut fed: BTreeMap<(u32, u32), u64> = BTreeMap::new();
        let mut downloads: Vec<(f64, u64)> = Vec::new();
        let mut end = 0.0f64;
        let mut downloaders = BTreeSet::new();
        let mut completers = BTreeSet::new();
        for l in &lines {
            let t = secs(l);
            let peer = match l.event {
                Event::Dials { peer, .. }
                | Event::Accepts { peer, .. }
                | Event::Preferred { peer, .. }
                | Event::Optimistic { peer, .. }
                | Event::Unchoked { peer, .. }
                | Event::Choked { peer, .. }
                | Event::Have { peer, .. }
                | Event::Interested { peer, .. }
                | Event::NotInterested { peer, .. }
                | Event::Downloaded { peer, .. }
                | Event::Complete { peer } => peer,
            };
            first_seen.entry(peer).or_insert(t);
            entry(&mut series, &mut order, peer);
            match l.event {
                Event::Downloaded {
                    peer,
                    piece,
                    from,
                    count,
                } => {
                    let bytes = bytes_of(piece);
                    let s = entry(&mut series, &mut order, peer);
                    if s.points.is_empty() {
                        let began = first_seen[&peer];
                        s.points.push((began, count.saturating_sub(1)));
                    }
                    s.points.push((t, count));
                    s.bytes_in += bytes;
                    entry(&mut series, &mut order, from).bytes_out += bytes;
                    *fed.entry((from, peer)).or_default() += bytes;
                    downloads.push((t, bytes));
                    downloaders.insert(peer);
                    end = end.max(t);
                }
                Event::Complete { peer } => {
                    let s = entry(&mut series, &mut order, peer);
                    s.complete_secs.get_or_insert(t);
                    completers.insert(peer);
                    end = end.max(t);
                }
                _ => {}
            }
        }
        if downloads.is_empty() && completers.is_empty() {
            end = lines.last().map_or(0.0, |l| secs(l));
        }
        for s in series.values_mut() {
            if !s.seed
                && s.bytes_out > 0
                && !downloaders.contains(&s.id)
                && !completers.contains(&s.id)
            {
                s.seed = true;
            }
        }
        let bin_secs = nice_step(end / 40.0).max(nice_step(resolution));
        let bins = ((end / bin_secs).floor() as usize + 1).max(1);
        let mut rate = vec![0.0; bins];
        for (t, bytes) in &downloads {
            let i = ((t / bin_secs).floor() as usize).min(bins - 1);
            rate[i] += *bytes as f64;
        }
        for r in &mut rate {
            *r /= bin_secs * MIB;
        }
        Picture {
            source: "the peers' spec logs",
            file_name: info.file_name.clone(),
            layout: info.layout,
            peers: order.iter().filter_map(|id| series.remove(id)).collect(),
            wall_secs: end,
            start_text: lines
                .first()
                .map_or_else(|| "no events".into(), |l| stamp_text(l.at_micros)),
            bin_secs,
            rate_mib_s: rate,
            delivered_bytes: downloads.iter().map(|d| d.1).sum(),
            fed,
            lines: lines.len(),
            skipped: logs.iter().map(|p| p.skipped).sum(),
        }
    }

    pub(crate) fn summary(&self) -> Summary {
        Summary {
            peers: self.peers.len(),
            seeds: self.peers.iter().filter(|p| p.seed).count(),
            complete: self
                .peers
                .iter()
                .filter(|p| !p.seed && p.complete_secs.is_some())
                .count(),
            pieces: self.layout.num_pieces(),
            wall_secs: self.wall_secs,
            delivered_bytes: self.delivered_bytes,
            skipped: self.skipped,
        }
    }
}

/// The one line `p2pft report` prints.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Summary {
    pub peers: usize,
    pub seeds: usize,
    /// Leechers that logged their completion.
    pub complete: usize,
    pub pieces: u32,
    pub wall_secs: f64,
    pub delivered_bytes: u64,
    pub skipped: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} peers ({} seed{}, {} of {} leechers complete), {} pieces, {:.2} s wall, {:.1} MiB delivered",
            self.peers,
            self.seeds,
            if self.seeds == 1 { "" } else { "s" },
            self.complete,
            self.peers - self.seeds,
            self.pieces,
            self.wall_secs,
            mib(self.delivered_bytes)
        )?;
        if self.skipped > 0 {
            write!(f, " ({} log lines not understood, skipped)", self.skipped)?;
        }
        Ok(())
    }
}

/// Colours of the leechers' lines, taken in turn (Tableau 10).
const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// Legend entries at most; the rest are counted.
const LEGEND_MAX: usize = 20;

/// Peers above which who-fed-whom is no matrix but a list of the largest uploaders.
pub(crate) const MATRIX_MAX_PEERS: usize = 64;

/// Uploaders listed when there are too many peers for the matrix.
const TOP_UPLOADERS: usize = 16;

const WIDTH: f64 = 1000.0;
const LEFT: f64 = 70.0;
const PLOT_W: f64 = 680.0;

/// `s` with XML's five special characters escaped.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Tick values from 0 to at least `max`, about `n` of them.
fn ticks(max: f64, n: usize) -> (f64, Vec<f64>) {
    let step = nice_step(max.max(1e-9) / n as f64);
    let count = (max / step).ceil().max(1.0) as usize;
    (step, (0..=count).map(|i| i as f64 * step).collect())
}

/// A tick label with as many decimals as the step needs.
fn tick_text(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    format!("{v:.decimals$}")
}

/// Seconds as the legend says them.
fn secs_text(s: f64) -> String {
    if s < 10.0 {
        format!("{s:.2} s")
    } else {
        format!("{s:.1} s")
    }
}

/// A piece size: `256 KiB`, `1 MiB`, `7000 bytes`.
fn bytes_text(n: u32) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

/// A MiB figure short enough for a matrix cell.
fn mib_text(bytes: u64) -> String {
    let m = mib(bytes);
    if m >= 100.0 {
        format!("{m:.0}")
    } else if m >= 10.0 {
        format!("{m:.1}")
    } else {
        format!("{m:.2}")
    }
}

/// A cell's shade from white to dark blue, by the square root of its share
/// of the largest cell (small flows stay visible).
fn shade(share: f64) -> String {
    let s = share.clamp(0.0, 1.0).sqrt();
    let mix = |from: f64, to: f64| (from + (to - from) * s).round() as u8;
    format!(
        "#{:02x}{:02x}{:02x}",
        mix(247.0, 8.0),
        mix(251.0, 48.0),
        mix(255.0, 107.0)
    )
}

/// Axes of a plot: frame, ticks and labels.
struct Axes {
    top: f64,
    height: f64,
    x_max: f64,
    y_max: f64,
}

impl Axes {
    fn x(&self, v: f64) -> f64 {
        LEFT + v / self.x_max * PLOT_W
    }

    fn y(&self, v: f64) -> f64 {
        self.top + self.height - v / self.y_max * self.height
    }

    /// Frame, grid, tick labels and the axis names.
    fn draw(
        &self,
        svg: &mut String,
        x_ticks: &(f64, Vec<f64>),
        y_ticks: &(f64, Vec<f64>),
        y_name: &str,
    ) {
        let bottom = self.top + self.height;
        for &v in &y_ticks.1 {
            let y = self.y(v);
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e4e4e4" stroke-width="1"/><text x="{:.1}" y="{:.1}" text-anchor="end" font-size="11">{}</text>"##,
                LEFT + PLOT_W,
                LEFT - 6.0,
                y + 4.0,
                tick_text(v, y_ticks.0)
            );
        }
        for &v in &x_ticks.1 {
            let x = self.x(v);
            let _ = writeln!(
                svg,
                r##"<line x1="{x:.1}" y1="{bottom:.1}" x2="{x:.1}" y2="{:.1}" stroke="#555" stroke-width="1"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" font-size="11">{}</text>"##,
                bottom + 4.0,
                bottom + 17.0,
                tick_text(v, x_ticks.0)
            );
        }
        let _ = writeln!(
            svg,
            r##"<rect x="{LEFT}" y="{:.1}" width="{PLOT_W}" height="{:.1}" fill="none" stroke="#555" stroke-width="1"/>"##,
            self.top, self.height
        );
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11">seconds from the first log line</text>"##,
            LEFT + PLOT_W / 2.0,
            bottom + 32.0
        );
        let _ = writeln!(
            svg,
            r##"<text transform="translate({:.1},{:.1}) rotate(-90)" text-anchor="middle" font-size="11">{}</text>"##,
            LEFT - 48.0,
            self.top + self.height / 2.0,
            esc(y_name)
        );
    }
}

/// At most about `max` points of `points` (x ascending), keeping the first
/// and last point of each horizontal step of the plot.
fn thin(points: &[(f64, f64)], max: usize) -> Vec<(f64, f64)> {
    if points.len() <= max {
        return points.to_vec();
    }
    let (lo, hi) = (points[0].0, points[points.len() - 1].0);
    let step = ((hi - lo) / (max / 2) as f64).max(1e-12);
    let mut out: Vec<(f64, f64)> = Vec::with_capacity(max + 2);
    let mut bucket = None;
    for (i, &p) in points.iter().enumerate() {
        let b = ((p.0 - lo) / step) as i64;
        let last = i + 1 == points.len();
        let next_other = points
            .get(i + 1)
            .is_none_or(|n| ((n.0 - lo) / step) as i64 != b);
        if bucket != Some(b) || next_other || last {
            out.push(p);
        }
        bucket = Some(b);
    }
    out
}

/// The SVG of `picture`: a title, pieces over time, the delivered rate, and
/// who fed whom. Self-contained: no fonts, styles or scripts from outside.
pub(crate) fn render_svg(picture: &Picture) -> String {
    let mut body = String::new();
    let pieces = picture.layout.num_pieces();
    let x_max = picture.wall_secs.max(picture.bin_secs).max(1e-3);
    let x_ticks = ticks(x_max, 10);
    let x_max = x_max.max(*x_ticks.1.last().unwrap_or(&x_max));
    let seeds: Vec<&PeerSeries> = picture.peers.iter().filter(|p| p.seed).collect();
    let leechers: Vec<&PeerSeries> = picture.peers.iter().filter(|p| !p.seed).collect();

    // Title.
    let _ = writeln!(
        body,
        r##"<text x="20" y="28" font-size="18" font-weight="bold">{} — {:.2} MiB, {} pieces of {}; {} peers ({} seed{}); {} wall</text>"##,
        esc(&picture.file_name),
        mib(picture.layout.file_size_bytes()),
        pieces,
        bytes_text(picture.layout.piece_size_bytes()),
        picture.peers.len(),
        seeds.len(),
        if seeds.len() == 1 { "" } else { "s" },
        secs_text(picture.wall_secs)
    );
    let mut note = format!(
        "from {}: {} lines, the first at {}; {:.1} MiB delivered",
        picture.source,
        picture.lines,
        picture.start_text,
        mib(picture.delivered_bytes)
    );
    if picture.skipped > 0 {
        let _ = write!(note, "; {} lines not understood, skipped", picture.skipped);
    }
    let _ = writeln!(
        body,
        r##"<text x="20" y="48" font-size="12" fill="#444">{}</text>"##,
        esc(&note)
    );

    // 1. Pieces over time.
    let mut top = 114.0;
    let _ = writeln!(
        body,
        r##"<text x="20" y="{:.1}" font-size="14" font-weight="bold">Pieces held over time</text>"##,
        top - 38.0
    );
    // The top of the plot is the whole file; ticks only below it.
    let all = f64::from(pieces);
    let mut y_ticks = ticks(all, 6);
    y_ticks.1.retain(|&v| v <= all);
    match y_ticks.1.last() {
        Some(&last) if all - last >= 0.4 * y_ticks.0 => y_ticks.1.push(all),
        Some(_) => *y_ticks.1.last_mut().expect("a tick") = all,
        None => y_ticks.1.push(all),
    }
    let axes = Axes {
        top,
        height: 300.0,
        x_max,
        y_max: f64::from(pieces.max(1)),
    };
    axes.draw(&mut body, &x_ticks, &y_ticks, "pieces held");
    let all_y = axes.y(all);
    let (width, opacity, dot) = match leechers.len() {
        0..=12 => (1.8, 1.0, 3.5),
        13..=64 => (1.0, 0.85, 2.5),
        65..=200 => (0.5, 0.5, 1.5),
        _ => (0.5, 0.35, 1.2),
    };
    // Seeds apart, in a band above the plot: they hold every piece throughout.
    let band_y = top - 12.0;
    if !seeds.is_empty() {
        let _ = writeln!(
            body,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" font-size="10" fill="#444">seed{}</text>"##,
            LEFT - 6.0,
            band_y + 3.5,
            if seeds.len() == 1 { "" } else { "s" }
        );
    }
    for s in &seeds {
        let _ = writeln!(
            body,
            r##"<polyline data-peer="{id}" class="seed" points="{:.1},{band_y:.1} {:.1},{band_y:.1}" fill="none" stroke="#333" stroke-width="2" stroke-dasharray="8,4"><title>peer {id}: seed, every piece from the start</title></polyline>"##,
            axes.x(0.0),
            axes.x(picture.wall_secs),
            id = s.id
        );
    }
    for (i, s) in leechers.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let mut pts: Vec<(f64, f64)> = s.points.iter().map(|&(t, n)| (t, f64::from(n))).collect();
        if pts.is_empty() {
            pts.push((0.0, 0.0));
        }
        if s.complete_secs.is_none() {
            // It held what it had to the end of the picture.
            let last = pts[pts.len() - 1].1;
            pts.push((picture.wall_secs, last));
        }
        let pts = thin(&pts, 2 * PLOT_W as usize);
        let mut text = String::with_capacity(pts.len() * 12);
        for (t, n) in &pts {
            let _ = write!(text, "{:.1},{:.1} ", axes.x(*t), axes.y(*n));
        }
        let state = match s.complete_secs {
            Some(c) => format!("complete at {}", secs_text(c)),
            None => format!("{} of {pieces} pieces", s.points.last().map_or(0, |p| p.1)),
        };
        let _ = writeln!(
            body,
            r##"<polyline data-peer="{}" class="leecher" points="{}" fill="none" stroke="{colour}" stroke-width="{width}" stroke-opacity="{opacity}" stroke-linejoin="round"><title>peer {}: {state}</title></polyline>"##,
            s.id,
            text.trim_end(),
            s.id
        );
        if let Some(c) = s.complete_secs {
            let _ = writeln!(
                body,
                r##"<circle cx="{:.1}" cy="{all_y:.1}" r="{dot}" fill="{colour}" stroke="white" stroke-width="0.8"><title>peer {} complete at {}</title></circle>"##,
                axes.x(c),
                s.id,
                secs_text(c)
            );
        }
    }
    // The legend, right of the plot.
    let lx = LEFT + PLOT_W + 20.0;
    let mut ly = top + 6.0;
    let shown = leechers
        .len()
        .min(LEGEND_MAX.saturating_sub(seeds.len().min(4)));
    let _ = writeln!(
        body,
        r##"<text x="{lx:.1}" y="{ly:.1}" font-size="11" font-weight="bold">peer: complete at ●</text>"##
    );
    ly += 16.0;
    for (i, s) in leechers.iter().take(shown).enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let state = match s.complete_secs {
            Some(c) => secs_text(c),
            None => format!("{}/{pieces} pieces", s.points.last().map_or(0, |p| p.1)),
        };
        let _ = writeln!(
            body,
            r##"<line x1="{lx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{colour}" stroke-width="2.5"/><text x="{:.1}" y="{ly:.1}" font-size="11">{}: {}</text>"##,
            ly - 4.0,
            lx + 18.0,
            ly - 4.0,
            lx + 24.0,
            s.id,
            esc(&state)
        );
        ly += 15.0;
    }
    if leechers.len() > shown {
        let _ = writeln!(
            body,
            r##"<text x="{lx:.1}" y="{ly:.1}" font-size="11" fill="#444">… and {} more leechers</text>"##,
            leechers.len() - shown
        );
        ly += 15.0;
    }
    if !seeds.is_empty() {
        let ids: Vec<String> = seeds.iter().take(8).map(|s| s.id.to_string()).collect();
        let more = if seeds.len() > 8 {
            format!(" +{}", seeds.len() - 8)
        } else {
            String::new()
        };
        let _ = writeln!(
            body,
            r##"<line x1="{lx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#222" stroke-width="2.5" stroke-dasharray="8,4"/><text x="{:.1}" y="{ly:.1}" font-size="11">seed{}: {}{more}</text>"##,
            ly + 4.0,
            lx + 18.0,
            ly + 4.0,
            lx + 24.0,
            if seeds.len() == 1 { "" } else { "s" },
            ids.join(", ")
        );
        let _ = writeln!(
            body,
            r##"<text x="{:.1}" y="{:.1}" font-size="10" fill="#666">(above the plot: every piece throughout)</text>"##,
            lx + 24.0,
            ly + 14.0
        );
    }
    top += axes.height + 90.0;

    // 2. Delivered rate.
    let peak = picture.rate_mib_s.iter().copied().fold(0.0, f64::max);
    let mean = mib(picture.delivered_bytes) / picture.wall_secs.max(1e-9);
    let _ = writeln!(
        body,
        r##"<text x="20" y="{:.1}" font-size="14" font-weight="bold">Delivered rate of the swarm (MiB/s in bins of {})</text><text x="{:.1}" y="{:.1}" font-size="11" fill="#444" text-anchor="end">mean {:.1}, peak {:.1} MiB/s</text>"##,
        top - 14.0,
        bin_text(picture.bin_secs),
        LEFT + PLOT_W,
        top - 14.0,
        mean,
        peak
    );
    let y_ticks = ticks(peak.max(1e-3), 5);
    let axes = Axes {
        top,
        height: 180.0,
        x_max,
        y_max: y_ticks.1.last().copied().unwrap_or(1.0).max(1e-9),
    };
    axes.draw(&mut body, &x_ticks, &y_ticks, "MiB/s");
    for (i, &r) in picture.rate_mib_s.iter().enumerate() {
        if r <= 0.0 {
            continue;
        }
        let x0 = axes.x(i as f64 * picture.bin_secs);
        let x1 = axes.x((i + 1) as f64 * picture.bin_secs).min(LEFT + PLOT_W);
        let y = axes.y(r);
        let _ = writeln!(
            body,
            r##"<rect class="rate" x="{x0:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="#4682b4"><title>{} s: {r:.1} MiB/s</title></rect>"##,
            (x1 - x0 - 0.5).max(0.5),
            axes.top + axes.height - y,
            tick_text(i as f64 * picture.bin_secs, picture.bin_secs)
        );
    }
    top += axes.height + 110.0;

    // 3. Who fed whom.
    top = who_fed_whom(&mut body, picture, top);

    let height = top.ceil();
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n<title>p2pft swarm report: {}</title>\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{body}</svg>\n",
        esc(&picture.file_name)
    )
}

/// A bin width as said in the rate plot's title.
fn bin_text(secs: f64) -> String {
    if secs < 1.0 {
        format!("{} ms", tick_text(secs * 1000.0, nice_step(secs * 1000.0)))
    } else {
        format!("{} s", tick_text(secs, secs))
    }
}

/// Draws who fed whom from `top` on; returns the height used up to.
fn who_fed_whom(body: &mut String, picture: &Picture, top: f64) -> f64 {
    let n = picture.peers.len();
    let max = picture.fed.values().copied().max().unwrap_or(0).max(1);
    if n > MATRIX_MAX_PEERS {
        let _ = writeln!(
            body,
            r##"<text x="20" y="{:.1}" font-size="14" font-weight="bold">Who fed whom: the {TOP_UPLOADERS} largest uploaders (a matrix of {n} peers would be unreadable)</text>"##,
            top - 34.0
        );
        let mut up: Vec<&PeerSeries> = picture.peers.iter().filter(|p| p.bytes_out > 0).collect();
        up.sort_by(|a, b| b.bytes_out.cmp(&a.bytes_out).then(a.id.cmp(&b.id)));
        let most = up.first().map_or(1, |p| p.bytes_out).max(1);
        let mut y = top - 10.0;
        for p in up.iter().take(TOP_UPLOADERS) {
            let fed = picture.fed.keys().filter(|(from, _)| *from == p.id).count();
            let w = p.bytes_out as f64 / most as f64 * 500.0;
            let _ = writeln!(
                body,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="end" font-size="11">{}{}</text><rect class="uploader" data-peer="{}" x="{LEFT}" y="{:.1}" width="{w:.1}" height="14" fill="#4682b4"/><text x="{:.1}" y="{:.1}" font-size="11">{:.1} MiB to {fed} peers</text>"##,
                LEFT - 6.0,
                y + 11.0,
                p.id,
                if p.seed { " (seed)" } else { "" },
                p.id,
                y,
                LEFT + w + 6.0,
                y + 11.0,
                mib(p.bytes_out)
            );
            y += 18.0;
        }
        return y + 20.0;
    }
    let cell = (560.0 / n.max(1) as f64).clamp(8.0, 48.0);
    let font = (cell * 0.32).clamp(7.0, 11.0);
    let label_font = (cell * 0.6).clamp(7.0, 11.0);
    let _ = writeln!(
        body,
        r##"<text x="20" y="{:.1}" font-size="14" font-weight="bold">Who fed whom: MiB from each peer (row) to each (column)</text>"##,
        top - 34.0
    );
    let x0 = LEFT + 40.0;
    let y0 = top + 30.0;
    let _ = writeln!(
        body,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11" fill="#444">downloader →</text><text transform="translate({:.1},{:.1}) rotate(-90)" text-anchor="middle" font-size="11" fill="#444">uploader →</text>"##,
        x0 + cell * n as f64 / 2.0,
        top - 14.0,
        x0 - 84.0,
        y0 + cell * n as f64 / 2.0
    );
    for (j, p) in picture.peers.iter().enumerate() {
        let cx = x0 + (j as f64 + 0.5) * cell;
        let _ = writeln!(
            body,
            r##"<text transform="translate({cx:.1},{:.1}) rotate(-45)" font-size="{label_font:.1}">{}</text>"##,
            y0 - 4.0,
            p.id
        );
        let cy = y0 + (j as f64 + 0.5) * cell;
        let _ = writeln!(
            body,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" font-size="{label_font:.1}">{}{}</text>"##,
            x0 - 4.0,
            cy + label_font * 0.35,
            p.id,
            if p.seed && cell >= 14.0 { " seed" } else { "" }
        );
    }
    for (i, from) in picture.peers.iter().enumerate() {
        for (j, to) in picture.peers.iter().enumerate() {
            let (x, y) = (x0 + j as f64 * cell, y0 + i as f64 * cell);
            if i == j {
                let _ = writeln!(
                    body,
                    r##"<rect x="{x:.1}" y="{y:.1}" width="{cell:.1}" height="{cell:.1}" fill="#d8d8d8" stroke="white" stroke-width="0.5"/>"##
                );
                continue;
            }
            let bytes = picture.fed.get(&(from.id, to.id)).copied().unwrap_or(0);
            let share = bytes as f64 / max as f64;
            let _ = writeln!(
                body,
                r##"<rect class="fed" x="{x:.1}" y="{y:.1}" width="{cell:.1}" height="{cell:.1}" fill="{}" stroke="#e8e8e8" stroke-width="0.5"><title>{} → {}: {:.2} MiB</title></rect>"##,
                if bytes == 0 {
                    "#fbfbfb".into()
                } else {
                    shade(share)
                },
                from.id,
                to.id,
                mib(bytes)
            );
            if bytes > 0 && cell >= 30.0 {
                let _ = writeln!(
                    body,
                    r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="{font:.1}" fill="{}">{}</text>"##,
                    x + cell / 2.0,
                    y + cell / 2.0 + font * 0.35,
                    if share.sqrt() > 0.55 { "white" } else { "#111" },
                    mib_text(bytes)
                );
            }
        }
        // The row's total: what this peer uploaded.
        let _ = writeln!(
            body,
            r##"<text x="{:.1}" y="{:.1}" font-size="{label_font:.1}" fill="#444">{:.2} out</text>"##,
            x0 + n as f64 * cell + 6.0,
            y0 + (i as f64 + 0.5) * cell + label_font * 0.35,
            mib(from.bytes_out)
        );
    }
    let bottom = y0 + n as f64 * cell;
    let _ = writeln!(
        body,
        r##"<text x="{x0:.1}" y="{:.1}" font-size="11" fill="#444">shade: square root of the share of the largest flow ({:.2} MiB); grey: self; figures in MiB</text>"##,
        bottom + 20.0,
        mib(max)
    );
    bottom + 40.0
}

/// `DIR/swarm-report.svg`.
pub(crate) fn default_out(dir: &Path) -> PathBuf {
    dir.join("swarm-report.svg")
}

/// The `log_peer_*.log` files of `dir`, sorted.
fn log_files(dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    let read = |source| ReportError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut logs = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read)? {
        let path = entry.map_err(read)?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("log_peer_") && name.ends_with(".log") && path.is_file() {
            logs.push(path);
        }
    }
    logs.sort();
    Ok(logs)
}

/// Reads the configs and logs of `dir` into a picture.
pub(crate) fn load(dir: &Path) -> Result<Picture, ReportError> {
    let config = Config::load(dir)?;
    let logs = log_files(dir)?;
    if logs.is_empty() {
        return Err(ReportError::NoLogs(dir.to_path_buf()));
    }
    let mut parsed = Vec::with_capacity(logs.len());
    for path in logs {
        let bytes = std::fs::read(&path).map_err(|source| ReportError::Read {
            path: path.clone(),
            source,
        })?;
        parsed.push(parse_log(&String::from_utf8_lossy(&bytes)));
    }
    Ok(Picture::build(&SwarmInfo::from_config(&config), &parsed))
}

/// Draws the swarm of `dir` into the SVG file `out`.
pub(crate) fn write(dir: &Path, out: &Path) -> Result<Summary, ReportError> {
    let picture = load(dir)?;
    std::fs::write(out, render_svg(&picture)).map_err(|source| ReportError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    Ok(picture.summary())
}

/// After a run of `swarm` or `bench`: the report, or a warning that says why
/// not (a report never changes how the run ended).
pub(crate) fn write_after_run(dir: &Path, out: &Path) {
    match write(dir, out) {
        Ok(summary) => eprintln!("report: {} ({summary})", out.display()),
        Err(e) => eprintln!("warning: no report: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(file_size: u64, piece_size: u32, peers: &[(u32, bool)]) -> SwarmInfo {
        SwarmInfo {
            file_name: "TheFile.dat".into(),
            layout: Layout::new(file_size, piece_size).unwrap(),
            peers: peers.to_vec(),
        }
    }

    #[test]
    fn our_lines_parse_with_milliseconds() {
        let p = parse_log(
            "2026-12-06 10:00:01.250: Peer 1002 has downloaded the piece 3 from 1001. Now the number of pieces it has is 1.\n\
             2026-12-06 10:00:01.500: Peer 1002 has the preferred neighbors 1003,1004.\n\
             2026-12-06 10:00:01.750: Peer 1002 received the 'have' message from 1003 for the piece 17.\n\
             2026-12-06 10:00:02.000: Peer 1002 received the 'not interested' message from 1003.\n\
             2026-12-06 10:00:02.125: Peer 1002 has downloaded the complete file.\n",
        );
        assert_eq!(p.skipped, 0);
        assert_eq!(p.lines.len(), 5);
        assert_eq!(
            p.lines[0].event,
            Event::Downloaded {
                peer: 1002,
                piece: 3,
                from: 1001,
                count: 1
            }
        );
        assert_eq!(
            p.lines[1].event,
            Event::Preferred {
                peer: 1002,
                neighbours: vec![1003, 1004]
            }
        );
        assert_eq!(
            p.lines[2].event,
            Event::Have {
                peer: 1002,
                from: 1003,
                piece: 17
            }
        );
        assert_eq!(
            p.lines[3].event,
            Event::NotInterested {
                peer: 1002,
                from: 1003
            }
        );
        assert_eq!(p.lines[4].event, Event::Complete { peer: 1002 });
        assert_eq!(p.lines[4].at_micros - p.lines[0].at_micros, 875_000);
        assert_eq!(p.lines[0].resolution_secs, 0.001);
    }

    #[test]
    fn every_sentence_is_known() {
        let all = [
            (
                "Peer 1 makes a connection to Peer 2.",
                Event::Dials { peer: 1, other: 2 },
            ),
            (
                "Peer 2 is connected from Peer 1.",
                Event::Accepts { peer: 2, other: 1 },
            ),
            (
                "Peer 1 has the optimistically unchoked neighbor 3.",
                Event::Optimistic { peer: 1, other: 3 },
            ),
            (
                "Peer 1 is unchoked by 2.",
                Event::Unchoked { peer: 1, by: 2 },
            ),
            ("Peer 1 is choked by 2.", Event::Choked { peer: 1, by: 2 }),
            (
                "Peer 1 received the 'interested' message from 2.",
                Event::Interested { peer: 1, from: 2 },
            ),
        ];
        for (text, event) in all {
            let line = format!("2026-12-06 10:00:00: {text}");
            assert_eq!(parse_line(&line).map(|l| l.event), Some(event), "{text}");
        }
    }

    #[test]
    fn foreign_time_stamps_parse() {
        let t = |s: &str| parse_line(s).map(|l| (l.at_micros, l.resolution_secs));
        let base = (days_from_civil(2026, 12, 6) * 86_400 + 36_001) * 1_000_000;
        let sentence = "Peer 1002 is unchoked by 1001.";
        for (line, at, res) in [
            (format!("[2026-12-06 10:00:01] {sentence}"), base, 1.0),
            (format!("[2026-12-06 10:00:01]: {sentence}"), base, 1.0),
            (
                format!("2026-12-06T10:00:01.5 {sentence}"),
                base + 500_000,
                0.1,
            ),
            (
                format!("2026-12-06T10:00:01.123456Z: {sentence}"),
                base + 123_456,
                1e-6,
            ),
            (format!("2026-12-06 10:00:01 {sentence}"), base, 1.0),
            (
                format!("2026-12-06 10:00:01,250 INFO {sentence}"),
                base + 250_000,
                0.001,
            ),
            (
                format!("INFO [main] 2026/12/06 10:00:01] {sentence}"),
                base,
                1.0,
            ),
        ] {
            let (got, got_res) = t(&line).unwrap_or_else(|| panic!("{line}"));
            assert_eq!(got, at, "{line}");
            assert!((got_res - res).abs() < 1e-12, "{line}");
        }
        assert_eq!(stamp_text(base), "2026-12-06 10:00:01");
    }

    #[test]
    fn junk_lines_are_skipped() {
        let p = parse_log(
            "garbage\n\
             \n\
             2026-12-06 10:00:01: nothing we know\n\
             Peer 1002 is unchoked by 1001.\n\
             2026-13-06 10:00:01: Peer 1002 is unchoked by 1001.\n\
             2026-12-06 10:00:01: Peer x is unchoked by 1001.\n\
             2026-12-06 10:00:01: Peer 1002 has downloaded the piece 3 from 1001. Now the number\n\
             2026-12-06 10:00:02: [warn] Peer 7 said: Peer 1002 is choked by 1001.\n",
        );
        // No time stamp, a bad month, no ID, a cut line, and two strangers.
        assert_eq!(p.skipped, 6);
        assert_eq!(
            p.lines.iter().map(|l| &l.event).collect::<Vec<_>>(),
            [&Event::Choked {
                peer: 1002,
                by: 1001
            }]
        );
    }

    /// Three pieces of 1,000 bytes and a last one of 234: bytes, not pieces.
    fn small_swarm() -> Picture {
        let a = parse_log(
            "2026-12-06 10:00:00.000: Peer 1002 makes a connection to Peer 1001.\n\
             2026-12-06 10:00:00.100: Peer 1002 has downloaded the piece 3 from 1001. Now the number of pieces it has is 1.\n\
             2026-12-06 10:00:00.200: Peer 1002 has downloaded the piece 0 from 1003. Now the number of pieces it has is 2.\n\
             2026-12-06 10:00:00.300: Peer 1002 has downloaded the piece 1 from 1001. Now the number of pieces it has is 3.\n\
             2026-12-06 10:00:00.400: Peer 1002 has downloaded the piece 2 from 1001. Now the number of pieces it has is 4.\n\
             2026-12-06 10:00:00.400: Peer 1002 has downloaded the complete file.\n",
        );
        // Another implementation's log, seconds only.
        let b = parse_log(
            "[2026-12-06 10:00:00] Peer 1003 is connected from Peer 1002.\n\
             [2026-12-06 10:00:01] Peer 1003 has downloaded the piece 3 from 1002. Now the number of pieces it has is 1.\n",
        );
        Picture::build(
            &info(3_234, 1_000, &[(1001, true), (1002, false), (1003, false)]),
            &[a, b],
        )
    }

    #[test]
    fn who_fed_whom_counts_bytes_with_a_short_last_piece() {
        let p = small_swarm();
        assert_eq!(p.fed[&(1001, 1002)], 234 + 1_000 + 1_000);
        assert_eq!(p.fed[&(1003, 1002)], 1_000);
        assert_eq!(p.fed[&(1002, 1003)], 234);
        assert_eq!(p.delivered_bytes, 3_468);
        let by_id = |id| p.peers.iter().find(|s| s.id == id).unwrap();
        assert_eq!(by_id(1001).bytes_out, 2_234);
        assert_eq!(by_id(1002).bytes_in, 3_234);
        assert_eq!(by_id(1002).complete_secs, Some(0.4));
        assert!(by_id(1001).seed && !by_id(1003).seed);
        assert_eq!(by_id(1003).points, vec![(0.0, 0), (1.0, 1)]);
        assert_eq!(p.wall_secs, 1.0);
        // Second stamps in the mix: bins no finer than a second.
        assert_eq!(p.bin_secs, 1.0);
        assert_eq!(p.summary().complete, 1);
    }

    #[test]
    fn a_peer_only_uploading_is_a_seed_even_if_peer_info_says_not() {
        let a = parse_log(
            "2026-12-06 10:00:00.000: Peer 1002 has downloaded the piece 0 from 1001. Now the number of pieces it has is 1.\n",
        );
        let p = Picture::build(&info(1_000, 1_000, &[(1001, false), (1002, false)]), &[a]);
        assert!(p.peers[0].seed);
        assert!(!p.peers[1].seed);
    }

    /// The SVG as an XML tree: it must parse.
    fn series_of(svg: &str) -> Vec<(String, String)> {
        let doc = roxmltree::Document::parse(svg).expect("well-formed SVG");
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        doc.descendants()
            .filter(|n| n.has_tag_name("polyline"))
            .filter_map(|n| {
                Some((
                    n.attribute("data-peer")?.to_string(),
                    n.attribute("class")?.to_string(),
                ))
            })
            .collect()
    }

    #[test]
    fn the_svg_is_well_formed_with_a_series_a_peer() {
        let mut picture = small_swarm();
        picture.file_name = "a <b> & \"c\".dat".into();
        let svg = render_svg(&picture);
        let series = series_of(&svg);
        assert_eq!(
            series,
            [
                ("1001".into(), "seed".into()),
                ("1002".into(), "leecher".into()),
                ("1003".into(), "leecher".into())
            ]
        );
        assert!(svg.contains("a &lt;b&gt; &amp; &quot;c&quot;.dat"));
        assert!(!svg.contains("href"), "nothing from outside");
        // A matrix: a cell for each ordered pair of peers.
        assert_eq!(svg.matches("class=\"fed\"").count(), 6);
    }

    #[test]
    fn a_thousand_peers_stay_readable() {
        let n = 1000u32;
        let mut logs = Vec::new();
        for id in 1002..1001 + n {
            let mut text = String::new();
            for piece in 0..20 {
                let _ = writeln!(
                    text,
                    "2026-12-06 10:00:{:02}.{:03}: Peer {id} has downloaded the piece {piece} from {}. Now the number of pieces it has is {}.",
                    piece * 2,
                    id % 1000,
                    1001 + (id + piece * 37) % 50,
                    piece + 1
                );
            }
            let _ = writeln!(
                text,
                "2026-12-06 10:00:40.000: Peer {id} has downloaded the complete file."
            );
            logs.push(parse_log(&text));
        }
        let peers: Vec<(u32, bool)> = (1001..1001 + n).map(|id| (id, id == 1001)).collect();
        let picture = Picture::build(&info(20 * 1024, 1024, &peers), &logs);
        let svg = render_svg(&picture);
        assert_eq!(series_of(&svg).len(), n as usize);
        assert!(svg.contains("… and "), "the legend is capped");
        assert!(!svg.contains("class=\"fed\""), "no matrix of 1,000 peers");
        assert_eq!(svg.matches("class=\"uploader\"").count(), TOP_UPLOADERS);
        assert!(svg.len() < 4 << 20, "{} bytes", svg.len());
    }

    #[test]
    fn empty_logs_still_draw_every_peer() {
        let picture = Picture::build(
            &info(1_000, 100, &[(1001, true), (1002, false)]),
            &[parse_log(""), parse_log("junk\n")],
        );
        assert_eq!(picture.wall_secs, 0.0);
        assert_eq!(picture.skipped, 1);
        let svg = render_svg(&picture);
        assert_eq!(series_of(&svg).len(), 2);
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }

    #[test]
    fn long_series_are_thinned_but_keep_their_ends() {
        let pts: Vec<(f64, f64)> = (0..100_000).map(|i| (i as f64, i as f64)).collect();
        let t = thin(&pts, 1000);
        assert!(t.len() <= 1100, "{}", t.len());
        assert_eq!(t[0], pts[0]);
        assert_eq!(t[t.len() - 1], pts[pts.len() - 1]);
    }
    /// A log line as any implementation, or none, might write it: time
    /// stamps of any year and precision, before or after, sentences with
    /// any numbers (beyond `u32` too), cut short or run together, and noise.
    fn any_line() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let num = prop_oneof![
            8 => (0u64..8).prop_map(|n| n.to_string()),
            8 => (1000u64..1010).prop_map(|n| n.to_string()),
            2 => any::<u32>().prop_map(|n| n.to_string()),
            1 => Just("99999999999999999999".to_string()),
            1 => Just(String::new()),
        ];
        let stamp = (
            0u32..10_000,
            0u32..14,
            0u32..33,
            0u32..25,
            0u32..61,
            0u32..62,
            proptest::option::of("[0-9]{1,9}"),
            prop_oneof![Just(' '), Just('T'), Just('x')],
        )
            .prop_map(|(y, mo, d, h, mi, s, frac, sep)| {
                let frac = frac.map_or(String::new(), |f| format!(".{f}"));
                format!("{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{s:02}{frac}")
            });
        let sentence = (
            num.clone(),
            num.clone(),
            num.clone(),
            num,
            0usize..12,
            any::<bool>(),
        )
            .prop_map(|(a, b, c, d, kind, dot)| {
                let body = match kind {
                    0 => format!("makes a connection to Peer {b}"),
                    1 => format!("is connected from {b}"),
                    2 => format!("has the preferred neighbors {b},{c}, {d}"),
                    3 => format!("has the optimistically unchoked neighbor {b}"),
                    4 => format!("is unchoked by {b}"),
                    5 => format!("is choked by {b}"),
                    6 => format!("received the 'have' message from {b} for the piece {c}"),
                    7 => format!("received the 'interested' message from {b}"),
                    8 => format!("received the 'not interested' message from {b}"),
                    9 => format!(
                        "has downloaded the piece {b} from {c}. Now the number of pieces it has is {d}"
                    ),
                    10 => "has downloaded the complete file".to_string(),
                    _ => format!("has the preferred neighbors {b}"),
                };
                format!("Peer {a} {body}{}", if dot { "." } else { "" })
            });
        let noise = "\\PC{0,12}";
        let piece = prop_oneof![
            stamp.clone(),
            sentence.clone(),
            noise,
            Just(": ".to_string()),
            Just("Peer ".to_string()),
        ];
        prop_oneof![
            6 => (stamp.clone(), sentence.clone()).prop_map(|(t, s)| format!("{t}: {s}")),
            2 => (sentence, stamp).prop_map(|(s, t)| format!("{s} [{t}]")),
            3 => proptest::collection::vec(piece, 0..5).prop_map(|parts| parts.concat()),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 256, ..Default::default() })]

        /// Whatever the logs hold, the report is drawn: no panic, a
        /// well-formed SVG with a series for every peer it names, no NaN.
        #[test]
        fn any_logs_draw_a_well_formed_picture(
            logs in proptest::collection::vec(proptest::collection::vec(any_line(), 0..40), 0..4),
            file_size in 1u64..(1 << 40),
            piece_size in 1u32..(1 << 24),
            peers in proptest::collection::vec((1000u32..1010, proptest::bool::ANY), 0..6),
        ) {
            let Some(layout) = Layout::new(file_size, piece_size) else {
                return Ok(());
            };
            let info = SwarmInfo { file_name: "f<&\"'>".into(), layout, peers };
            let parsed: Vec<Parsed> = logs.iter().map(|l| parse_log(&l.join("\n"))).collect();
            let picture = Picture::build(&info, &parsed);
            let svg = render_svg(&picture);
            proptest::prop_assert_eq!(series_of(&svg).len(), picture.peers.len());
            proptest::prop_assert!(!svg.contains("NaN") && !svg.contains("inf"));
        }
    }
}
