//! Sockets at the edges of a peer: listening, dialling with back-off, the
//! handshake, and one reader and one writer thread per neighbour.
//!
//! Threads here own nothing of the protocol. A reader turns bytes into
//! [`Event`]s for the engine (blocking on the bounded event channel when the
//! engine is behind, which pushes back on the socket); a writer drains its
//! neighbour's bounded [`Out`] queue onto the socket, sending served pieces
//! from the store's file with `sendfile(2)` (no copy through user space), or
//! a piece written with direct I/O by a direct read and one vectored write.
//! Readers verify the pieces they receive. Frame validity is decided by
//! [`crate::protocol::wire`]; nothing here parses bytes by hand.
//!
//! Extension negotiation (request pipelining) lives here and is built so that
//! a plain peer never sees a byte it would not expect: the acceptor waits
//! briefly for the dialer's handshake and offers the extension only back to a
//! dialer that offered it; a dialer that offered it to a plain peer which then
//! hangs up dials again without it, and remembers.
//!
//! In an authenticated swarm ([`crate::protocol::auth`]) both sides set the
//! authentication flag in their handshake and prove the secret right after
//! it; a connection becomes an [`Event::Connected`] only once both proofs
//! passed, so nothing of ours but our handshake reaches a stranger.
//!
//! Accepted connections that have not finished their handshake (and
//! authentication) are bounded: each has [`HANDSHAKE_TIMEOUT`] in all, and at
//! most [`MAX_HALF_OPEN`] exist at once; a new one past that closes the
//! oldest, so a flood of silent connections can neither grow our threads nor
//! keep a real peer out.

use crate::integrity::meta::Verifier;
use crate::machine::{CloseReason, ConnId};
use crate::protocol::auth::{self, Exchange, Role, Secret};
use crate::protocol::config::PeerEntry;
use crate::protocol::wire::{
    self, Decoded, Limits, Message, Reserved, FRAME_HEADER_LEN, HANDSHAKE_LEN, PIECE_HEADER_LEN,
};
use crate::runtime::connect_error::{DialError, DialFailure, HandshakeError, HANDSHAKE_TIMEOUT};
use crate::runtime::events::Event;
use crate::runtime::mailbox::{Empty, MailReceiver};
use crate::runtime::rate_limit::RateLimit;
use crate::runtime::send_buffer::SendBuffer;
use crate::runtime::store::Store;
use crate::support::piecebuf::BufferPool;
use crate::support::piecebuf::PieceBuf;
use crate::support::status::Counters;
use crossbeam_channel::Sender;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Accepted connections still in their handshake, at most; a new one past
/// this closes the oldest. Real peers connect once each, a few at a time.
pub(crate) const MAX_HALF_OPEN: usize = 64;
/// How long an acceptor waits for the dialer's handshake before sending its
/// own (plain) one: SPEC.md dialers send at once, so this is only spent on a
/// dialer that waits for us.
const OFFER_WAIT: Duration = Duration::from_millis(200);
/// How long a dialer that offered the extension to a plain peer watches for
/// that peer hanging up on it.
const REFUSAL_WATCH: Duration = Duration::from_millis(250);
/// Small frames a reader hands over in one event, at most: what a full
/// event queue can hold stays small however fast a neighbour sends.
const MAX_BATCH: usize = 63;
/// Batching buffer of small frames in a writer.
const SOCKET_BUFFER_BYTES: usize = 64 * 1024;
/// A reader's buffer: small, because a piece's bytes that land in it are
/// copied twice (socket to buffer to piece); the rest of a piece is read
/// straight into the piece's own buffer.
const READ_BUFFER_BYTES: usize = 8 * 1024;
/// How long a reader of a neighbour with one request at a time holds a piece
/// for the next one (requested the moment this one arrived) to pair them.
const NEXT_PIECE_WAIT: Duration = Duration::from_millis(2);
/// How long a writer holding nothing but `have`s waits for more frames before
/// sending: many haves then share one segment instead of one each.
const HAVE_COALESCE: Duration = Duration::from_millis(2);

/// What the engine asks a writer to send.
#[derive(Debug)]
pub enum Out {
    Msg(Message),
    /// Send piece `index`, read from the store at send time.
    Serve(u32),
}

/// Addresses of `host`, IPv4 first: most implementations of this protocol
/// dial and listen on IPv4, and `localhost` may resolve to `::1` first.
fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let mut addrs: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
    addrs.sort_by_key(|a| a.is_ipv6());
    Ok(addrs)
}

/// Binds our listening port on the address our PeerInfo host names, or on
/// every interface when that name is not an address of this machine.
pub(crate) fn bind_listener(entry: &PeerEntry) -> io::Result<TcpListener> {
    let mut last = None;
    for addr in resolve(&entry.host, entry.port).unwrap_or_default() {
        match TcpListener::bind(addr) {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    TcpListener::bind(("0.0.0.0", entry.port)).map_err(|e| last.unwrap_or(e))
}

/// How this peer greets others: its ID, whether it offers the extensions,
/// and in an authenticated swarm the secret it proves.
#[derive(Debug, Clone)]
pub(crate) struct Greeting {
    pub me: u32,
    pub extensions: bool,
    pub secret: Option<Arc<Secret>>,
}

impl Greeting {
    /// Our reserved bytes, offering pipelining when `offer` is set.
    fn reserved(&self, offer: bool) -> Reserved {
        wire::reserved_offering(offer, self.secret.is_some())
    }

    /// After both handshakes: `peer`'s flags agree with ours about
    /// authentication, and in an authenticated swarm both sides proved the
    /// secret by `deadline`.
    fn authenticate(
        &self,
        stream: &mut TcpStream,
        peer: u32,
        theirs: &Reserved,
        role: Role,
        deadline: Instant,
    ) -> Result<(), HandshakeError> {
        let Some(secret) = &self.secret else {
            return if wire::offers_authentication(theirs) {
                Err(HandshakeError::UnexpectedAuthentication(peer))
            } else {
                Ok(())
            };
        };
        if !wire::offers_authentication(theirs) {
            return Err(HandshakeError::NotAuthenticating(peer));
        }
        let auth = |source| HandshakeError::Auth { peer, source };
        let mut nonce = [0u8; auth::NONCE_LEN];
        auth::fill_random(&mut nonce)?;
        let mut exchange = Exchange::new(secret, role, self.me, peer, nonce);
        stream.write_all(&exchange.challenge())?;
        let mut message = [0u8; auth::MESSAGE_LEN];
        read_exact_by(stream, &mut message, deadline)?;
        stream.write_all(&exchange.answer(&message).map_err(auth)?)?;
        read_exact_by(stream, &mut message, deadline)?;
        exchange.check(&message).map_err(auth)
    }
}

/// `read_exact`, but all of it by `deadline`: a sender trickling a byte at a
/// time cannot stretch it.
fn read_exact_by(
    stream: &mut TcpStream,
    mut buf: &mut [u8],
    deadline: Instant,
) -> Result<(), HandshakeError> {
    while !buf.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HandshakeError::Timeout);
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(buf) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if timed_out(&e) => return Err(HandshakeError::Timeout),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Whether a read with a timeout ended because the time ran out (Linux
/// says `WouldBlock`, other systems `TimedOut`).
fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// What waiting for bytes on a socket found.
#[derive(PartialEq, Eq)]
enum Peeked {
    /// At least the bytes asked for are readable (none consumed).
    Arrived,
    /// The other side closed the connection.
    Closed,
    /// The wait ended first.
    TimedOut,
}

/// Waits up to `wait` for `len` bytes to be readable, without consuming them.
fn peek_for(stream: &TcpStream, len: usize, wait: Duration) -> io::Result<Peeked> {
    let deadline = Instant::now() + wait;
    let mut buf = vec![0u8; len];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Peeked::TimedOut);
        }
        stream.set_read_timeout(Some(left))?;
        match stream.peek(&mut buf) {
            Ok(0) => return Ok(Peeked::Closed),
            Ok(n) if n >= len => return Ok(Peeked::Arrived),
            Ok(_) => thread::sleep(Duration::from_millis(2)),
            Err(e) if timed_out(&e) => return Ok(Peeked::TimedOut),
            Err(e) => return Err(e),
        }
    }
}

/// The acceptor's side. Returns the peer and whether both sides use pipelining.
pub(crate) fn accept_handshake(
    stream: &mut TcpStream,
    greeting: &Greeting,
    accept: impl Fn(u32) -> bool,
) -> Result<(u32, bool), HandshakeError> {
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let me = greeting.me;
    let mut theirs = [0u8; HANDSHAKE_LEN];
    // In an authenticated swarm every peer is a p2pft dialer, which sends
    // its handshake at once: wait for it, never answer plain first.
    let first_wait = if greeting.secret.is_some() {
        HANDSHAKE_TIMEOUT
    } else {
        OFFER_WAIT
    };
    let (peer, pipelining) = if peek_for(stream, HANDSHAKE_LEN, first_wait)? == Peeked::Arrived {
        stream.read_exact(&mut theirs)?;
        let peer = wire::decode_handshake(&theirs, &accept)?;
        let pipelining =
            greeting.extensions && wire::offers_pipelining(&wire::handshake_reserved(&theirs));
        stream.write_all(&wire::encode_handshake_with(
            me,
            greeting.reserved(pipelining),
        ))?;
        (peer, pipelining)
    } else {
        stream.write_all(&wire::encode_handshake_with(me, greeting.reserved(false)))?;
        read_exact_by(stream, &mut theirs, deadline)?;
        (wire::decode_handshake(&theirs, &accept)?, false)
    };
    greeting.authenticate(
        stream,
        peer,
        &wire::handshake_reserved(&theirs),
        Role::Acceptor,
        deadline,
    )?;
    stream.set_read_timeout(None)?;
    Ok((peer, pipelining))
}

/// Dials `target` until its handshake succeeds, retrying refused or failed
/// attempts with back-off (50 ms doubling to 1 s) until `give_up_after`. With
/// `extensions`, it offers pipelining until a connection fails after it was
/// made (a plain peer refusing the offer), and from then on dials plain.
pub(crate) fn spawn_dialer(
    greeting: Greeting,
    target: PeerEntry,
    give_up_after: Duration,
    events: Sender<Event>,
    stop: Arc<AtomicBool>,
) {
    let me = greeting.me;
    thread::Builder::new()
        .name(format!("dial-{}", target.id))
        .spawn(move || {
            let started = Instant::now();
            let deadline = started + give_up_after;
            let mut backoff = Duration::from_millis(50);
            let mut last_error = None;
            let mut offer = greeting.extensions;
            let mut attempts = 0;
            let mut told_lookup = false;
            let mut told_auth = false;
            while !stop.load(Ordering::Relaxed) {
                attempts += 1;
                match dial_once(&greeting, &target, offer) {
                    Ok((stream, pipelining)) => {
                        let _ = events.send(Event::Connected {
                            peer: target.id,
                            stream,
                            dialled: true,
                            pipelining,
                        });
                        return;
                    }
                    Err(e @ DialError::Wire(_)) => {
                        last_error = Some(e);
                        break;
                    }
                    // (Never in an authenticated swarm: its peers are all p2pft peers.)
                    Err(DialError::Handshake(e)) if offer && greeting.secret.is_none() => {
                        log::debug!(
                            "peer {me}: {} refused the extension offer ({e}); dialling plain",
                            target.id
                        );
                        offer = false;
                        last_error = Some(DialError::Handshake(e));
                        continue;
                    }
                    Err(e @ DialError::Handshake(_)) => last_error = Some(e),
                    Err(DialError::Auth(e)) => {
                        if !std::mem::replace(&mut told_auth, true) {
                            log::warn!("peer {me}: {e}; trying again");
                        }
                        last_error = Some(DialError::Auth(e));
                    }
                    Err(e @ DialError::Connect(_)) => last_error = Some(e),
                    // Said at once: otherwise a misspelt host in
                    // PeerInfo.cfg shows only after --connect-timeout.
                    Err(DialError::Lookup(e)) => {
                        if !std::mem::replace(&mut told_lookup, true) {
                            log::warn!(
                                "peer {me}: cannot look up {}, the host of peer {} in PeerInfo.cfg ({e}); trying again for up to {:.0} s",
                                target.host,
                                target.id,
                                give_up_after.as_secs_f64()
                            );
                        }
                        last_error = Some(DialError::Lookup(e));
                    }
                }
                if Instant::now() + backoff > deadline {
                    break;
                }
                thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            // (Every pass of the loop leaves an error: none means stopped.)
            if let (false, Some(last)) = (stop.load(Ordering::Relaxed), last_error) {
                let _ = events.send(Event::DialFailed(DialFailure {
                    peer: target.id,
                    host: target.host.clone(),
                    port: target.port,
                    attempts,
                    elapsed: started.elapsed(),
                    timeout: give_up_after,
                    last,
                }));
            }
        })
        .expect("spawn dialer thread");
}

fn dial_once(
    greeting: &Greeting,
    target: &PeerEntry,
    offer: bool,
) -> Result<(TcpStream, bool), DialError> {
    let addrs = resolve(&target.host, target.port).map_err(DialError::Lookup)?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "host has no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(mut stream) => {
                let pipelining = dialled_handshake(&mut stream, greeting, target.id, offer)?;
                return Ok((stream, pipelining));
            }
            Err(e) => last = e,
        }
    }
    Err(DialError::Connect(last))
}

fn dialled_handshake(
    stream: &mut TcpStream,
    greeting: &Greeting,
    expect: u32,
    offer: bool,
) -> Result<bool, DialError> {
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let io = |e: io::Error| DialError::Handshake(e.into());
    stream.set_nodelay(true).map_err(io)?;
    stream
        .write_all(&wire::encode_handshake_with(
            greeting.me,
            greeting.reserved(offer),
        ))
        .map_err(io)?;
    let mut theirs = [0u8; HANDSHAKE_LEN];
    read_exact_by(stream, &mut theirs, deadline)?;
    wire::decode_handshake(&theirs, |id| id == expect).map_err(DialError::Wire)?;
    let reserved = wire::handshake_reserved(&theirs);
    greeting.authenticate(stream, expect, &reserved, Role::Dialer, deadline)?;
    let both = offer && wire::offers_pipelining(&reserved);
    if offer && !both && greeting.secret.is_none() {
        // A plain peer that objects to our reserved bytes hangs up now.
        if peek_for(stream, 1, REFUSAL_WATCH).map_err(io)? == Peeked::Closed {
            return Err(DialError::Handshake(HandshakeError::ClosedAfterHandshake));
        }
    }
    stream.set_read_timeout(None).map_err(io)?;
    Ok(both)
}

/// Accepts connections until `stop` is set; each is handshaken on its own
/// short-lived thread so a silent client cannot hold up the others.
pub(crate) fn spawn_listener(
    greeting: Greeting,
    listener: TcpListener,
    acceptable: Arc<dyn Fn(u32) -> bool + Send + Sync>,
    events: Sender<Event>,
    stop: Arc<AtomicBool>,
) {
    let me = greeting.me;
    let greeting = Arc::new(greeting);
    let half_open = Arc::new(HalfOpen::default());
    thread::Builder::new()
        .name("listen".into())
        .spawn(move || {
            for incoming in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let mut stream = match incoming {
                    Ok(s) => s,
                    Err(e) => {
                        log::warn!("peer {me}: accept failed: {e}");
                        thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                };
                let Some(ticket) = half_open.admit(&stream) else {
                    continue;
                };
                let acceptable = Arc::clone(&acceptable);
                let events = events.clone();
                let greeting = Arc::clone(&greeting);
                let ours = Arc::clone(&half_open);
                let spawned = thread::Builder::new()
                    .name("handshake".into())
                    .spawn(move || {
                        let from = stream
                            .peer_addr()
                            .map(|a| a.to_string())
                            .unwrap_or_else(|_| "?".into());
                        let _ = stream.set_nodelay(true);
                        let result = accept_handshake(&mut stream, &greeting, |id| acceptable(id));
                        ours.leave(ticket);
                        match result {
                            Ok((peer, pipelining)) => {
                                let _ = events.send(Event::Connected {
                                    peer,
                                    stream,
                                    dialled: false,
                                    pipelining,
                                });
                            }
                            Err(e) => {
                                log::warn!(
                                    "peer {me}: dropped connection from {from}: bad handshake: {e}"
                                );
                                let _ = stream.shutdown(Shutdown::Both);
                            }
                        }
                    });
                if spawned.is_err() {
                    half_open.leave(ticket);
                }
            }
        })
        .expect("spawn listener thread");
}

/// Accepted connections still in their handshake, oldest first, each with
/// a handle to close it by (see [`MAX_HALF_OPEN`]).
#[derive(Default)]
struct HalfOpen {
    open: Mutex<VecDeque<(u64, TcpStream)>>,
    next: std::sync::atomic::AtomicU64,
}

impl HalfOpen {
    /// Registers `stream`, closing the oldest half-open connection when
    /// there are already [`MAX_HALF_OPEN`]; `None` when it cannot be
    /// registered (then it is closed).
    fn admit(&self, stream: &TcpStream) -> Option<u64> {
        let Ok(handle) = stream.try_clone() else {
            let _ = stream.shutdown(Shutdown::Both);
            return None;
        };
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        let mut open = self.open.lock();
        if open.len() >= MAX_HALF_OPEN {
            if let Some((_, oldest)) = open.pop_front() {
                // Its handshake thread's next read fails, and it ends.
                let _ = oldest.shutdown(Shutdown::Both);
            }
        }
        open.push_back((ticket, handle));
        Some(ticket)
    }

    /// The connection of `ticket` has finished its handshake, or failed it.
    fn leave(&self, ticket: u64) {
        self.open.lock().retain(|(t, _)| *t != ticket);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.open.lock().len()
    }
}

/// What every reader of a peer shares.
#[derive(Clone)]
pub struct ReaderShared {
    pub buffers: Arc<BufferPool>,
    /// Piece hashes, when there is metadata.
    pub verifier: Option<Arc<Verifier>>,
    pub events: Sender<Event>,
    /// The peer's download cap, if it has one: a reader waits its turn after
    /// each piece, and the sender feels it through TCP.
    pub download: Option<Arc<RateLimit>>,
}

/// Wakes a listener blocked in `accept` so it sees `stop`.
pub fn wake_listener(addr: SocketAddr) {
    let addr = if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    let _ = TcpStream::connect_timeout(&addr, Duration::from_millis(200));
}

/// Reads frames from `stream` until it closes or sends something invalid,
/// then reports why with [`Event::Closed`]. A piece is checked against its
/// SHA-1 here, on the reader, while its bytes are still in this core's cache,
/// and reported as [`Event::Piece`]: one thread hand-off fewer per piece than
/// with hashing threads, and two threads fewer per peer. When the next piece
/// has begun to arrive (its header is in the socket), the reader reads it too
/// and hashes the two together ([`crate::integrity::sha1pair`]): its sender is writing
/// it, so the wait is the transfer of one piece. From a `pipelining`
/// neighbour a piece never waits for a frame that has not begun. A neighbour
/// with one request at a time sends the next piece only once asked: there
/// the reader first reports the piece's arrival ([`Event::Arrived`]), so the
/// engine asks at once, and waits up to `NEXT_PIECE_WAIT` (2 ms) for that piece
/// to begin before hashing this one alone, which made spec-strict runs
/// faster (see docs/PERFORMANCE.md).
pub fn spawn_reader(
    conn: ConnId,
    peer: u32,
    stream: TcpStream,
    limits: Limits,
    pipelining: bool,
    shared: ReaderShared,
) -> io::Result<()> {
    let ReaderShared {
        buffers,
        verifier,
        events,
        download,
    } = shared;
    thread::Builder::new()
        .name(format!("read-{peer}"))
        .spawn(move || {
            let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, stream);
            let piece_frame = PIECE_HEADER_LEN + limits.layout().piece_size_bytes() as usize;
            let piece = |index, data, good| Event::Piece {
                conn,
                peer,
                index,
                data,
                good,
            };
            // A frame read ahead of its turn, when it was not a piece to pair.
            let mut held = None;
            let reason = loop {
                let message = match held
                    .take()
                    .unwrap_or_else(|| read_frame(&mut reader, &limits, &buffers))
                {
                    Ok(message) => message,
                    Err(reason) => break reason,
                };
                if let (Message::Piece { data, .. }, Some(cap)) = (&message, &download) {
                    cap.wait_for(data.len() as u64);
                }
                let mut second = None;
                let first = match (message, &verifier) {
                    (Message::Piece { index, data }, None) => piece(index, data, true),
                    (Message::Piece { index, data }, Some(v)) => {
                        // With one request at a time, the engine hears of the
                        // piece before it is hashed and asks for the next one,
                        // which is then waited for briefly to pair with this.
                        let arrived = |index| {
                            pipelining || events.send(Event::Arrived { conn, peer, index }).is_ok()
                        };
                        if !arrived(index) {
                            return;
                        }
                        let wait = if pipelining {
                            Duration::ZERO
                        } else {
                            NEXT_PIECE_WAIT
                        };
                        let next = piece_frame_coming(&reader, piece_frame, wait)
                            .then(|| read_frame(&mut reader, &limits, &buffers));
                        if let (Some(Ok(Message::Piece { data, .. })), Some(cap)) =
                            (&next, &download)
                        {
                            cap.wait_for(data.len() as u64);
                        }
                        match next {
                            Some(Ok(Message::Piece {
                                index: next,
                                data: more,
                            })) => {
                                if !arrived(next) {
                                    return;
                                }
                                let (good, more_good) = v.pieces_ok((index, &data), (next, &more));
                                second = Some(piece(next, more, more_good));
                                piece(index, data, good)
                            }
                            next => {
                                held = next;
                                let good = v.piece_ok(index, &data);
                                piece(index, data, good)
                            }
                        }
                    }
                    (message, _) => {
                        // Small frames already in the buffer go with this one
                        // as one event: one wake-up of the engine, not one each.
                        let mut messages = Vec::new();
                        while messages.len() < MAX_BATCH {
                            let Some(next) = take_buffered_small_frame(&mut reader, &limits) else {
                                break;
                            };
                            messages.push(next);
                        }
                        if messages.is_empty() {
                            Event::Frame {
                                conn,
                                peer,
                                message,
                            }
                        } else {
                            messages.insert(0, message);
                            Event::Frames {
                                conn,
                                peer,
                                messages,
                            }
                        }
                    }
                };
                for event in std::iter::once(first).chain(second) {
                    if events.send(event).is_err() {
                        return;
                    }
                }
            };
            let _ = events.send(Event::Closed { conn, peer, reason });
        })
        .map(drop)
}

/// The whole, well-formed frame that is not a piece at the front of
/// `reader`'s buffer, taken without waiting on the socket. (A malformed one
/// is left to the next [`read_frame`], which says what is wrong.)
fn take_buffered_small_frame(
    reader: &mut BufReader<TcpStream>,
    limits: &Limits,
) -> Option<Message> {
    match limits.decode_next(reader.buffer()) {
        Ok(Decoded::Message(message, used)) => {
            reader.consume(used);
            Some(message)
        }
        _ => None,
    }
}

/// Whether the next frame is a whole-size piece that is already on its way:
/// its header (length and kind) is in `reader`'s buffer or its socket, now or
/// within `wait`. A sender writes a piece frame's header and body together,
/// so the rest follows at once.
fn piece_frame_coming(reader: &BufReader<TcpStream>, len: usize, wait: Duration) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::socket::{recv, MsgFlags};
    use std::os::fd::{AsFd, AsRawFd};
    let mut head = [0u8; FRAME_HEADER_LEN];
    let buffered = reader.buffer();
    let have = buffered.len().min(FRAME_HEADER_LEN);
    head[..have].copy_from_slice(&buffered[..have]);
    if have < FRAME_HEADER_LEN {
        if have == 0 && !wait.is_zero() {
            let socket = reader.get_ref();
            let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLIN)];
            let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
            if !matches!(poll(&mut fds, timeout), Ok(1)) {
                return false;
            }
        }
        let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
        match recv(reader.get_ref().as_raw_fd(), &mut head[have..], flags) {
            Ok(n) if n == FRAME_HEADER_LEN - have => {}
            _ => return false,
        }
    }
    wire::is_piece_header(&head, len)
}

fn io_reason(e: io::Error) -> CloseReason {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        CloseReason::Eof
    } else {
        CloseReason::Io(e)
    }
}

/// One frame off the socket: reads what [`Limits::decode_next`] says it
/// needs until it has a frame, so the header is judged before the body is
/// read. A piece's data goes straight from the socket buffer into its own
/// buffer from `buffers`.
pub fn read_frame(
    reader: &mut impl Read,
    limits: &Limits,
    buffers: &BufferPool,
) -> Result<Message, CloseReason> {
    // Every frame but a bitfield fits here, a piece up to its index: only a
    // bitfield allocates, and only once its header is accepted.
    let mut small = [0u8; PIECE_HEADER_LEN];
    let mut large = Vec::new();
    let mut have = 0;
    loop {
        let buffered = if large.is_empty() {
            &small[..have]
        } else {
            &large[..]
        };
        match limits
            .decode_next(buffered)
            .map_err(CloseReason::Protocol)?
        {
            Decoded::Need(more) => {
                let want = have + more;
                let buf = if want <= small.len() {
                    &mut small[..want]
                } else {
                    if large.is_empty() {
                        large.extend_from_slice(&small[..have]);
                    }
                    large.resize(want, 0);
                    &mut large[..]
                };
                reader.read_exact(&mut buf[have..]).map_err(io_reason)?;
                have = want;
            }
            Decoded::Message(message, _) => return Ok(message),
            Decoded::Piece { index, data_len } => {
                let mut data = buffers.take(data_len);
                reader.read_exact(&mut data).map_err(io_reason)?;
                return Ok(Message::Piece { index, data });
            }
        }
    }
}

/// What every writer of a peer shares.
pub struct WriterShared {
    /// Where served pieces are read from.
    pub store: Arc<Store>,
    pub buffers: Arc<BufferPool>,
    pub counters: Arc<Counters>,
    /// The peer's upload cap, if it has one.
    pub upload: Option<Arc<RateLimit>>,
    /// Told the neighbour's ID when the writer has flushed and ended.
    pub finished: Sender<u32>,
    /// Told the connection and the neighbour's ID each time a served piece
    /// is in the socket ([`crate::machine::Machine::served`]).
    pub written: Sender<(ConnId, u32)>,
    /// Size the socket's send buffer to the link
    /// ([`crate::runtime::send_buffer`]): a neighbour on another host,
    /// outside strict mode.
    pub fit_send_buffer: bool,
}

/// Sends what the engine queues for one neighbour. Small messages are batched
/// until the queue is empty; the queue closing means "flush and hang up".
pub fn spawn_writer(
    conn: ConnId,
    peer: u32,
    stream: TcpStream,
    queue: MailReceiver<Out>,
    shared: WriterShared,
) -> io::Result<()> {
    let WriterShared {
        store,
        buffers,
        counters,
        upload,
        finished,
        written,
        fit_send_buffer,
    } = shared;
    thread::Builder::new()
        .name(format!("write-{peer}"))
        .spawn(move || {
            let upload = upload.as_deref();
            let send_buffer = SendBuffer::default();
            let link = Link {
                stream: &stream,
                store: &store,
                buffers: &buffers,
                counters: &counters,
                upload,
                send_buffer: fit_send_buffer.then_some(&send_buffer),
            };
            let served = || {
                let _ = written.send((conn, peer));
            };
            if let Err(e) = write_loop(&link, &queue, served) {
                log::debug!("writer to {peer} stopped: {e}");
            }
            let _ = stream.shutdown(Shutdown::Write);
            let _ = finished.send(peer);
        })
        .map(drop)
}

/// What a writer writes with.
struct Link<'a> {
    stream: &'a TcpStream,
    store: &'a Store,
    buffers: &'a BufferPool,
    counters: &'a Counters,
    upload: Option<&'a RateLimit>,
    send_buffer: Option<&'a SendBuffer>,
}

fn write_loop(link: &Link, queue: &MailReceiver<Out>, served: impl Fn()) -> io::Result<()> {
    let Link {
        stream,
        store,
        buffers,
        counters,
        upload,
        send_buffer,
    } = *link;
    let mut out = stream;
    // Small frames gather here and go out with the next piece or when the
    // queue runs dry; a piece goes out as header plus body in one vectored write.
    let mut pending = Vec::with_capacity(4096);
    // `pending` holds only haves, which may wait a moment for company.
    let mut only_haves = true;
    loop {
        let next = match queue.try_recv() {
            Ok(next) => next,
            Err(Empty::Now) if only_haves && !pending.is_empty() => {
                match queue.recv_timeout(HAVE_COALESCE) {
                    Ok(next) => next,
                    Err(_) => {
                        out.write_all(&pending)?;
                        pending.clear();
                        continue;
                    }
                }
            }
            Err(Empty::Now) => {
                out.write_all(&pending)?;
                pending.clear();
                only_haves = true;
                match queue.recv() {
                    Ok(next) => next,
                    Err(_) => break,
                }
            }
            Err(Empty::Closed) => break,
        };
        match next {
            Out::Msg(message) => {
                only_haves &= matches!(message, Message::Have(_));
                wire::encode(&message, &mut pending);
                if pending.len() >= SOCKET_BUFFER_BYTES {
                    out.write_all(&pending)?;
                    pending.clear();
                    only_haves = true;
                }
            }
            Out::Serve(index) => {
                let len = store.layout().piece_len(index);
                let wait = upload.map_or(Duration::ZERO, |cap| cap.reserve(u64::from(len)));
                if !wait.is_zero() {
                    // What waits with the piece need not: haves, chokes.
                    out.write_all(&pending)?;
                    pending.clear();
                    thread::sleep(wait);
                }
                pending.extend_from_slice(&wire::piece_header(index, len));
                serve_piece(stream, store, buffers, index, &pending, counters)?;
                if let Some(b) = send_buffer {
                    b.after_piece(stream, Instant::now());
                }
                pending.clear();
                only_haves = true;
                counters
                    .bytes_out
                    .fetch_add(u64::from(len), Ordering::Relaxed);
                served();
            }
        }
    }
    out.write_all(&pending)
}

/// Sends `head` (queued frames ending with the piece's header), then piece
/// `index`. A piece the store wrote with direct I/O goes from its kept buffer
/// while the pool still has it, else it is read back the same way
/// into a pooled buffer and goes out with `head` in one vectored write; any
/// other goes from the page cache with `sendfile`, `head` sharing its first
/// segment, or through a buffer where the file refuses `sendfile`.
fn serve_piece(
    mut stream: &TcpStream,
    store: &Store,
    buffers: &BufferPool,
    index: u32,
    head: &[u8],
    counters: &Counters,
) -> io::Result<()> {
    if store.reads_direct() {
        let mut send = |body: &PieceBuf| {
            write_all_vectored(&mut stream, &mut [IoSlice::new(head), IoSlice::new(body)])
        };
        if let Some(sent) = buffers.serve_kept(index, &mut send) {
            counters.served_kept.fetch_add(1, Ordering::Relaxed);
            return sent;
        }
        let sent = buffers.with(|body| -> io::Result<bool> {
            if !store.read_piece_direct(index, body)? {
                return Ok(false);
            }
            counters.served_read_back.fetch_add(1, Ordering::Relaxed);
            send(body)?;
            Ok(true)
        })?;
        if sent {
            return Ok(());
        }
    }
    send_more(stream, head)?;
    match send_piece(stream, store, index) {
        Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => buffers.with(|body| {
            store.read_piece(index, body)?;
            stream.write_all(body)
        }),
        sent => sent,
    }
}

/// Sends `bytes` with MSG_MORE: more data follows at once.
fn send_more(stream: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    use nix::sys::socket::{send, MsgFlags};
    use std::os::fd::AsRawFd;
    while !bytes.is_empty() {
        match send(
            stream.as_raw_fd(),
            bytes,
            MsgFlags::from_bits_retain(nix::libc::MSG_MORE),
        ) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Sends piece `index` from the store's file straight to the socket.
fn send_piece(stream: &TcpStream, store: &Store, index: u32) -> io::Result<()> {
    let mut offset = store.layout().offset(index) as nix::libc::off64_t;
    let mut left = store.layout().piece_len(index) as usize;
    while left > 0 {
        match nix::sys::sendfile::sendfile64(stream, store.file(), Some(&mut offset), left) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => left -= n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn write_all_vectored(out: &mut impl Write, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match out.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::meta::{sha1, Verifier};
    use crate::protocol::layout::Layout;

    fn piece_frame(index: u32, body: &[u8]) -> Vec<u8> {
        let mut frame = wire::piece_header(index, body.len() as u32).to_vec();
        frame.extend_from_slice(body);
        frame
    }

    /// A file of `layout` (bytes `i * step % modulus`) and its verifier.
    fn file_and_verifier(layout: Layout, step: u64, modulus: u64) -> (Vec<u8>, Verifier) {
        let file: Vec<u8> = (0..layout.file_size_bytes())
            .map(|i| (i * step % modulus) as u8)
            .collect();
        let verifier = Verifier {
            layout,
            pieces: (0..layout.num_pieces())
                .map(|i| sha1(piece_of(&file, layout, i)))
                .collect(),
            file: sha1(&file),
        };
        (file, verifier)
    }

    fn piece_of(file: &[u8], layout: Layout, i: u32) -> &[u8] {
        let start = layout.offset(i) as usize;
        &file[start..start + layout.piece_len(i) as usize]
    }

    /// Both ends of a loopback connection: (client, server).
    fn connected() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    fn greeting(me: u32, secret: Option<&str>) -> Greeting {
        Greeting {
            me,
            extensions: true,
            secret: secret
                .map(|s| Arc::new(Secret::parse(std::path::Path::new("s"), s.as_bytes()).unwrap())),
        }
    }

    /// Dialer 1002 with `dialer`'s secret against acceptor 1001 with
    /// `acceptor`'s: what each side's handshake returned.
    fn handshake_pair(
        dialer: Option<&str>,
        acceptor: Option<&str>,
    ) -> (Result<bool, String>, Result<(u32, bool), String>) {
        let (mut client, mut server) = connected();
        let acceptor = greeting(1001, acceptor);
        let theirs = thread::spawn(move || {
            accept_handshake(&mut server, &acceptor, |id| id == 1002).map_err(|e| e.to_string())
        });
        let ours = dialled_handshake(&mut client, &greeting(1002, dialer), 1001, true)
            .map_err(|e| e.to_string());
        drop(client);
        (ours, theirs.join().unwrap())
    }

    const SECRET: &str = "a secret of the swarm, long enough";

    #[test]
    fn peers_sharing_the_secret_connect_with_pipelining() {
        let (ours, theirs) = handshake_pair(Some(SECRET), Some(SECRET));
        assert_eq!(ours, Ok(true));
        assert_eq!(theirs, Ok((1002, true)));
    }

    #[test]
    fn a_wrong_secret_or_none_is_refused_on_both_sides_with_the_reason() {
        let (ours, theirs) = handshake_pair(Some("another secret, long enough too"), Some(SECRET));
        assert!(ours
            .unwrap_err()
            .contains("does not know the swarm's secret"));
        assert!(theirs
            .unwrap_err()
            .contains("does not know the swarm's secret"));
        let (ours, theirs) = handshake_pair(None, Some(SECRET));
        assert!(ours.unwrap_err().contains("asks to authenticate"));
        assert!(theirs.unwrap_err().contains("does not authenticate"));
        let (ours, theirs) = handshake_pair(Some(SECRET), None);
        assert!(ours.unwrap_err().contains("does not authenticate"));
        assert!(theirs.unwrap_err().contains("asks to authenticate"));
    }

    #[test]
    fn a_plain_dialer_gets_only_our_handshake_from_a_secret_swarm() {
        let (mut client, mut server) = connected();
        let theirs = thread::spawn(move || {
            accept_handshake(&mut server, &greeting(1001, Some(SECRET)), |id| id == 1002)
        });
        client.write_all(&wire::encode_handshake(1002)).unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        assert!(matches!(
            theirs.join().unwrap(),
            Err(HandshakeError::NotAuthenticating(1002))
        ));
        assert_eq!(
            got,
            wire::encode_handshake_with(1001, wire::reserved_offering(false, true))
        );
    }

    #[test]
    fn a_handshake_trickled_a_byte_at_a_time_still_ends_at_the_deadline() {
        let (mut client, mut server) = connected();
        let deadline = Instant::now() + Duration::from_millis(300);
        let trickle = thread::spawn(move || {
            for _ in 0..20 {
                if client.write_all(b"P").is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(50));
            }
        });
        let mut buf = [0u8; HANDSHAKE_LEN];
        let result = read_exact_by(&mut server, &mut buf, deadline);
        assert!(matches!(result, Err(HandshakeError::Timeout)), "{result:?}");
        drop(server);
        trickle.join().unwrap();
    }

    #[test]
    fn past_the_cap_a_new_half_open_connection_closes_the_oldest() {
        let half_open = HalfOpen::default();
        let pairs: Vec<(TcpStream, TcpStream)> =
            (0..MAX_HALF_OPEN + 1).map(|_| connected()).collect();
        let tickets: Vec<u64> = pairs
            .iter()
            .map(|(_, server)| half_open.admit(server).unwrap())
            .collect();
        assert_eq!(half_open.len(), MAX_HALF_OPEN);
        // The oldest was shut down: its client reads the end at once.
        let mut first = &pairs[0].0;
        let mut byte = [0u8; 1];
        first
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(first.read(&mut byte).unwrap(), 0);
        // The second oldest was not.
        let mut second = &pairs[1].0;
        second
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        assert!(second.read(&mut byte).is_err());
        for ticket in tickets {
            half_open.leave(ticket);
        }
        assert_eq!(half_open.len(), 0);
    }

    /// A reader (connection 7, peer 1002) on `server`; its events.
    fn start_reader(
        server: TcpStream,
        verifier: Verifier,
        pipelining: bool,
    ) -> crossbeam_channel::Receiver<Event> {
        let (events, received) = crossbeam_channel::unbounded();
        spawn_reader(
            7,
            1002,
            server,
            Limits::new(verifier.layout),
            pipelining,
            ReaderShared {
                buffers: Arc::new(BufferPool::new(0, 0)),
                verifier: Some(Arc::new(verifier)),
                events,
                download: None,
            },
        )
        .unwrap();
        received
    }

    /// Pieces already waiting are read and hashed two at a time; each keeps
    /// its own verdict, and what follows them still arrives, in order.
    #[test]
    fn a_writer_says_each_piece_it_wrote_and_only_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.dat");
        let layout = Layout::new(64 << 10, 16 << 10).unwrap();
        let (file, _) = file_and_verifier(layout, 7, 251);
        std::fs::write(&path, &file).unwrap();
        let store = Arc::new(Store::open_seed(&path, layout).unwrap());
        let (ours, theirs) = connected();
        let (queue, queue_rx) = crate::runtime::mailbox::mailbox();
        let (finished, finished_rx) = crossbeam_channel::unbounded();
        let (written, written_rx) = crossbeam_channel::unbounded();
        spawn_writer(
            7,
            1002,
            ours,
            queue_rx,
            WriterShared {
                store,
                buffers: Arc::new(BufferPool::new(2, 1 << 20)),
                counters: Arc::new(Counters::default()),
                upload: None,
                finished,
                written,
                fit_send_buffer: true,
            },
        )
        .unwrap();
        queue.send(Out::Msg(Message::Have(3))).unwrap();
        queue.send(Out::Serve(2)).unwrap();
        queue.send(Out::Serve(0)).unwrap();
        drop(queue);
        let mut got = Vec::new();
        (&theirs).read_to_end(&mut got).unwrap();
        let mut want = Vec::new();
        wire::encode(&Message::Have(3), &mut want);
        want.extend(piece_frame(2, piece_of(&file, layout, 2)));
        want.extend(piece_frame(0, piece_of(&file, layout, 0)));
        assert_eq!(got, want);
        assert_eq!(finished_rx.recv().unwrap(), 1002);
        let said: Vec<(ConnId, u32)> = written_rx.try_iter().collect();
        assert_eq!(said, [(7, 1002), (7, 1002)], "one notice a piece");
    }

    /// The socket reader and the buffer decoder are one decoder: over a
    /// stream of frames they agree, and the reader takes no byte of the next
    /// frame.
    #[test]
    fn read_frame_reads_exactly_what_decode_frame_decodes() {
        let layout = Layout::new(10, 4).unwrap();
        let limits = Limits::new(layout);
        let pool = BufferPool::new(0, 0);
        let mut bits = crate::protocol::bitfield::Bitfield::empty(3);
        bits.set(1, true);
        let mut stream = Vec::new();
        for m in [
            Message::Bitfield(bits),
            Message::Interested,
            Message::Piece {
                index: 2,
                data: vec![7, 8].into(),
            },
            Message::Request(1),
        ] {
            wire::encode(&m, &mut stream);
        }
        stream.extend_from_slice(&[0, 0, 0, 2, 0, 0]);
        let mut socket = &stream[..];
        let mut at = 0;
        while let Ok(Some((m, used))) = limits.decode_frame(&stream[at..]) {
            assert_eq!(read_frame(&mut socket, &limits, &pool).unwrap(), m);
            at += used;
            assert_eq!(socket, &stream[at..]);
        }
        assert_eq!(at, stream.len() - 6);
        assert!(matches!(
            read_frame(&mut socket, &limits, &pool),
            Err(CloseReason::Protocol(wire::WireError::BadLength { .. }))
        ));
        assert!(matches!(
            read_frame(&mut &[0u8, 0, 0, 7, 7, 0][..], &limits, &pool),
            Err(CloseReason::Eof)
        ));
    }

    #[test]
    fn a_reader_verifies_waiting_pieces_in_pairs_each_on_its_own() {
        let layout = Layout::new(3 * 4096 + 100, 4096).unwrap();
        let (file, verifier) = file_and_verifier(layout, 31, 251);
        let piece = |i: u32| piece_of(&file, layout, i);
        let mut corrupt = piece(1).to_vec();
        corrupt[17] ^= 1;
        let mut sent = Vec::new();
        // A pair; a piece followed by a have; a piece with too little after
        // it to pair; the short last piece.
        sent.extend_from_slice(&piece_frame(0, piece(0)));
        sent.extend_from_slice(&piece_frame(1, &corrupt));
        sent.extend_from_slice(&piece_frame(2, piece(2)));
        wire::encode(&Message::Have(2), &mut sent);
        sent.extend_from_slice(&piece_frame(0, piece(0)));
        sent.extend_from_slice(&piece_frame(3, piece(3)));

        let (mut client, server) = connected();
        // Everything is in the socket before the reader starts: it pairs.
        client.write_all(&sent).unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let received = start_reader(server, verifier, true);
        let mut seen = Vec::new();
        for event in received.iter() {
            match event {
                Event::Piece {
                    conn: 7,
                    peer: 1002,
                    index,
                    data,
                    good,
                } => {
                    assert!(!good || &data[..] == piece(index), "piece {index}'s bytes");
                    seen.push(format!("piece {index} {good}"));
                }
                Event::Frame {
                    message: Message::Have(i),
                    ..
                } => seen.push(format!("have {i}")),
                Event::Closed {
                    reason: CloseReason::Eof,
                    ..
                } => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(
            seen,
            [
                "piece 0 true",
                "piece 1 false",
                "piece 2 true",
                "have 2",
                "piece 0 true",
                "piece 3 true"
            ]
        );
    }

    /// Small frames that arrive together reach the engine as one event, in
    /// order; a piece ends the batch, and a malformed frame after good ones
    /// closes the connection only once those are delivered.
    #[test]
    fn a_reader_hands_small_frames_that_came_together_over_as_one_event() {
        let layout = Layout::new(3 * 4096, 4096).unwrap();
        let (file, verifier) = file_and_verifier(layout, 1, 239);
        let mut sent = Vec::new();
        for message in [
            Message::Interested,
            Message::Request(0),
            Message::Request(2),
            Message::Have(1),
        ] {
            wire::encode(&message, &mut sent);
        }
        sent.extend_from_slice(&piece_frame(1, piece_of(&file, layout, 1)));
        wire::encode(&Message::Have(0), &mut sent);
        wire::encode(&Message::Request(1), &mut sent);
        sent.extend_from_slice(&[0, 0, 0, 2, 6, 0]); // a request with a 1-byte body
        let (mut client, server) = connected();
        client.write_all(&sent).unwrap();
        let received = start_reader(server, verifier, true);
        let mut seen = Vec::new();
        for event in received.iter() {
            match event {
                Event::Frames {
                    conn: 7,
                    peer: 1002,
                    messages,
                } => seen.push(format!("{messages:?}")),
                Event::Frame { message, .. } => seen.push(format!("one {message:?}")),
                Event::Piece { index, good, .. } => seen.push(format!("piece {index} {good}")),
                Event::Closed {
                    reason: CloseReason::Protocol(_),
                    ..
                } => {
                    seen.push("closed".into());
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(
            seen,
            [
                "[Interested, Request(0), Request(2), Have(1)]",
                "piece 1 true",
                "[Have(0), Request(1)]",
                "closed"
            ]
        );
    }

    #[test]
    fn a_reader_waits_for_a_piece_already_begun_but_never_for_one_not_begun() {
        let layout = Layout::new(3 * 4096, 4096).unwrap();
        let (file, verifier) = file_and_verifier(layout, 1, 253);
        let piece = |i: u32| piece_of(&file, layout, i);
        let (mut client, server) = connected();
        let received = start_reader(server, verifier, true);
        let index = |event: Event| match event {
            Event::Piece { index, good, .. } => {
                assert!(good, "piece {index}");
                index
            }
            other => panic!("unexpected {other:?}"),
        };
        // Piece 0, then the first bytes of piece 1: piece 0 waits to be
        // hashed with piece 1, so nothing is reported until piece 1 is whole.
        let second = piece_frame(1, piece(1));
        let mut sent = piece_frame(0, piece(0));
        sent.extend_from_slice(&second[..100]);
        client.write_all(&sent).unwrap();
        let early = received.recv_timeout(Duration::from_millis(300));
        assert!(
            early.is_err(),
            "reported before its pair was whole: {early:?}"
        );
        client.write_all(&second[100..]).unwrap();
        let wait = Duration::from_secs(20);
        assert_eq!(index(received.recv_timeout(wait).unwrap()), 0);
        assert_eq!(index(received.recv_timeout(wait).unwrap()), 1);
        // Piece 2 with nothing after it, the socket still open: reported
        // without waiting for bytes that have not come.
        client.write_all(&piece_frame(2, piece(2))).unwrap();
        assert_eq!(index(received.recv_timeout(wait).unwrap()), 2);
        drop(client);
        assert!(matches!(
            received.recv_timeout(wait),
            Ok(Event::Closed {
                reason: CloseReason::Eof,
                ..
            })
        ));
    }

    #[test]
    fn a_reader_of_one_request_at_a_time_reports_arrival_first_and_pairs_what_comes() {
        let layout = Layout::new(3 * 4096, 4096).unwrap();
        let (file, verifier) = file_and_verifier(layout, 1, 241);
        let piece = |i: u32| piece_of(&file, layout, i);
        let (mut client, server) = connected();
        let received = start_reader(server, verifier, false);
        let wait = Duration::from_secs(20);
        let next = || match received.recv_timeout(wait).unwrap() {
            Event::Arrived { index, .. } => format!("arrived {index}"),
            Event::Piece { index, good, .. } => format!("piece {index} {good}"),
            Event::Frame {
                message: Message::Have(i),
                ..
            } => format!("have {i}"),
            Event::Closed { .. } => "closed".to_string(),
            other => panic!("unexpected {other:?}"),
        };
        // A piece alone, the socket left open: its arrival, then (after a
        // short wait for a next piece that does not come) its verdict.
        client.write_all(&piece_frame(0, piece(0))).unwrap();
        assert_eq!([next(), next()], ["arrived 0", "piece 0 true"]);
        // Two pieces: both arrivals before either verdict, as they are
        // hashed together; then a have.
        let mut sent = piece_frame(1, piece(1));
        sent.extend_from_slice(&piece_frame(2, piece(2)));
        wire::encode(&Message::Have(2), &mut sent);
        client.write_all(&sent).unwrap();
        drop(client);
        let seen: Vec<String> = (0..6).map(|_| next()).collect();
        assert_eq!(
            seen,
            [
                "arrived 1",
                "arrived 2",
                "piece 1 true",
                "piece 2 true",
                "have 2",
                "closed"
            ]
        );
    }
}
