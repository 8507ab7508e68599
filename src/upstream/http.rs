//! The HTTP connector: the CAF protocol (README, "The CAF connector") over HTTPS
//! with a client certificate (reqwest on rustls with aws-lc-rs, no OpenSSL).
//!
//! One lookup is: breaker admission, then within `timeout_ms` in all, up to
//! `1 + retries` attempts, each holding one of `max_concurrent` slots. Only a
//! connection error (no connection, or one lost before any answer), a `503` or
//! a `408` (an idle kept-alive connection the CAF closed) is retried, after a jittered exponential backoff. The outcome feeds the
//! breaker: timeouts, transport errors and 5xx count as failures; a `404`,
//! another 4xx or an unreadable record do not (the CAF answered).
//!
//! Nothing here logs or returns a dossier number, a NIR or the CAF's body:
//! URLs are stripped from transport errors and body problems are categories.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;

use rand::Rng as _;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, HeaderValue};
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::breaker::Breaker;
use super::{
    CafClient, Fetch, Record, UpstreamError, UpstreamHealth, UpstreamKind, UpstreamSettings,
    UpstreamSetupError,
};
use crate::domain::Lookup;

/// The largest record the connector reads; a longer answer is refused unread.
const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// The longest pause between two attempts, whatever the attempt number.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A CAF service over HTTP(S). Build it once per process and share it: it
/// holds the connection pool, the breaker and the concurrency cap.
pub struct HttpCaf {
    client: reqwest::Client,
    /// `{url}/dossiers/`, to which a numéro is appended.
    dossiers: String,
    /// `{url}/dossiers/recherche`.
    recherche: String,
    timeout: Duration,
    retries: u32,
    backoff_base: Duration,
    breaker: Breaker,
    slots: Semaphore,
}

/// How one attempt (or the whole lookup) failed, as a category that is safe
/// to log: transport errors have their URL removed, bodies are never quoted.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("the CAF did not answer in time")]
    Timeout,
    #[error("cannot connect to the CAF")]
    Connect(#[source] reqwest::Error),
    #[error("the TLS handshake with the CAF failed")]
    Tls(#[source] reqwest::Error),
    /// The connection failed before any answer came, e.g. a pooled connection
    /// the CAF had closed.
    #[error("the connection to the CAF was lost before it answered")]
    ConnectionLost(#[source] reqwest::Error),
    #[error("the CAF's answer broke off")]
    BodyLost(#[source] reqwest::Error),
    #[error("the CAF answered with status {0}")]
    Status(StatusCode),
    #[error("the CAF's answer is larger than {MAX_RECORD_BYTES} bytes")]
    TooLarge,
    #[error("the CAF's answer is not JSON")]
    NotJson,
    #[error("the CAF's answer is not a JSON object")]
    NotAnObject,
}

impl Failure {
    /// A failure of `send()`: nothing has been answered yet.
    fn sending(error: reqwest::Error) -> Self {
        let error = error.without_url();
        if error.is_timeout() && !error.is_connect() {
            Failure::Timeout
        } else if caused_by_tls(&error) {
            Failure::Tls(error)
        } else if error.is_connect() {
            Failure::Connect(error)
        } else {
            Failure::ConnectionLost(error)
        }
    }

    /// A failure while reading an answer's body.
    fn reading(error: reqwest::Error) -> Self {
        let error = error.without_url();
        if error.is_timeout() {
            Failure::Timeout
        } else {
            Failure::BodyLost(error)
        }
    }

    /// Only a connection that could not be made, or a CAF saying it is briefly
    /// unavailable, is worth another attempt; anything else would fail the same way.
    /// A `408` is the CAF closing a kept-alive connection it found idle: it
    /// says so before the request arrives on it (some servers, actix-web's
    /// among them, write the `408` then close), and read as the answer to the
    /// request it means the request was never processed (RFC 9110, 15.5.9).
    fn retryable(&self) -> bool {
        match self {
            Failure::Connect(_) | Failure::ConnectionLost(_) => true,
            Failure::Status(status) => {
                *status == StatusCode::SERVICE_UNAVAILABLE || *status == StatusCode::REQUEST_TIMEOUT
            }
            _ => false,
        }
    }

    /// Whether this says something about the CAF's availability (and so counts
    /// towards opening the circuit) rather than about one answer's content.
    fn counts_against_the_caf(&self) -> bool {
        match self {
            Failure::Timeout
            | Failure::Connect(_)
            | Failure::Tls(_)
            | Failure::ConnectionLost(_)
            | Failure::BodyLost(_) => true,
            Failure::Status(status) => status.is_server_error(),
            Failure::TooLarge | Failure::NotJson | Failure::NotAnObject => false,
        }
    }

    fn into_upstream_error(self) -> UpstreamError {
        match self {
            Failure::Timeout => UpstreamError::Timeout,
            other => UpstreamError::Failed(anyhow::Error::new(other)),
        }
    }

    fn category(&self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Connect(_) => "connect",
            Failure::Tls(_) => "tls",
            Failure::ConnectionLost(_) => "connection_lost",
            Failure::BodyLost(_) => "body_lost",
            Failure::Status(_) => "status",
            Failure::TooLarge => "too_large",
            Failure::NotJson => "not_json",
            Failure::NotAnObject => "not_an_object",
        }
    }
}

/// Whether a rustls error sits anywhere in the cause chain. An `io::Error`'s
/// `source()` skips the error it wraps, so the walk steps into it instead.
fn caused_by_tls(error: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error.is::<rustls::Error>() {
            return true;
        }
        next = match error.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn StdError + 'static)),
            None => error.source(),
        };
    }
    false
}

impl HttpCaf {
    /// Builds the connector from `kind = "http"` settings; refuses settings
    /// that do not validate, and reports unreadable certificate files.
    pub fn new(
        settings: &UpstreamSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, UpstreamSetupError> {
        let mut problems = settings.validate();
        if settings.kind != UpstreamKind::Http {
            problems.push("upstream.kind: the HTTP connector needs kind = \"http\"".into());
        }
        let url = match (&settings.url, problems.is_empty()) {
            (Some(url), true) => url,
            _ => return Err(UpstreamSetupError::Settings(problems)),
        };
        let base = url.trim_end_matches('/');
        let https = base.starts_with("https://");

        let tls = client_tls(settings, https)?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .https_only(https)
            // The CAF is reached directly: no proxy from the environment, and
            // no redirect that could carry a NIR to another host.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("caf-broker/", env!("CARGO_PKG_VERSION")))
            .build()?;

        Ok(Self {
            client,
            dossiers: format!("{base}/dossiers/"),
            recherche: format!("{base}/dossiers/recherche"),
            timeout: Duration::from_millis(settings.timeout_ms),
            retries: settings.retries,
            backoff_base: Duration::from_millis(settings.retry_backoff_ms),
            breaker: Breaker::new(
                settings.breaker_failures,
                Duration::from_secs(settings.breaker_open_secs),
                clock,
            ),
            slots: Semaphore::new(settings.max_concurrent),
        })
    }

    /// Whether the circuit is open (the CAF is being spared).
    pub fn circuit_open(&self) -> bool {
        !self.breaker.health().is_ready()
    }

    async fn lookup(&self, lookup: &Lookup) -> Result<Option<Record>, UpstreamError> {
        let pass = self
            .breaker
            .admit()
            .map_err(|refused| UpstreamError::Unavailable {
                retry_after_secs: Some(refused.retry_after_secs),
            })?;
        let outcome = tokio::time::timeout(self.timeout, self.attempts(lookup))
            .await
            .unwrap_or(Err(Failure::Timeout));
        match outcome {
            Ok(record) => {
                pass.succeeded();
                Ok(record)
            }
            Err(failure) => {
                if failure.counts_against_the_caf() {
                    pass.failed();
                } else {
                    pass.succeeded();
                }
                // The broker logs the error with its cause chain; this is the detail.
                tracing::debug!(reason = failure.category(), error = %failure, "CAF lookup failed");
                Err(failure.into_upstream_error())
            }
        }
    }

    async fn attempts(&self, lookup: &Lookup) -> Result<Option<Record>, Failure> {
        let mut attempt: u32 = 0;
        loop {
            let result = {
                // Never closed (close() is not called), so acquiring cannot fail.
                let _slot = self.slots.acquire().await.ok();
                self.attempt(lookup).await
            };
            match result {
                Err(failure) if failure.retryable() && attempt < self.retries => {
                    attempt += 1;
                    let pause = self.backoff(attempt);
                    tracing::debug!(
                        attempt,
                        reason = failure.category(),
                        pause_ms = pause.as_millis() as u64,
                        "retrying the CAF"
                    );
                    tokio::time::sleep(pause).await;
                }
                other => return other,
            }
        }
    }

    async fn attempt(&self, lookup: &Lookup) -> Result<Option<Record>, Failure> {
        let request = match lookup {
            // A numéro is 1 to 7 digits: safe in a path as it is.
            Lookup::Numero(numero) => {
                self.client
                    .get(format!("{}{}", self.dossiers, numero.as_str()))
            }
            // A NIR travels in the body only, never in a URL.
            Lookup::Nir(nir) => self
                .client
                .post(&self.recherche)
                .json(&serde_json::json!({ "nir": nir.as_str() })),
        };
        let mut request = request.header(ACCEPT, HeaderValue::from_static("application/json"));
        // W3C trace context of the `upstream` client span: the CAF joins the trace.
        for (name, value) in crate::telemetry::trace_headers(&tracing::Span::current()) {
            request = request.header(name, value);
        }
        let mut response = request.send().await.map_err(Failure::sending)?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            other => return Err(Failure::Status(other)),
        }
        if response
            .content_length()
            .is_some_and(|length| length > MAX_RECORD_BYTES as u64)
        {
            return Err(Failure::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(Failure::reading)? {
            if body.len() + chunk.len() > MAX_RECORD_BYTES {
                return Err(Failure::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        parse_record(&body).map(Some)
    }

    /// Equal jitter over an exponential step: half the step, plus a random
    /// share of the other half, so that retries neither bunch up nor vanish.
    fn backoff(&self, attempt: u32) -> Duration {
        let step = self
            .backoff_base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(MAX_BACKOFF);
        let half = step / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }
}

/// A record is a JSON object. serde_json's messages can quote the data, so
/// only the category leaves.
fn parse_record(body: &[u8]) -> Result<Record, Failure> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(value) if value.is_object() => Ok(Arc::new(value)),
        Ok(_) => Err(Failure::NotAnObject),
        Err(_) => Err(Failure::NotJson),
    }
}

/// The client side of TLS: only the CAF's CA is trusted, and the broker shows
/// its certificate. A plain-http (loopback) connector gets an empty trust
/// store, so that it could not talk TLS to anyone by mistake.
fn client_tls(
    settings: &UpstreamSettings,
    https: bool,
) -> Result<rustls::ClientConfig, UpstreamSetupError> {
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(crate::tls::provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let mut config = match (
        https,
        &settings.ca_file,
        &settings.client_cert_file,
        &settings.client_key_file,
    ) {
        (true, Some(ca), Some(cert), Some(key)) => {
            let pem = |setting| move |source| UpstreamSetupError::Pem { setting, source };
            let roots = crate::tls::trust_store(ca).map_err(pem("ca_file"))?;
            let chain = crate::tls::certificates(cert).map_err(pem("client_cert_file"))?;
            let key = crate::tls::private_key(key).map_err(pem("client_key_file"))?;
            builder
                .with_root_certificates(roots)
                .with_client_auth_cert(chain, key)?
        }
        (true, ..) => {
            return Err(UpstreamSetupError::Settings(vec![
                "upstream: an https:// url needs ca_file, client_cert_file and client_key_file"
                    .into(),
            ]));
        }
        (false, ..) => builder
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

impl CafClient for HttpCaf {
    fn fetch<'a>(&'a self, lookup: &'a Lookup) -> Fetch<'a> {
        let span = tracing::debug_span!("upstream.fetch", lookup = lookup.kind());
        Box::pin(self.lookup(lookup).instrument(span))
    }

    fn health(&self) -> UpstreamHealth {
        self.breaker.health()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;

    fn connector(url: &str, retry_backoff_ms: u64) -> HttpCaf {
        let settings = UpstreamSettings {
            retry_backoff_ms,
            ..UpstreamSettings::http(url)
        };
        HttpCaf::new(&settings, Arc::new(SystemClock)).unwrap()
    }

    #[test]
    fn only_connection_errors_and_503_are_retried() {
        assert!(Failure::Status(StatusCode::SERVICE_UNAVAILABLE).retryable());
        for status in [
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::BAD_GATEWAY,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::BAD_REQUEST,
        ] {
            assert!(!Failure::Status(status).retryable(), "{status}");
        }
        for failure in [
            Failure::Timeout,
            Failure::NotJson,
            Failure::NotAnObject,
            Failure::TooLarge,
        ] {
            assert!(!failure.retryable(), "{failure}");
        }
    }

    #[test]
    fn availability_failures_count_against_the_caf_but_bad_answers_do_not() {
        assert!(Failure::Timeout.counts_against_the_caf());
        assert!(Failure::Status(StatusCode::INTERNAL_SERVER_ERROR).counts_against_the_caf());
        assert!(!Failure::Status(StatusCode::BAD_REQUEST).counts_against_the_caf());
        assert!(!Failure::NotJson.counts_against_the_caf());
        assert!(!Failure::NotAnObject.counts_against_the_caf());
    }

    #[test]
    fn a_record_must_be_a_json_object_and_errors_never_quote_the_body() {
        assert!(parse_record(br#"{"numero_allocataire": "1000001"}"#).is_ok());
        let not_json = parse_record(b"{\"nom\": \"DUPONT\"").err().unwrap();
        let not_object = parse_record(br#"["DUPONT"]"#).err().unwrap();
        for failure in [not_json, not_object] {
            let message = format!("{:#}", anyhow::Error::new(failure));
            assert!(!message.contains("DUPONT"), "{message}");
        }
        assert!(matches!(
            parse_record(b"\"DUPONT\""),
            Err(Failure::NotAnObject)
        ));
    }

    #[test]
    fn timeouts_map_to_timeout_and_other_failures_to_failed() {
        assert!(matches!(
            Failure::Timeout.into_upstream_error(),
            UpstreamError::Timeout
        ));
        assert!(matches!(
            Failure::Status(StatusCode::BAD_GATEWAY).into_upstream_error(),
            UpstreamError::Failed(_)
        ));
    }

    #[test]
    fn the_backoff_grows_exponentially_with_jitter_and_stays_bounded() {
        let caf = connector("http://127.0.0.1:9", 100);
        for _ in 0..50 {
            let first = caf.backoff(1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = caf.backoff(3);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            assert!(caf.backoff(30) <= MAX_BACKOFF);
        }
        let draws: std::collections::HashSet<_> = (0..20).map(|_| caf.backoff(2)).collect();
        assert!(draws.len() > 1, "the backoff is not jittered");
    }

    #[test]
    fn settings_that_do_not_validate_build_no_connector() {
        let settings = UpstreamSettings::http("https://caf.example.gouv.fr");
        match HttpCaf::new(&settings, Arc::new(SystemClock)) {
            Err(UpstreamSetupError::Settings(problems)) => assert_eq!(problems.len(), 3),
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("built without certificates"),
        }
    }

    #[test]
    fn a_missing_certificate_file_is_reported_with_its_path() {
        let settings = UpstreamSettings {
            ca_file: Some("certs-dev/no-such-ca.pem".into()),
            client_cert_file: Some("certs-dev/client-broker.pem".into()),
            client_key_file: Some("certs-dev/client-broker.key.pem".into()),
            ..UpstreamSettings::http("https://caf.example.gouv.fr")
        };
        let error = HttpCaf::new(&settings, Arc::new(SystemClock))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("certs-dev/no-such-ca.pem"), "{error}");
    }

    #[tokio::test]
    async fn an_unreachable_caf_fails_without_quoting_the_dossier_number() {
        // Port 9 (discard) on loopback: nothing listens, the connection is refused.
        let caf = connector("http://127.0.0.1:9", 1);
        let lookup = Lookup::Numero(crate::domain::NumeroAllocataire::parse("1234567").unwrap());
        match caf.fetch(&lookup).await {
            Err(UpstreamError::Failed(cause)) => {
                let message = format!("{cause:#}");
                assert!(
                    message.starts_with("cannot connect to the CAF"),
                    "{message}"
                );
                assert!(!message.contains("1234567"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
}
