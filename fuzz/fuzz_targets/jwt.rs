//! The bearer token: header, then (signed with a dev key) claims, through `Authenticator::authenticate`.
//!
//! The first byte picks the mode. Even: the rest is the token as sent, so the
//! fuzzer works on the split, the base64url and the header JSON before any
//! signature check. Odd: the rest is a header JSON line and a claims JSON,
//! encoded and signed here with a key of `certs-dev/jwks.json` (EdDSA, or
//! ES256 when the byte's second bit is set), so that the claims are read too.
//! Invariants: no panic; a caller is accepted only from a token signed by a key
//! of the set, and within its lifetime.

#![no_main]

use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use caf_broker::auth::Authenticator;
use caf_broker_fuzz::{NOW_UNIX_SECS, authenticator, repo_file, repo_text};
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;

static AUTH: LazyLock<Authenticator> =
    LazyLock::new(|| authenticator(&repo_file("certs-dev/jwks.json")).expect("the dev JWKS loads"));
static ED25519: LazyLock<EncodingKey> = LazyLock::new(|| {
    EncodingKey::from_ed_pem(repo_text("certs-dev/jwt-signing.key.pem").as_bytes())
        .expect("the dev Ed25519 key")
});
static ES256: LazyLock<EncodingKey> = LazyLock::new(|| {
    EncodingKey::from_ec_pem(repo_text("certs-dev/jwt-es256.key.pem").as_bytes())
        .expect("the dev P-256 key")
});

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (token, signed) = if mode % 2 == 0 {
        (String::from_utf8_lossy(rest).into_owned(), false)
    } else {
        let (header, claims) = match rest.iter().position(|&b| b == b'\n') {
            Some(at) => (&rest[..at], &rest[at + 1..]),
            None => (rest, &b""[..]),
        };
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let (key, alg) = if mode & 2 == 0 {
            (&*ED25519, Algorithm::EdDSA)
        } else {
            (&*ES256, Algorithm::ES256)
        };
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).expect("signing works");
        (format!("{message}.{signature}"), true)
    };
    match AUTH.authenticate(&token) {
        Ok(caller) => {
            // The seed tokens are the only unsigned-here inputs that can pass.
            assert!(
                signed || token.split('.').count() == 3,
                "a caller from a token that is not three parts"
            );
            assert!(
                caller.expires_at.saturating_add(30) > NOW_UNIX_SECS as u64,
                "an expired token was accepted"
            );
        }
        Err(error) => {
            let _ = error.cause();
        }
    }
});
