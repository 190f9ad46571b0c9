//! Test harness: builds a swarm directory on a random loopback address with
//! free ports, runs real peer processes in it, and checks files and logs.
//! Every child is killed by PID when the harness is dropped.
#![allow(dead_code)]

use rand::Rng;
use regex::Regex;
use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const PEER_PROCESS: &str = env!("CARGO_BIN_EXE_peerProcess");
pub const P2PFT: &str = env!("CARGO_BIN_EXE_p2pft");

#[derive(Clone, Debug)]
pub struct Spec {
    pub k: usize,
    pub p: &'static str,
    pub m: &'static str,
    pub file_size: u64,
    pub piece_size: u32,
    /// One flag a peer, in start order: true for a seed.
    pub seeds: Vec<bool>,
}

impl Spec {
    pub fn new(peers: usize, file_size: u64, piece_size: u32) -> Spec {
        let mut seeds = vec![false; peers];
        seeds[0] = true;
        Spec {
            k: 2,
            p: "0.2",
            m: "0.5",
            file_size,
            piece_size,
            seeds,
        }
    }

    pub fn num_pieces(&self) -> u32 {
        self.file_size.div_ceil(u64::from(self.piece_size)) as u32
    }
}

pub struct Swarm {
    pub dir: tempfile::TempDir,
    pub spec: Spec,
    pub host: String,
    pub ids: Vec<u32>,
    pub ports: Vec<u16>,
    pub children: BTreeMap<u32, Child>,
    pub content: Vec<u8>,
    /// A test that connects raw sockets under real IDs expects repeated
    /// connection lines.
    pub reconnects_allowed: bool,
}

/// A random address in 127.0.0.0/8, so parallel tests rarely share a port space.
pub fn random_loopback() -> String {
    let mut rng = rand::rng();
    format!(
        "127.{}.{}.{}",
        rng.random_range(1..=254),
        rng.random_range(0..=255),
        rng.random_range(1..=254)
    )
}

/// `n` ports free on `host` right now.
pub fn free_ports(host: &str, n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind((host, 0)).expect("bind an ephemeral port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// `p2pft` with `args` in a network namespace of its own whose only link is
/// loopback (`unshare -n`, root as CI is): a peer listed on another host is
/// dialled there without a packet leaving this machine (no route: "Network
/// is unreachable"), and host names resolve from /etc/hosts alone.
pub fn p2pft_without_network(args: &[&str]) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args([
        "-n",
        "sh",
        "-c",
        "ip link set lo up && exec \"$0\" \"$@\"",
        P2PFT,
    ])
    .args(args);
    cmd
}

/// Starts `cmd` with `--dir dir` added, no stdin, and its output piped.
pub fn spawn_with_dir(mut cmd: Command, dir: &Path) -> Child {
    cmd.arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Polls `done` every 2 ms until it holds; fails the test, naming `what`,
/// once `limit` has passed.
pub fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "no {what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub fn content(len: u64, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut bytes = vec![0u8; len as usize];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut bytes);
    bytes
}

impl Swarm {
    /// A swarm directory with metadata beside the configs (pieces verified).
    pub fn new(spec: Spec) -> Swarm {
        let swarm = Swarm::without_meta(spec);
        swarm.write_meta();
        swarm
    }

    /// Writes `TheFile.dat.meta.json` for the swarm's content.
    pub fn write_meta(&self) {
        let pool = p2pft::integrity::meta::hashing_pool(2).unwrap();
        let seed = self.ids[self.spec.seeds.iter().position(|&s| s).unwrap()];
        let meta =
            p2pft::integrity::meta::Meta::create(&self.file_of(seed), self.spec.piece_size, &pool)
                .unwrap();
        meta.save(&self.meta_path()).unwrap();
    }

    pub fn meta_path(&self) -> PathBuf {
        self.path().join("TheFile.dat.meta.json")
    }

    /// Runs `peerProcess` with `args` in the swarm directory to its end.
    pub fn peer_process(&self, args: &[&str]) -> std::process::Output {
        Command::new(PEER_PROCESS)
            .args(args)
            .current_dir(self.path())
            .output()
            .unwrap()
    }

    /// Runs `peerProcess <id>` and asserts it exits with `code`, saying `needle` on stderr.
    pub fn expect_refusal(&self, id: u32, code: i32, needle: &str) {
        let o = self.peer_process(&[&id.to_string()]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{stderr}");
        assert!(stderr.contains(needle), "expected `{needle}` in:\n{stderr}");
    }

    /// Where a peer's stderr goes.
    pub fn stderr_of(&self, id: u32) -> PathBuf {
        self.path().join(format!("stderr_{id}.txt"))
    }

    pub fn stderr_text(&self, id: u32) -> String {
        std::fs::read_to_string(self.stderr_of(id)).unwrap_or_default()
    }

    /// A swarm directory without metadata: peers work as SPEC.md alone says.
    pub fn without_meta(spec: Spec) -> Swarm {
        let dir = tempfile::tempdir().unwrap();
        let host = random_loopback();
        let n = spec.seeds.len();
        let ids: Vec<u32> = (0..n as u32).map(|i| 1001 + i).collect();
        let ports = free_ports(&host, n);
        let content = content(spec.file_size, spec.file_size ^ 0x5eed);
        let swarm = Swarm {
            dir,
            spec,
            host,
            ids,
            ports,
            children: BTreeMap::new(),
            content,
            reconnects_allowed: false,
        };
        swarm.write_common(&format!(
            "NumberOfPreferredNeighbors {}\nUnchokingInterval {}\nOptimisticUnchokingInterval {}\nFileName TheFile.dat\nFileSize {}\nPieceSize {}\n",
            swarm.spec.k, swarm.spec.p, swarm.spec.m, swarm.spec.file_size, swarm.spec.piece_size
        ));
        let mut info = String::new();
        for i in 0..n {
            info += &format!(
                "{} {} {} {}\n",
                swarm.ids[i],
                swarm.host,
                swarm.ports[i],
                u8::from(swarm.spec.seeds[i])
            );
        }
        std::fs::write(swarm.path().join("PeerInfo.cfg"), info).unwrap();
        for i in 0..n {
            if swarm.spec.seeds[i] {
                let d = swarm.path().join(format!("peer_{}", swarm.ids[i]));
                std::fs::create_dir_all(&d).unwrap();
                std::fs::write(d.join("TheFile.dat"), &swarm.content).unwrap();
            }
        }
        swarm
    }

    pub fn addr(&self, id: u32) -> (String, u16) {
        let i = self.ids.iter().position(|&x| x == id).unwrap();
        (self.host.clone(), self.ports[i])
    }

    /// Connects to peer `id`, retrying while it is not listening yet.
    pub fn connect(&self, id: u32) -> std::net::TcpStream {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match std::net::TcpStream::connect(self.addr(id)) {
                Ok(s) => return s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("peer {id} never listened: {e}"),
            }
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write_common(&self, text: &str) {
        std::fs::write(self.path().join("Common.cfg"), text).unwrap();
    }

    pub fn file_of(&self, id: u32) -> PathBuf {
        self.path().join(format!("peer_{id}")).join("TheFile.dat")
    }

    pub fn log_of(&self, id: u32) -> PathBuf {
        self.path().join(format!("log_peer_{id}.log"))
    }

    /// Starts `peerProcess <id>` in the swarm directory, as a user would.
    pub fn start(&mut self, id: u32) {
        self.start_with(Command::new(PEER_PROCESS), id);
    }

    /// Starts the independent spec-only peer (`tests/spec_peer.py`) as `id`.
    pub fn start_spec_peer(&mut self, id: u32, env: &[(&str, &str)]) {
        let mut cmd = Command::new("python3");
        cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/spec_peer.py"));
        cmd.envs(env.iter().copied());
        self.start_with(cmd, id);
    }

    /// Starts `cmd` with `id` appended, as peer `id`, stderr to its file.
    pub fn start_with(&mut self, mut cmd: Command, id: u32) {
        let child = cmd
            .arg(id.to_string())
            .current_dir(self.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.stderr_of(id))
                    .unwrap(),
            )
            .spawn()
            .expect("start peerProcess");
        self.children.insert(id, child);
    }

    /// Starts every peer in file order, a little apart (start-up races welcome).
    pub fn start_all(&mut self) {
        for id in self.ids.clone() {
            self.start(id);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for all, then asserts exit 0, identical files and well-formed logs.
    pub fn finish_and_check(&mut self, limit: Duration) {
        self.finish_and_check_except(limit, &[]);
    }

    /// The same, not checking the logs of `skip`.
    pub fn finish_and_check_except(&mut self, limit: Duration, skip: &[u32]) {
        let statuses = self.wait_all(limit);
        for (id, status) in &statuses {
            assert!(status.success(), "peer {id} exited with {status}");
        }
        self.check_files();
        self.check_logs_except(skip);
    }

    /// Waits for every started peer to exit by itself; kills them all and
    /// panics after `limit`.
    pub fn wait_all(&mut self, limit: Duration) -> BTreeMap<u32, ExitStatus> {
        let deadline = Instant::now() + limit;
        let mut done = BTreeMap::new();
        while done.len() < self.children.len() {
            for (id, child) in self.children.iter_mut() {
                if !done.contains_key(id) {
                    if let Some(status) = child.try_wait().unwrap() {
                        done.insert(*id, status);
                    }
                }
            }
            if Instant::now() > deadline {
                let pending: Vec<u32> = self
                    .children
                    .keys()
                    .filter(|id| !done.contains_key(id))
                    .copied()
                    .collect();
                self.kill_all();
                panic!("peers {pending:?} still running after {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.children.clear();
        done
    }

    /// Waits for one peer to exit by itself.
    pub fn wait_one(&mut self, id: u32, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.children.get_mut(&id).unwrap().try_wait().unwrap() {
                self.children.remove(&id);
                return status;
            }
            if Instant::now() > deadline {
                self.kill_all();
                panic!("peer {id} still running after {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The piece count of the last 'downloaded' line in `id`'s log.
    pub fn pieces_logged(&self, id: u32) -> u32 {
        let text = std::fs::read_to_string(self.log_of(id)).unwrap_or_default();
        text.lines()
            .rev()
            .find_map(|l| l.split("Now the number of pieces it has is ").nth(1))
            .map_or(0, |n| n.trim_end_matches('.').parse().unwrap())
    }

    /// Polls until `id` has logged at least `count` pieces.
    pub fn wait_for_pieces(&self, id: u32, count: u32, limit: Duration) {
        wait_until(limit, &format!("peer {id} reaching {count} pieces"), || {
            self.pieces_logged(id) >= count
        });
    }

    pub fn kill_all(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
    }

    /// Runs the whole swarm and asserts the end state: every process exited 0,
    /// every file equals the seed's, every log is well-formed.
    pub fn run_and_check(&mut self, limit: Duration) {
        self.start_all();
        self.finish_and_check(limit);
    }

    pub fn check_files(&self) {
        for &id in &self.ids {
            let got = std::fs::read(self.file_of(id)).unwrap();
            assert_eq!(got.len(), self.content.len(), "size of peer {id}'s file");
            assert!(
                got == self.content,
                "peer {id}'s file differs from the seed's"
            );
        }
    }

    pub fn check_logs(&self) {
        self.check_logs_except(&[]);
    }

    /// Checks every log but those of `skip` (peers restarted or not ours).
    pub fn check_logs_except(&self, skip: &[u32]) {
        let n = self.ids.len();
        for (pos, &id) in self.ids.iter().enumerate() {
            if skip.contains(&id) {
                continue;
            }
            let text = std::fs::read_to_string(self.log_of(id)).unwrap();
            let log = LogCheck::parse(id, &text, self.spec.num_pieces(), self.reconnects_allowed);
            let above: BTreeSet<u32> = self.ids[..pos].iter().copied().collect();
            let below: BTreeSet<u32> = self.ids[pos + 1..].iter().copied().collect();
            assert_eq!(
                log.made_connection_to, above,
                "peer {id}: 'makes a connection' lines"
            );
            assert_eq!(
                log.connected_from, below,
                "peer {id}: 'is connected from' lines"
            );
            let neighbours: BTreeSet<u32> = self.ids.iter().copied().filter(|&x| x != id).collect();
            for set in &log.preferred {
                assert!(
                    set.len() <= self.spec.k.min(n - 1),
                    "peer {id}: preferred {set:?}"
                );
                assert!(
                    set.iter().all(|x| neighbours.contains(x)),
                    "peer {id}: {set:?}"
                );
            }
            assert!(log.optimistic.iter().all(|x| neighbours.contains(x)));
            assert!(
                log.remote_ids.iter().all(|x| neighbours.contains(x)),
                "peer {id}"
            );
            if self.spec.seeds[pos] {
                assert_eq!(log.downloaded.len(), 0, "seed {id} downloaded");
                assert_eq!(log.complete_lines, 0, "seed {id} logged completion");
            } else {
                let pieces: BTreeSet<u32> = log.downloaded.iter().copied().collect();
                assert_eq!(
                    log.downloaded.len() as u32,
                    self.spec.num_pieces(),
                    "peer {id}"
                );
                assert_eq!(
                    pieces.len() as u32,
                    self.spec.num_pieces(),
                    "peer {id}: a piece twice"
                );
                assert_eq!(log.complete_lines, 1, "peer {id}: complete-file lines");
            }
        }
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// What a log says, after every line was checked against the spec's sentences.
#[derive(Debug, Default)]
pub struct LogCheck {
    pub made_connection_to: BTreeSet<u32>,
    pub connected_from: BTreeSet<u32>,
    pub preferred: Vec<Vec<u32>>,
    pub optimistic: Vec<u32>,
    pub downloaded: Vec<u32>,
    pub complete_lines: usize,
    /// Every neighbour ID that appears in a line.
    pub remote_ids: BTreeSet<u32>,
}

impl LogCheck {
    /// Panics on any line that is not exactly one of SPEC.md section 5's.
    pub fn parse(me: u32, text: &str, num_pieces: u32, reconnects_allowed: bool) -> LogCheck {
        let stamp = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}: ";
        let re = |s: &str| Regex::new(&format!("{stamp}{s}$")).unwrap();
        let makes = re(r"Peer (\d+) makes a connection to Peer (\d+)\.");
        let from = re(r"Peer (\d+) is connected from Peer (\d+)\.");
        let preferred = re(r"Peer (\d+) has the preferred neighbors (\d+(?:,\d+)*)\.");
        let optimistic = re(r"Peer (\d+) has the optimistically unchoked neighbor (\d+)\.");
        let unchoked = re(r"Peer (\d+) is unchoked by (\d+)\.");
        let choked = re(r"Peer (\d+) is choked by (\d+)\.");
        let have = re(r"Peer (\d+) received the 'have' message from (\d+) for the piece (\d+)\.");
        let interested = re(r"Peer (\d+) received the 'interested' message from (\d+)\.");
        let not_interested = re(r"Peer (\d+) received the 'not interested' message from (\d+)\.");
        let downloaded = re(
            r"Peer (\d+) has downloaded the piece (\d+) from (\d+)\. Now the number of pieces it has is (\d+)\.",
        );
        let complete = re(r"Peer (\d+) has downloaded the complete file\.");
        let mut out = LogCheck::default();
        let mut count = 0u32;
        let num = |c: &regex::Captures, i: usize| c[i].parse::<u32>().unwrap();
        for line in text.lines() {
            let caps = [
                &makes,
                &from,
                &preferred,
                &optimistic,
                &unchoked,
                &choked,
                &have,
                &interested,
                &not_interested,
                &downloaded,
                &complete,
            ]
            .iter()
            .find_map(|r| r.captures(line).map(|c| (r.as_str(), c)));
            let Some((which, c)) = caps else {
                panic!("peer {me}: not a spec log line: {line:?}");
            };
            assert_eq!(num(&c, 1), me, "peer {me}: line of another peer: {line}");
            if which == makes.as_str() {
                let new = out.made_connection_to.insert(num(&c, 2));
                assert!(new || reconnects_allowed, "{line}: twice");
            } else if which == from.as_str() {
                let new = out.connected_from.insert(num(&c, 2));
                assert!(new || reconnects_allowed, "{line}: twice");
            } else if which == preferred.as_str() {
                let ids: Vec<u32> = c[2].split(',').map(|x| x.parse().unwrap()).collect();
                let distinct: BTreeSet<u32> = ids.iter().copied().collect();
                assert_eq!(distinct.len(), ids.len(), "{line}");
                out.remote_ids.extend(&ids);
                out.preferred.push(ids);
            } else if which == optimistic.as_str() {
                out.optimistic.push(num(&c, 2));
            } else if which == downloaded.as_str() {
                assert!(num(&c, 2) < num_pieces, "{line}");
                count += 1;
                assert_eq!(
                    num(&c, 4),
                    count,
                    "peer {me}: piece count must rise by one: {line}"
                );
                assert_eq!(out.complete_lines, 0, "peer {me}: a piece after completion");
                out.downloaded.push(num(&c, 2));
                out.remote_ids.insert(num(&c, 3));
            } else if which == complete.as_str() {
                assert_eq!(
                    count, num_pieces,
                    "peer {me}: complete before the last piece"
                );
                out.complete_lines += 1;
            } else {
                out.remote_ids.insert(num(&c, 2));
                if which == have.as_str() {
                    assert!(num(&c, 3) < num_pieces, "{line}");
                }
            }
        }
        out
    }
}

/// `(piece, count)` of every 'downloaded' line in `text`.
pub fn downloads(text: &str) -> Vec<(u32, u32)> {
    let re = Regex::new(
        r"has downloaded the piece (\d+) from \d+\. Now the number of pieces it has is (\d+)\.",
    )
    .unwrap();
    text.lines()
        .filter_map(|l| re.captures(l))
        .map(|c| (c[1].parse().unwrap(), c[2].parse().unwrap()))
        .collect()
}
