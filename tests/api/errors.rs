//! Every problem of contract 4.2 that the embedded default can produce, and the
//! headers every answer carries.

use serde_json::{Value, json};

use crate::helpers::{assert_problem, spawn_app};

const AGENT: &str = "agent_consulaire";
const RADIATION: &str = "verification_radiation";

#[tokio::test]
async fn a_released_dossier_carries_the_envelope_and_headers_of_the_contract() {
    let app = spawn_app().await;
    let response = app
        .get_dossier("1000002", &app.token(AGENT), RADIATION)
        .await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    let body: Value = response.json().await.unwrap();

    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["cache-control"], "no-store");
    let request_id = headers["x-request-id"].to_str().unwrap();
    assert_eq!(
        uuid::Uuid::parse_str(request_id).unwrap().get_version_num(),
        4
    );
    assert_eq!(body["meta"]["request_id"], request_id);
    assert_eq!(body["meta"]["purpose"], RADIATION);
    assert_eq!(body["meta"]["cache"], "miss");

    let policy = std::fs::read(crate::helpers::repo("config/policy.toml")).unwrap();
    let expected_version = format!("sha256:{}", sha256_hex(&policy));
    assert_eq!(body["meta"]["policy_version"], expected_version);
    assert_eq!(headers["x-policy-version"], expected_version.as_str());
    assert_eq!(body["data"]["numero_allocataire"], "1000002");
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test]
async fn request_ids_differ_between_requests() {
    let app = spawn_app().await;
    let token = app.token(AGENT);
    let a = app.get_dossier("1000001", &token, RADIATION).await;
    let b = app.get_dossier("1000001", &token, RADIATION).await;
    assert_ne!(a.headers()["x-request-id"], b.headers()["x-request-id"]);
}

#[tokio::test]
async fn a_malformed_numero_is_an_invalid_request() {
    let app = spawn_app().await;
    let token = app.token(AGENT);
    for numero in ["12345678", "12a4", "%20", "-1"] {
        let response = app.get_dossier(numero, &token, RADIATION).await;
        let body = assert_problem(response, 400, "invalid-request").await;
        assert!(
            body["detail"].as_str().unwrap().contains("1 to 7 digits"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn an_unknown_dossier_is_not_found() {
    let app = spawn_app().await;
    let response = app
        .get_dossier("9999999", &app.token(AGENT), RADIATION)
        .await;
    assert_problem(response, 404, "allocataire-not-found").await;
}

#[tokio::test]
async fn a_nir_with_a_bad_key_is_refused_before_any_lookup() {
    let app = spawn_app().await;
    let response = app
        .search(
            &json!({"nir": "295109912611194"}),
            &app.token(AGENT),
            RADIATION,
        )
        .await;
    let body = assert_problem(response, 400, "invalid-request").await;
    assert!(body["detail"].as_str().unwrap().contains("key"), "{body}");
    assert!(
        !body.to_string().contains("29510991261119"),
        "the NIR must not be echoed: {body}"
    );
}

#[tokio::test]
async fn a_valid_nir_finds_its_dossier_and_an_unknown_one_is_not_found() {
    let app = spawn_app().await;
    let token = app.token(AGENT);
    let response = app
        .search(&json!({"nir": "295109912611193"}), &token, RADIATION)
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["numero_allocataire"], "1000002");
    assert!(body["data"].get("nir").is_none());

    // A well-formed NIR (valid key) that no dossier has.
    let response = app
        .search(&json!({"nir": "199017500100143"}), &token, RADIATION)
        .await;
    assert_problem(response, 404, "allocataire-not-found").await;
}

#[tokio::test]
async fn a_body_that_is_not_the_search_object_is_an_invalid_request() {
    let app = spawn_app().await;
    let token = app.token(AGENT);
    let url = format!("{}/v1/allocataires/recherche", app.address);
    for body in [
        "{",
        "[]",
        r#"{"nir": 295109912611193}"#,
        r#"{"nir":"295109912611193","x":1}"#,
        "{}",
    ] {
        let response = app
            .client
            .post(&url)
            .bearer_auth(&token)
            .header("X-Purpose", RADIATION)
            .header("X-Case-Reference", "C-1")
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let problem = assert_problem(response, 400, "invalid-request").await;
        assert!(
            !problem.to_string().contains("295109912611193"),
            "{problem}"
        );
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_as_too_large() {
    let app = spawn_app().await;
    let url = format!("{}/v1/allocataires/recherche", app.address);
    let big = format!(
        r#"{{"nir":"295109912611193","pad":"{}"}}"#,
        "x".repeat(10_000)
    );
    let response = app
        .client
        .post(&url)
        .bearer_auth(app.token(AGENT))
        .header("X-Purpose", RADIATION)
        .header("X-Case-Reference", "C-1")
        .header("Content-Type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_problem(response, 413, "payload-too-large").await;
}

#[tokio::test]
async fn a_body_that_is_not_declared_as_json_is_refused() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(format!("{}/v1/allocataires/recherche", app.address))
        .bearer_auth(app.token(AGENT))
        .header("X-Purpose", RADIATION)
        .header("X-Case-Reference", "C-1")
        .header("Content-Type", "text/plain")
        .body(r#"{"nir":"295109912611193"}"#)
        .send()
        .await
        .unwrap();
    assert_problem(response, 415, "unsupported-media-type").await;
}

#[tokio::test]
async fn purpose_and_case_reference_headers_are_required_and_checked() {
    let app = spawn_app().await;
    let token = app.token(AGENT);
    let url = format!("{}/v1/allocataires/1000002", app.address);
    let cases: [(&[(&str, &str)], &str); 6] = [
        (&[("X-Case-Reference", "C-1")], "X-Purpose"),
        (&[("X-Purpose", RADIATION)], "X-Case-Reference"),
        (
            &[
                ("X-Purpose", "Verification Radiation"),
                ("X-Case-Reference", "C-1"),
            ],
            "X-Purpose",
        ),
        (
            &[("X-Purpose", RADIATION), ("X-Case-Reference", "has space")],
            "X-Case-Reference",
        ),
        (
            &[
                ("X-Purpose", RADIATION),
                ("X-Case-Reference", &"x".repeat(65)),
            ],
            "X-Case-Reference",
        ),
        (
            &[
                ("X-Purpose", "no_such_purpose"),
                ("X-Case-Reference", "C-1"),
            ],
            "X-Purpose",
        ),
    ];
    for (headers, named) in cases {
        let mut request = app.client.get(&url).bearer_auth(&token);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let body = assert_problem(request.send().await.unwrap(), 400, "invalid-request").await;
        assert!(
            body["detail"].as_str().unwrap().contains(named),
            "{named}: {body}"
        );
    }
}

#[tokio::test]
async fn a_role_declaring_a_purpose_it_may_not_use_is_forbidden() {
    let app = spawn_app().await;
    let response = app
        .get_dossier(
            "1000002",
            &app.token("agent_consulaire"),
            "accompagnement_social",
        )
        .await;
    assert_problem(response, 403, "purpose-not-permitted").await;
    let response = app
        .get_dossier("1000002", &app.token("assistant_social"), "controle_fraude")
        .await;
    assert_problem(response, 403, "purpose-not-permitted").await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_with_problems() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!("{}/v2/nothing", app.address))
        .send()
        .await
        .unwrap();
    assert_problem(response, 404, "route-not-found").await;
    let response = app
        .client
        .delete(format!("{}/v1/allocataires/1000002", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["allow"], "GET");
    assert_problem(response, 405, "method-not-allowed").await;
}

#[tokio::test]
async fn every_known_route_answers_other_methods_with_405_and_allow() {
    let app = spawn_app().await;
    let routes = [
        ("/healthz", "GET"),
        ("/readyz", "GET"),
        ("/metrics", "GET"),
        ("/openapi.json", "GET"),
        ("/v1/allocataires/1000002", "GET"),
        ("/v1/allocataires/recherche", "POST"),
    ];
    for (path, allow) in routes {
        for method in ["PUT", "DELETE", "PATCH", "TRACE"] {
            let response = app
                .client
                .request(method.parse().unwrap(), format!("{}{path}", app.address))
                .send()
                .await
                .unwrap();
            assert_eq!(response.headers()["allow"], allow, "{method} {path}");
            assert_problem(response, 405, "method-not-allowed").await;
        }
    }
}

#[tokio::test]
async fn health_and_readiness_answer_without_a_token() {
    let app = spawn_app().await;
    let health = app
        .client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = app
        .client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    for check in ["policy", "upstream", "audit"] {
        assert_eq!(body["checks"][check]["status"], "ok", "{body}");
    }
}
