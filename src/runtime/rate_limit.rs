//! Rate caps (`P2pftMaxUploadRate`, `P2pftMaxDownloadRate`): one budget of
//! bytes a second for a whole peer process, shared by every connection's
//! writer (upload) or reader (download).
//!
//! A cap is a virtual clock: each piece moves the time at which the next byte
//! may pass by its length over the rate, and whoever reserved it waits until
//! its turn. Idle time builds up credit for at most [`BURST`], so a cap is
//! kept over any window longer than that. Owns no socket and never sleeps
//! itself: callers wait the [`Duration`] it returns, where waiting pushes back
//! on the right connection (a writer before it sends, a reader before it
//! reads on).

use parking_lot::Mutex;
use std::time::{Duration, Instant};

/// Credit an idle cap builds up: a burst of this long at the full rate.
pub(crate) const BURST: Duration = Duration::from_millis(50);

#[derive(Debug)]
pub struct RateLimit {
    bytes_per_sec: u64,
    /// When the bytes reserved so far have all passed, at the rate.
    next: Mutex<Option<Instant>>,
}

impl RateLimit {
    /// A cap of `bytes_per_sec` (at least 1).
    pub fn new(bytes_per_sec: u64) -> RateLimit {
        RateLimit {
            bytes_per_sec: bytes_per_sec.max(1),
            next: Mutex::new(None),
        }
    }

    pub fn bytes_per_sec(&self) -> u64 {
        self.bytes_per_sec
    }

    /// Reserves `bytes` at `now`; returns how long to wait before moving them.
    pub fn reserve_at(&self, bytes: u64, now: Instant) -> Duration {
        let cost = Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec as f64);
        let mut next = self.next.lock();
        let earliest = now.checked_sub(BURST).unwrap_or(now);
        let start = next.map_or(earliest, |n| n.max(earliest));
        let done = start + cost;
        *next = Some(done);
        // The bytes count as moved when their slot ends.
        done.saturating_duration_since(now)
    }

    /// [`RateLimit::reserve_at`] now.
    pub fn reserve(&self, bytes: u64) -> Duration {
        self.reserve_at(bytes, Instant::now())
    }

    /// Reserves `bytes` and waits for their turn.
    pub fn wait_for(&self, bytes: u64) {
        let wait = self.reserve(bytes);
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_cap_lets_a_burst_through_then_paces_at_its_rate() {
        let cap = RateLimit::new(1_000_000);
        let t0 = Instant::now();
        // 50 ms of credit: 50 kB goes at once.
        assert_eq!(cap.reserve_at(50_000, t0), Duration::ZERO);
        // The next 100 kB must wait 100 ms.
        let wait = cap.reserve_at(100_000, t0);
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "waited {wait:?}");
    }

    #[test]
    fn many_reservations_take_as_long_as_the_rate_says() {
        let cap = RateLimit::new(10 << 20);
        let t0 = Instant::now();
        // 100 pieces of 256 KiB reserved back to back by several callers:
        // the last goes after 25 MiB / 10 MiB/s less the burst's credit.
        let mut last = Duration::ZERO;
        for _ in 0..100 {
            last = cap.reserve_at(256 << 10, t0);
        }
        let expected = 100.0 * 256.0 / 1024.0 / 10.0 - BURST.as_secs_f64();
        assert!(
            (last.as_secs_f64() - expected).abs() < 0.001,
            "last waits {last:?}, expected {expected} s"
        );
    }

    #[test]
    fn credit_does_not_pile_up_beyond_the_burst() {
        let cap = RateLimit::new(1_000_000);
        let t0 = Instant::now();
        let _ = cap.reserve_at(1_000, t0);
        // Ten seconds idle give 50 ms of credit, not ten seconds' worth.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(cap.reserve_at(50_000, later), Duration::ZERO);
        assert!(cap.reserve_at(50_000, later) >= Duration::from_millis(49));
    }
}
