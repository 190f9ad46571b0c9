//! `p2pft report` and `swarm --report`: the SVG of a real swarm is well-formed
//! XML with a series a peer, and so is the SVG of logs that other
//! implementations wrote (other time stamps, the Python spec peer's lines).

mod common;
use common::{Spec, Swarm, P2PFT};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);

/// The peers that have a series (a polyline with `data-peer`) in the SVG at `path`.
fn series(path: &Path) -> BTreeSet<u32> {
    let svg = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    doc.descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .filter_map(|n| n.attribute("data-peer")?.parse().ok())
        .collect()
}

fn report(args: &[&str]) -> Output {
    Command::new(P2PFT)
        .arg("report")
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_swarm_draws_its_report_with_a_series_for_every_peer() {
    let mut spec = Spec::new(5, 300_000, 8_192);
    spec.seeds[2] = true;
    let swarm = Swarm::new(spec);
    let svg = swarm.path().join("run.svg");
    let out = Command::new(P2PFT)
        .args(["swarm", "--quiet", "--json", "--timeout", "100", "--dir"])
        .arg(swarm.path())
        .arg("--report")
        .arg(&svg)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // The summary is still one JSON object; the report is said on stderr.
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["ok"], true);
    assert!(stderr.contains("report: "), "{stderr}");
    let ids: BTreeSet<u32> = swarm.ids.iter().copied().collect();
    assert_eq!(series(&svg), ids);

    // `p2pft report DIR`: the same picture at the default place.
    let dir = swarm.path().to_str().unwrap();
    let out = report(&[dir]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("swarm-report.svg"), "{stdout}");
    assert!(
        stdout.contains("5 peers (2 seeds, 3 of 3 leechers complete)"),
        "{stdout}"
    );
    assert_eq!(series(&swarm.path().join("swarm-report.svg")), ids);
}

/// Logs as other implementations write them: bracketed second stamps, ISO
/// stamps with a zone, a prefix before the sentence, and junk.
#[test]
fn logs_of_other_implementations_are_drawn() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("Common.cfg"),
        "NumberOfPreferredNeighbors 1\nUnchokingInterval 5\nOptimisticUnchokingInterval 10\nFileName f.dat\nFileSize 2500\nPieceSize 1000\n",
    )
    .unwrap();
    std::fs::write(
        d.join("PeerInfo.cfg"),
        "1001 localhost 6001 1\n1002 localhost 6002 0\n1003 localhost 6003 0\n",
    )
    .unwrap();
    // The seed's log: connections only.
    std::fs::write(
        d.join("log_peer_1001.log"),
        "[2026-12-06 10:00:00] Peer 1001 is connected from Peer 1002.\n",
    )
    .unwrap();
    std::fs::write(
        d.join("log_peer_1002.log"),
        "starting peer 1002\n\
         [2026-12-06 10:00:01] Peer 1002 has downloaded the piece 2 from 1001. Now the number of pieces it has is 1.\n\
         [2026-12-06 10:00:02] Peer 1002 has downloaded the piece 0 from 1001. Now the number of pieces it has is 2.\n\
         [2026-12-06 10:00:03] Peer 1002 has downloaded the piece 1 from 1003. Now the number of pieces it has is 3.\n\
         [2026-12-06 10:00:03] Peer 1002 has downloaded the complete file.\n",
    )
    .unwrap();
    std::fs::write(
        d.join("log_peer_1003.log"),
        "2026-12-06T10:00:01.500Z INFO peer: Peer 1003 has downloaded the piece 1 from 1001. Now the number of pieces it has is 1.\n\
         2026-12-06T10:00:04.250Z INFO peer: Peer 1003 has downloaded the piece 2 from 1002. Now the number of pieces it has is 2.\n\
         2026-12-06T10:00:05.000Z ERROR connection reset\n",
    )
    .unwrap();
    let svg = d.join("x.svg");
    let out = report(&[d.to_str().unwrap(), "--out", svg.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        stdout.contains("3 peers (1 seed, 1 of 2 leechers complete), 3 pieces"),
        "{stdout}"
    );
    assert!(stdout.contains("4.25 s wall"), "{stdout}");
    assert!(stdout.contains("2 log lines not understood"), "{stdout}");
    assert_eq!(series(&svg), BTreeSet::from([1001, 1002, 1003]));
}

/// The independent Python peer (`tests/spec_peer.py`) as two of the
/// leechers: its logs are drawn like ours.
#[test]
fn the_spec_peers_logs_are_drawn() {
    let mut swarm = Swarm::new(Spec::new(4, 200_000, 8_192));
    for (pos, id) in swarm.ids.clone().into_iter().enumerate() {
        if pos == 1 || pos == 3 {
            swarm.start_spec_peer(id, &[]);
        } else {
            swarm.start(id);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    swarm.finish_and_check(LIMIT);
    let svg = swarm.path().join("spec.svg");
    let out = report(&[
        swarm.path().to_str().unwrap(),
        "--out",
        svg.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(stdout.contains("3 of 3 leechers complete"), "{stdout}");
    assert!(!stdout.contains("not understood"), "{stdout}");
    assert_eq!(series(&svg), swarm.ids.iter().copied().collect());
}

#[test]
fn a_directory_that_is_no_swarm_is_refused_with_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = report(&[d]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("Common.cfg"),
        "{}",
        text(&out.stderr)
    );
    // Configs but no logs yet.
    let swarm = Swarm::new(Spec::new(2, 1_000, 1_000));
    let out = report(&[swarm.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no log_peer_"),
        "{}",
        text(&out.stderr)
    );
    assert!(!swarm.path().join("swarm-report.svg").exists());
}
