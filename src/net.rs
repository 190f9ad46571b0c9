//! Sockets at the edges of a peer: listening, dialling with back-off, the
//! handshake, and one reader and one writer thread per neighbour.
//!
//! Threads here own nothing of the protocol. A reader turns bytes into
//! [`Event`]s for the engine (blocking on the bounded event channel when the
//! engine is behind, which pushes back on the socket); a writer drains its
//! neighbour's bounded [`Out`] queue onto the socket, reading served pieces
//! from the store with positioned reads. Frame validity is decided by
//! [`crate::wire`]; nothing here parses bytes by hand.

use crate::config::PeerEntry;
use crate::engine::{CloseReason, ConnId, Event};
use crate::status::Counters;
use crate::store::Store;
use crate::wire::{self, Kind, Limits, Message, FRAME_HEADER_LEN, HANDSHAKE_LEN, PIECE_INDEX_LEN};
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// How long the other side has to send its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const SOCKET_BUFFER_BYTES: usize = 64 * 1024;

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
pub fn bind_listener(entry: &PeerEntry) -> io::Result<TcpListener> {
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

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Wire(#[from] wire::WireError),
}

/// Sends our handshake at once, then reads and checks theirs.
pub fn exchange_handshake(
    stream: &mut TcpStream,
    me: u32,
    accept: impl Fn(u32) -> bool,
) -> Result<u32, HandshakeError> {
    stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    stream.write_all(&wire::encode_handshake(me))?;
    let mut theirs = [0u8; HANDSHAKE_LEN];
    stream.read_exact(&mut theirs)?;
    let id = wire::decode_handshake(&theirs, accept)?;
    stream.set_read_timeout(None)?;
    Ok(id)
}

/// Dials `target` until its handshake succeeds, retrying refused or failed
/// attempts with back-off (50 ms doubling to 1 s) until `give_up_after`.
pub fn spawn_dialer(
    me: u32,
    target: PeerEntry,
    give_up_after: Duration,
    events: Sender<Event>,
    stop: Arc<AtomicBool>,
) {
    thread::Builder::new()
        .name(format!("dial-{}", target.id))
        .spawn(move || {
            let deadline = Instant::now() + give_up_after;
            let mut backoff = Duration::from_millis(50);
            let mut last_error = String::from("no attempt made");
            while !stop.load(Ordering::Relaxed) {
                match dial_once(me, &target) {
                    Ok(stream) => {
                        let _ = events.send(Event::Connected {
                            peer: target.id,
                            stream,
                            dialled: true,
                        });
                        return;
                    }
                    // Someone else answers at that address: retrying will not help.
                    Err(HandshakeError::Wire(e)) => {
                        last_error = e.to_string();
                        break;
                    }
                    Err(HandshakeError::Io(e)) => last_error = e.to_string(),
                }
                if Instant::now() + backoff > deadline {
                    break;
                }
                thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            if !stop.load(Ordering::Relaxed) {
                let _ = events.send(Event::DialFailed {
                    peer: target.id,
                    error: format!(
                        "could not connect to peer {} at {}:{}: {last_error}",
                        target.id, target.host, target.port
                    ),
                });
            }
        })
        .expect("spawn dialer thread");
}

fn dial_once(me: u32, target: &PeerEntry) -> Result<TcpStream, HandshakeError> {
    let addrs = resolve(&target.host, target.port)?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "host has no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(mut stream) => {
                stream.set_nodelay(true)?;
                exchange_handshake(&mut stream, me, |id| id == target.id)?;
                return Ok(stream);
            }
            Err(e) => last = e,
        }
    }
    Err(last.into())
}

/// Accepts connections until `stop` is set; each is handshaken on its own
/// short-lived thread so a silent client cannot hold up the others.
pub fn spawn_listener(
    me: u32,
    listener: TcpListener,
    acceptable: Arc<dyn Fn(u32) -> bool + Send + Sync>,
    events: Sender<Event>,
    stop: Arc<AtomicBool>,
) {
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
                let acceptable = Arc::clone(&acceptable);
                let events = events.clone();
                let _ = thread::Builder::new()
                    .name("handshake".into())
                    .spawn(move || {
                        let from = stream
                            .peer_addr()
                            .map(|a| a.to_string())
                            .unwrap_or_else(|_| "?".into());
                        let _ = stream.set_nodelay(true);
                        match exchange_handshake(&mut stream, me, |id| acceptable(id)) {
                            Ok(peer) => {
                                let _ = events.send(Event::Connected {
                                    peer,
                                    stream,
                                    dialled: false,
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
            }
        })
        .expect("spawn listener thread");
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
/// then reports why with [`Event::Closed`].
pub fn spawn_reader(
    conn: ConnId,
    peer: u32,
    stream: TcpStream,
    limits: Limits,
    events: Sender<Event>,
) {
    thread::Builder::new()
        .name(format!("read-{peer}"))
        .spawn(move || {
            let mut reader = BufReader::with_capacity(SOCKET_BUFFER_BYTES, stream);
            let reason = loop {
                match read_frame(&mut reader, &limits) {
                    Ok(message) => {
                        if events
                            .send(Event::Frame {
                                conn,
                                peer,
                                message,
                            })
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(reason) => break reason,
                }
            };
            let _ = events.send(Event::Closed { conn, peer, reason });
        })
        .expect("spawn reader thread");
}

fn io_reason(e: io::Error) -> CloseReason {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        CloseReason::Eof
    } else {
        CloseReason::Io(e.to_string())
    }
}

/// One frame off the socket. The header is judged before the body is read;
/// a piece's bytes go straight from the socket buffer into their own buffer.
fn read_frame(reader: &mut impl Read, limits: &Limits) -> Result<Message, CloseReason> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    reader.read_exact(&mut header).map_err(io_reason)?;
    let (kind, body_len) = limits
        .check_header(&header)
        .map_err(CloseReason::Protocol)?;
    if kind == Kind::Piece {
        let mut index = [0u8; PIECE_INDEX_LEN];
        reader.read_exact(&mut index).map_err(io_reason)?;
        let index = u32::from_be_bytes(index);
        limits
            .check_piece_len(index, body_len)
            .map_err(CloseReason::Protocol)?;
        let mut data = vec![0u8; body_len - PIECE_INDEX_LEN];
        reader.read_exact(&mut data).map_err(io_reason)?;
        return Ok(Message::Piece { index, data });
    }
    let mut body = vec![0u8; body_len];
    reader.read_exact(&mut body).map_err(io_reason)?;
    limits
        .decode_body(kind, &body)
        .map_err(CloseReason::Protocol)
}

/// Sends what the engine queues for one neighbour. Small messages are batched
/// until the queue is empty; the queue closing means "flush and hang up".
pub fn spawn_writer(
    peer: u32,
    stream: TcpStream,
    queue: Receiver<Out>,
    store: Arc<Store>,
    counters: Arc<Counters>,
    finished: Sender<u32>,
) {
    thread::Builder::new()
        .name(format!("write-{peer}"))
        .spawn(move || {
            if let Err(e) = write_loop(&stream, &queue, &store, &counters) {
                log::debug!("writer to {peer} stopped: {e}");
            }
            let _ = stream.shutdown(Shutdown::Write);
            let _ = finished.send(peer);
        })
        .expect("spawn writer thread");
}

fn write_loop(
    stream: &TcpStream,
    queue: &Receiver<Out>,
    store: &Store,
    counters: &Counters,
) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(SOCKET_BUFFER_BYTES, stream);
    let mut frame = Vec::with_capacity(64);
    let mut piece = Vec::new();
    loop {
        let next = match queue.try_recv() {
            Ok(next) => next,
            Err(TryRecvError::Empty) => {
                out.flush()?;
                match queue.recv() {
                    Ok(next) => next,
                    Err(_) => break,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        match next {
            Out::Msg(message) => {
                frame.clear();
                wire::encode(&message, &mut frame);
                out.write_all(&frame)?;
            }
            Out::Serve(index) => {
                store.read_piece(index, &mut piece)?;
                out.write_all(&wire::piece_header(index, piece.len() as u32))?;
                out.write_all(&piece)?;
                counters
                    .bytes_out
                    .fetch_add(piece.len() as u64, Ordering::Relaxed);
            }
        }
    }
    out.flush()
}
