//! A bounded cache of verified tokens, keyed by the token's SHA-256 (never by
//! the token) and the thumbprint of the client certificate it came with.
//!
//! A hit is served only while `now < exp`: the leeway that full verification
//! grants is never stretched by the cache, and a stale entry is dropped on sight.
//! Each entry remembers the key that verified it: when a new key set is swapped
//! in, the entries of keys that left it are dropped, and a hit is served only
//! while its key is still in the set. The thumbprint in the key means that a
//! certificate-bound token accepted over one connection is a miss over a
//! connection with another certificate, or none, and is verified (and
//! refused) there.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use sha2::{Digest, Sha256};

use super::Caller;
use super::jwks::{KeyFingerprint, KeySet};
use crate::clock::Clock;
use crate::tls::Thumbprint;

/// The SHA-256 of a token string, and the thumbprint of the client
/// certificate of the connection it came over, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct TokenKey {
    token: [u8; 32],
    client: Option<Thumbprint>,
}

/// A verified token's caller and the key that verified its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Cached {
    pub caller: Caller,
    pub key: KeyFingerprint,
}

/// A handle on the cache; clones share the entries.
#[derive(Clone)]
pub(super) struct TokenCache {
    entries: moka::sync::Cache<TokenKey, Cached>,
}

/// Evicts an entry when its token expires, so memory holds live tokens only.
/// Correctness does not rest on it: [`TokenCache::get`] checks `exp` itself.
struct UntilExpiry(Arc<dyn Clock>);

impl Expiry<TokenKey, Cached> for UntilExpiry {
    fn expire_after_create(&self, _: &TokenKey, cached: &Cached, _: Instant) -> Option<Duration> {
        Some(Duration::from_secs(
            cached
                .caller
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
            .support_invalidation_closures()
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
    pub fn get(&self, token: &TokenKey, now: u64) -> Option<Cached> {
        let cached = self.entries.get(token)?;
        if now < cached.caller.expires_at {
            Some(cached)
        } else {
            self.entries.invalidate(token);
            None
        }
    }

    /// Remembers a caller; the verifier calls it only for tokens valid without
    /// leeway and, when bound, presented with their certificate.
    pub fn insert(&self, token: TokenKey, caller: Caller, key: KeyFingerprint) {
        self.entries.insert(token, Cached { caller, key });
    }

    /// Forgets every token verified by a key that is not in `kept`, as a new
    /// key set is swapped in: a withdrawn key takes its tokens with it.
    pub fn forget_keys_outside(&self, kept: &KeySet) {
        let kept: Vec<KeyFingerprint> = kept.keys.iter().map(|key| key.fingerprint).collect();
        // Refused only if the predicate could not be registered, which the
        // builder's support_invalidation_closures rules out; `get` still
        // checks the key of each hit.
        let _ = self
            .entries
            .invalidate_entries_if(move |_, cached| !kept.contains(&cached.key));
    }

    /// Forgets a token: its key was withdrawn or it was revoked.
    pub fn invalidate(&self, token: &TokenKey) {
        self.entries.invalidate(token);
    }
}
