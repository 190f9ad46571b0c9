//! The protocol core driven by scripted neighbours on a virtual clock, in
//! the style of quinn-proto's test pair: no sockets, threads or disk, so
//! each test runs in well under a millisecond of protocol time per step.

use super::*;
use crate::protocol::config::{parse_peer_info, CommonConfig};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A scripted run: the machine of peer `me`, a virtual clock, and the
/// connections the script opened.
struct Script {
    m: Machine,
    now: Instant,
    conns: BTreeMap<u32, ConnId>,
    next_conn: ConnId,
    /// Every command the machine gave, in order (Debug text), for replays.
    trace: Vec<String>,
}

/// The piece size of these scripts.
pub(super) const PIECE: u32 = 16 * 1024;

/// The config of a scripted swarm: `peers` in PeerInfo.cfg order with
/// HasFile, pieces of [`PIECE`], and the (p, m) `intervals` in seconds.
pub(super) fn config(
    peers: &[(u32, bool)],
    k: usize,
    strict: bool,
    file_size: u64,
    (p, m): (u32, u32),
) -> Config {
    let common = format!(
        "NumberOfPreferredNeighbors {k}\nUnchokingInterval {p}\nOptimisticUnchokingInterval {m}\n\
         FileName f\nFileSize {file_size}\nPieceSize {PIECE}\nP2pftStrict {}\n",
        u8::from(strict)
    );
    let (common, _) = CommonConfig::parse(Path::new("Common.cfg"), &common).expect("common");
    let info: String = peers
        .iter()
        .enumerate()
        .map(|(i, (id, has))| format!("{id} 127.0.0.1 {} {}\n", 6000 + i, u8::from(*has)))
        .collect();
    let peers = parse_peer_info(Path::new("PeerInfo.cfg"), &info).expect("peer info");
    Config {
        dir: PathBuf::new(),
        common,
        peers,
        warnings: Vec::new(),
    }
}

/// Seconds a departed peer is waited for in these scripts.
const RETURN_WAIT: u64 = 120;

/// Settings of a scripted swarm.
struct Swarm {
    /// Peer ids in PeerInfo.cfg order, with HasFile.
    peers: Vec<(u32, bool)>,
    pieces: u32,
    k: usize,
    strict: bool,
    seed: u64,
}

impl Swarm {
    fn new(peers: &[(u32, bool)], pieces: u32) -> Swarm {
        Swarm {
            peers: peers.to_vec(),
            pieces,
            k: 2,
            strict: false,
            seed: 7,
        }
    }

    fn config(&self) -> Config {
        let file_size = u64::from(self.pieces) * u64::from(PIECE);
        config(&self.peers, self.k, self.strict, file_size, (5, 15))
    }

    /// The machine of peer `me`, which starts with the pieces of `have`.
    fn start(&self, me: u32, have: &[u32]) -> Script {
        let config = self.config();
        let n = config.common.layout.num_pieces();
        let mut bits = Bitfield::empty(n);
        let seed = self.peers.iter().any(|&(id, has)| id == me && has);
        for i in 0..n {
            if seed || have.contains(&i) {
                bits.set(i, true);
            }
        }
        let now = Instant::now();
        Script {
            m: Machine::new(MachineSetup {
                me,
                config,
                have: bits,
                counters: Arc::new(Counters::default()),
                rng_seed: self.seed,
                checkpoints: !seed,
                granule_pieces: None,
                return_wait: Duration::from_secs(RETURN_WAIT),
                now,
            }),
            now,
            conns: BTreeMap::new(),
            next_conn: 0,
            trace: Vec::new(),
        }
    }
}

impl Script {
    fn advance(&mut self, secs: f64) {
        self.now += Duration::from_secs_f64(secs);
    }

    /// Everything the machine asked for since the last look.
    fn commands(&mut self) -> Vec<Command> {
        let mut out = Vec::new();
        while let Some(c) = self.m.poll() {
            self.trace.push(format!("{c:?}"));
            out.push(c);
        }
        out
    }

    /// The frames sent since the last look, as (to, message).
    fn sent(&mut self) -> Vec<(u32, Message)> {
        self.commands()
            .into_iter()
            .filter_map(|c| match c {
                Command::Send { peer, message, .. } => Some((peer, message)),
                _ => None,
            })
            .collect()
    }

    /// A handshake with `peer` completes (on this host: no pacing).
    fn connect(&mut self, peer: u32, pipelining: bool) -> ConnId {
        self.connect_on(peer, pipelining, true)
    }

    /// A p2pft neighbour on another host: across a link, not loopback.
    fn connect_remote(&mut self, peer: u32) -> ConnId {
        self.connect_on(peer, true, false)
    }

    /// p2pft neighbours on other hosts connect and say they are interested;
    /// what that makes us send is dropped.
    fn interested_remotes(&mut self, peers: &[u32]) {
        for &p in peers {
            self.connect_remote(p);
        }
        for &p in peers {
            self.recv(p, Message::Interested);
        }
        self.commands();
    }

    fn connect_on(&mut self, peer: u32, pipelining: bool, same_host: bool) -> ConnId {
        self.next_conn += 1;
        let conn = self.next_conn;
        self.conns.insert(peer, conn);
        let dialled = self.m.config().position(peer) < self.m.config().position(self.m.me());
        self.m
            .connected(self.now, peer, conn, dialled, pipelining, same_host);
        conn
    }

    /// Plain neighbour `peer` on this host connects with every piece and
    /// unchokes us: the requests that makes us send it.
    fn unchoked_by_plain(&mut self, peer: u32) -> Vec<u32> {
        let pieces = self.m.config().common.layout.num_pieces();
        self.connect(peer, false);
        self.recv(peer, full(pieces));
        self.recv(peer, Message::Unchoke);
        requests(&self.sent(), peer)
    }

    fn recv(&mut self, peer: u32, message: Message) {
        let conn = self.conns[&peer];
        self.m.frame(self.now, conn, peer, message);
    }

    /// `peer` sends piece `index` (good), and it is stored when `store`.
    fn deliver(&mut self, peer: u32, index: u32) {
        self.arrive(peer, index);
        self.check(peer, index, true);
    }

    /// Piece `index`'s bytes are in from `peer`, on its connection; its
    /// check comes later ([`Script::check`]).
    fn arrive(&mut self, peer: u32, index: u32) {
        self.m.arrived(self.now, self.conns[&peer], peer, index);
    }

    /// The check of piece `index` from `peer` comes: `good` or not.
    fn check(&mut self, peer: u32, index: u32, good: bool) {
        let len = self.m.config().common.layout.piece_len(index) as usize;
        let data = PieceBuf::zeroed(len);
        let conn = self.conns[&peer];
        self.m.piece(self.now, conn, peer, index, data, good);
    }

    /// Stores every piece the machine asked to store, in order.
    fn store_all(&mut self) -> Vec<(u32, Message)> {
        let mut sent = Vec::new();
        loop {
            let commands = self.commands();
            let mut stored = false;
            for c in commands {
                match c {
                    Command::Store { index, .. } => {
                        self.m.stored(self.now, index, Ok(()));
                        stored = true;
                    }
                    Command::Finish => self.m.finished(Ok(())),
                    Command::Send { peer, message, .. } => sent.push((peer, message)),
                    _ => {}
                }
            }
            if !stored {
                return sent;
            }
        }
    }

    fn all_done(&mut self) -> bool {
        self.m.all_done(self.now)
    }
}

fn requests(sent: &[(u32, Message)], to: u32) -> Vec<u32> {
    sent.iter()
        .filter_map(|(p, m)| match m {
            Message::Request(i) if *p == to => Some(*i),
            _ => None,
        })
        .collect()
}

fn has(sent: &[(u32, Message)], to: u32, message: &Message) -> bool {
    sent.iter().any(|(p, m)| *p == to && m == message)
}

fn logged(commands: &[Command], line: &SpecLine) -> bool {
    commands.iter().any(|c| c == &Command::Log(line.clone()))
}

fn full(pieces: u32) -> Message {
    Message::Bitfield(Bitfield::full(pieces))
}

fn only(pieces: u32, set: &[u32]) -> Message {
    let mut b = Bitfield::empty(pieces);
    for &i in set {
        b.set(i, true);
    }
    Message::Bitfield(b)
}

// ---- SPEC.md behaviours -------------------------------------------------

#[test]
fn a_leecher_prefers_the_k_neighbours_that_sent_it_the_most() {
    let mut swarm = Swarm::new(
        &[(1, false), (2, true), (3, true), (4, true), (5, true)],
        40,
    );
    swarm.strict = true; // rounds only, no early unchoke
    let mut s = swarm.start(1, &[]);
    for p in 2..=5 {
        s.connect(p, false);
        s.recv(p, full(40));
        s.recv(p, Message::Interested);
        s.recv(p, Message::Unchoke);
    }
    let sent = s.sent();
    // Four plain neighbours unchoked us: one request each.
    let mut asked: BTreeMap<u32, u32> = (2..=5).map(|p| (p, requests(&sent, p)[0])).collect();
    // 4 sends three pieces, 3 sends two, 2 and 5 none.
    for (peer, count) in [(4, 3), (3, 2)] {
        for _ in 0..count {
            let index = asked[&peer];
            s.deliver(peer, index);
            let next = requests(&s.store_all(), peer);
            assert_eq!(next.len(), 1, "one request at a time to a plain peer");
            asked.insert(peer, next[0]);
        }
    }
    s.advance(5.0);
    s.m.rechoke(s.now);
    let commands = s.commands();
    assert!(logged(&commands, &SpecLine::PreferredNeighbors(vec![3, 4])));
    let unchoked: BTreeSet<u32> = s.m.unchoked().clone();
    assert_eq!(unchoked, BTreeSet::from([3, 4]));
}

#[test]
fn a_seed_picks_its_preferred_neighbours_at_random_among_the_interested() {
    let peers = [
        (1, true),
        (2, false),
        (3, false),
        (4, false),
        (5, false),
        (6, false),
    ];
    let mut swarm = Swarm::new(&peers, 8);
    swarm.strict = true;
    let mut s = swarm.start(1, &[]);
    for p in 2..=6 {
        s.connect(p, false);
        if p != 6 {
            s.recv(p, Message::Interested);
        }
    }
    let mut chosen = BTreeSet::new();
    for _ in 0..40 {
        s.advance(5.0);
        s.m.rechoke(s.now);
        s.commands();
        assert_eq!(s.m.unchoked().len(), 2, "k = 2 unchoked");
        assert!(!s.m.unchoked().contains(&6), "6 is not interested");
        chosen.extend(s.m.unchoked().iter().copied());
    }
    assert_eq!(
        chosen,
        BTreeSet::from([2, 3, 4, 5]),
        "each interested one in turn"
    );
}

#[test]
fn the_optimistic_neighbour_is_a_choked_interested_one_chosen_every_m() {
    let peers = [(1, true), (2, false), (3, false), (4, false), (5, false)];
    let mut swarm = Swarm::new(&peers, 8);
    swarm.strict = true;
    swarm.k = 1;
    let mut s = swarm.start(1, &[]);
    for p in 2..=5 {
        s.connect(p, false);
        s.recv(p, Message::Interested);
    }
    s.m.rechoke(s.now);
    s.commands();
    let preferred: Vec<u32> = s.m.unchoked().iter().copied().collect();
    assert_eq!(preferred.len(), 1);
    let mut picks = BTreeSet::new();
    for _ in 0..30 {
        s.advance(15.0);
        s.m.reoptimise();
        let commands = s.commands();
        let optimistic: Vec<u32> = commands
            .iter()
            .filter_map(|c| match c {
                Command::Log(SpecLine::OptimisticNeighbor(id)) => Some(*id),
                _ => None,
            })
            .collect();
        assert!(optimistic.len() <= 1);
        if let Some(&id) = optimistic.first() {
            assert!(!preferred.contains(&id), "never the preferred one");
            assert!(s.m.unchoked().contains(&id));
            picks.insert(id);
        }
        assert_eq!(s.m.unchoked().len(), 2, "k preferred plus one optimistic");
    }
    assert!(picks.len() >= 2, "the optimistic pick changes: {picks:?}");
}

#[test]
fn a_plain_neighbour_gets_one_request_at_a_time() {
    let mut s = Swarm::new(&[(1, true), (2, false)], 6).start(2, &[]);
    s.connect(1, false);
    s.recv(1, full(6));
    let sent = s.sent();
    assert!(has(&sent, 1, &Message::Interested));
    assert!(requests(&sent, 1).is_empty(), "choked: no request");
    s.recv(1, Message::Unchoke);
    let first = requests(&s.sent(), 1);
    assert_eq!(first.len(), 1);
    let mut got = BTreeSet::new();
    let mut next = first[0];
    for _ in 0..6 {
        got.insert(next);
        s.deliver(1, next);
        let asked = requests(&s.store_all(), 1);
        assert!(asked.len() <= 1);
        match asked.first() {
            Some(&i) => next = i,
            None => break,
        }
    }
    assert_eq!(got.len(), 6, "each piece asked for once");
    assert_eq!(s.m.have_count(), 6);
}

#[test]
fn a_choke_frees_the_request_for_another_neighbour() {
    let mut s = Swarm::new(&[(1, true), (2, true), (3, false)], 1).start(3, &[]);
    for p in [1, 2] {
        s.connect(p, false);
        s.recv(p, full(1));
    }
    s.recv(1, Message::Unchoke);
    s.recv(2, Message::Unchoke);
    let sent = s.sent();
    assert_eq!(requests(&sent, 1), vec![0]);
    assert!(
        requests(&sent, 2).is_empty(),
        "the only piece is asked of 1"
    );
    s.recv(1, Message::Choke);
    assert_eq!(requests(&s.sent(), 2), vec![0], "freed by the choke");
}

#[test]
fn a_stored_piece_is_announced_to_every_neighbour_and_ends_interest() {
    let mut s = Swarm::new(&[(1, true), (2, false), (3, false), (4, false)], 4).start(2, &[]);
    s.connect(1, false);
    s.connect(3, false);
    s.connect(4, false);
    s.recv(3, only(4, &[1]));
    s.recv(3, Message::Unchoke);
    let sent = s.sent();
    assert!(has(&sent, 3, &Message::Interested));
    assert_eq!(requests(&sent, 3), vec![1]);
    s.deliver(3, 1);
    let sent = s.store_all();
    for p in [1, 3, 4] {
        assert!(has(&sent, p, &Message::Have(1)), "have to {p}");
    }
    assert!(
        has(&sent, 3, &Message::NotInterested),
        "3 has nothing more for us"
    );
    assert!(!has(&sent, 1, &Message::NotInterested));
}

#[test]
fn a_request_from_a_choked_neighbour_is_ignored() {
    let mut s = Swarm::new(&[(1, true), (2, false)], 4).start(1, &[]);
    s.connect(2, false);
    s.commands();
    s.recv(2, Message::Request(0));
    assert!(!s
        .commands()
        .iter()
        .any(|c| matches!(c, Command::Serve { .. })));
}

#[test]
fn the_run_ends_once_every_peer_has_the_file() {
    let mut s = Swarm::new(&[(1, true), (2, false), (3, false)], 2).start(2, &[]);
    s.connect(1, false);
    s.connect(3, false);
    s.recv(1, full(2));
    s.recv(3, only(2, &[]));
    s.recv(1, Message::Unchoke);
    let mut asked = requests(&s.sent(), 1);
    for _ in 0..2 {
        s.deliver(1, asked[0]);
        asked = requests(&s.store_all(), 1);
    }
    assert_eq!(s.m.have_count(), 2);
    assert!(!s.all_done(), "3 still lacks the file");
    s.recv(3, Message::Have(0));
    assert!(!s.all_done());
    s.recv(3, Message::Have(1));
    assert!(s.all_done());
}

#[test]
fn a_seed_known_from_peer_info_counts_complete_once_away_for_5_s() {
    let mut s = Swarm::new(&[(1, true), (2, false)], 1).start(2, &[0]);
    s.m.finished(Ok(()));
    assert!(!s.all_done(), "1 has not been away long enough");
    s.advance(5.0);
    assert!(s.all_done());
}

// ---- p2pft extensions ---------------------------------------------------

#[test]
fn a_p2pft_neighbour_gets_the_pipeline_depth_of_requests() {
    let mut s = Swarm::new(&[(1, true), (2, false)], 64).start(2, &[]);
    let depth = s.m.config().common.pipeline_depth as usize;
    assert!(depth > 1);
    s.connect(1, true);
    s.recv(1, full(64));
    s.recv(1, Message::Unchoke);
    let asked = requests(&s.sent(), 1);
    assert_eq!(asked.len(), depth);
    let distinct: BTreeSet<u32> = asked.iter().copied().collect();
    assert_eq!(distinct.len(), depth, "no piece asked twice");
    // Each piece in brings one request more.
    s.deliver(1, asked[0]);
    assert_eq!(requests(&s.store_all(), 1).len(), 1);
}

#[test]
fn the_newest_announced_piece_is_asked_first_of_a_p2pft_neighbour() {
    let mut s = Swarm::new(&[(1, true), (2, false), (3, false)], 64).start(3, &[]);
    s.connect(2, true);
    s.recv(2, only(64, &[]));
    s.recv(2, Message::Have(9));
    s.recv(2, Message::Have(41));
    s.recv(2, Message::Unchoke);
    let asked = requests(&s.sent(), 2);
    assert_eq!(asked, vec![41, 9], "newest first, then only what it has");
}

#[test]
fn an_interested_neighbour_is_unchoked_at_once_when_a_slot_is_free() {
    let peers = [(1, true), (2, false), (3, false), (4, false), (5, false)];
    let mut s = Swarm::new(&peers, 8).start(1, &[]);
    for p in 2..=5 {
        s.connect(p, true);
    }
    s.commands();
    s.recv(2, Message::Interested);
    let commands = s.commands();
    assert!(logged(&commands, &SpecLine::PreferredNeighbors(vec![2])));
    assert!(commands.iter().any(|c| matches!(
        c,
        Command::Send {
            peer: 2,
            message: Message::Unchoke,
            ..
        }
    )));
    s.recv(3, Message::Interested);
    s.recv(4, Message::Interested);
    let commands = s.commands();
    assert!(logged(&commands, &SpecLine::PreferredNeighbors(vec![2, 3])));
    assert!(logged(&commands, &SpecLine::OptimisticNeighbor(4)));
    s.recv(5, Message::Interested);
    assert_eq!(s.m.unchoked(), &BTreeSet::from([2, 3, 4]), "k + 1 slots");
}

#[test]
fn a_leech_only_peer_unchokes_nobody_early_in_rounds_or_once_complete() {
    let peers = [(1, true), (2, false), (3, false), (4, false)];
    let mut s = Swarm::new(&peers, 4).start(2, &[0, 1, 2, 3]);
    s.m.config.common.serve = false;
    for p in [1, 3, 4] {
        s.connect(p, true);
    }
    s.commands();
    s.recv(3, Message::Interested);
    s.recv(4, Message::Interested);
    for _ in 0..4 {
        s.advance(5.0);
        s.m.rechoke(s.now);
        s.m.reoptimise();
    }
    let sent = s.sent();
    assert!(s.m.unchoked().is_empty());
    assert!(
        !sent.iter().any(|(_, m)| *m == Message::Unchoke),
        "{sent:?}"
    );
    // Asked all the same, it sends nothing.
    s.recv(3, Message::Request(0));
    assert!(s.sent().is_empty());
}

/// The pieces `commands` serve, as (to, index).
fn served(commands: &[Command]) -> Vec<(u32, u32)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Serve { peer, index, .. } => Some((*peer, *index)),
            _ => None,
        })
        .collect()
}

#[test]
fn across_hosts_a_seed_sends_each_piece_once_before_any_twice() {
    let peers = [(1, true), (2, false), (3, false)];
    let mut s = Swarm::new(&peers, 8).start(1, &[]);
    s.interested_remotes(&[2, 3]);
    s.recv(2, Message::Request(5));
    assert_eq!(served(&s.commands()), [(2, 5)]);
    // Piece 5 is on its way through the swarm: 3 is told to take 0,
    // which nobody has been sent.
    s.recv(3, Message::Request(5));
    let commands = s.commands();
    assert!(served(&commands).is_empty());
    assert!(commands.iter().any(|c| matches!(
        c,
        Command::Send {
            peer: 3,
            message: Message::Reject {
                index: 5,
                instead: 0
            },
            ..
        }
    )));
    s.recv(3, Message::Request(0));
    assert_eq!(served(&s.commands()), [(3, 0)]);
    // The next one suggested is another: neighbours asking at once are
    // sent different pieces.
    s.recv(2, Message::Request(0));
    assert!(has(
        &s.sent(),
        2,
        &Message::Reject {
            index: 0,
            instead: 1
        }
    ));
}

/// Few pieces are counted and passed over at each pick; more are kept
/// sorted by count (`Rarity`): both ask for the rarest.
#[test]
fn across_hosts_the_rarest_piece_a_neighbour_has_is_asked_for() {
    for n in [64, 5_000] {
        let peers = [(1, true), (2, false), (3, false), (4, false)];
        let mut s = Swarm::new(&peers, n).start(4, &[]);
        s.connect_remote(2);
        s.recv(2, only(n, &(0..n / 2).collect::<Vec<_>>()));
        s.connect_remote(3);
        s.recv(3, full(n));
        s.recv(3, Message::Unchoke);
        let first = requests(&s.sent(), 3);
        // The second half, which only 3 has, is the rarest.
        assert!(!first.is_empty(), "{n} pieces");
        assert!(first.iter().all(|&i| i >= n / 2), "{n}: {first:?}");
        // 2 announces every piece of the second half but two: those two are
        // the rarest now.
        let rare: Vec<u32> = (n / 2..n).filter(|i| !first.contains(i)).take(2).collect();
        assert_eq!(rare.len(), 2, "{n}: {first:?}");
        for i in (n / 2..n).filter(|i| !rare.contains(i)) {
            s.recv(2, Message::Have(i));
        }
        s.deliver(3, first[0]);
        // Asked for one by one, each the rarest left: the two come first.
        let next = requests(&s.store_all(), 3);
        let firsts = &next[..next.len().min(2)];
        assert!(!firsts.is_empty(), "{n} pieces");
        assert!(
            firsts.iter().all(|i| rare.contains(i)),
            "{n}: {next:?}, {rare:?}"
        );
        // 2 leaves (its pieces count one fewer): every piece is as rare as
        // any, and none held or asked for is asked for again.
        s.m.closed(s.now, s.conns[&2], 2, CloseReason::Eof);
        let mut outstanding: BTreeSet<u32> = first[1..].iter().chain(&next).copied().collect();
        let mut held = BTreeSet::from([first[0]]);
        while held.len() < 12 {
            let i = outstanding.pop_first().expect("a request out");
            s.deliver(3, i);
            held.insert(i);
            for j in requests(&s.store_all(), 3) {
                assert!(
                    !held.contains(&j) && outstanding.insert(j),
                    "{n}: {j} again"
                );
            }
        }
    }
}

#[test]
fn a_seed_rejects_nothing_on_this_host_in_strict_mode_or_once_all_went_out() {
    let peers = [(1, true), (2, false), (3, false)];
    // On this host.
    let mut s = Swarm::new(&peers, 2).start(1, &[]);
    s.connect(2, true);
    s.connect(3, true);
    s.recv(2, Message::Interested);
    s.recv(3, Message::Interested);
    s.commands();
    s.recv(2, Message::Request(1));
    s.recv(3, Message::Request(1));
    assert_eq!(served(&s.commands()), [(2, 1), (3, 1)]);
    // Every piece sent once: anything is served.
    let mut s = Swarm::new(&peers, 2).start(1, &[]);
    s.interested_remotes(&[2, 3]);
    s.recv(2, Message::Request(0));
    s.recv(2, Message::Request(1));
    s.recv(3, Message::Request(1));
    assert_eq!(served(&s.commands()), [(2, 0), (2, 1), (3, 1)]);
    // With --strict.
    let mut strict = Swarm::new(&peers, 8);
    strict.strict = true;
    let mut s = strict.start(1, &[]);
    s.connect_remote(2);
    s.connect_remote(3);
    s.recv(2, Message::Interested);
    s.recv(3, Message::Interested);
    s.advance(5.0);
    s.m.rechoke(s.now);
    s.commands();
    s.recv(2, Message::Request(5));
    s.recv(3, Message::Request(5));
    assert_eq!(served(&s.commands()), [(2, 5), (3, 5)]);
}

#[test]
fn a_leecher_that_completed_rejects_nothing() {
    // Its pieces came from the swarm: refusing a straggler the last pieces
    // it lacks held the whole swarm's last host up by a choking round.
    let peers = [(1, true), (2, false), (3, false), (4, false)];
    let mut s = Swarm::new(&peers, 8).start(2, &[0, 1, 2, 3, 4, 5, 6]);
    s.connect_remote(1);
    s.recv(1, full(8));
    s.recv(1, Message::Unchoke);
    assert_eq!(requests(&s.sent(), 1), [7]);
    s.deliver(1, 7);
    s.store_all();
    assert!(s.m.have_complete());
    s.interested_remotes(&[3, 4]);
    s.recv(3, Message::Request(5));
    s.recv(4, Message::Request(5));
    assert_eq!(served(&s.commands()), [(3, 5), (4, 5)]);
}

#[test]
fn a_rejected_request_is_asked_again_as_the_seed_suggests() {
    let peers = [(1, true), (2, false)];
    let mut s = Swarm::new(&peers, 8).start(2, &[]);
    s.connect_remote(1);
    s.recv(1, full(8));
    s.recv(1, Message::Unchoke);
    // One request to begin with across a link.
    let asked = requests(&s.sent(), 1);
    assert_eq!(asked.len(), 1, "{asked:?}");
    let first = asked[0];
    let instead = (first + 3) % 8;
    s.recv(
        1,
        Message::Reject {
            index: first,
            instead,
        },
    );
    let asked = requests(&s.sent(), 1);
    assert_eq!(asked.first(), Some(&instead), "{asked:?}");
    assert!(!asked.contains(&first), "not asked again of it this round");
    // A reject of a piece not asked for changes nothing.
    s.recv(
        1,
        Message::Reject {
            index: first,
            instead: first,
        },
    );
    assert!(s.sent().is_empty());
    // The piece is wanted still: delivered from the seed later, it is kept.
    s.advance(5.0);
    s.m.rechoke(s.now);
    s.deliver(1, instead);
    s.store_all();
    assert!(s.m.have().has(instead));
}

#[test]
fn a_reject_from_a_plain_neighbour_ends_its_connection() {
    let peers = [(1, true), (2, false)];
    let mut s = Swarm::new(&peers, 8).start(2, &[]);
    s.connect(1, false);
    s.commands();
    s.recv(
        1,
        Message::Reject {
            index: 0,
            instead: 1,
        },
    );
    assert!(s
        .commands()
        .iter()
        .any(|c| matches!(c, Command::Close { peer: 1, .. })));
}

#[test]
fn requests_unanswered_while_nothing_comes_are_asked_again() {
    let peers = [(1, true), (2, false)];
    let mut s = Swarm::new(&peers, 8).start(2, &[]);
    let first = s.unchoked_by_plain(1);
    assert_eq!(first.len(), 1);
    // A round before the stall notice: nothing asked again.
    s.advance(5.0);
    s.m.rechoke(s.now);
    assert!(requests(&s.sent(), 1).is_empty());
    s.advance(6.0);
    s.m.rechoke(s.now);
    assert_eq!(requests(&s.sent(), 1).len(), 1, "asked again after 11 s");
    // Not again in the next round.
    s.advance(1.0);
    s.m.rechoke(s.now);
    assert!(requests(&s.sent(), 1).is_empty());
}

#[test]
fn a_request_just_sent_is_not_taken_back_as_stalled() {
    // Found by `hostile_tests`: a round asked a plain neighbour that had
    // just unchoked us, and the stall retry of the same round took that
    // request back; the neighbour then owed two.
    let peers = [(1, true), (2, false), (3, false)];
    let mut s = Swarm::new(&peers, 8).start(2, &[]);
    assert_eq!(s.unchoked_by_plain(1).len(), 1);
    s.connect(3, false);
    s.recv(3, full(8));
    s.sent();
    s.advance(11.0);
    s.recv(3, Message::Unchoke);
    let to_3 = requests(&s.sent(), 3);
    assert_eq!(to_3.len(), 1);
    // The stalled round takes back 1's request, 11 s old, not 3's. (1 is
    // not asked again while 3, which answers, has every piece.)
    s.m.rechoke(s.now);
    let sent = s.sent();
    assert!(requests(&sent, 1).is_empty(), "1 asked again");
    assert!(requests(&sent, 3).is_empty(), "3 owes its request still");
    assert_eq!(s.m.asking(3), Asking::Asked);
}

#[test]
fn a_neighbour_that_left_a_request_unanswered_is_asked_only_for_what_no_other_has() {
    // Found by `hostile_tests` (an honest seed after any neighbours): 3
    // unchokes us and never answers. The stall retry took its request
    // back and asked it again at once, before 1, a seed that answers,
    // could take the piece: a piece every 10 s.
    let peers = [(1, true), (2, false), (3, false)];
    let mut s = Swarm::new(&peers, 8).start(2, &[]);
    s.connect(3, false);
    s.recv(3, only(8, &[0, 1, 2, 3, 4, 5, 6]));
    s.recv(3, Message::Unchoke);
    let [kept] = requests(&s.sent(), 3)[..] else {
        panic!("one request to 3")
    };
    s.advance(11.0);
    let mut to_1 = s.unchoked_by_plain(1);
    s.m.rechoke(s.now);
    let sent = s.sent();
    assert!(requests(&sent, 3).is_empty(), "3 asked again");
    to_1.extend(requests(&sent, 1));
    // 1 sends what it is asked for; 3 is asked for nothing 1 has.
    let mut got = Vec::new();
    while let Some(index) = to_1.pop() {
        s.deliver(1, index);
        got.push(index);
        let sent = s.store_all();
        assert!(requests(&sent, 3).is_empty(), "3 asked while 1 can send");
        to_1.extend(requests(&sent, 1));
    }
    got.sort_unstable();
    assert_eq!(got, (0..8).collect::<Vec<u32>>(), "{kept} among them");
    // A neighbour that unchokes us anew is asked again, and one that only
    // it has is asked of it.
    let mut s = Swarm::new(&peers, 8).start(2, &[0, 1, 2, 3, 4, 5]);
    s.connect(3, false);
    s.recv(3, full(8));
    s.recv(3, Message::Unchoke);
    assert_eq!(requests(&s.sent(), 3).len(), 1);
    s.connect(1, false);
    s.recv(1, only(8, &[6]));
    s.recv(1, Message::Unchoke);
    s.sent();
    s.advance(11.0);
    s.m.rechoke(s.now);
    assert_eq!(requests(&s.sent(), 3), [7], "only 3 has piece 7");
    s.recv(3, Message::Choke);
    s.recv(3, Message::Unchoke);
    assert_eq!(requests(&s.sent(), 3).len(), 1, "unchoked anew");
}

#[test]
fn a_piece_rejected_is_asked_again_at_the_next_round() {
    // The seed suggests a piece we have: nothing else to ask it for, and
    // it sends no more events; the round must ask again by itself.
    let peers = [(1, true), (2, false)];
    let mut s = Swarm::new(&peers, 2).start(2, &[1]);
    s.connect_remote(1);
    s.recv(1, full(2));
    s.recv(1, Message::Unchoke);
    assert_eq!(requests(&s.sent(), 1), [0]);
    s.recv(
        1,
        Message::Reject {
            index: 0,
            instead: 1,
        },
    );
    assert!(requests(&s.sent(), 1).is_empty());
    s.advance(5.0);
    s.m.rechoke(s.now);
    assert_eq!(requests(&s.sent(), 1), [0]);
}

#[test]
fn a_slot_given_up_goes_to_a_waiting_neighbour_at_once() {
    let peers = [(1, true), (2, false), (3, false), (4, false), (5, false)];
    let mut s = Swarm::new(&peers, 8).start(1, &[]);
    for p in 2..=5 {
        s.connect(p, true);
        s.recv(p, Message::Interested);
    }
    s.commands();
    assert_eq!(s.m.unchoked(), &BTreeSet::from([2, 3, 4]));
    s.recv(3, Message::NotInterested);
    let sent = s.sent();
    assert!(has(&sent, 3, &Message::Choke));
    assert!(has(&sent, 5, &Message::Unchoke));
    assert_eq!(s.m.unchoked(), &BTreeSet::from([2, 4, 5]));
}

#[test]
fn in_strict_mode_the_first_round_is_due_once_the_neighbourhood_is_whole() {
    let mut swarm = Swarm::new(&[(1, true), (2, false), (3, false)], 8);
    swarm.strict = true;
    let mut s = swarm.start(1, &[]);
    s.connect(2, false);
    s.recv(2, Message::Interested);
    assert!(s.m.unchoked().is_empty(), "no early unchoke in strict mode");
    assert!(!s.m.take_round_due(s.now));
    s.connect(3, false);
    s.recv(3, Message::NotInterested);
    assert!(s.m.take_round_due(s.now));
    s.commands();
    assert_eq!(s.m.unchoked(), &BTreeSet::from([2]));
    assert!(!s.m.take_round_due(s.now), "once");
}

#[test]
fn a_p2pft_neighbour_gone_without_goodbye_is_waited_for() {
    let mut s = Swarm::new(&[(1, true), (2, false), (3, false)], 1).start(2, &[0]);
    s.m.finished(Ok(()));
    s.connect(1, true);
    s.connect(3, true);
    s.recv(1, full(1));
    s.recv(3, full(1));
    assert!(s.all_done());
    // 3 was killed: no goodbye. We wait for it to come back.
    let conn = s.conns[&3];
    s.m.closed(s.now, conn, 3, CloseReason::Eof);
    assert!(!s.all_done());
    s.advance(19.0);
    assert!(!s.all_done());
    s.advance(1.0);
    assert!(s.all_done(), "given up after the grace");
    // 1 said goodbye: no wait.
    let mut s = Swarm::new(&[(1, true), (2, false)], 1).start(2, &[0]);
    s.m.finished(Ok(()));
    s.connect(1, true);
    s.recv(1, full(1));
    s.recv(1, Message::Goodbye);
    let conn = s.conns[&1];
    s.m.closed(s.now, conn, 1, CloseReason::Eof);
    assert!(s.all_done());
}

/// Peer `me` of `peers` (1-piece file, 1 the seed), with the file when
/// `complete`: the seed connected and known complete, then each of
/// `connected` connected, and `leaver` connected and gone without a goodbye.
fn one_left(
    peers: &[(u32, bool)],
    me: u32,
    complete: bool,
    connected: &[u32],
    leaver: u32,
) -> Script {
    let pieces = if complete { 1 } else { 2 };
    let mut s = Swarm::new(peers, pieces).start(me, if complete { &[0] } else { &[] });
    if complete {
        s.m.finished(Ok(()));
    }
    s.connect(1, true);
    s.recv(1, full(pieces));
    for &p in connected {
        s.connect(p, true);
    }
    s.connect(leaver, true);
    s.m.closed(s.now, s.conns[&leaver], leaver, CloseReason::Eof);
    s
}

impl Script {
    /// `secs` later, a choking round.
    fn round_after(&mut self, secs: f64) {
        self.advance(secs);
        self.m.rechoke(self.now);
    }
}

#[test]
fn a_peer_that_dials_us_and_left_without_the_file_ends_the_run_after_the_wait() {
    let departed = |s: &Script, id: u32| matches!(s.m.fatal(), Some(EngineError::Departed { peer, .. }) if *peer == id);
    let three = [(1, true), (2, false), (3, false)];
    let wait = RETURN_WAIT as f64;
    // We (2) have the file; 3, listed after us, dialled us, then was
    // killed with nothing: it will never dial again, and we never dial it.
    let mut s = one_left(&three, 2, true, &[], 3);
    s.round_after(wait - 1.0);
    assert!(s.m.fatal().is_none(), "still within the wait");
    assert!(!s.all_done());
    s.round_after(1.0);
    assert!(departed(&s, 3), "{:?}", s.m.fatal().map(|e| e.to_string()));
    let text = s.m.fatal().unwrap().to_string();
    assert!(
        text.contains("peer 3 left, not known to have the file"),
        "{text}"
    );

    // It came back within the wait: no failure.
    let mut s = one_left(&three, 2, true, &[], 3);
    s.advance(wait - 1.0);
    s.connect(3, true);
    s.round_after(10.0);
    assert!(s.m.fatal().is_none());

    // We still lack the file: we stay as long as we need.
    let mut s = one_left(&three, 2, false, &[], 3);
    s.round_after(wait * 2.0);
    assert!(s.m.fatal().is_none(), "we lack the file");

    // Another peer (3) still lacks it and may need our pieces: we stay
    // until it has them, then give up on 4.
    let mut s = one_left(
        &[(1, true), (2, false), (3, false), (4, false)],
        2,
        true,
        &[3],
        4,
    );
    s.round_after(wait * 2.0);
    assert!(s.m.fatal().is_none(), "3 lacks the file");
    s.recv(3, Message::Have(0));
    s.round_after(1.0);
    assert!(departed(&s, 4), "{:?}", s.m.fatal().map(|e| e.to_string()));

    // A peer listed before us is our dialler's to give up on.
    let mut s = one_left(&three, 3, true, &[], 2);
    s.round_after(wait * 2.0);
    assert!(s.m.fatal().is_none(), "2 is redialled, not waited for");

    // A seed of PeerInfo.cfg listed after us counts as having the file
    // once it has been away a while (`known_complete`): not departed.
    let mut s = one_left(&[(1, true), (2, false), (3, true)], 2, true, &[], 3);
    s.round_after(wait * 2.0);
    assert!(s.m.fatal().is_none(), "a seed is not waited for");
}

#[test]
fn a_goodbye_goes_to_p2pft_neighbours_only_at_the_usual_end() {
    let mut s = Swarm::new(&[(1, true), (2, false), (3, false)], 1).start(1, &[]);
    s.connect(2, true);
    s.connect(3, false);
    s.commands();
    s.m.end();
    let sent = s.sent();
    assert_eq!(sent, vec![(2, Message::Goodbye)]);
    let mut s = Swarm::new(&[(1, true), (2, false)], 1).start(1, &[]);
    s.connect(2, true);
    s.m.interrupt(2);
    s.commands();
    s.m.end();
    assert!(s.sent().is_empty(), "no goodbye after a signal");
}

// ---- hostile neighbours ---------------------------------------------------

#[test]
fn an_unrequested_piece_is_dropped_and_the_fourth_closes_the_connection() {
    let mut s = Swarm::new(&[(1, true), (2, false)], 8).start(2, &[]);
    s.connect(1, true);
    s.recv(1, full(8));
    s.commands();
    for i in 0..MAX_UNREQUESTED_PIECES {
        s.deliver(1, i);
        let commands = s.commands();
        assert!(!commands.iter().any(|c| matches!(c, Command::Store { .. })));
        let closed = commands
            .iter()
            .any(|c| matches!(c, Command::Close { peer: 1, .. }));
        assert_eq!(closed, i + 1 == MAX_UNREQUESTED_PIECES);
    }
    assert_eq!(s.m.have_count(), 0);
}

#[test]
fn a_neighbour_sending_bad_pieces_is_banned_and_asked_for_nothing_more() {
    let mut s = Swarm::new(&[(1, true), (2, true), (3, false)], 8).start(3, &[]);
    s.connect(1, false);
    s.recv(1, full(8));
    s.recv(1, Message::Unchoke);
    for strike in 1..=MAX_BAD_PIECES {
        let asked = requests(&s.sent(), 1);
        assert_eq!(asked.len(), 1, "strike {strike}");
        s.arrive(1, asked[0]);
        s.check(1, asked[0], false);
    }
    let commands = s.commands();
    assert!(commands
        .iter()
        .any(|c| matches!(c, Command::Close { peer: 1, .. })));
    // It comes back: connected, but never asked.
    assert!(s.unchoked_by_plain(1).is_empty());
}

#[test]
fn a_newer_connection_replaces_the_older_one() {
    let mut s = Swarm::new(&[(1, true), (2, false)], 8).start(1, &[]);
    let old = s.connect(2, true);
    s.commands();
    let new = s.connect(2, true);
    let commands = s.commands();
    assert!(commands.contains(&Command::Close { conn: old, peer: 2 }));
    assert!(commands.iter().any(|c| matches!(c,
        Command::Send { conn, message: Message::Bitfield(_), .. } if *conn == new)));
    // The old connection's frames are ignored.
    s.m.frame(s.now, old, 2, Message::Interested);
    assert!(s.commands().is_empty());
}

#[test]
fn a_flood_of_frames_closes_the_connection() {
    let mut s = Swarm::new(&[(1, true), (2, false)], 2).start(1, &[]);
    s.connect(2, false);
    s.commands();
    let allowed = FRAME_ALLOWANCE + 4 * 2;
    for _ in 0..allowed {
        s.recv(2, Message::NotInterested);
    }
    assert!(!s
        .commands()
        .iter()
        .any(|c| matches!(c, Command::Close { .. })));
    s.recv(2, Message::NotInterested);
    assert!(s
        .commands()
        .iter()
        .any(|c| matches!(c, Command::Close { peer: 2, .. })));
}

#[test]
fn a_writer_that_cannot_keep_up_drops_and_redials_its_neighbour() {
    let mut s = Swarm::new(&[(1, true), (2, false)], 2).start(2, &[]);
    let conn = s.connect(1, false);
    s.commands();
    s.m.unwritable(s.now, conn, 1, true);
    let commands = s.commands();
    assert!(commands.contains(&Command::Close { conn, peer: 1 }));
    assert!(
        commands.contains(&Command::Dial(1)),
        "1 is above us: dialled again"
    );
}

// ---- replay ---------------------------------------------------------------

/// A leecher among a seed and two p2pft leechers, pieces, chokes and
/// rounds; returns every command in order.
fn scripted_run(seed: u64) -> Vec<String> {
    let mut swarm = Swarm::new(&[(1, true), (2, false), (3, false), (4, false)], 48);
    swarm.seed = seed;
    let mut s = swarm.start(3, &[]);
    s.connect(1, false);
    s.connect(2, true);
    s.connect(4, true);
    s.recv(1, full(48));
    s.recv(2, only(48, &[1, 5, 7, 30]));
    s.recv(4, only(48, &[]));
    s.recv(4, Message::Interested);
    s.recv(2, Message::Interested);
    s.recv(1, Message::Unchoke);
    s.recv(2, Message::Unchoke);
    let mut sent = s.sent();
    for round in 0..30 {
        for (peer, message) in std::mem::take(&mut sent) {
            if let Message::Request(i) = message {
                if round % 7 == 3 && peer == 2 {
                    s.recv(2, Message::Choke);
                    s.recv(2, Message::Unchoke);
                } else {
                    s.deliver(peer, i);
                }
            }
        }
        sent = s.store_all();
        s.advance(0.4);
        if round % 5 == 4 {
            s.m.rechoke(s.now);
        }
        if round % 9 == 8 {
            s.m.reoptimise();
        }
        sent.extend(s.sent());
    }
    s.commands();
    std::mem::take(&mut s.trace)
}

#[test]
fn a_seeded_run_replays_exactly() {
    let first = scripted_run(42);
    assert!(first.len() > 100, "a run with something in it");
    assert_eq!(first, scripted_run(42));
    assert_ne!(first, scripted_run(43), "the seed decides the random picks");
}

#[test]
fn demand_says_what_a_leechers_download_waits_on() {
    let peers = [(1, true), (2, false), (3, false)];
    let mut s = Swarm::new(&peers, 4).start(2, &[]);
    assert_eq!(s.m.demand(), Demand::NoneHeld);
    s.connect_remote(3);
    s.recv(3, Message::Bitfield(Bitfield::empty(4)));
    assert_eq!(s.m.demand(), Demand::NoneHeld);
    s.connect_remote(1);
    s.recv(1, full(4));
    assert_eq!(s.m.demand(), Demand::Choked);
    s.recv(1, Message::Unchoke);
    assert_eq!(requests(&s.sent(), 1).len(), 1);
    assert_eq!(s.m.demand(), Demand::Asked);
}

#[test]
fn asking_says_how_we_stand_towards_a_neighbours_pieces() {
    let peers = [(1, true), (2, false), (3, false), (4, false)];
    let mut s = Swarm::new(&peers, 4).start(2, &[]);
    assert_eq!(s.m.asking(1), Asking::Nothing, "not connected");
    s.connect_remote(1);
    s.recv(1, full(4));
    assert_eq!(s.m.asking(1), Asking::Choked);
    assert!(s.m.could_ask(1), "it has pieces nobody was asked for");
    s.recv(1, Message::Unchoke);
    let asked = requests(&s.sent(), 1);
    assert_eq!(asked.len(), 1);
    assert_eq!(s.m.asking(1), Asking::Asked);
    // Its only piece is asked of 1 already.
    s.connect_remote(3);
    s.recv(3, only(4, &asked));
    assert!(!s.m.could_ask(3));
    s.recv(3, Message::Unchoke);
    assert!(requests(&s.sent(), 3).is_empty());
    assert_eq!(s.m.asking(3), Asking::Elsewhere);
    s.connect_remote(4);
    s.recv(4, Message::Bitfield(Bitfield::empty(4)));
    s.recv(4, Message::Unchoke);
    assert_eq!(s.m.asking(4), Asking::Nothing);
    // Who is interested in us, and whether we unchoke them.
    assert_eq!(s.m.interested().count(), 0);
    s.recv(4, Message::Interested);
    // A slot is free: it is unchoked at once (the early unchoke).
    assert_eq!(s.m.interested().collect::<Vec<_>>(), vec![(4, true)]);
}

/// How many neighbours a leecher unchokes before and after one of six
/// interested ones asked for two pieces and its writer wrote one, or both
/// when `all_written`.
fn spare_after_serving(strict: bool, same_host: bool, all_written: bool) -> (usize, usize) {
    let peers: Vec<(u32, bool)> = (1..=8).map(|id| (id, id == 1)).collect();
    let mut swarm = Swarm::new(&peers, 8);
    swarm.strict = strict;
    let mut s = swarm.start(2, &[0, 1, 2, 3]);
    for p in 3..=8 {
        s.connect_on(p, true, same_host);
        s.recv(p, Message::Bitfield(Bitfield::empty(8)));
        s.recv(p, Message::Interested);
    }
    if strict {
        s.advance(5.0);
        s.m.rechoke(s.now);
        s.m.reoptimise();
    }
    s.commands();
    let before = s.m.unchoked().len();
    let asker = *s.m.unchoked().iter().next().expect("someone unchoked");
    s.recv(asker, Message::Request(0));
    s.recv(asker, Message::Request(1));
    assert_eq!(served(&s.commands()).len(), 2);
    let conn = s.conns[&asker];
    // One of the two is written: the other is still to send.
    s.m.served(conn, asker);
    assert_eq!(s.m.unchoked().len(), before, "a piece is still to send");
    if all_written {
        s.m.served(conn, asker);
        // Said twice for one piece is said once.
        s.m.served(conn, asker);
    }
    (before, s.m.unchoked().len())
}

#[test]
fn a_peer_whose_writers_ran_out_unchokes_a_spare_neighbour_until_the_round() {
    // k = 2: two preferred and one optimistic of six interested.
    assert_eq!(spare_after_serving(false, false, false), (3, 3));
    assert_eq!(spare_after_serving(false, false, true), (3, 4));
    // Not with --strict, nor on this host (the CPUs set the pace there).
    assert_eq!(spare_after_serving(true, false, true), (3, 3));
    assert_eq!(spare_after_serving(false, true, true), (3, 3));

    let peers: Vec<(u32, bool)> = (1..=10).map(|id| (id, id == 1)).collect();
    let mut s = Swarm::new(&peers, 8).start(2, &[0, 1, 2, 3]);
    s.interested_remotes(&(3..=10).collect::<Vec<_>>());
    let unchoked: Vec<u32> = s.m.unchoked().iter().copied().collect();
    assert_eq!(unchoked.len(), 3);
    let asker = unchoked[0];
    let conn = s.conns[&asker];
    for round in 0..6 {
        s.recv(asker, Message::Request(round % 4));
        s.commands();
        s.m.served(conn, asker);
    }
    let sent = s.sent();
    assert_eq!(s.m.unchoked().len(), 3 + SPARE_SLOTS, "{sent:?}");
    // A spare that is no longer interested leaves its slot.
    let spare =
        *s.m.unchoked()
            .iter()
            .find(|p| !unchoked.contains(p))
            .expect("a spare");
    s.recv(spare, Message::NotInterested);
    assert!(has(&s.sent(), spare, &Message::Choke));
    assert_eq!(s.m.unchoked().len(), 2 + SPARE_SLOTS);
    // The round takes the spare slots back: k + 1 at most again (fewer
    // when the optimistic one is now preferred too).
    s.advance(5.0);
    s.m.rechoke(s.now);
    assert!(s.m.unchoked().len() <= 3, "{:?}", s.m.unchoked());
}

/// Peer 2 (pieces 0-3 of 8) with p2pft neighbours 3-7, on this host or
/// not: of the three it unchokes first, one takes three of its pieces
/// (written to its socket), one two, one none, and a choked one sends it
/// two. The preferred neighbours of the next round, the two that took
/// (in order of ID), and the one that sent.
fn preferred_after_taking(same_host: bool) -> (Vec<u32>, Vec<u32>, u32) {
    let peers: Vec<(u32, bool)> = (1..=7).map(|id| (id, id == 1)).collect();
    let mut s = Swarm::new(&peers, 8).start(2, &[0, 1, 2, 3]);
    for p in 3..=7 {
        s.connect_on(p, true, same_host);
    }
    for p in 3..=7 {
        s.recv(p, Message::Interested);
    }
    s.commands();
    let unchoked: Vec<u32> = s.m.unchoked().iter().copied().collect();
    assert_eq!(unchoked.len(), 3, "k = 2 and the optimistic one");
    let (most, some) = (unchoked[0], unchoked[2]);
    let feeder = (3..=7)
        .find(|p| !unchoked.contains(p))
        .expect("a choked one");
    s.recv(feeder, only(8, &[4, 5]));
    s.recv(feeder, Message::Unchoke);
    let mut asked = requests(&s.sent(), feeder);
    let mut fed = 0;
    while fed < 2 {
        assert!(!asked.is_empty(), "asks the feeder");
        for index in asked {
            s.deliver(feeder, index);
            fed += 1;
        }
        asked = requests(&s.store_all(), feeder);
    }
    for (peer, count) in [(most, 3), (some, 2)] {
        for index in 0..count {
            s.recv(peer, Message::Request(index));
            s.commands();
            s.m.served(s.conns[&peer], peer);
        }
    }
    s.advance(5.0);
    s.m.rechoke(s.now);
    let preferred = s
        .commands()
        .into_iter()
        .find_map(|c| match c {
            Command::Log(SpecLine::PreferredNeighbors(ids)) => Some(ids),
            _ => None,
        })
        .expect("a new preferred list");
    let mut took = vec![most, some];
    took.sort_unstable();
    (preferred, took, feeder)
}

#[test]
fn across_hosts_the_rounds_prefer_the_p2pft_neighbours_that_took_the_most() {
    // Another host: by what they took; what the feeder sent counts for nothing.
    let (preferred, took, _) = preferred_after_taking(false);
    assert_eq!(preferred, took);
    // This host (the CPUs, not links, set the pace): SPEC.md's rate, what
    // each sent us.
    let (preferred, _, feeder) = preferred_after_taking(true);
    assert!(preferred.contains(&feeder), "{preferred:?}, {feeder}");
}

/// A leecher lacking only piece 3 asks 3 for it; 4 unchokes it too. The
/// requests each sends, to 3 and to 4, after `wait` seconds and a round.
fn endgame_after(strict: bool, wait: f64) -> (Vec<u32>, Vec<u32>, Script) {
    let peers = [(1, true), (2, false), (3, false), (4, false)];
    let mut swarm = Swarm::new(&peers, 4);
    swarm.strict = strict;
    let mut s = swarm.start(2, &[0, 1, 2]);
    s.connect_remote(3);
    s.recv(3, full(4));
    s.recv(3, Message::Unchoke);
    let to_3 = requests(&s.sent(), 3);
    s.connect_remote(4);
    s.recv(4, full(4));
    s.recv(4, Message::Unchoke);
    let mut to_4 = requests(&s.sent(), 4);
    s.advance(wait);
    s.m.rechoke(s.now);
    to_4.extend(requests(&s.sent(), 4));
    (to_3, to_4, s)
}

#[test]
fn a_last_piece_awaited_too_long_is_asked_of_another_neighbour_too() {
    assert!(
        endgame_after(false, 0.5).1.is_empty(),
        "not yet awaited long"
    );
    let (to_3, to_4, _) = endgame_after(true, 5.0);
    assert_eq!(to_3, [3]);
    assert!(to_4.is_empty(), "SPEC.md: no second request");
    let (to_3, to_4, mut s) = endgame_after(false, ENDGAME_AFTER.as_secs_f64());
    assert_eq!((to_3, to_4), (vec![3], vec![3]));
    // 3 chokes us: the piece is still awaited from 4, not asked again.
    s.recv(3, Message::Choke);
    assert!(requests(&s.sent(), 4).is_empty());
    assert_eq!(s.m.asking(4), Asking::Asked);
    // 4's copy comes and is stored; nothing is asked any more.
    s.deliver(4, 3);
    s.store_all();
    assert_eq!(s.m.have_count(), 4);
}

#[test]
fn a_piece_already_in_is_never_asked_for_again_in_the_endgame() {
    // Found by `hostile_tests`: a piece came from the neighbour asked second
    // while the first still owed it; the endgame then asked for it again.
    let peers = [(1, true), (2, false), (3, false), (4, false), (5, false)];
    let swarm = Swarm::new(&peers, 4);
    let mut s = swarm.start(2, &[0, 1]);
    s.connect_remote(3);
    s.recv(3, full(4));
    s.recv(3, Message::Unchoke);
    let first = requests(&s.sent(), 3);
    s.advance(0.1);
    s.connect_remote(5);
    s.recv(5, full(4));
    s.recv(5, Message::Unchoke);
    let second = requests(&s.sent(), 5);
    assert_eq!((first.len(), second.len()), (1, 1), "{first:?} {second:?}");
    // Both awaited past the endgame's patience: 4 is asked for the oldest.
    s.advance(ENDGAME_AFTER.as_secs_f64());
    s.connect_remote(4);
    s.recv(4, full(4));
    s.recv(4, Message::Unchoke);
    assert_eq!(requests(&s.sent(), 4), first);
    // 4 sends it, while 3 still owes it: 4 may be asked for the other
    // piece, never for this one again, before or after it is stored.
    s.deliver(4, first[0]);
    let sent = s.store_all();
    assert_eq!(s.m.have_count(), 3);
    assert!(requests(&sent, 4).contains(&second[0]), "{sent:?}");
    for (peer, message) in sent {
        assert_ne!(message, Message::Request(first[0]), "asked {peer} again");
    }
}

/// Leecher 2 lacks only piece 3, asks plain neighbour 3 for it, and is
/// choked by 3; 4 is in PeerInfo.cfg but not connected.
fn choked_with_the_last_piece_asked(strict: bool) -> Script {
    let peers = [(1, true), (2, false), (3, false), (4, false)];
    let mut swarm = Swarm::new(&peers, 4);
    swarm.strict = strict;
    let mut s = swarm.start(2, &[0, 1, 2]);
    assert_eq!(s.unchoked_by_plain(3), [3]);
    s.recv(3, Message::Choke);
    s
}

#[test]
fn a_late_answer_after_a_choke_is_not_asked_for_again_while_it_is_checked() {
    // Found by `hostile_tests`: 3 chokes us with our request out, so it is
    // asked of 4; 3 unchokes us again and sends its copy after all. Its
    // bytes are in: the endgame must not ask 3 for it while it is hashed.
    let mut s = choked_with_the_last_piece_asked(false);
    s.connect_remote(4);
    s.recv(4, full(4));
    s.recv(4, Message::Unchoke);
    assert_eq!(requests(&s.sent(), 4), [3]);
    s.advance(0.1);
    s.recv(3, Message::Unchoke);
    assert!(requests(&s.sent(), 3).is_empty(), "asked of 4 already");
    s.advance(ENDGAME_AFTER.as_secs_f64());
    s.arrive(3, 3);
    assert!(
        requests(&s.sent(), 3).is_empty(),
        "asked for what is arriving"
    );
    s.check(3, 3, true);
    s.store_all();
    assert_eq!(s.m.have_count(), 4);
}

/// We (2) lack only piece 3 and ask 3, a p2pft neighbour on another host
/// with every piece that unchokes us, for it.
fn asked_of_remote_for_the_last_piece() -> Script {
    let peers = [(1, true), (2, false), (3, false)];
    let swarm = Swarm::new(&peers, 4);
    let mut s = swarm.start(2, &[0, 1, 2]);
    s.connect_remote(3);
    s.recv(3, full(4));
    s.recv(3, Message::Unchoke);
    assert_eq!(requests(&s.sent(), 3), [3]);
    s
}

#[test]
fn a_piece_rejected_after_a_choke_is_not_taken_if_it_comes() {
    let mut s = asked_of_remote_for_the_last_piece();
    // A choke gives the request up; a piece already on its way would still
    // be taken. The reject says none is.
    s.recv(3, Message::Choke);
    s.recv(
        3,
        Message::Reject {
            index: 3,
            instead: 3,
        },
    );
    s.deliver(3, 3);
    s.store_all();
    assert_eq!(s.m.have_count(), 3, "a rejected piece was taken");
}

#[test]
fn a_late_answer_after_a_choke_is_not_asked_of_anyone_while_it_is_checked() {
    // Found by `hostile_tests`, spec-strict: the choke freed the piece for
    // any neighbour; its bytes then come all the same and are hashed while
    // 4 unchokes us. 4 must not be asked for it.
    let mut s = choked_with_the_last_piece_asked(true);
    s.connect(4, false);
    s.recv(4, full(4));
    s.sent();
    s.arrive(3, 3);
    s.recv(4, Message::Unchoke);
    assert!(requests(&s.sent(), 4).is_empty(), "asked for what is in");
    s.check(3, 3, true);
    s.store_all();
    assert_eq!(s.m.have_count(), 4);
}

#[test]
fn a_plain_neighbours_answered_request_leaves_no_time_behind() {
    // Found by `hostile_tests`: a plain neighbour's requests kept their
    // times after their pieces came, so a piece asked of it again took
    // the first request's time, and the stall retry took a request just
    // sent back (the neighbour then owed two).
    let peers = [(1, true), (2, false)];
    let mut s = Swarm::new(&peers, 1).start(2, &[]);
    assert_eq!(s.unchoked_by_plain(1), [0]);
    // Its copy fails its check 11 s later (no piece in all that time);
    // the only piece is asked of it again.
    s.advance(11.0);
    s.arrive(1, 0);
    s.check(1, 0, false);
    assert_eq!(requests(&s.sent(), 1), [0]);
    // The stalled round leaves that request, 0 s old, where it is.
    s.m.rechoke(s.now);
    assert!(
        requests(&s.sent(), 1).is_empty(),
        "taken back and asked again"
    );
}

#[test]
fn a_piece_being_checked_is_not_freed_by_a_choke_from_the_other_asked() {
    // Asked of 3 and, in the endgame, of 4; 4's copy is in and being
    // hashed when 3 chokes us. The piece must not become wanted again
    // (only the endgame looked at pieces being checked; `release` did not).
    let peers = [(1, true), (2, false), (3, false), (4, false)];
    let swarm = Swarm::new(&peers, 4);
    let mut s = swarm.start(2, &[0, 1, 2]);
    assert_eq!(s.unchoked_by_plain(3), [3]);
    s.advance(ENDGAME_AFTER.as_secs_f64());
    assert_eq!(s.unchoked_by_plain(4), [3]);
    s.arrive(4, 3);
    s.recv(3, Message::Choke);
    assert!(requests(&s.sent(), 4).is_empty(), "asked for what is in");
    s.check(4, 3, true);
    s.store_all();
    assert_eq!(s.m.have_count(), 4);
}

/// 3 chokes us with our request for piece 3 out, unchokes us, and is
/// asked for it again: two requests on one connection, either may be
/// answered.
fn asked_twice_of_3() -> Script {
    let mut s = choked_with_the_last_piece_asked(false);
    s.recv(3, Message::Unchoke);
    assert_eq!(requests(&s.sent(), 3), [3], "asked again");
    s
}

#[test]
fn a_bad_copy_of_a_piece_asked_twice_does_not_free_the_other_copy_being_checked() {
    // Found by `hostile_tests`: 3 chokes us with our request out, unchokes
    // us, and is asked for the same piece again; it answers both. The copy
    // checked first fails: the other is still being hashed, so the piece
    // is not wanted again (nor asked of 3 a third time) until it fails too.
    let mut s = asked_twice_of_3();
    s.arrive(3, 3);
    s.arrive(3, 3);
    s.check(3, 3, false);
    assert!(requests(&s.sent(), 3).is_empty(), "asked for what is in");
    s.check(3, 3, true);
    s.store_all();
    assert_eq!(s.m.have_count(), 4);
}

#[test]
fn a_piece_rejected_after_its_bytes_came_is_asked_for_again() {
    // Found by `hostile_tests`: a copy in, then a reject of its request.
    // The copy is no answer now (its check will find it unrequested), so
    // the piece is wanted again, and asked for at the next round: before,
    // it counted as in hand for as long as 3 stayed connected.
    let mut s = asked_of_remote_for_the_last_piece();
    s.arrive(3, 3);
    s.recv(
        3,
        Message::Reject {
            index: 3,
            instead: 0,
        },
    );
    s.check(3, 3, true);
    s.store_all();
    assert_eq!(s.m.have_count(), 3, "a rejected piece was taken");
    s.round_after(1.0);
    assert_eq!(requests(&s.sent(), 3), [3], "piece 3 never asked for again");
}

#[test]
fn a_reject_that_suggests_the_piece_it_rejects_is_not_asked_again_this_round() {
    // Found by `hostile_tests`: 3 rejects piece 3 and suggests piece 3.
    // Taking the suggestion asked for it again at once, and each further
    // such reject did the same: a request for every reject, and the list
    // of refused pieces grew by one each time, until the round.
    let mut s = asked_of_remote_for_the_last_piece();
    let reject = Message::Reject {
        index: 3,
        instead: 3,
    };
    s.recv(3, reject.clone());
    assert!(requests(&s.sent(), 3).is_empty(), "asked again at once");
    s.recv(3, reject);
    assert_eq!(s.m.neighbours[&3].refused, [3]);
    s.round_after(1.0);
    assert_eq!(requests(&s.sent(), 3), [3], "asked again at the round");
}

#[test]
fn a_bad_copy_of_a_piece_asked_twice_and_sent_once_is_asked_for_again() {
    // Asked twice of 3 (before a choke and after), sent once, and that
    // copy fails its check: the piece is asked for again, though one
    // request is still open (the one the choke gave up).
    let mut s = asked_twice_of_3();
    s.arrive(3, 3);
    s.check(3, 3, false);
    assert_eq!(requests(&s.sent(), 3), [3], "not asked after a bad copy");
}

#[test]
fn a_silent_neighbour_is_not_the_endgames_second_asker() {
    // 3 left our request unanswered through a stall retry; 4, which
    // answers, was then asked for the piece. A second of waiting later the
    // endgame would ask 3 too, taking the place of a neighbour that answers.
    let peers = [(1, true), (2, false), (3, false), (4, false)];
    let mut s = Swarm::new(&peers, 4).start(2, &[0, 1, 2]);
    s.connect_remote(3);
    s.recv(3, full(4));
    s.recv(3, Message::Unchoke);
    assert_eq!(requests(&s.sent(), 3), [3]);
    s.advance(11.0);
    s.connect_remote(4);
    s.recv(4, full(4));
    s.recv(4, Message::Unchoke);
    s.m.rechoke(s.now);
    let sent = s.sent();
    assert_eq!(requests(&sent, 4), [3], "asked of 4 once 3 was silent");
    assert!(requests(&sent, 3).is_empty());
    s.round_after(ENDGAME_AFTER.as_secs_f64() + 0.1);
    assert!(requests(&s.sent(), 3).is_empty(), "3 asked in the endgame");
}
