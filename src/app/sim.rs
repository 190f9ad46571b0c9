//! `p2pft sim`: the swarm of `bench --hosts` at any size, in one process
//! on a virtual clock. Every host runs the real protocol core
//! ([`crate::machine::Machine`]); what is simulated is the network: each
//! host's link capped both ways, a latency, and TCP reduced to what decides
//! throughput through a cap: a window of bytes in flight per connection;
//! a FIFO out of each host and one into it, each holding at most 50 ms of
//! the link and losing what finds it full, as `tbf` does; TCP's halved
//! window, resend and in-order delivery after a loss. Disk and CPU cost
//! nothing. Everything
//! random comes from `--seed`, so a run is replayed exactly.
//!
//! Owns the network model, the event loop and the figures of a simulated
//! run; never decides anything a peer decides (that is the core's), and
//! never touches a socket, a thread or the real clock inside the loop.

use crate::app::bench::{median, ShapeRecord, SwarmShape};
use crate::app::bench_hosts::{
    summarise, whole_piece_bound, write_bound, write_hosts, write_outcome, write_swarm,
    write_swarm_spread, HostFigures, SwarmFigures, WholePieceBound,
};
use crate::app::report::{self, Event as LogEvent, Line, Parsed, Picture, SwarmInfo};
use crate::machine::{
    Asking, CloseReason, Command, ConnId, Demand, Machine, MachineSetup, SpecLine,
};
use crate::protocol::bitfield::Bitfield;
use crate::protocol::config::{parse_peer_info, CommonConfig, Config};
use crate::protocol::wire::{self, Message};
use crate::runtime::peer::DEFAULT_CONNECT_TIMEOUT_SECS;
use crate::support::piecebuf::PieceBuf;
use crate::support::status::{Counters, MIB};
use clap::Args;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes of headers a TCP segment takes on an Ethernet link besides its
/// payload (Ethernet 14, IP 20, TCP with time stamps 32): what `tbf`
/// counts, and why one stream reaches 0.96 of a cap at an MTU of 1500.
const SEGMENT_OVERHEAD: u64 = 66;
/// Of an MTU, what is not TCP payload (IP and TCP headers).
const IP_TCP_HEADERS: u64 = 52;

/// Payload bytes a TCP segment carries on links of `mtu`.
fn mss(mtu: u32) -> u64 {
    u64::from(mtu) - IP_TCP_HEADERS
}

/// The share of a link's bytes that is TCP payload, at `mtu`.
fn payload_share(mtu: u32) -> f64 {
    mss(mtu) as f64 / (mss(mtu) + SEGMENT_OVERHEAD) as f64
}
/// The unit the network moves: a connection's window lets its bytes into
/// its host's uplink queue this many at a time (about 11 segments).
const CHUNK: u64 = 16 * 1024;
/// Bytes in flight a connection may have, as seconds of the link rate (the
/// `tbf` queue of the bench is 50 ms), and at least [`MIN_WINDOW`].
const WINDOW_SECS: f64 = 0.05;
const MIN_WINDOW: u64 = 64 * 1024;
/// A connection's congestion window never shrinks below this.
const MIN_CWND: u64 = 2 * CHUNK;
/// How often the reasons an uplink idles are sampled ([`IdleWhy`]).
const WHY_EVERY: Nanos = 10_000_000;
/// The first host's peer ID; the others follow in order.
const FIRST_ID: u32 = 1001;

/// The host of peer `id`.
fn host_of(id: u32) -> usize {
    (id - FIRST_ID) as usize
}

/// TCP's least retransmission timeout (Linux): how long a lost chunk with
/// nothing sent after it on its connection waits to be sent again.
const RTO_MIN: f64 = 0.2;

#[derive(Debug, Args, Clone)]
pub struct SimArgs {
    /// Hosts in the swarm, seeds included.
    #[arg(long, value_parser = clap::value_parser!(u64).range(2..=100_000))]
    pub hosts: u64,
    /// Each host's link rate, bytes a second both ways (K, M, G are KiB/s,
    /// MiB/s, GiB/s).
    #[arg(long, value_name = "RATE", value_parser = crate::protocol::config::parse_rate)]
    pub link_rate: u64,
    #[command(flatten)]
    pub shape: SwarmShape,
    /// One-way latency between two hosts, milliseconds.
    #[arg(long, default_value_t = 0.1, value_name = "MS")]
    pub latency_ms: f64,
    /// Longest queue a link keeps each way, milliseconds of its rate, as
    /// the bench's `tbf` (`latency 50ms`): a chunk that finds it full is
    /// lost, its connection's window halves, and it is sent again after a
    /// round trip (or TCP's 200 ms timeout when nothing followed it), later
    /// chunks of the connection waiting for it. 0: queues without end,
    /// nothing lost.
    #[arg(long, default_value_t = 50.0, value_name = "MS")]
    pub queue_ms: f64,
    /// The links' MTU, bytes a frame: what share of a link headers take
    /// (as `bench --hosts --mtu`).
    #[arg(long, value_name = "BYTES", default_value_t = 1500, value_parser = clap::value_parser!(u32).range(1280..=65_000))]
    pub mtu: u32,
    /// Milliseconds between one host's start and the next one's, in
    /// PeerInfo order (`bench --hosts` starts its hosts within 0.3 s of
    /// each other; `swarm` starts each peer once the one before it listens,
    /// 20 ms apart at first and more as the peers already running take the
    /// CPUs).
    #[arg(long, default_value_t = 0.0, value_name = "MS")]
    pub start_gap_ms: f64,
    /// Neighbours a host connects to: a random overlay of about this
    /// degree instead of SPEC.md's every peer to every peer (which costs
    /// hosts squared connections).
    #[arg(long, value_name = "D")]
    pub degree: Option<usize>,
    /// `COUNT@SECS`: this many leechers, picked at random, leave at SECS.
    #[arg(long, value_name = "COUNT@SECS", value_parser = parse_leave)]
    pub leave: Option<(usize, f64)>,
    /// `COUNT@RATE`: this many leechers, picked at random, have links of
    /// RATE instead of --link-rate.
    #[arg(long, value_name = "COUNT@RATE", value_parser = parse_slow)]
    pub slow: Option<(usize, u64)>,
    /// Seed of every random choice: the overlay, the peers' own RNGs, who
    /// leaves and who is slow. A run with the same options and seed is the
    /// same run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Runs, each with the next seed; summarised at the end.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub runs: u32,
    /// Skip the baseline without peer-to-peer (leechers serving nobody).
    #[arg(long)]
    pub no_baseline: bool,
    /// Print every host's row (default: with 64 hosts or fewer).
    #[arg(long)]
    pub per_host: bool,
    /// Print one JSON record a run instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Draw the swarm's simulated spec log as an SVG (as `p2pft report`).
    #[arg(long, value_name = "FILE.svg")]
    pub report: Option<PathBuf>,
}

fn parse_leave(s: &str) -> Result<(usize, f64), String> {
    let (n, t) = s.split_once('@').ok_or("expected COUNT@SECS, as 1@2.5")?;
    let n = n.parse().map_err(|e| format!("COUNT: {e}"))?;
    let t: f64 = t.parse().map_err(|e| format!("SECS: {e}"))?;
    match t.is_finite() && t >= 0.0 {
        true => Ok((n, t)),
        false => Err("SECS must be 0 or more".into()),
    }
}

fn parse_slow(s: &str) -> Result<(usize, u64), String> {
    let (n, r) = s.split_once('@').ok_or("expected COUNT@RATE, as 1@1M")?;
    let n = n.parse().map_err(|e| format!("COUNT: {e}"))?;
    let r = crate::protocol::config::parse_rate(r).map_err(|e| e.to_string())?;
    Ok((n, r))
}

/// Virtual time, nanoseconds from the start.
type Nanos = u64;

fn nanos(secs: f64) -> Nanos {
    (secs.max(0.0) * 1e9).round() as Nanos
}

fn secs(t: Nanos) -> f64 {
    t as f64 / 1e9
}

/// Bytes a link carries for `payload` bytes of TCP payload in segments
/// of `mss`.
fn on_link(payload: u64, mss: u64) -> u64 {
    payload + payload.div_ceil(mss) * SEGMENT_OVERHEAD
}

enum Payload {
    Message(Message),
    Piece(u32),
}

/// A frame queued on a connection, and how much of it is still to send.
struct Out {
    left: u64,
    payload: Payload,
}

/// One direction of a connection.
struct Dir {
    from: usize,
    to: usize,
    queue: VecDeque<Out>,
    /// Bytes taken by the sender's link and not yet delivered.
    in_flight: u64,
    /// Its congestion window: halved at each loss, a chunk more each
    /// window delivered, at most the host's window.
    cwnd: u64,
    /// Chunks numbered as sent, and the next one the receiver takes: one
    /// that overtook a lost chunk waits in `held` for it (TCP delivers in
    /// order).
    sent_seq: u64,
    deliver_seq: u64,
    held: std::collections::BTreeMap<u64, Chunk>,
}

struct Conn {
    /// Directions `a -> b` and `b -> a`; `a` dialled.
    dirs: [Dir; 2],
    open: bool,
}

struct Host {
    id: u32,
    machine: Option<Machine>,
    up: f64,
    down: f64,
    window: u64,
    /// Its link is sending a chunk.
    sending: bool,
    /// Since when its link is idle, and whether something waits to be sent
    /// on a connection whose window is full (else nothing is asked of it).
    idle_since: Option<(Nanos, bool)>,
    /// Idle time so far: with nothing to send, and with sends waiting on a
    /// full window.
    idle_nothing: Nanos,
    idle_window: Nanos,
    /// Its connections, as (conn, its sending direction).
    outgoing: Vec<(usize, usize)>,
    /// Of those, the open ones with something queued to send.
    queued: usize,
    /// Its uplink's queue (`tbf`'s, FIFO): chunks its connections' windows
    /// let go, in the order they did, and their bytes.
    fifo: VecDeque<Chunk>,
    fifo_bytes: u64,
    /// When its incoming FIFO is free.
    down_free: Nanos,
    /// Since when its downlink idles, and what its core waited on then;
    /// idle time so far by [`Demand`] (until it completes).
    down_wait: Option<(Nanos, Demand)>,
    down_idle: [Nanos; 4],
    started_at: Nanos,
    /// Timer generations: a restarted timer makes the old one's events void.
    timers: u64,
    complete_at: Option<Nanos>,
    left_at: Option<Nanos>,
    slow: bool,
    /// A leecher whose completion the figures count: neither slow nor
    /// leaving.
    counted: bool,
    piece_bytes_out: u64,
    piece_bytes_in: u64,
    link_bytes_out: u64,
    log: Vec<Line>,
}

/// Bytes of one direction of a connection on their way, and the frames
/// whose last byte they carry.
struct Chunk {
    conn: usize,
    dir: usize,
    seq: u64,
    bytes: u64,
    frames: Vec<Payload>,
}

impl Host {
    /// Its downlink's idle time up to `at` is counted against what its core
    /// waited on.
    fn end_down_wait(&mut self, at: Nanos) {
        if let Some((since, demand)) = self.down_wait.take() {
            self.down_idle[demand as usize] += at.saturating_sub(since);
        }
    }

    /// Its link's idle time up to `now` is counted.
    fn end_idle(&mut self, now: Nanos) {
        if let Some((since, blocked)) = self.idle_since.take() {
            let idle = now.saturating_sub(since);
            match blocked {
                true => self.idle_window += idle,
                false => self.idle_nothing += idle,
            }
        }
    }
}

enum Ev {
    Start(usize),
    Connect(usize),
    /// A host's link finished sending a chunk of a direction.
    Sent {
        host: usize,
    },
    Delivered(Chunk),
    /// A lost chunk is due to be sent again.
    Resend {
        host: usize,
        chunk: Chunk,
    },
    Closed {
        host: usize,
        conn: usize,
        peer: u32,
    },
    Rechoke(usize, u64),
    Optimistic(usize, u64),
    Leave(usize),
    /// Time to sample why idle uplinks idle.
    Why,
}

struct Scheduled {
    at: Nanos,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The settings of one simulated swarm.
struct Setup<'a> {
    args: &'a SimArgs,
    seed: u64,
    /// Leechers serve nobody.
    baseline: bool,
    log: bool,
}

/// One simulated swarm: hosts, connections, the event queue.
struct World {
    hosts: Vec<Host>,
    conns: Vec<Conn>,
    /// Each host's neighbours.
    adj: Vec<Vec<usize>>,
    /// The chunk each host's link is sending.
    on_wire: Vec<Option<Chunk>>,
    queue: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    now: Nanos,
    base: Instant,
    latency: Nanos,
    /// The longest a link queues, each way (0: no end).
    queue_limit: Nanos,
    /// TCP payload a segment carries.
    mss: u64,
    /// Chunks sent (again included) and lost at a full queue.
    chunks_sent: u64,
    chunks_lost: u64,
    p: Nanos,
    m: Nanos,
    pipelining: bool,
    layout: crate::protocol::layout::Layout,
    buffers: Vec<PieceBuf>,
    events: u64,
    log: bool,
    /// Counted leechers not complete yet.
    counted_left: usize,
    /// Counted leechers in all.
    counted_all: usize,
    /// Pieces whose last byte a host's connection took, as a writer hands
    /// a piece to its socket: (host, connection, receiving host), reported
    /// to its core once the event at hand is handled.
    written: Vec<(usize, usize, usize)>,
    /// Hosts neither complete nor gone: the run ends at none.
    remaining: usize,
    /// Each host's idle time (nothing asked, full window) when the last
    /// counted leecher completed: the link use the figures give.
    idle_at_wall: Option<(Nanos, Vec<(Nanos, Nanos)>)>,
    /// Samples of counted leechers' uplinks, by why they idled
    /// ([`IdleWhy`]); None in the baseline, where leechers serve nobody.
    why: Option<WhyCount>,
    /// Each piece's first copies at counted leechers ([`Spread`]).
    spread: Vec<PieceSpread>,
}

/// Counts behind [`IdleWhy`]: samples of counted leechers' uplinks.
#[derive(Default)]
struct WhyCount {
    samples: u64,
    nobody_wants: u64,
    on_its_way: u64,
    asked_elsewhere: u64,
    all_choked: u64,
    other: u64,
    choked_could_ask: u64,
}

/// One piece's way through the counted leechers: how many have it, and
/// when the first, half of them and all of them had it.
#[derive(Clone, Copy, Default)]
struct PieceSpread {
    copies: u32,
    first: Nanos,
    half: Option<Nanos>,
    all: Option<Nanos>,
}

/// Which host each host connects to: everyone, or a random overlay of
/// about `degree` (a ring keeps it connected).
fn overlay(n: usize, degree: Option<usize>, rng: &mut StdRng) -> Vec<Vec<usize>> {
    let mut adj: Vec<std::collections::BTreeSet<usize>> = vec![Default::default(); n];
    match degree {
        Some(d) if d + 1 < n => {
            let mut link = |a: usize, b: usize| {
                if a != b {
                    adj[a].insert(b);
                    adj[b].insert(a);
                }
            };
            for i in 0..n {
                link(i, (i + 1) % n);
                for _ in 0..d.saturating_sub(2).div_ceil(2) {
                    link(i, rng.random_range(0..n));
                }
            }
        }
        _ => {
            for (i, set) in adj.iter_mut().enumerate() {
                set.extend((0..n).filter(|&j| j != i));
            }
        }
    }
    adj.into_iter().map(|s| s.into_iter().collect()).collect()
}

/// An error in the options, as the peers' own config rules judge them.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SimError {
    #[error("{0}")]
    Config(#[from] crate::protocol::config::ConfigError),
    #[error("--seeds must be at least 1 and fewer than --hosts")]
    Seeds,
    #[error("--leave and --slow pick among the {0} leechers: too many asked for")]
    TooMany(usize),
}

impl World {
    fn new(setup: &Setup) -> Result<World, SimError> {
        let args = setup.args;
        let n = args.hosts as usize;
        if args.shape.seeds == 0 || args.shape.seeds >= n {
            return Err(SimError::Seeds);
        }
        let (common, _) =
            CommonConfig::parse(Path::new("Common.cfg"), &args.shape.common_cfg("sim.bin"))?;
        let layout = common.layout;
        let mut rng = StdRng::seed_from_u64(setup.seed);
        let adj = overlay(n, args.degree, &mut rng);
        let mut leechers: Vec<usize> = (args.shape.seeds..n).collect();
        leechers.shuffle(&mut rng);
        let slow = args.slow.map_or(0, |s| s.0);
        let leave = args.leave.map_or(0, |l| l.0);
        if slow + leave > leechers.len() {
            return Err(SimError::TooMany(leechers.len()));
        }
        let base = Instant::now();
        let pieces = layout.num_pieces();
        let mut hosts = Vec::with_capacity(n);
        for (i, neighbours) in adj.iter().enumerate() {
            let seed = i < args.shape.seeds;
            let mut view: Vec<usize> = neighbours.clone();
            view.push(i);
            view.sort_unstable();
            let info: String = view
                .iter()
                .map(|&j| {
                    let ip = format!("10.{}.{}.{}", 64 + (j >> 16), (j >> 8) & 255, j & 255);
                    format!(
                        "{} {ip} 6008 {}\n",
                        FIRST_ID as usize + j,
                        u8::from(j < args.shape.seeds)
                    )
                })
                .collect();
            let mut common = common.clone();
            common.serve = seed || !setup.baseline;
            let config = Config {
                dir: PathBuf::new(),
                common,
                peers: parse_peer_info(Path::new("PeerInfo.cfg"), &info)?,
                warnings: Vec::new(),
            };
            let have = match seed {
                true => Bitfield::full(pieces),
                false => Bitfield::empty(pieces),
            };
            let is_slow = leechers[..slow].contains(&i);
            let rate = match is_slow {
                true => args.slow.map_or(args.link_rate, |s| s.1),
                false => args.link_rate,
            } as f64;
            hosts.push(Host {
                id: FIRST_ID + i as u32,
                machine: Some(Machine::new(MachineSetup {
                    me: FIRST_ID + i as u32,
                    config,
                    have,
                    counters: Arc::new(Counters::default()),
                    rng_seed: setup.seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i as u64 + 1)),
                    checkpoints: false,
                    granule_pieces: None,
                    return_wait: Duration::from_secs(DEFAULT_CONNECT_TIMEOUT_SECS),
                    now: base,
                })),
                up: rate,
                down: rate,
                window: MIN_WINDOW.max((rate * WINDOW_SECS) as u64),
                sending: false,
                idle_since: Some((0, false)),
                idle_nothing: 0,
                idle_window: 0,
                outgoing: Vec::new(),
                queued: 0,
                fifo: VecDeque::new(),
                fifo_bytes: 0,
                down_free: 0,
                down_wait: None,
                down_idle: [0; 4],
                started_at: 0,
                timers: 0,
                complete_at: seed.then_some(0),
                left_at: None,
                slow: is_slow,
                counted: !seed && !is_slow && !leechers[slow..slow + leave].contains(&i),
                piece_bytes_out: 0,
                piece_bytes_in: 0,
                link_bytes_out: 0,
                log: Vec::new(),
            });
        }
        let mut world = World {
            on_wire: (0..n).map(|_| None).collect(),
            adj: Vec::new(),
            hosts,
            conns: Vec::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            now: 0,
            base,
            latency: nanos(args.latency_ms / 1e3),
            queue_limit: nanos(args.queue_ms / 1e3),
            mss: mss(args.mtu),
            chunks_sent: 0,
            chunks_lost: 0,
            p: nanos(args.shape.p),
            m: nanos(args.shape.m),
            pipelining: !args.shape.strict,
            layout,
            buffers: Vec::new(),
            events: 0,
            log: setup.log,
            counted_left: 0,
            counted_all: 0,
            written: Vec::new(),
            remaining: 0,
            idle_at_wall: None,
            why: (!setup.baseline).then(WhyCount::default),
            spread: vec![PieceSpread::default(); layout.num_pieces() as usize],
        };
        world.counted_left = world.hosts.iter().filter(|h| h.counted).count();
        world.counted_all = world.counted_left;
        world.remaining = n - args.shape.seeds;
        for i in 0..n {
            world.at(nanos(i as f64 * args.start_gap_ms / 1e3), Ev::Start(i));
        }
        for &h in &leechers[slow..slow + leave] {
            let t = args.leave.map_or(0.0, |l| l.1);
            world.at(nanos(t), Ev::Leave(h));
        }
        world.adj = adj;
        if world.why.is_some() {
            world.at(0, Ev::Why);
        }
        Ok(world)
    }

    fn at(&mut self, at: Nanos, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            ev,
        }));
    }

    fn instant(&self) -> Instant {
        self.base + Duration::from_nanos(self.now)
    }

    /// A new connection from `a` to `b`, its handshake done after a round
    /// trip and a half.
    fn dial(&mut self, a: usize, b: usize) {
        let window = |h: usize| self.hosts[h].window;
        let dir = |from, to| Dir {
            from,
            to,
            queue: VecDeque::new(),
            in_flight: 0,
            cwnd: window(from),
            sent_seq: 0,
            deliver_seq: 0,
            held: Default::default(),
        };
        self.conns.push(Conn {
            dirs: [dir(a, b), dir(b, a)],
            open: true,
        });
        let c = self.conns.len() - 1;
        self.hosts[a].outgoing.push((c, 0));
        self.hosts[b].outgoing.push((c, 1));
        self.at(self.now + 3 * self.latency, Ev::Connect(c));
    }

    fn alive(&self, h: usize) -> bool {
        self.hosts[h].machine.is_some()
    }

    /// Runs until every leecher still there has the file, or `until`.
    fn run(&mut self, until: Nanos) {
        while let Some(Reverse(s)) = self.queue.pop() {
            if s.at > until || self.remaining == 0 {
                break;
            }
            self.now = s.at;
            // Samples are the figures' own, not the swarm's.
            self.events += u64::from(!matches!(s.ev, Ev::Why));
            self.handle(s.ev);
            self.report_written();
        }
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Start(h) => {
                self.hosts[h].started_at = self.now;
                self.note_down_idle(h);
                self.restart_timers(h);
                // It dials those before it (SPEC.md: each peer connects to
                // the peers started before it).
                for j in 0..self.adj[h].len() {
                    let other = self.adj[h][j];
                    if other < h && self.alive(other) {
                        self.dial(h, other);
                    }
                }
            }
            Ev::Connect(c) => {
                let [a, b] = [self.conns[c].dirs[0].from, self.conns[c].dirs[0].to];
                if !self.conns[c].open || !self.alive(a) || !self.alive(b) {
                    return;
                }
                let now = self.instant();
                let (ida, idb) = (self.hosts[a].id, self.hosts[b].id);
                let pipelining = self.pipelining;
                let conn = c as ConnId;
                if let Some(m) = self.hosts[a].machine.as_mut() {
                    m.connected(now, idb, conn, true, pipelining, false);
                }
                if let Some(m) = self.hosts[b].machine.as_mut() {
                    m.connected(now, ida, conn, false, pipelining, false);
                }
                self.carry_out(a);
                self.carry_out(b);
            }
            Ev::Sent { host } => {
                self.hosts[host].sending = false;
                if let Some(chunk) = self.on_wire[host].take() {
                    self.arrive(host, chunk);
                }
                self.pump(host);
            }
            Ev::Resend { host, chunk } => {
                if self.conns[chunk.conn].open {
                    self.queue_up(host, chunk);
                    self.pump(host);
                }
            }
            Ev::Delivered(chunk) => {
                let (conn, dir) = (chunk.conn, chunk.dir);
                let (from, to) = {
                    let d = &mut self.conns[conn].dirs[dir];
                    d.in_flight -= chunk.bytes;
                    let window = self.hosts[d.from].window;
                    d.cwnd = (d.cwnd + CHUNK * CHUNK / d.cwnd.max(1)).min(window);
                    (d.from, d.to)
                };
                if !self.conns[conn].open {
                    return;
                }
                self.admit(conn, dir);
                // In order: a chunk that overtook a lost one waits for it.
                let d = &mut self.conns[conn].dirs[dir];
                if chunk.seq != d.deliver_seq {
                    d.held.insert(chunk.seq, chunk);
                } else {
                    let mut frames = chunk.frames;
                    d.deliver_seq += 1;
                    while let Some(next) = d.held.remove(&d.deliver_seq) {
                        frames.extend(next.frames);
                        d.deliver_seq += 1;
                    }
                    self.receive(to, from, conn, frames);
                }
                if self.hosts[to].down_free <= self.now {
                    self.note_down_idle(to);
                }
            }
            Ev::Closed { host, conn, peer } => {
                let now = self.instant();
                if let Some(m) = self.hosts[host].machine.as_mut() {
                    m.closed(now, conn as ConnId, peer, CloseReason::Eof);
                    self.carry_out(host);
                }
            }
            Ev::Rechoke(h, generation) => {
                if self.alive(h) && self.hosts[h].timers == generation {
                    let now = self.instant();
                    if let Some(m) = self.hosts[h].machine.as_mut() {
                        m.rechoke(now);
                    }
                    self.at(self.now + self.p, Ev::Rechoke(h, generation));
                    self.carry_out(h);
                }
            }
            Ev::Optimistic(h, generation) => {
                if self.alive(h) && self.hosts[h].timers == generation {
                    if let Some(m) = self.hosts[h].machine.as_mut() {
                        m.reoptimise();
                    }
                    self.at(self.now + self.m, Ev::Optimistic(h, generation));
                    self.carry_out(h);
                }
            }
            Ev::Leave(h) => self.leave(h),
            Ev::Why => {
                if self.counted_left > 0 {
                    self.sample_why();
                    self.at(self.now + WHY_EVERY, Ev::Why);
                }
            }
        }
    }

    /// A chunk that left host `from`'s link reaches the far end's downlink
    /// after the latency: queued there, or lost when the queue is full.
    fn arrive(&mut self, from: usize, chunk: Chunk) {
        let to = self.conns[chunk.conn].dirs[chunk.dir].to;
        let arrive = self.now + self.latency;
        let start = arrive.max(self.hosts[to].down_free);
        if self.queue_limit > 0 && start - arrive > self.queue_limit {
            self.lose(from, chunk);
            return;
        }
        let done = start + nanos(on_link(chunk.bytes, self.mss) as f64 / self.hosts[to].down);
        let host = &mut self.hosts[to];
        host.end_down_wait(start);
        host.down_free = done;
        self.at(done, Ev::Delivered(chunk));
    }

    /// A chunk lost at a full queue: its connection's window halves, and it
    /// is sent again once the sender can know: after a round trip through
    /// the full queue when chunks sent after it bring duplicate
    /// acknowledgements, else after TCP's timeout.
    fn lose(&mut self, from: usize, chunk: Chunk) {
        self.chunks_lost += 1;
        let d = &mut self.conns[chunk.conn].dirs[chunk.dir];
        d.cwnd = (d.cwnd / 2).max(MIN_CWND);
        let followed = chunk.seq + 1 < d.sent_seq || !d.queue.is_empty();
        let wait = match followed {
            true => 2 * self.latency + self.queue_limit,
            false => nanos(RTO_MIN),
        };
        self.at(self.now + wait, Ev::Resend { host: from, chunk });
    }

    /// Host `h`'s downlink has nothing queued: idle from now, waiting on
    /// what its core says (a leecher's, until it completes).
    fn note_down_idle(&mut self, h: usize) {
        let host = &mut self.hosts[h];
        if host.complete_at.is_some() || host.down_wait.is_some() {
            return;
        }
        if let Some(m) = &host.machine {
            host.down_wait = Some((self.now, m.demand()));
        }
    }

    fn restart_timers(&mut self, h: usize) {
        self.hosts[h].timers += 1;
        let generation = self.hosts[h].timers;
        self.at(self.now + self.p, Ev::Rechoke(h, generation));
        self.at(self.now + self.m, Ev::Optimistic(h, generation));
    }

    /// Frames of a chunk reach host `to` from `from` on `conn`.
    fn receive(&mut self, to: usize, from: usize, conn: usize, frames: Vec<Payload>) {
        let now = self.instant();
        let peer = self.hosts[from].id;
        for frame in frames {
            match frame {
                Payload::Message(message) => {
                    if let Some(m) = self.hosts[to].machine.as_mut() {
                        m.frame(now, conn as ConnId, peer, message);
                    }
                }
                Payload::Piece(index) => {
                    let len = self.layout.piece_len(index) as usize;
                    let mut data = self.buffers.pop().unwrap_or_default();
                    data.resize(len);
                    self.hosts[from].piece_bytes_out += len as u64;
                    self.hosts[to].piece_bytes_in += len as u64;
                    if let Some(m) = self.hosts[to].machine.as_mut() {
                        m.arrived(now, conn as ConnId, peer, index);
                        m.piece(now, conn as ConnId, peer, index, data, true);
                    }
                }
            }
        }
        self.carry_out(to);
    }

    /// Hands what direction `d` of connection `c` may send now (its queue,
    /// up to its window) to its host's uplink queue in chunks, as TCP hands
    /// segments to `tbf`, then starts the link if it is free.
    fn admit(&mut self, c: usize, d: usize) {
        let h = self.conns[c].dirs[d].from;
        while self.conns[c].open {
            let window = self.hosts[h].window;
            let dir = &mut self.conns[c].dirs[d];
            if dir.queue.is_empty() || dir.in_flight >= window.min(dir.cwnd) {
                break;
            }
            let mut bytes = 0;
            let mut frames = Vec::new();
            while bytes < CHUNK {
                let Some(head) = dir.queue.front_mut() else {
                    break;
                };
                let take = head.left.min(CHUNK - bytes);
                head.left -= take;
                bytes += take;
                if head.left == 0 {
                    let frame = dir.queue.pop_front().expect("a head").payload;
                    if matches!(frame, Payload::Piece(_)) {
                        self.written.push((h, c, dir.to));
                    }
                    frames.push(frame);
                }
            }
            dir.in_flight += bytes;
            let seq = dir.sent_seq;
            dir.sent_seq += 1;
            if dir.queue.is_empty() {
                self.hosts[h].queued -= 1;
            }
            let chunk = Chunk {
                conn: c,
                dir: d,
                seq,
                bytes,
                frames,
            };
            self.queue_up(h, chunk);
        }
        self.pump(h);
    }

    /// A chunk joins host `h`'s uplink queue, or is lost when the queue
    /// holds `--queue-ms` of the link already.
    fn queue_up(&mut self, h: usize, chunk: Chunk) {
        self.chunks_sent += 1;
        let host = &self.hosts[h];
        let limit = ((host.up * secs(self.queue_limit)) as u64).max(CHUNK);
        if self.queue_limit > 0 && host.fifo_bytes + chunk.bytes > limit {
            self.lose(h, chunk);
            return;
        }
        let host = &mut self.hosts[h];
        host.fifo_bytes += chunk.bytes;
        host.fifo.push_back(chunk);
    }

    /// Starts the next chunk of host `h`'s uplink queue on its link, if the
    /// link is free.
    fn pump(&mut self, h: usize) {
        if self.hosts[h].sending {
            return;
        }
        while let Some(chunk) = self.hosts[h].fifo.pop_front() {
            self.hosts[h].fifo_bytes -= chunk.bytes;
            if !self.conns[chunk.conn].open {
                continue;
            }
            let link = on_link(chunk.bytes, self.mss);
            let now = self.now;
            let host = &mut self.hosts[h];
            host.end_idle(now);
            host.link_bytes_out += link;
            host.sending = true;
            let done = self.now + nanos(link as f64 / host.up).max(1);
            self.on_wire[h] = Some(chunk);
            self.at(done, Ev::Sent { host: h });
            return;
        }
        let now = self.now;
        let host = &mut self.hosts[h];
        let blocked = host.queued > 0;
        if host.idle_since.is_some_and(|(_, b)| b != blocked) {
            host.end_idle(now);
        }
        host.idle_since.get_or_insert((now, blocked));
    }

    fn enqueue(&mut self, h: usize, conn: ConnId, out: Out) {
        let c = conn as usize;
        if !self.conns[c].open {
            return;
        }
        let d = usize::from(self.conns[c].dirs[0].from != h);
        let queue = &mut self.conns[c].dirs[d].queue;
        self.hosts[h].queued += usize::from(queue.is_empty());
        queue.push_back(out);
        self.admit(c, d);
    }

    /// Closes a connection: both queues dropped, the other end told after
    /// the latency.
    fn close(&mut self, h: usize, conn: ConnId) {
        let c = conn as usize;
        if !self.conns[c].open {
            return;
        }
        self.conns[c].open = false;
        for d in &mut self.conns[c].dirs {
            if !d.queue.is_empty() {
                d.queue.clear();
                self.hosts[d.from].queued -= 1;
            }
        }
        let dir = &self.conns[c].dirs[0];
        let other = if dir.from == h { dir.to } else { dir.from };
        let peer = self.hosts[h].id;
        self.at(
            self.now + self.latency,
            Ev::Closed {
                host: other,
                conn: c,
                peer,
            },
        );
    }

    /// Tells each core of the pieces its connections took
    /// ([`Machine::served`]), and carries out what it says to that.
    fn report_written(&mut self) {
        while !self.written.is_empty() {
            for (h, c, to) in std::mem::take(&mut self.written) {
                let peer = self.hosts[to].id;
                if let Some(m) = self.hosts[h].machine.as_mut() {
                    m.served(c as ConnId, peer);
                    self.carry_out(h);
                }
            }
        }
    }

    /// A counted leecher stored its first copy of piece `index`.
    fn spread_one(&mut self, index: u32) {
        let counted = self.counted_all as u32;
        let now = self.now;
        let Some(p) = self.spread.get_mut(index as usize) else {
            return;
        };
        p.copies += 1;
        if p.copies == 1 {
            p.first = now;
        }
        if p.copies == counted.div_ceil(2) {
            p.half = Some(now);
        }
        if p.copies == counted {
            p.all = Some(now);
        }
    }

    /// Each counted leecher whose uplink idles with nothing asked of it,
    /// by why: read from its core and from those of the neighbours that
    /// want its pieces.
    fn sample_why(&mut self) {
        let Some(mut why) = self.why.take() else {
            return;
        };
        for host in &self.hosts {
            let Some(m) = host.machine.as_ref().filter(|_| host.counted) else {
                continue;
            };
            why.samples += 1;
            if !matches!(host.idle_since, Some((_, false))) {
                continue;
            }
            let me = host.id;
            let core = |id: u32| self.hosts[host_of(id)].machine.as_ref();
            let (mut any, mut unchoked, mut on_way, mut can_ask) = (false, false, false, false);
            let mut choked_could_ask = false;
            for (id, we_unchoke) in m.interested() {
                any = true;
                let Some(theirs) = core(id) else { continue };
                if !we_unchoke {
                    choked_could_ask |= theirs.could_ask(me);
                    continue;
                }
                unchoked = true;
                match theirs.asking(me) {
                    // Its request, or our unchoke, or its `not interested`,
                    // is on the way.
                    Asking::Asked | Asking::Choked | Asking::Nothing => on_way = true,
                    Asking::CanAsk => can_ask = true,
                    Asking::Elsewhere => {}
                }
            }
            let count = match (any, unchoked, on_way, can_ask) {
                (false, ..) => &mut why.nobody_wants,
                (true, false, ..) => &mut why.all_choked,
                (true, true, true, _) => &mut why.on_its_way,
                (true, true, false, true) => &mut why.other,
                (true, true, false, false) => &mut why.asked_elsewhere,
            };
            *count += 1;
            why.choked_could_ask += u64::from(choked_could_ask);
        }
        self.why = Some(why);
    }

    fn leave(&mut self, h: usize) {
        self.hosts[h].left_at = Some(self.now);
        let Some(mut machine) = self.hosts[h].machine.take() else {
            return;
        };
        machine.end();
        if self.hosts[h].complete_at.is_none() {
            self.remaining -= 1;
        }
        for i in 0..self.hosts[h].outgoing.len() {
            let (c, _) = self.hosts[h].outgoing[i];
            self.close(h, c as ConnId);
        }
    }

    /// Takes each host's idle time so far as the figures' link use.
    fn note_idle(&mut self) {
        let now = self.now;
        let idle = self
            .hosts
            .iter_mut()
            .map(|h| {
                let open = h.idle_since;
                h.end_idle(now);
                // The interval goes on, counted from here.
                h.idle_since = open.map(|(_, blocked)| (now, blocked));
                (h.idle_nothing, h.idle_window)
            })
            .collect();
        self.idle_at_wall = Some((now, idle));
    }

    /// Carries out what host `h`'s core asked for; disk work is done at once.
    fn carry_out(&mut self, h: usize) {
        loop {
            let Some(command) = self.hosts[h].machine.as_mut().and_then(|m| m.poll()) else {
                break;
            };
            let now = self.instant();
            match command {
                Command::Send { conn, message, .. } => {
                    let left = wire::frame_len(&message) as u64;
                    let payload = Payload::Message(message);
                    self.enqueue(h, conn, Out { left, payload });
                }
                Command::Serve { conn, index, .. } => {
                    let left =
                        (wire::PIECE_HEADER_LEN as u32 + self.layout.piece_len(index)).into();
                    self.enqueue(
                        h,
                        conn,
                        Out {
                            left,
                            payload: Payload::Piece(index),
                        },
                    );
                }
                Command::Close { conn, .. } => self.close(h, conn),
                Command::Dial(peer) => {
                    let j = host_of(peer);
                    if j < self.hosts.len() && self.alive(j) {
                        self.dial(h, j);
                    }
                }
                Command::Store { index, data, .. } => {
                    self.buffers.push(data);
                    if let Some(m) = self.hosts[h].machine.as_mut() {
                        m.stored(now, index, Ok(()));
                    }
                }
                Command::WriteHeld { .. } => {}
                Command::Checkpoint { .. } => {
                    if let Some(m) = self.hosts[h].machine.as_mut() {
                        m.checkpointed(Ok(()));
                    }
                }
                Command::Finish => {
                    if let Some(m) = self.hosts[h].machine.as_mut() {
                        m.finished(Ok(()));
                    }
                }
                Command::Recycle(data) => self.buffers.push(data),
                Command::Log(line) => self.note(h, line),
            }
        }
        let now = self.instant();
        if self.hosts[h]
            .machine
            .as_mut()
            .is_some_and(|m| m.take_round_due(now))
        {
            self.restart_timers(h);
            self.carry_out(h);
        }
    }

    /// A spec log line: completion is recorded; downloads, completion and
    /// the first connection are kept for the picture.
    fn note(&mut self, h: usize, line: SpecLine) {
        let host = &mut self.hosts[h];
        let peer = host.id;
        if line == SpecLine::Complete && host.complete_at.is_none() {
            host.complete_at = Some(self.now);
            host.end_down_wait(self.now);
            self.remaining -= 1;
            if host.counted {
                self.counted_left -= 1;
                if self.counted_left == 0 {
                    self.note_idle();
                }
            }
        }
        if let SpecLine::DownloadedPiece { index, .. } = line {
            if self.hosts[h].counted {
                self.spread_one(index);
            }
        }
        let host = &mut self.hosts[h];
        if !self.log {
            return;
        }
        let event = match line {
            SpecLine::DownloadedPiece { index, from, count } => LogEvent::Downloaded {
                peer,
                piece: index,
                from,
                count,
            },
            SpecLine::Complete => LogEvent::Complete { peer },
            SpecLine::MakesConnection(other) if host.log.is_empty() => {
                LogEvent::Dials { peer, other }
            }
            SpecLine::ConnectedFrom(other) if host.log.is_empty() => {
                LogEvent::Accepts { peer, other }
            }
            _ => return,
        };
        host.log.push(Line {
            at_micros: (self.now / 1_000) as i64,
            resolution_secs: 1e-6,
            event,
        });
    }
}

/// One simulated swarm's figures.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SimSwarm {
    #[serde(flatten)]
    pub figures: SwarmFigures,
    /// Hosts that left mid-run, and slow hosts with their efficiency
    /// against their own link.
    pub left: Vec<u32>,
    pub slow: Vec<(u32, Option<f64>)>,
    /// Simulated seconds until the end, events handled, and the real
    /// seconds it took.
    pub simulated_secs: f64,
    pub events: u64,
    pub took_secs: f64,
    /// Where the leechers' and the seeds' uplinks spent the wall time.
    pub leecher_links: LinkUse,
    pub seed_links: LinkUse,
    pub leecher_downlinks: DownlinkUse,
    /// Why counted leechers' uplinks idled with nothing asked of them
    /// (none for the baseline).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leecher_uplinks_idle_why: Option<IdleWhy>,
    /// How fast pieces went round the counted leechers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spread: Option<Spread>,
    /// Chunks lost at a full queue, up or down, over all chunks sent (those
    /// sent again included): as TCP's retransmitted share.
    pub lost: f64,
}

/// Shares of a group of links' time until the last counted leecher
/// completed (hosts that left not included): sending, idle with nothing asked of them, idle with sends
/// waiting on a full window (the receiving end's link is the bottleneck).
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct LinkUse {
    pub busy: f64,
    pub idle_nothing_to_send: f64,
    pub idle_window_full: f64,
}

/// Why counted leechers' uplinks idled with nothing asked of them, as
/// shares of their time until the last of them completed (sampled every
/// [`WHY_EVERY`]; together about [`LinkUse::idle_nothing_to_send`]). Read
/// from the cores of the leecher and of the neighbours that want its
/// pieces.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct IdleWhy {
    /// No neighbour wants a piece it has.
    pub nobody_wants: f64,
    /// A neighbour it unchokes wants its pieces and its request, or word
    /// of the unchoke, is on the way (or its `not interested`).
    pub on_its_way: f64,
    /// Those it unchokes want only pieces of it that they asked of others.
    pub asked_elsewhere: f64,
    /// All that want its pieces are choked by it.
    pub all_choked: f64,
    /// One it unchokes could ask and has not.
    pub other: f64,
    /// At those moments, besides: a neighbour it chokes wants a piece of
    /// it that nobody was asked for (what one more upload slot would have
    /// used).
    pub choked_could_ask: f64,
}

/// How fast pieces went round the counted leechers: medians over pieces of
/// the seconds from the first of them to have a piece to half of them, and
/// to all of them.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Spread {
    pub to_half_secs: f64,
    pub to_all_secs: f64,
}

/// Shares of the counted leechers' downlink time from their start to their
/// completion: receiving, or idle while their core waits on a request out,
/// is choked by every neighbour holding a piece it wants, holds back from an
/// unchoking one (refused this round, or the disk queue full), or has no
/// neighbour holding a piece it wants (see [`Demand`]).
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct DownlinkUse {
    pub busy: f64,
    pub idle_asked: f64,
    pub idle_choked: f64,
    pub idle_held_back: f64,
    pub idle_none_held: f64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct SimRecord {
    pub ok: bool,
    pub hosts: usize,
    #[serde(flatten)]
    pub shape: ShapeRecord,
    pub link_rate_bytes_per_sec: u64,
    pub latency_ms: f64,
    /// The links' MTU, bytes a frame.
    pub mtu: u32,
    /// Neighbours a host has: the mean over hosts.
    pub degree: f64,
    pub seed: u64,
    pub ideal_secs: f64,
    /// The best any schedule of whole pieces allows, before headers
    /// ([`whole_piece_bound`]).
    pub bound: WholePieceBound,
    pub swarm: SimSwarm,
    pub baseline: Option<SimSwarm>,
    pub gain: Option<f64>,
}

/// What [`simulate`] gives: the swarm's figures, its picture when `log`,
/// the mean neighbours a host had, and the file's pieces.
struct Simulated {
    swarm: SimSwarm,
    picture: Option<Picture>,
    degree: f64,
    pieces: u32,
}

/// Runs one swarm.
fn simulate(setup: &Setup) -> Result<Simulated, SimError> {
    let args = setup.args;
    let started = Instant::now();
    let mut world = World::new(setup)?;
    let degree = world
        .hosts
        .iter()
        .filter_map(|h| h.machine.as_ref())
        .map(|m| m.config().peers.len() - 1)
        .sum::<usize>() as f64
        / world.hosts.len() as f64;
    let ideal = args.shape.file_size as f64 / args.link_rate as f64;
    let leechers = (args.hosts as usize - args.shape.seeds) as f64;
    // Past every leecher fed by the seeds alone, three times over.
    let until = nanos(60.0 + 3.0 * ideal * leechers / args.shape.seeds as f64);
    world.run(until);
    let took = started.elapsed().as_secs_f64();
    if world.idle_at_wall.is_none() {
        world.note_idle();
    }
    let (now, idle) = world.idle_at_wall.take().expect("noted");
    let link_use = |seeds: bool| {
        let group: Vec<(Nanos, Nanos)> = world
            .hosts
            .iter()
            .zip(&idle)
            .enumerate()
            .filter(|(i, (h, _))| (*i < args.shape.seeds) == seeds && h.left_at.is_none())
            .map(|(_, (_, idle))| *idle)
            .collect();
        let total = (group.len() as f64 * now.max(1) as f64).max(1.0);
        let nothing: u64 = group.iter().map(|i| i.0).sum();
        let window: u64 = group.iter().map(|i| i.1).sum();
        LinkUse {
            busy: 1.0 - (nothing + window) as f64 / total,
            idle_nothing_to_send: nothing as f64 / total,
            idle_window_full: window as f64 / total,
        }
    };
    let (leecher_links, seed_links) = (link_use(false), link_use(true));
    let leecher_downlinks = {
        let counted = || world.hosts.iter().filter(|h| h.counted);
        let total: Nanos = counted()
            .map(|h| {
                h.complete_at
                    .unwrap_or(world.now)
                    .saturating_sub(h.started_at)
            })
            .sum();
        let share = |d: Demand| {
            counted().map(|h| h.down_idle[d as usize]).sum::<Nanos>() as f64 / total.max(1) as f64
        };
        let idle = [
            Demand::Asked,
            Demand::Choked,
            Demand::HeldBack,
            Demand::NoneHeld,
        ]
        .map(share);
        DownlinkUse {
            busy: 1.0 - idle.iter().sum::<f64>(),
            idle_asked: idle[0],
            idle_choked: idle[1],
            idle_held_back: idle[2],
            idle_none_held: idle[3],
        }
    };
    let leecher_uplinks_idle_why = world.why.as_ref().map(|w| {
        let share = |n: u64| n as f64 / w.samples.max(1) as f64;
        IdleWhy {
            nobody_wants: share(w.nobody_wants),
            on_its_way: share(w.on_its_way),
            asked_elsewhere: share(w.asked_elsewhere),
            all_choked: share(w.all_choked),
            other: share(w.other),
            choked_could_ask: share(w.choked_could_ask),
        }
    });
    let spread = {
        let after = |at: fn(&PieceSpread) -> Option<Nanos>| -> Vec<f64> {
            world
                .spread
                .iter()
                .filter_map(|p| at(p).map(|t| secs(t - p.first)))
                .collect()
        };
        let (half, all) = (after(|p| p.half), after(|p| p.all));
        (!all.is_empty()).then(|| Spread {
            to_half_secs: median(half),
            to_all_secs: median(all),
        })
    };
    let wall_all = secs(world.now);
    let per_host: Vec<HostFigures> = world
        .hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let seed = i < args.shape.seeds;
            let done = h.complete_at.filter(|_| !seed).map(secs);
            HostFigures {
                id: h.id,
                seed,
                complete_after_secs: done,
                efficiency: done.map(|t| args.shape.file_size as f64 / h.down / t.max(1e-9)),
                bytes_out: h.piece_bytes_out,
                bytes_in: h.piece_bytes_in,
                link_sent_bytes: Some(h.link_bytes_out),
                cpu_secs: 0.0,
            }
        })
        .collect();
    let counted: Vec<bool> = world.hosts.iter().map(|h| h.counted).collect();
    let ok = world.counted_left == 0
        && world
            .hosts
            .iter()
            .all(|h| h.machine.as_ref().is_none_or(|m| m.fatal().is_none()));
    let figures = summarise(
        per_host,
        &counted,
        ok,
        wall_all,
        args.shape.file_size,
        args.link_rate,
    );
    let slow = world
        .hosts
        .iter()
        .zip(&figures.per_host)
        .filter(|(h, _)| h.slow)
        .map(|(h, f)| (h.id, f.efficiency))
        .collect();
    let left = world
        .hosts
        .iter()
        .filter(|h| h.left_at.is_some())
        .map(|h| h.id)
        .collect();
    let picture = setup.log.then(|| {
        let base = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        let logs: Vec<Parsed> = world
            .hosts
            .iter_mut()
            .map(|h| Parsed {
                lines: std::mem::take(&mut h.log)
                    .into_iter()
                    .map(|l| Line {
                        at_micros: l.at_micros + base,
                        ..l
                    })
                    .collect(),
                skipped: 0,
            })
            .collect();
        let info = SwarmInfo {
            file_name: "sim.bin".into(),
            layout: world.layout,
            peers: world
                .hosts
                .iter()
                .enumerate()
                .map(|(i, h)| (h.id, i < args.shape.seeds))
                .collect(),
        };
        Picture {
            source: "the simulated peers' spec log lines",
            ..Picture::build(&info, &logs)
        }
    });
    Ok(Simulated {
        swarm: SimSwarm {
            figures,
            left,
            slow,
            simulated_secs: wall_all,
            events: world.events,
            took_secs: took,
            leecher_links,
            seed_links,
            leecher_downlinks,
            leecher_uplinks_idle_why,
            spread,
            lost: world.chunks_lost as f64 / world.chunks_sent.max(1) as f64,
        },
        picture,
        degree,
        pieces: world.layout.num_pieces(),
    })
}

fn run_once(args: &SimArgs, seed: u64, report: Option<&Path>) -> Result<SimRecord, SimError> {
    let Simulated {
        swarm,
        picture,
        degree,
        pieces,
    } = simulate(&Setup {
        args,
        seed,
        baseline: false,
        log: report.is_some(),
    })?;
    if let (Some(out), Some(picture)) = (report, picture) {
        match std::fs::write(out, report::render_svg(&picture)) {
            Ok(()) => eprintln!("report: {} ({})", out.display(), picture.summary()),
            Err(e) => eprintln!("warning: no report: {}: {e}", out.display()),
        }
    }
    let baseline = match args.no_baseline {
        true => None,
        false => Some(
            simulate(&Setup {
                args,
                seed,
                baseline: true,
                log: false,
            })?
            .swarm,
        ),
    };
    Ok(SimRecord {
        ok: swarm.figures.ok && baseline.as_ref().is_none_or(|b| b.figures.ok),
        hosts: args.hosts as usize,
        shape: args.shape.record(args.shape.strict),
        link_rate_bytes_per_sec: args.link_rate,
        latency_ms: args.latency_ms,
        mtu: args.mtu,
        degree,
        seed,
        ideal_secs: args.shape.file_size as f64 / args.link_rate as f64,
        bound: whole_piece_bound(
            pieces,
            args.hosts as usize - args.shape.seeds,
            args.shape.seeds,
        ),
        gain: baseline
            .as_ref()
            .map(|b| b.figures.wall_secs / swarm.figures.wall_secs.max(1e-9)),
        swarm,
        baseline,
    })
}

fn write_sim_swarm(out: &mut impl std::fmt::Write, name: &str, s: &SimSwarm) -> std::fmt::Result {
    write_swarm(out, name, &s.figures)?;
    if !s.left.is_empty() {
        let shown: Vec<String> = s.left.iter().take(8).map(u32::to_string).collect();
        let more = match s.left.len() > shown.len() {
            true => format!(" and {} more", s.left.len() - shown.len()),
            false => String::new(),
        };
        writeln!(
            out,
            "{:<9} {} left mid-run (not counted): {}{more}",
            "",
            s.left.len(),
            shown.join(", ")
        )?;
    }
    if !s.slow.is_empty() {
        let done: Vec<f64> = s.slow.iter().filter_map(|(_, e)| *e).collect();
        writeln!(
            out,
            "{:<9} {} slow host{} (not counted), efficiency against their own link: median {:.2}, least {:.2}{}",
            "",
            s.slow.len(),
            if s.slow.len() == 1 { "" } else { "s" },
            median(done.clone()),
            done.iter().copied().fold(f64::INFINITY, f64::min),
            match s.slow.len() - done.len() {
                0 => String::new(),
                n => format!(", {n} not complete"),
            }
        )?;
    }
    let shares = |u: &LinkUse| {
        format!(
            "busy {:.2}, idle with nothing asked {:.2}, idle on a full window {:.2}",
            u.busy, u.idle_nothing_to_send, u.idle_window_full
        )
    };
    writeln!(out, "{:<9} seed uplinks: {}", "", shares(&s.seed_links))?;
    writeln!(
        out,
        "{:<9} leecher uplinks: {}",
        "",
        shares(&s.leecher_links)
    )?;
    if let Some(w) = &s.leecher_uplinks_idle_why {
        writeln!(
            out,
            "{:<9} leecher uplinks idle with nothing asked, why: nobody wants their pieces {:.2}, a request or unchoke on its way {:.2}, what is wanted of them asked of others {:.2}, all who want them choked {:.2}, other {:.2}; a choked neighbour could have asked {:.2}",
            "", w.nobody_wants, w.on_its_way, w.asked_elsewhere, w.all_choked, w.other, w.choked_could_ask
        )?;
    }
    let d = &s.leecher_downlinks;
    writeln!(
        out,
        "{:<9} leecher downlinks: busy {:.2}; idle waiting on a request {:.2}, choked by all that hold a piece it wants {:.2}, holding back {:.2}, no neighbour holds a piece it wants {:.2}",
        "", d.busy, d.idle_asked, d.idle_choked, d.idle_held_back, d.idle_none_held
    )?;
    if let Some(sp) = &s.spread {
        writeln!(
            out,
            "{:<9} pieces spread from the first leecher with a copy to half the leechers in {:.2} s, to all in {:.2} s (medians over pieces)",
            "", sp.to_half_secs, sp.to_all_secs
        )?;
    }
    writeln!(
        out,
        "{:<9} lost at a full queue and sent again: {:.1}% of chunks",
        "",
        100.0 * s.lost
    )?;
    writeln!(
        out,
        "{:<9} simulated {:.2} s of swarm time in {:.2} s ({} events)",
        "", s.simulated_secs, s.took_secs, s.events
    )
}

fn write_table(out: &mut impl std::fmt::Write, r: &SimRecord, per_host: bool) -> std::fmt::Result {
    writeln!(
        out,
        "simulated hosts: {} ({}), links capped at {:.2} MiB/s both ways, MTU {}, latency {} ms, {:.1} neighbours a host; {}, {}, seed {}",
        r.hosts,
        r.shape.seeds_text(),
        r.link_rate_bytes_per_sec as f64 / MIB,
        r.mtu,
        r.latency_ms,
        r.degree,
        r.shape,
        r.shape.mode_text(),
        r.seed,
    )?;
    writeln!(
        out,
        "one stream through a capped link: {:.2} of the link rate (frame headers); one link needs {:.2} s for the file",
        payload_share(r.mtu),
        r.ideal_secs
    )?;
    if per_host {
        write_hosts(
            out,
            &r.swarm.figures,
            r.baseline.as_ref().map(|b| &b.figures),
        )?;
    }
    write_sim_swarm(out, "swarm", &r.swarm)?;
    write_bound(out, r.bound, payload_share(r.mtu))?;
    if let Some(b) = &r.baseline {
        write_sim_swarm(out, "baseline", b)?;
    }
    write_outcome(
        out,
        r.gain,
        match r.ok {
            true => "OK (every leecher counted completed)",
            false => "FAILED (a counted leecher did not complete, or a peer failed)",
        },
    )
}

/// `p2pft sim` (exit codes: 0 every counted leecher completed, 1 not, 2 bad
/// options).
pub(crate) fn run_cli(args: &SimArgs) -> i32 {
    crate::support::process::init_diagnostics("sim".into());
    // A thousand peers' warnings (a neighbour that left) would drown the figures.
    log::set_max_level(log::LevelFilter::Error);
    let per_host = args.per_host || args.hosts <= 64;
    crate::app::bench::each_run(
        args.runs,
        args.json,
        crate::app::exit::BAD_INPUT,
        |run| {
            let report = args
                .report
                .as_ref()
                .map(|out| crate::app::bench::report_path(out, run, args.runs));
            run_once(args, args.seed + u64::from(run - 1), report.as_deref())
        },
        |r| r.ok,
        |out, r| write_table(out, r, per_host),
        write_summary,
    )
}

/// Median, least and most of each figure over several runs.
fn write_summary(out: &mut impl std::fmt::Write, records: &[SimRecord]) -> std::fmt::Result {
    let ok = records.iter().filter(|r| r.ok).count();
    crate::app::bench::write_summary_head(out, records.len(), ok)?;
    write_swarm_spread(out, records.iter().map(|r| &r.swarm.figures))?;
    let gains = records.iter().filter_map(|r| r.gain).collect();
    crate::app::bench::write_spread(out, "gain over the baseline", gains, "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    fn args(line: &str) -> SimArgs {
        Cli::parse_from(std::iter::once("sim").chain(line.split_whitespace())).sim
    }

    fn run(line: &str) -> SimRecord {
        let a = args(line);
        run_once(&a, a.seed, None).expect("a valid swarm")
    }

    #[test]
    fn one_leecher_gets_the_file_at_the_link_rate() {
        // 4 MiB at 4 MiB/s: 1 s of link, less what frame headers take.
        let r = run("--hosts 2 --link-rate 4M --file-size 4M --no-baseline");
        let s = &r.swarm.figures;
        assert!(s.ok);
        let e = s.efficiency_last;
        let headers = payload_share(1500);
        assert!(e <= headers && e > 0.9 * headers, "efficiency {e}");
        assert_eq!(s.copies_from_seeds, 1.0);
        // Its downlink is busy but for the start, the round trips and the
        // headers' share.
        let d = r.swarm.leecher_downlinks;
        assert!(d.busy > 0.9, "{d:?}");
        let idle = d.idle_asked + d.idle_choked + d.idle_held_back + d.idle_none_held;
        assert!((d.busy + idle - 1.0).abs() < 1e-9, "{d:?}");
    }

    #[test]
    fn jumbo_frames_leave_more_of_the_link_to_the_file() {
        let at = |mtu: u32| {
            let r = run(&format!(
                "--hosts 2 --link-rate 4M --file-size 4M --no-baseline --mtu {mtu}"
            ));
            assert_eq!(r.mtu, mtu);
            r.swarm.figures.efficiency_last
        };
        let (ethernet, jumbo) = (at(1500), at(9000));
        // Headers take 4.4% of a link at an MTU of 1500 and 0.7% at 9000.
        assert!(jumbo <= payload_share(9000), "{jumbo}");
        assert!(jumbo - ethernet > 0.025, "{ethernet} -> {jumbo}");
    }

    #[test]
    fn downlink_time_is_busy_as_efficiency_says_and_idle_time_has_its_reasons() {
        let r = run("--hosts 12 --link-rate 4M --file-size 6M --no-baseline");
        let s = &r.swarm.figures;
        let headers = payload_share(1500);
        let leechers: Vec<&HostFigures> = s.per_host.iter().filter(|h| !h.seed).collect();
        // Busy time is the pieces' bytes (and headers) over the link: the
        // leechers' mean efficiency over what headers leave, give or take
        // the duplicates and the control frames.
        let mean =
            leechers.iter().filter_map(|h| h.efficiency).sum::<f64>() / leechers.len() as f64;
        let d = r.swarm.leecher_downlinks;
        assert!(
            (d.busy - mean / headers).abs() < 0.08,
            "{d:?} against {mean}"
        );
        // A swarm that starts from one seed waits on choking, then on requests.
        assert!(d.idle_asked > 0.0 && d.idle_choked > 0.0, "{d:?}");
    }

    #[test]
    fn idle_uplinks_are_accounted_for_and_strict_slots_leave_some_choked() {
        let why = |line: &str| {
            let r = run(line);
            let w = r.swarm.leecher_uplinks_idle_why.expect("sampled");
            let sum = w.nobody_wants + w.on_its_way + w.asked_elsewhere + w.all_choked + w.other;
            // Sampled every 10 ms against time measured exactly.
            let idle = r.swarm.leecher_links.idle_nothing_to_send;
            assert!((sum - idle).abs() < 0.03, "{w:?} against {idle}");
            assert!(w.choked_could_ask <= sum + 1e-9, "{w:?}");
            w
        };
        let shape = "--hosts 16 --link-rate 4M --file-size 8M --no-baseline";
        // SPEC.md's slots change only at the rounds: interested neighbours
        // wait choked while the uplink idles. The early unchoke gives them
        // a slot at once.
        let strict = why(&format!("{shape} --strict"));
        assert!(strict.all_choked > 0.05, "{strict:?}");
        let p2pft = why(shape);
        assert!(p2pft.all_choked < 0.01, "{p2pft:?}");
        // At first no leecher has a piece anyone wants.
        assert!(p2pft.nobody_wants > 0.0, "{p2pft:?}");
        assert!(run(shape.trim_end_matches(" --no-baseline"))
            .baseline
            .expect("run")
            .leecher_uplinks_idle_why
            .is_none());
    }

    #[test]
    fn pieces_spread_to_half_the_leechers_before_all() {
        let one = run("--hosts 2 --link-rate 4M --file-size 4M --no-baseline");
        let s = one.swarm.spread.expect("pieces spread");
        assert_eq!((s.to_half_secs, s.to_all_secs), (0.0, 0.0));
        let many = run("--hosts 16 --link-rate 4M --file-size 8M --no-baseline");
        let s = many.swarm.spread.expect("pieces spread");
        // A piece needs at least a link's time for each hop after the first.
        let hop = 256.0 * 1024.0 / (4.0 * 1024.0 * 1024.0);
        assert!(s.to_half_secs >= hop, "{s:?}");
        assert!(s.to_all_secs > s.to_half_secs, "{s:?}");
        assert!(s.to_all_secs < many.swarm.simulated_secs, "{s:?}");
    }

    #[test]
    fn the_baseline_is_the_seed_feeding_every_leecher_alone() {
        let r = run("--hosts 4 --link-rate 8M --file-size 4M");
        let b = r.baseline.as_ref().expect("a baseline");
        assert!(r.ok);
        assert_eq!(b.figures.copies_from_seeds, 3.0);
        // Three copies through one link: at least three links' time.
        assert!(b.figures.wall_secs >= 3.0 * r.ideal_secs);
        assert!(r.gain.expect("a gain") > 1.0);
    }

    #[test]
    fn a_full_downlink_queue_loses_chunks_and_every_piece_still_arrives_once_asked() {
        // Several neighbours at once fill a link's 50 ms queue: chunks
        // are lost and sent again, and the swarm still completes with
        // every leecher's file in (a piece or two twice, as without loss).
        let line = "--hosts 16 --link-rate 4M --file-size 4M --no-baseline";
        let lossy = run(line);
        assert!(lossy.ok);
        assert!(lossy.swarm.lost > 0.0, "{}", lossy.swarm.lost);
        let (file, piece) = (4u64 << 20, 256u64 << 10);
        for h in lossy.swarm.figures.per_host.iter().filter(|h| !h.seed) {
            assert!(
                (file..=file + 2 * piece).contains(&h.bytes_in),
                "{}: {}",
                h.id,
                h.bytes_in
            );
        }
        // A queue without end loses nothing.
        let unbounded = run(&format!("{line} --queue-ms 0"));
        assert!(unbounded.ok);
        assert_eq!(unbounded.swarm.lost, 0.0);
    }

    #[test]
    fn a_seeded_run_is_replayed_exactly() {
        let line = "--hosts 12 --link-rate 4M --file-size 6M --no-baseline --seed 5";
        let (a, b) = (run(line), run(line));
        let times = |r: &SimRecord| -> Vec<Option<f64>> {
            r.swarm
                .figures
                .per_host
                .iter()
                .map(|h| h.complete_after_secs)
                .collect()
        };
        assert_eq!(times(&a), times(&b));
        assert_eq!(a.swarm.events, b.swarm.events);
    }

    #[test]
    fn an_overlay_has_about_the_degree_asked_and_is_connected() {
        let mut rng = StdRng::seed_from_u64(1);
        let adj = overlay(500, Some(16), &mut rng);
        let mean = adj.iter().map(Vec::len).sum::<usize>() as f64 / 500.0;
        assert!((12.0..=20.0).contains(&mean), "mean degree {mean}");
        let mut seen = vec![false; 500];
        let mut stack = vec![0];
        while let Some(i) = stack.pop() {
            if !std::mem::replace(&mut seen[i], true) {
                stack.extend(adj[i].iter().copied());
            }
        }
        assert!(seen.iter().all(|&s| s));
        let full = overlay(5, None, &mut rng);
        assert!(full.iter().all(|n| n.len() == 4));
    }

    #[test]
    fn a_host_that_leaves_is_not_waited_for_and_the_rest_finish() {
        let r = run("--hosts 8 --link-rate 4M --file-size 8M --no-baseline --leave 2@0.5");
        assert_eq!(r.swarm.left.len(), 2);
        assert!(r.ok, "every host that stayed completed");
        let done = r
            .swarm
            .figures
            .per_host
            .iter()
            .filter(|h| h.complete_after_secs.is_some())
            .count();
        assert_eq!(done, 5, "five leechers stayed");
    }

    #[test]
    fn a_slow_host_is_reported_against_its_own_link() {
        let r = run("--hosts 6 --link-rate 8M --file-size 4M --no-baseline --slow 1@1M");
        assert!(r.ok);
        let [(_, e)] = r.swarm.slow.as_slice() else {
            panic!("one slow host: {:?}", r.swarm.slow);
        };
        // It cannot beat its own link.
        let e = e.expect("the slow host completed");
        assert!(e > 0.3 && e <= 1.0, "slow host efficiency {e}");
    }

    #[test]
    fn the_strict_swarm_completes_too() {
        let r = run("--hosts 6 --link-rate 4M --file-size 4M --no-baseline --strict");
        assert!(r.ok);
    }

    #[test]
    fn counts_and_rates_are_parsed() {
        assert_eq!(parse_leave("3@2.5"), Ok((3, 2.5)));
        assert!(parse_leave("3").is_err());
        assert_eq!(parse_slow("1@1M"), Ok((1, 1 << 20)));
        assert!(parse_slow("x@1M").is_err());
    }
}
