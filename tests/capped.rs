//! `p2pft bench --hosts N --link-rate RATE`, run as a user runs it: hosts
//! made of network namespaces with links capped by `tbf`, the swarm and its
//! baseline, and nothing left behind (namespaces, processes) however it
//! ends. Needs root (as CI has), `ip` and `tc` (iproute2).

mod common;
use common::P2PFT;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Network namespaces a bench of PID `pid` made and has not removed.
fn namespaces_of(pid: u32) -> Vec<String> {
    let prefix = format!("p2pft-b{pid}-");
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Processes whose command line names `needle`.
fn processes_naming(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            found.push(pid);
        }
    }
    found
}

fn mib(n: u64) -> u64 {
    n << 20
}

#[test]
fn a_capped_swarm_and_its_baseline_are_measured_and_nothing_is_left() {
    let tmp = tempfile::tempdir().unwrap();
    let child = Command::new(P2PFT)
        .args([
            "bench",
            "--hosts",
            "4",
            "--link-rate",
            "4M",
            "--file-size",
            "4M",
            "--piece-size",
            "64K",
            "-p",
            "0.5",
            "-m",
            "1",
            "--timeout",
            "60",
            "--mtu",
            "9000",
            "--json",
            "--dir",
        ])
        .arg(tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Every peer ended as usual, saying goodbye: no connection's end is
    // worth a warning.
    assert!(!stderr.contains("ended:"), "{stderr}");
    assert!(namespaces_of(pid).is_empty(), "{:?}", namespaces_of(pid));
    assert!(std::fs::read_dir(tmp.path()).unwrap().next().is_none());
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["ok"], true);
    assert_eq!(r["hosts"], 4);
    // As the kernel had it, read back from the first host's link.
    assert_eq!(r["mtu"], 9000);
    assert_eq!(r["link_rate_bytes_per_sec"], mib(4));
    // The cap holds: one stream through it gets most of it and, its
    // frames' headers taking some of the link, less than all of it.
    let stream = r["one_stream_to_rate"].as_f64().unwrap();
    assert!((0.6..=1.0).contains(&stream), "{stream}");
    // 64 pieces, 3 leechers: the last gets a first piece in round 2.
    assert_eq!(r["bound"]["last"].as_f64().unwrap(), 64.0 / 65.0);
    // Where the CPUs went meanwhile: shares of the whole.
    let cpu = &r["swarm"]["cpu"];
    let shares: f64 = ["user", "system", "softirq", "idle", "steal"]
        .iter()
        .map(|k| cpu[k].as_f64().unwrap())
        .sum();
    assert!((0.97..=1.0 + 1e-9).contains(&shares), "{cpu}");
    let rate = mib(4) as f64;
    for (name, swarm) in [("swarm", &r["swarm"]), ("baseline", &r["baseline"])] {
        let hosts = swarm["per_host"].as_array().unwrap();
        assert_eq!(hosts.len(), 4, "{name}");
        for h in hosts.iter().filter(|h| h["seed"] == false) {
            let e = h["efficiency"].as_f64().unwrap();
            assert!(e > 0.0 && e <= 1.1, "{name}: {h}");
        }
        // Seen from outside the peers: the seed's link carried no more
        // than the cap allows in the time, and at least the pieces sent.
        let seed = &hosts[0];
        let link = seed["link_sent_bytes"].as_u64().unwrap() as f64;
        let wall = swarm["wall_secs"].as_f64().unwrap();
        assert!(
            link >= seed["bytes_out"].as_f64().unwrap(),
            "{name}: {seed}"
        );
        assert!(
            link <= rate * (wall + 0.5),
            "{name}: {link} bytes in {wall} s"
        );
    }
    // Without peer-to-peer the seed sends every leecher the whole file,
    // so the last of them cannot finish before 3 files at the link rate.
    let base = &r["baseline"];
    let copies = base["copies_from_seeds"].as_f64().unwrap();
    assert!((2.99..3.01).contains(&copies), "{copies}");
    assert!(base["efficiency_last"].as_f64().unwrap() < 0.4, "{base}");
    let gain = r["gain"].as_f64().unwrap();
    assert!(gain > 1.0, "{gain}");
}

/// `p2pft bench ARGS --no-baseline --timeout 60 --json` in a scratch
/// directory, which must succeed: its record.
fn bench_json(args: &[&str]) -> serde_json::Value {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(P2PFT)
        .arg("bench")
        .args(args)
        .args(["--no-baseline", "--timeout", "60", "--json", "--dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_peers_own_rate_caps_hold_on_uncapped_links() {
    let r = bench_json(&[
        "--hosts",
        "3",
        "--link-rate",
        "4M",
        "--cap-by",
        "config",
        "--file-size",
        "4M",
        "--piece-size",
        "64K",
    ]);
    assert_eq!(r["ok"], true);
    assert_eq!(r["cap_by"], "config");
    assert_eq!(r["mtu"], 1500, "Ethernet's unless --mtu says otherwise");
    // Uncapped, one stream is far faster than the rate the peers keep to.
    assert!(r["one_stream_to_rate"].as_f64().unwrap() > 3.0, "{r}");
    let swarm = &r["swarm"];
    let wall = swarm["wall_secs"].as_f64().unwrap();
    let seed = &swarm["per_host"][0];
    let sent = seed["bytes_out"].as_f64().unwrap();
    assert!(
        sent <= mib(4) as f64 * (wall + 0.5),
        "{sent} bytes in {wall} s"
    );
    for h in swarm["per_host"].as_array().unwrap().iter().skip(1) {
        let e = h["efficiency"].as_f64().unwrap();
        assert!(e > 0.0 && e <= 1.1, "{h}");
    }
}

/// More than 4,096 pieces: across hosts the rarest piece is picked from
/// counts kept sorted (`policy::rarity`), not by a pass over them.
#[test]
fn a_file_of_many_pieces_crosses_the_hosts_whole() {
    let r = bench_json(&[
        "--hosts",
        "4",
        "--link-rate",
        "50M",
        "--file-size",
        "8M",
        "--piece-size",
        "1K",
    ]);
    // Every leecher's file was checked identical to the seed's.
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["piece_size_bytes"], 1024);
    let hosts = r["swarm"]["per_host"].as_array().unwrap();
    assert_eq!(hosts.len(), 4);
    // The leechers served each other, not only the seed them.
    let from_leechers: f64 = hosts
        .iter()
        .filter(|h| h["seed"] == false)
        .map(|h| h["bytes_out"].as_f64().unwrap())
        .sum();
    assert!(from_leechers > 0.0, "{r}");
}

#[test]
fn ctrl_c_removes_the_hosts_and_every_peer() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(P2PFT)
        .args([
            "bench",
            "--hosts",
            "3",
            "--link-rate",
            "2M",
            "--file-size",
            "64M",
            "--no-baseline",
            "--timeout",
            "60",
            "--dir",
        ])
        .arg(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let dir = tmp.path().join(format!("p2pft-bench-{pid}"));
    let needle = dir.to_string_lossy().into_owned();
    // Bounded: the swarm needs 32 s at this rate, so it is running.
    let deadline = Instant::now() + Duration::from_secs(30);
    while processes_naming(&needle).len() < 3 {
        assert!(Instant::now() < deadline, "the peers never started");
        assert!(child.try_wait().unwrap().is_none(), "the bench ended");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!namespaces_of(pid).is_empty());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the bench did not stop on SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130));
    assert!(namespaces_of(pid).is_empty(), "{:?}", namespaces_of(pid));
    assert!(processes_naming(&needle).is_empty());
    assert!(!dir.exists());
}

#[test]
fn without_root_it_says_so_and_makes_nothing() {
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            P2PFT,
            "bench",
            "--hosts",
            "2",
            "--link-rate",
            "1M",
            "--dir",
            "/tmp",
        ])
        .output()
        .expect("setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("need root"), "{stderr}");
}

#[test]
fn a_link_rate_without_hosts_is_refused() {
    let out = Command::new(P2PFT)
        .args(["bench", "--link-rate", "1M"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
