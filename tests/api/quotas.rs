//! Per-post quotas over HTTPS, with a frozen clock so that counts are exact.

use std::sync::Arc;

use caf_broker::quota::ManualClock;
use futures_util::future::join_all;

use crate::helpers::{TestApp, assert_problem, spawn_app_with_clock};

const AGENT: &str = "agent_consulaire";
const RADIATION: &str = "verification_radiation";

async fn frozen_app(overrides: &[(&str, &str)]) -> (TestApp, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new("2026-06-15T10:00:00Z".parse().unwrap()));
    let app = spawn_app_with_clock(overrides, clock.clone()).await;
    (app, clock)
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
            r#""burst";q=2;w=2, "daily";q=100;w=86400"#
        );
    }
    let refused = app.get_dossier("1000002", &token, RADIATION).await;
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(
        refused.headers()["ratelimit"],
        r#""burst";r=0;t=1, "daily";r=98;t=43200"#
    );
    assert!(refused.headers().contains_key("ratelimit-policy"));
    assert_problem(refused, 429, "quota-exceeded").await;
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
    assert_problem(refused, 429, "quota-exceeded").await;
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
