//! The per-agent error budget over HTTPS: refusals cost something, an agent past
//! its budget is refused at once, and its refusals are summed up per minute in
//! the audit log instead of written one line each. The broker's clock is frozen,
//! so the budget refills only when a test moves it; the summaries still open are
//! written when the broker stops.

use std::sync::Arc;

use caf_broker::audit::{Record, RecordKind, verify_dir};
use caf_broker::clock::ManualClock;

use crate::audit_files::records;
use crate::helpers::{TestApp, assert_problem, repo, spawn_stoppable_app};

const AGENT: &str = "agent_consulaire";
const RADIATION: &str = "verification_radiation";
/// 12:00 in Paris: twelve hours to the daily reset.
const NOON: &str = "2026-06-15T10:00:00Z";
/// A post of these tests alone, so that its metric counts only their requests.
const POST: &str = "LU-LUXEMBOURG";

fn token(app: &TestApp, post: &str, sub: &str) -> String {
    app.token_of(post, sub, AGENT)
}

/// A client that trusts the development CA, to be finished by the caller.
fn client_builder() -> reqwest::ClientBuilder {
    let ca = std::fs::read(repo("certs-dev/ca.pem")).expect("dev CA");
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).expect("dev CA parses")])
}

fn frozen_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(NOON.parse().unwrap()))
}

fn of_agent<'a>(log: &'a [Record], sub: &str) -> Vec<&'a Record> {
    log.iter()
        .filter(|r| r.sub.as_deref() == Some(sub))
        .collect()
}

fn summaries<'a>(log: &'a [&'a Record]) -> Vec<&'a Record> {
    log.iter()
        .copied()
        .filter(|r| r.kind == Some(RecordKind::RefusalsSummary))
        .collect()
}

fn figure(record: &Record, name: &str) -> u64 {
    record.figures.as_ref().expect("figures")[name]
        .as_u64()
        .expect("a whole number")
}

/// `GET /v1/allocataires/{numero}` with a client, for use in spawned tasks.
async fn get(
    client: &reqwest::Client,
    address: &str,
    numero: &str,
    token: &str,
) -> reqwest::Response {
    client
        .get(format!("{address}/v1/allocataires/{numero}"))
        .bearer_auth(token)
        .header("X-Purpose", RADIATION)
        .header("X-Case-Reference", "LU-2026/0007")
        .send()
        .await
        .expect("request sent")
}

#[tokio::test]
async fn ten_thousand_bad_requests_of_one_agent_add_fewer_than_a_hundred_records_and_spare_its_colleague()
 {
    const FLOOD: usize = 10_000;
    const WORKERS: usize = 8;
    let running = spawn_stoppable_app(&[], frozen_clock()).await;
    let app = &running.app;
    let flooder = token(app, POST, "agent-flood");
    let colleague = token(app, POST, "agent-colleague");

    // The flood: a malformed numéro (400), from a few concurrent workers over
    // HTTP/1.1 connections, as a script would send it.
    let flood_client = client_builder().http1_only().build().unwrap();
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (client, address, token) =
                (flood_client.clone(), app.address.clone(), flooder.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::with_capacity(FLOOD / WORKERS);
                for _ in 0..FLOOD / WORKERS {
                    statuses.push(
                        get(&client, &address, "12x", &token)
                            .await
                            .status()
                            .as_u16(),
                    );
                }
                statuses
            })
        })
        .collect();
    // Meanwhile, a colleague of the same post is served, and the post's quota
    // shows only the colleague's own requests (burst 20, 2000 a day).
    let (client, address) = (app.client.clone(), app.address.clone());
    let served = tokio::spawn(async move {
        for n in 1..=10 {
            let response = get(&client, &address, "1000002", &colleague).await;
            assert_eq!(response.status(), 200, "request {n} of the colleague");
            // The post's items, then the colleague's own (roomy in tests).
            assert_eq!(
                response.headers()["ratelimit"],
                format!(
                    "\"burst\";r={};t=1, \"daily\";r={};t=43200, \"agent-burst\";r={};t=1, \"agent-daily\";r={};t=43200",
                    20 - n,
                    2000 - n,
                    1000 - n,
                    1_000_000 - n
                ),
                "request {n} of the colleague"
            );
            tokio::task::yield_now().await;
        }
    });
    let mut statuses = Vec::new();
    for worker in workers {
        statuses.extend(worker.await.expect("a flooding worker"));
    }
    served.await.expect("the colleague was served throughout");

    let answered_400 = statuses.iter().filter(|s| **s == 400).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(
        (answered_400, refused),
        (30, FLOOD - 30),
        "the budget's burst is answered in full, however many requests are in flight"
    );

    let extra = get(&app.client, &app.address, "12x", &flooder).await;
    assert_eq!(extra.headers()["retry-after"], "1");
    assert!(!extra.headers().contains_key("ratelimit"));
    let problem = assert_problem(extra, 429, "quota-exceeded").await;
    assert_eq!(problem["limit"], "agent-error-budget");
    let refused = refused + 1;

    let series = format!("caf_broker_error_budget_refusals_total{{post=\"{POST}\"}}");
    assert_eq!(app.counter(&series).await, refused as f64);

    let audit_dir = app.audit_dir.clone();
    running.stop().await;
    let log = records(&audit_dir);
    let flood = of_agent(&log, "agent-flood");
    assert!(flood.len() < 100, "{} records for the flood", flood.len());
    assert_eq!(
        flood.iter().filter(|r| r.kind.is_none()).count(),
        answered_400,
        "one access record per request answered in full"
    );
    let summaries = summaries(&flood);
    assert_eq!(summaries.len(), 1, "one agent, one minute: one summary");
    let summary = summaries[0];
    assert_eq!(figure(summary, "429"), refused as u64);
    assert_eq!(
        figure(summary, "window_start"),
        NOON.parse::<jiff::Timestamp>().unwrap().as_second() as u64
    );
    assert_eq!(summary.post.as_deref(), Some(POST));
    assert_eq!(summary.dossier, None);
    let colleague_log = of_agent(&log, "agent-colleague");
    assert_eq!(colleague_log.len(), 10);
    assert!(colleague_log.iter().all(|r| r.status == 200));
    assert_eq!(
        verify_dir(&audit_dir).unwrap().records,
        log.len() as u64,
        "the summary is chained like any record"
    );
}

#[tokio::test]
async fn a_spent_error_budget_refuses_at_once_consuming_no_quota_until_it_refills() {
    let clock = frozen_clock();
    let running = spawn_stoppable_app(
        &[(
            "CAF_BROKER__QUOTAS__AGENT_ERROR_BUDGET",
            "{ per_second = 1, burst = 3 }",
        )],
        clock.clone(),
    )
    .await;
    let app = &running.app;
    let agent = token(app, "LI-VADUZ", "agent-lost");
    // Three dossiers not found: each counts against the post's quota and
    // spends one unit of the agent's budget.
    for _ in 0..3 {
        let response = get(&app.client, &app.address, "9999999", &agent).await;
        assert_problem(response, 404, "allocataire-not-found").await;
    }
    // A good request now is refused before anything, quota included.
    for _ in 0..2 {
        let refused = get(&app.client, &app.address, "1000002", &agent).await;
        assert_eq!(refused.headers()["retry-after"], "1");
        let problem = assert_problem(refused, 429, "quota-exceeded").await;
        assert_eq!(problem["limit"], "agent-error-budget");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("retry in 1 seconds"),
            "{problem}"
        );
    }
    // One second later one unit is back: served, and the day's count shows
    // the three 404s and this request only.
    clock.advance(std::time::Duration::from_secs(1));
    let served = get(&app.client, &app.address, "1000002", &agent).await;
    assert_eq!(served.status(), 200);
    assert!(
        served.headers()["ratelimit"]
            .to_str()
            .unwrap()
            .contains("\"daily\";r=1996;t=43199"),
        "{:?}",
        served.headers()["ratelimit"]
    );
    // A success charges nothing: a mistake is still allowed, and spends the unit.
    let missing = get(&app.client, &app.address, "9999999", &agent).await;
    assert_eq!(missing.status(), 404);
    let refused = get(&app.client, &app.address, "1000002", &agent).await;
    assert_problem(refused, 429, "quota-exceeded").await;

    let audit_dir = app.audit_dir.clone();
    running.stop().await;
    let log = records(&audit_dir);
    let statuses: Vec<(Option<RecordKind>, u16)> = log.iter().map(|r| (r.kind, r.status)).collect();
    assert_eq!(
        statuses,
        [
            (None, 404),
            (None, 404),
            (None, 404),
            (None, 200),
            (None, 404),
            (Some(RecordKind::RefusalsSummary), 429),
        ],
        "refusals for the spent budget have no line of their own"
    );
    let summary = log.last().unwrap();
    assert_eq!(figure(summary, "429"), 3);
    assert_eq!(summary.sub.as_deref(), Some("agent-lost"));
}
