//! The `[auth]` settings: issuer, audience, key set, algorithms, leeway, dev signing key.

use std::path::PathBuf;

use jsonwebtoken::{Algorithm, AlgorithmFamily};

/// Largest accepted clock-skew leeway: beyond five minutes, an expired token
/// would stay usable long enough to matter.
const MAX_LEEWAY_SECS: u64 = 300;

/// The asymmetric algorithms a configuration may allow, by their JOSE names.
const SUPPORTED: &str = "ES256, ES384, EdDSA, RS256, RS384, RS512, PS256, PS384, PS512";

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
    pub jwks_file: PathBuf,
    /// The signature algorithms accepted, by JOSE name.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    #[serde(default = "default_leeway_secs")]
    pub leeway_secs: u64,
    /// How many verified tokens are kept, by SHA-256, to skip verifying them again.
    #[serde(default = "default_token_cache_capacity")]
    pub token_cache_capacity: u64,
    /// PKCS#8 PEM private key used only by `caf-broker token` (development).
    #[serde(default)]
    pub dev_signing_key_file: Option<PathBuf>,
    /// The `kid` header of development tokens: the key's id in the JWKS.
    #[serde(default)]
    pub dev_signing_kid: Option<String>,
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
        if self.jwks_file.as_os_str().is_empty() {
            problems.push(
                "auth.jwks_file: must name the JSON Web Key Set file of the identity provider"
                    .to_owned(),
            );
        }
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
        if self.dev_signing_kid.is_some() && self.dev_signing_key_file.is_none() {
            problems.push(
                "auth.dev_signing_kid: is set but auth.dev_signing_key_file is not".to_owned(),
            );
        }
        problems
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
