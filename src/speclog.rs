//! The spec log, `log_peer_<ID>.log`: the exact sentences of SPEC.md section 5.
//!
//! Every sentence is written by one method here, so the text lives in one
//! place. Lines go through a fern dispatch built per peer (not the global
//! logger, so several peers can share a process) with a chrono time stamp
//! `YYYY-MM-DD HH:MM:SS.mmm` in local time. Nothing but spec lines ever goes
//! to this file: diagnostics use the `log` macros, which go to stderr.

use std::fmt::Arguments;
use std::io;
use std::path::Path;

pub const TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.3f";

pub struct SpecLog {
    me: u32,
    sink: Box<dyn log::Log>,
}

impl SpecLog {
    /// Appends to the log file at `path` for peer `me`.
    pub fn open(path: &Path, me: u32) -> io::Result<SpecLog> {
        let file = fern::log_file(path).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot open log {}: {e}", path.display()))
        })?;
        let (_, sink) = fern::Dispatch::new()
            .format(|out, message, _| {
                out.finish(format_args!(
                    "{}: {}",
                    chrono::Local::now().format(TIME_FORMAT),
                    message
                ))
            })
            .level(log::LevelFilter::Info)
            .chain(file)
            .into_log();
        Ok(SpecLog { me, sink })
    }

    fn line(&self, args: Arguments<'_>) {
        self.sink.log(
            &log::Record::builder()
                .level(log::Level::Info)
                .target("spec")
                .args(args)
                .build(),
        );
    }

    pub fn makes_connection(&self, to: u32) {
        self.line(format_args!(
            "Peer {} makes a connection to Peer {to}.",
            self.me
        ));
    }

    pub fn connected_from(&self, from: u32) {
        self.line(format_args!(
            "Peer {} is connected from Peer {from}.",
            self.me
        ));
    }

    pub fn preferred_neighbors(&self, ids: &[u32]) {
        let list: Vec<String> = ids.iter().map(u32::to_string).collect();
        self.line(format_args!(
            "Peer {} has the preferred neighbors {}.",
            self.me,
            list.join(",")
        ));
    }

    pub fn optimistic_neighbor(&self, id: u32) {
        self.line(format_args!(
            "Peer {} has the optimistically unchoked neighbor {id}.",
            self.me
        ));
    }

    pub fn unchoked_by(&self, by: u32) {
        self.line(format_args!("Peer {} is unchoked by {by}.", self.me));
    }

    pub fn choked_by(&self, by: u32) {
        self.line(format_args!("Peer {} is choked by {by}.", self.me));
    }

    pub fn received_have(&self, from: u32, index: u32) {
        self.line(format_args!(
            "Peer {} received the 'have' message from {from} for the piece {index}.",
            self.me
        ));
    }

    pub fn received_interested(&self, from: u32) {
        self.line(format_args!(
            "Peer {} received the 'interested' message from {from}.",
            self.me
        ));
    }

    pub fn received_not_interested(&self, from: u32) {
        self.line(format_args!(
            "Peer {} received the 'not interested' message from {from}.",
            self.me
        ));
    }

    pub fn downloaded_piece(&self, index: u32, from: u32, count: u32) {
        self.line(format_args!(
            "Peer {} has downloaded the piece {index} from {from}. Now the number of pieces it has is {count}.",
            self.me
        ));
    }

    pub fn complete(&self) {
        self.line(format_args!(
            "Peer {} has downloaded the complete file.",
            self.me
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sentence_is_exact_and_time_stamped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log_peer_1001.log");
        let log = SpecLog::open(&path, 1001).unwrap();
        log.makes_connection(1002);
        log.connected_from(1003);
        log.preferred_neighbors(&[1002, 1003, 1004]);
        log.optimistic_neighbor(1005);
        log.unchoked_by(1002);
        log.choked_by(1002);
        log.received_have(1002, 17);
        log.received_interested(1003);
        log.received_not_interested(1003);
        log.downloaded_piece(17, 1002, 42);
        log.complete();
        let text = std::fs::read_to_string(&path).unwrap();
        let stamp = regex::Regex::new(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}: ").unwrap();
        let sentences: Vec<String> = text
            .lines()
            .map(|l| {
                assert!(stamp.is_match(l), "{l}");
                stamp.replace(l, "").into_owned()
            })
            .collect();
        assert_eq!(
            sentences,
            [
                "Peer 1001 makes a connection to Peer 1002.",
                "Peer 1001 is connected from Peer 1003.",
                "Peer 1001 has the preferred neighbors 1002,1003,1004.",
                "Peer 1001 has the optimistically unchoked neighbor 1005.",
                "Peer 1001 is unchoked by 1002.",
                "Peer 1001 is choked by 1002.",
                "Peer 1001 received the 'have' message from 1002 for the piece 17.",
                "Peer 1001 received the 'interested' message from 1003.",
                "Peer 1001 received the 'not interested' message from 1003.",
                "Peer 1001 has downloaded the piece 17 from 1002. Now the number of pieces it has is 42.",
                "Peer 1001 has downloaded the complete file.",
            ]
        );
    }
}
