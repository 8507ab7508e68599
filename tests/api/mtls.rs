//! Mutual TLS and certificate-bound tokens through the real broker over real
//! TLS: clients that present the development certificates of `certs-dev/`
//! (or none, or one of another CA), over HTTP/1.1 and HTTP/2, on full and
//! resumed TLS sessions, and the audit records they leave.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use caf_broker::auth::{DevClaims, mint_bound_dev_token_at};
use caf_broker::tls::Thumbprint;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::audit_files::records;
use crate::helpers::{TestApp, assert_problem, repo, spawn_app_with};

const AGENT: &str = "agent_consulaire";
const PURPOSE: &str = "verification_radiation";

/// How a test client speaks to the broker.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Protocol {
    Http1,
    Http2,
}

/// An HTTPS client that trusts the development CA and presents the
/// certificate `certs-dev/<name>.pem` with its key, or no certificate.
fn client(identity: Option<&str>, protocol: Protocol) -> reqwest::Client {
    let ca = std::fs::read(repo("certs-dev/ca.pem")).unwrap();
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .pool_max_idle_per_host(0);
    if let Some(name) = identity {
        let mut pem = std::fs::read(repo(&format!("certs-dev/{name}.pem"))).unwrap();
        pem.extend(std::fs::read(repo(&format!("certs-dev/{name}.key.pem"))).unwrap());
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    builder = match protocol {
        Protocol::Http1 => builder.http1_only(),
        Protocol::Http2 => builder,
    };
    builder.build().unwrap()
}

/// The DER of the first certificate of `certs-dev/<name>.pem`, read
/// independently of the broker's own reader.
fn der(name: &str) -> Vec<u8> {
    let path = repo(&format!("certs-dev/{name}.pem"));
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// The SHA-256 of a certificate, as the audit record writes it.
fn fingerprint(name: &str) -> String {
    hex::encode(Sha256::digest(der(name)))
}

/// The broker with client certificates asked for as `client_auth` says,
/// the post read as `post_from` says, and the extra overrides.
async fn broker(client_auth: &str, post_from: &str, extra: &[(&str, &str)]) -> TestApp {
    let mut overrides = vec![
        ("CAF_BROKER__SERVER__CLIENT_AUTH", client_auth),
        ("CAF_BROKER__SERVER__CLIENT_POST_FROM", post_from),
    ];
    overrides.extend_from_slice(extra);
    spawn_app_with(&overrides).await
}

/// `GET` a fixed dossier with `token` through `client`.
async fn get(
    app: &TestApp,
    client: &reqwest::Client,
    token: &str,
) -> reqwest::Result<reqwest::Response> {
    client
        .get(format!("{}/v1/allocataires/1000002", app.address))
        .bearer_auth(token)
        .header("X-Purpose", PURPOSE)
        .header("X-Case-Reference", "TN-2026/0042")
        .send()
        .await
}

/// A token of `post` bound to the certificate `certs-dev/<name>.pem`.
fn bound_token(app: &TestApp, post: &str, name: &str) -> String {
    let claims = DevClaims {
        sub: "agent-42".into(),
        post: post.into(),
        role: AGENT.into(),
        ttl_secs: 3_600,
    };
    let thumbprint =
        Thumbprint::from_base64url(&URL_SAFE_NO_PAD.encode(Sha256::digest(der(name)))).unwrap();
    mint_bound_dev_token_at(&app.settings.auth, claims, thumbprint, app.clock.as_ref()).unwrap()
}

/// Asserts a `401 unauthenticated` that tells the client its token is refused.
async fn assert_token_refused(response: reqwest::Response) {
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer error="invalid_token""#
    );
    assert_problem(response, 401, "unauthenticated").await;
}

#[tokio::test]
async fn a_consular_application_presenting_its_posts_certificate_is_served_and_audited_with_it() {
    let app = broker("required", "cn", &[]).await;
    let token = app.token_for("TN-TUNIS", AGENT);
    for protocol in [Protocol::Http1, Protocol::Http2] {
        let response = get(&app, &client(Some("client-TN-TUNIS"), protocol), &token)
            .await
            .unwrap();
        let expected = match protocol {
            Protocol::Http1 => reqwest::Version::HTTP_11,
            Protocol::Http2 => reqwest::Version::HTTP_2,
        };
        assert_eq!(response.version(), expected);
        assert_eq!(response.status(), 200, "{protocol:?}");
    }
    let log = records(&app.audit_dir);
    assert_eq!(log.len(), 2);
    for record in log {
        assert_eq!(record.outcome, caf_broker::audit::Outcome::Released);
        assert_eq!(
            record.client_cert_sha256.as_deref(),
            Some(fingerprint("client-TN-TUNIS").as_str())
        );
        assert_eq!(record.client_post.as_deref(), Some("TN-TUNIS"));
    }
}

#[tokio::test]
async fn a_token_of_another_post_than_the_certificates_is_refused_and_audited_with_both_posts() {
    let app = broker("optional", "cn", &[]).await;
    let token = app.token_for("MA-RABAT", AGENT);
    for protocol in [Protocol::Http1, Protocol::Http2] {
        let response = get(&app, &client(Some("client-TN-TUNIS"), protocol), &token)
            .await
            .unwrap();
        assert_token_refused(response).await;
    }
    let log = records(&app.audit_dir);
    assert_eq!(log.len(), 2, "one record per refused request");
    for record in log {
        assert_eq!(record.outcome, caf_broker::audit::Outcome::Unauthenticated);
        assert_eq!(record.status, 401);
        assert_eq!(record.post.as_deref(), Some("MA-RABAT"));
        assert_eq!(record.client_post.as_deref(), Some("TN-TUNIS"));
        assert_eq!(record.purpose.as_deref(), Some(PURPOSE));
        assert_eq!(
            record.client_cert_sha256.as_deref(),
            Some(fingerprint("client-TN-TUNIS").as_str())
        );
        assert!(record.dossier.is_none() && record.released.is_empty());
    }
}

#[tokio::test]
async fn a_certificate_naming_no_post_is_refused_when_the_post_is_read_from_it() {
    // client-uri-MA-RABAT has CN=consular-app, which is no post code.
    let app = broker("optional", "cn", &[]).await;
    let token = app.token_for("MA-RABAT", AGENT);
    let response = get(
        &app,
        &client(Some("client-uri-MA-RABAT"), Protocol::Http2),
        &token,
    )
    .await
    .unwrap();
    assert_token_refused(response).await;
    let record = records(&app.audit_dir).pop().unwrap();
    assert_eq!(record.post.as_deref(), Some("MA-RABAT"));
    assert_eq!(record.client_post, None);
    assert_eq!(
        record.client_cert_sha256.as_deref(),
        Some(fingerprint("client-uri-MA-RABAT").as_str())
    );
}

#[tokio::test]
async fn the_post_is_read_from_a_san_uri_when_configured_so() {
    let app = broker("required", "san_uri", &[]).await;
    let rabat = app.token_for("MA-RABAT", AGENT);
    let response = get(
        &app,
        &client(Some("client-uri-MA-RABAT"), Protocol::Http2),
        &rabat,
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    // client-TN-TUNIS names its post in its CN only: no URI, no post.
    let tunis = app.token_for("TN-TUNIS", AGENT);
    let response = get(
        &app,
        &client(Some("client-TN-TUNIS"), Protocol::Http2),
        &tunis,
    )
    .await
    .unwrap();
    assert_token_refused(response).await;
    let posts: Vec<_> = records(&app.audit_dir)
        .into_iter()
        .map(|r| (r.post, r.client_post))
        .collect();
    assert_eq!(
        posts,
        [
            (Some("MA-RABAT".into()), Some("MA-RABAT".into())),
            (Some("TN-TUNIS".into()), None)
        ]
    );
}

#[tokio::test]
async fn with_client_post_from_none_the_certificate_is_recorded_but_not_compared() {
    let app = broker("required", "none", &[]).await;
    let token = app.token_for("MA-RABAT", AGENT);
    let response = get(
        &app,
        &client(Some("client-TN-TUNIS"), Protocol::Http2),
        &token,
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let record = records(&app.audit_dir).pop().unwrap();
    assert_eq!(record.client_post, None);
    assert_eq!(
        record.client_cert_sha256.as_deref(),
        Some(fingerprint("client-TN-TUNIS").as_str())
    );
}

#[tokio::test]
async fn under_required_client_auth_a_client_without_a_certificate_cannot_connect() {
    let app = broker("required", "cn", &[]).await;
    let token = app.token_for("TN-TUNIS", AGENT);
    for protocol in [Protocol::Http1, Protocol::Http2] {
        let refused = get(&app, &client(None, protocol), &token).await;
        assert!(refused.is_err(), "{protocol:?}: {refused:?}");
    }
    assert!(records(&app.audit_dir).is_empty());
}

#[tokio::test]
async fn under_optional_client_auth_a_client_without_a_certificate_is_known_by_its_token_alone() {
    let app = broker("optional", "cn", &[]).await;
    let token = app.token_for("MA-RABAT", AGENT);
    let response = get(&app, &client(None, Protocol::Http2), &token)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let record = records(&app.audit_dir).pop().unwrap();
    assert_eq!(record.client_cert_sha256, None);
    assert_eq!(record.client_post, None);
}

#[tokio::test]
async fn a_certificate_of_another_ca_fails_the_handshake_whether_certificates_are_optional_or_required()
 {
    for client_auth in ["optional", "required"] {
        let app = broker(client_auth, "none", &[]).await;
        let token = app.token_for("TN-TUNIS", AGENT);
        for protocol in [Protocol::Http1, Protocol::Http2] {
            let refused = get(&app, &client(Some("client-other-ca"), protocol), &token).await;
            assert!(refused.is_err(), "{client_auth}, {protocol:?}: {refused:?}");
        }
        assert!(records(&app.audit_dir).is_empty());
    }
}

#[tokio::test]
async fn a_bound_token_is_accepted_only_over_a_connection_presenting_its_certificate() {
    // The post is not compared here: only the binding can refuse.
    let app = broker("optional", "none", &[]).await;
    let token = bound_token(&app, "TN-TUNIS", "client-TN-TUNIS");
    let right = client(Some("client-TN-TUNIS"), Protocol::Http2);
    let wrong = client(Some("client-MA-RABAT"), Protocol::Http1);
    let none = client(None, Protocol::Http2);
    assert_eq!(get(&app, &right, &token).await.unwrap().status(), 200);
    // Verified and cached with the right certificate: still refused with another one, or none.
    assert_token_refused(get(&app, &wrong, &token).await.unwrap()).await;
    assert_token_refused(get(&app, &none, &token).await.unwrap()).await;
    assert_eq!(get(&app, &right, &token).await.unwrap().status(), 200);
    // Refused tokens leave no record: only the two served requests are there.
    let served: Vec<_> = records(&app.audit_dir)
        .into_iter()
        .map(|r| (r.status, r.client_cert_sha256))
        .collect();
    let tunis = Some(fingerprint("client-TN-TUNIS"));
    assert_eq!(served, [(200, tunis.clone()), (200, tunis)]);
}

#[tokio::test]
async fn require_bound_tokens_refuses_an_unbound_token_even_with_a_valid_certificate() {
    let app = broker(
        "required",
        "cn",
        &[("CAF_BROKER__AUTH__REQUIRE_BOUND_TOKENS", "true")],
    )
    .await;
    let tunis = client(Some("client-TN-TUNIS"), Protocol::Http2);
    let unbound = app.token_for("TN-TUNIS", AGENT);
    assert_token_refused(get(&app, &tunis, &unbound).await.unwrap()).await;
    let bound = bound_token(&app, "TN-TUNIS", "client-TN-TUNIS");
    assert_eq!(get(&app, &tunis, &bound).await.unwrap().status(), 200);
}

/// A rustls client presenting `certs-dev/<name>.pem` over `version` only,
/// keeping its sessions to resume them.
fn resuming_client(
    name: &str,
    version: &'static rustls::SupportedProtocolVersion,
) -> Arc<rustls::ClientConfig> {
    caf_broker::tls::install_default_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(repo("certs-dev/ca.pem")).unwrap())
        .unwrap();
    let chain = vec![CertificateDer::from(der(name))];
    let key = PrivateKeyDer::from_pem_file(repo(&format!("certs-dev/{name}.key.pem"))).unwrap();
    let mut config =
        rustls::ClientConfig::builder_with_provider(Arc::new(caf_broker::tls::provider()))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// One HTTP/1.1 request for a fixed dossier over a new TLS connection:
/// how the handshake went and the answer's status line.
async fn over_new_connection(
    app: &TestApp,
    config: &Arc<rustls::ClientConfig>,
    token: &str,
) -> (Option<rustls::HandshakeKind>, String) {
    let port = app.address.rsplit(':').next().unwrap();
    let tcp = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(config.clone());
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let kind = tls.get_ref().1.handshake_kind();
    let request = format!(
        "GET /v1/allocataires/1000002 HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {token}\r\nX-Purpose: {PURPOSE}\r\n\
         X-Case-Reference: TN-2026/0042\r\nConnection: close\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    // The server closes after the answer; a missing close_notify is no matter here.
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    (kind, answer.lines().next().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn a_resumed_tls_session_still_carries_its_client_certificate() {
    let app = broker("optional", "cn", &[]).await;
    let tunis = app.token_for("TN-TUNIS", AGENT);
    let rabat = app.token_for("MA-RABAT", AGENT);
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let config = resuming_client("client-TN-TUNIS", version);
        let (first, status) = over_new_connection(&app, &config, &tunis).await;
        assert_eq!(first, Some(rustls::HandshakeKind::Full), "{version:?}");
        assert!(status.starts_with("HTTP/1.1 200"), "{version:?}: {status}");
        // Resumed: no certificate is sent again, yet the broker still knows
        // it, so the token of another post is still refused.
        let (second, status) = over_new_connection(&app, &config, &rabat).await;
        assert_eq!(second, Some(rustls::HandshakeKind::Resumed), "{version:?}");
        assert!(status.starts_with("HTTP/1.1 401"), "{version:?}: {status}");
    }
    let log = records(&app.audit_dir);
    let seen: Vec<_> = log
        .iter()
        .map(|r| (r.status, r.post.as_deref(), r.client_post.as_deref()))
        .collect();
    let tunis_served = (200, Some("TN-TUNIS"), Some("TN-TUNIS"));
    let rabat_refused = (401, Some("MA-RABAT"), Some("TN-TUNIS"));
    assert_eq!(
        seen,
        [tunis_served, rabat_refused, tunis_served, rabat_refused]
    );
    let fingerprint = fingerprint("client-TN-TUNIS");
    assert!(
        log.iter()
            .all(|r| r.client_cert_sha256.as_deref() == Some(fingerprint.as_str()))
    );
}
