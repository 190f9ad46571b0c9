//! The authentication exchange ([`p2pft::protocol::auth`]) over whatever the other side
//! sends: a secret file's bytes, then the other side's challenge and proof.
//! Whatever comes, the exchange ends in a named error or a pass, and it
//! passes only for a proof made with the same secret on this connection.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pft::protocol::auth::{Exchange, Role, Secret, MESSAGE_LEN, NONCE_LEN};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    // The first byte splits the rest: secret file bytes, then messages.
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let cut = (split as usize).min(rest.len());
    let (secret_bytes, messages) = rest.split_at(cut);
    let _ = Secret::parse(Path::new("fuzz"), secret_bytes);
    let secret = Secret::parse(Path::new("fuzz"), b"the swarm's secret, long enough").unwrap();
    let Some((challenge, rest)) = messages.split_first_chunk::<MESSAGE_LEN>() else {
        return;
    };
    let Some((proof, _)) = rest.split_first_chunk::<MESSAGE_LEN>() else {
        return;
    };
    for role in [Role::Dialer, Role::Acceptor] {
        let mut ours = Exchange::new(&secret, role, 1001, 1002, [7; NONCE_LEN]);
        let answer = ours.answer(challenge);
        if answer.is_ok() {
            // Without the secret no input proves it: the only proof that
            // passes is the honest other side's, which the input can hold
            // only by chance of 2^-256.
            if ours.check(proof).is_ok() {
                let other = match role {
                    Role::Dialer => Role::Acceptor,
                    Role::Acceptor => Role::Dialer,
                };
                let mut honest = Exchange::new(
                    &secret,
                    other,
                    1002,
                    1001,
                    challenge[8..].try_into().unwrap(),
                );
                let expected = honest.answer(&ours.challenge()).unwrap();
                assert_eq!(&expected, proof, "a proof passed that the secret did not make");
            }
        } else {
            assert!(ours.check(proof).is_err(), "a proof passed without a challenge");
        }
    }
});
