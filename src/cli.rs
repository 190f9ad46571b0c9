//! Command-line front end shared by the `p2pft` and `peerProcess` binaries:
//! argument definitions (clap), diagnostics set-up, and the mapping of
//! outcomes to exit codes (0 done, 1 failed while running, 2 bad input).
//! Holds no engine logic.

use crate::peer::{self, PeerOptions};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct PeerArgs {
    /// This peer's ID, as listed in PeerInfo.cfg.
    #[arg(value_name = "PeerID")]
    pub id: u32,
    /// Directory holding Common.cfg, PeerInfo.cfg and peer_<ID>/.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Seconds to keep dialling a peer listed above this one before giving up.
    #[arg(long, default_value_t = 120.0, value_name = "SECS")]
    pub connect_timeout: f64,
    /// Print one JSON status line every 200 ms on stdout (used by `p2pft swarm`).
    #[arg(long)]
    pub status: bool,
    /// Seed the choking and piece-picking RNG, for reproducible runs.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
}

impl PeerArgs {
    pub fn options(&self) -> PeerOptions {
        PeerOptions {
            dir: self.dir.clone(),
            id: self.id,
            status: self.status,
            connect_timeout: Duration::from_secs_f64(self.connect_timeout.max(0.0)),
            rng_seed: self.seed,
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "p2pft",
    version,
    about = "Peer-to-peer file distribution (P2PFILESHARINGPROJ protocol)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one peer of the swarm described in the working directory (same as `peerProcess`).
    Peer(PeerArgs),
    /// Start every local peer of PeerInfo.cfg, show progress, check the files, summarise.
    Swarm(crate::swarm::SwarmArgs),
}

/// The `peerProcess` binary: `peerProcess <PeerID>`.
#[derive(Debug, Parser)]
#[command(
    name = "peerProcess",
    version,
    about = "One peer of a P2PFILESHARINGPROJ swarm"
)]
pub struct PeerProcessCli {
    #[command(flatten)]
    pub peer: PeerArgs,
}

/// Diagnostics (not the spec log) go to stderr, prefixed so they cannot be
/// mistaken for spec lines. `P2PFT_LOG=debug` shows more.
pub fn init_diagnostics(prefix: String) {
    let level = std::env::var("P2PFT_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(log::LevelFilter::Warn);
    let _ = fern::Dispatch::new()
        .format(move |out, message, record| {
            out.finish(format_args!(
                "{prefix}: {}: {message}",
                record.level().as_str().to_lowercase()
            ))
        })
        .level(level)
        .chain(std::io::stderr())
        .apply();
}

/// Runs a peer and returns the process exit code.
pub fn run_peer(args: &PeerArgs) -> i32 {
    init_diagnostics(format!("peer {}", args.id));
    match peer::run(&args.options()) {
        Ok(()) => 0,
        Err(e) => {
            log::error!("{e}");
            e.exit_code()
        }
    }
}

pub fn main_p2pft() -> i32 {
    let cli = Cli::parse();
    match &cli.command {
        Command::Peer(args) => run_peer(args),
        Command::Swarm(args) => crate::swarm::run_cli(args),
    }
}

pub fn main_peer_process() -> i32 {
    run_peer(&PeerProcessCli::parse().peer)
}
