//! The protocol core against neighbours that send anything the wire layer
//! lets through, in any order, with a runtime that answers its commands
//! late, out of order or with errors, and checks a piece's bytes while
//! other events come: generated runs (proptest) on a virtual clock, for
//! files of 1, 2, 5 and 12 pieces. Owns no fixed script (those are in
//! `tests.rs`) and checks only what must hold whatever the neighbours do.
//! The core never panics. It asks a neighbour only for pieces the
//! neighbour announced and we neither have nor have the bytes of, and a
//! plain neighbour for one piece at a time (SPEC.md; a stalled leecher's
//! retry aside). It serves only pieces we have, to a neighbour we last
//! told `unchoke`. It sends only on a neighbour's current, open
//! connection, and `reject` or `goodbye` only to p2pft neighbours. It
//! stores only pieces it asked for on that connection that passed their
//! check, and counts each piece and its completion once. Between events it
//! loses track of no piece it lacks, and what it keeps for a neighbour
//! stays within the file's pieces however long the neighbour goes on.
//! After any run, an honest seed brings it the file, and (once the
//! generated neighbours are gone or not interested) an honest leecher gets
//! from it every piece it has.
//! `PROPTEST_CASES=200000` runs a longer search.

use super::tests::PIECE;
use super::*;
use proptest::prelude::*;

/// Pieces the generated frames name; a run's file has this many or fewer
/// (see [`fit`]).
const PIECES: u32 = 12;
/// We are peer 4 of PeerInfo.cfg's 1..=6 (1 the seed, never connected
/// here): we dial 2 and 3, and 5 and 6 dial us.
const ME: u32 = 4;
const NEIGHBOURS: [u32; 4] = [2, 3, 5, 6];

#[derive(Debug, Clone)]
enum Op {
    Connect {
        peer: u32,
        pipelining: bool,
        same_host: bool,
        announces: bool,
    },
    /// A frame on the peer's current connection, or on a stale one.
    Frame {
        peer: u32,
        message: Message,
        stale: bool,
    },
    /// A piece's bytes in, then its check (`good`). `asked`: instead of
    /// `peer` and `index`, the request outstanding that `index` selects,
    /// if any (so that most runs get pieces in).
    Piece {
        peer: u32,
        index: u32,
        good: bool,
        asked: bool,
    },
    /// A piece's bytes in (chosen as `Piece` chooses), its check still to
    /// come: the runtime hashes it while other events are handled.
    Arrive {
        peer: u32,
        index: u32,
        asked: bool,
    },
    /// The check of the `n`th piece still being hashed comes (`good`).
    Check {
        n: usize,
        good: bool,
    },
    Close {
        peer: u32,
        reason: u8,
    },
    Unwritable {
        peer: u32,
        full: bool,
    },
    Served {
        peer: u32,
    },
    Advance {
        millis: u64,
    },
    Rechoke,
    Reoptimise,
    /// The runtime answers `n` of the commands it holds, the oldest first;
    /// `fail`: a store, checkpoint or finish reports an error; `hold`: the
    /// store holds the piece in memory, to write it later.
    Answer {
        n: usize,
        fail: bool,
        hold: bool,
    },
    CheckpointTick,
    WriteHeld {
        idle_only: bool,
    },
    /// The peer is told to stop (a run has at most one, halfway).
    Interrupt,
}

fn index() -> impl Strategy<Value = u32> {
    // In range: the wire layer lets no other index through.
    0..PIECES
}

fn peer() -> impl Strategy<Value = u32> {
    proptest::sample::select(&NEIGHBOURS[..])
}

fn message() -> impl Strategy<Value = Message> {
    // Weighted towards what lets pieces flow, so that runs get far.
    prop_oneof![
        1 => Just(Message::Choke),
        3 => Just(Message::Unchoke),
        2 => Just(Message::Interested),
        1 => Just(Message::NotInterested),
        3 => index().prop_map(Message::Have),
        2 => proptest::collection::vec(any::<bool>(), PIECES as usize).prop_map(|bits| {
            let mut b = Bitfield::empty(PIECES);
            for (i, set) in bits.into_iter().enumerate() {
                b.set(i as u32, set);
            }
            Message::Bitfield(b)
        }),
        2 => Just(Message::Bitfield(Bitfield::full(PIECES))),
        3 => index().prop_map(Message::Request),
        1 => Just(Message::Goodbye),
        1 => (index(), index()).prop_map(|(index, instead)| Message::Reject { index, instead }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (peer(), any::<bool>(), any::<bool>(), proptest::bool::weighted(0.7)).prop_map(
            |(peer, pipelining, same_host, announces)| Op::Connect {
                peer,
                pipelining,
                same_host,
                announces,
            }
        ),
        10 => (peer(), message(), proptest::bool::weighted(0.05))
            .prop_map(|(peer, message, stale)| Op::Frame { peer, message, stale }),
        12 => (
            peer(),
            index(),
            proptest::bool::weighted(0.9),
            proptest::bool::weighted(0.8),
        )
            .prop_map(|(peer, index, good, asked)| Op::Piece {
                peer,
                index,
                good,
                asked,
            }),
        4 => (peer(), index(), proptest::bool::weighted(0.8))
            .prop_map(|(peer, index, asked)| Op::Arrive { peer, index, asked }),
        4 => (0usize..8, proptest::bool::weighted(0.9)).prop_map(|(n, good)| Op::Check { n, good }),
        1 => (peer(), 0u8..3).prop_map(|(peer, reason)| Op::Close { peer, reason }),
        1 => (peer(), any::<bool>()).prop_map(|(peer, full)| Op::Unwritable { peer, full }),
        2 => peer().prop_map(|peer| Op::Served { peer }),
        3 => (0u64..3_000).prop_map(|millis| Op::Advance { millis }),
        2 => Just(Op::Rechoke),
        1 => Just(Op::Reoptimise),
        4 => (1usize..8, proptest::bool::weighted(0.005), proptest::bool::weighted(0.2))
            .prop_map(|(n, fail, hold)| Op::Answer { n, fail, hold }),
        1 => Just(Op::CheckpointTick),
        1 => any::<bool>().prop_map(|idle_only| Op::WriteHeld { idle_only }),
    ]
}

/// A run: the machine, what the harness knows of each connection, and the
/// commands the runtime has not answered yet.
struct Run {
    pieces: u32,
    meta: bool,
    /// The store gathers pieces into granules: only then may it hold one.
    granules: bool,
    m: Machine,
    now: Instant,
    /// Every connection made, numbered from 1 in order: a peer's current
    /// one is its last.
    links: BTreeMap<ConnId, Link>,
    /// Requests we sent, by connection, and how many times each, not yet
    /// answered by a piece or a reject.
    asked: BTreeMap<(ConnId, u32), u32>,
    /// Stores, writes of held pieces, checkpoints and finishes not answered
    /// yet.
    pending: Vec<Command>,
    /// When the have count last grew (or the run began).
    progress_at: Instant,
    /// The peer is spec-strict.
    strict: bool,
    /// Pieces reported arrived and not yet checked, oldest first: their
    /// connection, sender, index, and whether the arrival answered a
    /// request.
    checking: Vec<Hashing>,
    /// `Machine::end` was called: the core forgot its neighbours.
    ended: bool,
    have_count: u32,
    downloaded: BTreeSet<u32>,
    complete_logged: bool,
    /// Pieces we served the honest leecher ([`HONEST`]) that its runtime has
    /// not sent yet, and requests of it we rejected: by connection.
    to_honest: Vec<(ConnId, ToHonest)>,
}

/// What the honest leecher gets from us: a piece, or a reject.
#[derive(Clone, Copy)]
enum ToHonest {
    Piece(u32),
    Reject { index: u32, instead: u32 },
}

/// A piece whose bytes are in and whose check has not come.
#[derive(Clone, Copy)]
struct Hashing {
    conn: ConnId,
    peer: u32,
    index: u32,
    answered: bool,
}

impl Hashing {
    /// It is a copy of piece `index` on `conn` that the core counts as in.
    fn answers(&self, conn: ConnId, index: u32) -> bool {
        self.answered && self.conn == conn && self.index == index
    }
}

/// What the harness knows of one connection.
struct Link {
    peer: u32,
    /// What the peer announced on it (bitfield and haves).
    announced: Bitfield,
    /// To a plain neighbour (no extensions negotiated): the requests out
    /// since its last choke.
    plain_out: Option<u32>,
    /// We last said `unchoke` on it.
    unchoking: bool,
    /// The core closed it.
    closed: bool,
    /// The runtime reports each piece's arrival on it before its check
    /// (as for a plain neighbour with metadata, and in `sim`), or none.
    announces: bool,
    /// What we announced on it (bitfield and haves).
    told: Bitfield,
}

fn config(strict: bool, k: usize, pieces: u32) -> Config {
    let peers: Vec<(u32, bool)> = (1..=6).map(|id| (id, id == 1)).collect();
    // A short last piece.
    let file_size = u64::from(pieces) * u64::from(PIECE) - 1000;
    super::tests::config(&peers, k, strict, file_size, (1, 2))
}

/// How a run's peer starts.
#[derive(Debug, Clone)]
struct Start {
    strict: bool,
    k: usize,
    /// The pieces it has.
    have: Vec<bool>,
    seed: u64,
    /// Pieces are checked against metadata (else each is good, and
    /// progress is recorded in checkpoints).
    meta: bool,
    /// The store gathers pieces into granules of 4.
    granules: bool,
    /// Pieces of the file: 1 to [`PIECES`].
    pieces: u32,
}

/// A frame generated for [`PIECES`] pieces, for a file of `pieces`: piece
/// indexes wrap round, bitfields keep their first bits.
fn fit(message: Message, pieces: u32) -> Message {
    match message {
        Message::Have(i) => Message::Have(i % pieces),
        Message::Request(i) => Message::Request(i % pieces),
        Message::Reject { index, instead } => Message::Reject {
            index: index % pieces,
            instead: instead % pieces,
        },
        Message::Bitfield(b) => {
            let mut fitted = Bitfield::empty(pieces);
            (0..pieces).for_each(|i| fitted.set(i, b.has(i)));
            Message::Bitfield(fitted)
        }
        other => other,
    }
}

fn start() -> impl Strategy<Value = Start> {
    let have = prop_oneof![
        9 => proptest::collection::vec(proptest::bool::weighted(0.2), PIECES as usize),
        1 => Just(vec![true; PIECES as usize]),
    ];
    (
        proptest::bool::weighted(0.25),
        1usize..4,
        have,
        any::<u64>(),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![5 => Just(PIECES), 1 => Just(1), 1 => Just(2), 1 => Just(5)],
    )
        .prop_map(|(strict, k, have, seed, meta, granules, pieces)| Start {
            strict,
            k,
            have,
            seed,
            meta,
            granules,
            pieces,
        })
}

impl Run {
    fn new(start: &Start) -> Run {
        let mut have = Bitfield::empty(start.pieces);
        for (i, &set) in start.have.iter().take(start.pieces as usize).enumerate() {
            have.set(i as u32, set);
        }
        let have_count = have.count();
        let now = Instant::now();
        let m = Machine::new(MachineSetup {
            me: ME,
            config: config(start.strict, start.k, start.pieces),
            checkpoints: !start.meta && have_count < start.pieces,
            have,
            counters: Arc::new(Counters::default()),
            rng_seed: start.seed,
            granule_pieces: start.granules.then_some(4),
            return_wait: Duration::from_secs(30),
            now,
        });
        Run {
            pieces: start.pieces,
            meta: start.meta,
            granules: start.granules,
            m,
            now,
            links: BTreeMap::new(),
            asked: BTreeMap::new(),
            pending: Vec::new(),
            checking: Vec::new(),
            ended: false,
            strict: start.strict,
            progress_at: now,
            have_count,
            downloaded: BTreeSet::new(),
            complete_logged: false,
            to_honest: Vec::new(),
        }
    }

    /// Requests for `index` on `conn` not answered yet.
    fn times_asked(&self, conn: ConnId, index: u32) -> usize {
        self.asked.get(&(conn, index)).map_or(0, |&n| n as usize)
    }

    /// A request for `index` on `conn` is answered: false if none was out.
    fn answer(&mut self, conn: ConnId, index: u32) -> bool {
        let Some(count) = self.asked.get_mut(&(conn, index)) else {
            return false;
        };
        *count -= 1;
        if *count == 0 {
            self.asked.remove(&(conn, index));
        }
        true
    }

    /// `peer`'s connections, oldest first.
    fn conns_of(&self, peer: u32) -> impl DoubleEndedIterator<Item = ConnId> + '_ {
        self.links
            .iter()
            .filter(move |(_, l)| l.peer == peer)
            .map(|(&c, _)| c)
    }

    fn current(&self, peer: u32) -> Option<ConnId> {
        self.conns_of(peer).next_back()
    }

    /// A plain neighbour's request on `conn` is answered.
    fn plain_answered(&mut self, conn: ConnId) {
        if let Some(out) = self.links.get_mut(&conn).and_then(|l| l.plain_out.as_mut()) {
            *out = out.saturating_sub(1);
        }
    }

    /// The piece a `Piece` or `Arrive` op brings: with `asked`, the request
    /// outstanding that `index` selects, if any (so that most runs get
    /// pieces in); else `index` from `peer`, on its current connection.
    fn choose_piece(&self, mut peer: u32, mut index: u32, asked: bool) -> Option<Hashing> {
        index %= self.pieces;
        if asked && !self.asked.is_empty() {
            let nth = index as usize % self.asked.len();
            let (&(conn, i), _) = self.asked.iter().nth(nth).expect("in range");
            peer = self.links[&conn].peer;
            index = i;
        }
        let conn = self.current(peer)?;
        Some(Hashing {
            conn,
            peer,
            index,
            answered: false,
        })
    }

    /// A piece's bytes are in. On a link that announces, the runtime
    /// reports it: if the bytes answer a request, the next may go out, and
    /// the piece must not be asked for again while it is hashed or stored.
    /// Elsewhere the core hears of it only at its check.
    fn arrive(&mut self, mut piece: Hashing) -> Result<Hashing, TestCaseError> {
        let Hashing {
            conn, peer, index, ..
        } = piece;
        if !self.links[&conn].announces {
            return Ok(piece);
        }
        // An answer only while requests for it outnumber the copies in
        // already: a second copy of one request is a duplicate.
        let copies = self.checking.iter().filter(|h| h.answers(conn, index));
        piece.answered = self.times_asked(conn, index) > copies.count();
        if piece.answered {
            self.plain_answered(conn);
        }
        // Checked against requests while its arrival is handled.
        self.checking.push(piece);
        self.m.arrived(self.now, conn, peer, index);
        let drained = self.drain();
        self.checking.pop();
        drained.map(|()| piece)
    }

    /// The piece's check comes: it is taken only as an answer, and stored
    /// only if it passed.
    fn check(&mut self, piece: Hashing, good: bool) -> Result<(), TestCaseError> {
        let Hashing {
            conn,
            peer,
            index,
            mut answered,
        } = piece;
        // Copies of one piece on one connection are alike: the first one
        // checked is the answer, whichever arrived first.
        if !answered {
            let answering = self.checking.iter_mut().find(|h| h.answers(conn, index));
            if let Some(other) = answering {
                other.answered = false;
                answered = true;
            }
        }
        // (An unasked piece may be asked for just as it arrives; it then
        // answers that request.)
        let asked = self.answer(conn, index);
        if asked && !answered {
            self.plain_answered(conn);
        }
        let before = self.pending.len();
        let data = PieceBuf::zeroed(self.m.config().common.layout.piece_len(index) as usize);
        let good = good || !self.meta;
        self.m.piece(self.now, conn, peer, index, data, good);
        self.drain()?;
        let stored = self.pending[before..]
            .iter()
            .any(|c| matches!(c, Command::Store { index: i, .. } if *i == index));
        prop_assert!(
            !stored || (asked && good),
            "piece {index} from {peer} stored: asked {asked}, good {good}"
        );
        Ok(())
    }

    /// Whether piece `index`'s bytes are in, answering a request on a
    /// connection still current: then it is not to be asked for. (Once
    /// its connection is gone, the core drops the bytes and may ask again.)
    fn in_checking(&self, index: u32) -> bool {
        self.checking.iter().any(|h| {
            h.index == index
                && h.answered
                && self.current(h.peer) == Some(h.conn)
                && !self.links[&h.conn].closed
        })
    }

    fn step(&mut self, op: Op) -> Result<(), TestCaseError> {
        // A round of a leecher that got no piece for STALL_NOTICE takes back
        // its requests that old and asks again: a plain neighbour may then
        // owe two (the retry's safety net against one that never answers).
        let at = match op {
            Op::Advance { millis } => Some(self.now + Duration::from_millis(millis)),
            Op::Rechoke => Some(self.now),
            _ => None,
        };
        if at.is_some_and(|at| at.saturating_duration_since(self.progress_at) >= STALL_NOTICE) {
            for out in self.links.values_mut().filter_map(|l| l.plain_out.as_mut()) {
                *out = 0;
            }
        }
        match op {
            Op::Connect {
                peer,
                pipelining,
                same_host,
                announces,
            } => {
                let conn = self.links.len() as ConnId + 1;
                // A strict peer negotiates nothing.
                let pipelining = pipelining && !self.strict;
                let link = Link {
                    peer,
                    announced: Bitfield::empty(self.pieces),
                    plain_out: (!pipelining).then_some(0),
                    unchoking: false,
                    closed: false,
                    announces,
                    told: Bitfield::empty(self.pieces),
                };
                self.links.insert(conn, link);
                let dialled = peer < ME;
                self.m
                    .connected(self.now, peer, conn, dialled, pipelining, same_host);
            }
            Op::Frame {
                peer,
                message,
                stale,
            } => {
                let conn = match stale {
                    true => self.conns_of(peer).next(),
                    false => self.current(peer),
                };
                let Some(conn) = conn else {
                    return Ok(());
                };
                let message = fit(message, self.pieces);
                // A rejected request is answered; a choke is not (a piece
                // already on its way may still come, and is kept).
                if let Message::Reject { index, .. } = message {
                    self.answer(conn, index);
                    // A copy in beyond the requests left answers nothing now.
                    let copies = self.checking.iter().filter(|h| h.answers(conn, index));
                    if copies.count() > self.times_asked(conn, index) {
                        let copy = self.checking.iter_mut().find(|h| h.answers(conn, index));
                        copy.expect("counted").answered = false;
                    }
                }
                let link = self.links.get_mut(&conn).expect("made");
                match &message {
                    Message::Choke => link.plain_out = link.plain_out.map(|_| 0),
                    Message::Have(i) => link.announced.set(*i, true),
                    // A late bitfield is merged: pieces are never lost.
                    Message::Bitfield(b) => link.announced.union_with(b),
                    _ => {}
                }
                self.m.frame(self.now, conn, peer, message);
            }
            Op::Piece {
                peer,
                index,
                good,
                asked,
            } => {
                let Some(piece) = self.choose_piece(peer, index, asked) else {
                    return Ok(());
                };
                let piece = self.arrive(piece)?;
                return self.check(piece, good);
            }
            Op::Arrive { peer, index, asked } => {
                if let Some(piece) = self.choose_piece(peer, index, asked) {
                    let piece = self.arrive(piece)?;
                    self.checking.push(piece);
                }
                return Ok(());
            }
            Op::Check { n, good } => {
                if self.checking.is_empty() {
                    return Ok(());
                }
                let piece = self.checking.remove(n % self.checking.len());
                return self.check(piece, good);
            }
            Op::Close { peer, reason } => {
                let Some(conn) = self.current(peer) else {
                    return Ok(());
                };
                let reason = match reason {
                    0 => CloseReason::Eof,
                    1 => CloseReason::Io(io::Error::from(io::ErrorKind::ConnectionReset)),
                    _ => CloseReason::Protocol(WireError::IndexOutOfRange {
                        index: self.pieces,
                        num_pieces: self.pieces,
                    }),
                };
                self.m.closed(self.now, conn, peer, reason);
            }
            Op::Unwritable { peer, full } => {
                if let Some(conn) = self.current(peer) {
                    self.m.unwritable(self.now, conn, peer, full);
                }
            }
            Op::Served { peer } => {
                if let Some(conn) = self.current(peer) {
                    self.m.served(conn, peer);
                }
            }
            Op::Advance { millis } => {
                self.now += Duration::from_millis(millis);
                if self.m.take_round_due(self.now) {
                    self.m.rechoke(self.now);
                }
                self.m.all_done(self.now);
            }
            Op::Rechoke => self.m.rechoke(self.now),
            Op::Reoptimise => self.m.reoptimise(),
            Op::Answer { n, fail, hold } => {
                let take = n.min(self.pending.len());
                let answered: Vec<Command> = self.pending.drain(..take).collect();
                for command in answered {
                    let result = || match fail {
                        true => Err(io::Error::other("disk full")),
                        false => Ok(()),
                    };
                    match command {
                        Command::Store { index, .. } if hold && self.granules => {
                            self.m.held(self.now, index)
                        }
                        // The store writes what it holds (all of it: a
                        // superset of the idle granules' pieces).
                        Command::WriteHeld { .. } => {
                            let held: Vec<u32> = (self.m.storing.iter())
                                .filter(|(_, s)| s.held)
                                .map(|(&i, _)| i)
                                .collect();
                            for index in held {
                                self.m.stored(self.now, index, result());
                            }
                        }
                        Command::Store { index, .. } => self.m.stored(self.now, index, result()),
                        Command::Checkpoint { .. } => self.m.checkpointed(result()),
                        Command::Finish => self.m.finished(match fail {
                            true => Err(FinishError::Length { len: 0, want: 1 }),
                            false => Ok(()),
                        }),
                        _ => {}
                    }
                }
            }
            Op::CheckpointTick => self.m.checkpoint_tick(),
            Op::WriteHeld { idle_only } => self.m.write_held(idle_only),
            Op::Interrupt => self.m.interrupt(15),
        }
        self.drain()
    }

    /// The runtime catches up: every store, checkpoint and finish answered.
    fn settle(&mut self) -> Result<(), TestCaseError> {
        while !self.checking.is_empty() {
            self.step(Op::Check { n: 0, good: true })?;
        }
        for _ in 0..(4 * self.pieces) {
            if self.pending.is_empty() {
                break;
            }
            self.step(Op::Answer {
                n: usize::MAX,
                fail: false,
                hold: false,
            })?;
        }
        prop_assert!(self.pending.is_empty(), "commands left: {:?}", self.pending);
        // The run ends: goodbyes, to p2pft neighbours only.
        self.ended = true;
        self.m.end();
        self.drain()
    }

    /// Takes the machine's commands, checking each.
    fn drain(&mut self) -> Result<(), TestCaseError> {
        while let Some(command) = self.m.poll() {
            // Whatever goes to a neighbour goes on its current, open
            // connection.
            if let Command::Send { conn, peer, .. } | Command::Serve { conn, peer, .. } = &command {
                prop_assert_eq!(
                    self.current(*peer),
                    Some(*conn),
                    "{:?} on a stale connection",
                    command
                );
                prop_assert!(
                    !self.links[conn].closed,
                    "{:?} on a closed connection",
                    command
                );
            }
            match &command {
                Command::Send {
                    conn,
                    peer,
                    message: Message::Request(index),
                } => {
                    prop_assert!(*index < self.pieces);
                    prop_assert!(
                        !self.m.have().has(*index),
                        "asked for {index}, which we have"
                    );
                    let storing = self
                        .pending
                        .iter()
                        .any(|c| matches!(c, Command::Store { index: i, .. } if i == index));
                    prop_assert!(
                        !storing && !self.in_checking(*index),
                        "asked for {index}, which is in (storing {storing})"
                    );
                    let link = self.links.get_mut(conn).expect("made");
                    prop_assert!(
                        link.announced.has(*index),
                        "asked {} for {}, which it never announced",
                        peer,
                        index
                    );
                    // SPEC.md: to a plain neighbour, the next request only
                    // once the piece for the last one came (or a choke
                    // dropped it; or a stall retry took it back, see `step`).
                    if let Some(out) = link.plain_out.as_mut() {
                        *out += 1;
                        prop_assert!(*out <= 1, "{} requests out to plain {}", out, peer);
                    }
                    *self.asked.entry((*conn, *index)).or_default() += 1;
                }
                Command::Serve { conn, peer, index } => {
                    prop_assert!(self.m.have().has(*index), "served {index}, which we lack");
                    // SPEC.md: a request from a neighbour we choke is ignored.
                    prop_assert!(self.links[conn].unchoking, "served {peer}, which we choke");
                    if *peer == HONEST {
                        self.to_honest.push((*conn, ToHonest::Piece(*index)));
                    }
                }
                Command::Send {
                    conn,
                    peer,
                    message,
                } => {
                    let link = self.links.get_mut(conn).expect("made");
                    if matches!(message, Message::Reject { .. } | Message::Goodbye) {
                        prop_assert!(link.plain_out.is_none(), "{message:?} to plain {peer}");
                    }
                    if let (HONEST, &Message::Reject { index, instead }) = (*peer, message) {
                        self.to_honest
                            .push((*conn, ToHonest::Reject { index, instead }));
                    }
                    match message {
                        Message::Unchoke => link.unchoking = true,
                        Message::Choke => link.unchoking = false,
                        Message::Bitfield(b) => link.told.union_with(b),
                        Message::Have(i) => link.told.set(*i, true),
                        _ => {}
                    }
                }
                Command::Close { conn, .. } => {
                    self.links.get_mut(conn).expect("made").closed = true;
                }
                Command::Store { .. }
                | Command::WriteHeld { .. }
                | Command::Checkpoint { .. }
                | Command::Finish => {
                    self.pending.push(command);
                    continue;
                }
                Command::Log(SpecLine::DownloadedPiece { index, .. }) => {
                    prop_assert!(
                        self.downloaded.insert(*index),
                        "piece {index} counted twice"
                    );
                }
                Command::Log(SpecLine::Complete) => {
                    prop_assert!(!self.complete_logged, "completion logged twice");
                    prop_assert_eq!(
                        self.m.have_count(),
                        self.pieces,
                        "complete without every piece"
                    );
                    self.complete_logged = true;
                }
                _ => {}
            }
        }
        let count = self.m.have_count();
        if count > self.have_count {
            self.progress_at = self.now;
        }
        prop_assert!(
            count >= self.have_count,
            "have count fell: {} -> {count}",
            self.have_count
        );
        prop_assert!(count <= self.pieces);
        self.have_count = count;
        self.check_state()
    }

    /// What must hold of the core's own state between events. Every piece
    /// we lack is wanted, asked of a neighbour, in, or being stored (unless
    /// the run failed, as a failed store loses its piece for good, or
    /// ended). A wanted piece is neither in hand nor asked of anyone. The
    /// copies the core counts as in are those still being hashed. What the
    /// core keeps for each neighbour stays within the file's pieces,
    /// without repeats, however long the neighbour goes on.
    fn check_state(&self) -> Result<(), TestCaseError> {
        let m = &self.m;
        if m.fatal.is_none() && !self.ended {
            let lost = m.unaccounted();
            prop_assert!(lost.is_empty(), "pieces {lost:?} lost track of");
        }
        let pieces = self.pieces as usize;
        for (peer, n) in &m.neighbours {
            let distinct: BTreeSet<u32> = n.outstanding.iter().copied().collect();
            prop_assert_eq!(
                distinct.len(),
                n.outstanding.len(),
                "{} outstanding {:?}",
                peer,
                n.outstanding
            );
            for &i in n.outstanding.iter().chain(&n.arrived) {
                prop_assert!(
                    !m.wanted.has(i),
                    "{i} wanted and asked of or in from {peer}"
                );
                let (copies, asked) = (n.copies_in(i), n.times_asked(i));
                prop_assert!(
                    copies <= asked,
                    "{peer}: {i} in {copies} times, asked {asked}"
                );
            }
            // The copies it counts as in are those the runtime still hashes.
            for i in 0..self.pieces {
                let hashing = self.checking.iter().filter(|h| h.answers(n.conn, i));
                prop_assert_eq!(
                    n.copies_in(i) as usize,
                    hashing.count(),
                    "{}: copies of {} in",
                    peer,
                    i
                );
            }
            prop_assert!(n.asked.len() <= pieces, "{peer}: {} asked", n.asked.len());
            prop_assert!(n.refused.len() <= pieces, "{peer}: {:?} refused", n.refused);
            prop_assert!(n.sent_bad.len() <= MAX_BAD_PIECES as usize);
            prop_assert!(n.recent.len() <= RECENT_HAVES);
            let awaited = n.pacing.awaited();
            prop_assert!(awaited <= pieces, "{peer}: {awaited} request times kept");
        }
        for i in m.wanted.iter_ones() {
            prop_assert!(!m.in_hand(i), "{i} wanted and in hand");
        }
        Ok(())
    }
}

/// Most runs begin as a swarm does: every neighbour connects, announces
/// what it has (`full`: everything) and unchokes us, so that pieces flow
/// before the arbitrary part.
fn opening(full: Vec<bool>) -> Vec<Op> {
    let mut ops = Vec::new();
    for (&peer, full) in NEIGHBOURS.iter().zip(full) {
        let message = |message| Op::Frame {
            peer,
            message,
            stale: false,
        };
        let announce = match full {
            true => Bitfield::full(PIECES),
            false => {
                let mut some = Bitfield::empty(PIECES);
                (0..PIECES)
                    .filter(|i| (i + peer) % 3 != 0)
                    .for_each(|i| some.set(i, true));
                some
            }
        };
        ops.push(Op::Connect {
            peer,
            pipelining: peer % 2 == 0,
            same_host: peer == 2,
            announces: peer != 6,
        });
        ops.push(message(Message::Bitfield(announce)));
        ops.push(message(Message::Unchoke));
        ops.push(message(Message::Interested));
    }
    ops
}

fn run_ops() -> impl Strategy<Value = Vec<Op>> {
    (
        proptest::option::weighted(
            0.8,
            proptest::collection::vec(any::<bool>(), NEIGHBOURS.len()),
        ),
        proptest::collection::vec(op(), 1..400),
        proptest::bool::weighted(0.1),
    )
        .prop_map(|(opening_of, rest, interrupt)| {
            let mut ops = opening_of.map(opening).unwrap_or_default();
            let half = ops.len() + rest.len() / 2;
            ops.extend(rest);
            if interrupt {
                ops.insert(half, Op::Interrupt);
            }
            ops
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_neighbours_leave_the_core_consistent(start in start(), ops in run_ops()) {
        let mut run = Run::new(&start);
        run.drain()?;
        for op in ops {
            run.step(op)?;
        }
        run.settle()?;
    }

    #[test]
    fn after_any_neighbours_an_honest_leecher_gets_every_piece_we_have(
        start in start(),
        ops in run_ops(),
        pipelining in any::<bool>(),
        leave in any::<bool>(),
    ) {
        let mut run = Run::new(&start);
        run.drain()?;
        for op in ops {
            run.step(op)?;
        }
        // A run told to stop, or failed, serves nothing new, by design.
        if run.m.fatal.is_none() && !run.m.stopping {
            let (rounds, got) = run.serve_honest(pipelining, leave)?;
            let missing: Vec<u32> = run.m.have().iter_ones().filter(|&i| !got.has(i)).collect();
            prop_assert!(
                missing.is_empty(),
                "after {} rounds the honest leecher lacks {:?} of the {} pieces we have",
                rounds,
                missing,
                run.m.have_count()
            );
        }
        run.settle()?;
    }

    #[test]
    fn after_any_neighbours_an_honest_seed_brings_the_file(
        start in start(),
        ops in run_ops(),
        pipelining in any::<bool>(),
    ) {
        let mut run = Run::new(&start);
        let seed = run.have_count == run.pieces;
        run.drain()?;
        for op in ops {
            run.step(op)?;
        }
        // A seed has nothing to get; a run that failed (a store, a
        // checkpoint) or was told to stop asks for nothing more, by design.
        if !seed && run.m.fatal.is_none() && !run.m.stopping {
            let rounds = run.heal(pipelining)?;
            prop_assert!(
                run.complete_logged,
                "not complete after {} rounds with an honest seed: {} of {} pieces",
                rounds,
                run.have_count,
                run.pieces
            );
        }
        run.settle()?;
    }
}

/// Rounds of [`Run::heal`] at most: enough for the stall retry (10 s) and
/// the endgame's wait (1 s) several times over, at a round a second.
const HEAL_ROUNDS: u32 = 40;

/// The peer that joins after the generated ops (an honest seed or leecher):
/// never named by them.
const HONEST: u32 = 1;

impl Run {
    /// Whatever came before, an honest seed (peer [`HONEST`]) connects, has
    /// every piece, unchokes us and answers each request at once with a
    /// good piece, while the runtime answers
    /// every command and the clock runs a round a second. Pieces still
    /// being hashed are checked first (as bad: the harder case). Returns
    /// the rounds it took, or [`HEAL_ROUNDS`] if it did not complete.
    fn heal(&mut self, pipelining: bool) -> Result<u32, TestCaseError> {
        while !self.checking.is_empty() {
            self.step(Op::Check { n: 0, good: false })?;
        }
        self.step(Op::Connect {
            peer: HONEST,
            pipelining,
            same_host: false,
            announces: !pipelining,
        })?;
        let conn = self.current(1).expect("just connected");
        let frame = |message| Op::Frame {
            peer: HONEST,
            message,
            stale: false,
        };
        self.step(frame(Message::Bitfield(Bitfield::full(PIECES))))?;
        self.step(frame(Message::Unchoke))?;
        for round in 0..HEAL_ROUNDS {
            // Each answer may bring the next request: a piece a request.
            for _ in 0..4 * self.pieces {
                let next = self.asked.keys().find(|&&(c, _)| c == conn).copied();
                let Some((conn, index)) = next else {
                    break;
                };
                let piece = Hashing {
                    conn,
                    peer: HONEST,
                    index,
                    answered: false,
                };
                let piece = self.arrive(piece)?;
                self.check(piece, true)?;
            }
            self.catch_up()?;
            if self.complete_logged {
                return Ok(round);
            }
            self.next_round()?;
        }
        Ok(HEAL_ROUNDS)
    }

    /// The end of a round of [`Run::heal`] or [`Run::serve_honest`]: the
    /// checkpoint timer sends held pieces to disk, and the runtime answers
    /// every command.
    fn catch_up(&mut self) -> Result<(), TestCaseError> {
        self.step(Op::CheckpointTick)?;
        self.step(Op::Answer {
            n: usize::MAX,
            fail: false,
            hold: false,
        })
    }

    /// A second passes and the choking round comes.
    fn next_round(&mut self) -> Result<(), TestCaseError> {
        self.step(Op::Advance { millis: 1_000 })?;
        self.step(Op::Rechoke)
    }

    /// Whatever came before, the generated neighbours go (`leave`), or stay
    /// and say `not interested` while their writers catch up; then an honest
    /// leecher (peer [`HONEST`], which lacks everything) connects, says
    /// `interested`, and while we unchoke it asks for what we announced to
    /// it, one piece at a time (SPEC.md) or two (`pipelining`), taking a
    /// reject's suggestion. Its runtime sends each piece we serve it at once,
    /// ours answers every command, and the clock runs a round a second.
    /// Returns the rounds it took and the pieces it got.
    fn serve_honest(
        &mut self,
        pipelining: bool,
        leave: bool,
    ) -> Result<(u32, Bitfield), TestCaseError> {
        while !self.checking.is_empty() {
            self.step(Op::Check { n: 0, good: true })?;
        }
        for peer in NEIGHBOURS {
            let Some(conn) = self.current(peer).filter(|c| !self.links[c].closed) else {
                continue;
            };
            if leave {
                self.step(Op::Close { peer, reason: 0 })?;
                continue;
            }
            let serving = self.m.neighbours.get(&peer).map_or(0, |n| n.serving);
            (0..serving).for_each(|_| self.m.served(conn, peer));
            self.step(Op::Frame {
                peer,
                message: Message::NotInterested,
                stale: false,
            })?;
        }
        self.step(Op::Connect {
            peer: HONEST,
            pipelining,
            same_host: false,
            announces: false,
        })?;
        let conn = self.current(HONEST).expect("just connected");
        let frame = |message| Op::Frame {
            peer: HONEST,
            message,
            stale: false,
        };
        self.step(frame(Message::Interested))?;
        let depth = if pipelining && !self.strict { 2 } else { 1 };
        let mut got = Bitfield::empty(self.pieces);
        let mut out: Vec<u32> = Vec::new();
        let mut suggested = None;
        for round in 0..HEAL_ROUNDS {
            for _ in 0..8 * self.pieces {
                // What we sent it comes in; it announces each new piece.
                if let Some(at) = self.to_honest.iter().position(|&(c, _)| c == conn) {
                    match self.to_honest.remove(at).1 {
                        ToHonest::Piece(index) => {
                            self.m.served(conn, HONEST);
                            out.retain(|&i| i != index);
                            if !got.has(index) {
                                got.set(index, true);
                                self.step(frame(Message::Have(index)))?;
                            }
                        }
                        ToHonest::Reject { index, instead } => {
                            out.retain(|&i| i != index);
                            suggested = Some(instead);
                        }
                    }
                    self.drain()?;
                    continue;
                }
                // A choke drops its requests (SPEC.md); it asks again when
                // unchoked.
                if !self.links[&conn].unchoking {
                    out.clear();
                    break;
                }
                if out.len() >= depth {
                    break;
                }
                let told = &self.links[&conn].told;
                let wants = |i: u32| told.has(i) && !got.has(i) && !out.contains(&i);
                let from = (round + 5 * got.count()) % self.pieces;
                let next = suggested.take().filter(|&i| wants(i)).or_else(|| {
                    (0..self.pieces)
                        .map(|k| (from + k) % self.pieces)
                        .find(|&i| wants(i))
                });
                let Some(index) = next else {
                    break;
                };
                out.push(index);
                self.step(frame(Message::Request(index)))?;
            }
            self.catch_up()?;
            if self.m.have().iter_ones().all(|i| got.has(i)) {
                return Ok((round, got));
            }
            self.next_round()?;
        }
        Ok((HEAL_ROUNDS, got))
    }
}

/// The property above is only as good as the runs it makes: most must get
/// pieces stored, and some must complete, or its checks see little.
#[test]
fn generated_runs_store_pieces_and_some_complete() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = (start(), run_ops());
    let (mut storing, mut complete) = (0, 0);
    let runs = 64;
    for _ in 0..runs {
        let (start, ops) = strategy.new_tree(&mut runner).expect("a case").current();
        let mut run = Run::new(&start);
        let before = run.have_count;
        for op in ops {
            run.step(op).expect("the property holds");
        }
        run.settle().expect("the property holds");
        storing += usize::from(run.have_count > before);
        complete += usize::from(run.complete_logged);
    }
    eprintln!("{storing} of {runs} runs stored a piece, {complete} completed");
    assert!(
        storing * 2 > runs,
        "{storing} of {runs} runs stored a piece"
    );
    assert!(complete > 0, "no run completed");
}
