//! The Redis quota backend against a real `redis-server` started by each test.
//!
//! Each test starts its own server on a free loopback port in a temporary
//! directory, with persistence off. Without `redis-server` the tests are
//! skipped with a line on stderr, except under `CI=true`, where they fail.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use caf_broker::domain::PostCode;
use caf_broker::quota::{
    self, Backend, Decision, Limits, ManualClock, Quota, QuotaSettings, RedisFailure, Window,
};
use jiff::Timestamp;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

#[path = "support/redis_server.rs"]
mod redis_server;

use redis_server::RedisServer;

// ---------------------------------------------------------------- metrics

/// Counts `caf_broker_quota_redis_fallback_total`. Installed as the test
/// thread's recorder in a current-thread runtime, it sees only its own test.
#[derive(Default)]
struct FallbackRecorder(Arc<AtomicU64>);

impl Recorder for FallbackRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        if key.name() == "caf_broker_quota_redis_fallback_total" {
            Counter::from_arc(self.0.clone())
        } else {
            Counter::noop()
        }
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

// ---------------------------------------------------------------- helpers

const BURST: Limits = Limits {
    per_second: 5,
    burst: 20,
    per_day: 2000,
};

fn settings(url: &str, default: Limits, on_failure: RedisFailure) -> QuotaSettings {
    QuotaSettings {
        backend: Backend::Redis,
        redis_url: Some(url.to_owned()),
        time_zone: "Europe/Paris".to_owned(),
        on_redis_failure: on_failure,
        redis_timeout_ms: 500,
        default,
        posts: Default::default(),
        agent_error_budget: Default::default(),
    }
}

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn post(code: &str) -> PostCode {
    PostCode::parse(code).unwrap()
}

async fn replica(server: &RedisServer, limits: Limits, clock: &Arc<ManualClock>) -> Arc<dyn Quota> {
    quota::build(
        &settings(&server.url(), limits, RedisFailure::Local),
        clock.clone(),
    )
    .await
    .unwrap()
}

fn is_allowed(d: &Decision) -> bool {
    matches!(d, Decision::Allowed(_))
}

async fn concurrent(replicas: &[Arc<dyn Quota>], n: usize, code: &str) -> Vec<Decision> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let quota = replicas[i % replicas.len()].clone();
            let post = post(code);
            tokio::spawn(async move { quota.acquire(&post).await })
        })
        .collect();
    let mut decisions = Vec::with_capacity(n);
    for task in tasks {
        decisions.push(task.await.unwrap());
    }
    decisions
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_on_redis_get_exactly_the_burst() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let clock = Arc::new(ManualClock::new(at("2026-01-15T10:00:00Z")));
    let quota = replica(&server, BURST, &clock).await;
    let decisions = concurrent(&[quota], 100, "TN-TUNIS").await;
    assert_eq!(decisions.iter().filter(|d| is_allowed(d)).count(), 20);
    for d in decisions.iter().filter(|d| !is_allowed(d)) {
        let Decision::Refused {
            retry_after_secs,
            exhausted,
            ..
        } = d
        else {
            panic!("expected a refusal, got {d:?}");
        };
        assert_eq!((*retry_after_secs, *exhausted), (1, Window::Burst));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_one_redis_hold_a_single_burst() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let clock = Arc::new(ManualClock::new(at("2026-01-15T10:00:00Z")));
    let replicas = [
        replica(&server, BURST, &clock).await,
        replica(&server, BURST, &clock).await,
    ];
    let decisions = concurrent(&replicas, 200, "TN-TUNIS").await;
    assert_eq!(decisions.iter().filter(|d| is_allowed(d)).count(), 20);
    // The burst refills for both at once.
    clock.advance(Duration::from_millis(400));
    let decisions = concurrent(&replicas, 50, "TN-TUNIS").await;
    assert_eq!(decisions.iter().filter(|d| is_allowed(d)).count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_the_daily_counter_until_local_midnight() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let limits = Limits {
        per_second: 100,
        burst: 100,
        per_day: 30,
    };
    // 2026-10-25 23:30 in Paris (CET, after the clocks went back).
    let clock = Arc::new(ManualClock::new(at("2026-10-25T22:30:00Z")));
    let replicas = [
        replica(&server, limits, &clock).await,
        replica(&server, limits, &clock).await,
    ];
    let decisions = concurrent(&replicas, 80, "FR-PARIS").await;
    assert_eq!(decisions.iter().filter(|d| is_allowed(d)).count(), 30);
    for replica in &replicas {
        match replica.acquire(&post("FR-PARIS")).await {
            Decision::Refused {
                state,
                retry_after_secs,
                exhausted,
            } => {
                assert_eq!((retry_after_secs, exhausted), (1800, Window::Daily));
                assert_eq!(state.daily_remaining, 0);
                assert_eq!(
                    state.ratelimit_header(),
                    r#""burst";r=70;t=1, "daily";r=0;t=1800"#
                );
            }
            other => panic!("expected a daily refusal, got {other:?}"),
        }
    }
    let mut redis = server.connection().await;
    let count: u64 = redis::cmd("GET")
        .arg("caf-broker:quota:{FR-PARIS}:day:2026-10-25")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(count, 30);
    // Midnight: a new day, a new counter.
    clock.advance(Duration::from_secs(1800));
    match replicas[1].acquire(&post("FR-PARIS")).await {
        Decision::Allowed(state) => assert_eq!(
            (state.daily_remaining, state.daily_reset_secs),
            (29, 86_400)
        ),
        other => panic!("expected a new day, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quota_keys_expire_by_themselves() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // 12:00 in Paris: 12 hours to midnight.
    let clock = Arc::new(ManualClock::new(at("2026-01-15T11:00:00Z")));
    let quota = replica(&server, BURST, &clock).await;
    assert!(is_allowed(&quota.acquire(&post("TN-TUNIS")).await));
    let mut redis = server.connection().await;
    let burst_ttl_ms: i64 = redis::cmd("PTTL")
        .arg("caf-broker:quota:{TN-TUNIS}:burst")
        .query_async(&mut redis)
        .await
        .unwrap();
    let day_ttl_s: i64 = redis::cmd("TTL")
        .arg("caf-broker:quota:{TN-TUNIS}:day:2026-01-15")
        .query_async(&mut redis)
        .await
        .unwrap();
    // The burst key lives until the burst is full again (200 ms), plus a second.
    assert!(
        (1..=1200).contains(&burst_ttl_ms),
        "burst key PTTL {burst_ttl_ms}"
    );
    // The day key lives until midnight plus an hour.
    assert!(
        (13 * 3600 - 60..=13 * 3600).contains(&day_ttl_s),
        "day key TTL {day_ttl_s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_and_local_backends_give_the_same_answers() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let limits = Limits {
        per_second: 2,
        burst: 3,
        per_day: 5,
    };
    let start = at("2026-03-29T21:00:00Z"); // 23:00 CEST on the spring-forward day
    let redis_clock = Arc::new(ManualClock::new(start));
    let local_clock = Arc::new(ManualClock::new(start));
    let on_redis = replica(&server, limits, &redis_clock).await;
    let mut local_settings = settings(&server.url(), limits, RedisFailure::Local);
    local_settings.backend = Backend::Local;
    let on_local = quota::build(&local_settings, local_clock.clone())
        .await
        .unwrap();
    let p = post("TN-TUNIS");
    for step_ms in [0, 0, 0, 0, 100, 400, 0, 0, 700, 0, 1500, 0, 0, 3_600_000] {
        redis_clock.advance(Duration::from_millis(step_ms));
        local_clock.advance(Duration::from_millis(step_ms));
        let a = on_redis.acquire(&p).await;
        let b = on_local.acquire(&p).await;
        assert_eq!(a, b, "after a step of {step_ms} ms");
    }
}

// A current-thread runtime: every task runs on the test thread, where the
// local metrics recorder is installed.
#[tokio::test]
async fn a_redis_outage_falls_back_to_local_limits_and_ends_when_redis_returns() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let recorder = FallbackRecorder::default();
    let fallbacks = recorder.0.clone();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let clock = Arc::new(ManualClock::new(at("2026-01-15T10:00:00Z")));
    let quota = replica(&server, BURST, &clock).await;
    let p = post("TN-TUNIS");
    for _ in 0..5 {
        assert!(is_allowed(&quota.acquire(&p).await));
    }

    server.stop();
    let before = fallbacks.load(Ordering::SeqCst);
    // The local fallback starts with a full burst of its own: limited, not unlimited.
    let decisions = concurrent(std::slice::from_ref(&quota), 60, "TN-TUNIS").await;
    assert_eq!(decisions.iter().filter(|d| is_allowed(d)).count(), 20);
    assert_eq!(fallbacks.load(Ordering::SeqCst) - before, 60);

    server.restart();
    // Decisions stay local until the next probe, one second later.
    clock.advance(Duration::from_secs(1));
    assert!(is_allowed(&quota.acquire(&p).await));
    let mut redis = server.connection().await;
    let count: Option<u64> = redis::cmd("GET")
        .arg("caf-broker:quota:{TN-TUNIS}:day:2026-01-15")
        .query_async(&mut redis)
        .await
        .unwrap();
    // The restarted Redis is empty: the probe's request is its first count.
    assert_eq!(count, Some(1));
    let after_recovery = fallbacks.load(Ordering::SeqCst);
    assert!(is_allowed(&quota.acquire(&p).await));
    assert_eq!(fallbacks.load(Ordering::SeqCst), after_recovery);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_refuse_on_failure_a_redis_outage_makes_requests_unavailable() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let clock = Arc::new(ManualClock::new(at("2026-01-15T10:00:00Z")));
    let quota = quota::build(
        &settings(&server.url(), BURST, RedisFailure::Refuse),
        clock.clone(),
    )
    .await
    .unwrap();
    let p = post("TN-TUNIS");
    assert!(is_allowed(&quota.acquire(&p).await));
    server.stop();
    for _ in 0..5 {
        assert_eq!(quota.acquire(&p).await, Decision::Unavailable);
    }
    server.restart();
    clock.advance(Duration::from_secs(1));
    assert!(is_allowed(&quota.acquire(&p).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_started_while_redis_is_down_uses_local_limits_until_it_answers() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    server.stop();
    let clock = Arc::new(ManualClock::new(at("2026-01-15T10:00:00Z")));
    let quota = replica(&server, BURST, &clock).await;
    let decisions = concurrent(std::slice::from_ref(&quota), 30, "TN-TUNIS").await;
    assert_eq!(decisions.iter().filter(|d| is_allowed(d)).count(), 20);
    server.restart();
    clock.advance(Duration::from_secs(1));
    let p = post("TN-TUNIS");
    assert!(is_allowed(&quota.acquire(&p).await));
    let mut redis = server.connection().await;
    let count: Option<u64> = redis::cmd("GET")
        .arg("caf-broker:quota:{TN-TUNIS}:day:2026-01-15")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(count, Some(1));
}
