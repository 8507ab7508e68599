//! What the record cache saves and what the HTTP connector costs: the CPU of a
//! cache hit against a miss (served by the embedded connector), and the latency
//! a miss through the HTTP connector (mTLS, breaker, retries, cache) adds over
//! calling the simulator directly with reqwest. Loopback only, bounded loops.
//!
//! Run with `cargo bench --bench cache`; compare the medians as ratios.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use caf_broker::cache::{CacheSettings, RecordCache};
use caf_broker::clock::SystemClock;
use caf_broker::domain::{Lookup, NumeroAllocataire};
use caf_broker::simulator::{self, SimulatorOptions};
use caf_broker::upstream::{CafClient, UpstreamError, UpstreamSettings};
use criterion::{Criterion, criterion_group, criterion_main};

fn cert(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("certs-dev")
        .join(name)
}

fn lookup(numero: &str) -> Lookup {
    Lookup::Numero(NumeroAllocataire::parse(numero).expect("a valid numéro"))
}

/// Every read is a miss (nothing stays fresh), yet it takes the cache's real
/// miss path: look-up, single-flight load, store.
fn always_miss() -> CacheSettings {
    CacheSettings {
        ttl_secs: 0,
        not_found_ttl_secs: 0,
        ..CacheSettings::default()
    }
}

/// Times `iters` sequential runs of `one` inside the runtime.
fn timed<F, Fut>(rt: &tokio::runtime::Runtime, iters: u64, one: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    rt.block_on(async {
        let started = Instant::now();
        for _ in 0..iters {
            one().await;
        }
        started.elapsed()
    })
}

fn hit_and_miss(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let embedded = UpstreamSettings::embedded(42, 10_000)
        .connect()
        .expect("the embedded connector");
    let dossier = lookup("2000123");
    let warm = RecordCache::new(&CacheSettings::default());
    let cold = RecordCache::new(&always_miss());
    rt.block_on(warm.get_or_fetch(&dossier, false, || embedded.fetch(&dossier)))
        .expect("the dossier exists");

    let mut group = c.benchmark_group("cache");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    group.bench_function("hit", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, || async {
                black_box(
                    warm.get_or_fetch(&dossier, false, || embedded.fetch(&dossier))
                        .await
                        .ok(),
                );
            })
        })
    });
    group.bench_function("miss_embedded", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, || async {
                black_box(
                    cold.get_or_fetch(&dossier, false, || embedded.fetch(&dossier))
                        .await
                        .ok(),
                );
            })
        })
    });
    group.bench_function("embedded_fetch_alone", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, || async {
                black_box(embedded.fetch(&dossier).await.ok());
            })
        })
    });
    group.finish();
}

fn http_miss_over_direct(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let sim = rt
        .block_on(simulator::start(SimulatorOptions {
            records: 1_000,
            tls_cert_file: Some(cert("server.pem")),
            tls_key_file: Some(cert("server.key.pem")),
            client_ca_file: Some(cert("ca.pem")),
            ..SimulatorOptions::new(([127, 0, 0, 1], 0).into())
        }))
        .expect("the simulator starts");
    let settings = UpstreamSettings {
        ca_file: Some(cert("ca.pem")),
        client_cert_file: Some(cert("client-broker.pem")),
        client_key_file: Some(cert("client-broker.key.pem")),
        timeout_ms: 5_000,
        ..UpstreamSettings::http(&sim.url())
    };
    let caf: Arc<dyn CafClient> = settings
        .connect_with_clock(Arc::new(SystemClock))
        .expect("the HTTP connector");
    let cold = RecordCache::new(&always_miss());
    let direct = {
        let read = |name| std::fs::read(cert(name)).expect("a dev certificate");
        let mut identity = read("client-broker.pem");
        identity.extend(read("client-broker.key.pem"));
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&read("ca.pem")).expect("the CA")])
            .identity(reqwest::Identity::from_pem(&identity).expect("the identity"))
            .no_proxy()
            .build()
            .expect("a client")
    };
    let dossier = lookup("2000123");
    let url = format!("{}/dossiers/2000123", sim.url());

    let mut group = c.benchmark_group("http");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("direct_reqwest", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, || async {
                let response = direct
                    .get(&url)
                    .send()
                    .await
                    .expect("the simulator answers");
                black_box(response.bytes().await.expect("a body"));
            })
        })
    });
    group.bench_function("miss_through_connector_and_cache", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, || async {
                let answer = cold
                    .get_or_fetch(&dossier, false, || caf.fetch(&dossier))
                    .await
                    .map_err(UpstreamError::from_shared);
                black_box(answer.expect("the connector answers"));
            })
        })
    });
    group.finish();
    rt.block_on(sim.kill());
}

criterion_group!(benches, hit_and_miss, http_miss_over_direct);
criterion_main!(benches);
