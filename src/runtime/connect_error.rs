//! Why a connection to a neighbour could not be made: the handshake's
//! errors, one dial attempt's, and a dialler's final account of giving up.
//!
//! A module of its own below both `net`, which makes these, and `events`,
//! which carries a [`DialFailure`] to the engine, so neither imports the
//! other. Each error keeps its cause (the `io::Error`, the [`WireError`],
//! the [`AuthError`]), not its text.

use crate::protocol::auth::AuthError;
use crate::protocol::wire::WireError;
use std::io;
use std::time::Duration;

/// How long the other side has to complete its handshake (and, in an
/// authenticated swarm, its proof), in all.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a handshake (and, in an authenticated swarm, the proof of the
/// secret) failed, on either side.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("the handshake took longer than {} s", HANDSHAKE_TIMEOUT.as_secs())]
    Timeout,
    /// The other side does not offer authentication in a swarm with a secret.
    #[error("peer {0} does not authenticate: a swarm with P2pftSecretFile admits only p2pft peers given its secret (a plain peer, or one whose Common.cfg lacks the key?)")]
    NotAuthenticating(u32),
    /// The other side asks to authenticate and we have no secret.
    #[error("peer {0} asks to authenticate, but this peer's Common.cfg has no P2pftSecretFile: give every peer the same secret file")]
    UnexpectedAuthentication(u32),
    #[error("peer {peer} failed authentication: {source}")]
    Auth { peer: u32, source: AuthError },
    /// A plain peer hung up right after our handshake offered an extension.
    #[error("closed after the handshake")]
    ClosedAfterHandshake,
}

impl HandshakeError {
    /// The two sides disagree about the swarm's secret (rather than the
    /// connection or the bytes failing).
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            HandshakeError::NotAuthenticating(_)
                | HandshakeError::UnexpectedAuthentication(_)
                | HandshakeError::Auth { .. }
        )
    }
}

/// Why one attempt to dial a neighbour failed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// No connection was made (refused, unreachable): try again later.
    #[error("{0}")]
    Connect(#[source] io::Error),
    /// The two sides disagree about the swarm's secret: said at once, and
    /// tried again (the other side may be restarted with the right one).
    #[error("{0}")]
    Auth(#[source] HandshakeError),
    /// Connected, but the handshake failed or the peer hung up right after it.
    #[error("{0}")]
    Handshake(#[source] HandshakeError),
    /// Someone answered who is not the peer we dial: retrying will not help.
    #[error("{0}")]
    Wire(#[source] WireError),
    /// The host name did not resolve (a typo, or a name server not up yet).
    #[error("{0}")]
    Lookup(#[source] io::Error),
}

impl From<HandshakeError> for DialError {
    fn from(e: HandshakeError) -> Self {
        if e.is_auth() {
            DialError::Auth(e)
        } else {
            DialError::Handshake(e)
        }
    }
}

/// A dialler gave up on a neighbour: whom it dialled, for how long, and the
/// last attempt's error.
#[derive(Debug, thiserror::Error)]
#[error(
    "could not connect to peer {peer} at {host}:{port} ({attempts} attempts in {:.1} s; --connect-timeout {}): {last}",
    elapsed.as_secs_f64(),
    timeout.as_secs_f64()
)]
pub struct DialFailure {
    pub peer: u32,
    pub host: String,
    pub port: u16,
    pub attempts: u32,
    pub elapsed: Duration,
    /// `--connect-timeout`: how long the dialler kept trying.
    pub timeout: Duration,
    #[source]
    pub last: DialError,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::EngineError;
    use std::error::Error;

    fn refused(attempts: u32) -> DialFailure {
        DialFailure {
            peer: 1001,
            host: "192.0.2.1".into(),
            port: 7000,
            attempts,
            elapsed: Duration::from_millis(1_300),
            timeout: Duration::from_secs(1),
            last: DialError::Connect(io::ErrorKind::ConnectionRefused.into()),
        }
    }

    #[test]
    fn a_dial_failure_says_what_it_said_as_text_and_keeps_the_io_error() {
        let failure = refused(3);
        assert!(
            failure.to_string().starts_with(
                "could not connect to peer 1001 at 192.0.2.1:7000 (3 attempts in 1.3 s; --connect-timeout 1): "
            ),
            "{failure}"
        );
        // Through the core's EngineError, boxed, the io::Error is still there.
        let fatal = EngineError::Unreachable(Box::new(failure));
        assert!(fatal
            .to_string()
            .starts_with("could not connect to peer 1001"));
        let mut cause: Option<&(dyn Error + 'static)> = Some(&fatal);
        let mut kind = None;
        while let Some(e) = cause {
            if let Some(io) = e.downcast_ref::<io::Error>() {
                kind = Some(io.kind());
            }
            cause = e.source();
        }
        assert_eq!(kind, Some(io::ErrorKind::ConnectionRefused));
    }

    #[test]
    fn handshake_errors_about_the_secret_are_auth_errors() {
        assert!(matches!(
            DialError::from(HandshakeError::NotAuthenticating(1)),
            DialError::Auth(_)
        ));
        assert!(matches!(
            DialError::from(HandshakeError::Timeout),
            DialError::Handshake(_)
        ));
    }
}
