//! `p2pft swarm --ssh`: the peers of other hosts, started there over ssh.
//! Preflight (every host checked in parallel before anything is written,
//! started or removed, every failure reported at once), staging (the binary,
//! the configs, the metadata and the secret put on each host), the command
//! that runs a remote peer so that its status lines come back on ssh's
//! stdout, the check of its file on its own host, and `--clean`.
//!
//! Owns the hosts' master connections (through [`crate::app::ssh`]) for the
//! launcher's run. Never speaks the wire protocol, never starts a peer by
//! itself (the launcher in [`crate::app::swarm`] does, in PeerInfo order), and
//! never removes a host's shared file unless `--clean-files` asks.

use crate::app::ssh::{fan_out, quote, Client, Master, SshError};
use crate::protocol::config::{Config, PeerEntry};
use crate::support::status::mib;
use clap::Args;
use serde::Serialize;
use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Args, Clone, Default)]
pub struct SshArgs {
    /// Start every peer of PeerInfo.cfg on its host over ssh (the system
    /// OpenSSH client, one master connection a host); peers of this machine
    /// run here as without it.
    #[arg(long)]
    pub ssh: bool,
    /// The swarm directory on the other hosts [default: this one's absolute
    /// path, as on a shared home].
    #[arg(long, value_name = "DIR", requires = "ssh")]
    pub remote_dir: Option<PathBuf>,
    /// An option for ssh, as its `-o` takes it (`IdentityFile=~/.ssh/k`);
    /// repeat it for more. Yours win over the launcher's defaults.
    #[arg(long = "ssh-option", value_name = "OPT", requires = "ssh")]
    pub ssh_options: Vec<String>,
    /// p2pft on the other hosts [default: this binary, pushed to each host
    /// once, under a name with its version and hash].
    #[arg(long, value_name = "PATH", requires = "ssh")]
    pub remote_p2pft: Option<PathBuf>,
    /// Hosts checked and set up at once.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub fanout: usize,
    /// Remove from the other hosts what the launcher put there (the pushed
    /// binary, configs, metadata, secret), and nothing else; start nothing.
    #[arg(long, requires = "ssh")]
    pub clean: bool,
    /// With --clean: the peers' logs too.
    #[arg(long, requires = "clean")]
    pub clean_logs: bool,
    /// With --clean: the peers' directories too, the shared file in them.
    #[arg(long, requires = "clean")]
    pub clean_files: bool,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum RemoteError {
    /// Hosts that cannot run the swarm, one line each: nothing was started.
    #[error("{}\nnothing was started", .0.join("\n"))]
    Preflight(Vec<String>),
    /// Putting the swarm on a host failed half way: what was being done,
    /// and why.
    #[error("host {host}: {doing}: {cause}")]
    Staging {
        host: String,
        doing: String,
        #[source]
        cause: Box<StagingFailure>,
    },
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Why a step of staging failed on a host.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StagingFailure {
    /// A file of this machine's could not be read or written.
    #[error("{}: {source}", path.display())]
    Local { path: PathBuf, source: io::Error },
    /// ssh itself: the connection, or the command's time limit.
    #[error("{0}")]
    Ssh(#[from] SshError),
    /// The command ran and failed, in its own words.
    #[error("{status}: {stderr}")]
    Command { status: ExitStatus, stderr: String },
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Meta(#[from] crate::integrity::meta::MetaError),
}

/// The error of a step of staging on `host`, from its cause.
fn staging(host: &Host, doing: impl Into<String>) -> impl FnOnce(StagingFailure) -> RemoteError {
    let (host, doing) = (host.name.clone(), doing.into());
    move |cause| RemoteError::Staging {
        host,
        doing,
        cause: Box::new(cause),
    }
}

/// What the launcher's own work took, for the summary.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LaunchReport {
    /// Hosts reached over ssh.
    pub hosts: usize,
    /// Connecting and checking every host.
    pub preflight_secs: f64,
    /// Pushing the binary, the configs, metadata and secret.
    pub staging_secs: f64,
    /// Bytes of the binary pushed (0 when every host had it).
    pub pushed_bytes: u64,
}

/// How long one remote command (a check, a copy) may take at most.
const COMMAND_LIMIT: Duration = Duration::from_secs(120);

/// Peers whose sessions share one master connection. sshd allows 10
/// sessions a connection by default (`MaxSessions`); the master's own and a
/// command or two (a signal) need room beside the peers'. A session the
/// master is refused, ssh opens on a connection of its own, a login each,
/// saying `session request failed` on stderr.
const PEERS_PER_MASTER: usize = 7;

/// One host and the peers of PeerInfo.cfg it runs.
#[derive(Debug)]
struct Host {
    name: String,
    peers: Vec<PeerEntry>,
    master: Master,
    /// More master connections, one for each [`PEERS_PER_MASTER`] peers
    /// past the first that many.
    more: Vec<Master>,
    /// The remote directory is this machine's swarm directory (a shared
    /// home): nothing is staged or cleaned there.
    shared: bool,
    /// The pushed binary is there already.
    has_bin: bool,
    /// The metadata is there already.
    has_meta: bool,
}

impl Host {
    /// The master connection peer `id`'s session goes over.
    fn master_of(&self, id: u32) -> &Master {
        let at = self.peers.iter().position(|p| p.id == id).unwrap_or(0);
        match at / PEERS_PER_MASTER {
            0 => &self.master,
            k => self.more.get(k - 1).unwrap_or(&self.master),
        }
    }
}

/// The other hosts of a swarm, checked and connected.
#[derive(Debug)]
pub(crate) struct Launch {
    hosts: Vec<Host>,
    dir: PathBuf,
    bin: String,
    /// The binary to push, when it is ours.
    push: Option<(PathBuf, u64)>,
    pub report: LaunchReport,
    /// Sessions waiting for their peer's turn, by peer ID.
    sessions: parking_lot::Mutex<std::collections::HashMap<u32, Child>>,
    /// The started peers' stdin, where a heartbeat goes every second.
    beats: Arc<Heartbeats>,
    // Dropped last: the masters' sockets live in its directory.
    _client: Client,
}

/// What a host said to the preflight script, section by section.
#[derive(Debug, Default, PartialEq)]
struct Facts {
    uname: String,
    writable: bool,
    free_bytes: Option<u64>,
    listening: BTreeSet<u16>,
    /// Per peer of the host: the size and allocated bytes of its file.
    files: Vec<Option<(u64, u64)>>,
    has_bin: bool,
    shared: bool,
    has_meta: bool,
}

/// Ports in LISTEN state in /proc/net/tcp and tcp6 text.
fn listening_ports(text: &str) -> BTreeSet<u16> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            let state = fields.nth(1)?;
            let port = local.rsplit(':').next()?;
            (state == "0A").then(|| u16::from_str_radix(port, 16).ok())?
        })
        .collect()
}

fn parse_facts(out: &str) -> Facts {
    let mut facts = Facts::default();
    let mut section = "";
    let mut tcp = String::new();
    for line in out.lines() {
        if let Some(name) = line.strip_prefix('@') {
            section = match name.trim() {
                "uname" | "dir" | "df" | "tcp" | "files" | "bin" | "shared" | "meta" => name,
                _ => "",
            };
            continue;
        }
        match section {
            "uname" => facts.uname = line.trim().to_string(),
            "dir" => facts.writable |= line.trim() == "ok",
            // df -Pk: the fourth field is the KiB available.
            "df" => {
                facts.free_bytes = line
                    .split_whitespace()
                    .nth(3)
                    .and_then(|k| k.parse::<u64>().ok())
                    .map(|k| k * 1024)
                    .or(facts.free_bytes)
            }
            "tcp" => {
                tcp.push_str(line);
                tcp.push('\n');
            }
            "files" => facts.files.push({
                let mut f = line.split_whitespace().map(|x| x.parse::<u64>().ok());
                match (f.next().flatten(), f.next().flatten(), f.next().flatten()) {
                    (Some(size), Some(blocks), Some(unit)) => Some((size, blocks * unit)),
                    _ => None,
                }
            }),
            "bin" => facts.has_bin |= line.trim() == "ok",
            "shared" => facts.shared |= line.trim() == "yes",
            "meta" => facts.has_meta |= line.trim() == "yes",
            _ => {}
        }
    }
    facts.listening = listening_ports(&tcp);
    facts
}

/// The script that gathers [`Facts`] without writing anything.
fn preflight_script(dir: &str, bin: &str, files: &[String], probe: &str, meta: &str) -> String {
    let files: Vec<String> = files.iter().map(|f| quote(f)).collect();
    format!(
        r#"echo @uname; uname -sm
echo @dir; d={dir}; while [ ! -e "$d" ]; do d=$(dirname "$d"); done; [ -d "$d" ] && [ -w "$d" ] && echo ok
echo @df; df -Pk "$d" 2>/dev/null | tail -n 1
echo @tcp; cat /proc/net/tcp /proc/net/tcp6 2>/dev/null
echo @files; for f in {files}; do stat -c '%s %b %B' "$f" 2>/dev/null || echo -; done
echo @bin; [ -x {bin} ] && echo ok
echo @shared; [ -e {probe} ] && echo yes
echo @meta; [ -e {meta} ] && echo yes
echo @end
"#,
        dir = quote(dir),
        bin = quote(bin),
        probe = quote(probe),
        meta = quote(meta),
        files = if files.is_empty() {
            "''".to_string()
        } else {
            files.join(" ")
        }
    )
}

/// `uname -sm` of this machine: a pushed binary must run there too.
fn local_uname() -> io::Result<String> {
    let out = Command::new("uname").arg("-sm").output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The pushed binary's name: its version and the start of its SHA-1, so
/// that another build is another file and the same build is pushed once.
fn pushed_name(exe: &Path) -> io::Result<(String, u64)> {
    let file = std::fs::File::open(exe)?;
    let size = file.metadata()?.len();
    let hash = crate::integrity::meta::hash_file(&file, &crate::integrity::meta::never)?;
    let hex = crate::integrity::meta::to_hex(&hash);
    Ok((
        format!("p2pft-{}-{}", env!("CARGO_PKG_VERSION"), &hex[..12]),
        size,
    ))
}

/// Where the launcher keeps what is its own on a host.
const OWN_DIR: &str = ".p2pft";

/// Peers of `remote` grouped by host, in PeerInfo order of first mention.
fn by_host(remote: &[PeerEntry]) -> Vec<(String, Vec<PeerEntry>)> {
    let mut hosts: Vec<(String, Vec<PeerEntry>)> = Vec::new();
    for p in remote {
        match hosts.iter_mut().find(|(h, _)| *h == p.host) {
            Some((_, peers)) => peers.push(p.clone()),
            None => hosts.push((p.host.clone(), vec![p.clone()])),
        }
    }
    hosts
}

/// The time left before `deadline`, at most `most`.
fn left(deadline: Instant, most: Duration) -> Duration {
    deadline.saturating_duration_since(Instant::now()).min(most)
}

impl Launch {
    fn remote_path(&self, rel: impl AsRef<Path>) -> String {
        self.dir.join(rel).to_string_lossy().into_owned()
    }

    /// Connects to every host of `remote` and checks it can run its peers:
    /// reachable and authenticated, the directory writable, space for the
    /// files, the binary and the logs, the peers' ports free, a seed's file
    /// there at the right size. Writes nothing on any host; every failing
    /// host is named at once.
    /// `records(peers, with_meta)`: bytes of logs (and metadata) that many
    /// peers of the host write at most, as the launcher counts them here.
    pub(crate) fn preflight(
        args: &SshArgs,
        config: &Config,
        remote: &[PeerEntry],
        deadline: Instant,
        records: &(dyn Fn(u64, bool) -> u64 + Sync),
    ) -> Result<Launch, RemoteError> {
        let started = Instant::now();
        let dir = args
            .remote_dir
            .clone()
            .unwrap_or_else(|| config.dir.clone());
        let client = Client::new(&args.ssh_options)?;
        let push = match &args.remote_p2pft {
            Some(_) => None,
            None => {
                let exe = std::env::current_exe()?;
                let (name, size) = pushed_name(&exe)?;
                Some((exe, name, size))
            }
        };
        let bin = match (&args.remote_p2pft, &push) {
            (Some(path), _) => path.to_string_lossy().into_owned(),
            (None, Some((_, name, _))) => {
                dir.join(OWN_DIR).join(name).to_string_lossy().into_owned()
            }
            (None, None) => unreachable!("one of the two"),
        };
        let uname = local_uname()?;
        // A file only this run made, to tell a directory shared with the
        // remote host (an NFS home) from one of its own.
        let probe_name = format!(".p2pft-probe-{:016x}", rand::random::<u64>());
        let probe = config.dir.join(&probe_name);
        std::fs::write(&probe, b"")?;
        let meta_name = format!("{}.meta.json", config.common.file_name);
        let size = config.common.file_size_bytes;
        let groups = by_host(remote);
        let indexed: Vec<(usize, &(String, Vec<PeerEntry>))> = groups.iter().enumerate().collect();
        let checked = fan_out(&indexed, args.fanout, |(n, (host, peers))| {
            let fail = |why: String| Err(vec![format!("host {host}: {why}")]);
            let master = match client.connect(host, *n, left(deadline, Duration::from_secs(30))) {
                Ok(m) => m,
                Err(e) => return fail(e.to_string()),
            };
            let files: Vec<String> = peers
                .iter()
                .map(|p| {
                    dir.join(format!("peer_{}", p.id))
                        .join(&config.common.file_name)
                        .to_string_lossy()
                        .into_owned()
                })
                .collect();
            let script = preflight_script(
                &dir.to_string_lossy(),
                &bin,
                &files,
                &dir.join(&probe_name).to_string_lossy(),
                &dir.join(&meta_name).to_string_lossy(),
            );
            let facts = match master.run(&script, None, left(deadline, COMMAND_LIMIT)) {
                Ok((_, out, _)) => parse_facts(&String::from_utf8_lossy(&out)),
                Err(e) => return fail(e.to_string()),
            };
            let mut problems = Vec::new();
            let mut say = |why: String| problems.push(format!("host {host}: {why}"));
            match &args.remote_p2pft {
                Some(path) if !facts.has_bin => say(format!(
                    "{} is not an executable file there",
                    path.display()
                )),
                None if facts.uname != uname => say(format!(
                    "runs `{}`, this p2pft is built for `{uname}`: give --remote-p2pft",
                    facts.uname
                )),
                _ => {}
            }
            if !facts.writable {
                say(format!("{} not writable", dir.display()));
            }
            let mut need = 0u64;
            for (p, file) in peers
                .iter()
                .zip(facts.files.iter().chain(std::iter::repeat(&None)))
            {
                if facts.listening.contains(&p.port) {
                    say(format!(
                        "port {} of peer {} is in use: is the peer running there already?",
                        p.port, p.id
                    ));
                }
                match (p.has_file, file) {
                    (true, Some((got, _))) if *got == size => {}
                    (true, Some((got, _))) => say(format!(
                        "peer {}'s file peer_{}/{} has {got} bytes, FileSize is {size}",
                        p.id, p.id, config.common.file_name
                    )),
                    (true, None) => say(format!(
                        "peer {}'s file {} is missing (it is a seed)",
                        p.id,
                        dir.join(format!("peer_{}", p.id))
                            .join(&config.common.file_name)
                            .display()
                    )),
                    (false, Some((_, allocated))) => need += size.saturating_sub(*allocated),
                    (false, None) => need += size,
                }
            }
            if !facts.shared {
                need += records(peers.len() as u64, !facts.has_meta);
                if let (Some((_, _, bin_size)), false) = (&push, facts.has_bin) {
                    need += bin_size;
                }
            }
            match facts.free_bytes {
                Some(free) if free < need && facts.writable => say(format!(
                    "not enough free space in {}: {:.1} MiB needed, {:.1} MiB free",
                    dir.display(),
                    mib(need),
                    mib(free)
                )),
                _ => {}
            }
            if !problems.is_empty() {
                return Err(problems);
            }
            let mut more = Vec::new();
            for k in 1..peers.len().div_ceil(PEERS_PER_MASTER) {
                let name = format!("{n}.{k}");
                match client.connect_named(host, &name, left(deadline, Duration::from_secs(30))) {
                    Ok(m) => more.push(m),
                    Err(e) => return fail(e.to_string()),
                }
            }
            Ok(Host {
                name: host.clone(),
                peers: peers.clone(),
                master,
                more,
                shared: facts.shared,
                has_bin: facts.has_bin,
                has_meta: facts.has_meta,
            })
        });
        let _ = std::fs::remove_file(&probe);
        let mut hosts = Vec::new();
        let mut problems = Vec::new();
        for result in checked {
            match result {
                Ok(host) => hosts.push(host),
                Err(p) => problems.extend(p),
            }
        }
        if !problems.is_empty() {
            return Err(RemoteError::Preflight(problems));
        }
        Ok(Launch {
            report: LaunchReport {
                hosts: hosts.len(),
                preflight_secs: started.elapsed().as_secs_f64(),
                staging_secs: 0.0,
                pushed_bytes: 0,
            },
            hosts,
            dir,
            bin,
            push: push.map(|(exe, _, size)| (exe, size)),
            sessions: Default::default(),
            beats: Default::default(),
            _client: client,
        })
    }

    /// Copies the file `from` to `path` on `host`, mode `mode`, whole or not
    /// at all (a temporary name, then a rename).
    fn push(
        host: &Host,
        path: &str,
        from: &Path,
        mode: u32,
        deadline: Instant,
    ) -> Result<(), StagingFailure> {
        let tmp = format!("{path}.part");
        let script = format!(
            "umask 077 && mkdir -p \"$(dirname {p})\" && cat > {t} && chmod {mode:o} {t} && mv -f {t} {p}",
            p = quote(path),
            t = quote(&tmp),
        );
        let input = std::fs::File::open(from).map_err(|source| StagingFailure::Local {
            path: from.to_path_buf(),
            source,
        })?;
        match host.master.run(
            &script,
            Some(Box::new(input)),
            left(deadline, COMMAND_LIMIT),
        )? {
            (status, _, _) if status.success() => Ok(()),
            (status, _, err) => Err(StagingFailure::Command {
                status,
                stderr: err.trim().to_string(),
            }),
        }
    }

    /// Runs `script` (given on stdin: no limit on its length) on `host`,
    /// and returns its stdout.
    fn run_script(
        host: &Host,
        script: Vec<u8>,
        limit: Duration,
    ) -> Result<Vec<u8>, StagingFailure> {
        match host
            .master
            .run("exec sh -s", Some(Box::new(io::Cursor::new(script))), limit)?
        {
            (status, out, _) if status.success() => Ok(out),
            (status, _, err) => Err(StagingFailure::Command {
                status,
                stderr: err.trim().to_string(),
            }),
        }
    }

    /// Puts on every host what its peers need: the binary (once), the
    /// configs, the metadata (made on the seed's host when this machine has
    /// none, and fetched back here) and, with `secret`, the secret file.
    /// Each host gets its small files in one command: on a host whose login
    /// shell takes a quarter of a second to start, commands add up.
    pub(crate) fn stage(
        &mut self,
        config: &Config,
        fanout: usize,
        secret: Option<&Path>,
        deadline: Instant,
    ) -> Result<(), RemoteError> {
        let started = Instant::now();
        let mut files: Vec<(String, Vec<u8>, u32)> = Vec::new();
        for name in ["Common.cfg", "PeerInfo.cfg"] {
            files.push((
                self.remote_path(name),
                std::fs::read(config.dir.join(name))?,
                0o644,
            ));
        }
        let bin = self.bin.clone();
        let push = self.push.clone();
        if let Some((exe, _)) = &push {
            if self.hosts.iter().any(|h| h.shared && !h.has_bin) {
                // A shared home: the binary goes there from here, once.
                let part = PathBuf::from(format!("{bin}.part"));
                std::fs::create_dir_all(part.parent().expect("in a directory"))?;
                std::fs::copy(exe, &part)?;
                std::fs::rename(&part, &bin)?;
            }
        }
        let pushed = std::sync::atomic::AtomicU64::new(0);
        let results = fan_out(&self.hosts, fanout, |host| {
            if let (Some((exe, size)), false) = (&push, host.has_bin || host.shared) {
                // Pushed once: its name carries the version and hash.
                Launch::push(host, &bin, exe, 0o755, deadline)
                    .map_err(staging(host, format!("cannot write {bin}")))?;
                pushed.fetch_add(*size, std::sync::atomic::Ordering::Relaxed);
            }
            Ok::<(), RemoteError>(())
        });
        for r in results {
            r?;
        }
        self.report.pushed_bytes = pushed.into_inner();
        if let Some(meta) = self.fetch_meta(config, &files, deadline)? {
            let name = format!("{}.meta.json", config.common.file_name);
            files.push((self.remote_path(name), meta, 0o644));
        }
        if let Some(path) = secret {
            let secret_path = self.remote_path(secret_name(path));
            files.push((secret_path, std::fs::read(path)?, 0o600));
        }
        let script = files_script(&self.dir.to_string_lossy(), &files);
        let results = fan_out(&self.hosts, fanout, |host| {
            if host.shared {
                return Ok(());
            }
            Launch::run_script(host, script.clone(), left(deadline, COMMAND_LIMIT))
                .map(|_| ())
                .map_err(staging(host, "cannot stage the swarm's files"))
        });
        for r in results {
            r?;
        }
        self.report.staging_secs = started.elapsed().as_secs_f64();
        Ok(())
    }

    /// The metadata every host gets: this machine's, or else the seed
    /// host's (made there from the seed's file when it has none), saved
    /// here too so that this machine's peers and checks use it.
    fn fetch_meta(
        &self,
        config: &Config,
        configs: &[(String, Vec<u8>, u32)],
        deadline: Instant,
    ) -> Result<Option<Vec<u8>>, RemoteError> {
        let local = crate::integrity::meta::default_path(&config.dir, &config.common.file_name);
        if local.exists() {
            return Ok(Some(std::fs::read(&local)?));
        }
        let Some(host) = self
            .hosts
            .iter()
            .find(|h| h.peers.iter().any(|p| p.has_file))
        else {
            return Ok(None);
        };
        let seed = host.peers.iter().find(|p| p.has_file).expect("found above");
        let remote_meta = self.remote_path(format!("{}.meta.json", config.common.file_name));
        let dir = self.dir.to_string_lossy().into_owned();
        let make = if host.has_meta {
            String::new()
        } else {
            format!(
                "{bin} meta {file} --dir {dir} >&2 && ",
                bin = quote(&self.bin),
                file = quote(
                    &self.remote_path(format!("peer_{}/{}", seed.id, config.common.file_name))
                ),
                dir = quote(&dir),
            )
        };
        // `p2pft meta` reads PieceSize from the configs, put there first.
        let mut script = files_script(&dir, configs);
        script.extend(
            format!("cd {} && {make}cat {}\n", quote(&dir), quote(&remote_meta)).into_bytes(),
        );
        let fail = |doing: String| staging(host, doing);
        let out = Launch::run_script(host, script, left(deadline, Duration::from_secs(3600)))
            .map_err(fail("cannot make the metadata".into()))?;
        let meta: crate::integrity::meta::Meta = serde_json::from_slice(&out)
            .map_err(|e| fail(format!("its metadata {remote_meta} is not valid"))(e.into()))?;
        meta.save(&local)
            .map_err(|e| fail("cannot keep its metadata here".into())(e.into()))?;
        crate::integrity::meta::Meta::load(&local)
            .and_then(|m| m.verifier(&local, Some(&config.common)).map(|_| ()))
            .map_err(|e| fail("its metadata does not fit the configs".into())(e.into()))?;
        eprintln!(
            "{} the metadata on host {} from peer {}'s file",
            if host.has_meta { "took" } else { "made" },
            host.name,
            seed.id
        );
        Ok(Some(out))
    }

    /// Whether `entry` runs over ssh.
    pub(crate) fn runs(&self, entry: &PeerEntry) -> bool {
        self.hosts
            .iter()
            .any(|h| h.peers.iter().any(|p| p.id == entry.id))
    }

    fn host_of(&self, id: u32) -> Option<&Host> {
        self.hosts
            .iter()
            .find(|h| h.peers.iter().any(|p| p.id == id))
    }

    /// Opens a session for each peer over ssh, waiting on its host for its
    /// turn ([`Launch::start`]): peers start one after another, each once
    /// the previous listens, and a session's login shell (a quarter of a
    /// second on some hosts) is then not paid one after another as well.
    /// Opened before staging, so that the shells start while it runs; a
    /// session does nothing on its host until its turn.
    pub(crate) fn prestart(
        &self,
        connect_timeout: f64,
        secret: Option<&Path>,
        extra: &[String],
    ) -> io::Result<()> {
        Heartbeats::spawn(&self.beats)?;
        let mut sessions = self.sessions.lock();
        for host in &self.hosts {
            for entry in &host.peers {
                let child = self.session(host, entry, connect_timeout, secret, extra)?;
                sessions.insert(entry.id, child);
            }
        }
        Ok(())
    }

    /// Starts `entry` on its host, in the session [`Launch::prestart`]
    /// opened: ssh's stdout carries the peer's status lines, then a
    /// [`Line::Pid`] and, once it ends, a [`Line::Exit`] (ssh cannot tell a
    /// peer killed by a signal from its own failure).
    pub(crate) fn start(&self, entry: &PeerEntry) -> io::Result<Child> {
        let mut child = self.sessions.lock().remove(&entry.id).ok_or_else(|| {
            io::Error::other(format!("no ssh session was opened for peer {}", entry.id))
        })?;
        if let Some(mut go) = child.stdin.take() {
            use std::io::Write;
            // A session that ended already says why on stderr; its pipe is closed.
            let _ = go.write_all(b"go\n");
            self.beats.stdins.lock().push(go);
        }
        Ok(child)
    }

    fn session(
        &self,
        host: &Host,
        entry: &PeerEntry,
        connect_timeout: f64,
        secret: Option<&Path>,
        extra: &[String],
    ) -> io::Result<Child> {
        let dir = self.dir.to_string_lossy().into_owned();
        let mut words = vec![
            quote(&self.bin),
            "peer".into(),
            entry.id.to_string(),
            "--dir".into(),
            quote(&dir),
            "--status".into(),
            "--connect-timeout".into(),
            connect_timeout.to_string(),
        ];
        if let Some(path) = secret {
            words.push("--secret-file".into());
            words.push(quote(&self.remote_path(secret_name(path))));
        }
        words.extend(extra.iter().map(|w| quote(w)));
        // Its exit code is said on stdout and is the session's too.
        let script = format!(
            "read go || exit 0\ncd {} || exit 2\nexec 3<&0\n{} 3<&- &\np=$!\n{}w=$!\necho '{{\"remote_pid\":'$p'}}'\nwait $p\ne=$?\nkill $w 2>/dev/null\necho '{{\"remote_exit\":'$e'}}'\nexit $e\n",
            quote(&dir),
            words.join(" "),
            watchdog()
        );
        use std::os::unix::process::CommandExt;
        host.master_of(entry.id)
            .command(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
    }

    /// Sends `signal` (`INT`, `TERM`, `KILL`) to each of `targets`, a peer
    /// ID and its PID on its host, all hosts at once, one command a host
    /// (a session a peer could pass sshd's limit); waits at most 10 s.
    pub(crate) fn signal(&self, targets: &[(u32, u32)], signal: &str) {
        let by_host: Vec<(&Host, String)> = self
            .hosts
            .iter()
            .filter_map(|host| {
                let pids: Vec<String> = targets
                    .iter()
                    .filter(|(id, _)| host.peers.iter().any(|p| p.id == *id))
                    .map(|(_, pid)| pid.to_string())
                    .collect();
                (!pids.is_empty()).then(|| (host, pids.join(" ")))
            })
            .collect();
        fan_out(&by_host, by_host.len(), |(host, pids)| {
            let _ = host.master.run(
                &format!("kill -{signal} {pids}"),
                None,
                Duration::from_secs(10),
            );
        });
    }

    /// What ssh said when host `id`'s master ended, when it has: the host
    /// is lost.
    pub(crate) fn lost(&self, id: u32) -> Option<String> {
        let host = self.host_of(id)?;
        host.master_of(id)
            .last_words()
            .map(|w| format!("host {} lost: {w}", host.name))
    }

    /// Checks each of `ids`' files on its own host, by SHA-1 against the
    /// metadata (`p2pft verify`): pieces and the whole file. `None`: not
    /// checked (no metadata, the host lost).
    pub(crate) fn verify(&self, ids: &[u32], fanout: usize) -> Vec<Option<bool>> {
        let dir = self.dir.to_string_lossy().into_owned();
        fan_out(ids, fanout, |&id| {
            let host = self.host_of(id)?;
            let script = format!(
                "cd {d} && {b} verify --peer {id} --dir {d} >/dev/null 2>&1",
                d = quote(&dir),
                b = quote(&self.bin)
            );
            match host.master_of(id).run(&script, None, COMMAND_LIMIT) {
                Ok((s, _, _)) if s.success() => Some(true),
                Ok((s, _, _)) if s.code() == Some(1) => Some(false),
                _ => None,
            }
        })
    }
}

/// Seconds a remote peer runs on without a heartbeat from its launcher.
const LEASE_SECS: u32 = 6;

/// On the host, beside a peer `$p`: stops it cleanly when the launcher's
/// heartbeats stop for [`LEASE_SECS`] (the host cut off: sshd would notice
/// only at TCP's timeout, and the peer would hold its port and file) or its
/// stdin ends (the launcher gone). `read` takes a byte at a time from a
/// pipe, so nothing is read past the line it waits for.
/// (An asynchronous list's stdin is /dev/null: the session's is fd 3.)
fn watchdog() -> String {
    format!("( while timeout {LEASE_SECS} sh -c 'read x'; do :; done; kill -TERM $p ) <&3 >/dev/null 2>&1 &\n")
}

/// The started remote peers' stdin, and a thread that writes a line to
/// each every second until the [`Launch`] is dropped.
#[derive(Debug, Default)]
struct Heartbeats {
    stdins: parking_lot::Mutex<Vec<std::process::ChildStdin>>,
    stop: std::sync::atomic::AtomicBool,
}

impl Heartbeats {
    fn spawn(beats: &Arc<Heartbeats>) -> io::Result<()> {
        let beats = Arc::clone(beats);
        std::thread::Builder::new()
            .name("heartbeats".into())
            .spawn(move || {
                use std::io::Write;
                use std::sync::atomic::Ordering;
                while !beats.stop.load(Ordering::SeqCst) {
                    // A session that ended takes no more (its pipe is closed).
                    beats
                        .stdins
                        .lock()
                        .retain_mut(|s| s.write_all(b".\n").is_ok());
                    std::thread::sleep(Duration::from_secs(1));
                }
                beats.stdins.lock().clear();
            })?;
        Ok(())
    }
}

/// The name the secret file `path` gets in the remote directory: its own.
fn secret_name(path: &Path) -> String {
    path.file_name()
        .expect("a file")
        .to_string_lossy()
        .into_owned()
}

impl Drop for Launch {
    fn drop(&mut self) {
        self.beats
            .stop
            .store(true, std::sync::atomic::Ordering::SeqCst);
        // Sessions whose turn never came: their `read` ends with their stdin.
        for (_, mut child) in self.sessions.lock().drain() {
            drop(child.stdin.take());
            let until = Instant::now() + Duration::from_secs(2);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Base64 (RFC 4648, padded) in lines of 76, as `base64 -d` reads it.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len() * 4 / 3 + bytes.len() / 57 + 4);
    for (n, chunk) in bytes.chunks(3).enumerate() {
        if n > 0 && n % 19 == 0 {
            out.push('\n');
        }
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let v = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(v >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A sh script that writes each of `files` (path, bytes, mode) whole or
/// not at all, in `dir` made first: binary-safe, as base64 in here
/// documents, whose end mark no base64 line can be.
fn files_script(dir: &str, files: &[(String, Vec<u8>, u32)]) -> Vec<u8> {
    let mut script = format!("set -e\numask 077\nmkdir -p {}\n", quote(dir));
    for (path, bytes, mode) in files {
        let tmp = quote(&format!("{path}.part"));
        script += &format!(
            "base64 -d > {tmp} <<'P2PFT_END_OF_FILE'\n{}\nP2PFT_END_OF_FILE\nchmod {mode:o} {tmp}\nmv -f {tmp} {}\n",
            base64(bytes),
            quote(path)
        );
    }
    script.into_bytes()
}

/// What a remote peer's ssh says on stdout beside its status lines.
#[derive(Debug, PartialEq, serde::Deserialize)]
pub(crate) enum Line {
    #[serde(rename = "remote_pid")]
    Pid(u32),
    #[serde(rename = "remote_exit")]
    Exit(i32),
}

impl Line {
    pub(crate) fn parse(line: &str) -> Option<Line> {
        serde_json::from_str(line.trim()).ok()
    }
}

/// `p2pft swarm --ssh --clean`: removes from the hosts of `remote` what
/// the launcher put there (`secret` is the secret file's name), and with
/// `--clean-logs`, `--clean-files` the logs, the peers' directories; says
/// what it did a host and returns the exit code (0 every host cleaned).
pub(crate) fn clean(
    args: &SshArgs,
    config: &Config,
    remote: &[PeerEntry],
    deadline: Instant,
    secret: &str,
) -> i32 {
    let dir = args
        .remote_dir
        .clone()
        .unwrap_or_else(|| config.dir.clone());
    let client = match Client::new(&args.ssh_options) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let probe_name = format!(".p2pft-probe-{:016x}", rand::random::<u64>());
    let probe = config.dir.join(&probe_name);
    if let Err(e) = std::fs::write(&probe, b"") {
        eprintln!("error: {}: {e}", probe.display());
        return 1;
    }
    let groups = by_host(remote);
    let indexed: Vec<(usize, &(String, Vec<PeerEntry>))> = groups.iter().enumerate().collect();
    let results = fan_out(&indexed, args.fanout, |(n, (host, peers))| {
        let master = client
            .connect(host, *n, left(deadline, Duration::from_secs(30)))
            .map_err(|e: SshError| format!("host {host}: {e}"))?;
        let q = |rel: String| quote(&dir.join(rel).to_string_lossy());
        let mut paths = vec![
            q(OWN_DIR.into()),
            q("Common.cfg".into()),
            q("PeerInfo.cfg".into()),
            q(format!("{}.meta.json", config.common.file_name)),
            q(secret.into()),
        ];
        for p in peers {
            if args.clean_logs {
                paths.push(q(format!("log_peer_{}.log", p.id)));
            }
            if args.clean_files {
                paths.push(q(format!("peer_{}", p.id)));
            }
        }
        let script = format!(
            "if [ -e {probe} ]; then echo shared; exit 0; fi; rm -rf {}",
            paths.join(" "),
            probe = quote(&dir.join(&probe_name).to_string_lossy())
        );
        match master.run(&script, None, left(deadline, COMMAND_LIMIT)) {
            Ok((s, out, _)) if s.success() && String::from_utf8_lossy(&out).trim() == "shared" => {
                Ok(format!(
                    "host {host}: shares {} with this machine: nothing removed",
                    dir.display()
                ))
            }
            Ok((s, _, _)) if s.success() => Ok(format!("host {host}: cleaned {}", dir.display())),
            Ok((s, _, err)) => Err(format!("host {host}: rm ended with {s}: {}", err.trim())),
            Err(e) => Err(format!("host {host}: {e}")),
        }
    });
    let _ = std::fs::remove_file(&probe);
    let mut code = 0;
    for r in results {
        match r {
            Ok(line) => eprintln!("{line}"),
            Err(line) => {
                eprintln!("{line}");
                code = 1;
            }
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_ports_come_from_proc_net_tcp() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1771 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1772 0100007F:A000 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0
   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 100 0 0 10 0
";
        assert_eq!(
            listening_ports(text),
            BTreeSet::from([0x1771, 22]),
            "LISTEN (0A) only, v4 and v6"
        );
    }

    #[test]
    fn preflight_facts_are_read_section_by_section() {
        let out = "@uname\nLinux x86_64\n@dir\nok\n@df\nFilesystem 1024-blocks Used Available Capacity Mounted on\ntmpfs 1000 10 990 1% /srv\n@tcp\n   0: 0100007F:1771 00000000:0000 0A 0\n@files\n3000000 5864 512\n-\n@bin\n@shared\n@meta\nyes\n@end\n";
        let facts = parse_facts(out);
        assert_eq!(
            facts,
            Facts {
                uname: "Linux x86_64".into(),
                writable: true,
                free_bytes: Some(990 * 1024),
                listening: BTreeSet::from([0x1771]),
                files: vec![Some((3_000_000, 5864 * 512)), None],
                has_bin: false,
                shared: false,
                has_meta: true,
            }
        );
        // A host that said nothing is unwritable, with nothing known.
        assert!(!parse_facts("").writable);
    }

    #[test]
    fn the_preflight_script_writes_nothing_and_reads_a_missing_dir_by_its_parent() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("not/yet");
        let seed = root.path().join("seed.dat");
        std::fs::write(&seed, vec![7u8; 5000]).unwrap();
        let script = preflight_script(
            &dir.to_string_lossy(),
            "/nonexistent/p2pft",
            &[
                seed.to_string_lossy().into_owned(),
                root.path().join("none").to_string_lossy().into_owned(),
            ],
            &root.path().join("seed.dat").to_string_lossy(),
            "/nonexistent/meta",
        );
        let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
        let facts = parse_facts(&String::from_utf8_lossy(&out.stdout));
        assert!(facts.writable, "{}", String::from_utf8_lossy(&out.stdout));
        assert!(facts.free_bytes.is_some());
        assert_eq!(facts.files.len(), 2);
        assert_eq!(facts.files[0].map(|f| f.0), Some(5000));
        assert_eq!(facts.files[1], None);
        assert!(facts.shared && !facts.has_bin && !facts.has_meta);
        assert!(!dir.exists(), "the preflight made {}", dir.display());
    }

    #[test]
    fn files_are_written_whole_by_the_staging_script() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("swarm dir");
        let at = |name: &str| dir.join(name).to_string_lossy().into_owned();
        let binary: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let files = vec![
            (
                at("Common.cfg"),
                b"FileSize 1\nno newline at the end".to_vec(),
                0o644,
            ),
            (at(".secret"), b"ab\n\n".to_vec(), 0o600),
            (at("bytes"), binary.clone(), 0o644),
            (at("empty"), Vec::new(), 0o644),
        ];
        let mut sh = Command::new("sh")
            .arg("-s")
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        sh.stdin
            .take()
            .unwrap()
            .write_all(&files_script(&dir.to_string_lossy(), &files))
            .unwrap();
        assert!(sh.wait().unwrap().success());
        use std::os::unix::fs::PermissionsExt;
        for (path, bytes, mode) in &files {
            assert_eq!(&std::fs::read(path).unwrap(), bytes, "{path}");
            let got = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(got, *mode, "{path}");
        }
        assert_eq!(base64(b"Man"), "TWFu");
        assert_eq!(base64(b"Ma"), "TWE=");
        assert_eq!(base64(b"M"), "TQ==");
    }

    #[test]
    fn remote_lines_are_told_from_status_lines() {
        assert_eq!(Line::parse("{\"remote_pid\":4242}"), Some(Line::Pid(4242)));
        assert_eq!(
            Line::parse("{\"remote_exit\":137}\n"),
            Some(Line::Exit(137))
        );
        assert_eq!(Line::parse("{\"phase\":\"progress\"}"), None);
    }

    #[test]
    fn peers_are_grouped_by_host_in_file_order() {
        let p = |id, host: &str| PeerEntry {
            id,
            host: host.into(),
            port: 6000,
            has_file: false,
            line: 0,
        };
        let groups = by_host(&[p(1, "b"), p(2, "a"), p(3, "b")]);
        let shape: Vec<(String, Vec<u32>)> = groups
            .into_iter()
            .map(|(h, ps)| (h, ps.iter().map(|p| p.id).collect()))
            .collect();
        assert_eq!(shape, [("b".into(), vec![1, 3]), ("a".into(), vec![2])]);
    }
}
