//! The Redis quota backend against a real `redis-server` started by each test.
//!
//! Each test starts its own server on a free loopback port in a temporary
//! directory, with persistence off. Without `redis-server` they fail, saying
//! what to install.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use caf_broker::clock::ManualClock;
use caf_broker::domain::{Agent, PostCode, Subject};
use caf_broker::quota::{
    self, Backend, Decision, Limits, Quota, QuotaSettings, RedisFailure, Window,
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

/// Agent limits that never bind, for the tests of the post's limits.
const ROOMY: Limits = Limits {
    per_second: 1000,
    burst: 1000,
    per_day: 1_000_000,
};

/// The shipped default of an agent.
const AGENT: Limits = Limits {
    per_second: 2,
    burst: 10,
    per_day: 500,
};

fn settings(url: &str, default: Limits, on_failure: RedisFailure) -> QuotaSettings {
    QuotaSettings {
        backend: Backend::Redis,
        redis_url: Some(url.to_owned()),
        redis_ca_file: None,
        redis_username: None,
        redis_password_file: None,
        replicas_hint: 1,
        time_zone: "Europe/Paris".to_owned(),
        on_redis_failure: on_failure,
        redis_timeout_ms: 500,
        default,
        posts: Default::default(),
        agent_error_budget: Default::default(),
        known_posts_only: false,
        agent_default: ROOMY,
        agents: Default::default(),
    }
}

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// A post and a `sub`: an agent, owned.
struct Who(PostCode, Subject);

impl Who {
    fn agent(&self) -> Agent<'_> {
        Agent {
            post: &self.0,
            sub: &self.1,
        }
    }
}

/// Agent `agent-42` of the post `code`.
fn post(code: &str) -> Who {
    agent(code, "agent-42")
}

fn agent(code: &str, sub: &str) -> Who {
    Who(PostCode::parse(code).unwrap(), Subject::parse(sub).unwrap())
}

async fn replica(server: &RedisServer, limits: Limits, clock: &Arc<ManualClock>) -> Arc<dyn Quota> {
    quota::build(
        &settings(&server.url(), limits, RedisFailure::Local),
        clock.clone(),
    )
    .await
    .unwrap()
}

async fn replica_with(settings: &QuotaSettings, clock: &Arc<ManualClock>) -> Arc<dyn Quota> {
    quota::build(settings, clock.clone()).await.unwrap()
}

fn is_allowed(d: &Decision) -> bool {
    matches!(d, Decision::Allowed(_))
}

fn refused_by(d: &Decision) -> Option<Window> {
    match d {
        Decision::Refused { exhausted, .. } => Some(*exhausted),
        _ => None,
    }
}

async fn concurrent(replicas: &[Arc<dyn Quota>], n: usize, code: &str) -> Vec<Decision> {
    concurrent_of(replicas, n, code, "agent-42").await
}

async fn concurrent_of(
    replicas: &[Arc<dyn Quota>],
    n: usize,
    code: &str,
    sub: &str,
) -> Vec<Decision> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let quota = replicas[i % replicas.len()].clone();
            let who = agent(code, sub);
            tokio::spawn(async move { quota.acquire(who.agent()).await })
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
    let server = RedisServer::start();
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
    let server = RedisServer::start();
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
    let server = RedisServer::start();
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
        match replica.acquire(post("FR-PARIS").agent()).await {
            Decision::Refused {
                state,
                retry_after_secs,
                exhausted,
            } => {
                assert_eq!((retry_after_secs, exhausted), (1800, Window::Daily));
                assert_eq!(state.post.daily_remaining, 0);
                assert_eq!(
                    state.ratelimit_header(),
                    r#""burst";r=70;t=1, "daily";r=0;t=1800, "agent-burst";r=970;t=1, "agent-daily";r=999970;t=1800"#
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
    match replicas[1].acquire(post("FR-PARIS").agent()).await {
        Decision::Allowed(state) => assert_eq!(
            (state.post.daily_remaining, state.daily_reset_secs),
            (29, 86_400)
        ),
        other => panic!("expected a new day, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quota_keys_expire_by_themselves() {
    let server = RedisServer::start();
    // 12:00 in Paris: 12 hours to midnight.
    let clock = Arc::new(ManualClock::new(at("2026-01-15T11:00:00Z")));
    let quota = replica(&server, BURST, &clock).await;
    assert!(is_allowed(&quota.acquire(post("TN-TUNIS").agent()).await));
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
    let server = RedisServer::start();
    let limits = Limits {
        per_second: 2,
        burst: 3,
        per_day: 7,
    };
    let mut shared = settings(&server.url(), limits, RedisFailure::Local);
    // Tighter than the post for one agent, so that all four limits refuse in turn.
    shared.agent_default = Limits {
        per_second: 3,
        burst: 2,
        per_day: 4,
    };
    let start = at("2026-03-29T21:00:00Z"); // 23:00 CEST on the spring-forward day
    let redis_clock = Arc::new(ManualClock::new(start));
    let local_clock = Arc::new(ManualClock::new(start));
    let on_redis = replica_with(&shared, &redis_clock).await;
    let mut local_settings = shared.clone();
    local_settings.backend = Backend::Local;
    let on_local = replica_with(&local_settings, &local_clock).await;
    let (a, b) = (agent("TN-TUNIS", "agent-a"), agent("TN-TUNIS", "agent-b"));
    use Window::*;
    // (agent, clock step in ms, the expected answer)
    let steps = [
        (&a, 0, None),
        (&a, 0, None),
        (&a, 0, Some(AgentBurst)),
        (&b, 0, None),
        (&b, 0, Some(Burst)),
        (&a, 600, None),
        (&a, 1000, None),
        (&a, 1000, Some(AgentDaily)),
        (&b, 0, None),
        (&b, 1000, None),
        (&b, 1000, Some(Daily)),
        (&a, 0, Some(Daily)),
        (&a, 3_600_000, None), // past local midnight
        (&a, 0, None),
        (&a, 0, Some(AgentBurst)),
    ];
    for (i, (who, step_ms, expected)) in steps.into_iter().enumerate() {
        redis_clock.advance(Duration::from_millis(step_ms));
        local_clock.advance(Duration::from_millis(step_ms));
        let x = on_redis.acquire(who.agent()).await;
        let y = on_local.acquire(who.agent()).await;
        assert_eq!(x, y, "step {i}, after {step_ms} ms");
        assert_eq!(refused_by(&x), expected, "step {i}");
    }
}

// A current-thread runtime: every task runs on the test thread, where the
// local metrics recorder is installed.
#[tokio::test]
async fn a_redis_outage_falls_back_to_local_limits_and_ends_when_redis_returns() {
    let mut server = RedisServer::start();
    let recorder = FallbackRecorder::default();
    let fallbacks = recorder.0.clone();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let clock = Arc::new(ManualClock::new(at("2026-01-15T10:00:00Z")));
    let quota = replica(&server, BURST, &clock).await;
    let p = post("TN-TUNIS");
    for _ in 0..5 {
        assert!(is_allowed(&quota.acquire(p.agent()).await));
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
    assert!(is_allowed(&quota.acquire(p.agent()).await));
    let mut redis = server.connection().await;
    let count: Option<u64> = redis::cmd("GET")
        .arg("caf-broker:quota:{TN-TUNIS}:day:2026-01-15")
        .query_async(&mut redis)
        .await
        .unwrap();
    // The restarted Redis is empty: the probe's request is its first count.
    assert_eq!(count, Some(1));
    let after_recovery = fallbacks.load(Ordering::SeqCst);
    assert!(is_allowed(&quota.acquire(p.agent()).await));
    assert_eq!(fallbacks.load(Ordering::SeqCst), after_recovery);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_refuse_on_failure_a_redis_outage_makes_requests_unavailable() {
    let mut server = RedisServer::start();
    let clock = Arc::new(ManualClock::new(at("2026-01-15T10:00:00Z")));
    let quota = quota::build(
        &settings(&server.url(), BURST, RedisFailure::Refuse),
        clock.clone(),
    )
    .await
    .unwrap();
    let p = post("TN-TUNIS");
    assert!(is_allowed(&quota.acquire(p.agent()).await));
    server.stop();
    for _ in 0..5 {
        assert_eq!(quota.acquire(p.agent()).await, Decision::Unavailable);
    }
    server.restart();
    clock.advance(Duration::from_secs(1));
    assert!(is_allowed(&quota.acquire(p.agent()).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_started_while_redis_is_down_uses_local_limits_until_it_answers() {
    let mut server = RedisServer::start();
    server.stop();
    let clock = Arc::new(ManualClock::new(at("2026-01-15T10:00:00Z")));
    let quota = replica(&server, BURST, &clock).await;
    let decisions = concurrent(std::slice::from_ref(&quota), 30, "TN-TUNIS").await;
    assert_eq!(decisions.iter().filter(|d| is_allowed(d)).count(), 20);
    server.restart();
    clock.advance(Duration::from_secs(1));
    let p = post("TN-TUNIS");
    assert!(is_allowed(&quota.acquire(p.agent()).await));
    let mut redis = server.connection().await;
    let count: Option<u64> = redis::cmd("GET")
        .arg("caf-broker:quota:{TN-TUNIS}:day:2026-01-15")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(count, Some(1));
}

// ---------------------------------------------------------------- agents

fn with_agents(server: &RedisServer, post: Limits, agent: Limits) -> QuotaSettings {
    let mut s = settings(&server.url(), post, RedisFailure::Local);
    s.agent_default = agent;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_of_one_agent_on_two_replicas_get_exactly_the_agent_burst() {
    let server = RedisServer::start();
    let clock = Arc::new(ManualClock::new(at("2026-01-15T10:00:00Z")));
    let s = with_agents(&server, BURST, AGENT);
    let replicas = [
        replica_with(&s, &clock).await,
        replica_with(&s, &clock).await,
    ];
    let decisions = concurrent_of(&replicas, 100, "TN-TUNIS", "agent-a").await;
    assert_eq!(decisions.iter().filter(|d| is_allowed(d)).count(), 10);
    assert!(
        decisions
            .iter()
            .filter(|d| !is_allowed(d))
            .all(|d| refused_by(d) == Some(Window::AgentBurst))
    );
    // Refusals consumed nothing of the post: another agent has its other ten.
    let decisions = concurrent_of(&replicas, 50, "TN-TUNIS", "agent-b").await;
    assert_eq!(decisions.iter().filter(|d| is_allowed(d)).count(), 10);
    let third = agent("TN-TUNIS", "agent-c");
    let refused = replicas[0].acquire(third.agent()).await;
    assert_eq!(refused_by(&refused), Some(Window::Burst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agent_keys_hold_the_post_and_sub_only_and_expire_by_themselves() {
    let server = RedisServer::start();
    // 12:00 in Paris: 12 hours to midnight.
    let clock = Arc::new(ManualClock::new(at("2026-01-15T11:00:00Z")));
    let quota = replica_with(&with_agents(&server, BURST, AGENT), &clock).await;
    let who = agent("TN-TUNIS", "agent-a");
    for _ in 0..3 {
        assert!(is_allowed(&quota.acquire(who.agent()).await));
    }
    let mut redis = server.connection().await;
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut redis)
        .await
        .unwrap();
    keys.sort();
    assert_eq!(
        keys,
        [
            "caf-broker:quota:{TN-TUNIS}:agent-burst:agent-a",
            "caf-broker:quota:{TN-TUNIS}:agent-day:2026-01-15:agent-a",
            "caf-broker:quota:{TN-TUNIS}:burst",
            "caf-broker:quota:{TN-TUNIS}:day:2026-01-15",
        ]
    );
    let count: u64 = redis::cmd("GET")
        .arg("caf-broker:quota:{TN-TUNIS}:agent-day:2026-01-15:agent-a")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(count, 3);
    let burst_ttl_ms: i64 = redis::cmd("PTTL")
        .arg("caf-broker:quota:{TN-TUNIS}:agent-burst:agent-a")
        .query_async(&mut redis)
        .await
        .unwrap();
    let day_ttl_s: i64 = redis::cmd("TTL")
        .arg("caf-broker:quota:{TN-TUNIS}:agent-day:2026-01-15:agent-a")
        .query_async(&mut redis)
        .await
        .unwrap();
    // Three agent tokens at 2 per second come back in 1.5 s; plus a second.
    assert!(
        (1..=2500).contains(&burst_ttl_ms),
        "agent burst key PTTL {burst_ttl_ms}"
    );
    assert!(
        (13 * 3600 - 60..=13 * 3600).contains(&day_ttl_s),
        "agent day key TTL {day_ttl_s}"
    );
}

// A current-thread runtime, as for the outage test above.
#[tokio::test]
async fn during_an_outage_each_replica_grants_only_its_share_of_what_the_day_left() {
    let mut server = RedisServer::start();
    let day = Limits {
        per_second: 1000,
        burst: 1000,
        per_day: 100,
    };
    let agent_day = Limits { per_day: 60, ..day };
    let mut s = with_agents(&server, day, agent_day);
    s.replicas_hint = 2;
    let clock = Arc::new(ManualClock::new(at("2026-01-15T10:00:00Z")));
    let quota = replica_with(&s, &clock).await;
    let (a, b) = (agent("TN-TUNIS", "agent-a"), agent("TN-TUNIS", "agent-b"));
    for who in [&a, &b] {
        for _ in 0..20 {
            assert!(is_allowed(&quota.acquire(who.agent()).await));
        }
    }

    server.stop();
    // Redis last saw 40 of the post's 100 and 20 of each agent's 60. With two
    // replicas, this one may grant 60 / 2 = 30 more for the post and
    // 40 / 2 = 20 more for each agent, not the whole day again.
    let mut granted_a = 0;
    let last_a = loop {
        let d = quota.acquire(a.agent()).await;
        if !is_allowed(&d) {
            break d;
        }
        granted_a += 1;
    };
    assert_eq!(granted_a, 20);
    assert_eq!(refused_by(&last_a), Some(Window::AgentDaily));
    let mut granted_b = 0;
    let last_b = loop {
        let d = quota.acquire(b.agent()).await;
        if !is_allowed(&d) {
            break d;
        }
        granted_b += 1;
    };
    assert_eq!(granted_b, 10, "the post's share, 30, is spent");
    let Decision::Refused {
        state, exhausted, ..
    } = last_b
    else {
        panic!("expected a refusal, got {last_b:?}");
    };
    assert_eq!(exhausted, Window::Daily);
    assert_eq!(state.post.daily_remaining, 0);
    // The next probe finds Redis back: its counts rule again.
    server.restart();
    clock.advance(Duration::from_secs(1));
    assert!(is_allowed(&quota.acquire(a.agent()).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_started_while_redis_is_down_grants_its_share_of_the_whole_day() {
    let mut server = RedisServer::start();
    server.stop();
    let day = Limits {
        per_second: 1000,
        burst: 1000,
        per_day: 90,
    };
    let mut s = settings(&server.url(), day, RedisFailure::Local);
    s.replicas_hint = 3;
    let clock = Arc::new(ManualClock::new(at("2026-01-15T10:00:00Z")));
    let quota = replica_with(&s, &clock).await;
    let decisions = concurrent(std::slice::from_ref(&quota), 100, "TN-TUNIS").await;
    assert_eq!(decisions.iter().filter(|d| is_allowed(d)).count(), 30);
}

// ---------------------------------------------------------------- TLS and ACL

/// The least the broker's user needs, as README.md documents it.
const ACL_USER: [&str; 11] = [
    "--user",
    "default",
    "off",
    "--user",
    "broker",
    "on",
    ">s3cret-pass",
    "~caf-broker:quota:*",
    "~caf-broker:alerts:*",
    "+@all",
    "-@dangerous",
];

fn certs(file: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("certs-dev")
        .join(file)
}

fn password_file(content: &str) -> std::path::PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path =
        std::env::temp_dir().join(format!("caf-broker-redis-pass-{}-{n}", std::process::id()));
    std::fs::write(&path, content).unwrap();
    path
}

/// A plain connection to the server's loopback port as the ACL user, to look at keys.
async fn as_broker(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!(
        "redis://broker:s3cret-pass@127.0.0.1:{}/0",
        server.port
    ))
    .unwrap()
    .get_multiplexed_async_connection()
    .await
    .unwrap()
}

fn tls_settings(server: &RedisServer, ca: &str) -> QuotaSettings {
    let tls_port = server.tls_port.unwrap();
    let mut s = settings(
        &format!("rediss://127.0.0.1:{tls_port}/0"),
        BURST,
        RedisFailure::Local,
    );
    s.redis_ca_file = Some(certs(ca));
    s.redis_username = Some("broker".to_owned());
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tls_redis_is_reached_over_rediss_as_an_acl_user_with_a_password_file() {
    let server = RedisServer::start_tls(&ACL_USER);
    let clock = Arc::new(ManualClock::new(at("2026-01-15T10:00:00Z")));
    let mut s = tls_settings(&server, "ca.pem");
    // A trailing newline, as editors and secret stores leave one.
    s.redis_password_file = Some(password_file("s3cret-pass\n"));
    let replicas = [
        replica_with(&s, &clock).await,
        replica_with(&s, &clock).await,
    ];
    let decisions = concurrent(&replicas, 60, "TN-TUNIS").await;
    assert_eq!(decisions.iter().filter(|d| is_allowed(d)).count(), 20);
    let count: u64 = redis::cmd("GET")
        .arg("caf-broker:quota:{TN-TUNIS}:day:2026-01-15")
        .query_async(&mut as_broker(&server).await)
        .await
        .unwrap();
    assert_eq!(count, 20, "both replicas counted in the TLS Redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tls_redis_whose_certificate_the_ca_file_does_not_vouch_for_is_never_used() {
    let server = RedisServer::start_tls(&ACL_USER);
    let clock = Arc::new(ManualClock::new(at("2026-01-15T10:00:00Z")));
    let mut s = tls_settings(&server, "other-ca.pem");
    s.redis_password_file = Some(password_file("s3cret-pass"));
    let quota = replica_with(&s, &clock).await;
    // Limited by the local fallback, never counted in Redis.
    let decisions = concurrent(std::slice::from_ref(&quota), 30, "TN-TUNIS").await;
    assert_eq!(decisions.iter().filter(|d| is_allowed(d)).count(), 20);
    let keys: u64 = redis::cmd("DBSIZE")
        .query_async(&mut as_broker(&server).await)
        .await
        .unwrap();
    assert_eq!(keys, 0);
}

/// The real binary, started on a Redis it cannot log in to: its log says
/// where Redis is and that it does not answer, and never shows the password.
#[test]
fn a_wrong_redis_password_is_an_outage_whose_logs_never_show_a_password() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let server = RedisServer::start_tls(&ACL_USER);
    let tls_port = server.tls_port.unwrap();
    let audit_dir =
        std::env::temp_dir().join(format!("caf-broker-redis-logs-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_caf-broker"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG")
        .env("CAF_BROKER__SERVER__LISTEN", "127.0.0.1:0")
        .env("CAF_BROKER__AUDIT__DIR", &audit_dir)
        .env("CAF_BROKER__QUOTAS__BACKEND", "redis")
        .env(
            "CAF_BROKER__QUOTAS__REDIS_URL",
            format!("rediss://broker:not-the-pass@127.0.0.1:{tls_port}/0"),
        )
        .env("CAF_BROKER__QUOTAS__REDIS_CA_FILE", certs("ca.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    // Lines up to the one saying the broker listens (or the end of its output).
    let mut logs = String::new();
    for line in BufReader::new(stderr).lines().take(200) {
        let Ok(line) = line else { break };
        logs.push_str(&line);
        logs.push('\n');
        if line.contains("caf-broker listening") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&audit_dir);
    assert!(logs.contains("caf-broker listening"), "{logs}");
    assert!(logs.contains("rediss://broker:***@127.0.0.1"), "{logs}");
    assert!(logs.contains("Redis does not answer"), "{logs}");
    assert!(!logs.contains("not-the-pass"), "{logs}");
}
