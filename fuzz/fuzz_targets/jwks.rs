//! The JSON Web Key Set, as `auth.jwks_file`: parsed by `Authenticator::with_clock`, then used.
//!
//! The document is written to a file of this process and loaded as the broker
//! loads it at start and on SIGHUP; when it loads, the seed tokens are checked
//! against it, which exercises the choice of a key by `kid` and `alg`.
//! Invariants: no panic; a set that loads holds at least one usable key.

#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use caf_broker_fuzz::authenticator;
use libfuzzer_sys::fuzz_target;

static FILE: LazyLock<PathBuf> = LazyLock::new(|| {
    std::env::temp_dir().join(format!("caf-broker-fuzz-jwks-{}.json", std::process::id()))
});

/// Dev tokens signed by the EdDSA and the ES256 keys of `certs-dev/jwks.json`.
const TOKENS: &[&str] = &[
    include_str!("../seeds/jwt/dev-token-eddsa.txt"),
    include_str!("../seeds/jwt/dev-token-es256.txt"),
];

fuzz_target!(|data: &[u8]| {
    std::fs::write(&*FILE, data).expect("the temporary directory is writable");
    let loaded = authenticator(&FILE);
    // Removed at once: libFuzzer may exit at any input without cleaning up.
    let _ = std::fs::remove_file(&*FILE);
    let Ok(auth) = loaded else {
        return;
    };
    assert!(
        auth.key_count() > 0,
        "a key set without a usable key loaded"
    );
    for token in TOKENS {
        let token = token
            .trim()
            .trim_start_matches(|c: char| c.is_ascii_digit());
        let _ = auth.authenticate(token);
    }
});
