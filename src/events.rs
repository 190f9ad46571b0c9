//! What the threads at the edges tell the engine: the [`Event`]s on its one
//! bounded channel, and why a connection ended ([`CloseReason`]).
//!
//! A module of its own below both `net`, which sends them, and `engine`,
//! which handles them, so neither imports the other's types. Holds only
//! message types; never decides anything.

use crate::piecebuf::PieceBuf;
use crate::wire::{Kind, Message, WireError};
use std::io;
use std::net::TcpStream;

/// Identifies one connection, so events of a replaced connection are ignored.
pub type ConnId = u64;

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

/// Everything the engine hears about.
#[derive(Debug)]
pub enum Event {
    /// A handshake succeeded (dialled by us or accepted).
    Connected {
        peer: u32,
        stream: TcpStream,
        dialled: bool,
        /// Both sides agreed on request pipelining during the handshake.
        pipelining: bool,
    },
    /// A dialler gave up.
    DialFailed { peer: u32, error: String },
    /// Any frame but a piece.
    Frame {
        conn: ConnId,
        peer: u32,
        message: Message,
    },
    /// Several frames but pieces, in order, that were in the reader's buffer
    /// together.
    Frames {
        conn: ConnId,
        peer: u32,
        messages: Vec<Message>,
    },
    /// The bytes of piece `index` are in, its SHA-1 not yet checked: sent by
    /// the reader of a neighbour with one request at a time, so that the next
    /// request goes out while this piece waits to be hashed. Its
    /// [`Event::Piece`] follows.
    Arrived { conn: ConnId, peer: u32, index: u32 },
    /// A piece, checked by the reader against its SHA-1 (`good` without
    /// metadata).
    Piece {
        conn: ConnId,
        peer: u32,
        index: u32,
        data: PieceBuf,
        good: bool,
    },
    Closed {
        conn: ConnId,
        peer: u32,
        reason: CloseReason,
    },
    /// A verified piece was written (or failed to be).
    Stored { index: u32, result: io::Result<()> },
    /// A verified piece is held by the store to be written with its granule
    /// (see [`crate::coalesce`]): no longer waiting in the disk queue, not
    /// yet stored.
    Held(u32),
    /// A progress checkpoint was written (or failed).
    Checkpointed(io::Result<()>),
    /// Held pieces could not be written (see [`crate::store::Store::write_held`]).
    WriteFailed(io::Error),
    /// The complete file was synced and has its full length (or not: why).
    Finished(Result<(), FinishError>),
    /// SIGINT or SIGTERM: stop cleanly.
    Interrupt(i32),
}
