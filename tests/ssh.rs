//! `p2pft swarm --ssh` as an operator runs it: hosts made of network
//! namespaces on a bridge (as `tests/hosts.rs` builds them), each but the
//! controller running a real sshd (Debian's openssh-server) on its own
//! address, with a host key, a client key and a known_hosts file the test
//! generates. Each sshd runs in a mount namespace of its own with a tmpfs on
//! the remote directory, so what a host has got there over ssh and nothing
//! passes through a shared disk. Every test removes its namespaces and its
//! processes, by PID. Needs root, `ip`, `unshare`, `nsenter`, `sshd`.

mod common;
use common::{content, wait_until};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(120);
const SIZE: u64 = 3_000_000;

fn run(cmd: &mut Command) -> Output {
    let o = cmd.output().expect("run a tool");
    assert!(
        o.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

/// The namespaces of one test: a switch with a bridge, and hosts
/// 10.77.0.1 (the controller, no sshd) to 10.77.0.n.
struct Hosts {
    switch: String,
    names: Vec<String>,
    /// sshd of each host (None: the controller, or a host whose sshd is down).
    sshd: Vec<Option<Child>>,
    root: tempfile::TempDir,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl Hosts {
    /// `n` hosts; sshd runs on each of `with_sshd` (1-based, the
    /// controller is 1), the remote directory `remote` a tmpfs of its own
    /// (read-only on hosts in `read_only`).
    fn new(n: usize, with_sshd: &[usize], read_only: &[usize]) -> Hosts {
        Hosts::sharing(n, with_sshd, read_only, false)
    }

    /// As [`Hosts::new`]; with `shared`, every host sees this machine's
    /// disk, as on a shared home.
    fn sharing(n: usize, with_sshd: &[usize], read_only: &[usize], shared: bool) -> Hosts {
        Hosts::built(n, with_sshd, read_only, shared, 64)
    }

    /// As [`Hosts::sharing`], each sshd allowing `max_sessions` sessions a
    /// connection (`MaxSessions`; sshd's default is 10).
    fn built(
        n: usize,
        with_sshd: &[usize],
        read_only: &[usize],
        shared: bool,
        max_sessions: u32,
    ) -> Hosts {
        let tag = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let root = tempfile::tempdir().unwrap();
        let switch = format!("p2pft-ssw-{tag}");
        let mut hosts = Hosts {
            switch: switch.clone(),
            names: Vec::new(),
            sshd: Vec::new(),
            root,
        };
        ip(&["netns", "add", &switch]);
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        for i in 1..=n {
            let name = format!("p2pft-sh{i}-{tag}");
            ip(&["netns", "add", &name]);
            hosts.names.push(name.clone());
            // Made inside the namespaces: no name of the root namespace is used.
            let port = format!("v{i}");
            ip(&[
                "link", "add", "eth0", "netns", &name, "type", "veth", "peer", "name", &port,
                "netns", &switch,
            ]);
            ip(&["-n", &switch, "link", "set", &port, "master", "br0", "up"]);
            ip(&[
                "-n",
                &name,
                "addr",
                "add",
                &format!("10.77.0.{i}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &name, "link", "set", "eth0", "up"]);
            ip(&["-n", &name, "link", "set", "lo", "up"]);
        }
        hosts.keys(n);
        std::fs::create_dir_all(hosts.remote_dir()).unwrap();
        std::fs::create_dir_all(hosts.controller_dir()).unwrap();
        // sshd's privilege separation directory.
        std::fs::create_dir_all("/run/sshd").unwrap();
        for i in 1..=n {
            let sshd = with_sshd
                .contains(&i)
                .then(|| hosts.start_sshd(i, read_only.contains(&i), shared, max_sessions));
            hosts.sshd.push(sshd);
        }
        for i in 1..=n {
            if let Some(pid) = hosts.sshd_pid(i) {
                wait_until(Duration::from_secs(10), "sshd listening", || {
                    listens_on_22(pid)
                });
            }
        }
        hosts
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    /// The remote directory: empty on the real disk, a tmpfs on each host.
    fn remote_dir(&self) -> PathBuf {
        self.path("remote")
    }

    fn controller_dir(&self) -> PathBuf {
        self.path("controller")
    }

    fn keys(&self, n: usize) {
        for key in ["host_key", "client_key"] {
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", ""])
                .arg("-f")
                .arg(self.path(key)));
        }
        std::fs::copy(self.path("client_key.pub"), self.path("authorized_keys")).unwrap();
        let host_key = std::fs::read_to_string(self.path("host_key.pub")).unwrap();
        let known: String = (1..=n)
            .map(|i| format!("10.77.0.{i} {}", host_key.trim()) + "\n")
            .collect();
        std::fs::write(self.path("known_hosts"), known).unwrap();
    }

    fn start_sshd(&self, i: usize, read_only: bool, shared: bool, max_sessions: u32) -> Child {
        let config = self.path(&format!("sshd_config_{i}"));
        std::fs::write(
            &config,
            format!(
                "ListenAddress 10.77.0.{i}\nHostKey {}\nAuthorizedKeysFile {}\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\nMaxSessions {max_sessions}\nMaxStartups 64\nLogLevel ERROR\n",
                self.path("host_key").display(),
                self.path("authorized_keys").display()
            ),
        )
        .unwrap();
        let options = if read_only { "-o ro " } else { "" };
        // Its own mount namespace: the tmpfs is this host's disk alone.
        let sshd = "exec /usr/sbin/sshd -D -e -f \"$1\"";
        let script = match shared {
            true => sshd.to_string(),
            false => format!("mount -t tmpfs {options}tmpfs \"$0\" && {sshd}"),
        };
        Command::new("ip")
            .args(["netns", "exec", &self.names[i - 1]])
            .args([
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                &script,
            ])
            .arg(self.remote_dir())
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd (openssh-server)")
    }

    fn sshd_pid(&self, i: usize) -> Option<u32> {
        self.sshd[i - 1].as_ref().map(|c| c.id())
    }

    /// `--ssh-option`s that reach these hosts with the test's keys alone.
    fn ssh_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for option in [
            format!("IdentityFile={}", self.path("client_key").display()),
            "IdentitiesOnly=yes".to_string(),
            format!("UserKnownHostsFile={}", self.path("known_hosts").display()),
            "GlobalKnownHostsFile=/dev/null".to_string(),
            "StrictHostKeyChecking=yes".to_string(),
            "User=root".to_string(),
        ] {
            args.push("--ssh-option".to_string());
            args.push(option);
        }
        args.push("--remote-dir".to_string());
        args.push(self.remote_dir().to_string_lossy().into_owned());
        args
    }

    /// Writes the configs to the controller's directory: `peers` are
    /// (host, seed) in PeerInfo order; peer IDs 1001...
    fn write_configs(&self, peers: &[(usize, bool)]) {
        self.write_configs_sized(peers, SIZE);
    }

    fn write_configs_sized(&self, peers: &[(usize, bool)], size: u64) {
        let dir = self.controller_dir();
        std::fs::write(
            dir.join("Common.cfg"),
            format!("NumberOfPreferredNeighbors 2\nUnchokingInterval 0.5\nOptimisticUnchokingInterval 1\nFileName f.dat\nFileSize {size}\nPieceSize {}\n", if size > 8 << 20 { 262144 } else { 65536 }),
        )
        .unwrap();
        // Port 6001, and the next ones for more peers on one host.
        let info: String = peers
            .iter()
            .enumerate()
            .map(|(n, (host, seed))| {
                let port = 6001 + peers[..n].iter().filter(|(h, _)| h == host).count();
                format!("{} 10.77.0.{host} {port} {}\n", 1001 + n, u8::from(*seed))
            })
            .collect();
        std::fs::write(dir.join("PeerInfo.cfg"), info).unwrap();
    }

    /// `p2pft swarm --ssh --json` on the controller, with `extra` arguments.
    fn launch(&self, extra: &[&str]) -> Child {
        self.launch_with(extra, true)
    }

    /// As [`Hosts::launch`]; without `remote_dir`, the remote directory is
    /// the controller's own path.
    fn launch_with(&self, extra: &[&str], remote_dir: bool) -> Child {
        let mut ssh_args = self.ssh_args();
        if !remote_dir {
            ssh_args.truncate(ssh_args.len() - 2);
        }
        Command::new("ip")
            .args(["netns", "exec", &self.names[0]])
            .arg(common::P2PFT)
            .args(["swarm", "--ssh", "--json"])
            .args(if extra.contains(&"--timeout") {
                &[][..]
            } else {
                &["--timeout", "90"][..]
            })
            .args(ssh_args)
            .args(extra)
            .arg("--dir")
            .arg(self.controller_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// `sh -c script` in host `i`'s mount namespace (its tmpfs), `input` on stdin.
    fn on_host(&self, i: usize, script: &str, input: &[u8]) -> Output {
        let pid = self.sshd_pid(i).expect("a host with sshd");
        let mut child = Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-m", "--", "sh", "-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        let _ = child.stdin.take().unwrap().write_all(input);
        child.wait_with_output().unwrap()
    }

    /// The bytes of `rel` in the remote directory of host `i`.
    fn read_on_host(&self, i: usize, rel: &str) -> Option<Vec<u8>> {
        let path = self.remote_dir().join(rel);
        let o = self.on_host(i, &format!("cat '{}'", path.display()), b"");
        o.status.success().then_some(o.stdout)
    }

    /// Puts `bytes` at `rel` in the remote directory of host `i`.
    fn write_on_host(&self, i: usize, rel: &str, bytes: &[u8]) {
        let path = self.remote_dir().join(rel);
        let o = self.on_host(
            i,
            &format!(
                "mkdir -p \"$(dirname '{0}')\" && cat > '{0}'",
                path.display()
            ),
            bytes,
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }

    /// Processes in host `i`'s network namespace other than its sshd.
    fn processes(&self, i: usize) -> Vec<u32> {
        let o = run(Command::new("ip").args(["netns", "pids", &self.names[i - 1]]));
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter(|&p| Some(p) != self.sshd_pid(i))
            .collect()
    }

    /// The PID on host `i` of peer `id`'s process, if it runs.
    fn peer_pid(&self, i: usize, id: u32) -> Option<u32> {
        self.processes(i).into_iter().find(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let words: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            words
                .windows(2)
                .any(|w| w[0] == b"peer" && w[1] == id.to_string().as_bytes())
        })
    }
}

fn listens_on_22(pid: u32) -> bool {
    let tcp = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    tcp.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3 && f[1].ends_with(":0016") && f[3] == "0A"
    })
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // Whatever still runs in the hosts (sshd, sessions, peers), by PID:
        // asked first, so that a login shell's own lock files (a `.bashrc`
        // running `pyenv init`) are released; killed when it will not go.
        for i in 1..=self.names.len() {
            if let Some(mut sshd) = self.sshd[i - 1].take() {
                let _ = sshd.kill();
                let _ = sshd.wait();
            }
            for pid in self.processes(i) {
                let _ = Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .output();
            }
        }
        let until = Instant::now() + Duration::from_secs(3);
        while (1..=self.names.len()).any(|i| !self.processes(i).is_empty())
            && Instant::now() < until
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        for i in 1..=self.names.len() {
            for pid in self.processes(i) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).output();
            }
        }
        for name in self.names.iter().chain([&self.switch]) {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// A launcher, killed by PID if the test fails before it ends.
struct Launcher(Option<Child>);

impl Launcher {
    fn wait(mut self, limit: Duration) -> Output {
        let mut child = self.0.take().unwrap();
        let deadline = Instant::now() + limit;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let o = child.wait_with_output().unwrap();
                panic!(
                    "the launcher did not end within {limit:?}:\n{}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().unwrap()
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn report(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON summary ({e}):\n{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

fn peer(report: &serde_json::Value, id: u32) -> &serde_json::Value {
    report["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .unwrap_or_else(|| panic!("no peer {id} in {report}"))
}

fn seed_on_controller(hosts: &Hosts, file: &[u8]) {
    let dir = hosts.controller_dir().join("peer_1001");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("f.dat"), file).unwrap();
}

#[test]
fn four_hosts_the_seed_on_the_controller_every_file_matches_then_clean() {
    let hosts = Hosts::new(4, &[2, 3, 4], &[]);
    hosts.write_configs(&[(1, true), (2, false), (3, false), (4, false)]);
    let file = content(SIZE, 20);
    seed_on_controller(&hosts, &file);
    let o = Launcher(Some(hosts.launch(&[]))).wait(LIMIT);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    let r = report(&o);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(peer(&r, 1001)["file_check"], "same_as_seed", "{r}");
    for (id, host) in [(1002, 2), (1003, 3), (1004, 4)] {
        let p = peer(&r, id);
        assert_eq!(p["ssh"], true, "{r}");
        assert_eq!(p["host"], format!("10.77.0.{host}"), "{r}");
        assert_eq!(p["exit_code"], 0, "{r}");
        assert_eq!(p["file_check"], "matches_metadata", "{r}");
        assert!(p["bytes_in"].as_u64().unwrap() >= SIZE, "{r}");
        let got = hosts.read_on_host(host, &format!("peer_{id}/f.dat"));
        assert!(
            got.as_deref() == Some(&file[..]),
            "host {host}: its file differs"
        );
        // The launcher put its binary there once, under its version and hash.
        let listing = hosts.on_host(
            host,
            &format!("ls {}/.p2pft", hosts.remote_dir().display()),
            b"",
        );
        let names = String::from_utf8_lossy(&listing.stdout);
        assert!(names.trim().starts_with("p2pft-0."), "{names}");
    }
    assert_eq!(r["launch"]["hosts"], 3, "{r}");
    assert!(r["launch"]["pushed_bytes"].as_u64().unwrap() > 0, "{r}");
    // Nothing went through the shared disk.
    let shared: Vec<_> = std::fs::read_dir(hosts.remote_dir()).unwrap().collect();
    assert!(shared.is_empty(), "{shared:?}");

    // --clean removes what the launcher put there; files and logs stay.
    let o = Launcher(Some(hosts.launch(&["--clean"]))).wait(LIMIT);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for host in 2..=4 {
        let left = hosts.on_host(
            host,
            &format!("cd {} && ls -A", hosts.remote_dir().display()),
            b"",
        );
        let names = String::from_utf8_lossy(&left.stdout);
        let mut names: Vec<&str> = names.split_whitespace().collect();
        names.sort();
        let id = 1000 + host;
        assert_eq!(
            names,
            [format!("log_peer_{id}.log"), format!("peer_{id}")],
            "host {host}"
        );
    }
}

#[test]
fn twenty_peers_on_one_host_fit_sshds_default_session_limit() {
    // sshd's default MaxSessions, 10 sessions a connection: a session the
    // master is refused, ssh opens on a login of its own and says so on
    // stderr. The launcher opens a master for each 7 peers instead.
    let hosts = Hosts::built(2, &[2], &[], false, 10);
    let mut peers = vec![(1, true)];
    peers.extend([(2, false); 20]);
    hosts.write_configs(&peers);
    let file = content(SIZE, 21);
    seed_on_controller(&hosts, &file);
    let o = Launcher(Some(hosts.launch(&[]))).wait(LIMIT);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("session request failed"), "{stderr}");
    let r = report(&o);
    assert_eq!(r["ok"], true, "{r}");
    for id in 1002..=1021 {
        let p = peer(&r, id);
        assert_eq!(p["ssh"], true, "{r}");
        assert_eq!(p["exit_code"], 0, "{r}");
        assert_eq!(p["file_check"], "matches_metadata", "{r}");
    }
}

#[test]
fn a_p2pft_already_on_the_hosts_is_used_and_nothing_is_pushed() {
    // The hosts see this machine's disk but for their remote directory, so
    // the test's own build is "installed" there.
    let hosts = Hosts::new(3, &[2, 3], &[]);
    hosts.write_configs(&[(1, true), (2, false), (3, false)]);
    let file = content(SIZE, 24);
    seed_on_controller(&hosts, &file);
    let installed = std::fs::canonicalize(common::P2PFT).unwrap();
    let installed = installed.to_str().unwrap();
    let o = Launcher(Some(hosts.launch(&["--remote-p2pft", installed]))).wait(LIMIT);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    let r = report(&o);
    assert_eq!(r["launch"]["pushed_bytes"], 0, "{r}");
    for (id, host) in [(1002, 2), (1003, 3)] {
        assert_eq!(peer(&r, id)["file_check"], "matches_metadata", "{r}");
        let listing = hosts.on_host(
            host,
            &format!("ls -A {}/.p2pft 2>/dev/null", hosts.remote_dir().display()),
            b"",
        );
        let names = String::from_utf8_lossy(&listing.stdout);
        assert!(!names.contains("p2pft-"), "host {host}: {names}");
    }
}

#[test]
fn the_seed_on_a_remote_host_makes_the_metadata_there() {
    let hosts = Hosts::new(3, &[2, 3], &[]);
    // The controller runs a leecher; the seed is host 2's.
    hosts.write_configs(&[(2, true), (1, false), (3, false)]);
    let file = content(SIZE, 21);
    hosts.write_on_host(2, "peer_1001/f.dat", &file);
    let o = Launcher(Some(hosts.launch(&[]))).wait(LIMIT);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("made the metadata on host 10.77.0.2"),
        "{stderr}"
    );
    let r = report(&o);
    assert_eq!(peer(&r, 1002)["ssh"], false, "{r}");
    assert_eq!(peer(&r, 1002)["file_check"], "matches_metadata", "{r}");
    assert_eq!(peer(&r, 1001)["file_check"], "matches_metadata", "{r}");
    assert_eq!(peer(&r, 1003)["file_check"], "matches_metadata", "{r}");
    let here = std::fs::read(hosts.controller_dir().join("peer_1002/f.dat")).unwrap();
    assert!(here == file);
    // Fetched back and handed to every host.
    let meta = std::fs::read(hosts.controller_dir().join("f.dat.meta.json")).unwrap();
    assert_eq!(hosts.read_on_host(3, "f.dat.meta.json"), Some(meta));
}

#[test]
fn hosts_that_cannot_run_are_all_named_and_nothing_starts() {
    // Host 3 has no sshd; host 4's directory is read-only; host 2 is fine.
    let hosts = Hosts::new(4, &[2, 4], &[4]);
    hosts.write_configs(&[(1, true), (2, false), (3, false), (4, false)]);
    seed_on_controller(&hosts, &content(SIZE, 22));
    let started = Instant::now();
    let o = Launcher(Some(hosts.launch(&[]))).wait(LIMIT);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr
            .contains("host 10.77.0.3: ssh: connect to host 10.77.0.3 port 22: Connection refused"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "host 10.77.0.4: {} not writable",
            hosts.remote_dir().display()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("host 10.77.0.2"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(30));
    // Nothing started or written anywhere.
    assert!(!hosts.controller_dir().join("log_peer_1001.log").exists());
    let left = hosts.on_host(2, &format!("ls -A {}", hosts.remote_dir().display()), b"");
    assert_eq!(String::from_utf8_lossy(&left.stdout).trim(), "", "host 2");
    // The sshd process of that last look may take a moment to go.
    wait_until(
        Duration::from_secs(10),
        "end of every process on host 2",
        || hosts.processes(2).is_empty(),
    );
}

#[test]
fn a_seed_file_of_the_wrong_size_a_missing_one_and_a_busy_port_are_all_named() {
    // Host 2: a seed whose file is short; host 3: its peer's port taken;
    // host 4: a seed without its file.
    let hosts = Hosts::new(4, &[2, 3, 4], &[]);
    hosts.write_configs(&[(2, true), (3, false), (4, true), (1, false)]);
    hosts.write_on_host(2, "peer_1001/f.dat", &content(SIZE - 1, 23));
    // The host's processes are all removed by PID when `hosts` is dropped.
    let mut squatter = Command::new("ip")
        .args(["netns", "exec", &hosts.names[2], "python3", "-c"])
        .arg("import socket,time; s=socket.socket(); s.bind(('0.0.0.0',6001)); s.listen(); time.sleep(60)")
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), "listener on host 3", || {
        let tcp =
            std::fs::read_to_string(format!("/proc/{}/net/tcp", squatter.id())).unwrap_or_default();
        tcp.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(":1771") && f[3] == "0A"
        })
    });
    let o = Launcher(Some(hosts.launch(&[]))).wait(LIMIT);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    let expected = [
        format!(
            "host 10.77.0.2: peer 1001's file peer_1001/f.dat has {} bytes, FileSize is {SIZE}",
            SIZE - 1
        ),
        "host 10.77.0.3: port 6001 of peer 1002 is in use".to_string(),
        format!(
            "host 10.77.0.4: peer 1003's file {} is missing (it is a seed)",
            hosts.remote_dir().join("peer_1003/f.dat").display()
        ),
    ];
    for line in expected {
        assert!(stderr.contains(&line), "{line}\n---\n{stderr}");
    }
    assert!(!hosts.controller_dir().join("log_peer_1004.log").exists());
    for i in [2, 4] {
        wait_until(
            Duration::from_secs(10),
            "end of every process on the host",
            || hosts.processes(i).is_empty(),
        );
    }
    let _ = squatter.kill();
    let _ = squatter.wait();
}

/// Waits until peer `id` on host `i` has logged at least one piece.
fn until_it_has_pieces(hosts: &Hosts, i: usize, id: u32) {
    wait_until(LIMIT, "a piece on the remote peer", || {
        hosts
            .read_on_host(i, &format!("log_peer_{id}.log"))
            .is_some_and(|log| String::from_utf8_lossy(&log).contains("has downloaded the piece"))
    });
}

#[test]
fn a_remote_peer_killed_mid_run_is_named_and_a_rerun_finishes() {
    let hosts = Hosts::new(4, &[2, 3, 4], &[]);
    hosts.write_configs(&[(1, true), (2, false), (3, false), (4, false)]);
    let file = content(SIZE, 23);
    seed_on_controller(&hosts, &file);
    // Slow enough to be caught half way: some 6 s for the file.
    let launcher = Launcher(Some(hosts.launch(&["--max-download-rate", "500K"])));
    until_it_has_pieces(&hosts, 3, 1003);
    let pid = hosts.peer_pid(3, 1003).expect("peer 1003 runs on host 3");
    run(Command::new("kill").args(["-9", &pid.to_string()]));
    let killed = Instant::now();
    let o = launcher.wait(LIMIT);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        killed.elapsed() < Duration::from_secs(15),
        "{:?}",
        killed.elapsed()
    );
    assert!(
        stderr.contains("peer 1003 on host 10.77.0.3 ended with 137 before it had the file"),
        "{stderr}"
    );
    let r = report(&o);
    assert!(r["lost"].as_array().is_some_and(|l| l.len() == 1), "{r}");
    // No peer left running on any host.
    for host in 2..=4 {
        wait_until(Duration::from_secs(15), "the hosts' peers to end", || {
            hosts.peer_pid(host, 1000 + host as u32).is_none()
        });
    }
    // The same command again resumes and finishes.
    let o = Launcher(Some(hosts.launch(&[]))).wait(LIMIT);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    for (id, host) in [(1002u32, 2usize), (1003, 3), (1004, 4)] {
        let got = hosts.read_on_host(host, &format!("peer_{id}/f.dat"));
        assert!(
            got.as_deref() == Some(&file[..]),
            "host {host}: its file differs"
        );
    }
    // The pushed binary was there already.
    assert_eq!(report(&o)["launch"]["pushed_bytes"], 0);
}

#[test]
fn a_host_cut_off_mid_run_is_named_within_seconds_and_a_rerun_finishes() {
    let hosts = Hosts::new(3, &[2, 3], &[]);
    hosts.write_configs(&[(1, true), (2, false), (3, false)]);
    let file = content(SIZE, 27);
    seed_on_controller(&hosts, &file);
    let launcher = Launcher(Some(hosts.launch(&["--max-download-rate", "300K"])));
    until_it_has_pieces(&hosts, 3, 1003);
    let peer_pid = hosts.peer_pid(3, 1003).expect("peer 1003 runs on host 3");
    // The host goes away: no FIN, no RST, nothing.
    ip(&["-n", &hosts.names[2], "link", "set", "eth0", "down"]);
    let cut = Instant::now();
    let o = launcher.wait(LIMIT);
    let named_after = cut.elapsed();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        named_after < Duration::from_secs(10),
        "{named_after:?}: {stderr}"
    );
    assert!(
        stderr.contains("host 10.77.0.3 lost: ssh: Timeout, server 10.77.0.3 not responding."),
        "{stderr}"
    );
    // Cut off from its launcher, the peer stops by itself (its lease ends).
    wait_until(Duration::from_secs(15), "the cut-off peer to stop", || {
        !std::path::Path::new(&format!("/proc/{peer_pid}")).exists()
    });
    ip(&["-n", &hosts.names[2], "link", "set", "eth0", "up"]);
    let o = Launcher(Some(hosts.launch(&[]))).wait(LIMIT);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    for (id, host) in [(1002u32, 2usize), (1003, 3)] {
        let got = hosts.read_on_host(host, &format!("peer_{id}/f.dat"));
        assert!(
            got.as_deref() == Some(&file[..]),
            "host {host}: its file differs"
        );
    }
}

#[test]
fn ctrl_c_stops_every_peer_on_every_host() {
    let hosts = Hosts::new(3, &[2, 3], &[]);
    hosts.write_configs(&[(1, true), (2, false), (3, false)]);
    seed_on_controller(&hosts, &content(SIZE, 24));
    let launcher = Launcher(Some(hosts.launch(&["--max-download-rate", "300K"])));
    until_it_has_pieces(&hosts, 3, 1003);
    let pid = launcher.0.as_ref().unwrap().id();
    run(Command::new("kill").args(["-INT", &pid.to_string()]));
    let o = launcher.wait(LIMIT);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{stderr}");
    let r = report(&o);
    assert_eq!(r["interrupted"], 2, "{r}");
    for id in [1002, 1003] {
        assert_eq!(peer(&r, id)["exit_code"], 130, "stopped cleanly: {r}");
    }
    for host in 1..=3 {
        wait_until(
            Duration::from_secs(15),
            "nothing left running on a host",
            || hosts.processes(host).is_empty(),
        );
    }
}

#[test]
fn a_launcher_killed_outright_leaves_nothing_running_anywhere() {
    let hosts = Hosts::new(3, &[2, 3], &[]);
    hosts.write_configs(&[(1, true), (2, false), (3, false)]);
    seed_on_controller(&hosts, &content(SIZE, 28));
    let launcher = Launcher(Some(hosts.launch(&["--max-download-rate", "300K"])));
    until_it_has_pieces(&hosts, 3, 1003);
    assert!(hosts.peer_pid(2, 1002).is_some() && !hosts.processes(1).is_empty());
    let pid = launcher.0.as_ref().unwrap().id();
    run(Command::new("kill").args(["-9", &pid.to_string()]));
    let _ = launcher.wait(LIMIT);
    // Its peers, its ssh masters and sessions: on the controller too.
    for host in 1..=3 {
        wait_until(
            Duration::from_secs(20),
            "nothing left running on a host",
            || hosts.processes(host).is_empty(),
        );
    }
    // Only the masters' empty socket directory stays: removed here.
    let prefix = format!("p2pft-ssh-{pid}-");
    for entry in std::fs::read_dir(std::env::temp_dir()).unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            std::fs::remove_dir(entry.path()).expect("empty: no master left");
        }
    }
}

#[test]
fn a_shared_home_is_used_as_it_is_and_never_cleaned() {
    // Every host sees the controller's disk; the remote directory is by
    // default the swarm directory's own path.
    let hosts = Hosts::sharing(3, &[2, 3], &[], true);
    hosts.write_configs(&[(1, true), (2, false), (3, false)]);
    let file = content(SIZE, 29);
    seed_on_controller(&hosts, &file);
    let o = Launcher(Some(hosts.launch_with(&[], false))).wait(LIMIT);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    let r = report(&o);
    assert_eq!(
        r["launch"]["pushed_bytes"], 0,
        "copied here, not pushed: {r}"
    );
    let dir = hosts.controller_dir();
    for id in [1002, 1003] {
        assert_eq!(peer(&r, id)["file_check"], "matches_metadata", "{r}");
        assert!(std::fs::read(dir.join(format!("peer_{id}/f.dat"))).unwrap() == file);
    }
    let own: Vec<_> = std::fs::read_dir(dir.join(".p2pft")).unwrap().collect();
    assert_eq!(own.len(), 1, "{own:?}");
    // --clean leaves the controller's own directory alone.
    let o = Launcher(Some(hosts.launch_with(&["--clean"], false))).wait(LIMIT);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("nothing removed"), "{stderr}");
    assert!(dir.join("Common.cfg").exists() && dir.join(".p2pft").exists());
}

#[test]
fn the_time_limit_bounds_the_whole_job_and_stops_every_host() {
    let hosts = Hosts::new(3, &[2, 3], &[]);
    hosts.write_configs(&[(1, true), (2, false), (3, false)]);
    seed_on_controller(&hosts, &content(SIZE, 30));
    let started = Instant::now();
    let launcher = hosts.launch(&["--max-download-rate", "100K", "--timeout", "5"]);
    let o = Launcher(Some(launcher)).wait(LIMIT);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(report(&o)["timed_out"], true);
    for host in 1..=3 {
        wait_until(
            Duration::from_secs(20),
            "nothing left running on a host",
            || hosts.processes(host).is_empty(),
        );
    }
}

#[test]
fn a_secret_swarm_over_ssh_gives_every_host_the_secret() {
    let hosts = Hosts::new(3, &[2, 3], &[]);
    hosts.write_configs(&[(1, true), (2, false), (3, false)]);
    let file = content(SIZE, 25);
    seed_on_controller(&hosts, &file);
    let o = Launcher(Some(hosts.launch(&["--secret"]))).wait(LIMIT);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    let secret = std::fs::read(hosts.controller_dir().join(".p2pft-secret")).unwrap();
    for host in 2..=3 {
        let path = hosts.remote_dir().join(".p2pft-secret");
        let o = hosts.on_host(
            host,
            &format!(
                "stat -c %a '{}' && cat '{}'",
                path.display(),
                path.display()
            ),
            b"",
        );
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let (mode, got) = text.split_once('\n').unwrap();
        assert_eq!(mode, "600", "host {host}");
        assert_eq!(got.as_bytes(), &secret[..], "host {host}");
        let got = hosts.read_on_host(host, &format!("peer_{}/f.dat", 1000 + host));
        assert!(
            got.as_deref() == Some(&file[..]),
            "host {host}: its file differs"
        );
    }
}

/// The launcher's own overhead (preflight and staging) on 8 hosts against
/// the swarm's run time, for files of a few sizes:
/// `cargo test --test ssh -- --ignored --nocapture overhead`.
#[test]
#[ignore]
fn overhead_on_eight_hosts() {
    let hosts = Hosts::new(9, &(2..=9).collect::<Vec<_>>(), &[]);
    let peers: Vec<(usize, bool)> = (1..=9).map(|h| (h, h == 1)).collect();
    println!("MiB,binary pushed,preflight s,staging s,swarm s,launcher s");
    for size in [4 << 20, 64 << 20, 256 << 20] {
        hosts.write_configs_sized(&peers, size);
        let _ = std::fs::remove_file(hosts.controller_dir().join("f.dat.meta.json"));
        seed_on_controller(&hosts, &content(size, 26));
        for _ in 0..2 {
            // Every leecher starts with nothing.
            for host in 2..=9 {
                let dir = hosts.remote_dir();
                let rm = format!("rm -rf {0}/peer_* {0}/log_* {0}/*.meta.json", dir.display());
                hosts.on_host(host, &rm, b"");
            }
            let started = Instant::now();
            let o = Launcher(Some(hosts.launch(&[]))).wait(LIMIT);
            let total = started.elapsed().as_secs_f64();
            let stderr = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(0), "{stderr}");
            let r = report(&o);
            println!(
                "{},{},{:.3},{:.3},{:.3},{total:.3}",
                size >> 20,
                r["launch"]["pushed_bytes"].as_u64().unwrap() > 0,
                r["launch"]["preflight_secs"].as_f64().unwrap(),
                r["launch"]["staging_secs"].as_f64().unwrap(),
                r["wall_secs"].as_f64().unwrap()
            );
        }
        // The next size starts with a fresh binary push only the first time.
        let _ = std::fs::remove_dir_all(hosts.controller_dir().join("peer_1001"));
    }
}
