//! What the threads at the edges tell the engine: the [`Event`]s on its one
//! bounded channel.
//!
//! A module of its own below both `net`, which sends them, and `engine`,
//! which hands them to the protocol core, so neither imports the other's
//! types. Holds only message types; never decides anything.

use crate::machine::{CloseReason, ConnId, FinishError};
use crate::protocol::wire::Message;
use crate::runtime::connect_error::DialFailure;
use crate::support::piecebuf::PieceBuf;
use std::io;
use std::net::TcpStream;

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
    DialFailed(DialFailure),
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
    /// (see [`crate::runtime::coalesce`]): no longer waiting in the disk queue, not
    /// yet stored.
    Held(u32),
    /// A progress checkpoint was written (or failed).
    Checkpointed(io::Result<()>),
    /// Held pieces could not be written (see [`crate::runtime::store::Store::write_held`]).
    WriteFailed(io::Error),
    /// The complete file was synced and has its full length (or not: why).
    Finished(Result<(), FinishError>),
    /// SIGINT or SIGTERM: stop cleanly.
    Interrupt(i32),
}
