//! Verified pieces and resume: a liar in the swarm, peers killed and
//! restarted, files damaged while a peer was down, seeds that do not match.

mod common;
use common::{downloads, wait_until, Spec, Swarm, P2PFT, PEER_PROCESS};
use rand::Rng;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn a_liar_is_banned_and_no_bad_piece_is_ever_counted() {
    // 1002 is a seed (by its bitfield) that flips a byte in every piece it
    // serves. The honest seed 1001 is a spec peer too, so that both serve at
    // the same pace and the liar gets its chance.
    let mut spec = Spec::new(5, 4 << 20, 16 * 1024);
    spec.seeds[1] = true;
    let mut swarm = Swarm::new(spec);
    swarm.reconnects_allowed = true;
    swarm.start_spec_peer(1001, &[]);
    swarm.start_spec_peer(1002, &[("SPEC_PEER_CORRUPT", "1")]);
    for id in [1003, 1004, 1005] {
        swarm.start(id);
    }
    for id in [1003, 1004, 1005] {
        let status = swarm.wait_one(id, LIMIT);
        assert!(status.success(), "peer {id} exited with {status}");
    }
    swarm.kill_all(); // the liar, whom nobody talks to any more
    let mut banned_by = 0;
    for id in [1003, 1004, 1005] {
        let got = std::fs::read(swarm.file_of(id)).unwrap();
        assert!(
            got == swarm.content,
            "peer {id}'s file differs from the seed's"
        );
        let log = std::fs::read_to_string(swarm.log_of(id)).unwrap();
        assert!(
            !log.contains("from 1002. Now"),
            "peer {id} counted a piece from the liar"
        );
        let stderr = swarm.stderr_text(id);
        let bad = stderr
            .matches("from peer 1002 failed SHA-1 verification")
            .count();
        assert!(
            bad <= 3,
            "peer {id} accepted {bad} bad pieces before banning:\n{stderr}"
        );
        if bad == 3 {
            assert!(stderr.contains("disconnecting peer 1002"), "{stderr}");
            banned_by += 1;
        }
    }
    assert!(
        banned_by > 0,
        "the liar served nobody three pieces: the test tested nothing"
    );
    swarm.check_logs_except(&[1001, 1002]);
}

/// Starts the swarm (4 peers, seed 1001) and stops 1003 with `signal` once it
/// logged a random share of its pieces and, without metadata, once it has
/// recorded progress. Returns the pieces logged by then.
fn interrupt_mid_download(swarm: &mut Swarm, signal: &str, wait_for_record: bool) -> u32 {
    // The others log the restarted peer's second connection.
    swarm.reconnects_allowed = true;
    // 1003's first run is capped to take about eight seconds, so a fast
    // machine cannot finish the file between two looks at its log; the
    // restart runs uncapped.
    let rate = (swarm.spec.file_size / 8).max(64 * 1024).to_string();
    for id in swarm.ids.clone() {
        let mut cmd = Command::new(PEER_PROCESS);
        if id == 1003 {
            cmd.args(["--max-download-rate", &rate]);
        }
        swarm.start_with(cmd, id);
        std::thread::sleep(Duration::from_millis(20));
    }
    let n = swarm.spec.num_pieces();
    let at = rand::rng().random_range(n / 10..n / 2);
    let record = swarm.path().join("peer_1003/.TheFile.dat.p2pft-progress");
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let logged = swarm.pieces_logged(1003);
        assert!(
            logged < n,
            "1003 finished before it could be stopped: use a larger file"
        );
        if logged >= at && (!wait_for_record || record.exists()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "1003 stalled at {logged} pieces"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let pid = swarm.children[&1003].id().to_string();
    assert!(Command::new("kill")
        .args([signal, &pid])
        .status()
        .unwrap()
        .success());
    let status = swarm.wait_one(1003, Duration::from_secs(10));
    let logged = swarm.pieces_logged(1003);
    assert!(
        logged < n,
        "1003 finished before it was stopped: nothing to resume"
    );
    if signal == "-TERM" {
        assert_eq!(status.code(), Some(128 + 15), "SIGTERM exit code");
    }
    logged
}

/// Restarts 1003, lets everyone finish, and returns the pieces the second
/// run started with and the pieces it downloaded.
fn restart_and_finish(swarm: &mut Swarm) -> (u32, Vec<u32>) {
    let first_run = std::fs::read_to_string(swarm.log_of(1003)).unwrap().len();
    swarm.start(1003);
    swarm.finish_and_check_except(LIMIT, &[1003]);
    let log = std::fs::read_to_string(swarm.log_of(1003)).unwrap();
    let second = downloads(&log[first_run..]);
    let n = swarm.spec.num_pieces();
    let resumed = second.first().map_or(n, |&(_, c)| c - 1);
    for (i, &(_, count)) in second.iter().enumerate() {
        assert_eq!(
            count,
            resumed + 1 + i as u32,
            "count rising by one after the restart"
        );
    }
    assert_eq!(second.len() as u32 + resumed, n);
    assert_eq!(log.matches("has downloaded the complete file").count(), 1);
    // Said by default, not only with P2PFT_LOG=info: a resume of a large
    // file is a long pass.
    if resumed > 0 {
        let stderr = swarm.stderr_text(1003);
        let said = format!("info: resuming with {resumed} of {n} pieces");
        assert!(stderr.contains(&said), "{said}:\n{stderr}");
    }
    (resumed, second.iter().map(|&(p, _)| p).collect())
}

fn four_thousand_pieces() -> Spec {
    Spec::new(4, 4096 * 1024, 1024)
}

/// Long enough that progress records (every 250 ms) land mid-download.
fn sixteen_thousand_pieces() -> Spec {
    Spec::new(4, 16384 * 1024, 1024)
}

#[test]
fn sigkill_mid_download_resumes_from_verified_pieces() {
    let mut swarm = Swarm::new(four_thousand_pieces());
    let logged = interrupt_mid_download(&mut swarm, "-KILL", false);
    let (resumed, _) = restart_and_finish(&mut swarm);
    assert!(
        resumed >= logged,
        "resumed with {resumed}, {logged} were logged before the kill"
    );
    assert!(resumed > 0 && resumed < swarm.spec.num_pieces());
}

/// The only seed dies half way. The leechers, once they have traded what
/// they have, say they are stalled and that no neighbour has what they
/// lack. The seed is started again; it dials nobody (it is listed first),
/// so the leechers must dial it again, and all finish.
#[test]
fn a_seed_that_crashed_and_came_back_is_dialled_again() {
    let mut swarm = Swarm::new(Spec::new(3, 16384 * 1024, 1024));
    swarm.reconnects_allowed = true;
    // 1003's first run is capped to take about eight seconds, so a fast
    // machine cannot finish the file between two looks at its log; the
    // restart runs uncapped.
    let rate = (swarm.spec.file_size / 8).max(64 * 1024).to_string();
    for id in swarm.ids.clone() {
        let mut cmd = Command::new(PEER_PROCESS);
        if id == 1003 {
            cmd.args(["--max-download-rate", &rate]);
        }
        swarm.start_with(cmd, id);
        std::thread::sleep(Duration::from_millis(20));
    }
    // Both leechers must be the seed's neighbours when it dies: a seed that
    // starts from its check record can serve a tenth of the file to 1002
    // before 1003 has dialled it.
    for id in [1002, 1003] {
        let dialled = format!("Peer {id} makes a connection to Peer 1001.");
        wait_until(LIMIT, &dialled, || {
            std::fs::read_to_string(swarm.log_of(id)).is_ok_and(|log| log.contains(&dialled))
        });
    }
    let n = swarm.spec.num_pieces();
    swarm.wait_for_pieces(1002, n / 10, LIMIT);
    let mut seed = swarm.children.remove(&1001).unwrap();
    seed.kill().unwrap(); // SIGKILL: no goodbye
    seed.wait().unwrap();
    for id in [1002, 1003] {
        assert!(
            swarm.pieces_logged(id) < n,
            "{id} finished before the seed died: use a larger file"
        );
    }
    for id in [1002, 1003] {
        let told = "no new piece for 10 s";
        wait_until(LIMIT, &format!("'{told}' from {id}"), || {
            swarm.stderr_text(id).contains(told)
        });
        let stderr = swarm.stderr_text(id);
        let other = 2005 - id;
        assert!(
            stderr.contains(&format!("missing; neighbours: {other} (has none,")),
            "{stderr}"
        );
    }
    swarm.start(1001);
    swarm.finish_and_check_except(LIMIT, &[1001]);
    for id in [1002, 1003] {
        let stderr = swarm.stderr_text(id);
        assert!(
            stderr.contains("connection to 1001 ended"),
            "{id} said nothing of the seed's end:\n{stderr}"
        );
        let log = std::fs::read_to_string(swarm.log_of(id)).unwrap();
        assert_eq!(
            log.matches(&format!("Peer {id} makes a connection to Peer 1001."))
                .count(),
            2,
            "{id}: one connection to the seed, and one to it come back"
        );
    }
}

/// Peers with the whole file wait for every peer to have it (SPEC.md); one
/// never started keeps them waiting. After 10 s each says whom it waits for,
/// and once that peer comes all end.
#[test]
fn peers_with_the_file_say_whom_they_wait_for() {
    let mut swarm = Swarm::new(Spec::new(3, 64 * 1024, 1024));
    swarm.start(1001);
    swarm.start(1002);
    for id in [1001, 1002] {
        let told = "has the whole file, and has waited 10 s for peers that are not connected: 1003 (every peer";
        wait_until(LIMIT, &format!("'{told}' from {id}"), || {
            swarm.stderr_text(id).contains(told)
        });
    }
    swarm.start(1003);
    swarm.finish_and_check(LIMIT);
}

#[test]
fn pieces_damaged_while_down_are_fetched_again() {
    kill_damage_and_resume(four_thousand_pieces());
}

/// The same with pieces large enough to be written with direct I/O: the
/// restarted peer re-hashes what the first run wrote past the page cache.
#[test]
fn pieces_written_with_direct_io_survive_a_kill_and_damage_is_fetched_again() {
    kill_damage_and_resume(Spec::new(4, 2048 * 65_536, 65_536));
}

/// The same with 16 KiB pieces, which the leechers gather into granules
/// before writing: a piece is logged only once it is in the file, so every
/// logged piece survives the kill.
#[test]
fn gathered_pieces_survive_a_kill_and_damage_is_fetched_again() {
    kill_damage_and_resume(gathered_pieces());
}

/// 4,096 pieces of 16 KiB: gathered into 256 KiB granules.
fn gathered_pieces() -> Spec {
    Spec::new(4, 4096 * 16_384, 16_384)
}

fn kill_damage_and_resume(spec: Spec) {
    let piece_size = spec.piece_size as usize;
    let mut swarm = Swarm::new(spec);
    let logged = interrupt_mid_download(&mut swarm, "-KILL", false);
    let log = std::fs::read_to_string(swarm.log_of(1003)).unwrap();
    let first: Vec<u32> = downloads(&log).iter().map(|&(p, _)| p).collect();
    let damaged: BTreeSet<u32> = first.iter().step_by(first.len() / 3 + 1).copied().collect();
    let mut bytes = std::fs::read(swarm.file_of(1003)).unwrap();
    for &piece in &damaged {
        bytes[piece as usize * piece_size + 7] ^= 0x55;
    }
    std::fs::write(swarm.file_of(1003), bytes).unwrap();
    let (resumed, fetched) = restart_and_finish(&mut swarm);
    assert!(
        resumed + damaged.len() as u32 >= logged,
        "resumed with {resumed} good pieces; {logged} were logged, {} damaged",
        damaged.len()
    );
    for piece in damaged {
        assert!(
            fetched.contains(&piece),
            "damaged piece {piece} was not fetched again"
        );
    }
}

/// Long enough that a progress record lands well before the end even while
/// the other tests here load the disk: with 16,384 pieces, 1003 once
/// finished before its first record (250 ms, then a synced write) was in.
fn sixty_five_thousand_pieces() -> Spec {
    Spec::new(4, 65536 * 1024, 1024)
}

#[test]
fn sigkill_without_metadata_resumes_from_the_progress_record() {
    let mut swarm = Swarm::without_meta(sixty_five_thousand_pieces());
    interrupt_mid_download(&mut swarm, "-KILL", true);
    let (resumed, _) = restart_and_finish(&mut swarm);
    assert!(resumed > 0, "the progress record gave nothing back");
}

#[test]
fn sigterm_stops_cleanly_and_records_every_counted_piece() {
    sigterm_and_resume_every_logged_piece(sixteen_thousand_pieces());
}

/// With gathered pieces, those held when the signal comes are written,
/// logged and recorded before the peer exits.
#[test]
fn sigterm_with_gathered_pieces_records_every_counted_piece() {
    sigterm_and_resume_every_logged_piece(gathered_pieces());
}

/// Stops a downloading peer with SIGTERM and restarts it: every piece it
/// logged as downloaded before the stop was recorded durably.
fn sigterm_and_resume_every_logged_piece(spec: Spec) {
    let mut swarm = Swarm::without_meta(spec);
    let logged = interrupt_mid_download(&mut swarm, "-TERM", false);
    let (resumed, _) = restart_and_finish(&mut swarm);
    assert_eq!(resumed, logged);
}

#[test]
fn a_seed_that_does_not_match_the_metadata_refuses_to_start() {
    let swarm = Swarm::new(Spec::new(2, 100_000, 4096));
    let mut bytes = swarm.content.clone();
    bytes[5 * 4096 + 1] ^= 1;
    std::fs::write(swarm.file_of(1001), bytes).unwrap();
    swarm.expect_refusal(
        1001,
        2,
        "does not match its metadata: 1 of 25 pieces differ (first: 5)",
    );
}

#[test]
fn a_seed_on_its_unchanged_checked_file_is_not_hashed_again() {
    let mut swarm = Swarm::without_meta(Spec::new(2, 100_000, 4096));
    // The file was written this very instant: making the metadata waits
    // out the racy margin and records the check all the same.
    swarm.write_meta();
    assert!(p2pft::integrity::checked::path_for(&swarm.file_of(1001)).exists());
    let mut seed = Command::new(PEER_PROCESS);
    seed.env("P2PFT_LOG", "info");
    swarm.start_with(seed, 1001);
    swarm.start(1002);
    swarm.finish_and_check(LIMIT);
    let said = swarm.stderr_text(1001);
    assert!(said.contains("not hashed again"), "{said}");
    assert!(!said.contains("checked the seed's file"), "{said}");

    // Once written, the file is hashed again, and the damage found.
    let mut bytes = swarm.content.clone();
    bytes[7 * 4096] ^= 1;
    std::fs::write(swarm.file_of(1001), bytes).unwrap();
    swarm.expect_refusal(1001, 2, "1 of 25 pieces differ (first: 7)");
}

#[test]
fn metadata_that_disagrees_with_common_cfg_is_refused() {
    let swarm = Swarm::new(Spec::new(2, 100_000, 4096));
    let text = std::fs::read_to_string(swarm.path().join("Common.cfg")).unwrap();
    swarm.write_common(&text.replace("PieceSize 4096", "PieceSize 8192"));
    swarm.expect_refusal(
        1002,
        2,
        "PieceSize is 4096 in the metadata but 8192 in Common.cfg",
    );
}

#[test]
fn meta_and_verify_on_the_command_line() {
    let swarm = Swarm::without_meta(Spec::new(2, 100_000, 4096));
    let dir = swarm.path().to_str().unwrap();
    let verify = |id: &str| {
        Command::new(P2PFT)
            .args(["verify", "--peer", id, "--dir", dir])
            .output()
            .unwrap()
    };
    // Before there is metadata, and for a peer that is not listed: what to do.
    for (id, needle) in [
        ("1001", "no metadata at"),
        ("1001", "p2pft meta <file>"),
        ("9999", "peer 9999 is not listed (listed: 1001, 1002)"),
    ] {
        let o = verify(id);
        assert_eq!(o.status.code(), Some(2), "{id}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{needle}: {err}");
    }
    // A piece size with a unit, elsewhere than the default place.
    let other = swarm.path().join("other.meta.json");
    let o = Command::new(P2PFT)
        .args(["meta", swarm.file_of(1001).to_str().unwrap(), "--dir", dir])
        .args(["--piece-size", "8K", "--out", other.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("(13 pieces of 8192 bytes)"), "{out}");
    let o = Command::new(P2PFT)
        .args(["meta", swarm.file_of(1001).to_str().unwrap(), "--dir", dir])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("(25 pieces of 4096 bytes)") && out.contains("MiB/s"),
        "{out}"
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(swarm.meta_path()).unwrap()).unwrap();
    assert_eq!(meta["piece_sha1"].as_array().unwrap().len(), 25);
    assert_eq!(meta["file_size_bytes"], 100_000);

    let o = verify("1001");
    assert_eq!(o.status.code(), Some(0));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("25 of 25 pieces good"), "{out}");
    assert!(out.contains("whole-file SHA-1 matches"), "{out}");

    let mut bytes = swarm.content.clone();
    bytes[17 * 4096] ^= 1;
    bytes[24 * 4096 + 3] ^= 1;
    std::fs::create_dir_all(swarm.path().join("peer_1002")).unwrap();
    std::fs::write(swarm.file_of(1002), bytes).unwrap();
    let o = verify("1002");
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("23 of 25 pieces good"), "{out}");
    assert!(out.contains("missing or bad pieces: 17, 24"), "{out}");
}
