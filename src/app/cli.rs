//! Command-line front end shared by the `p2pft` and `peerProcess` binaries:
//! argument definitions (clap), diagnostics set-up, and each command run to
//! its exit code (the codes themselves: [`crate::app::exit`]). Holds no
//! engine logic.

use crate::app::exit;
use crate::app::report::{self, ReportArgs};
use crate::app::swarm::{self, SwarmArgs};
use crate::runtime::peer::{self, PeerOptions};
use crate::support::process::init_diagnostics;
use crate::support::status::mib;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct PeerArgs {
    /// This peer's ID, as listed in PeerInfo.cfg.
    #[arg(value_name = "PeerID")]
    pub id: u32,
    /// Directory holding Common.cfg, PeerInfo.cfg and `peer_<ID>/`.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Seconds to keep dialling a peer listed above this one, or to wait for one listed below
    /// that left before it had the file, before giving up.
    #[arg(long, default_value_t = crate::runtime::peer::DEFAULT_CONNECT_TIMEOUT_SECS as f64, value_name = "SECS")]
    pub connect_timeout: f64,
    /// Print one JSON status line every 200 ms on stdout (used by `p2pft swarm`).
    #[arg(long)]
    pub status: bool,
    /// Seed the choking and piece-picking RNG, for reproducible runs.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Behave exactly as SPEC.md says: no request pipelining, no early unchoke,
    /// random picks only (the same as `P2pftStrict 1` in Common.cfg).
    #[arg(long)]
    pub strict: bool,
    /// The swarm's secret file (as `P2pftSecretFile` in Common.cfg, which
    /// this overrides): every connection must prove the secret.
    #[arg(long, value_name = "PATH")]
    pub secret_file: Option<PathBuf>,
    /// Piece bytes a second this peer sends to all neighbours together, at
    /// most: K, M, G are KiB/s, MiB/s, GiB/s (overrides P2pftMaxUploadRate).
    #[arg(long, value_name = "RATE", value_parser = crate::protocol::config::parse_rate)]
    pub max_upload_rate: Option<u64>,
    /// Piece bytes a second it receives, at most (overrides P2pftMaxDownloadRate).
    #[arg(long, value_name = "RATE", value_parser = crate::protocol::config::parse_rate)]
    pub max_download_rate: Option<u64>,
    /// Never upload to anyone (the baseline of `bench --hosts`: a swarm
    /// without peer-to-peer). Hidden: a peer that takes and never gives.
    #[arg(long, hide = true)]
    pub leech_only: bool,
}

impl PeerArgs {
    pub fn options(&self) -> PeerOptions {
        PeerOptions {
            dir: self.dir.clone(),
            id: self.id,
            status: self.status,
            connect_timeout: Duration::from_secs_f64(self.connect_timeout.max(0.0)),
            rng_seed: self.seed,
            handle_signals: true,
            strict: self.strict,
            secret_file: self.secret_file.clone(),
            max_upload_rate: self.max_upload_rate,
            max_download_rate: self.max_download_rate,
            leech_only: self.leech_only,
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "p2pft",
    version,
    about = "Peer-to-peer file distribution (P2PFILESHARINGPROJ protocol)"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one peer of the swarm described in the working directory (same as `peerProcess`).
    Peer(PeerArgs),
    /// Start every local peer of PeerInfo.cfg, show progress, check the files, summarise.
    Swarm(crate::app::swarm::SwarmArgs),
    /// Hash a file into metadata (piece and whole-file SHA-1) that peers verify against.
    Meta(MetaArgs),
    /// Check a peer's file against the metadata and report which pieces are good.
    Verify(VerifyArgs),
    /// Benchmark a swarm of peer processes in a temporary directory against this machine's ceilings.
    Bench(crate::app::bench::BenchArgs),
    /// Draw a swarm directory's spec logs as one SVG: pieces over time, delivered rate, who fed whom.
    Report(crate::app::report::ReportArgs),
    /// Simulate a capped swarm of any size in one process (the real protocol core, a modelled network).
    Sim(crate::app::sim::SimArgs),
}

#[derive(Debug, Args)]
pub struct MetaArgs {
    /// The file to describe (usually a seed's `peer_<ID>/<FileName>`).
    pub file: PathBuf,
    /// Bytes a piece (K, M suffixes are powers of 1024); default: PieceSize
    /// of Common.cfg in --dir.
    #[arg(long, value_name = "N", value_parser = crate::protocol::config::parse_size)]
    pub piece_size: Option<u64>,
    /// Directory holding Common.cfg; the metadata is written there.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Where to write the metadata instead of `<dir>/<file name>.meta.json`.
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Check `peer_<ID>/<FileName>` of this peer.
    #[arg(long, value_name = "ID", conflicts_with = "file")]
    pub peer: Option<u32>,
    /// Check this file instead.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Directory holding Common.cfg and the metadata.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
}

/// The `peerProcess` binary: `peerProcess <PeerID>`.
#[derive(Debug, Parser)]
#[command(
    name = "peerProcess",
    version,
    about = "One peer of a P2PFILESHARINGPROJ swarm"
)]
pub(crate) struct PeerProcessCli {
    #[command(flatten)]
    pub peer: PeerArgs,
}

/// Runs a peer and returns the process exit code.
pub(crate) fn run_peer(args: &PeerArgs) -> i32 {
    init_diagnostics(format!("peer {}", args.id));
    if let Err(e) = crate::runtime::sched::batch() {
        log::debug!("cannot run as batch work: {e}");
    }
    match peer::run(&args.options()) {
        Ok(()) => exit::OK,
        Err(e) => {
            log::error!("{e}");
            exit::ExitCode::exit_code(&e)
        }
    }
}

pub fn main_p2pft() -> i32 {
    let cli = Cli::parse();
    match &cli.command {
        Command::Peer(args) => run_peer(args),
        Command::Swarm(args) => run_swarm(args),
        Command::Meta(args) => run_meta(args),
        Command::Verify(args) => run_verify(args),
        Command::Bench(args) => match (args.hosts, args.link_rate) {
            (Some(hosts), Some(rate)) => {
                crate::app::bench_hosts::run_cli(args, hosts as usize, rate)
            }
            _ => crate::app::bench::run_cli(args),
        },
        Command::Report(args) => run_report(args),
        Command::Sim(args) => crate::app::sim::run_cli(args),
    }
}

fn pool() -> rayon::ThreadPool {
    crate::integrity::meta::hashing_pool(0).expect("hashing threads")
}

/// Prints `message` as an error and returns `code`.
fn fail(code: i32, message: impl std::fmt::Display) -> i32 {
    eprintln!("error: {message}");
    code
}

fn run_meta(args: &MetaArgs) -> i32 {
    if let Err(e) = std::fs::metadata(&args.file) {
        return fail(exit::BAD_INPUT, format!("{}: {e}", args.file.display()));
    }
    let max = crate::protocol::config::MAX_PIECE_SIZE_BYTES;
    let piece_size = match args.piece_size {
        Some(n) => match u32::try_from(n).ok().filter(|&n| n <= max) {
            Some(n) => n,
            None => {
                return fail(
                    exit::BAD_INPUT,
                    format!("--piece-size must be at most {max} bytes"),
                )
            }
        },
        None => match crate::protocol::config::Config::load(&args.dir) {
            Ok(c) => {
                let name = args
                    .file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned());
                if name.as_deref() != Some(c.common.file_name.as_str()) {
                    eprintln!(
                        "warning: Common.cfg shares `{}`, not `{}`: peers will refuse this metadata",
                        c.common.file_name,
                        name.unwrap_or_default()
                    );
                }
                c.common.piece_size_bytes
            }
            Err(e) => return fail(exit::BAD_INPUT, format!("{e} (or give --piece-size)")),
        },
    };
    let started = std::time::Instant::now();
    let meta = match crate::integrity::meta::Meta::create(&args.file, piece_size, &pool()) {
        Ok(m) => m,
        Err(e) => return fail(exit::BAD_INPUT, e),
    };
    let secs = started.elapsed().as_secs_f64();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| crate::integrity::meta::default_path(&args.dir, &meta.file_name));
    if let Err(e) = meta.save(&out) {
        return fail(exit::FAILED, e);
    }
    println!(
        "hashed {:.1} MiB ({} pieces of {} bytes) in {:.3} s: {:.0} MiB/s -> {}",
        mib(meta.file_size_bytes),
        meta.piece_sha1.len(),
        meta.piece_size_bytes,
        secs,
        mib(meta.file_size_bytes) / secs.max(1e-9),
        out.display()
    );
    exit::OK
}

/// `3, 17-20, 31`: sorted indices as ranges.
fn ranges(indices: impl Iterator<Item = u32>) -> String {
    let show = |(a, b): (u32, u32)| {
        if a == b {
            a.to_string()
        } else {
            format!("{a}-{b}")
        }
    };
    let mut out: Vec<String> = Vec::new();
    let mut run: Option<(u32, u32)> = None;
    for i in indices {
        run = match run {
            Some((a, b)) if b + 1 == i => Some((a, i)),
            Some(done) => {
                out.push(show(done));
                Some((i, i))
            }
            None => Some((i, i)),
        };
    }
    out.extend(run.map(show));
    out.join(", ")
}

fn run_verify(args: &VerifyArgs) -> i32 {
    let config = crate::protocol::config::Config::load(&args.dir);
    let (file, common) = match (&args.file, args.peer, &config) {
        (Some(f), _, c) => (f.clone(), c.as_ref().ok().map(|c| c.common.clone())),
        (None, Some(id), Ok(c)) => match c.listed(id) {
            Ok(_) => (c.peer_file(id), Some(c.common.clone())),
            Err(e) => return fail(exit::BAD_INPUT, e),
        },
        (None, Some(_), Err(e)) => return fail(exit::BAD_INPUT, e),
        (None, None, _) => {
            return fail(
                exit::BAD_INPUT,
                "say which file to check: --peer ID or --file PATH",
            )
        }
    };
    let name = match (&common, file.file_name()) {
        (Some(c), _) => c.file_name.clone(),
        (None, Some(n)) => n.to_string_lossy().into_owned(),
        (None, None) => return fail(exit::BAD_INPUT, format!("{} is not a file", file.display())),
    };
    let meta_path = crate::integrity::meta::default_path(&args.dir, &name);
    if !meta_path.exists() {
        return fail(
            exit::BAD_INPUT,
            format!(
                "no metadata at {}: make it from a complete copy of the file with `p2pft meta <file> --dir {}`",
                meta_path.display(),
                args.dir.display()
            ),
        );
    }
    let verifier = match crate::integrity::meta::Meta::load(&meta_path)
        .and_then(|m| m.verifier(&meta_path, common.as_ref()))
    {
        Ok(v) => v,
        Err(e) => return fail(exit::BAD_INPUT, e),
    };
    let handle = match std::fs::File::open(&file) {
        Ok(f) => f,
        Err(e) => return fail(exit::FAILED, format!("{}: {e}", file.display())),
    };
    let size = handle.metadata().map(|m| m.len()).unwrap_or(0);
    let started = std::time::Instant::now();
    // The whole-file SHA-1 in the same pass: the file is read once.
    let (good, whole) = crate::integrity::meta::with_whole_file_hash(
        &handle,
        &crate::integrity::meta::never,
        || verifier.check_and_record(&file, &handle, &pool()),
    );
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}: {} of {} pieces good ({:.1} MiB hashed in {:.3} s: {:.0} MiB/s)",
        file.display(),
        good.count(),
        good.len(),
        mib(size),
        secs,
        mib(size) / secs.max(1e-9)
    );
    if size != verifier.layout.file_size_bytes() {
        println!(
            "size is {size} bytes, expected {}",
            verifier.layout.file_size_bytes()
        );
    }
    if good.is_complete() && size == verifier.layout.file_size_bytes() {
        match whole {
            Ok(hash) if hash == verifier.file => {
                println!("all pieces match; whole-file SHA-1 matches");
                exit::OK
            }
            Ok(hash) => {
                println!(
                    "all pieces match, but the whole-file SHA-1 is {}, the metadata says {}",
                    crate::integrity::meta::to_hex(&hash),
                    crate::integrity::meta::to_hex(&verifier.file)
                );
                exit::FAILED
            }
            Err(e) => fail(exit::FAILED, format!("{}: {e}", file.display())),
        }
    } else {
        println!(
            "missing or bad pieces: {}",
            ranges((0..good.len()).filter(|&i| !good.has(i)))
        );
        exit::FAILED
    }
}

/// `p2pft swarm`: returns the exit code (0 all good, 1 a peer failed or time
/// ran out, 2 bad configuration).
pub(crate) fn run_swarm(args: &SwarmArgs) -> i32 {
    crate::support::process::init_diagnostics("swarm".into());
    if let Err(e) = swarm::catch_interrupts() {
        eprintln!("error: cannot catch signals: {e}");
        return 1;
    }
    if args.ssh.clean {
        return swarm::clean_hosts(args);
    }
    match swarm::run(args) {
        Ok(report) => {
            // Everything is over by now: a closed stdout changes nothing.
            crate::support::process::emit(&crate::support::process::render(
                args.json,
                &report,
                swarm::write_table,
            ));
            if let Some(out) = &args.report {
                crate::app::report::write_after_run(&args.dir, out);
            }
            match report.interrupted {
                Some(signal) => exit::signal(signal),
                None if report.ok => exit::OK,
                None => exit::FAILED,
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            if let Some(signal) = swarm::interrupted() {
                eprintln!("stopped by signal {signal} before any peer started");
            }
            swarm::unless_interrupted(exit::ExitCode::exit_code(&e))
        }
    }
}

/// `p2pft report`: 0 when written, 2 for a directory that is no swarm's, 1
/// when reading a log or writing the SVG failed.
pub(crate) fn run_report(args: &ReportArgs) -> i32 {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| report::default_out(&args.dir));
    match report::write(&args.dir, &out) {
        Ok(summary) => {
            crate::support::process::emit(&format!("wrote {}\n{summary}\n", out.display()));
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::ExitCode::exit_code(&e)
        }
    }
}

pub fn main_peer_process() -> i32 {
    run_peer(&PeerProcessCli::parse().peer)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ranges_are_compact() {
        assert_eq!(
            super::ranges([3, 17, 18, 19, 20, 31].into_iter()),
            "3, 17-20, 31"
        );
        assert_eq!(super::ranges(std::iter::empty()), "");
        assert_eq!(super::ranges([0, 1].into_iter()), "0-1");
    }
}
