//! Disk failures end a peer with a clear message and a non-zero exit, never
//! with a file claimed complete. Each case runs the peer in a private mount
//! namespace (`unshare -m`) with a small or read-only tmpfs over its
//! `peer_<ID>/`, so nothing outside the test changes and nothing needs
//! unmounting. Needs root (or unprivileged user namespaces), as CI has.

mod common;
use common::{Spec, Swarm, PEER_PROCESS};
use std::process::Command;
use std::time::Duration;

fn in_mount_namespace(swarm: &Swarm, id: u32, mount_options: &str) -> Command {
    let dir = swarm.path().join(format!("peer_{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "sh", "-c"]).arg(format!(
        "mount -t tmpfs -o {mount_options} tmpfs '{}' && exec '{PEER_PROCESS}' \"$0\"",
        dir.display()
    ));
    cmd
}

fn assert_failed_cleanly(swarm: &mut Swarm, id: u32, needle: &str) {
    let status = swarm.wait_one(id, Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{}", swarm.stderr_text(id));
    let stderr = swarm.stderr_text(id);
    assert!(stderr.contains(needle), "expected `{needle}` in:\n{stderr}");
    let log = std::fs::read_to_string(swarm.log_of(id)).unwrap_or_default();
    assert!(
        !log.contains("complete file"),
        "a failed peer claimed completion"
    );
    swarm.kill_all();
}

/// A seed and a leecher whose directory is a tmpfs mounted with `options`;
/// the leecher must fail cleanly with `error`.
fn leecher_on_tmpfs_fails_cleanly(options: &str, error: &str) {
    let mut swarm = Swarm::new(Spec::new(2, 1 << 20, 16 * 1024));
    swarm.start(1001);
    swarm.start_with(in_mount_namespace(&swarm, 1002, options), 1002);
    assert_failed_cleanly(&mut swarm, 1002, error);
}

#[test]
fn a_full_disk_ends_the_peer_with_exit_1() {
    leecher_on_tmpfs_fails_cleanly("size=64k", "No space left on device");
}

#[test]
fn a_read_only_directory_ends_the_peer_with_exit_1() {
    leecher_on_tmpfs_fails_cleanly("ro", "Read-only file system");
}

/// A spec log that cannot be written (here `/dev/full`, which fails every
/// write with "No space left on device") never stops a peer: it completes,
/// says so once and counts the lines lost, and says nothing twice.
#[test]
fn a_log_that_cannot_be_written_is_said_once_and_the_peer_completes() {
    let mut swarm = Swarm::new(Spec::new(2, 1 << 20, 16 * 1024));
    std::os::unix::fs::symlink("/dev/full", swarm.log_of(1002)).unwrap();
    swarm.start_all();
    swarm.finish_and_check_except(Duration::from_secs(60), &[1002]);
    let stderr = swarm.stderr_text(1002);
    let said = |needle: &str| stderr.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(said("cannot write"), 1, "{stderr}");
    assert_eq!(said("No space left on device"), 1, "{stderr}");
    assert_eq!(said("lines of"), 1, "{stderr}");
    assert!(
        stderr
            .lines()
            .all(|l| !l.contains("peer 1002: warn: peer 1002")),
        "{stderr}"
    );
}
