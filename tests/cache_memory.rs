//! The cache's byte budget against the heap its entries really take: a counting
//! allocator measures what the entries hold, and `cache.max_bytes` must bound it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

use caf_broker::cache::{CacheSettings, RecordCache};
use caf_broker::domain::{Lookup, Nir, NumeroAllocataire};
use caf_broker::simulator::Dataset;

/// Counts the bytes held, as the C allocator hands them out: a block is its
/// size plus an 8-byte header, rounded up to 16, and at least 32 bytes.
struct Counting;

static HELD: AtomicIsize = AtomicIsize::new(0);

fn block(size: usize) -> isize {
    ((size + 8).div_ceil(16) * 16).max(32) as isize
}

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(block(layout.size()), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(block(layout.size()), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(block(layout.size()), Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        HELD.fetch_add(block(new_size) - block(layout.size()), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The tests of this file one at a time: the count is the whole process's.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn held() -> isize {
    HELD.load(Ordering::SeqCst)
}

fn settings() -> CacheSettings {
    CacheSettings {
        ttl_secs: 3600,
        not_found_ttl_secs: 3600,
        max_bytes: 1024 * 1024 * 1024,
    }
}

/// Stores `lookups` with the record `fetch` gives each, then returns the heap
/// the cache holds for them and its own estimate.
async fn fill(
    cache: &RecordCache,
    lookups: Vec<Lookup>,
    fetch: impl Fn(&Lookup) -> Option<serde_json::Value>,
) -> (isize, u64) {
    // The records come as the HTTP connector reads them: parsed from the CAF's bytes.
    let bodies: Vec<(Lookup, Option<Vec<u8>>)> = lookups
        .into_iter()
        .map(|lookup| {
            let body = fetch(&lookup).map(|v| serde_json::to_vec(&v).unwrap());
            (lookup, body)
        })
        .collect();
    cache.run_pending_tasks().await;
    let before = held();
    for (lookup, body) in &bodies {
        let record = body
            .as_ref()
            .map(|b| Arc::new(serde_json::from_slice::<serde_json::Value>(b).unwrap()));
        cache
            .get_or_fetch(lookup, false, || async move { Ok::<_, ()>(record) })
            .await
            .unwrap();
    }
    cache.run_pending_tasks().await;
    (held() - before, cache.weighted_size())
}

fn numero(n: u32) -> Lookup {
    Lookup::Numero(NumeroAllocataire::parse(&n.to_string()).unwrap())
}

#[tokio::test(flavor = "current_thread")]
async fn the_byte_budget_covers_the_heap_of_found_records() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let dataset = Dataset::generate(42, 3_000);
    let cache = RecordCache::new(&settings());
    let lookups = (0..3_000).map(|i| numero(2_000_000 + i)).collect();
    let (heap, estimate) = fill(&cache, lookups, |lookup| match lookup {
        Lookup::Numero(n) => dataset.by_numero(n.as_str()),
        Lookup::Nir(_) => None,
    })
    .await;
    assert_eq!(cache.entry_count(), 3_000);
    assert!(
        heap as u64 <= estimate,
        "3,000 records hold {heap} bytes of heap, but the cache counts {estimate}"
    );
    assert!(
        estimate <= heap as u64 * 3 / 2,
        "the estimate {estimate} is far above the heap {heap}: the budget would hold too few records"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn the_byte_budget_covers_the_heap_of_not_found_entries() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let cache = RecordCache::new(&settings());
    let mut lookups: Vec<Lookup> = (0..20_000).map(|i| numero(3_000_000 + i)).collect();
    lookups.extend((0..5_000u64).map(|i| {
        let first = format!("1{:012}", 800_000_000_000 + i);
        let key = 97 - (first.parse::<u64>().unwrap() % 97);
        Lookup::Nir(Nir::parse(&format!("{first}{key:02}")).unwrap())
    }));
    let (heap, estimate) = fill(&cache, lookups, |_| None).await;
    assert_eq!(cache.entry_count(), 25_000);
    assert!(
        heap as u64 <= estimate,
        "25,000 not-found entries hold {heap} bytes of heap, but the cache counts {estimate}"
    );
    assert!(
        estimate <= heap as u64 * 2,
        "the estimate {estimate} is far above the heap {heap}"
    );
}
