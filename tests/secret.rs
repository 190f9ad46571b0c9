//! The authenticated swarm mode end to end: `p2pft swarm --secret` writes a
//! fresh owner-only secret and its peers finish; in a swarm with
//! `P2pftSecretFile`, a plain peer (the independent `tests/spec_peer.py`) and
//! a p2pft peer with another secret are refused with the reason, receive
//! nothing but our handshake, and the peers that know the secret finish.

mod common;
use common::{wait_until, Spec, Swarm, P2PFT, PEER_PROCESS};
use p2pft::protocol::wire::{encode_handshake, HANDSHAKE_LEN};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// A child killed by PID when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write_secret(swarm: &Swarm, name: &str, text: &str) {
    let path = swarm.path().join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn a_launcher_with_secret_writes_a_fresh_private_secret_and_its_swarm_finishes() {
    let swarm = Swarm::new(Spec::new(4, 1 << 20, 16 * 1024));
    let mut secrets = Vec::new();
    for _ in 0..2 {
        let out = Command::new(P2PFT)
            .args(["swarm", "--secret", "--quiet", "--timeout", "60"])
            .current_dir(swarm.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        let path = swarm.path().join(".p2pft-secret");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the secret file's mode");
        secrets.push(std::fs::read_to_string(&path).unwrap());
    }
    assert_ne!(secrets[0], secrets[1], "each run gets a fresh secret");
}

#[test]
fn strangers_to_the_secret_are_refused_with_the_reason_and_the_rest_finish() {
    let mut swarm = Swarm::new(Spec::new(4, 1 << 20, 16 * 1024));
    swarm.reconnects_allowed = true;
    write_secret(
        &swarm,
        "swarm.secret",
        "the secret of this swarm, long enough\n",
    );
    write_secret(
        &swarm,
        "other.secret",
        "another secret, just as long as it\n",
    );
    let common = swarm.path().join("Common.cfg");
    let text = std::fs::read_to_string(&common).unwrap() + "P2pftSecretFile swarm.secret\n";
    std::fs::write(&common, text).unwrap();
    swarm.start(1001);
    swarm.start(1002);

    // A plain peer handshaking as 1003 gets our handshake and nothing more.
    let mut s = swarm.connect(1001);
    s.write_all(&encode_handshake(1003)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert_eq!(got.len(), HANDSHAKE_LEN, "only our handshake: {got:?}");

    // The independent spec peer as 1003 is refused by both, saying why.
    let spec_peer = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/spec_peer.py"))
        .arg("1003")
        .current_dir(swarm.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut spec_peer = KillOnDrop(spec_peer);
    wait_until(LIMIT, "the seed refuses the spec peer", || {
        swarm
            .stderr_text(1001)
            .contains("peer 1003 does not authenticate")
    });
    let _ = spec_peer.0.kill();
    let _ = spec_peer.0.wait();

    // A p2pft peer with another secret is refused too, on both sides.
    let out = Command::new(PEER_PROCESS)
        .args([
            "1004",
            "--secret-file",
            "other.secret",
            "--connect-timeout",
            "2",
        ])
        .current_dir(swarm.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("does not know the swarm's secret"),
        "{stderr}"
    );

    // A world-readable secret is bad input.
    std::fs::set_permissions(
        swarm.path().join("other.secret"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let out = Command::new(PEER_PROCESS)
        .args(["1004", "--secret-file", "other.secret"])
        .current_dir(swarm.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("may be read by anyone"));

    // The real 1003 and 1004 know the secret: everyone finishes.
    std::fs::remove_file(swarm.log_of(1003)).ok();
    std::fs::remove_file(swarm.log_of(1004)).ok();
    swarm.start(1003);
    swarm.start(1004);
    swarm.finish_and_check_except(LIMIT, &[1003, 1004]);
}
