//! The transport: TLS 1.2 and 1.3 with the dev certificate, plain HTTP only when configured.

use crate::helpers::{repo, spawn_app, spawn_app_with};

fn client_with_max(version: reqwest::tls::Version) -> reqwest::Client {
    let ca = std::fs::read(repo("certs-dev/ca.pem")).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .max_tls_version(version)
        .tls_info(true)
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_broker_speaks_tls_1_2_and_1_3() {
    let app = spawn_app().await;
    for version in [
        reqwest::tls::Version::TLS_1_2,
        reqwest::tls::Version::TLS_1_3,
    ] {
        let response = client_with_max(version)
            .get(format!("{}/healthz", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response
                .extensions()
                .get::<reqwest::tls::TlsInfo>()
                .is_some(),
            "a TLS session was used"
        );
    }
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_dev_ca_cannot_connect() {
    let app = spawn_app().await;
    let other_ca = std::fs::read(repo("certs-dev/client-TN-TUNIS.pem")).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&other_ca).unwrap()])
        .build()
        .unwrap();
    assert!(
        client
            .get(format!("{}/healthz", app.address))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn plain_http_is_served_only_when_tls_is_turned_off() {
    let app = spawn_app_with(&[
        ("CAF_BROKER__SERVER__TLS", "false"),
        ("CAF_BROKER__SERVER__CLIENT_AUTH", "off"),
    ])
    .await;
    assert!(app.address.starts_with("http://"));
    let response = reqwest::Client::new()
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let tls_app = spawn_app().await;
    let plain = tls_app.address.replace("https://", "http://");
    let refused = reqwest::Client::new()
        .get(format!("{plain}/healthz"))
        .send()
        .await;
    assert!(
        refused.map(|r| !r.status().is_success()).unwrap_or(true),
        "plain HTTP to the TLS port must fail"
    );
}
