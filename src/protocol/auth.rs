//! The authenticated swarm mode (`P2pftSecretFile` in Common.cfg): right
//! after the handshake, each side proves that it knows the swarm's shared
//! secret, before anything else is sent.
//!
//! The exchange, both sides at once (neither waits for the other's first):
//! 1. each sends a challenge: [`CHALLENGE_TAG`] and 32 fresh random bytes;
//! 2. each answers the other's with a proof: [`PROOF_TAG`] and
//!    HMAC-SHA256(secret, label, prover's role, dialer ID, acceptor ID,
//!    dialer's nonce, acceptor's nonce).
//!
//! Both nonces are in every proof, so a recorded proof is worthless on
//! another connection (no replay); the prover's role is too, so a proof
//! reflected back to its maker does not pass; both IDs are, so a proof for
//! one pair of peers proves nothing for another. Proofs are compared in
//! constant time.
//!
//! Owns the secret file's checks and the exchange's bytes and cryptography as
//! pure functions; never touches a socket ([`crate::runtime::net`] drives it).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Random bytes each side contributes to an exchange.
pub const NONCE_LEN: usize = 32;
/// An HMAC-SHA256 tag.
pub(crate) const PROOF_LEN: usize = 32;
/// Every message of the exchange: an 8-byte tag, then 32 bytes.
pub const MESSAGE_LEN: usize = 8 + 32;
pub(crate) const CHALLENGE_TAG: &[u8; 8] = b"P2PFTch1";
pub(crate) const PROOF_TAG: &[u8; 8] = b"P2PFTpr1";
/// Fewer bytes than this make a secret anyone could guess.
pub(crate) const MIN_SECRET_BYTES: usize = 16;
/// Bytes of a secret `p2pft swarm --secret` writes (as hex).
pub(crate) const GENERATED_SECRET_BYTES: usize = 32;
const LABEL: &[u8] = b"p2pft swarm authentication v1";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read the secret file {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("the secret file {} is empty", path.display())]
    Empty { path: PathBuf },
    #[error("the secret file {} holds {len} bytes; a secret needs at least {MIN_SECRET_BYTES}", path.display())]
    TooShort { path: PathBuf, len: usize },
    #[error("the secret file {} may be read by anyone (mode {mode:o}): `chmod 600` it, and use a new secret if others could read it", path.display())]
    WorldReadable { path: PathBuf, mode: u32 },
    #[error(
        "sent no authentication challenge (a plain peer, or a p2pft peer without P2pftSecretFile?)"
    )]
    NoChallenge,
    #[error("answered with no proof of the secret")]
    NoProof,
    #[error("sent our own challenge back")]
    Reflected,
    #[error("does not know the swarm's secret (a wrong proof)")]
    WrongProof,
}

/// The swarm's shared secret: the secret file's bytes, white space around
/// them trimmed (an editor's final newline is not part of it).
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// Reads and checks the secret file: it must exist, be readable by its
    /// owner alone (no read or write bit for others), and hold a secret of at
    /// least [`MIN_SECRET_BYTES`].
    pub fn load(path: &Path) -> Result<Secret, AuthError> {
        use std::os::unix::fs::PermissionsExt;
        let read = |source| AuthError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mode = std::fs::metadata(path).map_err(read)?.permissions().mode();
        if mode & 0o006 != 0 {
            return Err(AuthError::WorldReadable {
                path: path.to_path_buf(),
                mode: mode & 0o7777,
            });
        }
        Secret::parse(path, &std::fs::read(path).map_err(read)?)
    }

    /// The secret in `bytes`, read from `path` (named in errors).
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Secret, AuthError> {
        let trimmed = bytes.trim_ascii();
        if trimmed.is_empty() {
            return Err(AuthError::Empty {
                path: path.to_path_buf(),
            });
        }
        if trimmed.len() < MIN_SECRET_BYTES {
            return Err(AuthError::TooShort {
                path: path.to_path_buf(),
                len: trimmed.len(),
            });
        }
        Ok(Secret(trimmed.to_vec()))
    }

    /// A fresh secret as the text of a secret file: random bytes in hex.
    pub(crate) fn generate() -> io::Result<String> {
        let mut bytes = [0u8; GENERATED_SECRET_BYTES];
        fill_random(&mut bytes)?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(hex + "\n")
    }
}

/// Fills `buf` from the operating system's random source.
pub(crate) fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    use rand::TryRngCore;
    rand::rngs::OsRng
        .try_fill_bytes(buf)
        .map_err(|e| io::Error::other(format!("no random bytes from the OS: {e}")))
}

/// Which end of the connection a side is: it decides the order of the IDs
/// and nonces in a proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Dialer,
    Acceptor,
}

impl Role {
    fn other(self) -> Role {
        match self {
            Role::Dialer => Role::Acceptor,
            Role::Acceptor => Role::Dialer,
        }
    }
}

/// One side of one exchange.
pub struct Exchange<'s> {
    secret: &'s Secret,
    role: Role,
    me: u32,
    peer: u32,
    ours: [u8; NONCE_LEN],
    theirs: Option<[u8; NONCE_LEN]>,
}

impl<'s> Exchange<'s> {
    /// An exchange between `me` and `peer` in which we play `role`, with our
    /// fresh `nonce` (from [`fill_random`]; a test may pin it).
    pub fn new(
        secret: &'s Secret,
        role: Role,
        me: u32,
        peer: u32,
        nonce: [u8; NONCE_LEN],
    ) -> Exchange<'s> {
        Exchange {
            secret,
            role,
            me,
            peer,
            ours: nonce,
            theirs: None,
        }
    }

    /// Our challenge, to send first.
    pub fn challenge(&self) -> [u8; MESSAGE_LEN] {
        message(CHALLENGE_TAG, &self.ours)
    }

    /// Takes the other side's challenge and returns our proof, to send.
    pub fn answer(
        &mut self,
        challenge: &[u8; MESSAGE_LEN],
    ) -> Result<[u8; MESSAGE_LEN], AuthError> {
        let nonce: [u8; NONCE_LEN] =
            body(challenge, CHALLENGE_TAG).ok_or(AuthError::NoChallenge)?;
        if nonce == self.ours {
            return Err(AuthError::Reflected);
        }
        self.theirs = Some(nonce);
        Ok(message(PROOF_TAG, &self.proof_by(self.role, nonce)))
    }

    /// Checks the other side's proof (after [`Exchange::answer`]).
    pub fn check(&self, proof: &[u8; MESSAGE_LEN]) -> Result<(), AuthError> {
        let tag: [u8; PROOF_LEN] = body(proof, PROOF_TAG).ok_or(AuthError::NoProof)?;
        let theirs = self.theirs.ok_or(AuthError::NoChallenge)?;
        self.mac(self.role.other(), theirs)
            .verify_slice(&tag)
            .map_err(|_| AuthError::WrongProof)
    }

    fn proof_by(&self, prover: Role, theirs: [u8; NONCE_LEN]) -> [u8; PROOF_LEN] {
        self.mac(prover, theirs).finalize().into_bytes().into()
    }

    /// The keyed hash a proof by `prover` must carry on this connection.
    fn mac(&self, prover: Role, theirs: [u8; NONCE_LEN]) -> Hmac<Sha256> {
        let (dialer, acceptor, dialer_nonce, acceptor_nonce) = match self.role {
            Role::Dialer => (self.me, self.peer, self.ours, theirs),
            Role::Acceptor => (self.peer, self.me, theirs, self.ours),
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret.0).expect("any key length");
        mac.update(LABEL);
        mac.update(&[prover as u8]);
        mac.update(&dialer.to_be_bytes());
        mac.update(&acceptor.to_be_bytes());
        mac.update(&dialer_nonce);
        mac.update(&acceptor_nonce);
        mac
    }
}

fn message(tag: &[u8; 8], body: &[u8; 32]) -> [u8; MESSAGE_LEN] {
    let mut out = [0u8; MESSAGE_LEN];
    out[..8].copy_from_slice(tag);
    out[8..].copy_from_slice(body);
    out
}

fn body(message: &[u8; MESSAGE_LEN], tag: &[u8; 8]) -> Option<[u8; 32]> {
    (&message[..8] == tag).then(|| message[8..].try_into().expect("32 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> Secret {
        Secret::parse(Path::new("s"), text.as_bytes()).unwrap()
    }

    /// Runs a whole exchange between a dialer (1002) and an acceptor (1001).
    fn exchange(
        dialer: &Secret,
        acceptor: &Secret,
    ) -> (Result<(), AuthError>, Result<(), AuthError>) {
        let mut d = Exchange::new(dialer, Role::Dialer, 1002, 1001, [1; 32]);
        let mut a = Exchange::new(acceptor, Role::Acceptor, 1001, 1002, [2; 32]);
        let (dc, ac) = (d.challenge(), a.challenge());
        let dp = d.answer(&ac).unwrap();
        let ap = a.answer(&dc).unwrap();
        (d.check(&ap), a.check(&dp))
    }

    #[test]
    fn peers_with_the_same_secret_prove_it_to_each_other() {
        let s = secret("correct horse battery staple");
        let (d, a) = exchange(&s, &s.clone());
        assert!(d.is_ok() && a.is_ok(), "{d:?} {a:?}");
    }

    #[test]
    fn a_peer_with_another_secret_fails_on_both_sides() {
        let (d, a) = exchange(
            &secret("correct horse battery staple"),
            &secret("incorrect horse battery staple"),
        );
        assert!(matches!(d, Err(AuthError::WrongProof)));
        assert!(matches!(a, Err(AuthError::WrongProof)));
    }

    #[test]
    fn a_proof_from_another_connection_is_refused() {
        let s = secret("correct horse battery staple");
        // A proof the acceptor gave on an earlier connection, replayed.
        let mut old_d = Exchange::new(&s, Role::Dialer, 1002, 1001, [1; 32]);
        let mut old_a = Exchange::new(&s, Role::Acceptor, 1001, 1002, [2; 32]);
        let _ = old_d.answer(&old_a.challenge()).unwrap();
        let recorded = old_a.answer(&old_d.challenge()).unwrap();
        // A new connection: the dialer's nonce is fresh.
        let mut d = Exchange::new(&s, Role::Dialer, 1002, 1001, [3; 32]);
        let _ = d.answer(&old_a.challenge()).unwrap();
        assert!(matches!(d.check(&recorded), Err(AuthError::WrongProof)));
    }

    #[test]
    fn a_challenge_or_proof_reflected_back_is_refused() {
        let s = secret("correct horse battery staple");
        let mut d = Exchange::new(&s, Role::Dialer, 1002, 1001, [1; 32]);
        assert!(matches!(
            d.answer(&d.challenge()),
            Err(AuthError::Reflected)
        ));
        // Our own proof sent back to us, with a nonce of the attacker's.
        let mut d = Exchange::new(&s, Role::Dialer, 1002, 1001, [1; 32]);
        let ours = d.answer(&message(CHALLENGE_TAG, &[9; 32])).unwrap();
        assert!(matches!(d.check(&ours), Err(AuthError::WrongProof)));
    }

    #[test]
    fn a_proof_for_other_ids_is_refused() {
        let s = secret("correct horse battery staple");
        let mut d = Exchange::new(&s, Role::Dialer, 1002, 1001, [1; 32]);
        let mut a = Exchange::new(&s, Role::Acceptor, 1001, 1003, [2; 32]);
        let _ = d.answer(&a.challenge()).unwrap();
        let proof = a.answer(&d.challenge()).unwrap();
        assert!(matches!(d.check(&proof), Err(AuthError::WrongProof)));
    }

    #[test]
    fn other_bytes_than_a_challenge_or_proof_are_named() {
        let s = secret("correct horse battery staple");
        let mut d = Exchange::new(&s, Role::Dialer, 1002, 1001, [1; 32]);
        let frame = [0u8; MESSAGE_LEN];
        assert!(matches!(d.answer(&frame), Err(AuthError::NoChallenge)));
        assert!(matches!(d.check(&frame), Err(AuthError::NoProof)));
    }

    #[test]
    fn secret_files_that_are_empty_short_or_readable_by_others_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let write = |text: &str, mode: u32| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        assert!(matches!(Secret::load(&path), Err(AuthError::Read { .. })));
        write(" \n", 0o600);
        assert!(matches!(Secret::load(&path), Err(AuthError::Empty { .. })));
        write("short\n", 0o600);
        assert!(matches!(
            Secret::load(&path),
            Err(AuthError::TooShort { len: 5, .. })
        ));
        write(&Secret::generate().unwrap(), 0o644);
        let e = Secret::load(&path).unwrap_err();
        assert!(e.to_string().contains("mode 644"), "{e}");
        write(&Secret::generate().unwrap(), 0o640);
        assert!(Secret::load(&path).is_ok());
    }

    #[test]
    fn generated_secrets_differ_and_are_long_enough() {
        let (a, b) = (Secret::generate().unwrap(), Secret::generate().unwrap());
        assert_ne!(a, b);
        assert!(Secret::parse(Path::new("s"), a.as_bytes()).is_ok());
    }
}
