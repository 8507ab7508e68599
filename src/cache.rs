//! A brief, bounded, single-flight cache of raw CAF records.
//!
//! Invariants:
//! - The cache holds the raw record (or the fact that there is none); the
//!   policy filter runs on every answer, so a policy change applies at once and
//!   one purpose's view never serves another.
//! - A key is a canonical numéro (no leading zero), or a salted SHA-256 of a
//!   NIR: the clear NIR is never a key, and [`CacheKey`]'s `Debug` shows neither.
//! - Concurrent misses on one key make one upstream call; its answer (or its
//!   error) goes to every waiter. Errors are never stored.
//! - Freshness is judged against the injected [`Clock`]: an entry older than
//!   its TTL (`ttl_secs`, or `not_found_ttl_secs` for "no such dossier") is a
//!   miss. moka also evicts it a little later by real time, to free memory.
//! - The cache is bounded in bytes (`max_bytes`) through a weigher whose
//!   estimate is computed once, when the entry is stored.
//!
//! It knows nothing of the upstream: the fetch is a closure, and its error type
//! is the caller's.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::ops::compute::Op;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::clock::{Clock, SystemClock};
use crate::domain::{CacheOutcome, Lookup};

/// A raw CAF record, as the upstream hands it over.
pub type Record = Arc<serde_json::Value>;

/// Moka keeps an entry this long past its TTL before evicting it; until then
/// it is present but treated as a miss.
const EVICTION_GRACE: Duration = Duration::from_secs(1);
/// Bookkeeping bytes counted for every entry besides its record: the key,
/// moka's entry, its deque and timer nodes, its share of the hash table (440
/// bytes measured over 25,000 entries in tests/cache_memory.rs, 600 over 1,000).
const ENTRY_OVERHEAD_BYTES: usize = 640;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    /// How long a record is served from memory. 0 keeps nothing (concurrent
    /// misses are still coalesced into one upstream call).
    #[serde(default = "default_ttl_secs")]
    pub ttl_secs: u64,
    /// How long "no such dossier" is remembered; at most `ttl_secs`.
    #[serde(default = "default_not_found_ttl_secs")]
    pub not_found_ttl_secs: u64,
    /// Upper bound of the estimated memory the entries take.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
}

fn default_ttl_secs() -> u64 {
    60
}
fn default_not_found_ttl_secs() -> u64 {
    10
}
fn default_max_bytes() -> u64 {
    64 * 1024 * 1024
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            ttl_secs: default_ttl_secs(),
            not_found_ttl_secs: default_not_found_ttl_secs(),
            max_bytes: default_max_bytes(),
        }
    }
}

impl CacheSettings {
    /// Every problem with these settings, each as `cache.<key>: ...`.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.ttl_secs > 3_600 {
            problems.push(format!(
                "cache.ttl_secs: at most 3600 (CAF data must stay fresh), got {}",
                self.ttl_secs
            ));
        }
        if self.not_found_ttl_secs > self.ttl_secs {
            problems.push(format!(
                "cache.not_found_ttl_secs: at most cache.ttl_secs ({}), got {}",
                self.ttl_secs, self.not_found_ttl_secs
            ));
        }
        const MIB: u64 = 1024 * 1024;
        if !(MIB..=16 * 1024 * MIB).contains(&self.max_bytes) {
            problems.push(format!(
                "cache.max_bytes: between 1048576 (1 MiB) and 17179869184 (16 GiB), got {}",
                self.max_bytes
            ));
        }
        problems
    }
}

/// A cache key: the canonical numéro, or a salted SHA-256 of the NIR.
/// `Debug` says which kind it is and nothing else.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CacheKey(KeyKind);

#[derive(Clone, PartialEq, Eq, Hash)]
enum KeyKind {
    Numero(Box<str>),
    NirDigest([u8; 32]),
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            KeyKind::Numero(_) => f.write_str("CacheKey::Numero(<redacted>)"),
            KeyKind::NirDigest(_) => f.write_str("CacheKey::Nir(<redacted>)"),
        }
    }
}

#[derive(Clone)]
struct Entry {
    record: Option<Record>,
    stored_at: Instant,
    /// The estimated size, computed once when the entry is made.
    weight: u32,
}

/// Evicts entries by real time a little after their TTL, to free memory.
/// Correctness does not rest on it: freshness is checked against the clock.
struct AfterTtl {
    found: Duration,
    not_found: Duration,
}

impl AfterTtl {
    fn of(&self, entry: &Entry) -> Duration {
        let ttl = if entry.record.is_some() {
            self.found
        } else {
            self.not_found
        };
        ttl + EVICTION_GRACE
    }
}

impl Expiry<CacheKey, Entry> for AfterTtl {
    fn expire_after_create(&self, _: &CacheKey, entry: &Entry, _: Instant) -> Option<Duration> {
        Some(self.of(entry))
    }

    fn expire_after_update(
        &self,
        _: &CacheKey,
        entry: &Entry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.of(entry))
    }
}

/// The cache of CAF records. Build it once per process and share it.
pub struct RecordCache {
    entries: moka::future::Cache<CacheKey, Entry>,
    ttl: Duration,
    not_found_ttl: Duration,
    clock: Arc<dyn Clock>,
    /// Random per process, so that a NIR digest means nothing outside it.
    salt: [u8; 32],
}

impl RecordCache {
    pub fn new(settings: &CacheSettings) -> Self {
        Self::with_clock(settings, Arc::new(SystemClock))
    }

    pub fn with_clock(settings: &CacheSettings, clock: Arc<dyn Clock>) -> Self {
        let ttl = Duration::from_secs(settings.ttl_secs);
        let not_found_ttl = Duration::from_secs(settings.not_found_ttl_secs);
        let entries = moka::future::Cache::builder()
            .name("caf-records")
            .max_capacity(settings.max_bytes)
            .weigher(|_: &CacheKey, entry: &Entry| entry.weight)
            .expire_after(AfterTtl {
                found: ttl,
                not_found: not_found_ttl,
            })
            .build();
        let mut salt = [0u8; 32];
        salt[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        salt[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        Self {
            entries,
            ttl,
            not_found_ttl,
            clock,
            salt,
        }
    }

    /// The key of a lookup: never the clear NIR.
    pub fn key(&self, lookup: &Lookup) -> CacheKey {
        match lookup {
            Lookup::Numero(numero) => CacheKey(KeyKind::Numero(numero.as_str().into())),
            Lookup::Nir(nir) => {
                let mut hasher = Sha256::new();
                hasher.update(self.salt);
                hasher.update(nir.as_str().as_bytes());
                CacheKey(KeyKind::NirDigest(hasher.finalize().into()))
            }
        }
    }

    /// The record for `lookup`: from memory while fresh (`Hit`), otherwise from
    /// `fetch` (`Miss`), which is then remembered. Concurrent misses on one key
    /// share a single `fetch`, and its error if it fails (hence the `Arc`).
    ///
    /// `fresh` (a client's `Cache-Control: no-cache`) skips the memory, always
    /// calls `fetch`, and stores its answer for the requests that follow.
    pub async fn get_or_fetch<F, Fut, E>(
        &self,
        lookup: &Lookup,
        fresh: bool,
        fetch: F,
    ) -> Result<(Option<Record>, CacheOutcome), Arc<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<Record>, E>>,
        E: Send + Sync + 'static,
    {
        let key = self.key(lookup);
        if fresh {
            let record = fetch().await.map_err(Arc::new)?;
            let entry = self.entry(record);
            let record = entry.record.clone();
            self.entries.insert(key, entry).await;
            return Ok((record, CacheOutcome::Miss));
        }

        let started = self.clock.monotonic();
        if let Some(seen) = self.entries.get(&key).await {
            if self.is_live(&seen, started) {
                return Ok((seen.record, CacheOutcome::Hit));
            }
            self.remove_if_unchanged(&key, seen.stored_at).await;
        }

        let loaded = self
            .entries
            .entry(key)
            .or_try_insert_with(async {
                let record = fetch().await?;
                Ok(self.entry(record))
            })
            .await?;
        // A waiter of someone else's load is a miss too; only an entry stored
        // before this request began counts as a hit.
        let status = if !loaded.is_fresh() && loaded.value().stored_at < started {
            CacheOutcome::Hit
        } else {
            CacheOutcome::Miss
        };
        Ok((loaded.into_value().record, status))
    }

    /// Forgets one lookup.
    pub async fn invalidate(&self, lookup: &Lookup) {
        self.entries.invalidate(&self.key(lookup)).await;
    }

    /// Entries held, for metrics (approximate until moka's pending work runs).
    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    /// Estimated bytes held, for metrics (approximate, as above).
    pub fn weighted_size(&self) -> u64 {
        self.entries.weighted_size()
    }

    /// Runs moka's pending maintenance (evictions, counters); for tests and metrics.
    pub async fn run_pending_tasks(&self) {
        self.entries.run_pending_tasks().await;
    }

    fn entry(&self, record: Option<Record>) -> Entry {
        let bytes = ENTRY_OVERHEAD_BYTES + record.as_deref().map_or(0, estimated_bytes);
        Entry {
            record,
            stored_at: self.clock.monotonic(),
            weight: u32::try_from(bytes).unwrap_or(u32::MAX),
        }
    }

    fn is_live(&self, entry: &Entry, now: Instant) -> bool {
        let ttl = if entry.record.is_some() {
            self.ttl
        } else {
            self.not_found_ttl
        };
        now.saturating_duration_since(entry.stored_at) < ttl
    }

    /// Drops a stale entry, unless another request has replaced it since it was read.
    async fn remove_if_unchanged(&self, key: &CacheKey, stored_at: Instant) {
        self.entries
            .entry_by_ref(key)
            .and_compute_with(|current| {
                let op = match current {
                    Some(current) if current.value().stored_at == stored_at => Op::Remove,
                    _ => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
    }
}

/// An estimate of the heap a parsed JSON value holds, as `serde_json` lays it
/// out and the C allocator hands it over (checked against a counting allocator
/// in tests/cache_memory.rs). Iterative, so that no record is too deep for it.
///
/// A `Value` is 32 bytes, held in its parent's node or vector; an object is a
/// `BTreeMap` whose nodes hold 11 entries, filled about half when the keys
/// arrive in order (a generated record of 3 KB of JSON takes about 23 KB);
/// strings and vectors are blocks of their own.
fn estimated_bytes(value: &serde_json::Value) -> usize {
    /// A B-tree leaf of 11 `(String, Value)` entries, and an internal node (plus 12 edges).
    const LEAF: usize = 640;
    const INTERNAL: usize = 736;
    /// What the allocator takes for `size` bytes: an 8-byte header, 16-byte
    /// granules, 32 bytes at least.
    fn block(size: usize) -> usize {
        size.saturating_add(8)
            .div_ceil(16)
            .saturating_mul(16)
            .max(32)
    }
    // The `Arc` around the record.
    let mut total = block(16 + 32);
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        let bytes = match value {
            serde_json::Value::String(s) if s.is_empty() => 0,
            serde_json::Value::String(s) => block(s.len()),
            serde_json::Value::Array(items) if items.is_empty() => 0,
            serde_json::Value::Array(items) => {
                stack.extend(items);
                block(items.len().max(4).next_power_of_two().saturating_mul(32))
            }
            serde_json::Value::Object(fields) => {
                let keys: usize = fields.keys().map(|name| block(name.len())).sum();
                stack.extend(fields.values());
                let nodes = match fields.len() {
                    0 => 0,
                    1..=11 => LEAF,
                    n => {
                        let leaves = (n - 5).div_ceil(6);
                        leaves * LEAF + leaves.div_ceil(6) * INTERNAL
                    }
                };
                keys.saturating_add(nodes)
            }
            serde_json::Value::Null | serde_json::Value::Bool(_) | serde_json::Value::Number(_) => {
                0
            }
        };
        total = total.saturating_add(bytes);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::domain::{Nir, NumeroAllocataire};
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn numero(n: &str) -> Lookup {
        Lookup::Numero(NumeroAllocataire::parse(n).unwrap())
    }

    fn nir(n: &str) -> Lookup {
        Lookup::Nir(Nir::parse(n).unwrap())
    }

    fn record(n: &str) -> Record {
        Arc::new(json!({ "numero_allocataire": n }))
    }

    /// A fetch that counts its calls and answers a fixed outcome.
    struct Upstream {
        calls: AtomicUsize,
    }

    impl Upstream {
        fn new() -> Arc<Self> {
            Arc::new(Self {
                calls: AtomicUsize::new(0),
            })
        }
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
        async fn answer(
            &self,
            answer: Result<Option<Record>, &'static str>,
        ) -> Result<Option<Record>, &'static str> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            answer
        }
    }

    /// A clock that moves only when the test moves it.
    fn manual_clock() -> Arc<ManualClock> {
        Arc::new(ManualClock::new(jiff::Timestamp::UNIX_EPOCH))
    }

    fn cache(clock: &Arc<ManualClock>) -> RecordCache {
        RecordCache::with_clock(&CacheSettings::default(), clock.clone())
    }

    #[tokio::test]
    async fn a_second_lookup_within_the_ttl_is_a_hit_without_an_upstream_call() {
        let clock = manual_clock();
        let cache = cache(&clock);
        let up = Upstream::new();
        let lookup = numero("1000001");
        let first = cache
            .get_or_fetch(&lookup, false, || up.answer(Ok(Some(record("1000001")))))
            .await
            .unwrap();
        assert_eq!(first.1, CacheOutcome::Miss);
        clock.advance(Duration::from_secs(59));
        let second = cache
            .get_or_fetch(&lookup, false, || up.answer(Ok(None)))
            .await
            .unwrap();
        assert_eq!(second, (Some(record("1000001")), CacheOutcome::Hit));
        assert_eq!(up.calls(), 1);
    }

    #[tokio::test]
    async fn an_entry_older_than_the_ttl_is_fetched_again() {
        let clock = manual_clock();
        let cache = cache(&clock);
        let up = Upstream::new();
        let lookup = numero("1000001");
        cache
            .get_or_fetch(&lookup, false, || up.answer(Ok(Some(record("old")))))
            .await
            .unwrap();
        clock.advance(Duration::from_secs(60));
        let again = cache
            .get_or_fetch(&lookup, false, || up.answer(Ok(Some(record("new")))))
            .await
            .unwrap();
        assert_eq!(again, (Some(record("new")), CacheOutcome::Miss));
        let then = cache
            .get_or_fetch(&lookup, false, || up.answer(Ok(None)))
            .await
            .unwrap();
        assert_eq!(then, (Some(record("new")), CacheOutcome::Hit));
        assert_eq!(up.calls(), 2);
    }

    #[tokio::test]
    async fn not_found_is_remembered_for_the_shorter_ttl_only() {
        let clock = manual_clock();
        let cache = cache(&clock);
        let up = Upstream::new();
        let lookup = numero("9999999");
        let first = cache
            .get_or_fetch(&lookup, false, || up.answer(Ok(None)))
            .await
            .unwrap();
        assert_eq!(first, (None, CacheOutcome::Miss));
        clock.advance(Duration::from_secs(9));
        let hit = cache
            .get_or_fetch(&lookup, false, || up.answer(Ok(None)))
            .await
            .unwrap();
        assert_eq!(hit, (None, CacheOutcome::Hit));
        clock.advance(Duration::from_secs(1));
        let refetched = cache
            .get_or_fetch(&lookup, false, || up.answer(Ok(None)))
            .await
            .unwrap();
        assert_eq!(refetched, (None, CacheOutcome::Miss));
        assert_eq!(up.calls(), 2);
    }

    #[tokio::test]
    async fn errors_are_never_cached() {
        let clock = manual_clock();
        let cache = cache(&clock);
        let up = Upstream::new();
        let lookup = numero("1000001");
        let failed = cache
            .get_or_fetch(&lookup, false, || up.answer(Err("down")))
            .await;
        assert_eq!(failed.err().as_deref(), Some(&"down"));
        let ok = cache
            .get_or_fetch(&lookup, false, || up.answer(Ok(Some(record("1000001")))))
            .await
            .unwrap();
        assert_eq!(ok.1, CacheOutcome::Miss);
        assert_eq!(up.calls(), 2);
    }

    #[tokio::test]
    async fn fresh_forces_an_upstream_read_and_refreshes_the_entry() {
        let clock = manual_clock();
        let cache = cache(&clock);
        let up = Upstream::new();
        let lookup = numero("1000001");
        cache
            .get_or_fetch(&lookup, false, || up.answer(Ok(Some(record("old")))))
            .await
            .unwrap();
        let forced = cache
            .get_or_fetch(&lookup, true, || up.answer(Ok(Some(record("new")))))
            .await
            .unwrap();
        assert_eq!(forced, (Some(record("new")), CacheOutcome::Miss));
        let after = cache
            .get_or_fetch(&lookup, false, || up.answer(Ok(None)))
            .await
            .unwrap();
        assert_eq!(after, (Some(record("new")), CacheOutcome::Hit));
        assert_eq!(up.calls(), 2);
    }

    #[tokio::test]
    async fn a_failed_fresh_read_keeps_the_previous_entry() {
        let clock = manual_clock();
        let cache = cache(&clock);
        let up = Upstream::new();
        let lookup = numero("1000001");
        cache
            .get_or_fetch(&lookup, false, || up.answer(Ok(Some(record("old")))))
            .await
            .unwrap();
        let forced = cache
            .get_or_fetch(&lookup, true, || up.answer(Err("down")))
            .await;
        assert!(forced.is_err());
        let after = cache
            .get_or_fetch(&lookup, false, || up.answer(Ok(None)))
            .await
            .unwrap();
        assert_eq!(after, (Some(record("old")), CacheOutcome::Hit));
    }

    #[tokio::test]
    async fn concurrent_misses_on_one_key_make_one_upstream_call_and_share_its_error() {
        let clock = manual_clock();
        let cache = Arc::new(cache(&clock));
        let up = Upstream::new();
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (cache, up, gate) = (cache.clone(), up.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_fetch(&numero("1000001"), false, || async move {
                        gate.notified().await;
                        up.answer(Err("down")).await
                    })
                    .await
                    .map(|(_, status)| status)
            }));
        }
        // On this single-threaded runtime, yielding runs every task up to the
        // cache, where one holds the load and the others wait for it.
        tokio::task::yield_now().await;
        gate.notify_one();
        let all = async {
            for task in tasks {
                assert_eq!(task.await.unwrap().err().as_deref(), Some(&"down"));
            }
        };
        tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .expect("every waiter got the shared error");
        assert_eq!(up.calls(), 1);
    }

    #[tokio::test]
    async fn a_nir_key_is_a_digest_and_debug_shows_no_identifier() {
        let clock = manual_clock();
        let cache = cache(&clock);
        let nir_key = cache.key(&nir("295109912611193"));
        let numero_key = cache.key(&numero("1000002"));
        assert_eq!(format!("{nir_key:?}"), "CacheKey::Nir(<redacted>)");
        assert_eq!(format!("{numero_key:?}"), "CacheKey::Numero(<redacted>)");
        match &nir_key.0 {
            KeyKind::NirDigest(digest) => {
                assert!(!hex::encode(digest).contains("295109912611193"));
                assert_ne!(
                    digest,
                    &<[u8; 32]>::from(Sha256::digest(b"295109912611193"))
                );
            }
            KeyKind::Numero(_) => panic!("a NIR must be hashed"),
        }
        assert_eq!(cache.key(&nir("295109912611193")), nir_key);
    }

    #[tokio::test]
    async fn the_cache_stays_within_its_byte_budget() {
        let clock = manual_clock();
        let settings = CacheSettings {
            max_bytes: 1024 * 1024,
            ..CacheSettings::default()
        };
        let cache = RecordCache::with_clock(&settings, clock.clone());
        let big = Arc::new(json!({ "blob": "x".repeat(100 * 1024) }));
        for i in 0..40 {
            let lookup = numero(&format!("{}", 1000 + i));
            let big = big.clone();
            cache
                .get_or_fetch(&lookup, false, || async move {
                    Ok::<_, &'static str>(Some(big))
                })
                .await
                .unwrap();
        }
        cache.run_pending_tasks().await;
        assert!(cache.weighted_size() <= settings.max_bytes);
        assert!(cache.entry_count() < 40 && cache.entry_count() >= 5);
    }

    #[test]
    fn the_size_estimate_grows_with_the_record() {
        let small = estimated_bytes(&json!({"a": "b"}));
        let large = estimated_bytes(&json!({"a": "b".repeat(1000), "list": [1, 2, 3]}));
        assert!(large > small + 1000);
    }

    #[test]
    fn settings_report_every_problem_with_its_key() {
        assert!(CacheSettings::default().validate().is_empty());
        let bad = CacheSettings {
            ttl_secs: 7200,
            not_found_ttl_secs: 9000,
            max_bytes: 10,
        };
        let problems = bad.validate();
        assert_eq!(problems.len(), 3, "{problems:?}");
        for key in ["ttl_secs", "not_found_ttl_secs", "max_bytes"] {
            assert!(
                problems
                    .iter()
                    .any(|p| p.starts_with(&format!("cache.{key}: "))),
                "{key}"
            );
        }
        let parsed: Result<CacheSettings, _> = toml::from_str("ttl = 5");
        assert!(parsed.is_err());
        let parsed: CacheSettings = toml::from_str("ttl_secs = 5\nnot_found_ttl_secs = 2").unwrap();
        assert_eq!(parsed.max_bytes, 64 * 1024 * 1024);
    }
}
