//! Hostile peers (issue 17): connections that handshake under an ID listed in
//! PeerInfo.cfg and then lie, squat, flood or send malformed frames, against
//! real `peerProcess` binaries. Each attacker is written here with std
//! sockets and the crate's own wire encoders; every loop that sends traffic is
//! bounded in count and in time, and talks only to the swarm's 127.x.y.z.
//!
//! What must hold (SPEC.md sections 2 to 4): a `piece` nobody asked for on
//! that connection is never stored, counted, logged or announced; a newer
//! connection for a listed ID wins over an older one, so a silent stranger
//! cannot lock the real peer out; floods cost bounded threads and memory; a
//! malformed frame ends its connection and nothing else. In every case the
//! honest swarm finishes with files identical to the seed's.

mod common;
use common::{wait_until, Spec, Swarm};
use p2pft::protocol::bitfield::Bitfield;
use p2pft::protocol::wire::{encode_handshake, encode_to_vec, piece_header, Message};
use regex::Regex;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Generous: a passing swarm here ends in a second or two.
const LIMIT: Duration = Duration::from_secs(45);

// ---------------------------------------------------------------------------
// Attacker helpers
// ---------------------------------------------------------------------------

/// The listening address of `id` as a socket address (127.x.y.z only).
fn sock_addr(swarm: &Swarm, id: u32) -> SocketAddr {
    let (host, port) = swarm.addr(id);
    let addr: SocketAddr = format!("{host}:{port}").parse().unwrap();
    assert!(addr.ip().is_loopback(), "attackers talk to loopback only");
    addr
}

/// Connects to `addr`, retrying for up to 20 s while nobody listens yet.
fn connect(addr: SocketAddr) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return s;
            }
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("{addr} never listened: {e}"),
        }
    }
}

/// Handshakes with `target` at `addr` as `as_id` (a plain SPEC.md handshake,
/// sent first, at once). `None` when the target hangs up instead of
/// answering with its own handshake.
fn try_handshake(addr: SocketAddr, target: u32, as_id: u32) -> Option<TcpStream> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    let _ = s.set_nodelay(true);
    s.write_all(&encode_handshake(as_id)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut theirs = [0u8; 32];
    s.read_exact(&mut theirs).ok()?;
    assert_eq!(theirs, encode_handshake(target), "{target}'s handshake");
    Some(s)
}

fn handshake(swarm: &Swarm, target: u32, as_id: u32) -> TcpStream {
    let addr = sock_addr(swarm, target);
    drop(connect(addr)); // waits until it listens
    try_handshake(addr, target, as_id)
        .unwrap_or_else(|| panic!("{target} did not answer a handshake as {as_id}"))
}

/// Reads and discards what arrives on `s` for `d`; false if it was closed.
fn drain_for(s: &mut TcpStream, d: Duration) -> bool {
    let deadline = Instant::now() + d;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return true
            }
            Err(_) => return false,
        }
    }
}

/// True when the other side closes `s` within `limit` (what it sends
/// meanwhile is read and dropped).
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    !drain_for(s, limit)
}

/// Writes `buf` to `s` unless `deadline` passes first (a target that stops
/// reading must not hang the attacker). Returns the bytes written, or `None`
/// when the connection failed.
fn send_until(s: &mut TcpStream, buf: &[u8], deadline: Instant) -> Option<usize> {
    s.set_write_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut done = 0;
    while done < buf.len() && Instant::now() < deadline {
        match s.write(&buf[done..]) {
            Ok(0) => return None,
            Ok(n) => done += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(done)
}

/// Whether the other side has closed `s` (reads what is waiting, without
/// blocking).
fn is_closed_now(s: &mut TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break true,
        }
    };
    s.set_nonblocking(false).unwrap();
    closed
}

/// A raw `piece` frame: its header, then `data`.
fn piece_frame(index: u32, data: &[u8]) -> Vec<u8> {
    let mut out = piece_header(index, data.len() as u32).to_vec();
    out.extend_from_slice(data);
    out
}

fn piece_len(swarm: &Swarm, index: u32) -> usize {
    let start = index as usize * swarm.spec.piece_size as usize;
    (swarm.content.len() - start).min(swarm.spec.piece_size as usize)
}

fn real_piece(swarm: &Swarm, index: u32) -> Vec<u8> {
    let start = index as usize * swarm.spec.piece_size as usize;
    swarm.content[start..start + piece_len(swarm, index)].to_vec()
}

fn alive(swarm: &mut Swarm, id: u32) -> bool {
    swarm
        .children
        .get_mut(&id)
        .is_some_and(|c| c.try_wait().unwrap().is_none())
}

fn log_text(swarm: &Swarm, id: u32) -> String {
    std::fs::read_to_string(swarm.log_of(id)).unwrap_or_default()
}

/// The 'downloaded' lines of `text` that name `from` as the sender.
fn downloads_from(text: &str, from: u32) -> Vec<String> {
    let tail = format!(" from {from}. Now the number of pieces");
    text.lines()
        .filter(|l| l.contains("has downloaded the piece") && l.contains(&tail))
        .map(str::to_owned)
        .collect()
}

/// Whether `stderr` has a diagnostic naming a piece from `from` that was
/// never requested. The wording is the engine's to choose; this accepts the
/// usual ones ("unrequested", "not requested", "never requested", ...).
fn names_unrequested_piece(stderr: &str, from: u32) -> bool {
    let re = Regex::new(
        r"(?i)(unrequested|un-requested|not requested|never requested|unasked|not asked|without a request|did not request|no request)",
    )
    .unwrap();
    stderr
        .lines()
        .any(|l| l.contains(&from.to_string()) && l.contains("piece") && re.is_match(l))
}

/// Waits for every started peer without panicking: `Err` names what went
/// wrong (a peer still running after `limit`, a non-zero exit, a file that
/// differs from the seed's).
fn finish(swarm: &mut Swarm, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let mut problems = Vec::new();
    let ids: Vec<u32> = swarm.children.keys().copied().collect();
    for id in ids {
        loop {
            let child = swarm.children.get_mut(&id).unwrap();
            if let Some(status) = child.try_wait().unwrap() {
                if !status.success() {
                    problems.push(format!("peer {id} exited with {status}"));
                }
                swarm.children.remove(&id);
                break;
            }
            if Instant::now() > deadline {
                problems.push(format!("peer {id} still running after {limit:?}"));
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
    swarm.kill_all();
    for &id in &swarm.ids {
        match std::fs::read(swarm.file_of(id)) {
            Ok(got) if got == swarm.content => {}
            Ok(got) => {
                let bad = got
                    .chunks(swarm.spec.piece_size as usize)
                    .zip(swarm.content.chunks(swarm.spec.piece_size as usize))
                    .position(|(a, b)| a != b);
                problems.push(format!(
                    "peer {id}'s file differs from the seed's (first bad piece {bad:?})"
                ));
            }
            Err(e) => problems.push(format!("peer {id}'s file: {e}")),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn fail_on(problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

// ---------------------------------------------------------------------------
// a. Poisoning
// ---------------------------------------------------------------------------

/// Before anyone else is up, an attacker handshakes with leecher 1003 as
/// 1004 (listed below it, not started yet), waits for what 1003 sends, and
/// sends `piece` frames nobody asked for: piece 0 all zeros, two more of
/// junk, the short last piece, and one with the right bytes (unrequested is
/// the fault, not the content). None may be stored; then the real peers
/// come and the swarm must end with the seed's file everywhere.
fn poisoning(meta: bool) {
    let spec = Spec::new(4, 2 * 1024 * 1024 + 1000, 16 * 1024);
    let mut swarm = if meta {
        Swarm::new(spec)
    } else {
        Swarm::without_meta(spec)
    };
    swarm.reconnects_allowed = true;
    let n = swarm.spec.num_pieces();
    let mut problems = Vec::new();

    swarm.start(1003); // dials 1001 and 1002, which are not up yet
    let mut s = handshake(&swarm, 1003, 1004);
    assert!(
        drain_for(&mut s, Duration::from_millis(300)),
        "1003 hung up"
    );
    let mut frames = Vec::new();
    frames.extend(piece_frame(0, &vec![0u8; piece_len(&swarm, 0)]));
    frames.extend(piece_frame(1, &vec![0xA5; piece_len(&swarm, 1)]));
    frames.extend(piece_frame(7, &vec![0xFF; piece_len(&swarm, 7)]));
    frames.extend(piece_frame(n - 1, &vec![0u8; piece_len(&swarm, n - 1)]));
    frames.extend(piece_frame(2, &real_piece(&swarm, 2)));
    // The target may hang up part way (that is fine): keep what was sent.
    let _ = send_until(&mut s, &frames, Instant::now() + Duration::from_secs(3));
    let hung_up = closed_within(&mut s, Duration::from_secs(2));
    eprintln!("poisoning (meta {meta}): 1003 hung up on the liar: {hung_up}");
    drop(s);
    thread::sleep(Duration::from_millis(300));
    if !alive(&mut swarm, 1003) {
        problems.push("1003 died after the unrequested pieces".into());
    }
    // Nobody else is up: any piece in the log now came from the liar.
    let before = log_text(&swarm, 1003);
    let early = downloads_from(&before, 1004);
    if !early.is_empty() {
        problems.push(format!(
            "1003 logged pieces from the liar posing as 1004 before the real 1004 started: {early:?}"
        ));
    }
    let stderr = swarm.stderr_text(1003);
    if !names_unrequested_piece(&stderr, 1004) {
        problems.push(format!(
            "1003's stderr does not name the unrequested pieces from 1004:\n{stderr}"
        ));
    }

    for id in [1001, 1002, 1004] {
        swarm.start(id);
        thread::sleep(Duration::from_millis(20));
    }
    if let Err(e) = finish(&mut swarm, LIMIT) {
        problems.push(e);
    }
    // The real 1004's connection is the last 'connected from' line: nothing
    // may be logged as downloaded from 1004 before it.
    let log = log_text(&swarm, 1003);
    let lines: Vec<&str> = log.lines().collect();
    let real = lines
        .iter()
        .rposition(|l| l.ends_with("Peer 1003 is connected from Peer 1004."));
    for (i, line) in lines.iter().enumerate() {
        if real.is_none_or(|r| i < r) && downloads_from(line, 1004).len() == 1 {
            problems.push(format!(
                "downloaded from 1004 before the real 1004 connected: {line}"
            ));
        }
    }
    fail_on(&problems);
    swarm.check_logs();
}

#[test]
fn unrequested_pieces_are_never_stored_with_metadata() {
    poisoning(true);
}

#[test]
fn unrequested_pieces_are_never_stored_without_metadata() {
    poisoning(false);
}

// ---------------------------------------------------------------------------
// b. Lock-out
// ---------------------------------------------------------------------------

fn count_lines(text: &str, line_end: &str) -> usize {
    text.lines().filter(|l| l.ends_with(line_end)).count()
}

/// 1001 to 1003 run; a stranger handshakes as 1004 with each of them (all
/// accept 1004) and then says and reads nothing. The real 1004 starts and
/// must get in at once: the newer connection wins and the squatter's is
/// closed.
#[test]
fn a_silent_squatter_does_not_lock_the_real_peer_out() {
    let mut swarm = Swarm::without_meta(Spec::new(4, 2 * 1024 * 1024, 16 * 1024));
    swarm.reconnects_allowed = true;
    let mut problems = Vec::new();
    for id in [1001, 1002, 1003] {
        swarm.start(id);
    }
    for (a, b) in [(1002, 1001), (1003, 1001), (1003, 1002)] {
        let line = format!("Peer {a} makes a connection to Peer {b}.");
        wait_until(LIMIT, &line, || log_text(&swarm, a).contains(&line));
    }
    let targets = [1001, 1002, 1003];
    let mut squats: Vec<TcpStream> = targets
        .iter()
        .map(|&t| handshake(&swarm, t, 1004))
        .collect();
    thread::sleep(Duration::from_millis(300));

    let started = Instant::now();
    swarm.start(1004);
    let got_in = |swarm: &Swarm| {
        targets.iter().all(|&t| {
            count_lines(
                &log_text(swarm, t),
                &format!("Peer {t} is connected from Peer 1004."),
            ) >= 2
                && log_text(swarm, 1004)
                    .contains(&format!("Peer 1004 makes a connection to Peer {t}."))
        })
    };
    let deadline = started + Duration::from_secs(10);
    while !got_in(&swarm) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    let took = started.elapsed();
    if got_in(&swarm) {
        eprintln!("lock-out: the real 1004 was in with 1001..1003 {took:?} after its start");
        // "About a second": generous for a loaded 2-core machine.
        if took > Duration::from_secs(3) {
            problems.push(format!("the real 1004 got in only after {took:?}"));
        }
    } else {
        problems.push(format!(
            "the real 1004 was locked out: not connected to all of 1001..1003 within {:?}",
            deadline - started
        ));
    }
    for (s, t) in squats.iter_mut().zip(targets) {
        if !closed_within(s, Duration::from_secs(5)) {
            problems.push(format!(
                "{t} kept the squatter's older connection as 1004 open"
            ));
        }
    }
    drop(squats);
    if let Err(e) = finish(&mut swarm, LIMIT) {
        problems.push(e);
    }
    fail_on(&problems);
    swarm.check_logs();
}

/// While the real 1004 runs, a stranger handshakes as 1004 with 1001 to
/// 1003 again and again (20 rounds at most, 4 s at most), keeping every
/// connection open until the loop ends (with the newer connection winning,
/// each round takes the ID back from whoever held it, the real 1004
/// included). 1005 starts only after that, so nobody can have ended
/// meanwhile. The swarm must still finish: the real 1004 must not run out of
/// redials while the squatter holds its place.
#[test]
fn a_squatter_that_keeps_handshaking_does_not_stop_the_swarm() {
    let mut swarm = Swarm::new(Spec::new(5, 4 * 1024 * 1024, 16 * 1024));
    swarm.reconnects_allowed = true;
    for id in [1001, 1002, 1003] {
        swarm.start(id);
    }
    let targets: Vec<(u32, SocketAddr)> = [1001, 1002, 1003]
        .iter()
        .map(|&t| (t, sock_addr(&swarm, t)))
        .collect();
    let squatter = thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(4);
        let (mut rounds, mut answered) = (0, 0);
        let mut held: Vec<TcpStream> = Vec::new(); // 60 at most
        while rounds < 20 && Instant::now() < until {
            rounds += 1;
            for &(t, addr) in &targets {
                if let Some(s) = try_handshake(addr, t, 1004) {
                    answered += 1;
                    held.push(s);
                }
            }
            thread::sleep(Duration::from_millis(150));
        }
        drop(held);
        (rounds, answered)
    });
    thread::sleep(Duration::from_millis(500));
    swarm.start(1004);
    let (rounds, answered) = squatter.join().unwrap();
    eprintln!("squatter loop: {rounds} rounds, {answered} handshakes answered");
    swarm.start(1005);
    let result = finish(&mut swarm, LIMIT);
    if result.is_err() {
        eprintln!("1004's stderr:\n{}", swarm.stderr_text(1004));
    }
    fail_on(&result.err().into_iter().collect::<Vec<_>>());
    swarm.check_logs();
}

/// Once the leechers 1002 and 1003 have the file, a stranger handshakes with
/// the seed as 1004 (listed, not started yet), claims the whole file with a
/// full bitfield, and leaves. Nobody can check such a claim, but it must not
/// cost the real 1004 the file: started afterwards, it must get it and every
/// peer must end with exit 0.
#[test]
fn a_liar_claiming_the_whole_file_does_not_end_the_swarm() {
    let mut swarm = Swarm::new(Spec::new(4, 2 * 1024 * 1024, 16 * 1024));
    swarm.reconnects_allowed = true;
    let n = swarm.spec.num_pieces();
    for id in [1001, 1002, 1003] {
        swarm.start(id);
    }
    for id in [1002, 1003] {
        swarm.wait_for_pieces(id, n, LIMIT);
    }
    let mut s = handshake(&swarm, 1001, 1004);
    let _ = s.write_all(&encode_to_vec(&Message::Bitfield(Bitfield::full(n))));
    let seed_left = closed_within(&mut s, Duration::from_secs(1));
    eprintln!("liar: the seed hung up within 1 s of the claim: {seed_left}");
    drop(s);
    swarm.start(1004);
    let result = finish(&mut swarm, LIMIT);
    if result.is_err() {
        eprintln!("1004's stderr:\n{}", swarm.stderr_text(1004));
    }
    fail_on(&result.err().into_iter().collect::<Vec<_>>());
    // The seed may have ended on the liar's word before the real 1004 came:
    // 1004 then never connects to it, and its log says so.
    swarm.check_logs_except(&[1004]);
}

// ---------------------------------------------------------------------------
// c. Floods
// ---------------------------------------------------------------------------

/// `(VmRSS kB, VmHWM kB, Threads)` of a process, from /proc/<pid>/status.
fn proc_status(pid: u32) -> Option<(u64, u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?, field("Threads:")?))
}

/// How many file descriptors a process has open.
fn open_fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// Samples a process every 5 ms until stopped: its peak VmHWM and threads.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<(u64, u64)>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let (mut hwm, mut threads) = (0, 0);
            let until = Instant::now() + Duration::from_secs(120);
            while !flag.load(Ordering::Relaxed) && Instant::now() < until {
                if let Some((_, h, t)) = proc_status(pid) {
                    hwm = hwm.max(h);
                    threads = threads.max(t);
                }
                thread::sleep(Duration::from_millis(5));
            }
            (hwm, threads)
        });
        Sampler { stop, handle }
    }

    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

/// What an attack thread gets: where the target is and what the file is like.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    id: u32,
    as_id: u32,
    num_pieces: u32,
}

/// How long each flood lasts.
const FLOOD: Duration = Duration::from_secs(3);

/// Seed 1001 and leechers 1002 and 1003 share a 4 MiB file; the attack plays
/// 1004 (or no one) against the seed for `FLOOD` while the leechers download.
/// Afterwards the real 1004 starts and the swarm must finish. Prints the
/// seed's figures and asserts its peak threads and VmHWM stay under the caps.
fn flood_case(
    name: &str,
    max_threads: u64,
    max_hwm_kb: u64,
    attack: impl FnOnce(Target, Instant) -> (String, Vec<String>) + Send + 'static,
) {
    let mut swarm = Swarm::new(Spec::new(4, 4 * 1024 * 1024, 16 * 1024));
    swarm.reconnects_allowed = true;
    let n = swarm.spec.num_pieces();
    let mut problems = Vec::new();
    swarm.start(1001);
    let pid = swarm.children[&1001].id();
    // Up and listening: a probe's connection (it says nothing and leaves).
    drop(connect(sock_addr(&swarm, 1001)));
    thread::sleep(Duration::from_millis(300));
    let (base_rss, base_hwm, base_threads) = proc_status(pid).expect("the seed runs");
    let base_fds = open_fds(pid).expect("the seed runs");

    let sampler = Sampler::start(pid);
    let target = Target {
        addr: sock_addr(&swarm, 1001),
        id: 1001,
        as_id: 1004,
        num_pieces: n,
    };
    let attack_started = Instant::now();
    let attacker = thread::spawn(move || attack(target, attack_started + FLOOD));
    thread::sleep(Duration::from_millis(200));
    swarm.start(1002);
    swarm.start(1003);
    for id in [1002, 1003] {
        swarm.wait_for_pieces(id, n, LIMIT);
    }
    let leechers_done = attack_started.elapsed();
    let (summary, attack_problems) = attacker.join().unwrap();
    problems.extend(attack_problems);
    let attack_took = attack_started.elapsed();
    let (peak_hwm, peak_threads) = sampler.finish();
    // Afterwards nothing of the attack may stay behind: the seed settles
    // back to its threads and descriptors with the two leechers (a reader
    // and a writer thread and three descriptors each), give or take a few,
    // within 15 s (a handshake times out after 10 s).
    let (settle_threads, settle_fds) = (base_threads + 4 + 6, base_fds + 6 + 10);
    let settle_started = Instant::now();
    let mut settled = (0, 0);
    while settle_started.elapsed() < Duration::from_secs(15) {
        settled = (
            proc_status(pid).map_or(0, |s| s.2),
            open_fds(pid).unwrap_or(0),
        );
        if settled.0 <= settle_threads && settled.1 <= settle_fds {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let alive_after = alive(&mut swarm, 1001);
    eprintln!(
        "flood `{name}`: {summary}; seed before: VmRSS {base_rss} kB, VmHWM {base_hwm} kB, \
         {base_threads} threads, {base_fds} fds; during: peak VmHWM {peak_hwm} kB, peak \
         {peak_threads} threads (caps {max_hwm_kb} kB, {max_threads}); after: {} threads, {} fds \
         {:.1?} after the attack (caps {settle_threads}, {settle_fds}); leechers complete after \
         {leechers_done:?}, attack over after {attack_took:?}",
        settled.0,
        settled.1,
        settle_started.elapsed()
    );
    if alive_after && (settled.0 > settle_threads || settled.1 > settle_fds) {
        problems.push(format!(
            "15 s after `{name}` the seed still had {} threads and {} descriptors (caps {settle_threads}, {settle_fds})",
            settled.0, settled.1
        ));
    }
    if !alive_after {
        problems.push(format!(
            "the seed died during the flood; its stderr:\n{}",
            swarm.stderr_text(1001)
        ));
    }
    if peak_threads > max_threads {
        problems.push(format!(
            "the seed ran {peak_threads} threads during `{name}` (cap {max_threads})"
        ));
    }
    if peak_hwm > max_hwm_kb {
        problems.push(format!(
            "the seed's VmHWM reached {peak_hwm} kB during `{name}` (cap {max_hwm_kb} kB)"
        ));
    }
    swarm.start(1004);
    if let Err(e) = finish(&mut swarm, LIMIT) {
        problems.push(e);
    }
    fail_on(&problems);
    swarm.check_logs();
}

/// Peak threads of the seed under any flood. Measured on the 2-core
/// development machine: 7 before an attack, 11 to 13 under the frame flood
/// and the non-reader; the engine of issue 17's start ran a thread per
/// connection still in its handshake (10 s each): 176 under the connect
/// loop, 509 with 500 half-open connections. Those two floods have caps of
/// their own (thread exits lag behind a cap on busy cores).
const THREAD_CAP: u64 = 150;
/// Peak VmHWM cap for the seed of a 4 MiB swarm under any flood. Measured:
/// 3.7 MiB before an attack, 20 MiB at most (the frame flood).
const HWM_CAP_KB: u64 = 64 * 1024;

/// About a million `interested`/`have`/`request` frames a second for 3 s
/// from a connection handshaken as 1004 that reads (and drops) everything
/// the seed sends. A connection the seed drops is made again (at most 100
/// times).
#[test]
fn a_frame_flood_costs_bounded_memory_and_threads() {
    flood_case("1M frames/s", THREAD_CAP, HWM_CAP_KB, |t, deadline| {
        // 10 ms worth at a million frames a second: `interested` and `have`
        // in turns, and one `request` in 200 (each asks for a whole piece:
        // more would only show that a neighbour asking more than it reads
        // is dropped, which it is). The haves name the first half of the
        // pieces only: a liar claiming the whole file is another matter
        // (`a_liar_claiming_the_whole_file_...` below).
        let mut chunk = Vec::new();
        for i in 0..10_000u32 {
            let message = match i % 200 {
                0 => Message::Request(i % t.num_pieces),
                j if j % 2 == 0 => Message::Interested,
                _ => Message::Have(i % (t.num_pieces / 2)),
            };
            chunk.extend(encode_to_vec(&message));
        }
        let frames_per_chunk = 10_000u64;
        let (mut frames, mut connections) = (0u64, 0);
        'connections: while Instant::now() < deadline && connections < 100 && frames < 5_000_000 {
            connections += 1;
            let Some(mut s) = try_handshake(t.addr, t.id, t.as_id) else {
                thread::sleep(Duration::from_millis(20));
                continue;
            };
            let mut reader = s.try_clone().unwrap();
            let drain = thread::spawn(move || {
                let left = deadline.saturating_duration_since(Instant::now());
                drain_for(&mut reader, left + Duration::from_millis(500))
            });
            let mut next = Instant::now();
            while Instant::now() < deadline && frames < 5_000_000 {
                match send_until(&mut s, &chunk, deadline) {
                    Some(n) if n == chunk.len() => frames += frames_per_chunk,
                    Some(n) => {
                        frames += frames_per_chunk * n as u64 / chunk.len() as u64;
                        break;
                    }
                    None => {
                        let _ = s.shutdown(std::net::Shutdown::Both);
                        let _ = drain.join();
                        continue 'connections;
                    }
                }
                next += Duration::from_millis(10);
                let now = Instant::now();
                if next > now {
                    thread::sleep(next - now);
                } else if now - next > Duration::from_millis(100) {
                    next = now; // no catching up in a burst
                }
            }
            let _ = s.shutdown(std::net::Shutdown::Both);
            let _ = drain.join();
        }
        (
            format!(
                "{frames} frames ({:.0}/s) over {connections} connection(s)",
                frames as f64 / FLOOD.as_secs_f64()
            ),
            vec![],
        )
    });
}

/// A connection as 1004 that says it is interested, and once unchoked (or
/// after 2 s) requests every piece over and over without reading a byte.
#[test]
fn a_neighbour_that_never_reads_costs_bounded_memory_and_threads() {
    flood_case("never reads", THREAD_CAP, HWM_CAP_KB, |t, deadline| {
        let mut s = try_handshake(t.addr, t.id, t.as_id).expect("the seed answers");
        s.write_all(&encode_to_vec(&Message::Interested)).unwrap();
        // Read up to the unchoke (the bitfield comes first), then never again.
        let unchoke = encode_to_vec(&Message::Unchoke);
        let mut seen = Vec::new();
        let wait = Instant::now() + Duration::from_secs(2);
        let mut byte = [0u8; 1];
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        while Instant::now() < wait && !seen.ends_with(&unchoke) {
            match s.read(&mut byte) {
                Ok(1) => seen.push(byte[0]),
                Ok(_) => break,
                Err(_) => {}
            }
        }
        let unchoked = seen.ends_with(&unchoke);
        let requests: Vec<u8> = (0..t.num_pieces)
            .flat_map(|i| encode_to_vec(&Message::Request(i)))
            .collect();
        let mut sent = 0u64;
        while Instant::now() < deadline && sent < 20_000 {
            match send_until(&mut s, &requests, deadline) {
                Some(n) => sent += (n / 9) as u64,
                None => break,
            }
        }
        let dropped = closed_within(&mut s, Duration::from_secs(2));
        (format!(
            "unchoked {unchoked}, {sent} requests sent without reading, dropped by the seed: {dropped}"
        ), vec![])
    });
}

/// Connects and disconnects in a tight loop for 3 s (5,000 connections at
/// most): a third hang up at once, a third after a whole handshake as 1004,
/// a third after half a handshake; every other one with a reset (linger 0).
#[test]
fn connect_and_disconnect_in_a_tight_loop() {
    // The peak here depends on how fast threads end, not on a cap: each
    // connection ends at once. 400 holds with a short-lived thread per
    // connection (56 to 176 measured); what must not happen is anything
    // staying behind (checked after the attack).
    flood_case("connect/disconnect", 400, HWM_CAP_KB, |t, deadline| {
        let mut count = 0u32;
        let mut failed = 0u32;
        while Instant::now() < deadline && count < 5000 {
            count += 1;
            let Ok(mut s) = TcpStream::connect_timeout(&t.addr, Duration::from_secs(1)) else {
                failed += 1;
                continue;
            };
            let hs = encode_handshake(t.as_id);
            match count % 3 {
                0 => {}
                1 => {
                    let _ = s.write_all(&hs);
                }
                _ => {
                    let _ = s.write_all(&hs[..16]);
                }
            }
            if count % 2 == 0 {
                let _ = nix::sys::socket::setsockopt(
                    &s,
                    nix::sys::socket::sockopt::Linger,
                    &nix::libc::linger {
                        l_onoff: 1,
                        l_linger: 0,
                    },
                );
            }
            drop(s);
        }
        (
            format!("{count} connections ({failed} failed to connect)"),
            vec![],
        )
    });
}

/// 500 connections that never finish a handshake (half say nothing, half
/// send 20 of its 32 bytes), held for 3 s.
#[test]
fn five_hundred_half_open_connections() {
    // A thread per connection still in its handshake is fine while their
    // number is capped, but those the cap closes end a little later: 248
    // at the peak with a cap of 64 on 2 busy cores; without a cap, 509.
    flood_case("500 half-open", 400, HWM_CAP_KB, |t, deadline| {
        let mut held = Vec::new();
        let mut failed = 0;
        for i in 0..500 {
            if Instant::now() >= deadline {
                break;
            }
            match TcpStream::connect_timeout(&t.addr, Duration::from_secs(1)) {
                Ok(mut s) => {
                    if i % 2 == 1 {
                        let _ = s.write_all(&encode_handshake(t.as_id)[..20]);
                    }
                    held.push(s);
                }
                Err(_) => failed += 1,
            }
        }
        let opened = held.len();
        let left = deadline.saturating_duration_since(Instant::now());
        thread::sleep(left);
        // How many the seed closed meanwhile (a cap drops the oldest).
        let mut closed = 0;
        for s in held.iter_mut() {
            closed += usize::from(is_closed_now(s));
        }
        // A cap on half-open connections closes all but that many; the seed
        // may keep up to 128 of ours open (its cap is 64 now), not all 500.
        let mut problems = Vec::new();
        if opened - closed > 128 {
            problems.push(format!(
                "the seed kept {} of our {opened} half-open connections open for 3 s (at most 128)",
                opened - closed
            ));
        }
        (
            format!("{opened} opened ({failed} failed), {closed} closed by the seed within 3 s"),
            problems,
        )
    });
}

// ---------------------------------------------------------------------------
// d. Malformed frames
// ---------------------------------------------------------------------------

fn frame(len: u32, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = len.to_be_bytes().to_vec();
    out.push(kind);
    out.extend_from_slice(payload);
    out
}

/// Every kind of malformed frame, each on a fresh connection handshaken
/// under a listed ID, must end that connection while the target runs on.
/// Unrequested pieces and a late bitfield are not fatal (docs/PROTOCOL.md,
/// "Hostile input"): four unrequested pieces end the connection, none is
/// stored; a late bitfield leaves the peer running.
/// `tests/robustness.rs` already covers type 9, a 2 GiB piece and a have of
/// index 99,999 on the seed; here come the rest, on a leecher too.
fn malformed(meta: bool) {
    // 65 pieces, the last one 100 bytes; a 9-byte bitfield.
    let ps = 16 * 1024u32;
    let spec = Spec::new(4, 64 * u64::from(ps) + 100, ps);
    let mut swarm = if meta {
        Swarm::new(spec)
    } else {
        Swarm::without_meta(spec)
    };
    swarm.reconnects_allowed = true;
    let n = swarm.spec.num_pieces();
    let bf = encode_to_vec(&Message::Bitfield(Bitfield::full(n)));
    let bf_payload = &bf[5..];
    let max = 1 + 4 + ps; // one piece plus its header

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unknown type 8", frame(5, 8, &[0; 4])),
        ("unknown type 255", frame(1, 255, &[])),
        ("choke with a payload", frame(2, 0, &[0])),
        ("unchoke with a payload", frame(5, 1, &[0; 4])),
        ("interested with a payload", frame(2, 2, &[0])),
        ("not interested with a payload", frame(9, 3, &[0; 8])),
        ("have with a 3-byte index", frame(4, 4, &[0; 3])),
        ("have with 8 bytes", frame(9, 4, &[0; 8])),
        ("request with 2 bytes", frame(3, 6, &[0; 2])),
        ("request with 12 bytes", frame(13, 6, &[0; 12])),
        ("bitfield a byte short", frame(9, 5, &bf_payload[..8])),
        ("bitfield a byte long", {
            let mut p = bf_payload.to_vec();
            p.push(0);
            frame(11, 5, &p)
        }),
        ("empty bitfield frame", frame(1, 5, &[])),
        ("piece without an index", frame(1, 7, &[])),
        ("piece with a 3-byte index", frame(4, 7, &[0; 3])),
        ("piece with an index and no data", frame(5, 7, &[0; 4])),
        (
            "piece 0 a byte short",
            piece_frame(0, &vec![0; ps as usize - 1]),
        ),
        (
            "piece 0 a byte long",
            piece_frame(0, &vec![0; ps as usize + 1]),
        ),
        (
            "last piece at full size",
            piece_frame(n - 1, &vec![0; ps as usize]),
        ),
        ("have of index n", encode_to_vec(&Message::Have(n))),
        ("request of index n", encode_to_vec(&Message::Request(n))),
        (
            "request of index u32::MAX",
            encode_to_vec(&Message::Request(u32::MAX)),
        ),
        ("piece of index n", piece_frame(n, &[0; 100])),
        ("piece of index u32::MAX", piece_frame(u32::MAX, &[0; 100])),
        (
            "length one over a piece plus header",
            frame(max + 1, 7, &[0; 64]),
        ),
        ("have with length 1 GiB", frame(1 << 30, 4, &[0; 4])),
        ("length 0xFFFFFFFF (piece)", frame(u32::MAX, 7, &[0; 4])),
        ("length 0xFFFFFFFF (bitfield)", frame(u32::MAX, 5, &[0; 4])),
    ];
    // Unrequested pieces (counted and dropped unseen; the 4th on one
    // connection closes it, docs/PROTOCOL.md) and a late bitfield (merged):
    // neither may be stored or cost the peer anything. Four pieces in one go:
    // the connection must end; the bitfield: the peer must run on.
    let unrequested = |first: u32| -> Vec<u8> {
        let mut f = Vec::new();
        for (k, index) in (first..first + 4).enumerate() {
            if k % 2 == 0 {
                f.extend(piece_frame(index, &real_piece(&swarm, index)));
            } else {
                f.extend(piece_frame(index, &vec![0; ps as usize]));
            }
        }
        f
    };
    let late_bitfield = |first: Message| -> Vec<u8> {
        let mut f = encode_to_vec(&first);
        f.extend_from_slice(&bf);
        f
    };
    // The seed never requests anything: any piece is unrequested.
    let seed_lenient: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "4 pieces never requested (2 right, 2 zeros)",
            unrequested(3),
            true,
        ),
        (
            "a bitfield after other messages",
            late_bitfield(Message::NotInterested),
            false,
        ),
    ];
    // The same to a leecher that has nothing yet.
    let leecher_lenient: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "4 pieces never requested (2 right, 2 zeros)",
            unrequested(5),
            true,
        ),
        (
            "a bitfield after other messages",
            late_bitfield(Message::Interested),
            false,
        ),
    ];
    let cases: Vec<(&str, Vec<u8>, bool)> = cases
        .into_iter()
        .map(|(what, bytes)| (what, bytes, true))
        .chain(seed_lenient)
        .collect();

    let mut problems = Vec::new();
    let mut run = |swarm: &mut Swarm, target: u32, cases: &[(&str, Vec<u8>, bool)]| {
        for (i, (what, bytes, must_close)) in cases.iter().enumerate() {
            let as_id = 1003 + (i as u32 % 2);
            let mut s = handshake(swarm, target, as_id);
            drain_for(&mut s, Duration::from_millis(30));
            let _ = send_until(&mut s, bytes, Instant::now() + Duration::from_secs(2));
            let wait = Duration::from_secs(if *must_close { 4 } else { 1 });
            let closed = closed_within(&mut s, wait);
            if *must_close && !closed {
                problems.push(format!("{target} kept the connection after: {what}"));
            }
            if !*must_close {
                eprintln!("malformed: {target} after {what}: connection closed {closed}");
            }
            if !alive(swarm, target) {
                problems.push(format!("{target} died after: {what}"));
                return;
            }
        }
    };
    swarm.start(1002); // a leecher; it dials the seed, which is not up yet
    run(&mut swarm, 1002, &leecher_lenient);
    let early: Vec<String> = [1003, 1004]
        .iter()
        .flat_map(|&id| downloads_from(&log_text(&swarm, 1002), id))
        .collect();
    let mut problems2 = Vec::new();
    if !early.is_empty() {
        problems2.push(format!("1002 logged unrequested pieces: {early:?}"));
    }
    swarm.start(1001);
    run(&mut swarm, 1001, &cases);
    for id in [1003, 1004] {
        swarm.start(id);
    }
    if let Err(e) = finish(&mut swarm, LIMIT) {
        problems2.push(e);
    }
    problems.extend(problems2);
    fail_on(&problems);
    swarm.check_logs();
}

#[test]
fn malformed_frames_end_their_connection_with_metadata() {
    malformed(true);
}

#[test]
fn malformed_frames_end_their_connection_without_metadata() {
    malformed(false);
}
