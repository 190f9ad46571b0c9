//! A swarm across hosts, as people push a file to many machines: each host
//! a network namespace of its own (its own address on a bridge, created and
//! removed by the test), a directory of its own with the same configs, and
//! `p2pft swarm` run on each. Each launcher starts only its own peers, waits
//! for the rest, and checks its files: against the seed's where the seed's
//! file is on that host, else against the metadata's whole-file SHA-1, and
//! not at all without metadata. Needs root (as CI has) and `ip` (iproute2).

mod common;
use common::{content, wait_until};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);

/// Network namespaces named after this process: a bridge in the first,
/// one host a further one, each with 10.77.0.<n> on a veth to the bridge.
/// Deleted on drop (which removes their veths and bridge too).
struct Hosts {
    names: Vec<String>,
}

fn ip(args: &[&str]) {
    let o = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2)");
    assert!(
        o.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
}

impl Hosts {
    fn new(n: usize) -> Hosts {
        let tag = std::process::id();
        let switch = format!("p2pft-sw-{tag}");
        let mut hosts = Hosts {
            names: vec![switch.clone()],
        };
        ip(&["netns", "add", &switch]);
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        for i in 1..=n {
            let name = format!("p2pft-h{i}-{tag}");
            ip(&["netns", "add", &name]);
            hosts.names.push(name.clone());
            let (outer, inner) = (format!("p2pv{i}-{tag}"), format!("p2pe{i}-{tag}"));
            // Interface names hold 15 bytes at most.
            let (outer, inner) = (&outer[..outer.len().min(15)], &inner[..inner.len().min(15)]);
            ip(&["link", "add", outer, "type", "veth", "peer", "name", inner]);
            ip(&["link", "set", outer, "netns", &switch]);
            ip(&["link", "set", inner, "netns", &name]);
            ip(&["-n", &switch, "link", "set", outer, "master", "br0", "up"]);
            let addr = format!("10.77.0.{i}/24");
            ip(&["-n", &name, "addr", "add", &addr, "dev", inner]);
            ip(&["-n", &name, "link", "set", inner, "up"]);
            ip(&["-n", &name, "link", "set", "lo", "up"]);
        }
        hosts
    }

    /// `p2pft swarm --json` on host `i` (1-based) in `dir`.
    fn launch(&self, i: usize, dir: &Path) -> Child {
        let mut cmd = Command::new("ip");
        let netns = ["netns", "exec", &self.names[i]];
        cmd.args(netns).args([common::P2PFT, "swarm", "--json"]);
        common::spawn_with_dir(cmd, dir)
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// Launchers still running, killed by PID when the test fails half way.
struct Launchers(Vec<Child>);

impl Drop for Launchers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn write_configs(dir: &Path, peers: usize) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("Common.cfg"),
        "NumberOfPreferredNeighbors 2\nUnchokingInterval 1\nOptimisticUnchokingInterval 2\nFileName f.dat\nFileSize 3000000\nPieceSize 65536\n",
    )
    .unwrap();
    let info: String = (1..=peers)
        .map(|i| format!("{} 10.77.0.{i} 6001 {}\n", 1000 + i, u8::from(i == 1)))
        .collect();
    std::fs::write(dir.join("PeerInfo.cfg"), info).unwrap();
}

#[test]
fn one_launcher_a_host_each_checks_what_it_can() {
    let hosts = Hosts::new(3);
    let root = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = (1..=3).map(|i| root.path().join(format!("h{i}"))).collect();
    for dir in &dirs {
        write_configs(dir, 3);
    }
    let file = content(3_000_000, 77);
    std::fs::create_dir_all(dirs[0].join("peer_1001")).unwrap();
    std::fs::write(dirs[0].join("peer_1001/f.dat"), &file).unwrap();
    let o = Command::new(common::P2PFT)
        .args(["meta", "peer_1001/f.dat"])
        .current_dir(&dirs[0])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Host 2 has the metadata; host 3 has none (its peer cannot verify).
    std::fs::copy(
        dirs[0].join("f.dat.meta.json"),
        dirs[1].join("f.dat.meta.json"),
    )
    .unwrap();

    let mut launchers = Launchers((1..=3).map(|i| hosts.launch(i, &dirs[i - 1])).collect());
    wait_until(LIMIT, "end of every launcher", || {
        launchers
            .0
            .iter_mut()
            .all(|c| c.try_wait().unwrap().is_some())
    });
    let outputs: Vec<Output> = std::mem::take(&mut launchers.0)
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let expected = ["same_as_seed", "matches_metadata", "not_checked"];
    for (i, o) in outputs.iter().enumerate() {
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "host {}: {stderr}", i + 1);
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let peers = report["peers"].as_array().unwrap();
        let mine: Vec<&serde_json::Value> = peers.iter().filter(|p| p["local"] == true).collect();
        assert_eq!(mine.len(), 1, "host {}: {report}", i + 1);
        assert_eq!(mine[0]["id"], 1001 + i, "{report}");
        assert_eq!(
            mine[0]["file_check"],
            expected[i],
            "host {}: {report}",
            i + 1
        );
        assert_eq!(mine[0]["file_ok"], i < 2, "{report}");
        for other in peers.iter().filter(|p| p["local"] == false) {
            assert_eq!(other["file_check"], "not_checked", "{report}");
        }
        let path = dirs[i].join(format!("peer_{}/f.dat", 1001 + i));
        assert!(
            std::fs::read(&path).unwrap() == file,
            "host {}: its file differs",
            i + 1
        );
    }
    let stderr3 = String::from_utf8_lossy(&outputs[2].stderr);
    assert!(stderr3.contains("no metadata"), "{stderr3}");
}
