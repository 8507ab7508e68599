//! The authenticator with its keys fetched from `auth.jwks_url`: a small HTTP
//! server on a free loopback port serves a JWKS that the tests switch, to show
//! the first fetch, the early refresh on an unknown `kid`, and that a failing
//! server leaves the last good keys in place.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use caf_broker::auth::{
    AuthError, AuthSettings, AuthSetupError, Authenticator, DevClaims, mint_dev_token,
};
use caf_broker::telemetry::Metrics;
use serde_json::{Value, json};

const ISSUER: &str = "https://idp.diplomatie.gouv.fr/dev";

/// Early refreshes may follow each other this closely in these tests.
const EARLY_REFRESH_INTERVAL: Duration = Duration::from_millis(20);

/// How long a test waits for the background refresh, polling every 25 ms.
const POLLS: usize = 200;
const POLL: Duration = Duration::from_millis(25);

fn cert(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("certs-dev")
        .join(name)
}

/// The development JWKS: `dev-2026` (EdDSA) and `dev-es256` (ES256).
fn full_jwks() -> String {
    match std::fs::read_to_string(cert("jwks.json")) {
        Ok(text) => text,
        Err(e) => panic!("certs-dev/jwks.json should be readable: {e}"),
    }
}

/// The development JWKS without `dev-2026`: only the ES256 key.
fn es256_only_jwks() -> String {
    let jwks: Value = serde_json::from_str(&full_jwks()).expect("the dev JWKS is JSON");
    let keys: Vec<Value> = jwks["keys"]
        .as_array()
        .expect("the dev JWKS has keys")
        .iter()
        .filter(|key| key["kid"] == "dev-es256")
        .cloned()
        .collect();
    assert_eq!(keys.len(), 1);
    json!({ "keys": keys }).to_string()
}

/// What the JWKS server answers, switchable while it runs.
struct Answer {
    status: u16,
    body: String,
}

/// A one-route HTTP/1.1 server on 127.0.0.1 answering every request with the
/// current [`Answer`], counting the requests.
#[derive(Clone)]
struct JwksServer {
    url: String,
    answer: Arc<Mutex<Answer>>,
    hits: Arc<AtomicUsize>,
}

impl JwksServer {
    fn start(body: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
        let port = listener.local_addr().expect("a bound address").port();
        let server = JwksServer {
            url: format!("http://127.0.0.1:{port}/.well-known/jwks.json"),
            answer: Arc::new(Mutex::new(Answer { status: 200, body })),
            hits: Arc::new(AtomicUsize::new(0)),
        };
        let serving = server.clone();
        // The thread ends with the test process.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                serving.answer(stream);
            }
        });
        server
    }

    fn answer(&self, mut stream: TcpStream) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut request = Vec::new();
        let mut buffer = [0u8; 1024];
        while !request.windows(4).any(|window| window == b"\r\n\r\n") {
            match stream.read(&mut buffer) {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buffer[..n]),
            }
        }
        self.hits.fetch_add(1, Ordering::SeqCst);
        let response = {
            let answer = self.answer.lock().expect("the answer lock");
            format!(
                "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                answer.status,
                answer.body.len(),
                answer.body
            )
        };
        let _ = stream.write_all(response.as_bytes());
    }

    fn serve(&self, status: u16, body: String) {
        *self.answer.lock().expect("the answer lock") = Answer { status, body };
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn settings(url: &str) -> AuthSettings {
    AuthSettings {
        issuer: ISSUER.to_owned(),
        audience: "caf-broker".to_owned(),
        jwks_file: None,
        jwks_url: Some(url.to_owned()),
        jwks_ca_file: None,
        jwks_refresh_secs: 300,
        jwks_timeout_ms: 2_000,
        algorithms: vec!["ES256".into(), "EdDSA".into(), "RS256".into()],
        leeway_secs: 30,
        token_cache_capacity: 100,
        max_token_lifetime_secs: 43_200,
        accepted_types: vec!["at+jwt".into(), "JWT".into()],
        allowed_clients: None,
        revoked_jti_file: None,
        revoked_jti_refresh_ms: 1_000,
        dev_signing_key_file: Some(cert("jwt-signing.key.pem")),
        dev_signing_kid: Some("dev-2026".to_owned()),
        require_bound_tokens: false,
    }
}

/// A fresh token (its own `jti`) signed with the dev Ed25519 key under `kid`.
fn token(settings: &AuthSettings, kid: &str) -> String {
    let mut settings = settings.clone();
    settings.dev_signing_kid = Some(kid.to_owned());
    let claims = DevClaims {
        sub: "agent.dupont".into(),
        post: "TN-TUNIS".into(),
        role: "agent_consulaire".into(),
        ttl_secs: 600,
    };
    match mint_dev_token(&settings, claims) {
        Ok(token) => token,
        Err(e) => panic!("the dev key should mint a token: {e}"),
    }
}

async fn connect(settings: &AuthSettings) -> Authenticator {
    match Authenticator::connect_with_early_refresh_interval(settings, EARLY_REFRESH_INTERVAL).await
    {
        Ok(auth) => auth,
        Err(e) => panic!("the JWKS server should give the authenticator its keys: {e}"),
    }
}

#[tokio::test]
async fn a_dev_token_is_accepted_with_the_keys_fetched_from_the_jwks_url() {
    let server = JwksServer::start(full_jwks());
    let settings = settings(&server.url);
    let auth = connect(&settings).await;
    assert_eq!(auth.key_count(), 2);
    assert_eq!(server.hits(), 1);

    let caller = auth
        .authenticate(&token(&settings, "dev-2026"))
        .expect("the dev token verifies with the fetched key");
    assert_eq!(caller.post.as_str(), "TN-TUNIS");
}

#[tokio::test]
async fn connect_through_the_public_constructor_fetches_the_keys() {
    let server = JwksServer::start(full_jwks());
    let settings = settings(&server.url);
    let auth = Authenticator::connect(&settings)
        .await
        .expect("the JWKS server answers");
    assert_eq!(auth.key_count(), 2);
    assert!(auth.authenticate(&token(&settings, "dev-2026")).is_ok());
}

#[tokio::test]
async fn a_rotated_in_key_is_picked_up_by_the_early_refresh_an_unknown_kid_asks_for() {
    let server = JwksServer::start(es256_only_jwks());
    let settings = settings(&server.url);
    let auth = connect(&settings).await;
    assert_eq!(auth.key_count(), 1);

    // Refused as before, without waiting for the refresh it asks for.
    assert_eq!(
        auth.authenticate(&token(&settings, "dev-2026")),
        Err(AuthError::UnknownKey)
    );

    server.serve(200, full_jwks());
    let token = token(&settings, "dev-2026");
    let mut outcome = auth.authenticate(&token);
    for _ in 0..POLLS {
        if outcome.is_ok() {
            break;
        }
        assert_eq!(outcome, Err(AuthError::UnknownKey));
        tokio::time::sleep(POLL).await;
        outcome = auth.authenticate(&token);
    }
    assert!(
        outcome.is_ok(),
        "the rotated-in key was not fetched: {outcome:?}"
    );
    assert_eq!(auth.key_count(), 2);
}

#[tokio::test]
async fn early_refreshes_are_rate_limited() {
    let server = JwksServer::start(es256_only_jwks());
    let settings = settings(&server.url);
    let auth =
        Authenticator::connect_with_early_refresh_interval(&settings, Duration::from_secs(3600))
            .await
            .expect("the JWKS server answers");
    let unknown = token(&settings, "dev-2026");
    assert_eq!(auth.authenticate(&unknown), Err(AuthError::UnknownKey));
    for _ in 0..POLLS {
        if server.hits() >= 2 {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(server.hits(), 2, "the first unknown kid refreshes at once");

    for _ in 0..20 {
        assert_eq!(auth.authenticate(&unknown), Err(AuthError::UnknownKey));
    }
    // Give a wrongly triggered refresh the time to reach the server.
    for _ in 0..4 {
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(
        server.hits(),
        2,
        "no second early refresh within the interval"
    );
}

/// The process's `caf_broker_jwks_refresh_failures_total`, as `/metrics` renders it.
fn refresh_failures(metrics: &Metrics) -> u64 {
    metrics
        .render()
        .lines()
        .find_map(|line| line.strip_prefix("caf_broker_jwks_refresh_failures_total "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no refresh failure counter in\n{}", metrics.render()))
}

#[tokio::test]
async fn a_failing_jwks_server_after_start_keeps_the_last_good_keys_and_counts_each_failure() {
    let metrics = Metrics::install().unwrap();
    let failures_before = refresh_failures(&metrics);
    let server = JwksServer::start(full_jwks());
    let settings = settings(&server.url);
    let auth = connect(&settings).await;
    assert!(auth.authenticate(&token(&settings, "dev-2026")).is_ok());

    server.serve(500, "{\"error\": \"down\"}".to_owned());
    // An unknown kid makes the authenticator fetch from the failing server.
    assert_eq!(
        auth.authenticate(&token(&settings, "not-in-the-set")),
        Err(AuthError::UnknownKey)
    );
    for _ in 0..POLLS {
        if server.hits() >= 2 {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(server.hits(), 2, "the early refresh reached the server");

    // Fresh tokens (never cached) keep verifying with the last good keys.
    for _ in 0..4 {
        tokio::time::sleep(POLL).await;
        assert!(auth.authenticate(&token(&settings, "dev-2026")).is_ok());
        assert_eq!(auth.key_count(), 2);
    }

    // A server answering garbage is no better a reason to drop the keys.
    server.serve(200, "not json".to_owned());
    assert_eq!(
        auth.authenticate(&token(&settings, "still-not-in-the-set")),
        Err(AuthError::UnknownKey)
    );
    for _ in 0..POLLS {
        if server.hits() >= 3 {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(server.hits(), 3);
    tokio::time::sleep(POLL).await;
    assert!(auth.authenticate(&token(&settings, "dev-2026")).is_ok());
    // The alert on failing refreshes reads this counter: both failures are in it.
    for _ in 0..POLLS {
        if refresh_failures(&metrics) - failures_before >= 2 {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(refresh_failures(&metrics) - failures_before, 2);
}

#[tokio::test]
async fn a_failing_first_fetch_fails_the_start() {
    let server = JwksServer::start(String::new());
    server.serve(503, String::new());
    let error = Authenticator::connect(&settings(&server.url))
        .await
        .expect_err("no keys, no start");
    assert!(
        matches!(error, AuthSetupError::FirstFetch { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("auth.jwks_url"), "{error}");
    assert!(error.to_string().contains("503"), "{error}");
}

#[tokio::test]
async fn a_first_answer_without_usable_key_fails_the_start() {
    let server = JwksServer::start(json!({ "keys": [] }).to_string());
    let error = Authenticator::connect(&settings(&server.url))
        .await
        .expect_err("no keys, no start");
    assert!(
        matches!(error, AuthSetupError::FirstFetch { .. }),
        "{error}"
    );
}

/// The full dev JWKS over HTTPS with the dev server certificate (signed by the
/// dev CA), on a free loopback port; the test stops it through the handle.
fn https_jwks_server() -> (String, actix_web::dev::ServerHandle) {
    use actix_web::{App, HttpResponse, HttpServer, web};
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    let port = listener.local_addr().expect("a bound address").port();
    let tls = caf_broker::tls::server_config(&cert("server.pem"), &cert("server.key.pem"))
        .expect("the dev server certificate");
    let body = full_jwks();
    let server = HttpServer::new(move || {
        let body = body.clone();
        App::new().route(
            "/jwks.json",
            web::get().to(move || {
                let body = body.clone();
                async move {
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .body(body)
                }
            }),
        )
    })
    .workers(1)
    .listen_rustls_0_23(listener, tls)
    .expect("listening with TLS")
    .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    (format!("https://127.0.0.1:{port}/jwks.json"), handle)
}

#[actix_web::test]
async fn an_https_jwks_url_is_trusted_through_the_configured_ca_only() {
    let (url, server) = https_jwks_server();
    let mut settings = settings(&url);
    settings.jwks_ca_file = Some(cert("ca.pem"));
    let auth = Authenticator::connect(&settings)
        .await
        .expect("the dev CA signs the server certificate");
    assert_eq!(auth.key_count(), 2);
    assert!(auth.authenticate(&token(&settings, "dev-2026")).is_ok());

    settings.jwks_ca_file = Some(cert("other-ca.pem"));
    let error = Authenticator::connect(&settings)
        .await
        .expect_err("another CA does not sign the server certificate");
    assert!(
        matches!(error, AuthSetupError::FirstFetch { .. }),
        "{error}"
    );
    server.stop(false).await;
}
