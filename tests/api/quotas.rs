//! Per-post and per-agent quotas over HTTPS, with a frozen clock so that counts are exact.

use std::sync::Arc;

use caf_broker::clock::ManualClock;
use futures_util::future::join_all;

use crate::audit_files::records;
use crate::helpers::{TestApp, assert_problem, spawn_app_with_clock};

const AGENT: &str = "agent_consulaire";
const RADIATION: &str = "verification_radiation";

/// The shipped per-agent limits (the test harness gives agents more room).
const SHIPPED_AGENT_LIMITS: (&str, &str) = (
    "CAF_BROKER__QUOTAS__AGENT_DEFAULT",
    "{ per_second = 2, burst = 10, per_day = 500 }",
);

/// A token of agent `sub` at `post`.
fn token_of(app: &TestApp, post: &str, sub: &str) -> String {
    app.token_of(post, sub, AGENT)
}

async fn frozen_app(overrides: &[(&str, &str)]) -> (TestApp, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new("2026-06-15T10:00:00Z".parse().unwrap()));
    let app = spawn_app_with_clock(overrides, clock.clone()).await;
    (app, clock)
}

async fn dossier(app: &TestApp, token: &str) -> reqwest::Response {
    app.get_dossier("1000002", token, RADIATION).await
}

async fn concurrent_statuses(app: &TestApp, token: &str, n: usize) -> Vec<reqwest::Response> {
    join_all((0..n).map(|_| app.get_dossier("1000002", token, RADIATION))).await
}

#[tokio::test]
async fn concurrent_requests_of_a_post_get_exactly_its_burst() {
    let (app, _clock) = frozen_app(&[]).await;
    let token = app.token(AGENT);
    let responses = concurrent_statuses(&app, &token, 60).await;
    let ok = responses.iter().filter(|r| r.status() == 200).count();
    let refused = responses.iter().filter(|r| r.status() == 429).count();
    assert_eq!((ok, refused), (20, 40), "burst = 20 with a frozen clock");
}

#[tokio::test]
async fn a_refusal_is_a_quota_problem_with_retry_after_and_ratelimit_fields() {
    let (app, _clock) = frozen_app(&[(
        "CAF_BROKER__QUOTAS__DEFAULT",
        "{ per_second = 1, burst = 2, per_day = 100 }",
    )])
    .await;
    let token = app.token(AGENT);
    for _ in 0..2 {
        let ok = app.get_dossier("1000002", &token, RADIATION).await;
        assert_eq!(ok.status(), 200);
        assert_eq!(
            ok.headers()["ratelimit-policy"],
            r#""burst";q=2;w=2, "daily";q=100;w=86400, "agent-burst";q=1000;w=1, "agent-daily";q=1000000;w=86400"#
        );
    }
    let refused = app.get_dossier("1000002", &token, RADIATION).await;
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(
        refused.headers()["ratelimit"],
        r#""burst";r=0;t=1, "daily";r=98;t=43200, "agent-burst";r=998;t=1, "agent-daily";r=999998;t=43200"#
    );
    assert!(refused.headers().contains_key("ratelimit-policy"));
    let problem = assert_problem(refused, 429, "quota-exceeded").await;
    assert_eq!(problem["limit"], "burst");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("Your post's burst quota")),
        "{problem}"
    );
}

#[tokio::test]
async fn the_burst_refills_as_the_clock_moves() {
    let (app, clock) = frozen_app(&[(
        "CAF_BROKER__QUOTAS__DEFAULT",
        "{ per_second = 1, burst = 1, per_day = 100 }",
    )])
    .await;
    let token = app.token(AGENT);
    assert_eq!(
        app.get_dossier("1000002", &token, RADIATION).await.status(),
        200
    );
    assert_eq!(
        app.get_dossier("1000002", &token, RADIATION).await.status(),
        429
    );
    clock.advance(std::time::Duration::from_secs(1));
    assert_eq!(
        app.get_dossier("1000002", &token, RADIATION).await.status(),
        200
    );
}

#[tokio::test]
async fn the_daily_quota_answers_with_the_time_to_local_midnight() {
    let (app, _clock) = frozen_app(&[(
        "CAF_BROKER__QUOTAS__DEFAULT",
        "{ per_second = 100, burst = 100, per_day = 3 }",
    )])
    .await;
    let token = app.token(AGENT);
    for _ in 0..3 {
        assert_eq!(
            app.get_dossier("1000002", &token, RADIATION).await.status(),
            200
        );
    }
    let refused = app.get_dossier("1000002", &token, RADIATION).await;
    // 10:00 UTC is 12:00 in Paris in June: twelve hours to midnight.
    assert_eq!(refused.headers()["retry-after"], "43200");
    let problem = assert_problem(refused, 429, "quota-exceeded").await;
    assert_eq!(problem["limit"], "daily");
}

#[tokio::test]
async fn requests_refused_before_the_quota_stage_count_nothing_and_not_found_counts() {
    let (app, _clock) = frozen_app(&[(
        "CAF_BROKER__QUOTAS__DEFAULT",
        "{ per_second = 1, burst = 2, per_day = 100 }",
    )])
    .await;
    let token = app.token(AGENT);
    for _ in 0..5 {
        assert_eq!(
            app.get_dossier("1000002", &token, "accompagnement_social")
                .await
                .status(),
            403
        );
        assert_eq!(
            app.get_dossier("1000002", "not-a-token", RADIATION)
                .await
                .status(),
            401
        );
    }
    assert_eq!(
        app.get_dossier("9999999", &token, RADIATION).await.status(),
        404
    );
    assert_eq!(
        app.get_dossier("1000002", &token, RADIATION).await.status(),
        200
    );
    assert_eq!(
        app.get_dossier("1000002", &token, RADIATION).await.status(),
        429
    );
}

#[tokio::test]
async fn each_post_has_its_own_quota_and_overrides_apply() {
    let (app, _clock) = frozen_app(&[
        (
            "CAF_BROKER__QUOTAS__DEFAULT",
            "{ per_second = 1, burst = 1, per_day = 100 }",
        ),
        (
            "CAF_BROKER__QUOTAS__POSTS",
            r#"{ "MA-RABAT" = { per_second = 1, burst = 3, per_day = 100 } }"#,
        ),
    ])
    .await;
    let tunis = app.token_for("TN-TUNIS", AGENT);
    let rabat = app.token_for("MA-RABAT", AGENT);
    assert_eq!(
        app.get_dossier("1000002", &tunis, RADIATION).await.status(),
        200
    );
    assert_eq!(
        app.get_dossier("1000002", &tunis, RADIATION).await.status(),
        429
    );
    for _ in 0..3 {
        assert_eq!(
            app.get_dossier("1000002", &rabat, RADIATION).await.status(),
            200
        );
    }
    assert_eq!(
        app.get_dossier("1000002", &rabat, RADIATION).await.status(),
        429
    );
}

#[tokio::test]
async fn concurrent_requests_of_one_agent_get_exactly_the_agent_burst() {
    let (app, _clock) = frozen_app(&[SHIPPED_AGENT_LIMITS]).await;
    let token = app.token(AGENT);
    let responses = concurrent_statuses(&app, &token, 40).await;
    let ok = responses.iter().filter(|r| r.status() == 200).count();
    let refused = responses.iter().filter(|r| r.status() == 429).count();
    assert_eq!(
        (ok, refused),
        (10, 30),
        "agent burst = 10 with a frozen clock"
    );
    // The agent's refusals took nothing from its post: a colleague is served.
    let colleague = token_of(&app, "TN-TUNIS", "agent-43");
    let responses = concurrent_statuses(&app, &colleague, 10).await;
    assert!(responses.iter().all(|r| r.status() == 200));
}

#[tokio::test]
async fn a_refusal_by_the_agent_burst_names_it_in_the_problem_and_the_fields() {
    let (app, clock) = frozen_app(&[SHIPPED_AGENT_LIMITS]).await;
    let token = app.token(AGENT);
    for _ in 0..10 {
        assert_eq!(
            app.get_dossier("1000002", &token, RADIATION).await.status(),
            200
        );
    }
    let refused = app.get_dossier("1000002", &token, RADIATION).await;
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(
        refused.headers()["ratelimit-policy"],
        r#""burst";q=20;w=4, "daily";q=2000;w=86400, "agent-burst";q=10;w=5, "agent-daily";q=500;w=86400"#
    );
    assert_eq!(
        refused.headers()["ratelimit"],
        r#""burst";r=10;t=1, "daily";r=1990;t=43200, "agent-burst";r=0;t=1, "agent-daily";r=490;t=43200"#
    );
    let problem = assert_problem(refused, 429, "quota-exceeded").await;
    assert_eq!(problem["limit"], "agent-burst");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("Your own burst quota is spent; retry in 1 seconds")),
        "{problem}"
    );
    // One agent token comes back every half second.
    clock.advance(std::time::Duration::from_millis(500));
    assert_eq!(
        app.get_dossier("1000002", &token, RADIATION).await.status(),
        200
    );
}

#[tokio::test]
async fn a_spent_agent_day_refuses_that_agent_until_midnight_and_only_that_agent() {
    let (app, _clock) = frozen_app(&[(
        "CAF_BROKER__QUOTAS__AGENT_DEFAULT",
        "{ per_second = 100, burst = 100, per_day = 2 }",
    )])
    .await;
    let token = app.token(AGENT);
    for _ in 0..2 {
        assert_eq!(
            app.get_dossier("1000002", &token, RADIATION).await.status(),
            200
        );
    }
    let refused = app.get_dossier("1000002", &token, RADIATION).await;
    assert_eq!(refused.headers()["retry-after"], "43200");
    let problem = assert_problem(refused, 429, "quota-exceeded").await;
    assert_eq!(problem["limit"], "agent-daily");
    // The same sub in another post is another agent.
    let elsewhere = token_of(&app, "MA-RABAT", "agent-42");
    assert_eq!(
        app.get_dossier("1000002", &elsewhere, RADIATION)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn an_agent_override_names_the_post_and_the_sub() {
    let (app, _clock) = frozen_app(&[
        SHIPPED_AGENT_LIMITS,
        (
            "CAF_BROKER__QUOTAS__AGENTS",
            r#"{ "TN-TUNIS/agent-7" = { per_second = 1, burst = 2, per_day = 100 } }"#,
        ),
    ])
    .await;
    let count_ok =
        |responses: Vec<reqwest::Response>| responses.iter().filter(|r| r.status() == 200).count();
    let overridden = token_of(&app, "TN-TUNIS", "agent-7");
    assert_eq!(count_ok(concurrent_statuses(&app, &overridden, 5).await), 2);
    let same_sub_elsewhere = token_of(&app, "MA-RABAT", "agent-7");
    assert_eq!(
        count_ok(concurrent_statuses(&app, &same_sub_elsewhere, 15).await),
        10
    );
}

#[tokio::test]
async fn with_known_posts_only_an_unregistered_post_is_refused_and_audited_once() {
    let (app, _clock) = frozen_app(&[
        ("CAF_BROKER__QUOTAS__KNOWN_POSTS_ONLY", "true"),
        (
            "CAF_BROKER__QUOTAS__POSTS",
            r#"{ "TN-TUNIS" = { per_second = 1, burst = 1, per_day = 100 } }"#,
        ),
    ])
    .await;
    let stranger = token_of(&app, "XX-NOWHERE", "agent-9");
    let refused = app.get_dossier("1000002", &stranger, RADIATION).await;
    assert!(!refused.headers().contains_key("ratelimit"));
    assert_problem(refused, 403, "post-not-registered").await;
    let log = records(&app.audit_dir);
    assert_eq!(log.len(), 1, "one record for the refusal");
    assert_eq!(serde_json::to_value(log[0].outcome).unwrap(), "refused");
    assert_eq!(log[0].status, 403);
    assert_eq!(log[0].post.as_deref(), Some("XX-NOWHERE"));
    // A registered post is served and counted as before: its burst of 1.
    let token = app.token(AGENT);
    assert_eq!(
        app.get_dossier("1000002", &token, RADIATION).await.status(),
        200
    );
    assert_eq!(
        app.get_dossier("1000002", &token, RADIATION).await.status(),
        429
    );
}

#[tokio::test]
async fn without_known_posts_only_a_post_without_an_entry_gets_the_default_limits() {
    let (app, _clock) = frozen_app(&[(
        "CAF_BROKER__QUOTAS__DEFAULT",
        "{ per_second = 1, burst = 1, per_day = 100 }",
    )])
    .await;
    let token = token_of(&app, "XX-NOWHERE", "agent-9");
    assert_eq!(
        app.get_dossier("1000002", &token, RADIATION).await.status(),
        200
    );
    assert_eq!(
        app.get_dossier("1000002", &token, RADIATION).await.status(),
        429
    );
}

#[tokio::test]
async fn every_quota_decision_allowed_or_refused_sets_the_posts_daily_quota_left_on_metrics() {
    // Two replicas with local quotas, as after a deployment without Redis: the
    // gauge tells what the last decision saw, whichever replica took it.
    let (a, clock) = frozen_app(&[(
        "CAF_BROKER__QUOTAS__POSTS",
        r#"{ "BE-BRUXELLES" = { per_second = 100, burst = 100, per_day = 3 } }"#,
    )])
    .await;
    let (b, _) = frozen_app(&[(
        "CAF_BROKER__QUOTAS__POSTS",
        r#"{ "BE-BRUXELLES" = { per_second = 1, burst = 1, per_day = 3 } }"#,
    )])
    .await;
    // A post no other test of this binary uses: the series is this test's alone.
    let series = r#"caf_broker_quota_daily_remaining{post="BE-BRUXELLES"}"#;
    let token = token_of(&a, "BE-BRUXELLES", "agent-7");

    assert_eq!(dossier(&b, &token).await.status(), 200);
    assert_eq!(a.counter(series).await, 2.0);
    for left in [2.0, 1.0, 0.0] {
        assert_eq!(dossier(&a, &token).await.status(), 200);
        assert_eq!(a.counter(series).await, left);
    }
    // Refused for its burst, b still has two requests of the day left.
    assert_problem(dossier(&b, &token).await, 429, "quota-exceeded").await;
    assert_eq!(a.counter(series).await, 2.0);
    // Refused for the day, a has none.
    let refused = assert_problem(dossier(&a, &token).await, 429, "quota-exceeded").await;
    assert_eq!(refused["limit"], "daily");
    assert_eq!(a.counter(series).await, 0.0);
    let metrics = a.metrics().await;
    assert!(
        !metrics.contains("agent-7"),
        "the agent is never a label:\n{metrics}"
    );

    // The next day's first decision shows the refilled quota.
    clock.advance(std::time::Duration::from_secs(86_400));
    let token = token_of(&a, "BE-BRUXELLES", "agent-7");
    assert_eq!(dossier(&a, &token).await.status(), 200);
    assert_eq!(a.counter(series).await, 2.0);
}
