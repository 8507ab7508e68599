//! Bearer-token authentication: JWT verification against a JWKS, yielding a [`Caller`].
//!
//! Built once at startup ([`Authenticator::connect`]) and shared by every worker.
//! Its keys come from `auth.jwks_file`, or from `auth.jwks_url`, fetched at start
//! and refreshed in the background (see `remote`).
//! A request's token goes through [`Authenticator::authenticate`], which either
//! answers from a bounded cache of verified tokens or verifies the token:
//!
//! 1. the header's `alg` must be in `auth.algorithms` and is never `none` or an
//!    HMAC algorithm, whatever the settings say;
//! 2. the key is chosen by `kid` (without a `kid`, the single key of that
//!    algorithm), and its own type and `alg` must match the header's `alg`;
//! 3. the signature is checked before any claim is read;
//! 4. the header's `typ` must be one of `auth.accepted_types` (RFC 9068);
//! 5. `iss`, `aud`, `exp`, `iat` (and `nbf` when present) are checked with the
//!    configured leeway, `exp - iat` against `auth.max_token_lifetime_secs`,
//!    and `azp` or `client_id` against `auth.allowed_clients` when set; `sub`,
//!    `post` and `role` are parsed into domain types;
//! 6. the `jti` must not be revoked (`revocation`: a file, and the shared set
//!    in Redis), checked on every request, cached token or not.
//!
//! 5. a token bound to a client certificate (RFC 8705 `cnf.x5t#S256`) is
//!    accepted only with that certificate's thumbprint, which the caller
//!    passes in from the TLS connection; with `auth.require_bound_tokens`, an
//!    unbound token is refused.
//!
//! Invariants: tokens are never logged, never used as cache keys (their SHA-256
//! is, with the connection's certificate thumbprint), and no error message
//! carries a claim value. A cached caller is served
//! only while `now < exp`, leeway or not, while the key that verified it is
//! still in the key set (a key withdrawn by a reload or a refresh takes its
//! tokens with it), and while its `jti` is not revoked.
//!
//! [`mint_dev_token`] signs development tokens for the `caf-broker token` command.

mod cache;
mod claims;
mod jwks;
mod mint;
mod remote;
mod revocation;
mod settings;
mod verify;

#[cfg(test)]
mod tests;

use crate::clock::Clock;
use crate::domain::{Agent, PostCode, Role, Subject};

pub use jwks::AuthSetupError;
pub use mint::{
    DEV_CLIENT_ID, DevClaims, MintError, mint_bound_dev_token_at, mint_dev_token, mint_dev_token_at,
};
pub use remote::JwksFetchError;
pub use revocation::SHARED_REVOKED_JTI_KEY;
pub use settings::AuthSettings;
pub use verify::{AuthFiles, Authenticator};

/// The authenticated agent behind a request, read from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The agent's identifier at the identity provider (`sub`).
    pub sub: Subject,
    /// The agent's consular post (`post`).
    pub post: PostCode,
    /// The agent's role (`role`), to be checked against the policy.
    pub role: Role,
    /// The token's `exp`, in seconds since the Unix epoch.
    pub expires_at: u64,
    /// The token's `jti`, when it has one (for revocation lists and the audit log).
    pub jti: Option<String>,
}

impl Caller {
    /// The agent behind the request: its `sub` within its post.
    pub fn agent(&self) -> Agent<'_> {
        Agent {
            post: &self.post,
            sub: &self.sub,
        }
    }
}

/// Why a bearer token was refused. Every variant is a 401 for the client, with
/// one and the same body: the variant goes to the log and, as
/// [`AuthError::cause`], to a metric label, so that a client cannot probe which
/// `kid`, issuer or rule it failed.
///
/// Messages never quote the token or a claim value; the `&'static str` is the
/// claim's name.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    #[error(
        "The bearer token is not a well-formed signed JWT (JWS compact serialization: header.payload.signature)."
    )]
    Malformed,
    #[error(
        "The token's signing algorithm is not accepted here; sign it with one of the broker's allowed asymmetric algorithms (never none or HMAC)."
    )]
    DisallowedAlgorithm,
    #[error(
        "No key of the broker's key set matches the token's kid header; check that the token comes from the expected identity provider."
    )]
    UnknownKey,
    #[error("The token's signature does not verify with the key it names.")]
    BadSignature,
    #[error("The token has expired; request a new one from the identity provider.")]
    Expired,
    #[error(
        "The token is not valid yet (nbf or iat is in the future); check the clocks of the identity provider and of the caller."
    )]
    NotYetValid,
    #[error("The token's iss claim is not the identity provider this broker trusts.")]
    WrongIssuer,
    #[error("The token's aud claim does not name this broker.")]
    WrongAudience,
    #[error("The token lacks the required claim `{0}`.")]
    MissingClaim(&'static str),
    #[error("The token's claim `{0}` has an invalid type or value.")]
    InvalidClaim(&'static str),
    #[error("The token's typ header is not one of auth.accepted_types.")]
    WrongType,
    #[error("The token's lifetime (exp - iat) is longer than auth.max_token_lifetime_secs.")]
    LifetimeTooLong,
    #[error("The token's azp or client_id is not one of auth.allowed_clients.")]
    ClientNotAllowed,
    #[error("The token's jti has been revoked.")]
    Revoked,
    #[error(
        "The token is bound to a client certificate (cnf x5t#S256); send it over a TLS connection that presents that certificate."
    )]
    CertificateRequired,
    #[error(
        "The token is bound to another client certificate than the one this connection presents."
    )]
    WrongCertificate,
    #[error(
        "This broker accepts only tokens bound to the client certificate of the connection (cnf x5t#S256, RFC 8705)."
    )]
    UnboundToken,
}

impl AuthError {
    /// The cause as a metric label and log field: one of a fixed, small set,
    /// never a claim value.
    pub fn cause(&self) -> &'static str {
        match self {
            AuthError::Malformed => "malformed",
            AuthError::DisallowedAlgorithm => "algorithm",
            AuthError::UnknownKey => "unknown_key",
            AuthError::BadSignature => "signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::WrongIssuer => "issuer",
            AuthError::WrongAudience => "audience",
            AuthError::MissingClaim(_) => "missing_claim",
            AuthError::InvalidClaim(_) => "invalid_claim",
            AuthError::WrongType => "type",
            AuthError::LifetimeTooLong => "lifetime",
            AuthError::ClientNotAllowed => "client",
            AuthError::Revoked => "revoked",
            AuthError::CertificateRequired => "certificate_required",
            AuthError::WrongCertificate => "wrong_certificate",
            AuthError::UnboundToken => "unbound",
        }
    }
}

/// The clock's wall time in whole seconds since the Unix epoch, as JWT claims
/// count it. The clock is injected so that expiry, including the cache's, is
/// tested without sleeping.
fn unix_secs(clock: &dyn Clock) -> u64 {
    u64::try_from(clock.wall().as_second()).unwrap_or(0)
}

/// Installs jsonwebtoken's aws-lc crypto provider unless one is installed already.
///
/// [`Authenticator::new`], [`Authenticator::connect`] and [`mint_dev_token`] call it; calling it again is harmless.
///
/// jsonwebtoken panics at its first use if it cannot pick a provider (both
/// backends compiled in through feature unification); installing one explicitly
/// makes the choice independent of the dependency tree.
pub fn install_crypto_provider() {
    // An error means a provider is already installed, which is what we need.
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}
