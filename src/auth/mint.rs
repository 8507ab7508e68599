//! Development tokens for `caf-broker token`, signed with the configured dev key.

use std::path::{Path, PathBuf};

use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::settings::AuthSettings;
use crate::clock::{Clock, SystemClock};
use crate::domain::{DomainError, PostCode, Role, Subject};
use crate::tls::Thumbprint;

/// Longest lifetime of a development token: a day.
const MAX_DEV_TTL_SECS: u64 = 86_400;

/// What a development token asserts.
#[derive(Debug, Clone)]
pub struct DevClaims {
    pub sub: String,
    pub post: String,
    pub role: String,
    pub ttl_secs: u64,
}

/// Why a development token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error(
        "auth.dev_signing_key_file is not set: this configuration cannot mint development tokens"
    )]
    NoDevKey,
    #[error("auth.dev_signing_key_file: cannot read {}: {error}", .path.display())]
    ReadKey {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("auth.dev_signing_key_file: {} is not a PKCS#8 PEM Ed25519 or P-256 private key", .path.display())]
    UnsupportedKey { path: PathBuf },
    #[error("auth.dev_signing_key_file: {} signs with {alg:?}, which auth.algorithms does not allow", .path.display())]
    AlgorithmNotAllowed { path: PathBuf, alg: Algorithm },
    #[error("{claim}: {error}")]
    InvalidClaim {
        claim: &'static str,
        error: DomainError,
    },
    #[error(
        "ttl_secs: a development token lives from 1 to {0} seconds (at most a day, and at most auth.max_token_lifetime_secs)"
    )]
    Ttl(u64),
    #[error("signing the development token failed: {0}")]
    Sign(jsonwebtoken::errors::Error),
}

#[derive(serde::Serialize)]
struct MintedClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    post: &'a str,
    role: &'a str,
    iat: u64,
    exp: u64,
    jti: String,
    client_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cnf: Option<Confirmation>,
}

/// RFC 8705 `cnf`: the thumbprint of the client certificate the token is bound to.
#[derive(serde::Serialize)]
struct Confirmation {
    #[serde(rename = "x5t#S256")]
    x5t_s256: String,
}

/// The `client_id` of development tokens: a configuration with
/// `auth.allowed_clients` lists it to accept them.
pub const DEV_CLIENT_ID: &str = "caf-broker-token";

/// Signs a token that [`super::Authenticator`] accepts under the same settings.
///
/// The claims are checked with the domain parsers first, so that a typo fails
/// here rather than as a 401 later. The signing key is read on each call:
/// this is a command-line tool, not a request path.
pub fn mint_dev_token(settings: &AuthSettings, claims: DevClaims) -> Result<String, MintError> {
    mint_dev_token_at(settings, claims, &SystemClock)
}

/// As [`mint_dev_token`], issued at the clock's wall time (tests that freeze
/// the broker's clock mint tokens valid at that time).
pub fn mint_dev_token_at(
    settings: &AuthSettings,
    claims: DevClaims,
    clock: &dyn Clock,
) -> Result<String, MintError> {
    mint(settings, claims, None, clock)
}

/// As [`mint_dev_token_at`], bound to the client certificate of thumbprint
/// `bound_to` (`cnf.x5t#S256`, RFC 8705): the broker accepts it only over a
/// TLS connection presenting that certificate.
pub fn mint_bound_dev_token_at(
    settings: &AuthSettings,
    claims: DevClaims,
    bound_to: Thumbprint,
    clock: &dyn Clock,
) -> Result<String, MintError> {
    mint(settings, claims, Some(bound_to), clock)
}

fn mint(
    settings: &AuthSettings,
    claims: DevClaims,
    bound_to: Option<Thumbprint>,
    clock: &dyn Clock,
) -> Result<String, MintError> {
    let path = settings
        .dev_signing_key_file
        .as_deref()
        .ok_or(MintError::NoDevKey)?;
    Subject::parse(&claims.sub).map_err(|error| MintError::InvalidClaim {
        claim: "sub",
        error,
    })?;
    PostCode::parse(&claims.post).map_err(|error| MintError::InvalidClaim {
        claim: "post",
        error,
    })?;
    Role::parse(&claims.role).map_err(|error| MintError::InvalidClaim {
        claim: "role",
        error,
    })?;
    let max_ttl_secs = MAX_DEV_TTL_SECS.min(settings.max_token_lifetime_secs);
    if !(1..=max_ttl_secs).contains(&claims.ttl_secs) {
        return Err(MintError::Ttl(max_ttl_secs));
    }

    super::install_crypto_provider();
    let (key, alg) = read_signing_key(path)?;
    if !settings.allowed_algorithms().contains(&alg) {
        return Err(MintError::AlgorithmNotAllowed {
            path: path.to_owned(),
            alg,
        });
    }

    let mut header = Header::new(alg);
    // An access token, as RFC 9068 names it.
    header.typ = Some("at+jwt".to_owned());
    header.kid.clone_from(&settings.dev_signing_kid);
    let now = super::unix_secs(clock);
    let minted = MintedClaims {
        iss: &settings.issuer,
        aud: &settings.audience,
        sub: &claims.sub,
        post: &claims.post,
        role: &claims.role,
        iat: now,
        exp: now.saturating_add(claims.ttl_secs),
        jti: uuid::Uuid::new_v4().to_string(),
        client_id: DEV_CLIENT_ID,
        cnf: bound_to.map(|thumbprint| Confirmation {
            x5t_s256: thumbprint.to_base64url(),
        }),
    };
    jsonwebtoken::encode(&header, &minted, &key).map_err(MintError::Sign)
}

/// The PEM key and the algorithm its type implies: EdDSA for Ed25519, ES256 for P-256.
fn read_signing_key(path: &Path) -> Result<(EncodingKey, Algorithm), MintError> {
    let pem = std::fs::read(path).map_err(|error| MintError::ReadKey {
        path: path.to_owned(),
        error,
    })?;
    if let Ok(key) = EncodingKey::from_ed_pem(&pem) {
        return Ok((key, Algorithm::EdDSA));
    }
    if let Ok(key) = EncodingKey::from_ec_pem(&pem) {
        return Ok((key, Algorithm::ES256));
    }
    Err(MintError::UnsupportedKey {
        path: path.to_owned(),
    })
}
