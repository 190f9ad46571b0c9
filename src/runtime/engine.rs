//! The engine: the driver of a peer's protocol core ([`Machine`]).
//!
//! It owns the I/O the core must not do: the event channel and its
//! `select!` loop, the choking and checkpoint timers, the clock, the
//! connections (writer queues and sockets) and the disk work, and it carries
//! out the core's [`Command`]s. Every protocol decision is the core's.
//!
//! Concurrency contract
//! - Threads: one engine thread (this module); per neighbour one reader and
//!   one writer ([`crate::runtime::net`]); one listener plus short-lived handshake and
//!   dial threads; [`Workers`] for blocking disk work (piece writes, which
//!   wait for the device with direct I/O, progress checkpoints or flushes,
//!   the final flush). Readers verify (SHA-1) the pieces they receive.
//! - Channels: every producer sends [`Event`]s to the engine over one bounded
//!   channel ([`EVENT_QUEUE`]). The engine sends to each writer over a queue
//!   ([`crate::runtime::mailbox`]: a writer with nothing to do sleeps at
//!   once) that never blocks it (unbounded, with a limit it checks itself), so a
//!   slow neighbour cannot stall it; a queue that reaches its limit (the
//!   neighbour stopped reading) ends that connection.
//!   Writers also say, over an unbounded channel of their own (so a writer
//!   never waits on the engine), each time a served piece is in its socket:
//!   the core's spare upload slots go by it.
//!   The choke timers are crossbeam `tick` channels in the same `select!`;
//!   in strict mode they restart when the first round comes early (see
//!   `check_neighbourhood_whole`).
//! - State: bitfields, interest, choke sets, outstanding requests and piece
//!   states live in the core, owned by this thread and nowhere else; other
//!   threads see only the read-only store and the status [`Counters`].
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
//! - Memory: what the core bounds (see [`crate::machine`]), plus piece buffers
//!   that come from and return to one [`BufferPool`], which keeps the last
//!   [`max_kept`] written pieces to serve them and has a budget beyond which
//!   it reuses those rather than grow.
//!
//! Never blocks on socket I/O, disk I/O or hashing.

use crate::integrity::meta::Verifier;
use crate::integrity::progress::Checkpointer;
use crate::machine::{Command, EngineError, Machine, MachineSetup, SpecLine};
use crate::machine::{ConnId, FinishError};
use crate::protocol::bitfield::Bitfield;
use crate::protocol::config::Config;
use crate::protocol::wire::Limits;
use crate::runtime::events::Event;
use crate::runtime::mailbox::{mailbox, MailSender, Refused};
use crate::runtime::net::{self, Out};
use crate::runtime::rate_limit::RateLimit;
use crate::runtime::speclog::SpecLog;
use crate::runtime::store::Store;
use crate::runtime::workers::Workers;
use crate::support::piecebuf::BufferPool;
use crate::support::piecebuf::PieceBuf;
use crate::support::status::Counters;
use crossbeam_channel::{select, tick, Receiver, Sender};
use std::collections::{HashMap, HashSet};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Capacity of the engine's event queue.
pub(crate) const EVENT_QUEUE: usize = 1024;
/// How long writers get to flush their last messages at shutdown.
const FLUSH_GRACE: Duration = Duration::from_secs(5);
/// How often a leecher without metadata records its progress durably.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);
/// How often a leecher with metadata flushes its file: it resumes by
/// re-hashing, so it keeps no record, and a flush only keeps the device
/// busy during the download rather than all at its end (see
/// docs/PERFORMANCE.md).
const FLUSH_INTERVAL: Duration = Duration::from_millis(1000);
/// How long in-flight piece writes get to land after a signal.
const INTERRUPT_GRACE: Duration = Duration::from_secs(1);
/// Bytes of written pieces kept in memory to serve them (see
/// [`crate::support::piecebuf::BufferPool`]): a piece is asked for soon after it was
/// announced, and each hit is one read fewer on a device that sets the
/// pace. With the pool's budget (see `peer`) it keeps a leecher's peak RSS
/// flat for any file size (figures in docs/PERFORMANCE.md).
const KEPT_BYTES: u64 = 14 * 1024 * 1024;

/// Written pieces of `piece_size` kept in memory to be served, when the
/// store may also hold up to `held_bytes` of pieces not yet written (see
/// [`crate::runtime::coalesce`]): both together within `KEPT_BYTES`.
pub(crate) fn max_kept(piece_size: u32, held_bytes: u64) -> usize {
    (KEPT_BYTES.saturating_sub(held_bytes) / u64::from(piece_size)) as usize
}

/// The peer's rate caps (`P2pftMaxUploadRate`, `P2pftMaxDownloadRate`).
struct Caps {
    upload: Option<Arc<RateLimit>>,
    download: Option<Arc<RateLimit>>,
}

/// One connection's edge: its writer's queue and its socket.
struct Link {
    queue: MailSender<Out>,
    stream: TcpStream,
}

/// What a peer starts from.
pub(crate) struct EngineSetup {
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

pub(crate) struct Engine {
    core: Machine,
    limits: Limits,
    store: Arc<Store>,
    log: SpecLog,
    counters: Arc<Counters>,
    disk: Workers,
    connect_timeout: Duration,
    events_tx: Sender<Event>,
    events_rx: Receiver<Event>,
    writers_done_tx: Sender<u32>,
    writers_done_rx: Receiver<u32>,
    /// Writers say here each time a served piece is in its socket.
    written_tx: Sender<(ConnId, u32)>,
    written_rx: Receiver<(ConnId, u32)>,
    writers_running: usize,
    next_conn: ConnId,
    links: HashMap<ConnId, Link>,
    stop: Arc<AtomicBool>,
    verifier: Option<Arc<Verifier>>,
    checkpointer: Option<Arc<Checkpointer>>,
    buffers: Arc<BufferPool>,
    /// How redials greet (and, with a secret, authenticate).
    greeting: net::Greeting,
    /// Rate caps shared by every connection's writer and reader.
    caps: Caps,
}

impl Engine {
    pub(crate) fn new(setup: EngineSetup) -> Engine {
        let layout = setup.config.common.layout;
        let cap = |rate: Option<u64>| rate.map(|r| Arc::new(RateLimit::new(r)));
        let caps = Caps {
            upload: cap(setup.config.common.max_upload_rate),
            download: cap(setup.config.common.max_download_rate),
        };
        let (writers_done_tx, writers_done_rx) = crossbeam_channel::unbounded();
        let (written_tx, written_rx) = crossbeam_channel::unbounded();
        let core = Machine::new(MachineSetup {
            me: setup.me,
            config: setup.config,
            have: setup.have,
            counters: Arc::clone(&setup.counters),
            rng_seed: setup.rng_seed,
            checkpoints: setup.checkpointer.is_some(),
            granule_pieces: setup.store.granule_pieces(),
            return_wait: setup.connect_timeout,
            now: Instant::now(),
        });
        Engine {
            core,
            limits: Limits::new(layout),
            store: setup.store,
            log: setup.log,
            counters: setup.counters,
            disk: setup.disk,
            connect_timeout: setup.connect_timeout,
            events_tx: setup.events.0,
            events_rx: setup.events.1,
            writers_done_tx,
            writers_done_rx,
            written_tx,
            written_rx,
            writers_running: 0,
            next_conn: 0,
            links: HashMap::new(),
            stop: setup.stop,
            verifier: setup.verifier,
            checkpointer: setup.checkpointer,
            buffers: setup.buffers,
            greeting: setup.greeting,
            caps,
        }
    }

    /// Runs until every peer has the file (Ok) or a fatal error.
    pub(crate) fn run(mut self) -> Result<(), EngineError> {
        let common = &self.core.config().common;
        let (p, m) = (
            common.unchoking_interval,
            common.optimistic_unchoking_interval,
        );
        let mut rechoke = tick(p);
        let mut optimistic = tick(m);
        let checkpoint = tick(if self.verifier.is_some() {
            FLUSH_INTERVAL
        } else {
            CHECKPOINT_INTERVAL
        });
        while !self.core.all_done(Instant::now()) && self.core.fatal().is_none() {
            if self.events_rx.is_empty() {
                // Nothing left to handle: the log catches up before we wait.
                self.log.flush();
            }
            select! {
                recv(self.events_rx) -> event => {
                    let event = event.expect("the engine holds a sender");
                    self.handle(event);
                    if self.core.take_round_due(Instant::now()) {
                        rechoke = tick(p);
                        optimistic = tick(m);
                    }
                }
                recv(self.written_rx) -> written => {
                    if let Ok((conn, peer)) = written {
                        self.core.served(conn, peer);
                    }
                }
                recv(rechoke) -> _ => self.core.rechoke(Instant::now()),
                recv(optimistic) -> _ => self.core.reoptimise(),
                recv(checkpoint) -> _ => self.core.checkpoint_tick(),
            }
            self.carry_out();
        }
        if matches!(self.core.fatal(), Some(EngineError::Interrupted { .. })) {
            self.land_in_flight_pieces();
            self.final_checkpoint();
            self.core.note_recorded();
        } else if self.core.fatal().is_none() {
            self.final_checkpoint();
        }
        self.shutdown();
        log::debug!(
            "peer {}: pieces served from memory {}, read back to serve {}",
            self.core.me(),
            self.counters.served_kept.load(Relaxed),
            self.counters.served_read_back.load(Relaxed)
        );
        match self.core.take_fatal() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Hands one event to the core.
    fn handle(&mut self, event: Event) {
        let now = Instant::now();
        let core = &mut self.core;
        match event {
            Event::Connected {
                peer,
                stream,
                dialled,
                pipelining,
            } => self.on_connected(now, peer, stream, dialled, pipelining),
            Event::DialFailed(failure) => core.dial_failed(now, failure.peer, Box::new(failure)),
            Event::Frame {
                conn,
                peer,
                message,
            } => core.frame(now, conn, peer, message),
            Event::Frames {
                conn,
                peer,
                messages,
            } => {
                for message in messages {
                    // A message may end the connection: the core then
                    // ignores the rest.
                    core.frame(now, conn, peer, message);
                }
            }
            Event::Arrived { conn, peer, index } => core.arrived(now, conn, peer, index),
            Event::Piece {
                conn,
                peer,
                index,
                data,
                good,
            } => core.piece(now, conn, peer, index, data, good),
            Event::Closed { conn, peer, reason } => core.closed(now, conn, peer, reason),
            Event::Stored { index, result } => core.stored(now, index, result),
            Event::Held(index) => core.held(now, index),
            Event::Checkpointed(result) => core.checkpointed(result),
            Event::WriteFailed(e) => core.write_failed(e),
            Event::Finished(result) => {
                if result.is_ok() {
                    let (direct, buffered) = self.store.writes();
                    let (whole, part) = self.store.batches();
                    log::debug!(
                        "peer {}: pieces written with direct I/O {direct}, through the page cache {buffered}; granules written whole {whole}, in part {part}",
                        core.me()
                    );
                }
                core.finished(result)
            }
            Event::Interrupt(signal) => {
                self.stop.store(true, Relaxed);
                core.interrupt(signal);
            }
        }
    }

    /// Carries out what the core asked for, in order (carrying out one may
    /// add more: a full writer queue drops its neighbour).
    fn carry_out(&mut self) {
        while let Some(command) = self.core.poll() {
            match command {
                Command::Send {
                    conn,
                    peer,
                    message,
                } => self.queue(conn, peer, Out::Msg(message)),
                Command::Serve { conn, peer, index } => self.queue(conn, peer, Out::Serve(index)),
                Command::Close { conn, .. } => {
                    if let Some(link) = self.links.remove(&conn) {
                        // The writer ends with its queue; the reader with the socket.
                        let _ = link.stream.shutdown(Shutdown::Both);
                    }
                }
                Command::Dial(peer) => {
                    if let Some(entry) = self.core.config().peer(peer) {
                        net::spawn_dialer(
                            self.greeting.clone(),
                            entry.clone(),
                            self.connect_timeout,
                            self.events_tx.clone(),
                            Arc::clone(&self.stop),
                        );
                    }
                }
                Command::Store {
                    index,
                    data,
                    gather,
                } => self.store_piece(index, data, gather),
                Command::WriteHeld { idle_only } => self.write_held(idle_only),
                Command::Checkpoint { generation, have } => self.start_checkpoint(generation, have),
                Command::Finish => self.finish(),
                Command::Recycle(data) => self.buffers.give(data),
                Command::Log(line) => self.write_log(line),
            }
        }
    }

    /// Queues `out` for a connection's writer; a queue that is full (its
    /// neighbour stopped reading) or gone ends the connection.
    fn queue(&mut self, conn: ConnId, peer: u32, out: Out) {
        let Some(link) = self.links.get(&conn) else {
            return;
        };
        match link.queue.send_within(out, self.queue_limit()) {
            Ok(()) => {}
            Err(Refused::Full(_)) => self.core.unwritable(Instant::now(), conn, peer, true),
            Err(Refused::Gone(_)) => self.core.unwritable(Instant::now(), conn, peer, false),
        }
    }

    /// Messages a writer's queue may hold before its neighbour counts as not
    /// reading: room for a `have` of every piece plus the control messages
    /// of a few intervals, so the engine's own traffic can never fill it.
    fn queue_limit(&self) -> usize {
        self.limits.layout().num_pieces() as usize + 64
    }

    fn write_log(&self, line: SpecLine) {
        let log = &self.log;
        match line {
            SpecLine::MakesConnection(to) => log.makes_connection(to),
            SpecLine::ConnectedFrom(from) => log.connected_from(from),
            SpecLine::PreferredNeighbors(ids) => log.preferred_neighbors(&ids),
            SpecLine::OptimisticNeighbor(id) => log.optimistic_neighbor(id),
            SpecLine::UnchokedBy(by) => log.unchoked_by(by),
            SpecLine::ChokedBy(by) => log.choked_by(by),
            SpecLine::ReceivedHave { from, index } => log.received_have(from, index),
            SpecLine::ReceivedInterested(from) => log.received_interested(from),
            SpecLine::ReceivedNotInterested(from) => log.received_not_interested(from),
            SpecLine::DownloadedPiece { index, from, count } => {
                log.downloaded_piece(index, from, count)
            }
            SpecLine::Complete => log.complete(),
        }
    }

    /// Starts a new connection's reader and writer and tells the core.
    fn on_connected(
        &mut self,
        now: Instant,
        peer: u32,
        stream: TcpStream,
        dialled: bool,
        pipelining: bool,
    ) {
        let me = self.core.me();
        let (reader_stream, writer_stream) = match (stream.try_clone(), stream.try_clone()) {
            (Ok(r), Ok(w)) => (r, w),
            (Err(e), _) | (_, Err(e)) => {
                log::warn!("peer {me}: cannot use connection to {peer}: {e}");
                return;
            }
        };
        self.next_conn += 1;
        let conn = self.next_conn;
        // Unbounded, with `queue_limit` checked on each send: a bounded
        // queue would allocate all of its room up front (64 bytes a message,
        // megabytes a neighbour with many pieces).
        let (queue, queue_rx) = mailbox();
        let same_host = match (stream.peer_addr(), stream.local_addr()) {
            (Ok(theirs), Ok(ours)) => theirs.ip().is_loopback() || theirs.ip() == ours.ip(),
            _ => true,
        };
        let started = net::spawn_writer(
            conn,
            peer,
            writer_stream,
            queue_rx,
            net::WriterShared {
                store: Arc::clone(&self.store),
                buffers: Arc::clone(&self.buffers),
                counters: Arc::clone(&self.counters),
                upload: self.caps.upload.clone(),
                finished: self.writers_done_tx.clone(),
                written: self.written_tx.clone(),
                fit_send_buffer: !same_host && !self.core.config().common.strict,
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
            self.core.fail(EngineError::Threads(peer, e));
            return;
        }
        self.links.insert(conn, Link { queue, stream });
        self.core
            .connected(now, peer, conn, dialled, pipelining, same_host);
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

    fn store_piece(&self, index: u32, data: PieceBuf, gather: bool) {
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
    }

    fn write_held(&self, idle_only: bool) {
        let (store, mut written) = (Arc::clone(&self.store), self.written_sink());
        let events = self.events_tx.clone();
        self.disk.spawn(move || {
            if let Err(e) = store.write_held(idle_only, &mut written) {
                let _ = events.send(Event::WriteFailed(e));
            }
        });
    }

    fn start_checkpoint(&self, generation: u64, have: Bitfield) {
        let Some(cp) = &self.checkpointer else {
            return;
        };
        let (cp, store, events) = (
            Arc::clone(cp),
            Arc::clone(&self.store),
            self.events_tx.clone(),
        );
        self.disk.spawn(move || {
            let result = cp.checkpoint(|| store.sync(), generation, &have);
            let _ = events.send(Event::Checkpointed(result));
        });
    }

    /// Flushes the complete file and checks its length on a disk thread.
    fn finish(&self) {
        let (store, events) = (Arc::clone(&self.store), self.events_tx.clone());
        self.disk.spawn(move || {
            let result = store.sync().map_err(FinishError::from).and_then(|()| {
                let len = store.file().metadata()?.len();
                let want = store.layout().file_size_bytes();
                if len == want {
                    Ok(())
                } else {
                    Err(FinishError::Length { len, want })
                }
            });
            let _ = events.send(Event::Finished(result));
        });
    }

    /// After a signal: let pieces already received land on disk (bounded),
    /// those the store holds too once the disk queue is empty. New pieces
    /// are not requested.
    fn land_in_flight_pieces(&mut self) {
        let deadline = Instant::now() + INTERRUPT_GRACE;
        let mut held_written = false;
        loop {
            let (storing, waiting) = self.core.storing();
            if storing == 0 {
                break;
            }
            if waiting == 0 && !held_written {
                held_written = true;
                self.core.write_held(false);
            }
            self.carry_out();
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events_rx.recv_timeout(left) {
                Ok(Event::Stored { index, result }) => {
                    self.core.stored(Instant::now(), index, result)
                }
                Ok(Event::Held(index)) => self.core.held(Instant::now(), index),
                Ok(Event::WriteFailed(e)) => log::error!("peer {}: {e}", self.core.me()),
                Ok(Event::Piece { data, .. }) => self.buffers.give(data),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        self.carry_out();
    }

    /// Records progress synchronously before the peer exits, so the record
    /// names every piece counted (one on a disk thread could be cut off).
    fn final_checkpoint(&mut self) {
        if let Some(cp) = self.checkpointer.clone() {
            let generation = self.core.next_checkpoint_generation();
            let store = &self.store;
            if let Err(e) = cp.checkpoint(|| store.sync(), generation, self.core.have()) {
                log::error!("peer {}: {e}", self.core.me());
            }
        }
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Relaxed);
        self.core.end();
        // The goodbyes, then every queue dropped: each writer flushes what
        // is queued, then half-closes.
        while let Some(command) = self.core.poll() {
            match command {
                Command::Send { conn, message, .. } => {
                    if let Some(link) = self.links.get(&conn) {
                        let _ = link.queue.send(Out::Msg(message));
                    }
                }
                Command::Log(line) => self.write_log(line),
                Command::Recycle(data) => self.buffers.give(data),
                _ => {}
            }
        }
        let (mut open, streams): (HashSet<ConnId>, Vec<TcpStream>) = self
            .links
            .drain()
            .map(|(conn, link)| (conn, link.stream))
            .unzip();
        let grace = if self.core.fatal().is_some() {
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
        // Each writer has half-closed. A socket closed with bytes unread is
        // reset, and a reset throws away what is still in its send buffer:
        // on a capped link our last haves and goodbye, without which the
        // neighbour waits for us to come back, dials us in vain and fails.
        // So until each neighbour closes its side too, its reader goes on
        // and what it sends is dropped.
        while !open.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events_rx.recv_timeout(left) {
                Ok(Event::Closed { conn, .. }) => {
                    open.remove(&conn);
                }
                Ok(Event::Piece { data, .. }) => self.buffers.give(data),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        for s in streams {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}
