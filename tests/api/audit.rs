//! The audit log seen from outside: one durable record per data request of an
//! authenticated agent, whatever the outcome; nothing released without it.

use std::path::Path;
use std::sync::Arc;

use caf_broker::audit::{AuditKey, search, verify_dir};
use caf_broker::clock::ManualClock;
use caf_broker::domain::{Lookup, Nir, NumeroAllocataire};
use serde_json::json;

use crate::audit_files::records;
use crate::helpers::{
    assert_problem, fresh_dir, repo, spawn_app, spawn_app_with, spawn_app_with_clock,
};

const AGENT: &str = "agent_consulaire";
const RADIATION: &str = "verification_radiation";

fn all_text(dir: &Path) -> String {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .collect()
}

#[tokio::test]
async fn every_outcome_of_an_agents_request_leaves_exactly_one_chained_record() {
    let clock = Arc::new(ManualClock::new("2026-06-15T10:00:00Z".parse().unwrap()));
    let app = spawn_app_with_clock(
        &[(
            "CAF_BROKER__QUOTAS__DEFAULT",
            "{ per_second = 1, burst = 3, per_day = 100 }",
        )],
        clock,
    )
    .await;
    let token = app.token(AGENT);
    let expected = [
        (
            app.get_dossier("1000002", &token, RADIATION).await.status(),
            "released",
        ),
        (
            app.get_dossier("1000002", &token, "accompagnement_social")
                .await
                .status(),
            "refused",
        ),
        (
            app.get_dossier("9999999", &token, RADIATION).await.status(),
            "not_found",
        ),
        (
            app.get_dossier("12x", &token, RADIATION).await.status(),
            "invalid",
        ),
        (
            app.search(&json!({"nir": "295109912611194"}), &token, RADIATION)
                .await
                .status(),
            "invalid",
        ),
        (
            app.search(&json!({"nir": "295109912611193"}), &token, RADIATION)
                .await
                .status(),
            "released",
        ),
        (
            app.get_dossier("1000003", &token, RADIATION).await.status(),
            "quota_exceeded",
        ),
    ];
    // An unauthenticated request is not an agent's access: it is not recorded.
    assert_eq!(
        app.get_dossier("1000002", "forged", RADIATION)
            .await
            .status(),
        401
    );

    let log = records(&app.audit_dir);
    assert_eq!(
        log.len(),
        expected.len(),
        "one record per authenticated data request"
    );
    for (record, (status, outcome)) in log.iter().zip(expected) {
        assert_eq!(record.status, status.as_u16());
        assert_eq!(serde_json::to_value(record.outcome).unwrap(), outcome);
        assert_eq!(record.post.as_deref(), Some("TN-TUNIS"));
        assert_eq!(record.sub.as_deref(), Some("agent-42"));
        assert_eq!(record.role.as_deref(), Some(AGENT));
        assert_eq!(record.case_reference.as_deref(), Some("TN-2026/0042"));
        assert!(
            record
                .policy_version
                .as_deref()
                .is_some_and(|v| v.starts_with("sha256:"))
        );
    }
    let released = &log[0];
    assert!(
        released
            .released
            .contains(&"radiation.date_effet".to_string())
    );
    assert!(
        log[3].dossier.is_none(),
        "a malformed identifier is not recorded"
    );
    // Each record names the lookup it was asked for, by its keyed hash: the
    // search names the NIR, not the numéro of the dossier it found.
    let key = AuditKey::from_file(&repo("certs-dev/audit-hmac.key")).unwrap();
    let by_numero = Lookup::Numero(NumeroAllocataire::parse("1000002").unwrap());
    let by_nir = Lookup::Nir(Nir::parse("295109912611193").unwrap());
    assert_eq!(
        released.dossier.as_deref(),
        Some(key.pseudonymize(&by_numero).as_str())
    );
    assert_eq!(
        log[5].dossier.as_deref(),
        Some(key.pseudonymize(&by_nir).as_str())
    );

    let text = all_text(&app.audit_dir);
    for secret in ["1000002", "295109912611193", "1000003", &token] {
        assert!(
            !text.contains(secret),
            "the audit log holds no clear identifier or token"
        );
    }
    assert_eq!(
        verify_dir(&app.audit_dir).unwrap().records,
        expected.len() as u64
    );
}

#[tokio::test]
async fn search_finds_exactly_the_accesses_to_one_dossier() {
    let app = spawn_app().await;
    let token = app.token(AGENT);
    for numero in ["1000002", "1000003", "1000002", "9999999"] {
        app.get_dossier(numero, &token, RADIATION).await;
    }
    app.search(&json!({"nir": "295109912611193"}), &token, RADIATION)
        .await;
    let key = AuditKey::from_file(&repo("certs-dev/audit-hmac.key")).unwrap();

    let by_numero = Lookup::Numero(NumeroAllocataire::parse("1000002").unwrap());
    let found = search(&app.audit_dir, &key, &by_numero).unwrap();
    assert_eq!(found.records.len(), 2);
    let by_nir = Lookup::Nir(Nir::parse("295109912611193").unwrap());
    assert_eq!(
        search(&app.audit_dir, &key, &by_nir).unwrap().records.len(),
        1
    );
    let missing = Lookup::Numero(NumeroAllocataire::parse("9999999").unwrap());
    let not_found = search(&app.audit_dir, &key, &missing).unwrap();
    assert_eq!(
        serde_json::to_value(not_found.records[0].outcome).unwrap(),
        "not_found"
    );
}

#[tokio::test]
async fn an_audit_log_that_cannot_be_written_fails_closed_and_says_so_in_metrics() {
    // Files roll over at 4 KiB; the next file names are taken by directories,
    // so once the first file is full no record can be written.
    let root = fresh_dir("audit-blocked");
    let dir = root.join("blocked");
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    for day in [today, today.tomorrow().unwrap()] {
        for index in 1..=3 {
            std::fs::create_dir_all(dir.join(format!("audit-{day}.{index}.jsonl"))).unwrap();
        }
    }
    let dir_setting = root.display().to_string();
    let app = spawn_app_with(&[
        ("CAF_BROKER__AUDIT__DIR", dir_setting.as_str()),
        ("CAF_BROKER__AUDIT__REPLICA_ID", "blocked"),
        ("CAF_BROKER__AUDIT__MAX_FILE_BYTES", "4096"),
        (
            "CAF_BROKER__QUOTAS__DEFAULT",
            "{ per_second = 100, burst = 100, per_day = 1000 }",
        ),
    ])
    .await;
    let token = app.token(AGENT);
    let mut statuses = Vec::new();
    for _ in 0..40 {
        let response = app.get_dossier("1000002", &token, RADIATION).await;
        statuses.push(response.status().as_u16());
        if response.status() == 503 {
            let problem = assert_problem(response, 503, "audit-unavailable").await;
            assert!(problem.get("data").is_none());
        }
    }
    let first_failure = statuses
        .iter()
        .position(|s| *s == 503)
        .expect("the log filled up");
    assert!(
        first_failure > 0,
        "records were written while the file had room"
    );
    assert!(statuses[..first_failure].iter().all(|s| *s == 200));
    assert!(
        statuses[first_failure..].iter().all(|s| *s == 503),
        "{statuses:?}"
    );
    assert_eq!(
        verify_dir(&dir).unwrap().records,
        first_failure as u64,
        "every answer released has its record"
    );

    let ready = app
        .client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["audit"]["status"], "failing", "{body}");
    // The alert on an unwritable audit log reads this gauge, set as /readyz sees it.
    let metrics = app.metrics().await;
    assert!(
        metrics.lines().any(|l| l == "caf_broker_audit_writable 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_purpose_header_the_policy_does_not_define_is_not_recorded() {
    let app = spawn_app().await;
    // Well-formed for the header's syntax, yet a NIR: it must not reach the log.
    let response = app
        .get_dossier("1000002", &app.token(AGENT), "295109912611193")
        .await;
    assert_problem(response, 400, "invalid-request").await;
    let log = records(&app.audit_dir);
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].purpose, None);
    assert!(!all_text(&app.audit_dir).contains("295109912611193"));
}

#[tokio::test]
async fn a_known_purpose_with_a_bad_case_reference_is_labelled_and_audited_with_that_purpose() {
    let app = spawn_app().await;
    // A post no other test of this binary uses: its series are this test's alone.
    let token = app.token_for("SN-DAKAR", AGENT);
    let ask = |purpose: &'static str| {
        app.client
            .get(format!("{}/v1/allocataires/1000002", app.address))
            .bearer_auth(&token)
            .header("X-Purpose", purpose)
            .header("X-Case-Reference", "has space")
            .send()
    };
    assert_problem(ask(RADIATION).await.unwrap(), 400, "invalid-request").await;
    // A purpose the policy does not define is free text: labelled and audited as none.
    assert_problem(ask("curiosite").await.unwrap(), 400, "invalid-request").await;

    let series = |purpose: &str| {
        format!(
            r#"caf_broker_http_requests_total{{route="/v1/allocataires/{{numero}}",method="GET",status="400",purpose="{purpose}",post="SN-DAKAR"}}"#
        )
    };
    assert_eq!(app.counter(&series(RADIATION)).await, 1.0);
    assert_eq!(app.counter(&series("none")).await, 1.0);
    let purposes: Vec<Option<String>> = records(&app.audit_dir)
        .into_iter()
        .map(|r| r.purpose)
        .collect();
    assert_eq!(purposes, [Some(RADIATION.to_owned()), None]);
}

#[tokio::test]
async fn a_quota_store_that_does_not_answer_is_recorded_as_quota_exceeded_with_503() {
    // Nothing listens on port 1; the broker is set to refuse rather than fall back.
    let app = spawn_app_with(&[
        ("CAF_BROKER__QUOTAS__BACKEND", "redis"),
        ("CAF_BROKER__QUOTAS__REDIS_URL", "redis://127.0.0.1:1/0"),
        ("CAF_BROKER__QUOTAS__REDIS_TIMEOUT_MS", "100"),
        ("CAF_BROKER__QUOTAS__ON_REDIS_FAILURE", "refuse"),
    ])
    .await;
    let response = app
        .get_dossier("1000002", &app.token(AGENT), RADIATION)
        .await;
    let problem = assert_problem(response, 503, "quota-unavailable").await;
    assert!(problem.get("data").is_none());
    let log = records(&app.audit_dir);
    assert_eq!(log.len(), 1);
    assert_eq!(
        serde_json::to_value(log[0].outcome).unwrap(),
        "quota_exceeded"
    );
    assert_eq!(log[0].status, 503);
    assert!(log[0].released.is_empty());
}

#[tokio::test]
async fn readyz_fails_on_the_audit_check_alone_and_recovers_once_the_log_writes_again() {
    let clock = Arc::new(ManualClock::new("2026-06-15T10:00:00Z".parse().unwrap()));
    let app = spawn_app_with_clock(
        &[("CAF_BROKER__AUDIT__RETRY_INTERVAL_MS", "10")],
        clock.clone(),
    )
    .await;
    let readyz = || async {
        let answer = app
            .client
            .get(format!("{}/readyz", app.address))
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        (status, answer.json::<serde_json::Value>().await.unwrap())
    };
    let token = app.token(AGENT);
    assert_eq!(
        app.get_dossier("1000002", &token, RADIATION).await.status(),
        200
    );

    // Tomorrow's file name is taken by a directory: not even root can write the log.
    clock.advance(std::time::Duration::from_secs(86_400));
    let blocker = app.audit_dir.join("audit-2026-06-16.jsonl");
    std::fs::create_dir(&blocker).unwrap();
    // A token of the new day: yesterday's has expired.
    let token = app.token(AGENT);
    let refused = app.get_dossier("1000002", &token, RADIATION).await;
    assert_problem(refused, 503, "audit-unavailable").await;
    let (status, body) = readyz().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not_ready", "{body}");
    assert_eq!(body["checks"]["audit"]["status"], "failing", "{body}");
    assert_eq!(body["checks"]["upstream"]["status"], "ok", "{body}");
    assert_eq!(body["checks"]["policy"]["status"], "ok", "{body}");

    // No request comes; the log retries on its own every 10 ms.
    std::fs::remove_dir(&blocker).unwrap();
    let mut ready = readyz().await;
    for _ in 0..500 {
        if ready.0 == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        ready = readyz().await;
    }
    assert_eq!(ready.0, 200, "{}", ready.1);
    assert_eq!(ready.1["checks"]["audit"]["status"], "ok");
    assert_eq!(
        app.get_dossier("1000002", &token, RADIATION).await.status(),
        200
    );
    assert_eq!(verify_dir(&app.audit_dir).unwrap().records, 2);
}

#[tokio::test]
async fn each_group_commit_is_timed_in_the_audit_write_histogram() {
    let app = spawn_app().await;
    let series = "caf_broker_audit_write_duration_seconds_count";
    let before = app.counter(series).await;
    assert_eq!(
        app.get_dossier("1000002", &app.token(AGENT), RADIATION)
            .await
            .status(),
        200
    );
    let after = app.counter(series).await;
    assert!(
        after > before,
        "no audit write was timed: {before} then {after}\n{}",
        app.metrics().await
    );
}

#[tokio::test]
async fn each_group_commit_counts_its_records_in_the_audit_batch_histogram() {
    let app = spawn_app().await;
    let (count, sum) = (
        "caf_broker_audit_batch_records_count",
        "caf_broker_audit_batch_records_sum",
    );
    let (count_before, sum_before) = (app.counter(count).await, app.counter(sum).await);
    let token = app.token(AGENT);
    let statuses = futures_util::future::join_all(
        (0..8).map(|_| app.get_dossier("1000002", &token, RADIATION)),
    )
    .await;
    assert!(statuses.iter().all(|r| r.status() == 200));
    let (count_after, sum_after) = (app.counter(count).await, app.counter(sum).await);
    let metrics = app.metrics().await;
    // Eight records, one per request, in one group commit or several (other
    // tests of this binary share the recorder, so these are lower bounds).
    assert!(count_after > count_before, "no batch counted:\n{metrics}");
    assert!(
        sum_after >= sum_before + 8.0,
        "records not counted: {sum_before} then {sum_after}\n{metrics}"
    );
    assert!(
        metrics.contains(r#"caf_broker_audit_batch_records_bucket{le="1"}"#),
        "{metrics}"
    );
}
