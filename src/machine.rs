//! The protocol core: every bit of a peer's protocol state and every
//! decision, with no I/O.
//!
//! [`Machine`] takes what happened (a connection, a frame, a stored piece, a
//! timer) together with `now`, updates the state, and queues [`Command`]s
//! for its driver ([`crate::runtime::engine`]): send this frame on that connection,
//! close it, dial a peer, store a piece, checkpoint, finish, write a spec
//! log line. Interest, the choking rounds, the early unchoke and slot
//! hand-off, request picking and depth, haves, bans, duplicate connections
//! and termination are all decided here.
//!
//! Must never touch a socket, a thread, a file or the clock: time comes in
//! as `now` on every call, randomness from the seeded RNG, so a run is
//! replayed exactly from its inputs (see the tests at the end).
//!
//! - Memory: requests outstanding are at most the pipeline depth per
//!   neighbour (1 with a plain peer; past the configured depth, on a long
//!   link, at most [`crate::policy::pacing::MAX_DEPTH_BYTES`] of pieces a neighbour
//!   and [`MAX_IN_FLIGHT_BYTES`] for all), and pieces received but not yet on
//!   disk at most [`max_storing`]; requests stop while that many wait.
//!   Pieces the store holds to write them with their granule
//!   ([`Machine::held`]) no longer count: the store bounds them itself.
//! - Integrity: a piece is counted, announced and logged only after it
//!   matched its hash (when there is metadata) and was written
//!   ([`Machine::stored`]); the file is declared complete only after the
//!   driver reports it flushed with its full length ([`Machine::finished`]).

use crate::policy::choke::{self, NeighbourStats};
use crate::policy::pacing::Pacing;
use crate::policy::picker;
use crate::policy::rarity::Rarity;
use crate::protocol::bitfield::Bitfield;
use crate::protocol::config::{Config, PeerEntry};
use crate::protocol::wire::{Kind, Limits, Message, WireError};
use crate::support::piecebuf::PieceBuf;
use crate::support::status::Counters;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::SeedableRng;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a dial gave up, as the driver tells it: its own typed error, boxed,
/// since the core may not name the runtime's types.
pub(crate) type BoxedDialFailure = Box<dyn std::error::Error + Send + Sync>;

/// How many times in a row a lost connection to a peer we dial is dialled
/// again (a connection that succeeds starts the count afresh).
const MAX_REDIALS: u32 = 5;
/// Pieces failing verification from one neighbour before it is banned.
pub(crate) const MAX_BAD_PIECES: u32 = 3;
/// Pieces a connection may send that were never requested on it (or were
/// answered already) before it is closed: each is dropped unseen, but each
/// also cost a SHA-1 pass and a piece's worth of reading.
pub(crate) const MAX_UNREQUESTED_PIECES: u32 = 4;
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
/// How long a leecher goes without a new piece before it says why it waits.
const STALL_NOTICE: Duration = Duration::from_secs(10);
/// Announced pieces remembered per p2pft neighbour, to ask for the newest.
const RECENT_HAVES: usize = 16;
/// Bytes of received, verified pieces waiting to be written, at most: enough
/// to keep the device busy; more was no faster, and its memory is better
/// spent on pieces kept to serve (see `crate::runtime::engine::max_kept`).
const MAX_STORING_BYTES: u64 = 4 * 1024 * 1024;

/// Bytes of pieces asked for from all neighbours together past which none is
/// asked for more than the configured depth: what may arrive at once beyond
/// [`max_storing`] when links are long and the disk slow.
pub(crate) const MAX_IN_FLIGHT_BYTES: u64 = 8 << 20;

/// Upload slots beyond the k + 1 of SPEC.md that a peer whose writers ran
/// out of pieces to send gives p2pft neighbours on other hosts, until the
/// next round: a spare upload link is used, yet pieces are not spread over
/// so many neighbours at once that each takes long to arrive (see
/// [`Machine::served`]).
pub(crate) const SPARE_SLOTS: usize = 4;

/// Near the end of a download, a piece asked of a neighbour this long ago
/// and not come is asked of another one too (see [`Machine::endgame_one`]).
pub(crate) const ENDGAME_AFTER: Duration = Duration::from_secs(1);

/// Pieces of `piece_size` that may wait to be written at once (at least 2).
pub(crate) fn max_storing(piece_size: u32) -> usize {
    (MAX_STORING_BYTES / u64::from(piece_size)).max(2) as usize
}

/// What a neighbour did wrong with well-formed frames (malformed ones are
/// [`WireError`]s): each is counted in [`Counters::violations`] and said on
/// stderr.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Violation {
    /// Dropped unseen; [`MAX_UNREQUESTED_PIECES`] close the connection.
    #[error("sent piece {index}, which was not requested on this connection or was answered already ({count} of {MAX_UNREQUESTED_PIECES} allowed); dropped")]
    UnrequestedPiece { index: u32, count: u32 },
    /// Closes the connection: more frames other than pieces than 10,000, 4 a
    /// piece and 2,000 a second of the connection allow.
    #[error("sent {frames} frames other than pieces in {secs} s, a flood; closing the connection")]
    Flood { frames: u64, secs: u64 },
}

/// Identifies one connection, so events of a replaced connection are ignored.
pub(crate) type ConnId = u64;

#[derive(Debug)]
pub enum CloseReason {
    Eof,
    Io(io::Error),
    Protocol(WireError),
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::Eof => f.write_str("connection closed"),
            CloseReason::Io(e) => write!(f, "I/O error: {e}"),
            CloseReason::Protocol(
                e @ (WireError::BadLength {
                    kind: Kind::Bitfield,
                    ..
                }
                | WireError::IndexOutOfRange { .. }),
            ) => write!(
                f,
                "protocol violation: {e} (is its Common.cfg's FileSize or PieceSize another?)"
            ),
            CloseReason::Protocol(e) => write!(f, "protocol violation: {e}"),
        }
    }
}

/// Why the complete file could not be declared complete.
#[derive(Debug, thiserror::Error)]
pub enum FinishError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the file has {len} bytes, expected {want}")]
    Length { len: u64, want: u64 },
}

/// Why a peer's run ends other than with every peer having the file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EngineError {
    #[error("disk error: {0}")]
    Disk(io::Error),
    /// A peer we needed could not be reached: the dialler's account of it,
    /// typed by the driver (the core knows no sockets).
    #[error(transparent)]
    Unreachable(BoxedDialFailure),
    #[error("cannot start the threads for neighbour {0}: {1} (more peers on this machine than its thread limit allows?)")]
    Threads(u32, io::Error),
    /// A peer that dials us left before it had the file and did not come
    /// back (see [`MachineSetup::return_wait`]).
    #[error("peer {peer} left, not known to have the file, and has not come back in {} s: the swarm cannot end without it", .waited.as_secs())]
    Departed { peer: u32, waited: Duration },
    #[error("the finished file could not be made complete: {0}")]
    Integrity(FinishError),
    /// The signal, and for a leecher the pieces it recorded of all.
    #[error("stopped by signal {signal}{}", recorded_text(*.recorded))]
    Interrupted {
        signal: i32,
        recorded: Option<(u32, u32)>,
    },
}

fn recorded_text(recorded: Option<(u32, u32)>) -> String {
    match recorded {
        Some((have, of)) => {
            format!("; progress recorded: {have} of {of} pieces, kept for the next run")
        }
        None => String::new(),
    }
}

/// One sentence of the spec log (SPEC.md section 5), for the driver to
/// write with [`crate::runtime::speclog::SpecLog`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecLine {
    MakesConnection(u32),
    ConnectedFrom(u32),
    PreferredNeighbors(Vec<u32>),
    OptimisticNeighbor(u32),
    UnchokedBy(u32),
    ChokedBy(u32),
    ReceivedHave { from: u32, index: u32 },
    ReceivedInterested(u32),
    ReceivedNotInterested(u32),
    DownloadedPiece { index: u32, from: u32, count: u32 },
    Complete,
}

/// What the machine asks its driver to do, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Queue `message` for the connection's writer.
    Send {
        conn: ConnId,
        peer: u32,
        message: Message,
    },
    /// Queue piece `index` for the connection's writer (read where it is).
    Serve {
        conn: ConnId,
        peer: u32,
        index: u32,
    },
    /// Drop the connection: its writer queue, and the socket both ways.
    Close {
        conn: ConnId,
        peer: u32,
    },
    /// Dial `peer` again (it is above us in PeerInfo.cfg).
    Dial(u32),
    /// Write a verified piece; report [`Machine::stored`] or
    /// [`Machine::held`]. `gather`: it may wait for its granule.
    Store {
        index: u32,
        data: PieceBuf,
        gather: bool,
    },
    /// Write the pieces the store holds: all, or with `idle_only` those
    /// whose granules got nothing new since the last tick.
    WriteHeld {
        idle_only: bool,
    },
    /// Record durably that we have `have` (report [`Machine::checkpointed`]).
    Checkpoint {
        generation: u64,
        have: Bitfield,
    },
    /// The last piece is stored: flush the file and check its length
    /// (report [`Machine::finished`]).
    Finish,
    /// A piece buffer no longer needed, for reuse.
    Recycle(PieceBuf),
    Log(SpecLine),
}

/// What a leecher's download waits on ([`Machine::demand`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Demand {
    /// A request is out.
    Asked,
    /// None is: every neighbour holding a piece it wants chokes it.
    Choked,
    /// None is, though a neighbour holding a piece it wants unchokes it: it
    /// refused that piece this round, or pieces wait for the disk.
    HeldBack,
    /// None is, and no neighbour holds a piece it wants (not yet, or all
    /// it lacks is on its way to disk).
    NoneHeld,
}

/// How a peer stands towards one neighbour's pieces ([`Machine::asking`]):
/// what the simulator reads to say why that neighbour's upload idles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Asking {
    /// A request to it is out.
    Asked,
    /// It chokes us, as far as we know.
    Choked,
    /// It holds a piece we want that nobody was asked for.
    CanAsk,
    /// What it holds that we lack is asked of others, or on its way to disk.
    Elsewhere,
    /// It holds nothing we lack.
    Nothing,
}

/// A piece on its way to disk.
struct Storing {
    from: u32,
    held: bool,
}

struct Neighbour {
    conn: ConnId,
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
    /// Pieces whose bytes are in ([`Machine::arrived`]) and whose
    /// [`Machine::piece`] has not come yet, a copy an answer (a piece
    /// asked for twice may be in twice): released with the neighbour if it
    /// is dropped in between, as that piece will then be ignored.
    arrived: Vec<u32>,
    /// Piece bytes received since the last preferred-neighbour selection.
    bytes_this_interval: u64,
    /// Pieces we served it that its writer put in the socket, since then
    /// (see [`Machine::stats`]).
    written_this_interval: u64,
    /// It has told us whether it is interested (either message).
    declared: bool,
    /// Pieces this neighbour sent that failed verification: asked elsewhere first.
    sent_bad: Vec<u32>,
    /// The pieces it announced last (`have`), newest at the back; kept only
    /// for a p2pft neighbour, which still holds them in memory (see
    /// [`picker::pick_newest`]). Empty for a plain one.
    recent: VecDeque<u32>,
    /// It runs on this machine (a loopback or own address): its pieces cost
    /// disk reads and memory bandwidth here, not a network link.
    same_host: bool,
    /// Pieces it rejected ([`Message::Reject`]): not asked of it again
    /// until the next choking round.
    refused: Vec<u32>,
    /// Pieces handed to its writer and not yet reported written.
    serving: u32,
    /// It left a request unanswered until the stall retry took it back:
    /// asked only for pieces no other neighbour that unchokes us has, until
    /// it answers (a piece or a reject) or unchokes us anew.
    silent: bool,
}

impl Neighbour {
    /// Piece `index` came, or will not come (rejected), on this connection:
    /// one request for it fewer. False when none was outstanding.
    fn answered(&mut self, index: u32) -> bool {
        let Some(count) = self.asked.get_mut(&index) else {
            return false;
        };
        self.silent = false;
        *count -= 1;
        if *count == 0 {
            self.asked.remove(&index);
        }
        true
    }

    /// Requests for piece `index` on this connection not answered yet.
    fn times_asked(&self, index: u32) -> u32 {
        self.asked.get(&index).copied().unwrap_or(0)
    }

    /// Copies of piece `index` whose bytes are in, each an answer.
    fn copies_in(&self, index: u32) -> u32 {
        self.arrived.iter().filter(|&&i| i == index).count() as u32
    }

    /// One copy of piece `index` is in no more; true if one was.
    fn forget_copy(&mut self, index: u32) -> bool {
        let at = self.arrived.iter().position(|&i| i == index);
        at.map(|at| self.arrived.swap_remove(at)).is_some()
    }

    /// After [`Neighbour::answered`]: a copy of piece `index` that is in
    /// while no request for it is left stops counting as an answer (its
    /// check will find it unrequested). True if one did.
    fn drop_unanswering_copy(&mut self, index: u32) -> bool {
        self.copies_in(index) > self.times_asked(index) && self.forget_copy(index)
    }
}

/// Pieces a seed has never sent anyone, and how many: a count, so that no
/// request costs a pass over them.
struct Unserved {
    pieces: Bitfield,
    left: u32,
}

impl Unserved {
    /// Piece `index` goes out: true once every piece has.
    fn sent(&mut self, index: u32) -> bool {
        if self.pieces.has(index) {
            self.pieces.set(index, false);
            self.left -= 1;
        }
        self.left == 0
    }
}

/// What a peer's protocol state starts from.
pub(crate) struct MachineSetup {
    pub me: u32,
    pub config: Config,
    /// Pieces already on disk and good.
    pub have: Bitfield,
    pub counters: Arc<Counters>,
    pub rng_seed: u64,
    /// Progress is recorded durably (a leecher without metadata).
    pub checkpoints: bool,
    /// Pieces a granule when the store gathers small pieces into granules.
    pub granule_pieces: Option<u32>,
    /// How long a peer that dials us and left, not known to have the file,
    /// is waited for once every other peer has it, before the run fails: as
    /// long as a dialler tries to reach a peer (`--connect-timeout`), so that
    /// neither side of a departed peer waits without end
    /// (`Machine::check_departed`).
    pub return_wait: Duration,
    pub now: Instant,
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
    fn new(value: K, now: Instant) -> Unchanged<K> {
        Unchanged {
            value,
            since: now,
            told: false,
        }
    }

    /// How long `value` has stayed as it is, once, when that reaches
    /// `after`; `None` otherwise. A new value starts the clock again.
    fn due(&mut self, value: K, after: Duration, now: Instant) -> Option<Duration> {
        if value != self.value {
            *self = Unchanged::new(value, now);
            return None;
        }
        let unchanged = now.saturating_duration_since(self.since);
        if self.told || unchanged < after {
            return None;
        }
        self.told = true;
        Some(unchanged)
    }
}

/// A peer's protocol state machine (see the module header).
pub(crate) struct Machine {
    me: u32,
    config: Config,
    limits: Limits,
    have: Bitfield,
    /// `have.count()`, kept so that a stored piece costs no scan of the bitfield.
    have_count: u32,
    /// `have_count`, and since when it is what it is ([`Machine::note_stall`]).
    progress: Unchanged<u32>,
    /// Peers without the file and not connected, and since when they are
    /// those ([`Machine::note_waiting`]).
    absent: Unchanged<Vec<u32>>,
    /// Pieces we lack that are neither requested nor being stored.
    wanted: Bitfield,
    /// How many connected neighbours have each piece, sorted (rarest
    /// first, see [`Rarity::pick`]).
    rarity: Rarity,
    /// Pieces we have never sent anyone, if we started with the whole file
    /// and some remain: while a p2pft neighbour on another host lacks one,
    /// we reject its requests for the others (see [`Machine::on_request`]).
    /// None for a leecher: its pieces came from the swarm, which has them
    /// already, and the last pieces a straggler asks it for must not be
    /// refused.
    unserved: Option<Unserved>,
    /// Where [`Machine::next_unserved`] looks first.
    suggest_from: u32,
    /// When [`Machine::retry_stalled`] last asked again.
    retried_at: Option<Instant>,
    neighbours: BTreeMap<u32, Neighbour>,
    /// Peers known to have the complete file (kept after they disconnect).
    complete_peers: BTreeSet<u32>,
    /// Since when each peer is not connected (see [`Machine::known_complete`]).
    unconnected_since: HashMap<u32, Instant>,
    /// Peers whose connection ended other than as the usual end (see
    /// [`RETURN_GRACE`]), and whether it may have been the usual end all
    /// the same: a plain peer, which says no goodbye.
    left_early: BTreeMap<u32, bool>,
    /// When we first knew that every peer has the file.
    everyone_known_at: Option<Instant>,
    /// See [`MachineSetup::return_wait`].
    return_wait: Duration,
    unchoked: BTreeSet<u32>,
    preferred: Vec<u32>,
    optimistic: Option<u32>,
    /// Neighbours unchoked in a spare slot until the next round (see
    /// [`SPARE_SLOTS`]).
    spare: Vec<u32>,
    logged_preferred: Vec<u32>,
    rng: StdRng,
    counters: Arc<Counters>,
    redials: BTreeMap<u32, u32>,
    /// A signal came: no new requests, no redials.
    stopping: bool,
    fatal: Option<EngineError>,
    /// The last piece landed: the final sync and check are under way or done.
    finishing: bool,
    checkpoints: bool,
    /// Pieces were stored since the last checkpoint was started.
    unrecorded: bool,
    checkpoint_generation: u64,
    bad_pieces: BTreeMap<u32, u32>,
    banned: BTreeSet<u32>,
    /// Pieces handed to the disk threads and neither stored nor held yet.
    storing_count: usize,
    /// Pieces received, verified and handed to the disk threads, not yet on
    /// disk: who sent each, and whether the store holds it.
    storing: HashMap<u32, Storing>,
    max_storing: usize,
    /// Extensions (pipelining, early unchoke) are on: not `P2pftStrict`.
    extensions: bool,
    /// Where the choking rounds are (see `check_neighbourhood_whole`).
    rounds: Rounds,
    /// Granules begun, when the store gathers small pieces into them.
    filling: Option<picker::Filling>,
    commands: VecDeque<Command>,
}

impl Machine {
    pub(crate) fn new(setup: MachineSetup) -> Machine {
        let layout = setup.config.common.layout;
        let now = setup.now;
        let unconnected_since = setup.config.peers.iter().map(|p| (p.id, now)).collect();
        let n = layout.num_pieces();
        let mut wanted = Bitfield::full(n);
        for i in setup.have.iter_ones() {
            wanted.set(i, false);
        }
        setup.counters.pieces.store(setup.have.count(), Relaxed);
        let unserved = setup.have.is_complete().then(|| Unserved {
            pieces: Bitfield::full(n),
            left: n,
        });
        let mut rarity = Rarity::new(n);
        setup.have.iter_ones().for_each(|i| rarity.retire(i));
        let mut complete_peers = BTreeSet::new();
        if setup.have.is_complete() {
            complete_peers.insert(setup.me);
        }
        Machine {
            me: setup.me,
            limits: Limits::new(layout),
            extensions: !setup.config.common.strict,
            rounds: Rounds::AwaitingFirst,
            config: setup.config,
            filling: setup.granule_pieces.map(picker::Filling::new),
            finishing: setup.have.is_complete(),
            have_count: setup.have.count(),
            progress: Unchanged::new(setup.have.count(), now),
            absent: Unchanged::new(Vec::new(), now),
            have: setup.have,
            wanted,
            rarity,
            unserved,
            suggest_from: 0,
            retried_at: None,
            neighbours: BTreeMap::new(),
            complete_peers,
            unconnected_since,
            left_early: BTreeMap::new(),
            return_wait: setup.return_wait,
            everyone_known_at: None,
            unchoked: BTreeSet::new(),
            preferred: Vec::new(),
            optimistic: None,
            spare: Vec::new(),
            logged_preferred: Vec::new(),
            rng: StdRng::seed_from_u64(setup.rng_seed),
            counters: setup.counters,
            redials: BTreeMap::new(),
            stopping: false,
            fatal: None,
            checkpoints: setup.checkpoints,
            unrecorded: false,
            checkpoint_generation: 0,
            bad_pieces: BTreeMap::new(),
            banned: BTreeSet::new(),
            storing_count: 0,
            storing: HashMap::new(),
            max_storing: max_storing(layout.piece_size_bytes()),
            commands: VecDeque::new(),
        }
    }

    /// The next thing for the driver to do, oldest first.
    pub(crate) fn poll(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    pub(crate) fn me(&self) -> u32 {
        self.me
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn have(&self) -> &Bitfield {
        &self.have
    }

    #[cfg(test)]
    pub(crate) fn have_count(&self) -> u32 {
        self.have_count
    }

    pub(crate) fn fatal(&self) -> Option<&EngineError> {
        self.fatal.as_ref()
    }

    /// The run's outcome, for the driver at its end.
    pub(crate) fn take_fatal(&mut self) -> Option<EngineError> {
        self.fatal.take()
    }

    /// A fatal error found by the driver (it could not start a neighbour's threads).
    pub(crate) fn fail(&mut self, error: EngineError) {
        self.fatal = Some(error);
    }

    /// Pieces on their way to disk, and of those how many wait for a disk
    /// thread (not held by the store).
    pub(crate) fn storing(&self) -> (usize, usize) {
        (self.storing.len(), self.storing_count)
    }

    /// The generation for a checkpoint the driver writes itself (the last).
    pub(crate) fn next_checkpoint_generation(&mut self) -> u64 {
        self.checkpoint_generation += 1;
        self.checkpoint_generation
    }

    /// What keeps our download going, or would: see [`Demand`].
    pub(crate) fn demand(&self) -> Demand {
        if self.neighbours.values().any(|n| !n.outstanding.is_empty()) {
            return Demand::Asked;
        }
        let mut demand = Demand::NoneHeld;
        for n in self
            .neighbours
            .values()
            .filter(|n| n.has.intersects(&self.wanted))
        {
            if !n.they_choke_us {
                return Demand::HeldBack;
            }
            demand = Demand::Choked;
        }
        demand
    }

    /// How we stand towards `peer`'s pieces now (see [`Asking`]); a
    /// neighbour we do not know holds nothing for us.
    pub(crate) fn asking(&self, peer: u32) -> Asking {
        let Some(n) = self.neighbours.get(&peer) else {
            return Asking::Nothing;
        };
        if !n.outstanding.is_empty() {
            Asking::Asked
        } else if n.they_choke_us {
            Asking::Choked
        } else {
            self.wants_unasked_from(n)
        }
    }

    /// Whether `peer` holds a piece we want and asked nobody for, choked
    /// or not.
    pub(crate) fn could_ask(&self, peer: u32) -> bool {
        self.neighbours
            .get(&peer)
            .is_some_and(|n| self.wants_unasked_from(n) == Asking::CanAsk)
    }

    fn wants_unasked_from(&self, n: &Neighbour) -> Asking {
        if n.has.intersects(&self.wanted) {
            Asking::CanAsk
        } else if n.has.has_any_missing_from(&self.have) {
            Asking::Elsewhere
        } else {
            Asking::Nothing
        }
    }

    /// The neighbours that said they are interested in our pieces, each
    /// with whether we unchoke it.
    pub(crate) fn interested(&self) -> impl Iterator<Item = (u32, bool)> + '_ {
        self.neighbours
            .iter()
            .filter(|(_, n)| n.they_are_interested)
            .map(|(&id, _)| (id, self.unchoked.contains(&id)))
    }

    /// The neighbours we unchoke now.
    #[cfg(test)]
    pub(crate) fn unchoked(&self) -> &BTreeSet<u32> {
        &self.unchoked
    }

    fn push(&mut self, command: Command) {
        self.commands.push_back(command);
    }

    fn say(&mut self, line: SpecLine) {
        self.push(Command::Log(line));
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
    fn known_complete(&self, peer: &PeerEntry, now: Instant) -> bool {
        self.complete_peers.contains(&peer.id)
            || (peer.has_file
                && self
                    .unconnected_since
                    .get(&peer.id)
                    .is_some_and(|&since| now.saturating_duration_since(since) >= SEED_GONE))
    }

    /// We and every peer of PeerInfo.cfg have the whole file, as far as we
    /// know. A peer that leaves then leaves as the usual end (a peer with the
    /// file leaves once it knows everyone has it); any other departure is
    /// worth a warning, a redial (of a peer above us) and a wait for its
    /// return before we end (see [`RETURN_GRACE`]): even a peer that had the
    /// whole file, killed and started again, knows nothing of the others and
    /// must hear from us again.
    fn everyone_complete(&self, now: Instant) -> bool {
        self.have_complete()
            && self
                .config
                .peers
                .iter()
                .all(|p| self.known_complete(p, now))
    }

    /// Every peer has the file and nobody who left early is still awaited:
    /// the run is over.
    pub(crate) fn all_done(&mut self, now: Instant) -> bool {
        if !self.everyone_complete(now) {
            return false;
        }
        let known_at = *self.everyone_known_at.get_or_insert(now);
        self.left_early.iter().all(|(p, &maybe_usual)| {
            self.unconnected_since.get(p).is_none_or(|&left| {
                // A plain peer that left just before we heard the last news
                // had most likely heard it first, and ended as usual.
                (maybe_usual && known_at.saturating_duration_since(left) < USUAL_END_SKEW)
                    || now.saturating_duration_since(left) >= RETURN_GRACE
            })
        })
    }

    /// The first choking round is due now (strict mode, the whole
    /// neighbourhood heard from): it is run, and the driver restarts its
    /// timers from here.
    pub(crate) fn take_round_due(&mut self, now: Instant) -> bool {
        if self.rounds != Rounds::Due {
            return false;
        }
        self.rounds = Rounds::Running;
        self.select_preferred(now);
        self.select_optimistic();
        true
    }

    /// A dialler gave up on `peer`, for the reason `error`.
    pub(crate) fn dial_failed(&mut self, now: Instant, peer: u32, error: BoxedDialFailure) {
        if self.everyone_complete(now) {
            // Nothing more to get from it, nor to tell it.
        } else if !self.complete_peers.contains(&peer) {
            self.fatal = Some(EngineError::Unreachable(error));
        } else if !self.have_complete() {
            // Others may still have what we need: carry on.
            log::warn!("peer {}: {error}", self.me);
        }
    }

    /// A handshake with `peer` succeeded; `conn` is the driver's name for
    /// the connection. `same_host`: it runs on this machine, so its
    /// request-to-piece times measure our CPUs, not a link.
    pub(crate) fn connected(
        &mut self,
        now: Instant,
        peer: u32,
        conn: ConnId,
        dialled: bool,
        pipelining: bool,
        same_host: bool,
    ) {
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
            self.drop_neighbour(now, peer, false);
        }
        self.unconnected_since.remove(&peer);
        self.left_early.remove(&peer);
        // Redials count lost connections in a row: a peer restarted many
        // times (a kill soak, a flaky host) is dialled again each time.
        self.redials.remove(&peer);
        self.say(if dialled {
            SpecLine::MakesConnection(peer)
        } else {
            SpecLine::ConnectedFrom(peer)
        });
        log::info!(
            "peer {}: connected to {peer}, pipelining {}",
            self.me,
            if pipelining { "on" } else { "off" }
        );
        let common = &self.config.common;
        let pacing = Pacing::new(
            common.pipeline_depth,
            u64::from(common.layout.piece_size_bytes()),
            !same_host && common.pipeline_adaptive,
            now,
        );
        self.neighbours.insert(
            peer,
            Neighbour {
                conn,
                has: Bitfield::empty(self.limits.layout().num_pieces()),
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
                since: now,
                pacing,
                arrived: Vec::new(),
                bytes_this_interval: 0,
                written_this_interval: 0,
                declared: false,
                sent_bad: Vec::new(),
                recent: VecDeque::new(),
                same_host,
                refused: Vec::new(),
                serving: 0,
                silent: false,
            },
        );
        if self.have_count > 0 {
            self.send(peer, Message::Bitfield(self.have.clone()));
        }
    }

    /// A frame other than a piece from `peer` on `conn`.
    pub(crate) fn frame(&mut self, now: Instant, conn: ConnId, peer: u32, message: Message) {
        if self.is_current(peer, conn) {
            self.on_message(now, peer, message);
        } else if let Message::Piece { data, .. } = message {
            self.push(Command::Recycle(data));
        }
    }

    /// Whether the end of the connection to `peer` is the usual one, worth
    /// no warning: how its reader saw it (`reason`), or its writer gone
    /// (`None`). After a goodbye, an end of file or a reset (it closed with
    /// our goodbye unread), though the last haves may not have reached us
    /// yet; without one, an end of file or a writer gone once every peer is
    /// known to have the file.
    fn usual_end(&self, now: Instant, peer: u32, reason: Option<&CloseReason>) -> bool {
        let goodbye = self.neighbours.get(&peer).is_some_and(|n| n.said_goodbye);
        match reason {
            None | Some(CloseReason::Eof) => goodbye || self.everyone_complete(now),
            Some(CloseReason::Io(_)) => goodbye,
            Some(CloseReason::Protocol(_)) => false,
        }
    }

    /// The connection ended (its reader saw it).
    pub(crate) fn closed(&mut self, now: Instant, conn: ConnId, peer: u32, reason: CloseReason) {
        if !self.is_current(peer, conn) {
            return;
        }
        if !self.usual_end(now, peer, Some(&reason)) {
            log::warn!("peer {}: connection to {peer} ended: {reason}", self.me);
        }
        // One that broke the protocol would break it again.
        let redial = !matches!(reason, CloseReason::Protocol(_));
        self.drop_neighbour(now, peer, redial);
    }

    /// The connection's writer queue is full (the neighbour stopped reading)
    /// or its writer is gone.
    pub(crate) fn unwritable(&mut self, now: Instant, conn: ConnId, peer: u32, full: bool) {
        if !self.is_current(peer, conn) {
            return;
        }
        if full {
            log::warn!("peer {}: {peer} stopped reading; dropping it", self.me);
        } else if !self.usual_end(now, peer, None) {
            // Its writer saw the connection break before its reader did.
            log::warn!(
                "peer {}: connection to {peer} ended: it cannot be written to",
                self.me
            );
        }
        self.drop_neighbour(now, peer, true);
    }

    /// Queues `message` for `peer`.
    fn send(&mut self, peer: u32, message: Message) {
        if let Some(n) = self.neighbours.get(&peer) {
            let conn = n.conn;
            self.push(Command::Send {
                conn,
                peer,
                message,
            });
        }
    }

    /// Forgets `peer`'s connection; with `redial`, dials it again when
    /// [`Machine::maybe_redial`] says so.
    fn drop_neighbour(&mut self, now: Instant, peer: u32, redial: bool) {
        let Some(n) = self.neighbours.remove(&peer) else {
            return;
        };
        for i in n.has.iter_ones() {
            self.rarity.remove(i);
        }
        self.push(Command::Close { conn: n.conn, peer });
        self.unconnected_since.insert(peer, now);
        // A p2pft neighbour that ends as usual says goodbye first; one that
        // did not was stopped (killed, cut off) and may come back. Of a
        // plain one we can only tell whether everyone was done.
        let usual = n.said_goodbye || (!n.pipelining && self.everyone_complete(now));
        if !usual {
            self.left_early.insert(peer, !n.pipelining);
        }
        if n.pipelining {
            log::debug!("peer {}: {peer}: {}", self.me, n.pacing.summary());
        }
        for index in n.outstanding.into_iter().chain(n.arrived) {
            self.release(index);
        }
        self.spare.retain(|&p| p != peer);
        self.unchoked.remove(&peer);
        let held_slot = self.preferred.contains(&peer) || self.optimistic == Some(peer);
        self.preferred.retain(|&p| p != peer);
        if self.optimistic == Some(peer) {
            self.optimistic = None;
        }
        if held_slot && self.extensions {
            if let Some(next) = self.pick_waiting(|_| true) {
                self.offer_free_slot(next);
            }
        }
        if redial && !usual {
            self.maybe_redial(peer);
        }
        self.fill_requests(now);
    }

    /// A peer we dial that went away before the swarm was done is dialled
    /// again (it may have been restarted): one without the file, or one with
    /// it while we still lack pieces (a seed that crashed and came back
    /// dials nobody: no one else would ever reach it). One that dials us
    /// will dial again itself.
    fn maybe_redial(&mut self, peer: u32) {
        if self.stopping {
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
                self.push(Command::Dial(peer));
            }
        }
    }

    /// Piece `index`'s bytes are here: had, being stored, or in from a
    /// neighbour and being checked. Such a piece is asked for of nobody
    /// again, though a plain neighbour may still owe it (it cannot be told
    /// to cancel).
    fn in_hand(&self, index: u32) -> bool {
        self.have.has(index)
            || self.storing.contains_key(&index)
            || self.neighbours.values().any(|n| n.arrived.contains(&index))
    }

    /// A requested piece that will not come is free to be requested again.
    fn release(&mut self, index: u32) {
        // (In the endgame another neighbour may have been asked for it too.)
        if !self.in_hand(index) && self.askers(index) == 0 {
            self.wanted.set(index, true);
            if let Some(filling) = &mut self.filling {
                filling.reopen(index);
            }
        }
    }

    fn on_message(&mut self, now: Instant, peer: u32, message: Message) {
        if self.flooding(now, peer) {
            return;
        }
        let first = {
            let n = self.neighbours.get_mut(&peer).expect("checked by caller");
            !std::mem::replace(&mut n.heard, true)
        };
        match message {
            Message::Choke => {
                self.say(SpecLine::ChokedBy(peer));
                let n = self.neighbours.get_mut(&peer).expect("present");
                n.they_choke_us = true;
                let lost = std::mem::take(&mut n.outstanding);
                n.pacing.forget();
                if !lost.is_empty() {
                    for index in lost {
                        self.release(index);
                    }
                    self.fill_requests(now);
                }
            }
            Message::Unchoke => {
                self.say(SpecLine::UnchokedBy(peer));
                let n = self.neighbours.get_mut(&peer).expect("present");
                n.they_choke_us = false;
                n.silent = false;
                self.request_from(now, peer);
            }
            Message::Interested => {
                self.say(SpecLine::ReceivedInterested(peer));
                let n = self.neighbours.get_mut(&peer).expect("present");
                n.they_are_interested = true;
                n.declared = true;
                if self.extensions {
                    self.offer_free_slot(peer);
                }
                self.check_neighbourhood_whole();
            }
            Message::NotInterested => {
                self.say(SpecLine::ReceivedNotInterested(peer));
                let n = self.neighbours.get_mut(&peer).expect("present");
                n.they_are_interested = false;
                n.declared = true;
                if self.extensions {
                    self.give_up_slot(peer);
                    self.give_up_spare(peer);
                }
                self.check_neighbourhood_whole();
            }
            Message::Have(index) => {
                self.say(SpecLine::ReceivedHave { from: peer, index });
                let n = self.neighbours.get_mut(&peer).expect("present");
                if !n.has.has(index) {
                    n.has.set(index, true);
                    n.has_count += 1;
                    self.rarity.add(index);
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
                self.after_news(now, peer, interested, false);
            }
            Message::Bitfield(bits) => {
                let n = self.neighbours.get_mut(&peer).expect("present");
                if !first {
                    log::warn!("peer {}: {peer} sent a bitfield late; merging it", self.me);
                }
                for i in bits.iter_ones().filter(|&i| !n.has.has(i)) {
                    self.rarity.add(i);
                }
                n.has.union_with(&bits);
                n.has_count = n.has.count();
                let interested = n.has.has_any_missing_from(&self.have);
                self.after_news(now, peer, interested, first);
            }
            Message::Request(index) => self.on_request(peer, index),
            Message::Reject { index, instead } => {
                let n = self.neighbours.get_mut(&peer).expect("present");
                if !n.pipelining {
                    self.not_negotiated(now, peer, Kind::Reject);
                    return;
                }
                // The request is answered, even one given up on at a choke:
                // the piece is not taken if it comes after all.
                n.answered(index);
                // Bytes of it that came before the reject answer nothing now.
                let was_in = n.drop_unanswering_copy(index);
                match n.outstanding.iter().position(|&i| i == index) {
                    Some(at) => {
                        n.outstanding.swap_remove(at);
                    }
                    None if was_in => {}
                    None => return, // not outstanding: nothing more to undo
                }
                n.pacing.cancel(index);
                if !n.refused.contains(&index) {
                    n.refused.push(index);
                }
                self.release(index);
                log::debug!(
                    "peer {}: {peer} rejected piece {index} for {instead}",
                    self.me
                );
                let n = &self.neighbours[&peer];
                // Not a piece it refused this round (that very one included).
                let take = self.wanted.has(instead) && n.has.has(instead);
                if take && !n.they_choke_us && !n.refused.contains(&instead) {
                    self.request_piece(now, peer, instead);
                }
                self.request_from(now, peer);
            }
            Message::Goodbye => {
                let n = self.neighbours.get_mut(&peer).expect("present");
                if n.pipelining {
                    n.said_goodbye = true;
                } else {
                    self.not_negotiated(now, peer, Kind::Goodbye);
                }
            }
            Message::Piece { data, .. } => {
                debug_assert!(false, "readers report pieces with Machine::piece");
                self.push(Command::Recycle(data));
            }
        }
    }

    /// `peer` sent an extension's message without having negotiated the
    /// extensions: to a plain peer's eyes an unknown type, which ends the
    /// connection.
    fn not_negotiated(&mut self, now: Instant, peer: u32, kind: Kind) {
        let reason = CloseReason::Protocol(WireError::UnknownType(kind as u8));
        log::warn!("peer {}: connection to {peer} ended: {reason}", self.me);
        self.drop_neighbour(now, peer, false);
    }

    /// Counts a frame of `peer`'s; true (and the connection closed) when it
    /// has sent more than [`FRAME_ALLOWANCE`] allows.
    fn flooding(&mut self, now: Instant, peer: u32) -> bool {
        let pieces = u64::from(self.limits.layout().num_pieces());
        let n = self.neighbours.get_mut(&peer).expect("checked by caller");
        n.frames += 1;
        let fixed = FRAME_ALLOWANCE + 4 * pieces;
        if n.frames <= fixed {
            return false;
        }
        let secs = now.saturating_duration_since(n.since).as_secs();
        if n.frames <= fixed + FRAME_RATE * secs {
            return false;
        }
        let frames = n.frames;
        self.violation(peer, Violation::Flood { frames, secs });
        self.drop_neighbour(now, peer, false);
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
    fn after_news(&mut self, now: Instant, peer: u32, interested: bool, always_tell: bool) {
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
        self.request_from(now, peer);
    }

    /// The next piece we never sent that `peer` lacks, going round from
    /// where the last suggestion was, so that neighbours asking at once are
    /// sent different pieces.
    fn next_unserved(&mut self, peer: u32) -> Option<u32> {
        let unserved = &self.unserved.as_ref()?.pieces;
        let n = unserved.len();
        let theirs = &self.neighbours[&peer].has;
        let found = (0..n)
            .map(|k| (self.suggest_from + k) % n)
            .find(|&i| unserved.has(i) && !theirs.has(i))?;
        self.suggest_from = (found + 1) % n;
        // Suggested once: not again until it has been asked for and sent.
        Some(found)
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
        let n = &self.neighbours[&peer];
        // A seed sends each piece once before any twice, where links are
        // what limits the swarm: a piece sent once already is on its way
        // through the swarm, and the requester can have one nobody has.
        if self.extensions
            && n.pipelining
            && !n.same_host
            && self.unserved.as_ref().is_some_and(|u| !u.pieces.has(index))
        {
            if let Some(instead) = self.next_unserved(peer) {
                self.send(peer, Message::Reject { index, instead });
                return;
            }
        }
        let n = self.neighbours.get_mut(&peer).expect("present");
        n.serving += 1;
        let conn = n.conn;
        if self.unserved.as_mut().is_some_and(|u| u.sent(index)) {
            // Every piece went out once: nothing to reject for any more.
            self.unserved = None;
        }
        self.push(Command::Serve { conn, peer, index });
    }

    /// A piece's bytes are in, its SHA-1 not yet checked: its request is
    /// answered, so the next one may go out (SPEC.md: only after the piece
    /// for the previous one arrived). Until its [`Machine::piece`] the
    /// piece is neither outstanding nor wanted, as while it is being stored.
    pub(crate) fn arrived(&mut self, now: Instant, conn: ConnId, peer: u32, index: u32) {
        if !self.is_current(peer, conn) {
            return;
        }
        let n = self.neighbours.get_mut(&peer).expect("present");
        if let Some(at) = n.outstanding.iter().position(|&i| i == index) {
            n.arrived.push(n.outstanding.swap_remove(at));
        } else if n.times_asked(index) > n.copies_in(index) {
            // The answer to a request a choke made us give up on (asked
            // again since, each request may be answered): it is in all the
            // same, and must not be asked for meanwhile.
            n.arrived.push(index);
            if self.wanted.has(index) {
                self.unwant(index);
            }
        }
        self.request_from(now, peer);
    }

    /// A piece from `peer`, checked against its SHA-1 (`good` without metadata).
    pub(crate) fn piece(
        &mut self,
        now: Instant,
        conn: ConnId,
        peer: u32,
        index: u32,
        data: PieceBuf,
        good: bool,
    ) {
        if !self.is_current(peer, conn) {
            self.push(Command::Recycle(data));
            return;
        }
        let n = self.neighbours.get_mut(&peer).expect("present");
        if !n.answered(index) {
            // Never requested on this connection, or answered already: a
            // piece nobody asked for is never stored, counted or announced.
            n.unrequested += 1;
            let count = n.unrequested;
            self.push(Command::Recycle(data));
            self.violation(peer, Violation::UnrequestedPiece { index, count });
            if count >= MAX_UNREQUESTED_PIECES {
                log::warn!(
                    "peer {}: closing the connection to peer {peer}: {count} unrequested pieces",
                    self.me
                );
                self.drop_neighbour(now, peer, false);
            }
            return;
        }
        n.bytes_this_interval += data.len() as u64;
        // (Only a pipelining neighbour has a depth to pace; its pieces come
        // hashed, without an `arrived` first. A plain one's request is
        // forgotten all the same, or its time would be taken for a later
        // request's for the same piece: see `retry_stalled`.)
        if n.pipelining {
            n.pacing.arrived(index, now);
        } else {
            n.pacing.cancel(index);
        }
        self.counters.bytes_in.fetch_add(data.len() as u64, Relaxed);
        n.outstanding.retain(|&i| i != index);
        // This copy is checked (its arrival was reported, if it was: the
        // runtime reports every piece of a neighbour or none); another copy
        // of the piece may still be hashed, if it still answers a request.
        n.forget_copy(index);
        n.drop_unanswering_copy(index);
        // Only pieces from p2pft neighbours are gathered: they come in
        // granule order (see `picker::Filling`), a plain neighbour's at random.
        let gather = n.pipelining;
        if self.have.has(index) || self.storing.contains_key(&index) {
            // A duplicate (a late answer to a request we gave up on).
            self.push(Command::Recycle(data));
            self.request_from(now, peer);
            return;
        }
        if !good {
            self.push(Command::Recycle(data));
            self.request_from(now, peer);
            self.on_bad(now, index, peer);
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
        self.push(Command::Store {
            index,
            data,
            gather,
        });
        self.request_from(now, peer);
    }

    /// Outside strict mode, an interested neighbour gets a free upload slot at
    /// once instead of at the next interval: a preferred one while fewer than
    /// k are preferred, else the optimistic one while there is none.
    fn offer_free_slot(&mut self, peer: u32) {
        if self.unchoked.contains(&peer) || !self.config.common.serve {
            return;
        }
        if self.preferred.len() < self.config.common.preferred_neighbors {
            self.preferred.push(peer);
            self.preferred.sort_unstable();
            self.say(SpecLine::PreferredNeighbors(self.preferred.clone()));
            self.logged_preferred = self.preferred.clone();
        } else if self.optimistic.is_none() {
            self.optimistic = Some(peer);
            self.say(SpecLine::OptimisticNeighbor(peer));
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
    /// sit idle. It is choked, and the slot goes to one of those waiting, at
    /// random. With nobody waiting nothing changes: a neighbour that is
    /// interested again soon keeps its slot.
    fn give_up_slot(&mut self, peer: u32) {
        let preferred = self.preferred.contains(&peer);
        if !preferred && self.optimistic != Some(peer) {
            return;
        }
        let Some(next) = self.pick_waiting(|_| true) else {
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

    /// `peer`'s writer has written a piece we served (handed it to the
    /// socket). When no writer has one left, our upload is about to idle:
    /// outside strict mode one more p2pft neighbour on another host that
    /// wants our pieces is unchoked, up to [`SPARE_SLOTS`] until the next
    /// round. Waiting for the round would leave the link idle; a slot for
    /// every interested neighbour would share the link so widely that each
    /// piece arrives late (docs/PROTOCOL.md, "Spare upload slots").
    pub(crate) fn served(&mut self, conn: ConnId, peer: u32) {
        if !self.is_current(peer, conn) {
            return;
        }
        let n = self.neighbours.get_mut(&peer).expect("current");
        if n.serving == 0 {
            return;
        }
        n.serving -= 1;
        n.written_this_interval += 1;
        if !self.extensions
            || !self.config.common.serve
            || self.stopping
            || self.spare.len() >= SPARE_SLOTS
            || self.neighbours.values().any(|m| m.serving > 0)
        {
            return;
        }
        if let Some(next) = self.pick_waiting(|n| n.pipelining && !n.same_host) {
            self.spare.push(next);
            self.apply_choking();
        }
    }

    /// A neighbour in a spare slot that is no longer interested leaves it.
    fn give_up_spare(&mut self, peer: u32) {
        if self.spare.contains(&peer) {
            self.spare.retain(|&p| p != peer);
            self.apply_choking();
        }
    }

    /// An interested neighbour left choked that `also` accepts, at random
    /// (as the optimistic pick is), if there is one.
    fn pick_waiting(&mut self, also: impl Fn(&Neighbour) -> bool) -> Option<u32> {
        let waiting: Vec<u32> = self
            .neighbours
            .iter()
            .filter(|(id, n)| n.they_are_interested && !self.unchoked.contains(id) && also(n))
            .map(|(id, _)| *id)
            .collect();
        waiting.choose(&mut self.rng).copied()
    }

    /// With the early unchoke off (`--strict`), the first choking round need
    /// not wait for the first tick: once every other peer of PeerInfo.cfg is
    /// connected and has either said whether it is interested or has the
    /// whole file (so never will be), the round is due at once
    /// ([`Machine::take_round_due`]) and the driver restarts both timers, so
    /// rounds still come every p (and m) seconds, from here. SPEC.md fixes
    /// the period, not the phase.
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
    fn on_bad(&mut self, now: Instant, index: u32, from: u32) {
        self.release(index);
        if self.banned.contains(&from) {
            // Received before the ban, verified after it: not a new strike.
            log::warn!(
                "peer {}: piece {index} from banned peer {from} failed SHA-1 verification too; dropped",
                self.me
            );
            self.fill_requests(now);
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
            self.drop_neighbour(now, from, false);
        }
        self.fill_requests(now);
    }

    /// A piece is held by the store: it no longer counts against
    /// [`max_storing`] (the store bounds what it holds).
    pub(crate) fn held(&mut self, now: Instant, index: u32) {
        let Some(storing) = self.storing.get_mut(&index) else {
            return; // stored already
        };
        if !std::mem::replace(&mut storing.held, true) && self.leave_disk_queue() {
            self.fill_requests(now);
        }
    }

    /// One piece fewer waits for the disk threads; true when requests had
    /// stopped for them (see [`max_storing`]).
    fn leave_disk_queue(&mut self) -> bool {
        let was_full = self.storing_count >= self.max_storing;
        self.storing_count -= 1;
        was_full
    }

    /// A verified piece was written (or failed to be).
    pub(crate) fn stored(&mut self, now: Instant, index: u32, result: io::Result<()>) {
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
        self.rarity.retire(index);
        self.have_count += 1;
        self.unrecorded = true;
        let count = self.have_count;
        self.counters.pieces.store(count, Relaxed);
        self.say(SpecLine::DownloadedPiece { index, from, count });
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
            self.fill_requests(now);
        }
        if self.have_complete() && !self.finishing {
            self.finishing = true;
            self.push(Command::Finish);
        }
    }

    /// The complete file was synced and has its full length (or not: why).
    /// Only now is it complete.
    pub(crate) fn finished(&mut self, result: Result<(), FinishError>) {
        match result {
            Ok(()) => {
                self.complete_peers.insert(self.me);
                self.counters.set_complete();
                self.say(SpecLine::Complete);
                self.checkpoint();
            }
            Err(e) => self.fatal = Some(EngineError::Integrity(e)),
        }
    }

    /// A progress checkpoint was written (or failed).
    pub(crate) fn checkpointed(&mut self, result: io::Result<()>) {
        if let Err(e) = result {
            self.fatal = Some(EngineError::Disk(e));
        }
    }

    /// Held pieces could not be written.
    pub(crate) fn write_failed(&mut self, error: io::Error) {
        self.fatal = Some(EngineError::Disk(error));
    }

    /// SIGINT or SIGTERM (or a status reader gone): stop cleanly. No new
    /// requests, no redials; the driver lands what is in flight.
    pub(crate) fn interrupt(&mut self, signal: i32) {
        self.stopping = true;
        self.fatal = Some(EngineError::Interrupted {
            signal,
            recorded: None,
        });
    }

    /// After an interrupt: what a leecher kept for its next run, said in
    /// the error.
    pub(crate) fn note_recorded(&mut self) {
        let seed = self
            .config
            .peers
            .iter()
            .any(|p| p.id == self.me && p.has_file);
        if let Some(EngineError::Interrupted { recorded, .. }) = &mut self.fatal {
            if !seed {
                *recorded = Some((self.have_count, self.have.len()));
            }
        }
    }

    /// The checkpoint timer: held pieces of idle granules go to disk, and
    /// progress is recorded if pieces landed since the last record.
    pub(crate) fn checkpoint_tick(&mut self) {
        self.write_held(true);
        self.checkpoint();
    }

    /// Asks for the pieces the store holds to be written: all, or with
    /// `idle_only` those whose granules got nothing new since the last tick.
    pub(crate) fn write_held(&mut self, idle_only: bool) {
        if self.filling.is_some() && !self.storing.is_empty() {
            self.push(Command::WriteHeld { idle_only });
        }
    }

    /// Asks for a progress checkpoint when pieces landed since the last.
    fn checkpoint(&mut self) {
        if !self.checkpoints || !self.unrecorded {
            return;
        }
        self.unrecorded = false;
        let generation = self.next_checkpoint_generation();
        let have = self.have.clone();
        self.push(Command::Checkpoint { generation, have });
    }

    /// Requests random wanted pieces from `peer` while it unchokes us, up to
    /// the pipeline depth (1 with a plain peer, as SPEC.md says; more where
    /// its link needs more, see [`crate::policy::pacing`], while all neighbours
    /// together have less than [`MAX_IN_FLIGHT_BYTES`] of pieces asked for),
    /// and while fewer than [`max_storing`] pieces wait for the disk.
    fn request_from(&mut self, now: Instant, peer: u32) {
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
            let in_flight = || self.asked_total() as u64 * piece;
            if n.they_choke_us
                || n.outstanding.len() >= limit
                || (n.outstanding.len() >= depth && in_flight() >= MAX_IN_FLIGHT_BYTES)
                || self.storing_count >= self.max_storing
                || self.stopping
                || !(self.request_one(now, peer) || self.endgame_one(now, peer))
            {
                return;
            }
        }
    }

    /// Requests one wanted piece from `peer` (see [`picker`] for which); false
    /// when it has none.
    fn request_one(&mut self, now: Instant, peer: u32) -> bool {
        let neighbours = &self.neighbours;
        let n = &neighbours[&peer];
        let pick = if n.silent {
            // Only what no neighbour that answers can send us.
            let mut only_here = self.wanted.clone();
            let answering = neighbours
                .iter()
                .filter(|&(&id, m)| id != peer && !m.silent && !m.they_choke_us);
            for (_, m) in answering {
                only_here.remove_all(&m.has);
            }
            picker::pick_random(&n.has, &only_here, &mut self.rng)
        } else if n.sent_bad.is_empty() && n.pipelining && !n.same_host {
            // Across a network link, what limits the swarm is the links:
            // each piece should reach the swarm once from the seed and
            // then spread, so a piece few neighbours have comes first.
            let refused;
            let wanted = if n.refused.is_empty() {
                &self.wanted
            } else {
                let mut w = self.wanted.clone();
                for &i in &n.refused {
                    w.set(i, false);
                }
                refused = w;
                &refused
            };
            picker::pick_newest(&n.recent, wanted)
                .or_else(|| self.rarity.pick(&n.has, wanted, &mut self.rng))
        } else if n.sent_bad.is_empty() && n.pipelining {
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
        self.request_piece(now, peer, index);
        true
    }

    /// The endgame, outside strict mode: when `peer` has nothing we want
    /// that nobody was asked for, and we lack no more pieces than are asked
    /// of neighbours (the download's last pieces), the piece that has been
    /// awaited longest from another neighbour, at least [`ENDGAME_AFTER`],
    /// is asked of `peer` too, if it has it. One connection whose packets
    /// were lost waits out TCP's doubling timeouts, a second to several,
    /// while every other neighbour could send the piece at once; the copy
    /// that comes second is dropped. False when there is no such piece, and
    /// for a silent `peer` (it would take the place of one that answers).
    fn endgame_one(&mut self, now: Instant, peer: u32) -> bool {
        let n = &self.neighbours[&peer];
        if !self.extensions || n.they_choke_us || n.silent {
            return false;
        }
        let missing = self.have.len() - self.have_count - self.storing.len() as u32;
        if missing == 0 || missing as usize > self.asked_total() {
            return false;
        }
        let oldest = self
            .neighbours
            .iter()
            .filter(|(&id, _)| id != peer)
            .flat_map(|(_, m)| {
                m.outstanding
                    .iter()
                    .filter_map(|&i| m.pacing.asked_at(i).map(|at| (at, i)))
            })
            .filter(|&(at, i)| {
                now.saturating_duration_since(at) >= ENDGAME_AFTER
                    && !self.in_hand(i)
                    && n.has.has(i)
                    && !n.sent_bad.contains(&i)
                    && self.askers(i) == 1
            })
            .min();
        let Some((_, index)) = oldest else {
            return false;
        };
        log::debug!(
            "peer {}: piece {index} awaited for {ENDGAME_AFTER:?} or more: asking {peer} too",
            self.me
        );
        self.request_piece(now, peer, index);
        true
    }

    /// Requests out to all neighbours together.
    fn asked_total(&self) -> usize {
        self.neighbours.values().map(|n| n.outstanding.len()).sum()
    }

    /// Neighbours asked for piece `index` and not answered yet (two at most,
    /// in the endgame).
    fn askers(&self, index: u32) -> usize {
        self.neighbours
            .values()
            .filter(|n| n.outstanding.contains(&index))
            .count()
    }

    /// Asks `peer` for piece `index`.
    fn request_piece(&mut self, now: Instant, peer: u32, index: u32) {
        let n = self.neighbours.get_mut(&peer).expect("checked by caller");
        n.outstanding.push(index);
        *n.asked.entry(index).or_insert(0) += 1;
        n.pacing.requested(index, now);
        self.unwant(index);
        self.send(peer, Message::Request(index));
    }

    /// Piece `index` is no longer to be asked for: it is asked of a
    /// neighbour, or its bytes are in ([`Machine::release`] undoes it).
    fn unwant(&mut self, index: u32) {
        if let Some(filling) = &mut self.filling {
            filling.begun(index);
        }
        self.wanted.set(index, false);
    }

    /// Tops up the requests of every unchoking neighbour (after pieces were freed).
    fn fill_requests(&mut self, now: Instant) {
        let idle: Vec<u32> = self
            .neighbours
            .iter()
            .filter(|(_, n)| !n.they_choke_us)
            .map(|(&id, _)| id)
            .collect();
        for peer in idle {
            self.request_from(now, peer);
        }
    }

    /// The neighbours the choking rounds choose among: none for a peer that
    /// does not serve (`--leech-only`). A neighbour's rate is what it sent
    /// us (SPEC.md), except, outside strict mode, a p2pft neighbour on
    /// another host's: what we sent it. The rounds then keep the slots of
    /// neighbours that keep asking and whose links take our pieces fast,
    /// and change fewer slots, each new one idle until its first request
    /// comes (docs/PERFORMANCE.md, "Preferred by what they take").
    fn stats(&self) -> Vec<NeighbourStats> {
        if !self.config.common.serve {
            return Vec::new();
        }
        let piece = u64::from(self.config.common.layout.piece_size_bytes());
        self.neighbours
            .iter()
            .map(|(&id, n)| NeighbourStats {
                id,
                interested: n.they_are_interested,
                bytes: if self.extensions && n.pipelining && !n.same_host {
                    n.written_this_interval * piece
                } else {
                    n.bytes_this_interval
                },
            })
            .collect()
    }

    /// The unchoking interval (p): preferred neighbours chosen again, and
    /// the stall and waiting notices looked at.
    pub(crate) fn rechoke(&mut self, now: Instant) {
        self.rounds = Rounds::Running;
        // Pieces a neighbour rejected may be asked of it again: ask, as no
        // other event may come from it (a seed that has sent everything).
        let refused: Vec<u32> = self
            .neighbours
            .iter_mut()
            .filter(|(_, n)| !n.refused.is_empty())
            .map(|(&peer, n)| {
                n.refused.clear();
                peer
            })
            .collect();
        self.recover_lost_pieces();
        for peer in refused {
            self.request_from(now, peer);
        }
        // A piece awaited too long is asked of another neighbour even when
        // nothing else comes in (see `endgame_one`).
        if !self.have_complete() {
            self.fill_requests(now);
        }
        self.select_preferred(now);
        self.note_stall(now);
        self.note_waiting(now);
        self.check_departed(now);
    }

    /// The optimistic unchoking interval (m).
    pub(crate) fn reoptimise(&mut self) {
        self.select_optimistic();
    }

    fn select_preferred(&mut self, _now: Instant) {
        // Spare slots last a round: the rates decide again.
        self.spare.clear();
        let stats = self.stats();
        self.preferred = choke::select_preferred(
            &stats,
            self.config.common.preferred_neighbors,
            self.have_complete(),
            &mut self.rng,
        );
        for n in self.neighbours.values_mut() {
            n.bytes_this_interval = 0;
            n.written_this_interval = 0;
        }
        if !self.preferred.is_empty() && self.preferred != self.logged_preferred {
            self.say(SpecLine::PreferredNeighbors(self.preferred.clone()));
            self.logged_preferred = self.preferred.clone();
        }
        self.apply_choking();
    }

    /// A leecher that has had no new piece for [`STALL_NOTICE`] takes back
    /// every request unanswered for that long and asks again (a late answer
    /// is still taken), once each [`STALL_NOTICE`]: a request that a
    /// neighbour will never answer must not hold the swarm up for good. A
    /// younger request is left out: taking back one just sent (this round's)
    /// would only ask again, and a plain neighbour would owe two.
    fn retry_stalled(&mut self, now: Instant) {
        let stalled = now.saturating_duration_since(self.progress.since) >= STALL_NOTICE
            && self.progress.value == self.have_count;
        let due = self
            .retried_at
            .is_none_or(|at| now.saturating_duration_since(at) >= STALL_NOTICE);
        if self.have_complete() || !stalled || !due {
            return;
        }
        self.retried_at = Some(now);
        let mut taken = Vec::new();
        for (&peer, n) in &mut self.neighbours {
            let pacing = &n.pacing;
            let old = |i: &u32| {
                pacing
                    .asked_at(*i)
                    .is_none_or(|at| now.saturating_duration_since(at) >= STALL_NOTICE)
            };
            let (old, young): (Vec<u32>, Vec<u32>) = n.outstanding.iter().partition(|i| old(i));
            if !old.is_empty() {
                for &i in &old {
                    n.pacing.cancel(i);
                }
                n.outstanding = young;
                n.silent = true;
                taken.push((peer, old));
            }
        }
        if !taken.is_empty() {
            log::warn!(
                "peer {}: requests unanswered while no piece came: {taken:?} (neighbour, pieces); asking again",
                self.me
            );
        }
        for index in taken.into_iter().flat_map(|(_, pieces)| pieces) {
            self.release(index);
        }
        self.fill_requests(now);
    }

    /// Pieces we lack that are neither wanted, asked of a neighbour, on
    /// their way in nor being stored would never be asked for again: a
    /// swarm that never ends. Each becomes wanted again, with a warning, as
    /// it means a path of the protocol lost track of it.
    fn recover_lost_pieces(&mut self) {
        let lost = self.unaccounted();
        for &i in &lost {
            self.wanted.set(i, true);
        }
        if !lost.is_empty() {
            log::warn!(
                "peer {}: pieces {lost:?} were neither wanted nor asked for; asking again",
                self.me
            );
        }
    }

    /// Pieces we lack that are neither wanted, asked of a neighbour, in
    /// nor being stored: none, unless a path of the protocol lost track.
    fn unaccounted(&self) -> Vec<u32> {
        if self.have_complete() || self.wanted.count() + self.have_count == self.have.len() {
            return Vec::new();
        }
        let mut accounted = self.have.clone();
        accounted.union_with(&self.wanted);
        let in_flight = self
            .neighbours
            .values()
            .flat_map(|n| n.outstanding.iter().chain(&n.arrived));
        for &i in in_flight.chain(self.storing.keys()) {
            accounted.set(i, true);
        }
        (0..self.have.len())
            .filter(|&i| !accounted.has(i))
            .collect()
    }

    /// Says once, when a leecher has gone [`STALL_NOTICE`] without a new
    /// piece, what it waits for: which neighbours are connected and whether
    /// any has a piece it lacks (none: a seed gone, or the swarm without
    /// one), what it asked of whom and who chokes it. Said again after
    /// pieces came in between. First, asks again if it is stalled.
    fn note_stall(&mut self, now: Instant) {
        self.retry_stalled(now);
        let Some(stalled) = self.progress.due(self.have_count, STALL_NOTICE, now) else {
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
                let has = if some { "has some" } else { "has none" };
                let chokes = if n.they_choke_us {
                    "chokes us"
                } else {
                    "unchokes us"
                };
                match n.outstanding.as_slice() {
                    [] => format!("{id} ({has}, {chokes})"),
                    asked => format!("{id} ({has}, {chokes}, asked for {asked:?})"),
                }
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
    fn note_waiting(&mut self, now: Instant) {
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
        let Some(waited) = self.absent.due(absent.clone(), STALL_NOTICE, now) else {
            return;
        };
        if absent.is_empty() {
            return;
        }
        let ids: Vec<String> = absent.iter().map(u32::to_string).collect();
        log::info!(
            target: crate::support::process::NOTE,
            "peer {}: has the whole file, and has waited {} s for peers that are not connected: {} (every peer must have the file before any ends)",
            self.me,
            waited.as_secs(),
            ids.join(", ")
        );
    }

    /// Once we have the file and every other peer is known to have it too,
    /// but for peers that left early and are not connected: a peer listed
    /// after us (it dials us; we never dial it) that has stayed away for
    /// [`MachineSetup::return_wait`] ends the run as a failure. The swarm
    /// cannot end as usual without it, and a peer listed before us that did
    /// the same fails our dialler after as long (`dial_failed`). Without
    /// this a peer would wait for it without end. While any other peer
    /// still lacks the file we stay: it may need our pieces.
    fn check_departed(&mut self, now: Instant) {
        if self.fatal.is_some() || self.stopping || !self.have_complete() {
            return;
        }
        let me = self.config.position(self.me);
        let mut gone = None;
        for p in &self.config.peers {
            if p.id == self.me || self.known_complete(p, now) {
                continue;
            }
            // Left early and not back: what `unconnected_since` counts from.
            let left = self
                .unconnected_since
                .get(&p.id)
                .filter(|_| self.left_early.contains_key(&p.id));
            match left {
                None => return, // connected, or never was: still to finish
                Some(&left)
                    if self.config.position(p.id) > me
                        && now.saturating_duration_since(left) >= self.return_wait =>
                {
                    gone.get_or_insert(p.id);
                }
                Some(_) => {}
            }
        }
        if let Some(peer) = gone {
            self.fatal = Some(EngineError::Departed {
                peer,
                waited: self.return_wait,
            });
        }
    }

    fn select_optimistic(&mut self) {
        let stats = self.stats();
        let chosen =
            choke::select_optimistic(&stats, &self.preferred, self.optimistic, &mut self.rng);
        if let Some(id) = chosen.filter(|&id| Some(id) != self.optimistic) {
            self.say(SpecLine::OptimisticNeighbor(id));
        }
        self.optimistic = chosen;
        self.apply_choking();
    }

    fn apply_choking(&mut self) {
        let mut kept = self.preferred.clone();
        kept.extend(&self.spare);
        let plan = choke::plan(&self.unchoked, &kept, self.optimistic);
        for peer in plan.choke {
            self.unchoked.remove(&peer);
            self.send(peer, Message::Choke);
        }
        for peer in plan.unchoke {
            self.unchoked.insert(peer);
            self.send(peer, Message::Unchoke);
        }
    }

    /// The run is over: a goodbye to each p2pft neighbour when it ends as
    /// usual (no crash to wait for); the driver then closes every
    /// connection once its writer has flushed.
    pub(crate) fn end(&mut self) {
        self.stopping = true;
        let usual_end = self.fatal.is_none();
        let neighbours = std::mem::take(&mut self.neighbours);
        for (peer, n) in neighbours {
            if n.pipelining {
                log::debug!("peer {}: {peer}: {}", self.me, n.pacing.summary());
                if usual_end {
                    self.push(Command::Send {
                        conn: n.conn,
                        peer,
                        message: Message::Goodbye,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod tests;
