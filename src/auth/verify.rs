//! [`Authenticator`]: turns a bearer token into a [`Caller`], or says why not.

use std::fmt;
use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily};

use super::cache::TokenCache;
use super::claims::{Claims, Header};
use super::jwks::{AuthSetupError, KeySet};
use super::settings::AuthSettings;
use super::{AuthError, Caller, Clock, b64};
use crate::domain::{PostCode, Role, Subject};

/// Longest token read, in bytes: a real token is well under 2 KiB, and the
/// bound caps the work a hostile header can cause.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Longest `jti` kept, in bytes.
const MAX_JTI_BYTES: usize = 256;

/// Verifies bearer tokens. Built once, shared by all workers (`Send + Sync`).
pub struct Authenticator {
    issuer: String,
    audience: String,
    leeway_secs: u64,
    allowed: Vec<Algorithm>,
    keys: KeySet,
    pub(super) cache: TokenCache,
    clock: Clock,
}

/// A verified token's caller, and whether it may be cached.
struct Verified {
    caller: Caller,
    /// Valid without leeway: `iat` and `nbf` reached, `exp` ahead.
    strictly_valid: bool,
}

impl Authenticator {
    /// Reads the JWKS file and prepares verification with the system clock.
    pub fn new(settings: &AuthSettings) -> Result<Self, AuthSetupError> {
        Self::with_clock(settings, Arc::new(super::system_now))
    }

    /// As [`Authenticator::new`], with the clock given (tests).
    pub fn with_clock(settings: &AuthSettings, clock: Clock) -> Result<Self, AuthSetupError> {
        let problems = settings.validate();
        if !problems.is_empty() {
            return Err(AuthSetupError::InvalidSettings(problems));
        }
        super::install_crypto_provider();
        let allowed = settings.allowed_algorithms();
        let keys = KeySet::load(&settings.jwks_file, &allowed)?;
        tracing::info!(
            jwks_file = %settings.jwks_file.display(),
            keys = keys.keys.len(),
            skipped = keys.skipped,
            "loaded the token verification keys"
        );
        Ok(Self {
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            leeway_secs: settings.leeway_secs,
            allowed,
            keys,
            cache: TokenCache::new(settings.token_cache_capacity, Arc::clone(&clock)),
            clock,
        })
    }

    /// How many keys of the JWKS file are in use.
    pub fn key_count(&self) -> usize {
        self.keys.keys.len()
    }

    /// How many keys of the JWKS file were left out as unusable.
    pub fn skipped_key_count(&self) -> usize {
        self.keys.skipped
    }

    /// The caller a bearer token (without the `Bearer ` prefix) stands for.
    pub fn authenticate(&self, bearer_token: &str) -> Result<Caller, AuthError> {
        if bearer_token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed);
        }
        let now = (self.clock)();
        let digest = TokenCache::digest(bearer_token);
        if let Some(caller) = self.cache.get(&digest, now) {
            return Ok(caller);
        }
        let verified = self.verify(bearer_token, now)?;
        if verified.strictly_valid {
            self.cache.insert(digest, verified.caller.clone());
        }
        Ok(verified.caller)
    }

    /// Full verification: header, key, signature, then claims.
    fn verify(&self, token: &str, now: u64) -> Result<Verified, AuthError> {
        let (message, signature) = token.rsplit_once('.').ok_or(AuthError::Malformed)?;
        let (header, payload) = message.split_once('.').ok_or(AuthError::Malformed)?;

        let header_json = b64::decode(header.as_bytes()).ok_or(AuthError::Malformed)?;
        let header: Header<'_> =
            serde_json::from_slice(&header_json).map_err(|_| AuthError::Malformed)?;
        if header.crit.is_some() {
            return Err(AuthError::Malformed);
        }
        let alg = self.accepted_algorithm(&header.alg)?;
        let key = self.keys.select(header.kid.as_deref(), alg)?;

        match jsonwebtoken::crypto::verify(signature, message.as_bytes(), key, alg) {
            Ok(true) => {}
            Ok(false) => return Err(AuthError::BadSignature),
            Err(error) if matches!(error.kind(), ErrorKind::Base64(_)) => {
                return Err(AuthError::Malformed);
            }
            Err(error) => {
                // A key of the set that the crypto provider refuses: an operator's problem.
                tracing::warn!(alg = ?alg, %error, "a JWKS key could not verify a signature");
                return Err(AuthError::BadSignature);
            }
        }

        let payload_json = b64::decode(payload.as_bytes()).ok_or(AuthError::Malformed)?;
        let claims: Claims<'_> =
            serde_json::from_slice(&payload_json).map_err(|_| AuthError::Malformed)?;
        self.check_claims(claims, now)
    }

    /// The header's algorithm, if this broker accepts it. HMAC is refused even if
    /// it slipped into the allow-list, and `none` is not an [`Algorithm`] at all.
    fn accepted_algorithm(&self, name: &str) -> Result<Algorithm, AuthError> {
        match name.parse::<Algorithm>() {
            Ok(alg) if alg.family() != AlgorithmFamily::Hmac && self.allowed.contains(&alg) => {
                Ok(alg)
            }
            _ => Err(AuthError::DisallowedAlgorithm),
        }
    }

    fn check_claims(&self, claims: Claims<'_>, now: u64) -> Result<Verified, AuthError> {
        if claims.iss.required("iss")? != self.issuer.as_str() {
            return Err(AuthError::WrongIssuer);
        }
        if !claims.aud.required("aud")?.contains(&self.audience) {
            return Err(AuthError::WrongAudience);
        }

        let exp = claims.exp.required("exp")?.0;
        let iat = claims.iat.required("iat")?.0;
        let nbf = claims.nbf.optional("nbf")?.map(|nbf| nbf.0);
        if now >= exp.saturating_add(self.leeway_secs) {
            return Err(AuthError::Expired);
        }
        let latest_start = now.saturating_add(self.leeway_secs);
        if iat > latest_start || nbf.is_some_and(|nbf| nbf > latest_start) {
            return Err(AuthError::NotYetValid);
        }

        let sub = Subject::parse(&claims.sub.required("sub")?)
            .map_err(|_| AuthError::InvalidClaim("sub"))?;
        let post = PostCode::parse(&claims.post.required("post")?)
            .map_err(|_| AuthError::InvalidClaim("post"))?;
        let role = Role::parse(&claims.role.required("role")?)
            .map_err(|_| AuthError::InvalidClaim("role"))?;
        let jti = match claims.jti.optional("jti")? {
            Some(jti)
                if jti.is_empty()
                    || jti.len() > MAX_JTI_BYTES
                    || !jti.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                return Err(AuthError::InvalidClaim("jti"));
            }
            jti => jti.map(|jti| jti.into_owned()),
        };

        let strictly_valid = now < exp && iat <= now && nbf.is_none_or(|nbf| nbf <= now);
        Ok(Verified {
            caller: Caller {
                sub,
                post,
                role,
                expires_at: exp,
                jti,
            },
            strictly_valid,
        })
    }
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .field("allowed", &self.allowed)
            .field(
                "keys",
                &self
                    .keys
                    .keys
                    .iter()
                    .map(|key| key.kid.as_deref().unwrap_or("(no kid)"))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}
