//! The `[auth]` settings: issuer, audience, key set, algorithms, leeway, token
//! lifecycle (lifetime, types, clients, revocation), dev signing key.

use std::path::PathBuf;

use jsonwebtoken::{Algorithm, AlgorithmFamily};

/// Largest accepted clock-skew leeway: beyond five minutes, an expired token
/// would stay usable long enough to matter.
const MAX_LEEWAY_SECS: u64 = 300;

/// The asymmetric algorithms a configuration may allow, by their JOSE names.
const SUPPORTED: &str = "ES256, ES384, EdDSA, RS256, RS384, RS512, PS256, PS384, PS512";

/// Bounds of `auth.jwks_refresh_secs`: often enough to pick up a rotation, rarely
/// enough not to hammer the identity provider.
const JWKS_REFRESH_SECS: std::ops::RangeInclusive<u64> = 10..=86_400;

/// Bounds of `auth.jwks_timeout_ms`.
const JWKS_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 100..=30_000;

/// Bounds of `auth.max_token_lifetime_secs`: a token lives at least a minute,
/// and no access token should outlive a week.
const MAX_TOKEN_LIFETIME_SECS: std::ops::RangeInclusive<u64> = 60..=604_800;

/// Bounds of `auth.revoked_jti_refresh_ms`: the delay before a `jti` revoked in
/// the shared set is refused everywhere.
const REVOKED_JTI_REFRESH_MS: std::ops::RangeInclusive<u64> = 100..=60_000;

/// How tokens are verified (and, in development, minted).
///
/// The issuer, audience and key set have no default: a security setting is
/// always explicit.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// The exact `iss` the identity provider puts in its tokens.
    pub issuer: String,
    /// The value `aud` must contain, e.g. `caf-broker`.
    pub audience: String,
    /// The JSON Web Key Set file holding the identity provider's public keys.
    /// Exactly one of `jwks_file` and `jwks_url` is set.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// The identity provider's JWKS endpoint: `https://`, or `http://` to a
    /// loopback address only (tests and local development). Fetched at start,
    /// then every `jwks_refresh_secs`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// PEM bundle of the CA certificates that may sign the JWKS endpoint's
    /// certificate; required for an `https://` `jwks_url`, and no other root is trusted.
    #[serde(default)]
    pub jwks_ca_file: Option<PathBuf>,
    /// Seconds between two fetches of `jwks_url`.
    #[serde(default = "default_jwks_refresh_secs")]
    pub jwks_refresh_secs: u64,
    /// Bound on one fetch of `jwks_url` (connection, TLS, answer), in milliseconds.
    #[serde(default = "default_jwks_timeout_ms")]
    pub jwks_timeout_ms: u64,
    /// The signature algorithms accepted, by JOSE name.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    #[serde(default = "default_leeway_secs")]
    pub leeway_secs: u64,
    /// How many verified tokens are kept, by SHA-256, to skip verifying them again.
    #[serde(default = "default_token_cache_capacity")]
    pub token_cache_capacity: u64,
    /// Longest `exp - iat` accepted, in seconds: a token issued for longer is refused.
    #[serde(default = "default_max_token_lifetime_secs")]
    pub max_token_lifetime_secs: u64,
    /// The JOSE header `typ` values accepted (RFC 9068 access tokens are
    /// `at+jwt`), compared without case and without an `application/` prefix.
    #[serde(default = "default_accepted_types")]
    pub accepted_types: Vec<String>,
    /// When set, the token's `azp` or `client_id` must be one of these: the
    /// consular applications that may call the broker.
    #[serde(default)]
    pub allowed_clients: Option<Vec<String>>,
    /// A file of revoked token ids (`jti`), one per line; `#` starts a comment.
    /// Reloaded when it changes and on SIGHUP.
    #[serde(default)]
    pub revoked_jti_file: Option<PathBuf>,
    /// How often the shared revocation set in Redis (with the Redis quota
    /// backend) is read, in milliseconds.
    #[serde(default = "default_revoked_jti_refresh_ms")]
    pub revoked_jti_refresh_ms: u64,
    /// PKCS#8 PEM private key used only by `caf-broker token` (development).
    #[serde(default)]
    pub dev_signing_key_file: Option<PathBuf>,
    /// The `kid` header of development tokens: the key's id in the JWKS.
    #[serde(default)]
    pub dev_signing_kid: Option<String>,
    /// Refuse tokens that are not bound to a client certificate (RFC 8705
    /// `cnf.x5t#S256`). A bound token is accepted only over a TLS connection
    /// with that certificate, whatever this says.
    #[serde(default)]
    pub require_bound_tokens: bool,
}

fn default_algorithms() -> Vec<String> {
    ["ES256", "EdDSA", "RS256"].map(String::from).to_vec()
}

fn default_leeway_secs() -> u64 {
    30
}

fn default_token_cache_capacity() -> u64 {
    10_000
}

fn default_max_token_lifetime_secs() -> u64 {
    43_200
}

fn default_accepted_types() -> Vec<String> {
    ["at+jwt", "JWT"].map(String::from).to_vec()
}

fn default_revoked_jti_refresh_ms() -> u64 {
    1_000
}

fn default_jwks_refresh_secs() -> u64 {
    300
}

fn default_jwks_timeout_ms() -> u64 {
    2_000
}

impl AuthSettings {
    /// Every problem of these settings, each as `auth.<key>: <message>`; empty when sound.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.issuer.trim().is_empty() {
            problems.push("auth.issuer: must not be empty; set the identity provider's issuer exactly as it appears in `iss`".to_owned());
        }
        if self.audience.trim().is_empty() {
            problems.push("auth.audience: must not be empty; set the value tokens carry in `aud` for this broker, e.g. \"caf-broker\"".to_owned());
        }
        self.validate_key_source(&mut problems);
        if self.algorithms.is_empty() {
            problems.push(format!(
                "auth.algorithms: must list at least one of {SUPPORTED}"
            ));
        }
        for name in &self.algorithms {
            if let Err(message) = allowed_algorithm(name) {
                problems.push(format!("auth.algorithms: {message}"));
            }
        }
        if self.leeway_secs > MAX_LEEWAY_SECS {
            problems.push(format!(
                "auth.leeway_secs: {} is more than the {MAX_LEEWAY_SECS} seconds allowed; clock skew is seconds, not minutes",
                self.leeway_secs
            ));
        }
        self.validate_lifecycle(&mut problems);
        if self.dev_signing_kid.is_some() && self.dev_signing_key_file.is_none() {
            problems.push(
                "auth.dev_signing_kid: is set but auth.dev_signing_key_file is not".to_owned(),
            );
        }
        problems
    }

    /// The rules on token lifetime, types, clients and revocation.
    fn validate_lifecycle(&self, problems: &mut Vec<String>) {
        if !MAX_TOKEN_LIFETIME_SECS.contains(&self.max_token_lifetime_secs) {
            problems.push(format!(
                "auth.max_token_lifetime_secs: {} is outside {} to {} seconds",
                self.max_token_lifetime_secs,
                MAX_TOKEN_LIFETIME_SECS.start(),
                MAX_TOKEN_LIFETIME_SECS.end()
            ));
        }
        if self.accepted_types.is_empty() {
            problems.push(
                "auth.accepted_types: must list at least one header typ, e.g. \"at+jwt\""
                    .to_owned(),
            );
        }
        if self
            .accepted_types
            .iter()
            .any(|typ| media_type(typ).is_empty())
        {
            problems.push("auth.accepted_types: a type must not be empty".to_owned());
        }
        match &self.allowed_clients {
            Some(clients) if clients.is_empty() => problems.push(
                "auth.allowed_clients: is empty, which would refuse every token; list the client ids of the consular applications, or remove the setting".to_owned(),
            ),
            Some(clients) if clients.iter().any(|client| client.trim().is_empty()) => problems
                .push("auth.allowed_clients: a client id must not be empty".to_owned()),
            _ => {}
        }
        if self
            .revoked_jti_file
            .as_ref()
            .is_some_and(|file| file.as_os_str().is_empty())
        {
            problems.push(
                "auth.revoked_jti_file: must name a file of revoked token ids, or be left out"
                    .to_owned(),
            );
        }
        if !REVOKED_JTI_REFRESH_MS.contains(&self.revoked_jti_refresh_ms) {
            problems.push(format!(
                "auth.revoked_jti_refresh_ms: {} is outside {} to {} milliseconds",
                self.revoked_jti_refresh_ms,
                REVOKED_JTI_REFRESH_MS.start(),
                REVOKED_JTI_REFRESH_MS.end()
            ));
        }
    }

    /// The accepted header types, normalized as [`media_type`] does.
    pub(super) fn accepted_media_types(&self) -> Vec<String> {
        self.accepted_types
            .iter()
            .map(|typ| media_type(typ))
            .collect()
    }

    /// The rules on `jwks_file`, `jwks_url` and the settings that go with the URL.
    fn validate_key_source(&self, problems: &mut Vec<String>) {
        match (&self.jwks_file, &self.jwks_url) {
            (Some(_), Some(_)) => problems.push(
                "auth.jwks_file: is set together with auth.jwks_url; keep exactly one source of keys"
                    .to_owned(),
            ),
            (None, None) => problems.push(
                "auth.jwks_file: neither it nor auth.jwks_url is set; name the identity provider's JSON Web Key Set, as a file or an https:// URL".to_owned(),
            ),
            (Some(file), None) if file.as_os_str().is_empty() => problems.push(
                "auth.jwks_file: must name the JSON Web Key Set file of the identity provider"
                    .to_owned(),
            ),
            (Some(_), None) => {}
            (None, Some(url)) => self.validate_jwks_url(url, problems),
        }
        if self.jwks_url.is_none() && self.jwks_ca_file.is_some() {
            problems.push(
                "auth.jwks_ca_file: is set but auth.jwks_url is not; it only serves the URL"
                    .to_owned(),
            );
        }
        if !JWKS_REFRESH_SECS.contains(&self.jwks_refresh_secs) {
            problems.push(format!(
                "auth.jwks_refresh_secs: {} is outside {} to {} seconds",
                self.jwks_refresh_secs,
                JWKS_REFRESH_SECS.start(),
                JWKS_REFRESH_SECS.end()
            ));
        }
        if !JWKS_TIMEOUT_MS.contains(&self.jwks_timeout_ms) {
            problems.push(format!(
                "auth.jwks_timeout_ms: {} is outside {} to {} milliseconds",
                self.jwks_timeout_ms,
                JWKS_TIMEOUT_MS.start(),
                JWKS_TIMEOUT_MS.end()
            ));
        }
    }

    fn validate_jwks_url(&self, url: &str, problems: &mut Vec<String>) {
        let parsed = match reqwest::Url::parse(url) {
            Ok(parsed) => parsed,
            Err(error) => {
                problems.push(format!("auth.jwks_url: not a URL ({error})"));
                return;
            }
        };
        if !parsed.username().is_empty() || parsed.password().is_some() {
            problems.push("auth.jwks_url: must not carry credentials".to_owned());
        }
        if parsed.fragment().is_some() {
            problems.push("auth.jwks_url: must not carry a fragment".to_owned());
        }
        match parsed.scheme() {
            "https" if self.jwks_ca_file.is_none() => problems.push(
                "auth.jwks_url: an https:// URL needs auth.jwks_ca_file, the CA bundle that signs the identity provider's certificate (no platform roots are trusted)".to_owned(),
            ),
            "https" => {}
            "http" if crate::tls::is_loopback(&parsed) => {
                if self.jwks_ca_file.is_some() {
                    problems.push(
                        "auth.jwks_ca_file: is set but auth.jwks_url is plain http://".to_owned(),
                    );
                }
            }
            "http" => problems.push(
                "auth.jwks_url: plain http:// is allowed only to a loopback address; use https://"
                    .to_owned(),
            ),
            scheme => problems.push(format!(
                "auth.jwks_url: the scheme {scheme:?} is not supported; use https://"
            )),
        }
    }

    /// The allowed algorithms, leaving out any name [`AuthSettings::validate`] reports.
    pub(super) fn allowed_algorithms(&self) -> Vec<Algorithm> {
        let mut allowed: Vec<Algorithm> = self
            .algorithms
            .iter()
            .filter_map(|name| allowed_algorithm(name).ok())
            .collect();
        allowed.dedup();
        allowed
    }
}

/// A header `typ` as compared: lowercase, without the `application/` prefix
/// that RFC 7515 (4.1.9) lets a token leave out.
pub(super) fn media_type(typ: &str) -> String {
    let typ = typ.trim().to_ascii_lowercase();
    match typ.strip_prefix("application/") {
        Some(rest) => rest.to_owned(),
        None => typ,
    }
}

/// Parses an algorithm name a configuration may allow, or says why it may not.
///
/// `none` and HMAC are refused here, and nowhere else can they be let in.
pub(super) fn allowed_algorithm(name: &str) -> Result<Algorithm, String> {
    if name.eq_ignore_ascii_case("none") {
        return Err(format!(
            "{name:?} is never accepted: an unsigned token would let anyone in"
        ));
    }
    match name.parse::<Algorithm>() {
        Ok(alg) if alg.family() == AlgorithmFamily::Hmac => Err(format!(
            "{name:?} is never accepted: HMAC needs a secret shared with every verifier, and this broker verifies with public keys only"
        )),
        Ok(alg) => Ok(alg),
        Err(_) if name.to_ascii_uppercase().starts_with("HS") => Err(format!(
            "{name:?} is never accepted: this broker does not use HMAC algorithms"
        )),
        Err(_) => Err(format!(
            "unknown algorithm {name:?}; use some of {SUPPORTED} (names are case-sensitive)"
        )),
    }
}
