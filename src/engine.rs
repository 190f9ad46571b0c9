//! The engine: the one owner of a peer's protocol state.
//!
//! Concurrency contract
//! - Threads: one engine thread (this module); per neighbour one reader and
//!   one writer ([`crate::net`]); one listener plus short-lived handshake and
//!   dial threads; [`Workers`] for blocking disk work (piece writes, which
//!   wait for the device with direct I/O, progress checkpoints or flushes,
//!   the final flush). Readers verify (SHA-1) the pieces they receive.
//! - Channels: every producer sends [`Event`]s to the engine over one bounded
//!   channel ([`EVENT_QUEUE`]). The engine sends to each writer over a queue
//!   that never blocks it (unbounded, with a limit it checks itself), so a
//!   slow neighbour cannot stall it; a queue that reaches its limit (the
//!   neighbour stopped reading) ends that connection.
//!   The choke timers are crossbeam `tick` channels in the same `select!`;
//!   in strict mode they restart when the first round comes early (see
//!   `check_neighbourhood_whole`).
//! - State: bitfields, interest, choke sets, outstanding requests and piece
//!   states live here and nowhere else; other threads see only the read-only
//!   store and the status [`Counters`].
//! - Shutdown: when every peer of PeerInfo.cfg has the file, the engine drops
//!   the writer queues (writers flush, then half-close), waits for them for a
//!   bounded time, closes the sockets (readers end) and returns. On a signal
//!   ([`Event::Interrupt`]) it first lets in-flight piece writes land (bounded),
//!   then writes a last progress checkpoint.
//! - Integrity: a piece is counted, announced and logged only after it matched
//!   its hash (when there is metadata) and was written; the file is declared
//!   complete only after it was flushed to disk and has its full length. Every
//!   byte of it was hashed once, in memory, before it was written, so with
//!   metadata made by `p2pft meta` its whole-file SHA-1 matches by
//!   construction; `p2pft verify` re-hashes it on demand.
//!
//! - Memory: requests outstanding are at most the pipeline depth per
//!   neighbour (1 with a plain peer; past the configured depth, on a long
//!   link, at most [`crate::pacing::MAX_DEPTH_BYTES`] of pieces a neighbour
//!   and [`MAX_IN_FLIGHT_BYTES`] for all), and pieces received but not yet on disk
//!   at most [`max_storing`]; requests stop while that many wait. Pieces the
//!   store holds to write them with their granule ([`Event::Held`]) no
//!   longer count: the store bounds them itself. Piece buffers
//!   come from and return to one [`BufferPool`], which keeps the last
//!   [`max_kept`] written pieces to serve them and has a budget beyond which
//!   it reuses those rather than grow.
//!
//! Never blocks on socket I/O, disk I/O or hashing.

use crate::bitfield::Bitfield;
use crate::choke::{self, NeighbourStats};
use crate::config::{Config, PeerEntry};
use crate::events::{CloseReason, ConnId, Event};
use crate::meta::Verifier;
use crate::net::{self, BufferPool, Out};
use crate::pacing::Pacing;
use crate::picker;
use crate::piecebuf::PieceBuf;
use crate::progress::Checkpointer;
use crate::rate_limit::RateLimit;
use crate::speclog::SpecLog;
use crate::status::Counters;
use crate::store::Store;
use crate::wire::{Kind, Limits, Message, WireError};
use crate::workers::Workers;
use crossbeam_channel::{select, tick, unbounded, Receiver, Sender};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::SeedableRng;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Capacity of the engine's event queue.
pub const EVENT_QUEUE: usize = 1024;
/// How long writers get to flush their last messages at shutdown.
const FLUSH_GRACE: Duration = Duration::from_secs(5);
/// How many times in a row a lost connection to a peer we dial is dialled
/// again (a connection that succeeds starts the count afresh).
const MAX_REDIALS: u32 = 5;
/// Pieces failing verification from one neighbour before it is banned.
pub const MAX_BAD_PIECES: u32 = 3;
/// Pieces a connection may send that were never requested on it (or were
/// answered already) before it is closed: each is dropped unseen, but each
/// also cost a SHA-1 pass and a piece's worth of reading.
pub const MAX_UNREQUESTED_PIECES: u32 = 4;
/// Frames other than pieces a connection may send, besides four a piece
/// (a have, a request, and interest both ways: more than an honest peer
/// sends over a whole run) and [`FRAME_RATE`] a second: past that it is
/// flooding, and its connection is closed.
const FRAME_ALLOWANCE: u64 = 10_000;
/// Frames other than pieces a second that any connection may send.
const FRAME_RATE: u64 = 2_000;
/// How long a seed of PeerInfo.cfg must have been away before a peer that
/// has the file ends without hearing from it (see `known_complete`).
const SEED_GONE: Duration = Duration::from_secs(5);
/// How long a peer that has the file waits, before it ends, for a peer
/// whose connection ended before it could know the swarm was done: one
/// killed and restarted comes back with its file but without knowing who
/// has theirs, and only a connection tells it.
const RETURN_GRACE: Duration = Duration::from_secs(20);
/// How much sooner than us another peer may learn that the swarm is done
/// (the last `have` reaches it first) and leave: its departure is then the
/// usual end, not one to wait [`RETURN_GRACE`] for.
const USUAL_END_SKEW: Duration = Duration::from_millis(500);
/// How often a leecher without metadata records its progress durably.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);
/// How often a leecher with metadata flushes its file: it resumes by
/// re-hashing, so it keeps no record and a flush only keeps the device busy
/// during the download rather than all at its end. Through the page cache
/// (16 KiB pieces) a flush every 250 ms cost: 4 interleaved swarms each, wall
/// median 2.93 -> 2.79 s and CPU 4.86 -> 4.22 s with one a second; no change
/// with direct I/O.
const FLUSH_INTERVAL: Duration = Duration::from_millis(1000);
/// How long in-flight piece writes get to land after a signal.
const INTERRUPT_GRACE: Duration = Duration::from_secs(1);
/// How long a leecher goes without a new piece before it says why it waits.
const STALL_NOTICE: Duration = Duration::from_secs(10);
/// Announced pieces remembered per p2pft neighbour, to ask for the newest.
const RECENT_HAVES: usize = 16;
/// Bytes of received, verified pieces waiting to be written, at most. 16
/// pieces of 256 KiB keep the device busy (about 60 writes in flight for four
/// leechers); 8 MiB was no faster and its memory is better spent on
/// `KEPT_BYTES`.
const MAX_STORING_BYTES: u64 = 4 * 1024 * 1024;
/// Bytes of written pieces kept in memory to serve them (see
/// [`crate::piecebuf::BufferPool`]). A piece is asked for some 30-60 writes
/// after it was announced (bench, 1+4 peers, 256 KiB pieces): with 4 MiB
/// kept, 10-40% of the pieces leechers served came from memory, with 16 MiB
/// 70-93%, each hit one 256 KiB read fewer on a device that sets the pace.
/// 14 MiB, with the pool's budget (see `peer`), keeps a leecher's peak RSS
/// near 29 MB for any file size, under the 32 MB the issue allows; 16 MiB
/// without a budget reached 31.2 at 2 GiB.
const KEPT_BYTES: u64 = 14 * 1024 * 1024;

/// Written pieces of `piece_size` kept in memory to be served, when the
/// store may also hold up to `held_bytes` of pieces not yet written (see
/// [`crate::coalesce`]): both together within `KEPT_BYTES`. (Bench, 16 KiB
/// pieces, 3 runs each: with 4 MiB kept, wall 1.98 s and peak RSS 25 MB;
/// 8 MiB, 1.87-2.21 s and 28-30 MB; 14 MiB, 1.95-1.99 s and 36-38 MB; 2 MiB,
/// 2.1-2.2 s. Leechers read back 3,700 pieces to serve with 14 MiB, 12,000
/// with 4, 25,000 with 2.)
pub fn max_kept(piece_size: u32, held_bytes: u64) -> usize {
    (KEPT_BYTES.saturating_sub(held_bytes) / u64::from(piece_size)) as usize
}

/// Bytes of pieces asked for from all neighbours together past which none is
/// asked for more than the configured depth: what may arrive at once beyond
/// [`max_storing`] when links are long and the disk slow.
pub const MAX_IN_FLIGHT_BYTES: u64 = 8 << 20;

/// Pieces of `piece_size` that may wait to be written at once (at least 2).
pub fn max_storing(piece_size: u32) -> usize {
    (MAX_STORING_BYTES / u64::from(piece_size)).max(2) as usize
}

/// What a neighbour did wrong with well-formed frames (malformed ones are
/// [`WireError`]s): each is counted in [`Counters::violations`] and said on
/// stderr.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// Dropped unseen; [`MAX_UNREQUESTED_PIECES`] close the connection.
    #[error("sent piece {index}, which was not requested on this connection or was answered already ({count} of {MAX_UNREQUESTED_PIECES} allowed); dropped")]
    UnrequestedPiece { index: u32, count: u32 },
    /// Closes the connection: more frames other than pieces than 10,000, 4 a
    /// piece and 2,000 a second of the connection allow.
    #[error("sent {frames} frames other than pieces in {secs} s, a flood; closing the connection")]
    Flood { frames: u64, secs: u64 },
}

/// The peer's rate caps (`P2pftMaxUploadRate`, `P2pftMaxDownloadRate`).
struct Caps {
    upload: Option<Arc<RateLimit>>,
    download: Option<Arc<RateLimit>>,
}

/// A piece on its way to disk.
struct Storing {
    from: u32,
    held: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("disk error: {0}")]
    Disk(io::Error),
    #[error("{0}")]
    Unreachable(String),
    #[error("cannot start the threads for neighbour {0}: {1} (more peers on this machine than its thread limit allows?)")]
    Threads(u32, io::Error),
    #[error("the finished file could not be made complete: {0}")]
    Integrity(String),
    /// The signal, and for a leecher what it recorded.
    #[error("stopped by signal {0}{1}")]
    Interrupted(i32, String),
}

struct Neighbour {
    conn: ConnId,
    queue: Sender<Out>,
    stream: TcpStream,
    has: Bitfield,
    /// `has.count()`, kept as haves arrive.
    has_count: u32,
    /// We have seen a first message (a bitfield must come first).
    heard: bool,
    they_are_interested: bool,
    we_are_interested: bool,
    they_choke_us: bool,
    /// Requests may be pipelined to it (negotiated; false for a plain peer).
    pipelining: bool,
    /// Pieces we asked this neighbour for and have not received yet.
    outstanding: Vec<u32>,
    /// Every piece requested on this connection and not answered yet, those
    /// given up after a choke included, with how many times (asked again
    /// after a choke freed it, each request may be answered): a `piece` is
    /// taken only as an answer.
    asked: HashMap<u32, u32>,
    /// Pieces it sent that were not answers (see [`MAX_UNREQUESTED_PIECES`]).
    unrequested: u32,
    /// It said goodbye: it ends as usual, knowing every peer has the file.
    said_goodbye: bool,
    /// Frames other than pieces it sent, and when it connected (see
    /// [`FRAME_ALLOWANCE`]).
    frames: u64,
    since: Instant,
    /// How many requests its link needs outstanding.
    pacing: Pacing,
    /// Pieces whose bytes are in ([`Event::Arrived`]) and whose
    /// [`Event::Piece`] has not come yet: released with the neighbour if it
    /// is dropped in between, as that event will then be ignored.
    arrived: Vec<u32>,
    /// Piece bytes received since the last preferred-neighbour selection.
    bytes_this_interval: u64,
    /// It has told us whether it is interested (either message).
    declared: bool,
    /// Pieces this neighbour sent that failed verification: asked elsewhere first.
    sent_bad: Vec<u32>,
    /// The pieces it announced last (`have`), newest at the back; kept only
    /// for a p2pft neighbour, which still holds them in memory (see
    /// [`picker::pick_newest`]). Empty for a plain one.
    recent: VecDeque<u32>,
}

/// What a peer starts from.
pub struct EngineSetup {
    pub me: u32,
    pub config: Config,
    pub store: Arc<Store>,
    /// Pieces already on disk and good.
    pub have: Bitfield,
    pub log: SpecLog,
    pub counters: Arc<Counters>,
    pub rng_seed: u64,
    /// Blocking disk work: piece writes, checkpoints, the final flush.
    pub disk: Workers,
    /// How long a dialler keeps trying one peer.
    pub connect_timeout: Duration,
    pub events: (Sender<Event>, Receiver<Event>),
    pub stop: Arc<AtomicBool>,
    /// Piece hashes, when there is metadata.
    pub verifier: Option<Arc<Verifier>>,
    /// Records progress durably; `None` for a seed.
    pub checkpointer: Option<Arc<Checkpointer>>,
    pub buffers: Arc<BufferPool>,
    /// How this peer greets the peers it dials again.
    pub greeting: net::Greeting,
}

/// The choking rounds: waiting for the first (the first tick, or in strict
/// mode a whole neighbourhood before it), due at once, or running on the
/// timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rounds {
    AwaitingFirst,
    Due,
    Running,
}

/// A value watched for a notice: how long it has stayed the same, said
/// once when that reaches a threshold, and again only after it changes.
struct Unchanged<K> {
    value: K,
    since: Instant,
    told: bool,
}

impl<K: PartialEq> Unchanged<K> {
    fn new(value: K) -> Unchanged<K> {
        Unchanged {
            value,
            since: Instant::now(),
            told: false,
        }
    }

    /// How long `value` has stayed as it is, once, when that reaches
    /// `after`; `None` otherwise. A new value starts the clock again.
    fn due(&mut self, value: K, after: Duration) -> Option<Duration> {
        if value != self.value {
            *self = Unchanged::new(value);
            return None;
        }
        let unchanged = self.since.elapsed();
        if self.told || unchanged < after {
            return None;
        }
        self.told = true;
        Some(unchanged)
    }
}

pub struct Engine {
    me: u32,
    config: Config,
    limits: Limits,
    store: Arc<Store>,
    have: Bitfield,
    /// `have.count()`, kept so that a stored piece costs no scan of the bitfield.
    have_count: u32,
    /// `have_count`, and since when it is what it is ([`Engine::note_stall`]).
    progress: Unchanged<u32>,
    /// Peers without the file and not connected, and since when they are
    /// those ([`Engine::note_waiting`]).
    absent: Unchanged<Vec<u32>>,
    /// Pieces we lack that are neither requested nor being stored.
    wanted: Bitfield,
    neighbours: BTreeMap<u32, Neighbour>,
    /// Peers known to have the complete file (kept after they disconnect).
    complete_peers: BTreeSet<u32>,
    /// Since when each peer is not connected (see [`Engine::known_complete`]).
    unconnected_since: HashMap<u32, Instant>,
    /// Peers whose connection ended other than as the usual end (see
    /// [`RETURN_GRACE`]), and whether it may have been the usual end all
    /// the same: a plain peer, which says no goodbye.
    left_early: BTreeMap<u32, bool>,
    /// When we first knew that every peer has the file.
    everyone_known_at: Option<Instant>,
    unchoked: BTreeSet<u32>,
    preferred: Vec<u32>,
    optimistic: Option<u32>,
    logged_preferred: Vec<u32>,
    rng: StdRng,
    log: SpecLog,
    counters: Arc<Counters>,
    disk: Workers,
    connect_timeout: Duration,
    events_tx: Sender<Event>,
    events_rx: Receiver<Event>,
    writers_done_tx: Sender<u32>,
    writers_done_rx: Receiver<u32>,
    writers_running: usize,
    next_conn: ConnId,
    redials: BTreeMap<u32, u32>,
    stop: Arc<AtomicBool>,
    fatal: Option<EngineError>,
    /// The last piece landed: the final sync and check are under way or done.
    finishing: bool,
    verifier: Option<Arc<Verifier>>,
    checkpointer: Option<Arc<Checkpointer>>,
    /// Pieces were stored since the last checkpoint was started.
    unrecorded: bool,
    checkpoint_generation: u64,
    bad_pieces: BTreeMap<u32, u32>,
    banned: BTreeSet<u32>,
    buffers: Arc<BufferPool>,
    /// Pieces handed to the disk threads and neither stored nor held yet.
    storing_count: usize,
    /// Pieces received, verified and handed to the disk threads, not yet on
    /// disk: who sent each, and whether the store holds it.
    storing: HashMap<u32, Storing>,
    max_storing: usize,
    /// Extensions (pipelining, early unchoke) are on: not `P2pftStrict`.
    extensions: bool,
    /// How redials greet (and, with a secret, authenticate).
    greeting: net::Greeting,
    /// Rate caps shared by every connection's writer and reader.
    caps: Caps,
    /// Where the choking rounds are (see `check_neighbourhood_whole`).
    rounds: Rounds,
    /// Granules begun, when the store gathers small pieces into them.
    filling: Option<picker::Filling>,
}

impl Engine {
    pub fn new(setup: EngineSetup) -> Engine {
        let layout = setup.config.common.layout;
        let cap = |rate: Option<u64>| rate.map(|r| Arc::new(RateLimit::new(r)));
        let started = Instant::now();
        let unconnected_since = setup.config.peers.iter().map(|p| (p.id, started)).collect();
        let n = layout.num_pieces();
        let mut wanted = Bitfield::full(n);
        for i in setup.have.iter_ones() {
            wanted.set(i, false);
        }
        let (writers_done_tx, writers_done_rx) = crossbeam_channel::unbounded();
        setup.counters.pieces.store(setup.have.count(), Relaxed);
        let mut complete_peers = BTreeSet::new();
        if setup.have.is_complete() {
            complete_peers.insert(setup.me);
        }
        Engine {
            me: setup.me,
            limits: Limits::new(layout),
            extensions: !setup.config.common.strict,
            greeting: setup.greeting,
            caps: Caps {
                upload: cap(setup.config.common.max_upload_rate),
                download: cap(setup.config.common.max_download_rate),
            },
            rounds: Rounds::AwaitingFirst,
            config: setup.config,
            filling: setup.store.granule_pieces().map(picker::Filling::new),
            store: setup.store,
            finishing: setup.have.is_complete(),
            have_count: setup.have.count(),
            progress: Unchanged::new(setup.have.count()),
            absent: Unchanged::new(Vec::new()),
            have: setup.have,
            wanted,
            neighbours: BTreeMap::new(),
            complete_peers,
            unconnected_since,
            left_early: BTreeMap::new(),
            everyone_known_at: None,
            unchoked: BTreeSet::new(),
            preferred: Vec::new(),
            optimistic: None,
            logged_preferred: Vec::new(),
            rng: StdRng::seed_from_u64(setup.rng_seed),
            log: setup.log,
            counters: setup.counters,
            disk: setup.disk,
            connect_timeout: setup.connect_timeout,
            events_tx: setup.events.0,
            events_rx: setup.events.1,
            writers_done_tx,
            writers_done_rx,
            writers_running: 0,
            next_conn: 0,
            redials: BTreeMap::new(),
            stop: setup.stop,
            fatal: None,
            verifier: setup.verifier,
            checkpointer: setup.checkpointer,
            unrecorded: false,
            checkpoint_generation: 0,
            bad_pieces: BTreeMap::new(),
            banned: BTreeSet::new(),
            buffers: setup.buffers,
            storing_count: 0,
            storing: HashMap::new(),
            max_storing: max_storing(layout.piece_size_bytes()),
        }
    }

    /// Runs until every peer has the file (Ok) or a fatal error.
    pub fn run(mut self) -> Result<(), EngineError> {
        let mut rechoke = tick(self.config.common.unchoking_interval);
        let mut optimistic = tick(self.config.common.optimistic_unchoking_interval);
        let checkpoint = tick(if self.verifier.is_some() {
            FLUSH_INTERVAL
        } else {
            CHECKPOINT_INTERVAL
        });
        while !self.all_done() && self.fatal.is_none() {
            if self.events_rx.is_empty() {
                // Nothing left to handle: the log catches up before we wait.
                self.log.flush();
            }
            select! {
                recv(self.events_rx) -> event => {
                    let event = event.expect("the engine holds a sender");
                    self.handle(event);
                    if self.rounds == Rounds::Due {
                        self.rounds = Rounds::Running;
                        self.select_preferred();
                        self.select_optimistic();
                        rechoke = tick(self.config.common.unchoking_interval);
                        optimistic = tick(self.config.common.optimistic_unchoking_interval);
                    }
                }
                recv(rechoke) -> _ => {
                    self.rounds = Rounds::Running;
                    self.select_preferred();
                    self.note_stall();
                    self.note_waiting();
                }
                recv(optimistic) -> _ => self.select_optimistic(),
                recv(checkpoint) -> _ => {
                    self.write_held(true);
                    self.start_checkpoint();
                }
            }
        }
        match self.fatal {
            Some(EngineError::Interrupted(signal, _)) => {
                self.land_in_flight_pieces();
                self.final_checkpoint();
                let seed = self
                    .config
                    .peers
                    .iter()
                    .any(|p| p.id == self.me && p.has_file);
                if !seed && matches!(self.fatal, Some(EngineError::Interrupted(..))) {
                    let recorded = format!(
                        "; progress recorded: {} of {} pieces, kept for the next run",
                        self.have_count,
                        self.have.len()
                    );
                    self.fatal = Some(EngineError::Interrupted(signal, recorded));
                }
            }
            None => self.final_checkpoint(),
            Some(_) => {}
        }
        self.shutdown();
        log::debug!(
            "peer {}: pieces served from memory {}, read back to serve {}",
            self.me,
            self.counters.served_kept.load(Relaxed),
            self.counters.served_read_back.load(Relaxed)
        );
        match self.fatal {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// After a signal: let pieces already received land on disk (bounded),
    /// those the store holds too once the disk queue is empty. New pieces
    /// are not requested.
    fn land_in_flight_pieces(&mut self) {
        let deadline = Instant::now() + INTERRUPT_GRACE;
        let mut held_written = false;
        while !self.storing.is_empty() {
            if self.storing_count == 0 && !held_written {
                held_written = true;
                self.write_held(false);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events_rx.recv_timeout(left) {
                Ok(event @ (Event::Stored { .. } | Event::Held(_))) => self.handle(event),
                Ok(Event::WriteFailed(e)) => log::error!("peer {}: {e}", self.me),
                Ok(Event::Piece { data, .. }) => self.buffers.give(data),
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }

    /// Records progress synchronously before the peer exits, so the record
    /// names every piece counted (one on a disk thread could be cut off).
    fn final_checkpoint(&mut self) {
        if let Some(cp) = &self.checkpointer {
            self.checkpoint_generation += 1;
            if let Err(e) = cp.checkpoint(&self.store, self.checkpoint_generation, &self.have) {
                log::error!("peer {}: {e}", self.me);
            }
        }
    }

    /// What a disk thread calls for each piece once it is in the file: its
    /// buffer is kept to serve it, and the engine hears it is stored.
    fn written_sink(&self) -> impl FnMut(u32, PieceBuf) + Send + 'static {
        let (buffers, events) = (Arc::clone(&self.buffers), self.events_tx.clone());
        move |index, buf| {
            buffers.keep(index, buf);
            let _ = events.send(Event::Stored {
                index,
                result: Ok(()),
            });
        }
    }

    /// Has a disk thread write the pieces the store holds: all, or with
    /// `idle_only` those whose granules got nothing new since the last tick.
    fn write_held(&mut self, idle_only: bool) {
        if self.filling.is_none() || self.storing.is_empty() {
            return;
        }
        let (store, mut written) = (Arc::clone(&self.store), self.written_sink());
        let events = self.events_tx.clone();
        self.disk.spawn(move || {
            if let Err(e) = store.write_held(idle_only, &mut written) {
                let _ = events.send(Event::WriteFailed(e));
            }
        });
    }

    /// Hands a progress checkpoint to a disk thread when pieces landed since the last.
    fn start_checkpoint(&mut self) {
        let Some(cp) = &self.checkpointer else {
            return;
        };
        if !self.unrecorded {
            return;
        }
        self.unrecorded = false;
        self.checkpoint_generation += 1;
        let (cp, store, events) = (
            Arc::clone(cp),
            Arc::clone(&self.store),
            self.events_tx.clone(),
        );
        let (generation, have) = (self.checkpoint_generation, self.have.clone());
        self.disk.spawn(move || {
            let result = cp.checkpoint(&store, generation, &have);
            let _ = events.send(Event::Checkpointed(result));
        });
    }

    /// Whether `conn` is still the connection to `peer` (not one replaced or
    /// dropped since the event was sent).
    fn is_current(&self, peer: u32, conn: ConnId) -> bool {
        self.neighbours.get(&peer).is_some_and(|n| n.conn == conn)
    }

    fn have_complete(&self) -> bool {
        self.have_count == self.have.len()
    }

    /// `peer` said it has the whole file, or PeerInfo.cfg says it started
    /// with it (HasFile 1: SPEC.md's seed has the whole file) and it has not
    /// been connected for [`SEED_GONE`]. A seed that went away need not be
    /// heard from to end (a stranger's claim may have made it leave early);
    /// one that is connected, or may still be, is told first.
    fn known_complete(&self, peer: &PeerEntry) -> bool {
        self.complete_peers.contains(&peer.id)
            || (peer.has_file
                && self
                    .unconnected_since
                    .get(&peer.id)
                    .is_some_and(|since| since.elapsed() >= SEED_GONE))
    }

    /// We and every peer of PeerInfo.cfg have the whole file, as far as we
    /// know. A peer that leaves then leaves as the usual end (a peer with the
    /// file leaves once it knows everyone has it); any other departure is
    /// worth a warning, a redial (of a peer above us) and a wait for its
    /// return before we end (see [`RETURN_GRACE`]): even a peer that had the
    /// whole file, killed and started again, knows nothing of the others and
    /// must hear from us again.
    fn everyone_complete(&self) -> bool {
        self.have_complete() && self.config.peers.iter().all(|p| self.known_complete(p))
    }

    fn all_done(&mut self) -> bool {
        if !self.everyone_complete() {
            return false;
        }
        let known_at = *self.everyone_known_at.get_or_insert_with(Instant::now);
        self.left_early.iter().all(|(p, &maybe_usual)| {
            self.unconnected_since.get(p).is_none_or(|&left| {
                // A plain peer that left just before we heard the last news
                // had most likely heard it first, and ended as usual.
                (maybe_usual && known_at.saturating_duration_since(left) < USUAL_END_SKEW)
                    || left.elapsed() >= RETURN_GRACE
            })
        })
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Connected {
                peer,
                stream,
                dialled,
                pipelining,
            } => self.on_connected(peer, stream, dialled, pipelining),
            Event::DialFailed { peer, error } => {
                if self.everyone_complete() {
                    // Nothing more to get from it, nor to tell it.
                } else if !self.complete_peers.contains(&peer) {
                    self.fatal = Some(EngineError::Unreachable(error));
                } else if !self.have_complete() {
                    // Others may still have what we need: carry on.
                    log::warn!("peer {}: {error}", self.me);
                }
            }
            Event::Frame {
                conn,
                peer,
                message,
            } => {
                if self.is_current(peer, conn) {
                    self.on_message(peer, message);
                }
            }
            Event::Frames {
                conn,
                peer,
                messages,
            } => {
                for message in messages {
                    // A message may end the connection: the rest then go.
                    if self.is_current(peer, conn) {
                        self.on_message(peer, message);
                    }
                }
            }
            Event::Arrived { conn, peer, index } => {
                if self.is_current(peer, conn) {
                    self.on_arrived(peer, index);
                }
            }
            Event::Piece {
                conn,
                peer,
                index,
                data,
                good,
            } => {
                if self.is_current(peer, conn) {
                    self.on_piece(peer, index, data, good);
                } else {
                    self.buffers.give(data);
                }
            }
            Event::Closed { conn, peer, reason } => {
                if self.is_current(peer, conn) {
                    match &reason {
                        CloseReason::Eof if self.everyone_complete() => {}
                        reason => {
                            log::warn!("peer {}: connection to {peer} ended: {reason}", self.me)
                        }
                    }
                    // One that broke the protocol would break it again.
                    let redial = !matches!(reason, CloseReason::Protocol(_));
                    self.drop_neighbour(peer, redial);
                }
            }
            Event::Stored { index, result } => self.on_stored(index, result),
            Event::Held(index) => self.on_held(index),
            Event::Checkpointed(result) => {
                if let Err(e) = result {
                    self.fatal = Some(EngineError::Disk(e));
                }
            }
            Event::WriteFailed(e) => self.fatal = Some(EngineError::Disk(e)),
            Event::Finished(result) => self.on_finished(result),
            Event::Interrupt(signal) => {
                self.stop.store(true, Relaxed);
                self.fatal = Some(EngineError::Interrupted(signal, String::new()));
            }
        }
    }

    fn on_connected(&mut self, peer: u32, stream: TcpStream, dialled: bool, pipelining: bool) {
        if self.neighbours.contains_key(&peer) {
            // SPEC.md section 2: the newer connection wins. A peer that
            // crashed, or whose link died without a FIN, dials again before
            // its old connection is noticed dead, and a silent stranger
            // holding the ID must not lock the real peer out. That the peer
            // has the whole file stays known: a real peer that finished
            // would not come back to say it again.
            log::warn!(
                "peer {}: a new connection from peer {peer} replaces the one it had",
                self.me
            );
            self.drop_neighbour(peer, false);
        }
        let (reader_stream, writer_stream) = match (stream.try_clone(), stream.try_clone()) {
            (Ok(r), Ok(w)) => (r, w),
            (Err(e), _) | (_, Err(e)) => {
                log::warn!("peer {}: cannot use connection to {peer}: {e}", self.me);
                return;
            }
        };
        self.unconnected_since.remove(&peer);
        self.left_early.remove(&peer);
        // Redials count lost connections in a row: a peer restarted many
        // times (a kill soak, a flaky host) is dialled again each time.
        self.redials.remove(&peer);
        if dialled {
            self.log.makes_connection(peer);
        } else {
            self.log.connected_from(peer);
        }
        log::info!(
            "peer {}: connected to {peer}, pipelining {}",
            self.me,
            if pipelining { "on" } else { "off" }
        );
        self.next_conn += 1;
        let conn = self.next_conn;
        let num_pieces = self.limits.layout().num_pieces();
        // Unbounded, with `queue_limit` checked on each send: a bounded
        // channel allocates all of its room up front (64 bytes a message:
        // 8 MiB a neighbour with 131,072 pieces, where peak RSS went from 29
        // to 57 MB between 512 MiB and 2 GiB of 16 KiB pieces).
        let (queue, queue_rx) = unbounded();
        let started = net::spawn_writer(
            peer,
            writer_stream,
            queue_rx,
            net::WriterShared {
                store: Arc::clone(&self.store),
                buffers: Arc::clone(&self.buffers),
                counters: Arc::clone(&self.counters),
                upload: self.caps.upload.clone(),
                finished: self.writers_done_tx.clone(),
            },
        )
        .and_then(|()| {
            self.writers_running += 1;
            net::spawn_reader(
                conn,
                peer,
                reader_stream,
                self.limits,
                pipelining,
                net::ReaderShared {
                    buffers: Arc::clone(&self.buffers),
                    verifier: self.verifier.clone(),
                    events: self.events_tx.clone(),
                    download: self.caps.download.clone(),
                },
            )
        });
        if let Err(e) = started {
            // Without a neighbour's threads the swarm cannot finish here.
            let _ = stream.shutdown(Shutdown::Both);
            self.fatal = Some(EngineError::Threads(peer, e));
            return;
        }
        // A neighbour on this host: its request-to-piece times measure our
        // CPUs, not a link (32 peers on 2 cores: up to 78 ms).
        let same_host = match (stream.peer_addr(), stream.local_addr()) {
            (Ok(theirs), Ok(ours)) => theirs.ip().is_loopback() || theirs.ip() == ours.ip(),
            _ => true,
        };
        self.neighbours.insert(
            peer,
            Neighbour {
                conn,
                queue,
                stream,
                has: Bitfield::empty(num_pieces),
                has_count: 0,
                heard: false,
                they_are_interested: false,
                we_are_interested: false,
                they_choke_us: true,
                pipelining,
                outstanding: Vec::new(),
                asked: HashMap::new(),
                unrequested: 0,
                said_goodbye: false,
                frames: 0,
                since: Instant::now(),
                pacing: Pacing::new(
                    self.config.common.pipeline_depth,
                    u64::from(self.config.common.layout.piece_size_bytes()),
                    !same_host && self.config.common.pipeline_adaptive,
                    Instant::now(),
                ),
                arrived: Vec::new(),
                bytes_this_interval: 0,
                declared: false,
                sent_bad: Vec::new(),
                recent: VecDeque::new(),
            },
        );
        if self.have_count > 0 {
            self.send(peer, Message::Bitfield(self.have.clone()));
        }
    }

    /// Queues `message` for `peer`; a neighbour whose queue is full or gone is dropped.
    fn send(&mut self, peer: u32, message: Message) {
        self.send_out(peer, Out::Msg(message));
    }

    fn send_out(&mut self, peer: u32, out: Out) {
        let Some(n) = self.neighbours.get(&peer) else {
            return;
        };
        if n.queue.len() >= self.queue_limit() {
            log::warn!("peer {}: {peer} stopped reading; dropping it", self.me);
            self.drop_neighbour(peer, true);
        } else if n.queue.send(out).is_err() {
            self.drop_neighbour(peer, true);
        }
    }

    /// Messages a writer's queue may hold before its neighbour counts as not
    /// reading: room for a `have` of every piece plus the control messages
    /// of a few intervals, so the engine's own traffic can never fill it.
    fn queue_limit(&self) -> usize {
        self.limits.layout().num_pieces() as usize + 64
    }

    /// Forgets `peer`'s connection; with `redial`, dials it again when
    /// [`Engine::maybe_redial`] says so.
    fn drop_neighbour(&mut self, peer: u32, redial: bool) {
        let Some(n) = self.neighbours.remove(&peer) else {
            return;
        };
        self.unconnected_since.insert(peer, Instant::now());
        // A p2pft neighbour that ends as usual says goodbye first; one that
        // did not was stopped (killed, cut off) and may come back. Of a
        // plain one we can only tell whether everyone was done.
        let usual = n.said_goodbye || (!n.pipelining && self.everyone_complete());
        if !usual {
            self.left_early.insert(peer, !n.pipelining);
        }
        if n.pipelining {
            log::debug!("peer {}: {peer}: {}", self.me, n.pacing.summary());
        }
        let _ = n.stream.shutdown(Shutdown::Both);
        for index in n.outstanding.into_iter().chain(n.arrived) {
            self.release(index);
        }
        self.unchoked.remove(&peer);
        let held_slot = self.preferred.contains(&peer) || self.optimistic == Some(peer);
        self.preferred.retain(|&p| p != peer);
        if self.optimistic == Some(peer) {
            self.optimistic = None;
        }
        if held_slot && self.extensions {
            if let Some(next) = self.pick_waiting() {
                self.offer_free_slot(next);
            }
        }
        if redial && !usual {
            self.maybe_redial(peer);
        }
        self.fill_requests();
    }

    /// A peer we dial that went away before the swarm was done is dialled
    /// again (it may have been restarted): one without the file, or one with
    /// it while we still lack pieces (a seed that crashed and came back
    /// dials nobody: no one else would ever reach it). One that dials us
    /// will dial again itself.
    fn maybe_redial(&mut self, peer: u32) {
        if self.stop.load(Relaxed) {
            return;
        }
        let me = self.config.position(self.me);
        let Some(pos) = self.config.position(peer) else {
            return;
        };
        if me.is_some_and(|me| pos < me) {
            let count = self.redials.entry(peer).or_insert(0);
            if *count < MAX_REDIALS {
                *count += 1;
                let entry: PeerEntry = self.config.peers[pos].clone();
                net::spawn_dialer(
                    self.greeting.clone(),
                    entry,
                    self.connect_timeout,
                    self.events_tx.clone(),
                    Arc::clone(&self.stop),
                );
            }
        }
    }

    /// A requested piece that will not come is free to be requested again.
    fn release(&mut self, index: u32) {
        if !self.have.has(index) && !self.storing.contains_key(&index) {
            self.wanted.set(index, true);
            if let Some(filling) = &mut self.filling {
                filling.reopen(index);
            }
        }
    }

    fn on_message(&mut self, peer: u32, message: Message) {
        if self.flooding(peer) {
            return;
        }
        let first = {
            let n = self.neighbours.get_mut(&peer).expect("checked by caller");
            !std::mem::replace(&mut n.heard, true)
        };
        match message {
            Message::Choke => {
                self.log.choked_by(peer);
                let n = self.neighbours.get_mut(&peer).expect("present");
                n.they_choke_us = true;
                let lost = std::mem::take(&mut n.outstanding);
                n.pacing.forget();
                if !lost.is_empty() {
                    for index in lost {
                        self.release(index);
                    }
                    self.fill_requests();
                }
            }
            Message::Unchoke => {
                self.log.unchoked_by(peer);
                self.neighbours
                    .get_mut(&peer)
                    .expect("present")
                    .they_choke_us = false;
                self.request_from(peer);
            }
            Message::Interested => {
                self.log.received_interested(peer);
                let n = self.neighbours.get_mut(&peer).expect("present");
                n.they_are_interested = true;
                n.declared = true;
                if self.extensions {
                    self.offer_free_slot(peer);
                }
                self.check_neighbourhood_whole();
            }
            Message::NotInterested => {
                self.log.received_not_interested(peer);
                let n = self.neighbours.get_mut(&peer).expect("present");
                n.they_are_interested = false;
                n.declared = true;
                if self.extensions {
                    self.give_up_slot(peer);
                }
                self.check_neighbourhood_whole();
            }
            Message::Have(index) => {
                self.log.received_have(peer, index);
                let n = self.neighbours.get_mut(&peer).expect("present");
                if !n.has.has(index) {
                    n.has.set(index, true);
                    n.has_count += 1;
                    if n.pipelining {
                        if n.recent.len() == RECENT_HAVES {
                            n.recent.pop_front();
                        }
                        n.recent.push_back(index);
                    }
                }
                // A have can only add interest, and only in a piece we lack:
                // no scan of the bitfields needed.
                let interested = n.we_are_interested || !self.have.has(index);
                self.after_news(peer, interested, false);
            }
            Message::Bitfield(bits) => {
                let n = self.neighbours.get_mut(&peer).expect("present");
                if !first {
                    log::warn!("peer {}: {peer} sent a bitfield late; merging it", self.me);
                }
                n.has.union_with(&bits);
                n.has_count = n.has.count();
                let interested = n.has.has_any_missing_from(&self.have);
                self.after_news(peer, interested, first);
            }
            Message::Request(index) => self.on_request(peer, index),
            Message::Goodbye => {
                let n = self.neighbours.get_mut(&peer).expect("present");
                if n.pipelining {
                    n.said_goodbye = true;
                } else {
                    // Not negotiated: to a plain peer's eyes an unknown type.
                    let reason = CloseReason::Protocol(WireError::UnknownType(Kind::Goodbye as u8));
                    log::warn!("peer {}: connection to {peer} ended: {reason}", self.me);
                    self.drop_neighbour(peer, false);
                }
            }
            Message::Piece { data, .. } => {
                debug_assert!(false, "readers report pieces as Event::Piece");
                self.buffers.give(data);
            }
        }
    }

    /// Counts a frame of `peer`'s; true (and the connection closed) when it
    /// has sent more than [`FRAME_ALLOWANCE`] allows.
    fn flooding(&mut self, peer: u32) -> bool {
        let pieces = u64::from(self.limits.layout().num_pieces());
        let n = self.neighbours.get_mut(&peer).expect("checked by caller");
        n.frames += 1;
        let fixed = FRAME_ALLOWANCE + 4 * pieces;
        if n.frames <= fixed {
            return false;
        }
        let secs = n.since.elapsed().as_secs();
        if n.frames <= fixed + FRAME_RATE * secs {
            return false;
        }
        let frames = n.frames;
        self.violation(peer, Violation::Flood { frames, secs });
        self.drop_neighbour(peer, false);
        true
    }

    fn violation(&self, peer: u32, violation: Violation) {
        self.counters.violations.fetch_add(1, Relaxed);
        log::warn!(
            "peer {}: protocol violation: peer {peer} {violation}",
            self.me
        );
    }

    /// After a bitfield or a have: completeness, our `interested` state, and
    /// a request if the neighbour unchoked us. `always_tell` sends our
    /// interest even when it did not change (the answer to a bitfield).
    fn after_news(&mut self, peer: u32, interested: bool, always_tell: bool) {
        let n = self.neighbours.get_mut(&peer).expect("present");
        let complete = n.has_count == n.has.len();
        let changed = interested != n.we_are_interested;
        n.we_are_interested = interested;
        if changed || always_tell {
            let message = if interested {
                Message::Interested
            } else {
                Message::NotInterested
            };
            self.send(peer, message);
        }
        if complete && self.complete_peers.insert(peer) {
            self.check_neighbourhood_whole();
        }
        self.request_from(peer);
    }

    fn on_request(&mut self, peer: u32, index: u32) {
        if !self.unchoked.contains(&peer) {
            return; // SPEC: a request from a choked neighbour is ignored
        }
        if !self.have.has(index) {
            log::debug!(
                "peer {}: {peer} asked for piece {index}, which we lack",
                self.me
            );
            return;
        }
        self.send_out(peer, Out::Serve(index));
    }

    /// A piece's bytes are in: its request is answered, so the next one may
    /// go out (SPEC.md: only after the piece for the previous one arrived).
    /// Until its [`Event::Piece`] the piece is neither outstanding nor
    /// wanted, as while it is being stored.
    fn on_arrived(&mut self, peer: u32, index: u32) {
        let n = self.neighbours.get_mut(&peer).expect("present");
        if let Some(at) = n.outstanding.iter().position(|&i| i == index) {
            n.arrived.push(n.outstanding.swap_remove(at));
        }
        self.request_from(peer);
    }

    fn on_piece(&mut self, peer: u32, index: u32, data: PieceBuf, good: bool) {
        let n = self.neighbours.get_mut(&peer).expect("present");
        if let Some(asked) = n.asked.get_mut(&index) {
            *asked -= 1;
            if *asked == 0 {
                n.asked.remove(&index);
            }
        } else {
            // Never requested on this connection, or answered already: a
            // piece nobody asked for is never stored, counted or announced.
            self.buffers.give(data);
            n.unrequested += 1;
            let count = n.unrequested;
            self.violation(peer, Violation::UnrequestedPiece { index, count });
            if count >= MAX_UNREQUESTED_PIECES {
                log::warn!(
                    "peer {}: closing the connection to peer {peer}: {count} unrequested pieces",
                    self.me
                );
                self.drop_neighbour(peer, false);
            }
            return;
        }
        n.bytes_this_interval += data.len() as u64;
        // (Only a pipelining neighbour has a depth to pace; its pieces come
        // hashed, without an `Arrived` first.)
        if n.pipelining {
            n.pacing.arrived(index, Instant::now());
        }
        self.counters.bytes_in.fetch_add(data.len() as u64, Relaxed);
        n.outstanding.retain(|&i| i != index);
        n.arrived.retain(|&i| i != index);
        if self.have.has(index) || self.storing.contains_key(&index) {
            // A duplicate (a late answer to a request we gave up on).
            self.buffers.give(data);
            self.request_from(peer);
            return;
        }
        if !good {
            self.buffers.give(data);
            self.request_from(peer);
            self.on_bad(index, peer);
            return;
        }
        self.wanted.set(index, false);
        self.storing_count += 1;
        self.storing.insert(
            index,
            Storing {
                from: peer,
                held: false,
            },
        );
        // Only pieces from p2pft neighbours are gathered: they come in
        // granule order (see `picker::Filling`), a plain neighbour's at random.
        let gather = self.neighbours[&peer].pipelining;
        let store = Arc::clone(&self.store);
        let events = self.events_tx.clone();
        let mut written = self.written_sink();
        self.disk.spawn(move || {
            let event = match store.put_piece(index, data, gather, &mut written) {
                Ok(false) => return,
                Ok(true) => Event::Held(index),
                Err(e) => Event::Stored {
                    index,
                    result: Err(e),
                },
            };
            let _ = events.send(event);
        });
        self.request_from(peer);
    }

    /// Outside strict mode, an interested neighbour gets a free upload slot at
    /// once instead of at the next interval: a preferred one while fewer than
    /// k are preferred, else the optimistic one while there is none.
    fn offer_free_slot(&mut self, peer: u32) {
        if self.unchoked.contains(&peer) {
            return;
        }
        if self.preferred.len() < self.config.common.preferred_neighbors {
            self.preferred.push(peer);
            self.preferred.sort_unstable();
            self.log.preferred_neighbors(&self.preferred);
            self.logged_preferred = self.preferred.clone();
        } else if self.optimistic.is_none() {
            self.optimistic = Some(peer);
            self.log.optimistic_neighbor(peer);
        } else {
            return;
        }
        self.apply_choking();
    }

    /// Outside strict mode, a neighbour that holds an upload slot and says it
    /// is no longer interested (it has what we have, or all of the file)
    /// gives the slot up at once, when an interested neighbour is left
    /// choked, instead of at the next interval: a peer whose neighbours all
    /// complete would otherwise wait up to p seconds for a round while they
    /// sit idle (seen: 1 s of a 0.1 s swarm). It is choked, and the slot goes
    /// to one of those waiting, at random. With nobody waiting nothing
    /// changes: a neighbour that is interested again soon keeps its slot.
    fn give_up_slot(&mut self, peer: u32) {
        let preferred = self.preferred.contains(&peer);
        if !preferred && self.optimistic != Some(peer) {
            return;
        }
        let Some(next) = self.pick_waiting() else {
            return;
        };
        self.preferred.retain(|&p| p != peer);
        if self.optimistic == Some(peer) {
            self.optimistic = None;
        }
        // Logs the new preferred list (or optimistic one) and sends the
        // choke and unchoke.
        self.offer_free_slot(next);
    }

    /// An interested neighbour left choked, at random (as the optimistic
    /// pick is), if there is one.
    fn pick_waiting(&mut self) -> Option<u32> {
        let waiting: Vec<u32> = self
            .neighbours
            .iter()
            .filter(|(id, n)| n.they_are_interested && !self.unchoked.contains(id))
            .map(|(id, _)| *id)
            .collect();
        waiting.choose(&mut self.rng).copied()
    }

    /// With the early unchoke off (`--strict`), the first choking round need
    /// not wait for the first tick: once every other peer of PeerInfo.cfg is
    /// connected and has either said whether it is interested or has the
    /// whole file (so never will be), the run loop selects at once and
    /// restarts both timers, so rounds still come every p (and m) seconds,
    /// from here. SPEC.md fixes the period, not the phase.
    fn check_neighbourhood_whole(&mut self) {
        if self.extensions || self.rounds != Rounds::AwaitingFirst {
            return;
        }
        let others = self.config.peers.len() - 1;
        let settled = |(id, n): (&u32, &Neighbour)| n.declared || self.complete_peers.contains(id);
        if self.neighbours.len() == others && self.neighbours.iter().all(settled) {
            self.rounds = Rounds::Due;
        }
    }

    /// A piece failed verification: free it for others, count it against the
    /// sender, and ban a sender that keeps doing it.
    fn on_bad(&mut self, index: u32, from: u32) {
        self.release(index);
        if self.banned.contains(&from) {
            // Received before the ban, verified after it: not a new strike.
            log::warn!(
                "peer {}: piece {index} from banned peer {from} failed SHA-1 verification too; dropped",
                self.me
            );
            self.fill_requests();
            return;
        }
        let count = self.bad_pieces.entry(from).or_insert(0);
        *count += 1;
        let count = *count;
        log::warn!(
            "peer {}: piece {index} from peer {from} failed SHA-1 verification ({count} of {MAX_BAD_PIECES} allowed); dropped",
            self.me
        );
        if let Some(n) = self.neighbours.get_mut(&from) {
            n.sent_bad.push(index);
        }
        if count >= MAX_BAD_PIECES {
            self.banned.insert(from);
            log::warn!(
                "peer {}: disconnecting peer {from}: {count} bad pieces; it is asked for no piece again this run",
                self.me
            );
            self.drop_neighbour(from, false);
        }
        self.fill_requests();
    }

    /// A piece is held by the store: it no longer counts against
    /// [`max_storing`] (the store bounds what it holds).
    fn on_held(&mut self, index: u32) {
        let Some(storing) = self.storing.get_mut(&index) else {
            return; // stored already
        };
        if !std::mem::replace(&mut storing.held, true) && self.leave_disk_queue() {
            self.fill_requests();
        }
    }

    /// One piece fewer waits for the disk threads; true when requests had
    /// stopped for them (see [`max_storing`]).
    fn leave_disk_queue(&mut self) -> bool {
        let was_full = self.storing_count >= self.max_storing;
        self.storing_count -= 1;
        was_full
    }

    fn on_stored(&mut self, index: u32, result: io::Result<()>) {
        let Some(storing) = self.storing.remove(&index) else {
            return;
        };
        let was_full = !storing.held && self.leave_disk_queue();
        let from = storing.from;
        if let Err(e) = result {
            self.fatal = Some(EngineError::Disk(e));
            return;
        }
        self.have.set(index, true);
        self.have_count += 1;
        self.unrecorded = true;
        let count = self.have_count;
        self.counters.pieces.store(count, Relaxed);
        self.log.downloaded_piece(index, from, count);
        let peers: Vec<u32> = self.neighbours.keys().copied().collect();
        for &peer in &peers {
            self.send(peer, Message::Have(index));
        }
        for &peer in &peers {
            let Some(n) = self.neighbours.get_mut(&peer) else {
                continue;
            };
            // Only a neighbour that has this piece can have lost our interest.
            if n.we_are_interested && n.has.has(index) && !n.has.has_any_missing_from(&self.have) {
                n.we_are_interested = false;
                self.send(peer, Message::NotInterested);
            }
        }
        if was_full {
            self.fill_requests();
        }
        if self.have_complete() && !self.finishing {
            self.finishing = true;
            let (store, events) = (Arc::clone(&self.store), self.events_tx.clone());
            self.disk.spawn(move || {
                let result = store.sync().map_err(|e| e.to_string()).and_then(|()| {
                    let len = store.file().metadata().map_err(|e| e.to_string())?.len();
                    let want = store.layout().file_size_bytes();
                    if len == want {
                        Ok(())
                    } else {
                        Err(format!("the file has {len} bytes, expected {want}"))
                    }
                });
                let _ = events.send(Event::Finished(result));
            });
        }
    }

    /// The file is durable and has its full length: only now is it complete.
    fn on_finished(&mut self, result: Result<(), String>) {
        match result {
            Ok(()) => {
                let (direct, buffered) = self.store.writes();
                let (whole, part) = self.store.batches();
                log::debug!(
                    "peer {}: pieces written with direct I/O {direct}, through the page cache {buffered}; granules written whole {whole}, in part {part}",
                    self.me
                );
                self.complete_peers.insert(self.me);
                self.counters.set_complete();
                self.log.complete();
                self.start_checkpoint();
            }
            Err(e) => self.fatal = Some(EngineError::Integrity(e)),
        }
    }

    /// Requests random wanted pieces from `peer` while it unchokes us, up to
    /// the pipeline depth (1 with a plain peer, as SPEC.md says; more where
    /// its link needs more, see [`crate::pacing`], while all neighbours
    /// together have less than [`MAX_IN_FLIGHT_BYTES`] of pieces asked for),
    /// and while fewer than [`max_storing`] pieces wait for the disk.
    fn request_from(&mut self, peer: u32) {
        let depth = self.config.common.pipeline_depth as usize;
        let piece = u64::from(self.config.common.layout.piece_size_bytes());
        loop {
            let Some(n) = self.neighbours.get(&peer) else {
                return;
            };
            if self.banned.contains(&peer) {
                return; // its pieces are not worth a request any more
            }
            let limit = if n.pipelining {
                n.pacing.depth() as usize
            } else {
                1
            };
            let in_flight = || {
                let asked: usize = self.neighbours.values().map(|m| m.outstanding.len()).sum();
                asked as u64 * piece
            };
            if n.they_choke_us
                || n.outstanding.len() >= limit
                || (n.outstanding.len() >= depth && in_flight() >= MAX_IN_FLIGHT_BYTES)
                || self.storing_count >= self.max_storing
                || self.stop.load(Relaxed)
                || !self.request_one(peer)
            {
                return;
            }
        }
    }

    /// Requests one wanted piece from `peer` (see [`picker`] for which); false
    /// when it has none.
    fn request_one(&mut self, peer: u32) -> bool {
        let neighbours = &self.neighbours;
        let n = &neighbours[&peer];
        let pick = if n.sent_bad.is_empty() && n.pipelining {
            // It is a leecher, and another neighbour with the whole file
            // unchokes us.
            let seed_instead = || {
                n.has_count < n.has.len()
                    && neighbours.iter().any(|(&id, m)| {
                        id != peer && !m.they_choke_us && m.has_count == m.has.len()
                    })
            };
            picker::pick_from_p2pft(
                &n.recent,
                &n.has,
                &self.wanted,
                seed_instead,
                self.filling.as_mut(),
                &mut self.rng,
            )
        } else if n.sent_bad.is_empty() {
            picker::pick_random(&n.has, &self.wanted, &mut self.rng)
        } else {
            let mut elsewhere = self.wanted.clone();
            for &i in &n.sent_bad {
                elsewhere.set(i, false);
            }
            picker::pick_random(&n.has, &elsewhere, &mut self.rng)
                .or_else(|| picker::pick_random(&n.has, &self.wanted, &mut self.rng))
        };
        let Some(index) = pick else {
            return false;
        };
        if let Some(filling) = &mut self.filling {
            filling.begun(index);
        }
        let n = self.neighbours.get_mut(&peer).expect("checked by caller");
        n.outstanding.push(index);
        *n.asked.entry(index).or_insert(0) += 1;
        n.pacing.requested(index, Instant::now());
        self.wanted.set(index, false);
        self.send(peer, Message::Request(index));
        true
    }

    /// Tops up the requests of every unchoking neighbour (after pieces were freed).
    fn fill_requests(&mut self) {
        let idle: Vec<u32> = self
            .neighbours
            .iter()
            .filter(|(_, n)| !n.they_choke_us)
            .map(|(&id, _)| id)
            .collect();
        for peer in idle {
            self.request_from(peer);
        }
    }

    fn stats(&self) -> Vec<NeighbourStats> {
        self.neighbours
            .iter()
            .map(|(&id, n)| NeighbourStats {
                id,
                interested: n.they_are_interested,
                bytes_received: n.bytes_this_interval,
            })
            .collect()
    }

    fn select_preferred(&mut self) {
        let stats = self.stats();
        self.preferred = choke::select_preferred(
            &stats,
            self.config.common.preferred_neighbors,
            self.have_complete(),
            &mut self.rng,
        );
        for n in self.neighbours.values_mut() {
            n.bytes_this_interval = 0;
        }
        if !self.preferred.is_empty() && self.preferred != self.logged_preferred {
            self.log.preferred_neighbors(&self.preferred);
            self.logged_preferred = self.preferred.clone();
        }
        self.apply_choking();
    }

    /// Says once, when a leecher has gone [`STALL_NOTICE`] without a new
    /// piece, what it waits for: which neighbours are connected and whether
    /// any has a piece it lacks (none: a seed gone, or the swarm without
    /// one). Said again after pieces came in between.
    fn note_stall(&mut self) {
        let Some(stalled) = self.progress.due(self.have_count, STALL_NOTICE) else {
            return;
        };
        if self.have_complete() {
            return;
        }
        let neighbours: Vec<String> = self
            .neighbours
            .iter()
            .map(|(id, n)| {
                let some = n.has.has_any_missing_from(&self.have);
                format!("{id} ({})", if some { "has some" } else { "has none" })
            })
            .collect();
        log::warn!(
            "peer {}: no new piece for {} s, {} of {} missing; {}",
            self.me,
            stalled.as_secs(),
            self.have.len() - self.have_count,
            self.have.len(),
            if neighbours.is_empty() {
                "no neighbour is connected".to_string()
            } else {
                format!("neighbours: {}", neighbours.join(", "))
            }
        );
    }

    /// Says once, when a peer with the whole file has waited [`STALL_NOTICE`]
    /// for peers that are not connected (not started, most likely), which
    /// they are: it may end only once every peer has the file. Said again
    /// when that set changes and stays. Connected peers still downloading
    /// are no cause for it (a stalled one says so itself).
    fn note_waiting(&mut self) {
        if !self.have_complete() {
            return;
        }
        let absent: Vec<u32> = self
            .config
            .peers
            .iter()
            .map(|p| p.id)
            .filter(|id| {
                *id != self.me
                    && !self.complete_peers.contains(id)
                    && !self.neighbours.contains_key(id)
            })
            .collect();
        let Some(waited) = self.absent.due(absent.clone(), STALL_NOTICE) else {
            return;
        };
        if absent.is_empty() {
            return;
        }
        let ids: Vec<String> = absent.iter().map(u32::to_string).collect();
        log::info!(
            target: crate::process::NOTE,
            "peer {}: has the whole file, and has waited {} s for peers that are not connected: {} (every peer must have the file before any ends)",
            self.me,
            waited.as_secs(),
            ids.join(", ")
        );
    }

    fn select_optimistic(&mut self) {
        let stats = self.stats();
        let chosen =
            choke::select_optimistic(&stats, &self.preferred, self.optimistic, &mut self.rng);
        if let Some(id) = chosen.filter(|&id| Some(id) != self.optimistic) {
            self.log.optimistic_neighbor(id);
        }
        self.optimistic = chosen;
        self.apply_choking();
    }

    fn apply_choking(&mut self) {
        let plan = choke::plan(&self.unchoked, &self.preferred, self.optimistic);
        for peer in plan.choke {
            self.unchoked.remove(&peer);
            self.send(peer, Message::Choke);
        }
        for peer in plan.unchoke {
            self.unchoked.insert(peer);
            self.send(peer, Message::Unchoke);
        }
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Relaxed);
        let neighbours = std::mem::take(&mut self.neighbours);
        let mut streams = Vec::new();
        let usual_end = self.fatal.is_none();
        for (peer, n) in neighbours {
            if n.pipelining {
                log::debug!("peer {}: {peer}: {}", self.me, n.pacing.summary());
                if usual_end {
                    // Tells a p2pft neighbour this is no crash to wait for.
                    let _ = n.queue.send(Out::Msg(Message::Goodbye));
                }
            }
            drop(n.queue); // the writer flushes what is queued, then half-closes
            streams.push(n.stream);
        }
        let grace = if self.fatal.is_some() {
            INTERRUPT_GRACE
        } else {
            FLUSH_GRACE
        };
        let deadline = Instant::now() + grace;
        while self.writers_running > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.writers_done_rx.recv_timeout(left) {
                Ok(_) => self.writers_running -= 1,
                Err(_) => break,
            }
        }
        for s in streams {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}
