//! One peer process from start to exit: load and check the configuration,
//! open the store and the spec log, listen, dial the peers listed above us,
//! run the engine, report status.
//!
//! Owns the start-up order and the mapping of failures to [`PeerError`]s;
//! never makes protocol decisions (that is the engine's job).

use crate::bitfield::Bitfield;
use crate::config::{Config, ConfigError};
use crate::engine::{Engine, EngineError, EngineSetup, EVENT_QUEUE};
use crate::net;
use crate::speclog::SpecLog;
use crate::status::{Counters, Phase};
use crate::store::Store;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// The working directory: Common.cfg, PeerInfo.cfg, peer_<ID>/ and the log.
    pub dir: PathBuf,
    pub id: u32,
    /// Print JSON status lines on stdout (for `p2pft swarm`).
    pub status: bool,
    /// How long to keep dialling a peer listed above us that is not up yet.
    pub connect_timeout: Duration,
    /// Seed for the choking and picking RNG; random when `None`.
    pub rng_seed: Option<u64>,
}

impl PeerOptions {
    pub fn new(dir: PathBuf, id: u32) -> PeerOptions {
        PeerOptions {
            dir,
            id,
            status: false,
            connect_timeout: Duration::from_secs(120),
            rng_seed: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Engine(#[from] EngineError),
}

impl PeerError {
    /// 2 for a configuration the user must fix, 1 for a failure while running.
    pub fn exit_code(&self) -> i32 {
        match self {
            PeerError::Config(_) => 2,
            _ => 1,
        }
    }
}

/// Prints status lines every 200 ms until `stop`, so a launcher can draw progress.
fn spawn_status_printer(id: u32, num_pieces: u32, counters: Arc<Counters>, stop: Arc<AtomicBool>) {
    thread::Builder::new()
        .name("status".into())
        .spawn(move || {
            while !stop.load(Relaxed) {
                let s = counters.snapshot(Phase::Progress, id, num_pieces);
                let phase = if s.pieces == num_pieces {
                    Phase::Complete
                } else {
                    Phase::Progress
                };
                print_status(&crate::status::Status { phase, ..s });
                thread::sleep(Duration::from_millis(200));
            }
        })
        .expect("spawn status thread");
}

fn print_status(s: &crate::status::Status) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{}", s.to_line());
    let _ = out.flush();
}

pub fn run(opts: &PeerOptions) -> Result<(), PeerError> {
    let config = Config::load(&opts.dir)?;
    for warning in &config.warnings {
        log::warn!("{warning}");
    }
    let me = config.check_local_peer(opts.id)?.clone();
    let layout = config.common.layout;
    let path = config.peer_file(me.id);
    let (store, have) = if me.has_file {
        (
            Store::open_seed(&path, layout)?,
            Bitfield::full(layout.num_pieces()),
        )
    } else {
        (
            Store::open_leecher(&path, layout)?,
            Bitfield::empty(layout.num_pieces()),
        )
    };
    let log = SpecLog::open(&config.log_path(me.id), me.id)?;
    let listener = net::bind_listener(&me).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "peer {} cannot listen on {}:{}: {e}",
                me.id, me.host, me.port
            ),
        )
    })?;
    let listen_addr = listener.local_addr()?;

    let counters = Arc::new(Counters::default());
    counters.pieces.store(have.count(), Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    let events = crossbeam_channel::bounded(EVENT_QUEUE);
    let position = config.position(me.id).expect("checked above");
    let below: Vec<u32> = config.peers[position + 1..].iter().map(|p| p.id).collect();
    net::spawn_listener(
        me.id,
        listener,
        Arc::new(move |id| below.contains(&id)),
        events.0.clone(),
        Arc::clone(&stop),
    );
    if opts.status {
        print_status(&counters.snapshot(Phase::Listening, me.id, layout.num_pieces()));
        spawn_status_printer(
            me.id,
            layout.num_pieces(),
            Arc::clone(&counters),
            Arc::clone(&stop),
        );
    }
    for above in &config.peers[..position] {
        net::spawn_dialer(
            me.id,
            above.clone(),
            opts.connect_timeout,
            events.0.clone(),
            Arc::clone(&stop),
        );
    }
    let threads = thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(4);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("pool-{i}"))
        .build()
        .map_err(|e| io::Error::other(format!("cannot start the worker pool: {e}")))?;
    let engine = Engine::new(EngineSetup {
        me: me.id,
        config,
        store: Arc::new(store),
        have,
        log,
        counters: Arc::clone(&counters),
        rng_seed: opts.rng_seed.unwrap_or_else(rand::random),
        pool: Arc::new(pool),
        connect_timeout: opts.connect_timeout,
        events,
        stop: Arc::clone(&stop),
    });
    let result = engine.run();
    stop.store(true, Relaxed);
    net::wake_listener(listen_addr);
    result?;
    if opts.status {
        print_status(&counters.snapshot(Phase::Done, me.id, layout.num_pieces()));
    }
    Ok(())
}
