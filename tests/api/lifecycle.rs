//! The token lifecycle through the real broker: maximum lifetime, header
//! `typ`, allowed clients, revocation (a file edited while the broker runs,
//! and the shared set in a real Redis), a key withdrawn from a JWKS served
//! over HTTPS, and 401 answers that do not tell their causes apart.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use crate::audit_files::records;
use crate::helpers::{TestApp, fresh_dir, repo, spawn_app_tweaked, spawn_app_with};
use crate::redis_server::RedisServer;

const ISSUER: &str = "https://idp.diplomatie.gouv.fr/dev";
const PURPOSE: &str = "verification_radiation";

/// How long a test waits for a reload or a refresh, polling every 25 ms.
const POLLS: usize = 400;
const POLL: Duration = Duration::from_millis(25);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(jti: &str) -> Value {
    json!({
        "iss": ISSUER, "aud": "caf-broker", "sub": "agent-42",
        "post": "TN-TUNIS", "role": "agent_consulaire",
        "iat": now(), "exp": now() + 600, "jti": jti,
    })
}

fn with(mut claims: Value, name: &str, value: Value) -> Value {
    claims[name] = value;
    claims
}

/// Signed with a dev key of `certs-dev/` under `kid`, with the header `typ` given.
fn sign_as(key_file: &str, kid: &str, typ: Option<&str>, claims: &Value) -> String {
    caf_broker::auth::install_crypto_provider();
    let pem = std::fs::read(repo(key_file)).unwrap();
    let (key, alg) = match EncodingKey::from_ed_pem(&pem) {
        Ok(key) => (key, Algorithm::EdDSA),
        Err(_) => (EncodingKey::from_ec_pem(&pem).unwrap(), Algorithm::ES256),
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    header.typ = typ.map(str::to_owned);
    encode(&header, claims, &key).unwrap()
}

fn sign(claims: &Value) -> String {
    sign_as(
        "certs-dev/jwt-signing.key.pem",
        "dev-2026",
        Some("at+jwt"),
        claims,
    )
}

async fn status(app: &TestApp, token: &str) -> u16 {
    app.get_dossier("1000002", token, PURPOSE)
        .await
        .status()
        .as_u16()
}

/// Asks until the broker answers `expected`, a bounded number of times.
async fn until_status(app: &TestApp, token: &str, expected: u16) {
    let mut last = 0;
    for _ in 0..POLLS {
        last = status(app, token).await;
        if last == expected {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
    panic!("the broker still answers {last}, not {expected}");
}

/// The 401 body without its request id, and the `WWW-Authenticate` field.
async fn refusal(response: reqwest::Response) -> (u16, Option<String>, Value) {
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let mut body: Value = response.json().await.unwrap();
    body.as_object_mut().unwrap().remove("request_id");
    (status, challenge, body)
}

#[tokio::test]
async fn every_lifecycle_rule_refuses_with_401_and_counts_its_cause() {
    let app = spawn_app_with(&[(
        "CAF_BROKER__AUTH__ALLOWED_CLIENTS",
        r#"["visa-app", "caf-broker-token"]"#,
    )])
    .await;
    let client = |jti: &str| with(claims(jti), "azp", json!("visa-app"));
    assert_eq!(status(&app, &sign(&client("accepted"))).await, 200);
    assert_eq!(
        status(&app, &app.token("agent_consulaire")).await,
        200,
        "dev tokens carry a listed client_id"
    );

    let cases = [
        (
            "lifetime",
            sign(&with(client("long"), "exp", json!(now() + 43_201))),
        ),
        (
            "not_yet_valid",
            sign(&with(client("future"), "iat", json!(now() + 300))),
        ),
        (
            "type",
            sign_as(
                "certs-dev/jwt-signing.key.pem",
                "dev-2026",
                Some("id_token+jwt"),
                &client("typ"),
            ),
        ),
        (
            "client",
            sign(&with(claims("other"), "azp", json!("other-app"))),
        ),
        ("client", sign(&claims("no-client"))),
    ];
    for (cause, token) in cases {
        let series = format!(r#"caf_broker_auth_failures_total{{cause="{cause}"}}"#);
        let before = app.counter(&series).await;
        assert_eq!(status(&app, &token).await, 401, "{cause}");
        assert!(app.counter(&series).await > before, "{cause} is counted");
    }
}

#[tokio::test]
async fn a_401_answer_is_the_same_whatever_the_cause() {
    let app = spawn_app_with(&[]).await;
    let mut expired = claims("expired");
    expired["iat"] = json!(now() - 7_200);
    expired["exp"] = json!(now() - 3_600);
    let tokens = [
        "not-a-jwt".to_owned(),
        sign(&expired),
        sign(&with(claims("iss"), "iss", json!("https://evil.example"))),
        sign(&with(claims("aud"), "aud", json!("another-api"))),
        sign_as(
            "certs-dev/jwt-other.key.pem",
            "unknown-kid",
            Some("at+jwt"),
            &claims("kid"),
        ),
        sign_as(
            "certs-dev/jwt-other.key.pem",
            "dev-2026",
            Some("at+jwt"),
            &claims("sig"),
        ),
        sign(&with(claims("long"), "exp", json!(now() + 43_201))),
        sign_as(
            "certs-dev/jwt-signing.key.pem",
            "dev-2026",
            None,
            &claims("typ"),
        ),
        app.token("administrateur"),
    ];
    let mut answers = Vec::new();
    for token in &tokens {
        answers.push(refusal(app.get_dossier("1000002", token, PURPOSE).await).await);
    }
    let missing = app
        .client
        .get(format!("{}/v1/allocataires/1000002", app.address))
        .header("X-Purpose", PURPOSE)
        .header("X-Case-Reference", "TN-2026/0042")
        .send()
        .await
        .unwrap();
    answers.push(refusal(missing).await);

    let first = &answers[0];
    assert_eq!(first.0, 401);
    assert_eq!(first.1.as_deref(), Some(r#"Bearer error="invalid_token""#));
    for (index, answer) in answers.iter().enumerate() {
        assert_eq!(answer, first, "answer {index} tells its cause apart");
    }
    let text = first.2.to_string();
    for leak in ["kid", "iss", "expired", "role", ISSUER] {
        assert!(!text.contains(leak), "{leak} in {text}");
    }
}

#[tokio::test]
async fn a_jti_revoked_in_the_file_while_the_broker_runs_is_refused_though_cached() {
    let dir = fresh_dir("revoked");
    let file = dir.join("revoked-jti.txt");
    std::fs::write(&file, "# revoked token ids\n").unwrap();
    let app =
        spawn_app_with(&[("CAF_BROKER__AUTH__REVOKED_JTI_FILE", file.to_str().unwrap())]).await;
    let (stolen, other) = (sign(&claims("stolen-1")), sign(&claims("kept-1")));
    assert_eq!(status(&app, &stolen).await, 200);
    assert_eq!(
        status(&app, &stolen).await,
        200,
        "now served from the cache"
    );

    // Written as an editor saves: another file renamed over it.
    let next = dir.join("revoked-jti.txt.new");
    std::fs::write(&next, "# revoked token ids\nstolen-1\n").unwrap();
    std::fs::rename(&next, &file).unwrap();
    until_status(&app, &stolen, 401).await;
    assert_eq!(status(&app, &other).await, 200);

    let series = r#"caf_broker_auth_failures_total{cause="revoked"}"#;
    assert!(app.counter(series).await >= 1.0);
    let audited: Vec<_> = records(&app.audit_dir)
        .into_iter()
        .filter_map(|record| record.jti)
        .collect();
    assert!(audited.contains(&"stolen-1".to_owned()), "{audited:?}");
    assert!(audited.contains(&"kept-1".to_owned()), "{audited:?}");
}

#[tokio::test]
async fn a_jti_in_the_shared_redis_set_is_refused_until_its_entry_expires() {
    let redis = RedisServer::start();
    let app = spawn_app_with(&[
        ("CAF_BROKER__QUOTAS__BACKEND", "redis"),
        ("CAF_BROKER__QUOTAS__REDIS_URL", &redis.url()),
        ("CAF_BROKER__AUTH__REVOKED_JTI_REFRESH_MS", "100"),
    ])
    .await;
    let (stolen, stale) = (sign(&claims("stolen-2")), sign(&claims("stale-2")));
    assert_eq!(status(&app, &stolen).await, 200);
    assert_eq!(status(&app, &stale).await, 200);

    let mut redis_connection = redis.connection().await;
    let key = caf_broker::auth::SHARED_REVOKED_JTI_KEY;
    let _: () = redis::pipe()
        .cmd("ZADD")
        .arg(key)
        .arg(now() + 600)
        .arg("stolen-2")
        .cmd("ZADD")
        .arg(key)
        .arg(now() - 1)
        .arg("stale-2")
        .query_async(&mut redis_connection)
        .await
        .unwrap();
    until_status(&app, &stolen, 401).await;
    assert_eq!(
        status(&app, &stale).await,
        200,
        "an entry past its time is no revocation"
    );
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query_async(&mut redis_connection)
        .await
        .unwrap();
    assert_eq!(members, ["stolen-2"], "the stale entry was pruned");
}

/// A JWKS over HTTPS (the dev server certificate, signed by the dev CA) whose
/// body the test switches while it runs.
struct HttpsJwks {
    url: String,
    body: Arc<Mutex<String>>,
    server: actix_web::dev::ServerHandle,
}

impl HttpsJwks {
    fn start(body: String) -> Self {
        use actix_web::{App, HttpResponse, HttpServer, web};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let tls = caf_broker::tls::server_config(
            &repo("certs-dev/server.pem"),
            &repo("certs-dev/server.key.pem"),
        )
        .expect("the dev server certificate");
        let body = Arc::new(Mutex::new(body));
        let serving = body.clone();
        let server = HttpServer::new(move || {
            let serving = serving.clone();
            App::new().route(
                "/jwks.json",
                web::get().to(move || {
                    let body = serving.lock().unwrap().clone();
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
        tokio::spawn(server);
        HttpsJwks {
            url: format!("https://127.0.0.1:{port}/jwks.json"),
            body,
            server: handle,
        }
    }

    fn serve(&self, body: String) {
        *self.body.lock().unwrap() = body;
    }
}

fn dev_jwks(kids: &[&str]) -> String {
    let jwks: Value =
        serde_json::from_slice(&std::fs::read(repo("certs-dev/jwks.json")).unwrap()).unwrap();
    let keys: Vec<&Value> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|key| kids.iter().any(|kid| key["kid"] == *kid))
        .collect();
    assert_eq!(keys.len(), kids.len());
    json!({ "keys": keys }).to_string()
}

#[tokio::test]
async fn a_key_withdrawn_from_the_https_jwks_takes_its_cached_tokens_with_it() {
    let jwks = HttpsJwks::start(dev_jwks(&["dev-2026", "dev-es256"]));
    let url = jwks.url.clone();
    let app = spawn_app_tweaked(&[], move |settings| {
        settings.auth.jwks_file = None;
        settings.auth.jwks_url = Some(url);
        settings.auth.jwks_ca_file = Some(repo("certs-dev/ca.pem"));
    })
    .await;
    let withdrawn = sign(&claims("withdrawn-key"));
    let kept = sign_as(
        "certs-dev/jwt-es256.key.pem",
        "dev-es256",
        Some("at+jwt"),
        &claims("kept-key"),
    );
    assert_eq!(status(&app, &withdrawn).await, 200);
    assert_eq!(
        status(&app, &withdrawn).await,
        200,
        "now served from the cache"
    );
    assert_eq!(status(&app, &kept).await, 200);

    jwks.serve(dev_jwks(&["dev-es256"]));
    // A token naming a kid the broker does not know asks for an early refresh.
    let unknown = sign_as(
        "certs-dev/jwt-other.key.pem",
        "rotated-in",
        Some("at+jwt"),
        &claims("unknown-kid"),
    );
    assert_eq!(status(&app, &unknown).await, 401);
    until_status(&app, &withdrawn, 401).await;
    assert_eq!(status(&app, &kept).await, 200);
    let series = r#"caf_broker_auth_failures_total{cause="unknown_key"}"#;
    assert!(app.counter(series).await >= 2.0);
    jwks.server.stop(false).await;
}
