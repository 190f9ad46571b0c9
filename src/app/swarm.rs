//! `p2pft swarm`: start every local peer of a PeerInfo.cfg as a child process,
//! in file order and each once the previous one listens; show live progress;
//! wait (bounded); check every peer's file against the seed's; summarise.
//!
//! Owns the children (killed by PID on failure or timeout, never by name) and
//! the preparation of a fresh run. Talks to peers only through their `--status`
//! JSON lines and exit codes; never speaks the wire protocol itself.
//!
//! Stopping: each peer runs in a process group of its own, so a terminal's
//! Ctrl-C reaches the launcher alone, and the launcher passes the first
//! SIGINT, SIGTERM or SIGHUP it catches ([`catch_interrupts`]) on to every
//! peer still running, by PID, exactly once: the peers stop cleanly (their
//! progress recorded) and the launcher reports and exits with 128 + the
//! signal. A second signal ends the launcher at once. A peer whose launcher
//! is gone however it went (even `kill -9`) finds its status pipe closed and
//! stops cleanly by itself (see `peer`).
//!
//! Sharing a directory: a launcher holds each local peer's `peer_<ID>/`
//! (`flock`) for its whole run and checks that no local peer's port is
//! taken, both before it removes or starts anything; it never removes the
//! files of a peer that another launcher, or a hand-started process, runs.

use crate::protocol::config::{Config, ConfigError, PeerEntry};
use crate::support::files::with_path;
use crate::support::status::mib;
use crate::support::status::{Phase, Status};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::net::{IpAddr, ToSocketAddrs};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

#[derive(Debug, Args, Clone)]
pub struct SwarmArgs {
    /// Directory holding Common.cfg and PeerInfo.cfg.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Give up (and fail) if the swarm has not finished after this many seconds.
    #[arg(long, default_value_t = 600.0, value_name = "SECS")]
    pub timeout: f64,
    /// Keep the leechers' files and the logs of an earlier run instead of starting fresh.
    #[arg(long)]
    pub keep: bool,
    /// No progress bars (they are also off when stderr is not a terminal).
    #[arg(long)]
    pub quiet: bool,
    /// Print the summary as one JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Seconds each peer keeps dialling a peer listed above it [default: 30,
    /// or --timeout when some peer runs on another host, started by hand]
    #[arg(long, value_name = "SECS")]
    pub connect_timeout: Option<f64>,
    /// An authenticated swarm: write a fresh random secret to
    /// `<dir>/.p2pft-secret` (mode 0600) and have every peer prove it, as
    /// `P2pftSecretFile` in Common.cfg would.
    #[arg(long)]
    pub secret: bool,
    /// Piece bytes a second each peer sends, at most (K, M, G: KiB/s, MiB/s,
    /// GiB/s; as P2pftMaxUploadRate).
    #[arg(long, value_name = "RATE", value_parser = crate::protocol::config::parse_rate)]
    pub max_upload_rate: Option<u64>,
    /// Piece bytes a second each peer receives, at most (as P2pftMaxDownloadRate).
    #[arg(long, value_name = "RATE", value_parser = crate::protocol::config::parse_rate)]
    pub max_download_rate: Option<u64>,
    /// After the run, draw it from the logs into this SVG (as `p2pft
    /// report`); a report that cannot be made is a warning only.
    #[arg(long, value_name = "FILE.svg")]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub ssh: crate::app::remote::SshArgs,
    /// Peers started inside a network namespace of this machine (a host of
    /// `bench --hosts`), by ID: local, whatever their address.
    #[arg(skip)]
    pub(crate) placed: std::collections::BTreeMap<u32, Placement>,
    /// Peers' stderr lines are kept for the summary of one that fails but
    /// not shown as they come: the baseline of `bench --hosts`, where every
    /// leecher waits on the seed alone and says so each time it stalls.
    #[arg(skip)]
    pub(crate) quiet_peers: bool,
}

/// Where and how `bench --hosts` has a peer started.
#[derive(Debug, Clone, Default)]
pub(crate) struct Placement {
    /// The network namespace it runs in (`ip netns exec`).
    pub netns: String,
    /// Flags for it alone, after the swarm's.
    pub args: Vec<std::ffi::OsString>,
}

impl SwarmArgs {
    /// `--connect-timeout`, or its default: peers started here dial peers
    /// this launcher started before them, up within seconds; a peer on
    /// another host may be started minutes later.
    fn connect_timeout(&self, remote_peers: bool) -> f64 {
        self.connect_timeout
            .unwrap_or(if remote_peers { self.timeout } else { 30.0 })
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SwarmError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Meta(#[from] crate::integrity::meta::MetaError),
    /// Refused before anything was written: not enough threads.
    #[error("{0}")]
    Threads(#[from] TooFewThreads),
    /// Refused before anything was written: not enough space.
    #[error("{0}")]
    Space(#[from] NoSpace),
    /// Refused before anything was removed: another launcher on this
    /// machine holds this peer directory, running this swarm already.
    #[error("{} is held by another p2pft swarm on this machine, running this swarm already: nothing was removed or started", dir.display())]
    Held { dir: PathBuf },
    /// Refused before anything was removed: a local peer's port is taken,
    /// most often by that peer, started by hand and running.
    #[error("peer {peer} cannot listen on {host}:{port} ({source}): is it running already (`peerProcess {peer}`)? Nothing was removed or started")]
    Running {
        peer: u32,
        host: String,
        port: u16,
        source: io::Error,
    },
    /// `--ssh`: a host failed its preflight (nothing started) or its staging.
    #[error("{0}")]
    Remote(#[from] crate::app::remote::RemoteError),
}

/// A swarm whose peers would run out of threads half-way.
#[derive(Debug, thiserror::Error)]
#[error("{local} peers of a swarm of {peers} need about {need} threads (a reader and a writer for each neighbour), more than this machine allows ({limit}); run fewer peers on this machine")]
pub(crate) struct TooFewThreads {
    local: u64,
    peers: u64,
    need: u64,
    limit: ThreadLimit,
}

/// The least of the machine's limits on threads, and the threads running.
#[derive(Debug)]
struct ThreadLimit {
    name: &'static str,
    limit: u64,
    in_use: u64,
}

impl std::fmt::Display for ThreadLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is {}, {} threads run now",
            self.name, self.limit, self.in_use
        )
    }
}

/// A swarm whose files, logs and metadata would not fit where they go
/// (sizes in bytes).
#[derive(Debug, thiserror::Error)]
#[error(
    "not enough free space in {}: this swarm writes up to {:.0} MiB ({:.0} MiB of peers' files and {:.0} MiB of logs and metadata), {:.0} MiB are free; free some space{}",
    dir.display(),
    mib(*need),
    mib(*files),
    mib(*records),
    mib(*free),
    smaller_logs_text(*.smaller_logs)
)]
pub(crate) struct NoSpace {
    dir: PathBuf,
    need: u64,
    files: u64,
    records: u64,
    free: u64,
    /// With this many pieces, whose logs are a good part of `need`: a
    /// larger PieceSize would help.
    smaller_logs: Option<u64>,
}

fn smaller_logs_text(pieces: Option<u64>) -> String {
    match pieces {
        Some(pieces) => format!(", or use a larger PieceSize: the logs hold a line a piece and peer, and there are {pieces} pieces"),
        None => String::new(),
    }
}

/// What happened to one peer.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PeerReport {
    pub id: u32,
    /// Its host, as PeerInfo.cfg names it.
    pub host: String,
    pub seed: bool,
    /// Started on its host over ssh (`--ssh`).
    pub ssh: bool,
    /// False when the peer runs on another host and was not started here.
    pub local: bool,
    /// A local peer the launcher started (false: it stopped before this
    /// one's turn, as an earlier peer failed to start or a signal came).
    pub started: bool,
    pub exit_code: Option<i32>,
    /// Seconds from the swarm's start until the peer had every piece.
    pub complete_after_secs: Option<f64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The peer's file was checked and is right: `file_check` is
    /// `same_as_seed` or `matches_metadata`.
    pub file_ok: bool,
    pub file_check: FileCheck,
    /// The last lines the peer wrote on stderr, when it failed.
    pub stderr_tail: Vec<String>,
    /// CPU seconds, peak RSS and most threads, as the peer last reported them.
    pub cpu_secs: f64,
    pub peak_rss_kb: u64,
    pub threads: u32,
    /// Protocol violations its neighbours committed, as it last reported.
    pub violations: u64,
}

/// How a peer's file was checked once the swarm ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FileCheck {
    /// Byte for byte against a seed's file on this host.
    SameAsSeed,
    /// No seed's file here: its SHA-1 is the metadata's whole-file SHA-1.
    MatchesMetadata,
    /// Neither of those, or unreadable.
    Differs,
    /// A peer on another host; or neither a seed's file nor metadata here.
    NotChecked,
}

impl FileCheck {
    fn text(self) -> &'static str {
        match self {
            FileCheck::SameAsSeed => "identical to seed",
            FileCheck::MatchesMetadata => "matches metadata",
            FileCheck::Differs => "DIFFERS or missing",
            FileCheck::NotChecked => "not checked",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct SwarmReport {
    pub ok: bool,
    pub timed_out: bool,
    /// The signal that stopped the launcher (and, through it, the peers).
    pub interrupted: Option<i32>,
    pub wall_secs: f64,
    pub file_size_bytes: u64,
    pub peers: Vec<PeerReport>,
    /// `--ssh`: the launcher's own time on the other hosts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub launch: Option<crate::app::remote::LaunchReport>,
    /// `--ssh`: peers lost before they had the file, and why (`host b2 lost: ...`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lost: Vec<String>,
}

/// The first SIGINT, SIGTERM or SIGHUP caught since [`catch_interrupts`]; 0 for none.
static INTERRUPT: AtomicI32 = AtomicI32::new(0);

/// Makes SIGINT, SIGTERM and SIGHUP a request to stop, read with
/// [`interrupted`], for a launcher that must stop its peers and clean up
/// before it exits; a second such signal exits at once (128 + the signal).
/// Call it once.
pub(crate) fn catch_interrupts() -> io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    crate::support::process::on_signals(&[SIGINT, SIGTERM, SIGHUP], |signal| {
        INTERRUPT.store(signal, Ordering::SeqCst);
    })
}

/// The signal [`catch_interrupts`] caught, if any.
pub(crate) fn interrupted() -> Option<i32> {
    let signal = INTERRUPT.load(Ordering::SeqCst);
    (signal != 0).then_some(signal)
}

/// Whether a signal asked the launcher to stop: the [`crate::integrity::meta::Stop`]
/// of its hash passes.
pub(crate) fn stop_requested() -> bool {
    interrupted().is_some()
}

/// `code`, or 128 + the signal when one stopped the launcher.
pub(crate) fn unless_interrupted(code: i32) -> i32 {
    interrupted().map_or(code, |signal| 128 + signal)
}

/// How long peers asked to stop may take (they let pieces in flight land
/// for at most 1 s and record their progress) before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Passes `signal` on to every peer still running, by PID; SIGHUP goes as
/// SIGTERM (peers stop cleanly on SIGINT and SIGTERM).
fn pass_on(peers: &[Running], signal: i32, launch: Option<&crate::app::remote::Launch>) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let signal = match Signal::try_from(signal) {
        Ok(Signal::SIGINT) => Signal::SIGINT,
        _ => Signal::SIGTERM,
    };
    let mut remote = Vec::new();
    for p in peers.iter().filter(|p| p.child.is_some()) {
        // A peer on another host by its PID there; its ssh stays to bring
        // back how it ended.
        match (launch, p.remote_pid) {
            (Some(_), Some(pid)) => remote.push((p.entry.id, pid)),
            _ => {
                let child = p.child.as_ref().expect("filtered");
                let _ = kill(Pid::from_raw(child.id() as i32), signal);
            }
        }
    }
    if let Some(launch) = launch {
        launch.signal(&remote, signal.as_str().trim_start_matches("SIG"));
    }
}

/// Whether `host` names this machine: a loopback or local address, or our
/// hostname. A name that does not resolve is an error, for the caller to
/// treat as another machine's and to report (most often it is a typo).
pub(crate) fn is_local_host(host: &str) -> io::Result<bool> {
    let own = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    if host.eq_ignore_ascii_case(own.trim()) || host.eq_ignore_ascii_case("localhost") {
        return Ok(true);
    }
    Ok((host, 0).to_socket_addrs()?.any(|a| match a.ip() {
        IpAddr::V4(ip) => ip.is_loopback() || ip.is_unspecified(),
        IpAddr::V6(ip) => ip.is_loopback() || ip.is_unspecified(),
    } || std::net::UdpSocket::bind((a.ip(), 0)).is_ok()))
}

/// Bytes free to us in the file system holding `dir`, when it says.
pub(crate) fn free_space(dir: &Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(stat.blocks_available().saturating_mul(stat.fragment_size()))
}

/// Threads a peer runs beside its neighbours' readers and writers (engine,
/// listener, disk and status threads, a dialler or two): 20 in a swarm of
/// 5 peers, 74 in one of 32, 138 in one of 64.
const THREADS_PER_PEER: u64 = 12;

/// Threads `local` peers of a swarm of `peers` run at most: a reader and a
/// writer per neighbour each, and [`THREADS_PER_PEER`], with room for
/// handshakes in progress.
fn threads_needed(local: u64, peers: u64) -> u64 {
    local.saturating_mul(2 * peers.saturating_sub(1) + THREADS_PER_PEER + 4)
}

/// How many more threads this machine lets us start, and the limit that
/// says so: the least of kernel.pid_max and kernel.threads-max (and, for a
/// user other than root, RLIMIT_NPROC), less the threads running now.
fn threads_available() -> Option<(u64, ThreadLimit)> {
    let read =
        |path: &str| -> Option<u64> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
    let mut limits = vec![
        (read("/proc/sys/kernel/pid_max")?, "kernel.pid_max"),
        (read("/proc/sys/kernel/threads-max")?, "kernel.threads-max"),
    ];
    if !nix::unistd::geteuid().is_root() {
        if let Ok((soft, _)) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NPROC)
        {
            limits.push((soft, "ulimit -u"));
        }
    }
    let (limit, name) = limits.into_iter().min()?;
    // /proc/loadavg's fourth field: running/total threads.
    let loadavg = std::fs::read_to_string("/proc/loadavg").ok()?;
    let in_use: u64 = loadavg
        .split_whitespace()
        .nth(3)?
        .split('/')
        .nth(1)?
        .parse()
        .ok()?;
    Some((
        limit.saturating_sub(in_use),
        ThreadLimit {
            name,
            limit,
            in_use,
        },
    ))
}

/// Refuses a swarm whose peers would run out of threads half-way (each
/// then fails to take a neighbour): the message says how many it needs.
pub(crate) fn check_threads(local: u64, peers: u64) -> Result<(), TooFewThreads> {
    let need = threads_needed(local, peers);
    match threads_available() {
        Some((free, limit)) if free < need => Err(TooFewThreads {
            local,
            peers,
            need,
            limit,
        }),
        _ => Ok(()),
    }
}

/// Bytes of spec logs and metadata a swarm of `peers` sharing `pieces`
/// writes at most: `logging` of them log a line a piece and peer, and the
/// metadata, when it is still to be made, takes
/// [`crate::integrity::meta::BYTES_PER_PIECE`] a piece.
pub(crate) fn records_bytes(pieces: u64, peers: u64, logging: u64, with_meta: bool) -> u64 {
    let meta = if with_meta {
        pieces.saturating_mul(crate::integrity::meta::BYTES_PER_PIECE)
    } else {
        0
    };
    crate::protocol::config::max_log_bytes(pieces, peers)
        .saturating_mul(logging)
        .saturating_add(meta)
}

/// Refuses a swarm whose files, logs and metadata would not fit in the file
/// system of its directory, before anything is written: with tiny pieces the
/// logs alone can take gigabytes (a line a piece and neighbour), and peers
/// that run out of space half-way fail one by one.
fn check_space(config: &Config, local: &[PeerEntry]) -> Result<(), SwarmError> {
    let Some(free) = free_space(&config.dir) else {
        return Ok(()); // no figure to check against: the peers will say
    };
    let size = config.common.file_size_bytes;
    let pieces = u64::from(config.common.layout.num_pieces());
    // A seed's file is written only when it is copied in from `data/`; the
    // blocks a leecher's file already has count for it, kept or replaced.
    let to_write = |p: &PeerEntry| match std::fs::metadata(config.peer_file(p.id)) {
        Ok(_) if p.has_file => 0,
        Ok(m) => {
            use std::os::unix::fs::MetadataExt;
            size.saturating_sub(m.blocks() * 512)
        }
        Err(_) => size,
    };
    let files: u64 = local.iter().map(to_write).sum();
    let meta_path = crate::integrity::meta::default_path(&config.dir, &config.common.file_name);
    let records = records_bytes(
        pieces,
        config.peers.len() as u64,
        local.len() as u64,
        !meta_path.exists(),
    );
    let need = files.saturating_add(records);
    if free < need {
        // Advice on PieceSize only where the logs are a good part of it.
        return Err(NoSpace {
            dir: config.dir.clone(),
            need,
            files,
            records,
            free,
            smaller_logs: (records > files / 8).then_some(pieces),
        }
        .into());
    }
    Ok(())
}

/// Holds `peer_<ID>/` of every local peer (`flock`, released when dropped)
/// for this launcher's run: a second `swarm` in the same directory on this
/// machine would otherwise remove the files and logs that this one's peers
/// are writing. Launchers on other hosts that share the directory (the
/// course project's NFS home) run other peers and hold other directories.
/// Where the file system has no such locks, none is held.
fn hold_peer_dirs(
    config: &Config,
    local: &[PeerEntry],
) -> Result<Vec<nix::fcntl::Flock<File>>, SwarmError> {
    let mut held = Vec::new();
    for p in local {
        let dir = config.peer_dir(p.id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| with_path(&dir, "cannot create the directory", e))?;
        match crate::support::files::try_lock(&dir) {
            Ok(lock) => held.extend(lock),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(SwarmError::Held { dir })
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(held)
}

/// Refuses, before a fresh run removes anything, when a local peer's port
/// is taken: most often by that peer, started by hand and running, whose
/// log and file the run would remove. (Other reasons not to listen, such as
/// a port below 1024, are the peer's to report.)
fn check_not_running(local: &[PeerEntry]) -> Result<(), SwarmError> {
    for p in local {
        match crate::runtime::net::bind_listener(p) {
            Err(source) if source.kind() == io::ErrorKind::AddrInUse => {
                return Err(SwarmError::Running {
                    peer: p.id,
                    host: p.host.clone(),
                    port: p.port,
                    source,
                })
            }
            _ => {}
        }
    }
    Ok(())
}

/// Bytes past which a step of the preparation is said before it begins: a
/// second or more of silence otherwise (on a file system mounted with
/// `discard`, removing a written file is slow; see docs/PERFORMANCE.md).
const SAY_BYTES: u64 = 1 << 30;

/// Says on stderr what is about to be done, when it handles `bytes` or more
/// than [`SAY_BYTES`].
fn say_before(bytes: u64, what: impl FnOnce() -> String) {
    if bytes >= SAY_BYTES {
        eprintln!("{} ({:.1} GiB)", what(), mib(bytes) / 1024.0);
    }
}

/// In the peer directories [`hold_peer_dirs`] made: puts the seeds' file in
/// place from `data/` when it is missing, and (unless `keep`) removes
/// leecher files and logs of earlier runs.
fn prepare(config: &Config, local: &[PeerEntry], keep: bool) -> Result<(), SwarmError> {
    let size = config.common.file_size_bytes;
    if !keep {
        let old: Vec<u64> = local
            .iter()
            .filter(|p| !p.has_file)
            .filter_map(|p| std::fs::metadata(config.peer_file(p.id)).ok())
            .map(|m| m.len())
            .collect();
        say_before(old.iter().sum(), || {
            format!(
                "removing {} leecher file{} of the last run",
                old.len(),
                if old.len() == 1 { "" } else { "s" }
            )
        });
    }
    for p in local {
        let file = config.peer_file(p.id);
        if p.has_file {
            let present = std::fs::metadata(&file).is_ok_and(|m| m.len() == size);
            let source = config.dir.join("data").join(&config.common.file_name);
            if !present && std::fs::metadata(&source).is_ok_and(|m| m.len() == size) {
                say_before(size, || {
                    format!("copying {} to {}", source.display(), file.display())
                });
                std::fs::copy(&source, &file)
                    .map_err(|e| with_path(&file, "cannot copy the seed's file to", e))?;
            }
        } else if !keep {
            match std::fs::remove_file(&file) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(with_path(&file, "cannot remove the last run's", e).into())
                }
                _ => {}
            }
        }
        if !keep {
            let _ = std::fs::remove_file(config.log_path(p.id));
            let _ = std::fs::remove_file(crate::integrity::progress::path_for(&file));
        }
        config.check_local_peer(p.id)?;
    }
    ensure_meta(config, local)
}

/// Creates the metadata from a local seed's file when there is none, so the
/// peers verify every piece; checks existing metadata against Common.cfg.
fn ensure_meta(config: &Config, local: &[PeerEntry]) -> Result<(), SwarmError> {
    let path = crate::integrity::meta::default_path(&config.dir, &config.common.file_name);
    if path.exists() {
        crate::integrity::meta::Meta::load(&path)?.verifier(&path, Some(&config.common))?;
        return Ok(());
    }
    let Some(seed) = local.iter().find(|p| p.has_file) else {
        return Ok(());
    };
    let pool = crate::integrity::meta::hashing_pool(0)?;
    say_before(config.common.file_size_bytes, || {
        format!("hashing peer {}'s file into {}", seed.id, path.display())
    });
    let started = Instant::now();
    let meta = crate::integrity::meta::Meta::create_until(
        &config.peer_file(seed.id),
        config.common.piece_size_bytes,
        &pool,
        &stop_requested,
    )?;
    meta.save(&path)?;
    eprintln!(
        "created {} from peer {}'s file ({:.0} MiB/s)",
        path.display(),
        seed.id,
        mib(meta.file_size_bytes) / started.elapsed().as_secs_f64().max(1e-9)
    );
    Ok(())
}

struct Running {
    entry: PeerEntry,
    child: Option<Child>,
    bar: ProgressBar,
    last: Option<Status>,
    complete_after: Option<Duration>,
    exit_code: Option<i32>,
    stderr: Arc<parking_lot::Mutex<VecDeque<String>>>,
    /// When the rate was last shown, and bytes in and pieces then.
    rate: (Instant, u64, u32),
    /// A peer over ssh: its PID on its host, and its exit code there.
    remote_pid: Option<u32>,
    remote_exit: Option<i32>,
    /// Its stdout has ended.
    closed: bool,
}

enum Update {
    Status(usize, Status),
    Remote(usize, crate::app::remote::Line),
    Closed(usize),
}

/// The secret file `--secret` writes, in the swarm directory.
pub(crate) const SECRET_FILE: &str = ".p2pft-secret";

/// Writes a fresh random secret to [`SECRET_FILE`] in `dir`, readable by its
/// owner alone (made so before a byte of the secret is in it), and returns
/// its path.
fn write_secret(dir: &Path) -> Result<PathBuf, SwarmError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = dir.join(SECRET_FILE);
    let write = || -> io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.set_len(0)?;
        file.write_all(crate::protocol::auth::Secret::generate()?.as_bytes())
    };
    write().map_err(|e| with_path(&path, "cannot write the secret file", e))?;
    Ok(path)
}

fn spawn_peer(
    exe: &Path,
    config: &Config,
    entry: &PeerEntry,
    connect_timeout: f64,
    extra: &[std::ffi::OsString],
    placed: Option<&Placement>,
) -> io::Result<Child> {
    // `ip netns exec` execs the peer: the child's PID is the peer's.
    let mut command = match placed {
        Some(p) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &p.netns]).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    command
        .arg("peer")
        .arg(entry.id.to_string())
        .arg("--dir")
        .arg(&config.dir)
        .arg("--status")
        .arg("--connect-timeout")
        .arg(connect_timeout.to_string())
        .args(extra)
        .args(placed.iter().flat_map(|p| &p.args));
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Signals reach peers through the launcher only (see the module header).
        .process_group(0)
        .spawn()
}

/// Keeps the last lines a peer writes on stderr for the summary, and shows
/// each on the launcher's stderr as it comes (above the progress bars when
/// they are drawn), so that a warning such as a stalled leecher's is seen
/// when it happens, and a script that keeps stderr gets every one, from
/// peers that end well too (unless `show` is false: kept only).
fn keep_tail(
    stream: impl Read + Send + 'static,
    tail: Arc<parking_lot::Mutex<VecDeque<String>>>,
    bars: MultiProgress,
    show: bool,
) {
    thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            match (show, bars.is_hidden()) {
                (false, _) => {}
                // Nobody reading stderr any more must not stop the launcher.
                (true, true) => drop(writeln!(io::stderr().lock(), "{line}")),
                (true, false) => drop(bars.println(&line)),
            }
            let mut t = tail.lock();
            if t.len() == 20 {
                t.pop_front();
            }
            t.push_back(line);
        }
    });
}

fn forward_status(
    i: usize,
    stream: impl Read + Send + 'static,
    tx: crossbeam_channel::Sender<Update>,
) {
    thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let update = match Status::parse(&line) {
                Some(s) => Update::Status(i, s),
                None => match crate::app::remote::Line::parse(&line) {
                    Some(l) => Update::Remote(i, l),
                    None => continue,
                },
            };
            if tx.send(update).is_err() {
                return;
            }
        }
        let _ = tx.send(Update::Closed(i));
    });
}

/// Runs the swarm of `args.dir` to the end and reports on it.
pub(crate) fn run(args: &SwarmArgs) -> Result<SwarmReport, SwarmError> {
    // `--timeout` bounds the whole job, an ssh launch's preflight and staging too.
    let deadline = Instant::now() + Duration::from_secs_f64(args.timeout.max(0.0));
    let config = Config::load(&args.dir)?;
    for w in &config.warnings {
        eprintln!("warning: {w}");
    }
    let config = Config {
        dir: std::fs::canonicalize(Path::new(".").join(&config.dir))?,
        ..config
    };
    let (mut local, mut remote, mut over_ssh) = (Vec::new(), Vec::new(), Vec::new());
    for p in &config.peers {
        if args.placed.contains_key(&p.id) {
            local.push(p.clone());
            continue;
        }
        match is_local_host(&p.host) {
            Ok(true) => local.push(p.clone()),
            _ if args.ssh.ssh => over_ssh.push(p.clone()),
            elsewhere => {
                // Said now: the peers that dial it would report a typo only
                // after --connect-timeout (by default as long as the swarm
                // may run).
                if let Err(e) = elsewhere {
                    eprintln!(
                        "warning: peer {}'s host {} does not resolve here ({e}): is it misspelt in PeerInfo.cfg?",
                        p.id, p.host
                    );
                }
                eprintln!(
                    "note: peer {} runs on {}; start it there (`peerProcess {}`): this swarm waits for it",
                    p.id, p.host, p.id
                );
                remote.push(p.clone());
            }
        }
    }
    check_space(&config, &local)?;
    check_threads(local.len() as u64, config.peers.len() as u64)?;
    let _held = hold_peer_dirs(&config, &local)?;
    // A placed peer's namespace is new: nothing else can hold its port.
    let unplaced: Vec<PeerEntry> = local
        .iter()
        .filter(|p| !args.placed.contains_key(&p.id))
        .cloned()
        .collect();
    check_not_running(&unplaced)?;
    let mut launch = match over_ssh.is_empty() {
        true => None,
        false => {
            let pieces = u64::from(config.common.layout.num_pieces());
            let peers = config.peers.len() as u64;
            let records = |on_host, with_meta| records_bytes(pieces, peers, on_host, with_meta);
            Some(crate::app::remote::Launch::preflight(
                &args.ssh, &config, &over_ssh, deadline, &records,
            )?)
        }
    };
    // Over ssh a run resumes what the hosts have, as a distribution job
    // that failed half way is run again.
    prepare(&config, &local, args.keep || launch.is_some())?;
    // What every peer is told beyond its ID and directory.
    let mut peer_args: Vec<std::ffi::OsString> = Vec::new();
    let secret = match args.secret {
        true => Some(write_secret(&config.dir)?),
        false => None,
    };
    if let Some(path) = &secret {
        peer_args.push("--secret-file".into());
        peer_args.push(path.into());
    }
    let mut remote_args = Vec::new();
    for (flag, rate) in [
        ("--max-upload-rate", args.max_upload_rate),
        ("--max-download-rate", args.max_download_rate),
    ] {
        if let Some(rate) = rate {
            peer_args.push(flag.into());
            peer_args.push(rate.to_string().into());
            remote_args.extend([flag.to_string(), rate.to_string()]);
        }
    }
    let connect_timeout = args.connect_timeout(!remote.is_empty());
    if let Some(launch) = &mut launch {
        launch.prestart(connect_timeout, secret.as_deref(), &remote_args)?;
        launch.stage(&config, args.ssh.fanout, secret.as_deref(), deadline)?;
    }
    let launch = launch.map(Arc::new);
    // Every peer this launcher starts, in PeerInfo order.
    let to_start: Vec<PeerEntry> = config
        .peers
        .iter()
        .filter(|p| local.contains(p) || over_ssh.contains(p))
        .cloned()
        .collect();
    let exe = std::env::current_exe()?;
    let num_pieces = config.common.layout.num_pieces();
    let show_bars = !args.quiet && io::stderr().is_terminal();
    let bars = MultiProgress::with_draw_target(if show_bars {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let style = ProgressStyle::with_template(
        // About 40 columns before the message, which is cut at the
        // terminal's width (wide_msg): a line that wrapped would throw
        // indicatif's redrawing out.
        "{prefix:>9} [{bar:20.cyan/blue}] {pos:>6}/{len:<6} {wide_msg}",
    )
    .expect("valid template")
    .progress_chars("=> ");
    // A bar each while they fit on the terminal (indicatif draws no more
    // lines than it has rows), else one for all the leechers.
    let rows = console::Term::stderr()
        .size_checked()
        .map_or(24, |(rows, _)| rows);
    let mut total = (to_start.len() + 2 > usize::from(rows)).then(|| {
        let leechers = to_start.iter().filter(|p| !p.has_file).count() as u64;
        let bar = bars.add(ProgressBar::new(leechers * u64::from(num_pieces)));
        bar.set_style(style.clone());
        bar.set_prefix("all");
        Total {
            bar,
            leechers,
            rate: (Instant::now(), 0, 0),
        }
    });

    let start = Instant::now();
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut peers: Vec<Running> = Vec::new();
    let mut failed_to_start = false;
    // The peer that failed to start closed its status pipe: it is exiting.
    let mut exiting: Option<usize> = None;
    let placed = |e: Option<&PeerEntry>| e.is_some_and(|e| args.placed.contains_key(&e.id));
    for (k, entry) in to_start.iter().enumerate() {
        if stop_requested() {
            break;
        }
        let i = peers.len();
        let bar = match total {
            Some(_) => ProgressBar::hidden(),
            None => bars.add(ProgressBar::new(u64::from(num_pieces))),
        };
        bar.set_style(style.clone());
        bar.set_prefix(entry.id.to_string());
        let stderr = Arc::new(parking_lot::Mutex::new(VecDeque::new()));
        let mut child = match &launch {
            Some(l) if l.runs(entry) => l.start(entry)?,
            _ => spawn_peer(
                &exe,
                &config,
                entry,
                connect_timeout,
                &peer_args,
                args.placed.get(&entry.id),
            )?,
        };
        forward_status(i, child.stdout.take().expect("piped"), tx.clone());
        keep_tail(
            child.stderr.take().expect("piped"),
            Arc::clone(&stderr),
            bars.clone(),
            !args.quiet_peers,
        );
        peers.push(Running {
            entry: entry.clone(),
            child: Some(child),
            bar,
            last: None,
            complete_after: None,
            exit_code: None,
            stderr,
            rate: (Instant::now(), 0, 0),
            remote_pid: None,
            remote_exit: None,
            closed: false,
        });
        // The next peer dials this one: wait until it listens (or dies).
        // Hosts of `bench --hosts` start together instead, as a job's hosts
        // do: their peers dial again until the one before them listens, and
        // a launcher that waited for each would start the last ones seconds
        // late once the first ones load the CPUs.
        if placed(Some(entry)) && placed(to_start.get(k + 1)) {
            continue;
        }
        let listening = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(update) => {
                    let is_me = matches!(&update, Update::Status(j, s) if *j == i && s.phase == Phase::Listening);
                    let closed = matches!(update, Update::Closed(j) if j == i);
                    apply(&mut peers, &mut total, update, start);
                    if is_me {
                        break true;
                    }
                    if closed {
                        exiting = Some(i);
                        break false;
                    }
                }
                Err(_) if Instant::now() > deadline || stop_requested() => break false,
                Err(_) => {}
            }
        };
        if !listening {
            failed_to_start = interrupted().is_none();
            break;
        }
    }

    let mut timed_out = false;
    // When a signal was passed on to the peers.
    let mut stopping: Option<Instant> = None;
    // `--ssh`: peers that ended before they had the file, and why.
    let mut lost: Vec<String> = Vec::new();
    while peers.iter().any(|p| p.child.is_some()) {
        if let (None, Some(signal)) = (stopping, interrupted()) {
            pass_on(&peers, signal, launch.as_deref());
            stopping = Some(Instant::now());
        }
        let give_up = failed_to_start
            || stopping.map_or(Instant::now() > deadline, |t| t.elapsed() > STOP_GRACE);
        if give_up {
            timed_out = !failed_to_start && stopping.is_none();
            // Its pipe closes as it exits, a moment before it can be
            // reaped: killed now, it would lose its own exit code.
            if let Some(c) = exiting.and_then(|i| peers[i].child.as_mut()) {
                let until = Instant::now() + Duration::from_secs(2);
                while matches!(c.try_wait(), Ok(None)) && Instant::now() < until {
                    thread::sleep(Duration::from_millis(5));
                }
            }
            if let Some(launch) = &launch {
                let remote: Vec<(u32, u32)> = peers
                    .iter()
                    .filter(|p| p.child.is_some() && p.remote_exit.is_none())
                    .filter_map(|p| Some((p.entry.id, p.remote_pid?)))
                    .collect();
                launch.signal(&remote, "KILL");
            }
            for p in &mut peers {
                if let Some(mut c) = p.child.take() {
                    // One that ended by itself (the peer that failed to
                    // start) keeps its own exit code.
                    match c.try_wait() {
                        Ok(Some(status)) => p.exit_code = exit_code_of(status),
                        _ => {
                            let _ = c.kill();
                            let _ = c.wait();
                        }
                    }
                }
            }
            break;
        }
        while let Ok(update) = rx.recv_timeout(Duration::from_millis(50)) {
            apply(&mut peers, &mut total, update, start);
        }
        let mut cannot_finish = false;
        for p in &mut peers {
            if let Some(c) = &mut p.child {
                if let Ok(Some(status)) = c.try_wait() {
                    let over_ssh = p.remote_pid.is_some() && launch.is_some();
                    if over_ssh && !p.closed {
                        continue; // its last lines (how it ended) are still on their way
                    }
                    // Over ssh, how the peer ended on its host; none when
                    // ssh lost it (the host gone, the connection dropped).
                    p.exit_code = match over_ssh {
                        true => p.remote_exit,
                        false => exit_code_of(status),
                    };
                    if let (Some(launch), None) = (&launch, p.complete_after) {
                        if p.exit_code != Some(0) && stopping.is_none() {
                            let host = &p.entry.host;
                            let why = match p.exit_code {
                                Some(code) => format!(
                                    "peer {} on host {host} ended with {code} before it had the file",
                                    p.entry.id
                                ),
                                None => launch.lost(p.entry.id).unwrap_or_else(|| {
                                    let said = p.stderr.lock().back().cloned();
                                    format!(
                                        "host {host} lost: {}",
                                        said.unwrap_or_else(|| format!("its ssh ended with {status}"))
                                    )
                                }) + &format!(" (peer {})", p.entry.id),
                            };
                            eprintln!("{why}: the rest cannot finish, stopping them");
                            lost.push(why);
                            cannot_finish = true;
                        }
                    }
                    p.child = None;
                    p.bar.finish();
                    if !show_bars && !args.json {
                        eprintln!(
                            "peer {} exited with {} after {:.2} s",
                            p.entry.id,
                            status,
                            start.elapsed().as_secs_f64()
                        );
                    }
                }
            }
        }
        if cannot_finish {
            // Termination needs every peer: the rest stop cleanly, keeping
            // their verified pieces for a rerun.
            pass_on(
                &peers,
                nix::sys::signal::Signal::SIGTERM as i32,
                launch.as_deref(),
            );
            stopping = Some(Instant::now());
        }
    }
    while let Ok(update) = rx.try_recv() {
        apply(&mut peers, &mut total, update, start);
    }
    let wall = start.elapsed();
    bars.clear().ok();

    let seed_file = local
        .iter()
        .find(|p| p.has_file)
        .map(|p| config.peer_file(p.id));
    let runs_remote = |p: &PeerEntry| launch.as_ref().is_some_and(|l| l.runs(p));
    let files: Vec<PathBuf> = peers
        .iter()
        .filter(|p| !runs_remote(&p.entry))
        .map(|p| config.peer_file(p.entry.id))
        .collect();
    let mut here = check_files(&config, seed_file.as_deref(), &files).into_iter();
    // Each file over ssh is checked on its own host.
    let mut there = match &launch {
        Some(l) => {
            let ids: Vec<u32> = peers
                .iter()
                .filter(|p| runs_remote(&p.entry))
                .map(|p| p.entry.id)
                .collect();
            l.verify(&ids, args.ssh.fanout)
                .into_iter()
                .map(|good| match good {
                    Some(true) => FileCheck::MatchesMetadata,
                    Some(false) => FileCheck::Differs,
                    None => FileCheck::NotChecked,
                })
                .collect()
        }
        None => Vec::new(),
    }
    .into_iter();
    let checks: Vec<FileCheck> = peers
        .iter()
        .map(|p| match runs_remote(&p.entry) {
            true => there.next(),
            false => here.next(),
        })
        .map(|c| c.unwrap_or(FileCheck::NotChecked))
        .collect();
    let mut reports = Vec::new();
    for (p, file_check) in peers.iter().zip(checks) {
        let last = p.last.clone();
        let file_ok = matches!(
            file_check,
            FileCheck::SameAsSeed | FileCheck::MatchesMetadata
        );
        let ok = p.exit_code == Some(0) && file_check != FileCheck::Differs;
        reports.push(PeerReport {
            id: p.entry.id,
            host: p.entry.host.clone(),
            seed: p.entry.has_file,
            ssh: runs_remote(&p.entry),
            local: !runs_remote(&p.entry),
            started: true,
            exit_code: p.exit_code,
            complete_after_secs: p.complete_after.map(|d| d.as_secs_f64()),
            bytes_in: last.as_ref().map_or(0, |s| s.bytes_in),
            bytes_out: last.as_ref().map_or(0, |s| s.bytes_out),
            file_ok,
            file_check,
            stderr_tail: if ok {
                Vec::new()
            } else {
                p.stderr.lock().iter().cloned().collect()
            },
            cpu_secs: last.as_ref().map_or(0.0, |s| s.cpu_secs),
            peak_rss_kb: last.as_ref().map_or(0, |s| s.peak_rss_kb),
            violations: last.as_ref().map_or(0, |s| s.violations),
            threads: last.as_ref().map_or(0, |s| s.threads),
        });
    }
    let not_started = to_start[peers.len()..].iter();
    for p in not_started.chain(remote.iter()) {
        reports.push(PeerReport {
            id: p.id,
            host: p.host.clone(),
            seed: p.has_file,
            ssh: runs_remote(p),
            local: local.contains(p),
            started: false,
            exit_code: None,
            complete_after_secs: None,
            bytes_in: 0,
            bytes_out: 0,
            file_ok: false,
            file_check: FileCheck::NotChecked,
            stderr_tail: Vec::new(),
            cpu_secs: 0.0,
            peak_rss_kb: 0,
            threads: 0,
            violations: 0,
        });
    }
    let interrupted = interrupted();
    let ok = !timed_out
        && !failed_to_start
        && interrupted.is_none()
        && lost.is_empty()
        && reports
            .iter()
            .filter(|r| r.local || r.ssh)
            .all(|r| r.started && r.exit_code == Some(0) && r.file_check != FileCheck::Differs);
    Ok(SwarmReport {
        ok,
        timed_out,
        interrupted,
        wall_secs: wall.as_secs_f64(),
        file_size_bytes: config.common.file_size_bytes,
        peers: reports,
        launch: launch.as_ref().map(|l| l.report.clone()),
        lost,
    })
}

/// A child's exit code as a shell reports it: 128 + the signal that ended it.
fn exit_code_of(status: ExitStatus) -> Option<i32> {
    status.code().or(status.signal().map(|s| 128 + s))
}

/// One bar for all the leechers, where a bar each would not fit.
struct Total {
    bar: ProgressBar,
    /// Leechers started here (the bar counts their pieces together).
    leechers: u64,
    /// When its message was last set, and the leechers' bytes in and pieces then.
    rate: (Instant, u64, u64),
}

impl Total {
    /// Shows the leechers' pieces together; every 0.5 s, how many are
    /// complete, their rate, the time left, and the one furthest behind.
    fn show(&mut self, peers: &[Running]) {
        let (mut pieces, mut bytes_in, mut complete) = (0u64, 0u64, 0);
        let mut behind: Option<(u32, u32)> = None;
        for p in peers.iter().filter(|p| !p.entry.has_file) {
            let (has, got) = p.last.as_ref().map_or((0, 0), |s| (s.pieces, s.bytes_in));
            pieces += u64::from(has);
            bytes_in += got;
            if p.complete_after.is_some() {
                complete += 1;
            } else if behind.is_none_or(|(_, least)| has < least) {
                behind = Some((p.entry.id, has));
            }
        }
        self.bar.set_position(pieces);
        let (since, bytes, then) = self.rate;
        let dt = since.elapsed().as_secs_f64();
        if dt < 0.5 {
            return;
        }
        let rate = mib(bytes_in.saturating_sub(bytes)) / dt;
        let left = self.bar.length().unwrap_or(0).saturating_sub(pieces);
        let eta = eta_text(left as f64, pieces.saturating_sub(then) as f64 / dt);
        let behind = behind.map_or(String::new(), |(id, has)| format!("; slowest {id} ({has})"));
        self.bar.set_message(format!(
            "{complete}/{} done, {rate:.0} MiB/s{eta}{behind}",
            self.leechers
        ));
        self.rate = (Instant::now(), bytes_in, pieces);
    }
}

/// `, 12 s left` at `per_sec` pieces a second; empty when nothing moves.
fn eta_text(pieces_left: f64, per_sec: f64) -> String {
    let left = pieces_left / per_sec;
    if left.is_finite() {
        format!(", {} left", secs_text(left))
    } else {
        String::new()
    }
}

fn apply(peers: &mut [Running], total: &mut Option<Total>, update: Update, start: Instant) {
    match update {
        Update::Status(i, s) => {
            show_status(&mut peers[i], s, start);
            if let Some(total) = total {
                total.show(peers);
            }
        }
        Update::Remote(i, crate::app::remote::Line::Pid(pid)) => peers[i].remote_pid = Some(pid),
        Update::Remote(i, crate::app::remote::Line::Exit(code)) => {
            peers[i].remote_exit = Some(code)
        }
        Update::Closed(i) => peers[i].closed = true,
    }
}

/// Takes peer `p`'s status line in: its bar, and when it completed.
fn show_status(p: &mut Running, s: Status, start: Instant) {
    p.bar.set_position(u64::from(s.pieces));
    let verified = matches!(s.phase, Phase::Complete | Phase::Done);
    let newly_complete = verified && p.complete_after.is_none();
    if newly_complete {
        p.complete_after = Some(if p.entry.has_file {
            Duration::ZERO
        } else {
            start.elapsed()
        });
    }
    let (since, bytes, pieces) = p.rate;
    let dt = since.elapsed().as_secs_f64();
    if dt >= 0.5 || newly_complete {
        let out = mib(s.bytes_out);
        p.bar.set_message(match p.complete_after {
            Some(_) if p.entry.has_file => format!("seed, {out:.0} MiB out"),
            Some(after) => format!(
                "done at {}, {out:.0} MiB out",
                secs_text(after.as_secs_f64())
            ),
            None => {
                let rate = mib(s.bytes_in.saturating_sub(bytes)) / dt;
                let eta = eta_text(
                    f64::from(s.num_pieces.saturating_sub(s.pieces)),
                    f64::from(s.pieces.saturating_sub(pieces)) / dt,
                );
                format!("{rate:.0} MiB/s in{eta}, {out:.0} MiB out")
            }
        });
        p.rate = (Instant::now(), s.bytes_in, s.pieces);
    }
    p.last = Some(s);
}

/// Seconds as a person reads them: `0.4 s`, `42 s`, `7 min 05 s`, `3 h 02 min`.
fn secs_text(secs: f64) -> String {
    let whole = secs.round() as u64;
    match whole {
        _ if secs < 10.0 => format!("{secs:.1} s"),
        0..60 => format!("{whole} s"),
        60..3600 => format!("{} min {:02} s", whole / 60, whole % 60),
        _ => format!("{} h {:02} min", whole / 3600, whole % 3600 / 60),
    }
}

/// How each of `files` compares: byte for byte with `seed`, the seed's file
/// on this host; else (the seed on another host) by its SHA-1 against the
/// metadata's, where there is metadata; else not at all.
fn check_files(config: &Config, seed: Option<&Path>, files: &[PathBuf]) -> Vec<FileCheck> {
    let verdict = |good: bool, yes: FileCheck| if good { yes } else { FileCheck::Differs };
    if let Some(seed) = seed {
        return on_some_at_once(files, |f| same_contents(seed, f).unwrap_or(false))
            .into_iter()
            .map(|good| verdict(good, FileCheck::SameAsSeed))
            .collect();
    }
    let meta_path = crate::integrity::meta::default_path(&config.dir, &config.common.file_name);
    let Ok(meta) = crate::integrity::meta::Meta::load(&meta_path) else {
        return vec![FileCheck::NotChecked; files.len()];
    };
    let Ok(verifier) = meta.verifier(&meta_path, Some(&config.common)) else {
        return vec![FileCheck::NotChecked; files.len()];
    };
    let matches = |f: &PathBuf| {
        File::open(f)
            .and_then(|file| {
                crate::integrity::meta::hash_file(&file, &crate::integrity::meta::never)
            })
            .is_ok_and(|hash| hash == verifier.file)
    };
    on_some_at_once(files, matches)
        .into_iter()
        .map(|good| verdict(good, FileCheck::MatchesMetadata))
        .collect()
}

/// Files checked at once: leechers wrote theirs with direct
/// I/O, so they are read back from the device, which reads several streams
/// faster than one (see docs/PERFORMANCE.md).
const COMPARED_AT_ONCE: usize = 8;

/// `check` of each of `files`, [`COMPARED_AT_ONCE`] at a time (false for
/// one whose thread panicked).
fn on_some_at_once(files: &[PathBuf], check: impl Fn(&PathBuf) -> bool + Sync) -> Vec<bool> {
    let mut results = Vec::with_capacity(files.len());
    for group in files.chunks(COMPARED_AT_ONCE) {
        std::thread::scope(|scope| {
            let checks: Vec<_> = group.iter().map(|f| scope.spawn(|| check(f))).collect();
            results.extend(checks.into_iter().map(|c| c.join().unwrap_or(false)));
        });
    }
    results
}

/// Compares two files in 1 MiB blocks, without holding either in memory. A
/// file is the same as itself (a seed's, or another seed's hard link to it)
/// without reading it twice.
fn same_contents(a: &Path, b: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let (fa, fb) = (File::open(a)?, File::open(b)?);
    let (ma, mb) = (fa.metadata()?, fb.metadata()?);
    if (ma.dev(), ma.ino()) == (mb.dev(), mb.ino()) {
        return Ok(true);
    }
    if ma.len() != mb.len() {
        return Ok(false);
    }
    let (mut ra, mut rb) = (BufReader::new(fa), BufReader::new(fb));
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = read_full(&mut ra, &mut ba)?;
        let m = read_full(&mut rb, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

pub(crate) fn write_table(
    out: &mut impl std::fmt::Write,
    report: &SwarmReport,
) -> std::fmt::Result {
    // Over ssh, a row says its host first.
    let hosts = report.peers.iter().any(|p| p.ssh);
    let host = |name: &str| match hosts {
        true => format!("{name:<15} "),
        false => String::new(),
    };
    writeln!(
        out,
        // At most 80 columns, the longest file check included (and a host).
        "{}{:>6}  {:>7}  {:>6}  {:>10}  {:>9}  {:>9}  file",
        host("host"),
        "peer",
        "role",
        "exit",
        "complete s",
        "MiB in",
        "MiB out"
    )?;
    for p in &report.peers {
        let exit = match (p.local || p.ssh, p.started, p.exit_code) {
            (false, _, _) => "remote".to_string(),
            (true, false, _) => "-".to_string(),
            (true, true, Some(c)) => c.to_string(),
            (true, true, None) => "killed".to_string(),
        };
        let complete = p
            .complete_after_secs
            .map_or("-".to_string(), |s| format!("{s:.2}"));
        writeln!(
            out,
            "{}{:>6}  {:>7}  {:>6}  {:>10}  {:>9.2}  {:>9.2}  {}",
            host(&p.host),
            p.id,
            if p.seed { "seed" } else { "leecher" },
            exit,
            complete,
            mib(p.bytes_in),
            mib(p.bytes_out),
            p.file_check.text()
        )?;
    }
    let delivered: u64 = report.peers.iter().map(|p| p.bytes_in).sum();
    writeln!(
        out,
        "{} peers, {:.2} MiB file, {:.2} s wall, {:.1} MiB/s delivered in aggregate: {}",
        report.peers.len(),
        mib(report.file_size_bytes),
        report.wall_secs,
        mib(delivered) / report.wall_secs.max(1e-9),
        if report.ok {
            "OK".to_string()
        } else if let Some(signal) = report.interrupted {
            if report.peers.iter().any(|p| p.local || p.ssh) {
                format!("STOPPED by signal {signal} (peers stopped, progress recorded)")
            } else {
                format!("STOPPED by signal {signal} before any peer started")
            }
        } else if report.timed_out {
            "FAILED (time limit reached)".to_string()
        } else {
            "FAILED".to_string()
        }
    )?;
    for why in &report.lost {
        writeln!(out, "lost: {why}")?;
    }
    if let Some(l) = &report.launch {
        writeln!(
            out,
            "{} hosts over ssh: preflight {:.2} s, staging {:.2} s ({:.1} MiB of p2pft pushed)",
            l.hosts,
            l.preflight_secs,
            l.staging_secs,
            mib(l.pushed_bytes)
        )?;
    }
    for p in report.peers.iter().filter(|p| !p.stderr_tail.is_empty()) {
        writeln!(out, "--- last diagnostics of peer {}:", p.id)?;
        for line in &p.stderr_tail {
            writeln!(out, "    {line}")?;
        }
    }
    Ok(())
}

/// `p2pft swarm --ssh --clean`: every host of PeerInfo.cfg but this one
/// cleaned (see [`crate::app::remote::clean`]); returns the exit code (2 for bad
/// configuration).
pub(crate) fn clean_hosts(args: &SwarmArgs) -> i32 {
    let deadline = Instant::now() + Duration::from_secs_f64(args.timeout.max(0.0));
    let config = match Config::load(&args.dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let config = match std::fs::canonicalize(Path::new(".").join(&config.dir)) {
        Ok(dir) => Config { dir, ..config },
        Err(e) => {
            eprintln!("error: {}: {e}", config.dir.display());
            return 2;
        }
    };
    let remote: Vec<PeerEntry> = config
        .peers
        .iter()
        .filter(|p| !is_local_host(&p.host).unwrap_or(false))
        .cloned()
        .collect();
    crate::app::remote::clean(&args.ssh, &config, &remote, deadline, SECRET_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_wait_for_peers_on_other_hosts_as_long_as_the_swarm_may_run() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            swarm: SwarmArgs,
        }
        let args = |a: &[&str]| Cli::parse_from([&["swarm"], a].concat()).swarm;
        assert_eq!(args(&[]).connect_timeout(false), 30.0);
        assert_eq!(args(&[]).connect_timeout(true), 600.0);
        assert_eq!(args(&["--timeout", "90"]).connect_timeout(true), 90.0);
        assert_eq!(args(&["--connect-timeout", "5"]).connect_timeout(true), 5.0);
    }

    #[test]
    fn times_left_read_as_a_person_says_them() {
        let said: Vec<String> = [
            0.04, 9.96, 10.0, 59.4, 59.6, 425.0, 3599.4, 3600.0, 10_930.0,
        ]
        .into_iter()
        .map(secs_text)
        .collect();
        assert_eq!(
            said,
            [
                "0.0 s",
                "10.0 s",
                "10 s",
                "59 s",
                "1 min 00 s",
                "7 min 05 s",
                "59 min 59 s",
                "1 h 00 min",
                "3 h 02 min"
            ]
        );
    }
}
