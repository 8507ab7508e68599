//! [`Authenticator`]: turns a bearer token into a [`Caller`], or says why not.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily};

use super::cache::TokenCache;
use super::claims::{Claims, Header};
use super::jwks::{AuthSetupError, KeyFingerprint, KeySet};
use super::remote::{JwksSource, Refresher};
use super::revocation::{Revocations, SharedRevocations, is_jti};
use super::settings::{AuthSettings, media_type};
use super::{AuthError, Caller};
use crate::clock::{Clock, SystemClock};
use crate::domain::{PostCode, Role, Subject};
use crate::file_watch::{self, WatchError, WatchGuard};
use crate::tls::Thumbprint;

/// Longest token read, in bytes: a real token is well under 2 KiB, and the
/// bound caps the work a hostile header can cause.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Shortest time between two early refreshes of `auth.jwks_url`, which tokens
/// with an unknown `kid` ask for: anyone can send such a token.
const MIN_EARLY_REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// Verifies bearer tokens. Built once, shared by all workers (`Send + Sync`).
pub struct Authenticator {
    issuer: String,
    audience: String,
    leeway_secs: u64,
    max_lifetime_secs: u64,
    allowed: Vec<Algorithm>,
    /// `auth.accepted_types`, normalized by [`media_type`].
    accepted_types: Vec<String>,
    allowed_clients: Option<Vec<String>>,
    /// Refuse tokens without `cnf.x5t#S256`.
    require_bound_tokens: bool,
    /// The current key set; the refresh task of `auth.jwks_url` swaps it, and
    /// so does a reload of `auth.jwks_file` ([`AuthFiles::reload`]).
    keys: Arc<ArcSwap<KeySet>>,
    jwks_file: Option<PathBuf>,
    /// The refresh task of `auth.jwks_url`; none for `auth.jwks_file`.
    refresher: Option<Refresher>,
    revocations: Arc<Revocations>,
    revoked_jti_refresh: Duration,
    /// The task mirroring the shared revocation set, with the Redis quota backend.
    shared_revocations: Option<SharedRevocations>,
    pub(super) cache: TokenCache,
    clock: Arc<dyn Clock>,
}

/// The files behind an [`Authenticator`], reloadable from elsewhere (SIGHUP,
/// the watch of the revocation file) while it serves.
#[derive(Clone)]
pub struct AuthFiles {
    jwks_file: Option<PathBuf>,
    allowed: Vec<Algorithm>,
    keys: Arc<ArcSwap<KeySet>>,
    cache: TokenCache,
    revocations: Arc<Revocations>,
}

impl AuthFiles {
    /// Reads `auth.revoked_jti_file` and `auth.jwks_file` again, those that are
    /// set. A file that cannot be read (or a JWKS that is not sound) leaves the
    /// last good content in place; every outcome is logged. Blocking IO.
    pub fn reload(&self) {
        self.revocations.reload_file();
        let Some(file) = &self.jwks_file else {
            return;
        };
        match KeySet::load(file, &self.allowed) {
            Ok(keys) => {
                tracing::info!(
                    jwks_file = %file.display(),
                    keys = keys.keys.len(),
                    skipped = keys.skipped,
                    "reloaded the token verification keys"
                );
                // Cached tokens of a key no longer in the set are not served again.
                self.cache.forget_keys_outside(&keys);
                self.keys.store(Arc::new(keys));
            }
            Err(error) => {
                tracing::warn!(%error, "cannot reload the token verification keys; keeping the last good set");
            }
        }
    }

    /// Follows `auth.revoked_jti_file`, when set, reloading it on change. The
    /// watch ends with the guard or the authenticator.
    pub fn watch_revocations(&self) -> Result<Option<WatchGuard>, WatchError> {
        let Some(file) = self.revocations.file() else {
            return Ok(None);
        };
        let revocations = Arc::downgrade(&self.revocations);
        let guard = file_watch::watch(file, None, "auth.revoked_jti_file", move || {
            let Some(revocations) = revocations.upgrade() else {
                return false;
            };
            revocations.reload_file();
            true
        })?;
        tracing::info!(file = %file.display(), "watching the revoked token ids for changes");
        Ok(Some(guard))
    }
}

/// A verified token's caller, the key that verified it, and whether it may be cached.
struct Verified {
    caller: Caller,
    key: KeyFingerprint,
    /// Valid without leeway: `iat` and `nbf` reached, `exp` ahead.
    strictly_valid: bool,
    /// The client certificate the token is bound to (`cnf.x5t#S256`).
    bound_to: Option<Thumbprint>,
}

impl Authenticator {
    /// Loads the keys and prepares verification with the system clock: reads
    /// `auth.jwks_file`, or fetches `auth.jwks_url` (a failed first fetch is an
    /// error) and spawns the task that refreshes it. Needs a Tokio runtime.
    pub async fn connect(settings: &AuthSettings) -> Result<Self, AuthSetupError> {
        Self::connect_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// As [`Authenticator::connect`], with the clock that judges expiry given.
    pub async fn connect_with_clock(
        settings: &AuthSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, AuthSetupError> {
        Self::connect_with(settings, MIN_EARLY_REFRESH_INTERVAL, clock).await
    }

    /// As [`Authenticator::connect`], with the shortest time between two early
    /// refreshes given (tests, which cannot wait 30 seconds).
    #[doc(hidden)]
    pub async fn connect_with_early_refresh_interval(
        settings: &AuthSettings,
        min_early_interval: Duration,
    ) -> Result<Self, AuthSetupError> {
        Self::connect_with(settings, min_early_interval, Arc::new(SystemClock)).await
    }

    async fn connect_with(
        settings: &AuthSettings,
        min_early_interval: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, AuthSetupError> {
        let Some(url) = &settings.jwks_url else {
            return Self::with_clock(settings, clock);
        };
        let mut authenticator = Self::unloaded(settings, clock)?;
        let source = JwksSource::new(settings, url)?;
        let keys = source
            .fetch(&authenticator.allowed)
            .await
            .map_err(|error| AuthSetupError::FirstFetch {
                url: url.clone(),
                error,
            })?;
        tracing::info!(
            jwks_url = source.url(),
            keys = keys.keys.len(),
            skipped = keys.skipped,
            refresh_secs = settings.jwks_refresh_secs,
            "fetched the token verification keys"
        );
        authenticator.keys.store(Arc::new(keys));
        authenticator.refresher = Some(Refresher::spawn(
            source,
            authenticator.allowed.clone(),
            Arc::downgrade(&authenticator.keys),
            authenticator.cache.clone(),
            Duration::from_secs(settings.jwks_refresh_secs),
            min_early_interval,
        ));
        Ok(authenticator)
    }

    /// Reads `auth.jwks_file` and prepares verification with the system clock.
    ///
    /// Synchronous, for `caf-broker check` and tests. With `auth.jwks_url` it
    /// checks the settings and the CA file but fetches nothing: its key set is
    /// empty and refuses every token. Serving uses [`Authenticator::connect`].
    pub fn new(settings: &AuthSettings) -> Result<Self, AuthSetupError> {
        Self::with_clock(settings, Arc::new(SystemClock))
    }

    /// As [`Authenticator::new`], with the clock given (tests).
    pub fn with_clock(
        settings: &AuthSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, AuthSetupError> {
        let authenticator = Self::unloaded(settings, clock)?;
        match (&settings.jwks_file, &settings.jwks_url) {
            (Some(file), _) => {
                let keys = KeySet::load(file, &authenticator.allowed)?;
                tracing::info!(
                    jwks_file = %file.display(),
                    keys = keys.keys.len(),
                    skipped = keys.skipped,
                    "loaded the token verification keys"
                );
                authenticator.keys.store(Arc::new(keys));
            }
            (None, Some(url)) => {
                // Builds the client (reading the CA file) only to report its problems.
                JwksSource::new(settings, url)?;
            }
            // validate() in unloaded() has refused settings without a key source.
            (None, None) => {}
        }
        Ok(authenticator)
    }

    /// Validated settings with an empty key set and no refresh task.
    fn unloaded(settings: &AuthSettings, clock: Arc<dyn Clock>) -> Result<Self, AuthSetupError> {
        let problems = settings.validate();
        if !problems.is_empty() {
            return Err(AuthSetupError::InvalidSettings(problems));
        }
        super::install_crypto_provider();
        let revocations = Revocations::load(settings.revoked_jti_file.as_deref())?;
        Ok(Self {
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            leeway_secs: settings.leeway_secs,
            max_lifetime_secs: settings.max_token_lifetime_secs,
            allowed: settings.allowed_algorithms(),
            accepted_types: settings.accepted_media_types(),
            require_bound_tokens: settings.require_bound_tokens,
            allowed_clients: settings.allowed_clients.clone(),
            keys: Arc::new(ArcSwap::from_pointee(KeySet::empty())),
            jwks_file: settings.jwks_file.clone(),
            refresher: None,
            revocations: Arc::new(revocations),
            revoked_jti_refresh: Duration::from_millis(settings.revoked_jti_refresh_ms),
            shared_revocations: None,
            cache: TokenCache::new(settings.token_cache_capacity, Arc::clone(&clock)),
            clock,
        })
    }

    /// The handle through which the files behind this authenticator are reloaded.
    pub fn files(&self) -> AuthFiles {
        AuthFiles {
            jwks_file: self.jwks_file.clone(),
            allowed: self.allowed.clone(),
            keys: Arc::clone(&self.keys),
            cache: self.cache.clone(),
            revocations: Arc::clone(&self.revocations),
        }
    }

    /// Also refuses the `jti`s of the shared set `caf-broker:revoked-jti` in
    /// this Redis, read every `auth.revoked_jti_refresh_ms` by a task that ends
    /// with the authenticator. Connects on first use. Needs a Tokio runtime.
    pub fn share_revocations(
        &mut self,
        client: &redis::Client,
        timeout: Duration,
    ) -> Result<(), redis::RedisError> {
        let connection = crate::redis_link::lazy_manager(client, timeout)?;
        self.shared_revocations = Some(SharedRevocations::spawn(
            connection,
            timeout,
            self.revoked_jti_refresh,
            Arc::downgrade(&self.revocations),
            Arc::clone(&self.clock),
        ));
        Ok(())
    }

    /// How many keys of the current key set are in use.
    pub fn key_count(&self) -> usize {
        self.keys.load().keys.len()
    }

    /// How many keys of the current key set were left out as unusable.
    pub fn skipped_key_count(&self) -> usize {
        self.keys.load().skipped
    }

    /// The caller a bearer token (without the `Bearer ` prefix) stands for.
    pub fn authenticate(&self, bearer_token: &str) -> Result<Caller, AuthError> {
        self.authenticate_with_client(bearer_token, None)
    }

    /// The caller a bearer token stands for, sent over a connection whose
    /// client certificate has the thumbprint `client` (`None`: no certificate).
    /// A token bound to a certificate is accepted only with that one.
    pub fn authenticate_with_client(
        &self,
        bearer_token: &str,
        client: Option<Thumbprint>,
    ) -> Result<Caller, AuthError> {
        if bearer_token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed);
        }
        let now = super::unix_secs(self.clock.as_ref());
        // Only tokens that passed the binding check with this very
        // certificate (or none) are under this key.
        let digest = TokenCache::key(bearer_token, client);
        if let Some(cached) = self.cache.get(&digest, now) {
            if self.keys.load().holds(&cached.key) {
                if self.is_revoked(&cached.caller) {
                    self.cache.invalidate(&digest);
                    return Err(AuthError::Revoked);
                }
                return Ok(cached.caller);
            }
            // The key that verified it has left the key set: verify it again,
            // which fails unless the same key came back.
            self.cache.invalidate(&digest);
        }
        let verified = match self.verify(bearer_token, now) {
            Err(AuthError::UnknownKey) => {
                // Perhaps the identity provider rotated its keys: the task
                // refreshes them, rate-limited; this request is refused as is.
                if let Some(refresher) = &self.refresher {
                    refresher.request_early_refresh();
                }
                return Err(AuthError::UnknownKey);
            }
            verified => verified?,
        };
        if self.is_revoked(&verified.caller) {
            return Err(AuthError::Revoked);
        }
        self.check_binding(verified.bound_to, client)?;
        if verified.strictly_valid {
            self.cache
                .insert(digest, verified.caller.clone(), verified.key);
        }
        Ok(verified.caller)
    }

    /// RFC 8705, section 3: a bound token goes with its certificate only;
    /// an unbound one, only where unbound tokens are accepted.
    fn check_binding(
        &self,
        bound_to: Option<Thumbprint>,
        client: Option<Thumbprint>,
    ) -> Result<(), AuthError> {
        match (bound_to, client) {
            (Some(bound), Some(presented)) if bound == presented => Ok(()),
            (Some(_), Some(_)) => Err(AuthError::WrongCertificate),
            (Some(_), None) => Err(AuthError::CertificateRequired),
            (None, _) if self.require_bound_tokens => Err(AuthError::UnboundToken),
            (None, _) => Ok(()),
        }
    }

    fn is_revoked(&self, caller: &Caller) -> bool {
        caller
            .jti
            .as_deref()
            .is_some_and(|jti| self.revocations.is_revoked(jti))
    }

    /// Full verification: header, key, signature, then claims.
    fn verify(&self, token: &str, now: u64) -> Result<Verified, AuthError> {
        let (message, signature) = token.rsplit_once('.').ok_or(AuthError::Malformed)?;
        let (header, payload) = message.split_once('.').ok_or(AuthError::Malformed)?;

        // jsonwebtoken keeps its decoder private; reading the header here is what
        // lets `alg: none` be told apart from a malformed header. Strict base64url
        // (RFC 7515 section 2): no padding, no other alphabet, no stray trailing bits.
        let header_json = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| AuthError::Malformed)?;
        let header: Header<'_> =
            serde_json::from_slice(&header_json).map_err(|_| AuthError::Malformed)?;
        if header.crit.is_some() {
            return Err(AuthError::Malformed);
        }
        let alg = self.accepted_algorithm(&header.alg)?;
        let keys = self.keys.load();
        let key = keys.select(header.kid.as_deref(), alg)?;

        match jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key.key, alg) {
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

        // Read once the signature holds: what the issuer meant the token for.
        let typ = header.typ.as_deref().map(media_type);
        if !typ.is_some_and(|typ| self.accepted_types.contains(&typ)) {
            return Err(AuthError::WrongType);
        }

        let payload_json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| AuthError::Malformed)?;
        let claims: Claims<'_> =
            serde_json::from_slice(&payload_json).map_err(|_| AuthError::Malformed)?;
        self.check_claims(claims, key.fingerprint, now)
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

    fn check_claims(
        &self,
        claims: Claims<'_>,
        key: KeyFingerprint,
        now: u64,
    ) -> Result<Verified, AuthError> {
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
        if exp.saturating_sub(iat) > self.max_lifetime_secs {
            return Err(AuthError::LifetimeTooLong);
        }
        if let Some(clients) = &self.allowed_clients {
            let azp = claims.azp.optional("azp")?;
            let client_id = claims.client_id.optional("client_id")?;
            let listed = [azp, client_id]
                .into_iter()
                .flatten()
                .any(|client| clients.iter().any(|allowed| *allowed == client));
            if !listed {
                return Err(AuthError::ClientNotAllowed);
            }
        }

        let sub = Subject::parse(&claims.sub.required("sub")?)
            .map_err(|_| AuthError::InvalidClaim("sub"))?;
        let post = PostCode::parse(&claims.post.required("post")?)
            .map_err(|_| AuthError::InvalidClaim("post"))?;
        let role = Role::parse(&claims.role.required("role")?)
            .map_err(|_| AuthError::InvalidClaim("role"))?;
        let jti = match claims.jti.optional("jti")? {
            Some(jti) if !is_jti(&jti) => return Err(AuthError::InvalidClaim("jti")),
            jti => jti.map(|jti| jti.into_owned()),
        };
        let bound_to = match claims.cnf.optional("cnf")? {
            None => None,
            // A confirmation method this broker cannot check is not ignored.
            Some(cnf) if cnf.other_methods => return Err(AuthError::InvalidClaim("cnf")),
            Some(cnf) => {
                let thumbprint = cnf.x5t_s256.required("cnf")?;
                Some(
                    Thumbprint::from_base64url(&thumbprint)
                        .ok_or(AuthError::InvalidClaim("cnf"))?,
                )
            }
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
            key,
            strictly_valid,
            bound_to,
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
                    .load()
                    .keys
                    .iter()
                    .map(|key| key.kid.as_deref().unwrap_or("(no kid)"))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}
