//! A bounded cache of verified tokens, keyed by the token's SHA-256, never by the token.
//!
//! A hit is served only while `now < exp`: the leeway that full verification
//! grants is never stretched by the cache, and a stale entry is dropped on sight.
//! Each entry remembers the key that verified it: when a new key set is swapped
//! in, the entries of keys that left it are dropped, and a hit is served only
//! while its key is still in the set.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use sha2::{Digest, Sha256};

use super::Caller;
use super::jwks::{KeyFingerprint, KeySet};
use crate::clock::Clock;

/// The SHA-256 of a token string.
pub(super) type TokenDigest = [u8; 32];

/// A verified token's caller and the key that verified its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Cached {
    pub caller: Caller,
    pub key: KeyFingerprint,
}

/// A handle on the cache; clones share the entries.
#[derive(Clone)]
pub(super) struct TokenCache {
    entries: moka::sync::Cache<TokenDigest, Cached>,
}

/// Evicts an entry when its token expires, so memory holds live tokens only.
/// Correctness does not rest on it: [`TokenCache::get`] checks `exp` itself.
struct UntilExpiry(Arc<dyn Clock>);

impl Expiry<TokenDigest, Cached> for UntilExpiry {
    fn expire_after_create(
        &self,
        _: &TokenDigest,
        cached: &Cached,
        _: Instant,
    ) -> Option<Duration> {
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

    pub fn digest(token: &str) -> TokenDigest {
        Sha256::digest(token.as_bytes()).into()
    }

    /// The caller of a token verified earlier, if its `exp` is still ahead of `now`.
    pub fn get(&self, digest: &TokenDigest, now: u64) -> Option<Cached> {
        let cached = self.entries.get(digest)?;
        if now < cached.caller.expires_at {
            Some(cached)
        } else {
            self.entries.invalidate(digest);
            None
        }
    }

    /// Remembers a caller; the verifier calls it only for tokens valid without leeway.
    pub fn insert(&self, digest: TokenDigest, caller: Caller, key: KeyFingerprint) {
        self.entries.insert(digest, Cached { caller, key });
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
    pub fn invalidate(&self, digest: &TokenDigest) {
        self.entries.invalidate(digest);
    }
}
