//! Two broker replicas sharing one real Redis hold a single quota per post.

use std::sync::Arc;

use caf_broker::clock::ManualClock;
use futures_util::future::join_all;

use crate::helpers::{TestApp, spawn_app_with_clock};
use crate::redis_server::RedisServer;

async fn replica(url: &str) -> TestApp {
    let clock = Arc::new(ManualClock::new("2026-06-15T10:00:00Z".parse().unwrap()));
    spawn_app_with_clock(
        &[
            ("CAF_BROKER__QUOTAS__BACKEND", "redis"),
            ("CAF_BROKER__QUOTAS__REDIS_URL", url),
            // Sharing is under test, not the outage path: a loaded machine may
            // take longer than the 200 ms default, and a replica then judges alone.
            ("CAF_BROKER__QUOTAS__REDIS_TIMEOUT_MS", "5000"),
        ],
        clock,
    )
    .await
}

#[tokio::test]
async fn two_replicas_on_one_redis_share_the_burst_of_a_post_exactly() {
    let redis = RedisServer::start();
    let (a, b) = (replica(&redis.url()).await, replica(&redis.url()).await);
    let (token_a, token_b) = (a.token("agent_consulaire"), b.token("agent_consulaire"));
    let requests = (0..30).flat_map(|_| {
        [
            a.get_dossier("1000002", &token_a, "verification_radiation"),
            b.get_dossier("1000002", &token_b, "verification_radiation"),
        ]
    });
    let responses = join_all(requests).await;
    let ok = responses.iter().filter(|r| r.status() == 200).count();
    let refused = responses.iter().filter(|r| r.status() == 429).count();
    assert_eq!(
        (ok, refused),
        (20, 40),
        "one burst of 20 across both replicas"
    );
}

#[tokio::test]
async fn a_replica_whose_redis_stops_falls_back_to_local_limits_not_to_none() {
    let mut redis = RedisServer::start();
    let app = replica(&redis.url()).await;
    let token = app.token("agent_consulaire");
    assert_eq!(
        app.get_dossier("1000002", &token, "verification_radiation")
            .await
            .status(),
        200
    );
    redis.stop();
    let responses =
        join_all((0..40).map(|_| app.get_dossier("1000002", &token, "verification_radiation")))
            .await;
    let ok = responses.iter().filter(|r| r.status() == 200).count();
    let refused = responses.iter().filter(|r| r.status() == 429).count();
    // The clock stands still: the local burst of 20 is all there is, whole.
    assert_eq!(
        (ok, refused),
        (20, 20),
        "the local burst holds while Redis is down"
    );
}
