//! Rate caps (`P2pftMaxUploadRate`, `P2pftMaxDownloadRate`) hold over a
//! whole run, judged from outside: from the spec logs' time stamps and the
//! pieces the leechers say they got. Only upper bounds are asserted: a cap
//! may never be exceeded, however slow the machine.

mod common;
use common::{Spec, Swarm};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);
const PIECE: u32 = 64 * 1024;
/// The credit an idle cap builds up (`rate_limit::BURST`), in seconds.
const BURST_SECS: f64 = 0.05;

fn with_key(swarm: &Swarm, line: &str) {
    let path = swarm.path().join("Common.cfg");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(line);
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

/// Seconds since the epoch of a spec-log line's time stamp
/// (`YYYY-MM-DD HH:MM:SS.mmm: `), local time: only differences matter.
fn stamp(line: &str) -> f64 {
    let t = chrono::NaiveDateTime::parse_from_str(&line[..23], "%Y-%m-%d %H:%M:%S%.3f").unwrap();
    t.and_utc().timestamp_millis() as f64 / 1000.0
}

/// (time stamp, from) of every piece `id` logged as downloaded.
fn downloads(swarm: &Swarm, id: u32) -> Vec<(f64, u32)> {
    std::fs::read_to_string(swarm.log_of(id))
        .unwrap()
        .lines()
        .filter(|l| l.contains("has downloaded the piece"))
        .map(|l| {
            let from = l.split(" from ").nth(1).unwrap();
            let from: u32 = from.split('.').next().unwrap().parse().unwrap();
            (stamp(l), from)
        })
        .collect()
}

#[test]
fn an_upload_cap_bounds_what_the_seed_sends_to_all_together() {
    // Two leechers share the seed's 1 MiB/s; they may trade with each other.
    let rate = 1024.0 * 1024.0;
    let mut swarm = Swarm::new(Spec::new(3, 3 << 20, PIECE));
    with_key(&swarm, "P2pftMaxUploadRate 1M");
    swarm.start_all();
    swarm.finish_and_check(LIMIT);
    let mut from_seed: Vec<f64> = [1002, 1003]
        .iter()
        .flat_map(|&id| downloads(&swarm, id))
        .filter(|&(_, from)| from == 1001)
        .map(|(t, _)| t)
        .collect();
    from_seed.sort_by(f64::total_cmp);
    let (first, last) = (from_seed[0], *from_seed.last().unwrap());
    // Every piece after the first came within the cap: n pieces take at
    // least (n - burst) / rate seconds to pass.
    let bytes = (from_seed.len() - 1) as f64 * f64::from(PIECE);
    let allowed = rate * (last - first + BURST_SECS) + f64::from(PIECE);
    eprintln!(
        "seed sent {} pieces in {:.2} s: {:.2} MiB/s under a cap of 1 MiB/s",
        from_seed.len(),
        last - first,
        bytes / (last - first).max(1e-3) / rate
    );
    assert!(
        bytes <= allowed,
        "the seed sent {bytes} bytes in {:.3} s, more than its cap allows ({allowed})",
        last - first
    );
}

#[test]
fn a_download_cap_bounds_what_a_leecher_receives() {
    let rate = 2.0 * 1024.0 * 1024.0;
    let mut swarm = Swarm::new(Spec::new(2, 4 << 20, PIECE));
    with_key(&swarm, "P2pftMaxDownloadRate 2M");
    swarm.start_all();
    swarm.finish_and_check(LIMIT);
    let got = downloads(&swarm, 1002);
    let (first, last) = (got[0].0, got.last().unwrap().0);
    let bytes = (got.len() - 1) as f64 * f64::from(PIECE);
    // A reader may hold two pieces it read together before it waits.
    let allowed = rate * (last - first + BURST_SECS) + 2.0 * f64::from(PIECE);
    eprintln!(
        "1002 received {} pieces in {:.2} s: {:.2} MiB/s under a cap of 2 MiB/s",
        got.len(),
        last - first,
        bytes / (last - first).max(1e-3) / (1024.0 * 1024.0)
    );
    assert!(
        bytes <= allowed,
        "1002 received {bytes} bytes in {:.3} s, more than its cap allows ({allowed})",
        last - first
    );
}

#[test]
fn a_rate_in_bits_is_refused_with_the_reason() {
    let swarm = Swarm::new(Spec::new(2, 1 << 20, PIECE));
    with_key(&swarm, "P2pftMaxUploadRate 100Mbit");
    swarm.expect_refusal(1001, 2, "not bits");
}
