//! `p2pft sim` as a user runs it: the figures of `bench --hosts` for a
//! simulated swarm, as a table or JSON, its picture as a well-formed SVG with
//! a series a peer, the scenarios (a host leaving, a slow host), and bad
//! options refused with exit 2. No network, no root.

mod common;
use common::P2PFT;
use std::collections::BTreeSet;
use std::process::{Command, Output};

fn sim(args: &[&str]) -> Output {
    Command::new(P2PFT).arg("sim").args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON record")
}

#[test]
fn a_simulated_swarm_prints_the_bench_figures_and_draws_itself() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("sim.svg");
    let out = sim(&[
        "--hosts",
        "12",
        "--link-rate",
        "4M",
        "--file-size",
        "8M",
        "--json",
        "--report",
        svg.to_str().unwrap(),
    ]);
    let r = json(&out);
    assert_eq!(r["ok"], true);
    assert_eq!(r["hosts"], 12);
    let swarm = &r["swarm"];
    let (median, last) = (
        swarm["efficiency_median"].as_f64().unwrap(),
        swarm["efficiency_last"].as_f64().unwrap(),
    );
    // No host beats its own link (less frame headers), and the last is last.
    assert!(0.0 < last && last <= median && median < 0.97, "{swarm}");
    // 32 pieces to 11 leechers: the 6th gets a first piece in round 3 at
    // the earliest, the 11th in round 4.
    assert_eq!(r["bound"]["median"].as_f64().unwrap(), 32.0 / 34.0);
    assert_eq!(r["bound"]["last"].as_f64().unwrap(), 32.0 / 35.0);
    let hosts = swarm["per_host"].as_array().unwrap();
    assert_eq!(hosts.len(), 12);
    // Every leecher received the whole file (a few pieces twice: answers
    // to requests given up after a choke still come), and every byte came
    // from a host.
    let file = 8u64 << 20;
    let received: u64 = hosts.iter().map(|h| h["bytes_in"].as_u64().unwrap()).sum();
    let sent: u64 = hosts.iter().map(|h| h["bytes_out"].as_u64().unwrap()).sum();
    assert!(
        (11 * file..=11 * file * 11 / 10).contains(&received),
        "{received}"
    );
    assert_eq!(sent, received);
    // Peer-to-peer: the seed sent far fewer than 11 copies, and the
    // baseline of the same run, the seed alone, sent 11 (and some pieces
    // twice: it chokes leechers in turn, and what its uplink queue and the
    // windows hold still goes).
    let copies = swarm["copies_from_seeds"].as_f64().unwrap();
    assert!((1.0..5.0).contains(&copies), "{copies}");
    let alone = r["baseline"]["copies_from_seeds"].as_f64().unwrap();
    assert!((11.0..12.0).contains(&alone), "{alone}");
    assert!(r["gain"].as_f64().unwrap() > 2.0, "{r}");

    let doc = std::fs::read_to_string(&svg).unwrap();
    // Its subtitle says the lines were simulated, not read from logs.
    assert!(doc.contains("from the simulated peers"));
    let doc = roxmltree::Document::parse(&doc).expect("well-formed SVG");
    let series: BTreeSet<u32> = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .filter_map(|n| n.attribute("data-peer")?.parse().ok())
        .collect();
    assert_eq!(series, (1001..=1012).collect());
}

#[test]
fn the_table_says_what_was_simulated_and_how_long_it_took() {
    let out = sim(&[
        "--hosts",
        "8",
        "--link-rate",
        "8M",
        "--file-size",
        "4M",
        "--no-baseline",
        "--leave",
        "1@0.2",
        "--slow",
        "1@2M",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    for expected in [
        "simulated hosts: 8 (1 seed), links capped at 8.00 MiB/s",
        "1 left mid-run (not counted)",
        "1 slow host (not counted), efficiency against their own link",
        "leecher uplinks: busy",
        "s of swarm time in",
        "result: OK",
    ] {
        assert!(stdout.contains(expected), "{expected:?} in {stdout}");
    }
}

#[test]
fn the_same_seed_gives_the_same_run_and_another_seed_another() {
    let run = |seed: &str| {
        let r = json(&sim(&[
            "--hosts",
            "10",
            "--link-rate",
            "4M",
            "--file-size",
            "4M",
            "--no-baseline",
            "--json",
            "--seed",
            seed,
        ]));
        r["swarm"]["per_host"].to_string()
    };
    assert_eq!(run("3"), run("3"));
    assert_ne!(run("3"), run("4"));
}

#[test]
fn bad_options_exit_2() {
    for args in [
        &["--hosts", "4", "--link-rate", "4M", "--seeds", "4"][..],
        &["--hosts", "4", "--link-rate", "4M", "--leave", "4@1"],
        &["--hosts", "4", "--link-rate", "4M", "--piece-size", "0"],
        &["--hosts", "4", "--link-rate", "4x"],
        &["--hosts", "4", "--link-rate", "4M", "--slow", "1"],
    ] {
        let out = sim(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(text(&out.stderr).contains("error"), "{args:?}");
    }
}
