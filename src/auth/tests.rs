//! Authentication tests against the real development keys of `certs-dev/`.

use std::path::PathBuf;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::cache::TokenCache;
use super::remote::{JwksSource, Refresher};
use super::*;
use crate::clock::ManualClock;

const ISSUER: &str = "https://idp.diplomatie.gouv.fr/dev";
const AUDIENCE: &str = "caf-broker";
/// A fixed "now" for tests that drive the clock.
const T0: u64 = 1_790_000_000;

fn certs(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("certs-dev")
        .join(file)
}

fn settings() -> AuthSettings {
    AuthSettings {
        issuer: ISSUER.to_owned(),
        audience: AUDIENCE.to_owned(),
        jwks_file: Some(certs("jwks.json")),
        jwks_url: None,
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
        dev_signing_key_file: Some(certs("jwt-signing.key.pem")),
        dev_signing_kid: Some("dev-2026".to_owned()),
        require_bound_tokens: false,
    }
}

/// The instant `secs` seconds after the Unix epoch.
fn at(secs: u64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(i64::try_from(secs).unwrap()).unwrap()
}

fn authenticator_at(start: u64, settings: &AuthSettings) -> (Arc<ManualClock>, Authenticator) {
    let now = Arc::new(ManualClock::new(at(start)));
    match Authenticator::with_clock(settings, now.clone()) {
        Ok(auth) => (now, auth),
        Err(e) => panic!("the dev settings should build an authenticator: {e}"),
    }
}

fn authenticator() -> Authenticator {
    authenticator_at(T0, &settings()).1
}

/// Claims valid at `now` for an agent of TN-TUNIS.
fn claims_at(now: u64) -> Value {
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "agent.dupont", "post": "TN-TUNIS",
        "role": "agent_consulaire", "iat": now, "exp": now + 600, "jti": "4f1c-test",
    })
}

fn without(mut claims: Value, name: &str) -> Value {
    if let Some(object) = claims.as_object_mut() {
        object.remove(name);
    }
    claims
}

fn with(mut claims: Value, name: &str, value: Value) -> Value {
    claims[name] = value;
    claims
}

fn encoding_key(file: &str, alg: Algorithm) -> EncodingKey {
    let pem = std::fs::read(certs(file)).unwrap();
    match alg {
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem).unwrap(),
        _ => EncodingKey::from_ec_pem(&pem).unwrap(),
    }
}

fn sign_with(claims: &Value, file: &str, alg: Algorithm, kid: Option<&str>) -> String {
    install_crypto_provider();
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &encoding_key(file, alg)).unwrap()
}

/// Signed with the dev Ed25519 key under its kid.
fn sign(claims: &Value) -> String {
    sign_with(
        claims,
        "jwt-signing.key.pem",
        Algorithm::EdDSA,
        Some("dev-2026"),
    )
}

fn caller_of_tn_tunis(expires_at: u64) -> Caller {
    Caller {
        sub: crate::domain::Subject::parse("agent.dupont").unwrap(),
        post: crate::domain::PostCode::parse("TN-TUNIS").unwrap(),
        role: crate::domain::Role::parse("agent_consulaire").unwrap(),
        expires_at,
        jti: Some("4f1c-test".to_owned()),
    }
}

/// Writes a JWKS for one test into the temp directory.
fn jwks_file(test: &str, jwks: &Value) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "caf-broker-auth-{}-{test}.json",
        std::process::id()
    ));
    std::fs::write(&path, jwks.to_string()).unwrap();
    path
}

fn dev_jwks_keys() -> Vec<Value> {
    let jwks: Value = serde_json::from_slice(&std::fs::read(certs("jwks.json")).unwrap()).unwrap();
    jwks["keys"].as_array().unwrap().clone()
}

/// The public JWK of `jwt-other.key.pem`, under the given kid.
fn other_public_jwk(kid: &str) -> Value {
    install_crypto_provider();
    let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(
        &encoding_key("jwt-other.key.pem", Algorithm::EdDSA),
        Algorithm::EdDSA,
    )
    .unwrap();
    let mut value = serde_json::to_value(jwk).unwrap();
    value["kid"] = json!(kid);
    value
}

// --- accepted tokens -----------------------------------------------------------

#[test]
fn a_token_minted_with_the_dev_key_authenticates() {
    let dev = DevClaims {
        sub: "agent.dupont".into(),
        post: "TN-TUNIS".into(),
        role: "agent_consulaire".into(),
        ttl_secs: 300,
    };
    let token = mint_dev_token(&settings(), dev).unwrap();
    let auth = Authenticator::new(&settings()).unwrap();

    let caller = auth.authenticate(&token).unwrap();

    assert_eq!(caller.post.as_str(), "TN-TUNIS");
    assert_eq!(caller.role.as_str(), "agent_consulaire");
    assert_eq!(caller.sub.as_str(), "agent.dupont");
    assert!(caller.jti.as_deref().is_some_and(|jti| !jti.is_empty()));
    let lifetime = caller.expires_at - unix_secs(&crate::clock::SystemClock);
    assert!((290..=300).contains(&lifetime), "{lifetime}");
}

#[test]
fn a_minted_token_names_the_dev_kid_and_the_key_algorithm() {
    let dev = DevClaims {
        sub: "a".into(),
        post: "MA-RABAT".into(),
        role: "assistant_social".into(),
        ttl_secs: 60,
    };
    let token = mint_dev_token(&settings(), dev).unwrap();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::EdDSA);
    assert_eq!(header.kid.as_deref(), Some("dev-2026"));
}

#[test]
fn an_es256_token_authenticates_with_the_p256_key_of_the_set() {
    let token = sign_with(
        &claims_at(T0),
        "jwt-es256.key.pem",
        Algorithm::ES256,
        Some("dev-es256"),
    );
    assert_eq!(
        authenticator().authenticate(&token),
        Ok(caller_of_tn_tunis(T0 + 600))
    );
}

#[test]
fn a_dev_token_minted_with_the_p256_key_is_es256_and_authenticates() {
    let mut settings = settings();
    settings.dev_signing_key_file = Some(certs("jwt-es256.key.pem"));
    settings.dev_signing_kid = Some("dev-es256".to_owned());
    let dev = DevClaims {
        sub: "a".into(),
        post: "MA-RABAT".into(),
        role: "assistant_social".into(),
        ttl_secs: 60,
    };
    let token = mint_dev_token(&settings, dev).unwrap();

    assert_eq!(
        jsonwebtoken::decode_header(&token).unwrap().alg,
        Algorithm::ES256
    );
    assert_eq!(
        Authenticator::new(&settings)
            .unwrap()
            .authenticate(&token)
            .map(|c| c.post.to_string()),
        Ok("MA-RABAT".into())
    );
}

#[test]
fn a_token_without_kid_uses_the_only_key_of_its_algorithm() {
    let eddsa = sign_with(
        &claims_at(T0),
        "jwt-signing.key.pem",
        Algorithm::EdDSA,
        None,
    );
    let es256 = sign_with(&claims_at(T0), "jwt-es256.key.pem", Algorithm::ES256, None);
    let auth = authenticator();
    assert!(auth.authenticate(&eddsa).is_ok());
    assert!(auth.authenticate(&es256).is_ok());
}

#[test]
fn an_audience_array_that_contains_the_broker_is_accepted() {
    let token = sign(&with(
        claims_at(T0),
        "aud",
        json!(["other-service", AUDIENCE]),
    ));
    assert!(authenticator().authenticate(&token).is_ok());
}

#[test]
fn a_token_without_jti_is_accepted_with_no_jti() {
    let token = sign(&without(claims_at(T0), "jti"));
    assert_eq!(
        authenticator().authenticate(&token).map(|c| c.jti),
        Ok(None)
    );
}

#[test]
fn a_rotated_in_key_verifies_its_tokens_by_kid() {
    let mut keys = dev_jwks_keys();
    keys.push(other_public_jwk("next-2027"));
    let mut settings = settings();
    settings.jwks_file = Some(jwks_file("rotation", &json!({ "keys": keys })));
    let (_, auth) = authenticator_at(T0, &settings);

    let old = sign(&claims_at(T0));
    let new = sign_with(
        &claims_at(T0),
        "jwt-other.key.pem",
        Algorithm::EdDSA,
        Some("next-2027"),
    );
    let kidless = sign_with(&claims_at(T0), "jwt-other.key.pem", Algorithm::EdDSA, None);

    assert!(auth.authenticate(&old).is_ok());
    assert!(auth.authenticate(&new).is_ok());
    // Two EdDSA keys: a token without kid names no key.
    assert_eq!(auth.authenticate(&kidless), Err(AuthError::UnknownKey));
}

// --- refused tokens ------------------------------------------------------------

#[test]
fn an_unsigned_token_with_alg_none_is_a_disallowed_algorithm() {
    let auth = authenticator();
    let payload = URL_SAFE_NO_PAD.encode(claims_at(T0).to_string().as_bytes());
    for header in [
        r#"{"alg":"none"}"#,
        r#"{"alg":"none","kid":"dev-2026"}"#,
        r#"{"alg":"None","typ":"JWT"}"#,
    ] {
        let token = format!("{}.{payload}.", URL_SAFE_NO_PAD.encode(header.as_bytes()));
        assert_eq!(
            auth.authenticate(&token),
            Err(AuthError::DisallowedAlgorithm),
            "{header}"
        );
    }
}

#[test]
fn an_hs256_token_keyed_with_the_public_key_is_a_disallowed_algorithm() {
    let auth = authenticator();
    let jwk = &dev_jwks_keys()[0];
    let raw_public_key = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
    let jwks_bytes = std::fs::read(certs("jwks.json")).unwrap();
    for secret in [raw_public_key.as_slice(), jwks_bytes.as_slice()] {
        for kid in [Some("dev-2026"), None] {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = kid.map(str::to_owned);
            install_crypto_provider();
            let token =
                jsonwebtoken::encode(&header, &claims_at(T0), &EncodingKey::from_secret(secret))
                    .unwrap();
            assert_eq!(
                auth.authenticate(&token),
                Err(AuthError::DisallowedAlgorithm)
            );
        }
    }
}

#[test]
fn hmac_in_the_allow_list_is_refused_at_setup_and_never_accepted() {
    let mut settings = settings();
    settings.algorithms = vec!["EdDSA".into(), "HS256".into()];
    assert!(
        matches!(Authenticator::new(&settings), Err(AuthSetupError::InvalidSettings(problems)) if problems.len() == 1)
    );
}

#[test]
fn an_algorithm_outside_the_allow_list_is_disallowed_even_with_a_valid_signature() {
    let mut settings = settings();
    settings.algorithms = vec!["EdDSA".into()];
    let (_, auth) = authenticator_at(T0, &settings);
    let token = sign_with(
        &claims_at(T0),
        "jwt-es256.key.pem",
        Algorithm::ES256,
        Some("dev-es256"),
    );
    assert_eq!(
        auth.authenticate(&token),
        Err(AuthError::DisallowedAlgorithm)
    );
}

#[test]
fn an_algorithm_that_does_not_match_the_named_key_is_disallowed() {
    // ES256 header naming the Ed25519 key: the key's type decides, not the header.
    let token = sign_with(
        &claims_at(T0),
        "jwt-es256.key.pem",
        Algorithm::ES256,
        Some("dev-2026"),
    );
    assert_eq!(
        authenticator().authenticate(&token),
        Err(AuthError::DisallowedAlgorithm)
    );
}

#[test]
fn a_tampered_payload_fails_the_signature_check() {
    let token = sign(&claims_at(T0));
    let mut parts = token.split('.');
    let (header, _, signature) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let forged = URL_SAFE_NO_PAD.encode(
        with(claims_at(T0), "role", json!("assistant_social"))
            .to_string()
            .as_bytes(),
    );
    let tampered = format!("{header}.{forged}.{signature}");
    assert_eq!(
        authenticator().authenticate(&tampered),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn a_token_signed_by_a_key_outside_the_set_is_refused() {
    let auth = authenticator();
    let claims = claims_at(T0);
    let under_dev_kid = sign_with(
        &claims,
        "jwt-other.key.pem",
        Algorithm::EdDSA,
        Some("dev-2026"),
    );
    let under_own_kid = sign_with(
        &claims,
        "jwt-other.key.pem",
        Algorithm::EdDSA,
        Some("attacker"),
    );
    let without_kid = sign_with(&claims, "jwt-other.key.pem", Algorithm::EdDSA, None);
    assert_eq!(
        auth.authenticate(&under_dev_kid),
        Err(AuthError::BadSignature)
    );
    assert_eq!(
        auth.authenticate(&under_own_kid),
        Err(AuthError::UnknownKey)
    );
    assert_eq!(
        auth.authenticate(&without_kid),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn an_expired_token_is_refused_beyond_the_leeway() {
    let token = sign(&with(claims_at(T0 - 1000), "exp", json!(T0 - 30)));
    assert_eq!(
        authenticator().authenticate(&token),
        Err(AuthError::Expired)
    );
}

#[test]
fn a_token_just_past_exp_is_accepted_within_the_leeway() {
    let token = sign(&with(claims_at(T0 - 1000), "exp", json!(T0 - 29)));
    assert!(authenticator().authenticate(&token).is_ok());
}

#[test]
fn a_token_whose_nbf_is_beyond_the_leeway_is_not_yet_valid() {
    let auth = authenticator();
    assert_eq!(
        auth.authenticate(&sign(&with(claims_at(T0), "nbf", json!(T0 + 31)))),
        Err(AuthError::NotYetValid)
    );
    assert!(
        auth.authenticate(&sign(&with(claims_at(T0), "nbf", json!(T0 + 30))))
            .is_ok()
    );
}

#[test]
fn a_token_issued_in_the_future_beyond_the_leeway_is_not_yet_valid() {
    let token = sign(&with(claims_at(T0), "iat", json!(T0 + 31)));
    assert_eq!(
        authenticator().authenticate(&token),
        Err(AuthError::NotYetValid)
    );
}

#[test]
fn a_wrong_issuer_is_refused() {
    let token = sign(&with(
        claims_at(T0),
        "iss",
        json!("https://idp.example.org"),
    ));
    assert_eq!(
        authenticator().authenticate(&token),
        Err(AuthError::WrongIssuer)
    );
}

#[test]
fn a_wrong_audience_is_refused() {
    let auth = authenticator();
    for aud in [
        json!("another-api"),
        json!(["another-api", "caf"]),
        json!([]),
    ] {
        let token = sign(&with(claims_at(T0), "aud", aud));
        assert_eq!(auth.authenticate(&token), Err(AuthError::WrongAudience));
    }
}

#[test]
fn each_required_claim_when_missing_is_named() {
    let auth = authenticator();
    for name in ["iss", "aud", "exp", "iat", "sub", "post", "role"] {
        let token = sign(&without(claims_at(T0), name));
        assert_eq!(
            auth.authenticate(&token),
            Err(AuthError::MissingClaim(name)),
            "{name}"
        );
    }
}

#[test]
fn an_invalid_post_value_is_an_invalid_claim() {
    let auth = authenticator();
    for post in [
        json!("tn-tunis"),
        json!(""),
        json!("TN TUNIS"),
        json!(42),
        json!(["TN-TUNIS"]),
    ] {
        let token = sign(&with(claims_at(T0), "post", post.clone()));
        assert_eq!(
            auth.authenticate(&token),
            Err(AuthError::InvalidClaim("post")),
            "{post}"
        );
    }
}

#[test]
fn invalid_role_sub_jti_and_dates_are_invalid_claims() {
    let auth = authenticator();
    let cases = [
        ("role", json!("Agent Consulaire")),
        ("sub", json!("has space")),
        ("jti", json!("")),
        ("jti", json!(7)),
        ("exp", json!("tomorrow")),
        ("iat", json!(-5)),
        ("nbf", json!(true)),
        ("iss", json!([ISSUER])),
    ];
    for (name, value) in cases {
        let token = sign(&with(claims_at(T0), name, value.clone()));
        assert_eq!(
            auth.authenticate(&token),
            Err(AuthError::InvalidClaim(name)),
            "{name} = {value}"
        );
    }
}

#[test]
fn tokens_that_are_not_three_base64url_json_parts_are_malformed() {
    let auth = authenticator();
    let good = sign(&claims_at(T0));
    let mut parts = good.split('.');
    let (header, payload, signature) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let crit =
        URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA","kid":"dev-2026","crit":["exp"],"exp":1}"#);
    let cases = [
        String::new(),
        "abc".to_owned(),
        format!("{header}.{payload}"),
        format!("{header}.{payload}.{signature}.x"),
        format!("{header}=.{payload}.{signature}"),
        format!(
            "{}.{payload}.{signature}",
            URL_SAFE_NO_PAD.encode(b"not json")
        ),
        format!(
            "{}.{payload}.{signature}",
            URL_SAFE_NO_PAD.encode(br#"{"kid":"dev-2026"}"#)
        ),
        format!("{crit}.{payload}.{signature}"),
        format!("{header}.{payload}.{signature}!"),
        "x".repeat(9000),
    ];
    for token in cases {
        assert_eq!(
            auth.authenticate(&token),
            Err(AuthError::Malformed),
            "{token:.40}"
        );
    }
}

#[test]
fn a_header_with_padding_another_alphabet_or_stray_bits_is_malformed_not_badly_signed() {
    let auth = authenticator();
    let good = sign(&claims_at(T0));
    let (_, rest) = good.split_once('.').unwrap();
    // `???` encodes to `Pz8_`, and the header's last quantum has three
    // characters, the last of which carries two spare bits.
    let header = br#"{"alg":"EdDSA","kid":"dev-2026","x":"???","y":"&"}"#;
    let canonical = URL_SAFE_NO_PAD.encode(header);
    assert!(
        canonical.contains('_') && canonical.len() % 4 == 3,
        "{canonical}"
    );
    // Well encoded, the header is read and only the signature fails.
    assert_eq!(
        auth.authenticate(&format!("{canonical}.{rest}")),
        Err(AuthError::BadSignature)
    );
    // The same bytes, with a spare bit set: a lenient decoder would read them alike.
    const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut stray_bits = canonical.clone();
    let last = stray_bits.pop().and_then(|c| ALPHABET.find(c)).unwrap();
    stray_bits.push(char::from(ALPHABET.as_bytes()[last ^ 1]));
    for header in [
        format!("{canonical}="),
        canonical.replace('_', "/"),
        stray_bits,
        format!("{canonical}AA"),
    ] {
        assert_eq!(
            auth.authenticate(&format!("{header}.{rest}")),
            Err(AuthError::Malformed),
            "{header}"
        );
    }
}

#[test]
fn error_messages_never_echo_claim_values() {
    let errors = [
        AuthError::Malformed,
        AuthError::DisallowedAlgorithm,
        AuthError::UnknownKey,
        AuthError::BadSignature,
        AuthError::Expired,
        AuthError::NotYetValid,
        AuthError::WrongIssuer,
        AuthError::WrongAudience,
        AuthError::MissingClaim("post"),
        AuthError::InvalidClaim("post"),
    ];
    for error in errors {
        let message = error.to_string();
        assert!(
            !message.contains("TN-TUNIS") && !message.contains("agent.dupont"),
            "{message}"
        );
        assert!(message.len() > 20, "{message}");
    }
}

// --- the cache of verified tokens -----------------------------------------------

#[test]
fn the_cache_returns_the_same_caller_on_a_hit() {
    let (_, auth) = authenticator_at(T0, &settings());
    let token = sign(&claims_at(T0));

    let first = auth.authenticate(&token).unwrap();
    assert_eq!(
        auth.cache
            .get(&TokenCache::key(&token, None), T0)
            .map(|cached| cached.caller),
        Some(first.clone())
    );
    assert_eq!(auth.authenticate(&token), Ok(first));
}

#[test]
fn the_cache_never_serves_a_token_past_its_exp() {
    let mut settings = settings();
    settings.leeway_secs = 0;
    let (now, auth) = authenticator_at(T0, &settings);
    let token = sign(&with(claims_at(T0), "exp", json!(T0 + 5)));
    let digest = TokenCache::key(&token, None);

    assert!(auth.authenticate(&token).is_ok());
    now.set(at(T0 + 4));
    assert!(auth.cache.get(&digest, T0 + 4).is_some());
    assert!(auth.authenticate(&token).is_ok());

    now.set(at(T0 + 5));
    assert_eq!(auth.authenticate(&token), Err(AuthError::Expired));
    assert_eq!(auth.cache.get(&digest, T0 + 5), None);
}

#[test]
fn the_cache_does_not_stretch_the_leeway_past_exp() {
    let (now, auth) = authenticator_at(T0, &settings());
    let token = sign(&with(claims_at(T0), "exp", json!(T0 + 5)));
    let digest = TokenCache::key(&token, None);
    assert!(auth.authenticate(&token).is_ok());

    // Past exp but within the 30 s leeway: verified again, accepted, not cached.
    now.set(at(T0 + 20));
    assert!(auth.authenticate(&token).is_ok());
    assert_eq!(auth.cache.get(&digest, T0 + 20), None);
    now.set(at(T0 + 35));
    assert_eq!(auth.authenticate(&token), Err(AuthError::Expired));
}

#[test]
fn tokens_valid_only_thanks_to_the_leeway_are_not_cached() {
    let auth = authenticator();
    let cases = [
        with(claims_at(T0 - 100), "exp", json!(T0 - 10)),
        with(claims_at(T0), "nbf", json!(T0 + 10)),
        with(claims_at(T0), "iat", json!(T0 + 10)),
    ];
    for claims in cases {
        let token = sign(&claims);
        assert!(auth.authenticate(&token).is_ok(), "{claims}");
        assert_eq!(
            auth.cache.get(&TokenCache::key(&token, None), T0),
            None,
            "{claims}"
        );
    }
}

#[test]
fn a_refused_token_is_not_cached() {
    let auth = authenticator();
    let token = sign(&with(claims_at(T0), "post", json!("bad post")));
    assert!(auth.authenticate(&token).is_err());
    assert_eq!(auth.cache.get(&TokenCache::key(&token, None), T0), None);
}

// --- tokens bound to a client certificate (RFC 8705) ---------------------------

fn thumbprint(seed: u8) -> crate::tls::Thumbprint {
    crate::tls::Thumbprint::of(&[seed; 8])
}

fn bound_to(seed: u8) -> Value {
    with(
        claims_at(T0),
        "cnf",
        json!({ "x5t#S256": thumbprint(seed).to_base64url() }),
    )
}

#[test]
fn a_bound_token_is_accepted_with_its_certificate_only() {
    let auth = authenticator();
    let token = sign(&bound_to(1));
    assert!(
        auth.authenticate_with_client(&token, Some(thumbprint(1)))
            .is_ok()
    );
    assert_eq!(
        auth.authenticate_with_client(&token, Some(thumbprint(2))),
        Err(AuthError::WrongCertificate)
    );
    assert_eq!(
        auth.authenticate(&token),
        Err(AuthError::CertificateRequired)
    );
    // An unbound token goes with any certificate, or none.
    let unbound = sign(&claims_at(T0));
    assert!(
        auth.authenticate_with_client(&unbound, Some(thumbprint(2)))
            .is_ok()
    );
    assert!(auth.authenticate(&unbound).is_ok());
}

#[test]
fn the_cache_key_holds_the_certificate_so_a_cached_bound_token_is_not_served_to_another() {
    let auth = authenticator();
    let token = sign(&bound_to(1));
    let caller = auth
        .authenticate_with_client(&token, Some(thumbprint(1)))
        .unwrap();
    assert_eq!(
        auth.cache
            .get(&TokenCache::key(&token, Some(thumbprint(1))), T0)
            .map(|cached| cached.caller),
        Some(caller)
    );
    assert_eq!(
        auth.cache
            .get(&TokenCache::key(&token, Some(thumbprint(2))), T0)
            .map(|cached| cached.caller),
        None
    );
    assert_eq!(auth.cache.get(&TokenCache::key(&token, None), T0), None);
    assert_eq!(
        auth.authenticate_with_client(&token, Some(thumbprint(2))),
        Err(AuthError::WrongCertificate)
    );
    assert_eq!(
        auth.cache
            .get(&TokenCache::key(&token, Some(thumbprint(2))), T0)
            .map(|cached| cached.caller),
        None
    );
}

#[test]
fn require_bound_tokens_refuses_unbound_ones() {
    let mut settings = settings();
    settings.require_bound_tokens = true;
    let (_, auth) = authenticator_at(T0, &settings);
    assert_eq!(
        auth.authenticate_with_client(&sign(&claims_at(T0)), Some(thumbprint(1))),
        Err(AuthError::UnboundToken)
    );
    assert!(
        auth.authenticate_with_client(&sign(&bound_to(1)), Some(thumbprint(1)))
            .is_ok()
    );
}

#[test]
fn a_confirmation_the_broker_cannot_check_is_refused() {
    let auth = authenticator();
    let presented = Some(thumbprint(1));
    for cnf in [
        json!({ "jkt": "abc" }),
        json!({ "x5t#S256": thumbprint(1).to_base64url(), "jkt": "abc" }),
        json!({ "x5t#S256": "not a thumbprint" }),
        json!({ "x5t#S256": URL_SAFE_NO_PAD.encode([1u8; 20]) }),
        json!("x5t"),
    ] {
        let token = sign(&with(claims_at(T0), "cnf", cnf.clone()));
        let refused = auth.authenticate_with_client(&token, presented);
        assert!(
            matches!(
                refused,
                Err(AuthError::InvalidClaim("cnf") | AuthError::MissingClaim("cnf"))
            ),
            "{cnf}: {refused:?}"
        );
    }
}

#[test]
fn the_authenticator_can_be_shared_across_threads() {
    fn shared<T: Send + Sync + 'static>() {}
    shared::<Authenticator>();
}

// --- the key set -------------------------------------------------------------------

#[test]
fn unusable_keys_of_the_set_are_skipped_and_counted() {
    let mut keys = dev_jwks_keys();
    let dev_x = keys[0]["x"].clone();
    keys.extend([
        json!({"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}),
        json!({"kty": "OKP", "crv": "Ed25519", "x": dev_x, "kid": "enc", "use": "enc"}),
        json!({"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA", "kid": "p521"}),
        json!({"kty": "OKP", "crv": "Ed25519", "x": "AAAA", "kid": "short"}),
        json!({"kty": "OKP", "crv": "Ed25519", "x": dev_x, "kid": "mislabelled", "alg": "ES256"}),
        json!({"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "rsa-512-bits"}),
        json!({"no": "kty"}),
        json!("not an object"),
    ]);
    let mut settings = settings();
    settings.jwks_file = Some(jwks_file("skipped", &json!({ "keys": keys })));
    let (_, auth) = authenticator_at(T0, &settings);
    assert_eq!((auth.key_count(), auth.skipped_key_count()), (2, 8));
}

#[test]
fn a_set_without_usable_key_is_an_error_naming_the_file() {
    let mut settings = settings();
    settings.jwks_file = Some(jwks_file(
        "unusable",
        &json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}),
    ));
    let error = Authenticator::new(&settings).unwrap_err();
    assert!(matches!(
        error,
        AuthSetupError::NoUsableKey { skipped: 1, .. }
    ));
    assert!(error.to_string().contains("unusable.json"), "{error}");

    settings.algorithms = vec!["RS256".into()];
    settings.jwks_file = Some(certs("jwks.json"));
    assert!(matches!(
        Authenticator::new(&settings),
        Err(AuthSetupError::NoUsableKey { skipped: 2, .. })
    ));
}

#[test]
fn a_missing_or_unreadable_jwks_file_is_an_error_naming_the_file() {
    let mut settings = settings();
    settings.jwks_file = Some(certs("no-such-jwks.json"));
    let error = Authenticator::new(&settings).unwrap_err();
    assert!(matches!(error, AuthSetupError::ReadJwks { .. }));
    assert!(error.to_string().contains("no-such-jwks.json"), "{error}");

    settings.jwks_file = Some(certs("README.md"));
    let error = Authenticator::new(&settings).unwrap_err();
    assert!(matches!(error, AuthSetupError::ParseJwks { .. }));
    assert!(error.to_string().contains("README.md"), "{error}");
}

#[test]
fn two_keys_with_the_same_kid_are_an_error() {
    let mut keys = dev_jwks_keys();
    keys.push(other_public_jwk("dev-2026"));
    let mut settings = settings();
    settings.jwks_file = Some(jwks_file("duplicate", &json!({ "keys": keys })));
    assert!(
        matches!(Authenticator::new(&settings), Err(AuthSetupError::DuplicateKid { kid, .. }) if kid == "dev-2026")
    );
}

// --- settings ---------------------------------------------------------------------

#[test]
fn the_dev_settings_are_valid() {
    assert_eq!(settings().validate(), Vec::<String>::new());
}

#[test]
fn validate_rejects_none_hmac_unknown_algorithms_and_an_empty_issuer() {
    let mut settings = settings();
    settings.issuer = " ".into();
    settings.audience = String::new();
    settings.algorithms = vec![
        "none".into(),
        "HS256".into(),
        "HS512".into(),
        "ES512".into(),
        "EdDSA".into(),
    ];
    settings.leeway_secs = 301;
    let problems = settings.validate();
    for expected in [
        "auth.issuer:",
        "auth.audience:",
        "\"none\"",
        "\"HS256\"",
        "\"HS512\"",
        "\"ES512\"",
        "auth.leeway_secs:",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "{expected} not in {problems:?}"
        );
    }
    assert_eq!(problems.len(), 7, "{problems:?}");
    assert!(
        problems.iter().all(|p| p.starts_with("auth.")),
        "{problems:?}"
    );
}

#[test]
fn an_empty_algorithm_list_is_a_problem() {
    let mut settings = settings();
    settings.algorithms.clear();
    assert_eq!(settings.validate().len(), 1);
}

/// The dev settings with the keys fetched from `url` instead of the file.
fn url_settings(url: &str) -> AuthSettings {
    let mut settings = settings();
    settings.jwks_file = None;
    settings.jwks_url = Some(url.to_owned());
    settings
}

/// The problems of `settings`, each required to name its `auth.` key.
fn problems_of(settings: &AuthSettings) -> Vec<String> {
    let problems = settings.validate();
    assert!(
        problems.iter().all(|p| p.starts_with("auth.")),
        "{problems:?}"
    );
    problems
}

#[test]
fn a_jwks_url_to_loopback_over_plain_http_is_valid() {
    for url in [
        "http://127.0.0.1:8080/jwks.json",
        "http://[::1]:8080/jwks.json",
        "http://localhost/jwks",
    ] {
        assert_eq!(
            problems_of(&url_settings(url)),
            Vec::<String>::new(),
            "{url}"
        );
    }
}

#[test]
fn an_https_jwks_url_with_a_ca_file_is_valid() {
    let mut settings = url_settings("https://idp.diplomatie.gouv.fr/.well-known/jwks.json");
    settings.jwks_ca_file = Some(certs("ca.pem"));
    assert_eq!(problems_of(&settings), Vec::<String>::new());
}

#[test]
fn an_https_jwks_url_without_a_ca_file_is_a_problem() {
    let problems = problems_of(&url_settings("https://idp.example.fr/jwks.json"));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("auth.jwks_ca_file"), "{problems:?}");
}

#[test]
fn a_jwks_url_over_plain_http_to_another_host_is_a_problem() {
    let problems = problems_of(&url_settings("http://idp.example.fr/jwks.json"));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("auth.jwks_url:"), "{problems:?}");
}

#[test]
fn a_jwks_url_that_is_not_http_or_carries_credentials_is_a_problem() {
    for url in [
        "ftp://127.0.0.1/jwks.json",
        "not a url",
        "http://user:secret@127.0.0.1/jwks.json",
    ] {
        let problems = problems_of(&url_settings(url));
        assert_eq!(problems.len(), 1, "{url}: {problems:?}");
        assert!(problems[0].starts_with("auth.jwks_url:"), "{problems:?}");
    }
}

#[test]
fn both_or_neither_of_jwks_file_and_jwks_url_is_a_problem() {
    let mut both = settings();
    both.jwks_url = Some("http://127.0.0.1/jwks.json".into());
    assert_eq!(problems_of(&both).len(), 1, "{:?}", both.validate());

    let mut neither = settings();
    neither.jwks_file = None;
    let problems = problems_of(&neither);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("auth.jwks_url"), "{problems:?}");
}

#[test]
fn a_jwks_ca_file_without_an_https_jwks_url_is_a_problem() {
    let mut with_file = settings();
    with_file.jwks_ca_file = Some(certs("ca.pem"));
    assert_eq!(problems_of(&with_file).len(), 1);

    let mut with_plain_http = url_settings("http://127.0.0.1/jwks.json");
    with_plain_http.jwks_ca_file = Some(certs("ca.pem"));
    assert_eq!(problems_of(&with_plain_http).len(), 1);
}

#[test]
fn jwks_refresh_and_timeout_outside_their_bounds_are_problems() {
    let mut settings = url_settings("http://127.0.0.1/jwks.json");
    settings.jwks_refresh_secs = 0;
    settings.jwks_timeout_ms = 0;
    let problems = problems_of(&settings);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("auth.jwks_refresh_secs:"))
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("auth.jwks_timeout_ms:"))
    );

    settings.jwks_refresh_secs = 86_401;
    settings.jwks_timeout_ms = 30_001;
    assert_eq!(problems_of(&settings).len(), 2);
}

#[test]
fn an_https_jwks_url_with_an_unreadable_ca_file_fails_setup_naming_the_file() {
    let mut settings = url_settings("https://idp.example.fr/jwks.json");
    settings.jwks_ca_file = Some(certs("no-such-ca.pem"));
    let error = Authenticator::new(&settings).unwrap_err();
    assert!(matches!(error, AuthSetupError::Ca(_)), "{error}");
    assert!(error.to_string().contains("no-such-ca.pem"), "{error}");
}

#[test]
fn new_with_a_jwks_url_fetches_nothing_and_refuses_every_token() {
    let auth = Authenticator::new(&url_settings("http://127.0.0.1:9/jwks.json"))
        .expect("settings and client are sound");
    assert_eq!(auth.key_count(), 0);
    assert_eq!(
        auth.authenticate(&sign(&claims_at(unix_secs(&crate::clock::SystemClock)))),
        Err(AuthError::UnknownKey)
    );
}

// --- the refresh task of auth.jwks_url ---------------------------------------------

/// A refresh task towards a closed port, every `period`, over `keys`.
fn refresher(period: std::time::Duration, keys: &Arc<ArcSwap<jwks::KeySet>>) -> Refresher {
    let settings = url_settings("http://127.0.0.1:9/jwks.json");
    let source = JwksSource::new(&settings, "http://127.0.0.1:9/jwks.json")
        .expect("a loopback client builds");
    Refresher::spawn(
        source,
        settings.allowed_algorithms(),
        Arc::downgrade(keys),
        TokenCache::new(10, Arc::new(crate::clock::SystemClock)),
        period,
        std::time::Duration::from_secs(30),
    )
}

async fn until_finished(refresher: &Refresher) -> bool {
    for _ in 0..200 {
        if refresher.is_finished() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn the_refresh_task_ends_once_the_key_set_is_gone() {
    let keys = Arc::new(ArcSwap::from_pointee(jwks::KeySet::empty()));
    let refresher = refresher(std::time::Duration::from_millis(5), &keys);
    drop(keys);
    assert!(until_finished(&refresher).await);
}

#[tokio::test]
async fn the_refresh_task_is_stopped_when_its_handle_is_dropped() {
    let keys = Arc::new(ArcSwap::from_pointee(jwks::KeySet::empty()));
    let refresher = refresher(std::time::Duration::from_secs(3600), &keys);
    let task = refresher.abort_handle();
    assert!(!task.is_finished());
    drop(refresher);
    let mut finished = false;
    for _ in 0..200 {
        finished = task.is_finished();
        if finished {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(finished, "the task outlived its handle");
    // The key set is still there, held by the test: ending the task did not need it gone.
    assert_eq!(Arc::strong_count(&keys), 1);
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_last_good_key_set() {
    let allowed = settings().allowed_algorithms();
    let good = jwks::KeySet::load(&certs("jwks.json"), &allowed).expect("the dev JWKS loads");
    let keys = Arc::new(ArcSwap::from_pointee(good));
    let refresher = refresher(std::time::Duration::from_millis(5), &keys);
    refresher.request_early_refresh();
    for _ in 0..10 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        assert_eq!(keys.load().keys.len(), 2);
    }
    assert!(!refresher.is_finished());
}

#[test]
fn settings_take_defaults_and_reject_unknown_keys() {
    let minimal =
        json!({"issuer": ISSUER, "audience": AUDIENCE, "jwks_file": "certs-dev/jwks.json"});
    let settings: AuthSettings = serde_json::from_value(minimal.clone()).unwrap();
    assert_eq!(settings.algorithms, ["ES256", "EdDSA", "RS256"]);
    assert_eq!(
        (settings.leeway_secs, settings.token_cache_capacity),
        (30, 10_000)
    );
    assert_eq!(
        (settings.dev_signing_key_file, settings.dev_signing_kid),
        (None, None)
    );
    assert_eq!((settings.jwks_url, settings.jwks_ca_file), (None, None));
    assert_eq!(
        (settings.jwks_refresh_secs, settings.jwks_timeout_ms),
        (300, 2_000)
    );

    assert!(
        serde_json::from_value::<AuthSettings>(with(minimal.clone(), "leeway", json!(5))).is_err()
    );
    assert!(serde_json::from_value::<AuthSettings>(without(minimal, "issuer")).is_err());
}

// --- minting ----------------------------------------------------------------------

#[test]
fn minting_without_a_dev_key_is_refused() {
    let mut settings = settings();
    settings.dev_signing_key_file = None;
    let dev = DevClaims {
        sub: "a".into(),
        post: "TN-TUNIS".into(),
        role: "agent_consulaire".into(),
        ttl_secs: 60,
    };
    assert!(matches!(
        mint_dev_token(&settings, dev),
        Err(MintError::NoDevKey)
    ));
}

#[test]
fn minting_refuses_claims_the_broker_would_refuse() {
    let bad_post = DevClaims {
        sub: "a".into(),
        post: "tunis".into(),
        role: "agent_consulaire".into(),
        ttl_secs: 60,
    };
    assert!(matches!(
        mint_dev_token(&settings(), bad_post),
        Err(MintError::InvalidClaim { claim: "post", .. })
    ));
    let no_ttl = DevClaims {
        sub: "a".into(),
        post: "TN-TUNIS".into(),
        role: "agent_consulaire".into(),
        ttl_secs: 0,
    };
    assert!(matches!(
        mint_dev_token(&settings(), no_ttl),
        Err(MintError::Ttl(_))
    ));
}

#[test]
fn minting_with_a_public_file_as_key_is_an_error_naming_the_file() {
    let mut settings = settings();
    settings.dev_signing_key_file = Some(certs("ca.pem"));
    let dev = DevClaims {
        sub: "a".into(),
        post: "TN-TUNIS".into(),
        role: "agent_consulaire".into(),
        ttl_secs: 60,
    };
    let error = mint_dev_token(&settings, dev).unwrap_err();
    assert!(matches!(error, MintError::UnsupportedKey { .. }));
    assert!(error.to_string().contains("ca.pem"), "{error}");
}

// --- the token lifecycle ----------------------------------------------------------

fn sign_typed(claims: &Value, typ: Option<&str>) -> String {
    install_crypto_provider();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("dev-2026".to_owned());
    header.typ = typ.map(str::to_owned);
    jsonwebtoken::encode(
        &header,
        claims,
        &encoding_key("jwt-signing.key.pem", Algorithm::EdDSA),
    )
    .unwrap()
}

#[test]
fn a_token_living_longer_than_the_maximum_lifetime_is_refused() {
    let mut settings = settings();
    settings.max_token_lifetime_secs = 3_600;
    let (_, auth) = authenticator_at(T0, &settings);
    let at_limit = with(claims_at(T0), "exp", json!(T0 + 3_600));
    assert!(auth.authenticate(&sign(&at_limit)).is_ok());
    let beyond = with(claims_at(T0), "exp", json!(T0 + 3_601));
    assert_eq!(
        auth.authenticate(&sign(&beyond)),
        Err(AuthError::LifetimeTooLong)
    );
}

#[test]
fn a_token_issued_in_the_future_beyond_the_leeway_is_refused() {
    let auth = authenticator();
    let within = with(claims_at(T0), "iat", json!(T0 + 30));
    assert!(auth.authenticate(&sign(&within)).is_ok());
    let beyond = with(claims_at(T0), "iat", json!(T0 + 31));
    assert_eq!(
        auth.authenticate(&sign(&beyond)),
        Err(AuthError::NotYetValid)
    );
}

#[test]
fn the_header_typ_must_be_an_accepted_type() {
    let auth = authenticator();
    for typ in ["at+jwt", "application/at+jwt", "AT+JWT", "JWT"] {
        let token = sign_typed(&claims_at(T0), Some(typ));
        assert!(auth.authenticate(&token).is_ok(), "{typ}");
    }
    for typ in [None, Some("JOSE"), Some("id_token+jwt"), Some("")] {
        let token = sign_typed(&claims_at(T0), typ);
        assert_eq!(
            auth.authenticate(&token),
            Err(AuthError::WrongType),
            "{typ:?}"
        );
    }
    let mut strict = settings();
    strict.accepted_types = vec!["at+jwt".into()];
    let (_, auth) = authenticator_at(T0, &strict);
    let token = sign_typed(&claims_at(T0), Some("JWT"));
    assert_eq!(auth.authenticate(&token), Err(AuthError::WrongType));
}

#[test]
fn with_allowed_clients_the_azp_or_client_id_must_be_listed() {
    let mut settings = settings();
    settings.allowed_clients = Some(vec!["visa-app".into(), "etat-civil".into()]);
    let (_, auth) = authenticator_at(T0, &settings);
    let listed = [
        with(claims_at(T0), "azp", json!("visa-app")),
        with(claims_at(T0), "client_id", json!("etat-civil")),
        with(
            with(claims_at(T0), "azp", json!("other")),
            "client_id",
            json!("visa-app"),
        ),
    ];
    for claims in listed {
        assert!(auth.authenticate(&sign(&claims)).is_ok(), "{claims}");
    }
    let refused = [
        claims_at(T0),
        with(claims_at(T0), "azp", json!("other")),
        with(claims_at(T0), "client_id", json!("VISA-APP")),
    ];
    for claims in refused {
        assert_eq!(
            auth.authenticate(&sign(&claims)),
            Err(AuthError::ClientNotAllowed),
            "{claims}"
        );
    }
    let wrong_type = with(claims_at(T0), "azp", json!(["visa-app"]));
    assert_eq!(
        auth.authenticate(&sign(&wrong_type)),
        Err(AuthError::InvalidClaim("azp"))
    );
}

#[test]
fn lifecycle_settings_out_of_bounds_are_each_a_problem() {
    let mut settings = settings();
    settings.max_token_lifetime_secs = 10;
    settings.accepted_types = Vec::new();
    settings.allowed_clients = Some(Vec::new());
    settings.revoked_jti_refresh_ms = 0;
    assert_eq!(problems_of(&settings).len(), 4, "{:?}", settings.validate());
    settings.accepted_types = vec![" ".into()];
    settings.allowed_clients = Some(vec![String::new()]);
    assert_eq!(problems_of(&settings).len(), 4, "{:?}", settings.validate());
}

/// A file of revoked ids for one test, in the temp directory.
fn revoked_file(test: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "caf-broker-revoked-{}-{test}.txt",
        std::process::id()
    ));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_revoked_jti_is_refused_even_once_cached_and_the_file_is_reread_on_reload() {
    let file = revoked_file("reload", "# revoked\n\nsome-other-id\n");
    let mut settings = settings();
    settings.revoked_jti_file = Some(file.clone());
    let (_, auth) = authenticator_at(T0, &settings);
    let token = sign(&claims_at(T0));
    assert!(auth.authenticate(&token).is_ok());
    assert!(auth.cache.get(&TokenCache::key(&token, None), T0).is_some());

    std::fs::write(&file, "some-other-id\n  4f1c-test  \nnot a jti\n").unwrap();
    auth.files().reload();
    assert_eq!(auth.authenticate(&token), Err(AuthError::Revoked));
    assert_eq!(auth.cache.get(&TokenCache::key(&token, None), T0), None);

    // An unreadable file keeps the last good list.
    std::fs::remove_file(&file).unwrap();
    auth.files().reload();
    assert_eq!(auth.authenticate(&token), Err(AuthError::Revoked));
    let unrevoked = sign(&with(claims_at(T0), "jti", json!("another")));
    assert!(auth.authenticate(&unrevoked).is_ok());
}

#[test]
fn an_unreadable_revocation_file_fails_the_start_naming_the_setting() {
    let mut settings = settings();
    settings.revoked_jti_file = Some(PathBuf::from("/nonexistent/revoked.txt"));
    let error = Authenticator::new(&settings).unwrap_err();
    assert!(
        error.to_string().starts_with("auth.revoked_jti_file:"),
        "{error}"
    );
}

#[test]
fn a_key_withdrawn_from_the_jwks_file_evicts_the_tokens_it_verified() {
    let keys = dev_jwks_keys();
    let path = jwks_file("withdrawn", &json!({ "keys": keys }));
    let mut settings = settings();
    settings.jwks_file = Some(path.clone());
    let (_, auth) = authenticator_at(T0, &settings);
    let ed25519 = sign(&claims_at(T0));
    let es256 = sign_with(
        &claims_at(T0),
        "jwt-es256.key.pem",
        Algorithm::ES256,
        Some("dev-es256"),
    );
    assert!(auth.authenticate(&ed25519).is_ok());
    assert!(auth.authenticate(&es256).is_ok());

    let kept: Vec<Value> = keys
        .into_iter()
        .filter(|key| key["kid"] != "dev-2026")
        .collect();
    std::fs::write(&path, json!({ "keys": kept }).to_string()).unwrap();
    auth.files().reload();
    assert_eq!(auth.key_count(), 1);
    // Evicted as the set is swapped, before the token is even presented again.
    assert_eq!(auth.cache.get(&TokenCache::key(&ed25519, None), T0), None);
    assert!(auth.cache.get(&TokenCache::key(&es256, None), T0).is_some());
    assert_eq!(auth.authenticate(&ed25519), Err(AuthError::UnknownKey));
    assert_eq!(auth.cache.get(&TokenCache::key(&ed25519, None), T0), None);
    assert!(auth.authenticate(&es256).is_ok());
}

#[test]
fn a_jwks_file_that_no_longer_parses_keeps_the_last_good_keys() {
    let path = jwks_file("broken", &json!({ "keys": dev_jwks_keys() }));
    let mut settings = settings();
    settings.jwks_file = Some(path.clone());
    let (_, auth) = authenticator_at(T0, &settings);
    std::fs::write(&path, "{ not json").unwrap();
    auth.files().reload();
    assert_eq!(auth.key_count(), 2);
    assert!(auth.authenticate(&sign(&claims_at(T0))).is_ok());
}

#[test]
fn every_cause_has_a_distinct_label_of_its_own() {
    let errors = [
        AuthError::Malformed,
        AuthError::DisallowedAlgorithm,
        AuthError::UnknownKey,
        AuthError::BadSignature,
        AuthError::Expired,
        AuthError::NotYetValid,
        AuthError::WrongIssuer,
        AuthError::WrongAudience,
        AuthError::MissingClaim("post"),
        AuthError::InvalidClaim("post"),
        AuthError::WrongType,
        AuthError::LifetimeTooLong,
        AuthError::ClientNotAllowed,
        AuthError::Revoked,
    ];
    let labels: std::collections::HashSet<&str> = errors.iter().map(AuthError::cause).collect();
    assert_eq!(labels.len(), errors.len());
    assert!(
        labels
            .iter()
            .all(|l| l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
    );
}
