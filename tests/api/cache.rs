//! The cache's promises, held against a stub CAF that counts its requests:
//! `Cache-Control: no-cache` reads the CAF afresh, a failed answer is never
//! kept, and "no such dossier" is kept no longer than `cache.not_found_ttl_secs`.

use std::sync::Arc;
use std::time::Duration;

use caf_broker::clock::ManualClock;
use caf_broker::simulator::Dataset;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem};
use crate::stub_caf::{Reply, StubCaf, broker_in_front_of, broker_in_front_of_with};

const AGENT: &str = "agent_consulaire";
const RADIATION: &str = "verification_radiation";

/// A fixed dossier as the simulator serves it, with `mise_a_jour` (released to
/// the radiation check) set to `updated`, so that two versions tell apart.
fn dossier(numero: &str, updated: &str) -> Value {
    let mut record = Dataset::generate(Dataset::DEFAULT_SEED, 0)
        .by_numero(numero)
        .expect("a fixed dossier");
    record["mise_a_jour"] = json!(updated);
    record
}

/// `GET /v1/allocataires/{numero}` for the radiation check, with `Cache-Control`
/// when given.
async fn lookup(app: &TestApp, numero: &str, cache_control: Option<&str>) -> reqwest::Response {
    let mut request = app
        .client
        .get(format!("{}/v1/allocataires/{numero}", app.address))
        .bearer_auth(app.token(AGENT))
        .header("X-Purpose", RADIATION)
        .header("X-Case-Reference", "TN-2026/0042");
    if let Some(value) = cache_control {
        request = request.header("Cache-Control", value);
    }
    request.send().await.expect("request sent")
}

/// The released `mise_a_jour` and `meta.cache` of a `200` answer.
async fn version_and_cache(response: reqwest::Response) -> (String, String) {
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    (
        body["data"]["mise_a_jour"].as_str().unwrap().to_owned(),
        body["meta"]["cache"].as_str().unwrap().to_owned(),
    )
}

fn pair(version: &str, cache: &str) -> (String, String) {
    (version.to_owned(), cache.to_owned())
}

#[tokio::test]
async fn no_cache_reads_the_caf_afresh_and_returns_its_new_answer_while_a_plain_repeat_is_served_from_the_cache()
 {
    const V1: &str = "2026-01-05T06:00:00Z";
    const V2: &str = "2026-02-05T06:00:00Z";
    const V3: &str = "2026-03-05T06:00:00Z";
    let path = "/dossiers/1000002";
    let caf = StubCaf::start(&[(
        path,
        vec![
            dossier("1000002", V1),
            dossier("1000002", V2),
            dossier("1000002", V3),
        ],
    )])
    .await;
    let app = broker_in_front_of(&caf).await;

    assert_eq!(
        version_and_cache(lookup(&app, "1000002", None).await).await,
        pair(V1, "miss")
    );
    assert_eq!(
        version_and_cache(lookup(&app, "1000002", None).await).await,
        pair(V1, "hit")
    );
    assert_eq!(caf.received(path), 1, "a plain repeat stays in the broker");

    assert_eq!(
        version_and_cache(lookup(&app, "1000002", Some("no-cache")).await).await,
        pair(V2, "miss"),
        "no-cache asks the CAF, whose answer has changed"
    );
    assert_eq!(caf.received(path), 2);
    // The fresh answer replaced the cached one for the requests that follow.
    assert_eq!(
        version_and_cache(lookup(&app, "1000002", None).await).await,
        pair(V2, "hit")
    );
    // Directives are a comma-separated list, matched without regard to case.
    assert_eq!(
        version_and_cache(lookup(&app, "1000002", Some("max-age=0, No-Cache")).await).await,
        pair(V3, "miss")
    );
    assert_eq!(caf.received(path), 3);
    // Another directive alone is a plain read.
    assert_eq!(
        version_and_cache(lookup(&app, "1000002", Some("max-age=0")).await).await,
        pair(V3, "hit")
    );
    assert_eq!(caf.received(path), 3);
    caf.stop().await;
}

#[tokio::test]
async fn a_failed_caf_answer_is_never_cached_so_the_retry_asks_the_caf_again() {
    // Each dossier fails once in its own way, then the CAF answers it rightly.
    let failures: [(&str, Reply); 4] = [
        ("1000001", Reply::Status(500)),
        // Retried by the connector when `upstream.retries` allows; here it does not.
        ("1000003", Reply::Status(503)),
        ("1000004", Reply::Text("{\"numero")),
        // Another dossier than the one asked for.
        (
            "1000005",
            Reply::Json(dossier("1000002", "2026-01-05T06:00:00Z")),
        ),
    ];
    let paths: Vec<String> = failures
        .iter()
        .map(|(numero, _)| format!("/dossiers/{numero}"))
        .collect();
    let script: Vec<(&str, Vec<Reply>)> = failures
        .iter()
        .zip(&paths)
        .map(|((numero, failure), path)| {
            let right = dossier(numero, "2026-02-05T06:00:00Z");
            (path.as_str(), vec![failure.clone(), Reply::Json(right)])
        })
        .collect();
    let caf = StubCaf::start(&script).await;
    let app = broker_in_front_of(&caf).await;

    for ((numero, _), path) in failures.iter().zip(&paths) {
        assert_problem(lookup(&app, numero, None).await, 502, "upstream-error").await;
        assert_eq!(caf.received(path), 1, "{numero}");

        let retry = version_and_cache(lookup(&app, numero, None).await).await;
        assert_eq!(retry, pair("2026-02-05T06:00:00Z", "miss"), "{numero}");
        assert_eq!(caf.received(path), 2, "the retry of {numero} asked the CAF");

        // The right answer, unlike the failure, is kept.
        let again = version_and_cache(lookup(&app, numero, None).await).await;
        assert_eq!(again, pair("2026-02-05T06:00:00Z", "hit"), "{numero}");
        assert_eq!(caf.received(path), 2, "{numero}");
    }
    caf.stop().await;
}

#[tokio::test]
async fn no_such_dossier_is_remembered_for_not_found_ttl_secs_and_then_asked_again() {
    let path = "/dossiers/1000002";
    let caf = StubCaf::start(&[(
        path,
        vec![
            Reply::Status(404),
            Reply::Json(dossier("1000002", "2026-02-05T06:00:00Z")),
        ],
    )])
    .await;
    let clock = Arc::new(ManualClock::new("2026-06-15T10:00:00Z".parse().unwrap()));
    let app = broker_in_front_of_with(
        &caf,
        &[
            ("CAF_BROKER__CACHE__TTL_SECS", "60"),
            ("CAF_BROKER__CACHE__NOT_FOUND_TTL_SECS", "10"),
        ],
        clock.clone(),
    )
    .await;

    assert_problem(
        lookup(&app, "1000002", None).await,
        404,
        "allocataire-not-found",
    )
    .await;
    clock.advance(Duration::from_secs(9));
    assert_problem(
        lookup(&app, "1000002", None).await,
        404,
        "allocataire-not-found",
    )
    .await;
    assert_eq!(caf.received(path), 1, "within 10 s the broker remembers");

    clock.advance(Duration::from_secs(1));
    assert_eq!(
        version_and_cache(lookup(&app, "1000002", None).await).await,
        pair("2026-02-05T06:00:00Z", "miss"),
        "after 10 s the CAF is asked again, and now has the dossier"
    );
    assert_eq!(caf.received(path), 2);
    caf.stop().await;
}
