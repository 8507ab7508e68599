//! The JWKS fetched from the identity provider's URL, and the task that keeps it fresh.
//!
//! The key set is fetched once at start (a failure fails the start), then every
//! `auth.jwks_refresh_secs` by a background task. A failed refresh keeps the last
//! good set and is logged once per streak of failures. A token naming an unknown
//! `kid` asks for an early refresh, at most once per minimum interval, and never
//! waits for it: the request is refused as before, the refresh runs in the task.
//!
//! The task holds only a [`Weak`] reference to the key set and is aborted when
//! the [`Refresher`] is dropped, so it ends with the authenticator.

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use jsonwebtoken::Algorithm;
use reqwest::header::ACCEPT;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::cache::TokenCache;
use super::jwks::{AuthSetupError, KeySet};
use super::settings::AuthSettings;

/// Largest JWKS answer read, in bytes: a real key set is a few KiB.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Why one fetch of the JWKS URL failed. Messages never quote the answer's content.
#[derive(Debug, thiserror::Error)]
pub enum JwksFetchError {
    #[error("the request failed: {0}")]
    Request(String),
    #[error("the server answered HTTP {0}")]
    Status(u16),
    #[error("the answer is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("the answer was refused: {0}")]
    Invalid(String),
}

/// An HTTP client for the JWKS URL, trusting only the configured CA.
pub(super) struct JwksSource {
    client: reqwest::Client,
    url: reqwest::Url,
}

impl JwksSource {
    /// Builds the client for `url`; reads `auth.jwks_ca_file` for an `https://` URL.
    pub fn new(settings: &AuthSettings, url: &str) -> Result<Self, AuthSetupError> {
        let url = reqwest::Url::parse(url).map_err(|error| {
            AuthSetupError::InvalidSettings(vec![format!("auth.jwks_url: not a URL ({error})")])
        })?;
        let https = url.scheme() == "https";
        // A plain-http (loopback) source gets an empty trust store, so that it
        // could not talk TLS to anyone by mistake.
        let roots = match (&settings.jwks_ca_file, https) {
            (Some(ca), true) => crate::tls::trust_store(ca).map_err(AuthSetupError::Ca)?,
            _ => rustls::RootCertStore::empty(),
        };
        let tls = crate::tls::client_config(roots)
            .map_err(|error| AuthSetupError::Client(error.to_string()))?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .https_only(https)
            // The identity provider is reached directly: no proxy from the
            // environment, and no redirect to a host the settings do not name.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(settings.jwks_timeout_ms))
            .user_agent(concat!("caf-broker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| AuthSetupError::Client(error_chain(&error)))?;
        Ok(Self { client, url })
    }

    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    /// Fetches and parses the key set, keeping the keys usable with one of `allowed`.
    pub async fn fetch(&self, allowed: &[Algorithm]) -> Result<KeySet, JwksFetchError> {
        let request_failed = |error: reqwest::Error| JwksFetchError::Request(error_chain(&error));
        let mut response = self
            .client
            .get(self.url.clone())
            .header(ACCEPT, "application/jwk-set+json, application/json")
            .send()
            .await
            .map_err(request_failed)?;
        if !response.status().is_success() {
            return Err(JwksFetchError::Status(response.status().as_u16()));
        }
        if response
            .content_length()
            .is_some_and(|length| length > MAX_JWKS_BYTES as u64)
        {
            return Err(JwksFetchError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(request_failed)? {
            if body.len().saturating_add(chunk.len()) > MAX_JWKS_BYTES {
                return Err(JwksFetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        KeySet::parse(&body, self.url.as_str(), allowed)
            .map_err(|error| JwksFetchError::Invalid(error.to_string()))
    }
}

/// The handle on the background refresh task; dropping it stops the task.
pub(super) struct Refresher {
    wake: Arc<Notify>,
    min_early_interval: Duration,
    last_early: Mutex<Option<Instant>>,
    task: tokio::task::JoinHandle<()>,
}

impl Refresher {
    /// Spawns the task that refreshes `keys` from `source` every `period`, and
    /// early when asked; each new set drops from `cache` the tokens of the keys
    /// it no longer holds.
    pub fn spawn(
        source: JwksSource,
        allowed: Vec<Algorithm>,
        keys: Weak<ArcSwap<KeySet>>,
        cache: TokenCache,
        period: Duration,
        min_early_interval: Duration,
    ) -> Self {
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(refresh_loop(
            source,
            allowed,
            keys,
            cache,
            period,
            Arc::clone(&wake),
        ));
        Self {
            wake,
            min_early_interval,
            last_early: Mutex::new(None),
            task,
        }
    }

    /// Asks the task for a refresh now, unless one was asked less than the
    /// minimum interval ago. Never waits.
    pub fn request_early_refresh(&self) {
        let now = Instant::now();
        {
            let mut last = self
                .last_early
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|at| now.duration_since(at) < self.min_early_interval) {
                return;
            }
            *last = Some(now);
        }
        self.wake.notify_one();
    }
}

#[cfg(test)]
impl Refresher {
    /// Whether the task has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// A handle that outlives this one, to see the task end.
    pub fn abort_handle(&self) -> tokio::task::AbortHandle {
        self.task.abort_handle()
    }
}

impl Drop for Refresher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn refresh_loop(
    source: JwksSource,
    allowed: Vec<Algorithm>,
    keys: Weak<ArcSwap<KeySet>>,
    cache: TokenCache,
    period: Duration,
    wake: Arc<Notify>,
) {
    let mut failing = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = wake.notified() => {}
        }
        if keys.strong_count() == 0 {
            return;
        }
        let fetched = source.fetch(&allowed).await;
        let Some(current) = keys.upgrade() else {
            return;
        };
        match fetched {
            Ok(set) => {
                if failing {
                    tracing::info!(jwks_url = source.url(), "the JWKS URL answers again");
                    failing = false;
                }
                tracing::debug!(
                    jwks_url = source.url(),
                    keys = set.keys.len(),
                    skipped = set.skipped,
                    "refreshed the token verification keys"
                );
                cache.forget_keys_outside(&set);
                current.store(Arc::new(set));
            }
            Err(error) => {
                crate::telemetry::record_jwks_refresh_failure();
                if !failing {
                    tracing::warn!(
                        jwks_url = source.url(),
                        %error,
                        "refreshing the JWKS failed; keeping the last good key set"
                    );
                    failing = true;
                }
            }
        }
    }
}

/// An error and its causes, as one line: reqwest's own message names no cause.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
