//! The kernel's send buffer of a connection across a short link (a LAN, a
//! bridge): sized to what the connection delivers, not left to autotuning.
//!
//! Autotuning grows a socket's buffer up to megabytes, and on a capped link
//! the bytes it holds wait in the link's queue: a piece handed to a socket
//! reached the neighbour 0.5-0.7 s later at 32 hosts on 4 MiB/s links, and
//! a piece passed on that late holds up every host after it. After a piece,
//! at most every [`EVERY`], a writer reads the connection's delivery rate and
//! shortest round trip (`TCP_INFO`) and sets `SO_SNDBUF` to twice what the
//! rate delivers in the round trip plus [`MARGIN`], within [`FLOOR`] and
//! [`CEILING`]. Once set, a buffer no longer grows by itself, so a
//! connection is left to the kernel until its first sizing comes out under
//! the ceiling (a fast link keeps autotuning), and one whose shortest round
//! trip is [`SHORT_RTT`] or more is never touched (a long link needs
//! megabytes); nor is one within a host, nor any with `--strict`, whose
//! peers stay as SPEC.md's would be.
//!
//! Owns one `getsockopt` (`unsafe`: the crate's third, besides
//! [`crate::integrity::sha1pair`] and [`crate::runtime::sched`]). Never
//! blocks and never touches protocol state.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The least buffer set (the kernel doubles what it is given).
pub(crate) const FLOOR: usize = 24 << 10;
/// The most: under `net.core.wmem_max`'s usual 208 KiB, which would cap it.
pub(crate) const CEILING: usize = 192 << 10;
/// Queueing allowed beyond the round trip.
pub(crate) const MARGIN: Duration = Duration::from_millis(5);
/// Only links whose shortest round trip is below this are sized.
pub(crate) const SHORT_RTT: Duration = Duration::from_millis(1);
/// How often a connection's buffer is sized at most.
pub(crate) const EVERY: Duration = Duration::from_millis(100);

/// The buffer for a connection delivering `rate` bytes a second whose
/// shortest round trip is `min_rtt`; None where it should be left alone.
pub(crate) fn fitted(rate: u64, min_rtt: Duration) -> Option<usize> {
    if rate == 0 || min_rtt.is_zero() || min_rtt >= SHORT_RTT {
        return None;
    }
    let bytes = 2.0 * rate as f64 * (min_rtt + MARGIN).as_secs_f64();
    Some((bytes as usize).clamp(FLOOR, CEILING))
}

/// What to set a buffer to, given whether it was set before (and so no
/// longer autotuned) and the size that fits: a first size only under the
/// ceiling.
fn to_set(set_before: bool, fits: Option<usize>) -> Option<usize> {
    fits.filter(|&size| set_before || size < CEILING)
}

/// One connection's sizing: when it was last looked at, and whether its
/// buffer was set.
#[derive(Debug, Default)]
pub(crate) struct SendBuffer {
    last: Cell<Option<Instant>>,
    set: Cell<bool>,
}

impl SendBuffer {
    /// Sizes `stream`'s buffer if [`EVERY`] has passed since the last time.
    pub(crate) fn after_piece(&self, stream: &TcpStream, now: Instant) {
        if self.last.get().is_some_and(|t| now - t < EVERY) {
            return;
        }
        self.last.set(Some(now));
        let Some((rate, min_rtt)) = delivery(stream) else {
            return;
        };
        if let Some(size) = to_set(self.set.get(), fitted(rate, min_rtt)) {
            use nix::sys::socket::{setsockopt, sockopt};
            match setsockopt(stream, sockopt::SndBuf, &size) {
                Ok(()) => self.set.set(true),
                Err(e) => log::debug!("cannot size a send buffer: {e}"),
            }
        }
    }
}

/// The connection's delivery rate (bytes a second) and shortest round trip,
/// as TCP measures them.
fn delivery(stream: &TcpStream) -> Option<(u64, Duration)> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: `tcp_info` is plain data, for which all zeroes is valid.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: the descriptor is the stream's, open while it is borrowed;
        // `info` and `len` are valid for writes of `len` bytes, and the
        // kernel writes at most that many.
        let r = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            )
        };
        // Kernels older than 4.9 fill fewer fields: no round trip, no rate.
        let filled = std::mem::offset_of!(libc::tcp_info, tcpi_delivery_rate)
            + std::mem::size_of_val(&info.tcpi_delivery_rate);
        if r != 0 || (len as usize) < filled {
            return None;
        }
        Some((
            info.tcpi_delivery_rate,
            Duration::from_micros(u64::from(info.tcpi_min_rtt)),
        ))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = stream;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn short_links_get_what_their_rate_needs_and_long_ones_are_left_alone() {
        let us = Duration::from_micros;
        // A share of a 4 MiB/s link: the floor.
        assert_eq!(fitted(800_000, us(300)), Some(FLOOR));
        // 10 MB/s: 2 x 10 MB/s x 5.5 ms.
        assert_eq!(fitted(10_000_000, us(500)), Some(110_000));
        // Faster than the ceiling allows.
        assert_eq!(fitted(1_000_000_000, us(100)), Some(CEILING));
        // A first size only under the ceiling; once set, any.
        assert_eq!(to_set(false, Some(FLOOR)), Some(FLOOR));
        assert_eq!(to_set(false, Some(CEILING)), None);
        assert_eq!(to_set(true, Some(CEILING)), Some(CEILING));
        assert_eq!(to_set(true, None), None);
        // A long link, or nothing measured yet.
        assert_eq!(fitted(10_000_000, Duration::from_millis(20)), None);
        assert_eq!(fitted(10_000_000, SHORT_RTT), None);
        assert_eq!(fitted(0, us(300)), None);
        assert_eq!(fitted(800_000, Duration::ZERO), None);
    }

    #[test]
    fn a_fast_connection_is_left_to_the_kernel_and_a_sized_one_is_sized_once_an_interval() {
        use nix::sys::socket::{getsockopt, sockopt};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut sender = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut receiver, _) = listener.accept().unwrap();
        let drain = std::thread::spawn(move || {
            let mut sink = Vec::new();
            receiver.read_to_end(&mut sink).unwrap()
        });
        sender.write_all(&vec![7u8; 4 << 20]).unwrap();
        let (rate, min_rtt) = delivery(&sender).expect("TCP_INFO on Linux");
        assert!(rate > 0 && !min_rtt.is_zero(), "{rate} B/s, {min_rtt:?}");
        let fits = fitted(rate, min_rtt);
        // Loopback delivers at gigabytes a second: past the ceiling, so a
        // buffer never set is left to the kernel.
        assert!(fits.is_none_or(|size| size == CEILING), "{fits:?}");
        let before = getsockopt(&sender, sockopt::SndBuf).unwrap();
        let buffer = SendBuffer::default();
        let t0 = Instant::now();
        buffer.after_piece(&sender, t0);
        assert_eq!(getsockopt(&sender, sockopt::SndBuf).unwrap(), before);
        assert!(!buffer.set.get());
        // One set before is sized, to the ceiling here (the kernel keeps
        // twice what it is given), but not again within the interval.
        nix::sys::socket::setsockopt(&sender, sockopt::SndBuf, &100_000).unwrap();
        buffer.set.set(true);
        buffer.after_piece(&sender, t0 + EVERY / 2);
        assert_eq!(getsockopt(&sender, sockopt::SndBuf).unwrap(), 200_000);
        buffer.after_piece(&sender, t0 + EVERY);
        if fits.is_some() {
            assert_eq!(getsockopt(&sender, sockopt::SndBuf).unwrap(), 2 * CEILING);
        }
        drop(sender);
        assert_eq!(drain.join().unwrap(), 4 << 20);
    }
}
