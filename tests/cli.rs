//! The binaries as a user meets them: clear errors with exit code 2 for bad
//! input, and `p2pft swarm` running a swarm to a verified end.

mod common;
use common::{p2pft_without_network, Spec, Swarm, P2PFT};
use std::process::{Command, Output, Stdio};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn small() -> Swarm {
    Swarm::new(Spec::new(3, 50_000, 4_096))
}

/// [`small`] with its seed, 1001, listed on `host` (port 7000).
fn small_with_seed_on(host: &str) -> Swarm {
    let swarm = small();
    let path = swarm.path().join("PeerInfo.cfg");
    let info = std::fs::read_to_string(&path).unwrap();
    let rest: String = info.lines().skip(1).map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, format!("1001 {host} 7000 1\n{rest}")).unwrap();
    swarm
}

#[test]
fn a_bad_common_cfg_names_file_and_line_and_exits_2() {
    let swarm = small();
    for (text, needle) in [
        ("NumberOfPreferredNeighbors 0\nUnchokingInterval 1\nOptimisticUnchokingInterval 1\nFileName f\nFileSize 10\nPieceSize 5\n",
         "Common.cfg:1: NumberOfPreferredNeighbors must be at least 1"),
        ("NumberOfPreferredNeighbors 2\nUnchokingInterval -1\nOptimisticUnchokingInterval 1\nFileName f\nFileSize 10\nPieceSize 5\n",
         "Common.cfg:2: UnchokingInterval must be a positive number"),
        ("NumberOfPreferredNeighbors 2\nUnchokingInterval 1\nOptimisticUnchokingInterval 1\nFileName ../f\nFileSize 10\nPieceSize 5\n",
         "Common.cfg:4: FileName must be a bare file name"),
        ("NumberOfPreferredNeighbors 2\nUnchokingInterval 1\nOptimisticUnchokingInterval 1\nFileName f\nFileSize 10\n",
         "Common.cfg: missing key PieceSize"),
        ("NumberOfPreferredNeighbors 2\nUnchokingInterval 1\nOptimisticUnchokingInterval 1\nFileName My Movie.dat\nFileSize 10\nPieceSize 5\n",
         "Common.cfg:4: expected `Key Value` (two fields), found 3 field(s): `FileName My Movie.dat` (a file name with spaces cannot be shared: rename the file)"),
    ] {
        swarm.write_common(text);
        let o = swarm.peer_process(&["1002"]);
        assert_eq!(o.status.code(), Some(2), "{text}");
        assert!(stderr(&o).contains(needle), "{needle}\n{}", stderr(&o));
    }
}

#[test]
fn an_unknown_id_or_a_missing_seed_file_exits_2() {
    let swarm = small();
    swarm.expect_refusal(999, 2, "peer 999 is not listed (listed: 1001, 1002, 1003)");
    std::fs::remove_file(swarm.file_of(1001)).unwrap();
    swarm.expect_refusal(1001, 2, "peer 1001 has HasFile 1 on line 1");
    std::fs::write(swarm.file_of(1001), b"short").unwrap();
    swarm.expect_refusal(1001, 2, "has 5 bytes where FileSize is 50000");
}

/// The same leecher started twice: the second is refused at once (exit 1)
/// without touching the file, and the first goes on to the end.
#[test]
fn a_leecher_started_twice_is_refused_the_second_time() {
    let mut swarm = small();
    swarm.start(1001);
    swarm.start(1002);
    swarm.wait_for_pieces(1002, 1, std::time::Duration::from_secs(60));
    swarm.expect_refusal(
        1002,
        1,
        "peer_1002/TheFile.dat is in use by another process (is this peer running already?)",
    );
    swarm.start(1003);
    swarm.finish_and_check(std::time::Duration::from_secs(60));
}

#[test]
fn usage_errors_exit_2() {
    let swarm = small();
    assert_eq!(swarm.peer_process(&[]).status.code(), Some(2));
    assert_eq!(swarm.peer_process(&["abc"]).status.code(), Some(2));
}

#[test]
fn unknown_keys_only_warn() {
    let mut swarm = Swarm::new(Spec::new(2, 20_000, 4_096));
    let text = std::fs::read_to_string(swarm.path().join("Common.cfg")).unwrap();
    swarm.write_common(&format!("{text}SomeOtherTeamsKey 7\n"));
    swarm.run_and_check(std::time::Duration::from_secs(60));
}

#[test]
fn a_peer_whose_stderr_nobody_reads_carries_on() {
    // Its diagnostics go nowhere (as when its launcher is gone), which must
    // not end it: here a warning, then the refusal of an unknown ID, exit 2
    // (a logger that panics on a closed pipe made it 101).
    let swarm = small();
    let text = std::fs::read_to_string(swarm.path().join("Common.cfg")).unwrap();
    swarm.write_common(&format!("{text}SomeOtherTeamsKey 7\n"));
    let (reader, writer) = nix::unistd::pipe().unwrap();
    drop(reader);
    let status = Command::new(common::PEER_PROCESS)
        .arg("999")
        .current_dir(swarm.path())
        .stdout(std::process::Stdio::null())
        .stderr(writer)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(2));
}

/// One JSON record a line, as `--json` prints them.
fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn p2pft(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(P2PFT)
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .unwrap()
}

#[test]
fn swarm_launcher_runs_checks_and_summarises() {
    let swarm = Swarm::new(Spec::new(5, 700_001, 16_384));
    let o = p2pft(swarm.path(), &["swarm", "--json", "--timeout", "120"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["ok"], true);
    let peers = report["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 5);
    for p in peers {
        assert_eq!(p["exit_code"], 0, "{p}");
        assert_eq!(p["file_ok"], true, "{p}");
        if p["seed"] == false {
            assert!(p["bytes_in"].as_u64().unwrap() >= 700_001, "{p}");
            assert!(p["complete_after_secs"].as_f64().unwrap() > 0.0, "{p}");
        }
    }
    let out: u64 = peers.iter().map(|p| p["bytes_out"].as_u64().unwrap()).sum();
    let inn: u64 = peers.iter().map(|p| p["bytes_in"].as_u64().unwrap()).sum();
    assert_eq!(out, inn, "every byte sent was received");
    swarm.check_files();
    swarm.check_logs();
}

/// A script that keeps the launcher's stderr gets every peer's warnings,
/// from peers that end well too (here: a leecher whose spec log is
/// `/dev/full`, kept by `--keep`).
#[test]
fn swarm_launcher_passes_on_the_warnings_of_peers_that_end_well() {
    let swarm = small();
    std::os::unix::fs::symlink("/dev/full", swarm.log_of(1002)).unwrap();
    let o = p2pft(swarm.path(), &["swarm", "--keep", "--timeout", "120"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for needle in [
        "peer 1002: warn: cannot write",
        "No space left on device",
        "lines of",
    ] {
        assert!(stderr(&o).contains(needle), "{needle}: {}", stderr(&o));
    }
    swarm.check_files();
}

/// A fresh clone: the launcher copies the seed's file from `data/`, makes
/// the metadata from it a moment later, and the seed then serves without
/// hashing the file again, on this run and the next (the copy was too new
/// for a check record, so each of those runs hashed it once more).
#[test]
fn swarm_launcher_hashes_a_seed_file_just_copied_from_data_once() {
    let swarm = Swarm::without_meta(Spec::new(3, 300_001, 16_384));
    let data = swarm.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::rename(swarm.file_of(1001), data.join("TheFile.dat")).unwrap();
    for run in 1..=2 {
        let mut cmd = Command::new(P2PFT);
        cmd.args(["swarm", "--quiet", "--timeout", "120", "--dir"])
            .arg(swarm.path())
            .env("P2PFT_LOG", "info");
        let o = cmd.output().unwrap();
        let said = stderr(&o);
        assert_eq!(o.status.code(), Some(0), "run {run}: {said}");
        assert_eq!(said.contains("created "), run == 1, "run {run}: {said}");
        assert!(said.contains("not hashed again"), "run {run}: {said}");
        assert!(
            !said.contains("checked the seed's file"),
            "run {run}: {said}"
        );
        assert!(p2pft::integrity::checked::path_for(&swarm.file_of(1001)).exists());
    }
    swarm.check_files();
}

/// Removing large files of an earlier run can take seconds (some 0.7 s a
/// GiB where the file system discards freed blocks): the launcher says so
/// before it begins, and stays quiet for small ones.
#[test]
fn swarm_launcher_says_when_it_removes_large_files_of_the_last_run() {
    let swarm = small();
    let o = p2pft(swarm.path(), &["swarm", "--quiet", "--timeout", "120"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stderr(&o).contains("removing"), "{}", stderr(&o));
    // A leecher's file as large as an earlier run with another Common.cfg
    // left it (sparse: nothing to write or discard here).
    let old = std::fs::File::create(swarm.file_of(1002)).unwrap();
    old.set_len(2 << 30).unwrap();
    let o = p2pft(swarm.path(), &["swarm", "--quiet", "--timeout", "120"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("removing 2 leecher files of the last run (2.0 GiB)"),
        "{}",
        stderr(&o)
    );
    swarm.check_files();
}

/// Whatever is in the way of a peer's directory or file is named: the
/// launcher used to say only `error: File exists (os error 17)`.
#[test]
fn swarm_launcher_names_the_path_in_its_way() {
    let swarm = small();
    std::fs::write(swarm.path().join("peer_1002"), b"").unwrap();
    let o = p2pft(swarm.path(), &["swarm", "--quiet"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let needle = format!(
        "cannot create the directory {}: File exists",
        swarm.path().join("peer_1002").display()
    );
    assert!(stderr(&o).contains(&needle), "{}", stderr(&o));
}

#[test]
fn swarm_launcher_refuses_bad_input_with_exit_2() {
    let swarm = small();
    std::fs::write(
        swarm.path().join("PeerInfo.cfg"),
        "1001 localhost 7000 1\n1002 localhost 7000 0\n",
    )
    .unwrap();
    let o = p2pft(swarm.path(), &["swarm"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o)
            .contains("PeerInfo.cfg:2: peer 1002 uses localhost:7000, already taken by peer 1001"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn swarm_launcher_without_the_seed_file_says_where_it_belongs() {
    let swarm = small();
    std::fs::remove_file(swarm.file_of(1001)).unwrap();
    let o = p2pft(swarm.path(), &["swarm"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("peer_1001/TheFile.dat"),
        "{}",
        stderr(&o)
    );
}

/// A seed on another host that never comes: the local leechers dial it for
/// --connect-timeout, then say how long they tried.
#[test]
fn leechers_give_up_on_a_seed_elsewhere_and_say_how_long_they_tried() {
    let swarm = small_with_seed_on("192.0.2.1");
    // Dialled from a namespace with loopback alone: no packet leaves.
    let o = p2pft_without_network(&[
        "swarm",
        "--json",
        "--connect-timeout",
        "1",
        "--timeout",
        "60",
        "--dir",
    ])
    .arg(swarm.path())
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    for needle in [
        "could not connect to peer 1001 at 192.0.2.1:7000 (",
        "; --connect-timeout 1): ",
    ] {
        assert!(stderr(&o).contains(needle), "{needle}: {}", stderr(&o));
    }
}

/// A misspelt host in PeerInfo.cfg resolves nowhere: the launcher says so
/// before it starts the peers, and a peer that must dial it says so at its
/// first attempt, not once its --connect-timeout (here 60 s) has passed.
#[test]
fn a_host_that_does_not_resolve_is_said_at_once() {
    let swarm = small_with_seed_on("locahost.invalid");
    let mut launcher = p2pft_without_network(&["swarm", "--quiet", "--timeout", "60", "--dir"]);
    launcher.arg(swarm.path()).env("P2PFT_LOG", "warn");
    let mut child = launcher
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    // Lines as they come, so the test needs no more than the first attempts.
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr_pipe = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr_pipe)) {
            let _ = tx.send(line.unwrap_or_default());
        }
    });
    let mut said = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let wanted = [
        "warning: peer 1001's host locahost.invalid does not resolve here (",
        "peer 1002: warn: cannot look up locahost.invalid, the host of peer 1001 in PeerInfo.cfg (",
        "peer 1003: warn: cannot look up locahost.invalid",
    ];
    while !wanted.iter().all(|w| said.contains(w)) && std::time::Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(100)) {
            said += &line;
            said.push('\n');
        }
    }
    // The launcher passes SIGTERM on to its peers and waits for them.
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let status = child.wait().unwrap();
    for w in wanted {
        assert!(said.contains(w), "{w}: {said}");
    }
    assert!(said.contains("trying again for up to 60 s"), "{said}");
    assert_eq!(status.code(), Some(143), "{said}");
}

/// A peer that cannot start (its file locked by another process, kept with
/// `--keep`; a port taken beforehand is refused by the launcher itself)
/// stops the launch: it keeps its own exit code, the peers started before
/// it are killed, and those after it are reported as never started.
#[test]
fn a_peer_that_cannot_start_ends_the_launch_and_says_who_never_started() {
    let swarm = small();
    std::fs::create_dir_all(swarm.file_of(1002).parent().unwrap()).unwrap();
    let file = std::fs::File::create(swarm.file_of(1002)).unwrap();
    let _locked =
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
    let o = p2pft(swarm.path(), &["swarm", "--json", "--keep"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let peers = report["peers"].as_array().unwrap();
    let field = |i: usize, key: &str| peers[i][key].clone();
    assert_eq!(peers.len(), 3, "{report}");
    assert_eq!(
        (field(0, "started"), field(0, "exit_code")),
        (true.into(), serde_json::Value::Null)
    );
    assert_eq!(
        (field(1, "started"), field(1, "exit_code")),
        (true.into(), 1.into())
    );
    assert_eq!(
        (field(2, "started"), field(2, "local")),
        (false.into(), true.into())
    );
    assert!(
        stderr(&o).contains("is in use by another process"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn swarm_launcher_fails_at_its_time_limit_and_kills_the_peers() {
    let swarm = small();
    // A fourth peer on another host (TEST-NET-1, never contacted: it is listed
    // last, so nobody dials it) never shows up, so the swarm cannot finish.
    let mut info = std::fs::read_to_string(swarm.path().join("PeerInfo.cfg")).unwrap();
    info += "1004 192.0.2.1 7000 0\n";
    std::fs::write(swarm.path().join("PeerInfo.cfg"), info).unwrap();
    let started = std::time::Instant::now();
    let o = p2pft(swarm.path(), &["swarm", "--json", "--timeout", "3"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert!(
        stderr(&o).contains("peer 1004 runs on 192.0.2.1"),
        "{}",
        stderr(&o)
    );
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["timed_out"], true);
    let peers = report["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 4);
    // The local leechers got the file but were killed waiting for 1004.
    for p in &peers[..3] {
        assert_eq!(p["exit_code"], serde_json::Value::Null, "{p}");
        assert_eq!(p["file_ok"], true, "{p}");
    }
    assert_eq!(peers[3]["local"], false);
}

#[test]
fn bench_runs_a_small_swarm_and_reports_a_consistent_record() {
    for mode in [
        None,
        Some("--buffered-io"),
        Some("--strict"),
        Some("--seed-check"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec![
            "bench",
            "--peers",
            "4",
            "--file-size",
            "3M",
            "--piece-size",
            "64K",
            "--json",
        ];
        args.extend(mode);
        let o = p2pft(dir.path(), &args);
        assert_eq!(o.status.code(), Some(0), "{mode:?}: {}", stderr(&o));
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["direct_io"], mode != Some("--buffered-io"), "{r}");
        assert_eq!(r["strict"], mode == Some("--strict"), "{r}");
        assert_eq!(r["seed_check"], mode == Some("--seed-check"), "{r}");
        assert_eq!(r["delivered_bytes"], 3 * (3 << 20), "{r}");
        let peers = r["per_peer"].as_array().unwrap();
        assert_eq!(peers.len(), 4);
        let wall = r["wall_secs"].as_f64().unwrap();
        for p in peers.iter().filter(|p| p["seed"] == false) {
            let done = p["complete_after_secs"].as_f64().unwrap();
            assert!(done > 0.0 && done <= wall, "{p} against wall {wall}");
        }
        for c in [
            "loopback_one_stream_bytes_per_sec",
            "sha1_one_core_bytes_per_sec",
            "sha1_pairs_one_core_bytes_per_sec",
            "page_cache_read_bytes_per_sec",
            "disk_write_bytes_per_sec",
        ] {
            let rate = r["ceilings"][c].as_f64().unwrap();
            assert!(rate.is_finite() && rate > 0.0, "{c}: {rate}");
        }
        let rate = r["delivered_bytes_per_sec"].as_f64().unwrap();
        let ratio = r["rate_to_disk_write"].as_f64().unwrap();
        let disk = r["ceilings"]["disk_write_bytes_per_sec"].as_f64().unwrap();
        assert!((ratio * disk - rate).abs() <= rate * 1e-9, "{r}");
        let (cpu, cores) = (
            r["cpu_secs_total"].as_f64().unwrap(),
            r["cores"].as_f64().unwrap(),
        );
        let busy = r["cpu_busy"].as_f64().unwrap();
        assert!(cpu > 0.0 && cores >= 1.0, "{r}");
        assert!((busy * wall * cores - cpu).abs() <= cpu * 1e-9, "{r}");
        // The swarm directory (and the ceiling's scratch file) are gone.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}

#[test]
fn bench_refuses_a_swarm_that_would_fill_the_disk_and_counts_only_completed_leechers() {
    let dir = tempfile::tempdir().unwrap();
    // Refused before a byte is written: exit 2, saying each of `needles`.
    let refused = |args: &[&str], needles: &[&str]| {
        let o = p2pft(dir.path(), args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        for needle in needles {
            assert!(stderr(&o).contains(needle), "{needle}: {}", stderr(&o));
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    };
    // A petabyte.
    refused(
        &["bench", "--file-size", "1048576G"],
        &["not enough free space in", "--dir elsewhere"],
    );
    // Options the peers would refuse, refused as such.
    refused(
        &["bench", "-k", "0"],
        &[
            "NumberOfPreferredNeighbors must be at least 1, found 0",
            "-k NumberOfPreferredNeighbors",
        ],
    );
    // 5,000 peers: 50 million threads, past any kernel's pid_max (at most
    // 4,194,304).
    refused(
        &["bench", "--peers", "5000", "--file-size", "1M"],
        &["need about 50070000 threads", "run fewer peers"],
    );
    // Pieces of one byte: a small file, but some 1.3 TB of logs.
    refused(
        &["bench", "--piece-size", "1"],
        &["MiB of logs and metadata"],
    );
    // A swarm stopped at its time limit long before anyone completes: no
    // delivered bytes are claimed for it.
    let o = p2pft(
        dir.path(),
        &["bench", "--file-size", "512M", "--timeout", "0.1", "--json"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let r = &json_lines(&o.stdout)[0];
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(r["delivered_bytes"], 0, "{r}");
    assert_eq!(r["delivered_bytes_per_sec"], 0.0, "{r}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn bench_stops_when_nobody_reads_its_figures() {
    // `p2pft bench --runs 3 --json | head -1`, with `head` gone before the
    // first record: no more runs, no panic, the directory removed, and the
    // status of a program that SIGPIPE ended.
    let dir = tempfile::tempdir().unwrap();
    let (reader, writer) = nix::unistd::pipe().unwrap();
    drop(reader);
    let o = Command::new(P2PFT)
        .args([
            "bench",
            "--runs",
            "3",
            "--json",
            "--file-size",
            "2M",
            "--dir",
        ])
        .arg(dir.path())
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(141), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn bench_repeats_runs_in_one_directory_and_summarises_them() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "bench",
        "--peers",
        "3",
        "--file-size",
        "2M",
        "--piece-size",
        "64K",
    ];
    let o = p2pft(
        dir.path(),
        &[&args[..], &["--runs", "2", "--json"]].concat(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let records = json_lines(&o.stdout);
    assert_eq!(records.len(), 2, "one JSON line a run");
    for r in &records {
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["delivered_bytes"], 2 * (2 << 20), "{r}");
    }
    let o = p2pft(dir.path(), &[&args[..], &["--runs", "3"]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let table = String::from_utf8(o.stdout).unwrap();
    assert_eq!(table.matches("result: OK").count(), 3, "{table}");
    assert!(table.contains("summary of 3 runs (3 OK)"), "{table}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let o = p2pft(dir.path(), &[&args[..], &["--runs", "0"]].concat());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// `benches/compare.py` (p2pft against other BitTorrent clients) on its
/// p2pft swarms, the ones it can run without other clients installed.
#[test]
fn compare_script_times_p2pft_swarms_the_way_it_times_other_clients() {
    let dir = tempfile::tempdir().unwrap();
    let compare = |args: &[&str]| {
        Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/compare.py"))
            .args(args)
            .arg("--p2pft")
            .arg(P2PFT)
            .arg("--dir")
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let o = compare(&[
        "--clients",
        "p2pft,p2pft-strict",
        "--file-size",
        "2M",
        "--piece-size",
        "64K",
        "--runs",
        "1",
        "--json",
        "--timeout",
        "60",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let records = json_lines(&o.stdout);
    let clients: Vec<_> = records
        .iter()
        .map(|r| r["client"].as_str().unwrap())
        .collect();
    assert_eq!(clients, ["p2pft", "p2pft-strict"]);
    for r in &records {
        assert_eq!(r["files_identical"], true, "{r}");
        assert!(r["version"].as_str().unwrap().starts_with("p2pft "), "{r}");
        let wall = r["wall_secs"].as_f64().unwrap();
        let done: Vec<f64> = r["leechers_complete_secs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_f64().unwrap())
            .collect();
        assert_eq!(done.len(), 4, "{r}");
        assert!(done.iter().all(|&t| t > 0.0 && t <= wall), "{r}");
        let rate = r["delivered_mib_per_sec"].as_f64().unwrap();
        assert!((rate * wall - 8.0).abs() < 1e-6, "4 leechers x 2 MiB: {r}");
        let rss = r["peak_rss_mb"].as_array().unwrap();
        assert_eq!(rss.len(), 5, "{r}");
        assert!(rss.iter().all(|m| m.as_f64().unwrap() > 0.0), "{r}");
        assert!(
            r["cpu_secs_per_delivered_gib"].as_f64().unwrap() > 0.0,
            "{r}"
        );
    }
    // Every swarm and the file are gone.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // A swarm the disk cannot hold is refused before anything is written.
    let o = compare(&["--clients", "p2pft", "--file-size", "1048576G"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not enough free space"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn swarm_launcher_refuses_a_swarm_the_disk_cannot_hold() {
    let dir = tempfile::tempdir().unwrap();
    // A petabyte: the seed's copy from data/ and two leechers' files.
    let common = "NumberOfPreferredNeighbors 1\nUnchokingInterval 1\nOptimisticUnchokingInterval 2\nFileName f.dat\nFileSize 1125899906842624\nPieceSize 67108864\n";
    std::fs::write(dir.path().join("Common.cfg"), common).unwrap();
    let peers = "1001 127.0.0.1 7000 1\n1002 127.0.0.1 7001 0\n1003 127.0.0.1 7002 0\n";
    std::fs::write(dir.path().join("PeerInfo.cfg"), peers).unwrap();
    let o = p2pft(dir.path(), &["swarm", "--quiet"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    for needle in ["not enough free space in", "3221225472 MiB of peers' files"] {
        assert!(stderr(&o).contains(needle), "{needle}: {}", stderr(&o));
    }
    // Logs are no part of that: no advice about them.
    assert!(!stderr(&o).contains("PieceSize"), "{}", stderr(&o));
    // Refused before anything was written: no peer directory, metadata or log.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    // 1 GiB in 1-byte pieces: the logs are most of it.
    let common = common.replace("1125899906842624", "1073741824");
    std::fs::write(
        dir.path().join("Common.cfg"),
        common.replace("67108864", "1"),
    )
    .unwrap();
    let o = p2pft(dir.path(), &["swarm", "--quiet"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    for needle in ["not enough free space in", "use a larger PieceSize"] {
        assert!(stderr(&o).contains(needle), "{needle}: {}", stderr(&o));
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}
