//! Hosts made of network namespaces, for `p2pft bench --hosts`: one
//! namespace a host, each with one link (a veth pair) to a bridge in a
//! namespace of its own, the link capped both ways with `tbf` as a network
//! card caps it. Also one TCP stream through two capped links, the ceiling
//! the swarm's figures are read against.
//!
//! Owns the namespaces it makes: [`Lan`] removes them (and with them every
//! veth, the bridge and the qdiscs) when dropped, and removes a namespace an
//! earlier bench left behind when that bench's process is gone. Never touches
//! a namespace or interface it did not name, nor the caller's namespace.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

/// Every name this module gives starts with this, then the bench's PID.
const PREFIX: &str = "p2pft-b";

#[derive(Debug, thiserror::Error)]
pub(crate) enum NetnsError {
    #[error("hosts of network namespaces need root (CAP_SYS_ADMIN and CAP_NET_ADMIN): run it as root, or with sudo")]
    NotRoot,
    #[error("cannot run `{program}` (install iproute2): {source}")]
    Missing {
        program: &'static str,
        source: io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

/// Runs `program args`, an error with its stderr unless it succeeded.
fn run(program: &'static str, args: &[&str]) -> Result<(), NetnsError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| NetnsError::Missing { program, source })?;
    if out.status.success() {
        return Ok(());
    }
    Err(NetnsError::Failed {
        command: format!("{program} {}", args.join(" ")),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// The address of host `i` (0-based): 10.78.0.1 onwards, 250 to a /16's
/// third byte, so a few thousand hosts fit.
pub(crate) fn host_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 78, (i / 250) as u8, (i % 250 + 1) as u8)
}

/// The `tbf` settings for a cap of `rate` bytes a second: a bucket of 10 ms
/// at the rate (at least 32 KiB, so a kernel tick's worth always passes),
/// and a queue of 50 ms, so that one TCP stream keeps the link busy.
fn tbf_args(rate: u64) -> Vec<String> {
    let burst = (rate / 100).max(32 << 10);
    [
        "root".to_string(),
        "tbf".into(),
        "rate".into(),
        format!("{}bit", rate * 8),
        "burst".into(),
        burst.to_string(),
        "latency".into(),
        "50ms".into(),
    ]
    .into()
}

/// Network namespaces `p2pft-b<PID>-<i>`, one a host, joined by a bridge in
/// `p2pft-b<PID>-sw`; removed on drop.
pub(crate) struct Lan {
    switch: String,
    hosts: Vec<String>,
}

impl Lan {
    /// `n` hosts, each link capped at `rate` bytes a second both ways
    /// (uncapped when `None`), its frames at most `mtu` bytes.
    pub(crate) fn new(n: usize, rate: Option<u64>, mtu: u32) -> Result<Lan, NetnsError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(NetnsError::NotRoot);
        }
        remove_stale();
        let tag = format!("{PREFIX}{}", std::process::id());
        let sw = format!("{tag}-sw");
        run("ip", &["netns", "add", &sw])?;
        // From here on, dropping it removes what was made.
        let mut lan = Lan {
            switch: sw.clone(),
            hosts: Vec::new(),
        };
        run("ip", &["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        run("ip", &["-n", &sw, "link", "set", "br0", "up"])?;
        for i in 0..n {
            let name = format!("{tag}-{i}");
            run("ip", &["netns", "add", &name])?;
            lan.hosts.push(name.clone());
            // Made inside the switch: the name needs to be unique there only.
            let port = format!("h{i}");
            run(
                "ip",
                &[
                    "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                    "netns", &name,
                ],
            )?;
            // Both ends of the cable; the bridge takes its ports' least.
            let mtu = mtu.to_string();
            run("ip", &["-n", &sw, "link", "set", &port, "mtu", &mtu])?;
            run(
                "ip",
                &["-n", &sw, "link", "set", &port, "master", "br0", "up"],
            )?;
            run("ip", &["-n", &name, "link", "set", "eth0", "mtu", &mtu])?;
            let addr = format!("{}/16", host_addr(i));
            run("ip", &["-n", &name, "addr", "add", &addr, "dev", "eth0"])?;
            run("ip", &["-n", &name, "link", "set", "eth0", "up"])?;
            run("ip", &["-n", &name, "link", "set", "lo", "up"])?;
            if let Some(rate) = rate {
                let tbf = tbf_args(rate);
                let tbf: Vec<&str> = tbf.iter().map(String::as_str).collect();
                // Upload: what leaves the host. Download: what the bridge
                // sends down its port to the host.
                let up = [&["-n", &name, "qdisc", "add", "dev", "eth0"][..], &tbf].concat();
                run("tc", &up)?;
                let down = [&["-n", &sw, "qdisc", "add", "dev", &port][..], &tbf].concat();
                run("tc", &down)?;
            }
        }
        Ok(lan)
    }

    /// The namespace of host `i`.
    pub(crate) fn host(&self, i: usize) -> &str {
        &self.hosts[i]
    }

    /// The MTU of host `i`'s link, as its kernel has it.
    pub(crate) fn link_mtu(&self, i: usize) -> Option<u32> {
        let out = Command::new("ip")
            .args(["-n", &self.hosts[i], "-o", "link", "show", "eth0"])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut words = text.split_whitespace();
        words.find(|w| *w == "mtu")?;
        words.next()?.parse().ok()
    }

    /// Bytes each host sent up its link, as its `tbf` counted them (the
    /// cap's own figure, from outside the peers), `None` for one without.
    pub(crate) fn sent_bytes(&self) -> Vec<Option<u64>> {
        self.hosts
            .iter()
            .map(|name| {
                let out = Command::new("tc")
                    .args(["-n", name, "-s", "qdisc", "show", "dev", "eth0"])
                    .output()
                    .ok()?;
                let text = String::from_utf8_lossy(&out.stdout);
                let tbf = text.split("qdisc ").find(|q| q.starts_with("tbf"))?;
                let sent = tbf.split("Sent ").nth(1)?;
                sent.split_whitespace().next()?.parse().ok()
            })
            .collect()
    }

    /// The rate of one TCP stream from host `from` to host `to`, bytes a
    /// second, over `secs` after its first second left out: slow start
    /// overshoots and fills the `tbf` queues, and counted from a quarter of
    /// a second a 2 s measure read 2-3% above what the headers allow;
    /// from 1 s it reads the headers' share exactly. The sender stops
    /// after that second and `secs`.
    pub(crate) fn one_stream(&self, from: usize, to: usize, secs: f64) -> Result<f64, NetnsError> {
        let io_err = |what: &str| {
            let what = what.to_string();
            move |source| NetnsError::Io { what, source }
        };
        let port = 7999;
        let (ready_tx, ready_rx) = crossbeam_channel::bounded::<io::Result<()>>(1);
        let to_ns = self.hosts[to].clone();
        let from_ns = self.hosts[from].clone();
        let warmup = Duration::from_secs(1);
        let span = Duration::from_secs_f64(secs) + warmup;
        std::thread::scope(|s| {
            let receiver = s.spawn(move || -> io::Result<f64> {
                let listener = enter(&to_ns).and_then(|()| {
                    TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
                });
                let listener = match listener {
                    Ok(l) => {
                        let _ = ready_tx.send(Ok(()));
                        l
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                        return Err(e);
                    }
                };
                let (mut conn, _) = listener.accept()?;
                conn.set_read_timeout(Some(Duration::from_secs(2)))?;
                let mut buf = vec![0u8; 1 << 16];
                let start = Instant::now();
                let mut counted: Option<(Instant, u64)> = None;
                let mut total = 0u64;
                loop {
                    let n = match conn.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::TimedOut => break,
                        Err(e) => return Err(e),
                    };
                    total += n as u64;
                    if counted.is_none() && start.elapsed() >= warmup {
                        counted = Some((Instant::now(), total));
                    }
                }
                let (t0, b0) = counted.unwrap_or((start, 0));
                Ok((total - b0) as f64 / t0.elapsed().as_secs_f64().max(1e-9))
            });
            ready_rx
                .recv()
                .unwrap_or_else(|_| Err(io::Error::other("the receiver ended")))
                .map_err(io_err("listening in the receiving host"))?;
            let sender = s.spawn(move || -> io::Result<()> {
                enter(&from_ns)?;
                let mut conn = TcpStream::connect_timeout(
                    &SocketAddrV4::new(host_addr(to), port).into(),
                    Duration::from_secs(2),
                )?;
                conn.set_write_timeout(Some(Duration::from_secs(2)))?;
                let buf = vec![0x5au8; 1 << 16];
                let start = Instant::now();
                while start.elapsed() < span {
                    conn.write_all(&buf)?;
                }
                Ok(())
            });
            let sent = sender.join().expect("the sender does not panic");
            let rate = receiver.join().expect("the receiver does not panic");
            sent.map_err(io_err("sending through the capped links"))?;
            rate.map_err(io_err("receiving through the capped links"))
        })
    }
}

/// Moves the calling thread into the network namespace `name`: sockets it
/// makes from then on are that host's.
fn enter(name: &str) -> io::Result<()> {
    let ns = File::open(format!("/run/netns/{name}"))?;
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}

/// Removes the namespaces of benches whose process is gone (one killed with
/// `kill -9` could not remove its own).
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        if !alive {
            let _ = run("ip", &["netns", "del", &name]);
        }
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // A namespace's veths, and the qdiscs on them, go with it.
        for name in self.hosts.iter().chain(std::iter::once(&self.switch)) {
            if let Err(e) = run("ip", &["netns", "del", name]) {
                eprintln!("warning: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_distinct_and_never_end_in_0_or_255() {
        let all: std::collections::HashSet<Ipv4Addr> = (0..3000).map(host_addr).collect();
        assert_eq!(all.len(), 3000);
        assert!(all
            .iter()
            .all(|a| a.octets()[3] != 0 && a.octets()[3] != 255));
    }

    #[test]
    fn a_cap_is_given_to_tbf_in_bits_with_a_bucket_of_10_ms() {
        let args = tbf_args(50 << 20);
        assert_eq!(args[3], format!("{}bit", (50u64 * 8) << 20));
        assert_eq!(args[5], ((50u64 << 20) / 100).to_string());
        assert_eq!(tbf_args(1000)[5], (32u64 << 10).to_string());
    }
}
