//! How many requests to keep outstanding with one p2pft neighbour. The
//! configured depth suits a local network; across a wide one a connection
//! with `d` requests of `s` bytes in flight carries at most `d * s` bytes a
//! round trip (20 ms and 4 of 256 KiB: 50 MiB/s, whatever the link). So each
//! neighbour's depth follows what its link needs: twice the bytes its recent
//! rate delivers in the shortest request-to-piece time seen, which, while the
//! depth is what holds the rate back, doubles the depth each measurement,
//! as TCP's slow start does, and settles once the link is full (its queue
//! then lengthens the time, not the rate).
//!
//! Owns the measurements of one neighbour; never sends, picks or decides
//! anything else. A neighbour on the same host, a local link (shortest time
//! under [`LOCAL_LATENCY`]) and a depth the user configured keep the
//! configured depth, so a local swarm behaves as before; the depth never
//! exceeds [`MAX_DEPTH_BYTES`] of pieces nor [`MAX_DEPTH`] requests. Any
//! other link starts at one request and may settle below the configured
//! depth: a capped link that several neighbours share carries a piece in
//! longer than a round trip, so one request keeps it busy, and more only
//! tie pieces to one neighbour for longer (see docs/PERFORMANCE.md).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A shortest request-to-piece time under this is a local link: the
/// configured depth is enough there.
pub(crate) const LOCAL_LATENCY: Duration = Duration::from_millis(1);

/// Bytes of requested pieces one neighbour may have in flight at most.
pub(crate) const MAX_DEPTH_BYTES: u64 = 4 << 20;

/// Requests one neighbour may have outstanding at most (as configured depths).
pub(crate) const MAX_DEPTH: u32 = 64;

/// How long a rate measurement lasts.
const RATE_WINDOW: Duration = Duration::from_millis(100);

pub(crate) struct Pacing {
    base: u32,
    /// The depth may grow past `base`.
    adapts: bool,
    piece_bytes: u64,
    /// Requests outstanding and when each went out, oldest first.
    sent: VecDeque<(u32, Instant)>,
    /// The shortest time from a request to its piece so far.
    shortest: Option<Duration>,
    /// Bytes received since the window began.
    window: (Instant, u64),
    /// Bytes a second over the last window, if one has ended.
    rate: Option<f64>,
}

impl Pacing {
    /// A neighbour asked for `base` requests at a time, of pieces of
    /// `piece_bytes`; more where its link needs them if it `adapts`.
    pub(crate) fn new(base: u32, piece_bytes: u64, adapts: bool, now: Instant) -> Pacing {
        Pacing {
            base,
            adapts,
            piece_bytes: piece_bytes.max(1),
            sent: VecDeque::new(),
            shortest: None,
            window: (now, 0),
            rate: None,
        }
    }

    pub(crate) fn requested(&mut self, index: u32, now: Instant) {
        self.sent.push_back((index, now));
    }

    /// When piece `index` was asked for, if it is still awaited.
    pub(crate) fn asked_at(&self, index: u32) -> Option<Instant> {
        self.sent
            .iter()
            .find(|&&(i, _)| i == index)
            .map(|&(_, at)| at)
    }

    /// Piece `index` came in: a time sample if it was requested.
    pub(crate) fn arrived(&mut self, index: u32, now: Instant) {
        if let Some(at) = self.sent.iter().position(|&(i, _)| i == index) {
            let (_, sent) = self.sent.remove(at).expect("found");
            let took = now.saturating_duration_since(sent);
            self.shortest = Some(self.shortest.map_or(took, |s| s.min(took)));
        }
        let (began, bytes) = self.window;
        let bytes = bytes + self.piece_bytes;
        let elapsed = now.saturating_duration_since(began);
        if elapsed >= RATE_WINDOW {
            self.rate = Some(bytes as f64 / elapsed.as_secs_f64());
            self.window = (now, 0);
        } else {
            self.window = (began, bytes);
        }
    }

    /// Requests whose times are kept.
    #[cfg(test)]
    pub(crate) fn awaited(&self) -> usize {
        self.sent.len()
    }

    /// Requests that will not be answered (we were choked): no samples.
    pub(crate) fn forget(&mut self) {
        self.sent.clear();
    }

    /// The request for `index` will not be answered (it was rejected).
    pub(crate) fn cancel(&mut self, index: u32) {
        self.sent.retain(|&(i, _)| i != index);
    }

    /// The shortest request-to-piece time so far, and the depth now: for
    /// diagnostics.
    pub(crate) fn summary(&self) -> String {
        format!(
            "shortest request-to-piece time {}, depth {}",
            self.shortest
                .map_or("-".into(), |s| format!("{:.2} ms", s.as_secs_f64() * 1e3)),
            self.depth()
        )
    }

    /// Requests to keep outstanding now.
    pub(crate) fn depth(&self) -> u32 {
        if !self.adapts {
            return self.base;
        }
        // Unmeasured, a link to another host starts at one request, as TCP
        // starts with a small window: on a capped link a deeper queue only
        // ties pieces to one neighbour for longer.
        let Some(shortest) = self.shortest else {
            return 1;
        };
        if shortest < LOCAL_LATENCY {
            return self.base;
        }
        let Some(rate) = self.rate else {
            return 1;
        };
        let most = (MAX_DEPTH_BYTES / self.piece_bytes).clamp(1, u64::from(MAX_DEPTH)) as u32;
        let wanted = (2.0 * rate * shortest.as_secs_f64() / self.piece_bytes as f64).ceil();
        // Not clamped up to `base`: on a capped link shared by several
        // neighbours a piece takes longer than a round trip, one request
        // keeps it busy, and each further one only ties a piece to this
        // neighbour for longer.
        (wanted.min(f64::from(MAX_DEPTH)) as u32).clamp(1, most)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIECE: u64 = 256 * 1024;

    /// A link of `rtt` and `link` bytes a second, kept `depth()` requests
    /// deep for `pieces` pieces: a request reaches the sender half a round
    /// trip later, which sends pieces one after another at the link's rate,
    /// each arriving half a round trip after it is sent. The depth after
    /// each piece, and the rate over the last half of the pieces.
    fn run(rtt: Duration, link: f64, pieces: u32) -> (Vec<u32>, f64) {
        let start = Instant::now();
        let mut p = Pacing::new(4, PIECE, true, start);
        let (half, each) = (rtt / 2, Duration::from_secs_f64(PIECE as f64 / link));
        let mut due: VecDeque<(u32, Instant)> = VecDeque::new();
        let (mut now, mut link_free, mut next) = (start, start, 0);
        let mut depths = Vec::new();
        let mut half_way = None;
        for got in 0..pieces {
            while due.len() < p.depth() as usize {
                p.requested(next, now);
                let sent = (now + half).max(link_free) + each;
                link_free = sent;
                due.push_back((next, sent + half));
                next += 1;
            }
            let (index, at) = due.pop_front().unwrap();
            now = at;
            p.arrived(index, now);
            depths.push(p.depth());
            if got == pieces / 2 {
                half_way = Some(now);
            }
        }
        let secs = now.duration_since(half_way.unwrap()).as_secs_f64();
        (depths, f64::from(pieces / 2) * PIECE as f64 / secs)
    }

    #[test]
    fn a_local_link_keeps_the_configured_depth() {
        let (depths, _) = run(Duration::from_micros(200), 2e9, 400);
        assert!(depths.iter().all(|&d| d == 4), "{depths:?}");
        let unmeasured = Pacing::new(4, PIECE, true, Instant::now());
        assert_eq!(unmeasured.depth(), 1, "one request until a piece has come");
    }

    #[test]
    fn a_long_link_grows_the_depth_until_it_is_full() {
        // 20 ms and 50 MiB/s: 1 MiB a round trip, 4 pieces, which the
        // configured depth of 4 cannot keep full (a piece's own time adds).
        let link = 50.0 * 1024.0 * 1024.0;
        let (depths, rate) = run(Duration::from_millis(20), link, 2000);
        assert_eq!(depths[0], 1, "no rate measured yet");
        let most = *depths.iter().max().unwrap();
        assert!((8..=16).contains(&most), "{most}");
        assert!(rate > 0.95 * link, "{:.1} MiB/s", rate / 1048576.0);
        // Not for a neighbour on this host, nor a depth the user set.
        let mut fixed = Pacing::new(4, PIECE, false, Instant::now());
        (fixed.shortest, fixed.rate) = (Some(Duration::from_millis(20)), Some(link));
        assert_eq!(fixed.depth(), 4);
        fixed.adapts = true;
        assert_eq!(fixed.depth(), 8);
    }

    #[test]
    fn the_depth_never_passes_its_bounds() {
        // 200 ms and 1 GiB/s would want 800 pieces: 4 MiB of them at most.
        let (depths, _) = run(Duration::from_millis(200), 1024.0 * 1024.0 * 1024.0, 2000);
        assert_eq!(*depths.iter().max().unwrap(), 16, "{depths:?}");
        let mut small = Pacing::new(32, 16 * 1024, true, Instant::now());
        small.shortest = Some(Duration::from_millis(300));
        small.rate = Some(100.0 * 1024.0 * 1024.0);
        assert_eq!(small.depth(), MAX_DEPTH);
        // A slow link (a capped one shared with others): one request, not
        // the configured 32.
        small.rate = Some(16.0 * 1024.0);
        assert_eq!(small.depth(), 1);
    }

    #[test]
    fn answers_we_gave_up_on_are_no_time_samples() {
        let t = Instant::now();
        let mut p = Pacing::new(4, PIECE, true, t);
        p.requested(7, t);
        p.forget();
        p.arrived(7, t + Duration::from_secs(5));
        assert_eq!(p.shortest, None);
    }
}
