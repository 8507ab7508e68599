//! The broker in front of a real CAF over HTTPS with mutual TLS (the simulator
//! on a free port), and the brief cache of its answers.

use std::sync::Arc;

use caf_broker::clock::{Clock, ManualClock, SystemClock};
use caf_broker::simulator::{RunningSimulator, SimulatorOptions};
use futures_util::future::join_all;
use serde_json::Value;

use crate::helpers::{
    TestApp, assert_problem, repo, spawn_app, spawn_app_with, spawn_app_with_clock,
};

const AGENT: &str = "agent_consulaire";
const RADIATION: &str = "verification_radiation";

pub(crate) async fn caf(latency_ms: u64, fail_rate: f64) -> RunningSimulator {
    let mut options = SimulatorOptions::new("127.0.0.1:0".parse().unwrap());
    options.records = 50;
    options.latency_ms = latency_ms;
    options.fail_rate = fail_rate;
    options.tls_cert_file = Some(repo("certs-dev/server.pem"));
    options.tls_key_file = Some(repo("certs-dev/server.key.pem"));
    options.client_ca_file = Some(repo("certs-dev/ca.pem"));
    caf_broker::simulator::start(options)
        .await
        .expect("simulator starts")
}

pub(crate) async fn broker_in_front_of(caf: &RunningSimulator, extra: &[(&str, &str)]) -> TestApp {
    broker_with_clock_in_front_of(caf, extra, Arc::new(SystemClock)).await
}

async fn broker_with_clock_in_front_of(
    caf: &RunningSimulator,
    extra: &[(&str, &str)],
    clock: Arc<dyn Clock>,
) -> TestApp {
    let url = format!("https://localhost:{}", caf.local_addr().port());
    let ca = repo("certs-dev/ca.pem").display().to_string();
    let cert = repo("certs-dev/client-broker.pem").display().to_string();
    let key = repo("certs-dev/client-broker.key.pem")
        .display()
        .to_string();
    let mut overrides = vec![
        ("CAF_BROKER__UPSTREAM__KIND", "\"http\""),
        ("CAF_BROKER__UPSTREAM__URL", url.as_str()),
        ("CAF_BROKER__UPSTREAM__CA_FILE", ca.as_str()),
        ("CAF_BROKER__UPSTREAM__CLIENT_CERT_FILE", cert.as_str()),
        ("CAF_BROKER__UPSTREAM__CLIENT_KEY_FILE", key.as_str()),
        ("CAF_BROKER__UPSTREAM__RETRY_BACKOFF_MS", "1"),
    ];
    overrides.extend_from_slice(extra);
    spawn_app_with_clock(&overrides, clock).await
}

async fn cache_of(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["meta"]["cache"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_dossier_read_through_mutual_tls_is_filtered_and_then_served_from_the_cache() {
    let caf = caf(0, 0.0).await;
    let app = broker_in_front_of(&caf, &[]).await;
    let token = app.token(AGENT);
    let first = app.get_dossier("1000002", &token, RADIATION).await;
    assert_eq!(first.status(), 200);
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["data"]["statut_dossier"], "radie");
    assert!(body["data"].get("nir").is_none() && body["data"].get("allocataire").is_none());
    assert_eq!(body["meta"]["cache"], "miss");

    assert_eq!(
        cache_of(app.get_dossier("1000002", &token, RADIATION).await).await,
        "hit"
    );
    assert_eq!(
        caf.requests_total(),
        1,
        "the second read did not reach the CAF"
    );
}

#[tokio::test]
async fn another_purpose_served_from_the_cache_gets_its_own_view() {
    let app = spawn_app().await;
    let social = app.token("assistant_social");
    let radiation = app
        .get_dossier("1000004", &social, RADIATION)
        .await
        .json::<Value>()
        .await
        .unwrap();
    let support = app
        .get_dossier("1000004", &social, "accompagnement_social")
        .await;
    let support: Value = support.json().await.unwrap();
    assert_eq!(support["meta"]["cache"], "hit");
    assert!(radiation["data"].get("enfants").is_none());
    assert_eq!(support["data"]["enfants"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn no_cache_forces_a_fresh_read_and_still_counts_against_the_quota() {
    let caf = caf(0, 0.0).await;
    // The clock stands still: the burst of 3 does not refill during the test.
    let clock = Arc::new(ManualClock::new("2026-06-15T10:00:00Z".parse().unwrap()));
    let app = broker_with_clock_in_front_of(
        &caf,
        &[(
            "CAF_BROKER__QUOTAS__DEFAULT",
            "{ per_second = 1, burst = 3, per_day = 100 }",
        )],
        clock,
    )
    .await;
    let token = app.token(AGENT);
    let url = format!("{}/v1/allocataires/1000002", app.address);
    let fresh = || {
        app.client
            .get(&url)
            .bearer_auth(&token)
            .header("X-Purpose", RADIATION)
            .header("X-Case-Reference", "C-1")
            .header("Cache-Control", "no-cache")
            .send()
    };
    assert_eq!(cache_of(fresh().await.unwrap()).await, "miss");
    assert_eq!(cache_of(fresh().await.unwrap()).await, "miss");
    assert_eq!(caf.requests_total(), 2);
    assert_eq!(
        cache_of(app.get_dossier("1000002", &token, RADIATION).await).await,
        "hit"
    );
    assert_problem(fresh().await.unwrap(), 429, "quota-exceeded").await;
    assert_eq!(caf.requests_total(), 2);
}

#[tokio::test]
async fn concurrent_misses_on_one_dossier_make_one_call_to_the_caf() {
    let caf = caf(50, 0.0).await;
    let app = broker_in_front_of(
        &caf,
        &[(
            "CAF_BROKER__QUOTAS__DEFAULT",
            "{ per_second = 100, burst = 100, per_day = 1000 }",
        )],
    )
    .await;
    let token = app.token(AGENT);
    let responses = join_all((0..20).map(|_| app.get_dossier("1000003", &token, RADIATION))).await;
    assert!(responses.iter().all(|r| r.status() == 200));
    assert_eq!(caf.requests_total(), 1);
}

#[tokio::test]
async fn a_caf_that_does_not_answer_in_time_gives_a_timeout_problem() {
    let caf = caf(0, 0.0).await;
    let app = broker_in_front_of(
        &caf,
        &[
            ("CAF_BROKER__UPSTREAM__TIMEOUT_MS", "300"),
            ("CAF_BROKER__UPSTREAM__CONNECT_TIMEOUT_MS", "200"),
        ],
    )
    .await;
    // The CAF holds every dossier request: an answer can only be the broker's
    // own, given up after its timeout, never the CAF's.
    caf.hold();
    let token = app.token(AGENT);
    let asked = app.get_dossier("1000002", &token, RADIATION);
    // Bounded: a broker that waited on the CAF would fail here, not hang.
    let response = tokio::time::timeout(std::time::Duration::from_secs(30), asked)
        .await
        .expect("the broker answers without the CAF");
    assert_problem(response, 504, "upstream-timeout").await;
    assert_eq!(caf.requests_total(), 1, "the request reached the CAF, once");
    caf.release();
}

#[tokio::test]
async fn a_failing_caf_opens_the_circuit_which_spares_it_and_fails_readiness() {
    let caf = caf(0, 1.0).await;
    let app = broker_in_front_of(
        &caf,
        &[
            ("CAF_BROKER__UPSTREAM__RETRIES", "0"),
            ("CAF_BROKER__UPSTREAM__BREAKER_FAILURES", "2"),
        ],
    )
    .await;
    let token = app.token(AGENT);
    for numero in ["1000001", "1000002"] {
        let problem = assert_problem(
            app.get_dossier(numero, &token, RADIATION).await,
            502,
            "upstream-error",
        )
        .await;
        assert!(!problem.to_string().contains(numero));
    }
    let calls = caf.requests_total();
    let open = app.get_dossier("1000003", &token, RADIATION).await;
    let retry_after: u64 = open.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    assert_problem(open, 503, "upstream-unavailable").await;
    assert_eq!(
        caf.requests_total(),
        calls,
        "an open circuit does not call the CAF"
    );

    let ready = app
        .client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
}

#[tokio::test]
async fn with_the_caf_gone_cached_answers_are_served_and_others_fail_fast() {
    let caf = caf(0, 0.0).await;
    let app = broker_in_front_of(&caf, &[("CAF_BROKER__UPSTREAM__RETRIES", "0")]).await;
    let token = app.token(AGENT);
    let first = app.get_dossier("1000002", &token, RADIATION).await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["meta"]["cache"], "miss");
    // Returns once the CAF's connections are closed and its port refuses.
    caf.kill().await;

    let cached = app.get_dossier("1000002", &token, RADIATION).await;
    assert_eq!(cached.status(), 200);
    let cached: Value = cached.json().await.unwrap();
    assert_eq!(cached["meta"]["cache"], "hit");
    assert_eq!(cached["data"], first["data"]);
    // Fewer than the five failures that open the circuit: each is the CAF's
    // own failure, a refused connection (no retry), not a timeout.
    for numero in ["2000000", "2000001", "2000002", "2000003"] {
        assert_problem(
            app.get_dossier(numero, &token, RADIATION).await,
            502,
            "upstream-error",
        )
        .await;
    }
}

#[tokio::test]
async fn a_broker_without_a_client_certificate_is_refused_by_the_caf() {
    let caf = caf(0, 0.0).await;
    let url = format!("https://localhost:{}", caf.local_addr().port());
    let ca = repo("certs-dev/ca.pem").display().to_string();
    let cert = repo("certs-dev/client-other-ca.pem").display().to_string();
    let key = repo("certs-dev/client-other-ca.key.pem")
        .display()
        .to_string();
    let app = spawn_app_with(&[
        ("CAF_BROKER__UPSTREAM__KIND", "\"http\""),
        ("CAF_BROKER__UPSTREAM__URL", url.as_str()),
        ("CAF_BROKER__UPSTREAM__CA_FILE", ca.as_str()),
        ("CAF_BROKER__UPSTREAM__CLIENT_CERT_FILE", cert.as_str()),
        ("CAF_BROKER__UPSTREAM__CLIENT_KEY_FILE", key.as_str()),
        ("CAF_BROKER__UPSTREAM__RETRIES", "0"),
    ])
    .await;
    assert_problem(
        app.get_dossier("1000002", &app.token(AGENT), RADIATION)
            .await,
        502,
        "upstream-error",
    )
    .await;
    assert_eq!(caf.requests_total(), 0);
}

#[tokio::test]
async fn a_failing_caf_is_recorded_as_upstream_error_with_the_status_answered() {
    let caf = caf(0, 1.0).await;
    let app = broker_in_front_of(
        &caf,
        &[
            ("CAF_BROKER__UPSTREAM__RETRIES", "0"),
            ("CAF_BROKER__UPSTREAM__BREAKER_FAILURES", "1"),
        ],
    )
    .await;
    let token = app.token(AGENT);
    // The CAF answers 5xx; then its circuit is open and it is not called.
    assert_problem(
        app.get_dossier("1000002", &token, RADIATION).await,
        502,
        "upstream-error",
    )
    .await;
    assert_problem(
        app.get_dossier("1000003", &token, RADIATION).await,
        503,
        "upstream-unavailable",
    )
    .await;
    let recorded: Vec<(Value, u16)> = crate::audit_files::records(&app.audit_dir)
        .into_iter()
        .map(|r| (serde_json::to_value(r.outcome).unwrap(), r.status))
        .collect();
    assert_eq!(
        recorded,
        [
            (Value::from("upstream_error"), 502),
            (Value::from("upstream_error"), 503)
        ]
    );
}
