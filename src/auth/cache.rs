//! A bounded cache of verified tokens, keyed by the token's SHA-256 (never by
//! the token) and the thumbprint of the client certificate it came with.
//!
//! A hit is served only while `now < exp`: the leeway that full verification
//! grants is never stretched by the cache, and a stale entry is dropped on sight.
//! The thumbprint in the key means that a certificate-bound token accepted
//! over one connection is a miss over a connection with another certificate,
//! or none, and is verified (and refused) there.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use sha2::{Digest, Sha256};

use super::Caller;
use crate::clock::Clock;
use crate::tls::Thumbprint;

/// The SHA-256 of a token string, and the thumbprint of the client
/// certificate of the connection it came over, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct TokenKey {
    token: [u8; 32],
    client: Option<Thumbprint>,
}

pub(super) struct TokenCache {
    entries: moka::sync::Cache<TokenKey, Caller>,
}

/// Evicts an entry when its token expires, so memory holds live tokens only.
/// Correctness does not rest on it: [`TokenCache::get`] checks `exp` itself.
struct UntilExpiry(Arc<dyn Clock>);

impl Expiry<TokenKey, Caller> for UntilExpiry {
    fn expire_after_create(&self, _: &TokenKey, caller: &Caller, _: Instant) -> Option<Duration> {
        Some(Duration::from_secs(
            caller
                .expires_at
                .saturating_sub(super::unix_secs(self.0.as_ref())),
        ))
    }
}

impl TokenCache {
    pub fn new(capacity: u64, clock: Arc<dyn Clock>) -> Self {
        let entries = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .expire_after(UntilExpiry(clock))
            .build();
        Self { entries }
    }

    /// The key of `token` presented over a connection whose client
    /// certificate has the thumbprint `client` (`None`: no certificate).
    pub fn key(token: &str, client: Option<Thumbprint>) -> TokenKey {
        TokenKey {
            token: Sha256::digest(token.as_bytes()).into(),
            client,
        }
    }

    /// The caller of a token verified earlier, if its `exp` is still ahead of `now`.
    pub fn get(&self, key: &TokenKey, now: u64) -> Option<Caller> {
        let caller = self.entries.get(key)?;
        if now < caller.expires_at {
            Some(caller)
        } else {
            self.entries.invalidate(key);
            None
        }
    }

    /// Remembers a caller; the verifier calls it only for tokens valid without
    /// leeway and, when bound, presented with their certificate.
    pub fn insert(&self, key: TokenKey, caller: Caller) {
        self.entries.insert(key, caller);
    }
}
