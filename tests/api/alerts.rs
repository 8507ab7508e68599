//! Bulk-lookup detection through the real broker: alerts in the audit log and
//! the metrics, suspension, each rule, sliding windows and off-hours with a
//! frozen clock, and two replicas sharing their windows through a real Redis.

use std::sync::Arc;
use std::time::Duration;

use caf_broker::audit::{Record, RecordKind, verify_dir};
use caf_broker::clock::ManualClock;
use serde_json::json;

use crate::audit_files::records;
use crate::helpers::{TestApp, assert_problem, spawn_app_with_clock};
use crate::redis_server::RedisServer;

const AGENT: &str = "agent_consulaire";
const RADIATION: &str = "verification_radiation";
/// Quotas out of the way: these tests are about the detector alone.
const NO_QUOTA: (&str, &str) = (
    "CAF_BROKER__QUOTAS__DEFAULT",
    "{ per_second = 1000, burst = 1000, per_day = 100000 }",
);
/// Every rule off; each test turns on the one it is about.
const RULES_OFF: [(&str, &str); 3] = [
    ("CAF_BROKER__ALERTS__DISTINCT_DOSSIERS_PER_HOUR", "0"),
    ("CAF_BROKER__ALERTS__NOT_FOUND_RATIO", "0"),
    ("CAF_BROKER__ALERTS__NIR_SEARCHES_PER_HOUR", "0"),
];
/// Dossiers of the embedded simulator (fixed ones, then generated from 2000000).
const DOSSIERS: [&str; 8] = [
    "1000001", "1000002", "1000003", "1000004", "1000005", "2000000", "2000001", "2000002",
];

/// A broker whose clock stands at `start` (UTC) until moved, with the
/// quotas out of the way, every rule off, then `overrides`.
async fn app_at(start: &str, overrides: &[(&str, &str)]) -> (TestApp, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(start.parse().unwrap()));
    let mut all = vec![NO_QUOTA];
    all.extend(RULES_OFF);
    all.extend(overrides);
    let app = spawn_app_with_clock(&all, clock.clone()).await;
    (app, clock)
}

/// Noon in Paris, office hours.
const NOON: &str = "2026-06-15T10:00:00Z";

fn alerts(records: &[Record]) -> Vec<&Record> {
    records
        .iter()
        .filter(|r| r.kind == Some(RecordKind::Alert))
        .collect()
}

fn figure(record: &Record, name: &str) -> serde_json::Value {
    let figures = record.figures.as_ref().expect("an alert has figures");
    serde_json::to_value(&figures[name]).unwrap()
}

async fn status_of(app: &TestApp, numero: &str, token: &str) -> u16 {
    app.get_dossier(numero, token, RADIATION)
        .await
        .status()
        .as_u16()
}

#[tokio::test]
async fn an_agent_reading_more_distinct_dossiers_than_allowed_raises_one_alert_in_the_chain() {
    let (app, _clock) = app_at(
        NOON,
        &[("CAF_BROKER__ALERTS__DISTINCT_DOSSIERS_PER_HOUR", "3")],
    )
    .await;
    let token = app.token(AGENT);
    for numero in &DOSSIERS[..6] {
        assert_eq!(status_of(&app, numero, &token).await, 200);
    }
    // Going on past the threshold raises nothing more within the hour.
    assert_eq!(status_of(&app, "1000001", &token).await, 200);

    let log = records(&app.audit_dir);
    let raised = alerts(&log);
    assert_eq!(
        raised.len(),
        1,
        "one alert, not one per request above the threshold"
    );
    let alert = raised[0];
    assert_eq!(alert.rule.as_deref(), Some("distinct_dossiers"));
    assert_eq!(figure(alert, "distinct_dossiers"), json!(4));
    assert_eq!(figure(alert, "threshold"), json!(3));
    assert_eq!(figure(alert, "window_secs"), json!(3600));
    assert_eq!(alert.post.as_deref(), Some("TN-TUNIS"));
    assert_eq!(alert.sub.as_deref(), Some("agent-42"));
    assert_eq!(alert.dossier, None, "an alert names no dossier");
    // The alert follows the access record of the fourth lookup, in the chain.
    let accesses: Vec<&Record> = log.iter().filter(|r| r.kind.is_none()).collect();
    assert_eq!(accesses.len(), 7);
    assert_eq!(alert.request_id, accesses[3].request_id);
    assert_eq!(alert.seq, accesses[3].seq + 1);
    assert_eq!(verify_dir(&app.audit_dir).unwrap().records, 8);

    let count = app
        .counter("caf_broker_alerts_total{rule=\"distinct_dossiers\"}")
        .await;
    assert!(count >= 1.0, "{count}");
}

#[tokio::test]
async fn with_block_an_alerted_agent_is_refused_while_another_agent_of_its_post_is_served() {
    let (app, clock) = app_at(
        NOON,
        &[
            ("CAF_BROKER__ALERTS__DISTINCT_DOSSIERS_PER_HOUR", "2"),
            ("CAF_BROKER__ALERTS__BLOCK", "true"),
            ("CAF_BROKER__ALERTS__BLOCK_SECS", "600"),
        ],
    )
    .await;
    let skimmer = app.token(AGENT);
    let colleague = app.token_of("TN-TUNIS", "agent-43", AGENT);
    for numero in &DOSSIERS[..3] {
        // The request that trips the rule is still answered.
        assert_eq!(status_of(&app, numero, &skimmer).await, 200);
    }
    let refused = app.get_dossier("1000001", &skimmer, RADIATION).await;
    assert_problem(refused, 403, "agent-suspended").await;
    assert_eq!(status_of(&app, "1000001", &colleague).await, 200);

    let log = records(&app.audit_dir);
    let refusal = log
        .iter()
        .find(|r| r.status == 403)
        .expect("the refusal is recorded");
    assert_eq!(
        serde_json::to_value(refusal.outcome).unwrap(),
        json!("refused")
    );
    assert_eq!(refusal.sub.as_deref(), Some("agent-42"));
    assert!(refusal.dossier.is_some());

    clock.advance(Duration::from_secs(599));
    assert_eq!(status_of(&app, "1000001", &skimmer).await, 403);
    clock.advance(Duration::from_secs(1));
    assert_eq!(status_of(&app, "1000001", &skimmer).await, 200);
}

#[tokio::test]
async fn numbers_that_do_not_exist_raise_the_not_found_ratio_alert() {
    let (app, _clock) = app_at(
        NOON,
        &[
            ("CAF_BROKER__ALERTS__NOT_FOUND_RATIO", "0.5"),
            ("CAF_BROKER__ALERTS__NOT_FOUND_MIN_LOOKUPS", "6"),
        ],
    )
    .await;
    let token = app.token(AGENT);
    // 9999999 is never a dossier; the dataset of 300 stops at 2000299.
    let tries = [
        ("1000001", 200),
        ("9999999", 404),
        ("1000002", 200),
        ("9999998", 404),
        ("2000299", 200),
        ("9999997", 404),
        ("9999996", 404),
    ];
    for (i, (numero, status)) in tries.into_iter().enumerate() {
        assert_eq!(status_of(&app, numero, &token).await, status, "{numero}");
        let raised = alerts(&records(&app.audit_dir)).len();
        assert_eq!(raised, usize::from(i >= 5), "after lookup {}", i + 1);
    }
    let log = records(&app.audit_dir);
    let alert = alerts(&log)[0];
    assert_eq!(alert.rule.as_deref(), Some("not_found_ratio"));
    assert_eq!(figure(alert, "lookups"), json!(6));
    assert_eq!(figure(alert, "not_found"), json!(3));
    assert_eq!(figure(alert, "ratio"), json!(0.5));
    // The alert repeats the outcome of the request it fired on.
    assert_eq!(alert.status, 404);
}

#[tokio::test]
async fn nir_searches_above_the_hourly_limit_raise_an_alert() {
    let (app, _clock) = app_at(NOON, &[("CAF_BROKER__ALERTS__NIR_SEARCHES_PER_HOUR", "2")]).await;
    let token = app.token(AGENT);
    for nir in ["295109912611193", "180057512345627", "160019912345604"] {
        let response = app.search(&json!({ "nir": nir }), &token, RADIATION).await;
        assert_eq!(response.status(), 200);
    }
    // Lookups by numéro are not NIR searches.
    assert_eq!(status_of(&app, "1000004", &token).await, 200);
    let log = records(&app.audit_dir);
    let raised = alerts(&log);
    assert_eq!(raised.len(), 1);
    assert_eq!(raised[0].rule.as_deref(), Some("nir_searches"));
    assert_eq!(figure(raised[0], "nir_searches"), json!(3));
    let text = std::fs::read_dir(&app.audit_dir)
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .collect::<String>();
    assert!(!text.contains("295109912611193"));
}

#[tokio::test]
async fn a_lookup_at_night_raises_one_off_hours_alert_per_night() {
    // 23:00 in Paris (UTC+2 in June).
    let (app, clock) = app_at(
        "2026-06-15T21:00:00Z",
        &[("CAF_BROKER__ALERTS__OFF_HOURS", "\"22:00-06:00\"")],
    )
    .await;
    let token = app.token(AGENT);
    let hours = |h: u64| Duration::from_secs(h * 3600);
    let raised_after = |app: &TestApp| alerts(&records(&app.audit_dir)).len();

    assert_eq!(status_of(&app, "1000002", &token).await, 200);
    assert_eq!(raised_after(&app), 1);
    clock.advance(hours(6)); // 05:00, the same night
    assert_eq!(status_of(&app, "1000002", &token).await, 200);
    assert_eq!(raised_after(&app), 1);
    clock.advance(hours(4)); // 09:00
    assert_eq!(status_of(&app, "1000002", &token).await, 200);
    assert_eq!(raised_after(&app), 1);
    clock.advance(hours(14)); // 23:00, the next night
    let token = app.token(AGENT); // a day on: the first token has expired
    assert_eq!(status_of(&app, "1000002", &token).await, 200);
    assert_eq!(raised_after(&app), 2);

    let log = records(&app.audit_dir);
    let first = alerts(&log)[0];
    assert_eq!(first.rule.as_deref(), Some("off_hours"));
    assert_eq!(figure(first, "local_hour"), json!(23));
}

#[tokio::test]
async fn the_windows_slide_with_the_clock() {
    let (app, clock) = app_at(
        NOON,
        &[("CAF_BROKER__ALERTS__DISTINCT_DOSSIERS_PER_HOUR", "3")],
    )
    .await;
    let token = app.token(AGENT);
    for numero in &DOSSIERS[..3] {
        assert_eq!(status_of(&app, numero, &token).await, 200);
    }
    // An hour later the first three have left the window.
    clock.advance(Duration::from_secs(3600));
    for numero in &DOSSIERS[3..6] {
        assert_eq!(status_of(&app, numero, &token).await, 200);
    }
    assert!(alerts(&records(&app.audit_dir)).is_empty());
    assert_eq!(status_of(&app, DOSSIERS[6], &token).await, 200);
    assert_eq!(alerts(&records(&app.audit_dir)).len(), 1);
}

/// Two replicas sharing one Redis, with `overrides`.
async fn replicas(redis: &RedisServer, overrides: &[(&str, &str)]) -> [TestApp; 2] {
    let url = redis.url();
    let mut shared = vec![
        ("CAF_BROKER__QUOTAS__BACKEND", "redis"),
        ("CAF_BROKER__QUOTAS__REDIS_URL", url.as_str()),
        ("CAF_BROKER__ALERTS__DISTINCT_DOSSIERS_PER_HOUR", "4"),
    ];
    shared.extend(overrides);
    [app_at(NOON, &shared).await.0, app_at(NOON, &shared).await.0]
}

#[tokio::test]
async fn an_agent_spreading_its_lookups_over_two_replicas_trips_the_rule_once() {
    let redis = RedisServer::start();
    let [a, b] = replicas(&redis, &[]).await;
    let (token_a, token_b) = (a.token(AGENT), b.token(AGENT));
    // Turn about: neither replica alone sees more than four dossiers, and
    // both go on past the threshold.
    for (i, numero) in DOSSIERS.iter().enumerate() {
        let (app, token) = if i % 2 == 0 {
            (&a, &token_a)
        } else {
            (&b, &token_b)
        };
        assert_eq!(status_of(app, numero, token).await, 200);
    }
    let raised: Vec<Record> = [&a, &b]
        .iter()
        .flat_map(|app| records(&app.audit_dir))
        .filter(|r| r.kind == Some(RecordKind::Alert))
        .collect();
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(figure(&raised[0], "distinct_dossiers"), json!(5));

    // Redis holds the agent and pseudonyms, never a clear numéro.
    let mut connection = redis.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("caf-broker:alerts:*")
        .query_async(&mut connection)
        .await
        .unwrap();
    let dossiers_key = "caf-broker:alerts:{TN-TUNIS/agent-42}:dossiers";
    assert!(keys.contains(&dossiers_key.to_owned()), "{keys:?}");
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(dossiers_key)
        .arg(0)
        .arg(-1)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(members.len(), DOSSIERS.len());
    for member in &members {
        assert!(member.len() == 64 && member.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    for key in &keys {
        assert!(DOSSIERS.iter().all(|d| !key.contains(d)), "{key}");
    }
}

#[tokio::test]
async fn a_suspension_decided_on_one_replica_holds_on_the_other() {
    let redis = RedisServer::start();
    let [a, b] = replicas(&redis, &[("CAF_BROKER__ALERTS__BLOCK", "true")]).await;
    let (token_a, token_b) = (a.token(AGENT), b.token(AGENT));
    for numero in &DOSSIERS[..5] {
        assert_eq!(status_of(&a, numero, &token_a).await, 200);
    }
    assert_problem(
        b.get_dossier("1000001", &token_b, RADIATION).await,
        403,
        "agent-suspended",
    )
    .await;
    let colleague = b.token_of("TN-TUNIS", "agent-43", AGENT);
    assert_eq!(status_of(&b, "1000001", &colleague).await, 200);
}

#[tokio::test]
async fn a_replica_whose_redis_stops_judges_on_its_own_windows_and_keeps_serving() {
    let mut redis = RedisServer::start();
    let [a, _b] = replicas(&redis, &[]).await;
    let token = a.token(AGENT);
    assert_eq!(status_of(&a, DOSSIERS[0], &token).await, 200);
    redis.stop();
    // The lookup seen by Redis is not in this replica's windows: four more
    // distinct dossiers reach the threshold, the fifth crosses it.
    for numero in &DOSSIERS[1..5] {
        assert_eq!(status_of(&a, numero, &token).await, 200);
    }
    assert!(alerts(&records(&a.audit_dir)).is_empty());
    assert_eq!(status_of(&a, DOSSIERS[5], &token).await, 200);
    let log = records(&a.audit_dir);
    let raised = alerts(&log);
    assert_eq!(raised.len(), 1);
    assert_eq!(figure(raised[0], "distinct_dossiers"), json!(5));
}
