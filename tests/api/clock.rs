//! One clock for the whole broker: a manual clock moved once moves the quota
//! day, the cache's TTL, the detection windows, token expiry and the audit
//! record times together.

use std::sync::Arc;
use std::time::Duration;

use caf_broker::audit::RecordKind;
use caf_broker::auth::{DevClaims, mint_dev_token_at};
use caf_broker::clock::ManualClock;
use serde_json::Value;

use crate::audit_files::records;
use crate::helpers::{TestApp, assert_problem, spawn_app_with_clock};

const AGENT: &str = "agent_consulaire";
const RADIATION: &str = "verification_radiation";
/// 23:30 in Paris (UTC+2 in June): half an hour before the quota day ends.
const BEFORE_MIDNIGHT: &str = "2026-06-15T21:30:00Z";

/// The status and `meta.cache` of one lookup.
async fn lookup(app: &TestApp, numero: &str, token: &str) -> (u16, Option<String>) {
    let response = app.get_dossier(numero, token, RADIATION).await;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or_default();
    let cache = body["meta"]["cache"].as_str().map(str::to_owned);
    (status, cache)
}

#[tokio::test]
async fn one_manual_clock_moved_once_moves_the_quota_day_the_cache_ttl_and_the_detection_window_together()
 {
    let clock = Arc::new(ManualClock::new(BEFORE_MIDNIGHT.parse().unwrap()));
    let app = spawn_app_with_clock(
        &[
            (
                "CAF_BROKER__QUOTAS__DEFAULT",
                "{ per_second = 1000, burst = 1000, per_day = 3 }",
            ),
            ("CAF_BROKER__CACHE__TTL_SECS", "120"),
            ("CAF_BROKER__ALERTS__DISTINCT_DOSSIERS_PER_HOUR", "2"),
            ("CAF_BROKER__ALERTS__NOT_FOUND_RATIO", "0"),
            ("CAF_BROKER__ALERTS__NIR_SEARCHES_PER_HOUR", "0"),
        ],
        clock.clone(),
    )
    .await;
    let token = app.token(AGENT);
    let half_hour_token = mint_dev_token_at(
        &app.settings.auth,
        DevClaims {
            sub: "agent-7".into(),
            post: "TN-TUNIS".into(),
            role: AGENT.into(),
            ttl_secs: 1800,
        },
        clock.as_ref(),
    )
    .expect("dev token");

    // 23:30: the day's three requests, two distinct dossiers (not more than
    // the detector allows), the second read of 1000001 from the cache.
    assert_eq!(
        lookup(&app, "1000001", &token).await,
        (200, Some("miss".into()))
    );
    assert_eq!(
        lookup(&app, "1000001", &token).await,
        (200, Some("hit".into()))
    );
    assert_eq!(
        lookup(&app, "1000002", &token).await,
        (200, Some("miss".into()))
    );
    let spent = app.get_dossier("1000003", &token, RADIATION).await;
    assert_problem(spent, 429, "quota-exceeded").await;
    assert_eq!(lookup(&app, "1000004", &half_hour_token).await.0, 429);

    clock.advance(Duration::from_secs(3600));

    // 00:30 the next day: a new quota day; the cached record is an hour old,
    // past its TTL; 1000001 and 1000002 have left the hour's window, so a
    // third and a fourth dossier raise no alert; the half-hour token expired.
    assert_eq!(
        lookup(&app, "1000003", &token).await,
        (200, Some("miss".into()))
    );
    assert_eq!(
        lookup(&app, "1000001", &token).await,
        (200, Some("miss".into()))
    );
    let expired = app
        .get_dossier("1000001", &half_hour_token, RADIATION)
        .await;
    assert_problem(expired, 401, "unauthenticated").await;

    let log = records(&app.audit_dir);
    assert!(
        log.iter().all(|r| r.kind != Some(RecordKind::Alert)),
        "the detection window slid with the clock"
    );
    let times: Vec<&str> = log.iter().map(|r| r.time.as_str()).collect();
    assert!(times[0].starts_with("2026-06-15T21:30:00"), "{times:?}");
    assert!(
        times.last().unwrap().starts_with("2026-06-15T22:30:00"),
        "{times:?}"
    );
}
