//! What the CAF answers is checked before anything leaves: the broker in front
//! of a stub CAF over mutual TLS that answers the wrong dossier, or writes a
//! NIR into free text; and the one canonical form of a numéro, from the URL to
//! the upstream call, the cache and `caf-broker audit search`.

use std::path::Path;

use caf_broker::simulator::Dataset;
use serde_json::{Value, json};

use crate::audit_files::records;
use crate::helpers::{TestApp, assert_problem, spawn_app};
use crate::stub_caf::{StubCaf, broker_in_front_of};

const AGENT: &str = "agent_consulaire";
const RADIATION: &str = "verification_radiation";
const FRAUD: &str = "controle_fraude";
/// The NIR of the fixed dossier 1000002.
const NIR_1000002: &str = "295109912611193";

/// A fixed dossier as the simulator serves it.
fn dossier(numero: &str) -> Value {
    Dataset::generate(Dataset::DEFAULT_SEED, 0)
        .by_numero(numero)
        .expect("a fixed dossier")
}

fn outcomes(dir: &Path) -> Vec<(String, u16)> {
    records(dir)
        .iter()
        .map(|r| {
            let outcome = serde_json::to_value(r.outcome).unwrap();
            (outcome.as_str().unwrap().to_owned(), r.status)
        })
        .collect()
}

async fn search(app: &TestApp, nir: &str, token: &str) -> reqwest::Response {
    app.search(&json!({ "nir": nir }), token, RADIATION).await
}

#[tokio::test]
async fn a_caf_answering_another_dossier_gets_a_502_and_its_record_is_neither_released_nor_cached()
{
    let caf = StubCaf::start(&[(
        "/dossiers/1000002",
        vec![dossier("1000003"), dossier("1000002")],
    )])
    .await;
    let app = broker_in_front_of(&caf).await;
    let series = "caf_broker_upstream_mismatch_total{lookup=\"numero\"}";
    let before = app.counter(series).await;
    let token = app.token(AGENT);

    let wrong = app.get_dossier("1000002", &token, RADIATION).await;
    let problem = assert_problem(wrong, 502, "upstream-error").await;
    assert!(problem.get("data").is_none());
    let text = problem.to_string();
    assert!(
        !text.contains("1000003") && !text.contains("1000002"),
        "{text}"
    );
    assert_eq!(app.counter(series).await, before + 1.0);

    // The CAF has recovered: the next request asks it again, rather than
    // finding the stranger's record in the cache.
    let right = app.get_dossier("1000002", &token, RADIATION).await;
    assert_eq!(right.status(), 200);
    let body: Value = right.json().await.unwrap();
    assert_eq!(body["data"]["numero_allocataire"], "1000002");
    assert_eq!(body["meta"]["cache"], "miss");
    assert_eq!(caf.received("/dossiers/1000002"), 2);
    assert_eq!(
        outcomes(&app.audit_dir),
        [("upstream_error".into(), 502), ("released".into(), 200)]
    );
    assert_eq!(app.counter(series).await, before + 1.0);
    caf.stop().await;
}

#[tokio::test]
async fn a_caf_answering_a_search_with_another_persons_dossier_gets_a_502_and_nothing_is_cached() {
    let caf = StubCaf::start(&[(
        "/dossiers/recherche",
        vec![dossier("1000001"), dossier("1000001"), dossier("1000002")],
    )])
    .await;
    let app = broker_in_front_of(&caf).await;
    let series = "caf_broker_upstream_mismatch_total{lookup=\"nir\"}";
    let before = app.counter(series).await;
    let token = app.token(AGENT);

    for _ in 0..2 {
        let problem = assert_problem(
            search(&app, NIR_1000002, &token).await,
            502,
            "upstream-error",
        )
        .await;
        assert!(problem.get("data").is_none());
        assert!(!problem.to_string().contains("1000001"));
    }
    assert_eq!(app.counter(series).await, before + 2.0);
    assert_eq!(
        caf.received("/dossiers/recherche"),
        2,
        "never served from the cache"
    );

    let right = search(&app, NIR_1000002, &token).await;
    assert_eq!(right.status(), 200);
    let body: Value = right.json().await.unwrap();
    assert_eq!(body["data"]["numero_allocataire"], "1000002");
    assert_eq!(
        outcomes(&app.audit_dir),
        [
            ("upstream_error".into(), 502),
            ("upstream_error".into(), 502),
            ("released".into(), 200)
        ]
    );
    caf.stop().await;
}

#[tokio::test]
async fn a_nir_written_in_released_free_text_is_redacted_and_counted_on_every_answer() {
    let mut record = dossier("1000002");
    record["adresse"]["complement_information"] =
        json!(format!("NIR {NIR_1000002} noté au guichet"));
    record["prestations"][0]["libelle"] = json!("RSA (sécu 2 95 10 99 126 111 93)");
    // Fifteen digits without a valid key are not a NIR: left as they are.
    record["adresse"]["lieu_dit"] = json!("parcelle 123456789012345");
    let caf = StubCaf::start(&[("/dossiers/1000002", vec![record])]).await;
    let app = broker_in_front_of(&caf).await;
    let series = "caf_broker_nir_redactions_total";
    let before = app.counter(series).await;
    let token = app.token(AGENT);

    for (round, cache) in [(1.0, "miss"), (2.0, "hit")] {
        let response = app.get_dossier("1000002", &token, FRAUD).await;
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        assert!(
            !text.contains(NIR_1000002) && !text.contains("126 111 93"),
            "{text}"
        );
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["meta"]["cache"], cache);
        let data = &body["data"];
        assert_eq!(
            data["adresse"]["complement_information"],
            "NIR [redacted] noté au guichet"
        );
        assert_eq!(data["prestations"][0]["libelle"], "RSA (sécu [redacted])");
        assert_eq!(data["adresse"]["lieu_dit"], "parcelle 123456789012345");
        assert_eq!(data["adresse"]["pays"], "TUNISIE");
        assert_eq!(app.counter(series).await, before + 2.0 * round);
    }
    assert_eq!(caf.received("/dossiers/1000002"), 1);
    caf.stop().await;
}

#[tokio::test]
async fn a_numero_with_leading_zeros_is_asked_upstream_cached_and_audited_in_its_canonical_form() {
    let mut record = dossier("1000002");
    // The CAF may pad its own numéros: that is still the dossier asked for.
    record["numero_allocataire"] = json!("0000042");
    let caf = StubCaf::start(&[("/dossiers/42", vec![record])]).await;
    let app = broker_in_front_of(&caf).await;
    let token = app.token(AGENT);

    let padded = app.get_dossier("0000042", &token, RADIATION).await;
    assert_eq!(padded.status(), 200);
    let plain = app.get_dossier("42", &token, RADIATION).await;
    let body: Value = plain.json().await.unwrap();
    assert_eq!(body["meta"]["cache"], "hit", "one cache key for both forms");
    assert_eq!(caf.received("/dossiers/42"), 1);
    assert_eq!(caf.received("/dossiers/0000042"), 0);
    let log = records(&app.audit_dir);
    assert_eq!(log.len(), 2);
    assert!(log[0].dossier.is_some());
    assert_eq!(log[0].dossier, log[1].dossier, "one audit pseudonym");
    caf.stop().await;
}

#[tokio::test]
async fn audit_search_for_a_numero_finds_an_access_made_with_leading_zeros() {
    let app = spawn_app().await;
    let token = app.token(AGENT);
    assert_problem(
        app.get_dossier("0000042", &token, RADIATION).await,
        404,
        "allocataire-not-found",
    )
    .await;
    assert_eq!(
        app.get_dossier("0001000", &token, RADIATION).await.status(),
        404
    );

    for numero in ["42", "0042", "0000042"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_caf-broker"))
            .args(["audit", "search", "--numero", numero])
            .env("CAF_BROKER__AUDIT__DIR", &app.audit_dir)
            .env_remove("RUST_LOG")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("the binary runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let found: Vec<Value> = stdout
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(found.len(), 1, "--numero {numero}: {stdout}");
        assert_eq!(found[0]["outcome"], "not_found");
    }
}

#[tokio::test]
async fn a_numero_of_zeros_only_is_an_invalid_request() {
    let app = spawn_app().await;
    let token = app.token(AGENT);
    for zeros in ["0", "0000000"] {
        let problem = assert_problem(
            app.get_dossier(zeros, &token, RADIATION).await,
            400,
            "invalid-request",
        )
        .await;
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("not all zeros")
        );
    }
}
