//! The system OpenSSH client as a transport: one master connection per host
//! (`ssh -M`, ControlMaster), every later command multiplexed over it
//! (`ssh -S`), with a bound on how long each may take.
//!
//! Why the system `ssh` and not a library: people's `~/.ssh/config`, agents,
//! keys, `User`, `ProxyJump` and `known_hosts` work as they do in their own
//! shell, and nothing but sshd is needed on a host. Why one master a host:
//! authentication happens once, so a command over it costs a channel, not a
//! TCP and key exchange, and a lost host shows as one dead master.
//!
//! Owns the masters (each in a process group of its own, closed and reaped by
//! PID when dropped) and their control sockets in a private directory.
//! Knows nothing of swarms; never runs a remote command unquoted: every word
//! it is given goes through [`quote`].

use parking_lot::Mutex;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub(crate) enum SshError {
    /// ssh itself failed (exit 255): its own last words, as `ssh: ...`.
    #[error("{0}")]
    Failed(String),
    #[error("cannot run ssh: {0}")]
    Spawn(io::Error),
    #[error("no answer within {0:.0?}")]
    TimedOut(Duration),
}

/// `s` as one word of a POSIX shell command line.
pub(crate) fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What every master and command is given, whatever the user says: a
/// launcher cannot answer a password prompt for eight hosts at once, and a
/// host that went away must be noticed in seconds, not at TCP's timeout.
/// These come after the user's `-o` options, and ssh takes the first value
/// it is given for a key, so a user's own choice wins.
const DEFAULTS: &[&str] = &[
    "BatchMode=yes",
    "ConnectTimeout=10",
    "ServerAliveInterval=1",
    "ServerAliveCountMax=3",
];

/// How to reach hosts: the user's `-o` options, and where the control
/// sockets live (a directory of ours, mode 0700, removed on drop).
#[derive(Debug)]
pub(crate) struct Client {
    options: Vec<String>,
    sockets: PathBuf,
}

impl Client {
    pub(crate) fn new(options: &[String]) -> io::Result<Client> {
        use std::os::unix::fs::DirBuilderExt;
        // Socket paths must fit in 108 bytes: a short directory in /tmp.
        let sockets = std::env::temp_dir().join(format!(
            "p2pft-ssh-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&sockets)?;
        Ok(Client {
            options: options.to_vec(),
            sockets,
        })
    }

    fn base(&self, socket: &Path, master: bool) -> Command {
        let mut command = Command::new("ssh");
        command
            .arg("-S")
            .arg(socket)
            .args([
                "-o",
                if master {
                    "ControlMaster=yes"
                } else {
                    "ControlMaster=no"
                },
            ])
            .args(["-o", "ControlPersist=no"]);
        for option in &self.options {
            command.arg("-o").arg(option);
        }
        for option in DEFAULTS {
            command.args(["-o", option]);
        }
        command
    }

    /// Opens the master connection to `host` (the `n`th: its socket's
    /// name), waiting until it takes commands, it fails, or `limit` passes.
    pub(crate) fn connect(
        &self,
        host: &str,
        n: usize,
        limit: Duration,
    ) -> Result<Master, SshError> {
        self.connect_named(host, &n.to_string(), limit)
    }

    /// As [`Client::connect`], its socket named `name`.
    pub(crate) fn connect_named(
        &self,
        host: &str,
        name: &str,
        limit: Duration,
    ) -> Result<Master, SshError> {
        let socket = self.sockets.join(name);
        let mut child = self
            .base(&socket, true)
            .arg("-T")
            .arg("--")
            .arg(host)
            // Not `-N`: a session that ends with our stdin, so the master
            // ends when the launcher does, however it went (`kill -9`).
            .arg("exec cat >/dev/null")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Signals reach it through the launcher only, as they do peers.
            .process_group(0)
            .spawn()
            .map_err(SshError::Spawn)?;
        let stderr = child.stderr.take().expect("piped");
        let words = thread::spawn(move || last_line(stderr));
        let master = Master {
            host: host.to_string(),
            socket,
            child: Mutex::new(Some(child)),
            base: self.options.clone(),
            words: Mutex::new(Some(words)),
            said: Mutex::new(None),
        };
        master.wait_ready(limit)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.sockets);
    }
}

/// The last non-empty line of a stream, read to its end.
fn last_line(stream: impl Read) -> String {
    let mut last = String::new();
    for line in BufReader::new(stream).lines().map_while(Result::ok) {
        if !line.trim().is_empty() {
            last = line.trim().to_string();
        }
    }
    last
}

/// ssh's last words as an error: `ssh: ...` as it says them, prefixed when
/// it did not.
fn failed(words: &str, status: Option<ExitStatus>) -> SshError {
    let words = if words.is_empty() {
        format!(
            "ssh ended with {}",
            status.map_or("no status".to_string(), |s| s.to_string())
        )
    } else {
        words.to_string()
    };
    SshError::Failed(if words.starts_with("ssh: ") {
        words
    } else {
        format!("ssh: {words}")
    })
}

/// One host's master connection, open until dropped.
#[derive(Debug)]
pub(crate) struct Master {
    pub host: String,
    socket: PathBuf,
    /// Locked only for a look at its state, never across a command.
    child: Mutex<Option<Child>>,
    base: Vec<String>,
    words: Mutex<Option<thread::JoinHandle<String>>>,
    /// Its last words once read, for every later question.
    said: Mutex<Option<String>>,
}

impl Master {
    fn wait_ready(self, limit: Duration) -> Result<Master, SshError> {
        let until = Instant::now() + limit;
        loop {
            let ended = {
                let mut child = self.child.lock();
                let status = child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                if status.is_some() {
                    *child = None;
                }
                status
            };
            if let Some(status) = ended {
                let words = self.words.lock().take().and_then(|w| w.join().ok());
                return Err(failed(&words.unwrap_or_default(), Some(status)));
            }
            // The socket appears once the master is authenticated and ready.
            if self.socket.exists() {
                let check = self
                    .plain()
                    .args(["-O", "check", "--", &self.host])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                if check.is_ok_and(|s| s.success()) {
                    return Ok(self);
                }
            }
            if Instant::now() > until {
                return Err(SshError::TimedOut(limit));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn plain(&self) -> Command {
        let mut command = Command::new("ssh");
        command.arg("-S").arg(&self.socket);
        for option in &self.base {
            command.arg("-o").arg(option);
        }
        command
    }

    /// Whether the master still runs (false: the host is lost).
    pub(crate) fn alive(&self) -> bool {
        matches!(
            self.child.lock().as_mut().map(|c| c.try_wait()),
            Some(Ok(None))
        )
    }

    /// `ssh host -- sh -c SCRIPT` over the master, not yet started: the
    /// remote login shell runs `sh`, so the script is POSIX sh whatever the
    /// user's shell is.
    pub(crate) fn command(&self, script: &str) -> Command {
        let mut command = self.plain();
        command
            .args(["-o", "ControlMaster=no", "-T", "--", &self.host])
            .arg(format!("sh -c {}", quote(script)));
        command
    }

    /// Runs `script` on the host with `input` on its stdin, and returns its
    /// exit status and stdout; ssh's own failure (exit 255) is an error with
    /// its words. Killed (by PID) when `limit` passes.
    pub(crate) fn run(
        &self,
        script: &str,
        input: Option<Box<dyn Read + Send>>,
        limit: Duration,
    ) -> Result<(ExitStatus, Vec<u8>, String), SshError> {
        // Without its master ssh would dial the host afresh, and wait
        // ConnectTimeout for a host that is gone.
        if !self.alive() {
            return Err(self.last_words().map_or_else(
                || SshError::Failed("ssh: the connection to the host is lost".into()),
                SshError::Failed,
            ));
        }
        let mut child = self
            .command(script)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(SshError::Spawn)?;
        if let (Some(mut input), Some(mut stdin)) = (input, child.stdin.take()) {
            thread::spawn(move || {
                let _ = io::copy(&mut input, &mut stdin);
                let _ = stdin.flush();
            });
        }
        let mut stdout = child.stdout.take().expect("piped");
        let out = thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = stdout.read_to_end(&mut bytes);
            bytes
        });
        let mut stderr = child.stderr.take().expect("piped");
        let err = thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let until = Instant::now() + limit;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() > until => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(SshError::TimedOut(limit));
                }
                Ok(None) => thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(SshError::Spawn(e)),
            }
        };
        let out = out.join().unwrap_or_default();
        let err = err.join().unwrap_or_default();
        if status.code() == Some(255) {
            let words = err.lines().rev().find(|l| !l.trim().is_empty());
            return Err(failed(words.unwrap_or(""), Some(status)));
        }
        Ok((status, out, err))
    }

    /// What ssh said when the master ended (the host lost), once it has.
    pub(crate) fn last_words(&self) -> Option<String> {
        if self.alive() {
            return None;
        }
        let mut said = self.said.lock();
        if said.is_none() {
            let words = self.words.lock().take()?.join().ok()?;
            if let SshError::Failed(w) = failed(&words, None) {
                *said = Some(w);
            }
        }
        said.clone()
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().take() {
            // Asked to end, it closes its sessions; killed by PID if it will not.
            let _ = self
                .plain()
                .args(["-O", "exit", "--", &self.host])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let until = Instant::now() + Duration::from_secs(2);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < until {
                thread::sleep(Duration::from_millis(5));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `f` of every item, at most `fanout` at once, results in order.
pub(crate) fn fan_out<T: Sync, R: Send>(
    items: &[T],
    fanout: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let results: Vec<parking_lot::Mutex<Option<R>>> = items
        .iter()
        .map(|_| parking_lot::Mutex::new(None))
        .collect();
    thread::scope(|scope| {
        for _ in 0..fanout.clamp(1, items.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(item) = items.get(i) else { return };
                *results[i].lock() = Some(f(item));
            });
        }
    });
    results
        .into_iter()
        .map(|r| r.into_inner().expect("every item was done"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_for_sh() {
        assert_eq!(quote("/srv/swarm"), "/srv/swarm");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("$(rm -rf /)"), "'$(rm -rf /)'");
        // What sh makes of it is the word itself.
        for word in ["a b", "it's", "$HOME", "x\"y", "`id`", "a\nb"] {
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", quote(word)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), word);
        }
    }

    #[test]
    fn fan_out_keeps_order_and_bounds_threads() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (now, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let items: Vec<u32> = (0..20).collect();
        let out = fan_out(&items, 3, |&i| {
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(n, Ordering::SeqCst);
            thread::sleep(Duration::from_millis(2));
            now.fetch_sub(1, Ordering::SeqCst);
            i * 2
        });
        assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        assert!(most.load(Ordering::SeqCst) <= 3);
        assert!(fan_out(&[] as &[u32], 4, |&i| i).is_empty());
    }

    #[test]
    fn ssh_words_become_one_error() {
        let e = failed("ssh: connect to host b2 port 22: Connection refused", None);
        assert_eq!(
            e.to_string(),
            "ssh: connect to host b2 port 22: Connection refused"
        );
        let e = failed("Host key verification failed.", None);
        assert_eq!(e.to_string(), "ssh: Host key verification failed.");
    }
}
