//! The served `/openapi.json` checked against the real app, driven by the
//! document itself: every documented status of every operation is provoked
//! (or named below as out of reach, with the reason), every documented
//! request example is sent, and each answer is checked against what the
//! document promises for it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};

use crate::edge::connect;
use crate::helpers::{TestApp, repo, spawn_app_with};

const AGENT: &str = "agent_consulaire";
/// A purpose the policy defines but the agent's role may not declare.
const FORBIDDEN_PURPOSE: &str = "accompagnement_social";
const CASE: &str = "TN-2026/0042";
const SEARCH: &str = "/v1/allocataires/recherche";
/// The header list limit of the app under test, so that 431 is reachable.
const HEADER_LIST_BYTES: &str = "4096";

/// Documented statuses this test cannot provoke in-process, with the reason
/// (path `*`: every operation that documents the status). A documented status
/// that is neither provoked nor listed here fails the test, and so does an
/// entry here that no operation documents any more. The tests named in a
/// reason provoke that status with a failing peer.
const OUT_OF_REACH: [(&str, u16, &str); 4] = [
    (
        "*",
        500,
        "a fault of the broker itself: no request causes it",
    ),
    (
        "*",
        502,
        "needs a CAF that answers with an error or another dossier (tests/api/upstream.rs)",
    ),
    (
        "*",
        503,
        "needs a failing dependency: an open circuit (tests/api/upstream.rs), an unwritable audit log (tests/api/audit.rs) or an unreachable quota store set to refuse",
    ),
    (
        "*",
        504,
        "needs a CAF that does not answer in time (tests/api/upstream.rs)",
    ),
];

/// The two apps the statuses are provoked on: the shipped settings (with a
/// small header list limit and a request deadline of one second), and the
/// same with a post burst of one.
struct Apps {
    app: TestApp,
    tight: TestApp,
    doc: Value,
}

/// A request that provokes `status` on `method path`, if this test knows one.
fn provoke(apps: &Apps, method: &str, path: &str, status: u16) -> Option<RequestBuilder> {
    let app = &apps.app;
    let token = app.token(AGENT);
    let data = |app: &TestApp, url: &str, token: &str, purpose: &str| {
        app.client
            .request(
                method.to_ascii_uppercase().parse().unwrap(),
                format!("{}{url}", app.address),
            )
            .bearer_auth(token)
            .header("X-Purpose", purpose)
            .header("X-Case-Reference", CASE)
    };
    let purpose = "verification_radiation";
    let request = match (method, path, status) {
        (_, "/v1/allocataires/{numero}", _) => {
            let numero = match status {
                200 | 401 | 403 | 429 | 431 => "1000002",
                400 => "12345678",
                404 => "9999999",
                _ => return None,
            };
            let url = format!("/v1/allocataires/{numero}");
            match status {
                401 => data(app, &url, "not-a-jwt", purpose),
                403 => data(app, &url, &token, FORBIDDEN_PURPOSE),
                429 => {
                    let tight = &apps.tight;
                    return Some(data(tight, &url, &tight.token(AGENT), purpose));
                }
                431 => {
                    return Some(
                        http1()
                            .get(format!("{}{url}", app.address))
                            .bearer_auth(&token)
                            .header("X-Purpose", purpose)
                            .header("X-Case-Reference", CASE)
                            .header("X-Padding", "a".repeat(5000)),
                    );
                }
                _ => data(app, &url, &token, purpose),
            }
        }
        (_, SEARCH, _) => {
            let url = SEARCH;
            let nir = |nir: &str| json!({ "nir": nir });
            match status {
                200 => data(app, url, &token, purpose).json(&nir(&example_nir(&apps.doc))),
                400 => data(app, url, &token, purpose).json(&nir("295109912611194")),
                401 => data(app, url, "not-a-jwt", purpose).json(&nir("295109912611193")),
                403 => data(app, url, &token, FORBIDDEN_PURPOSE).json(&nir("295109912611193")),
                404 => data(app, url, &token, purpose).json(&nir(&absent_nir())),
                413 => data(app, url, &token, purpose)
                    .json(&nir(&"1".repeat(app.settings.server.max_body_bytes + 1))),
                415 => data(app, url, &token, purpose)
                    .header("content-type", "text/plain")
                    .body(r#"{"nir": "295109912611193"}"#),
                429 => {
                    let tight = &apps.tight;
                    return Some(
                        data(tight, url, &tight.token(AGENT), purpose)
                            .json(&nir("295109912611193")),
                    );
                }
                431 => {
                    return Some(
                        http1()
                            .post(format!("{}{url}", app.address))
                            .bearer_auth(&token)
                            .header("X-Purpose", purpose)
                            .header("X-Case-Reference", CASE)
                            .header("X-Padding", "a".repeat(5000))
                            .json(&nir("295109912611193")),
                    );
                }
                _ => return None,
            }
        }
        ("get", "/healthz" | "/readyz" | "/metrics" | "/openapi.json", 200) => {
            app.client.get(format!("{}{path}", app.address))
        }
        _ => return None,
    };
    Some(request)
}

/// A search whose body stops after its first byte, over HTTP/2: the broker
/// answers 408 once the request deadline passes.
async fn late_search(app: &TestApp) -> Answer {
    let tls = connect(app, b"h2").await.expect("TLS connection");
    let (client, connection) = h2::client::handshake(tls).await.expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("HTTP/2 ready");
    let request = http::Request::post(format!("https://localhost{SEARCH}"))
        .header("authorization", format!("Bearer {}", app.token(AGENT)))
        .header("x-purpose", "verification_radiation")
        .header("x-case-reference", CASE)
        .header("content-type", "application/json")
        .body(())
        .unwrap();
    let (response, mut body) = client.send_request(request, false).unwrap();
    // The stream is kept open, with the rest of the body never sent.
    body.send_data(bytes::Bytes::from_static(b"{"), false)
        .expect("the first byte is sent");
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("an answer once the deadline passes")
        .expect("an answer, not a reset");
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            let value = value.to_str().unwrap_or_default().to_string();
            (name.as_str().to_string(), value)
        })
        .collect();
    let mut stream = response.into_body();
    let mut problem = Vec::new();
    while let Some(chunk) = stream.data().await {
        match chunk {
            Ok(chunk) => problem.extend_from_slice(&chunk),
            // After a complete answer the server stops the unfinished upload
            // with RST_STREAM(NO_ERROR) (RFC 9113, 8.1): the answer stands.
            Err(e) if e.reason() == Some(h2::Reason::NO_ERROR) => break,
            Err(e) => panic!("the answer's body failed: {e}"),
        }
    }
    drop(body);
    Answer {
        status,
        headers,
        body: problem,
    }
}

/// The NIR the document gives as the search body's example.
fn example_nir(doc: &Value) -> String {
    doc["components"]["schemas"]["SearchBody"]["properties"]["nir"]["example"]
        .as_str()
        .expect("the search body's NIR has an example")
        .to_string()
}

/// A NIR with a right key that no dossier of the dataset holds.
fn absent_nir() -> String {
    let body = "1990199123456";
    let key = 97 - body.parse::<u64>().unwrap() % 97;
    format!("{body}{key:02}")
}

/// A client that speaks HTTP/1.1 only: over HTTP/2 a header list over the
/// limit is refused by the connection, without a problem body.
fn http1() -> reqwest::Client {
    let ca = std::fs::read(repo("certs-dev/ca.pem")).expect("dev CA");
    reqwest::Client::builder()
        .http1_only()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .build()
        .unwrap()
}

/// Follows a local `$ref` (`#/components/...`) once, or returns the value.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str() {
        Some(reference) => {
            let pointer = reference.trim_start_matches('#');
            let target = doc.pointer(pointer).unwrap_or(&Value::Null);
            assert!(target.is_object(), "{reference} does not resolve");
            resolve(doc, target)
        }
        None => value,
    }
}

/// The operations of the document: (path, method, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            if [
                "get", "put", "post", "delete", "options", "head", "patch", "trace",
            ]
            .contains(&method.as_str())
            {
                found.push((path.clone(), method.clone(), operation.clone()));
            }
        }
    }
    found
}

/// A real answer, whichever client received it: header names in lower case.
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Answer {
    async fn of(response: reqwest::Response) -> Answer {
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| {
                let value = value.to_str().unwrap_or_default().to_string();
                (name.as_str().to_string(), value)
            })
            .collect();
        let body = response.bytes().await.expect("a body").to_vec();
        Answer {
            status,
            headers,
            body,
        }
    }
}

/// Checks one real answer against what the document promises for its status.
async fn check(doc: &Value, path: &str, method: &str, response: reqwest::Response) -> u16 {
    check_answer(doc, path, method, Answer::of(response).await)
}

fn check_answer(doc: &Value, path: &str, method: &str, answer: Answer) -> u16 {
    let status = answer.status;
    let what = format!("{method} {path} -> {status}");
    let documented = resolve(
        doc,
        &doc["paths"][path][method]["responses"][status.to_string()],
    );
    assert!(documented.is_object(), "{what}: undocumented status");

    let headers = &answer.headers;
    for (name, header) in documented["headers"].as_object().into_iter().flatten() {
        let value = headers
            .get(&name.to_ascii_lowercase())
            .unwrap_or_else(|| panic!("{what}: documented header {name} missing"));
        let allowed = &resolve(doc, header)["schema"]["enum"];
        if let Some(allowed) = allowed.as_array() {
            assert!(
                allowed.contains(&Value::from(value.as_str())),
                "{what}: header {name}: {value} is not one of {allowed:?}"
            );
        }
    }
    let content_type = headers.get("content-type").cloned().unwrap_or_default();
    let content = documented["content"]
        .as_object()
        .expect("documented content");
    let (media_type, media) = content
        .iter()
        .find(|(media_type, _)| {
            let essence = media_type.split(';').next().unwrap_or_default();
            content_type.split(';').next().unwrap_or_default() == essence
        })
        .unwrap_or_else(|| panic!("{what}: content type {content_type:?} is not documented"));
    if !media_type.contains("json") {
        return status;
    }
    let body: Value = serde_json::from_slice(&answer.body).expect("a JSON body");
    let schema = resolve(doc, &media["schema"]);
    if let Some(properties) = schema["properties"].as_object() {
        for key in body.as_object().expect("an object body").keys() {
            assert!(
                properties.contains_key(key),
                "{what}: property {key} is not documented"
            );
        }
    }
    for required in schema["required"].as_array().into_iter().flatten() {
        let key = required.as_str().unwrap();
        assert!(
            body.get(key).is_some(),
            "{what}: required property {key} missing"
        );
    }
    if media_type.as_str() == "application/problem+json" {
        let code = body["code"].as_str().expect("a problem has a code");
        let examples = media["examples"].as_object().expect("problem examples");
        assert!(
            examples.contains_key(code),
            "{what}: code {code} is not among the documented {:?}",
            examples.keys().collect::<Vec<_>>()
        );
        let codes = &doc["components"]["schemas"]["ProblemCode"]["enum"];
        assert!(
            codes.as_array().unwrap().contains(&Value::from(code)),
            "{what}: code {code} is not in ProblemCode"
        );
        assert_eq!(body["status"], status, "{what}: the body's status");
    }
    status
}

/// A request built from the document's examples alone: the path and header
/// parameters' examples and the request body's.
fn example_request(
    app: &TestApp,
    doc: &Value,
    path: &str,
    method: &str,
    operation: &Value,
) -> RequestBuilder {
    let mut url = path.to_string();
    let mut headers = Vec::new();
    for parameter in operation["parameters"].as_array().into_iter().flatten() {
        let parameter = resolve(doc, parameter);
        let name = parameter["name"].as_str().unwrap();
        let example = parameter["example"]
            .as_str()
            .or_else(|| parameter["schema"]["example"].as_str());
        match (parameter["in"].as_str().unwrap(), example) {
            ("path", Some(example)) => url = url.replace(&format!("{{{name}}}"), example),
            ("path", None) => panic!("{method} {path}: path parameter {name} has no example"),
            ("header", Some(example)) => headers.push((name.to_string(), example.to_string())),
            _ => {}
        }
    }
    let mut request = app.client.request(
        method.to_ascii_uppercase().parse::<Method>().unwrap(),
        format!("{}{url}", app.address),
    );
    if operation["security"].is_array() {
        request = request.bearer_auth(app.token(AGENT));
    }
    for (name, value) in headers {
        request = request.header(name, value);
    }
    if let Some(content) = operation["requestBody"]["content"].as_object() {
        let (media_type, media) = content.iter().next().expect("a body media type");
        let body = media
            .get("example")
            .cloned()
            .unwrap_or_else(|| example_of(doc, &media["schema"]));
        request = request
            .header("content-type", media_type.as_str())
            .body(body.to_string());
    }
    request
}

/// An object made of the examples of a schema's properties.
fn example_of(doc: &Value, schema: &Value) -> Value {
    let schema = resolve(doc, schema);
    if let Some(example) = schema.get("example") {
        return example.clone();
    }
    let properties = schema["properties"].as_object().expect("an object schema");
    properties
        .iter()
        .map(|(key, property)| {
            let example = resolve(doc, property)
                .get("example")
                .cloned()
                .unwrap_or_else(|| panic!("property {key} has no example"));
            (key.clone(), example)
        })
        .collect()
}

#[tokio::test]
async fn every_documented_status_is_provoked_and_answered_as_the_served_document_says() {
    let app = spawn_app_with(&[(
        "CAF_BROKER__SERVER__MAX_HEADER_LIST_BYTES",
        HEADER_LIST_BYTES,
    )])
    .await;
    let tight = spawn_app_with(&[(
        "CAF_BROKER__QUOTAS__DEFAULT",
        "{ per_second = 1, burst = 1, per_day = 1000 }",
    )])
    .await;
    let doc: Value = app
        .client
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .expect("request sent")
        .json()
        .await
        .expect("the document is JSON");
    let apps = Apps { app, tight, doc };
    let doc = &apps.doc;

    let mut unprovoked = Vec::new();
    let mut skipped = BTreeSet::new();
    let mut provoked = Vec::new();
    for (path, method, operation) in operations(doc) {
        let statuses = operation["responses"].as_object().expect("responses");
        assert!(!statuses.is_empty(), "{method} {path} documents no answer");
        for status in statuses.keys() {
            let status: u16 = status.parse().expect("a numeric status");
            if let Some(skip) = OUT_OF_REACH
                .iter()
                .find(|(p, s, _)| (*p == "*" || *p == path) && *s == status)
            {
                skipped.insert((skip.0, skip.1));
                continue;
            }
            if (method.as_str(), path.as_str(), status) == ("post", SEARCH, 408) {
                // A short deadline on an app of its own, so that no other
                // request of this test can meet it on a busy machine.
                let late =
                    spawn_app_with(&[("CAF_BROKER__SERVER__REQUEST_TIMEOUT_SECS", "1")]).await;
                let answer = late_search(&late).await;
                assert_eq!(check_answer(doc, &path, &method, answer), 408);
                provoked.push(format!("{method} {path} {status}"));
                continue;
            }
            let Some(request) = provoke(&apps, &method, &path, status) else {
                unprovoked.push(format!("{method} {path} {status}"));
                continue;
            };
            if status == 429 {
                // The burst is one: a first identical request spends it.
                let spend = request.try_clone().expect("a cloneable request");
                let _ = spend.send().await.expect("request sent");
            }
            let response = request.send().await.expect("request sent");
            let got = check(doc, &path, &method, response).await;
            assert_eq!(got, status, "{method} {path}: provoked {status}, got {got}");
            provoked.push(format!("{method} {path} {status}"));
        }
    }
    assert!(
        unprovoked.is_empty(),
        "documented statuses neither provoked nor listed as out of reach: {unprovoked:?}"
    );
    for (path, status, reason) in OUT_OF_REACH {
        assert!(
            skipped.contains(&(path, status)),
            "{status} is listed as out of reach ({reason}) but no operation documents it"
        );
    }
    // A guard against a document that lost its operations or statuses.
    assert!(provoked.len() >= 20, "{provoked:?}");
}

/// Sends every operation of the document `app` serves with its documented
/// examples alone, checks each answer against the document, and returns the
/// paths the document names.
async fn every_example_answers_as_documented(app: &TestApp) -> Vec<String> {
    let doc: Value = app
        .client
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .expect("request sent")
        .json()
        .await
        .expect("the document is JSON");
    let mut sent = 0;
    for (path, method, operation) in operations(&doc) {
        let request = example_request(app, &doc, &path, &method, &operation);
        let response = request.send().await.expect("request sent");
        // The examples are a consistent set: together they read a real dossier.
        let status = check(&doc, &path, &method, response).await;
        assert_eq!(status, 200, "{method} {path} with its examples");
        sent += 1;
    }
    assert_eq!(sent, operations(&doc).len());
    let paths = doc["paths"].as_object().expect("paths");
    paths.keys().cloned().collect()
}

#[tokio::test]
async fn every_documented_request_example_is_answered_as_documented() {
    let app = spawn_app_with(&[]).await;
    let paths = every_example_answers_as_documented(&app).await;
    assert!(paths.len() >= 6, "every operation is sent: {paths:?}");
}

#[tokio::test]
async fn beside_an_operations_listener_the_api_document_names_only_what_the_api_listener_serves() {
    let app = spawn_app_with(&[("CAF_BROKER__SERVER__OPS_LISTEN", "127.0.0.1:0")]).await;
    let paths = every_example_answers_as_documented(&app).await;
    assert_eq!(
        paths,
        [
            "/openapi.json",
            "/v1/allocataires/recherche",
            "/v1/allocataires/{numero}"
        ]
    );
    for moved in ["/healthz", "/readyz", "/metrics"] {
        let answer = app
            .client
            .get(format!("{}{moved}", app.address))
            .send()
            .await
            .expect("request sent");
        assert_eq!(answer.status(), 404, "{moved} on the API listener");
    }
}

#[tokio::test]
async fn every_documented_path_answers_other_methods_405_with_the_documented_ones_allowed() {
    let app = spawn_app_with(&[]).await;
    let doc: Value = app
        .client
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .expect("request sent")
        .json()
        .await
        .expect("the document is JSON");
    let codes = doc["components"]["schemas"]["ProblemCode"]["enum"]
        .as_array()
        .expect("the ProblemCode enumeration")
        .clone();
    let all = ["get", "put", "post", "delete", "patch", "trace", "options"];
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let documented: BTreeSet<String> = item
            .as_object()
            .unwrap()
            .keys()
            .filter(|m| all.contains(&m.as_str()))
            .map(|m| m.to_ascii_uppercase())
            .collect();
        let url = format!("{}{}", app.address, path.replace("{numero}", "1000002"));
        for method in all.iter().map(|m| m.to_ascii_uppercase()) {
            if documented.contains(&method) {
                continue;
            }
            let response = app
                .client
                .request(method.parse().unwrap(), &url)
                .send()
                .await
                .expect("request sent");
            let what = format!("{method} {path}");
            assert_eq!(response.status().as_u16(), 405, "{what}");
            let allowed: BTreeSet<String> = response
                .headers()
                .get("allow")
                .unwrap_or_else(|| panic!("{what}: no Allow header"))
                .to_str()
                .unwrap()
                .split(',')
                .map(|m| m.trim().to_string())
                .collect();
            assert_eq!(allowed, documented, "{what}: Allow");
            assert!(response.headers().contains_key("x-request-id"), "{what}");
            assert_eq!(
                response.headers()["content-type"],
                "application/problem+json",
                "{what}"
            );
            let body: Value = response.json().await.expect("a problem body");
            assert!(codes.contains(&body["code"]), "{what}: {body}");
            assert_eq!(body["status"], 405, "{what}");
        }
    }
}
