//! The HTTP connector and the record cache against `caf-broker simulate` as a
//! real HTTPS peer on a free loopback port: mutual TLS, single flight, TTL on an
//! injected clock, timeouts, retries, the circuit breaker and a stopped CAF.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use caf_broker::cache::{CacheSettings, RecordCache};
use caf_broker::domain::{CacheOutcome, Lookup, Nir, NumeroAllocataire};
use caf_broker::simulator::{self, RunningSimulator, SimulatorOptions};
use caf_broker::upstream::{
    CafClient, HttpCaf, Record, UpstreamError, UpstreamHealth, UpstreamSettings,
};
use serde_json::Value;

fn cert(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("certs-dev")
        .join(name)
}

use caf_broker::clock::ManualClock;

/// A simulator over HTTPS with the dev server certificate, requiring a client
/// certificate issued by the dev CA.
fn caf_options() -> SimulatorOptions {
    SimulatorOptions {
        seed: 7,
        records: 20,
        tls_cert_file: Some(cert("server.pem")),
        tls_key_file: Some(cert("server.key.pem")),
        client_ca_file: Some(cert("ca.pem")),
        ..SimulatorOptions::new(([127, 0, 0, 1], 0).into())
    }
}

async fn caf(options: SimulatorOptions) -> RunningSimulator {
    simulator::start(options)
        .await
        .expect("the simulator starts")
}

/// The broker's side: the dev CA, the broker's client certificate, short
/// timeouts, no retries, a breaker that opens after three failures.
fn settings(url: &str) -> UpstreamSettings {
    UpstreamSettings {
        ca_file: Some(cert("ca.pem")),
        client_cert_file: Some(cert("client-broker.pem")),
        client_key_file: Some(cert("client-broker.key.pem")),
        connect_timeout_ms: 500,
        timeout_ms: 1_000,
        retries: 0,
        retry_backoff_ms: 5,
        breaker_failures: 3,
        breaker_open_secs: 30,
        ..UpstreamSettings::http(url)
    }
}

/// A clock that moves only when the test moves it.
fn test_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new("2026-01-15T10:00:00Z".parse().unwrap()))
}

fn connector(settings: &UpstreamSettings, clock: &Arc<ManualClock>) -> HttpCaf {
    HttpCaf::new(settings, clock.clone()).expect("the connector builds")
}

fn numero(n: &str) -> Lookup {
    Lookup::Numero(NumeroAllocataire::parse(n).unwrap())
}

fn nir(n: &str) -> Lookup {
    Lookup::Nir(Nir::parse(n).unwrap())
}

/// A test client with the broker's certificate, to read `/_sim/stats`.
fn stats_client() -> reqwest::Client {
    let ca = std::fs::read(cert("ca.pem")).unwrap();
    let mut identity = std::fs::read(cert("client-broker.pem")).unwrap();
    identity.extend(std::fs::read(cert("client-broker.key.pem")).unwrap());
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .identity(reqwest::Identity::from_pem(&identity).unwrap())
        .no_proxy()
        .build()
        .unwrap()
}

async fn stats(sim: &RunningSimulator) -> Value {
    stats_client()
        .get(format!("{}/_sim/stats", sim.url()))
        .send()
        .await
        .expect("the stats answer")
        .json()
        .await
        .expect("the stats are JSON")
}

async fn requests_total(sim: &RunningSimulator) -> u64 {
    stats(sim).await["requests_total"].as_u64().unwrap()
}

fn field(record: &Option<Record>, name: &str) -> Value {
    record
        .as_ref()
        .map(|r| r[name].clone())
        .unwrap_or(Value::Null)
}

fn failure_message<T: std::fmt::Debug>(result: Result<T, UpstreamError>) -> String {
    match result {
        Err(UpstreamError::Failed(cause)) => format!("{cause:#}"),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn the_broker_reads_dossiers_over_mutual_tls_with_its_client_certificate() {
    let sim = caf(caf_options()).await;
    assert!(sim.url().starts_with("https://"));
    let caf = connector(&settings(&sim.url()), &test_clock());

    let radie = caf.fetch(&numero("1000002")).await.unwrap();
    assert_eq!(field(&radie, "statut_dossier"), "radie");
    let by_nir = caf.fetch(&nir("253072A07300443")).await.unwrap();
    assert_eq!(field(&by_nir, "numero_allocataire"), "1000003");
    assert!(caf.fetch(&numero("9999999")).await.unwrap().is_none());
    // A NIR with a valid key that no dossier holds.
    assert!(caf.fetch(&nir("101017512345651")).await.unwrap().is_none());
    assert_eq!(requests_total(&sim).await, 4);
    sim.kill().await;
}

#[tokio::test]
async fn the_caf_refuses_a_client_without_a_certificate() {
    let sim = caf(caf_options()).await;
    let ca = std::fs::read(cert("ca.pem")).unwrap();
    let anonymous = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .no_proxy()
        .build()
        .unwrap();
    let refused = anonymous
        .get(format!("{}/dossiers/1000001", sim.url()))
        .send()
        .await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(sim.requests_total(), 0);
    sim.kill().await;
}

#[tokio::test]
async fn the_caf_refuses_a_client_certificate_from_another_ca() {
    let sim = caf(caf_options()).await;
    let impostor = UpstreamSettings {
        client_cert_file: Some(cert("client-other-ca.pem")),
        client_key_file: Some(cert("client-other-ca.key.pem")),
        ..settings(&sim.url())
    };
    let caf = connector(&impostor, &test_clock());
    let message = failure_message(caf.fetch(&numero("1000001")).await);
    assert!(!message.contains("1000001"), "{message}");
    assert_eq!(sim.requests_total(), 0);
    sim.kill().await;
}

#[tokio::test]
async fn the_broker_refuses_a_caf_whose_certificate_it_does_not_trust() {
    let sim = caf(SimulatorOptions {
        tls_cert_file: Some(cert("server-other-ca.pem")),
        tls_key_file: Some(cert("server-other-ca.key.pem")),
        ..caf_options()
    })
    .await;
    let caf = connector(&settings(&sim.url()), &test_clock());
    let message = failure_message(caf.fetch(&numero("1000001")).await);
    assert!(
        message.starts_with("the TLS handshake with the CAF failed"),
        "{message}"
    );
    assert_eq!(sim.requests_total(), 0);
    sim.kill().await;
}

#[tokio::test]
async fn plain_http_to_a_loopback_caf_works_for_local_development() {
    let sim = caf(SimulatorOptions {
        seed: 7,
        records: 20,
        ..SimulatorOptions::new(([127, 0, 0, 1], 0).into())
    })
    .await;
    assert!(sim.url().starts_with("http://"));
    let caf = connector(&UpstreamSettings::http(&sim.url()), &test_clock());
    let record = caf.fetch(&numero("1000001")).await.unwrap();
    assert_eq!(field(&record, "numero_allocataire"), "1000001");
    sim.kill().await;
}

#[tokio::test]
async fn fifty_concurrent_misses_on_one_dossier_make_one_call_to_the_caf() {
    // The latency keeps the single call in flight while the others arrive.
    let sim = caf(SimulatorOptions {
        latency_ms: 100,
        ..caf_options()
    })
    .await;
    let clock = test_clock();
    let caf: Arc<dyn CafClient> = Arc::new(connector(&settings(&sim.url()), &clock));
    let records = Arc::new(RecordCache::with_clock(
        &CacheSettings::default(),
        clock.clone(),
    ));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let (caf, records) = (caf.clone(), records.clone());
        tasks.spawn(async move {
            let lookup = numero("1000002");
            records
                .get_or_fetch(&lookup, false, || caf.fetch(&lookup))
                .await
                .map(|(record, _)| field(&record, "statut_dossier"))
                .map_err(UpstreamError::from_shared)
        });
    }
    while let Some(answer) = tasks.join_next().await {
        assert_eq!(answer.unwrap().unwrap(), "radie");
    }
    assert_eq!(requests_total(&sim).await, 1);
    sim.kill().await;
}

#[tokio::test]
async fn a_cached_record_is_served_until_its_ttl_passes_on_the_injected_clock() {
    let sim = caf(caf_options()).await;
    let clock = test_clock();
    let caf = connector(&settings(&sim.url()), &clock);
    let records = RecordCache::with_clock(&CacheSettings::default(), clock.clone());
    let lookup = numero("1000001");
    let read = || async {
        records
            .get_or_fetch(&lookup, false, || caf.fetch(&lookup))
            .await
            .map(|(_, status)| status)
            .map_err(UpstreamError::from_shared)
            .unwrap()
    };

    assert_eq!(read().await, CacheOutcome::Miss);
    assert_eq!(read().await, CacheOutcome::Hit);
    clock.advance(Duration::from_secs(59));
    assert_eq!(read().await, CacheOutcome::Hit);
    assert_eq!(requests_total(&sim).await, 1);
    clock.advance(Duration::from_secs(1));
    assert_eq!(read().await, CacheOutcome::Miss);
    assert_eq!(requests_total(&sim).await, 2);

    // Cache-Control: no-cache reads the CAF again even within the TTL.
    let (_, status) = records
        .get_or_fetch(&lookup, true, || caf.fetch(&lookup))
        .await
        .map_err(UpstreamError::from_shared)
        .unwrap();
    assert_eq!(status, CacheOutcome::Miss);
    assert_eq!(requests_total(&sim).await, 3);
    sim.kill().await;
}

#[tokio::test]
async fn not_found_is_cached_briefly() {
    let sim = caf(caf_options()).await;
    let clock = test_clock();
    let caf = connector(&settings(&sim.url()), &clock);
    let records = RecordCache::with_clock(&CacheSettings::default(), clock.clone());
    let lookup = nir("101017512345651");
    let read = || async {
        records
            .get_or_fetch(&lookup, false, || caf.fetch(&lookup))
            .await
            .map_err(UpstreamError::from_shared)
            .unwrap()
    };

    assert_eq!(read().await, (None, CacheOutcome::Miss));
    clock.advance(Duration::from_secs(9));
    assert_eq!(read().await, (None, CacheOutcome::Hit));
    assert_eq!(requests_total(&sim).await, 1);
    clock.advance(Duration::from_secs(1));
    assert_eq!(read().await, (None, CacheOutcome::Miss));
    assert_eq!(requests_total(&sim).await, 2);
    sim.kill().await;
}

#[tokio::test]
async fn a_caf_that_never_answers_times_out_and_is_not_retried() {
    let sim = caf(caf_options()).await;
    let caf = connector(
        &UpstreamSettings {
            retries: 2,
            ..settings(&sim.url())
        },
        &test_clock(),
    );
    // A first lookup opens the connection, so that the handshake is not
    // part of the timed one.
    assert!(caf.fetch(&numero("1000002")).await.unwrap().is_some());
    sim.hold();
    let started = Instant::now();
    // Bounded, should the connector wait for the held answer for ever.
    let result = tokio::time::timeout(Duration::from_secs(30), caf.fetch(&numero("1000001")))
        .await
        .expect("the connector waited past its own timeout");
    assert!(matches!(result, Err(UpstreamError::Timeout)), "{result:?}");
    // Not before its time: the timeout covers the whole lookup.
    assert!(started.elapsed() >= Duration::from_millis(1_000));
    // The held request is the one attempt: a timeout is not retried.
    assert_eq!(sim.requests_total(), 2);
    sim.kill().await;
}

#[tokio::test]
async fn a_503_is_retried_but_a_404_is_not() {
    let sim = caf(caf_options()).await;
    let caf = connector(
        &UpstreamSettings {
            retries: 2,
            breaker_failures: 100,
            ..settings(&sim.url())
        },
        &test_clock(),
    );
    assert!(caf.fetch(&numero("9999999")).await.unwrap().is_none());
    assert_eq!(requests_total(&sim).await, 1);

    sim.set_fail_rate(1.0).unwrap();
    let message = failure_message(caf.fetch(&numero("1000001")).await);
    assert!(message.contains("status 503"), "{message}");
    assert_eq!(requests_total(&sim).await, 1 + 3);
    sim.kill().await;
}

#[tokio::test]
async fn a_408_from_a_caf_closing_an_idle_connection_is_retried_on_a_new_one() {
    // A plain HTTP peer that, like actix-web closing a kept-alive connection it
    // found idle, answers the first connection's request with 408 and closes
    // it, and serves the dossier on the next connection.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicU64::new(0));
    let counter = accepted.clone();
    let peer = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let first = counter.fetch_add(1, Ordering::SeqCst) == 0;
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let answer: &[u8] = if first {
                b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 33\r\n\r\n{\"numero_allocataire\": \"1000001\"}"
            };
            let _ = socket.write_all(answer).await;
            let _ = socket.shutdown().await;
        }
    });
    let caf = connector(
        &UpstreamSettings {
            retries: 2,
            retry_backoff_ms: 1,
            ..UpstreamSettings::http(&url)
        },
        &test_clock(),
    );
    let record = caf.fetch(&numero("1000001")).await.unwrap();
    assert_eq!(field(&record, "numero_allocataire"), "1000001");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    peer.abort();
}

#[tokio::test]
async fn a_connection_that_breaks_during_the_handshake_is_retried() {
    // A peer that accepts TCP connections and closes them at once, counting them.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicU64::new(0));
    let counter = accepted.clone();
    let peer = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    let caf = connector(
        &UpstreamSettings {
            retries: 2,
            ..settings(&url)
        },
        &test_clock(),
    );
    let message = failure_message(caf.fetch(&numero("1000001")).await);
    assert!(
        message.starts_with("cannot connect to the CAF"),
        "{message}"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
    peer.abort();
}

#[tokio::test]
async fn a_failing_caf_opens_the_circuit_and_is_then_spared() {
    let sim = caf(SimulatorOptions {
        fail_rate: 1.0,
        ..caf_options()
    })
    .await;
    let clock = test_clock();
    let caf = connector(&settings(&sim.url()), &clock);
    for _ in 0..3 {
        assert!(matches!(
            caf.fetch(&numero("1000001")).await,
            Err(UpstreamError::Failed(_))
        ));
    }
    assert!(caf.circuit_open());
    assert_eq!(
        caf.health(),
        UpstreamHealth::CircuitOpen {
            retry_after_secs: 30
        }
    );
    for _ in 0..10 {
        match caf.fetch(&numero("1000001")).await {
            Err(UpstreamError::Unavailable { retry_after_secs }) => {
                assert_eq!(retry_after_secs, Some(30))
            }
            other => panic!("expected the circuit to refuse, got {other:?}"),
        }
    }
    assert_eq!(requests_total(&sim).await, 3);

    // The open period ends while the CAF still fails: one probe, then open again.
    clock.advance(Duration::from_secs(30));
    assert_eq!(caf.health(), UpstreamHealth::HalfOpen);
    assert!(caf.fetch(&numero("1000001")).await.is_err());
    assert!(caf.circuit_open());
    assert_eq!(requests_total(&sim).await, 4);
    sim.kill().await;
}

#[tokio::test]
async fn the_half_open_probe_closes_the_circuit_once_the_caf_recovers() {
    let sim = caf(SimulatorOptions {
        fail_rate: 1.0,
        ..caf_options()
    })
    .await;
    let clock = test_clock();
    let caf = connector(&settings(&sim.url()), &clock);
    for _ in 0..3 {
        assert!(caf.fetch(&numero("1000001")).await.is_err());
    }
    assert!(caf.circuit_open());

    sim.set_fail_rate(0.0).unwrap();
    clock.advance(Duration::from_secs(29));
    assert!(matches!(
        caf.fetch(&numero("1000001")).await,
        Err(UpstreamError::Unavailable {
            retry_after_secs: Some(1)
        })
    ));
    clock.advance(Duration::from_secs(1));
    let probe = caf.fetch(&numero("1000001")).await.unwrap();
    assert_eq!(field(&probe, "numero_allocataire"), "1000001");
    assert_eq!(caf.health(), UpstreamHealth::Ready);
    assert!(caf.fetch(&numero("1000002")).await.unwrap().is_some());
    assert_eq!(requests_total(&sim).await, 5);
    sim.kill().await;
}

#[tokio::test]
async fn when_the_caf_stops_cached_records_are_still_served_and_others_fail_fast() {
    let sim = caf(caf_options()).await;
    let clock = test_clock();
    let caf = connector(
        &UpstreamSettings {
            retries: 2,
            ..settings(&sim.url())
        },
        &clock,
    );
    let records = RecordCache::with_clock(&CacheSettings::default(), clock.clone());
    let read = |n: &'static str| {
        let (caf, records) = (&caf, &records);
        async move {
            let lookup = numero(n);
            records
                .get_or_fetch(&lookup, false, || caf.fetch(&lookup))
                .await
                .map_err(UpstreamError::from_shared)
        }
    };
    assert_eq!(read("1000001").await.unwrap().1, CacheOutcome::Miss);
    // Returns once the CAF's connections are closed and its port refuses.
    sim.kill().await;

    let (record, status) = read("1000001").await.unwrap();
    assert_eq!(status, CacheOutcome::Hit);
    assert_eq!(field(&record, "numero_allocataire"), "1000001");

    // Up to the three failures that open the circuit, each uncached dossier
    // fails on a refused connection (the last of its attempts), not on a timeout.
    for n in ["2000000", "2000001", "2000002"] {
        let message = failure_message(read(n).await);
        assert!(
            message.starts_with("cannot connect to the CAF") && message.contains("refused"),
            "{message}"
        );
    }
    assert!(caf.circuit_open());
}

#[tokio::test]
async fn upstream_calls_in_flight_never_exceed_the_cap() {
    let sim = caf(caf_options()).await;
    let caf: Arc<dyn CafClient> = Arc::new(connector(
        &UpstreamSettings {
            max_concurrent: 2,
            timeout_ms: 30_000,
            ..settings(&sim.url())
        },
        &test_clock(),
    ));
    // The CAF holds the calls until two are in flight at once: the cap lets
    // two through, and no more.
    sim.hold();
    let mut tasks = tokio::task::JoinSet::new();
    for n in [
        "1000001", "1000002", "1000003", "1000004", "1000005", "2000001",
    ] {
        let caf = caf.clone();
        tasks.spawn(async move { caf.fetch(&numero(n)).await.map(|r| r.is_some()) });
    }
    tokio::time::timeout(Duration::from_secs(30), sim.in_flight_reaches(2))
        .await
        .expect("two calls never reached the CAF together");
    sim.release();
    while let Some(answer) = tasks.join_next().await {
        assert!(answer.unwrap().unwrap());
    }
    let stats = stats(&sim).await;
    assert_eq!(stats["requests_total"], 6);
    assert_eq!(stats["max_in_flight"], 2);
    sim.kill().await;
}
