//! The operations listener (`server.ops_listen`): `/healthz`, `/readyz` and
//! `/metrics` are served there and answer `404 route-not-found` on the API
//! listener; plain HTTP, or TLS with the server's certificate and no client
//! certificate asked for (`server.ops_tls`); one broker behind both
//! listeners, stopped together.

use std::sync::Arc;

use caf_broker::clock::SystemClock;

use crate::helpers::{assert_problem, spawn_app_with, spawn_stoppable_app};
use crate::upstream::{broker_in_front_of, caf};

const AGENT: &str = "agent_consulaire";
const RADIATION: &str = "verification_radiation";
const OPS_LISTEN: (&str, &str) = ("CAF_BROKER__SERVER__OPS_LISTEN", "127.0.0.1:0");
const OPERATIONS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

#[tokio::test]
async fn health_readiness_and_metrics_move_to_the_operations_listener_and_are_404_on_the_api_listener()
 {
    let app = spawn_app_with(&[OPS_LISTEN]).await;
    let ops = app.ops_address.clone().expect("an operations listener");
    assert!(ops.starts_with("http://"), "{ops}");
    let plain = reqwest::Client::new();
    for path in OPERATIONS {
        let here = plain.get(format!("{ops}{path}")).send().await.unwrap();
        assert_eq!(here.status(), 200, "{path} on the operations listener");
        assert_eq!(here.headers()["cache-control"], "no-store");
        assert!(here.headers().contains_key("x-request-id"));
        let there = app
            .client
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_problem(there, 404, "route-not-found").await;
    }
    let metrics = plain
        .get(format!("{ops}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("caf_broker_http_requests_total"),
        "{metrics}"
    );

    // The API listener still serves the data and the document; the
    // operations listener serves neither.
    let served = app
        .get_dossier("1000002", &app.token(AGENT), RADIATION)
        .await;
    assert_eq!(served.status(), 200);
    let document = app
        .client
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(document.status(), 200);
    for path in ["/openapi.json", "/v1/allocataires/1000002"] {
        let elsewhere = plain.get(format!("{ops}{path}")).send().await.unwrap();
        assert_problem(elsewhere, 404, "route-not-found").await;
    }
    // A known operations path with another method is still 405 there.
    let posted = plain.post(format!("{ops}/readyz")).send().await.unwrap();
    assert_eq!(posted.headers()["allow"], "GET");
    assert_problem(posted, 405, "method-not-allowed").await;
}

#[tokio::test]
async fn the_operations_listener_reports_the_readiness_of_the_broker_behind_the_api_listener() {
    let caf = caf(0, 1.0).await;
    let app = broker_in_front_of(
        &caf,
        &[
            OPS_LISTEN,
            ("CAF_BROKER__UPSTREAM__RETRIES", "0"),
            ("CAF_BROKER__UPSTREAM__BREAKER_FAILURES", "2"),
        ],
    )
    .await;
    let ops = app.ops_address.clone().expect("an operations listener");
    let plain = reqwest::Client::new();
    let ready = plain.get(format!("{ops}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    // Two failures through the API listener open the circuit...
    let token = app.token(AGENT);
    for numero in ["1000001", "1000002"] {
        let failed = app.get_dossier(numero, &token, RADIATION).await;
        assert_problem(failed, 502, "upstream-error").await;
    }
    // ...which the operations listener reports: one broker behind both.
    let ready = plain.get(format!("{ops}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["upstream"]["status"], "failing");
}

#[tokio::test]
async fn with_ops_tls_the_operations_listener_serves_the_server_certificate_without_asking_a_client_one()
 {
    let app = spawn_app_with(&[
        OPS_LISTEN,
        ("CAF_BROKER__SERVER__OPS_TLS", "true"),
        ("CAF_BROKER__SERVER__CLIENT_AUTH", "required"),
    ])
    .await;
    let ops = app.ops_address.clone().expect("an operations listener");
    assert!(ops.starts_with("https://"), "{ops}");
    // The client trusts the development CA and has no certificate of its own.
    for path in OPERATIONS {
        let here = app.client.get(format!("{ops}{path}")).send().await.unwrap();
        assert_eq!(
            here.status(),
            200,
            "{path} over TLS on the operations listener"
        );
    }
    let api = app
        .client
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await;
    assert!(
        api.is_err(),
        "the API listener requires a client certificate"
    );
    let plain = reqwest::Client::new()
        .get(format!("{}/healthz", ops.replace("https://", "http://")))
        .send()
        .await;
    assert!(
        plain.map(|r| !r.status().is_success()).unwrap_or(true),
        "plain HTTP to the TLS operations port must fail"
    );
}

#[tokio::test]
async fn stopping_the_broker_closes_both_listeners() {
    let broker = spawn_stoppable_app(&[OPS_LISTEN], Arc::new(SystemClock)).await;
    let app = &broker.app;
    let port = |address: &str| -> u16 { address.rsplit(':').next().unwrap().parse().unwrap() };
    let api_port = port(&app.address);
    let ops = app.ops_address.clone().expect("an operations listener");
    let ops_port = port(&ops);
    assert_ne!(api_port, ops_port);
    let healthy = reqwest::get(format!("{ops}/healthz")).await.unwrap();
    assert_eq!(healthy.status(), 200);
    let document = app
        .client
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(document.status(), 200);

    // Returns once the accepting thread, which owns both sockets, has ended.
    broker.stop().await;
    for port in [api_port, ops_port] {
        let connected = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
        assert!(
            connected.is_err(),
            "port {port} still accepts after the stop"
        );
    }
}
