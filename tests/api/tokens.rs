//! Token abuse: every forged, stale or misdirected token is refused with 401
//! and `WWW-Authenticate: Bearer error="invalid_token"`.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, repo, spawn_app};

const ISSUER: &str = "https://idp.diplomatie.gouv.fr/dev";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn good_claims() -> Value {
    json!({
        "iss": ISSUER, "aud": "caf-broker", "sub": "agent-42",
        "post": "TN-TUNIS", "role": "agent_consulaire",
        "iat": now(), "exp": now() + 600,
    })
}

fn sign_with(key_file: &str, kid: &str, claims: &Value) -> String {
    caf_broker::auth::install_crypto_provider();
    let pem = std::fs::read(repo(key_file)).unwrap();
    let (key, alg) = match EncodingKey::from_ed_pem(&pem) {
        Ok(key) => (key, Algorithm::EdDSA),
        Err(_) => (EncodingKey::from_ec_pem(&pem).unwrap(), Algorithm::ES256),
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    encode(&header, claims, &key).unwrap()
}

fn sign(claims: &Value) -> String {
    sign_with("certs-dev/jwt-signing.key.pem", "dev-2026", claims)
}

fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

async fn assert_refused(app: &TestApp, token: &str) -> Value {
    let response = app
        .get_dossier("1000002", token, "verification_radiation")
        .await;
    assert_eq!(
        response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_string()),
        Some(r#"Bearer error="invalid_token""#.to_string())
    );
    let body = assert_problem(response, 401, "unauthenticated").await;
    assert!(
        !body.to_string().contains(token),
        "the token must not be echoed"
    );
    body
}

#[tokio::test]
async fn a_well_signed_token_is_accepted() {
    let app = spawn_app().await;
    let response = app
        .get_dossier("1000002", &sign(&good_claims()), "verification_radiation")
        .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_missing_or_malformed_token_is_refused() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!("{}/v1/allocataires/1000002", app.address))
        .header("X-Purpose", "verification_radiation")
        .header("X-Case-Reference", "C-1")
        .send()
        .await
        .unwrap();
    assert_problem(response, 401, "unauthenticated").await;
    for junk in ["abc", "a.b.c", "....", &"x".repeat(5000)] {
        assert_refused(&app, junk).await;
    }
}

#[tokio::test]
async fn an_unsigned_token_with_alg_none_is_refused() {
    let app = spawn_app().await;
    let header = b64url(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64url(good_claims().to_string().as_bytes());
    assert_refused(&app, &format!("{header}.{payload}.")).await;
    assert_refused(&app, &format!("{header}.{payload}")).await;
}

#[tokio::test]
async fn an_hmac_token_keyed_with_the_public_key_is_refused() {
    let app = spawn_app().await;
    let jwks = std::fs::read(repo("certs-dev/jwks.json")).unwrap();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("dev-2026".into());
    let token = encode(&header, &good_claims(), &EncodingKey::from_secret(&jwks)).unwrap();
    assert_refused(&app, &token).await;
}

#[tokio::test]
async fn a_tampered_payload_is_refused() {
    let app = spawn_app().await;
    let token = sign(&good_claims());
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims = good_claims();
    claims["role"] = json!("assistant_social");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64url(claims.to_string().as_bytes()),
        parts[2]
    );
    assert_refused(&app, &forged).await;
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_refused_beyond_the_leeway() {
    let app = spawn_app().await;
    let mut expired = good_claims();
    expired["iat"] = json!(now() - 7200);
    expired["exp"] = json!(now() - 3600);
    assert_refused(&app, &sign(&expired)).await;

    let mut early = good_claims();
    early["nbf"] = json!(now() + 3600);
    assert_refused(&app, &sign(&early)).await;
}

#[tokio::test]
async fn a_token_for_another_issuer_or_audience_is_refused() {
    let app = spawn_app().await;
    let mut wrong_iss = good_claims();
    wrong_iss["iss"] = json!("https://evil.example");
    assert_refused(&app, &sign(&wrong_iss)).await;

    let mut wrong_aud = good_claims();
    wrong_aud["aud"] = json!("another-api");
    assert_refused(&app, &sign(&wrong_aud)).await;

    let mut aud_list = good_claims();
    aud_list["aud"] = json!(["another-api", "caf-broker"]);
    let ok = app
        .get_dossier("1000002", &sign(&aud_list), "verification_radiation")
        .await;
    assert_eq!(
        ok.status(),
        200,
        "an audience list containing caf-broker is accepted"
    );
}

#[tokio::test]
async fn a_token_signed_by_a_key_outside_the_jwks_is_refused() {
    let app = spawn_app().await;
    assert_refused(
        &app,
        &sign_with("certs-dev/jwt-other.key.pem", "dev-2026", &good_claims()),
    )
    .await;
    assert_refused(
        &app,
        &sign_with("certs-dev/jwt-other.key.pem", "unknown-kid", &good_claims()),
    )
    .await;
}

#[tokio::test]
async fn an_es256_key_of_the_jwks_is_accepted() {
    let app = spawn_app().await;
    let token = sign_with("certs-dev/jwt-es256.key.pem", "dev-es256", &good_claims());
    let response = app
        .get_dossier("1000002", &token, "verification_radiation")
        .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn required_claims_must_be_present_and_well_formed() {
    let app = spawn_app().await;
    for claim in ["sub", "post", "role", "exp", "iat"] {
        let mut claims = good_claims();
        claims.as_object_mut().unwrap().remove(claim);
        assert_refused(&app, &sign(&claims)).await;
    }
    let mut bad_post = good_claims();
    bad_post["post"] = json!("tunis lowercase");
    assert_refused(&app, &sign(&bad_post)).await;
}

#[tokio::test]
async fn a_role_the_policy_does_not_define_is_refused() {
    let app = spawn_app().await;
    assert_refused(&app, &app.token("administrateur")).await;
}
