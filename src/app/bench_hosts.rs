//! `p2pft bench --hosts N --link-rate RATE`: the swarm as it runs across
//! machines whose network cards cap it. Each peer runs on a host of its own
//! ([`crate::app::netns`]), each host's link capped at RATE both ways. A run
//! measures one TCP stream through two capped links, runs the swarm, then
//! (unless `--no-baseline`) runs it again with leechers that serve nobody,
//! the same file from the seeds alone: the swarm's gain is the ratio of the
//! two, measured side by side.
//!
//! Efficiency of a peer: the time its link needs for the file
//! (FileSize / RATE) over the time it took, from the launcher's start to the
//! peer's verified completion. Owns this arithmetic and the hosts' set-up;
//! never changes how a peer works beyond `--leech-only` in the baseline.

use crate::app::bench::{
    begin, clear_leechers, doing, each_run, go_on, median, phase, report_path, setup, swarm_args,
    write_spread, write_summary_head, BenchArgs, BenchError, CapBy, ShapeRecord,
};
use crate::app::netns::{host_addr, Lan};
use crate::app::swarm::{self, Placement, SwarmArgs, SwarmReport};
use crate::support::status::{mib, MIB};
use serde::Serialize;
use std::path::Path;

/// The port every peer listens on: each host has its own.
const PORT: u16 = 6008;

/// How long the TCP stream through the caps is measured, seconds.
const STREAM_SECS: f64 = 2.0;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct HostFigures {
    pub id: u32,
    pub seed: bool,
    pub complete_after_secs: Option<f64>,
    /// (FileSize / RATE) / complete_after_secs.
    pub efficiency: Option<f64>,
    /// Piece bytes sent and received, as the peer counted them.
    pub bytes_out: u64,
    pub bytes_in: u64,
    /// Bytes its link carried up, as its `tbf` counted them (headers and
    /// every message included).
    pub link_sent_bytes: Option<u64>,
    pub cpu_secs: f64,
}

/// One swarm of a run: peer-to-peer, or the baseline.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SwarmFigures {
    pub ok: bool,
    /// The last leecher's completion, from the launcher's start.
    pub wall_secs: f64,
    pub efficiency_median: f64,
    /// The last host's efficiency: the least.
    pub efficiency_last: f64,
    /// Piece bytes the seeds sent, over what their links could carry in
    /// the wall time.
    pub seed_upload_use: f64,
    /// Copies of the file the seeds sent (piece bytes over FileSize).
    pub copies_from_seeds: f64,
    pub per_host: Vec<HostFigures>,
    /// Where this machine's CPUs spent the swarm's run (`/proc/stat`); none
    /// in a simulation.
    pub cpu: Option<CpuUse>,
}

/// Shares of all CPUs' time over an interval, from `/proc/stat`'s first
/// line: user (and nice), system (and hardware interrupts), softirq (the
/// kernel's network path, much of it), idle (and iowait), and steal.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct CpuUse {
    pub user: f64,
    pub system: f64,
    pub softirq: f64,
    pub idle: f64,
    pub steal: f64,
}

/// `/proc/stat`'s `cpu` line: its first eight counters.
fn cpu_times() -> Option<[u64; 8]> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    parse_cpu_line(text.lines().next()?)
}

fn parse_cpu_line(line: &str) -> Option<[u64; 8]> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let mut t = [0u64; 8];
    for v in &mut t {
        *v = fields.next()?.parse().ok()?;
    }
    Some(t)
}

/// The shares between two readings of [`cpu_times`].
fn cpu_use(before: [u64; 8], after: [u64; 8]) -> Option<CpuUse> {
    let d: [f64; 8] = std::array::from_fn(|i| after[i].saturating_sub(before[i]) as f64);
    let total: f64 = d.iter().sum();
    if total <= 0.0 {
        return None;
    }
    // user nice system idle iowait irq softirq steal
    Some(CpuUse {
        user: (d[0] + d[1]) / total,
        system: (d[2] + d[5]) / total,
        softirq: d[6] / total,
        idle: (d[3] + d[4]) / total,
        steal: d[7] / total,
    })
}

/// Below this idle share the CPUs, not the links, set a swarm's pace.
const CPU_BOUND_IDLE: f64 = 0.05;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct HostsRecord {
    pub ok: bool,
    pub hosts: usize,
    #[serde(flatten)]
    pub shape: ShapeRecord,
    pub link_rate_bytes_per_sec: u64,
    /// `tbf` on the links, or the peers' own caps (`config`).
    pub cap_by: CapBy,
    /// The links' MTU, bytes a frame, as the first host's kernel has it
    /// (0 if it could not be read).
    pub mtu: u32,
    /// One TCP stream from the first host to the second, through both caps
    /// (with `config`, through uncapped links: what the caps hold back).
    pub one_stream_bytes_per_sec: f64,
    pub one_stream_to_rate: f64,
    /// FileSize / RATE: the time one link needs for the file.
    pub ideal_secs: f64,
    /// The best any schedule of whole pieces allows, before the stream's
    /// loss ([`whole_piece_bound`]).
    pub bound: WholePieceBound,
    pub swarm: SwarmFigures,
    /// The same hosts, leechers serving nobody.
    pub baseline: Option<SwarmFigures>,
    /// Baseline wall over swarm wall.
    pub gain: Option<f64>,
}

/// The figures of one swarm; `sent_before`/`sent_after` are the links'
/// `tbf` counters around it.
fn figures(
    report: &SwarmReport,
    file_size: u64,
    rate: u64,
    sent_before: &[Option<u64>],
    sent_after: &[Option<u64>],
) -> SwarmFigures {
    let ideal = file_size as f64 / rate as f64;
    let per_host: Vec<HostFigures> = report
        .peers
        .iter()
        .enumerate()
        .map(|(i, p)| HostFigures {
            id: p.id,
            seed: p.seed,
            complete_after_secs: p.complete_after_secs,
            efficiency: p
                .complete_after_secs
                .filter(|_| !p.seed)
                .map(|t| ideal / t.max(1e-9)),
            bytes_out: p.bytes_out,
            bytes_in: p.bytes_in,
            link_sent_bytes: match (sent_before.get(i), sent_after.get(i)) {
                (Some(Some(a)), Some(Some(b))) => Some(b.saturating_sub(*a)),
                _ => None,
            },
            cpu_secs: p.cpu_secs,
        })
        .collect();
    let leechers: Vec<bool> = per_host.iter().map(|h| !h.seed).collect();
    summarise(
        per_host,
        &leechers,
        report.ok,
        report.wall_secs,
        file_size,
        rate,
    )
}

/// A swarm's figures from its hosts': efficiency median and last over the
/// `counted` leechers (one that never completed counts as 0), the wall to
/// the last of them (`wall_if_failed` unless `ok`), the seeds' upload use
/// at `rate` and the copies of the file they sent.
pub(crate) fn summarise(
    per_host: Vec<HostFigures>,
    counted: &[bool],
    ok: bool,
    wall_if_failed: f64,
    file_size: u64,
    rate: u64,
) -> SwarmFigures {
    let leechers: Vec<&HostFigures> = per_host
        .iter()
        .zip(counted)
        .filter(|(_, &c)| c)
        .map(|(h, _)| h)
        .collect();
    let efficiencies: Vec<f64> = leechers
        .iter()
        .map(|h| h.efficiency.unwrap_or(0.0))
        .collect();
    let wall = match ok {
        true => leechers
            .iter()
            .filter_map(|h| h.complete_after_secs)
            .fold(0.0, f64::max),
        false => wall_if_failed,
    };
    let seeds = per_host.iter().filter(|h| h.seed).count().max(1);
    let seed_sent: u64 = per_host
        .iter()
        .filter(|h| h.seed)
        .map(|h| h.bytes_out)
        .sum();
    SwarmFigures {
        ok,
        wall_secs: wall,
        efficiency_median: median(efficiencies.clone()),
        efficiency_last: efficiencies.iter().copied().fold(f64::INFINITY, f64::min),
        seed_upload_use: seed_sent as f64 / (seeds as f64 * rate as f64 * wall.max(1e-9)),
        copies_from_seeds: seed_sent as f64 / file_size as f64,
        per_host,
        cpu: None,
    }
}

/// The best efficiency any schedule of whole pieces allows, median and last
/// leecher, as fractions of one link's time for the file (before what one
/// stream loses to headers). Each host sends one piece at a time and takes
/// one at a time, a piece time each, and passes a piece on only once it has
/// all of it: the hosts holding anything at most double each piece time, so
/// the i-th leecher to get a first piece gets it in round r, the least with
/// seeds x (2^r - 1) >= i, and has the file in round r + pieces - 1 at the
/// earliest. The binomial pipeline (Ganesan and Seshadri, "On cooperative
/// content distribution and the price of barter", 2005) reaches it.
pub(crate) fn whole_piece_bound(pieces: u32, leechers: usize, seeds: usize) -> WholePieceBound {
    let first_round = |i: usize| {
        let mut r = 1u32;
        while (seeds.max(1) as u128) * ((1u128 << r) - 1) < i as u128 {
            r += 1;
        }
        r
    };
    let at = |i: usize| f64::from(pieces) / f64::from(first_round(i) + pieces - 1);
    WholePieceBound {
        median: at(leechers.div_ceil(2).max(1)),
        last: at(leechers.max(1)),
    }
}

/// See [`whole_piece_bound`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct WholePieceBound {
    pub median: f64,
    pub last: f64,
}

/// The line that puts a swarm's efficiency beside [`whole_piece_bound`],
/// scaled by what one stream gets of the link.
pub(crate) fn write_bound(
    out: &mut impl std::fmt::Write,
    bound: WholePieceBound,
    stream: f64,
) -> std::fmt::Result {
    writeln!(
        out,
        "{:<9} best any schedule of whole pieces allows: median {:.2}, last host {:.2} (one piece a link at a time, {:.2} of the rate a stream)",
        "bound",
        bound.median * stream,
        bound.last * stream,
        stream
    )
}

/// Rewrites PeerInfo.cfg: peer `i` on host `i`, every one on [`PORT`].
fn place_peers(args: &BenchArgs, dir: &Path) -> Result<(), BenchError> {
    let info: String = (0..args.peers)
        .map(|i| {
            format!(
                "{} {} {PORT} {}\n",
                1001 + i,
                host_addr(i),
                u8::from(i < args.shape.seeds)
            )
        })
        .collect();
    std::fs::write(dir.join("PeerInfo.cfg"), info).map_err(doing("writing PeerInfo.cfg"))
}

/// Runs the swarm once on `lan`; leechers serve nobody when `baseline`.
fn run_swarm(
    args: &BenchArgs,
    dir: &Path,
    lan: &Lan,
    rate: u64,
    baseline: bool,
) -> Result<SwarmFigures, BenchError> {
    clear_leechers(args, dir).map_err(doing("clearing the last run"))?;
    let placed = (0..args.peers)
        .map(|i| {
            let args = match baseline && i >= args.shape.seeds {
                true => vec!["--leech-only".into()],
                false => Vec::new(),
            };
            let placement = Placement {
                netns: lan.host(i).to_string(),
                args,
            };
            (1001 + i as u32, placement)
        })
        .collect();
    let before = lan.sent_bytes();
    let cpu_before = cpu_times();
    let report = swarm::run(&SwarmArgs {
        quiet_peers: baseline,
        ..swarm_args(args, dir, placed)
    })?;
    let cpu_after = cpu_times();
    let after = lan.sent_bytes();
    go_on()?;
    let mut figures = figures(&report, args.shape.file_size, rate, &before, &after);
    figures.cpu = cpu_before.zip(cpu_after).and_then(|(b, a)| cpu_use(b, a));
    Ok(figures)
}

fn run_once(
    args: &BenchArgs,
    dir: &Path,
    lan: &Lan,
    rate: u64,
    run: u32,
) -> Result<HostsRecord, BenchError> {
    phase(format_args!(
        "one TCP stream through two links capped at {:.1} MiB/s",
        rate as f64 / MIB
    ));
    let stream = lan.one_stream(0, 1, STREAM_SECS)?;
    go_on()?;
    let ideal = args.shape.file_size as f64 / rate as f64;
    phase(format_args!(
        "the swarm: {} hosts, {:.0} MiB to each of {} leechers (one link needs {ideal:.1} s)",
        args.peers,
        mib(args.shape.file_size),
        args.peers - args.shape.seeds
    ));
    let swarm = run_swarm(args, dir, lan, rate, false)?;
    if let Some(out) = &args.report {
        crate::app::report::write_after_run(dir, &report_path(out, run, args.runs));
    }
    let baseline = match args.no_baseline {
        true => None,
        false => {
            phase(format_args!(
                "the baseline: leechers that serve nobody (about {:.0} s)",
                ideal * (args.peers - args.shape.seeds) as f64 / args.shape.seeds as f64
            ));
            Some(run_swarm(args, dir, lan, rate, true)?)
        }
    };
    let common = crate::protocol::config::Config::load(dir)
        .map_err(BenchError::Options)?
        .common;
    Ok(HostsRecord {
        ok: swarm.ok && baseline.as_ref().is_none_or(|b| b.ok),
        hosts: args.peers,
        shape: args.shape.record(common.strict),
        link_rate_bytes_per_sec: rate,
        cap_by: args.cap_by,
        mtu: lan.link_mtu(0).unwrap_or(0),
        one_stream_bytes_per_sec: stream,
        one_stream_to_rate: stream / rate as f64,
        ideal_secs: ideal,
        bound: whole_piece_bound(
            common.layout.num_pieces(),
            args.peers - args.shape.seeds,
            args.shape.seeds,
        ),
        gain: baseline
            .as_ref()
            .map(|b| b.wall_secs / swarm.wall_secs.max(1e-9)),
        swarm,
        baseline,
    })
}

pub(crate) fn write_swarm(
    out: &mut impl std::fmt::Write,
    name: &str,
    s: &SwarmFigures,
) -> std::fmt::Result {
    writeln!(
        out,
        "{name:<9} last done {:>8.2} s  efficiency median {:.2}, last host {:.2}  seed upload use {:.2}, {:.2} copies from the seeds{}",
        s.wall_secs,
        s.efficiency_median,
        s.efficiency_last,
        s.seed_upload_use,
        s.copies_from_seeds,
        if s.ok { "" } else { "  FAILED" }
    )
}

/// The table of one run.
fn write_table(out: &mut impl std::fmt::Write, r: &HostsRecord) -> std::fmt::Result {
    writeln!(
        out,
        "hosts: {} ({}), links capped at {:.2} MiB/s both ways ({}), MTU {}; {}, {}",
        r.hosts,
        r.shape.seeds_text(),
        r.link_rate_bytes_per_sec as f64 / MIB,
        match r.cap_by {
            CapBy::Tbf => "tbf",
            CapBy::Config => "by the peers: P2pftMaxUploadRate, P2pftMaxDownloadRate",
        },
        r.mtu,
        r.shape,
        r.shape.mode_text(),
    )?;
    writeln!(
        out,
        "one TCP stream through two {} links: {:.2} MiB/s = {:.2} of the link rate; one link needs {:.2} s for the file",
        match r.cap_by {
            CapBy::Tbf => "capped",
            CapBy::Config => "uncapped",
        },
        r.one_stream_bytes_per_sec / MIB,
        r.one_stream_to_rate,
        r.ideal_secs
    )?;
    let base = r.baseline.as_ref();
    write_hosts(out, &r.swarm, base)?;
    write_swarm(out, "swarm", &r.swarm)?;
    if let Some(c) = r.swarm.cpu {
        writeln!(
            out,
            "{:<9} CPUs meanwhile: user {:.2}, system {:.2}, softirq {:.2}, idle {:.2}{}{}",
            "",
            c.user,
            c.system,
            c.softirq,
            c.idle,
            match c.steal > 0.005 {
                true => format!(", stolen {:.2}", c.steal),
                false => String::new(),
            },
            // The kernel's share is mostly per packet: jumbo frames cut it.
            match (c.idle < CPU_BOUND_IDLE, r.mtu < 9000 && c.softirq >= c.user.max(c.system)) {
                (true, true) => "; none left: this machine, not the links, set the pace (--mtu 9000 sends a sixth of the packets)",
                (true, false) => "; none left: this machine, not the links, set the pace",
                (false, _) => "",
            }
        )?;
    }
    write_bound(out, r.bound, r.one_stream_to_rate.min(1.0))?;
    if let Some(b) = base {
        write_swarm(out, "baseline", b)?;
    }
    write_outcome(
        out,
        r.gain,
        match r.ok {
            true => "OK (every file identical to the seed's)",
            false => "FAILED",
        },
    )
}

/// The last lines of a run: the gain over the baseline, and the result.
pub(crate) fn write_outcome(
    out: &mut impl std::fmt::Write,
    gain: Option<f64>,
    result: &str,
) -> std::fmt::Result {
    if let Some(gain) = gain {
        writeln!(
            out,
            "gain: the swarm finished {gain:.2} times as fast as the seeds alone"
        )?;
    }
    writeln!(out, "result: {result}")
}

/// A row a host: completion, efficiency, bytes sent, link bytes, and its
/// completion in the baseline.
pub(crate) fn write_hosts(
    out: &mut impl std::fmt::Write,
    swarm: &SwarmFigures,
    baseline: Option<&SwarmFigures>,
) -> std::fmt::Result {
    writeln!(
        out,
        "{:>6}  {:>7}  {:>10}  {:>10}  {:>9}  {:>10}  {:>10}",
        "peer", "role", "done s", "efficiency", "sent MiB", "link MiB", "baseline s"
    )?;
    for (i, h) in swarm.per_host.iter().enumerate() {
        let b = baseline.and_then(|b| b.per_host.get(i));
        writeln!(
            out,
            "{:>6}  {:>7}  {:>10}  {:>10}  {:>9.1}  {:>10}  {:>10}",
            h.id,
            if h.seed { "seed" } else { "leecher" },
            h.complete_after_secs
                .filter(|_| !h.seed)
                .map_or("-".into(), |s| format!("{s:.2}")),
            h.efficiency.map_or("-".into(), |e| format!("{e:.2}")),
            mib(h.bytes_out),
            h.link_sent_bytes
                .map_or("-".into(), |b| format!("{:.1}", mib(b))),
            b.and_then(|b| b.complete_after_secs)
                .filter(|_| !h.seed)
                .map_or("-".into(), |s| format!("{s:.2}")),
        )?;
    }
    Ok(())
}

/// Median, least and most of each figure over several runs.
fn write_summary(out: &mut impl std::fmt::Write, records: &[HostsRecord]) -> std::fmt::Result {
    type Figure = dyn Fn(&HostsRecord) -> Option<f64>;
    let ok = records.iter().filter(|r| r.ok).count();
    write_summary_head(out, records.len(), ok)?;
    let spread = |out: &mut _, name, f: &Figure| {
        write_spread(out, name, records.iter().filter_map(f).collect(), "")
    };
    spread(out, "one TCP stream / link rate", &|r| {
        Some(r.one_stream_to_rate)
    })?;
    write_swarm_spread(out, records.iter().map(|r| &r.swarm))?;
    spread(out, "baseline efficiency, last host", &|r| {
        r.baseline.as_ref().map(|b| b.efficiency_last)
    })?;
    spread(out, "gain over the baseline", &|r| r.gain)
}

/// The summary lines of a swarm's figures over several runs.
pub(crate) fn write_swarm_spread<'a>(
    out: &mut impl std::fmt::Write,
    swarms: impl Iterator<Item = &'a SwarmFigures> + Clone,
) -> std::fmt::Result {
    type Figure = dyn Fn(&SwarmFigures) -> f64;
    let rows: [(&str, &Figure); 4] = [
        ("efficiency, median host", &|s| s.efficiency_median),
        ("efficiency, last host", &|s| s.efficiency_last),
        ("seed upload use", &|s| s.seed_upload_use),
        ("copies from the seeds", &|s| s.copies_from_seeds),
    ];
    for (name, f) in rows {
        write_spread(out, name, swarms.clone().map(f).collect(), "")?;
    }
    Ok(())
}

/// `p2pft bench --hosts N --link-rate RATE` (exit codes as `bench`).
pub(crate) fn run_cli(args: &BenchArgs, hosts: usize, rate: u64) -> i32 {
    let args = BenchArgs {
        peers: hosts,
        ..args.clone()
    };
    let mut scratch = match begin(&args) {
        Ok(scratch) => scratch,
        Err(code) => return code,
    };
    let dir = scratch.dir.clone();
    phase(format_args!(
        "making {hosts} hosts of network namespaces, links capped at {:.2} MiB/s",
        rate as f64 / MIB
    ));
    // Made before the files: without root, nothing is written.
    let tbf = (args.cap_by == CapBy::Tbf).then_some(rate);
    let lan = match Lan::new(hosts, tbf, args.mtu) {
        Ok(lan) => lan,
        Err(e) => {
            eprintln!("error: {e}");
            return swarm::unless_interrupted(crate::app::exit::FAILED);
        }
    };
    phase(format_args!(
        "making the seed's {:.0} MiB file in {}",
        mib(args.shape.file_size),
        dir.display()
    ));
    if let Err(e) = setup(&args, &dir).and_then(|()| place_peers(&args, &dir)) {
        eprintln!("error: {e}");
        return swarm::unless_interrupted(crate::app::exit::BAD_INPUT);
    }
    scratch.keep = args.keep;
    let code = each_run(
        args.runs,
        args.json,
        crate::app::exit::FAILED,
        |run| run_once(&args, &dir, &lan, rate, run),
        |r| r.ok,
        write_table,
        write_summary,
    );
    if scratch.keep {
        eprintln!("swarm directory kept: {}", dir.display());
    }
    drop(lan);
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::swarm::{FileCheck, PeerReport};

    fn peer(id: u32, seed: bool, done: Option<f64>, out: u64) -> PeerReport {
        PeerReport {
            id,
            host: String::new(),
            seed,
            ssh: false,
            local: true,
            started: true,
            exit_code: Some(0),
            complete_after_secs: done,
            bytes_in: 0,
            bytes_out: out,
            file_ok: true,
            file_check: FileCheck::SameAsSeed,
            stderr_tail: Vec::new(),
            cpu_secs: 0.0,
            peak_rss_kb: 0,
            threads: 0,
            violations: 0,
        }
    }

    #[test]
    fn cpu_shares_come_from_two_proc_stat_readings() {
        let before = parse_cpu_line("cpu  100 0 200 1000 0 0 50 0 0 0").unwrap();
        let after = parse_cpu_line("cpu  116 0 228 1000 0 0 105 1 0 0").unwrap();
        let c = cpu_use(before, after).unwrap();
        assert_eq!(
            (c.user, c.system, c.softirq, c.idle, c.steal),
            (0.16, 0.28, 0.55, 0.0, 0.01)
        );
        assert!(parse_cpu_line("cpu0 1 2 3 4 5 6 7 8").is_none());
        assert!(parse_cpu_line("cpu 1 2 3").is_none());
        assert!(cpu_use(before, before).is_none());
    }

    #[test]
    fn the_whole_piece_bound_is_the_pieces_over_the_rounds_of_the_binomial_pipeline() {
        let b = whole_piece_bound(96, 31, 1);
        // 31 leechers: the last and the 16th get a first piece in round 5.
        assert_eq!(b.last, 96.0 / 100.0);
        assert_eq!(b.median, 96.0 / 100.0);
        let b = whole_piece_bound(192, 15, 1);
        assert_eq!((b.median, b.last), (192.0 / 195.0, 192.0 / 195.0));
        // 7 leechers: the 4th is reached in round 3, the 7th too (2^3 - 1).
        assert_eq!(whole_piece_bound(1024, 7, 1).last, 1024.0 / 1026.0);
        // Three leechers: one in round 1, two more in round 2.
        let b = whole_piece_bound(10, 3, 1);
        assert_eq!((b.median, b.last), (10.0 / 11.0, 10.0 / 11.0));
        let b = whole_piece_bound(10, 4, 1);
        assert_eq!((b.median, b.last), (10.0 / 11.0, 10.0 / 12.0));
        // Two seeds reach six leechers in two rounds.
        assert_eq!(whole_piece_bound(10, 6, 2).last, 10.0 / 11.0);
        // One leecher: the link rate.
        assert_eq!(whole_piece_bound(5, 1, 1).last, 1.0);
    }

    #[test]
    fn efficiency_is_one_links_time_over_each_hosts_time() {
        let mib = 1 << 20;
        let report = SwarmReport {
            ok: true,
            timed_out: false,
            interrupted: None,
            wall_secs: 9.0,
            file_size_bytes: 8 * mib,
            peers: vec![
                peer(1001, true, Some(0.0), 12 * mib),
                peer(1002, false, Some(2.0), 4 * mib),
                peer(1003, false, Some(4.0), 4 * mib),
                peer(1004, false, Some(8.0), 0),
            ],
            launch: None,
            lost: Vec::new(),
        };
        // 8 MiB at 4 MiB/s: 2 s.
        let f = figures(&report, 8 * mib, 4 * mib, &[Some(0); 4], &[Some(100); 4]);
        let e: Vec<Option<f64>> = f.per_host.iter().map(|h| h.efficiency).collect();
        assert_eq!(e, [None, Some(1.0), Some(0.5), Some(0.25)]);
        assert_eq!(f.efficiency_median, 0.5);
        assert_eq!(f.efficiency_last, 0.25);
        assert_eq!(f.wall_secs, 8.0);
        assert_eq!(f.copies_from_seeds, 1.5);
        // 12 MiB sent where 8 s at 4 MiB/s could carry 32.
        assert_eq!(f.seed_upload_use, 12.0 / 32.0);
        assert_eq!(f.per_host[0].link_sent_bytes, Some(100));
    }
}
