//! Launchers stopped from outside. `p2pft swarm` and `p2pft bench` pass a
//! SIGINT or SIGTERM on to their peers, which stop cleanly, and exit with
//! 128 + the signal; an interrupted bench leaves no directory behind; peers
//! whose launcher was killed outright stop by themselves; a launcher stopped
//! while it hashes a large file stops then, not once the hashing is done; a
//! launcher started beside a running swarm (another launcher, or a peer
//! started by hand) is refused before it removes anything.
//!
//! A test binary of its own: one test makes this process the subreaper of
//! orphaned peers, so that it can collect their exit codes.

mod common;
use common::{free_ports, wait_until, Spec, Swarm, P2PFT};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

/// Three peers that get the file quickly, and a fourth on another host
/// (TEST-NET-1, listed last, so never dialled) that never comes: the swarm
/// cannot end by itself.
fn endless() -> Swarm {
    let swarm = Swarm::new(Spec::new(3, 200_000, 4_096));
    let path = swarm.path().join("PeerInfo.cfg");
    let info = std::fs::read_to_string(&path).unwrap() + "1004 192.0.2.1 7000 0\n";
    std::fs::write(path, info).unwrap();
    swarm
}

/// Processes started here and not yet known to be gone: killed by PID when
/// a test fails half way.
struct Reap(Vec<u32>);

impl Drop for Reap {
    fn drop(&mut self) {
        for &pid in &self.0 {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// The peers `launcher` started, once it has started `n` of them.
fn peers_of(launcher: u32, n: usize) -> Vec<u32> {
    let deadline = Instant::now() + LIMIT;
    loop {
        let mut peers = Vec::new();
        for task in std::fs::read_dir(format!("/proc/{launcher}/task")).unwrap() {
            let children = std::fs::read_to_string(task.unwrap().path().join("children"));
            peers.extend(
                children
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(|pid| pid.parse::<u32>().unwrap()),
            );
        }
        if peers.len() >= n {
            return peers;
        }
        assert!(Instant::now() < deadline, "{launcher} started {peers:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn wait_bounded(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "still running after {LIMIT:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn launch(args: &[&str], dir: &Path) -> Child {
    let mut cmd = Command::new(P2PFT);
    cmd.args(args);
    common::spawn_with_dir(cmd, dir)
}

/// An [`endless`] swarm under `p2pft swarm --json`, once its leechers have
/// every piece; the PIDs to reap are the launcher's, then its peers'.
fn endless_launched() -> (Swarm, Child, Reap) {
    let swarm = endless();
    let launcher = launch(&["swarm", "--json", "--timeout", "300"], swarm.path());
    let mut reap = Reap(vec![launcher.id()]);
    reap.0.extend(peers_of(launcher.id(), 3));
    let pieces = swarm.spec.num_pieces();
    for id in [1002, 1003] {
        swarm.wait_for_pieces(id, pieces, LIMIT);
    }
    (swarm, launcher, reap)
}

fn output(child: Child) -> (String, String) {
    let o = child.wait_with_output().unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    (text(o.stdout), text(o.stderr))
}

#[test]
fn a_swarm_launcher_passes_a_signal_on_to_its_peers_and_exits_with_it() {
    for (signal, code) in [(Signal::SIGTERM, 143), (Signal::SIGINT, 130)] {
        let (_swarm, mut launcher, mut reap) = endless_launched();
        // What a terminal's Ctrl-C does now that peers have process groups
        // of their own: the signal reaches the launcher alone.
        kill(Pid::from_raw(launcher.id() as i32), signal).unwrap();
        let status = wait_bounded(&mut launcher);
        let (out, err) = output(launcher);
        assert_eq!(status.code(), Some(code), "{signal}: {err}");
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(report["interrupted"], signal as i32, "{report}");
        assert_eq!(report["ok"], false);
        assert_eq!(report["timed_out"], false);
        let peers = report["peers"].as_array().unwrap();
        assert_eq!(peers.len(), 4);
        for p in &peers[..3] {
            let said = match p["seed"].as_bool().unwrap() {
                true => format!("stopped by signal {}\"", signal as i32),
                false => format!(
                    "stopped by signal {}; progress recorded: 49 of 49 pieces, kept for the next run",
                    signal as i32
                ),
            };
            // Each stopped cleanly on the signal passed on, exactly once: a
            // second one ends a peer at once, with the same code but without
            // that last diagnostic (kept in the report, which is not OK).
            assert_eq!(p["exit_code"], code, "{signal}: {p}");
            assert_eq!(p["file_ok"], true, "{signal}: {p}");
            assert!(p["stderr_tail"].to_string().contains(&said), "{said}: {p}");
        }
        for &pid in &reap.0 {
            assert!(!Path::new(&format!("/proc/{pid}")).exists(), "{pid} left");
        }
        reap.0.clear();
    }
}

#[test]
fn peers_whose_launcher_was_killed_outright_stop_by_themselves() {
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let (_swarm, mut launcher, mut reap) = endless_launched();
    let peers = reap.0[1..].to_vec();
    kill(Pid::from_raw(launcher.id() as i32), Signal::SIGKILL).unwrap();
    wait_bounded(&mut launcher);
    // Orphaned, the peers are now this process's children. Each finds its
    // status pipe closed and stops as on SIGHUP: 128 + 1.
    let deadline = Instant::now() + LIMIT;
    for &pid in &peers {
        let code = loop {
            match waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG)).unwrap() {
                WaitStatus::Exited(_, code) => break code,
                WaitStatus::StillAlive => {
                    assert!(Instant::now() < deadline, "peer {pid} still running");
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => panic!("peer {pid}: {other:?}"),
            }
        };
        assert_eq!(code, 129, "peer {pid}");
    }
    reap.0.clear();
}

#[test]
fn a_bench_stopped_by_a_signal_stops_its_peers_and_leaves_no_directory() {
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<&str> = "bench --peers 3 --file-size 128M --piece-size 4K"
        .split(' ')
        .collect();
    let mut bench = launch(&args, dir.path());
    let mut reap = Reap(vec![bench.id()]);
    // The swarm is running once its first peer is: 65,536 pieces to deliver.
    reap.0.extend(peers_of(bench.id(), 1));
    kill(Pid::from_raw(bench.id() as i32), Signal::SIGTERM).unwrap();
    let status = wait_bounded(&mut bench);
    let (_, err) = output(bench);
    assert_eq!(status.code(), Some(143), "{err}");
    assert!(err.contains("stopped by signal 15"), "{err}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    for &pid in &reap.0 {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "{pid} left");
    }
    reap.0.clear();
}

#[test]
fn a_swarm_launcher_stopped_while_it_makes_the_metadata_stops_then() {
    // A 64 GiB seed file (sparse: no disk space, but every byte hashed) and
    // no metadata, which the launcher makes before it starts any peer:
    // dozens of seconds of hashing on two cores.
    let dir = tempfile::tempdir().unwrap();
    let size: u64 = 64 << 30;
    let common = format!(
        "NumberOfPreferredNeighbors 1\nUnchokingInterval 1\nOptimisticUnchokingInterval 2\nFileName big.dat\nFileSize {size}\nPieceSize 1048576\n"
    );
    std::fs::write(dir.path().join("Common.cfg"), common).unwrap();
    let port = free_ports("127.0.0.1", 1)[0];
    std::fs::write(
        dir.path().join("PeerInfo.cfg"),
        format!("1001 127.0.0.1 {port} 1\n"),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("peer_1001")).unwrap();
    let file = std::fs::File::create(dir.path().join("peer_1001/big.dat")).unwrap();
    file.set_len(size).unwrap();
    drop(file);

    let mut launcher = launch(&["swarm", "--json"], dir.path());
    let reap = Reap(vec![launcher.id()]);
    // Hashing has begun once the hashing threads are there (beside the
    // main thread and the one that catches signals).
    let tasks = format!("/proc/{}/task", launcher.id());
    wait_until(LIMIT, "hashing threads", || {
        std::fs::read_dir(&tasks).map_or(0, |tasks| tasks.count()) >= 3
    });
    kill(Pid::from_raw(launcher.id() as i32), Signal::SIGINT).unwrap();
    let status = wait_bounded(&mut launcher);
    let (out, err) = output(launcher);
    assert_eq!(status.code(), Some(130), "{out}{err}");
    assert!(
        err.contains("stopped by signal 2 before any peer started"),
        "{err}"
    );
    // Given up, not finished: no metadata, no check record, no peer's log.
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["Common.cfg", "PeerInfo.cfg", "peer_1001"]);
    let seed_dir: Vec<_> = std::fs::read_dir(dir.path().join("peer_1001"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(seed_dir, ["big.dat"]);
    drop(reap);
}

/// A second launcher in the directory of a running swarm used to remove the
/// first one's leecher files and logs (its fresh-run cleanup), failing only
/// later at the seed's port: the first swarm then ended with every leecher
/// file missing. It is now refused before it removes or starts anything.
#[test]
fn a_second_launcher_in_a_running_swarm_is_refused_and_removes_nothing() {
    let (swarm, mut first, mut reap) = endless_launched();
    let mut second = launch(&["swarm", "--json", "--timeout", "300"], swarm.path());
    reap.0.push(second.id());
    let status = wait_bounded(&mut second);
    let (_, err) = output(second);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("peer_1001 is held by another p2pft swarm on this machine"),
        "{err}"
    );
    kill(Pid::from_raw(first.id() as i32), Signal::SIGTERM).unwrap();
    let status = wait_bounded(&mut first);
    let (out, err) = output(first);
    assert_eq!(status.code(), Some(143), "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    for p in &report["peers"].as_array().unwrap()[..3] {
        assert_eq!(p["file_ok"], true, "{p}");
    }
    for id in [1001, 1002, 1003] {
        assert!(swarm.log_of(id).exists(), "log of {id} removed");
    }
    reap.0.clear();
}

/// A peer started by hand holds its port: a launcher in its directory says
/// so and leaves its log (which a fresh run would remove) alone.
#[test]
fn a_launcher_beside_a_peer_started_by_hand_is_refused_and_removes_nothing() {
    let mut swarm = endless();
    swarm.start(1001);
    let (host, port) = swarm.addr(1001);
    wait_until(LIMIT, "the seed listening", || {
        std::net::TcpListener::bind((host.as_str(), port)).is_err()
    });
    let o = Command::new(P2PFT)
        .args(["swarm", "--quiet", "--dir"])
        .arg(swarm.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is it running already (`peerProcess 1001`)? Nothing was removed"),
        "{err}"
    );
    assert!(
        swarm.log_of(1001).exists(),
        "the running seed's log was removed"
    );
    swarm.kill_all();
}
