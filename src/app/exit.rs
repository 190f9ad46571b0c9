//! The one place where errors become process exit codes, for every command
//! of both binaries: 0 done, 1 failed while running, 2 input the user must
//! fix, 128 + n after signal n. Decides nothing else; says nothing itself.

use crate::app::remote::RemoteError;
use crate::app::report::ReportError;
use crate::app::swarm::SwarmError;
use crate::machine::EngineError;
use crate::runtime::peer::PeerError;

/// Everything went as asked.
pub(crate) const OK: i32 = 0;
/// Something failed while running (a peer, a disk, a host, a check).
pub(crate) const FAILED: i32 = 1;
/// Input the user must fix: a config, arguments, metadata, a secret file,
/// not enough space or threads for what was asked.
pub(crate) const BAD_INPUT: i32 = 2;

/// The exit status of a process that signal `n` stopped.
pub(crate) fn signal(n: i32) -> i32 {
    128 + n
}

/// An error's exit code.
pub(crate) trait ExitCode {
    fn exit_code(&self) -> i32;
}

impl ExitCode for PeerError {
    fn exit_code(&self) -> i32 {
        match self {
            PeerError::Config(_)
            | PeerError::Meta(_)
            | PeerError::Secret(_)
            | PeerError::SeedMismatch { .. } => BAD_INPUT,
            PeerError::Engine(EngineError::Interrupted { signal: n, .. }) => signal(*n),
            _ => FAILED,
        }
    }
}

impl ExitCode for SwarmError {
    fn exit_code(&self) -> i32 {
        match self {
            SwarmError::Config(_)
            | SwarmError::Meta(_)
            | SwarmError::Threads(_)
            | SwarmError::Space(_)
            | SwarmError::Remote(RemoteError::Preflight(_)) => BAD_INPUT,
            SwarmError::Io(_)
            | SwarmError::Held { .. }
            | SwarmError::Running { .. }
            | SwarmError::Remote(_) => FAILED,
        }
    }
}

impl ExitCode for ReportError {
    fn exit_code(&self) -> i32 {
        match self {
            ReportError::Config(_) | ReportError::NoLogs(_) => BAD_INPUT,
            ReportError::Read { .. } | ReportError::Write { .. } => FAILED,
        }
    }
}
