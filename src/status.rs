//! Live counters of one peer and the JSON status lines a launcher reads.
//!
//! The counters are atomics written by the engine (pieces, bytes in) and the
//! writer threads (bytes out), read by whoever reports progress; they carry
//! no protocol state. With `--status`, a peer prints one [`Status`] JSON object
//! a line on stdout; `p2pft swarm` parses them. Never blocks the engine.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Counters {
    pub pieces: AtomicU32,
    /// Piece bytes received, duplicates included.
    pub bytes_in: AtomicU64,
    /// Piece bytes sent.
    pub bytes_out: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Listening on its port: the next peer may start.
    Listening,
    /// Still running.
    Progress,
    /// Has every piece (it may still be serving others).
    Complete,
    /// Every peer has the file; about to exit.
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub phase: Phase,
    pub peer: u32,
    pub pieces: u32,
    pub num_pieces: u32,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl Counters {
    pub fn snapshot(&self, phase: Phase, peer: u32, num_pieces: u32) -> Status {
        Status {
            phase,
            peer,
            pieces: self.pieces.load(Relaxed),
            num_pieces,
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
        }
    }
}

impl Status {
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("a status always serializes")
    }

    pub fn parse(line: &str) -> Option<Status> {
        serde_json::from_str(line.trim()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_round_trip() {
        let c = Counters::default();
        c.pieces.store(3, Relaxed);
        c.bytes_out.store(99, Relaxed);
        let s = c.snapshot(Phase::Complete, 1002, 3);
        let line = s.to_line();
        assert!(line.contains("\"phase\":\"complete\""), "{line}");
        assert_eq!(Status::parse(&line), Some(s));
        assert_eq!(Status::parse("not json"), None);
    }
}
