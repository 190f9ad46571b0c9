//! The wire format of SPEC.md sections 2 and 3: the handshake and the eight
//! messages, as a pure codec over byte slices.
//!
//! This is the one home of the frame format and its limits: what a frame may
//! weigh, which lengths fit which type, which piece indices exist. Every way a
//! frame can be wrong is a [`WireError`]. A frame's 5-byte header is judged
//! before its body is read or anything is allocated for it. There is one
//! frame decoder, [`Limits::decode_next`], over the bytes buffered so far; the
//! socket readers ([`crate::runtime::net::read_frame`]) and [`Limits::decode_frame`]
//! are thin wrappers of it. No sockets here.

use crate::protocol::bitfield::Bitfield;
use crate::protocol::layout::Layout;
use crate::support::piecebuf::PieceBuf;

pub const HANDSHAKE_HEADER: &[u8; 18] = b"P2PFILESHARINGPROJ";
pub const HANDSHAKE_LEN: usize = 32;
/// 4-byte length plus 1-byte type.
pub(crate) const FRAME_HEADER_LEN: usize = 5;
/// What a `piece` frame carries before the piece's bytes: its index.
pub(crate) const PIECE_INDEX_LEN: usize = 4;
/// A piece frame's bytes before the piece's data: header and index.
pub(crate) const PIECE_HEADER_LEN: usize = FRAME_HEADER_LEN + PIECE_INDEX_LEN;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("handshake does not start with P2PFILESHARINGPROJ")]
    BadHandshakeHeader,
    #[error("handshake names peer {0}, which is not a peer we accept here")]
    UnexpectedPeer(u32),
    #[error("frame length 0 has no message type")]
    EmptyFrame,
    #[error("unknown message type {0}")]
    UnknownType(u8),
    #[error("{kind} frame of length {len}, expected {expected}")]
    BadLength { kind: Kind, len: u32, expected: u32 },
    #[error("frame of length {len} is larger than one piece plus its header ({max})")]
    FrameTooLarge { len: u32, max: u32 },
    #[error("piece index {index} out of range (the file has {num_pieces} pieces)")]
    IndexOutOfRange { index: u32, num_pieces: u32 },
}

/// The message type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Choke = 0,
    Unchoke = 1,
    Interested = 2,
    NotInterested = 3,
    Have = 4,
    Bitfield = 5,
    Request = 6,
    Piece = 7,
    /// p2pft extension: "I end as usual, knowing every peer has the file".
    /// Sent only to a p2pft neighbour that negotiated the extensions; from
    /// any other it ends the connection as an unknown type would.
    Goodbye = 0xF1,
    /// p2pft extension: "I will not send you this piece now; ask me for that
    /// one instead". A seed says it of a piece it has sent once already
    /// while pieces it never sent remain, naming one of those. Sent only to
    /// a p2pft neighbour; from any other it ends the connection as an
    /// unknown type would.
    Reject = 0xF2,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Kind::Choke => "choke",
            Kind::Unchoke => "unchoke",
            Kind::Interested => "interested",
            Kind::NotInterested => "not interested",
            Kind::Have => "have",
            Kind::Bitfield => "bitfield",
            Kind::Request => "request",
            Kind::Piece => "piece",
            Kind::Goodbye => "goodbye",
            Kind::Reject => "reject",
        };
        f.write_str(name)
    }
}

impl Kind {
    pub(crate) fn from_byte(b: u8) -> Result<Kind, WireError> {
        Ok(match b {
            0 => Kind::Choke,
            1 => Kind::Unchoke,
            2 => Kind::Interested,
            3 => Kind::NotInterested,
            4 => Kind::Have,
            5 => Kind::Bitfield,
            6 => Kind::Request,
            7 => Kind::Piece,
            0xF1 => Kind::Goodbye,
            0xF2 => Kind::Reject,
            other => return Err(WireError::UnknownType(other)),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Choke,
    Unchoke,
    Interested,
    NotInterested,
    Have(u32),
    Bitfield(Bitfield),
    Request(u32),
    Piece { index: u32, data: PieceBuf },
    Goodbye,
    Reject { index: u32, instead: u32 },
}

impl Message {
    pub fn kind(&self) -> Kind {
        match self {
            Message::Choke => Kind::Choke,
            Message::Unchoke => Kind::Unchoke,
            Message::Interested => Kind::Interested,
            Message::NotInterested => Kind::NotInterested,
            Message::Have(_) => Kind::Have,
            Message::Bitfield(_) => Kind::Bitfield,
            Message::Request(_) => Kind::Request,
            Message::Piece { .. } => Kind::Piece,
            Message::Goodbye => Kind::Goodbye,
            Message::Reject { .. } => Kind::Reject,
        }
    }
}

// ---------------------------------------------------------------- handshake

/// The ten bytes between the header and the ID.
pub(crate) type Reserved = [u8; 10];

/// Reserved bytes 8 and 9 of a p2pft peer that offers an extension: a
/// magic byte no padding style produces (not 0x00, not ASCII `0`), then flags.
/// A plain peer never sees them unless it first sent them to us (or the
/// swarm has a secret, which no plain peer can join).
pub(crate) const EXTENSION_MAGIC: u8 = 0xF7;
pub(crate) const EXTENSION_PIPELINING: u8 = 0x01;
/// The sender will prove the swarm's secret right after the handshake
/// (see [`crate::protocol::auth`]).
pub(crate) const EXTENSION_AUTHENTICATION: u8 = 0x02;

/// Reserved bytes that offer pipelining.
#[cfg(test)]
pub(crate) fn reserved_offering_pipelining() -> Reserved {
    reserved_offering(true, false)
}

/// Reserved bytes offering what is set; all zero (SPEC.md's) when nothing is.
pub(crate) fn reserved_offering(pipelining: bool, authentication: bool) -> Reserved {
    let mut r = [0u8; 10];
    let flags = if pipelining { EXTENSION_PIPELINING } else { 0 }
        | if authentication {
            EXTENSION_AUTHENTICATION
        } else {
            0
        };
    if flags != 0 {
        r[8] = EXTENSION_MAGIC;
        r[9] = flags;
    }
    r
}

/// Whether reserved bytes offer pipelining.
pub fn offers_pipelining(reserved: &Reserved) -> bool {
    reserved[8] == EXTENSION_MAGIC && reserved[9] & EXTENSION_PIPELINING != 0
}

/// Whether reserved bytes announce a proof of the swarm's secret.
pub(crate) fn offers_authentication(reserved: &Reserved) -> bool {
    reserved[8] == EXTENSION_MAGIC && reserved[9] & EXTENSION_AUTHENTICATION != 0
}

/// The 32 bytes we send: header, ten zero bytes, our ID big-endian.
pub fn encode_handshake(peer_id: u32) -> [u8; HANDSHAKE_LEN] {
    encode_handshake_with(peer_id, [0u8; 10])
}

/// A handshake with the given reserved bytes (extensions only).
pub fn encode_handshake_with(peer_id: u32, reserved: Reserved) -> [u8; HANDSHAKE_LEN] {
    let mut out = [0u8; HANDSHAKE_LEN];
    out[..18].copy_from_slice(HANDSHAKE_HEADER);
    out[18..28].copy_from_slice(&reserved);
    out[28..].copy_from_slice(&peer_id.to_be_bytes());
    out
}

/// The reserved bytes of a received handshake.
pub fn handshake_reserved(bytes: &[u8; HANDSHAKE_LEN]) -> Reserved {
    bytes[18..28].try_into().expect("10 bytes")
}

/// Reads a received handshake leniently: the padding may be anything (some
/// implementations write ASCII `0`), and the ID may be big-endian binary or
/// four ASCII digits. `accept` says which IDs are acceptable from this
/// connection; the first reading of the ID that it accepts wins.
pub fn decode_handshake(
    bytes: &[u8; HANDSHAKE_LEN],
    accept: impl Fn(u32) -> bool,
) -> Result<u32, WireError> {
    if &bytes[..18] != HANDSHAKE_HEADER {
        return Err(WireError::BadHandshakeHeader);
    }
    let tail: [u8; 4] = bytes[28..].try_into().expect("4 bytes");
    let binary = u32::from_be_bytes(tail);
    let ascii = tail
        .iter()
        .all(u8::is_ascii_digit)
        .then(|| tail.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')));
    [Some(binary), ascii]
        .into_iter()
        .flatten()
        .find(|&id| accept(id))
        .ok_or(WireError::UnexpectedPeer(binary))
}

// ------------------------------------------------------------------- frames

/// The limits a frame is judged by, all derived from the file's layout.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    layout: Layout,
}

impl Limits {
    pub fn new(layout: Layout) -> Limits {
        Limits { layout }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The largest length field we accept: a piece frame (type, index, one
    /// full piece), or the bitfield frame when that is larger (many small
    /// pieces: 16,384 pieces of 1 KiB need a 2,048-byte bitfield).
    pub(crate) fn max_frame_len(&self) -> u32 {
        let piece = 1 + PIECE_INDEX_LEN as u32 + self.layout.piece_size_bytes();
        let bitfield = 1 + self.layout.bitfield_len() as u32;
        piece.max(bitfield)
    }

    fn check_index(&self, index: u32) -> Result<u32, WireError> {
        let num_pieces = self.layout.num_pieces();
        if index < num_pieces {
            Ok(index)
        } else {
            Err(WireError::IndexOutOfRange { index, num_pieces })
        }
    }

    /// Judges a frame header (length field and type byte). Returns the type and
    /// how many body bytes follow. For a piece, the body length is checked
    /// against the actual piece by [`Limits::check_piece_len`] once its index is known.
    pub(crate) fn check_header(
        &self,
        header: &[u8; FRAME_HEADER_LEN],
    ) -> Result<(Kind, usize), WireError> {
        let len = u32::from_be_bytes(header[..4].try_into().expect("4 bytes"));
        if len == 0 {
            return Err(WireError::EmptyFrame);
        }
        let max = self.max_frame_len();
        if len > max {
            return Err(WireError::FrameTooLarge { len, max });
        }
        let kind = Kind::from_byte(header[4])?;
        let expected = match kind {
            Kind::Choke
            | Kind::Unchoke
            | Kind::Interested
            | Kind::NotInterested
            | Kind::Goodbye => Some(1),
            Kind::Have | Kind::Request => Some(5),
            Kind::Reject => Some(9),
            Kind::Bitfield => Some(1 + self.layout.bitfield_len() as u32),
            Kind::Piece => None,
        };
        match expected {
            Some(expected) if expected != len => Err(WireError::BadLength {
                kind,
                len,
                expected,
            }),
            // Index plus at least one byte: no piece is empty.
            None if len < 1 + PIECE_INDEX_LEN as u32 + 1 => Err(WireError::BadLength {
                kind,
                len,
                expected: 1 + PIECE_INDEX_LEN as u32 + 1,
            }),
            _ => Ok((kind, len as usize - 1)),
        }
    }

    /// For a piece frame whose body (index plus data) is `body_len` bytes: the
    /// index must exist and the data must be exactly that piece's length.
    pub(crate) fn check_piece_len(&self, index: u32, body_len: usize) -> Result<(), WireError> {
        let index = self.check_index(index)?;
        let expected = self.layout.piece_len(index) as usize + PIECE_INDEX_LEN;
        if body_len != expected {
            return Err(WireError::BadLength {
                kind: Kind::Piece,
                len: (body_len + 1) as u32,
                expected: (expected + 1) as u32,
            });
        }
        Ok(())
    }

    /// Decodes the body of a frame that is not a piece, whose header
    /// [`Limits::check_header`] accepted (so the body has its type's length).
    fn decode_body(&self, kind: Kind, body: &[u8]) -> Result<Message, WireError> {
        let index = || u32::from_be_bytes(body[..4].try_into().expect("checked length"));
        Ok(match kind {
            Kind::Choke => Message::Choke,
            Kind::Unchoke => Message::Unchoke,
            Kind::Interested => Message::Interested,
            Kind::NotInterested => Message::NotInterested,
            Kind::Have => Message::Have(self.check_index(index())?),
            Kind::Request => Message::Request(self.check_index(index())?),
            Kind::Bitfield => Message::Bitfield(
                Bitfield::from_wire(body, self.layout.num_pieces()).expect("checked length"),
            ),
            Kind::Goodbye => Message::Goodbye,
            Kind::Reject => Message::Reject {
                index: self.check_index(index())?,
                instead: self.check_index(u32::from_be_bytes(
                    body[4..8].try_into().expect("checked length"),
                ))?,
            },
            Kind::Piece => unreachable!("a piece's data is never decoded here"),
        })
    }

    /// The decoder: what the bytes buffered so far (`buf`, the front of the
    /// stream) say about the next frame. A bad header is refused as soon as
    /// its 5 bytes are there, before anything waits for or allocates its
    /// body. A piece frame stops at its index ([`Decoded::Piece`]), so the
    /// caller can read the piece's data straight into the buffer it keeps.
    pub(crate) fn decode_next(&self, buf: &[u8]) -> Result<Decoded, WireError> {
        let Some(header) = buf.first_chunk::<FRAME_HEADER_LEN>() else {
            return Ok(Decoded::Need(FRAME_HEADER_LEN - buf.len()));
        };
        let (kind, body_len) = self.check_header(header)?;
        if kind == Kind::Piece {
            let Some(head) = buf.first_chunk::<PIECE_HEADER_LEN>() else {
                return Ok(Decoded::Need(PIECE_HEADER_LEN - buf.len()));
            };
            let index = u32::from_be_bytes(head[FRAME_HEADER_LEN..].try_into().expect("4 bytes"));
            self.check_piece_len(index, body_len)?;
            return Ok(Decoded::Piece {
                index,
                data_len: body_len - PIECE_INDEX_LEN,
            });
        }
        let total = FRAME_HEADER_LEN + body_len;
        match buf.get(FRAME_HEADER_LEN..total) {
            None => Ok(Decoded::Need(total - buf.len())),
            Some(body) => Ok(Decoded::Message(self.decode_body(kind, body)?, total)),
        }
    }

    /// Decodes one whole frame from the front of `buf`: `Ok(None)` when more
    /// bytes are needed, otherwise the message and how many bytes it took.
    /// [`Limits::decode_next`], with a piece's data copied out of `buf`.
    pub fn decode_frame(&self, buf: &[u8]) -> Result<Option<(Message, usize)>, WireError> {
        Ok(match self.decode_next(buf)? {
            Decoded::Need(_) => None,
            Decoded::Message(message, used) => Some((message, used)),
            Decoded::Piece { index, data_len } => {
                let total = PIECE_HEADER_LEN + data_len;
                buf.get(PIECE_HEADER_LEN..total).map(|data| {
                    let data = PieceBuf::from(data);
                    (Message::Piece { index, data }, total)
                })
            }
        })
    }
}

/// What the front of a byte stream holds, as far as [`Limits::decode_next`]
/// can tell from the bytes there so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// Nothing more can be said before this many more bytes (at least one)
    /// are there: the rest of the header, of a piece's index, or of a frame
    /// that is not a piece.
    Need(usize),
    /// A whole frame that is not a piece, and how many bytes it took.
    Message(Message, usize),
    /// A well-formed piece frame, of which the first [`PIECE_HEADER_LEN`]
    /// bytes are taken: the next `data_len` bytes are piece `index`'s data,
    /// exactly that piece's length.
    Piece { index: u32, data_len: usize },
}

/// The 9 bytes in front of a piece's data: length, type 7, index.
pub fn piece_header(index: u32, data_len: u32) -> [u8; PIECE_HEADER_LEN] {
    let mut out = [0u8; 9];
    out[..4].copy_from_slice(&(1 + PIECE_INDEX_LEN as u32 + data_len).to_be_bytes());
    out[4] = Kind::Piece as u8;
    out[5..].copy_from_slice(&index.to_be_bytes());
    out
}

/// Whether `header` opens a piece frame of `frame_len` bytes in all (its
/// header included).
pub(crate) fn is_piece_header(header: &[u8; FRAME_HEADER_LEN], frame_len: usize) -> bool {
    let len = u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    header[4] == Kind::Piece as u8 && len + 4 == frame_len
}

/// Appends the frame of `message` to `out`.
pub fn encode(message: &Message, out: &mut Vec<u8>) {
    let kind = message.kind() as u8;
    let mut frame = |payload: &[&[u8]]| {
        let len = 1 + payload.iter().map(|p| p.len()).sum::<usize>();
        out.extend_from_slice(&(len as u32).to_be_bytes());
        out.push(kind);
        for p in payload {
            out.extend_from_slice(p);
        }
    };
    match message {
        Message::Choke
        | Message::Unchoke
        | Message::Interested
        | Message::NotInterested
        | Message::Goodbye => frame(&[]),
        Message::Have(index) | Message::Request(index) => frame(&[&index.to_be_bytes()]),
        Message::Reject { index, instead } => {
            frame(&[&index.to_be_bytes(), &instead.to_be_bytes()])
        }
        Message::Bitfield(bits) => frame(&[bits.as_wire()]),
        Message::Piece { index, data } => frame(&[&index.to_be_bytes(), data]),
    }
}

/// How many bytes [`encode`] writes for `message`, without writing them.
pub fn frame_len(message: &Message) -> usize {
    FRAME_HEADER_LEN
        + match message {
            Message::Choke
            | Message::Unchoke
            | Message::Interested
            | Message::NotInterested
            | Message::Goodbye => 0,
            Message::Have(_) | Message::Request(_) => PIECE_INDEX_LEN,
            Message::Reject { .. } => 2 * PIECE_INDEX_LEN,
            Message::Bitfield(bits) => bits.as_wire().len(),
            Message::Piece { data, .. } => PIECE_INDEX_LEN + data.len(),
        }
}

/// The frame of `message` as a new buffer.
pub fn encode_to_vec(message: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    encode(message, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(file: u64, piece: u32) -> Limits {
        Limits::new(Layout::new(file, piece).unwrap())
    }

    #[test]
    fn handshake_of_1001_is_exact() {
        let h = encode_handshake(1001);
        assert_eq!(&h[..18], b"P2PFILESHARINGPROJ");
        assert_eq!(&h[18..28], &[0u8; 10]);
        assert_eq!(&h[28..], &[0x00, 0x00, 0x03, 0xe9]);
    }

    #[test]
    fn handshake_reading_is_lenient_about_padding_and_ascii_ids() {
        let known = |id| id == 1001 || id == 1002;
        assert_eq!(decode_handshake(&encode_handshake(1001), known), Ok(1001));
        let mut ascii = *b"P2PFILESHARINGPROJ00000000001002";
        assert_eq!(decode_handshake(&ascii, known), Ok(1002));
        ascii[28..].copy_from_slice(b"1003");
        assert_eq!(
            decode_handshake(&ascii, known),
            Err(WireError::UnexpectedPeer(u32::from_be_bytes(*b"1003")))
        );
        let mut zero_padded_binary = encode_handshake(1002);
        zero_padded_binary[18..28].copy_from_slice(b"0000000000");
        assert_eq!(decode_handshake(&zero_padded_binary, known), Ok(1002));
    }

    #[test]
    fn pipelining_is_offered_only_by_magic_and_flag() {
        let offer = encode_handshake_with(1001, reserved_offering_pipelining());
        assert_eq!(&offer[18..28], &[0, 0, 0, 0, 0, 0, 0, 0, 0xF7, 0x01]);
        assert_eq!(decode_handshake(&offer, |id| id == 1001), Ok(1001));
        assert!(offers_pipelining(&handshake_reserved(&offer)));
        assert!(!offers_pipelining(&handshake_reserved(&encode_handshake(
            1001
        ))));
        assert!(!offers_pipelining(b"0000000000"));
        assert!(!offers_pipelining(b"0000000001"));
    }

    #[test]
    fn handshake_with_wrong_header_is_refused() {
        let mut h = encode_handshake(1001);
        h[0] = b'X';
        assert_eq!(
            decode_handshake(&h, |_| true),
            Err(WireError::BadHandshakeHeader)
        );
        assert_eq!(
            decode_handshake(&encode_handshake(7), |id| id == 1001),
            Err(WireError::UnexpectedPeer(7))
        );
    }

    #[test]
    fn control_messages_have_exact_bytes() {
        assert_eq!(encode_to_vec(&Message::Choke), [0, 0, 0, 1, 0]);
        assert_eq!(encode_to_vec(&Message::Unchoke), [0, 0, 0, 1, 1]);
        assert_eq!(encode_to_vec(&Message::Interested), [0, 0, 0, 1, 2]);
        assert_eq!(encode_to_vec(&Message::NotInterested), [0, 0, 0, 1, 3]);
        assert_eq!(encode_to_vec(&Message::Goodbye), [0, 0, 0, 1, 0xF1]);
        assert_eq!(
            encode_to_vec(&Message::Have(0x0102_0304)),
            [0, 0, 0, 5, 4, 1, 2, 3, 4]
        );
        assert_eq!(
            encode_to_vec(&Message::Request(17)),
            [0, 0, 0, 5, 6, 0, 0, 0, 17]
        );
    }

    #[test]
    fn bitfield_of_ten_pieces_with_0_and_9_is_80_40() {
        let mut b = Bitfield::empty(10);
        b.set(0, true);
        b.set(9, true);
        assert_eq!(
            encode_to_vec(&Message::Bitfield(b)),
            [0, 0, 0, 3, 5, 0x80, 0x40]
        );
    }

    #[test]
    fn piece_frame_and_its_header_agree() {
        let m = Message::Piece {
            index: 2,
            data: vec![9, 8, 7].into(),
        };
        let bytes = encode_to_vec(&m);
        assert_eq!(bytes, [0, 0, 0, 8, 7, 0, 0, 0, 2, 9, 8, 7]);
        assert_eq!(piece_header(2, 3), bytes[..9]);
    }

    #[test]
    fn every_message_round_trips() {
        let l = limits(10, 4); // pieces of 4, 4 and 2 bytes
        let mut bits = Bitfield::empty(3);
        bits.set(2, true);
        for m in [
            Message::Choke,
            Message::Unchoke,
            Message::Interested,
            Message::NotInterested,
            Message::Have(2),
            Message::Bitfield(bits),
            Message::Request(0),
            Message::Piece {
                index: 0,
                data: vec![1, 2, 3, 4].into(),
            },
            Message::Goodbye,
            Message::Reject {
                index: 1,
                instead: 2,
            },
            Message::Piece {
                index: 2,
                data: vec![5, 6].into(),
            },
        ] {
            let bytes = encode_to_vec(&m);
            assert_eq!(frame_len(&m), bytes.len(), "{m:?}");
            assert_eq!(
                l.decode_frame(&bytes),
                Ok(Some((m.clone(), bytes.len()))),
                "{m:?}"
            );
            for cut in 0..bytes.len() {
                assert_eq!(
                    l.decode_frame(&bytes[..cut]),
                    Ok(None),
                    "{m:?} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn the_decoder_asks_for_what_it_needs_and_stops_a_piece_at_its_index() {
        let l = limits(10, 4); // pieces of 4, 4 and 2 bytes
        assert_eq!(l.decode_next(&[]), Ok(Decoded::Need(5)));
        assert_eq!(l.decode_next(&[0, 0, 0]), Ok(Decoded::Need(2)));
        let have = encode_to_vec(&Message::Have(1));
        assert_eq!(l.decode_next(&have[..5]), Ok(Decoded::Need(4)));
        assert_eq!(l.decode_next(&have[..7]), Ok(Decoded::Need(2)));
        // Bytes of the next frame behind this one are not taken.
        let mut two = have.clone();
        encode(&Message::Choke, &mut two);
        assert_eq!(
            l.decode_next(&two),
            Ok(Decoded::Message(Message::Have(1), 9))
        );
        let piece = encode_to_vec(&Message::Piece {
            index: 2,
            data: vec![5, 6].into(),
        });
        assert_eq!(l.decode_next(&piece[..5]), Ok(Decoded::Need(4)));
        assert_eq!(l.decode_next(&piece[..8]), Ok(Decoded::Need(1)));
        for cut in [9, 10, 11] {
            assert_eq!(
                l.decode_next(&piece[..cut]),
                Ok(Decoded::Piece {
                    index: 2,
                    data_len: 2
                })
            );
        }
        // A piece's index is judged before its data is waited for.
        let mut wrong = piece_header(3, 2).to_vec();
        assert_eq!(
            l.decode_next(&wrong),
            Err(WireError::IndexOutOfRange {
                index: 3,
                num_pieces: 3
            })
        );
        wrong = piece_header(0, 2).to_vec();
        assert!(matches!(
            l.decode_next(&wrong),
            Err(WireError::BadLength {
                kind: Kind::Piece,
                ..
            })
        ));
    }

    #[test]
    fn frames_that_do_not_fit_their_type_are_refused() {
        let l = limits(10, 4);
        assert_eq!(
            l.decode_frame(&[0, 0, 0, 1, 8]),
            Err(WireError::UnknownType(8))
        );
        assert_eq!(l.decode_frame(&[0, 0, 0, 0, 0]), Err(WireError::EmptyFrame));
        assert!(matches!(
            l.decode_frame(&[0, 0, 0, 2, 0, 0]),
            Err(WireError::BadLength {
                kind: Kind::Choke,
                ..
            })
        ));
        assert!(matches!(
            l.decode_frame(&[0, 0, 0, 4, 4, 0, 0, 0]),
            Err(WireError::BadLength {
                kind: Kind::Have,
                ..
            })
        ));
        // Three pieces need one bitfield byte, not two.
        assert!(matches!(
            l.decode_frame(&[0, 0, 0, 3, 5, 0, 0]),
            Err(WireError::BadLength {
                kind: Kind::Bitfield,
                ..
            })
        ));
        assert_eq!(
            l.decode_frame(&[0, 0, 0, 5, 4, 0, 0, 0, 3]),
            Err(WireError::IndexOutOfRange {
                index: 3,
                num_pieces: 3
            })
        );
        assert_eq!(
            l.decode_frame(&[0, 0, 0, 5, 6, 255, 0, 0, 0]),
            Err(WireError::IndexOutOfRange {
                index: 0xff00_0000,
                num_pieces: 3
            })
        );
        // Last piece is 2 bytes: 4 bytes for it is wrong, as is 1 byte for piece 0.
        assert!(matches!(
            l.decode_frame(&encode_to_vec(&Message::Piece {
                index: 2,
                data: vec![0; 4].into()
            })),
            Err(WireError::BadLength {
                kind: Kind::Piece,
                ..
            })
        ));
        assert!(matches!(
            l.decode_frame(&encode_to_vec(&Message::Piece {
                index: 0,
                data: vec![0; 1].into()
            })),
            Err(WireError::BadLength {
                kind: Kind::Piece,
                ..
            })
        ));
    }

    #[test]
    fn a_bitfield_larger_than_a_piece_is_accepted() {
        // Regression: 16,384 pieces of 1 KiB; the bitfield (2,048 bytes) is
        // larger than a piece, and was refused as an oversized frame.
        let l = limits(16384 * 1024, 1024);
        let bytes = encode_to_vec(&Message::Bitfield(Bitfield::full(16384)));
        assert_eq!(bytes.len(), 5 + 2048);
        assert!(matches!(
            l.decode_frame(&bytes),
            Ok(Some((Message::Bitfield(_), 2053)))
        ));
        // A piece frame of that length is still refused: it must fit its piece.
        let mut fake = bytes.clone();
        fake[4] = 7;
        assert!(l.decode_frame(&fake).is_err());
    }

    #[test]
    fn an_oversized_frame_is_refused_from_its_header_alone() {
        let l = limits(1 << 20, 1 << 16);
        // Only the 5 header bytes are given: nothing is waited for or allocated.
        assert_eq!(
            l.decode_frame(&[0x7f, 0xff, 0xff, 0xff, 7]),
            Err(WireError::FrameTooLarge {
                len: 0x7fff_ffff,
                max: (1 << 16) + 5
            })
        );
        assert_eq!(l.decode_frame(&[0, 1, 0, 5, 7]), Ok(None));
        assert!(l.decode_frame(&[0, 1, 0, 6, 7]).is_err());
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn message(num_pieces: u32, layout: Layout) -> impl Strategy<Value = Message> {
            prop_oneof![
                Just(Message::Choke),
                Just(Message::Unchoke),
                Just(Message::Interested),
                Just(Message::NotInterested),
                (0..num_pieces).prop_map(Message::Have),
                (0..num_pieces).prop_map(Message::Request),
                proptest::collection::vec(any::<bool>(), num_pieces as usize).prop_map(
                    move |bits| {
                        let mut b = Bitfield::empty(num_pieces);
                        for (i, on) in bits.into_iter().enumerate() {
                            b.set(i as u32, on);
                        }
                        Message::Bitfield(b)
                    }
                ),
                (0..num_pieces).prop_flat_map(move |index| {
                    proptest::collection::vec(any::<u8>(), layout.piece_len(index) as usize)
                        .prop_map(move |data| Message::Piece {
                            index,
                            data: data.into(),
                        })
                }),
            ]
        }

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic_and_never_overread(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
                let l = limits(1000, 64);
                if let Ok(Some((_, used))) = l.decode_frame(&bytes) {
                    prop_assert!(used <= bytes.len());
                }
            }

            #[test]
            fn a_stream_of_frames_decodes_back_in_order(
                msgs in proptest::collection::vec(message(16, Layout::new(1000, 64).unwrap()), 1..20)
            ) {
                let l = limits(1000, 64);
                let mut stream = Vec::new();
                for m in &msgs {
                    encode(m, &mut stream);
                }
                let mut at = 0;
                let mut back = Vec::new();
                while let Some((m, used)) = l.decode_frame(&stream[at..]).unwrap() {
                    back.push(m);
                    at += used;
                }
                prop_assert_eq!(at, stream.len());
                prop_assert_eq!(back, msgs);
            }

            #[test]
            fn the_decoder_always_asks_for_at_least_one_byte_and_never_more_than_a_frame(
                bytes in proptest::collection::vec(any::<u8>(), 0..300)
            ) {
                let l = limits(1000, 64);
                for cut in 0..=bytes.len() {
                    match l.decode_next(&bytes[..cut]) {
                        Ok(Decoded::Need(more)) => {
                            prop_assert!(more >= 1);
                            prop_assert!(cut + more <= l.max_frame_len() as usize + 4);
                        }
                        Ok(Decoded::Message(_, used)) => prop_assert!(used <= cut),
                        Ok(Decoded::Piece { data_len, .. }) => {
                            prop_assert!(cut >= PIECE_HEADER_LEN);
                            prop_assert!(data_len <= 64);
                        }
                        Err(_) => {}
                    }
                }
            }

            #[test]
            fn any_header_is_judged_without_the_body(header in any::<[u8; 5]>()) {
                let l = limits(1000, 64);
                match l.check_header(&header) {
                    Ok((_, body_len)) => prop_assert!(body_len <= l.max_frame_len() as usize),
                    Err(_) => prop_assert!(l.decode_frame(&header).is_err()),
                }
            }
        }
    }
}
