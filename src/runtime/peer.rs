//! One peer process from start to exit: load and check the configuration and
//! the metadata, open the store (verifying a seed's file, finding what a
//! leecher already has), open the spec log, listen, dial the peers listed
//! above us, run the engine, report status, turn signals into a clean stop.
//!
//! Owns the start-up order and the mapping of failures to [`PeerError`]s;
//! never makes protocol decisions (that is the engine's job).

use crate::integrity::meta::{self, Meta, MetaError, Verifier};
use crate::integrity::progress::{self, Checkpointer};
use crate::machine::EngineError;
use crate::protocol::auth::{AuthError, Secret};
use crate::protocol::bitfield::Bitfield;
use crate::protocol::config::{Config, ConfigError};
use crate::protocol::layout::Layout;
use crate::runtime::engine::{Engine, EngineSetup, EVENT_QUEUE};
use crate::runtime::events::Event;
use crate::runtime::net;
use crate::runtime::speclog::SpecLog;
use crate::runtime::store::Store;
use crate::runtime::workers::Workers;
use crate::support::status::{Counters, Phase};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Threads for blocking disk work, for a store that writes with direct I/O or
/// not. A direct write sleeps until the device is done, so each thread is one
/// write in flight. Too many in flight slow a virtual disk down, and 8 was as
/// fast as 2 or 4 while keeping some depth for a device that wants more (see
/// docs/PERFORMANCE.md). A buffered write only copies into the page cache
/// under the file's exclusive lock, where many writers spin, so 4.
pub(crate) fn disk_threads(direct: bool) -> usize {
    if direct {
        8
    } else {
        4
    }
}

#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// The working directory: Common.cfg, PeerInfo.cfg, `peer_<ID>/` and the log.
    pub dir: PathBuf,
    pub id: u32,
    /// Print JSON status lines on stdout (for `p2pft swarm`).
    pub status: bool,
    /// How long to keep dialling a peer listed above us that is not up yet.
    pub connect_timeout: Duration,
    /// Seed for the choking and picking RNG; random when `None`.
    pub rng_seed: Option<u64>,
    /// Turn SIGINT/SIGTERM into a clean stop (for a process of its own).
    pub handle_signals: bool,
    /// Every extension off, whatever Common.cfg says (`--strict`).
    pub strict: bool,
    /// The swarm's secret file, instead of Common.cfg's `P2pftSecretFile`.
    pub secret_file: Option<PathBuf>,
    /// Rate caps in bytes a second, instead of Common.cfg's.
    pub max_upload_rate: Option<u64>,
    pub max_download_rate: Option<u64>,
    /// Never unchoke anyone: a swarm of such leechers around a seed is one
    /// without peer-to-peer, the baseline `bench --hosts` measures against.
    pub leech_only: bool,
}

/// Seconds a peer keeps dialling a peer listed above it, and waits for one
/// below it that left, by default (`--connect-timeout`).
pub(crate) const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 120;

impl PeerOptions {
    pub fn new(dir: PathBuf, id: u32) -> PeerOptions {
        PeerOptions {
            dir,
            id,
            status: false,
            connect_timeout: Duration::from_secs(DEFAULT_CONNECT_TIMEOUT_SECS),
            rng_seed: None,
            handle_signals: false,
            strict: false,
            secret_file: None,
            max_upload_rate: None,
            max_download_rate: None,
            leech_only: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum PeerError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Meta(#[from] MetaError),
    /// The swarm's secret file is missing, empty or readable by others.
    #[error("{0}")]
    Secret(#[from] AuthError),
    /// A seed's file does not match the metadata: it must not be served.
    #[error(
        "{} does not match its metadata: {differ} of {pieces} pieces differ (first: {}); refusing to serve it",
        path.display(),
        first_text(first)
    )]
    SeedMismatch {
        path: PathBuf,
        differ: u32,
        pieces: u32,
        /// The first few pieces that differ.
        first: Vec<u32>,
    },
}

fn first_text(first: &[u32]) -> String {
    let first: Vec<String> = first.iter().map(u32::to_string).collect();
    first.join(", ")
}

/// Prints status lines every 200 ms until `stop`, so a launcher can draw
/// progress, and one at once when the file becomes complete. When nobody
/// reads them any more (the pipe is closed: the launcher is gone, however
/// it went), the peer stops as on SIGHUP, cleanly, its progress recorded,
/// instead of running on unseen.
fn spawn_status_printer(
    id: u32,
    num_pieces: u32,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    events: crossbeam_channel::Sender<Event>,
) {
    thread::Builder::new()
        .name("status".into())
        .spawn(move || {
            let period = Duration::from_millis(200);
            while !stop.load(Relaxed) {
                let status = counters.snapshot(Phase::Progress, id, num_pieces);
                if let Err(e) = print_status(&status) {
                    if e.kind() == io::ErrorKind::BrokenPipe {
                        let _ = events.send(Event::Interrupt(signal_hook::consts::SIGHUP));
                        log::warn!("nobody reads the status lines any more: stopping");
                        return;
                    }
                }
                if status.phase == Phase::Complete {
                    thread::sleep(period); // reported: nothing left to wake for
                } else {
                    counters.wait_unless_complete(period);
                }
            }
        })
        .expect("spawn status thread");
}

fn print_status(s: &crate::support::status::Status) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{}", s.to_line())?;
    out.flush()
}

/// The metadata beside the configs, checked against Common.cfg; `None` (with
/// one warning) when there is none.
fn load_verifier(config: &Config) -> Result<Option<Verifier>, PeerError> {
    let path = meta::default_path(&config.dir, &config.common.file_name);
    if !path.exists() {
        log::warn!(
            "no metadata at {}: pieces are not verified (create it with `p2pft meta`)",
            path.display()
        );
        return Ok(None);
    }
    Ok(Some(
        Meta::load(&path)?.verifier(&path, Some(&config.common))?,
    ))
}

fn rate_mib_s(bytes: u64, since: Instant) -> f64 {
    crate::support::status::mib(bytes) / since.elapsed().as_secs_f64().max(1e-9)
}

/// A seed's file must match the metadata in every piece before it is served:
/// hashed whole, unless its check record says it matched and has not changed
/// since (see [`crate::integrity::checked`]). Hashes on `threads` threads.
fn check_seed(store: &Store, verifier: &Verifier, threads: usize) -> Result<(), PeerError> {
    if verifier.is_checked(store.path(), store.file()) {
        log::info!(
            "the seed's file is unchanged since it last matched the metadata ({}): not hashed again",
            crate::integrity::checked::path_for(store.path()).display()
        );
        return Ok(());
    }
    let started = Instant::now();
    log::info!(
        target: crate::support::process::NOTE,
        "checking the seed's file against the metadata ({:.1} MiB) before serving it",
        crate::support::status::mib(store.layout().file_size_bytes())
    );
    let good = verifier.check_and_record(store.path(), store.file(), &meta::hashing_pool(threads)?);
    log::info!(
        target: crate::support::process::NOTE,
        "checked the seed's file at {:.0} MiB/s",
        rate_mib_s(store.layout().file_size_bytes(), started)
    );
    if good.is_complete() {
        return Ok(());
    }
    Err(PeerError::SeedMismatch {
        path: store.path().to_path_buf(),
        differ: good.len() - good.count(),
        pieces: good.len(),
        first: (0..good.len()).filter(|&i| !good.has(i)).take(10).collect(),
    })
}

/// What a leecher already has: with metadata, every piece of its file that
/// hashes right (on `threads` threads); without, what its progress record
/// names.
fn resume(
    store: &Store,
    verifier: Option<&Verifier>,
    layout: &Layout,
    threads: usize,
) -> io::Result<Bitfield> {
    if !store.existed() {
        return Ok(Bitfield::empty(layout.num_pieces()));
    }
    let have = match verifier {
        Some(v) => {
            let started = Instant::now();
            log::info!(
                target: crate::support::process::NOTE,
                "re-hashing its file ({:.1} MiB) to resume with the pieces it has",
                crate::support::status::mib(layout.file_size_bytes())
            );
            let good = v.check_file(store.file(), &meta::hashing_pool(threads)?);
            log::info!(
                target: crate::support::process::NOTE,
                "re-hashed {:.1} MiB at {:.0} MiB/s: {} of {} pieces good",
                crate::support::status::mib(layout.file_size_bytes()),
                rate_mib_s(layout.file_size_bytes(), started),
                good.count(),
                good.len()
            );
            good
        }
        None => progress::load(&progress::path_for(store.path()), layout)
            .unwrap_or_else(|| Bitfield::empty(layout.num_pieces())),
    };
    if !have.none() {
        log::info!(target: crate::support::process::NOTE, "resuming with {} of {} pieces", have.count(), have.len());
    }
    Ok(have)
}

pub(crate) fn run(opts: &PeerOptions) -> Result<(), PeerError> {
    let mut config = Config::load(&opts.dir)?;
    // A launcher (`--status`) has said these once for all its peers.
    for warning in config.warnings.iter().filter(|_| !opts.status) {
        log::warn!("{warning}");
    }
    config.common.strict |= opts.strict;
    config.common.max_upload_rate = opts.max_upload_rate.or(config.common.max_upload_rate);
    config.common.max_download_rate = opts.max_download_rate.or(config.common.max_download_rate);
    config.common.serve &= !opts.leech_only;
    let extensions = !config.common.strict;
    let me = config.check_local_peer(opts.id)?.clone();
    let secret = match opts.secret_file.clone().or_else(|| config.secret_path()) {
        Some(path) => Some(Arc::new(Secret::load(&path)?)),
        None => None,
    };
    let layout = config.common.layout;
    let path = config.peer_file(me.id);
    let verifier = load_verifier(&config)?;
    // Threads for a start-up hash pass, started only when one is needed.
    let threads = thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(4);
    let (store, have, checkpointer) = if me.has_file {
        let store = Store::open_seed(&path, layout)?;
        if let Some(v) = &verifier {
            check_seed(&store, v, threads)?;
        }
        (store, Bitfield::full(layout.num_pieces()), None)
    } else {
        // Strict peers pick pieces at random, which granules do not suit.
        let gather = !config.common.strict;
        let store = Store::open_leecher(&path, layout, config.common.direct_io, gather)?;
        let have = resume(&store, verifier.as_ref(), &layout, threads)?;
        store.note_on_disk(&have);
        // With metadata, resume re-hashes the file: checkpoints only flush.
        let checkpointer = Arc::new(Checkpointer::new(
            store.path(),
            *store.layout(),
            verifier.is_none(),
        ));
        (store, have, Some(checkpointer))
    };
    // Readers verify pieces, and disk jobs go to worker threads (see
    // `workers` for why rayon is for start-up passes only).
    let disk = Workers::new("disk", disk_threads(store.reads_direct()))?;
    let held_pieces = (store.max_held_bytes() / u64::from(layout.piece_size_bytes())) as usize;
    // Kept copies only spare reads that would go to the device.
    let max_kept = if store.reads_direct() {
        crate::runtime::engine::max_kept(layout.piece_size_bytes(), store.max_held_bytes())
    } else {
        0
    };
    let log = SpecLog::open(&config.log_path(me.id), me.id)?;
    let listener = net::bind_listener(&me).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "peer {}: cannot listen on {}:{}: {e}",
                me.id, me.host, me.port
            ),
        )
    })?;
    let listen_addr = listener.local_addr()?;

    let counters = Arc::new(Counters::default());
    counters.pieces.store(have.count(), Relaxed);
    counters.complete.store(have.is_complete(), Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    let events = crossbeam_channel::bounded(EVENT_QUEUE);
    if opts.handle_signals {
        // First SIGINT/SIGTERM: a clean stop through the engine. Second: exit now.
        use signal_hook::consts::{SIGINT, SIGTERM};
        let events = events.0.clone();
        crate::support::process::on_signals(&[SIGINT, SIGTERM], move |signal| {
            let _ = events.send(Event::Interrupt(signal));
        })?;
    }
    let position = config.position(me.id).expect("checked above");
    let below: Vec<u32> = config.peers[position + 1..].iter().map(|p| p.id).collect();
    let greeting = net::Greeting {
        me: me.id,
        extensions,
        secret,
    };
    net::spawn_listener(
        greeting.clone(),
        listener,
        Arc::new(move |id| below.contains(&id)),
        events.0.clone(),
        Arc::clone(&stop),
    );
    if opts.status {
        let _ = print_status(&counters.snapshot(Phase::Listening, me.id, layout.num_pieces()));
        spawn_status_printer(
            me.id,
            layout.num_pieces(),
            Arc::clone(&counters),
            Arc::clone(&stop),
            events.0.clone(),
        );
    }
    for above in &config.peers[..position] {
        net::spawn_dialer(
            greeting.clone(),
            above.clone(),
            opts.connect_timeout,
            events.0.clone(),
            Arc::clone(&stop),
        );
    }
    let engine = Engine::new(EngineSetup {
        me: me.id,
        config,
        store: Arc::new(store),
        have,
        log,
        counters: Arc::clone(&counters),
        rng_seed: opts.rng_seed.unwrap_or_else(rand::random),
        disk,
        connect_timeout: opts.connect_timeout,
        events,
        stop: Arc::clone(&stop),
        verifier: verifier.map(Arc::new),
        checkpointer,
        // Room for the kept pieces, those the store may hold, and twice the
        // pieces that may wait to be stored (requests already out when the
        // bound is reached still come): past that, kept buffers are reused
        // before more are made.
        buffers: Arc::new(crate::support::piecebuf::BufferPool::new(
            max_kept,
            max_kept + held_pieces + 2 * crate::machine::max_storing(layout.piece_size_bytes()),
        )),
        greeting,
    });
    let result = engine.run();
    stop.store(true, Relaxed);
    net::wake_listener(listen_addr);
    result?;
    if opts.status {
        let _ = print_status(&counters.snapshot(Phase::Done, me.id, layout.num_pieces()));
    }
    Ok(())
}
