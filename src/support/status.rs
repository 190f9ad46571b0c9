//! Live counters of one peer and the JSON status lines a launcher reads.
//!
//! The counters are atomics written by the engine (pieces, bytes in) and the
//! writer threads (bytes out), read by whoever reports progress; they carry
//! no protocol state. With `--status`, a peer prints one [`Status`] JSON object
//! a line on stdout; `p2pft swarm` parses them. Never blocks the engine.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct Counters {
    pub pieces: AtomicU32,
    /// Piece bytes received, duplicates included.
    pub bytes_in: AtomicU64,
    /// Piece bytes sent.
    pub bytes_out: AtomicU64,
    /// Pieces sent from a buffer still holding them after their write, and
    /// pieces read back from the device to be sent.
    pub served_kept: AtomicU64,
    pub served_read_back: AtomicU64,
    /// The file is complete: every piece verified (with metadata) and written,
    /// the data flushed and the length checked. Set with [`Counters::set_complete`].
    pub complete: AtomicBool,
    /// Most threads seen in this process.
    pub max_threads: AtomicU32,
    /// Protocol violations by neighbours (pieces nobody asked for, failed
    /// authentication): each dropped, the worst closing their connection.
    pub violations: AtomicU64,
    /// Rung when the file becomes complete, for a status printer waiting in
    /// [`Counters::wait_unless_complete`]; the mutex closes the gap between
    /// its look at `complete` and its wait.
    bell: (Mutex<()>, Condvar),
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub phase: Phase,
    pub peer: u32,
    pub pieces: u32,
    pub num_pieces: u32,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// User plus system CPU time of the peer process so far.
    #[serde(default)]
    pub cpu_secs: f64,
    /// Peak resident set size of the peer process (VmHWM).
    #[serde(default)]
    pub peak_rss_kb: u64,
    /// Most threads the peer process had at once.
    #[serde(default)]
    pub threads: u32,
    /// Protocol violations by neighbours so far (see [`Counters::violations`]).
    #[serde(default)]
    pub violations: u64,
}

/// Bytes in a MiB, for reports of sizes and rates.
pub(crate) const MIB: f64 = 1024.0 * 1024.0;

/// Bytes as MiB, for reports.
pub(crate) fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB
}

/// CPU seconds this process has used, all its threads, live or gone, to the
/// microsecond (`getrusage`). /proc's figure is in whole clock ticks,
/// rounded down, short by a few percent of a short bench run.
fn cpu_secs() -> Option<f64> {
    use nix::sys::resource::{getrusage, UsageWho};
    let usage = getrusage(UsageWho::RUSAGE_SELF).ok()?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 * 1e-6;
    Some(secs(usage.user_time()) + secs(usage.system_time()))
}

/// Fields of a /proc `stat` file after the command name, as numbers (state,
/// field 3, is index 0 and reads 0): field N is index N - 3.
pub(crate) fn stat_fields(path: &str) -> Vec<u64> {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    stat.rsplit_once(')').map_or(Vec::new(), |(_, rest)| {
        rest.split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect()
    })
}

/// [`stat_fields`] of this process.
fn proc_stat() -> Vec<u64> {
    stat_fields("/proc/self/stat")
}

/// CPU seconds as /proc says, in whole ticks (USER_HZ is 100 on every
/// Linux ABI): utime and stime, fields 14 and 15.
fn proc_cpu_secs(fields: &[u64]) -> f64 {
    let field = |i: usize| fields.get(i).copied().unwrap_or(0);
    (field(11) + field(12)) as f64 / 100.0
}

/// What this process has used: CPU seconds, peak RSS, threads now.
pub(crate) fn process_stats() -> (f64, u64, u32) {
    let fields = proc_stat();
    let cpu = cpu_secs().unwrap_or_else(|| proc_cpu_secs(&fields));
    // Field 20: threads.
    let threads = fields.get(17).copied().unwrap_or(0) as u32;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    (cpu, peak_kb, threads)
}

impl Counters {
    /// Marks the file complete and wakes a status printer waiting in
    /// [`Counters::wait_unless_complete`], so a launcher hears of it at once
    /// instead of at the next periodic line (up to 200 ms late: `p2pft bench`
    /// times completions by these lines). Never blocks on the printer.
    pub fn set_complete(&self) {
        let (lock, bell) = &self.bell;
        let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.complete.store(true, Relaxed);
        bell.notify_all();
    }

    /// Waits up to `timeout`, less if the file is or becomes complete.
    pub fn wait_unless_complete(&self, timeout: Duration) {
        let (lock, bell) = &self.bell;
        let guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = bell
            .wait_timeout_while(guard, timeout, |_| !self.complete.load(Relaxed))
            .unwrap_or_else(PoisonError::into_inner);
    }

    /// The status now; `phase` is raised to `Complete` once the file is.
    pub fn snapshot(&self, phase: Phase, peer: u32, num_pieces: u32) -> Status {
        let (cpu_secs, peak_rss_kb, threads) = process_stats();
        let max_threads = self.max_threads.fetch_max(threads, Relaxed).max(threads);
        let phase = match phase {
            Phase::Progress if self.complete.load(Relaxed) => Phase::Complete,
            other => other,
        };
        Status {
            phase,
            peer,
            pieces: self.pieces.load(Relaxed),
            num_pieces,
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            cpu_secs,
            peak_rss_kb,
            threads: max_threads,
            violations: self.violations.load(Relaxed),
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
    fn cpu_time_is_what_proc_says_to_the_microsecond() {
        // Some CPU time first (at least two ticks), so that both count.
        let mut x = 1u64;
        let spin = std::time::Instant::now();
        while proc_cpu_secs(&proc_stat()) < 0.02 && spin.elapsed() < Duration::from_secs(10) {
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
        }
        std::hint::black_box(x);
        let ticks = proc_cpu_secs(&proc_stat());
        let precise = cpu_secs().unwrap();
        // /proc rounds down to 10 ms, in two fields; the time between the
        // two reads only adds.
        assert!(ticks >= 0.02, "{ticks}");
        assert!(precise >= ticks, "{precise} < {ticks}");
        assert!(precise < ticks + 0.05, "{precise} vs {ticks}");
    }

    #[test]
    fn status_lines_round_trip() {
        let c = Counters::default();
        c.pieces.store(3, Relaxed);
        c.bytes_out.store(99, Relaxed);
        let s = c.snapshot(Phase::Progress, 1002, 3);
        assert_eq!(s.phase, Phase::Progress);
        c.set_complete();
        let s = c.snapshot(Phase::Progress, 1002, 3);
        let line = s.to_line();
        assert!(line.contains("\"phase\":\"complete\""), "{line}");
        assert_eq!(Status::parse(&line), Some(s));
        assert_eq!(Status::parse("not json"), None);
    }

    #[test]
    fn completion_wakes_a_waiting_printer_at_once() {
        let c = std::sync::Arc::new(Counters::default());
        let waiter = {
            let c = std::sync::Arc::clone(&c);
            std::thread::spawn(move || {
                let t = std::time::Instant::now();
                c.wait_unless_complete(Duration::from_secs(600));
                t.elapsed()
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        c.set_complete();
        // Without the bell the waiter would sleep the full 600 s: the join
        // would hang and the test time out, not pass.
        let waited = waiter.join().unwrap();
        assert!(waited < Duration::from_secs(600), "{waited:?}");
        assert!(c.complete.load(Relaxed));
        // Once complete, a wait does not wait.
        let t = std::time::Instant::now();
        c.wait_unless_complete(Duration::from_secs(600));
        assert!(t.elapsed() < Duration::from_secs(600));
    }

    #[test]
    fn process_stats_read_this_process() {
        let (cpu, peak_kb, threads) = process_stats();
        assert!(cpu >= 0.0);
        assert!(peak_kb > 100, "peak RSS {peak_kb} kB");
        assert!(threads >= 1);
    }
}
