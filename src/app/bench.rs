//! `p2pft bench`: a swarm benchmark any user can run. It builds a swarm in a
//! temporary directory, measures this machine's ceilings (one loopback TCP
//! stream, SHA-1 on one core, reading from the page cache, writing pieces to
//! the swarm's disk the way leechers do), runs the swarm as
//! separate peer processes through [`crate::app::swarm`], and reports figures and
//! their ratios to the ceilings, as a table or one JSON record.
//!
//! Owns the benchmark's set-up and arithmetic; never changes how a peer works.

use crate::app::swarm::{self, SwarmArgs, SwarmReport};
use crate::protocol::config::{CommonConfig, Config};
use crate::protocol::layout::Layout;
use crate::runtime::store::Store;
use crate::support::piecebuf::PieceBuf;
use crate::support::status::{mib, MIB};
use clap::Args;
use serde::Serialize;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const GIB: f64 = 1024.0 * MIB;

/// Why a bench could not be set up or run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BenchError {
    #[error("need at least 2 peers and from 1 to peers-1 seeds")]
    Peers,
    #[error("piece size {0} is too large")]
    PieceSize(u64),
    /// Not enough threads for the swarm asked for.
    #[error("{0}")]
    Threads(#[from] swarm::TooFewThreads),
    /// Not enough free space for the swarm asked for (sizes in bytes).
    #[error(
        "not enough free space in {}: this swarm writes up to {:.0} MiB (the seed's file, {leechers} leechers' and the disk ceiling's scratch files, and {:.0} MiB of logs and metadata, a log line a piece and peer), {:.0} MiB are free; use --dir elsewhere, a smaller --file-size or a larger --piece-size",
        dir.display(),
        mib(*need),
        mib(*records),
        mib(*free)
    )]
    Space {
        dir: PathBuf,
        need: u64,
        leechers: u64,
        records: u64,
        free: u64,
    },
    #[error("{0} (the options become Common.cfg keys: -k NumberOfPreferredNeighbors, -p UnchokingInterval, -m OptimisticUnchokingInterval, --piece-size PieceSize, --pipeline-depth P2pftPipelineDepth)")]
    Options(#[source] crate::protocol::config::ConfigError),
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("{0}")]
    Meta(#[from] crate::integrity::meta::MetaError),
    #[error("{0}")]
    Swarm(#[from] swarm::SwarmError),
    #[error("{0}")]
    Hosts(#[from] crate::app::netns::NetnsError),
    #[error("stopped by signal {0}")]
    Stopped(i32),
}

/// Says what was being done when an I/O error came.
pub(super) fn doing(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> BenchError {
    let what = what.to_string();
    move |source| BenchError::Io { what, source }
}

/// The swarm a benchmark or a simulation runs: its seeds, its file and
/// pieces, and the choking and pipelining settings of Common.cfg.
#[derive(Debug, Args, Clone)]
pub struct SwarmShape {
    /// How many of them start with the file.
    #[arg(long, default_value_t = 1)]
    pub seeds: usize,
    /// File size (K, M, G suffixes are powers of 1024).
    #[arg(long, default_value = "512M", value_parser = crate::protocol::config::parse_size)]
    pub file_size: u64,
    /// Piece size.
    #[arg(long, default_value = "256K", value_parser = crate::protocol::config::parse_size)]
    pub piece_size: u64,
    /// NumberOfPreferredNeighbors.
    #[arg(short, long, default_value_t = 4)]
    pub k: usize,
    /// UnchokingInterval, seconds.
    #[arg(short, long, default_value_t = 1.0)]
    pub p: f64,
    /// OptimisticUnchokingInterval, seconds.
    #[arg(short, long, default_value_t = 2.0)]
    pub m: f64,
    /// Spec-strict peers: no pipelining, no early unchoke, random picks only.
    #[arg(long)]
    pub strict: bool,
    /// Requests outstanding per p2pft neighbour (P2pftPipelineDepth;
    /// default: enough for 512 KiB in flight, 4 to 64, and to another
    /// host what its link needs).
    #[arg(long)]
    pub pipeline_depth: Option<u32>,
}

/// The swarm's shape as every JSON record gives it (flattened into each).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ShapeRecord {
    pub seeds: usize,
    pub file_size_bytes: u64,
    pub piece_size_bytes: u64,
    pub k: usize,
    pub p_secs: f64,
    pub m_secs: f64,
    /// As the peers have it (Common.cfg's P2pftStrict).
    pub strict: bool,
}

impl ShapeRecord {
    /// `spec-strict` or `p2pft extensions`.
    pub(crate) fn mode_text(&self) -> &'static str {
        match self.strict {
            true => "spec-strict",
            false => "p2pft extensions",
        }
    }

    /// `1 seed` or `2 seeds`.
    pub(crate) fn seeds_text(&self) -> String {
        let s = if self.seeds == 1 { "" } else { "s" };
        format!("{} seed{s}", self.seeds)
    }
}

/// `24 MiB file, 256 KiB pieces, k=4 p=1s m=2s`, as the tables' first lines
/// say it.
impl std::fmt::Display for ShapeRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0} MiB file, {} KiB pieces, k={} p={}s m={}s",
            mib(self.file_size_bytes),
            self.piece_size_bytes / 1024,
            self.k,
            self.p_secs,
            self.m_secs
        )
    }
}

impl SwarmShape {
    /// What the JSON records say of this shape; `strict` as the peers'
    /// configuration has it.
    pub(crate) fn record(&self, strict: bool) -> ShapeRecord {
        ShapeRecord {
            seeds: self.seeds,
            file_size_bytes: self.file_size,
            piece_size_bytes: self.piece_size,
            k: self.k,
            p_secs: self.p,
            m_secs: self.m,
            strict,
        }
    }

    /// The Common.cfg that says this, for a file named `file_name` (the
    /// piece size unchecked: the peers' config rules judge it).
    pub(super) fn common_cfg(&self, file_name: &str) -> String {
        let mut text = format!(
            "NumberOfPreferredNeighbors {}\nUnchokingInterval {}\nOptimisticUnchokingInterval {}\nFileName {file_name}\nFileSize {}\nPieceSize {}\n",
            self.k, self.p, self.m, self.file_size, self.piece_size
        );
        if let Some(depth) = self.pipeline_depth {
            text += &format!("P2pftPipelineDepth {depth}\n");
        }
        if self.strict {
            text += "P2pftStrict 1\n";
        }
        text
    }
}

#[derive(Debug, Args, Clone)]
pub struct BenchArgs {
    /// Peers in the swarm, seeds included.
    #[arg(long, default_value_t = 5)]
    pub peers: usize,
    #[command(flatten)]
    pub shape: SwarmShape,
    /// Leechers write pieces through the page cache (`P2pftDirectIo 0`)
    /// instead of with direct I/O.
    #[arg(long)]
    pub buffered_io: bool,
    /// No metadata: pieces are not verified.
    #[arg(long)]
    pub no_verify: bool,
    /// Seeds hash their whole file at start, as on a first start: their check
    /// records (written when the metadata was made) are removed before each
    /// run.
    #[arg(long)]
    pub seed_check: bool,
    /// Where to build the swarm (a new directory inside it); default: the system temp dir.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the swarm directory afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Fail if the swarm has not finished after this many seconds.
    #[arg(long, default_value_t = 900.0)]
    pub timeout: f64,
    /// Print one JSON record instead of a table (one line a run).
    #[arg(long)]
    pub json: bool,
    /// Run the swarm this many times in the same directory, ceilings measured
    /// before each run, and summarise (median, least and most) at the end.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub runs: u32,
    /// After each run, draw it from the peers' logs into this SVG (as `p2pft
    /// report`); with --runs N, one file a run, `-runN` before the extension.
    #[arg(long, value_name = "FILE.svg")]
    pub report: Option<PathBuf>,
    /// Put each peer on a host of its own: a network namespace on a bridge,
    /// its link capped at --link-rate both ways (needs root; `--peers` is
    /// this many).
    #[arg(long, value_name = "N", requires = "link_rate", value_parser = clap::value_parser!(u64).range(2..=2000))]
    pub hosts: Option<u64>,
    /// With --hosts: each host's link rate, bytes a second both ways (K, M,
    /// G are KiB/s, MiB/s, GiB/s), set with `tbf`.
    #[arg(long, value_name = "RATE", requires = "hosts", value_parser = crate::protocol::config::parse_rate)]
    pub link_rate: Option<u64>,
    /// With --hosts: skip the baseline run without peer-to-peer (leechers
    /// that serve nobody), which takes about leechers times as long.
    #[arg(long, requires = "hosts")]
    pub no_baseline: bool,
    /// With --hosts: what caps the links: `tbf` on each host's link, or
    /// `config`, the peers' own P2pftMaxUploadRate and
    /// P2pftMaxDownloadRate in Common.cfg with the links left uncapped.
    #[arg(long, value_enum, default_value_t = CapBy::Tbf, requires = "hosts")]
    pub cap_by: CapBy,
    /// With --hosts: the links' MTU, bytes a frame. 1500 is Ethernet's;
    /// 9000 (jumbo frames, as in many data centres) is a sixth of the
    /// kernel's per-packet work, which at 32 hosts on 2 cores is what sets
    /// the pace.
    #[arg(long, value_name = "BYTES", default_value_t = 1500, requires = "hosts", value_parser = clap::value_parser!(u32).range(1280..=65_000))]
    pub mtu: u32,
}

/// What caps each host's link in `bench --hosts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CapBy {
    /// The kernel's token bucket on each link, both ways, as a network card.
    Tbf,
    /// The peers' own rate caps (Common.cfg), the links uncapped.
    Config,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Ceilings {
    pub loopback_one_stream_bytes_per_sec: f64,
    /// One message at a time (the `sha1` crate).
    pub sha1_one_core_bytes_per_sec: f64,
    /// Two messages at once, as readers verify pieces that wait together
    /// (`sha1pair`; the same as one at a time without SHA-NI).
    pub sha1_pairs_one_core_bytes_per_sec: f64,
    pub page_cache_read_bytes_per_sec: f64,
    /// Pieces written to the swarm directory's disk as the leechers write
    /// them: one fresh file per leecher at once (direct I/O unless
    /// `--buffered-io`), each with a peer's disk threads, then flushed.
    pub disk_write_bytes_per_sec: f64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct PeerFigures {
    pub id: u32,
    pub seed: bool,
    pub complete_after_secs: Option<f64>,
    pub cpu_secs: f64,
    pub peak_rss_mb: f64,
    pub threads: u32,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct BenchRecord {
    pub ok: bool,
    pub peers: usize,
    #[serde(flatten)]
    pub shape: ShapeRecord,
    pub pipeline_depth: u32,
    pub direct_io: bool,
    pub verified: bool,
    /// Seeds hashed their whole file at start (`--seed-check`); otherwise
    /// their check records spared them that.
    pub seed_check: bool,
    /// From the first peer's start to the last leecher's verified completion.
    pub wall_secs: f64,
    pub delivered_bytes: u64,
    pub delivered_bytes_per_sec: f64,
    pub cpu_secs_total: f64,
    pub cpu_secs_per_delivered_gib: f64,
    /// The peers' CPU seconds over what this machine's cores had in the
    /// wall time: near 1, the CPU set the pace; with the disk-write ratio
    /// near 1, the disk did.
    pub cpu_busy: f64,
    pub cores: usize,
    pub peak_rss_mb_max: f64,
    pub threads_max: u32,
    pub ceilings: Ceilings,
    pub rate_to_loopback: f64,
    pub rate_to_sha1: f64,
    pub rate_to_sha1_pairs: f64,
    pub rate_to_page_cache: f64,
    pub rate_to_disk_write: f64,
    pub per_peer: Vec<PeerFigures>,
}

/// Fills `path` with `size` pseudo-random bytes (xorshift; incompressible enough).
fn write_random_file(path: &Path, size: u64) -> io::Result<()> {
    let mut f = io::BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ size;
    let mut block = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for chunk in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n])?;
        left -= n as u64;
        go_on().map_err(io::Error::other)?;
    }
    // Written back now, so that its writeback does not run during the swarm.
    f.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// `n` distinct ports free on 127.0.0.1, below the kernel's ephemeral range:
/// a port picked with bind(0) is one the kernel may also give an earlier
/// peer's outgoing connection before the peer that is to listen on it binds
/// it (a 32-peer swarm makes about 500 connections while it starts).
fn free_ports(n: usize) -> io::Result<Vec<u16>> {
    use rand::Rng;
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let first = if low > 12_000 { 10_000 } else { 1024 };
    let mut rng = rand::rng();
    let mut listeners: Vec<TcpListener> = Vec::with_capacity(n);
    for _ in 0..100 * n + 1000 {
        if listeners.len() == n {
            break;
        }
        // Held until all are chosen, so none is picked twice. No room below
        // the ephemeral range: any free port.
        let port = if low > first {
            rng.random_range(first..low)
        } else {
            0
        };
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            listeners.push(l);
        }
    }
    if listeners.len() < n {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("no {n} free ports on 127.0.0.1 below {low}"),
        ));
    }
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// One TCP stream over loopback, 256 KiB writes, for about `secs`.
pub(crate) fn loopback_ceiling(secs: f64) -> io::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> io::Result<(u64, Duration)> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        let start = Instant::now();
        loop {
            match s.read(&mut buf)? {
                0 => return Ok((total, start.elapsed())),
                n => total += n as u64,
            }
        }
    });
    let mut s = TcpStream::connect(addr)?;
    let buf = vec![7u8; 256 * 1024];
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        s.write_all(&buf)?;
    }
    drop(s);
    let (total, took) = reader.join().expect("reader thread")?;
    Ok(total as f64 / took.as_secs_f64())
}

/// SHA-1 of an in-memory buffer on this thread, for about `secs`.
pub(crate) fn sha1_ceiling(secs: f64) -> f64 {
    let buf = vec![0x5au8; 16 << 20];
    rate_of(secs, buf.len(), || {
        std::hint::black_box(crate::integrity::meta::sha1(&buf));
    })
}

/// SHA-1 of two in-memory buffers at once on this thread, for about `secs`.
pub(crate) fn sha1_pairs_ceiling(secs: f64) -> f64 {
    let (a, b) = (vec![0x5au8; 8 << 20], vec![0xa5u8; 8 << 20]);
    rate_of(secs, a.len() + b.len(), || {
        std::hint::black_box(crate::integrity::sha1pair::sha1_pair(&a, &b));
    })
}

/// Bytes a second of `work`, which handles `bytes` a call, called for about `secs`.
fn rate_of(secs: f64, bytes: usize, mut work: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut total = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        work();
        total += bytes as u64;
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// Sequential 1 MiB positioned reads of a file that is in the page cache.
pub(crate) fn page_cache_ceiling(path: &Path, max_bytes: u64) -> io::Result<f64> {
    let f = File::open(path)?;
    let len = f.metadata()?.len().min(max_bytes);
    let mut buf = vec![0u8; 1 << 20];
    let mut read = |limit: u64| -> io::Result<u64> {
        let mut off = 0;
        while off < limit {
            let n = f.read_at(&mut buf, off)?;
            if n == 0 {
                break;
            }
            off += n as u64;
        }
        Ok(off)
    };
    read(len)?; // warm the cache
    let start = Instant::now();
    let n = read(len)?;
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Writes up to `max_bytes` of 256 KiB pieces into `files` fresh scratch
/// files in `dir` at once, one per leecher of the swarm, each through its own
/// [`Store`] as a leecher writes (`direct_io` as configured), from as many
/// threads as a peer writes with, in a shuffled order, then flushes each;
/// the files are removed after. One file alone is not the same device load:
/// one fresh file is written faster than four at once (see
/// docs/PERFORMANCE.md).
pub(crate) fn disk_write_ceiling(
    dir: &Path,
    max_bytes: u64,
    direct_io: bool,
    files: u32,
) -> io::Result<f64> {
    const PIECE: u32 = 256 * 1024;
    let files = files.max(1);
    let threads = crate::runtime::peer::disk_threads(direct_io) as u32;
    let pieces = u32::try_from(max_bytes / u64::from(files) / u64::from(PIECE))
        .unwrap_or(u32::MAX)
        .max(threads);
    let layout = Layout::new(u64::from(pieces) * u64::from(PIECE), PIECE).expect("small layout");
    let paths: Vec<PathBuf> = (0..files)
        .map(|f| dir.join(format!("disk-ceiling-{f}.tmp")))
        .collect();
    let rate = write_files(&paths, layout, direct_io, threads);
    // Removed whatever happened, as far as they were made.
    for path in &paths {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    let rate = rate?;
    sync_fs(dir)?;
    Ok(rate)
}

/// The disk ceiling's timed part: `paths` made and filled at once.
fn write_files(
    paths: &[PathBuf],
    layout: Layout,
    direct_io: bool,
    threads: u32,
) -> io::Result<f64> {
    let (pieces, piece_size) = (layout.num_pieces(), layout.piece_size_bytes() as usize);
    let stores = paths
        .iter()
        .map(|path| Store::open_leecher(path, layout, direct_io, false))
        .collect::<io::Result<Vec<Store>>>()?;
    // Pieces in a scattered order (a stride coprime with the count), as a
    // swarm delivers them.
    let stride = (pieces / 2 + 1..)
        .find(|s| gcd(*s, pieces) == 1)
        .expect("some stride");
    let write_all = |store: &Store| -> io::Result<()> {
        std::thread::scope(|scope| -> io::Result<()> {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    scope.spawn(move || -> io::Result<()> {
                        let buf = PieceBuf::from(vec![0x5a; piece_size]);
                        for i in (t..pieces).step_by(threads as usize) {
                            let index =
                                ((u64::from(i) * u64::from(stride)) % u64::from(pieces)) as u32;
                            store.write_piece(index, &buf)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            for w in workers {
                w.join().expect("disk ceiling thread")?;
            }
            Ok(())
        })?;
        store.sync()
    };
    let start = Instant::now();
    std::thread::scope(|scope| -> io::Result<()> {
        let files: Vec<_> = stores
            .iter()
            .map(|store| scope.spawn(move || write_all(store)))
            .collect();
        for f in files {
            f.join().expect("disk ceiling file")?;
        }
        Ok(())
    })?;
    Ok((layout.file_size_bytes() * stores.len() as u64) as f64 / start.elapsed().as_secs_f64())
}

/// Waits until the file system holding `dir` has committed what was done to
/// it, frees and their discards included: deleting 2 GiB of an earlier run's
/// files on a file system mounted with `discard` has the device trimming for a
/// while afterwards, in the middle of whatever is measured next.
fn sync_fs(dir: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let handle = std::fs::File::open(dir)?;
    nix::unistd::syncfs(handle.as_raw_fd()).map_err(io::Error::from)
}

/// Removes the leechers' files of an earlier run in `dir` and lets the file
/// system settle, before anything of this run is measured.
pub(super) fn clear_leechers(args: &BenchArgs, dir: &Path) -> io::Result<()> {
    for i in args.shape.seeds..args.peers {
        match std::fs::remove_file(peer_file(dir, i)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    sync_fs(dir)
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

pub(super) fn setup(args: &BenchArgs, dir: &Path) -> Result<(), BenchError> {
    if args.peers < 2 || args.shape.seeds == 0 || args.shape.seeds >= args.peers {
        return Err(BenchError::Peers);
    }
    swarm::check_threads(args.peers as u64, args.peers as u64)?;
    let piece_size = u32::try_from(args.shape.piece_size)
        .map_err(|_| BenchError::PieceSize(args.shape.piece_size))?;
    std::fs::create_dir_all(dir).map_err(doing(format_args!("cannot create {}", dir.display())))?;
    check_free_space(args, dir)?;
    let mut common = args.shape.common_cfg("bench.bin");
    if args.buffered_io {
        common += "P2pftDirectIo 0\n";
    }
    if let (Some(rate), CapBy::Config) = (args.link_rate, args.cap_by) {
        common += &format!("P2pftMaxUploadRate {rate}\nP2pftMaxDownloadRate {rate}\n");
    }
    std::fs::write(dir.join("Common.cfg"), common).map_err(doing("writing Common.cfg"))?;
    let ports = free_ports(args.peers).map_err(doing("finding free ports"))?;
    let mut info = String::new();
    for (i, port) in ports.iter().enumerate() {
        info += &format!(
            "{} 127.0.0.1 {port} {}\n",
            1001 + i,
            u8::from(i < args.shape.seeds)
        );
    }
    std::fs::write(dir.join("PeerInfo.cfg"), info).map_err(doing("writing PeerInfo.cfg"))?;
    // The peers' own rules judge the options, before the file is written.
    Config::load(dir).map_err(BenchError::Options)?;
    let first = peer_file(dir, 0);
    let making = |path: &Path| doing(format!("making {}", path.display()));
    std::fs::create_dir_all(first.parent().expect("in a peer directory"))
        .map_err(making(&first))?;
    write_random_file(&first, args.shape.file_size).map_err(making(&first))?;
    for path in seed_files(args, dir).skip(1) {
        std::fs::create_dir_all(path.parent().expect("in a peer directory"))
            .map_err(making(&path))?;
        std::fs::hard_link(&first, &path).map_err(making(&path))?;
    }
    if !args.no_verify {
        // Making the metadata hashes the file, which leaves the seed's check
        // record, as `p2pft meta` does.
        let pool =
            crate::integrity::meta::hashing_pool(0).map_err(doing("starting hashing threads"))?;
        crate::integrity::meta::Meta::create_until(
            &first,
            piece_size,
            &pool,
            &swarm::stop_requested,
        )
        .and_then(|m| m.save(&crate::integrity::meta::default_path(dir, "bench.bin")))?;
        // The other seeds' files are hard links, the same file: the record
        // holds for them too.
        let record = crate::integrity::checked::path_for(&first);
        for path in seed_files(args, dir).skip(1) {
            if record.exists() {
                std::fs::copy(&record, crate::integrity::checked::path_for(&path))
                    .map_err(making(&path))?;
            }
        }
    }
    Ok(())
}

/// The most the disk-write ceiling writes (scattered 256 KiB pieces, split
/// among as many files as the swarm has leechers): the default swarm's whole
/// load, so that the ceiling is that swarm's writes without the network: a
/// quarter of it varied far more than fio writing the whole (see
/// docs/PERFORMANCE.md).
const DISK_CEILING_BYTES: u64 = 2 << 30;

fn leechers(args: &BenchArgs) -> u64 {
    (args.peers - args.shape.seeds) as u64
}

/// What the disk ceiling writes: the leechers' load, up to [`DISK_CEILING_BYTES`].
fn disk_ceiling_bytes(args: &BenchArgs) -> u64 {
    (args.shape.file_size * leechers(args)).min(DISK_CEILING_BYTES)
}

/// Bytes of logs and metadata a run writes at most: they grow with the
/// pieces, and with the square of the peers.
fn records_space(args: &BenchArgs) -> u64 {
    let pieces = args.shape.file_size.div_ceil(args.shape.piece_size.max(1));
    let peers = args.peers as u64;
    swarm::records_bytes(pieces, peers, peers, true)
}

/// Bytes a run writes into `dir` at most: the seed's file (further seeds'
/// are hard links to it), every leecher's, the disk ceiling's scratch
/// files, the logs and the metadata.
fn space_needed(args: &BenchArgs) -> u64 {
    args.shape
        .file_size
        .saturating_mul(1 + leechers(args))
        .saturating_add(disk_ceiling_bytes(args))
        .saturating_add(records_space(args))
}

/// Refuses a swarm that would fill the file system before it starts, instead
/// of peers failing one by one half-way (and a record of figures for nothing).
fn check_free_space(args: &BenchArgs, dir: &Path) -> Result<(), BenchError> {
    let Some(free) = swarm::free_space(dir) else {
        return Ok(()); // no figure to check against: the peers will say
    };
    let need = space_needed(args);
    if free < need {
        return Err(BenchError::Space {
            dir: dir.to_path_buf(),
            need,
            leechers: leechers(args),
            records: records_space(args),
            free,
        });
    }
    Ok(())
}

/// The file of the `i`-th peer (0-based: ID 1001 + `i`, seeds first).
pub(super) fn peer_file(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("peer_{}/bench.bin", 1001 + i))
}

/// The seeds' files, the first one's first.
fn seed_files<'a>(args: &BenchArgs, dir: &'a Path) -> impl Iterator<Item = PathBuf> + 'a {
    (0..args.shape.seeds).map(move |i| peer_file(dir, i))
}

/// The figures of one run; the mode (`common`) as the peers read it.
fn record(
    args: &BenchArgs,
    common: &CommonConfig,
    report: &SwarmReport,
    ceilings: Ceilings,
) -> BenchRecord {
    // Only the leechers that completed delivered anything we can count.
    let leechers = report
        .peers
        .iter()
        .filter(|p| !p.seed && p.complete_after_secs.is_some())
        .count() as u64;
    let delivered = leechers * args.shape.file_size;
    let wall = report
        .peers
        .iter()
        .filter_map(|p| p.complete_after_secs)
        .fold(0.0, f64::max);
    let wall = if report.ok { wall } else { report.wall_secs };
    let cpu: f64 = report.peers.iter().map(|p| p.cpu_secs).sum();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rate = delivered as f64 / wall.max(1e-9);
    let per_peer: Vec<PeerFigures> = report
        .peers
        .iter()
        .map(|p| PeerFigures {
            id: p.id,
            seed: p.seed,
            complete_after_secs: p.complete_after_secs,
            cpu_secs: p.cpu_secs,
            peak_rss_mb: p.peak_rss_kb as f64 / 1024.0,
            threads: p.threads,
        })
        .collect();
    BenchRecord {
        ok: report.ok,
        peers: args.peers,
        shape: args.shape.record(common.strict),
        pipeline_depth: common.pipeline_depth,
        direct_io: common.direct_io,
        verified: !args.no_verify,
        seed_check: args.seed_check && !args.no_verify,
        wall_secs: wall,
        delivered_bytes: delivered,
        delivered_bytes_per_sec: rate,
        cpu_secs_total: cpu,
        cpu_secs_per_delivered_gib: cpu / (delivered as f64 / GIB).max(1e-12),
        cpu_busy: cpu / (wall.max(1e-9) * cores as f64),
        cores,
        peak_rss_mb_max: per_peer.iter().map(|p| p.peak_rss_mb).fold(0.0, f64::max),
        threads_max: per_peer.iter().map(|p| p.threads).max().unwrap_or(0),
        rate_to_loopback: rate / ceilings.loopback_one_stream_bytes_per_sec,
        rate_to_sha1: rate / ceilings.sha1_one_core_bytes_per_sec,
        rate_to_sha1_pairs: rate / ceilings.sha1_pairs_one_core_bytes_per_sec,
        rate_to_page_cache: rate / ceilings.page_cache_read_bytes_per_sec,
        rate_to_disk_write: rate / ceilings.disk_write_bytes_per_sec,
        ceilings,
        per_peer,
    }
}

/// The table of one run.
fn write_table(out: &mut impl std::fmt::Write, r: &BenchRecord) -> std::fmt::Result {
    writeln!(
        out,
        "swarm: {} peers ({}), {}, {}, {}, {}",
        r.peers,
        r.shape.seeds_text(),
        r.shape,
        if r.shape.strict {
            "spec-strict".to_string()
        } else {
            format!("pipeline depth {}", r.pipeline_depth)
        },
        match (r.verified, r.seed_check) {
            (false, _) => "unverified",
            (true, true) => "SHA-1 verified, seed file hashed at start",
            (true, false) => "SHA-1 verified, seed file from its check record",
        },
        if r.direct_io {
            "direct I/O"
        } else {
            "buffered I/O"
        }
    )?;
    writeln!(
        out,
        "{:>6}  {:>7}  {:>11}  {:>8}  {:>8}  {:>7}",
        "peer", "role", "complete s", "CPU s", "RSS MB", "threads"
    )?;
    for p in &r.per_peer {
        writeln!(
            out,
            "{:>6}  {:>7}  {:>11}  {:>8.2}  {:>8.1}  {:>7}",
            p.id,
            if p.seed { "seed" } else { "leecher" },
            p.complete_after_secs
                .map_or("-".into(), |s| format!("{s:.3}")),
            p.cpu_secs,
            p.peak_rss_mb,
            p.threads
        )?;
    }
    let c = &r.ceilings;
    writeln!(out, "ceilings: loopback one stream {:.0} MiB/s, SHA-1 one core {:.0} MiB/s ({:.0} two at once), page-cache read {:.0} MiB/s, disk write {:.0} MiB/s",
        c.loopback_one_stream_bytes_per_sec / MIB, c.sha1_one_core_bytes_per_sec / MIB, c.sha1_pairs_one_core_bytes_per_sec / MIB, c.page_cache_read_bytes_per_sec / MIB, c.disk_write_bytes_per_sec / MIB)?;
    writeln!(
        out,
        "wall to last verified completion  {:>10.3} s",
        r.wall_secs
    )?;
    writeln!(out,
        "delivered                         {:>10.1} MiB/s  ({:.2} of loopback, {:.2} of SHA-1 ({:.2} two at once), {:.2} of page cache, {:.2} of disk write)",
        r.delivered_bytes_per_sec / MIB,
        r.rate_to_loopback,
        r.rate_to_sha1,
        r.rate_to_sha1_pairs,
        r.rate_to_page_cache,
        r.rate_to_disk_write
    )?;
    writeln!(
        out,
        "CPU per delivered GiB             {:>10.2} s   ({:.2} s in all)",
        r.cpu_secs_per_delivered_gib, r.cpu_secs_total
    )?;
    writeln!(
        out,
        "busy: CPU                         {:>10.2}     of {} cores over the wall time (disk writes: {:.2} of the disk's ceiling)",
        r.cpu_busy, r.cores, r.rate_to_disk_write
    )?;
    writeln!(
        out,
        "peak RSS, largest peer            {:>10.1} MB",
        r.peak_rss_mb_max
    )?;
    writeln!(
        out,
        "threads, most in one peer         {:>10}",
        r.threads_max
    )?;
    writeln!(
        out,
        "result: {}",
        if r.ok {
            "OK (every file identical to the seed's)"
        } else {
            "FAILED (the figures count only the leechers that completed)"
        }
    )?;
    Ok(())
}

/// Says what the bench is doing, on a terminal only (a run is quiet for
/// several seconds, more with a large file); the figures go to stdout.
pub(super) fn phase(what: std::fmt::Arguments) {
    use std::io::IsTerminal;
    if io::stderr().is_terminal() {
        let _ = writeln!(io::stderr(), "bench: {what}");
    }
}

/// An error once a signal asked the bench to stop (see [`swarm::catch_interrupts`]).
pub(super) fn go_on() -> Result<(), BenchError> {
    match swarm::interrupted() {
        Some(signal) => Err(BenchError::Stopped(signal)),
        None => Ok(()),
    }
}

/// How the bench has the launcher run its swarm in `dir`: quietly, JSON
/// summary, fresh each run; `placed` peers in network namespaces.
pub(super) fn swarm_args(
    args: &BenchArgs,
    dir: &Path,
    placed: std::collections::BTreeMap<u32, swarm::Placement>,
) -> SwarmArgs {
    SwarmArgs {
        dir: dir.to_path_buf(),
        timeout: args.timeout,
        keep: false,
        quiet: true,
        json: true,
        connect_timeout: Some(30.0),
        secret: false,
        max_upload_rate: None,
        max_download_rate: None,
        report: None,
        ssh: Default::default(),
        placed,
        quiet_peers: false,
    }
}

/// Measures the ceilings, runs the swarm once in `dir` and makes its record.
fn run_once(args: &BenchArgs, dir: &Path) -> Result<BenchRecord, BenchError> {
    clear_leechers(args, dir).map_err(doing("clearing the last run"))?;
    phase(format_args!(
        "measuring the ceilings (loopback, SHA-1, page cache, {:.0} MiB to disk)",
        mib(disk_ceiling_bytes(args))
    ));
    let loopback = loopback_ceiling(1.0).map_err(doing("measuring loopback"))?;
    go_on()?;
    let (sha1, sha1_pairs) = (sha1_ceiling(0.5), sha1_pairs_ceiling(0.5));
    go_on()?;
    let page_cache = page_cache_ceiling(&peer_file(dir, 0), 1 << 30)
        .map_err(doing("measuring page-cache reads"))?;
    go_on()?;
    let disk_write = disk_write_ceiling(
        dir,
        disk_ceiling_bytes(args),
        !args.buffered_io,
        leechers(args) as u32,
    )
    .map_err(doing("measuring disk writes"))?;
    go_on()?;
    let ceilings = Ceilings {
        loopback_one_stream_bytes_per_sec: loopback,
        sha1_one_core_bytes_per_sec: sha1,
        sha1_pairs_one_core_bytes_per_sec: sha1_pairs,
        page_cache_read_bytes_per_sec: page_cache,
        disk_write_bytes_per_sec: disk_write,
    };
    if args.seed_check {
        for path in seed_files(args, dir) {
            crate::integrity::checked::forget(&path).map_err(doing(path.display()))?;
        }
    }
    phase(format_args!(
        "running the swarm: {} peers, {:.0} MiB to each of {} leechers",
        args.peers,
        mib(args.shape.file_size),
        leechers(args)
    ));
    let report = swarm::run(&swarm_args(args, dir, Default::default()))?;
    go_on()?;
    let common = Config::load(dir).map_err(BenchError::Options)?.common;
    Ok(record(args, &common, &report, ceilings))
}

/// One figure of a run's record.
type Figure = dyn Fn(&BenchRecord) -> f64;

/// The median of `v` (0 for none).
pub(super) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 0 {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

/// The head line of a summary of `runs` runs, `ok` of them OK.
pub(super) fn write_summary_head(
    out: &mut impl std::fmt::Write,
    runs: usize,
    ok: usize,
) -> std::fmt::Result {
    writeln!(out, "summary of {runs} runs ({ok} OK): median (least-most)")
}

/// One line of a summary: the median, least and most of `v` (nothing for
/// no value), `unit` after them.
pub(super) fn write_spread(
    out: &mut impl std::fmt::Write,
    name: &str,
    v: Vec<f64>,
    unit: &str,
) -> std::fmt::Result {
    if v.is_empty() {
        return Ok(());
    }
    let least = v.iter().copied().fold(f64::INFINITY, f64::min);
    let most = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let unit = if unit.is_empty() {
        String::new()
    } else {
        format!(" {unit}")
    };
    let median = median(v);
    writeln!(
        out,
        "  {name:<34}{median:>9.2} ({least:.2}-{most:.2}){unit}"
    )
}

/// Median, least and most of each figure over several runs.
fn write_summary(out: &mut impl std::fmt::Write, records: &[BenchRecord]) -> std::fmt::Result {
    let ok = records.iter().filter(|r| r.ok).count();
    write_summary_head(out, records.len(), ok)?;
    let rows: [(&str, &Figure, &str); 7] = [
        ("wall to last verified completion", &|r| r.wall_secs, "s"),
        ("delivered", &|r| r.delivered_bytes_per_sec / MIB, "MiB/s"),
        ("delivered / loopback ceiling", &|r| r.rate_to_loopback, ""),
        (
            "delivered / disk-write ceiling",
            &|r| r.rate_to_disk_write,
            "",
        ),
        (
            "CPU per delivered GiB",
            &|r| r.cpu_secs_per_delivered_gib,
            "s",
        ),
        ("busy: CPU, of all cores", &|r| r.cpu_busy, ""),
        ("peak RSS, largest peer", &|r| r.peak_rss_mb_max, "MB"),
    ];
    for (name, f, unit) in rows {
        write_spread(out, name, records.iter().map(f).collect(), unit)?;
    }
    Ok(())
}

/// `p2pft bench`: 0 when every run finished and every file matched, 1 if
/// not, 2 for bad arguments, 128 + the signal when SIGINT, SIGTERM or SIGHUP
/// stopped it (its peers stopped and, unless `--keep`, its directory removed
/// like after any run).
pub(crate) fn run_cli(args: &BenchArgs) -> i32 {
    let mut scratch = match begin(args) {
        Ok(scratch) => scratch,
        Err(code) => return code,
    };
    let dir = scratch.dir.clone();
    phase(format_args!(
        "making the seed's {:.0} MiB file{} in {}",
        mib(args.shape.file_size),
        if args.no_verify {
            ""
        } else {
            " and its metadata"
        },
        dir.display()
    ));
    if let Err(e) = setup(args, &dir) {
        eprintln!("error: {e}");
        return swarm::unless_interrupted(crate::app::exit::BAD_INPUT);
    }
    scratch.keep = args.keep;
    let code = each_run(
        args.runs,
        args.json,
        crate::app::exit::FAILED,
        |run| {
            let r = run_once(args, &dir)?;
            if let Some(out) = &args.report {
                crate::app::report::write_after_run(&dir, &report_path(out, run, args.runs));
            }
            Ok::<_, BenchError>(r)
        },
        |r| r.ok,
        write_table,
        write_summary,
    );
    if scratch.keep {
        eprintln!("swarm directory kept: {}", dir.display());
    }
    code
}

/// Runs `run_once` for runs 1 to `runs`, prints each record as it comes
/// (a table, or a JSON line with `json`) and, after several, their
/// summary; the exit code: 0 when every run was `ok`, 1 if one was not,
/// `failed` if one failed (which ends the runs), 128 + the signal that
/// stopped it, or that of SIGPIPE once nobody reads the figures any more
/// (`--json | head -1`: no more runs).
pub(super) fn each_run<R: Serialize, E: std::fmt::Display>(
    runs: u32,
    json: bool,
    failed: i32,
    mut run_once: impl FnMut(u32) -> Result<R, E>,
    ok: impl Fn(&R) -> bool,
    table: impl Fn(&mut String, &R) -> std::fmt::Result,
    summary: impl Fn(&mut String, &[R]) -> std::fmt::Result,
) -> i32 {
    const STDOUT_CLOSED: i32 = 128 + 13;
    let emit = crate::support::process::emit;
    let mut records = Vec::new();
    let mut code = 0;
    for run in 1..=runs {
        if runs > 1 && !json && !emit(&format!("run {run} of {runs}\n")) {
            return STDOUT_CLOSED;
        }
        match run_once(run) {
            Ok(r) => {
                if !ok(&r) {
                    code = 1;
                }
                let text = crate::support::process::render(json, &r, &table);
                records.push(r);
                if !emit(&text) {
                    return STDOUT_CLOSED;
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                code = swarm::unless_interrupted(failed);
                break;
            }
        }
    }
    if records.len() > 1 && !json {
        let mut text = String::new();
        summary(&mut text, &records).expect("a String takes any text");
        if !emit(&text) {
            return STDOUT_CLOSED;
        }
    }
    code
}

/// Where run `run` of `runs` draws its report: `out` for a single run,
/// `name-runN.svg` for each of several.
pub(super) fn report_path(out: &Path, run: u32, runs: u32) -> PathBuf {
    if runs == 1 {
        return out.to_path_buf();
    }
    let stem = out.file_stem().map_or_else(
        || "swarm-report".into(),
        |s| s.to_string_lossy().into_owned(),
    );
    let name = match out.extension() {
        Some(ext) => format!("{stem}-run{run}.{}", ext.to_string_lossy()),
        None => format!("{stem}-run{run}"),
    };
    out.with_file_name(name)
}

/// What every bench does first: its diagnostics, signals caught, and the
/// directory it will work in (not made yet), removed on drop until the
/// caller sets `keep`: a directory the setup could not complete goes, even
/// with `--keep`. `Err` is the exit code.
pub(super) fn begin(args: &BenchArgs) -> Result<Scratch, i32> {
    crate::support::process::init_diagnostics("bench".into());
    if let Err(e) = swarm::catch_interrupts() {
        eprintln!("error: cannot catch signals: {e}");
        return Err(1);
    }
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    Ok(Scratch {
        dir: base.join(format!("p2pft-bench-{}", std::process::id())),
        keep: false,
    })
}

/// The bench's directory, removed (unless kept) however the bench ends,
/// a panic included.
pub(super) struct Scratch {
    pub dir: PathBuf,
    pub keep: bool,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_runs_draw_a_report_each() {
        let out = Path::new("/tmp/r.svg");
        assert_eq!(report_path(out, 1, 1), out);
        assert_eq!(report_path(out, 2, 3), Path::new("/tmp/r-run2.svg"));
        assert_eq!(report_path(Path::new("r"), 3, 3), Path::new("r-run3"));
    }

    #[test]
    fn the_random_file_has_its_size_and_no_long_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_random_file(&path, 3 << 20).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 3 << 20);
        assert_ne!(bytes[..1 << 20], bytes[1 << 20..2 << 20]);
    }

    #[test]
    fn the_disk_ceiling_writes_one_file_a_leecher_and_leaves_none() {
        let dir = tempfile::tempdir().unwrap();
        for (files, direct) in [(1, true), (3, true), (3, false)] {
            let rate = disk_write_ceiling(dir.path(), 12 << 20, direct, files).unwrap();
            assert!(rate.is_finite() && rate > 0.0, "{files} files: {rate}");
            let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
            assert!(left.is_empty(), "{files} files: {left:?}");
        }
        // The second file cannot be made: the first is removed all the same.
        std::fs::create_dir(dir.path().join("disk-ceiling-1.tmp")).unwrap();
        assert!(disk_write_ceiling(dir.path(), 12 << 20, true, 3).is_err());
        assert!(!dir.path().join("disk-ceiling-0.tmp").exists());
    }
}
