//! The spec log, `log_peer_<ID>.log`: the exact sentences of SPEC.md section 5.
//!
//! Every sentence is written by one method here, so the text lives in one
//! place. Lines go through a fern dispatch built per peer (not the global
//! logger, so several peers can share a process) with a chrono time stamp
//! `YYYY-MM-DD HH:MM:SS.mmm` in local time. Nothing but spec lines ever goes
//! to this file: diagnostics use the `log` macros, which go to stderr.
//!
//! Lines gather in memory and reach the file on [`SpecLog::flush`] (the engine
//! calls it whenever it has nothing left to handle), when [`FLUSH_BYTES`] have
//! gathered, and on drop. A leecher logs about four lines a piece, and a
//! write call each was many thousands a run (see docs/PERFORMANCE.md). A
//! line's time stamp is still the moment it was logged. Must never hold a
//! line past the engine's next idle moment.

use std::fmt::Arguments;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

/// A line's time stamp up to the second; milliseconds follow.
const SECOND_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// The time stamp of the last line, to the second, formatted: a leecher logs
/// some hundred lines a second (hundreds of thousands with 16 KiB pieces),
/// and formatting a whole date with chrono for each was a visible share of
/// its CPU (see docs/PERFORMANCE.md).
#[derive(Default)]
struct Stamp {
    second: Option<i64>,
    text: String,
}

impl Stamp {
    /// `now` to the second, as `YYYY-MM-DD HH:MM:SS`.
    fn second(&mut self, now: &chrono::DateTime<chrono::Local>) -> &str {
        let second = now.timestamp();
        if self.second != Some(second) {
            self.second = Some(second);
            self.text = now.format(SECOND_FORMAT).to_string();
        }
        &self.text
    }
}

/// Gathered bytes that make the log write at once.
pub(crate) const FLUSH_BYTES: usize = 64 * 1024;

/// Bytes of lines kept while the log cannot be written (a full disk), to be
/// written once it can; lines beyond are dropped and counted.
pub(crate) const BACKLOG_BYTES: usize = 1024 * 1024;

pub(crate) struct SpecLog {
    me: u32,
    sink: Box<dyn log::Log>,
    /// Where fern puts formatted lines; shared with the sink.
    pending: Pending,
    file: File,
    path: std::path::PathBuf,
    trouble: Mutex<Trouble>,
}

/// What a failing log write left behind.
#[derive(Default)]
struct Trouble {
    /// Bytes not yet written, oldest first (at most [`BACKLOG_BYTES`] once a
    /// flush is over).
    backlog: Vec<u8>,
    /// The last write failed; said once until a write succeeds again.
    failing: bool,
    /// Lines dropped since the failure began.
    lost: u64,
    /// The file ends in the middle of a line (a write that stopped short).
    mid_line: bool,
}

/// fern's output: it flushes after every line, so `flush` here does nothing
/// and [`SpecLog::flush`] decides when bytes reach the file.
#[derive(Clone, Default)]
struct Pending(Arc<Mutex<Vec<u8>>>);

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Write for Pending {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.lock().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SpecLog {
    /// Appends to the log file at `path` for peer `me`.
    pub(crate) fn open(path: &Path, me: u32) -> io::Result<SpecLog> {
        let file = fern::log_file(path).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot open log {}: {e}", path.display()))
        })?;
        let pending = Pending::default();
        let stamp = Mutex::new(Stamp::default());
        let (_, sink) = fern::Dispatch::new()
            .format(move |out, message, _| {
                let now = chrono::Local::now();
                let mut stamp = stamp.lock().unwrap_or_else(PoisonError::into_inner);
                let millis = now.timestamp_subsec_millis().min(999);
                out.finish(format_args!(
                    "{}.{millis:03}: {message}",
                    stamp.second(&now)
                ))
            })
            .level(log::LevelFilter::Info)
            .chain(fern::Output::writer(Box::new(pending.clone()), "\n"))
            .into_log();
        Ok(SpecLog {
            me,
            sink,
            pending,
            file,
            path: path.to_path_buf(),
            trouble: Mutex::default(),
        })
    }

    fn line(&self, args: Arguments<'_>) {
        self.sink.log(
            &log::Record::builder()
                .level(log::Level::Info)
                .target("spec")
                .args(args)
                .build(),
        );
        if self.pending.lock().len() >= FLUSH_BYTES {
            self.flush();
        }
    }

    /// Writes every gathered line to the file (one write call). A failing
    /// log write is a diagnostic, never the end of the peer: it is said once,
    /// the lines are kept (up to [`BACKLOG_BYTES`]) and written by a later
    /// flush that succeeds, which says how many were lost meanwhile.
    pub(crate) fn flush(&self) {
        let fresh = std::mem::take(&mut *self.pending.lock());
        let mut trouble = self.trouble.lock().unwrap_or_else(PoisonError::into_inner);
        let mut bytes = std::mem::take(&mut trouble.backlog);
        if bytes.is_empty() {
            bytes = fresh;
        } else {
            bytes.extend_from_slice(&fresh);
        }
        if bytes.is_empty() {
            return;
        }
        let (written, error) = write_some(&self.file, &bytes);
        if written > 0 {
            trouble.mid_line = bytes[written - 1] != b'\n';
        }
        let Some(e) = error else {
            if std::mem::take(&mut trouble.failing) {
                let lost = std::mem::take(&mut trouble.lost);
                log::warn!(
                    "peer {}: {} written again; {lost} lines were lost meanwhile",
                    self.me,
                    self.path.display()
                );
            }
            return;
        };
        if !trouble.failing {
            trouble.failing = true;
            log::warn!(
                "peer {}: cannot write {}: {e}; keeping up to {} KiB of lines until it can be written",
                self.me,
                self.path.display(),
                BACKLOG_BYTES / 1024
            );
        }
        let mut rest = &bytes[written..];
        if rest.len() > BACKLOG_BYTES {
            // Keep the end of a line begun in the file, so it is not torn.
            let keep = if trouble.mid_line {
                rest.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1)
            } else {
                0
            };
            trouble.lost += rest[keep..].iter().filter(|&&b| b == b'\n').count() as u64;
            rest = &rest[..keep];
        }
        trouble.backlog = rest.to_vec();
    }

    pub(crate) fn makes_connection(&self, to: u32) {
        self.line(format_args!(
            "Peer {} makes a connection to Peer {to}.",
            self.me
        ));
    }

    pub(crate) fn connected_from(&self, from: u32) {
        self.line(format_args!(
            "Peer {} is connected from Peer {from}.",
            self.me
        ));
    }

    pub(crate) fn preferred_neighbors(&self, ids: &[u32]) {
        let list: Vec<String> = ids.iter().map(u32::to_string).collect();
        self.line(format_args!(
            "Peer {} has the preferred neighbors {}.",
            self.me,
            list.join(",")
        ));
    }

    pub(crate) fn optimistic_neighbor(&self, id: u32) {
        self.line(format_args!(
            "Peer {} has the optimistically unchoked neighbor {id}.",
            self.me
        ));
    }

    pub(crate) fn unchoked_by(&self, by: u32) {
        self.line(format_args!("Peer {} is unchoked by {by}.", self.me));
    }

    pub(crate) fn choked_by(&self, by: u32) {
        self.line(format_args!("Peer {} is choked by {by}.", self.me));
    }

    pub(crate) fn received_have(&self, from: u32, index: u32) {
        self.line(format_args!(
            "Peer {} received the 'have' message from {from} for the piece {index}.",
            self.me
        ));
    }

    pub(crate) fn received_interested(&self, from: u32) {
        self.line(format_args!(
            "Peer {} received the 'interested' message from {from}.",
            self.me
        ));
    }

    pub(crate) fn received_not_interested(&self, from: u32) {
        self.line(format_args!(
            "Peer {} received the 'not interested' message from {from}.",
            self.me
        ));
    }

    pub(crate) fn downloaded_piece(&self, index: u32, from: u32, count: u32) {
        self.line(format_args!(
            "Peer {} has downloaded the piece {index} from {from}. Now the number of pieces it has is {count}.",
            self.me
        ));
    }

    pub(crate) fn complete(&self) {
        self.line(format_args!(
            "Peer {} has downloaded the complete file.",
            self.me
        ));
    }
}

/// Writes as much of `bytes` as the file takes: how much, and the error that
/// stopped it, if any.
fn write_some(mut file: &File, bytes: &[u8]) -> (usize, Option<io::Error>) {
    let mut written = 0;
    while written < bytes.len() {
        match file.write(&bytes[written..]) {
            Ok(0) => return (written, Some(io::ErrorKind::WriteZero.into())),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (written, Some(e)),
        }
    }
    (written, None)
}

impl Drop for SpecLog {
    fn drop(&mut self) {
        self.flush();
        let trouble = self.trouble.lock().unwrap_or_else(PoisonError::into_inner);
        let unwritten = trouble.backlog.iter().filter(|&&b| b == b'\n').count() as u64;
        if unwritten + trouble.lost > 0 {
            log::warn!(
                "peer {}: {} lines of {} could not be written",
                self.me,
                unwritten + trouble.lost,
                self.path.display()
            );
        }
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
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "",
            "gathered until flushed"
        );
        log.flush();
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

    #[test]
    fn lines_reach_the_file_when_enough_gathered_and_on_drop_and_append() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log_peer_7.log");
        std::fs::write(&path, "earlier run\n").unwrap();
        let log = SpecLog::open(&path, 7).unwrap();
        let line_len = "2026-01-01 00:00:00.000: Peer 7 received the 'have' message from 8 for the piece 1000.\n".len();
        let mut logged: usize = 0;
        while std::fs::metadata(&path).unwrap().len() == "earlier run\n".len() as u64 {
            log.received_have(8, 1000 + (logged % 9000) as u32);
            logged += 1;
            assert!(
                logged * line_len < 2 * FLUSH_BYTES,
                "no write after {logged} lines"
            );
        }
        assert!(
            logged * line_len >= FLUSH_BYTES - line_len,
            "wrote after {logged} lines"
        );
        log.complete();
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1 + logged + 1);
        assert_eq!(lines[0], "earlier run");
        assert!(lines[1].ends_with("Peer 7 received the 'have' message from 8 for the piece 1000."));
        assert!(lines[logged + 1].ends_with("Peer 7 has downloaded the complete file."));
    }

    /// Peer 7's log writing into a pipe that fails once 64 KiB wait unread
    /// (`WouldBlock`, after a short write), as a full disk would, until the
    /// test reads; and the pipe's read end.
    fn piped_log() -> (tempfile::TempDir, SpecLog, File) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = SpecLog::open(&dir.path().join("log_peer_7.log"), 7).unwrap();
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK).unwrap();
        log.file = File::from(write);
        (dir, log, File::from(read))
    }

    fn drain(mut read: &File, into: &mut Vec<u8>) {
        use std::io::Read;
        let mut buf = [0; 65536];
        loop {
            match read.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => into.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Reads and flushes until the log has nothing left to write.
    fn flush_through(log: &SpecLog, read: &File, out: &mut Vec<u8>) {
        for _ in 0..100 {
            drain(read, out);
            log.flush();
            if !log.trouble.lock().unwrap().failing {
                return drain(read, out);
            }
        }
        panic!("still failing after 100 reads of the pipe");
    }

    /// Every line whole and time-stamped, and the piece numbers they carry.
    fn pieces(text: &[u8]) -> Vec<u32> {
        let line = regex::Regex::new(
            r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}: Peer 7 received the 'have' message from 8 for the piece (\d+)\.$",
        )
        .unwrap();
        let text = std::str::from_utf8(text).unwrap();
        assert!(text.ends_with('\n'));
        text.lines()
            .map(|l| {
                line.captures(l).unwrap_or_else(|| panic!("torn: {l:?}"))[1]
                    .parse()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn a_log_that_cannot_be_written_keeps_its_lines_until_it_can() {
        let (_dir, log, read) = piped_log();
        for i in 0..1500 {
            log.received_have(8, i);
        }
        log.flush();
        let trouble = log.trouble.lock().unwrap();
        assert!(trouble.failing && !trouble.backlog.is_empty());
        assert!(trouble.mid_line, "a short write: the pipe holds 64 KiB");
        drop(trouble);
        let mut out = Vec::new();
        drain(&read, &mut out);
        for i in 1500..1600 {
            log.received_have(8, i);
        }
        flush_through(&log, &read, &mut out);
        let trouble = log.trouble.lock().unwrap();
        assert!(!trouble.failing && trouble.backlog.is_empty() && trouble.lost == 0);
        drop(trouble);
        assert_eq!(pieces(&out), (0..1600).collect::<Vec<_>>());
    }

    #[test]
    fn lines_beyond_the_backlog_are_lost_whole_and_counted() {
        let (_dir, log, read) = piped_log();
        let logged = 3 * BACKLOG_BYTES as u32 / 80;
        for i in 0..logged {
            log.received_have(8, i);
        }
        log.flush();
        let trouble = log.trouble.lock().unwrap();
        let (lost, kept) = (trouble.lost, trouble.backlog.len());
        drop(trouble);
        assert!(
            lost > 0 && kept <= BACKLOG_BYTES,
            "lost {lost}, kept {kept}"
        );
        let mut out = Vec::new();
        flush_through(&log, &read, &mut out);
        let got = pieces(&out);
        assert_eq!(got.len() as u64 + lost, u64::from(logged));
        assert!(got.windows(2).all(|w| w[0] < w[1]), "in order");
        assert_eq!(log.trouble.lock().unwrap().lost, 0, "counted until said");
    }
}
